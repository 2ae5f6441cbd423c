/* Replication through NATS JetStream, measured on one host: a three-node
 * loopback cluster (scripts/nats-cluster.sh, every server stopped by its
 * pid), the stream at R3, every root a `shmsync serve` process.
 *
 * Sections (all by default; --only NAME, repeatable):
 *   lag       a writer on the leader commits batches of 4 puts (64-byte
 *             values), one batch in flight, at 500/s, 2000/s and back to
 *             back; a reader attached to a follower root, asleep in
 *             import_next, notes when each tick becomes visible there. Lag =
 *             visible on the follower - the writer's wait_committed returned
 *             on the leader: both CLOCK_MONOTONIC of this host, handed over
 *             in a shared mapping. Also from the export ("e2e"): where the
 *             leader writes the ack relative to its publish moves time
 *             between the commit and the lag, not their sum. The leader's
 *             own view (stat's repl_lag_ticks/_bytes: committed here, not
 *             yet stored by JetStream) is sampled every 10 ms meanwhile.
 *   commit    2 writers on the leader, 32 batches in flight each (export
 *             until 32 are out, then wait for the oldest): batches/s and the
 *             export-to-ack p50, for a plain root (the baseline), a leader
 *             with local acks and a --durable one. The three alternate in
 *             every repeat (the order rotates), and each repeat's ratio is
 *             taken against that repeat's baseline: the host's noise moves
 *             all three together, so the ratio says more than batches/s.
 *   recovery  --keys keys (9-byte keys, 64-byte values, one directory)
 *             loaded through a leader in batches of 1000 puts, pipelined;
 *             then small commits until the stream's snapshot index names a
 *             snapshot that covers the whole load (the root says nothing
 *             when one completes, so the bench reads NAME.snapidx). Each
 *             repeat: a fresh follower's initial sync (fork+exec until an
 *             attach answers and its tick is the leader's), then the leader
 *             stopped and restarted (fork+exec until an attach answers), with
 *             the root's own "recovered ... in X ms".
 *
 * Every run also says where the CPU went (/proc/<pid>/stat of the roots,
 * the NATS servers and the workers over the measured window): with 2 CPUs
 * and 3 Go servers on one host, most figures here are set by who gets a CPU.
 *
 * Placement (sched_setaffinity; --pin): by default the workers (writers,
 * the reader) are pinned to CPU 0, as in bench_sync, and the roots, the
 * NATS servers and the bench float. A root is not pinned because its libnats
 * threads (socket reader, flusher, ack handler) inherit the mask: with
 * --pin all (roots on CPU 1) they queue behind the root's own loop, and the
 * leader's commit p50 at 500 batches/s went from about 70 us to 200-275 us
 * in interleaved runs, while the lag looked better only because the ack
 * came later. The JSON says which placement ran.
 *
 * The bench process forks its writers and readers before it opens its own
 * NATS connection (the recovery section, last): libnats starts threads, and
 * a child forked from a threaded process may find a lock held by one.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "bench_util.h"
#include "shmsync.h"

#if !SHMSYNC_HAVE_NATS
int main(void)
{
	fprintf(stderr, "SKIP: built without libnats: this shmsync has no replication\n");
	return 77;
}
#else
#include <nats/nats.h>

#include "repl.h"

#define MAX_REC (1u << 20) /* records per array in the shared mapping */
#define MAX_WRITERS 2
#define WINDOW 32
#define PUTS_PER_BATCH 4
#define VAL_LEN 64
#define KEY_LEN 9
#define LAG_KEYS 4096
#define TP_KEYS 4096
#define LOAD_BATCH 1000
#define LOAD_WINDOW 16
#define MAX_STAT_SAMPLES 100000
#define MAX_TRACKED 64
#define NMODES 3

static const char *const MODE_NAME[NMODES] = {"none", "replicate", "durable"};

/* Everything the bench's children fill in: one MAP_SHARED anonymous
 * mapping made before any fork. */
struct shared {
	_Atomic uint32_t ready, go, writer_done;
	_Atomic uint64_t t_go, t_meas, t_end;
	_Atomic uint64_t last_tick; /* the lag writer's last committed tick */
	_Atomic uint64_t nrec, nobs;
	_Atomic uint64_t count[MAX_WRITERS], nlat[MAX_WRITERS];
	uint64_t tick_first[MAX_WRITERS], tick_last[MAX_WRITERS];     /* acked in the measured window */
	uint64_t rec_tick[MAX_REC], rec_t[MAX_REC], rec_lat[MAX_REC]; /* lag writer */
	uint64_t obs_tick[MAX_REC], obs_t[MAX_REC];                   /* lag reader */
	uint64_t lat[MAX_WRITERS][MAX_REC];                           /* throughput writers */
};

static struct shared *sh;

static void stream_drop(const char *stream);

/* Percent of one CPU each party used over the measured window. */
enum { P_LEADER, P_FOLLOWER, P_NATS, P_WORKERS, P_HOST, NPARTIES };
struct cpu_use {
	double pct[NPARTIES];
};

/* ---- options ------------------------------------------------------------- */

enum { PIN_NONE, PIN_WORKERS, PIN_ALL };
static const char *const PIN_NAME[] = {"none", "workers", "all"};

struct opts {
	struct bench_opts b;
	uint64_t keys;
	const char *out;
	int base_port;
	int pin; /* PIN_* */
	bool keep;
	unsigned only; /* sections: 1 lag, 2 commit, 4 recovery; 0: all */
};

static struct opts o;

static void usage(const char *argv0, FILE *f)
{
	fprintf(f,
		"usage: %s [--json] [--quick] [--repeats N] [--keys N] [--out FILE] [--port BASE]\n"
		"          [--pin all|workers|none] [--keep] [--only lag|commit|recovery]...\n"
		"Replication lag, commit throughput and recovery of shmsync roots replicating\n"
		"through a three-node loopback NATS JetStream cluster (stream at R3).\n"
		"  --json     print only the JSON document\n"
		"  --quick    smoke run: tiny sizes, 1 repeat (ctest bench_repl_smoke)\n"
		"  --repeats  repeats of the commit and recovery sections (default 3)\n"
		"  --keys N   keys of the recovery state (default 1000000; --quick: 20000)\n"
		"  --out FILE also write the JSON document to FILE\n"
		"  --port B   the cluster's base port (default 22222; --quick: 21222)\n"
		"  --pin P    workers (default): the workers on CPU 0, roots free; all: roots\n"
		"             on CPU 1 too; none: nothing pinned\n"
		"  --keep     keep the temporary directory (logs, JetStream store)\n"
		"  --only S   run section S only (repeatable)\n"
		"Environment: SHMSYNC_TOOL (the shmsync binary), NATS_CLUSTER (the cluster\n"
		"script); both default to this build's. Exits 77 without nats-server.\n",
		argv0);
}

static void parse(int argc, char **argv)
{
	o = (struct opts){.b = {.cpu = 0}, .pin = PIN_WORKERS};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool more = i + 1 < argc;
		if (!strcmp(a, "--json"))
			o.b.json = true;
		else if (!strcmp(a, "--quick"))
			o.b.quick = true;
		else if (!strcmp(a, "--repeats") && more)
			o.b.repeats = atoi(argv[++i]);
		else if (!strcmp(a, "--keys") && more)
			o.keys = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(a, "--out") && more)
			o.out = argv[++i];
		else if (!strcmp(a, "--port") && more)
			o.base_port = atoi(argv[++i]);
		else if (!strcmp(a, "--pin") && more && !strcmp(argv[i + 1], "all"))
			o.pin = PIN_ALL, i++;
		else if (!strcmp(a, "--pin") && more && !strcmp(argv[i + 1], "workers"))
			o.pin = PIN_WORKERS, i++;
		else if (!strcmp(a, "--pin") && more && !strcmp(argv[i + 1], "none"))
			o.pin = PIN_NONE, i++;
		else if (!strcmp(a, "--keep"))
			o.keep = true;
		else if (!strcmp(a, "--only") && more && !strcmp(argv[i + 1], "lag"))
			o.only |= 1, i++;
		else if (!strcmp(a, "--only") && more && !strcmp(argv[i + 1], "commit"))
			o.only |= 2, i++;
		else if (!strcmp(a, "--only") && more && !strcmp(argv[i + 1], "recovery"))
			o.only |= 4, i++;
		else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(argv[0], stdout);
			exit(0);
		} else {
			usage(argv[0], stderr);
			exit(2);
		}
	}
	if (o.b.repeats < 1)
		o.b.repeats = o.b.quick ? 1 : 3;
	if (o.b.repeats > 16)
		o.b.repeats = 16;
	if (!o.keys)
		o.keys = o.b.quick ? 20000 : 1000000;
	if (!o.only)
		o.only = 7;
	if (!o.base_port)
		o.base_port = o.b.quick ? 21222 : 22222;
}

/* ---- processes and cleanup ------------------------------------------------ */

static pid_t main_pid;
static char tmpdir[128], cluster_dir[192], urls[256];
static const char *tool, *cluster_script;
static volatile sig_atomic_t cleaned;
static volatile sig_atomic_t cluster_up;
static pid_t tracked[MAX_TRACKED];

static void track(pid_t p)
{
	for (int i = 0; i < MAX_TRACKED; i++)
		if (!tracked[i]) {
			tracked[i] = p;
			return;
		}
	kill(p, SIGKILL); /* cannot be stopped at the end: better not at all */
	bench_die("track", -EMFILE);
}

static void untrack(pid_t p)
{
	for (int i = 0; i < MAX_TRACKED; i++)
		if (tracked[i] == p)
			tracked[i] = 0;
}

static void nap_ns(uint64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* fork + execv + waitpid only: cleanup() runs from signal handlers too. */
static int run_argv(const char *const argv[])
{
	pid_t p = fork();
	if (p == 0) {
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	int st = 0;
	if (p < 0 || waitpid(p, &st, 0) != p)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Stops what this bench started, by pid: roots and children get SIGTERM
 * (a root then closes its socket and hands its lease back), SIGKILL after
 * 10 s; then the cluster (its script signals the pids it recorded), then
 * the temporary directory. Once, and in the bench process only: a forked
 * child that exits runs the same atexit list. */
static void cleanup(void)
{
	if (getpid() != main_pid || cleaned)
		return;
	cleaned = 1;
	for (int i = 0; i < MAX_TRACKED; i++)
		if (tracked[i])
			kill(tracked[i], SIGTERM);
	uint64_t end = bench_now_ns() + 10000000000u;
	for (int i = 0; i < MAX_TRACKED; i++) {
		while (tracked[i]) {
			if (waitpid(tracked[i], NULL, WNOHANG) != 0) {
				tracked[i] = 0;
			} else if (bench_now_ns() > end) {
				kill(tracked[i], SIGKILL);
				waitpid(tracked[i], NULL, 0);
				tracked[i] = 0;
			} else {
				nap_ns(10000000);
			}
		}
	}
	if (cluster_up) {
		const char *argv[] = {"/bin/bash", cluster_script, "stop", cluster_dir, NULL};
		run_argv(argv);
		cluster_up = 0;
	}
	if (tmpdir[0] && !o.keep) {
		const char *argv[] = {"/bin/rm", "-rf", tmpdir, NULL};
		run_argv(argv);
	}
}

static void on_signal(int sig)
{
	cleanup();
	_exit(128 + sig);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("bench_repl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	if (tmpdir[0])
		fprintf(stderr, "bench_repl: logs in %s%s\n", tmpdir,
			o.keep ? "" : " (removed; --keep keeps them)");
	exit(1);
}

typedef int (*child_fn)(void *arg);

/* A forked worker process pinned to cpu (-1: not pinned), tracked. */
static pid_t spawn(int cpu, child_fn fn, void *arg)
{
	pid_t pid = bench_spawn(cpu, fn, arg);
	track(pid);
	return pid;
}

/* Its exit status, or -1 if it was still running after timeout_ns (then
 * killed). */
static int reap(pid_t pid, uint64_t timeout_ns)
{
	uint64_t end = bench_now_ns() + timeout_ns;
	for (;;) {
		int st;
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid) {
			untrack(pid);
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		if (r < 0) {
			untrack(pid);
			return -1;
		}
		if (bench_now_ns() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			untrack(pid);
			return -1;
		}
		nap_ns(1000000);
	}
}

/* ---- roots ------------------------------------------------------------------ */

struct root {
	const char *name; /* socket and log: DIR/<name>.sock, DIR/<name>.log */
	char sock[192], log[192];
	const char *args[24];
	pid_t pid;
	uint64_t t_exec; /* just before fork */
	long log_from;   /* the log's size then: this start's lines follow */
};

static void root_init(struct root *r, const char *name, const char *const *args)
{
	memset(r, 0, sizeof(*r));
	r->name = name;
	snprintf(r->sock, sizeof(r->sock), "%s/%s.sock", tmpdir, name);
	snprintf(r->log, sizeof(r->log), "%s/%s.log", tmpdir, name);
	for (int i = 0; args[i] && i < 23; i++)
		r->args[i] = args[i];
}

static int root_cpu(void)
{
	return o.pin == PIN_ALL ? 1 : -1;
}

static int worker_cpu(void)
{
	return o.pin != PIN_NONE ? 0 : -1;
}

static void root_exec(struct root *r)
{
	const char *argv[32] = {tool, "serve", "-q", "-s", r->sock};
	int n = 5;
	for (int i = 0; r->args[i] && n < 31; i++)
		argv[n++] = r->args[i];
	argv[n] = NULL;
	struct stat st;
	r->log_from = stat(r->log, &st) == 0 ? (long)st.st_size : 0;
	fflush(stdout);
	fflush(stderr);
	r->t_exec = bench_now_ns();
	pid_t pid = fork();
	if (pid < 0)
		bench_die("fork", -errno);
	if (pid == 0) {
		/* A root outliving a bench that was killed would hold its
		 * socket and its lease: SIGTERM lets it hand both back. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		int cpu = root_cpu();
		if (cpu >= 0) {
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET((size_t)cpu, &set);
			sched_setaffinity(0, sizeof set, &set);
		}
		int fd = open(r->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		int nul = open("/dev/null", O_RDWR);
		if (fd >= 0)
			dup2(fd, 2);
		if (nul >= 0) {
			dup2(nul, 0);
			dup2(nul, 1);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	r->pid = pid;
	track(pid);
}

/* Polls an attach every 1 ms (so the figure is at most that late) until the
 * root answers: the time it did, or 0 if the root exited or timeout_ns
 * passed. */
static uint64_t root_wait_answer(struct root *r, uint64_t timeout_ns)
{
	uint64_t end = bench_now_ns() + timeout_ns;
	while (bench_now_ns() < end) {
		int st;
		if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
			untrack(r->pid);
			r->pid = 0;
			return 0;
		}
		shmsync_worker *w;
		if (access(r->sock, F_OK) == 0 && shmsync_attach(&w, r->sock) == 0) {
			uint64_t t = bench_now_ns();
			shmsync_detach(w);
			return t;
		}
		nap_ns(1000000);
	}
	return 0;
}

static void root_start(struct root *r)
{
	root_exec(r);
	if (!root_wait_answer(r, 60000000000u))
		fail("root %s did not answer within 60 s (see %s)", r->name, r->log);
}

/* SIGTERM, and how long it took to exit (SIGKILL after 20 s). */
static double root_stop(struct root *r)
{
	if (r->pid <= 0)
		return 0;
	uint64_t t0 = bench_now_ns();
	kill(r->pid, SIGTERM);
	int st = reap(r->pid, 20000000000u);
	r->pid = 0;
	if (st < 0)
		fprintf(stderr, "bench_repl: root %s ignored SIGTERM for 20 s: killed\n", r->name);
	return (double)(bench_now_ns() - t0) / 1e6;
}

/* What the root said about its recovery in this start's lines: "recovered
 * tick T from stream NAME: the snapshot at tick S, then N ticks, in X ms"
 * (sync/root_repl.c). false when it said nothing (nothing to recover). */
struct recovered {
	uint64_t tick, snap_tick, ticks;
	double ms;
};

static bool root_recovered(const struct root *r, struct recovered *rec)
{
	FILE *f = fopen(r->log, "r");
	if (!f)
		return false;
	fseek(f, r->log_from, SEEK_SET);
	char line[1024];
	bool found = false;
	while (fgets(line, sizeof line, f)) {
		const char *p = strstr(line, "recovered tick ");
		if (!p)
			continue;
		struct recovered x = {0};
		x.tick = strtoull(p + 15, NULL, 10);
		const char *s = strstr(p, "the snapshot at tick ");
		if (s)
			x.snap_tick = strtoull(s + 21, NULL, 10);
		const char *t = strstr(p, ", then ");
		if (t)
			x.ticks = strtoull(t + 7, NULL, 10);
		const char *m = strstr(p, " ticks, in ");
		if (m)
			x.ms = strtod(m + 11, NULL);
		*rec = x;
		found = true;
	}
	fclose(f);
	return found;
}

/* ---- workers' helpers ------------------------------------------------------- */

static shmsync_worker *attach(const char *sock)
{
	shmsync_worker *w;
	char msg[256] = "";
	int rc = shmsync_attach_msg(&w, sock, msg, sizeof msg);
	if (rc < 0)
		fail("attach %s: %s (%s)", sock, shmsync_strerror(rc), msg);
	return w;
}

static uint64_t root_tick(const char *sock)
{
	shmsync_worker *w = attach(sock);
	shmsync_stats st;
	int rc = shmsync_stat(w, &st);
	shmsync_detach(w);
	if (rc < 0)
		fail("stat %s: %s", sock, shmsync_strerror(rc));
	return st.tick;
}

static void make_dir(const char *sock, const char *dir)
{
	shmsync_worker *w = attach(sock);
	shmsync_batch *b;
	uint64_t seq, tick;
	int rc = shmsync_begin(w, &b);
	if (rc == 0)
		rc = shmsync_mkdir(b, dir);
	if (rc == 0)
		rc = shmsync_export(b, 0, &seq);
	if (rc == 0)
		rc = shmsync_wait_committed(w, seq, &tick, 30000000000LL);
	shmsync_detach(w);
	if (rc < 0)
		fail("mkdir %s on %s: %s", dir, sock, shmsync_strerror(rc));
}

static void fill_value(uint8_t *v, uint64_t x)
{
	for (int j = 0; j < VAL_LEN; j += 8)
		memcpy(v + j, &x, 8);
}

static void wait_go(void)
{
	while (!atomic_load(&sh->go))
		nap_ns(200000);
}

static void sleep_until(uint64_t t)
{
	struct timespec ts = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* ---- lag ---------------------------------------------------------------------- */

struct lag_args {
	const char *sock;
	double rate; /* batches/s; 0: back to back */
	uint64_t duration_ns;
	uint64_t start_tick; /* the reader's: what the follower must show first */
};

static int lag_writer(void *arg)
{
	const struct lag_args *a = arg;
	shmsync_worker *w;
	if (shmsync_attach(&w, a->sock) < 0)
		return 2;
	shmsync_offline(w); /* it never reads: it must pin nothing */
	atomic_fetch_add(&sh->ready, 1);
	wait_go();
	uint64_t t0 = atomic_load(&sh->t_go), end = t0 + a->duration_ns, n = 0;
	uint8_t val[VAL_LEN];
	for (uint64_t i = 0; n < MAX_REC; i++) {
		if (a->rate > 0) {
			uint64_t due = t0 + (uint64_t)((double)i * 1e9 / a->rate);
			if (due >= end)
				break;
			/* Open loop: a batch that is late goes at once, so a slow
			 * commit does not lower the offered rate. */
			sleep_until(due);
		} else if (bench_now_ns() >= end) {
			break;
		}
		shmsync_batch *b;
		if (shmsync_begin(w, &b) < 0)
			return 3;
		for (unsigned j = 0; j < PUTS_PER_BATCH; j++) {
			char key[16];
			int kn = snprintf(key, sizeof key, "l%07u",
					  (unsigned)((i * PUTS_PER_BATCH + j) % LAG_KEYS));
			fill_value(val, i);
			if (shmsync_put(b, "/lag/", key, (size_t)kn, val, VAL_LEN) < 0)
				return 3;
		}
		uint64_t seq, tick, t_exp = bench_now_ns();
		int rc = shmsync_export(b, 0, &seq);
		if (rc == 0)
			rc = shmsync_wait_committed(w, seq, &tick, 30000000000LL);
		if (rc < 0) {
			fprintf(stderr, "lag writer: batch %llu: %s\n", (unsigned long long)i,
				shmsync_strerror(rc));
			return 4;
		}
		uint64_t t = bench_now_ns();
		sh->rec_tick[n] = tick;
		sh->rec_t[n] = t;
		sh->rec_lat[n] = t - t_exp;
		n++;
		atomic_store(&sh->nrec, n);
		atomic_store(&sh->last_tick, tick);
	}
	atomic_store(&sh->writer_done, 1);
	shmsync_detach(w);
	return 0;
}

static int lag_reader(void *arg)
{
	const struct lag_args *a = arg;
	shmsync_worker *w;
	if (shmsync_attach(&w, a->sock) < 0)
		return 2;
	if (shmsync_import_until(w, a->start_tick, 30000000000LL, NULL, NULL) < 0)
		return 3;
	atomic_fetch_add(&sh->ready, 1);
	uint64_t n = 0, done_at = 0;
	while (n < MAX_REC) {
		int rc = shmsync_import_next(w, 50000000, NULL, NULL);
		uint64_t t = bench_now_ns();
		if (rc >= 0) {
			sh->obs_tick[n] = shmsync_cursor(w);
			sh->obs_t[n] = t;
			atomic_store(&sh->nobs, ++n);
		} else if (rc != -ETIMEDOUT) {
			fprintf(stderr, "lag reader: %s\n", shmsync_strerror(rc));
			return 4;
		}
		if (atomic_load(&sh->writer_done)) {
			if (shmsync_cursor(w) >= atomic_load(&sh->last_tick))
				break;
			if (!done_at)
				done_at = t;
			else if (t - done_at > 30000000000u) {
				fprintf(stderr,
					"lag reader: the follower is still at tick %llu of %llu 30 s later\n",
					(unsigned long long)shmsync_cursor(w),
					(unsigned long long)atomic_load(&sh->last_tick));
				return 5;
			}
		}
	}
	shmsync_detach(w);
	return 0;
}

struct dist {
	double p50, p99, max;
};

static struct dist dist_of(double *v, size_t n)
{
	struct dist d = {0};
	if (!n)
		return d;
	d.p50 = bench_pct(v, n, 50);
	d.p99 = bench_pct(v, n, 99);
	d.max = v[n - 1]; /* sorted by bench_pct */
	return d;
}

static json_t *dist_json(struct dist d, const char *unit)
{
	json_t *j = json_object();
	char k[32];
	snprintf(k, sizeof k, "p50_%s", unit);
	json_object_set_new(j, k, json_real(d.p50));
	snprintf(k, sizeof k, "p99_%s", unit);
	json_object_set_new(j, k, json_real(d.p99));
	snprintf(k, sizeof k, "max_%s", unit);
	json_object_set_new(j, k, json_real(d.max));
	return j;
}

struct lag_row {
	double rate; /* offered; 0: max */
	double achieved, seconds;
	uint64_t batches, ticks;
	struct dist lag_ms, e2e_ms, commit_us, stat_ticks, stat_kib;
	double lag_min_ms;
	size_t stat_samples;
	struct cpu_use cpu;
};

/* ---- where the CPU went ------------------------------------------------------- */

static pid_t nats_pids[3];

/* User + system time of every thread of a process, in seconds: /proc's 10 ms
 * ticks, fine over a window of seconds. 0 once it is gone. */
static double proc_cpu_s(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	char *p = strrchr(buf, ')'); /* the name may hold spaces */
	if (!p)
		return 0;
	unsigned long long v[13] = {0};
	char *save = NULL, *tok = strtok_r(p + 1, " ", &save);
	for (int i = 0; tok && i < 13; i++, tok = strtok_r(NULL, " ", &save))
		v[i] = strtoull(tok, NULL, 10);
	/* fields 14 and 15 (utime, stime) are the 12th and 13th after ')' */
	return (double)(v[11] + v[12]) / (double)sysconf(_SC_CLK_TCK);
}

/* The host's busy CPU seconds (all CPUs, everything but idle and iowait):
 * what the parties below do not add up to is the bench itself or someone
 * else on the machine. */
static double host_busy_s(void)
{
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return 0;
	unsigned long long v[8] = {0};
	int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
			 &v[5], &v[6], &v[7]);
	fclose(f);
	if (got < 5)
		return 0;
	unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
	return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

static const char *const PARTY[NPARTIES] = {"leader_root", "follower_root", "nats_servers", "workers",
					    "host"};

struct watch {
	pid_t leader, follower, workers[MAX_WRITERS + 1];
};

static void cpu_snap(const struct watch *wt, double *v)
{
	v[P_LEADER] = wt->leader ? proc_cpu_s(wt->leader) : 0;
	v[P_FOLLOWER] = wt->follower ? proc_cpu_s(wt->follower) : 0;
	v[P_NATS] = 0;
	for (int i = 0; i < 3; i++)
		v[P_NATS] += nats_pids[i] ? proc_cpu_s(nats_pids[i]) : 0;
	v[P_WORKERS] = 0;
	for (int i = 0; i < MAX_WRITERS + 1; i++)
		v[P_WORKERS] += wt->workers[i] ? proc_cpu_s(wt->workers[i]) : 0;
	v[P_HOST] = host_busy_s();
}

static json_t *cpu_json(const struct cpu_use *c)
{
	json_t *j = json_object();
	for (int i = 0; i < NPARTIES; i++)
		json_object_set_new(j, PARTY[i], json_real(c->pct[i]));
	return j;
}

/* The leader's stat, sampled every 10 ms until the writers are done. */
struct stat_sampler {
	double ticks[MAX_STAT_SAMPLES], kib[MAX_STAT_SAMPLES];
	size_t n;
};

static struct stat_sampler sampler;

static void sample_until_done(shmsync_worker *w, pid_t *writers, int nwriters, uint64_t timeout_ns,
			      const struct watch *wt, struct cpu_use *cpu)
{
	sampler.n = 0;
	uint64_t end = bench_now_ns() + timeout_ns, t_meas = atomic_load(&sh->t_meas),
		 t_end = atomic_load(&sh->t_end), t0 = 0;
	double c0[NPARTIES], c1[NPARTIES];
	memset(cpu, 0, sizeof *cpu);
	for (;;) {
		/* The parties' CPU at the first sample in the window and the
		 * first after it: seconds of CPU over seconds of wall. */
		uint64_t now = bench_now_ns();
		if (!t0 && now >= t_meas) {
			t0 = now;
			cpu_snap(wt, c0);
		} else if (t0 && t0 != UINT64_MAX && now >= t_end) {
			cpu_snap(wt, c1);
			for (int i = 0; i < NPARTIES; i++)
				cpu->pct[i] = 100 * (c1[i] - c0[i]) / ((double)(now - t0) / 1e9);
			t0 = UINT64_MAX;
		}
		bool running = false;
		for (int i = 0; i < nwriters; i++) {
			int st;
			if (writers[i] && waitpid(writers[i], &st, WNOHANG) == 0)
				running = true;
			else if (writers[i]) {
				untrack(writers[i]);
				int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
				if (code != 0)
					fail("a writer exited %d (see its message above)", code);
				writers[i] = 0;
			}
		}
		if (!running)
			return;
		if (bench_now_ns() > end)
			fail("the writers did not finish in %.0f s", (double)timeout_ns / 1e9);
		shmsync_stats st;
		if (w && sampler.n < MAX_STAT_SAMPLES && shmsync_stat(w, &st) == 0) {
			sampler.ticks[sampler.n] = (double)st.repl_lag_ticks;
			sampler.kib[sampler.n] = (double)st.repl_lag_bytes / 1024.0;
			sampler.n++;
		}
		nap_ns(10000000);
	}
}

static void reset_shared(void)
{
	atomic_store(&sh->ready, 0);
	atomic_store(&sh->go, 0);
	atomic_store(&sh->writer_done, 0);
	atomic_store(&sh->last_tick, 0);
	atomic_store(&sh->nrec, 0);
	atomic_store(&sh->nobs, 0);
	for (int i = 0; i < MAX_WRITERS; i++) {
		atomic_store(&sh->count[i], 0);
		atomic_store(&sh->nlat[i], 0);
		sh->tick_first[i] = sh->tick_last[i] = 0;
	}
}

static void wait_ready(uint32_t n)
{
	uint64_t end = bench_now_ns() + 30000000000u;
	while (atomic_load(&sh->ready) < n) {
		if (bench_now_ns() > end)
			fail("workers did not attach within 30 s");
		nap_ns(1000000);
	}
}

static void lag_run(struct root *leader, struct root *follower, double rate, uint64_t duration_ns,
		    struct lag_row *row)
{
	reset_shared();
	struct lag_args wa = {.sock = leader->sock, .rate = rate, .duration_ns = duration_ns};
	struct lag_args ra = {.sock = follower->sock, .start_tick = root_tick(leader->sock)};
	pid_t reader = spawn(worker_cpu(), lag_reader, &ra);
	pid_t writer = spawn(worker_cpu(), lag_writer, &wa);
	wait_ready(2);
	shmsync_worker *w = attach(leader->sock);
	shmsync_offline(w);
	uint64_t t_go = bench_now_ns() + 20000000u;
	atomic_store(&sh->t_go, t_go);
	atomic_store(&sh->t_meas, t_go);
	atomic_store(&sh->t_end, t_go + duration_ns);
	atomic_store(&sh->go, 1);
	pid_t ws[1] = {writer};
	struct watch wt = {.leader = leader->pid, .follower = follower->pid, .workers = {writer, reader}};
	sample_until_done(w, ws, 1, duration_ns + 60000000000u, &wt, &row->cpu);
	shmsync_detach(w);
	int rc = reap(reader, 60000000000u);
	if (rc != 0)
		fail("the lag reader exited %d", rc);

	uint64_t n = atomic_load(&sh->nrec), nobs = atomic_load(&sh->nobs);
	double *lag = malloc((n ? n : 1) * sizeof *lag), *lat = malloc((n ? n : 1) * sizeof *lat),
	       *e2e = malloc((n ? n : 1) * sizeof *e2e);
	if (!lag || !lat || !e2e)
		bench_die("malloc", -ENOMEM);
	/* Ticks and observation times both grow: one pass matches each
	 * batch with the first observation that shows its tick. */
	size_t j = 0, m = 0;
	double lag_min = 1e18;
	for (uint64_t i = 0; i < n; i++) {
		while (j < nobs && sh->obs_tick[j] < sh->rec_tick[i])
			j++;
		if (j == nobs)
			fail("tick %llu was committed and never seen on the follower",
			     (unsigned long long)sh->rec_tick[i]);
		lag[m] = ((double)sh->obs_t[j] - (double)sh->rec_t[i]) / 1e6;
		e2e[m] = ((double)sh->obs_t[j] - (double)(sh->rec_t[i] - sh->rec_lat[i])) / 1e6;
		if (lag[m] < lag_min)
			lag_min = lag[m];
		m++;
		lat[i] = (double)sh->rec_lat[i] / 1e3;
	}
	struct cpu_use cpu = row->cpu;
	*row = (struct lag_row){.rate = rate, .batches = n, .lag_min_ms = n ? lag_min : 0, .cpu = cpu};
	row->seconds = n ? (double)(sh->rec_t[n - 1] - atomic_load(&sh->t_go)) / 1e9 : 0;
	row->achieved = row->seconds > 0 ? (double)n / row->seconds : 0;
	row->ticks = n ? sh->rec_tick[n - 1] - sh->rec_tick[0] + 1 : 0;
	row->lag_ms = dist_of(lag, m);
	row->e2e_ms = dist_of(e2e, m);
	row->commit_us = dist_of(lat, n);
	row->stat_ticks = dist_of(sampler.ticks, sampler.n);
	row->stat_kib = dist_of(sampler.kib, sampler.n);
	row->stat_samples = sampler.n;
	free(lag);
	free(lat);
	free(e2e);
}

/* ---- commit throughput --------------------------------------------------------- */

struct tp_args {
	const char *sock;
	unsigned index;
};

static int tp_writer(void *arg)
{
	const struct tp_args *a = arg;
	shmsync_worker *w;
	if (shmsync_attach(&w, a->sock) < 0)
		return 2;
	shmsync_offline(w);
	atomic_fetch_add(&sh->ready, 1);
	wait_go();
	uint64_t t_meas = atomic_load(&sh->t_meas), t_end = atomic_load(&sh->t_end);
	uint64_t seqs[WINDOW], texp[WINDOW], count = 0, nl = 0;
	unsigned head = 0, out = 0;
	uint8_t val[VAL_LEN];
	for (uint64_t i = 0;; i++) {
		uint64_t now = bench_now_ns();
		if (now < t_end && out < WINDOW) {
			shmsync_batch *b;
			if (shmsync_begin(w, &b) < 0)
				return 3;
			for (unsigned j = 0; j < PUTS_PER_BATCH; j++) {
				char key[24];
				int kn = snprintf(key, sizeof key, "w%u-%05u", a->index,
						  (unsigned)((i * PUTS_PER_BATCH + j) % TP_KEYS));
				fill_value(val, i);
				if (shmsync_put(b, "/tp/", key, (size_t)kn, val, VAL_LEN) < 0)
					return 3;
			}
			unsigned k = (head + out) % WINDOW;
			texp[k] = bench_now_ns();
			int rc = shmsync_export(b, 0, &seqs[k]);
			if (rc < 0) {
				fprintf(stderr, "writer %u: export: %s\n", a->index, shmsync_strerror(rc));
				return 4;
			}
			out++;
			continue;
		}
		if (!out)
			break;
		uint64_t tick;
		int rc = shmsync_wait_committed(w, seqs[head], &tick, 30000000000LL);
		uint64_t t = bench_now_ns();
		if (rc < 0) {
			fprintf(stderr, "writer %u: wait_committed: %s\n", a->index, shmsync_strerror(rc));
			return 4;
		}
		/* Counted by when the ack came: the warm-up's and the drain's
		 * acks fall outside [t_meas, t_end). */
		if (t >= t_meas && t < t_end) {
			if (!count)
				sh->tick_first[a->index] = tick;
			sh->tick_last[a->index] = tick;
			count++;
			if (nl < MAX_REC)
				sh->lat[a->index][nl++] = t - texp[head];
		}
		head = (head + 1) % WINDOW;
		out--;
	}
	atomic_store(&sh->count[a->index], count);
	atomic_store(&sh->nlat[a->index], nl);
	shmsync_detach(w);
	return 0;
}

struct tp_sample {
	double bps, p50_us, lag_ticks_max, lag_kib_max, ticks_per_s;
	struct cpu_use cpu;
};

static struct tp_sample tp_run(int mode, int rep, uint64_t warm_ns, uint64_t meas_ns)
{
	char stream[32], name[32];
	snprintf(stream, sizeof stream, "tp%d%s", rep, MODE_NAME[mode]);
	snprintf(name, sizeof name, "tp-%s", MODE_NAME[mode]);
	const char *plain[] = {NULL};
	const char *repl[] = {"--replicate", urls, "--stream", stream, "--replicas", "3", NULL};
	const char *dur[] = {"--replicate", urls, "--stream", stream, "--replicas", "3", "--durable", NULL};
	const char *const *args = mode == 0 ? plain : mode == 1 ? repl : dur;
	struct root r;
	root_init(&r, name, args);
	root_start(&r);
	make_dir(r.sock, "/tp/");

	reset_shared();
	struct tp_args wa[MAX_WRITERS];
	pid_t ws[MAX_WRITERS];
	for (unsigned i = 0; i < MAX_WRITERS; i++) {
		wa[i] = (struct tp_args){.sock = r.sock, .index = i};
		ws[i] = spawn(worker_cpu(), tp_writer, &wa[i]);
	}
	wait_ready(MAX_WRITERS);
	shmsync_worker *w = attach(r.sock);
	shmsync_offline(w);
	uint64_t t0 = bench_now_ns() + 20000000u;
	atomic_store(&sh->t_go, t0);
	atomic_store(&sh->t_meas, t0 + warm_ns);
	atomic_store(&sh->t_end, t0 + warm_ns + meas_ns);
	atomic_store(&sh->go, 1);
	struct tp_sample s = {0};
	struct watch wt = {.leader = r.pid, .workers = {ws[0], ws[1]}};
	sample_until_done(mode ? w : NULL, ws, MAX_WRITERS, warm_ns + meas_ns + 60000000000u, &wt, &s.cpu);
	shmsync_detach(w);
	root_stop(&r);
	if (mode)
		stream_drop(stream);

	uint64_t total = 0, nl = 0, tick_lo = UINT64_MAX, tick_hi = 0;
	for (int i = 0; i < MAX_WRITERS; i++) {
		total += atomic_load(&sh->count[i]);
		if (sh->tick_first[i] && sh->tick_first[i] < tick_lo)
			tick_lo = sh->tick_first[i];
		if (sh->tick_last[i] > tick_hi)
			tick_hi = sh->tick_last[i];
	}
	s.ticks_per_s = tick_hi > tick_lo ? (double)(tick_hi - tick_lo) / ((double)meas_ns / 1e9) : 0;
	double *lat = malloc(MAX_WRITERS * (size_t)MAX_REC * sizeof *lat);
	if (!lat)
		bench_die("malloc", -ENOMEM);
	for (int i = 0; i < MAX_WRITERS; i++)
		for (uint64_t k = 0; k < atomic_load(&sh->nlat[i]); k++)
			lat[nl++] = (double)sh->lat[i][k] / 1e3;
	s.bps = (double)total / ((double)meas_ns / 1e9);
	s.p50_us = bench_pct(lat, nl, 50);
	free(lat);
	if (mode) {
		s.lag_ticks_max = bench_max(sampler.ticks, sampler.n);
		s.lag_kib_max = bench_max(sampler.kib, sampler.n);
	}
	return s;
}

/* ---- NATS: the stream's side ------------------------------------------------ */

static natsConnection *nc;
static jsCtx *js;

static void nats_up(void)
{
	if (js)
		return;
	natsStatus s = natsConnection_ConnectTo(&nc, urls);
	if (s == NATS_OK)
		s = natsConnection_JetStream(&js, nc, NULL);
	if (s != NATS_OK)
		fail("connecting to %s: %s", urls, natsStatus_GetText(s));
}

static void nats_down(void)
{
	if (js)
		jsCtx_Destroy(js);
	if (nc)
		natsConnection_Destroy(nc);
	js = NULL;
	nc = NULL;
	nats_CloseAndWait(2000);
}

/* The stream's latest whole snapshot (NAME.snapidx): false when none. */
static bool snapidx(const char *stream, uint64_t *tick, uint64_t *chunks)
{
	char subj[96];
	snprintf(subj, sizeof subj, "%s.snapidx", stream);
	natsMsg *m = NULL;
	jsErrCode jerr = 0;
	if (js_GetLastMsg(&m, js, stream, subj, NULL, &jerr) != NATS_OK)
		return false;
	struct repl_hdr h;
	bool ok = natsMsg_GetDataLength(m) >= (int)sizeof h;
	if (ok) {
		memcpy(&h, natsMsg_GetData(m), sizeof h);
		ok = h.kind == REPL_SNAP_IDX;
		*tick = h.tick;
		*chunks = h.b;
	}
	natsMsg_Destroy(m);
	return ok;
}

static void stream_size(const char *stream, uint64_t *bytes, uint64_t *msgs)
{
	jsStreamInfo *si = NULL;
	*bytes = *msgs = 0;
	if (js_GetStreamInfo(&si, js, stream, NULL, NULL) == NATS_OK) {
		*bytes = si->State.Bytes;
		*msgs = si->State.Msgs;
		jsStreamInfo_Destroy(si);
	}
}

static int drop_child(void *arg)
{
	const char *stream = arg;
	natsConnection *c = NULL;
	jsCtx *j = NULL;
	if (natsConnection_ConnectTo(&c, urls) != NATS_OK || natsConnection_JetStream(&j, c, NULL) != NATS_OK)
		return 1;
	int rc = js_DeleteStream(j, stream, NULL, NULL) == NATS_OK ? 0 : 2;
	char bucket[96];
	snprintf(bucket, sizeof bucket, "shmsync_%s", stream);
	js_DeleteKeyValue(j, bucket);
	jsCtx_Destroy(j);
	natsConnection_Destroy(c);
	return rc;
}

/* Each stream keeps an R3 raft group busy and its bytes on disk three
 * times (the store is 1 GiB a node): it goes as soon as its run is done.
 * From a child, so that this process holds no libnats threads while it
 * still forks workers. */
static void stream_drop(const char *stream)
{
	int rc = reap(spawn(-1, drop_child, (void *)stream), 30000000000u);
	if (rc != 0)
		fprintf(stderr, "bench_repl: stream %s was not deleted (%d)\n", stream, rc);
}

/* ---- recovery ---------------------------------------------------------------- */

struct rec_result {
	uint64_t keys, load_ticks, snap_tick, snap_chunks, final_tick, stream_bytes, stream_msgs,
		small_commits;
	double load_s, snap_wait_s;
	int reps;
	double l_wall_ms[16], l_root_ms[16], l_stop_ms[16];
	uint64_t l_replayed[16], l_snap[16];
	double f_answer_ms[16], f_synced_ms[16], f_root_ms[16];
	uint64_t f_replayed[16];
	bool counted;
	uint64_t counted_keys;
};

static int count_key(const void *k, size_t kn, shmsync_view v, void *arg)
{
	(void)k;
	(void)kn;
	(void)v;
	(*(uint64_t *)arg)++;
	return 0;
}

/* Loads the keys through the leader: batches of LOAD_BATCH puts, up to
 * LOAD_WINDOW in flight (the export ring holds two of these at a time, so
 * the window is what keeps the root fed while acks come back). */
static void load_keys(const char *sock, uint64_t nkeys, struct rec_result *res)
{
	shmsync_worker *w = attach(sock);
	shmsync_offline(w);
	uint64_t seqs[LOAD_WINDOW], tick = 0, first = root_tick(sock);
	unsigned head = 0, out = 0;
	uint8_t val[VAL_LEN];
	uint64_t t0 = bench_now_ns();
	for (uint64_t i = 0; i < nkeys || out;) {
		int rc;
		if (i < nkeys && out < LOAD_WINDOW) {
			shmsync_batch *b;
			rc = shmsync_begin(w, &b);
			for (unsigned j = 0; rc == 0 && j < LOAD_BATCH && i < nkeys; j++, i++) {
				char key[24]; /* "k" and 8 digits are used (KEY_LEN); room for any u64 */
				snprintf(key, sizeof key, "k%08llu", (unsigned long long)(i % 100000000u));
				fill_value(val, i);
				rc = shmsync_put(b, "/rec/", key, KEY_LEN, val, VAL_LEN);
			}
			if (rc == 0)
				rc = shmsync_export(b, 0, &seqs[(head + out) % LOAD_WINDOW]);
			if (rc < 0)
				fail("loading key %llu: %s", (unsigned long long)i, shmsync_strerror(rc));
			out++;
			continue;
		}
		rc = shmsync_wait_committed(w, seqs[head], &tick, 60000000000LL);
		if (rc < 0)
			fail("loading: wait_committed: %s", shmsync_strerror(rc));
		head = (head + 1) % LOAD_WINDOW;
		out--;
	}
	res->load_s = (double)(bench_now_ns() - t0) / 1e9;
	res->load_ticks = tick - first;
	shmsync_detach(w);
}

/* Small commits (one put over key 0, so the state stays nkeys keys) until
 * the stream indexes a snapshot taken after the load's last tick. */
static void wait_snapshot(const char *sock, const char *stream, uint64_t load_tick, struct rec_result *res)
{
	shmsync_worker *w = attach(sock);
	shmsync_offline(w);
	uint8_t val[VAL_LEN];
	uint64_t t0 = bench_now_ns(), tick = 0, chunks = 0;
	for (uint64_t i = 0;; i++) {
		if (i % 10 == 0 && snapidx(stream, &tick, &chunks) && tick >= load_tick)
			break;
		if (bench_now_ns() - t0 > 300000000000u)
			fail("no snapshot of the whole state (tick >= %llu) within 300 s; the latest is at "
			     "tick %llu",
			     (unsigned long long)load_tick, (unsigned long long)tick);
		shmsync_batch *b;
		uint64_t seq, t;
		fill_value(val, i);
		int rc = shmsync_begin(w, &b);
		if (rc == 0)
			rc = shmsync_put(b, "/rec/", "k00000000", KEY_LEN, val, VAL_LEN);
		if (rc == 0)
			rc = shmsync_export(b, 0, &seq);
		if (rc == 0)
			rc = shmsync_wait_committed(w, seq, &t, 30000000000LL);
		if (rc < 0)
			fail("small commit: %s", shmsync_strerror(rc));
		res->small_commits++;
		nap_ns(2000000); /* ticks, not a flood: the snapshot thread needs the CPU */
	}
	res->snap_wait_s = (double)(bench_now_ns() - t0) / 1e9;
	shmsync_detach(w);
	/* Another snapshot may have started while that one was written (the
	 * small commits go on meanwhile): until it is indexed it competes
	 * with what is measured, and the restarts would load either. With no
	 * commits, no new one starts, so an index that stays put for 5 s (1 s
	 * with --quick) is the one every start below loads. */
	uint64_t last = tick, since = bench_now_ns(), t, quiet = o.b.quick ? 1000000000u : 5000000000u;
	while (bench_now_ns() - since < quiet) {
		if (bench_now_ns() - t0 > 300000000000u)
			fail("the snapshot index kept changing for 300 s");
		nap_ns(100000000);
		if (snapidx(stream, &t, &chunks) && t != last) {
			last = t;
			since = bench_now_ns();
		}
	}
	snapidx(stream, &res->snap_tick, &res->snap_chunks);
}

static void recovery(struct rec_result *res)
{
	const char *stream = "rec";
	const char *largs[] = {"--replicate",      urls,  "--stream", stream, "--replicas", "3",
			       "--snapshot-ticks", "100", NULL};
	const char *fargs[] = {"--follow", urls, "--stream", stream, NULL};
	struct root leader, follower;
	root_init(&leader, "rec-leader", largs);
	root_init(&follower, "rec-follower", fargs);
	root_start(&leader);
	make_dir(leader.sock, "/rec/");
	res->keys = o.keys;
	load_keys(leader.sock, o.keys, res);
	uint64_t load_tick = root_tick(leader.sock);
	wait_snapshot(leader.sock, stream, load_tick, res);
	res->final_tick = root_tick(leader.sock);
	stream_size(stream, &res->stream_bytes, &res->stream_msgs);

	res->reps = o.b.repeats;
	for (int r = 0; r < res->reps; r++) {
		/* A follower from nothing: the snapshot, then the ticks after it. */
		root_exec(&follower);
		uint64_t ans = root_wait_answer(&follower, 120000000000u);
		if (!ans)
			fail("the follower did not answer within 120 s (see %s)", follower.log);
		uint64_t synced = 0, end = bench_now_ns() + 120000000000u;
		while (!synced) {
			if (root_tick(follower.sock) >= res->final_tick)
				synced = bench_now_ns();
			else if (bench_now_ns() > end)
				fail("the follower did not reach tick %llu",
				     (unsigned long long)res->final_tick);
			else
				nap_ns(1000000);
		}
		struct recovered rec = {0};
		root_recovered(&follower, &rec);
		res->f_answer_ms[r] = (double)(ans - follower.t_exec) / 1e6;
		res->f_synced_ms[r] = (double)(synced - follower.t_exec) / 1e6;
		res->f_root_ms[r] = rec.ms;
		res->f_replayed[r] = rec.ticks;
		/* Stopped before the leader is, or it would take the lease over. */
		root_stop(&follower);

		res->l_stop_ms[r] = root_stop(&leader);
		root_exec(&leader);
		ans = root_wait_answer(&leader, 120000000000u);
		if (!ans)
			fail("the restarted leader did not answer within 120 s (see %s)", leader.log);
		if (!root_recovered(&leader, &rec))
			fail("the restarted leader said nothing about recovering (see %s)", leader.log);
		if (rec.tick != res->final_tick)
			fail("the restarted leader recovered tick %llu, expected %llu",
			     (unsigned long long)rec.tick, (unsigned long long)res->final_tick);
		res->l_wall_ms[r] = (double)(ans - leader.t_exec) / 1e6;
		res->l_root_ms[r] = rec.ms;
		res->l_replayed[r] = rec.ticks;
		res->l_snap[r] = rec.snap_tick;
		if (rec.snap_tick != res->snap_tick)
			fail("the restarted leader loaded the snapshot at tick %llu, the stream's index "
			     "names %llu",
			     (unsigned long long)rec.snap_tick, (unsigned long long)res->snap_tick);
		if (r == 0) {
			/* Once: the recovered state is the whole load. */
			shmsync_worker *w = attach(leader.sock);
			uint64_t n = 0;
			int rc = shmsync_import_until(w, res->final_tick, 30000000000LL, NULL, NULL);
			if (rc >= 0)
				rc = shmsync_dir_iter(w, "/rec/", count_key, &n);
			shmsync_detach(w);
			if (rc < 0)
				fail("counting the recovered keys: %s", shmsync_strerror(rc));
			res->counted = true;
			res->counted_keys = n;
			if (n != o.keys)
				fail("the restarted leader has %llu keys in /rec/, expected %llu",
				     (unsigned long long)n, (unsigned long long)o.keys);
		}
	}
	root_stop(&leader);
}

/* ---- the environment ------------------------------------------------------------ */

/* The 1-minute load average: the host is shared, and what else ran beside
 * the bench shows here and in the "host" CPU column. */
static double loadavg(void)
{
	double l = -1;
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = -1;
		fclose(f);
	}
	return l;
}

static void nats_version(char *buf, size_t len)
{
	snprintf(buf, len, "unknown");
	FILE *p = popen("nats-server --version 2>&1", "r");
	if (!p)
		return;
	if (fgets(buf, (int)len, p))
		buf[strcspn(buf, "\n")] = 0;
	pclose(p);
}

static void cluster_start(void)
{
	char port[16];
	snprintf(port, sizeof port, "%d", o.base_port);
	const char *argv[] = {"/bin/bash", cluster_script, "start", cluster_dir, port, NULL};
	/* Set before: a start that fails half-way still has pids to stop. */
	cluster_up = 1;
	if (run_argv(argv) != 0)
		fail("the NATS cluster did not start on ports %d.. (see %s/*.log)", o.base_port, cluster_dir);
	for (int i = 0; i < 3; i++) {
		char path[256];
		snprintf(path, sizeof path, "%s/n%d.pid", cluster_dir, i + 1);
		FILE *f = fopen(path, "r");
		int pid = 0;
		if (f && fscanf(f, "%d", &pid) == 1)
			nats_pids[i] = pid;
		if (f)
			fclose(f);
	}
	snprintf(urls, sizeof urls, "nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d",
		 o.base_port, o.base_port + 1, o.base_port + 2);
}

/* ---- report -------------------------------------------------------------------- */

static double med(const double *v, int n)
{
	return bench_median_copy(v, (size_t)n);
}

#define NRATES 3
static const double RATES[NRATES] = {500, 2000, 0}; /* batches/s; 0: back to back */

struct lag_section {
	uint64_t run_ns;
	struct lag_row rows[NRATES];
};

static void run_lag(struct lag_section *ls)
{
	ls->run_ns = o.b.quick ? 300000000u : 5000000000u;
	const char *largs[] = {"--replicate", urls, "--stream", "lag", "--replicas", "3", NULL};
	const char *fargs[] = {"--follow", urls, "--stream", "lag", NULL};
	struct root leader, follower;
	root_init(&leader, "lag-leader", largs);
	root_init(&follower, "lag-follower", fargs);
	root_start(&leader);
	make_dir(leader.sock, "/lag/");
	root_start(&follower);
	for (int i = 0; i < NRATES; i++)
		lag_run(&leader, &follower, o.b.quick && RATES[i] ? RATES[i] / 5 : RATES[i], ls->run_ns,
			&ls->rows[i]);
	root_stop(&follower);
	root_stop(&leader);
	stream_drop("lag");
}

/* A row's offered rate for the table: "500/s", or "max" (rate 0). */
static void rate_label(char *buf, size_t len, double rate)
{
	if (rate)
		snprintf(buf, len, "%.0f/s", rate);
	else
		snprintf(buf, len, "max");
}

static void report_lag(json_t *doc, const struct lag_section *ls)
{
	json_t *jl = json_array();
	for (int i = 0; i < NRATES; i++) {
		const struct lag_row *w = &ls->rows[i];
		json_t *j = json_object();
		json_object_set_new(j, "offered_batches_per_s",
				    w->rate ? json_real(w->rate) : json_string("max"));
		json_object_set_new(j, "achieved_batches_per_s", json_real(w->achieved));
		json_object_set_new(j, "seconds", json_real((double)ls->run_ns / 1e9));
		json_object_set_new(j, "batches", json_integer((json_int_t)w->batches));
		json_object_set_new(j, "ticks", json_integer((json_int_t)w->ticks));
		json_object_set_new(j, "puts_per_batch", json_integer(PUTS_PER_BATCH));
		json_object_set_new(j, "value_bytes", json_integer(VAL_LEN));
		json_t *lag = dist_json(w->lag_ms, "ms");
		json_object_set_new(lag, "min_ms", json_real(w->lag_min_ms));
		json_object_set_new(j, "lag", lag);
		json_object_set_new(j, "leader_commit", dist_json(w->commit_us, "us"));
		json_object_set_new(j, "export_to_visible_on_follower", dist_json(w->e2e_ms, "ms"));
		json_t *st = json_object();
		json_object_set_new(st, "samples", json_integer((json_int_t)w->stat_samples));
		json_object_set_new(st, "repl_lag_ticks", dist_json(w->stat_ticks, "ticks"));
		json_object_set_new(st, "repl_lag_bytes", dist_json(w->stat_kib, "kib"));
		json_object_set_new(j, "leader_stat", st);
		json_object_set_new(j, "cpu_percent", cpu_json(&w->cpu));
		json_array_append_new(jl, j);
	}
	json_object_set_new(doc, "lag", jl);
	if (o.b.json)
		return;
	printf("\nreplication lag: committed on the leader -> visible to a worker on a follower\n"
	       "(1 writer, %d puts of %d B per batch, one batch in flight, %.1f s per rate)\n",
	       PUTS_PER_BATCH, VAL_LEN, (double)ls->run_ns / 1e9);
	printf("  %-8s %8s | %-20s | %-15s | %-17s | %s\n", "offered", "achieved", "lag p50/p99/max ms",
	       "e2e p50/p99 ms", "commit p50/p99 us", "leader stat lag p50/p99/max ticks, max KiB");
	for (int i = 0; i < NRATES; i++) {
		const struct lag_row *w = &ls->rows[i];
		char off[16];
		rate_label(off, sizeof off, w->rate);
		printf("  %-8s %6.0f/s | %5.2f %6.2f %7.2f | %6.2f %8.2f | %7.0f %9.0f | %4.0f %4.0f %4.0f, "
		       "%6.1f\n",
		       off, w->achieved, w->lag_ms.p50, w->lag_ms.p99, w->lag_ms.max, w->e2e_ms.p50,
		       w->e2e_ms.p99, w->commit_us.p50, w->commit_us.p99, w->stat_ticks.p50,
		       w->stat_ticks.p99, w->stat_ticks.max, w->stat_kib.max);
	}
	printf("  (lag: the writer's wait_committed returned -> a reader on the follower sees the tick; e2e: "
	       "from\n"
	       "  the export instead, so it does not depend on when the leader wrote the ack)\n");
	printf("  CPU, %% of one CPU over the run (host: /proc/stat, tick-sampled, undercounts light bursty "
	       "load):\n");
	for (int i = 0; i < NRATES; i++) {
		const struct lag_row *w = &ls->rows[i];
		char off[16];
		rate_label(off, sizeof off, w->rate);
		printf("    %-7s leader %3.0f  follower %3.0f  nats-servers %3.0f  writer+reader %3.0f  host "
		       "%3.0f\n",
		       off, w->cpu.pct[P_LEADER], w->cpu.pct[P_FOLLOWER], w->cpu.pct[P_NATS],
		       w->cpu.pct[P_WORKERS], w->cpu.pct[P_HOST]);
	}
}

struct commit_section {
	uint64_t warm_ns, meas_ns;
	struct tp_sample tp[NMODES][16];
};

static void run_commit(struct commit_section *cs)
{
	cs->warm_ns = o.b.quick ? 100000000u : 500000000u;
	cs->meas_ns = o.b.quick ? 300000000u : 3000000000u;
	for (int r = 0; r < o.b.repeats; r++)
		for (int k = 0; k < NMODES; k++) {
			int mode = (k + r) % NMODES; /* no mode always runs first (or last) */
			cs->tp[mode][r] = tp_run(mode, r, cs->warm_ns, cs->meas_ns);
		}
}

static void report_commit(json_t *doc, const struct commit_section *cs)
{
	int n = o.b.repeats;
	double ratio[NMODES][16], bps[NMODES][16], p50[NMODES][16], lagt[NMODES][16], tps[NMODES][16];
	double cpu[NMODES][NPARTIES][16];
	struct cpu_use cmed[NMODES];
	for (int m = 0; m < NMODES; m++)
		for (int r = 0; r < n; r++) {
			for (int k = 0; k < NPARTIES; k++)
				cpu[m][k][r] = cs->tp[m][r].cpu.pct[k];
			tps[m][r] = cs->tp[m][r].ticks_per_s;
			bps[m][r] = cs->tp[m][r].bps;
			p50[m][r] = cs->tp[m][r].p50_us;
			lagt[m][r] = cs->tp[m][r].lag_ticks_max;
			ratio[m][r] = cs->tp[m][r].bps / cs->tp[0][r].bps;
		}
	json_t *jt = json_object();
	json_object_set_new(jt, "writers", json_integer(MAX_WRITERS));
	json_object_set_new(jt, "window", json_integer(WINDOW));
	json_object_set_new(jt, "puts_per_batch", json_integer(PUTS_PER_BATCH));
	json_object_set_new(jt, "seconds", json_real((double)cs->meas_ns / 1e9));
	json_object_set_new(jt, "warmup_seconds", json_real((double)cs->warm_ns / 1e9));
	json_t *modes = json_array();
	for (int m = 0; m < NMODES; m++) {
		json_t *j = json_object();
		json_object_set_new(j, "mode", json_string(MODE_NAME[m]));
		json_object_set_new(j, "batches_per_s_median", json_real(med(bps[m], n)));
		json_object_set_new(j, "batches_per_s_repeats", bench_json_array(bps[m], (size_t)n));
		json_object_set_new(j, "commit_p50_us_median", json_real(med(p50[m], n)));
		json_object_set_new(j, "commit_p50_us_repeats", bench_json_array(p50[m], (size_t)n));
		json_object_set_new(j, "ratio_to_none_median", json_real(med(ratio[m], n)));
		json_object_set_new(j, "ratio_to_none_repeats", bench_json_array(ratio[m], (size_t)n));
		json_object_set_new(j, "ticks_per_s_median", json_real(med(tps[m], n)));
		json_object_set_new(j, "batches_per_tick_median", json_real(med(bps[m], n) / med(tps[m], n)));
		for (int k = 0; k < NPARTIES; k++)
			cmed[m].pct[k] = med(cpu[m][k], n);
		json_object_set_new(j, "cpu_percent_median", cpu_json(&cmed[m]));
		if (m)
			json_object_set_new(j, "leader_stat_lag_ticks_max_repeats",
					    bench_json_array(lagt[m], (size_t)n));
		json_array_append_new(modes, j);
	}
	json_object_set_new(jt, "modes", modes);
	json_object_set_new(doc, "commit", jt);
	if (o.b.json)
		return;
	printf("\ncommit throughput: %d writers on the leader, %d batches in flight each, %d puts per "
	       "batch,\n"
	       "%.1f s each; medians of %d interleaved repeats\n",
	       MAX_WRITERS, WINDOW, PUTS_PER_BATCH, (double)cs->meas_ns / 1e9, n);
	printf("  %-22s %11s %8s %11s %10s %11s %9s | %s\n", "mode", "batches/s", "vs none", "commit p50",
	       "ticks/s", "batch/tick", "stat lag", "CPU %: leader, nats, writers, host");
	const char *label[NMODES] = {"none (plain serve)", "--replicate", "--replicate --durable"};
	for (int m = 0; m < NMODES; m++) {
		char lagbuf[24] = "";
		if (m)
			snprintf(lagbuf, sizeof lagbuf, "%.0f max", med(lagt[m], n));
		printf("  %-22s %11.0f %7.3fx %9.1fus %10.0f %11.1f %9s | %3.0f, %3.0f, %3.0f, %3.0f\n",
		       label[m], med(bps[m], n), med(ratio[m], n), med(p50[m], n), med(tps[m], n),
		       med(bps[m], n) / med(tps[m], n), lagbuf, cmed[m].pct[P_LEADER], cmed[m].pct[P_NATS],
		       cmed[m].pct[P_WORKERS], cmed[m].pct[P_HOST]);
	}
}

static void report_recovery(json_t *doc, const struct rec_result *rec)
{
	json_t *jr = json_object();
	json_object_set_new(jr, "keys", json_integer((json_int_t)rec->keys));
	json_object_set_new(jr, "key_bytes", json_integer(KEY_LEN));
	json_object_set_new(jr, "value_bytes", json_integer(VAL_LEN));
	json_object_set_new(jr, "load_seconds", json_real(rec->load_s));
	json_object_set_new(jr, "load_keys_per_s", json_real((double)rec->keys / rec->load_s));
	json_object_set_new(jr, "load_ticks", json_integer((json_int_t)rec->load_ticks));
	json_object_set_new(jr, "snapshot_tick", json_integer((json_int_t)rec->snap_tick));
	json_object_set_new(jr, "snapshot_chunks", json_integer((json_int_t)rec->snap_chunks));
	json_object_set_new(jr, "snapshot_covering_load_seconds", json_real(rec->snap_wait_s));
	json_object_set_new(jr, "small_commits", json_integer((json_int_t)rec->small_commits));
	json_object_set_new(jr, "final_tick", json_integer((json_int_t)rec->final_tick));
	json_object_set_new(jr, "stream_bytes", json_integer((json_int_t)rec->stream_bytes));
	json_object_set_new(jr, "stream_msgs", json_integer((json_int_t)rec->stream_msgs));
	json_object_set_new(jr, "recovered_keys_counted", json_integer((json_int_t)rec->counted_keys));
	json_t *jlr = json_object();
	json_object_set_new(jlr, "wall_ms_median", json_real(med(rec->l_wall_ms, rec->reps)));
	json_object_set_new(jlr, "wall_ms_repeats", bench_json_array(rec->l_wall_ms, (size_t)rec->reps));
	json_object_set_new(jlr, "root_ms_median", json_real(med(rec->l_root_ms, rec->reps)));
	json_object_set_new(jlr, "root_ms_repeats", bench_json_array(rec->l_root_ms, (size_t)rec->reps));
	json_object_set_new(jlr, "stop_ms_repeats", bench_json_array(rec->l_stop_ms, (size_t)rec->reps));
	json_object_set_new(jlr, "ticks_replayed", json_integer((json_int_t)rec->l_replayed[0]));
	json_object_set_new(jr, "leader_restart", jlr);
	json_t *jf = json_object();
	json_object_set_new(jf, "answer_ms_median", json_real(med(rec->f_answer_ms, rec->reps)));
	json_object_set_new(jf, "answer_ms_repeats", bench_json_array(rec->f_answer_ms, (size_t)rec->reps));
	json_object_set_new(jf, "synced_ms_median", json_real(med(rec->f_synced_ms, rec->reps)));
	json_object_set_new(jf, "synced_ms_repeats", bench_json_array(rec->f_synced_ms, (size_t)rec->reps));
	json_object_set_new(jf, "root_ms_median", json_real(med(rec->f_root_ms, rec->reps)));
	json_object_set_new(jf, "root_ms_repeats", bench_json_array(rec->f_root_ms, (size_t)rec->reps));
	json_object_set_new(jf, "ticks_replayed", json_integer((json_int_t)rec->f_replayed[0]));
	json_object_set_new(jr, "follower_sync", jf);
	json_object_set_new(doc, "recovery", jr);
	if (o.b.json)
		return;
	printf("\nrecovery: %llu keys (%d B keys, %d B values, one directory), loaded through the leader in "
	       "%.2f s\n  (%.0f keys/s, %llu ticks); a snapshot covering them was indexed %.1f s after the "
	       "load;\n"
	       "  the one recovered from: tick %llu, %llu chunks; stream %.1f MiB in %llu messages; final "
	       "tick "
	       "%llu\n",
	       (unsigned long long)rec->keys, KEY_LEN, VAL_LEN, rec->load_s, (double)rec->keys / rec->load_s,
	       (unsigned long long)rec->load_ticks, rec->snap_wait_s, (unsigned long long)rec->snap_tick,
	       (unsigned long long)rec->snap_chunks, (double)rec->stream_bytes / 1048576.0,
	       (unsigned long long)rec->stream_msgs, (unsigned long long)rec->final_tick);
	printf("  %-36s %11s %11s  %s\n", "", "wall", "root says", "repeats: wall / root (ms)");
	char reps[256] = "";
	for (int r = 0; r < rec->reps; r++)
		snprintf(reps + strlen(reps), sizeof reps - strlen(reps), "%s%.0f/%.0f", r ? ", " : "",
			 rec->l_wall_ms[r], rec->l_root_ms[r]);
	printf("  %-36s %9.0fms %9.0fms  %s\n", "leader restart -> an attach answers",
	       med(rec->l_wall_ms, rec->reps), med(rec->l_root_ms, rec->reps), reps);
	reps[0] = 0;
	for (int r = 0; r < rec->reps; r++)
		snprintf(reps + strlen(reps), sizeof reps - strlen(reps), "%s%.0f/%.0f", r ? ", " : "",
			 rec->f_synced_ms[r], rec->f_root_ms[r]);
	printf("  %-36s %9.0fms %9.0fms  %s\n", "new follower -> at the leader's tick",
	       med(rec->f_synced_ms, rec->reps), med(rec->f_root_ms, rec->reps), reps);
	printf("  (medians; both load the snapshot, then replay the %llu ticks after it; the follower "
	       "answered\n"
	       "  attaches after %.0f ms: it recovers before its socket opens)\n",
	       (unsigned long long)rec->l_replayed[0], med(rec->f_answer_ms, rec->reps));
}

int main(int argc, char **argv)
{
	parse(argc, argv);
	main_pid = getpid();
	if (system("command -v nats-server >/dev/null 2>&1") != 0) {
		fprintf(stderr, "SKIP: nats-server is not installed (bash scripts/deps.sh installs it)\n");
		return 77;
	}
	tool = getenv("SHMSYNC_TOOL");
	if (!tool || !*tool)
		tool = BENCH_REPL_TOOL;
	cluster_script = getenv("NATS_CLUSTER");
	if (!cluster_script || !*cluster_script)
		cluster_script = BENCH_REPL_CLUSTER;
	if (access(tool, X_OK) != 0)
		fail("no shmsync tool at %s (build the target shmsync_tool, or set SHMSYNC_TOOL)", tool);
	if (access(cluster_script, R_OK) != 0)
		fail("no cluster script at %s (set NATS_CLUSTER)", cluster_script);
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		o.pin = PIN_NONE;

	sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1,
		  0);
	if (sh == MAP_FAILED)
		bench_die("mmap", -errno);
	snprintf(tmpdir, sizeof tmpdir, "/tmp/shmsync-bench-repl-XXXXXX");
	if (!mkdtemp(tmpdir))
		bench_die("mkdtemp", -errno);
	snprintf(cluster_dir, sizeof cluster_dir, "%s/nats", tmpdir);
	atexit(cleanup);
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	char nver[128];
	nats_version(nver, sizeof nver);
	json_t *doc = bench_json_new("bench_repl", &o.b);
	json_object_del(doc, "pinned_cpu");
	json_object_set_new(doc, "nats_server", json_string(nver));
	json_object_set_new(doc, "libnats", json_string(nats_GetVersion()));
	json_object_set_new(doc, "cluster",
			    json_string("3 nats-server nodes on 127.0.0.1, stream replicas 3"));
	json_t *place = json_object();
	json_object_set_new(place, "pin", json_string(PIN_NAME[o.pin]));
	json_object_set_new(place, "roots_cpu", json_integer(root_cpu()));
	json_object_set_new(place, "workers_cpu", json_integer(worker_cpu()));
	json_object_set_new(place, "nats_servers", json_string("not pinned"));
	json_object_set_new(doc, "placement", place);

	const char *cpu_model = json_string_value(json_object_get(doc, "cpu_model"));
	if (!o.b.json) {
		printf("bench_repl: %s, %ld CPUs; %s; %s\n", cpu_model, sysconf(_SC_NPROCESSORS_ONLN), nver,
		       o.b.quick ? "QUICK (tiny sizes: the figures mean nothing)" : "full run");
		const char *where[] = {"nothing pinned",
				       "workers on CPU 0; roots, nats-servers, the bench unpinned",
				       "roots on CPU 1, workers on CPU 0; nats-servers, the bench unpinned"};
		printf("placement (--pin %s): %s\n", PIN_NAME[o.pin], where[o.pin]);
		fflush(stdout);
	}
	double load0 = loadavg();
	uint64_t t_start = bench_now_ns();
	cluster_start();

	static struct lag_section ls;
	static struct commit_section cs;
	static struct rec_result rec;
	if (o.only & 1)
		run_lag(&ls);
	if (o.only & 2)
		run_commit(&cs);
	if (o.only & 4) {
		/* No worker is forked from here on: the bench may hold libnats. */
		nats_up();
		recovery(&rec);
		nats_down();
		stream_drop("rec");
	}
	double wall_s = (double)(bench_now_ns() - t_start) / 1e9;

	if (o.only & 1)
		report_lag(doc, &ls);
	if (o.only & 2)
		report_commit(doc, &cs);
	if (o.only & 4)
		report_recovery(doc, &rec);
	double load1 = loadavg();
	json_object_set_new(doc, "wall_seconds", json_real(wall_s));
	json_object_set_new(doc, "loadavg_1min_start", json_real(load0));
	json_object_set_new(doc, "loadavg_1min_end", json_real(load1));
	if (!o.b.json)
		printf("\nwall time %.1f s (the cluster's start included, its stop not); load average %.2f "
		       "before, "
		       "%.2f after\n\n",
		       wall_s, load0, load1);
	bench_json_print(doc);
	if (o.out &&
	    json_dump_file(doc, o.out, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6)) != 0)
		fail("writing %s", o.out);
	json_decref(doc);
	return 0;
}
#endif
