/* The root's side of replication (repl/repl.h has the stream's side).
 *
 * Leader: every batch applied to a tick is kept (as the wire record the
 * worker sent); when the tick is published, the records go to the stream
 * as that tick's message. A follower replays them in the same order at the
 * same tick, so it reaches the same state: conditional operations (put if
 * absent, put if tick, add) decide the same way, because the state and the
 * tick numbers they look at are the same.
 *
 * Follower: commits only what comes from the stream. A batch from one of
 * its workers goes to the leader; the worker's ack carries the leader's
 * tick, which the follower reaches when it applies that tick, so
 * shmsync_import_until(tick) reads the worker's own write.
 *
 * Acks stay in order per worker (acked_seq says every seq up to it has its
 * ack): acks that must wait (for JetStream's store, for the leader's answer)
 * wait in one FIFO, r->held, and are written as a prefix.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl.h"
#include "root.h"

#define RESEND_NS 2000000000LL           /* an unanswered forward is sent again */
#define FORWARD_TIMEOUT_NS 20000000000LL /* past a JetStream election and a durable store */
#define RETRY_NS 100000000LL             /* a resync the cluster did not answer: again after this */
#define CATCH_UP_NS 30000000000LL
#define CATCH_UP_STALL_NS 500000000LL

static void say(shmsync_root *r, const char *msg)
{
	if (r->warn)
		r->warn(msg, r->warn_arg);
	else
		fprintf(stderr, "shmsync root: %s\n", msg);
}

/* ---- the held FIFO ---------------------------------------------------- */

static struct held_ack *held_push(shmsync_root *r)
{
	if (r->held_head + r->held_n == r->held_cap) {
		if (r->held_head) {
			memmove(r->held, r->held + r->held_head, r->held_n * sizeof(*r->held));
			r->held_head = 0;
		} else {
			size_t cap = r->held_cap ? r->held_cap * 2 : 256;
			struct held_ack *h = realloc(r->held, cap * sizeof(*h));
			if (!h)
				return NULL;
			r->held = h;
			r->held_cap = cap;
		}
	}
	struct held_ack *h = &r->held[r->held_head + r->held_n++];
	memset(h, 0, sizeof(*h));
	return h;
}

static void held_write(shmsync_root *r, struct held_ack *h)
{
	if (h->reply) {
		repl_reply(r->repl, h->reply, h->result);
		free(h->reply);
		h->reply = NULL;
		if (h->origin >= 0 && (unsigned)h->origin < r->norigins) {
			struct origin *o = &r->origins[h->origin];
			o->answered[h->id % ORIGIN_CACHE].id = h->id;
			o->answered[h->id % ORIGIN_CACHE].result = h->result;
		}
	} else {
		root_write_ack(r, h->slot, h->gen, h->seq, h->result);
	}
}

/* Writes the ready prefix: a leader's acks of stored ticks, a follower's
 * answered (or timed out) forwards. */
static unsigned held_release(shmsync_root *r, uint64_t stored, int64_t now)
{
	unsigned n = 0;
	while (r->held_n) {
		struct held_ack *h = &r->held[r->held_head];
		if (h->forward) {
			if (!h->done && now < h->deadline)
				break;
			if (!h->done) {
				/* Said, not only acked: a worker that stopped waiting
				 * earlier sees nothing, and an operator needs to know
				 * the leader was out of reach (or the answers were). */
				char msg[160];
				snprintf(
					msg, sizeof(msg),
					"replication: forward %llu (a worker's batch) had no answer from the "
					"leader in %lld s; its outcome is unknown",
					(unsigned long long)h->id,
					(long long)(FORWARD_TIMEOUT_NS / 1000000000));
				say(r, msg);
				h->result = -ETIMEDOUT;
			}
		} else if (h->tick > stored) {
			break;
		}
		held_write(r, h);
		free(h->rec);
		h->rec = NULL;
		r->held_head++;
		r->held_n--;
		n++;
	}
	if (!r->held_n)
		r->held_head = 0;
	return n;
}

/* Writes what the held FIFO has ready and wakes the workers it answered:
 * from the root's loop, and from a catch-up that holds the root's thread. */
static void held_serve(shmsync_root *r, int64_t now)
{
	if (!r->held_n)
		return;
	struct repl_stats st;
	repl_stats(r->repl, &st);
	if (held_release(r, st.stored_tick, now))
		root_wake_workers(r);
}

/* ---- leader ------------------------------------------------------------ */

void root_repl_record(shmsync_root *r, const uint8_t *rec, size_t len)
{
	size_t need = r->rbuf_len + 8 + len;
	if (need > r->rbuf_cap) {
		size_t cap = r->rbuf_cap ? r->rbuf_cap : 64 << 10;
		while (cap < need)
			cap *= 2;
		uint8_t *b = realloc(r->rbuf, cap);
		if (!b) {
			/* Cannot happen quietly: the tick would be missing a batch. */
			say(r, "replication: out of memory for a tick's message; stopping");
			r->stop = 1;
			return;
		}
		r->rbuf = b;
		r->rbuf_cap = cap;
	}
	uint32_t n = (uint32_t)len, zero = 0;
	memcpy(r->rbuf + r->rbuf_len, &n, 4);
	memcpy(r->rbuf + r->rbuf_len + 4, &zero, 4);
	memcpy(r->rbuf + r->rbuf_len + 8, rec, len);
	r->rbuf_len = need;
	r->rbuf_n++;
}

void root_repl_group_done(shmsync_root *r, uint64_t tick)
{
	if (r->repl_role != REPL_ROLE_LEADER)
		return;
	if (tick) {
		struct repl_hdr h;
		repl_hdr_fill(&h, REPL_TICK, r->rbuf_n, tick, shm_log_size(r->shm), 0, 0);
		memcpy(r->rbuf, &h, sizeof(h));
		if (repl_publish_tick(r->repl, tick, r->rbuf, r->rbuf_len) < 0) {
			say(r, "replication: out of memory publishing a tick; stopping");
			r->stop = 1;
		}
	}
	r->rbuf_len = sizeof(struct repl_hdr);
	r->rbuf_n = 0;
	uint64_t at = tick ? tick : shm_root_tick(r->shm);
	if (r->repl_durable) {
		for (size_t i = 0; i < r->nacks; i++) {
			struct held_ack *h = held_push(r);
			if (!h) {
				r->nacks = i; /* the rest are written now: better early than never */
				break;
			}
			struct ack_pending *a = &r->acks[i];
			*h = (struct held_ack){.slot = a->slot, .gen = a->gen, .seq = a->seq, .tick = at};
			h->result = a->result == 0 ? (int64_t)at : a->result;
		}
		r->nacks = 0;
	}
	for (size_t i = 0; i < r->nanswers; i++) {
		struct held_ack *a = &r->answers[i];
		if (a->result == 0)
			a->result = (int64_t)at;
		a->tick = at;
		struct held_ack *h = r->repl_durable ? held_push(r) : NULL;
		if (h)
			*h = *a;
		else
			held_write(r, a);
	}
	r->nanswers = 0;
}

bool root_repl_may_commit(shmsync_root *r)
{
	return r->repl_role != REPL_ROLE_LEADER || !repl_window_full(r->repl);
}

bool root_repl_has_forwarded(const shmsync_root *r)
{
	return r->fwd_in != NULL;
}

/* A follower's worker's batch, applied here like one of our own workers'
 * (the same checks: it came over the network from anyone who can publish
 * to the subject). */
static int apply_one_forwarded(shmsync_root *r, const uint8_t *data, size_t len)
{
	if (len > r->rec_cap || len > r->max_batch + sizeof(struct wire_batch))
		return -E2BIG;
	memcpy(r->rec, data, len);
	size_t nops = 0, failed = 0;
	uint64_t seq;
	int rc = wire_decode(r->rec, len, r->ops, WIRE_MAX_OPS, &nops, &seq);
	if (rc < 0)
		return rc;
	rc = shm_apply_batch(r->shm, r->ops, nops, &failed);
	if (rc == -ENOBUFS) {
		root_finish_group(r);
		shm_commit_begin(r->shm);
		rc = shm_apply_batch(r->shm, r->ops, nops, &failed);
	}
	if (rc == 0)
		root_repl_record(r, r->rec, len);
	return rc;
}

void root_repl_apply_forwarded(shmsync_root *r)
{
	for (unsigned k = 0; r->fwd_in && k < r->max_group; k++) {
		struct repl_ev *ev = r->fwd_in;
		r->fwd_in = ev->next;
		if (!r->fwd_in)
			r->fwd_in_tail = NULL;
		int rc = apply_one_forwarded(r, ev->data, ev->len);
		r->batches++;
		if (r->nanswers == r->answers_cap) {
			size_t cap = r->answers_cap ? r->answers_cap * 2 : 64;
			struct held_ack *a = realloc(r->answers, cap * sizeof(*a));
			if (!a) {
				repl_ev_free(ev);
				continue; /* no answer: the follower times out */
			}
			r->answers = a;
			r->answers_cap = cap;
		}
		r->answers[r->nanswers++] = (struct held_ack){
			.result = rc, .reply = ev->reply, .id = ev->id, .origin = (int)ev->tick};
		ev->reply = NULL;
		repl_ev_free(ev);
	}
}

/* The number that ends reply[0..*end): *end moves to the dot before it. */
static bool last_number(const char *reply, size_t *end, uint64_t *v)
{
	size_t i = *end;
	while (i > 0 && reply[i - 1] >= '0' && reply[i - 1] <= '9')
		i--;
	if (i == *end || *end - i > 19 || i < 2 || reply[i - 1] != '.')
		return false;
	uint64_t n = 0;
	for (size_t k = i; k < *end; k++)
		n = n * 10 + (uint64_t)(reply[k] - '0');
	*v = n;
	*end = i - 1;
	return true;
}

/* A forward's reply subject, <inbox>.<epoch>.<floor>.<id>: which follower
 * sent it (its state in r->origins, made on first sight), its epoch, the
 * lowest id it still sends, and the forward's id. */
static int origin_of(shmsync_root *r, const char *reply, uint64_t *epoch, uint64_t *floor, uint64_t *id)
{
	size_t n = strlen(reply);
	if (!last_number(reply, &n, id) || !last_number(reply, &n, floor) || !last_number(reply, &n, epoch))
		return -1;
	if (*id == 0 || n >= sizeof(r->origins[0].inbox))
		return -1;
	for (unsigned i = 0; i < r->norigins; i++)
		if (strncmp(r->origins[i].inbox, reply, n) == 0 && r->origins[i].inbox[n] == 0)
			return (int)i;
	if (!r->origins) {
		r->origins = calloc(MAX_ORIGINS, sizeof(*r->origins));
		if (!r->origins)
			return -1;
	}
	/* A full table forgets the oldest follower: a resend of its gets
	 * applied as new only if it comes after this many others appeared. */
	unsigned i = r->norigins < MAX_ORIGINS ? r->norigins++ : (unsigned)(*id % MAX_ORIGINS);
	struct origin *o = &r->origins[i];
	memset(o, 0, sizeof(*o));
	memcpy(o->inbox, reply, n);
	o->next = *id;
	return (int)i;
}

/* Should this forwarded batch be applied? Sent again after its answer
 * went out: the answer again. Sent again before: nothing (the answer is
 * on its way, to the same subject). Ahead of one that was lost: nothing
 * (the follower sends them again, in order). From another leader's epoch:
 * -ETIMEDOUT, which the follower's worker reads as "unknown" (the old
 * leader may have applied it).
 *
 * The floor keeps a follower from wedging: it stops sending an id once
 * that id's worker was told "unknown" (20 s without an answer, an answer
 * from another epoch, a send that failed). An id this leader never got
 * would otherwise hold back every later one for good. Skipping to the
 * floor is safe: the ids below it are never sent again, and a late copy
 * of one is below `next`, so it is not applied; a worker that retries
 * (with put_if_tick) does so in a later id, applied after that decision.
 * A floor above the forward's own id is not the follower's (it sends only
 * ids at or above its floor) and is ignored. */
static bool take_forward(shmsync_root *r, struct repl_ev *ev)
{
	uint64_t epoch = 0, floor = 0, id = 0;
	int oi = origin_of(r, ev->reply, &epoch, &floor, &id);
	if (oi < 0)
		return false;
	struct origin *o = &r->origins[oi];
	if (epoch != repl_epoch(r->repl)) {
		repl_reply(r->repl, ev->reply, epoch < repl_epoch(r->repl) ? -ETIMEDOUT : -EREMCHG);
		return false;
	}
	if (floor > o->next && floor <= id)
		o->next = floor;
	if (id < o->next) {
		if (o->answered[id % ORIGIN_CACHE].id == id)
			repl_reply(r->repl, ev->reply, o->answered[id % ORIGIN_CACHE].result);
		return false;
	}
	if (id > o->next)
		return false;
	o->next++;
	ev->id = id;
	ev->tick = (uint64_t)oi;
	return true;
}

/* ---- follower ---------------------------------------------------------- */

/* The lowest id this root still sends: the first forward in the held FIFO
 * (which holds them in id order) that has no answer yet. */
static uint64_t forward_floor(const shmsync_root *r)
{
	for (size_t i = 0; i < r->held_n; i++) {
		const struct held_ack *h = &r->held[r->held_head + i];
		if (h->forward && !h->done)
			return h->id;
	}
	return r->fwd_next_id + 1;
}

void root_repl_forward(shmsync_root *r, struct slot *s, uint64_t seq, const uint8_t *rec, size_t len, int rc)
{
	struct held_ack *h = held_push(r);
	if (!h) {
		root_write_ack(r, (uint32_t)(s - r->slots), s->gen, seq, -ENOMEM);
		return;
	}
	h->slot = (uint32_t)(s - r->slots);
	h->gen = s->gen;
	h->seq = seq;
	h->id = ++r->fwd_next_id;
	h->forward = true;
	h->origin = -1;
	int64_t now = sig_now_ns();
	h->deadline = now + FORWARD_TIMEOUT_NS;
	h->resend_at = now + RESEND_NS;
	if (rc == 0) {
		h->rec = malloc(len);
		if (!h->rec)
			rc = -ENOMEM;
	}
	if (rc == 0) {
		memcpy(h->rec, rec, len);
		h->rec_len = len;
		rc = repl_forward(r->repl, r->repl_epoch, forward_floor(r), h->id, rec, len);
	}
	if (rc < 0) {
		h->done = true;
		h->result = rc;
	}
}

static void forward_answered(shmsync_root *r, uint64_t id, int64_t result)
{
	if (!r->held_n)
		return;
	/* Forwards are held in id order, one id apart: look where it would be,
	 * then make sure (a leader's acks may sit among them after a takeover). */
	uint64_t first = r->held[r->held_head].id;
	size_t at = id >= first && id - first < r->held_n ? (size_t)(id - first) : r->held_n;
	if (at == r->held_n || !r->held[r->held_head + at].forward || r->held[r->held_head + at].id != id)
		for (at = 0; at < r->held_n; at++)
			if (r->held[r->held_head + at].forward && r->held[r->held_head + at].id == id)
				break;
	if (at == r->held_n)
		return; /* timed out already, answered twice, or not ours */
	struct held_ack *h = &r->held[r->held_head + at];
	h->done = true;
	h->result = result;
}

/* One message of NAME.ticks, in stream order. */
static int apply_stream_msg(shmsync_root *r, const uint8_t *data, size_t len, uint64_t seq, char *msg,
			    size_t msglen)
{
	struct repl_hdr h;
	if (seq && seq <= r->repl_applied_seq)
		return 0; /* a consumer that was replaced delivers it again */
	char why[200];
	int rc = repl_hdr_check(data, len, &h, why, sizeof(why));
	if (rc < 0) {
		snprintf(msg, msglen, "stream sequence %llu, among the ticks: %s", (unsigned long long)seq,
			 why);
		return rc;
	}
	r->repl_applied_seq = seq;
	uint64_t tick = shm_root_tick(r->shm);
	if (h.kind == REPL_LEADER)
		r->repl_epoch = seq; /* forwards now go to this leader's epoch */
	if (h.kind == REPL_LEADER || h.tick <= tick)
		return 0; /* a new leader's marker, or a tick we have (a replay's overlap) */
	if (h.kind != REPL_TICK) {
		snprintf(msg, msglen, "sequence %llu: a message of kind %u among the ticks",
			 (unsigned long long)seq, h.kind);
		return -EPROTO;
	}
	if (h.tick != tick + 1) {
		snprintf(msg, msglen,
			 "tick gap: this root is at tick %llu and the stream's next tick is %llu (sequence "
			 "%llu); "
			 "the ticks between are gone (a follower that fell more than a snapshot interval "
			 "behind: "
			 "restart it, it reloads from the latest snapshot)",
			 (unsigned long long)tick, (unsigned long long)h.tick, (unsigned long long)seq);
		return -EPROTO;
	}
	if (h.a > shm_log_size(r->shm)) {
		snprintf(msg, msglen,
			 "the leader's change log is %llu bytes, this root's %llu: a tick of the leader's "
			 "may not "
			 "fit; start this root with a log of at least %llu bytes",
			 (unsigned long long)h.a, (unsigned long long)shm_log_size(r->shm),
			 (unsigned long long)h.a);
		return -ENOBUFS;
	}
	rc = shm_commit_begin(r->shm);
	if (rc < 0) {
		snprintf(msg, msglen, "tick %llu: %s", (unsigned long long)h.tick, strerror(-rc));
		return rc;
	}
	const uint8_t *body = data + sizeof(h);
	size_t blen = len - sizeof(h), pos = 0;
	for (uint32_t i = 0;; i++) {
		const uint8_t *rec;
		size_t rlen, nops = 0, failed = 0;
		uint64_t wseq;
		rc = repl_tick_next(body, blen, &pos, &rec, &rlen);
		if (rc == 1) {
			rc = i == h.count ? 0 : -EPROTO;
			if (rc < 0)
				snprintf(msg, msglen, "tick %llu: %u batches where the header says %u",
					 (unsigned long long)h.tick, i, h.count);
			break;
		}
		if (rc == 0 && rlen > r->rec_cap)
			rc = -E2BIG;
		if (rc == 0) {
			memcpy(r->rec, rec, rlen);
			rc = wire_decode(r->rec, rlen, r->ops, WIRE_MAX_OPS, &nops, &wseq);
		}
		if (rc == 0)
			rc = shm_apply_batch(r->shm, r->ops, nops, &failed);
		if (rc < 0) {
			snprintf(msg, msglen,
				 "tick %llu, batch %u (sequence %llu) does not apply here: %s; this root's "
				 "state "
				 "differs from the leader's",
				 (unsigned long long)h.tick, i, (unsigned long long)seq, strerror(-rc));
			return rc;
		}
	}
	if (rc < 0)
		return rc;
	/* Even a tick whose batches were all empty is a tick. */
	uint64_t got = 0;
	if (shm_commit_publish(r->shm, &got) != 1 || got != h.tick) {
		snprintf(msg, msglen, "tick %llu published as %llu", (unsigned long long)h.tick,
			 (unsigned long long)got);
		return -EPROTO;
	}
	r->ticks++;
	root_wake_workers(r);
	return 0;
}

/* ---- recovery and roles ------------------------------------------------- */

static int load_chunk(const uint8_t *data, size_t len, void *arg)
{
	shmsync_root *r = arg;
	struct repl_hdr h; /* checked by the reader; copied: libnats's buffer has no alignment */
	memcpy(&h, data, sizeof(h));
	size_t nops = 0, failed = 0;
	int rc = repl_chunk_decode(data + sizeof(h), len - sizeof(h), h.count, r->ops, WIRE_MAX_OPS, &nops);
	if (rc == 0)
		rc = shm_apply_batch(r->shm, r->ops, nops, &failed);
	return rc;
}

/* Applies the stream's ticks after r->repl_applied_seq until the one at
 * `upto` (and whatever came meanwhile). This holds the root's thread (up to
 * CATCH_UP_NS), so the forwards waiting here still get what the loop would
 * give them: an answer that arrives, or -ETIMEDOUT at their deadline. */
static int catch_up(shmsync_root *r, uint64_t upto, char *msg, size_t msglen)
{
	int64_t deadline = sig_now_ns() + CATCH_UP_NS, progress = sig_now_ns();
	while (r->repl_applied_seq < upto) {
		struct repl_ev *ev = repl_wait(r->repl, 200000000);
		held_serve(r, sig_now_ns());
		if (!ev) {
			int64_t now = sig_now_ns();
			if (now > deadline) {
				snprintf(msg, msglen, "replaying stream up to sequence %llu: stuck at %llu",
					 (unsigned long long)upto, (unsigned long long)r->repl_applied_seq);
				return -ETIMEDOUT;
			}
			if (now - progress > CATCH_UP_STALL_NS) {
				/* The consumer may have lived on a node that is gone:
				 * a new one, from where we are (what the old one still
				 * delivers is skipped as already applied). */
				progress = now;
				repl_ticks_stop(r->repl);
				int rc = repl_ticks_follow(r->repl, r->repl_applied_seq, msg, msglen);
				if (rc < 0)
					return rc;
			}
			continue;
		}
		progress = sig_now_ns();
		int rc = 0;
		if (ev->kind == REPL_EV_TICK)
			rc = apply_stream_msg(r, ev->data, ev->len, ev->seq, msg, msglen);
		else if (ev->kind == REPL_EV_FWD_REPLY)
			forward_answered(r, ev->id, ev->result);
		repl_ev_free(ev);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int become_leader(shmsync_root *r, char *msg, size_t msglen)
{
	for (int attempt = 0;; attempt++) {
		uint64_t last = 0, last_tick_seq = 0;
		int rc = repl_last_seq(r->repl, &last, msg, msglen);
		if (rc == 0)
			rc = repl_last_tick_seq(r->repl, &last_tick_seq, msg, msglen);
		if (rc == 0)
			rc = catch_up(r, last_tick_seq, msg, msglen);
		if (rc == 0)
			rc = repl_lead(r->repl, shm_root_tick(r->shm), last, msg, msglen);
		if (rc != -ESTALE || attempt == 3) {
			if (rc == 0) {
				repl_ticks_stop(r->repl);
				r->repl_role = REPL_ROLE_LEADER;
				r->rbuf_len = sizeof(struct repl_hdr);
			}
			return rc;
		}
	}
}

/* The lease is ours: lead. A cluster that does not answer (it may be
 * electing after losing a node) is tried again shortly, still holding the
 * lease and still following; only a stream that cannot be led is fatal. */
static int promote(shmsync_root *r, char *msg, size_t msglen)
{
	int rc = become_leader(r, msg, msglen);
	if (rc == 0) {
		char note[128];
		snprintf(note, sizeof(note), "took over the stream at tick %llu",
			 (unsigned long long)shm_root_tick(r->shm));
		say(r, note);
		return 0;
	}
	if (rc == -ENOLCK) {
		/* Another root took the lease meanwhile: follow on, and wait
		 * for the lease to lapse again. */
		char note[300];
		snprintf(note, sizeof(note), "%s; following on", msg);
		say(r, note);
		msg[0] = 0;
		return 0;
	}
	/* -ESTALE: the leader appended while we caught up; again, until our
	 * marker lands between its appends (then it is fenced). */
	if (rc == -EIO || rc == -ETIMEDOUT || rc == -EAGAIN || rc == -ESTALE) {
		char note[300];
		snprintf(note, sizeof(note), "taking over the stream: %s; trying again", msg);
		say(r, note);
		r->repl_retry_at = sig_now_ns() + RETRY_NS;
		msg[0] = 0;
		return 0;
	}
	return rc;
}

int root_repl_open(shmsync_root *r, const shmsync_root_opts *o, char *msg, size_t msglen)
{
	if (!o->replicate && !o->follow)
		return 0;
	if (o->replicate && o->follow) {
		snprintf(msg, msglen, "replicate and follow exclude each other: a root leads or follows");
		return -EINVAL;
	}
	if (!o->stream) {
		snprintf(msg, msglen, "replication needs a stream name");
		return -EINVAL;
	}
	struct repl_opts ro = {
		.urls = o->replicate ? o->replicate : o->follow,
		.stream = o->stream,
		.follow = o->follow != NULL,
		.durable = o->durable != 0,
		.replicas = o->replicas ? o->replicas : 1,
		.lease_ns = o->lease_ns ? o->lease_ns : 3000000000LL,
		.snapshot_ticks = o->snapshot_ticks ? o->snapshot_ticks : 100000,
		.snapshot_bytes = o->snapshot_bytes ? o->snapshot_bytes : (uint64_t)64 << 20,
		.window = o->repl_window ? o->repl_window : 256,
		.wake_fd = r->wake_fd,
		.id = o->repl_id,
	};
	int rc = repl_open(&r->repl, &ro, msg, msglen);
	if (rc < 0)
		return rc;
	r->repl_durable = ro.durable;
	atomic_store(&r->repl_pin, UINT64_MAX);
	r->rbuf_cap = 64 << 10;
	r->rbuf = malloc(r->rbuf_cap);
	if (!r->rbuf)
		return -ENOMEM;
	r->rbuf_len = sizeof(struct repl_hdr);

	/* Recovery: the latest snapshot, then the ticks after it. */
	int64_t t0 = sig_now_ns();
	struct repl_snapidx idx = {0};
	rc = repl_snapshot_latest(r->repl, &idx, msg, msglen);
	if (rc == 0) {
		rc = shm_root_load_begin(r->shm, idx.tick);
		if (rc == 0)
			rc = repl_snapshot_read(r->repl, &idx, load_chunk, r, msg, msglen);
		if (rc == 0)
			rc = shm_root_load_end(r->shm);
		else if (!msg[0])
			snprintf(msg, msglen, "loading the snapshot at tick %llu: %s",
				 (unsigned long long)idx.tick, strerror(-rc));
		if (rc < 0)
			return rc;
		r->repl_applied_seq = idx.tick_seq;
	} else if (rc != -ENOENT) {
		return rc;
	}
	uint64_t upto = 0;
	rc = repl_last_tick_seq(r->repl, &upto, msg, msglen);
	if (rc == 0)
		rc = repl_ticks_follow(r->repl, r->repl_applied_seq, msg, msglen);
	uint64_t ticks0 = r->ticks;
	if (rc == 0)
		rc = catch_up(r, upto, msg, msglen);
	if (rc < 0)
		return rc;
	if (idx.tick || r->ticks > ticks0) {
		char note[256], snap[64] = "no snapshot";
		if (idx.tick)
			snprintf(snap, sizeof(snap), "the snapshot at tick %llu",
				 (unsigned long long)idx.tick);
		snprintf(note, sizeof(note),
			 "recovered tick %llu from stream %s: %s, then %llu ticks, in %.1f ms",
			 (unsigned long long)shm_root_tick(r->shm), o->stream, snap,
			 (unsigned long long)(r->ticks - ticks0), (double)(sig_now_ns() - t0) / 1e6);
		say(r, note);
	}
	if (o->follow) {
		r->repl_role = REPL_ROLE_FOLLOWER;
		return repl_follow(r->repl, msg, msglen);
	}
	return become_leader(r, msg, msglen);
}

void root_repl_close(shmsync_root *r)
{
	if (!r->repl)
		return;
	repl_close(r->repl);
	r->repl = NULL;
	while (r->fwd_in) {
		struct repl_ev *ev = r->fwd_in;
		r->fwd_in = ev->next;
		repl_ev_free(ev);
	}
	for (size_t i = 0; i < r->held_n; i++) {
		free(r->held[r->held_head + i].reply);
		free(r->held[r->held_head + i].rec);
	}
	free(r->origins);
	for (size_t i = 0; i < r->nanswers; i++)
		free(r->answers[i].reply);
	free(r->held);
	free(r->answers);
	free(r->rbuf);
}

bool root_repl_waiting(const shmsync_root *r)
{
	return r->repl && (r->held_n || r->repl_retry_at);
}

static void publish_stats(shmsync_root *r)
{
	struct repl_stats st;
	repl_stats(r->repl, &st);
	struct sync_shared *sh = r->shared;
	uint64_t tick = shm_root_tick(r->shm);
	atomic_store_explicit(&sh->stat_repl_role, (uint32_t)r->repl_role, memory_order_relaxed);
	atomic_store_explicit(&sh->stat_repl_stored_tick,
			      r->repl_role == REPL_ROLE_LEADER ? st.stored_tick : tick, memory_order_relaxed);
	atomic_store_explicit(
		&sh->stat_repl_lag_ticks,
		r->repl_role == REPL_ROLE_LEADER && tick > st.stored_tick ? tick - st.stored_tick : 0,
		memory_order_relaxed);
	atomic_store_explicit(&sh->stat_repl_lag_bytes, r->repl_role == REPL_ROLE_LEADER ? st.lag_bytes : 0,
			      memory_order_relaxed);
	atomic_store_explicit(&sh->stat_repl_seq, r->repl_applied_seq, memory_order_relaxed);
}

int root_repl_process(shmsync_root *r)
{
	if (!r->repl)
		return 0;
	char msg[256] = "";
	int n = 0, rc = 0;
	int64_t now = sig_now_ns();
	if (r->repl_retry_at && now >= r->repl_retry_at) {
		r->repl_retry_at = 0;
		if (r->repl_role == REPL_ROLE_FOLLOWER) {
			/* A takeover that the cluster did not let finish. */
			rc = promote(r, msg, sizeof(msg));
		} else {
			rc = repl_resync(r->repl, msg, sizeof(msg));
			if (rc == -EAGAIN) {
				r->repl_retry_at = now + RETRY_NS;
				rc = 0;
			} else if (rc < 0) {
				rc = -EREMCHG;
			} else if (msg[0]) {
				say(r, msg);
			}
		}
		if (rc < 0)
			goto fatal;
		msg[0] = 0;
	}
	for (struct repl_ev *ev; rc == 0 && (ev = repl_poll(r->repl)); repl_ev_free(ev)) {
		n++;
		switch (ev->kind) {
		case REPL_EV_TICK:
			if (r->repl_role == REPL_ROLE_FOLLOWER)
				rc = apply_stream_msg(r, ev->data, ev->len, ev->seq, msg, sizeof(msg));
			break;
		case REPL_EV_FWD:
			if (r->repl_role != REPL_ROLE_LEADER || !take_forward(r, ev))
				break; /* no answer: the follower times out and asks no one else */
			if (r->fwd_in_tail)
				r->fwd_in_tail->next = ev;
			else
				r->fwd_in = ev;
			r->fwd_in_tail = ev;
			ev = NULL;
			break;
		case REPL_EV_FWD_REPLY:
			forward_answered(r, ev->id, ev->result);
			break;
		case REPL_EV_STORED:
			break;
		case REPL_EV_RESYNC:
			if (r->repl_role == REPL_ROLE_LEADER && !r->repl_retry_at) {
				char note[300];
				snprintf(note, sizeof(note), "replication: %s; reading the stream to go on",
					 ev->msg);
				say(r, note);
				r->repl_retry_at = now;
			}
			break;
		case REPL_EV_PROMOTE:
			if (r->repl_role == REPL_ROLE_FOLLOWER) {
				/* Said first: the catch-up before the marker may take
				 * a while, and the log should say why. */
				say(r, "replication: the leader's lease lapsed and this root holds it now; "
				       "catching up to take over the stream");
				rc = promote(r, msg, sizeof(msg));
			}
			break;
		case REPL_EV_DEPOSED:
			snprintf(msg, sizeof(msg), "%s", ev->msg);
			rc = -EREMCHG;
			break;
		case REPL_EV_FATAL:
		default:
			snprintf(msg, sizeof(msg), "%s", ev->msg);
			rc = -EPROTO;
			break;
		}
	}
	if (rc < 0)
		goto fatal;
	if (r->repl_role == REPL_ROLE_FOLLOWER) {
		uint64_t floor = forward_floor(r);
		for (size_t i = 0; i < r->held_n; i++) {
			struct held_ack *h = &r->held[r->held_head + i];
			if (h->forward && !h->done && h->rec && now >= h->resend_at) {
				h->resend_at = now + RESEND_NS;
				int frc = repl_forward(r->repl, r->repl_epoch, floor, h->id, h->rec,
						       h->rec_len);
				/* Once per forward: a resend is normal during an
				 * election, a series of them is not. */
				if (!h->resent_said) {
					h->resent_said = true;
					char note[200];
					snprintf(
						note, sizeof(note),
						"replication: forward %llu unanswered for %lld s, sent again "
						"(to leader epoch %llu)%s",
						(unsigned long long)h->id,
						(long long)(RESEND_NS / 1000000000),
						(unsigned long long)r->repl_epoch,
						frc < 0 ? ": the send failed" : "");
					say(r, note);
				}
			}
		}
	}
	held_serve(r, now);
	if (r->repl_role == REPL_ROLE_LEADER && repl_snapshot_due(r->repl))
		repl_snapshot_start(r->repl, r->ro_fd, shm_root_tick(r->shm), &r->repl_pin);
	publish_stats(r);
	return n;
fatal:
	if (!msg[0])
		snprintf(msg, sizeof(msg), "replication: %s", strerror(-rc));
	say(r, msg);
	return rc < 0 ? rc : -EIO;
}
