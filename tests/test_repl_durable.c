/* Replication, --durable: a batch is acked only once JetStream has stored
 * its tick on a quorum. kill -9 one NATS node mid-stream (each of the three
 * in turn, each restarted and settled before the next): the roots keep going, the
 * writers finish, and no acked batch is lost: every one is in the leader,
 * in the follower, and in a root rebuilt from the stream alone. */
#ifdef SHMSYNC_TEST_NO_NATS
#include "testutil.h"

int main(void)
{
	fprintf(stderr, "SKIP: built without libnats: no replication to test\n");
	return T_SKIP;
}
#else
#include <nats/nats.h>

#include "repl_support.h"

#define BATCHES 600

/* Has `stream` a leader, and are both its other replicas current, caught
 * up, and heard from by the leader within the last heard_ns? A node killed
 * moments ago still counts as current for seconds (its last activity is
 * recent enough): only one heard from since its restart is back. */
static bool stream_settled(jsCtx *js, const char *stream, int64_t heard_ns)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = 1000;
	if (js_GetStreamInfo(&si, js, stream, &jo, &jerr) != NATS_OK)
		return false;
	bool ok =
		si->Cluster && si->Cluster->Leader && si->Cluster->Leader[0] && si->Cluster->ReplicasLen == 2;
	for (int i = 0; ok && i < si->Cluster->ReplicasLen; i++) {
		const jsPeerInfo *p = si->Cluster->Replicas[i];
		ok = p->Current && !p->Offline && p->Lag == 0 && p->Active < heard_ns;
	}
	jsStreamInfo_Destroy(si);
	return ok;
}

/* Waits until the stream and the lease's bucket are whole again, every
 * replica heard from since `since` (the restart): a node killed while
 * another is still catching up would cost the cluster two elections in a
 * row, which is not the one-at-a-time this test means. */
static void wait_settled(struct rt *t, int64_t since)
{
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	T_ASSERT(natsConnection_ConnectTo(&nc, t->urls) == NATS_OK);
	T_ASSERT(natsConnection_JetStream(&js, nc, NULL) == NATS_OK);
	int64_t start = rt_now_ns(), end = start + 60000000000LL;
	for (;;) {
		int64_t heard = rt_now_ns() - since;
		if (stream_settled(js, "dur", heard) && stream_settled(js, "KV_shmsync_dur", heard))
			break;
		if (rt_now_ns() > end)
			T_FAIL("the NATS cluster did not settle in 60 s (see %s/nats/*.log)", t->dir);
		rt_sleep_ms(200);
	}
	printf("settled in %.1f s\n", (double)(rt_now_ns() - start) / 1e9);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
}

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
	wait_settled(&t, 0);
	for (int node = 1; node <= 3; node++) {
		rt_sleep_ms(500);
		T_EQ(rt_cluster(&t, "kill", node), 0);
		printf("killed NATS node %d\n", node);
		rt_sleep_ms(1500);
		int64_t restarted = rt_now_ns();
		T_EQ(rt_cluster(&t, "restart", node), 0);
		wait_settled(&t, restarted);
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
#endif
