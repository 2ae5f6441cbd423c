/* Two workers polling (import_next with timeout 0, no sleep) on one CPU
 * play ping-pong through the root: A puts ping = i and waits for pong = i,
 * B waits for ping = i and puts pong = i. With both spinning on the same
 * CPU neither answer can come unless the poller gives its CPU away (the
 * yields of poll_missed and poll_yield, sync/worker.c), and each must still
 * see every value of the other exactly once and in order: a poll that
 * yields at its first miss may not skip or repeat a change. The alarm
 * fails a run whose exchange stops. */
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>

#include "synctest.h"

#define ROUNDS 3000u
#define DIR "/pp/"

struct watch {
	const char *key; /* the other side's key */
	uint64_t last;   /* the last value of it seen */
	unsigned seen;   /* changes to it delivered */
};

static int on_change(const shmsync_change *c, void *arg)
{
	struct watch *wt = arg;
	if (c->kind != SHMSYNC_PUT || strcmp(c->dir, DIR) || c->key_len != strlen(wt->key) ||
	    memcmp(c->key, wt->key, c->key_len))
		return 0;
	uint64_t v;
	if (c->value_len != sizeof v)
		T_FAIL("%s: a value of %zu bytes", wt->key, c->value_len);
	memcpy(&v, c->value, sizeof v);
	if (v != wt->last + 1)
		T_FAIL("%s: %llu after %llu: a value skipped or repeated", wt->key, (unsigned long long)v,
		       (unsigned long long)wt->last);
	wt->last = v;
	wt->seen++;
	return 0;
}

static void put(shmsync_worker *w, const char *key, uint64_t v)
{
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_put(b, DIR, key, strlen(key), &v, sizeof v));
	T_OK(shmsync_export(b, 0, NULL));
}

/* Polls until the other side's key reaches want. */
static void poll_for(shmsync_worker *w, struct watch *wt, uint64_t want)
{
	while (wt->last < want) {
		int rc = shmsync_import_next(w, 0, on_change, wt);
		if (rc < 0 && rc != -ETIMEDOUT)
			T_FAIL("import_next: %s", shmsync_strerror(rc));
	}
	if (wt->last != want)
		T_FAIL("%s reached %llu, want %llu", wt->key, (unsigned long long)wt->last,
		       (unsigned long long)want);
}

static void pin(unsigned cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof set, &set) < 0)
		T_FAIL("sched_setaffinity: %s", strerror(errno));
}

/* ready: B says on it that it is attached, so A's first ping is a change
 * B's imports deliver, not part of the state B attached to. */
static void player(bool a, unsigned cpu, int ready)
{
	alarm(100); /* a stopped exchange must not leave a spinner behind */
	pin(cpu);
	shmsync_worker *w = st_attach();
	if (ready >= 0) {
		if (write(ready, "r", 1) != 1)
			T_FAIL("write: %s", strerror(errno));
		close(ready);
	}
	struct watch wt = {.key = a ? "pong" : "ping"};
	for (uint64_t i = 1; i <= ROUNDS; i++) {
		if (a) {
			put(w, "ping", i);
			poll_for(w, &wt, i);
		} else {
			poll_for(w, &wt, i);
			put(w, "pong", i);
		}
	}
	/* One change per round: a coalesced or repeated delivery would show. */
	T_EQ(wt.seen, ROUNDS);
	shmsync_detach(w);
	_exit(0);
}

static void mkdir_pp(shmsync_batch *b, void *arg)
{
	(void)arg;
	T_OK(shmsync_mkdir(b, DIR));
}

int main(void)
{
	alarm(120);
	/* The CPU the players share: one this process may run on. */
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) < 0)
		T_FAIL("sched_getaffinity: %s", strerror(errno));
	unsigned cpu = 0;
	while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &set))
		cpu++;
	shmsync_root_opts o = {0};
	pid_t root = st_start_root(&o);
	st_fill_commit(mkdir_pp, NULL);
	double t0 = st_now();
	int ready[2];
	if (pipe(ready) < 0)
		T_FAIL("pipe: %s", strerror(errno));
	pid_t b = fork();
	if (b == 0) {
		close(ready[0]);
		player(false, cpu, ready[1]);
	}
	close(ready[1]);
	char c;
	if (read(ready[0], &c, 1) != 1)
		T_FAIL("B did not attach");
	close(ready[0]);
	pid_t a = fork();
	if (a == 0)
		player(true, cpu, -1);
	T_EQ(st_wait(a), 0);
	T_EQ(st_wait(b), 0);
	double took = st_now() - t0;
	st_stop_root(root);
	printf("two pollers on CPU %u: %u round trips, each value seen once and in order (%.1f us a "
	       "round trip, signal %s)\n",
	       cpu, ROUNDS, took * 1e6 / ROUNDS, st_signal_name());
	return 0;
}
