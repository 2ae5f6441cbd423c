/* Torture in the manner of liburcu's rcutorture: readers in several
 * processes check every value they can reach while the root commits and
 * reclaims as fast as it can, with freed memory poisoned (debug_poison: the
 * root fills it with 0xa5).
 *
 * Writers (NWRITERS processes, each owning NDIRS directories of NKEYS keys)
 * commit one batch after another, each waited for: overwrites, deletes,
 * rmdir, mkdir (with puts into the new directory) and rmdir+mkdir of the
 * same directory in one batch. Every value encodes where it belongs (writer,
 * directory, key), the writer's sequence number of that write, its length
 * and a checksum; its bytes past the header are never 0xa5, so a read of
 * freed memory shows as poison, a read of reused memory as a torn or
 * foreign value.
 *
 * Each writer publishes, in a MAP_SHARED table, the history of every key
 * and directory it owns: before it exports a batch it appends one event per
 * key and directory the batch changes (its state once the batch is applied:
 * a put of seq S, absent, or for a directory present/absent) with tick 0,
 * and once wait_committed returns it fills in the batch's tick. A reader at
 * epoch E then knows the state of a key at E exactly: the last event with
 * tick <= E (every event with tick <= E was appended before E was
 * published: the writer appends, then exports, then the root applies and
 * publishes E, which the reader imported). A key whose last event has no
 * tick yet (the batch in flight) is skipped.
 *
 * NREADERS reader processes loop: import_next (timeout 0 or 1 ms; with
 * timeout 0 and nothing new they keep their old snapshot, as does a reader
 * that skips the import; one import in 11 is stopped by its callback after
 * a change or two: the library may then leave the reader at the new tick
 * with its cursor behind, but its reads must be at the epoch it announced
 * and as safe as after any import), then several passes of get on
 * every key and dir_iter on every directory, and dirs_iter over all, at
 * their snapshot.
 * Every value they see (also the values import delivers) must be intact
 * (no 0xa5 run, checksum, magic, length), belong where it was read, have
 * view.epoch == the reader's snapshot E (its announced read epoch: its
 * cursor, except after a stopped import) and view.tick <= E, and be
 * exactly the newest write with tick <= E (seq and tick), and a key
 * or directory must be absent exactly when its history says so. -EIO (a
 * corrupt segment: what a reader following freed memory gets) fails too.
 *
 * A read raced a reclaim when the root's published reclaimed-objects
 * counter (shmsync_stat().reclaimed, stored at the end of each reclaim
 * call) changed between just before and just after it. The test fails if
 * no read raced one, if no read was checked exactly, or on any bad read.
 *
 * Teeth: with shm_reclaim freeing one tick early (`r->bk_base <= min_epoch
 * + 1` in shm/index.c) every run fails within a second or so: keys absent
 * that must be there, poisoned values, -EIO.
 *
 * Usage: test_sync_torture [seconds, default 10]
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "synctest.h"
#include "synctest_death.h"

#define MS 1000000LL
#define NWRITERS 2
#define NDIRS 6
#define NKEYS 16
#define NREADERS 3
#define HIST 64 /* events kept per key and directory */

#define VAL_MAGIC 0x54524f54u /* "TORT" */
#define VAL_HDR 24
#define POISON 0xa5

/* One event of a history, under a per-entry seqlock: `ver` is 2i+1 while
 * the writer fills the entry for event i, 2i+2 once it is complete. `tick`
 * goes from 0 (in flight) to the commit's tick, once. */
struct ev {
	_Atomic uint64_t ver;
	_Atomic uint64_t what; /* key: 0 absent, 2*seq+1 a put of seq; directory: 0 absent, 1 present */
	_Atomic uint64_t tick;
};

struct hist {
	_Atomic uint64_t n; /* events appended */
	struct ev ev[HIST];
};

struct wstats {
	_Atomic uint64_t commits, puts, dels, rmdirs, mkdirs, remkdirs, seq;
};

struct rstats {
	_Atomic uint64_t imports, kept, stopped, passes, gets, iters, dirs_iters, values, changes;
	_Atomic uint64_t exact_present, exact_absent, unknown, raced, raced_iter, max_lag;
};

struct ctl {
	_Atomic int stop, failed;
	_Atomic int ready;
	struct hist key[NWRITERS][NDIRS][NKEYS];
	struct hist dir[NWRITERS][NDIRS];
	struct wstats w[NWRITERS];
	struct rstats r[NREADERS];
};

static struct ctl *C;

#define R_FAIL(...)                                                                                          \
	do {                                                                                                 \
		atomic_store(&C->failed, 1);                                                                 \
		T_FAIL(__VA_ARGS__);                                                                         \
	} while (0)

/* ---- values ------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* The length of write seq of writer wr: mostly small objects of many size
 * classes, now and then a large one (whole pages, fully poisoned). */
static size_t value_len(unsigned wr, uint64_t seq)
{
	uint64_t h = mix64(seq * 0x9e3779b97f4a7c15ULL + wr);
	if (h % 100 < 4)
		return 8192 + (size_t)((h >> 8) % 8192);
	return 32 + (size_t)((h >> 8) % 480);
}

static uint8_t pattern_byte(uint64_t seq, size_t i)
{
	return (uint8_t)(mix64(seq ^ ((uint64_t)i << 40)) & 0x7f); /* never 0xa5 */
}

static uint32_t fnv(const uint8_t *p, size_t n, uint32_t h)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static uint32_t value_sum(const uint8_t *p, size_t len)
{
	uint32_t h = fnv(p, 20, 2166136261u);
	return fnv(p + VAL_HDR, len - VAL_HDR, h);
}

static void value_make(uint8_t *p, unsigned wr, unsigned d, unsigned k, uint64_t seq, size_t len)
{
	uint32_t magic = VAL_MAGIC, l32 = (uint32_t)len;
	memcpy(p, &magic, 4);
	p[4] = (uint8_t)wr;
	p[5] = (uint8_t)d;
	p[6] = (uint8_t)k;
	p[7] = 0x5a;
	memcpy(p + 8, &seq, 8);
	memcpy(p + 16, &l32, 4);
	for (size_t i = VAL_HDR; i < len; i++)
		p[i] = pattern_byte(seq, i);
	uint32_t sum = value_sum(p, len);
	memcpy(p + 20, &sum, 4);
}

enum { V_OK, V_POISON, V_TORN, V_FOREIGN };
static const char *const v_name[] = {"intact", "POISONED (0xa5: freed memory)",
				     "TORN (checksum, magic or length)", "FOREIGN (another key's value)"};

/* Checks a value read at (wr, d, k); *seq gets its sequence number. */
static int value_check(const void *data, size_t len, unsigned wr, unsigned d, unsigned k, uint64_t *seq)
{
	const uint8_t *p = data;
	unsigned run = 0;
	for (size_t i = 0; i < len; i++) {
		run = p[i] == POISON ? run + 1 : 0;
		if (run >= 4 || (i >= VAL_HDR && p[i] == POISON))
			return V_POISON;
	}
	if (len < VAL_HDR + 8)
		return V_TORN;
	uint32_t magic, l32, sum;
	memcpy(&magic, p, 4);
	memcpy(seq, p + 8, 8);
	memcpy(&l32, p + 16, 4);
	memcpy(&sum, p + 20, 4);
	if (magic != VAL_MAGIC || p[7] != 0x5a || l32 != len || sum != value_sum(p, len))
		return V_TORN;
	if (p[4] >= NWRITERS || len != value_len(p[4], *seq))
		return V_TORN;
	if (p[4] != wr || p[5] != d || p[6] != k)
		return V_FOREIGN;
	return V_OK;
}

static void dir_name(char *buf, size_t n, unsigned wr, unsigned d)
{
	snprintf(buf, n, "/w%u-d%u/", wr, d);
}

static void key_name(char *buf, unsigned k)
{
	buf[0] = 'k';
	buf[1] = (char)('a' + k / 26);
	buf[2] = (char)('a' + k % 26);
}

/* ---- histories ---------------------------------------------------------- */

static void hist_append(struct hist *h, uint64_t what, uint64_t *idx)
{
	uint64_t i = atomic_load_explicit(&h->n, memory_order_relaxed);
	struct ev *e = &h->ev[i % HIST];
	atomic_store_explicit(&e->ver, 2 * i + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&e->what, what, memory_order_relaxed);
	atomic_store_explicit(&e->tick, 0, memory_order_relaxed);
	atomic_store_explicit(&e->ver, 2 * i + 2, memory_order_release);
	atomic_store_explicit(&h->n, i + 1, memory_order_release);
	*idx = i;
}

static void hist_set_tick(struct hist *h, uint64_t i, uint64_t tick)
{
	atomic_store_explicit(&h->ev[i % HIST].tick, tick, memory_order_release);
}

enum { EXP_UNKNOWN, EXP_ABSENT, EXP_PRESENT };
struct expect {
	int state;
	uint64_t what, tick;
};

/* The state at epoch E, from the history: the last event with tick <= E.
 * Unknown while the newest event is in flight (its tick may be <= E) or
 * when E is older than the events kept. */
static struct expect expect_at(const struct hist *h, uint64_t E)
{
	struct expect x = {EXP_UNKNOWN, 0, 0};
	uint64_t n = atomic_load_explicit(&h->n, memory_order_acquire);
	for (uint64_t i = n; i-- > 0;) {
		if (n - i > HIST - 2)
			return x; /* the writer may be overwriting it */
		const struct ev *e = &h->ev[i % HIST];
		uint64_t v1 = atomic_load_explicit(&e->ver, memory_order_acquire);
		uint64_t what = atomic_load_explicit(&e->what, memory_order_relaxed);
		uint64_t tick = atomic_load_explicit(&e->tick, memory_order_acquire);
		atomic_thread_fence(memory_order_acquire);
		uint64_t v2 = atomic_load_explicit(&e->ver, memory_order_relaxed);
		if (v1 != 2 * i + 2 || v2 != v1)
			return x;
		if (tick == 0)
			return x; /* in flight: its tick may be <= E */
		if (tick <= E) {
			x.state = what ? EXP_PRESENT : EXP_ABSENT;
			x.what = what;
			x.tick = tick;
			return x;
		}
	}
	/* Every event is after E: the initial state, nothing. */
	x.state = EXP_ABSENT;
	return x;
}

/* ---- writers ------------------------------------------------------------ */

struct pending {
	struct hist *h;
	uint64_t idx;
};

static int writer(unsigned wr, unsigned long long seed)
{
	unsigned long long rng = seed * 7919 + wr + 1;
	shmsync_worker *w = st_attach();
	/* A writer reads nothing: offline, so it pins no versions. */
	shmsync_offline(w);
	struct wstats *ws = &C->w[wr];
	bool dir_ok[NDIRS] = {false};
	bool key_ok[NDIRS][NKEYS] = {{false}};
	uint64_t seq = 0;
	static uint8_t buf[16384 + 64];
	atomic_fetch_add(&C->ready, 1);
	while (atomic_load(&C->ready) < NWRITERS + NREADERS && !atomic_load(&C->stop))
		sd_sleep_ns(MS);
	while (!atomic_load(&C->stop) && !atomic_load(&C->failed)) {
		/* What this batch leaves: per key 0 untouched, 1 absent, 2 put
		 * (of kseq); per directory 0 untouched, 1 absent, 2 present. */
		int kfin[NDIRS][NKEYS] = {{0}}, dfin[NDIRS] = {0};
		uint64_t kseq[NDIRS][NKEYS];
		unsigned ndirs = 0, nabsent = 0;
		for (unsigned d = 0; d < NDIRS; d++)
			ndirs += dir_ok[d];
		nabsent = NDIRS - ndirs;
		shmsync_batch *b;
		T_OK(shmsync_begin(w, &b));
		char dn[32], kn[3];
		unsigned r = (unsigned)(t_rand(&rng) % 100);
		unsigned d;
		if (ndirs == 0 || (r >= 70 && r < 80 && nabsent)) {
			/* mkdir of an absent directory, with a few puts */
			do
				d = (unsigned)(t_rand(&rng) % NDIRS);
			while (dir_ok[d]);
			dir_name(dn, sizeof(dn), wr, d);
			T_OK(shmsync_mkdir(b, dn));
			dfin[d] = 2;
			atomic_fetch_add(&ws->mkdirs, 1);
			r = 100; /* puts below */
		} else {
			do
				d = (unsigned)(t_rand(&rng) % NDIRS);
			while (!dir_ok[d]);
			dir_name(dn, sizeof(dn), wr, d);
			if (r >= 80 && r < 88 && ndirs > 1) {
				T_OK(shmsync_rmdir(b, dn));
				dfin[d] = 1;
				for (unsigned k = 0; k < NKEYS; k++)
					if (key_ok[d][k])
						kfin[d][k] = 1;
				atomic_fetch_add(&ws->rmdirs, 1);
			} else if (r >= 88) {
				/* rmdir and mkdir of the same name in one batch */
				T_OK(shmsync_rmdir(b, dn));
				T_OK(shmsync_mkdir(b, dn));
				dfin[d] = 2;
				for (unsigned k = 0; k < NKEYS; k++)
					if (key_ok[d][k])
						kfin[d][k] = 1;
				atomic_fetch_add(&ws->remkdirs, 1);
				r = 100;
			} else {
				r = 101; /* overwrites and deletes */
			}
		}
		if (r >= 100) {
			unsigned nk = 1 + (unsigned)(t_rand(&rng) % (r == 100 ? 3 : 4));
			for (unsigned j = 0; j < nk; j++) {
				unsigned k = (unsigned)(t_rand(&rng) % NKEYS);
				if (kfin[d][k] == 2 || (r == 101 && kfin[d][k]))
					continue; /* one change per key and batch */
				bool present = dfin[d] == 2 ? false : key_ok[d][k];
				key_name(kn, k);
				if (r == 101 && present && t_rand(&rng) % 4 == 0) {
					T_OK(shmsync_del(b, dn, kn, 3));
					kfin[d][k] = 1;
					atomic_fetch_add(&ws->dels, 1);
					continue;
				}
				uint64_t s = ++seq;
				size_t len = value_len(wr, s);
				value_make(buf, wr, d, k, s, len);
				T_OK(shmsync_put(b, dn, kn, 3, buf, len));
				kfin[d][k] = 2;
				kseq[d][k] = s;
				atomic_fetch_add(&ws->puts, 1);
			}
		}
		/* Histories first, then the export (so an event with tick <= E
		 * is in the table before E is published). */
		struct pending pend[NDIRS * NKEYS + NDIRS];
		unsigned np = 0;
		for (unsigned dd = 0; dd < NDIRS; dd++) {
			if (dfin[dd]) {
				pend[np].h = &C->dir[wr][dd];
				hist_append(pend[np].h, dfin[dd] == 2, &pend[np].idx);
				np++;
			}
			for (unsigned k = 0; k < NKEYS; k++) {
				if (!kfin[dd][k])
					continue;
				pend[np].h = &C->key[wr][dd][k];
				hist_append(pend[np].h, kfin[dd][k] == 2 ? 2 * kseq[dd][k] + 1 : 0,
					    &pend[np].idx);
				np++;
			}
		}
		int64_t t = st_commit(b);
		if (t <= 0)
			R_FAIL("writer %u: commit: %s", wr, shmsync_strerror((int)t));
		for (unsigned i = 0; i < np; i++)
			hist_set_tick(pend[i].h, pend[i].idx, (uint64_t)t);
		for (unsigned dd = 0; dd < NDIRS; dd++) {
			if (dfin[dd])
				dir_ok[dd] = dfin[dd] == 2;
			for (unsigned k = 0; k < NKEYS; k++) {
				if (dfin[dd] == 1)
					key_ok[dd][k] = false;
				if (kfin[dd][k])
					key_ok[dd][k] = kfin[dd][k] == 2;
			}
		}
		atomic_store(&ws->seq, seq);
		uint64_t c = atomic_fetch_add(&ws->commits, 1) + 1;
		if (c % 256 == 0) {
			/* Keep the cursor near the tick (it pins log records). */
			int rc = shmsync_import_next(w, 0, NULL, NULL);
			if (rc < 0 && rc != -ETIMEDOUT)
				R_FAIL("writer %u: import: %s", wr, shmsync_strerror(rc));
			shmsync_offline(w);
		}
	}
	shmsync_detach(w);
	return 0;
}

/* ---- readers ------------------------------------------------------------ */

struct rd {
	shmsync_worker *w;
	struct rstats *st;
	unsigned id;
	uint64_t epoch;
	unsigned stop_after, delivered; /* on_change stops the import after stop_after (0: never) */
	bool stopped;                   /* an import was stopped by on_change, none completed since */
	/* dir_iter's findings */
	unsigned wr, d;
	bool seen[NKEYS];
	uint64_t seen_seq[NKEYS], seen_tick[NKEYS];
	bool dseen[NWRITERS][NDIRS];
};

static uint64_t reclaimed(shmsync_worker *w)
{
	shmsync_stats s;
	T_OK(shmsync_stat(w, &s));
	return s.reclaimed;
}

/* For a failure: where the reader stood. */
static const char *stop_note(const struct rd *r)
{
	static char buf[200];
	uint64_t c = shmsync_cursor(r->w);
	if (r->stopped && c != r->epoch)
		snprintf(buf, sizeof(buf),
			 " (cursor %llu: an import its callback stopped left the reader ahead of its cursor; "
			 "a read outside the announced epoch is not protected from reclamation)",
			 (unsigned long long)c);
	else
		snprintf(buf, sizeof(buf), " (cursor %llu)", (unsigned long long)c);
	return buf;
}

static void check_view(struct rd *r, const char *what, unsigned wr, unsigned d, unsigned k, shmsync_view v,
		       uint64_t *seq)
{
	int rc = value_check(v.data, v.len, wr, d, k, seq);
	if (rc != V_OK) {
		const uint8_t *p = v.data;
		char hex[3 * 32 + 1] = "";
		for (size_t i = 0; i < v.len && i < 32; i++)
			snprintf(hex + 3 * i, 4, "%02x ", p[i]);
		R_FAIL("reader %u, %s /w%u-d%u/k%u at epoch %llu: value %s, len %zu, tick %llu: %s", r->id,
		       what, wr, d, k, (unsigned long long)r->epoch, v_name[rc], v.len,
		       (unsigned long long)v.tick, hex);
	}
	if (v.tick == 0 || v.tick > r->epoch || v.epoch != r->epoch)
		R_FAIL("reader %u, %s /w%u-d%u/k%u at epoch %llu: view tick %llu, view epoch %llu%s", r->id,
		       what, wr, d, k, (unsigned long long)r->epoch, (unsigned long long)v.tick,
		       (unsigned long long)v.epoch, stop_note(r));
	atomic_fetch_add_explicit(&r->st->values, 1, memory_order_relaxed);
}

/* Compares what the reader found for a key with its history at the epoch. */
static void check_key(struct rd *r, const char *how, unsigned wr, unsigned d, unsigned k, bool found,
		      uint64_t seq, uint64_t tick)
{
	struct expect x = expect_at(&C->key[wr][d][k], r->epoch);
	struct rstats *st = r->st;
	if (x.state == EXP_UNKNOWN) {
		atomic_fetch_add_explicit(&st->unknown, 1, memory_order_relaxed);
		return;
	}
	if (x.state == EXP_ABSENT) {
		if (found)
			R_FAIL("reader %u, %s /w%u-d%u/k%u at epoch %llu: found seq %llu (tick %llu), but it "
			       "is absent at that epoch (event of tick %llu)%s",
			       r->id, how, wr, d, k, (unsigned long long)r->epoch, (unsigned long long)seq,
			       (unsigned long long)tick, (unsigned long long)x.tick, stop_note(r));
		atomic_fetch_add_explicit(&st->exact_absent, 1, memory_order_relaxed);
		return;
	}
	uint64_t want = x.what >> 1;
	if (!found)
		R_FAIL("reader %u, %s /w%u-d%u/k%u at epoch %llu: absent, but seq %llu was written at "
		       "tick %llu%s",
		       r->id, how, wr, d, k, (unsigned long long)r->epoch, (unsigned long long)want,
		       (unsigned long long)x.tick, stop_note(r));
	if (seq != want || tick != x.tick)
		R_FAIL("reader %u, %s /w%u-d%u/k%u at epoch %llu: seq %llu of tick %llu, but the "
		       "newest write at that epoch is seq %llu of tick %llu%s",
		       r->id, how, wr, d, k, (unsigned long long)r->epoch, (unsigned long long)seq,
		       (unsigned long long)tick, (unsigned long long)want, (unsigned long long)x.tick,
		       stop_note(r));
	atomic_fetch_add_explicit(&st->exact_present, 1, memory_order_relaxed);
}

static void check_dir(struct rd *r, const char *how, unsigned wr, unsigned d, bool found)
{
	struct expect x = expect_at(&C->dir[wr][d], r->epoch);
	if (x.state == EXP_UNKNOWN)
		return;
	if (found != (x.state == EXP_PRESENT))
		R_FAIL("reader %u, %s /w%u-d%u/ at epoch %llu: %s, but it is %s at that epoch (event of "
		       "tick %llu)%s",
		       r->id, how, wr, d, (unsigned long long)r->epoch, found ? "present" : "absent",
		       x.state == EXP_PRESENT ? "present" : "absent", (unsigned long long)x.tick,
		       stop_note(r));
}

static int parse_key(const void *k, size_t kn)
{
	const char *p = k;
	if (kn != 3 || p[0] != 'k' || p[1] < 'a' || p[2] < 'a' || p[2] > 'z')
		return -1;
	int n = (p[1] - 'a') * 26 + (p[2] - 'a');
	return n < NKEYS ? n : -1;
}

static int on_key(const void *k, size_t kn, shmsync_view v, void *arg)
{
	struct rd *r = arg;
	int ki = parse_key(k, kn);
	if (ki < 0)
		R_FAIL("reader %u, dir_iter /w%u-d%u/ at epoch %llu: a key that is not one (%zu bytes, first "
		       "%02x)",
		       r->id, r->wr, r->d, (unsigned long long)r->epoch, kn, kn ? *(const uint8_t *)k : 0);
	if (r->seen[ki])
		R_FAIL("reader %u, dir_iter /w%u-d%u/: key %d twice", r->id, r->wr, r->d, ki);
	uint64_t seq;
	check_view(r, "dir_iter", r->wr, r->d, (unsigned)ki, v, &seq);
	r->seen[ki] = true;
	r->seen_seq[ki] = seq;
	r->seen_tick[ki] = v.tick;
	return 0;
}

static int on_dir(const char *dir, void *arg)
{
	struct rd *r = arg;
	unsigned wr, d;
	char tail;
	if (sscanf(dir, "/w%u-d%u/%c", &wr, &d, &tail) != 2 || wr >= NWRITERS || d >= NDIRS)
		R_FAIL("reader %u, dirs_iter at epoch %llu: a directory that is not one: \"%.40s\"", r->id,
		       (unsigned long long)r->epoch, dir);
	if (r->dseen[wr][d])
		R_FAIL("reader %u, dirs_iter: /w%u-d%u/ twice", r->id, wr, d);
	r->dseen[wr][d] = true;
	return 0;
}

/* A change import delivers: its value (read at the new epoch) intact. */
static int on_change(const shmsync_change *c, void *arg)
{
	struct rd *r = arg;
	atomic_fetch_add_explicit(&r->st->changes, 1, memory_order_relaxed);
	/* A reader may stop an import early: fn's non-zero value (not 1, which
	 * import cannot tell from a reset). */
	int stop = r->stop_after && ++r->delivered >= r->stop_after ? 2 : 0;
	if (c->kind != SHMSYNC_PUT)
		return stop;
	unsigned wr, d;
	int ki = parse_key(c->key, c->key_len);
	if (sscanf(c->dir, "/w%u-d%u/", &wr, &d) != 2 || wr >= NWRITERS || d >= NDIRS || ki < 0)
		R_FAIL("reader %u: import delivered a put into \"%.40s\" of a key that is not one", r->id,
		       c->dir);
	uint64_t seq;
	int rc = value_check(c->value, c->value_len, wr, d, (unsigned)ki, &seq);
	if (rc != V_OK)
		R_FAIL("reader %u: import delivered /w%u-d%u/k%d (tick %llu): value %s", r->id, wr, d, ki,
		       (unsigned long long)c->tick, v_name[rc]);
	return stop;
}

static void read_pass(struct rd *r, unsigned long long *rng)
{
	shmsync_worker *w = r->w;
	struct rstats *st = r->st;
	char dn[32], kn[3];
	for (unsigned wr = 0; wr < NWRITERS; wr++) {
		for (unsigned d = 0; d < NDIRS; d++) {
			dir_name(dn, sizeof(dn), wr, d);
			if (t_rand(rng) % 2) {
				/* gets, one key at a time */
				for (unsigned k = 0; k < NKEYS; k++) {
					key_name(kn, k);
					shmsync_view v;
					uint64_t r0 = reclaimed(w);
					int rc = shmsync_get(w, dn, kn, 3, &v);
					uint64_t seq = 0;
					if (rc == 0)
						check_view(r, "get", wr, d, k, v, &seq);
					if (reclaimed(w) != r0)
						atomic_fetch_add_explicit(&st->raced, 1,
									  memory_order_relaxed);
					atomic_fetch_add_explicit(&st->gets, 1, memory_order_relaxed);
					if (rc < 0 && rc != -ENOENT)
						R_FAIL("reader %u: get %s%s at epoch %llu: %s", r->id, dn, kn,
						       (unsigned long long)r->epoch, shmsync_strerror(rc));
					check_key(r, "get", wr, d, k, rc == 0, seq, rc == 0 ? v.tick : 0);
				}
			} else {
				r->wr = wr;
				r->d = d;
				memset(r->seen, 0, sizeof(r->seen));
				uint64_t r0 = reclaimed(w);
				int rc = shmsync_dir_iter(w, dn, on_key, r);
				if (reclaimed(w) != r0)
					atomic_fetch_add_explicit(&st->raced_iter, 1, memory_order_relaxed);
				atomic_fetch_add_explicit(&st->iters, 1, memory_order_relaxed);
				if (rc < 0 && rc != -ENOENT)
					R_FAIL("reader %u: dir_iter %s at epoch %llu: %s", r->id, dn,
					       (unsigned long long)r->epoch, shmsync_strerror(rc));
				check_dir(r, "dir_iter", wr, d, rc == 0);
				for (unsigned k = 0; k < NKEYS; k++)
					check_key(r, "dir_iter", wr, d, k, r->seen[k], r->seen_seq[k],
						  r->seen_tick[k]);
			}
		}
	}
	memset(r->dseen, 0, sizeof(r->dseen));
	int rc = shmsync_dirs_iter(w, "/", on_dir, r);
	if (rc < 0)
		R_FAIL("reader %u: dirs_iter at epoch %llu: %s", r->id, (unsigned long long)r->epoch,
		       shmsync_strerror(rc));
	atomic_fetch_add_explicit(&st->dirs_iters, 1, memory_order_relaxed);
	for (unsigned wr = 0; wr < NWRITERS; wr++)
		for (unsigned d = 0; d < NDIRS; d++)
			check_dir(r, "dirs_iter", wr, d, r->dseen[wr][d]);
	atomic_fetch_add_explicit(&st->passes, 1, memory_order_relaxed);
}

static int reader(unsigned id, unsigned long long seed)
{
	unsigned long long rng = seed * 104729 + id + 17;
	struct rd r = {.w = st_attach(), .st = &C->r[id], .id = id};
	struct rstats *st = r.st;
	atomic_fetch_add(&C->ready, 1);
	while (!atomic_load(&C->stop) && !atomic_load(&C->failed)) {
		unsigned m = (unsigned)(t_rand(&rng) % 11);
		int rc = 0;
		r.stop_after = 0;
		r.delivered = 0;
		if (m == 10) {
			/* An import whose callback stops it after a change or two:
			 * whatever snapshot the library leaves the reader at, the
			 * reads below must be at the epoch it announced (see
			 * below), and safe. */
			r.stop_after = 1 + (unsigned)(t_rand(&rng) % 2);
			rc = shmsync_import_next(r.w, MS, on_change, &r);
			r.stop_after = 0;
			if (rc == 2) {
				atomic_fetch_add(&st->stopped, 1);
				r.stopped = true;
				/* A library that answers a stopped import by going
				 * offline is fine too: then back online. */
				shmsync_stats s;
				T_OK(shmsync_stat(r.w, &s));
				if (s.read_epoch == UINT64_MAX)
					rc = -ETIMEDOUT;
			}
			m = 4; /* the same as a wait of 1 ms from here on */
		} else if (m < 4) {
			rc = shmsync_import_next(r.w, 0, on_change, &r);
		} else if (m < 8) {
			rc = shmsync_import_next(r.w, MS, on_change, &r);
		} else if (m < 9) {
			/* offline for a moment, then back at a newer tick */
			shmsync_offline(r.w);
			sd_sleep_ns((int64_t)(t_rand(&rng) % 200000));
			rc = shmsync_import_next(r.w, 10 * MS, on_change, &r);
		} else {
			atomic_fetch_add(&st->kept, 1); /* keep the snapshot */
		}
		if (rc == -ETIMEDOUT) {
			/* Nothing new. With timeout 0 the reader is still online at
			 * its old snapshot; a wait went offline: back online at the
			 * published tick (import_until its own cursor). */
			if (m >= 4 && m < 9)
				rc = shmsync_import_until(r.w, shmsync_cursor(r.w), 0, on_change, &r);
			if (rc < 0 && rc != -ETIMEDOUT)
				R_FAIL("reader %u: import_until: %s", id, shmsync_strerror(rc));
			atomic_fetch_add(&st->kept, 1);
		} else if (rc < 0) {
			R_FAIL("reader %u: import_next: %s", id, shmsync_strerror(rc));
		} else if (m < 9) {
			atomic_fetch_add(&st->imports, 1);
		}
		/* The snapshot the reads below must be at: the announced read
		 * epoch. After a complete import it is the cursor. After an
		 * import its callback stopped, the library may leave the reader
		 * at the new tick with its cursor behind (so the next import
		 * delivers again), but never reading at an older snapshot than
		 * the one it announced: every view's epoch must be this one. */
		uint64_t cursor = shmsync_cursor(r.w);
		shmsync_stats s;
		T_OK(shmsync_stat(r.w, &s));
		if (s.read_epoch == UINT64_MAX)
			R_FAIL("reader %u: offline after an import (cursor %llu)", id,
			       (unsigned long long)cursor);
		if (s.read_epoch == cursor)
			r.stopped = false;
		else if (!(r.stopped && s.read_epoch > cursor))
			R_FAIL("reader %u: online at epoch %llu, but its cursor is %llu", id,
			       (unsigned long long)s.read_epoch, (unsigned long long)cursor);
		r.epoch = s.read_epoch;
		uint64_t lag = s.tick - r.epoch;
		if (lag > atomic_load(&st->max_lag))
			atomic_store(&st->max_lag, lag);
		unsigned passes = 1 + (unsigned)(t_rand(&rng) % 3);
		for (unsigned p = 0; p < passes; p++)
			read_pass(&r, &rng);
	}
	shmsync_detach(r.w);
	return 0;
}

/* ---- the test ----------------------------------------------------------- */

/* A failing run leaves no socket behind (the root it kills cannot). */
static void unlink_sock(void)
{
	if (getpid() == sd_parent && st_sock[0])
		unlink(st_sock);
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 10;
	if (seconds <= 0 || seconds > 600)
		T_FAIL("usage: test_sync_torture [seconds, default 10]");
	sd_init((unsigned)seconds + 60);
	atexit(unlink_sock);
	unsigned long long seed = t_seed((unsigned long long)getpid());
	C = sd_shared(sizeof(*C));
	shmsync_root_opts o = {.debug_poison = 1, .capacity = (size_t)512 << 20};
	pid_t root = sd_start_root(&o);
	pid_t kids[NWRITERS + NREADERS];
	for (unsigned i = 0; i < NWRITERS; i++) {
		kids[i] = sd_fork();
		if (kids[i] == 0)
			exit(writer(i, seed));
	}
	for (unsigned i = 0; i < NREADERS; i++) {
		kids[NWRITERS + i] = sd_fork();
		if (kids[NWRITERS + i] == 0)
			exit(reader(i, seed));
	}
	printf("torture: %d writers (%d directories of %d keys each), %d readers, %.0f s, poison on\n",
	       NWRITERS, NDIRS, NKEYS, NREADERS, seconds);
	double t0 = st_now();
	while (st_now() - t0 < seconds && !atomic_load(&C->failed)) {
		/* A child that exits early failed (or was killed). */
		int status;
		pid_t p = waitpid(-1, &status, WNOHANG);
		if (p > 0)
			T_FAIL("process %d ended early (status 0x%x)", (int)p, status);
		sd_sleep_ns(20 * MS);
	}
	atomic_store(&C->stop, 1);
	for (unsigned i = 0; i < NWRITERS + NREADERS; i++) {
		int rc = sd_reap(kids[i]);
		if (rc != 0)
			T_FAIL("%s %u exited %d", i < NWRITERS ? "writer" : "reader",
			       i < NWRITERS ? i : i - NWRITERS, rc);
	}
	double took = st_now() - t0;

	uint64_t commits = 0;
	for (unsigned i = 0; i < NWRITERS; i++) {
		struct wstats *w = &C->w[i];
		printf("writer %u: %llu commits (%.0f/s): %llu puts, %llu deletes, %llu rmdir, %llu mkdir, "
		       "%llu "
		       "rmdir+mkdir\n",
		       i, (unsigned long long)w->commits, (double)w->commits / took,
		       (unsigned long long)w->puts, (unsigned long long)w->dels,
		       (unsigned long long)w->rmdirs, (unsigned long long)w->mkdirs,
		       (unsigned long long)w->remkdirs);
		commits += w->commits;
	}
	uint64_t raced = 0, values = 0, exact = 0;
	for (unsigned i = 0; i < NREADERS; i++) {
		struct rstats *r = &C->r[i];
		printf("reader %u: %llu imports, %llu kept snapshots, %llu passes, %llu gets, %llu "
		       "dir_iters, %llu "
		       "dirs_iters, %llu values and %llu changes checked; exact: %llu present, %llu absent, "
		       "%llu in flight (skipped); %llu imports stopped by the callback; raced a reclaim: "
		       "%llu gets, %llu dir_iters; max lag %llu "
		       "ticks\n",
		       i, (unsigned long long)r->imports, (unsigned long long)r->kept,
		       (unsigned long long)r->passes, (unsigned long long)r->gets,
		       (unsigned long long)r->iters, (unsigned long long)r->dirs_iters,
		       (unsigned long long)r->values, (unsigned long long)r->changes,
		       (unsigned long long)r->exact_present, (unsigned long long)r->exact_absent,
		       (unsigned long long)r->unknown, (unsigned long long)r->stopped,
		       (unsigned long long)r->raced, (unsigned long long)r->raced_iter,
		       (unsigned long long)r->max_lag);
		raced += r->raced + r->raced_iter;
		values += r->values;
		exact += r->exact_present + r->exact_absent;
	}
	/* The root's totals, through a short-lived worker. */
	pid_t p = sd_fork();
	if (p == 0) {
		shmsync_worker *w = st_attach();
		shmsync_stats s;
		T_OK(shmsync_stat(w, &s));
		printf("root: tick %llu, %llu objects reclaimed, %llu bytes in use, %llu tombstones\n",
		       (unsigned long long)s.tick, (unsigned long long)s.reclaimed,
		       (unsigned long long)s.bytes_in_use, (unsigned long long)s.tombstones);
		shmsync_detach(w);
		exit(0);
	}
	T_EQ(sd_reap(p), 0);
	printf("%.1f s: %llu commits, %llu values checked, %llu reads checked exactly, %llu reads raced a "
	       "reclaim\n",
	       took, (unsigned long long)commits, (unsigned long long)values, (unsigned long long)exact,
	       (unsigned long long)raced);
	if (commits == 0 || values == 0 || exact == 0)
		T_FAIL("nothing was checked");
	if (raced == 0)
		T_FAIL("no read raced a reclaim: the test proved nothing about reclamation");
	kill(root, SIGTERM);
	T_EQ(sd_reap(root), 0);
	unlink(st_sock);
	printf("OK\n");
	return 0;
}
