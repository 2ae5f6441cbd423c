/* The payloads of the replication stream (repl.h): checked as hostile
 * input, since anything that can publish to the stream's subjects wrote
 * them. Needs no NATS: the fuzz target and the tests use it alone. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "repl.h"

static size_t round8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

void repl_hdr_fill(struct repl_hdr *h, uint32_t kind, uint32_t count, uint64_t tick, uint64_t a, uint64_t b,
		   uint64_t c)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, REPL_MAGIC, sizeof(h->magic));
	h->format = REPL_FORMAT;
	h->layout = SHM_LAYOUT_VERSION;
	h->kind = kind;
	h->count = count;
	h->tick = tick;
	h->a = a;
	h->b = b;
	h->c = c;
}

int repl_hdr_check(const void *data, size_t len, struct repl_hdr *h, char *msg, size_t msglen)
{
	if (len < sizeof(*h) || memcmp(data, REPL_MAGIC, 8) != 0) {
		snprintf(msg, msglen, "a message of %zu bytes that is not shmsync's (no \"%s\" header)", len,
			 REPL_MAGIC);
		return -EPROTO;
	}
	memcpy(h, data, sizeof(*h));
	if (h->format != REPL_FORMAT || h->layout != SHM_LAYOUT_VERSION) {
		snprintf(msg, msglen,
			 "a message of stream format %u, segment layout %u; this shmsync reads format %u, "
			 "layout %u",
			 h->format, h->layout, REPL_FORMAT, SHM_LAYOUT_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (h->kind < REPL_TICK || h->kind > REPL_SNAP_IDX) {
		snprintf(msg, msglen, "a message of unknown kind %u", h->kind);
		return -EPROTO;
	}
	return 0;
}

int repl_tick_next(const uint8_t *body, size_t len, size_t *pos, const uint8_t **rec, size_t *rec_len)
{
	size_t at = *pos;
	if (at == len)
		return 1;
	uint32_t n;
	if (len - at < 8)
		return -EPROTO;
	memcpy(&n, body + at, sizeof(n));
	at += 8;
	if (n == 0 || n % 8 || n > len - at)
		return -EPROTO;
	*rec = body + at;
	*rec_len = n;
	*pos = at + n;
	return 0;
}

int repl_chunk_decode(const uint8_t *body, size_t len, uint32_t count, struct shm_op *ops, size_t max_ops,
		      size_t *nops)
{
	if (count > max_ops)
		return -E2BIG;
	size_t at = 0;
	const char *dir = NULL;
	size_t dir_len = 0;
	for (uint32_t i = 0; i < count; i++) {
		struct repl_snaprec r;
		if (len - at < sizeof(r))
			return -EPROTO;
		memcpy(&r, body + at, sizeof(r));
		at += sizeof(r);
		uint64_t n = (uint64_t)r.dir_len + r.key_len + r.value_len;
		if (round8(n) > len - at || (r.type != 1 && r.type != 2))
			return -EPROTO;
		const uint8_t *p = body + at;
		/* A key with no directory name is in the previous record's. */
		if (r.dir_len) {
			dir = (const char *)p;
			dir_len = r.dir_len;
		} else if (!dir || r.type == 1) {
			return -EPROTO;
		}
		ops[i] = (struct shm_op){
			.kind = r.type == 1 ? SHM_OP_MKDIR : SHM_OP_LOAD,
			.dir = dir,
			.dir_len = dir_len,
			.key = p + r.dir_len,
			.key_len = r.key_len,
			.value = p + r.dir_len + r.key_len,
			.value_len = r.value_len,
			.expected_tick = r.tick,
		};
		at += round8((size_t)n);
	}
	if (at != len)
		return -EPROTO;
	*nops = count;
	return 0;
}
