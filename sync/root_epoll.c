/* The root's epoll backend, for the futex path (no io_uring futex
 * operations here, or SHMSYNC_SIGNAL=futex): one epoll fd over the
 * listening socket, the stop eventfd, a timerfd for the idle timer, pending
 * connections, and each worker's connection, pidfd and eventfd doorbell.
 * The event data is the same tag as an io_uring user_data (root_ud). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "root.h"

#define EPOLL_BUSY_NS 50000

static void ep_add(shmsync_root *r, int fd, uint64_t data)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = data};
	epoll_ctl(r->ep.fd, EPOLL_CTL_ADD, fd, &ev);
}

static void ep_del(shmsync_root *r, int fd)
{
	/* Explicitly: a worker holds a copy of the doorbell eventfd, so closing
	 * ours would not drop the registration. */
	if (r->ep.fd >= 0 && fd >= 0)
		epoll_ctl(r->ep.fd, EPOLL_CTL_DEL, fd, NULL);
}

static int poll_once(shmsync_root *r, int timeout_ms)
{
	struct epoll_event evs[64];
	int n = epoll_wait(r->ep.fd, evs, 64, timeout_ms);
	int events = 0;
	for (int k = 0; k < n; k++) {
		uint64_t data = evs[k].data.u64;
		unsigned type = root_ud_type(data);
		unsigned idx = root_ud_idx(data);
		struct slot *s = type >= UD_DOORBELL && type <= UD_CONN ? root_slot_of(r, data) : NULL;
		uint64_t v;
		events++;
		switch (type) {
		case UD_ACCEPT:
			root_accept_all(r);
			break;
		case UD_WAKE:
			if (read(r->wake_fd, &v, sizeof(v)) < 0) {
				/* Already drained. */
			}
			break;
		case UD_TIMER:
			if (read(r->ep.timer_fd, &v, sizeof(v)) < 0) {
				/* Already drained. */
			}
			root_on_timer(r);
			break;
		case UD_PENDING:
			if (idx < MAX_PENDING && r->pend[idx].gen == (uint32_t)data && r->pend[idx].fd >= 0)
				root_finish_attach(r, &r->pend[idx]);
			break;
		case UD_DOORBELL:
			if (s && s->live && read(s->doorbell_fd, &v, sizeof(v)) < 0) {
				/* Already drained. */
			}
			break;
		case UD_PIDFD:
			if (s)
				root_slot_release(r, s);
			break;
		case UD_CONN:
			if (s && s->live)
				root_conn_readable(r, s);
			break;
		}
	}
	return events;
}

static int ep_init(shmsync_root *r, char *msg, size_t msglen)
{
	r->ep.fd = epoll_create1(EPOLL_CLOEXEC);
	r->ep.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (r->ep.fd < 0 || r->ep.timer_fd < 0) {
		int rc = -errno;
		snprintf(msg, msglen, "epoll/timerfd: %s", strerror(errno));
		return rc;
	}
	ep_add(r, r->wake_fd, root_ud(UD_WAKE, 0, 0));
	ep_add(r, r->ep.timer_fd, root_ud(UD_TIMER, 0, 0));
	return 0;
}

static void ep_fini(shmsync_root *r)
{
	if (r->ep.fd >= 0)
		close(r->ep.fd);
	if (r->ep.timer_fd >= 0)
		close(r->ep.timer_fd);
	r->ep.fd = r->ep.timer_fd = -1;
}

static void ep_watch_listen(shmsync_root *r)
{
	ep_add(r, r->listen_fd, root_ud(UD_ACCEPT, 0, 0));
}

static void ep_watch_pending(shmsync_root *r, unsigned i)
{
	ep_add(r, r->pend[i].fd, root_ud(UD_PENDING, i, r->pend[i].gen));
}

/* The pending fd is closed next, and it is the only reference to its file:
 * that drops the registration. */
static void ep_unwatch_pending(shmsync_root *r, unsigned i)
{
	(void)r;
	(void)i;
}

/* The worker rings an eventfd: it cannot wake an epoll wait with a futex. */
static int ep_make_doorbell(shmsync_root *r, int *fd)
{
	(void)r;
	int db = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (db < 0)
		return -errno;
	*fd = db;
	return 0;
}

/* The connection was registered as pending: it comes back as the slot's. */
static void ep_watch_slot(shmsync_root *r, unsigned idx)
{
	struct slot *s = &r->slots[idx];
	ep_del(r, s->conn);
	ep_add(r, s->conn, root_ud(UD_CONN, idx, s->gen));
	ep_add(r, s->pidfd, root_ud(UD_PIDFD, idx, s->gen));
	ep_add(r, s->doorbell_fd, root_ud(UD_DOORBELL, idx, s->gen));
}

/* Nothing is in flight: the slot is freed at once (forget_slot). */
static void ep_unwatch_slot(shmsync_root *r, unsigned idx)
{
	(void)r;
	(void)idx;
}

static void ep_forget_slot(shmsync_root *r, struct slot *s)
{
	ep_del(r, s->conn);
	ep_del(r, s->pidfd);
	ep_del(r, s->doorbell_fd);
	ep_del(r, s->fdwake_fd);
}

/* Events (attaches, byes, deaths, the timer) come through epoll_wait, a
 * system call: a busy root that did not sleep looks at most every
 * EPOLL_BUSY_NS, instead of once per commit. */
static int ep_process(shmsync_root *r, unsigned max_events, bool slept)
{
	(void)max_events;
	int64_t now = sig_now_ns();
	if (slept || now - r->ep.last >= EPOLL_BUSY_NS) {
		r->ep.last = now;
		return poll_once(r, 0);
	}
	return 0;
}

static void ep_arm(shmsync_root *r, bool want_timer)
{
	if (want_timer) {
		struct itimerspec its = {.it_value = {0, IDLE_RECLAIM_NS}};
		timerfd_settime(r->ep.timer_fd, 0, &its, NULL);
	}
}

/* The timerfd armed by ep_arm wakes this wait. */
static void ep_wait(shmsync_root *r)
{
	poll_once(r, -1);
}

static int ep_fd(const shmsync_root *r)
{
	return r->ep.fd;
}

const struct root_backend root_epoll_backend = {
	.init = ep_init,
	.fini = ep_fini,
	.watch_listen = ep_watch_listen,
	.watch_pending = ep_watch_pending,
	.unwatch_pending = ep_unwatch_pending,
	.make_doorbell = ep_make_doorbell,
	.watch_slot = ep_watch_slot,
	.unwatch_slot = ep_unwatch_slot,
	.forget_slot = ep_forget_slot,
	.process = ep_process,
	.arm = ep_arm,
	.wait = ep_wait,
	.fd = ep_fd,
};
