/* Read your writes, and late attachers.
 *
 * Part 1, read your writes: two workers commit concurrently, 1000 batches
 * each; after wait_committed gives tick T, import_until(T) must show the
 * batch: get returns the value written, with version tick T exactly, and a
 * key the batch deleted is gone, although the other worker's commits move
 * the state on meanwhile.
 *
 * Part 2, late attachers: one writer commits 5000 batches of the
 * deletion-heavy workload of synctest_conv.h (each batch its own tick, so
 * the state at any tick is the workload replayed), then stops until a late
 * worker has attached, then commits 2000 more. The late worker's snapshot at
 * its cursor tick must be exactly the replayed state (values and version
 * ticks); it then imports the following changes, applying them to a model
 * that starts as that snapshot, and after every import model, snapshot and
 * replay agree. A second late worker attaches after the writer has finished
 * and must see its final state.
 */
#include "synctest_conv.h"

#define RYW_WORKERS 2
#define RYW_ROUNDS 1000
#define LATE_FIRST 5000
#define LATE_MORE 2000

static unsigned long long seed;
static struct cv_gate gate;

/* ---- part 1 ------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int ryw_worker(void *arg)
{
	int id = (int)(intptr_t)arg;
	unsigned long long rng = seed + (unsigned long long)id;
	char dir[32], key[16], val[64];
	snprintf(dir, sizeof(dir), "/ryw%d/", id);
	shmsync_worker *w = st_attach();
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_mkdir(b, dir));
	T_ASSERT(st_commit(b) > 0);
	cv_gate_arrive(&gate);
	bool present[16] = {false};
	static double lat[RYW_ROUNDS];
	int moved_past = 0, deletions = 0;
	for (int it = 0; it < RYW_ROUNDS; it++) {
		int k = it % 16, gone = -1;
		snprintf(key, sizeof(key), "k%d", k);
		int vn = snprintf(val, sizeof(val), "w%d-%d-%llu", id, it, t_rand(&rng) % 100000);
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_put(b, dir, key, strlen(key), val, (size_t)vn));
		int other = (k + 1 + (int)(t_rand(&rng) % 15)) % 16;
		if (present[other] && t_rand(&rng) % 3 == 0) {
			char ok[16];
			snprintf(ok, sizeof(ok), "k%d", other);
			T_OK(shmsync_del(b, dir, ok, strlen(ok)));
			gone = other;
		}
		double t0 = st_now();
		int64_t t = st_commit(b);
		if (t <= 0)
			T_FAIL("ryw%d: round %d: commit: %s", id, it, shmsync_strerror((int)t));
		int rc = shmsync_import_until(w, (uint64_t)t, 5000000000LL, NULL, NULL);
		if (rc < 0)
			T_FAIL("ryw%d: import_until(%lld): %s", id, (long long)t, shmsync_strerror(rc));
		lat[it] = st_now() - t0;
		uint64_t cur = shmsync_cursor(w);
		if (cur < (uint64_t)t)
			T_FAIL("ryw%d: import_until(%lld) left the cursor at %llu", id, (long long)t,
			       (unsigned long long)cur);
		moved_past += cur > (uint64_t)t;
		shmsync_view v;
		rc = shmsync_get(w, dir, key, strlen(key), &v);
		if (rc < 0)
			T_FAIL("ryw%d: round %d: get %s%s after import_until(%lld): %s", id, it, dir, key,
			       (long long)t, shmsync_strerror(rc));
		if (v.len != (size_t)vn || memcmp(v.data, val, v.len) != 0 || v.tick != (uint64_t)t)
			T_FAIL("ryw%d: round %d: read %.*s (tick %llu), wrote %s at tick %lld", id, it,
			       (int)v.len, (const char *)v.data, (unsigned long long)v.tick, val,
			       (long long)t);
		present[k] = true;
		if (gone >= 0) {
			char gk[16];
			snprintf(gk, sizeof(gk), "k%d", gone);
			T_EQ(shmsync_get(w, dir, gk, strlen(gk), &v), -ENOENT);
			present[gone] = false;
			deletions++;
		}
	}
	qsort(lat, RYW_ROUNDS, sizeof(lat[0]), cmp_double);
	printf("  ryw%d: %d rounds (%d deleting a key); "
	       "commit + import_until p50 %.0f us, p99 %.0f us, max %.0f us; "
	       "%d imports went past the batch's tick\n",
	       id, RYW_ROUNDS, deletions, lat[RYW_ROUNDS / 2] * 1e6, lat[RYW_ROUNDS * 99 / 100] * 1e6,
	       lat[RYW_ROUNDS - 1] * 1e6, moved_past);
	shmsync_detach(w);
	return 0;
}

static void part_ryw(void)
{
	pid_t root = cv_start_root(NULL);
	cv_gate_init(&gate);
	pid_t kids[RYW_WORKERS];
	for (int i = 0; i < RYW_WORKERS; i++)
		kids[i] = cv_spawn("ryw", ryw_worker, (void *)(intptr_t)i);
	cv_gate_spawned(&gate);
	cv_gate_open(&gate, RYW_WORKERS);
	cv_wait_all(kids, RYW_WORKERS, 100);
	cv_gate_done(&gate);
	cv_stop_root(root);
	printf("read your writes: ok\n");
}

/* ---- part 2 ------------------------------------------------------------ */

struct shared {
	_Atomic uint64_t start; /* the tick before the writer's first batch */
	_Atomic uint64_t final; /* its last tick; 0 while it runs */
	_Atomic int halfway;    /* LATE_FIRST batches are committed */
	_Atomic int late_attached;
};

static struct shared *sh;

static int writer(void *arg)
{
	(void)arg;
	shmsync_worker *w = st_attach();
	uint64_t tick = shmsync_cursor(w);
	atomic_store(&sh->start, tick);
	struct cv_gen g;
	struct cv_model ref = {0}, snap = {0};
	cv_gen_init(&g, seed);
	for (int i = 0; i < LATE_FIRST + LATE_MORE; i++) {
		if (i == LATE_FIRST) {
			/* Stop until the late worker is in, so that there is
			 * something left for it to import. */
			atomic_store(&sh->halfway, 1);
			double end = st_now() + 30;
			while (!atomic_load(&sh->late_attached)) {
				if (st_now() > end)
					T_FAIL("the late worker did not attach in 30 s");
				usleep(1000);
			}
		}
		tick = cv_gen_commit(&g, &ref, w, tick, i); /* one writer: each batch is a tick */
	}
	atomic_store(&sh->final, tick);
	T_ASSERT(shmsync_import_until(w, tick, 5000000000LL, NULL, NULL) >= 0);
	char err[512];
	cv_snapshot(w, &snap);
	if (cv_model_cmp(&ref, &snap, true, err, sizeof(err)) < 0)
		T_FAIL("writer: its snapshot at tick %llu vs what it wrote: %s", (unsigned long long)tick,
		       err);
	printf("  writer: %llu batches, ticks %llu..%llu: %llu puts, %llu dels, %llu mkdirs, "
	       "%llu rmdirs (%llu of an absent prefix, %llu of \"/\"); "
	       "final state %zu dirs %zu keys\n",
	       (unsigned long long)g.batches, (unsigned long long)atomic_load(&sh->start) + 1,
	       (unsigned long long)tick, (unsigned long long)g.puts, (unsigned long long)g.dels,
	       (unsigned long long)g.mkdirs, (unsigned long long)g.rmdirs,
	       (unsigned long long)g.prefix_rmdirs, (unsigned long long)g.root_rmdirs, ref.n,
	       cv_model_keys(&ref));
	cv_model_free(&ref);
	cv_model_free(&snap);
	shmsync_detach(w);
	return 0;
}

/* The late worker: attaches at some tick C past LATE_FIRST batches, checks
 * its snapshot against the replayed workload, then imports to the end. */
static int late(void *arg)
{
	bool after_end = arg != NULL;
	const char *who = after_end ? "late-after-end" : "late";
	unsigned long long rng = seed * 31 + 7;
	shmsync_worker *w = st_attach();
	atomic_store(&sh->late_attached, 1);
	uint64_t start = atomic_load(&sh->start), cursor = shmsync_cursor(w);
	if (cursor < start + LATE_FIRST)
		T_FAIL("%s: attached at tick %llu, before the writer's %d batches (start %llu)", who,
		       (unsigned long long)cursor, LATE_FIRST, (unsigned long long)start);
	struct cv_gen g;
	struct cv_model ref = {0}, snap = {0};
	struct cv_imp imp = {0};
	char err[512];
	cv_gen_init(&g, seed);
	uint64_t ref_tick = start;
	while (ref_tick < cursor)
		cv_gen_batch(&g, &ref, NULL, ++ref_tick);
	/* The snapshot it attached with is the writer's state at that tick. */
	cv_snapshot(w, &snap);
	if (cv_model_cmp(&ref, &snap, true, err, sizeof(err)) < 0)
		T_FAIL("%s: attached at tick %llu; the writer's state there vs the snapshot: %s", who,
		       (unsigned long long)cursor, err);
	printf("  %s: attached at tick %llu (%llu batches in): %zu dirs %zu keys, as the writer had them\n",
	       who, (unsigned long long)cursor, (unsigned long long)(cursor - start), snap.n,
	       cv_model_keys(&snap));
	uint64_t attached_at = cursor, imports = 0, waits = 0;
	cv_model_copy(&imp.model, &snap);
	double idle_since = st_now();
	for (;;) {
		uint64_t fin = atomic_load(&sh->final);
		if (fin && cursor >= fin)
			break;
		/* Sometimes dawdle, so that imports coalesce. */
		if (t_rand(&rng) % 4 == 0)
			usleep((useconds_t)(t_rand(&rng) % 2000));
		cv_imp_begin(&imp, cursor);
		int rc = shmsync_import_next(w, 200000000, cv_imp_cb, &imp);
		if (rc == -ETIMEDOUT) {
			waits++;
			if (st_now() - idle_since > 10)
				T_FAIL("%s: no new tick for 10 s at %llu", who, (unsigned long long)cursor);
			continue;
		}
		if (rc < 0)
			T_FAIL("%s: import: %s", who, shmsync_strerror(rc));
		cursor = cv_imp_end(&imp, w, rc, who);
		idle_since = st_now();
		imports++;
		cv_imp_vs_snapshot(&imp, w, &snap, who);
		while (ref_tick < cursor)
			cv_gen_batch(&g, &ref, NULL, ++ref_tick);
		if (cv_model_cmp(&ref, &imp.model, true, err, sizeof(err)) < 0)
			T_FAIL("%s: at tick %llu, the writer's state vs the imported model: %s", who,
			       (unsigned long long)cursor, err);
	}
	/* The log kept everything since it attached: nothing to reset. */
	T_EQ(imp.resets, 0);
	if (after_end)
		T_EQ(imports, 0);
	else if (imports == 0)
		T_FAIL("%s: attached at %llu and never imported (the writer did not wait for it?)", who,
		       (unsigned long long)attached_at);
	printf("  %s: %llu imports to tick %llu (%llu dels, %llu rmdirs, %llu mkdirs, %llu puts), "
	       "each equal to the writer's state\n",
	       who, (unsigned long long)imports, (unsigned long long)cursor, (unsigned long long)imp.dels,
	       (unsigned long long)imp.rmdirs, (unsigned long long)imp.mkdirs, (unsigned long long)imp.puts);
	cv_model_free(&ref);
	cv_model_free(&snap);
	cv_model_free(&imp.model);
	shmsync_detach(w);
	return 0;
}

static void part_late(void)
{
	memset(sh, 0, sizeof(*sh));
	pid_t root = cv_start_root(NULL);
	pid_t wr = cv_spawn("writer", writer, NULL);
	double end = st_now() + 60;
	while (!atomic_load(&sh->halfway)) {
		cv_poll_kids();
		if (st_now() > end)
			T_FAIL("the writer did not commit %d batches in 60 s", LATE_FIRST);
		usleep(1000);
	}
	pid_t lt = cv_spawn("late", late, NULL);
	pid_t both[] = {wr, lt};
	cv_wait_all(both, 2, 100);
	pid_t lt2 = cv_spawn("late-after-end", late, (void *)1);
	cv_wait_all(&lt2, 1, 60);
	cv_stop_root(root);
	printf("late attachers: ok\n");
}

int main(void)
{
	cv_setup(120, 110);
	seed = t_seed(0x1a7e);
	printf("sync_late: signal path %s\n", st_signal_name());
	sh = cv_shared(sizeof(*sh));
	part_ryw();
	part_late();
	printf("sync_late: ok\n");
	return 0;
}
