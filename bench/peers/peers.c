/* shmsync_peers: one system (shmsync, lmdb, redis, sqlite, or the hardware
 * floor) through the workloads of issue 12, one JSON document per run.
 * bench/peers/run.sh runs it per system and repeat and makes the tables and
 * plots; `shmsync_peers --help` lists the options.
 *
 * Workloads, the same 9-byte keys ("k%08u") and 64-byte values everywhere:
 *   prop    round trip: A writes key 0, B sees it and writes key 1, A sees
 *           that. Busy-polling (shmsync, LMDB, SQLite) and sleeping
 *           (shmsync, Redis pub/sub). p50/p99/p999 and a CDF.
 *   write   the keys, in one random order, into an empty store: batches of 1
 *           and 256, from 1 and 2 writer processes, each batch committed
 *           before the next; it ends when a reader process sees every
 *           writer's last write. Batch-1 runs stop at --write-seconds.
 *           Each batch's wait, from its first put to its commit: p50, p99
 *           and p999 of a sample, and the longest of all.
 *   read    point lookups on the store the last write run filled: uniform
 *           over all keys and over a hot set of 1024, from 1 and 2 reader
 *           processes, for --read-seconds.
 *   memory  bytes per key: (bytes at N keys - bytes of the empty store) / N.
 *   churn   a writer creates a directory of 16 keys and deletes the one made
 *           64 cycles before, every cycle; memory is sampled; a reader holds
 *           a snapshot from 1/3 to 2/3 of the run.
 * The floor system measures: a busy-polled cache-line round trip and a futex
 * sleep/wake round trip, each on one CPU and across two, and a chase of two
 * dependent random loads per step over --chase-bytes (uniform) and over 1024
 * keys' share of them (hot).
 *
 * Placement: every process pins itself (sched_setaffinity) right after the
 * fork; a server is pinned before its exec. The JSON says where each ran.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "peers.h"

#define MAX_SAMPLES (1u << 18)
#define MAX_CHURN_SAMPLES 8192
#define HOT_KEYS 1024
#define SNAP_GETS 1024 /* gets per snapshot / read transaction */
#define CHURN_KEYS 16
#define CHURN_LIVE 64

struct wres {
	uint64_t writes, last_id, token;
	bool complete;
	/* Each batch's wait (put_batch, from its first put to its commit):
	 * every batch's in max_ns, a systematic sample in samples[writer]. */
	double max_ns;
	size_t n;
	uint64_t stride, batches;
};

struct rres {
	uint64_t gets, ns;
	uint64_t sink; /* what the reads summed, so the copies are not optimised away */
	size_t n;      /* samples kept */
	uint64_t stride;
};

/* A sample of a run too long to keep every figure: s holds *n of them, one
 * in every *stride. Full, it keeps every other one and samples half as
 * often, so the kept ones still span the whole run. */
static void add_sample(size_t *n, uint64_t *stride, double *s, double v)
{
	if (*n == MAX_SAMPLES) {
		for (size_t i = 0; i < MAX_SAMPLES / 2; i++)
			s[i] = s[2 * i];
		*n = MAX_SAMPLES / 2;
		*stride *= 2;
	}
	s[(*n)++] = v;
}

struct csample {
	uint64_t cycle, bytes, t_ns;
};

/* What the processes of one measurement share: one MAP_SHARED anonymous
 * mapping, made before any fork. */
struct shared {
	alignas(128) _Atomic uint64_t ping;
	alignas(128) _Atomic uint64_t pong;
	alignas(128) _Atomic uint32_t fw1;
	alignas(128) _Atomic uint32_t fw2;
	alignas(128) _Atomic uint32_t ready;
	_Atomic uint32_t go;
	_Atomic uint32_t writers_done;
	_Atomic uint32_t hold_req, hold_ack, churn_done;
	_Atomic uint64_t t_go, t_visible;
	struct wres wr[MAX_PROCS];
	struct rres rd[MAX_PROCS];
	struct mem mem;
	size_t ncs;
	struct csample cs[MAX_CHURN_SAMPLES];
	double samples[MAX_PROCS][MAX_SAMPLES];
};

struct opts {
	const char *system, *out;
	const char *place;   /* shmsync's busy-poll placement: shared or split */
	const char *variant; /* a label for this configuration, recorded in the JSON */
	bool smoke;
	unsigned repeat;
	unsigned prop_poll_rounds, prop_sleep_rounds, churn_cycles;
	double write_seconds, read_seconds;
	uint64_t chase_bytes;
	bool chase_huge;
	unsigned only; /* bit per workload; 0: all */
};

enum { W_PROP = 1, W_WRITE = 2, W_READ = 4, W_MEMORY = 8, W_CHURN = 16 };

static struct shared *sh;
static struct cfg cfg;
static struct opts opt;
static const struct backend *be;
static uint32_t *perm; /* the write order, a permutation of [0, nkeys) */
static uint32_t hot[HOT_KEYS];
static uint64_t load_token;
static char tmpdir_buf[256];
static bool own_tmpdir;
static pid_t kids[8];
static int nkids;

/* ---- processes ----------------------------------------------------------- */

/* What a run may leave in its temporary directory, for the signal handler
 * (which cannot build paths): the stores are hundreds of MiB of tmpfs. */
static const char *const tmp_files[] = {"lmdb.mdb",      "lmdb.mdb-lock", "sqlite.db", "sqlite.db-wal",
					"sqlite.db-shm", "redis.sock",    "redis.log", "shmsync.sock"};
#define N_TMP_FILES (sizeof tmp_files / sizeof tmp_files[0])
static char tmp_paths[N_TMP_FILES][300];

static void on_signal(int sig)
{
	/* Only async-signal-safe calls: stop what we started, remove what it
	 * wrote, then go. */
	for (int i = 0; i < nkids; i++)
		if (kids[i] > 0)
			kill(kids[i], SIGKILL);
	if (cfg.server_pid > 0)
		kill(cfg.server_pid, SIGKILL);
	for (size_t i = 0; i < N_TMP_FILES; i++)
		unlink(tmp_paths[i]);
	if (own_tmpdir)
		rmdir(tmpdir_buf);
	_exit(128 + sig);
}

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET((size_t)cpu, &set);
	if (sched_setaffinity(0, sizeof set, &set) != 0) {
		fprintf(stderr, "peers: pin to CPU %d: %s\n", cpu, strerror(errno));
		_exit(1);
	}
}

typedef int (*child_fn)(int idx, void *arg);

static pid_t spawn(int cpu, child_fn fn, int idx, void *arg)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "peers: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() == 1)
			_exit(1);
		pin(cpu);
		_exit(fn(idx, arg) == 0 ? 0 : 1);
	}
	kids[nkids++] = pid;
	return pid;
}

/* Reaps every child; -1 if one failed or they ran past the limit (then all
 * are killed). */
static int reap_all(uint64_t limit_ns)
{
	int rc = 0;
	uint64_t end = now_ns() + limit_ns;
	int left = nkids;
	while (left > 0) {
		int status;
		pid_t p = waitpid(-1, &status, WNOHANG);
		if (p < 0 && errno != EINTR && errno != ECHILD) {
			fprintf(stderr, "peers: waitpid: %s\n", strerror(errno));
			rc = -1;
			break;
		}
		if (p > 0) {
			for (int i = 0; i < nkids; i++) {
				if (kids[i] != p)
					continue;
				kids[i] = 0;
				left--;
				if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
					fprintf(stderr, "peers: %s: a process (pid %d) failed (%s %d)\n",
						be ? be->name : "floor", (int)p,
						WIFEXITED(status) ? "exit" : "signal",
						WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
					rc = -1;
				}
			}
			if (rc < 0)
				break; /* the others may wait for it forever */
			continue;
		}
		if (now_ns() > end) {
			fprintf(stderr, "peers: processes still running after %.0f s: killed\n",
				(double)limit_ns / 1e9);
			rc = -1;
			break;
		}
		usleep(1000);
	}
	for (int i = 0; i < nkids; i++) {
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
		}
	}
	nkids = 0;
	return rc;
}

static void reset_shared(void)
{
	size_t keep = offsetof(struct shared, samples);
	memset(sh, 0, keep);
}

/* Child side of the start barrier: sleeps in short naps, so waiting
 * processes leave the CPUs to those still getting ready. */
static int barrier(void)
{
	atomic_fetch_add(&sh->ready, 1);
	uint64_t end = now_ns() + WAIT_LIMIT_NS;
	while (!atomic_load_explicit(&sh->go, memory_order_acquire)) {
		if (now_ns() > end) {
			fprintf(stderr, "peers: no start signal in 60 s\n");
			return -1;
		}
		usleep(50);
	}
	return 0;
}

/* Driver side: waits for n processes, then starts them. */
static int start(uint32_t n)
{
	uint64_t end = now_ns() + WAIT_LIMIT_NS;
	while (atomic_load(&sh->ready) < n) {
		for (int i = 0; i < nkids; i++) {
			int status;
			if (kids[i] > 0 && waitpid(kids[i], &status, WNOHANG) == kids[i]) {
				fprintf(stderr, "peers: a process (pid %d) exited before the start\n",
					(int)kids[i]);
				kids[i] = 0;
				return -1;
			}
		}
		if (now_ns() > end) {
			fprintf(stderr, "peers: processes not ready in 60 s\n");
			return -1;
		}
		usleep(200);
	}
	atomic_store(&sh->t_go, now_ns());
	atomic_store_explicit(&sh->go, 1, memory_order_release);
	return 0;
}

/* Waits (asleep, in naps) until *word reaches v. */
static int wait_for(_Atomic uint32_t *word, uint32_t v)
{
	uint64_t end = now_ns() + WAIT_LIMIT_NS;
	while (atomic_load_explicit(word, memory_order_acquire) < v) {
		if (now_ns() > end) {
			fprintf(stderr, "peers: a peer process did not answer in 60 s\n");
			return -1;
		}
		usleep(50);
	}
	return 0;
}

/* ---- statistics and JSON ---------------------------------------------------- */

static json_t *latency_json(double *v, size_t n, bool cdf)
{
	json_t *o = json_object();
	qsort(v, n, sizeof *v, bench_cmp_double);
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	json_object_set_new(o, "n", json_integer((json_int_t)n));
	json_object_set_new(o, "p50_ns", json_real(bench_pct(v, n, 50)));
	json_object_set_new(o, "p99_ns", json_real(bench_pct(v, n, 99)));
	json_object_set_new(o, "p999_ns", json_real(bench_pct(v, n, 99.9)));
	json_object_set_new(o, "mean_ns", json_real(n ? sum / (double)n : 0));
	json_object_set_new(o, "min_ns", json_real(n ? v[0] : 0));
	json_object_set_new(o, "max_ns", json_real(n ? v[n - 1] : 0));
	if (cdf && n > 0) {
		/* Quantiles, dense in the tail, for the CDF plot. */
		json_t *a = json_array();
		static const double tail[] = {0.991, 0.992, 0.993, 0.994,  0.995,  0.996,
					      0.997, 0.998, 0.999, 0.9995, 0.9999, 1.0};
		for (int i = 0; i <= 99 + (int)(sizeof tail / sizeof tail[0]); i++) {
			double q = i < 100 ? i / 100.0 : tail[i - 100];
			size_t k = (size_t)(q * (double)(n - 1));
			json_t *pt = json_array();
			json_array_append_new(pt, json_real(q));
			json_array_append_new(pt, json_real(v[k]));
			json_array_append_new(a, pt);
		}
		json_object_set_new(o, "cdf", a);
	}
	return o;
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "peers: %s: ", be ? be->name : "floor");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- propagation ----------------------------------------------------------- */

struct prop_arg {
	enum wait_mode mode;
	bool yield[2];
	unsigned n, warm;
};

static int prop_a(int idx, void *arg)
{
	(void)idx;
	const struct prop_arg *pa = arg;
	struct conn *x = be->open(&cfg, ROLE_PROP_A);
	if (!x || barrier() < 0)
		return 1;
	for (uint64_t i = 1; i <= pa->warm + pa->n; i++) {
		uint64_t t0 = now_ns();
		if (be->publish(x, 0, i) < 0 || be->await(x, 1, i, pa->mode, pa->yield[0]) < 0)
			return 1;
		uint64_t t1 = now_ns();
		if (i > pa->warm)
			sh->samples[0][i - pa->warm - 1] = (double)(t1 - t0);
	}
	be->close(x);
	return 0;
}

static int prop_b(int idx, void *arg)
{
	(void)idx;
	const struct prop_arg *pa = arg;
	struct conn *x = be->open(&cfg, ROLE_PROP_B);
	if (!x || barrier() < 0)
		return 1;
	for (uint64_t i = 1; i <= pa->warm + pa->n; i++)
		if (be->await(x, 0, i, pa->mode, pa->yield[1]) < 0 || be->publish(x, 1, i) < 0)
			return 1;
	be->close(x);
	return 0;
}

static int run_prop(enum wait_mode mode, json_t *out)
{
	struct prop_arg pa = {.mode = mode,
			      .n = mode == WAIT_POLL ? opt.prop_poll_rounds : opt.prop_sleep_rounds};
	pa.warm = pa.n / 10 + 10;
	int cpu_a = cfg.cpu[0], cpu_b;
	char place[256];
	if (mode == WAIT_SLEEP) {
		/* Everyone sleeps while waiting: A and B share one CPU, the
		 * server has the other, so both hops cross cores. */
		cpu_b = cfg.cpu[0];
		snprintf(place, sizeof place, "A and B on CPU %d, %s on CPU %d; all sleep while waiting",
			 cfg.cpu[0], be == &be_redis ? "redis-server" : "the root", cfg.cpu[1]);
	} else if (!be->server) {
		cpu_b = cfg.cpu[1];
		snprintf(place, sizeof place, "A on CPU %d, B on CPU %d, both spinning", cfg.cpu[0],
			 cfg.cpu[1]);
	} else if (!strcmp(opt.place, "shared")) {
		/* Three spinning processes on two cores: the root, which
		 * every hop goes through, keeps a core; A and B take turns
		 * on the other, yielding between polls. */
		cpu_b = cfg.cpu[0];
		pa.yield[0] = pa.yield[1] = true;
		snprintf(place, sizeof place, "A and B on CPU %d polling with sched_yield%s, root on CPU %d",
			 cfg.cpu[0],
			 be == &be_shmsync ? " (the library's own: at the first miss once a yield has run "
					     "the other, else every 1 us without news)"
					   : "",
			 cfg.cpu[1]);
	} else {
		cpu_b = cfg.cpu[1];
		pa.yield[1] = true;
		snprintf(place, sizeof place,
			 "A on CPU %d spinning, B on CPU %d with the root, polling with sched_yield",
			 cfg.cpu[0], cfg.cpu[1]);
	}
	if (be->fresh(&cfg) < 0)
		return -1;
	reset_shared();
	if (spawn(cpu_b, prop_b, 1, &pa) < 0 || spawn(cpu_a, prop_a, 0, &pa) < 0 || start(2) < 0 ||
	    reap_all(300ull * 1000000000ull) < 0)
		return -1;
	json_t *o = latency_json(sh->samples[0], pa.n, true);
	json_object_set_new(o, "processes", json_integer(be->server ? 3 : 2));
	json_object_set_new(o, "placement", json_string(place));
	json_object_set_new(o, "warmup", json_integer(pa.warm));
	json_object_set_new(out, mode == WAIT_POLL ? "poll" : "sleep", o);
	note("propagation %s: p50 %.2f us, p99 %.2f us, p999 %.2f us (%u round trips)",
	     mode == WAIT_POLL ? "busy-polling" : "sleeping",
	     json_real_value(json_object_get(o, "p50_ns")) / 1e3,
	     json_real_value(json_object_get(o, "p99_ns")) / 1e3,
	     json_real_value(json_object_get(o, "p999_ns")) / 1e3, pa.n);
	return 0;
}

/* ---- writes ------------------------------------------------------------------ */

struct write_arg {
	unsigned writers;
	size_t batch;
	uint64_t tag;
	bool deadline; /* stop at --write-seconds */
};

static int writer(int idx, void *arg)
{
	const struct write_arg *wa = arg;
	struct conn *x = be->open(&cfg, ROLE_WRITER);
	uint32_t *ids = malloc(wa->batch * sizeof *ids);
	if (!x || !ids || barrier() < 0)
		return 1;
	uint64_t end = atomic_load(&sh->t_go) + (uint64_t)(opt.write_seconds * 1e9);
	struct wres *r = &sh->wr[idx];
	double *s = sh->samples[idx];
	size_t pos = (size_t)idx; /* this writer's share: every writers-th key of the order */
	r->complete = true;
	r->stride = 1;
	while (pos < cfg.nkeys) {
		size_t n = 0;
		for (; n < wa->batch && pos < cfg.nkeys; pos += wa->writers)
			ids[n++] = perm[pos];
		uint64_t a = now_ns();
		if (be->put_batch(x, ids, n, wa->tag, &r->token) < 0)
			return 1;
		double waited = (double)(now_ns() - a);
		if (waited > r->max_ns)
			r->max_ns = waited;
		if (r->batches++ % r->stride == 0)
			add_sample(&r->n, &r->stride, s, waited);
		r->writes += n;
		r->last_id = ids[n - 1];
		if (wa->deadline && now_ns() > end) {
			r->complete = pos >= cfg.nkeys;
			break;
		}
	}
	free(ids);
	be->close(x);
	atomic_fetch_add_explicit(&sh->writers_done, 1, memory_order_release);
	return 0;
}

/* Ends the run: waits for the writers, then until this separate process
 * sees every writer's last write. */
static int visibility_reader(int idx, void *arg)
{
	(void)idx;
	const struct write_arg *wa = arg;
	struct conn *x = be->open(&cfg, ROLE_CHECK);
	if (!x || barrier() < 0 || wait_for(&sh->writers_done, wa->writers) < 0)
		return 1;
	uint64_t token = 0;
	for (unsigned w = 0; w < wa->writers; w++)
		if (sh->wr[w].token > token)
			token = sh->wr[w].token;
	if (be->sync_to(x, token) < 0)
		return 1;
	uint64_t end = now_ns() + WAIT_LIMIT_NS;
	for (;;) {
		unsigned seen = 0;
		if (be->snap_begin(x) < 0)
			return 1;
		for (unsigned w = 0; w < wa->writers; w++) {
			uint8_t v[VAL_LEN];
			int rc = be->get(x, (uint32_t)sh->wr[w].last_id, v);
			if (rc < 0)
				return 1;
			seen += rc == 1 && val_tag(v) == wa->tag && val_id(v) == sh->wr[w].last_id;
		}
		if (be->snap_end(x) < 0)
			return 1;
		if (seen == wa->writers)
			break;
		if (now_ns() > end) {
			fprintf(stderr, "peers: %s: the last writes are not visible after 60 s\n", be->name);
			return 1;
		}
		poll_pause(false);
	}
	atomic_store(&sh->t_visible, now_ns());
	be->close(x);
	return 0;
}

static int run_write(size_t batch, unsigned writers, bool load, json_t *arr)
{
	static uint64_t tag;
	struct write_arg wa = {.writers = writers, .batch = batch, .tag = ++tag, .deadline = batch == 1};
	int cpus[2] = {cfg.cpu[0], be->server ? cfg.cpu[0] : cfg.cpu[1]};
	reset_shared();
	for (unsigned w = 0; w < writers; w++)
		if (spawn(cpus[w], writer, (int)w, &wa) < 0)
			return -1;
	if (spawn(cfg.cpu[0], visibility_reader, 0, &wa) < 0 || start(writers + 1) < 0 ||
	    reap_all(600ull * 1000000000ull) < 0)
		return -1;
	uint64_t writes = 0, token = 0;
	bool complete = true;
	for (unsigned w = 0; w < writers; w++) {
		writes += sh->wr[w].writes;
		complete &= sh->wr[w].complete;
		if (sh->wr[w].token > token)
			token = sh->wr[w].token;
	}
	double secs = (double)(atomic_load(&sh->t_visible) - atomic_load(&sh->t_go)) / 1e9;
	if (load) {
		load_token = token;
		if (!complete) {
			fprintf(stderr, "peers: %s: the load did not write every key\n", be->name);
			return -1;
		}
	}
	if (!arr)
		return 0;
	json_t *o = json_object();
	json_object_set_new(o, "batch", json_integer((json_int_t)batch));
	json_object_set_new(o, "writers", json_integer(writers));
	json_object_set_new(o, "writes", json_integer((json_int_t)writes));
	json_object_set_new(o, "complete", json_boolean(complete));
	json_object_set_new(o, "seconds", json_real(secs));
	json_object_set_new(o, "writes_per_s", json_real((double)writes / secs));
	/* Each batch's wait, from its first put to its commit: a sample's
	 * percentiles, every batch's max. */
	double max_wait = 0, *all = malloc((size_t)writers * MAX_SAMPLES * sizeof *all);
	size_t nsamples = 0;
	if (!all) {
		json_decref(o);
		return -1;
	}
	for (unsigned w = 0; w < writers; w++) {
		if (sh->wr[w].max_ns > max_wait)
			max_wait = sh->wr[w].max_ns;
		memcpy(all + nsamples, sh->samples[w], sh->wr[w].n * sizeof *all);
		nsamples += sh->wr[w].n;
	}
	json_t *wait = latency_json(all, nsamples, false);
	free(all);
	json_object_set_new(wait, "max_ns", json_real(max_wait));
	json_object_set_new(o, "batch_wait", wait);
	char place[160], srv[48] = "";
	if (be->server)
		snprintf(srv, sizeof srv, ", %s on CPU %d", be == &be_redis ? "redis-server" : "root",
			 cfg.cpu[1]);
	if (writers > 1)
		snprintf(place, sizeof place, "writers on CPU %d and %d%s; the visibility reader on CPU %d",
			 cpus[0], cpus[1], srv, cfg.cpu[0]);
	else
		snprintf(place, sizeof place, "writer on CPU %d%s; the visibility reader on CPU %d", cpus[0],
			 srv, cfg.cpu[0]);
	json_object_set_new(o, "placement", json_string(place));
	json_object_set_new(o, "processes", json_integer(writers + 1 + (be->server ? 1 : 0)));
	json_array_append_new(arr, o);
	note("write batch %zu, %u writer%s: %.0f writes/s (%" PRIu64
	     " writes%s, %.2f s); batch wait p99 %.1f us, "
	     "longest %.2f ms",
	     batch, writers, writers > 1 ? "s" : "", (double)writes / secs, writes,
	     complete ? "" : ", stopped at the time limit", secs,
	     json_real_value(json_object_get(wait, "p99_ns")) / 1e3, max_wait / 1e6);
	return 0;
}

/* ---- reads ------------------------------------------------------------------- */

struct read_arg {
	bool hot;
};

static int reader(int idx, void *arg)
{
	const struct read_arg *ra = arg;
	struct conn *x = be->open(&cfg, ROLE_READER);
	if (!x || be->sync_to(x, load_token) < 0 || barrier() < 0)
		return 1;
	struct rres *r = &sh->rd[idx];
	double *s = sh->samples[idx];
	uint64_t seed = ((uint64_t)idx + 1) * UINT64_C(0x9e3779b97f4a7c15) + opt.repeat;
	uint64_t t0 = atomic_load(&sh->t_go), end = t0 + (uint64_t)(opt.read_seconds * 1e9), t = t0;
	uint8_t v[VAL_LEN];
	uint64_t sum = 0;
	r->stride = 16;
	while (t < end) {
		if (be->snap_begin(x) < 0)
			return 1;
		for (unsigned j = 0; j < SNAP_GETS; j++) {
			uint32_t id = ra->hot ? hot[bench_rand_below(&seed, HOT_KEYS)]
					      : (uint32_t)bench_rand_below(&seed, cfg.nkeys);
			int rc;
			if (r->gets % r->stride == 0) {
				uint64_t a = now_ns();
				rc = be->get(x, id, v);
				add_sample(&r->n, &r->stride, s, (double)(now_ns() - a));
			} else {
				rc = be->get(x, id, v);
			}
			if (rc != 1 || val_id(v) != id) {
				fprintf(stderr, "peers: %s: key %u %s\n", be->name, id,
					rc < 0 ? "failed" : "wrong or missing");
				return 1;
			}
			sum += v[VAL_LEN - 1];
			r->gets++;
		}
		if (be->snap_end(x) < 0)
			return 1;
		t = now_ns();
	}
	r->ns = t - t0;
	r->sink = sum;
	be->close(x);
	return 0;
}

/* The overhead of timing one get: two clock reads. */
static double timer_overhead_ns(void)
{
	double v[1001];
	for (int i = 0; i < 1001; i++) {
		uint64_t a = now_ns();
		v[i] = (double)(now_ns() - a);
	}
	return bench_median(v, 1001);
}

static int run_read(bool is_hot, unsigned readers, json_t *arr)
{
	struct read_arg ra = {.hot = is_hot};
	/* Redis serves every get: its readers share a core, the server has
	 * the other. The others read on their own: one core each. */
	bool via_server = be == &be_redis;
	int cpus[2] = {cfg.cpu[0], via_server ? cfg.cpu[0] : cfg.cpu[1]};
	reset_shared();
	for (unsigned i = 0; i < readers; i++)
		if (spawn(cpus[i], reader, (int)i, &ra) < 0)
			return -1;
	if (start(readers) < 0 || reap_all(300ull * 1000000000ull) < 0)
		return -1;
	double rate = 0, *all = malloc((size_t)readers * MAX_SAMPLES * sizeof *all);
	size_t n = 0;
	uint64_t gets = 0;
	if (!all)
		return -1;
	for (unsigned i = 0; i < readers; i++) {
		rate += (double)sh->rd[i].gets / ((double)sh->rd[i].ns / 1e9);
		gets += sh->rd[i].gets;
		memcpy(all + n, sh->samples[i], sh->rd[i].n * sizeof *all);
		n += sh->rd[i].n;
	}
	json_t *o = latency_json(all, n, false);
	free(all);
	json_object_set_new(o, "keys", json_string(is_hot ? "hot" : "uniform"));
	json_object_set_new(o, "readers", json_integer(readers));
	json_object_set_new(o, "gets", json_integer((json_int_t)gets));
	json_object_set_new(o, "gets_per_s", json_real(rate));
	/* What one get costs a reader in a loop of gets. */
	json_object_set_new(o, "ns_per_get", json_real(1e9 * readers / rate));
	json_object_set_new(o, "timer_overhead_ns", json_real(timer_overhead_ns()));
	char place[160], srv[48] = "";
	if (via_server)
		snprintf(srv, sizeof srv, ", redis-server on CPU %d", cfg.cpu[1]);
	if (readers > 1)
		snprintf(place, sizeof place, "readers on CPU %d and %d%s", cpus[0], cpus[1], srv);
	else
		snprintf(place, sizeof place, "reader on CPU %d%s", cpus[0], srv);
	json_object_set_new(o, "placement", json_string(place));
	json_array_append_new(arr, o);
	note("read %s, %u reader%s: %.0f gets/s, %.1f ns per get, sampled p50 %.0f ns p99 %.0f ns",
	     is_hot ? "hot" : "uniform", readers, readers > 1 ? "s" : "", rate, 1e9 * readers / rate,
	     json_real_value(json_object_get(o, "p50_ns")), json_real_value(json_object_get(o, "p99_ns")));
	return 0;
}

/* ---- memory ----------------------------------------------------------------- */

static int mem_child(int idx, void *arg)
{
	(void)idx;
	bool settle = *(const bool *)arg;
	struct conn *x = be->open(&cfg, ROLE_MEM);
	if (!x || be->mem(x, &sh->mem, settle) < 0)
		return 1;
	be->close(x);
	return 0;
}

static int measure_mem(bool settle, struct mem *m)
{
	reset_shared();
	if (spawn(cfg.cpu[0], mem_child, 0, &settle) < 0 || reap_all(120ull * 1000000000ull) < 0)
		return -1;
	*m = sh->mem;
	return 0;
}

static json_t *mem_json(const struct mem *m)
{
	json_t *o = json_object();
	json_object_set_new(o, "bytes", json_integer((json_int_t)m->bytes));
	for (int i = 0; i < 6; i++)
		if (m->detail_name[i])
			json_object_set_new(o, m->detail_name[i], json_integer((json_int_t)m->detail[i]));
	return o;
}

/* ---- churn ------------------------------------------------------------------ */

static int churn_writer(int idx, void *arg)
{
	(void)idx;
	(void)arg;
	unsigned cycles = opt.churn_cycles, every = cycles / 300 ? cycles / 300 : 1;
	unsigned from = cycles / 3, to = 2 * cycles / 3;
	struct conn *x = be->open(&cfg, ROLE_CHURN_WRITER);
	if (!x || barrier() < 0)
		return 1;
	uint64_t t0 = atomic_load(&sh->t_go);
	for (unsigned c = 0; c <= cycles; c++) {
		if (c == from || c == to) {
			uint32_t step = c == from ? 1 : 2;
			atomic_store_explicit(&sh->hold_req, step, memory_order_release);
			if (wait_for(&sh->hold_ack, step) < 0)
				return 1;
		}
		if (c % every == 0 || c == from || c == to || c == cycles) {
			struct mem m;
			/* The last sample: after reclamation, when it is over. */
			if (be->mem(x, &m, c == cycles) < 0)
				return 1;
			if (sh->ncs < MAX_CHURN_SAMPLES)
				sh->cs[sh->ncs++] = (struct csample){c, m.bytes, now_ns() - t0};
		}
		if (c < cycles &&
		    be->churn(x, c, c >= CHURN_LIVE ? (long)(c - CHURN_LIVE) : -1, CHURN_KEYS) < 0)
			return 1;
	}
	atomic_store_explicit(&sh->churn_done, 1, memory_order_release);
	be->close(x);
	return 0;
}

static int churn_reader(int idx, void *arg)
{
	(void)idx;
	(void)arg;
	struct conn *x = be->open(&cfg, ROLE_CHURN_READER);
	if (!x || barrier() < 0 || wait_for(&sh->hold_req, 1) < 0 || be->hold(x) < 0)
		return 1;
	atomic_store_explicit(&sh->hold_ack, 1, memory_order_release);
	if (wait_for(&sh->hold_req, 2) < 0 || be->release(x) < 0)
		return 1;
	atomic_store_explicit(&sh->hold_ack, 2, memory_order_release);
	if (wait_for(&sh->churn_done, 1) < 0)
		return 1;
	be->close(x);
	return 0;
}

static int run_churn(json_t *doc)
{
	if (be->fresh(&cfg) < 0)
		return -1;
	reset_shared();
	if (spawn(cfg.cpu[1], churn_reader, 1, NULL) < 0 || spawn(cfg.cpu[0], churn_writer, 0, NULL) < 0 ||
	    start(2) < 0 || reap_all(300ull * 1000000000ull) < 0)
		return -1;
	unsigned cycles = opt.churn_cycles, from = cycles / 3, to = 2 * cycles / 3;
	json_t *o = json_object(), *a = json_array();
	uint64_t peak = 0, at_from = 0, at_to = 0, end = 0;
	for (size_t i = 0; i < sh->ncs; i++) {
		const struct csample *s = &sh->cs[i];
		json_t *pt = json_array();
		json_array_append_new(pt, json_integer((json_int_t)s->cycle));
		json_array_append_new(pt, json_integer((json_int_t)s->bytes));
		json_array_append_new(pt, json_real((double)s->t_ns / 1e9));
		json_array_append_new(a, pt);
		if (s->bytes > peak)
			peak = s->bytes;
		if (s->cycle == from)
			at_from = s->bytes;
		if (s->cycle == to)
			at_to = s->bytes;
		end = s->bytes;
	}
	json_object_set_new(o, "cycles", json_integer(cycles));
	json_object_set_new(o, "keys_per_dir", json_integer(CHURN_KEYS));
	json_object_set_new(o, "live_dirs", json_integer(CHURN_LIVE));
	json_object_set_new(o, "hold_from_cycle", json_integer(from));
	json_object_set_new(o, "hold_to_cycle", json_integer(to));
	json_object_set_new(o, "reader_holds_snapshot", json_boolean(be->snapshots));
	json_object_set_new(o, "bytes_at_hold", json_integer((json_int_t)at_from));
	json_object_set_new(o, "bytes_at_release", json_integer((json_int_t)at_to));
	json_object_set_new(o, "bytes_peak", json_integer((json_int_t)peak));
	json_object_set_new(o, "bytes_end", json_integer((json_int_t)end));
	json_object_set_new(o, "seconds", json_real(sh->ncs ? (double)sh->cs[sh->ncs - 1].t_ns / 1e9 : 0));
	json_object_set_new(o, "samples", a);
	json_object_set_new(
		o, "placement",
		be->server ? json_sprintf("writer on CPU %d, reader on CPU %d (asleep but for hold/release), "
					  "server on CPU %d",
					  cfg.cpu[0], cfg.cpu[1], cfg.cpu[1])
			   : json_sprintf("writer on CPU %d, reader on CPU %d (asleep but for hold/release)",
					  cfg.cpu[0], cfg.cpu[1]));
	json_object_set_new(doc, "churn", o);
	note("churn: %u cycles in %.2f s; bytes at hold %.2f MiB, at release %.2f MiB, peak %.2f MiB, end "
	     "%.2f MiB",
	     cycles, sh->ncs ? (double)sh->cs[sh->ncs - 1].t_ns / 1e9 : 0, (double)at_from / 1048576.0,
	     (double)at_to / 1048576.0, (double)peak / 1048576.0, (double)end / 1048576.0);
	return 0;
}

/* ---- one system ------------------------------------------------------------- */

static bool want(unsigned w)
{
	return opt.only == 0 || (opt.only & w);
}

static int run_system(json_t *doc)
{
	json_t *prop = json_object(), *writes = json_array(), *reads = json_array();
	json_object_set_new(doc, "prop", prop);
	json_object_set_new(doc, "write", writes);
	json_object_set_new(doc, "read", reads);
	if (want(W_PROP)) {
		if (be->poll && run_prop(WAIT_POLL, prop) < 0)
			return -1;
		if (be->sleep && run_prop(WAIT_SLEEP, prop) < 0)
			return -1;
	}
	bool need_load = want(W_READ) || want(W_MEMORY);
	struct mem empty = {0}, full = {0};
	static const struct {
		size_t batch;
		unsigned writers;
	} wcfg[] = {{1, 1}, {1, 2}, {256, 1}, {256, 2}};
	for (size_t i = 0; i < 4; i++) {
		bool last = i == 3;
		if (!want(W_WRITE) && !(last && need_load))
			continue;
		if (be->fresh(&cfg) < 0)
			return -1;
		/* The last run fills the store the reads and the memory
		 * figure use; measure it empty first. */
		if (last && need_load && measure_mem(true, &empty) < 0)
			return -1;
		if (run_write(wcfg[i].batch, wcfg[i].writers, last && need_load,
			      want(W_WRITE) ? writes : NULL) < 0)
			return -1;
	}
	if (want(W_READ)) {
		for (int h = 0; h < 2; h++)
			for (unsigned r = 1; r <= 2; r++)
				if (run_read(h == 1, r, reads) < 0)
					return -1;
	}
	if (want(W_MEMORY)) {
		if (measure_mem(true, &full) < 0)
			return -1;
		json_t *o = json_object();
		json_object_set_new(o, "keys", json_integer(cfg.nkeys));
		json_object_set_new(o, "empty", mem_json(&empty));
		json_object_set_new(o, "full", mem_json(&full));
		double per = ((double)full.bytes - (double)empty.bytes) / cfg.nkeys;
		json_object_set_new(o, "bytes_per_key", json_real(per));
		json_object_set_new(o, "bytes_per_key_total", json_real((double)full.bytes / cfg.nkeys));
		json_object_set_new(o, "measure", json_string(be->memory));
		json_object_set_new(doc, "memory", o);
		note("memory: %.1f bytes per key (%.1f MiB empty, %.1f MiB at %u keys)", per,
		     (double)empty.bytes / 1048576.0, (double)full.bytes / 1048576.0, cfg.nkeys);
	}
	if (want(W_CHURN) && run_churn(doc) < 0)
		return -1;
	return 0;
}

/* ---- the floor -------------------------------------------------------------- */

static long futex(_Atomic uint32_t *word, int op, uint32_t val)
{
	return syscall(SYS_futex, (uint32_t *)word, op, val, NULL, NULL, 0);
}

struct floor_arg {
	unsigned n, warm;
	bool yield;
};

static int cl_pinger(int idx, void *arg)
{
	(void)idx;
	const struct floor_arg *fa = arg;
	if (barrier() < 0)
		return 1;
	for (uint64_t i = 1; i <= fa->warm + fa->n; i++) {
		uint64_t t0 = now_ns();
		atomic_store_explicit(&sh->ping, i, memory_order_release);
		while (atomic_load_explicit(&sh->pong, memory_order_acquire) != i)
			poll_pause(fa->yield);
		uint64_t t1 = now_ns();
		if (i > fa->warm)
			sh->samples[0][i - fa->warm - 1] = (double)(t1 - t0);
	}
	atomic_store_explicit(&sh->ping, UINT64_MAX, memory_order_release);
	return 0;
}

static int cl_ponger(int idx, void *arg)
{
	(void)idx;
	const struct floor_arg *fa = arg;
	if (barrier() < 0)
		return 1;
	for (uint64_t last = 0;;) {
		uint64_t v = atomic_load_explicit(&sh->ping, memory_order_acquire);
		if (v == UINT64_MAX)
			return 0;
		if (v == last) {
			poll_pause(fa->yield);
			continue;
		}
		atomic_store_explicit(&sh->pong, v, memory_order_release);
		last = v;
	}
}

static int fx_p(int idx, void *arg)
{
	(void)idx;
	const struct floor_arg *fa = arg;
	if (barrier() < 0)
		return 1;
	for (uint32_t i = 1; i <= fa->warm + fa->n; i++) {
		uint64_t t0 = now_ns();
		atomic_store_explicit(&sh->fw1, i, memory_order_release);
		futex(&sh->fw1, FUTEX_WAKE, 1);
		uint32_t v;
		while ((v = atomic_load_explicit(&sh->fw2, memory_order_acquire)) != i)
			futex(&sh->fw2, FUTEX_WAIT, v);
		uint64_t t1 = now_ns();
		if (i > fa->warm)
			sh->samples[0][i - fa->warm - 1] = (double)(t1 - t0);
	}
	atomic_store_explicit(&sh->fw1, UINT32_MAX, memory_order_release);
	futex(&sh->fw1, FUTEX_WAKE, 1);
	return 0;
}

static int fx_q(int idx, void *arg)
{
	(void)idx;
	(void)arg;
	if (barrier() < 0)
		return 1;
	for (uint32_t last = 0;;) {
		uint32_t v;
		while ((v = atomic_load_explicit(&sh->fw1, memory_order_acquire)) == last)
			futex(&sh->fw1, FUTEX_WAIT, last);
		if (v == UINT32_MAX)
			return 0;
		atomic_store_explicit(&sh->fw2, v, memory_order_release);
		futex(&sh->fw2, FUTEX_WAKE, 1);
		last = v;
	}
}

static int floor_rt(bool futex_rt, bool same, json_t *out)
{
	struct floor_arg fa = {.n = futex_rt ? opt.prop_sleep_rounds : opt.prop_poll_rounds, .yield = same};
	fa.warm = fa.n / 10 + 10;
	reset_shared();
	int q = same ? cfg.cpu[0] : cfg.cpu[1];
	if (spawn(q, futex_rt ? fx_q : cl_ponger, 1, &fa) < 0 ||
	    spawn(cfg.cpu[0], futex_rt ? fx_p : cl_pinger, 0, &fa) < 0 || start(2) < 0 ||
	    reap_all(300ull * 1000000000ull) < 0)
		return -1;
	json_t *o = latency_json(sh->samples[0], fa.n, true);
	char place[128];
	snprintf(place, sizeof place, "%s on CPU %d and %d%s",
		 futex_rt ? "FUTEX_WAIT/FUTEX_WAKE" : "spinning", cfg.cpu[0], q,
		 same && !futex_rt ? ", sched_yield between polls" : "");
	json_object_set_new(o, "placement", json_string(place));
	char name[32];
	snprintf(name, sizeof name, "%s_%s", futex_rt ? "futex" : "cacheline",
		 same ? "same_cpu" : "two_cpus");
	json_object_set_new(out, name, o);
	note("%s round trip: p50 %.3f us, p99 %.3f us", name,
	     json_real_value(json_object_get(o, "p50_ns")) / 1e3,
	     json_real_value(json_object_get(o, "p99_ns")) / 1e3);
	return 0;
}

struct line {
	uint64_t next;
	uint64_t pad[7];
};

/* Two dependent loads per step through a random cycle of 64-byte lines:
 * the least a hashed lookup can do (find the entry, read the value). 4 KiB
 * pages like the memfd, the tmpfs files and the heaps of the systems. */
static int chase_child(int idx, void *arg)
{
	(void)idx;
	uint64_t bytes = *(const uint64_t *)arg, n = bytes / sizeof(struct line);
	if (n < 2)
		n = 2;
	struct line *l =
		mmap(NULL, n * sizeof *l, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t *next = malloc(n * sizeof *next), seed = 42;
	if (l == MAP_FAILED || !next) {
		fprintf(stderr, "peers: floor: no memory for %" PRIu64 " bytes\n", bytes);
		return 1;
	}
	/* The page size of the memory it stands for: shmsync's segment gets
	 * transparent huge pages where shared memory may have them (run.sh
	 * passes --chase-huge when shmsync's stat showed huge_bytes). */
	if (madvise(l, n * sizeof *l, opt.chase_huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0)
		fprintf(stderr, "peers: floor: madvise: %s\n", strerror(errno));
	bench_random_cycle(next, n, &seed);
	for (uint64_t i = 0; i < n; i++)
		l[i].next = next[i];
	free(next);
	if (barrier() < 0)
		return 1;
	uint64_t p = 0, steps = 0, t0 = now_ns(), end = t0 + (uint64_t)(opt.read_seconds * 1e9), t = t0;
	while (t < end) {
		for (int i = 0; i < 4096; i++) {
			p = l[p].next;
			p = l[p].next;
		}
		steps += 4096;
		t = now_ns();
	}
	sh->rd[0].gets = steps;
	sh->rd[0].ns = t - t0;
	sh->rd[0].sink = p; /* keeps the chase alive */
	munmap(l, n * sizeof *l);
	return 0;
}

static int floor_chase(const char *name, uint64_t bytes, json_t *out)
{
	reset_shared();
	if (spawn(cfg.cpu[0], chase_child, 0, &bytes) < 0 || start(1) < 0 ||
	    reap_all(300ull * 1000000000ull) < 0)
		return -1;
	double ns = (double)sh->rd[0].ns / (double)sh->rd[0].gets;
	json_t *o = json_object();
	json_object_set_new(o, "bytes", json_integer((json_int_t)bytes));
	json_object_set_new(o, "ns_per_step", json_real(ns));
	json_object_set_new(o, "steps_per_s", json_real(1e9 / ns));
	json_object_set_new(o, "placement", json_string("one process on CPU 0"));
	json_object_set_new(o, "pages",
			    json_string(opt.chase_huge ? "MADV_HUGEPAGE" : "MADV_NOHUGEPAGE (4 KiB)"));
	json_object_set_new(out, name, o);
	note("two dependent loads over %.1f MiB (%s): %.1f ns per step", (double)bytes / 1048576.0, name, ns);
	return 0;
}

static int run_floor(json_t *doc)
{
	json_t *prop = json_object(), *chase = json_object();
	json_object_set_new(doc, "prop", prop);
	json_object_set_new(doc, "chase", chase);
	if (want(W_PROP)) {
		for (int f = 0; f < 2; f++)
			for (int same = 1; same >= 0; same--)
				if (floor_rt(f == 1, same == 1, prop) < 0)
					return -1;
	}
	if (want(W_READ)) {
		uint64_t b = opt.chase_bytes;
		if (floor_chase("uniform", b, chase) < 0 ||
		    floor_chase("hot", b * HOT_KEYS / cfg.nkeys, chase) < 0)
			return -1;
	}
	return 0;
}

/* ---- options ---------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shmsync_peers --system NAME --out FILE [OPTIONS]\n"
		"Runs the workloads of bench/peers against one system and writes one JSON document.\n"
		"  --system NAME        shmsync, lmdb, redis, sqlite or floor\n"
		"  --out FILE           where the JSON goes ('-': stdout)\n"
		"  --smoke              a run of seconds: 10K keys, few round trips, short windows\n"
		"  --keys N             keys (default 1000000; --smoke 10000), 2048..16000000\n"
		"  --repeat N           repeat number, recorded in the JSON and seeding the readers "
		"(default 1)\n"
		"  --only W             prop, write, read, memory or churn (repeatable; default all)\n"
		"  --cpus A,B           the CPUs to pin to (default 0,1); B is the server's (A,A: the "
		"server\n"
		"                       shares the clients' CPU)\n"
		"  --variant NAME       a label for this configuration, recorded in the JSON\n"
		"  --tmpdir DIR         for sockets and database files (default: a new directory in "
		"/dev/shm)\n"
		"  --shmsync-tool PATH  the shmsync program, for `shmsync serve` (system shmsync)\n"
		"  --redis-server PATH  the redis-server program (default /usr/bin/redis-server)\n"
		"  --capacity SIZE      shmsync serve --capacity (default 1G; --smoke 256M)\n"
		"  --poll-place P       shmsync busy-polling placement: shared (A and B on one CPU, the "
		"root\n"
		"                       on the other; default) or split (A alone, B with the root)\n"
		"  --prop-rounds N      busy-polling round trips (default 10000; --smoke 300)\n"
		"  --sleep-rounds N     sleeping round trips (default 5000; --smoke 200)\n"
		"  --write-seconds S    time limit of batch-1 write runs (default 3; --smoke 0.5)\n"
		"  --read-seconds S     window of each read run and floor chase (default 1; --smoke 0.1)\n"
		"  --churn-cycles N     directory create/delete cycles (default 6000; --smoke 300)\n"
		"  --chase-bytes N      memory of the uniform floor chase (default: 160 bytes a key)\n"
		"  --chase-huge         the floor chase on transparent huge pages (default: 4 KiB pages)\n");
}

static void die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "shmsync_peers: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(see --help)\n");
	exit(2);
}

static uint64_t parse_u64(const char *name, const char *s, uint64_t lo, uint64_t hi)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi) {
		fprintf(stderr,
			"shmsync_peers: %s: '%s' is not a whole number in [%" PRIu64 ", %" PRIu64
			"]\n(see --help)\n",
			name, s, lo, hi);
		exit(2);
	}
	return v;
}

static double parse_secs(const char *name, const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0.01 && v <= 600)) {
		fprintf(stderr,
			"shmsync_peers: %s: '%s' is not a number of seconds in [0.01, 600]\n(see --help)\n",
			name, s);
		exit(2);
	}
	return v;
}

static void parse(int argc, char **argv)
{
	bool smoke = false;
	const char *keys = NULL, *pr = NULL, *sr = NULL, *ws = NULL, *rs = NULL, *cc = NULL, *cb = NULL;
	cfg.cpu[0] = 0;
	cfg.cpu[1] = 1;
	cfg.redis_server = "/usr/bin/redis-server";
	opt.place = "shared";
	opt.repeat = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		}
		if (!strcmp(a, "--smoke")) {
			smoke = true;
			continue;
		}
		if (!strcmp(a, "--chase-huge")) {
			opt.chase_huge = true;
			continue;
		}
		if (i + 1 >= argc)
			die_usage("%s needs a value", a);
		const char *v = argv[++i];
		if (!strcmp(a, "--system"))
			opt.system = v;
		else if (!strcmp(a, "--out"))
			opt.out = v;
		else if (!strcmp(a, "--keys"))
			keys = v;
		else if (!strcmp(a, "--repeat"))
			opt.repeat = (unsigned)parse_u64(a, v, 1, 1000);
		else if (!strcmp(a, "--only")) {
			static const char *const names[] = {"prop", "write", "read", "memory", "churn"};
			unsigned bit = 0;
			for (unsigned k = 0; k < 5; k++)
				if (!strcmp(v, names[k]))
					bit = 1u << k;
			if (!bit)
				die_usage("--only: '%s' is not prop, write, read, memory or churn", v);
			opt.only |= bit;
		} else if (!strcmp(a, "--cpus")) {
			int x, y, n = 0;
			if (sscanf(v, "%d,%d%n", &x, &y, &n) != 2 || v[n] || x < 0 || y < 0 ||
			    x >= CPU_SETSIZE || y >= CPU_SETSIZE)
				die_usage("--cpus: '%s' is not two CPU numbers A,B", v);
			cfg.cpu[0] = x;
			cfg.cpu[1] = y;
		} else if (!strcmp(a, "--variant")) {
			if (!*v || strlen(v) > 40 ||
			    strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(v))
				die_usage("--variant: '%s' is not a short label of [a-z0-9_-]", v);
			opt.variant = v;
		} else if (!strcmp(a, "--tmpdir"))
			cfg.tmpdir = v;
		else if (!strcmp(a, "--shmsync-tool"))
			cfg.shmsync_tool = v;
		else if (!strcmp(a, "--redis-server"))
			cfg.redis_server = v;
		else if (!strcmp(a, "--capacity")) {
			size_t d = strspn(v, "0123456789");
			if (d == 0 || (v[d] && (strchr("KMGT", v[d]) == NULL || v[d + 1])))
				die_usage("--capacity: '%s' is not a size such as 1G or 512M", v);
			cfg.capacity = v;
		} else if (!strcmp(a, "--poll-place")) {
			if (strcmp(v, "shared") && strcmp(v, "split"))
				die_usage("--poll-place: '%s' is not shared or split", v);
			opt.place = v;
		} else if (!strcmp(a, "--prop-rounds"))
			pr = v;
		else if (!strcmp(a, "--sleep-rounds"))
			sr = v;
		else if (!strcmp(a, "--write-seconds"))
			ws = v;
		else if (!strcmp(a, "--read-seconds"))
			rs = v;
		else if (!strcmp(a, "--churn-cycles"))
			cc = v;
		else if (!strcmp(a, "--chase-bytes"))
			cb = v;
		else
			die_usage("unknown option '%s'", a);
	}
	if (!opt.system)
		die_usage("%s", "--system is required");
	if (!opt.out)
		die_usage("%s", "--out is required");
	opt.smoke = smoke;
	cfg.nkeys = (unsigned)(keys ? parse_u64("--keys", keys, 2048, 16000000) : smoke ? 10000 : 1000000);
	opt.prop_poll_rounds = (unsigned)(pr      ? parse_u64("--prop-rounds", pr, 10, MAX_SAMPLES)
					  : smoke ? 300
						  : 10000);
	opt.prop_sleep_rounds = (unsigned)(sr      ? parse_u64("--sleep-rounds", sr, 10, MAX_SAMPLES)
					   : smoke ? 200
						   : 5000);
	opt.write_seconds = ws ? parse_secs("--write-seconds", ws) : smoke ? 0.5 : 3;
	opt.read_seconds = rs ? parse_secs("--read-seconds", rs) : smoke ? 0.1 : 1;
	opt.churn_cycles = (unsigned)(cc ? parse_u64("--churn-cycles", cc, 200, 900000) : smoke ? 300 : 6000);
	opt.chase_bytes =
		cb ? parse_u64("--chase-bytes", cb, 4096, (uint64_t)64 << 30) : (uint64_t)cfg.nkeys * 160;
	if (!cfg.capacity)
		cfg.capacity = smoke ? "256M" : "1G";
	if (!strcmp(opt.system, "shmsync"))
		be = &be_shmsync;
	else if (!strcmp(opt.system, "lmdb"))
		be = &be_lmdb;
	else if (!strcmp(opt.system, "redis"))
		be = &be_redis;
	else if (!strcmp(opt.system, "sqlite"))
		be = &be_sqlite;
	else if (strcmp(opt.system, "floor"))
		die_usage("--system: '%s' is not shmsync, lmdb, redis, sqlite or floor", opt.system);
	if (be == &be_shmsync && !cfg.shmsync_tool)
		die_usage("%s", "--system shmsync needs --shmsync-tool PATH (build/tools/shmsync)");
	if (be == &be_shmsync && access(cfg.shmsync_tool, X_OK) != 0)
		die_usage("--shmsync-tool: '%s' is not an executable program", cfg.shmsync_tool);
	if (be == &be_redis && access(cfg.redis_server, X_OK) != 0)
		die_usage("--redis-server: '%s' is not an executable program (apt-get install redis-server)",
			  cfg.redis_server);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (cfg.cpu[0] >= ncpu || cfg.cpu[1] >= ncpu) {
		fprintf(stderr, "shmsync_peers: --cpus %d,%d: this machine has %ld online CPUs\n", cfg.cpu[0],
			cfg.cpu[1], ncpu);
		exit(2);
	}
}

static json_t *envelope(void)
{
	struct bench_opts bo = {.json = true, .quick = opt.smoke, .cpu = cfg.cpu[0], .repeats = 1};
	json_t *doc = bench_json_new("peers", &bo);
	char date[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_object_set_new(doc, "date", json_string(date));
	json_object_set_new(doc, "system", json_string(opt.system));
	json_object_set_new(doc, "variant", json_string(opt.variant ? opt.variant : "default"));
	json_object_set_new(doc, "repeat", json_integer(opt.repeat));
	json_object_set_new(doc, "smoke", json_boolean(opt.smoke));
	char loadavg[64] = "";
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (!fgets(loadavg, sizeof loadavg, f))
			loadavg[0] = 0;
		fclose(f);
		loadavg[strcspn(loadavg, "\n")] = 0;
	}
	json_object_set_new(doc, "loadavg_at_start", json_string(loadavg));
	json_t *p = json_object();
	json_object_set_new(p, "keys", json_integer(cfg.nkeys));
	json_object_set_new(p, "key_bytes", json_integer(KEY_LEN));
	json_object_set_new(p, "value_bytes", json_integer(VAL_LEN));
	json_object_set_new(p, "prop_poll_round_trips", json_integer(opt.prop_poll_rounds));
	json_object_set_new(p, "prop_sleep_round_trips", json_integer(opt.prop_sleep_rounds));
	json_object_set_new(p, "write_seconds_limit_batch_1", json_real(opt.write_seconds));
	json_object_set_new(p, "read_seconds", json_real(opt.read_seconds));
	json_object_set_new(p, "gets_per_snapshot", json_integer(SNAP_GETS));
	json_object_set_new(p, "hot_keys", json_integer(HOT_KEYS));
	json_object_set_new(p, "churn_cycles", json_integer(opt.churn_cycles));
	json_object_set_new(p, "cpus", json_sprintf("%d,%d", cfg.cpu[0], cfg.cpu[1]));
	if (!be)
		json_object_set_new(p, "chase_bytes", json_integer((json_int_t)opt.chase_bytes));
	if (be == &be_shmsync) {
		json_object_set_new(p, "capacity", json_string(cfg.capacity));
		json_object_set_new(p, "poll_placement", json_string(opt.place));
		const char *sig = getenv("SHMSYNC_SIGNAL");
		json_object_set_new(p, "SHMSYNC_SIGNAL", sig ? json_string(sig) : json_null());
	}
	json_object_set_new(doc, "params", p);
	if (be) {
		json_object_set_new(doc, "durability", json_string(be->durability));
		json_object_set_new(doc, "processes_for_propagation", json_integer(be->server ? 3 : 2));
	} else {
		json_object_set_new(doc, "durability", json_string("none: the hardware alone"));
	}
	return doc;
}

static void cleanup(void)
{
	if (be)
		be->stop(&cfg);
	if (own_tmpdir) {
		char cmd[300];
		/* Only the directory this run made (mkdtemp), by its full path. */
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir_buf);
		if (system(cmd) != 0)
			fprintf(stderr, "peers: could not remove %s\n", tmpdir_buf);
	}
}

int main(int argc, char **argv)
{
	parse(argc, argv);
	if (!cfg.tmpdir) {
		snprintf(tmpdir_buf, sizeof tmpdir_buf, "/dev/shm/shmsync-peers-XXXXXX");
		if (!mkdtemp(tmpdir_buf)) {
			fprintf(stderr, "shmsync_peers: mkdtemp in /dev/shm: %s\n", strerror(errno));
			return 1;
		}
		own_tmpdir = true;
		cfg.tmpdir = tmpdir_buf;
	}
	if (strlen(cfg.tmpdir) > 200) {
		fprintf(stderr, "shmsync_peers: --tmpdir: '%s' is longer than 200 bytes\n", cfg.tmpdir);
		cleanup();
		return 2;
	}
	for (size_t i = 0; i < N_TMP_FILES; i++)
		snprintf(tmp_paths[i], sizeof tmp_paths[i], "%s/%s", cfg.tmpdir, tmp_files[i]);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	perm = malloc((size_t)cfg.nkeys * sizeof *perm);
	if (sh == MAP_FAILED || !perm) {
		fprintf(stderr, "shmsync_peers: out of memory\n");
		cleanup();
		return 1;
	}
	/* One write order for every system (a fixed seed): Fisher-Yates. */
	uint64_t seed = 12;
	for (uint32_t i = 0; i < cfg.nkeys; i++)
		perm[i] = i;
	for (uint32_t i = cfg.nkeys - 1; i > 0; i--) {
		uint32_t j = (uint32_t)bench_rand_below(&seed, i + 1), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (unsigned i = 0; i < HOT_KEYS; i++)
		hot[i] = perm[(uint64_t)i * (cfg.nkeys / HOT_KEYS)];
	json_t *doc = envelope();
	int rc = be ? run_system(doc) : run_floor(doc);
	if (be)
		json_object_set_new(doc, "version", json_string(cfg.version));
	cleanup();
	if (rc == 0) {
		int w = !strcmp(opt.out, "-")
				? json_dumpf(doc, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER)
				: json_dump_file(doc, opt.out, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
		if (w != 0) {
			fprintf(stderr, "shmsync_peers: could not write %s\n", opt.out);
			rc = -1;
		}
	}
	json_decref(doc);
	free(perm);
	munmap(sh, sizeof *sh);
	return rc == 0 ? 0 : 1;
}
