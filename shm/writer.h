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

/* What is retired at one tag: counts for stats and the reclaim's limits;
 * the entries themselves are in the root's retire queue, in push order. */
struct shm_bucket {
	uint64_t count, bytes;
};

/* One retired object, in the root's own memory (a version has no room for
 * a link). aux: for R_VERSION the version that superseded it, whose older
 * link is cut when it is freed; for R_UNLINK the incarnation whose table
 * holds the tombstone's key; else 0.
 *
 * Every push has tag building(r) = tick + 1 (commits retire at the tick
 * they build, reclaim between ticks at tick + 1), so the queue is in tag
 * order and reclamation takes it from the front. That order is also what
 * makes aux safe to follow: the version that superseded v, or the head a
 * deleted incarnation frees, is retired after v, so it is freed after v. */
struct shm_retired {
	uint64_t off, aux, tag, bytes;
	uint32_t okind; /* enum shm_obj_kind */
	uint32_t rkind; /* enum shm_retire_kind */
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
	/* live_inc_of's memory of the last key op's directory, within one
	 * shm_apply_batch (memo_len 0: none). */
	char memo_name[SHMSYNC_MAX_DIR];
	size_t memo_len;
	uint64_t memo_inc;
	bool building;
	bool loading;     /* between shm_root_load_begin and _end */
	unsigned applied; /* batches applied to the tick being built */

	/* Bucket for tag t is bk[t % bk_cap], for t in [bk_base, bk_base + bk_cap). */
	struct shm_bucket *bk;
	/* The retire queue: entries [rq_head, rq_tail) at index % rq_cap (a
	 * power of two). Pushes never allocate: room is made beforehand
	 * (retire_room), where a failure can still undo the batch. */
	struct shm_retired *rq;
	uint64_t rq_head, rq_tail, rq_cap;
	uint64_t bk_base, bk_cap;
	uint64_t next_safe; /* entries of bucket tick+1 a reclaim may free */

	struct shm_undo *undo;
	size_t nundo, undo_cap;
	struct shm_undone {
		uint64_t off;
		unsigned kind;
	} * undone_allocs;
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
	/* shm_root_warm: the segment offset below which backed pages were
	 * touched by this process. */
	uint64_t warm_arena;

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

/* Makes room in the retire queue for n more entries. */
static inline int retire_room(struct shm_root *r, uint64_t n)
{
	uint64_t len = r->rq_tail - r->rq_head;
	if (len + n <= r->rq_cap)
		return 0;
	uint64_t cap = r->rq_cap ? r->rq_cap : 256;
	while (cap < len + n)
		cap *= 2;
	struct shm_retired *q = malloc(cap * sizeof(*q));
	if (!q)
		return -ENOMEM;
	for (uint64_t i = 0; i < len; i++)
		q[i] = r->rq[(r->rq_head + i) & (r->rq_cap - 1)];
	free(r->rq);
	r->rq = q;
	r->rq_cap = cap;
	r->rq_head = 0;
	r->rq_tail = len;
	return 0;
}

static inline struct shm_ver *ver_at(const struct shm_root *r, uint64_t off)
{
	return shm_at(r, off);
}

static inline uint64_t ver_link(const struct shm_ver *v)
{
	return atomic_load_explicit(&v->link, memory_order_relaxed);
}

static inline uint32_t ver_flags(const struct shm_ver *v)
{
	return shm_link_flags(ver_link(v));
}

static inline uint32_t ver_klen(const struct shm_ver *v)
{
	return shm_link_klen(ver_link(v));
}

static inline uint64_t ver_older(const struct shm_ver *v)
{
	return shm_link_older(ver_link(v));
}

/* Root-only flags: readers look at TOMB alone, and each store is of the
 * whole word they load at once. */
static inline void ver_set_flags(struct shm_ver *v, uint32_t set, uint32_t clear)
{
	uint64_t l = ver_link(v);
	l |= (uint64_t)set << SHM_VER_FLAGS_SHIFT;
	l &= ~((uint64_t)clear << SHM_VER_FLAGS_SHIFT);
	atomic_store_explicit(&v->link, l, memory_order_relaxed);
}

/* Queues off (an object of kind okind) to be handled by reclaim.c once
 * readers pass tag. Room was made by retire_room. */
static inline void retire_kind(struct shm_root *r, uint64_t off, unsigned okind, unsigned rkind, uint64_t tag,
			       uint64_t bytes, uint64_t aux, bool undoable)
{
	struct shm_bucket *b = bucket(r, tag);
	/* A superseded tombstone is queued twice (R_UNLINK, R_VERSION): an
	 * undone second push must leave it pending. */
	bool was_pending = false;
	if (okind == SHM_OBJ_VERSION) {
		was_pending = (ver_flags(ver_at(r, off)) & SHM_VER_PENDING) != 0;
		ver_set_flags(ver_at(r, off), SHM_VER_PENDING, 0);
	}
	if (undoable)
		r->undo[r->nundo++] = (struct shm_undo){U_PUSH, NULL, was_pending};
	r->rq[r->rq_tail++ & (r->rq_cap - 1)] = (struct shm_retired){off, aux, tag, bytes, okind, rkind};
	b->count++;
	b->bytes += bytes;
	r->c.retired_objects++;
	r->c.retired_bytes += bytes;
}

/* A table's bytes include its pool's: they live and die together. Not for
 * versions, which have no object header (ver_bytes). */
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

static inline uint64_t ver_bytes(struct shm_root *r, uint64_t off)
{
	return shm_arena_size_of(r->arena, off);
}

/* Retires an object with a header (not a version). */
static inline void retire(struct shm_root *r, uint64_t off, unsigned rkind, uint64_t tag, uint64_t bytes,
			  bool undoable)
{
	retire_kind(r, off, ((struct shm_obj *)shm_at(r, off))->kind, rkind, tag, bytes, 0, undoable);
}

static inline void retire_ver(struct shm_root *r, uint64_t off, unsigned rkind, uint64_t tag, uint64_t bytes,
			      uint64_t aux, bool undoable)
{
	retire_kind(r, off, SHM_OBJ_VERSION, rkind, tag, bytes, aux, undoable);
}

static inline void unpush(struct shm_root *r, bool was_pending)
{
	struct shm_retired *e = &r->rq[--r->rq_tail & (r->rq_cap - 1)];
	struct shm_bucket *b = bucket(r, e->tag);
	if (e->okind == SHM_OBJ_VERSION && !was_pending)
		ver_set_flags(ver_at(r, e->off), 0, SHM_VER_PENDING);
	b->count--;
	b->bytes -= e->bytes;
	r->c.retired_objects--;
	r->c.retired_bytes -= e->bytes;
}

/* An allocation made for the batch being applied. If the batch is undone,
 * the object may already have been seen by a reader probing the live
 * structure, so it is retired, not freed. */
static inline int alloc_obj(struct shm_root *r, uint64_t size, bool use_headroom, unsigned kind,
			    uint64_t *off)
{
	if (r->nundone == r->undone_cap) {
		size_t cap = r->undone_cap ? r->undone_cap * 2 : 64;
		struct shm_undone *p = realloc(r->undone_allocs, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		r->undone_allocs = p;
		r->undone_cap = cap;
	}
	/* An undo retires every allocation of the batch after popping the
	 * batch's own entries: the queue must hold them then, and still have
	 * room for the one entry publishing the tick may push (the replaced
	 * name array of an earlier batch of the tick): tests/test_retire_queue. */
	int rc = retire_room(r, r->nundone + 2);
	if (rc < 0)
		return rc;
	rc = shm_arena_alloc(r->arena, size, use_headroom, off);
	if (rc < 0)
		return rc;
	if (kind != SHM_OBJ_VERSION) {
		struct shm_obj *o = shm_at(r, *off);
		*o = (struct shm_obj){0, kind, 0};
	}
	r->undone_allocs[r->nundone++] = (struct shm_undone){*off, kind};
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
	return (const uint8_t *)v + SHM_VER_HDR;
}

static inline void *ver_value(struct shm_ver *v)
{
	return (uint8_t *)v + shm_ver_value_at(ver_klen(v));
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
