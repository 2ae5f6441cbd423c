/* shmsync demo: the replica a worker builds from the change feed alone, and
 * the snapshot read it is compared with at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "demo.h"

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (!q) {
		fprintf(stderr, "shmsync: demo: out of memory\n");
		_exit(1);
	}
	return q;
}

static size_t dir_lower(const struct replica *r, const char *name)
{
	size_t lo = 0, hi = r->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (strcmp(r->dirs[mid].name, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void dir_free(struct rdir *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->keys[i].k);
	free(d->keys);
	free(d->name);
}

static struct rdir *rep_dir(struct replica *r, const char *name, bool create)
{
	size_t i = dir_lower(r, name);
	if (i < r->n && strcmp(r->dirs[i].name, name) == 0)
		return &r->dirs[i];
	if (!create)
		return NULL;
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 16;
		r->dirs = xrealloc(r->dirs, r->cap * sizeof(*r->dirs));
	}
	memmove(&r->dirs[i + 1], &r->dirs[i], (r->n - i) * sizeof(*r->dirs));
	r->dirs[i] = (struct rdir){0};
	r->dirs[i].name = strdup(name);
	if (!r->dirs[i].name)
		xrealloc(NULL, 0);
	r->n++;
	return &r->dirs[i];
}

static int key_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
	int c = memcmp(a, b, an < bn ? an : bn);
	return c ? c : (an > bn) - (an < bn);
}

static size_t key_lower(const struct rdir *d, const void *k, size_t kn, bool *found)
{
	size_t lo = 0, hi = d->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (key_cmp(d->keys[mid].k, d->keys[mid].kn, k, kn) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < d->n && key_cmp(d->keys[lo].k, d->keys[lo].kn, k, kn) == 0;
	return lo;
}

void rep_put(struct replica *r, const char *dir, const void *k, size_t kn, uint64_t vh)
{
	/* Lenient: a put into a directory the replica lacks creates it. The
	 * final comparison with the snapshot is what judges. */
	struct rdir *d = rep_dir(r, dir, true);
	bool found;
	size_t i = key_lower(d, k, kn, &found);
	if (found) {
		d->keys[i].vh = vh;
		return;
	}
	if (d->n == d->cap) {
		d->cap = d->cap ? 2 * d->cap : 8;
		d->keys = xrealloc(d->keys, d->cap * sizeof(*d->keys));
	}
	memmove(&d->keys[i + 1], &d->keys[i], (d->n - i) * sizeof(*d->keys));
	d->keys[i].k = xrealloc(NULL, kn ? kn : 1);
	memcpy(d->keys[i].k, k, kn);
	d->keys[i].kn = kn;
	d->keys[i].vh = vh;
	d->n++;
}

void rep_del(struct replica *r, const char *dir, const void *k, size_t kn)
{
	struct rdir *d = rep_dir(r, dir, false);
	if (!d)
		return;
	bool found;
	size_t i = key_lower(d, k, kn, &found);
	if (!found)
		return;
	free(d->keys[i].k);
	memmove(&d->keys[i], &d->keys[i + 1], (d->n - i - 1) * sizeof(*d->keys));
	d->n--;
}

/* A new incarnation: empty, whatever the replica had under that name. */
void rep_mkdir(struct replica *r, const char *dir)
{
	struct rdir *d = rep_dir(r, dir, true);
	for (size_t i = 0; i < d->n; i++)
		free(d->keys[i].k);
	d->n = 0;
}

/* Removes dir and every directory whose name starts with it: in name order
 * they follow dir, all together. */
void rep_rmdir(struct replica *r, const char *dir)
{
	size_t len = strlen(dir), i = dir_lower(r, dir), j = i;
	while (j < r->n && strncmp(r->dirs[j].name, dir, len) == 0)
		dir_free(&r->dirs[j++]);
	if (j == i)
		return; /* none (and dirs may still be NULL) */
	memmove(&r->dirs[i], &r->dirs[j], (r->n - j) * sizeof(*r->dirs));
	r->n -= j - i;
}

void rep_clear(struct replica *r)
{
	for (size_t i = 0; i < r->n; i++)
		dir_free(&r->dirs[i]);
	r->n = 0;
}

uint64_t rep_hash(const struct replica *r, uint64_t *nkeys)
{
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		xrealloc(NULL, 0);
	XXH3_64bits_reset(st);
	*nkeys = 0;
	for (size_t i = 0; i < r->n; i++) {
		const struct rdir *d = &r->dirs[i];
		uint64_t n = d->n;
		XXH3_64bits_update(st, d->name, strlen(d->name) + 1);
		XXH3_64bits_update(st, &n, sizeof(n));
		for (size_t j = 0; j < d->n; j++) {
			uint64_t kn = d->keys[j].kn;
			XXH3_64bits_update(st, &kn, sizeof(kn));
			XXH3_64bits_update(st, d->keys[j].k, d->keys[j].kn);
			XXH3_64bits_update(st, &d->keys[j].vh, sizeof(d->keys[j].vh));
		}
		*nkeys += n;
	}
	uint64_t h = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return h;
}

/* ---- reading the snapshot --------------------------------------------------- */

struct snap {
	shmsync_worker *w;
	struct replica *r;
	const char *dir;
	int64_t counter_sum;
	int rc;
};

static int snap_key(const void *k, size_t kn, shmsync_view v, void *arg)
{
	struct snap *s = arg;
	rep_put(s->r, s->dir, k, kn, XXH3_64bits(v.data, v.len));
	if (strcmp(s->dir, COUNTERS_DIR) == 0 && v.len == 8)
		s->counter_sum += (int64_t)get_le64(v.data);
	return 0;
}

static int snap_dir(const char *dir, void *arg)
{
	struct snap *s = arg;
	rep_mkdir(s->r, dir);
	s->dir = dir;
	s->rc = shmsync_dir_iter(s->w, dir, snap_key, s);
	return s->rc < 0 ? 1 : 0;
}

/* The whole state at the worker's snapshot, into r. */
int read_snapshot(shmsync_worker *w, struct replica *r, int64_t *counter_sum)
{
	struct snap s = {w, r, NULL, 0, 0};
	rep_clear(r);
	int rc = shmsync_dirs_iter(w, NULL, snap_dir, &s);
	if (s.rc < 0)
		return s.rc;
	if (rc < 0)
		return rc;
	if (counter_sum)
		*counter_sum = s.counter_sum;
	return 0;
}
