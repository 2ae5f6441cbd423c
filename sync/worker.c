/* The worker's side: attach, batches and export, acks, import of the next
 * state, zero-copy reads at the worker's snapshot, and waiting.
 *
 * Positions (docs/ARCHITECTURE.md, "Positions"): the read epoch is
 * announced before anything of that snapshot is read, with the classic
 * protocol: store the epoch (seq_cst), re-read the published tick, and start
 * over if it moved. The root scans epochs only after a publish and a full
 * fence, so either its scan sees the announcement, or the re-read sees every
 * tick the root published before scanning. A worker that is online and
 * still counted (not revoked since it announced) moves its epoch up with a
 * plain release store (advance_epoch): the old epoch already holds all it
 * can see. The cursor is stored (release) after the import that reached it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "layout.h"
#include "sync.h"

#define GUARD_MAGIC 0x5348535947554152ull
#define SPIN_NS 20000
#define SLICE_NS 20000000          /* the futex path checks for the root's death this often */
#define GONE_CHECK_NS 1000000      /* non-blocking calls look for the root's death this often */
#define ATTACH_RETRY_NS 5000000000 /* a busy root is asked again for this long */

enum { WUD_FUTEX = 1, WUD_CONN = 2, WUD_IGNORE = 3 };

static bool forked(const shmsync_worker *w)
{
	return w->fork_guard[0] != GUARD_MAGIC;
}

#define CHECK_HANDLE(w)                                                                                      \
	do {                                                                                                 \
		if (forked(w))                                                                               \
			return -ECHILD;                                                                      \
	} while (0)

static void msg(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msg(char *buf, size_t len, const char *fmt, ...)
{
	if (!buf || !len)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/* ---- waiting ----------------------------------------------------------- */

static void reap(shmsync_worker *w)
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

static void arm(shmsync_worker *w, uint32_t futex_val)
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
			sig_prep_futex_wait(sqe, &w->seg.hdr->tick_futex, futex_val);
			io_uring_sqe_set_data64(sqe, WUD_FUTEX);
			w->futex_armed = true;
			w->uring_ops++;
		}
	}
	io_uring_submit(&w->uring);
}

static bool root_gone(shmsync_worker *w)
{
	if (w->dead)
		return true;
	struct pollfd p = {w->conn, POLLRDHUP, 0};
	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)))
		w->dead = true;
	return w->dead;
}

/* The same question for calls that do not block. A poll(2) costs more than
 * the whole spinning export or import around it, so these ask the kernel at
 * most every GONE_CHECK_NS; a call that is about to sleep always asks (and
 * the io_uring path also arms a poll on the connection). So an export may
 * succeed up to a millisecond after the root died: its wait_committed then
 * reports -ESHUTDOWN, and nothing that was acked is affected. */
static bool root_gone_lazy(shmsync_worker *w)
{
	if (w->dead)
		return true;
	int64_t now = sig_now_ns();
	if (now - w->gone_checked < GONE_CHECK_NS)
		return false;
	w->gone_checked = now;
	return root_gone(w);
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

/* Waits until cond(w, arg) holds: spins briefly, then sleeps on the tick
 * futex word (which changes with every publish and every ack round).
 * 0, -ETIMEDOUT, -ESHUTDOWN. */
static int wait_for(shmsync_worker *w, bool (*cond)(shmsync_worker *, uint64_t), uint64_t arg,
		    int64_t timeout_ns)
{
	if (cond(w, arg))
		return 0;
	if (timeout_ns == 0)
		return root_gone_lazy(w) ? -ESHUTDOWN : -ETIMEDOUT;
	int64_t start = sig_now_ns();
	int64_t deadline = timeout_ns < 0 ? INT64_MAX : start + timeout_ns;
	/* The clock only every few turns: each read costs about as much as
	 * the check itself. */
	for (unsigned turn = 1; turn % 16 || sig_now_ns() - start < SPIN_NS; turn++)
		if (cond(w, arg))
			return 0;
	uint32_t keep = w->tick_wake & PORT_TICK_WAKE_URING;
	want_tick_wake(w, keep | PORT_TICK_WAKE_CALL);
	int rc = sleep_until(w, cond, arg, timeout_ns, deadline);
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
		uint32_t v = atomic_load_explicit(&w->seg.hdr->tick_futex, memory_order_acquire);
		if (cond(w, arg))
			return 0;
		if (root_gone(w))
			return -ESHUTDOWN;
		int64_t now = sig_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		int64_t left = deadline - now;
		if (w->signal == SIG_URING) {
			arm(w, v);
			struct __kernel_timespec ts = {left / 1000000000, left % 1000000000};
			struct io_uring_cqe *cqe;
			io_uring_wait_cqe_timeout(&w->uring, &cqe, timeout_ns < 0 ? NULL : &ts);
			reap(w);
		} else {
			int64_t slice = left < SLICE_NS ? left : SLICE_NS;
			/* A slice that ran out although the wait was over: the wake
			 * it should have had never came (or came within a hair of
			 * the slice's end). Counted, so tests can see lost wakes. */
			if (sig_futex_wait(&w->seg.hdr->tick_futex, v, slice) == -ETIMEDOUT &&
			    slice == SLICE_NS && cond(w, arg))
				w->late_wakes++;
		}
	}
}

/* ---- attach ------------------------------------------------------------ */

static int map_port(shmsync_worker *w, int fd, char *err, size_t errlen)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < PORT_HDR_SIZE || st.st_size > ((off_t)1 << 32)) {
		msg(err, errlen, "the port the root sent is not a port");
		return -EPROTO;
	}
	size_t size = (size_t)st.st_size;
	struct port_hdr *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		msg(err, errlen, "mapping the port failed: %s", strerror(errno));
		return -errno;
	}
	uint64_t acks = (uint64_t)PORT_NACKS * sizeof(struct port_ack);
	if (p->magic != PORT_MAGIC || p->version != PORT_VERSION || p->size != size ||
	    p->hdr_size != PORT_HDR_SIZE || p->acks_off < PORT_HDR_SIZE || p->acks_off + acks > size ||
	    p->ring_off < p->acks_off + acks || p->ring_size == 0 || (p->ring_size & (p->ring_size - 1)) ||
	    p->ring_off + p->ring_size > size) {
		munmap(p, size);
		msg(err, errlen, "the port's header is not one this library reads (port version %u)",
		    PORT_VERSION);
		return -EPROTO;
	}
	w->port = p;
	w->port_size = size;
	w->acks = (struct port_ack *)((uint8_t *)p + p->acks_off);
	w->exring = (uint8_t *)p + p->ring_off;
	return 0;
}

/* Announces the published tick as the read epoch, until it holds still. */
static void go_online(shmsync_worker *w, uint64_t *tick, uint64_t *log_end)
{
	for (;;) {
		shm_published_state(&w->seg, tick, log_end);
		atomic_store_explicit(&w->port->read_epoch, *tick, memory_order_seq_cst);
		atomic_thread_fence(memory_order_seq_cst);
		uint64_t t2, e2;
		shm_published_state(&w->seg, &t2, &e2);
		if (t2 == *tick)
			break;
	}
	/* Reads use this snapshot from now on, whether or not the import that
	 * announced it completes (the cursor then stays behind). */
	w->epoch = *tick;
	w->online = true;
}

/* Moves the read epoch up to the published tick while this worker is
 * online and still counted by the root (no revocation since it announced).
 * The root's minimum already holds everything visible at the old epoch,
 * and a newer snapshot sees no more of what is retired (only less), so
 * neither the re-read nor the full fence of go_online is needed: a release
 * store orders the reads at the old snapshot before it, which is all the
 * root relies on when it sees the new value (spec/reclaim.pml, "FAST"). */
static void advance_epoch(shmsync_worker *w, uint64_t *tick, uint64_t *log_end)
{
	shm_published_state(&w->seg, tick, log_end);
	if (*tick > w->epoch)
		atomic_store_explicit(&w->port->read_epoch, *tick, memory_order_release);
	else
		*tick = w->epoch; /* never down */
	w->epoch = *tick;
}

static void worker_free(shmsync_worker *w)
{
	if (w->uring_ok)
		io_uring_queue_exit(&w->uring);
	if (w->port)
		munmap(w->port, w->port_size);
	if (w->seg.base)
		shm_seg_close(&w->seg);
	int fds[] = {w->conn, w->doorbell_fd, w->fdwake_fd, w->fdself_fd, w->fdpoll_fd};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (w->fork_guard)
		munmap(w->fork_guard, 4096);
	if (w->batch_cache) {
		wire_free(&w->batch_cache->buf);
		free(w->batch_cache);
	}
	shm_diff_scratch_free(w->diff_scratch);
	free(w);
}

/* The uids this worker trusts to serve it besides its own and 0: the
 * caller's list, else $SHMSYNC_ROOT_UIDS. */
struct trust {
	const uid_t *uids;
	unsigned n;
	uid_t env[64];
};

static int trust_init(struct trust *t, const uid_t *uids, unsigned n, char *err, size_t errlen)
{
	t->uids = uids;
	t->n = uids ? n : 0;
	if (uids)
		return 0;
	const char *e = getenv("SHMSYNC_ROOT_UIDS");
	if (!e || !*e)
		return 0;
	const char *p = e;
	while (*p) {
		char *end;
		errno = 0;
		unsigned long v = strtoul(p, &end, 10);
		if (end == p || errno || v >= (uid_t)-1 || (*end && *end != ',') || *p == '-' || *p == '+' ||
		    t->n == sizeof(t->env) / sizeof(t->env[0])) {
			msg(err, errlen,
			    "SHMSYNC_ROOT_UIDS=\"%.40s\": expected up to 64 numeric uids separated by commas",
			    e);
			return -EINVAL;
		}
		t->env[t->n++] = (uid_t)v;
		p = *end ? end + 1 : end;
		if (*end && !*p) {
			msg(err, errlen, "SHMSYNC_ROOT_UIDS=\"%.40s\": trailing comma", e);
			return -EINVAL;
		}
	}
	t->uids = t->env;
	return 0;
}

/* Who serves this socket? Checked before a byte is sent: whoever bound
 * the path first (in a world-writable directory, anyone) would otherwise
 * receive this worker's writes. */
static int check_root_uid(int fd, const struct trust *t, char *err, size_t errlen)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		int e = errno;
		msg(err, errlen, "SO_PEERCRED on the root's socket: %s", strerror(e));
		return -e;
	}
	uid_t me = geteuid();
	if (cred.uid == me || cred.uid == 0)
		return 0;
	for (unsigned i = 0; i < t->n; i++)
		if (t->uids[i] == cred.uid)
			return 0;
	msg(err, errlen,
	    "the socket is served by uid %u (pid %d), not by this uid (%u) or root: refusing to attach; "
	    "if that uid is trusted, name it in SHMSYNC_ROOT_UIDS",
	    (unsigned)cred.uid, (int)cred.pid, (unsigned)me);
	return -EPERM;
}

static int attach_fd(shmsync_worker **out, int fd, const struct trust *t, char *err, size_t errlen)
{
	int trc = check_root_uid(fd, t, err, errlen);
	if (trc < 0) {
		close(fd);
		return trc;
	}
	shmsync_worker *w = calloc(1, sizeof(*w));
	if (!w) {
		close(fd);
		return -ENOMEM;
	}
	w->conn = fd;
	w->doorbell_fd = w->fdwake_fd = w->fdself_fd = w->fdpoll_fd = -1;
	w->seg.fd = -1;
	int rc;
	w->fork_guard = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w->fork_guard == MAP_FAILED || madvise(w->fork_guard, 4096, MADV_WIPEONFORK) < 0) {
		if (w->fork_guard == MAP_FAILED)
			w->fork_guard = NULL;
		rc = -errno;
		msg(err, errlen, "the fork guard page: %s", strerror(errno));
		goto fail;
	}
	w->fork_guard[0] = GUARD_MAGIC;
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct hello h = {HELLO_MAGIC, SHM_LAYOUT_VERSION, PORT_VERSION, WIRE_VERSION, 0};
	rc = att_send(fd, &h, sizeof(h), NULL, 0);
	/* A root that refuses at once (too many attaches in progress) may
	 * have answered and closed before the hello went out: its answer is
	 * still there to read. */
	if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET) {
		msg(err, errlen, "sending the hello failed: %s", strerror(-rc));
		goto fail;
	}
	struct welcome wl;
	int fds[3] = {-1, -1, -1}, nfds = 3;
	ssize_t n = att_recv(fd, &wl, sizeof(wl), fds, &nfds, 0);
	if (n != (ssize_t)sizeof(wl) || wl.magic != WELCOME_MAGIC) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		rc = n < 0 ? (int)n : -EPROTO;
		if (n == 0)
			rc = -ECONNRESET;
		if (rc == -ECONNRESET || rc == -EPIPE)
			msg(err, errlen,
			    "the root closed the connection without a welcome (it was flooded with "
			    "connections, or this is not a shmsync root)");
		else if (n < 0)
			msg(err, errlen, "no welcome from the root: %s", strerror((int)-n));
		else
			msg(err, errlen, "no welcome from the root: not a shmsync root");
		goto fail;
	}
	wl.msg[sizeof(wl.msg) - 1] = 0;
	if (wl.status < 0) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		rc = wl.status;
		msg(err, errlen, "the root refused: %s", wl.msg);
		goto fail;
	}
	if (wl.layout_version != SHM_LAYOUT_VERSION || wl.port_version != PORT_VERSION ||
	    wl.wire_version != WIRE_VERSION || nfds < 2 ||
	    (wl.signal != SIG_URING && wl.signal != SIG_FUTEX) || (wl.signal == SIG_FUTEX && nfds < 3)) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		rc = -EPROTO;
		msg(err, errlen, "root has layout %u port %u wire %u, this worker %u %u %u",
		    wl.layout_version, wl.port_version, wl.wire_version, SHM_LAYOUT_VERSION, PORT_VERSION,
		    WIRE_VERSION);
		goto fail;
	}
	struct shm_err se = {{0}};
	rc = shm_seg_open_reader(&w->seg, fds[0], &se);
	close(fds[0]);
	if (rc < 0) {
		close(fds[1]);
		if (nfds > 2)
			close(fds[2]);
		msg(err, errlen, "%s", se.msg);
		goto fail;
	}
	rc = map_port(w, fds[1], err, errlen);
	close(fds[1]);
	if (nfds > 2)
		w->doorbell_fd = fds[2];
	if (rc < 0)
		goto fail;
	w->signal = (int)wl.signal;
	w->slot = wl.slot;
	w->gen = wl.gen;
	w->max_batch = wl.max_batch;
	w->log_half = w->seg.hdr->log_size / 2;
	uint64_t wsize;
	const struct wtab *wt = shm_seg_ext(&w->seg, &wsize);
	if (wt && wsize >= sizeof(*wt) && wt->magic == WTAB_MAGIC && wt->n > wl.slot &&
	    (wsize - sizeof(*wt)) / sizeof(struct wtab_entry) >= wt->n)
		w->wtab = wt;
	w->next_seq = 1;
	/* The worker's own choice: io_uring for its waits where it works,
	 * unless SHMSYNC_SIGNAL=futex. The root's doorbell needs what the root
	 * waits with, which the welcome said. */
	int mine;
	char m[160];
	rc = sig_choose(&mine, m, sizeof(m));
	if (rc < 0) {
		msg(err, errlen, "%s", m);
		goto fail;
	}
	if (mine == SIG_URING) {
		rc = io_uring_queue_init(8, &w->uring, 0);
		if (rc < 0) {
			msg(err, errlen, "io_uring_queue_init: %s", strerror(-rc));
			goto fail;
		}
		w->uring_ok = true;
	}
	w->signal = mine;
	w->root_signal = (int)wl.signal;
	tv = (struct timeval){0, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	uint64_t tick, log_end;
	go_online(w, &tick, &log_end);
	w->cursor = tick;
	w->log_pos = log_end;
	atomic_store_explicit(&w->port->cursor, tick, memory_order_release);
	w->pid = getpid();
	*out = w;
	return 0;
fail:
	worker_free(w);
	return rc;
}

int shmsync_attach_fd(shmsync_worker **w, int fd)
{
	struct trust t;
	int rc = trust_init(&t, NULL, 0, NULL, 0);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	return attach_fd(w, fd, &t, NULL, 0);
}

int shmsync_attach_msg(shmsync_worker **w, const char *path, char *err, size_t errlen)
{
	shmsync_attach_opts o = {.socket_path = path, .errbuf = err, .errbuf_len = errlen};
	return shmsync_attach_with(w, &o);
}

/* Connects to path and attaches; on a busy root (-EAGAIN) or a connection
 * it closed unanswered, tries again with backoff for ATTACH_RETRY_NS: a
 * flood of connections from others must not fail an honest attach. */
static int attach_path(shmsync_worker **w, const char *path, const struct trust *t, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path)) {
		msg(err, errlen, "socket path longer than %zu bytes", sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	int64_t give_up = sig_now_ns() + ATTACH_RETRY_NS;
	useconds_t backoff = 1000;
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			int e = errno;
			close(fd);
			msg(err, errlen, "connecting to %s: %s", path, strerror(e));
			/* A full backlog under a flood: EAGAIN, worth a retry. */
			if (e != EAGAIN || sig_now_ns() > give_up)
				return -e;
		} else {
			int rc = attach_fd(w, fd, t, err, errlen);
			if ((rc != -EAGAIN && rc != -ECONNRESET && rc != -EPIPE) || sig_now_ns() > give_up)
				return rc;
		}
		usleep(backoff);
		if (backoff < 100000)
			backoff *= 2;
	}
}

int shmsync_attach_with(shmsync_worker **w, const shmsync_attach_opts *o)
{
	shmsync_attach_opts d = {0};
	if (!o)
		o = &d;
	char *err = o->errbuf;
	size_t errlen = o->errbuf_len;
	struct trust t;
	int rc = trust_init(&t, o->root_uids, o->n_root_uids, err, errlen);
	if (rc < 0)
		return rc;
	const char *path = o->socket_path;
	if (!path) {
		const char *afd = getenv("SHMSYNC_ATTACH_FD");
		if (afd && *afd) {
			char *end;
			long fd = strtol(afd, &end, 10);
			struct stat st;
			if (*end || fd < 0 || fd > 1 << 20 || fstat((int)fd, &st) < 0 ||
			    !S_ISSOCK(st.st_mode)) {
				msg(err, errlen, "SHMSYNC_ATTACH_FD=\"%.20s\" is not an open socket", afd);
				return -EINVAL;
			}
			return attach_fd(w, (int)fd, &t, err, errlen);
		}
		path = getenv("SHMSYNC_SOCKET");
		if (!path || !*path) {
			msg(err, errlen, "no socket path: pass one, or set SHMSYNC_SOCKET");
			return -EINVAL;
		}
	}
	return attach_path(w, path, &t, err, errlen);
}

int shmsync_attach(shmsync_worker **w, const char *path)
{
	return shmsync_attach_msg(w, path, NULL, 0);
}

void shmsync_detach(shmsync_worker *w)
{
	if (!w)
		return;
	if (!forked(w)) {
		atomic_store_explicit(&w->port->read_epoch, PORT_OFFLINE, memory_order_release);
		struct control c = {BYE_MAGIC};
		att_send(w->conn, &c, sizeof(c), NULL, 0);
	}
	worker_free(w);
}

uint64_t shmsync_cursor(const shmsync_worker *w)
{
	return w->cursor;
}

/* ---- batches ----------------------------------------------------------- */

int shmsync_begin(shmsync_worker *w, shmsync_batch **out)
{
	CHECK_HANDLE(w);
	shmsync_batch *b = w->batch_cache;
	w->batch_cache = NULL;
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			return -ENOMEM;
		wire_init(&b->buf);
	}
	b->w = w;
	b->buf.len = 0;
	b->buf.nops = 0;
	b->log_bytes = 0;
	*out = b;
	return 0;
}

static int add_op(shmsync_batch *b, const struct shm_op *op)
{
	if (!b || forked(b->w))
		return b ? -ECHILD : -EINVAL;
	int rc = shm_op_check(op);
	if (rc < 0)
		return rc;
	size_t lb = shm_batch_log_bytes(op, 1);
	if (b->log_bytes + lb > b->w->log_half)
		return -E2BIG;
	size_t len = b->buf.len;
	uint32_t nops = b->buf.nops;
	rc = wire_append(&b->buf, op, b->w->max_batch);
	if (rc < 0) {
		b->buf.len = len;
		b->buf.nops = nops;
		return rc;
	}
	b->log_bytes += lb;
	return 0;
}

static struct shm_op key_op(int kind, const char *dir, const void *k, size_t kn)
{
	return (struct shm_op){
		.kind = kind, .dir = dir, .dir_len = dir ? strlen(dir) : 0, .key = k, .key_len = kn};
}

int shmsync_put(shmsync_batch *b, const char *dir, const void *k, size_t kn, const void *v, size_t vn)
{
	struct shm_op op = key_op(SHM_OP_PUT, dir, k, kn);
	op.value = v;
	op.value_len = vn;
	return add_op(b, &op);
}

int shmsync_put_if_absent(shmsync_batch *b, const char *dir, const void *k, size_t kn, const void *v,
			  size_t vn)
{
	struct shm_op op = key_op(SHM_OP_PUT_IF_ABSENT, dir, k, kn);
	op.value = v;
	op.value_len = vn;
	return add_op(b, &op);
}

int shmsync_put_if_tick(shmsync_batch *b, const char *dir, const void *k, size_t kn, const void *v, size_t vn,
			uint64_t expected_tick)
{
	struct shm_op op = key_op(SHM_OP_PUT_IF_TICK, dir, k, kn);
	op.value = v;
	op.value_len = vn;
	op.expected_tick = expected_tick;
	return add_op(b, &op);
}

int shmsync_add(shmsync_batch *b, const char *dir, const void *k, size_t kn, int64_t delta)
{
	struct shm_op op = key_op(SHM_OP_ADD, dir, k, kn);
	op.delta = delta;
	return add_op(b, &op);
}

int shmsync_del(shmsync_batch *b, const char *dir, const void *k, size_t kn)
{
	struct shm_op op = key_op(SHM_OP_DEL, dir, k, kn);
	return add_op(b, &op);
}

int shmsync_mkdir(shmsync_batch *b, const char *dir)
{
	struct shm_op op = key_op(SHM_OP_MKDIR, dir, NULL, 0);
	return add_op(b, &op);
}

int shmsync_rmdir(shmsync_batch *b, const char *dir)
{
	struct shm_op op = key_op(SHM_OP_RMDIR, dir, NULL, 0);
	return add_op(b, &op);
}

void shmsync_abort(shmsync_batch *b)
{
	if (!b)
		return;
	shmsync_worker *w = b->w;
	if (!w->batch_cache && !forked(w) && b->buf.cap <= ((size_t)1 << 20)) {
		w->batch_cache = b;
		return;
	}
	wire_free(&b->buf);
	free(b);
}

static bool ring_has_room(shmsync_worker *w, uint64_t need)
{
	uint64_t head = atomic_load_explicit(&w->port->ring_head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&w->port->ring_tail, memory_order_acquire);
	uint64_t acked = atomic_load_explicit(&w->port->acked_seq, memory_order_acquire);
	return head - tail + 2 * need <= w->port->ring_size && w->next_seq - acked < PORT_NACKS;
}

static void ring_doorbell(shmsync_worker *w)
{
	atomic_fetch_add_explicit(&w->port->doorbell, 1, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	if (!atomic_load_explicit(&w->port->root_sleeping, memory_order_relaxed))
		return;
	if (w->root_signal == SIG_URING) {
		sig_futex_wake(&w->port->doorbell, 1);
	} else {
		uint64_t one = 1;
		if (write(w->doorbell_fd, &one, sizeof(one)) < 0) {
			/* The counter is full: the root is readable already. */
		}
	}
}

int shmsync_export(shmsync_batch *b, int flags, uint64_t *seq)
{
	if (!b)
		return -EINVAL;
	shmsync_worker *w = b->w;
	CHECK_HANDLE(w);
	if (flags & ~SHMSYNC_NONBLOCK)
		return -EINVAL;
	if (root_gone_lazy(w))
		return -ESHUTDOWN;
	size_t len = wire_seal(&b->buf, w->next_seq);
	for (;;) {
		/* Like the ring's tail, the acks are the root's line: read
		 * again only when the old value says we are at the limit. */
		if (w->next_seq - w->acked_seen >= PORT_NACKS)
			w->acked_seen = atomic_load_explicit(&w->port->acked_seq, memory_order_acquire);
		int rc = w->next_seq - w->acked_seen >= PORT_NACKS
				 ? -EAGAIN
				 : ring_put_cached(w->port, w->exring, b->buf.data, len, &w->tail_seen);
		if (rc == 0)
			break;
		if (rc != -EAGAIN)
			return rc;
		if (flags & SHMSYNC_NONBLOCK)
			return -EAGAIN;
		/* The root drains rings and acks; each ack round wakes us. */
		rc = wait_for(w, ring_has_room, len, -1);
		if (rc < 0)
			return rc;
	}
	ring_doorbell(w);
	if (seq)
		*seq = w->next_seq;
	w->next_seq++;
	w->exported++;
	shmsync_abort(b);
	return 0;
}

static bool acked(shmsync_worker *w, uint64_t seq)
{
	return atomic_load_explicit(&w->port->acked_seq, memory_order_acquire) >= seq;
}

int shmsync_wait_committed(shmsync_worker *w, uint64_t seq, uint64_t *tick, int64_t timeout_ns)
{
	CHECK_HANDLE(w);
	if (seq == 0 || seq >= w->next_seq)
		return -EINVAL;
	if (w->next_seq - seq > PORT_NACKS)
		return -ERANGE; /* its ack slot was reused long ago */
	int rc = wait_for(w, acked, seq, timeout_ns);
	if (rc < 0)
		return rc;
	struct port_ack *a = &w->acks[seq % PORT_NACKS];
	uint64_t s = atomic_load_explicit(&a->seq, memory_order_relaxed);
	int64_t res = atomic_load_explicit(&a->result, memory_order_relaxed);
	if (s != seq)
		return -ERANGE;
	if (res < 0) {
		w->rejected++;
		return (int)res;
	}
	w->committed++;
	if (tick)
		*tick = (uint64_t)res;
	return 0;
}

/* The root's revocation counter for this slot (stall policy REVOKE). */
static uint32_t revocations(shmsync_worker *w)
{
	const struct wtab *t = w->wtab;
	return t ? atomic_load_explicit(&t->e[w->slot].revoked, memory_order_acquire) : 0;
}

/* After a read: was this snapshot revoked meanwhile? Then what was read may
 * have been freed and reused: the read reports ESTALE. */
static bool revoked_since(shmsync_worker *w)
{
	/* Orders the reads before the counter's load: a read that saw memory
	 * the root freed after revoking sees the revocation (the root's fence
	 * between its bump and its frees pairs with this one). */
	atomic_thread_fence(memory_order_acquire);
	return revocations(w) != w->revoke_seen;
}

/* ---- import ------------------------------------------------------------ */

struct import_ctx {
	shmsync_change_fn fn;
	void *arg;
	int count;
	bool reset;
	int stopped; /* the callback's non-zero value */
};

static int deliver(const struct shm_change *c, void *arg)
{
	struct import_ctx *ic = arg;
	if (c->kind == SHM_CHANGE_RESET)
		ic->reset = true;
	ic->count++;
	if (!ic->fn)
		return 0;
	shmsync_change ch = {
		.tick = c->tick,
		.kind = c->kind,
		.dir = c->dir,
		.key = c->key,
		.key_len = c->key_len,
		.value = c->value,
		.value_len = c->value_len,
	};
	int rc = ic->fn(&ch, ic->arg);
	/* Kept aside: shm_diff's own 1 means "a reset was delivered". */
	if (rc)
		ic->stopped = rc;
	return rc ? -ECANCELED : 0;
}

static bool tick_reached(shmsync_worker *w, uint64_t target)
{
	return shm_published_tick(&w->seg) >= target;
}

static void drain_fdwake(shmsync_worker *w)
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

/* After a wait that timed out: the handle goes back to the snapshot it
 * had, so reads and views taken before the call work as before. That
 * snapshot is announced again with the classic protocol: if the published
 * tick is still the old epoch, nothing was retired after it while we were
 * offline, so everything it sees is still there. If a commit came
 * meanwhile, the old snapshot may be gone: false when the target is now
 * reached (the caller imports after all), else the handle comes online at
 * the published tick (an import_until whose target lies further). A
 * revoked handle stays offline (its reads report ESTALE). */
static bool back_online(shmsync_worker *w, uint64_t target)
{
	if (revocations(w) != w->revoke_seen)
		return true;
	uint64_t old = w->epoch;
	atomic_store_explicit(&w->port->read_epoch, old, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	if (shm_published_tick(&w->seg) == old) {
		w->online = true;
		return true;
	}
	atomic_store_explicit(&w->port->read_epoch, PORT_OFFLINE, memory_order_release);
	if (tick_reached(w, target))
		return false;
	uint64_t tick, log_end;
	go_online(w, &tick, &log_end);
	return true;
}

static int import_to(shmsync_worker *w, uint64_t target, int64_t timeout_ns, shmsync_change_fn fn, void *arg)
{
	CHECK_HANDLE(w);
	if (w->uring_ok)
		reap(w);
	drain_fdwake(w);
	if (!tick_reached(w, target)) {
		/* Polling: one cheap look for the root's death, nothing else. */
		if (timeout_ns == 0)
			return root_gone_lazy(w) ? -ESHUTDOWN : -ETIMEDOUT;
		/* Offline while asleep: an idle worker pins log bytes only. */
		bool was_online = w->online;
		shmsync_offline(w);
		int rc = wait_for(w, tick_reached, target, timeout_ns);
		/* A commit that lands between the last look and back_online is
		 * imported rather than reported as a timeout. */
		if (rc == -ETIMEDOUT && was_online && !back_online(w, target))
			rc = 0;
		if (rc < 0)
			return rc;
	}
	/* Rejoin after a revocation: take the counter first, then announce a
	 * snapshot (necessarily at or after the revocation), which the root
	 * counts again. */
	uint32_t revoked = revocations(w);
	bool counted = w->online && revoked == w->revoke_seen;
	w->revoke_seen = revoked;
	uint64_t tick, log_end;
	if (counted)
		advance_epoch(w, &tick, &log_end);
	else
		go_online(w, &tick, &log_end);
	struct import_ctx ic = {fn, arg, 0, false, 0};
	int rc = shm_diff_reuse(&w->seg, &w->diff_scratch, w->log_pos, tick, log_end, deliver, &ic);
	if (revoked_since(w))
		return -ESTALE; /* what this call delivered may be garbage; the cursor stays */
	w->imports++;
	if (ic.reset)
		w->resets++;
	if (ic.stopped)
		return ic.stopped; /* the cursor stays: the next import delivers again */
	if (rc < 0)
		return rc;
	w->cursor = tick;
	w->log_pos = log_end;
	atomic_store_explicit(&w->port->cursor, tick, memory_order_release);
	if (w->fd_mode && w->uring_ok)
		arm(w, atomic_load_explicit(&w->seg.hdr->tick_futex, memory_order_acquire));
	return ic.count;
}

int shmsync_import_next(shmsync_worker *w, int64_t timeout_ns, shmsync_change_fn fn, void *arg)
{
	return import_to(w, w->cursor + 1, timeout_ns, fn, arg);
}

int shmsync_import_until(shmsync_worker *w, uint64_t tick, int64_t timeout_ns, shmsync_change_fn fn,
			 void *arg)
{
	if (tick <= w->cursor && w->online)
		return 0;
	return import_to(w, tick > w->cursor ? tick : w->cursor, timeout_ns, fn, arg);
}

void shmsync_offline(shmsync_worker *w)
{
	if (forked(w))
		return;
	atomic_store_explicit(&w->port->read_epoch, PORT_OFFLINE, memory_order_release);
	w->online = false;
}

/* ---- reads ------------------------------------------------------------- */

int shmsync_get(shmsync_worker *w, const char *dir, const void *k, size_t kn, shmsync_view *v)
{
	CHECK_HANDLE(w);
	if (!w->online)
		return -ESTALE;
	if (!dir)
		return -EINVAL;
	struct shm_value val;
	int rc = shm_get(&w->seg, w->epoch, dir, strlen(dir), k, kn, &val);
	if (revoked_since(w))
		return -ESTALE;
	if (rc < 0)
		return rc;
	*v = (shmsync_view){val.data, val.len, val.tick, w->epoch};
	return 0;
}

int shmsync_view_valid(shmsync_worker *w, const shmsync_view *v)
{
	return !forked(w) && w->online && v && v->epoch == w->epoch && !revoked_since(w);
}

struct iter_ctx {
	shmsync_worker *w;
	int (*kfn)(const void *k, size_t kn, shmsync_view v, void *arg);
	int (*dfn)(const char *dir, void *arg);
	void *arg;
};

static int iter_key(const void *key, size_t key_len, const struct shm_value *v, void *arg)
{
	struct iter_ctx *c = arg;
	return c->kfn(key, key_len, (shmsync_view){v->data, v->len, v->tick, c->w->epoch}, c->arg);
}

static int iter_dir(const char *dir, size_t dir_len, void *arg)
{
	(void)dir_len;
	struct iter_ctx *c = arg;
	return c->dfn(dir, c->arg);
}

int shmsync_dir_iter(shmsync_worker *w, const char *dir,
		     int (*fn)(const void *k, size_t kn, shmsync_view v, void *arg), void *arg)
{
	CHECK_HANDLE(w);
	if (!w->online)
		return -ESTALE;
	if (!dir || !fn)
		return -EINVAL;
	struct iter_ctx c = {w, fn, NULL, arg};
	int rc = shm_dir_iter(&w->seg, w->epoch, dir, strlen(dir), iter_key, &c);
	return revoked_since(w) ? -ESTALE : rc;
}

int shmsync_dirs_iter(shmsync_worker *w, const char *prefix, int (*fn)(const char *dir, void *arg), void *arg)
{
	CHECK_HANDLE(w);
	if (!w->online)
		return -ESTALE;
	if (!fn)
		return -EINVAL;
	if (!prefix)
		prefix = "/";
	struct iter_ctx c = {w, NULL, fn, arg};
	int rc = shm_dirs_iter(&w->seg, w->epoch, prefix, strlen(prefix), iter_dir, &c);
	return revoked_since(w) ? -ESTALE : rc;
}

/* ---- embedding --------------------------------------------------------- */

int shmsync_prep_wait(shmsync_worker *w, struct io_uring_sqe *sqe)
{
	CHECK_HANDLE(w);
	if (!sig_uring_futex_supported())
		return -EOPNOTSUPP;
	/* The caller's ring may wait on the word at any time from now on. */
	if (!(w->tick_wake & PORT_TICK_WAKE_URING))
		want_tick_wake(w, w->tick_wake | PORT_TICK_WAKE_URING);
	uint32_t v = atomic_load_explicit(&w->seg.hdr->tick_futex, memory_order_acquire);
	if (shm_published_tick(&w->seg) > w->cursor) {
		/* Already there: complete at once. */
		io_uring_prep_nop(sqe);
		return 0;
	}
	sig_prep_futex_wait(sqe, &w->seg.hdr->tick_futex, v);
	return 0;
}

/* The fallback's pollable fd. The root sends on a socket pair it made (it
 * takes no fd from a worker: see fdwake_request in sync/root.c), so this
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
		reap(w);
		uint32_t v = atomic_load_explicit(&w->seg.hdr->tick_futex, memory_order_acquire);
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
			arm(w, v);
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

/* ---- stat -------------------------------------------------------------- */

int shmsync_stat(shmsync_worker *w, shmsync_stats *s)
{
	CHECK_HANDLE(w);
	const struct shm_hdr *h = w->seg.hdr;
	memset(s, 0, sizeof(*s));
	s->tick = shm_published_tick(&w->seg);
	s->cursor = w->cursor;
	s->read_epoch = atomic_load_explicit(&w->port->read_epoch, memory_order_relaxed);
	s->min_epoch = atomic_load_explicit(&h->stat_min_epoch, memory_order_relaxed);
	s->signal = w->signal == SIG_URING ? "uring" : "futex";
	s->uring_ops = w->uring_ops;
	s->bytes_in_use = atomic_load_explicit(&h->stat_bytes_in_use, memory_order_relaxed);
	s->capacity = h->capacity;
	s->tombstones = atomic_load_explicit(&h->stat_tombstones, memory_order_relaxed);
	s->reclaimed = atomic_load_explicit(&h->stat_reclaimed_objects, memory_order_relaxed);
	s->workers = atomic_load_explicit(&h->stat_workers, memory_order_relaxed);
	s->root_signal =
		atomic_load_explicit(&h->stat_signal, memory_order_relaxed) == SIG_FUTEX ? "futex" : "uring";
	s->slot = w->slot;
	s->batches_exported = w->exported;
	s->batches_committed = w->committed;
	s->batches_rejected = w->rejected;
	s->imports = w->imports;
	s->resets = w->resets;
	s->late_wakes = w->late_wakes;
	s->root_timer_found_work = atomic_load_explicit(&h->stat_timer_found_work, memory_order_relaxed);
	return 0;
}

int shmsync_stat_json(shmsync_worker *w, char *buf, size_t len)
{
	shmsync_stats s;
	int rc = shmsync_stat(w, &s);
	if (rc < 0)
		return rc;
	return snprintf(
		buf, len,
		"{\"tick\":%" PRIu64 ",\"cursor\":%" PRIu64 ",\"read_epoch\":%" PRId64
		",\"min_epoch\":%" PRId64 ",\"signal\":\"%s\",\"uring_ops\":%" PRIu64
		",\"bytes_in_use\":%" PRIu64 ",\"capacity\":%" PRIu64 ",\"tombstones\":%" PRIu64
		",\"reclaimed\":%" PRIu64 ",\"slot\":%u,\"batches_exported\":%" PRIu64
		",\"batches_committed\":%" PRIu64 ",\"batches_rejected\":%" PRIu64 ",\"imports\":%" PRIu64
		",\"resets\":%" PRIu64 ",\"late_wakes\":%" PRIu64 ",\"root_timer_found_work\":%" PRIu64 "}",
		s.tick, s.cursor, s.read_epoch == UINT64_MAX ? -1 : (int64_t)s.read_epoch,
		s.min_epoch == UINT64_MAX ? -1 : (int64_t)s.min_epoch, s.signal, s.uring_ops, s.bytes_in_use,
		s.capacity, s.tombstones, s.reclaimed, s.slot, s.batches_exported, s.batches_committed,
		s.batches_rejected, s.imports, s.resets, s.late_wakes, s.root_timer_found_work);
}

int shmsync_workers(shmsync_worker *w, shmsync_worker_info *out, unsigned max)
{
	CHECK_HANDLE(w);
	uint64_t size;
	const struct wtab *t = shm_seg_ext(&w->seg, &size);
	if (!t || size < sizeof(*t) || t->magic != WTAB_MAGIC ||
	    (size - sizeof(*t)) / sizeof(struct wtab_entry) < t->n)
		return -EIO;
	for (int tries = 0; tries < 1000; tries++) {
		uint64_t s1 = atomic_load_explicit(&t->seq, memory_order_acquire);
		if (s1 & 1)
			continue;
		unsigned count = 0;
		for (unsigned i = 0; i < t->n; i++) {
			const struct wtab_entry *e = &t->e[i];
			uint32_t state = atomic_load_explicit(&e->state, memory_order_relaxed);
			if (!state)
				continue;
			if (count < max)
				out[count] = (shmsync_worker_info){
					.slot = i,
					.pid = (pid_t)atomic_load_explicit(&e->pid, memory_order_relaxed),
					.state = (int)state,
					.cursor = atomic_load_explicit(&e->cursor, memory_order_relaxed),
					.epoch = atomic_load_explicit(&e->epoch, memory_order_relaxed),
					.lag = atomic_load_explicit(&e->lag, memory_order_relaxed),
					.pinned_bytes =
						atomic_load_explicit(&e->pinned_bytes, memory_order_relaxed),
				};
			count++;
		}
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&t->seq, memory_order_relaxed) == s1)
			return (int)count;
	}
	return -EAGAIN;
}
