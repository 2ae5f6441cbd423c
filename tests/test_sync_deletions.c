/* No worker ever misses a deletion.
 *
 * One writer commits a deterministic workload full of deletions (cv_gen_batch
 * in synctest_conv.h): del, rmdir, rmdir of a prefix whose own directory may
 * not exist (/p/ removing /p/a/ and /p/b/c/), rmdir "/", and delete-then-
 * recreate of keys and directories, both within one batch and across ticks.
 * Readers import at different paces: one every tick (the writer waits for
 * it), one that sleeps between imports so each import coalesces many ticks,
 * one that goes offline and uses import_until, and a slow one. Each applies
 * its import stream to a private model (RMDIR removes the directory, every
 * directory under it and their keys; RESET clears everything) and after
 * every import checks that model against its own snapshot (dirs_iter +
 * dir_iter) and against the workload replayed to its cursor tick; at the end
 * every model equals the writer's final state.
 *
 * Round "retained" has a large log: nobody may get a RESET. Round "overrun"
 * has the smallest log (64 KiB) and a reader that imports only when it is
 * 2500 ticks behind, more than the log holds: it must get a RESET and still
 * converge, while the every-tick reader never does.
 */
#include "synctest_conv.h"

enum { R_EVERY, R_SLEEPY, R_ERRATIC, R_SLOW, NREADERS };
static const char *const reader_names[NREADERS] = {"every-tick", "sleepy", "erratic", "slow"};

struct shared {
	_Atomic uint64_t start;     /* the tick before the writer's first batch */
	_Atomic uint64_t final;     /* the writer's last tick; 0 while it runs */
	_Atomic uint64_t every_cur; /* the every-tick reader's cursor */
	_Atomic uint64_t resets[NREADERS];
};

struct round {
	const char *name;
	size_t log_bytes; /* 0: the default */
	int batches;
	int slow_ms;       /* the slow reader's sleep between imports */
	uint64_t slow_lag; /* if set, it waits until it is this many ticks behind */
	bool expect_slow_reset;
};

static struct shared *sh;
static const struct round *cur_round;
static unsigned long long seed;
static struct cv_gate gate;

/* ---- the writer -------------------------------------------------------- */

static int writer(void *arg)
{
	(void)arg;
	shmsync_worker *w = st_attach();
	uint64_t start = shmsync_cursor(w);
	atomic_store(&sh->start, start);
	cv_gate_arrive(&gate);
	struct cv_gen g;
	struct cv_model ref = {0};
	cv_gen_init(&g, seed);
	uint64_t tick = start;
	for (int i = 0; i < cur_round->batches; i++) {
		/* One writer, each batch waited for: each is its own tick, so
		 * the state at tick start + n is the replay of n batches. */
		tick = cv_gen_commit(&g, &ref, w, tick, i);
		/* The every-tick reader must import each tick on its own. */
		double end = st_now() + 10;
		while (atomic_load(&sh->every_cur) < tick) {
			if (st_now() > end)
				T_FAIL("the every-tick reader did not reach tick %llu in 10 s",
				       (unsigned long long)tick);
			sched_yield();
		}
	}
	atomic_store(&sh->final, tick);
	T_ASSERT(shmsync_import_until(w, tick, 5000000000LL, NULL, NULL) >= 0);
	struct cv_model snap = {0};
	char err[512];
	cv_snapshot(w, &snap);
	if (cv_model_cmp(&ref, &snap, true, err, sizeof(err)) < 0)
		T_FAIL("writer: its snapshot at tick %llu differs from what it wrote: %s",
		       (unsigned long long)tick, err);
	char path[320];
	cv_model_save(&ref, cv_path(path, sizeof(path), "writer.model"));
	printf("  writer: %llu batches, ticks %llu..%llu: %llu puts, %llu dels, %llu mkdirs, %llu rmdirs "
	       "(%llu of a prefix whose directory was absent, %llu of \"/\"), %llu key and %llu directory "
	       "recreations; final state %zu dirs %zu keys\n",
	       (unsigned long long)g.batches, (unsigned long long)start + 1, (unsigned long long)tick,
	       (unsigned long long)g.puts, (unsigned long long)g.dels, (unsigned long long)g.mkdirs,
	       (unsigned long long)g.rmdirs, (unsigned long long)g.prefix_rmdirs,
	       (unsigned long long)g.root_rmdirs, (unsigned long long)g.key_recreates,
	       (unsigned long long)g.dir_recreates, ref.n, cv_model_keys(&ref));
	cv_model_free(&snap);
	cv_model_free(&ref);
	shmsync_detach(w);
	return 0;
}

/* ---- readers ----------------------------------------------------------- */

static int reader(void *arg)
{
	int id = (int)(intptr_t)arg;
	struct cv_imp r = {0};
	const char *name = reader_names[id];
	unsigned long long rng = seed ^ (0x9e3779b97f4a7c15ULL * (unsigned long long)(id + 1));
	shmsync_worker *w = st_attach();
	uint64_t cursor = shmsync_cursor(w);
	if (id == R_EVERY)
		atomic_store(&sh->every_cur, cursor);
	cv_gate_arrive(&gate);
	uint64_t start = atomic_load(&sh->start);
	T_EQ(cursor, start); /* everyone attached before the first commit */
	struct cv_gen g;
	struct cv_model ref = {0}, snap = {0};
	cv_gen_init(&g, seed);
	uint64_t ref_tick = start, imports = 0, ticks_max = 0, ticks_sum = 0, waits = 0;
	char err[512];
	double idle_since = st_now();
	for (;;) {
		uint64_t fin = atomic_load(&sh->final);
		if (fin && cursor >= fin)
			break;
		int rc;
		cv_imp_begin(&r, cursor);
		unsigned dice = (unsigned)(t_rand(&rng) % 3);
		switch (id) {
		case R_EVERY:
			rc = shmsync_import_next(w, 200000000, cv_imp_cb, &r);
			break;
		case R_SLEEPY:
			usleep((useconds_t)(1000 + t_rand(&rng) % 9000));
			rc = shmsync_import_next(w, 200000000, cv_imp_cb, &r);
			break;
		case R_ERRATIC:
			if (dice == 0) {
				/* Offline while it dawdles: it pins no versions. */
				shmsync_offline(w);
				shmsync_view v;
				T_EQ(shmsync_get(w, "/a/", "k0", 2, &v), -ESTALE);
				usleep((useconds_t)(t_rand(&rng) % 3000));
				rc = shmsync_import_next(w, 200000000, cv_imp_cb, &r);
			} else if (dice == 1) {
				uint64_t target = cursor + 1 + t_rand(&rng) % 40;
				if (fin && target > fin)
					target = fin;
				rc = shmsync_import_until(w, target, 200000000, cv_imp_cb, &r);
				if (rc >= 0 && shmsync_cursor(w) < target)
					T_FAIL("%s: import_until(%llu) stopped at %llu", name,
					       (unsigned long long)target,
					       (unsigned long long)shmsync_cursor(w));
			} else {
				rc = shmsync_import_next(w, 200000000, cv_imp_cb, &r);
			}
			break;
		default:
			if (cur_round->slow_lag) {
				/* Far enough behind that the log cannot hold what it
				 * missed, however fast the writer is: a RESET. */
				shmsync_stats st;
				do {
					usleep(2000);
					T_OK(shmsync_stat(w, &st));
				} while (st.tick < cursor + cur_round->slow_lag && !atomic_load(&sh->final));
			} else {
				usleep((useconds_t)cur_round->slow_ms * 1000);
			}
			rc = shmsync_import_next(w, 200000000, cv_imp_cb, &r);
			break;
		}
		if (rc == -ETIMEDOUT) {
			waits++;
			if (st_now() - idle_since > 10)
				T_FAIL("%s: no new tick for 10 s at cursor %llu", name,
				       (unsigned long long)cursor);
			continue;
		}
		if (rc < 0)
			T_FAIL("%s: import: %s", name, shmsync_strerror(rc));
		uint64_t to = cv_imp_end(&r, w, rc, name);
		if (to == cursor)
			continue; /* import_until(cursor): nothing new */
		idle_since = st_now();
		imports++;
		uint64_t span = to - cursor;
		ticks_sum += span;
		if (span > ticks_max)
			ticks_max = span;
		if (id == R_EVERY && span != 1)
			T_FAIL("%s: one import covered ticks (%llu, %llu]", name, (unsigned long long)cursor,
			       (unsigned long long)to);
		cursor = to;
		/* The model built from the stream is the snapshot... */
		cv_imp_vs_snapshot(&r, w, &snap, name);
		/* ...and both are what the writer had written by that tick. */
		while (ref_tick < to)
			cv_gen_batch(&g, &ref, NULL, ++ref_tick);
		if (cv_model_cmp(&ref, &snap, true, err, sizeof(err)) < 0)
			T_FAIL("%s: at tick %llu, the writer's state vs the snapshot: %s", name,
			       (unsigned long long)to, err);
		if (id == R_EVERY)
			atomic_store(&sh->every_cur, to);
	}
	atomic_store(&sh->resets[id], r.resets);
	char path[320];
	cv_model_save(&r.model, cv_path(path, sizeof(path), "reader%d.model", id));
	printf("  %-10s: %llu imports, ticks per import mean %.1f max %llu; "
	       "delivered %llu dels, %llu rmdirs, %llu mkdirs, %llu puts, %llu resets; "
	       "%llu empty waits\n",
	       name, (unsigned long long)imports, imports ? (double)ticks_sum / (double)imports : 0.0,
	       (unsigned long long)ticks_max, (unsigned long long)r.dels, (unsigned long long)r.rmdirs,
	       (unsigned long long)r.mkdirs, (unsigned long long)r.puts, (unsigned long long)r.resets,
	       (unsigned long long)waits);
	if (id == R_SLEEPY && ticks_max < 2)
		T_FAIL("%s: never coalesced two ticks in one import", name);
	cv_model_free(&r.model);
	cv_model_free(&snap);
	cv_model_free(&ref);
	shmsync_detach(w);
	return 0;
}

static void run_round(const struct round *rd)
{
	if (rd->slow_lag)
		printf("round %s: log %zu bytes, %d batches, slow reader imports %llu ticks behind\n",
		       rd->name, rd->log_bytes, rd->batches, (unsigned long long)rd->slow_lag);
	else
		printf("round %s: default log (capacity / 16), %d batches, slow reader sleeps %d ms\n",
		       rd->name, rd->batches, rd->slow_ms);
	cur_round = rd;
	memset(sh, 0, sizeof(*sh));
	shmsync_root_opts o = {.log_bytes = rd->log_bytes};
	pid_t root = cv_start_root(&o);
	cv_gate_init(&gate);
	pid_t kids[NREADERS + 1];
	kids[0] = cv_spawn("writer", writer, NULL);
	for (int i = 0; i < NREADERS; i++)
		kids[i + 1] = cv_spawn(reader_names[i], reader, (void *)(intptr_t)i);
	cv_gate_spawned(&gate);
	double t0 = st_now();
	cv_gate_open(&gate, NREADERS + 1);
	cv_wait_all(kids, NREADERS + 1, 100);
	cv_gate_done(&gate);
	cv_stop_root(root);
	/* Every reader ended with the writer's final state. */
	struct cv_model wm = {0}, rm = {0};
	char path[320], err[512];
	cv_model_load(&wm, cv_path(path, sizeof(path), "writer.model"));
	for (int i = 0; i < NREADERS; i++) {
		cv_model_load(&rm, cv_path(path, sizeof(path), "reader%d.model", i));
		if (cv_model_cmp(&wm, &rm, true, err, sizeof(err)) < 0)
			T_FAIL("%s reader's final state vs the writer's: %s", reader_names[i], err);
	}
	cv_model_free(&wm);
	cv_model_free(&rm);
	uint64_t slow_resets = atomic_load(&sh->resets[R_SLOW]);
	T_EQ(atomic_load(&sh->resets[R_EVERY]), 0);
	if (rd->expect_slow_reset) {
		if (slow_resets == 0)
			T_FAIL("round %s: the slow reader never fell off the log (no RESET)", rd->name);
	} else {
		for (int i = 0; i < NREADERS; i++)
			if (atomic_load(&sh->resets[i]))
				T_FAIL("round %s: the %s reader got a RESET "
				       "with a log that retains everything",
				       rd->name, reader_names[i]);
	}
	printf("round %s: ok in %.2f s, all %d readers equal the writer's final state\n", rd->name,
	       st_now() - t0, NREADERS);
}

int main(void)
{
	cv_setup(120, 110);
	seed = t_seed(0x5eed0de1);
	printf("sync_deletions: signal path %s\n", st_signal_name());
	sh = cv_shared(sizeof(*sh));
	static const struct round rounds[] = {
		{"retained", 0, 6000, 30, 0, false},
		{"overrun", (size_t)64 << 10, 6000, 0, 2500, true},
	};
	for (size_t i = 0; i < sizeof(rounds) / sizeof(rounds[0]); i++)
		run_round(&rounds[i]);
	printf("sync_deletions: ok\n");
	return 0;
}
