/* Waiting for the next state inside the caller's own event loop, and proof
 * of which signal path ran.
 *
 * 1. stat: after an import_next that really slept (a voluntary context
 *    switch, the commit arriving 100 ms later), uring_ops has grown on the
 *    io_uring path (SHMSYNC_SIGNAL unset or "uring") and is still 0 with
 *    SHMSYNC_SIGNAL=futex; stat names the path, the worker's and the root's.
 * 2. shmsync_fd in an epoll loop, on both paths: taken once, added once;
 *    not readable while nothing is new (100 ms), readable within 5 s of
 *    another worker's commit, and import_next(w, 0) then gets the change;
 *    round after round ("re-armed by each import").
 * 3. shmsync_prep_wait on the test's own io_uring: the wait does not
 *    complete while nothing is new (100 ms), completes within 5 s of another
 *    worker's commit, and import_next(w, 0) sees the new tick; also when the
 *    tick is already there. Must run on the io_uring path; on the futex path
 *    it is skipped with a note if prep_wait says -EOPNOTSUPP.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include "sync.h"
#include "synctest.h"
#include "synctest_death.h"

#define MS 1000000LL
#define ROUNDS 10

static int cmd_pipe[2], reply_pipe[2];

/* The other worker: one commit per command byte ('c' now, 'd' after
 * 100 ms), answering with the tick; 'q' ends it. */
static int committer(void)
{
	shmsync_worker *w = st_attach();
	int64_t n = 0;
	for (;;) {
		char c;
		ssize_t r = read(cmd_pipe[0], &c, 1);
		if (r != 1 || c == 'q')
			break;
		if (c == 'd')
			sd_sleep_ns(100 * MS);
		n++;
		shmsync_batch *b;
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_put(b, "/e/", "k", 1, &n, 8));
		int64_t t = st_commit(b);
		if (t <= 0)
			T_FAIL("committer: %s", shmsync_strerror((int)t));
		uint64_t tick = (uint64_t)t;
		T_EQ(write(reply_pipe[1], &tick, 8), 8);
	}
	shmsync_detach(w);
	return 0;
}

static void ask(char c)
{
	T_EQ(write(cmd_pipe[1], &c, 1), 1);
}

static uint64_t reply(void)
{
	struct pollfd p = {reply_pipe[0], POLLIN, 0};
	if (poll(&p, 1, 10000) != 1)
		T_FAIL("the committer did not answer in 10 s");
	uint64_t tick;
	T_EQ(read(reply_pipe[0], &tick, 8), 8);
	return tick;
}

struct seen {
	int64_t value;
	int puts;
};

static int on_change(const shmsync_change *c, void *arg)
{
	struct seen *s = arg;
	if (c->kind == SHMSYNC_PUT && strcmp(c->dir, "/e/") == 0 && c->key_len == 1 &&
	    memcmp(c->key, "k", 1) == 0) {
		T_EQ(c->value_len, 8);
		memcpy(&s->value, c->value, 8);
		s->puts++;
	}
	return 0;
}

static void catch_up(shmsync_worker *w)
{
	shmsync_stats s;
	T_OK(shmsync_stat(w, &s));
	if (shmsync_cursor(w) < s.tick)
		T_ASSERT(shmsync_import_until(w, s.tick, 5000 * MS, NULL, NULL) >= 0);
}

static long vcsw(void)
{
	struct rusage ru;
	getrusage(RUSAGE_THREAD, &ru);
	return ru.ru_nvcsw;
}

/* Imports what the committer's commit `tick` (value n) brought, without
 * waiting: it must be there already. */
static void import_now(shmsync_worker *w, uint64_t tick, int64_t n, const char *how)
{
	struct seen s = {0};
	int rc = shmsync_import_next(w, 0, on_change, &s);
	if (rc < 1)
		T_FAIL("%s: woken, but import_next(w, 0) returned %d (%s)", how, rc,
		       rc < 0 ? shmsync_strerror(rc) : "nothing");
	T_ASSERT(shmsync_cursor(w) >= tick);
	if (s.puts == 0) {
		shmsync_view v;
		T_OK(shmsync_get(w, "/e/", "k", 1, &v));
		memcpy(&s.value, v.data, 8);
	}
	T_EQ(s.value, n);
}

static void part_stat(shmsync_worker *w, bool uring, int64_t *n)
{
	catch_up(w);
	shmsync_stats s0, s1;
	T_OK(shmsync_stat(w, &s0));
	ask('d');
	long v0 = vcsw();
	struct seen s = {0};
	int rc = shmsync_import_next(w, 5000 * MS, on_change, &s);
	long slept = vcsw() - v0;
	T_ASSERT(rc >= 1);
	uint64_t tick = reply();
	++*n;
	if (shmsync_cursor(w) < tick)
		catch_up(w);
	T_OK(shmsync_stat(w, &s1));
	printf("stat: worker signal %s, root signal %s, uring_ops %llu -> %llu over an import that slept "
	       "(%ld voluntary switches)\n",
	       s1.signal, s1.root_signal, (unsigned long long)s0.uring_ops, (unsigned long long)s1.uring_ops,
	       slept);
	T_ASSERT(slept > 0);
	const char *want = uring ? "uring" : "futex";
	T_ASSERT(strcmp(s1.signal, want) == 0);
	T_ASSERT(strcmp(s1.root_signal, want) == 0);
	if (uring)
		T_ASSERT(s1.uring_ops > s0.uring_ops);
	else
		T_EQ(s1.uring_ops, 0);
}

static int eintrs;

/* epoll_wait, retried on EINTR like any event loop does: on the io_uring
 * path the completion of the armed futex wait runs as task work, which
 * interrupts the sleeping epoll_wait before the fd reads ready. */
static int ep_wait(int ep, struct epoll_event *ev, int timeout_ms)
{
	int64_t end = sd_now_ns() + (int64_t)timeout_ms * MS;
	for (;;) {
		int left = (int)((end - sd_now_ns()) / MS);
		int k = epoll_wait(ep, ev, 1, left < 0 ? 0 : left);
		if (k >= 0 || errno != EINTR)
			return k;
		eintrs++;
	}
}

static void part_epoll(shmsync_worker *w, bool uring, int64_t *n)
{
	catch_up(w);
	int fd = shmsync_fd(w);
	T_ASSERT(fd >= 0);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	T_ASSERT(ep >= 0);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
	T_OK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
	double worst = 0;
	for (int r = 0; r < ROUNDS; r++) {
		struct epoll_event got;
		int k = ep_wait(ep, &got, 100);
		if (k != 0)
			T_FAIL("epoll round %d: shmsync_fd readable with nothing new", r);
		int64_t t0 = sd_now_ns();
		ask('c');
		k = ep_wait(ep, &got, 5000);
		double took = (double)(sd_now_ns() - t0) / 1e6;
		if (k != 1)
			T_FAIL("epoll round %d: shmsync_fd not readable 5 s after a commit (epoll_wait %d)",
			       r, k);
		T_EQ(got.data.u64, 42);
		uint64_t tick = reply();
		import_now(w, tick, ++*n, "epoll");
		if (took > worst)
			worst = took;
	}
	if (!uring) {
		shmsync_stats s;
		T_OK(shmsync_stat(w, &s));
		T_EQ(s.uring_ops, 0);
	}
	close(ep);
	printf("epoll: shmsync_fd woke %d of %d rounds, worst %.3f ms from the commit request, never "
	       "readable early (epoll_wait interrupted by EINTR %d times)\n",
	       ROUNDS, ROUNDS, worst, eintrs);
}

static void part_prep_wait(shmsync_worker *w, bool uring, int64_t *n)
{
	struct io_uring ring;
	T_OK(io_uring_queue_init(8, &ring, 0));
	double worst = 0;
	for (int r = 0; r <= ROUNDS; r++) {
		catch_up(w);
		/* The last round: the tick is there before the wait is prepared. */
		bool ready = r == ROUNDS;
		uint64_t tick = 0;
		if (ready) {
			ask('c');
			tick = reply();
		}
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		T_ASSERT(sqe);
		int rc = shmsync_prep_wait(w, sqe);
		if (rc == -EOPNOTSUPP) {
			if (uring)
				T_FAIL("prep_wait: -EOPNOTSUPP on the io_uring path");
			printf("prep_wait: -EOPNOTSUPP on the futex path: skipped (use shmsync_fd)\n");
			io_uring_queue_exit(&ring);
			return;
		}
		T_OK(rc);
		io_uring_sqe_set_data64(sqe, 0xfeed);
		/* It may sleep long: offline, so it pins nothing. */
		shmsync_offline(w);
		T_EQ(io_uring_submit(&ring), 1);
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = {0, 100 * MS};
		int64_t t0 = sd_now_ns();
		if (!ready) {
			rc = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
			if (rc != -ETIME)
				T_FAIL("prep_wait round %d: completed with nothing new (%d)", r, rc);
			t0 = sd_now_ns();
			ask('c');
		}
		ts = (struct __kernel_timespec){5, 0};
		rc = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
		if (rc < 0)
			T_FAIL("prep_wait round %d: no completion 5 s after a commit: %s", r, strerror(-rc));
		double took = (double)(sd_now_ns() - t0) / 1e6;
		T_EQ(io_uring_cqe_get_data64(cqe), 0xfeed);
		if (cqe->res < 0 && cqe->res != -EAGAIN)
			T_FAIL("prep_wait round %d: completion %d (%s)", r, cqe->res, strerror(-cqe->res));
		if (!ready)
			T_EQ(cqe->res, 0); /* armed before the commit: a real wake */
		io_uring_cqe_seen(&ring, cqe);
		if (!ready)
			tick = reply();
		import_now(w, tick, ++*n, "prep_wait");
		if (!ready && took > worst)
			worst = took;
	}
	io_uring_queue_exit(&ring);
	shmsync_stats s;
	T_OK(shmsync_stat(w, &s));
	printf("prep_wait: the test's own ring woke %d of %d rounds (worst %.3f ms from the commit request) "
	       "and once with the tick already there; never early (uring_ops now %llu)\n",
	       ROUNDS, ROUNDS, worst, (unsigned long long)s.uring_ops);
}

static int tester(void)
{
	const char *sig = getenv("SHMSYNC_SIGNAL");
	bool forced_futex = sig && strcmp(sig, "futex") == 0;
	bool uring = !forced_futex && sig_uring_futex_supported();
	if (!forced_futex && !uring)
		printf("note: io_uring futex operations are unavailable here: the default is the futex "
		       "path\n");
	shmsync_worker *w = st_attach();
	int64_t n = 0;
	part_stat(w, uring, &n);
	part_epoll(w, uring, &n);
	part_prep_wait(w, uring, &n);
	shmsync_detach(w);
	return 0;
}

/* The state the test starts from, one batch. */
static void fill_setup(shmsync_batch *b, void *arg)
{
	(void)arg;
	T_OK(shmsync_mkdir(b, "/e/"));
}

int main(void)
{
	sd_init(60);
	printf("sync_embed: signal path %s\n", st_signal_name());
	T_OK(pipe2(cmd_pipe, O_CLOEXEC));
	T_OK(pipe2(reply_pipe, O_CLOEXEC));
	pid_t root = sd_start_root(NULL);
	sd_setup_batch(fill_setup, NULL);
	pid_t com = sd_fork();
	if (com == 0)
		exit(committer());
	pid_t tst = sd_fork();
	if (tst == 0)
		exit(tester());
	int rc = sd_reap(tst);
	ask('q');
	T_EQ(sd_reap(com), 0);
	T_EQ(rc, 0);
	sd_untrack(root);
	st_stop_root(root);
	printf("sync_embed: ok\n");
	return 0;
}
