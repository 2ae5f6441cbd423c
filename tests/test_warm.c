/* Warming (shm_root_warm): a new root has touched its whole change log
 * already, so warming finds only the pages the grow-ahead backed above the
 * arena's top: exactly those, none twice, none while nothing new is
 * backed, and exactly the new ones after the segment grows or after
 * allocations moved the top past what was touched. A prefault backs the
 * segment at create, past the capacity it is refused. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "shm.h"
#include "shmtest.h"
#include "testutil.h"

#define PAGE 4096u

static struct shm_root *make_root(void)
{
	struct shm_root_opts opts = {.capacity = (size_t)256 << 20, .log_bytes = (size_t)256 << 10};
	struct shm_err err = {{0}};
	struct shm_root *root = NULL;
	int rc = shm_root_create(&root, &opts, &err);
	if (rc < 0)
		T_FAIL("shm_root_create: %s (%s)", strerror(-rc), err.msg);
	return root;
}

static uint64_t warm_all(struct shm_root *root, unsigned slice)
{
	uint64_t total = 0;
	unsigned n;
	while ((n = shm_root_warm(root, slice)) > 0) {
		T_ASSERT(n <= slice);
		total += n;
	}
	return total;
}

static uint64_t seg_size(struct shm_root *root)
{
	return shm_root_seg(root)->size;
}

static uint64_t top_of(struct shm_root *root)
{
	return shm_arena_top(shm_root_arena(root));
}

int main(void)
{
	struct shm_root *root = make_root();
	uint64_t size = seg_size(root), top = top_of(root);
	T_ASSERT(size > top && (size - top) % PAGE == 0);
	T_EQ(warm_all(root, 7), (size - top) / PAGE);
	T_EQ(shm_root_warm(root, 16), 0u);

	/* Growth backs more pages: those, and only those. */
	T_EQ(shm_root_grow_ahead(root), 1);
	T_ASSERT(seg_size(root) > size);
	T_EQ(warm_all(root, 5), (seg_size(root) - size) / PAGE);

	/* Allocations move the top, growth moves the end: what lies above
	 * both the top and what was touched before. */
	uint64_t warmed_to = seg_size(root);
	commit_ops(root, (struct shm_op[]){op_mkdir("/d/")}, 1);
	char key[32], val[2000];
	memset(val, 'v', sizeof val);
	for (unsigned i = 0; i < 8000; i++) {
		snprintf(key, sizeof key, "k%u", i);
		struct shm_op put = op_put("/d/", key, strlen(key), val, sizeof val);
		commit_ops(root, &put, 1);
	}
	size = seg_size(root);
	top = top_of(root);
	T_ASSERT(top > warmed_to); /* the puts went past what was touched */
	T_EQ(warm_all(root, 16), (size - top) / PAGE);
	T_EQ(shm_root_warm(root, 16), 0u);
	shm_root_destroy(root);

	/* A prefault backs and touches the segment that far at create: the
	 * warming finds nothing left to do. */
	struct shm_root_opts pf = {.capacity = (size_t)64 << 20,
				   .log_bytes = (size_t)256 << 10,
				   .prefault_bytes = ((size_t)40 << 20) + 1};
	struct shm_err err = {{0}};
	int rc = shm_root_create(&root, &pf, &err);
	if (rc < 0)
		T_FAIL("shm_root_create with a prefault: %s (%s)", strerror(-rc), err.msg);
	size = seg_size(root);
	top = top_of(root);
	T_ASSERT(size >= ((uint64_t)40 << 20) + PAGE);
	T_ASSERT(size > top);
	T_EQ(shm_root_warm(root, 64), 0u);
	shm_root_destroy(root);
	pf.prefault_bytes = ((size_t)64 << 20) + 1;
	T_EQ(shm_root_create(&root, &pf, &err), -EINVAL);
	T_ASSERT(strstr(err.msg, "more than the capacity") != NULL);
	printf("warm: ok\n");
	return 0;
}
