/* Shared by the subcommands that attach as a worker (tools/kv.c, watch.c,
 * stat.c, serve.c) and the dispatcher (tools/main.c): the parsed command
 * line and the helpers that turn the library's errors into one line on
 * stderr and an exit code. */
#ifndef SHMSYNC_TOOL_CMD_H
#define SHMSYNC_TOOL_CMD_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

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
	O_NUMA = 1 << 15,
	O_PROM = 1 << 16, /* --prometheus */
	O_REPL = 1 << 17, /* --replicate, --follow and their settings */
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
	bool force, prometheus;
	int numa_policy, numa_node; /* SHMSYNC_NUMA_*, 0: the default (interleave) */
	shmsync_root_opts repl;     /* serve: the replication settings only (tool_repl_option) */
	size_t log_bytes;
	size_t prefault_bytes;
	char **args;
	int nargs;
	shmsync_worker *w;
};

/* ---- names, messages (tools/common.c) -------------------------------------- */

/* Which name a -ENOENT of an applied batch or a read points at. */
enum absent { A_DIR, A_KEY, A_DIR_OR_KEY };

/* A KEY or VALUE argument: in the encoding asked for, or as it is with
 * --raw. */
int decode_arg(struct ctx *c, const char *what, const char *arg, uint8_t **out, size_t *len);
/* A DIR argument, decoded in place and checked. */
int get_dir(struct ctx *c, char *arg);
/* A KEY argument, decoded and checked against the key length limits. */
int get_key(struct ctx *c, const char *arg, uint8_t **key, size_t *len);
/* "DIR KEY" as shown in messages (malloc'd; NULL when out of memory). */
char *subject(struct ctx *c, const char *dir, const void *key, size_t kn);
/* An error of an applied batch (or a read): exit 1 with one line. */
int fail(struct ctx *c, int rc, const char *dir, const void *key, size_t kn, enum absent absent);
/* A batch call refused an argument at once: a usage error. */
int refuse(struct ctx *c, int rc, const char *dir, const void *key, size_t kn);

/* ---- attach, commit, output (tools/common.c) ------------------------------- */

int attach(struct ctx *c);
int commit(struct ctx *c, shmsync_batch *b, uint64_t *tick);
int begin(struct ctx *c, shmsync_batch **b);
int finish_output(void);
/* SIGINT and SIGTERM to fn, without SA_RESTART. */
void catch_stop_signals(void (*fn)(int));
/* One JSON object on a line of stdout; consumes obj. Returns 0 or -1. */
int print_json(json_t *obj);

/* ---- the subcommands ------------------------------------------------------- */

int cmd_put(struct ctx *c);   /* tools/kv.c */
int cmd_get(struct ctx *c);   /* tools/kv.c */
int cmd_del(struct ctx *c);   /* tools/kv.c */
int cmd_add(struct ctx *c);   /* tools/kv.c */
int cmd_mkdir(struct ctx *c); /* tools/kv.c */
int cmd_rmdir(struct ctx *c); /* tools/kv.c */
int cmd_ls(struct ctx *c);    /* tools/kv.c */
int cmd_watch(struct ctx *c); /* tools/watch.c */
int cmd_stat(struct ctx *c);  /* tools/stat.c */
int cmd_serve(struct ctx *c); /* tools/serve.c */

#endif
