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
 * Retire entries are the root's own (writer.h, struct shm_retired), in one
 * queue in push order, which is tag order: every push is at tick + 1.
 */
#include <string.h>

#include "table.h"

/* ---- freeing ----------------------------------------------------------- */

static void free_bytes(struct shm_root *r, uint64_t off, uint64_t bytes, struct shm_reclaim_report *rep)
{
	shm_arena_free(r->arena, off);
	r->reclaimed_objects++;
	r->reclaimed_bytes += bytes;
	if (rep) {
		rep->objects_freed++;
		rep->bytes_freed += bytes;
	}
}

/* An object with a header (not a version). */
static void free_obj(struct shm_root *r, uint64_t off, struct shm_reclaim_report *rep)
{
	uint64_t bytes = obj_bytes(r, off);
	struct shm_obj *o = shm_at(r, off);
	if (o->kind == SHM_OBJ_TABLE) {
		uint64_t pool = atomic_load_explicit(&((struct shm_table *)o)->pool, memory_order_relaxed);
		if (pool)
			shm_arena_free(r->arena, pool);
	}
	free_bytes(r, off, bytes, rep);
}

/* Frees a version and cuts the link the version that superseded it (newer,
 * 0 for a head) keeps to it. newer is alive: it was retired after this
 * version (writer.h, struct shm_retired), so it is freed after it. Versions
 * older than this one were freed before it, and each cut its link here. */
static void free_version(struct shm_root *r, uint64_t off, uint64_t newer, struct shm_reclaim_report *rep)
{
	struct shm_ver *v = ver_at(r, off);
	if (newer) {
		struct shm_ver *n = ver_at(r, newer);
		uint64_t l = ver_link(n);
		if (shm_link_older(l) == off)
			atomic_store_explicit(&n->link, shm_link_make(0, shm_link_klen(l), shm_link_flags(l)),
					      memory_order_relaxed);
	}
	if (ver_flags(v) & SHM_VER_TOMB)
		r->c.tombstones--;
	free_bytes(r, off, ver_bytes(r, off), rep);
}

/* ---- reclamation ------------------------------------------------------- */

/* A tombstone whose tick every reader has passed; inc holds its key. */
static void unlink_tombstone(struct shm_root *r, uint64_t off, uint64_t incoff)
{
	struct shm_ver *x = ver_at(r, off);
	/* Superseded by a put: its R_VERSION entry, later in the queue, frees
	 * it as an ordinary superseded version. */
	if (ver_flags(x) & SHM_VER_SUPERSEDED)
		return;
	uint64_t bytes = ver_bytes(r, off);
	uint32_t klen = ver_klen(x);
	struct shm_inc *inc = shm_at(r, incoff);
	struct shm_table *tab = shm_at(r, atomic_load_explicit(&inc->table, memory_order_relaxed));
	uint64_t pos = shm_table_pos(tab->seed, shm_hash(r->seed, ver_key(x), klen));
	uint64_t win = window_of(tab);
	bool found = false;
	for (uint64_t i = shm_table_home(pos, tab->nslots), n = 0; n < win;
	     i = shm_table_next(i, tab->nslots), n++) {
		uint64_t node =
			shm_slot_node(atomic_load_explicit(&tab->slots[i].word, memory_order_relaxed));
		if (node == SHM_SLOT_EMPTY)
			break;
		if (node == off) {
			/* No snapshot can see the key: its slot goes, probes pass it. */
			atomic_store_explicit(&tab->slots[i].word, SHM_SLOT_DELETED, memory_order_release);
			found = true;
			break;
		}
	}
	if (!found)
		shm_tree_remove(r, tab, pos, ver_key(x), klen, off);
	/* Readers at the published tick may still stand on it. The entry just
	 * taken made the room. */
	retire_ver(r, off, R_FREE, r->tick + 1, bytes, 0, false);
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
			uint64_t ahead = shm_slot_node(atomic_load_explicit(
				&tab->slots[inc->reclaim_pos + 16].word, memory_order_relaxed));
			if (ahead > SHM_SLOT_DELETED)
				__builtin_prefetch(shm_at(r, ahead), 1);
		}
		uint64_t i = inc->reclaim_pos++, node = SHM_SLOT_EMPTY;
		if (i < tab->nslots) {
			node = shm_slot_node(atomic_load_explicit(&tab->slots[i].word, memory_order_relaxed));
		} else {
			struct shm_onode *nd = &pool->nodes[i - tab->nslots];
			if (nd->bit == SHM_CB_LEAF)
				node = shm_slot_node(atomic_load_explicit(&nd->s.word, memory_order_relaxed));
		}
		if (node <= SHM_SLOT_DELETED) {
			/* Empty slots cost a little too: a huge, mostly empty
			 * table must not be scanned in one call. */
			if (++scanned % 64 == 0)
				(*done)++;
			continue;
		}
		struct shm_ver *v = ver_at(r, node);
		/* Versions below the head were retired when superseded and are
		 * freed by their own entries; the head is this entry's to free. */
		if (!(ver_flags(v) & SHM_VER_PENDING)) {
			free_version(r, node, 0, rep);
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

static void free_retired(struct shm_root *r, const struct shm_retired *e, struct shm_reclaim_report *rep)
{
	if (e->okind == SHM_OBJ_VERSION) {
		free_version(r, e->off, e->aux, rep);
		return;
	}
	struct shm_obj *o = shm_at(r, e->off);
	if (o->kind == SHM_OBJ_INC &&
	    atomic_load_explicit(&((struct shm_inc *)o)->deleted, memory_order_relaxed))
		r->c.tombstones--;
	free_obj(r, e->off, rep);
}

/* Publishes a copy of the name array without the names whose incarnations
 * are all gone (compaction, between ticks), and retires the old array and
 * the dropped names. */
static int names_compact(struct shm_root *r, uint64_t tag)
{
	uint64_t aoff = atomic_load_explicit(&r->hdr->dirs, memory_order_relaxed);
	struct shm_dir_array *a = shm_at(r, aoff);
	uint64_t n = 0;
	for (uint64_t i = 0; i < a->count; i++)
		if (atomic_load_explicit(&dname_at(r, a->names[i])->head, memory_order_relaxed))
			n++;
	int rc = retire_room(r, a->count - n + 1);
	if (rc < 0)
		return rc;
	uint64_t noff;
	rc = shm_arena_alloc(r->arena, names_bytes(n ? n : 1), true, &noff);
	if (rc < 0)
		return rc;
	struct shm_dir_array *na = shm_at(r, noff);
	na->o = (struct shm_obj){0, SHM_OBJ_DIRS, 0};
	uint64_t j = 0;
	for (uint64_t i = 0; i < a->count; i++) {
		uint64_t dn = a->names[i];
		if (atomic_load_explicit(&dname_at(r, dn)->head, memory_order_relaxed))
			na->names[j++] = dn;
	}
	na->count = j;
	atomic_store_explicit(&r->hdr->dirs, noff, memory_order_release);
	for (uint64_t i = 0; i < a->count; i++) {
		uint64_t dn = a->names[i];
		if (!atomic_load_explicit(&dname_at(r, dn)->head, memory_order_relaxed))
			retire(r, dn, R_FREE, tag, obj_bytes(r, dn), false);
	}
	retire(r, aoff, R_FREE, tag, obj_bytes(r, aoff), false);
	return 0;
}

static void compact_names(struct shm_root *r)
{
	const struct shm_dir_array *a = dir_array(r);
	if (!r->empty_names || r->empty_names * 16 < a->count)
		return;
	if (names_compact(r, r->tick + 1) == 0)
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
	while (r->rq_head != r->rq_tail) {
		struct shm_retired e = r->rq[r->rq_head & (r->rq_cap - 1)];
		if (e.tag > min_epoch || (e.tag == last && !safe_next))
			break;
		if (budget && done >= budget) {
			rep->more = true;
			goto out;
		}
		if (e.rkind == R_DELINC && !delinc_step(r, shm_at(r, e.off), budget, &done, rep)) {
			rep->more = true;
			goto out;
		}
		/* Taken off before it is handled: handling may queue it again
		 * (at tick + 1), in the place this frees. */
		r->rq_head++;
		struct shm_bucket *b = bucket(r, e.tag);
		b->count--;
		b->bytes -= e.bytes;
		r->c.retired_objects--;
		r->c.retired_bytes -= e.bytes;
		/* A superseded tombstone stays queued (its R_VERSION entry). */
		if (e.okind == SHM_OBJ_VERSION &&
		    !(e.rkind == R_UNLINK && (ver_flags(ver_at(r, e.off)) & SHM_VER_SUPERSEDED)))
			ver_set_flags(ver_at(r, e.off), 0, SHM_VER_PENDING);
		if (e.tag == last)
			safe_next--;
		switch (e.rkind) {
		case R_UNLINK:
			unlink_tombstone(r, e.off, e.aux);
			break;
		case R_DELINC:
			delinc_finish(r, e.off, rep);
			break;
		default:
			free_retired(r, &e, rep);
			break;
		}
		done++;
	}
	/* Buckets a reclaim has emptied are not looked at again. */
	while (r->bk_base < last && r->bk_base <= min_epoch && bucket(r, r->bk_base)->count == 0)
		r->bk_base++;
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
