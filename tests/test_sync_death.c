/* Death, with real processes and SIGKILL.
 *
 * (a) A worker killed mid-export (a tight loop of one-add batches, never
 *     waiting for acks) or mid-import (asleep in import_next with nothing to
 *     import, or looping imports while another worker commits), at a random
 *     moment, round after round:
 *     - its slot is released within 10 ms of kill(): a monitor worker polls
 *       the root's published worker count and stamps the moment it drops;
 *     - every batch whose export returned 0 is applied, and at most one more
 *       (the one published in the instant before the kill): the victim
 *       counts its successful exports in a shared page, each adds 1 to a
 *       counter;
 *     - the root's bytes_in_use returns to the baseline measured before the
 *       victim attached, with no commit after the release (the published
 *       tick does not move while we wait, at most 1 s);
 *     - an honest worker goes on committing, during and after.
 * (b) The root killed with SIGKILL while workers wait: one in import_next
 *     (no timeout), one in wait_committed (no timeout) for a batch the root
 *     never acked (the root is SIGSTOPped first, so nothing is acked), one in
 *     export blocked on its full ring. Each returns -ESHUTDOWN within 100 ms
 *     of the kill, and every later call returns at once. Then once more with
 *     a running root and three workers asleep in import_next.
 *
 * Usage: test_sync_death [rounds] (default 30: 10 of each of the 3 ways to die).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "synctest.h"
#include "synctest_death.h"

#define MS 1000000LL
/* The bound, checked in the normal build. Under ASan the root drains
 * the dead worker's ring several times slower, so there the bound is 50 ms
 * (it still catches a release that waits for a timer or a commit). */
#if defined(__SANITIZE_ADDRESS__)
#define RELEASE_BOUND_NS (50 * MS)
#else
#define RELEASE_BOUND_NS (10 * MS)
#endif
#define SHUTDOWN_BOUND_NS (100 * MS)

enum { MODE_EXPORT, MODE_IMPORT_ASLEEP, MODE_IMPORT_LOOP, NMODES };
static const char *const mode_name[] = {"mid-export", "asleep in import_next", "looping imports"};

/* The page the processes of part (a) share. */
struct ctl {
	_Atomic int stop;
	struct sd_monitor m; /* the monitor */
	/* honest worker */
	_Atomic int h_run, h_paused;
	_Atomic uint64_t h_commits;
	/* victim */
	_Atomic int v_state; /* 1 attached, 2 in its loop */
	_Atomic uint64_t v_ok, v_imports;
};

static struct ctl *C;

/* Imports until the snapshot is the published tick. */
static void catch_up(shmsync_worker *w)
{
	for (;;) {
		shmsync_stats s;
		T_OK(shmsync_stat(w, &s));
		if (shmsync_cursor(w) >= s.tick)
			return;
		int rc = shmsync_import_until(w, s.tick, 5000 * MS, NULL, NULL);
		if (rc < 0)
			T_FAIL("import_until %llu: %s", (unsigned long long)s.tick, shmsync_strerror(rc));
	}
}

/* What the monitor does on demand: the counter at the published tick. */
static int64_t monitor_read(shmsync_worker *w)
{
	catch_up(w);
	return sd_read_counter(w, "");
}

/* Overwrites one 16-byte value again and again (so its bytes in use stay
 * put), keeping up with the published tick; offline while paused. */
static int honest(void)
{
	shmsync_worker *w = st_attach();
	uint64_t n = 0;
	while (!atomic_load(&C->stop)) {
		if (!atomic_load(&C->h_run)) {
			if (!atomic_load(&C->h_paused)) {
				shmsync_offline(w);
				atomic_store(&C->h_paused, 1);
			}
			sd_sleep_ns(100000);
			continue;
		}
		atomic_store(&C->h_paused, 0);
		char v[16];
		snprintf(v, sizeof(v), "h%014llu", (unsigned long long)n++);
		shmsync_batch *b;
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_put(b, "/h/", "k", 1, v, 16));
		int64_t t = st_commit(b);
		if (t <= 0)
			T_FAIL("the honest worker's commit %llu: %s", (unsigned long long)n,
			       shmsync_strerror((int)t));
		int rc = shmsync_import_until(w, (uint64_t)t, 5000 * MS, NULL, NULL);
		if (rc < 0)
			T_FAIL("honest import_until: %s", shmsync_strerror(rc));
		atomic_fetch_add(&C->h_commits, 1);
	}
	shmsync_detach(w);
	return 0;
}

static int victim(int mode)
{
	shmsync_worker *w = st_attach();
	atomic_store(&C->v_state, 1);
	if (mode == MODE_EXPORT) {
		atomic_store(&C->v_state, 2);
		for (;;) {
			shmsync_batch *b;
			T_OK(shmsync_begin(w, &b));
			T_OK(shmsync_add(b, "/d/", "c", 1, 1));
			uint64_t seq;
			int rc = shmsync_export(b, 0, &seq);
			if (rc < 0)
				T_FAIL("victim export: %s", shmsync_strerror(rc));
			atomic_fetch_add(&C->v_ok, 1);
		}
	}
	/* Importers export a few batches first, each acked: all must count. */
	for (int i = 0; i < 5; i++) {
		shmsync_batch *b;
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_add(b, "/d/", "c", 1, 1));
		int64_t t = st_commit(b);
		if (t <= 0)
			T_FAIL("victim commit: %s", shmsync_strerror((int)t));
		atomic_fetch_add(&C->v_ok, 1);
	}
	atomic_store(&C->v_state, 2);
	for (;;) {
		int rc = shmsync_import_next(w, -1, NULL, NULL);
		if (rc < 0)
			T_FAIL("victim import_next: %s", shmsync_strerror(rc));
		atomic_fetch_add(&C->v_imports, 1);
	}
}

static void pause_honest(void)
{
	atomic_store(&C->h_run, 0);
	bool ok;
	SD_WAIT(ok, atomic_load(&C->h_paused), 5000 * MS);
	if (!ok)
		T_FAIL("the honest worker did not pause");
}

/* Polls until the root's bytes_in_use is `want` and has stayed there for
 * `still_ns`; false after timeout_ns. */
static bool bytes_settle(uint64_t want, int64_t still_ns, int64_t timeout_ns)
{
	int64_t end = sd_now_ns() + timeout_ns, since = 0;
	while (sd_now_ns() < end) {
		uint64_t b = atomic_load(&C->m.bytes);
		if (b == want) {
			if (!since)
				since = sd_now_ns();
			if (sd_now_ns() - since >= still_ns)
				return true;
		} else {
			since = 0;
		}
		sd_sleep_ns(100000);
	}
	return false;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/* The state the test starts from, one batch. */
static void fill_setup_a(shmsync_batch *b, void *arg)
{
	(void)arg;
	T_OK(shmsync_mkdir(b, "/d/"));
	T_OK(shmsync_mkdir(b, "/h/"));
	T_OK(shmsync_add(b, "/d/", "c", 1, 0));
	T_OK(shmsync_put(b, "/h/", "k", 1, "h-initial-value", 16));
}

static void part_a(int rounds, unsigned long long seed)
{
	int64_t *all_took = calloc((size_t)rounds, sizeof(int64_t));
	int nall = 0;
	T_ASSERT(all_took);
	C = sd_shared(sizeof(*C));
	pid_t root = sd_start_root(NULL);
	/* The state: /d/c the counter, /h/k the honest worker's value. */
	sd_setup_batch(fill_setup_a, NULL);
	pid_t mon = sd_fork();
	if (mon == 0)
		exit(sd_monitor_run(&C->m, &C->stop, monitor_read));
	pid_t hon = sd_fork();
	if (hon == 0)
		exit(honest());
	bool ok;
	SD_WAIT(ok, atomic_load(&C->m.workers) == 2 && atomic_load(&C->h_paused), 5000 * MS);
	T_ASSERT(ok);
	/* Warm up: the honest worker's overwrites leave garbage that the root
	 * frees; the baseline is the level once all of it is gone. */
	atomic_store(&C->h_run, 1);
	SD_WAIT(ok, atomic_load(&C->h_commits) >= 50, 10000 * MS);
	T_ASSERT(ok);
	pause_honest();
	sd_monitor_fresh(&C->m);
	uint64_t tick0 = atomic_load(&C->m.tick), base = sd_monitor_stable_bytes(&C->m, 300 * MS, 5000 * MS);
	T_EQ(atomic_load(&C->m.tick), tick0);
	int64_t counter = sd_monitor_counter(&C->m);
	T_EQ(counter, 0);
	printf("baseline: %llu bytes in use at tick %llu\n", (unsigned long long)base,
	       (unsigned long long)tick0);

	unsigned long long rng = seed;
	int64_t worst[NMODES] = {0}, sum[NMODES] = {0};
	int count[NMODES] = {0};
	uint64_t ok_total = 0, extra_total = 0;
	for (int round = 0; round < rounds; round++) {
		int mode = round % NMODES;
		atomic_store(&C->v_ok, 0);
		atomic_store(&C->v_imports, 0);
		atomic_store(&C->v_state, 0);
		/* Others commit while the victim comes and goes. */
		atomic_store(&C->h_run, 1);
		pid_t v = sd_fork();
		if (v == 0)
			exit(victim(mode));
		SD_WAIT(ok, atomic_load(&C->v_state) == 2 && atomic_load(&C->m.workers) == 3, 10000 * MS);
		if (!ok)
			T_FAIL("round %d: the victim did not start (state %d, workers %u)", round,
			       atomic_load(&C->v_state), atomic_load(&C->m.workers));
		if (mode != MODE_IMPORT_LOOP)
			pause_honest();
		/* A random moment: up to 20 ms into the export loop (ring full and
		 * asleep or not), 2-20 ms into the import loop. */
		int64_t delay = (int64_t)(t_rand(&rng) % (20 * MS));
		if (mode != MODE_EXPORT)
			delay += 2 * MS;
		if (mode == MODE_IMPORT_LOOP) {
			uint64_t imp = atomic_load(&C->v_imports);
			SD_WAIT(ok, atomic_load(&C->v_imports) > imp, 5000 * MS);
			if (!ok)
				T_FAIL("round %d: the victim imports nothing", round);
		}
		sd_sleep_ns(delay);
		atomic_store(&C->m.drop_ns, 0);
		atomic_store(&C->m.watch_below, 3);
		int64_t kill_ns = sd_now_ns();
		T_OK(kill(v, SIGKILL));
		SD_WAIT(ok, atomic_load(&C->m.drop_ns) != 0, 5000 * MS);
		if (!ok)
			T_FAIL("round %d (%s): the victim's slot was not released within 5 s", round,
			       mode_name[mode]);
		int64_t took = atomic_load(&C->m.drop_ns) - kill_ns;
		atomic_store(&C->m.watch_below, 0);
		T_EQ(sd_reap(v), 128 + SIGKILL);
		if (took > worst[mode])
			worst[mode] = took;
		sum[mode] += took;
		count[mode]++;
		/* The bound holds for the median; one round may lose a few time
		 * slices to other processes on this shared machine, not more. */
		all_took[nall++] = took;
		if (took > 10 * RELEASE_BOUND_NS)
			T_FAIL("round %d (%s): slot released %.3f ms after kill(), over 10x the bound of "
			       "%.0f ms "
			       "(load average %s)",
			       round, mode_name[mode], (double)took / 1e6, (double)RELEASE_BOUND_NS / 1e6,
			       sd_loadavg());
		if (mode == MODE_IMPORT_LOOP) {
			/* The others went on committing across the kill. */
			uint64_t h = atomic_load(&C->h_commits);
			SD_WAIT(ok, atomic_load(&C->h_commits) >= h + 5, 5000 * MS);
			if (!ok)
				T_FAIL("round %d: the honest worker stopped committing after the kill",
				       round);
			pause_honest();
		}
		/* Bytes back to baseline with no further commit. */
		sd_monitor_fresh(&C->m);
		uint64_t t0 = atomic_load(&C->m.tick);
		if (!bytes_settle(base, 0, 1000 * MS))
			T_FAIL("round %d (%s): bytes_in_use %llu, baseline %llu, 1 s after the release",
			       round, mode_name[mode], (unsigned long long)atomic_load(&C->m.bytes),
			       (unsigned long long)base);
		sd_monitor_fresh(&C->m);
		if (atomic_load(&C->m.tick) != t0)
			T_FAIL("round %d: a commit happened (tick %llu -> %llu) while nobody exported", round,
			       (unsigned long long)t0, (unsigned long long)atomic_load(&C->m.tick));
		/* Published batches applied: at least every export that returned 0,
		 * at most one more. */
		uint64_t vok = atomic_load(&C->v_ok);
		int64_t now = sd_monitor_counter(&C->m);
		int64_t got = now - counter;
		if (got < (int64_t)vok || got > (int64_t)vok + 1)
			T_FAIL("round %d (%s): the counter grew by %lld, %llu exports returned 0", round,
			       mode_name[mode], (long long)got, (unsigned long long)vok);
		if (mode != MODE_EXPORT)
			T_EQ(got, (int64_t)vok); /* every one of them was acked */
		ok_total += vok;
		extra_total += (uint64_t)got - vok;
		counter = now;
		/* And the others go on. */
		uint64_t h = atomic_load(&C->h_commits);
		atomic_store(&C->h_run, 1);
		SD_WAIT(ok, atomic_load(&C->h_commits) >= h + 10, 5000 * MS);
		if (!ok)
			T_FAIL("round %d: the honest worker stopped committing", round);
		printf("round %2d %-22s: released in %6.3f ms, %5llu exports ok, counter +%lld, bytes back "
		       "at "
		       "tick %llu\n",
		       round, mode_name[mode], (double)took / 1e6, (unsigned long long)vok, (long long)got,
		       (unsigned long long)t0);
	}
	qsort(all_took, (size_t)nall, sizeof(all_took[0]), cmp_i64);
	int64_t median = all_took[nall / 2];
	printf("release after kill(): median %.3f ms, worst %.3f ms over %d rounds (bound %.0f ms for the "
	       "median)\n",
	       (double)median / 1e6, (double)all_took[nall - 1] / 1e6, nall, (double)RELEASE_BOUND_NS / 1e6);
	if (median > RELEASE_BOUND_NS)
		T_FAIL("the median release took %.3f ms, bound %.0f ms (load average %s)",
		       (double)median / 1e6, (double)RELEASE_BOUND_NS / 1e6, sd_loadavg());
	free(all_took);
	atomic_store(&C->stop, 1);
	T_EQ(sd_reap(hon), 0);
	T_EQ(sd_reap(mon), 0);
	sd_untrack(root);
	st_stop_root(root);
	for (int m = 0; m < NMODES; m++)
		if (count[m])
			printf("part a: %-22s: %d kills, release after kill() mean %.3f ms, worst %.3f ms "
			       "(bound %.0f ms)\n",
			       mode_name[m], count[m], (double)sum[m] / count[m] / 1e6,
			       (double)worst[m] / 1e6, (double)RELEASE_BOUND_NS / 1e6);
	printf("part a: %llu acknowledged-or-returned exports applied, %llu in-flight extra applied\n",
	       (unsigned long long)ok_total, (unsigned long long)extra_total);
	munmap(C, sizeof(*C));
}

/* ---- (b) the root dies ------------------------------------------------- */

enum { W_IMPORT, W_COMMITTED, W_EXPORT, NW };
static const char *const w_name[] = {"import_next(-1)", "wait_committed(-1)", "export on a full ring"};

struct waiter {
	_Atomic int state; /* 1 attached, 2 about to block */
	_Atomic int go;
	_Atomic int rc;
	_Atomic int64_t ret_ns;
	_Atomic int after_rc[4];
	_Atomic int64_t after_ns;
};

struct bctl {
	struct waiter w[NW];
};

static int waiter(struct waiter *me, int kind)
{
	shmsync_worker *w = st_attach();
	catch_up(w);
	atomic_store(&me->state, 1);
	bool ok;
	SD_WAIT(ok, atomic_load(&me->go), 10000 * MS);
	T_ASSERT(ok);
	int rc;
	uint64_t seq = 0, tick;
	shmsync_batch *b = NULL;
	switch (kind) {
	case W_IMPORT:
		atomic_store(&me->state, 2);
		rc = shmsync_import_next(w, -1, NULL, NULL);
		break;
	case W_COMMITTED:
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_put(b, "/r/", "x", 1, "y", 1));
		T_OK(shmsync_export(b, 0, &seq));
		atomic_store(&me->state, 2);
		rc = shmsync_wait_committed(w, seq, &tick, -1);
		break;
	default: {
		/* Fill the ring (the root is stopped and drains nothing). */
		for (int i = 0;; i++) {
			T_ASSERT(i < 100000);
			T_OK(shmsync_begin(w, &b));
			T_OK(shmsync_put(b, "/r/", "z", 1, "0123456789abcdef0123456789abcdef", 32));
			rc = shmsync_export(b, SHMSYNC_NONBLOCK, &seq);
			if (rc == -EAGAIN)
				break; /* b kept */
			T_OK(rc);
		}
		atomic_store(&me->state, 2);
		rc = shmsync_export(b, 0, &seq);
		if (rc < 0)
			shmsync_abort(b);
		break;
	}
	}
	int64_t t = sd_now_ns();
	atomic_store(&me->rc, rc);
	atomic_store(&me->ret_ns, t);
	/* Nothing hangs afterwards either. */
	atomic_store(&me->after_rc[0], shmsync_import_next(w, -1, NULL, NULL));
	atomic_store(&me->after_rc[1], seq ? shmsync_wait_committed(w, seq, &tick, -1) : -ESHUTDOWN);
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_put(b, "/r/", "x", 1, "y", 1));
	int erc = shmsync_export(b, 0, &seq);
	if (erc < 0)
		shmsync_abort(b);
	atomic_store(&me->after_rc[2], erc);
	atomic_store(&me->after_rc[3], shmsync_import_until(w, shmsync_cursor(w) + 5, -1, NULL, NULL));
	atomic_store(&me->after_ns, sd_now_ns() - t);
	shmsync_detach(w);
	return 0;
}

static char proc_state(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return '?';
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && p[1] && p[2] ? p[2] : '?';
}

/* The state the test starts from, one batch. */
static void fill_setup_b(shmsync_batch *b, void *arg)
{
	(void)arg;
	T_OK(shmsync_mkdir(b, "/r/"));
}

/* One run of part b; false if a waiter missed the time bound (the other
 * checks fail the test at once). */
static bool part_b_once(bool stop_root)
{
	bool late = false;
	struct bctl *B = sd_shared(sizeof(*B));
	/* A small ring, so a few exports fill it. */
	shmsync_root_opts o = {.port_ring_bytes = 4096};
	pid_t root = sd_start_root(&o);
	sd_setup_batch(fill_setup_b, NULL);
	pid_t kids[NW];
	for (int i = 0; i < NW; i++) {
		kids[i] = sd_fork();
		if (kids[i] == 0)
			exit(waiter(&B->w[i], stop_root ? i : W_IMPORT));
	}
	bool ok;
	SD_WAIT(ok, B->w[0].state && B->w[1].state && B->w[2].state, 10000 * MS);
	T_ASSERT(ok);
	if (stop_root) {
		/* Stopped, the root acks nothing and drains nothing. */
		T_OK(kill(root, SIGSTOP));
		SD_WAIT(ok, proc_state(root) == 'T', 5000 * MS);
		T_ASSERT(ok);
	}
	for (int i = 0; i < NW; i++)
		atomic_store(&B->w[i].go, 1);
	SD_WAIT(ok, B->w[0].state == 2 && B->w[1].state == 2 && B->w[2].state == 2, 10000 * MS);
	T_ASSERT(ok);
	/* Long enough to be asleep in the kernel, not spinning. */
	sd_sleep_ns(100 * MS);
	for (int i = 0; i < NW; i++)
		if (atomic_load(&B->w[i].ret_ns))
			T_FAIL("waiter %d returned %d before the root died", i, atomic_load(&B->w[i].rc));
	int64_t kill_ns = sd_now_ns();
	T_OK(kill(root, SIGKILL));
	SD_WAIT(ok, B->w[0].ret_ns && B->w[1].ret_ns && B->w[2].ret_ns, 5000 * MS);
	if (!ok)
		T_FAIL("a waiting worker still waits 5 s after the root died");
	for (int i = 0; i < NW; i++)
		T_EQ(sd_reap(kids[i]), 0);
	T_EQ(sd_reap(root), 128 + SIGKILL);
	unlink(st_sock);
	for (int i = 0; i < NW; i++) {
		struct waiter *me = &B->w[i];
		int kind = stop_root ? i : W_IMPORT;
		int64_t took = me->ret_ns - kill_ns;
		printf("part b (%s root): %-22s -> %s after %.3f ms; later calls returned in %.3f ms\n",
		       stop_root ? "stopped" : "running", w_name[kind], shmsync_strerror(me->rc),
		       (double)took / 1e6, (double)me->after_ns / 1e6);
		if (me->rc != -ESHUTDOWN)
			T_FAIL("%s returned %d (%s), expected -ESHUTDOWN", w_name[kind], me->rc,
			       shmsync_strerror(me->rc));
		if (took > SHUTDOWN_BOUND_NS) {
			printf("%s returned %.3f ms after the kill, bound %.0f ms (load average %s)\n",
			       w_name[kind], (double)took / 1e6, (double)SHUTDOWN_BOUND_NS / 1e6,
			       sd_loadavg());
			late = true;
		}
		for (int k = 0; k < 4; k++)
			if (me->after_rc[k] != -ESHUTDOWN)
				T_FAIL("%s: later call %d returned %d, expected -ESHUTDOWN", w_name[kind], k,
				       me->after_rc[k]);
		if (me->after_ns > SHUTDOWN_BOUND_NS)
			T_FAIL("%s: later calls took %.3f ms", w_name[kind], (double)me->after_ns / 1e6);
	}
	/* The socket is dead: attaching fails at once, it does not hang. */
	shmsync_worker *w;
	int rc = shmsync_attach(&w, st_sock);
	T_ASSERT(rc == -ENOENT || rc == -ECONNREFUSED);
	munmap(B, sizeof(*B));
	return !late;
}

/* The 100 ms bound must hold in one of three runs: a run can lose its time
 * slices to other processes on this shared machine, a lost wake-up would
 * miss it every time. */
static void part_b(bool stop_root)
{
	for (int attempt = 0; attempt < 3; attempt++)
		if (part_b_once(stop_root))
			return;
	T_FAIL("a waiter missed the %.0f ms bound in three runs out of three",
	       (double)SHUTDOWN_BOUND_NS / 1e6);
}

int main(int argc, char **argv)
{
	sd_init(120);
	int rounds = argc > 1 ? atoi(argv[1]) : 30;
	T_ASSERT(rounds > 0);
	unsigned long long seed = t_seed(20250301);
	printf("sync_death: signal path %s, %d kill rounds\n", st_signal_name(), rounds);
	part_b(true);
	part_b(false);
	part_a(rounds, seed);
	printf("sync_death: ok\n");
	return 0;
}
