/* shmsync demo: one worker's load, a window of batches in flight, imports
 * into its replica, and its part of each phase. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "demo.h"
#include "tool.h"

const char SHARED[] = "/demo/shared/";
const char COUNTERS_DIR[] = "/demo/counters/";

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

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
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

/* A session directory removed (the oldest) or created with a few keys. */
static void session_op(struct worker *k, shmsync_batch *b, struct inflight *f)
{
	char key[48], sdir[64];
	if (k->nsessions > 0 &&
	    (k->nsessions + k->npending_sessions >= SESSIONS_MAX || rnd(&k->rng, 2) == 0)) {
		snprintf(sdir, sizeof(sdir), "/demo/sessions/w%u-%" PRId64 "/", k->id, k->sessions[0]);
		memmove(&k->sessions[0], &k->sessions[1], --k->nsessions * sizeof(k->sessions[0]));
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
			add_op(k, shmsync_put(b, sdir, key, strlen(key), sdir, strlen(sdir)), "put session");
		}
		f->nops += 1 + n;
		f->new_session = s;
		k->npending_sessions++;
	}
}

/* One batch of 1..8 random operations (a session adds up to 4 more). */
static void one_batch(struct worker *k)
{
	shmsync_batch *b;
	uint8_t val[256];
	char key[48];
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
			session_op(k, b, f);
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

/* Attach, the directories, the first snapshot: then the worker is ready. */
static void worker_start(struct worker *k, const char *socket)
{
	unsigned id = k->id;
	char err[256] = "";
	int rc = shmsync_attach_msg(&k->w, socket, err, sizeof(err));
	if (rc < 0)
		worker_fail(k, "worker %u: attach: %s", id, err[0] ? err : shmsync_strerror(rc));
	mkdir_now(k, SHARED, true);
	mkdir_now(k, COUNTERS_DIR, true);
	mkdir_now(k, k->own_dir, false);
	/* The replica starts from a snapshot; imports carry it from there. */
	shmsync_stats st;
	rc = shmsync_stat(k->w, &st);
	if (rc == 0)
		rc = shmsync_import_until(k->w, st.tick, WAIT_NS, NULL, NULL);
	if (rc >= 0)
		rc = read_snapshot(k->w, &k->rep, NULL);
	if (rc < 0)
		worker_fail(k, "worker %u: first snapshot: %s", id, shmsync_strerror(rc));
	atomic_store_explicit(&k->res->state, WS_READY, memory_order_release);
}

/* Worker 0 records the statistics at start. */
static void record_baseline(struct worker *k)
{
	shmsync_stats st;
	if (shmsync_stat(k->w, &st) < 0)
		worker_fail(k, "worker 0: stat failed");
	sh->bytes_start = st.bytes_in_use;
	sh->tomb_start = st.tombstones;
	sh->reclaimed_start = st.reclaimed;
	sh->capacity = st.capacity;
	snprintf(sh->root_signal, sizeof(sh->root_signal), "%s", st.root_signal);
	snprintf(sh->worker_signal, sizeof(sh->worker_signal), "%s", st.signal);
	atomic_store_explicit(&sh->baseline_done, 1, memory_order_release);
}

/* The load, until the parent moves the phase on; then every batch retired. */
static void run_phase(struct worker *k)
{
	for (uint64_t iter = 0; atomic_load_explicit(&sh->phase, memory_order_relaxed) == PH_RUN; iter++) {
		if (k->win_n == WINDOW)
			retire_oldest(k);
		one_batch(k);
		/* Mostly a poll; now and then a real wait (offline while it
		 * sleeps), as a server between requests would. */
		import(k, iter % 16 == 15 ? 1000000 : 0);
	}
	while (k->win_n)
		retire_oldest(k);
	shmsync_stats st;
	if (shmsync_stat(k->w, &st) < 0)
		worker_fail(k, "worker %u: stat failed", k->id);
	k->res->published_at_stop = st.tick;
	atomic_store_explicit(&k->res->state, WS_STOPPED, memory_order_release);
}

/* Import until the final tick, then hash the snapshot and the replica. */
static void converge(struct worker *k)
{
	uint64_t final = sh->final_tick;
	int rc = shmsync_import_until(k->w, final, WAIT_NS, on_change, k);
	if (rc < 0)
		worker_fail(k, "worker %u: import until the final tick %" PRIu64 ": %s", k->id, final,
			    shmsync_strerror(rc));
	struct replica snap = {0};
	rc = read_snapshot(k->w, &snap, &k->res->counter_sum);
	if (rc < 0)
		worker_fail(k, "worker %u: final snapshot: %s", k->id, shmsync_strerror(rc));
	uint64_t nkeys;
	k->res->final_cursor = shmsync_cursor(k->w);
	k->res->snap_hash = rep_hash(&snap, &k->res->nkeys);
	k->res->replica_hash = rep_hash(&k->rep, &nkeys);
	k->res->ndirs = snap.n;
	rep_clear(&snap);
	free(snap.dirs);
	atomic_store_explicit(&k->res->state, WS_CONVERGED, memory_order_release);
	/* Pin nothing, so reclamation can finish before the end figures. */
	shmsync_offline(k->w);
}

/* Worker 0: tombstones go one reclamation after every reader passed them;
 * wait (bounded) until they are gone and the figures hold still. */
static void settle(struct worker *k)
{
	shmsync_stats st;
	int64_t deadline = tool_now_ns() + 3000000000LL;
	uint64_t last_bytes = 0;
	int still = 0;
	do {
		sleep_ns(20000000);
		if (shmsync_stat(k->w, &st) < 0)
			worker_fail(k, "worker 0: stat failed");
		still = st.bytes_in_use == last_bytes && st.tombstones <= sh->tomb_start ? still + 1 : 0;
		last_bytes = st.bytes_in_use;
	} while (still < 5 && tool_now_ns() < deadline);
	sh->bytes_end = st.bytes_in_use;
	sh->tomb_end = st.tombstones;
	sh->reclaimed_end = st.reclaimed;
	atomic_store_explicit(&sh->settle_done, 1, memory_order_release);
}

int worker_main(unsigned id, const char *socket)
{
	struct worker k = {.id = id, .res = &sh->w[id]};
	k.rng = 0x9E3779B97F4A7C15ULL * (id + 1) ^ (uint64_t)tool_now_ns();
	snprintf(k.own_dir, sizeof(k.own_dir), "/demo/w%u/", id);
	snprintf(k.ts_key, sizeof(k.ts_key), "ts-w%u", id);

	worker_start(&k, socket);
	wait_phase(&k, PH_BASELINE);
	if (id == 0)
		record_baseline(&k);
	wait_phase(&k, PH_RUN);
	run_phase(&k);
	wait_phase(&k, PH_CONVERGE);
	converge(&k);
	wait_phase(&k, PH_SETTLE);
	if (id == 0)
		settle(&k);
	wait_phase(&k, PH_EXIT);
	shmsync_detach(k.w);
	rep_clear(&k.rep);
	free(k.rep.dirs);
	return 0;
}
