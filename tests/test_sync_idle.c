/* A worker idle in import_next pins change-log bytes only, never versions.
 *
 * Worker A imports once, then sleeps in import_until(the tick of B's last
 * commit) while worker B overwrites the same keys thousands of times, one
 * commit a tick. Because A is offline while it
 * sleeps, the versions B supersedes are freed as B goes: bytes in use stay
 * flat. The worker table shows A offline, at its old cursor, with pinned
 * bytes that are change-log bytes only (at most the log). When A finally
 * wakes, it imports the coalesced changes (one per key) and sees B's last
 * values.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>

#include "synctest.h"

#define KEYS 16
#define ROUNDS 3000

struct shared {
	_Atomic int a_ready;
	_Atomic int a_changes;
	_Atomic int a_ok;
};

static int count(const shmsync_change *c, void *arg)
{
	(void)c;
	++*(int *)arg;
	return 0;
}

int main(void)
{
	alarm(120);
	struct shared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	T_ASSERT(sh != MAP_FAILED);
	pid_t root = st_start_root(NULL);

	/* B makes the directory first, so A's first import has something. */
	shmsync_worker *setup;
	pid_t p = fork();
	if (p == 0) {
		setup = st_attach();
		shmsync_batch *b;
		T_OK(shmsync_begin(setup, &b));
		T_OK(shmsync_mkdir(b, "/idle/"));
		for (int k = 0; k < KEYS; k++)
			T_OK(shmsync_put(b, "/idle/", &k, sizeof(k), "v0", 2));
		T_ASSERT(st_commit(b) > 0);
		shmsync_detach(setup);
		exit(0);
	}
	T_EQ(st_wait(p), 0);

	pid_t a = fork();
	if (a == 0) {
		shmsync_worker *w = st_attach();
		int n = 0;
		T_ASSERT(shmsync_import_until(w, 2, 5000000000LL, count, &n) >= 0);
		/* Asleep (offline) until B's last commit: it pins no versions. */
		/* B's rounds, then one more commit once B has looked at the table. */
		uint64_t target = shmsync_cursor(w) + ROUNDS + 1;
		atomic_store(&sh->a_ready, 1);
		int changes = 0;
		T_ASSERT(shmsync_import_until(w, target, 60000000000LL, count, &changes) >= 0);
		/* Coalesced: one change per key, whatever the number of rounds. */
		T_EQ(changes, KEYS);
		atomic_store(&sh->a_changes, changes);
		shmsync_view v;
		int k = 0;
		T_OK(shmsync_get(w, "/idle/", &k, sizeof(k), &v));
		char want[64];
		snprintf(want, sizeof(want), "round %d key %d", ROUNDS - 1, k);
		T_ASSERT(v.len == strlen(want) && memcmp(v.data, want, v.len) == 0);
		atomic_store(&sh->a_ok, 1);
		shmsync_detach(w);
		exit(0);
	}
	while (!atomic_load(&sh->a_ready))
		usleep(1000);
	usleep(20000); /* let A fall asleep */

	shmsync_worker *w = st_attach();
	/* B only writes: it reads no snapshot, so it does not pin one. */
	shmsync_offline(w);
	shmsync_batch *b;
	char val[64];
	shmsync_stats st0, st1;
	T_OK(shmsync_stat(w, &st0));
	uint64_t max_bytes = 0, min_bytes = UINT64_MAX;
	int offline_seen = 0, pinned_log_only = 0;
	for (int r = 0; r < ROUNDS; r++) {
		T_OK(shmsync_begin(w, &b));
		for (int k = 0; k < KEYS; k++) {
			snprintf(val, sizeof(val), "round %d key %d", r, k);
			T_OK(shmsync_put(b, "/idle/", &k, sizeof(k), val, strlen(val)));
		}
		T_ASSERT(st_commit(b) > 0);
		if (r % 100 == 99) {
			shmsync_stats st;
			T_OK(shmsync_stat(w, &st));
			if (st.bytes_in_use > max_bytes)
				max_bytes = st.bytes_in_use;
			if (st.bytes_in_use < min_bytes)
				min_bytes = st.bytes_in_use;
			shmsync_worker_info info[4];
			int nw = shmsync_workers(w, info, 4);
			for (int i = 0; i < nw && i < 4; i++) {
				if (info[i].pid != a || info[i].state != SHMSYNC_WORKER_OFFLINE)
					continue;
				offline_seen++;
				/* Offline: no versions pinned, so what it pins is log
				 * bytes, bounded by the log. */
				T_ASSERT(info[i].epoch == UINT64_MAX);
				if (info[i].pinned_bytes <= (uint64_t)64 << 20)
					pinned_log_only++;
			}
		}
	}
	/* The table is republished at most every 50 ms: a fast run may end
	 * before it shows A asleep, so look once more until it does (A is
	 * still asleep: it waits for one more tick). */
	for (int tries = 0; tries < 200 && offline_seen == 0; tries++) {
		usleep(10000);
		shmsync_worker_info info[4];
		int nw = shmsync_workers(w, info, 4);
		for (int i = 0; i < nw && i < 4; i++)
			if (info[i].pid == a && info[i].state == SHMSYNC_WORKER_OFFLINE) {
				offline_seen++;
				T_ASSERT(info[i].epoch == UINT64_MAX);
				if (info[i].pinned_bytes <= (uint64_t)64 << 20)
					pinned_log_only++;
			}
	}
	T_OK(shmsync_stat(w, &st1));
	/* The tick that wakes A: key 0 again, with the value it already has. */
	T_OK(shmsync_begin(w, &b));
	int k0 = 0;
	snprintf(val, sizeof(val), "round %d key %d", ROUNDS - 1, k0);
	T_OK(shmsync_put(b, "/idle/", &k0, sizeof(k0), val, strlen(val)));
	T_ASSERT(st_commit(b) > 0);
	/* Versions were freed as B went, although A was attached throughout. */
	printf("idle: bytes in use %llu..%llu over %d rounds of %d overwrites (start %llu); A seen offline "
	       "%d times\n",
	       (unsigned long long)min_bytes, (unsigned long long)max_bytes, ROUNDS, KEYS,
	       (unsigned long long)st0.bytes_in_use, offline_seen);
	T_ASSERT(max_bytes - st0.bytes_in_use < (uint64_t)1 << 20);
	T_ASSERT(offline_seen > 0 && pinned_log_only == offline_seen);
	shmsync_detach(w);
	T_EQ(st_wait(a), 0);
	T_ASSERT(atomic_load(&sh->a_ok));
	st_stop_root(root);
	printf("sync_idle: ok\n");
	return 0;
}
