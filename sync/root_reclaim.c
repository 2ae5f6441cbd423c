/* The root's positions and reclamation: it scans every live worker's read
 * epoch and cursor, applies the stall policies (a snapshot held too long,
 * a cursor that keeps too much of the log), frees what no counted position
 * can see (shm_reclaim), and publishes the worker table (sync/wtab.h). */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "root.h"

#define RECLAIM_SLICE_NS 500000 /* a reclaim runs at most this long */
#define WTAB_EVERY_NS 50000000  /* the worker table is republished this often */

/* Publishes the worker table (positions, lag, what each pins). */
void root_publish_wtab(shmsync_root *r)
{
	if (!r->wtab)
		return;
	unsigned n = r->max_workers;
	uint64_t tick = shm_published_tick(r->seg);
	for (unsigned i = 0; i < n; i++)
		r->epochs[i] = r->slots[i].live ? r->slots[i].epoch : UINT64_MAX;
	shm_retired_bytes_after(r->shm, r->epochs, r->pinned, n);
	uint64_t quarter = shm_log_size(r->shm) / 4;
	struct wtab *t = r->wtab;
	uint64_t seq = atomic_load_explicit(&t->seq, memory_order_relaxed);
	atomic_store_explicit(&t->seq, seq + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	for (unsigned i = 0; i < n; i++) {
		struct slot *s = &r->slots[i];
		struct wtab_entry *e = &t->e[i];
		if (!s->live) {
			atomic_store_explicit(&e->state, 0, memory_order_relaxed);
			continue;
		}
		uint64_t log_kept = shm_log_bytes_since(r->shm, s->cursor);
		uint32_t state = s->epoch == PORT_OFFLINE ? SHMSYNC_WORKER_OFFLINE : SHMSYNC_WORKER_LIVE;
		if (log_kept > quarter || s->log_warned)
			state = SHMSYNC_WORKER_LAGGING;
		if (s->revoked_tick)
			state = SHMSYNC_WORKER_REVOKED;
		atomic_store_explicit(&e->state, state, memory_order_relaxed);
		atomic_store_explicit(&e->pid, s->pid, memory_order_relaxed);
		atomic_store_explicit(&e->cursor, s->cursor, memory_order_relaxed);
		atomic_store_explicit(&e->epoch, s->epoch, memory_order_relaxed);
		atomic_store_explicit(&e->lag, tick > s->cursor ? tick - s->cursor : 0, memory_order_relaxed);
		atomic_store_explicit(&e->pinned_bytes, (s->revoked_tick ? 0 : r->pinned[i]) + log_kept,
				      memory_order_relaxed);
	}
	atomic_store_explicit(&t->seq, seq + 2, memory_order_release);
	r->last_wtab = sig_now_ns();
}

static void warn(shmsync_root *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(shmsync_root *r, const char *fmt, ...)
{
	char m[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	if (r->warn)
		r->warn(m, r->warn_arg);
	else
		fprintf(stderr, "shmsync root: %s\n", m);
}

/* The stall policies. A read epoch held online past max_read_pin_ns: wait
 * (warn once, naming the worker), kill (SIGKILL through its pidfd), or
 * revoke (its epoch stops counting; its reads report ESTALE until it
 * imports again). *e becomes the epoch the minimum may count. */
static void pin_policy(shmsync_root *r, unsigned idx, uint64_t tick, int64_t now, uint64_t pinned,
		       uint64_t *e)
{
	struct slot *s = &r->slots[idx];
	/* The time bound counts from when the published tick first passed
	 * this epoch: a worker at the newest snapshot pins nothing, however
	 * long it has held it (an idle reader of a quiet root must not be
	 * killed at the next commit). */
	if (*e != s->epoch_last || *e >= tick) {
		s->epoch_last = *e;
		s->behind = false;
		s->pin_warned = false;
	}
	if (*e < tick && !s->behind) {
		s->behind = true;
		s->epoch_since = now;
	}
	if (s->revoked_tick) {
		/* Back once it announced a snapshot at or after the revocation:
		 * it read the revocation first (sync/worker.c, import_to). */
		if (*e != PORT_OFFLINE && *e >= s->revoked_tick) {
			s->revoked_tick = 0;
			r->wtab_dirty = true;
		} else {
			*e = PORT_OFFLINE;
		}
	} else if (*e != PORT_OFFLINE && *e < tick &&
		   ((r->max_pin_ns > 0 && now - s->epoch_since > r->max_pin_ns) ||
		    (r->max_pin_bytes > 0 && pinned > r->max_pin_bytes))) {
		static const char *names[] = {"wait", "kill", "revoke"};
		if (!s->pin_warned)
			warn(r,
			     "worker slot %u pid %d has held snapshot %llu for %lld ms (tick %llu), keeping "
			     "%llu retired bytes; policy %s",
			     idx, (int)s->pid, (unsigned long long)*e,
			     (long long)((now - s->epoch_since) / 1000000), (unsigned long long)tick,
			     (unsigned long long)pinned, names[r->policy]);
		s->pin_warned = true;
		if (r->policy == SHMSYNC_STALL_KILL && !s->kill_sent) {
			if (syscall(SYS_pidfd_send_signal, s->pidfd, SIGKILL, NULL, 0) == 0)
				s->kill_sent = true;
		} else if (r->policy == SHMSYNC_STALL_REVOKE) {
			/* The flag first, then (after the fence in reclaim's caller
			 * order) anything its exclusion lets us free: a reader that
			 * saw freed memory then sees the flag. */
			s->revoked_tick = tick;
			atomic_fetch_add_explicit(&r->wtab->e[idx].revoked, 1, memory_order_seq_cst);
			r->wtab_dirty = true;
			*e = PORT_OFFLINE;
		}
	}
}

/* A cursor that keeps more than max_retained_log_bytes of the log stops
 * counting: the log moves on and the worker gets a reset. */
static void log_policy(shmsync_root *r, unsigned idx, uint64_t tick, uint64_t *c)
{
	struct slot *s = &r->slots[idx];
	if (r->max_retained_log > 0 && *c != PORT_OFFLINE) {
		uint64_t kept = shm_log_bytes_since(r->shm, *c);
		if (kept > r->max_retained_log) {
			if (!s->log_warned)
				warn(r,
				     "worker slot %u pid %d keeps %llu bytes of change log (cursor %llu, "
				     "tick %llu): "
				     "its cursor no longer holds the log; it will get a reset",
				     idx, (int)s->pid, (unsigned long long)kept, (unsigned long long)*c,
				     (unsigned long long)tick);
			s->log_warned = true;
			*c = PORT_OFFLINE;
		} else {
			s->log_warned = false;
		}
	}
}

/* Both policies for one live slot: returns the epoch and cursor the
 * minimum may count. */
static void apply_policies(shmsync_root *r, unsigned idx, uint64_t tick, int64_t now, uint64_t pinned,
			   uint64_t *e, uint64_t *c)
{
	pin_policy(r, idx, tick, now, pinned, e);
	log_policy(r, idx, tick, c);
}

static void reclaim_step(shmsync_root *r, size_t budget)
{
	uint64_t tick = shm_root_tick(r->shm);
	uint64_t min_e = UINT64_MAX, min_c = UINT64_MAX;
	int64_t now = sig_now_ns();
	/* Pairs with the worker's fence between announcing its epoch and
	 * re-reading the tick (sync/worker.c, worker_go_online). */
	atomic_thread_fence(memory_order_seq_cst);
	for (unsigned j = 0; j < r->nlive; j++) {
		struct slot *s = &r->slots[r->live[j]];
		uint64_t e = atomic_load_explicit(&s->port->read_epoch, memory_order_acquire);
		uint64_t c = atomic_load_explicit(&s->port->cursor, memory_order_acquire);
		/* A position from the future is a lie that only hurts its
		 * teller; clamp it so the arithmetic stays sane. */
		if (e != PORT_OFFLINE && e > tick)
			e = tick;
		if (c > tick)
			c = tick;
		s->epoch = e;
		s->cursor = c;
		r->live_epochs[j] = e == PORT_OFFLINE ? UINT64_MAX : e;
	}
	if (r->max_pin_bytes > 0)
		shm_retired_bytes_after(r->shm, r->live_epochs, r->live_pinned, r->nlive);
	uint32_t exporters = 0;
	for (unsigned j = 0; j < r->nlive; j++) {
		unsigned i = r->live[j];
		struct slot *s = &r->slots[i];
		uint64_t e = s->epoch, c = s->cursor;
		exporters += s->exported_at && now - s->exported_at < SYNC_EXPORTER_WINDOW_NS;
		apply_policies(r, i, tick, now, r->max_pin_bytes > 0 ? r->live_pinned[j] : 0, &e, &c);
		if (e < min_e)
			min_e = e;
		if (c < min_c)
			min_c = c;
	}
	/* A snapshot being written (sync/root_repl.c) reads at its tick. */
	uint64_t pin = atomic_load_explicit(&r->repl_pin, memory_order_acquire);
	if (r->repl && pin < min_e)
		min_e = pin;
	/* A revocation's flag is visible before anything it lets us free. */
	atomic_thread_fence(memory_order_seq_cst);
	r->min_epoch = min_e;
	r->min_cursor = min_c;
	struct sync_shared *sh = r->shared;
	atomic_store_explicit(&sh->stat_min_epoch, min_e, memory_order_relaxed);
	atomic_store_explicit(&sh->stat_workers, r->nlive, memory_order_relaxed);
	atomic_store_explicit(&sh->hint_exporters, exporters, memory_order_relaxed);
	atomic_store_explicit(&sh->stat_signal, (uint32_t)r->signal, memory_order_relaxed);
	/* smaps is a walk of every mapping: once a second is plenty. */
	if (now - r->last_huge_check > 1000000000LL) {
		uint64_t huge = 0;
		r->last_huge_check = now;
		if (shm_seg_huge_bytes(shm_root_seg(r->shm), &huge) == 0)
			atomic_store_explicit(&sh->stat_huge_bytes, huge, memory_order_relaxed);
	}
	struct shm_reclaim_report rep;
	if (shm_reclaim(r->shm, min_e, min_c, budget, &rep) == 0)
		r->reclaim_more = rep.more;
	r->last_idle_reclaim = now;
	if (r->wtab_dirty || r->last_idle_reclaim - r->last_wtab > WTAB_EVERY_NS) {
		r->wtab_dirty = false;
		root_publish_wtab(r);
	}
}

/* Steps of `budget` objects, each after a fresh scan of the positions (the
 * contract of shm_reclaim), until done or RECLAIM_SLICE_NS has passed: a
 * step stays well under a millisecond, and a busy root still frees as fast
 * as group commits retire. */
void root_reclaim(shmsync_root *r, size_t budget)
{
	int64_t until = sig_now_ns() + RECLAIM_SLICE_NS;
	do
		reclaim_step(r, budget);
	while (r->reclaim_more && budget && sig_now_ns() < until);
}
