/* The stall policy's time bound counts from when the published tick passed a
 * worker's snapshot, not from when the worker took it.
 *
 * Root with policy kill and max_read_pin_ns = 100 ms. Worker I imports the
 * newest tick and then stays online at it for 600 ms while nothing is
 * committed (an idle reader of a quiet root: it pins nothing). Worker W then
 * commits. I must not be killed for that: it imports W's change afterwards.
 * The control: I then holds that snapshot while W keeps committing for 600
 * ms, and is killed, as the policy says.
 */
#include <stdatomic.h>
#include <sys/mman.h>

#include "synctest.h"

struct shared {
	_Atomic int idle_done; /* I: held the newest snapshot 600 ms */
	_Atomic int committed; /* W: committed after that */
	_Atomic int imported;  /* I: imported W's change */
};

static struct shared *sh;

static void wait_flag(_Atomic int *flag)
{
	for (int i = 0; i < 10000 && !atomic_load(flag); i++)
		usleep(1000);
	T_ASSERT(atomic_load(flag));
}

static void idle_reader(void)
{
	shmsync_worker *w = st_attach();
	T_ASSERT(shmsync_import_until(w, 2, 5000000000LL, NULL, NULL) >= 0);
	shmsync_view v;
	T_OK(shmsync_get(w, "/i/", "k", 1, &v));
	usleep(600000); /* online at the newest tick, nothing committed */
	atomic_store(&sh->idle_done, 1);
	wait_flag(&sh->committed);
	/* Killed here by the old rule: the snapshot was "held" 600 ms. */
	int n = shmsync_import_next(w, 5000000000LL, NULL, NULL);
	if (n < 1)
		T_FAIL("idle reader: import after the commit: %s", n < 0 ? shmsync_strerror(n) : "nothing");
	T_OK(shmsync_get(w, "/i/", "k", 1, &v));
	T_ASSERT(v.len == 2 && memcmp(v.data, "v2", 2) == 0);
	atomic_store(&sh->imported, 1);
	/* Now hold this snapshot while W commits: the bound applies. */
	for (int i = 0; i < 3000; i++)
		usleep(1000);
	_exit(0); /* not reached when the policy works */
}

int main(void)
{
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	T_ASSERT(sh != MAP_FAILED);
	shmsync_root_opts o = {.stall_policy = SHMSYNC_STALL_KILL, .max_read_pin_ns = 100000000};
	pid_t root = st_start_root(&o);

	shmsync_worker *w = st_attach();
	shmsync_offline(w); /* a writer that reads nothing */
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_mkdir(b, "/i/"));
	T_OK(shmsync_put(b, "/i/", "k", 1, "v1", 2));
	T_ASSERT(st_commit(b) > 0);

	pid_t reader = fork();
	T_ASSERT(reader >= 0);
	if (reader == 0)
		idle_reader();
	wait_flag(&sh->idle_done);
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_put(b, "/i/", "k", 1, "v2", 2));
	T_ASSERT(st_commit(b) > 0);
	atomic_store(&sh->committed, 1);
	for (int i = 0; i < 5000 && !atomic_load(&sh->imported); i++) {
		int status;
		if (waitpid(reader, &status, WNOHANG) == reader)
			T_FAIL("the idle reader died (%s %d) before importing: a worker at the newest "
			       "snapshot was treated as stalled",
			       WIFSIGNALED(status) ? "signal" : "exit",
			       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
		usleep(1000);
	}
	T_ASSERT(atomic_load(&sh->imported));
	printf("idle reader: kept through 600 ms at the newest snapshot, imported the next commit\n");

	/* Control: now it holds a snapshot that falls behind. */
	int64_t start = (int64_t)(st_now() * 1e9);
	int status = 0;
	for (int i = 0;; i++) {
		T_OK(shmsync_begin(w, &b));
		T_OK(shmsync_put(b, "/i/", "k", 1, "v3", 2));
		T_ASSERT(st_commit(b) > 0);
		if (waitpid(reader, &status, WNOHANG) == reader)
			break;
		if ((int64_t)(st_now() * 1e9) - start > 5000000000LL)
			T_FAIL("a reader holding an old snapshot for 5 s was not killed");
		usleep(2000);
	}
	T_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	printf("control: a reader behind the tick was killed after %.0f ms\n",
	       (st_now() * 1e9 - (double)start) / 1e6);
	shmsync_detach(w);
	st_stop_root(root);
	return 0;
}
