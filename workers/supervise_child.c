/* The supervisor's children, right after fork: what every child does
 * first, then the root child's loop or the worker child's placement,
 * connection and function. Nothing here returns to the master's code: a
 * child leaves through child_exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "numa.h"
#include "placement.h"
#include "supervise.h"

/* ---- children ---------------------------------------------------------------- */

/* In a child: the master's fds are not its business (a worker that does not
 * exec would otherwise hold the signalfd and its siblings' pidfds). */
static void close_master_fds(struct sup *s, int keep)
{
	if (s->sigfd >= 0)
		close(s->sigfd);
	if (s->root_ctl >= 0 && s->root_ctl != keep)
		close(s->root_ctl);
	if (s->root.cur.pid && s->root.cur.pidfd >= 0)
		close(s->root.cur.pidfd);
	for (unsigned i = 0; i < s->n; i++) {
		if (s->w[i].cur.pid && s->w[i].cur.pidfd >= 0)
			close(s->w[i].cur.pidfd);
		if (s->w[i].old.pid && s->w[i].old.pidfd >= 0)
			close(s->w[i].old.pidfd);
	}
}

/* What every child does first. Returns false if the master is gone. */
static bool child_common(struct sup *s)
{
	/* If the master dies (even by SIGKILL), nothing it started lives on. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != s->master)
		return false;
	/* Its own process group: a terminal's Ctrl-C reaches the master only,
	 * which stops the children in order (workers first, so their last
	 * commits are still acknowledged). */
	setpgid(0, 0);
	if (s->chld_changed)
		sigaction(SIGCHLD, &s->old_chld, NULL);
	return true;
}

static void root_warn(const char *msg, void *arg)
{
	sup_log(arg, "root: %s", msg);
}

/* The root child: opens the root, says so on ctl, serves until SIGTERM or
 * until the master is gone (ctl hangs up). It runs the root's loop itself
 * (shmsync_root_fd/process) rather than shmsync_root_run, so that SIGTERM
 * comes through a signalfd: no signal handler, no global root pointer. */
static int root_child(struct sup *s, int ctl)
{
	sigset_t term;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	/* SIGINT and SIGHUP stay blocked: only the master decides when the
	 * root stops (after the workers). */
	int sfd = signalfd(-1, &term, SFD_CLOEXEC | SFD_NONBLOCK);
	shmsync_root_opts ro = s->ro;
	/* One name for every root this master starts: a restarted root takes
	 * its predecessor's lease back at once instead of waiting it out (the
	 * predecessor is dead: the master restarts a root only then). */
	char repl_id[96];
	if ((ro.replicate || ro.follow) && !ro.repl_id) {
		char host[48] = "";
		gethostname(host, sizeof(host) - 1);
		snprintf(repl_id, sizeof(repl_id), "%s:supervisor-%d", host, (int)getppid());
		ro.repl_id = repl_id;
	}
	char err[200] = "";
	ro.errbuf = err;
	ro.errbuf_len = sizeof(err);
	if (!ro.warn) {
		ro.warn = root_warn;
		ro.warn_arg = s;
	}
	struct root_hello h = {0};
	shmsync_root *r = NULL;
	int rc = sfd < 0 ? -errno : shmsync_root_open(&r, &ro);
	h.rc = rc;
	snprintf(h.msg, sizeof(h.msg), "%s", rc < 0 ? (err[0] ? err : shmsync_strerror(rc)) : "");
	if (send(ctl, &h, sizeof(h), MSG_NOSIGNAL) < 0 || rc < 0)
		return 3;
	/* The counts from the master, published for shmsync stat. */
	for (;;) {
		int n = shmsync_root_process(r, 0);
		if (n < 0) {
			sup_log(s, "root: its loop failed: %s", shmsync_strerror(n));
			rc = n;
			break;
		}
		struct pollfd p[3] = {{shmsync_root_fd(r), POLLIN, 0}, {sfd, POLLIN, 0}, {ctl, POLLIN, 0}};
		if (poll(p, 3, n > 0 ? 0 : -1) < 0 && errno != EINTR) {
			rc = -errno;
			break;
		}
		if (p[1].revents)
			break; /* SIGTERM */
		if (p[2].revents) {
			struct sup_counts c;
			ssize_t got = recv(ctl, &c, sizeof(c), MSG_DONTWAIT);
			if (got == (ssize_t)sizeof(c))
				shmsync_root_set_restarts(r, c.root_restarts, c.worker_restarts);
			else if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR))
				break; /* the master is gone */
		}
	}
	shmsync_root_close(r);
	return rc < 0 ? 4 : 0;
}

/* NUMA placement of worker `index`, in the worker child right after fork,
 * before it connects (the root puts the worker's port on the node the
 * worker runs on at attach). A worker on the wrong node is slower, not
 * wrong: a failure is logged and the worker runs on. Where NUMA is
 * unavailable, worker 0 says so once and the others stay quiet. */
static void place_worker_child(struct sup *s, unsigned index)
{
	if (s->ro.numa_policy == SHMSYNC_NUMA_NONE)
		return;
	char m[256] = "";
	int node = -1;
	int rc = place_worker_on_node(index, PLACE_MEM_BIND, &node, m, sizeof(m));
	if (rc == SHM_NUMA_SKIPPED) {
		if (index == 0)
			sup_log(s, "NUMA placement skipped: %s", m);
	} else if (rc < 0) {
		sup_log(s, "worker %u: NUMA placement failed, running unplaced: %s", index, m);
	}
}

/* The worker child: placement, its own connection, the environment, fn. */
static int worker_child(struct sup *s, unsigned index)
{
	place_worker_child(s, index);
	/* Connected here, not in the master: the root's SO_PEERPIDFD then
	 * names this process. Not O_CLOEXEC: an exec'd command attaches
	 * through it. */
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", s->sock);
	int fd = -1;
	for (int tries = 0; tries < 50; tries++) {
		fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
		if (fd < 0)
			break;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		int e = errno;
		close(fd);
		fd = -1;
		errno = e;
		/* A full backlog (a flood of attaches) clears; anything else
		 * will not. */
		if (e != EAGAIN)
			break;
		usleep(20000);
	}
	if (fd < 0) {
		sup_log(s, "worker %u: cannot connect to the root at %s: %s", index, s->sock,
			strerror(errno));
		return 70; /* EX_SOFTWARE: a crash, counted as one */
	}
	char v[16];
	snprintf(v, sizeof(v), "%d", fd);
	setenv("SHMSYNC_ATTACH_FD", v, 1);
	snprintf(v, sizeof(v), "%u", index);
	setenv("SHMSYNC_WORKER_INDEX", v, 1);
	setenv("SHMSYNC_SOCKET", s->sock, 1);
	return s->fn(index, s->arg);
}

static void child_exit(int status)
{
	/* Not exit(): the caller's atexit handlers belong to the master. */
	fflush(NULL);
	_exit(status & 0xff);
}

int sup_spawn(struct sup *s, struct proc *p, bool root, unsigned index, int64_t now)
{
	int sv[2] = {-1, -1};
	if (root && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	fflush(NULL); /* or buffered output would be written twice */
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		if (root) {
			close(sv[0]);
			close(sv[1]);
		}
		return -e;
	}
	if (pid == 0) {
		if (!child_common(s))
			_exit(1);
		close_master_fds(s, -1);
		sigset_t m = s->oldmask;
		if (root) {
			close(sv[0]);
			sigaddset(&m, SIGTERM);
			sigaddset(&m, SIGINT);
			sigaddset(&m, SIGHUP);
			sigprocmask(SIG_SETMASK, &m, NULL);
			child_exit(root_child(s, sv[1]));
		}
		sigdelset(&m, SIGTERM);
		sigdelset(&m, SIGINT);
		sigdelset(&m, SIGHUP);
		sigprocmask(SIG_SETMASK, &m, NULL);
		child_exit(worker_child(s, index));
	}
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		int e = errno;
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		if (root) {
			close(sv[0]);
			close(sv[1]);
		}
		return -e;
	}
	fcntl(pidfd, F_SETFD, FD_CLOEXEC);
	/* Also here: a signal to the group must reach it even before the child
	 * ran its own setpgid. EACCES: it exec'd already, and did it. */
	if (!root)
		setpgid(pid, pid);
	*p = (struct proc){.pid = pid, .pidfd = pidfd, .started = now, .placed_group = !root};
	if (root) {
		close(sv[1]);
		s->root_ctl = sv[0];
	}
	return 0;
}
