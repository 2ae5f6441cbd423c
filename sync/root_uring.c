/* The root's io_uring backend: a futex wait on each port's doorbell word
 * (IORING_OP_FUTEX_WAIT with the value last seen), polls on the listening
 * socket, the stop eventfd, pending connections and each worker's
 * connection and pidfd, and a timeout for the idle timer. Every operation's
 * user_data is an event tag (root_ud); a slot's operations point into its
 * port, so a released slot is freed only once they are all reaped. */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "root.h"

static struct io_uring_sqe *get_sqe(shmsync_root *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ur.ring);
	if (!sqe) {
		io_uring_submit(&r->ur.ring);
		sqe = io_uring_get_sqe(&r->ur.ring);
	}
	if (sqe)
		r->ur.ops++;
	return sqe;
}

static void cancel(shmsync_root *r, uint64_t user_data)
{
	struct io_uring_sqe *sqe = get_sqe(r);
	if (!sqe)
		return;
	io_uring_prep_cancel64(sqe, user_data, 0);
	io_uring_sqe_set_data64(sqe, root_ud(UD_IGNORE, 0, 0));
}

static void op_done(shmsync_root *r, struct slot *s)
{
	if (s->inflight)
		s->inflight--;
	if (s->releasing && s->inflight == 0)
		root_slot_free(r, s);
}

static int handle_cqe(shmsync_root *r, struct io_uring_cqe *cqe)
{
	uint64_t data = io_uring_cqe_get_data64(cqe);
	unsigned type = root_ud_type(data);
	struct slot *s;
	switch (type) {
	case UD_ACCEPT:
		r->ur.accept_armed = false;
		return root_accept_all(r);
	case UD_WAKE: {
		r->ur.wake_armed = false;
		uint64_t v;
		if (read(r->wake_fd, &v, sizeof(v)) < 0) {
			/* Nothing to read: a spurious poll completion. */
		}
		return 1;
	}
	case UD_TIMER:
		r->ur.timer_armed = false;
		root_on_timer(r);
		return 1;
	case UD_DOORBELL:
		if ((s = root_slot_of(r, data))) {
			s->futex_armed = false;
			op_done(r, s);
		}
		return 1;
	case UD_PIDFD:
		if ((s = root_slot_of(r, data))) {
			s->pid_armed = false;
			op_done(r, s);
			if (cqe->res >= 0)
				root_slot_release(r, s);
		}
		return 1;
	case UD_CONN:
		if ((s = root_slot_of(r, data))) {
			s->conn_armed = false;
			op_done(r, s);
			if (s->live && cqe->res >= 0)
				root_conn_readable(r, s);
		}
		return 1;
	case UD_PENDING: {
		unsigned i = root_ud_idx(data);
		if (i < MAX_PENDING && r->pend[i].gen == (uint32_t)data && r->pend[i].fd >= 0) {
			r->pend[i].armed = false;
			if (cqe->res >= 0)
				root_finish_attach(r, &r->pend[i]);
		}
		return 1;
	}
	default:
		return 0;
	}
}

static int reap(shmsync_root *r, unsigned max_events, unsigned *reaped)
{
	int n = 0;
	struct io_uring_cqe *cqe;
	unsigned head, count = 0;
	io_uring_for_each_cqe(&r->ur.ring, head, cqe)
	{
		if (max_events && count >= max_events)
			break;
		n += handle_cqe(r, cqe);
		count++;
	}
	io_uring_cq_advance(&r->ur.ring, count);
	*reaped = count;
	return n;
}

static void prep_poll(shmsync_root *r, int fd, unsigned events, uint64_t data)
{
	struct io_uring_sqe *sqe = get_sqe(r);
	if (!sqe)
		return;
	io_uring_prep_poll_add(sqe, fd, events);
	io_uring_sqe_set_data64(sqe, data);
}

/* Arms the polls that tell the root of new connections, hellos and deaths:
 * the listening socket, the stop eventfd, pending connections, and each
 * worker's pidfd and connection. Returns how many it prepared. Called
 * before every sleep and after every turn that reaped events: a root kept
 * busy by commits may not sleep for a long time, and must still see a
 * worker die or a new one say hello (sync_killloop). */
static unsigned arm_watches(shmsync_root *r)
{
	unsigned n = 0;
	if (!r->ur.accept_armed) {
		prep_poll(r, r->listen_fd, POLLIN, root_ud(UD_ACCEPT, 0, 0));
		r->ur.accept_armed = true;
		n++;
	}
	if (!r->ur.wake_armed) {
		prep_poll(r, r->wake_fd, POLLIN, root_ud(UD_WAKE, 0, 0));
		r->ur.wake_armed = true;
		n++;
	}
	for (unsigned i = 0; i < MAX_PENDING; i++) {
		struct pending *pd = &r->pend[i];
		if (pd->fd >= 0 && !pd->armed) {
			prep_poll(r, pd->fd, POLLIN | POLLRDHUP, root_ud(UD_PENDING, i, pd->gen));
			pd->armed = true;
			n++;
		}
	}
	for (unsigned j = 0; j < r->nlive; j++) {
		struct slot *s = &r->slots[r->live[j]];
		unsigned i = r->live[j];
		if (!s->pid_armed) {
			prep_poll(r, s->pidfd, POLLIN, root_ud(UD_PIDFD, i, s->gen));
			s->pid_armed = true;
			s->inflight++;
			n++;
		}
		if (!s->conn_armed) {
			prep_poll(r, s->conn, POLLIN | POLLRDHUP, root_ud(UD_CONN, i, s->gen));
			s->conn_armed = true;
			s->inflight++;
			n++;
		}
	}
	return n;
}

/* Arms everything the root waits for when it sleeps (io_uring path): the
 * watches, the idle timer and a futex wait on each doorbell. */
static void arm_all(shmsync_root *r, bool want_timer)
{
	arm_watches(r);
	if (want_timer && !r->ur.timer_armed) {
		struct io_uring_sqe *sqe = get_sqe(r);
		if (sqe) {
			r->ur.timer_ts.tv_sec = 0;
			r->ur.timer_ts.tv_nsec = IDLE_RECLAIM_NS;
			io_uring_prep_timeout(sqe, &r->ur.timer_ts, 0, 0);
			io_uring_sqe_set_data64(sqe, root_ud(UD_TIMER, 0, 0));
			r->ur.timer_armed = true;
		}
	}
	for (unsigned j = 0; j < r->nlive; j++) {
		unsigned i = r->live[j];
		struct slot *s = &r->slots[i];
		if (!s->futex_armed) {
			struct io_uring_sqe *sqe = get_sqe(r);
			if (sqe) {
				s->doorbell_seen =
					atomic_load_explicit(&s->port->doorbell, memory_order_acquire);
				sig_prep_futex_wait(sqe, &s->port->doorbell, s->doorbell_seen);
				io_uring_sqe_set_data64(sqe, root_ud(UD_DOORBELL, i, s->gen));
				s->futex_armed = true;
				s->inflight++;
			}
		}
	}
	io_uring_submit(&r->ur.ring);
}

static int ur_init(shmsync_root *r, char *msg, size_t msglen)
{
	/* Three operations per worker at most, plus the root's own. */
	unsigned entries = 64;
	while (entries < 3 * r->max_workers + 16)
		entries *= 2;
	int rc = io_uring_queue_init(entries, &r->ur.ring, 0);
	if (rc < 0) {
		snprintf(msg, msglen, "io_uring_queue_init: %s", strerror(-rc));
		return rc;
	}
	r->ur.ok = true;
	return 0;
}

static void ur_fini(shmsync_root *r)
{
	if (r->ur.ok)
		io_uring_queue_exit(&r->ur.ring);
	r->ur.ok = false;
}

/* The listening socket, pending connections and slots are armed by arm_all
 * before each sleep, from the root's own tables: nothing to do at once. */
static void ur_watch_listen(shmsync_root *r)
{
	(void)r;
}

static void ur_watch_index(shmsync_root *r, unsigned i)
{
	(void)r;
	(void)i;
}

static void ur_unwatch_pending(shmsync_root *r, unsigned i)
{
	struct pending *pd = &r->pend[i];
	if (pd->armed)
		cancel(r, root_ud(UD_PENDING, i, pd->gen));
}

/* Workers ring by FUTEX_WAKE on the port's doorbell word alone. */
static int ur_make_doorbell(shmsync_root *r, int *fd)
{
	(void)r;
	*fd = -1;
	return 0;
}

static void ur_unwatch_slot(shmsync_root *r, unsigned idx)
{
	struct slot *s = &r->slots[idx];
	if (s->futex_armed)
		cancel(r, root_ud(UD_DOORBELL, idx, s->gen));
	if (s->pid_armed)
		cancel(r, root_ud(UD_PIDFD, idx, s->gen));
	if (s->conn_armed)
		cancel(r, root_ud(UD_CONN, idx, s->gen));
	io_uring_submit(&r->ur.ring);
}

/* Nothing is registered by fd: the operations were reaped already. */
static void ur_forget_slot(shmsync_root *r, struct slot *s)
{
	(void)r;
	(void)s;
}

static int ur_process(shmsync_root *r, unsigned max_events, bool slept)
{
	(void)slept;
	unsigned reaped;
	int n = reap(r, max_events, &reaped);
	if (reaped && arm_watches(r))
		io_uring_submit(&r->ur.ring);
	return n;
}

static void ur_wait(shmsync_root *r)
{
	struct io_uring_cqe *cqe;
	io_uring_wait_cqe(&r->ur.ring, &cqe);
}

static int ur_fd(const shmsync_root *r)
{
	return r->ur.ring.ring_fd;
}

const struct root_backend root_uring_backend = {
	.init = ur_init,
	.fini = ur_fini,
	.watch_listen = ur_watch_listen,
	.watch_pending = ur_watch_index,
	.unwatch_pending = ur_unwatch_pending,
	.make_doorbell = ur_make_doorbell,
	.watch_slot = ur_watch_index,
	.unwatch_slot = ur_unwatch_slot,
	.forget_slot = ur_forget_slot,
	.process = ur_process,
	.arm = arm_all,
	.wait = ur_wait,
	.fd = ur_fd,
};
