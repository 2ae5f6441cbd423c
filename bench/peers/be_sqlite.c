/* SQLite as its experts run it for this: WAL mode with the database, its WAL
 * and its shared-memory index on tmpfs, synchronous=OFF, one WITHOUT ROWID
 * table (the key is the primary key, so a lookup is one B-tree descent),
 * every statement prepared once, one transaction per batch (BEGIN
 * IMMEDIATE, so a writer takes the lock up front instead of upgrading and
 * failing), memory-mapped reads, a busy handler that retries at once for
 * the second writer, and readers that batch their gets in one read
 * transaction. Propagation polls
 * `PRAGMA data_version`, which changes when another connection commits. A
 * churn directory is a key prefix "c<n>/", deleted with one range DELETE. */
#include <errno.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "peers.h"

enum { S_PUT, S_GET, S_BEGINW, S_BEGINR, S_COMMIT, S_DV, S_DELRANGE, S_PAGES, S_PAGESZ, S_FREE, S_CKPT, S_N };

static const char *const SQL[S_N] = {
	[S_PUT] = "INSERT OR REPLACE INTO kv(k, v) VALUES (?1, ?2)",
	[S_GET] = "SELECT v FROM kv WHERE k = ?1",
	[S_BEGINW] = "BEGIN IMMEDIATE",
	[S_BEGINR] = "BEGIN",
	[S_COMMIT] = "COMMIT",
	[S_DV] = "PRAGMA data_version",
	[S_DELRANGE] = "DELETE FROM kv WHERE k >= ?1 AND k < ?2",
	[S_PAGES] = "PRAGMA page_count",
	[S_PAGESZ] = "PRAGMA page_size",
	[S_FREE] = "PRAGMA freelist_count",
	[S_CKPT] = "PRAGMA wal_checkpoint(TRUNCATE)",
};

struct conn {
	sqlite3 *db;
	sqlite3_stmt *st[S_N];
	int64_t data_version;
	bool held;
	char wal[600];
};

static int fail(sqlite3 *db, const char *what)
{
	fprintf(stderr, "peers: sqlite: %s: %s\n", what, db ? sqlite3_errmsg(db) : "out of memory");
	return -1;
}

static void path_of(const struct cfg *c, char *p, size_t n)
{
	snprintf(p, n, "%s/sqlite.db", c->tmpdir);
}

static void remove_files(const struct cfg *c)
{
	char p[512], q[600];
	path_of(c, p, sizeof p);
	unlink(p);
	snprintf(q, sizeof q, "%s-wal", p);
	unlink(q);
	snprintf(q, sizeof q, "%s-shm", p);
	unlink(q);
}

/* Runs a statement that returns nothing, or one integer into *out. */
static int run(struct conn *x, int s, int64_t *out)
{
	sqlite3_stmt *st = x->st[s];
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && out)
		*out = sqlite3_column_int64(st, 0);
	while (rc == SQLITE_ROW)
		rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : fail(x->db, SQL[s]);
}

static int exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "peers: sqlite: %s: %s\n", sql, err ? err : sqlite3_errmsg(db));
		sqlite3_free(err);
		return -1;
	}
	return 0;
}

/* The default busy handler sleeps 1, 2, 5, 10 ... 100 ms between tries:
 * made for disks, it leaves a second writer asleep long after the lock is
 * free (11K writes/s in a try, against 80K+ with this). A lock held for
 * microseconds by a process on the other core is worth retrying at once. */
static int on_busy(void *arg, int count)
{
	(void)arg;
	if (count > 20000000)
		return 0; /* minutes: give up, the step reports SQLITE_BUSY */
	if (count > 1000)
		usleep(20);
	else
		sched_yield();
	return 1;
}

static int sq_fresh(struct cfg *c)
{
	char p[512];
	sqlite3 *db;
	remove_files(c);
	path_of(c, p, sizeof p);
	if (sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
		fail(db, "open");
		sqlite3_close(db);
		return -1;
	}
	/* journal_mode=WAL is stored in the file: every later connection
	 * gets it. */
	int rc = exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB NOT NULL) "
			  "WITHOUT ROWID");
	sqlite3_close(db);
	snprintf(c->version, sizeof c->version, "%s", sqlite3_libversion());
	return rc;
}

static void sq_stop(struct cfg *c)
{
	remove_files(c);
}

static void sq_close(struct conn *x)
{
	for (int i = 0; i < S_N; i++)
		sqlite3_finalize(x->st[i]);
	sqlite3_close(x->db);
	free(x);
}

static struct conn *sq_open(const struct cfg *c, enum role r)
{
	(void)r;
	char p[512];
	struct conn *x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	path_of(c, p, sizeof p);
	snprintf(x->wal, sizeof x->wal, "%s-wal", p);
	if (sqlite3_open_v2(p, &x->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		fail(x->db, "open");
		sq_close(x);
		return NULL;
	}
	/* synchronous=OFF: no fsync at all (the files are on tmpfs anyway).
	 * mmap_size: reads straight from the mapping instead of copying each
	 * page into the page cache. cache_size: 256 MiB, so writes never evict.
	 * journal_size_limit: after a checkpoint the WAL is cut back instead
	 * of keeping its high-water size on tmpfs. */
	/* The busy handler first: the first connection to a WAL database
	 * runs its recovery under a lock, and a second process opening it at
	 * the same moment would see "database is locked" in these pragmas. */
	if (sqlite3_busy_handler(x->db, on_busy, NULL) != SQLITE_OK ||
	    exec(x->db, "PRAGMA synchronous=OFF; PRAGMA mmap_size=4294967296; PRAGMA cache_size=-262144; "
			"PRAGMA journal_size_limit=4194304") < 0) {
		sq_close(x);
		return NULL;
	}
	for (int i = 0; i < S_N; i++) {
		if (sqlite3_prepare_v3(x->db, SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &x->st[i], NULL) !=
		    SQLITE_OK) {
			fail(x->db, SQL[i]);
			sq_close(x);
			return NULL;
		}
	}
	if (run(x, S_DV, &x->data_version) < 0) {
		sq_close(x);
		return NULL;
	}
	return x;
}

static int put_one(struct conn *x, const void *k, size_t kn, uint32_t id, uint64_t tag)
{
	uint8_t v[VAL_LEN];
	sqlite3_stmt *st = x->st[S_PUT];
	val_of(id, tag, v);
	if (sqlite3_bind_blob(st, 1, k, (int)kn, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_blob(st, 2, v, VAL_LEN, SQLITE_TRANSIENT) != SQLITE_OK)
		return fail(x->db, "bind");
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : fail(x->db, "insert");
}

static int sq_put_batch(struct conn *x, const uint32_t *ids, size_t n, uint64_t tag, uint64_t *token)
{
	*token = 0;
	if (run(x, S_BEGINW, NULL) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char k[KEY_LEN];
		key_of(ids[i], k);
		if (put_one(x, k, KEY_LEN, ids[i], tag) < 0) {
			exec(x->db, "ROLLBACK");
			return -1;
		}
	}
	return run(x, S_COMMIT, NULL);
}

static int sq_sync_to(struct conn *x, uint64_t token)
{
	(void)x;
	(void)token; /* the next read transaction sees every commit */
	return 0;
}

static int sq_snap_begin(struct conn *x)
{
	return run(x, S_BEGINR, NULL);
}

static int sq_snap_end(struct conn *x)
{
	return run(x, S_COMMIT, NULL);
}

static int sq_get(struct conn *x, uint32_t id, uint8_t *out)
{
	char k[KEY_LEN];
	sqlite3_stmt *st = x->st[S_GET];
	key_of(id, k);
	if (sqlite3_bind_blob(st, 1, k, KEY_LEN, SQLITE_STATIC) != SQLITE_OK)
		return fail(x->db, "bind");
	int rc = sqlite3_step(st), found = 0;
	if (rc == SQLITE_ROW) {
		if (sqlite3_column_bytes(st, 0) != VAL_LEN) {
			sqlite3_reset(st);
			fprintf(stderr, "peers: sqlite: get: a value of the wrong size\n");
			return -1;
		}
		memcpy(out, sqlite3_column_blob(st, 0), VAL_LEN);
		found = 1;
		rc = sqlite3_step(st);
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? found : fail(x->db, "select");
}

static int sq_publish(struct conn *x, uint32_t id, uint64_t seq)
{
	uint64_t token;
	return sq_put_batch(x, &id, 1, seq, &token);
}

static int sq_await(struct conn *x, uint32_t id, uint64_t seq, enum wait_mode m, bool yield)
{
	(void)m; /* SQLite has no notification across processes: polling only */
	uint8_t v[VAL_LEN];
	uint64_t end = now_ns() + WAIT_LIMIT_NS;
	for (unsigned n = 0;; n++) {
		int64_t dv;
		if (run(x, S_DV, &dv) < 0)
			return -1;
		if (dv != x->data_version) {
			x->data_version = dv;
			int rc = sq_get(x, id, v);
			if (rc < 0)
				return -1;
			if (rc == 1 && val_tag(v) >= seq)
				return 0;
		}
		if ((n & 1023) == 0 && now_ns() > end) {
			fprintf(stderr, "peers: sqlite: seq %llu not seen in 60 s\n",
				(unsigned long long)seq);
			return -1;
		}
		poll_pause(yield);
	}
}

static int sq_churn(struct conn *x, long create, long drop, unsigned keys)
{
	char k[8 + KEY_LEN];
	if (run(x, S_BEGINW, NULL) < 0)
		return -1;
	dir_prefix(create, k);
	for (unsigned i = 0; i < keys; i++) {
		key_of(i, k + 8);
		if (put_one(x, k, sizeof k, i, (uint64_t)create) < 0)
			goto bad;
	}
	if (drop >= 0) {
		char lo[8], hi[8];
		dir_prefix(drop, lo);
		memcpy(hi, lo, sizeof hi);
		hi[7] = '/' + 1; /* the first prefix after every "c<n>/..." */
		sqlite3_stmt *st = x->st[S_DELRANGE];
		if (sqlite3_bind_blob(st, 1, lo, 8, SQLITE_STATIC) != SQLITE_OK ||
		    sqlite3_bind_blob(st, 2, hi, 8, SQLITE_STATIC) != SQLITE_OK) {
			fail(x->db, "bind");
			goto bad;
		}
		int rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE) {
			fail(x->db, "delete");
			goto bad;
		}
	}
	return run(x, S_COMMIT, NULL);
bad:
	exec(x->db, "ROLLBACK");
	return -1;
}

static int sq_mem(struct conn *x, struct mem *m, bool settle)
{
	int64_t pages = 0, psize = 0, freel = 0;
	/* Reclamation in WAL mode is the checkpoint: copy the WAL back into
	 * the database and cut the WAL to nothing. */
	if (settle && run(x, S_CKPT, NULL) < 0)
		return -1;
	if (run(x, S_PAGES, &pages) < 0 || run(x, S_PAGESZ, &psize) < 0 || run(x, S_FREE, &freel) < 0)
		return -1;
	struct stat st;
	uint64_t wal = stat(x->wal, &st) == 0 ? (uint64_t)st.st_size : 0;
	m->bytes = (uint64_t)pages * (uint64_t)psize + wal;
	m->detail[0] = (uint64_t)pages * (uint64_t)psize;
	m->detail_name[0] = "page_count_x_page_size";
	m->detail[1] = wal;
	m->detail_name[1] = "wal_bytes";
	m->detail[2] = (uint64_t)freel * (uint64_t)psize;
	m->detail_name[2] = "freelist_bytes";
	return 0;
}

static int sq_hold(struct conn *x)
{
	if (x->held)
		return 0;
	/* A read transaction starts at its first read. */
	uint8_t v[VAL_LEN];
	if (sq_snap_begin(x) < 0 || sq_get(x, 0, v) < 0)
		return -1;
	x->held = true;
	return 0;
}

static int sq_release(struct conn *x)
{
	if (!x->held)
		return 0;
	x->held = false;
	return sq_snap_end(x);
}

const struct backend be_sqlite = {
	.name = "sqlite",
	.durability = "journal_mode=WAL, synchronous=OFF, files on tmpfs (/dev/shm): no fsync; lost with the "
		      "machine",
	.memory = "page_count * page_size + WAL file size (after a TRUNCATE checkpoint the WAL is empty, "
		  "so the 1M-key figure is page_count * page_size)",
	.server = false,
	.poll = true,
	.sleep = false,
	.snapshots = true,
	.fresh = sq_fresh,
	.stop = sq_stop,
	.open = sq_open,
	.close = sq_close,
	.put_batch = sq_put_batch,
	.sync_to = sq_sync_to,
	.snap_begin = sq_snap_begin,
	.snap_end = sq_snap_end,
	.get = sq_get,
	.publish = sq_publish,
	.await = sq_await,
	.churn = sq_churn,
	.mem = sq_mem,
	.hold = sq_hold,
	.release = sq_release,
};
