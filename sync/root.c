/* The root: attach, drain export rings fairly, group-commit, publish, ack,
 * wake, reclaim. One loop, on io_uring (futex waits on each port's doorbell,
 * polls on sockets and pidfds, a timer), or on poll(2) with eventfd doorbells
 * where io_uring futex operations are unavailable.
 *
 * The sleep protocol (docs/ARCHITECTURE.md, "Waking the root"): the root arms
 * a wait on every doorbell with the value it last saw, raises root_sleeping
 * in every port, issues a full fence and rescans every ring; only then does
 * it sleep. A worker publishes its ring head, adds one to its doorbell,
 * issues a full fence and reads root_sleeping; if it is raised it wakes the
 * root. Either the root's rescan sees the new head, or the worker sees the
 * flag and its wake finds the armed wait (armed before the flag was raised);
 * and an armed wait whose value already changed completes at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "layout.h"
#include "sync.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

enum { UD_ACCEPT = 1, UD_WAKE, UD_TIMER, UD_DOORBELL, UD_PIDFD, UD_CONN, UD_PENDING, UD_IGNORE };

#define PER_SLOT_ROUND 8
#define RECLAIM_BUDGET 1024
#define RECLAIM_SLICE_NS 500000
#define IDLE_RECLAIM_NS 50000000
#define HELLO_TIMEOUT_NS 2000000000
#define SPIN_NS 20000

static uint64_t ud(unsigned type, unsigned idx, uint32_t gen)
{
	return (uint64_t)type << 56 | (uint64_t)(idx & 0xffffff) << 32 | gen;
}

static void ep_add(shmsync_root *r, int fd, uint64_t data);
static void publish_wtab(shmsync_root *r);
static void ep_del(shmsync_root *r, int fd);

static void setmsg(const shmsync_root_opts *o, const char *msg)
{
	if (o && o->errbuf && o->errbuf_len)
		snprintf(o->errbuf, o->errbuf_len, "%s", msg);
}

static struct io_uring_sqe *get_sqe(shmsync_root *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);
	if (!sqe) {
		io_uring_submit(&r->uring);
		sqe = io_uring_get_sqe(&r->uring);
	}
	if (sqe)
		r->uring_ops++;
	return sqe;
}

/* ---- slots ------------------------------------------------------------- */

static void slot_free(shmsync_root *r, struct slot *s)
{
	if (s->port)
		munmap(s->port, s->port_size);
	int *fds[] = {&s->conn, &s->pidfd, &s->doorbell_fd, &s->fdwake_fd};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (*fds[i] >= 0) {
			ep_del(r, *fds[i]);
			close(*fds[i]);
			*fds[i] = -1;
		}
	s->port = NULL;
	s->used = s->live = s->releasing = s->hostile = false;
	s->futex_armed = s->pid_armed = s->conn_armed = false;
	s->gen++;
}

static void cancel(shmsync_root *r, uint64_t user_data)
{
	struct io_uring_sqe *sqe = get_sqe(r);
	if (!sqe)
		return;
	io_uring_prep_cancel64(sqe, user_data, 0);
	io_uring_sqe_set_data64(sqe, ud(UD_IGNORE, 0, 0));
}

static int drain_and_commit(shmsync_root *r, struct slot *only);
static void reclaim(shmsync_root *r, size_t budget);

/* The worker died or detached: apply its fully published batches, stop
 * counting its positions, cancel what is armed for it, and free the slot
 * once every armed operation has been reaped (they point into its port). */
static void slot_release(shmsync_root *r, struct slot *s)
{
	if (!s->live)
		return;
	/* Every batch whose record was published is applied, however many
	 * groups that takes; a partial record was never published. */
	while (drain_and_commit(r, s) > 0)
		;
	s->live = false;
	s->releasing = true;
	unsigned idx = (unsigned)(s - r->slots);
	for (unsigned j = 0; j < r->nlive; j++)
		if (r->live[j] == idx) {
			r->live[j] = r->live[--r->nlive];
			break;
		}
	if (r->signal == SIG_URING) {
		if (s->futex_armed)
			cancel(r, ud(UD_DOORBELL, idx, s->gen));
		if (s->pid_armed)
			cancel(r, ud(UD_PIDFD, idx, s->gen));
		if (s->conn_armed)
			cancel(r, ud(UD_CONN, idx, s->gen));
		io_uring_submit(&r->uring);
	}
	if (s->inflight == 0)
		slot_free(r, s);
	r->wtab_dirty = true;
	reclaim(r, RECLAIM_BUDGET);
}

/* ---- attach ------------------------------------------------------------ */

static bool uid_allowed(shmsync_root *r, uid_t uid)
{
	for (unsigned i = 0; i < r->n_allow; i++)
		if (r->allow[i] == uid)
			return true;
	return false;
}

static void refuse(int fd, int status, const char *fmt, const char *arg)
{
	struct welcome w = {.magic = WELCOME_MAGIC, .status = status};
	w.layout_version = SHM_LAYOUT_VERSION;
	w.port_version = PORT_VERSION;
	w.wire_version = WIRE_VERSION;
	snprintf(w.msg, sizeof(w.msg), fmt, arg);
	att_send(fd, &w, sizeof(w), NULL, 0);
}

static int make_port(shmsync_root *r, struct slot *s, unsigned idx, int *port_fd)
{
	size_t ring = r->port_ring_bytes;
	size_t acks = PORT_NACKS * sizeof(struct port_ack);
	size_t size = PORT_HDR_SIZE + acks + ring;
	int fd = memfd_create("shmsync-port", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0)
		goto fail;
	struct port_hdr *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (p == MAP_FAILED)
		goto fail;
	madvise(p, size, MADV_DONTFORK);
	/* The worker can neither shrink the port under the root (SIGBUS) nor
	 * grow it, nor change the seals. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		munmap(p, size);
		goto fail;
	}
	uint64_t tick, log_end;
	shm_published_state(r->seg, &tick, &log_end);
	p->magic = PORT_MAGIC;
	p->version = PORT_VERSION;
	p->hdr_size = PORT_HDR_SIZE;
	p->size = size;
	p->acks_off = PORT_HDR_SIZE;
	p->ring_off = PORT_HDR_SIZE + acks;
	p->ring_size = ring;
	p->slot = idx;
	p->gen = s->gen;
	/* Online at the published tick from the first instant: the worker
	 * settles on its snapshot (>= this) with the usual protocol. */
	atomic_store_explicit(&p->cursor, tick, memory_order_relaxed);
	atomic_store_explicit(&p->read_epoch, tick, memory_order_relaxed);
	atomic_store_explicit(&p->ring_head, 0, memory_order_relaxed);
	atomic_store_explicit(&p->ring_tail, 0, memory_order_relaxed);
	atomic_store_explicit(&p->acked_seq, 0, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	s->port = p;
	s->port_size = size;
	s->acks = (struct port_ack *)((uint8_t *)p + p->acks_off);
	s->ring = (uint8_t *)p + p->ring_off;
	/* Our own copy: the worker can rewrite the header's. */
	s->ring_size = ring;
	s->tail = 0;
	s->next_seq = 1;
	s->doorbell_seen = 0;
	s->cursor = s->epoch = tick;
	*port_fd = fd;
	return 0;
fail:;
	int e = -errno;
	close(fd);
	return e;
}

/* A hello arrived on a pending connection: check it, give a slot. */
static void finish_attach(shmsync_root *r, struct pending *pd)
{
	int fd = pd->fd;
	struct hello h;
	ssize_t n = att_recv(fd, &h, sizeof(h), NULL, NULL, MSG_DONTWAIT);
	if (n == -EAGAIN)
		return; /* spurious: wait on */
	pd->fd = -1;
	if (pd->refusal) {
		refuse(fd, pd->refusal, "%s", "the peer has no pidfd (did it exit?)");
		goto drop;
	}
	if (n != (ssize_t)sizeof(h) || h.magic != HELLO_MAGIC) {
		refuse(fd, -EPROTO, "%s", "not a shmsync hello");
		goto drop;
	}
	if (h.layout_version != SHM_LAYOUT_VERSION || h.port_version != PORT_VERSION ||
	    h.wire_version != WIRE_VERSION) {
		char m[160];
		snprintf(m, sizeof(m),
			 "version mismatch: worker has layout %u port %u wire %u, root has layout %u port %u "
			 "wire %u",
			 h.layout_version, h.port_version, h.wire_version, SHM_LAYOUT_VERSION, PORT_VERSION,
			 WIRE_VERSION);
		refuse(fd, -EPROTO, "%s", m);
		goto drop;
	}
	unsigned idx;
	for (idx = 0; idx < r->max_workers; idx++)
		if (!r->slots[idx].used)
			break;
	if (idx == r->max_workers) {
		char m[64];
		snprintf(m, sizeof(m), "%u", r->max_workers);
		refuse(fd, -EUSERS, "the root already has max_workers (%s) workers", m);
		goto drop;
	}
	struct slot *s = &r->slots[idx];
	int port_fd = -1, db = -1;
	int rc = make_port(r, s, idx, &port_fd);
	if (rc == 0 && r->signal == SIG_FUTEX) {
		db = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (db < 0)
			rc = -errno;
	}
	if (rc < 0) {
		refuse(fd, rc, "creating the port failed: %s", strerror(-rc));
		if (s->port)
			munmap(s->port, s->port_size);
		s->port = NULL;
		if (port_fd >= 0)
			close(port_fd);
		goto drop;
	}
	struct welcome w = {
		.magic = WELCOME_MAGIC,
		.layout_version = SHM_LAYOUT_VERSION,
		.port_version = PORT_VERSION,
		.wire_version = WIRE_VERSION,
		.slot = idx,
		.gen = s->gen,
		.signal = (uint32_t)r->signal,
		.max_batch = r->max_batch,
	};
	int fds[3] = {r->ro_fd, port_fd, db};
	rc = att_send(fd, &w, sizeof(w), fds, db >= 0 ? 3 : 2);
	close(port_fd);
	if (rc < 0) {
		munmap(s->port, s->port_size);
		s->port = NULL;
		if (db >= 0)
			close(db);
		goto drop;
	}
	s->used = s->live = true;
	s->releasing = false;
	s->conn = fd;
	s->pidfd = pd->pidfd;
	s->pid = pd->pid;
	s->doorbell_fd = db;
	s->fdwake_fd = -1;
	s->inflight = 0;
	s->epoch_last = UINT64_MAX - 1;
	s->revoked_tick = 0;
	s->pin_warned = s->log_warned = s->kill_sent = false;
	atomic_store_explicit(&r->wtab->e[idx].revoked, 0, memory_order_relaxed);
	r->live[r->nlive++] = idx;
	atomic_store_explicit(&r->seg->hdr->stat_workers, r->nlive, memory_order_relaxed);
	pd->pidfd = -1;
	if (r->epfd >= 0) {
		ep_del(r, fd);
		ep_add(r, fd, ud(UD_CONN, idx, s->gen));
		ep_add(r, s->pidfd, ud(UD_PIDFD, idx, s->gen));
		ep_add(r, db, ud(UD_DOORBELL, idx, s->gen));
	}
	/* At once: a worker that attached finds itself in the table. */
	publish_wtab(r);
	return;
drop:
	close(fd);
	if (pd->pidfd >= 0)
		close(pd->pidfd);
	pd->pidfd = -1;
}

static void drop_pending(shmsync_root *r, unsigned i, const char *why)
{
	struct pending *pd = &r->pend[i];
	if (pd->armed)
		cancel(r, ud(UD_PENDING, i, pd->gen));
	pd->armed = false;
	/* Said before closing: an honest worker that was merely slow learns
	 * the root was busy (and tries again) rather than reading a reset. */
	if (why)
		refuse(pd->fd, -EAGAIN, "%s", why);
	close(pd->fd);
	if (pd->pidfd >= 0)
		close(pd->pidfd);
	pd->fd = pd->pidfd = -1;
}

static void accept_one(shmsync_root *r, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		close(fd);
		return;
	}
	/* A refused uid is answered and closed at once: it never takes a
	 * pending entry, so refused peers cannot crowd out allowed ones. Its
	 * hello (if it came already) is read first: closing with it unread
	 * would reset the connection before the worker reads why. */
	if (!uid_allowed(r, cred.uid)) {
		struct hello h;
		if (att_recv(fd, &h, sizeof(h), NULL, NULL, MSG_DONTWAIT) < 0) {
			/* Not sent yet: the worker reads the answer anyway. */
		}
		char m[32];
		snprintf(m, sizeof(m), "%u", (unsigned)cred.uid);
		refuse(fd, -EACCES, "uid %s is not allowed to attach to this root", m);
		close(fd);
		return;
	}
	int refusal = 0;
	/* The peer's pidfd without a pid-reuse race (kernel 6.5+); else from
	 * the pid the kernel recorded at connect. */
	int pidfd = -1;
	len = sizeof(pidfd);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0)
		pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
	if (pidfd >= 0)
		fcntl(pidfd, F_SETFD, FD_CLOEXEC);
	else
		refusal = -ESRCH;
	/* One process waits with at most PENDING_PER_PID silent connections:
	 * a flood from one process cannot take the entries of others. (A
	 * flood from many processes of an allowed uid can still push out
	 * silent entries; those hear "busy" and their library retries.) */
	unsigned same_pid = 0, oldest_same = MAX_PENDING;
	for (unsigned i = 0; i < MAX_PENDING; i++)
		if (r->pend[i].fd >= 0 && r->pend[i].pid == cred.pid) {
			same_pid++;
			if (oldest_same == MAX_PENDING || r->pend[i].deadline < r->pend[oldest_same].deadline)
				oldest_same = i;
		}
	/* A free entry; else this process's own oldest if it is at its
	 * limit; else the one closest to its deadline: peers that never say
	 * hello cannot lock out those that do. */
	unsigned pick = MAX_PENDING;
	if (same_pid >= PENDING_PER_PID)
		pick = oldest_same;
	for (unsigned i = 0; pick == MAX_PENDING && i < MAX_PENDING; i++)
		if (r->pend[i].fd < 0)
			pick = i;
	if (pick == MAX_PENDING) {
		pick = 0;
		for (unsigned i = 1; i < MAX_PENDING; i++)
			if (r->pend[i].deadline < r->pend[pick].deadline)
				pick = i;
	}
	struct pending *pd = &r->pend[pick];
	if (pd->fd >= 0)
		drop_pending(r, pick, "the root is busy: too many connections are waiting to say hello");
	*pd = (struct pending){fd,    pidfd,       cred.pid, sig_now_ns() + HELLO_TIMEOUT_NS,
			       false, pd->gen + 1, refusal,  cred.uid};
	finish_attach(r, pd);
	if (pd->fd >= 0 && r->epfd >= 0)
		ep_add(r, fd, ud(UD_PENDING, pick, pd->gen));
}

static int accept_all(shmsync_root *r)
{
	int n = 0;
	for (;;) {
		int fd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return n;
		accept_one(r, fd);
		n++;
	}
}

static void expire_pending(shmsync_root *r)
{
	int64_t now = sig_now_ns();
	for (unsigned i = 0; i < MAX_PENDING; i++)
		if (r->pend[i].fd >= 0 && now > r->pend[i].deadline)
			drop_pending(r, i, "no hello within the attach timeout");
}

/* The worker asked for a pollable fd (shmsync_fd on the fallback path).
 * The root never writes to an fd a worker hands it: such an fd could be a
 * pipe that blocks the root or kills it with SIGPIPE, or a socket into
 * another service that would then hear from the root. It makes a socket
 * pair itself, keeps one end and sends the other. Its wakes are sends with
 * MSG_DONTWAIT | MSG_NOSIGNAL: flags of the call, not of the open file,
 * which the worker shares and could change with fcntl. A full queue or a
 * closed end is fine: the worker is readable already, or does not care.
 * Returns false when the worker must be released. */
static bool fdwake_request(shmsync_root *r, struct slot *s)
{
	(void)r;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return false;
	/* Small buffers: one queued message makes the end readable, and a
	 * worker that never drains it costs the root nothing. */
	int small = 4096;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	struct control c = {FDWAKE_MAGIC};
	int rc = att_send(s->conn, &c, sizeof(c), &sv[1], 1);
	close(sv[1]);
	if (rc < 0) {
		close(sv[0]);
		return false;
	}
	if (s->fdwake_fd >= 0)
		close(s->fdwake_fd);
	s->fdwake_fd = sv[0];
	return true;
}

/* A message on an attached worker's connection: bye, a request for a wake
 * fd, or end of file. A worker never sends fds after its hello: a message
 * that carries one is garbage, and the fd is closed unread. */
static void conn_readable(shmsync_root *r, struct slot *s)
{
	for (;;) {
		struct control c;
		int fds[4] = {-1, -1, -1, -1}, nfd = 4;
		ssize_t n = att_recv(s->conn, &c, sizeof(c), fds, &nfd, MSG_DONTWAIT);
		if (n == -EAGAIN)
			return;
		for (int i = 0; i < nfd; i++)
			close(fds[i]);
		if (n == (ssize_t)sizeof(c) && c.magic == FDWAKE_REQ_MAGIC && nfd == 0 &&
		    fdwake_request(r, s))
			continue;
		/* BYE, end of file, an error or garbage: the worker is gone. */
		slot_release(r, s);
		return;
	}
}

/* ---- commits ----------------------------------------------------------- */

static int ack_add(shmsync_root *r, struct slot *s, uint64_t seq, int64_t result)
{
	if (r->nacks == r->acks_cap) {
		size_t cap = r->acks_cap ? r->acks_cap * 2 : 256;
		struct ack_pending *a = realloc(r->acks, cap * sizeof(*a));
		if (!a)
			return -ENOMEM;
		r->acks = a;
		r->acks_cap = cap;
	}
	r->acks[r->nacks++] = (struct ack_pending){(uint32_t)(s - r->slots), s->gen, seq, result};
	return 0;
}

/* Bumps the tick futex word, then wakes whoever may sleep on it. The
 * FUTEX_WAKE call is made only when a worker said it may sleep (its
 * wants_tick_wake, read after the bump and a full fence: see want_tick_wake
 * in sync/worker.c); a busy round trip is not worth a system call. */
static void wake_workers(shmsync_root *r)
{
	atomic_fetch_add_explicit(&r->seg->hdr->tick_futex, 1, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	bool futex_wake = false;
	for (unsigned j = 0; j < r->nlive; j++)
		if (atomic_load_explicit(&r->slots[r->live[j]].port->wants_tick_wake, memory_order_relaxed)) {
			futex_wake = true;
			break;
		}
	if (futex_wake)
		sig_futex_wake(&r->seg->hdr->tick_futex, INT_MAX);
	for (unsigned j = 0; j < r->nlive; j++) {
		struct slot *s = &r->slots[r->live[j]];
		if (s->fdwake_fd >= 0 &&
		    atomic_load_explicit(&s->port->wants_fd_wake, memory_order_relaxed)) {
			char one = 1;
			if (send(s->fdwake_fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
				/* Full queue: the worker is readable already. */
			}
		}
	}
}

/* Publishes the group (if anything was applied), then writes the acks, then
 * wakes: a worker woken for its ack finds it. */
static void finish_group(shmsync_root *r)
{
	uint64_t tick = 0;
	int pub = shm_commit_publish(r->shm, &tick);
	if (pub == 1) {
		r->ticks++;
		uint64_t t, end;
		shm_published_state(r->seg, &t, &end);
		/* What every importer reads next: the published words and this
		 * tick's change-log records (share_lines, sync/wire.h). */
		struct shm_hdr *h = r->seg->hdr;
		share_lines((const void *)&h->tick, sizeof(h->tick));
		share_lines((const void *)&h->pub_seq, 3 * sizeof(uint64_t));
		uint64_t L = h->log_size, from = end - r->shared_log_end > SHARE_LINES_MAX
							 ? end - SHARE_LINES_MAX
							 : r->shared_log_end;
		const uint8_t *log = (const uint8_t *)r->seg->base + h->log_off;
		if (from % L <= end % L)
			share_lines(log + from % L, end - from);
		r->shared_log_end = end;
		r->tle[t % TLE_CAP] = end;
		if (t >= r->tle_base + TLE_CAP)
			r->tle_base = t - TLE_CAP + 1;
	}
	for (size_t i = 0; i < r->nacks; i++) {
		struct ack_pending *a = &r->acks[i];
		struct slot *s = &r->slots[a->slot];
		if (!s->used || s->gen != a->gen)
			continue;
		struct port_ack *pa = &s->acks[a->seq % PORT_NACKS];
		atomic_store_explicit(&pa->result, a->result == 0 ? (int64_t)tick : a->result,
				      memory_order_relaxed);
		atomic_store_explicit(&pa->seq, a->seq, memory_order_relaxed);
		atomic_store_explicit(&s->port->acked_seq, a->seq, memory_order_release);
	}
	if (pub == 1 || r->nacks)
		wake_workers(r);
	r->nacks = 0;
}

/* Applies one batch record; the record is in r->rec (our copy). */
static void apply_record(shmsync_root *r, struct slot *s, size_t len)
{
	size_t nops = 0, failed = 0;
	uint64_t seq = 0, expected = s->next_seq++;
	int rc = wire_decode(r->rec, len, r->ops, WIRE_MAX_OPS, &nops, &seq);
	if (rc == 0 && seq != expected)
		rc = -EPROTO;
	if (rc == 0) {
		rc = shm_apply_batch(r->shm, r->ops, nops, &failed);
		if (rc == -ENOBUFS) {
			/* This tick's share of the log is full: publish it and
			 * apply the batch to the next one. */
			finish_group(r);
			shm_commit_begin(r->shm);
			rc = shm_apply_batch(r->shm, r->ops, nops, &failed);
		}
	}
	r->batches++;
	ack_add(r, s, expected, rc);
}

/* Drains rings round-robin, PER_SLOT_ROUND batches per worker per round, so
 * no worker starves another; at most max_group batches per tick. With
 * `only`, drains that slot alone (it is being released). Returns the number
 * of batches taken. */
static int drain_and_commit(shmsync_root *r, struct slot *only)
{
	if (shm_commit_begin(r->shm) < 0)
		return 0;
	unsigned taken = 0;
	for (bool progress = true; progress && taken < r->max_group;) {
		progress = false;
		for (unsigned i = 0; i < (only ? 1 : r->nlive) && taken < r->max_group; i++) {
			struct slot *s = only ? only : &r->slots[r->live[(r->rr + i) % r->nlive]];
			if (!s->live || s->hostile)
				continue;
			for (unsigned k = 0; k < PER_SLOT_ROUND && taken < r->max_group; k++) {
				size_t len;
				int rc = ring_get(s->port, s->ring, s->ring_size, &s->tail, r->rec,
						  r->rec_cap, &len);
				if (rc == -EAGAIN)
					break;
				if (rc == -EPROTO) {
					/* The framing is garbage: nothing after it can be
					 * trusted. Drop it all and say so in an ack. */
					uint64_t head = atomic_load_explicit(&s->port->ring_head,
									     memory_order_acquire);
					if (head >= s->tail && head - s->tail <= s->ring_size &&
					    head % 8 == 0)
						s->tail = head;
					else
						s->hostile = true; /* no usable head: cut it off */
					ack_add(r, s, s->next_seq++, -EPROTO);
					atomic_store_explicit(&s->port->ring_tail, s->tail,
							      memory_order_release);
					taken++;
					progress = true;
					break;
				}
				apply_record(r, s, len);
				atomic_store_explicit(&s->port->ring_tail, s->tail, memory_order_release);
				taken++;
				progress = true;
			}
			if (only)
				break;
		}
	}
	r->rr++;
	finish_group(r);
	if (!only)
		/* Backwards: a release moves the last entry into its place. */
		for (unsigned j = r->nlive; j-- > 0;)
			if (j < r->nlive && r->slots[r->live[j]].hostile)
				slot_release(r, &r->slots[r->live[j]]);
	return (int)taken;
}

/* ---- positions and reclamation ----------------------------------------- */

#define WTAB_EVERY_NS 50000000

static uint64_t log_pinned(shmsync_root *r, uint64_t cursor, uint64_t tick, uint64_t log_end);

/* Publishes the worker table (positions, lag, what each pins). */
static void publish_wtab(shmsync_root *r)
{
	if (!r->wtab)
		return;
	unsigned n = r->max_workers;
	uint64_t tick, log_end;
	shm_published_state(r->seg, &tick, &log_end);
	for (unsigned i = 0; i < n; i++)
		r->epochs[i] = r->slots[i].live ? r->slots[i].epoch : UINT64_MAX;
	shm_retired_bytes_after(r->shm, r->epochs, r->pinned, n);
	uint64_t quarter = r->seg->hdr->log_size / 4;
	struct wtab *t = r->wtab;
	uint64_t seq = atomic_load_explicit(&t->seq, memory_order_relaxed);
	atomic_store_explicit(&t->seq, seq + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	for (unsigned i = 0; i < n; i++) {
		struct slot *s = &r->slots[i];
		struct wtab_entry *e = &t->e[i];
		if (!s->live) {
			atomic_store_explicit(&e->state, 0, memory_order_relaxed);
			continue;
		}
		uint64_t log_kept = log_pinned(r, s->cursor, tick, log_end);
		uint32_t state = s->epoch == PORT_OFFLINE ? SHMSYNC_WORKER_OFFLINE : SHMSYNC_WORKER_LIVE;
		if (log_kept > quarter || s->log_warned)
			state = SHMSYNC_WORKER_LAGGING;
		if (s->revoked_tick)
			state = SHMSYNC_WORKER_REVOKED;
		atomic_store_explicit(&e->state, state, memory_order_relaxed);
		atomic_store_explicit(&e->pid, s->pid, memory_order_relaxed);
		atomic_store_explicit(&e->cursor, s->cursor, memory_order_relaxed);
		atomic_store_explicit(&e->epoch, s->epoch, memory_order_relaxed);
		atomic_store_explicit(&e->lag, tick > s->cursor ? tick - s->cursor : 0, memory_order_relaxed);
		atomic_store_explicit(&e->pinned_bytes, (s->revoked_tick ? 0 : r->pinned[i]) + log_kept,
				      memory_order_relaxed);
	}
	atomic_store_explicit(&t->seq, seq + 2, memory_order_release);
	r->last_wtab = sig_now_ns();
}

static void warn(shmsync_root *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(shmsync_root *r, const char *fmt, ...)
{
	char m[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	if (r->warn)
		r->warn(m, r->warn_arg);
	else
		fprintf(stderr, "shmsync root: %s\n", m);
}

/* Change-log bytes a cursor keeps: from the end of its tick to the end. */
static uint64_t log_pinned(shmsync_root *r, uint64_t cursor, uint64_t tick, uint64_t log_end)
{
	uint64_t tail = atomic_load_explicit(&r->seg->hdr->log_tail, memory_order_relaxed);
	uint64_t from = tail;
	if (cursor >= r->tle_base && cursor < r->tle_base + TLE_CAP && cursor <= tick)
		from = r->tle[cursor % TLE_CAP];
	return log_end > from && from >= tail ? log_end - from : 0;
}

/* The stall policies. A read epoch held online past max_read_pin_ns: wait
 * (warn once, naming the worker), kill (SIGKILL through its pidfd), or
 * revoke (its epoch stops counting; its reads report ESTALE until it
 * imports again). A cursor that keeps more than max_retained_log_bytes of
 * the log stops counting too: the log moves on and the worker gets a reset.
 * Returns the epoch and cursor the minimum may count. */
static void apply_policies(shmsync_root *r, unsigned idx, uint64_t tick, uint64_t log_end, int64_t now,
			   uint64_t pinned, uint64_t *e, uint64_t *c)
{
	struct slot *s = &r->slots[idx];
	if (*e != s->epoch_last) {
		s->epoch_last = *e;
		s->epoch_since = now;
		s->pin_warned = false;
	}
	if (s->revoked_tick) {
		/* Back once it announced a snapshot at or after the revocation:
		 * it read the revocation first (sync/worker.c, import_to). */
		if (*e != PORT_OFFLINE && *e >= s->revoked_tick) {
			s->revoked_tick = 0;
			r->wtab_dirty = true;
		} else {
			*e = PORT_OFFLINE;
		}
	} else if (*e != PORT_OFFLINE && *e < tick &&
		   ((r->max_pin_ns > 0 && now - s->epoch_since > r->max_pin_ns) ||
		    (r->max_pin_bytes > 0 && pinned > r->max_pin_bytes))) {
		static const char *names[] = {"wait", "kill", "revoke"};
		if (!s->pin_warned)
			warn(r,
			     "worker slot %u pid %d has held snapshot %llu for %lld ms (tick %llu), keeping "
			     "%llu retired bytes; policy %s",
			     idx, (int)s->pid, (unsigned long long)*e,
			     (long long)((now - s->epoch_since) / 1000000), (unsigned long long)tick,
			     (unsigned long long)pinned, names[r->policy]);
		s->pin_warned = true;
		if (r->policy == SHMSYNC_STALL_KILL && !s->kill_sent) {
			if (syscall(SYS_pidfd_send_signal, s->pidfd, SIGKILL, NULL, 0) == 0)
				s->kill_sent = true;
		} else if (r->policy == SHMSYNC_STALL_REVOKE) {
			/* The flag first, then (after the fence in reclaim's caller
			 * order) anything its exclusion lets us free: a reader that
			 * saw freed memory then sees the flag. */
			s->revoked_tick = tick;
			atomic_fetch_add_explicit(&r->wtab->e[idx].revoked, 1, memory_order_seq_cst);
			r->wtab_dirty = true;
			*e = PORT_OFFLINE;
		}
	}
	if (r->max_retained_log > 0 && *c != PORT_OFFLINE) {
		uint64_t kept = log_pinned(r, *c, tick, log_end);
		if (kept > r->max_retained_log) {
			if (!s->log_warned)
				warn(r,
				     "worker slot %u pid %d keeps %llu bytes of change log (cursor %llu, "
				     "tick %llu): "
				     "its cursor no longer holds the log; it will get a reset",
				     idx, (int)s->pid, (unsigned long long)kept, (unsigned long long)*c,
				     (unsigned long long)tick);
			s->log_warned = true;
			*c = PORT_OFFLINE;
		} else {
			s->log_warned = false;
		}
	}
}

static void reclaim_step(shmsync_root *r, size_t budget)
{
	uint64_t tick, log_end;
	shm_published_state(r->seg, &tick, &log_end);
	tick = shm_root_tick(r->shm);
	uint64_t min_e = UINT64_MAX, min_c = UINT64_MAX;
	int64_t now = sig_now_ns();
	/* Pairs with the worker's fence between announcing its epoch and
	 * re-reading the tick (sync/worker.c, go_online). */
	atomic_thread_fence(memory_order_seq_cst);
	for (unsigned j = 0; j < r->nlive; j++) {
		struct slot *s = &r->slots[r->live[j]];
		uint64_t e = atomic_load_explicit(&s->port->read_epoch, memory_order_acquire);
		uint64_t c = atomic_load_explicit(&s->port->cursor, memory_order_acquire);
		/* A position from the future is a lie that only hurts its
		 * teller; clamp it so the arithmetic stays sane. */
		if (e != PORT_OFFLINE && e > tick)
			e = tick;
		if (c > tick)
			c = tick;
		s->epoch = e;
		s->cursor = c;
		r->live_epochs[j] = e == PORT_OFFLINE ? UINT64_MAX : e;
	}
	if (r->max_pin_bytes > 0)
		shm_retired_bytes_after(r->shm, r->live_epochs, r->live_pinned, r->nlive);
	for (unsigned j = 0; j < r->nlive; j++) {
		unsigned i = r->live[j];
		struct slot *s = &r->slots[i];
		uint64_t e = s->epoch, c = s->cursor;
		apply_policies(r, i, tick, log_end, now, r->max_pin_bytes > 0 ? r->live_pinned[j] : 0, &e,
			       &c);
		if (e < min_e)
			min_e = e;
		if (c < min_c)
			min_c = c;
	}
	/* A revocation's flag is visible before anything it lets us free. */
	atomic_thread_fence(memory_order_seq_cst);
	r->min_epoch = min_e;
	r->min_cursor = min_c;
	struct shm_hdr *h = r->seg->hdr;
	atomic_store_explicit(&h->stat_min_epoch, min_e, memory_order_relaxed);
	atomic_store_explicit(&h->stat_workers, r->nlive, memory_order_relaxed);
	atomic_store_explicit(&h->stat_signal, (uint32_t)r->signal, memory_order_relaxed);
	struct shm_reclaim_report rep;
	if (shm_reclaim(r->shm, min_e, min_c, budget, &rep) == 0)
		r->reclaim_more = rep.more;
	r->last_idle_reclaim = now;
	if (r->wtab_dirty || r->last_idle_reclaim - r->last_wtab > WTAB_EVERY_NS) {
		r->wtab_dirty = false;
		publish_wtab(r);
	}
}

/* Steps of `budget` objects, each after a fresh scan of the positions (the
 * contract of shm_reclaim), until done or RECLAIM_SLICE_NS has passed: a
 * step stays well under a millisecond, and a busy root still frees as fast
 * as group commits retire. */
static void reclaim(shmsync_root *r, size_t budget)
{
	int64_t until = sig_now_ns() + RECLAIM_SLICE_NS;
	do
		reclaim_step(r, budget);
	while (r->reclaim_more && budget && sig_now_ns() < until);
}

static bool rings_pending(shmsync_root *r)
{
	for (unsigned j = 0; j < r->nlive; j++) {
		struct slot *s = &r->slots[r->live[j]];
		if (atomic_load_explicit(&s->port->ring_head, memory_order_acquire) != s->tail)
			return true;
	}
	return false;
}

/* ---- events ------------------------------------------------------------ */

/* The idle timer fired and a ring has work: its doorbell wake was lost, or
 * is still on its way. */
static void count_late_wake(shmsync_root *r)
{
	if (rings_pending(r))
		atomic_fetch_add_explicit(&r->seg->hdr->stat_timer_found_work, 1, memory_order_relaxed);
}

static struct slot *slot_of(shmsync_root *r, uint64_t data)
{
	unsigned idx = (unsigned)(data >> 32) & 0xffffff;
	if (idx >= r->max_workers)
		return NULL;
	struct slot *s = &r->slots[idx];
	return s->used && s->gen == (uint32_t)data ? s : NULL;
}

static void op_done(shmsync_root *r, struct slot *s)
{
	if (s->inflight)
		s->inflight--;
	if (s->releasing && s->inflight == 0)
		slot_free(r, s);
}

static int handle_cqe(shmsync_root *r, struct io_uring_cqe *cqe)
{
	uint64_t data = io_uring_cqe_get_data64(cqe);
	unsigned type = (unsigned)(data >> 56);
	struct slot *s;
	switch (type) {
	case UD_ACCEPT:
		r->accept_armed = false;
		return accept_all(r);
	case UD_WAKE: {
		r->wake_armed = false;
		uint64_t v;
		if (read(r->wake_fd, &v, sizeof(v)) < 0) {
			/* Nothing to read: a spurious poll completion. */
		}
		return 1;
	}
	case UD_TIMER:
		r->timer_armed = false;
		count_late_wake(r);
		expire_pending(r);
		reclaim(r, RECLAIM_BUDGET);
		return 1;
	case UD_DOORBELL:
		if ((s = slot_of(r, data))) {
			s->futex_armed = false;
			op_done(r, s);
		}
		return 1;
	case UD_PIDFD:
		if ((s = slot_of(r, data))) {
			s->pid_armed = false;
			op_done(r, s);
			if (cqe->res >= 0)
				slot_release(r, s);
		}
		return 1;
	case UD_CONN:
		if ((s = slot_of(r, data))) {
			s->conn_armed = false;
			op_done(r, s);
			if (s->live && cqe->res >= 0)
				conn_readable(r, s);
		}
		return 1;
	case UD_PENDING: {
		unsigned i = (unsigned)(data >> 32) & 0xffffff;
		if (i < MAX_PENDING && r->pend[i].gen == (uint32_t)data && r->pend[i].fd >= 0) {
			r->pend[i].armed = false;
			if (cqe->res >= 0)
				finish_attach(r, &r->pend[i]);
		}
		return 1;
	}
	default:
		return 0;
	}
}

static int reap(shmsync_root *r, unsigned max_events)
{
	int n = 0;
	struct io_uring_cqe *cqe;
	unsigned head, count = 0;
	io_uring_for_each_cqe(&r->uring, head, cqe)
	{
		if (max_events && count >= max_events)
			break;
		n += handle_cqe(r, cqe);
		count++;
	}
	io_uring_cq_advance(&r->uring, count);
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

/* Arms everything the root waits for (io_uring path). */
static void arm_all(shmsync_root *r, bool want_timer)
{
	if (!r->accept_armed) {
		prep_poll(r, r->listen_fd, POLLIN, ud(UD_ACCEPT, 0, 0));
		r->accept_armed = true;
	}
	if (!r->wake_armed) {
		prep_poll(r, r->wake_fd, POLLIN, ud(UD_WAKE, 0, 0));
		r->wake_armed = true;
	}
	if (want_timer && !r->timer_armed) {
		struct io_uring_sqe *sqe = get_sqe(r);
		if (sqe) {
			r->timer_ts.tv_sec = 0;
			r->timer_ts.tv_nsec = IDLE_RECLAIM_NS;
			io_uring_prep_timeout(sqe, &r->timer_ts, 0, 0);
			io_uring_sqe_set_data64(sqe, ud(UD_TIMER, 0, 0));
			r->timer_armed = true;
		}
	}
	for (unsigned i = 0; i < MAX_PENDING; i++) {
		struct pending *pd = &r->pend[i];
		if (pd->fd >= 0 && !pd->armed) {
			prep_poll(r, pd->fd, POLLIN | POLLRDHUP, ud(UD_PENDING, i, pd->gen));
			pd->armed = true;
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
				io_uring_sqe_set_data64(sqe, ud(UD_DOORBELL, i, s->gen));
				s->futex_armed = true;
				s->inflight++;
			}
		}
		if (!s->pid_armed) {
			prep_poll(r, s->pidfd, POLLIN, ud(UD_PIDFD, i, s->gen));
			s->pid_armed = true;
			s->inflight++;
		}
		if (!s->conn_armed) {
			prep_poll(r, s->conn, POLLIN | POLLRDHUP, ud(UD_CONN, i, s->gen));
			s->conn_armed = true;
			s->inflight++;
		}
	}
	io_uring_submit(&r->uring);
}

/* Lowering flags that are already down is skipped: a busy root would
 * otherwise write every port's header on every turn. */
static void set_sleeping(shmsync_root *r, uint32_t v)
{
	if (!v && !r->sleeping_flags)
		return;
	for (unsigned j = 0; j < r->nlive; j++)
		atomic_store_explicit(&r->slots[r->live[j]].port->root_sleeping, v, memory_order_relaxed);
	r->sleeping_flags = v != 0;
}

/* The futex path waits in epoll: the listening socket, the stop eventfd,
 * pending connections, and each worker's connection, pidfd and eventfd
 * doorbell. The event data is the same tag as an io_uring user_data. */
static void ep_add(shmsync_root *r, int fd, uint64_t data)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = data};
	epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void ep_del(shmsync_root *r, int fd)
{
	/* Explicitly: a worker holds a copy of the doorbell eventfd, so closing
	 * ours would not drop the registration. */
	if (r->epfd >= 0 && fd >= 0)
		epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, NULL);
}

static int poll_once(shmsync_root *r, int timeout_ms)
{
	struct epoll_event evs[64];
	int n = epoll_wait(r->epfd, evs, 64, timeout_ms);
	int events = 0;
	for (int k = 0; k < n; k++) {
		uint64_t data = evs[k].data.u64;
		unsigned type = (unsigned)(data >> 56);
		unsigned idx = (unsigned)(data >> 32) & 0xffffff;
		struct slot *s = type >= UD_DOORBELL && type <= UD_CONN ? slot_of(r, data) : NULL;
		uint64_t v;
		events++;
		switch (type) {
		case UD_ACCEPT:
			accept_all(r);
			break;
		case UD_WAKE:
			if (read(r->wake_fd, &v, sizeof(v)) < 0) {
				/* Already drained. */
			}
			break;
		case UD_TIMER:
			if (read(r->timer_fd, &v, sizeof(v)) < 0) {
				/* Already drained. */
			}
			count_late_wake(r);
			expire_pending(r);
			reclaim(r, RECLAIM_BUDGET);
			break;
		case UD_PENDING:
			if (idx < MAX_PENDING && r->pend[idx].gen == (uint32_t)data && r->pend[idx].fd >= 0)
				finish_attach(r, &r->pend[idx]);
			break;
		case UD_DOORBELL:
			if (s && s->live && read(s->doorbell_fd, &v, sizeof(v)) < 0) {
				/* Already drained. */
			}
			break;
		case UD_PIDFD:
			if (s)
				slot_release(r, s);
			break;
		case UD_CONN:
			if (s && s->live)
				conn_readable(r, s);
			break;
		}
	}
	return events;
}

/* ---- the public face --------------------------------------------------- */

#define EPOLL_BUSY_NS 50000

static bool something_retired(shmsync_root *r)
{
	struct shm_stats st;
	shm_root_stats(r->shm, &st);
	return st.retired_objects > 0 || st.log_bytes_used > 0;
}

static bool has_pending(shmsync_root *r)
{
	for (unsigned i = 0; i < MAX_PENDING; i++)
		if (r->pend[i].fd >= 0)
			return true;
	return false;
}

int shmsync_root_process(shmsync_root *r, unsigned max_events)
{
	/* Awake: workers need not ring the doorbell until we sleep again. */
	bool slept = r->sleeping_flags;
	set_sleeping(r, 0);
	int events = 0;
	if (r->signal == SIG_URING) {
		events = reap(r, max_events);
	} else {
		/* On the futex path events (attaches, byes, deaths, the timer)
		 * come through epoll_wait, a system call: a busy root that did
		 * not sleep looks at most every EPOLL_BUSY_NS, instead of once
		 * per commit. */
		int64_t now = sig_now_ns();
		if (slept || now - r->last_epoll >= EPOLL_BUSY_NS) {
			r->last_epoll = now;
			events = poll_once(r, 0);
		}
	}
	int taken = 0;
	if (r->nlive)
		taken = drain_and_commit(r, NULL);
	int64_t now = sig_now_ns();
	bool idle_due = now - r->last_idle_reclaim > IDLE_RECLAIM_NS;
	/* On its own clock: a busy root reclaims after every commit, and
	 * must still drop peers that never said hello. */
	if (now - r->last_expire > IDLE_RECLAIM_NS) {
		r->last_expire = now;
		expire_pending(r);
	}
	if (taken || r->reclaim_more || idle_due)
		reclaim(r, RECLAIM_BUDGET);
	return events + taken + (r->reclaim_more ? 1 : 0);
}

/* The first half of the sleep protocol: arm every wait, raise the sleeping
 * flags, full fence, rescan. False if there is work after all (the flags
 * are then lowered again). */
static bool prepare_sleep(shmsync_root *r, bool *want_timer)
{
	*want_timer = something_retired(r) || has_pending(r);
	if (r->signal == SIG_URING) {
		arm_all(r, *want_timer);
	} else if (*want_timer) {
		struct itimerspec its = {.it_value = {0, IDLE_RECLAIM_NS}};
		timerfd_settime(r->timer_fd, 0, &its, NULL);
	}
	set_sleeping(r, 1);
	atomic_thread_fence(memory_order_seq_cst);
	if (rings_pending(r) || r->stop || r->reclaim_more) {
		set_sleeping(r, 0);
		return false;
	}
	return true;
}

static void sleep_once(shmsync_root *r)
{
	/* Spin briefly first: a wake that reaches a sleeper costs tens of
	 * microseconds on both sides. */
	int64_t end = sig_now_ns() + SPIN_NS;
	for (unsigned turn = 1; turn % 16 || sig_now_ns() < end; turn++)
		if (rings_pending(r))
			return;
	bool want_timer;
	if (!prepare_sleep(r, &want_timer))
		return;
	if (r->signal == SIG_URING) {
		struct io_uring_cqe *cqe;
		io_uring_wait_cqe(&r->uring, &cqe);
	} else {
		(void)want_timer; /* the timerfd wakes the epoll wait */
		poll_once(r, -1);
	}
	set_sleeping(r, 0);
}

int shmsync_root_run(shmsync_root *r)
{
	while (!r->stop) {
		int n = shmsync_root_process(r, 0);
		if (n < 0)
			return n;
		if (n == 0 && !r->stop)
			sleep_once(r);
	}
	r->stop = 0;
	return 0;
}

int shmsync_root_fd(shmsync_root *r)
{
	bool want_timer;
	if (!prepare_sleep(r, &want_timer)) {
		/* Work is waiting: make the fd readable now. */
		uint64_t one = 1;
		if (write(r->wake_fd, &one, sizeof(one)) < 0) {
			/* Already readable. */
		}
	}
	return r->signal == SIG_URING ? r->uring.ring_fd : r->epfd;
}

void shmsync_root_stop(shmsync_root *r)
{
	r->stop = 1;
	uint64_t one = 1;
	if (write(r->wake_fd, &one, sizeof(one)) < 0) {
		/* The counter is full: the loop is awake anyway. */
	}
}

uint64_t shmsync_root_tick(const shmsync_root *r)
{
	return shm_root_tick(r->shm);
}

void shmsync_root_close(shmsync_root *r)
{
	if (!r)
		return;
	if (r->listen_fd >= 0) {
		/* Remove the path only if it is still our socket. */
		struct stat st;
		if (r->path && stat(r->path, &st) == 0 && st.st_dev == r->sock_dev &&
		    st.st_ino == r->sock_ino)
			unlink(r->path);
		close(r->listen_fd);
	}
	if (r->uring_ok)
		io_uring_queue_exit(&r->uring);
	for (unsigned i = 0; r->slots && i < r->max_workers; i++) {
		struct slot *s = &r->slots[i];
		if (s->used) {
			s->inflight = 0;
			slot_free(r, s);
		}
	}
	for (unsigned i = 0; i < MAX_PENDING; i++)
		if (r->pend[i].fd >= 0) {
			close(r->pend[i].fd);
			close(r->pend[i].pidfd);
		}
	if (r->wake_fd >= 0)
		close(r->wake_fd);
	if (r->epfd >= 0)
		close(r->epfd);
	if (r->timer_fd >= 0)
		close(r->timer_fd);
	if (r->ro_fd >= 0)
		close(r->ro_fd);
	shm_root_destroy(r->shm);
	free(r->slots);
	free(r->live);
	free(r->live_epochs);
	free(r->live_pinned);
	free(r->epochs);
	free(r->pinned);
	free(r->tle);
	free(r->allow);
	free(r->path);
	free(r->rec);
	free(r->ops);
	free(r->acks);
	free(r);
}

int shmsync_root_open(shmsync_root **out, const shmsync_root_opts *o)
{
	char msg[256] = "";
	int rc0;
	shmsync_root_opts d = {0};
	if (!o)
		o = &d;
	if (!o->socket_path) {
		setmsg(o, "socket_path is required");
		return -EINVAL;
	}
	size_t ring = o->port_ring_bytes ? o->port_ring_bytes : (size_t)256 << 10;
	if (ring < 4096 || ring > ((size_t)1 << 30) || (ring & (ring - 1))) {
		setmsg(o, "port_ring_bytes must be a power of two in [4 KiB, 1 GiB]");
		return -EINVAL;
	}
	unsigned maxw = o->max_workers ? o->max_workers : 256;
	if (maxw > 4096) {
		setmsg(o, "max_workers must be at most 4096");
		return -EINVAL;
	}
	/* Not dumpable: otherwise any process of our uid could write the
	 * segment through /proc/<pid>/mem (past every seal), ptrace us, or
	 * read the state from a core file. Process-wide, and the header says
	 * what it changes for debugging. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
		rc0 = -errno;
		setmsg(o, "prctl(PR_SET_DUMPABLE, 0) failed");
		return rc0;
	}
	shmsync_root *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->listen_fd = r->wake_fd = r->ro_fd = r->epfd = r->timer_fd = -1;
	for (unsigned i = 0; i < MAX_PENDING; i++)
		r->pend[i].fd = r->pend[i].pidfd = -1;
	int rc = sig_choose(&r->signal, msg, sizeof(msg));
	if (rc < 0)
		goto fail;
	struct shm_root_opts so = {
		.capacity = o->capacity, .log_bytes = o->log_bytes, .poison = o->debug_poison != 0};
	struct shm_err err = {{0}};
	rc = shm_root_create(&r->shm, &so, &err);
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "%s", err.msg);
		goto fail;
	}
	r->seg = shm_root_seg(r->shm);
	rc = shm_seg_reader_fd(r->seg, &err);
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "%s", err.msg);
		goto fail;
	}
	r->ro_fd = rc;
	void *area;
	rc = shm_root_ext(r->shm, sizeof(struct wtab) + maxw * sizeof(struct wtab_entry), &area);
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "reserving the worker table failed: %s", strerror(-rc));
		goto fail;
	}
	r->wtab = area;
	r->wtab->magic = WTAB_MAGIC;
	r->wtab->n = maxw;
	r->max_workers = maxw;
	r->port_ring_bytes = ring;
	r->max_group = o->max_group ? o->max_group : 256;
	if (o->stall_policy < SHMSYNC_STALL_WAIT || o->stall_policy > SHMSYNC_STALL_REVOKE ||
	    o->max_read_pin_ns < 0) {
		rc = -EINVAL;
		snprintf(msg, sizeof(msg),
			 "stall_policy must be SHMSYNC_STALL_WAIT, _KILL or _REVOKE, max_read_pin_ns >= 0");
		goto fail;
	}
	r->policy = o->stall_policy;
	r->max_pin_ns = o->max_read_pin_ns;
	r->max_pin_bytes = o->max_read_pin_bytes;
	r->max_retained_log = o->max_retained_log_bytes;
	r->warn = o->warn;
	r->warn_arg = o->warn_arg;
	size_t log_half = shm_root_max_batch_log_bytes(r->shm);
	/* A batch is at most half the smaller of the export ring and the log. */
	r->max_batch = ring / 2 < log_half ? ring / 2 : log_half;
	r->slots = calloc(maxw, sizeof(*r->slots));
	r->live = calloc(maxw, sizeof(*r->live));
	r->live_epochs = calloc(maxw, sizeof(*r->live_epochs));
	r->live_pinned = calloc(maxw, sizeof(*r->live_pinned));
	r->epochs = calloc(maxw, sizeof(*r->epochs));
	r->pinned = calloc(maxw, sizeof(*r->pinned));
	r->tle = calloc(TLE_CAP, sizeof(*r->tle));
	r->rec_cap = ring / 2;
	r->rec = malloc(r->rec_cap);
	r->ops = malloc(WIRE_MAX_OPS * sizeof(*r->ops));
	unsigned nallow = o->n_allow_uids ? o->n_allow_uids : 1;
	r->allow = malloc(nallow * sizeof(uid_t));
	r->path = strdup(o->socket_path);
	if (!r->slots || !r->live || !r->live_epochs || !r->live_pinned || !r->rec || !r->ops || !r->allow ||
	    !r->path || !r->epochs || !r->pinned || !r->tle) {
		rc = -ENOMEM;
		goto fail;
	}
	if (o->n_allow_uids)
		memcpy(r->allow, o->allow_uids, nallow * sizeof(uid_t));
	else
		r->allow[0] = geteuid();
	r->n_allow = nallow;
	for (unsigned i = 0; i < maxw; i++) {
		struct slot *s = &r->slots[i];
		s->conn = s->pidfd = s->doorbell_fd = s->fdwake_fd = -1;
	}
	r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->wake_fd < 0) {
		rc = -errno;
		snprintf(msg, sizeof(msg), "eventfd: %s", strerror(errno));
		goto fail;
	}
	if (r->signal == SIG_FUTEX) {
		r->epfd = epoll_create1(EPOLL_CLOEXEC);
		r->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (r->epfd < 0 || r->timer_fd < 0) {
			rc = -errno;
			snprintf(msg, sizeof(msg), "epoll/timerfd: %s", strerror(errno));
			goto fail;
		}
		ep_add(r, r->wake_fd, ud(UD_WAKE, 0, 0));
		ep_add(r, r->timer_fd, ud(UD_TIMER, 0, 0));
	}
	if (r->signal == SIG_URING) {
		/* Three operations per worker at most, plus the root's own. */
		unsigned entries = 64;
		while (entries < 3 * maxw + 16)
			entries *= 2;
		rc = io_uring_queue_init(entries, &r->uring, 0);
		if (rc < 0) {
			snprintf(msg, sizeof(msg), "io_uring_queue_init: %s", strerror(-rc));
			goto fail;
		}
		r->uring_ok = true;
	}
	rc = att_listen(o->socket_path, msg, sizeof(msg));
	if (rc < 0)
		goto fail;
	r->listen_fd = rc;
	if (r->epfd >= 0)
		ep_add(r, r->listen_fd, ud(UD_ACCEPT, 0, 0));
	struct stat st;
	if (stat(o->socket_path, &st) == 0) {
		r->sock_dev = st.st_dev;
		r->sock_ino = st.st_ino;
	}
	/* The socket is made 0600. When the allow list names another uid,
	 * that uid must be able to connect: the mode opens to everyone and
	 * the uid check at accept refuses whoever is not on the list (the
	 * directory's own permissions can narrow who reaches the path). */
	bool others = false;
	for (unsigned i = 0; i < r->n_allow; i++)
		others |= r->allow[i] != geteuid();
	if (others && chmod(o->socket_path, 0666) < 0) {
		rc = -errno;
		snprintf(msg, sizeof(msg), "chmod 0666 %s for the allowed uids failed: %s", o->socket_path,
			 strerror(errno));
		goto fail;
	}
	r->last_idle_reclaim = sig_now_ns();
	*out = r;
	return 0;
fail:
	setmsg(o, msg[0] ? msg : shmsync_strerror(rc));
	if (r->listen_fd >= 0)
		close(r->listen_fd);
	r->listen_fd = -1;
	shmsync_root_close(r);
	return rc;
}
