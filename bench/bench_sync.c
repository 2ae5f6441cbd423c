/* Cross-process figures: a root and workers in separate processes, pinned.
 *
 * Sections (all by default; --only NAME for one, repeatable):
 *   rtt     own round trip: a worker exports one put and polls import_next
 *           (timeout 0) until it sees it; also export + wait_committed +
 *           import_until. Floor: a busy-polled cache-line round trip between
 *           two processes pinned like the root and the worker.
 *   commit  batch-1 commit round trip: export + wait_committed (the worker
 *           spins, as the library does for 20 us before it sleeps). Same
 *           floor.
 *   xprop   cross-worker propagation with everyone asleep: worker A exports
 *           a put carrying a CLOCK_MONOTONIC timestamp; worker B, asleep in
 *           import_next(-1), sees it. Floor: a FUTEX_WAIT/FUTEX_WAKE round
 *           trip between two sleeping processes placed like A/B and the root.
 *   tput    aggregate updates/s, 1 and 2 workers, batches of 1 and 64
 *           (random overwrites of 1024 keys), blocking exports, one
 *           wait_committed at the end; also the "sustained" rate, counted
 *           until the root has freed what the run superseded. Baseline: the
 *           same puts applied in-process by the shm layer on the root's CPU,
 *           one tick per 64 puts with a full reclaim after each (the root's
 *           work without the sync layer), interleaved with the repeats.
 *   idle    CPU used by a root and 2 workers asleep in import_next(-1), from
 *           /proc/<pid>/schedstat (ns; stat's utime/stime count 10 ms ticks).
 *
 * Placement (sched_setaffinity, set by each process right after fork): the
 * root on the "root CPU" (default 1), every worker on the "worker CPU"
 * (default 0; --cpu N picks it, the root gets the next one). The machine
 * this was written for has 2 cores, so 3 processes must share: both workers
 * share a core and the root keeps one to itself, because the root is the
 * one process every path goes through (and the one that spins after each
 * commit). Each floor is measured by two processes pinned exactly like the
 * two sides of the path it is compared with.
 *
 * The signal path is the library's choice (io_uring futex waits, or
 * SHMSYNC_SIGNAL=futex): run the program once per path; the JSON says which
 * ran. The bench parent never holds the root (DESIGN.md: workers are not
 * forked from a process that holds it): it forks the root, then the workers.
 */
#include <linux/futex.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "bench_root.h"
#include "bench_util.h"
#include "shm.h"
#include "shmsync.h"

#define MAX_SAMPLES 200000
#define MAX_WORKERS 2
#define MAX_REPEATS 64
#define KEY_LEN 16
#define VAL_LEN 32
#define NKEYS 1024 /* the throughput key space: all in cache, like bench_commit's 1K case */

static const char DIR_NAME[] = "/bench/";

/* Everything the processes of one measurement share: a MAP_SHARED anonymous
 * mapping made by the parent before any fork. */
struct ctl {
	/* The cache-line floor: each word on its own pair of lines, so the
	 * adjacent-line prefetcher does not move both at once. */
	alignas(128) _Atomic uint64_t ping;
	alignas(128) _Atomic uint64_t pong;
	/* The futex floor. */
	alignas(128) _Atomic uint32_t fw1;
	alignas(128) _Atomic uint32_t fw2;
	alignas(128) _Atomic uint64_t q_woke; /* when the far side woke, ns */
	alignas(128) _Atomic uint32_t ready;  /* workers attached and waiting */
	_Atomic uint32_t go;
	_Atomic uint32_t done; /* B's samples (xprop) */
	_Atomic uint64_t t_go;
	_Atomic uint64_t puts[MAX_WORKERS];
	_Atomic uint64_t t_end[MAX_WORKERS];
	_Atomic uint64_t cpu_ns[MAX_WORKERS];
	_Atomic uint64_t sleeps[MAX_WORKERS]; /* voluntary context switches */
	_Atomic uint64_t waited[MAX_WORKERS]; /* ns runnable but not running */
	pid_t root_pid;
	_Atomic uint32_t finished; /* throughput workers past their last commit */
	_Atomic uint64_t t_clear;  /* when the root's bytes in use were back to the level before the run */
	_Atomic uint64_t bytes_before;
	struct proc_cpu_end {
		uint64_t ns, wait_ns, vcsw; /* the root's, read by each worker when it finished */
		uint64_t bytes_in_use;      /* the segment's, as the root last published it then */
	} root_end[MAX_WORKERS];
	char signal[16], root_signal[16];
	double a[MAX_SAMPLES]; /* samples, ns */
	double b[MAX_SAMPLES];
	double c[MAX_SAMPLES];
};

static struct ctl *ctl;
static char sock_path[108];
static int root_cpu, worker_cpu;

/* ---- processes ----------------------------------------------------------- */

static long futex(_Atomic uint32_t *word, int op, uint32_t val)
{
	return syscall(SYS_futex, (uint32_t *)word, op, val, NULL, NULL, 0);
}

/* Waits (asleep, no spinning) until *word != old. */
static void futex_wait_change(_Atomic uint32_t *word, uint32_t old)
{
	while (atomic_load_explicit(word, memory_order_acquire) == old)
		futex(word, FUTEX_WAIT, old);
}

static void futex_wake_all(_Atomic uint32_t *word)
{
	futex(word, FUTEX_WAKE, INT32_MAX);
}

static void reap_child(pid_t pid, const char *what)
{
	int status;
	if (waitpid(pid, &status, 0) != pid)
		bench_die("waitpid", -errno);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "bench_sync: %s (pid %d) failed: %s %d\n", what, (int)pid,
			WIFEXITED(status) ? "exit" : "signal",
			WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		unlink(sock_path);
		exit(1); /* the children follow (PR_SET_PDEATHSIG) */
	}
}

static int root_main(void *arg)
{
	(void)arg;
	shmsync_root_opts o = {
		.socket_path = sock_path,
		/* Address space, grown as used. Sustained batches of 64 leave a
		 * backlog of superseded versions behind (notes/bugs.md), so
		 * more than the live data needs. */
		.capacity = (size_t)4 << 30,
	};
	return bench_root_serve("bench_sync", &o);
}

static pid_t start_root(void)
{
	return bench_root_start("bench_sync", root_cpu, sock_path, root_main);
}

static void stop_root(pid_t pid)
{
	kill(pid, SIGTERM);
	reap_child(pid, "root");
	unlink(sock_path);
}

static void worker_die(const char *what, int rc)
{
	fprintf(stderr, "bench_sync: worker %d: %s: %s\n", (int)getpid(), what, shmsync_strerror(rc));
	_exit(1);
}

/* Attaches, records the signal paths, makes DIR_NAME exist and imports up
 * to the present. */
static shmsync_worker *attach(void)
{
	shmsync_worker *w;
	char err[256] = "";
	int rc = shmsync_attach_msg(&w, sock_path, err, sizeof err);
	if (rc < 0) {
		fprintf(stderr, "bench_sync: attach: %s: %s\n", shmsync_strerror(rc), err);
		_exit(1);
	}
	shmsync_batch *b;
	uint64_t seq, tick = 0;
	if ((rc = shmsync_begin(w, &b)) < 0 || (rc = shmsync_mkdir(b, DIR_NAME)) < 0 ||
	    (rc = shmsync_export(b, 0, &seq)) < 0)
		worker_die("mkdir", rc);
	rc = shmsync_wait_committed(w, seq, &tick, -1);
	if (rc < 0 && rc != -EEXIST)
		worker_die("mkdir commit", rc);
	while ((rc = shmsync_import_next(w, 0, NULL, NULL)) >= 0)
		;
	if (rc != -ETIMEDOUT)
		worker_die("import", rc);
	/* After a commit: the root publishes how it waits only when it
	 * reclaims (before that, stat says "uring": notes/bugs.md). */
	shmsync_stats st;
	if (shmsync_stat(w, &st) == 0) {
		snprintf(ctl->signal, sizeof ctl->signal, "%s", st.signal);
		snprintf(ctl->root_signal, sizeof ctl->root_signal, "%s", st.root_signal);
	}
	return w;
}

/* This process's on-CPU time in ns and its context switches, from /proc:
 * schedstat counts nanoseconds (stat's utime/stime count 10 ms ticks, too
 * coarse for an idle process). */
struct proc_cpu {
	uint64_t ns, wait_ns, vcsw,
		ivcsw; /* wait_ns: runnable but not running (another process had the CPU) */
};

static struct proc_cpu proc_cpu(pid_t pid)
{
	struct proc_cpu pc = {0, 0, 0, 0};
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f) {
		unsigned long long ns = 0, wait = 0;
		if (fscanf(f, "%llu %llu", &ns, &wait) == 2) {
			pc.ns = ns;
			pc.wait_ns = wait;
		}
		fclose(f);
	} else {
		/* Without schedstat: utime + stime, in clock ticks. */
		snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
		f = fopen(path, "r");
		if (f) {
			char buf[1024];
			size_t n = fread(buf, 1, sizeof buf - 1, f);
			buf[n] = 0;
			char *p = strrchr(buf, ')');
			unsigned long long ut = 0, stime = 0;
			if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
					&stime) == 2)
				pc.ns = (ut + stime) * (1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK));
			fclose(f);
		}
	}
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (f) {
		while (fgets(line, sizeof line, f)) {
			unsigned long long v;
			if (sscanf(line, "voluntary_ctxt_switches: %llu", &v) == 1)
				pc.vcsw = v;
			else if (sscanf(line, "nonvoluntary_ctxt_switches: %llu", &v) == 1)
				pc.ivcsw = v;
		}
		fclose(f);
	}
	return pc;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* p50 and p99 of n samples (sorts them). */
struct pcts {
	double p50, p99;
};

static struct pcts pcts(double *v, size_t n)
{
	struct pcts p;
	p.p99 = bench_pct(v, n, 99);
	p.p50 = bench_pct(v, n, 50);
	return p;
}

/* ---- floors -------------------------------------------------------------- */

struct floor_arg {
	size_t n, warm;
	uint64_t gap_ns;
};

static int cl_pinger(void *arg)
{
	const struct floor_arg *fa = arg;
	for (uint64_t i = 1; i <= fa->warm + fa->n; i++) {
		uint64_t t0 = bench_now_ns();
		atomic_store_explicit(&ctl->ping, i, memory_order_release);
		while (atomic_load_explicit(&ctl->pong, memory_order_acquire) != i)
			;
		uint64_t t1 = bench_now_ns();
		if (i > fa->warm)
			ctl->a[i - fa->warm - 1] = (double)(t1 - t0);
	}
	atomic_store_explicit(&ctl->ping, UINT64_MAX, memory_order_release);
	return 0;
}

static int cl_ponger(void *arg)
{
	(void)arg;
	uint64_t last = 0;
	for (;;) {
		uint64_t v = atomic_load_explicit(&ctl->ping, memory_order_acquire);
		if (v == last)
			continue;
		if (v == UINT64_MAX)
			return 0;
		atomic_store_explicit(&ctl->pong, v, memory_order_release);
		last = v;
	}
}

/* The least a round trip between the root's CPU and the worker's can cost:
 * one cache line there, another back, both sides busy-polling. Samples in
 * ctl->a. */
static void cacheline_floor(size_t n)
{
	struct floor_arg fa = {n, n / 10 + 100, 0};
	atomic_store(&ctl->ping, 0);
	atomic_store(&ctl->pong, 0);
	pid_t q = bench_spawn(root_cpu, cl_ponger, NULL);
	pid_t p = bench_spawn(worker_cpu, cl_pinger, &fa);
	reap_child(p, "cache-line pinger");
	reap_child(q, "cache-line ponger");
}

static int fx_p(void *arg)
{
	const struct floor_arg *fa = arg;
	for (uint32_t i = 1; i <= fa->warm + fa->n; i++) {
		sleep_ns(fa->gap_ns);
		uint64_t t0 = bench_now_ns();
		atomic_store_explicit(&ctl->fw1, i, memory_order_release);
		futex(&ctl->fw1, FUTEX_WAKE, 1);
		uint32_t v;
		while ((v = atomic_load_explicit(&ctl->fw2, memory_order_acquire)) != i)
			futex(&ctl->fw2, FUTEX_WAIT, v);
		uint64_t t1 = bench_now_ns();
		if (i > fa->warm) {
			ctl->a[i - fa->warm - 1] = (double)(t1 - t0);
			ctl->b[i - fa->warm - 1] =
				(double)(atomic_load_explicit(&ctl->q_woke, memory_order_relaxed) - t0);
		}
	}
	atomic_store_explicit(&ctl->fw1, UINT32_MAX, memory_order_release);
	futex(&ctl->fw1, FUTEX_WAKE, 1);
	return 0;
}

static int fx_q(void *arg)
{
	(void)arg;
	uint32_t last = 0;
	for (;;) {
		uint32_t v;
		while ((v = atomic_load_explicit(&ctl->fw1, memory_order_acquire)) == last)
			futex(&ctl->fw1, FUTEX_WAIT, last);
		uint64_t t = bench_now_ns();
		if (v == UINT32_MAX)
			return 0;
		atomic_store_explicit(&ctl->q_woke, t, memory_order_relaxed);
		atomic_store_explicit(&ctl->fw2, v, memory_order_release);
		futex(&ctl->fw2, FUTEX_WAKE, 1);
		last = v;
	}
}

/* A sleep/wake round trip between two processes placed like worker A (and
 * B) and the root: P on the worker CPU wakes Q on the root CPU and sleeps;
 * Q wakes P. Plain FUTEX_WAIT / FUTEX_WAKE, no spinning, the same gap before
 * each round as the propagation test (so both find the CPUs equally idle).
 * Round trips in ctl->a, one way (P's wake to Q running) in ctl->b. */
static void futex_floor(size_t n, uint64_t gap_ns)
{
	struct floor_arg fa = {n, n / 10 + 10, gap_ns};
	atomic_store(&ctl->fw1, 0);
	atomic_store(&ctl->fw2, 0);
	pid_t q = bench_spawn(root_cpu, fx_q, NULL);
	pid_t p = bench_spawn(worker_cpu, fx_p, &fa);
	reap_child(p, "futex P");
	reap_child(q, "futex Q");
}

/* ---- rtt and commit ------------------------------------------------------ */

enum { RTT_POLL = 1, RTT_WAITC = 2, COMMIT = 4 };

struct lat_arg {
	size_t n, warm;
	int what;
};

struct seen {
	uint64_t last;
};

static int on_rtt(const shmsync_change *c, void *arg)
{
	struct seen *s = arg;
	if (c->kind == SHMSYNC_PUT && c->key_len == 1 && c->value_len == 8)
		memcpy(&s->last, c->value, 8);
	return 0;
}

static void export_one(shmsync_worker *w, uint64_t i, uint64_t *seq)
{
	shmsync_batch *b;
	int rc;
	if ((rc = shmsync_begin(w, &b)) < 0 || (rc = shmsync_put(b, DIR_NAME, "r", 1, &i, 8)) < 0 ||
	    (rc = shmsync_export(b, 0, seq)) < 0)
		worker_die("export", rc);
}

/* One worker; each kind asked for fills its array (a: own round trip by
 * polling import_next, b: by wait_committed + import_until, c: commit). */
static int lat_worker(void *arg)
{
	const struct lat_arg *la = arg;
	shmsync_worker *w = attach();
	struct seen s = {0};
	uint64_t i = 0, seq, tick;
	int rc;
	if (la->what & RTT_POLL) {
		for (size_t k = 0; k < la->warm + la->n; k++) {
			i++;
			uint64_t t0 = bench_now_ns();
			export_one(w, i, &seq);
			do {
				rc = shmsync_import_next(w, 0, on_rtt, &s);
				if (rc < 0 && rc != -ETIMEDOUT)
					worker_die("import_next", rc);
			} while (s.last != i);
			uint64_t t1 = bench_now_ns();
			if (k >= la->warm)
				ctl->a[k - la->warm] = (double)(t1 - t0);
		}
	}
	if (la->what & RTT_WAITC) {
		for (size_t k = 0; k < la->warm + la->n; k++) {
			i++;
			uint64_t t0 = bench_now_ns();
			export_one(w, i, &seq);
			if ((rc = shmsync_wait_committed(w, seq, &tick, -1)) < 0)
				worker_die("wait_committed", rc);
			if ((rc = shmsync_import_until(w, tick, -1, on_rtt, &s)) < 0)
				worker_die("import_until", rc);
			uint64_t t1 = bench_now_ns();
			if (s.last != i) {
				fprintf(stderr, "bench_sync: import_until did not deliver our own put\n");
				_exit(1);
			}
			if (k >= la->warm)
				ctl->b[k - la->warm] = (double)(t1 - t0);
		}
	}
	if (la->what & COMMIT) {
		/* Offline: the commit path alone, no snapshot held. */
		shmsync_offline(w);
		for (size_t k = 0; k < la->warm + la->n; k++) {
			i++;
			uint64_t t0 = bench_now_ns();
			export_one(w, i, &seq);
			if ((rc = shmsync_wait_committed(w, seq, &tick, -1)) < 0)
				worker_die("wait_committed", rc);
			uint64_t t1 = bench_now_ns();
			if (k >= la->warm)
				ctl->c[k - la->warm] = (double)(t1 - t0);
			/* Keep the cursor near the head now and then, so the
			 * change log does not fill behind this worker. */
			if (k % 1024 == 1023) {
				while ((rc = shmsync_import_next(w, 0, NULL, NULL)) >= 0)
					;
				shmsync_offline(w);
			}
		}
	}
	shmsync_detach(w);
	return 0;
}

/* ---- cross-worker propagation -------------------------------------------- */

struct xp_arg {
	size_t n, warm;
	uint64_t gap_ns;
};

struct xp_seen {
	const struct xp_arg *xa;
	uint32_t got;
};

static int on_xprop(const shmsync_change *c, void *arg)
{
	uint64_t now = bench_now_ns();
	struct xp_seen *s = arg;
	uint64_t v[2];
	if (c->kind != SHMSYNC_PUT || c->key_len != 1 || c->value_len != sizeof v)
		return 0;
	memcpy(v, c->value, sizeof v);
	if (v[0] > s->xa->warm)
		ctl->a[v[0] - s->xa->warm - 1] = (double)(now - v[1]);
	s->got = (uint32_t)v[0];
	return 0;
}

static int xp_b(void *arg)
{
	const struct xp_arg *xa = arg;
	shmsync_worker *w = attach();
	struct xp_seen s = {xa, 0};
	atomic_fetch_add(&ctl->ready, 1);
	futex_wake_all(&ctl->ready);
	while (s.got < xa->warm + xa->n) {
		uint32_t before = s.got;
		int rc = shmsync_import_next(w, -1, on_xprop, &s);
		if (rc < 0)
			worker_die("import_next(-1)", rc);
		if (s.got != before) {
			atomic_store_explicit(&ctl->done, s.got, memory_order_release);
			futex_wake_all(&ctl->done);
		}
	}
	shmsync_detach(w);
	return 0;
}

static int xp_a(void *arg)
{
	const struct xp_arg *xa = arg;
	shmsync_worker *w = attach();
	shmsync_offline(w);
	uint32_t r;
	while ((r = atomic_load(&ctl->ready)) < 1)
		futex(&ctl->ready, FUTEX_WAIT, r);
	for (uint64_t i = 1; i <= xa->warm + xa->n; i++) {
		/* Long enough that B, the root and the far CPU are asleep:
		 * the root and B spin 20 us before they sleep. */
		sleep_ns(xa->gap_ns);
		shmsync_batch *b;
		uint64_t seq;
		int rc;
		uint64_t t0 = bench_now_ns();
		uint64_t v[2] = {i, t0};
		if ((rc = shmsync_begin(w, &b)) < 0 ||
		    (rc = shmsync_put(b, DIR_NAME, "x", 1, v, sizeof v)) < 0 ||
		    (rc = shmsync_export(b, 0, &seq)) < 0)
			worker_die("export", rc);
		uint64_t t1 = bench_now_ns();
		if (i > xa->warm)
			ctl->b[i - xa->warm - 1] = (double)(t1 - t0);
		uint32_t d;
		while ((d = atomic_load_explicit(&ctl->done, memory_order_acquire)) < i)
			futex(&ctl->done, FUTEX_WAIT, d);
		/* Off the measured path: keep this worker's cursor at the head
		 * so the change log holds nothing for it. */
		while ((rc = shmsync_import_next(w, 0, NULL, NULL)) >= 0)
			;
		shmsync_offline(w);
	}
	shmsync_detach(w);
	return 0;
}

/* ---- throughput ---------------------------------------------------------- */

struct tp_arg {
	int idx;
	uint32_t nw;
	size_t batch;
	uint64_t dur_ns;
};

static void make_key(uint8_t *k, uint64_t i)
{
	uint64_t mix = (i + 1) * 0x9E3779B97F4A7C15ULL;
	mix ^= mix >> 29;
	memcpy(k, &i, 8);
	memcpy(k + 8, &mix, 8);
}

static int tp_worker(void *arg)
{
	const struct tp_arg *ta = arg;
	shmsync_worker *w = attach();
	/* Offline: a writer that never reads pins no versions, so the root
	 * frees superseded values at once, as in a steady state. */
	shmsync_offline(w);
	uint8_t keys[NKEYS][KEY_LEN], val[VAL_LEN];
	for (uint64_t i = 0; i < NKEYS; i++)
		make_key(keys[i], i);
	uint64_t seed = 0x9E3779B97F4A7C15u, puts = 0, seq = 0, tick, rejected0 = 0;
	shmsync_stats st = {0};
	if (shmsync_stat(w, &st) == 0)
		rejected0 = st.batches_rejected; /* attach's mkdir, if the directory existed */
	uint64_t bytes0 = st.bytes_in_use;
	if (ta->idx == 0)
		ctl->bytes_before = bytes0;
	seed *= (uint64_t)ta->idx + 1;
	atomic_fetch_add(&ctl->ready, 1);
	futex_wait_change(&ctl->go, 0);
	uint64_t end = atomic_load(&ctl->t_go) + ta->dur_ns;
	/* CPU time and sleeps of the measured part only. */
	struct rusage ru0;
	getrusage(RUSAGE_SELF, &ru0);
	uint64_t sleeps0 = (uint64_t)ru0.ru_nvcsw;
	struct timespec ts0;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts0);
	uint64_t cpu0 = (uint64_t)ts0.tv_sec * 1000000000u + (uint64_t)ts0.tv_nsec;
	uint64_t waited0 = proc_cpu(getpid()).wait_ns;
	int rc;
	do {
		shmsync_batch *b;
		if ((rc = shmsync_begin(w, &b)) < 0)
			worker_die("begin", rc);
		for (size_t j = 0; j < ta->batch; j++) {
			uint64_t n = puts + j;
			for (int k = 0; k < VAL_LEN; k += 8)
				memcpy(val + k, &n, 8);
			if ((rc = shmsync_put(b, DIR_NAME, keys[bench_rand_below(&seed, NKEYS)], KEY_LEN, val,
					      VAL_LEN)) < 0)
				worker_die("put", rc);
		}
		if ((rc = shmsync_export(b, 0, &seq)) < 0)
			worker_die("export", rc);
		puts += ta->batch;
	} while (bench_now_ns() < end);
	if ((rc = shmsync_wait_committed(w, seq, &tick, -1)) < 0)
		worker_die("wait_committed", rc);
	uint64_t t_end = bench_now_ns();
	/* The root's CPU time up to here: after the last commit it goes on
	 * freeing superseded versions, which is not part of the run. */
	struct proc_cpu rc_end = proc_cpu(ctl->root_pid);
	ctl->root_end[ta->idx] = (struct proc_cpu_end){rc_end.ns, rc_end.wait_ns, rc_end.vcsw, 0};
	if (shmsync_stat(w, &st) == 0)
		ctl->root_end[ta->idx].bytes_in_use = st.bytes_in_use;
	if (st.batches_rejected != rejected0) {
		fprintf(stderr, "bench_sync: %" PRIu64 " batches rejected\n",
			st.batches_rejected - rejected0);
		_exit(1);
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	ctl->sleeps[ta->idx] = (uint64_t)ru.ru_nvcsw - sleeps0;
	ctl->waited[ta->idx] = proc_cpu(getpid()).wait_ns - waited0;
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	ctl->cpu_ns[ta->idx] = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec - cpu0;
	ctl->puts[ta->idx] = puts;
	ctl->t_end[ta->idx] = t_end;
	atomic_fetch_add(&ctl->finished, 1);
	if (ta->idx == 0) {
		/* The root frees superseded versions a budget at a time, after
		 * the commits that retired them: the run is over for memory
		 * only when bytes in use are back where they started (1 MiB of
		 * slack for the arena's own bookkeeping). */
		while (atomic_load(&ctl->finished) < ta->nw)
			usleep(200);
		uint64_t limit = bench_now_ns() + 20000000000u;
		while (shmsync_stat(w, &st) == 0 && st.bytes_in_use > bytes0 + (1u << 20) &&
		       bench_now_ns() < limit)
			usleep(500);
		ctl->t_clear = bench_now_ns();
	}
	shmsync_detach(w);
	return 0;
}

struct tp_result {
	double rate, root_busy, workers_cpu;
	double root_sleeps, worker_sleeps; /* voluntary context switches per second */
	double root_preempted;             /* share of the time the root was runnable but not running */
	double bytes_in_use;               /* at the end of the run */
	double sustained;                  /* updates/s counting until what they retired was freed */
	double workers_preempted;          /* the same as root_preempted, summed over the workers */
};

/* nw workers, all on the worker CPU, for dur_ns each. */
static struct tp_result tp_run(pid_t root, int nw, size_t batch, uint64_t dur_ns)
{
	struct tp_arg ta[MAX_WORKERS];
	pid_t pid[MAX_WORKERS];
	atomic_store(&ctl->ready, 0);
	atomic_store(&ctl->go, 0);
	atomic_store(&ctl->finished, 0);
	ctl->root_pid = root;
	for (int i = 0; i < nw; i++) {
		ta[i] = (struct tp_arg){i, (uint32_t)nw, batch, dur_ns};
		ctl->puts[i] = 0;
		pid[i] = bench_spawn(worker_cpu, tp_worker, &ta[i]);
	}
	while (atomic_load(&ctl->ready) < (uint32_t)nw)
		usleep(1000);
	usleep(10000); /* let them reach their futex wait */
	struct proc_cpu r0 = proc_cpu(root);
	uint64_t t_go = bench_now_ns();
	atomic_store(&ctl->t_go, t_go);
	atomic_store(&ctl->go, 1);
	futex_wake_all(&ctl->go);
	for (int i = 0; i < nw; i++)
		reap_child(pid[i], "throughput worker");
	uint64_t total = 0, t_end = t_go, wcpu = 0, wsleeps = 0, wwait = 0;
	struct proc_cpu_end r1 = {0, 0, 0, 0};
	for (int i = 0; i < nw; i++) {
		total += ctl->puts[i];
		wcpu += ctl->cpu_ns[i];
		wsleeps += ctl->sleeps[i];
		wwait += ctl->waited[i];
		if (ctl->t_end[i] > t_end) {
			t_end = ctl->t_end[i];
			r1 = ctl->root_end[i];
		}
	}
	double secs = (double)(t_end - t_go) / 1e9;
	struct tp_result res = {
		.rate = (double)total / secs,
		.root_busy = (double)(r1.ns - r0.ns) / 1e9 / secs,
		.workers_cpu = (double)wcpu / 1e9 / secs,
		.root_sleeps = (double)(r1.vcsw - r0.vcsw) / secs,
		.worker_sleeps = (double)wsleeps / secs,
		.root_preempted = (double)(r1.wait_ns - r0.wait_ns) / 1e9 / secs,
		.bytes_in_use = (double)r1.bytes_in_use,
		.sustained = (double)total / ((double)(ctl->t_clear - t_go) / 1e9),
		.workers_preempted = (double)wwait / 1e9 / secs,
	};
	return res;
}

/* The root's ceiling: the same puts (batches of 64 into NKEYS keys, one
 * tick per batch, reclaim after each, as the root does after a commit)
 * applied by the shm layer in one process pinned to the root's CPU. */
static int inproc_main(void *arg)
{
	const uint64_t dur_ns = *(const uint64_t *)arg;
	struct shm_root_opts so = {.capacity = (size_t)512 << 20};
	struct shm_err err = {{0}};
	struct shm_root *root;
	int rc = shm_root_create(&root, &so, &err);
	if (rc < 0) {
		fprintf(stderr, "bench_sync: shm_root_create: %s\n", err.msg);
		return 1;
	}
	static uint8_t keys[NKEYS][KEY_LEN];
	uint8_t vals[64][VAL_LEN];
	for (uint64_t i = 0; i < NKEYS; i++)
		make_key(keys[i], i);
	struct shm_op ops[64];
	struct shm_reclaim_report rep;
	size_t failed;
	uint64_t tick, seed = 42, puts = 0;
	struct shm_op mk = {.kind = SHM_OP_MKDIR, .dir = DIR_NAME, .dir_len = sizeof DIR_NAME - 1};
	shm_commit_begin(root);
	if (shm_apply_batch(root, &mk, 1, &failed) < 0 || shm_commit_publish(root, &tick) != 1)
		return 1;
	uint64_t t0 = bench_now_ns(), end = t0 + dur_ns;
	do {
		for (size_t j = 0; j < 64; j++) {
			uint64_t n = puts + j;
			for (int k = 0; k < VAL_LEN; k += 8)
				memcpy(vals[j] + k, &n, 8);
			ops[j] = (struct shm_op){.kind = SHM_OP_PUT,
						 .dir = DIR_NAME,
						 .dir_len = sizeof DIR_NAME - 1,
						 .key = keys[bench_rand_below(&seed, NKEYS)],
						 .key_len = KEY_LEN,
						 .value = vals[j],
						 .value_len = VAL_LEN};
		}
		shm_commit_begin(root);
		if ((rc = shm_apply_batch(root, ops, 64, &failed)) < 0)
			return 1;
		if (shm_commit_publish(root, &tick) != 1)
			return 1;
		if (shm_reclaim(root, tick, tick, 0, &rep) < 0)
			return 1;
		puts += 64;
	} while (bench_now_ns() < end);
	ctl->puts[0] = puts;
	ctl->t_end[0] = bench_now_ns() - t0;
	shm_root_destroy(root);
	return 0;
}

static double inproc_rate(uint64_t dur_ns)
{
	uint64_t d = dur_ns;
	pid_t p = bench_spawn(root_cpu, inproc_main, &d);
	reap_child(p, "in-process baseline");
	return (double)ctl->puts[0] / ((double)ctl->t_end[0] / 1e9);
}

/* ---- idle ---------------------------------------------------------------- */

static int idle_worker(void *arg)
{
	(void)arg;
	shmsync_worker *w = attach();
	/* Some history first: commits, imports, retired versions. */
	for (uint64_t i = 0; i < 100; i++) {
		uint64_t seq, tick;
		export_one(w, i, &seq);
		int rc = shmsync_wait_committed(w, seq, &tick, -1);
		if (rc < 0)
			worker_die("wait_committed", rc);
	}
	int rc;
	while ((rc = shmsync_import_next(w, 0, NULL, NULL)) >= 0)
		;
	atomic_fetch_add(&ctl->ready, 1);
	/* Asleep until the root goes away (it wakes us with the other
	 * worker's last commits first). */
	while ((rc = shmsync_import_next(w, -1, NULL, NULL)) >= 0)
		;
	shmsync_detach(w);
	return rc == -ESHUTDOWN ? 0 : 1;
}

/* ---- the program --------------------------------------------------------- */

enum { S_RTT = 1, S_COMMIT = 2, S_XPROP = 4, S_TPUT = 8, S_IDLE = 16 };

static const struct {
	const char *name;
	int bit;
} SECTIONS[] = {{"rtt", S_RTT}, {"commit", S_COMMIT}, {"xprop", S_XPROP}, {"tput", S_TPUT}, {"idle", S_IDLE}};

static json_t *pair_json(const double *p50, const double *p99, int reps)
{
	json_t *o = json_object();
	json_object_set_new(o, "p50_ns_median", json_real(bench_median_copy(p50, (size_t)reps)));
	json_object_set_new(o, "p99_ns_median", json_real(bench_median_copy(p99, (size_t)reps)));
	json_object_set_new(o, "p50_ns_repeats", bench_json_array(p50, (size_t)reps));
	json_object_set_new(o, "p99_ns_repeats", bench_json_array(p99, (size_t)reps));
	return o;
}

static void section_rtt(const struct bench_opts *o, int which, json_t *doc)
{
	const size_t n = o->quick ? 2000 : 50000;
	const int reps = o->repeats;
	const bool rtt = which == S_RTT;
	double fl50[MAX_REPEATS], fl99[MAX_REPEATS], a50[MAX_REPEATS], a99[MAX_REPEATS], b50[MAX_REPEATS],
		b99[MAX_REPEATS], ra[MAX_REPEATS], rb[MAX_REPEATS];
	pid_t root = start_root();
	for (int r = 0; r < reps; r++) {
		cacheline_floor(n);
		struct pcts f = pcts(ctl->a, n);
		fl50[r] = f.p50;
		fl99[r] = f.p99;
		struct lat_arg la = {n, n / 10 + 100, rtt ? RTT_POLL | RTT_WAITC : COMMIT};
		reap_child(bench_spawn(worker_cpu, lat_worker, &la), "latency worker");
		struct pcts pa = pcts(rtt ? ctl->a : ctl->c, n);
		a50[r] = pa.p50;
		a99[r] = pa.p99;
		ra[r] = pa.p50 / f.p50;
		if (rtt) {
			struct pcts pb = pcts(ctl->b, n);
			b50[r] = pb.p50;
			b99[r] = pb.p99;
			rb[r] = pb.p50 / f.p50;
		}
	}
	stop_root(root);

	double ratio = bench_median_copy(ra, (size_t)reps);
	json_t *sec = json_object();
	json_object_set_new(sec, "samples_per_repeat", json_integer((json_int_t)n));
	json_object_set_new(sec, "floor_cacheline_round_trip", pair_json(fl50, fl99, reps));
	json_object_set_new(sec, rtt ? "own_round_trip_poll" : "commit_round_trip",
			    pair_json(a50, a99, reps));
	json_object_set_new(sec, "ratio_p50_to_floor_median", json_real(ratio));
	json_object_set_new(sec, "ratio_p50_to_floor_repeats", bench_json_array(ra, (size_t)reps));
	const char *verdict = "no target";
	if (rtt) {
		json_object_set_new(sec, "own_round_trip_wait_committed", pair_json(b50, b99, reps));
		json_object_set_new(sec, "wait_committed_ratio_p50_to_floor_median",
				    json_real(bench_median_copy(rb, (size_t)reps)));
		verdict = o->quick ? "not evaluated" : bench_met(ratio <= 3.0);
		json_object_set_new(sec, "target",
				    json_string("own round trip p50 <= 3x cache-line round trip"));
		json_object_set_new(sec, "verdict", json_string(verdict));
	}
	json_object_set_new(doc, rtt ? "rtt" : "commit", sec);
	if (o->json)
		return;
	printf("\n%s (worker on CPU %d spinning, root on CPU %d; %zu samples x %d repeats; us)\n",
	       rtt ? "Own round trip" : "Batch-1 commit round trip", worker_cpu, root_cpu, n, reps);
	printf("  %-44s %9s %9s %9s\n", "", "p50", "p99", "p50/floor");
	printf("  %-44s %9.3f %9.3f %9s\n", "floor: cache-line round trip (busy poll)",
	       bench_median_copy(fl50, (size_t)reps) / 1e3, bench_median_copy(fl99, (size_t)reps) / 1e3,
	       "1.00x");
	printf("  %-44s %9.3f %9.3f %8.2fx %s\n",
	       rtt ? "export + import_next(0) until seen" : "export + wait_committed",
	       bench_median_copy(a50, (size_t)reps) / 1e3, bench_median_copy(a99, (size_t)reps) / 1e3, ratio,
	       rtt ? "" : "");
	if (rtt) {
		printf("  %-44s %9.3f %9.3f %8.2fx\n", "export + wait_committed + import_until",
		       bench_median_copy(b50, (size_t)reps) / 1e3, bench_median_copy(b99, (size_t)reps) / 1e3,
		       bench_median_copy(rb, (size_t)reps));
		printf("  target: own round trip p50 <= 3x floor: %s\n", verdict);
	}
}

static void section_xprop(const struct bench_opts *o, json_t *doc)
{
	const size_t n = o->quick ? 150 : 2000;
	const uint64_t gap = 300000;
	const int reps = o->repeats;
	double rt50[MAX_REPEATS], rt99[MAX_REPEATS], ow50[MAX_REPEATS], ow99[MAX_REPEATS], x50[MAX_REPEATS],
		x99[MAX_REPEATS], e50[MAX_REPEATS], e99[MAX_REPEATS], ratio[MAX_REPEATS];
	pid_t root = start_root();
	for (int r = 0; r < reps; r++) {
		futex_floor(n, gap);
		struct pcts f = pcts(ctl->a, n), f1 = pcts(ctl->b, n);
		rt50[r] = f.p50;
		rt99[r] = f.p99;
		ow50[r] = f1.p50;
		ow99[r] = f1.p99;
		struct xp_arg xa = {n, n / 10 + 10, gap};
		atomic_store(&ctl->ready, 0);
		atomic_store(&ctl->done, 0);
		pid_t b = bench_spawn(worker_cpu, xp_b, &xa);
		pid_t a = bench_spawn(worker_cpu, xp_a, &xa);
		reap_child(a, "worker A");
		reap_child(b, "worker B");
		struct pcts px = pcts(ctl->a, n), pe = pcts(ctl->b, n);
		x50[r] = px.p50;
		x99[r] = px.p99;
		e50[r] = pe.p50;
		e99[r] = pe.p99;
		ratio[r] = px.p50 / f.p50;
	}
	stop_root(root);
	double rm = bench_median_copy(ratio, (size_t)reps);
	const char *verdict = o->quick ? "not evaluated" : bench_met(rm <= 1.3);
	json_t *sec = json_object();
	json_object_set_new(sec, "samples_per_repeat", json_integer((json_int_t)n));
	json_object_set_new(sec, "gap_ns", json_integer((json_int_t)gap));
	json_object_set_new(sec, "floor_futex_round_trip", pair_json(rt50, rt99, reps));
	json_object_set_new(sec, "floor_futex_one_way", pair_json(ow50, ow99, reps));
	json_object_set_new(sec, "propagation", pair_json(x50, x99, reps));
	json_object_set_new(sec, "export_call_worker_a", pair_json(e50, e99, reps));
	json_object_set_new(sec, "ratio_p50_to_floor_median", json_real(rm));
	json_object_set_new(sec, "ratio_p50_to_floor_repeats", bench_json_array(ratio, (size_t)reps));
	json_object_set_new(sec, "target", json_string("propagation p50 <= 1.3x futex round trip"));
	json_object_set_new(sec, "verdict", json_string(verdict));
	json_object_set_new(doc, "xprop", sec);
	if (o->json)
		return;
	printf("\nCross-worker propagation, all asleep (A and B on CPU %d, root on CPU %d; %zu samples x %d "
	       "repeats, %.0f us apart; us)\n",
	       worker_cpu, root_cpu, n, reps, (double)gap / 1e3);
	printf("  %-44s %9s %9s %9s\n", "", "p50", "p99", "p50/floor");
	printf("  %-44s %9.2f %9.2f %9s\n", "floor: futex round trip (2 sleep/wakes)",
	       bench_median_copy(rt50, (size_t)reps) / 1e3, bench_median_copy(rt99, (size_t)reps) / 1e3,
	       "1.00x");
	printf("  %-44s %9.2f %9.2f\n", "floor: futex one way (1 sleep/wake)",
	       bench_median_copy(ow50, (size_t)reps) / 1e3, bench_median_copy(ow99, (size_t)reps) / 1e3);
	printf("  %-44s %9.2f %9.2f %8.2fx\n", "A export -> root -> B import_next(-1)",
	       bench_median_copy(x50, (size_t)reps) / 1e3, bench_median_copy(x99, (size_t)reps) / 1e3, rm);
	printf("  %-44s %9.2f %9.2f\n", "  of which A's export call",
	       bench_median_copy(e50, (size_t)reps) / 1e3, bench_median_copy(e99, (size_t)reps) / 1e3);
	printf("  target: propagation p50 <= 1.3x futex round trip: %s\n", verdict);
}

static void section_tput(const struct bench_opts *o, json_t *doc)
{
	const uint64_t dur = o->quick ? 100000000u : 1500000000u;
	const int reps = o->repeats;
	const int nws[4] = {1, 1, 2, 2};
	const size_t batches[4] = {1, 64, 1, 64};
	double rate[4][MAX_REPEATS], busy[4][MAX_REPEATS], wcpu[4][MAX_REPEATS], base[MAX_REPEATS],
		ratio[4][MAX_REPEATS], rsl[4][MAX_REPEATS], wsl[4][MAX_REPEATS], pre[4][MAX_REPEATS],
		per_cpu[4][MAX_REPEATS], biu[4][MAX_REPEATS], sus[4][MAX_REPEATS], wpre[4][MAX_REPEATS];
	pid_t root = start_root();
	/* Warm-up: the keys exist and the root's structures are grown. */
	tp_run(root, 1, 64, dur / 10);
	for (int r = 0; r < reps; r++) {
		base[r] = inproc_rate(dur / 2);
		for (int c = 0; c < 4; c++) {
			struct tp_result tr = tp_run(root, nws[c], batches[c], dur);
			rate[c][r] = tr.rate;
			busy[c][r] = tr.root_busy;
			wcpu[c][r] = tr.workers_cpu;
			rsl[c][r] = tr.root_sleeps;
			wsl[c][r] = tr.worker_sleeps;
			pre[c][r] = tr.root_preempted;
			biu[c][r] = tr.bytes_in_use;
			sus[c][r] = tr.sustained;
			wpre[c][r] = tr.workers_preempted;
			per_cpu[c][r] = tr.root_busy > 0 ? tr.rate / tr.root_busy : 0;
			ratio[c][r] = tr.rate / base[r];
		}
	}
	stop_root(root);
	json_t *sec = json_object();
	json_object_set_new(sec, "seconds_per_measurement", json_real((double)dur / 1e9));
	json_object_set_new(sec, "keys", json_integer(NKEYS));
	json_object_set_new(sec, "key_len", json_integer(KEY_LEN));
	json_object_set_new(sec, "value_len", json_integer(VAL_LEN));
	json_object_set_new(sec, "inproc_batch64_puts_per_s_median",
			    json_real(bench_median_copy(base, (size_t)reps)));
	json_object_set_new(sec, "inproc_batch64_puts_per_s_repeats", bench_json_array(base, (size_t)reps));
	json_t *rows = json_array();
	if (!o->json) {
		printf("\nAggregate updates/s (workers on CPU %d, root on CPU %d; %.2f s each, %d repeats)\n",
		       worker_cpu, root_cpu, (double)dur / 1e9, reps);
		printf("  %-26s %10s %10s %9s %8s %9s %9s %8s %8s %9s %8s\n", "", "updates/s", "sustained",
		       "vs inproc", "backlog", "root busy", "root prmt", "wrk CPU", "wrk prmt", "root sl/s",
		       "wrk sl/s");
		printf("  %-26s %10.0f %10s %9s\n", "in-process apply, batch 64",
		       bench_median_copy(base, (size_t)reps), "", "1.00x");
	}
	for (int c = 0; c < 4; c++) {
		double rm = bench_median_copy(rate[c], (size_t)reps);
		json_t *row = json_object();
		json_object_set_new(row, "workers", json_integer(nws[c]));
		json_object_set_new(row, "batch", json_integer((json_int_t)batches[c]));
		json_object_set_new(row, "updates_per_s_median", json_real(rm));
		json_object_set_new(row, "updates_per_s_repeats", bench_json_array(rate[c], (size_t)reps));
		json_object_set_new(row, "ratio_to_inproc_median",
				    json_real(bench_median_copy(ratio[c], (size_t)reps)));
		json_object_set_new(row, "root_cpu_busy_median",
				    json_real(bench_median_copy(busy[c], (size_t)reps)));
		json_object_set_new(row, "workers_cpu_median",
				    json_real(bench_median_copy(wcpu[c], (size_t)reps)));
		json_object_set_new(row, "updates_per_root_cpu_s_median",
				    json_real(bench_median_copy(per_cpu[c], (size_t)reps)));
		json_object_set_new(row, "root_preempted_median",
				    json_real(bench_median_copy(pre[c], (size_t)reps)));
		json_object_set_new(row, "workers_preempted_median",
				    json_real(bench_median_copy(wpre[c], (size_t)reps)));
		json_object_set_new(row, "root_sleeps_per_s_median",
				    json_real(bench_median_copy(rsl[c], (size_t)reps)));
		json_object_set_new(row, "worker_sleeps_per_s_median",
				    json_real(bench_median_copy(wsl[c], (size_t)reps)));
		json_object_set_new(row, "bytes_in_use_at_end_repeats",
				    bench_json_array(biu[c], (size_t)reps));
		double sm = bench_median_copy(sus[c], (size_t)reps);
		json_object_set_new(row, "sustained_updates_per_s_median", json_real(sm));
		json_object_set_new(row, "sustained_updates_per_s_repeats",
				    bench_json_array(sus[c], (size_t)reps));
		const char *verdict = "";
		if (nws[c] == 2 && batches[c] == 64) {
			/* Judged on both: what the root committed during the run,
			 * and the rate counting until it had freed what the run
			 * retired. */
			verdict = o->quick ? "not evaluated" : bench_met(rm >= 3e6 && sm >= 3e6);
			json_object_set_new(row, "target", json_string(">= 3 M updates/s"));
			json_object_set_new(row, "verdict", json_string(verdict));
		}
		json_array_append_new(rows, row);
		if (!o->json) {
			char label[64];
			snprintf(label, sizeof label, "%d worker%s, batch %zu", nws[c], nws[c] > 1 ? "s" : "",
				 batches[c]);
			printf("  %-26s %10.0f %10.0f %8.2fx %4.0f MiB %8.0f%% %8.0f%% %7.0f%% %7.0f%% %9.0f "
			       "%8.0f "
			       "%s\n",
			       label, rm, sm, bench_median_copy(ratio[c], (size_t)reps),
			       bench_median_copy(biu[c], (size_t)reps) / 1048576.0,
			       100 * bench_median_copy(busy[c], (size_t)reps),
			       100 * bench_median_copy(pre[c], (size_t)reps),
			       100 * bench_median_copy(wcpu[c], (size_t)reps),
			       100 * bench_median_copy(wpre[c], (size_t)reps),
			       bench_median_copy(rsl[c], (size_t)reps),
			       bench_median_copy(wsl[c], (size_t)reps),
			       *verdict ? (strcmp(verdict, "not evaluated") ? verdict
									    : "(target not evaluated)")
					: "");
		}
	}
	json_object_set_new(sec, "rows", rows);
	json_object_set_new(sec, "bytes_in_use_before_last_run", json_integer((json_int_t)ctl->bytes_before));
	json_object_set_new(doc, "tput", sec);
	if (!o->json)
		printf("  updates/s: committed during the run; sustained: counting until the root had freed\n"
		       "  the versions the run superseded; backlog: segment bytes in use when the run ended\n"
		       "  (%.0f MiB before it); root/wrk prmt: time the root (the workers, summed) was\n"
		       "  runnable but another process had its CPU; sl/s: voluntary context switches "
		       "(sleeps) per second\n"
		       "  target: >= 3 M updates/s, 2 workers, batches of 64 (both columns)\n",
		       (double)ctl->bytes_before / 1048576.0);
}

static void section_idle(const struct bench_opts *o, json_t *doc)
{
	const uint64_t window = o->quick ? 500000000u : 5000000000u;
	const int reps = o->repeats;
	double pct[3][MAX_REPEATS], total[MAX_REPEATS], wakes[3][MAX_REPEATS];
	pid_t root = start_root();
	atomic_store(&ctl->ready, 0);
	pid_t w[2];
	for (int i = 0; i < 2; i++)
		w[i] = bench_spawn(worker_cpu, idle_worker, NULL);
	while (atomic_load(&ctl->ready) < 2)
		usleep(1000);
	/* Settle: the root's 50 ms reclaim timer runs until nothing retired
	 * is left, and the workers' last imports finish. */
	usleep(300000);
	pid_t pids[3] = {root, w[0], w[1]};
	for (int r = 0; r < reps; r++) {
		struct proc_cpu before[3], after[3];
		for (int i = 0; i < 3; i++)
			before[i] = proc_cpu(pids[i]);
		uint64_t t0 = bench_now_ns();
		sleep_ns(window);
		for (int i = 0; i < 3; i++)
			after[i] = proc_cpu(pids[i]);
		double secs = (double)(bench_now_ns() - t0) / 1e9;
		total[r] = 0;
		for (int i = 0; i < 3; i++) {
			pct[i][r] = 100.0 * (double)(after[i].ns - before[i].ns) / 1e9 / secs;
			wakes[i][r] =
				(double)(after[i].vcsw + after[i].ivcsw - before[i].vcsw - before[i].ivcsw) /
				secs;
			total[r] += pct[i][r];
		}
	}
	stop_root(root);
	reap_child(w[0], "idle worker");
	reap_child(w[1], "idle worker");
	double tm = bench_median_copy(total, (size_t)reps);
	const char *verdict = o->quick ? "not evaluated" : bench_met(tm < 1.0);
	static const char *names[3] = {"root", "worker 1", "worker 2"};
	json_t *sec = json_object();
	json_object_set_new(sec, "window_s", json_real((double)window / 1e9));
	json_object_set_new(sec, "cpu_source", json_string("/proc/<pid>/schedstat (on-CPU ns)"));
	for (int i = 0; i < 3; i++) {
		json_t *p = json_object();
		json_object_set_new(p, "cpu_pct_median", json_real(bench_median_copy(pct[i], (size_t)reps)));
		json_object_set_new(p, "cpu_pct_repeats", bench_json_array(pct[i], (size_t)reps));
		json_object_set_new(p, "switches_per_s_median",
				    json_real(bench_median_copy(wakes[i], (size_t)reps)));
		json_object_set_new(sec, i == 0 ? "root" : i == 1 ? "worker1" : "worker2", p);
	}
	json_object_set_new(sec, "total_cpu_pct_median", json_real(tm));
	json_object_set_new(sec, "total_cpu_pct_repeats", bench_json_array(total, (size_t)reps));
	json_object_set_new(sec, "target", json_string("root + 2 workers < 1% of one CPU"));
	json_object_set_new(sec, "verdict", json_string(verdict));
	json_object_set_new(doc, "idle", sec);
	if (o->json)
		return;
	printf("\nIdle: root (CPU %d) and 2 workers (CPU %d) asleep in import_next(-1); %d windows of %.1f "
	       "s\n",
	       root_cpu, worker_cpu, reps, (double)window / 1e9);
	printf("  %-10s %12s %14s\n", "", "% of a CPU", "switches/s");
	for (int i = 0; i < 3; i++)
		printf("  %-10s %12.4f %14.1f\n", names[i], bench_median_copy(pct[i], (size_t)reps),
		       bench_median_copy(wakes[i], (size_t)reps));
	printf("  %-10s %12.4f\n", "total", tm);
	printf("  target: < 1%% of one CPU: %s\n", verdict);
}

int main(int argc, char **argv)
{
	/* --only NAME is ours; the rest goes to bench_parse. */
	int only = 0, nargs = 1;
	char **args = calloc((size_t)argc + 1, sizeof *args);
	if (!args)
		bench_die("calloc", -ENOMEM);
	args[0] = argv[0];
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--only") && i + 1 < argc) {
			int bit = 0;
			for (size_t s = 0; s < sizeof SECTIONS / sizeof SECTIONS[0]; s++)
				if (!strcmp(argv[i + 1], SECTIONS[s].name))
					bit = SECTIONS[s].bit;
			if (!bit) {
				fprintf(stderr, "bench_sync: --only: rtt, commit, xprop, tput or idle\n");
				return 2;
			}
			only |= bit;
			i++;
		} else {
			args[nargs++] = argv[i];
		}
	}
	struct bench_opts o;
	bench_parse(nargs, args, &o,
		    "Cross-process figures: own round trip, commit round trip, cross-worker propagation,\n"
		    "aggregate updates/s, idle CPU. The root runs on CPU N+1, workers on CPU N (--cpu N).\n"
		    "  --only S   run section S only (rtt, commit, xprop, tput, idle); repeatable\n"
		    "SHMSYNC_SIGNAL=futex selects the fallback signal path.");
	free(args);
	if (!only)
		only = S_RTT | S_COMMIT | S_XPROP | S_TPUT | S_IDLE;
	if (o.repeats > MAX_REPEATS)
		o.repeats = MAX_REPEATS;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	worker_cpu = o.cpu;
	root_cpu = ncpu > 1 ? (int)((o.cpu + 1) % ncpu) : o.cpu;
	snprintf(sock_path, sizeof sock_path, "/tmp/shmsync-bench-%d.sock", (int)getpid());
	ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ctl == MAP_FAILED)
		bench_die("mmap", -errno);

	json_t *doc = bench_json_new("bench_sync", &o);
	json_object_set_new(doc, "root_cpu", json_integer(root_cpu));
	json_object_set_new(doc, "worker_cpu", json_integer(worker_cpu));
	const char *env = getenv("SHMSYNC_SIGNAL");
	json_object_set_new(doc, "SHMSYNC_SIGNAL", env ? json_string(env) : json_null());
	time_t now = time(NULL);
	char when[64];
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	json_object_set_new(doc, "started_utc", json_string(when));
	if (!o.json)
		printf("bench_sync: root on CPU %d, workers on CPU %d (sched_setaffinity), %d repeats, "
		       "medians "
		       "over repeats%s\n",
		       root_cpu, worker_cpu, o.repeats,
		       o.quick ? " (QUICK: small sizes, targets not evaluated)" : "");

	if (only & S_RTT)
		section_rtt(&o, S_RTT, doc);
	if (only & S_COMMIT)
		section_rtt(&o, S_COMMIT, doc);
	if (only & S_XPROP)
		section_xprop(&o, doc);
	if (only & S_TPUT)
		section_tput(&o, doc);
	if (only & S_IDLE)
		section_idle(&o, doc);

	json_object_set_new(doc, "signal", json_string(ctl->signal));
	json_object_set_new(doc, "root_signal", json_string(ctl->root_signal));
	if (!o.json)
		printf("\nsignal path: workers %s, root %s\n\n", ctl->signal, ctl->root_signal);
	bench_json_print(doc);
	json_decref(doc);
	return 0;
}
