/* The root's figures for monitoring: stat's reading of them, their
 * Prometheus exposition, and the HTTP endpoint of `shmsync run --metrics`.
 *
 * The endpoint runs in two processes forked from run's master before the
 * root exists: a keeper, which starts the server again when it dies and
 * stops it on SIGTERM, and the server, which attaches to the root over its
 * socket like any client (it is not a supervised worker: the supervisor's
 * $SHMSYNC_ATTACH_FD goes to those alone) and answers one request at a
 * time. The master itself never attaches: it holds no state and must not
 * map the segment. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "tool.h"

#define MS 1000000LL
#define SEC 1000000000LL
#define BACKOFF_MIN_NS (100 * MS)
#define BACKOFF_MAX_NS (5 * SEC)
#define BACKOFF_RESET_NS (10 * SEC) /* a server that ran this long starts over at the minimum */
#define STOP_GRACE_NS (2 * SEC)     /* SIGTERM -> SIGKILL, for the server and the keeper */
#define CLIENT_TIMEOUT_S 2          /* a slow client holds the (single) server no longer */
#define REQUEST_MAX 8192

/* ---- reading the figures ------------------------------------------------------ */

const char *tool_state_name(int state)
{
	switch (state) {
	case SHMSYNC_WORKER_LIVE:
		return "live";
	case SHMSYNC_WORKER_OFFLINE:
		return "offline";
	case SHMSYNC_WORKER_LAGGING:
		return "lagging";
	case SHMSYNC_WORKER_REVOKED:
		return "revoked";
	}
	return "unknown";
}

/* The worker table, growing the buffer until it fits (workers may attach
 * between the count and the copy). */
static int read_workers(shmsync_worker *w, shmsync_worker_info **out)
{
	unsigned cap = 64;
	for (int tries = 0; tries < 100; tries++) {
		shmsync_worker_info *v = malloc(cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		int n = shmsync_workers(w, v, cap);
		if (n >= 0 && (unsigned)n <= cap) {
			*out = v;
			return n;
		}
		free(v);
		if (n >= 0)
			cap = (unsigned)n + 16;
		else if (n != -EAGAIN)
			return n;
	}
	return -EAGAIN;
}

int tool_read_stats(shmsync_worker *w, shmsync_stats *s, shmsync_worker_info **info)
{
	*info = NULL;
	int rc = shmsync_stat(w, s);
	if (rc < 0)
		return rc;
	int n = read_workers(w, info);
	if (n < 0)
		return n;
	int m = 0;
	for (int i = 0; i < n; i++)
		if ((*info)[i].slot != s->slot)
			(*info)[m++] = (*info)[i];
	return m;
}

/* ---- the exposition ------------------------------------------------------------- */

static void meta(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP shmsync_%s %s\n# TYPE shmsync_%s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and newline escaped, as the
 * format requires. */
static void label_value(FILE *f, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			fprintf(f, "\\%c", *v);
		else if (*v == '\n')
			fputs("\\n", f);
		else
			fputc(*v, f);
	}
}

/* The segment's memory policy as an info metric: its labels are the
 * members of the library's JSON object. */
static void numa_info(FILE *f, const char *numa)
{
	json_t *o = json_loads(numa, 0, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return;
	}
	meta(f, "numa_info", "gauge",
	     "The segment's NUMA memory policy as the kernel reports it, in the labels (always 1).");
	fputs("shmsync_numa_info{", f);
	const char *k;
	json_t *v;
	bool first = true;
	json_object_foreach(o, k, v)
	{
		if (!json_is_string(v))
			continue;
		fprintf(f, "%s%s=\"", first ? "" : ",", k);
		label_value(f, json_string_value(v));
		fputc('"', f);
		first = false;
	}
	fputs("} 1\n", f);
	json_decref(o);
}

/* One sample per worker of a per-worker metric. */
enum wfield { W_LAG, W_PINNED, W_CURSOR, W_NODE };

static void per_worker(FILE *f, const char *name, const char *type, const char *help,
		       const shmsync_worker_info *info, int n, enum wfield field)
{
	meta(f, name, type, help);
	for (int i = 0; i < n; i++) {
		fprintf(f, "shmsync_%s{slot=\"%u\",pid=\"%d\"} ", name, info[i].slot, (int)info[i].pid);
		switch (field) {
		case W_LAG:
			fprintf(f, "%" PRIu64 "\n", info[i].lag);
			break;
		case W_PINNED:
			fprintf(f, "%" PRIu64 "\n", info[i].pinned_bytes);
			break;
		case W_CURSOR:
			fprintf(f, "%" PRIu64 "\n", info[i].cursor);
			break;
		case W_NODE:
			fprintf(f, "%d\n", info[i].node);
			break;
		}
	}
}

void tool_prometheus(FILE *f, const shmsync_stats *s, const shmsync_worker_info *info, int n)
{
	meta(f, "tick", "gauge", "The published tick (one per group commit).");
	fprintf(f, "shmsync_tick %" PRIu64 "\n", s->tick);
	meta(f, "bytes_in_use", "gauge", "Bytes of the state in use.");
	fprintf(f, "shmsync_bytes_in_use %" PRIu64 "\n", s->bytes_in_use);
	meta(f, "capacity_bytes", "gauge", "Address space reserved for the state, in bytes.");
	fprintf(f, "shmsync_capacity_bytes %" PRIu64 "\n", s->capacity);
	meta(f, "segment_bytes", "gauge", "Bytes of the segment backed by memory.");
	fprintf(f, "shmsync_segment_bytes %" PRIu64 "\n", s->segment_bytes);
	meta(f, "huge_page_bytes", "gauge", "Of those, bytes the root maps with transparent huge pages.");
	fprintf(f, "shmsync_huge_page_bytes %" PRIu64 "\n", s->huge_bytes);
	meta(f, "replication_role", "gauge", "0 no replication, 1 leader, 2 follower.");
	fprintf(f, "shmsync_replication_role %d\n", s->repl_role);
	meta(f, "replication_lag_ticks", "gauge",
	     "Leader: ticks committed here that JetStream has not stored yet.");
	fprintf(f, "shmsync_replication_lag_ticks %" PRIu64 "\n", s->repl_lag_ticks);
	meta(f, "replication_lag_bytes", "gauge", "Leader: bytes of those ticks.");
	fprintf(f, "shmsync_replication_lag_bytes %" PRIu64 "\n", s->repl_lag_bytes);
	meta(f, "tombstones", "gauge", "Deleted keys and directories not yet freed.");
	fprintf(f, "shmsync_tombstones %" PRIu64 "\n", s->tombstones);
	meta(f, "reclaimed_objects_total", "counter", "Objects the root has freed since it started.");
	fprintf(f, "shmsync_reclaimed_objects_total %" PRIu64 "\n", s->reclaimed);
	meta(f, "root_timer_found_work_total", "counter",
	     "Times the root's idle timer found ring work (a lost or late doorbell wake-up).");
	fprintf(f, "shmsync_root_timer_found_work_total %" PRIu64 "\n", s->root_timer_found_work);
	meta(f, "root_pages_warmed_total", "counter",
	     "Pages the root touched before the commits that write them, by where: idle (instead of "
	     "sleeping) or poll (between the batches of a bulk load).");
	fprintf(f, "shmsync_root_pages_warmed_total{where=\"idle\"} %" PRIu64 "\n",
		s->root_pages_warmed_idle);
	fprintf(f, "shmsync_root_pages_warmed_total{where=\"poll\"} %" PRIu64 "\n",
		s->root_pages_warmed_poll);
	meta(f, "root_restarts_total", "counter", "Times a supervisor restarted the root (0 without one).");
	fprintf(f, "shmsync_root_restarts_total %" PRIu64 "\n", s->root_restarts);
	meta(f, "worker_restarts_total", "counter", "Times a supervisor restarted a worker (0 without one).");
	fprintf(f, "shmsync_worker_restarts_total %" PRIu64 "\n", s->worker_restarts);
	meta(f, "workers", "gauge", "Attached workers, not counting the reader of these figures.");
	fprintf(f, "shmsync_workers %d\n", n);
	numa_info(f, s->numa);
	per_worker(f, "worker_lag_ticks", "gauge", "Ticks the worker's cursor is behind the published tick.",
		   info, n, W_LAG);
	per_worker(f, "worker_pinned_bytes", "gauge",
		   "Bytes the worker keeps from being freed (versions and change-log records).", info, n,
		   W_PINNED);
	per_worker(f, "worker_cursor", "gauge", "The last tick the worker imported.", info, n, W_CURSOR);
	per_worker(f, "worker_node", "gauge", "The NUMA node the worker's CPUs are on; -1: not one node.",
		   info, n, W_NODE);
	/* A gauge per state (1 for the worker's, 0 for the others): queries
	 * select a state by name, and a new state is a new series, not a
	 * renumbering. */
	static const int states[] = {SHMSYNC_WORKER_LIVE, SHMSYNC_WORKER_OFFLINE, SHMSYNC_WORKER_LAGGING,
				     SHMSYNC_WORKER_REVOKED};
	meta(f, "worker_state", "gauge",
	     "1 for the worker's state (live: reading a snapshot; offline: pinning nothing; lagging: its "
	     "cursor keeps more than a quarter of the change log; revoked: its snapshot was revoked), 0 "
	     "for the others.");
	for (int i = 0; i < n; i++)
		for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++)
			fprintf(f, "shmsync_worker_state{slot=\"%u\",pid=\"%d\",state=\"%s\"} %d\n",
				info[i].slot, (int)info[i].pid, tool_state_name(states[k]),
				info[i].state == states[k]);
}

/* ---- the listening socket -------------------------------------------------------- */

int tool_metrics_listen(const char *spec, char *shown, size_t shown_len)
{
	char host[64] = "127.0.0.1";
	const char *port = spec;
	const char *colon = strrchr(spec, ':');
	if (colon) {
		const char *h = spec;
		size_t hn = (size_t)(colon - spec);
		if (hn >= 2 && h[0] == '[' && h[hn - 1] == ']') { /* [IPv6]:PORT */
			h++;
			hn -= 2;
		}
		if (hn >= sizeof(host)) {
			tool_err("--metrics: '%s': the address is too long", spec);
			return -1;
		}
		if (hn) {
			memcpy(host, h, hn);
			host[hn] = 0;
		}
		port = colon + 1;
	}
	unsigned long long p;
	if (tool_parse_uint("--metrics PORT", port, 1, 65535, &p) < 0)
		return -1;
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)p);
		sl = sizeof(*a4);
		snprintf(shown, shown_len, "%s:%llu", host, p);
	} else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)p);
		sl = sizeof(*a6);
		snprintf(shown, shown_len, "[%s]:%llu", host, p);
	} else {
		/* Numeric only: no resolver surprises, and the address that
		 * listens is exactly the one the user wrote. */
		tool_err("--metrics: '%s' is not a numeric IPv4 or [IPv6] address (e.g. 127.0.0.1:9464)",
			 host);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		tool_err("--metrics: socket: %s", strerror(errno));
		return -1;
	}
	int one = 1;
	/* A restarted run binds again at once, past connections in TIME_WAIT. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 16) < 0) {
		tool_err("--metrics: cannot listen on %s: %s", shown, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- the server ------------------------------------------------------------------ */

static volatile sig_atomic_t server_stop;

static void on_server_stop(int sig)
{
	(void)sig;
	server_stop = 1;
}

struct server {
	const char *sock;
	shmsync_worker *w;
	char why[256]; /* why there is no attachment */
};

/* Moves the attachment's cursor to the newest tick and takes it offline:
 * an idle reader then pins neither versions nor the change log, and the
 * stall policy has nothing to hold against it. An attachment whose root is
 * gone (restarted by the supervisor) is dropped; the next scrape attaches
 * to the new one. */
static void keep_current(struct server *sv)
{
	if (!sv->w)
		return;
	int rc = shmsync_import_next(sv->w, 0, NULL, NULL);
	if (rc < 0 && rc != -ETIMEDOUT && rc != -ESTALE) {
		snprintf(sv->why, sizeof(sv->why), "the root went away: %s", shmsync_strerror(rc));
		shmsync_detach(sv->w);
		sv->w = NULL;
		return;
	}
	shmsync_offline(sv->w);
}

static void ensure_attached(struct server *sv)
{
	keep_current(sv);
	if (sv->w)
		return;
	char err[200] = "";
	int rc = shmsync_attach_msg(&sv->w, sv->sock, err, sizeof(err));
	if (rc < 0) {
		sv->w = NULL;
		snprintf(sv->why, sizeof(sv->why), "no root serves %s: %s", sv->sock,
			 err[0] ? err : shmsync_strerror(rc));
		return;
	}
	keep_current(sv);
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR && !server_stop)
			continue;
		if (k <= 0)
			return;
		p += k;
		n -= (size_t)k;
	}
}

static void respond(int fd, int code, const char *reason, const char *type, const char *body, size_t len,
		    bool head)
{
	char h[512];
	int hn = snprintf(
		h, sizeof(h),
		"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
		code, reason, type, len, code == 405 ? "Allow: GET, HEAD\r\n" : "");
	send_all(fd, h, (size_t)hn);
	if (!head)
		send_all(fd, body, len);
}

/* Reads the request head (bounded in size and time); returns its length, or
 * 0 when there is none to answer. */
static size_t read_request(int fd, char *req, size_t cap)
{
	size_t n = 0;
	while (n < cap - 1) {
		ssize_t k = recv(fd, req + n, cap - 1 - n, 0);
		if (k <= 0)
			break;
		n += (size_t)k;
		req[n] = 0;
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			return n;
	}
	req[n] = 0;
	/* A request line at least, if the client stopped short of the blank
	 * line (curl never does; a hand-typed one might). */
	return strchr(req, '\n') ? n : 0;
}

static void serve_client(struct server *sv, int fd)
{
	struct timeval tv = {CLIENT_TIMEOUT_S, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	char req[REQUEST_MAX];
	if (!read_request(fd, req, sizeof(req)))
		return;
	char method[16], target[1024];
	if (sscanf(req, "%15s %1023s", method, target) != 2) {
		respond(fd, 400, "Bad Request", "text/plain", "bad request\n", 12, false);
		return;
	}
	bool head = strcmp(method, "HEAD") == 0;
	if (!head && strcmp(method, "GET") != 0) {
		respond(fd, 405, "Method Not Allowed", "text/plain", "GET or HEAD\n", 12, false);
		return;
	}
	target[strcspn(target, "?#")] = 0;
	if (strcmp(target, "/") == 0) {
		static const char idx[] = "shmsync: the root's figures are at /metrics\n";
		respond(fd, 200, "OK", "text/plain", idx, sizeof(idx) - 1, head);
		return;
	}
	if (strcmp(target, "/metrics") != 0) {
		respond(fd, 404, "Not Found", "text/plain", "not found: try /metrics\n", 24, head);
		return;
	}
	ensure_attached(sv);
	shmsync_stats s;
	shmsync_worker_info *info = NULL;
	int n = sv->w ? tool_read_stats(sv->w, &s, &info) : -ENOTCONN;
	char *body = NULL;
	size_t len = 0;
	FILE *f = n >= 0 ? open_memstream(&body, &len) : NULL;
	if (n < 0 || !f) {
		/* 503: Prometheus records the scrape as failed (up == 0). */
		char m[320];
		int mn = snprintf(m, sizeof(m), "%s\n", n == -ENOTCONN ? sv->why : shmsync_strerror(n));
		respond(fd, 503, "Service Unavailable", "text/plain", m, (size_t)mn, head);
	} else {
		tool_prometheus(f, &s, info, n);
		fclose(f);
		respond(fd, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, len, head);
	}
	free(body);
	free(info);
}

static int server_main(int lfd, const char *sock)
{
	struct sigaction sa = {0};
	sa.sa_handler = on_server_stop;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a poll or a client's read ends at SIGTERM. */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGHUP, SIG_IGN);
	struct server sv = {.sock = sock};
	snprintf(sv.why, sizeof(sv.why), "not attached yet");
	while (!server_stop) {
		/* Attached early, so the first scrape finds it ready; kept
		 * current once a second so an idle reader pins nothing. */
		ensure_attached(&sv);
		struct pollfd p = {lfd, POLLIN, 0};
		int r = poll(&p, 1, sv.w ? 1000 : 200);
		if (r <= 0)
			continue;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve_client(&sv, fd);
		close(fd);
	}
	if (sv.w)
		shmsync_detach(sv.w);
	return 0;
}

/* ---- the keeper ------------------------------------------------------------------ */

static void describe(char *buf, size_t len, int st)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
	else
		snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
}

/* Waits up to STOP_GRACE_NS for pid after SIGTERM, then SIGKILLs it. */
static void stop_child(pid_t pid)
{
	kill(pid, SIGTERM);
	int64_t until = tool_now_ns() + STOP_GRACE_NS;
	while (waitpid(pid, NULL, WNOHANG) == 0) {
		if (tool_now_ns() >= until) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return;
		}
		usleep(10000);
	}
}

static int keeper_main(int lfd, const char *sock, const char *shown, const sigset_t *old)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	pid_t self = getpid(), child = 0;
	int64_t start_at = 0, started = 0, backoff = 0;
	for (;;) {
		int64_t now = tool_now_ns();
		if (!child && now >= start_at) {
			fflush(NULL);
			pid_t p = fork();
			if (p == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				if (getppid() != self)
					_exit(1);
				sigprocmask(SIG_SETMASK, old, NULL);
				_exit(server_main(lfd, sock));
			}
			if (p < 0) {
				tool_err("metrics: cannot start the server: %s; trying again in 1 s",
					 strerror(errno));
				start_at = now + SEC;
			} else {
				child = p;
				started = now;
				tool_err("metrics pid %d started: http://%s/metrics", (int)p, shown);
			}
		}
		int64_t wait = child ? 3600 * SEC : start_at - now;
		struct timespec ts = {(time_t)(wait / SEC), (long)(wait % SEC)};
		int sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig != SIGCHLD)
			continue; /* a timeout, or SIGHUP: the supervisor's restart is for the workers */
		int st;
		pid_t p;
		while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
			if (p != child)
				continue;
			now = tool_now_ns();
			if (now - started >= BACKOFF_RESET_NS || !backoff)
				backoff = BACKOFF_MIN_NS;
			else if ((backoff *= 2) > BACKOFF_MAX_NS)
				backoff = BACKOFF_MAX_NS;
			start_at = now + backoff;
			child = 0;
			char how[96];
			describe(how, sizeof(how), st);
			tool_err("metrics pid %d %s; restarting it in %lld ms", (int)p, how,
				 (long long)(backoff / MS));
		}
	}
	if (child)
		stop_child(child);
	return 0;
}

pid_t tool_metrics_start(int lfd, const char *sock, const char *shown)
{
	pid_t master = getpid();
	fflush(NULL); /* or buffered output would be written twice */
	pid_t pid = fork();
	if (pid < 0) {
		tool_err("metrics: cannot start: %s", strerror(errno));
		return -1;
	}
	if (pid > 0)
		return pid;
	/* Like the supervisor's children: nothing outlives the master, and
	 * its own process group, so a terminal's Ctrl-C reaches the master
	 * alone, which stops this one last. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != master)
		_exit(1);
	setpgid(0, 0);
	/* The children's exit statuses are needed. */
	signal(SIGCHLD, SIG_DFL);
	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);
	/* Not exit(): the master's atexit handlers are not ours. */
	int rc = keeper_main(lfd, sock, shown, &old);
	fflush(NULL);
	_exit(rc);
}

void tool_metrics_stop(pid_t keeper)
{
	if (keeper > 0)
		stop_child(keeper);
}
