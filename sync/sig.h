/* Signalling (signal.c): which path this process waits on, futex waits and
 * wakes, directly or through io_uring, and the clock. */
#ifndef SHMSYNC_SIG_H
#define SHMSYNC_SIG_H

#include <liburing.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The two paths, as the welcome names the root's (struct welcome). */
enum { SIG_URING = 1, SIG_FUTEX = 2 };

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
/* Waits only read the word: a worker's is in its read-only mapping. */
void sig_prep_futex_wait(struct io_uring_sqe *sqe, const _Atomic uint32_t *word, uint32_t val);
int sig_futex_wait(const _Atomic uint32_t *word, uint32_t val, int64_t timeout_ns);
int sig_futex_wake(_Atomic uint32_t *word, int n);
int64_t sig_now_ns(void);

#endif
