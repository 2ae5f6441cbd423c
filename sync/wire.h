/* The wire format of a batch in a worker's export ring, and the SPSC byte
 * ring that carries it. The worker encodes; the root copies a record out of
 * the ring and only then decodes and validates it (no double fetch). */
#ifndef SHMSYNC_WIRE_H
#define SHMSYNC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port.h"
#include "shm.h"

/* A batch record in the export ring. Records never straddle the ring's end:
 * a record of version PAD fills the rest. len is a multiple of 8. */
struct wire_batch {
	uint32_t len;
	uint16_t version; /* WIRE_VERSION, or WIRE_PAD */
	uint16_t nops;
	uint64_t seq;
};

struct wire_op {
	uint8_t kind; /* enum shm_op_kind */
	uint8_t reserved0;
	uint16_t dir_len;
	uint32_t key_len;
	uint32_t value_len;
	uint32_t reserved1;
	int64_t arg; /* add: delta; put_if_tick: expected tick */
		     /* dir[dir_len], key[key_len], value[value_len], padding to 8 */
};

#define WIRE_VERSION 1u
#define WIRE_PAD 0xffffu
#define WIRE_MAX_OPS 65535u

/* A batch being built by a worker: a wire_batch header, then the ops. */
struct wire_buf {
	uint8_t *data;
	size_t len, cap;
	uint32_t nops;
};

void wire_init(struct wire_buf *b);
void wire_free(struct wire_buf *b);
/* Appends one operation; -ENOMEM, -E2BIG (more than WIRE_MAX_OPS or `limit`
 * bytes in all). The caller has checked the operation (shm_op_check). */
int wire_append(struct wire_buf *b, const struct shm_op *op, size_t limit);
/* Fills in the header; returns the record's length. */
size_t wire_seal(struct wire_buf *b, uint64_t seq);

/* Decodes a record the root has copied into private memory. ops[] point
 * into rec. -EPROTO when the record is malformed (lengths that do not add
 * up, unknown version); operations are not checked beyond their framing:
 * shm_apply_batch does that. */
int wire_decode(const uint8_t *rec, size_t len, struct shm_op *ops, size_t max_ops, size_t *nops,
		uint64_t *seq);

/* Asks the CPU to move the cache lines of [p, p + len) out of this core's
 * private caches into the shared one (x86 CLDEMOTE; elsewhere, and on CPUs
 * without it, nothing: the instruction is a hint that executes as a no-op).
 * The other process then reads them from the shared cache instead of
 * snooping them out of this core, which is most of a cross-core round trip.
 * At most SHARE_LINES_MAX bytes: a big batch streams anyway. */
#define SHARE_LINES_MAX 4096u
static inline void share_lines(const void *p, size_t len)
{
#if defined(__x86_64__) || defined(__i386__)
	if (len > SHARE_LINES_MAX)
		len = SHARE_LINES_MAX;
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)63, end = (uintptr_t)p + len;
	for (; a < end; a += 64)
		__asm__ volatile("cldemote (%0)" ::"r"(a) : "memory");
#else
	(void)p;
	(void)len;
#endif
}

/* Producer: copies a record into the ring and publishes it (release).
 * -EAGAIN when there is no room now, -E2BIG if it could never fit (more than
 * half the ring). */
int ring_put(struct port_hdr *p, uint8_t *ring, const void *rec, size_t len);
/* ring_put for the one writer of a ring, which keeps the tail it last read
 * in *tail_seen (start with 0): the root's tail is read only when that old
 * value leaves too little room, so an export does not wait for the line the
 * root writes at every drain. */
int ring_put_cached(struct port_hdr *p, uint8_t *ring, const void *rec, size_t len, uint64_t *tail_seen);

/* Consumer: copies the next record into buf and advances *tail (the
 * consumer's own copy of the position). 0 and *len, -EAGAIN when empty,
 * -EPROTO when the ring's framing or head is corrupt (the caller then drops
 * everything up to head). */
int ring_get(const struct port_hdr *p, const uint8_t *ring, uint64_t ring_size, uint64_t *tail, uint8_t *buf,
	     size_t cap, size_t *len);

#endif
