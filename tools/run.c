/* shmsync run: the supervisor from the shell. A root and N workers, each
 * worker running COMMAND with $SHMSYNC_ATTACH_FD, $SHMSYNC_WORKER_INDEX and
 * $SHMSYNC_SOCKET set, until SIGTERM or SIGINT (see shmsync_supervise in
 * include/shmsync.h).
 *
 *   shmsync run [-n N] [--socket PATH] [--stall-policy P] [--grace SECONDS]
 *               [--numa POLICY] [--metrics [HOST:]PORT] -- COMMAND ARGS...
 *
 * Everything that can be checked is checked before anything starts: a bad
 * option, no command, a command that is not found, a socket a root answers
 * on already, a metrics address that cannot be listened on: one line on
 * stderr and exit 2.
 *
 * --metrics serves the root's figures over HTTP from a process of its own
 * (tools/metrics.c), not from the master, which holds no state and never
 * maps the segment.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "metrics.h"
#include "shmsync.h"
#include "tool.h"

int tool_run(int argc, char **argv);

static void usage(void)
{
	printf("usage: shmsync run [OPTIONS] -- COMMAND [ARGS...]\n\n"
	       "Runs a root and N workers, each running COMMAND with $SHMSYNC_ATTACH_FD (a\n"
	       "connection to the root: shmsync_attach(&w, NULL) attaches over it),\n"
	       "$SHMSYNC_WORKER_INDEX and $SHMSYNC_SOCKET set. A worker that fails is restarted\n"
	       "with backoff (a crash loop is reported and that worker left stopped); one that\n"
	       "exits 0 is done. A root that dies is restarted with every worker (the state is\n"
	       "lost). SIGTERM or Ctrl-C stops the workers (SIGTERM, then SIGKILL after the\n"
	       "grace), then the root; SIGHUP restarts the workers one at a time, keeping the\n"
	       "state. Exits 0 after a clean stop or when every worker exited 0.\n\n"
	       "Options:\n"
	       "  -n, --workers N       workers, 1..4096 (default: one per online CPU)\n"
	       "  -s, --socket PATH     the root's socket (default: $SHMSYNC_SOCKET, else a private\n"
	       "                        one in a fresh directory, removed at exit)\n"
	       "  -c, --capacity SIZE   address space for the state (default: from limits)\n"
	       "      --prefault SIZE   back and touch this much of it at the root's start, as for\n"
	       "                        serve (default: none)\n"
	       "      --stall-policy P  wait, kill or revoke (default kill after 30 s or 256M)\n"
	       "      --max-read-pin SECONDS, --max-read-pin-bytes SIZE\n"
	       "                        the bounds the policy applies past\n"
	       "      --grace SECONDS   SIGTERM -> SIGKILL grace (default 5)\n"
	       "      --numa POLICY     the segment's memory: interleave (default), bind:NODE or\n"
	       "                        none; worker i runs on node i mod the number of nodes\n"
	       "                        (CPUs and memory) unless none\n"
	       "      --metrics [HOST:]PORT\n"
	       "                        serve GET /metrics (Prometheus text format) on HOST\n"
	       "                        (a numeric address; default 127.0.0.1) from a process of\n"
	       "                        its own, restarted if it dies\n"
	       "      --crash-limit N   crashes within --crash-window that make a crash loop (default 5)\n"
	       "      --crash-window SECONDS (default 10)\n"
	       "      --replicate URLS, --follow URLS, --stream NAME, --durable, --replicas N,\n"
	       "      --lease SECONDS   replication through NATS JetStream, as for serve: a root\n"
	       "                        the supervisor restarts rebuilds the state from the stream\n"
	       "  -h, --help            this help\n\n"
	       "Exit status: 0 stopped cleanly, 1 failed, 2 usage error.\n");
}

enum {
	LO_STALL = 256,
	LO_PIN,
	LO_PIN_BYTES,
	LO_GRACE,
	LO_CLIMIT,
	LO_CWINDOW,
	LO_NUMA,
	LO_METRICS,
	LO_REPLICATE,
	LO_FOLLOW,
	LO_STREAM,
	LO_DURABLE,
	LO_REPLICAS,
	LO_LEASE,
	LO_PREFAULT,
};

static const struct option run_options[] = {
	{"workers", required_argument, NULL, 'n'},
	{"socket", required_argument, NULL, 's'},
	{"capacity", required_argument, NULL, 'c'},
	{"prefault", required_argument, NULL, LO_PREFAULT},
	{"stall-policy", required_argument, NULL, LO_STALL},
	{"max-read-pin", required_argument, NULL, LO_PIN},
	{"max-read-pin-bytes", required_argument, NULL, LO_PIN_BYTES},
	{"grace", required_argument, NULL, LO_GRACE},
	{"crash-limit", required_argument, NULL, LO_CLIMIT},
	{"crash-window", required_argument, NULL, LO_CWINDOW},
	{"numa", required_argument, NULL, LO_NUMA},
	{"metrics", required_argument, NULL, LO_METRICS},
	{"replicate", required_argument, NULL, LO_REPLICATE},
	{"follow", required_argument, NULL, LO_FOLLOW},
	{"stream", required_argument, NULL, LO_STREAM},
	{"durable", no_argument, NULL, LO_DURABLE},
	{"replicas", required_argument, NULL, LO_REPLICAS},
	{"lease", required_argument, NULL, LO_LEASE},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

/* Is there an executable regular file for cmd, as execvp would find it?
 * Checked before anything starts, so a typo is a usage error, not N crash
 * loops. */
static int find_command(const char *cmd)
{
	struct stat st;
	if (strchr(cmd, '/'))
		return access(cmd, X_OK) == 0 && stat(cmd, &st) == 0 && S_ISREG(st.st_mode) ? 0 : -1;
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/bin:/usr/bin";
	for (const char *p = path;;) {
		const char *end = strchr(p, ':');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		char full[PATH_MAX];
		if (snprintf(full, sizeof(full), "%.*s%s%s", (int)n, p, n ? "/" : "", cmd) <
			    (int)sizeof(full) &&
		    access(full, X_OK) == 0 && stat(full, &st) == 0 && S_ISREG(st.st_mode))
			return 0;
		if (!end)
			return -1;
		p = end + 1;
	}
}

/* Does a root (or anything) answer at path already? */
static int socket_taken(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	int taken = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EPROTOTYPE;
	close(fd);
	return taken;
}

/* A socket path in a fresh directory only we can enter (nobody can bind
 * the path first or connect as someone else), as shmsync_supervise makes
 * one: under $XDG_RUNTIME_DIR, else /tmp. Returns 0, or -1 after a
 * message. */
static int private_socket(char *dir, size_t dlen, char *path, size_t plen)
{
	const char *base = getenv("XDG_RUNTIME_DIR");
	struct stat st;
	if (!base || base[0] != '/' || stat(base, &st) < 0 || !S_ISDIR(st.st_mode) || strlen(base) > 60)
		base = "/tmp";
	snprintf(dir, dlen, "%s/shmsync-XXXXXX", base);
	if (!mkdtemp(dir)) {
		tool_err("cannot make a private directory in %s: %s", base, strerror(errno));
		dir[0] = 0;
		return -1;
	}
	snprintf(path, plen, "%s/root.sock", dir);
	return 0;
}

static int run_worker(unsigned index, void *arg)
{
	char **cmd = arg;
	(void)index;
	execvp(cmd[0], cmd);
	fprintf(stderr, "shmsync: run: cannot run %s: %s\n", cmd[0], strerror(errno));
	return 127;
}

static void run_log(const char *msg, void *arg)
{
	(void)arg;
	tool_err("%s", msg);
}

static int parse_policy(const char *arg, int *out)
{
	if (strcmp(arg, "wait") == 0)
		*out = SHMSYNC_STALL_WAIT;
	else if (strcmp(arg, "kill") == 0)
		*out = SHMSYNC_STALL_KILL;
	else if (strcmp(arg, "revoke") == 0)
		*out = SHMSYNC_STALL_REVOKE;
	else {
		tool_err("--stall-policy: wait, kill or revoke, not '%s'", arg);
		return -1;
	}
	return 0;
}

int tool_run(int argc, char **argv)
{
	tool_cmd = "run";
	shmsync_supervise_opts o = {0};
	const char *sock = NULL, *metrics = NULL;
	int policy = -1;
	unsigned long long u;
	double secs;
	opterr = 0;
	optind = 1;
	int opt;
	/* '+': options end at COMMAND even without "--". */
	while ((opt = getopt_long(argc, argv, "+:n:s:c:h", run_options, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (tool_parse_uint("--workers", optarg, 1, 4096, &u) < 0)
				return TOOL_USAGE;
			o.workers = (unsigned)u;
			break;
		case 's':
			sock = optarg;
			break;
		case 'c':
			if (tool_parse_size("--capacity", optarg, &o.root.capacity) < 0)
				return TOOL_USAGE;
			break;
		case LO_PREFAULT:
			if (tool_parse_size("--prefault", optarg, &o.root.prefault_bytes) < 0)
				return TOOL_USAGE;
			break;
		case LO_STALL:
			if (parse_policy(optarg, &policy) < 0)
				return TOOL_USAGE;
			break;
		case LO_PIN:
			if (tool_parse_seconds("--max-read-pin", optarg, 0.001, 86400 * 365, &secs) < 0)
				return TOOL_USAGE;
			o.root.max_read_pin_ns = (int64_t)(secs * 1e9);
			break;
		case LO_PIN_BYTES:
			if (tool_parse_size("--max-read-pin-bytes", optarg, &o.root.max_read_pin_bytes) < 0)
				return TOOL_USAGE;
			break;
		case LO_GRACE:
			if (tool_parse_seconds("--grace", optarg, 0.001, 3600, &secs) < 0)
				return TOOL_USAGE;
			o.grace_ns = (int64_t)(secs * 1e9);
			break;
		case LO_CLIMIT:
			if (tool_parse_uint("--crash-limit", optarg, 1, 64, &u) < 0)
				return TOOL_USAGE;
			o.crash_limit = (unsigned)u;
			break;
		case LO_NUMA:
			if (tool_parse_numa(optarg, &o.root.numa_policy, &o.root.numa_node) < 0)
				return TOOL_USAGE;
			break;
		case LO_METRICS:
			metrics = optarg;
			break;
		case LO_CWINDOW:
			if (tool_parse_seconds("--crash-window", optarg, 0.001, 86400, &secs) < 0)
				return TOOL_USAGE;
			o.crash_window_ns = (int64_t)(secs * 1e9);
			break;
		case LO_REPLICATE:
		case LO_FOLLOW:
		case LO_STREAM:
		case LO_DURABLE:
		case LO_REPLICAS:
		case LO_LEASE:
			if (tool_repl_option(opt == LO_REPLICATE  ? TOOL_REPL_REPLICATE
					     : opt == LO_FOLLOW   ? TOOL_REPL_FOLLOW
					     : opt == LO_STREAM   ? TOOL_REPL_STREAM
					     : opt == LO_DURABLE  ? TOOL_REPL_DURABLE
					     : opt == LO_REPLICAS ? TOOL_REPL_REPLICAS
								  : TOOL_REPL_LEASE,
					     optarg, &o.root) < 0)
				return TOOL_USAGE;
			break;
		case 'h':
			usage();
			return TOOL_OK;
		case ':':
			tool_err("option '%s' needs a value (see shmsync run --help)", argv[optind - 1]);
			return TOOL_USAGE;
		default:
			tool_err("unknown option '%s' (see shmsync run --help)", argv[optind - 1]);
			return TOOL_USAGE;
		}
	}
	if (optind >= argc) {
		tool_err("no command: shmsync run [OPTIONS] -- COMMAND [ARGS...]");
		return TOOL_USAGE;
	}
	if (tool_repl_check(&o.root) < 0)
		return TOOL_USAGE;
	/* Refused here, not by N failed root starts; against the default
	 * capacity the root refuses it when it opens. */
	if (o.root.capacity && o.root.prefault_bytes > o.root.capacity) {
		tool_err("--prefault: %zu bytes is more than --capacity (%zu bytes)", o.root.prefault_bytes,
			 o.root.capacity);
		return TOOL_USAGE;
	}
	char **cmd = argv + optind;
	if (find_command(cmd[0]) < 0) {
		tool_err("%s: command not found (or not executable)", cmd[0]);
		return TOOL_USAGE;
	}
	if (!sock) {
		const char *env = getenv("SHMSYNC_SOCKET");
		sock = env && *env ? env : NULL;
	}
	if (sock) {
		if (strlen(sock) >= 92) {
			tool_err("--socket: '%s' is too long (at most 91 bytes)", sock);
			return TOOL_USAGE;
		}
		if (socket_taken(sock)) {
			tool_err("%s: a root (or another program) already answers there", sock);
			return TOOL_USAGE;
		}
	}
	if (policy < 0 && (o.root.max_read_pin_ns || o.root.max_read_pin_bytes))
		policy = SHMSYNC_STALL_KILL; /* bounds alone: the supervisor's policy, kill */
	if (policy >= 0) {
		o.root.stall_policy = policy;
		/* An explicit wait without bounds: no bound at all (all zero
		 * would mean the supervisor's default, kill). */
		if (policy == SHMSYNC_STALL_WAIT && !o.root.max_read_pin_ns && !o.root.max_read_pin_bytes)
			o.root.max_read_pin_ns = INT64_MAX;
	}
	char shown[96], dir[PATH_MAX] = "", path[PATH_MAX];
	int lfd = -1;
	pid_t keeper = -1;
	if (metrics) {
		lfd = tool_metrics_listen(metrics, shown, sizeof(shown));
		if (lfd < 0)
			return TOOL_USAGE;
		/* The metrics server attaches by path, so it must know the
		 * path before the supervisor would make up a private one. */
		if (!sock) {
			if (private_socket(dir, sizeof(dir), path, sizeof(path)) < 0) {
				close(lfd);
				return TOOL_FAIL;
			}
			sock = path;
		}
		keeper = tool_metrics_start(lfd, sock, shown);
		close(lfd);
		if (keeper < 0) {
			if (dir[0])
				rmdir(dir);
			return TOOL_FAIL;
		}
	}
	o.socket_path = sock;
	o.log = run_log;
	char err[512] = "";
	o.errbuf = err;
	o.errbuf_len = sizeof(err);
	int rc = shmsync_supervise(&o, run_worker, cmd);
	/* Last, after the root: its figures are wanted while the workers
	 * stop. */
	tool_metrics_stop(keeper);
	if (dir[0]) {
		unlink(path); /* the root removes it; a killed root does not */
		rmdir(dir);
	}
	if (rc < 0) {
		tool_err("%s", err[0] ? err : shmsync_strerror(rc));
		return rc == -EINVAL || rc == -EADDRINUSE ? TOOL_USAGE : TOOL_FAIL;
	}
	return TOOL_OK;
}
