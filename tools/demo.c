/* shmsync demo: a root and N worker processes under a mixed load, a live
 * progress line, then a report and a convergence check.
 *
 * Processes: the demo's parent forks the root first (it never holds the root
 * itself, so the workers it forks afterwards inherit nothing of it), then N
 * workers. They coordinate through one anonymous shared mapping made before
 * any fork: the parent moves a phase word forward, each worker publishes its
 * counters and results in its own slot.
 *
 * Each worker keeps a replica of the whole state built from the change feed
 * alone (a snapshot at attach, then every import), and at the end compares
 * it with a snapshot read of the root context at the final tick: both, and
 * every other worker's, must hash the same.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "shmsync.h"
#include "tool.h"

#define MAX_WORKERS 256
#define SAMPLES 8192    /* propagation samples kept per worker (reservoir) */
#define WINDOW 8        /* batches a worker has in flight */
#define MAX_OPS 16      /* per batch */
#define SHARED_KEYS 256 /* /demo/shared/k000.. */
#define COUNTERS 16     /* /demo/counters/c00.. */
#define OWN_MAX 256     /* live keys in a worker's own directory */
#define SESSIONS_MAX 4  /* live session directories per worker */
#define WAIT_NS 10000000000LL
#define PHASE_TIMEOUT_S 30.0

static const char SHARED[] = "/demo/shared/";
static const char COUNTERS_DIR[] = "/demo/counters/";

enum phase {
	PH_SETUP,    /* workers attach and create their directories */
	PH_BASELINE, /* worker 0 records the statistics at start */
	PH_RUN,      /* the load */
	PH_STOP,     /* stop writing, report the last tick */
	PH_CONVERGE, /* import until final_tick, hash, report */
	PH_SETTLE,   /* everyone offline; worker 0 waits for reclamation, records the end */
	PH_EXIT,     /* detach and exit */
};

/* Failed sorts below every other state, so no wait mistakes it for progress. */
enum wstate { WS_FAILED = -1, WS_STARTING, WS_READY, WS_STOPPED, WS_CONVERGED };

struct wres {
	_Atomic int state;
	_Atomic uint64_t commits, updates, last_tick;
	/* Written before the state moves on (release), read after (acquire). */
	uint64_t published_at_stop;
	uint64_t dels, rmdirs, imports, resets, changes;
	int64_t delta_sum;
	uint64_t final_cursor, snap_hash, replica_hash, ndirs, nkeys;
	int64_t counter_sum;
	uint64_t nseen, nsamples;
	int64_t samples[SAMPLES];
	char err[256];
};

struct shared {
	_Atomic int phase;
	_Atomic int baseline_done, settle_done;
	uint64_t final_tick;
	uint64_t bytes_start, bytes_end, tomb_start, tomb_end, reclaimed_start, reclaimed_end, capacity;
	char root_signal[8], worker_signal[8];
	struct wres w[];
};

struct opts {
	unsigned workers;
	double seconds;
	const char *socket;
	size_t capacity;
};

static struct shared *sh;
static pid_t parent_pid;

/* ---- small things ----------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12; /* xorshift64* */
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

static uint64_t rnd(uint64_t *s, uint64_t n)
{
	return rng_next(s) % n;
}

static void sleep_ns(int64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const void *p)
{
	const uint8_t *b = p;
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}

/* ---- the replica: directories in name order, each with its keys in order ---- */

struct rkey {
	uint8_t *k;
	size_t kn;
	uint64_t vh; /* hash of the value */
};

struct rdir {
	char *name;
	struct rkey *keys;
	size_t n, cap;
};

struct replica {
	struct rdir *dirs;
	size_t n, cap;
	bool oom;
};

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (!q) {
		fprintf(stderr, "shmsync: demo: out of memory\n");
		_exit(1);
	}
	return q;
}

/* Index of the first directory >= name (its place if absent). */
static size_t dir_lower(const struct replica *r, const char *name)
{
	size_t lo = 0, hi = r->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (strcmp(r->dirs[mid].name, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void dir_free(struct rdir *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->keys[i].k);
	free(d->keys);
	free(d->name);
}

static struct rdir *rep_dir(struct replica *r, const char *name, bool create)
{
	size_t i = dir_lower(r, name);
	if (i < r->n && strcmp(r->dirs[i].name, name) == 0)
		return &r->dirs[i];
	if (!create)
		return NULL;
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 16;
		r->dirs = xrealloc(r->dirs, r->cap * sizeof(*r->dirs));
	}
	memmove(&r->dirs[i + 1], &r->dirs[i], (r->n - i) * sizeof(*r->dirs));
	r->dirs[i] = (struct rdir){0};
	r->dirs[i].name = strdup(name);
	if (!r->dirs[i].name)
		xrealloc(NULL, 0);
	r->n++;
	return &r->dirs[i];
}

static int key_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
	int c = memcmp(a, b, an < bn ? an : bn);
	return c ? c : (an > bn) - (an < bn);
}

static size_t key_lower(const struct rdir *d, const void *k, size_t kn, bool *found)
{
	size_t lo = 0, hi = d->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (key_cmp(d->keys[mid].k, d->keys[mid].kn, k, kn) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < d->n && key_cmp(d->keys[lo].k, d->keys[lo].kn, k, kn) == 0;
	return lo;
}

static void rep_put(struct replica *r, const char *dir, const void *k, size_t kn, uint64_t vh)
{
	/* Lenient: a put into a directory the replica lacks creates it. The
	 * final comparison with the snapshot is what judges. */
	struct rdir *d = rep_dir(r, dir, true);
	bool found;
	size_t i = key_lower(d, k, kn, &found);
	if (found) {
		d->keys[i].vh = vh;
		return;
	}
	if (d->n == d->cap) {
		d->cap = d->cap ? 2 * d->cap : 8;
		d->keys = xrealloc(d->keys, d->cap * sizeof(*d->keys));
	}
	memmove(&d->keys[i + 1], &d->keys[i], (d->n - i) * sizeof(*d->keys));
	d->keys[i].k = xrealloc(NULL, kn ? kn : 1);
	memcpy(d->keys[i].k, k, kn);
	d->keys[i].kn = kn;
	d->keys[i].vh = vh;
	d->n++;
}

static void rep_del(struct replica *r, const char *dir, const void *k, size_t kn)
{
	struct rdir *d = rep_dir(r, dir, false);
	if (!d)
		return;
	bool found;
	size_t i = key_lower(d, k, kn, &found);
	if (!found)
		return;
	free(d->keys[i].k);
	memmove(&d->keys[i], &d->keys[i + 1], (d->n - i - 1) * sizeof(*d->keys));
	d->n--;
}

/* A new incarnation: empty, whatever the replica had under that name. */
static void rep_mkdir(struct replica *r, const char *dir)
{
	struct rdir *d = rep_dir(r, dir, true);
	for (size_t i = 0; i < d->n; i++)
		free(d->keys[i].k);
	d->n = 0;
}

/* Removes dir and every directory whose name starts with it: in name order
 * they follow dir, all together. */
static void rep_rmdir(struct replica *r, const char *dir)
{
	size_t len = strlen(dir), i = dir_lower(r, dir), j = i;
	while (j < r->n && strncmp(r->dirs[j].name, dir, len) == 0)
		dir_free(&r->dirs[j++]);
	if (j == i)
		return; /* none (and dirs may still be NULL) */
	memmove(&r->dirs[i], &r->dirs[j], (r->n - j) * sizeof(*r->dirs));
	r->n -= j - i;
}

static void rep_clear(struct replica *r)
{
	for (size_t i = 0; i < r->n; i++)
		dir_free(&r->dirs[i]);
	r->n = 0;
}

static uint64_t rep_hash(const struct replica *r, uint64_t *nkeys)
{
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		xrealloc(NULL, 0);
	XXH3_64bits_reset(st);
	*nkeys = 0;
	for (size_t i = 0; i < r->n; i++) {
		const struct rdir *d = &r->dirs[i];
		uint64_t n = d->n;
		XXH3_64bits_update(st, d->name, strlen(d->name) + 1);
		XXH3_64bits_update(st, &n, sizeof(n));
		for (size_t j = 0; j < d->n; j++) {
			uint64_t kn = d->keys[j].kn;
			XXH3_64bits_update(st, &kn, sizeof(kn));
			XXH3_64bits_update(st, d->keys[j].k, d->keys[j].kn);
			XXH3_64bits_update(st, &d->keys[j].vh, sizeof(d->keys[j].vh));
		}
		*nkeys += n;
	}
	uint64_t h = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return h;
}

/* ---- reading the snapshot --------------------------------------------------- */

struct snap {
	shmsync_worker *w;
	struct replica *r;
	const char *dir;
	int64_t counter_sum;
	int rc;
};

static int snap_key(const void *k, size_t kn, shmsync_view v, void *arg)
{
	struct snap *s = arg;
	rep_put(s->r, s->dir, k, kn, XXH3_64bits(v.data, v.len));
	if (strcmp(s->dir, COUNTERS_DIR) == 0 && v.len == 8)
		s->counter_sum += (int64_t)get_le64(v.data);
	return 0;
}

static int snap_dir(const char *dir, void *arg)
{
	struct snap *s = arg;
	rep_mkdir(s->r, dir);
	s->dir = dir;
	s->rc = shmsync_dir_iter(s->w, dir, snap_key, s);
	return s->rc < 0 ? 1 : 0;
}

/* The whole state at the worker's snapshot, into r. */
static int read_snapshot(shmsync_worker *w, struct replica *r, int64_t *counter_sum)
{
	struct snap s = {w, r, NULL, 0, 0};
	rep_clear(r);
	int rc = shmsync_dirs_iter(w, NULL, snap_dir, &s);
	if (s.rc < 0)
		return s.rc;
	if (rc < 0)
		return rc;
	if (counter_sum)
		*counter_sum = s.counter_sum;
	return 0;
}

/* ---- a worker ---------------------------------------------------------------- */

struct inflight {
	uint64_t seq;
	unsigned nops, ndels, nrmdirs, nnew;
	int64_t delta;
	uint64_t new_keys[MAX_OPS];
	int64_t new_session; /* -1: none */
};

struct worker {
	unsigned id;
	shmsync_worker *w;
	struct wres *res;
	uint64_t rng;
	struct replica rep;
	char own_dir[64], ts_key[32];
	uint64_t own[OWN_MAX]; /* committed own keys, not being deleted */
	unsigned nown, npending_own;
	int64_t sessions[SESSIONS_MAX]; /* committed sessions, oldest first */
	unsigned nsessions, npending_sessions;
	uint64_t next_key, next_session;
	struct inflight win[WINDOW];
	unsigned win_head, win_n;
};

static _Noreturn void worker_fail(struct worker *k, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static _Noreturn void worker_fail(struct worker *k, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(k->res->err, sizeof(k->res->err), fmt, ap);
	va_end(ap);
	atomic_store_explicit(&k->res->state, WS_FAILED, memory_order_release);
	_exit(1);
}

static void wait_phase(struct worker *k, int phase)
{
	int64_t deadline = tool_now_ns() + (int64_t)(3 * PHASE_TIMEOUT_S * 1e9);
	while (atomic_load_explicit(&sh->phase, memory_order_acquire) < phase) {
		if (tool_now_ns() > deadline || getppid() != parent_pid)
			worker_fail(k, "worker %u: gave up waiting for phase %d", k->id, phase);
		sleep_ns(1000000);
	}
}

static void sample(struct worker *k, int64_t ns)
{
	struct wres *r = k->res;
	uint64_t seen = r->nseen++;
	if (seen < SAMPLES)
		r->samples[r->nsamples++] = ns;
	else {
		/* Reservoir: every sample equally likely to be kept. */
		uint64_t j = rnd(&k->rng, seen + 1);
		if (j < SAMPLES)
			r->samples[j] = ns;
	}
}

static int on_change(const shmsync_change *c, void *arg)
{
	struct worker *k = arg;
	k->res->changes++;
	switch (c->kind) {
	case SHMSYNC_PUT:
		rep_put(&k->rep, c->dir, c->key, c->key_len, XXH3_64bits(c->value, c->value_len));
		/* Another worker's timestamped put: export-to-import latency. */
		if (c->key_len > 4 && memcmp(c->key, "ts-w", 4) == 0 && c->value_len >= 8 &&
		    strcmp(c->dir, SHARED) == 0 &&
		    !(c->key_len == strlen(k->ts_key) && memcmp(c->key, k->ts_key, c->key_len) == 0)) {
			int64_t ns = tool_now_ns() - (int64_t)get_le64(c->value);
			if (ns >= 0)
				sample(k, ns);
		}
		break;
	case SHMSYNC_DEL:
		rep_del(&k->rep, c->dir, c->key, c->key_len);
		break;
	case SHMSYNC_MKDIR:
		rep_mkdir(&k->rep, c->dir);
		break;
	case SHMSYNC_RMDIR:
		rep_rmdir(&k->rep, c->dir);
		break;
	case SHMSYNC_RESET:
		k->res->resets++;
		rep_clear(&k->rep);
		break;
	}
	return 0;
}

static void import(struct worker *k, int64_t timeout_ns)
{
	int rc = shmsync_import_next(k->w, timeout_ns, on_change, k);
	if (rc >= 0)
		k->res->imports++;
	else if (rc != -ETIMEDOUT)
		worker_fail(k, "worker %u: import: %s", k->id, shmsync_strerror(rc));
}

static uint64_t commit_now(struct worker *k, shmsync_batch *b, bool exist_ok, const char *what)
{
	uint64_t seq, tick = 0;
	int rc = shmsync_export(b, 0, &seq);
	if (rc == 0)
		rc = shmsync_wait_committed(k->w, seq, &tick, WAIT_NS);
	if (rc == -EEXIST && exist_ok)
		return 0;
	if (rc < 0)
		worker_fail(k, "worker %u: %s: %s", k->id, what, shmsync_strerror(rc));
	return tick;
}

static void mkdir_now(struct worker *k, const char *dir, bool exist_ok)
{
	shmsync_batch *b;
	int rc = shmsync_begin(k->w, &b);
	if (rc == 0)
		rc = shmsync_mkdir(b, dir);
	if (rc < 0)
		worker_fail(k, "worker %u: mkdir %s: %s", k->id, dir, shmsync_strerror(rc));
	commit_now(k, b, exist_ok, dir);
}

/* Waits for the oldest batch in flight and books it. Every batch is valid
 * against what this worker knows for sure (it deletes only keys and
 * sessions whose creation was acknowledged), so a rejection is a bug. */
static void retire_oldest(struct worker *k)
{
	struct inflight *f = &k->win[k->win_head];
	uint64_t tick;
	int rc = shmsync_wait_committed(k->w, f->seq, &tick, WAIT_NS);
	if (rc < 0)
		worker_fail(k, "worker %u: batch %" PRIu64 " rejected: %s", k->id, f->seq,
			    shmsync_strerror(rc));
	struct wres *r = k->res;
	for (unsigned i = 0; i < f->nnew; i++)
		k->own[k->nown++] = f->new_keys[i];
	k->npending_own -= f->nnew;
	if (f->new_session >= 0) {
		k->sessions[k->nsessions++] = f->new_session;
		k->npending_sessions--;
	}
	r->dels += f->ndels;
	r->rmdirs += f->nrmdirs;
	r->delta_sum += f->delta;
	atomic_fetch_add_explicit(&r->commits, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&r->updates, f->nops, memory_order_relaxed);
	if (tick > atomic_load_explicit(&r->last_tick, memory_order_relaxed))
		atomic_store_explicit(&r->last_tick, tick, memory_order_relaxed);
	k->win_head = (k->win_head + 1) % WINDOW;
	k->win_n--;
}

static void add_op(struct worker *k, int rc, const char *what)
{
	if (rc < 0)
		worker_fail(k, "worker %u: building a batch (%s): %s", k->id, what, shmsync_strerror(rc));
}

/* One batch of 1..8 random operations (a session adds up to 4 more). */
static void one_batch(struct worker *k)
{
	shmsync_batch *b;
	uint8_t val[256];
	char key[48], sdir[64];
	int rc = shmsync_begin(k->w, &b);
	if (rc < 0)
		worker_fail(k, "worker %u: begin: %s", k->id, shmsync_strerror(rc));
	struct inflight *f = &k->win[(k->win_head + k->win_n) % WINDOW];
	*f = (struct inflight){.new_session = -1};
	unsigned nops = 1 + (unsigned)rnd(&k->rng, 8);
	bool session_done = false;
	for (unsigned i = 0; i < nops; i++) {
		uint64_t r = rnd(&k->rng, 100);
		if (r < 35) {
			/* Shared keys: every worker overwrites them. Random
			 * bytes, so values are binary. */
			size_t vn = 8 + (size_t)rnd(&k->rng, 193);
			for (size_t j = 0; j < vn; j += 8) {
				uint64_t x = rng_next(&k->rng);
				memcpy(val + j, &x, vn - j < 8 ? vn - j : 8);
			}
			snprintf(key, sizeof(key), "k%03u", (unsigned)rnd(&k->rng, SHARED_KEYS));
			add_op(k, shmsync_put(b, SHARED, key, strlen(key), val, vn), "put");
			f->nops++;
		} else if (r < 60) {
			int64_t delta = 1 + (int64_t)rnd(&k->rng, 9);
			snprintf(key, sizeof(key), "c%02u", (unsigned)rnd(&k->rng, COUNTERS));
			add_op(k, shmsync_add(b, COUNTERS_DIR, key, strlen(key), delta), "add");
			f->delta += delta;
			f->nops++;
		} else if (r < 75 && k->nown + k->npending_own < OWN_MAX) {
			/* Fresh names only: a deleted key is never put again, so
			 * every del makes a tombstone that is later freed. */
			uint64_t id = k->next_key++;
			snprintf(key, sizeof(key), "o%" PRIu64, id);
			size_t vn = 8 + (size_t)rnd(&k->rng, 57);
			memset(val, 'a' + (int)(id % 26), vn);
			add_op(k, shmsync_put(b, k->own_dir, key, strlen(key), val, vn), "put own");
			f->new_keys[f->nnew++] = id;
			k->npending_own++;
			f->nops++;
		} else if (r < 88 && k->nown > 0) {
			unsigned j = (unsigned)rnd(&k->rng, k->nown);
			snprintf(key, sizeof(key), "o%" PRIu64, k->own[j]);
			k->own[j] = k->own[--k->nown];
			add_op(k, shmsync_del(b, k->own_dir, key, strlen(key)), "del");
			f->ndels++;
			f->nops++;
		} else if (!session_done) {
			/* Session churn: directories come and go, one change of
			 * them per batch. */
			session_done = true;
			if (k->nsessions > 0 &&
			    (k->nsessions + k->npending_sessions >= SESSIONS_MAX || rnd(&k->rng, 2) == 0)) {
				snprintf(sdir, sizeof(sdir), "/demo/sessions/w%u-%" PRId64 "/", k->id,
					 k->sessions[0]);
				memmove(&k->sessions[0], &k->sessions[1],
					--k->nsessions * sizeof(k->sessions[0]));
				add_op(k, shmsync_rmdir(b, sdir), "rmdir");
				f->nrmdirs++;
				f->nops++;
			} else if (k->nsessions + k->npending_sessions < SESSIONS_MAX) {
				int64_t s = (int64_t)k->next_session++;
				snprintf(sdir, sizeof(sdir), "/demo/sessions/w%u-%" PRId64 "/", k->id, s);
				add_op(k, shmsync_mkdir(b, sdir), "mkdir");
				unsigned n = 1 + (unsigned)rnd(&k->rng, 3);
				for (unsigned j = 0; j < n; j++) {
					snprintf(key, sizeof(key), "attr%u", j);
					add_op(k, shmsync_put(b, sdir, key, strlen(key), sdir, strlen(sdir)),
					       "put session");
				}
				f->nops += 1 + n;
				f->new_session = s;
				k->npending_sessions++;
			}
		}
	}
	/* One batch in four carries a timestamp for the others to measure. */
	if (rnd(&k->rng, 4) == 0) {
		put_le64(val, (uint64_t)tool_now_ns());
		memset(val + 8, 't', 24);
		add_op(k, shmsync_put(b, SHARED, k->ts_key, strlen(k->ts_key), val, 32), "put ts");
		f->nops++;
	}
	if (f->nops == 0) {
		shmsync_abort(b);
		return;
	}
	rc = shmsync_export(b, 0, &f->seq);
	if (rc < 0)
		worker_fail(k, "worker %u: export: %s", k->id, shmsync_strerror(rc));
	k->win_n++;
}

static int worker_main(unsigned id, const char *socket)
{
	struct worker k = {.id = id, .res = &sh->w[id]};
	k.rng = 0x9E3779B97F4A7C15ULL * (id + 1) ^ (uint64_t)tool_now_ns();
	snprintf(k.own_dir, sizeof(k.own_dir), "/demo/w%u/", id);
	snprintf(k.ts_key, sizeof(k.ts_key), "ts-w%u", id);

	char err[256] = "";
	int rc = shmsync_attach_msg(&k.w, socket, err, sizeof(err));
	if (rc < 0)
		worker_fail(&k, "worker %u: attach: %s", id, err[0] ? err : shmsync_strerror(rc));
	mkdir_now(&k, SHARED, true);
	mkdir_now(&k, COUNTERS_DIR, true);
	mkdir_now(&k, k.own_dir, false);
	/* The replica starts from a snapshot; imports carry it from there. */
	shmsync_stats st;
	rc = shmsync_stat(k.w, &st);
	if (rc == 0)
		rc = shmsync_import_until(k.w, st.tick, WAIT_NS, NULL, NULL);
	if (rc >= 0)
		rc = read_snapshot(k.w, &k.rep, NULL);
	if (rc < 0)
		worker_fail(&k, "worker %u: first snapshot: %s", id, shmsync_strerror(rc));
	atomic_store_explicit(&k.res->state, WS_READY, memory_order_release);

	wait_phase(&k, PH_BASELINE);
	if (id == 0) {
		if (shmsync_stat(k.w, &st) < 0)
			worker_fail(&k, "worker 0: stat failed");
		sh->bytes_start = st.bytes_in_use;
		sh->tomb_start = st.tombstones;
		sh->reclaimed_start = st.reclaimed;
		sh->capacity = st.capacity;
		snprintf(sh->root_signal, sizeof(sh->root_signal), "%s", st.root_signal);
		snprintf(sh->worker_signal, sizeof(sh->worker_signal), "%s", st.signal);
		atomic_store_explicit(&sh->baseline_done, 1, memory_order_release);
	}
	wait_phase(&k, PH_RUN);

	for (uint64_t iter = 0; atomic_load_explicit(&sh->phase, memory_order_relaxed) == PH_RUN; iter++) {
		if (k.win_n == WINDOW)
			retire_oldest(&k);
		one_batch(&k);
		/* Mostly a poll; now and then a real wait (offline while it
		 * sleeps), as a server between requests would. */
		import(&k, iter % 16 == 15 ? 1000000 : 0);
	}
	while (k.win_n)
		retire_oldest(&k);
	if (shmsync_stat(k.w, &st) < 0)
		worker_fail(&k, "worker %u: stat failed", id);
	k.res->published_at_stop = st.tick;
	atomic_store_explicit(&k.res->state, WS_STOPPED, memory_order_release);

	wait_phase(&k, PH_CONVERGE);
	uint64_t final = sh->final_tick;
	rc = shmsync_import_until(k.w, final, WAIT_NS, on_change, &k);
	if (rc < 0)
		worker_fail(&k, "worker %u: import until the final tick %" PRIu64 ": %s", id, final,
			    shmsync_strerror(rc));
	struct replica snap = {0};
	rc = read_snapshot(k.w, &snap, &k.res->counter_sum);
	if (rc < 0)
		worker_fail(&k, "worker %u: final snapshot: %s", id, shmsync_strerror(rc));
	uint64_t nkeys;
	k.res->final_cursor = shmsync_cursor(k.w);
	k.res->snap_hash = rep_hash(&snap, &k.res->nkeys);
	k.res->replica_hash = rep_hash(&k.rep, &nkeys);
	k.res->ndirs = snap.n;
	rep_clear(&snap);
	free(snap.dirs);
	atomic_store_explicit(&k.res->state, WS_CONVERGED, memory_order_release);
	/* Pin nothing, so reclamation can finish before the end figures. */
	shmsync_offline(k.w);

	wait_phase(&k, PH_SETTLE);
	if (id == 0) {
		/* Tombstones go one reclamation after every reader passed them;
		 * wait (bounded) until they are gone and the figures hold still. */
		int64_t deadline = tool_now_ns() + 3000000000LL;
		uint64_t last_bytes = 0;
		int still = 0;
		do {
			sleep_ns(20000000);
			if (shmsync_stat(k.w, &st) < 0)
				worker_fail(&k, "worker 0: stat failed");
			still = st.bytes_in_use == last_bytes && st.tombstones <= sh->tomb_start ? still + 1
												 : 0;
			last_bytes = st.bytes_in_use;
		} while (still < 5 && tool_now_ns() < deadline);
		sh->bytes_end = st.bytes_in_use;
		sh->tomb_end = st.tombstones;
		sh->reclaimed_end = st.reclaimed;
		atomic_store_explicit(&sh->settle_done, 1, memory_order_release);
	}
	wait_phase(&k, PH_EXIT);
	shmsync_detach(k.w);
	rep_clear(&k.rep);
	free(k.rep.dirs);
	return 0;
}

/* ---- the root's process -------------------------------------------------------- */

static shmsync_root *root;

static void on_root_term(int sig)
{
	(void)sig;
	if (root)
		shmsync_root_stop(root);
}

/* ready: the write end of a pipe; one byte on it says the root listens. */
static int root_main(const struct opts *o, int ready)
{
	char err[512] = "";
	shmsync_root_opts ro = {0};
	ro.socket_path = o->socket;
	ro.capacity = o->capacity;
	ro.max_workers = o->workers + 4;
	ro.errbuf = err;
	ro.errbuf_len = sizeof(err);
	int rc = shmsync_root_open(&root, &ro);
	if (rc < 0) {
		if (rc == -EADDRINUSE)
			tool_err("a root already serves %s", o->socket);
		else
			tool_err("cannot start the root: %s", err[0] ? err : shmsync_strerror(rc));
		return rc == -EINVAL ? TOOL_USAGE : TOOL_FAIL;
	}
	struct sigaction sa = {0};
	sa.sa_handler = on_root_term;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	if (write(ready, "r", 1) != 1) {
		tool_err("telling the demo the root is ready: %s", strerror(errno));
		shmsync_root_close(root);
		return TOOL_FAIL;
	}
	close(ready);
	rc = shmsync_root_run(root);
	shmsync_root_close(root);
	if (rc < 0) {
		tool_err("the root's loop failed: %s", shmsync_strerror(rc));
		return TOOL_FAIL;
	}
	return TOOL_OK;
}

/* ---- the parent ---------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;
static bool mid_line; /* the progress line is on stderr, unterminated */

/* A message from the parent starts on a line of its own. */
static void end_progress(void)
{
	if (mid_line)
		fputc('\n', stderr);
	mid_line = false;
}

static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

struct run {
	const struct opts *o;
	pid_t root_pid;
	pid_t pids[MAX_WORKERS];
	bool root_exited;
	int root_status;
	unsigned exited;
	bool failed;
};

/* Forks; the child gets sig when the parent dies (a demo interrupted hard
 * leaves nothing behind) and ignores SIGINT. Returns fork's value. */
static pid_t spawn(int sig_on_parent_death)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, sig_on_parent_death);
	if (getppid() != parent_pid)
		_exit(1);
	/* Ctrl-C reaches the whole process group: the parent alone decides
	 * what it means (stop early, then report). */
	signal(SIGINT, SIG_IGN);
	return 0;
}

/* Reaps children that exited. Any exit before PH_EXIT is a failure, named
 * once. Returns false once something failed. */
static bool check_children(struct run *r)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		end_progress();
		if (pid == r->root_pid) {
			r->root_exited = true;
			r->root_status = status;
			if (!r->failed)
				tool_err("the root exited early (%s %d)",
					 WIFSIGNALED(status) ? "signal" : "status",
					 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
			r->failed = true;
			continue;
		}
		for (unsigned i = 0; i < r->o->workers; i++) {
			if (r->pids[i] != pid)
				continue;
			r->pids[i] = 0;
			r->exited++;
			bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
				  atomic_load(&sh->phase) == PH_EXIT;
			if (!ok && !r->failed) {
				if (atomic_load_explicit(&sh->w[i].state, memory_order_acquire) == WS_FAILED)
					tool_err("%s", sh->w[i].err);
				else
					tool_err("worker %u exited early (%s %d)", i,
						 WIFSIGNALED(status) ? "signal" : "status",
						 WIFSIGNALED(status) ? WTERMSIG(status)
								     : WEXITSTATUS(status));
			}
			if (!ok)
				r->failed = true;
		}
	}
	return !r->failed;
}

static bool all_workers(unsigned n, int state)
{
	for (unsigned i = 0; i < n; i++)
		if (atomic_load_explicit(&sh->w[i].state, memory_order_acquire) < state)
			return false;
	return true;
}

/* Waits until every worker reached state (or flag is set), watching the
 * children. */
static bool wait_workers(struct run *r, int state, _Atomic int *flag, const char *what)
{
	int64_t deadline = tool_now_ns() + (int64_t)(PHASE_TIMEOUT_S * 1e9);
	for (;;) {
		if (!check_children(r))
			return false;
		if (flag ? atomic_load_explicit(flag, memory_order_acquire) != 0
			 : all_workers(r->o->workers, state))
			return true;
		if (tool_now_ns() > deadline) {
			end_progress();
			tool_err("timed out waiting for the workers to %s", what);
			r->failed = true;
			return false;
		}
		sleep_ns(1000000);
	}
}

static void stats_sum(unsigned n, uint64_t *commits, uint64_t *updates, uint64_t *tick)
{
	*commits = *updates = *tick = 0;
	for (unsigned i = 0; i < n; i++) {
		*commits += atomic_load_explicit(&sh->w[i].commits, memory_order_relaxed);
		*updates += atomic_load_explicit(&sh->w[i].updates, memory_order_relaxed);
		uint64_t t = atomic_load_explicit(&sh->w[i].last_tick, memory_order_relaxed);
		if (t > *tick)
			*tick = t;
	}
}

static bool run_load(struct run *r, double *elapsed)
{
	int64_t start = tool_now_ns(), end = start + (int64_t)(r->o->seconds * 1e9);
	uint64_t last_commits = 0;
	int64_t last_t = start;
	atomic_store_explicit(&sh->phase, PH_RUN, memory_order_release);
	for (;;) {
		int64_t now = tool_now_ns();
		if (now >= end || interrupted)
			break;
		int64_t next = last_t + 500000000;
		sleep_ns((next < end ? next : end) - now);
		if (!check_children(r))
			return false;
		now = tool_now_ns();
		uint64_t commits, updates, tick;
		stats_sum(r->o->workers, &commits, &updates, &tick);
		double dt = (double)(now - last_t) * 1e-9;
		fprintf(stderr,
			"\r%6.1f s  %10" PRIu64 " commits  %9.0f commits/s  %11" PRIu64
			" updates  tick %-10" PRIu64,
			(double)(now - start) * 1e-9, commits,
			dt > 0 ? (double)(commits - last_commits) / dt : 0.0, updates, tick);
		fflush(stderr);
		mid_line = true;
		last_commits = commits;
		last_t = now;
	}
	*elapsed = (double)(tool_now_ns() - start) * 1e-9;
	end_progress();
	atomic_store_explicit(&sh->phase, PH_STOP, memory_order_release);
	return true;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static const char *fmt_ns(char *buf, size_t len, int64_t ns)
{
	if (ns < 10000)
		snprintf(buf, len, "%.1f us", (double)ns / 1e3);
	else if (ns < 10000000)
		snprintf(buf, len, "%.0f us", (double)ns / 1e3);
	else
		snprintf(buf, len, "%.1f ms", (double)ns / 1e6);
	return buf;
}

/* The report; returns whether every check passed. */
static bool report(struct run *r, double elapsed)
{
	unsigned n = r->o->workers;
	uint64_t commits, updates, tick, dels = 0, rmdirs = 0, resets = 0, nsamples = 0;
	int64_t deltas = 0;
	stats_sum(n, &commits, &updates, &tick);
	for (unsigned i = 0; i < n; i++) {
		dels += sh->w[i].dels;
		rmdirs += sh->w[i].rmdirs;
		resets += sh->w[i].resets;
		deltas += sh->w[i].delta_sum;
		nsamples += sh->w[i].nsamples;
	}
	int64_t *all = malloc((nsamples ? nsamples : 1) * sizeof(*all));
	if (!all) {
		tool_err("out of memory");
		return false;
	}
	size_t m = 0;
	for (unsigned i = 0; i < n; i++) {
		memcpy(all + m, sh->w[i].samples, sh->w[i].nsamples * sizeof(*all));
		m += sh->w[i].nsamples;
	}
	qsort(all, m, sizeof(*all), cmp_i64);
	char b1[32], b2[32];
	printf("shmsync demo: %u worker%s for %.1f s, signal %s (root), %s (workers)\n", n, n == 1 ? "" : "s",
	       elapsed, sh->root_signal, sh->worker_signal);
	printf("  commits       %" PRIu64 " (%.0f/s)\n", commits, (double)commits / elapsed);
	printf("  updates       %" PRIu64 " (%.0f/s)\n", updates, (double)updates / elapsed);
	if (m)
		printf("  propagation   p50 %s, p99 %s (export to import in another worker, %zu samples)\n",
		       fmt_ns(b1, sizeof(b1), all[m / 2]), fmt_ns(b2, sizeof(b2), all[m * 99 / 100]), m);
	else
		printf("  propagation   no samples (one worker has no one to tell)\n");
	free(all);
	printf("  bytes in use  %s at start, ", tool_bytes(b1, sizeof(b1), sh->bytes_start));
	printf("%s at end (capacity %s)\n", tool_bytes(b1, sizeof(b1), sh->bytes_end),
	       tool_bytes(b2, sizeof(b2), sh->capacity));
	uint64_t created = dels + rmdirs,
		 grew = sh->tomb_end > sh->tomb_start ? sh->tomb_end - sh->tomb_start : 0;
	printf("  tombstones    %" PRIu64 " created (%" PRIu64 " dels, %" PRIu64 " rmdirs), %" PRIu64
	       " freed, %" PRIu64 " live at end\n",
	       created, dels, rmdirs, created - (grew < created ? grew : created), sh->tomb_end);
	printf("  reclaimed     %" PRIu64 " objects\n", sh->reclaimed_end - sh->reclaimed_start);

	bool ok = true;
	const struct wres *w0 = &sh->w[0];
	for (unsigned i = 0; i < n; i++) {
		const struct wres *w = &sh->w[i];
		if (w->final_cursor != sh->final_tick || w->snap_hash != w0->snap_hash ||
		    w->replica_hash != w->snap_hash) {
			printf("  worker %u      tick %" PRIu64 ", snapshot %016" PRIx64
			       ", from its imports %016" PRIx64 "\n",
			       i, w->final_cursor, w->snap_hash, w->replica_hash);
			ok = false;
		}
	}
	if (w0->counter_sum != deltas) {
		printf("  counters      sum %" PRId64 ", but the workers added %" PRId64 "\n",
		       w0->counter_sum, deltas);
		ok = false;
	} else {
		printf("  counters      %d counters sum to %" PRId64 ", what the workers added\n", COUNTERS,
		       deltas);
	}
	if (ok)
		printf("  converged     all %u worker%s at tick %" PRIu64 ", state %016" PRIx64 " (%" PRIu64
		       " directories, %" PRIu64 " keys), the same from their imports (%" PRIu64 " resets)\n",
		       n, n == 1 ? "" : "s", sh->final_tick, w0->snap_hash, w0->ndirs, w0->nkeys, resets);
	else
		printf("  NOT converged: the workers disagree (see above)\n");
	fflush(stdout);
	return ok;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shmsync demo [OPTIONS]\n\n"
		"Starts a root and N workers running a mixed load (puts, counter adds, dels,\n"
		"mkdir/rmdir churn of session directories, imports) with a live progress line,\n"
		"then reports commits/s, updates/s, export-to-import propagation, memory and\n"
		"tombstones, and checks that every worker ended on the same tick with the same\n"
		"state, the state its own imports built. Exits 1 if not.\n\n"
		"Options:\n"
		"  -n, --workers N       worker processes, 1..%d (default: the number of CPUs, at least 2)\n"
		"  -d, --seconds S       how long the load runs, 0.1..86400 (default 5)\n"
		"  -s, --socket PATH     the root's socket (default: a temporary path in /tmp)\n"
		"  -c, --capacity SIZE   the root's address space, e.g. 256M (default: from limits,\n"
		"                        $SHMSYNC_CAPACITY)\n"
		"  -h, --help            this help\n",
		MAX_WORKERS);
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{"workers", required_argument, NULL, 'n'}, {"seconds", required_argument, NULL, 'd'},
		{"socket", required_argument, NULL, 's'},  {"capacity", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
	};
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned long long u;
	int opt;
	o->workers = cpus < 2 ? 2 : cpus > MAX_WORKERS ? MAX_WORKERS : (unsigned)cpus;
	o->seconds = 5;
	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, ":n:d:s:c:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (tool_parse_uint("--workers", optarg, 1, MAX_WORKERS, &u) < 0)
				return TOOL_USAGE;
			o->workers = (unsigned)u;
			break;
		case 'd':
			if (tool_parse_seconds("--seconds", optarg, 0.1, 86400, &o->seconds) < 0)
				return TOOL_USAGE;
			break;
		case 's':
			o->socket = optarg;
			break;
		case 'c':
			if (tool_parse_size("--capacity", optarg, &o->capacity) < 0)
				return TOOL_USAGE;
			break;
		case 'h':
			usage(stdout);
			return TOOL_OK;
		case ':':
			tool_err("option '%s' needs a value (see shmsync demo --help)", argv[optind - 1]);
			return TOOL_USAGE;
		default:
			tool_err("unknown option '%s' (see shmsync demo --help)", argv[optind - 1]);
			return TOOL_USAGE;
		}
	}
	if (optind < argc) {
		tool_err("unexpected argument '%s' (see shmsync demo --help)", argv[optind]);
		return TOOL_USAGE;
	}
	/* The demo starts its own root, so it does not default to
	 * $SHMSYNC_SOCKET, where another root may be serving. */
	if (o->socket && tool_socket(o->socket, &o->socket) < 0)
		return TOOL_USAGE;
	return -1;
}

/* Stops everything that still runs, politely first. */
static void shut_down(struct run *r)
{
	atomic_store_explicit(&sh->phase, PH_EXIT, memory_order_release);
	int64_t deadline = tool_now_ns() + 10000000000LL;
	while (r->exited < r->o->workers && tool_now_ns() < deadline) {
		check_children(r);
		if (r->exited < r->o->workers)
			sleep_ns(1000000);
	}
	for (unsigned i = 0; i < r->o->workers; i++)
		if (r->pids[i] > 0) {
			kill(r->pids[i], SIGKILL);
			waitpid(r->pids[i], NULL, 0);
			r->pids[i] = 0;
		}
	if (r->root_pid > 0 && !r->root_exited) {
		kill(r->root_pid, SIGTERM);
		deadline = tool_now_ns() + 10000000000LL;
		int status = 0;
		pid_t got;
		while ((got = waitpid(r->root_pid, &status, WNOHANG)) == 0 && tool_now_ns() < deadline)
			sleep_ns(1000000);
		if (got == 0) {
			tool_err("the root did not stop on SIGTERM: killed");
			kill(r->root_pid, SIGKILL);
			waitpid(r->root_pid, &status, 0);
			r->failed = true;
		} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			tool_err("the root failed when stopped (status %d)", status);
			r->failed = true;
		}
		r->root_exited = true;
	}
}

int demo_main(int argc, char **argv)
{
	struct opts o = {0};
	int ret = parse(argc, argv, &o);
	if (ret >= 0)
		return ret;
	char tmp[64];
	bool temp_socket = !o.socket;
	if (temp_socket) {
		snprintf(tmp, sizeof(tmp), "/tmp/shmsync-demo-%d.sock", (int)getpid());
		o.socket = tmp;
	}
	size_t size = sizeof(struct shared) + o.workers * sizeof(struct wres);
	sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		tool_err("mmap of %zu bytes: %s", size, strerror(errno));
		return TOOL_FAIL;
	}
	parent_pid = getpid();
	fflush(NULL); /* nothing buffered is written twice by the children */

	struct run r = {.o = &o};
	/* The root first, before anything holds it: the workers forked after
	 * it inherit none of its mappings or descriptors. */
	/* Readiness comes from the root itself, not from the socket's path:
	 * with --socket the path may belong to another root, whose workers
	 * the demo must not join. */
	int ready[2];
	if (pipe2(ready, O_CLOEXEC) < 0) {
		tool_err("pipe: %s", strerror(errno));
		return TOOL_FAIL;
	}
	r.root_pid = spawn(SIGTERM);
	if (r.root_pid == 0) {
		close(ready[0]);
		_exit(root_main(&o, ready[1]));
	}
	close(ready[1]);
	if (r.root_pid < 0) {
		close(ready[0]);
		tool_err("fork: %s", strerror(errno));
		return TOOL_FAIL;
	}
	struct pollfd pfd = {ready[0], POLLIN, 0};
	char byte;
	int polled;
	while ((polled = poll(&pfd, 1, 10000)) < 0 && errno == EINTR)
		;
	ssize_t got = polled > 0 ? read(ready[0], &byte, 1) : -1;
	close(ready[0]);
	if (got != 1) {
		int status = 0;
		if (polled == 0) {
			tool_err("the root did not start in 10 s");
			kill(r.root_pid, SIGKILL);
		}
		waitpid(r.root_pid, &status, 0);
		/* Otherwise it said why on stderr. */
		return WIFEXITED(status) && WEXITSTATUS(status) == TOOL_USAGE ? TOOL_USAGE : TOOL_FAIL;
	}

	struct sigaction sa = {0};
	sa.sa_handler = on_interrupt;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	for (unsigned i = 0; i < o.workers; i++) {
		pid_t pid = spawn(SIGKILL);
		if (pid == 0)
			_exit(worker_main(i, o.socket));
		if (pid < 0) {
			tool_err("fork: %s", strerror(errno));
			r.failed = true;
			break;
		}
		r.pids[i] = pid;
	}
	double elapsed = 0;
	bool ok = !r.failed && wait_workers(&r, WS_READY, NULL, "attach");
	if (ok) {
		atomic_store_explicit(&sh->phase, PH_BASELINE, memory_order_release);
		ok = wait_workers(&r, 0, &sh->baseline_done, "record the baseline");
	}
	ok = ok && run_load(&r, &elapsed) && wait_workers(&r, WS_STOPPED, NULL, "stop");
	if (ok) {
		/* Nobody writes now: the last tick anyone committed or saw is
		 * the final one. */
		uint64_t final = 0;
		for (unsigned i = 0; i < o.workers; i++) {
			uint64_t t = atomic_load(&sh->w[i].last_tick);
			final = t > final ? t : final;
			final = sh->w[i].published_at_stop > final ? sh->w[i].published_at_stop : final;
		}
		sh->final_tick = final;
		atomic_store_explicit(&sh->phase, PH_CONVERGE, memory_order_release);
		ok = wait_workers(&r, WS_CONVERGED, NULL, "converge");
	}
	if (ok) {
		atomic_store_explicit(&sh->phase, PH_SETTLE, memory_order_release);
		ok = wait_workers(&r, 0, &sh->settle_done, "settle");
	}
	if (ok)
		ok = report(&r, elapsed);
	shut_down(&r);
	if (temp_socket)
		unlink(o.socket);
	munmap(sh, size);
	return ok && !r.failed ? TOOL_OK : TOOL_FAIL;
}
