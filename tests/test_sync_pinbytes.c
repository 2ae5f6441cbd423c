/* The stall policy by bytes (max_read_pin_bytes): a snapshot that keeps more
 * retired memory than the bound from being freed gets the policy, whatever
 * the time.
 *
 * Worker H imports, takes a view of /p/0 and then holds its snapshot
 * (online, asleep on a pipe), while the parent overwrites 64 keys of 1 KiB,
 * ROUNDS times, one tick per round: each round retires about 70 KiB.
 *  - revoke, max_read_pin_bytes = 256 KiB, no time bound: bytes in use stay
 *    within 1 MiB of where they started (the retired versions are freed
 *    while H still holds its view), the root warns, H's view reports
 *    invalid and its get -ESTALE, and H converges after an import;
 *  - the same with no byte bound (the control, so the test can fail): bytes
 *    in use grow by more than 4 MiB while H holds its view, and the view
 *    stays valid.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>

#include "synctest.h"

#define KEYS 64
#define VLEN 1024
#define ROUNDS 128
#define PIN_BYTES (256u << 10)

struct shared {
	_Atomic int ready, warnings;
};
static struct shared *sh;

static void value(char *buf, int round, int key)
{
	memset(buf, 'a' + (round + key) % 26, VLEN);
	memcpy(buf, &round, sizeof(round));
}

static void count_warning(const char *msg, void *arg)
{
	(void)arg;
	if (strstr(msg, "retired bytes"))
		atomic_fetch_add(&sh->warnings, 1);
}

/* H: holds a view until the parent writes to `go`, then reports. */
static int holder(int go, bool bounded)
{
	shmsync_worker *w = st_attach();
	T_ASSERT(shmsync_import_until(w, 2, 5000000000LL, NULL, NULL) >= 0);
	shmsync_view v;
	int k = 0;
	T_OK(shmsync_get(w, "/p/", &k, sizeof(k), &v));
	atomic_store(&sh->ready, 1);
	char c;
	T_ASSERT(read(go, &c, 1) == 1);
	if (bounded) {
		T_EQ(shmsync_view_valid(w, &v), 0);
		T_EQ(shmsync_get(w, "/p/", &k, sizeof(k), &v), -ESTALE);
		int rc;
		do
			rc = shmsync_import_next(w, 0, NULL, NULL);
		while (rc > 0);
		T_ASSERT(rc == 0 || rc == -ETIMEDOUT);
		T_OK(shmsync_get(w, "/p/", &k, sizeof(k), &v));
		char want[VLEN];
		value(want, ROUNDS - 1, k);
		T_ASSERT(v.len == VLEN && memcmp(v.data, want, VLEN) == 0);
	} else {
		T_EQ(shmsync_view_valid(w, &v), 1);
	}
	shmsync_detach(w);
	return 0;
}

static void run(bool bounded)
{
	memset(sh, 0, sizeof(*sh));
	shmsync_root_opts o = {.stall_policy = SHMSYNC_STALL_REVOKE,
			       .max_read_pin_bytes = bounded ? PIN_BYTES : 0,
			       .warn = count_warning};
	pid_t root = st_start_root(&o);
	shmsync_worker *w = st_attach();
	shmsync_offline(w);
	shmsync_batch *b;
	char val[VLEN];
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_mkdir(b, "/p/"));
	for (int k = 0; k < KEYS; k++) {
		value(val, -1, k);
		T_OK(shmsync_put(b, "/p/", &k, sizeof(k), val, VLEN));
	}
	T_ASSERT(st_commit(b) > 0);

	int go[2];
	T_OK(pipe(go));
	pid_t h = fork();
	T_ASSERT(h >= 0);
	if (h == 0) {
		close(go[1]);
		exit(holder(go[0], bounded));
	}
	close(go[0]);
	while (!atomic_load(&sh->ready))
		usleep(1000);

	shmsync_stats st;
	T_OK(shmsync_stat(w, &st));
	uint64_t start = st.bytes_in_use, peak = start;
	for (int r = 0; r < ROUNDS; r++) {
		T_OK(shmsync_begin(w, &b));
		for (int k = 0; k < KEYS; k++) {
			value(val, r, k);
			T_OK(shmsync_put(b, "/p/", &k, sizeof(k), val, VLEN));
		}
		T_ASSERT(st_commit(b) > 0);
		T_OK(shmsync_stat(w, &st));
		if (st.bytes_in_use > peak)
			peak = st.bytes_in_use;
	}
	/* The root frees in steps after each commit: let it finish. */
	usleep(200000);
	T_OK(shmsync_stat(w, &st));
	printf("%s: bytes in use %" PRIu64 " at the start, peak %" PRIu64 " (+%" PRIu64 " KiB), end %" PRIu64
	       "; %d warnings\n",
	       bounded ? "max_read_pin_bytes 256 KiB" : "no byte bound", start, peak, (peak - start) >> 10,
	       st.bytes_in_use, atomic_load(&sh->warnings));
	if (bounded) {
		T_ASSERT(peak < start + (1u << 20));
		T_ASSERT(atomic_load(&sh->warnings) >= 1);
	} else {
		T_ASSERT(peak > start + (4u << 20));
		T_EQ(atomic_load(&sh->warnings), 0);
	}
	T_ASSERT(write(go[1], "x", 1) == 1);
	close(go[1]);
	T_EQ(st_wait(h), 0);
	shmsync_detach(w);
	st_stop_root(root);
}

int main(void)
{
	alarm(120);
	setvbuf(stdout, NULL, _IOLBF, 0);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	T_ASSERT(sh != MAP_FAILED);
	run(false);
	run(true);
	printf("sync_pinbytes: ok\n");
	return 0;
}
