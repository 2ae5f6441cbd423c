/* Conditional writes across processes.
 *
 * - add: 4 workers each add +1 to one counter K = 2000 times, in batches of
 *   1..8 adds, several batches in flight: every batch is acked and the final
 *   counter is exactly 4 K (no lost increment); whenever a worker has
 *   imported past its own acked batches it sees at least its own adds.
 * - put_if_absent: in each of 300 rounds all 4 workers race for the same key
 *   (released together by a barrier): exactly one wait_committed returns 0,
 *   the others -EEXIST; the key holds the winner's value at the winner's
 *   tick, and a second put in each losing batch left no trace.
 * - put_if_tick, step by step between two workers: a stale expected tick
 *   gives -ECANCELED (and the batch leaves no trace) while the worker's
 *   snapshot still shows the old version; after import_until the fresh tick
 *   succeeds; 0 means "absent".
 * - put_if_tick under contention: 4 workers each make 300 read-modify-write
 *   increments of one counter with get + put_if_tick, retrying on
 *   -ECANCELED: the final value equals the number of successes (a stale
 *   tick that was accepted would lose an update).
 */
#include "synctest_conv.h"

#define NW 4
#define ADDS 2000
#define PIA_ROUNDS 300
#define CAS_INCS 300

static unsigned long long seed;
static struct cv_gate gate;

struct barrier {
	_Atomic unsigned count;
	_Atomic unsigned gen;
};

struct shared {
	struct barrier bar;
	_Atomic int64_t pia_rc[PIA_ROUNDS][NW]; /* the tick, or the error */
	_Atomic uint64_t cas_ok[NW], cas_conflicts[NW];
};

static struct shared *sh;

/* All NW workers meet here; spins (yielding) so that they leave together. */
static void barrier_wait(struct barrier *b)
{
	unsigned g = atomic_load(&b->gen);
	if (atomic_fetch_add(&b->count, 1) == NW - 1) {
		atomic_store(&b->count, 0);
		atomic_fetch_add(&b->gen, 1);
		return;
	}
	double end = st_now() + 20;
	while (atomic_load(&b->gen) == g) {
		if (st_now() > end)
			T_FAIL("barrier: the other workers did not arrive in 20 s");
		sched_yield();
	}
}

static int64_t get_counter(shmsync_worker *w, const char *dir, const char *key, uint64_t *tick)
{
	shmsync_view v;
	int rc = shmsync_get(w, dir, key, strlen(key), &v);
	if (rc == -ENOENT) {
		if (tick)
			*tick = 0;
		return 0;
	}
	T_OK(rc);
	T_EQ(v.len, 8);
	int64_t n;
	memcpy(&n, v.data, 8);
	if (tick)
		*tick = v.tick;
	return n;
}

/* ---- add ---------------------------------------------------------------- */

static int adder(void *arg)
{
	int id = (int)(intptr_t)arg;
	unsigned long long rng = seed + 101 * (unsigned long long)id;
	shmsync_worker *w = st_attach();
	cv_gate_arrive(&gate);
	enum { DEPTH = 16 };
	uint64_t seqs[DEPTH];
	int counts[DEPTH];
	int head = 0, n = 0, queued = 0, acked = 0, batches = 0;
	uint64_t last_tick = 0;
	while (acked < ADDS) {
		if (queued < ADDS && n < DEPTH) {
			int k = 1 + (int)(t_rand(&rng) % 8);
			if (k > ADDS - queued)
				k = ADDS - queued;
			shmsync_batch *b;
			T_OK(shmsync_begin(w, &b));
			for (int i = 0; i < k; i++)
				T_OK(shmsync_add(b, "/cnt/", "n", 1, 1));
			int slot = (head + n) % DEPTH;
			T_OK(shmsync_export(b, 0, &seqs[slot]));
			counts[slot] = k;
			n++;
			queued += k;
			batches++;
			continue;
		}
		uint64_t tick;
		int rc = shmsync_wait_committed(w, seqs[head], &tick, 10000000000LL);
		if (rc < 0)
			T_FAIL("adder %d: a batch of %d adds: %s", id, counts[head], shmsync_strerror(rc));
		T_ASSERT(tick >= last_tick);
		last_tick = tick;
		acked += counts[head];
		head = (head + 1) % DEPTH;
		n--;
		if (t_rand(&rng) % 8 == 0) {
			/* Past its own acked batches it must see at least its own
			 * adds, and never more than everyone's. */
			T_ASSERT(shmsync_import_until(w, last_tick, 5000000000LL, NULL, NULL) >= 0);
			int64_t c = get_counter(w, "/cnt/", "n", NULL);
			if (c < acked || c > NW * ADDS)
				T_FAIL("adder %d: counter %lld at tick %llu, with %d of its own adds acked",
				       id, (long long)c, (unsigned long long)shmsync_cursor(w), acked);
		}
	}
	printf("  adder %d: %d adds in %d batches, last at tick %llu\n", id, acked, batches,
	       (unsigned long long)last_tick);
	shmsync_detach(w);
	return 0;
}

/* ---- put_if_absent ------------------------------------------------------ */

static int racer(void *arg)
{
	int id = (int)(intptr_t)arg;
	shmsync_worker *w = st_attach();
	cv_gate_arrive(&gate);
	char key[32], side[48], val[16];
	int wins = 0;
	for (int r = 0; r < PIA_ROUNDS; r++) {
		snprintf(key, sizeof(key), "r%d", r);
		snprintf(side, sizeof(side), "side-r%d-w%d", r, id);
		int vn = snprintf(val, sizeof(val), "w%d", id);
		shmsync_batch *b;
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_put_if_absent(b, "/pia/", key, strlen(key), val, (size_t)vn));
		T_OK(shmsync_put(b, "/pia/", side, strlen(side), "x", 1));
		barrier_wait(&sh->bar);
		int64_t rc = st_commit(b);
		if (rc != -EEXIST && rc <= 0)
			T_FAIL("racer %d, round %d: %s", id, r, shmsync_strerror((int)rc));
		atomic_store(&sh->pia_rc[r][id], rc);
		wins += rc > 0;
	}
	printf("  racer %d: won %d of %d rounds\n", id, wins, PIA_ROUNDS);
	shmsync_detach(w);
	return 0;
}

/* ---- put_if_tick, step by step -------------------------------------------- */

static int a2b[2], b2a[2];

static void send_u64(int fd, uint64_t v)
{
	cv_write_full(fd, &v, sizeof(v));
}

static uint64_t recv_u64(int fd)
{
	uint64_t v;
	size_t got = 0;
	while (got < sizeof(v)) {
		ssize_t n = read(fd, (char *)&v + got, sizeof(v) - got);
		if (n < 0 && errno == EINTR)
			continue;
		T_ASSERT(n > 0);
		got += (size_t)n;
	}
	return v;
}

static void expect_value(shmsync_worker *w, const char *key, const char *val, uint64_t tick)
{
	shmsync_view v;
	int rc = shmsync_get(w, "/cas/", key, strlen(key), &v);
	if (rc < 0)
		T_FAIL("get /cas/%s: %s (expected %s at tick %llu)", key, shmsync_strerror(rc), val,
		       (unsigned long long)tick);
	if (v.len != strlen(val) || memcmp(v.data, val, v.len) != 0 || v.tick != tick)
		T_FAIL("/cas/%s is %.*s at tick %llu, expected %s at tick %llu", key, (int)v.len,
		       (const char *)v.data, (unsigned long long)v.tick, val, (unsigned long long)tick);
}

static int64_t put_if_tick(shmsync_worker *w, const char *key, const char *val, uint64_t expected,
			   const char *trace)
{
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_put_if_tick(b, "/cas/", key, strlen(key), val, strlen(val), expected));
	if (trace)
		T_OK(shmsync_put(b, "/cas/", trace, strlen(trace), "t", 1));
	return st_commit(b);
}

static int tick_a(void *arg)
{
	(void)arg;
	shmsync_worker *w = st_attach();
	shmsync_view v;
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_put(b, "/cas/", "x", 1, "a0", 2));
	int64_t t1 = st_commit(b);
	T_ASSERT(t1 > 0);
	T_ASSERT(shmsync_import_until(w, (uint64_t)t1, 5000000000LL, NULL, NULL) >= 0);
	expect_value(w, "x", "a0", (uint64_t)t1);
	send_u64(a2b[1], (uint64_t)t1);
	uint64_t t2 = recv_u64(b2a[0]); /* the other worker overwrote x at t2 */
	T_ASSERT(t2 > (uint64_t)t1);
	/* Not imported yet: the snapshot still shows the old version... */
	expect_value(w, "x", "a0", (uint64_t)t1);
	/* ...but the root checks the current one: the stale tick fails, and the
	 * whole batch with it. */
	T_EQ(put_if_tick(w, "x", "a2", (uint64_t)t1, "trace1"), -ECANCELED);
	T_ASSERT(shmsync_import_until(w, t2, 5000000000LL, NULL, NULL) >= 0);
	expect_value(w, "x", "b1", t2);
	T_EQ(shmsync_get(w, "/cas/", "trace1", 6, &v), -ENOENT);
	/* The fresh tick succeeds. */
	int64_t t3 = put_if_tick(w, "x", "a3", t2, "trace2");
	T_ASSERT(t3 > (int64_t)t2);
	T_ASSERT(shmsync_import_until(w, (uint64_t)t3, 5000000000LL, NULL, NULL) >= 0);
	expect_value(w, "x", "a3", (uint64_t)t3);
	expect_value(w, "trace2", "t", (uint64_t)t3);
	/* Stale again (t2 was replaced at t3), a tick from the future, and 0
	 * for a key that is present: all refused. */
	T_EQ(put_if_tick(w, "x", "a4", t2, NULL), -ECANCELED);
	T_EQ(put_if_tick(w, "x", "a5", (uint64_t)t3 + 1000, NULL), -ECANCELED);
	T_EQ(put_if_tick(w, "x", "a6", 0, NULL), -ECANCELED);
	/* 0 means absent: a new key, and a key after its deletion. */
	int64_t t4 = put_if_tick(w, "y", "y0", 0, NULL);
	T_ASSERT(t4 > t3);
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_del(b, "/cas/", "x", 1));
	int64_t t5 = st_commit(b);
	T_ASSERT(t5 > t4);
	T_EQ(put_if_tick(w, "x", "a7", (uint64_t)t3, NULL), -ECANCELED);
	int64_t t6 = put_if_tick(w, "x", "a8", 0, NULL);
	T_ASSERT(t6 > t5);
	T_ASSERT(shmsync_import_until(w, (uint64_t)t6, 5000000000LL, NULL, NULL) >= 0);
	expect_value(w, "x", "a8", (uint64_t)t6);
	expect_value(w, "y", "y0", (uint64_t)t4);
	/* A view is valid until the next import. */
	T_OK(shmsync_get(w, "/cas/", "x", 1, &v));
	T_EQ(shmsync_view_valid(w, &v), 1);
	T_ASSERT(shmsync_import_until(w, (uint64_t)t6, 5000000000LL, NULL, NULL) >= 0);
	shmsync_offline(w);
	T_EQ(shmsync_view_valid(w, &v), 0);
	printf("  put_if_tick: stale tick -ECANCELED without a trace, fresh tick ok, 0 = absent ok "
	       "(ticks %lld, %llu, %lld)\n",
	       (long long)t1, (unsigned long long)t2, (long long)t3);
	shmsync_detach(w);
	return 0;
}

static int tick_b(void *arg)
{
	(void)arg;
	shmsync_worker *w = st_attach();
	uint64_t t1 = recv_u64(a2b[0]);
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_put(b, "/cas/", "x", 1, "b1", 2));
	int64_t t2 = st_commit(b);
	T_ASSERT(t2 > (int64_t)t1);
	send_u64(b2a[1], (uint64_t)t2);
	shmsync_detach(w);
	return 0;
}

/* ---- put_if_tick under contention --------------------------------------- */

static int casser(void *arg)
{
	int id = (int)(intptr_t)arg;
	shmsync_worker *w = st_attach();
	cv_gate_arrive(&gate);
	uint64_t ok = 0, conflicts = 0;
	while (ok < CAS_INCS) {
		uint64_t tick;
		int64_t n = get_counter(w, "/cas/", "n", &tick);
		shmsync_batch *b;
		T_OK(shmsync_begin(w, &b));
		int64_t next = n + 1;
		T_OK(shmsync_put_if_tick(b, "/cas/", "n", 1, &next, 8, tick));
		int64_t t = st_commit(b);
		if (t > 0) {
			ok++;
			/* Read our own write, so that the next try starts fresh:
			 * exactly it at its tick, at least it later. */
			T_ASSERT(shmsync_import_until(w, (uint64_t)t, 5000000000LL, NULL, NULL) >= 0);
			uint64_t vt;
			int64_t now = get_counter(w, "/cas/", "n", &vt);
			if (vt == (uint64_t)t ? now != next : (now <= next || vt < (uint64_t)t))
				T_FAIL("casser %d: wrote %lld at tick %lld, "
				       "reads %lld at tick %llu (cursor %llu)",
				       id, (long long)next, (long long)t, (long long)now,
				       (unsigned long long)vt, (unsigned long long)shmsync_cursor(w));
			continue;
		}
		if (t != -ECANCELED)
			T_FAIL("casser %d: %s", id, shmsync_strerror((int)t));
		conflicts++;
		/* Someone wrote a newer version: it is published, so the next
		 * state is there already. */
		int rc = shmsync_import_next(w, 5000000000LL, NULL, NULL);
		if (rc < 0)
			T_FAIL("casser %d: import after a conflict: %s", id, shmsync_strerror(rc));
	}
	atomic_store(&sh->cas_ok[id], ok);
	atomic_store(&sh->cas_conflicts[id], conflicts);
	printf("  casser %d: %llu increments, %llu conflicts retried\n", id, (unsigned long long)ok,
	       (unsigned long long)conflicts);
	shmsync_detach(w);
	return 0;
}

/* ---- the parent ----------------------------------------------------------- */

/* The state the test starts from, one batch. */
static void fill_setup(shmsync_batch *b, void *arg)
{
	(void)arg;
	T_OK(shmsync_mkdir(b, "/cnt/"));
	T_OK(shmsync_mkdir(b, "/pia/"));
	T_OK(shmsync_mkdir(b, "/cas/"));
}

/* Reads the final state in a fresh worker and checks every part's result. */
static int checker(void *arg)
{
	(void)arg;
	shmsync_worker *w = st_attach();
	int64_t c = get_counter(w, "/cnt/", "n", NULL);
	if (c != NW * ADDS)
		T_FAIL("counter is %lld after %d acked adds of +1", (long long)c, NW * ADDS);
	printf("  counter: %lld = %d workers x %d adds\n", (long long)c, NW, ADDS);
	char key[32], side[48], val[16];
	for (int r = 0; r < PIA_ROUNDS; r++) {
		int winner = -1, losers = 0;
		for (int i = 0; i < NW; i++) {
			int64_t rc = atomic_load(&sh->pia_rc[r][i]);
			if (rc > 0) {
				if (winner >= 0)
					T_FAIL("put_if_absent round %d: workers %d and %d both won", r,
					       winner, i);
				winner = i;
			} else if (rc == -EEXIST) {
				losers++;
			} else {
				T_FAIL("put_if_absent round %d: worker %d got %lld", r, i, (long long)rc);
			}
		}
		if (winner < 0)
			T_FAIL("put_if_absent round %d: nobody won (%d -EEXIST)", r, losers);
		uint64_t wt = (uint64_t)atomic_load(&sh->pia_rc[r][winner]);
		snprintf(key, sizeof(key), "r%d", r);
		int vn = snprintf(val, sizeof(val), "w%d", winner);
		shmsync_view v;
		T_OK(shmsync_get(w, "/pia/", key, strlen(key), &v));
		if (v.len != (size_t)vn || memcmp(v.data, val, v.len) != 0 || v.tick != wt)
			T_FAIL("put_if_absent round %d: holds %.*s at tick %llu; "
			       "the winner was %s at tick %llu",
			       r, (int)v.len, (const char *)v.data, (unsigned long long)v.tick, val,
			       (unsigned long long)wt);
		for (int i = 0; i < NW; i++) {
			snprintf(side, sizeof(side), "side-r%d-w%d", r, i);
			int rc = shmsync_get(w, "/pia/", side, strlen(side), &v);
			if (i == winner && rc != 0)
				T_FAIL("round %d: the winner's second put is missing", r);
			if (i != winner && rc != -ENOENT)
				T_FAIL("round %d: worker %d lost, but its batch's second put is there", r, i);
		}
	}
	printf("  put_if_absent: %d rounds, exactly one winner each, losers left no trace\n", PIA_ROUNDS);
	uint64_t ok = 0, conflicts = 0;
	for (int i = 0; i < NW; i++) {
		ok += atomic_load(&sh->cas_ok[i]);
		conflicts += atomic_load(&sh->cas_conflicts[i]);
	}
	int64_t n = get_counter(w, "/cas/", "n", NULL);
	if (n != (int64_t)ok)
		T_FAIL("put_if_tick counter is %lld after %llu successful increments: an update was lost",
		       (long long)n, (unsigned long long)ok);
	printf("  put_if_tick counter: %lld after %llu successes and %llu conflicts\n", (long long)n,
	       (unsigned long long)ok, (unsigned long long)conflicts);
	shmsync_detach(w);
	return 0;
}

static void run_group(const char *name, int (*fn)(void *))
{
	pid_t kids[NW];
	cv_gate_init(&gate);
	for (int i = 0; i < NW; i++)
		kids[i] = cv_spawn(name, fn, (void *)(intptr_t)i);
	cv_gate_spawned(&gate);
	double t0 = st_now();
	cv_gate_open(&gate, NW);
	cv_wait_all(kids, NW, 100);
	cv_gate_done(&gate);
	printf("%s: done in %.2f s\n", name, st_now() - t0);
}

int main(void)
{
	cv_setup(120, 110);
	seed = t_seed(0xc0de);
	printf("sync_conditional: signal path %s\n", st_signal_name());
	sh = cv_shared(sizeof(*sh));
	pid_t root = cv_start_root(NULL);
	cv_setup_batch(fill_setup, NULL);

	run_group("adders", adder);
	run_group("put_if_absent racers", racer);

	T_ASSERT(pipe(a2b) == 0 && pipe(b2a) == 0);
	pid_t ab[2] = {cv_spawn("tick-a", tick_a, NULL), cv_spawn("tick-b", tick_b, NULL)};
	cv_wait_all(ab, 2, 60);

	run_group("put_if_tick cassers", casser);

	pid_t p = cv_spawn("checker", checker, NULL);
	cv_wait_all(&p, 1, 30);
	cv_stop_root(root);
	printf("sync_conditional: ok\n");
	return 0;
}
