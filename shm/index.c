/* The root context: creating and destroying it, its statistics, and the
 * area reserved for the layer above. The writer's work lives in commit.c
 * (building ticks), table.c (key tables), reclaim.c (freeing what readers
 * have passed) and log.c (the change log); shm/internal.h gives the order
 * in which the shm files depend on each other.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "writer.h"

int shm_root_ext(struct shm_root *r, size_t size, void **area)
{
	if (r->hdr->ext_off)
		return -EEXIST;
	uint64_t off;
	/* Past the largest slab class the arena hands out whole pages, so the
	 * area starts on a page and shares no line with another object. */
	uint64_t want = size > SHM_ARENA_MAX_SMALL ? size : SHM_ARENA_MAX_SMALL + 1;
	int rc = shm_arena_alloc(r->arena, want, true, &off);
	if (rc < 0)
		return rc;
	memset(shm_at(r, off), 0, size);
	r->hdr->ext_size = size;
	atomic_thread_fence(memory_order_release);
	r->hdr->ext_off = off;
	*area = shm_at(r, off);
	return 0;
}

/* ---- the root context -------------------------------------------------- */

/* A read of one byte: what makes a backed page cheap to use from this
 * process (shm_root_warm). */
static void touch_page(const uint8_t *p)
{
	(void)*(const volatile uint8_t *)p;
}

int shm_root_create(struct shm_root **out, const struct shm_root_opts *opts, struct shm_err *err)
{
	struct shm_root_opts o = opts ? *opts : (struct shm_root_opts){0};
	struct shm_err local;
	if (!err)
		err = &local;
	err->msg[0] = 0;
	int rc;
	if (!o.capacity) {
		rc = shm_capacity_default(&o.capacity, err);
		if (rc < 0)
			return rc;
	}
	if (o.capacity < SHM_MIN_CAPACITY || o.capacity > SHM_MAX_CAPACITY) {
		snprintf(err->msg, sizeof(err->msg), "capacity %zu bytes is outside [%zu, %zu]", o.capacity,
			 (size_t)SHM_MIN_CAPACITY, (size_t)SHM_MAX_CAPACITY);
		return -EINVAL;
	}
	o.capacity &= ~(size_t)(SHM_ARENA_PAGE - 1);
	if (!o.log_bytes) {
		o.log_bytes = o.capacity / 16;
		if (o.log_bytes > ((size_t)64 << 20))
			o.log_bytes = (size_t)64 << 20;
	}
	if (o.log_bytes < ((size_t)64 << 10))
		o.log_bytes = (size_t)64 << 10;
	o.log_bytes = (o.log_bytes + SHM_ARENA_PAGE - 1) / SHM_ARENA_PAGE * SHM_ARENA_PAGE;
	if (o.log_bytes > o.capacity / 4) {
		snprintf(err->msg, sizeof(err->msg),
			 "log of %zu bytes does not fit a capacity of %zu (at most 1/4)", o.log_bytes,
			 o.capacity);
		return -EINVAL;
	}
	if (o.prefault_bytes > o.capacity) {
		snprintf(err->msg, sizeof(err->msg),
			 "prefault of %zu bytes is more than the capacity of %zu bytes", o.prefault_bytes,
			 o.capacity);
		return -EINVAL;
	}
	if (!o.headroom) {
		o.headroom = o.capacity / 64;
		if (o.headroom < ((size_t)256 << 10))
			o.headroom = (size_t)256 << 10;
	}

	struct shm_root *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	rc = shm_seg_create_numa(&r->seg, o.capacity, SHM_HDR_SIZE + o.log_bytes + ((size_t)1 << 20),
				 o.numa_policy, o.numa_node, err);
	if (rc < 0) {
		free(r);
		return rc;
	}
	r->hdr = r->seg.hdr;
	r->base = r->seg.base;
	r->seed = r->hdr->hash_seed;
	r->poison = o.poison;
	rc = shm_arena_create(&r->arena, &r->seg, SHM_HDR_SIZE, o.headroom, err);
	if (rc < 0)
		goto fail;
	shm_arena_set_poison(r->arena, o.poison);
	uint64_t log_off, dirs_off;
	rc = shm_arena_alloc(r->arena, o.log_bytes, true, &log_off);
	if (rc < 0) {
		snprintf(err->msg, sizeof(err->msg), "allocating the change log (%zu bytes) failed",
			 o.log_bytes);
		goto fail;
	}
	rc = shm_arena_alloc(r->arena, sizeof(struct shm_dir_array) + sizeof(uint64_t), true, &dirs_off);
	if (rc < 0)
		goto fail;
	struct shm_dir_array *a = shm_at(r, dirs_off);
	a->o = (struct shm_obj){0, SHM_OBJ_DIRS, 0};
	a->count = 0;
	r->bk_cap = 64;
	r->bk = calloc(r->bk_cap, sizeof(*r->bk));
	/* Tick 1 (the empty state) ends at log position 0. */
	r->tick_end = calloc(SHM_TICK_ENDS, sizeof(*r->tick_end));
	if (!r->bk || !r->tick_end) {
		rc = -ENOMEM;
		goto fail;
	}
	r->tick = 1;
	r->bk_base = 1;
	struct shm_hdr *h = r->hdr;
	h->log_off = log_off;
	h->log_size = o.log_bytes;
	atomic_store_explicit(&h->log_tail, 0, memory_order_relaxed);
	atomic_store_explicit(&h->dirs, dirs_off, memory_order_relaxed);
	atomic_store_explicit(&h->pub_tick, 1, memory_order_relaxed);
	atomic_store_explicit(&h->pub_log_end, 0, memory_order_relaxed);
	atomic_store_explicit(&h->tick, 1, memory_order_release);
	/* The whole log now, not while it serves: commits of every size write
	 * it, and a touch on their way (shm_root_warm) would delay small ones
	 * that wait for an answer (~75 ms for 64 MiB where a first touch costs
	 * 4.6 us a page; well under 1 ms where it is cheap). */
	for (uint64_t off = 0; off < o.log_bytes; off += SHM_ARENA_PAGE)
		touch_page(r->base + log_off + off);
	/* Prefault: the pages a load will fill, backed and touched before
	 * anyone attaches, for where a first touch is dear (~4.6 us a page
	 * under shadow page tables: a third of a 1M-key load's time on this
	 * project's VMs, docs/BENCHMARKS.md, "Issue 13, eighth round"). The
	 * grow-ahead and the warming then find them done. */
	if (o.prefault_bytes > r->seg.size) {
		size_t want = (o.prefault_bytes + SHM_ARENA_PAGE - 1) / SHM_ARENA_PAGE * SHM_ARENA_PAGE;
		if (want > o.capacity)
			want = o.capacity;
		rc = shm_seg_grow(&r->seg, want, err);
		if (rc < 0) {
			char why[sizeof(err->msg)];
			memcpy(why, err->msg, sizeof(why));
			snprintf(err->msg, sizeof(err->msg), "prefault of %zu bytes: %.200s",
				 o.prefault_bytes, why);
			goto fail;
		}
	}
	if (o.prefault_bytes)
		shm_root_warm(r, UINT_MAX);
	*out = r;
	return 0;
fail:
	shm_root_destroy(r);
	return rc;
}

void shm_root_destroy(struct shm_root *r)
{
	if (!r)
		return;
	shm_arena_destroy(r->arena);
	shm_seg_close(&r->seg);
	free(r->bk);
	free(r->rq);
	free(r->tick_end);
	free(r->prefix);
	free(r->undo);
	free(r->undone_allocs);
	free(r);
}

struct shm_seg *shm_root_seg(struct shm_root *r)
{
	return &r->seg;
}

struct shm_arena *shm_root_arena(struct shm_root *r)
{
	return r->arena;
}

uint64_t shm_root_tick(const struct shm_root *r)
{
	return r->tick;
}

/* Ahead of the allocator by an eighth of the segment (the step the
 * allocator itself grows by), at least 8 MiB, in steps of 128 KiB: the
 * loop comes back to its rings between steps, so a batch that arrives
 * while the segment grows waits for one step at most. Populating costs
 * ~1 us a page on this project's VMs: a 4 MiB step blocked the root for
 * ~1 ms, about 40 times in a 1M-key load (docs/BENCHMARKS.md, sixth
 * round). */
#define GROW_AHEAD_MIN ((uint64_t)8 << 20)
#define GROW_AHEAD_STEP ((uint64_t)128 << 10)

int shm_root_grow_ahead(struct shm_root *r)
{
	uint64_t margin = r->seg.size / 8 > GROW_AHEAD_MIN ? r->seg.size / 8 : GROW_AHEAD_MIN;
	return shm_arena_grow_ahead(r->arena, margin, GROW_AHEAD_STEP);
}

unsigned shm_root_warm(struct shm_root *r, unsigned max_pages)
{
	const uint64_t page = SHM_ARENA_PAGE;
	unsigned done = 0;
	uint64_t top = shm_arena_top(r->arena);
	if (r->warm_arena < top)
		r->warm_arena = top;
	for (; done < max_pages && r->warm_arena < r->seg.size; done++, r->warm_arena += page)
		touch_page(r->base + r->warm_arena);
	return done;
}

void shm_root_stats(const struct shm_root *r, struct shm_stats *st)
{
	struct shm_arena_stats as;
	shm_arena_stats(r->arena, &as);
	memset(st, 0, sizeof(*st));
	st->tick = r->tick;
	st->capacity = r->seg.capacity;
	st->segment_size = r->seg.size;
	st->bytes_in_use = as.bytes_in_use;
	st->bytes_free = as.bytes_free;
	st->high_water = as.high_water;
	st->pages_top = as.pages_top;
	st->large_objects = as.large_objects;
	st->directories = r->c.dirs;
	st->keys = r->c.keys;
	st->tombstones = r->c.tombstones;
	st->retired_objects = r->c.retired_objects;
	st->retired_bytes = r->c.retired_bytes;
	st->reclaimed_objects = r->reclaimed_objects;
	st->reclaimed_bytes = r->reclaimed_bytes;
	st->log_size = r->hdr->log_size;
	st->log_bytes_used = r->log_head - atomic_load_explicit(&r->hdr->log_tail, memory_order_relaxed);
	st->log_overruns = r->log_overruns;
	st->probes = r->probes;
	st->probe_max = r->probe_max;
	st->table_rebuilds = r->rebuilds;
	st->table_reseeds = r->reseeds;
	memcpy(st->classes, as.classes, sizeof(st->classes));
}
