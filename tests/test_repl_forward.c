/* Replication: the leader's side of forwarding, driven by a forged follower
 * over NATS, so that every order of arrival can be made on purpose.
 *
 * A follower stops sending a forward once its worker was told "unknown"
 * (no answer in 20 s, an answer from another epoch, a send that failed).
 * If the leader never got that id, the ids after it must still apply: the
 * follower's floor (<inbox>.<epoch>.<floor>.<id>) lets the leader skip it,
 * and nothing it skipped is ever applied afterwards. Without the floor,
 * one lost forward held back every later one of that follower for good.
 * Also: a resend is answered from the leader's cache and not applied
 * again, forwards apply in id order, a floor above the forward's own id is
 * ignored, and malformed reply subjects get no answer and hurt nothing. */
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
#include "wire.h"

#define INBOX "_INBOX.forgedfollower"
#define NO_ANSWER_MS 3000 /* the leader answers a forward it applies in ms; this is "none" */

static natsConnection *g_nc;
static natsSubscription *g_sub;
static uint64_t g_epoch;

/* A worker's record: put /f/<key> = <key>. */
static size_t record(uint8_t *out, size_t cap, const char *key)
{
	struct wire_buf b;
	wire_init(&b);
	struct shm_op op = {.kind = SHM_OP_PUT,
			    .dir = "/f/",
			    .dir_len = 3,
			    .key = key,
			    .key_len = strlen(key),
			    .value = key,
			    .value_len = strlen(key)};
	T_OK(wire_append(&b, &op, 1 << 20));
	size_t len = wire_seal(&b, 1);
	T_ASSERT(len <= cap);
	memcpy(out, b.data, len);
	wire_free(&b);
	return len;
}

static void send_raw(const char *reply, const char *key)
{
	uint8_t rec[256];
	size_t len = record(rec, sizeof(rec), key);
	T_ASSERT(natsConnection_PublishRequest(g_nc, "_shmsync.fwd.fwd", reply, rec, (int)len) == NATS_OK);
	T_ASSERT(natsConnection_Flush(g_nc) == NATS_OK);
}

static void send_fwd(uint64_t floor, uint64_t id, const char *key)
{
	char reply[160];
	snprintf(reply, sizeof(reply), INBOX ".%llu.%llu.%llu", (unsigned long long)g_epoch,
		 (unsigned long long)floor, (unsigned long long)id);
	send_raw(reply, key);
}

/* The next answer within wait_ms: 1 and its id and result, or 0. */
static int answer(int wait_ms, uint64_t *id, int64_t *result)
{
	natsMsg *m = NULL;
	natsStatus s = natsSubscription_NextMsg(&m, g_sub, wait_ms);
	if (s == NATS_TIMEOUT)
		return 0;
	T_ASSERT(s == NATS_OK);
	const char *subj = natsMsg_GetSubject(m);
	const char *dot = strrchr(subj, '.');
	T_ASSERT(dot && natsMsg_GetDataLength(m) == 8);
	*id = strtoull(dot + 1, NULL, 10);
	const uint8_t *b = (const uint8_t *)natsMsg_GetData(m);
	uint64_t u = 0;
	for (int i = 7; i >= 0; i--)
		u = u << 8 | b[i];
	*result = (int64_t)u;
	natsMsg_Destroy(m);
	return 1;
}

/* The answer to `id` must come, and be a tick (applied). */
static int64_t expect_applied(uint64_t id)
{
	uint64_t got = 0;
	int64_t result = 0;
	if (!answer(10000, &got, &result))
		T_FAIL("forward %llu: no answer from the leader in 10 s", (unsigned long long)id);
	if (got != id || result <= 0)
		T_FAIL("forward %llu: answer for %llu, result %lld (want a tick)", (unsigned long long)id,
		       (unsigned long long)got, (long long)result);
	return result;
}

static void expect_silence(const char *why)
{
	uint64_t got = 0;
	int64_t result = 0;
	if (answer(NO_ANSWER_MS, &got, &result))
		T_FAIL("%s: the leader answered forward %llu (%lld)", why, (unsigned long long)got,
		       (long long)result);
}

static bool present(const char *path, const char *key, uint64_t *tick)
{
	shmsync_worker *w;
	T_OK(shmsync_attach(&w, path));
	T_OK(shmsync_import_until(w, rt_tick(path), 10000000000LL, NULL, NULL));
	shmsync_view v;
	int rc = shmsync_get(w, "/f/", key, strlen(key), &v);
	T_ASSERT(rc == 0 || rc == -ENOENT);
	if (rc == 0 && tick)
		*tick = v.tick;
	shmsync_detach(w);
	return rc == 0;
}

int main(void)
{
	struct rt t;
	rt_start(&t, "forward", 27222);
	char lp[512];
	rt_sock(&t, "leader", lp, sizeof(lp));
	const char *largs[] = {"--replicate", t.urls, "--stream", "fwd", "--replicas", "1", NULL};
	pid_t leader = rt_serve(&t, "leader", largs, 20000000000LL, NULL);
	T_ASSERT(leader > 0);
	rt_mkdir(lp, "/f/");

	T_ASSERT(natsConnection_ConnectTo(&g_nc, t.urls) == NATS_OK);
	T_ASSERT(natsConnection_SubscribeSync(&g_sub, g_nc, INBOX ".>") == NATS_OK);
	/* A fresh stream's first message is the leader's marker: epoch 1. An
	 * older epoch than the leader's gets -ETIMEDOUT, a newer one
	 * -EREMCHG, so an answer that is a tick proves the epoch right. */
	g_epoch = 1;
	send_fwd(1, 1, "k1");
	int64_t t1 = expect_applied(1);
	printf("forward 1 applied at tick %lld\n", (long long)t1);

	/* Forward 2 is lost for good: the follower gave up on it and sends 3
	 * with floor 3. The leader applies 3 and never 2. */
	send_fwd(3, 3, "k3");
	expect_applied(3);
	send_fwd(2, 2, "k2"); /* a late copy of the lost one */
	expect_silence("a copy of forward 2 that came after the floor passed it");
	T_ASSERT(!present(lp, "k2", NULL));
	T_ASSERT(present(lp, "k3", NULL));

	/* A resend of 3 is answered again (its first answer was lost), from
	 * the cache: the same tick, and k3 still has that version. */
	uint64_t k3_tick = 0;
	T_ASSERT(present(lp, "k3", &k3_tick));
	send_fwd(3, 3, "k3");
	T_EQ(expect_applied(3), (int64_t)k3_tick);
	uint64_t again = 0;
	T_ASSERT(present(lp, "k3", &again));
	T_EQ(again, k3_tick);

	/* Order still holds below the floor's reach: 5 ahead of a 4 that is
	 * only late (floor 4) waits; 4 applies, then 5 sent again applies. */
	send_fwd(4, 5, "k5");
	expect_silence("forward 5 ahead of 4");
	send_fwd(4, 4, "k4");
	expect_applied(4);
	send_fwd(4, 5, "k5");
	expect_applied(5);

	/* A floor above the forward's own id is not a follower's: ignored. */
	send_fwd(100, 6, "k6");
	expect_applied(6);
	send_fwd(7, 7, "k7");
	expect_applied(7);

	/* Malformed reply subjects: no answer, and the leader goes on. */
	send_raw(INBOX ".1.x.8", "bad1");
	send_raw(INBOX ".1.8", "bad2");                      /* no floor: the old form */
	send_raw(INBOX ".1.8.99999999999999999999", "bad3"); /* 20 digits */
	send_raw("_INBOX.1.8.0", "bad4");                    /* id 0 */
	send_raw(".1.8.8", "bad5");                          /* no inbox */
	expect_silence("malformed reply subjects");
	send_fwd(8, 8, "k8");
	expect_applied(8);
	T_ASSERT(!present(lp, "bad1", NULL) && !present(lp, "bad2", NULL) && !present(lp, "bad3", NULL) &&
		 !present(lp, "bad4", NULL) && !present(lp, "bad5", NULL));
	T_ASSERT(waitpid(leader, NULL, WNOHANG) == 0);

	natsSubscription_Destroy(g_sub);
	natsConnection_Destroy(g_nc);
	rt_stop_root(leader);
	return rt_pass();
}
#endif
