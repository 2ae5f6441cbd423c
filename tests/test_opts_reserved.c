/* The public structs keep room for later versions: a nonzero reserved word
 * in an options struct is refused with -EINVAL and a message, before
 * anything is created, connected or forked (an option this library does not
 * know is never silently ignored); the same struct with the words zero is
 * accepted. The structs the library fills (shmsync_stats,
 * shmsync_worker_info) come back with their reserved words zeroed whatever
 * the caller's buffer held. */
#include <stdbool.h>
#include <sys/stat.h>

#include "synctest.h"

static int never(unsigned index, void *arg)
{
	(void)index;
	(void)arg;
	T_FAIL("shmsync_supervise ran a worker despite a nonzero reserved word");
}

static bool all_zero(const uint64_t *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i])
			return false;
	return true;
}

int main(void)
{
	alarm(60);
	char path[108], err[256];
	snprintf(path, sizeof path, "/tmp/shmsync-reserved-%d.sock", (int)getpid());
	unlink(path);

	/* The root: refused, and no socket left behind. */
	shmsync_root *r = NULL;
	shmsync_root_opts ro = {.socket_path = path, .errbuf = err, .errbuf_len = sizeof err};
	ro.reserved[7] = 1;
	T_EQ(shmsync_root_open(&r, &ro), -EINVAL);
	T_ASSERT(strstr(err, "reserved") != NULL);
	struct stat sb;
	T_ASSERT(stat(path, &sb) < 0 && errno == ENOENT);
	ro.reserved[7] = 0;
	T_OK(shmsync_root_open(&r, &ro));
	shmsync_root_close(r);

	/* An attach: -EINVAL, not the -ENOENT of the missing socket it would
	 * have tried. */
	shmsync_worker *w = NULL;
	shmsync_attach_opts ao = {.socket_path = path, .errbuf = err, .errbuf_len = sizeof err};
	ao.reserved[0] = 1;
	T_EQ(shmsync_attach_with(&w, &ao), -EINVAL);
	T_ASSERT(strstr(err, "reserved") != NULL);
	ao.reserved[0] = 0;
	T_EQ(shmsync_attach_with(&w, &ao), -ENOENT);

	/* A supervisor: refused before it starts a root or a worker. */
	shmsync_supervise_opts so = {.workers = 1, .errbuf = err, .errbuf_len = sizeof err};
	so.reserved[3] = 1;
	T_EQ(shmsync_supervise(&so, never, NULL), -EINVAL);
	T_ASSERT(strstr(err, "reserved") != NULL);

	/* What the library fills comes back zeroed in the reserved words. */
	pid_t root = st_start_root(NULL);
	w = st_attach();
	shmsync_stats st;
	memset(&st, 0xa5, sizeof st);
	T_OK(shmsync_stat(w, &st));
	T_ASSERT(all_zero(st.reserved, sizeof st.reserved / sizeof st.reserved[0]));
	/* The root publishes its table just after an attach: wait for it. */
	shmsync_worker_info info[4];
	int n = 0;
	for (int tries = 0; tries < 500 && n < 1; tries++) {
		if (tries)
			usleep(10000);
		memset(info, 0xa5, sizeof info);
		n = shmsync_workers(w, info, 4);
	}
	T_ASSERT(n >= 1);
	for (int i = 0; i < n && i < 4; i++)
		T_ASSERT(all_zero(info[i].reserved, sizeof info[i].reserved / sizeof info[i].reserved[0]));
	shmsync_detach(w);
	st_stop_root(root);
	printf("reserved words: refused when set in options, zeroed in what the library fills\n");
	return 0;
}
