/* Reproducer for notes/bugs.md "import_to: an import stopped by its callback ...". Prints BUG at HEAD. */
/* A stopped import leaves the worker reading at its old cursor while its
 * announced epoch is the new tick: the root frees what it reads. */
#include "synctest.h"
static int stop2(const shmsync_change *c, void *a)
{
	(void)c;
	(void)a;
	return 2;
}
int main(void)
{
	alarm(20);
	shmsync_root_opts o = {.debug_poison = 1};
	pid_t root = st_start_root(&o);
	pid_t p = fork();
	if (p == 0) {
		shmsync_worker *a = st_attach(), *b = st_attach();
		shmsync_offline(b);
		shmsync_batch *x;
		char v[64];
		memset(v, 'A', sizeof(v));
		T_OK(shmsync_begin(b, &x));
		T_OK(shmsync_mkdir(x, "/d/"));
		T_OK(shmsync_put(x, "/d/", "k", 1, v, 64));
		int64_t t1 = st_commit(x);
		T_OK(shmsync_import_until(a, (uint64_t)t1, -1, NULL, NULL));
		memset(v, 'B', sizeof(v));
		T_OK(shmsync_begin(b, &x));
		T_OK(shmsync_put(x, "/d/", "k", 1, v, 64));
		int64_t t2 = st_commit(x);
		int rc = shmsync_import_next(a, -1, stop2, NULL); /* stopped by fn: 2 */
		shmsync_stats s;
		T_OK(shmsync_stat(a, &s));
		printf("import_next -> %d; cursor %llu, read_epoch %llu (t1 %lld, t2 %lld)\n", rc,
		       (unsigned long long)shmsync_cursor(a), (unsigned long long)s.read_epoch, (long long)t1,
		       (long long)t2);
		/* one more commit: the root reclaims with min epoch t2 and frees the 'A' version */
		T_OK(shmsync_begin(b, &x));
		T_OK(shmsync_mkdir(x, "/e/"));
		st_commit(x);
		usleep(100000);
		shmsync_view vw;
		rc = shmsync_get(a, "/d/", "k", 1, &vw);
		printf("get at the old cursor: rc %d, len %zu, tick %llu, first byte 0x%02x (want the value "
		       "at the announced epoch)\n",
		       rc, rc == 0 ? vw.len : 0, rc == 0 ? (unsigned long long)vw.tick : 0ull,
		       rc == 0 ? *(const unsigned char *)vw.data : 0);
		/* Right: the value at the epoch a announced (2: 'A', 3: 'B'), read at that epoch. */
		char want = s.read_epoch == (uint64_t)t1 ? 'A' : 'B';
		exit(rc == 0 && vw.epoch == s.read_epoch && *(const char *)vw.data == want ? 0 : 1);
	}
	int st = st_wait(p);
	st_stop_root(root);
	printf("%s\n", st == 0 ? "OK" : "BUG");
	return st;
}
