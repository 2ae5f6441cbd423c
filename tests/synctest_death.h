/* Process plumbing for the multi-process tests that kill things: a registry
 * of the children the test parent forked (the root included), killed with
 * SIGKILL when the parent fails or its alarm fires, so a failing or hung
 * test never leaves a root or a worker behind; a shared page for the
 * processes to report to each other; a monotonic clock in nanoseconds that
 * means the same in every process.
 *
 * Use: sd_init(seconds) first thing in main; sd_fork() for every child;
 * sd_track(pid) for children forked elsewhere (st_start_root); sd_reap(pid)
 * once a child is waited for. */
#ifndef SHMSYNC_SYNCTEST_DEATH_H
#define SHMSYNC_SYNCTEST_DEATH_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "synctest.h"
#include "testutil.h"

#define SD_MAX_KIDS 256

static pid_t sd_kids[SD_MAX_KIDS];
static pid_t sd_parent;

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

static inline void sd_init(unsigned seconds)
{
	sd_parent = getpid();
	atexit(sd_kill_kids);
	signal(SIGALRM, sd_on_alarm);
	alarm(seconds);
	setvbuf(stdout, NULL, _IOLBF, 0);
}

static inline void sd_track(pid_t pid)
{
	for (int i = 0; i < SD_MAX_KIDS; i++)
		if (sd_kids[i] <= 0) {
			sd_kids[i] = pid;
			return;
		}
	T_FAIL("more than %d children", SD_MAX_KIDS);
}

/* fork(), registering the child; the child dies with the parent, so a
 * parent killed from outside leaves nothing behind either. */
static inline pid_t sd_fork(void)
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

static inline void sd_untrack(pid_t pid)
{
	for (int i = 0; i < SD_MAX_KIDS; i++)
		if (sd_kids[i] == pid)
			sd_kids[i] = 0;
}

/* Waits for a child; returns its exit code, or 128 + the signal. */
static inline int sd_reap(pid_t pid)
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

/* A zeroed page (or more) shared by the parent and every child forked
 * after it. */
static inline void *sd_shared(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	T_ASSERT(p != MAP_FAILED);
	return p;
}

static inline int64_t sd_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void sd_sleep_ns(int64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
	}
}

/* st_start_root, tracked: killed if the test fails. (The socket appears
 * only once the root listens, so a worker may attach at once.) */
static inline pid_t sd_start_root(const shmsync_root_opts *o)
{
	pid_t pid = st_start_root(o);
	sd_track(pid);
	return pid;
}

/* Polls cond every ~50 us until it holds or timeout_ns passes; ok (a
 * bool) says which. */
#define SD_WAIT(ok, cond, timeout_ns)                                                                        \
	do {                                                                                                 \
		int64_t sd_end_ = sd_now_ns() + (timeout_ns);                                                \
		while (!((ok) = (cond)) && sd_now_ns() < sd_end_)                                            \
			sd_sleep_ns(50000);                                                                  \
	} while (0)

#endif
