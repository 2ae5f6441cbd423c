/* LMDB as its experts run it for this: one environment file on tmpfs
 * (/dev/shm), MDB_WRITEMAP | MDB_NOSYNC (no msync, writes go straight into
 * the shared mapping), one write transaction per batch, and readers that
 * renew one read-only transaction (mdb_txn_reset / mdb_txn_renew) instead of
 * allocating one per read. Propagation polls with renew + get: polling
 * mdb_env_info's me_last_txnid hung in an earlier try. A churn directory is a
 * key prefix "c<n>/", deleted with a cursor range walk. */
#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peers.h"

struct conn {
	MDB_env *env;
	MDB_dbi dbi;
	MDB_txn *rtxn; /* reset between uses; renewed to read */
	bool held;
};

static int fail(const char *what, int rc)
{
	fprintf(stderr, "peers: lmdb: %s: %s\n", what, mdb_strerror(rc));
	return -1;
}

static void path_of(const struct cfg *c, char *p, size_t n)
{
	snprintf(p, n, "%s/lmdb.mdb", c->tmpdir);
}

static void remove_files(const struct cfg *c)
{
	char p[512], l[600];
	path_of(c, p, sizeof p);
	snprintf(l, sizeof l, "%s-lock", p);
	unlink(p);
	unlink(l);
}

static int open_env(const struct cfg *c, MDB_env **env)
{
	char p[512];
	path_of(c, p, sizeof p);
	int rc = mdb_env_create(env);
	if (rc)
		return fail("env_create", rc);
	/* Address space only: WRITEMAP on tmpfs sizes the file sparsely. */
	if ((rc = mdb_env_set_mapsize(*env, (size_t)4 << 30)) || (rc = mdb_env_set_maxreaders(*env, 126)) ||
	    (rc = mdb_env_open(*env, p, MDB_NOSUBDIR | MDB_WRITEMAP | MDB_NOSYNC | MDB_NOTLS, 0600))) {
		mdb_env_close(*env);
		return fail("env_open", rc);
	}
	return 0;
}

static int lm_fresh(struct cfg *c)
{
	remove_files(c);
	MDB_env *env;
	MDB_txn *t;
	MDB_dbi dbi;
	if (open_env(c, &env) < 0)
		return -1;
	int rc = mdb_txn_begin(env, NULL, 0, &t);
	if (rc == 0 && (rc = mdb_dbi_open(t, NULL, 0, &dbi)) != 0)
		mdb_txn_abort(t);
	else if (rc == 0)
		rc = mdb_txn_commit(t);
	mdb_env_close(env);
	int major, minor, patch;
	snprintf(c->version, sizeof c->version, "%s", mdb_version(&major, &minor, &patch));
	return rc ? fail("create", rc) : 0;
}

static void lm_stop(struct cfg *c)
{
	remove_files(c);
}

static struct conn *lm_open(const struct cfg *c, enum role r)
{
	(void)r;
	struct conn *x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	if (open_env(c, &x->env) < 0) {
		free(x);
		return NULL;
	}
	MDB_txn *t;
	int rc = mdb_txn_begin(x->env, NULL, MDB_RDONLY, &t);
	if (rc == 0 && (rc = mdb_dbi_open(t, NULL, 0, &x->dbi)) == 0) {
		mdb_txn_reset(t);
		x->rtxn = t;
		return x;
	}
	if (rc == 0)
		mdb_txn_abort(t);
	fail("open", rc);
	mdb_env_close(x->env);
	free(x);
	return NULL;
}

static void lm_close(struct conn *x)
{
	mdb_txn_abort(x->rtxn);
	mdb_env_close(x->env);
	free(x);
}

static int lm_put_batch(struct conn *x, const uint32_t *ids, size_t n, uint64_t tag, uint64_t *token)
{
	MDB_txn *t;
	int rc = mdb_txn_begin(x->env, NULL, 0, &t);
	if (rc)
		return fail("txn_begin", rc);
	for (size_t i = 0; i < n; i++) {
		char k[KEY_LEN];
		uint8_t v[VAL_LEN];
		key_of(ids[i], k);
		val_of(ids[i], tag, v);
		MDB_val mk = {KEY_LEN, k}, mv = {VAL_LEN, v};
		if ((rc = mdb_put(t, x->dbi, &mk, &mv, 0))) {
			mdb_txn_abort(t);
			return fail("put", rc);
		}
	}
	if ((rc = mdb_txn_commit(t)))
		return fail("commit", rc);
	*token = 0;
	return 0;
}

static int lm_sync_to(struct conn *x, uint64_t token)
{
	(void)x;
	(void)token; /* a renewed read transaction sees every commit */
	return 0;
}

static int lm_snap_begin(struct conn *x)
{
	int rc = mdb_txn_renew(x->rtxn);
	return rc ? fail("txn_renew", rc) : 0;
}

static int lm_snap_end(struct conn *x)
{
	mdb_txn_reset(x->rtxn);
	return 0;
}

static int lm_get(struct conn *x, uint32_t id, uint8_t *out)
{
	char k[KEY_LEN];
	key_of(id, k);
	MDB_val mk = {KEY_LEN, k}, mv;
	int rc = mdb_get(x->rtxn, x->dbi, &mk, &mv);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return fail("get", rc);
	if (mv.mv_size != VAL_LEN) {
		fprintf(stderr, "peers: lmdb: get: value of %zu bytes\n", mv.mv_size);
		return -1;
	}
	memcpy(out, mv.mv_data, VAL_LEN);
	return 1;
}

static int lm_publish(struct conn *x, uint32_t id, uint64_t seq)
{
	uint64_t token;
	return lm_put_batch(x, &id, 1, seq, &token);
}

static int lm_await(struct conn *x, uint32_t id, uint64_t seq, enum wait_mode m, bool yield)
{
	(void)m; /* LMDB has no notification: it is measured polling only */
	uint8_t v[VAL_LEN];
	uint64_t end = now_ns() + WAIT_LIMIT_NS;
	for (unsigned n = 0;; n++) {
		if (lm_snap_begin(x) < 0)
			return -1;
		int rc = lm_get(x, id, v);
		lm_snap_end(x);
		if (rc < 0)
			return -1;
		if (rc == 1 && val_tag(v) >= seq)
			return 0;
		if ((n & 1023) == 0 && now_ns() > end) {
			fprintf(stderr, "peers: lmdb: seq %llu not seen in 60 s\n", (unsigned long long)seq);
			return -1;
		}
		poll_pause(yield);
	}
}

static void dir_key(long dir, uint32_t id, char *k)
{
	/* "c%06ld/" and then the 9-byte key: 17 bytes */
	dir_prefix(dir, k);
	key_of(id, k + 8);
}

static int lm_churn(struct conn *x, long create, long drop, unsigned keys)
{
	MDB_txn *t;
	int rc = mdb_txn_begin(x->env, NULL, 0, &t);
	if (rc)
		return fail("txn_begin", rc);
	for (unsigned i = 0; i < keys; i++) {
		char k[8 + KEY_LEN];
		uint8_t v[VAL_LEN];
		dir_key(create, i, k);
		val_of(i, (uint64_t)create, v);
		MDB_val mk = {sizeof k, k}, mv = {VAL_LEN, v};
		if ((rc = mdb_put(t, x->dbi, &mk, &mv, 0)))
			goto bad;
	}
	if (drop >= 0) {
		/* The directory is whatever sorts under its prefix. */
		char pfx[8];
		dir_prefix(drop, pfx);
		MDB_cursor *cur;
		if ((rc = mdb_cursor_open(t, x->dbi, &cur)))
			goto bad;
		MDB_val mk = {8, pfx}, mv;
		rc = mdb_cursor_get(cur, &mk, &mv, MDB_SET_RANGE);
		while (rc == 0 && mk.mv_size >= 8 && !memcmp(mk.mv_data, pfx, 8)) {
			if ((rc = mdb_cursor_del(cur, 0)))
				break;
			rc = mdb_cursor_get(cur, &mk, &mv, MDB_GET_CURRENT);
		}
		mdb_cursor_close(cur);
		/* After the last entry of the database a deleted cursor has
		 * no current item: EINVAL there means the walk is done. */
		if (rc != 0 && rc != MDB_NOTFOUND && rc != EINVAL)
			goto bad;
	}
	if ((rc = mdb_txn_commit(t)))
		return fail("commit", rc);
	return 0;
bad:
	mdb_txn_abort(t);
	return fail("churn", rc);
}

static int lm_mem(struct conn *x, struct mem *m, bool settle)
{
	(void)settle; /* freed pages go to the freelist at commit; nothing to wait for */
	MDB_envinfo info;
	MDB_stat st, db;
	int rc;
	if ((rc = mdb_env_info(x->env, &info)) || (rc = mdb_env_stat(x->env, &st)))
		return fail("env_info", rc);
	if (lm_snap_begin(x) < 0)
		return -1;
	rc = mdb_stat(x->rtxn, x->dbi, &db);
	lm_snap_end(x);
	if (rc)
		return fail("stat", rc);
	/* Pages up to the high-water mark are what the tmpfs file holds. */
	m->bytes = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
	m->detail[0] = (db.ms_branch_pages + db.ms_leaf_pages + db.ms_overflow_pages) * (uint64_t)st.ms_psize;
	m->detail_name[0] = "live_tree_bytes";
	m->detail[1] = db.ms_entries;
	m->detail_name[1] = "entries";
	m->detail[2] = st.ms_psize;
	m->detail_name[2] = "page_size";
	return 0;
}

static int lm_hold(struct conn *x)
{
	if (x->held)
		return 0;
	x->held = true;
	return lm_snap_begin(x);
}

static int lm_release(struct conn *x)
{
	if (x->held)
		lm_snap_end(x);
	x->held = false;
	return 0;
}

const struct backend be_lmdb = {
	.name = "lmdb",
	.durability = "MDB_WRITEMAP + MDB_NOSYNC (+ MDB_NOSUBDIR, MDB_NOTLS), file on tmpfs (/dev/shm): no "
		      "msync/fsync; lost with the machine",
	.memory = "(me_last_pgno + 1) * psize (mdb_env_info, mdb_env_stat): pages the tmpfs file holds",
	.server = false,
	.poll = true,
	.sleep = false,
	.snapshots = true,
	.fresh = lm_fresh,
	.stop = lm_stop,
	.open = lm_open,
	.close = lm_close,
	.put_batch = lm_put_batch,
	.sync_to = lm_sync_to,
	.snap_begin = lm_snap_begin,
	.snap_end = lm_snap_end,
	.get = lm_get,
	.publish = lm_publish,
	.await = lm_await,
	.churn = lm_churn,
	.mem = lm_mem,
	.hold = lm_hold,
	.release = lm_release,
};
