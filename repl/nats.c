/* The NATS JetStream side of replication (repl.h): connection, stream,
 * publishing with fencing, following, forwarding, the lease, snapshots.
 *
 * Threads: the root's thread calls every repl_* function except the
 * callbacks below; libnats runs the callbacks (acks, messages, requests)
 * on its own threads; this file adds the lease keeper and the snapshot
 * writer. They share: the event queue (mu), the publisher's state (pub_mu)
 * and a few atomics. None of them touches the root's memory.
 *
 * Fencing. Every append this root makes carries the stream sequence it
 * expects to be the last one (ExpectLastSeq). A root that has lost the
 * lease and was replaced finds the stream longer than it thinks (the new
 * leader's first act is an append, its LEADER marker) and every append of
 * its fails: JetStream, not a clock, decides. After any failed append the
 * root resynchronises (repl_resync): it reads what the stream holds and
 * either republishes its own unstored ticks or learns that it was deposed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "repl.h"

#define CHUNK_BYTES (512u * 1024u) /* a snapshot chunk's payload: well under NATS's 1 MiB default */
#define REQUEST_TIMEOUT_MS 5000
/* A resync's requests: they hold the root's thread, and while JetStream
 * elects a stream leader nothing answers them. Tried again 100 ms after a
 * timeout, a short wait finds the new leader within about a second of its
 * election; the context's 5 s let two elections in a row cost a durable
 * leader 20 s of held acks (repl_durable). */
#define RESYNC_WAIT_MS 1000

struct pending_tick {
	uint64_t tick, seq; /* the sequence it gets if the stream takes it */
	uint8_t *data;
	size_t len;
};

struct repl {
	struct repl_opts o;
	char stream[REPL_NAME_MAX + 1];
	char subj_ticks[96], subj_idx[96], subj_chunk[96], subj_fwd[128], bucket[96], id[96];
	char urls[1024];
	natsOptions *nopts;
	natsConnection *nc;
	jsCtx *js;
	kvStore *kv;

	pthread_mutex_t mu; /* the event queue */
	pthread_cond_t cv;
	struct repl_ev *head, *tail;
	_Atomic bool nonempty;

	pthread_mutex_t pub_mu; /* everything below up to the stats */
	uint64_t last_seq;      /* the stream's last sequence as this leader knows it */
	struct pending_tick *pend;
	size_t npend, pend_cap;
	bool resyncing;
	bool leading;
	bool settle;    /* starting: API calls wait out an election (stream_info, last_msg) */
	uint64_t epoch; /* leading: the sequence of our LEADER marker */

	_Atomic uint64_t published_tick, stored_tick, lag_bytes, applied_seq, stream_last;
	/* Sequences JetStream assigned, from its acks (never our count of what
	 * we appended, which runs ahead of the stream when an append fails):
	 * the sequence of stored_tick's message. */
	_Atomic uint64_t stored_seq;
	uint64_t ticks_since_snap, bytes_since_snap;

	natsSubscription *ticks_sub, *fwd_sub, *reply_sub;
	char inbox[128];

	pthread_t lease_thr;
	bool lease_started;
	_Atomic bool stop;
	_Atomic bool lease_held; /* the key names us, as the lease keeper last saw */
	uint64_t lease_rev;

	pthread_t snap_thr;
	bool snap_started;
	_Atomic bool snap_busy;
	_Atomic bool snap_failed;  /* an append of the snapshot being written failed */
	_Atomic uint64_t idx_tick; /* the last snapshot whose index JetStream stored */
	int snap_fd;
	uint64_t snap_tick, snap_tick_seq;
	unsigned idx_parity; /* of the snapshot the index names; a new one uses the other */
	_Atomic uint64_t *snap_pin;
};

static const char *st_text(natsStatus s)
{
	const char *t = nats_GetLastError(NULL);
	return t && *t ? t : natsStatus_GetText(s);
}

/* A JetStream API call that may meet a cluster between leaders (a node
 * was lost or came back: the meta or stream leader is being elected,
 * which takes seconds): retried for up to SETTLE_NS before its error
 * counts. */
#define SETTLE_NS 20000000000LL

static bool transient(natsStatus s, jsErrCode jerr)
{
	return s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS || s == NATS_CONNECTION_DISCONNECTED ||
	       (s == NATS_NOT_FOUND && jerr == JSStreamNotFoundErr);
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A request's wait: wait_ms, or the context's (REQUEST_TIMEOUT_MS) for 0. */
static jsOptions *request_wait(jsOptions *jo, int64_t wait_ms)
{
	if (!wait_ms)
		return NULL;
	jsOptions_Init(jo);
	jo->Wait = wait_ms;
	return jo;
}

static natsStatus stream_info_wait(struct repl *rp, jsStreamInfo **si, jsErrCode *jerr, int64_t wait_ms)
{
	natsStatus s;
	jsOptions jo;
	for (int64_t end = mono_ns() + SETTLE_NS;;) {
		*jerr = 0;
		s = js_GetStreamInfo(si, rp->js, rp->stream, request_wait(&jo, wait_ms), jerr);
		/* Not found is an answer here: a new stream is made. */
		if (!rp->settle || !transient(s, 0) || mono_ns() > end)
			return s;
		struct timespec ts = {0, 250000000};
		nanosleep(&ts, NULL);
	}
}

static natsStatus stream_info(struct repl *rp, jsStreamInfo **si, jsErrCode *jerr)
{
	return stream_info_wait(rp, si, jerr, 0);
}

static natsStatus last_msg_wait(struct repl *rp, natsMsg **m, const char *subject, jsErrCode *jerr,
				int64_t wait_ms)
{
	natsStatus s;
	jsOptions jo;
	for (int64_t end = mono_ns() + SETTLE_NS;;) {
		*jerr = 0;
		s = js_GetLastMsg(m, rp->js, rp->stream, subject, request_wait(&jo, wait_ms), jerr);
		if (!rp->settle || !transient(s, *jerr) || mono_ns() > end)
			return s;
		struct timespec ts = {0, 250000000};
		nanosleep(&ts, NULL);
	}
}

static natsStatus last_msg(struct repl *rp, natsMsg **m, const char *subject, jsErrCode *jerr)
{
	return last_msg_wait(rp, m, subject, jerr, 0);
}

/* ---- events --------------------------------------------------------- */

static struct repl_ev *ev_new(int kind)
{
	struct repl_ev *ev = calloc(1, sizeof(*ev));
	if (ev)
		ev->kind = kind;
	return ev;
}

static void ev_push(struct repl *rp, struct repl_ev *ev)
{
	if (!ev)
		return;
	pthread_mutex_lock(&rp->mu);
	if (rp->tail)
		rp->tail->next = ev;
	else
		rp->head = ev;
	rp->tail = ev;
	atomic_store_explicit(&rp->nonempty, true, memory_order_release);
	pthread_cond_signal(&rp->cv);
	pthread_mutex_unlock(&rp->mu);
	uint64_t one = 1;
	if (write(rp->o.wake_fd, &one, sizeof(one)) < 0) {
		/* The counter is full: the root is awake anyway. */
	}
}

static void ev_msg(struct repl *rp, int kind, const char *fmt, const char *a, long long b)
{
	struct repl_ev *ev = ev_new(kind);
	if (!ev)
		return;
	snprintf(ev->msg, sizeof(ev->msg), fmt, a, b);
	ev_push(rp, ev);
}

bool repl_has_events(struct repl *rp)
{
	return atomic_load_explicit(&rp->nonempty, memory_order_acquire);
}

struct repl_ev *repl_poll(struct repl *rp)
{
	if (!repl_has_events(rp))
		return NULL;
	pthread_mutex_lock(&rp->mu);
	struct repl_ev *ev = rp->head;
	if (ev) {
		rp->head = ev->next;
		if (!rp->head)
			rp->tail = NULL;
		ev->next = NULL;
	}
	atomic_store_explicit(&rp->nonempty, rp->head != NULL, memory_order_relaxed);
	pthread_mutex_unlock(&rp->mu);
	return ev;
}

struct repl_ev *repl_wait(struct repl *rp, int64_t timeout_ns)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t ns = ts.tv_nsec + timeout_ns % 1000000000;
	ts.tv_sec += (time_t)(timeout_ns / 1000000000 + ns / 1000000000);
	ts.tv_nsec = (long)(ns % 1000000000);
	pthread_mutex_lock(&rp->mu);
	while (!rp->head)
		if (pthread_cond_timedwait(&rp->cv, &rp->mu, &ts) != 0)
			break;
	pthread_mutex_unlock(&rp->mu);
	return repl_poll(rp);
}

void repl_ev_free(struct repl_ev *ev)
{
	if (!ev)
		return;
	free(ev->data);
	free(ev->reply);
	free(ev);
}

/* ---- open ------------------------------------------------------------ */

static void on_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure);

static bool name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > REPL_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

/* The stream's subjects must be exactly ours: a stream made for something
 * else is not taken over. */
static int check_stream(struct repl *rp, jsStreamInfo *si, char *msg, size_t msglen)
{
	jsStreamConfig *c = si->Config;
	const char *want[3] = {rp->subj_ticks, rp->subj_idx, rp->subj_chunk};
	bool ok = c && c->SubjectsLen == 3;
	for (int i = 0; ok && i < 3; i++)
		ok = strcmp(c->Subjects[i], want[i]) == 0;
	if (!ok) {
		snprintf(msg, msglen,
			 "stream %s exists with other subjects than shmsync's (%s, %s, %s): it holds "
			 "something "
			 "else; name another stream",
			 rp->stream, want[0], want[1], want[2]);
		return -EPROTO;
	}
	if (!c->AllowRollup) {
		snprintf(msg, msglen, "stream %s does not allow rollups: it was not made by shmsync",
			 rp->stream);
		return -EPROTO;
	}
	return 0;
}

static int ensure_stream(struct repl *rp, char *msg, size_t msglen)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus s = stream_info(rp, &si, &jerr);
	if (s == NATS_OK) {
		int rc = check_stream(rp, si, msg, msglen);
		atomic_store(&rp->stream_last, si->State.LastSeq);
		jsStreamInfo_Destroy(si);
		return rc;
	}
	if (jerr != JSStreamNotFoundErr && s != NATS_NOT_FOUND) {
		snprintf(msg, msglen,
			 "stream %s: %s (JetStream error %d): is JetStream enabled on the server?",
			 rp->stream, st_text(s), (int)jerr);
		return -EIO;
	}
	if (rp->o.follow) {
		snprintf(msg, msglen, "stream %s does not exist: start its leader (--replicate) first",
			 rp->stream);
		return -ENOENT;
	}
	jsStreamConfig cfg;
	jsStreamConfig_Init(&cfg);
	const char *subjects[3] = {rp->subj_ticks, rp->subj_idx, rp->subj_chunk};
	cfg.Name = rp->stream;
	cfg.Description = "shmsync replication: ticks, snapshots";
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 3;
	cfg.Storage = js_FileStorage;
	cfg.Replicas = rp->o.replicas ? rp->o.replicas : 1;
	cfg.AllowRollup = true;
	cfg.MaxMsgSize = 8 << 20;
	s = js_AddStream(&si, rp->js, &cfg, NULL, &jerr);
	if (s != NATS_OK) {
		snprintf(msg, msglen, "creating stream %s with %" PRId64 " replicas: %s (JetStream error %d)",
			 rp->stream, cfg.Replicas, st_text(s), (int)jerr);
		return -EIO;
	}
	int rc = check_stream(rp, si, msg, msglen);
	jsStreamInfo_Destroy(si);
	return rc;
}

/* The bucket's TTL is the lease: a root started with another --lease than
 * the one that made the bucket renews at the bucket's pace. */
static void lease_from_bucket(struct repl *rp)
{
	kvStatus *st = NULL;
	if (kvStore_Status(&st, rp->kv) != NATS_OK)
		return;
	int64_t ttl = kvStatus_TTL(st);
	if (ttl >= 100000000)
		rp->o.lease_ns = ttl;
	kvStatus_Destroy(st);
}

static int ensure_bucket(struct repl *rp, char *msg, size_t msglen)
{
	natsStatus s = NATS_ERR;
	/* Opening an existing bucket can time out while the cluster settles
	 * (a node just came back): a few tries before creating one. */
	for (int i = 0; i < 5; i++) {
		s = js_KeyValue(&rp->kv, rp->js, rp->bucket);
		if (s == NATS_OK) {
			lease_from_bucket(rp);
			return 0;
		}
		if (s == NATS_NOT_FOUND)
			break;
		struct timespec ts = {0, 200000000};
		nanosleep(&ts, NULL);
	}
	kvConfig kc;
	kvConfig_Init(&kc);
	kc.Bucket = rp->bucket;
	kc.History = 1;
	kc.TTL = rp->o.lease_ns; /* nanoseconds, whatever the header says */
	kc.Replicas = (int)(rp->o.replicas ? rp->o.replicas : 1);
	kc.StorageType = js_FileStorage;
	s = js_CreateKeyValue(&rp->kv, rp->js, &kc);
	if (s != NATS_OK) {
		snprintf(msg, msglen, "lease bucket %s: %s", rp->bucket, st_text(s));
		return -EIO;
	}
	return 0;
}

int repl_open(struct repl **out, const struct repl_opts *o, char *msg, size_t msglen)
{
	if (!o->urls || !*o->urls || strlen(o->urls) >= 1024) {
		snprintf(msg, msglen, "replication needs NATS URLs (nats://host:port[,...])");
		return -EINVAL;
	}
	if (!name_ok(o->stream)) {
		snprintf(msg, msglen, "stream name \"%s\": 1 to %d characters of A-Z a-z 0-9 _ -",
			 o->stream ? o->stream : "", REPL_NAME_MAX);
		return -EINVAL;
	}
	if (o->replicas > 5 || o->lease_ns < 100000000 || o->window == 0) {
		snprintf(msg, msglen,
			 "replicas must be 1..5, the lease at least 100 ms, the window at least 1");
		return -EINVAL;
	}
	struct repl *rp = calloc(1, sizeof(*rp));
	if (!rp)
		return -ENOMEM;
	rp->o = *o;
	snprintf(rp->urls, sizeof(rp->urls), "%s", o->urls);
	rp->o.urls = rp->urls;
	snprintf(rp->stream, sizeof(rp->stream), "%s", o->stream);
	rp->o.stream = rp->stream;
	snprintf(rp->subj_ticks, sizeof(rp->subj_ticks), "%s.ticks", rp->stream);
	snprintf(rp->subj_idx, sizeof(rp->subj_idx), "%s.snapidx", rp->stream);
	snprintf(rp->subj_chunk, sizeof(rp->subj_chunk), "%s.snapchunk.>", rp->stream);
	snprintf(rp->subj_fwd, sizeof(rp->subj_fwd), "_shmsync.%s.fwd", rp->stream);
	snprintf(rp->bucket, sizeof(rp->bucket), "shmsync_%s", rp->stream);
	char host[48] = "";
	gethostname(host, sizeof(host) - 1);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	if (o->id && *o->id)
		snprintf(rp->id, sizeof(rp->id), "%s", o->id);
	else
		snprintf(rp->id, sizeof(rp->id), "%s:%d:%llx", host, (int)getpid(),
			 (unsigned long long)now.tv_nsec ^ (unsigned long long)now.tv_sec << 20);
	pthread_mutex_init(&rp->mu, NULL);
	pthread_cond_init(&rp->cv, NULL);
	pthread_mutex_init(&rp->pub_mu, NULL);
	rp->snap_fd = -1;
	rp->settle = true;
	atomic_store(&rp->stored_tick, 0);

	int rc = -EIO;
	natsStatus s = nats_Open(-1);
	if (s == NATS_OK)
		s = natsOptions_Create(&rp->nopts);
	if (s == NATS_OK) {
		/* natsOptions_SetURL takes one URL: the list goes in pieces. */
		char list[1024];
		const char *servers[16];
		int n = 0;
		snprintf(list, sizeof(list), "%s", rp->urls);
		for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && n < 16;
		     tok = strtok_r(NULL, ",", &save))
			if (*tok)
				servers[n++] = tok;
		s = n ? natsOptions_SetServers(rp->nopts, servers, n) : NATS_INVALID_ARG;
	}
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(rp->nopts, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(rp->nopts, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(rp->nopts, 100);
	if (s == NATS_OK)
		s = natsOptions_SetName(rp->nopts, rp->id);
	if (s == NATS_OK)
		/* Forwarded batches and their answers go out at once, not with
		 * the next flush: a round trip of 0.13 ms instead of 1 ms. */
		s = natsOptions_SetSendAsap(rp->nopts, true);
	if (s != NATS_OK) {
		snprintf(msg, msglen, "NATS options for %s: %s", rp->urls, st_text(s));
		rc = s == NATS_ADDRESS_MISSING || s == NATS_INVALID_ARG ? -EINVAL : -EIO;
		goto fail;
	}
	s = natsConnection_Connect(&rp->nc, rp->nopts);
	if (s != NATS_OK) {
		snprintf(msg, msglen, "cannot reach NATS at %s: %s", rp->urls, st_text(s));
		rc = -EHOSTUNREACH;
		goto fail;
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = REQUEST_TIMEOUT_MS;
	jo.PublishAsync.MaxPending = (int64_t)o->window * 4 + 64;
	jo.PublishAsync.AckHandler = on_ack;
	jo.PublishAsync.AckHandlerClosure = rp;
	s = natsConnection_JetStream(&rp->js, rp->nc, &jo);
	if (s != NATS_OK) {
		snprintf(msg, msglen, "JetStream context: %s", st_text(s));
		goto fail;
	}
	rc = ensure_stream(rp, msg, msglen);
	if (rc == 0)
		rc = ensure_bucket(rp, msg, msglen);
	if (rc < 0)
		goto fail;
	*out = rp;
	return 0;
fail:
	repl_close(rp);
	return rc;
}

void repl_close(struct repl *rp)
{
	if (!rp)
		return;
	atomic_store(&rp->stop, true);
	if (rp->lease_started)
		pthread_join(rp->lease_thr, NULL);
	if (rp->snap_started)
		pthread_join(rp->snap_thr, NULL);
	if (rp->ticks_sub) {
		natsSubscription_Unsubscribe(rp->ticks_sub);
		natsSubscription_Destroy(rp->ticks_sub);
	}
	if (rp->fwd_sub) {
		natsSubscription_Unsubscribe(rp->fwd_sub);
		natsSubscription_Destroy(rp->fwd_sub);
	}
	if (rp->reply_sub) {
		natsSubscription_Unsubscribe(rp->reply_sub);
		natsSubscription_Destroy(rp->reply_sub);
	}
	if (rp->js) {
		/* What is in flight gets a moment to be stored. */
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MaxWait = 1000;
		js_PublishAsyncComplete(rp->js, &po);
	}
	kvEntry *e = NULL;
	if (rp->leading && rp->kv && kvStore_Get(&e, rp->kv, "leader") == NATS_OK &&
	    strcmp(kvEntry_ValueString(e), rp->id) == 0)
		/* Ours: hand it back at once rather than after its TTL. (Never
		 * another root's: a deposed leader must not free its successor's
		 * lease.) */
		kvStore_Delete(rp->kv, "leader");
	if (e)
		kvEntry_Destroy(e);
	if (rp->kv)
		kvStore_Destroy(rp->kv);
	if (rp->js)
		jsCtx_Destroy(rp->js);
	if (rp->nc) {
		natsConnection_Close(rp->nc);
		natsConnection_Destroy(rp->nc);
	}
	if (rp->nopts)
		natsOptions_Destroy(rp->nopts);
	for (size_t i = 0; i < rp->npend; i++)
		free(rp->pend[i].data);
	free(rp->pend);
	struct repl_ev *ev;
	while ((ev = repl_poll(rp)))
		repl_ev_free(ev);
	pthread_mutex_destroy(&rp->mu);
	pthread_cond_destroy(&rp->cv);
	pthread_mutex_destroy(&rp->pub_mu);
	free(rp);
}

const char *repl_id(const struct repl *rp)
{
	return rp->id;
}

/* ---- reading the stream --------------------------------------------- */

static natsStatus last_seq_wait(struct repl *rp, uint64_t *seq, int64_t wait_ms)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus s = stream_info_wait(rp, &si, &jerr, wait_ms);
	if (s != NATS_OK)
		return s;
	*seq = si->State.LastSeq;
	atomic_store(&rp->stream_last, *seq);
	jsStreamInfo_Destroy(si);
	return NATS_OK;
}

int repl_last_seq(struct repl *rp, uint64_t *seq, char *msg, size_t msglen)
{
	natsStatus s = last_seq_wait(rp, seq, 0);
	if (s != NATS_OK) {
		snprintf(msg, msglen, "stream %s: %s", rp->stream, st_text(s));
		return -EIO;
	}
	return 0;
}

static uint64_t msg_seq(natsMsg *m);

int repl_last_tick_seq(struct repl *rp, uint64_t *seq, char *msg, size_t msglen)
{
	natsMsg *m = NULL;
	jsErrCode jerr = 0;
	natsStatus s = last_msg(rp, &m, rp->subj_ticks, &jerr);
	/* Only "no message" (10037) means none: a NOT_FOUND without it is a
	 * stream the cluster cannot find while it elects a leader. */
	if (jerr == JSNoMessageFoundErr) {
		*seq = 0;
		return 0;
	}
	if (s != NATS_OK) {
		snprintf(msg, msglen, "reading %s: %s", rp->subj_ticks, st_text(s));
		return -EIO;
	}
	*seq = msg_seq(m);
	natsMsg_Destroy(m);
	return 0;
}

static uint64_t msg_seq(natsMsg *m)
{
	jsMsgMetaData *meta = NULL;
	uint64_t seq = natsMsg_GetSequence(m);
	if (seq)
		return seq;
	if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
		seq = meta->Sequence.Stream;
		jsMsgMetaData_Destroy(meta);
	}
	return seq;
}

int repl_snapshot_latest(struct repl *rp, struct repl_snapidx *idx, char *msg, size_t msglen)
{
	natsMsg *m = NULL;
	jsErrCode jerr = 0;
	natsStatus s = last_msg(rp, &m, rp->subj_idx, &jerr);
	if (jerr == JSNoMessageFoundErr)
		return -ENOENT;
	if (s != NATS_OK) {
		snprintf(msg, msglen, "reading %s: %s", rp->subj_idx, st_text(s));
		return -EIO;
	}
	struct repl_hdr h;
	char why[160];
	int rc = repl_hdr_check(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &h, why, sizeof(why));
	if (rc == 0 && h.kind != REPL_SNAP_IDX) {
		snprintf(why, sizeof(why), "a message of kind %u where a snapshot index belongs", h.kind);
		rc = -EPROTO;
	}
	/* A leader snapshots only after a tick of its own (tick 1 is the empty
	 * state). Caught here, the bad index is named as the stream's fault;
	 * shm_root_load_begin would refuse it as -EINVAL, which serve reports
	 * as bad arguments (exit 2). */
	if (rc == 0 && h.tick < 2) {
		snprintf(why, sizeof(why), "a snapshot index at tick %" PRIu64 ", which no leader writes",
			 h.tick);
		rc = -EPROTO;
	}
	if (rc < 0) {
		snprintf(msg, msglen, "stream %s, %s (sequence %" PRIu64 "): %s", rp->stream, rp->subj_idx,
			 msg_seq(m), why);
		natsMsg_Destroy(m);
		return rc;
	}
	natsMsg_Destroy(m);
	*idx = (struct repl_snapidx){h.tick, h.a, h.b, h.c};
	rp->idx_parity = (unsigned)(h.a & 1);
	return 0;
}

int repl_snapshot_read(struct repl *rp, const struct repl_snapidx *idx,
		       int (*fn)(const uint8_t *data, size_t len, void *arg), void *arg, char *msg,
		       size_t msglen)
{
	if (idx->parity > 1) {
		snprintf(msg, msglen, "snapshot at tick %" PRIu64 ": an index of parity %" PRIu64, idx->tick,
			 idx->parity);
		return -EPROTO;
	}
	int rc = 0;
	for (uint64_t i = 0; rc == 0 && i < idx->chunks; i++) {
		char subject[160];
		snprintf(subject, sizeof(subject), "%s.snapchunk.%" PRIu64 ".%" PRIu64, rp->stream,
			 idx->parity, i);
		natsMsg *m = NULL;
		jsErrCode jerr = 0;
		natsStatus s = last_msg(rp, &m, subject, &jerr);
		if (s != NATS_OK) {
			snprintf(msg, msglen,
				 "snapshot at tick %" PRIu64 ": chunk %" PRIu64 " of %" PRIu64
				 " missing (%s)",
				 idx->tick, i, idx->chunks, st_text(s));
			return -EIO;
		}
		struct repl_hdr h;
		char why[160];
		const uint8_t *d = (const uint8_t *)natsMsg_GetData(m);
		size_t len = (size_t)natsMsg_GetDataLength(m);
		rc = repl_hdr_check(d, len, &h, why, sizeof(why));
		if (rc == 0 && (h.kind != REPL_SNAP_CHUNK || h.tick != idx->tick || h.a != i)) {
			snprintf(why, sizeof(why),
				 "chunk %" PRIu64 " of tick %" PRIu64 " where chunk %" PRIu64
				 " of tick %" PRIu64 " belongs",
				 h.a, h.tick, i, idx->tick);
			rc = -EPROTO;
		}
		if (rc < 0)
			snprintf(msg, msglen, "snapshot at tick %" PRIu64 ": %s", idx->tick, why);
		else
			rc = fn(d, len, arg);
		natsMsg_Destroy(m);
	}
	return rc;
}

/* An event carrying a copy of m's payload (libnats frees m), or NULL
 * without memory: a tick lost so is a gap the follower then reports, a
 * forward lost so is sent again. */
static struct repl_ev *ev_with_data(int kind, natsMsg *m)
{
	struct repl_ev *ev = ev_new(kind);
	size_t len = (size_t)natsMsg_GetDataLength(m);
	if (ev)
		ev->data = malloc(len ? len : 1);
	if (!ev || !ev->data) {
		repl_ev_free(ev);
		return NULL;
	}
	memcpy(ev->data, natsMsg_GetData(m), len);
	ev->len = len;
	return ev;
}

static void on_tick_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
	(void)nc;
	(void)sub;
	struct repl_ev *ev = ev_with_data(REPL_EV_TICK, m);
	if (ev) {
		ev->seq = msg_seq(m);
		ev_push(closure, ev);
	}
	natsMsg_Destroy(m);
}

int repl_ticks_follow(struct repl *rp, uint64_t after, char *msg, size_t msglen)
{
	jsSubOptions so;
	jsSubOptions_Init(&so);
	so.Stream = rp->stream;
	so.Ordered = true;
	so.Config.DeliverPolicy = js_DeliverByStartSequence;
	so.Config.OptStartSeq = after + 1;
	/* A consumer on a node that died is noticed by its missing
	 * heartbeats, and libnats recreates it from where it was: 5 s by
	 * default, during which a follower would apply nothing. */
	so.Config.Heartbeat = 500000000;
	natsStatus s = js_Subscribe(&rp->ticks_sub, rp->js, rp->subj_ticks, on_tick_msg, rp, NULL, &so, NULL);
	if (s == NATS_OK)
		/* The root applies at its own pace; the queue holds what it has
		 * not applied yet, so libnats must not drop any. */
		s = natsSubscription_SetPendingLimits(rp->ticks_sub, -1, -1);
	if (s != NATS_OK) {
		snprintf(msg, msglen, "following %s after sequence %" PRIu64 ": %s", rp->subj_ticks, after,
			 st_text(s));
		return -EIO;
	}
	return 0;
}

void repl_ticks_stop(struct repl *rp)
{
	if (!rp->ticks_sub)
		return;
	natsSubscription_Unsubscribe(rp->ticks_sub);
	natsSubscription_Destroy(rp->ticks_sub);
	rp->ticks_sub = NULL;
}

/* ---- publishing ----------------------------------------------------- */

/* The ack of one append (a libnats thread). */
static void on_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	(void)js;
	struct repl *rp = closure;
	struct repl_hdr h;
	char why[160];
	const void *d = natsMsg_GetData(m);
	size_t len = (size_t)natsMsg_GetDataLength(m);
	bool ours = repl_hdr_check(d, len, &h, why, sizeof(why)) == 0;
	if (pa && ours && h.kind == REPL_TICK) {
		uint64_t stored = 0;
		pthread_mutex_lock(&rp->pub_mu);
		size_t k = 0;
		while (k < rp->npend && rp->pend[k].tick <= h.tick) {
			uint64_t lb = atomic_load(&rp->lag_bytes);
			atomic_store(&rp->lag_bytes, lb >= rp->pend[k].len ? lb - rp->pend[k].len : 0);
			free(rp->pend[k].data);
			k++;
		}
		if (k) {
			memmove(rp->pend, rp->pend + k, (rp->npend - k) * sizeof(*rp->pend));
			rp->npend -= k;
		}
		if (h.tick > atomic_load(&rp->stored_tick)) {
			atomic_store(&rp->stored_seq, pa->Sequence);
			atomic_store(&rp->stored_tick, h.tick);
			stored = h.tick;
		}
		pthread_mutex_unlock(&rp->pub_mu);
		if (stored) {
			struct repl_ev *ev = ev_new(REPL_EV_STORED);
			if (ev) {
				ev->tick = stored;
				ev_push(rp, ev);
			}
		}
	} else if (pa && ours && h.kind == REPL_SNAP_IDX) {
		atomic_store(&rp->idx_tick, h.tick);
	}
	if (pae && ours && (h.kind == REPL_SNAP_CHUNK || h.kind == REPL_SNAP_IDX))
		atomic_store(&rp->snap_failed, true);
	if (pae) {
		/* Any failed append: find out what the stream holds (the root's
		 * thread does, in repl_resync), unless one is on its way. */
		pthread_mutex_lock(&rp->pub_mu);
		bool first = !rp->resyncing;
		rp->resyncing = true;
		pthread_mutex_unlock(&rp->pub_mu);
		if (first)
			ev_msg(rp, REPL_EV_RESYNC, "append failed: %s (JetStream error %lld)",
			       pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err),
			       (long long)pae->ErrCode);
	}
	natsMsg_Destroy(m);
}

/* One append with the fencing sequence, under pub_mu. */
static natsStatus append_locked(struct repl *rp, const char *subject, const void *data, size_t len,
				const char *msg_id, bool rollup)
{
	natsMsg *m = NULL;
	natsStatus s = natsMsg_Create(&m, subject, NULL, data, (int)len);
	if (s == NATS_OK && rollup)
		s = natsMsgHeader_Set(m, "Nats-Rollup", "sub");
	if (s != NATS_OK) {
		natsMsg_Destroy(m);
		return s;
	}
	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.ExpectLastSeq = rp->last_seq;
	po.MsgId = msg_id;
	/* An ack lost with a node must come back as a timeout: without a
	 * limit libnats keeps waiting for it, and the window never drains. */
	po.MaxWait = REQUEST_TIMEOUT_MS;
	s = js_PublishMsgAsync(rp->js, &m, &po);
	if (s == NATS_OK)
		rp->last_seq++;
	else
		natsMsg_Destroy(m);
	return s;
}

bool repl_window_full(struct repl *rp)
{
	pthread_mutex_lock(&rp->pub_mu);
	bool full = rp->npend >= rp->o.window || rp->resyncing;
	pthread_mutex_unlock(&rp->pub_mu);
	return full;
}

int repl_publish_tick(struct repl *rp, uint64_t tick, const uint8_t *payload, size_t len)
{
	uint8_t *copy = malloc(len);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, payload, len);
	pthread_mutex_lock(&rp->pub_mu);
	if (rp->npend == rp->pend_cap) {
		size_t cap = rp->pend_cap ? rp->pend_cap * 2 : 64;
		struct pending_tick *p = realloc(rp->pend, cap * sizeof(*p));
		if (!p) {
			pthread_mutex_unlock(&rp->pub_mu);
			free(copy);
			return -ENOMEM;
		}
		rp->pend = p;
		rp->pend_cap = cap;
	}
	rp->pend[rp->npend++] = (struct pending_tick){tick, rp->last_seq + 1, copy, len};
	atomic_fetch_add(&rp->lag_bytes, len);
	atomic_store(&rp->published_tick, tick);
	rp->ticks_since_snap++;
	rp->bytes_since_snap += len;
	natsStatus s = NATS_OK;
	if (!rp->resyncing) {
		char id[24];
		snprintf(id, sizeof(id), "%" PRIu64, tick);
		s = append_locked(rp, rp->subj_ticks, copy, len, id, false);
		if (s != NATS_OK)
			rp->resyncing = true;
	}
	pthread_mutex_unlock(&rp->pub_mu);
	if (s != NATS_OK)
		ev_msg(rp, REPL_EV_RESYNC, "append failed: %s (status %lld)", st_text(s), (long long)s);
	return 0;
}

/* After a failed append (the root's thread, on the event that says so):
 * what does the stream end with? Our own tick: republish what came after
 * it. Anything else: another root appended, and we no longer lead. */
int repl_resync(struct repl *rp, char *msg, size_t msglen)
{
	/* Appends still in flight are not waited for: one that lands after
	 * this read carries a tick the stream then has twice under one
	 * message id (JetStream drops the second), or fails its expected
	 * sequence and brings us back here. */
	uint64_t last = 0;
	natsStatus s = last_seq_wait(rp, &last, RESYNC_WAIT_MS);
	if (s != NATS_OK)
		return -EAGAIN; /* try again later: the cluster may be electing */
	natsMsg *m = NULL;
	jsErrCode jerr = 0;
	s = last_msg_wait(rp, &m, rp->subj_ticks, &jerr, RESYNC_WAIT_MS);
	uint64_t stored = 0, stored_at = 0;
	if (s == NATS_OK) {
		struct repl_hdr h;
		char why[160];
		stored_at = natsMsg_GetSequence(m);
		const void *d = natsMsg_GetData(m);
		size_t len = (size_t)natsMsg_GetDataLength(m);
		int rc = repl_hdr_check(d, len, &h, why, sizeof(why));
		bool ours = rc == 0 && h.kind == REPL_TICK;
		if (rc == 0 && h.kind == REPL_LEADER) {
			const char *who = (const char *)d + sizeof(h);
			size_t n = len - sizeof(h);
			ours = n == strlen(rp->id) && memcmp(who, rp->id, n) == 0;
			stored = h.tick;
		} else if (ours) {
			stored = h.tick;
		}
		if (ours && h.kind == REPL_TICK) {
			/* Was it our tick? Only if we published that tick. */
			pthread_mutex_lock(&rp->pub_mu);
			ours = h.tick <= atomic_load(&rp->published_tick);
			pthread_mutex_unlock(&rp->pub_mu);
		}
		natsMsg_Destroy(m);
		if (!ours) {
			snprintf(msg, msglen,
				 "stream %s ends with another root's append (sequence %" PRIu64
				 "): this root no longer leads",
				 rp->stream, last);
			return -ESTALE;
		}
	} else if (jerr != JSNoMessageFoundErr) {
		return -EAGAIN;
	}
	pthread_mutex_lock(&rp->pub_mu);
	rp->last_seq = last;
	size_t k = 0;
	while (k < rp->npend && rp->pend[k].tick <= stored)
		free(rp->pend[k++].data);
	memmove(rp->pend, rp->pend + k, (rp->npend - k) * sizeof(*rp->pend));
	rp->npend -= k;
	if (stored > atomic_load(&rp->stored_tick)) {
		atomic_store(&rp->stored_seq, stored_at);
		atomic_store(&rp->stored_tick, stored);
	}
	s = NATS_OK;
	snprintf(msg, msglen,
		 "replication: the stream holds tick %" PRIu64 " at sequence %" PRIu64
		 "; appending %zu ticks after it",
		 stored, last, rp->npend);
	for (size_t i = 0; i < rp->npend && s == NATS_OK; i++) {
		char id[24];
		snprintf(id, sizeof(id), "%" PRIu64, rp->pend[i].tick);
		s = append_locked(rp, rp->subj_ticks, rp->pend[i].data, rp->pend[i].len, id, false);
	}
	rp->resyncing = s != NATS_OK;
	pthread_mutex_unlock(&rp->pub_mu);
	if (stored) {
		struct repl_ev *ev = ev_new(REPL_EV_STORED);
		if (ev) {
			ev->tick = stored;
			ev_push(rp, ev);
		}
	}
	return s == NATS_OK ? 0 : -EAGAIN;
}

/* ---- the lease ------------------------------------------------------ */

/* Sleeps up to ns in short steps, so that close never waits a period. */
static void nap(struct repl *rp, int64_t ns)
{
	for (int64_t end = mono_ns() + ns; !atomic_load(&rp->stop) && mono_ns() < end;) {
		struct timespec ts = {0, 20000000};
		nanosleep(&ts, NULL);
	}
}

/* The lease keeper: a holder renews by revision every third of the TTL,
 * and steps down only when the key names another root (a cluster that
 * does not answer for a while is no reason: the stream fences appends
 * anyway); a follower tries to create the key, which succeeds only once
 * the leader's entry has expired or was handed back. */
static void *lease_main(void *arg)
{
	struct repl *rp = arg;
	int64_t period = rp->o.lease_ns / 3;
	bool holding = rp->leading;
	while (!atomic_load(&rp->stop)) {
		nap(rp, holding ? period : period / 2);
		if (atomic_load(&rp->stop))
			break;
		uint64_t rev = 0;
		if (holding) {
			natsStatus s = kvStore_UpdateString(&rev, rp->kv, "leader", rp->id, rp->lease_rev);
			if (s == NATS_OK) {
				rp->lease_rev = rev;
				atomic_store(&rp->lease_held, true);
				continue;
			}
			/* Not renewed: the cluster may be electing, or the key
			 * moved on. Only another root's name under the key ends
			 * our lead; an expired key we take again. (Appends are
			 * fenced by the stream either way: this is about
			 * stepping down promptly, not about safety.) */
			kvEntry *e = NULL;
			s = kvStore_Get(&e, rp->kv, "leader");
			if (s == NATS_OK) {
				const char *who = kvEntry_ValueString(e);
				bool mine = who && strcmp(who, rp->id) == 0;
				if (mine) {
					rp->lease_rev = kvEntry_Revision(e);
				} else if (!rp->leading) {
					/* Won, but not led yet (the takeover was waiting
					 * for the cluster): back to following. */
					atomic_store(&rp->lease_held, false);
					holding = false;
				} else {
					/* The key flapped (it expired while the cluster
					 * elected, and someone made it again) or another
					 * root is taking over. Only the stream can say
					 * which: the root's thread reads it (repl_resync)
					 * and stops if another root appended; meanwhile
					 * we take the key back once it lapses. */
					atomic_store(&rp->lease_held, false);
					struct repl_ev *ev = ev_new(REPL_EV_RESYNC);
					if (ev) {
						snprintf(
							ev->msg, sizeof(ev->msg),
							"the lease of stream %s names %s; reading the stream",
							rp->stream, who ? who : "another root");
						ev_push(rp, ev);
					}
				}
				kvEntry_Destroy(e);
			} else if (s == NATS_NOT_FOUND) {
				if (kvStore_CreateString(&rev, rp->kv, "leader", rp->id) == NATS_OK) {
					rp->lease_rev = rev;
					atomic_store(&rp->lease_held, true);
				}
			}
		} else {
			natsStatus s = kvStore_CreateString(&rev, rp->kv, "leader", rp->id);
			if (s == NATS_OK) {
				rp->lease_rev = rev;
				atomic_store(&rp->lease_held, true);
				holding = true;
				ev_push(rp, ev_new(REPL_EV_PROMOTE));
			}
		}
	}
	return NULL;
}

static int start_lease(struct repl *rp, char *msg, size_t msglen)
{
	if (rp->lease_started)
		return 0;
	int e = pthread_create(&rp->lease_thr, NULL, lease_main, rp);
	if (e) {
		snprintf(msg, msglen, "lease thread: %s", strerror(e));
		return -e;
	}
	rp->lease_started = true;
	return 0;
}

static void on_fwd(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
	(void)nc;
	(void)sub;
	const char *reply = natsMsg_GetReply(m);
	struct repl_ev *ev = reply ? ev_with_data(REPL_EV_FWD, m) : NULL;
	if (ev && (ev->reply = strdup(reply)) != NULL)
		ev_push(closure, ev);
	else
		repl_ev_free(ev);
	natsMsg_Destroy(m);
}

int repl_lead(struct repl *rp, uint64_t tick, uint64_t last_seq, char *msg, size_t msglen)
{
	uint64_t rev = 0;
	if (!rp->lease_started) {
		natsStatus s = kvStore_CreateString(&rev, rp->kv, "leader", rp->id);
		kvEntry *e = NULL;
		if (s != NATS_OK && kvStore_Get(&e, rp->kv, "leader") == NATS_OK &&
		    strcmp(kvEntry_ValueString(e), rp->id) == 0) {
			/* Our own name: the root we replace (restarted under the
			 * same name) held it; take it back by its revision. */
			s = kvStore_UpdateString(&rev, rp->kv, "leader", rp->id, kvEntry_Revision(e));
		}
		if (s != NATS_OK) {
			const char *holder = "another root";
			if (e || kvStore_Get(&e, rp->kv, "leader") == NATS_OK)
				holder = kvEntry_ValueString(e);
			snprintf(msg, msglen,
				 "stream %s is led by %s (its lease lapses %lld ms after its last renewal): "
				 "follow it with --follow, or lead once it is gone",
				 rp->stream, holder, (long long)(rp->o.lease_ns / 1000000));
			if (e)
				kvEntry_Destroy(e);
			return -EBUSY;
		}
		if (e)
			kvEntry_Destroy(e);
		rp->lease_rev = rev;
		atomic_store(&rp->lease_held, true);
	} else if (!atomic_load(&rp->lease_held)) {
		snprintf(msg, msglen, "the lease of stream %s moved on before this root could lead",
			 rp->stream);
		return -ENOLCK;
	}
	/* The marker: appended only if the stream still ends where this root
	 * has read it. Any append of the previous leader after this fails. */
	struct repl_hdr h;
	repl_hdr_fill(&h, REPL_LEADER, 0, tick, 0, 0, 0);
	size_t idlen = strlen(rp->id);
	uint8_t buf[sizeof(h) + sizeof(rp->id)];
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), rp->id, idlen);
	natsMsg *m = NULL;
	natsStatus s = natsMsg_Create(&m, rp->subj_ticks, NULL, (const char *)buf, (int)(sizeof(h) + idlen));
	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.ExpectLastSeq = last_seq;
	jsPubAck *pa = NULL;
	jsErrCode jerr = 0;
	if (s == NATS_OK)
		s = js_PublishMsg(&pa, rp->js, m, &po, &jerr);
	natsMsg_Destroy(m);
	if (s != NATS_OK) {
		if (!rp->lease_started)
			kvStore_Delete(rp->kv, "leader");
		snprintf(msg, msglen,
			 jerr == JSStreamWrongLastSequenceErr
				 ? "stream %s moved on past sequence %" PRIu64
				   " while this root read it: another "
				   "root appended"
				 : "stream %s: the leader marker after sequence %" PRIu64 " failed",
			 rp->stream, last_seq);
		return jerr == JSStreamWrongLastSequenceErr ? -ESTALE : -EIO;
	}
	rp->settle = false; /* from here on the root's thread must not wait long */
	pthread_mutex_lock(&rp->pub_mu);
	rp->last_seq = pa->Sequence;
	rp->epoch = pa->Sequence;
	rp->leading = true;
	rp->resyncing = false;
	pthread_mutex_unlock(&rp->pub_mu);
	atomic_store(&rp->stored_seq, pa->Sequence);
	jsPubAck_Destroy(pa);
	atomic_store(&rp->published_tick, tick);
	atomic_store(&rp->stored_tick, tick);
	if (rp->reply_sub) {
		natsSubscription_Unsubscribe(rp->reply_sub);
		natsSubscription_Destroy(rp->reply_sub);
		rp->reply_sub = NULL;
	}
	s = natsConnection_Subscribe(&rp->fwd_sub, rp->nc, rp->subj_fwd, on_fwd, rp);
	if (s == NATS_OK)
		s = natsSubscription_SetPendingLimits(rp->fwd_sub, -1, -1);
	if (s != NATS_OK) {
		snprintf(msg, msglen, "subscribing to %s: %s", rp->subj_fwd, st_text(s));
		return -EIO;
	}
	return start_lease(rp, msg, msglen);
}

int repl_reply(struct repl *rp, const char *reply, int64_t result)
{
	uint8_t b[8];
	uint64_t u = (uint64_t)result;
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(u >> (8 * i));
	return natsConnection_Publish(rp->nc, reply, b, 8) == NATS_OK ? 0 : -EIO;
}

static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
	(void)nc;
	(void)sub;
	struct repl *rp = closure;
	const char *subj = natsMsg_GetSubject(m);
	const char *dot = subj ? strrchr(subj, '.') : NULL;
	struct repl_ev *ev = ev_new(REPL_EV_FWD_REPLY);
	if (ev && dot && natsMsg_GetDataLength(m) == 8) {
		ev->id = strtoull(dot + 1, NULL, 10);
		const uint8_t *b = (const uint8_t *)natsMsg_GetData(m);
		uint64_t u = 0;
		for (int i = 7; i >= 0; i--)
			u = u << 8 | b[i];
		ev->result = (int64_t)u;
		/* A leader's answer: a tick, or a negative errno it got. */
		if (ev->result < -4095 || ev->result == 0)
			ev->result = -EPROTO;
		ev_push(rp, ev);
		ev = NULL;
	}
	repl_ev_free(ev);
	natsMsg_Destroy(m);
}

int repl_follow(struct repl *rp, char *msg, size_t msglen)
{
	rp->settle = false;
	natsInbox *inbox = NULL;
	natsStatus s = natsInbox_Create(&inbox);
	if (s == NATS_OK) {
		snprintf(rp->inbox, sizeof(rp->inbox), "%s", (const char *)inbox);
		natsInbox_Destroy(inbox);
		char wild[160];
		snprintf(wild, sizeof(wild), "%s.>", rp->inbox); /* <inbox>.<epoch>.<floor>.<id> */
		s = natsConnection_Subscribe(&rp->reply_sub, rp->nc, wild, on_reply, rp);
	}
	if (s == NATS_OK)
		s = natsSubscription_SetPendingLimits(rp->reply_sub, -1, -1);
	if (s != NATS_OK) {
		snprintf(msg, msglen, "reply inbox: %s", st_text(s));
		return -EIO;
	}
	return start_lease(rp, msg, msglen);
}

uint64_t repl_epoch(struct repl *rp)
{
	return rp->epoch;
}

int repl_forward(struct repl *rp, uint64_t epoch, uint64_t floor, uint64_t id, const uint8_t *rec, size_t len)
{
	char reply[192];
	snprintf(reply, sizeof(reply), "%s.%" PRIu64 ".%" PRIu64 ".%" PRIu64, rp->inbox, epoch, floor, id);
	natsStatus s = natsConnection_PublishRequest(rp->nc, rp->subj_fwd, reply, rec, (int)len);
	return s == NATS_OK ? 0 : -EIO;
}

/* ---- snapshots ------------------------------------------------------ */

struct snap_ctx {
	struct repl *rp;
	uint8_t *buf;
	size_t len, cap;
	uint32_t count;
	uint64_t chunk;
	unsigned parity;
	bool have_dir;
	int rc;
};

static int snap_flush(struct snap_ctx *c)
{
	if (!c->count)
		return 0;
	struct repl_hdr h;
	struct repl *rp = c->rp;
	repl_hdr_fill(&h, REPL_SNAP_CHUNK, c->count, rp->snap_tick, c->chunk, 0, 0);
	memcpy(c->buf, &h, sizeof(h));
	char id[64], subject[160];
	snprintf(id, sizeof(id), "snap-%" PRIu64 "-%" PRIu64, rp->snap_tick, c->chunk);
	snprintf(subject, sizeof(subject), "%s.snapchunk.%u.%" PRIu64, rp->stream, c->parity, c->chunk);
	pthread_mutex_lock(&rp->pub_mu);
	natsStatus s = rp->resyncing || !rp->leading ? NATS_ILLEGAL_STATE : NATS_OK;
	if (s == NATS_OK)
		/* Rolled up: the chunk this one replaces (same parity, same
		 * index) belongs to a snapshot no index names any more. */
		s = append_locked(rp, subject, c->buf, c->len, id, true);
	pthread_mutex_unlock(&rp->pub_mu);
	if (s != NATS_OK)
		return -EIO;
	c->chunk++;
	c->count = 0;
	c->len = sizeof(h);
	c->have_dir = false;
	return 0;
}

static int snap_rec(const struct shm_change *ch, void *arg)
{
	struct snap_ctx *c = arg;
	if (ch->kind == SHM_CHANGE_RESET)
		return 0;
	bool dir = ch->kind == SHM_CHANGE_MKDIR;
	if (!dir && ch->kind != SHM_CHANGE_PUT)
		return 0;
	size_t dlen = dir || !c->have_dir ? ch->dir_len : 0;
	size_t klen = dir ? 0 : ch->key_len, vlen = dir ? 0 : ch->value_len;
	size_t n = sizeof(struct repl_snaprec) + ((dlen + klen + vlen + 7) & ~(size_t)7);
	if (c->len + n > CHUNK_BYTES && c->count) {
		int rc = snap_flush(c);
		if (rc < 0)
			return rc;
		dlen = ch->dir_len;
		n = sizeof(struct repl_snaprec) + ((dlen + klen + vlen + 7) & ~(size_t)7);
	}
	if (c->len + n > c->cap) {
		size_t cap = c->cap * 2 > c->len + n ? c->cap * 2 : c->len + n;
		uint8_t *b = realloc(c->buf, cap);
		if (!b)
			return -ENOMEM;
		c->buf = b;
		c->cap = cap;
	}
	struct repl_snaprec r = {
		.type = dir ? 1 : 2,
		.dir_len = (uint16_t)dlen,
		.key_len = (uint32_t)klen,
		.value_len = (uint32_t)vlen,
		.tick = dir ? 0 : ch->version_tick,
	};
	uint8_t *p = c->buf + c->len;
	memset(p, 0, n);
	memcpy(p, &r, sizeof(r));
	p += sizeof(r);
	memcpy(p, ch->dir, dlen);
	if (klen)
		memcpy(p + dlen, ch->key, klen);
	if (vlen)
		memcpy(p + dlen + klen, ch->value, vlen);
	c->len += n;
	c->count++;
	c->have_dir = true;
	return 0;
}

static void *snap_main(void *arg)
{
	struct repl *rp = arg;
	struct shm_seg seg;
	struct shm_err err;
	struct snap_ctx c = {.rp = rp,
			     .len = sizeof(struct repl_hdr),
			     .cap = CHUNK_BYTES + 4096,
			     .parity = 1 - rp->idx_parity};
	c.buf = malloc(c.cap);
	int rc = c.buf ? shm_seg_open_reader(&seg, rp->snap_fd, &err) : -ENOMEM;
	if (rc == 0) {
		rc = shm_full_state(&seg, rp->snap_tick, snap_rec, &c);
		shm_seg_close(&seg);
	}
	/* The state is copied out: the root may free what the tick pinned. */
	atomic_store(rp->snap_pin, UINT64_MAX);
	if (rc >= 0)
		rc = snap_flush(&c);
	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.MaxWait = 30000;
	if (rc >= 0 && js_PublishAsyncComplete(rp->js, &po) != NATS_OK)
		rc = -EIO;
	if (atomic_load(&rp->snap_failed) || c.chunk == 0)
		rc = -EIO; /* a chunk is missing: no index may point at it */
	if (rc >= 0) {
		/* Whole: index it. Nothing is purged: the ticks stay (README,
		 * "Replication": filtered purges lost messages in our tests
		 * with nats-server 2.9 under node restarts), and the other
		 * parity's chunks stay until the next snapshot replaces them. */
		struct repl_hdr h;
		repl_hdr_fill(&h, REPL_SNAP_IDX, 0, rp->snap_tick, c.parity, c.chunk, rp->snap_tick_seq);
		pthread_mutex_lock(&rp->pub_mu);
		natsStatus s = rp->resyncing || !rp->leading
				       ? NATS_ILLEGAL_STATE
				       : append_locked(rp, rp->subj_idx, &h, sizeof(h), NULL, true);
		pthread_mutex_unlock(&rp->pub_mu);
		if (s == NATS_OK && js_PublishAsyncComplete(rp->js, &po) == NATS_OK &&
		    atomic_load(&rp->idx_tick) == rp->snap_tick && !atomic_load(&rp->snap_failed))
			rp->idx_parity = c.parity;
	}
	free(c.buf);
	atomic_store(&rp->snap_busy, false);
	return NULL;
}

bool repl_snapshot_due(struct repl *rp)
{
	if (atomic_load(&rp->snap_busy) || !rp->leading)
		return false;
	pthread_mutex_lock(&rp->pub_mu);
	bool due = (rp->o.snapshot_ticks && rp->ticks_since_snap >= rp->o.snapshot_ticks) ||
		   (rp->o.snapshot_bytes && rp->bytes_since_snap >= rp->o.snapshot_bytes);
	pthread_mutex_unlock(&rp->pub_mu);
	return due;
}

int repl_snapshot_start(struct repl *rp, int seg_fd, uint64_t tick, _Atomic uint64_t *pin)
{
	if (atomic_load(&rp->snap_busy))
		return -EBUSY;
	if (rp->snap_started) {
		pthread_join(rp->snap_thr, NULL);
		rp->snap_started = false;
	}
	pthread_mutex_lock(&rp->pub_mu);
	/* Where a replay after this snapshot starts: at a tick the stream
	 * surely holds, at or before `tick` (those in between are replayed
	 * and skipped as already in the snapshot). */
	rp->snap_tick_seq = atomic_load(&rp->stored_seq);
	rp->ticks_since_snap = rp->bytes_since_snap = 0;
	pthread_mutex_unlock(&rp->pub_mu);
	rp->snap_fd = seg_fd;
	rp->snap_tick = tick;
	atomic_store(&rp->snap_failed, false);
	rp->snap_pin = pin;
	atomic_store(pin, tick);
	atomic_store(&rp->snap_busy, true);
	int e = pthread_create(&rp->snap_thr, NULL, snap_main, rp);
	if (e) {
		atomic_store(pin, UINT64_MAX);
		atomic_store(&rp->snap_busy, false);
		return -e;
	}
	rp->snap_started = true;
	return 0;
}

void repl_stats(struct repl *rp, struct repl_stats *st)
{
	st->role = rp->leading ? 1 : 2;
	st->published_tick = atomic_load(&rp->published_tick);
	st->stored_tick = atomic_load(&rp->stored_tick);
	st->lag_bytes = atomic_load(&rp->lag_bytes);
	st->applied_seq = atomic_load(&rp->applied_seq);
	st->last_seq = atomic_load(&rp->stream_last);
}
