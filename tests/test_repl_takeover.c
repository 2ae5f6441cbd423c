/* Replication, three roots: the leader a is killed while workers on both
 * followers, b and c, keep writing. One of them takes over; the other
 * forwards to the new leader from then on. A batch in flight at the
 * takeover may come back "unknown" (-ETIMEDOUT); each writer resolves it
 * the documented way, by sending it again as put_if_absent in a later
 * batch, and goes on. Both writers finish, every batch is applied
 * exactly once (a counter in each batch equals the number of batches), and
 * both survivors hold the same state with every acked key. (The wedge that
 * the forward floor fixes needs an old-epoch forward to reach the new
 * leader first, a window of about a millisecond here: repl_forward makes
 * that order on purpose; this test is the whole path with real roots.) */
#include "repl_support.h"

#define LEASE "1.5"
#define BATCHES 400

/* Resolves an unknown outcome by sending the batch again: put_if_absent
 * fails the whole batch (counter included) if the first one was applied. */
static int commit_once(shmsync_worker *w, const char *name, int i, uint64_t *tick, int *unknown)
{
	char key[64], count[64];
	int kn = snprintf(key, sizeof(key), "%s-%d", name, i);
	int cn = snprintf(count, sizeof(count), "count-%s", name);
	for (int attempt = 0; attempt < 5; attempt++) {
		shmsync_batch *b;
		uint64_t seq;
		if (shmsync_begin(w, &b) < 0 ||
		    shmsync_put_if_absent(b, "/w/", key, (size_t)kn, key, (size_t)kn) < 0 ||
		    shmsync_add(b, "/w/", count, (size_t)cn, 1) < 0 || shmsync_export(b, 0, &seq) < 0)
			return -EIO;
		int rc = shmsync_wait_committed(w, seq, tick, 60000000000LL);
		if (rc == -ETIMEDOUT) {
			(*unknown)++;
			continue;
		}
		if (rc != -EEXIST || attempt == 0)
			return rc;
		/* Applied by an earlier attempt: its tick is the key's. */
		for (int64_t end = rt_now_ns() + 30000000000LL; rt_now_ns() < end;) {
			shmsync_view v;
			if (shmsync_get(w, "/w/", key, (size_t)kn, &v) == 0) {
				*tick = v.tick;
				return 0;
			}
			shmsync_import_next(w, 20000000, NULL, NULL);
		}
		return -ENOENT;
	}
	return -ETIMEDOUT;
}

static pid_t writer(struct rt *t, const char *sock, const char *name)
{
	FILE *f;
	shmsync_worker *w;
	pid_t pid = rt_fork_writer(t, sock, name, &f, &w);
	if (pid)
		return pid;
	int unknown = 0;
	for (int i = 0; i < BATCHES; i++) {
		uint64_t tick = 0;
		int rc = commit_once(w, name, i, &tick, &unknown);
		if (rc < 0) {
			fprintf(stderr, "writer %s: batch %d: %s\n", name, i, shmsync_strerror(rc));
			_exit(1);
		}
		fprintf(f, "%s-%d %llu\n", name, i, (unsigned long long)tick);
		fflush(f);
		rt_sleep_ms(5);
	}
	printf("writer %s: %d batches, %d unknown outcomes resolved\n", name, BATCHES, unknown);
	fflush(stdout);
	fclose(f);
	_exit(0);
}

static int64_t counter(const char *path, const char *name)
{
	char key[64];
	int kn = snprintf(key, sizeof(key), "count-%s", name);
	shmsync_worker *w;
	T_OK(shmsync_attach(&w, path));
	T_OK(shmsync_import_until(w, rt_tick(path), 20000000000LL, NULL, NULL));
	shmsync_view v;
	T_OK(shmsync_get(w, "/w/", key, (size_t)kn, &v));
	T_EQ(v.len, (size_t)8);
	int64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | ((const uint8_t *)v.data)[i];
	shmsync_detach(w);
	return n;
}

int main(void)
{
	struct rt t;
	rt_start(&t, "takeover", 28222);
	char ap[512], bp[512], cp[512];
	rt_sock(&t, "a", ap, sizeof(ap));
	rt_sock(&t, "b", bp, sizeof(bp));
	rt_sock(&t, "c", cp, sizeof(cp));
	const char *lead[] = {"--replicate", t.urls,    "--stream", "to", "--replicas",
			      "3",           "--lease", LEASE,      NULL};
	const char *follow[] = {"--follow", t.urls, "--stream", "to", "--lease", LEASE, NULL};
	pid_t a = rt_serve(&t, "a", lead, 20000000000LL, NULL);
	T_ASSERT(a > 0);
	rt_mkdir(ap, "/w/");
	pid_t b = rt_serve(&t, "b", follow, 20000000000LL, NULL);
	pid_t c = rt_serve(&t, "c", follow, 20000000000LL, NULL);
	T_ASSERT(b > 0 && c > 0);

	pid_t wb = writer(&t, "b", "b"), wc = writer(&t, "c", "c");
	rt_sleep_ms(1500);
	kill(a, SIGKILL);
	waitpid(a, NULL, 0);
	rt_untrack(a);
	printf("killed the leader a\n");

	int64_t t0 = rt_now_ns();
	int rb = rt_wait_writer(wb, 120000000000LL), rc = rt_wait_writer(wc, 120000000000LL);
	printf("writers done %.1f s after the kill\n", (double)(rt_now_ns() - t0) / 1e9);
	T_EQ(rb, 0);
	T_EQ(rc, 0);
	bool b_leads = rt_log_has(&t, "b", "took over"), c_leads = rt_log_has(&t, "c", "took over");
	T_ASSERT(b_leads != c_leads);
	printf("%s took over; %s forwarded to it\n", b_leads ? "b" : "c", b_leads ? "c" : "b");

	/* Both survivors: every acked key, each batch once, one state. */
	const char *paths[] = {bp, cp};
	for (int i = 0; i < 2; i++) {
		T_EQ(rt_check_acked(&t, "b", paths[i]), BATCHES);
		T_EQ(rt_check_acked(&t, "c", paths[i]), BATCHES);
		T_EQ(counter(paths[i], "b"), BATCHES);
		T_EQ(counter(paths[i], "c"), BATCHES);
	}
	uint64_t tb = rt_tick(b_leads ? bp : cp), tc = tb;
	T_ASSERT(rt_state_hash(bp, &tb, NULL) == rt_state_hash(cp, &tc, NULL));
	rt_stop_root(b);
	rt_stop_root(c);
	return rt_pass();
}
