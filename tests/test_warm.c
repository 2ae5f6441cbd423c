/* shm_root_warm touches exactly the pages the next commits will write and
 * the root has not touched: the change log ring from its head to the end
 * of its first pass, and what the grow-ahead backed beyond the arena's top;
 * nothing below the log head, nothing twice, nothing after the log's first
 * pass is over; and new backed pages again after the segment grows. */
#include <stdint.h>
#include <string.h>

#include "shm.h"
#include "shmtest.h"
#include "testutil.h"

#define PAGE 4096u
#define LOG_BYTES ((size_t)256 << 10)

static struct shm_root *make_root(void)
{
	struct shm_root_opts opts = {.capacity = (size_t)256 << 20, .log_bytes = LOG_BYTES};
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

/* Pages backed beyond the arena's top. */
static uint64_t above_top(struct shm_root *root)
{
	uint64_t size = shm_root_seg(root)->size, top = shm_arena_top(shm_root_arena(root));
	T_ASSERT(size >= top && (size - top) % PAGE == 0);
	return (size - top) / PAGE;
}

/* The log head: where the next record goes, from the published state. */
static uint64_t log_head(struct shm_root *root)
{
	uint64_t tick, end;
	shm_published_state(shm_root_seg(root), &tick, &end);
	return end;
}

int main(void)
{
	/* A new root: the whole log ring and everything above the top. */
	struct shm_root *root = make_root();
	uint64_t head = log_head(root);
	T_EQ(head, 0u);
	uint64_t want = LOG_BYTES / PAGE + above_top(root);
	T_EQ(warm_all(root, 7), want);
	T_EQ(shm_root_warm(root, 16), 0u);

	/* Growth backs more pages: those, and only those. */
	uint64_t before = above_top(root);
	T_EQ(shm_root_grow_ahead(root), 1);
	T_EQ(warm_all(root, 5), above_top(root) - before);
	shm_root_destroy(root);

	/* A root that wrote part of its log first: the pages from the head's
	 * page on (rounded up: the head's own page was written). */
	root = make_root();
	commit_ops(root, (struct shm_op[]){op_mkdir("/d/")}, 1);
	char key[32], val[120];
	memset(val, 'v', sizeof val);
	for (unsigned i = 0; i < 300; i++) {
		snprintf(key, sizeof key, "k%u", i);
		struct shm_op put = op_put("/d/", key, strlen(key), val, sizeof val);
		commit_ops(root, &put, 1);
	}
	head = log_head(root);
	T_ASSERT(head > 10 * PAGE && head < LOG_BYTES);
	uint64_t log_left = (LOG_BYTES - (head + PAGE - 1) / PAGE * PAGE) / PAGE;
	T_EQ(warm_all(root, 3), log_left + above_top(root));
	uint64_t warmed_to = shm_root_seg(root)->size;

	/* After the first pass the ring has been written whole: nothing more
	 * of the log, ever. */
	for (unsigned i = 0; head < LOG_BYTES + PAGE; i++) {
		snprintf(key, sizeof key, "k%u", i % 300);
		struct shm_op put = op_put("/d/", key, strlen(key), val, sizeof val);
		commit_ops(root, &put, 1);
		head = log_head(root);
	}
	uint64_t size = shm_root_seg(root)->size, top = shm_arena_top(shm_root_arena(root));
	uint64_t from = top > warmed_to ? top : warmed_to;
	T_EQ(warm_all(root, 16), size > from ? (size - from) / PAGE : 0u);
	shm_root_destroy(root);
	printf("warm: ok (%llu pages on a new root)\n", (unsigned long long)want);
	return 0;
}
