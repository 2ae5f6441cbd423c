/* Op builders for the tests of the shm layer (test_index, test_log,
 * test_reclaim): struct shm_op values for shm_apply. Strings are taken as
 * they are (their length, no NUL); nothing is copied. Compiled once, from
 * support/shmtest.c, into shmsync_shmtest, which brings the static library
 * and its internal headers. */
#ifndef SHMSYNC_SHMTEST_H
#define SHMSYNC_SHMTEST_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"

struct shm_op op_put(const char *dir, const void *k, size_t kn, const void *v, size_t vn);
struct shm_op op_puts(const char *dir, const char *k, const char *v);
/* A DEL, MKDIR or RMDIR (k NULL for the directory ones), or the start of
 * another kind the caller completes. */
struct shm_op op_kind(int kind, const char *dir, const char *k);
struct shm_op op_mkdir(const char *dir);
struct shm_op op_rmdir(const char *dir);
struct shm_op op_del(const char *dir, const char *k);
struct shm_op op_add(const char *dir, const char *k, int64_t delta);
struct shm_op op_if_absent(const char *dir, const char *k, const char *v);
struct shm_op op_if_tick(const char *dir, const char *k, const char *v, uint64_t expected);

/* Applies ops as one batch and publishes it as one tick of root; fails the
 * test if the batch is rejected. Returns the new tick. */
uint64_t commit_ops(struct shm_root *root, const struct shm_op *ops, size_t n);

#endif
