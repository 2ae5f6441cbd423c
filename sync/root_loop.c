/* The root's loop: handle events, drain and commit, reclaim, and sleep when
 * there is nothing to do. How it waits is its backend's business
 * (root_uring.c, root_epoll.c: struct root_backend in root.h); the sleep
 * protocol around the wait is here, the same for both.
 *
 * The sleep protocol (docs/ARCHITECTURE.md, "Waking the root"): the root arms
 * a wait on every doorbell with the value it last saw, raises root_sleeping
 * in every port, issues a full fence and rescans every ring; only then does
 * it sleep. A worker publishes its ring head, adds one to its doorbell,
 * issues a full fence and reads root_sleeping; if it is raised it wakes the
 * root. Either the root's rescan sees the new head, or the worker sees the
 * flag and its wake finds the armed wait (armed before the flag was raised);
 * and an armed wait whose value already changed completes at once.
 */
#include <sched.h>
#include <unistd.h>

#include "repl.h"
#include "root.h"

#define SPIN_NS 20000 /* a root with nothing to do spins this long before it sleeps */

/*
 * Adaptive polling. A request/answer exchange through the root costs four
 * wake-ups when everyone sleeps (A -> root, root -> B, B -> root, root ->
 * A), each tens of microseconds across cores. When the next batch tends to
 * come soon after a commit (B answering what the commit showed it), the
 * root keeps polling its rings after the commit for about twice that gap,
 * so B's and then A's batches find it awake: two wake-ups saved.
 *  - Only a gap shorter than ANSWER_MAX_NS counts, and the poll never lasts
 *    longer than that after a commit: the root spends at most ANSWER_MAX_NS
 *    of CPU per commit, and none at all when nothing is committed (an idle
 *    root still wakes only for its timer and spins SPIN_NS).
 *  - POLL_MISSES_MAX long polls in a row that find nothing stop it until a
 *    quick gap is seen again.
 *  - While it polls that long, the root yields its CPU every ROOT_POLL_YIELD_NS,
 *    so a worker that shares its core is not held back by it.
 */
#define ANSWER_MAX_NS 150000
#define POLL_MISSES_MAX 4
#define ROOT_POLL_YIELD_NS 10000

/* Warming (shm_root_warm): pages an idle root touches before it spins
 * again (~75 us where a first touch costs 4.6 us, a few us where it is
 * cheap). After a bulk commit (root.h) a poll touches one page per look at
 * the clock from its start: a writer filling its next batch of a bulk load
 * (tens of us) leaves the root time to touch the pages that batch will
 * need, so the commit pays for fewer of them, and a bulk load needs those
 * pages anyway. Waiting 5 us before the first touch measured worse (median
 * 2.24 against 2.47 M writes/s, 5 interleaved pairs). Small commits, those
 * of an exchange waiting for its answer, never meet a touch in a poll: one
 * would add up to a page's first touch (4.6 us on this project's VMs) to a
 * round trip. A batch that lands during an idle root's touches waits for
 * one page at most. */
#define WARM_PAGES 16u

static bool rings_pending(shmsync_root *r)
{
	for (unsigned j = 0; j < r->nlive; j++) {
		struct slot *s = &r->slots[r->live[j]];
		/* The next record's first line, asked for beside the head: a
		 * batch's head and its bytes then cross from the worker's core
		 * together instead of one after the other (ring_get reads them
		 * in that order), one cross-core transfer less per batch. */
		__builtin_prefetch(s->ring + (s->tail & (s->ring_size - 1)));
		if (atomic_load_explicit(&s->port->ring_head, memory_order_acquire) != s->tail)
			return true;
	}
	return false;
}

/* The idle timer fired: count it if a ring has work (its doorbell wake was
 * lost, or is still on its way), drop silent connections, reclaim. */
void root_on_timer(shmsync_root *r)
{
	if (rings_pending(r))
		atomic_fetch_add_explicit(&r->shared->stat_timer_found_work, 1, memory_order_relaxed);
	root_expire_pending(r);
	root_reclaim(r, RECLAIM_BUDGET);
}

struct slot *root_slot_of(shmsync_root *r, uint64_t data)
{
	unsigned idx = root_ud_idx(data);
	if (idx >= r->max_workers)
		return NULL;
	struct slot *s = &r->slots[idx];
	return s->used && s->gen == (uint32_t)data ? s : NULL;
}

/* Lowering flags that are already down is skipped: a busy root would
 * otherwise write every port's header on every turn. */
static void set_sleeping(shmsync_root *r, uint32_t v)
{
	if (!v && !r->sleeping_flags)
		return;
	for (unsigned j = 0; j < r->nlive; j++)
		atomic_store_explicit(&r->slots[r->live[j]].port->root_sleeping, v, memory_order_relaxed);
	r->sleeping_flags = v != 0;
}

static bool something_retired(shmsync_root *r)
{
	struct shm_stats st;
	shm_root_stats(r->shm, &st);
	return st.retired_objects > 0 || st.log_bytes_used > 0;
}

static bool has_pending(shmsync_root *r)
{
	for (unsigned i = 0; i < MAX_PENDING; i++)
		if (r->pend[i].fd >= 0)
			return true;
	return false;
}

int shmsync_root_process(shmsync_root *r, unsigned max_events)
{
	/* Awake: workers need not ring the doorbell until we sleep again. */
	bool slept = r->sleeping_flags;
	set_sleeping(r, 0);
	/* One indirect call per turn: io_uring reaps its completions; epoll
	 * looks at its events only now and then while busy. */
	int events = r->be->process(r, max_events, slept);
	int taken = 0;
	if (r->repl) {
		int n = root_repl_process(r);
		if (n < 0)
			return n;
		events += n;
	}
	if (r->nlive || (r->repl && root_repl_has_forwarded(r)))
		taken = root_drain_and_commit(r, NULL);
	int64_t now = sig_now_ns();
	if (taken) {
		int64_t gap = now - r->last_commit;
		if (gap < ANSWER_MAX_NS) {
			r->answer_gap = r->answer_gap ? (3 * r->answer_gap + gap) / 4 : gap;
			r->poll_misses = 0;
		}
		r->last_commit = now;
	}
	bool idle_due = now - r->last_idle_reclaim > IDLE_RECLAIM_NS;
	/* On its own clock: a busy root reclaims after every commit, and
	 * must still drop peers that never said hello. */
	if (now - r->last_expire > IDLE_RECLAIM_NS) {
		r->last_expire = now;
		root_expire_pending(r);
	}
	if (taken || r->reclaim_more || idle_due)
		root_reclaim(r, RECLAIM_BUDGET);
	/* New pages before a commit needs them, while no batch waits on it. */
	if (shm_root_grow_ahead(r->shm) > 0)
		return events + taken + 1;
	return events + taken + (r->reclaim_more ? 1 : 0);
}

/* The first half of the sleep protocol: arm every wait, raise the sleeping
 * flags, full fence, rescan. False if there is work after all (the flags
 * are then lowered again). */
static bool prepare_sleep(shmsync_root *r, bool *want_timer)
{
	*want_timer = something_retired(r) || has_pending(r) || root_repl_waiting(r);
	r->be->arm(r, *want_timer);
	set_sleeping(r, 1);
	atomic_thread_fence(memory_order_seq_cst);
	if (rings_pending(r) || r->stop || r->reclaim_more || (r->repl && repl_has_events(r->repl))) {
		set_sleeping(r, 0);
		return false;
	}
	return true;
}

/* How long to poll before sleeping: SPIN_NS, or longer right after a commit
 * while answers have been coming quickly (adaptive polling, above). */
static int64_t poll_ns(shmsync_root *r, int64_t now)
{
	if (!r->answer_gap || r->poll_misses >= POLL_MISSES_MAX)
		return SPIN_NS;
	int64_t window = 2 * r->answer_gap + SPIN_NS;
	if (window > ANSWER_MAX_NS)
		window = ANSWER_MAX_NS;
	int64_t left = r->last_commit + window - now;
	return left > SPIN_NS ? left : SPIN_NS;
}

static void sleep_once(shmsync_root *r)
{
	/* Spin briefly first: a wake that reaches a sleeper costs tens of
	 * microseconds on both sides. */
	int64_t start = sig_now_ns(), spin = poll_ns(r, start), end = start + spin, yielded = start;
	bool long_poll = spin > SPIN_NS, warm_more = true, found = false;
	unsigned poll_warmed = 0;
	for (unsigned turn = 1;; turn++) {
		if (rings_pending(r)) {
			if (long_poll)
				r->poll_misses = 0;
			found = true;
			break;
		}
		if (turn % 16)
			continue;
		int64_t now = sig_now_ns();
		if (now >= end)
			break;
		if (warm_more && r->bulk) {
			warm_more = shm_root_warm(r->shm, 1) > 0;
			poll_warmed += warm_more;
		}
		if (long_poll && now - yielded >= ROOT_POLL_YIELD_NS) {
			yielded = now;
			sched_yield();
		}
	}
	if (poll_warmed)
		atomic_fetch_add_explicit(&r->shared->stat_warmed_poll, poll_warmed, memory_order_relaxed);
	if (found)
		return;
	if (long_poll)
		r->poll_misses++;
	/* Idle: touch the pages the next commits will write rather than
	 * sleep (shm_root_warm), looking at the rings between pages, so a
	 * batch waits for one page at most. */
	unsigned warmed = 0;
	while (warmed < WARM_PAGES && !rings_pending(r) && shm_root_warm(r->shm, 1) > 0)
		warmed++;
	if (warmed) {
		atomic_fetch_add_explicit(&r->shared->stat_warmed_idle, warmed, memory_order_relaxed);
		return;
	}
	bool want_timer;
	if (!prepare_sleep(r, &want_timer))
		return;
	r->be->wait(r);
	set_sleeping(r, 0);
}

int shmsync_root_run(shmsync_root *r)
{
	while (!r->stop) {
		int n = shmsync_root_process(r, 0);
		if (n < 0)
			return n;
		if (n == 0 && !r->stop)
			sleep_once(r);
	}
	r->stop = 0;
	return 0;
}

int shmsync_root_fd(shmsync_root *r)
{
	bool want_timer;
	if (!prepare_sleep(r, &want_timer)) {
		/* Work is waiting: make the fd readable now. */
		uint64_t one = 1;
		if (write(r->wake_fd, &one, sizeof(one)) < 0) {
			/* Already readable. */
		}
	}
	return r->be->fd(r);
}

void shmsync_root_stop(shmsync_root *r)
{
	r->stop = 1;
	uint64_t one = 1;
	if (write(r->wake_fd, &one, sizeof(one)) < 0) {
		/* The counter is full: the loop is awake anyway. */
	}
}
