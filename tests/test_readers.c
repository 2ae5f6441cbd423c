/* Concurrent readers in other processes: what this test proves.
 *
 * The root commits a deterministic workload, one batch per tick, and after
 * every commit reclaims everything the retire rule allows given the epochs
 * that three forked reader processes publish. The readers map the sealed
 * read-only fd (never the root's mapping) and, at the epoch they announced
 * with the classic protocol, read keys, list a directory and its
 * subdirectories, and check every value byte and every version tick against
 * the state at that epoch, computed in closed form. The root runs with
 * poisoning on, so an object freed while a reader could still reach it reads
 * as 0xa5 bytes (or as someone else's data) and fails the check.
 *
 * Fails on any mismatch, on a reader that crashed or hung, or if no read
 * overlapped a commit (then the test would not have tested concurrency).
 * It also checks that once every reader is offline, everything retired is
 * freed and memory is back to what the live state needs.
 *
 * Workload (u = t - t0, t0 = the setup tick):
 *  - /d/ has NKEYS keys; tick t puts key t % NKEYS with a value of
 *    1 + (t*37 % 300) bytes derived from t; every third tick also deletes key
 *    (7t+3) % NKEYS (when present: the del of an absent key is ENOENT).
 *  - /churn/ with subdirectory /churn/sub/: rmdir /churn/ (removing both) at
 *    u % 50 == 0, mkdir both with NCHURN keys at u % 50 == 1, and rmdir plus
 *    mkdir in one batch at u % 50 == 25; on other ticks with u % 7 == 3 one
 *    churn key is overwritten.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"
#include "testutil.h"

#define NREADERS 3
#define NKEYS 64
#define NCHURN 8
#define TICKS 15000
#define RUN_NS 1500000000ll /* the workload is paced over at least this long */
#define OFFLINE UINT64_MAX

/* Shared with the readers: a MAP_SHARED anonymous page made before fork. */
struct shared {
	_Atomic uint64_t epoch[NREADERS]; /* announced read epoch, OFFLINE when none */
	_Atomic int ready;
	_Atomic int stop;
	/* Each reader's counts, stored when it stops. */
	uint64_t reads[NREADERS], overlapped[NREADERS], listings[NREADERS], holds[NREADERS],
		offline[NREADERS], max_lag[NREADERS];
	char msg[NREADERS][512]; /* a reader's first mismatch */
};

static struct shared *sh;
static uint64_t t0;
static pid_t kids[NREADERS];
static pid_t parent;

/* ---- the workload in closed form ------------------------------------------- */

static size_t d_len(uint64_t t)
{
	return 1 + (size_t)(t * 37 % 300);
}

static uint8_t d_byte(uint64_t t, size_t i)
{
	return (uint8_t)(t * 131u + i * 7u + (t >> 7) + 1u);
}

static bool d_del(uint64_t t, unsigned *k)
{
	if (t % 3)
		return false;
	*k = (unsigned)((t * 7 + 3) % NKEYS);
	return true;
}

/* The tick of the version of /d/ key k visible at E, 0 if k is absent. The
 * put at t comes before the del in t's batch, so a del at t wins. */
static uint64_t d_state(unsigned k, uint64_t E)
{
	for (uint64_t t = E; t > t0; t--) {
		unsigned dk;
		if (d_del(t, &dk) && dk == k)
			return 0;
		if (t % NKEYS == k)
			return t;
	}
	return 0;
}

enum { CH_NONE, CH_RMDIR, CH_MKDIR, CH_RECREATE };

static int churn_event(uint64_t u)
{
	uint64_t r = u % 50;
	if (u == 0)
		return CH_NONE;
	if (r == 0)
		return CH_RMDIR;
	if (r == 1 && u > 1)
		return CH_MKDIR;
	if (r == 25)
		return CH_RECREATE;
	return CH_NONE;
}

static bool churn_update(uint64_t u, unsigned *j)
{
	if (u % 7 != 3 || churn_event(u) != CH_NONE)
		return false;
	*j = (unsigned)(u % NCHURN);
	return true;
}

/* The tick /churn/ (and /churn/sub/) visible at E was created, 0 if absent. */
static uint64_t churn_created(uint64_t E)
{
	uint64_t u = E - t0, r = u % 50;
	if (u == 0)
		return t0;
	if (r == 0)
		return 0;
	if (r >= 25)
		return t0 + u - r + 25;
	if (u < 50)
		return t0;
	return t0 + u - r + 1;
}

/* The tick of churn key j's version visible at E (the directory exists). */
static uint64_t churn_state(unsigned j, uint64_t E)
{
	uint64_t c = churn_created(E);
	for (uint64_t t = E; t > c; t--) {
		unsigned jj;
		if (churn_update(t - t0, &jj) && jj == j)
			return t;
	}
	return c;
}

static size_t c_len(uint64_t t, unsigned j)
{
	return 8 + (size_t)((t * 5 + j * 13) % 100);
}

static uint8_t c_byte(uint64_t t, unsigned j, size_t i)
{
	return (uint8_t)(t * 29u + j * 101u + i * 11u + 7u);
}

#define SUB_J 99 /* the value of /churn/sub/ "s" uses the churn pattern with j = 99 */

/* ---- the writer -------------------------------------------------------------- */

static char dkey[NKEYS][8], ckey[NCHURN][4];
static uint8_t dval[300], cval[NCHURN + 1][120];

static struct shm_op mkop(int kind, const char *dir, const char *key, const void *val, size_t vlen)
{
	struct shm_op o;
	memset(&o, 0, sizeof(o));
	o.kind = kind;
	o.dir = dir;
	o.dir_len = strlen(dir);
	o.key = key;
	o.key_len = key ? strlen(key) : 0;
	o.value = val;
	o.value_len = vlen;
	return o;
}

/* The churn directory's creation at tick t: both directories, every key. */
static size_t churn_create_ops(uint64_t t, struct shm_op *ops)
{
	size_t n = 0;
	ops[n++] = mkop(SHM_OP_MKDIR, "/churn/", NULL, NULL, 0);
	ops[n++] = mkop(SHM_OP_MKDIR, "/churn/sub/", NULL, NULL, 0);
	for (unsigned j = 0; j <= NCHURN; j++) {
		unsigned jj = j < NCHURN ? j : SUB_J;
		size_t len = c_len(t, jj);
		for (size_t i = 0; i < len; i++)
			cval[j][i] = c_byte(t, jj, i);
		ops[n++] = j < NCHURN ? mkop(SHM_OP_PUT, "/churn/", ckey[j], cval[j], len)
				      : mkop(SHM_OP_PUT, "/churn/sub/", "s", cval[j], len);
	}
	return n;
}

static size_t tick_ops(uint64_t t, struct shm_op *ops)
{
	size_t n = 0;
	unsigned k = (unsigned)(t % NKEYS), dk, j;
	for (size_t i = 0; i < d_len(t); i++)
		dval[i] = d_byte(t, i);
	ops[n++] = mkop(SHM_OP_PUT, "/d/", dkey[k], dval, d_len(t));
	if (d_del(t, &dk) && (dk == k || d_state(dk, t - 1)))
		ops[n++] = mkop(SHM_OP_DEL, "/d/", dkey[dk], NULL, 0);
	uint64_t u = t - t0;
	switch (churn_event(u)) {
	case CH_RMDIR:
		ops[n++] = mkop(SHM_OP_RMDIR, "/churn/", NULL, NULL, 0);
		break;
	case CH_RECREATE:
		ops[n++] = mkop(SHM_OP_RMDIR, "/churn/", NULL, NULL, 0);
		/* fall through */
	case CH_MKDIR:
		n += churn_create_ops(t, ops + n);
		break;
	default:
		if (churn_update(u, &j)) {
			size_t len = c_len(t, j);
			for (size_t i = 0; i < len; i++)
				cval[j][i] = c_byte(t, j, i);
			ops[n++] = mkop(SHM_OP_PUT, "/churn/", ckey[j], cval[j], len);
		}
	}
	return n;
}

/* ---- the readers ------------------------------------------------------------- */

struct reader {
	int id;
	struct shm_seg seg;
	unsigned long long rng;
	uint64_t E;
	uint64_t reads, overlapped, listings, holds, offline, max_lag;
};

#define R_FAIL(r, ...)                                                                                       \
	do {                                                                                                 \
		snprintf(sh->msg[(r)->id], sizeof(sh->msg[0]), __VA_ARGS__);                                 \
		_exit(2);                                                                                    \
	} while (0)

static bool value_ok(const struct shm_value *v, size_t len, uint64_t t, unsigned j, bool churn)
{
	if (v->len != len || ((uintptr_t)v->data & 7))
		return false;
	const uint8_t *p = v->data;
	for (size_t i = 0; i < len; i++)
		if (p[i] != (churn ? c_byte(t, j, i) : d_byte(t, i)))
			return false;
	return true;
}

static void describe(const struct shm_value *v, char *buf, size_t n)
{
	const uint8_t *p = v->data;
	snprintf(buf, n, "len %zu, tick %" PRIu64 ", bytes %02x %02x %02x %02x", v->len, v->tick,
		 v->len > 0 ? p[0] : 0, v->len > 1 ? p[1] : 0, v->len > 2 ? p[2] : 0, v->len > 3 ? p[3] : 0);
}

/* One read; counts it, and whether a commit was published while it ran. */
static void count_read(struct reader *r, uint64_t before)
{
	r->reads++;
	if (shm_published_tick(&r->seg) != before)
		r->overlapped++;
}

static void check_d_key(struct reader *r, unsigned k)
{
	struct shm_value v;
	uint64_t before = shm_published_tick(&r->seg);
	int rc = shm_get(&r->seg, r->E, "/d/", 3, dkey[k], strlen(dkey[k]), &v);
	count_read(r, before);
	uint64_t want = d_state(k, r->E);
	char got[128];
	if (!want) {
		if (rc != -ENOENT) {
			if (rc == 0)
				describe(&v, got, sizeof(got));
			R_FAIL(r, "get /d/%s at %" PRIu64 ": rc %d (%s), expected absent", dkey[k], r->E, rc,
			       rc == 0 ? got : "-");
		}
		return;
	}
	if (rc != 0)
		R_FAIL(r, "get /d/%s at %" PRIu64 ": rc %d, expected the version of tick %" PRIu64, dkey[k],
		       r->E, rc, want);
	if (v.tick != want || !value_ok(&v, d_len(want), want, 0, false)) {
		describe(&v, got, sizeof(got));
		R_FAIL(r, "get /d/%s at %" PRIu64 ": %s; expected tick %" PRIu64 " len %zu bytes %02x %02x",
		       dkey[k], r->E, got, want, d_len(want), d_byte(want, 0), d_byte(want, 1));
	}
}

struct listing {
	struct reader *r;
	uint64_t seen;
	int bad;
	char why[256];
};

static int list_d(const void *key, size_t key_len, const struct shm_value *v, void *arg)
{
	struct listing *l = arg;
	unsigned k;
	char name[16];
	if (key_len < 4 || key_len > 6) {
		snprintf(l->why, sizeof(l->why), "unexpected key of %zu bytes", key_len);
		return l->bad = 1;
	}
	memcpy(name, key, key_len);
	name[key_len] = 0;
	if (sscanf(name, "key%u", &k) != 1 || k >= NKEYS || strcmp(name, dkey[k]) != 0) {
		snprintf(l->why, sizeof(l->why), "unexpected key %s", name);
		return l->bad = 1;
	}
	uint64_t want = d_state(k, l->r->E);
	if (!want || v->tick != want || !value_ok(v, d_len(want), want, 0, false) || (l->seen >> k & 1)) {
		snprintf(l->why, sizeof(l->why),
			 "key %s: tick %" PRIu64 " len %zu, expected tick %" PRIu64 "%s", name, v->tick,
			 v->len, want, (l->seen >> k & 1) ? " (listed twice)" : "");
		return l->bad = 1;
	}
	l->seen |= (uint64_t)1 << k;
	return 0;
}

static int list_churn(const void *key, size_t key_len, const struct shm_value *v, void *arg)
{
	struct listing *l = arg;
	unsigned j;
	if (key_len != 2 || ((const char *)key)[0] != 'c' ||
	    (j = (unsigned)(((const char *)key)[1] - '0')) >= NCHURN) {
		snprintf(l->why, sizeof(l->why), "unexpected churn key of %zu bytes", key_len);
		return l->bad = 1;
	}
	uint64_t want = churn_state(j, l->r->E);
	if (v->tick != want || !value_ok(v, c_len(want, j), want, j, true) || (l->seen >> j & 1)) {
		snprintf(l->why, sizeof(l->why), "churn key c%u: tick %" PRIu64 ", expected %" PRIu64, j,
			 v->tick, want);
		return l->bad = 1;
	}
	l->seen |= (uint64_t)1 << j;
	return 0;
}

struct dirlist {
	char names[8][32];
	unsigned n;
};

static int list_dirs(const char *dir, size_t dir_len, void *arg)
{
	struct dirlist *d = arg;
	if (d->n < 8 && dir_len < 32) {
		memcpy(d->names[d->n], dir, dir_len);
		d->names[d->n][dir_len] = 0;
	}
	d->n++;
	return 0;
}

static void check_listing(struct reader *r)
{
	struct listing l = {.r = r};
	uint64_t before = shm_published_tick(&r->seg);
	int rc = shm_dir_iter(&r->seg, r->E, "/d/", 3, list_d, &l);
	count_read(r, before);
	if (rc != 0 || l.bad)
		R_FAIL(r, "list /d/ at %" PRIu64 ": rc %d %s", r->E, rc, l.why);
	uint64_t want = 0;
	for (unsigned k = 0; k < NKEYS; k++)
		if (d_state(k, r->E))
			want |= (uint64_t)1 << k;
	if (l.seen != want)
		R_FAIL(r, "list /d/ at %" PRIu64 ": keys %016" PRIx64 ", expected %016" PRIx64, r->E, l.seen,
		       want);
	r->listings++;
}

static void check_churn(struct reader *r)
{
	uint64_t c = churn_created(r->E);
	uint64_t before = shm_published_tick(&r->seg);
	int ex = shm_dir_exists(&r->seg, r->E, "/churn/", 7);
	int exsub = shm_dir_exists(&r->seg, r->E, "/churn/sub/", 11);
	struct dirlist dl = {.n = 0};
	int rc = shm_dirs_iter(&r->seg, r->E, "/", 1, list_dirs, &dl);
	count_read(r, before);
	if (ex != (c != 0) || exsub != (c != 0))
		R_FAIL(r, "at %" PRIu64 ": /churn/ exists %d, /churn/sub/ %d, expected %d", r->E, ex, exsub,
		       c != 0);
	/* Name order: "/churn/" < "/churn/sub/" < "/d/". */
	bool order_ok =
		rc == 0 && dl.n == (c ? 3u : 1u) && strcmp(dl.names[dl.n - 1], "/d/") == 0 &&
		(!c || (strcmp(dl.names[0], "/churn/") == 0 && strcmp(dl.names[1], "/churn/sub/") == 0));
	if (!order_ok)
		R_FAIL(r, "dirs under / at %" PRIu64 ": rc %d, %u names (first %s), expected %u", r->E, rc,
		       dl.n, dl.n ? dl.names[0] : "-", c ? 3u : 1u);
	if (!c) {
		struct shm_value v;
		rc = shm_get(&r->seg, r->E, "/churn/", 7, "c0", 2, &v);
		if (rc != -ENOENT)
			R_FAIL(r, "get /churn/c0 at %" PRIu64 " in a removed directory: rc %d", r->E, rc);
		return;
	}
	struct listing l = {.r = r};
	before = shm_published_tick(&r->seg);
	rc = shm_dir_iter(&r->seg, r->E, "/churn/", 7, list_churn, &l);
	count_read(r, before);
	if (rc != 0 || l.bad || l.seen != (1u << NCHURN) - 1)
		R_FAIL(r, "list /churn/ at %" PRIu64 " (created %" PRIu64 "): rc %d, seen %" PRIx64 " %s",
		       r->E, c, rc, l.seen, l.why);
	struct shm_value v;
	before = shm_published_tick(&r->seg);
	rc = shm_get(&r->seg, r->E, "/churn/sub/", 11, "s", 1, &v);
	count_read(r, before);
	if (rc != 0 || v.tick != c || !value_ok(&v, c_len(c, SUB_J), c, SUB_J, true))
		R_FAIL(r, "get /churn/sub/s at %" PRIu64 ": rc %d tick %" PRIu64 ", expected tick %" PRIu64,
		       r->E, rc, rc == 0 ? v.tick : 0, c);
}

/* The classic protocol: announce the tick, re-read it, and use the re-read
 * value; the writer scans epochs after a full fence, so either it sees the
 * announcement or the reader sees its newer tick. */
static void go_online(struct reader *r)
{
	uint64_t E = shm_published_tick(&r->seg);
	for (;;) {
		atomic_store_explicit(&sh->epoch[r->id], E, memory_order_seq_cst);
		uint64_t again = shm_published_tick(&r->seg);
		if (again == E)
			break;
		E = again;
	}
	r->E = E;
}

static void pause_us(int64_t us)
{
	struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
	nanosleep(&ts, NULL);
}

static void reader_main(int id, int fd)
{
	struct reader r = {.id = id, .rng = 0x9e3779b97f4a7c15ull * (unsigned)(id + 1)};
	struct shm_err err = {{0}};
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm(300);
	if (shm_seg_open_reader(&r.seg, fd, &err) < 0)
		R_FAIL(&r, "shm_seg_open_reader: %s", err.msg);
	atomic_fetch_add(&sh->ready, 1);
	while (!atomic_load(&sh->stop)) {
		go_online(&r);
		/* Sometimes hold the epoch for a while, so the writer moves on
		 * and must keep what this snapshot can reach. */
		unsigned rounds = t_rand(&r.rng) % 16 == 0 ? 20 : 1;
		if (rounds > 1)
			r.holds++;
		for (unsigned i = 0; i < rounds; i++) {
			for (int n = 0; n < 8; n++)
				check_d_key(&r, (unsigned)(t_rand(&r.rng) % NKEYS));
			if (t_rand(&r.rng) % 8 == 0)
				check_listing(&r);
			if (t_rand(&r.rng) % 4 == 0)
				check_churn(&r);
			if (rounds > 1)
				pause_us(50);
		}
		uint64_t lag = shm_published_tick(&r.seg) - r.E;
		if (lag > r.max_lag)
			r.max_lag = lag;
		if (t_rand(&r.rng) % 32 == 0) {
			atomic_store_explicit(&sh->epoch[id], OFFLINE, memory_order_seq_cst);
			r.offline++;
			pause_us(100);
		}
	}
	atomic_store_explicit(&sh->epoch[id], OFFLINE, memory_order_seq_cst);
	sh->reads[id] = r.reads;
	sh->overlapped[id] = r.overlapped;
	sh->listings[id] = r.listings;
	sh->holds[id] = r.holds;
	sh->offline[id] = r.offline;
	sh->max_lag[id] = r.max_lag;
	shm_seg_close(&r.seg);
	_exit(0);
}

/* ---- the test ------------------------------------------------------------------ */

static void kill_kids(void)
{
	if (getpid() != parent)
		return;
	for (int i = 0; i < NREADERS; i++)
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
			kids[i] = 0;
		}
}

static void on_alarm(int sig)
{
	(void)sig;
	static const char m[] = "test_readers: timed out\n";
	if (write(2, m, sizeof(m) - 1) < 0) {
		/* nothing more to say */
	}
	for (int i = 0; i < NREADERS; i++)
		if (kids[i] > 0)
			kill(kids[i], SIGKILL);
	_exit(1);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

int main(void)
{
	parent = getpid();
	signal(SIGALRM, on_alarm);
	alarm(170);
	for (unsigned k = 0; k < NKEYS; k++)
		snprintf(dkey[k], sizeof(dkey[k]), "key%u", k);
	for (unsigned j = 0; j < NCHURN; j++)
		snprintf(ckey[j], sizeof(ckey[j]), "c%u", j);

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	T_ASSERT(sh != MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	for (int i = 0; i < NREADERS; i++)
		atomic_store(&sh->epoch[i], OFFLINE);

	struct shm_root *root;
	struct shm_err err = {{0}};
	struct shm_root_opts o = {.capacity = (size_t)64 << 20, .poison = true};
	int rc = shm_root_create(&root, &o, &err);
	if (rc < 0)
		T_FAIL("shm_root_create: %d (%s)", rc, err.msg);
	struct shm_seg *seg = shm_root_seg(root);

	/* Setup tick t0: /d/ empty, /churn/ and /churn/sub/ full. */
	struct shm_op ops[32];
	size_t n = 0, failed = 0;
	uint64_t t = shm_root_tick(root) + 1;
	ops[n++] = mkop(SHM_OP_MKDIR, "/d/", NULL, NULL, 0);
	n += churn_create_ops(t, ops + n);
	T_OK(shm_commit_begin(root));
	T_OK(shm_apply_batch(root, ops, n, &failed));
	T_EQ(shm_commit_publish(root, &t0), 1);
	T_EQ(t0, t);
	struct shm_stats stats;
	shm_root_stats(root, &stats);
	const uint64_t base_bytes = stats.bytes_in_use; /* the log, names, churn: before any history */

	int rfd = shm_seg_reader_fd(seg, &err);
	if (rfd < 0)
		T_FAIL("shm_seg_reader_fd: %d (%s)", rfd, err.msg);
	T_OK(atexit(kill_kids));
	fflush(NULL);
	for (int i = 0; i < NREADERS; i++) {
		kids[i] = fork();
		T_ASSERT(kids[i] >= 0);
		if (kids[i] == 0) {
			/* The root's writable mapping was not inherited
			 * (MADV_DONTFORK); drop its fd too. */
			close(seg->fd);
			reader_main(i, rfd);
		}
	}
	int64_t start = now_ns();
	while (atomic_load(&sh->ready) < NREADERS) {
		int st;
		for (int i = 0; i < NREADERS; i++)
			if (waitpid(kids[i], &st, WNOHANG) == kids[i]) {
				kids[i] = 0;
				T_FAIL("reader %d died while starting: %s", i, sh->msg[i]);
			}
		if (now_ns() - start > 30000000000ll)
			T_FAIL("readers did not start");
		pause_us(1000);
	}

	struct shm_reclaim_report rep;
	uint64_t freed = 0, online_scans = 0;
	start = now_ns();
	for (uint64_t i = 1; i <= TICKS; i++) {
		t = t0 + i;
		n = tick_ops(t, ops);
		T_OK(shm_commit_begin(root));
		rc = shm_apply_batch(root, ops, n, &failed);
		if (rc < 0)
			T_FAIL("tick %" PRIu64 ": batch refused: %d at op %zu (the workload is wrong)", t, rc,
			       failed);
		uint64_t pub = 0;
		T_EQ(shm_commit_publish(root, &pub), 1);
		T_EQ(pub, t);
		/* Pairs with the readers' seq_cst announcement (see go_online). */
		atomic_thread_fence(memory_order_seq_cst);
		uint64_t min = OFFLINE;
		for (int r = 0; r < NREADERS; r++) {
			uint64_t e = atomic_load_explicit(&sh->epoch[r], memory_order_seq_cst);
			if (e < min)
				min = e;
		}
		online_scans += min != OFFLINE;
		T_OK(shm_reclaim(root, min, min, 0, &rep));
		freed += rep.objects_freed;
		/* Pace the ticks over RUN_NS so readers hold epochs across many
		 * commits rather than watching a burst go by. */
		int64_t due = start + (int64_t)((double)RUN_NS * (double)i / TICKS);
		int64_t ahead = due - now_ns();
		if (ahead > 200000)
			pause_us(ahead / 1000);
		for (int r = 0; r < NREADERS; r++) {
			int st;
			if (kids[r] > 0 && waitpid(kids[r], &st, WNOHANG) == kids[r]) {
				kids[r] = 0;
				if (WIFSIGNALED(st))
					T_FAIL("reader %d crashed (signal %d) at tick %" PRIu64, r,
					       WTERMSIG(st), t);
				T_FAIL("reader %d failed at tick %" PRIu64 ": %s", r, t, sh->msg[r]);
			}
		}
	}
	double secs = (double)(now_ns() - start) / 1e9;
	atomic_store(&sh->stop, 1);

	bool ok = true;
	uint64_t reads = 0, overlapped = 0;
	for (int i = 0; i < NREADERS; i++) {
		int st;
		T_EQ(waitpid(kids[i], &st, 0), kids[i]);
		kids[i] = 0;
		if (WIFSIGNALED(st)) {
			printf("reader %d crashed: signal %d\n", i, WTERMSIG(st));
			ok = false;
		} else if (WEXITSTATUS(st) != 0) {
			printf("reader %d failed: %s\n", i, sh->msg[i]);
			ok = false;
		}
		printf("reader %d: %" PRIu64 " reads, %" PRIu64 " overlapped a commit, %" PRIu64
		       " listings, %" PRIu64 " long holds, %" PRIu64 " times offline, max lag %" PRIu64
		       " ticks\n",
		       i, sh->reads[i], sh->overlapped[i], sh->listings[i], sh->holds[i], sh->offline[i],
		       sh->max_lag[i]);
		reads += sh->reads[i];
		overlapped += sh->overlapped[i];
	}
	printf("writer: %d ticks in %.2f s, %" PRIu64 " objects reclaimed while readers ran, %" PRIu64
	       " reclaims with a reader online\n",
	       TICKS, secs, freed, online_scans);
	if (!ok)
		T_FAIL("a reader failed");
	if (overlapped == 0)
		T_FAIL("no read overlapped a commit (%" PRIu64 " reads): concurrency was not tested", reads);
	T_ASSERT(online_scans > 0);
	T_ASSERT(freed > 0);

	/* Everyone is offline: everything retired goes, and what stays is what
	 * the live state needs on top of the setup (64 versions of <= 300-byte
	 * values and the /d/ table: well under 256 KiB), not 15000 ticks of
	 * history. */
	for (int i = 0; i < 2; i++)
		T_OK(shm_reclaim(root, OFFLINE, OFFLINE, 0, &rep));
	shm_root_stats(root, &stats);
	printf("after the run: %" PRIu64 " bytes in use (%" PRIu64 " after setup), %" PRIu64
	       " retired objects, %" PRIu64 " keys, %" PRIu64 " directories\n",
	       stats.bytes_in_use, base_bytes, stats.retired_objects, stats.keys, stats.directories);
	T_EQ(stats.retired_objects, 0);
	T_EQ(stats.retired_bytes, 0);
	if (stats.bytes_in_use > base_bytes + 256 * 1024)
		T_FAIL("%" PRIu64 " bytes in use after the run, %" PRIu64
		       " after setup: history was not reclaimed",
		       stats.bytes_in_use, base_bytes);
	uint64_t live_keys = 0;
	uint64_t tend = shm_root_tick(root);
	for (unsigned k = 0; k < NKEYS; k++)
		live_keys += d_state(k, tend) != 0;
	live_keys += churn_created(tend) ? NCHURN + 1 : 0;
	T_EQ(stats.keys, live_keys);
	T_EQ(stats.directories, churn_created(tend) ? 3 : 1);

	close(rfd);
	shm_root_destroy(root);
	munmap(sh, sizeof(*sh));
	printf("readers: ok\n");
	return 0;
}
