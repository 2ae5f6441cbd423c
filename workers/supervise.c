/* The prefork supervisor: a master that holds no state and never maps the
 * segment. It forks the root as one child and each worker as another (so no
 * worker inherits the root's writable mapping or io_uring: DESIGN.md, Roles
 * and memory), watches them through pidfds and its signals through a
 * signalfd in one poll loop, and restarts what dies.
 *
 * The loop is a reconciliation: each turn handles what happened (signals
 * first, so a child killed by the same Ctrl-C is not mistaken for a crash,
 * then the root's messages, then exits), then compares what runs with what
 * should run (reconcile) and acts: starts a root or a worker whose backoff
 * has passed, sends SIGKILL where a grace period ran out, steps a SIGHUP
 * restart, moves the shutdown on. The next deadline is the poll timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "supervise.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* ---- small things ---------------------------------------------------------- */

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

void sup_log(struct sup *s, const char *fmt, ...)
{
	char m[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	if (s->o.log)
		s->o.log(m, s->o.log_arg);
	else
		fprintf(stderr, "shmsync: supervise: %s\n", m);
}

static int fail(const shmsync_supervise_opts *o, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(const shmsync_supervise_opts *o, int rc, const char *fmt, ...)
{
	if (o && o->errbuf && o->errbuf_len) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(o->errbuf, o->errbuf_len, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static void describe(char *buf, size_t len, const siginfo_t *si)
{
	if (si->si_code == CLD_EXITED)
		snprintf(buf, len, "exited with status %d", si->si_status);
	else
		snprintf(buf, len, "was killed by signal %d (%s)%s", si->si_status, strsignal(si->si_status),
			 si->si_code == CLD_DUMPED ? ", core dumped" : "");
}

static long ms(int64_t ns)
{
	return (long)(ns / MS);
}

/* ---- signals to children ----------------------------------------------------- */

/* Through the pidfd: no pid-reuse race. A worker leads its own process
 * group and the group gets the signal, so what it started goes with it;
 * its pid cannot be reused as a group id while it is unreaped, and we
 * signal only children we have not reaped. */
static void signal_proc(struct proc *p, int sig)
{
	if (!p->pid)
		return;
	if (p->placed_group)
		kill(-p->pid, sig);
	syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0);
}

static void stop_proc(struct sup *s, struct proc *p, int64_t now)
{
	if (!p->pid || p->kill_at)
		return;
	p->expected = true;
	p->kill_at = now + s->o.grace_ns;
	signal_proc(p, SIGTERM);
}

static void kill_proc(struct proc *p)
{
	if (!p->pid || p->kill_sent)
		return;
	/* Not marked expected: a root killed for not answering is a crash. */
	p->kill_sent = true;
	signal_proc(p, SIGKILL);
}

/* ---- crashes and restarts --------------------------------------------------- */

/* Records a crash of slot sl (its child ran `ran` ns). Returns true if it
 * is a crash loop; else sets when the slot starts again. */
static bool crashed(struct sup *s, struct slot *sl, int64_t now, int64_t ran)
{
	sl->crash_at[sl->ncrash++ % MAX_CRASH_LIMIT] = now;
	if (sl->ncrash >= s->o.crash_limit) {
		int64_t first = sl->crash_at[(sl->ncrash - s->o.crash_limit) % MAX_CRASH_LIMIT];
		if (now - first <= s->o.crash_window_ns)
			return true;
	}
	if (ran >= BACKOFF_RESET_NS || !sl->backoff)
		sl->backoff = BACKOFF_MIN_NS;
	else if ((sl->backoff *= 2) > BACKOFF_MAX_NS)
		sl->backoff = BACKOFF_MAX_NS;
	sl->start_at = now + sl->backoff;
	return false;
}

static void send_counts(struct sup *s)
{
	if (s->root_ctl < 0 || s->root_state != ROOT_SERVING)
		return;
	struct sup_counts c = {s->root_restarts, s->worker_restarts};
	if (send(s->root_ctl, &c, sizeof(c), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
		/* Full or gone: the next message carries the totals. */
	}
}

static unsigned live_workers(struct sup *s)
{
	unsigned k = 0;
	for (unsigned i = 0; i < s->n; i++)
		k += (unsigned)(s->w[i].cur.pid != 0) + (unsigned)(s->w[i].old.pid != 0);
	return k;
}

static void begin_stop(struct sup *s, int result, int64_t now)
{
	if (s->phase != RUN)
		return;
	s->phase = STOP_WORKERS;
	s->result = result;
	s->hup = false;
	for (unsigned i = 0; i < s->n; i++) {
		stop_proc(s, &s->w[i].cur, now);
		stop_proc(s, &s->w[i].old, now);
	}
}

/* After a worker slot ended for good: is any slot left? */
static void check_all_done(struct sup *s, int64_t now)
{
	unsigned looped = 0;
	for (unsigned i = 0; i < s->n; i++) {
		if (!s->w[i].done)
			return;
		looped += s->w[i].looped;
	}
	if (looped) {
		fail(&s->o, -ECHILD, "every worker slot ended: %u in a crash loop, %u finished with status 0",
		     looped, s->n - looped);
		sup_log(s, "no worker slot is left (%u crash-looped): stopping", looped);
		begin_stop(s, -ECHILD, now);
	} else {
		sup_log(s, "every worker finished with status 0: stopping");
		begin_stop(s, 0, now);
	}
}

static void hup_abort(struct sup *s, const char *why)
{
	if (!s->hup)
		return;
	sup_log(s, "SIGHUP restart stopped at worker %u: %s", s->hup_at, why);
	s->hup = false;
}

/* A worker's process exited (reaped); si says how. */
static void worker_exited(struct sup *s, unsigned i, struct proc *p, const siginfo_t *si, int64_t now)
{
	struct slot *sl = &s->w[i];
	char how[96];
	describe(how, sizeof(how), si);
	pid_t pid = p->pid;
	int64_t ran = now - p->started;
	bool expected = p->expected;
	*p = (struct proc){0};
	if (p == &sl->old) {
		sup_log(s, "worker %u pid %d (replaced) %s", i, (int)pid, how);
		return;
	}
	if (s->hup && s->hup_at == i && s->hup_stage == H_WAIT_NEW) {
		/* The replacement died before it attached: keep the old one if
		 * it still serves; the new code may be broken. */
		char why[160];
		snprintf(why, sizeof(why), "the replacement pid %d %s before it attached", (int)pid, how);
		if (sl->old.pid && !sl->old.kill_at) {
			sl->cur = sl->old;
			sl->old = (struct proc){0};
			hup_abort(s, why);
			sup_log(s,
				"worker %u: the old pid %d keeps serving; the workers not yet restarted keep "
				"theirs",
				i, (int)sl->cur.pid);
			expected = true; /* nothing to restart */
			crashed(s, sl, now, ran);
			return;
		}
		hup_abort(s, why);
	}
	if (expected || s->phase != RUN) {
		sup_log(s, "worker %u pid %d stopped: %s", i, (int)pid, how);
		return;
	}
	if (si->si_code == CLD_EXITED && si->si_status == 0) {
		sup_log(s, "worker %u pid %d exited with status 0: it finished, and is not restarted", i,
			(int)pid);
		sl->done = true;
		check_all_done(s, now);
		return;
	}
	if (crashed(s, sl, now, ran)) {
		sup_log(s,
			"worker %u: crash loop: %u crashes within %lld ms (the last: pid %d %s); this slot "
			"is "
			"not restarted",
			i, s->o.crash_limit, (long long)ms(s->o.crash_window_ns), (int)pid, how);
		sl->done = sl->looped = true;
		check_all_done(s, now);
		return;
	}
	sup_log(s, "worker %u pid %d %s after %ld ms; restarting it in %ld ms", i, (int)pid, how, ms(ran),
		ms(sl->backoff));
}

static void root_exited(struct sup *s, const siginfo_t *si, int64_t now)
{
	struct slot *sl = &s->root;
	char how[96];
	describe(how, sizeof(how), si);
	pid_t pid = sl->cur.pid;
	int64_t ran = now - sl->cur.started;
	bool expected = sl->cur.expected;
	bool was_first = s->root_first;
	enum root_state st = s->root_state;
	sl->cur = (struct proc){0};
	s->root_state = ROOT_DOWN;
	if (s->root_ctl >= 0)
		close(s->root_ctl);
	s->root_ctl = -1;
	if (s->phase != RUN || expected) {
		sup_log(s, "root pid %d stopped: %s", (int)pid, how);
		return;
	}
	if (was_first && st == ROOT_STARTING) {
		/* The first root could not start: bad options, a socket that is
		 * taken. Retrying will not help; say why. */
		int rc = s->result ? s->result : -ECHILD;
		if (!s->result)
			fail(&s->o, rc, "the root pid %d %s before it served", (int)pid, how);
		sup_log(s, "the root could not start: %s", s->root_msg[0] ? s->root_msg : how);
		begin_stop(s, rc, now);
		return;
	}
	if (crashed(s, sl, now, ran)) {
		fail(&s->o, -ECHILD, "the root crashed %u times within %lld ms (the last: pid %d %s)",
		     s->o.crash_limit, (long long)ms(s->o.crash_window_ns), (int)pid, how);
		sup_log(s, "root: crash loop: %u crashes within %lld ms (the last: pid %d %s): stopping",
			s->o.crash_limit, (long long)ms(s->o.crash_window_ns), (int)pid, how);
		begin_stop(s, -ECHILD, now);
		return;
	}
	if (s->ro.replicate || s->ro.follow)
		sup_log(s,
			"root pid %d %s after %ld ms: the new root rebuilds the state from stream %s; "
			"restarting the root in %ld ms, and every worker with it",
			(int)pid, how, ms(ran), s->ro.stream, ms(sl->backoff));
	else
		sup_log(s,
			"root pid %d %s after %ld ms: the state is lost (it lives in the root; there is no "
			"replication); restarting the root in %ld ms, and every worker with it",
			(int)pid, how, ms(ran), ms(sl->backoff));
	hup_abort(s, "the root died");
	/* Their attach is gone: they start over on the new root. Not crashes. */
	for (unsigned i = 0; i < s->n; i++) {
		stop_proc(s, &s->w[i].cur, now);
		stop_proc(s, &s->w[i].old, now);
		s->w[i].start_at = 0;
	}
}

/* ---- the root's start ----------------------------------------------------------- */

/* Does the root answer on its socket? A connect that is accepted, then
 * closed: the root drops a connection without a hello quietly. */
static bool probe(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return false;
	bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

static void root_ctl_readable(struct sup *s, int64_t now)
{
	struct root_hello h;
	ssize_t got = recv(s->root_ctl, &h, sizeof(h), MSG_DONTWAIT);
	if (got < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (got != (ssize_t)sizeof(h) || s->root_state != ROOT_STARTING) {
		/* It exited (its pidfd says how) or said nonsense: stop
		 * listening; the exit is handled there. */
		close(s->root_ctl);
		s->root_ctl = -1;
		return;
	}
	h.msg[sizeof(h.msg) - 1] = 0;
	if (h.rc < 0) {
		snprintf(s->root_msg, sizeof(s->root_msg), "%s", h.msg);
		if (s->root_first) {
			s->result = h.rc;
			fail(&s->o, h.rc, "%s", h.msg);
		}
		sup_log(s, "root pid %d: cannot open the root: %s", (int)s->root.cur.pid, h.msg);
		return; /* it exits; its pidfd reports it */
	}
	s->probe_at = now; /* then waits for the socket to answer */
}

static void root_check_serving(struct sup *s, int64_t now)
{
	if (s->root_state != ROOT_STARTING || !s->probe_at || now < s->probe_at)
		return;
	if (!probe(s->sock)) {
		s->probe_at = now + PROBE_EVERY_NS;
		return;
	}
	s->root_state = ROOT_SERVING;
	s->root_first = false;
	s->probe_at = 0;
	sup_log(s, "root pid %d serves %s", (int)s->root.cur.pid, s->sock);
	send_counts(s);
}

/* ---- SIGHUP: one worker at a time --------------------------------------------- */

/* Has the process attached? It maps the root segment once it has, and its
 * maps say so: the master learns it without holding the segment or asking
 * the root. A process that made itself non-dumpable hides its maps: false
 * until the timeout. */
static bool attached(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	static const char needle[] = "/memfd:shmsync-root";
	const size_t nl = sizeof(needle) - 1;
	char buf[8192 + sizeof(needle)];
	size_t have = 0;
	bool found = false;
	for (;;) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = 0;
		if (memmem(buf, have, needle, nl)) {
			found = true;
			break;
		}
		/* Keep a tail: the name may straddle two reads. */
		size_t keep = have < nl ? have : nl;
		memmove(buf, buf + have - keep, keep);
		have = keep;
	}
	close(fd);
	return found;
}

static int start_worker(struct sup *s, unsigned i, int64_t now);

static void hup_step(struct sup *s, int64_t now)
{
	while (s->hup) {
		if (s->hup_at >= s->n) {
			sup_log(s, "SIGHUP restart done: every worker was replaced");
			s->hup = false;
			return;
		}
		struct slot *sl = &s->w[s->hup_at];
		switch (s->hup_stage) {
		case H_NEXT:
			if (sl->done || !sl->cur.pid) {
				/* Not running: it starts anew when its time comes. */
				s->hup_at++;
				continue;
			}
			sl->old = sl->cur;
			sl->cur = (struct proc){0};
			if (s->room) {
				if (start_worker(s, s->hup_at, now) < 0) {
					sl->cur = sl->old;
					sl->old = (struct proc){0};
					hup_abort(s, "the replacement could not be started");
					return;
				}
				s->hup_stage = H_WAIT_NEW;
				s->hup_deadline = now + ATTACH_WAIT_NS;
			} else {
				/* No room for one more worker at the root: the old one
				 * goes first, then the new one comes. */
				stop_proc(s, &sl->old, now);
				s->hup_stage = H_WAIT_OLD;
			}
			continue;
		case H_WAIT_NEW:
			if (!sl->cur.pid)
				return; /* it died: worker_exited decided */
			if (now < s->hup_deadline && !attached(sl->cur.pid)) {
				s->hup_poll_at = now + ATTACH_POLL_NS;
				return;
			}
			if (now >= s->hup_deadline)
				sup_log(s,
					"worker %u: the replacement pid %d did not attach within %lld ms; "
					"going "
					"on",
					s->hup_at, (int)sl->cur.pid, (long long)ms(ATTACH_WAIT_NS));
			if (sl->old.pid) {
				stop_proc(s, &sl->old, now);
				s->hup_stage = H_WAIT_OLD;
			} else {
				s->hup_at++;
				s->hup_stage = H_NEXT;
			}
			continue;
		case H_WAIT_OLD:
			if (sl->old.pid)
				return;
			if (!sl->cur.pid) {
				if (start_worker(s, s->hup_at, now) < 0) {
					hup_abort(s, "the replacement could not be started");
					return;
				}
				s->hup_stage = H_WAIT_NEW;
				s->hup_deadline = now + ATTACH_WAIT_NS;
				continue;
			}
			s->hup_at++;
			s->hup_stage = H_NEXT;
			continue;
		}
	}
}

/* ---- the loop ------------------------------------------------------------------ */

static int start_worker(struct sup *s, unsigned i, int64_t now)
{
	struct slot *sl = &s->w[i];
	int rc = sup_spawn(s, &sl->cur, false, i, now);
	if (rc < 0) {
		sup_log(s, "worker %u: cannot start it: %s", i, strerror(-rc));
		if (crashed(s, sl, now, 0)) {
			sup_log(s,
				"worker %u: crash loop: it could not be started %u times; this slot is not "
				"restarted",
				i, s->o.crash_limit);
			sl->done = sl->looped = true;
			check_all_done(s, now);
		}
		return rc;
	}
	if (sl->starts++)
		s->worker_restarts++;
	sup_log(s, "worker %u pid %d started%s", i, (int)sl->cur.pid, sl->starts > 1 ? " again" : "");
	send_counts(s);
	return 0;
}

static void start_root(struct sup *s, int64_t now)
{
	int rc = sup_spawn(s, &s->root.cur, true, 0, now);
	if (rc < 0) {
		sup_log(s, "cannot start the root: %s", strerror(-rc));
		if (s->root_first || crashed(s, &s->root, now, 0)) {
			fail(&s->o, rc, "cannot start the root: %s", strerror(-rc));
			begin_stop(s, rc, now);
		}
		return;
	}
	if (s->root.starts++)
		s->root_restarts++;
	s->root_state = ROOT_STARTING;
	s->root_deadline = now + ROOT_START_NS;
	s->probe_at = 0;
	s->root_msg[0] = 0;
	sup_log(s, "root pid %d started%s", (int)s->root.cur.pid,
		s->root.starts > 1 ? " again (the workers follow once it serves)" : "");
}

static void min_at(int64_t *next, int64_t t)
{
	if (t && t < *next)
		*next = t;
}

/* Compares what runs with what should, and acts. Returns the next time it
 * must look again. */
static int64_t reconcile(struct sup *s, int64_t now)
{
	int64_t next = now + SEC;
	/* Grace periods that ran out. */
	struct proc *all[2];
	for (unsigned i = 0; i <= s->n; i++) {
		if (i == s->n) {
			all[0] = &s->root.cur;
			all[1] = NULL;
		} else {
			all[0] = &s->w[i].cur;
			all[1] = &s->w[i].old;
		}
		for (int k = 0; k < 2 && all[k]; k++) {
			struct proc *p = all[k];
			if (p->pid && p->kill_at && !p->kill_sent) {
				if (now >= p->kill_at) {
					sup_log(s, "%s pid %d did not stop within %lld ms: SIGKILL",
						i == s->n ? "root" : "worker", (int)p->pid,
						(long long)ms(s->o.grace_ns));
					kill_proc(p);
				} else {
					min_at(&next, p->kill_at);
				}
			}
		}
	}
	switch (s->phase) {
	case RUN:
		if (s->root_state == ROOT_DOWN && !s->root.cur.pid) {
			if (now >= s->root.start_at)
				start_root(s, now);
			else
				min_at(&next, s->root.start_at);
		}
		if (s->root_state == ROOT_STARTING) {
			root_check_serving(s, now);
			if (s->root_state == ROOT_STARTING) {
				if (now >= s->root_deadline) {
					sup_log(s, "root pid %d did not answer on %s within %lld ms: SIGKILL",
						(int)s->root.cur.pid, s->sock, (long long)ms(ROOT_START_NS));
					kill_proc(&s->root.cur);
				}
				min_at(&next, s->root_deadline);
				min_at(&next, s->probe_at);
			}
		}
		if (s->root_state == ROOT_SERVING) {
			if (s->hup) {
				hup_step(s, now);
				if (s->hup)
					min_at(&next, s->hup_stage == H_WAIT_NEW ? s->hup_poll_at : 0);
			}
			for (unsigned i = 0; i < s->n && s->phase == RUN; i++) {
				struct slot *sl = &s->w[i];
				if (sl->done || sl->cur.pid || (s->hup && s->hup_at == i))
					continue;
				/* Not before the last process of the slot is reaped. */
				if (sl->old.pid)
					continue;
				if (now >= sl->start_at)
					start_worker(s, i, now);
				else
					min_at(&next, sl->start_at);
			}
		}
		break;
	case STOP_WORKERS:
		if (live_workers(s))
			break;
		s->phase = STOP_ROOT;
		if (s->root.cur.pid)
			sup_log(s, "every worker is gone: stopping the root pid %d", (int)s->root.cur.pid);
		stop_proc(s, &s->root.cur, now);
		if (s->root.cur.kill_at)
			min_at(&next, s->root.cur.kill_at);
		/* fall through */
	case STOP_ROOT:
		if (!s->root.cur.pid)
			s->phase = DONE;
		break;
	case DONE:
		break;
	}
	return next;
}

static void on_signal(struct sup *s, int64_t now)
{
	struct signalfd_siginfo si;
	while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		int sig = (int)si.ssi_signo;
		if (sig == SIGHUP) {
			if (s->phase != RUN)
				sup_log(s, "SIGHUP: ignored while stopping");
			else if (s->root_state != ROOT_SERVING)
				sup_log(s, "SIGHUP: ignored: the root is not serving");
			else if (s->hup)
				sup_log(s, "SIGHUP: ignored: a restart is under way (at worker %u)",
					s->hup_at);
			else {
				sup_log(s, "SIGHUP: restarting the workers one at a time; the root and the "
					   "state "
					   "stay");
				s->hup = true;
				s->hup_at = 0;
				s->hup_stage = H_NEXT;
			}
			continue;
		}
		if (s->phase == RUN) {
			sup_log(s, "%s: stopping: the workers get SIGTERM and %lld ms, then the root",
				sig == SIGINT ? "SIGINT" : "SIGTERM", (long long)ms(s->o.grace_ns));
			begin_stop(s, 0, now);
		} else {
			sup_log(s, "%s again: killing what is left", sig == SIGINT ? "SIGINT" : "SIGTERM");
			for (unsigned i = 0; i < s->n; i++) {
				kill_proc(&s->w[i].cur);
				kill_proc(&s->w[i].old);
			}
			kill_proc(&s->root.cur);
		}
	}
}

/* A pidfd is readable: the process exited. Its group is swept first (while
 * it is unreaped its pid cannot name another group), then it is reaped. */
static void reap(struct sup *s, struct proc *p, int64_t now)
{
	if (p->placed_group)
		kill(-p->pid, SIGKILL);
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	if (waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOHANG) < 0) {
		if (errno != ECHILD)
			return;
		/* Reaped by someone else: the status is lost. */
		si.si_code = CLD_KILLED;
		si.si_status = SIGKILL;
	} else if (si.si_pid == 0) {
		return; /* not yet */
	}
	close(p->pidfd);
	if (p == &s->root.cur) {
		root_exited(s, &si, now);
		return;
	}
	for (unsigned i = 0; i < s->n; i++)
		if (p == &s->w[i].cur || p == &s->w[i].old) {
			worker_exited(s, i, p, &si, now);
			break;
		}
}

static int loop(struct sup *s)
{
	size_t cap = 2 + 2 * (size_t)s->n + 1;
	s->pfd = calloc(cap, sizeof(*s->pfd));
	s->pfd_proc = calloc(cap, sizeof(*s->pfd_proc));
	if (!s->pfd || !s->pfd_proc)
		return fail(&s->o, -ENOMEM, "out of memory");
	for (;;) {
		int64_t now = now_ns();
		int64_t next = reconcile(s, now);
		if (s->phase == DONE)
			return s->result;
		nfds_t n = 0;
		s->pfd[n++] = (struct pollfd){s->sigfd, POLLIN, 0};
		s->pfd[n++] = (struct pollfd){s->root_ctl, POLLIN, 0}; /* -1 is skipped by poll */
		size_t first_proc = n;
		for (unsigned i = 0; i <= s->n; i++) {
			struct proc *ps[2] = {i < s->n ? &s->w[i].cur : &s->root.cur,
					      i < s->n ? &s->w[i].old : NULL};
			for (int k = 0; k < 2; k++)
				if (ps[k] && ps[k]->pid) {
					s->pfd_proc[n] = ps[k];
					s->pfd[n++] = (struct pollfd){ps[k]->pidfd, POLLIN, 0};
				}
		}
		int64_t wait = next > now ? next - now : 0;
		int timeout = (int)((wait + MS - 1) / MS);
		if (poll(s->pfd, n, timeout) < 0 && errno != EINTR)
			return fail(&s->o, -errno, "poll failed: %s", strerror(errno));
		now = now_ns();
		/* Signals first: a child that died of the same Ctrl-C or
		 * SIGTERM is then seen as stopped, not crashed. */
		if (s->pfd[0].revents)
			on_signal(s, now);
		if (s->root_ctl >= 0 && s->pfd[1].revents)
			root_ctl_readable(s, now);
		for (size_t j = first_proc; j < n; j++)
			if (s->pfd[j].revents && s->pfd_proc[j]->pid)
				reap(s, s->pfd_proc[j], now);
	}
}

/* ---- setup ----------------------------------------------------------------------- */

static int resolve(struct sup *s, const shmsync_supervise_opts *in)
{
	s->o = *in;
	shmsync_supervise_opts *o = &s->o;
	if (!o->workers) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);
		o->workers = c < 1 ? 1 : c > MAX_WORKERS ? MAX_WORKERS : (unsigned)c;
	}
	if (o->workers > MAX_WORKERS)
		return fail(in, -EINVAL, "workers: %u is more than %d", o->workers, MAX_WORKERS);
	s->n = o->workers;
	if (o->grace_ns < 0 || o->crash_window_ns < 0)
		return fail(in, -EINVAL, "grace_ns and crash_window_ns must not be negative");
	if (!o->grace_ns)
		o->grace_ns = 5 * SEC;
	if (!o->crash_window_ns)
		o->crash_window_ns = 10 * SEC;
	if (!o->crash_limit)
		o->crash_limit = 5;
	if (o->crash_limit > MAX_CRASH_LIMIT)
		return fail(in, -EINVAL, "crash_limit: %u is more than %d", o->crash_limit, MAX_CRASH_LIMIT);
	s->ro = o->root;
	shmsync_root_opts *ro = &s->ro;
	if (!ro->stall_policy && !ro->max_read_pin_ns && !ro->max_read_pin_bytes) {
		ro->stall_policy = SHMSYNC_STALL_KILL;
		ro->max_read_pin_ns = 30 * SEC;
		ro->max_read_pin_bytes = (size_t)256 << 20;
		if (ro->capacity && ro->capacity / 4 < ro->max_read_pin_bytes)
			ro->max_read_pin_bytes = ro->capacity / 4;
	}
	if (!ro->max_workers) {
		unsigned m = s->n + 64;
		ro->max_workers = m < 256 ? 256 : m > MAX_WORKERS ? MAX_WORKERS : m;
	}
	if (ro->max_workers < s->n)
		return fail(in, -EINVAL, "root.max_workers (%u) is below workers (%u)", ro->max_workers,
			    s->n);
	s->room = s->n < ro->max_workers;
	const char *path = o->socket_path ? o->socket_path : ro->socket_path;
	if (path) {
		if (!*path || strlen(path) >= SOCK_MAX)
			return fail(in, -EINVAL, "socket_path must be 1 to %d bytes", SOCK_MAX - 1);
		snprintf(s->sock, sizeof(s->sock), "%s", path);
	} else {
		/* A fresh directory only we can enter: nobody can bind the path
		 * first or connect as someone else. */
		const char *base = getenv("XDG_RUNTIME_DIR");
		struct stat st;
		if (!base || base[0] != '/' || stat(base, &st) < 0 || !S_ISDIR(st.st_mode) ||
		    strlen(base) > SOCK_MAX - 32)
			base = "/tmp";
		snprintf(s->dir, sizeof(s->dir), "%s/shmsync-XXXXXX", base);
		if (!mkdtemp(s->dir)) {
			int e = errno;
			s->dir[0] = 0;
			return fail(in, -e, "cannot make a private directory in %s: %s", base, strerror(e));
		}
		snprintf(s->sock, sizeof(s->sock), "%s/root.sock", s->dir);
	}
	ro->socket_path = s->sock;
	ro->errbuf = NULL;
	ro->errbuf_len = 0;
	return 0;
}

int shmsync_supervise(const shmsync_supervise_opts *in, shmsync_worker_fn fn, void *arg)
{
	shmsync_supervise_opts dflt = {0};
	if (!in)
		in = &dflt;
	if (in->errbuf && in->errbuf_len)
		in->errbuf[0] = 0;
	if (!fn)
		return fail(in, -EINVAL, "no worker function");
	for (size_t i = 0; i < sizeof(in->reserved) / sizeof(in->reserved[0]); i++)
		if (in->reserved[i])
			return fail(in, -EINVAL,
				    "shmsync_supervise_opts.reserved[] must be zero (an option of a later "
				    "shmsync?)");
	struct sup *s = calloc(1, sizeof(*s));
	if (!s)
		return fail(in, -ENOMEM, "out of memory");
	s->sigfd = s->root_ctl = -1;
	s->fn = fn;
	s->arg = arg;
	s->master = getpid();
	s->root_first = true;
	int rc = resolve(s, in);
	if (rc == 0) {
		s->w = calloc(s->n, sizeof(*s->w));
		if (!s->w)
			rc = fail(in, -ENOMEM, "out of memory");
	}
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	bool masked = false;
	if (rc == 0) {
		/* Exit statuses are needed: an ignored SIGCHLD (or SA_NOCLDWAIT)
		 * would have the kernel reap the children itself. */
		struct sigaction dfl = {.sa_handler = SIG_DFL};
		sigaction(SIGCHLD, NULL, &s->old_chld);
		if (s->old_chld.sa_handler == SIG_IGN || (s->old_chld.sa_flags & SA_NOCLDWAIT)) {
			sigaction(SIGCHLD, &dfl, NULL);
			s->chld_changed = true;
		}
		if (sigprocmask(SIG_BLOCK, &sigs, &s->oldmask) < 0) {
			rc = fail(in, -errno, "sigprocmask failed: %s", strerror(errno));
		} else {
			masked = true;
			s->sigfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
			if (s->sigfd < 0)
				rc = fail(in, -errno, "signalfd failed: %s", strerror(errno));
		}
	}
	if (rc == 0) {
		/* The root's errbuf: ours, filled from the child's message. */
		s->o.errbuf = in->errbuf;
		s->o.errbuf_len = in->errbuf_len;
		sup_log(s, "starting a root on %s and %u worker%s", s->sock, s->n, s->n == 1 ? "" : "s");
		rc = loop(s);
		sup_log(s, "stopped%s; root restarts %llu, worker restarts %llu", rc ? " with an error" : "",
			(unsigned long long)s->root_restarts, (unsigned long long)s->worker_restarts);
	}
	/* Every child is reaped by now (loop returns only in DONE), unless the
	 * loop itself failed: then kill and reap what is left. */
	for (unsigned i = 0; s->w && i <= s->n; i++) {
		struct proc *ps[2] = {i < s->n ? &s->w[i].cur : &s->root.cur, i < s->n ? &s->w[i].old : NULL};
		for (int k = 0; k < 2; k++)
			if (ps[k] && ps[k]->pid) {
				signal_proc(ps[k], SIGKILL);
				waitid((idtype_t)P_PIDFD, (id_t)ps[k]->pidfd, &(siginfo_t){0}, WEXITED);
				close(ps[k]->pidfd);
			}
	}
	if (s->root_ctl >= 0)
		close(s->root_ctl);
	if (s->sigfd >= 0) {
		/* Signals that came after the loop's last read were meant for
		 * us: consume them rather than let them hit the caller. */
		struct signalfd_siginfo si;
		while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		}
		close(s->sigfd);
	}
	if (masked)
		sigprocmask(SIG_SETMASK, &s->oldmask, NULL);
	if (s->chld_changed)
		sigaction(SIGCHLD, &s->old_chld, NULL);
	if (s->dir[0]) {
		unlink(s->sock); /* the root removes it; a killed root does not */
		rmdir(s->dir);
	}
	free(s->pfd);
	free(s->pfd_proc);
	free(s->w);
	free(s);
	return rc;
}
