/* shmsync: the command-line tool: the command table, the options, help and
 * dispatch. The subcommands are in kv.c (put, get, del, add, mkdir, rmdir,
 * ls), watch.c, stat.c, serve.c and demo*.c; common.c has what they share.
 *
 *   shmsync serve | put | get | del | add | mkdir | rmdir | ls | watch | stat | demo | run
 *
 * Every subcommand but serve and demo attaches to a root as a worker, does
 * one thing and detaches. Exit codes: 0 success, 1 when something is absent
 * or a condition fails (or the operation fails), 2 on usage errors; every
 * failure says why in one line on stderr. See tools/shmsync.1.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"

#define DEFAULT_TIMEOUT_S 10.0
#define SHORT_OPTIONS ":s:t:xbrjc:m:qTifh"

/* ---- help and option parsing ---------------------------------------------- */

static const struct {
	unsigned bit;
	const char *text;
} option_help[] = {
	{O_SOCKET, "  -s, --socket PATH     the root's socket (default: $SHMSYNC_SOCKET)"},
	{O_TIMEOUT, "  -t, --timeout SECONDS how long to wait for the commit (default 10)"},
	{O_ENC, "  -x, --hex             keys and values in hex, on the command line and on output\n"
		"  -b, --base64          keys and values in base64, on the command line and on output"},
	{O_RAW, "  -r, --raw             bytes as they are, in arguments and on output (default:\n"
		"                        \\\\ and \\xNN escapes both ways, so what ls and get\n"
		"                        print can be given back)"},
	{O_JSON, "  -j, --json            JSON output"},
	{O_CAPACITY, "  -c, --capacity SIZE   address space for the state, e.g. 256M (default: from limits,\n"
		     "                        $SHMSYNC_CAPACITY)\n"
		     "      --prefault SIZE   back and touch this much of it at start (default: none), so\n"
		     "                        a load of that size pays for no first touch in its commits"},
	{O_MAXW, "  -m, --max-workers N   workers that may attach at once, 1..4096 (default 256)"},
	{O_QUIET, "  -q, --quiet           no message when the root starts"},
	{O_COND,
	 "      --if-absent       only if KEY is absent (else exit 1, EEXIST)\n"
	 "      --if-tick TICK    only if KEY's version has TICK, 0: absent (else exit 1, ECANCELED)"},
	{O_TICK, "  -T, --tick            print the value's tick (its version) and a space first"},
	{O_STDIN, "  -i, --stdin           read VALUE from standard input, as raw bytes"},
	{O_STALL, "      --stall-policy P  wait (default), kill or revoke: what happens to a worker that\n"
		  "                        holds a snapshot past one of the bounds below\n"
		  "      --max-read-pin SECONDS\n"
		  "                        bound on how long a snapshot may be held (default: none)\n"
		  "      --max-read-pin-bytes SIZE\n"
		  "                        bound on the retired memory a snapshot may keep, e.g. 64M\n"
		  "                        (default: none); the bound to set for flat memory"},
	{O_RING, "      --ring-bytes SIZE each worker's export ring, a power of two from 4K to 1G\n"
		 "                        (default 256K); a put's value must fit in half of it\n"
		 "                        (about 128K by default; 64M lets values reach 16M)"},
	{O_NUMA, "      --numa POLICY     the segment's memory: interleave (default: across the NUMA\n"
		 "                        nodes), bind:NODE (on that node only) or none (the\n"
		 "                        kernel's first touch)"},
	{O_PROM, "      --prometheus      the Prometheus text exposition format"},
	{O_REPL, "      --replicate URLS  lead the NATS JetStream stream --stream at URLS\n"
		 "                        (nats://HOST:PORT[,nats://HOST:PORT...]): recover the state\n"
		 "                        from it, then publish every tick to it (README, \"Replication\")\n"
		 "      --follow URLS     follow the stream's leader: apply its ticks, forward this\n"
		 "                        root's workers' batches to it, take over when its lease lapses\n"
		 "      --stream NAME     the stream (1-64 of A-Z a-z 0-9 _ -)\n"
		 "      --durable         a commit is acked once JetStream stored it on a quorum\n"
		 "                        (default: once committed here)\n"
		 "      --replicas N      the stream's replicas if this root creates it (default 1)\n"
		 "      --lease SECONDS   the leader's lease (default 3)\n"
		 "      --snapshot-ticks N, --snapshot-bytes SIZE\n"
		 "                        a snapshot to the stream this often (default 100000, 64M)\n"
		 "      --repl-window N   ticks not yet stored before commits wait (default 256)\n"
		 "      --log-bytes SIZE  the change log (default: capacity/16, at most 64M); a\n"
		 "                        follower's must be at least its leader's"},
	{O_FORCE, "  -f, --force           allow removing / (every directory)"},
	{O_ALLOW, "      --allow-uid UID   also let UID attach (repeatable; numeric or a user name);\n"
		  "                        the socket is then made mode 0666 and every other uid is\n"
		  "                        refused at connect. Clients of another uid must trust this\n"
		  "                        root's uid: SHMSYNC_ROOT_UIDS=<its uid>"},
};

static void print_help(const struct cmd *cmd)
{
	printf("usage: shmsync %s [OPTIONS]%s%s\n\n%s\n\nOptions:\n", cmd->name, cmd->synopsis[0] ? " " : "",
	       cmd->synopsis, cmd->help);
	for (size_t i = 0; i < sizeof(option_help) / sizeof(option_help[0]); i++)
		if (cmd->opts & option_help[i].bit)
			printf("%s\n", option_help[i].text);
	printf("  -h, --help            this help\n\n"
	       "Exit status: 0 success, 1 absent or failed, 2 usage error. See shmsync(1).\n");
}

enum {
	LO_IF_ABSENT = 256,
	LO_IF_TICK,
	LO_STALL_POLICY,
	LO_MAX_READ_PIN,
	LO_MAX_READ_PIN_BYTES,
	LO_RING_BYTES,
	LO_ALLOW_UID,
	LO_NUMA,
	LO_PROMETHEUS,
	LO_REPLICATE,
	LO_FOLLOW,
	LO_STREAM,
	LO_DURABLE,
	LO_REPLICAS,
	LO_LEASE,
	LO_SNAP_TICKS,
	LO_SNAP_BYTES,
	LO_REPL_WINDOW,
	LO_LOG_BYTES,
	LO_PREFAULT,
};

static const struct option long_options[] = {
	{"socket", required_argument, NULL, 's'},
	{"timeout", required_argument, NULL, 't'},
	{"hex", no_argument, NULL, 'x'},
	{"base64", no_argument, NULL, 'b'},
	{"raw", no_argument, NULL, 'r'},
	{"json", no_argument, NULL, 'j'},
	{"capacity", required_argument, NULL, 'c'},
	{"prefault", required_argument, NULL, LO_PREFAULT},
	{"max-workers", required_argument, NULL, 'm'},
	{"quiet", no_argument, NULL, 'q'},
	{"if-absent", no_argument, NULL, LO_IF_ABSENT},
	{"if-tick", required_argument, NULL, LO_IF_TICK},
	{"tick", no_argument, NULL, 'T'},
	{"stdin", no_argument, NULL, 'i'},
	{"stall-policy", required_argument, NULL, LO_STALL_POLICY},
	{"max-read-pin", required_argument, NULL, LO_MAX_READ_PIN},
	{"max-read-pin-bytes", required_argument, NULL, LO_MAX_READ_PIN_BYTES},
	{"ring-bytes", required_argument, NULL, LO_RING_BYTES},
	{"allow-uid", required_argument, NULL, LO_ALLOW_UID},
	{"numa", required_argument, NULL, LO_NUMA},
	{"prometheus", no_argument, NULL, LO_PROMETHEUS},
	{"replicate", required_argument, NULL, LO_REPLICATE},
	{"follow", required_argument, NULL, LO_FOLLOW},
	{"stream", required_argument, NULL, LO_STREAM},
	{"durable", no_argument, NULL, LO_DURABLE},
	{"replicas", required_argument, NULL, LO_REPLICAS},
	{"lease", required_argument, NULL, LO_LEASE},
	{"snapshot-ticks", required_argument, NULL, LO_SNAP_TICKS},
	{"snapshot-bytes", required_argument, NULL, LO_SNAP_BYTES},
	{"repl-window", required_argument, NULL, LO_REPL_WINDOW},
	{"log-bytes", required_argument, NULL, LO_LOG_BYTES},
	{"force", no_argument, NULL, 'f'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static unsigned option_bit(int opt)
{
	switch (opt) {
	case 's':
		return O_SOCKET;
	case 't':
		return O_TIMEOUT;
	case 'x':
	case 'b':
		return O_ENC;
	case 'r':
		return O_RAW;
	case 'j':
		return O_JSON;
	case 'c':
	case LO_PREFAULT:
		return O_CAPACITY;
	case 'm':
		return O_MAXW;
	case 'q':
		return O_QUIET;
	case LO_IF_ABSENT:
	case LO_IF_TICK:
		return O_COND;
	case 'T':
		return O_TICK;
	case 'i':
		return O_STDIN;
	case LO_STALL_POLICY:
	case LO_MAX_READ_PIN:
	case LO_MAX_READ_PIN_BYTES:
		return O_STALL;
	case LO_RING_BYTES:
		return O_RING;
	case LO_ALLOW_UID:
		return O_ALLOW;
	case LO_NUMA:
		return O_NUMA;
	case LO_PROMETHEUS:
		return O_PROM;
	case LO_REPLICATE:
	case LO_FOLLOW:
	case LO_STREAM:
	case LO_DURABLE:
	case LO_REPLICAS:
	case LO_LEASE:
	case LO_SNAP_TICKS:
	case LO_SNAP_BYTES:
	case LO_REPL_WINDOW:
	case LO_LOG_BYTES:
		return O_REPL;
	case 'f':
		return O_FORCE;
	}
	return 0;
}

/* What the options give before they are checked together: the socket is
 * resolved (and $SHMSYNC_SOCKET read) only once all are parsed. */
struct parsed {
	const char *socket;
	double timeout;
};

/* getopt_long's '?' or ':': name what the user typed; a value that begins
 * with '-' (a negative DELTA) lands here too. optind has moved past a long
 * option but not always past a cluster of short ones, so a short one is
 * named by optopt. */
static int bad_option(const struct cmd *cmd, int opt, char **argv)
{
	char shortopt[3] = {'-', (char)optopt, 0};
	const char *prev = argv[optind - 1];
	bool long_missing = opt == ':' && strncmp(prev, "--", 2) == 0;
	const char *arg = optopt && !long_missing ? shortopt : prev;
	if (opt == ':')
		tool_err("option '%s' needs a value (see shmsync %s --help)", arg, cmd->name);
	else
		tool_err("unknown option '%s' (see shmsync %s --help; put -- before arguments "
			 "that begin with '-')",
			 arg, cmd->name);
	return TOOL_USAGE;
}

static int parse_stall_policy(struct ctx *c, const char *arg)
{
	if (strcmp(arg, "wait") == 0)
		c->stall_policy = SHMSYNC_STALL_WAIT;
	else if (strcmp(arg, "kill") == 0)
		c->stall_policy = SHMSYNC_STALL_KILL;
	else if (strcmp(arg, "revoke") == 0)
		c->stall_policy = SHMSYNC_STALL_REVOKE;
	else {
		tool_err("--stall-policy: wait, kill or revoke, not '%s'", arg);
		return TOOL_USAGE;
	}
	return -1;
}

static int parse_ring_bytes(struct ctx *c, const char *arg)
{
	/* The library's bounds, checked here to name the option. */
	if (tool_parse_size("--ring-bytes", arg, &c->ring_bytes) < 0)
		return TOOL_USAGE;
	if (c->ring_bytes < ((size_t)4 << 10) || c->ring_bytes > ((size_t)1 << 30) ||
	    (c->ring_bytes & (c->ring_bytes - 1))) {
		tool_err("--ring-bytes: '%s' is not a power of two from 4K to 1G", arg);
		return TOOL_USAGE;
	}
	return -1;
}

static int parse_allow_uid(struct ctx *c, const char *arg)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(arg, &end, 10);
	uid_t uid;
	if (arg[0] >= '0' && arg[0] <= '9' && !*end && !errno && v < (uid_t)-1) {
		uid = (uid_t)v;
	} else {
		struct passwd *pw = getpwnam(arg);
		if (!pw) {
			tool_err("--allow-uid: '%s' is neither a uid nor a user name", arg);
			return TOOL_USAGE;
		}
		uid = pw->pw_uid;
	}
	if (c->n_allow_uids == sizeof(c->allow_uids) / sizeof(c->allow_uids[0])) {
		tool_err("--allow-uid: at most 64");
		return TOOL_USAGE;
	}
	/* The root's own uid stays allowed: the list replaces the default. */
	if (c->n_allow_uids == 0)
		c->allow_uids[c->n_allow_uids++] = geteuid();
	c->allow_uids[c->n_allow_uids++] = uid;
	return -1;
}

/* serve's replication options (shared with run: tool_repl_option) and
 * its log size. Returns -1 to go on, or the exit code. */
static int apply_repl_option(struct ctx *c, int opt, const char *arg)
{
	static const struct {
		int opt;
		enum tool_repl_opt which;
	} map[] = {
		{LO_REPLICATE, TOOL_REPL_REPLICATE},   {LO_FOLLOW, TOOL_REPL_FOLLOW},
		{LO_STREAM, TOOL_REPL_STREAM},         {LO_DURABLE, TOOL_REPL_DURABLE},
		{LO_REPLICAS, TOOL_REPL_REPLICAS},     {LO_LEASE, TOOL_REPL_LEASE},
		{LO_SNAP_TICKS, TOOL_REPL_SNAP_TICKS}, {LO_SNAP_BYTES, TOOL_REPL_SNAP_BYTES},
		{LO_REPL_WINDOW, TOOL_REPL_WINDOW},
	};
	if (opt == LO_LOG_BYTES)
		return tool_parse_size("--log-bytes", arg, &c->log_bytes) < 0 ? TOOL_USAGE : -1;
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (map[i].opt == opt)
			return tool_repl_option(map[i].which, arg, &c->repl) < 0 ? TOOL_USAGE : -1;
	return -1;
}

/* The options that take a value. Returns -1 to go on, or the exit code. */
static int apply_value_option(struct ctx *c, struct parsed *p, int opt, const char *arg)
{
	unsigned long long u;
	switch (opt) {
	case 's':
		p->socket = arg;
		break;
	case 't':
		if (tool_parse_seconds("--timeout", arg, 0.001, 86400 * 365, &p->timeout) < 0)
			return TOOL_USAGE;
		break;
	case 'c':
		if (tool_parse_size("--capacity", arg, &c->capacity) < 0)
			return TOOL_USAGE;
		break;
	case LO_PREFAULT:
		if (tool_parse_size("--prefault", arg, &c->prefault_bytes) < 0)
			return TOOL_USAGE;
		break;
	case 'm':
		if (tool_parse_uint("--max-workers", arg, 1, 4096, &u) < 0)
			return TOOL_USAGE;
		c->max_workers = (unsigned)u;
		break;
	case LO_IF_TICK:
		if (tool_parse_uint("--if-tick", arg, 0, INT64_MAX, &u) < 0)
			return TOOL_USAGE;
		c->have_if_tick = true;
		c->if_tick = u;
		break;
	case LO_STALL_POLICY:
		return parse_stall_policy(c, arg);
	case LO_MAX_READ_PIN: {
		double secs;
		if (tool_parse_seconds("--max-read-pin", arg, 0.001, 86400 * 365, &secs) < 0)
			return TOOL_USAGE;
		c->max_read_pin_ns = (int64_t)(secs * 1e9);
		break;
	}
	case LO_MAX_READ_PIN_BYTES:
		if (tool_parse_size("--max-read-pin-bytes", arg, &c->max_read_pin_bytes) < 0)
			return TOOL_USAGE;
		break;
	case LO_RING_BYTES:
		return parse_ring_bytes(c, arg);
	case LO_ALLOW_UID:
		return parse_allow_uid(c, arg);
	case LO_NUMA:
		if (tool_parse_numa(arg, &c->numa_policy, &c->numa_node) < 0)
			return TOOL_USAGE;
		break;
	default:
		return apply_repl_option(c, opt, arg);
	}
	return -1;
}

/* One option getopt_long accepted. Returns -1 to go on, or the exit code. */
static int apply_option(struct ctx *c, struct parsed *p, int opt, const char *arg)
{
	switch (opt) {
	case 'x':
	case 'b':
		if (c->enc != ENC_TEXT && c->enc != (opt == 'x' ? ENC_HEX : ENC_BASE64)) {
			tool_err("--hex and --base64 exclude each other");
			return TOOL_USAGE;
		}
		c->enc = opt == 'x' ? ENC_HEX : ENC_BASE64;
		break;
	case 'r':
		c->raw = true;
		break;
	case 'j':
		c->json = true;
		break;
	case 'q':
		c->quiet = true;
		break;
	case LO_IF_ABSENT:
		c->if_absent = true;
		break;
	case 'T':
		c->tick = true;
		break;
	case 'i':
		c->from_stdin = true;
		break;
	case 'f':
		c->force = true;
		break;
	case LO_PROMETHEUS:
		c->prometheus = true;
		break;
	default:
		return apply_value_option(c, p, opt, arg);
	}
	return -1;
}

/* Once every option is read: the combinations, the positional arguments,
 * the socket. Returns -1 to go on, or the exit code. */
static int check_options(struct ctx *c, const struct parsed *p, int argc, char **argv)
{
	const struct cmd *cmd = c->cmd;
	if (c->raw && c->enc != ENC_TEXT) {
		tool_err("--raw excludes --hex and --base64");
		return TOOL_USAGE;
	}
	if (c->if_absent && c->have_if_tick) {
		tool_err("--if-absent and --if-tick exclude each other");
		return TOOL_USAGE;
	}
	c->args = argv + optind;
	c->nargs = argc - optind;
	int max = cmd->max_args - (c->from_stdin ? 1 : 0);
	int min = cmd->min_args - (c->from_stdin ? 1 : 0);
	if (c->nargs < min || (cmd->max_args >= 0 && c->nargs > max)) {
		tool_err("%s arguments: expected %s%s (see shmsync %s --help)",
			 c->nargs < min ? "missing" : "too many", cmd->synopsis[0] ? cmd->synopsis : "none",
			 c->from_stdin ? ", VALUE from stdin" : "", cmd->name);
		return TOOL_USAGE;
	}
	c->timeout_ns = (int64_t)(p->timeout * 1e9);
	if (cmd->opts & O_SOCKET) {
		if (tool_socket(p->socket, &c->socket) < 0)
			return TOOL_USAGE;
	}
	return -1;
}

/* Returns -1 to go on, or the exit code (0 after --help). */
static int parse_options(struct ctx *c, int argc, char **argv)
{
	const struct cmd *cmd = c->cmd;
	struct parsed p = {NULL, DEFAULT_TIMEOUT_S};
	int opt;

	opterr = 0; /* our own one-line messages */
	optind = 1;
	int longidx = -1;
	while ((opt = getopt_long(argc, argv, SHORT_OPTIONS, long_options, &longidx)) != -1) {
		/* The option's name as typed, for messages (argv[optind - 1] is
		 * its value when the value is a separate argument). */
		char optname[40];
		if (longidx >= 0)
			snprintf(optname, sizeof(optname), "--%s", long_options[longidx].name);
		else
			snprintf(optname, sizeof(optname), "-%c", opt);
		longidx = -1;
		if (opt == 'h') {
			print_help(cmd);
			return TOOL_OK;
		}
		if (opt == '?' || opt == ':')
			return bad_option(cmd, opt, argv);
		if (!(cmd->opts & option_bit(opt))) {
			tool_err("option '%s' does not apply to %s (see shmsync %s --help)", optname,
				 cmd->name, cmd->name);
			return TOOL_USAGE;
		}
		int ret = apply_option(c, &p, opt, optarg);
		if (ret >= 0)
			return ret;
	}
	return check_options(c, &p, argc, argv);
}

/* ---- main ------------------------------------------------------------------- */

static const struct cmd cmds[] = {
	{"serve", cmd_serve,
	 O_SOCKET | O_CAPACITY | O_MAXW | O_QUIET | O_STALL | O_RING | O_ALLOW | O_NUMA | O_REPL, 0, 0, "",
	 "Runs a root in the foreground, serving workers on the socket, until SIGTERM or\n"
	 "SIGINT; then removes the socket and exits 0. The state lives as long as it does."},
	{"put", cmd_put, O_SOCKET | O_TIMEOUT | O_ENC | O_RAW | O_COND | O_STDIN, 3, 3, "DIR KEY VALUE",
	 "Puts VALUE under KEY in directory DIR and waits for the commit. DIR must exist.\n"
	 "VALUE is at most 16 MiB and must fit in half the root's export ring (serve\n"
	 "--ring-bytes; with the default 256K ring, about 128K): a bigger one is refused\n"
	 "with the exact limit."},
	{"get", cmd_get, O_SOCKET | O_ENC | O_RAW | O_TICK, 2, 2, "DIR KEY",
	 "Prints the value of KEY in DIR and a newline (with --raw: the bytes only).\n"
	 "Bytes that are not printable are escaped (\\\\, \\xNN) unless --raw."},
	{"del", cmd_del, O_SOCKET | O_TIMEOUT | O_ENC | O_RAW, 2, 2, "DIR KEY",
	 "Deletes KEY from DIR and waits for the commit."},
	{"add", cmd_add, O_SOCKET | O_TIMEOUT | O_ENC | O_RAW, 3, 3, "DIR KEY DELTA",
	 "Adds DELTA (a signed 64-bit integer; put -- before a negative one) to the counter\n"
	 "KEY in DIR (8 bytes, little-endian; a missing key counts from 0) and prints the\n"
	 "new value, exactly the one this command wrote."},
	{"mkdir", cmd_mkdir, O_SOCKET | O_TIMEOUT | O_RAW, 1, -1, "DIR...",
	 "Creates each DIR (no parent needed), all in one batch: all or none."},
	{"rmdir", cmd_rmdir, O_SOCKET | O_TIMEOUT | O_RAW | O_FORCE, 1, -1, "DIR...",
	 "Removes each DIR and every directory whose name starts with it, in one batch.\n"
	 "Removing / (every directory) needs --force."},
	{"ls", cmd_ls, O_SOCKET | O_ENC | O_RAW, 0, 1, "[DIR]",
	 "Lists the keys of DIR, one a line, sorted; without DIR, every directory.\n"
	 "Each line, escaped as printed, is a KEY (or DIR) that get, put and del take."},
	{"watch", cmd_watch, O_SOCKET | O_ENC | O_RAW | O_JSON, 0, 1, "[DIR]",
	 "Prints one line per imported change, `TICK KIND DIR KEY VALUE` (KIND: put, del,\n"
	 "mkdir, rmdir, reset; fields a kind lacks are left out; spaces in fields are\n"
	 "escaped), only changes under DIR if given, until SIGINT or SIGTERM."},
	{"stat", cmd_stat, O_SOCKET | O_JSON | O_PROM, 0, 0, "",
	 "Prints the root's statistics, the segment's NUMA policy and its workers (this\n"
	 "command's own slot left out), each with the NUMA node it runs on."},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: shmsync [OPTIONS] COMMAND [OPTIONS] [ARGS]\n\n"
		   "Commands:\n"
		   "  serve                  run a root in the foreground\n"
		   "  put DIR KEY VALUE      put a value\n"
		   "  get DIR KEY            print a value\n"
		   "  del DIR KEY            delete a key\n"
		   "  add DIR KEY DELTA      add to a counter, print the new value\n"
		   "  mkdir DIR...           create directories\n"
		   "  rmdir DIR...           remove directories (and those under them)\n"
		   "  ls [DIR]               list the keys of DIR, or every directory\n"
		   "  watch [DIR]            print changes as they are imported\n"
		   "  stat                   statistics of the root and its workers\n"
		   "  run -n N -- COMMAND    a root and N supervised workers running COMMAND\n"
		   "  demo                   a root and N workers under load, then a report\n\n"
		   "`shmsync COMMAND --help` describes each, and its options, which may also come\n"
		   "before COMMAND. The socket: --socket PATH, or $SHMSYNC_SOCKET. Keys, values\n"
		   "and directories are printed with \\\\ and \\xNN escapes and taken back that\n"
		   "way (--raw: as they are; --hex, --base64 for keys and values). Exit status:\n"
		   "0 success, 1 absent or failed, 2 usage error.\n");
}

/* The option of the table that a long option names: exactly, or by an
 * unambiguous prefix, as getopt_long takes it. */
static const struct option *find_long(const char *name, size_t n)
{
	const struct option *found = NULL;
	int matches = 0;
	for (const struct option *o = long_options; o->name; o++) {
		if (strncmp(o->name, name, n) != 0)
			continue;
		if (o->name[n] == 0)
			return o;
		found = o;
		matches++;
	}
	return matches == 1 ? found : NULL;
}

/* Options before the command (`shmsync --socket P get D K`, as git and
 * redis-cli take them) are the command's own: they are moved after its
 * name, where its parser reads them with the rest, and one that does not
 * apply to it is refused there. Finding the command needs to know which
 * options take a value, from the same tables getopt_long reads. Returns
 * argc when there are options but no command, -1 after a message, 0 after
 * --version, else the command's index. A "--" ending the options is
 * dropped. */
static int find_command(int argc, char **argv, bool *help)
{
	int i = 1;
	while (i < argc && argv[i][0] == '-' && argv[i][1]) {
		const char *a = argv[i++];
		if (strcmp(a, "--") == 0) {
			argv[i - 1] = NULL; /* dropped below */
			break;
		}
		if (strcmp(a, "--version") == 0) {
			printf("shmsync %s\n", shmsync_version());
			return 0;
		}
		bool value = false;
		if (a[1] == '-') {
			const char *eq = strchr(a, '=');
			size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
			const struct option *o = find_long(a + 2, n);
			if (!o) {
				tool_err("unknown option '%.*s' (see shmsync --help)", (int)(n + 2), a);
				return -1;
			}
			if (o->val == 'h')
				*help = true;
			value = o->has_arg == required_argument && !eq;
		} else {
			for (const char *p = a + 1; *p; p++) {
				const char *o = *p == ':' ? NULL : strchr(SHORT_OPTIONS, *p);
				if (!o) {
					tool_err("unknown option '-%c' (see shmsync --help)", *p);
					return -1;
				}
				if (*p == 'h')
					*help = true;
				if (o[1] == ':') {
					value = p[1] == 0; /* else the rest is its value */
					break;
				}
			}
		}
		if (value && i++ >= argc) {
			tool_err("option '%s' needs a value (see shmsync --help)", a);
			return -1;
		}
	}
	return i;
}

static int dispatch(int argc, char **argv);

int main(int argc, char **argv)
{
	if (argc < 2) {
		tool_err("no command (see shmsync --help)");
		return TOOL_USAGE;
	}
	bool help = false;
	int at = find_command(argc, argv, &help);
	if (at <= 0)
		return at < 0 ? TOOL_USAGE : TOOL_OK;
	if (at == argc) {
		if (help) {
			usage(stdout);
			return TOOL_OK;
		}
		tool_err("no command after the options (see shmsync --help)");
		return TOOL_USAGE;
	}
	if (at > 1) {
		/* argv[0], the command, the options that came before it, the
		 * rest: argv keeps its size, less a "--" that ended them. */
		char **v = malloc((size_t)(argc + 1) * sizeof(*v));
		if (!v) {
			tool_err("out of memory");
			return TOOL_USAGE;
		}
		int n = 0;
		v[n++] = argv[0];
		v[n++] = argv[at];
		for (int i = 1; i < at; i++)
			if (argv[i])
				v[n++] = argv[i];
		for (int i = at + 1; i < argc; i++)
			v[n++] = argv[i];
		v[n] = NULL;
		int ret = dispatch(n, v);
		free(v);
		return ret;
	}
	return dispatch(argc, argv);
}

static int dispatch(int argc, char **argv)
{
	const char *name = argv[1];
	if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
		usage(stdout);
		return TOOL_OK;
	}
	if (strcmp(name, "--version") == 0) {
		printf("shmsync %s\n", shmsync_version());
		return TOOL_OK;
	}
	if (strcmp(name, "demo") == 0) {
		tool_cmd = "demo";
		return demo_main(argc - 1, argv + 1);
	}
	if (strcmp(name, "run") == 0) {
		tool_cmd = "run";
		return tool_run(argc - 1, argv + 1);
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (strcmp(name, cmds[i].name) != 0)
			continue;
		struct ctx c = {.cmd = &cmds[i]};
		tool_cmd = cmds[i].name;
		int ret = parse_options(&c, argc - 1, argv + 1);
		if (ret >= 0)
			return ret;
		ret = cmds[i].run(&c);
		if (c.w)
			shmsync_detach(c.w);
		return ret;
	}
	tool_err("unknown command '%s' (see shmsync --help)", name);
	return TOOL_USAGE;
}
