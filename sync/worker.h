/* The worker's handle, shared by the worker's files (worker.c,
 * worker_attach.c, worker_wait.c). Not an API: sync.h includes it because
 * tests reach into a handle (its connection, port and segment). */
#ifndef SHMSYNC_WORKER_H
#define SHMSYNC_WORKER_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "port.h"
#include "shared.h"
#include "shm.h"
#include "shmsync.h"
#include "sig.h"
#include "wire.h"
#include "wtab.h"

struct shmsync_worker {
	pid_t pid;
	int conn;
	struct shm_seg seg; /* the root segment, read-only */
	/* The last directory a get looked up, at w->epoch. Emptied whenever
	 * the epoch is announced afresh or let go (offline, revoked): what it
	 * points at is kept only while this handle holds that epoch. */
	struct shm_dir_cache dir_cache;
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
	int64_t poll_mark;    /* polling with nothing new: since then, or the last yield */
	bool polling;
	bool yield_switched; /* the last worker_yield ran another process (worker.c, poll_missed) */
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
	/* How long shmsync_wait_committed waited lately (an average, ns): it
	 * spins that long, within ACK_SPIN_MAX_NS, before it sleeps. */
	int64_t ack_wait_ns;
	/* /proc/loadavg, kept open for the spins past WAIT_SPIN_NS (-1: not
	 * opened yet, -2: unavailable), and the CPUs online it is held to. */
	int loadavg_fd;
	long online_cpus;
	struct shmsync_batch *batch_cache;
	uint64_t *fork_guard; /* MADV_WIPEONFORK: reads 0 in a forked child */
	bool futex_armed;
	bool fd_mode; /* shmsync_fd was called: keep its wait armed */
	/* In the root segment's sync area, checked at attach (shared.h). */
	const struct sync_shared *shared;
	const _Atomic uint32_t *tick_futex; /* &shared->tick_futex */
	const struct wtab *wtab;            /* revocations; NULL if the root's was malformed */
	uint32_t wtab_n;                    /* its entries as checked */
	uint32_t revoke_seen;
	size_t log_half;
};

struct shmsync_batch {
	shmsync_worker *w;
	struct wire_buf buf;
	size_t log_bytes;
	/* The last directory name an op of this batch passed with (0: none):
	 * the next op naming it again skips its syntax check. */
	size_t checked_len;
	char checked[SHMSYNC_MAX_DIR];
};

/* The fork guard: a MADV_WIPEONFORK page that reads 0 in a forked child,
 * where the handle (its port, its positions) belongs to the parent. */
#define GUARD_MAGIC 0x5348535947554152ull

static inline bool worker_forked(const shmsync_worker *w)
{
	return w->fork_guard[0] != GUARD_MAGIC;
}

#define CHECK_HANDLE(w)                                                                                      \
	do {                                                                                                 \
		if (worker_forked(w))                                                                        \
			return -ECHILD;                                                                      \
	} while (0)

/* ---- worker.c ---------------------------------------------------------- */

/* Announces the published tick as the read epoch, until it holds still. */
void worker_go_online(shmsync_worker *w, uint64_t *tick, uint64_t *log_end);

/* ---- worker_wait.c ----------------------------------------------------- */

/* Waits until cond(w, arg) holds: spins for spin_ns (0: the default,
 * WAIT_SPIN_NS; past that only while the machine has a CPU no other
 * process waits for), then sleeps on the tick futex word. 0, -ETIMEDOUT,
 * -ESHUTDOWN. *waited (may be NULL): about how long it waited, from the
 * clock reads the wait made anyway (0 for a wait of a few turns).
 * from_peer: what it waits for may come from another worker, which may
 * share this CPU (a tick), rather than from the root alone (an ack, ring
 * room): after a yield that ran another process, the spin yields at once
 * (poll_missed in worker.c says why). An ack wait must not: two writers
 * sharing a CPU then handed it to each other on every batch, each ack
 * costing a switch (2 writers, batch 1: 205-215 K/s to 108-114 K/s). */
#define WAIT_SPIN_NS 20000
int worker_wait_for(shmsync_worker *w, bool (*cond)(shmsync_worker *, uint64_t), uint64_t arg,
		    int64_t timeout_ns, int64_t spin_ns, int64_t *waited, bool from_peer);
/* Has the root gone away? Asks the kernel (poll on the connection). */
bool worker_root_gone(shmsync_worker *w);
/* Reaps this handle's io_uring completions (io_uring path). */
void worker_reap(shmsync_worker *w);
/* Arms the waits on the tick futex word (at futex_val) and the connection. */
void worker_arm(shmsync_worker *w, uint32_t futex_val);
/* sched_yield, timed: notes in w->yield_switched whether it ran another
 * process (worker.c, poll_missed); returns the time after it. */
int64_t worker_yield(shmsync_worker *w, int64_t now);
/* Empties the fallback's wake socket and eventfd (shmsync_fd). */
void worker_drain_fdwake(shmsync_worker *w);

#define GONE_CHECK_NS 1000000  /* non-blocking calls look for the root's death this often */
#define ACK_SPIN_MAX_NS 250000 /* the longest a wait_committed spins (worker.c) */
#define POLL_YIELD_NS 1000     /* a worker polling with nothing new yields this often (worker.c) */
#define YIELD_SWITCHED_NS 2500 /* a yield that took longer ran another process (worker_wait.c) */

/* The same question for calls that do not block. A poll(2) costs more than
 * the whole spinning export or import around it, so these ask the kernel at
 * most every GONE_CHECK_NS; a call that is about to sleep always asks (and
 * the io_uring path also arms a poll on the connection). So an export may
 * succeed up to a millisecond after the root died: its wait_committed then
 * reports -ESHUTDOWN, and nothing that was acked is affected. Inline: every
 * export and import asks. */
static inline bool worker_root_gone_lazy_at(shmsync_worker *w, int64_t now)
{
	if (w->dead)
		return true;
	if (now - w->gone_checked < GONE_CHECK_NS)
		return false;
	w->gone_checked = now;
	return worker_root_gone(w);
}

static inline bool worker_root_gone_lazy(shmsync_worker *w)
{
	return w->dead || worker_root_gone_lazy_at(w, sig_now_ns());
}

#endif
