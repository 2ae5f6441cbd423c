/* Reclamation: the retire buckets (entries linked through the retired
 * objects, filled by commit.c) are freed once readers have passed their tag.
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
#include <string.h>

#include "table.h"

/* ---- freeing ----------------------------------------------------------- */

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
		shm_tree_remove(r, tab, pos, ver_key(x), x->key_len, off);
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
