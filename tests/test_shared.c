/* The sync layer's area in the root segment (sync/shared.h), as a worker
 * finds it through its read-only mapping (sync_shared_find): the root is
 * not trusted, so every way its extension area can be wrong is refused.
 *
 * - An honest area is found where the root put it: page-aligned, the tick
 *   futex word alone on its line pair, the worker table after the struct
 *   with its entry count.
 * - A wrong magic or size field, an area too small for the struct, one
 *   outside the published size and one misaligned for the struct: no area
 *   (the worker refuses to attach: it would have no word to wait on).
 * - A worker table with a wrong magic, or more entries than the area
 *   holds: the area, without the table.
 * - The count the worker keeps is the one it checked, whatever the root
 *   writes later.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "layout.h"
#include "shared.h"
#include "shm.h"
#include "testutil.h"

#define NW 4u

_Static_assert(offsetof(struct sync_shared, tick_futex) % SYNC_SHARED_LINE == 0,
	       "the word starts a line pair");
_Static_assert(sizeof(struct sync_shared) - offsetof(struct sync_shared, tick_futex) == SYNC_SHARED_LINE,
	       "nothing else shares the word's line pair");

int main(void)
{
	struct shm_err err = {{0}};
	struct shm_root *root;
	struct shm_root_opts o = {.capacity = (size_t)16 << 20};
	if (shm_root_create(&root, &o, &err) < 0)
		T_FAIL("shm_root_create: %s", err.msg);
	struct shm_seg *seg = shm_root_seg(root);
	int rfd = shm_seg_reader_fd(seg, &err);
	if (rfd < 0)
		T_FAIL("shm_seg_reader_fd: %s", err.msg);
	void *area;
	T_OK(shm_root_ext(root, sync_shared_bytes(NW), &area));
	T_EQ((uintptr_t)area % SHM_ARENA_PAGE, 0);
	struct sync_shared *sh = area;
	sh->magic = SYNC_SHARED_MAGIC;
	sh->size = sizeof(*sh);
	struct wtab *wt = sync_shared_wtab(sh);
	wt->magic = WTAB_MAGIC;
	wt->n = NW;

	struct shm_seg rs;
	if (shm_seg_open_reader(&rs, rfd, &err) < 0)
		T_FAIL("shm_seg_open_reader: %s", err.msg);
	uint64_t off = (uint64_t)((uint8_t *)area - seg->base);
	const uint8_t *mine = rs.base + off;
	const struct wtab *t;
	uint32_t n;

	/* Honest. */
	const struct sync_shared *got = sync_shared_find(&rs, &t, &n);
	T_ASSERT(got == (const void *)mine);
	T_ASSERT(t == (const void *)(mine + sizeof(struct sync_shared)));
	T_EQ(n, NW);
	atomic_fetch_add(&sh->tick_futex, 1);
	T_EQ(atomic_load(&got->tick_futex), 1);

	/* The struct's own fields. */
	sh->magic ^= 1;
	T_ASSERT(!sync_shared_find(&rs, &t, &n));
	T_ASSERT(!t);
	T_EQ(n, 0);
	sh->magic ^= 1;
	sh->size += 8;
	T_ASSERT(!sync_shared_find(&rs, &t, &n));
	sh->size -= 8;
	T_ASSERT(sync_shared_find(&rs, &t, &n) && t);

	/* Where the header says the area is. */
	struct shm_hdr *h = seg->hdr;
	uint64_t ext_size = h->ext_size;
	h->ext_size = sizeof(struct sync_shared) - 8;
	T_ASSERT(!sync_shared_find(&rs, &t, &n));
	h->ext_size = sizeof(struct sync_shared); /* room for the struct, none for a table */
	T_ASSERT(sync_shared_find(&rs, &t, &n) && !t);
	h->ext_size = ext_size;
	h->ext_off = shm_seg_published_size(&rs) - 64;
	T_ASSERT(!sync_shared_find(&rs, &t, &n));
	h->ext_off = off + 8; /* 8-aligned, as shm_seg_ext asks, but not for the struct */
	T_ASSERT(!sync_shared_find(&rs, &t, &n));
	h->ext_off = off;
	T_ASSERT(sync_shared_find(&rs, &t, &n) && t);

	/* The worker table. */
	wt->magic ^= 1;
	T_ASSERT(sync_shared_find(&rs, &t, &n) == (const void *)mine);
	T_ASSERT(!t);
	wt->magic ^= 1;
	wt->n = NW + 1;
	T_ASSERT(sync_shared_find(&rs, &t, &n) == (const void *)mine);
	T_ASSERT(!t);
	T_EQ(n, 0);
	wt->n = NW;
	T_ASSERT(sync_shared_find(&rs, &t, &n) && t);
	wt->n = UINT32_MAX; /* after the check: the worker bounds by its copy */
	T_EQ(n, NW);

	shm_seg_close(&rs);
	close(rfd);
	shm_root_destroy(root);
	printf("ok\n");
	return 0;
}
