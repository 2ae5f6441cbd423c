/* A worker's gets remember the last directory's table at its epoch
 * (struct shm_dir_cache): the remembered table must answer exactly as a
 * fresh lookup would, while the root rebuilds that directory's table,
 * deletes and recreates the directory and frees (poisoned, so a read of
 * freed memory shows) what nobody holds any more.
 *
 * A reader holds epoch E and reads /c/ and /d/ in turn while a writer grows
 * /c/ through several table rebuilds, deletes and recreates it: every read
 * must give E's values. After an import it must see the new incarnation.
 * Then it goes offline while the writer does it all again and reclamation
 * frees the tables it saw; back online (an import) it must see only the
 * newest incarnation. A directory that was absent, then made, is found
 * once imported. */
#include <poll.h>

#include "synctest.h"

#define GROW 6000 /* keys: several rebuilds of /c/'s table */

static int to_writer[2], to_reader[2];

static void say(int fd, char c)
{
	T_EQ(write(fd, &c, 1), 1);
}

static void hear(int fd, char want)
{
	char c = 0;
	T_EQ(read(fd, &c, 1), 1);
	T_EQ(c, want);
}

static void expect(shmsync_worker *w, const char *dir, const char *key, const char *want)
{
	shmsync_view v;
	int rc = shmsync_get(w, dir, key, strlen(key), &v);
	if (!want) {
		T_EQ(rc, -ENOENT);
		return;
	}
	T_OK(rc);
	T_EQ(v.len, strlen(want));
	T_ASSERT(memcmp(v.data, want, v.len) == 0);
}

static void import_all(shmsync_worker *w, int64_t tick)
{
	T_ASSERT(shmsync_import_until(w, (uint64_t)tick, 5000000000LL, NULL, NULL) >= 0);
}

/* /c/ grows by GROW keys (rebuilds), then is deleted and made again with
 * k = value; /d/ is left alone. Many ticks, each with deletions, so there
 * is plenty to reclaim. */
static int64_t churn(shmsync_worker *w, const char *value)
{
	shmsync_batch *b;
	char key[32];
	for (int i = 0; i < GROW; i += 500) {
		T_OK(shmsync_begin(w, &b));
		for (int j = i; j < i + 500; j++) {
			int n = snprintf(key, sizeof key, "g%d", j);
			T_OK(shmsync_put(b, "/c/", key, (size_t)n, "grow", 4));
		}
		T_ASSERT(st_commit(b) > 0);
		T_OK(shmsync_begin(w, &b));
		for (int j = i; j < i + 250; j++) {
			int n = snprintf(key, sizeof key, "g%d", j);
			T_OK(shmsync_del(b, "/c/", key, (size_t)n));
		}
		T_ASSERT(st_commit(b) > 0);
	}
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_rmdir(b, "/c/"));
	T_OK(shmsync_mkdir(b, "/c/"));
	T_OK(shmsync_put(b, "/c/", "k", 1, value, strlen(value)));
	int64_t t = st_commit(b);
	T_ASSERT(t > 0);
	return t;
}

static int writer(void)
{
	alarm(120);
	shmsync_worker *w = st_attach();
	shmsync_offline(w); /* it reads nothing: it must pin nothing */
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_mkdir(b, "/c/"));
	T_OK(shmsync_mkdir(b, "/d/"));
	T_OK(shmsync_put(b, "/c/", "k", 1, "c1", 2));
	T_OK(shmsync_put(b, "/d/", "k", 1, "d1", 2));
	int64_t t = st_commit(b);
	T_ASSERT(t > 0);
	T_EQ(write(to_reader[1], &t, sizeof t), (ssize_t)sizeof t);
	hear(to_writer[0], 'h'); /* the reader holds t */
	t = churn(w, "c2");
	T_EQ(write(to_reader[1], &t, sizeof t), (ssize_t)sizeof t);
	hear(to_writer[0], 'o'); /* the reader is offline */
	t = churn(w, "c3");
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_mkdir(b, "/e/"));
	T_OK(shmsync_put(b, "/e/", "k", 1, "e1", 2));
	t = st_commit(b);
	T_ASSERT(t > 0);
	/* Reclamation ran: nobody held the old tables. */
	shmsync_stats st;
	T_OK(shmsync_stat(w, &st));
	printf("writer: %llu objects reclaimed\n", (unsigned long long)st.reclaimed);
	T_ASSERT(st.reclaimed > 0);
	T_EQ(write(to_reader[1], &t, sizeof t), (ssize_t)sizeof t);
	hear(to_writer[0], 'd');
	shmsync_detach(w);
	return 0;
}

static int reader(void)
{
	alarm(120);
	shmsync_worker *w = st_attach();
	int64_t t;
	T_EQ(read(to_reader[0], &t, sizeof t), (ssize_t)sizeof t);
	import_all(w, t);
	uint64_t held = shmsync_cursor(w);
	expect(w, "/c/", "k", "c1");
	expect(w, "/e/", "k", NULL);
	say(to_writer[1], 'h');
	/* While the writer churns: E's values, through the remembered table
	 * and through fresh lookups as the directory alternates. */
	for (int i = 0;; i++) {
		expect(w, "/c/", "k", "c1");
		expect(w, "/c/", "g1", NULL);
		expect(w, "/d/", "k", "d1");
		expect(w, "/c/", "k", "c1");
		T_EQ(shmsync_cursor(w), held);
		struct timespec ts = {0, 200000};
		nanosleep(&ts, NULL);
		struct pollfd p = {to_reader[0], POLLIN, 0};
		if (poll(&p, 1, 0) == 1)
			break;
		T_ASSERT(i < 1000000);
	}
	T_EQ(read(to_reader[0], &t, sizeof t), (ssize_t)sizeof t);
	import_all(w, t);
	expect(w, "/c/", "k", "c2");
	expect(w, "/c/", "g5999", NULL); /* the grown keys went with the old /c/ */
	expect(w, "/d/", "k", "d1");
	expect(w, "/c/", "k", "c2");
	shmsync_offline(w);
	say(to_writer[1], 'o');
	T_EQ(read(to_reader[0], &t, sizeof t), (ssize_t)sizeof t);
	import_all(w, t);
	expect(w, "/c/", "k", "c3");
	expect(w, "/c/", "g5999", NULL);
	expect(w, "/e/", "k", "e1");
	expect(w, "/c/", "k", "c3");
	expect(w, "/d/", "k", "d1");
	say(to_writer[1], 'd');
	shmsync_detach(w);
	return 0;
}

int main(void)
{
	alarm(120);
	printf("sync_dircache: signal %s\n", st_signal_name());
	T_OK(pipe(to_writer));
	T_OK(pipe(to_reader));
	shmsync_root_opts o = {.debug_poison = 1};
	pid_t root = st_start_root(&o);
	pid_t rd = fork();
	if (rd == 0)
		exit(reader());
	pid_t wr = fork();
	if (wr == 0)
		exit(writer());
	T_EQ(st_wait(wr), 0);
	T_EQ(st_wait(rd), 0);
	st_stop_root(root);
	printf("sync_dircache: ok\n");
	return 0;
}
