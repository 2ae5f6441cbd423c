/* The longest write while directories grow: batch-1 inserts of N new keys in
 * random order, each exported and waited for, into 1 directory and into 16.
 *
 * A directory's key table grows by a rebuild inside the commit that fills it
 * past 3/4 (docs/ARCHITECTURE.md, "Keys"): that commit, and a batch waiting
 * behind it, waits for the whole rebuild, so the longest wait of a load
 * follows the largest directory. Spreading the same keys over 16 directories
 * makes each rebuild a sixteenth as long. This program measures both in one
 * run, interleaved repeat by repeat: the 1-directory load is the baseline,
 * and the ratio of the two longest waits is the figure (absolute times move
 * with the host). Each batch's wait is export + wait_committed, every one
 * recorded.
 *
 * Placement: the writer on --cpu N (default 0), a fresh root per load on the
 * next CPU, both pinned. The parent never holds a root: it forks one per
 * load and writes from itself.
 */
#include "bench_root.h"
#include "bench_util.h"
#include "shmsync.h"

#define KEY_LEN 9
#define VAL_LEN 64
#define MAX_DIRS 16
#define MAX_REPEATS 16

static const unsigned DIR_COUNTS[] = {1, MAX_DIRS};
#define NVARIANTS (sizeof DIR_COUNTS / sizeof DIR_COUNTS[0])

static char sock_path[108];
static int root_main(void *arg)
{
	(void)arg;
	shmsync_root_opts o = {.socket_path = sock_path, .capacity = (size_t)1 << 30};
	return bench_root_serve("bench_growth", &o);
}

struct load_result {
	double writes_per_s, p50, p99, p999, max;
};

/* One load into a fresh root: nkeys inserts, key i into directory i % ndirs. */
static struct load_result load(int root_cpu, uint64_t nkeys, unsigned ndirs, uint64_t *next, double *waits)
{
	pid_t root = bench_root_start("bench_growth", root_cpu, sock_path, root_main);
	shmsync_worker *w;
	char err[256] = "";
	int rc = shmsync_attach_msg(&w, sock_path, err, sizeof err);
	if (rc < 0) {
		fprintf(stderr, "bench_growth: attach: %s: %s\n", shmsync_strerror(rc), err);
		exit(1);
	}
	/* A writer that never imports must not hold back reclamation. */
	shmsync_offline(w);
	char dirs[MAX_DIRS][16];
	shmsync_batch *b;
	uint64_t seq, tick;
	if ((rc = shmsync_begin(w, &b)) < 0)
		bench_die("begin", rc);
	for (unsigned d = 0; d < ndirs; d++) {
		snprintf(dirs[d], sizeof dirs[d], "/g%u/", d);
		if ((rc = shmsync_mkdir(b, dirs[d])) < 0)
			bench_die("mkdir", rc);
	}
	if ((rc = shmsync_export(b, 0, &seq)) < 0 || (rc = shmsync_wait_committed(w, seq, &tick, -1)) < 0)
		bench_die("the directories' batch", rc);
	uint8_t value[VAL_LEN];
	memset(value, 0x5a, sizeof value);
	uint64_t id = 0, start = bench_now_ns();
	for (uint64_t i = 0; i < nkeys; i++) {
		char key[KEY_LEN + 1];
		id = next[id];
		snprintf(key, sizeof key, "k%08u", (unsigned)id);
		uint64_t t0 = bench_now_ns();
		if ((rc = shmsync_begin(w, &b)) < 0)
			bench_die("begin", rc);
		if ((rc = shmsync_put(b, dirs[id % ndirs], key, KEY_LEN, value, VAL_LEN)) < 0)
			bench_die("put", rc);
		if ((rc = shmsync_export(b, 0, &seq)) < 0)
			bench_die("export", rc);
		if ((rc = shmsync_wait_committed(w, seq, &tick, -1)) < 0)
			bench_die("wait_committed", rc);
		waits[i] = (double)(bench_now_ns() - t0);
	}
	double secs = (double)(bench_now_ns() - start) / 1e9;
	shmsync_detach(w);
	bench_root_stop("bench_growth", root, sock_path);
	struct load_result r = {.writes_per_s = (double)nkeys / secs, .max = bench_max(waits, nkeys)};
	qsort(waits, nkeys, sizeof *waits, bench_cmp_double);
	r.p50 = bench_pct(waits, nkeys, 50);
	r.p99 = bench_pct(waits, nkeys, 99);
	r.p999 = bench_pct(waits, nkeys, 99.9);
	return r;
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	bench_parse(argc, argv, &o,
		    "The longest batch-1 write while directories grow: 1M new keys (--quick: 20K) into\n"
		    "1 directory and into 16, a fresh root each, interleaved over the repeats.");
	if (o.repeats > MAX_REPEATS)
		o.repeats = MAX_REPEATS;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int root_cpu = ncpu > 1 ? (int)((o.cpu + 1) % ncpu) : o.cpu;
	bench_pin(o.cpu);
	snprintf(sock_path, sizeof sock_path, "/tmp/shmsync-bench-growth-%d.sock", (int)getpid());
	uint64_t nkeys = o.quick ? 20000 : 1000000;
	uint64_t *next = malloc(nkeys * sizeof *next), seed = 42;
	double *waits = malloc(nkeys * sizeof *waits);
	if (!next || !waits)
		bench_die("malloc", -ENOMEM);
	bench_random_cycle(next, nkeys, &seed);

	struct load_result res[NVARIANTS][MAX_REPEATS];
	for (int r = 0; r < o.repeats; r++)
		for (size_t v = 0; v < NVARIANTS; v++)
			res[v][r] = load(root_cpu, nkeys, DIR_COUNTS[v], next, waits);

	json_t *root = bench_json_new("bench_growth", &o);
	json_object_set_new(root, "keys", json_integer((json_int_t)nkeys));
	json_object_set_new(root, "root_cpu", json_integer(root_cpu));
	json_t *arr = json_array();
	double med[NVARIANTS][5];
	for (size_t v = 0; v < NVARIANTS; v++) {
		double f[5][MAX_REPEATS];
		for (int r = 0; r < o.repeats; r++) {
			f[0][r] = res[v][r].writes_per_s;
			f[1][r] = res[v][r].p50;
			f[2][r] = res[v][r].p99;
			f[3][r] = res[v][r].p999;
			f[4][r] = res[v][r].max;
		}
		json_t *e = json_object();
		json_object_set_new(e, "directories", json_integer(DIR_COUNTS[v]));
		static const char *names[5] = {"writes_per_s", "wait_p50_ns", "wait_p99_ns", "wait_p999_ns",
					       "wait_max_ns"};
		for (int k = 0; k < 5; k++) {
			char rep[48];
			snprintf(rep, sizeof rep, "%s_repeats", names[k]);
			json_object_set_new(e, rep, bench_json_array(f[k], (size_t)o.repeats));
			med[v][k] = bench_median(f[k], (size_t)o.repeats);
			json_object_set_new(e, names[k], json_real(med[v][k]));
		}
		json_array_append_new(arr, e);
	}
	json_object_set_new(root, "loads", arr);
	double max_ratio[MAX_REPEATS];
	for (int r = 0; r < o.repeats; r++)
		max_ratio[r] = res[1][r].max / res[0][r].max;
	double ratio = bench_median(max_ratio, (size_t)o.repeats);
	json_object_set_new(root, "longest_wait_16_over_1_repeats",
			    bench_json_array(max_ratio, (size_t)o.repeats));
	json_object_set_new(root, "longest_wait_16_over_1", json_real(ratio));
	if (!o.json) {
		printf("bench_growth: writer on CPU %d, root on CPU %d; %" PRIu64
		       " new keys, batch 1, each waited for; medians of %d repeats\n\n",
		       o.cpu, root_cpu, nkeys, o.repeats);
		printf("  %-14s %12s %10s %10s %10s %12s\n", "directories", "writes/s", "p50 us", "p99 us",
		       "p999 us", "longest ms");
		for (size_t v = 0; v < NVARIANTS; v++)
			printf("  %-14u %12.0f %10.2f %10.2f %10.2f %12.2f\n", DIR_COUNTS[v], med[v][0],
			       med[v][1] / 1e3, med[v][2] / 1e3, med[v][3] / 1e3, med[v][4] / 1e6);
		printf("\n  longest wait, 16 directories over 1 (median of the repeats' ratios): %.3fx\n\n",
		       ratio);
	}
	bench_json_print(root);
	json_decref(root);
	free(next);
	free(waits);
	return 0;
}
