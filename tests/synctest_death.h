/* Process plumbing for the multi-process tests that kill things: a registry
 * of the children the test parent forked (the root included), killed with
 * SIGKILL when the parent fails or its alarm fires, so a failing or hung
 * test never leaves a root or a worker behind; a shared page for the
 * processes to report to each other; a monotonic clock in nanoseconds that
 * means the same in every process.
 *
 * Use: sd_init(seconds) first thing in main; sd_fork() for every child;
 * sd_track(pid) for children forked elsewhere (st_start_root); sd_reap(pid)
 * once a child is waited for. */
#ifndef SHMSYNC_SYNCTEST_DEATH_H
#define SHMSYNC_SYNCTEST_DEATH_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "synctest.h"
#include "testutil.h"

#define SD_MAX_KIDS 256

/* The test's parent (sd_init): a child compares getpid() with it. */
extern pid_t sd_parent;

/* First thing in main: the test's time limit (SIGALRM kills the children
 * and fails), the children killed at exit, stdout line-buffered. */
void sd_init(unsigned seconds);

/* Registers a child forked elsewhere (st_start_root). */
void sd_track(pid_t pid);

/* fork(), registering the child; the child dies with the parent, so a
 * parent killed from outside leaves nothing behind either. */
pid_t sd_fork(void);

/* Forgets a child that was waited for. */
void sd_untrack(pid_t pid);

/* Waits for a child; returns its exit code, or 128 + the signal. */
int sd_reap(pid_t pid);

/* A zeroed page (or more) shared by the parent and every child forked
 * after it. */
void *sd_shared(size_t size);

/* CLOCK_MONOTONIC in nanoseconds: the same in every process. */
int64_t sd_now_ns(void);

/* Sleeps ns, through signals. */
void sd_sleep_ns(int64_t ns);

/* /proc/loadavg's line, for a time bound that fails: was the machine busy
 * with other work? ("?" if it cannot be read.) */
const char *sd_loadavg(void);

/* st_start_root, tracked: killed if the test fails. (The socket appears
 * only once the root listens, so a worker may attach at once.) */
pid_t sd_start_root(const shmsync_root_opts *o);

/* The state a test starts from: a child attaches, builds one batch with
 * fill(b, arg) and commits it; the test fails unless the commit succeeded. */
void sd_setup_batch(void (*fill)(shmsync_batch *b, void *arg), void *arg);

/* The 8-byte counter /d/c of the kill tests, read at w's snapshot; fails
 * the test with "<who>get /d/c: <error>" if it cannot be read. */
int64_t sd_read_counter(shmsync_worker *w, const char *who);

/* ---- a monitor worker ------------------------------------------------- */

/* The figures a monitor worker publishes in the shared page, and its
 * counter requests. Part of the test's own shared struct. */
struct sd_monitor {
	/* what it last read with shmsync_stat */
	_Atomic uint64_t iter, tick, bytes;
	_Atomic unsigned workers;
	_Atomic unsigned watch_below; /* stamp drop_ns when workers < this */
	_Atomic int64_t drop_ns;
	_Atomic int cmd, done; /* read the counter: cmd = n, done when done = n */
	_Atomic int64_t counter;
};

/* The monitor's body, in a child, until *stop: publishes the root's figures
 * as fast as it usefully can, stamps the moment the worker count drops
 * below watch_below, and reads the counter on demand with read (which
 * brings the worker online at the published tick). Offline except while it
 * reads, so it pins nothing. Returns the child's exit code. */
int sd_monitor_run(struct sd_monitor *m, _Atomic int *stop, int64_t (*read)(shmsync_worker *w));

/* Waits for a fresh reading (two full iterations after now). */
void sd_monitor_fresh(struct sd_monitor *m);

/* Asks the monitor to read the counter; returns what it read. */
int64_t sd_monitor_counter(struct sd_monitor *m);

/* The root's bytes_in_use once it held still for still_ns. */
uint64_t sd_monitor_stable_bytes(struct sd_monitor *m, int64_t still_ns, int64_t timeout_ns);

/* Polls cond every ~50 us until it holds or timeout_ns passes; ok (a
 * bool) says which. */
#define SD_WAIT(ok, cond, timeout_ns)                                                                        \
	do {                                                                                                 \
		int64_t sd_end_ = sd_now_ns() + (timeout_ns);                                                \
		while (!((ok) = (cond)) && sd_now_ns() < sd_end_)                                            \
			sd_sleep_ns(50000);                                                                  \
	} while (0)

#endif
