/* The supervisor (workers/supervise.c) with real processes: a master forked
 * from this test runs shmsync_supervise; its workers attach over the
 * connection it made for them, write their pid and count their commits in
 * the state; this test attaches beside them and watches the state, the
 * master's log and /proc.
 *
 *   start: every worker attaches (over $SHMSYNC_ATTACH_FD), is a child of
 *          the master, and cannot write the root segment (EPERM)
 *   kill -9 a worker: it is restarted while the others keep committing
 *   SIGHUP: every worker is replaced, at least N-1 attached throughout,
 *           and the state survives
 *   kill -9 the root: it and every worker are restarted; the state is gone
 *   SIGTERM: the master returns 0, every final commit was acknowledged, no
 *           process is left
 *   a slot that crashes at start: a crash loop, reported, not restarted;
 *           the others serve on; all slots crashing: the master returns
 *           -ECHILD
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmsync.h"
#include "testutil.h"

#define SEC 1000000000LL

static char dir[64], sock[96], logpath[96];
static int log_fd = -1;

struct cfg {
	unsigned workers;
	int crash_index; /* this slot returns 3 at once; -2: every slot does */
	bool private_socket;
	unsigned crash_limit;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the worker (runs under the supervisor) ---------------------------------- */

static volatile sig_atomic_t term;

static void on_term(int sig)
{
	(void)sig;
	term = 1;
}

static int commit(shmsync_worker *w, shmsync_batch *b)
{
	uint64_t seq, tick;
	int rc = shmsync_export(b, 0, &seq);
	if (rc < 0)
		return rc;
	return shmsync_wait_committed(w, seq, &tick, 10 * SEC);
}

static void mkdir_ok(shmsync_worker *w, const char *d)
{
	shmsync_batch *b;
	if (shmsync_begin(w, &b) < 0 || shmsync_mkdir(b, d) < 0)
		_exit(5);
	int rc = commit(w, b);
	if (rc < 0 && rc != -EEXIST)
		_exit(5);
}

static int put_str(shmsync_worker *w, const char *d, const char *k, const char *v)
{
	shmsync_batch *b;
	int rc = shmsync_begin(w, &b);
	if (rc < 0)
		return rc;
	rc = shmsync_put(b, d, k, strlen(k), v, strlen(v));
	if (rc < 0) {
		shmsync_abort(b);
		return rc;
	}
	return commit(w, b);
}

/* Can this worker write the root segment? It maps the segment read-only
 * (after attach it keeps no fd of it); through that mapping's file, opened
 * again by /proc/self/map_files (read-write where the kernel lets us), a
 * writable shared mapping must fail with EPERM (F_SEAL_FUTURE_WRITE), and
 * the mapping itself cannot be made writable. */
static const char *segment_check(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return "NOPROC";
	const char *res = "NOMAP";
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		if (!strstr(line, "memfd:shmsync-root"))
			continue;
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		if (mprotect((void *)lo, 4096, PROT_READ | PROT_WRITE) == 0 || errno != EACCES) {
			res = "WRITABLE";
			break;
		}
		char p[96];
		snprintf(p, sizeof(p), "/proc/self/map_files/%lx-%lx", lo, hi);
		int fd = open(p, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			int err = errno;
			close(fd);
			if (m != MAP_FAILED || (err != EPERM && err != EACCES)) {
				res = "WRITABLE";
				break;
			}
		}
		res = "EPERM";
	}
	fclose(f);
	return res;
}

static int worker_fn(unsigned index, void *arg)
{
	const struct cfg *c = arg;
	if (c->crash_index == -2 || (int)index == c->crash_index)
		return 3;
	struct sigaction sa = {.sa_handler = on_term};
	sigaction(SIGTERM, &sa, NULL);
	const char *ix = getenv("SHMSYNC_WORKER_INDEX");
	if (!ix || (unsigned)atoi(ix) != index || !getenv("SHMSYNC_ATTACH_FD") || !getenv("SHMSYNC_SOCKET"))
		return 6;
	shmsync_worker *w;
	char err[256] = "";
	int rc = shmsync_attach_msg(&w, NULL, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "worker %u: attach: %s: %s\n", index, shmsync_strerror(rc), err);
		return 4;
	}
	mkdir_ok(w, "/workers/");
	mkdir_ok(w, "/count/");
	mkdir_ok(w, "/wr/");
	mkdir_ok(w, "/bye/");
	char k[16], v[32];
	snprintf(k, sizeof(k), "%u", index);
	snprintf(v, sizeof(v), "%d", (int)getpid());
	if (put_str(w, "/wr/", k, segment_check()) < 0 || put_str(w, "/workers/", k, v) < 0)
		return 5;
	while (!term) {
		shmsync_batch *b;
		if (shmsync_begin(w, &b) < 0 || shmsync_add(b, "/count/", k, strlen(k), 1) < 0)
			return 5;
		rc = commit(w, b);
		if (rc < 0 && !term)
			return 5;
		shmsync_import_next(w, 0, NULL, NULL);
		usleep(10000);
	}
	/* Stopping: the root still runs, so this last commit is acknowledged. */
	rc = put_str(w, "/bye/", k, "bye");
	shmsync_detach(w);
	return rc < 0 ? 7 : 0;
}

/* ---- the master (a child of the test) ------------------------------------------ */

static void log_line(const char *msg, void *arg)
{
	(void)arg;
	char line[700];
	int n = snprintf(line, sizeof(line), "%s\n", msg);
	if (write(log_fd, line, (size_t)n) < 0) {
		/* the test reads the file: nothing better to do */
	}
}

/* Children of this process, from /proc: -1 if the kernel does not say. */
static int count_children(void)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/self/task/%d/children", (int)getpid());
	FILE *f = fopen(p, "r");
	if (!f)
		return -1;
	int n = 0, pid;
	while (fscanf(f, "%d", &pid) == 1)
		n++;
	fclose(f);
	return n;
}

static pid_t start_master(struct cfg *c)
{
	log_fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	T_ASSERT(log_fd >= 0);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		shmsync_supervise_opts o = {0};
		char err[256] = "";
		o.workers = c->workers;
		o.socket_path = c->private_socket ? NULL : sock;
		o.root.capacity = (size_t)256 << 20;
		o.grace_ns = 3 * SEC;
		o.crash_limit = c->crash_limit;
		o.log = log_line;
		o.errbuf = err;
		o.errbuf_len = sizeof(err);
		int rc = shmsync_supervise(&o, worker_fn, c);
		char m[400];
		snprintf(m, sizeof(m), "TEST: supervise returned %d (%s)", rc, err);
		log_line(m, NULL);
		int left = count_children();
		if (left > 0) {
			snprintf(m, sizeof(m), "TEST: %d children left", left);
			log_line(m, NULL);
			_exit(10);
		}
		_exit(rc == 0 ? 0 : rc == -ECHILD ? 20 : 30);
	}
	close(log_fd);
	return pid;
}

/* The master's exit code, waiting at most secs. */
static int wait_master(pid_t pid, double secs)
{
	double end = now_s() + secs;
	int status;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		T_ASSERT(r >= 0);
		if (r == pid)
			break;
		if (now_s() > end) {
			kill(pid, SIGKILL);
			T_FAIL("the master did not exit within %.0f s", secs);
		}
		usleep(10000);
	}
	if (WIFSIGNALED(status))
		T_FAIL("the master died by signal %d", WTERMSIG(status));
	return WEXITSTATUS(status);
}

static char *read_log(void)
{
	static char buf[1 << 20];
	int fd = open(logpath, O_RDONLY | O_CLOEXEC);
	T_ASSERT(fd >= 0);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return buf;
}

static unsigned count_in_log(const char *needle)
{
	unsigned n = 0;
	for (const char *p = read_log(); (p = strstr(p, needle)); p++)
		n++;
	return n;
}

static bool wait_log(const char *needle, double secs)
{
	double end = now_s() + secs;
	while (now_s() < end) {
		if (strstr(read_log(), needle))
			return true;
		usleep(20000);
	}
	return false;
}

static void dump_log(void)
{
	fprintf(stderr, "---- the master's log ----\n%s--------\n", read_log());
}

#define CHECK(cond)                                                                                          \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			dump_log();                                                                          \
			T_FAIL("assertion failed: %s", #cond);                                               \
		}                                                                                            \
	} while (0)

/* ---- the test's own view, as a worker beside them ------------------------------ */

static shmsync_worker *attach_retry(const char *path)
{
	double end = now_s() + 15;
	for (;;) {
		shmsync_worker *w;
		char err[256] = "";
		int rc = shmsync_attach_msg(&w, path, err, sizeof(err));
		if (rc == 0)
			return w;
		if (now_s() > end) {
			dump_log();
			T_FAIL("attach %s: %s: %s", path, shmsync_strerror(rc), err);
		}
		usleep(20000);
	}
}

/* Moves to the newest state; -ESHUTDOWN if the root is gone. The handle
 * goes offline after, so it never pins anything (the default stall policy
 * under the supervisor kills what does). */
static int refresh(shmsync_worker *w)
{
	/* import_until the cursor's tick brings it online again (an
	 * import_next that finds nothing new leaves an offline handle offline). */
	int rc = shmsync_import_until(w, shmsync_cursor(w), 0, NULL, NULL);
	while (rc >= 0)
		rc = shmsync_import_next(w, 0, NULL, NULL);
	return rc == -ETIMEDOUT ? 0 : rc;
}

static pid_t get_pid(shmsync_worker *w, unsigned i)
{
	char k[16], v[32];
	snprintf(k, sizeof(k), "%u", i);
	shmsync_view view;
	if (shmsync_get(w, "/workers/", k, strlen(k), &view) < 0 || view.len >= sizeof(v))
		return 0;
	memcpy(v, view.data, view.len);
	v[view.len] = 0;
	return (pid_t)atoi(v);
}

static int64_t get_count(shmsync_worker *w, unsigned i)
{
	char k[16];
	snprintf(k, sizeof(k), "%u", i);
	shmsync_view view;
	int64_t c = 0;
	if (shmsync_get(w, "/count/", k, strlen(k), &view) < 0 || view.len != 8)
		return -1;
	memcpy(&c, view.data, 8);
	return c;
}

static bool alive(pid_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH);
}

static pid_t parent_of(pid_t pid)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return -1;
	char buf[512];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *rp = strrchr(buf, ')');
	int ppid = -1;
	if (!rp || sscanf(rp + 2, "%*c %d", &ppid) != 1)
		return -1;
	return (pid_t)ppid;
}

/* Waits until every slot in want has a live pid different from avoid[i]
 * (0: any); fills pids. */
static void wait_pids(shmsync_worker **w, const char *path, unsigned n, const pid_t *avoid, pid_t *pids,
		      double secs, const char *what)
{
	double end = now_s() + secs;
	for (;;) {
		if (refresh(*w) == -ESHUTDOWN) {
			shmsync_detach(*w);
			*w = attach_retry(path);
			continue;
		}
		unsigned ok = 0;
		for (unsigned i = 0; i < n; i++) {
			pids[i] = get_pid(*w, i);
			if (pids[i] > 0 && alive(pids[i]) && (!avoid || pids[i] != avoid[i]))
				ok++;
		}
		shmsync_offline(*w);
		if (ok == n)
			return;
		if (now_s() > end) {
			dump_log();
			T_FAIL("%s: not every worker attached within %.0f s (%u of %u)", what, secs, ok, n);
		}
		usleep(20000);
	}
}

static int64_t count_now(shmsync_worker *w, unsigned i)
{
	T_OK(refresh(w));
	int64_t c = get_count(w, i);
	shmsync_offline(w);
	return c;
}

/* Attached workers other than this test, as the root last published them. */
static unsigned attached_now(shmsync_worker *w)
{
	shmsync_worker_info info[64];
	int n = shmsync_workers(w, info, 64);
	T_ASSERT(n >= 0 && n <= 64);
	unsigned k = 0;
	for (int i = 0; i < n; i++)
		if (info[i].pid != getpid())
			k++;
	return k;
}

#define MAXSEEN 256
static pid_t seen[MAXSEEN];
static unsigned nseen;

static void remember(const pid_t *pids, unsigned n)
{
	for (unsigned i = 0; i < n && nseen < MAXSEEN; i++)
		seen[nseen++] = pids[i];
}

static pid_t root_pid_from_log(unsigned nth)
{
	const char *p = read_log();
	pid_t pid = 0;
	for (unsigned k = 0; k < nth; k++) {
		p = strstr(p, "root pid ");
		if (!p)
			return 0;
		p += 9;
		int v;
		if (sscanf(p, "%d serves", &v) == 1 && strncmp(strchr(p, ' '), " serves", 7) == 0)
			pid = v;
		else
			k--;
	}
	return pid;
}

/* ---- scenarios ------------------------------------------------------------------ */

static void main_scenario(void)
{
	enum { N = 3 };
	struct cfg c = {.workers = N, .crash_index = -1};
	pid_t master = start_master(&c);
	shmsync_worker *w = attach_retry(sock);
	pid_t pids[N], before[N];

	/* Start: each worker attached over the supervisor's connection, is a
	 * child of the master, and cannot write the segment. */
	wait_pids(&w, sock, N, NULL, pids, 20, "start");
	remember(pids, N);
	T_OK(refresh(w));
	for (unsigned i = 0; i < N; i++) {
		CHECK(parent_of(pids[i]) == master);
		char k[8];
		snprintf(k, sizeof(k), "%u", i);
		shmsync_view v;
		T_OK(shmsync_get(w, "/wr/", k, strlen(k), &v));
		if (v.len != 5 || memcmp(v.data, "EPERM", 5) != 0)
			T_FAIL("worker %u: the root segment check said %.*s", i, (int)v.len,
			       (const char *)v.data);
	}
	shmsync_offline(w);
	printf("start: %d workers attached, children of the master, segment not writable\n", N);

	/* A key the SIGHUP restart must keep. */
	{
		shmsync_batch *b;
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_mkdir(b, "/keep/"));
		T_OK(shmsync_put(b, "/keep/", "k", 1, "v", 1));
		T_OK(commit(w, b));
	}

	/* kill -9 one worker: restarted; the others keep committing. */
	int64_t c0 = count_now(w, 0), c2 = count_now(w, 2);
	memcpy(before, pids, sizeof(pids));
	T_OK(kill(pids[1], SIGKILL));
	pid_t avoid[N] = {0, before[1], 0};
	wait_pids(&w, sock, N, avoid, pids, 20, "kill -9");
	remember(pids, N);
	CHECK(pids[0] == before[0] && pids[2] == before[2]);
	CHECK(parent_of(pids[1]) == master);
	CHECK(count_now(w, 0) > c0 && count_now(w, 2) > c2);
	CHECK(count_in_log("worker 1 pid") >= 2);
	printf("kill -9: worker 1 restarted (pid %d -> %d), the others kept committing\n", (int)before[1],
	       (int)pids[1]);

	/* SIGHUP: every worker replaced, one at a time; the state stays. */
	memcpy(before, pids, sizeof(pids));
	T_OK(refresh(w));
	CHECK(attached_now(w) == N);
	shmsync_offline(w);
	T_OK(kill(master, SIGHUP));
	unsigned min_attached = N;
	double end = now_s() + 40;
	for (;;) {
		T_OK(refresh(w));
		unsigned a = attached_now(w);
		if (a < min_attached)
			min_attached = a;
		unsigned changed = 0;
		for (unsigned i = 0; i < N; i++) {
			pids[i] = get_pid(w, i);
			changed += pids[i] != before[i] && alive(pids[i]);
		}
		shmsync_offline(w);
		if (changed == N && strstr(read_log(), "SIGHUP restart done"))
			break;
		if (now_s() > end) {
			dump_log();
			T_FAIL("SIGHUP: %u of %d workers replaced", changed, N);
		}
		usleep(5000);
	}
	remember(pids, N);
	CHECK(min_attached >= N - 1);
	T_OK(refresh(w));
	shmsync_view v;
	T_OK(shmsync_get(w, "/keep/", "k", 1, &v));
	CHECK(v.len == 1 && memcmp(v.data, "v", 1) == 0);
	shmsync_offline(w);
	CHECK(!strstr(read_log(), "crash loop"));
	printf("SIGHUP: every worker replaced, at least %u of %d attached throughout, the state kept\n",
	       min_attached, N);

	/* kill -9 the root: restarted, the workers with it, the state gone. */
	pid_t root = root_pid_from_log(1);
	CHECK(root > 0 && parent_of(root) == master);
	memcpy(before, pids, sizeof(pids));
	T_OK(kill(root, SIGKILL));
	CHECK(wait_log("restarting the root", 10));
	pid_t all[N] = {before[0], before[1], before[2]};
	wait_pids(&w, sock, N, all, pids, 30, "root restart");
	remember(pids, N);
	pid_t root2 = root_pid_from_log(2);
	CHECK(root2 > 0 && root2 != root && parent_of(root2) == master);
	T_OK(refresh(w));
	CHECK(shmsync_get(w, "/keep/", "k", 1, &v) == -ENOENT);
	shmsync_offline(w);
	printf("kill -9 the root: root pid %d -> %d, every worker restarted, the state is gone\n", (int)root,
	       (int)root2);
	seen[nseen++] = root;
	seen[nseen++] = root2;
	shmsync_detach(w);

	/* SIGTERM: everything stops in order, the master returns 0. */
	double t0 = now_s();
	T_OK(kill(master, SIGTERM));
	int code = wait_master(master, 30);
	if (code != 0) {
		dump_log();
		T_FAIL("the master exited %d after SIGTERM", code);
	}
	for (unsigned i = 0; i < nseen; i++)
		if (alive(seen[i])) {
			dump_log();
			T_FAIL("pid %d outlived the master", (int)seen[i]);
		}
	const char *log = read_log();
	CHECK(strstr(log, "TEST: supervise returned 0"));
	/* Since SIGTERM: every worker's last commit was acknowledged (else
	 * it exits 7), then it exited 0. */
	const char *since = strstr(log, "SIGTERM: stopping");
	CHECK(since && !strstr(since, "status 7"));
	unsigned clean = 0;
	for (const char *q = since; (q = strstr(q, "stopped: exited with status 0")); q++)
		clean++;
	CHECK(clean == N + 1); /* the workers and the root */
	CHECK(strstr(log, "root restarts 1,"));
	struct stat st;
	CHECK(stat(sock, &st) < 0 && errno == ENOENT);
	printf("SIGTERM: the master returned 0 after %.2f s, every last commit acknowledged, no process "
	       "left\n",
	       now_s() - t0);
}

/* The socket path of a private directory, from the master's log. */
static void private_path(char *out, size_t len)
{
	CHECK(wait_log("starting a root on ", 10));
	const char *p = strstr(read_log(), "starting a root on ") + strlen("starting a root on ");
	size_t n = strcspn(p, " ");
	T_ASSERT(n < len);
	memcpy(out, p, n);
	out[n] = 0;
}

static void crash_loop_scenario(void)
{
	enum { N = 3 };
	struct cfg c = {.workers = N, .crash_index = 2, .private_socket = true, .crash_limit = 3};
	pid_t master = start_master(&c);
	char path[128];
	private_path(path, sizeof(path));
	CHECK(strstr(path, "/shmsync-") && strstr(path, "/root.sock"));
	shmsync_worker *w = attach_retry(path);
	pid_t pids[N - 1];
	wait_pids(&w, path, N - 1, NULL, pids, 20, "crash loop");
	CHECK(wait_log("worker 2: crash loop", 15));
	unsigned starts = count_in_log("worker 2 pid");
	int64_t c0 = count_now(w, 0);
	usleep(1500000);
	CHECK(count_in_log("worker 2 pid") == starts); /* not restarted any more */
	CHECK(count_in_log("worker 2: crash loop") == 1);
	CHECK(count_now(w, 0) > c0); /* the others serve on */
	for (unsigned i = 0; i < N - 1; i++)
		CHECK(alive(pids[i]) && parent_of(pids[i]) == master);
	shmsync_detach(w);
	T_OK(kill(master, SIGTERM));
	CHECK(wait_master(master, 30) == 0);
	for (unsigned i = 0; i < N - 1; i++)
		CHECK(!alive(pids[i]));
	/* The private directory is gone with the socket. */
	char *slash = strrchr(path, '/');
	*slash = 0;
	struct stat st;
	CHECK(stat(path, &st) < 0 && errno == ENOENT);
	printf("crash loop: worker 2 reported once (%u log lines about it) and not restarted; the others "
	       "served on; private directory removed\n",
	       starts);
}

static void all_crash_scenario(void)
{
	struct cfg c = {.workers = 2, .crash_index = -2, .crash_limit = 3};
	double t0 = now_s();
	pid_t master = start_master(&c);
	int code = wait_master(master, 30);
	if (code != 20) {
		dump_log();
		T_FAIL("the master exited %d, expected 20 (-ECHILD: every slot crash-looped)", code);
	}
	CHECK(count_in_log(": crash loop:") == 2);
	printf("every slot crashing: the master returned -ECHILD after %.2f s, no child left\n",
	       now_s() - t0);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/shmsync-sup-%d", (int)getpid());
	T_OK(mkdir(dir, 0700));
	snprintf(sock, sizeof(sock), "%s/root.sock", dir);
	snprintf(logpath, sizeof(logpath), "%s/master.log", dir);
	setvbuf(stdout, NULL, _IOLBF, 0);
	main_scenario();
	crash_loop_scenario();
	all_crash_scenario();
	unlink(logpath);
	rmdir(dir);
	printf("supervise: ok\n");
	return 0;
}
