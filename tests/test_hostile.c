/* Hostile and bad input: what this test proves.
 *
 * The read-only path (a worker holding only the reader fd, in another
 * process):
 * - no writable shared mapping of the segment can be made: not of the reader
 *   fd, not of the fd reopened O_RDWR through /proc, not by mprotect of a
 *   read-only mapping; write(), pwrite(), shrinking ftruncate, hole punching
 *   and MADV_REMOVE fail; a private writable mapping writes only its own copy.
 *   After all of it the root's bytes are intact.
 * - what a hostile worker can still do to the file (grow it, add seals) does
 *   not stop the root from growing the segment.
 * - shm_seg_ptr refuses offsets in the header, at or past the published size,
 *   ranges crossing it, misaligned offsets and lengths that wrap around, and
 *   accepts the same ranges once they are published.
 * Bad batches (shm_op_check and shm_apply_batch): every validation error is
 * produced by a real batch - syntax (directory names, key and value sizes,
 * op kinds), state (missing directory, existing directory or key, stale
 * put_if_tick, add on a non-counter or overflowing, del or rmdir of something
 * absent, including things removed earlier in the same batch), size (E2BIG,
 * ENOBUFS) and a full segment (ENOSPC). For each, failed_op names the bad
 * operation, the earlier operations of the batch leave no trace (puts,
 * overwrites, deletes, adds, mkdirs and a prefix rmdir are all undone), and
 * a valid batch in the same group still commits. A forked reader then sees
 * exactly the expected state through the read-only mapping.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bytepattern.h"
#include "layout.h"
#include "shm.h"
#include "testutil.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef MADV_REMOVE
#define MADV_REMOVE 9
#endif

#define MiB ((size_t)1 << 20)
#define KiB ((size_t)1 << 10)

/* Fails unless `call` failed (returned `bad`) with one of the errnos given. */
#define T_REFUSED(call, bad, ...)                                                                            \
	do {                                                                                                 \
		errno = 0;                                                                                   \
		if ((call) != (bad))                                                                         \
			T_FAIL("%s succeeded on the sealed segment", #call);                                 \
		int t_e_ = errno, t_ok_ = 0;                                                                 \
		const int t_want_[] = {__VA_ARGS__};                                                         \
		for (size_t t_i_ = 0; t_i_ < sizeof(t_want_) / sizeof(t_want_[0]); t_i_++)                   \
			t_ok_ |= t_e_ == t_want_[t_i_];                                                      \
		if (!t_ok_)                                                                                  \
			T_FAIL("%s failed with %s, not the expected error", #call, strerror(t_e_));          \
	} while (0)

/* ---- the read-only path ---------------------------------------------------- */

static void test_readonly_path(void)
{
	struct shm_seg seg;
	struct shm_err err = {{0}};
	const size_t cap = 16 * MiB, size = 1 * MiB;
	T_OK(shm_seg_create(&seg, cap, size, &err));
	fill(seg.base + SHM_HDR_SIZE, size - SHM_HDR_SIZE, 1);
	int rfd = shm_seg_reader_fd(&seg, &err);
	if (rfd < 0)
		T_FAIL("shm_seg_reader_fd: %d (%s)", rfd, err.msg);

	fflush(NULL);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		/* A worker: nothing of the root's but the reader fd. */
		close(seg.fd);

		/* The reader fd itself. */
		T_REFUSED(mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0), MAP_FAILED, EACCES,
			  EPERM);
		uint8_t *ro = mmap(NULL, size, PROT_READ, MAP_SHARED, rfd, 0);
		T_ASSERT(ro != MAP_FAILED);
		T_ASSERT(check(ro + SHM_HDR_SIZE, size - SHM_HDR_SIZE, 1));
		T_REFUSED(mprotect(ro, size, PROT_READ | PROT_WRITE), -1, EACCES, EPERM);
		T_REFUSED(madvise(ro, size, MADV_REMOVE), -1, EACCES, EPERM, EINVAL);
		T_REFUSED(write(rfd, "x", 1), -1, EBADF, EPERM);
		T_REFUSED(ftruncate(rfd, 4096), -1, EINVAL, EBADF, EPERM);

		/* The library's own reader mapping. */
		struct shm_seg rs;
		struct shm_err rerr = {{0}};
		T_OK(shm_seg_open_reader(&rs, rfd, &rerr));
		T_REFUSED(mprotect(rs.base, size, PROT_READ | PROT_WRITE), -1, EACCES, EPERM);

		/* Reopened O_RDWR through /proc: possible for the owner (and root),
		 * which is why the seals, not the fd's mode, protect the segment. */
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", rfd);
		int wfd = open(path, O_RDWR | O_CLOEXEC);
		if (wfd < 0) {
			printf("reopen O_RDWR refused: %s\n", strerror(errno));
		} else {
			T_REFUSED(mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, wfd, 0), MAP_FAILED,
				  EPERM);
			T_REFUSED(mmap(NULL, size, PROT_WRITE, MAP_SHARED, wfd, 4096), MAP_FAILED, EPERM);
			uint8_t *ro2 = mmap(NULL, size, PROT_READ, MAP_SHARED, wfd, 0);
			T_ASSERT(ro2 != MAP_FAILED);
			T_REFUSED(mprotect(ro2, size, PROT_READ | PROT_WRITE), -1, EACCES, EPERM);
			munmap(ro2, size);
			T_REFUSED(write(wfd, "xxxx", 4), -1, EPERM);
			T_REFUSED(pwrite(wfd, "xxxx", 4, SHM_HDR_SIZE), -1, EPERM);
			T_REFUSED(ftruncate(wfd, 4096), -1, EPERM);
			T_REFUSED(ftruncate(wfd, 0), -1, EPERM);
			T_REFUSED(fallocate(wfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, SHM_HDR_SIZE,
					    65536),
				  -1, EPERM);
			/* Seals cannot be removed, and F_SEAL_WRITE cannot be added
			 * under the root's writable mapping. */
			T_REFUSED(fcntl(wfd, F_ADD_SEALS, F_SEAL_WRITE), -1, EBUSY, EPERM);
			int seals = fcntl(wfd, F_GET_SEALS);
			T_ASSERT((seals & (F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK)) ==
				 (F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK));

			/* A private writable mapping is allowed but only writes a copy. */
			uint8_t *priv = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, wfd, 0);
			T_ASSERT(priv != MAP_FAILED);
			memset(priv + SHM_HDR_SIZE, 0xee, 65536);
			munmap(priv, size);
			close(wfd);
		}
		T_ASSERT(check(ro + SHM_HDR_SIZE, size - SHM_HDR_SIZE, 1));
		munmap(ro, size);
		shm_seg_close(&rs);
		fflush(NULL);
		_exit(0);
	}
	t_wait_ok(pid, "read-only path");
	/* Nothing the worker did reached the root's bytes, the size or the file. */
	T_ASSERT(check(seg.base + SHM_HDR_SIZE, size - SHM_HDR_SIZE, 1));
	T_EQ(shm_seg_published_size(&seg), size);
	/* And the root still writes and grows after sealing. */
	T_OK(shm_seg_grow(&seg, 2 * MiB, &err));
	fill(seg.base + size, MiB, 2);
	close(rfd);
	shm_seg_close(&seg);
}

/* ---- what a worker can still do to the file ------------------------------- */

/* In a child holding only a reader fd: reopen it O_RDWR and run `attack`.
 * Then the root must still be able to grow the segment. */
static void hostile_then_grow(const char *name, int (*attack)(int wfd, size_t cap))
{
	struct shm_seg seg;
	struct shm_err err = {{0}};
	const size_t cap = 16 * MiB;
	T_OK(shm_seg_create(&seg, cap, 1 * MiB, &err));
	int rfd = shm_seg_reader_fd(&seg, &err);
	T_ASSERT(rfd >= 0);
	fflush(NULL);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		close(seg.fd);
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", rfd);
		int wfd = open(path, O_RDWR | O_CLOEXEC);
		int rc = wfd < 0 ? -1 : attack(wfd, cap);
		printf("hostile worker, %s: %s\n", name, rc == 0 ? "the kernel allowed it" : strerror(errno));
		fflush(NULL);
		_exit(0);
	}
	t_wait_ok(pid, name);
	memset(&err, 0, sizeof(err));
	int rc = shm_seg_grow(&seg, 4 * MiB, &err);
	if (rc < 0)
		T_FAIL("after a worker's %s the root cannot grow the segment: %d (%s)", name, rc, err.msg);
	T_EQ(shm_seg_published_size(&seg), 4 * MiB);
	fill(seg.base + 3 * MiB, MiB, 3);
	T_ASSERT(check(seg.base + 3 * MiB, MiB, 3));
	close(rfd);
	shm_seg_close(&seg);
}

static int attack_grow(int wfd, size_t cap)
{
	/* Beyond the capacity: the root's next ftruncate to a smaller size
	 * would be a shrink, which its own F_SEAL_SHRINK forbids. */
	return ftruncate(wfd, (off_t)(cap * 4));
}

static int attack_seal_grow(int wfd, size_t cap)
{
	(void)cap;
	return fcntl(wfd, F_ADD_SEALS, F_SEAL_GROW);
}

/* ---- checked access -------------------------------------------------------- */

static void test_seg_ptr(void)
{
	struct shm_seg seg;
	struct shm_err err = {{0}};
	const uint64_t cap = 16 * MiB, size = 1 * MiB;
	T_OK(shm_seg_create(&seg, cap, size, &err));
	int rfd = shm_seg_reader_fd(&seg, &err);
	T_ASSERT(rfd >= 0);
	struct shm_seg rs;
	T_OK(shm_seg_open_reader(&rs, rfd, &err));

	const struct shm_seg *segs[] = {&rs, &seg};
	for (int s = 0; s < 2; s++) {
		const struct shm_seg *g = segs[s];
		/* The header is not data. */
		T_ASSERT(shm_seg_ptr(g, 0, 8, 8) == NULL);
		T_ASSERT(shm_seg_ptr(g, 0, 0, 1) == NULL);
		T_ASSERT(shm_seg_ptr(g, 8, 8, 8) == NULL);
		T_ASSERT(shm_seg_ptr(g, SHM_HDR_SIZE - 8, 8, 8) == NULL);
		T_ASSERT(shm_seg_ptr(g, SHM_HDR_SIZE - 8, 16, 8) == NULL);
		/* The data area, up to the published size. */
		T_ASSERT(shm_seg_ptr(g, SHM_HDR_SIZE, 8, 8) == (const void *)(g->base + SHM_HDR_SIZE));
		T_ASSERT(shm_seg_ptr(g, size - 8, 8, 8) == (const void *)(g->base + size - 8));
		T_ASSERT(shm_seg_ptr(g, SHM_HDR_SIZE, size - SHM_HDR_SIZE, 8) != NULL);
		/* At or past the published size, or crossing it. */
		T_ASSERT(shm_seg_ptr(g, size, 8, 8) == NULL);
		T_ASSERT(shm_seg_ptr(g, size - 8, 16, 8) == NULL);
		T_ASSERT(shm_seg_ptr(g, size - 4096, 4097, 1) == NULL);
		T_ASSERT(shm_seg_ptr(g, SHM_HDR_SIZE, size - SHM_HDR_SIZE + 1, 8) == NULL);
		T_ASSERT(shm_seg_ptr(g, 2 * MiB, 8, 8) == NULL);    /* mapped, not published */
		T_ASSERT(shm_seg_ptr(g, cap - 8, 8, 8) == NULL);    /* end of the reservation */
		T_ASSERT(shm_seg_ptr(g, cap + 4096, 8, 8) == NULL); /* outside the mapping */
		/* Misaligned. */
		T_ASSERT(shm_seg_ptr(g, SHM_HDR_SIZE + 4, 8, 8) == NULL);
		T_ASSERT(shm_seg_ptr(g, SHM_HDR_SIZE + 1, 1, 2) == NULL);
		T_ASSERT(shm_seg_ptr(g, SHM_HDR_SIZE + 8, 8, 16) == NULL);
		T_ASSERT(shm_seg_ptr(g, SHM_HDR_SIZE + 4, 4, 4) != NULL);
		T_ASSERT(shm_seg_ptr(g, SHM_HDR_SIZE + 3, 1, 1) != NULL);
		/* Lengths and offsets that wrap around. */
		T_ASSERT(shm_seg_ptr(g, UINT64_MAX - 7, 16, 8) == NULL);
		T_ASSERT(shm_seg_ptr(g, UINT64_MAX - 7, 8, 8) == NULL);
		T_ASSERT(shm_seg_ptr(g, UINT64_MAX, 1, 1) == NULL);
		T_ASSERT(shm_seg_ptr(g, SHM_HDR_SIZE, UINT64_MAX, 8) == NULL);
		T_ASSERT(shm_seg_ptr(g, SHM_HDR_SIZE, UINT64_MAX - SHM_HDR_SIZE + 1, 8) ==
			 NULL); /* wraps to 0 */
		T_ASSERT(shm_seg_ptr(g, size - 8, UINT64_MAX - size + 9, 8) == NULL);
		T_ASSERT(shm_seg_ptr(g, (uint64_t)1 << 63, 8, 8) == NULL);
	}
	/* Once published, the same range is accepted by the reader. */
	T_OK(shm_seg_grow(&seg, 2 * MiB + 4096, &err));
	T_ASSERT(shm_seg_ptr(&rs, 2 * MiB, 8, 8) == (const void *)(rs.base + 2 * MiB));
	T_ASSERT(shm_seg_ptr(&rs, size - 8, 16, 8) != NULL);
	T_ASSERT(shm_seg_ptr(&rs, 2 * MiB + 4096, 8, 8) == NULL);
	shm_seg_close(&rs);
	close(rfd);
	shm_seg_close(&seg);
}

/* ---- batches ---------------------------------------------------------------- */

static struct shm_op op(int kind, const char *dir, const char *key, const void *val, size_t vlen)
{
	struct shm_op o;
	memset(&o, 0, sizeof(o));
	o.kind = kind;
	o.dir = dir;
	o.dir_len = dir ? strlen(dir) : 0;
	o.key = key;
	o.key_len = key ? strlen(key) : 0;
	o.value = val;
	o.value_len = vlen;
	return o;
}

static struct shm_op op_put(const char *dir, const char *key, const char *val)
{
	return op(SHM_OP_PUT, dir, key, val, strlen(val));
}

static struct shm_op op_add(const char *dir, const char *key, int64_t delta)
{
	struct shm_op o = op(SHM_OP_ADD, dir, key, NULL, 0);
	o.delta = delta;
	return o;
}

static struct shm_op op_if_tick(const char *dir, const char *key, const char *val, uint64_t expected)
{
	struct shm_op o = op(SHM_OP_PUT_IF_TICK, dir, key, val, strlen(val));
	o.expected_tick = expected;
	return o;
}

static struct shm_op op_dir(int kind, const char *dir)
{
	return op(kind, dir, NULL, NULL, 0);
}

static struct shm_root *root_create(size_t capacity, size_t log_bytes)
{
	struct shm_root *root;
	struct shm_err err = {{0}};
	struct shm_root_opts o = {.capacity = capacity, .log_bytes = log_bytes, .poison = true};
	int rc = shm_root_create(&root, &o, &err);
	if (rc < 0)
		T_FAIL("shm_root_create: %d (%s)", rc, err.msg);
	return root;
}

static void reclaim_all(struct shm_root *root)
{
	struct shm_reclaim_report rep;
	/* No reader is online: everything retired may go (over two calls,
	 * since what a commit unlinks is never freed by the same call). */
	for (int i = 0; i < 2; i++)
		T_OK(shm_reclaim(root, UINT64_MAX, UINT64_MAX, 0, &rep));
}

static uint64_t commit_ex(struct shm_root *root, const struct shm_op *ops, size_t n, bool reclaim)
{
	size_t failed = 999;
	uint64_t tick = 0;
	T_OK(shm_commit_begin(root));
	int rc = shm_apply_batch(root, ops, n, &failed);
	if (rc < 0)
		T_FAIL("a valid batch was refused: %d at op %zu", rc, failed);
	T_EQ(shm_commit_publish(root, &tick), 1);
	T_EQ(tick, shm_root_tick(root));
	if (reclaim)
		reclaim_all(root);
	return tick;
}

/* Commits a valid batch as one tick, then reclaims everything retired: only
 * the new tick may be read afterwards. */
static uint64_t commit(struct shm_root *root, const struct shm_op *ops, size_t n)
{
	return commit_ex(root, ops, n, true);
}

static void put_le64(uint8_t *b, int64_t x)
{
	uint64_t v = (uint64_t)x;
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}

/* Asserts key k of dir at epoch holds `val` (len bytes) written at `tick`
 * (0: any tick). */
static void expect_val(const struct shm_seg *g, uint64_t epoch, const char *dir, const char *key,
		       const void *val, size_t len, uint64_t tick)
{
	struct shm_value v;
	int rc = shm_get(g, epoch, dir, strlen(dir), key, strlen(key), &v);
	if (rc < 0)
		T_FAIL("get %s%s at %" PRIu64 ": %d", dir, key, epoch, rc);
	if (v.len != len || memcmp(v.data, val, len) != 0)
		T_FAIL("get %s%s at %" PRIu64 ": wrong value (%zu bytes, want %zu)", dir, key, epoch, v.len,
		       len);
	if (tick && v.tick != tick)
		T_FAIL("get %s%s at %" PRIu64 ": version tick %" PRIu64 ", want %" PRIu64, dir, key, epoch,
		       v.tick, tick);
	T_ASSERT(((uintptr_t)v.data & 7) == 0 || len == 0);
}

static void expect_absent(const struct shm_seg *g, uint64_t epoch, const char *dir, const char *key)
{
	struct shm_value v;
	int rc = shm_get(g, epoch, dir, strlen(dir), key, strlen(key), &v);
	if (rc != -ENOENT)
		T_FAIL("get %s%s at %" PRIu64 ": %d, expected -ENOENT", dir, key, epoch, rc);
}

static void expect_dir(const struct shm_seg *g, uint64_t epoch, const char *dir, int exists)
{
	int rc = shm_dir_exists(g, epoch, dir, strlen(dir));
	if (rc < 0 || !!rc != exists)
		T_FAIL("dir %s at %" PRIu64 ": exists=%d, expected %d", dir, epoch, rc, exists);
}

/* The state every rejected batch must leave untouched. */
struct base_state {
	uint64_t t_setup; /* tick of the setup commit */
	uint8_t counter[8], big[8], small[8];
};

static void expect_base(const struct shm_seg *g, uint64_t epoch, const struct base_state *b)
{
	expect_dir(g, epoch, "/base/", 1);
	expect_dir(g, epoch, "/base/sub/", 1);
	expect_dir(g, epoch, "/base/sub/deeper/", 1);
	expect_dir(g, epoch, "/gone/", 0);
	expect_dir(g, epoch, "/missing/", 0);
	expect_val(g, epoch, "/base/", "shared", "orig", 4, b->t_setup);
	expect_val(g, epoch, "/base/", "victim", "v", 1, b->t_setup);
	expect_val(g, epoch, "/base/", "present", "12345", 5, b->t_setup);
	expect_val(g, epoch, "/base/", "counter", b->counter, 8, b->t_setup);
	expect_val(g, epoch, "/base/", "big", b->big, 8, b->t_setup);
	expect_val(g, epoch, "/base/", "small", b->small, 8, b->t_setup);
	expect_val(g, epoch, "/base/sub/", "k", "s", 1, b->t_setup);
	expect_val(g, epoch, "/base/sub/deeper/", "k", "d", 1, b->t_setup);
	expect_absent(g, epoch, "/base/", "tomb");
	expect_absent(g, epoch, "/base/", "absent");
}

enum { NPREFIX = 8 };

/* One bad operation and the error it must cause. `trace` is the directory
 * the batch's first operation creates. */
struct bad_case {
	const char *what;
	int want;
};

static char long_dir[SHMSYNC_MAX_DIR + 2], max_dir[SHMSYNC_MAX_DIR + 1];
static char long_key[SHMSYNC_MAX_KEY + 2], max_key[SHMSYNC_MAX_KEY + 1];
static uint8_t *huge_value; /* SHMSYNC_MAX_VALUE + 1 bytes */

static int make_bad(unsigned i, const char *trace, const struct base_state *b, struct shm_op *o,
		    const char **what)
{
	switch (i) {
#define CASE(n, desc, expr, err)                                                                             \
	case n:                                                                                              \
		*what = desc;                                                                                \
		*o = expr;                                                                                   \
		return err;
		/* Syntax: directory names. */
		CASE(0, "put, empty dir", op_put("", "k", "v"), -EINVAL)
		CASE(1, "put, dir a/", op_put("a/", "k", "v"), -EINVAL)
		CASE(2, "put, dir /a", op_put("/a", "k", "v"), -EINVAL)
		CASE(3, "put, dir //", op_put("//", "k", "v"), -EINVAL)
		CASE(4, "put, dir /a//b/", op_put("/a//b/", "k", "v"), -EINVAL)
		CASE(5, "put, dir /./", op_put("/./", "k", "v"), -EINVAL)
		CASE(6, "put, dir /../", op_put("/../", "k", "v"), -EINVAL)
		CASE(7, "mkdir /a/./", op_dir(SHM_OP_MKDIR, "/a/./"), -EINVAL)
		CASE(8, "mkdir /a/../b/", op_dir(SHM_OP_MKDIR, "/a/../b/"), -EINVAL)
		CASE(9, "rmdir, empty dir", op_dir(SHM_OP_RMDIR, ""), -EINVAL)
		CASE(10, "mkdir, 256-byte name", op_dir(SHM_OP_MKDIR, long_dir), -ENAMETOOLONG)
		CASE(11, "put, 256-byte dir", op_put(long_dir, "k", "v"), -ENAMETOOLONG)
	case 12: /* a NUL inside the name, which strlen would hide */
		*what = "mkdir, NUL in the name";
		*o = op_dir(SHM_OP_MKDIR, "/a\0b/");
		o->dir_len = 5;
		return -EINVAL;
	case 13:
		*what = "put, NULL dir";
		*o = op_put(NULL, "k", "v");
		o->dir_len = 3;
		return -EINVAL;
		/* Syntax: keys, values, kinds. */
		CASE(14, "put, empty key", op_put("/base/", "", "v"), -EINVAL)
		CASE(15, "del, empty key", op(SHM_OP_DEL, "/base/", "", NULL, 0), -EINVAL)
		CASE(16, "add, empty key", op_add("/base/", "", 1), -EINVAL)
	case 17:
		*what = "put, NULL key with a length";
		*o = op_put("/base/", NULL, "v");
		o->key_len = 3;
		return -EINVAL;
		CASE(18, "put, key of SHMSYNC_MAX_KEY+1", op_put("/base/", long_key, "v"), -ENAMETOOLONG)
		CASE(19, "del, key of SHMSYNC_MAX_KEY+1", op(SHM_OP_DEL, "/base/", long_key, NULL, 0),
		     -ENAMETOOLONG)
		CASE(20, "put, value of SHMSYNC_MAX_VALUE+1",
		     op(SHM_OP_PUT, "/base/", "k", huge_value, SHMSYNC_MAX_VALUE + 1), -EMSGSIZE)
		CASE(21, "put_if_absent, value of SHMSYNC_MAX_VALUE+1",
		     op(SHM_OP_PUT_IF_ABSENT, "/base/", "k", huge_value, SHMSYNC_MAX_VALUE + 1), -EMSGSIZE)
		CASE(22, "put, NULL value with a length", op(SHM_OP_PUT, "/base/", "k", NULL, 5), -EINVAL)
		CASE(23, "kind 0", op(0, "/base/", "k", "v", 1), -EINVAL)
		CASE(24, "kind 99", op(99, "/base/", "k", "v", 1), -EINVAL)
		CASE(25, "kind -1", op(-1, "/base/", "k", "v", 1), -EINVAL)
		CASE(26, "kind RMDIR+1", op(SHM_OP_RMDIR + 1, "/base/", "k", "v", 1), -EINVAL)
		/* State. */
		CASE(27, "put into a missing dir", op_put("/missing/", "k", "v"), -ENOENT)
		CASE(28, "put into a dir removed earlier", op_put("/gone/", "k", "v"), -ENOENT)
		CASE(29, "put into a dir this batch removed", op_put("/base/sub/deeper/", "k", "v"), -ENOENT)
		CASE(30, "mkdir of an existing dir", op_dir(SHM_OP_MKDIR, "/base/"), -EEXIST)
		CASE(31, "mkdir of a dir this batch made", op_dir(SHM_OP_MKDIR, trace), -EEXIST)
		CASE(32, "put_if_absent of a present key",
		     op(SHM_OP_PUT_IF_ABSENT, "/base/", "present", "x", 1), -EEXIST)
		CASE(33, "put_if_absent of a key this batch put",
		     op(SHM_OP_PUT_IF_ABSENT, trace, "k", "x", 1), -EEXIST)
		CASE(34, "put_if_tick, stale tick", op_if_tick("/base/", "present", "x", b->t_setup - 1),
		     -ECANCELED)
		CASE(35, "put_if_tick, future tick", op_if_tick("/base/", "present", "x", b->t_setup + 1000),
		     -ECANCELED)
		CASE(36, "put_if_tick 0 (absent) on a present key", op_if_tick("/base/", "present", "x", 0),
		     -ECANCELED)
		CASE(37, "put_if_tick on an absent key", op_if_tick("/base/", "absent", "x", b->t_setup),
		     -ECANCELED)
		CASE(38, "put_if_tick on a key this batch overwrote",
		     op_if_tick("/base/", "shared", "x", b->t_setup), -ECANCELED)
		CASE(39, "put_if_tick on a deleted key", op_if_tick("/base/", "tomb", "x", b->t_setup),
		     -ECANCELED)
		CASE(40, "add on a 5-byte value", op_add("/base/", "present", 1), -EINVAL)
		CASE(41, "add on a 1-byte value this batch wrote", op_add(trace, "k", 1), -EINVAL)
		CASE(42, "add overflow up", op_add("/base/", "big", 1), -ERANGE)
		CASE(43, "add overflow down", op_add("/base/", "small", -6), -ERANGE)
		CASE(44, "add overflow after this batch's add", op_add("/base/", "counter", 3), -ERANGE)
		CASE(45, "add INT64_MIN to a negative counter", op_add("/base/", "small", INT64_MIN), -ERANGE)
		CASE(46, "del of an absent key", op(SHM_OP_DEL, "/base/", "absent", NULL, 0), -ENOENT)
		CASE(47, "del of a key deleted earlier", op(SHM_OP_DEL, "/base/", "tomb", NULL, 0), -ENOENT)
		CASE(48, "del of a key this batch deleted", op(SHM_OP_DEL, "/base/", "victim", NULL, 0),
		     -ENOENT)
		CASE(49, "del in a missing dir", op(SHM_OP_DEL, "/missing/", "k", NULL, 0), -ENOENT)
		CASE(50, "rmdir of an absent dir", op_dir(SHM_OP_RMDIR, "/missing/"), -ENOENT)
		CASE(51, "rmdir of a dir removed earlier", op_dir(SHM_OP_RMDIR, "/gone/"), -ENOENT)
		CASE(52, "rmdir of a dir this batch removed (by prefix)",
		     op_dir(SHM_OP_RMDIR, "/base/sub/deeper/"), -ENOENT)
		CASE(53, "add in a missing dir", op_add("/missing/", "c", 1), -ENOENT)
		CASE(54, "put_if_absent in a missing dir", op(SHM_OP_PUT_IF_ABSENT, "/missing/", "k", "x", 1),
		     -ENOENT)
	case 55: /* two operations: see the caller */
		*what = "add overflow on a counter this batch put";
		return 0;
#undef CASE
	}
	return 1; /* no more cases */
}

static void test_bad_batches(void)
{
	struct shm_root *root = root_create(64 * MiB, 64 * KiB);
	struct shm_seg *g = shm_root_seg(root);
	struct base_state b;
	put_le64(b.counter, INT64_MAX - 7);
	put_le64(b.big, INT64_MAX);
	put_le64(b.small, INT64_MIN + 5);

	memset(long_dir, 'a', SHMSYNC_MAX_DIR + 1);
	long_dir[0] = '/';
	long_dir[SHMSYNC_MAX_DIR] = '/';
	long_dir[SHMSYNC_MAX_DIR + 1] = 0;
	memcpy(max_dir, long_dir, SHMSYNC_MAX_DIR);
	max_dir[SHMSYNC_MAX_DIR - 1] = '/';
	max_dir[SHMSYNC_MAX_DIR] = 0;
	memset(long_key, 'k', SHMSYNC_MAX_KEY + 1);
	long_key[SHMSYNC_MAX_KEY + 1] = 0;
	memset(max_key, 'm', SHMSYNC_MAX_KEY);
	max_key[SHMSYNC_MAX_KEY] = 0;
	huge_value = calloc(1, SHMSYNC_MAX_VALUE + 1);
	T_ASSERT(huge_value != NULL);

	const struct shm_op setup[] = {
		op_dir(SHM_OP_MKDIR, "/base/"),
		op_dir(SHM_OP_MKDIR, "/base/sub/"),
		op_dir(SHM_OP_MKDIR, "/base/sub/deeper/"),
		op_dir(SHM_OP_MKDIR, "/gone/"),
		op_put("/base/", "shared", "orig"),
		op_put("/base/", "victim", "v"),
		op_put("/base/", "present", "12345"),
		op(SHM_OP_PUT, "/base/", "counter", b.counter, 8),
		op(SHM_OP_PUT, "/base/", "big", b.big, 8),
		op(SHM_OP_PUT, "/base/", "small", b.small, 8),
		op_put("/base/", "tomb", "t"),
		op_put("/base/sub/", "k", "s"),
		op_put("/base/sub/deeper/", "k", "d"),
		op_put("/gone/", "k", "g"),
	};
	b.t_setup = commit(root, setup, sizeof(setup) / sizeof(setup[0]));
	const struct shm_op setup2[] = {op_dir(SHM_OP_RMDIR, "/gone/"),
					op(SHM_OP_DEL, "/base/", "tomb", NULL, 0)};
	commit(root, setup2, 2);
	expect_base(g, shm_root_tick(root), &b);

	/* Limits hold at their boundary: the largest name and key are fine. */
	T_ASSERT(shm_dir_name_valid(max_dir, SHMSYNC_MAX_DIR));
	T_ASSERT(!shm_dir_name_valid(long_dir, SHMSYNC_MAX_DIR + 1));
	static const char *const valid_names[] = {"/a/",  "/a/b/",  "/.../", "/.a/",
						  "/a./", "/a..b/", "/-/",   "/ /"};
	for (size_t i = 0; i < sizeof(valid_names) / sizeof(valid_names[0]); i++)
		if (!shm_dir_name_valid(valid_names[i], strlen(valid_names[i])))
			T_FAIL("valid directory name \"%s\" refused", valid_names[i]);
	const struct shm_op limits[] = {
		op_dir(SHM_OP_MKDIR, max_dir),
		op_put(max_dir, max_key, "v"),
		op_dir(SHM_OP_MKDIR, "/.../"),
	};
	uint64_t t_lim = commit(root, limits, 3);
	expect_val(g, t_lim, max_dir, max_key, "v", 1, t_lim);
	T_EQ(shm_op_check(&(struct shm_op){.kind = SHM_OP_PUT,
					   .dir = "/base/",
					   .dir_len = 6,
					   .key = "k",
					   .key_len = 1,
					   .value = huge_value,
					   .value_len = SHMSYNC_MAX_VALUE}),
	     0);

	unsigned ncases = 0;
	for (unsigned i = 0;; i++) {
		char trace[32], tkey[32], okkey[32];
		snprintf(trace, sizeof(trace), "/trace%u/", i);
		snprintf(tkey, sizeof(tkey), "trace%u", i);
		snprintf(okkey, sizeof(okkey), "ok%u", i);
		struct shm_op ops[NPREFIX + 2];
		/* Every kind of write before the bad one, so each must be undone. */
		ops[0] = op_dir(SHM_OP_MKDIR, trace);
		ops[1] = op_put(trace, "k", "v");
		ops[2] = op_put("/base/", tkey, "x");
		ops[3] = op_put("/base/", "shared", "changed");
		ops[4] = op(SHM_OP_DEL, "/base/", "victim", NULL, 0);
		ops[5] = op_add("/base/", "counter", 5);
		ops[6] = op_dir(SHM_OP_RMDIR, "/base/sub/");
		ops[7] = op_add("/base/", "newcounter", 1);
		const char *what = NULL;
		int want = make_bad(i, trace, &b, &ops[NPREFIX], &what);
		if (want == 1)
			break;
		size_t n = NPREFIX + 1;
		if (want == 0) {
			/* An add that overflows a counter the same batch created
			 * with a put. */
			static uint8_t fresh[8];
			put_le64(fresh, INT64_MAX);
			ops[NPREFIX] = op(SHM_OP_PUT, "/base/", "fresh", fresh, 8);
			ops[NPREFIX + 1] = op_add("/base/", "fresh", 1);
			want = -ERANGE;
			n = NPREFIX + 2;
		}
		size_t bad_at = n - 1;
		/* Syntax errors are shm_op_check's; state errors pass it. */
		int syntax = want == -EINVAL || want == -ENAMETOOLONG || want == -EMSGSIZE;
		if (i == 40 || i == 41)
			syntax = 0; /* add on a non-counter: EINVAL from the state */
		int crc = shm_op_check(&ops[bad_at]);
		if (crc != (syntax ? want : 0))
			T_FAIL("case %u (%s): shm_op_check %d, expected %d", i, what, crc, syntax ? want : 0);

		T_OK(shm_commit_begin(root));
		size_t failed = 999;
		int rc = shm_apply_batch(root, ops, n, &failed);
		if (rc != want || failed != bad_at)
			T_FAIL("case %u (%s): rc %d failed_op %zu, expected %d at %zu", i, what, rc, failed,
			       want, bad_at);
		/* The group goes on: a valid batch after the rejected one. */
		const struct shm_op good[] = {op_put("/base/", okkey, "ok")};
		T_OK(shm_apply_batch(root, good, 1, &failed));
		uint64_t t = 0;
		T_EQ(shm_commit_publish(root, &t), 1);
		reclaim_all(root);
		expect_val(g, t, "/base/", okkey, "ok", 2, t);
		expect_dir(g, t, trace, 0);
		expect_absent(g, t, trace, "k");
		expect_absent(g, t, "/base/", tkey);
		expect_absent(g, t, "/base/", "newcounter");
		expect_absent(g, t, "/base/", "fresh");
		expect_base(g, t, &b);
		ncases++;
	}
	printf("bad batches: %u cases rejected with the right error and no trace\n", ncases);

	/* The same prefix is valid on its own (so the checks above could fail). */
	char tkey[] = "traceX";
	struct shm_op ok_ops[] = {
		op_dir(SHM_OP_MKDIR, "/traceX/"),
		op_put("/traceX/", "k", "v"),
		op_put("/base/", tkey, "x"),
		op_put("/base/", "shared", "changed"),
		op(SHM_OP_DEL, "/base/", "victim", NULL, 0),
		op_add("/base/", "counter", 5),
		op_dir(SHM_OP_RMDIR, "/base/sub/"),
		op_add("/base/", "newcounter", 7),
		op_if_tick("/base/", "present", "67890", b.t_setup),
		op_if_tick("/base/", "absent2", "new", 0),
		op(SHM_OP_PUT_IF_ABSENT, "/base/", "absent3", "x", 1),
	};
	/* Not reclaimed: the snapshot before it stays readable (below and in
	 * the reader process). */
	uint64_t t = commit_ex(root, ok_ops, sizeof(ok_ops) / sizeof(ok_ops[0]), false);
	uint8_t want[8];
	expect_dir(g, t, "/traceX/", 1);
	expect_val(g, t, "/traceX/", "k", "v", 1, t);
	expect_val(g, t, "/base/", "shared", "changed", 7, t);
	expect_absent(g, t, "/base/", "victim");
	put_le64(want, INT64_MAX - 2);
	expect_val(g, t, "/base/", "counter", want, 8, t);
	put_le64(want, 7);
	expect_val(g, t, "/base/", "newcounter", want, 8, t);
	expect_dir(g, t, "/base/sub/", 0);
	expect_dir(g, t, "/base/sub/deeper/", 0);
	expect_absent(g, t, "/base/sub/", "k");
	expect_val(g, t, "/base/", "present", "67890", 5, t);
	expect_val(g, t, "/base/", "absent2", "new", 3, t);
	expect_val(g, t, "/base/", "absent3", "x", 1, t);
	/* Older snapshots are untouched by the newer commit. */
	expect_base(g, t - 1, &b);

	/* A reader in another process sees the same through its read-only mapping. */
	struct shm_err err = {{0}};
	int rfd = shm_seg_reader_fd(g, &err);
	T_ASSERT(rfd >= 0);
	fflush(NULL);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		close(g->fd);
		struct shm_seg rs;
		T_OK(shm_seg_open_reader(&rs, rfd, &err));
		uint64_t rt = shm_published_tick(&rs);
		T_EQ(rt, t);
		expect_base(&rs, t - 1, &b);
		expect_val(&rs, t, "/base/", "shared", "changed", 7, t);
		expect_absent(&rs, t, "/base/", "victim");
		put_le64(want, INT64_MAX - 2);
		expect_val(&rs, t, "/base/", "counter", want, 8, t);
		expect_dir(&rs, t, "/base/sub/", 0);
		expect_dir(&rs, t, "/traceX/", 1);
		for (unsigned i = 0; i < ncases; i++) {
			char okkey[32], trace[32];
			snprintf(okkey, sizeof(okkey), "ok%u", i);
			snprintf(trace, sizeof(trace), "/trace%u/", i);
			expect_val(&rs, t, "/base/", okkey, "ok", 2, 0);
			expect_dir(&rs, t, trace, 0);
		}
		expect_val(&rs, t, max_dir, max_key, "v", 1, t_lim);
		shm_seg_close(&rs);
		fflush(NULL);
		_exit(0);
	}
	t_wait_ok(pid, "reader of the bad-batch state");
	close(rfd);
	free(huge_value);
	shm_root_destroy(root);
}

/* E2BIG (a batch over half the log) and ENOBUFS (this tick's share of the
 * log used up), with a 64 KiB log. */
static void test_batch_size(void)
{
	struct shm_root *root = root_create(64 * MiB, 64 * KiB);
	struct shm_seg *g = shm_root_seg(root);
	const struct shm_op mk = op_dir(SHM_OP_MKDIR, "/b/");
	commit(root, &mk, 1);
	size_t max = shm_root_max_batch_log_bytes(root);
	T_ASSERT(max > 0 && max <= 32 * KiB);

	enum { N = 200 };
	static char keys[N][SHMSYNC_MAX_KEY + 1];
	struct shm_op ops[N];
	size_t fits = 0;
	for (size_t i = 0; i < N; i++) {
		memset(keys[i], 'a' + (int)(i % 26), SHMSYNC_MAX_KEY);
		snprintf(keys[i], 16, "%zu-", i);
		keys[i][strlen(keys[i])] = 'x';
		keys[i][SHMSYNC_MAX_KEY] = 0;
		ops[i] = op_put("/b/", keys[i], "v");
		if (shm_batch_log_bytes(ops, i + 1) <= max)
			fits = i + 1;
	}
	T_ASSERT(fits > 1 && fits < N);
	T_ASSERT(shm_batch_log_bytes(ops, fits + 1) > max);

	/* One op too many: E2BIG, no trace, the group goes on. */
	T_OK(shm_commit_begin(root));
	size_t failed = 999;
	int rc = shm_apply_batch(root, ops, fits + 1, &failed);
	if (rc != -E2BIG)
		T_FAIL("batch of %zu log bytes (max %zu): %d, expected -E2BIG",
		       shm_batch_log_bytes(ops, fits + 1), max, rc);
	T_ASSERT(failed <= fits);
	const struct shm_op ok = op_put("/b/", "after-e2big", "ok");
	T_OK(shm_apply_batch(root, &ok, 1, &failed));
	uint64_t t;
	T_EQ(shm_commit_publish(root, &t), 1);
	reclaim_all(root);
	expect_val(g, t, "/b/", "after-e2big", "ok", 2, t);
	for (size_t i = 0; i <= fits; i++)
		expect_absent(g, t, "/b/", keys[i]);

	/* Exactly at the limit: accepted in an empty group. */
	T_OK(shm_commit_begin(root));
	rc = shm_apply_batch(root, ops, fits, &failed);
	if (rc != 0)
		T_FAIL("batch of %zu log bytes (max %zu) refused: %d", shm_batch_log_bytes(ops, fits), max,
		       rc);
	/* A second big batch in the same group: the tick's share is used up. */
	rc = shm_apply_batch(root, ops + fits, fits, &failed);
	T_EQ(rc, -ENOBUFS);
	T_EQ(shm_commit_publish(root, &t), 1);
	reclaim_all(root);
	for (size_t i = 0; i < fits; i++)
		expect_val(g, t, "/b/", keys[i], "v", 1, t);
	for (size_t i = fits; i < 2 * fits && i < N; i++)
		expect_absent(g, t, "/b/", keys[i]);
	/* Published, then retried: it goes in. */
	uint64_t t2 = commit(root, ops + fits, fits);
	for (size_t i = fits; i < 2 * fits && i < N; i++)
		expect_val(g, t2, "/b/", keys[i], "v", 1, t2);
	/* Many ticks of big batches: the log wraps, nothing breaks. */
	for (int r = 0; r < 20; r++)
		commit(root, ops + (size_t)r % (N - fits), fits);
	shm_root_destroy(root);
}

/* A full segment: the batch that does not fit is -ENOSPC with no trace;
 * deletes and an rmdir still go through (headroom); after reclaiming, puts
 * fit again. */
static unsigned fill_up(struct shm_root *root, const uint8_t *val, size_t len, char (*keys)[16],
			unsigned from, unsigned max)
{
	unsigned n = from;
	for (;; n++) {
		T_ASSERT(n < max);
		snprintf(keys[n], 16, "k%u", n);
		struct shm_op o = op(SHM_OP_PUT, "/fill/", keys[n], val, len);
		T_OK(shm_commit_begin(root));
		size_t failed = 999;
		int rc = shm_apply_batch(root, &o, 1, &failed);
		uint64_t t;
		if (rc < 0) {
			T_EQ(rc, -ENOSPC);
			T_EQ(failed, 0);
			T_EQ(shm_commit_publish(root, &t), 0); /* nothing applied: nothing published */
			return n;
		}
		T_EQ(shm_commit_publish(root, &t), 1);
	}
}

static void test_full_segment(void)
{
	struct shm_root *root = root_create(SHM_MIN_CAPACITY, 0);
	struct shm_seg *g = shm_root_seg(root);
	const struct shm_op mk = op_dir(SHM_OP_MKDIR, "/fill/");
	commit(root, &mk, 1);
	static uint8_t val[64 * KiB];
	memset(val, 0x42, sizeof(val));
	enum { MAXK = 512 };
	static char keys[MAXK][16];
	const unsigned n1 = fill_up(root, val, sizeof(val), keys, 0, MAXK);
	unsigned n = n1;
	T_ASSERT(n > 4);
	printf("full segment after %u puts of 64 KiB\n", n);

	/* A batch that starts small and then does not fit leaves no trace. */
	struct shm_op two[] = {op_put("/fill/", "small", "s"),
			       op(SHM_OP_PUT, "/fill/", "big", val, sizeof(val))};
	T_OK(shm_commit_begin(root));
	size_t failed = 999;
	T_EQ(shm_apply_batch(root, two, 2, &failed), -ENOSPC);
	T_ASSERT(failed <= 1);
	/* Deletes need memory (tombstones, log records): the headroom has it. */
	struct shm_op dels[4];
	for (int i = 0; i < 4; i++)
		dels[i] = op(SHM_OP_DEL, "/fill/", keys[i], NULL, 0);
	int rc = shm_apply_batch(root, dels, 4, &failed);
	if (rc < 0)
		T_FAIL("deleting from a full segment: %d at op %zu", rc, failed);
	uint64_t tdel;
	T_EQ(shm_commit_publish(root, &tdel), 1);
	expect_absent(g, tdel, "/fill/", "small");
	expect_absent(g, tdel, "/fill/", "big");
	expect_absent(g, tdel, "/fill/", keys[0]);
	expect_val(g, tdel, "/fill/", keys[4], val, sizeof(val), 0);
	expect_val(g, tdel - 1, "/fill/", keys[0], val, sizeof(val), 0);

	/* Reclaimed, the deleted values' room serves new puts. */
	reclaim_all(root);
	uint64_t t = commit(root, two, 2);
	expect_val(g, t, "/fill/", "big", val, sizeof(val), t);

	/* Full again; removing the whole directory still works. */
	n = fill_up(root, val, sizeof(val), keys, n, MAXK);
	const struct shm_op rm = op_dir(SHM_OP_RMDIR, "/fill/");
	T_OK(shm_commit_begin(root));
	rc = shm_apply_batch(root, &rm, 1, &failed);
	if (rc < 0)
		T_FAIL("rmdir on a full segment: %d", rc);
	uint64_t trm;
	T_EQ(shm_commit_publish(root, &trm), 1);
	expect_dir(g, trm, "/fill/", 0);
	reclaim_all(root);
	struct shm_stats st;
	shm_root_stats(root, &st);
	T_EQ(st.retired_objects, 0);
	T_EQ(st.keys, 0);
	/* And the room is back. */
	commit(root, &mk, 1);
	unsigned n2 = fill_up(root, val, sizeof(val), keys, 0, MAXK);
	if (n2 + 1 < n1)
		T_FAIL("after rmdir and reclaim only %u values fit, %u did at first", n2, n1);
	shm_root_destroy(root);
}

int main(void)
{
	test_readonly_path();
	test_seg_ptr();
	test_bad_batches();
	test_batch_size();
	test_full_segment();
	/* Last: attacks on the file that only a design change can stop, so a
	 * failure here does not hide the results above. */
	hostile_then_grow("ftruncate beyond the capacity", attack_grow);
	hostile_then_grow("F_SEAL_GROW", attack_seal_grow);
	printf("hostile: ok\n");
	return 0;
}
