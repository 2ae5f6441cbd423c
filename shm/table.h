/* The key tables' lookups and the room an insert needs, inline for the
 * commit path (commit.c), and the rest of the table core (table.c): the
 * overflow trees, table seeds, rebuilds. Root only.
 */
#ifndef SHMSYNC_TABLE_H
#define SHMSYNC_TABLE_H

#include "writer.h"

#define TABLE_MIN_SLOTS 8u
/* Links a probe remembers: a path tests strictly later bits, so one between
 * keys whose 64-bit positions differ is at most 64 internal nodes long. */
#define PROBE_PATH_MAX 66u

struct probe {
	struct shm_slot *slot; /* the key's slot or tree leaf, or NULL */
	struct shm_slot *free; /* first reusable slot of the window; NULL: a new key goes to the tree */
	uint64_t head;         /* head version, 0 if none */
	/* The tree leaf the key's path ended at when it was not found (NULL: no
	 * tree, or the window decided), and the links that path followed, root
	 * first (path_len 0: not recorded, the path was longer): an insert
	 * links its new node into that path without walking the tree again.
	 * Tree walks are chains of dependent loads, what an attacked insert
	 * pays for most. */
	struct shm_onode *best;
	unsigned path_len;
	_Atomic uint64_t *path[PROBE_PATH_MAX];
};

static inline struct shm_pool *table_pool(struct shm_root *r, const struct shm_table *t)
{
	uint64_t off = atomic_load_explicit(&t->pool, memory_order_relaxed);
	return off ? shm_at(r, off) : NULL;
}

static inline struct shm_onode *pool_node(struct shm_pool *p, uint64_t idx)
{
	return &p->nodes[idx - 1];
}

static inline uint64_t window_of(const struct shm_table *t)
{
	return t->nslots < SHM_PROBE_WINDOW ? t->nslots : SHM_PROBE_WINDOW;
}

static inline void count_probe(struct shm_root *r, uint64_t steps)
{
	r->probes += steps;
	if (steps > r->probe_max)
		r->probe_max = steps;
}

/* The leaf the tree leads (pos, key) to, NULL if the tree is empty. With
 * a probe, records the links followed into it (probe.path). */
static inline struct shm_onode *tree_best(struct shm_pool *p, uint64_t pos, const void *key, size_t klen,
					  uint64_t *steps, struct probe *pr)
{
	_Atomic uint64_t *link = &p->root;
	unsigned depth = 0;
	for (;;) {
		uint64_t idx = atomic_load_explicit(link, memory_order_relaxed);
		if (!idx)
			return NULL;
		if (pr) {
			if (depth < PROBE_PATH_MAX)
				pr->path[depth] = link;
			pr->path_len = ++depth <= PROBE_PATH_MAX ? depth : 0;
		}
		struct shm_onode *nd = pool_node(p, idx);
		(*steps)++;
		if (nd->bit == SHM_CB_LEAF)
			return nd;
		link = &nd->child[shm_cb_bit(pos, klen, key, nd->bit)];
	}
}

static inline void probe_key(struct shm_root *r, struct shm_table *t, uint64_t h, const void *key,
			     size_t klen, struct probe *p)
{
	uint64_t n_slots = t->nslots, pos = shm_table_pos(t->seed, h), win = window_of(t), steps = 0;
	p->slot = p->free = NULL;
	p->best = NULL;
	p->path_len = 0;
	p->head = 0;
	for (uint64_t i = shm_table_home(pos, n_slots), n = 0; n < win; i = shm_table_next(i, n_slots), n++) {
		struct shm_slot *s = &t->slots[i];
		uint64_t word = atomic_load_explicit(&s->word, memory_order_relaxed);
		uint64_t node = shm_slot_node(word);
		steps++;
		if (node == SHM_SLOT_EMPTY) {
			/* A key goes to the tree only when its window has no
			 * EMPTY slot, and slots never become EMPTY again. */
			if (!p->free)
				p->free = s;
			count_probe(r, steps);
			return;
		}
		if (node == SHM_SLOT_DELETED) {
			if (!p->free)
				p->free = s;
			continue;
		}
		if (!shm_slot_tag_is(word, h))
			continue;
		struct shm_ver *v = shm_at(r, node);
		if (ver_klen(v) == klen && shm_bytes_eq(ver_key(v), key, klen)) {
			p->slot = s;
			p->head = node;
			count_probe(r, steps);
			return;
		}
	}
	struct shm_pool *pool = table_pool(r, t);
	struct shm_onode *leaf = pool ? tree_best(pool, pos, key, klen, &steps, p) : NULL;
	p->best = leaf;
	if (leaf) {
		uint64_t word = atomic_load_explicit(&leaf->s.word, memory_order_relaxed);
		uint64_t node = shm_slot_node(word);
		if (node > SHM_SLOT_DELETED && shm_slot_tag_is(word, h)) {
			struct shm_ver *v = shm_at(r, node);
			if (ver_klen(v) == klen && shm_bytes_eq(ver_key(v), key, klen)) {
				p->slot = &leaf->s;
				p->head = node;
			}
		}
	}
	count_probe(r, steps);
}

static inline uint64_t pool_bytes(uint64_t cap)
{
	return sizeof(struct shm_pool) + cap * sizeof(struct shm_onode);
}

/* Free nodes a table's pool starts with: when they run out the table is
 * rebuilt, and this is what pays for it (table_room). nslots/32 is ample
 * for keys nobody chose (about 2% of nslots in nodes at 3/4 load, below);
 * a table reseeded because its pool ran out, which keys nobody chose do
 * not do, gets nslots/4 (pool_room_after), so an attacker meets few
 * reseeds while honest tables pay 1.3 bytes of pool a slot, not 10
 * (peers bytes per key at 1M keys: 219.5 -> 182.8). Doubling the room at
 * each reseed instead measured worse under attack (3.2-4.4x against
 * 2.3-2.8x in the same sitting). */
#define POOL_MIN_NODES 64u
static inline uint64_t pool_room(const struct shm_table *t)
{
	return t->nslots / 32 > POOL_MIN_NODES ? t->nslots / 32 : POOL_MIN_NODES;
}

static inline uint64_t pool_room_after(const struct shm_table *t)
{
	return t->nslots / 4 > POOL_MIN_NODES ? t->nslots / 4 : POOL_MIN_NODES;
}

static inline void pool_init(struct shm_pool *p, uint64_t cap)
{
	p->o = (struct shm_obj){0, SHM_OBJ_POOL, 0};
	p->cap = cap;
	p->used = 0;
	p->live = 0;
	atomic_store_explicit(&p->root, 0, memory_order_relaxed);
	memset(p->nodes, 0, cap * sizeof(struct shm_onode));
}

/* ---- table.c ----------------------------------------------------------- */

/* A new empty table of nslots slots under a fresh seed, allocated for the
 * batch being applied. */
int shm_table_new(struct shm_root *r, uint64_t nslots, uint64_t *off);
/* Replaces inc's table by a copy sized for its entries, under a fresh
 * seed (retired with `tag`). reseed: because the pool ran out (the new
 * pool then gets more room: pool_room_after). */
int shm_table_rebuild(struct shm_root *r, struct shm_inc *inc, uint64_t tag, bool reseed);
/* Links a new leaf for a key into a tree whose pool has room for two more
 * nodes; shared: the table is published (every change recorded for undo).
 * pr: this key's probe in this pool (its best leaf and path), or NULL to
 * walk the tree here. */
void shm_tree_insert(struct shm_root *r, struct shm_pool *p, uint64_t seed, uint64_t pos, uint64_t h,
		     const void *key, size_t klen, uint64_t node, bool shared, const struct probe *pr);
/* Unlinks the tree leaf whose head is `off`; false if it is not there. */
bool shm_tree_remove(struct shm_root *r, struct shm_table *t, uint64_t pos, const void *key, size_t klen,
		     uint64_t off);

/* Makes room for one new key whose probe in inc's table is *p (re-probed
 * if the table is replaced): a free slot in its window, or two pool nodes.
 *
 * Why hash flooding stays bounded, whatever keys a worker sends and even
 * if it reads every new seed the moment it is published:
 *  1. Work per operation. A lookup or insert probes at most
 *     SHM_PROBE_WINDOW slots, then walks the tree: every internal node on a
 *     path tests a strictly later bit, so a path has at most 64 internal
 *     nodes while position hashes differ, plus one per further bit only for
 *     keys whose 64-bit position hashes are equal (a full collision of
 *     XXH3 of a 64-bit h, which is a bijection: equal positions mean equal
 *     segment hashes h). The test bounds the steps, not the time.
 *  2. Rebuilds are amortised. A table is rebuilt (O(nslots + pool nodes))
 *     (a) when slots + tree keys would pass 3/4 of nslots: a rebuild leaves
 *     them at most about half, so at least nslots/4 new keys came between
 *     two such rebuilds (the usual doubling argument); or (b) when its pool
 *     runs out. Every pool starts with at least pool_room(t) >= nslots/32
 *     free nodes and an insert takes at most two, nodes are never given
 *     back, so at least nslots/64 tree inserts (each one an operation a
 *     worker paid for; an undone one counts, its nodes stay used) came
 *     before it. Pool nodes are <= 2 per tree key kept + that room, so
 *     either way the rebuild costs O(1) per operation since the last one:
 *     an adaptive attacker who crafts new collisions after each reseed
 *     still pays one operation per unit of rebuild work, and the pool's
 *     memory stays within a constant of the table's.
 *  3. A precomputed attack dies at the next rebuild: keys that collide under
 *     one table seed are scattered under the next one, which nobody could
 *     read before the table existed (table_seed_new).
 * With random keys the window of 16 overflows for about 1.3% of keys at
 * 3/4 load (a simulation; 32 slots: 0.35%), below the nslots/64 inserts a
 * first pool holds. Why 16 and pools growing to nslots/4: an attacked
 * insert is a window scan and a tree walk, and a reseed costs a rebuild;
 * the smaller window and the bigger pools (fewer reseeds, a tree a level or
 * two deeper) took attacked inserts from 3.5x to about 2x random ones,
 * attacked gets from 1.15x to 1.3x (docs/BENCHMARKS.md, bench_hashflood). */
static inline int table_room(struct shm_root *r, struct shm_inc *inc, uint64_t tag, uint64_t h,
			     const void *key, size_t klen, struct probe *p)
{
	struct shm_table *t = shm_at(r, atomic_load_explicit(&inc->table, memory_order_relaxed));
	struct shm_pool *pool = table_pool(r, t);
	bool crowded = (t->used + (pool ? pool->live : 0) + 1) * 4 > t->nslots * 3;
	bool pool_full = !p->free && pool && pool->used + 2 > pool->cap;
	if (crowded || pool_full) {
		if (!crowded)
			r->reseeds++;
		int rc = shm_table_rebuild(r, inc, tag, !crowded);
		if (rc < 0)
			return rc;
		t = shm_at(r, atomic_load_explicit(&inc->table, memory_order_relaxed));
		probe_key(r, t, h, key, klen, p);
		pool = table_pool(r, t);
	}
	if (!p->free && !pool) {
		uint64_t cap = pool_room(t), off;
		int rc = alloc_obj(r, pool_bytes(cap), false, SHM_OBJ_POOL, &off);
		if (rc < 0)
			return rc;
		pool_init(shm_at(r, off), cap);
		set_plain(r, &inc->bytes, inc->bytes + obj_bytes(r, off));
		/* Release: a reader that loads the pool sees it zeroed. */
		set_shared(r, &t->pool, off);
	}
	return 0;
}

#endif
