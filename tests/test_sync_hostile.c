/* Hostile workers against a real root, while an honest worker commits and
 * checks what it reads after every commit.
 *
 * - Garbage in the export ring (attached normally, then writing the port
 *   through sync/sync.h internals): random bytes, random and bogus heads, a
 *   misaligned head, a head that moves backwards, record lengths that lie
 *   (too long, too short, not a multiple of 8), op counts and op lengths
 *   that lie, a pad record in the middle, an unknown wire version, a wrong
 *   sequence number, unknown op kinds, invalid names, and a record rewritten
 *   while the root may be copying it; then a random mix, many times. Each
 *   gets an error ack, or is cut off (its waits return -ESHUTDOWN), within
 *   2 s; when it is not cut off, its next honest batch commits. Lies in its
 *   positions and a doorbell storm change nothing for the others.
 * - The port fd (attached through the raw socket protocol): ftruncate
 *   (grow, shrink), fallocate and new seals fail.
 * - The root segment fd: a writable shared mapping fails, also after
 *   reopening it O_RDWR through /proc; write, pwrite, hole punching,
 *   shrinking, new seals, mprotect and MADV_REMOVE of a read-only mapping
 *   fail.
 * - Attach: a uid not on the allow list gets -EACCES naming the uid; a
 *   layout, port or wire version mismatch gets -EPROTO naming both versions,
 *   a bad hello -EPROTO, and an honest attach works after each; peers that
 *   never say hello are dropped after the hello timeout and do not lock
 *   attach out for good; max_workers = 2 refuses a third with -EUSERS until
 *   one detaches.
 * Throughout, the root stays up, the honest worker keeps committing and
 * reads exactly its own writes, and at the end a fresh worker sees exactly
 * the honest writes (the hostile workers' honest batches included).
 *
 * Usage: test_sync_hostile [random-garbage rounds] (default 60).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "sync.h"
#include "synctest.h"
#include "synctest_death.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

#define MS 1000000LL

struct ctl {
	_Atomic int stop;
	_Atomic uint64_t h_commits;
	_Atomic int64_t x_ok; /* hostile workers' honest batches that committed */
};

static struct ctl *C;
static pid_t root_pid;

/* ---- the honest worker ------------------------------------------------- */

static int64_t get_i64(shmsync_worker *w, const char *dir, const char *key)
{
	shmsync_view v;
	int rc = shmsync_get(w, dir, key, strlen(key), &v);
	if (rc == -ENOENT)
		return 0;
	if (rc < 0)
		T_FAIL("get %s%s: %s", dir, key, shmsync_strerror(rc));
	if (v.len != 8)
		T_FAIL("%s%s has %zu bytes", dir, key, v.len);
	int64_t n;
	memcpy(&n, v.data, 8);
	return n;
}

/* Commits a counter and a value, imports, and checks it reads exactly what
 * it wrote: hostile workers must not change it or stop it. */
static int honest(void)
{
	shmsync_worker *w = st_attach();
	int64_t n = 0;
	while (!atomic_load(&C->stop)) {
		n++;
		shmsync_batch *b;
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_add(b, "/h/", "n", 1, 1));
		T_OK(shmsync_put(b, "/h/", "last", 4, &n, 8));
		int64_t t = st_commit(b);
		if (t <= 0)
			T_FAIL("honest commit %lld: %s", (long long)n, shmsync_strerror((int)t));
		int rc = shmsync_import_until(w, (uint64_t)t, 5000 * MS, NULL, NULL);
		if (rc < 0)
			T_FAIL("honest import: %s", shmsync_strerror(rc));
		T_EQ(get_i64(w, "/h/", "n"), n);
		T_EQ(get_i64(w, "/h/", "last"), n);
		atomic_store(&C->h_commits, (uint64_t)n);
		sd_sleep_ns(200000);
	}
	shmsync_detach(w);
	return 0;
}

/* The root is alive and the honest worker commits. */
static void others_go_on(const char *after)
{
	int st;
	if (waitpid(root_pid, &st, WNOHANG) != 0)
		T_FAIL("after %s: the root died", after);
	uint64_t h = atomic_load(&C->h_commits);
	bool ok;
	SD_WAIT(ok, atomic_load(&C->h_commits) >= h + 5, 5000 * MS);
	if (!ok)
		T_FAIL("after %s: the honest worker stopped committing (%llu)", after, (unsigned long long)h);
}

/* ---- writing the ring by hand ------------------------------------------ */

static size_t rec_op(uint8_t *out, uint8_t kind, const char *dir, const char *key, const void *val, size_t vn,
		     int64_t arg)
{
	struct wire_op op = {.kind = kind,
			     .dir_len = (uint16_t)strlen(dir),
			     .key_len = (uint32_t)strlen(key),
			     .value_len = (uint32_t)vn,
			     .arg = arg};
	size_t body = op.dir_len + op.key_len + vn;
	size_t n = sizeof(op) + ((body + 7) & ~(size_t)7);
	memset(out, 0, n);
	memcpy(out, &op, sizeof(op));
	memcpy(out + sizeof(op), dir, op.dir_len);
	memcpy(out + sizeof(op) + op.dir_len, key, op.key_len);
	if (vn)
		memcpy(out + sizeof(op) + op.dir_len + op.key_len, val, vn);
	return n;
}

/* A well-formed record of one op. */
static size_t rec_one(uint8_t *out, uint64_t seq, uint8_t kind, const char *dir, const char *key)
{
	size_t n = sizeof(struct wire_batch) +
		   rec_op(out + sizeof(struct wire_batch), kind, dir, key, "v", 1, 1);
	struct wire_batch h = {.len = (uint32_t)n, .version = WIRE_VERSION, .nops = 1, .seq = seq};
	memcpy(out, &h, sizeof(h));
	return n;
}

static void doorbell(shmsync_worker *w)
{
	atomic_fetch_add(&w->port->doorbell, 1);
	atomic_thread_fence(memory_order_seq_cst);
	if (w->root_signal == SIG_URING) {
		sig_futex_wake(&w->port->doorbell, 1);
	} else {
		uint64_t one = 1;
		if (write(w->doorbell_fd, &one, sizeof(one)) < 0) {
			/* Full: the root is readable anyway. */
		}
	}
}

static void publish(shmsync_worker *w, uint64_t head)
{
	atomic_store_explicit(&w->port->ring_head, head, memory_order_release);
	doorbell(w);
}

static bool conn_hung_up(shmsync_worker *w, int timeout_ms)
{
	struct pollfd p = {w->conn, POLLRDHUP, 0};
	return poll(&p, 1, timeout_ms) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR));
}

/* One honest batch through the API (add /x/c 1); its result. */
static int honest_batch(shmsync_worker *w)
{
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_add(b, "/x/", "c", 1, 1));
	uint64_t seq, tick;
	int rc = shmsync_export(b, 0, &seq);
	if (rc < 0) {
		shmsync_abort(b);
		return rc;
	}
	rc = shmsync_wait_committed(w, seq, &tick, 5000 * MS);
	if (rc == 0)
		atomic_fetch_add(&C->x_ok, 1);
	return rc;
}

enum outcome { CUT_OFF = 1, ERROR_ACK = 2 };

/* After garbage for batch `seq`: an error ack, or cut off, within 2 s. Not
 * cut off, the worker's next honest batch (seq + 1) must commit. */
static int judge(shmsync_worker *w, uint64_t seq, const char *what, int *ack)
{
	/* The garbage took seq: the API's next batch is seq + 1. */
	w->next_seq = seq + 1;
	uint64_t tick;
	int rc = shmsync_wait_committed(w, seq, &tick, 2000 * MS);
	*ack = rc;
	if (rc == -ETIMEDOUT)
		T_FAIL("%s: neither an ack nor cut off after 2 s", what);
	if (rc == 0)
		T_FAIL("%s: the garbage was committed (tick %llu)", what, (unsigned long long)tick);
	if (rc == -ESHUTDOWN || conn_hung_up(w, 50))
		return CUT_OFF;
	rc = honest_batch(w);
	if (rc == -ESHUTDOWN)
		return CUT_OFF; /* cut off a little later */
	if (rc < 0)
		T_FAIL("%s: after the error ack (%s), an honest batch failed: %s", what,
		       shmsync_strerror(*ack), shmsync_strerror(rc));
	return ERROR_ACK;
}

enum {
	G_RANDOM,
	G_RANDOM_HEAD,
	G_HEAD_FAR,
	G_HEAD_MISALIGNED,
	G_HEAD_BACK,
	G_LEN_LONG,
	G_LEN_SHORT,
	G_LEN_ODD,
	G_LEN_ZERO,
	G_NOPS_LIE,
	G_OPLEN_LIE,
	G_PAD_MIDDLE,
	G_VERSION,
	G_SEQ,
	G_KIND,
	G_BAD_NAME,
	G_HUGE_VALUE,
	G_TWO_GOOD_ONE_BAD,
	G_REWRITE,
	NG
};
static const char *const g_name[] = {
	"random bytes",
	"random bytes, random head",
	"head more than a ring ahead",
	"misaligned head",
	"head moved backwards",
	"record len longer than published",
	"record len shorter than a header",
	"record len not a multiple of 8",
	"record len 0",
	"nops lies",
	"op lengths lie",
	"pad record in the middle",
	"unknown wire version",
	"wrong sequence number",
	"unknown op kind",
	"directory name invalid",
	"value_len beyond the limit",
	"good, good, then garbage",
	"record rewritten after publish",
};

/* Attaches, writes garbage of kind g, rings, and judges. Returns the
 * outcome; prints it when verbose. */
static int garbage(int g, unsigned long long *rng, bool verbose)
{
	shmsync_worker *w = st_attach();
	struct port_hdr *p = w->port;
	uint8_t *ring = w->exring;
	uint64_t size = p->ring_size;
	uint8_t rec[512];
	size_t n;
	uint64_t seq = 1;
	int ack = 0;
	const char *what = g_name[g];
	switch (g) {
	case G_RANDOM:
	case G_RANDOM_HEAD: {
		uint64_t len = 8 + 8 * (t_rand(rng) % (size / 16));
		for (uint64_t i = 0; i < len; i += 8) {
			uint64_t x = t_rand(rng);
			memcpy(ring + i, &x, 8);
		}
		publish(w, g == G_RANDOM ? len : t_rand(rng) | 1);
		break;
	}
	case G_HEAD_FAR:
		n = rec_one(rec, 1, SHM_OP_ADD, "/x/", "c");
		memcpy(ring, rec, n);
		publish(w, 3 * size);
		break;
	case G_HEAD_MISALIGNED:
		n = rec_one(rec, 1, SHM_OP_ADD, "/x/", "c");
		memcpy(ring, rec, n);
		publish(w, n + 3);
		break;
	case G_HEAD_BACK: {
		/* One honest batch, then the head goes back over it. */
		T_OK(honest_batch(w));
		seq = 2;
		publish(w, 0);
		break;
	}
	case G_LEN_LONG:
	case G_LEN_SHORT:
	case G_LEN_ODD:
	case G_LEN_ZERO: {
		n = rec_one(rec, 1, SHM_OP_ADD, "/x/", "c");
		struct wire_batch *h = (struct wire_batch *)rec;
		h->len = g == G_LEN_LONG ? 4096 : g == G_LEN_SHORT ? 8 : g == G_LEN_ODD ? (uint32_t)n - 4 : 0;
		memcpy(ring, rec, n);
		publish(w, n);
		break;
	}
	case G_NOPS_LIE:
	case G_OPLEN_LIE:
	case G_VERSION:
	case G_SEQ:
	case G_KIND:
	case G_BAD_NAME:
	case G_HUGE_VALUE: {
		uint8_t kind = g == G_KIND ? (uint8_t)(200 + t_rand(rng) % 50) : SHM_OP_PUT;
		const char *dir = g == G_BAD_NAME ? "x/../" : "/x/";
		n = rec_one(rec, g == G_SEQ ? 77 : 1, kind, dir, "k");
		struct wire_batch *h = (struct wire_batch *)rec;
		struct wire_op *op = (struct wire_op *)(rec + sizeof(*h));
		if (g == G_NOPS_LIE)
			h->nops = 3;
		if (g == G_OPLEN_LIE)
			op->dir_len = 60000;
		if (g == G_VERSION)
			h->version = WIRE_VERSION + 1;
		if (g == G_HUGE_VALUE)
			op->value_len = SHMSYNC_MAX_VALUE + 1; /* more than the record holds */
		memcpy(ring, rec, n);
		publish(w, n);
		break;
	}
	case G_PAD_MIDDLE: {
		struct wire_batch pad = {.len = 16, .version = WIRE_PAD};
		memcpy(ring, &pad, sizeof(pad));
		n = rec_one(rec, 1, SHM_OP_ADD, "/x/", "c");
		memcpy(ring + 16, rec, n);
		publish(w, 16 + n);
		break;
	}
	case G_TWO_GOOD_ONE_BAD: {
		/* Two valid records, then garbage: the valid ones commit. */
		uint64_t at = 0;
		for (uint64_t s = 1; s <= 2; s++) {
			n = rec_one(rec, s, SHM_OP_ADD, "/x/", "c");
			memcpy(ring + at, rec, n);
			at += n;
		}
		memset(ring + at, 0xee, 64);
		publish(w, at + 64);
		uint64_t tick;
		w->next_seq = 4;
		for (uint64_t s = 1; s <= 2; s++) {
			int rc = shmsync_wait_committed(w, s, &tick, 2000 * MS);
			if (rc < 0)
				T_FAIL("%s: valid record %llu: %s", what, (unsigned long long)s,
				       shmsync_strerror(rc));
			atomic_fetch_add(&C->x_ok, 1);
		}
		seq = 3;
		break;
	}
	case G_REWRITE: {
		/* Publish a valid record, then keep rewriting its bytes with
		 * garbage for a while: whatever the root copied, it decides on
		 * its copy. */
		n = rec_one(rec, 1, SHM_OP_ADD, "/x/", "c");
		memcpy(ring, rec, n);
		publish(w, n);
		int64_t end = sd_now_ns() + 5 * MS;
		while (sd_now_ns() < end && atomic_load(&p->acked_seq) < 1)
			for (size_t i = 8; i < n; i++)
				ring[i] = (uint8_t)t_rand(rng);
		uint64_t tick;
		w->next_seq = 2;
		int rc = shmsync_wait_committed(w, 1, &tick, 2000 * MS);
		if (rc == -ETIMEDOUT || rc == -ESHUTDOWN)
			T_FAIL("%s: %s", what, shmsync_strerror(rc));
		if (rc == 0)
			atomic_fetch_add(&C->x_ok, 1); /* copied before the rewrite */
		int next = honest_batch(w);
		if (next < 0)
			T_FAIL("%s: the next honest batch: %s", what, shmsync_strerror(next));
		if (verbose)
			printf("  %-34s -> the root decided on its copy (%s), the next batch commits\n", what,
			       rc == 0 ? "committed" : shmsync_strerror(rc));
		shmsync_detach(w);
		return ERROR_ACK;
	}
	}
	int out = judge(w, seq, what, &ack);
	if (verbose)
		printf("  %-34s -> %s (ack %s)\n", what, out == CUT_OFF ? "cut off" : "error ack, goes on",
		       shmsync_strerror(ack));
	if (out == CUT_OFF) {
		/* Cut off means released: the root hangs up, and every later call
		 * that waits says so instead of waiting. (import_next may first
		 * deliver ticks published meanwhile: it reads the segment, which
		 * it still maps.) */
		if (!conn_hung_up(w, 2000))
			T_FAIL("%s: cut off, but the root did not hang up", what);
		int rc, i;
		for (i = 0; i < 1000 && (rc = shmsync_import_next(w, -1, NULL, NULL)) != -ESHUTDOWN; i++)
			T_ASSERT(rc >= 0);
		T_ASSERT(i < 1000);
		shmsync_batch *b;
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_add(b, "/x/", "c", 1, 1));
		uint64_t s;
		T_EQ(shmsync_export(b, 0, &s), -ESHUTDOWN);
		shmsync_abort(b);
	}
	shmsync_detach(w);
	return out;
}

static void part_garbage(int rounds, unsigned long long seed)
{
	printf("garbage in the export ring:\n");
	for (int g = 0; g < NG; g++) {
		pid_t k = sd_fork();
		if (k == 0) {
			unsigned long long rng = seed + (unsigned long long)g;
			garbage(g, &rng, true);
			exit(0);
		}
		if (sd_reap(k) != 0)
			T_FAIL("hostile worker (%s) failed", g_name[g]);
		others_go_on(g_name[g]);
	}
	/* A random mix, in one process after another. */
	pid_t k = sd_fork();
	if (k == 0) {
		unsigned long long rng = seed ^ 0x5bd1e995ull;
		int cut = 0, acked = 0;
		for (int i = 0; i < rounds; i++) {
			int g = (int)(t_rand(&rng) % NG);
			if (garbage(g, &rng, false) == CUT_OFF)
				cut++;
			else
				acked++;
		}
		printf("  random mix: %d hostile attaches, %d cut off, %d error acks then went on\n", rounds,
		       cut, acked);
		exit(0);
	}
	if (sd_reap(k) != 0)
		T_FAIL("the random garbage worker failed");
	others_go_on("random garbage");
}

/* Lies in its positions, and a doorbell storm: nothing changes for the
 * others, and its own honest batches still commit. */
static void part_lies(void)
{
	pid_t k = sd_fork();
	if (k == 0) {
		shmsync_worker *w = st_attach();
		struct port_hdr *p = w->port;
		atomic_store(&p->read_epoch, 0);
		atomic_store(&p->cursor, UINT64_MAX - 7);
		uint64_t h0 = atomic_load(&C->h_commits);
		uint64_t rings = 0;
		for (int64_t end = sd_now_ns() + 300 * MS; sd_now_ns() < end; rings++)
			doorbell(w);
		atomic_store(&p->read_epoch, UINT64_MAX - 7);
		atomic_store(&p->cursor, 0);
		for (int64_t end = sd_now_ns() + 200 * MS; sd_now_ns() < end; rings++)
			doorbell(w);
		uint64_t h1 = atomic_load(&C->h_commits);
		printf("lies: %llu doorbell rings with lying positions; the honest worker committed %llu "
		       "times meanwhile\n",
		       (unsigned long long)rings, (unsigned long long)(h1 - h0));
		T_ASSERT(h1 > h0);
		T_OK(honest_batch(w));
		shmsync_detach(w);
		exit(0);
	}
	if (sd_reap(k) != 0)
		T_FAIL("the lying worker failed");
	others_go_on("lies and a doorbell storm");
}

/* ---- raw attach -------------------------------------------------------- */

/* Sends `len` bytes of hello, receives the welcome and its fds. */
static struct welcome raw_hello(int fd, const void *hello, size_t len, int *fds, int *nfds)
{
	T_OK(att_send(fd, hello, len, NULL, 0));
	struct welcome wl;
	memset(&wl, 0, sizeof(wl));
	ssize_t n = att_recv(fd, &wl, sizeof(wl), fds, nfds, 0);
	if (n != (ssize_t)sizeof(wl) || wl.magic != WELCOME_MAGIC)
		T_FAIL("no welcome: %zd", n);
	wl.msg[sizeof(wl.msg) - 1] = 0;
	return wl;
}

static struct hello good_hello(void)
{
	return (struct hello){HELLO_MAGIC, SHM_LAYOUT_VERSION, PORT_VERSION, WIRE_VERSION, 0};
}

#define EXPECT_FAIL(call, err)                                                                               \
	do {                                                                                                 \
		errno = 0;                                                                                   \
		long long r_ = (long long)(call);                                                            \
		if (r_ != -1 || errno != (err))                                                              \
			T_FAIL("%s returned %lld (%s), expected -1 %s", #call, r_, strerror(errno),          \
			       strerror(err));                                                               \
	} while (0)

static void check_root_fd(int rfd)
{
	struct stat st;
	T_OK(fstat(rfd, &st));
	size_t size = (size_t)st.st_size;
	T_ASSERT(size >= 4096);
	int seals = fcntl(rfd, F_GET_SEALS);
	T_ASSERT(seals >= 0);
	T_ASSERT(seals & F_SEAL_FUTURE_WRITE);
	T_ASSERT(seals & F_SEAL_SHRINK);
	/* Through the fd the root sent. */
	T_ASSERT(mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0) == MAP_FAILED);
	uint8_t byte = 0;
	T_ASSERT(write(rfd, &byte, 1) == -1);
	T_ASSERT(pwrite(rfd, &byte, 1, 0) == -1);
	/* Through the same file reopened read-write. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", rfd);
	int rw = open(path, O_RDWR | O_CLOEXEC);
	printf("root fd: reopened O_RDWR through /proc: %s\n",
	       rw >= 0 ? "allowed (the seals must hold)" : "refused");
	if (rw >= 0) {
		void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
		if (m != MAP_FAILED)
			T_FAIL("a writable shared mapping of the root segment succeeded after reopening "
			       "O_RDWR");
		T_EQ(errno, EPERM);
		EXPECT_FAIL(write(rw, &byte, 1), EPERM);
		EXPECT_FAIL(pwrite(rw, &byte, 1, 4096), EPERM);
		EXPECT_FAIL(fallocate(rw, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)size), EPERM);
		EXPECT_FAIL(ftruncate(rw, 4096), EPERM);
		EXPECT_FAIL(fcntl(rw, F_ADD_SEALS, F_SEAL_GROW), EPERM);
		/* Growing is not sealed (the root grows it), and the root
		 * tolerates a file longer than it made it. */
		if (ftruncate(rw, (off_t)size + (16 << 20)) == 0)
			printf("root fd: growing it by 16 MiB was allowed (the root must not care)\n");
		close(rw);
	}
	/* A read-only mapping cannot be made writable or punched. */
	void *ro = mmap(NULL, size, PROT_READ, MAP_SHARED, rfd, 0);
	T_ASSERT(ro != MAP_FAILED);
	EXPECT_FAIL(mprotect(ro, size, PROT_READ | PROT_WRITE), EACCES);
	T_ASSERT(madvise(ro, size, MADV_REMOVE) == -1);
	munmap(ro, size);
}

static void check_port_fd(int pfd)
{
	struct stat st;
	T_OK(fstat(pfd, &st));
	off_t size = st.st_size;
	int seals = fcntl(pfd, F_GET_SEALS);
	T_ASSERT(seals >= 0);
	T_ASSERT((seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) ==
		 (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
	EXPECT_FAIL(ftruncate(pfd, 0), EPERM);
	EXPECT_FAIL(ftruncate(pfd, size - 4096), EPERM);
	EXPECT_FAIL(ftruncate(pfd, size * 2), EPERM);
	EXPECT_FAIL(fallocate(pfd, 0, size, 4096), EPERM);
	EXPECT_FAIL(fcntl(pfd, F_ADD_SEALS, F_SEAL_WRITE), EPERM);
	T_OK(fstat(pfd, &st));
	T_EQ(st.st_size, size);
	printf("port fd: %lld bytes, sealed; ftruncate (grow, shrink, zero), fallocate and new seals fail\n",
	       (long long)size);
}

static void part_fds(void)
{
	pid_t k = sd_fork();
	if (k == 0) {
		int fd = st_connect_raw();
		struct hello h = good_hello();
		int fds[3] = {-1, -1, -1}, nfds = 3;
		struct welcome wl = raw_hello(fd, &h, sizeof(h), fds, &nfds);
		if (wl.status != 0)
			T_FAIL("raw attach refused: %s", wl.msg);
		T_ASSERT(nfds >= 2);
		check_port_fd(fds[1]);
		check_root_fd(fds[0]);
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		close(fd);
		exit(0);
	}
	if (sd_reap(k) != 0)
		T_FAIL("the fd checks failed");
	others_go_on("the attacks on the fds");
}

static void part_hello(void)
{
	pid_t k = sd_fork();
	if (k == 0) {
		struct {
			const char *what;
			struct hello h;
			size_t len;
			const char *want[2];
		} cases[] = {
			{"layout version + 1",
			 {HELLO_MAGIC, SHM_LAYOUT_VERSION + 1, PORT_VERSION, WIRE_VERSION, 0},
			 sizeof(struct hello),
			 {NULL, NULL}},
			{"port version + 1",
			 {HELLO_MAGIC, SHM_LAYOUT_VERSION, PORT_VERSION + 1, WIRE_VERSION, 0},
			 sizeof(struct hello),
			 {NULL, NULL}},
			{"wire version + 1",
			 {HELLO_MAGIC, SHM_LAYOUT_VERSION, PORT_VERSION, WIRE_VERSION + 1, 0},
			 sizeof(struct hello),
			 {NULL, NULL}},
			{"bad magic",
			 {0x1234, SHM_LAYOUT_VERSION, PORT_VERSION, WIRE_VERSION, 0},
			 sizeof(struct hello),
			 {NULL, NULL}},
			{"short hello", {HELLO_MAGIC, SHM_LAYOUT_VERSION, 0, 0, 0}, 12, {NULL, NULL}},
		};
		char want_layout[2][32];
		snprintf(want_layout[0], sizeof(want_layout[0]), "layout %u", SHM_LAYOUT_VERSION + 1);
		snprintf(want_layout[1], sizeof(want_layout[1]), "layout %u", SHM_LAYOUT_VERSION);
		cases[0].want[0] = want_layout[0];
		cases[0].want[1] = want_layout[1];
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			int fd = st_connect_raw();
			int fds[3], nfds = 3;
			struct welcome wl = raw_hello(fd, &cases[i].h, cases[i].len, fds, &nfds);
			for (int j = 0; j < nfds; j++)
				close(fds[j]);
			printf("hello with %s -> %s: \"%s\"\n", cases[i].what, shmsync_strerror(wl.status),
			       wl.msg);
			T_EQ(wl.status, -EPROTO);
			T_EQ(nfds, 0);
			for (int j = 0; j < 2; j++)
				if (cases[i].want[j] && !strstr(wl.msg, cases[i].want[j]))
					T_FAIL("the message does not name \"%s\"", cases[i].want[j]);
			/* The root hangs up. */
			char buf[8];
			T_EQ(recv(fd, buf, sizeof(buf), 0), 0);
			close(fd);
			/* And an honest worker still attaches. */
			shmsync_worker *w = st_attach();
			T_OK(honest_batch(w));
			shmsync_detach(w);
		}
		exit(0);
	}
	if (sd_reap(k) != 0)
		T_FAIL("the hello checks failed");
	others_go_on("bad hellos");
}

/* Peers that connect and never say hello: the root drops them after its
 * hello timeout (2 s) and attach works again. */
static void part_silent(void)
{
	pid_t k = sd_fork();
	if (k == 0) {
		enum { N = MAX_PENDING + 4 };
		int fds[N];
		for (int i = 0; i < N; i++)
			fds[i] = st_connect_raw();
		/* Meanwhile: either attach works, or it is refused with a clear
		 * error, never a hang. */
		shmsync_worker *w;
		char err[256] = "";
		int64_t t0 = sd_now_ns();
		int rc = shmsync_attach_msg(&w, st_sock, err, sizeof(err));
		printf("silent peers: %d connected without hello; an attach meanwhile -> %s%s%s (%.1f ms)\n",
		       N, rc < 0 ? shmsync_strerror(rc) : "ok", rc < 0 ? ": " : "", rc < 0 ? err : "",
		       (double)(sd_now_ns() - t0) / 1e6);
		if (rc == 0)
			shmsync_detach(w);
		else if (rc != -EAGAIN)
			T_FAIL("attach among silent peers: %s: %s", shmsync_strerror(rc), err);
		/* Every silent peer is hung up on within 4 s. */
		int64_t end = sd_now_ns() + 4000 * MS;
		for (int i = 0; i < N; i++) {
			struct pollfd p = {fds[i], POLLIN | POLLRDHUP, 0};
			int left = (int)((end - sd_now_ns()) / MS);
			if (left < 0 || poll(&p, 1, left) != 1)
				T_FAIL("silent peer %d still connected 4 s later", i);
			close(fds[i]);
		}
		printf("silent peers: all dropped after %.2f s\n", (double)(sd_now_ns() - t0) / 1e9);
		w = st_attach();
		T_OK(honest_batch(w));
		shmsync_detach(w);
		exit(0);
	}
	if (sd_reap(k) != 0)
		T_FAIL("the silent peers check failed");
	others_go_on("silent peers");
}

/* ---- separate roots: allow list, max_workers ---------------------------- */

static void part_uid(void)
{
	uid_t allow[] = {12345};
	shmsync_root_opts o = {.allow_uids = allow, .n_allow_uids = 1};
	pid_t r = sd_start_root(&o);
	pid_t k = sd_fork();
	if (k == 0) {
		shmsync_worker *w = NULL;
		char err[256] = "", want[32];
		int rc = shmsync_attach_msg(&w, st_sock, err, sizeof(err));
		printf("uid %u, allow list {12345}: attach -> %s: \"%s\"\n", (unsigned)geteuid(),
		       shmsync_strerror(rc), err);
		T_EQ(rc, -EACCES);
		T_ASSERT(w == NULL);
		snprintf(want, sizeof(want), "uid %u", (unsigned)geteuid());
		if (!strstr(err, want))
			T_FAIL("the message does not name the uid (\"%s\")", want);
		exit(0);
	}
	T_EQ(sd_reap(k), 0);
	sd_untrack(r);
	st_stop_root(r);
}

static void part_max_workers(void)
{
	shmsync_root_opts o = {.max_workers = 2};
	pid_t r = sd_start_root(&o);
	pid_t k = sd_fork();
	if (k == 0) {
		shmsync_worker *a = st_attach(), *b = st_attach(), *c = NULL;
		char err[256] = "";
		int rc = shmsync_attach_msg(&c, st_sock, err, sizeof(err));
		printf("max_workers 2: a third attach -> %s: \"%s\"\n", shmsync_strerror(rc), err);
		T_EQ(rc, -EUSERS);
		shmsync_detach(a);
		/* The slot comes back once the root has released it. */
		int64_t end = sd_now_ns() + 2000 * MS;
		while ((rc = shmsync_attach(&c, st_sock)) == -EUSERS && sd_now_ns() < end)
			sd_sleep_ns(MS);
		T_OK(rc);
		T_EQ(shmsync_attach_msg(&a, st_sock, err, sizeof(err)), -EUSERS);
		shmsync_detach(b);
		shmsync_detach(c);
		exit(0);
	}
	T_EQ(sd_reap(k), 0);
	sd_untrack(r);
	st_stop_root(r);
}

/* A fresh worker sees exactly the honest writes. */
static void final_state(void)
{
	pid_t k = sd_fork();
	if (k == 0) {
		shmsync_worker *w = st_attach();
		int64_t n = get_i64(w, "/h/", "n"), x = get_i64(w, "/x/", "c");
		printf("final: /h/n = %lld (honest commits %llu), /x/c = %lld (hostile workers' honest "
		       "batches "
		       "%lld)\n",
		       (long long)n, (unsigned long long)atomic_load(&C->h_commits), (long long)x,
		       (long long)atomic_load(&C->x_ok));
		T_EQ(n, (int64_t)atomic_load(&C->h_commits));
		T_EQ(get_i64(w, "/h/", "last"), n);
		T_EQ(x, atomic_load(&C->x_ok));
		shmsync_detach(w);
		exit(0);
	}
	T_EQ(sd_reap(k), 0);
}

/* The state the test starts from, one batch. */
static void fill_setup(shmsync_batch *b, void *arg)
{
	(void)arg;
	T_OK(shmsync_mkdir(b, "/h/"));
	T_OK(shmsync_mkdir(b, "/x/"));
}

int main(int argc, char **argv)
{
	sd_init(150);
	int rounds = argc > 1 ? atoi(argv[1]) : 60;
	unsigned long long seed = t_seed(20250302);
	C = sd_shared(sizeof(*C));
	printf("sync_hostile: signal path %s\n", st_signal_name());

	root_pid = sd_start_root(NULL);
	sd_setup_batch(fill_setup, NULL);
	pid_t hon = sd_fork();
	if (hon == 0)
		exit(honest());
	bool ok;
	SD_WAIT(ok, atomic_load(&C->h_commits) >= 5, 5000 * MS);
	T_ASSERT(ok);

	part_garbage(rounds, seed);
	part_lies();
	part_fds();
	part_hello();
	part_silent();

	/* Stop the honest worker, then look at the state with fresh eyes. */
	atomic_store(&C->stop, 1);
	T_EQ(sd_reap(hon), 0);
	final_state();
	sd_untrack(root_pid);
	st_stop_root(root_pid);

	/* Separate roots. */
	part_max_workers();
	part_uid();
	printf("sync_hostile: ok\n");
	return 0;
}
