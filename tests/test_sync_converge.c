/* N workers export concurrently and converge.
 *
 * Four workers attach, meet at a barrier (so they all start from the same
 * tick) and then each commits 4000 small batches at once: puts, adds, dels,
 * mkdirs and rmdirs in a directory of its own, puts and adds in shared
 * directories, deletions of shared keys that may fail with -ENOENT, several
 * batches in flight, sometimes a burst exported with SHMSYNC_NONBLOCK into a
 * deliberately small export ring. Every batch also puts its own seq under
 * /w<i>/seq. Meanwhile each worker imports at its own pace, applies its
 * import stream to a private model (checked against its snapshot) and
 * records the stream. Then:
 *
 * - every worker's stream is the same: between any two ticks both workers
 *   imported to, their imports, composed, are the same changes (ticks,
 *   kinds, directories, keys, values) in the same order, and an import that
 *   covered the same ticks in both is identical as delivered;
 * - every acked batch is visible in every worker exactly from its tick T:
 *   after an import to C, /w<i>/seq is the highest seq of worker i acked with
 *   a tick <= C;
 * - every worker's final state equals what a fresh late attacher sees, and
 *   its own directories hold exactly what its batches wrote;
 * - group commit happened: fewer ticks than committed batches;
 * - no worker starved: each committed, its export -> commit latency is
 *   bounded (p99 and max are printed), and when the fastest worker had all
 *   its batches committed every other had at least 10% of its own.
 */
#include "synctest_conv.h"

#define NW 4
#define BATCHES 4000
#define DEPTH 8            /* batches in flight normally */
#define BURST 48           /* and during a NONBLOCK burst */
#define QCAP 1024          /* the pending queue (PORT_NACKS) */
#define MAX_LATENCY_S 10.0 /* generous: a loaded CI machine, sanitizers */
#define MIN_SHARE 0.10     /* of its batches each worker has committed when the first finishes */

static unsigned long long seed;
static struct cv_gate gate;

struct shared {
	_Atomic int done;       /* workers whose batches are all acked */
	_Atomic uint64_t final; /* the tick everything ended at; 0 until known */
};
static struct shared *sh;

/* One batch's fate, as the worker saw it. */
struct ack {
	uint64_t seq;
	int64_t result; /* the tick, or the error */
	double latency; /* export returned -> ack seen, seconds */
	uint32_t may_fail;
	uint32_t pad;
};

/* A stream record: the change, or (kind 0) the end of an import (from, to]. */
struct srec {
	uint64_t tick; /* of the change; for kind 0, from */
	uint64_t to;
	uint32_t kind, dlen, kn, vn; /* dir, NUL, key, value follow */
};

/* ---- the worker --------------------------------------------------------- */

struct pend {
	uint64_t seq;
	double t;
	bool may_fail;
};

struct wk {
	int id;
	char own[16];
	unsigned long long rng;
	shmsync_worker *w;
	struct cv_model intent; /* its own directories, as its exported batches leave them */
	struct cv_imp imp;
	struct cv_model scratch;
	struct cv_buf stream, acks;
	struct pend q[QCAP];
	int qhead, qn;
	uint64_t next_seq, committed, rejected, eagain, imports;
	shmsync_batch *held; /* refused with -EAGAIN, to export again */
	bool held_may_fail;
};

static unsigned rnd(struct wk *k, unsigned n)
{
	return (unsigned)(t_rand(&k->rng) % n);
}

static int record_change(const shmsync_change *c, void *arg)
{
	struct wk *k = arg;
	struct srec r = {c->tick,
			 0,
			 (uint32_t)c->kind,
			 (uint32_t)strlen(c->dir),
			 (uint32_t)c->key_len,
			 (uint32_t)c->value_len};
	cv_buf_put(&k->stream, &r, sizeof(r));
	cv_buf_put(&k->stream, c->dir, r.dlen + 1);
	cv_buf_put(&k->stream, c->key, r.kn);
	cv_buf_put(&k->stream, c->value, r.vn);
	return cv_imp_cb(c, &k->imp);
}

/* One import (timeout 0: only if there is something new); with `until`,
 * import_until(until), which also comes back online at the same tick. */
static void do_import(struct wk *k, int64_t timeout, uint64_t until)
{
	uint64_t from = shmsync_cursor(k->w);
	cv_imp_begin(&k->imp, from);
	int rc = until ? shmsync_import_until(k->w, until, timeout, record_change, k)
		       : shmsync_import_next(k->w, timeout, record_change, k);
	if (rc == -ETIMEDOUT)
		return;
	if (rc < 0)
		T_FAIL("worker %d: import: %s", k->id, shmsync_strerror(rc));
	uint64_t to = cv_imp_end(&k->imp, k->w, rc, k->own);
	T_ASSERT(until ? to >= until : to > from);
	if (to == from)
		return;
	struct srec m = {from, to, 0, 0, 0, 0};
	cv_buf_put(&k->stream, &m, sizeof(m));
	if (++k->imports % 16 == 0)
		cv_imp_vs_snapshot(&k->imp, k->w, &k->scratch, k->own);
}

static void put_value(struct wk *k, shmsync_batch *b, const char *dir, const char *key, bool intent)
{
	char v[48];
	size_t n = 1 + rnd(k, sizeof(v));
	for (size_t i = 0; i < n; i++)
		v[i] = (char)('A' + rnd(k, 58));
	T_OK(shmsync_put(b, dir, key, strlen(key), v, n));
	if (intent)
		cv_key_set(cv_dir_get(&k->intent, dir), key, strlen(key), v, n, 0);
}

static bool own_key(struct wk *k, const char *dir, char *key)
{
	struct cv_dir *d = cv_dir_get(&k->intent, dir);
	if (!d)
		return false;
	size_t n = 0;
	for (size_t i = 0; i < d->n; i++)
		n += !(d->keys[i].kn == 3 && memcmp(d->keys[i].k, "seq", 3) == 0);
	if (!n)
		return false;
	size_t pick = rnd(k, (unsigned)n);
	for (size_t i = 0; i < d->n; i++) {
		if (d->keys[i].kn == 3 && memcmp(d->keys[i].k, "seq", 3) == 0)
			continue;
		if (pick-- == 0) {
			memcpy(key, d->keys[i].k, d->keys[i].kn);
			key[d->keys[i].kn] = 0;
			return true;
		}
	}
	return false;
}

/* Builds the batch that will carry `seq`. Only a deletion of a shared key
 * may be refused (-ENOENT); it goes alone, so the worker's own directories
 * stay exactly as its intent model says. */
static shmsync_batch *build(struct wk *k, uint64_t seq, bool *may_fail)
{
	shmsync_batch *b;
	char key[16], dir[32];
	T_OK(shmsync_begin(k->w, &b));
	*may_fail = false;
	if (seq == 1) {
		T_OK(shmsync_mkdir(b, k->own));
		cv_dir_add(&k->intent, k->own);
	} else if (rnd(k, 100) < 8) {
		snprintf(dir, sizeof(dir), "/s/%u/", rnd(k, 4));
		snprintf(key, sizeof(key), "k%u", rnd(k, 24));
		T_OK(shmsync_del(b, dir, key, strlen(key)));
		*may_fail = true;
	} else {
		unsigned nops = 1 + rnd(k, 6);
		for (unsigned i = 0; i < nops; i++) {
			unsigned r = rnd(k, 100);
			snprintf(dir, sizeof(dir), "%sd%u/", k->own, rnd(k, 4));
			bool sub = cv_dir_get(&k->intent, dir) != NULL;
			if (r < 30) {
				snprintf(key, sizeof(key), "k%u", rnd(k, 48));
				put_value(k, b, k->own, key, true);
			} else if (r < 45) {
				char sd[16];
				snprintf(sd, sizeof(sd), "/s/%u/", rnd(k, 4));
				snprintf(key, sizeof(key), "k%u", rnd(k, 24));
				put_value(k, b, sd, key, false);
			} else if (r < 60) {
				snprintf(key, sizeof(key), "n%u", rnd(k, 4));
				T_OK(shmsync_add(b, "/c/", key, strlen(key), (int64_t)rnd(k, 201) - 100));
			} else if (r < 70) {
				if (own_key(k, k->own, key)) {
					T_OK(shmsync_del(b, k->own, key, strlen(key)));
					cv_key_del(cv_dir_get(&k->intent, k->own), key, strlen(key));
				}
			} else if (r < 80) {
				if (!sub) {
					T_OK(shmsync_mkdir(b, dir));
					cv_dir_add(&k->intent, dir);
					put_value(k, b, dir, "a", true);
				} else if (rnd(k, 2)) {
					T_OK(shmsync_rmdir(b, dir));
					cv_rmdir(&k->intent, dir);
				} else {
					snprintf(key, sizeof(key), "k%u", rnd(k, 8));
					put_value(k, b, dir, key, true);
				}
			} else if (r < 85) {
				/* Delete and recreate a key in one batch. */
				if (own_key(k, k->own, key)) {
					T_OK(shmsync_del(b, k->own, key, strlen(key)));
					cv_key_del(cv_dir_get(&k->intent, k->own), key, strlen(key));
					put_value(k, b, k->own, key, true);
				}
			} else if (r < 90) {
				/* Delete and recreate a directory in one batch. */
				if (sub) {
					T_OK(shmsync_rmdir(b, dir));
					cv_rmdir(&k->intent, dir);
					T_OK(shmsync_mkdir(b, dir));
					cv_dir_add(&k->intent, dir);
					put_value(k, b, dir, "b", true);
				}
			} else if (own_key(k, k->own, key)) {
				put_value(k, b, k->own, key, true);
			}
		}
	}
	uint64_t v = seq; /* little-endian, like every machine this runs on */
	T_OK(shmsync_put(b, k->own, "seq", 3, &v, 8));
	return b; /* its seq goes into the intent model when it is acked */
}

/* Collects the acks that are in (timeout 0), or waits for the oldest. */
static bool collect(struct wk *k, int64_t timeout)
{
	bool any = false;
	while (k->qn) {
		struct pend *p = &k->q[k->qhead];
		uint64_t tick = 0;
		int rc = shmsync_wait_committed(k->w, p->seq, &tick, timeout);
		if (rc == -ETIMEDOUT) {
			if (timeout)
				T_FAIL("worker %d: batch %llu not acked after %.1f s: starved", k->id,
				       (unsigned long long)p->seq, (double)timeout / 1e9);
			break;
		}
		struct ack a = {p->seq, rc == 0 ? (int64_t)tick : rc, st_now() - p->t, p->may_fail, 0};
		if (rc == 0) {
			k->committed++;
			/* Acks come in seq order: the last committed seq wins. */
			cv_key_set(cv_dir_get(&k->intent, k->own), "seq", 3, &p->seq, 8, 0);
		} else if (rc == -ENOENT && p->may_fail)
			k->rejected++;
		else
			T_FAIL("worker %d: batch %llu: %s", k->id, (unsigned long long)p->seq,
			       shmsync_strerror(rc));
		cv_buf_put(&k->acks, &a, sizeof(a));
		k->qhead = (k->qhead + 1) % QCAP;
		k->qn--;
		any = true;
		timeout = 0;
	}
	return any;
}

/* Exports the held batch; false if the ring is still full. */
static bool try_export(struct wk *k, int flags)
{
	uint64_t seq;
	int rc = shmsync_export(k->held, flags, &seq);
	if (rc == -EAGAIN && (flags & SHMSYNC_NONBLOCK)) {
		k->eagain++;
		return false;
	}
	if (rc < 0)
		T_FAIL("worker %d: export: %s", k->id, shmsync_strerror(rc));
	T_EQ(seq, k->next_seq);
	T_ASSERT(k->qn < QCAP);
	k->q[(k->qhead + k->qn) % QCAP] = (struct pend){seq, st_now(), k->held_may_fail};
	k->qn++;
	k->next_seq++;
	k->held = NULL;
	return true;
}

static int worker(void *arg)
{
	static struct wk k;
	k.id = (int)(intptr_t)arg;
	k.rng = seed * 7919 + (unsigned long long)k.id;
	k.next_seq = 1;
	snprintf(k.own, sizeof(k.own), "/w%d/", k.id);
	k.w = st_attach();
	uint64_t start = shmsync_cursor(k.w);
	cv_buf_put(&k.stream, &start, 8);
	cv_snapshot(k.w, &k.imp.model); /* the setup's directories */
	char path[320];
	cv_model_save(&k.imp.model, cv_path(path, sizeof(path), "start%d", k.id));
	cv_gate_arrive(&gate);
	int burst = 0;
	while (k.next_seq <= BATCHES || k.held || k.qn) {
		if (!k.held && k.next_seq <= BATCHES && k.qn < (burst ? BURST : DEPTH)) {
			k.held = build(&k, k.next_seq, &k.held_may_fail);
			if (!burst && rnd(&k, 100) == 0)
				burst = BURST;
		}
		bool progress = false;
		if (k.held && k.qn < (burst ? BURST : DEPTH)) {
			/* In a burst, or now and then, never block: a full ring
			 * must say -EAGAIN and keep the batch. */
			int flags = burst || rnd(&k, 4) == 0 ? SHMSYNC_NONBLOCK : 0;
			progress = try_export(&k, flags);
			if (progress && burst)
				burst--;
		}
		progress |= collect(&k, 0);
		if (rnd(&k, 2))
			do_import(&k, 0, 0);
		if (rnd(&k, 300) == 0)
			usleep(1000 + rnd(&k, 2000)); /* dawdle: imports coalesce */
		/* Nothing moved: the oldest batch is next. A worker whose
		 * batch is not acked for twice the latency limit starved. */
		if (!progress && k.qn)
			collect(&k, (int64_t)(MAX_LATENCY_S * 2e9));
	}
	atomic_fetch_add(&sh->done, 1);
	/* Import on until everyone is done and the final tick is known. */
	double end = st_now() + 60;
	for (;;) {
		uint64_t fin = atomic_load(&sh->final);
		if (fin && shmsync_cursor(k.w) >= fin)
			break;
		if (st_now() > end)
			T_FAIL("worker %d: stuck at tick %llu waiting for the end", k.id,
			       (unsigned long long)shmsync_cursor(k.w));
		do_import(&k, 20000000, 0);
	}
	/* A wait that timed out left it offline: back online, at fin. */
	uint64_t fin = atomic_load(&sh->final);
	do_import(&k, 5000000000LL, fin);
	T_EQ(shmsync_cursor(k.w), fin);
	struct cv_model snap = {0};
	cv_imp_vs_snapshot(&k.imp, k.w, &snap, k.own);
	T_EQ(k.imp.resets, 0);
	/* Its own directories hold exactly what its batches said, each applied
	 * once: nothing lost, nothing doubled by a NONBLOCK retry. */
	struct cv_model mine = {0};
	char err[512];
	for (size_t i = 0; i < snap.n; i++)
		if (strncmp(snap.dirs[i].name, k.own, strlen(k.own)) == 0) {
			struct cv_dir *d = cv_dir_add(&mine, snap.dirs[i].name);
			for (size_t x = 0; x < snap.dirs[i].n; x++) {
				const struct cv_key *e = &snap.dirs[i].keys[x];
				cv_key_set(d, e->k, e->kn, e->v, e->vn, 0);
			}
		}
	if (cv_model_cmp(&k.intent, &mine, false, err, sizeof(err)) < 0)
		T_FAIL("worker %d: its directories vs what it exported: %s", k.id, err);
	cv_model_free(&mine);
	shmsync_stats st;
	T_OK(shmsync_stat(k.w, &st));
	const char *sig = getenv("SHMSYNC_SIGNAL");
	if (sig && strcmp(sig, "futex") == 0) {
		T_ASSERT(strcmp(st.signal, "futex") == 0);
		T_EQ(st.uring_ops, 0);
	}
	T_EQ(st.batches_committed, k.committed);
	T_EQ(st.batches_rejected, k.rejected);
	cv_file_write(cv_path(path, sizeof(path), "stream%d", k.id), k.stream.p, k.stream.n);
	cv_file_write(cv_path(path, sizeof(path), "acks%d", k.id), k.acks.p, k.acks.n);
	cv_model_save(&snap, cv_path(path, sizeof(path), "final%d", k.id));
	printf("  worker %d: %llu committed, %llu shared deletions refused, "
	       "%llu NONBLOCK -EAGAIN, %llu imports; signal %s, %llu io_uring ops\n",
	       k.id, (unsigned long long)k.committed, (unsigned long long)k.rejected,
	       (unsigned long long)k.eagain, (unsigned long long)k.imports, st.signal,
	       (unsigned long long)st.uring_ops);
	shmsync_detach(k.w);
	cv_model_free(&snap);
	cv_model_free(&k.scratch);
	cv_model_free(&k.imp.model);
	cv_model_free(&k.intent);
	cv_buf_free(&k.stream);
	cv_buf_free(&k.acks);
	return 0;
}

/* The state the test starts from, one batch. */
static void fill_setup(shmsync_batch *b, void *arg)
{
	(void)arg;
	for (int i = 0; i < 4; i++) {
		char d[16];
		snprintf(d, sizeof(d), "/s/%d/", i);
		T_OK(shmsync_mkdir(b, d));
	}
	T_OK(shmsync_mkdir(b, "/c/"));
}

/* Attaches once every batch is acked: its snapshot is the final state. */
static int late(void *arg)
{
	(void)arg;
	shmsync_worker *w = st_attach();
	struct cv_model m = {0};
	cv_snapshot(w, &m);
	char path[320];
	cv_model_save(&m, cv_path(path, sizeof(path), "late"));
	printf("  late attacher: tick %llu, %zu dirs, %zu keys\n", (unsigned long long)shmsync_cursor(w), m.n,
	       cv_model_keys(&m));
	atomic_store(&sh->final, shmsync_cursor(w));
	cv_model_free(&m);
	shmsync_detach(w);
	return 0;
}

/* ---- the parent's checks ------------------------------------------------ */

struct chg {
	uint64_t tick;
	int kind;
	const char *dir;
	const uint8_t *key, *val;
	uint32_t kn, vn;
};

struct import {
	uint64_t from, to;
	struct chg *c;
	size_t n;
};

struct stream {
	uint64_t start;
	struct import *imp;
	size_t n;
	struct cv_buf raw;
};

static void parse(struct stream *s, int id)
{
	char path[320];
	s->raw = cv_file_read(cv_path(path, sizeof(path), "stream%d", id));
	size_t at = 0, cap = 0, ncur = 0, ccap = 0;
	struct chg *cur = NULL;
	cv_take(&s->raw, &at, &s->start, 8);
	while (at < s->raw.n) {
		struct srec r;
		cv_take(&s->raw, &at, &r, sizeof(r));
		if (r.kind == 0) {
			if (s->n == cap) {
				cap = cap ? 2 * cap : 256;
				s->imp = realloc(s->imp, cap * sizeof(*s->imp));
				T_ASSERT(s->imp);
			}
			s->imp[s->n++] = (struct import){r.tick, r.to, cur, ncur};
			cur = NULL;
			ncur = ccap = 0;
			continue;
		}
		T_ASSERT(at + r.dlen + 1 + r.kn + r.vn <= s->raw.n);
		if (ncur == ccap) {
			ccap = ccap ? 2 * ccap : 16;
			cur = realloc(cur, ccap * sizeof(*cur));
			T_ASSERT(cur);
		}
		const uint8_t *p = s->raw.p + at;
		cur[ncur++] = (struct chg){
			r.tick, (int)r.kind, (const char *)p, p + r.dlen + 1, p + r.dlen + 1 + r.kn,
			r.kn,   r.vn};
		at += r.dlen + 1 + r.kn + r.vn;
	}
	T_ASSERT(ncur == 0); /* every change belongs to a completed import */
	/* The imports chain from the common start. */
	uint64_t c = s->start;
	for (size_t i = 0; i < s->n; i++) {
		if (s->imp[i].from != c || s->imp[i].to <= c)
			T_FAIL("worker %d: import %zu is (%llu, %llu] after cursor %llu", id, i,
			       (unsigned long long)s->imp[i].from, (unsigned long long)s->imp[i].to,
			       (unsigned long long)c);
		c = s->imp[i].to;
	}
}

/* A set of byte strings, for composing streams. */
struct sset {
	uint64_t *h;
	char **k;
	size_t *kl, cap, n;
};

static uint64_t fnv(const void *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ ((const uint8_t *)p)[i]) * 1099511628211ULL;
	return h | 1;
}

static bool sset_has(struct sset *s, const void *k, size_t n, bool add)
{
	if (add && 2 * (s->n + 1) > s->cap) {
		struct sset o = *s;
		s->cap = o.cap ? 2 * o.cap : 64;
		s->h = calloc(s->cap, sizeof(*s->h));
		s->k = calloc(s->cap, sizeof(*s->k));
		s->kl = calloc(s->cap, sizeof(*s->kl));
		T_ASSERT(s->h && s->k && s->kl);
		s->n = 0;
		for (size_t i = 0; i < o.cap; i++)
			if (o.h[i]) {
				sset_has(s, o.k[i], o.kl[i], true);
				free(o.k[i]);
			}
		free(o.h);
		free(o.k);
		free(o.kl);
	}
	if (!s->cap)
		return false;
	uint64_t h = fnv(k, n);
	for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (!s->h[i]) {
			if (add) {
				s->h[i] = h;
				s->k[i] = cv_dup(k, n);
				s->kl[i] = n;
				s->n++;
			}
			return false;
		}
		if (s->h[i] == h && s->kl[i] == n && memcmp(s->k[i], k, n) == 0)
			return true;
	}
}

static void sset_free(struct sset *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->k[i]);
	free(s->h);
	free(s->k);
	free(s->kl);
	*s = (struct sset){0};
}

/* An item's identity: a tag, the directory, and for keys the key. */
static size_t item(char *buf, char tag, const struct chg *c, size_t dlen)
{
	buf[0] = tag;
	memcpy(buf + 1, c->dir, dlen);
	buf[1 + dlen] = 0;
	size_t n = 2 + dlen;
	if (tag == 'K') {
		memcpy(buf + n, c->key, c->kn);
		n += c->kn;
	}
	return n;
}

/* What one import of all of (in) would have delivered: the last change of
 * every item, unless a later RMDIR covers it, in the order of last changes.
 * The rule of shm_diff, applied to already coalesced pieces. */
static size_t compose(struct chg **in, size_t n, struct chg **out)
{
	struct sset keys = {0}, mk = {0}, rm = {0};
	bool *keep = calloc(n ? n : 1, sizeof(bool));
	char buf[2 + SHMSYNC_MAX_DIR + SHMSYNC_MAX_KEY];
	T_ASSERT(keep);
	for (size_t i = n; i-- > 0;) {
		const struct chg *c = in[i];
		size_t dl = strlen(c->dir);
		bool covered = false;
		for (size_t j = 0; j < dl && !covered; j++)
			if (c->dir[j] == '/') {
				covered = sset_has(&rm, buf, item(buf, 'R', c, j + 1), false);
			}
		switch (c->kind) {
		case SHMSYNC_PUT:
		case SHMSYNC_DEL:
			keep[i] = !covered && !sset_has(&keys, buf, item(buf, 'K', c, dl), true);
			break;
		case SHMSYNC_MKDIR:
			keep[i] = !covered && !sset_has(&mk, buf, item(buf, 'M', c, dl), true);
			break;
		case SHMSYNC_RMDIR:
			keep[i] = !covered;
			sset_has(&rm, buf, item(buf, 'R', c, dl), true);
			break;
		default:
			T_FAIL("a %d change in a stream that should have no RESET", c->kind);
		}
	}
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (keep[i])
			out[m++] = in[i];
	free(keep);
	sset_free(&keys);
	sset_free(&mk);
	sset_free(&rm);
	return m;
}

static bool chg_eq(const struct chg *a, const struct chg *b)
{
	return a->tick == b->tick && a->kind == b->kind && strcmp(a->dir, b->dir) == 0 && a->kn == b->kn &&
	       memcmp(a->key, b->key, a->kn) == 0 && a->vn == b->vn && memcmp(a->val, b->val, a->vn) == 0;
}

static void describe(char *buf, size_t len, const struct chg *c)
{
	char k[64], v[64];
	cv_fmt_bytes(k, sizeof(k), c->key, c->kn);
	cv_fmt_bytes(v, sizeof(v), c->val, c->vn);
	snprintf(buf, len, "kind %d tick %llu %s%s = \"%s\"", c->kind, (unsigned long long)c->tick, c->dir, k,
		 v);
}

/* The changes of imports [i, j) of s, composed. */
static size_t window(const struct stream *s, size_t i, size_t j, struct chg ***out)
{
	size_t n = 0;
	for (size_t x = i; x < j; x++)
		n += s->imp[x].n;
	struct chg **all = malloc((n ? n : 1) * sizeof(*all));
	*out = malloc((n ? n : 1) * sizeof(**out));
	T_ASSERT(all && *out);
	n = 0;
	for (size_t x = i; x < j; x++)
		for (size_t y = 0; y < s->imp[x].n; y++)
			all[n++] = &s->imp[x].c[y];
	size_t m = compose(all, n, *out);
	free(all);
	return m;
}

/* Every pair of streams agrees between the ticks both imported to. */
static void compare_streams(const struct stream *s, int a, int b, uint64_t *windows, uint64_t *same_imports,
			    uint64_t *changes)
{
	size_t i = 0, j = 0, i0 = 0, j0 = 0;
	char da[256], db[256];
	while (i < s[a].n && j < s[b].n) {
		uint64_t ta = s[a].imp[i].to, tb = s[b].imp[j].to;
		if (ta < tb) {
			i++;
			continue;
		}
		if (tb < ta) {
			j++;
			continue;
		}
		/* Both imported to ta: (from, ta] must agree. */
		struct chg **ca, **cb;
		size_t na = window(&s[a], i0, i + 1, &ca), nb = window(&s[b], j0, j + 1, &cb);
		for (size_t x = 0; x < na || x < nb; x++) {
			if (x < na && x < nb && chg_eq(ca[x], cb[x]))
				continue;
			if (x < na)
				describe(da, sizeof(da), ca[x]);
			if (x < nb)
				describe(db, sizeof(db), cb[x]);
			T_FAIL("ticks (%llu, %llu]: change #%zu: worker %d has %s, "
			       "worker %d has %s (%zu vs %zu changes)",
			       (unsigned long long)s[a].imp[i0].from, (unsigned long long)ta, x, a,
			       x < na ? da : "nothing", b, x < nb ? db : "nothing", na, nb);
		}
		if (i == i0 && j == j0) {
			/* One import each over the same ticks: the streams as
			 * delivered are identical, not only equivalent. */
			T_EQ(s[a].imp[i].n, s[b].imp[j].n);
			for (size_t x = 0; x < s[a].imp[i].n; x++)
				T_ASSERT(chg_eq(&s[a].imp[i].c[x], &s[b].imp[j].c[x]));
			(*same_imports)++;
		}
		(*windows)++;
		*changes += na;
		free(ca);
		free(cb);
		i0 = ++i;
		j0 = ++j;
	}
}

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return a < b ? -1 : a > b;
}

int main(void)
{
	cv_setup(150, 140);
	seed = t_seed(0xc0ffee);
	printf("sync_converge: %d workers x %d batches, signal path %s\n", NW, BATCHES, st_signal_name());
	sh = cv_shared(sizeof(*sh));
	/* A small export ring, so that NONBLOCK exports meet a full one. */
	shmsync_root_opts o = {.port_ring_bytes = 8192};
	pid_t root = cv_start_root(&o);
	cv_setup_batch(fill_setup, NULL);

	cv_gate_init(&gate);
	pid_t kids[NW];
	for (int i = 0; i < NW; i++)
		kids[i] = cv_spawn("worker", worker, (void *)(intptr_t)i);
	cv_gate_spawned(&gate);
	double t0 = st_now();
	cv_gate_open(&gate, NW);
	while (atomic_load(&sh->done) < NW) {
		cv_poll_kids();
		if (st_now() - t0 > 120)
			T_FAIL("the workers did not finish exporting in 120 s");
		usleep(1000);
	}
	double t_export = st_now() - t0;
	pid_t p = cv_spawn("late", late, NULL);
	cv_wait_all(&p, 1, 30);
	cv_wait_all(kids, NW, 60);
	cv_gate_done(&gate);
	cv_stop_root(root);
	uint64_t fin = atomic_load(&sh->final);
	printf("exports done in %.2f s; final tick %llu\n", t_export, (unsigned long long)fin);

	/* Streams: the same start, the same end, the same changes. */
	static struct stream s[NW];
	for (int i = 0; i < NW; i++) {
		parse(&s[i], i);
		T_EQ(s[i].start, s[0].start);
		T_ASSERT(s[i].n > 0);
		T_EQ(s[i].imp[s[i].n - 1].to, fin);
		/* Each import is coalesced already: composing it changes
		 * nothing. */
		for (size_t x = 0; x < s[i].n; x++) {
			struct chg **c;
			size_t m = window(&s[i], x, x + 1, &c);
			if (m != s[i].imp[x].n)
				T_FAIL("worker %d: import (%llu, %llu] delivered %zu changes, "
				       "%zu of them stale or repeated",
				       i, (unsigned long long)s[i].imp[x].from,
				       (unsigned long long)s[i].imp[x].to, s[i].imp[x].n, s[i].imp[x].n - m);
			free(c);
		}
	}
	uint64_t windows = 0, same = 0, changes = 0;
	for (int a = 0; a < NW; a++)
		for (int b = a + 1; b < NW; b++)
			compare_streams(s, a, b, &windows, &same, &changes);
	printf("streams: from tick %llu, imports per worker %zu %zu %zu %zu; %llu common windows compared "
	       "(%llu changes), %llu of them a single identical import in both\n",
	       (unsigned long long)s[0].start, s[0].n, s[1].n, s[2].n, s[3].n, (unsigned long long)windows,
	       (unsigned long long)changes, (unsigned long long)same);

	/* Acks: all seqs, ticks in seq order, and each visible from its tick. */
	static struct cv_buf ab[NW];
	uint64_t committed = 0;
	for (int i = 0; i < NW; i++) {
		char path[320];
		ab[i] = cv_file_read(cv_path(path, sizeof(path), "acks%d", i));
		struct ack *a = (struct ack *)ab[i].p;
		size_t n = ab[i].n / sizeof(*a), ok = 0;
		T_EQ(n, BATCHES);
		double *lat = malloc(n * sizeof(double));
		T_ASSERT(lat);
		int64_t last = 0;
		for (size_t x = 0; x < n; x++) {
			T_EQ(a[x].seq, x + 1);
			lat[x] = a[x].latency;
			if (a[x].result < 0)
				continue;
			T_ASSERT(a[x].result >= last && (uint64_t)a[x].result > s[0].start &&
				 (uint64_t)a[x].result <= fin);
			last = a[x].result;
			ok++;
		}
		qsort(lat, n, sizeof(double), cmp_double);
		printf("worker %d: %zu committed; export -> commit p50 %.0f us, p99 %.0f us, max %.0f us\n",
		       i, ok, lat[n / 2] * 1e6, lat[n * 99 / 100] * 1e6, lat[n - 1] * 1e6);
		if (ok == 0)
			T_FAIL("worker %d starved: nothing committed", i);
		if (lat[n - 1] > MAX_LATENCY_S)
			T_FAIL("worker %d waited %.2f s for a commit (limit %.1f s)", i, lat[n - 1],
			       MAX_LATENCY_S);
		committed += ok;
		free(lat);
	}
	/* Fairness: the root drains every ring, so when the fastest worker has
	 * all its batches committed, every other worker is well along too. A
	 * starved ring would show up here however long the run takes. */
	int64_t first_done = INT64_MAX;
	for (int i = 0; i < NW; i++) {
		const struct ack *a = (const struct ack *)ab[i].p;
		int64_t last = 0;
		for (size_t x = 0; x < BATCHES; x++)
			if (a[x].result > last)
				last = a[x].result;
		if (last < first_done)
			first_done = last;
	}
	printf("fairness: at tick %lld, when the first worker was done, the workers had committed",
	       (long long)first_done);
	for (int i = 0; i < NW; i++) {
		const struct ack *a = (const struct ack *)ab[i].p;
		size_t by = 0, ok = 0;
		for (size_t x = 0; x < BATCHES; x++) {
			ok += a[x].result > 0;
			by += a[x].result > 0 && a[x].result <= first_done;
		}
		double share = (double)by / (double)ok;
		printf(" %.0f%%", share * 100);
		if (share < MIN_SHARE)
			T_FAIL("worker %d starved: only %zu of its %zu batches were committed by tick %lld, "
			       "when "
			       "another worker had all of its own",
			       i, by, ok, (long long)first_done);
	}
	printf("\n");
	for (int j = 0; j < NW; j++) {
		struct cv_model m = {0};
		char err[512];
		size_t pos[NW] = {0};
		uint64_t want[NW] = {0};
		/* From the snapshot it started with (the setup's directories). */
		cv_model_load(&m, cv_path(err, sizeof(err), "start%d", j));
		for (size_t x = 0; x < s[j].n; x++) {
			const struct import *im = &s[j].imp[x];
			for (size_t y = 0; y < im->n; y++) {
				const struct chg *c = &im->c[y];
				shmsync_change ch = {c->tick, c->kind, c->dir, c->key, c->kn, c->val, c->vn};
				if (cv_apply(&m, &ch, err, sizeof(err)) < 0)
					T_FAIL("worker %d's stream: %s", j, err);
			}
			for (int i = 0; i < NW; i++) {
				const struct ack *a = (const struct ack *)ab[i].p;
				while (pos[i] < BATCHES && a[pos[i]].result <= (int64_t)im->to) {
					if (a[pos[i]].result > 0)
						want[i] = a[pos[i]].seq;
					pos[i]++;
				}
				char own[16];
				snprintf(own, sizeof(own), "/w%d/", i);
				struct cv_dir *d = cv_dir_get(&m, own);
				struct cv_key *e = d ? cv_key_get(d, "seq", 3) : NULL;
				uint64_t got = 0;
				if (e) {
					T_EQ(e->vn, 8);
					memcpy(&got, e->v, 8);
				}
				if (got != want[i])
					T_FAIL("worker %d, after importing (%llu, %llu]: "
					       "/w%d/seq is %llu, but worker %d's batches "
					       "acked at ticks <= %llu end with seq %llu",
					       j, (unsigned long long)im->from, (unsigned long long)im->to, i,
					       (unsigned long long)got, i, (unsigned long long)im->to,
					       (unsigned long long)want[i]);
			}
		}
		cv_model_free(&m);
	}
	printf("acks: every acked batch visible in every worker exactly from its tick\n");

	/* Final states: each worker's equals the late attacher's. */
	struct cv_model lm = {0}, wm = {0};
	char path[320], err[512];
	cv_model_load(&lm, cv_path(path, sizeof(path), "late"));
	for (int i = 0; i < NW; i++) {
		cv_model_load(&wm, cv_path(path, sizeof(path), "final%d", i));
		if (cv_model_cmp(&wm, &lm, true, err, sizeof(err)) < 0)
			T_FAIL("worker %d's final state vs the late attacher's: %s", i, err);
	}
	printf("final state: %zu dirs, %zu keys in every worker and in the late attacher\n", lm.n,
	       cv_model_keys(&lm));
	cv_model_free(&lm);
	cv_model_free(&wm);

	/* Group commit: fewer ticks than batches. */
	uint64_t ticks = fin - s[0].start;
	printf("group commit: %llu ticks for %llu committed batches (%.1f per tick)\n",
	       (unsigned long long)ticks, (unsigned long long)committed,
	       (double)committed / (double)(ticks ? ticks : 1));
	if (ticks >= committed)
		T_FAIL("no group commit: %llu ticks for %llu batches", (unsigned long long)ticks,
		       (unsigned long long)committed);
	for (int i = 0; i < NW; i++) {
		for (size_t x = 0; x < s[i].n; x++)
			free(s[i].imp[x].c);
		free(s[i].imp);
		cv_buf_free(&s[i].raw);
		cv_buf_free(&ab[i]);
	}
	printf("sync_converge: ok\n");
	return 0;
}
