/* Shared by the parts of the shmsync command-line tool: messages, argument
 * parsing and the byte encodings (escaped text, hex, base64). */
#ifndef SHMSYNC_TOOL_H
#define SHMSYNC_TOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes: the contract with scripts (see shmsync(1)). */
enum {
	TOOL_OK = 0,
	TOOL_FAIL = 1,  /* absent, a condition failed, or the operation failed */
	TOOL_USAGE = 2, /* bad arguments or environment */
};

/* The subcommand being run, for messages ("shmsync: get: ..."). */
extern const char *tool_cmd;

/* One line on stderr: "shmsync: CMD: message". */
void tool_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parsers: each returns 0, or -1 after printing why the argument is bad
 * (what names the argument in the message, e.g. "--capacity"). */
int tool_parse_size(const char *what, const char *s, size_t *out);
int tool_parse_uint(const char *what, const char *s, unsigned long long min, unsigned long long max,
		    unsigned long long *out);
int tool_parse_int64(const char *what, const char *s, int64_t *out);
int tool_parse_seconds(const char *what, const char *s, double min, double max, double *out);
/* --numa interleave|bind:NODE|none into SHMSYNC_NUMA_* and the node (0
 * unless bind). Whether the node exists is the library's to say, with the
 * list of those that do. */
int tool_parse_numa(const char *s, int *policy, int *node);

/* The replication options serve and run share, into a root's options:
 * 0, or -1 after printing why. tool_repl_check then checks them together
 * (a stream with either URL list, not both URL lists, no setting without
 * one). The struct is shmsync.h's; tool.h does not include it. */
enum tool_repl_opt {
	TOOL_REPL_REPLICATE,
	TOOL_REPL_FOLLOW,
	TOOL_REPL_STREAM,
	TOOL_REPL_DURABLE,
	TOOL_REPL_REPLICAS,
	TOOL_REPL_LEASE,
	TOOL_REPL_SNAP_TICKS,
	TOOL_REPL_SNAP_BYTES,
	TOOL_REPL_WINDOW,
};
struct shmsync_root_opts;
int tool_repl_option(enum tool_repl_opt which, const char *arg, struct shmsync_root_opts *ro);
int tool_repl_check(const struct shmsync_root_opts *ro);

/* How keys and values are read from arguments and written to output. */
enum tool_enc {
	ENC_TEXT,   /* \\ and \xNN escapes, in arguments and on output (none if raw) */
	ENC_HEX,    /* lowercase hex digits, two per byte */
	ENC_BASE64, /* RFC 4648 standard alphabet, padded */
};

/* Decodes an argument in enc into a malloc'd buffer (NUL-terminated for
 * convenience, the NUL not counted). ENC_TEXT undoes the escapes tool_write
 * prints, so output can be given back; the caller copies an argument that
 * is to be taken as it is (--raw). Returns 0, or -1 after a message. */
int tool_decode(enum tool_enc enc, const char *what, const char *s, uint8_t **out, size_t *len);

/* Writes bytes to f in enc; ENC_TEXT escapes unless raw, and with
 * escape_space also escapes ' ' (for space-separated fields). */
void tool_write(FILE *f, enum tool_enc enc, bool raw, bool escape_space, const void *p, size_t n);

/* The same, into a malloc'd NUL-terminated string (for messages and JSON). */
char *tool_encode(enum tool_enc enc, const void *p, size_t n);

/* Human-readable bytes, e.g. "1.5 MiB", into buf. */
const char *tool_bytes(char *buf, size_t len, uint64_t n);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t tool_now_ns(void);

/* Default for --socket: $SHMSYNC_SOCKET; checks the length either way.
 * Returns 0, or -1 after a message. */
int tool_socket(const char *given, const char **out);

/* The demo subcommand (tools/demo.c). */
int demo_main(int argc, char **argv);
/* shmsync run (tools/run.c): argv[0] is "run". */
int tool_run(int argc, char **argv);

#endif
