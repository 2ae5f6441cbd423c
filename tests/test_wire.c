/* The wire format and the export ring (sync/wire.c): round trips of every
 * operation kind, the ring's wrap-around and flow control at positions far
 * beyond 2^32, and every way a worker can corrupt its ring or a record.
 *
 * The root must never read outside the ring or the copied record, whatever a
 * worker wrote. Rings and decoded records therefore sit right before a
 * PROT_NONE guard page: an out-of-bounds read crashes here even without ASan
 * (ASan does not watch mmap'd memory, the guard page does).
 */
#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "port.h"
#include "shm.h"
#include "testutil.h"
#include "wire.h"

/* The record sizes below are computed from these. */
static_assert(sizeof(struct wire_batch) == 16, "wire_batch is 16 bytes");
static_assert(sizeof(struct wire_op) == 24, "wire_op is 24 bytes");

#define HDR ((size_t)sizeof(struct wire_batch))
#define OPHDR ((size_t)sizeof(struct wire_op))

static struct shm_op *g_ops; /* WIRE_MAX_OPS decoded operations */

/* ---- memory that ends at a guard page ----------------------------------- */

struct guarded {
	uint8_t *map;
	size_t map_len;
	uint8_t *p; /* len bytes, ending where the guard page starts */
	size_t len;
};

static uint8_t *guarded_alloc(struct guarded *g, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t body = (len + page - 1) / page * page;
	if (body == 0)
		body = page;
	g->map_len = body + 2 * page;
	g->map = mmap(NULL, g->map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	T_ASSERT(g->map != MAP_FAILED);
	T_EQ(mprotect(g->map + page, body, PROT_READ | PROT_WRITE), 0);
	g->p = g->map + page + body - len;
	g->len = len;
	return g->p;
}

static void guarded_free(struct guarded *g)
{
	munmap(g->map, g->map_len);
	memset(g, 0, sizeof(*g));
}

/* ---- a port's ring, as the root sees it ---------------------------------- */

struct fixture {
	struct port_hdr hdr;
	struct guarded g;
	uint8_t *ring;
	uint64_t size;
	uint64_t tail; /* the consumer's own copy of the position */
};

static void fx_init(struct fixture *f, uint64_t size, uint64_t start)
{
	memset(f, 0, sizeof(*f));
	f->size = size;
	f->hdr.ring_size = size;
	f->ring = guarded_alloc(&f->g, (size_t)size);
	/* Garbage, so that a reader relying on zeroed memory is caught. */
	memset(f->ring, 0xee, (size_t)size);
	atomic_store(&f->hdr.ring_head, start);
	atomic_store(&f->hdr.ring_tail, start);
	f->tail = start;
}

static void fx_free(struct fixture *f)
{
	guarded_free(&f->g);
}

static uint64_t fx_head(struct fixture *f)
{
	return atomic_load(&f->hdr.ring_head);
}

static void fx_set_head(struct fixture *f, uint64_t head)
{
	atomic_store(&f->hdr.ring_head, head);
}

/* ring_get, then publish the tail as the root does (also after -EAGAIN: a
 * skipped pad frees room too). */
static int fx_get(struct fixture *f, uint8_t *buf, size_t cap, size_t *len)
{
	*len = 0;
	int rc = ring_get(&f->hdr, f->ring, f->size, &f->tail, buf, cap, len);
	atomic_store_explicit(&f->hdr.ring_tail, f->tail, memory_order_release);
	return rc;
}

/* Writes a record header straight into the ring, as a hostile worker may. */
static void raw_hdr(uint8_t *at, uint32_t len, uint16_t version, uint16_t nops, uint64_t seq)
{
	struct wire_batch h = {.len = len, .version = version, .nops = nops, .seq = seq};
	memcpy(at, &h, sizeof(h));
}

/* ---- operations ---------------------------------------------------------- */

static struct shm_op mkop(int kind, const char *dir, const void *key, size_t key_len, const void *value,
			  size_t value_len, int64_t delta, uint64_t expected_tick)
{
	return (struct shm_op){
		.kind = kind,
		.dir = dir,
		.dir_len = strlen(dir),
		.key = key,
		.key_len = key_len,
		.value = value,
		.value_len = value_len,
		.delta = delta,
		.expected_tick = expected_tick,
	};
}

/* Written out here rather than taken from layout.h: the test states the
 * format independently of the code under test. */
static uint64_t round8(uint64_t n)
{
	return (n + 7) / 8 * 8;
}

static bool has_key(int kind)
{
	return kind != SHM_OP_MKDIR && kind != SHM_OP_RMDIR;
}

static bool has_value(int kind)
{
	return kind == SHM_OP_PUT || kind == SHM_OP_PUT_IF_ABSENT || kind == SHM_OP_PUT_IF_TICK;
}

/* Bytes an operation takes on the wire, as the format defines it. */
static size_t op_wire_bytes(const struct shm_op *op)
{
	size_t body = op->dir_len + (has_key(op->kind) ? op->key_len : 0) +
		      (has_value(op->kind) ? op->value_len : 0);
	return OPHDR + (size_t)round8(body);
}

static bool inside(const void *p, size_t n, const uint8_t *rec, size_t len)
{
	const uint8_t *b = p;
	return b >= rec && b <= rec + len && n <= (size_t)(rec + len - b);
}

/* Every decoded pointer lies inside the record, and the operations' framed
 * sizes add up to the record's length. */
static void check_decoded_framing(const struct shm_op *ops, size_t n, const uint8_t *rec, size_t len)
{
	size_t total = HDR;
	for (size_t i = 0; i < n; i++) {
		T_ASSERT(inside(ops[i].dir, ops[i].dir_len, rec, len));
		T_ASSERT(inside(ops[i].key, ops[i].key_len, rec, len));
		T_ASSERT(inside(ops[i].value, ops[i].value_len, rec, len));
		total += OPHDR + (size_t)round8((uint64_t)ops[i].dir_len + ops[i].key_len + ops[i].value_len);
	}
	T_EQ(total, len);
}

static void check_op_equal(const struct shm_op *got, const struct shm_op *want)
{
	T_EQ(got->kind, want->kind);
	T_EQ(got->dir_len, want->dir_len);
	T_ASSERT(memcmp(got->dir, want->dir, want->dir_len) == 0);
	if (has_key(want->kind)) {
		T_EQ(got->key_len, want->key_len);
		T_ASSERT(memcmp(got->key, want->key, want->key_len) == 0);
	} else {
		T_EQ(got->key_len, 0);
	}
	if (has_value(want->kind)) {
		T_EQ(got->value_len, want->value_len);
		if (want->value_len)
			T_ASSERT(memcmp(got->value, want->value, want->value_len) == 0);
	} else {
		T_EQ(got->value_len, 0);
	}
	if (want->kind == SHM_OP_ADD)
		T_EQ(got->delta, want->delta);
	if (want->kind == SHM_OP_PUT_IF_TICK)
		T_ASSERT(got->expected_tick == want->expected_tick);
	T_EQ(shm_op_check(got), 0);
}

/* Decodes a copy of rec that ends at a guard page; the copy stays mapped in
 * *g so the caller can check pointers against it. */
static int decode_guarded(struct guarded *g, const uint8_t *rec, size_t len, size_t max_ops, size_t *nops,
			  uint64_t *seq)
{
	uint8_t *copy = guarded_alloc(g, len);
	if (len)
		memcpy(copy, rec, len);
	int rc = wire_decode(copy, len, g_ops, max_ops, nops, seq);
	if (rc == 0) {
		T_ASSERT(*nops <= max_ops);
		check_decoded_framing(g_ops, *nops, copy, len);
	} else {
		T_EQ(rc, -EPROTO);
	}
	return rc;
}

/* Encodes ops, sends the batch through a ring starting at `start`, and checks
 * that the same bytes and the same operations come out. */
static void roundtrip(const struct shm_op *ops, size_t n, uint64_t seq, uint64_t ring_size, uint64_t start)
{
	struct wire_buf b;
	wire_init(&b);
	size_t want_len = HDR;
	for (size_t i = 0; i < n; i++) {
		T_EQ(shm_op_check(&ops[i]), 0);
		T_EQ(wire_append(&b, &ops[i], (size_t)ring_size / 2), 0);
		want_len += op_wire_bytes(&ops[i]);
	}
	size_t len = wire_seal(&b, seq);
	T_EQ(len, want_len);
	T_EQ(b.len, want_len);
	T_EQ(b.nops, n);

	struct fixture f;
	fx_init(&f, ring_size, start);
	T_EQ(ring_put(&f.hdr, f.ring, b.data, len), 0);
	/* A record that would cross the ring's end goes to offset 0 after a pad. */
	uint64_t at = start % ring_size, pad = at + len > ring_size ? ring_size - at : 0;
	T_EQ(fx_head(&f), start + pad + len);

	size_t cap = (size_t)ring_size / 2, got_len = 0;
	uint8_t *buf = malloc(cap);
	T_ASSERT(buf);
	T_EQ(fx_get(&f, buf, cap, &got_len), 0);
	T_EQ(got_len, len);
	T_EQ(f.tail, start + pad + len);
	T_ASSERT(memcmp(buf, b.data, len) == 0);
	T_EQ(fx_get(&f, buf, cap, &got_len), -EAGAIN);

	struct guarded g;
	size_t nops = 0;
	uint64_t got_seq = 0;
	T_EQ(decode_guarded(&g, buf, len, WIRE_MAX_OPS, &nops, &got_seq), 0);
	T_EQ(nops, n);
	T_ASSERT(got_seq == seq);
	for (size_t i = 0; i < n; i++)
		check_op_equal(&g_ops[i], &ops[i]);
	guarded_free(&g);
	free(buf);
	fx_free(&f);
	wire_free(&b);
}

/* ---- round trips ---------------------------------------------------------- */

static void test_roundtrip_kinds(void)
{
	static uint8_t big[1u << 20];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 131u + 7u);
	char key_max[SHMSYNC_MAX_KEY];
	memset(key_max, 'k', sizeof(key_max));
	char dir_max[SHMSYNC_MAX_DIR + 1];
	memset(dir_max, 'd', SHMSYNC_MAX_DIR);
	dir_max[0] = '/';
	dir_max[SHMSYNC_MAX_DIR - 1] = '/';
	dir_max[SHMSYNC_MAX_DIR] = 0;

	/* Every kind, with lengths that do and do not end on 8 bytes, empty
	 * values, the largest key and directory, and extreme arguments. Fields a
	 * kind does not use hold garbage: they must not reach the wire. */
	struct shm_op ops[] = {
		mkop(SHM_OP_PUT, "/users/", "alice", 5, "v1", 2, 99, 77),
		mkop(SHM_OP_PUT, "/a/", "12345678", 8, "", 0, 0, 0),
		mkop(SHM_OP_PUT, dir_max, key_max, sizeof(key_max), big, 4093, 0, 0),
		mkop(SHM_OP_PUT_IF_ABSENT, "/sessions/42/", "k", 1, "value!!", 7, -1, 1),
		mkop(SHM_OP_PUT_IF_TICK, "/x/", "key", 3, "abcdefghi", 9, 0, 0),
		mkop(SHM_OP_PUT_IF_TICK, "/x/", "key", 3, "v", 1, 0, UINT64_MAX),
		mkop(SHM_OP_PUT_IF_TICK, "/x/", "key", 3, "v", 1, 0, 1ull << 40),
		mkop(SHM_OP_ADD, "/counters/", "hits", 4, "ignored", 7, 1, 5),
		mkop(SHM_OP_ADD, "/counters/", "hits", 4, NULL, 0, INT64_MIN, 0),
		mkop(SHM_OP_ADD, "/counters/", "hits", 4, NULL, 0, INT64_MAX, 0),
		mkop(SHM_OP_DEL, "/users/", "bob", 3, "ignored", 7, 3, 3),
		mkop(SHM_OP_MKDIR, "/new/dir/", "ignored", 7, "ignored", 7, 3, 3),
		mkop(SHM_OP_RMDIR, "/old/", NULL, 0, NULL, 0, 0, 0),
		mkop(SHM_OP_RMDIR, "/", NULL, 0, NULL, 0, 0, 0),
	};
	size_t n = sizeof(ops) / sizeof(ops[0]);

	/* Each operation alone, at a start far beyond 2^32 ... */
	for (size_t i = 0; i < n; i++)
		roundtrip(&ops[i], 1, i + 1, 65536, (1ull << 40) - 104);
	/* ... all of them in one batch ... */
	roundtrip(ops, n, 1000, 65536, 0);
	/* ... an empty batch (a header only) ... */
	roundtrip(NULL, 0, UINT64_MAX, 4096, 8);
	/* ... and a 1 MiB value. */
	struct shm_op large = mkop(SHM_OP_PUT, "/big/", "k", 1, big, sizeof(big), 0, 0);
	roundtrip(&large, 1, 7, 4u << 20, (1ull << 32) - 8);
	printf("round trips: ok\n");
}

static void test_append_limits(void)
{
	struct wire_buf b;
	struct shm_op put = mkop(SHM_OP_PUT, "/a/", "k", 1, "0123456789", 10, 0, 0);
	size_t one = HDR + op_wire_bytes(&put); /* 16 + 24 + 16 = 56 */
	T_EQ(one, 56);

	/* The limit counts the whole record, header included. */
	wire_init(&b);
	T_EQ(wire_append(&b, &put, one), 0);
	T_EQ(wire_append(&b, &put, 2 * one - HDR), 0);
	T_EQ(wire_append(&b, &put, 3 * one - 2 * HDR - 8), -E2BIG);
	T_EQ(b.nops, 2);
	T_EQ(wire_seal(&b, 1), 2 * one - HDR);
	wire_free(&b);

	/* At most WIRE_MAX_OPS operations; the decoder refuses more than the
	 * caller's max_ops. */
	struct shm_op mk = mkop(SHM_OP_MKDIR, "/", NULL, 0, NULL, 0, 0, 0);
	wire_init(&b);
	for (size_t i = 0; i < WIRE_MAX_OPS; i++)
		T_EQ(wire_append(&b, &mk, SIZE_MAX), 0);
	T_EQ(wire_append(&b, &mk, SIZE_MAX), -E2BIG);
	size_t len = wire_seal(&b, 42);
	T_EQ(len, HDR + (size_t)WIRE_MAX_OPS * (OPHDR + 8));
	size_t nops = 0;
	uint64_t seq = 0;
	struct guarded g;
	T_EQ(decode_guarded(&g, b.data, len, WIRE_MAX_OPS, &nops, &seq), 0);
	T_EQ(nops, WIRE_MAX_OPS);
	T_ASSERT(seq == 42);
	for (size_t i = 0; i < nops; i++)
		check_op_equal(&g_ops[i], &mk);
	guarded_free(&g);
	T_EQ(decode_guarded(&g, b.data, len, WIRE_MAX_OPS - 1, &nops, &seq), -EPROTO);
	guarded_free(&g);
	wire_free(&b);
	printf("append limits: ok\n");
}

/* ---- ring: wrap-around, pads, flow control ------------------------------- */

/* A batch determined by its seq alone, so the consumer can rebuild what the
 * producer sent: 0..5 operations of random kinds and sizes, up to `limit`
 * bytes (appending stops at the first -E2BIG). */
static void build_batch(struct wire_buf *b, uint64_t seq, size_t limit)
{
	static uint8_t bytes[4096];
	static const char *const dirs[] = {"/", "/a/", "/users/", "/sessions/1234567/"};
	static const int kinds[] = {SHM_OP_PUT, SHM_OP_PUT_IF_ABSENT, SHM_OP_PUT_IF_TICK, SHM_OP_ADD,
				    SHM_OP_DEL, SHM_OP_MKDIR,         SHM_OP_RMDIR};
	unsigned long long r = seq * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < sizeof(bytes); i++)
		bytes[i] = (uint8_t)(seq + i * 7);
	wire_init(b);
	size_t n = (size_t)(t_rand(&r) % 6);
	for (size_t i = 0; i < n; i++) {
		int kind = kinds[t_rand(&r) % 7];
		size_t key_len = 1 + (size_t)(t_rand(&r) % 40);
		/* Mostly small values, sometimes one that fills most of the limit. */
		size_t value_len = (size_t)(t_rand(&r) % 4 == 0 ? t_rand(&r) % (limit < 4096 ? limit : 4096)
								: t_rand(&r) % 64);
		struct shm_op op = mkop(kind, dirs[t_rand(&r) % 4], bytes, key_len, bytes + 64, value_len,
					(int64_t)t_rand(&r), t_rand(&r));
		if (value_len + 64 > sizeof(bytes))
			op.value_len = sizeof(bytes) - 64;
		if (wire_append(b, &op, limit) == -E2BIG)
			break;
	}
	wire_seal(b, seq);
}

/* Producer and consumer interleaved at random over many records of varied
 * sizes: every record comes out once, in order, byte for byte; -EAGAIN comes
 * exactly when the record (and the pad it needs) does not fit; pads happen. */
static void test_wrap(uint64_t ring_size, uint64_t start, size_t records, unsigned long long *rng)
{
	struct fixture f;
	fx_init(&f, ring_size, start);
	size_t cap = (size_t)ring_size / 2;
	uint8_t *buf = malloc(cap);
	T_ASSERT(buf);
	uint64_t produced = 0, consumed = 0, record_bytes = 0, eagain = 0;
	struct wire_buf pending;
	bool have_pending = false;

	while (consumed < records) {
		bool produce = produced < records && (produced == consumed || t_rand(rng) % 2);
		if (produce) {
			if (!have_pending) {
				build_batch(&pending, produced + 1, cap);
				have_pending = true;
			}
			uint64_t head = fx_head(&f), tail = atomic_load(&f.hdr.ring_tail);
			uint64_t at = head % ring_size;
			uint64_t pad = at + pending.len > ring_size ? ring_size - at : 0;
			bool fits = head - tail + pad + pending.len <= ring_size;
			int rc = ring_put(&f.hdr, f.ring, pending.data, pending.len);
			if (!fits) {
				T_EQ(rc, -EAGAIN);
				T_EQ(fx_head(&f), head);
				eagain++;
				continue;
			}
			T_EQ(rc, 0);
			T_EQ(fx_head(&f), head + pad + pending.len);
			record_bytes += pending.len;
			wire_free(&pending);
			have_pending = false;
			produced++;
		} else {
			size_t len = 0;
			int rc = fx_get(&f, buf, cap, &len);
			if (consumed == produced) {
				T_EQ(rc, -EAGAIN);
				T_EQ(f.tail, fx_head(&f));
				continue;
			}
			T_EQ(rc, 0);
			struct wire_buf want;
			build_batch(&want, consumed + 1, cap);
			T_EQ(len, want.len);
			T_ASSERT(memcmp(buf, want.data, len) == 0);
			struct guarded g;
			size_t nops = 0;
			uint64_t seq = 0;
			T_EQ(decode_guarded(&g, buf, len, WIRE_MAX_OPS, &nops, &seq), 0);
			T_EQ(nops, want.nops);
			T_ASSERT(seq == consumed + 1);
			guarded_free(&g);
			wire_free(&want);
			consumed++;
		}
		/* The consumer never passes the producer, nor falls a ring behind. */
		T_ASSERT(f.tail <= fx_head(&f));
		T_ASSERT(fx_head(&f) - f.tail <= ring_size);
	}
	if (have_pending)
		wire_free(&pending);
	uint64_t pads = fx_head(&f) - start - record_bytes;
	T_ASSERT(pads > 0);
	T_ASSERT(eagain > 0);
	T_ASSERT(fx_head(&f) - start > 20 * ring_size);
	printf("wrap: ring %llu from %llu: %zu records, %llu bytes of records, %llu of pads, %llu EAGAIN: "
	       "ok\n",
	       (unsigned long long)ring_size, (unsigned long long)start, records,
	       (unsigned long long)record_bytes, (unsigned long long)pads, (unsigned long long)eagain);
	free(buf);
	fx_free(&f);
}

/* A valid record of exactly len bytes (16, or a multiple of 8 >= 48). */
static void record_of(struct wire_buf *b, size_t len, uint64_t seq)
{
	static const char value[4096];
	wire_init(b);
	if (len > HDR) {
		T_ASSERT(len >= HDR + OPHDR + 8 && len % 8 == 0 && len - 48 < sizeof(value));
		struct shm_op op = mkop(SHM_OP_PUT, "/a/", "k", 1, value, len - HDR - OPHDR - 4, 0, 0);
		T_EQ(wire_append(b, &op, len), 0);
	}
	T_EQ(wire_seal(b, seq), len);
}

static void put_len(struct fixture *f, size_t len, uint64_t seq, int want)
{
	struct wire_buf b;
	record_of(&b, len, seq);
	T_EQ(ring_put(&f->hdr, f->ring, b.data, b.len), want);
	wire_free(&b);
}

static void get_len(struct fixture *f, size_t want_len, uint64_t want_seq)
{
	uint8_t buf[4096];
	size_t len = 0;
	T_EQ(fx_get(f, buf, sizeof(buf), &len), 0);
	T_EQ(len, want_len);
	struct wire_batch h;
	memcpy(&h, buf, sizeof(h));
	T_ASSERT(h.seq == want_seq);
}

static void test_flow_control(void)
{
	const uint64_t S = 1ull << 40; /* a multiple of every ring size here */
	struct fixture f;
	struct wire_buf b;

	/* Full: four 64-byte records fill a 256-byte ring exactly. */
	fx_init(&f, 256, S);
	for (uint64_t i = 1; i <= 4; i++)
		put_len(&f, 64, i, 0);
	T_EQ(fx_head(&f), S + 256);
	put_len(&f, 64, 5, -EAGAIN);
	put_len(&f, 16, 5, -EAGAIN);
	T_EQ(fx_head(&f), S + 256);
	get_len(&f, 64, 1);
	put_len(&f, 64, 5, 0); /* lands at offset 0, no pad */
	T_EQ(fx_head(&f), S + 320);
	for (uint64_t i = 2; i <= 5; i++)
		get_len(&f, 64, i);
	fx_free(&f);

	/* Full because of the pad: 384 bytes in use, the record (128) would fit
	 * but not with the 64-byte pad it needs at the end. */
	fx_init(&f, 512, S);
	put_len(&f, 64, 1, 0);
	put_len(&f, 256, 2, 0);
	put_len(&f, 128, 3, 0);
	get_len(&f, 64, 1);
	put_len(&f, 128, 4, -EAGAIN);
	T_EQ(fx_head(&f), S + 448);
	get_len(&f, 256, 2);
	put_len(&f, 128, 4, 0);
	T_EQ(fx_head(&f), S + 512 + 128); /* 64 bytes of pad, then the record */
	get_len(&f, 128, 3);
	get_len(&f, 128, 4); /* skips the pad */
	T_EQ(f.tail, S + 640);
	size_t len;
	uint8_t buf[512];
	T_EQ(fx_get(&f, buf, sizeof(buf), &len), -EAGAIN);
	fx_free(&f);

	/* Half the ring always fits an empty ring, wherever the position is;
	 * more never does. Lengths that are not whole records are refused. */
	for (uint64_t off = 0; off < 4096; off += 8) {
		fx_init(&f, 4096, S + off);
		put_len(&f, 2048, 1, 0);
		get_len(&f, 2048, 1);
		T_EQ(f.tail, fx_head(&f));
		fx_free(&f);
	}
	fx_init(&f, 4096, S);
	record_of(&b, 2056, 1);
	T_EQ(ring_put(&f.hdr, f.ring, b.data, b.len), -E2BIG);
	T_EQ(ring_put(&f.hdr, f.ring, b.data, 12), -E2BIG);
	T_EQ(ring_put(&f.hdr, f.ring, b.data, 8), -E2BIG);
	T_EQ(ring_put(&f.hdr, f.ring, b.data, 0), -E2BIG);
	T_EQ(fx_head(&f), S);
	wire_free(&b);
	fx_free(&f);
	printf("flow control: ok\n");
}

/* ---- hostile rings --------------------------------------------------------- */

#define RSZ 4096u
static const uint64_t HS = 1ull << 40; /* hostile tests start here: aligned to RSZ */

/* Runs ring_get once on f and checks the result and where the tail ends. */
static void expect_get(struct fixture *f, size_t cap, int want_rc, uint64_t want_tail, const char *what)
{
	uint8_t buf[RSZ];
	size_t len = 0;
	int rc = fx_get(f, buf, cap, &len);
	if (rc != want_rc || f->tail != want_tail)
		T_FAIL("%s: ring_get gave %d with tail +%lld, expected %d with tail +%lld", what, rc,
		       (long long)(f->tail - HS), want_rc, (long long)(want_tail - HS));
}

static void test_hostile_ring(void)
{
	struct fixture f;
	const size_t cap = RSZ / 2;
	struct wire_buf b;
	record_of(&b, 64, 9); /* a valid 64-byte record */

	/* Head behind tail. */
	fx_init(&f, RSZ, HS);
	memcpy(f.ring, b.data, 64);
	fx_set_head(&f, HS - 8);
	expect_get(&f, cap, -EPROTO, HS, "head behind tail");
	fx_set_head(&f, 0);
	expect_get(&f, cap, -EPROTO, HS, "head 0");
	fx_free(&f);

	/* Head more than a ring ahead; exactly a ring ahead is a full ring. */
	fx_init(&f, RSZ, HS);
	for (uint64_t i = 0; i < RSZ / 64; i++)
		memcpy(f.ring + i * 64, b.data, 64);
	fx_set_head(&f, HS + RSZ + 8);
	expect_get(&f, cap, -EPROTO, HS, "head a ring and 8 ahead");
	fx_set_head(&f, UINT64_MAX);
	expect_get(&f, cap, -EPROTO, HS, "head UINT64_MAX");
	fx_set_head(&f, HS + RSZ);
	for (uint64_t i = 1; i <= RSZ / 64; i++)
		expect_get(&f, cap, 0, HS + i * 64, "full ring");
	expect_get(&f, cap, -EAGAIN, HS + RSZ, "full ring drained");
	fx_free(&f);

	/* Bad lengths in a record header. */
	const struct {
		uint32_t len;
		uint16_t version;
		uint64_t head_ahead;
		size_t cap;
		const char *what;
	} bad[] = {
		{0, WIRE_VERSION, 64, cap, "len 0"},
		{0, WIRE_PAD, 64, cap, "pad len 0"},
		{4, WIRE_VERSION, 64, cap, "len 4"},
		{12, WIRE_VERSION, 64, cap, "len 12"},
		{20, WIRE_VERSION, 64, cap, "len 20"},
		{63, WIRE_VERSION, 64, cap, "len 63"},
		{8, WIRE_VERSION, 64, cap, "len 8, shorter than a batch header"},
		{72, WIRE_VERSION, 64, cap, "len past head"},
		{64, WIRE_VERSION, 56, cap, "len past head by 8"},
		{UINT32_MAX & ~7u, WIRE_VERSION, RSZ, cap, "len 4 GiB - 8"},
		{64, WIRE_VERSION, 64, 56, "len above cap"},
		{RSZ, WIRE_VERSION, RSZ, cap, "len of the whole ring"},
		{8, WIRE_PAD, 64, cap, "pad not reaching the end"},
		{RSZ - 8, WIRE_PAD, RSZ, cap, "pad 8 short of the end"},
		{RSZ + 8, WIRE_PAD, RSZ, cap, "pad past the end"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fx_init(&f, RSZ, HS);
		memcpy(f.ring, b.data, 64);
		raw_hdr(f.ring, bad[i].len, bad[i].version, 1, 9);
		fx_set_head(&f, HS + bad[i].head_ahead);
		expect_get(&f, bad[i].cap, -EPROTO, HS, bad[i].what);
		fx_free(&f);
	}

	/* A record straddling the end of the ring. */
	fx_init(&f, RSZ, HS + RSZ - 32);
	raw_hdr(f.ring + RSZ - 32, 64, WIRE_VERSION, 0, 1);
	fx_set_head(&f, HS + RSZ + 32);
	expect_get(&f, cap, -EPROTO, HS + RSZ - 32, "record straddling the end");
	fx_free(&f);

	/* A pad past the end from the middle of the ring. */
	fx_init(&f, RSZ, HS + 1024);
	raw_hdr(f.ring + 1024, RSZ, WIRE_PAD, 0, 0);
	fx_set_head(&f, HS + 1024 + RSZ);
	expect_get(&f, cap, -EPROTO, HS + 1024, "pad from the middle past the end");
	fx_free(&f);

	/* Legitimate pads: one to the end, then a record at offset 0; one to the
	 * end with nothing after it (the tail moves past it: room for the
	 * producer). A bad record after a good pad: the pad is consumed. */
	fx_init(&f, RSZ, HS + RSZ - 64);
	raw_hdr(f.ring + RSZ - 64, 64, WIRE_PAD, 0, 0);
	memcpy(f.ring, b.data, 64);
	fx_set_head(&f, HS + RSZ + 64);
	expect_get(&f, cap, 0, HS + RSZ + 64, "pad then record");
	fx_set_head(&f, HS + RSZ + 64 + RSZ - 64);
	raw_hdr(f.ring + 64, RSZ - 64, WIRE_PAD, 0, 0);
	expect_get(&f, cap, -EAGAIN, HS + 2 * RSZ, "pad up to head");
	raw_hdr(f.ring, 8, WIRE_PAD, 0, 0);
	fx_set_head(&f, HS + 2 * RSZ + 16);
	expect_get(&f, cap, -EPROTO, HS + 2 * RSZ, "short pad at offset 0 after a pad");
	fx_free(&f);

	fx_init(&f, RSZ, HS + RSZ - 64);
	raw_hdr(f.ring + RSZ - 64, 64, WIRE_PAD, 0, 0);
	raw_hdr(f.ring, 20, WIRE_VERSION, 0, 0);
	fx_set_head(&f, HS + RSZ + 64);
	expect_get(&f, cap, -EPROTO, HS + RSZ, "bad record after a pad");
	fx_free(&f);

	/* A pad reaching past head. */
	fx_init(&f, RSZ, HS + RSZ - 64);
	raw_hdr(f.ring + RSZ - 64, 64, WIRE_PAD, 0, 0);
	fx_set_head(&f, HS + RSZ - 32);
	expect_get(&f, cap, -EPROTO, HS + RSZ - 64, "pad past head");
	fx_free(&f);

	/* A head that is not a multiple of 8 is no record boundary: -EPROTO at
	 * once, even with a complete record before it, and never a read past
	 * the ragged end. */
	fx_init(&f, RSZ, HS + RSZ - 64);
	memcpy(f.ring + RSZ - 64, b.data, 64);
	for (uint64_t k = 1; k < 8; k++) {
		fx_set_head(&f, HS + RSZ - 64 + 64 + k);
		expect_get(&f, cap, -EPROTO, HS + RSZ - 64, "head a record and 1..7 bytes ahead");
		fx_set_head(&f, HS + RSZ - 64 + k);
		expect_get(&f, cap, -EPROTO, HS + RSZ - 64, "head 1..7 bytes ahead");
	}
	fx_free(&f);

	/* A record whose framing is fine but whose content is not: ring_get
	 * passes it on (it checks framing only), wire_decode refuses it. */
	fx_init(&f, RSZ, HS);
	memcpy(f.ring, b.data, 64);
	raw_hdr(f.ring, 64, 7, 1, 9);
	fx_set_head(&f, HS + 64);
	{
		uint8_t buf[RSZ];
		size_t len = 0, nops = 0;
		uint64_t seq = 0;
		T_EQ(fx_get(&f, buf, cap, &len), 0);
		T_EQ(len, 64);
		struct guarded g;
		T_EQ(decode_guarded(&g, buf, len, WIRE_MAX_OPS, &nops, &seq), -EPROTO);
		guarded_free(&g);
	}
	fx_free(&f);

	/* The worker rewrites the ring after the copy: the copy is unaffected. */
	fx_init(&f, RSZ, HS);
	memcpy(f.ring, b.data, 64);
	fx_set_head(&f, HS + 64);
	{
		uint8_t buf[RSZ];
		size_t len = 0;
		T_EQ(fx_get(&f, buf, cap, &len), 0);
		memset(f.ring, 0xff, 64);
		T_ASSERT(memcmp(buf, b.data, 64) == 0);
	}
	fx_free(&f);

	wire_free(&b);
	printf("hostile ring framing: ok\n");
}

/* Random ring contents and a random head, many times: ring_get answers 0,
 * -EAGAIN or -EPROTO, a record it returns is a copy of bytes inside the ring
 * that lay before head, and the tail never passes head. */
static void test_random_rings(unsigned long long *rng)
{
	struct fixture f;
	const uint64_t size = 512;
	fx_init(&f, size, 0);
	uint8_t buf[256];
	for (int iter = 0; iter < 200000; iter++) {
		uint64_t start = (t_rand(rng) % (1ull << 41)) & ~7ull;
		uint64_t ahead = t_rand(rng) % 4 == 0 ? t_rand(rng) : t_rand(rng) % (size + 64);
		/* Mostly plausible headers: lengths that are multiples of 8, pads. */
		for (uint64_t i = 0; i < size; i += 8) {
			uint64_t word = t_rand(rng);
			if (word % 3 == 0)
				word = (word >> 32 << 32) | ((word >> 8) % (size + 16) & ~7ull);
			if (word % 5 == 0)
				word = (word & ~(0xffffull << 32)) |
				       ((uint64_t)(word % 2 ? WIRE_PAD : WIRE_VERSION) << 32);
			memcpy(f.ring + i, &word, 8);
		}
		f.tail = start;
		fx_set_head(&f, start + ahead);
		uint64_t head = start + ahead;
		for (int steps = 0;; steps++) {
			T_ASSERT(steps <= (int)(size / 16) + 1);
			size_t len = 0;
			uint64_t before = f.tail;
			int rc = fx_get(&f, buf, sizeof(buf), &len);
			T_ASSERT(f.tail >= before);
			T_ASSERT(f.tail == before || f.tail <= head);
			if (rc != 0) {
				T_ASSERT(rc == -EAGAIN || rc == -EPROTO);
				break;
			}
			T_ASSERT(len >= HDR && len % 8 == 0 && len <= sizeof(buf));
			uint64_t at = (f.tail - len) % size;
			T_ASSERT(at + len <= size);
			T_ASSERT(memcmp(buf, f.ring + at, len) == 0);
		}
	}
	fx_free(&f);
	printf("random rings: ok\n");
}

/* ---- hostile records ------------------------------------------------------ */

/* A private, mutable copy of a record with helpers to rewrite its fields. */
static void set_batch(uint8_t *rec, uint32_t len, uint16_t version, uint16_t nops)
{
	struct wire_batch h;
	memcpy(&h, rec, sizeof(h));
	h.len = len;
	h.version = version;
	h.nops = nops;
	memcpy(rec, &h, sizeof(h));
}

static void set_op(uint8_t *rec, size_t at, uint16_t dir_len, uint32_t key_len, uint32_t value_len)
{
	struct wire_op w;
	memcpy(&w, rec + at, sizeof(w));
	w.dir_len = dir_len;
	w.key_len = key_len;
	w.value_len = value_len;
	memcpy(rec + at, &w, sizeof(w));
}

static void expect_decode(const uint8_t *rec, size_t len, size_t max_ops, int want, const char *what)
{
	struct guarded g;
	size_t nops = 0;
	uint64_t seq = 0;
	int rc = decode_guarded(&g, rec, len, max_ops, &nops, &seq);
	guarded_free(&g);
	if (rc != want)
		T_FAIL("%s: wire_decode gave %d, expected %d", what, rc, want);
}

static void test_hostile_records(void)
{
	/* one: put "/a/" "key" "value" (16 + 24 + 16 = 56 bytes).
	 * two: the same put, then mkdir "/dir/" (24 + 8): 88 bytes. */
	struct wire_buf one, two;
	struct shm_op put = mkop(SHM_OP_PUT, "/a/", "key", 3, "value", 5, 0, 0);
	struct shm_op mk = mkop(SHM_OP_MKDIR, "/dir/", NULL, 0, NULL, 0, 0, 0);
	wire_init(&one);
	T_EQ(wire_append(&one, &put, SIZE_MAX), 0);
	T_EQ(wire_seal(&one, 4), 56);
	wire_init(&two);
	T_EQ(wire_append(&two, &put, SIZE_MAX), 0);
	T_EQ(wire_append(&two, &mk, SIZE_MAX), 0);
	T_EQ(wire_seal(&two, 5), 88);
	const size_t op0 = HDR, op1 = HDR + OPHDR + 16;
	uint8_t rec[128];

	/* Copies the base record into rec (zero beyond it), applies stmt, decodes
	 * rlen bytes of rec and checks the exact result. */
#define MUTATE(base, stmt, rlen, want, what)                                                                 \
	do {                                                                                                 \
		memset(rec, 0, sizeof(rec));                                                                 \
		memcpy(rec, (base).data, (base).len);                                                        \
		stmt;                                                                                        \
		expect_decode(rec, rlen, WIRE_MAX_OPS, want, what);                                          \
	} while (0)

	MUTATE(one, (void)0, 56, 0, "the valid one-op record");
	MUTATE(two, (void)0, 88, 0, "the valid two-op record");

	/* Record lengths: every truncation, a length that disagrees with the
	 * header either way, lengths that are not multiples of 8. */
	for (size_t l = 0; l < 88; l++)
		MUTATE(two, (void)0, l, -EPROTO, "truncated record");
	MUTATE(two, set_batch(rec, 88, WIRE_VERSION, 2), 96, -EPROTO, "header len 88, record 96");
	MUTATE(two, set_batch(rec, 96, WIRE_VERSION, 2), 88, -EPROTO, "header len 96, record 88");
	MUTATE(two, set_batch(rec, 89, WIRE_VERSION, 2), 89, -EPROTO, "len 89");
	MUTATE(two, set_batch(rec, 12, WIRE_VERSION, 0), 12, -EPROTO, "len 12, no ops");
	MUTATE(two, set_batch(rec, 8, WIRE_VERSION, 0), 8, -EPROTO, "len 8, no ops");
	MUTATE(two, set_batch(rec, 16, WIRE_VERSION, 0), 16, 0, "len 16, no ops");
	/* The header's len patched to each shorter multiple of 8: the operations
	 * no longer fit. */
	for (size_t l = HDR; l < 88; l += 8)
		MUTATE(two, set_batch(rec, (uint32_t)l, WIRE_VERSION, 2), l, -EPROTO, "ops cut short");

	/* Unknown versions. */
	MUTATE(two, set_batch(rec, 88, 0, 2), 88, -EPROTO, "version 0");
	MUTATE(two, set_batch(rec, 88, WIRE_VERSION + 1, 2), 88, -EPROTO, "version 2");
	MUTATE(two, set_batch(rec, 88, WIRE_PAD, 2), 88, -EPROTO, "version PAD");

	/* nops that do not match the operations present. */
	MUTATE(two, set_batch(rec, 88, WIRE_VERSION, 0), 88, -EPROTO, "nops 0 with two ops");
	MUTATE(two, set_batch(rec, 88, WIRE_VERSION, 1), 88, -EPROTO, "nops 1 with two ops");
	MUTATE(two, set_batch(rec, 88, WIRE_VERSION, 3), 88, -EPROTO, "nops 3 with two ops");
	MUTATE(two, set_batch(rec, 88, WIRE_VERSION, 0xffff), 88, -EPROTO, "nops 65535 with two ops");
	MUTATE(one, set_batch(rec, 56, WIRE_VERSION, 0), 56, -EPROTO, "nops 0 with one op");
	memcpy(rec, two.data, 88);
	expect_decode(rec, 88, 1, -EPROTO, "nops above max_ops");
	expect_decode(rec, 88, 2, 0, "nops equal to max_ops");

	/* A truncated operation. */
	MUTATE(one, set_batch(rec, 24, WIRE_VERSION, 1), 24, -EPROTO, "op header cut to 8 bytes");
	MUTATE(one, set_batch(rec, 32, WIRE_VERSION, 1), 32, -EPROTO, "op header cut to 16 bytes");
	MUTATE(one, set_batch(rec, 40, WIRE_VERSION, 1), 40, -EPROTO, "op header without its body");
	MUTATE(one, set_batch(rec, 48, WIRE_VERSION, 1), 48, -EPROTO, "op body cut by 8");

	/* Operation lengths that do not add up. */
	MUTATE(one, set_op(rec, op0, 3, 3, 13), 56, -EPROTO, "value 8 bytes longer");
	MUTATE(one, set_op(rec, op0, 3, 3, 0), 56, -EPROTO, "value gone: 8 bytes unaccounted");
	MUTATE(one, set_op(rec, op0, 3, 14, 0), 56, -EPROTO, "key over the end");
	MUTATE(one, set_op(rec, op0, 11, 3, 5), 56, -EPROTO, "dir over the end");
	MUTATE(one, set_op(rec, op0, 0xffff, 3, 5), 56, -EPROTO, "dir_len 65535");
	MUTATE(one, set_op(rec, op0, 3, UINT32_MAX, 5), 56, -EPROTO, "key_len 4 GiB");
	MUTATE(one, set_op(rec, op0, 3, 3, UINT32_MAX), 56, -EPROTO, "value_len 4 GiB");
	MUTATE(one, set_op(rec, op0, 0xffff, UINT32_MAX, UINT32_MAX), 56, -EPROTO,
	       "every length at its maximum");
	MUTATE(one, set_op(rec, op0, 3, 3, UINT32_MAX - 5), 56, -EPROTO, "lengths summing to 2^32");
	MUTATE(one, set_op(rec, op0, 3, UINT32_MAX - 2, UINT32_MAX - 2), 56, -EPROTO,
	       "lengths summing to 2^33 - 2");
	MUTATE(two, set_op(rec, op1, 5, 0, 4), 88, -EPROTO, "mkdir body past the end");
	MUTATE(two, set_op(rec, op1, 0, 0, 0), 88, -EPROTO, "mkdir body gone");
	/* The same body split differently, or grown within its padding, still
	 * frames: the decoder checks framing only; shm_op_check and
	 * shm_apply_batch judge the content. */
	MUTATE(one, set_op(rec, op0, 3, 3, 6), 56, 0, "value grown within its padding");
	MUTATE(one, set_op(rec, op0, 3, 8, 0), 56, 0, "key and value redistributed");
	MUTATE(two, set_op(rec, op1, 8, 0, 0), 88, 0, "mkdir dir over its padding");
#undef MUTATE

	/* Every single-byte change of a valid record: the decoder accepts it
	 * (decode_guarded checked every pointer and the sizes) or says -EPROTO,
	 * never reads out of bounds, and shm_op_check answers only its errors. */
	static const uint8_t vals[] = {0, 1, 7, 8, 0x7f, 0x80, 0xfe, 0xff};
	for (size_t at = 0; at < two.len; at++) {
		for (size_t v = 0; v < sizeof(vals); v++) {
			memcpy(rec, two.data, two.len);
			rec[at] = vals[v];
			struct guarded g;
			size_t nops = 0;
			uint64_t seq = 0;
			int rc = decode_guarded(&g, rec, two.len, WIRE_MAX_OPS, &nops, &seq);
			for (size_t i = 0; rc == 0 && i < nops; i++) {
				int crc = shm_op_check(&g_ops[i]);
				T_ASSERT(crc == 0 || crc == -EINVAL || crc == -ENAMETOOLONG ||
					 crc == -EMSGSIZE);
			}
			guarded_free(&g);
		}
	}
	wire_free(&one);
	wire_free(&two);
	printf("hostile records: ok\n");
}

/* A tail that is not a multiple of 8. The root's own tail is normally
 * aligned, but after -EPROTO ring_get's contract has the caller drop
 * everything up to head, and head is whatever the worker wrote. ring_get
 * must then answer -EPROTO and read nothing past the ring. It runs in a child
 * so that a read into the guard page is reported as a failure here. */
static void test_misaligned_tail(void)
{
	fflush(stdout);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		struct fixture f;
		for (uint64_t k = 1; k < 8; k++) {
			fx_init(&f, RSZ, HS + RSZ - k);
			fx_set_head(&f, HS + RSZ - k + 8);
			uint8_t buf[RSZ];
			size_t len = 0;
			int rc = fx_get(&f, buf, RSZ / 2, &len);
			if (rc != -EPROTO) {
				fprintf(stderr,
					"misaligned tail (ring end - %llu): ring_get gave %d, expected %d\n",
					(unsigned long long)k, rc, -EPROTO);
				_exit(1);
			}
			fx_free(&f);
		}
		_exit(0);
	}
	int status = 0;
	T_EQ(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		T_FAIL("ring_get with a tail 1..7 bytes before the ring's end read past the ring (signal "
		       "%d); "
		       "see notes/bugs.md",
		       WTERMSIG(status));
	/* Under ASan the child's SEGV handler exits with 1 instead. */
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		T_FAIL("ring_get with a tail 1..7 bytes before the ring's end failed (exit %d); see "
		       "notes/bugs.md",
		       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	printf("misaligned tail: ok\n");
}

int main(void)
{
	unsigned long long rng = t_seed(0x5eed5eedull);
	g_ops = calloc(WIRE_MAX_OPS, sizeof(*g_ops));
	T_ASSERT(g_ops);

	test_roundtrip_kinds();
	test_append_limits();
	test_flow_control();
	test_wrap(1024, (1ull << 40) - 104, 20000, &rng);
	test_wrap(4096, (1ull << 32) - 1000, 20000, &rng);
	test_wrap(65536, (1ull << 40) - 104, 5000, &rng);
	test_hostile_ring();
	test_hostile_records();
	test_random_rings(&rng);
	test_misaligned_tail();

	free(g_ops);
	printf("test_wire: all passed\n");
	return 0;
}
