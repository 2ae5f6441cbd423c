/* Helpers for the multi-process tests: a root in its own process, workers
 * in others, all forked from a test parent that never holds the root. */
#ifndef SHMSYNC_SYNCTEST_H
#define SHMSYNC_SYNCTEST_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmsync.h"
#include "testutil.h"

static char st_sock[108];

static void st_on_term(int sig)
{
	(void)sig;
	_exit(0);
}

/* Starts a root serving st_sock in a child; returns its pid once the
 * socket exists. The root exits 0 on SIGTERM. */
static inline pid_t st_start_root(const shmsync_root_opts *base)
{
	if (!st_sock[0])
		snprintf(st_sock, sizeof(st_sock), "/tmp/shmsync-test-%d.sock", (int)getpid());
	unlink(st_sock);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		/* A test that fails exits without stopping us: go with it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() == 1)
			_exit(5);
		shmsync_root_opts o = base ? *base : (shmsync_root_opts){0};
		char err[256] = "";
		o.socket_path = st_sock;
		o.errbuf = err;
		o.errbuf_len = sizeof(err);
		if (!o.capacity)
			o.capacity = (size_t)256 << 20;
		shmsync_root *r;
		int rc = shmsync_root_open(&r, &o);
		if (rc < 0) {
			fprintf(stderr, "root: %s: %s\n", shmsync_strerror(rc), err);
			_exit(3);
		}
		signal(SIGTERM, st_on_term);
		rc = shmsync_root_run(r);
		shmsync_root_close(r);
		_exit(rc < 0 ? 4 : 0);
	}
	for (int i = 0; i < 5000; i++) {
		struct stat st;
		if (stat(st_sock, &st) == 0)
			return pid;
		usleep(1000);
	}
	T_FAIL("the root did not create %s", st_sock);
}

static inline int st_wait(pid_t pid)
{
	int status;
	T_ASSERT(waitpid(pid, &status, 0) == pid);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

static inline void st_stop_root(pid_t pid)
{
	kill(pid, SIGTERM);
	T_EQ(st_wait(pid), 0);
	unlink(st_sock);
}

static inline shmsync_worker *st_attach(void)
{
	shmsync_worker *w;
	char err[256] = "";
	int rc = shmsync_attach_msg(&w, st_sock, err, sizeof(err));
	if (rc < 0)
		T_FAIL("attach: %s: %s", shmsync_strerror(rc), err);
	return w;
}

/* Exports one batch and waits for its commit; returns the tick or the
 * batch's error. */
static inline int64_t st_commit(shmsync_batch *b)
{
	shmsync_worker *w = *(shmsync_worker **)b; /* the batch's first field */
	uint64_t seq, tick = 0;
	int rc = shmsync_export(b, 0, &seq);
	if (rc < 0)
		return rc;
	rc = shmsync_wait_committed(w, seq, &tick, 10 * 1000000000LL);
	return rc < 0 ? rc : (int64_t)tick;
}

static inline double st_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
