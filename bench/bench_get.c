/* Snapshot get latency through a reader's read-only mapping, against the
 * floor of two dependent random loads over the same amount of memory.
 *
 * A get has to find the key's entry in the directory's index and then read
 * the value: two dependent cache misses is the least any hashed index can do
 * when keys are uniform over a large directory. So the floor, measured in the
 * same run, is a pointer chase doing two dependent loads per step over an
 * array of the segment's bytes_in_use, with 4 KiB pages like the segment (the
 * memfd gets no transparent huge pages here, so the floor must not either).
 *
 * Latency without rdtsc: gets are made dependent, like a pointer chase: each
 * value holds the index of the next key to get, so one get cannot start
 * before the previous one has finished, and a batch of 64 of them is timed
 * with clock_gettime and divided by 64. Percentiles are therefore over
 * 64-get batch means: they understate the tail of single gets.
 *
 * Two chases share one directory of N keys: the uniform one follows a random
 * cycle through all N keys (value bytes 0..7), the hot one a random cycle
 * through the first 1K keys (value bytes 8..15).
 */
#include <sys/mman.h>

#include "bench_util.h"
#include "shm.h"

#define KEY_LEN 16
#define VAL_LEN 32
#define BATCH 64
#define HOT_KEYS 1024u
#define LINE 64

static const char DIR_NAME[] = "/bench/";

static void make_key(uint8_t *k, uint64_t i)
{
	uint64_t mix = (i + 1) * 0x9E3779B97F4A7C15ULL;
	mix ^= mix >> 29;
	memcpy(k, &i, 8);
	memcpy(k + 8, &mix, 8);
}

static void commit_or_die(struct shm_root *root, const struct shm_op *ops, size_t n)
{
	size_t failed = 0;
	uint64_t tick;
	struct shm_reclaim_report rep;
	shm_commit_begin(root);
	int rc = shm_apply_batch(root, ops, n, &failed);
	if (rc < 0)
		bench_die("shm_apply_batch", rc);
	rc = shm_commit_publish(root, &tick);
	if (rc != 1)
		bench_die("shm_commit_publish", rc < 0 ? rc : -EIO);
	rc = shm_reclaim(root, tick, tick, 0, &rep);
	if (rc < 0)
		bench_die("shm_reclaim", rc);
}

static struct shm_root *make_root(uint64_t nkeys, size_t capacity, uint64_t *seed)
{
	struct shm_root_opts o = {.capacity = capacity};
	struct shm_err err = {{0}};
	struct shm_root *root = NULL;
	int rc = shm_root_create(&root, &o, &err);
	if (rc < 0) {
		fprintf(stderr, "shm_root_create: %s\n", err.msg);
		bench_die("shm_root_create", rc);
	}
	struct shm_op mk = {.kind = SHM_OP_MKDIR, .dir = DIR_NAME, .dir_len = sizeof DIR_NAME - 1};
	commit_or_die(root, &mk, 1);

	uint64_t *uni = malloc(nkeys * sizeof *uni);
	uint64_t *hot = malloc(HOT_KEYS * sizeof *hot);
	if (!uni || !hot)
		bench_die("malloc", -ENOMEM);
	bench_random_cycle(uni, nkeys, seed);
	bench_random_cycle(hot, HOT_KEYS, seed);

	enum { PRELOAD = 256 };
	struct shm_op ops[PRELOAD];
	uint8_t keys[PRELOAD][KEY_LEN], vals[PRELOAD][VAL_LEN];
	for (uint64_t i = 0; i < nkeys; i += PRELOAD) {
		size_t n = 0;
		for (; n < PRELOAD && i + n < nkeys; n++) {
			uint64_t k = i + n, h = k < HOT_KEYS ? hot[k] : 0;
			make_key(keys[n], k);
			memset(vals[n], 0x5a, VAL_LEN);
			memcpy(vals[n], &uni[k], 8);
			memcpy(vals[n] + 8, &h, 8);
			ops[n] = (struct shm_op){.kind = SHM_OP_PUT,
						 .dir = DIR_NAME,
						 .dir_len = sizeof DIR_NAME - 1,
						 .key = keys[n],
						 .key_len = KEY_LEN,
						 .value = vals[n],
						 .value_len = VAL_LEN};
		}
		commit_or_die(root, ops, n);
	}
	free(uni);
	free(hot);
	return root;
}

/* One timed batch of BATCH dependent gets; `field` picks the cycle. */
static uint64_t get_batch(const struct shm_seg *seg, uint64_t epoch, uint64_t *idx, int field)
{
	uint8_t key[KEY_LEN];
	struct shm_value v;
	uint64_t i = *idx;
	uint64_t t0 = bench_now_ns();
	for (int s = 0; s < BATCH; s++) {
		make_key(key, i);
		int rc = shm_get(seg, epoch, DIR_NAME, sizeof DIR_NAME - 1, key, KEY_LEN, &v);
		if (rc < 0 || v.len != VAL_LEN)
			bench_die("shm_get", rc < 0 ? rc : -EIO);
		memcpy(&i, (const uint8_t *)v.data + 8 * field, 8);
	}
	uint64_t ns = bench_now_ns() - t0;
	*idx = i;
	return ns;
}

/* Throughput of independent gets (the next key does not depend on the last
 * value, so the core may overlap them as far as it can by itself): `many`
 * 0 is a loop of shm_get, otherwise shm_get_many over groups of `many`
 * keys. Keys come from an LCG over the directory, uniform. Gets per second
 * of wall time; the value's first byte is summed so no read is optimised
 * away. */
#define MANY_MAX 256
static double get_throughput(const struct shm_seg *seg, uint64_t epoch, uint64_t nkeys, uint64_t count,
			     size_t many, struct shm_dir_cache *cache, uint64_t *lcg, uint64_t *sink)
{
	uint8_t keys[MANY_MAX][KEY_LEN];
	shmsync_key ks[MANY_MAX];
	struct shm_value vals[MANY_MAX];
	int rcs[MANY_MAX];
	size_t group = many ? many : 1;
	for (size_t j = 0; j < group; j++)
		ks[j] = (shmsync_key){keys[j], KEY_LEN};
	uint64_t x = *lcg, sum = 0, t0 = bench_now_ns();
	for (uint64_t done = 0; done < count; done += group) {
		for (size_t j = 0; j < group; j++) {
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
			make_key(keys[j], (x >> 20) % nkeys);
		}
		if (!many) {
			int rc = cache ? shm_get_cached(seg, cache, epoch, DIR_NAME, sizeof DIR_NAME - 1,
							keys[0], KEY_LEN, &vals[0])
				       : shm_get(seg, epoch, DIR_NAME, sizeof DIR_NAME - 1, keys[0], KEY_LEN,
						 &vals[0]);
			if (rc < 0)
				bench_die("shm_get", rc);
			sum += *(const uint8_t *)vals[0].data;
			continue;
		}
		int rc = shm_get_many(seg, epoch, DIR_NAME, sizeof DIR_NAME - 1, ks, group, vals, rcs);
		if (rc != (int)group)
			bench_die("shm_get_many", rc < 0 ? rc : -ENOENT);
		for (size_t j = 0; j < group; j++)
			sum += *(const uint8_t *)vals[j].data;
	}
	uint64_t ns = bench_now_ns() - t0;
	*lcg = x;
	*sink += sum;
	return (double)count / ((double)ns / 1e9);
}

struct floor_arr {
	uint64_t *lines; /* line i's next index at lines[i * LINE / 8] */
	uint64_t nlines;
	size_t bytes;
};

static void floor_init(struct floor_arr *f, uint64_t bytes, uint64_t *seed)
{
	f->nlines = bytes / LINE;
	if (f->nlines < 2)
		f->nlines = 2;
	f->bytes = f->nlines * LINE;
	f->lines = mmap(NULL, f->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (f->lines == MAP_FAILED)
		bench_die("mmap", -errno);
	/* The segment is a memfd without huge pages; give the floor the same
	 * TLB reach, or it would be unfairly fast on big arrays. */
	madvise(f->lines, f->bytes, MADV_NOHUGEPAGE);
	uint64_t *next = malloc(f->nlines * sizeof *next);
	if (!next)
		bench_die("malloc", -ENOMEM);
	bench_random_cycle(next, f->nlines, seed);
	for (uint64_t i = 0; i < f->nlines; i++)
		f->lines[i * (LINE / 8)] = next[i];
	free(next);
}

/* BATCH steps of two dependent random loads each. */
static uint64_t floor_batch(const struct floor_arr *f, uint64_t *idx)
{
	const volatile uint64_t *l = f->lines;
	uint64_t i = *idx;
	uint64_t t0 = bench_now_ns();
	for (int s = 0; s < BATCH; s++) {
		i = l[i * (LINE / 8)];
		i = l[i * (LINE / 8)];
	}
	uint64_t ns = bench_now_ns() - t0;
	*idx = i;
	return ns;
}

struct dist {
	double median, p99;
};

/* Per-op ns of `nb` batches: median and p99 of the batch means. */
static struct dist summarize(double *per_op, size_t nb)
{
	struct dist d;
	d.median = bench_pct(per_op, nb, 50);
	d.p99 = bench_pct(per_op, nb, 99);
	return d;
}

struct series {
	const char *name;
	struct dist get[64], floor[64];
	double ratio[64];
};

static void run_series(struct series *sr, int r, const struct shm_seg *seg, uint64_t epoch, int field,
		       uint64_t *gidx, const struct floor_arr *f, uint64_t *fidx, size_t nb, double *buf)
{
	for (size_t b = 0; b < nb; b++)
		buf[b] = (double)get_batch(seg, epoch, gidx, field) / BATCH;
	sr->get[r] = summarize(buf, nb);
	for (size_t b = 0; b < nb; b++)
		buf[b] = (double)floor_batch(f, fidx) / BATCH;
	sr->floor[r] = summarize(buf, nb);
	sr->ratio[r] = sr->get[r].median / sr->floor[r].median;
}

static double med_field(const struct dist *d, int n, bool p99)
{
	double v[64];
	for (int i = 0; i < n; i++)
		v[i] = p99 ? d[i].p99 : d[i].median;
	return bench_median(v, (size_t)n);
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	bench_parse(argc, argv, &o,
		    "Snapshot get latency (median, p99) uniform over 1M keys and on a hot set of\n"
		    "1K keys, beside the floor of two dependent random loads over the same memory.");
	bench_pin(o.cpu);

	const uint64_t nkeys = o.quick ? 65536 : 1048576;
	const size_t capacity = o.quick ? ((size_t)1 << 30) : ((size_t)4 << 30);
	/* Uniform: about one pass over the whole cycle per repeat. */
	const size_t nb_uni = (size_t)(nkeys / BATCH);
	const size_t nb_hot = o.quick ? 2048 : 16384;
	const int reps = o.repeats > 64 ? 64 : o.repeats;
	uint64_t seed = 0xC0FFEEu;

	uint64_t t0 = bench_now_ns();
	struct shm_root *root = make_root(nkeys, capacity, &seed);
	double preload_s = (double)(bench_now_ns() - t0) / 1e9;
	struct shm_stats st;
	shm_root_stats(root, &st);

	struct shm_err err = {{0}};
	int fd = shm_seg_reader_fd(shm_root_seg(root), &err);
	if (fd < 0) {
		fprintf(stderr, "shm_seg_reader_fd: %s\n", err.msg);
		bench_die("shm_seg_reader_fd", fd);
	}
	struct shm_seg rseg;
	int rc = shm_seg_open_reader(&rseg, fd, &err);
	if (rc < 0) {
		fprintf(stderr, "shm_seg_open_reader: %s\n", err.msg);
		bench_die("shm_seg_open_reader", rc);
	}
	uint64_t epoch = shm_published_tick(&rseg);

	/* The change log is an arena object too, counted in bytes_in_use, but a
	 * get never touches it: the floor covers the rest (tables, versions,
	 * directory metadata), or a bigger floor array would flatter the ratio.
	 * The hot floor covers what 1K keys occupy, in proportion. */
	uint64_t data_bytes = st.bytes_in_use - st.log_size;
	struct floor_arr fu, fh;
	floor_init(&fu, data_bytes, &seed);
	floor_init(&fh, data_bytes / nkeys * HOT_KEYS, &seed);

	size_t nbmax = nb_uni > nb_hot ? nb_uni : nb_hot;
	double *buf = malloc(nbmax * sizeof *buf);
	if (!buf)
		bench_die("malloc", -ENOMEM);

	/* Timer cost per batch, to show it is negligible next to 64 ops. */
	double tbuf[1024];
	for (int i = 0; i < 1024; i++) {
		uint64_t a = bench_now_ns();
		tbuf[i] = (double)(bench_now_ns() - a);
	}
	double timer_ns = bench_median(tbuf, 1024);

	static struct series uni = {.name = "uniform"}, hot = {.name = "hot"};
	uint64_t gu = 0, gh = 0, fiu = 0, fih = 0;
	/* Warm-up: one pass of each, untimed in effect. */
	run_series(&uni, 0, &rseg, epoch, 0, &gu, &fu, &fiu, nb_uni, buf);
	run_series(&hot, 0, &rseg, epoch, 1, &gh, &fh, &fih, nb_hot, buf);
	for (int r = 0; r < reps; r++) {
		run_series(&uni, r, &rseg, epoch, 0, &gu, &fu, &fiu, nb_uni, buf);
		run_series(&hot, r, &rseg, epoch, 1, &gh, &fh, &fih, nb_hot, buf);
	}

	/* Throughput: single gets (shm_get, and shm_get_cached, a worker's
	 * shmsync_get: the directory remembered, the common path of
	 * shm/get_hot.h) against shm_get_many in groups of 16, 64 and 256,
	 * interleaved within each repeat. The target is against the faster
	 * single mode. */
	enum { NT = 5 };
	static const size_t T_MANY[NT] = {0, 0, 16, 64, 256};
	static const char *const T_NAME[NT] = {"single", "cached", "many16", "many64", "many256"};
	struct shm_dir_cache dcache = {0};
	struct shm_dir_cache *T_CACHE[NT] = {NULL, &dcache, NULL, NULL, NULL};
	double tput[NT][64];
	uint64_t lcg = 12345, sink = 0, tcount = o.quick ? 65536 : 1048576;
	for (int t = 0; t < NT; t++)
		(void)get_throughput(&rseg, epoch, nkeys, tcount / 8, T_MANY[t], T_CACHE[t], &lcg, &sink);
	for (int r = 0; r < reps; r++)
		for (int t = 0; t < NT; t++)
			tput[t][r] = get_throughput(&rseg, epoch, nkeys, tcount, T_MANY[t], T_CACHE[t], &lcg,
						    &sink);
	double tmed[NT];
	for (int t = 0; t < NT; t++)
		tmed[t] = bench_median_copy(tput[t], (size_t)reps);

	json_t *doc = bench_json_new("bench_get", &o);
	json_object_set_new(doc, "keys", json_integer((json_int_t)nkeys));
	json_object_set_new(doc, "hot_keys", json_integer(HOT_KEYS));
	json_object_set_new(doc, "key_len", json_integer(KEY_LEN));
	json_object_set_new(doc, "value_len", json_integer(VAL_LEN));
	json_object_set_new(doc, "gets_per_timed_batch", json_integer(BATCH));
	json_object_set_new(doc, "percentiles_over", json_string("64-op batch means"));
	json_object_set_new(doc, "timer_ns_per_batch", json_real(timer_ns));
	json_object_set_new(doc, "preload_s", json_real(preload_s));
	json_object_set_new(doc, "bytes_in_use", json_integer((json_int_t)st.bytes_in_use));
	json_object_set_new(doc, "log_size", json_integer((json_int_t)st.log_size));
	json_object_set_new(doc, "data_bytes", json_integer((json_int_t)data_bytes));
	json_object_set_new(doc, "segment_size", json_integer((json_int_t)st.segment_size));
	json_object_set_new(doc, "floor_bytes_uniform", json_integer((json_int_t)fu.bytes));
	json_object_set_new(doc, "floor_bytes_hot", json_integer((json_int_t)fh.bytes));
	json_object_set_new(doc, "floor_pages", json_string("4 KiB (MADV_NOHUGEPAGE)"));

	if (!o.json) {
		printf("bench_get: pinned to CPU %d, %d repeats (median of repeats), %s\n", o.cpu, reps,
		       o.quick ? "QUICK: small sizes, targets not evaluated" : "");
		printf("%" PRIu64
		       " keys in one directory; bytes_in_use %.1f MiB of which change log %.1f MiB;\n"
		       "floor arrays: uniform %.1f MiB (bytes_in_use less the log), hot %.2f MiB; 4 KiB "
		       "pages\n"
		       "per-get ns from batches of %d dependent gets (timer %.0f ns/batch)\n\n",
		       nkeys, (double)st.bytes_in_use / 1048576.0, (double)st.log_size / 1048576.0,
		       (double)fu.bytes / 1048576.0, (double)fh.bytes / 1048576.0, BATCH, timer_ns);
		printf("  %-8s %10s %10s %12s %12s %10s  %s\n", "set", "get med", "get p99", "floor med",
		       "floor p99", "get/floor", "target");
	}
	json_t *results = json_array();
	struct series *all[2] = {&uni, &hot};
	for (int i = 0; i < 2; i++) {
		struct series *sr = all[i];
		double gm = med_field(sr->get, reps, false), gp = med_field(sr->get, reps, true);
		double fm = med_field(sr->floor, reps, false), fp = med_field(sr->floor, reps, true);
		double rm = bench_median_copy(sr->ratio, (size_t)reps);
		bool ok = i == 0 ? rm <= 1.5 : gm <= 100.0;
		const char *verdict = o.quick ? "not evaluated" : bench_met(ok);
		json_t *row = json_object();
		json_object_set_new(row, "set", json_string(sr->name));
		json_object_set_new(row, "keys_touched", json_integer(i == 0 ? (json_int_t)nkeys : HOT_KEYS));
		json_object_set_new(row, "get_ns_median", json_real(gm));
		json_object_set_new(row, "get_ns_p99", json_real(gp));
		json_object_set_new(row, "floor_ns_median", json_real(fm));
		json_object_set_new(row, "floor_ns_p99", json_real(fp));
		json_object_set_new(row, "get_over_floor_median", json_real(rm));
		double v[64];
		for (int r = 0; r < reps; r++)
			v[r] = sr->get[r].median;
		json_object_set_new(row, "get_ns_median_repeats", bench_json_array(v, (size_t)reps));
		for (int r = 0; r < reps; r++)
			v[r] = sr->floor[r].median;
		json_object_set_new(row, "floor_ns_median_repeats", bench_json_array(v, (size_t)reps));
		json_object_set_new(row, "target",
				    json_string(i == 0 ? "get <= 1.5x floor" : "get median <= 100 ns"));
		json_object_set_new(row, "target_status", json_string(verdict));
		json_array_append_new(results, row);
		if (!o.json)
			printf("  %-8s %10.1f %10.1f %12.1f %12.1f %9.2fx  %s %s\n", sr->name, gm, gp, fm, fp,
			       rm, i == 0 ? "<= 1.5x floor:" : "<= 100 ns med:", verdict);
	}
	json_object_set_new(doc, "results", results);
	json_t *tp = json_array();
	if (!o.json)
		printf("\nindependent uniform gets, %" PRIu64 " per repeat (checksum %" PRIu64 "):\n"
		       "  %-8s %14s %14s  %s\n",
		       tcount, sink & 0xff, "mode", "gets/s med", "vs best single", "target");
	double single_best = tmed[0] > tmed[1] ? tmed[0] : tmed[1];
	for (int t = 0; t < NT; t++) {
		double ratio = tmed[t] / single_best;
		bool is_single = T_MANY[t] == 0;
		const char *verdict = is_single ? "" : o.quick ? "not evaluated" : bench_met(ratio >= 3.0);
		json_t *row = json_object();
		json_object_set_new(row, "mode", json_string(T_NAME[t]));
		json_object_set_new(row, "group", json_integer((json_int_t)T_MANY[t]));
		json_object_set_new(row, "gets_per_s_median", json_real(tmed[t]));
		json_object_set_new(row, "gets_per_s_repeats", bench_json_array(tput[t], (size_t)reps));
		json_object_set_new(row, "cached", json_boolean(T_CACHE[t] != NULL));
		json_object_set_new(row, "over_single", json_real(ratio));
		if (!is_single)
			json_object_set_new(row, "target", json_string(">= 3x the faster single mode"));
		json_object_set_new(row, "target_status", json_string(is_single ? "n/a" : verdict));
		json_array_append_new(tp, row);
		if (!o.json)
			printf("  %-8s %14.0f %13.2fx  %s%s\n", T_NAME[t], tmed[t], ratio,
			       is_single ? "" : ">= 3x: ", verdict);
	}
	json_object_set_new(doc, "throughput", tp);
	if (!o.json)
		printf("\n");
	bench_json_print(doc);
	json_decref(doc);

	free(buf);
	munmap(fu.lines, fu.bytes);
	munmap(fh.lines, fh.bytes);
	shm_seg_close(&rseg);
	close(fd);
	shm_root_destroy(root);
	return 0;
}
