/* A reader never follows a bad offset and never loops.
 *
 * The root segment is trusted by no reader: this test corrupts a real state
 * through the root's writable mapping (a slot pointing past the published
 * size, a misaligned or header offset, a version chain that loops, an
 * oversized length, a bogus name array) and checks that every read through
 * a separate read-only mapping returns -EIO (or -ENOENT) instead of faulting
 * or hanging, and that a valid state reads fine again once repaired.
 */
#include <signal.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

static struct shm_root *root;
static struct shm_seg reader;

static void commit(struct shm_op *ops, size_t n)
{
	uint64_t t;
	T_OK(shm_commit_begin(root));
	T_OK(shm_apply_batch(root, ops, n, NULL));
	T_EQ(shm_commit_publish(root, &t), 1);
}

static int count_keys(const void *k, size_t kn, const struct shm_value *v, void *arg)
{
	(void)k;
	(void)kn;
	(void)v;
	++*(int *)arg;
	return 0;
}

static int count_dirs(const char *d, size_t dn, void *arg)
{
	(void)d;
	(void)dn;
	++*(int *)arg;
	return 0;
}

/* The slot of key "k" in /d/'s current table, found through the layout. */
static struct shm_slot *slot_of_k(void)
{
	struct shm_seg *s = shm_root_seg(root);
	struct shm_dir_array *a = (void *)(s->base + atomic_load(&s->hdr->dirs));
	T_EQ(a->count, 1);
	struct shm_dname *d = (void *)(s->base + a->names[0]);
	struct shm_inc *inc = (void *)(s->base + atomic_load(&d->head));
	struct shm_table *t = (void *)(s->base + atomic_load(&inc->table));
	for (uint64_t i = 0; i < t->nslots; i++)
		if (atomic_load(&t->slots[i].node) > SHM_SLOT_DELETED)
			return &t->slots[i];
	T_FAIL("no slot in use");
}

static int get_k(void)
{
	struct shm_value v;
	return shm_get(&reader, shm_published_tick(&reader), "/d/", 3, "k", 1, &v);
}

int main(void)
{
	struct shm_err err = {{0}};
	struct shm_root_opts o = {.capacity = 64u << 20};
	T_OK(shm_root_create(&root, &o, &err));
	struct shm_seg *s = shm_root_seg(root);
	int fd = shm_seg_reader_fd(s, &err);
	T_ASSERT(fd >= 0);
	T_OK(shm_seg_open_reader(&reader, fd, &err));
	alarm(60); /* a loop that is not caught would hang here */

	struct shm_op mk = {.kind = SHM_OP_MKDIR, .dir = "/d/", .dir_len = 3};
	struct shm_op put = {.kind = SHM_OP_PUT,
			     .dir = "/d/",
			     .dir_len = 3,
			     .key = "k",
			     .key_len = 1,
			     .value = "v1",
			     .value_len = 2};
	commit(&mk, 1);
	commit(&put, 1);
	put.value = "v2";
	commit(&put, 1);
	T_EQ(get_k(), 0);

	struct shm_slot *slot = slot_of_k();
	uint64_t good = atomic_load(&slot->node);
	uint64_t size = shm_seg_published_size(s);

	/* Offsets outside the published size, inside the header, misaligned. */
	uint64_t bad[] = {size, size + 4096, s->capacity - 8, UINT64_MAX - 7, 8, SHM_HDR_SIZE - 8, good + 3};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		atomic_store(&slot->node, bad[i]);
		T_EQ(get_k(), -EIO);
		int n = 0;
		T_EQ(shm_dir_iter(&reader, shm_published_tick(&reader), "/d/", 3, count_keys, &n), -EIO);
	}
	atomic_store(&slot->node, good);
	T_EQ(get_k(), 0);

	/* A version chain that loops: reading at an epoch older than every
	 * version walks it until the step limit. */
	struct shm_ver *v = (void *)(s->base + good);
	uint64_t older = atomic_load(&v->older);
	atomic_store(&v->older, good);
	struct shm_value val;
	T_EQ(shm_get(&reader, 2, "/d/", 3, "k", 1, &val), -EIO); /* /d/ made at 2, k at 3 */
	atomic_store(&v->older, older);

	/* An oversized value length would run past the segment. */
	uint64_t vlen = v->value_len;
	v->value_len = (uint64_t)SHMSYNC_MAX_VALUE + 1;
	T_EQ(get_k(), -EIO);
	v->value_len = size;
	T_EQ(get_k(), -EIO);
	v->value_len = vlen;

	/* A name array whose count runs past the segment. */
	struct shm_dir_array *a = (void *)(s->base + atomic_load(&s->hdr->dirs));
	uint64_t count = a->count;
	a->count = size / 8;
	int nd = 0;
	T_EQ(shm_dirs_iter(&reader, shm_published_tick(&reader), "/", 1, count_dirs, &nd), -EIO);
	a->count = count;

	/* A table whose size is not a power of two. */
	struct shm_dname *d = (void *)(s->base + a->names[0]);
	struct shm_inc *inc = (void *)(s->base + atomic_load(&d->head));
	struct shm_table *t = (void *)(s->base + atomic_load(&inc->table));
	uint64_t nslots = t->nslots;
	t->nslots = 3;
	T_EQ(get_k(), -EIO);
	t->nslots = nslots;

	/* The dirs pointer itself off the end. */
	uint64_t dirs = atomic_load(&s->hdr->dirs);
	atomic_store(&s->hdr->dirs, size + 64);
	T_EQ(get_k(), -EIO);
	atomic_store(&s->hdr->dirs, dirs);

	/* Repaired: everything reads again. */
	T_EQ(get_k(), 0);
	T_EQ(shm_get(&reader, shm_published_tick(&reader), "/d/", 3, "k", 1, &val), 0);
	T_EQ(val.len, 2);
	T_ASSERT(memcmp(val.data, "v2", 2) == 0);
	nd = 0;
	T_EQ(shm_dirs_iter(&reader, shm_published_tick(&reader), "/", 1, count_dirs, &nd), 0);
	T_EQ(nd, 1);

	shm_seg_close(&reader);
	close(fd);
	shm_root_destroy(root);
	printf("corrupt: ok\n");
	return 0;
}
