/* The subcommands on keys and directories: put, get, del, add, mkdir,
 * rmdir, ls. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

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

/* The DIR and KEY arguments (args[1]) checked, then attached. Returns
 * TOOL_OK, or the exit code after a message. */
static int dir_key_attach(struct ctx *c, char *dir, uint8_t **key, size_t *kn)
{
	if (get_dir(c, dir) < 0 || get_key(c, c->args[1], key, kn) < 0)
		return TOOL_USAGE;
	return attach(c);
}

int cmd_put(struct ctx *c)
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

int cmd_del(struct ctx *c)
{
	char *dir = c->args[0];
	uint8_t *key = NULL;
	size_t kn;
	int ret = dir_key_attach(c, dir, &key, &kn);
	if (ret != TOOL_OK)
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

int cmd_mkdir(struct ctx *c)
{
	return dirs_batch(c, shmsync_mkdir);
}

int cmd_rmdir(struct ctx *c)
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

/* The counter's value at this worker's snapshot and its tick (0 and 0 when
 * absent). Returns -1 to go on, or the exit code after a message. */
static int read_counter(struct ctx *c, const char *dir, const uint8_t *key, size_t kn, int64_t *cur,
			uint64_t *expect)
{
	shmsync_view v;
	*cur = 0;
	*expect = 0;
	int rc = shmsync_get(c->w, dir, key, kn, &v);
	if (rc == -ENOENT)
		return -1;
	if (rc < 0)
		return fail(c, rc, dir, key, kn, A_DIR_OR_KEY);
	if (v.len != 8) {
		char *s = subject(c, dir, key, kn);
		tool_err("%s: the value is not a counter (8 bytes, little-endian int64; it "
			 "has %zu)",
			 s ? s : dir, v.len);
		free(s);
		return TOOL_FAIL;
	}
	uint8_t le[8];
	memcpy(le, v.data, 8);
	uint64_t u = 0;
	for (int i = 7; i >= 0; i--)
		u = u << 8 | le[i];
	*cur = (int64_t)u;
	*expect = v.tick;
	return -1;
}

/* One try: puts next if the counter still has the tick expect. Returns -1
 * when the put was not committed (*rc says why), else the exit code. */
static int put_counter(struct ctx *c, const char *dir, const uint8_t *key, size_t kn, int64_t next,
		       uint64_t expect, int *rc)
{
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)((uint64_t)next >> (8 * i));
	shmsync_batch *b;
	if (begin(c, &b) < 0)
		return TOOL_FAIL;
	*rc = shmsync_put_if_tick(b, dir, key, kn, le, 8, expect);
	if (*rc < 0) {
		shmsync_abort(b);
		return refuse(c, *rc, dir, key, kn);
	}
	*rc = commit(c, b, NULL);
	if (*rc == 0) {
		printf("%" PRId64 "\n", next);
		return finish_output();
	}
	return -1;
}

/* A conditional put of the new value, retried on conflict: unlike a plain
 * shmsync_add, the value printed is exactly the one this command wrote, even
 * when others add to the same counter in the same group commit. */
int cmd_add(struct ctx *c)
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
	int64_t deadline = tool_now_ns() + c->timeout_ns;
	for (;;) {
		int64_t cur, next;
		uint64_t expect;
		if ((ret = read_counter(c, dir, key, kn, &cur, &expect)) >= 0)
			goto out;
		if (__builtin_add_overflow(cur, delta, &next)) {
			char *s = subject(c, dir, key, kn);
			tool_err("%s: %" PRId64 " + %" PRId64 " overflows a signed 64-bit integer",
				 s ? s : dir, cur, delta);
			free(s);
			ret = TOOL_FAIL;
			goto out;
		}
		int rc;
		if ((ret = put_counter(c, dir, key, kn, next, expect, &rc)) >= 0)
			goto out;
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

int cmd_get(struct ctx *c)
{
	char *dir = c->args[0];
	uint8_t *key = NULL;
	size_t kn;
	/* Attach puts the worker online at the published tick: its snapshot
	 * is the newest there is, no import needed. */
	int ret = dir_key_attach(c, dir, &key, &kn);
	if (ret != TOOL_OK)
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

int cmd_ls(struct ctx *c)
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
