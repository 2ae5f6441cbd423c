/* Snapshot reads, for readers in any process and for the root.
 *
 * A reader maps the segment read-only and trusts nothing in it: every
 * offset is checked against the published size before it is followed
 * (shm_seg_ptr), every length against its limit, and every walk has a step
 * limit, so a corrupt or reused object yields -EIO, never a fault or a loop.
 * Objects a reader can reach at its announced epoch are not freed while it
 * holds that epoch (the retire rule, shm/reclaim.c).
 */
#include <errno.h>
#include <string.h>

#include "get_hot.h"

struct rd_dirs {
	const uint64_t *names;
	uint64_t count;
};

static int rd_dirs(const struct shm_seg *seg, struct rd_dirs *out)
{
	uint64_t off = atomic_load_explicit(&seg->hdr->dirs, memory_order_acquire);
	const struct shm_dir_array *a = shm_seg_ptr(seg, off, sizeof(*a), 8);
	if (!a)
		return -EIO;
	uint64_t count = RD_ONCE(a->count);
	if (count > (uint64_t)1 << 40 || !shm_seg_ptr(seg, off, sizeof(*a) + count * sizeof(uint64_t), 8))
		return -EIO;
	*out = (struct rd_dirs){a->names, count};
	return 0;
}

struct rd_name {
	const struct shm_dname *d;
	const char *name;
	size_t len;
};

static bool rd_dname(const struct shm_seg *seg, uint64_t off, struct rd_name *out)
{
	const struct shm_dname *d = shm_seg_ptr(seg, off, sizeof(*d), 8);
	if (!d)
		return false;
	uint32_t len = RD_ONCE(d->name_len);
	if (len > SHMSYNC_MAX_DIR || !shm_seg_ptr(seg, off, sizeof(*d) + len + 1, 8))
		return false;
	*out = (struct rd_name){d, d->name, len};
	return true;
}

/* The bytes a lookup may follow offsets into: the published size, loaded
 * once per lookup (it only grows, so an early copy is the stricter bound)
 * and never past this process's mapping, whatever the header says. Checks
 * against it are inline: a get follows two or three offsets, and a call
 * per check was a fifth of its instructions. */
struct rd_span {
	const uint8_t *base;
	uint64_t size;
};

RD_INLINE struct rd_span rd_span(const struct shm_seg *seg)
{
	uint64_t size = atomic_load_explicit(&seg->hdr->size, memory_order_acquire);
	return (struct rd_span){seg->base, size < seg->limit ? size : seg->limit};
}

/* The slots a lookup probes before the overflow tree. */
static uint64_t rd_window(const struct shm_table_ref *t)
{
	return t->nslots < SHM_PROBE_WINDOW ? t->nslots : SHM_PROBE_WINDOW;
}

/* shm_seg_ptr against a loaded span, for 8-aligned objects. */
RD_INLINE const void *rd_at(struct rd_span s, uint64_t off, uint64_t len)
{
	if (off < SHM_HDR_SIZE || off > s.size || len > s.size - off || (off & 7))
		return NULL;
	return s.base + off;
}

/* A version as loaded once: its link word (older, key length, flags) and
 * value length are the checked copies. */
struct rd_ver {
	const struct shm_ver *v;
	const uint8_t *key, *value;
	uint64_t link;
	uint32_t key_len;
	uint64_t value_len;
};

RD_INLINE bool rd_ver_in(struct rd_span s, uint64_t off, struct rd_ver *out)
{
	const struct shm_ver *v = rd_at(s, off, SHM_VER_HDR);
	if (!v)
		return false;
	/* The value usually ends in the next line (a 9-byte key and a 64-byte
	 * value make 96 bytes, 16-aligned): ask for it now, beside the
	 * header's line, not after the caller has the pointer. A hint only. */
	__builtin_prefetch((const uint8_t *)v + 64);
	uint64_t link = atomic_load_explicit(&v->link, memory_order_acquire);
	uint32_t kl = shm_link_klen(link);
	uint64_t vl = RD_ONCE(v->value_len);
	if (kl > SHMSYNC_MAX_KEY || vl > SHMSYNC_MAX_VALUE || !rd_at(s, off, shm_ver_size(kl, vl)))
		return false;
	const uint8_t *p = (const uint8_t *)v;
	*out = (struct rd_ver){v, p + SHM_VER_HDR, p + shm_ver_value_at(kl), link, kl, vl};
	return true;
}

static bool rd_ver(const struct shm_seg *seg, uint64_t off, struct rd_ver *out)
{
	return rd_ver_in(rd_span(seg), off, out);
}

static bool rd_table(const struct shm_seg *seg, uint64_t off, struct shm_table_ref *out)
{
	const struct shm_table *t = shm_seg_ptr(seg, off, sizeof(*t), 8);
	if (!t)
		return false;
	uint64_t n = RD_ONCE(t->nslots);
	if (n == 0 || n > (uint64_t)1 << 36 ||
	    !shm_seg_ptr(seg, off, sizeof(*t) + n * sizeof(struct shm_slot), 8))
		return false;
	*out = (struct shm_table_ref){t->slots, n, RD_ONCE(t->seed), NULL, NULL, 0};
	uint64_t poff = atomic_load_explicit(&t->pool, memory_order_acquire);
	if (!poff)
		return true;
	const struct shm_pool *p = shm_seg_ptr(seg, poff, sizeof(*p), 8);
	if (!p)
		return false;
	uint64_t cap = RD_ONCE(p->cap);
	if (cap == 0 || cap > (uint64_t)1 << 32 ||
	    !shm_seg_ptr(seg, poff, sizeof(*p) + cap * sizeof(struct shm_onode), 8))
		return false;
	out->pool = p;
	out->nodes = p->nodes;
	out->cap = cap;
	return true;
}

/* Index of the first name >= (name, len); -1 on corruption. */
static int64_t rd_lower_bound(const struct shm_seg *seg, const struct rd_dirs *a, const char *name,
			      size_t len)
{
	uint64_t lo = 0, hi = a->count;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		struct rd_name d;
		if (!rd_dname(seg, RD_ONCE(a->names[mid]), &d))
			return -1;
		if (shm_name_cmp(d.name, d.len, name, len) < 0)
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
	struct rd_dirs a;
	if (rd_dirs(seg, &a) < 0)
		return -EIO;
	int64_t i = rd_lower_bound(seg, &a, dir, dir_len);
	if (i < 0)
		return -EIO;
	if ((uint64_t)i >= a.count)
		return -ENOENT;
	struct rd_name d;
	if (!rd_dname(seg, RD_ONCE(a.names[i]), &d))
		return -EIO;
	if (d.len != dir_len || memcmp(d.name, dir, dir_len) != 0)
		return -ENOENT;
	int rc = rd_visible(seg, d.d, epoch, inc);
	return rc < 0 ? rc : rc == 0 ? -ENOENT : 0;
}

/* The table of dir at epoch when the cache does not hold it: into *buf,
 * remembered in the cache where there is one. */
static int rd_dir_table_slow(const struct shm_seg *seg, struct shm_dir_cache *cache, uint64_t epoch,
			     const char *dir, size_t dir_len, struct shm_table_ref *buf)
{
	const struct shm_inc *inc;
	int rc = rd_find_inc(seg, epoch, dir, dir_len, &inc);
	if (rc < 0)
		return rc;
	if (!rd_table(seg, atomic_load_explicit(&inc->table, memory_order_acquire), buf))
		return -EIO;
	if (cache && dir_len <= sizeof(cache->dir)) {
		struct rd_span sp = rd_span(seg);
		cache->epoch = epoch;
		cache->dir_len = dir_len;
		memcpy(cache->dir, dir, dir_len);
		cache->table = *buf;
		cache->base = sp.base;
		cache->size = sp.size;
		cache->hash_seed = seg->hdr->hash_seed;
		cache->window = rd_window(buf);
	}
	return 0;
}

/* Whether the cache (if any) holds the table of dir at epoch. */
RD_INLINE bool rd_cache_holds(const struct shm_dir_cache *cache, uint64_t epoch, const char *dir,
			      size_t dir_len)
{
	return cache && cache->epoch == epoch && epoch && cache->dir_len == dir_len &&
	       shm_bytes_eq(cache->dir, dir, dir_len);
}

/* The table of dir at epoch: the cache's own copy when it holds it, else
 * *buf. */
RD_INLINE int rd_dir_table(const struct shm_seg *seg, struct shm_dir_cache *cache, uint64_t epoch,
			   const char *dir, size_t dir_len, struct shm_table_ref *buf,
			   const struct shm_table_ref **t)
{
	if (rd_cache_holds(cache, epoch, dir, dir_len)) {
		*t = &cache->table;
		return 0;
	}
	*t = buf;
	return rd_dir_table_slow(seg, cache, epoch, dir, dir_len, buf);
}

/* The version of a key chain visible at epoch: 1, 0 if absent, -EIO. */
RD_INLINE int rd_version_at_in(struct rd_span s, const struct rd_ver *head, uint64_t epoch,
			       struct shm_value *out)
{
	struct rd_ver v = *head;
	for (unsigned steps = 0;; steps++) {
		uint64_t tick = RD_ONCE(v.v->tick);
		if (tick <= epoch) {
			if (shm_link_flags(v.link) & SHM_VER_TOMB)
				return 0;
			*out = (struct shm_value){.data = v.value, .len = v.value_len, .tick = tick};
			return 1;
		}
		uint64_t older = shm_link_older(v.link);
		if (!older)
			return 0;
		if (!rd_ver_in(s, older, &v) || steps > SHM_MAX_STEPS)
			return -EIO;
	}
}

static int rd_version_at(const struct shm_seg *seg, struct rd_ver v, uint64_t epoch, struct shm_value *out)
{
	return rd_version_at_in(rd_span(seg), &v, epoch, out);
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

/* The key's head in a checked slot (or leaf): 1 and *v if it is the key,
 * 0 if not, -EIO. */
RD_INLINE int rd_match_word(struct rd_span sp, uint64_t word, uint64_t h, const void *key, size_t key_len,
			    struct rd_ver *v)
{
	uint64_t node = shm_slot_node(word);
	if (node <= SHM_SLOT_DELETED || !shm_slot_tag_is(word, h))
		return 0;
	if (!rd_ver_in(sp, node, v))
		return -EIO;
	return v->key_len == key_len && shm_bytes_eq(v->key, key, key_len);
}

static int rd_match(struct rd_span sp, const struct shm_slot *s, uint64_t h, const void *key, size_t key_len,
		    struct rd_ver *v)
{
	return rd_match_word(sp, atomic_load_explicit(&s->word, memory_order_acquire), h, key, key_len, v);
}

/* The overflow tree's part of rd_lookup: out of line, as only a table
 * whose window filled up has one. */
static int rd_lookup_tree(struct rd_span sp, const struct shm_table_ref *t, uint64_t pos, uint64_t h,
			  const void *key, size_t key_len, struct rd_ver *v, uint64_t *steps)
{
	uint64_t idx = atomic_load_explicit(&t->pool->root, memory_order_acquire);
	for (uint32_t next_bit = 0;;) {
		if (!idx)
			return 0;
		if (idx > t->cap || *steps > t->cap + SHM_PROBE_WINDOW)
			return -EIO;
		++*steps;
		const struct shm_onode *nd = &t->nodes[idx - 1];
		uint32_t bit = RD_ONCE(nd->bit);
		if (bit == SHM_CB_LEAF)
			return rd_match(sp, &nd->s, h, key, key_len, v);
		if (bit < next_bit || bit >= SHM_CB_BITS)
			return -EIO;
		next_bit = bit + 1;
		idx = atomic_load_explicit(&nd->child[shm_cb_bit(pos, key_len, key, bit)],
					   memory_order_acquire);
	}
}

/* Finds a key in a table: the window of slots from its home, then, if every
 * slot there is taken, the overflow tree (layout.h, "Hash flooding"). 1 and
 * *v, 0 if absent, -EIO. Each tree step must test a later bit than the one
 * before and stay in the pool, so a corrupt or reused tree cannot loop. */
RD_INLINE int rd_lookup(struct rd_span sp, const struct shm_table_ref *t, uint64_t h, const void *key,
			size_t key_len, struct rd_ver *v, uint64_t *steps)
{
	uint64_t pos = shm_table_pos(t->seed, h), win = rd_window(t), n = 0;
	for (uint64_t i = shm_table_home(pos, t->nslots); n < win; i = shm_table_next(i, t->nslots)) {
		uint64_t word = atomic_load_explicit(&t->slots[i].word, memory_order_acquire);
		n++;
		int rc = word == SHM_SLOT_EMPTY ? 0 : rd_match_word(sp, word, h, key, key_len, v);
		if (rc || word == SHM_SLOT_EMPTY) {
			*steps += n;
			return rc;
		}
	}
	*steps += n;
	if (!t->pool)
		return 0;
	return rd_lookup_tree(sp, t, pos, h, key, key_len, v, steps);
}

RD_INLINE int get_steps(const struct shm_seg *seg, struct shm_dir_cache *cache, uint64_t epoch,
			const char *dir, size_t dir_len, const void *key, size_t key_len,
			struct shm_value *out, uint64_t *steps)
{
	*steps = 0;
	struct shm_table_ref buf;
	const struct shm_table_ref *t;
	int rc = rd_dir_table(seg, cache, epoch, dir, dir_len, &buf, &t);
	if (rc < 0)
		return rc;
	struct rd_span sp = rd_span(seg);
	struct rd_ver v;
	rc = rd_lookup(sp, t, shm_hash(seg->hdr->hash_seed, key, key_len), key, key_len, &v, steps);
	if (rc <= 0)
		return rc < 0 ? rc : -ENOENT;
	rc = rd_version_at_in(sp, &v, epoch, out);
	return rc < 0 ? rc : rc == 0 ? -ENOENT : 0;
}

int shm_get_steps(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len, const void *key,
		  size_t key_len, struct shm_value *out, uint64_t *steps)
{
	return get_steps(seg, NULL, epoch, dir, dir_len, key, key_len, out, steps);
}

int shm_get(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len, const void *key,
	    size_t key_len, struct shm_value *out)
{
	uint64_t steps;
	return get_steps(seg, NULL, epoch, dir, dir_len, key, key_len, out, &steps);
}

/* Out of line, so that the common get (shm_get_cached's, shmsync_get's)
 * stays small. */
__attribute__((noinline)) int shm_get_general(const struct shm_seg *seg, struct shm_dir_cache *cache,
					      uint64_t epoch, const char *dir, size_t dir_len,
					      const void *key, size_t key_len, struct shm_value *out)
{
	uint64_t steps;
	return get_steps(seg, cache, epoch, dir, dir_len, key, key_len, out, &steps);
}

int shm_get_cached(const struct shm_seg *seg, struct shm_dir_cache *cache, uint64_t epoch, const char *dir,
		   size_t dir_len, const void *key, size_t key_len, struct shm_value *out)
{
	if (rd_cache_holds(cache, epoch, dir, dir_len)) {
		int rc = rd_get_hit(cache, epoch, key, key_len, out);
		if (rc >= 0)
			return rc ? 0 : -ENOENT;
	}
	return shm_get_general(seg, cache, epoch, dir, dir_len, key, key_len, out);
}

/* Keys in flight at once: enough misses to keep the memory system busy
 * (a core tracks a few tens), few enough that a group's slots and versions
 * are still in L1 when the group is finished. */
#define MANY_GROUP 16u

/* Starts loading the first lines of the object at off, if it is in the
 * segment: the real read checks it again, so nothing here is trusted. */
static void rd_prefetch_obj(const struct shm_seg *seg, uint64_t off)
{
	const uint8_t *p = shm_seg_ptr(seg, off, 128, 8);
	if (p) {
		__builtin_prefetch(p);
		__builtin_prefetch(p + 64);
	}
}

/* A group of lookups in three passes, so that each pass's cache misses
 * overlap instead of following one another: hash every key and start
 * loading its home slots; find each key's slot in its window (now cached)
 * and start loading its version; then the ordinary checked lookup, which
 * finds all of it in cache. The passes before the last only prefetch, so
 * what a lookup returns is exactly what shm_get would. */
static int rd_get_group(const struct shm_seg *seg, const struct shm_table_ref *t, uint64_t epoch,
			const shmsync_key *keys, size_t n, struct shm_value *out, int *rcs)
{
	uint64_t h[MANY_GROUP], home[MANY_GROUP];
	uint64_t win = rd_window(t);
	uint64_t seed = seg->hdr->hash_seed;
	for (size_t j = 0; j < n; j++) {
		h[j] = shm_hash(seed, keys[j].data, keys[j].len);
		home[j] = shm_table_home(shm_table_pos(t->seed, h[j]), t->nslots);
		__builtin_prefetch(&t->slots[home[j]]);
	}
	for (size_t j = 0; j < n; j++) {
		for (uint64_t i = home[j], k = 0; k < win; i = shm_table_next(i, t->nslots), k++) {
			uint64_t word = atomic_load_explicit(&t->slots[i].word, memory_order_relaxed);
			uint64_t node = shm_slot_node(word);
			if (node == SHM_SLOT_EMPTY)
				break;
			if (node > SHM_SLOT_DELETED && shm_slot_tag_is(word, h[j])) {
				rd_prefetch_obj(seg, node);
				break;
			}
		}
	}
	int found = 0;
	struct rd_span sp = rd_span(seg);
	for (size_t j = 0; j < n; j++) {
		struct rd_ver v;
		uint64_t steps = 0;
		int rc = rd_lookup(sp, t, h[j], keys[j].data, keys[j].len, &v, &steps);
		if (rc > 0)
			rc = rd_version_at_in(sp, &v, epoch, &out[j]);
		if (rc < 0)
			return rc;
		rcs[j] = rc ? 0 : -ENOENT;
		found += rc;
	}
	return found;
}

int shm_get_many(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len,
		 const shmsync_key *keys, size_t n, struct shm_value *out, int *rcs)
{
	return shm_get_many_cached(seg, NULL, epoch, dir, dir_len, keys, n, out, rcs);
}

int shm_get_many_cached(const struct shm_seg *seg, struct shm_dir_cache *cache, uint64_t epoch,
			const char *dir, size_t dir_len, const shmsync_key *keys, size_t n,
			struct shm_value *out, int *rcs)
{
	struct shm_table_ref buf;
	const struct shm_table_ref *t;
	int rc = rd_dir_table(seg, cache, epoch, dir, dir_len, &buf, &t);
	if (rc == -ENOENT) {
		for (size_t j = 0; j < n; j++)
			rcs[j] = -ENOENT;
		return 0;
	}
	if (rc < 0)
		return rc;
	size_t found = 0;
	for (size_t j = 0; j < n; j += MANY_GROUP) {
		size_t m = n - j < MANY_GROUP ? n - j : MANY_GROUP;
		rc = rd_get_group(seg, t, epoch, keys + j, m, out + j, rcs + j);
		if (rc < 0)
			return rc;
		found += (size_t)rc;
	}
	return found > INT32_MAX ? INT32_MAX : (int)found;
}

int shm_dir_table(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len,
		  struct shm_table_info *out)
{
	const struct shm_inc *inc;
	int rc = rd_find_inc(seg, epoch, dir, dir_len, &inc);
	if (rc < 0)
		return rc;
	struct shm_table_ref t;
	if (!rd_table(seg, atomic_load_explicit(&inc->table, memory_order_acquire), &t))
		return -EIO;
	*out = (struct shm_table_info){t.seed, t.nslots, rd_window(&t), t.cap};
	return 0;
}

uint64_t shm_key_home(const struct shm_seg *seg, uint64_t table_seed, uint64_t nslots, const void *key,
		      size_t key_len)
{
	return shm_table_home(shm_table_pos(table_seed, shm_hash(seg->hdr->hash_seed, key, key_len)), nslots);
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
	struct shm_table_ref t;
	if (!rd_table(seg, atomic_load_explicit(&inc->table, memory_order_acquire), &t))
		return -EIO;
	/* The slots, then the tree's leaves (a key is in one place only; an
	 * unlinked leaf reads EMPTY or DELETED). */
	for (uint64_t i = 0; i < t.nslots + t.cap; i++) {
		const struct shm_slot *s = &t.slots[i];
		if (i >= t.nslots) {
			const struct shm_onode *nd = &t.nodes[i - t.nslots];
			if (RD_ONCE(nd->bit) != SHM_CB_LEAF)
				continue;
			s = &nd->s;
		}
		uint64_t node = shm_slot_node(atomic_load_explicit(&s->word, memory_order_acquire));
		if (node <= SHM_SLOT_DELETED)
			continue;
		struct rd_ver v;
		if (!rd_ver(seg, node, &v))
			return -EIO;
		struct shm_value val;
		rc = rd_version_at(seg, v, epoch, &val);
		if (rc < 0)
			return rc;
		if (rc == 0)
			continue;
		rc = fn(v.key, v.key_len, &val, arg);
		if (rc)
			return rc;
	}
	return 0;
}

int shm_dirs_iter(const struct shm_seg *seg, uint64_t epoch, const char *prefix, size_t prefix_len,
		  shm_dir_fn fn, void *arg)
{
	struct rd_dirs a;
	if (rd_dirs(seg, &a) < 0)
		return -EIO;
	int64_t i = rd_lower_bound(seg, &a, prefix, prefix_len);
	if (i < 0)
		return -EIO;
	for (uint64_t j = (uint64_t)i; j < a.count; j++) {
		struct rd_name d;
		if (!rd_dname(seg, RD_ONCE(a.names[j]), &d))
			return -EIO;
		if (d.len < prefix_len || memcmp(d.name, prefix, prefix_len) != 0)
			break;
		const struct shm_inc *inc;
		int rc = rd_visible(seg, d.d, epoch, &inc);
		if (rc < 0)
			return rc;
		if (rc == 0)
			continue;
		rc = fn(d.name, d.len, arg);
		if (rc)
			return rc;
	}
	return 0;
}

void shm_seg_stats(const struct shm_seg *seg, struct shm_seg_stats *st)
{
	const struct shm_hdr *h = seg->hdr;
	*st = (struct shm_seg_stats){
		.capacity = h->capacity,
		.size = atomic_load_explicit(&h->size, memory_order_relaxed),
		.bytes_in_use = atomic_load_explicit(&h->stat_bytes_in_use, memory_order_relaxed),
		.tombstones = atomic_load_explicit(&h->stat_tombstones, memory_order_relaxed),
		.reclaimed_objects = atomic_load_explicit(&h->stat_reclaimed_objects, memory_order_relaxed),
		.reclaimed_bytes = atomic_load_explicit(&h->stat_reclaimed_bytes, memory_order_relaxed),
	};
}

const void *shm_seg_ext(const struct shm_seg *seg, uint64_t *size)
{
	uint64_t off = seg->hdr->ext_off, n = seg->hdr->ext_size;
	const void *p = off ? shm_seg_ptr(seg, off, n, 8) : NULL;
	if (p && size)
		*size = n;
	return p;
}
