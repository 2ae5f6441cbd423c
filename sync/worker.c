/* The worker's side: batches and export, acks, import of the next state,
 * zero-copy reads at the worker's snapshot, and stat. Attach is in
 * worker_attach.c, waiting and signalling in worker_wait.c.
 *
 * Positions (docs/ARCHITECTURE.md, "Positions"): the read epoch is
 * announced before anything of that snapshot is read, with the classic
 * protocol: store the epoch (seq_cst), re-read the published tick, and start
 * over if it moved. The root scans epochs only after a publish and a full
 * fence, so either its scan sees the announcement, or the re-read sees every
 * tick the root published before scanning. A worker that is online and
 * still counted (not revoked since it announced) moves its epoch up with a
 * plain release store (advance_epoch): the old epoch already holds all it
 * can see. The cursor is stored (release) after the import that reached it.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "get_hot.h"
#include "numa.h"
#include "sync.h"

/* Announces the published tick as the read epoch, until it holds still. */
void worker_go_online(shmsync_worker *w, uint64_t *tick, uint64_t *log_end)
{
	w->dir_cache.epoch = 0;
	for (;;) {
		shm_published_state(&w->seg, tick, log_end);
		atomic_store_explicit(&w->port->read_epoch, *tick, memory_order_seq_cst);
		atomic_thread_fence(memory_order_seq_cst);
		uint64_t t2, e2;
		shm_published_state(&w->seg, &t2, &e2);
		if (t2 == *tick)
			break;
	}
	/* Reads use this snapshot from now on, whether or not the import that
	 * announced it completes (the cursor then stays behind). */
	w->epoch = *tick;
	w->online = true;
}

/* Moves the read epoch up to the published tick while this worker is
 * online and still counted by the root (no revocation since it announced).
 * The root's minimum already holds everything visible at the old epoch,
 * and a newer snapshot sees no more of what is retired (only less), so
 * neither the re-read nor the full fence of go_online is needed: a release
 * store orders the reads at the old snapshot before it, which is all the
 * root relies on when it sees the new value (spec/reclaim.pml, "FAST"). */
static void advance_epoch(shmsync_worker *w, uint64_t *tick, uint64_t *log_end)
{
	shm_published_state(&w->seg, tick, log_end);
	if (*tick > w->epoch)
		atomic_store_explicit(&w->port->read_epoch, *tick, memory_order_release);
	else
		*tick = w->epoch; /* never down */
	w->epoch = *tick;
}

uint64_t shmsync_cursor(const shmsync_worker *w)
{
	return w->cursor;
}

/* ---- batches ----------------------------------------------------------- */

int shmsync_begin(shmsync_worker *w, shmsync_batch **out)
{
	CHECK_HANDLE(w);
	shmsync_batch *b = w->batch_cache;
	w->batch_cache = NULL;
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			return -ENOMEM;
		wire_init(&b->buf);
	}
	b->w = w;
	b->buf.len = 0;
	b->buf.nops = 0;
	b->log_bytes = 0;
	b->checked_len = 0;
	*out = b;
	return 0;
}

static int add_op(shmsync_batch *b, const struct shm_op *op)
{
	if (!b || worker_forked(b->w))
		return b ? -ECHILD : -EINVAL;
	bool known = b->checked_len && op->dir && op->dir_len == b->checked_len &&
		     shm_bytes_eq(op->dir, b->checked, b->checked_len);
	int rc = shm_op_check_named(op, known);
	if (rc < 0)
		return rc;
	if (!known && op->dir_len <= sizeof(b->checked)) {
		memcpy(b->checked, op->dir, op->dir_len);
		b->checked_len = op->dir_len;
	}
	size_t lb = shm_batch_log_bytes(op, 1);
	if (b->log_bytes + lb > b->w->log_half)
		return -E2BIG;
	size_t len = b->buf.len;
	uint32_t nops = b->buf.nops;
	rc = wire_append(&b->buf, op, b->w->max_batch);
	if (rc < 0) {
		b->buf.len = len;
		b->buf.nops = nops;
		return rc;
	}
	b->log_bytes += lb;
	return 0;
}

static struct shm_op key_op(int kind, const char *dir, const void *k, size_t kn)
{
	return (struct shm_op){
		.kind = kind, .dir = dir, .dir_len = dir ? strlen(dir) : 0, .key = k, .key_len = kn};
}

int shmsync_put(shmsync_batch *b, const char *dir, const void *k, size_t kn, const void *v, size_t vn)
{
	struct shm_op op = key_op(SHM_OP_PUT, dir, k, kn);
	op.value = v;
	op.value_len = vn;
	return add_op(b, &op);
}

int shmsync_put_if_absent(shmsync_batch *b, const char *dir, const void *k, size_t kn, const void *v,
			  size_t vn)
{
	struct shm_op op = key_op(SHM_OP_PUT_IF_ABSENT, dir, k, kn);
	op.value = v;
	op.value_len = vn;
	return add_op(b, &op);
}

int shmsync_put_if_tick(shmsync_batch *b, const char *dir, const void *k, size_t kn, const void *v, size_t vn,
			uint64_t expected_tick)
{
	struct shm_op op = key_op(SHM_OP_PUT_IF_TICK, dir, k, kn);
	op.value = v;
	op.value_len = vn;
	op.expected_tick = expected_tick;
	return add_op(b, &op);
}

int shmsync_add(shmsync_batch *b, const char *dir, const void *k, size_t kn, int64_t delta)
{
	struct shm_op op = key_op(SHM_OP_ADD, dir, k, kn);
	op.delta = delta;
	return add_op(b, &op);
}

int shmsync_del(shmsync_batch *b, const char *dir, const void *k, size_t kn)
{
	struct shm_op op = key_op(SHM_OP_DEL, dir, k, kn);
	return add_op(b, &op);
}

int shmsync_mkdir(shmsync_batch *b, const char *dir)
{
	struct shm_op op = key_op(SHM_OP_MKDIR, dir, NULL, 0);
	return add_op(b, &op);
}

int shmsync_rmdir(shmsync_batch *b, const char *dir)
{
	struct shm_op op = key_op(SHM_OP_RMDIR, dir, NULL, 0);
	return add_op(b, &op);
}

void shmsync_abort(shmsync_batch *b)
{
	if (!b)
		return;
	shmsync_worker *w = b->w;
	if (!w->batch_cache && !worker_forked(w) && b->buf.cap <= ((size_t)1 << 20)) {
		w->batch_cache = b;
		return;
	}
	wire_free(&b->buf);
	free(b);
}

static bool ring_has_room(shmsync_worker *w, uint64_t need)
{
	uint64_t head = atomic_load_explicit(&w->port->ring_head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&w->port->ring_tail, memory_order_acquire);
	uint64_t acked = atomic_load_explicit(&w->port->acked_seq, memory_order_acquire);
	return head - tail + 2 * need <= w->port->ring_size && w->next_seq - acked < PORT_NACKS;
}

static void ring_doorbell(shmsync_worker *w)
{
	atomic_fetch_add_explicit(&w->port->doorbell, 1, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	if (!atomic_load_explicit(&w->port->root_sleeping, memory_order_relaxed))
		return;
	if (w->root_signal == SIG_URING) {
		sig_futex_wake(&w->port->doorbell, 1);
	} else {
		uint64_t one = 1;
		if (write(w->doorbell_fd, &one, sizeof(one)) < 0) {
			/* The counter is full: the root is readable already. */
		}
	}
}

int shmsync_export(shmsync_batch *b, int flags, uint64_t *seq)
{
	if (!b)
		return -EINVAL;
	shmsync_worker *w = b->w;
	CHECK_HANDLE(w);
	if (flags & ~SHMSYNC_NONBLOCK)
		return -EINVAL;
	if (worker_root_gone_lazy(w))
		return -ESHUTDOWN;
	size_t len = wire_seal(&b->buf, w->next_seq);
	for (;;) {
		/* Like the ring's tail, the acks are the root's line: read
		 * again only when the old value says we are at the limit. */
		if (w->next_seq - w->acked_seen >= PORT_NACKS)
			w->acked_seen = atomic_load_explicit(&w->port->acked_seq, memory_order_acquire);
		int rc = w->next_seq - w->acked_seen >= PORT_NACKS
				 ? -EAGAIN
				 : ring_put_cached(w->port, w->exring, b->buf.data, len, &w->tail_seen);
		if (rc == 0)
			break;
		if (rc != -EAGAIN)
			return rc;
		if (flags & SHMSYNC_NONBLOCK)
			return -EAGAIN;
		/* The root drains rings and acks; each ack round wakes us. */
		rc = worker_wait_for(w, ring_has_room, len, -1, 0, NULL, false);
		if (rc < 0)
			return rc;
	}
	ring_doorbell(w);
	if (seq)
		*seq = w->next_seq;
	w->next_seq++;
	w->exported++;
	shmsync_abort(b);
	return 0;
}

static bool acked(shmsync_worker *w, uint64_t seq)
{
	if (atomic_load_explicit(&w->port->acked_seq, memory_order_acquire) >= seq)
		return true;
	/* Not yet: ask for what the caller reads next, so that it crosses
	 * from the root's core beside the ack word rather than one miss after
	 * another once the ack is seen: the ack's own entry, then (for the
	 * import that usually follows) the published tick and the change log
	 * at this worker's position. Hints only. */
	__builtin_prefetch(&w->acks[seq % PORT_NACKS]);
	shm_pub_prefetch(&w->seg);
	shm_log_prefetch(&w->seg, w->log_pos);
	return false;
}

int shmsync_wait_committed(shmsync_worker *w, uint64_t seq, uint64_t *tick, int64_t timeout_ns)
{
	CHECK_HANDLE(w);
	if (seq == 0 || seq >= w->next_seq)
		return -EINVAL;
	if (w->next_seq - seq > PORT_NACKS)
		return -EOVERFLOW; /* its ack slot was reused long ago */
	/* An ack takes about as long as the last ones took (a batch of 256
	 * new keys at 1M keys: about 100 us of the root's apply). A wait
	 * that spins that long saves the sleep and the cross-core wake (30
	 * us and more, bench/peers "writes"); one expected to take longer
	 * than ACK_SPIN_MAX_NS (replication with durable acks: about 1 ms)
	 * spins only the default before it sleeps. The spinning yields its
	 * CPU every microsecond without news, as every spin here does. */
	int64_t expect = w->ack_wait_ns + w->ack_wait_ns / 4, waited;
	int64_t spin = expect > WAIT_SPIN_NS && expect <= ACK_SPIN_MAX_NS ? expect : 0;
	/* The wait's own clock reads say how long it took: a round trip's
	 * worth of ack (under a microsecond) reads none and counts as 0. */
	int rc = worker_wait_for(w, acked, seq, timeout_ns, spin, &waited, false);
	if (rc < 0)
		return rc;
	w->ack_wait_ns += (waited - w->ack_wait_ns) / 8;
	struct port_ack *a = &w->acks[seq % PORT_NACKS];
	uint64_t s = atomic_load_explicit(&a->seq, memory_order_relaxed);
	int64_t res = atomic_load_explicit(&a->result, memory_order_relaxed);
	if (s != seq)
		return -EOVERFLOW;
	if (res < 0) {
		w->rejected++;
		return (int)res;
	}
	w->committed++;
	if (tick)
		*tick = (uint64_t)res;
	return 0;
}

/* The root's revocation counter for this slot (stall policy REVOKE). */
static uint32_t revocations(shmsync_worker *w)
{
	const struct wtab *t = w->wtab;
	return t ? atomic_load_explicit(&t->e[w->slot].revoked, memory_order_acquire) : 0;
}

/* After a read: was this snapshot revoked meanwhile? Then what was read may
 * have been freed and reused: the read reports ESTALE. */
static bool revoked_since(shmsync_worker *w)
{
	/* Orders the reads before the counter's load: a read that saw memory
	 * the root freed after revoking sees the revocation (the root's fence
	 * between its bump and its frees pairs with this one). */
	atomic_thread_fence(memory_order_acquire);
	return revocations(w) != w->revoke_seen;
}

/* ---- import ------------------------------------------------------------ */

struct import_ctx {
	shmsync_change_fn fn;
	void *arg;
	int count;
	bool reset;
	int stopped; /* the callback's non-zero value */
};

static int deliver(const struct shm_change *c, void *arg)
{
	struct import_ctx *ic = arg;
	if (c->kind == SHM_CHANGE_RESET)
		ic->reset = true;
	ic->count++;
	if (!ic->fn)
		return 0;
	shmsync_change ch = {
		.tick = c->tick,
		.kind = c->kind,
		.dir = c->dir,
		.key = c->key,
		.key_len = c->key_len,
		.value = c->value,
		.value_len = c->value_len,
	};
	int rc = ic->fn(&ch, ic->arg);
	/* Kept aside: shm_diff's own 1 means "a reset was delivered". */
	if (rc)
		ic->stopped = rc;
	return rc ? -ECANCELED : 0;
}

static bool tick_reached(shmsync_worker *w, uint64_t target)
{
	return shm_published_tick(&w->seg) >= target;
}

/* After a wait that timed out: the handle goes back to the snapshot it
 * had, so reads and views taken before the call work as before. That
 * snapshot is announced again with the classic protocol: if the published
 * tick is still the old epoch, nothing was retired after it while we were
 * offline, so everything it sees is still there. If a commit came
 * meanwhile, the old snapshot may be gone: false when the target is now
 * reached (the caller imports after all), else the handle comes online at
 * the published tick (an import_until whose target lies further). A
 * revoked handle stays offline (its reads report ESTALE). */
static bool back_online(shmsync_worker *w, uint64_t target)
{
	if (revocations(w) != w->revoke_seen)
		return true;
	uint64_t old = w->epoch;
	w->dir_cache.epoch = 0;
	atomic_store_explicit(&w->port->read_epoch, old, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	if (shm_published_tick(&w->seg) == old) {
		w->online = true;
		return true;
	}
	atomic_store_explicit(&w->port->read_epoch, PORT_OFFLINE, memory_order_release);
	if (tick_reached(w, target))
		return false;
	uint64_t tick, log_end;
	worker_go_online(w, &tick, &log_end);
	return true;
}

/*
 * A worker that polls (import with timeout 0, in a loop) holds its CPU. With
 * more busy processes than cores, the process it waits for can then be
 * runnable with no CPU until a time slice ends: milliseconds, the p99 of a
 * busy-polled round trip on 2 cores. That may be the root, which every
 * commit needs (spinning or working after a wake), or the worker that is to
 * answer, queued on this very CPU. So after POLL_YIELD_NS with nothing new,
 * the poller yields, and again every POLL_YIELD_NS: with nothing else
 * runnable on its CPU, sched_yield is a system call that returns at once
 * (a few percent of a poll loop's time).
 *
 * When the last yield did run another process (worker_yield: it took longer
 * than YIELD_SWITCHED_NS), the CPU is shared with one that polls too, most likely
 * the one that answers. Then the first miss after news yields at once: the
 * answer cannot come while this process holds the CPU, and spinning
 * POLL_YIELD_NS first only delays it (a busy round trip with A and B on one
 * CPU went from 14.6 to 11.3 us p50, docs/BENCHMARKS.md). A poller alone on
 * its CPU never sees a yield switch, so it keeps the short spin: a yield is a
 * system call, 0.8 us in this project's VMs, and an answer across cores
 * comes in less (the own round trip went from 1.2 to 2.0 us when every
 * first miss yielded).
 */
static void poll_missed(shmsync_worker *w, int64_t now)
{
	if (!w->polling) {
		w->polling = true;
		w->poll_mark = now;
		if (w->yield_switched)
			w->poll_mark = worker_yield(w, now);
		return;
	}
	if (now - w->poll_mark >= POLL_YIELD_NS)
		w->poll_mark = worker_yield(w, now);
}

static int import_to(shmsync_worker *w, uint64_t target, int64_t timeout_ns, shmsync_change_fn fn, void *arg)
{
	CHECK_HANDLE(w);
	if (w->uring_ok)
		worker_reap(w);
	worker_drain_fdwake(w);
	shm_log_prefetch(&w->seg, w->log_pos);
	if (!tick_reached(w, target)) {
		/* Polling: one cheap look for the root's death, nothing else. */
		if (timeout_ns == 0) {
			/* One clock read for both: this is a poll loop's path. */
			int64_t now = sig_now_ns();
			if (worker_root_gone_lazy_at(w, now))
				return -ESHUTDOWN;
			poll_missed(w, now);
			return -ETIMEDOUT;
		}
		/* Offline while asleep: an idle worker pins log bytes only. */
		bool was_online = w->online;
		shmsync_offline(w);
		int rc = worker_wait_for(w, tick_reached, target, timeout_ns, 0, NULL, true);
		/* A commit that lands between the last look and back_online is
		 * imported rather than reported as a timeout. */
		if (rc == -ETIMEDOUT && was_online && !back_online(w, target))
			rc = 0;
		if (rc < 0)
			return rc;
	}
	w->polling = false;
	/* Rejoin after a revocation: take the counter first, then announce a
	 * snapshot (necessarily at or after the revocation), which the root
	 * counts again. */
	uint32_t revoked = revocations(w);
	bool counted = w->online && revoked == w->revoke_seen;
	w->revoke_seen = revoked;
	uint64_t tick, log_end;
	if (counted)
		advance_epoch(w, &tick, &log_end);
	else
		worker_go_online(w, &tick, &log_end);
	struct import_ctx ic = {fn, arg, 0, false, 0};
	int rc;
	if (fn) {
		rc = shm_diff_reuse(&w->seg, &w->diff_scratch, w->log_pos, tick, log_end, deliver, &ic);
	} else {
		/* No one to deliver to: the snapshot moves without reading the
		 * log, so a reader that only gets pays nothing for the writes of
		 * others (a full state of 1M keys took ~0.1 s). A cursor the log
		 * no longer holds is still counted as a reset. */
		rc = 0;
		ic.reset = w->log_pos < atomic_load_explicit(&w->seg.hdr->log_tail, memory_order_acquire);
		uint64_t moved = tick > w->cursor ? tick - w->cursor : 0;
		ic.count = moved > INT_MAX ? INT_MAX : (int)moved;
	}
	if (revoked_since(w))
		return -ESTALE; /* what this call delivered may be garbage; the cursor stays */
	w->imports++;
	if (ic.reset)
		w->resets++;
	if (ic.stopped)
		return ic.stopped; /* the cursor stays: the next import delivers again */
	if (rc < 0)
		return rc;
	w->cursor = tick;
	w->log_pos = log_end;
	atomic_store_explicit(&w->port->cursor, tick, memory_order_release);
	if (w->fd_mode && w->uring_ok)
		worker_arm(w, atomic_load_explicit(w->tick_futex, memory_order_acquire));
	return ic.count;
}

int shmsync_import_next(shmsync_worker *w, int64_t timeout_ns, shmsync_change_fn fn, void *arg)
{
	return import_to(w, w->cursor + 1, timeout_ns, fn, arg);
}

int shmsync_import_until(shmsync_worker *w, uint64_t tick, int64_t timeout_ns, shmsync_change_fn fn,
			 void *arg)
{
	if (tick <= w->cursor && w->online)
		return 0;
	return import_to(w, tick > w->cursor ? tick : w->cursor, timeout_ns, fn, arg);
}

void shmsync_offline(shmsync_worker *w)
{
	if (worker_forked(w))
		return;
	atomic_store_explicit(&w->port->read_epoch, PORT_OFFLINE, memory_order_release);
	w->online = false;
	w->dir_cache.epoch = 0;
}

/* ---- reads ------------------------------------------------------------- */

int shmsync_get(shmsync_worker *w, const char *dir, const void *k, size_t kn, shmsync_view *v)
{
	CHECK_HANDLE(w);
	if (!w->online)
		return -ESTALE;
	if (!dir)
		return -EINVAL;
	struct shm_value val;
	int rc = shm_get_hot(&w->dir_cache, w->epoch, dir, k, kn, &val);
	if (rc > 0)
		rc = shm_get_general(&w->seg, &w->dir_cache, w->epoch, dir, strlen(dir), k, kn, &val);
	if (revoked_since(w)) {
		w->dir_cache.epoch = 0;
		return -ESTALE;
	}
	if (rc < 0)
		return rc;
	*v = (shmsync_view){val.data, val.len, val.tick, w->epoch};
	return 0;
}

int shmsync_get_many(shmsync_worker *w, const char *dir, const shmsync_key *keys, size_t n,
		     shmsync_view *views, int *rcs)
{
	CHECK_HANDLE(w);
	if (!w->online)
		return -ESTALE;
	if (!dir || (n && (!keys || !views || !rcs)))
		return -EINVAL;
	struct shm_value vals[64];
	size_t dir_len = strlen(dir), found = 0;
	for (size_t j = 0; j < n; j += 64) {
		size_t m = n - j < 64 ? n - j : 64;
		int rc = shm_get_many_cached(&w->seg, &w->dir_cache, w->epoch, dir, dir_len, keys + j, m,
					     vals, rcs + j);
		if (revoked_since(w)) {
			w->dir_cache.epoch = 0;
			return -ESTALE;
		}
		if (rc < 0)
			return rc;
		for (size_t i = 0; i < m; i++)
			if (rcs[j + i] == 0)
				views[j + i] =
					(shmsync_view){vals[i].data, vals[i].len, vals[i].tick, w->epoch};
		found += (size_t)rc;
	}
	return found > INT_MAX ? INT_MAX : (int)found;
}

int shmsync_view_valid(shmsync_worker *w, const shmsync_view *v)
{
	return !worker_forked(w) && w->online && v && v->epoch == w->epoch && !revoked_since(w);
}

struct iter_ctx {
	shmsync_worker *w;
	int (*kfn)(const void *k, size_t kn, shmsync_view v, void *arg);
	int (*dfn)(const char *dir, void *arg);
	void *arg;
};

static int iter_key(const void *key, size_t key_len, const struct shm_value *v, void *arg)
{
	struct iter_ctx *c = arg;
	return c->kfn(key, key_len, (shmsync_view){v->data, v->len, v->tick, c->w->epoch}, c->arg);
}

static int iter_dir(const char *dir, size_t dir_len, void *arg)
{
	(void)dir_len;
	struct iter_ctx *c = arg;
	return c->dfn(dir, c->arg);
}

int shmsync_dir_iter(shmsync_worker *w, const char *dir,
		     int (*fn)(const void *k, size_t kn, shmsync_view v, void *arg), void *arg)
{
	CHECK_HANDLE(w);
	if (!w->online)
		return -ESTALE;
	if (!dir || !fn)
		return -EINVAL;
	struct iter_ctx c = {w, fn, NULL, arg};
	int rc = shm_dir_iter(&w->seg, w->epoch, dir, strlen(dir), iter_key, &c);
	return revoked_since(w) ? -ESTALE : rc;
}

int shmsync_dirs_iter(shmsync_worker *w, const char *prefix, int (*fn)(const char *dir, void *arg), void *arg)
{
	CHECK_HANDLE(w);
	if (!w->online)
		return -ESTALE;
	if (!fn)
		return -EINVAL;
	if (!prefix)
		prefix = "/";
	struct iter_ctx c = {w, NULL, fn, arg};
	int rc = shm_dirs_iter(&w->seg, w->epoch, prefix, strlen(prefix), iter_dir, &c);
	return revoked_since(w) ? -ESTALE : rc;
}

/* ---- stat -------------------------------------------------------------- */

int shmsync_stat(shmsync_worker *w, shmsync_stats *s)
{
	CHECK_HANDLE(w);
	const struct sync_shared *sh = w->shared;
	struct shm_seg_stats ss;
	shm_seg_stats(&w->seg, &ss);
	memset(s, 0, sizeof(*s));
	s->tick = shm_published_tick(&w->seg);
	s->cursor = w->cursor;
	s->read_epoch = atomic_load_explicit(&w->port->read_epoch, memory_order_relaxed);
	s->min_epoch = atomic_load_explicit(&sh->stat_min_epoch, memory_order_relaxed);
	s->signal = w->signal == SIG_URING ? "uring" : "futex";
	s->uring_ops = w->uring_ops;
	s->bytes_in_use = ss.bytes_in_use;
	s->capacity = ss.capacity;
	s->tombstones = ss.tombstones;
	s->reclaimed = ss.reclaimed_objects;
	s->workers = atomic_load_explicit(&sh->stat_workers, memory_order_relaxed);
	s->root_signal =
		atomic_load_explicit(&sh->stat_signal, memory_order_relaxed) == SIG_FUTEX ? "futex" : "uring";
	s->slot = w->slot;
	s->batches_exported = w->exported;
	s->batches_committed = w->committed;
	s->batches_rejected = w->rejected;
	s->imports = w->imports;
	s->resets = w->resets;
	s->late_wakes = w->late_wakes;
	s->root_timer_found_work = atomic_load_explicit(&sh->stat_timer_found_work, memory_order_relaxed);
	s->root_restarts = atomic_load_explicit(&sh->stat_root_restarts, memory_order_relaxed);
	s->worker_restarts = atomic_load_explicit(&sh->stat_worker_restarts, memory_order_relaxed);
	s->segment_bytes = ss.size;
	s->huge_bytes = atomic_load_explicit(&sh->stat_huge_bytes, memory_order_relaxed);
	uint32_t role = atomic_load_explicit(&sh->stat_repl_role, memory_order_relaxed);
	s->repl_role = role <= SHMSYNC_REPL_FOLLOWER ? (int)role : SHMSYNC_REPL_NONE;
	s->repl_stored_tick = atomic_load_explicit(&sh->stat_repl_stored_tick, memory_order_relaxed);
	s->repl_lag_ticks = atomic_load_explicit(&sh->stat_repl_lag_ticks, memory_order_relaxed);
	s->repl_lag_bytes = atomic_load_explicit(&sh->stat_repl_lag_bytes, memory_order_relaxed);
	s->root_pages_warmed_idle = atomic_load_explicit(&sh->stat_warmed_idle, memory_order_relaxed);
	s->root_pages_warmed_poll = atomic_load_explicit(&sh->stat_warmed_poll, memory_order_relaxed);
	s->repl_seq = atomic_load_explicit(&sh->stat_repl_seq, memory_order_relaxed);
	int nj = shm_numa_json(w->seg.base, s->numa, sizeof(s->numa));
	if (nj < 0 || (size_t)nj >= sizeof(s->numa))
		snprintf(s->numa, sizeof(s->numa), "null");
	return 0;
}

int shmsync_stat_json(shmsync_worker *w, char *buf, size_t len)
{
	shmsync_stats s;
	int rc = shmsync_stat(w, &s);
	if (rc < 0)
		return rc;
	return snprintf(
		buf, len,
		"{\"tick\":%" PRIu64 ",\"cursor\":%" PRIu64 ",\"read_epoch\":%" PRId64
		",\"min_epoch\":%" PRId64 ",\"signal\":\"%s\",\"uring_ops\":%" PRIu64
		",\"bytes_in_use\":%" PRIu64 ",\"capacity\":%" PRIu64 ",\"tombstones\":%" PRIu64
		",\"reclaimed\":%" PRIu64 ",\"slot\":%u,\"batches_exported\":%" PRIu64
		",\"batches_committed\":%" PRIu64 ",\"batches_rejected\":%" PRIu64 ",\"imports\":%" PRIu64
		",\"resets\":%" PRIu64 ",\"late_wakes\":%" PRIu64 ",\"root_timer_found_work\":%" PRIu64
		",\"root_restarts\":%" PRIu64 ",\"worker_restarts\":%" PRIu64 ",\"segment_bytes\":%" PRIu64
		",\"huge_bytes\":%" PRIu64 ",\"repl_role\":%d,\"repl_stored_tick\":%" PRIu64
		",\"repl_lag_ticks\":%" PRIu64 ",\"repl_lag_bytes\":%" PRIu64 ",\"repl_seq\":%" PRIu64
		",\"root_pages_warmed_idle\":%" PRIu64 ",\"root_pages_warmed_poll\":%" PRIu64 ",\"numa\":%s}",
		s.tick, s.cursor, s.read_epoch == UINT64_MAX ? -1 : (int64_t)s.read_epoch,
		s.min_epoch == UINT64_MAX ? -1 : (int64_t)s.min_epoch, s.signal, s.uring_ops, s.bytes_in_use,
		s.capacity, s.tombstones, s.reclaimed, s.slot, s.batches_exported, s.batches_committed,
		s.batches_rejected, s.imports, s.resets, s.late_wakes, s.root_timer_found_work,
		s.root_restarts, s.worker_restarts, s.segment_bytes, s.huge_bytes, s.repl_role,
		s.repl_stored_tick, s.repl_lag_ticks, s.repl_lag_bytes, s.repl_seq, s.root_pages_warmed_idle,
		s.root_pages_warmed_poll, s.numa);
}

int shmsync_workers(shmsync_worker *w, shmsync_worker_info *out, unsigned max)
{
	CHECK_HANDLE(w);
	const struct wtab *t;
	uint32_t n;
	if (!sync_shared_find(&w->seg, &t, &n) || !t)
		return -EIO;
	/*
	 * The root may be preempted inside its write section (a loaded host): retry
	 * with yields for up to a second rather than a fixed count of spins.
	 */
	int64_t give_up = sig_now_ns() + 1000000000LL;
	for (unsigned tries = 0;; tries++) {
		if (tries >= 64) {
			if (sig_now_ns() > give_up)
				break;
			sched_yield();
		}
		uint64_t s1 = atomic_load_explicit(&t->seq, memory_order_acquire);
		if (s1 & 1)
			continue;
		unsigned count = 0;
		for (unsigned i = 0; i < n; i++) {
			const struct wtab_entry *e = &t->e[i];
			uint32_t state = atomic_load_explicit(&e->state, memory_order_relaxed);
			if (!state)
				continue;
			if (count < max)
				out[count] = (shmsync_worker_info){
					.slot = i,
					.pid = (pid_t)atomic_load_explicit(&e->pid, memory_order_relaxed),
					.state = (int)state,
					.cursor = atomic_load_explicit(&e->cursor, memory_order_relaxed),
					.epoch = atomic_load_explicit(&e->epoch, memory_order_relaxed),
					.lag = atomic_load_explicit(&e->lag, memory_order_relaxed),
					.pinned_bytes =
						atomic_load_explicit(&e->pinned_bytes, memory_order_relaxed),
				};
			count++;
		}
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&t->seq, memory_order_relaxed) == s1) {
			/* Outside the seqlock: a system call per worker. */
			for (unsigned i = 0; i < count && i < max; i++) {
				int node = shm_numa_pid_node(out[i].pid);
				out[i].node = node < 0 ? -1 : node;
			}
			return (int)count;
		}
	}
	return -EAGAIN;
}
