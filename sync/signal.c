/* Signalling primitives: plain futex system calls, and futex operations on
 * io_uring (kernel 6.7+), chosen at run time.
 *
 * Never FUTEX_PRIVATE_FLAG: the words live in shared memory and the waiter
 * and the waker are different processes.
 */
#include <errno.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sig.h"

int64_t sig_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int sig_futex_wait(const _Atomic uint32_t *word, uint32_t val, int64_t timeout_ns)
{
	struct timespec ts, *tp = NULL;
	if (timeout_ns >= 0) {
		ts.tv_sec = timeout_ns / 1000000000;
		ts.tv_nsec = timeout_ns % 1000000000;
		tp = &ts;
	}
	long rc = syscall(SYS_futex, (const uint32_t *)word, FUTEX_WAIT, val, tp, NULL, 0);
	return rc < 0 ? -errno : 0;
}

int sig_futex_wake(_Atomic uint32_t *word, int n)
{
	long rc = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
	return rc < 0 ? -errno : (int)rc;
}

void sig_prep_futex_wait(struct io_uring_sqe *sqe, const _Atomic uint32_t *word, uint32_t val)
{
	/* liburing before 2.5 has no io_uring_prep_futex_wait: the same fields
	 * by hand (fd: futex2 flags, addr: the word, off: the value, addr3: the
	 * bitset mask). */
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_FUTEX_WAIT;
	sqe->fd = (int)SHM_FUTEX2_SIZE_U32;
	sqe->addr = (uint64_t)(uintptr_t)word;
	sqe->off = val;
	sqe->addr3 = SHM_FUTEX_BITSET_MATCH_ANY;
}

bool sig_uring_futex_supported(void)
{
	struct io_uring ring;
	if (io_uring_queue_init(2, &ring, 0) < 0)
		return false;
	struct io_uring_probe *p = io_uring_get_probe_ring(&ring);
	bool ok = p && io_uring_opcode_supported(p, IORING_OP_FUTEX_WAIT) &&
		  io_uring_opcode_supported(p, IORING_OP_POLL_ADD);
	if (p)
		io_uring_free_probe(p);
	io_uring_queue_exit(&ring);
	return ok;
}

int sig_choose(int *path, char *msg, size_t msglen)
{
	const char *env = getenv("SHMSYNC_SIGNAL");
	if (env && *env) {
		if (strcmp(env, "futex") == 0) {
			*path = SIG_FUTEX;
			return 0;
		}
		if (strcmp(env, "uring") != 0) {
			snprintf(msg, msglen, "SHMSYNC_SIGNAL=\"%.32s\": expected \"uring\" or \"futex\"",
				 env);
			return -EINVAL;
		}
		if (!sig_uring_futex_supported()) {
			snprintf(
				msg, msglen,
				"SHMSYNC_SIGNAL=uring, but io_uring futex waits are unavailable here (kernel "
				"< 6.7, io_uring_disabled or seccomp): unset it to fall back to futex");
			return -EOPNOTSUPP;
		}
		*path = SIG_URING;
		return 0;
	}
	*path = sig_uring_futex_supported() ? SIG_URING : SIG_FUTEX;
	return 0;
}
