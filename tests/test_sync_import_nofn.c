/* An import with no callback moves the snapshot without reading the change
 * log: it returns how many ticks the snapshot moved, not how many changes
 * there were (a callback import of the same ticks returns the coalesced
 * changes: fewer here); reads at the new snapshot see the newest values; a
 * cursor the log no longer holds is counted as a reset and costs no full
 * state, while a callback import of the same fall gets RESET and the full
 * state. */
#include <stdbool.h>

#include "synctest.h"

#define NKEYS 3
#define ROUNDS 5
#define WRAP_BATCHES 40
#define WRAP_KEYS 64 /* 40 x 64 records of ~50 bytes: the 64 KiB log wraps twice */

struct round {
	unsigned n, keys;
};

static void mkdir_d(shmsync_batch *b, void *arg)
{
	(void)arg;
	T_OK(shmsync_mkdir(b, "/d/"));
}

/* Puts k0..k<keys-1> = "<round>." padded to 8 bytes. */
static void put_round(shmsync_batch *b, void *arg)
{
	const struct round *r = arg;
	char k[16], v[16];
	memset(v, 'x', sizeof v);
	int n = snprintf(v, sizeof v, "%u", r->n);
	v[n] = '.';
	for (unsigned i = 0; i < r->keys; i++) {
		snprintf(k, sizeof k, "k%u", i);
		T_OK(shmsync_put(b, "/d/", k, strlen(k), v, 8));
	}
}

struct seen {
	unsigned changes, resets;
};

static int count(const shmsync_change *c, void *arg)
{
	struct seen *s = arg;
	s->changes++;
	s->resets += c->kind == SHMSYNC_RESET;
	return 0;
}

/* k0 at w's snapshot holds round n. */
static void expect_round(shmsync_worker *w, unsigned n)
{
	shmsync_view v;
	T_OK(shmsync_get(w, "/d/", "k0", 2, &v));
	char want[16];
	int len = snprintf(want, sizeof want, "%u.", n);
	if (v.len < (size_t)len || memcmp(v.data, want, (size_t)len) != 0)
		T_FAIL("k0 holds \"%.*s\", want round %u", (int)(v.len < 8 ? v.len : 8), (const char *)v.data,
		       n);
}

static void catch_up(shmsync_worker *w)
{
	int rc;
	while ((rc = shmsync_import_next(w, 0, NULL, NULL)) >= 0)
		;
	T_EQ(rc, -ETIMEDOUT);
}

int main(void)
{
	alarm(60);
	shmsync_root_opts o = {.log_bytes = (size_t)64 << 10};
	pid_t root = st_start_root(&o);
	shmsync_worker *bare = st_attach(), *cb = st_attach();
	st_fill_commit(mkdir_d, NULL);
	struct round r0 = {0, NKEYS};
	st_fill_commit(put_round, &r0);
	catch_up(bare);
	catch_up(cb);
	expect_round(bare, 0);

	/* ROUNDS ticks over the same NKEYS keys. */
	for (unsigned i = 1; i <= ROUNDS; i++) {
		struct round r = {i, NKEYS};
		st_fill_commit(put_round, &r);
	}
	uint64_t from = shmsync_cursor(bare);
	int moved = shmsync_import_until(bare, from + ROUNDS, 5000000000LL, NULL, NULL);
	T_EQ(moved, ROUNDS);
	T_EQ(shmsync_cursor(bare), from + ROUNDS);
	expect_round(bare, ROUNDS);
	struct seen s = {0, 0};
	T_EQ(shmsync_import_until(cb, from + ROUNDS, 5000000000LL, count, &s), NKEYS);
	T_EQ(s.changes, (unsigned)NKEYS);
	/* Nothing new: a poll says so, with or without a callback. */
	T_EQ(shmsync_import_next(bare, 0, NULL, NULL), -ETIMEDOUT);

	/* Both go offline (pinning nothing) while the log wraps past their
	 * cursors. */
	shmsync_stats st;
	T_OK(shmsync_stat(bare, &st));
	uint64_t resets = st.resets;
	shmsync_offline(bare);
	shmsync_offline(cb);
	for (unsigned i = 0; i < WRAP_BATCHES; i++) {
		struct round r = {100 + i, WRAP_KEYS};
		st_fill_commit(put_round, &r);
	}
	from = shmsync_cursor(bare);
	moved = shmsync_import_until(bare, from + WRAP_BATCHES, 5000000000LL, NULL, NULL);
	T_EQ(moved, WRAP_BATCHES);
	expect_round(bare, 100 + WRAP_BATCHES - 1);
	T_OK(shmsync_stat(bare, &st));
	T_EQ(st.resets, resets + 1);
	s = (struct seen){0, 0};
	int delivered = shmsync_import_until(cb, from + WRAP_BATCHES, 5000000000LL, count, &s);
	/* RESET, the directory, its keys. */
	T_EQ(delivered, 2 + WRAP_KEYS);
	T_EQ(s.resets, 1u);

	shmsync_detach(bare);
	shmsync_detach(cb);
	st_stop_root(root);
	printf("import without a callback: ok (%d ticks in one import after the log wrapped)\n", moved);
	return 0;
}
