/* Churn: memory stays flat under a long run of create/fill/remove.
 *
 * Each cycle is one tick: rmdir the previous cycle's directory, mkdir a fresh
 * one (/churn/<i>/, so the directory-name index churns too), three puts of
 * sizes cycling through 8, 100, 1000 and 5000 bytes, one put over the 8 KiB
 * small-object limit every 16 cycles, and an overwrite in a directory that
 * lives throughout (/stable/, 16 keys, so superseded versions churn too).
 * A simulated reader lags 3 ticks behind: after every commit shm_reclaim runs
 * with min_read_epoch = min_cursor = tick - 3, and the reader's snapshot is
 * checked byte for byte (freed memory is poisoned, so reading reclaimed memory
 * would show).
 *
 * What it proves: bytes_in_use after the last cycle is within 1% of the value
 * after cycle 1,000, and the segment did not grow after cycle 1,000 either:
 * everything retired is eventually freed and the freed space is reused. The
 * change-log ring is one fixed allocation of log_size bytes that dominates
 * bytes_in_use here, so the 1% bound is also applied to bytes_in_use without
 * it (the data: versions, tables, incarnations, names), where a leak of one
 * small object every few hundred cycles would show.
 *
 * Usage: test_churn [cycles]   (default 1,000,000). The first measurement is
 * taken after the first cycle >= 1,000 with the same phase of the 16-cycle
 * workload as the last one (cycle 1,008 for the default), so both see the
 * same mix of live objects.
 */
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "shm.h"
#include "testutil.h"

#define LAG 3
#define BIG 10000

static struct shm_root *root;
static struct shm_seg *seg;
static uint8_t pattern[BIG];

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void dir_name(char *out, size_t n, uint64_t i)
{
	snprintf(out, n, "/churn/%" PRIu64 "/", i);
}

static size_t value_len(uint64_t i, int j)
{
	static const size_t sizes[4] = {8, 100, 1000, 5000};
	if (j == 3)
		return BIG;
	return sizes[(i + (uint64_t)j) % 4];
}

/* A value is the pattern with (cycle, key) stamped over its first bytes. */
static void make_value(uint8_t *buf, uint64_t i, int j, size_t len)
{
	uint64_t stamp[2] = {i, (uint64_t)j};
	memcpy(buf, pattern, len);
	memcpy(buf, stamp, len < 16 ? len : 16);
}

static void check_value(uint64_t epoch, const char *dir, uint64_t i, int j)
{
	static uint8_t want[BIG];
	char key[4] = {'k', (char)('0' + j), 0, 0};
	struct shm_value v;
	int rc = shm_get(seg, epoch, dir, strlen(dir), key, 2, &v);
	if (rc != 0)
		T_FAIL("reader at %" PRIu64 ": get %s %s: %d", epoch, dir, key, rc);
	size_t len = value_len(i, j);
	make_value(want, i, j, len);
	if (v.len != len || memcmp(v.data, want, len) != 0)
		T_FAIL("reader at %" PRIu64 ": %s %s has wrong bytes (len %zu, want %zu)", epoch, dir, key,
		       v.len, len);
}

int main(int argc, char **argv)
{
	uint64_t cycles = argc > 1 ? strtoull(argv[1], NULL, 0) : 1000000;
	T_ASSERT(cycles >= 1016);
	const uint64_t mark = 1000 + (cycles - 1000) % 16;
	for (size_t b = 0; b < BIG; b++)
		pattern[b] = (uint8_t)(b * 7 + 3);

	struct shm_root_opts opts = {.capacity = (size_t)256 << 20, .poison = true};
	struct shm_err err = {{0}};
	int rc = shm_root_create(&root, &opts, &err);
	if (rc < 0)
		T_FAIL("shm_root_create: %s (%s)", strerror(-rc), err.msg);
	seg = shm_root_seg(root);

	static uint8_t vals[4][BIG];
	char stable_val[100];
	memset(stable_val, 's', sizeof stable_val);
	{
		struct shm_op ops[17] = {{.kind = SHM_OP_MKDIR, .dir = "/stable/", .dir_len = 8}};
		static char sk[16][16];
		for (int k = 0; k < 16; k++) {
			snprintf(sk[k], sizeof sk[k], "s%d", k);
			ops[1 + k] = (struct shm_op){.kind = SHM_OP_PUT,
						     .dir = "/stable/",
						     .dir_len = 8,
						     .key = sk[k],
						     .key_len = strlen(sk[k]),
						     .value = stable_val,
						     .value_len = 100};
		}
		size_t f;
		shm_commit_begin(root);
		T_EQ(shm_apply_batch(root, ops, 17, &f), 0);
		uint64_t t;
		T_EQ(shm_commit_publish(root, &t), 1);
	}
	uint64_t first_tick = shm_root_tick(root) + 1;

	struct shm_stats st;
	uint64_t in_use_mark = 0, seg_mark = 0, pages_mark = 0;
	double t0 = now_s(), t_mark = 0;
	char dir[64], prev[64] = "";
	uint64_t reclaimed = 0, reads = 0;
	for (uint64_t i = 0; i < cycles; i++) {
		struct shm_op ops[8];
		size_t n = 0;
		if (i > 0)
			ops[n++] =
				(struct shm_op){.kind = SHM_OP_RMDIR, .dir = prev, .dir_len = strlen(prev)};
		dir_name(dir, sizeof dir, i);
		ops[n++] = (struct shm_op){.kind = SHM_OP_MKDIR, .dir = dir, .dir_len = strlen(dir)};
		int nput = i % 16 == 0 ? 4 : 3;
		static const char *const keys[4] = {"k0", "k1", "k2", "k3"};
		for (int j = 0; j < nput; j++) {
			size_t len = value_len(i, j);
			make_value(vals[j], i, j, len);
			ops[n++] = (struct shm_op){.kind = SHM_OP_PUT,
						   .dir = dir,
						   .dir_len = strlen(dir),
						   .key = keys[j],
						   .key_len = 2,
						   .value = vals[j],
						   .value_len = len};
		}
		char sk[16];
		snprintf(sk, sizeof sk, "s%d", (int)(i % 16));
		stable_val[0] = (char)i;
		ops[n++] = (struct shm_op){.kind = SHM_OP_PUT,
					   .dir = "/stable/",
					   .dir_len = 8,
					   .key = sk,
					   .key_len = strlen(sk),
					   .value = stable_val,
					   .value_len = 100};
		size_t f = SIZE_MAX;
		shm_commit_begin(root);
		rc = shm_apply_batch(root, ops, n, &f);
		if (rc != 0)
			T_FAIL("cycle %" PRIu64 ": batch rejected: %d (%s) at op %zu", i, rc, strerror(-rc),
			       f);
		uint64_t t;
		T_EQ(shm_commit_publish(root, &t), 1);
		T_EQ(t, first_tick + i);
		memcpy(prev, dir, sizeof prev);

		/* The lagging reader: its epoch is t - LAG, where cycle i - LAG's
		 * directory is the one visible. */
		uint64_t epoch = t - LAG;
		struct shm_reclaim_report rep;
		T_OK(shm_reclaim(root, epoch, epoch, 0, &rep));
		T_ASSERT(!rep.more);
		reclaimed += rep.objects_freed;
		if (i >= LAG) {
			char rdir[64];
			dir_name(rdir, sizeof rdir, i - LAG);
			int np = (i - LAG) % 16 == 0 ? 4 : 3;
			for (int j = 0; j < np; j++)
				check_value(epoch, rdir, i - LAG, j);
			reads += (uint64_t)np;
			/* and the reader does not see the newer ones */
			T_EQ(shm_dir_exists(seg, epoch, dir, strlen(dir)), 0);
		}

		if (i + 1 == mark || i + 1 == cycles || (i + 1) % 100000 == 0) {
			shm_root_stats(root, &st);
			if (i + 1 == mark) {
				in_use_mark = st.bytes_in_use;
				seg_mark = st.segment_size;
				pages_mark = st.pages_top;
				t_mark = now_s();
			}
			printf("cycle %8" PRIu64 ": bytes_in_use %" PRIu64 ", free %" PRIu64
			       ", segment %" PRIu64 ", pages_top %" PRIu64 ", retired %" PRIu64
			       " B, tombstones %" PRIu64 ", directories %" PRIu64 ", log used %" PRIu64
			       ", %.1f s\n",
			       i + 1, st.bytes_in_use, st.bytes_free, st.segment_size, st.pages_top,
			       st.retired_bytes, st.tombstones, st.directories, st.log_bytes_used,
			       now_s() - t0);
			fflush(stdout);
		}
	}
	double elapsed = now_s() - t0;
	shm_root_stats(root, &st);
	double drift = ((double)st.bytes_in_use - (double)in_use_mark) / (double)in_use_mark;
	uint64_t ring = shm_arena_round(st.log_size);
	T_ASSERT(in_use_mark > ring && st.bytes_in_use > ring);
	double data_drift = ((double)st.bytes_in_use - (double)in_use_mark) / (double)(in_use_mark - ring);
	printf("churn: %" PRIu64 " cycles in %.2f s (%.1f us/cycle; after cycle %" PRIu64
	       ": %.2f s), %" PRIu64 " objects reclaimed, %" PRIu64 " lagging reads\n",
	       cycles, elapsed, elapsed * 1e6 / (double)cycles, mark, elapsed - (t_mark - t0), reclaimed,
	       reads);
	printf("churn: bytes_in_use %" PRIu64 " after cycle %" PRIu64 ", %" PRIu64
	       " after the last (%+.3f%%); segment %" PRIu64 " -> %" PRIu64 ", pages_top %" PRIu64
	       " -> %" PRIu64 ", high water %" PRIu64 "\n",
	       in_use_mark, mark, st.bytes_in_use, drift * 100, seg_mark, st.segment_size, pages_mark,
	       st.pages_top, st.high_water);
	printf("churn: data bytes (without the %" PRIu64 "-byte log ring) %" PRIu64 " -> %" PRIu64
	       " (%+.3f%%)\n",
	       ring, in_use_mark - ring, st.bytes_in_use - ring, data_drift * 100);
	T_ASSERT(drift <= 0.01 && drift >= -0.01);
	T_ASSERT(data_drift <= 0.01 && data_drift >= -0.01);
	T_ASSERT(st.segment_size <= seg_mark);
	T_EQ(st.directories, 2); /* /stable/ and the last cycle's */
	T_EQ(st.keys, 16 + (uint64_t)((cycles - 1) % 16 == 0 ? 4 : 3));
	shm_root_destroy(root);
	printf("test_churn: ok\n");
	return 0;
}
