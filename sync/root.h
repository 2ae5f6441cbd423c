/* The root's private state and the functions its files share (root.c,
 * root_loop.c, root_attach.c, root_commit.c, root_reclaim.c and the event
 * backends root_uring.c, root_epoll.c). Only those files include this: the
 * rest of the library and the tests see the root through shmsync.h. The
 * root_* functions are not exported (cmake/shmsync.map exports shmsync_*
 * only). */
#ifndef SHMSYNC_ROOT_H
#define SHMSYNC_ROOT_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "shared.h"
#include "sync.h"

#define RECLAIM_BUDGET 1024      /* objects per reclaim step */
#define IDLE_RECLAIM_NS 50000000 /* an idle root reclaims (and expires hellos) this often */

/* The tag of an event (an io_uring user_data, an epoll event's data): its
 * type, and for a slot or a pending connection its index and generation, so
 * an event for a slot that was since reused is recognised and dropped. */
enum { UD_ACCEPT = 1, UD_WAKE, UD_TIMER, UD_DOORBELL, UD_PIDFD, UD_CONN, UD_PENDING, UD_IGNORE };

static inline uint64_t root_ud(unsigned type, unsigned idx, uint32_t gen)
{
	return (uint64_t)type << 56 | (uint64_t)(idx & 0xffffff) << 32 | gen;
}

static inline unsigned root_ud_type(uint64_t data)
{
	return (unsigned)(data >> 56);
}

static inline unsigned root_ud_idx(uint64_t data)
{
	return (unsigned)(data >> 32) & 0xffffff;
}

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
	uint64_t tail;       /* our own copy of the ring's tail */
	uint64_t next_seq;   /* the seq the next batch must carry */
	int64_t exported_at; /* when a batch last came from this ring (hint_exporters) */
	bool exported_now;   /* a batch came in this group: stamp exported_at once published */
	uint32_t doorbell_seen;
	/* io_uring path: operations armed for this slot (they point into its
	 * port, so the slot is freed only once they are all reaped). */
	unsigned inflight;
	bool futex_armed, pid_armed, conn_armed;
	uint64_t cursor, epoch; /* last validated positions */
	/* Stall policies. */
	uint64_t epoch_last;   /* the epoch as last scanned */
	int64_t epoch_since;   /* when the published tick first passed that value */
	bool behind;           /* epoch_since is set: the epoch is older than the tick */
	uint64_t revoked_tick; /* revoked at this tick; 0: not revoked */
	bool pin_warned, log_warned, kill_sent;
};

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
	int numa_policy;    /* SHMSYNC_NUMA_*: NONE leaves ports where they fall too */
	bool numa_notified; /* the "NUMA unavailable" notice was given */
	struct shm_root *shm;
	struct shm_seg *seg;
	int ro_fd;
	int listen_fd;
	char *path;
	int path_dev_ino_set;
	dev_t sock_dev;
	ino_t sock_ino;
	int signal;                    /* SIG_URING or SIG_FUTEX: what the welcome tells workers */
	const struct root_backend *be; /* how the root waits, chosen by signal */
	int wake_fd;                   /* eventfd: stop, and readiness for shmsync_root_fd */
	volatile int stop;
	/* The backends' own state: only root_uring.c and root_epoll.c touch it. */
	struct {
		struct io_uring ring;
		bool ok;
		bool accept_armed, wake_armed, timer_armed;
		struct __kernel_timespec timer_ts;
		uint64_t ops; /* operations submitted, for debugging */
	} ur;
	struct {
		int fd;       /* the futex path waits here */
		int timer_fd; /* and its idle timer */
		int64_t last; /* when a busy root last looked at its events */
	} ep;
	uid_t *allow;
	unsigned n_allow;
	struct slot *slots;
	unsigned max_workers, nlive;
	unsigned *live;      /* the indices of the nlive live slots, in no order */
	bool sleeping_flags; /* root_sleeping is raised in the live ports */
	unsigned rr;         /* round-robin start */
	size_t port_ring_bytes, max_batch;
	unsigned max_group;
	uint8_t *rec;
	size_t rec_cap;
	struct shm_op *ops;
	struct ack_pending *acks;
	size_t nacks, acks_cap;
	uint64_t min_epoch, min_cursor;
	bool reclaim_more;
	int64_t last_idle_reclaim, last_expire, last_huge_check;
	/* Adaptive polling after a commit (root_loop.c, sleep_once). */
	int64_t last_commit;  /* when the last batches were committed */
	int64_t answer_gap;   /* moving average of quick gaps between commits; 0: none */
	unsigned poll_misses; /* long polls in a row that found nothing */
	/* The last group commit brought at least a page of records: a bulk
	 * load, whose next batch will want fresh pages too (root_loop.c,
	 * warming). */
	bool bulk;
	struct pending pend[MAX_PENDING];
	uint64_t batches, ticks;
	struct sync_shared *shared; /* in the root segment: the tick futex word, stats */
	struct wtab *wtab;          /* in the root segment, after *shared */
	bool wtab_dirty;
	int64_t last_wtab;
	uint64_t *epochs, *pinned; /* scratch, one per slot */
	int policy;
	int64_t max_pin_ns;
	uint64_t max_pin_bytes;
	uint64_t *live_epochs, *live_pinned; /* scratch of reclaim_step, one per live slot */
	size_t max_retained_log;
	void (*warn)(const char *msg, void *arg);
	void *warn_arg;
	/* Replication (root_repl.c); repl is NULL without it. */
	struct repl *repl;
	int repl_role; /* REPL_ROLE_* */
	bool repl_durable;
	uint8_t *rbuf; /* the tick being built: its applied batches, framed for the stream */
	size_t rbuf_len, rbuf_cap;
	uint32_t rbuf_n;
	struct held_ack *held; /* acks (and forwarded answers) waiting: for JetStream, or for the leader */
	size_t held_head, held_n, held_cap;
	uint64_t fwd_next_id;
	struct repl_ev *fwd_in, *fwd_in_tail; /* leader: forwarded batches for the next group */
	struct held_ack *answers;             /* leader: forwarded batches of this group */
	size_t nanswers, answers_cap;
	struct origin *origins; /* leader: the followers that forwarded */
	unsigned norigins;
	_Atomic uint64_t repl_pin; /* the snapshot being written reads at this tick */
	uint64_t repl_applied_seq;
	uint64_t repl_epoch; /* follower: the sequence of the last LEADER marker it applied */
	int64_t repl_retry_at;
};

enum { REPL_ROLE_NONE = 0, REPL_ROLE_LEADER, REPL_ROLE_FOLLOWER };

/* An ack that cannot be written yet, or a forwarded batch's answer. */
struct held_ack {
	uint32_t slot, gen;
	uint64_t seq;
	int64_t result;    /* the tick, or -errno */
	uint64_t tick;     /* leader, durable: written once JetStream stored this tick */
	uint64_t id;       /* follower: the forward's id; leader: the answer's */
	int64_t deadline;  /* follower: -ETIMEDOUT after this */
	int64_t resend_at; /* follower: sent again (same id) if unanswered by then */
	bool forward;      /* follower: a forward waiting for the leader's answer */
	bool resent_said;  /* follower: its first resend was reported */
	bool done;         /* follower: the leader answered */
	char *reply;       /* an answer to send to a follower (instead of a port ack) */
	uint8_t *rec;      /* follower: the batch, kept for a resend */
	size_t rec_len;
	int origin; /* leader: the follower it answers (r->origins), -1: none */
};

/* Leader: what it knows of one follower's forwards, so that a forward
 * sent again (its answer, or itself, was lost with a NATS node) is
 * answered, not applied twice, and a follower's forwards apply in order. */
#define ORIGIN_CACHE 1024
#define MAX_ORIGINS 64
struct origin {
	char inbox[128];
	uint64_t next; /* the id it must send next */
	struct {
		uint64_t id;
		int64_t result;
	} answered[ORIGIN_CACHE];
};

/* How the root waits for its events: io_uring (root_uring.c: futex waits on
 * each port's doorbell, polls, a timeout) or epoll (root_epoll.c: eventfd
 * doorbells, a timerfd). Chosen once at open from the signal path; the rest
 * of the root never asks which. Each call is made at most once per loop
 * turn or per attach, release or pending connection, never per worker in a
 * loop over workers. */
struct root_backend {
	/* After r->wake_fd exists; on failure, msg says why (fini cleans up). */
	int (*init)(shmsync_root *r, char *msg, size_t msglen);
	/* Frees what init made; safe after a failed or skipped init. */
	void (*fini)(shmsync_root *r);
	/* The listening socket r->listen_fd is open. */
	void (*watch_listen)(shmsync_root *r);
	/* r->pend[i] waits for its hello; or it is dropped (its fd closes). */
	void (*watch_pending)(shmsync_root *r, unsigned i);
	void (*unwatch_pending)(shmsync_root *r, unsigned i);
	/* The doorbell fd the welcome hands the worker, or -1 when it rings
	 * by futex wake alone. */
	int (*make_doorbell)(shmsync_root *r, int *fd);
	/* Slot idx attached: its connection was pending until now. */
	void (*watch_slot)(shmsync_root *r, unsigned idx);
	/* Slot idx was released: stop waiting for it (it may still have
	 * operations in flight; root_slot_free comes once they are reaped). */
	void (*unwatch_slot)(shmsync_root *r, unsigned idx);
	/* The slot's fds are about to close. */
	void (*forget_slot)(shmsync_root *r, struct slot *s);
	/* Handles the events that are ready, without waiting; `slept`: the
	 * root comes from a sleep. Returns the number handled. */
	int (*process)(shmsync_root *r, unsigned max_events, bool slept);
	/* The first step of the sleep protocol: arm every wait (and the idle
	 * timer with want_timer) before the sleeping flags go up. */
	void (*arm)(shmsync_root *r, bool want_timer);
	/* Sleeps until an armed wait completes and handles what it can. */
	void (*wait)(shmsync_root *r);
	/* What shmsync_root_fd returns: readable when an armed wait completed. */
	int (*fd)(const shmsync_root *r);
};

extern const struct root_backend root_uring_backend;
extern const struct root_backend root_epoll_backend;

/* ---- root_repl.c: replication ------------------------------------------- */

/* Connects, rebuilds the state from the stream, then leads or follows;
 * nothing without o->replicate and o->follow. */
int root_repl_open(shmsync_root *r, const shmsync_root_opts *o, char *msg, size_t msglen);
void root_repl_close(shmsync_root *r);
/* Each loop turn: the replication's events (ticks to apply, answers,
 * stored ticks, a lost lease). Negative when the root must stop. */
int root_repl_process(shmsync_root *r);
/* The leader may start a group (its publish window has room). */
bool root_repl_may_commit(shmsync_root *r);
/* Leader: a batch applied to the tick being built (r->rec, len). */
void root_repl_record(shmsync_root *r, const uint8_t *rec, size_t len);
/* Leader: forwarded batches wait for a group. */
bool root_repl_has_forwarded(const shmsync_root *r);
void root_repl_apply_forwarded(shmsync_root *r);
/* Follower: a worker's batch goes to the leader; its ack waits for the answer. */
void root_repl_forward(shmsync_root *r, struct slot *s, uint64_t seq, const uint8_t *rec, size_t len, int rc);
/* After shm_commit_publish (tick 0: nothing published): publishes the tick
 * and takes over the acks it must hold. */
void root_repl_group_done(shmsync_root *r, uint64_t tick);
/* Something of the replication's may be waiting (the root must not sleep
 * without its timer). */
bool root_repl_waiting(const shmsync_root *r);

/* ---- root_commit.c --------------------------------------------------------- */

void root_write_ack(shmsync_root *r, uint32_t slot, uint32_t gen, uint64_t seq, int64_t result);
void root_finish_group(shmsync_root *r);
void root_wake_workers(shmsync_root *r);

/* ---- root_attach.c: connections, slots, ports --------------------------- */

int root_accept_all(shmsync_root *r);
/* A hello may have arrived on a pending connection. */
void root_finish_attach(shmsync_root *r, struct pending *pd);
/* Drops pending connections past their hello deadline. */
void root_expire_pending(shmsync_root *r);
/* A message on an attached worker's connection. */
void root_conn_readable(shmsync_root *r, struct slot *s);
/* The worker died or detached. */
void root_slot_release(shmsync_root *r, struct slot *s);
/* Unmaps the port, closes the slot's fds and bumps its generation. */
void root_slot_free(shmsync_root *r, struct slot *s);

/* ---- root_commit.c: draining rings, group commit, acks ---------------- */

/* Drains the rings into one group commit (`only`: that slot alone) and
 * publishes it; returns the number of batches taken. */
int root_drain_and_commit(shmsync_root *r, struct slot *only);

/* ---- root_reclaim.c: positions, stall policies, the worker table ------- */

void root_reclaim(shmsync_root *r, size_t budget);
void root_publish_wtab(shmsync_root *r);

/* ---- root_loop.c: the loop and the sleep protocol --------------------- */

/* The slot an event tag names, or NULL when it was released or reused. */
struct slot *root_slot_of(shmsync_root *r, uint64_t data);
/* The idle timer fired. */
void root_on_timer(shmsync_root *r);

#endif
