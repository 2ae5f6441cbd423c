/* Replication, --durable: a batch is acked only once JetStream has stored
 * its tick on a quorum. kill -9 one NATS node mid-stream (each of the three
 * in turn, each restarted and settled before the next): the roots keep going, the
 * writers finish, and no acked batch is lost: every one is in the leader,
 * in the follower, and in a root rebuilt from the stream alone. */
#include "repl_support.h"

#define BATCHES 600

int main(void)
{
	struct rt t;
	rt_start(&t, "durable", 23222);
	char lp[512], fp[512], rp[512];
	rt_sock(&t, "leader", lp, sizeof(lp));
	rt_sock(&t, "follower", fp, sizeof(fp));
	rt_sock(&t, "rebuilt", rp, sizeof(rp));
	/* The lease outlasts a JetStream election, so losing a node does not
	 * cost the leader its lead. */
	const char *largs[] = {"--replicate", t.urls,      "--stream", "dur", "--replicas",
			       "3",           "--durable", "--lease",  "10",  "--snapshot-ticks",
			       "300",         NULL};
	const char *fargs[] = {"--follow", t.urls, "--stream", "dur", "--lease", "10", NULL};
	pid_t leader = rt_serve(&t, "leader", largs, 20000000000LL, NULL);
	T_ASSERT(leader > 0);
	rt_mkdir(lp, "/w/");
	pid_t follower = rt_serve(&t, "follower", fargs, 20000000000LL, NULL);
	T_ASSERT(follower > 0);

	pid_t wl = rt_writer(&t, "leader", "l", BATCHES, 5);
	pid_t wf = rt_writer(&t, "follower", "f", BATCHES, 5);
	/* One node at a time, each back and settled before the next goes:
	 * the cluster keeps its quorum throughout. */
	for (int node = 1; node <= 3; node++) {
		rt_sleep_ms(500);
		T_EQ(rt_cluster(&t, "kill", node), 0);
		printf("killed NATS node %d\n", node);
		rt_sleep_ms(1500);
		T_EQ(rt_cluster(&t, "restart", node), 0);
		rt_sleep_ms(3000);
	}
	int rl = rt_wait_writer(wl, 180000000000LL), rf = rt_wait_writer(wf, 180000000000LL);
	/* The roots kept going: both writers got every batch acked. */
	T_EQ(rl, 0);
	T_EQ(rf, 0);
	T_EQ(rt_check_acked(&t, "f", fp), BATCHES);
	T_EQ(rt_check_acked(&t, "l", fp), BATCHES);
	uint64_t tick = 0;
	uint64_t hl = rt_state_hash(fp, &tick, NULL);
	bool leader_alive = waitpid(leader, NULL, WNOHANG) == 0; /* a zombie is gone too */
	if (!leader_alive)
		rt_untrack(leader);
	if (leader_alive) {
		T_EQ(rt_check_acked(&t, "l", lp), BATCHES);
		T_EQ(rt_check_acked(&t, "f", lp), BATCHES);
		uint64_t tl = tick;
		T_ASSERT(rt_state_hash(lp, &tl, NULL) == hl);
	} else {
		/* A lease that could not be renewed while JetStream elected
		 * leaders lapsed: the follower took over, which is the lease
		 * working, and the old leader stepped down. */
		T_ASSERT(rt_log_has(&t, "follower", "took over the stream"));
		printf("the lease moved to the follower while nodes were down\n");
	}

	/* The stream alone holds it all: the leader's host is gone (kill -9),
	 * a root rebuilt from the stream has every acked batch. */
	if (leader_alive) {
		kill(leader, SIGKILL);
		waitpid(leader, NULL, 0);
		rt_untrack(leader);
	}
	rt_stop_root(follower);
	const char *rargs[] = {"--follow", t.urls, "--stream", "dur", NULL};
	pid_t rebuilt = rt_serve(&t, "rebuilt", rargs, 30000000000LL, NULL);
	T_ASSERT(rebuilt > 0);
	T_EQ(rt_check_acked(&t, "l", rp), BATCHES);
	T_EQ(rt_check_acked(&t, "f", rp), BATCHES);
	uint64_t tr = tick;
	T_ASSERT(rt_state_hash(rp, &tr, NULL) == hl);
	rt_stop_root(rebuilt);
	return rt_pass();
}
