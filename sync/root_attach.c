/* The root's side of attach and release: accepting connections, the
 * pending ones that have not said hello yet, the handshake (sync/attach.h),
 * making each worker's port, the connection's control messages, and the
 * release of a slot when its worker detaches, dies or misbehaves. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#include "numa.h"
#include "root.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

#define HELLO_TIMEOUT_NS 2000000000 /* a connection must say hello within this */
#define ACCEPTS_PER_TURN 64         /* connections accepted per turn of the loop */

void root_slot_free(shmsync_root *r, struct slot *s)
{
	if (s->port)
		munmap(s->port, s->port_size);
	r->be->forget_slot(r, s);
	int *fds[] = {&s->conn, &s->pidfd, &s->doorbell_fd, &s->fdwake_fd};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (*fds[i] >= 0) {
			close(*fds[i]);
			*fds[i] = -1;
		}
	s->port = NULL;
	s->used = s->live = s->releasing = s->hostile = false;
	s->futex_armed = s->pid_armed = s->conn_armed = false;
	s->gen++;
}

/* The worker died or detached: apply its fully published batches, stop
 * counting its positions, cancel what is armed for it, and free the slot
 * once every armed operation has been reaped (they point into its port). */
void root_slot_release(shmsync_root *r, struct slot *s)
{
	if (!s->live)
		return;
	/* Every batch whose record was published is applied, however many
	 * groups that takes; a partial record was never published. */
	while (root_drain_and_commit(r, s) > 0)
		;
	s->live = false;
	s->releasing = true;
	unsigned idx = (unsigned)(s - r->slots);
	for (unsigned j = 0; j < r->nlive; j++)
		if (r->live[j] == idx) {
			r->live[j] = r->live[--r->nlive];
			break;
		}
	r->be->unwatch_slot(r, idx);
	if (s->inflight == 0)
		root_slot_free(r, s);
	r->wtab_dirty = true;
	root_reclaim(r, RECLAIM_BUDGET);
}

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

static void root_notice(shmsync_root *r, const char *msg)
{
	if (r->warn)
		r->warn(msg, r->warn_arg);
	else
		fprintf(stderr, "shmsync root: %s\n", msg);
}

/* The port's pages go on the node the worker runs on (the supervisor
 * placed it there), before they are populated. Placement is a matter of
 * speed: a failure is a warning, never a refused attach. */
static void place_port(shmsync_root *r, void *p, size_t size, pid_t pid)
{
	if (r->numa_policy == SHMSYNC_NUMA_NONE)
		return;
	int node = shm_numa_pid_node(pid);
	if (node < 0)
		return; /* not placed on one node: first touch decides */
	char m[200] = "";
	int rc = shm_numa_apply(p, size, SHM_NUMA_PREFERRED, node, m, sizeof(m));
	if (rc == SHM_NUMA_SKIPPED && !r->numa_notified) {
		r->numa_notified = true;
		root_notice(r, m);
	} else if (rc < 0) {
		root_notice(r, m);
	}
}

static int make_port(shmsync_root *r, struct slot *s, unsigned idx, pid_t pid, int *port_fd)
{
	size_t ring = r->port_ring_bytes;
	size_t acks = PORT_NACKS * sizeof(struct port_ack);
	size_t size = PORT_HDR_SIZE + acks + ring;
	int fd = memfd_create("shmsync-port", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0)
		goto fail;
	struct port_hdr *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		goto fail;
	place_port(r, p, size, pid);
	if (madvise(p, size, MADV_POPULATE_WRITE) < 0) {
		munmap(p, size);
		goto fail;
	}
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

/* The hello's framing and versions (and a refusal decided at accept):
 * false once the worker has been told why not. */
static bool hello_ok(int fd, const struct pending *pd, const struct hello *h, ssize_t n)
{
	if (pd->refusal) {
		refuse(fd, pd->refusal, "%s", "the peer has no pidfd (did it exit?)");
		return false;
	}
	if (n != (ssize_t)sizeof(*h) || h->magic != HELLO_MAGIC) {
		refuse(fd, -EPROTO, "%s", "not a shmsync hello");
		return false;
	}
	if (h->layout_version != SHM_LAYOUT_VERSION || h->port_version != PORT_VERSION ||
	    h->wire_version != WIRE_VERSION) {
		char m[160];
		snprintf(m, sizeof(m),
			 "version mismatch: worker has layout %u port %u wire %u, root has layout %u port %u "
			 "wire %u",
			 h->layout_version, h->port_version, h->wire_version, SHM_LAYOUT_VERSION,
			 PORT_VERSION, WIRE_VERSION);
		refuse(fd, -EPROTO, "%s", m);
		return false;
	}
	return true;
}

/* Makes slot idx's port (and the doorbell fd the backend hands out) and
 * sends the welcome with their fds. 0 and *doorbell; or < 0 with the port
 * undone (the worker was told why when it could be). */
static int send_welcome(shmsync_root *r, unsigned idx, int fd, pid_t pid, int *doorbell)
{
	struct slot *s = &r->slots[idx];
	int port_fd = -1, db = -1;
	int rc = make_port(r, s, idx, pid, &port_fd);
	if (rc == 0)
		rc = r->be->make_doorbell(r, &db);
	if (rc < 0) {
		refuse(fd, rc, "creating the port failed: %s", strerror(-rc));
		if (s->port)
			munmap(s->port, s->port_size);
		s->port = NULL;
		if (port_fd >= 0)
			close(port_fd);
		return rc;
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
		return rc;
	}
	*doorbell = db;
	return 0;
}

/* The welcome went out: slot idx is live from here on, with the pending
 * connection's fd and pidfd. */
static void install_slot(shmsync_root *r, struct pending *pd, unsigned idx, int fd, int db)
{
	struct slot *s = &r->slots[idx];
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
	atomic_store_explicit(&r->shared->stat_workers, r->nlive, memory_order_relaxed);
	pd->pidfd = -1;
	r->be->watch_slot(r, idx);
	/* At once: a worker that attached finds itself in the table. */
	root_publish_wtab(r);
}

/* A hello arrived on a pending connection: check it, give a slot. */
void root_finish_attach(shmsync_root *r, struct pending *pd)
{
	int fd = pd->fd;
	struct hello h;
	ssize_t n = att_recv(fd, &h, sizeof(h), NULL, NULL, MSG_DONTWAIT);
	if (n == -EAGAIN)
		return; /* spurious: wait on */
	pd->fd = -1;
	if (!hello_ok(fd, pd, &h, n))
		goto drop;
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
	int db = -1;
	if (send_welcome(r, idx, fd, pd->pid, &db) < 0)
		goto drop;
	install_slot(r, pd, idx, fd, db);
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
	r->be->unwatch_pending(r, i);
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

/* A refused uid is answered and closed at once: it never takes a pending
 * entry, so refused peers cannot crowd out allowed ones. Its hello (if it
 * came already) is read first: closing with it unread would reset the
 * connection before the worker reads why. */
static void refuse_uid(int fd, uid_t uid)
{
	struct hello h;
	if (att_recv(fd, &h, sizeof(h), NULL, NULL, MSG_DONTWAIT) < 0) {
		/* Not sent yet: the worker reads the answer anyway. */
	}
	char m[32];
	snprintf(m, sizeof(m), "%u", (unsigned)uid);
	refuse(fd, -EACCES, "uid %s is not allowed to attach to this root", m);
	close(fd);
}

/* The pending entry a new connection from pid takes. One process waits
 * with at most PENDING_PER_PID silent connections: a flood from one process
 * cannot take the entries of others. (A flood from many processes of an
 * allowed uid can still push out silent entries; those hear "busy" and
 * their library retries.) */
static unsigned pick_pending(const shmsync_root *r, pid_t pid)
{
	unsigned same_pid = 0, oldest_same = MAX_PENDING;
	for (unsigned i = 0; i < MAX_PENDING; i++)
		if (r->pend[i].fd >= 0 && r->pend[i].pid == pid) {
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
	return pick;
}

static void accept_one(shmsync_root *r, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		close(fd);
		return;
	}
	if (!uid_allowed(r, cred.uid)) {
		refuse_uid(fd, cred.uid);
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
	unsigned pick = pick_pending(r, cred.pid);
	struct pending *pd = &r->pend[pick];
	if (pd->fd >= 0)
		drop_pending(r, pick, "the root is busy: too many connections are waiting to say hello");
	*pd = (struct pending){fd,    pidfd,       cred.pid, sig_now_ns() + HELLO_TIMEOUT_NS,
			       false, pd->gen + 1, refusal,  cred.uid};
	root_finish_attach(r, pd);
	if (pd->fd >= 0)
		r->be->watch_pending(r, pick);
}

int root_accept_all(shmsync_root *r)
{
	/* A bounded number a turn: under a flood of connections the queue
	 * refills as fast as it is drained, and a root that accepted until it
	 * was empty never got to the hellos waiting on pending connections
	 * (they expired after 2 s and were closed unread: a reset for an
	 * honest peer, tests/test_sync_trust.c) nor to its rings. The listening
	 * socket stays readable, so the next turn takes the rest. */
	int n = 0;
	while (n < ACCEPTS_PER_TURN) {
		int fd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			break;
		accept_one(r, fd);
		n++;
	}
	return n;
}

void root_expire_pending(shmsync_root *r)
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
void root_conn_readable(shmsync_root *r, struct slot *s)
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
		root_slot_release(r, s);
		return;
	}
}
