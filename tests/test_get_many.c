/* shmsync_get_many returns exactly what shmsync_get returns, key by key:
 * present, overwritten, deleted and never-written keys, at the newest
 * snapshot and at an older one a second worker still holds, in groups that
 * do not divide by the library's group size, in an absent directory, and
 * refuses bad arguments and an offline handle. */
#include <stdbool.h>

#include "synctest.h"

#define NKEYS 3000
#define PROBES 4099 /* not a multiple of 16 or 64: partial groups */

static void key_of(char *k, unsigned i)
{
	snprintf(k, 16, "k%08u", i);
}

/* Round 1 puts k0..k2999 = "a<i>"; round 2 overwrites the even ones with
 * "b<i>" and deletes every third. */
static void round1(shmsync_batch *b, void *arg)
{
	unsigned *base = arg;
	char k[16], v[16];
	for (unsigned i = *base; i < *base + 500 && i < NKEYS; i++) {
		key_of(k, i);
		int n = snprintf(v, sizeof v, "a%u", i);
		T_OK(shmsync_put(b, "/m/", k, strlen(k), v, (size_t)n));
	}
}

static void round2(shmsync_batch *b, void *arg)
{
	unsigned *base = arg;
	char k[16], v[16];
	for (unsigned i = *base; i < *base + 500 && i < NKEYS; i++) {
		key_of(k, i);
		if (i % 3 == 0) {
			T_OK(shmsync_del(b, "/m/", k, strlen(k)));
		} else if (i % 2 == 0) {
			int n = snprintf(v, sizeof v, "b%u", i);
			T_OK(shmsync_put(b, "/m/", k, strlen(k), v, (size_t)n));
		}
	}
}

static void mkdir_m(shmsync_batch *b, void *arg)
{
	(void)arg;
	T_OK(shmsync_mkdir(b, "/m/"));
}

/* Every probe key (present, absent, in any order) through both calls. */
static unsigned compare_all(shmsync_worker *w, const char *dir)
{
	static char kbuf[PROBES][16];
	static shmsync_key keys[PROBES];
	static shmsync_view views[PROBES];
	static int rcs[PROBES];
	unsigned present = 0;
	for (unsigned i = 0; i < PROBES; i++) {
		/* Scattered, and a third of them never written (>= NKEYS). */
		key_of(kbuf[i], (i * 7919u) % (NKEYS + NKEYS / 2));
		keys[i] = (shmsync_key){kbuf[i], strlen(kbuf[i])};
		rcs[i] = 12345;
	}
	int found = shmsync_get_many(w, dir, keys, PROBES, views, rcs);
	T_ASSERT(found >= 0);
	for (unsigned i = 0; i < PROBES; i++) {
		shmsync_view v;
		int rc = shmsync_get(w, dir, keys[i].data, keys[i].len, &v);
		if (rc != rcs[i])
			T_FAIL("%s %s: get %d, get_many %d", dir, kbuf[i], rc, rcs[i]);
		if (rc == 0) {
			present++;
			T_ASSERT(v.data == views[i].data && v.len == views[i].len &&
				 v.tick == views[i].tick && v.epoch == views[i].epoch);
			T_ASSERT(shmsync_view_valid(w, &views[i]) == 1);
		}
	}
	T_EQ((unsigned)found, present);
	return present;
}

int main(void)
{
	alarm(60);
	pid_t root = st_start_root(NULL);
	shmsync_worker *w = st_attach(), *old = st_attach();
	st_fill_commit(mkdir_m, NULL);
	for (unsigned base = 0; base < NKEYS; base += 500)
		st_fill_commit(round1, &base);
	/* `old` keeps the snapshot after round 1 while round 2 lands. */
	T_ASSERT(shmsync_import_next(old, 5000000000LL, NULL, NULL) > 0);
	while (shmsync_import_next(old, 0, NULL, NULL) > 0)
		;
	for (unsigned base = 0; base < NKEYS; base += 500)
		st_fill_commit(round2, &base);
	T_ASSERT(shmsync_import_next(w, 5000000000LL, NULL, NULL) > 0);
	while (shmsync_import_next(w, 0, NULL, NULL) > 0)
		;
	T_ASSERT(shmsync_cursor(w) > shmsync_cursor(old));

	unsigned now = compare_all(w, "/m/"), before = compare_all(old, "/m/");
	printf("get_many: %u present now, %u at the older snapshot, of %d probes\n", now, before, PROBES);
	/* The snapshots differ (deletions), so both paths were exercised. */
	T_ASSERT(before > now && now > 0);

	/* A directory that does not exist: every key -ENOENT, none found. */
	T_EQ(compare_all(w, "/nope/"), 0u);

	/* Bad arguments and an offline handle. */
	shmsync_key k = {"k00000001", 9};
	shmsync_view v;
	int rc;
	T_EQ(shmsync_get_many(w, NULL, &k, 1, &v, &rc), -EINVAL);
	T_EQ(shmsync_get_many(w, "/m/", NULL, 1, &v, &rc), -EINVAL);
	T_EQ(shmsync_get_many(w, "/m/", &k, 1, NULL, &rc), -EINVAL);
	T_EQ(shmsync_get_many(w, "/m/", &k, 1, &v, NULL), -EINVAL);
	T_EQ(shmsync_get_many(w, "/m/", NULL, 0, NULL, NULL), 0);
	shmsync_offline(w);
	T_EQ(shmsync_get_many(w, "/m/", &k, 1, &v, &rc), -ESTALE);

	shmsync_detach(w);
	shmsync_detach(old);
	st_stop_root(root);
	printf("get_many: ok\n");
	return 0;
}
