/* The worker's attach and detach: who serves the socket (its uid), the
 * handshake (sync/attach.h), mapping the segment and the port, retries
 * against a busy root, and freeing the handle. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "sync.h"

#define ATTACH_RETRY_NS 5000000000 /* a busy root is asked again for this long */

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

static void worker_free(shmsync_worker *w)
{
	if (w->uring_ok)
		io_uring_queue_exit(&w->uring);
	if (w->port)
		munmap(w->port, w->port_size);
	if (w->seg.base)
		shm_seg_close(&w->seg);
	int fds[] = {w->conn, w->doorbell_fd, w->fdwake_fd, w->fdself_fd, w->fdpoll_fd, w->loadavg_fd};
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

/* A handle for the connection fd (which it owns from here on, even when
 * this fails), with its fork guard. */
static int handle_new(shmsync_worker **out, int fd, char *err, size_t errlen)
{
	shmsync_worker *w = calloc(1, sizeof(*w));
	if (!w) {
		close(fd);
		return -ENOMEM;
	}
	w->conn = fd;
	w->doorbell_fd = w->fdwake_fd = w->fdself_fd = w->fdpoll_fd = w->loadavg_fd = -1;
	w->seg.fd = -1;
	w->fork_guard = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w->fork_guard == MAP_FAILED || madvise(w->fork_guard, 4096, MADV_WIPEONFORK) < 0) {
		if (w->fork_guard == MAP_FAILED)
			w->fork_guard = NULL;
		int rc = -errno;
		msg(err, errlen, "the fork guard page: %s", strerror(errno));
		worker_free(w);
		return rc;
	}
	w->fork_guard[0] = GUARD_MAGIC;
	*out = w;
	return 0;
}

static void close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

/* Says hello and reads the welcome: 0 with the root's fds (segment, port
 * and maybe a doorbell), or < 0 with none of them open. */
static int handshake(int fd, struct welcome *wl, int fds[3], int *nfds, char *err, size_t errlen)
{
	struct hello h = {HELLO_MAGIC, SHM_LAYOUT_VERSION, PORT_VERSION, WIRE_VERSION, 0};
	int rc = att_send(fd, &h, sizeof(h), NULL, 0);
	/* A root that refuses at once (too many attaches in progress) may
	 * have answered and closed before the hello went out: its answer is
	 * still there to read. */
	if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET) {
		msg(err, errlen, "sending the hello failed: %s", strerror(-rc));
		return rc;
	}
	*nfds = 3;
	ssize_t n = att_recv(fd, wl, sizeof(*wl), fds, nfds, 0);
	if (n != (ssize_t)sizeof(*wl) || wl->magic != WELCOME_MAGIC) {
		close_fds(fds, *nfds);
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
		return rc;
	}
	wl->msg[sizeof(wl->msg) - 1] = 0;
	if (wl->status < 0) {
		close_fds(fds, *nfds);
		msg(err, errlen, "the root refused: %s", wl->msg);
		return wl->status;
	}
	if (wl->layout_version != SHM_LAYOUT_VERSION || wl->port_version != PORT_VERSION ||
	    wl->wire_version != WIRE_VERSION || *nfds < 2 ||
	    (wl->signal != SIG_URING && wl->signal != SIG_FUTEX) || (wl->signal == SIG_FUTEX && *nfds < 3)) {
		close_fds(fds, *nfds);
		msg(err, errlen, "root has layout %u port %u wire %u, this worker %u %u %u",
		    wl->layout_version, wl->port_version, wl->wire_version, SHM_LAYOUT_VERSION, PORT_VERSION,
		    WIRE_VERSION);
		return -EPROTO;
	}
	return 0;
}

/* Maps what the welcome brought (taking its fds) and finds the worker
 * table. */
static int take_welcome(shmsync_worker *w, const struct welcome *wl, const int fds[3], int nfds, char *err,
			size_t errlen)
{
	struct shm_err se = {{0}};
	int rc = shm_seg_open_reader(&w->seg, fds[0], &se);
	close(fds[0]);
	if (rc < 0) {
		close(fds[1]);
		if (nfds > 2)
			close(fds[2]);
		msg(err, errlen, "%s", se.msg);
		return rc;
	}
	rc = map_port(w, fds[1], err, errlen);
	close(fds[1]);
	if (nfds > 2)
		w->doorbell_fd = fds[2];
	if (rc < 0)
		return rc;
	w->signal = (int)wl->signal;
	w->slot = wl->slot;
	w->gen = wl->gen;
	w->max_batch = wl->max_batch;
	w->log_half = shm_seg_max_batch_log_bytes(&w->seg);
	/* Without its sync area there is no word to wait on: not a root of
	 * this layout (or a hostile one). */
	w->shared = sync_shared_find(&w->seg, &w->wtab, &w->wtab_n);
	if (!w->shared) {
		msg(err, errlen, "the root segment has no valid sync area (magic, size or alignment)");
		return -EPROTO;
	}
	w->tick_futex = &w->shared->tick_futex;
	if (w->wtab && w->wtab_n <= wl->slot) {
		w->wtab = NULL;
		w->wtab_n = 0;
	}
	w->next_seq = 1;
	return 0;
}

const struct sync_shared *sync_shared_find(const struct shm_seg *seg, const struct wtab **wtab,
					   uint32_t *wtab_n)
{
	*wtab = NULL;
	*wtab_n = 0;
	/* shm_seg_ext put [off, off + size) inside the published size, which
	 * never shrinks (F_SEAL_SHRINK): what is checked here stays mapped. */
	uint64_t size;
	const uint8_t *area = shm_seg_ext(seg, &size);
	if (!area || size < sizeof(struct sync_shared) || (uintptr_t)area % alignof(struct sync_shared))
		return NULL;
	const struct sync_shared *sh = (const void *)area;
	if (sh->magic != SYNC_SHARED_MAGIC || sh->size != sizeof(*sh))
		return NULL;
	/* The table's count is read once: the root may rewrite it, and every
	 * later bound uses this checked copy. */
	const struct wtab *t = (const void *)(area + sizeof(*sh));
	uint64_t room = size - sizeof(*sh);
	if (room < sizeof(*t) || t->magic != WTAB_MAGIC)
		return sh;
	uint32_t n = t->n;
	if ((room - sizeof(*t)) / sizeof(struct wtab_entry) >= n) {
		*wtab = t;
		*wtab_n = n;
	}
	return sh;
}

/* The worker's own choice: io_uring for its waits where it works, unless
 * SHMSYNC_SIGNAL=futex. The root's doorbell needs what the root waits
 * with, which the welcome said. */
static int choose_signal(shmsync_worker *w, const struct welcome *wl, char *err, size_t errlen)
{
	int mine;
	char m[160];
	int rc = sig_choose(&mine, m, sizeof(m));
	if (rc < 0) {
		msg(err, errlen, "%s", m);
		return rc;
	}
	if (mine == SIG_URING) {
		rc = io_uring_queue_init(8, &w->uring, 0);
		if (rc < 0) {
			msg(err, errlen, "io_uring_queue_init: %s", strerror(-rc));
			return rc;
		}
		w->uring_ok = true;
	}
	w->signal = mine;
	w->root_signal = (int)wl->signal;
	return 0;
}

static int attach_fd(shmsync_worker **out, int fd, const struct trust *t, char *err, size_t errlen)
{
	int rc = check_root_uid(fd, t, err, errlen);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	shmsync_worker *w = NULL;
	rc = handle_new(&w, fd, err, errlen);
	if (rc < 0)
		return rc;
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct welcome wl;
	int fds[3] = {-1, -1, -1}, nfds;
	rc = handshake(fd, &wl, fds, &nfds, err, errlen);
	if (rc < 0)
		goto fail;
	rc = take_welcome(w, &wl, fds, nfds, err, errlen);
	if (rc < 0)
		goto fail;
	rc = choose_signal(w, &wl, err, errlen);
	if (rc < 0)
		goto fail;
	tv = (struct timeval){0, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	uint64_t tick, log_end;
	worker_go_online(w, &tick, &log_end);
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
	for (size_t i = 0; i < sizeof(o->reserved) / sizeof(o->reserved[0]); i++)
		if (o->reserved[i]) {
			msg(err, errlen,
			    "shmsync_attach_opts.reserved[] must be zero (an option of a later shmsync?)");
			return -EINVAL;
		}
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
			/* The fd is this handle's now: a second attach(NULL) in this
			 * process must not take it again (closed, or reused by then),
			 * but fall back to $SHMSYNC_SOCKET. */
			unsetenv("SHMSYNC_ATTACH_FD");
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
	if (!worker_forked(w)) {
		atomic_store_explicit(&w->port->read_epoch, PORT_OFFLINE, memory_order_release);
		struct control c = {BYE_MAGIC};
		att_send(w->conn, &c, sizeof(c), NULL, 0);
	}
	worker_free(w);
}
