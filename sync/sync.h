/* Declarations shared by the sync layer's files: the attach handshake, the
 * signalling primitives, and the root and worker handles. Not an API. */
#ifndef SHMSYNC_SYNC_H
#define SHMSYNC_SYNC_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "port.h"
#include "shm.h"
#include "shmsync.h"
#include "wire.h"

/* ---- handshake: worker -> root "hello", root -> worker "welcome" ------- */

#define HELLO_MAGIC 0x4f4c4548434e5953ull      /* "SYNCHELO" */
#define WELCOME_MAGIC 0x4d4f434c45574e53ull    /* "SNWELCOM" */
#define BYE_MAGIC 0x45594259434e5953ull        /* "SYNCBYBE" */
#define FDWAKE_REQ_MAGIC 0x51574446434e5953ull /* worker: send me a wake fd */
#define FDWAKE_MAGIC 0x4b4157444643594eull     /* root: one end of a socket pair follows */

struct hello {
	uint64_t magic;
	uint32_t layout_version;
	uint32_t port_version;
	uint32_t wire_version;
	uint32_t reserved;
};

struct welcome {
	uint64_t magic;
	int32_t status; /* 0, or -errno with msg */
	uint32_t layout_version;
	uint32_t port_version;
	uint32_t wire_version;
	uint32_t slot;
	uint32_t gen;
	uint32_t signal; /* SIG_URING or SIG_FUTEX: how to ring the doorbell */
	uint32_t reserved;
	uint64_t max_batch; /* bytes */
	char msg[160];
	/* SCM_RIGHTS when status == 0: root segment (read-only), port[, doorbell eventfd] */
};

struct control {
	uint64_t magic; /* BYE_MAGIC, FDWAKE_REQ_MAGIC, FDWAKE_MAGIC */
};

enum { SIG_URING = 1, SIG_FUTEX = 2 };

/* ---- signalling (signal.c) --------------------------------------------- */

#ifndef IORING_OP_FUTEX_WAIT
#define IORING_OP_FUTEX_WAIT 51
#define IORING_OP_FUTEX_WAKE 52
#endif
#define SHM_FUTEX2_SIZE_U32 0x02u
#define SHM_FUTEX_BITSET_MATCH_ANY 0xffffffffu

/* Which path: "uring" when io_uring with futex operations works here and
 * SHMSYNC_SIGNAL does not say "futex". -EINVAL for a bad SHMSYNC_SIGNAL. */
int sig_choose(int *path, char *msg, size_t msglen);
bool sig_uring_futex_supported(void);
void sig_prep_futex_wait(struct io_uring_sqe *sqe, _Atomic uint32_t *word, uint32_t val);
int sig_futex_wait(_Atomic uint32_t *word, uint32_t val, int64_t timeout_ns);
int sig_futex_wake(_Atomic uint32_t *word, int n);
int64_t sig_now_ns(void);

/* ---- sockets (attach.c) ------------------------------------------------ */

int att_listen(const char *path, char *msg, size_t msglen);
int att_send(int fd, const void *buf, size_t len, const int *fds, int nfds);
/* Receives one message and up to *nfds fds (O_CLOEXEC). */
ssize_t att_recv(int fd, void *buf, size_t len, int *fds, int *nfds, int flags);

/* ---- the root ---------------------------------------------------------- */

struct slot {
	bool used; /* attached (or releasing until its operations are reaped) */
	bool live; /* counts: positions, rings */
	bool releasing;
	bool hostile; /* its ring's head is unusable: released after this round */
	uint32_t gen;
	int conn, pidfd, doorbell_fd;
	int fdwake_fd; /* our end of the socket pair behind the worker's shmsync_fd (fallback) */
	pid_t pid;
	struct port_hdr *port;
	size_t port_size;
	uint8_t *ring;
	uint64_t ring_size;
	struct port_ack *acks;
	uint64_t tail;     /* our own copy of the ring's tail */
	uint64_t next_seq; /* the seq the next batch must carry */
	uint32_t doorbell_seen;
	unsigned inflight; /* io_uring operations armed for this slot */
	bool futex_armed, pid_armed, conn_armed;
	uint64_t cursor, epoch; /* last validated positions */
	/* Stall policies. */
	uint64_t epoch_last;   /* the epoch as last scanned */
	int64_t epoch_since;   /* when it took that value */
	uint64_t revoked_tick; /* revoked at this tick; 0: not revoked */
	bool pin_warned, log_warned, kill_sent;
};

/* Connections waiting for their hello, in all and from one process. */
#define MAX_PENDING 64
#define PENDING_PER_PID 4

/* A connection that has not sent its hello yet. */
struct pending {
	int fd;
	int pidfd;
	pid_t pid;
	int64_t deadline;
	bool armed;
	uint32_t gen;
	int refusal; /* answer the hello with this instead of a slot */
	uid_t uid;
};

struct ack_pending {
	uint32_t slot, gen;
	uint64_t seq;
	int64_t result; /* 0: committed (the tick is filled in at publish) */
};

struct shmsync_root {
	struct shm_root *shm;
	struct shm_seg *seg;
	int ro_fd;
	int listen_fd;
	char *path;
	int path_dev_ino_set;
	dev_t sock_dev;
	ino_t sock_ino;
	int signal; /* SIG_URING or SIG_FUTEX */
	struct io_uring uring;
	bool uring_ok;
	int wake_fd;  /* eventfd: stop, and readiness for shmsync_root_fd */
	int epfd;     /* the futex path waits here */
	int timer_fd; /* and its idle timer */
	volatile int stop;
	bool accept_armed, wake_armed, timer_armed;
	struct __kernel_timespec timer_ts;
	uid_t *allow;
	unsigned n_allow;
	struct slot *slots;
	unsigned max_workers, nlive;
	unsigned *live;          /* the indices of the nlive live slots, in no order */
	bool sleeping_flags;     /* root_sleeping is raised in the live ports */
	uint64_t shared_log_end; /* the log up to here went to the shared cache */
	int64_t last_epoll;      /* futex path: when a busy root last looked at its events */
	unsigned rr;             /* round-robin start */
	size_t port_ring_bytes, max_batch;
	unsigned max_group;
	uint8_t *rec;
	size_t rec_cap;
	struct shm_op *ops;
	struct ack_pending *acks;
	size_t nacks, acks_cap;
	uint64_t min_epoch, min_cursor;
	bool reclaim_more;
	uint64_t uring_ops;
	int64_t last_idle_reclaim, last_expire;
	struct pending pend[MAX_PENDING];
	uint64_t batches, ticks;
	struct wtab *wtab; /* in the root segment */
	bool wtab_dirty;
	int64_t last_wtab;
	uint64_t *epochs, *pinned; /* scratch, one per slot */
	uint64_t *tle;             /* log end of recent ticks: tle[t % TLE_CAP] for t >= tle_base */
	uint64_t tle_base;
	int policy;
	int64_t max_pin_ns;
	uint64_t max_pin_bytes;
	uint64_t *live_epochs, *live_pinned; /* scratch of reclaim_step, one per live slot */
	size_t max_retained_log;
	void (*warn)(const char *msg, void *arg);
	void *warn_arg;
};

#define TLE_CAP 4096u

/* ---- the worker -------------------------------------------------------- */

struct shmsync_worker {
	pid_t pid;
	int conn;
	struct shm_seg seg; /* the root segment, read-only */
	struct port_hdr *port;
	size_t port_size;
	uint8_t *exring;
	struct port_ack *acks;
	int doorbell_fd; /* fallback: write to wake the root */
	int signal;      /* how this worker waits */
	int root_signal; /* how the root waits: how to ring its doorbell */
	uint32_t slot, gen;
	size_t max_batch;
	uint64_t next_seq;
	uint64_t cursor, log_pos;
	uint64_t epoch; /* the snapshot reads use: announced by go_online */
	bool online;
	bool dead;            /* the root went away */
	int64_t gone_checked; /* when root_gone last asked the kernel */
	struct shm_diff_scratch *diff_scratch;
	uint32_t tick_wake;             /* what this handle last stored in port->wants_tick_wake */
	uint64_t tail_seen, acked_seen; /* the root's ring tail and acked_seq, as last read */
	struct io_uring uring;
	bool uring_ok;
	bool conn_poll_armed, fd_wait_armed;
	int fdwake_fd; /* fallback shmsync_fd: the root's socket pair end (it sends on wakes) */
	int fdself_fd; /* an eventfd this handle writes when the next state is ready already */
	int fdpoll_fd; /* an epoll fd over both and the connection: what shmsync_fd returns */
	uint64_t uring_ops;
	uint64_t exported, committed, rejected, imports, resets, late_wakes;
	struct shmsync_batch *batch_cache;
	uint64_t *fork_guard; /* MADV_WIPEONFORK: reads 0 in a forked child */
	bool futex_armed;
	bool fd_mode;            /* shmsync_fd was called: keep its wait armed */
	const struct wtab *wtab; /* in the root segment: revocations */
	uint32_t revoke_seen;
	size_t log_half;
};

struct shmsync_batch {
	shmsync_worker *w;
	struct wire_buf buf;
	size_t log_bytes;
};

#endif
