/* What the replication tests share: a three-node NATS JetStream cluster on
 * loopback (scripts/nats-cluster.sh: every server started by it and stopped
 * by its pid), roots run as `shmsync serve` processes, workers that write
 * and record what was acked, and a hash of a root's whole state.
 *
 * The environment (set by tests/repl_*.cmake): SHMSYNC_TOOL, the shmsync
 * binary; NATS_CLUSTER, the script. No nats-server on PATH: exit 77. */
#ifndef SHMSYNC_REPL_SUPPORT_H
#define SHMSYNC_REPL_SUPPORT_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmsync.h"
#include "testutil.h"

struct rt {
	char dir[256];  /* everything of this test: the cluster, sockets, logs */
	char urls[256]; /* the cluster's */
	int base;       /* its ports */
};

static inline int64_t rt_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void rt_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static inline const char *rt_env(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v)
		T_FAIL("%s is not set (ctest sets it: tests/repl_*.cmake)", name);
	return v;
}

/* Runs the cluster script; its exit status. */
static inline int rt_cluster(struct rt *t, const char *verb, int node)
{
	char cmd[1024];
	if (node)
		snprintf(cmd, sizeof(cmd), "bash '%s' %s '%s/nats' %d", rt_env("NATS_CLUSTER"), verb, t->dir,
			 node);
	else if (strcmp(verb, "start") == 0)
		snprintf(cmd, sizeof(cmd), "bash '%s' start '%s/nats' %d", rt_env("NATS_CLUSTER"), t->dir,
			 t->base);
	else
		snprintf(cmd, sizeof(cmd), "bash '%s' %s '%s/nats'", rt_env("NATS_CLUSTER"), verb, t->dir);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static struct rt rt_current_copy; /* main's struct is gone when atexit runs */
static struct rt *rt_current;
static bool rt_passed;
static pid_t rt_children[64]; /* roots and writers: none outlives the test */
static int rt_nchildren;

static inline void rt_track(pid_t pid)
{
	if (rt_nchildren < 64)
		rt_children[rt_nchildren++] = pid;
}

/* Reaped: never to be signalled again (its pid may be reused). */
static inline void rt_untrack(pid_t pid)
{
	for (int i = 0; i < rt_nchildren; i++)
		if (rt_children[i] == pid)
			rt_children[i] = 0;
}

/* The cluster always stops; the directory (logs, stores) stays only when
 * the test failed, for a look. */
static inline void rt_cleanup(void)
{
	for (int i = 0; i < rt_nchildren; i++)
		if (rt_children[i] > 0 && kill(rt_children[i], SIGKILL) == 0)
			waitpid(rt_children[i], NULL, 0);
	if (!rt_current)
		return;
	rt_cluster(rt_current, "stop", 0);
	if (rt_passed) {
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", rt_current->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", rt_current->dir);
	} else {
		fprintf(stderr, "logs and stores kept in %s\n", rt_current->dir);
	}
}

static inline int rt_pass(void)
{
	rt_passed = true;
	printf("ok\n");
	return 0;
}

/* Are the nine ports of a cluster at `base` free on 127.0.0.1 (clients,
 * routes, monitors: base, +100, +200, three each)? */
static inline bool rt_ports_free(int base)
{
	for (int k = 0; k < 9; k++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return false;
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_port = htons((uint16_t)(base + 100 * (k / 3) + k % 3))};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		close(fd);
		if (!ok)
			return false;
	}
	return true;
}

/* A fresh directory and a running cluster; exits 77 without nats-server.
 * Each test has its own base port, so tests may run side by side; when
 * something else holds one of its ports (a cluster a killed run left
 * behind), it moves up by 37 until it finds nine free ones. */
static inline void rt_start(struct rt *t, const char *name, int base)
{
	if (system("command -v nats-server >/dev/null 2>&1") != 0) {
		fprintf(stderr, "SKIP: nats-server is not installed (bash scripts/deps.sh installs it)\n");
		exit(T_SKIP);
	}
	snprintf(t->dir, sizeof(t->dir), "/tmp/shmsync-%s-%d", name, (int)getpid());
	mkdir(t->dir, 0700);
	int tries = 0;
	while (!rt_ports_free(base) && tries++ < 40)
		base += 37;
	t->base = base;
	if (rt_cluster(t, "start", 0) != 0)
		T_FAIL("the NATS cluster did not start (see %s/nats/*.log)", t->dir);
	rt_current_copy = *t;
	rt_current = &rt_current_copy;
	atexit(rt_cleanup);
	snprintf(t->urls, sizeof(t->urls), "nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d",
		 base, base + 1, base + 2);
}

/* `shmsync serve -s DIR/<sock>.sock ARGS...` in its own process, stderr to
 * DIR/<sock>.log (appended). Returns its pid once the socket answers, or
 * -1 if the process exited first (its status in *status). */
static inline pid_t rt_serve(struct rt *t, const char *sock, const char *const *args, int64_t wait_ns,
			     int *status)
{
	char path[512], log[512];
	snprintf(path, sizeof(path), "%s/%s.sock", t->dir, sock);
	snprintf(log, sizeof(log), "%s/%s.log", t->dir, sock);
	const char *argv[40] = {rt_env("SHMSYNC_TOOL"), "serve", "-q", "-s", path};
	int n = 5;
	for (int i = 0; args && args[i] && n < 38; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		/* Not the test's stdout: ctest waits for every holder of it. */
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	rt_track(pid);
	int64_t end = rt_now_ns() + wait_ns;
	while (rt_now_ns() < end) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			rt_untrack(pid);
			if (status)
				*status = st;
			return -1;
		}
		shmsync_worker *w;
		if (access(path, F_OK) == 0 && shmsync_attach(&w, path) == 0) {
			shmsync_detach(w);
			return pid;
		}
		rt_sleep_ms(20);
	}
	T_FAIL("root %s did not answer within %.1f s (see %s)", sock, (double)wait_ns / 1e9, log);
}

static inline const char *rt_sock(struct rt *t, const char *sock, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s.sock", t->dir, sock);
	return buf;
}

/* Waits for a root to exit: its status, or -1 on timeout. */
static inline int rt_wait_exit(pid_t pid, int64_t wait_ns)
{
	int64_t end = rt_now_ns() + wait_ns;
	do {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			rt_untrack(pid);
			return st;
		}
		rt_sleep_ms(20);
	} while (rt_now_ns() < end);
	return -1;
}

/* SIGTERM, and the root must exit 0 (under the sanitizers, a leak or an
 * error report at exit would not). */
static inline void rt_stop_root(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	int st = rt_wait_exit(pid, 10000000000LL);
	if (st < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		rt_untrack(pid);
		T_FAIL("root %d ignored SIGTERM for 10 s", (int)pid);
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		T_FAIL("root %d exited with status %d after SIGTERM (see the logs in %s)", (int)pid, st,
		       rt_current ? rt_current->dir : "?");
}

/* Does the log contain `text`? */
static inline bool rt_log_has(struct rt *t, const char *sock, const char *text)
{
	char log[512], buf[65536];
	snprintf(log, sizeof(log), "%s/%s.log", t->dir, sock);
	FILE *f = fopen(log, "r");
	if (!f)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return strstr(buf, text) != NULL;
}

/* ---- the state hash ----------------------------------------------------- */

static inline uint64_t rt_fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

struct rt_hash {
	shmsync_worker *w;
	uint64_t sum, items;
	const char *dir;
};

/* Order-independent: roots order a directory's keys by their own seeds. */
static inline int rt_hash_key(const void *k, size_t kn, shmsync_view v, void *arg)
{
	struct rt_hash *h = arg;
	uint64_t x = rt_fnv(0xcbf29ce484222325ull, h->dir, strlen(h->dir));
	x = rt_fnv(x, "\0", 1);
	x = rt_fnv(x, k, kn);
	x = rt_fnv(x, "\0", 1);
	x = rt_fnv(x, v.data, v.len);
	x = rt_fnv(x, &v.tick, sizeof(v.tick)); /* the version's tick too: put_if_tick depends on it */
	h->sum += x * 0x9e3779b97f4a7c15ull + (x >> 29);
	h->items++;
	return 0;
}

static inline int rt_hash_dir(const char *dir, void *arg)
{
	struct rt_hash *h = arg;
	h->dir = dir;
	h->sum += rt_fnv(0x84222325cbf29ce4ull, dir, strlen(dir));
	h->items++;
	int rc = shmsync_dir_iter(h->w, dir, rt_hash_key, h);
	return rc < 0 ? rc : 0;
}

/* The hash of the state at `tick` (0: whatever the root has now, and
 * *tick says which) of the root at path. */
static inline uint64_t rt_state_hash(const char *path, uint64_t *tick, uint64_t *items)
{
	shmsync_worker *w;
	T_OK(shmsync_attach(&w, path));
	if (*tick) {
		T_OK(shmsync_import_until(w, *tick, 20000000000LL, NULL, NULL));
	} else {
		shmsync_stats st;
		T_OK(shmsync_stat(w, &st));
		*tick = st.tick;
		T_OK(shmsync_import_until(w, *tick, 20000000000LL, NULL, NULL));
	}
	T_EQ(shmsync_cursor(w), *tick);
	struct rt_hash h = {.w = w};
	T_OK(shmsync_dirs_iter(w, "/", rt_hash_dir, &h));
	shmsync_detach(w);
	if (items)
		*items = h.items;
	return h.sum;
}

static inline uint64_t rt_tick(const char *path)
{
	shmsync_worker *w;
	T_OK(shmsync_attach(&w, path));
	shmsync_stats st;
	T_OK(shmsync_stat(w, &st));
	shmsync_detach(w);
	return st.tick;
}

/* mkdir through the root at path. */
static inline void rt_mkdir(const char *path, const char *dir)
{
	shmsync_worker *w;
	shmsync_batch *b;
	uint64_t seq, tick;
	T_OK(shmsync_attach(&w, path));
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_mkdir(b, dir));
	T_OK(shmsync_export(b, 0, &seq));
	T_OK(shmsync_wait_committed(w, seq, &tick, 20000000000LL));
	shmsync_detach(w);
}

/* ---- writers -------------------------------------------------------------- */

/* A worker process: `n` batches of puts into /w/ (keys "<name>-<i>"), one
 * add to /w/ count per batch, waiting for each commit; appends "key tick\n"
 * of every acked batch to DIR/<name>.acked and fsyncs nothing (the file is
 * this test's own). Exits 0, or 1 after the first failed commit (from then
 * on nothing is acked). */
/* Forks a writer: the parent gets its pid (tracked); the child gets 0,
 * attached to the root at DIR/<sock>.sock as *w, with *acked open on
 * DIR/<name>.acked for its "key tick" lines (rt_check_acked reads them). */
static inline pid_t rt_fork_writer(struct rt *t, const char *sock, const char *name, FILE **acked,
				   shmsync_worker **w)
{
	char path[512], out[512];
	snprintf(path, sizeof(path), "%s/%s.sock", t->dir, sock);
	snprintf(out, sizeof(out), "%s/%s.acked", t->dir, name);
	fflush(NULL);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid) {
		rt_track(pid);
		return pid;
	}
	*acked = fopen(out, "w");
	if (!*acked || shmsync_attach(w, path) < 0)
		_exit(2);
	return 0;
}

static inline pid_t rt_writer(struct rt *t, const char *sock, const char *name, int n, int pause_ms)
{
	FILE *f;
	shmsync_worker *w;
	pid_t pid = rt_fork_writer(t, sock, name, &f, &w);
	if (pid)
		return pid;
	for (int i = 0; i < n; i++) {
		char key[64], val[64];
		int kn = snprintf(key, sizeof(key), "%s-%d", name, i);
		int vn = snprintf(val, sizeof(val), "value %d of %s", i, name);
		shmsync_batch *b;
		uint64_t seq, tick;
		if (shmsync_begin(w, &b) < 0 || shmsync_put(b, "/w/", key, (size_t)kn, val, (size_t)vn) < 0 ||
		    shmsync_add(b, "/w/", "count", 5, 1) < 0 || shmsync_export(b, 0, &seq) < 0)
			_exit(1);
		int rc = shmsync_wait_committed(w, seq, &tick, 30000000000LL);
		if (rc < 0) {
			fprintf(stderr, "writer %s: batch %d: %s\n", name, i, shmsync_strerror(rc));
			fclose(f);
			_exit(1);
		}
		fprintf(f, "%s %llu\n", key, (unsigned long long)tick);
		fflush(f);
		/* Read your writes: this root reaches the tick it was told. */
		rc = shmsync_import_until(w, tick, 30000000000LL, NULL, NULL);
		shmsync_view v;
		if (rc < 0 || shmsync_get(w, "/w/", key, (size_t)kn, &v) < 0 || v.len != (size_t)vn ||
		    memcmp(v.data, val, (size_t)vn) != 0) {
			fprintf(stderr,
				"writer %s: batch %d acked at tick %llu but not read back here (%s)\n", name,
				i, (unsigned long long)tick, shmsync_strerror(rc));
			fclose(f);
			_exit(3);
		}
		if (pause_ms)
			rt_sleep_ms(pause_ms);
	}
	fclose(f);
	shmsync_detach(w);
	_exit(0);
}

/* Every key a writer recorded as acked is in the state at path, with its
 * value: the number of them (failing the test on a missing one). */
static inline int rt_check_acked(struct rt *t, const char *name, const char *path)
{
	char out[512], key[64];
	unsigned long long tick;
	snprintf(out, sizeof(out), "%s/%s.acked", t->dir, name);
	FILE *f = fopen(out, "r");
	if (!f)
		T_FAIL("no %s", out);
	shmsync_worker *w;
	T_OK(shmsync_attach(&w, path));
	int n = 0;
	while (fscanf(f, "%63s %llu", key, &tick) == 2) {
		T_OK(shmsync_import_until(w, tick, 20000000000LL, NULL, NULL));
		shmsync_view v;
		int rc = shmsync_get(w, "/w/", key, strlen(key), &v);
		if (rc < 0)
			T_FAIL("%s was acked at tick %llu and is missing from %s (%s)", key, tick, path,
			       shmsync_strerror(rc));
		n++;
	}
	fclose(f);
	shmsync_detach(w);
	return n;
}

static inline int rt_wait_writer(pid_t pid, int64_t wait_ns)
{
	int st = rt_wait_exit(pid, wait_ns);
	if (st < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		T_FAIL("a writer did not finish in %.0f s", (double)wait_ns / 1e9);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#endif
