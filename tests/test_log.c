/* The change log and the coalesced diff (shm_diff), one root process.
 *
 * What it proves:
 * - hand-checked diffs between chosen ticks: overwrites coalesce into one PUT
 *   with the final value at its last position; put then del is a DEL; del then
 *   re-put is a PUT; mkdir + puts then rmdir is only the RMDIR; rmdir then
 *   mkdir is RMDIR, MKDIR, then the new puts; an rmdir of /a/ leaves out
 *   earlier changes under /a/ but not under /ab/; the list is in the order of
 *   each item's last change, and every item carries the tick of that change;
 * - an empty range is an empty diff; rejected batches leave no records;
 * - RESET: when the start position fell off the log (records freed because
 *   min_cursor passed them, or overwritten by a small log), shm_diff returns 1
 *   and delivers RESET then exactly the full state at the target tick;
 * - log records of tick t are freed exactly when min_cursor >= t, and
 *   log_bytes_used / the report account for them exactly.
 */
#include <stdbool.h>
#include <stdint.h>

#include "shm.h"
#include "shmtest.h"
#include "testutil.h"

static struct shm_root *root;
static struct shm_seg *seg;

/* log_end of each tick, recorded right after it was published. */
#define MAX_TICKS 100000
static uint64_t pos_of[MAX_TICKS];

/* ---- ops -------------------------------------------------------------- */

static void record_pos(void)
{
	uint64_t t, end;
	shm_published_state(seg, &t, &end);
	T_EQ(t, shm_root_tick(root));
	T_ASSERT(t < MAX_TICKS);
	pos_of[t] = end;
}

/* One batch as one tick; returns the new tick. */
static uint64_t commit_n(const struct shm_op *ops, size_t n)
{
	uint64_t t = commit_ops(root, ops, n);
	record_pos();
	return t;
}

#define COMMIT(...)                                                                                          \
	commit_n((const struct shm_op[]){__VA_ARGS__},                                                       \
		 sizeof((const struct shm_op[]){__VA_ARGS__}) / sizeof(struct shm_op))

/* ---- collecting a diff ------------------------------------------------ */

struct rec {
	uint64_t tick;
	int kind;
	char *dir;
	uint8_t *key;
	size_t key_len;
	uint8_t *val;
	size_t val_len;
};

struct recs {
	struct rec *v;
	size_t n, cap;
};

static void *dup_bytes(const void *p, size_t n)
{
	uint8_t *d = malloc(n + 1);
	T_ASSERT(d);
	if (n)
		memcpy(d, p, n);
	d[n] = 0;
	return d;
}

static int collect(const struct shm_change *c, void *arg)
{
	struct recs *rs = arg;
	if (rs->n == rs->cap) {
		rs->cap = rs->cap ? 2 * rs->cap : 64;
		rs->v = realloc(rs->v, rs->cap * sizeof *rs->v);
		T_ASSERT(rs->v);
	}
	struct rec *r = &rs->v[rs->n++];
	memset(r, 0, sizeof *r);
	r->tick = c->tick;
	r->kind = c->kind;
	if (c->kind != SHM_CHANGE_RESET) {
		T_ASSERT(c->dir != NULL);
		/* dir is documented NUL-terminated */
		T_EQ(strlen(c->dir), c->dir_len);
		r->dir = dup_bytes(c->dir, c->dir_len);
	}
	if (c->kind == SHM_CHANGE_PUT || c->kind == SHM_CHANGE_DEL) {
		T_ASSERT(c->key_len > 0);
		r->key = dup_bytes(c->key, c->key_len);
		r->key_len = c->key_len;
	}
	if (c->kind == SHM_CHANGE_PUT) {
		T_ASSERT(c->value_len == 0 || c->value != NULL);
		r->val = dup_bytes(c->value, c->value_len);
		r->val_len = c->value_len;
	}
	return 0;
}

static void recs_free(struct recs *rs)
{
	for (size_t i = 0; i < rs->n; i++) {
		free(rs->v[i].dir);
		free(rs->v[i].key);
		free(rs->v[i].val);
	}
	free(rs->v);
	memset(rs, 0, sizeof *rs);
}

static const char *kind_name(int k)
{
	switch (k) {
	case SHM_CHANGE_PUT:
		return "PUT";
	case SHM_CHANGE_DEL:
		return "DEL";
	case SHM_CHANGE_MKDIR:
		return "MKDIR";
	case SHM_CHANGE_RMDIR:
		return "RMDIR";
	case SHM_CHANGE_RESET:
		return "RESET";
	}
	return "?";
}

/* "PUT /d/ k=v @2" with the tick relative to base; keys and values here are
 * printable. */
static void fmt(const struct rec *r, uint64_t base, char *out, size_t n)
{
	switch (r->kind) {
	case SHM_CHANGE_PUT:
		snprintf(out, n, "PUT %s %s=%s @%lld", r->dir, (char *)r->key, (char *)r->val,
			 (long long)(r->tick - base));
		break;
	case SHM_CHANGE_DEL:
		snprintf(out, n, "DEL %s %s @%lld", r->dir, (char *)r->key, (long long)(r->tick - base));
		break;
	case SHM_CHANGE_RESET:
		snprintf(out, n, "RESET");
		break;
	default:
		snprintf(out, n, "%s %s @%lld", kind_name(r->kind), r->dir, (long long)(r->tick - base));
	}
}

static int diff(uint64_t from, uint64_t to, struct recs *rs)
{
	return shm_diff(seg, pos_of[from], to, pos_of[to], collect, rs);
}

/* Asserts diff(from, to) is exactly `want` (strings as fmt writes them, with
 * ticks relative to base), with return value 0. */
static void expect_diff_(int line, uint64_t from, uint64_t to, uint64_t base, const char *const *want)
{
	struct recs rs = {0};
	int rc = diff(from, to, &rs);
	char got[4096];
	bool ok = rc == 0;
	size_t nw = 0;
	while (want[nw])
		nw++;
	ok = ok && rs.n == nw;
	for (size_t i = 0; ok && i < nw; i++) {
		fmt(&rs.v[i], base, got, sizeof got);
		ok = strcmp(got, want[i]) == 0;
	}
	if (!ok) {
		fprintf(stderr, "line %d: diff(%" PRIu64 ", %" PRIu64 ") returned %d, got:\n", line, from, to,
			rc);
		for (size_t i = 0; i < rs.n; i++) {
			fmt(&rs.v[i], base, got, sizeof got);
			fprintf(stderr, "    %s\n", got);
		}
		fprintf(stderr, "  expected:\n");
		for (size_t i = 0; i < nw; i++)
			fprintf(stderr, "    %s\n", want[i]);
		T_FAIL("diff mismatch (ticks relative to %" PRIu64 ")", base);
	}
	recs_free(&rs);
}

#define EXPECT_DIFF(from, to, base, ...)                                                                     \
	expect_diff_(__LINE__, (from), (to), (base), (const char *const[]){__VA_ARGS__, NULL})
#define EXPECT_EMPTY_DIFF(from, to) expect_diff_(__LINE__, (from), (to), 0, (const char *const[]){NULL})

/* ---- hand-checked cases ----------------------------------------------- */

static void case_overwrite(void)
{
	uint64_t b = shm_root_tick(root);
	COMMIT(op_mkdir("/d/"), op_puts("/d/", "k", "1"));
	COMMIT(op_puts("/d/", "k", "2"), op_puts("/d/", "j", "1"));
	uint64_t t3 = COMMIT(op_puts("/d/", "k", "3"));
	uint64_t t4 = COMMIT(op_puts("/d/", "a", "1"), op_puts("/d/", "b", "1"), op_puts("/d/", "a", "2"));
	EXPECT_DIFF(b, t3, b, "MKDIR /d/ @1", "PUT /d/ j=1 @2", "PUT /d/ k=3 @3");
	EXPECT_DIFF(b + 1, t3, b, "PUT /d/ j=1 @2", "PUT /d/ k=3 @3");
	EXPECT_DIFF(b + 2, t3, b, "PUT /d/ k=3 @3");
	/* Within one tick: a's last change comes after b's. */
	EXPECT_DIFF(t3, t4, b, "PUT /d/ b=1 @4", "PUT /d/ a=2 @4");
	EXPECT_DIFF(b, t4, b, "MKDIR /d/ @1", "PUT /d/ j=1 @2", "PUT /d/ k=3 @3", "PUT /d/ b=1 @4",
		    "PUT /d/ a=2 @4");
	/* A key overwritten later moves behind the others. */
	uint64_t t5 = COMMIT(op_puts("/d/", "j", "5"));
	EXPECT_DIFF(b + 1, t5, b, "PUT /d/ k=3 @3", "PUT /d/ b=1 @4", "PUT /d/ a=2 @4", "PUT /d/ j=5 @5");
	EXPECT_EMPTY_DIFF(t3, t3);
	EXPECT_EMPTY_DIFF(t5, t5);
	/* Several batches in one group: all in the log of that tick, in
	 * order; a rejected batch between them adds nothing. */
	shm_commit_begin(root);
	size_t f;
	struct shm_op g1[] = {op_puts("/d/", "g", "1")};
	struct shm_op g2[] = {op_puts("/d/", "h", "1"), op_del("/d/", "nope")};
	struct shm_op g3[] = {op_puts("/d/", "k", "6")};
	T_EQ(shm_apply_batch(root, g1, 1, &f), 0);
	T_EQ(shm_apply_batch(root, g2, 2, &f), -ENOENT);
	T_EQ(shm_apply_batch(root, g3, 1, &f), 0);
	uint64_t t6;
	T_EQ(shm_commit_publish(root, &t6), 1);
	record_pos();
	EXPECT_DIFF(t5, t6, b, "PUT /d/ g=1 @6", "PUT /d/ k=6 @6");
	/* A group of rejected batches publishes nothing and moves no position. */
	shm_commit_begin(root);
	T_EQ(shm_apply_batch(root, g2, 2, &f), -ENOENT);
	T_EQ(shm_commit_publish(root, &t6), 0);
	uint64_t tt, end;
	shm_published_state(seg, &tt, &end);
	T_EQ(tt, t6);
	T_EQ(end, pos_of[t6]);
	COMMIT(op_rmdir("/d/"));
	printf("overwrite: ok\n");
}

static void case_del(void)
{
	uint64_t b = shm_root_tick(root);
	uint64_t t1 = COMMIT(op_mkdir("/e/"), op_puts("/e/", "x", "1"), op_puts("/e/", "y", "1"));
	uint64_t t2 = COMMIT(op_puts("/e/", "z", "1"), op_del("/e/", "x"));
	uint64_t t3 = COMMIT(op_del("/e/", "z"));
	uint64_t t4 = COMMIT(op_puts("/e/", "x", "3"));
	EXPECT_DIFF(t1, t2, b, "PUT /e/ z=1 @2", "DEL /e/ x @2");
	/* put then del: DEL */
	EXPECT_DIFF(t1, t3, b, "DEL /e/ x @2", "DEL /e/ z @3");
	/* del then re-put: PUT, at its last position */
	EXPECT_DIFF(t1, t4, b, "DEL /e/ z @3", "PUT /e/ x=3 @4");
	EXPECT_DIFF(t2, t4, b, "DEL /e/ z @3", "PUT /e/ x=3 @4");
	EXPECT_DIFF(b, t4, b, "MKDIR /e/ @1", "PUT /e/ y=1 @1", "DEL /e/ z @3", "PUT /e/ x=3 @4");
	/* del and re-put in one batch is a PUT too */
	uint64_t t5 = COMMIT(op_del("/e/", "y"), op_puts("/e/", "y", "5"));
	EXPECT_DIFF(t4, t5, b, "PUT /e/ y=5 @5");
	/* and put then del in one batch is a DEL */
	uint64_t t6 = COMMIT(op_puts("/e/", "w", "6"), op_del("/e/", "w"));
	EXPECT_DIFF(t5, t6, b, "DEL /e/ w @6");
	COMMIT(op_rmdir("/e/"));
	printf("del: ok\n");
}

static void case_rmdir(void)
{
	COMMIT(op_mkdir("/o/"));
	uint64_t b = shm_root_tick(root);
	COMMIT(op_mkdir("/f/"), op_puts("/f/", "a", "1"));
	uint64_t t2 = COMMIT(op_puts("/f/", "b", "2"), op_mkdir("/f/g/"), op_puts("/f/g/", "c", "3"),
			     op_puts("/o/", "q", "1"));
	uint64_t t3 = COMMIT(op_rmdir("/f/"));
	/* mkdir + puts then rmdir: only the RMDIR remains. */
	EXPECT_DIFF(b, t3, b, "PUT /o/ q=1 @2", "RMDIR /f/ @3");
	EXPECT_DIFF(b + 1, t3, b, "PUT /o/ q=1 @2", "RMDIR /f/ @3");
	EXPECT_DIFF(t2, t3, b, "RMDIR /f/ @3");
	EXPECT_DIFF(b, t2, b, "MKDIR /f/ @1", "PUT /f/ a=1 @1", "PUT /f/ b=2 @2", "MKDIR /f/g/ @2",
		    "PUT /f/g/ c=3 @2", "PUT /o/ q=1 @2");
	COMMIT(op_rmdir("/o/"));
	printf("rmdir: ok\n");
}

static void case_recreate(void)
{
	COMMIT(op_mkdir("/h/"), op_puts("/h/", "k1", "1"));
	uint64_t b = shm_root_tick(root);
	COMMIT(op_puts("/h/", "k2", "2"));
	uint64_t t2 = COMMIT(op_rmdir("/h/"));
	uint64_t t3 = COMMIT(op_mkdir("/h/"), op_puts("/h/", "k3", "3"));
	uint64_t t4 = COMMIT(op_puts("/h/", "k3", "4"));
	EXPECT_DIFF(b, t3, b, "RMDIR /h/ @2", "MKDIR /h/ @3", "PUT /h/ k3=3 @3");
	EXPECT_DIFF(b, t4, b, "RMDIR /h/ @2", "MKDIR /h/ @3", "PUT /h/ k3=4 @4");
	EXPECT_DIFF(t2, t4, b, "MKDIR /h/ @3", "PUT /h/ k3=4 @4");
	EXPECT_DIFF(t3, t4, b, "PUT /h/ k3=4 @4");
	/* rmdir + mkdir in one tick */
	uint64_t t5 = COMMIT(op_rmdir("/h/"), op_mkdir("/h/"), op_puts("/h/", "k5", "5"));
	EXPECT_DIFF(t4, t5, b, "RMDIR /h/ @5", "MKDIR /h/ @5", "PUT /h/ k5=5 @5");
	EXPECT_DIFF(b, t5, b, "RMDIR /h/ @5", "MKDIR /h/ @5", "PUT /h/ k5=5 @5");
	/* An rmdir of a prefix then an mkdir of a nested name: RMDIR /h/ stays
	 * (it removes what the importer had), MKDIR /h/x/ follows. */
	uint64_t t6 = COMMIT(op_rmdir("/h/"));
	uint64_t t7 = COMMIT(op_mkdir("/h/x/"), op_puts("/h/x/", "n", "7"));
	EXPECT_DIFF(t5, t7, b, "RMDIR /h/ @6", "MKDIR /h/x/ @7", "PUT /h/x/ n=7 @7");
	EXPECT_DIFF(t6, t7, b, "MKDIR /h/x/ @7", "PUT /h/x/ n=7 @7");
	COMMIT(op_rmdir("/h/x/"));
	printf("recreate: ok\n");
}

static void case_prefix(void)
{
	COMMIT(op_mkdir("/a/"), op_mkdir("/a/b/"), op_mkdir("/z/"), op_mkdir("/ab/"));
	uint64_t b = shm_root_tick(root);
	COMMIT(op_puts("/a/b/", "k", "1"), op_puts("/z/", "q", "1"), op_puts("/ab/", "s", "1"));
	COMMIT(op_puts("/a/", "top", "1"), op_puts("/a/b/", "k", "2"), op_mkdir("/a/c/"));
	uint64_t t3 = COMMIT(op_rmdir("/a/"));
	uint64_t t4 = COMMIT(op_mkdir("/a/b/"), op_puts("/a/b/", "n", "1"));
	/* Everything under /a/ before the rmdir is left out; /ab/ is not under
	 * /a/. */
	EXPECT_DIFF(b, t3, b, "PUT /z/ q=1 @1", "PUT /ab/ s=1 @1", "RMDIR /a/ @3");
	EXPECT_DIFF(b, t4, b, "PUT /z/ q=1 @1", "PUT /ab/ s=1 @1", "RMDIR /a/ @3", "MKDIR /a/b/ @4",
		    "PUT /a/b/ n=1 @4");
	/* Removing the recreated /a/b/ later: its MKDIR and puts go, the RMDIR of
	 * /a/b/ is its own last change. */
	uint64_t t5 = COMMIT(op_rmdir("/a/b/"));
	EXPECT_DIFF(b, t5, b, "PUT /z/ q=1 @1", "PUT /ab/ s=1 @1", "RMDIR /a/ @3", "RMDIR /a/b/ @5");
	EXPECT_DIFF(t3, t5, b, "RMDIR /a/b/ @5");
	COMMIT(op_rmdir("/z/"), op_rmdir("/ab/"));
	printf("prefix: ok\n");
}

/* ---- exact freeing of log records ------------------------------------- */

static void case_log_free(void)
{
	struct shm_reclaim_report rep;
	struct shm_stats st;
	/* Free everything older first, so the counts below are ours only. */
	uint64_t t0 = shm_root_tick(root);
	T_OK(shm_reclaim(root, UINT64_MAX, t0, 0, &rep));
	shm_root_stats(root, &st);
	uint64_t used0 = st.log_bytes_used;

	const struct shm_op b1[] = {op_mkdir("/l/"), op_puts("/l/", "a", "1"), op_puts("/l/", "b", "2")};
	const struct shm_op b2[] = {op_puts("/l/", "c", "3"), op_del("/l/", "a")};
	uint64_t t1 = commit_n(b1, 3);
	uint64_t t2 = commit_n(b2, 2);
	shm_root_stats(root, &st);
	uint64_t used2 = st.log_bytes_used;
	T_ASSERT(used2 > used0);
	/* The positions advance by the bytes the ticks used. */
	T_EQ(pos_of[t2] - pos_of[t0], used2 - used0);

	/* min_cursor below t1: nothing of t1 or t2 is freed. */
	T_OK(shm_reclaim(root, UINT64_MAX, t0, 0, &rep));
	T_EQ(rep.log_records_freed, 0);
	T_EQ(rep.log_bytes_freed, 0);
	shm_root_stats(root, &st);
	T_EQ(st.log_bytes_used, used2);
	/* min_cursor = t1: exactly t1's three records. */
	T_OK(shm_reclaim(root, UINT64_MAX, t1, 0, &rep));
	T_EQ(rep.log_records_freed, 3);
	T_EQ(rep.log_bytes_freed, pos_of[t1] - pos_of[t0]);
	shm_root_stats(root, &st);
	T_EQ(st.log_bytes_used, used2 - rep.log_bytes_freed);
	/* A diff from t1 still works: t2's records are kept. */
	EXPECT_DIFF(t1, t2, t1, "PUT /l/ c=3 @1", "DEL /l/ a @1");
	/* Repeating frees nothing. */
	T_OK(shm_reclaim(root, UINT64_MAX, t1, 0, &rep));
	T_EQ(rep.log_records_freed, 0);
	/* A group with a rejected batch: only the accepted batch's record. */
	shm_commit_begin(root);
	size_t f;
	const struct shm_op ok1[] = {op_puts("/l/", "d", "4")};
	const struct shm_op bad[] = {op_puts("/l/", "e", "5"), op_puts("/l/", "f", "6"), op_mkdir("/l/")};
	T_EQ(shm_apply_batch(root, bad, 3, &f), -EEXIST);
	T_EQ(shm_apply_batch(root, ok1, 1, &f), 0);
	uint64_t t3;
	T_EQ(shm_commit_publish(root, &t3), 1);
	record_pos();
	/* min_cursor = t3 frees t2's two and t3's one. */
	T_OK(shm_reclaim(root, UINT64_MAX, t3, 0, &rep));
	T_EQ(rep.log_records_freed, 3);
	T_EQ(rep.log_bytes_freed, pos_of[t3] - pos_of[t1]);
	/* Everything up to the current tick is freed: back to the start. */
	shm_root_stats(root, &st);
	T_EQ(st.log_bytes_used, used0);
	COMMIT(op_rmdir("/l/"));
	printf("log free: ok (t1 %" PRIu64 " bytes, used0 %" PRIu64 ")\n", pos_of[t1] - pos_of[t0], used0);
}

/* A tick that ends where a pad begins (the next record does not fit before
 * the ring's end): a reader at that tick still needs the record after the
 * pad, so reclaiming up to its tick must not move the tail past the pad (it
 * did, and the reader got a reset it had not earned). */
#define PAD_VALUE_TAIL                                                                                       \
	"12345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"          \
	"0123456789"
#define PAD_VALUE "0" PAD_VALUE_TAIL

static void case_pad_cursor(void)
{
	struct shm_reclaim_report rep;
	struct shm_stats st;
	shm_root_stats(root, &st);
	uint64_t L = st.log_size;
	COMMIT(op_mkdir("/z/"));
	uint64_t t = shm_root_tick(root), rec = 0;
	/* One record a tick, the log kept empty behind, until the next
	 * record no longer fits in what is left of the ring. */
	for (int i = 0;; i++) {
		T_ASSERT(i < 2000000);
		uint64_t before = pos_of[t];
		/* 100 bytes: records of 136 bytes, so the ring (8 MiB here)
		 * is not a multiple of them and the lap ends in a pad. */
		t = COMMIT(op_puts("/z/", "k", PAD_VALUE));
		rec = pos_of[t] - before;
		T_OK(shm_reclaim(root, UINT64_MAX, t, 0, &rep));
		uint64_t left = L - pos_of[t] % L;
		if (left < rec && left != 0)
			break;
	}
	T_ASSERT(rec % 8 == 0 && L % rec != 0);
	uint64_t at_pad = t;
	uint64_t next = COMMIT(op_puts("/z/", "k", "Z" PAD_VALUE_TAIL));
	T_ASSERT(pos_of[next] - pos_of[at_pad] > rec); /* the pad, then the record */
	/* A reader at at_pad: the record of `next` is still needed. */
	T_OK(shm_reclaim(root, UINT64_MAX, at_pad, 0, &rep));
	EXPECT_DIFF(at_pad, next, at_pad, "PUT /z/ k=Z" PAD_VALUE_TAIL " @1");
	T_OK(shm_reclaim(root, UINT64_MAX, next, 0, &rep));
	COMMIT(op_rmdir("/z/"));
	printf("pad cursor: ok (records of %" PRIu64 " bytes, a pad of %" PRIu64 " at tick %" PRIu64 ")\n",
	       rec, pos_of[next] - pos_of[at_pad] - rec, at_pad);
}

/* ---- RESET ------------------------------------------------------------ */

/* A small reference of what the RESET tests wrote: one directory /r/ with
 * NK keys, plus directories /x<i>/ that come and go. */
#define NK 50
#define NX 8
struct mini {
	bool has[NK];
	uint8_t val[NK][200];
	size_t len[NK];
	uint64_t tick[NK];
	bool xdir[NX];
};

static void key_name(int i, char *k)
{
	/* long keys so records are big and the small log turns over quickly */
	memset(k, 'k', 96);
	snprintf(k, 96, "key%02d", i);
	k[strlen(k)] = '_';
	k[96] = 0;
}

static void random_tick(struct mini *m, unsigned long long *rng)
{
	struct shm_op ops[12];
	char keys[12][100];
	uint8_t vals[12][200];
	size_t n = 0;
	struct mini next = *m;
	uint64_t t = shm_root_tick(root) + 1;
	int nops = 4 + (int)(t_rand(rng) % 8);
	for (int j = 0; j < nops; j++) {
		int i = (int)(t_rand(rng) % NK);
		key_name(i, keys[n]);
		if (t_rand(rng) % 5 == 0 && next.has[i]) {
			ops[n] = op_put("/r/", keys[n], 96, NULL, 0);
			ops[n].kind = SHM_OP_DEL;
			next.has[i] = false;
		} else {
			size_t len = t_rand(rng) % 200;
			for (size_t b = 0; b < len; b++)
				vals[n][b] = (uint8_t)t_rand(rng);
			ops[n] = op_put("/r/", keys[n], 96, vals[n], len);
			next.has[i] = true;
			memcpy(next.val[i], vals[n], len);
			next.len[i] = len;
			next.tick[i] = t;
		}
		n++;
	}
	/* a directory that comes or goes */
	static char xname[NX][16];
	int x = (int)(t_rand(rng) % NX);
	snprintf(xname[x], sizeof xname[x], "/x%d/", x);
	ops[n++] = next.xdir[x] ? op_rmdir(xname[x]) : op_mkdir(xname[x]);
	next.xdir[x] = !next.xdir[x];
	commit_n(ops, n);
	*m = next;
}

/* Asserts rs is RESET then exactly the full state m at tick t: directories
 * in name order, each followed by its keys (in any order). */
static void expect_full_state(const struct recs *rs, const struct mini *m, uint64_t t)
{
	T_ASSERT(rs->n >= 1);
	T_EQ(rs->v[0].kind, SHM_CHANGE_RESET);
	/* Expected directory order: byte order of "/r/" and "/x<i>/". */
	const char *names[NX + 1];
	char xn[NX][16];
	size_t nd = 0;
	names[nd++] = "/r/";
	for (int x = 0; x < NX; x++)
		if (m->xdir[x]) {
			snprintf(xn[x], sizeof xn[x], "/x%d/", x);
			names[nd++] = xn[x];
		}
	size_t i = 1, d = 0;
	bool seen[NK] = {false};
	for (; i < rs->n; i++) {
		const struct rec *r = &rs->v[i];
		T_EQ(r->tick <= t, 1);
		if (r->kind == SHM_CHANGE_MKDIR) {
			T_ASSERT(d < nd);
			if (strcmp(r->dir, names[d]) != 0)
				T_FAIL("full state: dir %s, expected %s", r->dir, names[d]);
			d++;
			continue;
		}
		T_EQ(r->kind, SHM_CHANGE_PUT);
		T_ASSERT(d >= 1 && strcmp(r->dir, names[d - 1]) == 0);
		T_ASSERT(strcmp(r->dir, "/r/") == 0);
		T_EQ(r->key_len, 96);
		int k = atoi((char *)r->key + 3);
		T_ASSERT(k >= 0 && k < NK);
		T_ASSERT(!seen[k]);
		seen[k] = true;
		T_ASSERT(m->has[k]);
		T_EQ(r->val_len, m->len[k]);
		T_ASSERT(memcmp(r->val, m->val[k], m->len[k]) == 0);
	}
	T_EQ(d, nd);
	for (int k = 0; k < NK; k++)
		T_EQ(seen[k], m->has[k]);
}

static void case_reset(void)
{
	struct shm_root_opts opts = {.capacity = (size_t)64 << 20, .log_bytes = 64 << 10, .poison = true};
	struct shm_err err = {{0}};
	int rc = shm_root_create(&root, &opts, &err);
	if (rc < 0)
		T_FAIL("shm_root_create: %s (%s)", strerror(-rc), err.msg);
	seg = shm_root_seg(root);
	record_pos();
	struct shm_stats st;
	shm_root_stats(root, &st);
	printf("reset: log_size %" PRIu64 ", max batch log bytes %zu\n", st.log_size,
	       shm_root_max_batch_log_bytes(root));
	T_ASSERT(st.log_size <= 64 << 10);

	unsigned long long rng = t_seed(0x5eed1234ull) | 1;
	struct mini m;
	memset(&m, 0, sizeof m);
	COMMIT(op_mkdir("/r/"));
	uint64_t t1 = shm_root_tick(root);
	for (int i = 0; i < 5; i++)
		random_tick(&m, &rng);
	uint64_t t3 = t1 + 2, t6 = shm_root_tick(root);
	struct mini m6 = m;

	/* (1) Records freed because min_cursor passed them. */
	struct shm_reclaim_report rep;
	T_OK(shm_reclaim(root, t6, t3, 0, &rep));
	T_ASSERT(rep.log_records_freed > 0);
	struct recs rs = {0};
	/* From t3 (the cursor) the records are all there: a normal diff. */
	T_EQ(diff(t3, t6, &rs), 0);
	T_ASSERT(rs.n > 0);
	for (size_t i = 0; i < rs.n; i++)
		T_ASSERT(rs.v[i].kind != SHM_CHANGE_RESET && rs.v[i].tick > t3);
	recs_free(&rs);
	/* From t2 or t1, t3's records are needed and gone: RESET + state. */
	T_EQ(diff(t3 - 1, t6, &rs), 1);
	expect_full_state(&rs, &m6, t6);
	recs_free(&rs);
	T_EQ(diff(t1, t6, &rs), 1);
	expect_full_state(&rs, &m6, t6);
	for (size_t i = 0; i < rs.n; i++)
		T_EQ(rs.v[i].tick, t6);
	recs_free(&rs);

	/* (2) Overrun: the cursor stays at t6 while far more than the log is
	 * written; the ring drops what the cursor still needed. */
	uint64_t written = 0;
	while (written < 4 * st.log_size) {
		uint64_t before = pos_of[shm_root_tick(root)];
		random_tick(&m, &rng);
		written += pos_of[shm_root_tick(root)] - before;
		/* readers are pinned at t6 but objects may go: min_read_epoch is
		 * the current tick so memory stays bounded */
		T_OK(shm_reclaim(root, shm_root_tick(root), t6, 0, &rep));
	}
	uint64_t tn = shm_root_tick(root);
	shm_root_stats(root, &st);
	printf("reset: wrote %" PRIu64 " log bytes over %" PRIu64 " ticks, overruns %" PRIu64
	       ", used %" PRIu64 "\n",
	       written, tn - t6, st.log_overruns, st.log_bytes_used);
	T_ASSERT(st.log_overruns > 0);
	T_ASSERT(st.log_bytes_used <= st.log_size);
	T_EQ(diff(t6, tn, &rs), 1);
	expect_full_state(&rs, &m, tn);
	recs_free(&rs);
	/* A recent position is still good: a normal diff that, applied to the
	 * state at tn-1, names exactly what the last tick changed. */
	T_EQ(diff(tn - 1, tn, &rs), 0);
	T_ASSERT(rs.n > 0);
	for (size_t i = 0; i < rs.n; i++)
		T_EQ(rs.v[i].tick, tn);
	recs_free(&rs);

	/* shm_full_state alone: the same shape. */
	T_EQ(shm_full_state(seg, tn, collect, &rs) >= 0, 1);
	expect_full_state(&rs, &m, tn);
	recs_free(&rs);

	shm_root_destroy(root);
	root = NULL;
	seg = NULL;
	printf("reset: ok\n");
}

/* ---- log positions (shm_log_bytes_since and friends) ------------------ */

static void case_log_positions(void)
{
	struct shm_reclaim_report rep;
	struct shm_stats st;
	shm_root_stats(root, &st);
	T_EQ(shm_log_size(root), st.log_size);
	T_EQ(shm_root_max_batch_log_bytes(root), st.log_size / 2);
	T_EQ(shm_seg_max_batch_log_bytes(seg), st.log_size / 2);

	/* Nothing behind t0: the tail is at its end. */
	uint64_t t0 = shm_root_tick(root);
	T_OK(shm_reclaim(root, UINT64_MAX, t0, 0, &rep));
	T_EQ(shm_log_bytes_since(root, t0), 0);
	COMMIT(op_mkdir("/p/"), op_puts("/p/", "a", "1"));
	uint64_t t1 = shm_root_tick(root);
	uint64_t t2 = COMMIT(op_puts("/p/", "b", "2"), op_del("/p/", "a"));
	T_EQ(shm_log_bytes_since(root, t0), pos_of[t2] - pos_of[t0]);
	T_EQ(shm_log_bytes_since(root, t1), pos_of[t2] - pos_of[t1]);
	T_EQ(shm_log_bytes_since(root, t2), 0);
	T_EQ(shm_log_bytes_since(root, t2 + 7), 0); /* a cursor from the future */

	/* Only the published end counts: a tick being built adds nothing. */
	size_t f;
	const struct shm_op more[] = {op_puts("/p/", "c", "3")};
	T_OK(shm_commit_begin(root));
	T_EQ(shm_apply_batch(root, more, 1, &f), 0);
	T_EQ(shm_log_bytes_since(root, t1), pos_of[t2] - pos_of[t1]);
	uint64_t t3;
	T_EQ(shm_commit_publish(root, &t3), 1);
	record_pos();
	T_EQ(shm_log_bytes_since(root, t1), pos_of[t3] - pos_of[t1]);
	/* A group whose every batch failed publishes nothing, moves nothing. */
	const struct shm_op bad[] = {op_mkdir("/p/")};
	T_OK(shm_commit_begin(root));
	T_EQ(shm_apply_batch(root, bad, 1, &f), -EEXIST);
	T_EQ(shm_commit_publish(root, NULL), 0);
	T_EQ(shm_log_bytes_since(root, t1), pos_of[t3] - pos_of[t1]);

	/* Records of t1 go: a cursor at t0 fell off the log and keeps nothing
	 * (it gets a reset); t1's end is the new tail. */
	T_OK(shm_reclaim(root, UINT64_MAX, t1, 0, &rep));
	T_EQ(shm_log_bytes_since(root, t0), 0);
	T_EQ(shm_log_bytes_since(root, t1), pos_of[t3] - pos_of[t1]);
	T_EQ(shm_log_bytes_since(root, t2), pos_of[t3] - pos_of[t2]);

	/* More ticks than the root remembers ends of (4096), the cursor held
	 * at t1: t1 is counted from the tail, which is where it ends; a tick
	 * further back than the window counts everything the log holds. */
	uint64_t tn = t3;
	for (int i = 0; i < 4200; i++) {
		char k[16];
		snprintf(k, sizeof(k), "k%d", i % 64);
		tn = COMMIT(op_puts("/p/", k, "x"));
		T_OK(shm_reclaim(root, tn, t1, 0, &rep));
	}
	T_ASSERT(tn - t1 > 4096);
	T_EQ(shm_log_bytes_since(root, t1), pos_of[tn] - pos_of[t1]);
	T_EQ(shm_log_bytes_since(root, t0), pos_of[tn] - pos_of[t1]);
	T_EQ(shm_log_bytes_since(root, tn - 1), pos_of[tn] - pos_of[tn - 1]);
	T_EQ(shm_log_bytes_since(root, tn - 100), pos_of[tn] - pos_of[tn - 100]);
	/* The cursor catches up: nothing kept. */
	T_OK(shm_reclaim(root, UINT64_MAX, tn, 0, &rep));
	T_EQ(shm_log_bytes_since(root, tn), 0);
	T_EQ(shm_log_bytes_since(root, tn - 1), 0);
	COMMIT(op_rmdir("/p/"));
	printf("log positions: ok (t1 %" PRIu64 ", tn %" PRIu64 ")\n", t1, tn);
}

int main(void)
{
	struct shm_root_opts opts = {.capacity = (size_t)128 << 20, .poison = true};
	struct shm_err err = {{0}};
	int rc = shm_root_create(&root, &opts, &err);
	if (rc < 0)
		T_FAIL("shm_root_create: %s (%s)", strerror(-rc), err.msg);
	seg = shm_root_seg(root);
	record_pos();
	printf("initial tick %" PRIu64 ", log_end %" PRIu64 "\n", shm_root_tick(root),
	       pos_of[shm_root_tick(root)]);

	case_overwrite();
	case_del();
	case_rmdir();
	case_recreate();
	case_prefix();
	case_log_free();
	case_pad_cursor();
	case_log_positions();
	shm_root_destroy(root);
	case_reset();
	printf("test_log: ok\n");
	return 0;
}
