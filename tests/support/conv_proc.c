/* synctest_conv.h: the children of a convergence test, pipe barriers and
 * byte channels, shared memory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "synctest_conv.h"

static struct cv_kid cv_kids[CV_MAX_KIDS];
static int cv_nkids;
static pid_t cv_parent;
static unsigned cv_child_secs = 60;
/* Parent-side pipe ends a child must not hold (or a barrier never opens). */
static int cv_child_close[64];
static int cv_nchild_close;
static char cv_tmp[64];
static void cv_kill_all(void)
{
	for (int i = 0; i < cv_nkids; i++)
		if (!cv_kids[i].reaped)
			kill(cv_kids[i].pid, SIGKILL);
	for (int i = 0; i < cv_nkids; i++)
		if (!cv_kids[i].reaped) {
			waitpid(cv_kids[i].pid, NULL, 0);
			cv_kids[i].reaped = true;
			cv_kids[i].status = 128 + SIGKILL;
		}
}

static void cv_rm_tmp(void)
{
	if (!cv_tmp[0])
		return;
	DIR *d = opendir(cv_tmp);
	if (d) {
		struct dirent *e;
		char p[320];
		while ((e = readdir(d)))
			if (e->d_name[0] != '.') {
				snprintf(p, sizeof(p), "%s/%s", cv_tmp, e->d_name);
				unlink(p);
			}
		closedir(d);
	}
	rmdir(cv_tmp);
	cv_tmp[0] = 0;
}

/* Runs at every exit() of the parent, a failed assertion included. */
static void cv_at_exit(void)
{
	if (getpid() != cv_parent)
		return;
	cv_kill_all();
	if (st_sock[0])
		unlink(st_sock);
	cv_rm_tmp();
}

static void cv_on_alarm(int sig)
{
	(void)sig;
	static const char m[] = "FAIL: the test's time limit ran out; killing its children\n";
	if (write(2, m, sizeof(m) - 1) < 0) {
		/* Nothing more to say. */
	}
	for (int i = 0; i < cv_nkids; i++)
		if (!cv_kids[i].reaped)
			kill(cv_kids[i].pid, SIGKILL);
	if (st_sock[0])
		unlink(st_sock);
	_exit(1);
}

void cv_setup(unsigned parent_secs, unsigned child_secs)
{
	cv_parent = getpid();
	cv_child_secs = child_secs;
	setvbuf(stdout, NULL, _IOLBF, 0);
	atexit(cv_at_exit);
	signal(SIGALRM, cv_on_alarm);
	signal(SIGPIPE, SIG_IGN);
	snprintf(cv_tmp, sizeof(cv_tmp), "/tmp/shmsync-conv-XXXXXX");
	T_ASSERT(mkdtemp(cv_tmp) != NULL);
	alarm(parent_secs);
}

const char *cv_path(char *buf, size_t len, const char *fmt, ...)
{
	char name[64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	snprintf(buf, len, "%s/%s", cv_tmp, name);
	return buf;
}

static void cv_parent_only(int fd)
{
	T_ASSERT(cv_nchild_close < (int)(sizeof(cv_child_close) / sizeof(cv_child_close[0])));
	cv_child_close[cv_nchild_close++] = fd;
}

static void cv_child_init(void)
{
	signal(SIGALRM, SIG_DFL);
	/* Never outlive the parent: a root left behind would serve forever. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != cv_parent)
		_exit(1);
	for (int i = 0; i < cv_nchild_close; i++)
		close(cv_child_close[i]);
	cv_nkids = 0; /* a child owns none of its siblings */
	alarm(cv_child_secs);
}

static void cv_register(pid_t pid, const char *name)
{
	T_ASSERT(cv_nkids < CV_MAX_KIDS);
	struct cv_kid *k = &cv_kids[cv_nkids++];
	k->pid = pid;
	k->reaped = false;
	k->status = -1;
	snprintf(k->name, sizeof(k->name), "%s", name);
}

pid_t cv_spawn(const char *name, int (*fn)(void *), void *arg)
{
	fflush(NULL);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		cv_child_init();
		exit(fn(arg));
	}
	cv_register(pid, name);
	return pid;
}

static struct cv_kid *cv_kid_of(pid_t pid)
{
	for (int i = 0; i < cv_nkids; i++)
		if (cv_kids[i].pid == pid)
			return &cv_kids[i];
	T_FAIL("pid %d is not a child of this test", (int)pid);
}

static int cv_status_code(int status)
{
	return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

/* Waits for a child; its exit code (128 + signal if killed). */
static int cv_wait(pid_t pid)
{
	struct cv_kid *k = cv_kid_of(pid);
	if (!k->reaped) {
		int status;
		T_ASSERT(waitpid(pid, &status, 0) == pid);
		k->reaped = true;
		k->status = cv_status_code(status);
	}
	return k->status;
}

void cv_poll_kids(void)
{
	for (int i = 0; i < cv_nkids; i++) {
		struct cv_kid *k = &cv_kids[i];
		int status;
		if (k->reaped || waitpid(k->pid, &status, WNOHANG) != k->pid)
			continue;
		k->reaped = true;
		k->status = cv_status_code(status);
		if (k->status != 0)
			T_FAIL("child %s (pid %d) exited with %d", k->name, (int)k->pid, k->status);
	}
}

/* Reads exactly len bytes from fd, checking on the children meanwhile. */
static void cv_read_full(int fd, void *buf, size_t len, unsigned secs)
{
	size_t got = 0;
	double end = st_now() + secs;
	while (got < len) {
		struct pollfd p = {fd, POLLIN, 0};
		int n = poll(&p, 1, 100);
		if (n < 0 && errno != EINTR)
			T_FAIL("poll: %s", strerror(errno));
		if (n == 1) {
			ssize_t r = read(fd, (char *)buf + got, len - got);
			if (r < 0 && errno != EINTR && errno != EAGAIN)
				T_FAIL("read: %s", strerror(errno));
			if (r == 0) {
				cv_poll_kids();
				T_FAIL("a channel closed after %zu of %zu bytes", got, len);
			}
			if (r > 0)
				got += (size_t)r;
			continue;
		}
		cv_poll_kids();
		if (st_now() > end)
			T_FAIL("waited %u s for %zu bytes from the children (got %zu)", secs, len, got);
	}
}

void cv_write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t w = write(fd, (const char *)buf + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		T_ASSERT(w > 0);
		done += (size_t)w;
	}
}

pid_t cv_start_root(const shmsync_root_opts *base)
{
	if (!st_sock[0])
		snprintf(st_sock, sizeof(st_sock), "/tmp/shmsync-test-%d.sock", (int)getpid());
	unlink(st_sock);
	fflush(NULL);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		cv_child_init();
		alarm(0); /* the parent bounds the root: it kills it */
		st_root_child(base);
	}
	cv_register(pid, "root");
	for (int i = 0; i < 5000; i++) {
		struct stat st;
		if (stat(st_sock, &st) == 0)
			return pid;
		cv_poll_kids();
		usleep(1000);
	}
	T_FAIL("the root did not create %s", st_sock);
}

void cv_stop_root(pid_t pid)
{
	kill(pid, SIGTERM);
	T_EQ(cv_wait(pid), 0);
	unlink(st_sock);
}

struct cv_setup_job {
	void (*fill)(shmsync_batch *b, void *arg);
	void *arg;
};

static int cv_setup_child(void *p)
{
	const struct cv_setup_job *job = p;
	st_fill_commit(job->fill, job->arg);
	return 0;
}

void cv_setup_batch(void (*fill)(shmsync_batch *b, void *arg), void *arg)
{
	struct cv_setup_job job = {fill, arg};
	pid_t p = cv_spawn("setup", cv_setup_child, &job);
	cv_wait_all(&p, 1, 30);
}

void cv_gate_init(struct cv_gate *g)
{
	T_ASSERT(pipe(g->ready) == 0 && pipe(g->go) == 0);
	cv_parent_only(g->ready[0]);
	cv_parent_only(g->go[1]);
}

static void cv_unlist(int fd)
{
	for (int i = 0; i < cv_nchild_close; i++)
		if (cv_child_close[i] == fd)
			cv_child_close[i--] = cv_child_close[--cv_nchild_close];
}

void cv_gate_spawned(struct cv_gate *g)
{
	close(g->ready[1]);
	close(g->go[0]);
}

void cv_gate_done(struct cv_gate *g)
{
	close(g->ready[0]);
	cv_unlist(g->ready[0]);
	cv_unlist(g->go[1]);
}

void cv_gate_arrive(struct cv_gate *g)
{
	cv_write_full(g->ready[1], "r", 1);
	char c;
	ssize_t n;
	while ((n = read(g->go[0], &c, 1)) < 0 && errno == EINTR)
		;
	T_EQ(n, 0);
}

void cv_gate_open(struct cv_gate *g, int n)
{
	char buf[CV_MAX_KIDS];
	T_ASSERT(n <= CV_MAX_KIDS);
	cv_read_full(g->ready[0], buf, (size_t)n, 60);
	close(g->go[1]);
}

void cv_wait_all(const pid_t *pids, int n, unsigned secs)
{
	double end = st_now() + secs;
	for (;;) {
		cv_poll_kids();
		int left = 0;
		for (int i = 0; i < n; i++)
			left += !cv_kid_of(pids[i])->reaped;
		if (!left)
			break;
		if (st_now() > end)
			T_FAIL("%d children still running after %u s", left, secs);
		usleep(2000);
	}
	for (int i = 0; i < n; i++)
		T_EQ(cv_wait(pids[i]), 0);
}

void *cv_shared(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	T_ASSERT(p != MAP_FAILED);
	memset(p, 0, len);
	return p;
}
