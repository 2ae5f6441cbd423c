/* The supervisor's internals, shared by its master (supervise.c) and the
 * code that runs in a child right after fork (supervise_child.c). Internal
 * to the library (not exported): no shmsync_ prefix.
 */
#ifndef SHMSYNC_WORKERS_SUPERVISE_H
#define SHMSYNC_WORKERS_SUPERVISE_H

#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "shmsync.h"

#define MS 1000000LL
#define SEC 1000000000LL
#define BACKOFF_MIN_NS (100 * MS)
#define BACKOFF_MAX_NS (5 * SEC)
#define BACKOFF_RESET_NS (10 * SEC) /* a child that ran this long starts over at the minimum */
#define ROOT_START_NS (30 * SEC)    /* from fork to a root that answers on its socket */
#define PROBE_EVERY_NS (10 * MS)
#define ATTACH_WAIT_NS (10 * SEC) /* SIGHUP: how long a replacement may take to attach */
#define ATTACH_POLL_NS (20 * MS)
#define MAX_CRASH_LIMIT 64
#define MAX_WORKERS 4096
#define SOCK_MAX 92 /* the root's limit on socket_path, terminator included */

/* One child process. */
struct proc {
	pid_t pid; /* 0: none */
	int pidfd;
	int64_t started;
	int64_t kill_at;   /* SIGTERM sent: SIGKILL at this time (0: not yet asked to stop) */
	bool kill_sent;    /* SIGKILL sent */
	bool expected;     /* we stopped it: its exit is not a crash */
	bool placed_group; /* it leads its own process group: signal the group */
};

/* A worker slot, or the root: what runs there and its crash history. */
struct slot {
	struct proc cur;
	struct proc old; /* SIGHUP: the worker being replaced */
	int64_t start_at;
	int64_t backoff;
	int64_t crash_at[MAX_CRASH_LIMIT]; /* a ring of crash times */
	unsigned ncrash;
	bool done;   /* exited 0, or crash-looped: not started again */
	bool looped; /* crash-looped */
	unsigned starts;
};

enum root_state { ROOT_DOWN, ROOT_STARTING, ROOT_SERVING };
enum phase { RUN, STOP_WORKERS, STOP_ROOT, DONE };
enum hup_stage { H_NEXT, H_WAIT_NEW, H_WAIT_OLD };

/* What the root child says on its control socket once it has opened the
 * root (rc 0) or failed to (rc < 0, and why). */
struct root_hello {
	int32_t rc;
	char msg[240];
};

/* What the master sends the root child whenever a count changes: totals,
 * so a message that did not fit (the master never blocks on it) is made up
 * by the next. */
struct sup_counts {
	uint64_t root_restarts, worker_restarts;
};

struct sup {
	shmsync_supervise_opts o; /* with the defaults filled in */
	shmsync_root_opts ro;
	shmsync_worker_fn fn;
	void *arg;
	unsigned n;
	pid_t master;
	char sock[SOCK_MAX + 16]; /* room for the private directory's name: checked */
	char dir[SOCK_MAX];       /* the private directory, if we made one */
	int sigfd;
	sigset_t oldmask;
	struct sigaction old_chld;
	bool chld_changed;

	struct slot root;
	enum root_state root_state;
	int root_ctl; /* the master's end of the root child's control socket */
	int64_t root_deadline, probe_at;
	bool root_first; /* the first root: a failure to open is returned, not retried */
	char root_msg[240];

	struct slot *w;
	enum phase phase;
	int result;
	bool room; /* SIGHUP may run one worker more than n */

	bool hup;
	unsigned hup_at;
	enum hup_stage hup_stage;
	int64_t hup_deadline, hup_poll_at;

	uint64_t root_restarts, worker_restarts;
	struct pollfd *pfd;
	struct proc **pfd_proc; /* the child each pidfd entry of pfd belongs to */
};

/* Logs through the caller's log hook, else to stderr (supervise.c). */
void sup_log(struct sup *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Forks one child and opens its pidfd at once (before it is reaped, its pid
 * cannot be reused). root: the root child, else worker index. 0 or a
 * negative errno (supervise_child.c). */
int sup_spawn(struct sup *s, struct proc *p, bool root, unsigned index, int64_t now);

#endif
