/* The root's commit path: drain the export rings fairly, apply each batch
 * record (copied out of the ring first: sync/wire.h), group the batches of
 * a round into one tick, publish it, write the acks and wake the workers.
 * This is the hot path: it branches on nothing about how the root waits. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "root.h"

#define PER_SLOT_ROUND 8 /* batches one worker may have committed per round */
#define BULK_BYTES 4096  /* records of one group commit that make it a bulk load (root.h) */

static int ack_add(shmsync_root *r, struct slot *s, uint64_t seq, int64_t result)
{
	if (r->nacks == r->acks_cap) {
		size_t cap = r->acks_cap ? r->acks_cap * 2 : 256;
		struct ack_pending *a = realloc(r->acks, cap * sizeof(*a));
		if (!a)
			return -ENOMEM;
		r->acks = a;
		r->acks_cap = cap;
	}
	r->acks[r->nacks++] = (struct ack_pending){(uint32_t)(s - r->slots), s->gen, seq, result};
	return 0;
}

/* Bumps the tick futex word, then wakes whoever may sleep on it. The
 * FUTEX_WAKE call is made only when a worker said it may sleep (its
 * wants_tick_wake, read after the bump and a full fence: see want_tick_wake
 * in sync/worker_wait.c); a busy round trip is not worth a system call. */
void root_wake_workers(shmsync_root *r)
{
	atomic_fetch_add_explicit(&r->shared->tick_futex, 1, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	bool futex_wake = false;
	for (unsigned j = 0; j < r->nlive; j++)
		if (atomic_load_explicit(&r->slots[r->live[j]].port->wants_tick_wake, memory_order_relaxed)) {
			futex_wake = true;
			break;
		}
	if (futex_wake)
		sig_futex_wake(&r->shared->tick_futex, INT_MAX);
	for (unsigned j = 0; j < r->nlive; j++) {
		struct slot *s = &r->slots[r->live[j]];
		if (s->fdwake_fd >= 0 &&
		    atomic_load_explicit(&s->port->wants_fd_wake, memory_order_relaxed)) {
			char one = 1;
			if (send(s->fdwake_fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
				/* Full queue: the worker is readable already. */
			}
		}
	}
}

/* Publishes the group (if anything was applied), then writes the acks, then
 * wakes: a worker woken for its ack finds it. (shm_commit_publish pushes
 * what importers read next, the published words and the tick's records,
 * to the shared cache itself.) */
void root_write_ack(shmsync_root *r, uint32_t slot, uint32_t gen, uint64_t seq, int64_t result)
{
	struct slot *s = &r->slots[slot];
	if (!s->used || s->gen != gen)
		return;
	struct port_ack *pa = &s->acks[seq % PORT_NACKS];
	atomic_store_explicit(&pa->result, result, memory_order_relaxed);
	atomic_store_explicit(&pa->seq, seq, memory_order_relaxed);
	atomic_store_explicit(&s->port->acked_seq, seq, memory_order_release);
}

void root_finish_group(shmsync_root *r)
{
	uint64_t tick = 0;
	int pub = shm_commit_publish(r->shm, &tick);
	if (pub == 1)
		r->ticks++;
	bool acks = r->nacks != 0;
	if (r->repl)
		/* A durable leader keeps the acks until JetStream has the tick. */
		root_repl_group_done(r, pub == 1 ? tick : 0);
	for (size_t i = 0; i < r->nacks; i++) {
		struct ack_pending *a = &r->acks[i];
		root_write_ack(r, a->slot, a->gen, a->seq, a->result == 0 ? (int64_t)tick : a->result);
	}
	if (pub == 1 || acks)
		root_wake_workers(r);
	r->nacks = 0;
}

/* Applies one batch record; the record is in r->rec (our copy). */
static void apply_record(shmsync_root *r, struct slot *s, size_t len)
{
	size_t nops = 0, failed = 0;
	uint64_t seq = 0, expected = s->next_seq++;
	int rc = wire_decode(r->rec, len, r->ops, WIRE_MAX_OPS, &nops, &seq);
	if (rc == 0 && seq != expected)
		rc = -EPROTO;
	if (r->repl_role == REPL_ROLE_FOLLOWER) {
		/* Only the leader commits: its answer acks the batch. */
		r->batches++;
		root_repl_forward(r, s, expected, r->rec, len, rc);
		return;
	}
	if (rc == 0) {
		rc = shm_apply_batch(r->shm, r->ops, nops, &failed);
		if (rc == -ENOBUFS) {
			/* This tick's share of the log is full: publish it and
			 * apply the batch to the next one. */
			root_finish_group(r);
			shm_commit_begin(r->shm);
			rc = shm_apply_batch(r->shm, r->ops, nops, &failed);
		}
	}
	if (rc == 0 && r->repl_role == REPL_ROLE_LEADER)
		root_repl_record(r, r->rec, len);
	r->batches++;
	ack_add(r, s, expected, rc);
}

/* Drains rings round-robin, PER_SLOT_ROUND batches per worker per round, so
 * no worker starves another; at most max_group batches per tick. With
 * `only`, drains that slot alone (it is being released). Returns the number
 * of batches taken. */
int root_drain_and_commit(shmsync_root *r, struct slot *only)
{
	if (r->repl && !only && !root_repl_may_commit(r))
		return 0; /* the publish window is full: JetStream's acks reopen it */
	if (shm_commit_begin(r->shm) < 0)
		return 0;
	unsigned taken = 0;
	size_t bytes = 0;
	for (bool progress = true; progress && taken < r->max_group;) {
		progress = false;
		for (unsigned i = 0; i < (only ? 1 : r->nlive) && taken < r->max_group; i++) {
			struct slot *s = only ? only : &r->slots[r->live[(r->rr + i) % r->nlive]];
			if (!s->live || s->hostile)
				continue;
			for (unsigned k = 0; k < PER_SLOT_ROUND && taken < r->max_group; k++) {
				size_t len;
				int rc = ring_get(s->port, s->ring, s->ring_size, &s->tail, r->rec,
						  r->rec_cap, &len);
				if (rc == -EAGAIN)
					break;
				if (rc == -EPROTO) {
					/* The framing is garbage: nothing after it can be
					 * trusted. Drop it all and say so in an ack. */
					uint64_t head = atomic_load_explicit(&s->port->ring_head,
									     memory_order_acquire);
					if (head >= s->tail && head - s->tail <= s->ring_size &&
					    head % 8 == 0)
						s->tail = head;
					else
						s->hostile = true; /* no usable head: cut it off */
					ack_add(r, s, s->next_seq++, -EPROTO);
					atomic_store_explicit(&s->port->ring_tail, s->tail,
							      memory_order_release);
					taken++;
					progress = true;
					break;
				}
				apply_record(r, s, len);
				bytes += len;
				atomic_store_explicit(&s->port->ring_tail, s->tail, memory_order_release);
				s->exported_now = true;
				taken++;
				progress = true;
			}
			if (only)
				break;
		}
	}
	r->rr++;
	if (r->repl_role == REPL_ROLE_LEADER && !only && root_repl_has_forwarded(r)) {
		root_repl_apply_forwarded(r);
		taken++;
	}
	root_finish_group(r);
	/* The exporters' stamps, read from the clock after the tick is out:
	 * a clock read between a batch and its publication was on every round
	 * trip's path. */
	if (taken) {
		r->bulk = bytes >= BULK_BYTES;
		int64_t now = sig_now_ns();
		for (unsigned i = 0; i < (only ? 1 : r->nlive); i++) {
			struct slot *s = only ? only : &r->slots[r->live[i]];
			if (s->exported_now) {
				s->exported_at = now;
				s->exported_now = false;
			}
		}
	}
	if (!only)
		/* Backwards: a release moves the last entry into its place. */
		for (unsigned j = r->nlive; j-- > 0;)
			if (j < r->nlive && r->slots[r->live[j]].hostile)
				root_slot_release(r, &r->slots[r->live[j]]);
	return (int)taken;
}
