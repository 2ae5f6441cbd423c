/* The root segment (shm/segment.c): what this test proves.
 *
 * - shm_parse_size accepts exactly the documented forms (digits with an
 *   optional K/M/G/T binary suffix) and refuses the rest: -EINVAL for junk,
 *   -ERANGE for values that do not fit 64 bits.
 * - shm_capacity_default honours SHMSYNC_CAPACITY exactly, refuses a bad or
 *   too small value with a message that names the variable, and, without it,
 *   stays inside RLIMIT_AS: under a 2 GiB limit the default is <= the limit
 *   and a segment of that capacity can really be created; under a limit below
 *   the minimum it fails with a message naming RLIMIT_AS.
 * - shm_seg_create / shm_seg_grow back the file and publish the size; growth
 *   past the capacity, or a failing ftruncate, is -ENOSPC with a message and
 *   leaves the published size unchanged.
 * - A reader in another process (shm_seg_reader_fd + shm_seg_open_reader)
 *   shares the root's bytes: it sees what the root wrote after the reader
 *   mapped, and the segment's growth, and nothing beyond the published size.
 * - A header with a wrong magic or layout version is refused with a message
 *   that says so, while an exact copy of a good segment is accepted (so the
 *   refusal is caused by the corrupted field, not by the copy).
 */
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
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

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

/* ---- shm_parse_size -------------------------------------------------------- */

static void test_parse_size(void)
{
	static const struct {
		const char *text;
		uint64_t want;
	} good[] = {
		{"0", 0},
		{"4096", 4096},
		{"64K", 64ull << 10},
		{"16M", 16ull << 20},
		{"2G", 2ull << 30},
		{"1T", 1ull << 40},
		{"18446744073709551615", UINT64_MAX},
		{"16777215T", 16777215ull << 40},
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		size_t v = 12345;
		int rc = shm_parse_size(good[i].text, &v);
		if (rc != 0 || v != good[i].want)
			T_FAIL("shm_parse_size(\"%s\") = %d, %zu; expected 0, %" PRIu64, good[i].text, rc, v,
			       good[i].want);
	}

	static const char *const invalid[] = {
		"",  "abc",  "12Q",  "-5",   "+5",  "1.5G", "16E",
		"K", " 64K", "64K ", "0x10", "1K1", "64KK", "1e3",
	};
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		size_t v = 12345;
		int rc = shm_parse_size(invalid[i], &v);
		if (rc != -EINVAL)
			T_FAIL("shm_parse_size(\"%s\") = %d, expected -EINVAL", invalid[i], rc);
		/* A refused size must not be half-written into the output. */
		T_EQ(v, 12345);
	}

	static const char *const overflow[] = {
		"99999999999999999999",
		"18446744073709551616", /* UINT64_MAX + 1 */
		"16777216T",            /* 2^64 */
		"17179869184G",         /* 2^64 */
		"99999999999999999999K",
	};
	for (size_t i = 0; i < sizeof(overflow) / sizeof(overflow[0]); i++) {
		size_t v = 12345;
		int rc = shm_parse_size(overflow[i], &v);
		if (rc != -ERANGE)
			T_FAIL("shm_parse_size(\"%s\") = %d, expected -ERANGE", overflow[i], rc);
		T_EQ(v, 12345);
	}
	T_EQ(shm_parse_size(NULL, &(size_t){0}), -EINVAL);
}

/* ---- shm_capacity_default ------------------------------------------------ */

static void test_capacity_env(void)
{
	struct shm_err err;
	size_t cap;

	static const struct {
		const char *text;
		size_t want;
	} good[] = {
		{"64M", 64 * MiB},
		{"4M", SHM_MIN_CAPACITY}, /* the minimum itself is accepted */
		{"1G", GiB},
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		T_OK(setenv("SHMSYNC_CAPACITY", good[i].text, 1));
		cap = 0;
		memset(&err, 0, sizeof(err));
		int rc = shm_capacity_default(&cap, &err);
		if (rc != 0 || cap != good[i].want)
			T_FAIL("SHMSYNC_CAPACITY=%s: rc %d cap %zu (%s), expected %zu", good[i].text, rc, cap,
			       err.msg, good[i].want);
	}

	/* Junk and values below the minimum: an error that tells the user which
	 * variable to fix. */
	static const char *const bad[] = {"abc", "12Q",   "-5", "1.5G", "99999999999999999999",
					  "1M",  "4095K", "0"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		T_OK(setenv("SHMSYNC_CAPACITY", bad[i], 1));
		cap = 777;
		memset(&err, 0, sizeof(err));
		int rc = shm_capacity_default(&cap, &err);
		if (rc >= 0)
			T_FAIL("SHMSYNC_CAPACITY=%s accepted (cap %zu)", bad[i], cap);
		if (!strstr(err.msg, "SHMSYNC_CAPACITY"))
			T_FAIL("SHMSYNC_CAPACITY=%s: message does not name the variable: \"%s\"", bad[i],
			       err.msg);
		printf("SHMSYNC_CAPACITY=%s -> %d: %s\n", bad[i], rc, err.msg);
	}

	/* Above the maximum: refused, or at least clamped to something a segment
	 * can be created with. Either way the result is never above the max. */
	T_OK(setenv("SHMSYNC_CAPACITY", "128T", 1));
	cap = 0;
	memset(&err, 0, sizeof(err));
	if (shm_capacity_default(&cap, &err) == 0)
		T_ASSERT(cap <= SHM_MAX_CAPACITY);
	else
		T_ASSERT(strstr(err.msg, "SHMSYNC_CAPACITY") != NULL);

	T_OK(unsetenv("SHMSYNC_CAPACITY"));
}

/* A SHMSYNC_CAPACITY that is not a multiple of the page size: whatever
 * shm_capacity_default returns must be usable, otherwise the user gets an
 * error from shm_seg_create that does not name the variable. Runs last so a
 * failure here does not hide the other checks. */
static void test_capacity_env_unaligned(void)
{
	struct shm_err err = {{0}};
	size_t cap = 0;
	T_OK(setenv("SHMSYNC_CAPACITY", "5000000", 1));
	int rc = shm_capacity_default(&cap, &err);
	T_OK(unsetenv("SHMSYNC_CAPACITY"));
	if (rc == 0) {
		struct shm_seg seg;
		struct shm_err err2 = {{0}};
		int crc = shm_seg_create(&seg, cap, 0, &err2);
		if (crc < 0)
			T_FAIL("SHMSYNC_CAPACITY=5000000 gave capacity %zu, which shm_seg_create refuses: %d "
			       "(%s)",
			       cap, crc, err2.msg);
		shm_seg_close(&seg);
	} else {
		T_ASSERT(strstr(err.msg, "SHMSYNC_CAPACITY") != NULL);
	}
}

/* Results a forked child leaves for the parent (the child's address space
 * is unusable for stdio once RLIMIT_AS is tiny). */
struct child_result {
	int rc_default;
	int rc_create;
	uint64_t cap;
	char msg[256];
	char create_msg[256];
};

static void *shared_page(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	T_ASSERT(p != MAP_FAILED);
	memset(p, 0, len);
	return p;
}

/* In a child: lower RLIMIT_AS's soft limit to `limit`, then ask for the
 * default capacity and try to create a segment with it. */
static void capacity_under_rlimit(uint64_t limit, struct child_result *res)
{
	fflush(NULL);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		struct rlimit rl;
		if (getrlimit(RLIMIT_AS, &rl) < 0)
			_exit(3);
		rl.rlim_cur = limit;
		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < limit)
			rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_AS, &rl) < 0)
			_exit(4);
		struct shm_err err = {{0}};
		size_t cap = 0;
		res->rc_default = shm_capacity_default(&cap, &err);
		res->cap = cap;
		memcpy(res->msg, err.msg, sizeof(res->msg));
		if (res->rc_default == 0) {
			struct shm_seg seg;
			struct shm_err err2 = {{0}};
			res->rc_create = shm_seg_create(&seg, cap, 0, &err2);
			memcpy(res->create_msg, err2.msg, sizeof(res->create_msg));
			if (res->rc_create == 0) {
				/* The reservation is real: growing inside it works. */
				res->rc_create = shm_seg_grow(&seg, 2 * MiB, &err2);
				memcpy(res->create_msg, err2.msg, sizeof(res->create_msg));
				shm_seg_close(&seg);
			}
		}
		_exit(0);
	}
	t_wait_ok(pid, "capacity under RLIMIT_AS");
}

static void test_capacity_rlimit(void)
{
	T_OK(unsetenv("SHMSYNC_CAPACITY"));
	struct shm_err err = {{0}};
	size_t cap = 0;
	T_OK(shm_capacity_default(&cap, &err));
	printf("default capacity here: %zu bytes\n", cap);
	T_ASSERT(cap >= SHM_MIN_CAPACITY && cap <= SHM_MAX_CAPACITY);

	if (UNDER_ASAN) {
		/* ASan reserves terabytes of shadow memory, which RLIMIT_AS
		 * counts: any lowered limit kills the process, not the code
		 * under test. The normal build runs this part. */
		printf("RLIMIT_AS checks skipped under AddressSanitizer\n");
		return;
	}

	struct child_result *res = shared_page(sizeof(*res));

	/* A small container: 2 GiB of address space. */
	capacity_under_rlimit(2 * (uint64_t)GiB, res);
	printf("RLIMIT_AS=2G -> rc %d cap %" PRIu64 " (%s) create %d (%s)\n", res->rc_default, res->cap,
	       res->msg, res->rc_create, res->create_msg);
	if (res->rc_default != 0)
		T_FAIL("no default capacity under RLIMIT_AS=2G: %d (%s)", res->rc_default, res->msg);
	T_ASSERT(res->cap >= SHM_MIN_CAPACITY);
	T_ASSERT(res->cap <= 2 * (uint64_t)GiB);
	if (res->rc_create != 0)
		T_FAIL("the default capacity %" PRIu64 " under RLIMIT_AS=2G does not work: %d (%s)", res->cap,
		       res->rc_create, res->create_msg);

	/* Below the minimum: the error must say which limit is too low. */
	memset(res, 0, sizeof(*res));
	capacity_under_rlimit(SHM_MIN_CAPACITY - MiB, res);
	printf("RLIMIT_AS=3M -> rc %d (%s)\n", res->rc_default, res->msg);
	if (res->rc_default >= 0)
		T_FAIL("RLIMIT_AS below the minimum gave capacity %" PRIu64, res->cap);
	if (!strstr(res->msg, "RLIMIT_AS"))
		T_FAIL("message does not name RLIMIT_AS: \"%s\"", res->msg);

	/* The whole range between: whatever comes out either works or says
	 * why. Limits are the process's current size plus a margin, so some of
	 * these leave room for a small segment and some do not. */
	static const uint64_t margins[] = {8 * MiB, 32 * MiB, 128 * MiB};
	for (size_t i = 0; i < sizeof(margins) / sizeof(margins[0]); i++) {
		uint64_t vm = 0;
		FILE *f = fopen("/proc/self/status", "r");
		char line[256];
		T_ASSERT(f != NULL);
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "VmSize: %" SCNu64 " kB", &vm) == 1)
				break;
		fclose(f);
		T_ASSERT(vm > 0);
		uint64_t limit = vm * 1024 + margins[i];
		memset(res, 0, sizeof(*res));
		capacity_under_rlimit(limit, res);
		printf("RLIMIT_AS=%" PRIu64 " -> rc %d cap %" PRIu64 " create %d (%s%s)\n", limit,
		       res->rc_default, res->cap, res->rc_create, res->msg, res->create_msg);
		if (res->rc_default == 0) {
			T_ASSERT(res->cap <= limit);
			if (res->rc_create != 0)
				T_FAIL("RLIMIT_AS=%" PRIu64 ": default capacity %" PRIu64
				       " does not work: %d (%s)",
				       limit, res->cap, res->rc_create, res->create_msg);
		} else if (!strstr(res->msg, "RLIMIT_AS")) {
			T_FAIL("RLIMIT_AS=%" PRIu64 ": refused without naming RLIMIT_AS: \"%s\"", limit,
			       res->msg);
		}
	}
	munmap(res, sizeof(*res));
}

/* ---- create / grow ------------------------------------------------------- */

static void test_create_grow(void)
{
	struct shm_seg seg;
	struct shm_err err = {{0}};
	const size_t cap = 16 * MiB;

	/* Capacity out of range or not page-aligned: refused with a message. */
	T_ASSERT(shm_seg_create(&seg, SHM_MIN_CAPACITY - 4096, 0, &err) < 0);
	T_ASSERT(err.msg[0] != 0);
	memset(&err, 0, sizeof(err));
	T_ASSERT(shm_seg_create(&seg, cap, cap + 4096, &err) < 0);
	T_ASSERT(err.msg[0] != 0);

	memset(&err, 0, sizeof(err));
	T_OK(shm_seg_create(&seg, cap, 1 * MiB, &err));
	T_ASSERT(seg.writable);
	T_EQ(seg.capacity, cap);
	T_EQ(shm_seg_published_size(&seg), 1 * MiB);
	T_EQ(seg.size, 1 * MiB);
	struct stat st;
	T_OK(fstat(seg.fd, &st));
	T_EQ(st.st_size, 1 * MiB);

	/* The whole published size is usable through the root's mapping. */
	fill(seg.base + SHM_HDR_SIZE, 1 * MiB - SHM_HDR_SIZE, 1);

	T_OK(shm_seg_grow(&seg, 3 * MiB, &err));
	T_EQ(shm_seg_published_size(&seg), 3 * MiB);
	T_EQ(seg.size, 3 * MiB);
	T_OK(fstat(seg.fd, &st));
	T_EQ(st.st_size, 3 * MiB);
	fill(seg.base + 1 * MiB, 2 * MiB, 2);
	T_ASSERT(check(seg.base + SHM_HDR_SIZE, 1 * MiB - SHM_HDR_SIZE, 1));

	/* Sizes are rounded up to pages; a smaller size is a no-op. */
	T_OK(shm_seg_grow(&seg, 3 * MiB + 1, &err));
	T_EQ(shm_seg_published_size(&seg), 3 * MiB + 4096);
	T_OK(shm_seg_grow(&seg, 2 * MiB, &err));
	T_EQ(shm_seg_published_size(&seg), 3 * MiB + 4096);

	/* Up to the capacity exactly, then no further. */
	T_OK(shm_seg_grow(&seg, cap, &err));
	T_EQ(shm_seg_published_size(&seg), cap);
	memset(&err, 0, sizeof(err));
	T_EQ(shm_seg_grow(&seg, cap + 4096, &err), -ENOSPC);
	T_ASSERT(err.msg[0] != 0);
	printf("grow past capacity: %s\n", err.msg);
	T_EQ(shm_seg_published_size(&seg), cap);
	T_ASSERT(check(seg.base + 1 * MiB, 2 * MiB, 2));
	shm_seg_close(&seg);
}

/* Mappings start on a 2 MiB boundary (where a huge page can map whole),
 * the huge-page count of a mapping is readable, and growth ahead of the
 * allocator backs at most 128 KiB per call (so a batch that arrives during
 * one waits for that much populating at most) until the margin is there,
 * then stops; at the capacity it has nothing left to do. */
static void test_huge_and_grow_ahead(void)
{
	struct shm_root *r;
	struct shm_err err = {{0}};
	struct shm_root_opts o = {.capacity = 64 * MiB};
	T_OK(shm_root_create(&r, &o, &err));
	struct shm_seg *seg = shm_root_seg(r);
	T_EQ((uintptr_t)seg->base % (2 * MiB), 0);
	uint64_t huge = UINT64_MAX;
	int hrc = shm_seg_huge_bytes(seg, &huge);
	T_ASSERT(hrc == 0 || hrc == -ENOENT);
	if (hrc == 0)
		T_ASSERT(huge <= seg->size);
	size_t before = seg->size;
	int calls = 0, grew;
	while ((grew = shm_root_grow_ahead(r)) == 1) {
		T_ASSERT(seg->size > before && seg->size - before <= 128 * 1024);
		before = seg->size;
		T_ASSERT(++calls < 256);
	}
	T_EQ(grew, 0);
	struct shm_stats st;
	shm_root_stats(r, &st);
	/* The margin: at least 8 MiB backed beyond the allocator's extent. */
	T_ASSERT(st.segment_size >= st.pages_top * 4096 + 8 * MiB);
	printf("grow ahead: %d calls, %zu MiB backed\n", calls, seg->size / MiB);
	shm_root_destroy(r);

	/* A reader's mapping is aligned too. */
	T_OK(shm_root_create(&r, &o, &err));
	int fd = shm_seg_reader_fd(shm_root_seg(r), &err);
	T_ASSERT(fd >= 0);
	struct shm_seg rd;
	T_OK(shm_seg_open_reader(&rd, fd, &err));
	T_EQ((uintptr_t)rd.base % (2 * MiB), 0);
	shm_seg_close(&rd);
	close(fd);
	shm_root_destroy(r);
}

/* A failing ftruncate (here: RLIMIT_FSIZE) is -ENOSPC and the published size
 * does not move. Runs in a child: the limit and SIGXFSZ are process-wide. */
static void test_grow_failure(void)
{
	fflush(NULL);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		struct shm_seg seg;
		struct shm_err err = {{0}};
		T_OK(shm_seg_create(&seg, 16 * MiB, 1 * MiB, &err));
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl;
		T_OK(getrlimit(RLIMIT_FSIZE, &rl));
		rl.rlim_cur = 2 * MiB;
		T_OK(setrlimit(RLIMIT_FSIZE, &rl));
		T_OK(shm_seg_grow(&seg, 2 * MiB, &err));
		memset(&err, 0, sizeof(err));
		T_EQ(shm_seg_grow(&seg, 4 * MiB, &err), -ENOSPC);
		T_ASSERT(err.msg[0] != 0);
		printf("grow with ftruncate failing: %s\n", err.msg);
		T_EQ(shm_seg_published_size(&seg), 2 * MiB);
		T_EQ(seg.size, 2 * MiB);
		shm_seg_close(&seg);
		fflush(NULL);
		_exit(0);
	}
	t_wait_ok(pid, "grow failure");
}

/* ---- a reader in another process ----------------------------------------- */

static void xwrite(int fd, char c)
{
	T_EQ(write(fd, &c, 1), 1);
}

static char xread(int fd)
{
	char c = 0;
	T_EQ(read(fd, &c, 1), 1);
	return c;
}

static void test_reader_process(void)
{
	struct shm_seg seg;
	struct shm_err err = {{0}};
	const size_t cap = 64 * MiB;
	const uint64_t off1 = 64 * 1024, off2 = 3 * MiB;
	const size_t len = 8192;

	T_OK(shm_seg_create(&seg, cap, 1 * MiB, &err));
	fill(seg.base + off1, len, 10);
	int rfd = shm_seg_reader_fd(&seg, &err);
	if (rfd < 0)
		T_FAIL("shm_seg_reader_fd: %d (%s)", rfd, err.msg);
	/* The reader's fd is read-only and does not leak into exec'd programs. */
	T_EQ(fcntl(rfd, F_GETFL) & O_ACCMODE, O_RDONLY);
	T_ASSERT(fcntl(rfd, F_GETFD) & FD_CLOEXEC);
	T_ASSERT(fcntl(seg.fd, F_GETFD) & FD_CLOEXEC);
	int seals = fcntl(rfd, F_GET_SEALS);
	T_ASSERT(seals >= 0);
	T_ASSERT(seals & F_SEAL_FUTURE_WRITE);
	T_ASSERT(seals & F_SEAL_SHRINK);

	int p2c[2], c2p[2];
	T_OK(pipe(p2c));
	T_OK(pipe(c2p));
	fflush(NULL);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		/* A worker holds nothing of the root's but the read-only fd. */
		close(seg.fd);
		close(p2c[1]);
		close(c2p[0]);
		struct shm_seg rs;
		struct shm_err rerr = {{0}};
		int rc = shm_seg_open_reader(&rs, rfd, &rerr);
		if (rc < 0)
			T_FAIL("shm_seg_open_reader: %d (%s)", rc, rerr.msg);
		T_ASSERT(!rs.writable);
		T_EQ(rs.capacity, cap);
		T_EQ(shm_seg_published_size(&rs), 1 * MiB);
		const uint8_t *p = shm_seg_ptr(&rs, off1, len, 8);
		T_ASSERT(p != NULL);
		T_ASSERT(check(p, len, 10));
		/* Not yet published: refused, although it is inside the mapping. */
		T_ASSERT(shm_seg_ptr(&rs, off2, len, 8) == NULL);
		xwrite(c2p[1], 'm'); /* mapped */

		T_EQ(xread(p2c[0]), 'w'); /* the root wrote and grew */
		T_EQ(shm_seg_published_size(&rs), 4 * MiB);
		T_ASSERT(check(p, len, 11)); /* same mapping, new bytes: shared */
		const uint8_t *q = shm_seg_ptr(&rs, off2, len, 8);
		T_ASSERT(q != NULL);
		T_ASSERT(check(q, len, 12));
		shm_seg_close(&rs);
		fflush(NULL);
		_exit(0);
	}
	close(p2c[0]);
	close(c2p[1]);
	T_EQ(xread(c2p[0]), 'm');
	fill(seg.base + off1, len, 11);
	T_OK(shm_seg_grow(&seg, 4 * MiB, &err));
	fill(seg.base + off2, len, 12);
	xwrite(p2c[1], 'w');
	t_wait_ok(pid, "reader process");
	close(p2c[1]);
	close(c2p[0]);
	close(rfd);
	shm_seg_close(&seg);
}

/* ---- header validation --------------------------------------------------- */

/* A copy of a good segment's published bytes in a new sealed memfd, with the
 * header field at `field_off` (of `field_len` bytes) xor-ed with `flip`;
 * returns a read-only fd like the one the root hands out. */
static int copy_segment(const struct shm_seg *seg, size_t field_off, size_t field_len, uint8_t flip)
{
	uint64_t size = shm_seg_published_size(seg);
	uint8_t *buf = malloc(size);
	T_ASSERT(buf != NULL);
	memcpy(buf, seg->base, size);
	for (size_t i = 0; i < field_len; i++)
		buf[field_off + i] ^= flip;
	int fd = memfd_create("shmsync-copy", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	T_ASSERT(fd >= 0);
	for (uint64_t done = 0; done < size;) {
		ssize_t n = write(fd, buf + done, size - done);
		T_ASSERT(n > 0);
		done += (uint64_t)n;
	}
	free(buf);
	T_OK(fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK));
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int ro = open(path, O_RDONLY | O_CLOEXEC);
	T_ASSERT(ro >= 0);
	close(fd);
	return ro;
}

static void expect_refused(const struct shm_seg *seg, size_t off, size_t len, const char *word)
{
	int fd = copy_segment(seg, off, len, 0x5a);
	struct shm_seg rs;
	struct shm_err err = {{0}};
	int rc = shm_seg_open_reader(&rs, fd, &err);
	printf("header with a bad %s: %d (%s)\n", word, rc, err.msg);
	if (rc >= 0)
		T_FAIL("a header with a corrupted %s was accepted", word);
	if (!strstr(err.msg, word))
		T_FAIL("refusal of a bad %s does not say so: \"%s\"", word, err.msg);
	T_ASSERT(rs.base == NULL); /* nothing left mapped */
	close(fd);
}

static void test_header_validation(void)
{
	struct shm_seg seg;
	struct shm_err err = {{0}};
	T_OK(shm_seg_create(&seg, 8 * MiB, 256 * 1024, &err));
	fill(seg.base + SHM_HDR_SIZE, 4096, 20);

	/* Control: an unmodified copy opens, so the refusals below are caused
	 * by the corrupted fields alone. */
	int fd = copy_segment(&seg, 0, 0, 0);
	struct shm_seg rs;
	int rc = shm_seg_open_reader(&rs, fd, &err);
	if (rc < 0)
		T_FAIL("an exact copy of a good segment was refused: %d (%s)", rc, err.msg);
	const uint8_t *p = shm_seg_ptr(&rs, SHM_HDR_SIZE, 4096, 8);
	T_ASSERT(p != NULL);
	T_ASSERT(check(p, 4096, 20));
	shm_seg_close(&rs);
	close(fd);

	expect_refused(&seg, offsetof(struct shm_hdr, magic), sizeof(uint64_t), "magic");
	expect_refused(&seg, offsetof(struct shm_hdr, layout_version), sizeof(uint32_t), "version");

	/* A file shorter than a header is refused too. */
	int tiny = memfd_create("shmsync-tiny", MFD_CLOEXEC);
	T_ASSERT(tiny >= 0);
	T_EQ(write(tiny, seg.base, 64), 64);
	memset(&err, 0, sizeof(err));
	T_ASSERT(shm_seg_open_reader(&rs, tiny, &err) < 0);
	T_ASSERT(err.msg[0] != 0);
	close(tiny);

	/* So is a whole segment in a file that could be cut short under the
	 * reader (no F_SEAL_SHRINK). */
	int loose = memfd_create("shmsync-loose", MFD_CLOEXEC);
	T_ASSERT(loose >= 0);
	uint64_t psize = shm_seg_published_size(&seg);
	T_EQ(write(loose, seg.base, psize), (ssize_t)psize);
	memset(&err, 0, sizeof(err));
	T_EQ(shm_seg_open_reader(&rs, loose, &err), -EPROTO);
	printf("unsealed copy: %s\n", err.msg);
	T_ASSERT(strstr(err.msg, "F_SEAL_SHRINK") != NULL);
	close(loose);
	shm_seg_close(&seg);
}

int main(void)
{
	test_parse_size();
	test_capacity_env();
	test_capacity_rlimit();
	test_create_grow();
	test_huge_and_grow_ahead();
	test_grow_failure();
	test_reader_process();
	test_header_validation();
	test_capacity_env_unaligned();
	printf("segment: ok\n");
	return 0;
}
