/* The helpers every attaching subcommand shares: argument checks, messages
 * that name what failed, attach and commit. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

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
int decode_arg(struct ctx *c, const char *what, const char *arg, uint8_t **out, size_t *len)
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
int get_dir(struct ctx *c, char *arg)
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

int get_key(struct ctx *c, const char *arg, uint8_t **key, size_t *len)
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
char *subject(struct ctx *c, const char *dir, const void *key, size_t kn)
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

/* An error of an applied batch (or a read): exit 1 with one line. */
int fail(struct ctx *c, int rc, const char *dir, const void *key, size_t kn, enum absent absent)
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
int refuse(struct ctx *c, int rc, const char *dir, const void *key, size_t kn)
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

int attach(struct ctx *c)
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

int commit(struct ctx *c, shmsync_batch *b, uint64_t *tick)
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

int begin(struct ctx *c, shmsync_batch **b)
{
	int rc = shmsync_begin(c->w, b);
	if (rc < 0)
		tool_err("cannot start a batch: %s", shmsync_strerror(rc));
	return rc;
}

int finish_output(void)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		tool_err("write error on standard output: %s", strerror(errno));
		return TOOL_FAIL;
	}
	return TOOL_OK;
}

void catch_stop_signals(void (*fn)(int))
{
	struct sigaction sa = {0};
	sa.sa_handler = fn;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a wait should see the signal. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

int print_json(json_t *obj)
{
	int rc = obj ? json_dumpf(obj, stdout, JSON_COMPACT) : -1;
	json_decref(obj);
	if (rc < 0)
		return -1;
	putchar('\n');
	return 0;
}
