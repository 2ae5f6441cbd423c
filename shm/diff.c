/* The reader's side of the change log: the coalesced diff an importer
 * builds from the records between two published positions, and the full
 * state it gets instead when it fell off the log. Runs in any process on a
 * read-only mapping and trusts nothing in it: the bytes are copied first,
 * then every record is checked (lengths, kinds, names, ticks).
 *
 * The root overwrites old bytes only after storing the new tail (then a
 * release fence), so a reader that copied a range and then finds the tail
 * still at or below the range's start (after an acquire fence) knows its
 * copy is intact (log.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct event {
	const struct shm_logrec *rec;
	const char *dir;
	const uint8_t *key;
	bool keep;
	uint32_t value_inline; /* the record's, as checked */
};

/* A set of (dir, key) byte strings, open addressing; private memory. */
struct set {
	uint64_t *hashes;
	const struct event **items;
	size_t cap, n, alloc;
};

/* shm_diff's private buffers, kept between calls by a caller that imports
 * often (a worker): an import of a few changes then allocates nothing. */
struct shm_diff_scratch {
	uint8_t *buf;
	size_t buf_cap;
	struct event *ev;
	size_t ev_cap;
	struct set sets[3];
};

/* What a scratch may keep after a call: a reset-sized diff is not worth
 * holding on to between the small ones. */
#define SCRATCH_KEEP_BYTES (1u << 20)

static int set_init(struct set *s, size_t expect)
{
	size_t cap = 16;
	while (cap < expect * 2)
		cap *= 2;
	if (cap > s->alloc) {
		free(s->hashes);
		free(s->items);
		s->hashes = malloc(cap * sizeof(*s->hashes));
		s->items = malloc(cap * sizeof(*s->items));
		s->alloc = s->hashes && s->items ? cap : 0;
		if (!s->alloc)
			return -ENOMEM;
	}
	s->cap = cap;
	s->n = 0;
	memset(s->hashes, 0, cap * sizeof(*s->hashes));
	return 0;
}

static void set_free(struct set *s)
{
	free(s->hashes);
	free(s->items);
	*s = (struct set){0};
}

void shm_diff_scratch_free(struct shm_diff_scratch *sc)
{
	if (!sc)
		return;
	free(sc->buf);
	free(sc->ev);
	for (int i = 0; i < 3; i++)
		set_free(&sc->sets[i]);
	free(sc);
}

static void scratch_trim(struct shm_diff_scratch *sc)
{
	if (sc->buf_cap > SCRATCH_KEEP_BYTES) {
		free(sc->buf);
		sc->buf = NULL;
		sc->buf_cap = 0;
	}
	if (sc->ev_cap * sizeof(*sc->ev) > SCRATCH_KEEP_BYTES) {
		free(sc->ev);
		sc->ev = NULL;
		sc->ev_cap = 0;
	}
	for (int i = 0; i < 3; i++)
		if (sc->sets[i].alloc * (sizeof(uint64_t) + sizeof(void *)) > SCRATCH_KEEP_BYTES)
			set_free(&sc->sets[i]);
}

static uint64_t item_hash(const char *dir, size_t dlen, const void *key, size_t klen)
{
	return XXH3_64bits_withSeed(key, klen, XXH3_64bits(dir, dlen));
}

/* Looks (dir, key) up; inserts `ev` when absent. Returns true if present. */
static bool set_test_and_add(struct set *s, const char *dir, size_t dlen, const void *key, size_t klen,
			     const struct event *ev)
{
	uint64_t h = item_hash(dir, dlen, key, klen) | 1, mask = s->cap - 1;
	for (uint64_t i = h & mask;; i = (i + 1) & mask) {
		if (!s->hashes[i]) {
			if (ev) {
				s->hashes[i] = h;
				s->items[i] = ev;
				s->n++;
			}
			return false;
		}
		const struct event *e = s->items[i];
		size_t ek = e->rec->kind == SHM_CHANGE_PUT || e->rec->kind == SHM_CHANGE_DEL ? e->rec->key_len
											     : 0;
		if (s->hashes[i] == h && e->rec->dir_len == dlen && ek == klen &&
		    memcmp(e->dir, dir, dlen) == 0 && (!klen || memcmp(e->key, key, klen) == 0))
			return true;
	}
}

/* True if a later RMDIR (in `rmdirs`) covers dir: dir starts with it. */
static bool covered(struct set *rmdirs, const char *dir, size_t dlen)
{
	for (size_t i = 0; i < dlen; i++)
		if (dir[i] == '/' && set_test_and_add(rmdirs, dir, i + 1, NULL, 0, NULL))
			return true;
	return false;
}

struct full_ctx {
	const struct shm_seg *seg;
	uint64_t epoch;
	shm_change_fn fn;
	void *arg;
	const char *dir;
	size_t dir_len;
};

static int full_key(const void *key, size_t key_len, const struct shm_value *v, void *arg)
{
	struct full_ctx *c = arg;
	/* In a full state every item carries the state's tick: what changed
	 * when is exactly what a reset has lost. */
	struct shm_change ch = {
		.tick = c->epoch,
		.kind = SHM_CHANGE_PUT,
		.dir = c->dir,
		.dir_len = c->dir_len,
		.key = key,
		.key_len = key_len,
		.value = v->data,
		.value_len = v->len,
		.version_tick = v->tick,
	};
	return c->fn(&ch, c->arg);
}

static int full_dir(const char *dir, size_t dir_len, void *arg)
{
	struct full_ctx *c = arg;
	struct shm_change ch = {.tick = c->epoch, .kind = SHM_CHANGE_MKDIR, .dir = dir, .dir_len = dir_len};
	int rc = c->fn(&ch, c->arg);
	if (rc)
		return rc;
	c->dir = dir;
	c->dir_len = dir_len;
	rc = shm_dir_iter(c->seg, c->epoch, dir, dir_len, full_key, c);
	return rc == -ENOENT ? 0 : rc;
}

int shm_full_state(const struct shm_seg *seg, uint64_t epoch, shm_change_fn fn, void *arg)
{
	struct shm_change reset = {.tick = epoch, .kind = SHM_CHANGE_RESET, .dir = "", .dir_len = 0};
	int rc = fn(&reset, arg);
	if (rc)
		return rc;
	struct full_ctx c = {seg, epoch, fn, arg, NULL, 0};
	return shm_dirs_iter(seg, epoch, "/", 1, full_dir, &c);
}

static int deliver_reset(const struct shm_seg *seg, uint64_t to_tick, shm_change_fn fn, void *arg)
{
	int rc = shm_full_state(seg, to_tick, fn, arg);
	return rc ? rc : 1;
}

/* The backward pass with hash sets, for diffs of many records. */
static int mark_kept(struct shm_diff_scratch *sc, struct event *ev, size_t nev)
{
	struct set *keys = &sc->sets[0], *mkdirs = &sc->sets[1], *rmdirs = &sc->sets[2];
	if (set_init(keys, nev) < 0 || set_init(mkdirs, nev) < 0 || set_init(rmdirs, nev) < 0)
		return -ENOMEM;
	for (size_t i = nev; i-- > 0;) {
		struct event *e = &ev[i];
		size_t dl = e->rec->dir_len;
		switch (e->rec->kind) {
		case SHM_CHANGE_PUT:
		case SHM_CHANGE_DEL:
			e->keep = !covered(rmdirs, e->dir, dl) &&
				  !set_test_and_add(keys, e->dir, dl, e->key, e->rec->key_len, e);
			break;
		case SHM_CHANGE_MKDIR:
			e->keep = !covered(rmdirs, e->dir, dl) &&
				  !set_test_and_add(mkdirs, e->dir, dl, NULL, 0, e);
			break;
		case SHM_CHANGE_RMDIR:
			e->keep = !covered(rmdirs, e->dir, dl);
			set_test_and_add(rmdirs, e->dir, dl, NULL, 0, e);
			break;
		}
	}
	return 0;
}

/* Up to this many records, the backward pass compares records pairwise:
 * cheaper than hashing and clearing three sets, and an import that follows
 * a worker's own small batch is the latency everyone sees. */
#define SMALL_DIFF 16

static bool same_item(const struct event *a, const struct event *b)
{
	const struct shm_logrec *x = a->rec, *y = b->rec;
	return x->dir_len == y->dir_len && memcmp(a->dir, b->dir, x->dir_len) == 0 &&
	       x->key_len == y->key_len && memcmp(a->key, b->key, x->key_len) == 0;
}

/* The same rule as mark_kept: the last PUT/DEL of a key, the last MKDIR of
 * a directory, and nothing that a later RMDIR of it or of a directory above
 * it covers (a directory name ends with '/', so "above" is a prefix). */
static void mark_kept_small(struct event *ev, size_t nev)
{
	for (size_t i = 0; i < nev; i++) {
		struct event *e = &ev[i];
		int kind = e->rec->kind;
		bool keep = true;
		for (size_t j = i + 1; keep && j < nev; j++) {
			const struct event *l = &ev[j];
			int lk = l->rec->kind;
			if (lk == SHM_CHANGE_RMDIR)
				keep = !(l->rec->dir_len <= e->rec->dir_len &&
					 memcmp(l->dir, e->dir, l->rec->dir_len) == 0);
			else if (lk == SHM_CHANGE_MKDIR && kind == SHM_CHANGE_MKDIR)
				keep = !(l->rec->dir_len == e->rec->dir_len &&
					 memcmp(l->dir, e->dir, l->rec->dir_len) == 0);
			else if ((kind == SHM_CHANGE_PUT || kind == SHM_CHANGE_DEL) &&
				 (lk == SHM_CHANGE_PUT || lk == SHM_CHANGE_DEL))
				keep = !same_item(e, l);
		}
		e->keep = keep;
	}
}

int shm_diff(const struct shm_seg *seg, uint64_t from_pos, uint64_t to_tick, uint64_t to_pos,
	     shm_change_fn fn, void *arg)
{
	struct shm_diff_scratch *sc = NULL;
	int rc = shm_diff_reuse(seg, &sc, from_pos, to_tick, to_pos, fn, arg);
	shm_diff_scratch_free(sc);
	return rc;
}

/* Copies the log bytes [from_pos, from_pos + n) into sc->buf. Copy first,
 * validate after: the root may overwrite the ring under us only after
 * moving the tail past what it overwrites. 0 when the copy is intact, 1
 * when the root overwrote part of it (the reader gets a reset), -ENOMEM. */
static int copy_range(const struct shm_hdr *h, const uint8_t *ringp, uint64_t L, struct shm_diff_scratch *sc,
		      uint64_t from_pos, uint64_t n)
{
	uint64_t at = from_pos % L;
	if (sc->buf_cap < n + 8) {
		free(sc->buf);
		sc->buf_cap = 0;
		if (!(sc->buf = malloc(n + 8)))
			return -ENOMEM;
		sc->buf_cap = n + 8;
	}
	uint8_t *buf = sc->buf;
	uint64_t first = n < L - at ? n : L - at;
	memcpy(buf, ringp + at, first);
	if (first < n)
		memcpy(buf + first, ringp, n - first);
	atomic_thread_fence(memory_order_acquire);
	return from_pos < atomic_load_explicit(&h->log_tail, memory_order_relaxed);
}

/* Parses the n copied bytes into sc->ev (*nev events): every record is
 * checked before use. 0, -EIO or -ENOMEM; the events parsed before an
 * error are left in sc->ev. */
static int parse_records(struct shm_diff_scratch *sc, uint64_t from_pos, uint64_t n, uint64_t L,
			 uint64_t to_tick, size_t *nev_out)
{
	const uint8_t *buf = sc->buf;
	size_t nev = 0;
	int rc = 0;
	if (!sc->ev) {
		sc->ev_cap = 64;
		if (!(sc->ev = malloc(sc->ev_cap * sizeof(*sc->ev)))) {
			sc->ev_cap = 0;
			rc = -ENOMEM;
		}
	}
	struct event *ev = sc->ev;
	for (uint64_t p = 0; rc == 0 && p < n;) {
		const struct shm_logrec *rec = (const void *)(buf + p);
		uint64_t pos_ring = (from_pos + p) % L;
		uint32_t len;
		memcpy(&len, buf + p, sizeof(len));
		if (len < 8 || len % 8 || len > n - p) {
			rc = -EIO;
			break;
		}
		uint16_t kind;
		memcpy(&kind, buf + p + 4, sizeof(kind));
		if (kind == SHM_LOG_PAD) {
			/* A pad must run exactly to the ring's end. */
			if (pos_ring + len != L)
				rc = -EIO;
			p += len;
			continue;
		}
		uint32_t vi = len >= sizeof(*rec) ? rec->value_inline : 0;
		if (len < sizeof(*rec) || kind < SHM_CHANGE_PUT || kind > SHM_CHANGE_RMDIR ||
		    rec->dir_len > SHMSYNC_MAX_DIR || rec->key_len > SHMSYNC_MAX_KEY ||
		    vi > SHM_LOG_INLINE_MAX + 1 || (vi && kind != SHM_CHANGE_PUT) ||
		    shm_logrec_size(rec->dir_len, rec->key_len, vi ? vi - 1 : 0) != len ||
		    rec->tick > to_tick || !shm_dir_name_valid((const char *)(rec + 1), rec->dir_len)) {
			rc = -EIO;
			break;
		}
		if (nev == sc->ev_cap) {
			struct event *ne = realloc(ev, 2 * sc->ev_cap * sizeof(*ev));
			if (!ne) {
				rc = -ENOMEM;
				break;
			}
			sc->ev = ev = ne;
			sc->ev_cap *= 2;
		}
		const char *dir = (const char *)(rec + 1);
		ev[nev++] = (struct event){rec, dir, (const uint8_t *)dir + rec->dir_len + 1, false, vi};
		p += len;
	}
	*nev_out = nev;
	return rc;
}

/* Delivers each kept event with its item's state at to_tick. Returns 0,
 * fn's non-zero value, or shm_get's error. */
static int deliver_kept(const struct shm_seg *seg, const struct event *ev, size_t nev, uint64_t to_tick,
			shm_change_fn fn, void *arg)
{
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < nev; i++) {
		const struct event *e = &ev[i];
		if (!e->keep)
			continue;
		struct shm_change ch = {
			.tick = e->rec->tick,
			.kind = e->rec->kind,
			.dir = e->dir,
			.dir_len = e->rec->dir_len,
		};
		if (ch.kind == SHM_CHANGE_PUT || ch.kind == SHM_CHANGE_DEL) {
			struct shm_value v;
			ch.key = e->key;
			ch.key_len = e->rec->key_len;
			/* The last change of an item that no later RMDIR covers is
			 * its state at to_tick: a DEL is absent there, and a PUT
			 * that carries its value has it. Only a big value is read
			 * from the index. */
			if (ch.kind == SHM_CHANGE_DEL || e->value_inline) {
				if (e->value_inline) {
					ch.value = e->key + ch.key_len;
					ch.value_len = e->value_inline - 1;
				}
				rc = fn(&ch, arg);
				continue;
			}
			int g = shm_get(seg, to_tick, e->dir, ch.dir_len, e->key, ch.key_len, &v);
			if (g == 0) {
				ch.kind = SHM_CHANGE_PUT;
				ch.value = v.data;
				ch.value_len = v.len;
			} else if (g == -ENOENT) {
				ch.kind = SHM_CHANGE_DEL;
			} else {
				rc = g;
				break;
			}
		}
		rc = fn(&ch, arg);
	}
	return rc;
}

void shm_log_prefetch(const struct shm_seg *seg, uint64_t pos)
{
	const struct shm_hdr *h = seg->hdr;
	uint64_t L = h->log_size;
	const uint8_t *ringp = shm_seg_ptr(seg, h->log_off, L, 8);
	if (ringp && L >= 64)
		__builtin_prefetch(ringp + pos % L);
}

void shm_pub_prefetch(const struct shm_seg *seg)
{
	__builtin_prefetch((const void *)&seg->hdr->tick);
}

int shm_diff_reuse(const struct shm_seg *seg, struct shm_diff_scratch **scratch, uint64_t from_pos,
		   uint64_t to_tick, uint64_t to_pos, shm_change_fn fn, void *arg)
{
	const struct shm_hdr *h = seg->hdr;
	uint64_t L = h->log_size;
	const uint8_t *ringp = shm_seg_ptr(seg, h->log_off, L, 8);
	if (!ringp || L < 64 || L % 8)
		return -EIO;
	if (to_pos < from_pos)
		return -EIO;
	if (from_pos == to_pos)
		return 0;
	if (from_pos < atomic_load_explicit(&h->log_tail, memory_order_acquire))
		return deliver_reset(seg, to_tick, fn, arg);
	if (to_pos - from_pos > L)
		return -EIO;
	if (!*scratch && !(*scratch = calloc(1, sizeof(**scratch))))
		return -ENOMEM;
	struct shm_diff_scratch *sc = *scratch;

	uint64_t n = to_pos - from_pos;
	int rc = copy_range(h, ringp, L, sc, from_pos, n);
	if (rc < 0)
		return rc;
	if (rc) {
		scratch_trim(sc);
		return deliver_reset(seg, to_tick, fn, arg);
	}

	size_t nev = 0;
	rc = parse_records(sc, from_pos, n, L, to_tick, &nev);

	/* Backwards: keep the last change of every item that no later RMDIR
	 * covers. */
	if (rc == 0 && nev <= SMALL_DIFF)
		mark_kept_small(sc->ev, nev);
	else if (rc == 0)
		rc = mark_kept(sc, sc->ev, nev);

	/* Forwards: deliver each kept item with its state at to_tick. */
	if (rc == 0)
		rc = deliver_kept(seg, sc->ev, nev, to_tick, fn, arg);
	scratch_trim(sc);
	return rc;
}
