/* synctest_death.h: the registry of a test's children, killed when it fails
 * or runs out of time. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "synctest_death.h"

#define SD_MS 1000000LL

static pid_t sd_kids[SD_MAX_KIDS];
pid_t sd_parent;

/* Only the parent kills: a child inherits the atexit handler, and a child
 * that exits normally must not take its siblings with it. */
static void sd_kill_kids(void)
{
	if (getpid() != sd_parent)
		return;
	for (int i = 0; i < SD_MAX_KIDS; i++)
		if (sd_kids[i] > 0)
			kill(sd_kids[i], SIGKILL);
}

static void sd_on_alarm(int sig)
{
	(void)sig;
	static const char m[] = "FAIL: the test's time limit ran out: killing its children\n";
	if (write(2, m, sizeof(m) - 1) < 0) {
		/* Nothing to do about it in a signal handler. */
	}
	sd_kill_kids(); /* kill() and getpid() are async-signal-safe */
	_exit(1);
}

void sd_init(unsigned seconds)
{
	sd_parent = getpid();
	atexit(sd_kill_kids);
	signal(SIGALRM, sd_on_alarm);
	alarm(seconds);
	setvbuf(stdout, NULL, _IOLBF, 0);
}

void sd_track(pid_t pid)
{
	for (int i = 0; i < SD_MAX_KIDS; i++)
		if (sd_kids[i] <= 0) {
			sd_kids[i] = pid;
			return;
		}
	T_FAIL("more than %d children", SD_MAX_KIDS);
}

pid_t sd_fork(void)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != sd_parent)
			_exit(1);
		return 0;
	}
	sd_track(pid);
	return pid;
}

void sd_untrack(pid_t pid)
{
	for (int i = 0; i < SD_MAX_KIDS; i++)
		if (sd_kids[i] == pid)
			sd_kids[i] = 0;
}

int sd_reap(pid_t pid)
{
	int status;
	pid_t got;
	do
		got = waitpid(pid, &status, 0);
	while (got < 0 && errno == EINTR);
	T_ASSERT(got == pid);
	sd_untrack(pid);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

void *sd_shared(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	T_ASSERT(p != MAP_FAILED);
	return p;
}

int64_t sd_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void sd_sleep_ns(int64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
	}
}

pid_t sd_start_root(const shmsync_root_opts *o)
{
	pid_t pid = st_start_root(o);
	sd_track(pid);
	return pid;
}

const char *sd_loadavg(void)
{
	static char buf[64] = "?";
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			snprintf(buf, sizeof(buf), "?");
		fclose(f);
		buf[strcspn(buf, "\n")] = 0;
	}
	return buf;
}

void sd_setup_batch(void (*fill)(shmsync_batch *b, void *arg), void *arg)
{
	pid_t setup = sd_fork();
	if (setup == 0) {
		st_fill_commit(fill, arg);
		exit(0);
	}
	T_EQ(sd_reap(setup), 0);
}

int64_t sd_read_counter(shmsync_worker *w, const char *who)
{
	shmsync_view v;
	int rc = shmsync_get(w, "/d/", "c", 1, &v);
	if (rc < 0)
		T_FAIL("%sget /d/c: %s", who, shmsync_strerror(rc));
	T_EQ(v.len, 8);
	int64_t n;
	memcpy(&n, v.data, 8);
	return n;
}

int sd_monitor_run(struct sd_monitor *m, _Atomic int *stop, int64_t (*read)(shmsync_worker *w))
{
	shmsync_worker *w = st_attach();
	shmsync_offline(w);
	while (!atomic_load(stop)) {
		shmsync_stats s;
		T_OK(shmsync_stat(w, &s));
		atomic_store(&m->tick, s.tick);
		atomic_store(&m->bytes, s.bytes_in_use);
		atomic_store(&m->workers, s.workers);
		unsigned watch = atomic_load(&m->watch_below);
		if (watch && s.workers < watch && atomic_load(&m->drop_ns) == 0)
			atomic_store(&m->drop_ns, sd_now_ns());
		int cmd = atomic_load(&m->cmd);
		if (cmd != atomic_load(&m->done)) {
			atomic_store(&m->counter, read(w));
			shmsync_offline(w);
			atomic_store(&m->done, cmd);
		}
		atomic_fetch_add(&m->iter, 1);
		/* Short sleeps, not a spin: two cores are shared with the root. */
		sd_sleep_ns(20000);
	}
	shmsync_detach(w);
	return 0;
}

void sd_monitor_fresh(struct sd_monitor *m)
{
	uint64_t it = atomic_load(&m->iter);
	bool ok;
	SD_WAIT(ok, atomic_load(&m->iter) >= it + 2, 2000 * SD_MS);
	if (!ok)
		T_FAIL("the monitor is stuck");
}

int64_t sd_monitor_counter(struct sd_monitor *m)
{
	int cmd = atomic_load(&m->cmd) + 1;
	atomic_store(&m->cmd, cmd);
	bool ok;
	SD_WAIT(ok, atomic_load(&m->done) == cmd, 10000 * SD_MS);
	if (!ok)
		T_FAIL("the monitor did not read the counter");
	return atomic_load(&m->counter);
}

uint64_t sd_monitor_stable_bytes(struct sd_monitor *m, int64_t still_ns, int64_t timeout_ns)
{
	int64_t end = sd_now_ns() + timeout_ns, since = sd_now_ns();
	uint64_t last = atomic_load(&m->bytes);
	while (sd_now_ns() - since < still_ns) {
		if (sd_now_ns() > end)
			T_FAIL("bytes_in_use did not settle in %.1f s", (double)timeout_ns / 1e9);
		sd_sleep_ns(SD_MS);
		uint64_t b = atomic_load(&m->bytes);
		if (b != last) {
			last = b;
			since = sd_now_ns();
		}
	}
	return last;
}
