/* The key tables of the root: overflow trees, table seeds, pools and
 * rebuilds. Lookups and the room check an insert makes are inline in
 * shm/table.h; why hash flooding stays bounded is argued there, at
 * table_room.
 */
#include <string.h>
#include <sys/random.h>

#include "table.h"

/* ---- overflow trees ---------------------------------------------------- */

/* Links a new leaf for key (position hash pos, segment hash h, head
 * `node`) into a tree whose pool has room for two more nodes. shared: the
 * table is published, so every change is recorded for undo and the leaf
 * gets its node only once it is linked (an undone leaf is left EMPTY, which
 * is how dir_iter and the rebuild scan tell it from a key). Otherwise the
 * table is a rebuild's private copy. Crit-bit insertion: the new internal
 * node goes above the first node that tests a later bit than the one where
 * the key parts from its best match, so every key already in the tree is
 * still reached by its own bits, before and after the one linking store. */
void shm_tree_insert(struct shm_root *r, struct shm_pool *p, uint64_t seed, uint64_t pos, uint64_t h,
		     const void *key, size_t klen, uint64_t node, bool shared, const struct probe *pr)
{
	uint64_t li = ++p->used, steps = 0;
	struct shm_onode *leaf = pool_node(p, li);
	atomic_store_explicit(&leaf->s.word, shared ? SHM_SLOT_EMPTY : shm_slot_make(node, h),
			      memory_order_relaxed);
	atomic_store_explicit(&leaf->child[0], h, memory_order_relaxed); /* a leaf's: its hash */
	atomic_store_explicit(&leaf->child[1], 0, memory_order_relaxed);
	leaf->bit = SHM_CB_LEAF;
	leaf->reserved = 0;
	_Atomic uint64_t *link = &p->root;
	uint64_t top = li;
	struct shm_onode *best = pr ? pr->best : tree_best(p, pos, key, klen, &steps, NULL);
	if (best) {
		uint64_t bpos =
			shm_table_pos(seed, atomic_load_explicit(&best->child[0], memory_order_relaxed));
		uint32_t c;
		if (bpos != pos) {
			c = (uint32_t)__builtin_clzll(pos ^ bpos);
		} else {
			/* A full collision of position hashes: the length and
			 * the bytes decide. */
			const struct shm_ver *bv = shm_at(
				r, shm_slot_node(atomic_load_explicit(&best->s.word, memory_order_relaxed)));
			c = shm_cb_crit(pos, klen, key, bpos, ver_klen(bv), ver_key(bv));
		}
		uint64_t ii = ++p->used;
		struct shm_onode *in = pool_node(p, ii);
		atomic_store_explicit(&in->s.word, 0, memory_order_relaxed);
		in->bit = c;
		in->reserved = 0;
		unsigned known = pr ? pr->path_len : 0;
		if (known) {
			/* The path's nodes test increasing bits and were just
			 * visited: the first past c is where the new node goes,
			 * found with independent, cached loads. */
			unsigned i = 0;
			while (i + 1 < known) {
				const struct shm_onode *nd =
					pool_node(p, atomic_load_explicit(pr->path[i], memory_order_relaxed));
				if (nd->bit > c)
					break;
				i++;
			}
			link = pr->path[i];
		} else {
			for (;;) {
				struct shm_onode *nd =
					pool_node(p, atomic_load_explicit(link, memory_order_relaxed));
				if (nd->bit == SHM_CB_LEAF || nd->bit > c)
					break;
				link = &nd->child[shm_cb_bit(pos, klen, key, nd->bit)];
				steps++;
			}
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
		set_shared(r, &leaf->s.word, shm_slot_make(node, h));
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
bool shm_tree_remove(struct shm_root *r, struct shm_table *t, uint64_t pos, const void *key, size_t klen,
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
			if (shm_slot_node(atomic_load_explicit(&nd->s.word, memory_order_relaxed)) != off)
				return false;
			if (!parent)
				atomic_store_explicit(&p->root, 0, memory_order_release);
			else
				atomic_store_explicit(
					plink,
					atomic_load_explicit(&parent->child[!pdir], memory_order_relaxed),
					memory_order_release);
			atomic_store_explicit(&nd->s.word, SHM_SLOT_DELETED, memory_order_release);
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

/* Gives a rebuild's private table a pool with `room` free nodes; nodes
 * keep their indices, so a bigger copy is a memcpy. exact: the pool the
 * table is published with, used + room nodes; otherwise it doubles, as the
 * rebuild places keys two nodes at a time. */
static int pool_private_reserve(struct shm_root *r, struct shm_table *t, uint64_t room, bool exact)
{
	struct shm_pool *p = table_pool(r, t);
	if (p && p->cap - p->used >= room)
		return 0;
	uint64_t used = p ? p->used : 0, cap = p ? p->cap * 2 : POOL_MIN_NODES, off;
	while (cap < used + room)
		cap *= 2;
	if (exact)
		cap = used + room;
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

int shm_table_new(struct shm_root *r, uint64_t nslots, uint64_t *off)
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

/* Slots a rebuild loads versions ahead of the one it places. */
#define REBUILD_AHEAD 16u

/* The segment hash of the key of the version at node. */
static uint64_t head_hash(struct shm_root *r, uint64_t node)
{
	const struct shm_ver *v = shm_at(r, node);
	return shm_hash(r->seed, ver_key(v), ver_klen(v));
}

/* Places an entry (home slot from shm_table_home) in a rebuild's private
 * table. */
static int place_private(struct shm_root *r, struct shm_table *t, uint64_t h, uint64_t pos, uint64_t home,
			 uint64_t node)
{
	uint64_t win = window_of(t);
	for (uint64_t i = home, n = 0; n < win; i = shm_table_next(i, t->nslots), n++) {
		if (atomic_load_explicit(&t->slots[i].word, memory_order_relaxed) == SHM_SLOT_EMPTY) {
			atomic_store_explicit(&t->slots[i].word, shm_slot_make(node, h),
					      memory_order_relaxed);
			t->used++;
			return 0;
		}
	}
	int rc = pool_private_reserve(r, t, 2, false);
	if (rc < 0)
		return rc;
	const struct shm_ver *v = shm_at(r, node);
	shm_tree_insert(r, table_pool(r, t), t->seed, pos, h, ver_key(v), ver_klen(v), node, false, NULL);
	return 0;
}

/* Regions the heads of a rebuild are grouped by (below). */
#define REBUILD_REGIONS 1024u
/* Tables smaller than this rebuild in slot order: their versions are few
 * enough that the order of the loads does not matter. */
#define REBUILD_SORT_MIN 4096u

/* The head offsets of t's slots, grouped by where they lie in the segment
 * (REBUILD_REGIONS regions, in address order). In the old table's order a
 * rebuild loads versions from all over the segment, a TLB and cache miss
 * each: the last rebuild of a 1M-key load (700K keys) spent 21-87 ns a key
 * hashing, bimodal from run to run on the 2-vCPU guest, against about 12 ns
 * in this order (docs/BENCHMARKS.md, "Issue 13, seventh round"). A counting
 * sort, in scratch taken from the arena and given back when the rebuild
 * ends: its pages are free pages or the arena's growing end, which the next
 * allocations take, so a load touches no page for it that it would not
 * have touched anyway (the 1M-key load's segment ends at the same size).
 * NULL (slot order then) for small tables, or when the arena has no room
 * for the scratch. */
static const uint64_t *heads_by_address(struct shm_root *r, const struct shm_table *t, uint64_t nheads,
					uint64_t *scratch_off, uint64_t *n_out)
{
	*scratch_off = 0;
	if (nheads < REBUILD_SORT_MIN ||
	    shm_arena_alloc(r->arena, nheads * sizeof(uint64_t), false, scratch_off) < 0)
		return NULL;
	uint64_t *out = shm_at(r, *scratch_off);
	unsigned shift = 12;
	while ((r->seg.size >> shift) >= REBUILD_REGIONS)
		shift++;
	uint64_t start[REBUILD_REGIONS] = {0}, n = 0;
	for (uint64_t i = 0; i < t->nslots; i++) {
		uint64_t node = shm_slot_node(atomic_load_explicit(&t->slots[i].word, memory_order_relaxed));
		if (node > SHM_SLOT_DELETED)
			start[node >> shift]++;
	}
	for (unsigned b = 0; b < REBUILD_REGIONS; b++) {
		uint64_t c = start[b];
		start[b] = n;
		n += c;
	}
	for (uint64_t i = 0; i < t->nslots; i++) {
		uint64_t node = shm_slot_node(atomic_load_explicit(&t->slots[i].word, memory_order_relaxed));
		if (node > SHM_SLOT_DELETED)
			out[start[node >> shift]++] = node;
	}
	*n_out = n;
	return out;
}

/* Keys a rebuild places together (their new slots loaded at once). */
#define REBUILD_GROUP 32u

struct rebuild_entry {
	uint64_t h, pos, home, node;
};

static int place_group(struct shm_root *r, struct shm_table *t, const struct rebuild_entry *g, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		__builtin_prefetch(&t->slots[g[i].home], 1);
	for (unsigned i = 0; i < n; i++) {
		int rc = place_private(r, t, g[i].h, g[i].pos, g[i].home, g[i].node);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Replaces inc's table by a copy sized for its entries, under a fresh seed,
 * without DELETED slots or unlinked leaves. */
int shm_table_rebuild(struct shm_root *r, struct shm_inc *inc, uint64_t tag, bool reseed)
{
	uint64_t toff = atomic_load_explicit(&inc->table, memory_order_relaxed);
	struct shm_table *t = shm_at(r, toff);
	struct shm_pool *op = table_pool(r, t);
	uint64_t entries = op ? op->live : 0;
	for (uint64_t i = 0; i < t->nslots; i++)
		if (atomic_load_explicit(&t->slots[i].word, memory_order_relaxed) > SHM_SLOT_DELETED)
			entries++;
	/* Half full: a table grows by half at each rebuild (at 3/4 load,
	 * table_room), so it holds keys at 1/2 to 3/4 of its slots; doubling
	 * to a power of two left it at 1/4 to 3/4, and cost 16.8 bytes a key at
	 * 1M keys against 11.2 (ARCHITECTURE.md, "Memory per key"). Each entry
	 * is moved about twice over the table's growth instead of once and a
	 * half. */
	uint64_t n = (entries + 1) * 2;
	if (n < TABLE_MIN_SLOTS)
		n = TABLE_MIN_SLOTS;
	uint64_t noff;
	int rc = shm_table_new(r, n, &noff);
	if (rc < 0)
		return rc;
	struct shm_table *nt = shm_at(r, noff);
	/* A slot keeps 24 bits of its key's hash, a position needs all 64:
	 * each key is hashed again from its head version, loaded ahead. Keys
	 * are placed in groups whose new slots are loaded together: one by
	 * one, each placement waited for its own miss (88% of the rebuild's
	 * time in a profile of 1M inserts). */
	struct rebuild_entry grp[REBUILD_GROUP];
	unsigned ng = 0;
	uint64_t sorted_off = 0, nsorted = 0;
	const uint64_t *sorted = heads_by_address(r, t, entries - (op ? op->live : 0), &sorted_off, &nsorted);
	uint64_t nscan = sorted ? nsorted : t->nslots;
	for (uint64_t i = 0; i < nscan; i++) {
		if (i + REBUILD_AHEAD < nscan) {
			uint64_t ahead =
				sorted ? sorted[i + REBUILD_AHEAD]
				       : shm_slot_node(atomic_load_explicit(&t->slots[i + REBUILD_AHEAD].word,
									    memory_order_relaxed));
			if (ahead > SHM_SLOT_DELETED)
				__builtin_prefetch(shm_at(r, ahead));
		}
		uint64_t node =
			sorted ? sorted[i]
			       : shm_slot_node(atomic_load_explicit(&t->slots[i].word, memory_order_relaxed));
		if (node <= SHM_SLOT_DELETED)
			continue;
		uint64_t h = head_hash(r, node), pos = shm_table_pos(nt->seed, h);
		grp[ng++] = (struct rebuild_entry){h, pos, shm_table_home(pos, nt->nslots), node};
		if (ng == REBUILD_GROUP) {
			if ((rc = place_group(r, nt, grp, ng)) < 0)
				break; /* nt is retired with the batch's allocations */
			ng = 0;
		}
	}
	if (sorted_off)
		shm_arena_free(r->arena, sorted_off);
	if (rc < 0)
		return rc;
	if ((rc = place_group(r, nt, grp, ng)) < 0)
		return rc;
	for (uint64_t i = 0; op && i < op->used; i++) {
		struct shm_onode *nd = &op->nodes[i];
		uint64_t node = shm_slot_node(atomic_load_explicit(&nd->s.word, memory_order_relaxed));
		if (nd->bit != SHM_CB_LEAF || node <= SHM_SLOT_DELETED)
			continue;
		uint64_t h = atomic_load_explicit(&nd->child[0], memory_order_relaxed);
		uint64_t pos = shm_table_pos(nt->seed, h);
		rc = place_private(r, nt, h, pos, shm_table_home(pos, nt->nslots), node);
		if (rc < 0)
			return rc;
	}
	uint64_t room = reseed && op ? pool_room_after(nt) : pool_room(nt);
	if ((table_pool(r, nt) || (reseed && op)) && (rc = pool_private_reserve(r, nt, room, true)) < 0)
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
