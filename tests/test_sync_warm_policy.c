/* Where the root warms pages (sync/root_loop.c, "Warming"), as the
 * statistics count them: an idle root touches the pages its grow-ahead
 * backed; a stream of small commits, each waited for as an exchange waits
 * for its answer, never meets a touch in a poll, even while the store grows
 * and new pages wait to be touched; a bulk load, whose writer leaves the
 * root time between batches, has pages touched in those polls. */
#include "synctest.h"

#define SMALL_BATCHES 4000
#define SMALL_VALUE 200 /* 4000 of them: ~1 MiB of versions, new pages to warm */
#define BULK_BATCHES 100
#define BULK_PUTS 256
#define BULK_VALUE 64 /* 256 x ~90 bytes of records: a page and more, a bulk commit */
#define BULK_PAUSE_US 300

static void put_one(shmsync_worker *w, unsigned i, size_t vlen)
{
	shmsync_batch *b;
	char k[24], v[SMALL_VALUE];
	memset(v, 'v', sizeof v);
	T_OK(shmsync_begin(w, &b));
	snprintf(k, sizeof k, "s%u", i);
	T_OK(shmsync_put(b, "/d/", k, strlen(k), v, vlen));
	T_ASSERT(st_commit(b) > 0);
}

static shmsync_stats stats_of(shmsync_worker *w)
{
	shmsync_stats st;
	T_OK(shmsync_stat(w, &st));
	return st;
}

int main(void)
{
	alarm(120);
	pid_t root = st_start_root(NULL);
	shmsync_worker *w = st_attach();
	shmsync_batch *b;
	T_OK(shmsync_begin(w, &b));
	T_OK(shmsync_mkdir(b, "/d/"));
	T_ASSERT(st_commit(b) > 0);

	/* Idle: the grow-ahead's pages get touched. */
	usleep(200 * 1000);
	shmsync_stats st = stats_of(w);
	T_ASSERT(st.root_pages_warmed_idle > 0);
	T_EQ(st.root_pages_warmed_poll, 0u);
	uint64_t segment = st.segment_bytes;

	/* Small commits, each waited for: no touch in a poll. */
	for (unsigned i = 0; i < SMALL_BATCHES; i++)
		put_one(w, i, SMALL_VALUE);
	st = stats_of(w);
	T_ASSERT(st.segment_bytes > segment); /* new pages were there to warm */
	T_EQ(st.root_pages_warmed_poll, 0u);

	/* A bulk load with pauses between its batches: touches in polls. */
	char k[24], v[BULK_VALUE];
	memset(v, 'b', sizeof v);
	for (unsigned n = 0; n < BULK_BATCHES; n++) {
		T_OK(shmsync_begin(w, &b));
		for (unsigned i = 0; i < BULK_PUTS; i++) {
			snprintf(k, sizeof k, "b%u.%u", n, i);
			T_OK(shmsync_put(b, "/d/", k, strlen(k), v, sizeof v));
		}
		T_ASSERT(st_commit(b) > 0);
		usleep(BULK_PAUSE_US);
	}
	st = stats_of(w);
	T_ASSERT(st.root_pages_warmed_poll > 0);
	printf("warm policy: ok (%s; pages warmed idle %llu, in polls %llu; segment %llu MiB)\n",
	       st_signal_name(), (unsigned long long)st.root_pages_warmed_idle,
	       (unsigned long long)st.root_pages_warmed_poll, (unsigned long long)(st.segment_bytes >> 20));
	shmsync_detach(w);
	st_stop_root(root);
	return 0;
}
