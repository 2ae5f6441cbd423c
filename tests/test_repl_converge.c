/* Replication: a leader root and a follower root on one machine, a
 * three-node JetStream cluster with the stream at R3, workers writing on
 * both. Both roots reach the same state at the same tick (the same hash,
 * version ticks included), every acked batch is on both, and a follower's
 * worker reads its own writes at the tick its ack named. */
#include "repl_support.h"

#define WRITERS 2
#define BATCHES 150

int main(void)
{
	struct rt t;
	rt_start(&t, "converge", 17222);
	char lp[512], fp[512];
	rt_sock(&t, "leader", lp, sizeof(lp));
	rt_sock(&t, "follower", fp, sizeof(fp));

	const char *largs[] = {"--replicate",      t.urls, "--stream", "conv", "--replicas", "3",
			       "--snapshot-ticks", "100",  NULL};
	const char *fargs[] = {"--follow", t.urls, "--stream", "conv", NULL};
	pid_t leader = rt_serve(&t, "leader", largs, 20000000000LL, NULL);
	T_ASSERT(leader > 0);
	rt_mkdir(lp, "/w/");
	pid_t follower = rt_serve(&t, "follower", fargs, 20000000000LL, NULL);
	T_ASSERT(follower > 0);

	/* Writers on both roots at once: the follower's go through the leader. */
	pid_t w[2 * WRITERS];
	const char *names[2 * WRITERS] = {"l0", "l1", "f0", "f1"};
	for (int i = 0; i < 2 * WRITERS; i++)
		w[i] = rt_writer(&t, i < WRITERS ? "leader" : "follower", names[i], BATCHES, 0);
	for (int i = 0; i < 2 * WRITERS; i++) {
		int rc = rt_wait_writer(w[i], 120000000000LL);
		if (rc != 0)
			T_FAIL("writer %s exited %d (see its stderr above)", names[i], rc);
	}

	uint64_t tick = 0, items_l = 0, items_f = 0;
	uint64_t hl = rt_state_hash(lp, &tick, &items_l);
	uint64_t tf = tick;
	uint64_t hf = rt_state_hash(fp, &tf, &items_f);
	printf("leader at tick %llu: %llu items, hash %016llx; follower: %llu items, hash %016llx\n",
	       (unsigned long long)tick, (unsigned long long)items_l, (unsigned long long)hl,
	       (unsigned long long)items_f, (unsigned long long)hf);
	/* One directory, its counter, a key per batch. */
	T_EQ(items_l, 2 + 2 * WRITERS * BATCHES);
	T_EQ(tf, tick);
	T_ASSERT(hl == hf);
	T_ASSERT(rt_tick(fp) == tick);

	/* Every acked batch is on both roots; the counter counted each once. */
	for (int i = 0; i < 2 * WRITERS; i++) {
		T_EQ(rt_check_acked(&t, names[i], lp), BATCHES);
		T_EQ(rt_check_acked(&t, names[i], fp), BATCHES);
	}
	shmsync_worker *wk;
	T_OK(shmsync_attach(&wk, fp));
	T_OK(shmsync_import_until(wk, tick, 10000000000LL, NULL, NULL));
	shmsync_view v;
	T_OK(shmsync_get(wk, "/w/", "count", 5, &v));
	int64_t count;
	T_EQ(v.len, 8);
	memcpy(&count, v.data, 8);
	T_EQ(count, 2 * WRITERS * BATCHES);
	shmsync_stats st;
	T_OK(shmsync_stat(wk, &st));
	T_EQ(st.repl_role, SHMSYNC_REPL_FOLLOWER);
	T_EQ(st.repl_stored_tick, tick);
	shmsync_detach(wk);
	T_OK(shmsync_attach(&wk, lp));
	T_OK(shmsync_stat(wk, &st));
	T_EQ(st.repl_role, SHMSYNC_REPL_LEADER);
	shmsync_detach(wk);

	rt_stop_root(follower);
	rt_stop_root(leader);
	return rt_pass();
}
