/* The root's handle: open, close, and the tick. The loop is in
 * root_loop.c, attach in root_attach.c, the commit path in root_commit.c,
 * reclamation in root_reclaim.c, and the two ways of waiting in
 * root_uring.c and root_epoll.c (struct root_backend, root.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "root.h"

static void setmsg(const shmsync_root_opts *o, const char *msg)
{
	if (o && o->errbuf && o->errbuf_len)
		snprintf(o->errbuf, o->errbuf_len, "%s", msg);
}

uint64_t shmsync_root_tick(const shmsync_root *r)
{
	return shm_root_tick(r->shm);
}

void shmsync_root_set_restarts(shmsync_root *r, uint64_t root_restarts, uint64_t worker_restarts)
{
	atomic_store_explicit(&r->shared->stat_root_restarts, root_restarts, memory_order_relaxed);
	atomic_store_explicit(&r->shared->stat_worker_restarts, worker_restarts, memory_order_relaxed);
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
	/* The backend first: its wait registrations go with its fds, so the
	 * slots' fds then close without unregistering one by one. */
	/* Its threads write wake_fd: they stop first. */
	root_repl_close(r);
	if (r->be)
		r->be->fini(r);
	for (unsigned i = 0; r->slots && i < r->max_workers; i++) {
		struct slot *s = &r->slots[i];
		if (s->used) {
			s->inflight = 0;
			root_slot_free(r, s);
		}
	}
	for (unsigned i = 0; i < MAX_PENDING; i++)
		if (r->pend[i].fd >= 0) {
			close(r->pend[i].fd);
			close(r->pend[i].pidfd);
		}
	if (r->wake_fd >= 0)
		close(r->wake_fd);
	if (r->ro_fd >= 0)
		close(r->ro_fd);
	shm_root_destroy(r->shm);
	free(r->slots);
	free(r->live);
	free(r->live_epochs);
	free(r->live_pinned);
	free(r->epochs);
	free(r->pinned);
	free(r->allow);
	free(r->path);
	free(r->rec);
	free(r->ops);
	free(r->acks);
	free(r);
}

/* The options that are checked before anything is made. */
static int check_opts(const shmsync_root_opts *o, size_t *ring, unsigned *maxw)
{
	if (!o->socket_path) {
		setmsg(o, "socket_path is required");
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(o->reserved) / sizeof(o->reserved[0]); i++)
		if (o->reserved[i]) {
			setmsg(o,
			       "shmsync_root_opts.reserved[] must be zero (an option of a later shmsync?)");
			return -EINVAL;
		}
	*ring = o->port_ring_bytes ? o->port_ring_bytes : (size_t)256 << 10;
	if (*ring < 4096 || *ring > ((size_t)1 << 30) || (*ring & (*ring - 1))) {
		setmsg(o, "port_ring_bytes must be a power of two in [4 KiB, 1 GiB]");
		return -EINVAL;
	}
	*maxw = o->max_workers ? o->max_workers : 256;
	if (*maxw > 4096) {
		setmsg(o, "max_workers must be at most 4096");
		return -EINVAL;
	}
	if (o->numa_policy < SHMSYNC_NUMA_DEFAULT || o->numa_policy > SHMSYNC_NUMA_NONE) {
		setmsg(o, "numa_policy must be SHMSYNC_NUMA_DEFAULT, _INTERLEAVE, _BIND or _NONE");
		return -EINVAL;
	}
	return 0;
}

/* The root segment, the read-only fd workers map it with, and in its
 * extension area the sync layer's words and the worker table (shared.h). */
static int open_segment(shmsync_root *r, const shmsync_root_opts *o, unsigned maxw, char *msg, size_t msglen)
{
	struct shm_root_opts so = {.capacity = o->capacity,
				   .log_bytes = o->log_bytes,
				   .poison = o->debug_poison != 0,
				   .numa_policy = o->numa_policy,
				   .numa_node = o->numa_node,
				   .prefault_bytes = o->prefault_bytes};
	r->numa_policy = o->numa_policy;
	struct shm_err err = {{0}};
	int rc = shm_root_create(&r->shm, &so, &err);
	if (rc < 0) {
		snprintf(msg, msglen, "%s", err.msg);
		return rc;
	}
	r->seg = shm_root_seg(r->shm);
	rc = shm_seg_reader_fd(r->seg, &err);
	if (rc < 0) {
		snprintf(msg, msglen, "%s", err.msg);
		return rc;
	}
	r->ro_fd = rc;
	void *area;
	rc = shm_root_ext(r->shm, sync_shared_bytes(maxw), &area);
	if (rc < 0) {
		snprintf(msg, msglen, "reserving the worker table failed: %s", strerror(-rc));
		return rc;
	}
	/* Filled in before the socket exists: no worker has seen it yet. */
	r->shared = area;
	r->shared->magic = SYNC_SHARED_MAGIC;
	r->shared->size = sizeof(struct sync_shared);
	r->wtab = sync_shared_wtab(r->shared);
	r->wtab->magic = WTAB_MAGIC;
	r->wtab->n = maxw;
	return 0;
}

/* The stall policies and the warning hook. */
static int take_policy(shmsync_root *r, const shmsync_root_opts *o, char *msg, size_t msglen)
{
	if (o->stall_policy < SHMSYNC_STALL_WAIT || o->stall_policy > SHMSYNC_STALL_REVOKE ||
	    o->max_read_pin_ns < 0) {
		snprintf(msg, msglen,
			 "stall_policy must be SHMSYNC_STALL_WAIT, _KILL or _REVOKE, max_read_pin_ns >= 0");
		return -EINVAL;
	}
	r->policy = o->stall_policy;
	r->max_pin_ns = o->max_read_pin_ns;
	r->max_pin_bytes = o->max_read_pin_bytes;
	r->max_retained_log = o->max_retained_log_bytes;
	r->warn = o->warn;
	r->warn_arg = o->warn_arg;
	return 0;
}

/* The slot table and the root's scratch, sized for maxw workers, and the
 * allow list. */
static int alloc_tables(shmsync_root *r, const shmsync_root_opts *o, unsigned maxw, size_t ring)
{
	r->slots = calloc(maxw, sizeof(*r->slots));
	r->live = calloc(maxw, sizeof(*r->live));
	r->live_epochs = calloc(maxw, sizeof(*r->live_epochs));
	r->live_pinned = calloc(maxw, sizeof(*r->live_pinned));
	r->epochs = calloc(maxw, sizeof(*r->epochs));
	r->pinned = calloc(maxw, sizeof(*r->pinned));
	r->rec_cap = ring / 2;
	r->rec = malloc(r->rec_cap);
	r->ops = malloc(WIRE_MAX_OPS * sizeof(*r->ops));
	unsigned nallow = o->n_allow_uids ? o->n_allow_uids : 1;
	r->allow = malloc(nallow * sizeof(uid_t));
	r->path = strdup(o->socket_path);
	if (!r->slots || !r->live || !r->live_epochs || !r->live_pinned || !r->rec || !r->ops || !r->allow ||
	    !r->path || !r->epochs || !r->pinned)
		return -ENOMEM;
	if (o->n_allow_uids)
		memcpy(r->allow, o->allow_uids, nallow * sizeof(uid_t));
	else
		r->allow[0] = geteuid();
	r->n_allow = nallow;
	for (unsigned i = 0; i < maxw; i++) {
		struct slot *s = &r->slots[i];
		s->conn = s->pidfd = s->doorbell_fd = s->fdwake_fd = -1;
	}
	return 0;
}

/* The listening socket, watched by the backend, and its mode. */
static int open_socket(shmsync_root *r, const char *path, char *msg, size_t msglen)
{
	int rc = att_listen(path, msg, msglen);
	if (rc < 0)
		return rc;
	r->listen_fd = rc;
	r->be->watch_listen(r);
	struct stat st;
	if (stat(path, &st) == 0) {
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
	if (others && chmod(path, 0666) < 0) {
		rc = -errno;
		snprintf(msg, msglen, "chmod 0666 %s for the allowed uids failed: %s", path, strerror(errno));
		return rc;
	}
	return 0;
}

int shmsync_root_open(shmsync_root **out, const shmsync_root_opts *o)
{
	char msg[256] = "";
	shmsync_root_opts d = {0};
	if (!o)
		o = &d;
	size_t ring;
	unsigned maxw;
	int rc = check_opts(o, &ring, &maxw);
	if (rc < 0)
		return rc;
	/* Not dumpable: otherwise any process of our uid could write the
	 * segment through /proc/<pid>/mem (past every seal), ptrace us, or
	 * read the state from a core file. Process-wide, and the header says
	 * what it changes for debugging. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
		rc = -errno;
		setmsg(o, "prctl(PR_SET_DUMPABLE, 0) failed");
		return rc;
	}
	shmsync_root *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->listen_fd = r->wake_fd = r->ro_fd = r->ep.fd = r->ep.timer_fd = -1;
	for (unsigned i = 0; i < MAX_PENDING; i++)
		r->pend[i].fd = r->pend[i].pidfd = -1;
	rc = sig_choose(&r->signal, msg, sizeof(msg));
	if (rc < 0)
		goto fail;
	/* The one place that asks which path: the backend answers from here on. */
	r->be = r->signal == SIG_URING ? &root_uring_backend : &root_epoll_backend;
	rc = open_segment(r, o, maxw, msg, sizeof(msg));
	if (rc < 0)
		goto fail;
	r->max_workers = maxw;
	r->port_ring_bytes = ring;
	r->max_group = o->max_group ? o->max_group : 256;
	rc = take_policy(r, o, msg, sizeof(msg));
	if (rc < 0)
		goto fail;
	size_t log_half = shm_root_max_batch_log_bytes(r->shm);
	/* A batch is at most half the smaller of the export ring and the log. */
	r->max_batch = ring / 2 < log_half ? ring / 2 : log_half;
	rc = alloc_tables(r, o, maxw, ring);
	if (rc < 0)
		goto fail;
	r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->wake_fd < 0) {
		rc = -errno;
		snprintf(msg, sizeof(msg), "eventfd: %s", strerror(errno));
		goto fail;
	}
	rc = r->be->init(r, msg, sizeof(msg));
	if (rc < 0)
		goto fail;
	/* Before the socket: workers attach to the recovered state. */
	rc = root_repl_open(r, o, msg, sizeof(msg));
	if (rc < 0)
		goto fail;
	rc = open_socket(r, o->socket_path, msg, sizeof(msg));
	if (rc < 0)
		goto fail;
	r->last_idle_reclaim = sig_now_ns();
	if (r->seg->numa_notice[0] && r->numa_policy != SHMSYNC_NUMA_NONE) {
		r->numa_notified = true;
		if (r->warn)
			r->warn(r->seg->numa_notice, r->warn_arg);
		else
			fprintf(stderr, "shmsync root: %s\n", r->seg->numa_notice);
	}
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
