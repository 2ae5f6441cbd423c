/* The root's retire queue (struct shm_retired, shm/writer.h) never takes a
 * push it has no room for: pushes never allocate, so every one must have
 * been made room for where a failure could still undo the batch.
 *
 * The case a review found: in one tick, a batch that adds a directory name
 * (so publishing retires the old name array), then a batch that allocates
 * k objects without retiring any (mkdirs, a put) and fails on its last
 * operation. Its undo retires the k allocations; the queue must still have
 * room for the name array publishing retires. For each k around the
 * queue's first sizes the queue must never hold more than its capacity,
 * and reclaiming must then free everything exactly once (the bytes in use
 * go back to what a fresh root with the same directories holds, the name
 * array aside).
 */
#include <stdio.h>
#include <string.h>

#include "table.h"
#include "testutil.h"

static struct shm_op dir_op(int kind, const char *dir)
{
	return (struct shm_op){.kind = kind, .dir = dir, .dir_len = strlen(dir)};
}

/* Bytes in use, less the name array: the undone batch may have grown the
 * tick's private copy of it, which is then published as it is. */
static uint64_t bytes_but_names(struct shm_root *r)
{
	return shm_arena_bytes_in_use(r->arena) -
	       shm_arena_size_of(r->arena, atomic_load_explicit(&r->hdr->dirs, memory_order_relaxed));
}

static void one(size_t k)
{
	struct shm_root_opts o = {.capacity = (size_t)16 << 20, .poison = true};
	struct shm_err err = {{0}};
	struct shm_root *r;
	T_OK(shm_root_create(&r, &o, &err));
	static char names[600][16];
	static struct shm_op ops[600];
	size_t failed;

	T_OK(shm_commit_begin(r));
	struct shm_op first = dir_op(SHM_OP_MKDIR, "/first/");
	T_OK(shm_apply_batch(r, &first, 1, &failed));
	/* A mkdir allocates three objects (name, table, incarnation), a
	 * put one: k allocations, then an operation that fails. */
	size_t n = 0, allocs = 0;
	for (size_t i = 0; allocs + 3 <= k; i++, allocs += 3) {
		snprintf(names[i], sizeof names[i], "/d%03zu/", i);
		ops[n++] = dir_op(SHM_OP_MKDIR, names[i]);
	}
	for (; allocs < k; allocs++) {
		ops[n] = dir_op(SHM_OP_PUT, "/first/");
		ops[n].key = names[allocs];
		ops[n].key_len = 1 + allocs % 8;
		ops[n].value = "v";
		ops[n].value_len = 1;
		n++;
	}
	ops[n] = dir_op(SHM_OP_DEL, "/nope/");
	ops[n].key = "k";
	ops[n].key_len = 1;
	n++;
	T_EQ(shm_apply_batch(r, ops, n, &failed), -ENOENT);
	T_EQ(failed, n - 1);
	T_ASSERT(r->rq_tail - r->rq_head <= r->rq_cap);
	uint64_t t;
	T_EQ(shm_commit_publish(r, &t), 1);
	if (r->rq_tail - r->rq_head > r->rq_cap)
		T_FAIL("k=%zu: %llu entries in a queue of %llu", k,
		       (unsigned long long)(r->rq_tail - r->rq_head), (unsigned long long)r->rq_cap);
	struct shm_reclaim_report rep;
	for (int i = 0; i < 3; i++)
		T_OK(shm_reclaim(r, UINT64_MAX, UINT64_MAX, 0, &rep));
	T_EQ(r->rq_tail, r->rq_head);
	uint64_t in_use = bytes_but_names(r);
	shm_root_destroy(r);

	/* The same state built without the failed batch. */
	T_OK(shm_root_create(&r, &o, &err));
	T_OK(shm_commit_begin(r));
	T_OK(shm_apply_batch(r, &first, 1, &failed));
	T_EQ(shm_commit_publish(r, &t), 1);
	for (int i = 0; i < 3; i++)
		T_OK(shm_reclaim(r, UINT64_MAX, UINT64_MAX, 0, &rep));
	T_EQ(bytes_but_names(r), in_use);
	shm_root_destroy(r);
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	/* The queue starts at 256 entries and doubles. */
	for (size_t k = 1; k <= 600; k += k < 240 ? 17 : 1)
		one(k);
	printf("retire_queue: ok\n");
	return 0;
}
