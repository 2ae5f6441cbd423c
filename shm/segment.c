/* The root segment: a memfd, address space reserved up to the capacity,
 * backed and populated on demand, sealed before any fd leaves the root. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout.h"
#include "numa.h"
#include "shm.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

static int fail(struct shm_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct shm_err *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}

static size_t sys_page(void)
{
	long p = sysconf(_SC_PAGESIZE);
	return p > 0 ? (size_t)p : 4096;
}

/*
 * Huge pages. At 1M keys a segment spans hundreds of MB, so most gets of
 * uniform keys miss the TLB as well as the cache. Where the system lets
 * shared memory use transparent huge pages only on request
 * (/sys/kernel/mm/transparent_hugepage/shmem_enabled is "advise"), the
 * root's and every reader's mapping asks with MADV_HUGEPAGE ("always" needs
 * no request; "never", the kernel's default, refuses it: the madvise then
 * changes nothing). A 2 MiB page can be mapped whole only at a 2 MiB
 * aligned address, so mappings are placed at one.
 */
#define HUGE_ALIGN ((size_t)2 << 20)

static void *map_segment(size_t len, int prot, int fd)
{
	/* Reserve len + HUGE_ALIGN, put the file at the aligned address inside,
	 * give back the slack on both sides. */
	uint8_t *res =
		mmap(NULL, len + HUGE_ALIGN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return mmap(NULL, len, prot, MAP_SHARED | MAP_NORESERVE, fd, 0);
	uint8_t *at = (uint8_t *)(((uintptr_t)res + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
	void *p = mmap(at, len, prot, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd, 0);
	if (p == MAP_FAILED) {
		int e = errno;
		munmap(res, len + HUGE_ALIGN);
		errno = e;
		return MAP_FAILED;
	}
	if (at > res)
		munmap(res, (size_t)(at - res));
	size_t tail = (size_t)(res + len + HUGE_ALIGN - (at + len));
	if (tail)
		munmap(at + len, tail);
	madvise(p, len, MADV_HUGEPAGE);
	return p;
}

int shm_seg_huge_bytes(const struct shm_seg *seg, uint64_t *bytes)
{
	/* The kernel says how much of a mapping is mapped by huge pages only in
	 * smaps, per mapping: find ours by its start address. */
	FILE *f = fopen("/proc/self/smaps", "re");
	if (!f)
		return -errno;
	char line[512];
	bool ours = false;
	int rc = -ENOENT;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char dash;
		if (sscanf(line, "%lx%c%lx", &lo, &dash, &hi) == 3 && dash == '-') {
			ours = lo == (uintptr_t)seg->base;
			continue;
		}
		unsigned long long kb;
		if (ours && sscanf(line, "ShmemPmdMapped: %llu kB", &kb) == 1) {
			*bytes = (uint64_t)kb * 1024;
			rc = 0;
			break;
		}
	}
	fclose(f);
	return rc;
}

int shm_parse_size(const char *text, size_t *out)
{
	if (!text || !isdigit((unsigned char)text[0]))
		return -EINVAL;
	uint64_t v = 0;
	const char *p = text;
	while (isdigit((unsigned char)*p)) {
		uint64_t d = (uint64_t)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
		p++;
	}
	unsigned shift = 0;
	switch (*p) {
	case '\0':
		break;
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	case 't':
	case 'T':
		shift = 40;
		break;
	default:
		return -EINVAL;
	}
	if (*p) {
		p++;
		/* Accept "KiB"/"KB" forms too: people write them. */
		if ((p[0] == 'i' || p[0] == 'I') && (p[1] == 'b' || p[1] == 'B'))
			p += 2;
		else if (p[0] == 'b' || p[0] == 'B')
			p++;
		if (*p)
			return -EINVAL;
	}
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	v <<= shift;
	if (v > SIZE_MAX)
		return -ERANGE;
	*out = (size_t)v;
	return 0;
}

static void human(char *buf, size_t n, uint64_t bytes)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	unsigned u = 0;
	double v = (double)bytes;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(buf, n, "%.1f %s", v, units[u]);
}

/* A cgroup limit file's value, or 0 when unlimited or unreadable. */
static uint64_t read_limit_file(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	char line[64] = {0};
	uint64_t v = 0;
	if (fgets(line, sizeof(line), f) && isdigit((unsigned char)line[0])) {
		v = strtoull(line, NULL, 10);
		/* v1 reports "unlimited" as a huge page-rounded number. */
		if (v >= ((uint64_t)1 << 60))
			v = 0;
	}
	fclose(f);
	return v;
}

/* The memory cgroup limit of this process (v2 memory.max or v1
 * memory.limit_in_bytes), 0 when there is none. Names the file in `src`. */
static uint64_t cgroup_memory_limit(char *src, size_t srclen)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	char line[512], path[768];
	uint64_t best = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		/* hierarchy-ID:controllers:path */
		char *c1 = strchr(line, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = 0;
		const char *controllers = c1 + 1, *cg = c2 + 1;
		uint64_t v = 0;
		if (strcmp(line, "0") == 0 && *controllers == 0) {
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", cg);
			v = read_limit_file(path);
		} else if (strstr(controllers, "memory")) {
			snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", cg);
			v = read_limit_file(path);
			if (!v) {
				snprintf(path, sizeof(path), "/sys/fs/cgroup/memory/memory.limit_in_bytes");
				v = read_limit_file(path);
			}
		}
		if (v && (!best || v < best)) {
			best = v;
			snprintf(src, srclen, "%s", path);
		}
	}
	fclose(f);
	return best;
}

int shm_capacity_default(size_t *capacity, struct shm_err *err)
{
	const char *env = getenv("SHMSYNC_CAPACITY");
	char a[32], b[32];
	if (env && *env) {
		size_t v;
		int rc = shm_parse_size(env, &v);
		if (rc < 0)
			return fail(err, -EINVAL,
				    "SHMSYNC_CAPACITY=\"%.40s\" is not a size: write bytes with an optional "
				    "K, M, G or T suffix, e.g. SHMSYNC_CAPACITY=256M",
				    env);
		/* The mapping is made of whole pages. */
		v &= ~(size_t)(sys_page() - 1);
		if (v < SHM_MIN_CAPACITY || v > SHM_MAX_CAPACITY) {
			human(a, sizeof(a), SHM_MIN_CAPACITY);
			human(b, sizeof(b), SHM_MAX_CAPACITY);
			return fail(err, -EINVAL, "SHMSYNC_CAPACITY=%.40s is outside [%s, %s]", env, a, b);
		}
		*capacity = v;
		return 0;
	}

	/* Reserved address space counts against RLIMIT_AS, populated pages
	 * against the cgroup (the kernel kills past it, it does not fail the
	 * populate), and physical memory bounds both. Leave room for the rest of
	 * the process in each. */
	uint64_t cap = (uint64_t)64 << 30;
	const char *why = "the built-in maximum (64 GiB)";
	char cgsrc[768] = "";
	struct rlimit rl;
	if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 4 < cap) {
		cap = rl.rlim_cur / 4;
		why = "RLIMIT_AS / 4";
	}
	uint64_t cg = cgroup_memory_limit(cgsrc, sizeof(cgsrc));
	if (cg && cg / 4 * 3 < cap) {
		cap = cg / 4 * 3;
		why = "3/4 of the memory cgroup limit";
	}
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	if (pages > 0 && psz > 0 && (uint64_t)pages * (uint64_t)psz / 2 < cap) {
		cap = (uint64_t)pages * (uint64_t)psz / 2;
		why = "half of physical memory";
	}
	cap &= ~(uint64_t)(SHM_ARENA_PAGE - 1);
	if (cap < SHM_MIN_CAPACITY) {
		human(a, sizeof(a), cap);
		human(b, sizeof(b), SHM_MIN_CAPACITY);
		char as[32] = "unlimited", cgs[32] = "none";
		if (rl.rlim_cur != RLIM_INFINITY)
			human(as, sizeof(as), rl.rlim_cur);
		if (cg)
			human(cgs, sizeof(cgs), cg);
		return fail(
			err, -ENOMEM,
			"default capacity %s (from %s; RLIMIT_AS %s, memory cgroup limit %s) is below the "
			"minimum %s: raise the limit (ulimit -v) or set SHMSYNC_CAPACITY",
			a, why, as, cgs, b);
	}
	*capacity = (size_t)cap;
	return 0;
}

int shm_seg_create(struct shm_seg *seg, size_t capacity, size_t initial, struct shm_err *err)
{
	return shm_seg_create_numa(seg, capacity, initial, SHM_NUMA_DEFAULT, 0, err);
}

int shm_seg_create_numa(struct shm_seg *seg, size_t capacity, size_t initial, int numa_policy, int numa_node,
			struct shm_err *err)
{
	char a[32];
	size_t page = sys_page();
	memset(seg, 0, sizeof(*seg));
	seg->fd = -1;
	if (capacity < SHM_MIN_CAPACITY || capacity > SHM_MAX_CAPACITY || capacity % page)
		return fail(err, -EINVAL, "capacity %zu must be a multiple of %zu in [%zu, %zu]", capacity,
			    page, (size_t)SHM_MIN_CAPACITY, (size_t)SHM_MAX_CAPACITY);
	if (initial < SHM_HDR_SIZE)
		initial = SHM_HDR_SIZE;
	initial = (initial + page - 1) / page * page;
	if (initial > capacity)
		return fail(err, -EINVAL, "initial size %zu exceeds the capacity %zu", initial, capacity);

	int fd = memfd_create("shmsync-root", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return fail(err, -errno, "memfd_create failed: %s", strerror(errno));
	void *base = map_segment(capacity, PROT_READ | PROT_WRITE, fd);
	if (base == MAP_FAILED) {
		int e = errno;
		struct rlimit rl;
		getrlimit(RLIMIT_AS, &rl);
		human(a, sizeof(a), capacity);
		close(fd);
		if (rl.rlim_cur != RLIM_INFINITY)
			return fail(
				err, -e,
				"reserving %s of address space failed (%s) under RLIMIT_AS=%llu bytes; set "
				"SHMSYNC_CAPACITY (or the capacity option) lower, or raise ulimit -v",
				a, strerror(e), (unsigned long long)rl.rlim_cur);
		return fail(
			err, -e,
			"reserving %s of address space failed (%s); set SHMSYNC_CAPACITY (or the capacity "
			"option) lower",
			a, strerror(e));
	}
	/* A forked child must not inherit the writable mapping. */
	madvise(base, capacity, MADV_DONTFORK);
	/* The policy belongs to the file's pages: applied before the first is
	 * populated, and read back through any mapping (a worker's stat). */
	char nmsg[sizeof(seg->numa_notice)] = "";
	int nrc = shm_numa_apply(base, capacity, numa_policy, numa_node, nmsg, sizeof(nmsg));
	if (nrc < 0) {
		munmap(base, capacity);
		close(fd);
		return fail(err, nrc, "%s", nmsg);
	}
	seg->fd = fd;
	seg->base = base;
	seg->capacity = capacity;
	seg->limit = capacity;
	seg->writable = true;
	if (nrc == SHM_NUMA_SKIPPED)
		snprintf(seg->numa_notice, sizeof(seg->numa_notice), "%s", nmsg);
	seg->hdr = base;
	int rc = shm_seg_grow(seg, initial, err);
	if (rc < 0) {
		shm_seg_close(seg);
		return rc;
	}
	struct shm_hdr *h = seg->hdr;
	uint64_t seed = 0;
	if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
		int e = errno;
		shm_seg_close(seg);
		return fail(err, -e, "getrandom for the hash seed failed: %s", strerror(e));
	}
	h->magic = SHM_MAGIC;
	h->layout_version = SHM_LAYOUT_VERSION;
	h->hdr_size = SHM_HDR_SIZE;
	h->capacity = capacity;
	h->page_size = (uint32_t)page;
	h->hash_seed = seed;
	return 0;
}

int shm_seg_grow(struct shm_seg *seg, size_t new_size, struct shm_err *err)
{
	char a[32], b[32];
	size_t page = sys_page();
	if (!seg->writable)
		return fail(err, -EPERM, "the segment is read-only here");
	new_size = (new_size + page - 1) / page * page;
	if (new_size <= seg->size)
		return 0;
	if (new_size > seg->capacity) {
		human(a, sizeof(a), new_size);
		human(b, sizeof(b), seg->capacity);
		return fail(err, -ENOSPC, "segment full: %s needed, capacity %s; set SHMSYNC_CAPACITY higher",
			    a, b);
	}
	/* Once sealed (shm_seg_reader_fd), the file is as long as the
	 * capacity already: growing is populating. */
	for (int tries = 0;; tries++) {
		struct stat st;
		if (fstat(seg->fd, &st) == 0 && (uint64_t)st.st_size >= new_size)
			break;
		if (ftruncate(seg->fd, (off_t)new_size) == 0)
			break;
		if (errno == EPERM && tries < 3)
			continue;
		int e = errno;
		human(a, sizeof(a), new_size);
		return fail(err, -ENOSPC, "growing the segment to %s failed: ftruncate: %s", a, strerror(e));
	}
	/* Populate now, so a lack of memory is an error here rather than a
	 * SIGBUS in the middle of a commit. */
	if (madvise(seg->base + seg->size, new_size - seg->size, MADV_POPULATE_WRITE) < 0) {
		int e = errno;
		human(a, sizeof(a), new_size);
		/* Give the pages back where the seals allow it (before any
		 * reader fd exists); either way the size stays unpublished. */
		if (ftruncate(seg->fd, (off_t)seg->size) < 0) {
			/* Sealed against shrinking: the pages stay, unused. */
		}
		return fail(err, -ENOSPC,
			    "growing the segment to %s failed: populate: %s (memory or cgroup limit); lower "
			    "SHMSYNC_CAPACITY or free memory",
			    a, strerror(e));
	}
	seg->size = new_size;
	atomic_store_explicit(&seg->hdr->size, new_size, memory_order_release);
	return 0;
}

int shm_seg_reader_fd(struct shm_seg *seg, struct shm_err *err)
{
	if (!seg->writable)
		return fail(err, -EPERM, "only the root can hand out reader fds");
	/* After F_SEAL_FUTURE_WRITE no new writable mapping or write() is
	 * possible through any fd, even one reopened O_RDWR via /proc, while
	 * the root's own mapping stays writable. That reopened fd could still
	 * ftruncate or fallocate the file far past the capacity, and
	 * F_SEAL_SHRINK would then keep the root from giving the memory back:
	 * so the file is first made as long as the capacity (sparse: holes
	 * cost nothing) and sealed against growth. The root then grows by
	 * populating pages inside the file, and no fd can make the segment's
	 * memory exceed its capacity. F_SEAL_SEAL keeps anyone from changing
	 * the seals. Sealed once, for every reader fd after. */
	const int seals = F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	int have = fcntl(seg->fd, F_GET_SEALS);
	if (have < 0)
		return fail(err, -errno, "reading the segment's seals failed: %s", strerror(errno));
	if ((have & seals) != seals) {
		if (ftruncate(seg->fd, (off_t)seg->capacity) < 0)
			return fail(err, -errno, "sizing the segment to its capacity failed: %s",
				    strerror(errno));
		if (fcntl(seg->fd, F_ADD_SEALS, seals) < 0)
			return fail(err, -errno, "sealing the segment failed: %s", strerror(errno));
	}
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", seg->fd);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, -errno, "reopening the segment read-only via %s failed: %s", path,
			    strerror(errno));
	return fd;
}

int shm_seg_open_reader(struct shm_seg *seg, int fd, struct shm_err *err)
{
	memset(seg, 0, sizeof(*seg));
	seg->fd = -1;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return fail(err, -errno, "fstat of the segment fd failed: %s", strerror(errno));
	if ((uint64_t)st.st_size < SHM_HDR_SIZE)
		return fail(err, -EPROTO, "not a shmsync segment: %lld bytes, smaller than the header",
			    (long long)st.st_size);
	/* A file that could shrink under the mapping would turn a read of a
	 * checked offset into SIGBUS; every root's reader fd is sealed. */
	int seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || !(seals & F_SEAL_SHRINK))
		return fail(err, -EPROTO,
			    "the segment fd is not sealed against shrinking (F_SEAL_SHRINK): not from a "
			    "shmsync root");
	struct shm_hdr h;
	ssize_t n = pread(fd, &h, sizeof(h), 0);
	if (n != (ssize_t)sizeof(h))
		return fail(err, -EPROTO, "reading the segment header failed");
	if (h.magic != SHM_MAGIC)
		return fail(err, -EPROTO, "not a shmsync segment: bad magic 0x%016" PRIx64, h.magic);
	if (h.layout_version != SHM_LAYOUT_VERSION)
		return fail(err, -EPROTO,
			    "segment layout version %u, this library reads version %u: rebuild against the "
			    "root's version",
			    h.layout_version, SHM_LAYOUT_VERSION);
	if (h.hdr_size != SHM_HDR_SIZE || h.capacity < SHM_MIN_CAPACITY || h.capacity > SHM_MAX_CAPACITY ||
	    h.capacity % sys_page())
		return fail(err, -EPROTO, "corrupt segment header (header size %u, capacity %" PRIu64 ")",
			    h.hdr_size, h.capacity);
	void *base = map_segment(h.capacity, PROT_READ, fd);
	if (base == MAP_FAILED)
		return fail(err, -errno, "mapping the segment read-only (%" PRIu64 " bytes) failed: %s",
			    h.capacity, strerror(errno));
	seg->base = base;
	seg->capacity = h.capacity;
	seg->limit = (uint64_t)st.st_size < h.capacity ? (size_t)st.st_size : h.capacity;
	seg->hdr = base;
	seg->size = atomic_load_explicit(&seg->hdr->size, memory_order_acquire);
	return 0;
}

void shm_seg_close(struct shm_seg *seg)
{
	if (seg->base)
		munmap(seg->base, seg->capacity);
	if (seg->fd >= 0)
		close(seg->fd);
	seg->base = NULL;
	seg->hdr = NULL;
	seg->fd = -1;
}

uint64_t shm_seg_published_size(const struct shm_seg *seg)
{
	return atomic_load_explicit(&seg->hdr->size, memory_order_acquire);
}

const void *shm_seg_ptr(const struct shm_seg *seg, uint64_t off, uint64_t len, uint64_t align)
{
	uint64_t size = atomic_load_explicit(&seg->hdr->size, memory_order_acquire);
	if (size > seg->limit)
		size = seg->limit; /* a header's word is no reason to read past the mapping */
	if (off < SHM_HDR_SIZE || off > size || len > size - off)
		return NULL;
	if (align > 1 && (off & (align - 1)))
		return NULL;
	return seg->base + off;
}
