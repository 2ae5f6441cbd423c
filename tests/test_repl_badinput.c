/* Replication: bad input at start. A root pointed at something it cannot
 * use refuses with a message that names the problem, exits 1, leaves no
 * socket behind, and changes nothing in NATS: no append, no lease, no
 * stream or bucket made.
 *   a  an unreachable NATS URL;
 *   b  a stream that is not shmsync's: one made by someone else (other
 *      subjects; or shmsync's subjects without rollups), and one of
 *      shmsync's own whose ticks subject holds a foreign payload;
 *   c  a snapshot index written by another segment layout;
 *   d  a tick that skips ticks (the ones between are gone).
 * The crafted payloads are built byte by byte (little-endian, 56-byte
 * header) rather than from repl.h, so that a change of the stream format in
 * the library shows up here as a failure instead of following silently. */
#ifdef SHMSYNC_TEST_NO_NATS
#include "testutil.h"

int main(void)
{
	fprintf(stderr, "SKIP: built without libnats: no replication to test\n");
	return T_SKIP;
}
#else
#include <nats/nats.h>

#include "repl_support.h"

#define HDR_LEN 56
#define KIND_TICK 1u
#define KIND_SNAP_IDX 4u
#define REFUSE_NS 15000000000LL /* every refusal here is prompt: a hang is a failure too */

static int fails;

/* Roots this test started and has not stopped: killed on any exit, so a
 * failed check leaves no root behind talking to a cluster that is gone. */
static pid_t live[16];

static void track(pid_t pid, bool add)
{
	for (int i = 0; i < 16; i++)
		if (add ? live[i] == 0 : live[i] == pid) {
			live[i] = add ? pid : 0;
			return;
		}
}

static void kill_live(void)
{
	for (int i = 0; i < 16; i++)
		if (live[i] > 0) {
			kill(live[i], SIGKILL);
			waitpid(live[i], NULL, 0);
			live[i] = 0;
		}
}

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* struct repl_hdr: magic[8], format, layout, kind, count (u32), tick, a, b, c (u64). */
static void make_hdr(uint8_t h[HDR_LEN], uint32_t format, uint32_t layout, uint32_t kind, uint32_t count,
		     uint64_t tick, uint64_t a, uint64_t b, uint64_t c)
{
	memcpy(h, "shmsyncR", 8);
	put_u32(h + 8, format);
	put_u32(h + 12, layout);
	put_u32(h + 16, kind);
	put_u32(h + 20, count);
	put_u64(h + 24, tick);
	put_u64(h + 32, a);
	put_u64(h + 40, b);
	put_u64(h + 48, c);
}

/* ---- NATS, seen from outside -------------------------------------------- */

struct js {
	natsConnection *nc;
	jsCtx *js;
};

static void js_open(struct js *j, const struct rt *t)
{
	natsStatus s = natsConnection_ConnectTo(&j->nc, t->urls);
	if (s == NATS_OK)
		s = natsConnection_JetStream(&j->js, j->nc, NULL);
	if (s != NATS_OK)
		T_FAIL("connecting to %s: %s", t->urls, natsStatus_GetText(s));
}

static void js_close(struct js *j)
{
	jsCtx_Destroy(j->js);
	natsConnection_Destroy(j->nc);
}

/* What a failed root must leave as it found: the stream's whole config as
 * text, and its contents' extent. */
struct stream_seen {
	bool exists;
	uint64_t msgs, bytes, first, last;
	char cfg[1024];
};

static void stream_look(struct js *j, const char *name, struct stream_seen *out)
{
	memset(out, 0, sizeof(*out));
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus s = js_GetStreamInfo(&si, j->js, name, NULL, &jerr);
	if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
		return;
	if (s != NATS_OK)
		T_FAIL("stream info of %s: %s (JetStream error %d)", name, natsStatus_GetText(s), (int)jerr);
	out->exists = true;
	out->msgs = si->State.Msgs;
	out->bytes = si->State.Bytes;
	out->first = si->State.FirstSeq;
	out->last = si->State.LastSeq;
	const jsStreamConfig *c = si->Config;
	size_t n = (size_t)snprintf(
		out->cfg, sizeof(out->cfg),
		"name=%s desc=%s retention=%d max_msgs=%lld max_bytes=%lld max_age=%lld max_msg_size=%d "
		"storage=%d replicas=%lld rollup=%d deny_delete=%d deny_purge=%d sealed=%d subjects=",
		c->Name ? c->Name : "", c->Description ? c->Description : "", (int)c->Retention,
		(long long)c->MaxMsgs, (long long)c->MaxBytes, (long long)c->MaxAge, (int)c->MaxMsgSize,
		(int)c->Storage, (long long)c->Replicas, c->AllowRollup, c->DenyDelete, c->DenyPurge,
		c->Sealed);
	for (int i = 0; i < c->SubjectsLen && n < sizeof(out->cfg); i++)
		n += (size_t)snprintf(out->cfg + n, sizeof(out->cfg) - n, "%s,", c->Subjects[i]);
	jsStreamInfo_Destroy(si);
}

static void check_unchanged(const char *what, const struct stream_seen *before,
			    const struct stream_seen *after)
{
	T_CHECK(fails, after->exists == before->exists, "%s: stream %s", what,
		after->exists ? "appeared" : "vanished");
	T_CHECK(fails, strcmp(before->cfg, after->cfg) == 0,
		"%s: the stream's config changed:\n  before %s\n  after  %s", what, before->cfg, after->cfg);
	T_CHECK(fails,
		after->msgs == before->msgs && after->last == before->last && after->first == before->first &&
			after->bytes == before->bytes,
		"%s: the stream changed: %llu messages, sequences %llu..%llu, %llu bytes before; %llu, "
		"%llu..%llu, "
		"%llu after",
		what, (unsigned long long)before->msgs, (unsigned long long)before->first,
		(unsigned long long)before->last, (unsigned long long)before->bytes,
		(unsigned long long)after->msgs, (unsigned long long)after->first,
		(unsigned long long)after->last, (unsigned long long)after->bytes);
}

/* A failed root must not hold the stream's lease: the next leader would
 * wait out its TTL. (After a clean stop the key is deleted, which reads as
 * absent.) */
static void check_no_lease(struct js *j, const char *what, const char *stream)
{
	char bucket[128];
	snprintf(bucket, sizeof(bucket), "shmsync_%s", stream);
	kvStore *kv = NULL;
	natsStatus s = js_KeyValue(&kv, j->js, bucket);
	if (s != NATS_OK) {
		T_CHECK(fails, s == NATS_NOT_FOUND, "%s: lease bucket %s: %s", what, bucket,
			natsStatus_GetText(s));
		return;
	}
	kvEntry *e = NULL;
	s = kvStore_Get(&e, kv, "leader");
	T_CHECK(fails, s == NATS_NOT_FOUND, "%s: the lease of %s is held (by %s) after the root failed", what,
		stream, s == NATS_OK ? kvEntry_ValueString(e) : natsStatus_GetText(s));
	if (e)
		kvEntry_Destroy(e);
	kvStore_Destroy(kv);
}

static uint64_t publish(struct js *j, const char *subject, const void *data, size_t len)
{
	jsPubAck *pa = NULL;
	jsErrCode jerr = 0;
	natsStatus s = js_Publish(&pa, j->js, subject, data, (int)len, NULL, &jerr);
	if (s != NATS_OK)
		T_FAIL("publishing to %s: %s (JetStream error %d)", subject, natsStatus_GetText(s),
		       (int)jerr);
	uint64_t seq = pa->Sequence;
	jsPubAck_Destroy(pa);
	return seq;
}

/* The header of the last message on STREAM.ticks: this build's own stream
 * format and layout, read rather than copied from repl.h. */
struct tick_seen {
	uint32_t format, layout;
	uint64_t tick, log_size;
};

static void last_tick(struct js *j, const char *stream, struct tick_seen *out)
{
	char subject[96];
	snprintf(subject, sizeof(subject), "%s.ticks", stream);
	natsMsg *m = NULL;
	jsErrCode jerr = 0;
	natsStatus s = js_GetLastMsg(&m, j->js, stream, subject, NULL, &jerr);
	if (s != NATS_OK)
		T_FAIL("reading %s: %s (JetStream error %d)", subject, natsStatus_GetText(s), (int)jerr);
	T_ASSERT(natsMsg_GetDataLength(m) >= HDR_LEN);
	const uint8_t *d = (const uint8_t *)natsMsg_GetData(m);
	T_ASSERT(memcmp(d, "shmsyncR", 8) == 0);
	T_EQ(get_u32(d + 16), KIND_TICK);
	out->format = get_u32(d + 8);
	out->layout = get_u32(d + 12);
	out->tick = get_u64(d + 24);
	out->log_size = get_u64(d + 32);
	natsMsg_Destroy(m);
}

/* ---- roots ---------------------------------------------------------------- */

static pid_t start_root(struct rt *t, const char *sock, const char *const *args)
{
	int st = 0;
	pid_t pid = rt_serve(t, sock, args, 20000000000LL, &st);
	if (pid < 0)
		T_FAIL("root %s exited (status %d) instead of serving (see %s/%s.log)", sock, st, t->dir,
		       sock);
	track(pid, true);
	return pid;
}

/* SIGTERM: the root hands its lease back and exits 0. */
static void stop_root(pid_t pid, const char *sock)
{
	kill(pid, SIGTERM);
	int st = rt_wait_exit(pid, 10000000000LL);
	if (st < 0)
		T_FAIL("root %s ignored SIGTERM for 10 s", sock);
	track(pid, false);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		T_FAIL("root %s stopped with status %d, not 0", sock, st);
}

/* `shmsync serve` that must refuse: its wait status, once it exited on its
 * own within wait_ns. Serving (the socket appeared) or running on past
 * wait_ns counts as a failure of the check, and the process is killed. */
static int refused(struct rt *t, const char *sock, const char *const *args, int64_t wait_ns)
{
	char path[512], log[512];
	snprintf(path, sizeof(path), "%s/%s.sock", t->dir, sock);
	snprintf(log, sizeof(log), "%s/%s.log", t->dir, sock);
	const char *argv[40] = {rt_env("SHMSYNC_TOOL"), "serve", "-q", "-s", path};
	int n = 5;
	for (int i = 0; args[i] && n < 38; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0)
			dup2(fd, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	track(pid, true);
	int64_t t0 = rt_now_ns(), end = t0 + wait_ns;
	bool served = false;
	int st = -1;
	while (!served && rt_now_ns() < end) {
		if (waitpid(pid, &st, WNOHANG) == pid) {
			track(pid, false);
			printf("  %s: exited %d after %.2f s\n", sock, WIFEXITED(st) ? WEXITSTATUS(st) : -1,
			       (double)(rt_now_ns() - t0) / 1e9);
			T_CHECK(fails, WIFEXITED(st) && WEXITSTATUS(st) == 1,
				"%s: status %d where exit 1 belongs (see %s)", sock, st, log);
			T_CHECK(fails, access(path, F_OK) != 0 && errno == ENOENT,
				"%s: its socket %s is left behind", sock, path);
			return st;
		}
		served = access(path, F_OK) == 0;
		rt_sleep_ms(10);
	}
	T_CHECK(fails, false, "%s: %s (see %s)", sock,
		served ? "started serving where it must refuse"
		       : "still running: it neither refused nor served",
		log);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	track(pid, false);
	unlink(path);
	return -1;
}

static void check_log(struct rt *t, const char *sock, const char *text)
{
	T_CHECK(fails, rt_log_has(t, sock, text), "%s: its log (%s/%s.log) does not say \"%s\"", sock, t->dir,
		sock, text);
}

/* A stream of shmsync's own: a leader that made it and committed `puts`
 * batches, stopped cleanly. The tick it reached. */
static uint64_t make_stream(struct rt *t, const char *stream, int puts)
{
	char sock[64], path[512];
	snprintf(sock, sizeof(sock), "%s-maker", stream);
	const char *args[] = {"--replicate", t->urls, "--stream", stream, "--replicas", "3", NULL};
	pid_t pid = start_root(t, sock, args);
	rt_sock(t, sock, path, sizeof(path));
	rt_mkdir(path, "/b/");
	shmsync_worker *w;
	T_OK(shmsync_attach(&w, path));
	for (int i = 0; i < puts; i++) {
		char key[32], val[32];
		int kn = snprintf(key, sizeof(key), "k%d", i);
		int vn = snprintf(val, sizeof(val), "value %d", i);
		shmsync_batch *b;
		uint64_t seq, tick;
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_put(b, "/b/", key, (size_t)kn, val, (size_t)vn));
		T_OK(shmsync_export(b, 0, &seq));
		T_OK(shmsync_wait_committed(w, seq, &tick, 20000000000LL));
	}
	shmsync_stats st;
	T_OK(shmsync_stat(w, &st));
	shmsync_detach(w);
	stop_root(pid, sock);
	return st.tick;
}

/* ---- the cases -------------------------------------------------------------- */

static void case_unreachable(struct rt *t)
{
	printf("a) unreachable NATS\n");
	/* Port 1 on loopback: nothing listens, so the connect fails at once. */
	const char *args[] = {"--replicate", "nats://127.0.0.1:1", "--stream", "x", NULL};
	if (refused(t, "a-unreachable", args, 5000000000LL) >= 0)
		check_log(t, "a-unreachable", "cannot reach NATS");
}

static void case_foreign(struct rt *t, struct js *j)
{
	printf("b1) a stream made by someone else\n");
	jsStreamConfig cfg;
	jsStreamConfig_Init(&cfg);
	const char *subjects[] = {"foreign.>"};
	cfg.Name = "foreign";
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_FileStorage;
	jsErrCode jerr = 0;
	natsStatus s = js_AddStream(NULL, j->js, &cfg, NULL, &jerr);
	if (s != NATS_OK)
		T_FAIL("creating stream foreign: %s (JetStream error %d)", natsStatus_GetText(s), (int)jerr);
	publish(j, "foreign.orders", "someone else's data", strlen("someone else's data"));

	struct stream_seen before, after, kv;
	stream_look(j, "foreign", &before);
	T_ASSERT(before.exists && before.msgs == 1);
	const char *lead[] = {"--replicate", t->urls, "--stream", "foreign", NULL};
	const char *follow[] = {"--follow", t->urls, "--stream", "foreign", NULL};
	if (refused(t, "b1-lead", lead, REFUSE_NS) >= 0)
		check_log(t, "b1-lead", "holds something else");
	if (refused(t, "b1-follow", follow, REFUSE_NS) >= 0)
		check_log(t, "b1-follow", "holds something else");
	stream_look(j, "foreign", &after);
	check_unchanged("b1 foreign", &before, &after);
	/* The stream check comes before the lease bucket is made. */
	stream_look(j, "KV_shmsync_foreign", &kv);
	T_CHECK(fails, !kv.exists, "b1: a lease bucket was made for a stream that is not shmsync's");

	/* shmsync's subjects, but a stream that forbids the rollups its
	 * snapshot index needs: made by someone else, not to be taken over. */
	printf("b1') shmsync's subjects without rollups\n");
	const char *subjects2[] = {"norollup.ticks", "norollup.snapidx", "norollup.snapchunk.>"};
	jsStreamConfig_Init(&cfg);
	cfg.Name = "norollup";
	cfg.Subjects = subjects2;
	cfg.SubjectsLen = 3;
	cfg.Storage = js_FileStorage;
	s = js_AddStream(NULL, j->js, &cfg, NULL, &jerr);
	if (s != NATS_OK)
		T_FAIL("creating stream norollup: %s (JetStream error %d)", natsStatus_GetText(s), (int)jerr);
	publish(j, "norollup.ticks", "not a tick", strlen("not a tick"));
	stream_look(j, "norollup", &before);
	const char *lead2[] = {"--replicate", t->urls, "--stream", "norollup", NULL};
	if (refused(t, "b1-norollup", lead2, REFUSE_NS) >= 0)
		check_log(t, "b1-norollup", "not made by shmsync");
	stream_look(j, "norollup", &after);
	check_unchanged("b1 norollup", &before, &after);
}

static void case_junk_tick(struct rt *t, struct js *j)
{
	printf("b2) shmsync's stream with a foreign payload among its ticks\n");
	make_stream(t, "junk", 1);
	uint64_t seq = publish(j, "junk.ticks", "hello", 5);
	struct stream_seen before, after;
	stream_look(j, "junk", &before);
	T_EQ(before.last, seq);
	const char *lead[] = {"--replicate", t->urls, "--stream", "junk", NULL};
	const char *follow[] = {"--follow", t->urls, "--stream", "junk", NULL};
	if (refused(t, "b2-lead", lead, REFUSE_NS) >= 0)
		check_log(t, "b2-lead", "not shmsync's");
	if (refused(t, "b2-follow", follow, REFUSE_NS) >= 0)
		check_log(t, "b2-follow", "not shmsync's");
	stream_look(j, "junk", &after);
	check_unchanged("b2", &before, &after);
	check_no_lease(j, "b2", "junk");
}

static void case_layout(struct rt *t, struct js *j)
{
	printf("c) a snapshot index of another segment layout\n");
	make_stream(t, "layout", 3);
	uint8_t h[HDR_LEN];
	make_hdr(h, 1, 999, KIND_SNAP_IDX, 0, 1, 1, 1, 1);
	publish(j, "layout.snapidx", h, sizeof(h));
	struct stream_seen before, after;
	stream_look(j, "layout", &before);
	const char *lead[] = {"--replicate", t->urls, "--stream", "layout", NULL};
	const char *follow[] = {"--follow", t->urls, "--stream", "layout", NULL};
	if (refused(t, "c-lead", lead, REFUSE_NS) >= 0)
		check_log(t, "c-lead", "segment layout 999");
	if (refused(t, "c-follow", follow, REFUSE_NS) >= 0)
		check_log(t, "c-follow", "segment layout 999");
	stream_look(j, "layout", &after);
	check_unchanged("c", &before, &after);
	check_no_lease(j, "c", "layout");

	/* This build's format and layout, but a tick no snapshot has (tick 1
	 * is the empty state): the stream's fault, so exit 1, not 2 (bad
	 * arguments). */
	printf("c') a snapshot index at tick 0\n");
	struct tick_seen ts;
	last_tick(j, "layout", &ts);
	make_hdr(h, ts.format, ts.layout, KIND_SNAP_IDX, 0, 0, 0, 0, 0);
	publish(j, "layout.snapidx", h, sizeof(h));
	stream_look(j, "layout", &before);
	if (refused(t, "c-tick0", lead, REFUSE_NS) >= 0)
		check_log(t, "c-tick0", "snapshot index at tick 0");
	stream_look(j, "layout", &after);
	check_unchanged("c'", &before, &after);
	check_no_lease(j, "c'", "layout");
}

static void case_gap(struct rt *t, struct js *j)
{
	printf("d) a tick gap\n");
	uint64_t last = make_stream(t, "gap", 4);

	/* The bogus tick repeats the leader's format, layout and log size, so
	 * that nothing but the gap is wrong with it. */
	struct tick_seen ts;
	last_tick(j, "gap", &ts);
	/* Every committed tick is in the stream: the leader published the one
	 * stat named last. */
	T_EQ(ts.tick, last);

	uint8_t h[HDR_LEN];
	make_hdr(h, ts.format, ts.layout, KIND_TICK, 0, last + 5, ts.log_size, 0, 0);
	publish(j, "gap.ticks", h, sizeof(h));
	struct stream_seen before, after;
	stream_look(j, "gap", &before);
	char at[96];
	/* Replayed every real tick first: the gap is found where it is. */
	snprintf(at, sizeof(at), "at tick %llu and the stream's next tick is %llu", (unsigned long long)last,
		 (unsigned long long)(last + 5));
	const char *lead[] = {"--replicate", t->urls, "--stream", "gap", NULL};
	const char *follow[] = {"--follow", t->urls, "--stream", "gap", NULL};
	if (refused(t, "d-lead", lead, REFUSE_NS) >= 0) {
		check_log(t, "d-lead", "tick gap");
		check_log(t, "d-lead", at);
	}
	if (refused(t, "d-follow", follow, REFUSE_NS) >= 0) {
		check_log(t, "d-follow", "tick gap");
		check_log(t, "d-follow", at);
	}
	stream_look(j, "gap", &after);
	check_unchanged("d", &before, &after);
	check_no_lease(j, "d", "gap");
}

int main(void)
{
	struct rt t;
	rt_start(&t, "badinput", 18222);
	/* After rt_start's: runs first, so no root outlives the cluster. */
	atexit(kill_live);
	struct js j;
	js_open(&j, &t);

	case_unreachable(&t);
	case_foreign(&t, &j);
	case_junk_tick(&t, &j);
	case_layout(&t, &j);
	case_gap(&t, &j);

	js_close(&j);
	nats_Close();
	if (fails) {
		fprintf(stderr, "%d check(s) failed (logs in %s)\n", fails, t.dir);
		return 1;
	}
	return rt_pass();
}
#endif
