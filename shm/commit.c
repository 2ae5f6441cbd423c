/* Building ticks from batches: each operation changes the live structures
 * and records an undo entry for every shared word it changes, so a failed
 * batch is rolled back without a trace; shm_commit_publish then makes the
 * tick visible. What a commit supersedes is retired here and freed by
 * reclaim.c (the retire rule is stated there).
 */
#include <errno.h>
#include <string.h>

#include "table.h"

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

/* ---- names ------------------------------------------------------------- */

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
static uint64_t live_inc(struct shm_root *r, const char *name, size_t len);

/* live_inc for a key op: the answer for the previous key op's name when
 * the name is the same (a batch's ops mostly share one, and finding it was
 * a binary search and compares per op). Only directory ops change what a
 * name resolves to; they and every new batch forget it. */
static uint64_t live_inc_of(struct shm_root *r, const struct shm_op *op)
{
	if (r->memo_len && r->memo_len == op->dir_len && shm_bytes_eq(r->memo_name, op->dir, op->dir_len))
		return r->memo_inc;
	uint64_t inc = live_inc(r, op->dir, op->dir_len);
	if (op->dir_len <= sizeof(r->memo_name)) {
		memcpy(r->memo_name, op->dir, op->dir_len);
		r->memo_len = op->dir_len;
		r->memo_inc = inc;
	}
	return inc;
}

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

/* ---- operations -------------------------------------------------------- */

static uint64_t building(const struct shm_root *r)
{
	return r->tick + 1;
}

/* A new head version of op's key for the tick being
 * built, chained to `older`. A tombstone (SHM_VER_TOMB) may use the
 * headroom: a delete must go through when the segment is full, it is what
 * frees space. */
static inline int version_new(struct shm_root *r, const struct shm_op *op, uint64_t older, uint32_t flags,
			      const void *value, size_t vlen, uint64_t *voff)
{
	int rc = alloc_obj(r, shm_ver_size(op->key_len, vlen), (flags & SHM_VER_TOMB) != 0, SHM_OBJ_VERSION,
			   voff);
	if (rc < 0)
		return rc;
	struct shm_ver *v = shm_at(r, *voff);
	v->tick = building(r);
	atomic_store_explicit(&v->link, shm_link_make(older, (uint32_t)op->key_len, flags),
			      memory_order_relaxed);
	v->value_len = (uint32_t)vlen;
	memcpy((uint8_t *)v + SHM_VER_HDR, op->key, op->key_len);
	if (vlen)
		memcpy((uint8_t *)v + shm_ver_value_at(op->key_len), value, vlen);
	return 0;
}
static int op_put(struct shm_root *r, const struct shm_op *op, uint64_t h)
{
	uint64_t t = building(r);
	uint64_t incoff = live_inc_of(r, op);
	if (!incoff)
		return -ENOENT;
	struct shm_inc *inc = shm_at(r, incoff);
	struct probe p;
	probe_key(r, shm_at(r, atomic_load_explicit(&inc->table, memory_order_relaxed)), h, op->key,
		  op->key_len, &p);
	struct shm_ver *head = p.head ? shm_at(r, p.head) : NULL;
	bool present = head && !(ver_flags(head) & SHM_VER_TOMB);
	const void *value = op->value;
	size_t vlen = op->value_len;
	uint8_t counter[8];

	switch (op->kind) {
	case SHM_OP_PUT_IF_ABSENT:
		if (present)
			return -EEXIST;
		break;
	case SHM_OP_LOAD:
		/* A snapshot names each key once; an older version with a
		 * newer tick would break the chain's order. */
		if (!r->loading || head || op->expected_tick == 0 || op->expected_tick > t)
			return head ? -EEXIST : -EINVAL;
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
	int rc = version_new(r, op, p.head, 0, value, vlen, &voff);
	if (rc < 0)
		return rc;
	if (op->kind == SHM_OP_LOAD)
		((struct shm_ver *)shm_at(r, voff))->tick = op->expected_tick;

	struct shm_table *tab = shm_at(r, atomic_load_explicit(&inc->table, memory_order_relaxed));
	uint64_t vbytes = ver_bytes(r, voff);
	uint64_t word = shm_slot_make(voff, h);
	if (head) {
		uint64_t hbytes = ver_bytes(r, p.head);
		/* inc->bytes leaves tombstones out: they are freed by their own
		 * entries, never by an rmdir. */
		set_plain(r, &inc->bytes, inc->bytes - (present ? hbytes : 0) + vbytes);
		/* A tombstone is already queued (R_UNLINK): marked superseded,
		 * that entry leaves it to this one. */
		if (!present)
			set_shared(r, &head->link,
				   ver_link(head) | (uint64_t)SHM_VER_SUPERSEDED << SHM_VER_FLAGS_SHIFT);
		retire_ver(r, p.head, R_VERSION, t, hbytes, voff, true);
		set_shared(r, &p.slot->word, word);
	} else if (p.free) {
		struct shm_slot *s = p.free;
		if (atomic_load_explicit(&s->word, memory_order_relaxed) == SHM_SLOT_EMPTY)
			set_plain(r, &tab->used, tab->used + 1);
		set_plain(r, &inc->bytes, inc->bytes + vbytes);
		set_shared(r, &s->word, word);
	} else {
		set_plain(r, &inc->bytes, inc->bytes + vbytes);
		shm_tree_insert(r, table_pool(r, tab), tab->seed, shm_table_pos(tab->seed, h), h, op->key,
				op->key_len, voff, true, &p);
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
	uint64_t incoff = live_inc_of(r, op);
	if (!incoff)
		return -ENOENT;
	struct shm_inc *inc = shm_at(r, incoff);
	struct probe p;
	struct shm_table *tab = shm_at(r, atomic_load_explicit(&inc->table, memory_order_relaxed));
	probe_key(r, tab, h, op->key, op->key_len, &p);
	struct shm_ver *head = p.head ? shm_at(r, p.head) : NULL;
	if (!head || (ver_flags(head) & SHM_VER_TOMB))
		return -ENOENT;
	uint64_t voff;
	int rc = version_new(r, op, p.head, SHM_VER_TOMB, NULL, 0, &voff);
	if (rc < 0)
		return rc;

	uint64_t hbytes = ver_bytes(r, p.head);
	set_plain(r, &inc->bytes, inc->bytes - hbytes);
	retire_ver(r, p.head, R_VERSION, t, hbytes, voff, true);
	set_shared(r, &p.slot->word, shm_slot_make(voff, h));
	retire_ver(r, voff, R_UNLINK, t, 0, incoff, true);
	set_plain(r, &tab->live, tab->live - 1);
	r->c.keys--;
	r->c.tombstones++;
	return shm_log_append(r, SHM_CHANGE_DEL, op->dir, op->dir_len, op->key, op->key_len, NULL, 0);
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
	rc = shm_table_new(r, TABLE_MIN_SLOTS, &toff);
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
		if (rc == 0)
			rc = retire_room(r, UNDO_SLACK);
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
		if (!last_dir || last_len != op->dir_len || !shm_bytes_eq(last_dir, op->dir, last_len)) {
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
			home[i] = shm_table_home(shm_table_pos(last_tab->seed, hashes[i]), last_tab->nslots);
			__builtin_prefetch(&last_tab->slots[home[i]]);
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (!tabs[i])
			continue;
		uint64_t node = shm_slot_node(
			atomic_load_explicit(&tabs[i]->slots[home[i]].word, memory_order_relaxed));
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
			unpush(r, u->old != 0);
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
		struct shm_undone a = r->undone_allocs[--r->nundone];
		if (a.kind == SHM_OBJ_VERSION) {
			/* Not a tombstone any more: freeing it must not count one. */
			ver_set_flags(ver_at(r, a.off), 0, SHM_VER_TOMB);
			retire_ver(r, a.off, R_FREE, t, ver_bytes(r, a.off), 0, false);
		} else {
			retire(r, a.off, R_FREE, t, obj_bytes(r, a.off), false);
		}
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
	const char *checked = NULL; /* the last name that passed, in ops[] */
	size_t checked_len = 0;
	for (size_t i = 0; i < n; i++) {
		int rc;
		bool known = checked && ops[i].dir && ops[i].dir_len == checked_len &&
			     shm_bytes_eq(ops[i].dir, checked, checked_len);
		if (ops[i].kind == SHM_OP_LOAD && r->loading) {
			/* A load is a put to the checks, and only a loading root has it. */
			struct shm_op as_put = ops[i];
			as_put.kind = SHM_OP_PUT;
			rc = shm_op_check_named(&as_put, known);
		} else {
			rc = shm_op_check_named(&ops[i], known);
		}
		if (rc < 0) {
			*failed_op = i;
			return rc;
		}
		checked = ops[i].dir;
		checked_len = ops[i].dir_len;
	}
	size_t need = r->loading ? 0 : shm_batch_log_bytes(ops, n);
	if (need > shm_root_max_batch_log_bytes(r))
		return -E2BIG;
	if (r->log_head - r->log_tick_start + need > shm_root_max_batch_log_bytes(r))
		return -ENOBUFS;

	r->nundone = 0;
	r->memo_len = 0; /* an undone batch may have made or removed names */
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
		if (rc == 0)
			rc = retire_room(r, UNDO_SLACK);
		if (rc < 0) {
			*failed_op = i;
			break;
		}
		switch (ops[i].kind) {
		case SHM_OP_MKDIR:
			r->memo_len = 0;
			rc = op_mkdir(r, &ops[i]);
			break;
		case SHM_OP_RMDIR:
			r->memo_len = 0;
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
	/* Room for what publishing retires (the replaced name array). */
	if (rc == 0 && (rc = retire_room(r, 1)) < 0)
		*failed_op = n ? n - 1 : 0;
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
	/* What every importer reads next: the published words, then this
	 * tick's change-log records. */
	shm_push_lines((const void *)&h->tick, sizeof(h->tick));
	shm_push_lines((const void *)&h->pub_seq, 3 * sizeof(uint64_t));
	shm_log_published(r, t);
	if (tick)
		*tick = t;
	return 1;
}

int shm_root_load_begin(struct shm_root *r, uint64_t tick)
{
	if (tick < 2)
		return -EINVAL;
	/* Fresh: tick 1, nothing retired, nothing in the log. */
	if (r->building || r->loading || r->tick != 1 || r->bk_base != 1 || r->log_head != 0)
		return -EBUSY;
	if (r->rq_tail != r->rq_head)
		return -EBUSY;
	/* The tick being built is `tick`: the retire buckets start there
	 * (all are empty), and every remembered tick ends where the log
	 * starts. */
	r->tick = tick - 1;
	r->bk_base = tick - 1;
	r->loading = true;
	int rc = shm_commit_begin(r);
	if (rc < 0) {
		r->loading = false;
		r->tick = 1;
		r->bk_base = 1;
	}
	return rc;
}

int shm_root_load_end(struct shm_root *r)
{
	if (!r->loading)
		return -EINVAL;
	/* Even an empty state is published at the tick: its followers
	 * number their ticks from there. */
	r->applied++;
	int rc = shm_commit_publish(r, NULL);
	r->loading = false;
	return rc < 0 ? rc : 0;
}
