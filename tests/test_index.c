/* Unit tests of the MVCC index (shm/index through shm.h), one root process.
 *
 * What it proves:
 * - put/get/overwrite/del, with the version tick a reader sees;
 * - values of awkward sizes (0 .. 100000 bytes, around the 8 KiB small/large
 *   boundary) come back byte-equal and 8-byte aligned;
 * - keys of 1 and SHMSYNC_MAX_KEY bytes and binary keys with NUL bytes are
 *   distinct and exact; one byte more is refused;
 * - 100,000 keys in one directory (table growth) are all readable by get and
 *   listed exactly once by dir_iter;
 * - snapshot reads at older ticks return the version of that tick;
 * - delete-then-recreate of a directory: the old epoch sees the old
 *   incarnation's keys, the new one an empty directory;
 * - rmdir of a prefix removes nested directories but not siblings sharing a
 *   string prefix (/ab/ survives rmdir /a/), and is ENOENT only when nothing
 *   is under it;
 * - dirs_iter lists in byte order and respects its prefix; dir_iter lists
 *   exactly the keys; both stop early on a non-zero callback value;
 * - put_if_absent, put_if_tick and add semantics and their errors;
 * - batch atomicity: a rejected batch leaves no trace, names the failing op,
 *   does not disturb the other batches of its group, and a group with only
 *   rejected batches publishes nothing;
 * - syntax and limit errors of single operations.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "shm.h"
#include "shmtest.h"
#include "testutil.h"

static struct shm_root *root;
static struct shm_seg *seg;

/* ---- helpers ---------------------------------------------------------- */

/* One batch as its own group. Returns the batch's result; checks that publish
 * published exactly when the batch was accepted and that the tick moved by
 * exactly one in that case and not at all otherwise. */
static int commit_n(const struct shm_op *ops, size_t n, size_t *failed)
{
	uint64_t before = shm_root_tick(root), t = 0;
	size_t f = SIZE_MAX;
	shm_commit_begin(root);
	int rc = shm_apply_batch(root, ops, n, &f);
	int p = shm_commit_publish(root, &t);
	if (rc == 0) {
		T_EQ(p, 1);
		T_EQ(t, before + 1);
	} else {
		T_EQ(p, 0);
	}
	T_EQ(shm_root_tick(root), before + (rc == 0));
	T_EQ(shm_published_tick(seg), before + (rc == 0));
	if (failed)
		*failed = f;
	return rc;
}

/* The array is spelled twice only to count it; building ops has no side
 * effects, and sizeof does not evaluate. */
#define COMMIT(...)                                                                                          \
	commit_n((const struct shm_op[]){__VA_ARGS__},                                                       \
		 sizeof((const struct shm_op[]){__VA_ARGS__}) / sizeof(struct shm_op), NULL)

/* Asserts the batch fails with `err` at op `at`. */
#define COMMIT_FAIL(err, at, ...)                                                                            \
	do {                                                                                                 \
		const struct shm_op ops_[] = {__VA_ARGS__};                                                  \
		size_t f_;                                                                                   \
		int rc_ = commit_n(ops_, sizeof ops_ / sizeof ops_[0], &f_);                                 \
		if (rc_ != (err) || f_ != (size_t)(at))                                                      \
			T_FAIL("batch: rc %d failed_op %zu, expected rc %d at op %d", rc_, f_, (err),        \
			       (int)(at));                                                                   \
	} while (0)

static uint64_t now(void)
{
	return shm_root_tick(root);
}

static int get(uint64_t e, const char *dir, const void *k, size_t kn, struct shm_value *v)
{
	return shm_get(seg, e, dir, strlen(dir), k, kn, v);
}

/* Asserts dir/key at epoch e holds want (NULL: absent, -ENOENT) and, when
 * want_tick is non-zero, that the version has that tick. */
static void expect_get_(int line, uint64_t e, const char *dir, const void *k, size_t kn, const void *want,
			size_t want_len, uint64_t want_tick)
{
	struct shm_value v = {0};
	int rc = get(e, dir, k, kn, &v);
	if (!want) {
		if (rc != -ENOENT)
			T_FAIL("line %d: get %s at %" PRIu64 ": rc %d, expected -ENOENT", line, dir, e, rc);
		return;
	}
	if (rc != 0)
		T_FAIL("line %d: get %s at %" PRIu64 ": rc %d (%s)", line, dir, e, rc, strerror(-rc));
	if (v.len != want_len || (want_len && memcmp(v.data, want, want_len) != 0))
		T_FAIL("line %d: get %s at %" PRIu64 ": wrong value (len %zu, expected %zu)", line, dir, e,
		       v.len, want_len);
	if (want_tick && v.tick != want_tick)
		T_FAIL("line %d: get %s at %" PRIu64 ": version tick %" PRIu64 ", expected %" PRIu64, line,
		       dir, e, v.tick, want_tick);
}

#define EXPECT_STR(e, dir, k, want, tick)                                                                    \
	expect_get_(__LINE__, (e), (dir), (k), strlen(k), (want), strlen(want), (tick))
#define EXPECT_ABSENT(e, dir, k) expect_get_(__LINE__, (e), (dir), (k), strlen(k), NULL, 0, 0)

static int exists(uint64_t e, const char *dir)
{
	return shm_dir_exists(seg, e, dir, strlen(dir));
}

/* ---- listing helpers -------------------------------------------------- */

struct names {
	char v[64][SHMSYNC_MAX_DIR + 1];
	size_t n;
	size_t stop_after; /* 0: never stop */
};

static int collect_dir(const char *dir, size_t len, void *arg)
{
	struct names *ns = arg;
	T_ASSERT(ns->n < 64);
	T_ASSERT(len <= SHMSYNC_MAX_DIR);
	memcpy(ns->v[ns->n], dir, len);
	ns->v[ns->n][len] = 0;
	ns->n++;
	if (ns->stop_after && ns->n == ns->stop_after)
		return 42;
	return 0;
}

/* Asserts dirs_iter(prefix) at e yields exactly the NULL-terminated list. */
static void expect_dirs_(int line, uint64_t e, const char *prefix, const char *const *want)
{
	struct names ns = {.n = 0};
	int rc = shm_dirs_iter(seg, e, prefix, strlen(prefix), collect_dir, &ns);
	if (rc != 0)
		T_FAIL("line %d: dirs_iter(%s) rc %d", line, prefix, rc);
	size_t i = 0;
	for (; want[i]; i++) {
		if (i >= ns.n)
			T_FAIL("line %d: dirs_iter(%s): missing %s at %zu", line, prefix, want[i], i);
		if (strcmp(ns.v[i], want[i]) != 0)
			T_FAIL("line %d: dirs_iter(%s): got %s at %zu, expected %s", line, prefix, ns.v[i], i,
			       want[i]);
	}
	if (ns.n != i)
		T_FAIL("line %d: dirs_iter(%s): %zu dirs, expected %zu (extra %s)", line, prefix, ns.n, i,
		       ns.v[i]);
}

#define EXPECT_DIRS(e, prefix, ...)                                                                          \
	do {                                                                                                 \
		const char *const want_[] = {__VA_ARGS__, NULL};                                             \
		expect_dirs_(__LINE__, (e), (prefix), want_);                                                \
	} while (0)
#define EXPECT_NO_DIRS(e, prefix) expect_dirs_(__LINE__, (e), (prefix), (const char *const[]){NULL})

struct keys {
	char k[64][16];
	char v[64][16];
	uint64_t tick[64];
	size_t n;
};

static int collect_key(const void *k, size_t kn, const struct shm_value *v, void *arg)
{
	struct keys *ks = arg;
	T_ASSERT(ks->n < 64);
	T_ASSERT(kn < 16 && v->len < 16);
	memcpy(ks->k[ks->n], k, kn);
	ks->k[ks->n][kn] = 0;
	memcpy(ks->v[ks->n], v->data, v->len);
	ks->v[ks->n][v->len] = 0;
	ks->tick[ks->n] = v->tick;
	ks->n++;
	return 0;
}

/* Asserts dir_iter(dir) at e yields exactly the pairs "k=v", in any order. */
static void expect_keys_(int line, uint64_t e, const char *dir, const char *const *want)
{
	struct keys ks = {.n = 0};
	int rc = shm_dir_iter(seg, e, dir, strlen(dir), collect_key, &ks);
	if (rc != 0)
		T_FAIL("line %d: dir_iter(%s) at %" PRIu64 " rc %d", line, dir, e, rc);
	size_t nw = 0;
	for (; want[nw]; nw++) {
		bool found = false;
		for (size_t i = 0; i < ks.n; i++) {
			char kv[40];
			snprintf(kv, sizeof kv, "%s=%s", ks.k[i], ks.v[i]);
			if (strcmp(kv, want[nw]) == 0) {
				T_ASSERT(!found);
				found = true;
			}
		}
		if (!found)
			T_FAIL("line %d: dir_iter(%s) at %" PRIu64 ": %s not listed", line, dir, e, want[nw]);
	}
	if (ks.n != nw)
		T_FAIL("line %d: dir_iter(%s) at %" PRIu64 ": %zu keys, expected %zu", line, dir, e, ks.n,
		       nw);
}

#define EXPECT_KEYS(e, dir, ...)                                                                             \
	do {                                                                                                 \
		const char *const want_[] = {__VA_ARGS__, NULL};                                             \
		expect_keys_(__LINE__, (e), (dir), want_);                                                   \
	} while (0)
#define EXPECT_NO_KEYS(e, dir) expect_keys_(__LINE__, (e), (dir), (const char *const[]){NULL})

static int count_key(const void *k, size_t kn, const struct shm_value *v, void *arg)
{
	(void)k, (void)kn, (void)v;
	++*(size_t *)arg;
	return 0;
}

static size_t nkeys(uint64_t e, const char *dir)
{
	size_t n = 0;
	T_EQ(shm_dir_iter(seg, e, dir, strlen(dir), count_key, &n), 0);
	return n;
}

static void le64(uint8_t out[8], int64_t x)
{
	uint64_t u = (uint64_t)x;
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(u >> (8 * i));
}

static void expect_counter_(int line, uint64_t e, const char *dir, const char *k, int64_t want)
{
	uint8_t b[8];
	le64(b, want);
	expect_get_(line, e, dir, k, strlen(k), b, 8, 0);
}
#define EXPECT_COUNTER(e, dir, k, want) expect_counter_(__LINE__, (e), (dir), (k), (want))

/* ---- tests ------------------------------------------------------------ */

static void test_basic(void)
{
	uint64_t t0 = now();
	EXPECT_ABSENT(t0, "/d/", "k");
	T_EQ(exists(t0, "/d/"), 0);

	T_EQ(COMMIT(op_mkdir("/d/"), op_puts("/d/", "k", "v1")), 0);
	uint64_t t1 = now();
	T_EQ(t1, t0 + 1);
	T_EQ(exists(t1, "/d/"), 1);
	T_EQ(exists(t0, "/d/"), 0);
	EXPECT_STR(t1, "/d/", "k", "v1", t1);
	EXPECT_ABSENT(t1, "/d/", "other");
	/* The directory did not exist at t0: a read there is ENOENT too. */
	EXPECT_ABSENT(t0, "/d/", "k");

	/* overwrite */
	T_EQ(COMMIT(op_puts("/d/", "k", "v2")), 0);
	uint64_t t2 = now();
	EXPECT_STR(t2, "/d/", "k", "v2", t2);
	EXPECT_STR(t1, "/d/", "k", "v1", t1);

	/* del, then reads at the new tick are ENOENT, the old ones remain */
	T_EQ(COMMIT(op_del("/d/", "k")), 0);
	uint64_t t3 = now();
	EXPECT_ABSENT(t3, "/d/", "k");
	EXPECT_STR(t2, "/d/", "k", "v2", t2);
	EXPECT_NO_KEYS(t3, "/d/");
	/* del of an absent key, put/del into a missing directory */
	COMMIT_FAIL(-ENOENT, 0, op_del("/d/", "k"));
	COMMIT_FAIL(-ENOENT, 0, op_del("/d/", "never"));
	COMMIT_FAIL(-ENOENT, 0, op_puts("/nodir/", "k", "v"));
	COMMIT_FAIL(-ENOENT, 0, op_del("/nodir/", "k"));
	/* mkdir of an existing directory */
	COMMIT_FAIL(-EEXIST, 0, op_mkdir("/d/"));
	/* mkdir needs no parent */
	T_EQ(COMMIT(op_mkdir("/p/q/r/")), 0);
	T_EQ(exists(now(), "/p/q/r/"), 1);
	T_EQ(exists(now(), "/p/"), 0);
	T_EQ(exists(now(), "/p/q/"), 0);
	T_EQ(COMMIT(op_rmdir("/p/q/r/"), op_rmdir("/d/")), 0);
	printf("basic: ok (ticks %" PRIu64 "..%" PRIu64 ")\n", t0, now());
}

static void fill(uint8_t *b, size_t n, unsigned salt)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(i * 131u + salt * 7u + (i >> 8));
}

static void test_value_sizes(void)
{
	static const size_t sizes[] = {0, 1, 7, 8, 9, 4095, 4096, 8191, 8192, 8193, 100000};
	enum { NS = sizeof sizes / sizeof sizes[0] };
	uint8_t *bufs[NS];
	T_EQ(COMMIT(op_mkdir("/sizes/")), 0);
	shm_commit_begin(root);
	for (size_t i = 0; i < NS; i++) {
		bufs[i] = malloc(sizes[i] + 1);
		T_ASSERT(bufs[i]);
		fill(bufs[i], sizes[i], (unsigned)i);
		char key[16];
		snprintf(key, sizeof key, "s%zu", sizes[i]);
		struct shm_op o = op_put("/sizes/", key, strlen(key), bufs[i], sizes[i]);
		size_t f;
		T_EQ(shm_apply_batch(root, &o, 1, &f), 0);
	}
	uint64_t t;
	T_EQ(shm_commit_publish(root, &t), 1);
	for (size_t i = 0; i < NS; i++) {
		char key[16];
		snprintf(key, sizeof key, "s%zu", sizes[i]);
		struct shm_value v;
		T_EQ(get(t, "/sizes/", key, strlen(key), &v), 0);
		T_EQ(v.len, sizes[i]);
		T_EQ(v.tick, t);
		if (sizes[i]) {
			T_ASSERT(v.data != NULL);
			T_EQ((uintptr_t)v.data % 8, 0);
			T_ASSERT(memcmp(v.data, bufs[i], sizes[i]) == 0);
		}
	}
	/* Overwrite every value with a different pattern of the same size and
	 * check both versions are intact side by side (nothing is reclaimed in
	 * this program until the end, so reads at t stay valid). */
	shm_commit_begin(root);
	for (size_t i = 0; i < NS; i++) {
		char key[16];
		snprintf(key, sizeof key, "s%zu", sizes[i]);
		uint8_t *b2 = malloc(sizes[i] + 1);
		T_ASSERT(b2);
		fill(b2, sizes[i], (unsigned)i + 100);
		struct shm_op o = op_put("/sizes/", key, strlen(key), b2, sizes[i]);
		size_t f;
		T_EQ(shm_apply_batch(root, &o, 1, &f), 0);
		free(b2); /* the index copied it */
	}
	uint64_t t2;
	T_EQ(shm_commit_publish(root, &t2), 1);
	for (size_t i = 0; i < NS; i++) {
		char key[16];
		snprintf(key, sizeof key, "s%zu", sizes[i]);
		uint8_t *b2 = malloc(sizes[i] + 1);
		T_ASSERT(b2);
		fill(b2, sizes[i], (unsigned)i + 100);
		struct shm_value v1, v2;
		T_EQ(get(t, "/sizes/", key, strlen(key), &v1), 0);
		T_EQ(get(t2, "/sizes/", key, strlen(key), &v2), 0);
		T_EQ(v1.len, sizes[i]);
		T_EQ(v2.len, sizes[i]);
		T_EQ(v2.tick, t2);
		if (sizes[i]) {
			T_EQ((uintptr_t)v2.data % 8, 0);
			T_ASSERT(memcmp(v1.data, bufs[i], sizes[i]) == 0);
			T_ASSERT(memcmp(v2.data, b2, sizes[i]) == 0);
		}
		free(b2);
		free(bufs[i]);
	}
	/* The largest value allowed is accepted, one byte more is EMSGSIZE. */
	uint8_t *big = malloc(SHMSYNC_MAX_VALUE + 1);
	T_ASSERT(big);
	fill(big, SHMSYNC_MAX_VALUE + 1, 9);
	struct shm_op o = op_put("/sizes/", "max", 3, big, SHMSYNC_MAX_VALUE + 1);
	T_EQ(shm_op_check(&o), -EMSGSIZE);
	COMMIT_FAIL(-EMSGSIZE, 0, o);
	o.value_len = SHMSYNC_MAX_VALUE;
	T_EQ(shm_op_check(&o), 0);
	T_EQ(commit_n(&o, 1, NULL), 0);
	struct shm_value v;
	T_EQ(get(now(), "/sizes/", "max", 3, &v), 0);
	T_EQ(v.len, SHMSYNC_MAX_VALUE);
	T_ASSERT(memcmp(v.data, big, SHMSYNC_MAX_VALUE) == 0);
	free(big);
	T_EQ(COMMIT(op_rmdir("/sizes/")), 0);
	printf("value sizes: ok\n");
}

static void test_keys(void)
{
	T_EQ(COMMIT(op_mkdir("/keys/")), 0);
	static char kmax[SHMSYNC_MAX_KEY + 1], kmax2[SHMSYNC_MAX_KEY];
	memset(kmax, 'x', sizeof kmax);
	memcpy(kmax2, kmax, sizeof kmax2);
	kmax2[SHMSYNC_MAX_KEY - 1] = 'y'; /* differs only in the last byte */
	static const char b1[] = {'a', 0, 'b'}, b2[] = {'a', 0, 'c'}, b3[] = {'a', 0}, b4[] = {0};
	struct shm_op ops[] = {
		op_put("/keys/", "k", 1, "one", 3),
		op_put("/keys/", kmax, SHMSYNC_MAX_KEY, "max", 3),
		op_put("/keys/", kmax2, SHMSYNC_MAX_KEY, "max2", 4),
		op_put("/keys/", b1, 3, "b1", 2),
		op_put("/keys/", b2, 3, "b2", 2),
		op_put("/keys/", b3, 2, "b3", 2),
		op_put("/keys/", "a", 1, "a", 1),
		op_put("/keys/", b4, 1, "nul", 3),
	};
	T_EQ(commit_n(ops, sizeof ops / sizeof ops[0], NULL), 0);
	uint64_t t = now();
	expect_get_(__LINE__, t, "/keys/", "k", 1, "one", 3, t);
	expect_get_(__LINE__, t, "/keys/", kmax, SHMSYNC_MAX_KEY, "max", 3, t);
	expect_get_(__LINE__, t, "/keys/", kmax2, SHMSYNC_MAX_KEY, "max2", 4, t);
	expect_get_(__LINE__, t, "/keys/", b1, 3, "b1", 2, t);
	expect_get_(__LINE__, t, "/keys/", b2, 3, "b2", 2, t);
	expect_get_(__LINE__, t, "/keys/", b3, 2, "b3", 2, t);
	expect_get_(__LINE__, t, "/keys/", "a", 1, "a", 1, t);
	expect_get_(__LINE__, t, "/keys/", b4, 1, "nul", 3, t);
	/* Prefixes of stored keys are other keys. */
	expect_get_(__LINE__, t, "/keys/", kmax, SHMSYNC_MAX_KEY - 1, NULL, 0, 0);
	expect_get_(__LINE__, t, "/keys/", b1, 2, "b3", 2, t);
	T_EQ(nkeys(t, "/keys/"), 8);

	/* Key limits: empty and one byte over are refused, with no trace. */
	struct shm_op bad = op_put("/keys/", kmax, SHMSYNC_MAX_KEY + 1, "v", 1);
	T_EQ(shm_op_check(&bad), -ENAMETOOLONG);
	COMMIT_FAIL(-ENAMETOOLONG, 0, bad);
	bad = op_put("/keys/", "", 0, "v", 1);
	T_EQ(shm_op_check(&bad), -EINVAL);
	COMMIT_FAIL(-EINVAL, 0, bad);
	struct shm_op d = op_del("/keys/", "");
	COMMIT_FAIL(-EINVAL, 0, d);
	T_EQ(nkeys(now(), "/keys/"), 8);
	T_EQ(COMMIT(op_rmdir("/keys/")), 0);
	printf("keys: ok\n");
}

static void test_dir_names(void)
{
	static const char *const good[] = {"/a/", "/a/b/", "/a.b/", "/..a/", "/a../", "/ a/", "/\x01\xff/"};
	static const char *const bad[] = {"",     "a/",    "/a",     "//", "/a//", "/./",
					  "/../", "/a/./", "/a/../", "a",  "/a/b", "//a/"};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		if (!shm_dir_name_valid(good[i], strlen(good[i])))
			T_FAIL("%s should be a valid directory name", good[i]);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (shm_dir_name_valid(bad[i], strlen(bad[i])))
			T_FAIL("'%s' should be an invalid directory name", bad[i]);
		COMMIT_FAIL(-EINVAL, 0, op_mkdir(bad[i]));
	}
	/* A NUL inside the name (dir_len counts past it). */
	T_ASSERT(!shm_dir_name_valid("/a\0b/", 5));
	struct shm_op o = op_mkdir("/a");
	o.dir = "/a\0b/";
	o.dir_len = 5;
	COMMIT_FAIL(-EINVAL, 0, o);
	/* Length: SHMSYNC_MAX_DIR bytes is fine, one more is ENAMETOOLONG. */
	char name[SHMSYNC_MAX_DIR + 2];
	memset(name, 'n', sizeof name);
	name[0] = '/';
	name[SHMSYNC_MAX_DIR - 1] = '/';
	name[SHMSYNC_MAX_DIR] = 0;
	T_ASSERT(shm_dir_name_valid(name, SHMSYNC_MAX_DIR));
	T_EQ(COMMIT(op_mkdir(name)), 0);
	T_EQ(exists(now(), name), 1);
	T_EQ(COMMIT(op_rmdir(name)), 0);
	name[SHMSYNC_MAX_DIR - 1] = 'n';
	name[SHMSYNC_MAX_DIR] = '/';
	name[SHMSYNC_MAX_DIR + 1] = 0;
	T_ASSERT(!shm_dir_name_valid(name, SHMSYNC_MAX_DIR + 1));
	struct shm_op lo = op_mkdir(name);
	T_EQ(shm_op_check(&lo), -ENAMETOOLONG);
	COMMIT_FAIL(-ENAMETOOLONG, 0, lo);
	/* A bad kind. */
	struct shm_op k = op_mkdir("/kind/");
	k.kind = 99;
	T_EQ(shm_op_check(&k), -EINVAL);
	COMMIT_FAIL(-EINVAL, 0, k);
	k.kind = 0;
	COMMIT_FAIL(-EINVAL, 0, k);
	T_EQ(exists(now(), "/kind/"), 0);
	printf("dir names: ok\n");
}

static int check_many(const void *k, size_t kn, const struct shm_value *v, void *arg)
{
	uint8_t *seen = arg;
	char buf[32];
	T_ASSERT(kn > 1 && kn < sizeof buf);
	memcpy(buf, k, kn);
	buf[kn] = 0;
	T_ASSERT(buf[0] == 'm');
	long i = strtol(buf + 1, NULL, 10);
	T_ASSERT(i >= 0 && i < 100000);
	T_EQ(seen[i], 0);
	seen[i] = 1;
	T_EQ(v->len, 8);
	uint64_t x;
	memcpy(&x, v->data, 8);
	T_EQ(x, (uint64_t)i * 2654435761u);
	return 0;
}

static void test_many_keys(void)
{
	enum { N = 100000, PER = 500 };
	T_EQ(COMMIT(op_mkdir("/many/")), 0);
	static char keys[N][12];
	static uint64_t vals[N];
	uint64_t first_tick = now() + 1;
	for (int base = 0; base < N; base += PER) {
		struct shm_op ops[PER];
		for (int j = 0; j < PER; j++) {
			int i = base + j;
			snprintf(keys[i], sizeof keys[i], "m%d", i);
			vals[i] = (uint64_t)i * 2654435761u;
			ops[j] = op_put("/many/", keys[i], strlen(keys[i]), &vals[i], 8);
		}
		T_EQ(commit_n(ops, PER, NULL), 0);
	}
	uint64_t t = now();
	for (int i = 0; i < N; i++) {
		struct shm_value v;
		int rc = get(t, "/many/", keys[i], strlen(keys[i]), &v);
		if (rc != 0)
			T_FAIL("key %s: rc %d", keys[i], rc);
		T_EQ(v.len, 8);
		T_ASSERT(memcmp(v.data, &vals[i], 8) == 0);
		T_EQ(v.tick, first_tick + (uint64_t)(i / PER));
		/* And at the tick before its batch, it did not exist yet. */
		if (i % 997 == 0) {
			rc = get(v.tick - 1, "/many/", keys[i], strlen(keys[i]), &v);
			T_EQ(rc, -ENOENT);
		}
	}
	uint8_t *seen = calloc(N, 1);
	T_ASSERT(seen);
	T_EQ(shm_dir_iter(seg, t, "/many/", 6, check_many, seen), 0);
	for (int i = 0; i < N; i++)
		T_EQ(seen[i], 1);
	/* An older snapshot taken midway lists exactly the keys of then. */
	T_EQ(nkeys(first_tick + 99, "/many/"), 100 * PER);
	free(seen);
	T_EQ(COMMIT(op_rmdir("/many/")), 0);
	T_EQ(exists(now(), "/many/"), 0);
	printf("many keys: ok (%d keys)\n", N);
}

static void test_snapshots(void)
{
	T_EQ(COMMIT(op_mkdir("/snap/"), op_puts("/snap/", "other", "o")), 0);
	uint64_t t0 = now();
	T_EQ(COMMIT(op_puts("/snap/", "k", "v1")), 0);
	uint64_t t1 = now();
	T_EQ(COMMIT(op_puts("/snap/", "k", "v2")), 0);
	uint64_t t2 = now();
	/* A tick that does not touch k. */
	T_EQ(COMMIT(op_puts("/snap/", "other", "p")), 0);
	uint64_t t3 = now();
	T_EQ(COMMIT(op_del("/snap/", "k")), 0);
	uint64_t t4 = now();
	T_EQ(COMMIT(op_puts("/snap/", "k", "v5")), 0);
	uint64_t t5 = now();
	EXPECT_ABSENT(t0, "/snap/", "k");
	EXPECT_STR(t1, "/snap/", "k", "v1", t1);
	EXPECT_STR(t2, "/snap/", "k", "v2", t2);
	EXPECT_STR(t3, "/snap/", "k", "v2", t2); /* newest version <= t3 is t2's */
	EXPECT_ABSENT(t4, "/snap/", "k");
	EXPECT_STR(t5, "/snap/", "k", "v5", t5);
	EXPECT_STR(t2, "/snap/", "other", "o", t0);
	EXPECT_STR(t3, "/snap/", "other", "p", t3);
	EXPECT_KEYS(t0, "/snap/", "other=o");
	EXPECT_KEYS(t2, "/snap/", "k=v2", "other=o");
	EXPECT_KEYS(t4, "/snap/", "other=p");
	EXPECT_KEYS(t5, "/snap/", "k=v5", "other=p");
	/* Several writes of one key in one batch and in one group: only the last
	 * is visible, at the group's tick. */
	shm_commit_begin(root);
	struct shm_op a[] = {op_puts("/snap/", "k", "x1"), op_puts("/snap/", "k", "x2")};
	size_t f;
	T_EQ(shm_apply_batch(root, a, 2, &f), 0);
	struct shm_op b[] = {op_puts("/snap/", "k", "x3")};
	T_EQ(shm_apply_batch(root, b, 1, &f), 0);
	uint64_t t6;
	T_EQ(shm_commit_publish(root, &t6), 1);
	EXPECT_STR(t6, "/snap/", "k", "x3", t6);
	EXPECT_STR(t5, "/snap/", "k", "v5", t5);
	/* put then del in one batch: absent at the new tick. */
	T_EQ(COMMIT(op_puts("/snap/", "k", "y"), op_del("/snap/", "k")), 0);
	EXPECT_ABSENT(now(), "/snap/", "k");
	EXPECT_STR(t6, "/snap/", "k", "x3", t6);
	T_EQ(COMMIT(op_rmdir("/snap/")), 0);
	printf("snapshots: ok\n");
}

static void test_recreate(void)
{
	T_EQ(COMMIT(op_mkdir("/r/"), op_puts("/r/", "k1", "a"), op_puts("/r/", "k2", "b")), 0);
	uint64_t t1 = now();
	T_EQ(COMMIT(op_rmdir("/r/")), 0);
	uint64_t t2 = now();
	T_EQ(COMMIT(op_mkdir("/r/")), 0);
	uint64_t t3 = now();
	T_EQ(COMMIT(op_puts("/r/", "k3", "c")), 0);
	uint64_t t4 = now();

	EXPECT_KEYS(t1, "/r/", "k1=a", "k2=b");
	EXPECT_STR(t1, "/r/", "k1", "a", t1);
	T_EQ(exists(t2, "/r/"), 0);
	EXPECT_ABSENT(t2, "/r/", "k1");
	T_EQ(shm_dir_iter(seg, t2, "/r/", 3, count_key, &(size_t){0}), -ENOENT);
	T_EQ(exists(t3, "/r/"), 1);
	EXPECT_NO_KEYS(t3, "/r/");
	EXPECT_ABSENT(t3, "/r/", "k1");
	EXPECT_KEYS(t4, "/r/", "k3=c");
	EXPECT_ABSENT(t4, "/r/", "k2");

	/* rmdir + mkdir + put in one batch: a new incarnation at one tick. */
	T_EQ(COMMIT(op_rmdir("/r/"), op_mkdir("/r/"), op_puts("/r/", "k4", "d")), 0);
	uint64_t t5 = now();
	EXPECT_KEYS(t5, "/r/", "k4=d");
	EXPECT_KEYS(t4, "/r/", "k3=c");
	/* mkdir + put + rmdir in one batch: nothing visible afterwards. */
	T_EQ(COMMIT(op_mkdir("/tmp1/"), op_puts("/tmp1/", "k", "v"), op_rmdir("/tmp1/")), 0);
	T_EQ(exists(now(), "/tmp1/"), 0);
	/* Put into a recreated directory after the old incarnation's key
	 * version chain existed: the old versions stay invisible. */
	T_EQ(COMMIT(op_rmdir("/r/")), 0);
	T_EQ(COMMIT(op_mkdir("/r/"), op_puts("/r/", "k4", "e")), 0);
	EXPECT_STR(now(), "/r/", "k4", "e", now());
	EXPECT_STR(t5, "/r/", "k4", "d", t5);
	EXPECT_ABSENT(now() - 1, "/r/", "k4");
	/* put_if_absent after recreate: the old incarnation's key is gone. */
	T_EQ(COMMIT(op_rmdir("/r/"), op_mkdir("/r/"), op_if_absent("/r/", "k4", "f")), 0);
	EXPECT_STR(now(), "/r/", "k4", "f", now());
	T_EQ(COMMIT(op_rmdir("/r/")), 0);
	printf("recreate: ok\n");
}

static void test_rmdir_prefix(void)
{
	T_EQ(COMMIT(op_mkdir("/a/"), op_mkdir("/a/b/"), op_mkdir("/a/b/c/"), op_mkdir("/ab/"),
		    op_mkdir("/b/"), op_puts("/a/b/c/", "k", "v"), op_puts("/ab/", "k", "w")),
	     0);
	uint64_t t1 = now();
	T_EQ(COMMIT(op_rmdir("/a/")), 0);
	uint64_t t2 = now();
	T_EQ(exists(t2, "/a/"), 0);
	T_EQ(exists(t2, "/a/b/"), 0);
	T_EQ(exists(t2, "/a/b/c/"), 0);
	T_EQ(exists(t2, "/ab/"), 1);
	T_EQ(exists(t2, "/b/"), 1);
	EXPECT_STR(t2, "/ab/", "k", "w", t1);
	EXPECT_ABSENT(t2, "/a/b/c/", "k");
	EXPECT_STR(t1, "/a/b/c/", "k", "v", t1);
	EXPECT_DIRS(t1, "/", "/a/", "/a/b/", "/a/b/c/", "/ab/", "/b/");
	EXPECT_DIRS(t2, "/", "/ab/", "/b/");
	COMMIT_FAIL(-ENOENT, 0, op_rmdir("/a/"));

	/* rmdir of a name that is not a directory itself but has some under
	 * it: succeeds and removes those. */
	T_EQ(COMMIT(op_mkdir("/a/b/c/"), op_mkdir("/a/bc/")), 0);
	T_EQ(COMMIT(op_rmdir("/a/b/")), 0);
	EXPECT_DIRS(now(), "/", "/a/bc/", "/ab/", "/b/");
	COMMIT_FAIL(-ENOENT, 0, op_rmdir("/a/b/"));
	COMMIT_FAIL(-ENOENT, 0, op_rmdir("/zz/"));
	/* /a/bc/ is not under /a/b/ but is under /a/. */
	T_EQ(COMMIT(op_rmdir("/a/")), 0);
	EXPECT_DIRS(now(), "/", "/ab/", "/b/");
	/* rmdir inside a batch followed by a put into a removed nested dir. */
	T_EQ(COMMIT(op_mkdir("/a/"), op_mkdir("/a/x/")), 0);
	COMMIT_FAIL(-ENOENT, 1, op_rmdir("/a/"), op_puts("/a/x/", "k", "v"));
	EXPECT_DIRS(now(), "/", "/a/", "/a/x/", "/ab/", "/b/");
	T_EQ(COMMIT(op_rmdir("/a/"), op_rmdir("/ab/"), op_rmdir("/b/")), 0);
	EXPECT_NO_DIRS(now(), "/");
	printf("rmdir prefix: ok\n");
}

static void test_dirs_order(void)
{
	/* Created in a scrambled order; byte order is what dirs_iter gives. */
	static const char *const names[] = {"/b/", "/a0/",    "/a/b/",  "/a-/",  "/ab/",
					    "/a/", "/a/b/c/", "/\x7f/", "/a/a/", "/B/"};
	shm_commit_begin(root);
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		struct shm_op o = op_mkdir(names[i]);
		size_t f;
		T_EQ(shm_apply_batch(root, &o, 1, &f), 0);
	}
	uint64_t t;
	T_EQ(shm_commit_publish(root, &t), 1);
	EXPECT_DIRS(t, "/", "/B/", "/a-/", "/a/", "/a/a/", "/a/b/", "/a/b/c/", "/a0/", "/ab/", "/b/",
		    "/\x7f/");
	EXPECT_DIRS(t, "/a", "/a-/", "/a/", "/a/a/", "/a/b/", "/a/b/c/", "/a0/", "/ab/");
	EXPECT_DIRS(t, "/a/", "/a/", "/a/a/", "/a/b/", "/a/b/c/");
	EXPECT_DIRS(t, "/a/b", "/a/b/", "/a/b/c/");
	EXPECT_DIRS(t, "/a/b/c/", "/a/b/c/");
	EXPECT_NO_DIRS(t, "/a/b/c/d");
	EXPECT_NO_DIRS(t, "/c");
	EXPECT_DIRS(t, "/b", "/b/");
	EXPECT_NO_DIRS(t - 1, "/");
	/* An empty prefix lists everything. */
	EXPECT_DIRS(t, "", "/B/", "/a-/", "/a/", "/a/a/", "/a/b/", "/a/b/c/", "/a0/", "/ab/", "/b/",
		    "/\x7f/");

	/* Early stop: fn's value is returned and no more calls are made. */
	struct names ns = {.n = 0, .stop_after = 3};
	T_EQ(shm_dirs_iter(seg, t, "/", 1, collect_dir, &ns), 42);
	T_EQ(ns.n, 3);
	T_ASSERT(strcmp(ns.v[2], "/a/") == 0);

	/* A removed directory disappears from later listings only. */
	T_EQ(COMMIT(op_rmdir("/a/b/")), 0);
	EXPECT_DIRS(now(), "/a/", "/a/", "/a/a/");
	EXPECT_DIRS(t, "/a/", "/a/", "/a/a/", "/a/b/", "/a/b/c/");
	shm_commit_begin(root);
	static const char *const rm[] = {"/B/", "/a-/", "/a/", "/a0/", "/ab/", "/b/", "/\x7f/"};
	for (size_t i = 0; i < sizeof rm / sizeof rm[0]; i++) {
		struct shm_op o = op_rmdir(rm[i]);
		size_t f;
		T_EQ(shm_apply_batch(root, &o, 1, &f), 0);
	}
	T_EQ(shm_commit_publish(root, &t), 1);
	EXPECT_NO_DIRS(t, "");
	printf("dirs order: ok\n");
}

static int stop_key(const void *k, size_t kn, const struct shm_value *v, void *arg)
{
	(void)k, (void)kn, (void)v;
	return ++*(int *)arg == 2 ? -7 : 0;
}

static void test_dir_iter(void)
{
	T_EQ(COMMIT(op_mkdir("/it/"), op_mkdir("/it/sub/"), op_mkdir("/it2/"), op_puts("/it/", "a", "1"),
		    op_puts("/it/", "b", "2"), op_puts("/it/", "c", "3"), op_puts("/it/sub/", "x", "9"),
		    op_puts("/it2/", "a", "8")),
	     0);
	uint64_t t1 = now();
	T_EQ(COMMIT(op_del("/it/", "b"), op_puts("/it/", "c", "33"), op_puts("/it/", "d", "4")), 0);
	uint64_t t2 = now();
	/* Keys of nested or similarly named directories are not listed. */
	EXPECT_KEYS(t1, "/it/", "a=1", "b=2", "c=3");
	EXPECT_KEYS(t2, "/it/", "a=1", "c=33", "d=4");
	EXPECT_KEYS(t2, "/it/sub/", "x=9");
	EXPECT_KEYS(t2, "/it2/", "a=8");
	struct keys ks = {.n = 0};
	T_EQ(shm_dir_iter(seg, t2, "/it/", 4, collect_key, &ks), 0);
	for (size_t i = 0; i < ks.n; i++)
		T_EQ(ks.tick[i], strcmp(ks.k[i], "a") == 0 ? t1 : t2);
	int calls = 0;
	T_EQ(shm_dir_iter(seg, t2, "/it/", 4, stop_key, &calls), -7);
	T_EQ(calls, 2);
	T_EQ(shm_dir_iter(seg, t2, "/none/", 6, count_key, &(size_t){0}), -ENOENT);
	T_EQ(COMMIT(op_rmdir("/it/"), op_rmdir("/it2/")), 0);
	printf("dir iter: ok\n");
}

static void test_conditional(void)
{
	T_EQ(COMMIT(op_mkdir("/c/")), 0);
	/* put_if_absent */
	T_EQ(COMMIT(op_if_absent("/c/", "k", "v1")), 0);
	uint64_t t1 = now();
	EXPECT_STR(t1, "/c/", "k", "v1", t1);
	COMMIT_FAIL(-EEXIST, 0, op_if_absent("/c/", "k", "v2"));
	EXPECT_STR(now(), "/c/", "k", "v1", t1);
	T_EQ(COMMIT(op_del("/c/", "k")), 0);
	T_EQ(COMMIT(op_if_absent("/c/", "k", "v3")), 0);
	uint64_t t3 = now();
	EXPECT_STR(t3, "/c/", "k", "v3", t3);
	COMMIT_FAIL(-ENOENT, 0, op_if_absent("/nodir/", "k", "v"));
	/* Within one batch, a key put earlier is present. */
	COMMIT_FAIL(-EEXIST, 1, op_if_absent("/c/", "n", "1"), op_if_absent("/c/", "n", "2"));
	EXPECT_ABSENT(now(), "/c/", "n");

	/* put_if_tick */
	COMMIT_FAIL(-ECANCELED, 0, op_if_tick("/c/", "k", "x", t3 - 1));
	COMMIT_FAIL(-ECANCELED, 0, op_if_tick("/c/", "k", "x", 0));
	COMMIT_FAIL(-ECANCELED, 0, op_if_tick("/c/", "k", "x", t3 + 1));
	EXPECT_STR(now(), "/c/", "k", "v3", t3);
	T_EQ(COMMIT(op_if_tick("/c/", "k", "v4", t3)), 0);
	uint64_t t4 = now();
	EXPECT_STR(t4, "/c/", "k", "v4", t4);
	/* The condition is the current version's tick: t3 is stale now. */
	COMMIT_FAIL(-ECANCELED, 0, op_if_tick("/c/", "k", "v5", t3));
	/* 0 means absent: for a key never written and for a deleted key. */
	T_EQ(COMMIT(op_if_tick("/c/", "new", "n1", 0)), 0);
	EXPECT_STR(now(), "/c/", "new", "n1", now());
	T_EQ(COMMIT(op_del("/c/", "k")), 0);
	uint64_t tdel = now();
	COMMIT_FAIL(-ECANCELED, 0, op_if_tick("/c/", "k", "x", t4));
	COMMIT_FAIL(-ECANCELED, 0, op_if_tick("/c/", "k", "x", tdel));
	T_EQ(COMMIT(op_if_tick("/c/", "k", "v6", 0)), 0);
	EXPECT_STR(now(), "/c/", "k", "v6", now());
	COMMIT_FAIL(-ENOENT, 0, op_if_tick("/nodir/", "k", "v", 0));
	/* After rmdir + mkdir the key is absent in the new incarnation. */
	uint64_t tk = now();
	T_EQ(COMMIT(op_rmdir("/c/"), op_mkdir("/c/")), 0);
	COMMIT_FAIL(-ECANCELED, 0, op_if_tick("/c/", "k", "x", tk));
	T_EQ(COMMIT(op_if_tick("/c/", "k", "v7", 0)), 0);

	/* add */
	T_EQ(COMMIT(op_add("/c/", "n", 5)), 0);
	EXPECT_COUNTER(now(), "/c/", "n", 5);
	T_EQ(COMMIT(op_add("/c/", "n", -12)), 0);
	EXPECT_COUNTER(now(), "/c/", "n", -7);
	EXPECT_COUNTER(now() - 1, "/c/", "n", 5);
	T_EQ(COMMIT(op_add("/c/", "n", 3), op_add("/c/", "n", 4)), 0);
	EXPECT_COUNTER(now(), "/c/", "n", 0);
	T_EQ(COMMIT(op_add("/c/", "z", 0)), 0);
	EXPECT_COUNTER(now(), "/c/", "z", 0);
	/* another length is EINVAL (k holds "v7"; an empty value too) */
	COMMIT_FAIL(-EINVAL, 0, op_add("/c/", "k", 1));
	T_EQ(COMMIT(op_puts("/c/", "e", "")), 0);
	COMMIT_FAIL(-EINVAL, 0, op_add("/c/", "e", 1));
	uint8_t nine[9] = {0};
	T_EQ(COMMIT(op_put("/c/", "9", 1, nine, 9)), 0);
	COMMIT_FAIL(-EINVAL, 0, op_add("/c/", "9", 1));
	/* A put 8-byte value counts as a counter. */
	uint8_t b[8];
	le64(b, 1000);
	T_EQ(COMMIT(op_put("/c/", "p", 1, b, 8)), 0);
	T_EQ(COMMIT(op_add("/c/", "p", 1)), 0);
	EXPECT_COUNTER(now(), "/c/", "p", 1001);
	/* overflow both ways is ERANGE and leaves the value alone */
	T_EQ(COMMIT(op_add("/c/", "big", INT64_MAX)), 0);
	COMMIT_FAIL(-ERANGE, 0, op_add("/c/", "big", 1));
	EXPECT_COUNTER(now(), "/c/", "big", INT64_MAX);
	T_EQ(COMMIT(op_add("/c/", "big", -1), op_add("/c/", "big", 1)), 0);
	EXPECT_COUNTER(now(), "/c/", "big", INT64_MAX);
	T_EQ(COMMIT(op_add("/c/", "small", INT64_MIN)), 0);
	COMMIT_FAIL(-ERANGE, 0, op_add("/c/", "small", -1));
	COMMIT_FAIL(-ERANGE, 1, op_add("/c/", "small", 1), op_add("/c/", "small", -2));
	EXPECT_COUNTER(now(), "/c/", "small", INT64_MIN);
	T_EQ(COMMIT(op_add("/c/", "small", INT64_MAX)), 0);
	EXPECT_COUNTER(now(), "/c/", "small", -1);
	COMMIT_FAIL(-ENOENT, 0, op_add("/nodir/", "n", 1));
	/* After del, add counts from 0 again. */
	T_EQ(COMMIT(op_del("/c/", "n"), op_add("/c/", "n", 2)), 0);
	EXPECT_COUNTER(now(), "/c/", "n", 2);
	/* The counter's bytes are little-endian whatever the host. */
	struct shm_value v;
	T_EQ(get(now(), "/c/", "p", 1, &v), 0);
	T_EQ(((const uint8_t *)v.data)[0], 1001 & 0xff);
	T_EQ(((const uint8_t *)v.data)[1], 1001 >> 8);
	T_EQ(COMMIT(op_rmdir("/c/")), 0);
	printf("conditional: ok\n");
}

static void test_atomic_batches(void)
{
	/* A failure at op 2 undoes the mkdir and put before it. */
	uint64_t t0 = now();
	COMMIT_FAIL(-ENOENT, 2, op_mkdir("/x/"), op_puts("/x/", "k", "v"), op_puts("/missing/", "k", "v"));
	T_EQ(now(), t0);
	T_EQ(exists(now(), "/x/"), 0);
	EXPECT_NO_DIRS(now(), "/");

	/* Undo must restore overwritten, deleted and removed state too. */
	T_EQ(COMMIT(op_mkdir("/u/"), op_mkdir("/u/n/"), op_puts("/u/", "a", "1"), op_puts("/u/", "b", "2"),
		    op_puts("/u/n/", "c", "3"), op_add("/u/", "cnt", 10)),
	     0);
	uint64_t t1 = now();
	COMMIT_FAIL(-EEXIST, 7, op_puts("/u/", "a", "changed"), op_del("/u/", "b"),
		    op_puts("/u/", "new", "x"), op_add("/u/", "cnt", 5), op_rmdir("/u/n/"), op_mkdir("/u/n/"),
		    op_puts("/u/n/", "d", "4"), op_mkdir("/u/"));
	T_EQ(now(), t1);
	/* cnt holds 10 as 8 LE bytes: "\n" then NULs, which end the C string */
	EXPECT_KEYS(t1, "/u/", "a=1", "b=2", "cnt=\n");
	EXPECT_KEYS(t1, "/u/n/", "c=3");
	EXPECT_COUNTER(t1, "/u/", "cnt", 10);
	COMMIT_FAIL(-ENOENT, 2, op_rmdir("/u/"), op_mkdir("/u/"), op_puts("/u/n/", "c", "4"));
	EXPECT_KEYS(t1, "/u/n/", "c=3");
	EXPECT_DIRS(t1, "/", "/u/", "/u/n/");

	/* Two batches in one group, the second rejected: the first is
	 * published, the second leaves nothing. */
	shm_commit_begin(root);
	struct shm_op b1[] = {op_puts("/u/", "a", "g1"), op_mkdir("/g/")};
	struct shm_op b2[] = {op_puts("/u/", "b", "g2"), op_mkdir("/h/"), op_del("/u/", "absent")};
	struct shm_op b3[] = {op_puts("/g/", "k", "g3")}; /* sees batch 1's mkdir */
	struct shm_op b4[] = {op_puts("/h/", "k", "g4")}; /* batch 2's mkdir is gone */
	size_t f = 99;
	T_EQ(shm_apply_batch(root, b1, 2, &f), 0);
	T_EQ(shm_apply_batch(root, b2, 3, &f), -ENOENT);
	T_EQ(f, 2);
	T_EQ(shm_apply_batch(root, b3, 1, &f), 0);
	T_EQ(shm_apply_batch(root, b4, 1, &f), -ENOENT);
	T_EQ(f, 0);
	/* Nothing is visible before publish. */
	T_EQ(shm_published_tick(seg), t1);
	uint64_t t2;
	T_EQ(shm_commit_publish(root, &t2), 1);
	T_EQ(t2, t1 + 1);
	EXPECT_STR(t2, "/u/", "a", "g1", t2);
	EXPECT_STR(t2, "/u/", "b", "2", t1);
	EXPECT_STR(t2, "/g/", "k", "g3", t2);
	T_EQ(exists(t2, "/h/"), 0);
	EXPECT_DIRS(t2, "/", "/g/", "/u/", "/u/n/");

	/* A group whose batches were all rejected publishes nothing. */
	shm_commit_begin(root);
	T_EQ(shm_apply_batch(root, b2, 3, &f), -ENOENT);
	struct shm_op b5[] = {op_mkdir("/g/")};
	T_EQ(shm_apply_batch(root, b5, 1, &f), -EEXIST);
	uint64_t t3 = 12345;
	T_EQ(shm_commit_publish(root, &t3), 0);
	T_EQ(now(), t2);
	T_EQ(shm_published_tick(seg), t2);
	/* An empty group publishes nothing either, and the next real commit
	 * takes the next tick. */
	shm_commit_begin(root);
	T_EQ(shm_commit_publish(root, &t3), 0);
	T_EQ(now(), t2);
	T_EQ(COMMIT(op_puts("/g/", "k", "after")), 0);
	T_EQ(now(), t2 + 1);
	EXPECT_STR(t2 + 1, "/g/", "k", "after", t2 + 1);
	T_EQ(COMMIT(op_rmdir("/g/"), op_rmdir("/u/")), 0);
	printf("atomic batches: ok\n");
}

int main(void)
{
	struct shm_root_opts opts = {.capacity = (size_t)512 << 20, .poison = true};
	struct shm_err err = {{0}};
	int rc = shm_root_create(&root, &opts, &err);
	if (rc < 0)
		T_FAIL("shm_root_create: %s (%s)", strerror(-rc), err.msg);
	seg = shm_root_seg(root);
	struct shm_stats st;
	shm_root_stats(root, &st);
	const uint64_t in_use_empty = st.bytes_in_use;
	printf("initial tick %" PRIu64 ", bytes_in_use %" PRIu64 "\n", shm_root_tick(root), in_use_empty);
	T_EQ(shm_published_tick(seg), shm_root_tick(root));

	test_basic();
	test_value_sizes();
	test_keys();
	test_dir_names();
	test_many_keys();
	test_snapshots();
	test_recreate();
	test_rmdir_prefix();
	test_dirs_order();
	test_dir_iter();
	test_conditional();
	test_atomic_batches();

	/* Everything was removed. With no reader and no cursor, a few more
	 * ticks (tombstones and deleted incarnations go one tick after they
	 * are unlinked) return the arena exactly to its empty level: nothing
	 * any operation above allocated leaked. */
	struct shm_reclaim_report rep;
	for (int i = 0; i < 3; i++) {
		T_OK(shm_reclaim(root, UINT64_MAX, UINT64_MAX, 0, &rep));
		T_ASSERT(!rep.more);
		T_EQ(COMMIT(op_mkdir("/end/")), 0);
		T_OK(shm_reclaim(root, UINT64_MAX, UINT64_MAX, 0, &rep));
		T_EQ(COMMIT(op_rmdir("/end/")), 0);
	}
	/* With no reader online, what the first call unlinks (tagged with the
	 * next tick) the second may free. */
	T_OK(shm_reclaim(root, UINT64_MAX, UINT64_MAX, 0, &rep));
	T_OK(shm_reclaim(root, UINT64_MAX, UINT64_MAX, 0, &rep));
	shm_root_stats(root, &st);
	printf("end: tick %" PRIu64 ", bytes_in_use %" PRIu64 " (empty: %" PRIu64 "), retired %" PRIu64
	       ", tombstones %" PRIu64 ", log used %" PRIu64 "\n",
	       st.tick, st.bytes_in_use, in_use_empty, st.retired_bytes, st.tombstones, st.log_bytes_used);
	T_EQ(st.directories, 0);
	T_EQ(st.keys, 0);
	T_EQ(st.tombstones, 0);
	T_EQ(st.retired_bytes, 0);
	T_EQ(st.log_bytes_used, 0);
	T_EQ(st.bytes_in_use, in_use_empty);
	shm_root_destroy(root);
	printf("test_index: ok\n");
	return 0;
}
