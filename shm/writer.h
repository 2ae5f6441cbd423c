/* The root's private state and the helpers the writer's files share
 * (commit.c, table.c, reclaim.c, log.c, index.c); readers never include it.
 * The helpers the commit path calls for every operation are static inline
 * here, so that each file can still inline them as when the writer was one
 * file. Not part of any API.
 */
#ifndef SHMSYNC_WRITER_H
#define SHMSYNC_WRITER_H

#include <errno.h>
#include <stdlib.h>

#include "internal.h"

/* Kinds of retire-list entries. */
enum shm_retire_kind {
	R_VERSION = 1, /* a superseded version: free it */
	R_UNLINK,      /* a tombstone at the head of its key: unlink the key, free later */
	R_DELINC,      /* a deleted incarnation: free its entries and table, unlink it */
	R_FREE,        /* unreachable (unlinked or replaced): free it */
};

/* Retire entries waiting for readers to pass a tick, in FIFO order. */
struct shm_bucket {
	uint64_t head, tail;
	uint64_t count, bytes;
};

struct shm_undo {
	uint8_t kind;
	void *addr;
	uint64_t old;
};

struct shm_counters {
	uint64_t dirs, keys, tombstones;
	uint64_t retired_objects, retired_bytes;
};

struct shm_root {
	struct shm_seg seg;
	struct shm_arena *arena;
	struct shm_hdr *hdr;
	uint8_t *base;
	uint64_t seed;
	uint64_t tick; /* published */
	/* Seeds for new tables, from getrandom in batches: not derivable from
	 * the seeds a worker has seen. */
	uint64_t rnd[32];
	unsigned nrnd;
	uint64_t rnd_ctr;
	/* Probe work of the root's lookups (slots + tree nodes), for stat
	 * and the hash-flooding test. */
	uint64_t probes, probe_max;
	uint64_t rebuilds, reseeds;
	bool building;
	bool loading;     /* between shm_root_load_begin and _end */
	unsigned applied; /* batches applied to the tick being built */

	/* Bucket for tag t is bk[t % bk_cap], for t in [bk_base, bk_base + bk_cap). */
	struct shm_bucket *bk;
	uint64_t bk_base, bk_cap;
	uint64_t next_safe; /* entries of bucket tick+1 a reclaim may free */

	struct shm_undo *undo;
	size_t nundo, undo_cap;
	uint64_t *undone_allocs;
	size_t nundone, undone_cap;

	/* Change log (writer side). */
	uint64_t log_head;       /* next write position */
	uint64_t log_tick_start; /* log_head when the tick being built began */
	uint64_t min_cursor_hint;
	uint64_t log_overruns;
	/* The log end of each of the last SHM_TICK_ENDS published ticks, at
	 * tick_end[t % SHM_TICK_ENDS] (shm_log_bytes_since). */
	uint64_t *tick_end;
	uint64_t log_pushed; /* the log up to here went to the shared cache */

	uint64_t empty_names;    /* names whose incarnations are all gone */
	uint64_t pend, pend_cap; /* the tick's private name array, unpublished */
	uint64_t *prefix;        /* scratch of shm_retired_bytes_after */
	size_t prefix_cap;
	struct shm_counters c;
	uint64_t reclaimed_objects, reclaimed_bytes;
	bool poison;
};

static inline void *shm_at(const struct shm_root *r, uint64_t off)
{
	return r->base + off;
}

/* Kinds of undo records (struct shm_undo). */
enum { U_SHARED = 1, U_PLAIN, U_PUSH, U_PEND_NEW, U_NAME_INSERT };

/* Ticks whose log end the root remembers (shm_log_bytes_since): a cursor
 * further behind is counted from the log's tail. */
#define SHM_TICK_ENDS 4096u

/* ---- retire buckets and undo ------------------------------------------- */

static inline struct shm_bucket *bucket(struct shm_root *r, uint64_t tag)
{
	return &r->bk[tag % r->bk_cap];
}

/* Makes the bucket ring cover [bk_base, upto]. */
static inline int buckets_cover(struct shm_root *r, uint64_t upto)
{
	if (upto < r->bk_base + r->bk_cap)
		return 0;
	uint64_t cap = r->bk_cap;
	while (upto >= r->bk_base + cap)
		cap *= 2;
	struct shm_bucket *nb = calloc(cap, sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	for (uint64_t t = r->bk_base; t < r->bk_base + r->bk_cap; t++)
		nb[t % cap] = r->bk[t % r->bk_cap];
	free(r->bk);
	r->bk = nb;
	r->bk_cap = cap;
	return 0;
}

static inline void set_shared(struct shm_root *r, _Atomic uint64_t *p, uint64_t v)
{
	r->undo[r->nundo++] =
		(struct shm_undo){U_SHARED, (void *)p, atomic_load_explicit(p, memory_order_relaxed)};
	atomic_store_explicit(p, v, memory_order_release);
}

static inline void set_plain(struct shm_root *r, uint64_t *p, uint64_t v)
{
	r->undo[r->nundo++] = (struct shm_undo){U_PLAIN, p, *p};
	*p = v;
}

static inline void retire(struct shm_root *r, uint64_t off, unsigned kind, uint64_t tag, uint64_t bytes,
			  bool undoable)
{
	struct shm_obj *o = shm_at(r, off);
	struct shm_bucket *b = bucket(r, tag);
	o->retire_kind = kind;
	o->retire_next = 0;
	if (o->kind == SHM_OBJ_VERSION)
		((struct shm_ver *)o)->flags |= SHM_VER_PENDING;
	if (undoable)
		r->undo[r->nundo++] = (struct shm_undo){U_PUSH, (void *)(uintptr_t)tag, b->tail};
	if (b->tail)
		((struct shm_obj *)shm_at(r, b->tail))->retire_next = off;
	else
		b->head = off;
	b->tail = off;
	b->count++;
	b->bytes += bytes;
	r->c.retired_objects++;
	r->c.retired_bytes += bytes;
}

/* A table's bytes include its pool's: they live and die together. */
static inline uint64_t obj_bytes(struct shm_root *r, uint64_t off)
{
	uint64_t n = shm_arena_size_of(r->arena, off);
	const struct shm_obj *o = shm_at(r, off);
	if (o->kind == SHM_OBJ_TABLE) {
		uint64_t pool =
			atomic_load_explicit(&((const struct shm_table *)o)->pool, memory_order_relaxed);
		if (pool)
			n += shm_arena_size_of(r->arena, pool);
	}
	return n;
}

static inline void unpush(struct shm_root *r, uint64_t tag, uint64_t prev_tail)
{
	struct shm_bucket *b = bucket(r, tag);
	uint64_t off = b->tail;
	struct shm_obj *o = shm_at(r, off);
	uint64_t bytes = o->retire_kind == R_DELINC   ? ((struct shm_inc *)o)->bytes
			 : o->retire_kind == R_UNLINK ? 0
						      : obj_bytes(r, off);
	if (o->kind == SHM_OBJ_VERSION)
		((struct shm_ver *)o)->flags &= ~SHM_VER_PENDING;
	b->tail = prev_tail;
	if (prev_tail)
		((struct shm_obj *)shm_at(r, prev_tail))->retire_next = 0;
	else
		b->head = 0;
	b->count--;
	b->bytes -= bytes;
	r->c.retired_objects--;
	r->c.retired_bytes -= bytes;
}

/* An allocation made for the batch being applied. If the batch is undone,
 * the object may already have been seen by a reader probing the live
 * structure, so it is retired, not freed. */
static inline int alloc_obj(struct shm_root *r, uint64_t size, bool use_headroom, unsigned kind,
			    uint64_t *off)
{
	if (r->nundone == r->undone_cap) {
		size_t cap = r->undone_cap ? r->undone_cap * 2 : 64;
		uint64_t *p = realloc(r->undone_allocs, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		r->undone_allocs = p;
		r->undone_cap = cap;
	}
	int rc = shm_arena_alloc(r->arena, size, use_headroom, off);
	if (rc < 0)
		return rc;
	struct shm_obj *o = shm_at(r, *off);
	o->retire_next = 0;
	o->kind = kind;
	o->retire_kind = 0;
	r->undone_allocs[r->nundone++] = *off;
	return 0;
}

/* ---- the state being built --------------------------------------------- */

/* The name array the root works on: while a tick is built, names it adds
 * go into a private copy (pend) published with the tick, so a tick copies
 * the array once, however many directories it creates. */
static inline struct shm_dir_array *dir_array(struct shm_root *r)
{
	if (r->pend)
		return shm_at(r, r->pend);
	return shm_at(r, atomic_load_explicit(&r->hdr->dirs, memory_order_relaxed));
}

static inline uint64_t names_bytes(uint64_t cap)
{
	return sizeof(struct shm_dir_array) + cap * sizeof(uint64_t);
}

static inline struct shm_dname *dname_at(struct shm_root *r, uint64_t off)
{
	return shm_at(r, off);
}

static inline const void *ver_key(const struct shm_ver *v)
{
	return (const uint8_t *)v + sizeof(*v);
}

static inline void *ver_value(struct shm_ver *v)
{
	return (uint8_t *)v + sizeof(*v) + shm_round8(v->key_len);
}

/* Asks the CPU to move the cache lines of [p, p + len) out of this core's
 * private caches into the shared one (x86 CLDEMOTE; elsewhere, and on CPUs
 * without it, nothing: the instruction is a hint that executes as a no-op).
 * A worker then reads what the root has just published from the shared
 * cache instead of snooping it out of the root's core, which is most of a
 * cross-core round trip. At most SHM_PUSH_MAX bytes: a big tick streams
 * anyway. */
#define SHM_PUSH_MAX 4096u
static inline void shm_push_lines(const void *p, size_t len)
{
#if defined(__x86_64__) || defined(__i386__)
	if (len > SHM_PUSH_MAX)
		len = SHM_PUSH_MAX;
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)63, end = (uintptr_t)p + len;
	for (; a < end; a += 64)
		__asm__ volatile("cldemote (%0)" ::"r"(a) : "memory");
#else
	(void)p;
	(void)len;
#endif
}

/* ---- log.c: the writer's side of the change log ------------------------- */

/* value: a PUT's value, carried in the record when value_len is at most
 * SHM_LOG_INLINE_MAX (NULL otherwise, and for other kinds). */
int shm_log_append(struct shm_root *r, int kind, const char *dir, size_t dir_len, const void *key,
		   size_t key_len, const void *value, size_t value_len);
void shm_log_reclaim(struct shm_root *r, uint64_t min_cursor, struct shm_reclaim_report *rep);
/* Called by shm_commit_publish once tick t is published: remembers where t
 * ends in the log and pushes t's records to the shared cache. */
void shm_log_published(struct shm_root *r, uint64_t t);

#endif
