/* Validation of operations and names, shared by the worker (before it
 * sends a batch) and the root (before it applies one, trusting nothing a
 * worker sent), and the change-log bytes a batch needs. Needs nothing of
 * the root's state: a worker links it without the writer.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

bool shm_dir_name_valid(const char *dir, size_t len)
{
	if (!dir || len == 0 || len > SHMSYNC_MAX_DIR || dir[0] != '/' || dir[len - 1] != '/')
		return false;
	if (memchr(dir, 0, len))
		return false;
	/* Components between slashes: not empty, not "." or "..". */
	size_t start = 1;
	for (size_t i = 1; i < len; i++) {
		if (dir[i] != '/')
			continue;
		size_t n = i - start;
		if (n == 0 || (n == 1 && dir[start] == '.') ||
		    (n == 2 && dir[start] == '.' && dir[start + 1] == '.'))
			return false;
		start = i + 1;
	}
	return true;
}

int shm_op_check(const struct shm_op *op)
{
	return shm_op_check_named(op, false);
}

int shm_op_check_named(const struct shm_op *op, bool name_checked)
{
	if (op->kind < SHM_OP_PUT || op->kind > SHM_OP_RMDIR)
		return -EINVAL;
	if (!op->dir || op->dir_len > SHMSYNC_MAX_DIR)
		return op->dir ? -ENAMETOOLONG : -EINVAL;
	if (!name_checked && !shm_dir_name_valid(op->dir, op->dir_len))
		return -EINVAL;
	if (op->kind == SHM_OP_MKDIR || op->kind == SHM_OP_RMDIR)
		return 0;
	if (op->key_len > SHMSYNC_MAX_KEY)
		return -ENAMETOOLONG;
	if (op->key_len == 0 || !op->key)
		return -EINVAL;
	if (op->kind == SHM_OP_PUT || op->kind == SHM_OP_PUT_IF_ABSENT || op->kind == SHM_OP_PUT_IF_TICK) {
		if (op->value_len > SHMSYNC_MAX_VALUE)
			return -EMSGSIZE;
		if (op->value_len && !op->value)
			return -EINVAL;
	}
	return 0;
}

size_t shm_batch_log_bytes(const struct shm_op *ops, size_t n)
{
	size_t bytes = 0;
	for (size_t i = 0; i < n; i++) {
		bool dir_only = ops[i].kind == SHM_OP_MKDIR || ops[i].kind == SHM_OP_RMDIR;
		/* The value the record may carry (an ADD's counter is 8 bytes). */
		size_t value = ops[i].kind == SHM_OP_ADD                ? 8
			       : ops[i].kind == SHM_OP_DEL || dir_only  ? 0
			       : ops[i].value_len <= SHM_LOG_INLINE_MAX ? ops[i].value_len
									: 0;
		/* A record may force a pad record before it at the ring's end. */
		bytes += 2 * shm_logrec_size(ops[i].dir_len, dir_only ? 0 : ops[i].key_len, value);
	}
	return bytes;
}

size_t shm_seg_max_batch_log_bytes(const struct shm_seg *seg)
{
	/* log_size is written once, before any reader fd exists. */
	return (size_t)(seg->hdr->log_size / 2);
}
