/* NUMA memory policy of a mapping (mbind / get_mempolicy / move_pages, from
 * libnuma's numaif.h) and the machine's nodes (from sysfs). See numa.h.
 *
 * libnuma's own <numa.h> is not used: with shm/ on the include path our
 * "numa.h" shadows it, and all we needed from it was numa_available(), the
 * get_mempolicy probe that shm_numa_usable makes itself. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <numaif.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "numa.h"

#define NODE_DIR "/sys/devices/system/node"
/* get_mempolicy and mbind count maxnode one past the last bit they use. */
#define MAXNODE ((unsigned long)SHM_NUMA_MAX_NODES + 1)
/* Mode flags get_mempolicy may add to the mode (MPOL_F_STATIC_NODES,
 * MPOL_F_RELATIVE_NODES, MPOL_F_NUMA_BALANCING: bits 13-15). */
#define MODE_FLAGS_MASK 0xe000
#define WORD_BITS (8 * sizeof(unsigned long))
/* move_pages takes arrays; this many pages per call keeps them on the stack. */
#define QUERY_CHUNK 512

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* ---- masks ---------------------------------------------------------------- */

bool shm_numa_mask_has(const struct shm_numa_mask *m, int node)
{
	if (node < 0 || node >= SHM_NUMA_MAX_NODES)
		return false;
	return (m->bits[(unsigned)node / WORD_BITS] >> ((unsigned)node % WORD_BITS)) & 1;
}

void shm_numa_mask_set(struct shm_numa_mask *m, int node)
{
	if (node >= 0 && node < SHM_NUMA_MAX_NODES)
		m->bits[(unsigned)node / WORD_BITS] |= 1ul << ((unsigned)node % WORD_BITS);
}

int shm_numa_mask_count(const struct shm_numa_mask *m)
{
	int n = 0;
	for (size_t i = 0; i < SHM_NUMA_MASK_WORDS; i++)
		n += __builtin_popcountl(m->bits[i]);
	return n;
}

int shm_numa_mask_next(const struct shm_numa_mask *m, int from)
{
	for (int n = from < 0 ? 0 : from; n < SHM_NUMA_MAX_NODES; n++)
		if (shm_numa_mask_has(m, n))
			return n;
	return -1;
}

static void mask_and(struct shm_numa_mask *a, const struct shm_numa_mask *b)
{
	for (size_t i = 0; i < SHM_NUMA_MASK_WORDS; i++)
		a->bits[i] &= b->bits[i];
}

/* Parses a kernel list ("0-3,8") into bits [0, nbits). Trailing whitespace
 * (sysfs ends with a newline) is allowed; a number past nbits is -ERANGE. */
static int parse_list(const char *text, unsigned long *bits, size_t nbits)
{
	memset(bits, 0, (nbits + WORD_BITS - 1) / WORD_BITS * sizeof(unsigned long));
	const char *p = text;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\n' || *p == '\0')
		return 0;
	for (;;) {
		char *end;
		errno = 0;
		unsigned long lo = strtoul(p, &end, 10), hi = lo;
		if (end == p || errno || p[0] == '-' || p[0] == '+')
			return -EINVAL;
		p = end;
		if (*p == '-') {
			p++;
			hi = strtoul(p, &end, 10);
			if (end == p || errno || p[0] == '-' || p[0] == '+' || hi < lo)
				return -EINVAL;
			p = end;
		}
		if (hi >= nbits)
			return -ERANGE;
		for (unsigned long i = lo; i <= hi; i++)
			bits[i / WORD_BITS] |= 1ul << (i % WORD_BITS);
		if (*p == ',') {
			p++;
			continue;
		}
		while (*p == '\n' || *p == ' ' || *p == '\t')
			p++;
		return *p ? -EINVAL : 0;
	}
}

int shm_numa_mask_parse(const char *text, struct shm_numa_mask *m)
{
	return parse_list(text, m->bits, SHM_NUMA_MAX_NODES);
}

int shm_numa_mask_format(const struct shm_numa_mask *m, char *buf, size_t len)
{
	size_t used = 0;
	if (len)
		buf[0] = '\0';
	for (int n = shm_numa_mask_next(m, 0); n >= 0;) {
		int last = n;
		while (shm_numa_mask_has(m, last + 1))
			last++;
		char part[32];
		int k = last == n ? snprintf(part, sizeof(part), "%s%d", used ? "," : "", n)
				  : snprintf(part, sizeof(part), "%s%d-%d", used ? "," : "", n, last);
		if (used + (size_t)k < len)
			memcpy(buf + used, part, (size_t)k + 1);
		else if (len)
			buf[used < len ? used : len - 1] = '\0';
		used += (size_t)k;
		n = shm_numa_mask_next(m, last + 1);
	}
	return used > INT_MAX ? INT_MAX : (int)used;
}

/* ---- what the machine has ------------------------------------------------- */

/* Reads a small sysfs file. -errno if it cannot be read. */
static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, len - 1);
	int e = errno;
	close(fd);
	if (n < 0)
		return -e;
	buf[n] = '\0';
	return 0;
}

/* A node list from NODE_DIR/<name>. -ENOENT where the kernel has no NUMA
 * (no node directory). */
static int read_node_list(const char *name, struct shm_numa_mask *m)
{
	char path[128], buf[4096];
	snprintf(path, sizeof(path), NODE_DIR "/%s", name);
	int rc = read_small(path, buf, sizeof(buf));
	if (rc < 0)
		return rc;
	return shm_numa_mask_parse(buf, m);
}

/* The errors that mean "no NUMA here" rather than "wrong request". */
static bool unavailable_errno(int e)
{
	return e == ENOSYS || e == EPERM;
}

bool shm_numa_usable(char *err, size_t errlen)
{
	/* libnuma's numa_available() probe: get_mempolicy fails with ENOSYS
	 * without NUMA in the kernel, EPERM under a seccomp profile that
	 * forbids it (Docker's default allows the memory-policy calls only
	 * with CAP_SYS_NICE). */
	if (get_mempolicy(NULL, NULL, 0, NULL, 0) < 0 && unavailable_errno(errno)) {
		int e = errno;
		fail(err, errlen, 0, "NUMA is unavailable here (get_mempolicy: %s); memory placement skipped",
		     strerror(e));
		return false;
	}
	return true;
}

int shm_numa_nodes(struct shm_numa_mask *nodes, char *err, size_t errlen)
{
	memset(nodes, 0, sizeof(*nodes));
	int rc = read_node_list("online", nodes);
	if (rc == -ENOENT) {
		/* A kernel without NUMA: everything is node 0. */
		shm_numa_mask_set(nodes, 0);
		return 0;
	}
	if (rc < 0)
		return fail(err, errlen, rc, "reading " NODE_DIR "/online failed: %s", strerror(-rc));
	if (shm_numa_mask_count(nodes) == 0)
		return fail(err, errlen, -EIO, NODE_DIR "/online lists no node");
	return 0;
}

int shm_numa_mem_nodes(struct shm_numa_mask *nodes, char *err, size_t errlen)
{
	int rc = shm_numa_nodes(nodes, err, errlen);
	if (rc < 0)
		return rc;
	struct shm_numa_mask m;
	/* Memoryless nodes (CPUs only) cannot take pages. Older kernels
	 * lack the file: then every online node counts. */
	if (read_node_list("has_memory", &m) == 0)
		mask_and(nodes, &m);
	/* A cpuset may allow fewer nodes than exist; mbind refuses the
	 * others. Where the call is refused, the kernel will say so later. */
	memset(&m, 0, sizeof(m));
	if (get_mempolicy(NULL, m.bits, MAXNODE, NULL, MPOL_F_MEMS_ALLOWED) == 0)
		mask_and(nodes, &m);
	if (shm_numa_mask_count(nodes) == 0)
		return fail(err, errlen, -EIO, "no NUMA node with memory is allowed to this process");
	return 0;
}

/* "node 7 does not exist; nodes: 0-1" */
static int no_such_node(int node, const struct shm_numa_mask *nodes, char *err, size_t errlen)
{
	char list[256];
	shm_numa_mask_format(nodes, list, sizeof(list));
	return fail(err, errlen, -EINVAL, "node %d does not exist; nodes: %s", node, list);
}

int shm_numa_check_node(int node, char *err, size_t errlen)
{
	struct shm_numa_mask nodes;
	int rc = shm_numa_nodes(&nodes, err, errlen);
	if (rc < 0)
		return rc;
	if (!shm_numa_mask_has(&nodes, node))
		return no_such_node(node, &nodes, err, errlen);
	return 0;
}

int shm_numa_node_cpus(int node, cpu_set_t *cpus, char *err, size_t errlen)
{
	int rc = shm_numa_check_node(node, err, errlen);
	if (rc < 0)
		return rc;
	char path[128], buf[8192];
	snprintf(path, sizeof(path), NODE_DIR "/node%d/cpulist", node);
	rc = read_small(path, buf, sizeof(buf));
	if (rc == -ENOENT && node == 0) {
		/* No NUMA in the kernel: node 0 has every CPU. */
		snprintf(path, sizeof(path), "/sys/devices/system/cpu/online");
		rc = read_small(path, buf, sizeof(buf));
	}
	if (rc < 0)
		return fail(err, errlen, rc, "reading %s failed: %s", path, strerror(-rc));
	unsigned long bits[CPU_SETSIZE / WORD_BITS];
	rc = parse_list(buf, bits, CPU_SETSIZE);
	if (rc < 0)
		return fail(err, errlen, rc, "%s: cannot parse \"%.40s\" (or a CPU above %d)", path, buf,
			    CPU_SETSIZE - 1);
	CPU_ZERO(cpus);
	for (size_t c = 0; c < CPU_SETSIZE; c++)
		if ((bits[c / WORD_BITS] >> (c % WORD_BITS)) & 1)
			CPU_SET(c, cpus);
	return 0;
}

int shm_numa_parse_policy(const char *text, int *policy, int *node, char *err, size_t errlen)
{
	static const struct {
		const char *name;
		int policy;
		bool needs_node;
	} names[] = {
		{"default", SHM_NUMA_DEFAULT, false},    {"interleave", SHM_NUMA_INTERLEAVE, false},
		{"none", SHM_NUMA_NONE, false},          {"bind", SHM_NUMA_BIND, true},
		{"preferred", SHM_NUMA_PREFERRED, true},
	};
	const char *colon = text ? strchr(text, ':') : NULL;
	size_t nlen = !text ? 0 : colon ? (size_t)(colon - text) : strlen(text);
	for (size_t i = 0; text && i < sizeof(names) / sizeof(names[0]); i++) {
		if (strlen(names[i].name) != nlen || strncmp(text, names[i].name, nlen) != 0)
			continue;
		if (!names[i].needs_node) {
			if (colon)
				break;
			*policy = names[i].policy;
			*node = -1;
			return 0;
		}
		char *end;
		errno = 0;
		long n = colon ? strtol(colon + 1, &end, 10) : -1;
		if (!colon || end == colon + 1 || *end || errno || n < 0 || n >= SHM_NUMA_MAX_NODES)
			return fail(err, errlen, -EINVAL,
				    "NUMA policy \"%s\": expected %s:NODE, a node number", text,
				    names[i].name);
		*policy = names[i].policy;
		*node = (int)n;
		return 0;
	}
	return fail(err, errlen, -EINVAL,
		    "NUMA policy \"%s\" unknown: use default, interleave, none, bind:NODE or preferred:NODE",
		    text ? text : "(null)");
}

/* ---- applying and reading back -------------------------------------------- */

static size_t page_size(void)
{
	long p = sysconf(_SC_PAGESIZE);
	return p > 0 ? (size_t)p : 4096;
}

int shm_numa_apply(void *addr, size_t len, int policy, int node, char *err, size_t errlen)
{
	if (policy == SHM_NUMA_NONE)
		return 0;
	if (!addr || len == 0 || (uintptr_t)addr % page_size())
		return fail(err, errlen, -EINVAL,
			    "NUMA policy: the range %p+%zu is not a page-aligned mapping", addr, len);

	struct shm_numa_mask mask;
	int mode, rc;
	switch (policy) {
	case SHM_NUMA_DEFAULT:
	case SHM_NUMA_INTERLEAVE:
		mode = MPOL_INTERLEAVE;
		rc = shm_numa_mem_nodes(&mask, err, errlen);
		if (rc < 0)
			return rc;
		break;
	case SHM_NUMA_BIND:
	case SHM_NUMA_PREFERRED:
		mode = policy == SHM_NUMA_BIND ? MPOL_BIND : MPOL_PREFERRED;
		/* Checked before NUMA's availability: a node that does not
		 * exist is the caller's mistake on any machine. */
		rc = shm_numa_check_node(node, err, errlen);
		if (rc < 0)
			return rc;
		rc = shm_numa_mem_nodes(&mask, err, errlen);
		if (rc < 0)
			return rc;
		if (!shm_numa_mask_has(&mask, node)) {
			char list[256];
			shm_numa_mask_format(&mask, list, sizeof(list));
			return fail(err, errlen, -EINVAL,
				    "node %d has no memory or is not allowed to this process (cpuset); nodes "
				    "with memory allowed here: %s",
				    node, list);
		}
		memset(&mask, 0, sizeof(mask));
		shm_numa_mask_set(&mask, node);
		break;
	default:
		return fail(err, errlen, -EINVAL, "NUMA policy %d unknown", policy);
	}
	if (!shm_numa_usable(err, errlen))
		return SHM_NUMA_SKIPPED;
	/* MPOL_MF_MOVE: a page this process already faulted in (and no one
	 * else maps) follows the policy too; without MPOL_MF_STRICT a page
	 * that cannot move is not an error. */
	if (mbind(addr, len, mode, mask.bits, MAXNODE, MPOL_MF_MOVE) < 0) {
		int e = errno;
		if (unavailable_errno(e))
			return fail(err, errlen, SHM_NUMA_SKIPPED,
				    "NUMA is unavailable here (mbind: %s); memory placement skipped",
				    strerror(e));
		char list[256];
		shm_numa_mask_format(&mask, list, sizeof(list));
		return fail(err, errlen, -e, "mbind(%s, nodes %s) of %zu bytes failed: %s",
			    mode == MPOL_INTERLEAVE ? "interleave"
			    : mode == MPOL_BIND     ? "bind"
						    : "preferred",
			    list, len, strerror(e));
	}
	return 0;
}

static const char *mode_name(int mode)
{
	switch (mode) {
	case MPOL_DEFAULT:
		return "default";
	case MPOL_PREFERRED:
		return "preferred";
	case MPOL_BIND:
		return "bind";
	case MPOL_INTERLEAVE:
		return "interleave";
	case MPOL_LOCAL:
		return "local";
	case 5: /* MPOL_PREFERRED_MANY, kernel 5.15; older numaif.h lacks it */
		return "preferred_many";
	default:
		return "unknown";
	}
}

static void count_pages(struct shm_numa_info *info, const int *status, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int s = status[i];
		if (s >= 0 && s < SHM_NUMA_HIST_NODES)
			info->on_node[s]++;
		else if (s >= SHM_NUMA_HIST_NODES)
			info->on_other++;
		else if (s == -ENOENT || s == -EFAULT)
			/* Not populated, or only the zero page. */
			info->absent++;
		else
			info->failed++;
	}
	info->pages += n;
}

int shm_numa_query(const void *addr, size_t len, bool pages, struct shm_numa_info *info, char *err,
		   size_t errlen)
{
	memset(info, 0, sizeof(*info));
	info->mode_name = "unavailable";
	if (!shm_numa_usable(err, errlen))
		return SHM_NUMA_SKIPPED;
	int mode = 0;
	if (get_mempolicy(&mode, info->nodes.bits, MAXNODE, (void *)(uintptr_t)addr, MPOL_F_ADDR) < 0) {
		int e = errno;
		if (unavailable_errno(e))
			return fail(err, errlen, SHM_NUMA_SKIPPED,
				    "NUMA is unavailable here (get_mempolicy: %s)", strerror(e));
		return fail(err, errlen, -e, "get_mempolicy at %p failed: %s", addr, strerror(e));
	}
	info->mode = mode & ~MODE_FLAGS_MASK;
	info->mode_name = mode_name(info->mode);
	if (!pages)
		return 0;

	size_t ps = page_size();
	uintptr_t start = (uintptr_t)addr / ps * ps;
	size_t total = ((uintptr_t)addr + len - start + ps - 1) / ps;
	void *chunk[QUERY_CHUNK];
	int status[QUERY_CHUNK];
	for (size_t done = 0; done < total;) {
		size_t n = total - done < QUERY_CHUNK ? total - done : QUERY_CHUNK;
		for (size_t i = 0; i < n; i++)
			chunk[i] = (void *)(start + (done + i) * ps);
		/* No target nodes: move_pages only reports where each page is. */
		if (move_pages(0, (unsigned long)n, chunk, NULL, status, 0) < 0) {
			int e = errno;
			if (unavailable_errno(e))
				return fail(err, errlen, SHM_NUMA_SKIPPED,
					    "NUMA is unavailable here (move_pages: %s)", strerror(e));
			return fail(err, errlen, -e, "move_pages (query) failed: %s", strerror(e));
		}
		count_pages(info, status, n);
		done += n;
	}
	return 0;
}

int shm_numa_json(const void *addr, char *buf, size_t len)
{
	struct shm_numa_info info;
	char list[256];
	if (shm_numa_query(addr, 1, false, &info, NULL, 0) != 0)
		return snprintf(buf, len, "{\"policy\":\"unavailable\"}");
	shm_numa_mask_format(&info.nodes, list, sizeof(list));
	return snprintf(buf, len, "{\"policy\":\"%s\",\"nodes\":\"%s\"}", info.mode_name, list);
}

int shm_numa_pid_node(pid_t pid)
{
	cpu_set_t aff;
	if (sched_getaffinity(pid, sizeof(aff), &aff) < 0)
		return -errno;
	struct shm_numa_mask nodes;
	if (shm_numa_nodes(&nodes, NULL, 0) < 0)
		return -ENOENT;
	int found = -1;
	for (int n = shm_numa_mask_next(&nodes, 0); n >= 0; n = shm_numa_mask_next(&nodes, n + 1)) {
		cpu_set_t cpus, both;
		if (shm_numa_node_cpus(n, &cpus, NULL, 0) < 0)
			continue;
		CPU_AND(&both, &cpus, &aff);
		if (CPU_COUNT(&both) == 0)
			continue;
		if (found >= 0)
			return -ENOENT; /* spans nodes: not placed */
		found = n;
	}
	return found >= 0 ? found : -ENOENT;
}
