/* synctest.h: a root in its own process, workers attached to it. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "synctest.h"

char st_sock[108];
void st_on_term(int sig)
{
	(void)sig;
	_exit(0);
}

_Noreturn void st_root_child(const shmsync_root_opts *base)
{
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

pid_t st_start_root(const shmsync_root_opts *base)
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
		st_root_child(base);
	}
	for (int i = 0; i < 5000; i++) {
		struct stat st;
		if (stat(st_sock, &st) == 0)
			return pid;
		usleep(1000);
	}
	T_FAIL("the root did not create %s", st_sock);
}

int st_wait(pid_t pid)
{
	int status;
	T_ASSERT(waitpid(pid, &status, 0) == pid);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

void st_stop_root(pid_t pid)
{
	kill(pid, SIGTERM);
	T_EQ(st_wait(pid), 0);
	unlink(st_sock);
}

shmsync_worker *st_attach(void)
{
	shmsync_worker *w;
	char err[256] = "";
	int rc = shmsync_attach_msg(&w, st_sock, err, sizeof(err));
	if (rc < 0)
		T_FAIL("attach: %s: %s", shmsync_strerror(rc), err);
	return w;
}

int st_connect_raw(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", st_sock);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	T_ASSERT(fd >= 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		T_FAIL("connect %s: %s", st_sock, strerror(errno));
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

int64_t st_commit(shmsync_batch *b)
{
	shmsync_worker *w = *(shmsync_worker **)b; /* the batch's first field */
	uint64_t seq, tick = 0;
	int rc = shmsync_export(b, 0, &seq);
	if (rc < 0)
		return rc;
	rc = shmsync_wait_committed(w, seq, &tick, 10 * 1000000000LL);
	return rc < 0 ? rc : (int64_t)tick;
}

void st_fill_commit(void (*fill)(shmsync_batch *b, void *arg), void *arg)
{
	shmsync_worker *w = st_attach();
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	fill(b, arg);
	T_ASSERT(st_commit(b) > 0);
	shmsync_detach(w);
}

const char *st_signal_name(void)
{
	const char *sig = getenv("SHMSYNC_SIGNAL");
	return sig && *sig ? sig : "default";
}

double st_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
