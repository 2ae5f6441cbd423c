/* Replication, recovery: a root started with --replicate rebuilds the state
 * from the stream, the latest snapshot plus the ticks after it, before it
 * serves: the same state hash (version ticks included) at the same tick,
 * after a clean stop and after kill -9; with ticks only (no snapshot yet)
 * and with a snapshot; and workers go on from the stream's tick numbers. */
#include "repl_support.h"

static void restart(struct rt *t, pid_t *root, const char *const *args, bool kill9)
{
	if (kill9) {
		kill(*root, SIGKILL);
		waitpid(*root, NULL, 0);
		rt_untrack(*root);
	} else {
		rt_stop_root(*root);
	}
	/* After kill -9 the lease is still held until its TTL: the restarted
	 * root is refused (and says so) until then. */
	int64_t end = rt_now_ns() + 20000000000LL;
	for (;;) {
		int st = 0;
		*root = rt_serve(t, "r", args, 30000000000LL, &st);
		if (*root > 0)
			return;
		if (!rt_log_has(t, "r", "is led by") || rt_now_ns() > end)
			T_FAIL("the root did not come back (exit status %d): see %s/r.log", st, t->dir);
		rt_sleep_ms(200);
	}
}

int main(void)
{
	struct rt t;
	rt_start(&t, "recover", 20222);
	char rp[512];
	rt_sock(&t, "r", rp, sizeof(rp));
	const char *args[] = {"--replicate", t.urls, "--stream",         "rec", "--replicas", "3",
			      "--lease",     "1",    "--snapshot-ticks", "150", NULL};
	pid_t r = rt_serve(&t, "r", args, 20000000000LL, NULL);
	T_ASSERT(r > 0);
	rt_mkdir(rp, "/w/");
	rt_mkdir(rp, "/other/dir/");
	/* Fewer ticks than a snapshot takes: the replay alone. */
	T_EQ(rt_wait_writer(rt_writer(&t, "r", "w0", 60, 0), 60000000000LL), 0);
	uint64_t t0 = 0, n0;
	uint64_t h0 = rt_state_hash(rp, &t0, &n0);
	restart(&t, &r, args, false);
	T_ASSERT(rt_log_has(&t, "r", "no snapshot, then"));
	T_EQ(rt_tick(rp), t0);
	uint64_t t1 = t0;
	T_ASSERT(rt_state_hash(rp, &t1, NULL) == h0);

	/* Past a snapshot, then more ticks after it; kill -9 this time. */
	T_EQ(rt_wait_writer(rt_writer(&t, "r", "w1", 300, 0), 60000000000LL), 0);
	/* The snapshot is written beside the commits: give it a moment. */
	rt_sleep_ms(1500);
	T_EQ(rt_wait_writer(rt_writer(&t, "r", "w2", 20, 0), 60000000000LL), 0);
	uint64_t t2 = 0, n2;
	uint64_t h2 = rt_state_hash(rp, &t2, &n2);
	T_ASSERT(n2 == n0 + 320);
	restart(&t, &r, args, true);
	T_ASSERT(rt_log_has(&t, "r", "from stream rec: the snapshot at tick"));
	T_EQ(rt_tick(rp), t2);
	uint64_t t3 = t2;
	T_ASSERT(rt_state_hash(rp, &t3, NULL) == h2);
	T_EQ(rt_check_acked(&t, "w0", rp), 60);
	T_EQ(rt_check_acked(&t, "w1", rp), 300);

	/* Commits go on from the stream's tick numbers: the next tick is t2 + 1. */
	T_EQ(rt_wait_writer(rt_writer(&t, "r", "w3", 1, 0), 60000000000LL), 0);
	T_EQ(rt_tick(rp), t2 + 1);
	rt_stop_root(r);
	return rt_pass();
}
