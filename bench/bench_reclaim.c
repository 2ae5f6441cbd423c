/* Reclamation cost: per freed object, and the longest single bounded step
 * while a 1M-entry directory removed by rmdir is freed.
 *
 * Per object: N keys are overwritten while a reader stays pinned at the tick
 * before, so N superseded versions wait on the retire lists (change-log
 * records are let go as the ticks pass, to keep them out of the timing);
 * then one unbounded shm_reclaim with the reader gone frees them, timed.
 * Baselines in the same run: glibc free() of N objects of the same size, and
 * shm_arena_free() of N objects of the same size in a separate root, both in
 * allocation order as reclaim sees them. Per-object figures use this
 * thread's CPU time (the wall time of the reclaim is reported too): one
 * unbounded reclaim of 1M objects spans several of the 4 ms time slices that
 * other processes on this shared guest take.
 *
 * Steps: a directory of 1M keys is removed at tick t, then
 * shm_reclaim(min_read_epoch = t, budget B) is called until report.more is
 * false, each call timed. The rmdir's own commit is timed too: the root must
 * not pause there either.
 *
 * On a shared 2-core guest a step's wall time includes whole time slices
 * given to other processes (4 ms each here), which says nothing about the
 * code. So every step records its wall time, this thread's CPU time, and
 * whether it was preempted (involuntary context switches); the target is
 * judged on CPU time and on the wall time of steps that were not preempted,
 * and the raw wall maximum is reported beside them.
 */
#include <malloc.h>
#include <sys/resource.h>

#include "bench_util.h"
#include "layout.h"
#include "shm.h"

#define KEY_LEN 16
#define VAL_LEN 32
#define PRELOAD 256

static const char DIR_A[] = "/bench/";
static const char DIR_BIG[] = "/big/";

static void make_key(uint8_t *k, uint64_t i)
{
	uint64_t mix = (i + 1) * 0x9E3779B97F4A7C15ULL;
	mix ^= mix >> 29;
	memcpy(k, &i, 8);
	memcpy(k + 8, &mix, 8);
}

static uint64_t commit_ops(struct shm_root *root, const struct shm_op *ops, size_t n)
{
	size_t failed = 0;
	uint64_t tick;
	shm_commit_begin(root);
	int rc = shm_apply_batch(root, ops, n, &failed);
	if (rc < 0)
		bench_die("shm_apply_batch", rc);
	rc = shm_commit_publish(root, &tick);
	if (rc != 1)
		bench_die("shm_commit_publish", rc < 0 ? rc : -EIO);
	return tick;
}

static void reclaim_or_die(struct shm_root *root, uint64_t epoch, uint64_t cursor, size_t budget,
			   struct shm_reclaim_report *rep)
{
	int rc = shm_reclaim(root, epoch, cursor, budget, rep);
	if (rc < 0)
		bench_die("shm_reclaim", rc);
}

/* Puts keys [0, nkeys) of dir with value `gen`; after every commit reclaims
 * with min_read_epoch = pin (0: the new tick, i.e. nobody lags) and
 * min_cursor = the new tick. */
static uint64_t put_all(struct shm_root *root, const char *dir, uint64_t nkeys, uint64_t gen, uint64_t pin)
{
	struct shm_op ops[PRELOAD];
	uint8_t keys[PRELOAD][KEY_LEN], vals[PRELOAD][VAL_LEN];
	struct shm_reclaim_report rep;
	uint64_t tick = 0;
	for (uint64_t i = 0; i < nkeys; i += PRELOAD) {
		size_t n = 0;
		for (; n < PRELOAD && i + n < nkeys; n++) {
			make_key(keys[n], i + n);
			for (int j = 0; j < VAL_LEN; j += 8)
				memcpy(vals[n] + j, &gen, 8);
			ops[n] = (struct shm_op){.kind = SHM_OP_PUT,
						 .dir = dir,
						 .dir_len = strlen(dir),
						 .key = keys[n],
						 .key_len = KEY_LEN,
						 .value = vals[n],
						 .value_len = VAL_LEN};
		}
		tick = commit_ops(root, ops, n);
		reclaim_or_die(root, pin ? pin : tick, tick, 0, &rep);
	}
	return tick;
}

static void dir_op(struct shm_root *root, int kind, const char *dir, uint64_t *tick)
{
	struct shm_op op = {.kind = kind, .dir = dir, .dir_len = strlen(dir)};
	*tick = commit_ops(root, &op, 1);
}

static struct shm_root *new_root(size_t capacity)
{
	struct shm_root_opts o = {.capacity = capacity};
	struct shm_err err = {{0}};
	struct shm_root *root = NULL;
	int rc = shm_root_create(&root, &o, &err);
	if (rc < 0) {
		fprintf(stderr, "shm_root_create: %s\n", err.msg);
		bench_die("shm_root_create", rc);
	}
	return root;
}

struct per_object {
	double reclaim_ns[64], reclaim_cpu_ns[64], libc_ns[64], arena_ns[64], ratio_libc[64], ratio_arena[64];
	uint64_t objects[64], bytes[64];
};

static long involuntary_switches(void)
{
	struct rusage u;
	getrusage(RUSAGE_THREAD, &u);
	return u.ru_nivcsw;
}

static double time_libc_free(uint64_t n, size_t size, void **ptrs)
{
	for (uint64_t i = 0; i < n; i++) {
		ptrs[i] = malloc(size);
		if (!ptrs[i])
			bench_die("malloc", -ENOMEM);
		memset(ptrs[i], 1, size);
	}
	uint64_t t0 = bench_cpu_ns();
	for (uint64_t i = 0; i < n; i++)
		free(ptrs[i]);
	return (double)(bench_cpu_ns() - t0) / (double)n;
}

static double time_arena_free(struct shm_arena *a, uint64_t n, size_t size, uint64_t *offs)
{
	for (uint64_t i = 0; i < n; i++) {
		int rc = shm_arena_alloc(a, size, false, &offs[i]);
		if (rc < 0)
			bench_die("shm_arena_alloc", rc);
	}
	uint64_t t0 = bench_cpu_ns();
	for (uint64_t i = 0; i < n; i++)
		shm_arena_free(a, offs[i]);
	return (double)(bench_cpu_ns() - t0) / (double)n;
}

struct steps {
	uint64_t budget;
	int reps;
	double max_us[64], med_us[64], p99_us[64], rmdir_commit_us[64], total_ms[64];
	double cpu_max_us[64], quiet_max_us[64];
	uint64_t nsteps[64], objects[64], preempted[64];
};

int main(int argc, char **argv)
{
	struct bench_opts o;
	bench_parse(argc, argv, &o,
		    "Reclaim cost per freed object, and the longest reclaim step while an rmdir'd\n"
		    "1M-entry directory is freed with budgets 256, 1024 and 4096.");
	bench_pin(o.cpu);
	/* Keep glibc from trimming the heap inside the timed free loop: that
	 * would time madvise calls, not free. */
	mallopt(M_TRIM_THRESHOLD, INT32_MAX);

	const uint64_t nkeys = o.quick ? 65536 : 1048576;
	const size_t capacity = o.quick ? ((size_t)1 << 30) : ((size_t)4 << 30);
	const int reps = o.repeats > 64 ? 64 : o.repeats;
	const int step_reps = o.quick ? 1 : (reps < 3 ? reps : 3);
	const uint64_t budgets[3] = {256, 1024, 4096};
	const size_t obj_size = shm_ver_size(KEY_LEN, VAL_LEN);

	/* ---- per object ---- */
	static struct per_object po;
	struct shm_root *root = new_root(capacity);
	uint64_t tick;
	dir_op(root, SHM_OP_MKDIR, DIR_A, &tick);
	tick = put_all(root, DIR_A, nkeys, 0, 0);

	struct shm_root *aroot = new_root(capacity);
	void **ptrs = malloc(nkeys * sizeof *ptrs);
	uint64_t *offs = malloc(nkeys * sizeof *offs);
	if (!ptrs || !offs)
		bench_die("malloc", -ENOMEM);
	/* Warm-up: one round of each so first-touch faults are not timed. */
	time_libc_free(nkeys, obj_size, ptrs);
	time_arena_free(shm_root_arena(aroot), nkeys, obj_size, offs);

	for (int r = -1; r < reps; r++) {
		uint64_t pin = tick;
		tick = put_all(root, DIR_A, nkeys, (uint64_t)r + 2, pin);
		struct shm_reclaim_report rep;
		uint64_t c0 = bench_cpu_ns();
		uint64_t t0 = bench_now_ns();
		reclaim_or_die(root, tick, tick, 0, &rep);
		uint64_t ns = bench_now_ns() - t0;
		uint64_t cns = bench_cpu_ns() - c0;
		if (r < 0)
			continue; /* warm-up round */
		if (rep.objects_freed == 0)
			bench_die("shm_reclaim freed nothing", -EIO);
		po.objects[r] = rep.objects_freed;
		po.bytes[r] = rep.bytes_freed;
		po.reclaim_ns[r] = (double)ns / (double)rep.objects_freed;
		po.reclaim_cpu_ns[r] = (double)cns / (double)rep.objects_freed;
		po.libc_ns[r] = time_libc_free(nkeys, obj_size, ptrs);
		po.arena_ns[r] = time_arena_free(shm_root_arena(aroot), nkeys, obj_size, offs);
		po.ratio_libc[r] = po.reclaim_cpu_ns[r] / po.libc_ns[r];
		po.ratio_arena[r] = po.reclaim_cpu_ns[r] / po.arena_ns[r];
	}
	free(ptrs);
	free(offs);
	shm_root_destroy(aroot);
	shm_root_destroy(root);

	/* ---- rmdir of a 1M-entry directory, bounded steps ---- */
	static struct steps st[3];
	root = new_root(capacity);
	size_t cap_steps = 1 << 20;
	double *step_ns = malloc(cap_steps * sizeof *step_ns);
	double *cpu_ns = malloc(cap_steps * sizeof *cpu_ns);
	double *quiet_ns = malloc(cap_steps * sizeof *quiet_ns);
	if (!step_ns || !cpu_ns || !quiet_ns)
		bench_die("malloc", -ENOMEM);
	for (int r = -1; r < step_reps; r++) {
		for (int b = 0; b < 3; b++) {
			struct steps *s = &st[b];
			s->budget = budgets[b];
			dir_op(root, SHM_OP_MKDIR, DIR_BIG, &tick);
			put_all(root, DIR_BIG, nkeys, 1, 0);

			uint64_t t0 = bench_now_ns();
			dir_op(root, SHM_OP_RMDIR, DIR_BIG, &tick);
			double rmdir_us = (double)(bench_now_ns() - t0) / 1e3;

			struct shm_reclaim_report rep;
			size_t n = 0, nquiet = 0;
			uint64_t objects = 0, total = 0, preempted = 0;
			do {
				long sw = involuntary_switches();
				uint64_t c = bench_cpu_ns();
				uint64_t a = bench_now_ns();
				reclaim_or_die(root, tick, tick, (size_t)s->budget, &rep);
				uint64_t d = bench_now_ns() - a;
				uint64_t dc = bench_cpu_ns() - c;
				bool quiet = involuntary_switches() == sw;
				total += d;
				objects += rep.objects_freed;
				preempted += !quiet;
				if (n < cap_steps) {
					step_ns[n] = (double)d;
					cpu_ns[n++] = (double)dc;
					if (quiet)
						quiet_ns[nquiet++] = (double)d;
				}
			} while (rep.more);
			if (r < 0)
				continue; /* warm-up: the arena's free lists settle */
			s->reps = r + 1;
			s->rmdir_commit_us[r] = rmdir_us;
			s->nsteps[r] = n;
			s->objects[r] = objects;
			s->total_ms[r] = (double)total / 1e6;
			s->max_us[r] = bench_max(step_ns, n) / 1e3;
			s->cpu_max_us[r] = bench_max(cpu_ns, n) / 1e3;
			s->quiet_max_us[r] = bench_max(quiet_ns, nquiet) / 1e3;
			s->preempted[r] = preempted;
			s->p99_us[r] = bench_pct(step_ns, n, 99) / 1e3;
			s->med_us[r] = bench_pct(step_ns, n, 50) / 1e3;
		}
	}
	struct shm_stats sst;
	shm_root_stats(root, &sst);
	free(step_ns);
	free(cpu_ns);
	free(quiet_ns);
	shm_root_destroy(root);

	/* ---- report ---- */
	json_t *doc = bench_json_new("bench_reclaim", &o);
	json_object_set_new(doc, "keys", json_integer((json_int_t)nkeys));
	json_object_set_new(doc, "key_len", json_integer(KEY_LEN));
	json_object_set_new(doc, "value_len", json_integer(VAL_LEN));
	json_object_set_new(doc, "version_object_bytes", json_integer((json_int_t)obj_size));

	double rec = bench_median_copy(po.reclaim_ns, (size_t)reps);
	double rec_cpu = bench_median_copy(po.reclaim_cpu_ns, (size_t)reps);
	double lib = bench_median_copy(po.libc_ns, (size_t)reps);
	double are = bench_median_copy(po.arena_ns, (size_t)reps);
	double rl = bench_median_copy(po.ratio_libc, (size_t)reps);
	double ra = bench_median_copy(po.ratio_arena, (size_t)reps);
	json_t *pj = json_object();
	json_object_set_new(pj, "objects_freed_per_round", json_integer((json_int_t)po.objects[0]));
	json_object_set_new(pj, "bytes_freed_per_round", json_integer((json_int_t)po.bytes[0]));
	json_object_set_new(pj, "reclaim_wall_ns_per_object_median", json_real(rec));
	json_object_set_new(pj, "reclaim_wall_ns_per_object_repeats",
			    bench_json_array(po.reclaim_ns, (size_t)reps));
	json_object_set_new(pj, "reclaim_cpu_ns_per_object_repeats",
			    bench_json_array(po.reclaim_cpu_ns, (size_t)reps));
	json_object_set_new(pj, "reclaim_cpu_ns_per_object_median", json_real(rec_cpu));
	json_object_set_new(pj, "libc_free_cpu_ns_per_object_median", json_real(lib));
	json_object_set_new(pj, "libc_free_cpu_ns_per_object_repeats",
			    bench_json_array(po.libc_ns, (size_t)reps));
	json_object_set_new(pj, "arena_free_cpu_ns_per_object_repeats",
			    bench_json_array(po.arena_ns, (size_t)reps));
	json_object_set_new(pj, "arena_free_cpu_ns_per_object_median", json_real(are));
	json_object_set_new(pj, "ratio_to_libc_free_median", json_real(rl));
	json_object_set_new(pj, "ratio_to_arena_free_median", json_real(ra));
	json_object_set_new(doc, "per_object", pj);

	if (!o.json) {
		printf("bench_reclaim: pinned to CPU %d, %" PRIu64 " keys, %s\n", o.cpu, nkeys,
		       o.quick ? "QUICK: small sizes, targets not evaluated" : "");
		printf("\nper freed object (%d repeats, median): %" PRIu64 " objects, %.1f MiB per round\n",
		       reps, po.objects[0], (double)po.bytes[0] / 1048576.0);
		printf("  %-28s %10s %16s\n", "", "ns/object", "reclaim/this");
		printf("  %-28s %10.1f %16s\n", "shm_reclaim (wall)", rec, "");
		printf("  %-28s %10.1f %16s\n", "shm_reclaim (thread CPU)", rec_cpu, "");
		printf("  %-28s %10.1f %15.2fx\n", "glibc free (thread CPU)", lib, rl);
		printf("  %-28s %10.1f %15.2fx\n", "shm_arena_free (thread CPU)", are, ra);
		printf("  (ratios: reclaim's CPU time over the baseline's, median of the per-repeat "
		       "ratios)\n");
		printf("\nrmdir of a %" PRIu64 "-entry directory, then shm_reclaim(budget B) until done\n"
		       "(%d repeats; med/p99: median over repeats; max: worst step of all repeats;\n"
		       " cpu = thread CPU time; quiet = wall time of steps not preempted)\n",
		       nkeys, step_reps);
		printf("  %-5s %6s %9s %9s %9s %10s %10s %10s %9s  %s\n", "B", "steps", "med us", "p99 us",
		       "max cpu", "max quiet", "max wall", "preempted", "rmdir us", "target <= 1 ms");
	}
	json_t *sj = json_array();
	for (int b = 0; b < 3; b++) {
		struct steps *s = &st[b];
		size_t n = (size_t)s->reps;
		double worst = bench_max(s->max_us, n);
		double worst_cpu = bench_max(s->cpu_max_us, n);
		double worst_quiet = bench_max(s->quiet_max_us, n);
		double worst_rmdir = bench_max(s->rmdir_commit_us, n);
		double medmed = bench_median_copy(s->med_us, n);
		double medp99 = bench_median_copy(s->p99_us, n);
		uint64_t npre = 0;
		for (size_t r = 0; r < n; r++)
			npre += s->preempted[r];
		bool ok = worst_cpu <= 1000.0 && worst_quiet <= 1000.0 && worst_rmdir <= 1000.0;
		const char *verdict = o.quick ? "not evaluated" : bench_met(ok);
		json_t *row = json_object();
		json_object_set_new(row, "budget", json_integer((json_int_t)s->budget));
		json_object_set_new(row, "steps", json_integer((json_int_t)s->nsteps[0]));
		json_object_set_new(row, "objects_freed", json_integer((json_int_t)s->objects[0]));
		json_object_set_new(row, "step_us_median", json_real(medmed));
		json_object_set_new(row, "step_us_p99", json_real(medp99));
		json_object_set_new(row, "step_cpu_us_max", json_real(worst_cpu));
		json_object_set_new(row, "step_quiet_wall_us_max", json_real(worst_quiet));
		json_object_set_new(row, "step_wall_us_max", json_real(worst));
		json_object_set_new(row, "step_wall_us_max_repeats", bench_json_array(s->max_us, n));
		json_object_set_new(row, "steps_preempted", json_integer((json_int_t)npre));
		json_object_set_new(row, "total_reclaim_ms_median",
				    json_real(bench_median_copy(s->total_ms, n)));
		json_object_set_new(row, "rmdir_commit_us_max", json_real(worst_rmdir));
		json_object_set_new(row, "rmdir_commit_us_repeats", bench_json_array(s->rmdir_commit_us, n));
		json_object_set_new(
			row, "target",
			json_string("no reclaim step over 1 ms (thread CPU time and unpreempted wall "
				    "time of every step, and the rmdir commit)"));
		json_object_set_new(row, "target_status", json_string(verdict));
		json_array_append_new(sj, row);
		if (!o.json)
			printf("  %-5" PRIu64 " %6" PRIu64 " %9.1f %9.1f %9.1f %10.1f %10.1f %6" PRIu64
			       "/%-3zu %9.1f  %s\n",
			       s->budget, s->nsteps[0], medmed, medp99, worst_cpu, worst_quiet, worst, npre,
			       (size_t)s->nsteps[0] * n, worst_rmdir, verdict);
	}
	json_object_set_new(doc, "rmdir_steps", sj);
	json_object_set_new(doc, "bytes_in_use_at_end", json_integer((json_int_t)sst.bytes_in_use));
	json_object_set_new(doc, "high_water", json_integer((json_int_t)sst.high_water));
	if (!o.json)
		printf("\n");
	bench_json_print(doc);
	json_decref(doc);
	return 0;
}
