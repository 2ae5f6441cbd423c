/* kill -9 at random points, round after round, while other workers run.
 *
 * Each round forks a victim worker that attaches and does a random mix of
 * what workers do: export batches that add 1 to the counter /d/c (blocking
 * or SHMSYNC_NONBLOCK, sometimes waiting for the ack), imports (timeout 0
 * or 2 ms), gets and dir_iters while online, shmsync_offline and a sleep.
 * Before each step it writes which step it is in to a shared page, and
 * after each export that returned 0 it counts it there. The parent
 * SIGKILLs it after a random delay (0-5 ms after it attached; one round in
 * ten 0-2 ms after the fork, which may land in the attach itself) while two
 * steady workers keep committing (fixed-size overwrites of their own keys)
 * and importing their commits (read your writes). After each kill:
 *
 * - the root releases the victim: the published worker count is back to 3
 *   (the steady workers and the monitor) within 2 s;
 * - bytes in use return exactly to the baseline within 1 s. The baseline
 *   is the root's bytes_in_use with nothing retired: measured once, at the
 *   start, with only the steady workers and the monitor attached, all of
 *   them offline (so the minimum read epoch is "none" and the root may free
 *   everything retired) and held still for 300 ms. The live state is the
 *   same at every tick by construction: the same keys (the counter and 4
 *   keys per steady worker), each always overwritten with a value of the
 *   same length, no deletes, so tables never grow and no tombstones exist;
 *   the victim writes only the counter (8 bytes) and reading allocates
 *   nothing in the root segment. So after the release, once the steady
 *   workers are paused offline, every version superseded meanwhile must be
 *   freed and bytes_in_use must equal the baseline exactly;
 * - no acked batch is lost: the counter grew by at least the number of
 *   exports that returned 0 in the victim, and by at most one more (the
 *   batch published in the ring in the instant before the kill, before its
 *   export returned);
 * - the root never fails: its process is alive after every round, the steady
 *   workers commit across the kills (they never see an error), and at the
 *   end it exits 0 on SIGTERM.
 *
 * Teeth (checked on broken copies of sync/root.c): a release that does not
 * drain the dead worker's ring fails the counter check (at round 45 of 200
 * in one run); a root that keeps counting a dead worker's last read epoch
 * fails the baseline check at once.
 *
 * Usage: test_sync_killloop [kills, default 200]
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
#define NSTEADY 2
#define SKEYS 4
#define MAX_KILLS 100000

enum { PH_FORKED, PH_ATTACH, PH_EXPORT, PH_WAIT_ACK, PH_IMPORT, PH_READ, PH_OFFLINE, NPH };
static const char *const ph_name[NPH] = {"forked (before attach)", "in attach",  "mid-export",
					 "waiting for an ack",     "mid-import", "mid-read",
					 "offline, asleep"};

struct ctl {
	_Atomic int stop;
	struct sd_monitor m; /* the monitor */
	/* steady workers */
	_Atomic int s_run;
	_Atomic unsigned s_want_gen; /* pause request */
	_Atomic unsigned s_paused_gen[NSTEADY];
	_Atomic uint64_t s_commits[NSTEADY];
	/* the victim */
	_Atomic int v_phase, v_attached;
	_Atomic uint64_t v_ok, v_acked, v_steps, v_reads;
};

static struct ctl *C;

/* ---- the monitor ------------------------------------------------------ */

/* Online at the published tick (import_until also brings an offline
 * worker whose cursor is there back online). */
static void catch_up(shmsync_worker *w)
{
	for (;;) {
		shmsync_stats s;
		T_OK(shmsync_stat(w, &s));
		int rc = shmsync_import_until(w, s.tick, 5000 * MS, NULL, NULL);
		if (rc < 0)
			T_FAIL("monitor: import_until %llu: %s", (unsigned long long)s.tick,
			       shmsync_strerror(rc));
		if (shmsync_cursor(w) >= s.tick)
			return;
	}
}

/* What the monitor does on demand: the counter at the published tick. */
static int64_t monitor_read(shmsync_worker *w)
{
	catch_up(w);
	return sd_read_counter(w, "monitor: ");
}

/* ---- steady workers ----------------------------------------------------- */

static size_t steady_len(unsigned k)
{
	return 24 + 40 * k; /* the same length for a key, always */
}

static void steady_value(char *buf, unsigned id, unsigned k, uint64_t n)
{
	size_t len = steady_len(k);
	memset(buf, '.', len);
	char head[40];
	int h = snprintf(head, sizeof(head), "s%u-k%u-%llu", id, k, (unsigned long long)n);
	memcpy(buf, head, (size_t)h);
}

static int steady(unsigned id, unsigned long long seed)
{
	unsigned long long rng = seed * 31 + id + 3;
	shmsync_worker *w = st_attach();
	char dir[8], key[4], val[256];
	snprintf(dir, sizeof(dir), "/s%u/", id);
	uint64_t n = 0;
	while (!atomic_load(&C->stop)) {
		if (!atomic_load(&C->s_run)) {
			unsigned g = atomic_load(&C->s_want_gen);
			if (atomic_load(&C->s_paused_gen[id]) != g) {
				shmsync_offline(w);
				atomic_store(&C->s_paused_gen[id], g);
			}
			sd_sleep_ns(50000);
			continue;
		}
		unsigned k = (unsigned)(t_rand(&rng) % SKEYS);
		snprintf(key, sizeof(key), "k%u", k);
		steady_value(val, id, k, ++n);
		shmsync_batch *b;
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_put(b, dir, key, strlen(key), val, steady_len(k)));
		int64_t t = st_commit(b);
		if (t <= 0)
			T_FAIL("steady %u: commit %llu: %s", id, (unsigned long long)n,
			       shmsync_strerror((int)t));
		int rc = shmsync_import_until(w, (uint64_t)t, 5000 * MS, NULL, NULL);
		if (rc < 0)
			T_FAIL("steady %u: import_until %lld: %s", id, (long long)t, shmsync_strerror(rc));
		shmsync_view v;
		rc = shmsync_get(w, dir, key, strlen(key), &v);
		if (rc < 0 || v.len != steady_len(k) || memcmp(v.data, val, v.len) != 0 ||
		    v.tick != (uint64_t)t)
			T_FAIL("steady %u: read its own write %s%s of tick %lld: rc %d, tick %llu", id, dir,
			       key, (long long)t, rc, rc == 0 ? (unsigned long long)v.tick : 0ull);
		if (n % 8 == 0) {
			rc = shmsync_get(w, "/d/", "c", 1, &v);
			if (rc < 0 || v.len != 8)
				T_FAIL("steady %u: get /d/c: %s, len %zu", id, shmsync_strerror(rc),
				       rc == 0 ? v.len : 0);
		}
		atomic_fetch_add(&C->s_commits[id], 1);
	}
	shmsync_detach(w);
	return 0;
}

/* ---- the victim --------------------------------------------------------- */

static int on_key(const void *k, size_t kn, shmsync_view v, void *arg)
{
	unsigned id = *(unsigned *)arg;
	char buf[8] = "";
	memcpy(buf, k, kn < 7 ? kn : 7);
	unsigned kk;
	if (sscanf(buf, "k%u", &kk) != 1 || kk >= SKEYS || v.len != steady_len(kk) ||
	    ((const char *)v.data)[0] != 's' || ((const char *)v.data)[1] != (char)('0' + id))
		T_FAIL("victim: dir_iter /s%u/: a bad entry (key %.*s, %zu bytes)", id, (int)kn,
		       (const char *)k, v.len);
	return 0;
}

static void phase(int p)
{
	atomic_store_explicit(&C->v_phase, p, memory_order_relaxed);
}

static int victim(unsigned long long seed)
{
	unsigned long long rng = seed;
	phase(PH_ATTACH);
	shmsync_worker *w = st_attach();
	atomic_store(&C->v_attached, 1);
	bool online = true; /* attach puts it online */
	shmsync_batch *kept = NULL;
	for (;;) {
		unsigned r = (unsigned)(t_rand(&rng) % 100);
		atomic_fetch_add_explicit(&C->v_steps, 1, memory_order_relaxed);
		if (r < 30) {
			/* a burst of exports, each adding 1 (a long one fills the
			 * ring and waits for room) */
			phase(PH_EXPORT);
			unsigned n = 1 + (unsigned)(t_rand(&rng) % 200);
			int flags = t_rand(&rng) % 2 ? SHMSYNC_NONBLOCK : 0;
			uint64_t seq = 0;
			for (unsigned i = 0; i < n; i++) {
				shmsync_batch *b = kept;
				kept = NULL;
				if (!b) {
					T_OK(shmsync_begin(w, &b));
					T_OK(shmsync_add(b, "/d/", "c", 1, 1));
				}
				int rc = shmsync_export(b, flags, &seq);
				if (rc == -EAGAIN && flags) {
					kept = b; /* the ring is full: export it later */
					break;
				}
				if (rc < 0)
					T_FAIL("victim: export: %s", shmsync_strerror(rc));
				atomic_fetch_add(&C->v_ok, 1);
			}
			if (seq && t_rand(&rng) % 2 == 0) {
				phase(PH_WAIT_ACK);
				uint64_t tick;
				int rc = shmsync_wait_committed(w, seq, &tick, (int64_t)(t_rand(&rng) % MS));
				if (rc == 0)
					atomic_fetch_add(&C->v_acked, 1);
				else if (rc != -ETIMEDOUT)
					T_FAIL("victim: wait_committed: %s", shmsync_strerror(rc));
			}
		} else if (r < 55) {
			phase(PH_IMPORT);
			int64_t timeout = t_rand(&rng) % 2 ? 0 : MS;
			int rc = shmsync_import_next(w, timeout, NULL, NULL);
			if (rc >= 0)
				online = true;
			else if (rc == -ETIMEDOUT)
				online = online && timeout == 0; /* a wait went offline */
			else
				T_FAIL("victim: import_next: %s", shmsync_strerror(rc));
		} else if (r < 85) {
			if (!online)
				continue;
			phase(PH_READ);
			unsigned n = 1 + (unsigned)(t_rand(&rng) % 100);
			for (unsigned i = 0; i < n; i++) {
				shmsync_view v;
				int rc = shmsync_get(w, "/d/", "c", 1, &v);
				if (rc < 0 || v.len != 8)
					T_FAIL("victim: get /d/c: %s", shmsync_strerror(rc));
				unsigned id = (unsigned)(t_rand(&rng) % NSTEADY);
				char dir[8];
				snprintf(dir, sizeof(dir), "/s%u/", id);
				rc = shmsync_dir_iter(w, dir, on_key, &id);
				if (rc < 0)
					T_FAIL("victim: dir_iter %s: %s", dir, shmsync_strerror(rc));
				atomic_fetch_add_explicit(&C->v_reads, 1, memory_order_relaxed);
			}
		} else {
			phase(PH_OFFLINE);
			shmsync_offline(w);
			online = false;
			sd_sleep_ns((int64_t)(t_rand(&rng) % (MS / 4)));
		}
	}
}

/* ---- the parent --------------------------------------------------------- */

static void pause_steady(void)
{
	atomic_store(&C->s_run, 0);
	unsigned g = atomic_fetch_add(&C->s_want_gen, 1) + 1;
	bool ok;
	for (unsigned i = 0; i < NSTEADY; i++) {
		SD_WAIT(ok, atomic_load(&C->s_paused_gen[i]) == g, 5000 * MS);
		if (!ok)
			T_FAIL("steady worker %u did not pause", i);
	}
}

static uint64_t steady_commits(void)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < NSTEADY; i++)
		n += atomic_load(&C->s_commits[i]);
	return n;
}

static void root_alive(pid_t root, int round)
{
	int status;
	pid_t p = waitpid(root, &status, WNOHANG);
	if (p == root) {
		sd_untrack(root);
		T_FAIL("round %d: the root died (status 0x%x)", round, status);
	}
}

/* A failing run leaves no socket behind (the root it kills cannot). */
static void unlink_sock(void)
{
	if (getpid() == sd_parent && st_sock[0])
		unlink(st_sock);
}

/* The state the test starts from, one batch. */
static void fill_setup(shmsync_batch *b, void *arg)
{
	(void)arg;
	T_OK(shmsync_mkdir(b, "/d/"));
	T_OK(shmsync_add(b, "/d/", "c", 1, 0));
	char val[256], dir[8], key[4];
	for (unsigned i = 0; i < NSTEADY; i++) {
		snprintf(dir, sizeof(dir), "/s%u/", i);
		T_OK(shmsync_mkdir(b, dir));
		for (unsigned k = 0; k < SKEYS; k++) {
			snprintf(key, sizeof(key), "k%u", k);
			steady_value(val, i, k, 0);
			T_OK(shmsync_put(b, dir, key, strlen(key), val, steady_len(k)));
		}
	}
}

int main(int argc, char **argv)
{
	int kills = argc > 1 ? atoi(argv[1]) : 200;
	if (kills <= 0 || kills > MAX_KILLS)
		T_FAIL("usage: test_sync_killloop [kills, default 200]");
	sd_init(240);
	atexit(unlink_sock);
	unsigned long long seed = t_seed((unsigned long long)getpid() * 2654435761u);
	unsigned long long rng = seed;
	C = sd_shared(sizeof(*C));
	pid_t root = sd_start_root(NULL);

	sd_setup_batch(fill_setup, NULL);
	pid_t mon = sd_fork();
	if (mon == 0)
		exit(sd_monitor_run(&C->m, &C->stop, monitor_read));
	pid_t st[NSTEADY];
	for (unsigned i = 0; i < NSTEADY; i++) {
		st[i] = sd_fork();
		if (st[i] == 0)
			exit(steady(i, seed));
	}
	bool ok;
	SD_WAIT(ok, atomic_load(&C->m.workers) == NSTEADY + 1, 5000 * MS);
	if (!ok)
		T_FAIL("the steady workers and the monitor did not attach");
	/* Warm up, then the baseline: everyone offline, nothing retired left. */
	atomic_store(&C->s_run, 1);
	SD_WAIT(ok, steady_commits() >= 100, 10000 * MS);
	T_ASSERT(ok);
	pause_steady();
	sd_monitor_fresh(&C->m);
	uint64_t base = sd_monitor_stable_bytes(&C->m, 300 * MS, 5000 * MS);
	int64_t counter = sd_monitor_counter(&C->m);
	T_EQ(counter, 0);
	printf("baseline: %llu bytes in use at tick %llu (steady workers and monitor offline)\n",
	       (unsigned long long)base, (unsigned long long)atomic_load(&C->m.tick));

	int by_phase[NPH] = {0};
	uint64_t ok_total = 0, acked_total = 0, steps_total = 0, reads_total = 0;
	int inflight_rounds = 0, steady_moved = 0;
	int64_t release_worst = 0, settle_worst = 0, release_sum = 0, settle_sum = 0;
	int64_t t_start = sd_now_ns();
	for (int round = 0; round < kills; round++) {
		atomic_store(&C->v_ok, 0);
		atomic_store(&C->v_acked, 0);
		atomic_store(&C->v_steps, 0);
		atomic_store(&C->v_reads, 0);
		atomic_store(&C->v_attached, 0);
		atomic_store(&C->v_phase, PH_FORKED);
		uint64_t sc0 = steady_commits();
		atomic_store(&C->s_run, 1);
		unsigned long long vseed = t_rand(&rng);
		bool early = t_rand(&rng) % 10 == 0;
		int64_t delay =
			early ? (int64_t)(t_rand(&rng) % (2 * MS)) : (int64_t)(t_rand(&rng) % (5 * MS));
		pid_t v = sd_fork();
		if (v == 0)
			exit(victim(vseed));
		if (!early) {
			SD_WAIT(ok, atomic_load(&C->v_attached), 10000 * MS);
			if (!ok)
				T_FAIL("round %d: the victim did not attach", round);
		}
		sd_sleep_ns(delay);
		int ph = atomic_load(&C->v_phase);
		int64_t kill_ns = sd_now_ns();
		T_OK(kill(v, SIGKILL));
		T_EQ(sd_reap(v), 128 + SIGKILL);
		by_phase[ph]++;
		/* Released: the worker count is back to the steady workers and
		 * the monitor (also when it died before its attach completed). */
		sd_monitor_fresh(&C->m);
		SD_WAIT(ok, atomic_load(&C->m.workers) == NSTEADY + 1, 2000 * MS);
		if (!ok)
			T_FAIL("round %d (killed %s): %u workers 2 s after the kill, want %d", round,
			       ph_name[ph], atomic_load(&C->m.workers), NSTEADY + 1);
		int64_t released = sd_now_ns() - kill_ns;
		/* The steady workers go offline; then every byte retired
		 * meanwhile must be freed. */
		pause_steady();
		if (steady_commits() > sc0)
			steady_moved++;
		int64_t t_pause = sd_now_ns();
		sd_monitor_fresh(&C->m);
		SD_WAIT(ok, atomic_load(&C->m.bytes) == base, 1000 * MS);
		if (!ok)
			T_FAIL("round %d (killed %s): bytes_in_use %llu, baseline %llu, 1 s after the steady "
			       "workers went offline (load average %s)",
			       round, ph_name[ph], (unsigned long long)atomic_load(&C->m.bytes),
			       (unsigned long long)base, sd_loadavg());
		int64_t settled = sd_now_ns() - t_pause;
		/* No acked batch lost; at most one more (published, export not
		 * yet returned). */
		uint64_t vok = atomic_load(&C->v_ok), vacked = atomic_load(&C->v_acked);
		int64_t now = sd_monitor_counter(&C->m);
		int64_t got = now - counter;
		if (got < (int64_t)vok || got > (int64_t)vok + 1)
			T_FAIL("round %d (killed %s): the counter grew by %lld, but %llu exports returned 0 "
			       "(%llu acked)",
			       round, ph_name[ph], (long long)got, (unsigned long long)vok,
			       (unsigned long long)vacked);
		if (got == (int64_t)vok + 1)
			inflight_rounds++;
		counter = now;
		root_alive(root, round);
		ok_total += vok;
		acked_total += vacked;
		steps_total += atomic_load(&C->v_steps);
		reads_total += atomic_load(&C->v_reads);
		release_sum += released;
		settle_sum += settled;
		if (released > release_worst)
			release_worst = released;
		if (settled > settle_worst)
			settle_worst = settled;
	}
	double took = (double)(sd_now_ns() - t_start) / 1e9;
	/* The root still serves: the steady workers commit once more. */
	uint64_t sc = steady_commits();
	atomic_store(&C->s_run, 1);
	SD_WAIT(ok, steady_commits() >= sc + 10, 5000 * MS);
	if (!ok)
		T_FAIL("the steady workers stopped committing after the last kill");
	atomic_store(&C->stop, 1);
	for (unsigned i = 0; i < NSTEADY; i++)
		T_EQ(sd_reap(st[i]), 0);
	T_EQ(sd_reap(mon), 0);

	printf("%d kills in %.1f s: ", kills, took);
	const char *sep = "";
	for (int p = 0; p < NPH; p++)
		if (by_phase[p]) {
			printf("%s%d %s", sep, by_phase[p], ph_name[p]);
			sep = ", ";
		}
	printf("\n");
	printf("victims: %llu steps, %llu reads, %llu exports returned 0 (%llu acked), all applied; %d "
	       "rounds "
	       "applied one more (published in the instant before the kill)\n",
	       (unsigned long long)steps_total, (unsigned long long)reads_total, (unsigned long long)ok_total,
	       (unsigned long long)acked_total, inflight_rounds);
	printf("release after kill: mean %.2f ms, worst %.2f ms; bytes back to the baseline %llu after "
	       "pausing: mean %.1f ms, worst %.1f ms\n",
	       (double)release_sum / kills / 1e6, (double)release_worst / 1e6, (unsigned long long)base,
	       (double)settle_sum / kills / 1e6, (double)settle_worst / 1e6);
	printf("steady workers: %llu commits, moving in %d of %d rounds; counter %lld\n",
	       (unsigned long long)steady_commits(), steady_moved, kills, (long long)counter);
	if (steady_moved < kills / 2)
		T_FAIL("the steady workers committed in only %d of %d rounds", steady_moved, kills);
	kill(root, SIGTERM);
	T_EQ(sd_reap(root), 0);
	unlink(st_sock);
	printf("OK\n");
	return 0;
}
