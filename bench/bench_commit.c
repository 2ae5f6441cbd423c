/* Commit throughput of the root context, in puts/s.
 *
 * One batch per tick (shm_commit_begin / shm_apply_batch / shm_commit_publish)
 * followed by shm_reclaim with min_read_epoch = min_cursor = the new tick, so
 * no reader lags and the cost of retiring and freeing superseded versions is
 * part of every put, as it is in a steady-state root. Puts overwrite random
 * keys of one directory that was preloaded with the whole key space
 * (16-byte keys, 32-byte values).
 *
 * Baseline, measured in the same run, interleaved with the repeats: the same
 * puts into a plain open-addressing hash table in private memory (XXH3 with a
 * seed, linear probing, values inline). Its ratio shows what MVCC, shared
 * memory and the change log cost over the simplest possible map, and it moves
 * with the machine's noise, which absolute puts/s alone would hide. The ratio
 * uses this thread's CPU time on both sides, so time slices taken by other
 * processes on the shared core do not move it; puts/s are wall-clock figures.
 */
#include <xxhash.h>

#include "bench_util.h"
#include "shm.h"

#define KEY_LEN 16
#define VAL_LEN 32
#define MAX_BATCH 256

static const char DIR_NAME[] = "/bench/";

struct workload {
	uint64_t nkeys;
	uint8_t *keys; /* nkeys * KEY_LEN */
};

/* Distinct by construction (the index in the first 8 bytes), hashed-looking
 * in the rest so the keys are not all alike. */
static void make_key(uint8_t *k, uint64_t i)
{
	uint64_t mix = (i + 1) * 0x9E3779B97F4A7C15ULL;
	mix ^= mix >> 29;
	memcpy(k, &i, 8);
	memcpy(k + 8, &mix, 8);
}

static void fill_value(uint8_t *v, uint64_t counter)
{
	for (int j = 0; j < VAL_LEN; j += 8)
		memcpy(v + j, &counter, 8);
}

static void commit_or_die(struct shm_root *root, const struct shm_op *ops, size_t n, uint64_t *tick)
{
	size_t failed = 0;
	struct shm_reclaim_report rep;
	shm_commit_begin(root);
	int rc = shm_apply_batch(root, ops, n, &failed);
	if (rc < 0)
		bench_die("shm_apply_batch", rc);
	rc = shm_commit_publish(root, tick);
	if (rc != 1)
		bench_die("shm_commit_publish", rc < 0 ? rc : -EIO);
	rc = shm_reclaim(root, *tick, *tick, 0, &rep);
	if (rc < 0)
		bench_die("shm_reclaim", rc);
}

static struct shm_root *make_root(const struct workload *w, size_t capacity)
{
	struct shm_root_opts o = {.capacity = capacity};
	struct shm_err err = {{0}};
	struct shm_root *root = NULL;
	int rc = shm_root_create(&root, &o, &err);
	if (rc < 0) {
		fprintf(stderr, "shm_root_create: %s\n", err.msg);
		bench_die("shm_root_create", rc);
	}
	uint64_t tick;
	struct shm_op mk = {.kind = SHM_OP_MKDIR, .dir = DIR_NAME, .dir_len = sizeof DIR_NAME - 1};
	commit_or_die(root, &mk, 1, &tick);

	struct shm_op ops[MAX_BATCH];
	uint8_t vals[MAX_BATCH][VAL_LEN];
	for (uint64_t i = 0; i < w->nkeys; i += MAX_BATCH) {
		size_t n = 0;
		for (; n < MAX_BATCH && i + n < w->nkeys; n++) {
			fill_value(vals[n], i + n);
			ops[n] = (struct shm_op){.kind = SHM_OP_PUT,
						 .dir = DIR_NAME,
						 .dir_len = sizeof DIR_NAME - 1,
						 .key = w->keys + (i + n) * KEY_LEN,
						 .key_len = KEY_LEN,
						 .value = vals[n],
						 .value_len = VAL_LEN};
		}
		commit_or_die(root, ops, n, &tick);
	}
	return root;
}

/* Times `nputs` random overwrites in ticks of `batch` puts; returns wall ns
 * and sets *cpu_ns to this thread's CPU time over the same span. */
static uint64_t run_shm(struct shm_root *root, const struct workload *w, size_t batch, uint64_t nputs,
			uint64_t *seed, uint64_t *cpu_ns)
{
	struct shm_op ops[MAX_BATCH];
	uint8_t vals[MAX_BATCH][VAL_LEN];
	uint64_t tick, counter = *seed;
	for (size_t j = 0; j < batch; j++)
		ops[j] = (struct shm_op){.kind = SHM_OP_PUT,
					 .dir = DIR_NAME,
					 .dir_len = sizeof DIR_NAME - 1,
					 .key_len = KEY_LEN,
					 .value = vals[j],
					 .value_len = VAL_LEN};
	uint64_t c0 = bench_cpu_ns();
	uint64_t t0 = bench_now_ns();
	for (uint64_t done = 0; done < nputs; done += batch) {
		for (size_t j = 0; j < batch; j++) {
			ops[j].key = w->keys + bench_rand_below(seed, w->nkeys) * KEY_LEN;
			fill_value(vals[j], counter++);
		}
		commit_or_die(root, ops, batch, &tick);
	}
	uint64_t ns = bench_now_ns() - t0;
	*cpu_ns = bench_cpu_ns() - c0;
	return ns;
}

struct slot {
	uint8_t key[KEY_LEN];
	uint8_t val[VAL_LEN];
	uint64_t used;
	uint64_t pad;
};

struct plain_map {
	struct slot *slots;
	uint64_t mask;
};

static struct slot *plain_find(struct plain_map *m, const uint8_t *k)
{
	uint64_t h = XXH3_64bits_withSeed(k, KEY_LEN, 0x5eed) & m->mask;
	for (;;) {
		struct slot *s = &m->slots[h];
		if (!s->used || !memcmp(s->key, k, KEY_LEN))
			return s;
		h = (h + 1) & m->mask;
	}
}

static void plain_init(struct plain_map *m, const struct workload *w)
{
	uint64_t cap = 1;
	while (cap < 2 * w->nkeys)
		cap <<= 1;
	m->slots = calloc(cap, sizeof *m->slots);
	if (!m->slots)
		bench_die("calloc", -ENOMEM);
	m->mask = cap - 1;
	for (uint64_t i = 0; i < w->nkeys; i++) {
		struct slot *s = plain_find(m, w->keys + i * KEY_LEN);
		memcpy(s->key, w->keys + i * KEY_LEN, KEY_LEN);
		fill_value(s->val, i);
		s->used = 1;
	}
}

/* The same key choice and value fill as run_shm, so only the map differs. */
static uint64_t run_plain(struct plain_map *m, const struct workload *w, uint64_t nputs, uint64_t *seed,
			  uint64_t *cpu_ns)
{
	uint8_t val[VAL_LEN];
	uint64_t counter = *seed;
	uint64_t c0 = bench_cpu_ns();
	uint64_t t0 = bench_now_ns();
	for (uint64_t done = 0; done < nputs; done++) {
		const uint8_t *k = w->keys + bench_rand_below(seed, w->nkeys) * KEY_LEN;
		fill_value(val, counter++);
		struct slot *s = plain_find(m, k);
		memcpy(s->val, val, VAL_LEN);
	}
	uint64_t ns = bench_now_ns() - t0;
	*cpu_ns = bench_cpu_ns() - c0;
	__asm__ volatile("" : : "r"(m->slots) : "memory");
	return ns;
}

static const size_t BATCHES[] = {1, 16, 256};
#define NBATCH (sizeof BATCHES / sizeof BATCHES[0])

int main(int argc, char **argv)
{
	struct bench_opts o;
	bench_parse(argc, argv, &o,
		    "Commit throughput (puts/s) in batches of 1, 16 and 256 over 1K and 1M keys,\n"
		    "one batch per tick, reclaim after each commit; baseline: a plain hash map.");
	bench_pin(o.cpu);

	const uint64_t spaces[2] = {1024, o.quick ? 65536 : 1048576};
	/* Puts per repeat by batch size: enough ticks that one repeat takes a
	 * few hundred ms, so timer and scheduling noise stay small. */
	const uint64_t base_puts = o.quick ? 65536 : 1048576;
	const uint64_t puts_for[NBATCH] = {base_puts / 16, base_puts / 4, base_puts};
	const size_t capacity = o.quick ? ((size_t)1 << 30) : ((size_t)4 << 30);
	const double target_puts[2] = {5e6, 2e6};

	json_t *doc = bench_json_new("bench_commit", &o);
	json_object_set_new(doc, "key_len", json_integer(KEY_LEN));
	json_object_set_new(doc, "value_len", json_integer(VAL_LEN));
	json_object_set_new(doc, "capacity", json_integer((json_int_t)capacity));
	json_t *results = json_array();

	if (!o.json)
		printf("bench_commit: pinned to CPU %d, %d repeats, median reported%s\n", o.cpu, o.repeats,
		       o.quick ? " (QUICK: small sizes, targets not evaluated)" : "");

	for (int s = 0; s < 2; s++) {
		struct workload w = {.nkeys = spaces[s]};
		w.keys = malloc(w.nkeys * KEY_LEN);
		if (!w.keys)
			bench_die("malloc", -ENOMEM);
		for (uint64_t i = 0; i < w.nkeys; i++)
			make_key(w.keys + i * KEY_LEN, i);

		uint64_t t0 = bench_now_ns();
		struct shm_root *root = make_root(&w, capacity);
		double preload_s = (double)(bench_now_ns() - t0) / 1e9;
		struct shm_stats st;
		shm_root_stats(root, &st);
		struct plain_map pm;
		plain_init(&pm, &w);

		uint64_t seed = 0x1234567u + (uint64_t)s;
		/* Warm-up: caches, page tables and the arena's free lists reach
		 * their steady state before anything is timed. */
		uint64_t cpu;
		for (size_t b = 0; b < NBATCH; b++)
			run_shm(root, &w, BATCHES[b], puts_for[b] / 8, &seed, &cpu);
		run_plain(&pm, &w, base_puts / 8, &seed, &cpu);

		double shm_ns[NBATCH][64], shm_cpu[NBATCH][64], plain_ns[64], plain_cpu[64],
			ratio[NBATCH][64];
		int reps = o.repeats > 64 ? 64 : o.repeats;
		for (int r = 0; r < reps; r++) {
			plain_ns[r] = (double)run_plain(&pm, &w, base_puts, &seed, &cpu) / (double)base_puts;
			plain_cpu[r] = (double)cpu / (double)base_puts;
			for (size_t b = 0; b < NBATCH; b++) {
				shm_ns[b][r] =
					(double)run_shm(root, &w, BATCHES[b], puts_for[b], &seed, &cpu) /
					(double)puts_for[b];
				shm_cpu[b][r] = (double)cpu / (double)puts_for[b];
				/* CPU time on both sides: preemption by other
				 * processes must not move the ratio. */
				ratio[b][r] = shm_cpu[b][r] / plain_cpu[r];
			}
		}
		double plain_med = bench_median_copy(plain_ns, (size_t)reps);
		double plain_cpu_med = bench_median_copy(plain_cpu, (size_t)reps);

		if (!o.json) {
			printf("\nkey space %" PRIu64
			       " keys (preload %.2f s, bytes_in_use %.1f MiB, segment %.1f MiB)\n",
			       w.nkeys, preload_s, (double)st.bytes_in_use / 1048576.0,
			       (double)st.segment_size / 1048576.0);
			printf("  %-6s %12s %12s %14s %10s %14s %s\n", "batch", "puts/s", "ns/put",
			       "CPU puts/s", "vs plain", "target", "");
			printf("  %-6s %12.0f %12.1f %14.0f %10s %14s\n", "plain", 1e9 / plain_med, plain_med,
			       1e9 / plain_cpu_med, "1.00x", "");
		}
		for (size_t b = 0; b < NBATCH; b++) {
			double med = bench_median_copy(shm_ns[b], (size_t)reps);
			double cmed = bench_median_copy(shm_cpu[b], (size_t)reps);
			double rmed = bench_median_copy(ratio[b], (size_t)reps);
			double pps = 1e9 / med;
			json_t *row = json_object();
			json_object_set_new(row, "keys", json_integer((json_int_t)w.nkeys));
			json_object_set_new(row, "batch", json_integer((json_int_t)BATCHES[b]));
			json_object_set_new(row, "puts_per_repeat", json_integer((json_int_t)puts_for[b]));
			json_object_set_new(row, "puts_per_s_median", json_real(pps));
			json_object_set_new(row, "ns_per_put_median", json_real(med));
			json_object_set_new(row, "ns_per_put_repeats",
					    bench_json_array(shm_ns[b], (size_t)reps));
			json_object_set_new(row, "cpu_puts_per_s_median", json_real(1e9 / cmed));
			json_object_set_new(row, "cpu_ns_per_put_repeats",
					    bench_json_array(shm_cpu[b], (size_t)reps));
			json_object_set_new(row, "plain_ns_per_put_median", json_real(plain_med));
			json_object_set_new(row, "plain_cpu_ns_per_put_median", json_real(plain_cpu_med));
			json_object_set_new(row, "ratio_to_plain_median", json_real(rmed));
			const char *verdict = "";
			if (BATCHES[b] == 256) {
				json_object_set_new(row, "target_puts_per_s", json_real(target_puts[s]));
				verdict = o.quick ? "not evaluated" : bench_met(pps >= target_puts[s]);
				json_object_set_new(row, "target", json_string(verdict));
			}
			json_array_append_new(results, row);
			if (!o.json) {
				char tgt[32] = "";
				if (BATCHES[b] == 256)
					snprintf(tgt, sizeof tgt, ">= %.0f M", target_puts[s] / 1e6);
				printf("  %-6zu %12.0f %12.1f %14.0f %9.2fx %14s %s\n", BATCHES[b], pps, med,
				       1e9 / cmed, rmed, tgt, verdict);
			}
		}
		json_t *seg = json_object();
		json_object_set_new(seg, "keys", json_integer((json_int_t)w.nkeys));
		json_object_set_new(seg, "preload_s", json_real(preload_s));
		json_object_set_new(seg, "bytes_in_use_after_preload",
				    json_integer((json_int_t)st.bytes_in_use));
		json_object_set_new(seg, "segment_size_after_preload",
				    json_integer((json_int_t)st.segment_size));
		shm_root_stats(root, &st);
		json_object_set_new(seg, "bytes_in_use_after_run", json_integer((json_int_t)st.bytes_in_use));
		json_object_set_new(seg, "retired_objects_after_run",
				    json_integer((json_int_t)st.retired_objects));
		json_object_set_new(seg, "tick_after_run", json_integer((json_int_t)st.tick));
		json_object_set_new(doc, s == 0 ? "segment_small" : "segment_large", seg);

		shm_root_destroy(root);
		free(pm.slots);
		free(w.keys);
	}
	json_object_set_new(doc, "results", results);
	if (!o.json)
		printf("\n");
	bench_json_print(doc);
	json_decref(doc);
	return 0;
}
