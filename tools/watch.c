/* shmsync watch: one line (or JSON object) per imported change. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"

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

int cmd_watch(struct ctx *c)
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
