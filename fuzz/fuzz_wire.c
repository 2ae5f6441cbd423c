/* libFuzzer target for everything the root parses from a worker: the export
 * ring's framing (ring_get), each record's encoding (wire_decode), and the
 * syntax of each decoded operation (shm_op_check).
 *
 * Input layout (fuzz/make_corpus.c writes seeds in it):
 *   bytes [0, 8)  the ring's head, little-endian: any value, as a hostile
 *                 worker may write it;
 *   bytes [8, ..) the ring's contents from offset 0 (the rest of the ring is
 *                 zero). The root's tail starts at 0, and again at 2^40
 *                 (with the head 2^40 further too), and once more at an
 *                 arbitrary offset taken from the head word's top 16 bits.
 * The whole input is also decoded as one record, as is everything after the
 * head, so the decoder is fuzzed without the ring's framing in the way.
 *
 * Every invariant the root relies on aborts when broken, so libFuzzer reports
 * it like a crash: results other than 0 / -EAGAIN / -EPROTO, a tail that
 * passes head, a record that is not a copy of ring bytes before head, decoded
 * pointers outside the record, operation sizes that do not add up to the
 * record, and an encode / decode round trip that changes a valid operation.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port.h"
#include "shm.h"
#include "wire.h"

#define RING_SIZE 4096u
/* The root never accepts a batch over half the ring (ring_put's limit). */
#define RECORD_CAP (RING_SIZE / 2)

#define CHECK(cond)                                                                                          \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);         \
			abort();                                                                             \
		}                                                                                            \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Allocated once: a fresh 4.7 MB array per input would dominate the run. */
static struct shm_op *g_ops, *g_ops2;
static uint8_t *g_ring;
static uint8_t *g_buf;

static void setup(void)
{
	if (g_ops)
		return;
	g_ops = calloc(WIRE_MAX_OPS, sizeof(*g_ops));
	g_ops2 = calloc(WIRE_MAX_OPS, sizeof(*g_ops2));
	/* Exactly sized heap blocks: ASan's redzones catch a read past them. */
	g_ring = malloc(RING_SIZE);
	g_buf = malloc(RECORD_CAP);
	CHECK(g_ops && g_ops2 && g_ring && g_buf);
}

static bool inside(const void *p, size_t n, const uint8_t *rec, size_t len)
{
	const uint8_t *b = p;
	return b >= rec && b <= rec + len && n <= (size_t)(rec + len - b);
}

static bool has_key(int kind)
{
	return kind != SHM_OP_MKDIR && kind != SHM_OP_RMDIR;
}

static bool has_value(int kind)
{
	return kind == SHM_OP_PUT || kind == SHM_OP_PUT_IF_ABSENT || kind == SHM_OP_PUT_IF_TICK;
}

/* A valid operation survives encoding and decoding: what the root applies
 * is what the worker meant. Only the fields its kind uses are compared. */
static void check_same_op(const struct shm_op *a, const struct shm_op *b)
{
	CHECK(a->kind == b->kind);
	CHECK(a->dir_len == b->dir_len && memcmp(a->dir, b->dir, a->dir_len) == 0);
	if (has_key(a->kind))
		CHECK(a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0);
	if (has_value(a->kind))
		CHECK(a->value_len == b->value_len &&
		      (a->value_len == 0 || memcmp(a->value, b->value, a->value_len) == 0));
	if (a->kind == SHM_OP_ADD)
		CHECK(a->delta == b->delta);
	if (a->kind == SHM_OP_PUT_IF_TICK)
		CHECK(a->expected_tick == b->expected_tick);
}

/* Decodes one record and checks everything the root relies on afterwards. */
static void decode_one(const uint8_t *rec, size_t len)
{
	size_t nops = SIZE_MAX;
	uint64_t seq = 0;
	int rc = wire_decode(rec, len, g_ops, WIRE_MAX_OPS, &nops, &seq);
	CHECK(rc == 0 || rc == -EPROTO);
	if (rc < 0)
		return;

	struct wire_batch h;
	CHECK(len >= sizeof(h) && len % 8 == 0);
	memcpy(&h, rec, sizeof(h));
	CHECK(h.len == len && h.version == WIRE_VERSION && h.nops == nops && h.seq == seq);
	CHECK(nops <= WIRE_MAX_OPS);

	size_t total = sizeof(struct wire_batch);
	bool all_valid = true;
	for (size_t i = 0; i < nops; i++) {
		const struct shm_op *op = &g_ops[i];
		CHECK(inside(op->dir, op->dir_len, rec, len));
		CHECK(inside(op->key, op->key_len, rec, len));
		CHECK(inside(op->value, op->value_len, rec, len));
		/* The parts follow each other: dir, key, value. */
		CHECK((const uint8_t *)op->key == (const uint8_t *)op->dir + op->dir_len);
		CHECK((const uint8_t *)op->value == (const uint8_t *)op->key + op->key_len);
		total += sizeof(struct wire_op) +
			 ((op->dir_len + op->key_len + op->value_len + 7) & ~(size_t)7);
		int crc = shm_op_check(op);
		CHECK(crc == 0 || crc == -EINVAL || crc == -ENAMETOOLONG || crc == -EMSGSIZE);
		if (crc != 0)
			all_valid = false;
	}
	CHECK(total == len);
	if (!all_valid)
		return;

	/* Re-encode the valid batch: it cannot grow (the encoder drops fields a
	 * kind does not use), and decodes to the same operations. */
	struct wire_buf b;
	wire_init(&b);
	for (size_t i = 0; i < nops; i++)
		CHECK(wire_append(&b, &g_ops[i], SIZE_MAX) == 0);
	size_t len2 = wire_seal(&b, seq);
	CHECK(len2 == b.len && len2 <= len);
	size_t nops2 = 0;
	uint64_t seq2 = 0;
	CHECK(wire_decode(b.data, len2, g_ops2, WIRE_MAX_OPS, &nops2, &seq2) == 0);
	CHECK(nops2 == nops && seq2 == seq);
	for (size_t i = 0; i < nops; i++)
		check_same_op(&g_ops[i], &g_ops2[i]);
	wire_free(&b);
}

/* The root's side of the ring: drain it until it is empty or corrupt, the
 * tail starting at `base` and the head at `head`. */
static void drain_ring(uint64_t base, uint64_t head)
{
	struct port_hdr p;
	memset(&p, 0, sizeof(p));
	p.ring_size = RING_SIZE;
	atomic_store(&p.ring_head, head);
	atomic_store(&p.ring_tail, base);

	uint64_t tail = base;
	/* Each record is at least 16 bytes, at most a ring lies between tail
	 * and head, and a pad must reach the end: a drain that returns more
	 * records than this is looping. */
	const unsigned bound = RING_SIZE / 16 + 1;
	for (unsigned i = 0;; i++) {
		CHECK(i <= bound);
		uint64_t before = tail;
		size_t len = SIZE_MAX;
		int rc = ring_get(&p, g_ring, RING_SIZE, &tail, g_buf, RECORD_CAP, &len);
		CHECK(rc == 0 || rc == -EAGAIN || rc == -EPROTO);
		/* The tail only moves forward, and never past head. */
		CHECK(tail >= before);
		CHECK(tail == before || tail <= head);
		CHECK(tail == before || tail - before <= RING_SIZE);
		if (rc == -EAGAIN)
			CHECK(tail == head);
		if (rc != 0)
			break;
		CHECK(len >= sizeof(struct wire_batch) && len % 8 == 0 && len <= RECORD_CAP);
		CHECK(tail - before >= len);
		/* The record is a copy of ring bytes that lay wholly before head. */
		uint64_t at = (tail - len) % RING_SIZE;
		CHECK(at + len <= RING_SIZE);
		CHECK(memcmp(g_buf, g_ring + at, len) == 0);
		/* Decoded from an exactly sized copy, so ASan sees any overread. */
		uint8_t *rec = malloc(len);
		CHECK(rec);
		memcpy(rec, g_buf, len);
		decode_one(rec, len);
		free(rec);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup();
	decode_one(data, size);
	if (size < 8)
		return 0;
	uint8_t *rest = malloc(size - 8 ? size - 8 : 1);
	CHECK(rest);
	memcpy(rest, data + 8, size - 8);
	decode_one(rest, size - 8);
	free(rest);

	size_t n = size - 8 < RING_SIZE ? size - 8 : RING_SIZE;
	memcpy(g_ring, data + 8, n);
	memset(g_ring + n, 0, RING_SIZE - n);
	uint64_t head = 0;
	memcpy(&head, data, 8);
	/* From 0, as in a fresh port; from beyond 2^32, where a head the worker
	 * wrote can also lie behind the tail (positions wrap like any u64); and
	 * from any tail at all, aligned or not, the high 16 bits of the head
	 * word giving the tail's offset: the root adopts a head the worker
	 * wrote as its tail when it drops a corrupt ring, so ring_get must stay
	 * in bounds whatever its tail. */
	const uint64_t far = (uint64_t)1 << 40;
	drain_ring(0, head);
	drain_ring(far, far + head);
	uint64_t tail = 2 * far + (head >> 48);
	drain_ring(tail, tail + (head & 0xffffffffffffull));
	return 0;
}
