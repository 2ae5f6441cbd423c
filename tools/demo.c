/* shmsync demo: a root and N worker processes under a mixed load, a live
 * progress line, then a report and a convergence check.
 *
 * Processes: the demo's parent forks the root first (it never holds the root
 * itself, so the workers it forks afterwards inherit nothing of it), then N
 * workers. They coordinate through one anonymous shared mapping made before
 * any fork: the parent moves a phase word forward, each worker publishes its
 * counters and results in its own slot.
 *
 * Each worker keeps a replica of the whole state built from the change feed
 * alone (a snapshot at attach, then every import), and at the end compares
 * it with a snapshot read of the root context at the final tick: both, and
 * every other worker's, must hash the same.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "demo.h"
#include "shmsync.h"
#include "tool.h"

struct shared *sh;
pid_t parent_pid;

/* ---- the root's process -------------------------------------------------------- */

static shmsync_root *root;

static void on_root_term(int sig)
{
	(void)sig;
	if (root)
		shmsync_root_stop(root);
}

/* ready: the write end of a pipe; one byte on it says the root listens. */
static int root_main(const struct opts *o, int ready)
{
	char err[512] = "";
	shmsync_root_opts ro = {0};
	ro.socket_path = o->socket;
	ro.capacity = o->capacity;
	ro.max_workers = o->workers + 4;
	ro.errbuf = err;
	ro.errbuf_len = sizeof(err);
	int rc = shmsync_root_open(&root, &ro);
	if (rc < 0) {
		if (rc == -EADDRINUSE)
			tool_err("a root already serves %s", o->socket);
		else
			tool_err("cannot start the root: %s", err[0] ? err : shmsync_strerror(rc));
		return rc == -EINVAL ? TOOL_USAGE : TOOL_FAIL;
	}
	struct sigaction sa = {0};
	sa.sa_handler = on_root_term;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	if (write(ready, "r", 1) != 1) {
		tool_err("telling the demo the root is ready: %s", strerror(errno));
		shmsync_root_close(root);
		return TOOL_FAIL;
	}
	close(ready);
	rc = shmsync_root_run(root);
	shmsync_root_close(root);
	if (rc < 0) {
		tool_err("the root's loop failed: %s", shmsync_strerror(rc));
		return TOOL_FAIL;
	}
	return TOOL_OK;
}

/* ---- the parent ---------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;
static bool mid_line; /* the progress line is on stderr, unterminated */

/* A message from the parent starts on a line of its own. */
static void end_progress(void)
{
	if (mid_line)
		fputc('\n', stderr);
	mid_line = false;
}

static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

struct run {
	const struct opts *o;
	pid_t root_pid;
	pid_t pids[MAX_WORKERS];
	bool root_exited;
	int root_status;
	unsigned exited;
	bool failed;
};

/* Forks; the child gets sig when the parent dies (a demo interrupted hard
 * leaves nothing behind) and ignores SIGINT. Returns fork's value. */
static pid_t spawn(int sig_on_parent_death)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, sig_on_parent_death);
	if (getppid() != parent_pid)
		_exit(1);
	/* Ctrl-C reaches the whole process group: the parent alone decides
	 * what it means (stop early, then report). */
	signal(SIGINT, SIG_IGN);
	return 0;
}

/* Reaps children that exited. Any exit before PH_EXIT is a failure, named
 * once. Returns false once something failed. */
static bool check_children(struct run *r)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		end_progress();
		if (pid == r->root_pid) {
			r->root_exited = true;
			r->root_status = status;
			if (!r->failed)
				tool_err("the root exited early (%s %d)",
					 WIFSIGNALED(status) ? "signal" : "status",
					 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
			r->failed = true;
			continue;
		}
		for (unsigned i = 0; i < r->o->workers; i++) {
			if (r->pids[i] != pid)
				continue;
			r->pids[i] = 0;
			r->exited++;
			bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
				  atomic_load(&sh->phase) == PH_EXIT;
			if (!ok && !r->failed) {
				if (atomic_load_explicit(&sh->w[i].state, memory_order_acquire) == WS_FAILED)
					tool_err("%s", sh->w[i].err);
				else
					tool_err("worker %u exited early (%s %d)", i,
						 WIFSIGNALED(status) ? "signal" : "status",
						 WIFSIGNALED(status) ? WTERMSIG(status)
								     : WEXITSTATUS(status));
			}
			if (!ok)
				r->failed = true;
		}
	}
	return !r->failed;
}

static bool all_workers(unsigned n, int state)
{
	for (unsigned i = 0; i < n; i++)
		if (atomic_load_explicit(&sh->w[i].state, memory_order_acquire) < state)
			return false;
	return true;
}

/* Waits until every worker reached state (or flag is set), watching the
 * children. */
static bool wait_workers(struct run *r, int state, _Atomic int *flag, const char *what)
{
	int64_t deadline = tool_now_ns() + (int64_t)(PHASE_TIMEOUT_S * 1e9);
	for (;;) {
		if (!check_children(r))
			return false;
		if (flag ? atomic_load_explicit(flag, memory_order_acquire) != 0
			 : all_workers(r->o->workers, state))
			return true;
		if (tool_now_ns() > deadline) {
			end_progress();
			tool_err("timed out waiting for the workers to %s", what);
			r->failed = true;
			return false;
		}
		sleep_ns(1000000);
	}
}

static void stats_sum(unsigned n, uint64_t *commits, uint64_t *updates, uint64_t *tick)
{
	*commits = *updates = *tick = 0;
	for (unsigned i = 0; i < n; i++) {
		*commits += atomic_load_explicit(&sh->w[i].commits, memory_order_relaxed);
		*updates += atomic_load_explicit(&sh->w[i].updates, memory_order_relaxed);
		uint64_t t = atomic_load_explicit(&sh->w[i].last_tick, memory_order_relaxed);
		if (t > *tick)
			*tick = t;
	}
}

static bool run_load(struct run *r, double *elapsed)
{
	int64_t start = tool_now_ns(), end = start + (int64_t)(r->o->seconds * 1e9);
	uint64_t last_commits = 0;
	int64_t last_t = start;
	atomic_store_explicit(&sh->phase, PH_RUN, memory_order_release);
	for (;;) {
		int64_t now = tool_now_ns();
		if (now >= end || interrupted)
			break;
		int64_t next = last_t + 500000000;
		sleep_ns((next < end ? next : end) - now);
		if (!check_children(r))
			return false;
		now = tool_now_ns();
		uint64_t commits, updates, tick;
		stats_sum(r->o->workers, &commits, &updates, &tick);
		double dt = (double)(now - last_t) * 1e-9;
		fprintf(stderr,
			"\r%6.1f s  %10" PRIu64 " commits  %9.0f commits/s  %11" PRIu64
			" updates  tick %-10" PRIu64,
			(double)(now - start) * 1e-9, commits,
			dt > 0 ? (double)(commits - last_commits) / dt : 0.0, updates, tick);
		fflush(stderr);
		mid_line = true;
		last_commits = commits;
		last_t = now;
	}
	*elapsed = (double)(tool_now_ns() - start) * 1e-9;
	end_progress();
	atomic_store_explicit(&sh->phase, PH_STOP, memory_order_release);
	return true;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static const char *fmt_ns(char *buf, size_t len, int64_t ns)
{
	if (ns < 10000)
		snprintf(buf, len, "%.1f us", (double)ns / 1e3);
	else if (ns < 10000000)
		snprintf(buf, len, "%.0f us", (double)ns / 1e3);
	else
		snprintf(buf, len, "%.1f ms", (double)ns / 1e6);
	return buf;
}

/* The report; returns whether every check passed. */
static bool report(struct run *r, double elapsed)
{
	unsigned n = r->o->workers;
	uint64_t commits, updates, tick, dels = 0, rmdirs = 0, resets = 0, nsamples = 0;
	int64_t deltas = 0;
	stats_sum(n, &commits, &updates, &tick);
	for (unsigned i = 0; i < n; i++) {
		dels += sh->w[i].dels;
		rmdirs += sh->w[i].rmdirs;
		resets += sh->w[i].resets;
		deltas += sh->w[i].delta_sum;
		nsamples += sh->w[i].nsamples;
	}
	int64_t *all = malloc((nsamples ? nsamples : 1) * sizeof(*all));
	if (!all) {
		tool_err("out of memory");
		return false;
	}
	size_t m = 0;
	for (unsigned i = 0; i < n; i++) {
		memcpy(all + m, sh->w[i].samples, sh->w[i].nsamples * sizeof(*all));
		m += sh->w[i].nsamples;
	}
	qsort(all, m, sizeof(*all), cmp_i64);
	char b1[32], b2[32];
	printf("shmsync demo: %u worker%s for %.1f s, signal %s (root), %s (workers)\n", n, n == 1 ? "" : "s",
	       elapsed, sh->root_signal, sh->worker_signal);
	printf("  commits       %" PRIu64 " (%.0f/s)\n", commits, (double)commits / elapsed);
	printf("  updates       %" PRIu64 " (%.0f/s)\n", updates, (double)updates / elapsed);
	if (m)
		printf("  propagation   p50 %s, p99 %s (export to import in another worker, %zu samples)\n",
		       fmt_ns(b1, sizeof(b1), all[m / 2]), fmt_ns(b2, sizeof(b2), all[m * 99 / 100]), m);
	else
		printf("  propagation   no samples (one worker has no one to tell)\n");
	free(all);
	printf("  bytes in use  %s at start, ", tool_bytes(b1, sizeof(b1), sh->bytes_start));
	printf("%s at end (capacity %s)\n", tool_bytes(b1, sizeof(b1), sh->bytes_end),
	       tool_bytes(b2, sizeof(b2), sh->capacity));
	uint64_t created = dels + rmdirs,
		 grew = sh->tomb_end > sh->tomb_start ? sh->tomb_end - sh->tomb_start : 0;
	printf("  tombstones    %" PRIu64 " created (%" PRIu64 " dels, %" PRIu64 " rmdirs), %" PRIu64
	       " freed, %" PRIu64 " live at end\n",
	       created, dels, rmdirs, created - (grew < created ? grew : created), sh->tomb_end);
	printf("  reclaimed     %" PRIu64 " objects\n", sh->reclaimed_end - sh->reclaimed_start);

	bool ok = true;
	const struct wres *w0 = &sh->w[0];
	for (unsigned i = 0; i < n; i++) {
		const struct wres *w = &sh->w[i];
		if (w->final_cursor != sh->final_tick || w->snap_hash != w0->snap_hash ||
		    w->replica_hash != w->snap_hash) {
			printf("  worker %u      tick %" PRIu64 ", snapshot %016" PRIx64
			       ", from its imports %016" PRIx64 "\n",
			       i, w->final_cursor, w->snap_hash, w->replica_hash);
			ok = false;
		}
	}
	if (w0->counter_sum != deltas) {
		printf("  counters      sum %" PRId64 ", but the workers added %" PRId64 "\n",
		       w0->counter_sum, deltas);
		ok = false;
	} else {
		printf("  counters      %d counters sum to %" PRId64 ", what the workers added\n", COUNTERS,
		       deltas);
	}
	if (ok)
		printf("  converged     all %u worker%s at tick %" PRIu64 ", state %016" PRIx64 " (%" PRIu64
		       " directories, %" PRIu64 " keys), the same from their imports (%" PRIu64 " resets)\n",
		       n, n == 1 ? "" : "s", sh->final_tick, w0->snap_hash, w0->ndirs, w0->nkeys, resets);
	else
		printf("  NOT converged: the workers disagree (see above)\n");
	fflush(stdout);
	return ok;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shmsync demo [OPTIONS]\n\n"
		"Starts a root and N workers running a mixed load (puts, counter adds, dels,\n"
		"mkdir/rmdir churn of session directories, imports) with a live progress line,\n"
		"then reports commits/s, updates/s, export-to-import propagation, memory and\n"
		"tombstones, and checks that every worker ended on the same tick with the same\n"
		"state, the state its own imports built. Exits 1 if not.\n\n"
		"Options:\n"
		"  -n, --workers N       worker processes, 1..%d (default: the number of CPUs, at least 2)\n"
		"  -d, --seconds S       how long the load runs, 0.1..86400 (default 5)\n"
		"  -s, --socket PATH     the root's socket (default: a temporary path in /tmp)\n"
		"  -c, --capacity SIZE   the root's address space, e.g. 256M (default: from limits,\n"
		"                        $SHMSYNC_CAPACITY)\n"
		"  -h, --help            this help\n",
		MAX_WORKERS);
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{"workers", required_argument, NULL, 'n'}, {"seconds", required_argument, NULL, 'd'},
		{"socket", required_argument, NULL, 's'},  {"capacity", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
	};
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned long long u;
	int opt;
	o->workers = cpus < 2 ? 2 : cpus > MAX_WORKERS ? MAX_WORKERS : (unsigned)cpus;
	o->seconds = 5;
	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, ":n:d:s:c:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (tool_parse_uint("--workers", optarg, 1, MAX_WORKERS, &u) < 0)
				return TOOL_USAGE;
			o->workers = (unsigned)u;
			break;
		case 'd':
			if (tool_parse_seconds("--seconds", optarg, 0.1, 86400, &o->seconds) < 0)
				return TOOL_USAGE;
			break;
		case 's':
			o->socket = optarg;
			break;
		case 'c':
			if (tool_parse_size("--capacity", optarg, &o->capacity) < 0)
				return TOOL_USAGE;
			break;
		case 'h':
			usage(stdout);
			return TOOL_OK;
		case ':':
			tool_err("option '%s' needs a value (see shmsync demo --help)", argv[optind - 1]);
			return TOOL_USAGE;
		default:
			tool_err("unknown option '%s' (see shmsync demo --help)", argv[optind - 1]);
			return TOOL_USAGE;
		}
	}
	if (optind < argc) {
		tool_err("unexpected argument '%s' (see shmsync demo --help)", argv[optind]);
		return TOOL_USAGE;
	}
	/* The demo starts its own root, so it does not default to
	 * $SHMSYNC_SOCKET, where another root may be serving. */
	if (o->socket && tool_socket(o->socket, &o->socket) < 0)
		return TOOL_USAGE;
	return -1;
}

/* Stops everything that still runs, politely first. */
static void shut_down(struct run *r)
{
	atomic_store_explicit(&sh->phase, PH_EXIT, memory_order_release);
	int64_t deadline = tool_now_ns() + 10000000000LL;
	while (r->exited < r->o->workers && tool_now_ns() < deadline) {
		check_children(r);
		if (r->exited < r->o->workers)
			sleep_ns(1000000);
	}
	for (unsigned i = 0; i < r->o->workers; i++)
		if (r->pids[i] > 0) {
			kill(r->pids[i], SIGKILL);
			waitpid(r->pids[i], NULL, 0);
			r->pids[i] = 0;
		}
	if (r->root_pid > 0 && !r->root_exited) {
		kill(r->root_pid, SIGTERM);
		deadline = tool_now_ns() + 10000000000LL;
		int status = 0;
		pid_t got;
		while ((got = waitpid(r->root_pid, &status, WNOHANG)) == 0 && tool_now_ns() < deadline)
			sleep_ns(1000000);
		if (got == 0) {
			tool_err("the root did not stop on SIGTERM: killed");
			kill(r->root_pid, SIGKILL);
			waitpid(r->root_pid, &status, 0);
			r->failed = true;
		} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			tool_err("the root failed when stopped (status %d)", status);
			r->failed = true;
		}
		r->root_exited = true;
	}
}

/* The root first, before anything holds it: the workers forked after it
 * inherit none of its mappings or descriptors. Readiness comes from the
 * root itself, not from the socket's path: with --socket the path may
 * belong to another root, whose workers the demo must not join. Returns -1
 * once the root listens, else the exit code. */
static int start_root(struct run *r, const struct opts *o)
{
	int ready[2];
	if (pipe2(ready, O_CLOEXEC) < 0) {
		tool_err("pipe: %s", strerror(errno));
		return TOOL_FAIL;
	}
	r->root_pid = spawn(SIGTERM);
	if (r->root_pid == 0) {
		close(ready[0]);
		_exit(root_main(o, ready[1]));
	}
	close(ready[1]);
	if (r->root_pid < 0) {
		close(ready[0]);
		tool_err("fork: %s", strerror(errno));
		return TOOL_FAIL;
	}
	struct pollfd pfd = {ready[0], POLLIN, 0};
	char byte;
	int polled;
	while ((polled = poll(&pfd, 1, 10000)) < 0 && errno == EINTR)
		;
	ssize_t got = polled > 0 ? read(ready[0], &byte, 1) : -1;
	close(ready[0]);
	if (got != 1) {
		int status = 0;
		if (polled == 0) {
			tool_err("the root did not start in 10 s");
			kill(r->root_pid, SIGKILL);
		}
		waitpid(r->root_pid, &status, 0);
		/* Otherwise it said why on stderr. */
		return WIFEXITED(status) && WEXITSTATUS(status) == TOOL_USAGE ? TOOL_USAGE : TOOL_FAIL;
	}
	return -1;
}

/* The phases, in order, each waited for; returns whether all passed. */
static bool run_phases(struct run *r, double *elapsed)
{
	const struct opts *o = r->o;
	bool ok = !r->failed && wait_workers(r, WS_READY, NULL, "attach");
	if (ok) {
		atomic_store_explicit(&sh->phase, PH_BASELINE, memory_order_release);
		ok = wait_workers(r, 0, &sh->baseline_done, "record the baseline");
	}
	ok = ok && run_load(r, elapsed) && wait_workers(r, WS_STOPPED, NULL, "stop");
	if (ok) {
		/* Nobody writes now: the last tick anyone committed or saw is
		 * the final one. */
		uint64_t final = 0;
		for (unsigned i = 0; i < o->workers; i++) {
			uint64_t t = atomic_load(&sh->w[i].last_tick);
			final = t > final ? t : final;
			final = sh->w[i].published_at_stop > final ? sh->w[i].published_at_stop : final;
		}
		sh->final_tick = final;
		atomic_store_explicit(&sh->phase, PH_CONVERGE, memory_order_release);
		ok = wait_workers(r, WS_CONVERGED, NULL, "converge");
	}
	if (ok) {
		atomic_store_explicit(&sh->phase, PH_SETTLE, memory_order_release);
		ok = wait_workers(r, 0, &sh->settle_done, "settle");
	}
	if (ok)
		ok = report(r, *elapsed);
	return ok;
}

int demo_main(int argc, char **argv)
{
	struct opts o = {0};
	int ret = parse(argc, argv, &o);
	if (ret >= 0)
		return ret;
	char tmp[64];
	bool temp_socket = !o.socket;
	if (temp_socket) {
		snprintf(tmp, sizeof(tmp), "/tmp/shmsync-demo-%d.sock", (int)getpid());
		o.socket = tmp;
	}
	size_t size = sizeof(struct shared) + o.workers * sizeof(struct wres);
	sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		tool_err("mmap of %zu bytes: %s", size, strerror(errno));
		return TOOL_FAIL;
	}
	parent_pid = getpid();
	fflush(NULL); /* nothing buffered is written twice by the children */

	struct run r = {.o = &o};
	if ((ret = start_root(&r, &o)) >= 0)
		return ret;

	struct sigaction sa = {0};
	sa.sa_handler = on_interrupt;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	for (unsigned i = 0; i < o.workers; i++) {
		pid_t pid = spawn(SIGKILL);
		if (pid == 0)
			_exit(worker_main(i, o.socket));
		if (pid < 0) {
			tool_err("fork: %s", strerror(errno));
			r.failed = true;
			break;
		}
		r.pids[i] = pid;
	}
	double elapsed = 0;
	bool ok = run_phases(&r, &elapsed);
	shut_down(&r);
	if (temp_socket)
		unlink(o.socket);
	munmap(sh, size);
	return ok && !r.failed ? TOOL_OK : TOOL_FAIL;
}
