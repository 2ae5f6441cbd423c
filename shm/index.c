/* The root's side of the MVCC index: building ticks from batches, retiring
 * what a commit supersedes, and reclaiming it once readers have passed.
 *
 * The retire rule, and why it is safe (see docs/ARCHITECTURE.md):
 *  - A version superseded at t is read only by snapshots E < t: once every
 *    online epoch is >= t nobody follows the pointer to it (a reader at
 *    E >= t stops at the newer version, whose tick <= E).
 *  - A deleted incarnation (rmdir at t) and everything in it: readers at
 *    E >= t look at the incarnation's created/deleted ticks and go no
 *    further, so its table and versions go at t; the incarnation header
 *    itself is still looked at, so it is unlinked from its name then, and
 *    freed with tag T+1 (T = the published tick at unlink time).
 *  - A tombstone written at t hides the versions below it: they go at t
 *    (they were retired as superseded versions). The tombstone itself is
 *    what readers at E >= t find, so at t its slot is marked DELETED and the
 *    tombstone freed with tag T+1.
 *  - Anything replaced (a table, the name array) while building tick t is
 *    retired at t: readers at E < t may hold it, readers at E >= t load the
 *    new one, which was stored (release) before tick t was published.
 * Retire entries are linked through the retired objects (obj.retire_next),
 * so retiring never allocates.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "internal.h"

enum { U_SHARED = 1, U_PLAIN, U_PUSH, U_PEND_NEW, U_NAME_INSERT };

#define TABLE_MIN_SLOTS 8u

/* ---- bookkeeping ------------------------------------------------------- */

static struct shm_bucket *bucket(struct shm_root *r, uint64_t tag)
{
	return &r->bk[tag % r->bk_cap];
}

/* Makes the bucket ring cover [bk_base, upto]. */
static int buckets_cover(struct shm_root *r, uint64_t upto)
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

static int undo_reserve(struct shm_root *r, size_t more)
{
	if (r->nundo + more <= r->undo_cap)
		return 0;
	size_t cap = r->undo_cap ? r->undo_cap * 2 : 256;
	while (cap < r->nundo + more)
		cap *= 2;
	struct shm_undo *u = realloc(r->undo, cap * sizeof(*u));
	if (!u)
		return -ENOMEM;
	r->undo = u;
	r->undo_cap = cap;
	return 0;
}

/* Every undo record is reserved before the write it covers, so an undo can
 * never be lost to a failed allocation. */
#define UNDO_SLACK 16

static void set_shared(struct shm_root *r, _Atomic uint64_t *p, uint64_t v)
{
	r->undo[r->nundo++] =
		(struct shm_undo){U_SHARED, (void *)p, atomic_load_explicit(p, memory_order_relaxed)};
	atomic_store_explicit(p, v, memory_order_release);
}

static void set_plain(struct shm_root *r, uint64_t *p, uint64_t v)
{
	r->undo[r->nundo++] = (struct shm_undo){U_PLAIN, p, *p};
	*p = v;
}

static void retire(struct shm_root *r, uint64_t off, unsigned kind, uint64_t tag, uint64_t bytes,
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
static uint64_t obj_bytes(struct shm_root *r, uint64_t off)
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

static void unpush(struct shm_root *r, uint64_t tag, uint64_t prev_tail)
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
static int alloc_obj(struct shm_root *r, uint64_t size, bool use_headroom, unsigned kind, uint64_t *off)
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

static void free_obj(struct shm_root *r, uint64_t off, struct shm_reclaim_report *rep)
{
	uint64_t bytes = obj_bytes(r, off);
	struct shm_obj *o = shm_at(r, off);
	if (o->kind == SHM_OBJ_TABLE) {
		uint64_t pool = atomic_load_explicit(&((struct shm_table *)o)->pool, memory_order_relaxed);
		if (pool)
			shm_arena_free(r->arena, pool);
	}
	shm_arena_free(r->arena, off);
	r->reclaimed_objects++;
	r->reclaimed_bytes += bytes;
	if (rep) {
		rep->objects_freed++;
		rep->bytes_freed += bytes;
	}
}

/* Frees a version and cuts the links its neighbours keep to it: both are
 * alive (a version is freed only by its own retire entry, or as the head of
 * a deleted incarnation, and each free cuts these links first). */
static void free_version(struct shm_root *r, uint64_t off, struct shm_reclaim_report *rep)
{
	struct shm_ver *v = shm_at(r, off);
	uint64_t older = atomic_load_explicit(&v->older, memory_order_relaxed);
	if (v->newer) {
		struct shm_ver *n = shm_at(r, v->newer);
		if (atomic_load_explicit(&n->older, memory_order_relaxed) == off)
			atomic_store_explicit(&n->older, 0, memory_order_relaxed);
	}
	if (older) {
		struct shm_ver *o = shm_at(r, older);
		if (o->newer == off)
			o->newer = 0;
	}
	if (v->flags & SHM_VER_TOMB)
		r->c.tombstones--;
	free_obj(r, off, rep);
}

/* ---- lookups on the state being built ---------------------------------- */

/* The name array the root works on: while a tick is built, names it adds
 * go into a private copy (pend) published with the tick, so a tick copies
 * the array once, however many directories it creates. */
static struct shm_dir_array *dir_array(struct shm_root *r)
{
	if (r->pend)
		return shm_at(r, r->pend);
	return shm_at(r, atomic_load_explicit(&r->hdr->dirs, memory_order_relaxed));
}

static uint64_t names_bytes(uint64_t cap)
{
	return sizeof(struct shm_dir_array) + cap * sizeof(uint64_t);
}

/* Inserts a name at index `at` of the tick's private array (made, or grown,
 * here: nobody else has seen it, so it is changed in place and freed at
 * once when no longer needed). */
static int names_insert(struct shm_root *r, uint64_t dn, uint64_t at)
{
	struct shm_dir_array *cur = dir_array(r);
	if (!r->pend || cur->count == r->pend_cap) {
		/* A tick's first copy is a snug fit: every tick that creates a
		 * directory retires one, and readers' snapshots may hold many
		 * of them. Growing again within the tick doubles. */
		uint64_t cap = r->pend ? cur->count * 2 : cur->count + cur->count / 8 + 16, off;
		int rc = shm_arena_alloc(r->arena, names_bytes(cap), true, &off);
		if (rc < 0)
			return rc;
		struct shm_dir_array *a = shm_at(r, off);
		a->o = (struct shm_obj){0, SHM_OBJ_DIRS, 0};
		a->count = cur->count;
		memcpy(a->names, cur->names, cur->count * sizeof(uint64_t));
		if (r->pend) {
			shm_arena_free(r->arena, r->pend);
		} else {
			r->undo[r->nundo++] = (struct shm_undo){U_PEND_NEW, NULL, 0};
		}
		r->pend = off;
		r->pend_cap = cap;
		cur = a;
	}
	memmove(&cur->names[at + 1], &cur->names[at], (cur->count - at) * sizeof(uint64_t));
	cur->names[at] = dn;
	cur->count++;
	r->undo[r->nundo++] = (struct shm_undo){U_NAME_INSERT, NULL, at};
	return 0;
}

static void names_uninsert(struct shm_root *r, uint64_t at)
{
	struct shm_dir_array *a = shm_at(r, r->pend);
	memmove(&a->names[at], &a->names[at + 1], (a->count - at - 1) * sizeof(uint64_t));
	a->count--;
}

static struct shm_dname *dname_at(struct shm_root *r, uint64_t off)
{
	return shm_at(r, off);
}

/* Index of the first name >= (name, len). */
static uint64_t lower_bound(struct shm_root *r, const struct shm_dir_array *a, const char *name, size_t len)
{
	uint64_t lo = 0, hi = a->count;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		const struct shm_dname *d = dname_at(r, a->names[mid]);
		if (shm_name_cmp(d->name, d->name_len, name, len) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static uint64_t find_dname(struct shm_root *r, const char *name, size_t len)
{
	const struct shm_dir_array *a = dir_array(r);
	uint64_t i = lower_bound(r, a, name, len);
	if (i < a->count) {
		const struct shm_dname *d = dname_at(r, a->names[i]);
		if (d->name_len == len && memcmp(d->name, name, len) == 0)
			return a->names[i];
	}
	return 0;
}

/* The live incarnation (not deleted, in the state being built), or 0. */
static uint64_t live_inc(struct shm_root *r, const char *name, size_t len)
{
	uint64_t dn = find_dname(r, name, len);
	if (!dn)
		return 0;
	uint64_t inc = atomic_load_explicit(&dname_at(r, dn)->head, memory_order_relaxed);
	if (!inc)
		return 0;
	struct shm_inc *in = shm_at(r, inc);
	return atomic_load_explicit(&in->deleted, memory_order_relaxed) ? 0 : inc;
}

static const void *ver_key(const struct shm_ver *v)
{
	return (const uint8_t *)v + sizeof(*v);
}

static void *ver_value(struct shm_ver *v)
{
	return (uint8_t *)v + sizeof(*v) + shm_round8(v->key_len);
}

struct probe {
	struct shm_slot *slot; /* the key's slot or tree leaf, or NULL */
	struct shm_slot *free; /* first reusable slot of the window; NULL: a new key goes to the tree */
	uint64_t head;         /* head version, 0 if none */
};

static struct shm_pool *table_pool(struct shm_root *r, const struct shm_table *t)
{
	uint64_t off = atomic_load_explicit(&t->pool, memory_order_relaxed);
	return off ? shm_at(r, off) : NULL;
}

static struct shm_onode *pool_node(struct shm_pool *p, uint64_t idx)
{
	return &p->nodes[idx - 1];
}

static uint64_t window_of(const struct shm_table *t)
{
	return t->nslots < SHM_PROBE_WINDOW ? t->nslots : SHM_PROBE_WINDOW;
}

static void count_probe(struct shm_root *r, uint64_t steps)
{
	r->probes += steps;
	if (steps > r->probe_max)
		r->probe_max = steps;
}

/* The leaf the tree leads (pos, key) to, NULL if the tree is empty. */
static struct shm_onode *tree_best(struct shm_pool *p, uint64_t pos, const void *key, size_t klen,
				   uint64_t *steps)
{
	uint64_t idx = atomic_load_explicit(&p->root, memory_order_relaxed);
	if (!idx)
		return NULL;
	for (;;) {
		struct shm_onode *nd = pool_node(p, idx);
		(*steps)++;
		if (nd->bit == SHM_CB_LEAF)
			return nd;
		idx = atomic_load_explicit(&nd->child[shm_cb_bit(pos, klen, key, nd->bit)],
					   memory_order_relaxed);
	}
}

static void probe_key(struct shm_root *r, struct shm_table *t, uint64_t h, const void *key, size_t klen,
		      struct probe *p)
{
	uint64_t mask = t->nslots - 1, pos = shm_table_pos(t->seed, h), win = window_of(t), steps = 0;
	p->slot = p->free = NULL;
	p->head = 0;
	for (uint64_t i = pos & mask, n = 0; n < win; i = (i + 1) & mask, n++) {
		struct shm_slot *s = &t->slots[i];
		uint64_t node = atomic_load_explicit(&s->node, memory_order_relaxed);
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
		if (atomic_load_explicit(&s->hash, memory_order_relaxed) != h)
			continue;
		struct shm_ver *v = shm_at(r, node);
		if (v->key_len == klen && memcmp(ver_key(v), key, klen) == 0) {
			p->slot = s;
			p->head = node;
			count_probe(r, steps);
			return;
		}
	}
	struct shm_pool *pool = table_pool(r, t);
	struct shm_onode *leaf = pool ? tree_best(pool, pos, key, klen, &steps) : NULL;
	if (leaf) {
		uint64_t node = atomic_load_explicit(&leaf->s.node, memory_order_relaxed);
		if (node > SHM_SLOT_DELETED &&
		    atomic_load_explicit(&leaf->s.hash, memory_order_relaxed) == h) {
			struct shm_ver *v = shm_at(r, node);
			if (v->key_len == klen && memcmp(ver_key(v), key, klen) == 0) {
				p->slot = &leaf->s;
				p->head = node;
			}
		}
	}
	count_probe(r, steps);
}

/* Links a new leaf for key (position hash pos, segment hash h, head
 * `node`) into a tree whose pool has room for two more nodes. shared: the
 * table is published, so every change is recorded for undo and the leaf
 * gets its node only once it is linked (an undone leaf is left EMPTY, which
 * is how dir_iter and the rebuild scan tell it from a key). Otherwise the
 * table is a rebuild's private copy. Crit-bit insertion: the new internal
 * node goes above the first node that tests a later bit than the one where
 * the key parts from its best match, so every key already in the tree is
 * still reached by its own bits, before and after the one linking store. */
static void tree_insert(struct shm_root *r, struct shm_pool *p, uint64_t seed, uint64_t pos, uint64_t h,
			const void *key, size_t klen, uint64_t node, bool shared)
{
	uint64_t li = ++p->used, steps = 0;
	struct shm_onode *leaf = pool_node(p, li);
	atomic_store_explicit(&leaf->s.hash, h, memory_order_relaxed);
	atomic_store_explicit(&leaf->s.node, shared ? SHM_SLOT_EMPTY : node, memory_order_relaxed);
	atomic_store_explicit(&leaf->child[0], 0, memory_order_relaxed);
	atomic_store_explicit(&leaf->child[1], 0, memory_order_relaxed);
	leaf->bit = SHM_CB_LEAF;
	leaf->reserved = 0;
	_Atomic uint64_t *link = &p->root;
	uint64_t top = li;
	struct shm_onode *best = tree_best(p, pos, key, klen, &steps);
	if (best) {
		uint64_t bpos =
			shm_table_pos(seed, atomic_load_explicit(&best->s.hash, memory_order_relaxed));
		uint32_t c;
		if (bpos != pos) {
			c = (uint32_t)__builtin_clzll(pos ^ bpos);
		} else {
			/* A full collision of position hashes: the length and
			 * the bytes decide. */
			const struct shm_ver *bv =
				shm_at(r, atomic_load_explicit(&best->s.node, memory_order_relaxed));
			c = shm_cb_crit(pos, klen, key, bpos, bv->key_len, ver_key(bv));
		}
		uint64_t ii = ++p->used;
		struct shm_onode *in = pool_node(p, ii);
		atomic_store_explicit(&in->s.hash, 0, memory_order_relaxed);
		atomic_store_explicit(&in->s.node, 0, memory_order_relaxed);
		in->bit = c;
		in->reserved = 0;
		for (;;) {
			struct shm_onode *nd = pool_node(p, atomic_load_explicit(link, memory_order_relaxed));
			if (nd->bit == SHM_CB_LEAF || nd->bit > c)
				break;
			link = &nd->child[shm_cb_bit(pos, klen, key, nd->bit)];
			steps++;
		}
		unsigned dir = shm_cb_bit(pos, klen, key, c);
		atomic_store_explicit(&in->child[dir], li, memory_order_relaxed);
		atomic_store_explicit(&in->child[!dir], atomic_load_explicit(link, memory_order_relaxed),
				      memory_order_relaxed);
		top = ii;
	}
	count_probe(r, steps);
	if (shared) {
		set_shared(r, link, top);
		set_shared(r, &leaf->s.node, node);
		set_plain(r, &p->live, p->live + 1);
	} else {
		atomic_store_explicit(link, top, memory_order_release);
		p->live++;
	}
}

/* Unlinks the leaf whose head is `off` (reclamation: no snapshot can see
 * its key). Its parent is bypassed with one store; a reader standing on
 * either node still finds them as they were, since pool nodes are never
 * reused, and the leaf reads DELETED from then on. */
static bool tree_remove(struct shm_root *r, struct shm_table *t, uint64_t pos, const void *key, size_t klen,
			uint64_t off)
{
	struct shm_pool *p = table_pool(r, t);
	if (!p)
		return false;
	_Atomic uint64_t *link = &p->root, *plink = NULL;
	struct shm_onode *parent = NULL;
	unsigned pdir = 0;
	uint64_t idx = atomic_load_explicit(link, memory_order_relaxed);
	while (idx) {
		struct shm_onode *nd = pool_node(p, idx);
		if (nd->bit == SHM_CB_LEAF) {
			if (atomic_load_explicit(&nd->s.node, memory_order_relaxed) != off)
				return false;
			if (!parent)
				atomic_store_explicit(&p->root, 0, memory_order_release);
			else
				atomic_store_explicit(
					plink,
					atomic_load_explicit(&parent->child[!pdir], memory_order_relaxed),
					memory_order_release);
			atomic_store_explicit(&nd->s.node, SHM_SLOT_DELETED, memory_order_release);
			p->live--;
			(void)r;
			return true;
		}
		plink = link;
		parent = nd;
		pdir = shm_cb_bit(pos, klen, key, nd->bit);
		link = &nd->child[pdir];
		idx = atomic_load_explicit(link, memory_order_relaxed);
	}
	return false;
}

/* ---- tables ------------------------------------------------------------ */

/* A fresh table seed. Batches of getrandom: a worker that has read every
 * seed so far cannot tell the next one, so it cannot prepare keys for a
 * table before that table exists. */
static uint64_t table_seed_new(struct shm_root *r)
{
	if (!r->nrnd) {
		if (getrandom(r->rnd, sizeof(r->rnd), 0) != (ssize_t)sizeof(r->rnd)) {
			/* Unpredictable no more, but still one seed per
			 * table: the tree bounds the work either way. */
			for (unsigned i = 0; i < sizeof(r->rnd) / sizeof(r->rnd[0]); i++) {
				r->rnd_ctr++;
				r->rnd[i] = XXH3_64bits_withSeed(&r->rnd_ctr, sizeof(r->rnd_ctr), r->seed);
			}
		}
		r->nrnd = sizeof(r->rnd) / sizeof(r->rnd[0]);
	}
	return r->rnd[--r->nrnd];
}

static uint64_t table_bytes(uint64_t nslots)
{
	return sizeof(struct shm_table) + nslots * sizeof(struct shm_slot);
}

static uint64_t pool_bytes(uint64_t cap)
{
	return sizeof(struct shm_pool) + cap * sizeof(struct shm_onode);
}

/* Free nodes a table's pool starts with: when they run out the table is
 * rebuilt, and this is what pays for it (table_room). */
#define POOL_MIN_NODES 64u
static uint64_t pool_room(const struct shm_table *t)
{
	return t->nslots / 16 > POOL_MIN_NODES ? t->nslots / 16 : POOL_MIN_NODES;
}

static void pool_init(struct shm_pool *p, uint64_t cap)
{
	p->o = (struct shm_obj){0, SHM_OBJ_POOL, 0};
	p->cap = cap;
	p->used = 0;
	p->live = 0;
	atomic_store_explicit(&p->root, 0, memory_order_relaxed);
	memset(p->nodes, 0, cap * sizeof(struct shm_onode));
}

/* Gives a rebuild's private table a pool with `room` free nodes; nodes
 * keep their indices, so a bigger copy is a memcpy. */
static int pool_private_reserve(struct shm_root *r, struct shm_table *t, uint64_t room)
{
	struct shm_pool *p = table_pool(r, t);
	if (p && p->cap - p->used >= room)
		return 0;
	uint64_t used = p ? p->used : 0, cap = p ? p->cap * 2 : POOL_MIN_NODES, off;
	while (cap < used + room)
		cap *= 2;
	int rc = shm_arena_alloc(r->arena, pool_bytes(cap), false, &off);
	if (rc < 0)
		return rc;
	struct shm_pool *np = shm_at(r, off);
	pool_init(np, cap);
	if (p) {
		memcpy(np->nodes, p->nodes, used * sizeof(struct shm_onode));
		np->used = used;
		np->live = p->live;
		atomic_store_explicit(&np->root, atomic_load_explicit(&p->root, memory_order_relaxed),
				      memory_order_relaxed);
		shm_arena_free(r->arena, atomic_load_explicit(&t->pool, memory_order_relaxed));
	}
	atomic_store_explicit(&t->pool, off, memory_order_relaxed);
	return 0;
}

static int table_new(struct shm_root *r, uint64_t nslots, uint64_t *off)
{
	int rc = alloc_obj(r, table_bytes(nslots), false, SHM_OBJ_TABLE, off);
	if (rc < 0)
		return rc;
	struct shm_table *t = shm_at(r, *off);
	t->nslots = nslots;
	t->used = 0;
	t->live = 0;
	t->seed = table_seed_new(r);
	atomic_store_explicit(&t->pool, 0, memory_order_relaxed);
	memset(t->slots, 0, nslots * sizeof(struct shm_slot));
	return 0;
}

/* Places an entry in a rebuild's private table. */
static int place_private(struct shm_root *r, struct shm_table *t, uint64_t h, uint64_t node)
{
	uint64_t mask = t->nslots - 1, pos = shm_table_pos(t->seed, h), win = window_of(t);
	for (uint64_t i = pos & mask, n = 0; n < win; i = (i + 1) & mask, n++) {
		if (atomic_load_explicit(&t->slots[i].node, memory_order_relaxed) == SHM_SLOT_EMPTY) {
			atomic_store_explicit(&t->slots[i].hash, h, memory_order_relaxed);
			atomic_store_explicit(&t->slots[i].node, node, memory_order_relaxed);
			t->used++;
			return 0;
		}
	}
	int rc = pool_private_reserve(r, t, 2);
	if (rc < 0)
		return rc;
	const struct shm_ver *v = shm_at(r, node);
	tree_insert(r, table_pool(r, t), t->seed, pos, h, ver_key(v), v->key_len, node, false);
	return 0;
}

/* Replaces inc's table by a copy sized for its entries, under a fresh seed,
 * without DELETED slots or unlinked leaves. */
static int table_rebuild(struct shm_root *r, struct shm_inc *inc, uint64_t tag)
{
	uint64_t toff = atomic_load_explicit(&inc->table, memory_order_relaxed);
	struct shm_table *t = shm_at(r, toff);
	struct shm_pool *op = table_pool(r, t);
	uint64_t entries = op ? op->live : 0;
	for (uint64_t i = 0; i < t->nslots; i++)
		if (atomic_load_explicit(&t->slots[i].node, memory_order_relaxed) > SHM_SLOT_DELETED)
			entries++;
	uint64_t n = TABLE_MIN_SLOTS;
	while (n < (entries + 1) * 2)
		n *= 2;
	uint64_t noff;
	int rc = table_new(r, n, &noff);
	if (rc < 0)
		return rc;
	struct shm_table *nt = shm_at(r, noff);
	for (uint64_t i = 0; i < t->nslots; i++) {
		uint64_t node = atomic_load_explicit(&t->slots[i].node, memory_order_relaxed);
		if (node <= SHM_SLOT_DELETED)
			continue;
		rc = place_private(r, nt, atomic_load_explicit(&t->slots[i].hash, memory_order_relaxed),
				   node);
		if (rc < 0)
			return rc; /* nt is retired with the batch's allocations */
	}
	for (uint64_t i = 0; op && i < op->used; i++) {
		struct shm_onode *nd = &op->nodes[i];
		uint64_t node = atomic_load_explicit(&nd->s.node, memory_order_relaxed);
		if (nd->bit != SHM_CB_LEAF || node <= SHM_SLOT_DELETED)
			continue;
		rc = place_private(r, nt, atomic_load_explicit(&nd->s.hash, memory_order_relaxed), node);
		if (rc < 0)
			return rc;
	}
	if (table_pool(r, nt) && (rc = pool_private_reserve(r, nt, pool_room(nt))) < 0)
		return rc;
	nt->live = t->live;
	uint64_t old_bytes = obj_bytes(r, toff);
	set_plain(r, &inc->bytes, inc->bytes - old_bytes + obj_bytes(r, noff));
	/* Release: a reader that loads the new table sees its slots, seed and
	 * tree filled. */
	set_shared(r, &inc->table, noff);
	retire(r, toff, R_FREE, tag, old_bytes, true);
	r->rebuilds++;
	return 0;
}

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
 *     runs out. Every pool starts with at least pool_room(t) >= nslots/16
 *     free nodes and an insert takes at most two, nodes are never given
 *     back, so at least nslots/32 tree inserts (each one an operation a
 *     worker paid for; an undone one counts, its nodes stay used) came
 *     before it. Pool nodes are <= 2 per tree key kept + that room, so
 *     either way the rebuild costs O(1) per operation since the last one:
 *     an adaptive attacker who crafts new collisions after each reseed
 *     still pays one operation per unit of rebuild work, and the pool's
 *     memory stays within a constant of the table's.
 *  3. A precomputed attack dies at the next rebuild: keys that collide under
 *     one table seed are scattered under the next one, which nobody could
 *     read before the table existed (table_seed_new).
 * With random keys the window of 32 overflows for about 0.3% of keys at
 * 3/4 load (measured in a simulation), far below the pool's nslots/32. */
static int table_room(struct shm_root *r, struct shm_inc *inc, uint64_t tag, uint64_t h, const void *key,
		      size_t klen, struct probe *p)
{
	struct shm_table *t = shm_at(r, atomic_load_explicit(&inc->table, memory_order_relaxed));
	struct shm_pool *pool = table_pool(r, t);
	bool crowded = (t->used + (pool ? pool->live : 0) + 1) * 4 > t->nslots * 3;
	bool pool_full = !p->free && pool && pool->used + 2 > pool->cap;
	if (crowded || pool_full) {
		if (!crowded)
			r->reseeds++;
		int rc = table_rebuild(r, inc, tag);
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

/* ---- operations -------------------------------------------------------- */

static uint64_t building(const struct shm_root *r)
{
	return r->tick + 1;
}

static int op_put(struct shm_root *r, const struct shm_op *op, uint64_t h)
{
	uint64_t t = building(r);
	uint64_t incoff = live_inc(r, op->dir, op->dir_len);
	if (!incoff)
		return -ENOENT;
	struct shm_inc *inc = shm_at(r, incoff);
	struct probe p;
	probe_key(r, shm_at(r, atomic_load_explicit(&inc->table, memory_order_relaxed)), h, op->key,
		  op->key_len, &p);
	struct shm_ver *head = p.head ? shm_at(r, p.head) : NULL;
	bool present = head && !(head->flags & SHM_VER_TOMB);
	const void *value = op->value;
	size_t vlen = op->value_len;
	uint8_t counter[8];

	switch (op->kind) {
	case SHM_OP_PUT_IF_ABSENT:
		if (present)
			return -EEXIST;
		break;
	case SHM_OP_PUT_IF_TICK:
		if ((present ? head->tick : 0) != op->expected_tick)
			return -ECANCELED;
		break;
	case SHM_OP_ADD: {
		int64_t cur = 0, sum;
		if (present) {
			if (head->value_len != 8)
				return -EINVAL;
			uint64_t u = 0;
			const uint8_t *b = ver_value(head);
			for (int i = 7; i >= 0; i--)
				u = (u << 8) | b[i];
			memcpy(&cur, &u, sizeof(cur));
		}
		if (__builtin_add_overflow(cur, op->delta, &sum))
			return -ERANGE;
		uint64_t u;
		memcpy(&u, &sum, sizeof(u));
		for (int i = 0; i < 8; i++)
			counter[i] = (uint8_t)(u >> (8 * i));
		value = counter;
		vlen = 8;
		break;
	}
	default:
		break;
	}

	if (!p.slot) {
		int rc = table_room(r, inc, t, h, op->key, op->key_len, &p);
		if (rc < 0)
			return rc;
	}
	uint64_t voff;
	uint64_t vsize = shm_ver_size(op->key_len, vlen);
	int rc = alloc_obj(r, vsize, false, SHM_OBJ_VERSION, &voff);
	if (rc < 0)
		return rc;
	struct shm_ver *v = shm_at(r, voff);
	v->tick = t;
	atomic_store_explicit(&v->older, p.head, memory_order_relaxed);
	v->newer = 0;
	v->owner = incoff;
	v->flags = 0;
	v->key_len = (uint32_t)op->key_len;
	v->value_len = vlen;
	memcpy((uint8_t *)v + sizeof(*v), op->key, op->key_len);
	if (vlen)
		memcpy(ver_value(v), value, vlen);

	struct shm_table *tab = shm_at(r, atomic_load_explicit(&inc->table, memory_order_relaxed));
	uint64_t vbytes = obj_bytes(r, voff);
	if (head) {
		set_plain(r, &head->newer, voff);
		uint64_t hbytes = obj_bytes(r, p.head);
		/* inc->bytes leaves tombstones out: they are freed by their own
		 * entries, never by an rmdir. */
		set_plain(r, &inc->bytes, inc->bytes - (present ? hbytes : 0) + vbytes);
		/* A tombstone is already on a retire list (R_UNLINK); it is
		 * rescheduled as a superseded version when that entry runs. */
		if (!(head->flags & SHM_VER_TOMB))
			retire(r, p.head, R_VERSION, t, hbytes, true);
		set_shared(r, &p.slot->node, voff);
	} else if (p.free) {
		struct shm_slot *s = p.free;
		if (atomic_load_explicit(&s->node, memory_order_relaxed) == SHM_SLOT_EMPTY)
			set_plain(r, &tab->used, tab->used + 1);
		set_plain(r, &inc->bytes, inc->bytes + vbytes);
		set_shared(r, &s->hash, h);
		set_shared(r, &s->node, voff);
	} else {
		set_plain(r, &inc->bytes, inc->bytes + vbytes);
		tree_insert(r, table_pool(r, tab), tab->seed, shm_table_pos(tab->seed, h), h, op->key,
			    op->key_len, voff, true);
	}
	if (!present) {
		set_plain(r, &tab->live, tab->live + 1);
		r->c.keys++;
	}
	return shm_log_append(r, SHM_CHANGE_PUT, op->dir, op->dir_len, op->key, op->key_len, value, vlen);
}

static int op_del(struct shm_root *r, const struct shm_op *op, uint64_t h)
{
	uint64_t t = building(r);
	uint64_t incoff = live_inc(r, op->dir, op->dir_len);
	if (!incoff)
		return -ENOENT;
	struct shm_inc *inc = shm_at(r, incoff);
	struct probe p;
	struct shm_table *tab = shm_at(r, atomic_load_explicit(&inc->table, memory_order_relaxed));
	probe_key(r, tab, h, op->key, op->key_len, &p);
	struct shm_ver *head = p.head ? shm_at(r, p.head) : NULL;
	if (!head || (head->flags & SHM_VER_TOMB))
		return -ENOENT;
	uint64_t voff;
	int rc = alloc_obj(r, shm_ver_size(op->key_len, 0), true, SHM_OBJ_VERSION, &voff);
	if (rc < 0)
		return rc;
	struct shm_ver *v = shm_at(r, voff);
	v->tick = t;
	atomic_store_explicit(&v->older, p.head, memory_order_relaxed);
	v->newer = 0;
	v->owner = incoff;
	v->flags = SHM_VER_TOMB;
	v->key_len = (uint32_t)op->key_len;
	v->value_len = 0;
	memcpy((uint8_t *)v + sizeof(*v), op->key, op->key_len);

	uint64_t hbytes = obj_bytes(r, p.head);
	set_plain(r, &head->newer, voff);
	set_plain(r, &inc->bytes, inc->bytes - hbytes);
	retire(r, p.head, R_VERSION, t, hbytes, true);
	set_shared(r, &p.slot->node, voff);
	retire(r, voff, R_UNLINK, t, 0, true);
	set_plain(r, &tab->live, tab->live - 1);
	r->c.keys--;
	r->c.tombstones++;
	return shm_log_append(r, SHM_CHANGE_DEL, op->dir, op->dir_len, op->key, op->key_len, NULL, 0);
}

/* Publishes a copy of the name array without the names whose incarnations
 * are all gone (compaction, between ticks); the dropped names are chained
 * through retire_next for the caller. */
static int names_compact(struct shm_root *r, uint64_t tag, uint64_t *dropped_list)
{
	uint64_t aoff = atomic_load_explicit(&r->hdr->dirs, memory_order_relaxed);
	struct shm_dir_array *a = shm_at(r, aoff);
	uint64_t n = 0;
	for (uint64_t i = 0; i < a->count; i++)
		if (atomic_load_explicit(&dname_at(r, a->names[i])->head, memory_order_relaxed))
			n++;
	uint64_t noff;
	int rc = shm_arena_alloc(r->arena, names_bytes(n ? n : 1), true, &noff);
	if (rc < 0)
		return rc;
	struct shm_dir_array *na = shm_at(r, noff);
	na->o = (struct shm_obj){0, SHM_OBJ_DIRS, 0};
	uint64_t j = 0;
	for (uint64_t i = 0; i < a->count; i++) {
		uint64_t dn = a->names[i];
		if (atomic_load_explicit(&dname_at(r, dn)->head, memory_order_relaxed) == 0) {
			dname_at(r, dn)->o.retire_next = *dropped_list;
			*dropped_list = dn;
			continue;
		}
		na->names[j++] = dn;
	}
	na->count = j;
	atomic_store_explicit(&r->hdr->dirs, noff, memory_order_release);
	retire(r, aoff, R_FREE, tag, obj_bytes(r, aoff), false);
	return 0;
}

static int op_mkdir(struct shm_root *r, const struct shm_op *op)
{
	uint64_t t = building(r);
	if (live_inc(r, op->dir, op->dir_len))
		return -EEXIST;
	uint64_t dn = find_dname(r, op->dir, op->dir_len);
	bool created_name = !dn;
	int rc;
	if (!dn) {
		rc = alloc_obj(r, sizeof(struct shm_dname) + op->dir_len + 1, false, SHM_OBJ_DNAME, &dn);
		if (rc < 0)
			return rc;
		struct shm_dname *d = dname_at(r, dn);
		atomic_store_explicit(&d->head, 0, memory_order_relaxed);
		d->name_len = (uint32_t)op->dir_len;
		d->reserved = 0;
		memcpy(d->name, op->dir, op->dir_len);
		d->name[op->dir_len] = 0;
		uint64_t at = lower_bound(r, dir_array(r), op->dir, op->dir_len);
		rc = names_insert(r, dn, at);
		if (rc < 0)
			return rc;
	}
	struct shm_dname *d = dname_at(r, dn);
	uint64_t toff, ioff;
	rc = table_new(r, TABLE_MIN_SLOTS, &toff);
	if (rc < 0)
		return rc;
	rc = alloc_obj(r, sizeof(struct shm_inc), false, SHM_OBJ_INC, &ioff);
	if (rc < 0)
		return rc;
	struct shm_inc *inc = shm_at(r, ioff);
	uint64_t older = atomic_load_explicit(&d->head, memory_order_relaxed);
	inc->created = t;
	atomic_store_explicit(&inc->deleted, 0, memory_order_relaxed);
	atomic_store_explicit(&inc->older, older, memory_order_relaxed);
	atomic_store_explicit(&inc->table, toff, memory_order_relaxed);
	inc->dname = dn;
	inc->newer = 0;
	inc->reclaim_pos = 0;
	inc->bytes = obj_bytes(r, toff);
	if (older)
		set_plain(r, &((struct shm_inc *)shm_at(r, older))->newer, ioff);
	else if (!created_name && r->empty_names)
		r->empty_names--;
	set_shared(r, &d->head, ioff);
	r->c.dirs++;
	return shm_log_append(r, SHM_CHANGE_MKDIR, op->dir, op->dir_len, NULL, 0, NULL, 0);
}

static int op_rmdir(struct shm_root *r, const struct shm_op *op)
{
	uint64_t t = building(r);
	const struct shm_dir_array *a = dir_array(r);
	uint64_t removed = 0;
	for (uint64_t i = lower_bound(r, a, op->dir, op->dir_len); i < a->count; i++) {
		struct shm_dname *d = dname_at(r, a->names[i]);
		if (d->name_len < op->dir_len || memcmp(d->name, op->dir, op->dir_len) != 0)
			break;
		uint64_t ioff = atomic_load_explicit(&d->head, memory_order_relaxed);
		if (!ioff)
			continue;
		struct shm_inc *inc = shm_at(r, ioff);
		if (atomic_load_explicit(&inc->deleted, memory_order_relaxed))
			continue;
		int rc = undo_reserve(r, UNDO_SLACK);
		if (rc < 0)
			return rc;
		struct shm_table *tab = shm_at(r, atomic_load_explicit(&inc->table, memory_order_relaxed));
		set_shared(r, &inc->deleted, t);
		inc->reclaim_pos = 0;
		retire(r, ioff, R_DELINC, t, inc->bytes, true);
		r->c.dirs--;
		r->c.keys -= tab->live;
		r->c.tombstones++;
		removed++;
	}
	if (!removed)
		return -ENOENT;
	return shm_log_append(r, SHM_CHANGE_RMDIR, op->dir, op->dir_len, NULL, 0, NULL, 0);
}

/* ---- batches ----------------------------------------------------------- */

bool shm_dir_name_valid(const char *dir, size_t len)
{
	if (!dir || len == 0 || len > SHMSYNC_MAX_DIR || dir[0] != '/' || dir[len - 1] != '/')
		return false;
	if (memchr(dir, 0, len))
		return false;
	/* Components between slashes: not empty, not "." or "..". */
	size_t start = 1;
	for (size_t i = 1; i < len; i++) {
		if (dir[i] != '/')
			continue;
		size_t n = i - start;
		if (n == 0 || (n == 1 && dir[start] == '.') ||
		    (n == 2 && dir[start] == '.' && dir[start + 1] == '.'))
			return false;
		start = i + 1;
	}
	return true;
}

int shm_op_check(const struct shm_op *op)
{
	if (op->kind < SHM_OP_PUT || op->kind > SHM_OP_RMDIR)
		return -EINVAL;
	if (!op->dir || op->dir_len > SHMSYNC_MAX_DIR)
		return op->dir ? -ENAMETOOLONG : -EINVAL;
	if (!shm_dir_name_valid(op->dir, op->dir_len))
		return -EINVAL;
	if (op->kind == SHM_OP_MKDIR || op->kind == SHM_OP_RMDIR)
		return 0;
	if (op->key_len > SHMSYNC_MAX_KEY)
		return -ENAMETOOLONG;
	if (op->key_len == 0 || !op->key)
		return -EINVAL;
	if (op->kind == SHM_OP_PUT || op->kind == SHM_OP_PUT_IF_ABSENT || op->kind == SHM_OP_PUT_IF_TICK) {
		if (op->value_len > SHMSYNC_MAX_VALUE)
			return -EMSGSIZE;
		if (op->value_len && !op->value)
			return -EINVAL;
	}
	return 0;
}

size_t shm_batch_log_bytes(const struct shm_op *ops, size_t n)
{
	size_t bytes = 0;
	for (size_t i = 0; i < n; i++) {
		bool dir_only = ops[i].kind == SHM_OP_MKDIR || ops[i].kind == SHM_OP_RMDIR;
		/* The value the record may carry (an ADD's counter is 8 bytes). */
		size_t value = ops[i].kind == SHM_OP_ADD                ? 8
			       : ops[i].kind == SHM_OP_DEL || dir_only  ? 0
			       : ops[i].value_len <= SHM_LOG_INLINE_MAX ? ops[i].value_len
									: 0;
		/* A record may force a pad record before it at the ring's end. */
		bytes += 2 * shm_logrec_size(ops[i].dir_len, dir_only ? 0 : ops[i].key_len, value);
	}
	return bytes;
}

size_t shm_root_max_batch_log_bytes(const struct shm_root *r)
{
	return r->hdr->log_size / 2;
}

/* A put in a big directory costs two dependent cache misses (the slot,
 * then the head version it points at). Taking them for a window of
 * operations at once overlaps them: hash every key, prefetch the slots,
 * then prefetch the versions the slots point at. */
#define PREFETCH_WINDOW 32

static void prefetch_window(struct shm_root *r, const struct shm_op *ops, size_t n, uint64_t *hashes)
{
	struct shm_table *tabs[PREFETCH_WINDOW];
	uint64_t home[PREFETCH_WINDOW];
	const char *last_dir = NULL;
	size_t last_len = 0;
	struct shm_table *last_tab = NULL;
	for (size_t i = 0; i < n; i++) {
		tabs[i] = NULL;
		const struct shm_op *op = &ops[i];
		if (op->kind == SHM_OP_MKDIR || op->kind == SHM_OP_RMDIR)
			continue;
		hashes[i] = shm_hash(r->seed, op->key, op->key_len);
		if (!last_dir || last_len != op->dir_len || memcmp(last_dir, op->dir, last_len) != 0) {
			uint64_t inc = live_inc(r, op->dir, op->dir_len);
			last_dir = op->dir;
			last_len = op->dir_len;
			last_tab =
				inc ? shm_at(r,
					     atomic_load_explicit(&((struct shm_inc *)shm_at(r, inc))->table,
								  memory_order_relaxed))
				    : NULL;
		}
		if ((tabs[i] = last_tab)) {
			home[i] = shm_table_pos(last_tab->seed, hashes[i]) & (last_tab->nslots - 1);
			__builtin_prefetch(&last_tab->slots[home[i]]);
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (!tabs[i])
			continue;
		uint64_t node = atomic_load_explicit(&tabs[i]->slots[home[i]].node, memory_order_relaxed);
		if (node > SHM_SLOT_DELETED)
			__builtin_prefetch(shm_at(r, node));
	}
}

static void undo_to(struct shm_root *r, size_t mark, size_t allocs_mark)
{
	while (r->nundo > mark) {
		struct shm_undo *u = &r->undo[--r->nundo];
		switch (u->kind) {
		case U_SHARED:
			atomic_store_explicit((_Atomic uint64_t *)u->addr, u->old, memory_order_release);
			break;
		case U_PLAIN:
			*(uint64_t *)u->addr = u->old;
			break;
		case U_PUSH:
			unpush(r, (uint64_t)(uintptr_t)u->addr, u->old);
			break;
		case U_NAME_INSERT:
			names_uninsert(r, u->old);
			break;
		case U_PEND_NEW:
			/* Never published: nobody else saw it. */
			shm_arena_free(r->arena, r->pend);
			r->pend = 0;
			r->pend_cap = 0;
			break;
		}
	}
	/* Pushed after the pops above, so the pops took their own entries. */
	uint64_t t = building(r);
	while (r->nundone > allocs_mark) {
		uint64_t off = r->undone_allocs[--r->nundone];
		struct shm_obj *o = shm_at(r, off);
		/* Not a tombstone any more: freeing it must not count one. */
		if (o->kind == SHM_OBJ_VERSION)
			((struct shm_ver *)o)->flags &= ~SHM_VER_TOMB;
		retire(r, off, R_FREE, t, obj_bytes(r, off), false);
	}
}

int shm_commit_begin(struct shm_root *r)
{
	int rc = buckets_cover(r, r->tick + 1);
	if (rc < 0)
		return rc;
	r->building = true;
	r->applied = 0;
	r->log_tick_start = r->log_head;
	return 0;
}

int shm_apply_batch(struct shm_root *r, const struct shm_op *ops, size_t n, size_t *failed_op)
{
	size_t dummy;
	if (!failed_op)
		failed_op = &dummy;
	*failed_op = 0;
	if (!r->building)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int rc = shm_op_check(&ops[i]);
		if (rc < 0) {
			*failed_op = i;
			return rc;
		}
	}
	size_t need = shm_batch_log_bytes(ops, n);
	if (need > shm_root_max_batch_log_bytes(r))
		return -E2BIG;
	if (r->log_head - r->log_tick_start + need > shm_root_max_batch_log_bytes(r))
		return -ENOBUFS;

	r->nundone = 0;
	size_t mark = r->nundo;
	uint64_t log_mark = r->log_head;
	struct shm_counters saved = r->c;
	uint64_t empty_saved = r->empty_names;
	int rc = 0;
	uint64_t hashes[PREFETCH_WINDOW];
	for (size_t i = 0; i < n; i++) {
		if (i % PREFETCH_WINDOW == 0)
			prefetch_window(r, ops + i, n - i < PREFETCH_WINDOW ? n - i : PREFETCH_WINDOW,
					hashes);
		rc = undo_reserve(r, UNDO_SLACK);
		if (rc < 0) {
			*failed_op = i;
			break;
		}
		switch (ops[i].kind) {
		case SHM_OP_MKDIR:
			rc = op_mkdir(r, &ops[i]);
			break;
		case SHM_OP_RMDIR:
			rc = op_rmdir(r, &ops[i]);
			break;
		case SHM_OP_DEL:
			rc = op_del(r, &ops[i], hashes[i % PREFETCH_WINDOW]);
			break;
		default:
			rc = op_put(r, &ops[i], hashes[i % PREFETCH_WINDOW]);
			break;
		}
		if (rc < 0) {
			*failed_op = i;
			break;
		}
	}
	if (rc < 0) {
		undo_to(r, mark, 0);
		r->c.dirs = saved.dirs;
		r->c.keys = saved.keys;
		r->c.tombstones = saved.tombstones;
		r->empty_names = empty_saved;
		r->log_head = log_mark;
		return rc;
	}
	r->nundo = mark;
	r->nundone = 0;
	r->applied++;
	return 0;
}

int shm_commit_publish(struct shm_root *r, uint64_t *tick)
{
	if (!r->building)
		return -EINVAL;
	r->building = false;
	r->nundo = 0;
	if (!r->applied) {
		/* Every batch was undone, and with them the names they added. */
		if (r->pend)
			shm_arena_free(r->arena, r->pend);
		r->pend = r->pend_cap = 0;
		return 0;
	}
	struct shm_hdr *h = r->hdr;
	uint64_t t = r->tick + 1;
	if (r->pend) {
		/* The names this tick added, before the tick that makes them
		 * visible; readers at older ticks may hold the old array. */
		uint64_t old = atomic_load_explicit(&h->dirs, memory_order_relaxed);
		atomic_store_explicit(&h->dirs, r->pend, memory_order_release);
		retire(r, old, R_FREE, t, obj_bytes(r, old), false);
		r->pend = 0;
		r->pend_cap = 0;
	}
	/* Seqlock: readers retry while pub_seq is odd or changed. */
	uint64_t seq = atomic_load_explicit(&h->pub_seq, memory_order_relaxed);
	atomic_store_explicit(&h->pub_seq, seq + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&h->pub_tick, t, memory_order_relaxed);
	atomic_store_explicit(&h->pub_log_end, r->log_head, memory_order_relaxed);
	atomic_store_explicit(&h->pub_seq, seq + 2, memory_order_release);
	/* Every byte of the commit is in place: publish the tick. */
	atomic_store_explicit(&h->tick, t, memory_order_release);
	r->tick = t;
	r->next_safe = 0;
	atomic_store_explicit(&h->stat_bytes_in_use, shm_arena_bytes_in_use(r->arena), memory_order_relaxed);
	atomic_store_explicit(&h->stat_tombstones, r->c.tombstones, memory_order_relaxed);
	if (tick)
		*tick = t;
	return 1;
}

/* ---- reclamation ------------------------------------------------------- */

static void bucket_pop(struct shm_root *r, struct shm_bucket *b, uint64_t bytes)
{
	struct shm_obj *o = shm_at(r, b->head);
	b->head = o->retire_next;
	if (!b->head)
		b->tail = 0;
	b->count--;
	b->bytes -= bytes;
	r->c.retired_objects--;
	r->c.retired_bytes -= bytes;
	o->retire_next = 0;
	if (o->kind == SHM_OBJ_VERSION)
		((struct shm_ver *)o)->flags &= ~SHM_VER_PENDING;
}

/* A tombstone whose tick every reader has passed. */
static void unlink_tombstone(struct shm_root *r, uint64_t off, uint64_t min_epoch,
			     struct shm_reclaim_report *rep)
{
	struct shm_ver *x = shm_at(r, off);
	uint64_t bytes = obj_bytes(r, off);
	if (x->newer) {
		/* Superseded by a put at t2: now an ordinary superseded version. */
		uint64_t t2 = ((struct shm_ver *)shm_at(r, x->newer))->tick;
		if (t2 <= min_epoch)
			free_version(r, off, rep);
		else
			retire(r, off, R_VERSION, t2, bytes, false);
		return;
	}
	struct shm_inc *inc = shm_at(r, x->owner);
	struct shm_table *tab = shm_at(r, atomic_load_explicit(&inc->table, memory_order_relaxed));
	uint64_t pos = shm_table_pos(tab->seed, shm_hash(r->seed, ver_key(x), x->key_len));
	uint64_t mask = tab->nslots - 1, win = window_of(tab);
	bool found = false;
	for (uint64_t i = pos & mask, n = 0; n < win; i = (i + 1) & mask, n++) {
		uint64_t node = atomic_load_explicit(&tab->slots[i].node, memory_order_relaxed);
		if (node == SHM_SLOT_EMPTY)
			break;
		if (node == off) {
			/* No snapshot can see the key: its slot goes, probes pass it. */
			atomic_store_explicit(&tab->slots[i].node, SHM_SLOT_DELETED, memory_order_release);
			found = true;
			break;
		}
	}
	if (!found)
		tree_remove(r, tab, pos, ver_key(x), x->key_len, off);
	/* Readers at the published tick may still stand on it. */
	retire(r, off, R_FREE, r->tick + 1, bytes, false);
}

/* Frees the entries and table of a deleted incarnation, at most `room`
 * entries per call; false when it must be called again. */
static bool delinc_step(struct shm_root *r, struct shm_inc *inc, size_t room, size_t *done,
			struct shm_reclaim_report *rep)
{
	uint64_t toff = atomic_load_explicit(&inc->table, memory_order_relaxed);
	struct shm_table *tab = shm_at(r, toff);
	struct shm_pool *pool = table_pool(r, tab);
	size_t scanned = 0;
	/* Positions past the slots are the pool's nodes: its leaves hold heads
	 * too. */
	uint64_t end = tab->nslots + (pool ? pool->used : 0);
	while (inc->reclaim_pos < end) {
		if (room && *done >= room)
			return false;
		/* Each head is a random cache miss: ask for one 16 slots ahead. */
		if (inc->reclaim_pos + 16 < tab->nslots) {
			uint64_t ahead = atomic_load_explicit(&tab->slots[inc->reclaim_pos + 16].node,
							      memory_order_relaxed);
			if (ahead > SHM_SLOT_DELETED)
				__builtin_prefetch(shm_at(r, ahead), 1);
		}
		uint64_t i = inc->reclaim_pos++, node = SHM_SLOT_EMPTY;
		if (i < tab->nslots) {
			node = atomic_load_explicit(&tab->slots[i].node, memory_order_relaxed);
		} else {
			struct shm_onode *nd = &pool->nodes[i - tab->nslots];
			if (nd->bit == SHM_CB_LEAF)
				node = atomic_load_explicit(&nd->s.node, memory_order_relaxed);
		}
		if (node <= SHM_SLOT_DELETED) {
			/* Empty slots cost a little too: a huge, mostly empty
			 * table must not be scanned in one call. */
			if (++scanned % 64 == 0)
				(*done)++;
			continue;
		}
		struct shm_ver *v = shm_at(r, node);
		/* Versions below the head were retired when superseded and are
		 * freed by their own entries; the head is this entry's to free. */
		if (!(v->flags & SHM_VER_PENDING)) {
			free_version(r, node, rep);
			(*done)++;
		}
	}
	/* Freeing the table is one more object: it must fit the budget. */
	return !room || *done < room;
}

static void delinc_finish(struct shm_root *r, uint64_t ioff, struct shm_reclaim_report *rep)
{
	struct shm_inc *inc = shm_at(r, ioff);
	free_obj(r, atomic_load_explicit(&inc->table, memory_order_relaxed), rep);
	atomic_store_explicit(&inc->table, 0, memory_order_relaxed);
	/* Older incarnations were deleted earlier and are gone already; unlink
	 * this one from its name. Readers at E >= deleted skip it either way. */
	if (inc->newer) {
		struct shm_inc *n = shm_at(r, inc->newer);
		atomic_store_explicit(&n->older, 0, memory_order_release);
	} else {
		struct shm_dname *d = dname_at(r, inc->dname);
		atomic_store_explicit(&d->head, 0, memory_order_release);
		r->empty_names++;
	}
	retire(r, ioff, R_FREE, r->tick + 1, obj_bytes(r, ioff), false);
}

static void free_retired(struct shm_root *r, uint64_t off, struct shm_reclaim_report *rep)
{
	struct shm_obj *o = shm_at(r, off);
	switch (o->kind) {
	case SHM_OBJ_VERSION:
		free_version(r, off, rep);
		break;
	case SHM_OBJ_INC:
		if (atomic_load_explicit(&((struct shm_inc *)o)->deleted, memory_order_relaxed))
			r->c.tombstones--;
		free_obj(r, off, rep);
		break;
	default:
		free_obj(r, off, rep);
		break;
	}
}

static void compact_names(struct shm_root *r)
{
	const struct shm_dir_array *a = dir_array(r);
	if (!r->empty_names || r->empty_names * 16 < a->count)
		return;
	uint64_t dropped = 0;
	if (names_compact(r, r->tick + 1, &dropped) < 0)
		return;
	while (dropped) {
		uint64_t next = ((struct shm_obj *)shm_at(r, dropped))->retire_next;
		retire(r, dropped, R_FREE, r->tick + 1, obj_bytes(r, dropped), false);
		dropped = next;
	}
	r->empty_names = 0;
}

int shm_reclaim(struct shm_root *r, uint64_t min_epoch, uint64_t min_cursor, size_t budget,
		struct shm_reclaim_report *rep)
{
	struct shm_reclaim_report dummy;
	if (!rep)
		rep = &dummy;
	memset(rep, 0, sizeof(*rep));
	if (r->building)
		return -EBUSY;
	r->min_cursor_hint = min_cursor;
	shm_log_reclaim(r, min_cursor, rep);
	uint64_t last = r->tick + 1;
	int rc = buckets_cover(r, last);
	if (rc < 0)
		return rc;
	size_t done = 0;
	/* Entries of the unpublished tag may be freed only if they were
	 * retired before the caller's scan: before this call. */
	uint64_t safe_next = r->next_safe;
	while (r->bk_base <= last && r->bk_base <= min_epoch) {
		uint64_t t = r->bk_base;
		struct shm_bucket *b = bucket(r, t);
		while (b->head && (t < last || safe_next)) {
			if (budget && done >= budget) {
				rep->more = true;
				goto out;
			}
			uint64_t off = b->head;
			struct shm_obj *o = shm_at(r, off);
			unsigned kind = o->retire_kind;
			if (kind == R_DELINC && !delinc_step(r, (struct shm_inc *)o, budget, &done, rep)) {
				rep->more = true;
				goto out;
			}
			uint64_t bytes = kind == R_DELINC   ? ((struct shm_inc *)o)->bytes
					 : kind == R_UNLINK ? 0
							    : obj_bytes(r, off);
			bucket_pop(r, b, bytes);
			if (t == last)
				safe_next--;
			switch (kind) {
			case R_UNLINK:
				unlink_tombstone(r, off, min_epoch, rep);
				break;
			case R_DELINC:
				delinc_finish(r, off, rep);
				break;
			default:
				free_retired(r, off, rep);
				break;
			}
			done++;
		}
		if (b->head || t == last)
			break;
		r->bk_base++;
	}
out:
	compact_names(r);
	r->next_safe = bucket(r, last)->count;
	atomic_store_explicit(&r->hdr->stat_bytes_in_use, shm_arena_bytes_in_use(r->arena),
			      memory_order_relaxed);
	atomic_store_explicit(&r->hdr->stat_tombstones, r->c.tombstones, memory_order_relaxed);
	atomic_store_explicit(&r->hdr->stat_reclaimed_objects, r->reclaimed_objects, memory_order_relaxed);
	atomic_store_explicit(&r->hdr->stat_reclaimed_bytes, r->reclaimed_bytes, memory_order_relaxed);
	return 0;
}

uint64_t shm_retired_bytes(const struct shm_root *r, uint64_t tick)
{
	if (tick < r->bk_base || tick >= r->bk_base + r->bk_cap)
		return 0;
	return r->bk[tick % r->bk_cap].bytes;
}

void shm_retired_bytes_after(struct shm_root *r, const uint64_t *epochs, uint64_t *pinned, size_t n)
{
	/* Prefix sums over the retained tags, then one lookup per epoch:
	 * pinned = total - (bytes with tag <= epoch). */
	uint64_t last = r->tick + 1, base = r->bk_base;
	uint64_t span = last >= base ? last - base + 1 : 0;
	if (span > r->bk_cap)
		span = r->bk_cap;
	/* Kept between calls: with max_read_pin_bytes the root asks after
	 * every commit. */
	if (r->prefix_cap < span + 1) {
		uint64_t *p = realloc(r->prefix, (span + 1) * sizeof(*p));
		if (!p) {
			memset(pinned, 0, n * sizeof(*pinned));
			return;
		}
		r->prefix = p;
		r->prefix_cap = span + 1;
	}
	uint64_t *prefix = r->prefix;
	prefix[0] = 0;
	for (uint64_t k = 0; k < span; k++)
		prefix[k + 1] = prefix[k] + r->bk[(base + k) % r->bk_cap].bytes;
	for (size_t i = 0; i < n; i++) {
		uint64_t e = epochs[i];
		if (e == UINT64_MAX)
			pinned[i] = 0;
		else if (e < base)
			pinned[i] = prefix[span];
		else
			pinned[i] = prefix[span] - prefix[e - base + 1 > span ? span : e - base + 1];
	}
}

int shm_root_ext(struct shm_root *r, size_t size, void **area)
{
	if (r->hdr->ext_off)
		return -EEXIST;
	uint64_t off;
	int rc = shm_arena_alloc(r->arena, size ? size : 8, true, &off);
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
	if (!o.headroom) {
		o.headroom = o.capacity / 64;
		if (o.headroom < ((size_t)256 << 10))
			o.headroom = (size_t)256 << 10;
	}

	struct shm_root *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	rc = shm_seg_create(&r->seg, o.capacity, SHM_HDR_SIZE + o.log_bytes + ((size_t)1 << 20), err);
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
	if (!r->bk) {
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
