/* The common get (shm/get_hot.h) answers exactly as the general one.
 *
 * - rd_key16 and rd_hash16, which read a key one byte at a time and hash it
 *   from registers, give XXH3_64bits_withSeed's hash (what the root placed
 *   the key by) for every length 0..16, random bytes and seeds, and the
 *   key's words as the ones a wide load would read.
 * - Over a real state of keys of 1..24 bytes (the fast path takes 1..16),
 *   with overwrites, deletions and a recreated directory, at every epoch of
 *   it: shm_get_hot either declines (1) or returns what shm_get returns,
 *   the same value bytes, length and tick; shm_get_cached, whose second call
 *   in a directory takes the fast path, always returns what shm_get does.
 * - Keys written byte by byte into a buffer just before the get (the case
 *   the byte reads exist for) are found.
 * - The key compare: a slot that names another key's version (same length,
 *   the same tag, keys apart in one byte) is no match for the fast path,
 *   for every position of the differing byte, as for the general one.
 * A damaged segment through the fast path: test_corrupt.
 */
#include "get_hot.h"
#include "shmtest.h"
#include "testutil.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void check_hash(void)
{
	uint8_t key[16];
	for (size_t n = 0; n <= 16; n++) {
		for (int r = 0; r < 5000; r++) {
			for (size_t i = 0; i < sizeof(key); i++)
				key[i] = (uint8_t)next_rand();
			uint64_t seed = r == 0 ? 0 : r == 1 ? UINT64_MAX : next_rand();
			struct rd_key16 k = rd_key16(key, n);
			uint64_t lo = 0, hi = 0;
			memcpy(&lo, key, n < 8 ? n : 8);
			if (n > 8)
				memcpy(&hi, key + n - 8, 8);
			if (k.lo != lo || k.hi != hi)
				T_FAIL("rd_key16, %zu bytes: %016llx %016llx, not %016llx %016llx", n,
				       (unsigned long long)k.lo, (unsigned long long)k.hi,
				       (unsigned long long)lo, (unsigned long long)hi);
			uint64_t want = XXH3_64bits_withSeed(key, n, seed), got = rd_hash16(k, n, seed);
			if (got != want)
				T_FAIL("rd_hash16, %zu bytes, seed %016llx: %016llx, XXH3 says %016llx", n,
				       (unsigned long long)seed, (unsigned long long)got,
				       (unsigned long long)want);
		}
	}
}

#define NKEYS 3000
#define DIR "/hot/"

static uint8_t keys[NKEYS][24];
static size_t key_lens[NKEYS];

static void same_value(const struct shm_value *a, const struct shm_value *b, size_t i, uint64_t epoch)
{
	if (a->len != b->len || a->tick != b->tick || memcmp(a->data, b->data, a->len) != 0)
		T_FAIL("key %zu at epoch %llu: the fast path read another value", i,
		       (unsigned long long)epoch);
}

static void compare_all(const struct shm_seg *seg, uint64_t epoch, int *hot_answers, int *declined)
{
	struct shm_dir_cache cache = {0};
	for (size_t i = 0; i < NKEYS + 50; i++) {
		uint8_t missing[24];
		const uint8_t *k = keys[i % NKEYS];
		size_t kn = key_lens[i % NKEYS];
		if (i >= NKEYS) { /* absent keys of every length */
			kn = 1 + i % 24;
			for (size_t j = 0; j < kn; j++)
				missing[j] = (uint8_t)(0xf0 | j);
			k = missing;
		}
		struct shm_value want = {0}, got = {0};
		int rc = shm_get(seg, epoch, DIR, sizeof(DIR) - 1, k, kn, &want);
		T_ASSERT(rc == 0 || rc == -ENOENT);
		/* The first call may fill the cache; the second goes through it. */
		for (int pass = 0; pass < 2; pass++) {
			int rc2 = shm_get_cached(seg, &cache, epoch, DIR, sizeof(DIR) - 1, k, kn, &got);
			if (rc2 != rc)
				T_FAIL("key %zu (%zu bytes) at epoch %llu: shm_get_cached %d, shm_get %d", i,
				       kn, (unsigned long long)epoch, rc2, rc);
			if (rc == 0)
				same_value(&want, &got, i, epoch);
		}
		int rh = shm_get_hot(&cache, epoch, DIR, k, kn, &got);
		if (rh == 1) {
			if (kn > 16)
				continue;
			++*declined;
			continue;
		}
		++*hot_answers;
		if (rh != rc)
			T_FAIL("key %zu (%zu bytes) at epoch %llu: shm_get_hot %d, shm_get %d", i, kn,
			       (unsigned long long)epoch, rh, rc);
		if (rc == 0)
			same_value(&want, &got, i, epoch);
	}
	/* Another directory's name, or one that only starts the same, never
	 * matches the cache. */
	struct shm_value v;
	T_EQ(shm_get_hot(&cache, epoch, "/hot", keys[0], key_lens[0], &v), 1);
	T_EQ(shm_get_hot(&cache, epoch, "/hot/x", keys[0], key_lens[0], &v), 1);
	T_EQ(shm_get_hot(&cache, epoch + 1, DIR, keys[0], key_lens[0], &v), 1);
}

/* Key a's slot made to name key b's version (keeping a's tag): the
 * lookup of a meets b's version first and must compare the whole key. */
static void check_compare(void)
{
	for (size_t kn = 1; kn <= 16; kn++) {
		for (size_t diff = 0; diff < kn; diff++) {
			struct shm_err err = {{0}};
			struct shm_root_opts o = {.capacity = 16u << 20};
			struct shm_root *root;
			T_OK(shm_root_create(&root, &o, &err));
			struct shm_seg *seg = shm_root_seg(root);
			uint8_t a[16], b[16];
			memset(a, 'p', sizeof(a));
			memcpy(b, a, sizeof(b));
			b[diff] ^= 0x40;
			struct shm_op mk = op_mkdir("/c/");
			commit_ops(root, &mk, 1);
			struct shm_op ops[2] = {op_put("/c/", a, kn, "A", 1), op_put("/c/", b, kn, "B", 1)};
			uint64_t epoch = commit_ops(root, ops, 2);
			struct shm_value va, vb;
			T_OK(shm_get(seg, epoch, "/c/", 3, a, kn, &va));
			T_OK(shm_get(seg, epoch, "/c/", 3, b, kn, &vb));
			uint64_t off_a =
				(uint64_t)((const uint8_t *)va.data - seg->base) - shm_ver_value_at(kn);
			uint64_t off_b =
				(uint64_t)((const uint8_t *)vb.data - seg->base) - shm_ver_value_at(kn);
			struct shm_dir_array *arr = (void *)(seg->base + atomic_load(&seg->hdr->dirs));
			struct shm_dname *d = (void *)(seg->base + arr->names[0]);
			struct shm_inc *inc = (void *)(seg->base + atomic_load(&d->head));
			struct shm_table *t = (void *)(seg->base + atomic_load(&inc->table));
			struct shm_slot *slot = NULL;
			for (uint64_t i = 0; i < t->nslots; i++)
				if (shm_slot_node(atomic_load(&t->slots[i].word)) == off_a)
					slot = &t->slots[i];
			T_ASSERT(slot != NULL);
			uint64_t word = atomic_load(&slot->word),
				 tag_bits = ~(((uint64_t)1 << SHM_SLOT_TAG_SHIFT) - 1);
			atomic_store(&slot->word, (word & tag_bits) | off_b >> 4);
			struct shm_dir_cache cache = {0};
			struct shm_value v;
			T_EQ(shm_get(seg, epoch, "/c/", 3, a, kn, &v), -ENOENT);
			for (int pass = 0; pass < 2; pass++)
				if (shm_get_cached(seg, &cache, epoch, "/c/", 3, a, kn, &v) != -ENOENT)
					T_FAIL("%zu-byte keys apart in byte %zu: a read b's version", kn,
					       diff);
			int rh = shm_get_hot(&cache, epoch, "/c/", a, kn, &v);
			T_ASSERT(rh == -ENOENT || rh == 1);
			atomic_store(&slot->word, word);
			shm_root_destroy(root);
		}
	}
}

int main(void)
{
	check_compare();
	check_hash();

	struct shm_err err = {{0}};
	struct shm_root_opts o = {.capacity = 256u << 20};
	struct shm_root *root;
	T_OK(shm_root_create(&root, &o, &err));
	const struct shm_seg *seg = shm_root_seg(root);

	for (size_t i = 0; i < NKEYS; i++) {
		key_lens[i] = 1 + i % 24;
		for (size_t j = 0; j < key_lens[i]; j++)
			keys[i][j] = (uint8_t)next_rand();
		keys[i][0] = (uint8_t)(i / 24); /* distinct among keys of one length */
	}

	uint64_t ticks[8];
	int nt = 0, hot_answers = 0, declined = 0;
	struct shm_op mk = op_mkdir(DIR);
	commit_ops(root, &mk, 1);
	/* Every key, then a third overwritten (values of several lengths), a
	 * fifth deleted, then the directory made again with half the keys. */
	for (int round = 0; round < 4; round++) {
		static struct shm_op ops[NKEYS];
		static uint8_t vals[NKEYS][40];
		size_t n = 0;
		if (round == 3) {
			struct shm_op rm = op_rmdir(DIR);
			commit_ops(root, &rm, 1);
			commit_ops(root, &mk, 1);
		}
		for (size_t i = 0; i < NKEYS; i++) {
			if ((round == 1 && i % 3) || (round == 3 && i % 2))
				continue;
			size_t vn = (i + (size_t)round) % 40;
			memset(vals[i], 'a' + round, vn);
			if (round == 2) {
				if (i % 5)
					continue;
				ops[n++] = op_kind(SHM_OP_DEL, DIR, NULL);
				ops[n - 1].key = keys[i];
				ops[n - 1].key_len = key_lens[i];
				continue;
			}
			ops[n++] = op_put(DIR, keys[i], key_lens[i], vals[i], vn);
		}
		for (size_t j = 0; j < n; j += 256)
			ticks[nt++ % 8] = commit_ops(root, ops + j, n - j < 256 ? n - j : 256);
		for (int e = 0; e < nt && e < 8; e++)
			compare_all(seg, ticks[e], &hot_answers, &declined);
	}
	/* Most answers came from the fast path, so it was tested. */
	printf("keys of up to 16 bytes: %d answered by the fast path, %d declined (an older version)\n",
	       hot_answers, declined);
	T_ASSERT(hot_answers > NKEYS);

	/* A key written byte by byte just before the get. */
	struct shm_dir_cache cache = {0};
	uint64_t epoch = shm_published_tick(seg);
	for (size_t i = 0; i < NKEYS; i += 2) {
		volatile uint8_t buf[24];
		for (size_t j = 0; j < key_lens[i]; j++)
			buf[j] = keys[i][j];
		struct shm_value v;
		T_OK(shm_get_cached(seg, &cache, epoch, DIR, sizeof(DIR) - 1, (const void *)buf, key_lens[i],
				    &v));
	}
	shm_root_destroy(root);
	return 0;
}
