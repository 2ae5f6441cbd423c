/* Stall policies: a worker stopped (SIGSTOP) while it holds a snapshot.
 *
 * For each policy, with max_read_pin_ns = 100 ms: worker S imports, takes a
 * view of a key, and is stopped; worker W then overwrites the same keys for
 * thousands of ticks.
 *  - wait: memory grows (S pins every superseded version) and the worker
 *    table names S as live with pinned bytes;
 *  - kill: S is killed (SIGKILL through its pidfd) and released;
 *  - revoke: memory stays bounded; the table shows S revoked; the memory S
 *    had pinned is reused while it is stopped (its view's bytes changed
 *    under it, with poisoning on); once continued, its view is invalid,
 *    reads report ESTALE, and it converges on W's state after a reset (its
 *    cursor was dropped from the change log too: max_retained_log_bytes).
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>

#include "synctest.h"

#define KEYS 16
#define ROUNDS 2000
#define VLEN 200

struct shared {
	_Atomic int ready, go_on;
	_Atomic int result; /* 1: S checked out fine */
};

static struct shared *sh;

static void value(char *buf, int round, int key)
{
	memset(buf, 'a' + key % 26, VLEN);
	snprintf(buf, VLEN, "round %d key %d", round, key);
}

static int count_resets(const shmsync_change *c, void *arg)
{
	if (c->kind == SHMSYNC_RESET)
		++*(int *)arg;
	return 0;
}

static int stalled(int policy)
{
	shmsync_worker *w = st_attach();
	T_ASSERT(shmsync_import_until(w, 2, 5000000000LL, NULL, NULL) >= 0);
	shmsync_view v;
	int k = 0;
	T_OK(shmsync_get(w, "/s/", &k, sizeof(k), &v));
	char copy[VLEN];
	T_ASSERT(v.len == VLEN);
	memcpy(copy, v.data, VLEN);
	atomic_store(&sh->ready, 1);
	raise(SIGSTOP); /* the parent continues us after W's run */
	while (!atomic_load(&sh->go_on))
		usleep(1000);
	if (policy == SHMSYNC_STALL_REVOKE) {
		/* The memory under the view was freed and reused meanwhile. */
		T_ASSERT(memcmp(v.data, copy, VLEN) != 0);
		T_EQ(shmsync_view_valid(w, &v), 0);
		T_EQ(shmsync_get(w, "/s/", &k, sizeof(k), &v), -ESTALE);
		/* Rejoin: import (its cursor was dropped from the log too, so
		 * the first import is a reset), then W's last values. */
		int rc, resets = 0;
		do
			rc = shmsync_import_next(w, 0, count_resets, &resets);
		while (rc > 0);
		T_EQ(resets, 1);
		T_OK(shmsync_get(w, "/s/", &k, sizeof(k), &v));
		char want[VLEN];
		value(want, ROUNDS - 1, k);
		T_ASSERT(v.len == VLEN && memcmp(v.data, want, VLEN) == 0);
	} else {
		/* wait: still valid, still the old bytes. */
		T_EQ(shmsync_view_valid(w, &v), 1);
		T_ASSERT(memcmp(v.data, copy, VLEN) == 0);
	}
	atomic_store(&sh->result, 1);
	shmsync_detach(w);
	return 0;
}

static void run(int policy)
{
	static const char *names[] = {"wait", "kill", "revoke"};
	memset(sh, 0, sizeof(*sh));
	/* A small change-log allowance: the stopped worker's cursor is dropped
	 * as well, so under revoke it rejoins through a reset. */
	shmsync_root_opts o = {.max_read_pin_ns = 100000000,
			       .stall_policy = policy,
			       .debug_poison = 1,
			       .max_retained_log_bytes = policy == SHMSYNC_STALL_REVOKE ? 64 << 10 : 0};
	o.warn = NULL;
	pid_t root = st_start_root(&o);
	shmsync_worker *w = NULL;
	pid_t setup = fork();
	if (setup == 0) {
		w = st_attach();
		shmsync_offline(w);
		shmsync_batch *b;
		char val[VLEN];
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_mkdir(b, "/s/"));
		for (int k = 0; k < KEYS; k++) {
			value(val, -1, k);
			T_OK(shmsync_put(b, "/s/", &k, sizeof(k), val, VLEN));
		}
		T_ASSERT(st_commit(b) > 0);
		shmsync_detach(w);
		exit(0);
	}
	T_EQ(st_wait(setup), 0);
	pid_t s = fork();
	if (s == 0)
		exit(stalled(policy));
	while (!atomic_load(&sh->ready))
		usleep(1000);
	int status;
	T_ASSERT(waitpid(s, &status, WUNTRACED) == s && WIFSTOPPED(status));

	w = st_attach();
	shmsync_offline(w);
	shmsync_stats st0, st;
	T_OK(shmsync_stat(w, &st0));
	uint64_t max_bytes = 0;
	char val[VLEN];
	double start = st_now();
	for (int r = 0; r < ROUNDS; r++) {
		shmsync_batch *b;
		T_OK(shmsync_begin(w, &b));
		for (int k = 0; k < KEYS; k++) {
			value(val, r, k);
			T_OK(shmsync_put(b, "/s/", &k, sizeof(k), val, VLEN));
		}
		T_ASSERT(st_commit(b) > 0);
		if (r % 50 == 49) {
			T_OK(shmsync_stat(w, &st));
			if (st.bytes_in_use > max_bytes)
				max_bytes = st.bytes_in_use;
		}
		/* Let the policy act before the run is over. */
		if (r == ROUNDS / 2 && st_now() - start < 0.3)
			usleep(300000);
	}
	usleep(200000); /* the table is republished every 50 ms */
	shmsync_worker_info info[4];
	int nw = shmsync_workers(w, info, 4);
	int state = 0;
	uint64_t pinned = 0;
	for (int i = 0; i < nw && i < 4; i++)
		if (info[i].pid == s) {
			state = info[i].state;
			pinned = info[i].pinned_bytes;
		}
	T_OK(shmsync_stat(w, &st));
	uint64_t peak = max_bytes - st0.bytes_in_use, held = st.bytes_in_use - st0.bytes_in_use;
	printf("%s: over %d ticks of %d x %d-byte overwrites, bytes in use peaked %llu above the start and "
	       "ended %llu above it; S state %d, pins %llu\n",
	       names[policy], ROUNDS, KEYS, VLEN, (unsigned long long)peak, (unsigned long long)held, state,
	       (unsigned long long)pinned);
	fflush(stdout);
	uint64_t all = (uint64_t)ROUNDS * KEYS * VLEN;
	if (policy == SHMSYNC_STALL_WAIT) {
		T_ASSERT(held > all / 2); /* everything superseded stays pinned */
		T_EQ(state, SHMSYNC_WORKER_LIVE);
		T_ASSERT(pinned > all / 2);
	} else if (policy == SHMSYNC_STALL_REVOKE) {
		/* Bounded: once revoked (after 100 ms) everything S pinned was
		 * freed, and W's versions are freed as it goes. */
		T_ASSERT(held < all / 20);
		T_EQ(state, SHMSYNC_WORKER_REVOKED);
	} else {
		T_ASSERT(held < all / 20);
		T_EQ(state, 0); /* killed and released */
	}
	if (policy == SHMSYNC_STALL_KILL) {
		T_ASSERT(waitpid(s, &status, 0) == s && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	} else {
		atomic_store(&sh->go_on, 1);
		kill(s, SIGCONT);
		T_EQ(st_wait(s), 0);
		T_EQ(atomic_load(&sh->result), 1);
	}
	shmsync_detach(w);
	st_stop_root(root);
}

int main(void)
{
	alarm(120);
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	T_ASSERT(sh != MAP_FAILED);
	run(SHMSYNC_STALL_WAIT);
	run(SHMSYNC_STALL_KILL);
	run(SHMSYNC_STALL_REVOKE);
	printf("sync_stall: ok\n");
	return 0;
}
