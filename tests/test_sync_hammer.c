/* Wake-up hammer: pairs of workers play ping-pong through the root, so
 * every move is a sleep and a wake on both sides of the protocol.
 *
 * In each pair, A exports put(/pK/, "a", i) and sleeps in import_next until
 * it sees /pK/b == i; B sleeps in import_next until it sees /pK/a == i, then
 * exports put(/pK/, "b", i). Each waits out the library's 20 us spin
 * before it moves, so the other has gone to sleep. Every move needs the root woken by a doorbell
 * (unless it is still spinning) and a worker woken by the tick futex. A
 * round counts as a sleep/wake round when import_next really slept: the
 * thread's voluntary context switches (getrusage) went up during the call.
 *
 * Failure on any lost wake: import_next runs with a 2 s timeout, and
 * -ETIMEDOUT fails the test. Two waits in the library end by themselves,
 * and would turn a lost wake into a delay instead: the futex path's worker
 * sleeps in 20 ms slices (to watch for the root's death), and the root arms
 * a 50 ms idle timer while anything is retired, which in this game is
 * always. Those cannot be told from scheduling noise by timing alone on a
 * shared 2-core machine (moves of 10-85 ms were seen on both paths while
 * other tests ran), so the wait distribution is printed, with the moves
 * that end where a slice or the timer would end them; a stall bound fails
 * the test only when given (notes/bugs.md asks for counters that would let
 * this test see those timers fire).
 *
 * The game ends at the target count of sleep/wake rounds or when its time
 * budget is spent, whichever comes first: a fixed count that had to fit in a
 * deadline failed on a CI machine that managed 450-650 rounds/s where this
 * one manages 4700 (both hammers side by side on 2 cores, each with 30 us
 * busy waits). What the test asserts does not depend on the machine's
 * speed: no import waits 2 s, late wakes stay within their allowance, and
 * at least MIN_ROUNDS rounds really slept (fewer means the game itself
 * stalled: a wake that came only with a timer, every time).
 *
 * Usage: test_sync_hammer [sleep/wake rounds in total, default 250000: each move waits out the 20 us spin
 * first] [pairs, default 2] [stall bound in ms, 0: none (default)] [time budget in s, default 60]
 * Prints rounds/s.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "synctest.h"
#include "synctest_death.h"

#define MS 1000000LL
#define MAX_PAIRS 8
#define DEFAULT_SECONDS 60
/* Past the budget, the rounds in flight finish within this, or the test fails. */
#define FINISH_SECONDS 60
#define MIN_ROUNDS 5000
#define NBUCKETS 8

/* Wait lengths of moves that slept: < 0.1, 0.3, 1, 3, 10, 20, 50 ms, more. */
static const double bucket_ms[NBUCKETS - 1] = {0.1, 0.3, 1, 3, 10, 20, 50};

struct player {
	_Atomic uint64_t moves, sleeps, waits_ns;
	_Atomic uint64_t hist[NBUCKETS];
	_Atomic int64_t worst_ns;
	_Atomic int failed;
	_Atomic uint64_t near_slice; /* moves of 19.5-21 ms */
	_Atomic uint64_t near_timer; /* moves of 49.5-52 ms */
	int slow_printed;            /* by this player only */
};

struct ctl {
	_Atomic uint64_t total_sleeps;
	_Atomic int ready; /* players attached: nobody moves before all are */
	_Atomic int stop;  /* the time budget is spent: A players end their games */
	struct player p[2 * MAX_PAIRS];
};

static struct ctl *C;
static uint64_t target;
static int64_t stall_ns;
static int npairs;

struct watch {
	char dir[16];
	const char *key;
	int64_t value; /* the key's latest value seen */
};

static int on_change(const shmsync_change *c, void *arg)
{
	struct watch *wt = arg;
	if (c->kind == SHMSYNC_RESET)
		T_FAIL("a reset in the hammer (the log overran)");
	if (c->kind == SHMSYNC_PUT && strcmp(c->dir, wt->dir) == 0 && c->key_len == 1 &&
	    memcmp(c->key, wt->key, 1) == 0) {
		T_EQ(c->value_len, 8);
		memcpy(&wt->value, c->value, 8);
	}
	return 0;
}

static long nivcsw(void)
{
	struct rusage ru;
	getrusage(RUSAGE_THREAD, &ru);
	return ru.ru_nivcsw;
}

static long vcsw(void)
{
	struct rusage ru;
	getrusage(RUSAGE_THREAD, &ru);
	return ru.ru_nvcsw;
}

/* Imports until the watched key holds `want` (or, for B, 0: stop). */
static void wait_for_value(shmsync_worker *w, struct player *me, struct watch *wt, int64_t want, bool stop_ok)
{
	while (wt->value != want && !(stop_ok && wt->value == 0)) {
		long v0 = vcsw();
		int64_t t0 = sd_now_ns();
		int rc = shmsync_import_next(w, 2000 * MS, on_change, wt);
		int64_t took = sd_now_ns() - t0;
		if (rc == -ETIMEDOUT) {
			atomic_store(&me->failed, 1);
			T_FAIL("%s waited 2 s for %s = %lld (has %lld): a lost wake",
			       wt->key[0] == 'b' ? "A" : "B", wt->key, (long long)want, (long long)wt->value);
		}
		if (rc < 0) {
			atomic_store(&me->failed, 1);
			T_FAIL("import_next: %s", shmsync_strerror(rc));
		}
		if (vcsw() == v0)
			continue; /* caught while spinning, or already there */
		atomic_fetch_add_explicit(&me->sleeps, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&me->waits_ns, (uint64_t)took, memory_order_relaxed);
		atomic_fetch_add_explicit(&C->total_sleeps, 1, memory_order_relaxed);
		int b = 0;
		while (b < NBUCKETS - 1 && (double)took >= bucket_ms[b] * 1e6)
			b++;
		atomic_fetch_add_explicit(&me->hist[b], 1, memory_order_relaxed);
		if (took >= 19500000 && took <= 21000000)
			atomic_fetch_add_explicit(&me->near_slice, 1, memory_order_relaxed);
		if (took >= 49500000 && took <= 52000000)
			atomic_fetch_add_explicit(&me->near_timer, 1, memory_order_relaxed);
		if (took >= 10 * MS && me->slow_printed++ < 10)
			printf("  slow move: %s waited %.3f ms for %s = %lld (%ld involuntary switches so "
			       "far)\n",
			       wt->key[0] == 'b' ? "A" : "B", (double)took / 1e6, wt->key, (long long)want,
			       nivcsw());
		if (took > atomic_load(&me->worst_ns))
			atomic_store(&me->worst_ns, took);
		if (stall_ns && took > stall_ns) {
			atomic_store(&me->failed, 1);
			T_FAIL("a move took %.3f ms (bound %lld ms): a wake that came late, or was lost and "
			       "made up for by a timer",
			       (double)took / 1e6, (long long)(stall_ns / MS));
		}
	}
}

static void put_i64(shmsync_worker *w, const char *dir, const char *key, int64_t v)
{
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_put(b, dir, key, 1, &v, 8));
	uint64_t seq;
	int rc = shmsync_export(b, 0, &seq);
	if (rc < 0)
		T_FAIL("export: %s", shmsync_strerror(rc));
	/* No wait for the ack: the acks ride on the same wakes; a rejected
	 * batch would show up as a value that never comes (2 s). */
}

/* Waits out the library's spin before a move: a worker spins (yielding its
 * CPU) for 20 us in import_next before it sleeps, and an answer within that
 * window would be seen without a sleep. A busy wait, not a timed sleep: a
 * nanosleep would add its timer slack, and the game is about the other
 * player's sleep, not this one's. */
#define ANSWER_DELAY_NS 30000

static void delay_answer(void)
{
	int64_t end = sd_now_ns() + ANSWER_DELAY_NS;
	while (sd_now_ns() < end)
		;
}

static int player(int pair, bool is_a)
{
	struct player *me = &C->p[2 * pair + (is_a ? 0 : 1)];
	shmsync_worker *w = st_attach();
	struct watch wt = {.key = is_a ? "b" : "a", .value = -1};
	snprintf(wt.dir, sizeof(wt.dir), "/p%d/", pair);
	char dir[16];
	snprintf(dir, sizeof(dir), "/p%d/", pair);
	/* Everyone attached before the first move, so each import stream holds
	 * every move of the game. */
	atomic_fetch_add(&C->ready, 1);
	while (atomic_load(&C->ready) < 2 * npairs)
		sd_sleep_ns(100000);
	for (int64_t i = 1;; i++) {
		if (is_a) {
			bool last = atomic_load_explicit(&C->total_sleeps, memory_order_relaxed) >= target ||
				    atomic_load_explicit(&C->stop, memory_order_relaxed);
			delay_answer();
			put_i64(w, dir, "a", last ? 0 : i);
			if (last)
				break;
			wait_for_value(w, me, &wt, i, false);
		} else {
			wait_for_value(w, me, &wt, i, true);
			if (wt.value == 0)
				break;
			delay_answer();
			put_i64(w, dir, "b", i);
		}
		atomic_fetch_add_explicit(&me->moves, 1, memory_order_relaxed);
	}
	shmsync_stats st;
	T_OK(shmsync_stat(w, &st));
	printf("pair %d %s: %llu moves, %llu slept, signal %s, uring_ops %llu, late wakes %llu (root timer "
	       "found work %llu)\n",
	       pair, is_a ? "A" : "B", (unsigned long long)atomic_load(&me->moves),
	       (unsigned long long)atomic_load(&me->sleeps), st.signal, (unsigned long long)st.uring_ops,
	       (unsigned long long)st.late_wakes, (unsigned long long)st.root_timer_found_work);
	/* A worker's wait made up for by its futex slice (the slice ran out
	 * although the wait was over) is a lost wake even though nothing timed
	 * out. A wake landing within a hair of the slice's end counts too, so
	 * allow a few in a hundred thousand, not more. (The root's figure, work
	 * its idle timer found, also counts work whose wake was simply still
	 * on its way, so it is printed, not judged.) */
	uint64_t slept = atomic_load(&me->sleeps);
	if (st.late_wakes > 2 + slept / 100000)
		T_FAIL("%llu late wakes over %llu sleeps: lost wake-ups", (unsigned long long)st.late_wakes,
		       (unsigned long long)slept);
	shmsync_detach(w);
	return 0;
}

/* The state the test starts from, one batch. */
static void fill_setup(shmsync_batch *b, void *arg)
{
	int pairs = *(const int *)arg;
	for (int k = 0; k < pairs; k++) {
		char dir[16];
		snprintf(dir, sizeof(dir), "/p%d/", k);
		T_OK(shmsync_mkdir(b, dir));
	}
}

int main(int argc, char **argv)
{
	target = argc > 1 ? strtoull(argv[1], NULL, 0) : 250000;
	npairs = argc > 2 ? atoi(argv[2]) : 2;
	int pairs = npairs;
	stall_ns = (argc > 3 ? atoll(argv[3]) : 0) * MS;
	long budget_s = argc > 4 ? atol(argv[4]) : DEFAULT_SECONDS;
	T_ASSERT(target > 0 && pairs >= 1 && pairs <= MAX_PAIRS && stall_ns >= 0 && budget_s > 0 &&
		 budget_s <= 3600);
	sd_init((unsigned)(budget_s + FINISH_SECONDS + 30));
	uint64_t min_rounds = target < MIN_ROUNDS ? target : MIN_ROUNDS;
	printf("sync_hammer: signal path %s, %d pairs, target %llu sleep/wake rounds or %ld s (at least "
	       "%llu rounds), stall bound %lld ms (0: none)\n",
	       st_signal_name(), pairs, (unsigned long long)target, budget_s, (unsigned long long)min_rounds,
	       (long long)(stall_ns / MS));
	C = sd_shared(sizeof(*C));
	pid_t root = sd_start_root(NULL);
	sd_setup_batch(fill_setup, &pairs);
	pid_t kids[2 * MAX_PAIRS];
	int64_t t0 = sd_now_ns();
	for (int k = 0; k < 2 * pairs; k++) {
		kids[k] = sd_fork();
		if (kids[k] == 0)
			exit(player(k / 2, k % 2 == 0));
	}
	/* Progress, and the time budget: past it the A players end their games;
	 * rounds still in flight must finish within FINISH_SECONDS. */
	int64_t last_print = t0;
	uint64_t done;
	for (;;) {
		done = atomic_load(&C->total_sleeps);
		bool failed = false;
		for (int k = 0; k < 2 * pairs; k++)
			failed |= atomic_load(&C->p[k].failed) != 0;
		int st;
		bool exited = false;
		for (int k = 0; k < 2 * pairs; k++)
			if (kids[k] > 0 && waitpid(kids[k], &st, WNOHANG) == kids[k]) {
				sd_untrack(kids[k]);
				kids[k] = 0;
				if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
					T_FAIL("player %d failed (%s %d) after %llu sleep/wake rounds", k,
					       WIFEXITED(st) ? "exit" : "signal",
					       WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
					       (unsigned long long)done);
				exited = true;
			}
		if (failed)
			T_FAIL("a player failed after %llu sleep/wake rounds", (unsigned long long)done);
		(void)exited;
		bool all = true;
		for (int k = 0; k < 2 * pairs; k++)
			all &= kids[k] == 0;
		if (all)
			break;
		int64_t now = sd_now_ns();
		if (now - t0 > (int64_t)budget_s * 1000000000 && !atomic_load(&C->stop)) {
			printf("  time budget of %ld s spent at %llu sleep/wake rounds: ending the games\n",
			       budget_s, (unsigned long long)done);
			atomic_store(&C->stop, 1);
		}
		if (now - t0 > (int64_t)(budget_s + FINISH_SECONDS) * 1000000000)
			T_FAIL("the games did not end %d s after the time budget (%llu sleep/wake rounds)",
			       FINISH_SECONDS, (unsigned long long)done);
		if (now - last_print > 10000 * MS) {
			printf("  %llu sleep/wake rounds after %.0f s\n", (unsigned long long)done,
			       (double)(now - t0) / 1e9);
			last_print = now;
		}
		sd_sleep_ns(10 * MS);
	}
	double secs = (double)(sd_now_ns() - t0) / 1e9;
	uint64_t moves = 0, sleeps = 0, waits = 0, hist[NBUCKETS] = {0};
	int64_t worst = 0;
	for (int k = 0; k < 2 * pairs; k++) {
		struct player *p = &C->p[k];
		moves += p->moves;
		sleeps += p->sleeps;
		waits += p->waits_ns;
		for (int b = 0; b < NBUCKETS; b++)
			hist[b] += p->hist[b];
		if (p->worst_ns > worst)
			worst = p->worst_ns;
	}
	if (sleeps < min_rounds)
		T_FAIL("only %llu sleep/wake rounds in %.1f s, fewer than %llu: the game stalled",
		       (unsigned long long)sleeps, secs, (unsigned long long)min_rounds);
	if (!atomic_load(&C->stop) && sleeps < target)
		T_FAIL("the games ended at %llu of %llu rounds with time left", (unsigned long long)sleeps,
		       (unsigned long long)target);
	sd_untrack(root);
	st_stop_root(root);
	printf("sync_hammer: %llu sleep/wake rounds (%llu moves) in %.1f s: %.0f rounds/s, %.0f moves/s; "
	       "mean wait %.1f us, worst %.3f ms\n",
	       (unsigned long long)sleeps, (unsigned long long)moves, secs, (double)sleeps / secs,
	       (double)moves / secs, sleeps ? (double)waits / (double)sleeps / 1e3 : 0.0,
	       (double)worst / 1e6);
	printf("  waits that slept:");
	for (int b = 0; b < NBUCKETS; b++) {
		if (b < NBUCKETS - 1)
			printf(" <%gms %llu", bucket_ms[b], (unsigned long long)hist[b]);
		else
			printf(" >=%gms %llu", bucket_ms[NBUCKETS - 2], (unsigned long long)hist[b]);
	}
	uint64_t near = 0, near_t = 0;
	for (int k = 0; k < 2 * pairs; k++) {
		near += C->p[k].near_slice;
		near_t += C->p[k].near_timer;
	}
	/* Reported, not failed on (see the top): where a lost wake made up for
	 * by a slice or by the root's timer would land. */
	printf("\n  moves of 19.5-21 ms (a futex-path slice ends there): %llu; of 49.5-52 ms (the root's "
	       "idle "
	       "timer): %llu\n",
	       (unsigned long long)near, (unsigned long long)near_t);
	printf("sync_hammer: ok\n");
	return 0;
}
