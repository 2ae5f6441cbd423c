/* Writes seed inputs for fuzz_wire into a directory: valid export rings
 * built with the worker's own encoder (wire_append, wire_seal, ring_put), so
 * the fuzzer starts from inputs that reach every branch of a successful
 * decode instead of having to discover the format.
 *
 *   make_corpus DIR
 *
 * Each file is what fuzz_wire expects: the ring's head (8 bytes,
 * little-endian), then the ring's contents from offset 0. The fuzz_wire
 * target runs on x86-64 and arm64, both little-endian, like the port itself.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port.h"
#include "shm.h"
#include "wire.h"

#define RING_SIZE 4096u /* fuzz_wire's ring */

static const char *g_dir;

static void die(const char *what)
{
	fprintf(stderr, "make_corpus: %s\n", what);
	exit(1);
}

static struct shm_op mkop(int kind, const char *dir, const char *key, const void *value, size_t value_len,
			  int64_t arg)
{
	return (struct shm_op){
		.kind = kind,
		.dir = dir,
		.dir_len = strlen(dir),
		.key = key,
		.key_len = key ? strlen(key) : 0,
		.value = value,
		.value_len = value_len,
		.delta = arg,
		.expected_tick = (uint64_t)arg,
	};
}

/* One of every kind, with lengths that do and do not end on 8 bytes. */
static struct shm_op every_kind(size_t i)
{
	switch (i % 7) {
	case 0:
		return mkop(SHM_OP_PUT, "/users/", "alice", "{\"age\":42}", 10, 0);
	case 1:
		return mkop(SHM_OP_PUT_IF_ABSENT, "/sessions/42/", "token", "abcdefgh", 8, 0);
	case 2:
		return mkop(SHM_OP_PUT_IF_TICK, "/users/", "bob", "v", 1, 17);
	case 3:
		return mkop(SHM_OP_ADD, "/counters/", "hits", NULL, 0, -3);
	case 4:
		return mkop(SHM_OP_DEL, "/users/", "carol", NULL, 0, 0);
	case 5:
		return mkop(SHM_OP_MKDIR, "/a/b/c/", NULL, NULL, 0, 0);
	default:
		return mkop(SHM_OP_RMDIR, "/sessions/", NULL, NULL, 0, 0);
	}
}

struct ring {
	struct port_hdr hdr;
	uint8_t data[RING_SIZE];
};

static void ring_init(struct ring *r)
{
	memset(r, 0, sizeof(*r));
	r->hdr.ring_size = RING_SIZE;
}

/* Encodes ops[0..n) as one batch and publishes it in r. */
static void put_batch(struct ring *r, const struct shm_op *ops, size_t n, uint64_t seq)
{
	struct wire_buf b;
	wire_init(&b);
	for (size_t i = 0; i < n; i++) {
		if (shm_op_check(&ops[i]) != 0)
			die("a seed operation is invalid");
		if (wire_append(&b, &ops[i], RING_SIZE / 2) != 0)
			die("wire_append failed");
	}
	size_t len = wire_seal(&b, seq);
	if (ring_put(&r->hdr, r->data, b.data, len) != 0)
		die("ring_put failed");
	wire_free(&b);
}

static void write_file(const char *name, const void *head8, const void *body, size_t len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", g_dir, name);
	FILE *f = fopen(path, "wb");
	if (!f)
		die(path);
	if ((head8 && fwrite(head8, 1, 8, f) != 8) || (len && fwrite(body, 1, len, f) != len) ||
	    fclose(f) != 0)
		die(path);
}

/* The file holds the head and the ring up to head (or the whole ring). */
static void write_ring(const char *name, struct ring *r)
{
	uint64_t head = atomic_load(&r->hdr.ring_head);
	size_t len = head < RING_SIZE ? (size_t)head : RING_SIZE;
	write_file(name, &head, r->data, len);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		die("usage: make_corpus DIR");
	g_dir = argv[1];
	static struct ring r;
	struct shm_op ops[128];

	/* One batch with every kind. */
	ring_init(&r);
	for (size_t i = 0; i < 7; i++)
		ops[i] = every_kind(i);
	put_batch(&r, ops, 7, 1);
	write_ring("every_kind", &r);

	/* The same batch as a bare record, for the decoder alone. */
	{
		struct wire_buf b;
		wire_init(&b);
		for (size_t i = 0; i < 7; i++)
			if (wire_append(&b, &ops[i], SIZE_MAX) != 0)
				die("wire_append failed");
		size_t len = wire_seal(&b, 1);
		write_file("record_every_kind", NULL, b.data, len);
		/* The record after an 8-byte head: the decoder of the rest of
		 * the input sees it whole. */
		uint64_t head = len;
		write_file("head_then_record", &head, b.data, len);
		wire_free(&b);
	}

	/* Many batches of one operation each, one per kind in turn. */
	ring_init(&r);
	for (uint64_t i = 0; i < 21; i++) {
		struct shm_op op = every_kind((size_t)i);
		put_batch(&r, &op, 1, i + 1);
	}
	write_ring("one_op_batches", &r);

	/* An empty batch: a header only. */
	ring_init(&r);
	put_batch(&r, NULL, 0, 7);
	write_ring("empty_batch", &r);

	/* A batch of many small operations. */
	ring_init(&r);
	for (size_t i = 0; i < 60; i++)
		ops[i] = mkop(i % 2 ? SHM_OP_MKDIR : SHM_OP_DEL, "/d/", i % 2 ? NULL : "k", NULL, 0, 0);
	put_batch(&r, ops, 60, 3);
	write_ring("many_small_ops", &r);

	/* A large value, the longest key and directory. */
	{
		static char value[1800], key[SHMSYNC_MAX_KEY + 1], dir[SHMSYNC_MAX_DIR + 1];
		memset(value, 'v', sizeof(value));
		memset(key, 'k', SHMSYNC_MAX_KEY);
		memset(dir, 'd', SHMSYNC_MAX_DIR);
		dir[0] = dir[SHMSYNC_MAX_DIR - 1] = '/';
		ring_init(&r);
		ops[0] = mkop(SHM_OP_PUT, "/big/", "k", value, sizeof(value), 0);
		put_batch(&r, ops, 1, 1);
		ops[0] = mkop(SHM_OP_PUT_IF_ABSENT, dir, key, "x", 1, 0);
		put_batch(&r, ops, 1, 2);
		write_ring("large_fields", &r);
	}

	/* Two records of half the ring each: the ring is full. */
	{
		static char value[2048];
		ring_init(&r);
		/* 16 + 24 + round8(3 + 1 + 2004) = 2048 */
		ops[0] = mkop(SHM_OP_PUT, "/a/", "k", value, 2004, 0);
		put_batch(&r, ops, 1, 1);
		put_batch(&r, ops, 1, 2);
		write_ring("full_ring", &r);
	}

	/* Records up to 3904 bytes, then a pad to the end of the ring, as the
	 * producer writes it when the next record would not fit there. (With the
	 * root's tail at 0 ring_put cannot be made to write it: it would need
	 * the consumer to have freed the start.) */
	{
		static char value[2048];
		ring_init(&r);
		/* 16 + 24 + round8(3 + 1 + 1860) = 1904, then 2000 */
		ops[0] = mkop(SHM_OP_PUT, "/a/", "k", value, 1860, 0);
		put_batch(&r, ops, 1, 1);
		ops[0] = mkop(SHM_OP_PUT, "/a/", "k", value, 1956, 0);
		put_batch(&r, ops, 1, 2);
		uint64_t head = atomic_load(&r.hdr.ring_head);
		if (head != 3904)
			die("pad seed: unexpected head");
		struct wire_batch pad = {.len = (uint32_t)(RING_SIZE - head), .version = WIRE_PAD};
		memcpy(r.data + head, &pad, 8);
		atomic_store(&r.hdr.ring_head, (uint64_t)RING_SIZE);
		write_ring("pad_to_end", &r);

		/* The same ring with a record instead of the pad, crossing the
		 * end of the ring: 256 bytes where 192 remain. */
		struct wire_batch cross = {.len = 256, .version = WIRE_VERSION, .seq = 3};
		memcpy(r.data + head, &cross, sizeof(cross));
		atomic_store(&r.hdr.ring_head, head + 256);
		write_ring("bad_record_crossing_end", &r);
	}

	/* A few hostile rings, so the error paths are reached from the start:
	 * a record shorter than a batch header, a pad that stops short of the
	 * end, a record past head. */
	{
		struct wire_batch h = {.len = 8, .version = WIRE_VERSION};
		uint64_t head = 16;
		write_file("bad_short_record", &head, &h, sizeof(h));
		h = (struct wire_batch){.len = 64, .version = WIRE_PAD};
		head = 128;
		write_file("bad_short_pad", &head, &h, sizeof(h));
		h = (struct wire_batch){.len = 64, .version = WIRE_VERSION, .nops = 0, .seq = 1};
		head = 32;
		write_file("bad_past_head", &head, &h, sizeof(h));
	}
	return 0;
}
