/* Hash flooding (issue 9, item 7), mounted on the shm layer directly.
 *
 * A worker can read every seed a reader needs, so it can search for keys
 * that collide in a directory's table. This test is that worker: it reads
 * the seed and size of the table the readers use (shm_dir_table), finds
 * keys whose home slot (shm_key_home, the function readers use) is one
 * chosen slot, inserts them into one directory, and re-reads the seed
 * before every batch, so it adapts to every rebuild. The directory already
 * holds FILL random keys, so the attack runs against a big table.
 *
 * What it proves, counting work instead of timing it:
 * - no lookup of the root (put, del) visits more than ROOT_BOUND slots and
 *   tree nodes, and an attack put costs at most MEAN_BOUND on average
 *   (with linear probing to the first empty slot, the cluster grows with
 *   every attack key: about ATTACK/2 on average, ATTACK at the end);
 * - no reader lookup (shm_get_steps) visits more than READ_BOUND, for the
 *   attack keys, the filler and random misses;
 * - every key reads back right at every retained snapshot (each tick of the
 *   attack), and dir_iter lists each key once;
 * - deleting half the attack keys, reclaiming (tombstones unlinked from the
 *   overflow tree), putting them back, and rmdir with full reclamation
 *   leave the right keys and nothing retired.
 */
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "shm.h"
#include "testutil.h"

#define DIR "/flood/"
#define FILL 4000   /* random keys first: the table has 8192 slots then */
#define ATTACK 2000 /* colliding keys; FILL + ATTACK stays under 3/4 of 8192 */
#define BATCH 50    /* attack keys per tick, each batch against the seed it read */
/* A lookup probes at most SHM_PROBE_WINDOW (32) slots and then walks at
 * most 64 internal tree nodes and a leaf while hashes differ (layout.h). */
#define READ_BOUND 100
/* A put of a new key may also walk the tree once more to link its leaf. */
#define ROOT_BOUND 200
#define MEAN_BOUND 100

static struct shm_root *root;
static struct shm_seg *seg;

struct key {
	char k[24];
	size_t n;
	uint64_t tick; /* the tick that put it, 0 while absent */
};

static struct key atk[ATTACK];
static uint64_t epochs[ATTACK / BATCH + 1];
static size_t nepochs;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t commit(const struct shm_op *ops, size_t n)
{
	size_t failed = 0;
	uint64_t t = 0;
	T_OK(shm_commit_begin(root));
	int rc = shm_apply_batch(root, ops, n, &failed);
	if (rc < 0)
		T_FAIL("batch of %zu failed at op %zu: %d (%s)", n, failed, rc, strerror(-rc));
	T_EQ(shm_commit_publish(root, &t), 1);
	return t;
}

static struct shm_op put(const char *k, size_t n)
{
	/* The value is the key: a read checks both. */
	return (struct shm_op){.kind = SHM_OP_PUT,
			       .dir = DIR,
			       .dir_len = strlen(DIR),
			       .key = k,
			       .key_len = n,
			       .value = k,
			       .value_len = n};
}

static uint64_t read_max, read_over;

/* Asserts the key reads as `present` at epoch, within READ_BOUND steps. */
static void check_key(uint64_t epoch, const char *k, size_t n, bool present)
{
	struct shm_value v;
	uint64_t steps = 0;
	int rc = shm_get_steps(seg, epoch, DIR, strlen(DIR), k, n, &v, &steps);
	if (steps > read_max)
		read_max = steps;
	if (steps > READ_BOUND)
		read_over++; /* reported with the figures below */
	/* The batched lookup agrees, on window and tree keys alike. */
	shmsync_key mk = {k, n};
	struct shm_value mv;
	int mrc;
	int found = shm_get_many(seg, epoch, DIR, strlen(DIR), &mk, 1, &mv, &mrc);
	if (found != (rc == 0) || mrc != rc || (rc == 0 && (mv.data != v.data || mv.len != v.len)))
		T_FAIL("get_many %.*s at %" PRIu64 ": %d/%d, get %d", (int)n, k, epoch, found, mrc, rc);
	if (!present) {
		if (rc != -ENOENT)
			T_FAIL("get %.*s at %" PRIu64 ": rc %d, expected absent", (int)n, k, epoch, rc);
		return;
	}
	if (rc != 0)
		T_FAIL("get %.*s at %" PRIu64 ": rc %d (%s)", (int)n, k, epoch, rc, strerror(-rc));
	if (v.len != n || memcmp(v.data, k, n) != 0)
		T_FAIL("get %.*s at %" PRIu64 ": wrong value", (int)n, k, epoch);
}

struct listing {
	size_t n, atk_seen;
	unsigned char seen[ATTACK];
};

static int list_key(const void *k, size_t n, const struct shm_value *v, void *arg)
{
	struct listing *l = arg;
	(void)v;
	l->n++;
	unsigned i;
	if (n > 4 && memcmp(k, "atk-", 4) == 0 && sscanf((const char *)k + 4, "%u", &i) == 1) {
		for (unsigned j = 0; j < ATTACK; j++)
			if (atk[j].n == n && memcmp(atk[j].k, k, n) == 0) {
				T_ASSERT(!l->seen[j]);
				l->seen[j] = 1;
				l->atk_seen++;
			}
	}
	return 0;
}

int main(void)
{
	struct shm_err err;
	struct shm_root_opts o = {.capacity = (size_t)256 << 20, .poison = true};
	int rc = shm_root_create(&root, &o, &err);
	if (rc < 0) {
		fprintf(stderr, "skip: %s\n", err.msg);
		return T_SKIP;
	}
	seg = shm_root_seg(root);
	unsigned long long rs = t_seed(9);
	struct shm_stats st0, st1;
	shm_root_stats(root, &st0);
	commit((struct shm_op[]){{.kind = SHM_OP_MKDIR, .dir = DIR, .dir_len = strlen(DIR)}}, 1);

	static char fill[FILL][24];
	static struct shm_op ops[FILL];
	for (size_t i = 0; i < FILL; i++) {
		snprintf(fill[i], sizeof(fill[i]), "fill-%016llx", t_rand(&rs));
		ops[i] = put(fill[i], strlen(fill[i]));
	}
	for (size_t i = 0; i < FILL; i += 500)
		commit(ops + i, 500);

	/* The attack: keys whose home is slot `target` of the table the
	 * readers use now, found by brute force (2^13 tries per key). */
	struct shm_stats sa, sb;
	shm_root_stats(root, &sa);
	double search = 0;
	uint64_t tries = 0, nslots_seen = 0, seeds_seen = 0, last_seed = 0;
	unsigned ctr = 0;
	for (size_t i = 0; i < ATTACK; i += BATCH) {
		struct shm_table_info ti;
		T_OK(shm_dir_table(seg, shm_published_tick(seg), DIR, strlen(DIR), &ti));
		if (ti.seed != last_seed || !seeds_seen) {
			seeds_seen++;
			last_seed = ti.seed;
		}
		nslots_seen = ti.nslots;
		uint64_t target = 12345 % ti.nslots;
		double t0 = now_s();
		for (size_t j = i; j < i + BATCH; j++) {
			for (;;) {
				char k[24];
				int n = snprintf(k, sizeof(k), "atk-%u", ctr++);
				tries++;
				if (shm_key_home(seg, ti.seed, ti.nslots, k, (size_t)n) == target) {
					memcpy(atk[j].k, k, (size_t)n + 1);
					atk[j].n = (size_t)n;
					break;
				}
			}
			ops[j - i] = put(atk[j].k, atk[j].n);
		}
		search += now_s() - t0;
		uint64_t t = commit(ops, BATCH);
		for (size_t j = i; j < i + BATCH; j++)
			atk[j].tick = t;
		epochs[nepochs++] = t;
	}
	shm_root_stats(root, &sb);
	uint64_t attack_probes = sb.probes - sa.probes;
	printf("attack: %d keys found in %.2f s (%" PRIu64 " tries), %" PRIu64 "-slot table, %" PRIu64
	       " seeds met\n",
	       ATTACK, search, tries, nslots_seen, seeds_seen);
	printf("root: probe_max %" PRIu64 ", %.1f slots+nodes per attack put, %" PRIu64 " rebuilds (%" PRIu64
	       " reseeds)\n",
	       sb.probe_max, (double)attack_probes / ATTACK, sb.table_rebuilds, sb.table_reseeds);

	/* Every retained snapshot: each attack key present from its tick on,
	 * the filler at all of them. */
	for (size_t e = 0; e < nepochs; e++) {
		for (size_t j = 0; j < ATTACK; j++)
			check_key(epochs[e], atk[j].k, atk[j].n, atk[j].tick <= epochs[e]);
		for (size_t j = 0; j < FILL; j += 7)
			check_key(epochs[e], fill[j], strlen(fill[j]), true);
	}
	uint64_t last = shm_published_tick(seg);
	for (size_t j = 0; j < 2000; j++) {
		char k[24];
		int n = snprintf(k, sizeof(k), "miss-%016llx", t_rand(&rs));
		check_key(last, k, (size_t)n, false);
	}
	printf("readers: at most %" PRIu64 " slots+nodes per get over %zu snapshots\n", read_max, nepochs);
	fflush(stdout);

	struct listing *l = calloc(1, sizeof(*l));
	T_ASSERT(l);
	T_OK(shm_dir_iter(seg, last, DIR, strlen(DIR), list_key, l));
	T_EQ(l->n, FILL + ATTACK);
	T_EQ(l->atk_seen, ATTACK);

	bool failed = false;
	if (read_over) {
		fprintf(stderr,
			"FAIL: %" PRIu64 " gets visited more than %d slots and nodes (at most %" PRIu64 ")\n",
			read_over, READ_BOUND, read_max);
		failed = true;
	}
	if (sb.probe_max > ROOT_BOUND) {
		fprintf(stderr, "FAIL: a root lookup visited %" PRIu64 " slots and nodes (bound %d)\n",
			sb.probe_max, ROOT_BOUND);
		failed = true;
	}
	if (attack_probes > (uint64_t)MEAN_BOUND * ATTACK) {
		fprintf(stderr, "FAIL: %.1f slots and nodes per attack put (bound %d)\n",
			(double)attack_probes / ATTACK, MEAN_BOUND);
		failed = true;
	}
	if (failed)
		return 1;
	T_EQ(read_over, 0);

	/* Rejected batches of colliding keys (the last op fails) leave no
	 * trace, whether they went into the window, the tree or a rebuilt
	 * table. */
	for (int b = 0; b < 8; b++) {
		struct shm_table_info ti;
		T_OK(shm_dir_table(seg, shm_published_tick(seg), DIR, strlen(DIR), &ti));
		static char rej[201][24];
		size_t n = 0;
		while (n < 200) {
			int kn = snprintf(rej[n], sizeof(rej[n]), "rej-%u", ctr++);
			if (shm_key_home(seg, ti.seed, ti.nslots, rej[n], (size_t)kn) == 777 % ti.nslots)
				ops[n] = put(rej[n], (size_t)kn), n++;
		}
		ops[n] = put(atk[1].k, atk[1].n);
		ops[n++].kind = SHM_OP_PUT_IF_ABSENT;
		size_t f = 0;
		uint64_t before = shm_published_tick(seg);
		T_OK(shm_commit_begin(root));
		T_EQ(shm_apply_batch(root, ops, n, &f), -EEXIST);
		T_EQ(f, n - 1);
		T_EQ(shm_commit_publish(root, NULL), 0);
		T_EQ(shm_published_tick(seg), before);
		for (size_t j = 0; j + 1 < n; j++)
			check_key(before, rej[j], strlen(rej[j]), false);
		memset(l, 0, sizeof(*l));
		T_OK(shm_dir_iter(seg, before, DIR, strlen(DIR), list_key, l));
		T_EQ(l->n, FILL + ATTACK);
	}
	for (size_t j = 0; j < ATTACK; j++)
		check_key(shm_published_tick(seg), atk[j].k, atk[j].n, true);

	/* Delete every other attack key, let every snapshot go and reclaim:
	 * tombstones leave the window or the tree. */
	size_t nd = 0;
	for (size_t j = 0; j < ATTACK; j += 2)
		ops[nd++] = (struct shm_op){.kind = SHM_OP_DEL,
					    .dir = DIR,
					    .dir_len = strlen(DIR),
					    .key = atk[j].k,
					    .key_len = atk[j].n};
	uint64_t d = commit(ops, nd);
	for (size_t j = 0; j < ATTACK; j++)
		check_key(d, atk[j].k, atk[j].n, j % 2);
	check_key(d - 1, atk[0].k, atk[0].n, true);
	for (int i = 0; i < 3; i++)
		T_OK(shm_reclaim(root, d, d, 0, NULL));
	commit((struct shm_op[]){put("x", 1)}, 1);
	for (int i = 0; i < 3; i++)
		T_OK(shm_reclaim(root, UINT64_MAX, UINT64_MAX, 0, NULL));
	last = shm_published_tick(seg);
	for (size_t j = 0; j < ATTACK; j++)
		check_key(last, atk[j].k, atk[j].n, j % 2);
	nd = 0;
	for (size_t j = 0; j < ATTACK; j += 2)
		ops[nd++] = put(atk[j].k, atk[j].n);
	last = commit(ops, nd);
	for (size_t j = 0; j < ATTACK; j++)
		check_key(last, atk[j].k, atk[j].n, true);
	memset(l, 0, sizeof(*l));
	T_OK(shm_dir_iter(seg, last, DIR, strlen(DIR), list_key, l));
	T_EQ(l->n, FILL + ATTACK + 1);
	T_EQ(l->atk_seen, ATTACK);
	free(l);

	commit((struct shm_op[]){{.kind = SHM_OP_RMDIR, .dir = DIR, .dir_len = strlen(DIR)}}, 1);
	for (int i = 0; i < 4; i++)
		T_OK(shm_reclaim(root, UINT64_MAX, UINT64_MAX, 0, NULL));
	shm_root_stats(root, &st1);
	T_EQ(st1.keys, 0);
	T_EQ(st1.retired_objects, 0);
	T_EQ(st1.tombstones, 0);
	printf("bytes in use: %" PRIu64 " before mkdir, %" PRIu64 " after rmdir\n", st0.bytes_in_use,
	       st1.bytes_in_use);
	T_ASSERT(st1.bytes_in_use <= st0.bytes_in_use + 4096);
	T_EQ(read_over, 0);
	shm_root_destroy(root);
	printf("ok\n");
	return 0;
}
