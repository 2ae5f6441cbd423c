/* synctest_conv.h: byte buffers and files, the private model of the state,
 * and the checks of an import stream against it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "synctest_conv.h"

void cv_buf_put(struct cv_buf *b, const void *d, size_t n)
{
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->n + n)
			cap *= 2;
		b->p = realloc(b->p, cap);
		T_ASSERT(b->p != NULL);
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, d, n);
	b->n += n;
}

void cv_buf_free(struct cv_buf *b)
{
	free(b->p);
	*b = (struct cv_buf){0};
}

void cv_file_write(const char *path, const void *d, size_t n)
{
	FILE *f = fopen(path, "wb");
	T_ASSERT(f != NULL);
	T_ASSERT(fwrite(d, 1, n, f) == n);
	T_ASSERT(fclose(f) == 0);
}

struct cv_buf cv_file_read(const char *path)
{
	struct cv_buf b = {0};
	FILE *f = fopen(path, "rb");
	if (!f)
		T_FAIL("%s: %s", path, strerror(errno));
	char tmp[65536];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		cv_buf_put(&b, tmp, n);
	fclose(f);
	return b;
}

static void cv_dir_free(struct cv_dir *d)
{
	for (size_t i = 0; i < d->n; i++) {
		free(d->keys[i].k);
		free(d->keys[i].v);
	}
	free(d->keys);
	free(d->name);
}

void cv_model_clear(struct cv_model *m)
{
	for (size_t i = 0; i < m->n; i++)
		cv_dir_free(&m->dirs[i]);
	m->n = 0;
}

void cv_model_free(struct cv_model *m)
{
	cv_model_clear(m);
	free(m->dirs);
	*m = (struct cv_model){0};
}

/* The index of the first directory >= name. */
static size_t cv_lower(const struct cv_model *m, const char *name)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(m->dirs[mid].name, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct cv_dir *cv_dir_get(const struct cv_model *m, const char *name)
{
	size_t i = cv_lower(m, name);
	return i < m->n && strcmp(m->dirs[i].name, name) == 0 ? &m->dirs[i] : NULL;
}

struct cv_dir *cv_dir_add(struct cv_model *m, const char *name)
{
	size_t i = cv_lower(m, name);
	if (i < m->n && strcmp(m->dirs[i].name, name) == 0)
		return NULL;
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 16;
		m->dirs = realloc(m->dirs, m->cap * sizeof(*m->dirs));
		T_ASSERT(m->dirs != NULL);
	}
	memmove(&m->dirs[i + 1], &m->dirs[i], (m->n - i) * sizeof(*m->dirs));
	m->n++;
	m->dirs[i] = (struct cv_dir){0};
	m->dirs[i].name = strdup(name);
	T_ASSERT(m->dirs[i].name != NULL);
	return &m->dirs[i];
}

size_t cv_rmdir(struct cv_model *m, const char *prefix)
{
	if (!m->n)
		return 0; /* (and no memmove of a NULL array) */
	size_t i = cv_lower(m, prefix), j = i, plen = strlen(prefix);
	while (j < m->n && strncmp(m->dirs[j].name, prefix, plen) == 0)
		cv_dir_free(&m->dirs[j++]);
	memmove(&m->dirs[i], &m->dirs[j], (m->n - j) * sizeof(*m->dirs));
	m->n -= j - i;
	return j - i;
}

bool cv_prefix_exists(const struct cv_model *m, const char *prefix)
{
	size_t i = cv_lower(m, prefix);
	return i < m->n && strncmp(m->dirs[i].name, prefix, strlen(prefix)) == 0;
}

struct cv_key *cv_key_get(const struct cv_dir *d, const void *k, size_t kn)
{
	for (size_t i = 0; i < d->n; i++)
		if (d->keys[i].kn == kn && memcmp(d->keys[i].k, k, kn) == 0)
			return &d->keys[i];
	return NULL;
}

void *cv_dup(const void *p, size_t n)
{
	void *d = malloc(n ? n : 1);
	T_ASSERT(d != NULL);
	if (n)
		memcpy(d, p, n);
	return d;
}

void cv_key_set(struct cv_dir *d, const void *k, size_t kn, const void *v, size_t vn, uint64_t tick)
{
	struct cv_key *e = cv_key_get(d, k, kn);
	if (!e) {
		if (d->n == d->cap) {
			d->cap = d->cap ? d->cap * 2 : 8;
			d->keys = realloc(d->keys, d->cap * sizeof(*d->keys));
			T_ASSERT(d->keys != NULL);
		}
		e = &d->keys[d->n++];
		e->k = cv_dup(k, kn);
		e->kn = (uint32_t)kn;
		e->v = NULL;
	}
	free(e->v);
	e->v = cv_dup(v, vn);
	e->vn = (uint32_t)vn;
	e->tick = tick;
}

bool cv_key_del(struct cv_dir *d, const void *k, size_t kn)
{
	struct cv_key *e = cv_key_get(d, k, kn);
	if (!e)
		return false;
	free(e->k);
	free(e->v);
	*e = d->keys[--d->n];
	return true;
}

size_t cv_model_keys(const struct cv_model *m)
{
	size_t n = 0;
	for (size_t i = 0; i < m->n; i++)
		n += m->dirs[i].n;
	return n;
}

int cv_apply(struct cv_model *m, const shmsync_change *c, char *err, size_t errlen)
{
	struct cv_dir *d;
	switch (c->kind) {
	case SHMSYNC_PUT:
		if (!(d = cv_dir_get(m, c->dir))) {
			snprintf(err, errlen,
				 "PUT %s%.*s at tick %llu into a directory the stream never created", c->dir,
				 (int)c->key_len, (const char *)c->key, (unsigned long long)c->tick);
			return -1;
		}
		cv_key_set(d, c->key, c->key_len, c->value, c->value_len, c->tick);
		return 0;
	case SHMSYNC_DEL:
		if (!(d = cv_dir_get(m, c->dir))) {
			snprintf(err, errlen,
				 "DEL %s%.*s at tick %llu in a directory the stream never created", c->dir,
				 (int)c->key_len, (const char *)c->key, (unsigned long long)c->tick);
			return -1;
		}
		cv_key_del(d, c->key, c->key_len);
		return 0;
	case SHMSYNC_MKDIR:
		if (!cv_dir_add(m, c->dir)) {
			snprintf(err, errlen,
				 "MKDIR %s at tick %llu, but the stream has it already (no RMDIR)", c->dir,
				 (unsigned long long)c->tick);
			return -1;
		}
		return 0;
	case SHMSYNC_RMDIR:
		cv_rmdir(m, c->dir);
		return 0;
	case SHMSYNC_RESET:
		cv_model_clear(m);
		return 0;
	default:
		snprintf(err, errlen, "unknown change kind %d", c->kind);
		return -1;
	}
}

static int cv_snap_dir(const char *dir, void *arg)
{
	struct cv_model *m = arg;
	/* dirs_iter gives name order: append. */
	T_ASSERT(m->n == 0 || strcmp(m->dirs[m->n - 1].name, dir) < 0);
	T_ASSERT(cv_dir_add(m, dir) != NULL);
	return 0;
}

static int cv_snap_key(const void *k, size_t kn, shmsync_view v, void *arg)
{
	struct cv_dir *d = arg;
	T_ASSERT(cv_key_get(d, k, kn) == NULL); /* a key listed twice */
	cv_key_set(d, k, kn, v.data, v.len, v.tick);
	return 0;
}

void cv_snapshot(shmsync_worker *w, struct cv_model *m)
{
	cv_model_clear(m);
	T_OK(shmsync_dirs_iter(w, "/", cv_snap_dir, m));
	for (size_t i = 0; i < m->n; i++)
		T_OK(shmsync_dir_iter(w, m->dirs[i].name, cv_snap_key, &m->dirs[i]));
}

void cv_fmt_bytes(char *out, size_t len, const void *p, size_t n)
{
	const uint8_t *b = p;
	size_t o = 0;
	for (size_t i = 0; i < n && o + 5 < len; i++)
		if (b[i] >= 32 && b[i] < 127)
			out[o++] = (char)b[i];
		else
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", b[i]);
	if (o < len)
		out[o] = 0;
}

int cv_model_cmp(const struct cv_model *a, const struct cv_model *b, bool ticks, char *err, size_t errlen)
{
	char kb[128];
	for (size_t i = 0; i < a->n || i < b->n; i++) {
		if (i >= a->n || i >= b->n || strcmp(a->dirs[i].name, b->dirs[i].name) != 0) {
			snprintf(err, errlen, "directory #%zu: %s vs %s (%zu vs %zu directories)", i,
				 i < a->n ? a->dirs[i].name : "(none)", i < b->n ? b->dirs[i].name : "(none)",
				 a->n, b->n);
			return -1;
		}
		const struct cv_dir *da = &a->dirs[i], *db = &b->dirs[i];
		for (size_t k = 0; k < da->n; k++) {
			const struct cv_key *ka = &da->keys[k], *kb2 = cv_key_get(db, ka->k, ka->kn);
			cv_fmt_bytes(kb, sizeof(kb), ka->k, ka->kn);
			if (!kb2) {
				snprintf(err, errlen, "key %s%s: only in the first", da->name, kb);
				return -1;
			}
			if (ka->vn != kb2->vn || memcmp(ka->v, kb2->v, ka->vn) != 0) {
				char va[64], vb[64];
				cv_fmt_bytes(va, sizeof(va), ka->v, ka->vn);
				cv_fmt_bytes(vb, sizeof(vb), kb2->v, kb2->vn);
				snprintf(err, errlen,
					 "key %s%s: value \"%s\" (tick %llu) vs \"%s\" (tick %llu)", da->name,
					 kb, va, (unsigned long long)ka->tick, vb,
					 (unsigned long long)kb2->tick);
				return -1;
			}
			if (ticks && ka->tick && kb2->tick && ka->tick != kb2->tick) {
				snprintf(err, errlen, "key %s%s: version tick %llu vs %llu", da->name, kb,
					 (unsigned long long)ka->tick, (unsigned long long)kb2->tick);
				return -1;
			}
		}
		if (da->n != db->n) {
			for (size_t k = 0; k < db->n; k++)
				if (!cv_key_get(da, db->keys[k].k, db->keys[k].kn)) {
					cv_fmt_bytes(kb, sizeof(kb), db->keys[k].k, db->keys[k].kn);
					snprintf(err, errlen, "key %s%s: only in the second", db->name, kb);
					return -1;
				}
			snprintf(err, errlen, "directory %s: %zu vs %zu keys", da->name, da->n, db->n);
			return -1;
		}
	}
	return 0;
}

void cv_model_copy(struct cv_model *dst, const struct cv_model *src)
{
	cv_model_clear(dst);
	for (size_t i = 0; i < src->n; i++) {
		struct cv_dir *d = cv_dir_add(dst, src->dirs[i].name);
		for (size_t k = 0; k < src->dirs[i].n; k++) {
			const struct cv_key *e = &src->dirs[i].keys[k];
			cv_key_set(d, e->k, e->kn, e->v, e->vn, e->tick);
		}
	}
}

void cv_model_save(const struct cv_model *m, const char *path)
{
	struct cv_buf b = {0};
	uint32_t n = (uint32_t)m->n;
	cv_buf_put(&b, &n, 4);
	for (size_t i = 0; i < m->n; i++) {
		const struct cv_dir *d = &m->dirs[i];
		uint32_t l = (uint32_t)strlen(d->name), nk = (uint32_t)d->n;
		cv_buf_put(&b, &l, 4);
		cv_buf_put(&b, d->name, l);
		cv_buf_put(&b, &nk, 4);
		for (size_t k = 0; k < d->n; k++) {
			const struct cv_key *e = &d->keys[k];
			cv_buf_put(&b, &e->kn, 4);
			cv_buf_put(&b, e->k, e->kn);
			cv_buf_put(&b, &e->vn, 4);
			cv_buf_put(&b, e->v, e->vn);
			cv_buf_put(&b, &e->tick, 8);
		}
	}
	cv_file_write(path, b.p, b.n);
	cv_buf_free(&b);
}

void cv_take(const struct cv_buf *b, size_t *at, void *out, size_t n)
{
	T_ASSERT(*at + n <= b->n);
	memcpy(out, b->p + *at, n);
	*at += n;
}

void cv_model_load(struct cv_model *m, const char *path)
{
	struct cv_buf b = cv_file_read(path);
	size_t at = 0;
	uint32_t n;
	char name[SHMSYNC_MAX_DIR + 1];
	cv_model_clear(m);
	cv_take(&b, &at, &n, 4);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t l, nk;
		cv_take(&b, &at, &l, 4);
		T_ASSERT(l <= SHMSYNC_MAX_DIR);
		cv_take(&b, &at, name, l);
		name[l] = 0;
		struct cv_dir *d = cv_dir_add(m, name);
		T_ASSERT(d != NULL);
		cv_take(&b, &at, &nk, 4);
		for (uint32_t k = 0; k < nk; k++) {
			uint32_t kn, vn;
			uint64_t tick;
			cv_take(&b, &at, &kn, 4);
			T_ASSERT(at + kn <= b.n);
			const uint8_t *key = b.p + at;
			at += kn;
			cv_take(&b, &at, &vn, 4);
			T_ASSERT(at + vn <= b.n);
			const uint8_t *val = b.p + at;
			at += vn;
			cv_take(&b, &at, &tick, 8);
			cv_key_set(d, key, kn, val, vn, tick);
		}
	}
	T_EQ(at, b.n);
	cv_buf_free(&b);
}

void cv_imp_begin(struct cv_imp *r, uint64_t cursor)
{
	r->from = cursor;
	r->last_tick = 0;
	r->nchanges = 0;
	r->reset = false;
}

int cv_imp_cb(const shmsync_change *c, void *arg)
{
	struct cv_imp *r = arg;
	if (r->bad)
		return 0;
	if (c->kind == SHMSYNC_RESET) {
		if (r->nchanges != 0) {
			snprintf(r->err, sizeof(r->err), "RESET as change #%d of an import, not the first",
				 r->nchanges);
			r->bad = true;
			return 0;
		}
		r->reset = true;
		r->resets++;
	} else if (!r->reset && (c->tick <= r->from || c->tick < r->last_tick)) {
		snprintf(r->err, sizeof(r->err),
			 "change kind %d of %s at tick %llu: the cursor was %llu, "
			 "the previous change's tick %llu",
			 c->kind, c->dir, (unsigned long long)c->tick, (unsigned long long)r->from,
			 (unsigned long long)r->last_tick);
		r->bad = true;
		return 0;
	}
	r->last_tick = c->tick;
	r->nchanges++;
	if (cv_apply(&r->model, c, r->err, sizeof(r->err)) < 0) {
		r->bad = true;
		return 0;
	}
	if (r->reset && c->kind == SHMSYNC_PUT) {
		/* A full state carries the reset's tick, not the version's. */
		cv_key_get(cv_dir_get(&r->model, c->dir), c->key, c->key_len)->tick = 0;
	}
	r->puts += c->kind == SHMSYNC_PUT;
	r->dels += c->kind == SHMSYNC_DEL;
	r->mkdirs += c->kind == SHMSYNC_MKDIR;
	r->rmdirs += c->kind == SHMSYNC_RMDIR;
	return 0;
}

uint64_t cv_imp_end(struct cv_imp *r, shmsync_worker *w, int rc, const char *who)
{
	uint64_t to = shmsync_cursor(w);
	if (r->bad)
		T_FAIL("%s: import (%llu, %llu]: %s", who, (unsigned long long)r->from,
		       (unsigned long long)to, r->err);
	if (rc != r->nchanges)
		T_FAIL("%s: import returned %d but delivered %d changes", who, rc, r->nchanges);
	if (to < r->from || r->last_tick > to || (r->reset && r->last_tick != to))
		T_FAIL("%s: import (%llu, %llu] delivered a change of tick %llu%s", who,
		       (unsigned long long)r->from, (unsigned long long)to, (unsigned long long)r->last_tick,
		       r->reset ? " after a RESET" : "");
	if (to == r->from && r->nchanges)
		T_FAIL("%s: an import that stayed at tick %llu delivered %d changes", who,
		       (unsigned long long)to, r->nchanges);
	return to;
}

void cv_imp_vs_snapshot(struct cv_imp *r, shmsync_worker *w, struct cv_model *scratch, const char *who)
{
	char err[512];
	cv_snapshot(w, scratch);
	if (cv_model_cmp(&r->model, scratch, true, err, sizeof(err)) < 0)
		T_FAIL("%s: at tick %llu, the model built from imports vs the snapshot: %s", who,
		       (unsigned long long)shmsync_cursor(w), err);
}
