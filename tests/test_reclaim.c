/* Exact reclamation (the retire rule of DESIGN.md, with the documented
 * departure for tombstones and deleted incarnations), one root process.
 *
 * What it proves, measuring the arena's bytes_in_use and shm_retired_bytes:
 * (a) a version superseded at t is not freed while a reader may be at t-1
 *     (min_read_epoch = t-1: nothing retired at t goes, and the old value is
 *     still intact under poisoning); at min_read_epoch = t exactly
 *     shm_retired_bytes(t) bytes go, which is the old version's rounded size;
 * (b) del at t: the versions the tombstone hides go at t; the tombstone is
 *     unlinked then and goes one tick later; then bytes_in_use is back at the
 *     level before the key was created;
 * (c) rmdir of a directory with 1000 keys at t: nothing goes with t-1 and all
 *     keys stay readable at t-1; the entries and table go at t; the
 *     incarnation and its name later; then bytes_in_use is back at the level
 *     before the directory was created;
 * (d) log records of tick t go only once min_cursor >= t;
 * (e) a budget bounds the objects one call frees (shm.h: at most `budget`),
 *     sets `more`, and repeated calls finish with exactly the bytes that were
 *     retired, then memory is back at the level before.
 */
#include <stdbool.h>
#include <stdint.h>

#include "layout.h"
#include "shm.h"
#include "shmtest.h"
#include "testutil.h"

static struct shm_root *root;
static struct shm_seg *seg;

static uint64_t commit_n(const struct shm_op *ops, size_t n)
{
	return commit_ops(root, ops, n);
}

#define COMMIT(...)                                                                                          \
	commit_n((const struct shm_op[]){__VA_ARGS__},                                                       \
		 sizeof((const struct shm_op[]){__VA_ARGS__}) / sizeof(struct shm_op))

static uint64_t in_use(void)
{
	struct shm_arena_stats st;
	shm_arena_stats(shm_root_arena(root), &st);
	return st.bytes_in_use;
}

static uint64_t now(void)
{
	return shm_root_tick(root);
}

static struct shm_reclaim_report reclaim(uint64_t min_epoch, uint64_t min_cursor)
{
	struct shm_reclaim_report rep;
	T_OK(shm_reclaim(root, min_epoch, min_cursor, 0, &rep));
	T_ASSERT(!rep.more);
	return rep;
}

/* A commit that leaves bytes_in_use unchanged once reclaimed: it overwrites
 * /n/ x with a value of the same size, retiring one version at its tick. */
static uint64_t neutral_commit(void)
{
	static unsigned n;
	char v[17];
	snprintf(v, sizeof v, "neutral%09u", n++);
	return COMMIT(op_puts("/n/", "x", v));
}

/* Frees everything retired so far (no reader, no cursor). Tombstones and
 * deleted incarnations take a later tick, so commit and reclaim until
 * nothing is left waiting. */
static void flush(void)
{
	for (int i = 0; i < 3; i++) {
		reclaim(UINT64_MAX, UINT64_MAX);
		neutral_commit();
	}
	reclaim(now(), now());
	struct shm_stats st;
	shm_root_stats(root, &st);
	T_EQ(st.retired_objects, 0);
	T_EQ(st.retired_bytes, 0);
	T_EQ(st.tombstones, 0);
}

static uint64_t ver_bytes(size_t klen, size_t vlen)
{
	return shm_arena_round(shm_ver_size(klen, vlen));
}

static void expect_value(uint64_t e, const char *dir, const char *k, const void *want, size_t len)
{
	struct shm_value v;
	T_EQ(shm_get(seg, e, dir, strlen(dir), k, strlen(k), &v), 0);
	T_EQ(v.len, len);
	T_ASSERT(memcmp(v.data, want, len) == 0);
}

/* (a) */
static void test_overwrite(void)
{
	uint8_t v1[100], v2[100];
	memset(v1, 0x11, sizeof v1);
	memset(v2, 0x22, sizeof v2);
	COMMIT(op_kind(SHM_OP_MKDIR, "/r/", NULL), op_put("/r/", "k", 1, v1, sizeof v1));
	uint64_t t0 = now();
	flush();
	uint64_t b0 = in_use();
	uint64_t t = COMMIT(op_put("/r/", "k", 1, v2, sizeof v2));
	T_ASSERT(t > t0);
	uint64_t b1 = in_use();
	uint64_t r = shm_retired_bytes(root, t);
	/* One new version allocated, one old version of the same size retired. */
	T_EQ(b1 - b0, ver_bytes(1, sizeof v2));
	T_EQ(r, ver_bytes(1, sizeof v1));

	struct shm_reclaim_report rep = reclaim(t - 1, t - 1);
	T_EQ(rep.objects_freed, 0);
	T_EQ(shm_retired_bytes(root, t), r);
	T_EQ(in_use(), b1);
	expect_value(t - 1, "/r/", "k", v1, sizeof v1);
	expect_value(t, "/r/", "k", v2, sizeof v2);
	/* Repeating with t-1 frees nothing more. */
	rep = reclaim(t - 1, t - 1);
	T_EQ(rep.objects_freed, 0);
	T_EQ(rep.bytes_freed, 0);
	T_EQ(in_use(), b1);

	rep = reclaim(t, t);
	T_EQ(rep.bytes_freed, r);
	T_EQ(rep.objects_freed, 1);
	T_EQ(in_use(), b1 - r);
	T_EQ(in_use(), b0);
	T_EQ(shm_retired_bytes(root, t), 0);
	expect_value(t, "/r/", "k", v2, sizeof v2);
	printf("(a) overwrite: %" PRIu64 " bytes retired at t, freed exactly at min_read_epoch = t\n", r);
}

/* (b) */
static void test_del(void)
{
	COMMIT(op_kind(SHM_OP_MKDIR, "/d/", NULL), op_puts("/d/", "other", "o"));
	flush();
	uint64_t base = in_use();
	uint64_t t1 = COMMIT(op_puts("/d/", "key", "value-1"));
	uint64_t t2 = COMMIT(op_puts("/d/", "key", "value-2"));
	T_EQ(t2, t1 + 1);
	reclaim(t2, t2); /* frees value-1 */
	uint64_t b2 = in_use();
	T_EQ(b2, base + ver_bytes(3, 7));

	uint64_t t3 = COMMIT(op_kind(SHM_OP_DEL, "/d/", "key"));
	uint64_t b3 = in_use();
	T_EQ(b3, b2 + ver_bytes(3, 0)); /* the tombstone */
	uint64_t r3 = shm_retired_bytes(root, t3);
	T_EQ(r3, ver_bytes(3, 7)); /* value-2, hidden by the tombstone */
	struct shm_stats st;
	shm_root_stats(root, &st);
	T_EQ(st.tombstones, 1);

	struct shm_reclaim_report rep = reclaim(t3 - 1, t3 - 1);
	T_EQ(rep.objects_freed, 0);
	T_EQ(in_use(), b3);
	expect_value(t2, "/d/", "key", "value-2", 7);

	rep = reclaim(t3, t3);
	T_EQ(rep.bytes_freed, r3);
	T_EQ(in_use(), b3 - r3);
	/* The tombstone is unlinked now and waits for the next tick. */
	struct shm_value v;
	T_EQ(shm_get(seg, t3, "/d/", 3, "key", 3, &v), -ENOENT);
	T_EQ(shm_retired_bytes(root, t3 + 1), ver_bytes(3, 0));
	/* Repeating at t3 frees nothing: the tombstone is tagged t3+1. */
	rep = reclaim(t3, t3);
	T_EQ(rep.objects_freed, 0);
	T_EQ(in_use(), b3 - r3);

	uint64_t t4 = neutral_commit();
	T_EQ(t4, t3 + 1);
	rep = reclaim(t3, t3);
	T_EQ(rep.objects_freed, 0);
	rep = reclaim(t4, t4);
	T_EQ(rep.bytes_freed, ver_bytes(3, 0) + ver_bytes(1, 16));
	T_EQ(in_use(), base);
	shm_root_stats(root, &st);
	T_EQ(st.tombstones, 0);
	T_EQ(shm_get(seg, t4, "/d/", 3, "key", 3, &v), -ENOENT);
	/* The key can come back and go again. */
	COMMIT(op_puts("/d/", "key", "value-3"));
	expect_value(now(), "/d/", "key", "value-3", 7);
	COMMIT(op_kind(SHM_OP_DEL, "/d/", "key"));
	flush();
	T_EQ(in_use(), base);
	printf("(b) del: hidden versions at t, tombstone at t+1, back to baseline\n");
}

/* (c) */
static void test_rmdir(void)
{
	enum { N = 1000 };
	flush();
	uint64_t base = in_use();
	COMMIT(op_kind(SHM_OP_MKDIR, "/big/", NULL));
	static char keys[N][16];
	static uint64_t vals[N];
	for (int b = 0; b < N; b += 100) {
		struct shm_op ops[100];
		for (int i = 0; i < 100; i++) {
			snprintf(keys[b + i], sizeof keys[b + i], "b%04d", b + i);
			vals[b + i] = (uint64_t)(b + i) * UINT64_C(0x9E3779B97F4A7C15);
			ops[i] = op_put("/big/", keys[b + i], 5, &vals[b + i], 8);
		}
		commit_n(ops, 100);
	}
	flush();
	uint64_t full = in_use();
	T_ASSERT(full - base >= N * ver_bytes(5, 8));

	uint64_t t = COMMIT(op_kind(SHM_OP_RMDIR, "/big/", NULL));
	uint64_t bt = in_use();
	uint64_t rt = shm_retired_bytes(root, t);
	/* entries and table, at least */
	T_ASSERT(rt >= N * ver_bytes(5, 8));

	struct shm_reclaim_report rep = reclaim(t - 1, t - 1);
	uint64_t b1 = in_use();
	T_EQ(b1, bt - rep.bytes_freed);
	T_EQ(shm_retired_bytes(root, t), rt);
	T_EQ(shm_dir_exists(seg, t - 1, "/big/", 5), 1);
	T_EQ(shm_dir_exists(seg, t, "/big/", 5), 0);
	for (int i = 0; i < N; i++)
		expect_value(t - 1, "/big/", keys[i], &vals[i], 8);

	rep = reclaim(t, t);
	T_EQ(rep.bytes_freed, rt);
	T_ASSERT(rep.objects_freed >= N + 1); /* the versions and the table */
	/* The report is truthful; the only allocation a reclaim may make is a
	 * smaller directory-name array when names become empty (compaction). */
	T_ASSERT(in_use() >= b1 - rt && in_use() <= b1 - rt + SHM_ARENA_PAGE);
	T_EQ(shm_retired_bytes(root, t), 0);
	T_EQ(shm_dir_exists(seg, t, "/big/", 5), 0);
	/* What is left of /big/ (incarnation, name, the names array it was in)
	 * was retired with the next tick's tag, and goes when readers pass it. */
	uint64_t left = in_use() - base;
	T_ASSERT(left > 0);
	T_ASSERT(shm_retired_bytes(root, t + 1) > 0);
	uint64_t t1 = neutral_commit();
	T_EQ(t1, t + 1);
	rep = reclaim(t, t);
	T_EQ(rep.objects_freed, 0);
	rep = reclaim(t1, t1);
	printf("(c) rmdir: %d keys, %" PRIu64 " bytes retired at t and freed exactly at t; at t+1 %" PRIu64
	       " bytes freed, in use %" PRIu64 " vs %" PRIu64 " before the directory existed\n",
	       N, rt, rep.bytes_freed, in_use(), base);
	/* Back to the baseline, but for the name array's size: a tick that
	 * adds names works on a copy with room to grow, and compaction makes an
	 * exact one, so the array may have shrunk (never grown). */
	T_ASSERT(in_use() <= base && base - in_use() < SHM_ARENA_PAGE);
}

/* (d) */
static void test_log(void)
{
	flush();
	uint64_t t0 = now();
	reclaim(t0, t0);
	struct shm_stats st;
	shm_root_stats(root, &st);
	uint64_t used0 = st.log_bytes_used;
	uint64_t p0, pt, tt;
	shm_published_state(seg, &tt, &p0);
	uint64_t t1 = COMMIT(op_puts("/n/", "a", "1"), op_puts("/n/", "b", "2"));
	uint64_t t2 = COMMIT(op_puts("/n/", "c", "3"));
	shm_published_state(seg, &tt, &pt);
	shm_root_stats(root, &st);
	T_EQ(st.log_bytes_used - used0, pt - p0);
	/* Readers gone, the cursor still at t0: objects go, records stay. */
	struct shm_reclaim_report rep = reclaim(UINT64_MAX, t0);
	T_EQ(rep.log_records_freed, 0);
	T_EQ(rep.log_bytes_freed, 0);
	rep = reclaim(UINT64_MAX, t1 - 1);
	T_EQ(rep.log_records_freed, 0);
	rep = reclaim(UINT64_MAX, t1);
	T_EQ(rep.log_records_freed, 2);
	rep = reclaim(UINT64_MAX, t1);
	T_EQ(rep.log_records_freed, 0);
	rep = reclaim(UINT64_MAX, t2);
	T_EQ(rep.log_records_freed, 1);
	shm_root_stats(root, &st);
	T_EQ(st.log_bytes_used, used0);
	printf("(d) log: records of tick t freed exactly at min_cursor = t\n");
}

/* (e) */
/* Retires 100 overwritten versions at one tick and ndirs directories of
 * nkeys keys at the next, then reclaims them with `budget`. */
static void test_budget(size_t budget, int ndirs, int nkeys)
{
	flush();
	uint64_t base = in_use();
	/* Other keys in each directory, so the tables' layouts differ. */
	char(*keys)[16] = calloc((size_t)ndirs * (size_t)nkeys, 16);
	struct shm_op *ops = calloc((size_t)nkeys, sizeof *ops);
	T_ASSERT(keys && ops && nkeys >= 100);
	char dirs[64][16];
	T_ASSERT(ndirs <= 64);
	for (int d = 0; d < ndirs; d++) {
		snprintf(dirs[d], sizeof dirs[d], "/bud/%02d/", d);
		COMMIT(op_kind(SHM_OP_MKDIR, dirs[d], NULL));
		for (int i = 0; i < nkeys; i++) {
			char *k = keys[d * nkeys + i];
			snprintf(k, 16, "%02du%04d", d, i);
			ops[i] = op_put(dirs[d], k, 7, "12345678", 8);
		}
		commit_n(ops, (size_t)nkeys);
	}
	flush();
	for (int i = 0; i < 100; i++)
		ops[i] = op_put(dirs[0], keys[i], 7, "abcdefgh", 8);
	uint64_t ta = commit_n(ops, 100);
	uint64_t tb = COMMIT(op_kind(SHM_OP_RMDIR, "/bud/", NULL));
	uint64_t ra = shm_retired_bytes(root, ta), rb = shm_retired_bytes(root, tb);
	T_EQ(ra, 100 * ver_bytes(7, 8));
	T_ASSERT(rb >= (uint64_t)(ndirs * nkeys) * ver_bytes(7, 8));
	uint64_t before = in_use();
	uint64_t calls = 0, objects = 0, bytes = 0, max_objects = 0, over = 0;
	struct shm_reclaim_report rep;
	do {
		T_OK(shm_reclaim(root, tb, tb, budget, &rep));
		calls++;
		objects += rep.objects_freed;
		bytes += rep.bytes_freed;
		if (rep.objects_freed > max_objects)
			max_objects = rep.objects_freed;
		over += rep.objects_freed > budget;
		if (rep.more)
			T_ASSERT(rep.objects_freed > 0); /* each call makes progress */
		T_ASSERT(calls < 1000000);
	} while (rep.more);
	printf("(e) budget %zu, %d dirs of %d keys: %" PRIu64 " objects in %" PRIu64
	       " calls, at most %" PRIu64 " per call (%" PRIu64 " calls over budget)\n",
	       budget, ndirs, nkeys, objects, calls, max_objects, over);
	/* shm.h: "At most `budget` objects" per call. */
	T_ASSERT(max_objects <= budget);
	T_EQ(shm_retired_bytes(root, ta), 0);
	T_EQ(shm_retired_bytes(root, tb), 0);
	T_EQ(bytes, ra + rb);
	/* plus at most a compacted names array (see (c)) */
	T_ASSERT(in_use() >= before - bytes && in_use() <= before - bytes + SHM_ARENA_PAGE);
	T_ASSERT(objects >= 100 + (uint64_t)ndirs * (uint64_t)(nkeys + 1));
	T_ASSERT(calls >= objects / budget);
	/* The rest (incarnations, names) and back to baseline. */
	flush();
	uint64_t tn = neutral_commit();
	reclaim(tn, tn);
	T_EQ(in_use(), base);
	free(keys);
	free(ops);
}

int main(void)
{
	struct shm_root_opts opts = {.capacity = (size_t)64 << 20, .poison = true};
	struct shm_err err = {{0}};
	int rc = shm_root_create(&root, &opts, &err);
	if (rc < 0)
		T_FAIL("shm_root_create: %s (%s)", strerror(-rc), err.msg);
	seg = shm_root_seg(root);
	/* /n/ exists throughout, for the neutral commits. */
	COMMIT(op_kind(SHM_OP_MKDIR, "/n/", NULL), op_puts("/n/", "x", "neutral-initial!"));

	test_overwrite();
	test_del();
	test_log();
	test_rmdir();
	test_budget(10, 1, 1000);
	/* With a budget of 1, a call that frees the entry in a table's last slot
	 * is where the table itself would be freed too; 32 directories make
	 * that case come up in practically every run (random hash seed). */
	test_budget(1, 32, 100);
	shm_root_destroy(root);
	printf("test_reclaim: ok\n");
	return 0;
}
