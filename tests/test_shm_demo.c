/* shm_demo: a single-process workload over the root context, checked.
 *
 * Until the tests' reorganisation this was examples/demo.c; it uses the
 * shm layer's internal header, so it was never an example a user could
 * copy, and what it does is a test: it exits 1 when a result is unexpected
 * (a rejection that should not happen, an old version not kept for the
 * pinned reader, a failed diff). The public API's examples live in
 * examples/; `shmsync demo` shows the multi-process system at work.
 *
 * One process plays both roles: it commits batches as the root would, and it
 * stands in for a slow reader that stays pinned a few ticks behind, so the
 * old versions, tombstones and change-log records that reader still needs are
 * kept and everything older is reclaimed. At the end it prints what happened.
 *
 *   test_shm_demo [--seconds N] [--seed N]   (default 0.2 s: a test's short run)
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shm.h"
#include "shmsync.h"

#define MAX_OPS 16
#define SESSIONS 64
#define USERS 200
#define READER_LAG 16 /* the reader moves to now - LAG once it is 2 * LAG behind */
#define HISTORY 64    /* log positions of recent ticks, for the reader's diff */
#define MAX_ERRNO 256

struct batch {
	struct shm_op ops[MAX_OPS];
	size_t n;
	char keys[MAX_OPS][32];
	char dir[32];
	int session; /* the session it creates (> 0) or removes (< 0), +-(s+1) */
	int flush;   /* removes every session */
};

static uint64_t rng;
static char filler[64 << 10];
static int live[SESSIONS];
static unsigned long long rejected[SHM_OP_RMDIR + 1][MAX_ERRNO];
static unsigned long long n_batches, n_ops, n_rejected, n_tombstones, n_enobufs;

static uint64_t rnd(uint64_t n)
{
	rng ^= rng >> 12; /* xorshift64* */
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return (rng * 0x2545F4914F6CDD1DULL) % n;
}

static struct shm_op *op(struct batch *b, int kind, const char *dir, const char *key)
{
	struct shm_op *o = &b->ops[b->n];

	memset(o, 0, sizeof(*o));
	o->kind = kind;
	o->dir = dir;
	o->dir_len = strlen(dir);
	if (key) {
		snprintf(b->keys[b->n], sizeof(b->keys[0]), "%s", key);
		o->key = b->keys[b->n];
		o->key_len = strlen(b->keys[b->n]);
	}
	b->n++;
	return o;
}

/* Mostly small values, some pages, a few large ones: exercises every class. */
static void put(struct batch *b, const char *dir, const char *key)
{
	static const size_t sizes[] = {8, 40, 100, 500, 1500, 4000, 9000, 60000};
	uint64_t r = rnd(100);
	size_t i = r < 50 ? (size_t)rnd(3) : r < 95 ? 3 + (size_t)rnd(3) : 6 + (size_t)rnd(2);
	struct shm_op *o = op(b, SHM_OP_PUT, dir, key);

	o->value = filler;
	o->value_len = sizes[i] / 2 + (size_t)rnd(sizes[i] / 2 + 1);
}

static void add(struct batch *b, const char *dir, const char *key, int64_t delta)
{
	op(b, SHM_OP_ADD, dir, key)->delta = delta;
}

/* One batch of a randomly chosen kind, as a worker might export it. */
static void make_batch(struct shm_root *root, struct batch *b)
{
	char key[32];
	uint64_t kind = rnd(100);
	int s = (int)rnd(SESSIONS);

	b->n = 0;
	b->session = 0;
	b->flush = 0;
	snprintf(b->dir, sizeof(b->dir), "/sessions/%d/", s);
	if (kind < 35) { /* profile updates of varied sizes */
		for (uint64_t i = 1 + rnd(8); i > 0; i--) {
			snprintf(key, sizeof(key), "user-%d", (int)rnd(USERS));
			put(b, "/users/", key);
		}
	} else if (kind < 50) { /* a deleted account; absent ones are rejected */
		snprintf(key, sizeof(key), "user-%d", (int)rnd(USERS));
		op(b, SHM_OP_DEL, "/users/", key);
	} else if (kind < 75) { /* a session starts or ends */
		if (live[s]) {
			op(b, SHM_OP_RMDIR, b->dir, NULL);
			b->session = -(s + 1);
		} else {
			op(b, SHM_OP_MKDIR, b->dir, NULL);
			put(b, b->dir, "cart");
			put(b, b->dir, "user");
			add(b, b->dir, "hits", 1);
			b->session = s + 1;
		}
	} else if (kind < 85) { /* compare-and-set: fails if changed this tick */
		struct shm_value v;
		struct shm_op *o = op(b, SHM_OP_PUT_IF_TICK, "/users/", "motd");
		int rc = shm_get(shm_root_seg(root), shm_root_tick(root), "/users/", 7, "motd", 4, &v);

		o->expected_tick = rc == 0 ? v.tick : 0;
		o->value = filler;
		o->value_len = 64;
	} else if (kind < 95) { /* sign-up of a name that is taken: always rejected */
		put(b, "/users/", "signups");
		op(b, SHM_OP_PUT_IF_ABSENT, "/users/", "admin")->value = filler;
		b->ops[b->n - 1].value_len = 16;
	} else if (kind < 99) { /* a hit on a session, ENOENT if it ended */
		add(b, b->dir, "hits", 1);
	} else { /* every session ends at once: a prefix rmdir, then a fresh /sessions/ */
		op(b, SHM_OP_RMDIR, "/sessions/", NULL);
		op(b, SHM_OP_MKDIR, "/sessions/", NULL);
		b->flush = 1;
	}
}

/* Keeps the demo's picture of the state (which sessions live) and counts the
 * tombstones the root must now keep until the reader passes them. */
static void applied(const struct batch *b)
{
	if (b->flush) {
		n_tombstones++; /* /sessions/ itself */
		for (int s = 0; s < SESSIONS; s++) {
			n_tombstones += (unsigned long long)live[s];
			live[s] = 0;
		}
	} else if (b->session > 0) {
		live[b->session - 1] = 1;
	} else if (b->session < 0) {
		live[-b->session - 1] = 0;
		n_tombstones++;
	} else if (b->n == 1 && b->ops[0].kind == SHM_OP_DEL) {
		n_tombstones++;
	}
}

static const char *op_name(int kind)
{
	static const char *names[] = {"?",   "put", "put_if_absent", "put_if_tick",
				      "add", "del", "mkdir",         "rmdir"};
	return kind >= 1 && kind <= SHM_OP_RMDIR ? names[kind] : "?";
}

/* The workload makes only these fail; anything else is a bug. */
static int expected_rejection(int kind, int err)
{
	return (kind == SHM_OP_PUT_IF_ABSENT && err == EEXIST) ||
	       (kind == SHM_OP_PUT_IF_TICK && err == ECANCELED) ||
	       ((kind == SHM_OP_ADD || kind == SHM_OP_DEL) && err == ENOENT);
}

static int print_change(const struct shm_change *c, void *arg)
{
	static const char *kinds[] = {"?", "put", "del", "mkdir", "rmdir", "reset"};
	unsigned *shown = arg;

	if ((*shown)++ < 12)
		printf("  %-6" PRIu64 " %-5s %-14s %.*s\n", c->tick, kinds[c->kind <= 5 ? c->kind : 0],
		       c->dir, (int)c->key_len, c->key ? (const char *)c->key : "");
	return 0;
}

static const char *human(uint64_t n, char *buf, size_t len)
{
	if (n >= (1u << 30))
		snprintf(buf, len, "%.1f GiB", (double)n / (1 << 30));
	else if (n >= (1u << 20))
		snprintf(buf, len, "%.1f MiB", (double)n / (1 << 20));
	else
		snprintf(buf, len, "%.1f KiB", (double)n / (1 << 10));
	return buf;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t counter(struct shm_root *root, uint64_t epoch)
{
	struct shm_value v;
	int64_t x = 0;

	if (shm_get(shm_root_seg(root), epoch, "/users/", 7, "visits", 6, &v) == 0 && v.len == sizeof(x))
		memcpy(&x, v.data, sizeof(x)); /* little-endian, as is this machine */
	return x;
}

int main(int argc, char **argv)
{
	double seconds = 0.2; /* what ctest ran it with as an example */
	unsigned long long seed = 1;
	struct shm_root_opts opts = {0};
	struct shm_root *root;
	struct shm_err err = {{0}};
	struct shm_stats start, end;
	struct shm_reclaim_report rep;
	uint64_t tick = 0, pin = 0, pos[HISTORY] = {0};
	struct batch b;
	char h1[32], h2[32], h3[32];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = strtod(argv[++i], NULL);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else {
			fprintf(stderr, "usage: %s [--seconds N] [--seed N]\n", argv[0]);
			return 2;
		}
	}
	rng = seed * 2654435761u + 1; /* xorshift must not start at 0 */
	memset(filler, 'x', sizeof(filler));

	int rc = shm_root_create(&root, &opts, &err);
	if (rc < 0) {
		fprintf(stderr, "demo: cannot create the root context: %s\n", err.msg); /* says what to set */
		return 1;
	}
	shm_root_stats(root, &start);
	printf("shmsync %s demo: seed %llu, %.1f s, capacity %s\n", shmsync_version(), seed, seconds,
	       human(start.capacity, h1, sizeof(h1)));

	/* The directories every tick writes into, and the key sign-ups collide with. */
	shm_commit_begin(root);
	b.n = 0;
	op(&b, SHM_OP_MKDIR, "/users/", NULL);
	op(&b, SHM_OP_MKDIR, "/sessions/", NULL);
	op(&b, SHM_OP_PUT, "/users/", "admin")->value = "root";
	b.ops[2].value_len = 4;
	size_t failed = 0;
	if ((rc = shm_apply_batch(root, b.ops, b.n, &failed)) < 0) {
		fprintf(stderr, "demo: setup batch rejected: %s\n", shmsync_strerror(rc));
		return 1;
	}
	shm_commit_publish(root, &tick);
	shm_published_state(shm_root_seg(root), &tick, &pos[tick % HISTORY]);
	pin = tick;

	double begin = now(), elapsed;
	while ((elapsed = now() - begin) < seconds) {
		/* One group commit: a visit counter bump plus several worker batches. */
		shm_commit_begin(root);
		for (int i = 0, n = 2 + (int)rnd(6); i < n; i++) {
			if (i == 0) {
				b.n = 0;
				b.session = b.flush = 0;
				add(&b, "/users/", "visits", 1);
			} else {
				make_batch(root, &b);
			}
			rc = shm_apply_batch(root, b.ops, b.n, &failed);
			if (rc == -ENOBUFS) { /* this tick's share of the log is full */
				n_enobufs++;
				shm_commit_publish(root, &tick);
				shm_published_state(shm_root_seg(root), &tick, &pos[tick % HISTORY]);
				shm_commit_begin(root);
				rc = shm_apply_batch(root, b.ops, b.n, &failed);
			}
			if (rc < 0) {
				n_rejected++;
				rejected[b.ops[failed].kind][-rc < MAX_ERRNO ? -rc : 0]++;
				continue;
			}
			applied(&b);
			n_batches++;
			n_ops += b.n;
		}
		shm_commit_publish(root, &tick);
		shm_published_state(shm_root_seg(root), &tick, &pos[tick % HISTORY]);

		/* The reader catches up in steps; behind it, everything goes. */
		if (tick - pin >= 2 * READER_LAG)
			pin = tick - READER_LAG;
		if ((rc = shm_reclaim(root, pin, pin, 1024, &rep)) < 0) {
			fprintf(stderr, "demo: reclaim failed: %s\n", shmsync_strerror(rc));
			return 1;
		}
	}

	printf("\nWhat the reader pinned at tick %" PRIu64 " gets when it imports tick %" PRIu64
	       " (coalesced diff, TICK KIND DIR KEY):\n",
	       pin, tick);
	unsigned shown = 0;
	int ok = 1;
	rc = shm_diff(shm_root_seg(root), pos[pin % HISTORY], tick, pos[tick % HISTORY], print_change,
		      &shown);
	if (rc < 0) {
		printf("  diff failed: %s\n", shmsync_strerror(rc));
		ok = 0;
	}
	if (shown > 12)
		printf("  ... %u more\n", shown - 12);
	int64_t old_visits = counter(root, pin), new_visits = counter(root, tick);
	printf("\nSnapshot reads of /users/ visits: %" PRId64 " at the pinned tick %" PRIu64 ", %" PRId64
	       " at tick %" PRIu64 "\n(the old version stays readable until the reader moves on)\n",
	       old_visits, pin, new_visits, tick);
	if (pin < tick && old_visits >= new_visits)
		ok = 0;

	shm_root_stats(root, &end);
	printf("\nticks             %" PRIu64 " (%.0f/s)\n", end.tick, (double)end.tick / elapsed);
	printf("batches applied   %llu, %llu ops (%.2f M ops/s); retried after a full log share: %llu\n",
	       n_batches, n_ops, (double)n_ops / elapsed / 1e6, n_enobufs);
	printf("batches rejected  %llu, by reason:\n", n_rejected);
	for (int k = 0; k <= SHM_OP_RMDIR; k++)
		for (int e = 0; e < MAX_ERRNO; e++)
			if (rejected[k][e]) {
				int expected = expected_rejection(k, e);

				printf("  %8llu  %-13s %s%s\n", rejected[k][e], op_name(k),
				       shmsync_strerror(-e), expected ? "" : "  (UNEXPECTED)");
				ok &= expected;
			}
	printf("state             %" PRIu64 " directories, %" PRIu64 " keys\n", end.directories, end.keys);
	printf("bytes in use      %s at start, %s at end, high water %s\n", human(start.bytes_in_use, h1, 32),
	       human(end.bytes_in_use, h2, 32), human(end.high_water, h3, 32));
	printf("tombstones        %llu created, %llu freed, %" PRIu64 " still pinned by the reader\n",
	       n_tombstones, n_tombstones - end.tombstones, end.tombstones);
	printf("reclaimed         %" PRIu64 " objects, %s; waiting for the reader: %" PRIu64 " objects\n",
	       end.reclaimed_objects, human(end.reclaimed_bytes, h1, 32), end.retired_objects);
	shm_root_destroy(root);
	if (!ok)
		fprintf(stderr, "demo: FAILED: an unexpected result is reported above\n");
	return ok ? 0 : 1;
}
