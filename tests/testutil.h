/* Helpers shared by the test programs: each test is one program that exits 0
 * on success, 77 when the machine lacks something it needs, 1 on failure. */
#ifndef SHMSYNC_TESTUTIL_H
#define SHMSYNC_TESTUTIL_H

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define T_SKIP 77

#define T_FAIL(...)                                                                                          \
	do {                                                                                                 \
		fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);                                        \
		fprintf(stderr, __VA_ARGS__);                                                                \
		fputc('\n', stderr);                                                                         \
		exit(1);                                                                                     \
	} while (0)

#define T_ASSERT(cond)                                                                                       \
	do {                                                                                                 \
		if (!(cond))                                                                                 \
			T_FAIL("assertion failed: %s", #cond);                                               \
	} while (0)

/* A check that goes on after it fails, so one run shows every hole: says
 * why as T_FAIL does and counts the failure in `fails`. */
#define T_CHECK(fails, cond, ...)                                                                            \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);                                \
			fprintf(stderr, __VA_ARGS__);                                                        \
			fputc('\n', stderr);                                                                 \
			(fails)++;                                                                           \
		}                                                                                            \
	} while (0)

/* Checks a call that returns 0 or a negative errno. */
#define T_OK(expr)                                                                                           \
	do {                                                                                                 \
		long long t_rc_ = (long long)(expr);                                                         \
		if (t_rc_ < 0)                                                                               \
			T_FAIL("%s returned %lld (%s)", #expr, t_rc_, strerror((int)-t_rc_));                \
	} while (0)

/* Checks a call returns exactly `want`. */
#define T_EQ(expr, want)                                                                                     \
	do {                                                                                                 \
		long long t_got_ = (long long)(expr), t_want_ = (long long)(want);                           \
		if (t_got_ != t_want_)                                                                       \
			T_FAIL("%s == %lld, expected %lld", #expr, t_got_, t_want_);                         \
	} while (0)

/* A seed from $SHMSYNC_TEST_SEED or the given default; printed so a failure
 * can be replayed. */
unsigned long long t_seed(unsigned long long dflt);

/* xorshift64*: deterministic, good enough for test workloads. */
unsigned long long t_rand(unsigned long long *state);

/* Waits for the child pid; fails the test, naming what, unless it exited 0. */
void t_wait_ok(pid_t pid, const char *what);

#endif
