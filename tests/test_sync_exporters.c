/* The root's count of recent exporters (struct sync_shared, hint_exporters):
 * a worker spins long for an ack only while the workers that export and
 * the root fit the machine's CPUs (sync/worker_wait.c), so the count must
 * say how many workers really export now, and forget those that stopped.
 *
 * Three workers commit batches back to back while an observer, which
 * exports nothing, samples the count: it must reach exactly 3 and never
 * exceed 3 (the observer must not count). When they stop, the observer
 * commits one batch of its own after the window has passed: the count must
 * come down to 1 (the observer alone), not stay at 4 or 3.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "sync.h"
#include "synctest.h"

#define WRITERS 3

struct ctl {
	_Atomic int stop;
	_Atomic int ready;
	_Atomic uint64_t commits;
};

static struct ctl *C;

static int writer(int id)
{
	alarm(60);
	shmsync_worker *w = st_attach();
	shmsync_offline(w);
	char key[16];
	snprintf(key, sizeof key, "w%d", id);
	atomic_fetch_add(&C->ready, 1);
	for (uint64_t i = 0; !atomic_load(&C->stop); i++) {
		shmsync_batch *b;
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_put(b, "/x/", key, strlen(key), &i, sizeof i));
		T_ASSERT(st_commit(b) > 0);
		atomic_fetch_add(&C->commits, 1);
	}
	shmsync_detach(w);
	return 0;
}

static uint32_t exporters(shmsync_worker *w)
{
	return atomic_load_explicit(&w->shared->hint_exporters, memory_order_relaxed);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

int main(void)
{
	alarm(120);
	printf("sync_exporters: signal %s\n", st_signal_name());
	C = mmap(NULL, sizeof(*C), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	T_ASSERT(C != MAP_FAILED);
	pid_t root = st_start_root(NULL);
	shmsync_worker *obs = st_attach();
	shmsync_batch *b;
	T_OK(shmsync_begin(obs, &b));
	T_OK(shmsync_mkdir(b, "/x/"));
	T_ASSERT(st_commit(b) > 0);
	pid_t kids[WRITERS];
	fflush(stdout); /* or the children print it again */
	for (int i = 0; i < WRITERS; i++) {
		kids[i] = fork();
		T_ASSERT(kids[i] >= 0);
		if (kids[i] == 0)
			exit(writer(i));
	}
	while (atomic_load(&C->ready) < WRITERS)
		sleep_ms(1);
	/* The observer's own commit above is long past the window. */
	uint32_t most = 0, seen3 = 0, samples = 0;
	uint64_t start = atomic_load(&C->commits);
	for (int i = 0; i < 2000 && (seen3 < 20 || atomic_load(&C->commits) - start < 3000); i++) {
		uint32_t n = exporters(obs);
		if (n > most)
			most = n;
		seen3 += n == WRITERS;
		samples++;
		struct timespec ts = {0, 500000};
		nanosleep(&ts, NULL);
	}
	printf("while %d workers exported (%llu commits): most %u, exactly %d in %u of %u samples\n", WRITERS,
	       (unsigned long long)(atomic_load(&C->commits) - start), most, WRITERS, seen3, samples);
	T_EQ(most, WRITERS);
	T_ASSERT(seen3 > 0);
	atomic_store(&C->stop, 1);
	for (int i = 0; i < WRITERS; i++)
		T_EQ(st_wait(kids[i]), 0);
	sleep_ms(5); /* past SYNC_EXPORTER_WINDOW_NS (1 ms) */
	T_OK(shmsync_begin(obs, &b));
	T_OK(shmsync_put(b, "/x/", "obs", 3, "1", 1));
	T_ASSERT(st_commit(b) > 0);
	/* The root counts after it acks: give it a moment. */
	uint32_t n = 0;
	for (int i = 0; i < 1000 && (n = exporters(obs)) != 1; i++)
		sleep_ms(1);
	printf("after they stopped and the observer committed: %u\n", n);
	T_EQ(n, 1);
	shmsync_detach(obs);
	st_stop_root(root);
	printf("sync_exporters: ok\n");
	return 0;
}
