/* The basic round trip across processes: a root, two workers; one writes,
 * both import the same changes and read the same values; every kind of
 * operation and its errors come back through the ack. */
#include <stdbool.h>

#include "synctest.h"

struct seen {
	int puts, dels, mkdirs, rmdirs, resets;
	char last_value[64];
};

static int on_change(const shmsync_change *c, void *arg)
{
	struct seen *s = arg;
	switch (c->kind) {
	case SHMSYNC_PUT:
		s->puts++;
		snprintf(s->last_value, sizeof(s->last_value), "%.*s", (int)c->value_len,
			 (const char *)c->value);
		break;
	case SHMSYNC_DEL:
		s->dels++;
		break;
	case SHMSYNC_MKDIR:
		s->mkdirs++;
		break;
	case SHMSYNC_RMDIR:
		s->rmdirs++;
		break;
	case SHMSYNC_RESET:
		s->resets++;
		break;
	}
	return 0;
}

static int writer(void)
{
	shmsync_worker *w = st_attach();
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_mkdir(b, "/a/"));
	T_OK(shmsync_put(b, "/a/", "k", 1, "v1", 2));
	int64_t t1 = st_commit(b);
	T_ASSERT(t1 > 1);
	/* Errors come back through the ack, and leave no trace. */
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_put(b, "/a/", "x", 1, "nope", 4));
	T_OK(shmsync_mkdir(b, "/a/"));
	T_EQ(st_commit(b), -EEXIST);
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_put(b, "/missing/", "k", 1, "v", 1));
	T_EQ(st_commit(b), -ENOENT);
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_add(b, "/a/", "n", 1, 5));
	T_OK(shmsync_add(b, "/a/", "n", 1, 7));
	T_OK(shmsync_put(b, "/a/", "k", 1, "v2", 2));
	int64_t t2 = st_commit(b);
	T_ASSERT(t2 > t1);
	/* Read your writes. */
	struct seen s = {0};
	T_ASSERT(shmsync_import_until(w, (uint64_t)t2, 5000000000LL, on_change, &s) >= 0);
	shmsync_view v;
	T_OK(shmsync_get(w, "/a/", "k", 1, &v));
	T_EQ(v.len, 2);
	T_ASSERT(memcmp(v.data, "v2", 2) == 0);
	T_OK(shmsync_get(w, "/a/", "n", 1, &v));
	T_EQ(v.len, 8);
	int64_t n;
	memcpy(&n, v.data, 8);
	T_EQ(n, 12);
	T_EQ(shmsync_get(w, "/a/", "x", 1, &v), -ENOENT);
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_put(b, "/a/", "done", 4, "1", 1));
	T_ASSERT(st_commit(b) > 0);
	shmsync_stats st;
	T_OK(shmsync_stat(w, &st));
	printf("writer: signal %s, uring_ops %llu\n", st.signal, (unsigned long long)st.uring_ops);
	shmsync_detach(w);
	return 0;
}

static int reader(void)
{
	shmsync_worker *w = st_attach();
	struct seen s = {0};
	for (int i = 0; i < 100; i++) {
		shmsync_view v;
		if (shmsync_get(w, "/a/", "done", 4, &v) == 0)
			break;
		int rc = shmsync_import_next(w, 5000000000LL, on_change, &s);
		T_ASSERT(rc >= 0);
	}
	shmsync_view v;
	T_OK(shmsync_get(w, "/a/", "done", 4, &v));
	T_OK(shmsync_get(w, "/a/", "k", 1, &v));
	T_ASSERT(v.len == 2 && memcmp(v.data, "v2", 2) == 0);
	/* It may have attached after some commits: those it reads, not imports. */
	T_EQ(s.resets, 0);
	/* The worker table names this process. */
	shmsync_worker_info info[8];
	int nw = shmsync_workers(w, info, 8);
	T_ASSERT(nw >= 1 && nw <= 2);
	bool me = false;
	for (int i = 0; i < nw; i++)
		if (info[i].pid == getpid()) {
			me = true;
			/* As last published: it may have been asleep (offline) then. */
			T_ASSERT(info[i].state >= SHMSYNC_WORKER_LIVE &&
				 info[i].state <= SHMSYNC_WORKER_LAGGING);
			T_ASSERT(info[i].cursor <= shmsync_cursor(w));
		}
	T_ASSERT(me);
	shmsync_stats st;
	T_OK(shmsync_stat(w, &st));
	/* The backed part holds what is in use; huge pages are a share of it. */
	T_ASSERT(st.segment_bytes >= st.bytes_in_use && st.segment_bytes <= st.capacity);
	T_ASSERT(st.huge_bytes <= st.segment_bytes);
	const char *want = getenv("SHMSYNC_SIGNAL");
	if (want && strcmp(want, "futex") == 0)
		T_EQ(st.uring_ops, 0);
	printf("reader: %d puts %d mkdirs, signal %s, uring_ops %llu\n", s.puts, s.mkdirs, st.signal,
	       (unsigned long long)st.uring_ops);
	shmsync_detach(w);
	return 0;
}

int main(void)
{
	alarm(60);
	pid_t root = st_start_root(NULL);
	pid_t rd = fork();
	if (rd == 0)
		exit(reader());
	pid_t wr = fork();
	if (wr == 0)
		exit(writer());
	T_EQ(st_wait(wr), 0);
	T_EQ(st_wait(rd), 0);
	st_stop_root(root);
	printf("sync_basic: ok\n");
	return 0;
}
