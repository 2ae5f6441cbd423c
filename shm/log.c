/* The change log: a bounded broadcast ring of self-contained records (kind,
 * tick, directory, key), and the coalesced diff readers build from it.
 *
 * Writer: records of the tick being built are appended past the published
 * end; publishing the tick publishes the end (shm_published_state). Before
 * overwriting old bytes the root stores the new tail (then a release fence),
 * so a reader that copied a range and then finds the tail still at or below
 * the range's start (after an acquire fence) knows its copy is intact.
 * Records of tick t are dropped once every cursor is >= t (shm_reclaim); when
 * the ring is full anyway the oldest records go and the readers that needed
 * them get a reset (counted as overruns).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static uint8_t *ring(struct shm_root *r)
{
	return r->base + r->hdr->log_off;
}

static struct shm_logrec rec_at(struct shm_root *r, uint64_t pos)
{
	struct shm_logrec rec = {0};
	/* A pad record may be only 8 bytes long: read what fits. */
	uint64_t L = r->hdr->log_size, at = pos % L;
	memcpy(&rec, ring(r) + at, L - at < sizeof(rec) ? L - at : sizeof(rec));
	return rec;
}

static void set_tail(struct shm_root *r, uint64_t tail)
{
	atomic_store_explicit(&r->hdr->log_tail, tail, memory_order_relaxed);
	/* The tail must be visible before any byte below it is overwritten. */
	atomic_thread_fence(memory_order_seq_cst);
}

/* Drops records until the tail is at least `want`. */
static void make_room(struct shm_root *r, uint64_t want)
{
	uint64_t tail = atomic_load_explicit(&r->hdr->log_tail, memory_order_relaxed);
	if (tail >= want)
		return;
	while (tail < want) {
		struct shm_logrec rec = rec_at(r, tail);
		if (rec.kind != SHM_LOG_PAD && rec.tick > r->min_cursor_hint)
			r->log_overruns++;
		tail += rec.len;
	}
	set_tail(r, tail);
}

int shm_log_append(struct shm_root *r, int kind, const char *dir, size_t dir_len, const void *key,
		   size_t key_len)
{
	uint64_t L = r->hdr->log_size;
	uint64_t size = shm_logrec_size(dir_len, key_len);
	uint64_t pos = r->log_head, at = pos % L;
	uint64_t pad = at + size > L ? L - at : 0;
	uint64_t end = pos + pad + size;
	if (end > L)
		make_room(r, end - L);
	if (pad) {
		struct shm_logrec p = {.len = (uint32_t)pad, .kind = SHM_LOG_PAD};
		memcpy(ring(r) + at, &p, pad < sizeof(p) ? pad : sizeof(p));
		at = 0;
	}
	uint8_t *dst = ring(r) + at;
	struct shm_logrec rec = {
		.len = (uint32_t)size,
		.kind = (uint16_t)kind,
		.dir_len = (uint16_t)dir_len,
		.tick = r->tick + 1,
		.key_len = (uint32_t)key_len,
	};
	memcpy(dst, &rec, sizeof(rec));
	memcpy(dst + sizeof(rec), dir, dir_len);
	dst[sizeof(rec) + dir_len] = 0;
	if (key_len)
		memcpy(dst + sizeof(rec) + dir_len + 1, key, key_len);
	r->log_head = end;
	return 0;
}

void shm_log_reclaim(struct shm_root *r, uint64_t min_cursor, struct shm_reclaim_report *rep)
{
	uint64_t tail = atomic_load_explicit(&r->hdr->log_tail, memory_order_relaxed), start = tail;
	uint64_t end = atomic_load_explicit(&r->hdr->pub_log_end, memory_order_relaxed);
	while (tail < end) {
		struct shm_logrec rec = rec_at(r, tail);
		if (rec.kind != SHM_LOG_PAD) {
			if (rec.tick > min_cursor)
				break;
			rep->log_records_freed++;
		}
		tail += rec.len;
	}
	if (tail != start) {
		rep->log_bytes_freed += tail - start;
		set_tail(r, tail);
	}
}

/* ---- readers: the coalesced diff --------------------------------------- */

struct event {
	const struct shm_logrec *rec;
	const char *dir;
	const uint8_t *key;
	bool keep;
};

/* A set of (dir, key) byte strings, open addressing; private memory. */
struct set {
	uint64_t *hashes;
	const struct event **items;
	size_t cap, n;
};

static int set_init(struct set *s, size_t expect)
{
	s->cap = 16;
	while (s->cap < expect * 2)
		s->cap *= 2;
	s->n = 0;
	s->hashes = calloc(s->cap, sizeof(*s->hashes));
	s->items = calloc(s->cap, sizeof(*s->items));
	return s->hashes && s->items ? 0 : -ENOMEM;
}

static void set_free(struct set *s)
{
	free(s->hashes);
	free(s->items);
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

int shm_diff(const struct shm_seg *seg, uint64_t from_pos, uint64_t to_tick, uint64_t to_pos,
	     shm_change_fn fn, void *arg)
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

	/* Copy first, validate after: the root may overwrite the ring under us
	 * only after moving the tail past what it overwrites. */
	uint64_t n = to_pos - from_pos, at = from_pos % L;
	uint8_t *buf = malloc(n + 8);
	if (!buf)
		return -ENOMEM;
	uint64_t first = n < L - at ? n : L - at;
	memcpy(buf, ringp + at, first);
	if (first < n)
		memcpy(buf + first, ringp, n - first);
	atomic_thread_fence(memory_order_acquire);
	if (from_pos < atomic_load_explicit(&h->log_tail, memory_order_relaxed)) {
		free(buf);
		return deliver_reset(seg, to_tick, fn, arg);
	}

	/* Parse: every record is checked before use. */
	size_t cap = 64, nev = 0;
	struct event *ev = malloc(cap * sizeof(*ev));
	int rc = ev ? 0 : -ENOMEM;
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
		if (len < sizeof(*rec) || kind < SHM_CHANGE_PUT || kind > SHM_CHANGE_RMDIR ||
		    rec->dir_len > SHMSYNC_MAX_DIR || rec->key_len > SHMSYNC_MAX_KEY ||
		    shm_logrec_size(rec->dir_len, rec->key_len) != len || rec->tick > to_tick ||
		    !shm_dir_name_valid((const char *)(rec + 1), rec->dir_len)) {
			rc = -EIO;
			break;
		}
		if (nev == cap) {
			cap *= 2;
			struct event *ne = realloc(ev, cap * sizeof(*ev));
			if (!ne) {
				rc = -ENOMEM;
				break;
			}
			ev = ne;
		}
		const char *dir = (const char *)(rec + 1);
		ev[nev++] = (struct event){rec, dir, (const uint8_t *)dir + rec->dir_len + 1, false};
		p += len;
	}

	/* Backwards: keep the last change of every item that no later RMDIR
	 * covers. */
	struct set keys = {0}, mkdirs = {0}, rmdirs = {0};
	if (rc == 0 && (set_init(&keys, nev) < 0 || set_init(&mkdirs, nev) < 0 || set_init(&rmdirs, nev) < 0))
		rc = -ENOMEM;
	for (size_t i = nev; rc == 0 && i-- > 0;) {
		struct event *e = &ev[i];
		size_t dl = e->rec->dir_len;
		switch (e->rec->kind) {
		case SHM_CHANGE_PUT:
		case SHM_CHANGE_DEL:
			e->keep = !covered(&rmdirs, e->dir, dl) &&
				  !set_test_and_add(&keys, e->dir, dl, e->key, e->rec->key_len, e);
			break;
		case SHM_CHANGE_MKDIR:
			e->keep = !covered(&rmdirs, e->dir, dl) &&
				  !set_test_and_add(&mkdirs, e->dir, dl, NULL, 0, e);
			break;
		case SHM_CHANGE_RMDIR:
			e->keep = !covered(&rmdirs, e->dir, dl);
			set_test_and_add(&rmdirs, e->dir, dl, NULL, 0, e);
			break;
		}
	}

	/* Forwards: deliver each kept item with its state at to_tick. */
	for (size_t i = 0; rc == 0 && i < nev; i++) {
		struct event *e = &ev[i];
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
	set_free(&keys);
	set_free(&mkdirs);
	set_free(&rmdirs);
	free(ev);
	free(buf);
	return rc;
}
