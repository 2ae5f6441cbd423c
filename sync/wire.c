/* Batch encoding (worker), decoding (root), and the export ring. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

/* Operation bodies are padded to 8 bytes, so each header is aligned. */
static inline uint64_t round8(uint64_t n)
{
	return (n + 7) & ~(uint64_t)7;
}

void wire_init(struct wire_buf *b)
{
	memset(b, 0, sizeof(*b));
}

void wire_free(struct wire_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

static int reserve(struct wire_buf *b, size_t more)
{
	if (b->len + more <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + more)
		cap *= 2;
	uint8_t *d = realloc(b->data, cap);
	if (!d)
		return -ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

static bool has_key(int kind)
{
	return kind != SHM_OP_MKDIR && kind != SHM_OP_RMDIR;
}

static bool has_value(int kind)
{
	return kind == SHM_OP_PUT || kind == SHM_OP_PUT_IF_ABSENT || kind == SHM_OP_PUT_IF_TICK;
}

int wire_append(struct wire_buf *b, const struct shm_op *op, size_t limit)
{
	/* Only the fields the kind uses count, each within its limit, so the
	 * sum cannot overflow. */
	uint64_t klen = has_key(op->kind) ? op->key_len : 0;
	uint64_t vlen = has_value(op->kind) ? op->value_len : 0;
	if (op->dir_len > UINT16_MAX || klen > SHMSYNC_MAX_KEY || vlen > SHMSYNC_MAX_VALUE)
		return -EINVAL;
	size_t n = sizeof(struct wire_op) + round8(op->dir_len + klen + vlen);
	size_t base = b->len ? b->len : sizeof(struct wire_batch);
	if (b->nops >= WIRE_MAX_OPS || n > limit || base + n > limit)
		return -E2BIG;
	int rc = reserve(b, base - b->len + n);
	if (rc < 0)
		return rc;
	if (b->len == 0) {
		memset(b->data, 0, sizeof(struct wire_batch));
		b->len = sizeof(struct wire_batch);
	}
	struct wire_op w = {
		.kind = (uint8_t)op->kind,
		.dir_len = (uint16_t)op->dir_len,
		.key_len = (uint32_t)klen,
		.value_len = (uint32_t)vlen,
		.arg = op->kind == SHM_OP_ADD ? op->delta : (int64_t)op->expected_tick,
	};
	uint8_t *p = b->data + b->len;
	memset(p, 0, n);
	memcpy(p, &w, sizeof(w));
	p += sizeof(w);
	memcpy(p, op->dir, op->dir_len);
	p += op->dir_len;
	if (klen)
		memcpy(p, op->key, klen);
	p += klen;
	if (vlen)
		memcpy(p, op->value, vlen);
	b->len += n;
	b->nops++;
	return 0;
}

size_t wire_seal(struct wire_buf *b, uint64_t seq)
{
	if (b->len == 0 && reserve(b, sizeof(struct wire_batch)) == 0) {
		memset(b->data, 0, sizeof(struct wire_batch));
		b->len = sizeof(struct wire_batch);
	}
	struct wire_batch h = {
		.len = (uint32_t)b->len,
		.version = WIRE_VERSION,
		.nops = (uint16_t)b->nops,
		.seq = seq,
	};
	memcpy(b->data, &h, sizeof(h));
	return b->len;
}

int wire_decode(const uint8_t *rec, size_t len, struct shm_op *ops, size_t max_ops, size_t *nops,
		uint64_t *seq)
{
	struct wire_batch h;
	if (len < sizeof(h) || len % 8)
		return -EPROTO;
	memcpy(&h, rec, sizeof(h));
	if (h.version != WIRE_VERSION || h.len != len || h.nops > max_ops)
		return -EPROTO;
	*seq = h.seq;
	size_t at = sizeof(h);
	for (size_t i = 0; i < h.nops; i++) {
		struct wire_op w;
		if (len - at < sizeof(w))
			return -EPROTO;
		memcpy(&w, rec + at, sizeof(w));
		at += sizeof(w);
		uint64_t body = (uint64_t)w.dir_len + w.key_len + w.value_len;
		if (round8(body) > len - at)
			return -EPROTO;
		const uint8_t *p = rec + at;
		ops[i] = (struct shm_op){
			.kind = w.kind,
			.dir = (const char *)p,
			.dir_len = w.dir_len,
			.key = p + w.dir_len,
			.key_len = w.key_len,
			.value = p + w.dir_len + w.key_len,
			.value_len = w.value_len,
			.delta = w.arg,
			.expected_tick = (uint64_t)w.arg,
		};
		at += round8(body);
	}
	if (at != len)
		return -EPROTO;
	*nops = h.nops;
	return 0;
}

int ring_put(struct port_hdr *p, uint8_t *ring, const void *rec, size_t len)
{
	uint64_t tail = 0;
	return ring_put_cached(p, ring, rec, len, &tail);
}

int ring_put_cached(struct port_hdr *p, uint8_t *ring, const void *rec, size_t len, uint64_t *tail_seen)
{
	uint64_t size = p->ring_size;
	if (len > size / 2 || len % 8 || len < sizeof(struct wire_batch))
		return -E2BIG;
	uint64_t head = atomic_load_explicit(&p->ring_head, memory_order_relaxed);
	uint64_t at = head % size;
	uint64_t pad = at + len > size ? size - at : 0;
	/* An old tail only understates the room; the root's line is read
	 * again only when that is not enough. */
	if (head - *tail_seen + pad + len > size) {
		*tail_seen = atomic_load_explicit(&p->ring_tail, memory_order_acquire);
		if (head - *tail_seen + pad + len > size)
			return -EAGAIN;
	}
	if (pad) {
		struct wire_batch w = {.len = (uint32_t)pad, .version = WIRE_PAD};
		memcpy(ring + at, &w, 8);
		at = 0;
	}
	memcpy(ring + at, rec, len);
	/* The record's bytes before the head that publishes them. */
	atomic_store_explicit(&p->ring_head, head + pad + len, memory_order_release);
	share_lines(ring + at, len);
	share_lines(&p->ring_head, sizeof(p->ring_head));
	return 0;
}

int ring_get(const struct port_hdr *p, const uint8_t *ring, uint64_t size, uint64_t *tail, uint8_t *buf,
	     size_t cap, size_t *len)
{
	for (;;) {
		uint64_t head = atomic_load_explicit(&p->ring_head, memory_order_acquire);
		uint64_t t = *tail;
		if (head == t)
			return -EAGAIN;
		/* The head is the worker's word: it must be a record boundary
		 * (a multiple of 8) within one ring of the tail. */
		if (head < t || head - t > size || (head | t) % 8)
			return -EPROTO;
		uint64_t at = t % size;
		struct wire_batch w;
		/* Everything is a multiple of 8, so 8 bytes always remain. */
		memcpy(&w, ring + at, 8);
		if (w.len < 8 || w.len % 8 || w.len > head - t || w.len > size - at)
			return -EPROTO;
		if (w.version == WIRE_PAD) {
			if (at + w.len != size)
				return -EPROTO;
			*tail = t + w.len;
			continue;
		}
		if (w.len > cap || w.len < sizeof(struct wire_batch))
			return -EPROTO;
		memcpy(buf, ring + at, w.len);
		/* The copy is what gets validated: the worker may change the ring
		 * after this, and nothing reads the ring's bytes again. */
		*len = w.len;
		*tail = t + w.len;
		return 0;
	}
}
