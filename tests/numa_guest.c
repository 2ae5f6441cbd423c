/* In-guest NUMA checks, run by scripts/numa_guest.sh inside a QEMU guest
 * with two nodes (node 0 = CPU 0, node 1 = CPU 1). Not a host test: on a
 * one-node machine most checks cannot hold. Prints one line per check,
 * "CHECK <name>: PASS|FAIL|TODO <detail>", and a final line
 * "numa_guest: <n> passed, <m> failed"; exits 0 only if none failed.
 *
 * What it proves, page by page with move_pages (no target: it reports the
 * node of each page):
 * - nodes: the machine has nodes 0-1, each with memory and its one CPU.
 * - segment-interleave: a root-like segment (memfd, capacity reserved,
 *   default policy applied before growth, then ftruncate + populate) has its
 *   pages split across both nodes, and a reader in another process reads the
 *   policy back as {"policy":"interleave","nodes":"0-1"}.
 * - root-segment: the same for the real shm_seg_create, once the root
 *   applies the policy there (TODO, not a failure, until it does).
 * - first-touch-control: without a policy, pages faulted from CPU 0 land on
 *   node 0, so the checks below do not pass by accident.
 * - port-bind-1 / port-preferred-1: a port-like mapping with bind:1 (parsed
 *   from the option text) or preferred:1, populated from CPU 0, lands wholly
 *   on node 1.
 * - port-on-worker-node-<i>: what the root does at attach: read the worker's
 *   node from its affinity (shm_numa_pid_node), bind the port there, populate
 *   it from the root's CPU: every page on the worker's node.
 * - placement-<i>: worker i is placed on node i % 2: affinity is that node's
 *   CPU, it runs there, its memory policy is bind to it, and the pages it
 *   touches are there.
 * - bind7-refused: bind:7 is -EINVAL with "node 7 does not exist; nodes: 0-1".
 * - unplaced: a process whose CPUs span both nodes has no node.
 */
#include <errno.h>
#include <fcntl.h>
#include <numaif.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../workers/placement.h"
#include "numa.h"
#include "shm.h"

#define SEG_CAPACITY ((size_t)64 << 20)
#define SEG_SIZE ((size_t)4 << 20)
#define PORT_SIZE ((size_t)1 << 20)

struct tally {
	int passed, failed;
};

static void report(struct tally *t, const char *name, int verdict, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* verdict: 1 PASS, 0 FAIL, -1 TODO (known missing, not counted). */
static void report(struct tally *t, const char *name, int verdict, const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	printf("CHECK %s: %s %s\n", name, verdict > 0 ? "PASS" : verdict == 0 ? "FAIL" : "TODO", detail);
	fflush(stdout);
	if (verdict > 0)
		t->passed++;
	else if (verdict == 0)
		t->failed++;
}

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static int pin_to_cpu(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET((size_t)cpu, &s);
	return sched_setaffinity(0, sizeof(s), &s);
}

/* "n0=512 n1=512 absent=0 failed=0" */
static void hist(const struct shm_numa_info *i, char *buf, size_t len)
{
	snprintf(buf, len, "n0=%zu n1=%zu other=%zu absent=%zu failed=%zu of %zu pages", i->on_node[0],
		 i->on_node[1], i->on_other, i->absent, i->failed, i->pages);
}

/* Creates a memfd mapping, applies a policy, populates it from here. */
static void *mapped_with(size_t reserve, size_t size, int policy, int node, int *fdp, char *err,
			 size_t errlen, int *rc)
{
	int fd = memfd_create("numa-guest", MFD_CLOEXEC);
	if (fd < 0) {
		*rc = -errno;
		snprintf(err, errlen, "memfd_create: %s", strerror(errno));
		return NULL;
	}
	void *p = mmap(NULL, reserve, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (p == MAP_FAILED) {
		*rc = -errno;
		snprintf(err, errlen, "mmap: %s", strerror(errno));
		close(fd);
		return NULL;
	}
	/* The order the root uses: policy on the whole reservation first,
	 * then the file grows and its pages are populated. */
	*rc = shm_numa_apply(p, reserve, policy, node, err, errlen);
	if (*rc == 0 && (ftruncate(fd, (off_t)size) < 0 || madvise(p, size, MADV_POPULATE_WRITE) < 0)) {
		*rc = -errno;
		snprintf(err, errlen, "grow/populate: %s", strerror(errno));
	}
	if (*rc != 0) {
		munmap(p, reserve);
		close(fd);
		return NULL;
	}
	*fdp = fd;
	return p;
}

static void check_nodes(struct tally *t)
{
	char err[256] = "", a[64], b[64];
	struct shm_numa_mask nodes, mem;
	cpu_set_t c0, c1;
	int rc = shm_numa_nodes(&nodes, err, sizeof(err));
	if (rc == 0)
		rc = shm_numa_mem_nodes(&mem, err, sizeof(err));
	if (rc == 0)
		rc = shm_numa_node_cpus(0, &c0, err, sizeof(err));
	if (rc == 0)
		rc = shm_numa_node_cpus(1, &c1, err, sizeof(err));
	if (rc != 0) {
		report(t, "nodes", 0, "%s", err);
		return;
	}
	shm_numa_mask_format(&nodes, a, sizeof(a));
	shm_numa_mask_format(&mem, b, sizeof(b));
	bool ok = !strcmp(a, "0-1") && !strcmp(b, "0-1") && CPU_COUNT(&c0) == 1 && CPU_ISSET(0, &c0) &&
		  CPU_COUNT(&c1) == 1 && CPU_ISSET(1, &c1);
	report(t, "nodes", ok, "nodes %s, with memory %s, node0 cpus %d, node1 cpus %d", a, b, CPU_COUNT(&c0),
	       CPU_COUNT(&c1));
}

/* Pages split across both nodes: each holds at least 40%, none missing. */
static bool split(const struct shm_numa_info *i)
{
	return i->absent == 0 && i->failed == 0 && i->on_other == 0 && i->on_node[0] * 10 >= i->pages * 4 &&
	       i->on_node[1] * 10 >= i->pages * 4 && i->on_node[0] + i->on_node[1] == i->pages;
}

static void check_segment_interleave(struct tally *t)
{
	char err[256] = "", h[160];
	int fd, rc;
	pin_to_cpu(0); /* so first touch alone would put everything on node 0 */
	void *p = mapped_with(SEG_CAPACITY, SEG_SIZE, SHM_NUMA_DEFAULT, -1, &fd, err, sizeof(err), &rc);
	if (!p) {
		report(t, "segment-interleave", 0, "rc %d: %s", rc, err);
		return;
	}
	struct shm_numa_info info;
	rc = shm_numa_query(p, SEG_SIZE, true, &info, err, sizeof(err));
	hist(&info, h, sizeof(h));
	char nodes[64];
	shm_numa_mask_format(&info.nodes, nodes, sizeof(nodes));
	bool ok = rc == 0 && info.mode == MPOL_INTERLEAVE && !strcmp(nodes, "0-1") && split(&info);
	report(t, "segment-interleave", ok, "policy %s over %s; %s", info.mode_name, nodes, h);

	/* A worker reads the policy back through its read-only mapping. */
	int pipefd[2];
	char json[256] = "";
	if (pipe(pipefd) == 0) {
		pid_t pid = fork();
		if (pid == 0) {
			void *q = mmap(NULL, SEG_SIZE, PROT_READ, MAP_SHARED, fd, 0);
			char buf[256] = "mmap failed";
			if (q != MAP_FAILED)
				shm_numa_json(q, buf, sizeof(buf));
			ssize_t w = write(pipefd[1], buf, strlen(buf));
			_exit(w > 0 ? 0 : 1);
		}
		close(pipefd[1]);
		ssize_t n = read(pipefd[0], json, sizeof(json) - 1);
		json[n > 0 ? n : 0] = '\0';
		close(pipefd[0]);
		waitpid(pid, NULL, 0);
	}
	report(t, "segment-policy-from-reader",
	       !strcmp(json, "{\"policy\":\"interleave\",\"nodes\":\"0-1\"}"), "reader's stat json: %s",
	       json);
	munmap(p, SEG_CAPACITY);
	close(fd);
}

/* The real segment code: once shm_seg_create applies the default policy this
 * becomes a hard check. */
static void check_root_segment(struct tally *t)
{
	struct shm_seg seg;
	struct shm_err serr;
	char err[256] = "", h[160];
	pin_to_cpu(0);
	int rc = shm_seg_create(&seg, SEG_CAPACITY, SEG_SIZE, &serr);
	if (rc < 0) {
		report(t, "root-segment", 0, "shm_seg_create: %s", serr.msg);
		return;
	}
	struct shm_numa_info info;
	rc = shm_numa_query(seg.base, seg.size, true, &info, err, sizeof(err));
	hist(&info, h, sizeof(h));
	if (rc == 0 && info.mode == MPOL_DEFAULT)
		report(t, "root-segment", -1,
		       "shm_seg_create applies no NUMA policy yet (wiring pending); %s", h);
	else
		report(t, "root-segment", rc == 0 && info.mode == MPOL_INTERLEAVE && split(&info),
		       "policy %s; %s", info.mode_name, h);
	shm_seg_close(&seg);
}

static void check_port(struct tally *t, const char *name, const char *option, int want_mode)
{
	char err[256] = "", h[160];
	int policy, node, fd, rc;
	pin_to_cpu(0);
	rc = shm_numa_parse_policy(option, &policy, &node, err, sizeof(err));
	void *p =
		rc == 0 ? mapped_with(PORT_SIZE, PORT_SIZE, policy, node, &fd, err, sizeof(err), &rc) : NULL;
	if (!p) {
		report(t, name, 0, "%s: rc %d: %s", option, rc, err);
		return;
	}
	struct shm_numa_info info;
	rc = shm_numa_query(p, PORT_SIZE, true, &info, err, sizeof(err));
	hist(&info, h, sizeof(h));
	bool ok = rc == 0 && info.mode == want_mode && shm_numa_mask_count(&info.nodes) == 1 &&
		  shm_numa_mask_has(&info.nodes, 1) && info.on_node[1] == info.pages && info.pages > 0;
	report(t, name, ok, "%s, populated from CPU %d: policy %s; %s", option, sched_getcpu(),
	       info.mode_name, h);
	munmap(p, PORT_SIZE);
	close(fd);
}

static void check_first_touch_control(struct tally *t)
{
	char err[256] = "", h[160];
	int fd, rc;
	pin_to_cpu(0);
	void *p = mapped_with(PORT_SIZE, PORT_SIZE, SHM_NUMA_NONE, -1, &fd, err, sizeof(err), &rc);
	if (!p) {
		report(t, "first-touch-control", 0, "rc %d: %s", rc, err);
		return;
	}
	struct shm_numa_info info;
	rc = shm_numa_query(p, PORT_SIZE, true, &info, err, sizeof(err));
	hist(&info, h, sizeof(h));
	report(t, "first-touch-control", rc == 0 && info.on_node[0] == info.pages && info.pages > 0,
	       "no policy, populated from CPU 0: %s", h);
	munmap(p, PORT_SIZE);
	close(fd);
}

/* Worker i in a child: placed, then checks itself and reports on a pipe; the
 * parent, as the root would at attach, reads its node and puts a port there. */
static void check_worker(struct tally *t, unsigned i)
{
	int want = (int)(i % 2);
	int up[2], go[2];
	char name[64], err[256] = "";
	if (pipe(up) < 0 || pipe(go) < 0) {
		report(t, "placement", 0, "pipe: %s", strerror(errno));
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		char msg[400];
		int node = -1, ok = 1;
		int rc = place_worker_on_node(i, PLACE_MEM_BIND, &node, err, sizeof(err));
		/* Let the scheduler move us onto the new CPU. */
		sched_yield();
		cpu_set_t aff;
		sched_getaffinity(0, sizeof(aff), &aff);
		int cpu = sched_getcpu();
		int mode = -1;
		struct shm_numa_mask m;
		memset(&m, 0, sizeof(m));
		get_mempolicy(&mode, m.bits, SHM_NUMA_MAX_NODES + 1, NULL, 0);
		/* Pages the worker touches from now on. */
		size_t len = 64 * page_size();
		char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		struct shm_numa_info info;
		memset(&info, 0, sizeof(info));
		if (mem != MAP_FAILED) {
			memset(mem, 1, len);
			shm_numa_query(mem, len, true, &info, err, sizeof(err));
		}
		ok = rc == 0 && node == want && CPU_COUNT(&aff) == 1 && CPU_ISSET((size_t)want, &aff) &&
		     cpu == want && mode == MPOL_BIND && shm_numa_mask_count(&m) == 1 &&
		     shm_numa_mask_has(&m, want) && info.pages == 64 && info.on_node[want] == 64;
		snprintf(msg, sizeof(msg),
			 "%d placed rc %d node %d, affinity %d CPU(s) incl. %d: %s, runs on CPU %d, "
			 "mempolicy %d "
			 "over node %d, its pages: %zu of %zu on node %d %s",
			 ok, rc, node, CPU_COUNT(&aff), want, CPU_ISSET((size_t)want, &aff) ? "yes" : "no",
			 cpu, mode, shm_numa_mask_next(&m, 0), info.on_node[want], info.pages, want,
			 rc ? err : "");
		ssize_t w = write(up[1], msg, strlen(msg) + 1);
		char c;
		w = read(go[0], &c, 1);
		_exit(w == 1 ? 0 : 1);
	}
	close(up[1]);
	close(go[0]);
	char msg[400] = "0 no report";
	ssize_t n = read(up[0], msg, sizeof(msg) - 1);
	msg[n > 0 ? n : 0] = '\0';
	snprintf(name, sizeof(name), "placement-%u", i);
	report(t, name, msg[0] == '1', "worker %u -> node %d: %s", i, want, msg + 2);

	/* The root's side of attach: the worker's node from its affinity,
	 * then its port bound there and populated by the root (on CPU 0). */
	pin_to_cpu(0);
	int seen = shm_numa_pid_node(pid);
	char h[160] = "";
	int fd, rc = -1;
	bool ok = false;
	void *p = seen >= 0
			  ? mapped_with(PORT_SIZE, PORT_SIZE, SHM_NUMA_BIND, seen, &fd, err, sizeof(err), &rc)
			  : NULL;
	if (p) {
		struct shm_numa_info info;
		rc = shm_numa_query(p, PORT_SIZE, true, &info, err, sizeof(err));
		hist(&info, h, sizeof(h));
		ok = rc == 0 && seen == want && info.pages > 0 && info.on_node[want] == info.pages;
		munmap(p, PORT_SIZE);
		close(fd);
	}
	snprintf(name, sizeof(name), "port-on-worker-node-%u", i);
	report(t, name, ok,
	       "root read node %d for worker %u (placed on %d); port populated from CPU 0: %s %s", seen, i,
	       want, h, p ? "" : err);
	if (write(go[1], "x", 1) != 1)
		perror("write");
	waitpid(pid, NULL, 0);
	close(up[0]);
	close(go[1]);
}

static void check_bind7(struct tally *t)
{
	char err[256] = "";
	int policy, node, rc;
	rc = shm_numa_parse_policy("bind:7", &policy, &node, err, sizeof(err));
	size_t len = page_size();
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (rc == 0 && p != MAP_FAILED)
		rc = shm_numa_apply(p, len, policy, node, err, sizeof(err));
	report(t, "bind7-refused", rc == -EINVAL && !strcmp(err, "node 7 does not exist; nodes: 0-1"),
	       "rc %d: \"%s\"", rc, err);
	if (p != MAP_FAILED)
		munmap(p, len);
}

int main(void)
{
	struct tally t = {0, 0};
	setvbuf(stdout, NULL, _IOLBF, 0);
	cpu_set_t all;
	sched_getaffinity(0, sizeof(all), &all);

	check_nodes(&t);
	int self = shm_numa_pid_node(getpid());
	report(&t, "unplaced", self == -ENOENT, "a process on CPUs 0-1 has node %d (expected %d)", self,
	       -ENOENT);
	check_bind7(&t);
	check_first_touch_control(&t);
	check_segment_interleave(&t);
	check_root_segment(&t);
	check_port(&t, "port-bind-1", "bind:1", MPOL_BIND);
	check_port(&t, "port-preferred-1", "preferred:1", MPOL_PREFERRED);
	sched_setaffinity(0, sizeof(all), &all);
	for (unsigned i = 0; i < 4; i++) {
		sched_setaffinity(0, sizeof(all), &all);
		check_worker(&t, i);
	}
	printf("numa_guest: %d passed, %d failed\n", t.passed, t.failed);
	return t.failed ? 1 : 0;
}
