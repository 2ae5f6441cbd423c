/* shmsync against its peers (LMDB, Redis, SQLite) and the hardware floor:
 * what every backend implements and the helpers they share.
 *
 * One program, shmsync_peers, measures one system per run (--system). The
 * driver (peers.c) forks the processes of each workload, pins them with
 * sched_setaffinity and coordinates them through a shared anonymous mapping;
 * each child opens its own connection to the system (a worker attach, an
 * LMDB environment, a SQLite connection, a hiredis context), because none of
 * these handles may cross a fork. Servers (shmsync serve, redis-server) are
 * started by the driver with fork + exec and stopped by pid.
 */
#ifndef SHMSYNC_PEERS_H
#define SHMSYNC_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KEY_LEN 9  /* "k%08u" */
#define VAL_LEN 64 /* bytes 0-7: a tag or sequence number, 8-11: the key's id, then filler */
#define MAX_PROCS 2

enum role {
	ROLE_SETUP,
	ROLE_WRITER,
	ROLE_READER,
	ROLE_CHECK,  /* a reader that pins nothing until it looks */
	ROLE_PROP_A, /* publishes id 0, awaits id 1 */
	ROLE_PROP_B, /* awaits id 0, publishes id 1 */
	ROLE_CHURN_WRITER,
	ROLE_CHURN_READER,
	ROLE_MEM,
};

enum wait_mode { WAIT_POLL = 1, WAIT_SLEEP = 2 };

struct cfg {
	const char *tmpdir; /* on tmpfs: sockets, database files */
	const char *shmsync_tool;
	const char *redis_server;
	const char *capacity; /* shmsync serve --capacity */
	unsigned nkeys;
	int cpu[2];        /* cpu[1] is the server's when there is one */
	pid_t server_pid;  /* 0: none running */
	char sock[108];    /* the server's socket */
	char version[128]; /* the system's version, filled by fresh() */
};

/* The memory figure of a system plus what it is made of. */
struct mem {
	uint64_t bytes; /* the headline figure (see each backend's durability note) */
	uint64_t detail[6];
	const char *detail_name[6];
};

struct conn;

struct backend {
	const char *name;
	const char *durability; /* recorded in every JSON document */
	const char *memory;     /* what mem() reports */
	bool server;            /* a server process sits on every path */
	bool poll, sleep;       /* propagation modes it is measured in */
	bool snapshots;         /* a reader can hold a snapshot */
	/* Driver side: a new empty store (restarting the server, or
	 * recreating the files). 0 or -1 (message printed). */
	int (*fresh)(struct cfg *c);
	void (*stop)(struct cfg *c);
	/* Process side; NULL with a message on failure. */
	struct conn *(*open)(const struct cfg *c, enum role r);
	void (*close)(struct conn *x);
	/* Every function below returns 0, or -1 after printing why. */
	/* Writes ids as one batch / transaction; committed on return. *token
	 * lets a reader wait for it (shmsync: the tick; others: 0). */
	int (*put_batch)(struct conn *x, const uint32_t *ids, size_t n, uint64_t tag, uint64_t *token);
	/* Makes everything up to token visible to this reader. */
	int (*sync_to)(struct conn *x, uint64_t token);
	/* Brackets a run of gets at one snapshot / read transaction. */
	int (*snap_begin)(struct conn *x);
	int (*snap_end)(struct conn *x);
	/* 1 found (value copied to out), 0 absent, -1 error. */
	int (*get)(struct conn *x, uint32_t id, uint8_t *out);
	/* Propagation: write id with seq in its value; wait until id holds a
	 * seq >= seq (yield: the other side shares this CPU). */
	int (*publish)(struct conn *x, uint32_t id, uint64_t seq);
	int (*await)(struct conn *x, uint32_t id, uint64_t seq, enum wait_mode m, bool yield);
	/* One churn step, atomic: create directory `create` with `keys`
	 * keys, and delete directory `drop` (if >= 0) with all its keys. */
	int (*churn)(struct conn *x, long create, long drop, unsigned keys);
	/* Reclaim what the system reclaims on request, then measure. */
	int (*mem)(struct conn *x, struct mem *m, bool settle);
	/* Take / let go of a read snapshot (no-ops where there are none). */
	int (*hold)(struct conn *x);
	int (*release)(struct conn *x);
};

extern const struct backend be_shmsync, be_lmdb, be_redis, be_sqlite;

/* ---- helpers (common.c) -------------------------------------------------- */

void key_of(uint32_t id, char *k);                  /* KEY_LEN bytes, no NUL */
void dir_prefix(long dir, char *p);                 /* "c%06ld/": 8 bytes, no NUL */
void val_of(uint32_t id, uint64_t tag, uint8_t *v); /* VAL_LEN bytes */
uint64_t val_tag(const uint8_t *v);
uint32_t val_id(const uint8_t *v);
uint64_t now_ns(void);
/* Between two polls: give the CPU to the other side when it shares it,
 * otherwise a pause instruction. */
void poll_pause(bool yield);
/* Forks and execs argv pinned to cpu, with stdout to /dev/null; the child
 * dies with the driver (PR_SET_PDEATHSIG). Returns the pid or -1. */
pid_t spawn_server(char *const argv[], int cpu);
/* SIGTERM, then SIGKILL after 10 s; reaps it. Returns its wait status. */
int stop_server(pid_t pid, const char *what);
/* Deadline for waits that would otherwise hang on a dead peer. */
#define WAIT_LIMIT_NS (60ull * 1000000000ull)

#endif
