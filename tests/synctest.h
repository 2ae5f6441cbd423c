/* Helpers for the multi-process tests: a root in its own process, workers
 * in others, all forked from a test parent that never holds the root. */
#ifndef SHMSYNC_SYNCTEST_H
#define SHMSYNC_SYNCTEST_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmsync.h"
#include "testutil.h"

/* The root's socket: /tmp/shmsync-test-<pid>.sock unless the test names one
 * before the first st_start_root. */
extern char st_sock[108];

/* SIGTERM in a root's child: exit 0 at once. */
void st_on_term(int sig);

/* The root's child: opens a root on st_sock with base's options (256 MiB
 * unless it names a capacity) and runs it until SIGTERM, then exits 0 (3:
 * it did not open, 4: its loop failed). Never returns. */
_Noreturn void st_root_child(const shmsync_root_opts *base);

/* Starts a root serving st_sock in a child; returns its pid once the
 * socket exists. The root exits 0 on SIGTERM. */
pid_t st_start_root(const shmsync_root_opts *base);

/* Waits for a child; returns its exit code, or 128 + the signal. */
int st_wait(pid_t pid);

/* SIGTERM to the root; it must exit 0. */
void st_stop_root(pid_t pid);

/* Attaches to st_sock; the test fails with the library's message if not. */
shmsync_worker *st_attach(void);

/* A bare connection to the root's socket, as an attach opens it (a 5 s
 * receive timeout), for the tests that speak the protocol themselves. */
int st_connect_raw(void);

/* Exports one batch and waits for its commit; returns the tick or the
 * batch's error. */
int64_t st_commit(shmsync_batch *b);

/* Attaches, builds one batch with fill(b, arg), commits it (the test fails
 * unless it commits) and detaches: the body of the tests' setup children. */
void st_fill_commit(void (*fill)(shmsync_batch *b, void *arg), void *arg);

/* The signal path the test runs on, for its first line: $SHMSYNC_SIGNAL,
 * or "default". */
const char *st_signal_name(void);

/* CLOCK_MONOTONIC in seconds. */
double st_now(void);

#endif
