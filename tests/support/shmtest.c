/* shmtest.h: op builders and a one-batch commit for the shm-layer tests. */
#include <stdint.h>
#include <string.h>

#include "shmtest.h"
#include "testutil.h"

struct shm_op op_put(const char *dir, const void *k, size_t kn, const void *v, size_t vn)
{
	struct shm_op o = {.kind = SHM_OP_PUT,
			   .dir = dir,
			   .dir_len = strlen(dir),
			   .key = k,
			   .key_len = kn,
			   .value = v,
			   .value_len = vn};
	return o;
}

struct shm_op op_puts(const char *dir, const char *k, const char *v)
{
	return op_put(dir, k, strlen(k), v, strlen(v));
}

struct shm_op op_kind(int kind, const char *dir, const char *k)
{
	struct shm_op o = {
		.kind = kind, .dir = dir, .dir_len = strlen(dir), .key = k, .key_len = k ? strlen(k) : 0};
	return o;
}

struct shm_op op_mkdir(const char *dir)
{
	return op_kind(SHM_OP_MKDIR, dir, NULL);
}

struct shm_op op_rmdir(const char *dir)
{
	return op_kind(SHM_OP_RMDIR, dir, NULL);
}

struct shm_op op_del(const char *dir, const char *k)
{
	return op_kind(SHM_OP_DEL, dir, k);
}

struct shm_op op_add(const char *dir, const char *k, int64_t delta)
{
	struct shm_op o = op_kind(SHM_OP_ADD, dir, k);
	o.delta = delta;
	return o;
}

struct shm_op op_if_absent(const char *dir, const char *k, const char *v)
{
	struct shm_op o = op_puts(dir, k, v);
	o.kind = SHM_OP_PUT_IF_ABSENT;
	return o;
}

struct shm_op op_if_tick(const char *dir, const char *k, const char *v, uint64_t expected)
{
	struct shm_op o = op_puts(dir, k, v);
	o.kind = SHM_OP_PUT_IF_TICK;
	o.expected_tick = expected;
	return o;
}

uint64_t commit_ops(struct shm_root *root, const struct shm_op *ops, size_t n)
{
	size_t f = SIZE_MAX;
	shm_commit_begin(root);
	int rc = shm_apply_batch(root, ops, n, &f);
	if (rc != 0)
		T_FAIL("batch rejected: %d (%s) at op %zu", rc, strerror(-rc), f);
	uint64_t t;
	T_EQ(shm_commit_publish(root, &t), 1);
	return t;
}
