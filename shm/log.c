/* The change log, the writer's side: a bounded broadcast ring of
 * self-contained records (kind, tick, directory, key). Readers build the
 * coalesced diff from it (diff.c).
 *
 * records of the tick being built are appended past the published
 * end; publishing the tick publishes the end (shm_published_state). Before
 * overwriting old bytes the root stores the new tail (then a release fence),
 * so a reader that copied a range and then finds the tail still at or below
 * the range's start (after an acquire fence) knows its copy is intact.
 * Records of tick t are dropped once every cursor is >= t (shm_reclaim); when
 * the ring is full anyway the oldest records go and the readers that needed
 * them get a reset (counted as overruns).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "writer.h"

static uint8_t *ring(const struct shm_root *r)
{
	return r->base + r->hdr->log_off;
}

static struct shm_logrec rec_at(struct shm_root *r, uint64_t pos)
{
	struct shm_logrec rec = {0};
	/* A pad record may be only 8 bytes long: read what fits. */
	uint64_t L = r->hdr->log_size, at = pos % L;
	memcpy(&rec, ring(r) + at, L - at < sizeof(rec) ? L - at : sizeof(rec));
	return rec;
}

static void set_tail(struct shm_root *r, uint64_t tail)
{
	atomic_store_explicit(&r->hdr->log_tail, tail, memory_order_relaxed);
	/* The tail must be visible before any byte below it is overwritten:
	 * the seqlock's writer side. A release fence is what it needs: a reader
	 * that copied a byte written after this fence, then made its acquire
	 * fence (copy_range, diff.c), sees this tail or a later one, so it
	 * finds its range below the tail and discards the copy. It orders the
	 * stores that follow without waiting for the ones before. The seq_cst
	 * fence this was drained the store buffer at every record appended to
	 * a full ring: half of shm_log_append's samples in a profile of
	 * overwrites (docs/BENCHMARKS.md, "Issue 13, seventh round"), though
	 * throughput did not move measurably (the cold lines' cost moved to
	 * the next stores). */
	atomic_thread_fence(memory_order_release);
}

/* Drops records until the tail is at least `want`. */
static void make_room(struct shm_root *r, uint64_t want)
{
	uint64_t tail = atomic_load_explicit(&r->hdr->log_tail, memory_order_relaxed);
	if (tail >= want)
		return;
	while (tail < want) {
		struct shm_logrec rec = rec_at(r, tail);
		if (rec.kind != SHM_LOG_PAD && rec.tick > r->min_cursor_hint)
			r->log_overruns++;
		tail += rec.len;
	}
	set_tail(r, tail);
}

int shm_log_append(struct shm_root *r, int kind, const char *dir, size_t dir_len, const void *key,
		   size_t key_len, const void *value, size_t value_len)
{
	if (r->loading)
		return 0; /* shm_root_load_begin: nobody imports from before the tick */
	uint64_t L = r->hdr->log_size;
	bool inline_value =
		kind == SHM_CHANGE_PUT && value_len <= SHM_LOG_INLINE_MAX && (value || !value_len);
	uint64_t size = shm_logrec_size(dir_len, key_len, inline_value ? value_len : 0);
	uint64_t pos = r->log_head, at = pos % L;
	uint64_t pad = at + size > L ? L - at : 0;
	uint64_t end = pos + pad + size;
	if (end > L)
		make_room(r, end - L);
	if (pad) {
		struct shm_logrec p = {.len = (uint32_t)pad, .kind = SHM_LOG_PAD};
		memcpy(ring(r) + at, &p, pad < sizeof(p) ? pad : sizeof(p));
		at = 0;
	}
	uint8_t *dst = ring(r) + at;
	struct shm_logrec rec = {
		.len = (uint32_t)size,
		.kind = (uint16_t)kind,
		.dir_len = (uint16_t)dir_len,
		.tick = r->tick + 1,
		.key_len = (uint32_t)key_len,
		.value_inline = inline_value ? (uint32_t)value_len + 1 : 0,
	};
	memcpy(dst, &rec, sizeof(rec));
	memcpy(dst + sizeof(rec), dir, dir_len);
	dst[sizeof(rec) + dir_len] = 0;
	if (key_len)
		memcpy(dst + sizeof(rec) + dir_len + 1, key, key_len);
	if (inline_value && value_len)
		memcpy(dst + sizeof(rec) + dir_len + 1 + key_len, value, value_len);
	r->log_head = end;
	return 0;
}

void shm_log_reclaim(struct shm_root *r, uint64_t min_cursor, struct shm_reclaim_report *rep)
{
	uint64_t tail = atomic_load_explicit(&r->hdr->log_tail, memory_order_relaxed), start = tail;
	uint64_t end = atomic_load_explicit(&r->hdr->pub_log_end, memory_order_relaxed);
	while (tail < end) {
		struct shm_logrec rec = rec_at(r, tail);
		uint64_t len = rec.len;
		if (rec.kind == SHM_LOG_PAD) {
			/* A pad goes with the record after it (at the ring's
			 * start): a reader whose tick ended where the pad begins
			 * still needs that record, and a tail past the pad would
			 * tell it that it fell off the log (a reset). */
			if (tail + len >= end)
				break;
			rec = rec_at(r, tail + len);
			len += rec.len;
		}
		if (rec.tick > min_cursor)
			break;
		rep->log_records_freed++;
		tail += len;
	}
	if (tail != start) {
		rep->log_bytes_freed += tail - start;
		set_tail(r, tail);
	}
}

void shm_log_published(struct shm_root *r, uint64_t t)
{
	uint64_t end = r->log_head;
	r->tick_end[t % SHM_TICK_ENDS] = end;
	/* The tick's records are what every importer copies next: push them
	 * (the last SHM_PUSH_MAX bytes of a big tick, none across the ring's
	 * end: those would be two ranges for a hint). */
	uint64_t L = r->hdr->log_size;
	uint64_t from = end - r->log_pushed > SHM_PUSH_MAX ? end - SHM_PUSH_MAX : r->log_pushed;
	if (from % L <= end % L)
		shm_push_lines(ring(r) + from % L, end - from);
	r->log_pushed = end;
}

/* ---- positions --------------------------------------------------------- */

uint64_t shm_log_bytes_since(const struct shm_root *r, uint64_t tick)
{
	uint64_t tail = atomic_load_explicit(&r->hdr->log_tail, memory_order_relaxed);
	uint64_t end = atomic_load_explicit(&r->hdr->pub_log_end, memory_order_relaxed);
	if (tick >= r->tick)
		return 0;
	uint64_t from = tail;
	if (r->tick - tick < SHM_TICK_ENDS)
		from = r->tick_end[tick % SHM_TICK_ENDS];
	/* Below the tail: the cursor fell off the log and keeps none of it
	 * (it gets a reset). */
	return end > from && from >= tail ? end - from : 0;
}

uint64_t shm_log_size(const struct shm_root *r)
{
	return r->hdr->log_size;
}

size_t shm_root_max_batch_log_bytes(const struct shm_root *r)
{
	return r->hdr->log_size / 2;
}
