/* Replication under the supervisor (`shmsync run --replicate`): kill -9 the
 * root; the master restarts it, the new root rebuilds the state from the
 * stream (the same hash at the same tick), takes its predecessor's lease
 * back at once (one name for every root of a master) instead of waiting
 * out the TTL, and the workers carry on with the ticks after it. */
#include "repl_support.h"

/* The master's first child that is not the worker: the root. */
static pid_t root_of(pid_t master, pid_t not_this)
{
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)master, (int)master);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	for (char *save = NULL, *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
		pid_t p = (pid_t)atoi(tok);
		char comm[64] = "";
		snprintf(path, sizeof(path), "/proc/%d/comm", (int)p);
		FILE *c = fopen(path, "r");
		if (c) {
			if (!fgets(comm, sizeof(comm), c))
				comm[0] = 0;
			fclose(c);
		}
		if (p != not_this && strncmp(comm, "shmsync", 7) == 0)
			return p;
	}
	return -1;
}

static uint64_t root_restarts(const char *path)
{
	shmsync_worker *w;
	if (shmsync_attach(&w, path) < 0)
		return UINT64_MAX;
	shmsync_stats st;
	int rc = shmsync_stat(w, &st);
	shmsync_detach(w);
	return rc < 0 ? UINT64_MAX : st.root_restarts;
}

int main(void)
{
	struct rt t;
	rt_start(&t, "supervise", 26222);
	char sp[512], log[512];
	rt_sock(&t, "s", sp, sizeof(sp));
	snprintf(log, sizeof(log), "%s/run.log", t.dir);
	fflush(NULL);
	pid_t master = fork();
	T_ASSERT(master >= 0);
	if (master == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(rt_env("SHMSYNC_TOOL"), "shmsync", "run", "-n", "1", "-s", sp, "--replicate", t.urls,
		      "--stream", "sup", "--replicas", "3", "--", "/bin/sleep", "1000", (char *)NULL);
		_exit(127);
	}
	rt_track(master);
	int64_t end = rt_now_ns() + 20000000000LL;
	while (root_restarts(sp) == UINT64_MAX) {
		if (rt_now_ns() > end)
			T_FAIL("the supervised root did not answer (see %s)", log);
		rt_sleep_ms(50);
	}
	rt_mkdir(sp, "/w/");
	T_EQ(rt_wait_writer(rt_writer(&t, "s", "w0", 100, 0), 60000000000LL), 0);
	uint64_t tick = 0;
	uint64_t h = rt_state_hash(sp, &tick, NULL);

	pid_t root = root_of(master, -1);
	T_ASSERT(root > 0);
	int64_t t0 = rt_now_ns();
	kill(root, SIGKILL);
	while (root_restarts(sp) != 1) {
		if (rt_now_ns() - t0 > 20000000000LL)
			T_FAIL("the root was not restarted with its state (see %s)", log);
		rt_sleep_ms(20);
	}
	double took = (double)(rt_now_ns() - t0) / 1e9;
	printf("the restarted root served again %.2f s after kill -9 (lease 3 s)\n", took);
	/* Its own lease back at once: well under the 3 s TTL. */
	T_ASSERT(took < 2.5);
	T_EQ(rt_tick(sp), tick);
	uint64_t t2 = tick;
	T_ASSERT(rt_state_hash(sp, &t2, NULL) == h);
	T_EQ(rt_check_acked(&t, "w0", sp), 100);
	T_EQ(rt_wait_writer(rt_writer(&t, "s", "w1", 10, 0), 60000000000LL), 0);
	T_EQ(rt_tick(sp), tick + 10);

	kill(master, SIGTERM);
	int st = rt_wait_exit(master, 20000000000LL);
	T_ASSERT(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	return rt_pass();
}
