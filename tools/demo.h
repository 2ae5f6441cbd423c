/* Shared by the parts of `shmsync demo`: demo.c (options, the parent's
 * orchestration, the report), demo_worker.c (a worker's load) and
 * demo_replica.c (the replica each worker builds from the change feed, and
 * the snapshot it is checked against). The parent and the workers meet in
 * one anonymous shared mapping, struct shared. */
#ifndef SHMSYNC_TOOL_DEMO_H
#define SHMSYNC_TOOL_DEMO_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "shmsync.h"

#define MAX_WORKERS 256
#define SAMPLES 8192    /* propagation samples kept per worker (reservoir) */
#define WINDOW 8        /* batches a worker has in flight */
#define MAX_OPS 16      /* per batch */
#define SHARED_KEYS 256 /* /demo/shared/k000.. */
#define COUNTERS 16     /* /demo/counters/c00.. */
#define OWN_MAX 256     /* live keys in a worker's own directory */
#define SESSIONS_MAX 4  /* live session directories per worker */
#define WAIT_NS 10000000000LL
#define PHASE_TIMEOUT_S 30.0

extern const char SHARED[];       /* "/demo/shared/" */
extern const char COUNTERS_DIR[]; /* "/demo/counters/" */

enum phase {
	PH_SETUP,    /* workers attach and create their directories */
	PH_BASELINE, /* worker 0 records the statistics at start */
	PH_RUN,      /* the load */
	PH_STOP,     /* stop writing, report the last tick */
	PH_CONVERGE, /* import until final_tick, hash, report */
	PH_SETTLE,   /* everyone offline; worker 0 waits for reclamation, records the end */
	PH_EXIT,     /* detach and exit */
};

/* Failed sorts below every other state, so no wait mistakes it for progress. */
enum wstate { WS_FAILED = -1, WS_STARTING, WS_READY, WS_STOPPED, WS_CONVERGED };

struct wres {
	_Atomic int state;
	_Atomic uint64_t commits, updates, last_tick;
	/* Written before the state moves on (release), read after (acquire). */
	uint64_t published_at_stop;
	uint64_t dels, rmdirs, imports, resets, changes;
	int64_t delta_sum;
	uint64_t final_cursor, snap_hash, replica_hash, ndirs, nkeys;
	int64_t counter_sum;
	uint64_t nseen, nsamples;
	int64_t samples[SAMPLES];
	char err[256];
};

struct shared {
	_Atomic int phase;
	_Atomic int baseline_done, settle_done;
	uint64_t final_tick;
	uint64_t bytes_start, bytes_end, tomb_start, tomb_end, reclaimed_start, reclaimed_end, capacity;
	char root_signal[8], worker_signal[8];
	struct wres w[];
};

struct opts {
	unsigned workers;
	double seconds;
	const char *socket;
	size_t capacity;
};

/* The mapping every process shares (made by the parent before any fork). */
extern struct shared *sh;
extern pid_t parent_pid;

static inline void sleep_ns(int64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static inline uint64_t get_le64(const void *p)
{
	const uint8_t *b = p;
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}

/* ---- the replica (demo_replica.c) ------------------------------------------ */

struct rkey {
	uint8_t *k;
	size_t kn;
	uint64_t vh; /* hash of the value */
};

struct rdir {
	char *name;
	struct rkey *keys;
	size_t n, cap;
};

struct replica {
	struct rdir *dirs;
	size_t n, cap;
	bool oom;
};

void rep_put(struct replica *r, const char *dir, const void *k, size_t kn, uint64_t vh);
void rep_del(struct replica *r, const char *dir, const void *k, size_t kn);
void rep_mkdir(struct replica *r, const char *dir);
void rep_rmdir(struct replica *r, const char *dir);
void rep_clear(struct replica *r);
/* A hash of the whole replica, and how many keys it has. */
uint64_t rep_hash(const struct replica *r, uint64_t *nkeys);
/* The whole state at the worker's snapshot, into r. */
int read_snapshot(shmsync_worker *w, struct replica *r, int64_t *counter_sum);

/* ---- a worker (demo_worker.c) ---------------------------------------------- */

/* The worker with index id, attached at socket; returns its exit status. */
int worker_main(unsigned id, const char *socket);

#endif
