/* A reader never follows a bad offset and never loops.
 *
 * The root segment is trusted by no reader: this test corrupts a real state
 * through the root's writable mapping (a slot pointing past the published
 * size, a misaligned or header offset, a version chain that loops, an
 * oversized length, a bogus name array) and checks that every read through
 * a separate read-only mapping returns -EIO (or -ENOENT) instead of faulting
 * or hanging, through the cached get's fast path as through shm_get, and
 * that a valid state reads fine again once repaired.
 */
#include <signal.h>
#include <unistd.h>

#include "get_hot.h"
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
		if (atomic_load(&t->slots[i].word) > SHM_SLOT_DELETED)
			return &t->slots[i];
	T_FAIL("no slot in use");
}

/* shm_get of "k", which the cached get (its second call goes through the
 * fast path of shm/get_hot.h) must answer alike, damage or not. */
static int get_k(void)
{
	struct shm_value v;
	uint64_t epoch = shm_published_tick(&reader);
	int rc = shm_get(&reader, epoch, "/d/", 3, "k", 1, &v);
	struct shm_dir_cache cache = {0};
	for (int pass = 0; pass < 2; pass++)
		T_EQ(shm_get_cached(&reader, &cache, epoch, "/d/", 3, "k", 1, &v), rc);
	int hot = shm_get_hot(&cache, epoch, "/d/", "k", 1, &v);
	T_ASSERT(hot == 1 || hot == rc);
	return rc;
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
	uint64_t good_word = atomic_load(&slot->word), good = shm_slot_node(good_word);
	uint64_t size = shm_seg_published_size(s);

	/* Offsets outside the published size, inside the header; a slot holds
	 * offset / 16, so every offset it can name is aligned. */
	uint64_t bad[] = {size, size + 4096,      s->capacity - 16, ((uint64_t)1 << 44) - 16,
			  16,   SHM_HDR_SIZE - 16};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		atomic_store(&slot->word, (good_word & ~(((uint64_t)1 << SHM_SLOT_TAG_SHIFT) - 1)) |
						  (bad[i] >> 4 & (((uint64_t)1 << SHM_SLOT_TAG_SHIFT) - 1)));
		T_EQ(get_k(), -EIO);
		int n = 0;
		T_EQ(shm_dir_iter(&reader, shm_published_tick(&reader), "/d/", 3, count_keys, &n), -EIO);
	}
	atomic_store(&slot->word, good_word);
	T_EQ(get_k(), 0);

	/* A published size past the mapping does not make the bytes past the
	 * mapping readable. */
	atomic_store(&s->hdr->size, s->capacity + ((uint64_t)1 << 30));
	atomic_store(&slot->word,
		     (good_word & ~(((uint64_t)1 << SHM_SLOT_TAG_SHIFT) - 1)) |
			     ((s->capacity + 4096) >> 4 & (((uint64_t)1 << SHM_SLOT_TAG_SHIFT) - 1)));
	T_EQ(get_k(), -EIO);
	atomic_store(&slot->word, good_word);
	atomic_store(&s->hdr->size, size);
	T_EQ(get_k(), 0);

	/* A version chain that loops: reading at an epoch older than every
	 * version walks it until the step limit. */
	struct shm_ver *v = (void *)(s->base + good);
	uint64_t link = atomic_load(&v->link);
	T_ASSERT(shm_link_older(link) != 0);
	atomic_store(&v->link, shm_link_make(good, shm_link_klen(link), shm_link_flags(link)));
	struct shm_value val;
	T_EQ(shm_get(&reader, 2, "/d/", 3, "k", 1, &val), -EIO); /* /d/ made at 2, k at 3 */
	atomic_store(&v->link, link);

	/* A key length past SHMSYNC_MAX_KEY (the link word holds up to 2047). */
	atomic_store(&v->link, shm_link_make(shm_link_older(link), 2047, shm_link_flags(link)));
	T_EQ(get_k(), -EIO);
	atomic_store(&v->link, link);

	/* An oversized value length would run past the segment. */
	uint32_t vlen = v->value_len;
	v->value_len = SHMSYNC_MAX_VALUE + 1;
	T_EQ(get_k(), -EIO);
	v->value_len = (uint32_t)(size - good);
	T_EQ(get_k(), -EIO);
	v->value_len = vlen;

	/* A name array whose count runs past the segment. */
	struct shm_dir_array *a = (void *)(s->base + atomic_load(&s->hdr->dirs));
	uint64_t count = a->count;
	a->count = size / 8;
	int nd = 0;
	T_EQ(shm_dirs_iter(&reader, shm_published_tick(&reader), "/", 1, count_dirs, &nd), -EIO);
	a->count = count;

	/* A table with no slots, or more than the segment holds. */
	struct shm_dname *d = (void *)(s->base + a->names[0]);
	struct shm_inc *inc = (void *)(s->base + atomic_load(&d->head));
	struct shm_table *t = (void *)(s->base + atomic_load(&inc->table));
	uint64_t nslots = t->nslots;
	uint64_t bad_n[] = {0, size / 8, (uint64_t)1 << 40, UINT64_MAX};
	for (size_t i = 0; i < sizeof(bad_n) / sizeof(bad_n[0]); i++) {
		t->nslots = bad_n[i];
		T_EQ(get_k(), -EIO);
	}
	/* Any other size reads, probing from the key's home and wrapping. */
	t->nslots = 3;
	T_ASSERT(get_k() == 0 || get_k() == -ENOENT);
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
