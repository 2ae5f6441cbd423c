/* shmsync: one key-value state of named directories, shared by the processes
 * of one host through shared memory.
 *
 * This header is the whole public API. Functions return 0 (or a count) or a
 * negative errno code; shmsync_strerror() names each.
 *
 * Operational caveats (read these):
 * - The state is volatile, like a cache: it lives as long as the root process.
 * - Capacity is reserved address space; the memfd grows as needed. The default
 *   is derived from RLIMIT_AS, the memory cgroup limit and physical memory;
 *   set SHMSYNC_CAPACITY (bytes, K/M/G/T suffixes) to override it.
 * - A directory's key table grows by a rebuild inside the commit that fills
 *   it, and that commit and every batch queued behind it wait for the
 *   rebuild. The last rebuild of a directory of 1M keys took 45-60 ms on a
 *   2-vCPU VM, and the same keys spread over 16 directories waited 5-8 ms
 *   at most (bench/bench_growth.c). Where a write's worst case matters,
 *   keep directories small.
 */
#ifndef SHMSYNC_H
#define SHMSYNC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHMSYNC_VERSION_MAJOR 0
#define SHMSYNC_VERSION_MINOR 1
#define SHMSYNC_VERSION_PATCH 0

/* Limits, checked on every operation. */
#define SHMSYNC_MAX_KEY 1024 /* bytes; keys are 1..SHMSYNC_MAX_KEY bytes */
/* bytes; a value must also fit in one batch: at most half the root's
 * port_ring_bytes less framing (about 128 KiB with the default ring) */
#define SHMSYNC_MAX_VALUE (16u << 20)
#define SHMSYNC_MAX_DIR 255 /* bytes of a directory name, '/' included */

/* Kinds of change delivered by import. */
enum {
	SHMSYNC_PUT = 1,
	SHMSYNC_DEL = 2,
	SHMSYNC_MKDIR = 3,
	SHMSYNC_RMDIR = 4, /* the directory and every directory under it */
	SHMSYNC_RESET = 5, /* forget everything: the full state follows */
};

/* A readable name for a return code of this library (negative errno, in the
 * meaning this library gives it). Never NULL. */
const char *shmsync_strerror(int code);

/* The library's version as "MAJOR.MINOR.PATCH". */
const char *shmsync_version(void);

/* ---- the root ----------------------------------------------------------
 *
 * The root owns the state and is its only writer. It listens on a unix
 * socket for workers, applies their batches in group commits (one tick per
 * group), and frees superseded versions, tombstones and change-log records
 * exactly when no worker can need them any more. Run it with
 * shmsync_root_run() or embed it in your own loop with shmsync_root_fd() and
 * shmsync_root_process(). A root handle belongs to one thread.
 *
 * Do not fork workers from the process that holds the root after
 * shmsync_root_open(): the root's mappings are MADV_DONTFORK and its fds
 * O_CLOEXEC, so a child would not inherit them, but fork them from a process
 * forked before the root exists, or exec them.
 */
typedef struct shmsync_root shmsync_root;

/* What the root does with a worker whose snapshot stays pinned longer than
 * max_read_pin_ns, or keeps more than max_read_pin_bytes of retired memory
 * from being freed (everything superseded or deleted after it):
 * WAIT: nothing but a warning naming it (memory grows; stat shows what it
 * pins). KILL: SIGKILL through its pidfd; it is released like any dead
 * worker. REVOKE: its snapshot stops counting, so memory stays bounded; its
 * reads, iterations and views from before report -ESTALE
 * (shmsync_view_valid says 0) until it imports again, which rejoins it. */
enum { SHMSYNC_STALL_WAIT = 0, SHMSYNC_STALL_KILL = 1, SHMSYNC_STALL_REVOKE = 2 };

/* NUMA placement (libnuma's policies through mbind/set_mempolicy). The root
 * segment is interleaved across the nodes by default, or bound to
 * numa_node, or left to the kernel (first touch); each worker's port goes
 * on that worker's node; under shmsync_supervise worker i is bound to node
 * i mod (number of nodes), CPUs and memory, unless SHMSYNC_NUMA_NONE. A node
 * that does not exist is -EINVAL with a message naming those that do;
 * where NUMA is unavailable placement is skipped with one notice. */
enum {
	SHMSYNC_NUMA_DEFAULT = 0, /* interleave */
	SHMSYNC_NUMA_INTERLEAVE = 1,
	SHMSYNC_NUMA_BIND = 2, /* the segment on numa_node only */
	SHMSYNC_NUMA_NONE = 3, /* no policy, no placement */
};

typedef struct shmsync_root_opts {     /* zero means default */
	const char *socket_path;       /* required, < 92 bytes; created mode 0600, removed on close */
	size_t capacity;               /* bytes of address space; default from limits, SHMSYNC_CAPACITY */
	unsigned max_workers;          /* default 256 */
	size_t log_bytes;              /* change log ring; default capacity/16, at most 64 MiB */
	size_t port_ring_bytes;        /* each worker's export ring; default 256 KiB, a power of two in
					  [4 KiB, 1 GiB]. A batch, and so a value, is at most half of it
					  (64 MiB reaches SHMSYNC_MAX_VALUE); every attached worker
					  holds one ring of this size in memory */
	unsigned max_group;            /* batches per group commit; default 256 */
	size_t max_retained_log_bytes; /* a cursor keeping more log than this is dropped (reset); 0: the log's
					  size */
	int64_t max_read_pin_ns;       /* a snapshot held online longer gets stall_policy; 0: never */
	size_t max_read_pin_bytes;     /* a snapshot keeping more retired bytes gets stall_policy; 0: never.
					  The bound on memory that does not depend on timing: checked
					  after every commit, so a snapshot exceeds it by one tick's
					  garbage at most before the policy acts */
	int stall_policy;              /* SHMSYNC_STALL_WAIT (default), _KILL or _REVOKE */
	int numa_policy;               /* SHMSYNC_NUMA_*: the segment's memory policy */
	int numa_node;                 /* for SHMSYNC_NUMA_BIND */
	void (*warn)(const char *msg, void *arg); /* warnings; default: a line on stderr */
	void *warn_arg;
	int debug_poison;        /* fill freed memory with 0xa5 (tests: a read of freed memory shows) */
	const uid_t *allow_uids; /* peers allowed to attach; default: the root's own uid. When
				    it names another uid, the socket is made mode 0666 and the uid
				    check at accept refuses everyone else (before any resources) */
	unsigned n_allow_uids;
	char *errbuf; /* if set, a message for a failed shmsync_root_open */
	size_t errbuf_len;
	/* Replication through NATS JetStream (README, "Replication"; none of
	 * it runs when both URL lists are NULL). `replicate`: lead the stream,
	 * publishing every tick; `follow`: apply the leader's ticks and forward
	 * this root's workers' batches to it. Either one first rebuilds the
	 * state from the stream (its latest snapshot, then the ticks after it)
	 * before the socket opens: workers attach to the recovered state, at
	 * the stream's tick numbers. */
	const char *replicate;   /* "nats://host:port[,nats://host:port...]" */
	const char *follow;      /* the same, as a follower */
	const char *stream;      /* the stream's name: 1-64 of A-Z a-z 0-9 _ - */
	int durable;             /* shmsync_wait_committed returns once JetStream stored the tick */
	unsigned replicas;       /* the stream's replicas when this root creates it; default 1 */
	int64_t lease_ns;        /* the leader's lease: a follower takes over this long after the
				    leader's last renewal; default 3 s */
	uint64_t snapshot_ticks; /* a snapshot every this many ticks; default 100000 */
	uint64_t snapshot_bytes; /* ... or every this many bytes of ticks; default 64 MiB */
	unsigned repl_window;    /* ticks published and not yet stored before the root stops
				    committing; default 256 */
	const char *repl_id;     /* this root's name in the lease; default host:pid:random. A root
				    restarted with the same name takes its own unexpired lease back at
				    once (the supervisor names its root so); never give two live roots
				    one name */
	size_t prefault_bytes;   /* bytes of the segment the root backs and touches when it
				    opens, before any worker attaches: commits that fill them pay
				    for no first touch (README, "Tuning"). The memory is taken at
				    once. At most capacity; 0 (default): none */
	/* Zero: room for options of later versions within this layout. A
	 * nonzero word is refused (-EINVAL): an option this library does not
	 * know must not be ignored. */
	uint64_t reserved[8];
} shmsync_root_opts;

/* Creates the segment, the socket and the root's io_uring.
 *
 * It also makes the whole process non-dumpable (prctl PR_SET_DUMPABLE 0):
 * otherwise any process of the same uid could write the segment through
 * /proc/<pid>/mem, past every seal, or read it from a core file. For
 * debugging this means: no core dumps, and gdb/strace attach (and
 * /proc/<pid>/{mem,fd,environ}) need root (CAP_SYS_PTRACE); start the
 * root under the debugger instead, or call prctl(PR_SET_DUMPABLE, 1)
 * yourself after this call in a debug build.
 *
 * Embedders: the root never writes to an fd a worker gives it and writes
 * its sockets with MSG_NOSIGNAL, so no worker can make it take SIGPIPE.
 *
 * Errors: -EINVAL
 * (no socket path, bad option), -EADDRINUSE (the socket exists and a root,
 * or another program with a socket of any type, answers there), -ENOMEM, -ENOSPC, or what a system call
 * returned; opts' errbuf then says what failed and what to set. */
int shmsync_root_open(shmsync_root **r, const shmsync_root_opts *o);
/* Serves until shmsync_root_stop(). Returns 0, or a negative errno if the
 * loop itself failed. */
int shmsync_root_run(shmsync_root *r);
/* For your own loop: call it before every wait. It arms the root's
 * wake-ups (workers ring the root only while it says it sleeps) and returns
 * an fd (always the same one) that becomes readable when there is work;
 * then call shmsync_root_process(). Readable at once if work is waiting. */
int shmsync_root_fd(shmsync_root *r);
/* Does the pending work without sleeping: attaches, batches (one group
 * commit), releases, reclamation. max_events bounds the completions reaped
 * (0: all). Returns how much it did (0: nothing, so wait on
 * shmsync_root_fd()), or a negative errno. */
int shmsync_root_process(shmsync_root *r, unsigned max_events);
/* Makes shmsync_root_run() return; safe from a signal handler. */
void shmsync_root_stop(shmsync_root *r);
/* Closes the socket (removing its path), releases every worker (their waits
 * return -ESHUTDOWN) and frees the state. */
void shmsync_root_close(shmsync_root *r);
/* The published tick. */
uint64_t shmsync_root_tick(const shmsync_root *r);
/* For a supervisor: how often it restarted the root and the workers, shown
 * by shmsync_stat (shmsync_supervise sets them). */
void shmsync_root_set_restarts(shmsync_root *r, uint64_t root_restarts, uint64_t worker_restarts);

/* ---- workers -----------------------------------------------------------
 *
 * A worker handle belongs to one thread; a process may hold several. A
 * handle used in a child forked after attach returns -ECHILD: attach again
 * in the child. Every call that waits returns -ESHUTDOWN promptly once the
 * root is gone.
 */
typedef struct shmsync_worker shmsync_worker;
typedef struct shmsync_batch shmsync_batch;

/* Connects to the root at socket_path. NULL: $SHMSYNC_ATTACH_FD (an already
 * connected socket, set by a supervisor), else $SHMSYNC_SOCKET.
 *
 * Before it sends anything, the worker checks who serves the socket
 * (SO_PEERCRED): by default only a root running as this process's
 * effective uid or as uid 0 is accepted, so a stranger who bound the path
 * first (in /tmp, say) never receives this worker's writes. Name other
 * uids in shmsync_attach_opts.root_uids or in $SHMSYNC_ROOT_UIDS (a comma
 * separated list of numeric uids).
 *
 * A root that is busy with a flood of connections answers -EAGAIN; the
 * path forms retry with backoff for up to 5 s before they return it.
 *
 * Errors: -ENOENT/-ECONNREFUSED (no root there), -EACCES (this uid is not
 * allowed), -EPERM (the socket is served by a uid this worker does not
 * trust: the message names it), -EUSERS (the root has max_workers),
 * -EAGAIN (the root stayed busy), -EPROTO (another layout version: the
 * message names both), -EINVAL (bad environment variable). */
int shmsync_attach(shmsync_worker **w, const char *socket_path);
/* The same over an already connected socket; takes ownership of fd. */
int shmsync_attach_fd(shmsync_worker **w, int fd);
/* shmsync_attach with a message: on failure errbuf says what went wrong (the
 * root's own words where it refused). */
int shmsync_attach_msg(shmsync_worker **w, const char *socket_path, char *errbuf, size_t errbuf_len);

typedef struct shmsync_attach_opts { /* zero means default */
	const char *socket_path;     /* NULL: as shmsync_attach(NULL) */
	const uid_t *root_uids;      /* trusted besides this euid and 0; NULL: $SHMSYNC_ROOT_UIDS */
	unsigned n_root_uids;
	char *errbuf; /* on failure: what went wrong */
	size_t errbuf_len;
	/* Zero: room for options of later versions within this layout. A
	 * nonzero word is refused (-EINVAL): an option this library does not
	 * know must not be ignored. */
	uint64_t reserved[8];
} shmsync_attach_opts;
/* shmsync_attach with options. */
int shmsync_attach_with(shmsync_worker **w, const shmsync_attach_opts *o);
/* Detaches: the root releases everything this worker pinned. */
void shmsync_detach(shmsync_worker *w);
/* The last tick this worker imported (its snapshot after an import). */
uint64_t shmsync_cursor(const shmsync_worker *w);

/* Batches: built in private memory, applied atomically by the root. Every
 * call checks its arguments at once: -EINVAL (directory name: absolute,
 * ending in '/', no empty, "." or ".." component; empty key), -ENAMETOOLONG,
 * -EMSGSIZE (value), -E2BIG (the batch would exceed half the smaller of the
 * export ring and the change log). A failed call leaves the batch as it
 * was. */
int shmsync_begin(shmsync_worker *w, shmsync_batch **b);
int shmsync_put(shmsync_batch *b, const char *dir, const void *k, size_t kn, const void *v, size_t vn);
/* Fails the batch with -EEXIST if the key is present when applied. */
int shmsync_put_if_absent(shmsync_batch *b, const char *dir, const void *k, size_t kn, const void *v,
			  size_t vn);
/* Fails the batch with -ECANCELED unless the key's current version has
 * expected_tick (a view's tick; 0: the key is absent). */
int shmsync_put_if_tick(shmsync_batch *b, const char *dir, const void *k, size_t kn, const void *v, size_t vn,
			uint64_t expected_tick);
/* A counter: 8-byte little-endian int64; a missing key counts from 0.
 * Applied: -EINVAL if the value has another length, -ERANGE on overflow. */
int shmsync_add(shmsync_batch *b, const char *dir, const void *k, size_t kn, int64_t delta);
/* Applied: -ENOENT if the key is absent. */
int shmsync_del(shmsync_batch *b, const char *dir, const void *k, size_t kn);
/* Applied: -EEXIST if it exists. A directory needs no parent. */
int shmsync_mkdir(shmsync_batch *b, const char *dir);
/* Removes dir and every directory whose name starts with it. Applied:
 * -ENOENT if there is none. */
int shmsync_rmdir(shmsync_batch *b, const char *dir);

#define SHMSYNC_NONBLOCK 1

/* Hands the batch to the root. On success b is consumed and *seq names it
 * for shmsync_wait_committed. With SHMSYNC_NONBLOCK, -EAGAIN when the ring
 * is full (b is kept: export it again later); otherwise waits for room. */
int shmsync_export(shmsync_batch *b, int flags, uint64_t *seq);
void shmsync_abort(shmsync_batch *b);
/* Waits until batch seq was applied or rejected. Returns 0 and *tick (the
 * tick that holds it), or the batch's error (-ENOENT, -EEXIST, -ECANCELED,
 * -EINVAL, -ERANGE, -ENOSPC, -EPROTO), -ETIMEDOUT, -ESHUTDOWN, or
 * -EOVERFLOW when its result is no longer kept: the port keeps the last 1024
 * batches' results, so wait for a batch before exporting 1024 more after
 * it. timeout_ns < 0 waits forever, 0 polls. */
int shmsync_wait_committed(shmsync_worker *w, uint64_t seq, uint64_t *tick, int64_t timeout_ns);

typedef struct shmsync_change {
	uint64_t tick; /* of the item's last change (after a RESET: the new tick) */
	int kind;      /* SHMSYNC_PUT, _DEL, _MKDIR, _RMDIR, _RESET */
	const char *dir;
	const void *key;
	size_t key_len;
	const void *value;
	size_t value_len;
} shmsync_change; /* views valid during the callback only */
typedef int (*shmsync_change_fn)(const shmsync_change *c, void *arg);

/* Waits until the published tick passes the cursor (offline while it
 * waits), moves the snapshot to the new tick T and calls fn for what changed
 * in (cursor, T]: every directory created or removed and every key changed,
 * with its state at T, in the order of its last change. A worker whose
 * cursor fell off the change log gets RESET, then the full state. fn may be
 * NULL: the snapshot then moves without reading the change log, at a cost
 * that does not grow with what changed, and a success returns how many
 * ticks it moved. Returns the number of changes delivered, fn's non-zero value (the
 * cursor then stays: the next import delivers those changes again,
 * coalesced), -ETIMEDOUT (nothing new), -ESHUTDOWN, -ESTALE (the root revoked
 * this snapshot while fn ran: discard what this call delivered; the cursor
 * stays and the next import delivers again). After -ETIMEDOUT the handle is
 * online again at the snapshot it had, so shmsync_get and views taken
 * before the call work as before (import_next times out only when nothing
 * was committed: a commit that lands as the wait ends is imported). Only
 * import_until, when a commit short of its target came during the wait,
 * finds the old snapshot possibly freed: it then comes back at the
 * published tick, and earlier views fail shmsync_view_valid(). */
int shmsync_import_next(shmsync_worker *w, int64_t timeout_ns, shmsync_change_fn fn, void *arg);
/* The same, but waits until the published tick is >= tick (read your
 * writes: pass the tick from shmsync_wait_committed). */
int shmsync_import_until(shmsync_worker *w, uint64_t tick, int64_t timeout_ns, shmsync_change_fn fn,
			 void *arg);

typedef struct shmsync_view {
	const void *data;
	size_t len;
	uint64_t tick;  /* the tick of this version */
	uint64_t epoch; /* the snapshot it was read at */
} shmsync_view;

/* Zero-copy reads at this worker's snapshot (the tick of its last import,
 * normally its cursor). A view stays
 * valid until the next import or shmsync_offline() on this handle, or until
 * the root revokes the snapshot (stall policy REVOKE). -ENOENT (directory or
 * key absent), -EIO (corrupt segment), -ESTALE (offline, or revoked: import
 * first). */
int shmsync_get(shmsync_worker *w, const char *dir, const void *k, size_t kn, shmsync_view *v);
/* A key for shmsync_get_many. */
typedef struct shmsync_key {
	const void *data;
	size_t len;
} shmsync_key;
/* n shmsync_gets in one directory, with their cache misses overlapped
 * (groups of 16 keys: each group's slots, then its versions, are loaded
 * together), so a large batch of uniform keys costs a fraction of n single
 * gets. For each i, rcs[i] is 0 and views[i] is set as shmsync_get would
 * set it, or rcs[i] is -ENOENT (every key, when dir is absent). Returns how
 * many were found, or for the whole call -EINVAL, -ESTALE (offline or
 * revoked: import first), -EIO (corrupt segment); the views then are not
 * to be read. */
int shmsync_get_many(shmsync_worker *w, const char *dir, const shmsync_key *keys, size_t n,
		     shmsync_view *views, int *rcs);
/* 1 if v is still safe to read, 0 if not. */
int shmsync_view_valid(shmsync_worker *w, const shmsync_view *v);
/* Calls fn for every key of dir at the snapshot, in no particular order;
 * stops at fn's first non-zero value and returns it. */
int shmsync_dir_iter(shmsync_worker *w, const char *dir,
		     int (*fn)(const void *k, size_t kn, shmsync_view v, void *arg), void *arg);
/* Calls fn for every directory under prefix (NULL or "/": all), in name
 * order. */
int shmsync_dirs_iter(shmsync_worker *w, const char *prefix, int (*fn)(const char *dir, void *arg),
		      void *arg);
/* Stops pinning the snapshot: memory it held may be reclaimed. Views become
 * invalid; reads return -ESTALE until the next import. */
void shmsync_offline(shmsync_worker *w);

struct io_uring_sqe;
/* Prepares, on the caller's own io_uring, a wait that completes when the
 * next state is ready (a futex wait on the tick word); then call
 * shmsync_import_next(w, 0, ...). -EOPNOTSUPP where io_uring futex waits are
 * missing (use shmsync_fd). The caller must go offline first if it may sleep
 * long: see shmsync_offline. */
int shmsync_prep_wait(shmsync_worker *w, struct io_uring_sqe *sqe);
/* An fd that becomes readable when the next state is ready, for epoll
 * loops: the worker's own io_uring with the wait armed, or an eventfd the
 * root signals on the fallback path. Re-armed by each import. */
int shmsync_fd(shmsync_worker *w);

typedef struct shmsync_stats {
	uint64_t tick;       /* published */
	uint64_t cursor;     /* this worker's */
	uint64_t read_epoch; /* this worker's, UINT64_MAX when offline */
	uint64_t min_epoch;  /* over all workers, as the root last computed it */
	const char *signal;  /* "uring" or "futex" */
	uint64_t uring_ops;  /* io_uring operations this worker submitted */
	uint64_t bytes_in_use, capacity, tombstones, reclaimed; /* the root's, as last published */
	unsigned workers;                                       /* attached, as last published */
	const char *root_signal;                                /* how the root waits */
	unsigned slot;
	uint64_t batches_exported, batches_committed, batches_rejected;
	uint64_t imports, resets;
	/* Waits of this worker that ended by their timer slice (futex path)
	 * although the wait was over: a lost wake-up, or one within a hair of
	 * the slice's end. And how often the root's idle timer found ring work
	 * (a lost doorbell wake, or one still on its way). */
	uint64_t late_wakes, root_timer_found_work;
	/* The segment's memory policy as the kernel reports it
	 * (get_mempolicy), a JSON object such as
	 * {"policy":"interleave","nodes":"0-1"}, or null. */
	char numa[96];
	uint64_t root_restarts, worker_restarts; /* under a supervisor: how often it restarted them */
	/* Bytes of the segment backed by memory, and how many of them the
	 * root's mapping has on transparent huge pages (as the root last
	 * measured them, at most once a second; 0 where the system gives
	 * shared memory none: README, "Tuning"). */
	uint64_t segment_bytes, huge_bytes;
	/* Replication (README, "Replication"): the root's role, 0 none, 1
	 * leader, 2 follower (SHMSYNC_REPL_*). A leader's stored_tick is the
	 * last tick JetStream has stored; lag_ticks and lag_bytes what it has
	 * committed here and not yet seen stored (what a default, non-durable
	 * commit can lose with this host). A follower's stored_tick is the tick
	 * it has applied, repl_seq the stream sequence. */
	int repl_role;
	uint64_t repl_stored_tick, repl_lag_ticks, repl_lag_bytes, repl_seq;
	/* Pages the root touched ahead of the commits that will write them
	 * (README, "Tuning": first touches): where it would have slept, and
	 * while it polled after a commit of a page of records or more. */
	uint64_t root_pages_warmed_idle, root_pages_warmed_poll;
	uint64_t reserved[8]; /* zeroed: room for figures of later versions */
} shmsync_stats;

enum { SHMSYNC_REPL_NONE = 0, SHMSYNC_REPL_LEADER = 1, SHMSYNC_REPL_FOLLOWER = 2 };

int shmsync_stat(shmsync_worker *w, shmsync_stats *s);

enum {
	SHMSYNC_WORKER_LIVE = 1,    /* online, reading its snapshot */
	SHMSYNC_WORKER_OFFLINE = 2, /* pins no versions (e.g. asleep in import_next) */
	SHMSYNC_WORKER_LAGGING = 3, /* its cursor keeps more than a quarter of the change log */
	SHMSYNC_WORKER_REVOKED = 4, /* its snapshot was revoked (stall policy): it must import */
};

typedef struct shmsync_worker_info {
	unsigned slot;
	pid_t pid;
	int state;             /* SHMSYNC_WORKER_* */
	uint64_t cursor;       /* last tick it imported */
	uint64_t epoch;        /* its snapshot; UINT64_MAX when offline */
	uint64_t lag;          /* ticks its cursor is behind */
	uint64_t pinned_bytes; /* what it keeps from being freed: versions and change-log bytes */
	int node;              /* the NUMA node its CPUs are on; -1: not placed on one node */
	uint64_t reserved[8];  /* zeroed: room for figures of later versions */
} shmsync_worker_info;

/* The attached workers as the root last published them (at every attach and
 * release, and at most every 50 ms otherwise). Fills up to max entries and
 * returns how many workers there are. */
int shmsync_workers(shmsync_worker *w, shmsync_worker_info *out, unsigned max);
/* The same as one JSON object; returns its length (like snprintf). */
int shmsync_stat_json(shmsync_worker *w, char *buf, size_t len);

/* ---- the supervisor ----------------------------------------------------
 *
 * A small stateless master: it forks the root as one child and each worker
 * as another, so no worker inherits the root's writable mapping or its
 * io_uring, and it never maps the segment itself. It restarts what dies,
 * stops everything in order on SIGTERM or SIGINT, and restarts the workers
 * one at a time on SIGHUP while the state stays.
 *
 * Each worker child connects to the root's socket itself (so the root's
 * SO_PEERPIDFD names the worker, not the master) before fn runs, and finds
 * the connection in $SHMSYNC_ATTACH_FD: shmsync_attach(&w, NULL) attaches
 * over it. It must do so within 2 s (the root drops a connection that says
 * nothing for longer). $SHMSYNC_WORKER_INDEX is its slot (0..workers-1) and
 * $SHMSYNC_SOCKET the root's socket (for more handles, or for the shmsync
 * tool run from an exec'd worker). The fd survives exec.
 *
 * Restarts: a worker that exits non-zero or dies by a signal (the stall
 * policy's SIGKILL included) is started again after a backoff (100 ms,
 * doubling to 5 s; back to 100 ms once a worker ran 10 s). crash_limit
 * crashes of one slot within crash_window_ns are a crash loop: reported in
 * one line, and that slot is not started again. A worker that exits 0 has
 * finished: it is not restarted. A root that dies is restarted the same way,
 * and every worker with it. Without replication the state is lost (it lives
 * in the root only) and the workers start over on an empty one. With it
 * (root.replicate or root.follow) the new root rebuilds the state from the
 * stream before it serves, at the stream's tick numbers; each restarted
 * worker attaches to that state, so its first import_next delivers the next
 * tick's changes, never a RESET (README, "Replication").
 *
 * Stopping: workers get SIGTERM and grace_ns to finish (the root still runs,
 * so their last commits are acknowledged), then SIGKILL; then the root gets
 * SIGTERM, and SIGKILL after grace_ns. A second SIGTERM or SIGINT kills
 * whatever is left at once. Each worker runs in its own process group, which
 * gets the signals, so what a worker started goes with it (and Ctrl-C at a
 * terminal reaches the master alone, which stops the others in this order;
 * a worker must not read the terminal).
 *
 * Process state it touches while it runs, restored when it returns: it
 * blocks SIGTERM, SIGINT, SIGHUP in the calling thread (it reads them from
 * a signalfd), and sets SIGCHLD to its default if it was ignored (the
 * children's exit statuses are needed). Call it from a single-threaded
 * process, or block those three signals in every other thread first.
 * Children get PR_SET_PDEATHSIG SIGKILL: if the master is killed, nothing
 * it started outlives it (the thread that called this must not exit before
 * it returns).
 */
typedef struct shmsync_supervise_opts { /* zero means default */
	unsigned workers;               /* default: the number of online CPUs, at least 1; at most 4096 */
	/* The root listens here too (for shmsync stat and other workers); at
	 * most 91 bytes. NULL: root.socket_path, else a private path in a fresh
	 * 0700 directory under $XDG_RUNTIME_DIR or /tmp, removed at return. */
	const char *socket_path;
	/* For the root (socket_path is set by the supervisor). Under the
	 * supervisor, when stall_policy, max_read_pin_ns and max_read_pin_bytes
	 * are all zero, the default is SHMSYNC_STALL_KILL after 30 s or 256 MiB
	 * (a quarter of capacity if that is less): a killed worker is restarted,
	 * which frees all it pinned, so a stuck worker costs one restart instead
	 * of unbounded memory. 30 s is far past any request a worker serves from
	 * one snapshot; work that holds a snapshot longer should call
	 * shmsync_offline() or import. (The time counts from when the published
	 * tick passed the worker's snapshot, so an idle worker of a quiet root
	 * is never killed for it.) No other default changes under the
	 * supervisor: the socket stays 0600 for the caller's uid, and NUMA
	 * placement is on, since workers are the supervisor's own processes to
	 * place (root.numa_policy = SHMSYNC_NUMA_NONE turns it off). Set any of the three
	 * to choose yourself; SHMSYNC_STALL_WAIT with max_read_pin_ns =
	 * INT64_MAX means no bound. max_workers defaults to workers + 64, at
	 * least 256 (a SIGHUP restart runs one worker more for a while; the rest
	 * is room for tools). */
	shmsync_root_opts root;
	int64_t grace_ns;        /* SIGTERM -> SIGKILL at shutdown and at SIGHUP; default 5 s */
	unsigned crash_limit;    /* crashes of one slot ... (default 5, at most 64) */
	int64_t crash_window_ns; /* ... within this window are a crash loop; default 10 s */
	/* One line per event (starts, exits, restarts, crash loops, signals),
	 * without a newline; called in the master (and in children for what
	 * goes wrong there before fn runs). Default: a line on stderr. */
	void (*log)(const char *msg, void *arg);
	void *log_arg;
	char *errbuf; /* if set, why shmsync_supervise returned an error */
	size_t errbuf_len;
	/* Zero: room for options of later versions within this layout. A
	 * nonzero word is refused (-EINVAL): an option this library does not
	 * know must not be ignored. */
	uint64_t reserved[8];
} shmsync_supervise_opts;

/* Runs in each worker process, with $SHMSYNC_ATTACH_FD set (so
 * shmsync_attach(&w, NULL) attaches), $SHMSYNC_WORKER_INDEX and
 * $SHMSYNC_SOCKET. Its return value is the process's exit status (0: it
 * finished, and is not restarted). */
typedef int (*shmsync_worker_fn)(unsigned index, void *arg);

/* Runs the root and the workers until SIGTERM or SIGINT, or until no
 * worker slot is left (each exited 0, or crash-looped). Returns 0 after a
 * clean shutdown (every child reaped) or when every worker finished with 0;
 * -ECHILD when every slot crash-looped or the root did (errbuf says which);
 * the root's error if it could not start the first time (-EADDRINUSE: a
 * root already answers on the socket); -EINVAL for bad options; or what a
 * system call returned. */
int shmsync_supervise(const shmsync_supervise_opts *o, shmsync_worker_fn fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif
