/* synctest_conv.h: the deterministic single-writer workload full of
 * deletions, which any process can replay to a given tick. */
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

static const char *const cv_gen_dirs[] = {
	"/a/", "/a/x/", "/b/", "/p/", "/p/a/", "/p/b/", "/p/b/c/", "/p/b/c/d/", "/q/", "/q/r/", "/q/r/s/",
};
#define CV_GEN_NDIRS (sizeof(cv_gen_dirs) / sizeof(cv_gen_dirs[0]))

void cv_gen_init(struct cv_gen *g, unsigned long long seed)
{
	*g = (struct cv_gen){0};
	g->rng = seed ? seed : 1;
}

static unsigned cv_gen_rand(struct cv_gen *g, unsigned n)
{
	return (unsigned)(t_rand(&g->rng) % n);
}

static void cv_gen_check(int rc, const char *what)
{
	if (rc < 0)
		T_FAIL("building a batch: %s: %s", what, shmsync_strerror(rc));
}

static void cv_gen_put(struct cv_gen *g, struct cv_model *ref, shmsync_batch *b, uint64_t tick,
		       const char *dir, const char *key)
{
	char v[48];
	size_t vn = 1 + cv_gen_rand(g, 40);
	int len = snprintf(v, sizeof(v), "%llu:%s%s:", (unsigned long long)tick, dir, key);
	for (size_t i = (size_t)len; i < vn; i++)
		v[i] = (char)('a' + cv_gen_rand(g, 26));
	if (vn < (size_t)len)
		vn = (size_t)len < sizeof(v) ? (size_t)len : sizeof(v);
	if (b)
		cv_gen_check(shmsync_put(b, dir, key, strlen(key), v, vn), "put");
	struct cv_dir *d = cv_dir_get(ref, dir);
	T_ASSERT(d != NULL);
	cv_key_set(d, key, strlen(key), v, vn, tick);
	g->puts++;
}

static void cv_gen_del(struct cv_gen *g, struct cv_model *ref, shmsync_batch *b, const char *dir,
		       const char *key)
{
	if (b)
		cv_gen_check(shmsync_del(b, dir, key, strlen(key)), "del");
	T_ASSERT(cv_key_del(cv_dir_get(ref, dir), key, strlen(key)));
	g->dels++;
}

static void cv_gen_mkdir(struct cv_gen *g, struct cv_model *ref, shmsync_batch *b, const char *dir)
{
	if (b)
		cv_gen_check(shmsync_mkdir(b, dir), "mkdir");
	T_ASSERT(cv_dir_add(ref, dir) != NULL);
	g->mkdirs++;
}

static void cv_gen_rmdir(struct cv_gen *g, struct cv_model *ref, shmsync_batch *b, const char *dir)
{
	if (b)
		cv_gen_check(shmsync_rmdir(b, dir), "rmdir");
	T_ASSERT(cv_rmdir(ref, dir) > 0);
	g->rmdirs++;
}

/* A random existing directory, or NULL. */
static const char *cv_gen_some_dir(struct cv_gen *g, const struct cv_model *ref)
{
	if (!ref->n)
		return NULL;
	return ref->dirs[cv_gen_rand(g, (unsigned)ref->n)].name;
}

/* A random existing key of dir into key[16]; false if dir has none. */
static bool cv_gen_some_key(struct cv_gen *g, const struct cv_model *ref, const char *dir, char *key)
{
	const struct cv_dir *d = cv_dir_get(ref, dir);
	if (!d || !d->n)
		return false;
	const struct cv_key *e = &d->keys[cv_gen_rand(g, (unsigned)d->n)];
	T_ASSERT(e->kn < 16);
	memcpy(key, e->k, e->kn);
	key[e->kn] = 0;
	return true;
}

void cv_gen_batch(struct cv_gen *g, struct cv_model *ref, shmsync_batch *b, uint64_t tick)
{
	char key[16], dir[SHMSYNC_MAX_DIR + 1];
	g->batches++;
	uint64_t before = g->puts + g->dels + g->mkdirs + g->rmdirs;
	int redo = g->redo;
	g->redo = 0;
	/* Delete-then-recreate across ticks: bring back what the previous
	 * batch deleted (when it is still possible). */
	if (redo == 1 && cv_dir_get(ref, g->redo_dir)) {
		cv_gen_put(g, ref, b, tick, g->redo_dir, g->redo_key);
		g->key_recreates++;
	} else if (redo == 2 && !cv_dir_get(ref, g->redo_dir)) {
		cv_gen_mkdir(g, ref, b, g->redo_dir);
		cv_gen_put(g, ref, b, tick, g->redo_dir, "k0");
		g->dir_recreates++;
	}
	unsigned nops = 1 + cv_gen_rand(g, 4);
	for (unsigned op = 0; op < nops; op++) {
		unsigned r = cv_gen_rand(g, 1000);
		const char *d = cv_gen_some_dir(g, ref);
		if (!d || ref->n < 4 || r < 100) {
			/* mkdir a missing directory, with a key in it. */
			const char *nd = cv_gen_dirs[cv_gen_rand(g, CV_GEN_NDIRS)];
			if (!cv_dir_get(ref, nd)) {
				cv_gen_mkdir(g, ref, b, nd);
				snprintf(key, sizeof(key), "k%u", cv_gen_rand(g, CV_GEN_NKEYS));
				cv_gen_put(g, ref, b, tick, nd, key);
			}
		} else if (r < 550) {
			snprintf(key, sizeof(key), "k%u", cv_gen_rand(g, CV_GEN_NKEYS));
			cv_gen_put(g, ref, b, tick, d, key);
		} else if (r < 700) {
			if (cv_gen_some_key(g, ref, d, key)) {
				cv_gen_del(g, ref, b, d, key);
				if (cv_gen_rand(g, 2)) {
					g->redo = 1;
					snprintf(g->redo_dir, sizeof(g->redo_dir), "%s", d);
					snprintf(g->redo_key, sizeof(g->redo_key), "%s", key);
				}
			}
		} else if (r < 770) {
			/* Delete and recreate a key within one batch. */
			if (cv_gen_some_key(g, ref, d, key)) {
				cv_gen_del(g, ref, b, d, key);
				cv_gen_put(g, ref, b, tick, d, key);
				g->key_recreates++;
			}
		} else if (r < 800) {
			/* rmdir of an existing directory (and what is under it). */
			snprintf(dir, sizeof(dir), "%s", d);
			cv_gen_rmdir(g, ref, b, dir);
			if (cv_gen_rand(g, 2)) {
				g->redo = 2;
				snprintf(g->redo_dir, sizeof(g->redo_dir), "%s", dir);
			}
		} else if (r < 830) {
			/* rmdir of a prefix: /p/ or /q/ whether or not that
			 * directory itself exists, as long as one under it does. */
			const char *pre = cv_gen_rand(g, 2) ? "/p/" : "/q/";
			if (cv_prefix_exists(ref, pre)) {
				if (!cv_dir_get(ref, pre))
					g->prefix_rmdirs++;
				cv_gen_rmdir(g, ref, b, pre);
			}
		} else if (r < 860) {
			/* Delete and recreate a directory within one batch. */
			snprintf(dir, sizeof(dir), "%s", d);
			cv_gen_rmdir(g, ref, b, dir);
			cv_gen_mkdir(g, ref, b, dir);
			if (cv_gen_rand(g, 2)) {
				snprintf(key, sizeof(key), "k%u", cv_gen_rand(g, CV_GEN_NKEYS));
				cv_gen_put(g, ref, b, tick, dir, key);
			}
			g->dir_recreates++;
		} else if (r == 860 && cv_gen_rand(g, 4) == 0) {
			/* Rarely, everything: rmdir "/". */
			cv_gen_rmdir(g, ref, b, "/");
			g->root_rmdirs++;
		} else {
			snprintf(key, sizeof(key), "k%u", cv_gen_rand(g, CV_GEN_NKEYS));
			cv_gen_put(g, ref, b, tick, d, key);
		}
	}
	if (g->puts + g->dels + g->mkdirs + g->rmdirs == before) {
		/* Every choice was impossible: a batch must change something. */
		const char *d = cv_gen_some_dir(g, ref);
		if (d) {
			cv_gen_put(g, ref, b, tick, d, "k0");
		} else {
			cv_gen_mkdir(g, ref, b, "/a/");
			cv_gen_put(g, ref, b, tick, "/a/", "k0");
		}
	}
}

uint64_t cv_gen_commit(struct cv_gen *g, struct cv_model *ref, shmsync_worker *w, uint64_t tick, int i)
{
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	cv_gen_batch(g, ref, b, tick + 1);
	int64_t t = st_commit(b);
	if (t < 0)
		T_FAIL("batch %d was rejected: %s", i, shmsync_strerror((int)t));
	T_EQ(t, (int64_t)tick + 1);
	return (uint64_t)t;
}
