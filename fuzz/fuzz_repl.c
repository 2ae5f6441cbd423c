/* libFuzzer target for the replication stream's payloads (repl/msg.c):
 * anything that can publish to a stream's subjects writes them, and a root
 * decodes them before it trusts a byte.
 *
 * Each input is used twice:
 *   - whole, as a message off the stream: repl_hdr_check, then the body as
 *     the root reads it for the header's kind (a TICK's wire records walked
 *     with repl_tick_next, a SNAP_CHUNK's records decoded with
 *     repl_chunk_decode and the header's count);
 *   - as a bare body behind a header that passes: bytes [0, 4) the count
 *     (little-endian), the rest walked as a TICK body and decoded as a
 *     SNAP_CHUNK body, so the body decoders are fuzzed without the fuzzer
 *     first having to find the magic and this build's layout version.
 * Every buffer is an exactly sized heap copy, so ASan sees a read past it.
 *
 * Every invariant the root relies on aborts when broken, so libFuzzer
 * reports it like a crash: results other than the documented ones, a
 * header accepted that the root would refuse, a record or an operation's
 * bytes outside the body, framing that does not add up to the body, and a
 * decoded chunk that does not re-encode and decode to the same operations.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl.h"

/* The root's own cap is WIRE_MAX_OPS; a smaller one reaches -E2BIG with
 * inputs libFuzzer makes (a count is 4 bytes, a record 24 at least). */
#define MAX_OPS 4096u

#define CHECK(cond)                                                                                          \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);         \
			abort();                                                                             \
		}                                                                                            \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Allocated once: the arrays are large next to most inputs. */
static struct shm_op *g_ops, *g_ops2;

static void setup(void)
{
	if (g_ops)
		return;
	g_ops = calloc(MAX_OPS, sizeof(*g_ops));
	g_ops2 = calloc(MAX_OPS, sizeof(*g_ops2));
	CHECK(g_ops && g_ops2);
}

static size_t round8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static uint8_t *copy(const uint8_t *p, size_t n)
{
	uint8_t *c = malloc(n ? n : 1);
	CHECK(c);
	if (n)
		memcpy(c, p, n);
	return c;
}

static bool inside(const void *p, size_t n, const uint8_t *buf, size_t len)
{
	const uint8_t *b = p;
	return b >= buf && b <= buf + len && n <= (size_t)(buf + len - b);
}

/* A TICK body: records follow each other from 0 to the end, each behind
 * its 8-byte length word, each a whole number of 8-byte words, none empty. */
static void walk_tick(const uint8_t *body, size_t len)
{
	size_t pos = 0;
	/* A record takes 16 bytes at least: more steps than this is a loop. */
	const size_t bound = len / 16 + 1;
	for (size_t i = 0;; i++) {
		CHECK(i <= bound);
		size_t before = pos, rec_len = SIZE_MAX;
		const uint8_t *rec = NULL;
		int rc = repl_tick_next(body, len, &pos, &rec, &rec_len);
		CHECK(rc == 0 || rc == 1 || rc == -EPROTO);
		if (rc != 0) {
			/* The end is only where the body ends. */
			CHECK(rc == -EPROTO || pos == len);
			return;
		}
		CHECK(rec_len > 0 && rec_len % 8 == 0);
		CHECK(rec == body + before + 8);
		CHECK(pos == before + 8 + rec_len && pos <= len);
		uint32_t n;
		memcpy(&n, body + before, sizeof(n));
		CHECK(n == rec_len);
		/* The root copies the record before it decodes it. */
		uint8_t *c = copy(rec, rec_len);
		free(c);
	}
}

/* Writes ops back in the chunk format, every record carrying its own
 * directory: the inverse of repl_chunk_decode. The length. */
static size_t encode_chunk(const struct shm_op *ops, size_t nops, uint8_t **out)
{
	size_t len = 0;
	for (size_t i = 0; i < nops; i++)
		len += sizeof(struct repl_snaprec) +
		       round8(ops[i].dir_len + ops[i].key_len + ops[i].value_len);
	uint8_t *b = calloc(1, len ? len : 1);
	CHECK(b);
	size_t at = 0;
	for (size_t i = 0; i < nops; i++) {
		const struct shm_op *op = &ops[i];
		struct repl_snaprec r = {
			.type = op->kind == SHM_OP_MKDIR ? 1 : 2,
			.dir_len = (uint16_t)op->dir_len,
			.key_len = (uint32_t)op->key_len,
			.value_len = (uint32_t)op->value_len,
			.tick = op->expected_tick,
		};
		memcpy(b + at, &r, sizeof(r));
		uint8_t *p = b + at + sizeof(r);
		memcpy(p, op->dir, op->dir_len);
		if (op->key_len)
			memcpy(p + op->dir_len, op->key, op->key_len);
		if (op->value_len)
			memcpy(p + op->dir_len + op->key_len, op->value, op->value_len);
		at += sizeof(r) + round8(op->dir_len + op->key_len + op->value_len);
	}
	CHECK(at == len);
	*out = b;
	return len;
}

static void same_op(const struct shm_op *a, const struct shm_op *b)
{
	CHECK(a->kind == b->kind && a->expected_tick == b->expected_tick);
	CHECK(a->dir_len == b->dir_len && memcmp(a->dir, b->dir, a->dir_len) == 0);
	CHECK(a->key_len == b->key_len && (!a->key_len || memcmp(a->key, b->key, a->key_len) == 0));
	CHECK(a->value_len == b->value_len &&
	      (!a->value_len || memcmp(a->value, b->value, a->value_len) == 0));
}

/* A SNAP_CHUNK body of `count` records. */
static void decode_chunk(const uint8_t *body, size_t len, uint32_t count)
{
	size_t nops = SIZE_MAX;
	int rc = repl_chunk_decode(body, len, count, g_ops, MAX_OPS, &nops);
	CHECK(rc == 0 || rc == -EPROTO || rc == -E2BIG);
	CHECK((rc == -E2BIG) == (count > MAX_OPS));
	if (rc < 0)
		return;
	CHECK(nops == count);

	/* The records tile the body: each header, then its payload (its own
	 * directory if it carries one, the key, the value), padded to 8. */
	size_t at = 0;
	for (size_t i = 0; i < nops; i++) {
		const struct shm_op *op = &g_ops[i];
		CHECK(op->kind == SHM_OP_MKDIR || op->kind == SHM_OP_LOAD);
		CHECK(op->dir_len > 0 && op->dir_len <= UINT16_MAX);
		CHECK(inside(op->dir, op->dir_len, body, len));
		CHECK(inside(op->key, op->key_len, body, len));
		CHECK(inside(op->value, op->value_len, body, len));
		CHECK((const uint8_t *)op->value == (const uint8_t *)op->key + op->key_len);
		CHECK(len - at >= sizeof(struct repl_snaprec));
		struct repl_snaprec r;
		memcpy(&r, body + at, sizeof(r));
		const uint8_t *p = body + at + sizeof(r);
		/* A directory earlier in the body ends before this record's
		 * header; one of its own ends where the key starts. */
		bool own = (const uint8_t *)op->dir + op->dir_len == (const uint8_t *)op->key;
		CHECK(own ? (const uint8_t *)op->dir == p && r.dir_len == op->dir_len
			  : (const uint8_t *)op->key == p && r.dir_len == 0 && op->kind == SHM_OP_LOAD &&
				      (const uint8_t *)op->dir + op->dir_len <= body + at);
		CHECK(r.type == (op->kind == SHM_OP_MKDIR ? 1 : 2));
		CHECK(r.key_len == op->key_len && r.value_len == op->value_len &&
		      r.tick == op->expected_tick);
		at += sizeof(r) + round8((own ? op->dir_len : 0) + op->key_len + op->value_len);
		CHECK(at <= len);
	}
	CHECK(at == len);

	/* Nothing is lost in decoding: the operations, written back with a
	 * directory in every record, decode to the same operations. */
	uint8_t *b = NULL;
	size_t blen = encode_chunk(g_ops, nops, &b);
	CHECK(blen >= len);
	size_t nops2 = 0;
	CHECK(repl_chunk_decode(b, blen, count, g_ops2, MAX_OPS, &nops2) == 0);
	CHECK(nops2 == nops);
	for (size_t i = 0; i < nops; i++)
		same_op(&g_ops[i], &g_ops2[i]);
	free(b);
}

/* A message off the stream, as the root reads it. */
static void message(const uint8_t *d, size_t len)
{
	struct repl_hdr h;
	char msg[256];
	msg[0] = 0;
	int rc = repl_hdr_check(d, len, &h, msg, sizeof(msg));
	CHECK(rc == 0 || rc == -EPROTO || rc == -EPROTONOSUPPORT);
	if (rc < 0) {
		/* The root passes the reason on as it is. */
		CHECK(msg[0] && memchr(msg, 0, sizeof(msg)));
		return;
	}
	CHECK(len >= sizeof(h) && memcmp(d, REPL_MAGIC, 8) == 0);
	CHECK(memcmp(&h, d, sizeof(h)) == 0);
	CHECK(h.format == REPL_FORMAT && h.layout == SHM_LAYOUT_VERSION);
	CHECK(h.kind >= REPL_TICK && h.kind <= REPL_SNAP_IDX);
	const uint8_t *body = d + sizeof(h);
	size_t blen = len - sizeof(h);
	if (h.kind == REPL_TICK)
		walk_tick(body, blen);
	else if (h.kind == REPL_SNAP_CHUNK)
		decode_chunk(body, blen, h.count);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup();
	uint8_t *whole = copy(data, size);
	message(whole, size);
	free(whole);

	/* A header filled by this build passes its own check. */
	struct repl_hdr h, h2;
	char msg[256];
	uint32_t count = 0;
	if (size >= 4)
		memcpy(&count, data, 4);
	repl_hdr_fill(&h, REPL_SNAP_CHUNK, count, size, 0, 0, 0);
	CHECK(repl_hdr_check(&h, sizeof(h), &h2, msg, sizeof(msg)) == 0);
	CHECK(memcmp(&h, &h2, sizeof(h)) == 0);
	if (size < 4)
		return 0;

	uint8_t *body = copy(data + 4, size - 4);
	walk_tick(body, size - 4);
	decode_chunk(body, size - 4, count);
	free(body);
	return 0;
}
