/* Replication, failover and fencing:
 *  - kill -9 the leader root: the follower takes over within the lease's TTL
 *    (plus the time to notice), with every acked batch, and commits;
 *  - the old leader, restarted, cannot lead (the lease names the new one)
 *    and appends nothing;
 *  - a leader frozen past its lease (SIGSTOP) while a follower takes over
 *    is deposed when it thaws: it exits, and the state stays the new
 *    leader's: whatever it acked is in the stream (roots are --durable). */
#include "repl_support.h"

#define LEASE "1.5"
#define LEASE_NS 1500000000LL

static int role_of(const char *path)
{
	shmsync_worker *w;
	if (shmsync_attach(&w, path) < 0)
		return -1;
	shmsync_stats st;
	int rc = shmsync_stat(w, &st);
	shmsync_detach(w);
	return rc < 0 ? -1 : st.repl_role;
}

/* How long until the root at path says it leads; -1 past the limit. */
static int64_t until_leader(const char *path, int64_t limit_ns)
{
	int64_t t0 = rt_now_ns();
	while (rt_now_ns() - t0 < limit_ns) {
		if (role_of(path) == SHMSYNC_REPL_LEADER)
			return rt_now_ns() - t0;
		rt_sleep_ms(20);
	}
	return -1;
}

int main(void)
{
	struct rt t;
	rt_start(&t, "failover", 19222);
	char ap[512], bp[512], cp[512];
	rt_sock(&t, "a", ap, sizeof(ap));
	rt_sock(&t, "b", bp, sizeof(bp));
	rt_sock(&t, "c", cp, sizeof(cp));
	/* Durable: an ack then means "in the stream", which is what a deposed
	 * leader must not be able to fake (without it, an ack means committed
	 * here, and a deposed leader's last acks may be lost: README). */
	const char *lead[] = {"--replicate", t.urls,    "--stream", "fo",        "--replicas",
			      "3",           "--lease", LEASE,      "--durable", NULL};
	const char *follow[] = {"--follow", t.urls, "--stream", "fo", "--lease", LEASE, "--durable", NULL};

	pid_t a = rt_serve(&t, "a", lead, 20000000000LL, NULL);
	T_ASSERT(a > 0);
	rt_mkdir(ap, "/w/");
	pid_t b = rt_serve(&t, "b", follow, 20000000000LL, NULL);
	T_ASSERT(b > 0);
	T_EQ(role_of(bp), SHMSYNC_REPL_FOLLOWER);
	T_EQ(rt_wait_writer(rt_writer(&t, "a", "a0", 100, 0), 60000000000LL), 0);
	T_EQ(rt_wait_writer(rt_writer(&t, "b", "b0", 100, 0), 60000000000LL), 0);

	/* 1. The leader dies without a word. */
	kill(a, SIGKILL);
	waitpid(a, NULL, 0);
	rt_untrack(a);
	int64_t took = until_leader(bp, LEASE_NS + 10000000000LL);
	T_ASSERT(took >= 0);
	printf("b took over %.2f s after a was killed (lease %s s)\n", (double)took / 1e9, LEASE);
	/* The lease lapses after its TTL; noticing it takes up to a third of
	 * it more, the takeover a few round trips. */
	if (took > LEASE_NS + LEASE_NS / 2 + 2000000000LL)
		T_FAIL("takeover took %.2f s with a %s s lease", (double)took / 1e9, LEASE);
	T_EQ(rt_check_acked(&t, "a0", bp), 100);
	T_EQ(rt_check_acked(&t, "b0", bp), 100);
	T_EQ(rt_wait_writer(rt_writer(&t, "b", "b1", 50, 0), 60000000000LL), 0);
	uint64_t tick_b = rt_tick(bp);

	/* 2. The old leader comes back and asks to lead: refused, nothing
	 * appended (b's tick and state are its own). */
	int st = 0;
	pid_t a2 = rt_serve(&t, "a", lead, 20000000000LL, &st);
	if (a2 > 0)
		T_FAIL("the old leader was let back in as a leader while b leads");
	T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	T_ASSERT(rt_log_has(&t, "a", "is led by"));
	T_EQ(rt_tick(bp), tick_b);
	/* It can follow, and it sees b's state. */
	pid_t a3 = rt_serve(&t, "a", follow, 20000000000LL, NULL);
	T_ASSERT(a3 > 0);
	uint64_t ta = tick_b, tb = tick_b;
	T_ASSERT(rt_state_hash(ap, &ta, NULL) == rt_state_hash(bp, &tb, NULL));

	/* 3. b freezes past its lease; a takes over; b thaws and must step down. */
	kill(b, SIGSTOP);
	took = until_leader(ap, LEASE_NS + 10000000000LL);
	T_ASSERT(took >= 0);
	printf("a took over %.2f s after b froze\n", (double)took / 1e9);
	T_EQ(rt_wait_writer(rt_writer(&t, "a", "a1", 50, 0), 60000000000LL), 0);
	uint64_t tick_a = rt_tick(ap);
	kill(b, SIGCONT);
	/* A worker on b tries to commit: nothing of it may reach the stream. */
	pid_t late = rt_writer(&t, "b", "late", 1, 0);
	st = rt_wait_exit(b, 10000000000LL);
	if (st < 0)
		T_FAIL("the deposed leader b still runs 10 s after it thawed");
	T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) != 0);
	T_ASSERT(rt_log_has(&t, "b", "lease") || rt_log_has(&t, "b", "another root"));
	int lrc = rt_wait_writer(late, 60000000000LL);
	printf("the late writer on the deposed leader exited %d\n", lrc);
	rt_sleep_ms(500);
	T_EQ(rt_tick(ap), tick_a);
	/* A new follower replays the stream: it holds exactly a's state, with
	 * no trace of what b might have tried after it was deposed. */
	pid_t c = rt_serve(&t, "c", follow, 20000000000LL, NULL);
	T_ASSERT(c > 0);
	ta = tick_a;
	uint64_t tc = tick_a;
	T_ASSERT(rt_state_hash(ap, &ta, NULL) == rt_state_hash(cp, &tc, NULL));
	if (lrc == 0) {
		/* Acked: then it must be in the state everyone agrees on. */
		T_EQ(rt_check_acked(&t, "late", cp), 1);
	}
	T_EQ(rt_check_acked(&t, "a1", cp), 50);
	T_EQ(rt_check_acked(&t, "b1", cp), 50);

	rt_stop_root(c);
	rt_stop_root(a3);
	return rt_pass();
}
