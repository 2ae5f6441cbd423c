/* Snapshot reads, for readers in any process and for the root.
 *
 * A reader maps the segment read-only and trusts nothing in it: every
 * offset is checked against the published size before it is followed
 * (shm_seg_ptr), every length against its limit, and every walk has a step
 * limit, so a corrupt or reused object yields -EIO, never a fault or a loop.
 * Objects a reader can reach at its announced epoch are not freed while it
 * holds that epoch (the retire rule, shm/index.c).
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

static const struct shm_dir_array *rd_dirs(const struct shm_seg *seg)
{
	uint64_t off = atomic_load_explicit(&seg->hdr->dirs, memory_order_acquire);
	const struct shm_dir_array *a = shm_seg_ptr(seg, off, sizeof(*a), 8);
	if (!a || a->count > (uint64_t)1 << 40)
		return NULL;
	return shm_seg_ptr(seg, off, sizeof(*a) + a->count * sizeof(uint64_t), 8);
}

static const struct shm_dname *rd_dname(const struct shm_seg *seg, uint64_t off)
{
	const struct shm_dname *d = shm_seg_ptr(seg, off, sizeof(*d), 8);
	if (!d || d->name_len > SHMSYNC_MAX_DIR)
		return NULL;
	return shm_seg_ptr(seg, off, sizeof(*d) + d->name_len + 1, 8);
}

static const struct shm_ver *rd_ver(const struct shm_seg *seg, uint64_t off)
{
	const struct shm_ver *v = shm_seg_ptr(seg, off, sizeof(*v), 8);
	if (!v || v->key_len > SHMSYNC_MAX_KEY || v->value_len > SHMSYNC_MAX_VALUE)
		return NULL;
	return shm_seg_ptr(seg, off, shm_ver_size(v->key_len, v->value_len), 8);
}

static const struct shm_table *rd_table(const struct shm_seg *seg, uint64_t off)
{
	const struct shm_table *t = shm_seg_ptr(seg, off, sizeof(*t), 8);
	if (!t || t->nslots == 0 || (t->nslots & (t->nslots - 1)) || t->nslots > (uint64_t)1 << 36)
		return NULL;
	return shm_seg_ptr(seg, off, sizeof(*t) + t->nslots * sizeof(struct shm_slot), 8);
}

/* Index of the first name >= (name, len); -1 on corruption. */
static int64_t rd_lower_bound(const struct shm_seg *seg, const struct shm_dir_array *a, const char *name,
			      size_t len)
{
	uint64_t lo = 0, hi = a->count;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		const struct shm_dname *d = rd_dname(seg, a->names[mid]);
		if (!d)
			return -1;
		if (shm_name_cmp(d->name, d->name_len, name, len) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (int64_t)lo;
}

/* The incarnation of d visible at epoch: 1 and *inc, 0 if none, -EIO. */
static int rd_visible(const struct shm_seg *seg, const struct shm_dname *d, uint64_t epoch,
		      const struct shm_inc **inc)
{
	uint64_t off = atomic_load_explicit(&d->head, memory_order_acquire);
	for (unsigned steps = 0; off; steps++) {
		const struct shm_inc *in = shm_seg_ptr(seg, off, sizeof(*in), 8);
		if (!in || steps > SHM_MAX_STEPS)
			return -EIO;
		if (in->created <= epoch) {
			uint64_t del = atomic_load_explicit(&in->deleted, memory_order_acquire);
			if (del && del <= epoch)
				return 0;
			*inc = in;
			return 1;
		}
		off = atomic_load_explicit(&in->older, memory_order_acquire);
	}
	return 0;
}

static int rd_find_inc(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len,
		       const struct shm_inc **inc)
{
	const struct shm_dir_array *a = rd_dirs(seg);
	if (!a)
		return -EIO;
	int64_t i = rd_lower_bound(seg, a, dir, dir_len);
	if (i < 0)
		return -EIO;
	if ((uint64_t)i >= a->count)
		return -ENOENT;
	const struct shm_dname *d = rd_dname(seg, a->names[i]);
	if (!d)
		return -EIO;
	if (d->name_len != dir_len || memcmp(d->name, dir, dir_len) != 0)
		return -ENOENT;
	int rc = rd_visible(seg, d, epoch, inc);
	return rc < 0 ? rc : rc == 0 ? -ENOENT : 0;
}

/* The version of a key chain visible at epoch: 1, 0 if absent, -EIO. */
static int rd_version_at(const struct shm_seg *seg, const struct shm_ver *v, uint64_t epoch,
			 const struct shm_ver **out)
{
	for (unsigned steps = 0;; steps++) {
		if (v->tick <= epoch) {
			if (v->flags & SHM_VER_TOMB)
				return 0;
			*out = v;
			return 1;
		}
		uint64_t older = atomic_load_explicit(&v->older, memory_order_acquire);
		if (!older)
			return 0;
		v = rd_ver(seg, older);
		if (!v || steps > SHM_MAX_STEPS)
			return -EIO;
	}
}

static void fill_value(const struct shm_ver *v, struct shm_value *out)
{
	out->data = (const uint8_t *)v + sizeof(*v) + shm_round8(v->key_len);
	out->len = v->value_len;
	out->tick = v->tick;
}

uint64_t shm_published_tick(const struct shm_seg *seg)
{
	return atomic_load_explicit(&seg->hdr->tick, memory_order_acquire);
}

void shm_published_state(const struct shm_seg *seg, uint64_t *tick, uint64_t *log_end)
{
	const struct shm_hdr *h = seg->hdr;
	for (;;) {
		uint64_t s1 = atomic_load_explicit(&h->pub_seq, memory_order_acquire);
		uint64_t t = atomic_load_explicit(&h->pub_tick, memory_order_relaxed);
		uint64_t e = atomic_load_explicit(&h->pub_log_end, memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		uint64_t s2 = atomic_load_explicit(&h->pub_seq, memory_order_relaxed);
		if (s1 == s2 && !(s1 & 1)) {
			*tick = t;
			*log_end = e;
			return;
		}
	}
}

int shm_get(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len, const void *key,
	    size_t key_len, struct shm_value *out)
{
	const struct shm_inc *inc;
	int rc = rd_find_inc(seg, epoch, dir, dir_len, &inc);
	if (rc < 0)
		return rc;
	const struct shm_table *t = rd_table(seg, atomic_load_explicit(&inc->table, memory_order_acquire));
	if (!t)
		return -EIO;
	uint64_t h = shm_hash(seg->hdr->hash_seed, key, key_len), mask = t->nslots - 1;
	for (uint64_t i = h & mask, n = 0; n < t->nslots; i = (i + 1) & mask, n++) {
		uint64_t node = atomic_load_explicit(&t->slots[i].node, memory_order_acquire);
		if (node == SHM_SLOT_EMPTY)
			return -ENOENT;
		if (node == SHM_SLOT_DELETED ||
		    atomic_load_explicit(&t->slots[i].hash, memory_order_relaxed) != h)
			continue;
		const struct shm_ver *v = rd_ver(seg, node);
		if (!v)
			return -EIO;
		if (v->key_len != key_len || memcmp((const uint8_t *)v + sizeof(*v), key, key_len) != 0)
			continue;
		const struct shm_ver *vis;
		rc = rd_version_at(seg, v, epoch, &vis);
		if (rc <= 0)
			return rc < 0 ? rc : -ENOENT;
		fill_value(vis, out);
		return 0;
	}
	return -ENOENT;
}

int shm_dir_exists(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len)
{
	const struct shm_inc *inc;
	int rc = rd_find_inc(seg, epoch, dir, dir_len, &inc);
	return rc == 0 ? 1 : rc == -ENOENT ? 0 : rc;
}

int shm_dir_iter(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len, shm_key_fn fn,
		 void *arg)
{
	const struct shm_inc *inc;
	int rc = rd_find_inc(seg, epoch, dir, dir_len, &inc);
	if (rc < 0)
		return rc;
	const struct shm_table *t = rd_table(seg, atomic_load_explicit(&inc->table, memory_order_acquire));
	if (!t)
		return -EIO;
	for (uint64_t i = 0; i < t->nslots; i++) {
		uint64_t node = atomic_load_explicit(&t->slots[i].node, memory_order_acquire);
		if (node <= SHM_SLOT_DELETED)
			continue;
		const struct shm_ver *v = rd_ver(seg, node), *vis;
		if (!v)
			return -EIO;
		rc = rd_version_at(seg, v, epoch, &vis);
		if (rc < 0)
			return rc;
		if (rc == 0)
			continue;
		struct shm_value val;
		fill_value(vis, &val);
		rc = fn((const uint8_t *)v + sizeof(*v), v->key_len, &val, arg);
		if (rc)
			return rc;
	}
	return 0;
}

int shm_dirs_iter(const struct shm_seg *seg, uint64_t epoch, const char *prefix, size_t prefix_len,
		  shm_dir_fn fn, void *arg)
{
	const struct shm_dir_array *a = rd_dirs(seg);
	if (!a)
		return -EIO;
	int64_t i = rd_lower_bound(seg, a, prefix, prefix_len);
	if (i < 0)
		return -EIO;
	for (uint64_t j = (uint64_t)i; j < a->count; j++) {
		const struct shm_dname *d = rd_dname(seg, a->names[j]);
		if (!d)
			return -EIO;
		if (d->name_len < prefix_len || memcmp(d->name, prefix, prefix_len) != 0)
			break;
		const struct shm_inc *inc;
		int rc = rd_visible(seg, d, epoch, &inc);
		if (rc < 0)
			return rc;
		if (rc == 0)
			continue;
		rc = fn(d->name, d->name_len, arg);
		if (rc)
			return rc;
	}
	return 0;
}

const void *shm_seg_ext(const struct shm_seg *seg, uint64_t *size)
{
	uint64_t off = seg->hdr->ext_off, n = seg->hdr->ext_size;
	const void *p = off ? shm_seg_ptr(seg, off, n, 8) : NULL;
	if (p && size)
		*size = n;
	return p;
}
