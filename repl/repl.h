/* Replication through NATS JetStream: the root's ticks as a stream of
 * records (docs/ARCHITECTURE.md, "Replication").
 *
 * The root (sync/root_repl.c) owns one struct repl. It calls in from its
 * own thread only; libnats calls back on its threads, which never touch the
 * root: they queue events (struct repl_ev) and write the root's wake eventfd.
 * The snapshot writer and the lease keeper are threads of this module; they
 * touch the root only through their own read-only mapping of the segment
 * and one atomic word (the snapshot's pinned epoch).
 *
 * What goes to the stream NAME (every payload starts with struct repl_hdr):
 *   NAME.ticks             one message per tick, its id the tick: the batches
 *                          the leader applied in it, as wire records (sync/wire.h),
 *                          in order; and LEADER markers (a new leader's first
 *                          append, which fences the one before).
 *   NAME.snapchunk.<p>.<i> chunk i of a snapshot of parity p (0, 1): every
 *                          directory and key at its tick. Each subject is rolled
 *                          up (one message kept), and snapshots alternate
 *                          parities, so writing one never touches the chunks of
 *                          the one the index names.
 *   NAME.snapidx           the latest whole snapshot: its tick, parity, chunks
 *                          and where the ticks after it start (rolled up).
 * Batches a follower's workers export go to the leader as core NATS requests
 * on _shmsync.NAME.fwd; the reply is the leader's tick, or an errno.
 * Leadership is the key "leader" of the KV bucket shmsync_NAME (a TTL lease).
 */
#ifndef SHMSYNC_REPL_H
#define SHMSYNC_REPL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm.h"

#define REPL_MAGIC "shmsyncR"
#define REPL_FORMAT 1u
#define REPL_NAME_MAX 64 /* a stream name: [A-Za-z0-9_-] */

enum repl_kind {
	REPL_TICK = 1,   /* count wire records: u32 length, the record, padding to 8 */
	REPL_LEADER,     /* a new leader's first append; body: its id */
	REPL_SNAP_CHUNK, /* count snapshot records (struct repl_snaprec) */
	REPL_SNAP_IDX,   /* no body */
};

/* 56 bytes, little-endian (the only byte order shmsync runs on). */
struct repl_hdr {
	char magic[8];
	uint32_t format; /* REPL_FORMAT */
	uint32_t layout; /* SHM_LAYOUT_VERSION of the writer */
	uint32_t kind;   /* enum repl_kind */
	uint32_t count;
	uint64_t tick; /* TICK: its tick; LEADER: the last tick before it; SNAP_*: the snapshot's */
	uint64_t a;    /* TICK: the leader's change-log size; SNAP_CHUNK: its index; SNAP_IDX: the
			  chunks' parity */
	uint64_t b;    /* SNAP_IDX: chunks */
	uint64_t c;    /* SNAP_IDX: the stream sequence of the snapshot's tick: replay after it */
};

struct repl_snaprec {
	uint8_t type; /* 1: directory, 2: key */
	uint8_t reserved0;
	uint16_t dir_len;
	uint32_t key_len;
	uint32_t value_len;
	uint32_t reserved1;
	uint64_t tick; /* a key's version tick */
		       /* dir, key, value, padding to 8 */
};

/* A snapshot's index (the NAME.snapidx message). */
struct repl_snapidx {
	uint64_t tick;   /* the state at this tick */
	uint64_t parity; /* its chunks are NAME.snapchunk.<parity>.<i> */
	uint64_t chunks;
	uint64_t tick_seq; /* the stream sequence of tick `tick`'s message: replay after it */
};

/* Checks a payload's header: -EPROTO if it is not shmsync's (names why in
 * msg), -EPROTONOSUPPORT for another format or layout version. */
int repl_hdr_check(const void *data, size_t len, struct repl_hdr *h, char *msg, size_t msglen);
void repl_hdr_fill(struct repl_hdr *h, uint32_t kind, uint32_t count, uint64_t tick, uint64_t a, uint64_t b,
		   uint64_t c);
/* The next wire record of a TICK body at *pos: 0 and (rec, len), 1 at the
 * end, -EPROTO if the framing is off. */
int repl_tick_next(const uint8_t *body, size_t len, size_t *pos, const uint8_t **rec, size_t *rec_len);
/* Decodes a SNAP_CHUNK body into ops (MKDIR, LOAD) pointing into it.
 * -EPROTO on bad framing, -E2BIG when more than max_ops. */
int repl_chunk_decode(const uint8_t *body, size_t len, uint32_t count, struct shm_op *ops, size_t max_ops,
		      size_t *nops);

/* ---- the NATS side (repl/nats.c) ------------------------------------- */

struct repl;

struct repl_opts {
	const char *urls;   /* nats://host:port[,nats://...] */
	const char *stream; /* [A-Za-z0-9_-]{1,64} */
	bool follow;        /* start as a follower (else lead) */
	bool durable;
	unsigned replicas;       /* when this root creates the stream: 1..5 */
	int64_t lease_ns;        /* the leader lease's TTL */
	uint64_t snapshot_ticks; /* a snapshot after this many ticks ... */
	uint64_t snapshot_bytes; /* ... or this many bytes of ticks */
	unsigned window;         /* ticks published and not yet stored */
	int wake_fd;             /* written when an event is queued */
	const char *id;          /* the name in the lease; NULL: host:pid:random */
};

enum repl_ev_kind {
	REPL_EV_TICK = 1,  /* follower: a NAME.ticks message (data, seq) */
	REPL_EV_FWD,       /* leader: a forwarded batch (data) to apply, answer to `reply` */
	REPL_EV_FWD_REPLY, /* follower: the leader's answer to forward `id`: result (tick or -errno) */
	REPL_EV_STORED,    /* leader: JetStream stored ticks up to `tick` */
	REPL_EV_DEPOSED,   /* leader: another root leads now (msg says how we know) */
	REPL_EV_PROMOTE,   /* follower: we hold the lease now: take over */
	REPL_EV_FATAL,     /* the stream cannot be followed any more (msg) */
	REPL_EV_RESYNC,    /* leader: an append failed: call repl_resync */
};

struct repl_ev {
	struct repl_ev *next;
	int kind;
	uint64_t seq, tick, id;
	int64_t result;
	uint8_t *data;
	size_t len;
	char *reply;
	char msg[200];
};

struct repl_stats {
	int role; /* 1 leader, 2 follower */
	uint64_t published_tick, stored_tick, lag_bytes, applied_seq, last_seq;
};

/* Connects, checks the stream (creating it when leading and it is absent)
 * and the lease bucket. msg says what failed and what to do. */
int repl_open(struct repl **rp, const struct repl_opts *o, char *msg, size_t msglen);
void repl_close(struct repl *rp);

/* The latest whole snapshot: 0, -ENOENT when there is none. */
int repl_snapshot_latest(struct repl *rp, struct repl_snapidx *idx, char *msg, size_t msglen);
/* Calls fn for each chunk's payload in order. */
int repl_snapshot_read(struct repl *rp, const struct repl_snapidx *idx,
		       int (*fn)(const uint8_t *data, size_t len, void *arg), void *arg, char *msg,
		       size_t msglen);
/* The stream's last sequence now. */
int repl_last_seq(struct repl *rp, uint64_t *seq, char *msg, size_t msglen);
/* The stream sequence of the last message on NAME.ticks (0: none). */
int repl_last_tick_seq(struct repl *rp, uint64_t *seq, char *msg, size_t msglen);
/* Starts delivering NAME.ticks messages after stream sequence `after` as
 * REPL_EV_TICK events. */
int repl_ticks_follow(struct repl *rp, uint64_t after, char *msg, size_t msglen);
void repl_ticks_stop(struct repl *rp);

/* Events in the order they were queued; NULL if none. repl_wait blocks up
 * to timeout_ns for one. */
struct repl_ev *repl_poll(struct repl *rp);
struct repl_ev *repl_wait(struct repl *rp, int64_t timeout_ns);
bool repl_has_events(struct repl *rp);
void repl_ev_free(struct repl_ev *ev);

/* Leading: takes the lease (-EBUSY, naming the holder, if another has it),
 * fences the stream with a LEADER marker after sequence `last_seq` (the
 * last one this root applied; -ESTALE if the stream moved on), then keeps
 * the lease and takes forwarded batches. */
int repl_lead(struct repl *rp, uint64_t tick, uint64_t last_seq, char *msg, size_t msglen);
/* Publishes tick's message asynchronously; -EAGAIN when the window is
 * full (publish nothing more until REPL_EV_STORED). */
int repl_publish_tick(struct repl *rp, uint64_t tick, const uint8_t *payload, size_t len);
bool repl_window_full(struct repl *rp);
/* After REPL_EV_RESYNC: republishes this root's unstored ticks after what
 * the stream holds (0), or finds another root's append there (-ESTALE: we
 * were deposed), or -EAGAIN (the cluster did not answer: try again). */
int repl_resync(struct repl *rp, char *msg, size_t msglen);
int repl_reply(struct repl *rp, const char *reply, int64_t result);
/* Following: looks for the lease to lapse (REPL_EV_PROMOTE) and sets up
 * forwarding. */
int repl_follow(struct repl *rp, char *msg, size_t msglen);
/* Sends a worker's batch record to the leader: its answer comes as
 * REPL_EV_FWD_REPLY with this id. `epoch` is the stream sequence of the
 * last LEADER marker this root applied: a leader of another epoch does not
 * apply it. `floor` is the lowest id this root still sends: every id below
 * it was answered or given up, and a leader that never got one skips it
 * (the reply subject is <inbox>.<epoch>.<floor>.<id>). Sent again with the
 * same id and epoch, it is applied at most once. */
int repl_forward(struct repl *rp, uint64_t epoch, uint64_t floor, uint64_t id, const uint8_t *rec,
		 size_t len);
/* Leader: the stream sequence of its own LEADER marker. */
uint64_t repl_epoch(struct repl *rp);

/* Takes a snapshot of the state at `tick` in a thread of its own, reading
 * through a read-only mapping of seg_fd (the caller keeps the fd); `pin`
 * holds tick until the snapshot is written (then UINT64_MAX). 0, or
 * -EBUSY while one is still being written. */
int repl_snapshot_start(struct repl *rp, int seg_fd, uint64_t tick, _Atomic uint64_t *pin);
/* Should a snapshot be taken now (ticks or bytes since the last)? */
bool repl_snapshot_due(struct repl *rp);

void repl_stats(struct repl *rp, struct repl_stats *st);
const char *repl_id(const struct repl *rp);

#endif
