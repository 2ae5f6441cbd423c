/* The worker's waiting and signalling: sleeping on the tick futex word
 * (through its own io_uring, or FUTEX_WAIT in slices on the fallback path),
 * noticing the root's death, ringing the root's doorbell, and the waits an
 * embedding event loop makes (shmsync_prep_wait, shmsync_fd). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sync.h"

#define SLICE_NS 20000000 /* the futex path checks for the root's death this often */

enum { WUD_FUTEX = 1, WUD_CONN = 2, WUD_IGNORE = 3 };

void worker_reap(shmsync_worker *w)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	io_uring_for_each_cqe(&w->uring, head, cqe)
	{
		uint64_t d = io_uring_cqe_get_data64(cqe);
		if (d == WUD_FUTEX)
			w->futex_armed = false;
		else if (d == WUD_CONN) {
			w->conn_poll_armed = false;
			w->dead = true;
		}
		n++;
	}
	io_uring_cq_advance(&w->uring, n);
}

void worker_arm(shmsync_worker *w, uint32_t futex_val)
{
	if (!w->conn_poll_armed) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&w->uring);
		if (sqe) {
			io_uring_prep_poll_add(sqe, w->conn, POLLRDHUP | POLLHUP);
			io_uring_sqe_set_data64(sqe, WUD_CONN);
			w->conn_poll_armed = true;
			w->uring_ops++;
		}
	}
	if (!w->futex_armed) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&w->uring);
		if (sqe) {
			sig_prep_futex_wait(sqe, w->tick_futex, futex_val);
			io_uring_sqe_set_data64(sqe, WUD_FUTEX);
			w->futex_armed = true;
			w->uring_ops++;
		}
	}
	io_uring_submit(&w->uring);
}

bool worker_root_gone(shmsync_worker *w)
{
	if (w->dead)
		return true;
	struct pollfd p = {w->conn, POLLRDHUP, 0};
	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)))
		w->dead = true;
	return w->dead;
}

/* Tells the root that this worker may sleep on the tick futex word, so its
 * commits must make the FUTEX_WAKE call (it skips it otherwise). The store,
 * then a full fence, then (the caller) the futex word and the condition;
 * the root bumps the word, fences, then reads this: one of the two sees the
 * other (spec/wake.pml, "wants"), and the kernel's compare in FUTEX_WAIT
 * covers a bump between the worker's read of the word and its sleep. */
static void want_tick_wake(shmsync_worker *w, uint32_t bits)
{
	w->tick_wake = bits;
	atomic_store_explicit(&w->port->wants_tick_wake, bits, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
}

static int sleep_until(shmsync_worker *w, bool (*cond)(shmsync_worker *, uint64_t), uint64_t arg,
		       int64_t timeout_ns, int64_t deadline);

/* Is a CPU left for the rest of a long spin? A spin past WAIT_SPIN_NS
 * must take a CPU nobody else wants: 250 us ack spins of 4 workers with
 * the root on 2 cores starved one of them (sync_converge's fairness bound;
 * docs/ARCHITECTURE.md, "Polling before sleeping"). Two tests, both on
 * every check:
 * - the exporters the root counted (shared.h, hint_exporters) and the
 *   root itself fit the CPUs online: the processes that write, and so
 *   wait for acks, each have one. 0 (a root that predates the count) and
 *   a foreign machine's load say no.
 * - no process on the machine waits for a CPU: the kernel's count of
 *   runnable tasks (the fourth field of /proc/loadavg, "running/total",
 *   which counts this one) is at most the CPUs online. Both numbers are
 *   the machine's, so a cpuset or a container answers conservatively.
 *   Without /proc, no long spins. A read costs about 1.3 us, made every
 *   SPARE_CHECK_NS of a long spin.
 */
#define SPARE_CHECK_NS 16000

static bool cpu_to_spare(shmsync_worker *w)
{
	uint32_t exporters = atomic_load_explicit(&w->shared->hint_exporters, memory_order_relaxed);
	if (exporters == 0)
		return false;
	if (w->loadavg_fd == -1) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		w->loadavg_fd = n > 0 ? open("/proc/loadavg", O_RDONLY | O_CLOEXEC) : -1;
		if (w->loadavg_fd < 0) {
			w->loadavg_fd = -2;
			return false;
		}
		w->online_cpus = n;
	}
	if (w->loadavg_fd < 0 || (long)exporters + 1 > w->online_cpus)
		return false;
	char buf[128];
	ssize_t len = pread(w->loadavg_fd, buf, sizeof(buf) - 1, 0);
	if (len <= 0)
		return false;
	buf[len] = '\0';
	/* "0.52 0.58 0.59 2/123 4567": past three spaces, digits, then '/'. */
	const char *p = buf;
	for (int spaces = 0; spaces < 3; p++)
		if (*p == '\0')
			return false;
		else if (*p == ' ')
			spaces++;
	long running = 0;
	const char *digits = p;
	for (; *p >= '0' && *p <= '9' && running < 1000000; p++)
		running = running * 10 + (*p - '0');
	return p > digits && *p == '/' && running <= w->online_cpus;
}

int64_t worker_yield(shmsync_worker *w, int64_t now)
{
	sched_yield();
	int64_t back = sig_now_ns();
	w->yield_switched = back - now > YIELD_SWITCHED_NS;
	return back;
}

/* Waits until cond(w, arg) holds: spins briefly, then sleeps on the tick
 * futex word (which changes with every publish and every ack round).
 * 0, -ETIMEDOUT, -ESHUTDOWN. */
int worker_wait_for(shmsync_worker *w, bool (*cond)(shmsync_worker *, uint64_t), uint64_t arg,
		    int64_t timeout_ns, int64_t spin_ns, int64_t *waited, bool from_peer)
{
	int64_t dummy;
	if (!waited)
		waited = &dummy;
	*waited = 0;
	if (spin_ns <= 0)
		spin_ns = WAIT_SPIN_NS;
	/* A wait shorter than the spin ends on time. */
	if (timeout_ns > 0 && spin_ns > timeout_ns)
		spin_ns = timeout_ns;
	if (cond(w, arg))
		return 0;
	if (timeout_ns == 0)
		return worker_root_gone_lazy(w) ? -ESHUTDOWN : -ETIMEDOUT;
	int64_t start = sig_now_ns();
	int64_t deadline = timeout_ns < 0 ? INT64_MAX : start + timeout_ns;
	int64_t next_spare_check = WAIT_SPIN_NS; /* the default spin needs no spare CPU */
	/* The clock only every few turns: each read costs about as much as
	 * the check itself. A yield every POLL_YIELD_NS lets a process queued
	 * on this CPU run (the worker that is to answer, or the root): see
	 * poll_missed in worker.c. */
	for (unsigned turn = 1, yielded = 0;; turn++) {
		if (cond(w, arg))
			return 0; /* *waited: as of the last clock read, no read more */
		if (turn % 16)
			continue;
		int64_t spun = sig_now_ns() - start;
		*waited = spun;
		if (spun >= spin_ns)
			break;
		if (spun >= next_spare_check) {
			if (!cpu_to_spare(w))
				break;
			next_spare_check = spun + SPARE_CHECK_NS;
		}
		if (spun >= (int64_t)(yielded + 1) * POLL_YIELD_NS ||
		    (from_peer && yielded == 0 && w->yield_switched)) {
			yielded++;
			worker_yield(w, start + spun);
		}
	}
	uint32_t keep = w->tick_wake & PORT_TICK_WAKE_URING;
	want_tick_wake(w, keep | PORT_TICK_WAKE_CALL);
	int rc = sleep_until(w, cond, arg, timeout_ns, deadline);
	*waited = sig_now_ns() - start;
	/* Lowering needs no fence: a wake the root then makes anyway is
	 * only a wasted system call. */
	w->tick_wake = keep;
	atomic_store_explicit(&w->port->wants_tick_wake, keep, memory_order_relaxed);
	return rc;
}

static int sleep_until(shmsync_worker *w, bool (*cond)(shmsync_worker *, uint64_t), uint64_t arg,
		       int64_t timeout_ns, int64_t deadline)
{
	for (;;) {
		uint32_t v = atomic_load_explicit(w->tick_futex, memory_order_acquire);
		if (cond(w, arg))
			return 0;
		if (worker_root_gone(w))
			return -ESHUTDOWN;
		int64_t now = sig_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		int64_t left = deadline - now;
		if (w->signal == SIG_URING) {
			worker_arm(w, v);
			struct __kernel_timespec ts = {left / 1000000000, left % 1000000000};
			struct io_uring_cqe *cqe;
			io_uring_wait_cqe_timeout(&w->uring, &cqe, timeout_ns < 0 ? NULL : &ts);
			worker_reap(w);
		} else {
			int64_t slice = left < SLICE_NS ? left : SLICE_NS;
			/* A slice that ran out although the wait was over: the wake
			 * it should have had never came (or came within a hair of
			 * the slice's end). Counted, so tests can see lost wakes. */
			if (sig_futex_wait(w->tick_futex, v, slice) == -ETIMEDOUT && slice == SLICE_NS &&
			    cond(w, arg))
				w->late_wakes++;
		}
	}
}

void worker_drain_fdwake(shmsync_worker *w)
{
	if (w->fdwake_fd < 0)
		return;
	char buf[64];
	/* Bounded: the root's send buffer holds a few messages at most. */
	for (int i = 0; i < 256; i++)
		if (recv(w->fdwake_fd, buf, sizeof(buf), MSG_DONTWAIT) < 0)
			break;
	uint64_t v;
	if (read(w->fdself_fd, &v, sizeof(v)) < 0) {
		/* Not signalled: nothing to drain. */
	}
}

int shmsync_prep_wait(shmsync_worker *w, struct io_uring_sqe *sqe)
{
	CHECK_HANDLE(w);
	/* The handle's own choice, made once at attach (io_uring futex
	 * support, SHMSYNC_SIGNAL): probing the kernel here would set up and
	 * tear down an io_uring on every call. */
	if (w->signal != SIG_URING)
		return -EOPNOTSUPP;
	/* The caller's ring may wait on the word at any time from now on. */
	if (!(w->tick_wake & PORT_TICK_WAKE_URING))
		want_tick_wake(w, w->tick_wake | PORT_TICK_WAKE_URING);
	uint32_t v = atomic_load_explicit(w->tick_futex, memory_order_acquire);
	if (shm_published_tick(&w->seg) > w->cursor) {
		/* Already there: complete at once. */
		io_uring_prep_nop(sqe);
		return 0;
	}
	sig_prep_futex_wait(sqe, w->tick_futex, v);
	return 0;
}

/* The fallback's pollable fd. The root sends on a socket pair it made (it
 * takes no fd from a worker: see fdwake_request in sync/root_attach.c), so this
 * handle asks for one end and waits for it. The fd returned is an epoll fd
 * over that end, an eventfd of our own (for "ready already", which the
 * root's end cannot say) and the connection (readable when the root dies,
 * so a sleeping event loop learns of it). */
static int fdwake_setup(shmsync_worker *w)
{
	struct control c = {FDWAKE_REQ_MAGIC};
	int rc = att_send(w->conn, &c, sizeof(c), NULL, 0);
	if (rc < 0)
		return rc == -EPIPE || rc == -ECONNRESET ? -ESHUTDOWN : rc;
	struct pollfd p = {w->conn, POLLIN, 0};
	int n;
	do
		n = poll(&p, 1, 5000);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return -ETIMEDOUT;
	if (n < 0)
		return -errno;
	struct control reply;
	int fd = -1, nfd = 1;
	ssize_t got = att_recv(w->conn, &reply, sizeof(reply), &fd, &nfd, MSG_DONTWAIT);
	if (got == 0 || got == -ECONNRESET) {
		w->dead = true;
		return -ESHUTDOWN;
	}
	if (got != (ssize_t)sizeof(reply) || reply.magic != FDWAKE_MAGIC || nfd != 1) {
		if (nfd == 1)
			close(fd);
		return got < 0 ? (int)got : -EPROTO;
	}
	int self = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN};
	struct epoll_event hup = {.events = EPOLLRDHUP};
	if (self < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 ||
	    epoll_ctl(ep, EPOLL_CTL_ADD, self, &ev) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, w->conn, &hup) < 0) {
		rc = -errno;
		close(fd);
		if (self >= 0)
			close(self);
		if (ep >= 0)
			close(ep);
		return rc;
	}
	w->fdwake_fd = fd;
	w->fdself_fd = self;
	w->fdpoll_fd = ep;
	return 0;
}

int shmsync_fd(shmsync_worker *w)
{
	CHECK_HANDLE(w);
	w->fd_mode = true;
	if (w->uring_ok) {
		if (!(w->tick_wake & PORT_TICK_WAKE_URING))
			want_tick_wake(w, w->tick_wake | PORT_TICK_WAKE_URING);
		worker_reap(w);
		uint32_t v = atomic_load_explicit(w->tick_futex, memory_order_acquire);
		if (shm_published_tick(&w->seg) > w->cursor) {
			/* Ready now: make the fd readable with a no-op. */
			struct io_uring_sqe *sqe = io_uring_get_sqe(&w->uring);
			if (sqe) {
				io_uring_prep_nop(sqe);
				io_uring_sqe_set_data64(sqe, WUD_IGNORE);
				io_uring_submit(&w->uring);
				w->uring_ops++;
			}
		} else {
			worker_arm(w, v);
		}
		return w->uring.ring_fd;
	}
	if (w->fdpoll_fd < 0) {
		int rc = fdwake_setup(w);
		if (rc < 0)
			return rc;
		atomic_store_explicit(&w->port->wants_fd_wake, 1, memory_order_seq_cst);
		atomic_thread_fence(memory_order_seq_cst);
	}
	if (shm_published_tick(&w->seg) > w->cursor) {
		uint64_t one = 1;
		if (write(w->fdself_fd, &one, sizeof(one)) < 0) {
			/* Already readable. */
		}
	}
	return w->fdpoll_fd;
}
