/* shmsync: the command-line tool.
 *
 *   shmsync serve | put | get | del | add | mkdir | rmdir | ls | watch | stat | demo
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

#include "shmsync.h"
#include "tool.h"

/* Options, as bits: each subcommand lists those it accepts. */
enum {
	O_SOCKET = 1 << 0,
	O_TIMEOUT = 1 << 1,
	O_ENC = 1 << 2, /* --hex, --base64 */
	O_RAW = 1 << 3,
	O_JSON = 1 << 4,
	O_CAPACITY = 1 << 5,
	O_MAXW = 1 << 6,
	O_QUIET = 1 << 7,
	O_COND = 1 << 8, /* --if-absent, --if-tick */
	O_TICK = 1 << 9,
	O_STDIN = 1 << 10,
	O_STALL = 1 << 11, /* --stall-policy, --max-read-pin, --max-read-pin-bytes */
	O_RING = 1 << 12,
	O_FORCE = 1 << 13,
	O_ALLOW = 1 << 14,
};

struct ctx;

struct cmd {
	const char *name;
	int (*run)(struct ctx *c);
	unsigned opts;
	int min_args, max_args; /* positional; max -1: any number */
	const char *synopsis;
	const char *help;
};

struct ctx {
	const struct cmd *cmd;
	const char *socket;
	int64_t timeout_ns;
	enum tool_enc enc;
	bool raw, json, quiet, if_absent, have_if_tick, tick, from_stdin;
	uint64_t if_tick;
	size_t capacity;
	unsigned max_workers;
	int stall_policy;
	int64_t max_read_pin_ns;
	size_t max_read_pin_bytes;
	size_t ring_bytes;
	uid_t allow_uids[64];
	unsigned n_allow_uids;
	bool force;
	char **args;
	int nargs;
	shmsync_worker *w;
};

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
		     "                        $SHMSYNC_CAPACITY)"},
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
};

static const struct option long_options[] = {
	{"socket", required_argument, NULL, 's'},
	{"timeout", required_argument, NULL, 't'},
	{"hex", no_argument, NULL, 'x'},
	{"base64", no_argument, NULL, 'b'},
	{"raw", no_argument, NULL, 'r'},
	{"json", no_argument, NULL, 'j'},
	{"capacity", required_argument, NULL, 'c'},
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
	case 'f':
		return O_FORCE;
	}
	return 0;
}

/* Returns -1 to go on, or the exit code (0 after --help). */
static int parse_options(struct ctx *c, int argc, char **argv)
{
	const struct cmd *cmd = c->cmd;
	const char *socket = NULL;
	double timeout = DEFAULT_TIMEOUT_S;
	int opt;
	unsigned long long u;

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
		if (opt == '?' || opt == ':') {
			/* Name what the user typed; a value that begins with '-'
			 * (a negative DELTA) lands here too. optind has moved past
			 * a long option but not always past a cluster of short
			 * ones, so a short one is named by optopt. */
			char shortopt[3] = {'-', (char)optopt, 0};
			const char *prev = argv[optind - 1];
			bool long_missing = opt == ':' && strncmp(prev, "--", 2) == 0;
			const char *arg = optopt && !long_missing ? shortopt : prev;
			if (opt == ':')
				tool_err("option '%s' needs a value (see shmsync %s --help)", arg, cmd->name);
			else
				tool_err(
					"unknown option '%s' (see shmsync %s --help; put -- before arguments "
					"that begin with '-')",
					arg, cmd->name);
			return TOOL_USAGE;
		}
		if (!(cmd->opts & option_bit(opt))) {
			tool_err("option '%s' does not apply to %s (see shmsync %s --help)", optname,
				 cmd->name, cmd->name);
			return TOOL_USAGE;
		}
		switch (opt) {
		case 's':
			socket = optarg;
			break;
		case 't':
			if (tool_parse_seconds("--timeout", optarg, 0.001, 86400 * 365, &timeout) < 0)
				return TOOL_USAGE;
			break;
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
		case 'c':
			if (tool_parse_size("--capacity", optarg, &c->capacity) < 0)
				return TOOL_USAGE;
			break;
		case 'm':
			if (tool_parse_uint("--max-workers", optarg, 1, 4096, &u) < 0)
				return TOOL_USAGE;
			c->max_workers = (unsigned)u;
			break;
		case 'q':
			c->quiet = true;
			break;
		case LO_IF_ABSENT:
			c->if_absent = true;
			break;
		case LO_IF_TICK:
			if (tool_parse_uint("--if-tick", optarg, 0, INT64_MAX, &u) < 0)
				return TOOL_USAGE;
			c->have_if_tick = true;
			c->if_tick = u;
			break;
		case 'T':
			c->tick = true;
			break;
		case 'i':
			c->from_stdin = true;
			break;
		case LO_STALL_POLICY:
			if (strcmp(optarg, "wait") == 0)
				c->stall_policy = SHMSYNC_STALL_WAIT;
			else if (strcmp(optarg, "kill") == 0)
				c->stall_policy = SHMSYNC_STALL_KILL;
			else if (strcmp(optarg, "revoke") == 0)
				c->stall_policy = SHMSYNC_STALL_REVOKE;
			else {
				tool_err("--stall-policy: wait, kill or revoke, not '%s'", optarg);
				return TOOL_USAGE;
			}
			break;
		case LO_MAX_READ_PIN: {
			double secs;
			if (tool_parse_seconds("--max-read-pin", optarg, 0.001, 86400 * 365, &secs) < 0)
				return TOOL_USAGE;
			c->max_read_pin_ns = (int64_t)(secs * 1e9);
			break;
		}
		case LO_MAX_READ_PIN_BYTES:
			if (tool_parse_size("--max-read-pin-bytes", optarg, &c->max_read_pin_bytes) < 0)
				return TOOL_USAGE;
			break;
		case LO_RING_BYTES:
			/* The library's bounds, checked here to name the option. */
			if (tool_parse_size("--ring-bytes", optarg, &c->ring_bytes) < 0)
				return TOOL_USAGE;
			if (c->ring_bytes < ((size_t)4 << 10) || c->ring_bytes > ((size_t)1 << 30) ||
			    (c->ring_bytes & (c->ring_bytes - 1))) {
				tool_err("--ring-bytes: '%s' is not a power of two from 4K to 1G", optarg);
				return TOOL_USAGE;
			}
			break;
		case 'f':
			c->force = true;
			break;
		case LO_ALLOW_UID: {
			char *end;
			errno = 0;
			unsigned long v = strtoul(optarg, &end, 10);
			uid_t uid;
			if (optarg[0] >= '0' && optarg[0] <= '9' && !*end && !errno && v < (uid_t)-1) {
				uid = (uid_t)v;
			} else {
				struct passwd *pw = getpwnam(optarg);
				if (!pw) {
					tool_err("--allow-uid: '%s' is neither a uid nor a user name",
						 optarg);
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
			break;
		}
		}
	}
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
	c->timeout_ns = (int64_t)(timeout * 1e9);
	if (cmd->opts & O_SOCKET) {
		if (tool_socket(socket, &c->socket) < 0)
			return TOOL_USAGE;
	}
	return -1;
}

/* ---- names, messages ------------------------------------------------------- */

/* The library's rules (include/shmsync.h), checked here for a clear message
 * before anything is sent. */
static int check_dir(const char *dir)
{
	size_t len = strlen(dir);
	bool ok = len > 0 && len <= SHMSYNC_MAX_DIR && dir[0] == '/' && dir[len - 1] == '/';
	for (size_t i = 1, start = 1; ok && i < len; i++) {
		if (dir[i] != '/')
			continue;
		size_t n = i - start;
		if (n == 0 || (n == 1 && dir[start] == '.') ||
		    (n == 2 && dir[start] == '.' && dir[start + 1] == '.'))
			ok = false;
		start = i + 1;
	}
	if (!ok) {
		char *shown = tool_encode(ENC_TEXT, dir, len);
		if (len > SHMSYNC_MAX_DIR)
			tool_err("'%.40s...': directory name too long (at most %d bytes)", shown ? shown : "",
				 SHMSYNC_MAX_DIR);
		else
			tool_err("'%s': not a directory name (absolute, ending in '/', no empty, '.' or '..' "
				 "component)",
				 shown ? shown : "");
		free(shown);
		return -1;
	}
	return 0;
}

/* A KEY or VALUE argument: in the encoding asked for, or as it is with
 * --raw. */
static int decode_arg(struct ctx *c, const char *what, const char *arg, uint8_t **out, size_t *len)
{
	if (!c->raw)
		return tool_decode(c->enc, what, arg, out, len);
	size_t n = strlen(arg);
	*out = malloc(n + 1);
	if (!*out) {
		tool_err("out of memory");
		return -1;
	}
	memcpy(*out, arg, n + 1);
	*len = n;
	return 0;
}

/* A DIR argument, decoded in place (escapes only shorten it): directories
 * are printed escaped whatever the key encoding, so they are read that way
 * too, unless --raw. A name is a C string: no NUL in it. */
static int get_dir(struct ctx *c, char *arg)
{
	if (!c->raw) {
		uint8_t *d;
		size_t n;
		if (tool_decode(ENC_TEXT, "DIR", arg, &d, &n) < 0)
			return -1;
		bool nul = memchr(d, 0, n) != NULL;
		if (!nul)
			memcpy(arg, d, n + 1);
		free(d);
		if (nul) {
			tool_err("DIR: '%s': a directory name cannot hold a NUL byte", arg);
			return -1;
		}
	}
	return check_dir(arg);
}

static int get_key(struct ctx *c, const char *arg, uint8_t **key, size_t *len)
{
	if (decode_arg(c, "KEY", arg, key, len) < 0)
		return -1;
	if (*len == 0 || *len > SHMSYNC_MAX_KEY) {
		tool_err("KEY: %s (keys are 1..%d bytes)", *len ? "too long" : "empty", SHMSYNC_MAX_KEY);
		free(*key);
		*key = NULL;
		return -1;
	}
	return 0;
}

/* "DIR KEY" as shown in messages: the key in the form it was given. */
static char *subject(struct ctx *c, const char *dir, const void *key, size_t kn)
{
	char *d = tool_encode(ENC_TEXT, dir, strlen(dir));
	char *k = key ? tool_encode(c->enc, key, kn) : NULL;
	char *s = NULL;
	if (d && (k || !key) && asprintf(&s, "%s%s%s", d, k ? " " : "", k ? k : "") < 0)
		s = NULL;
	free(d);
	free(k);
	return s;
}

enum absent { A_DIR, A_KEY, A_DIR_OR_KEY };

/* An error of an applied batch (or a read): exit 1 with one line. */
static int fail(struct ctx *c, int rc, const char *dir, const void *key, size_t kn, enum absent absent)
{
	char *s = subject(c, dir, key, kn);
	const char *why = shmsync_strerror(rc);
	if (rc == -ENOENT)
		why = absent == A_DIR   ? "no such directory"
		      : absent == A_KEY ? "no such key"
					: "no such directory or key";
	else if (rc == -EEXIST)
		why = key ? "key exists" : "directory exists";
	else if (rc == -ECANCELED)
		why = "the key's version is not the expected tick";
	else if (rc == -ESHUTDOWN)
		why = "the root went away";
	else if (rc == -ETIMEDOUT)
		why = "timed out waiting for the root";
	tool_err("%s: %s", s ? s : dir, why);
	free(s);
	return TOOL_FAIL;
}

/* A batch call refused an argument at once: a usage error. */
static int refuse(struct ctx *c, int rc, const char *dir, const void *key, size_t kn)
{
	char *s = subject(c, dir, key, kn);
	const char *why = shmsync_strerror(rc);
	if (rc == -E2BIG)
		why = "too big for one batch (at most half the export ring and of the change log)";
	else if (rc == -EMSGSIZE)
		why = "value too long";
	tool_err("%s: %s", s ? s : dir, why);
	free(s);
	return rc == -EINVAL || rc == -ENAMETOOLONG || rc == -EMSGSIZE || rc == -E2BIG ? TOOL_USAGE
										       : TOOL_FAIL;
}

/* ---- attach, commit ------------------------------------------------------ */

static int attach(struct ctx *c)
{
	char err[256] = "";
	int rc = shmsync_attach_msg(&c->w, c->socket, err, sizeof(err));
	if (rc < 0) {
		c->w = NULL;
		if (rc == -ENOENT || rc == -ECONNREFUSED)
			tool_err("no root serves %s (start one with: shmsync serve --socket %s)", c->socket,
				 c->socket);
		else
			/* The library's own words say more than the code's name. */
			tool_err("cannot attach to %s: %s", c->socket, err[0] ? err : shmsync_strerror(rc));
		/* -EINVAL: a bad environment variable (SHMSYNC_SIGNAL). */
		return rc == -EINVAL ? TOOL_USAGE : TOOL_FAIL;
	}
	return TOOL_OK;
}

static int commit(struct ctx *c, shmsync_batch *b, uint64_t *tick)
{
	uint64_t seq, t = 0;
	int rc = shmsync_export(b, 0, &seq);
	if (rc < 0) {
		shmsync_abort(b);
		return rc;
	}
	rc = shmsync_wait_committed(c->w, seq, &t, c->timeout_ns);
	if (tick)
		*tick = t;
	return rc;
}

static int begin(struct ctx *c, shmsync_batch **b)
{
	int rc = shmsync_begin(c->w, b);
	if (rc < 0)
		tool_err("cannot start a batch: %s", shmsync_strerror(rc));
	return rc;
}

static int finish_output(void)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		tool_err("write error on standard output: %s", strerror(errno));
		return TOOL_FAIL;
	}
	return TOOL_OK;
}

/* ---- put, del, mkdir, rmdir ------------------------------------------------- */

static int read_stdin(uint8_t **out, size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	uint8_t *buf = malloc(cap);
	while (buf) {
		if (n == cap) {
			if (cap > SHMSYNC_MAX_VALUE) {
				tool_err("VALUE on stdin: longer than %u bytes", SHMSYNC_MAX_VALUE);
				free(buf);
				return -1;
			}
			uint8_t *nb = realloc(buf, cap * 2);
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		size_t got = fread(buf + n, 1, cap - n, stdin);
		n += got;
		if (got == 0) {
			if (ferror(stdin)) {
				tool_err("reading VALUE from stdin: %s", strerror(errno));
				free(buf);
				return -1;
			}
			*out = buf;
			*len = n;
			return 0;
		}
	}
	free(buf);
	tool_err("out of memory");
	return -1;
}

static bool put_fits(struct ctx *c, const char *dir, const uint8_t *key, size_t kn, const uint8_t *val,
		     size_t vn)
{
	shmsync_batch *b;
	if (shmsync_begin(c->w, &b) < 0)
		return false;
	int rc = shmsync_put(b, dir, key, kn, val, vn);
	shmsync_abort(b);
	return rc == 0;
}

/* A value too big for one batch, which is at most half the root's export
 * ring (serve --ring-bytes) and half its change log: the message names the
 * limit as a number. The library publishes neither the limit nor its
 * framing, so the largest value it takes for this key and directory is
 * found by trying lengths on scratch batches, which are encoded but never
 * sent (each try is monotone in the length). */
static int too_big(struct ctx *c, const char *dir, const uint8_t *key, size_t kn, const uint8_t *val,
		   size_t vn)
{
	size_t lo = 0, hi = vn; /* lo fits (checked below), hi does not */
	bool any = put_fits(c, dir, key, kn, val, 0);
	while (any && hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (put_fits(c, dir, key, kn, val, mid))
			lo = mid;
		else
			hi = mid;
	}
	char *s = subject(c, dir, key, kn);
	if (any)
		tool_err("%s: a value of %zu bytes is too big for this root: at most %zu bytes with this key "
			 "and directory (half the root's export ring; shmsync serve --ring-bytes sets it)",
			 s ? s : dir, vn, lo);
	else
		tool_err("%s: too big for one batch of this root (at most half its export ring and of its "
			 "change log)",
			 s ? s : dir);
	free(s);
	return TOOL_USAGE;
}

static int cmd_put(struct ctx *c)
{
	char *dir = c->args[0];
	uint8_t *key = NULL, *val = NULL;
	size_t kn, vn;
	int ret = TOOL_USAGE;
	if (get_dir(c, dir) < 0 || get_key(c, c->args[1], &key, &kn) < 0)
		goto out;
	if (c->from_stdin ? read_stdin(&val, &vn) < 0 : decode_arg(c, "VALUE", c->args[2], &val, &vn) < 0)
		goto out;
	if (vn > SHMSYNC_MAX_VALUE) {
		tool_err("VALUE: too long (at most %u bytes)", SHMSYNC_MAX_VALUE);
		goto out;
	}
	if ((ret = attach(c)) != TOOL_OK)
		goto out;
	shmsync_batch *b;
	ret = TOOL_FAIL;
	if (begin(c, &b) < 0)
		goto out;
	int rc = c->if_absent      ? shmsync_put_if_absent(b, dir, key, kn, val, vn)
		 : c->have_if_tick ? shmsync_put_if_tick(b, dir, key, kn, val, vn, c->if_tick)
				   : shmsync_put(b, dir, key, kn, val, vn);
	if (rc < 0) {
		shmsync_abort(b);
		ret = rc == -E2BIG ? too_big(c, dir, key, kn, val, vn) : refuse(c, rc, dir, key, kn);
		goto out;
	}
	rc = commit(c, b, NULL);
	ret = rc < 0 ? fail(c, rc, dir, key, kn, A_DIR) : TOOL_OK;
out:
	free(key);
	free(val);
	return ret;
}

static int cmd_del(struct ctx *c)
{
	char *dir = c->args[0];
	uint8_t *key = NULL;
	size_t kn;
	int ret = TOOL_USAGE;
	if (get_dir(c, dir) < 0 || get_key(c, c->args[1], &key, &kn) < 0)
		goto out;
	if ((ret = attach(c)) != TOOL_OK)
		goto out;
	shmsync_batch *b;
	ret = TOOL_FAIL;
	if (begin(c, &b) < 0)
		goto out;
	int rc = shmsync_del(b, dir, key, kn);
	if (rc < 0) {
		shmsync_abort(b);
		ret = refuse(c, rc, dir, key, kn);
		goto out;
	}
	rc = commit(c, b, NULL);
	ret = rc < 0 ? fail(c, rc, dir, key, kn, A_DIR_OR_KEY) : TOOL_OK;
out:
	free(key);
	return ret;
}

/* mkdir and rmdir take several directories, applied as one batch: all or
 * none. */
static int dirs_batch(struct ctx *c, int (*op)(shmsync_batch *, const char *))
{
	for (int i = 0; i < c->nargs; i++)
		if (get_dir(c, c->args[i]) < 0)
			return TOOL_USAGE;
	/* "/" is a prefix of every name: its rmdir removes every directory. */
	for (int i = 0; op == shmsync_rmdir && !c->force && i < c->nargs; i++) {
		if (strcmp(c->args[i], "/") == 0) {
			tool_err("/ would remove every directory: give --force if that is what you want");
			return TOOL_USAGE;
		}
	}
	int ret = attach(c);
	if (ret != TOOL_OK)
		return ret;
	shmsync_batch *b;
	if (begin(c, &b) < 0)
		return TOOL_FAIL;
	for (int i = 0; i < c->nargs; i++) {
		int rc = op(b, c->args[i]);
		if (rc < 0) {
			shmsync_abort(b);
			return refuse(c, rc, c->args[i], NULL, 0);
		}
	}
	int rc = commit(c, b, NULL);
	if (rc < 0) {
		/* The ack names no operation: with several, name them all. */
		char *all = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&all, &len);
		for (int i = 0; f && i < c->nargs; i++) {
			if (i)
				fputc(' ', f);
			tool_write(f, ENC_TEXT, false, true, c->args[i], strlen(c->args[i]));
		}
		if (f)
			fclose(f);
		ret = fail(c, rc, all ? all : c->args[0], NULL, 0, A_DIR);
		free(all);
		return ret;
	}
	return TOOL_OK;
}

static int cmd_mkdir(struct ctx *c)
{
	return dirs_batch(c, shmsync_mkdir);
}

static int cmd_rmdir(struct ctx *c)
{
	return dirs_batch(c, shmsync_rmdir);
}

/* ---- add ------------------------------------------------------------------- */

static int import_latest(struct ctx *c)
{
	shmsync_stats s;
	int rc = shmsync_stat(c->w, &s);
	if (rc < 0)
		return rc;
	rc = shmsync_import_until(c->w, s.tick, c->timeout_ns, NULL, NULL);
	return rc < 0 ? rc : 0;
}

/* A conditional put of the new value, retried on conflict: unlike a plain
 * shmsync_add, the value printed is exactly the one this command wrote, even
 * when others add to the same counter in the same group commit. */
static int cmd_add(struct ctx *c)
{
	char *dir = c->args[0];
	uint8_t *key = NULL;
	size_t kn;
	int64_t delta;
	int ret = TOOL_USAGE;
	if (get_dir(c, dir) < 0 || get_key(c, c->args[1], &key, &kn) < 0 ||
	    tool_parse_int64("DELTA", c->args[2], &delta) < 0)
		goto out;
	if ((ret = attach(c)) != TOOL_OK)
		goto out;
	ret = TOOL_FAIL;
	int64_t deadline = tool_now_ns() + c->timeout_ns;
	for (;;) {
		shmsync_view v;
		int64_t cur = 0;
		uint64_t expect = 0;
		int rc = shmsync_get(c->w, dir, key, kn, &v);
		if (rc == 0) {
			if (v.len != 8) {
				char *s = subject(c, dir, key, kn);
				tool_err("%s: the value is not a counter (8 bytes, little-endian int64; it "
					 "has %zu)",
					 s ? s : dir, v.len);
				free(s);
				goto out;
			}
			uint8_t le[8];
			memcpy(le, v.data, 8);
			uint64_t u = 0;
			for (int i = 7; i >= 0; i--)
				u = u << 8 | le[i];
			cur = (int64_t)u;
			expect = v.tick;
		} else if (rc != -ENOENT) {
			ret = fail(c, rc, dir, key, kn, A_DIR_OR_KEY);
			goto out;
		}
		int64_t next;
		if (__builtin_add_overflow(cur, delta, &next)) {
			char *s = subject(c, dir, key, kn);
			tool_err("%s: %" PRId64 " + %" PRId64 " overflows a signed 64-bit integer",
				 s ? s : dir, cur, delta);
			free(s);
			goto out;
		}
		uint8_t le[8];
		for (int i = 0; i < 8; i++)
			le[i] = (uint8_t)((uint64_t)next >> (8 * i));
		shmsync_batch *b;
		if (begin(c, &b) < 0)
			goto out;
		rc = shmsync_put_if_tick(b, dir, key, kn, le, 8, expect);
		if (rc < 0) {
			shmsync_abort(b);
			ret = refuse(c, rc, dir, key, kn);
			goto out;
		}
		rc = commit(c, b, NULL);
		if (rc == 0) {
			printf("%" PRId64 "\n", next);
			ret = finish_output();
			goto out;
		}
		/* Someone else changed it since our snapshot: read again. */
		if (rc == -ECANCELED && tool_now_ns() < deadline)
			rc = import_latest(c);
		if (rc < 0) {
			ret = fail(c, rc == -ECANCELED ? -ETIMEDOUT : rc, dir, key, kn, A_DIR);
			goto out;
		}
	}
out:
	free(key);
	return ret;
}

/* ---- get, ls ------------------------------------------------------------------ */

static bool dir_exists(struct ctx *c, const char *dir);

static int cmd_get(struct ctx *c)
{
	char *dir = c->args[0];
	uint8_t *key = NULL;
	size_t kn;
	int ret = TOOL_USAGE;
	if (get_dir(c, dir) < 0 || get_key(c, c->args[1], &key, &kn) < 0)
		goto out;
	/* Attach puts the worker online at the published tick: its snapshot
	 * is the newest there is, no import needed. */
	if ((ret = attach(c)) != TOOL_OK)
		goto out;
	shmsync_view v;
	int rc = shmsync_get(c->w, dir, key, kn, &v);
	if (rc < 0) {
		ret = fail(c, rc, dir, key, kn, rc == -ENOENT && !dir_exists(c, dir) ? A_DIR : A_KEY);
		goto out;
	}
	if (c->tick)
		printf("%" PRIu64 " ", v.tick);
	tool_write(stdout, c->enc, c->raw, false, v.data, v.len);
	/* --raw copies the value exactly: `get --raw D K > file`. */
	if (!c->raw)
		putchar('\n');
	ret = finish_output();
out:
	free(key);
	return ret;
}

static int stop_at_first(const void *k, size_t kn, shmsync_view v, void *arg)
{
	(void)k;
	(void)kn;
	(void)v;
	(void)arg;
	return 1;
}

static bool dir_exists(struct ctx *c, const char *dir)
{
	return shmsync_dir_iter(c->w, dir, stop_at_first, NULL) != -ENOENT;
}

struct keys {
	struct key {
		uint8_t *p;
		size_t n;
	} * v;
	size_t n, cap;
	bool oom;
};

static int collect_key(const void *k, size_t kn, shmsync_view v, void *arg)
{
	(void)v;
	struct keys *ks = arg;
	if (ks->n == ks->cap) {
		size_t cap = ks->cap ? 2 * ks->cap : 64;
		struct key *nv = realloc(ks->v, cap * sizeof(*nv));
		if (!nv) {
			ks->oom = true;
			return 1;
		}
		ks->v = nv;
		ks->cap = cap;
	}
	uint8_t *p = malloc(kn ? kn : 1);
	if (!p) {
		ks->oom = true;
		return 1;
	}
	memcpy(p, k, kn);
	ks->v[ks->n++] = (struct key){p, kn};
	return 0;
}

static int key_cmp(const void *a, const void *b)
{
	const struct key *x = a, *y = b;
	int r = memcmp(x->p, y->p, x->n < y->n ? x->n : y->n);
	return r ? r : (x->n > y->n) - (x->n < y->n);
}

static int print_dir(const char *dir, void *arg)
{
	struct ctx *c = arg;
	tool_write(stdout, ENC_TEXT, c->raw, false, dir, strlen(dir));
	putchar('\n');
	return 0;
}

static int cmd_ls(struct ctx *c)
{
	if (c->nargs == 1 && get_dir(c, c->args[0]) < 0)
		return TOOL_USAGE;
	int ret = attach(c);
	if (ret != TOOL_OK)
		return ret;
	if (c->nargs == 0) {
		int rc = shmsync_dirs_iter(c->w, NULL, print_dir, c);
		if (rc < 0) {
			tool_err("listing directories: %s", shmsync_strerror(rc));
			return TOOL_FAIL;
		}
		return finish_output();
	}
	/* Copied out and sorted: the index keeps no order, a listing should. */
	struct keys ks = {0};
	int rc = shmsync_dir_iter(c->w, c->args[0], collect_key, &ks);
	if (ks.oom) {
		tool_err("out of memory");
		ret = TOOL_FAIL;
	} else if (rc < 0) {
		ret = fail(c, rc, c->args[0], NULL, 0, A_DIR);
	} else {
		if (ks.n) /* qsort wants a non-NULL base even for none */
			qsort(ks.v, ks.n, sizeof(*ks.v), key_cmp);
		for (size_t i = 0; i < ks.n; i++) {
			tool_write(stdout, c->enc, c->raw, false, ks.v[i].p, ks.v[i].n);
			putchar('\n');
		}
		ret = finish_output();
	}
	for (size_t i = 0; i < ks.n; i++)
		free(ks.v[i].p);
	free(ks.v);
	return ret;
}

/* ---- watch ------------------------------------------------------------------ */

static volatile sig_atomic_t stop_flag;
static int stop_pipe[2] = {-1, -1};

static void on_stop(int sig)
{
	(void)sig;
	int saved = errno;
	stop_flag = 1;
	if (stop_pipe[1] >= 0 && write(stop_pipe[1], "x", 1) < 0) {
		/* The pipe is full: a wake-up is pending anyway. */
	}
	errno = saved;
}

static void catch_stop_signals(void (*fn)(int))
{
	struct sigaction sa = {0};
	sa.sa_handler = fn;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a wait should see the signal. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

static const char *kind_name(int kind)
{
	switch (kind) {
	case SHMSYNC_PUT:
		return "put";
	case SHMSYNC_DEL:
		return "del";
	case SHMSYNC_MKDIR:
		return "mkdir";
	case SHMSYNC_RMDIR:
		return "rmdir";
	case SHMSYNC_RESET:
		return "reset";
	}
	return "unknown";
}

struct watch {
	struct ctx *c;
	const char *under;
	size_t under_len;
	bool failed;
};

/* A change concerns the watched directory if it happens under it, or if it
 * removes it (rmdir of a prefix removes every directory under it). */
static bool concerns(const struct watch *wt, const shmsync_change *ch)
{
	if (!wt->under || ch->kind == SHMSYNC_RESET)
		return true;
	size_t n = strlen(ch->dir);
	if (n >= wt->under_len && memcmp(ch->dir, wt->under, wt->under_len) == 0)
		return true;
	return ch->kind == SHMSYNC_RMDIR && n < wt->under_len && memcmp(ch->dir, wt->under, n) == 0;
}

/* A byte string as JSON: the requested encoding, else a string when it is
 * UTF-8 (jansson checks), else base64 under NAME_base64. */
static int json_bytes(json_t *obj, const char *name, enum tool_enc enc, const void *p, size_t n)
{
	json_t *s = NULL;
	char alt[64];
	if (enc == ENC_TEXT)
		s = json_stringn(n ? p : "", n);
	if (s)
		return json_object_set_new(obj, name, s);
	char *e = tool_encode(enc == ENC_TEXT ? ENC_BASE64 : enc, p, n);
	if (!e)
		return -1;
	snprintf(alt, sizeof(alt), "%s_base64", name);
	int rc = json_object_set_new(obj, enc == ENC_TEXT ? alt : name, json_string(e));
	free(e);
	return rc;
}

static int print_json(json_t *obj)
{
	int rc = obj ? json_dumpf(obj, stdout, JSON_COMPACT) : -1;
	json_decref(obj);
	if (rc < 0)
		return -1;
	putchar('\n');
	return 0;
}

static int on_watch_change(const shmsync_change *ch, void *arg)
{
	struct watch *wt = arg;
	struct ctx *c = wt->c;
	if (!concerns(wt, ch))
		return 0;
	bool has_key = ch->kind == SHMSYNC_PUT || ch->kind == SHMSYNC_DEL;
	bool has_dir = ch->kind != SHMSYNC_RESET;
	if (c->json) {
		json_t *o = json_object();
		if (!o)
			goto oom;
		json_object_set_new(o, "tick", json_integer((json_int_t)ch->tick));
		json_object_set_new(o, "kind", json_string(kind_name(ch->kind)));
		if ((has_dir && json_bytes(o, "dir", ENC_TEXT, ch->dir, strlen(ch->dir)) < 0) ||
		    (has_key && json_bytes(o, "key", c->enc, ch->key, ch->key_len) < 0) ||
		    (ch->kind == SHMSYNC_PUT &&
		     json_bytes(o, "value", c->enc, ch->value, ch->value_len) < 0)) {
			json_decref(o);
			goto oom;
		}
		if (print_json(o) < 0)
			goto oom;
	} else {
		printf("%" PRIu64 " %s", ch->tick, kind_name(ch->kind));
		if (has_dir) {
			putchar(' ');
			tool_write(stdout, ENC_TEXT, c->raw, true, ch->dir, strlen(ch->dir));
		}
		if (has_key) {
			putchar(' ');
			tool_write(stdout, c->enc, c->raw, true, ch->key, ch->key_len);
		}
		if (ch->kind == SHMSYNC_PUT) {
			putchar(' ');
			tool_write(stdout, c->enc, c->raw, true, ch->value, ch->value_len);
		}
		putchar('\n');
	}
	/* Whoever reads the other end of a pipe sees each change at once. */
	if (fflush(stdout) != 0) {
		wt->failed = true;
		return 1;
	}
	return 0;
oom:
	tool_err("out of memory formatting a change");
	wt->failed = true;
	return 1;
}

static int cmd_watch(struct ctx *c)
{
	struct watch wt = {c, NULL, 0, false};
	if (c->nargs == 1) {
		if (get_dir(c, c->args[0]) < 0)
			return TOOL_USAGE;
		wt.under = c->args[0];
		wt.under_len = strlen(wt.under);
	}
	/* SIGPIPE would kill us mid-line; a failed write ends the watch
	 * with a message instead. */
	signal(SIGPIPE, SIG_IGN);
	if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		tool_err("pipe: %s", strerror(errno));
		return TOOL_FAIL;
	}
	catch_stop_signals(on_stop);
	int ret = attach(c);
	if (ret != TOOL_OK)
		return ret;
	while (!stop_flag) {
		/* Sleep in poll on the worker's fd (and the signal pipe), offline:
		 * an idle watcher pins no versions. shmsync_fd re-arms the wait
		 * each time; the timeout notices a root that went away on the
		 * futex path, where the fd does not see it. */
		int fd = shmsync_fd(c->w);
		if (fd < 0) {
			tool_err("cannot wait for changes: %s", shmsync_strerror(fd));
			return TOOL_FAIL;
		}
		shmsync_offline(c->w);
		struct pollfd p[2] = {{fd, POLLIN, 0}, {stop_pipe[0], POLLIN, 0}};
		if (poll(p, 2, 1000) < 0 && errno != EINTR) {
			tool_err("poll: %s", strerror(errno));
			return TOOL_FAIL;
		}
		if (stop_flag)
			break;
		int rc = shmsync_import_next(c->w, 0, on_watch_change, &wt);
		if (wt.failed) {
			if (errno == EPIPE)
				return TOOL_OK; /* the reader is gone: done */
			tool_err("write error on standard output: %s", strerror(errno));
			return TOOL_FAIL;
		}
		if (rc == -ETIMEDOUT || rc == -EINTR)
			continue;
		if (rc < 0) {
			tool_err("%s", rc == -ESHUTDOWN ? "the root went away" : shmsync_strerror(rc));
			return TOOL_FAIL;
		}
	}
	return finish_output();
}

/* ---- stat ------------------------------------------------------------------- */

static const char *state_name(int state)
{
	switch (state) {
	case SHMSYNC_WORKER_LIVE:
		return "live";
	case SHMSYNC_WORKER_OFFLINE:
		return "offline";
	case SHMSYNC_WORKER_LAGGING:
		return "lagging";
	}
	return "unknown";
}

/* Reads the worker table, growing the buffer until it fits. */
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

static json_t *json_u64_or_null(uint64_t v)
{
	return v > INT64_MAX ? json_null() : json_integer((json_int_t)v);
}

static int cmd_stat(struct ctx *c)
{
	int ret = attach(c);
	if (ret != TOOL_OK)
		return ret;
	shmsync_stats s;
	shmsync_worker_info *info = NULL;
	int rc = shmsync_stat(c->w, &s);
	int n = rc < 0 ? rc : read_workers(c->w, &info);
	if (rc < 0 || n < 0) {
		tool_err("reading statistics: %s", shmsync_strerror(rc < 0 ? rc : n));
		return TOOL_FAIL;
	}
	/* This command is a worker too: leave its own slot out. */
	int m = 0;
	for (int i = 0; i < n; i++)
		if (info[i].slot != s.slot)
			info[m++] = info[i];
	if (c->json) {
		json_t *o = json_object(), *ws = json_array();
		if (!o || !ws) {
			json_decref(o);
			json_decref(ws);
			free(info);
			tool_err("out of memory");
			return TOOL_FAIL;
		}
		json_object_set_new(o, "tick", json_integer((json_int_t)s.tick));
		json_object_set_new(o, "min_epoch", json_u64_or_null(s.min_epoch));
		json_object_set_new(o, "signal", json_string(s.root_signal));
		json_object_set_new(o, "client_signal", json_string(s.signal));
		json_object_set_new(o, "uring_ops", json_integer((json_int_t)s.uring_ops));
		json_object_set_new(o, "bytes_in_use", json_integer((json_int_t)s.bytes_in_use));
		json_object_set_new(o, "capacity", json_integer((json_int_t)s.capacity));
		json_object_set_new(o, "tombstones", json_integer((json_int_t)s.tombstones));
		json_object_set_new(o, "reclaimed", json_integer((json_int_t)s.reclaimed));
		json_object_set_new(o, "root_timer_found_work",
				    json_integer((json_int_t)s.root_timer_found_work));
		for (int i = 0; i < m; i++) {
			json_t *e = json_object();
			json_object_set_new(e, "slot", json_integer(info[i].slot));
			json_object_set_new(e, "pid", json_integer(info[i].pid));
			json_object_set_new(e, "cursor", json_integer((json_int_t)info[i].cursor));
			json_object_set_new(e, "epoch", json_u64_or_null(info[i].epoch));
			json_object_set_new(e, "lag", json_integer((json_int_t)info[i].lag));
			json_object_set_new(e, "pinned_bytes",
					    json_integer((json_int_t)info[i].pinned_bytes));
			json_object_set_new(e, "state", json_string(state_name(info[i].state)));
			json_array_append_new(ws, e);
		}
		json_object_set_new(o, "workers", ws);
		if (print_json(o) < 0) {
			free(info);
			tool_err("out of memory");
			return TOOL_FAIL;
		}
	} else {
		char b1[32], b2[32];
		printf("tick          %" PRIu64 "\n", s.tick);
		if (s.min_epoch == UINT64_MAX)
			printf("min_epoch     none (no worker online)\n");
		else
			printf("min_epoch     %" PRIu64 "\n", s.min_epoch);
		printf("signal        %s (root); this client: %s, %" PRIu64 " io_uring operations\n",
		       s.root_signal, s.signal, s.uring_ops);
		printf("bytes_in_use  %s (%" PRIu64 ")\n", tool_bytes(b1, sizeof(b1), s.bytes_in_use),
		       s.bytes_in_use);
		printf("capacity      %s (%" PRIu64 ")\n", tool_bytes(b1, sizeof(b1), s.capacity),
		       s.capacity);
		printf("tombstones    %" PRIu64 " (live)\n", s.tombstones);
		printf("reclaimed     %" PRIu64 " (objects, total)\n", s.reclaimed);
		printf("workers       %d (besides this one)\n", m);
		if (m) {
			printf("\n%5s %8s %-8s %10s %10s %8s %12s\n", "slot", "pid", "state", "cursor",
			       "epoch", "lag", "pinned");
			for (int i = 0; i < m; i++) {
				if (info[i].epoch == UINT64_MAX)
					snprintf(b2, sizeof(b2), "-");
				else
					snprintf(b2, sizeof(b2), "%" PRIu64, info[i].epoch);
				printf("%5u %8d %-8s %10" PRIu64 " %10s %8" PRIu64 " %12s\n", info[i].slot,
				       (int)info[i].pid, state_name(info[i].state), info[i].cursor, b2,
				       info[i].lag, tool_bytes(b1, sizeof(b1), info[i].pinned_bytes));
			}
		}
	}
	free(info);
	return finish_output();
}

/* ---- serve -------------------------------------------------------------------- */

static shmsync_root *served;

static void on_serve_stop(int sig)
{
	(void)sig;
	/* Writes an eventfd and sets a flag: safe in a signal handler. */
	if (served)
		shmsync_root_stop(served);
}

static int cmd_serve(struct ctx *c)
{
	char err[512] = "";
	shmsync_root_opts o = {0};
	o.socket_path = c->socket;
	o.capacity = c->capacity;
	o.max_workers = c->max_workers;
	o.stall_policy = c->stall_policy;
	o.max_read_pin_ns = c->max_read_pin_ns;
	o.max_read_pin_bytes = c->max_read_pin_bytes;
	o.port_ring_bytes = c->ring_bytes;
	o.allow_uids = c->n_allow_uids ? c->allow_uids : NULL;
	o.n_allow_uids = c->n_allow_uids;
	o.errbuf = err;
	o.errbuf_len = sizeof(err);
	shmsync_root *r;
	int rc = shmsync_root_open(&r, &o);
	if (rc < 0) {
		if (rc == -EADDRINUSE) /* a root, or another program: the message says which */
			tool_err("%s", err[0] ? err : "a root already serves the socket");
		else
			tool_err("cannot start the root on %s: %s", c->socket,
				 err[0] ? err : shmsync_strerror(rc));
		return rc == -EINVAL ? TOOL_USAGE : TOOL_FAIL;
	}
	served = r;
	catch_stop_signals(on_serve_stop);
	signal(SIGPIPE, SIG_IGN);
	if (!c->quiet)
		fprintf(stderr, "shmsync: serving %s (pid %d); SIGTERM or Ctrl-C stops it\n", c->socket,
			(int)getpid());
	rc = shmsync_root_run(r);
	shmsync_root_close(r);
	served = NULL;
	if (rc < 0) {
		tool_err("the root's loop failed: %s", shmsync_strerror(rc));
		return TOOL_FAIL;
	}
	return TOOL_OK;
}

/* ---- main ------------------------------------------------------------------- */

static const struct cmd cmds[] = {
	{"serve", cmd_serve, O_SOCKET | O_CAPACITY | O_MAXW | O_QUIET | O_STALL | O_RING | O_ALLOW, 0, 0, "",
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
	{"stat", cmd_stat, O_SOCKET | O_JSON, 0, 0, "",
	 "Prints the root's statistics and its workers (this command's own slot left out)."},
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
