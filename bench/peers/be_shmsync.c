/* shmsync through its public API, with its root in its own process:
 * `shmsync serve`, as a user runs it. Keys live in the directory /kv/; a
 * churn directory is /c<n>/. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "peers.h"
#include "shmsync.h"

static const char KV[] = "/kv/";

struct conn {
	shmsync_worker *w;
	enum role role;
};

static int fail(const char *what, int rc)
{
	fprintf(stderr, "peers: shmsync: %s: %s\n", what, shmsync_strerror(rc));
	return -1;
}

static void sh_stop(struct cfg *c)
{
	if (c->server_pid > 0) {
		int st = stop_server(c->server_pid, "shmsync serve");
		if (st != 0)
			fprintf(stderr, "peers: shmsync serve exited with status %#x\n", (unsigned)st);
	}
	c->server_pid = 0;
}

static int attach(const char *sock, shmsync_worker **w)
{
	char err[256] = "";
	int rc = shmsync_attach_msg(w, sock, err, sizeof err);
	if (rc < 0)
		fprintf(stderr, "peers: shmsync: attach %s: %s: %s\n", sock, shmsync_strerror(rc), err);
	return rc;
}

/* Commits b and waits for it; *tick is the tick that holds it. */
static int commit(shmsync_worker *w, shmsync_batch *b, uint64_t *tick)
{
	uint64_t seq, t = 0;
	int rc = shmsync_export(b, 0, &seq);
	if (rc < 0)
		return fail("export", rc);
	rc = shmsync_wait_committed(w, seq, &t, (int64_t)WAIT_LIMIT_NS);
	if (rc < 0)
		return fail("wait_committed", rc);
	if (tick)
		*tick = t;
	return 0;
}

/* A fresh root: the state lives as long as the root process, so a new store
 * is a new `shmsync serve`. */
static int sh_fresh(struct cfg *c)
{
	sh_stop(c);
	snprintf(c->sock, sizeof c->sock, "%s/shmsync.sock", c->tmpdir);
	unlink(c->sock);
	char *argv[] = {(char *)c->shmsync_tool, "serve",   "--socket", c->sock, "--capacity",
			(char *)c->capacity,     "--quiet", NULL};
	c->server_pid = spawn_server(argv, c->cpu[1]);
	if (c->server_pid < 0)
		return -1;
	uint64_t end = now_ns() + 20ull * 1000000000ull;
	struct stat st;
	while (stat(c->sock, &st) != 0) {
		if (now_ns() > end) {
			fprintf(stderr, "peers: shmsync serve did not create %s in 20 s\n", c->sock);
			return -1;
		}
		usleep(2000);
	}
	shmsync_worker *w;
	if (attach(c->sock, &w) < 0)
		return -1;
	shmsync_batch *b;
	int rc = shmsync_begin(w, &b);
	if (rc < 0 || (rc = shmsync_mkdir(b, KV)) < 0) {
		shmsync_detach(w);
		return fail("mkdir", rc);
	}
	rc = commit(w, b, NULL);
	shmsync_detach(w);
	snprintf(c->version, sizeof c->version, "%s", shmsync_version());
	return rc;
}

static struct conn *sh_open(const struct cfg *c, enum role r)
{
	struct conn *x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	x->role = r;
	if (attach(c->sock, &x->w) < 0) {
		free(x);
		return NULL;
	}
	/* Import up to the present, then pin nothing until asked: writers
	 * and a churn reader waiting for its turn hold no snapshot. */
	int rc;
	while ((rc = shmsync_import_next(x->w, 0, NULL, NULL)) >= 0)
		;
	if (rc != -ETIMEDOUT) {
		fail("import", rc);
		shmsync_detach(x->w);
		free(x);
		return NULL;
	}
	if (r == ROLE_WRITER || r == ROLE_CHECK || r == ROLE_CHURN_WRITER || r == ROLE_CHURN_READER ||
	    r == ROLE_MEM)
		shmsync_offline(x->w);
	return x;
}

static void sh_close(struct conn *x)
{
	shmsync_detach(x->w);
	free(x);
}

static int sh_put_batch(struct conn *x, const uint32_t *ids, size_t n, uint64_t tag, uint64_t *token)
{
	shmsync_batch *b;
	int rc = shmsync_begin(x->w, &b);
	if (rc < 0)
		return fail("begin", rc);
	for (size_t i = 0; i < n; i++) {
		char k[KEY_LEN];
		uint8_t v[VAL_LEN];
		key_of(ids[i], k);
		val_of(ids[i], tag, v);
		if ((rc = shmsync_put(b, KV, k, KEY_LEN, v, VAL_LEN)) < 0) {
			shmsync_abort(b);
			return fail("put", rc);
		}
	}
	return commit(x->w, b, token);
}

static int sh_sync_to(struct conn *x, uint64_t token)
{
	int rc = shmsync_import_until(x->w, token, (int64_t)WAIT_LIMIT_NS, NULL, NULL);
	return rc < 0 && rc != -ETIMEDOUT ? fail("import_until", rc) : 0;
}

/* A reader's snapshot moves on with an import; with nothing new it costs a
 * look at the tick word. */
static int sh_snap_begin(struct conn *x)
{
	int rc = shmsync_import_next(x->w, 0, NULL, NULL);
	return rc < 0 && rc != -ETIMEDOUT ? fail("import_next", rc) : 0;
}

static int sh_snap_end(struct conn *x)
{
	(void)x;
	return 0;
}

static int sh_get(struct conn *x, uint32_t id, uint8_t *out)
{
	char k[KEY_LEN];
	shmsync_view v;
	key_of(id, k);
	int rc = shmsync_get(x->w, KV, k, KEY_LEN, &v);
	if (rc == -ENOENT)
		return 0;
	if (rc < 0)
		return fail("get", rc);
	if (v.len != VAL_LEN) {
		fprintf(stderr, "peers: shmsync: get: value of %zu bytes\n", v.len);
		return -1;
	}
	memcpy(out, v.data, VAL_LEN);
	return 1;
}

static int sh_publish(struct conn *x, uint32_t id, uint64_t seq)
{
	shmsync_batch *b;
	char k[KEY_LEN];
	uint8_t v[VAL_LEN];
	uint64_t s;
	key_of(id, k);
	val_of(id, seq, v);
	int rc = shmsync_begin(x->w, &b);
	if (rc < 0)
		return fail("begin", rc);
	if ((rc = shmsync_put(b, KV, k, KEY_LEN, v, VAL_LEN)) < 0) {
		shmsync_abort(b);
		return fail("put", rc);
	}
	/* No wait_committed: the other side's import is the acknowledgement
	 * that matters here, and nothing waits for these results. */
	rc = shmsync_export(b, 0, &s);
	return rc < 0 ? fail("export", rc) : 0;
}

struct seen {
	char key[KEY_LEN];
	uint64_t seq;
};

static int on_change(const shmsync_change *c, void *arg)
{
	struct seen *s = arg;
	if (c->kind == SHMSYNC_PUT && c->key_len == KEY_LEN && c->value_len == VAL_LEN &&
	    !memcmp(c->key, s->key, KEY_LEN) && !strcmp(c->dir, KV)) {
		uint64_t t = val_tag(c->value);
		if (t > s->seq)
			s->seq = t;
	}
	return 0;
}

static int sh_await(struct conn *x, uint32_t id, uint64_t seq, enum wait_mode m, bool yield)
{
	(void)yield;
	struct seen s = {.seq = 0};
	key_of(id, s.key);
	uint64_t end = now_ns() + WAIT_LIMIT_NS;
	/* Sleeping waits use a finite timeout only so a dead peer is noticed. */
	int64_t timeout = m == WAIT_POLL ? 0 : 1000000000;
	for (;;) {
		int rc = shmsync_import_next(x->w, timeout, on_change, &s);
		if (s.seq >= seq)
			return 0;
		if (rc < 0 && rc != -ETIMEDOUT)
			return fail("import_next", rc);
		if (rc == -ETIMEDOUT) {
			if (now_ns() > end) {
				fprintf(stderr, "peers: shmsync: seq %llu not seen in 60 s\n",
					(unsigned long long)seq);
				return -1;
			}
			/* No sched_yield here: a poll that finds nothing yields
			 * in the library itself (every 5 us), which is what a
			 * user's loop gets. */
			if (m == WAIT_POLL)
				poll_pause(false);
		}
	}
}

static int sh_churn(struct conn *x, long create, long drop, unsigned keys)
{
	shmsync_batch *b;
	char dir[32];
	int rc = shmsync_begin(x->w, &b);
	if (rc < 0)
		return fail("begin", rc);
	snprintf(dir, sizeof dir, "/c%06ld/", create);
	if ((rc = shmsync_mkdir(b, dir)) < 0)
		goto bad;
	for (unsigned i = 0; i < keys; i++) {
		char k[KEY_LEN];
		uint8_t v[VAL_LEN];
		key_of(i, k);
		val_of(i, (uint64_t)create, v);
		if ((rc = shmsync_put(b, dir, k, KEY_LEN, v, VAL_LEN)) < 0)
			goto bad;
	}
	if (drop >= 0) {
		snprintf(dir, sizeof dir, "/c%06ld/", drop);
		if ((rc = shmsync_rmdir(b, dir)) < 0)
			goto bad;
	}
	return commit(x->w, b, NULL);
bad:
	shmsync_abort(b);
	return fail("churn batch", rc);
}

static int sh_mem(struct conn *x, struct mem *m, bool settle)
{
	shmsync_stats st;
	int rc;
	if (settle) {
		/* bytes_in_use is what the root last published; give it time to
		 * finish reclaiming and publish again (it does at least every
		 * 50 ms), until two readings 100 ms apart agree. */
		uint64_t last = UINT64_MAX;
		for (int i = 0; i < 50; i++) {
			usleep(100000);
			if ((rc = shmsync_stat(x->w, &st)) < 0)
				return fail("stat", rc);
			if (st.bytes_in_use == last)
				break;
			last = st.bytes_in_use;
		}
	}
	if ((rc = shmsync_stat(x->w, &st)) < 0)
		return fail("stat", rc);
	m->bytes = st.bytes_in_use;
	m->detail[0] = st.capacity;
	m->detail_name[0] = "capacity";
	m->detail[1] = st.tombstones;
	m->detail_name[1] = "tombstones";
	m->detail[2] = st.reclaimed;
	m->detail_name[2] = "reclaimed";
	m->detail[3] = st.segment_bytes;
	m->detail_name[3] = "segment_bytes";
	m->detail[4] = st.huge_bytes;
	m->detail_name[4] = "huge_bytes";
	return 0;
}

static int sh_hold(struct conn *x)
{
	/* Online at the newest snapshot, and it stays pinned: no import, no
	 * offline until release. */
	int rc;
	while ((rc = shmsync_import_next(x->w, 0, NULL, NULL)) >= 0)
		;
	return rc != -ETIMEDOUT ? fail("import", rc) : 0;
}

static int sh_release(struct conn *x)
{
	shmsync_offline(x->w);
	return 0;
}

const struct backend be_shmsync = {
	.name = "shmsync",
	.durability = "volatile by design: the state lives in the root process's memory (a memfd) and "
		      "is lost with it; no persistence exists to turn off",
	.memory = "shmsync_stat bytes_in_use (includes the change-log ring: capacity/16, at most 64 MiB)",
	.server = true,
	.poll = true,
	.sleep = true,
	.snapshots = true,
	.fresh = sh_fresh,
	.stop = sh_stop,
	.open = sh_open,
	.close = sh_close,
	.put_batch = sh_put_batch,
	.sync_to = sh_sync_to,
	.snap_begin = sh_snap_begin,
	.snap_end = sh_snap_end,
	.get = sh_get,
	.publish = sh_publish,
	.await = sh_await,
	.churn = sh_churn,
	.mem = sh_mem,
	.hold = sh_hold,
	.release = sh_release,
};
