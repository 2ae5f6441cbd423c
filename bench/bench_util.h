/* Helpers shared by the benchmark programs: options, pinning, timing,
 * percentiles, random cycles and the JSON envelope.
 *
 * The machines these run on are small shared VMs, so every program reports
 * medians over repeats and, where it can, a ratio against a baseline measured
 * in the same run: an absolute time alone says more about the neighbours than
 * about the code.
 */
#ifndef SHMSYNC_BENCH_UTIL_H
#define SHMSYNC_BENCH_UTIL_H

#include <errno.h>
#include <inttypes.h>
#if !defined(SHMSYNC_HAVE_JANSSON) && !__has_include(<jansson.h>)
#error "the benchmarks print JSON with jansson: apt-get install libjansson-dev (or bash scripts/deps.sh)"
#endif
#include <jansson.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

struct bench_opts {
	bool json;  /* print only the JSON document */
	bool quick; /* smoke run for CI: small sizes, a few seconds */
	int cpu;    /* CPU to pin to */
	int repeats;
};

static inline void bench_die(const char *what, int rc)
{
	fprintf(stderr, "bench: %s failed: %d (%s)\n", what, rc, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

/* Parses the options every benchmark shares; exits on --help or a bad one. */
static inline void bench_parse(int argc, char **argv, struct bench_opts *o, const char *about)
{
	o->json = false;
	o->quick = false;
	o->cpu = 0;
	o->repeats = 0; /* 0: not given */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			o->json = true;
		} else if (!strcmp(argv[i], "--quick")) {
			o->quick = true;
		} else if (!strcmp(argv[i], "--cpu") && i + 1 < argc) {
			o->cpu = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) {
			o->repeats = atoi(argv[++i]);
			if (o->repeats < 1)
				o->repeats = 1;
		} else {
			int help = !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
			fprintf(help ? stdout : stderr,
				"usage: %s [--json] [--quick] [--cpu N] [--repeats N]\n%s\n"
				"  --json     print only the JSON document\n"
				"  --quick    short smoke run (small sizes, for CI)\n"
				"  --cpu N    pin to CPU N (default 0)\n"
				"  --repeats  repeats per measurement (default 5; --quick: 2)\n",
				argv[0], about);
			exit(help ? 0 : 2);
		}
	}
	if (o->repeats == 0)
		o->repeats = o->quick ? 2 : 5;
}

/* Pins the whole process to one CPU so the scheduler cannot move the
 * measurement between cores mid-run (cold caches, different neighbours). */
static inline void bench_pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	if (cpu < 0 || cpu >= CPU_SETSIZE)
		bench_die("--cpu", -EINVAL);
	CPU_SET((size_t)cpu, &set);
	if (sched_setaffinity(0, sizeof set, &set) != 0)
		bench_die("sched_setaffinity", -errno);
}

/* Forks a child (never exec'd) that runs fn(arg) and exits with its value,
 * pinned to cpu (-1: not pinned), with the default handlers for the
 * signals a bench may catch. It dies with the bench: an orphan would hold
 * the bench's sockets, pipes and CPUs. */
static inline pid_t bench_spawn(int cpu, int (*fn)(void *), void *arg)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		bench_die("fork", -errno);
	if (pid == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() == 1)
			_exit(1);
		if (cpu >= 0)
			bench_pin(cpu);
		_exit(fn(arg));
	}
	return pid;
}

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* This thread's CPU time: unlike wall time it leaves out the time slices
 * other processes take on a shared core, so it measures the code itself. */
static inline uint64_t bench_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: cheap and deterministic, so runs can be compared. */
static inline uint64_t bench_rand(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, n) without modulo bias worth caring about at these n. */
static inline uint64_t bench_rand_below(uint64_t *s, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)bench_rand(s) * n) >> 64);
}

/* Sattolo's algorithm: next[] becomes one cycle through all n slots, so a
 * chase that follows it visits every slot before repeating and the hardware
 * prefetcher cannot guess the next address. */
static inline void bench_random_cycle(uint64_t *next, uint64_t n, uint64_t *seed)
{
	uint64_t *order = malloc(n * sizeof *order);
	if (!order)
		bench_die("malloc", -ENOMEM);
	for (uint64_t i = 0; i < n; i++)
		order[i] = i;
	for (uint64_t i = n - 1; i > 0; i--) {
		uint64_t j = bench_rand_below(seed, i);
		uint64_t t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (uint64_t i = 0; i < n; i++)
		next[order[i]] = order[(i + 1) % n];
	free(order);
}

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile; sorts v in place. */
static inline double bench_pct(double *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	qsort(v, n, sizeof *v, bench_cmp_double);
	size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return v[rank - 1];
}

/* Sorts v in place; the mean of the two middle values when n is even, so
 * two repeats do not silently report the faster one. */
static inline double bench_median(double *v, size_t n)
{
	if (n == 0)
		return 0;
	qsort(v, n, sizeof *v, bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static inline double bench_max(const double *v, size_t n)
{
	double m = 0;
	for (size_t i = 0; i < n; i++)
		if (v[i] > m)
			m = v[i];
	return m;
}

/* The median of a copy, for arrays whose order the caller still needs. */
static inline double bench_median_copy(const double *v, size_t n)
{
	double *c = malloc((n ? n : 1) * sizeof *c);
	if (!c)
		bench_die("malloc", -ENOMEM);
	memcpy(c, v, n * sizeof *c);
	double m = bench_median(c, n);
	free(c);
	return m;
}

static inline json_t *bench_json_array(const double *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_real(v[i]));
	return a;
}

/* The envelope every benchmark prints: what ran, where, how. */
static inline json_t *bench_json_new(const char *name, const struct bench_opts *o)
{
	json_t *root = json_object();
	struct utsname u;
	char model[256] = "unknown";
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (f) {
		char line[512];
		while (fgets(line, sizeof line, f)) {
			char *colon = strchr(line, ':');
			if (!strncmp(line, "model name", 10) && colon) {
				snprintf(model, sizeof model, "%s", colon + 2);
				model[strcspn(model, "\n")] = 0;
				break;
			}
		}
		fclose(f);
	}
	json_object_set_new(root, "benchmark", json_string(name));
	json_object_set_new(root, "quick", json_boolean(o->quick));
	json_object_set_new(root, "repeats", json_integer(o->repeats));
	json_object_set_new(root, "pinned_cpu", json_integer(o->cpu));
	json_object_set_new(root, "cpu_model", json_string(model));
	json_object_set_new(root, "online_cpus", json_integer(sysconf(_SC_NPROCESSORS_ONLN)));
	if (uname(&u) == 0)
		json_object_set_new(root, "kernel", json_string(u.release));
	json_object_set_new(root, "compiler", json_string(__VERSION__));
#ifdef __OPTIMIZE__
	json_object_set_new(root, "optimized", json_true());
#else
	json_object_set_new(root, "optimized", json_false());
#endif
	return root;
}

static inline void bench_json_print(json_t *root)
{
	json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
	fputc('\n', stdout);
	fflush(stdout);
}

static inline const char *bench_met(bool ok)
{
	return ok ? "met" : "MISSED";
}

#endif
