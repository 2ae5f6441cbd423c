/* NUMA memory policy (shm/numa.c) and worker placement (workers/placement.c)
 * on the machine at hand, usually one node. What this test proves:
 *
 * - Node lists parse and print in the kernel's format ("0-1,4"), and junk is
 *   refused; policy options parse ("bind:1") and junk is refused.
 * - The node list read from sysfs contains node 0 and every node has CPUs
 *   listed the kernel's way.
 * - A node that does not exist is refused with -EINVAL and a message naming
 *   the nodes there are ("node 7 does not exist; nodes: 0"), for bind and
 *   preferred, on any machine.
 * - On a fresh memfd mapping, each policy is applied and read back with
 *   get_mempolicy: default and interleave give MPOL_INTERLEAVE over the nodes
 *   with memory, bind:N MPOL_BIND {N}, preferred:N MPOL_PREFERRED {N}, none
 *   leaves MPOL_DEFAULT. After populating, move_pages finds every page on a
 *   node of the policy. Another process that maps the file read-only (a
 *   worker) reads the same policy back, and shm_numa_json says it.
 * - Workers 0..3 placed round-robin each get their node's CPUs as affinity
 *   and MPOL_BIND to that node; the parent reads each child's node back with
 *   shm_numa_pid_node; an unplaced process spanning nodes has none (only
 *   checkable with two nodes).
 * - Where the memory-policy calls are forbidden (a seccomp filter makes them
 *   EPERM, as Docker's default profile does without CAP_SYS_NICE), applying
 *   and placing are skipped (SHM_NUMA_SKIPPED) with one notice saying why,
 *   nothing changes, and a node that does not exist is still refused.
 *
 * Exit 77 only where mbind itself is unavailable (no NUMA in the kernel, or a
 * seccomp profile that forbids it): the checks that need no NUMA run first.
 */
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <numaif.h>
#include <sched.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../workers/placement.h"
#include "numa.h"
#include "testutil.h"

#define PAGES 64

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static void check_lists(void)
{
	static const char *good[][2] = {
		{"0", "0"}, {"0-1\n", "0-1"}, {"0-1,4", "0-1,4"},       {"3,1,2", "1-3"},
		{"", ""},   {"\n", ""},       {"0,2,4-6,7", "0,2,4-7"}, {"1023", "1023"},
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct shm_numa_mask m;
		char buf[64];
		T_EQ(shm_numa_mask_parse(good[i][0], &m), 0);
		int n = shm_numa_mask_format(&m, buf, sizeof(buf));
		if (strcmp(buf, good[i][1]) != 0 || (size_t)n != strlen(good[i][1]))
			T_FAIL("list \"%s\" printed as \"%s\" (%d), expected \"%s\"", good[i][0], buf, n,
			       good[i][1]);
	}
	static const char *bad[] = {"x", "1-", "-1", "2-1", "1,,2", "1 2", "0-1x", "+1", "1024", "1-99999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct shm_numa_mask m;
		if (shm_numa_mask_parse(bad[i], &m) == 0)
			T_FAIL("list \"%s\" accepted", bad[i]);
	}
	/* Truncation: snprintf's contract, the length it needed. */
	struct shm_numa_mask m;
	char small[4];
	T_EQ(shm_numa_mask_parse("0-1,4,6", &m), 0);
	T_EQ(shm_numa_mask_format(&m, small, sizeof(small)), 7);
	T_ASSERT(strlen(small) < sizeof(small));
	T_EQ(shm_numa_mask_count(&m), 4);
}

static void check_policy_parse(void)
{
	static const struct {
		const char *text;
		int policy, node;
	} good[] = {
		{"default", SHM_NUMA_DEFAULT, -1}, {"interleave", SHM_NUMA_INTERLEAVE, -1},
		{"none", SHM_NUMA_NONE, -1},       {"bind:1", SHM_NUMA_BIND, 1},
		{"bind:7", SHM_NUMA_BIND, 7},      {"preferred:0", SHM_NUMA_PREFERRED, 0},
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		int p = -9, n = -9;
		char err[256] = "";
		if (shm_numa_parse_policy(good[i].text, &p, &n, err, sizeof(err)) != 0 ||
		    p != good[i].policy || n != good[i].node)
			T_FAIL("policy \"%s\": got %d/%d (%s)", good[i].text, p, n, err);
	}
	static const char *bad[] = {"",        "bind",   "bind:",  "bind:x", "bind:-1",
				    "bind:1x", "none:1", "spread", "Bind:1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int p, n;
		char err[256] = "";
		T_EQ(shm_numa_parse_policy(bad[i], &p, &n, err, sizeof(err)), -EINVAL);
		if (!strstr(err, "NUMA policy"))
			T_FAIL("policy \"%s\" refused without a clear message: \"%s\"", bad[i], err);
	}
}

/* A fresh memfd mapping, as the root makes its segment and ports. */
static void *map_memfd(size_t len, int *fdp)
{
	int fd = memfd_create("test-numa", MFD_CLOEXEC);
	T_ASSERT(fd >= 0);
	T_ASSERT(ftruncate(fd, (off_t)len) == 0);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	T_ASSERT(p != MAP_FAILED);
	*fdp = fd;
	return p;
}

/* Applies, populates and reads back one policy; returns the info. */
static void apply_and_check(int policy, int node, int want_mode, const struct shm_numa_mask *want_nodes,
			    const char *what)
{
	size_t len = PAGES * page_size();
	int fd;
	char err[256] = "";
	void *p = map_memfd(len, &fd);
	int rc = shm_numa_apply(p, len, policy, node, err, sizeof(err));
	if (rc != 0)
		T_FAIL("%s: shm_numa_apply returned %d: %s", what, rc, err);
	T_ASSERT(madvise(p, len, MADV_POPULATE_WRITE) == 0);

	struct shm_numa_info info;
	rc = shm_numa_query(p, len, true, &info, err, sizeof(err));
	if (rc != 0)
		T_FAIL("%s: shm_numa_query returned %d: %s", what, rc, err);
	char got[256], want[256];
	shm_numa_mask_format(&info.nodes, got, sizeof(got));
	shm_numa_mask_format(want_nodes, want, sizeof(want));
	if (info.mode != want_mode || strcmp(got, want) != 0)
		T_FAIL("%s: read back mode %d (%s) nodes \"%s\", expected mode %d nodes \"%s\"", what,
		       info.mode, info.mode_name, got, want_mode, want);
	T_EQ(info.pages, PAGES);
	T_EQ(info.absent + info.failed + info.on_other, 0);
	for (int n = 0; n < SHM_NUMA_HIST_NODES; n++)
		if (info.on_node[n] && want_mode != MPOL_DEFAULT && !shm_numa_mask_has(want_nodes, n))
			T_FAIL("%s: %zu pages on node %d, outside the policy's nodes %s", what,
			       info.on_node[n], n, want);

	/* A worker maps the file read-only and reads the same policy: the
	 * policy belongs to the file, not to the root's mapping. */
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		void *q = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
		struct shm_numa_info wi;
		if (q == MAP_FAILED || shm_numa_query(q, len, false, &wi, err, sizeof(err)) != 0)
			_exit(2);
		char json[256];
		shm_numa_json(q, json, sizeof(json));
		char expect[300];
		snprintf(expect, sizeof(expect), "{\"policy\":\"%s\",\"nodes\":\"%s\"}", info.mode_name,
			 want);
		if (strcmp(json, expect) != 0) {
			fprintf(stderr, "%s: worker's json %s, expected %s\n", what, json, expect);
			_exit(3);
		}
		_exit(wi.mode == want_mode ? 0 : 4);
	}
	int st;
	T_ASSERT(waitpid(pid, &st, 0) == pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		T_FAIL("%s: a read-only mapping in another process did not read the policy back (status %d)",
		       what, st);
	munmap(p, len);
	close(fd);
	printf("ok: %s: %s over %s, %d pages placed\n", what, info.mode_name, got, PAGES);
}

static void check_bad_nodes(const struct shm_numa_mask *nodes)
{
	char list[256];
	shm_numa_mask_format(nodes, list, sizeof(list));
	int missing = shm_numa_mask_has(nodes, 7) ? -1 : 7;
	for (int n = 0; missing < 0 && n < SHM_NUMA_MAX_NODES; n++)
		if (!shm_numa_mask_has(nodes, n))
			missing = n;
	size_t len = page_size();
	int fd;
	void *p = map_memfd(len, &fd);
	int policies[] = {SHM_NUMA_BIND, SHM_NUMA_PREFERRED};
	for (size_t i = 0; i < 2; i++) {
		char err[256] = "", want[300];
		T_EQ(shm_numa_apply(p, len, policies[i], missing, err, sizeof(err)), -EINVAL);
		snprintf(want, sizeof(want), "node %d does not exist; nodes: %s", missing, list);
		if (strcmp(err, want) != 0)
			T_FAIL("bad node: message \"%s\", expected \"%s\"", err, want);
		T_EQ(shm_numa_apply(p, len, policies[i], -1, err, sizeof(err)), -EINVAL);
	}
	char err[256];
	T_EQ(shm_numa_apply(p, len, 99, 0, err, sizeof(err)), -EINVAL);
	T_EQ(shm_numa_apply((char *)p + 1, len, SHM_NUMA_INTERLEAVE, 0, err, sizeof(err)), -EINVAL);
	cpu_set_t cpus;
	T_EQ(shm_numa_node_cpus(missing, &cpus, err, sizeof(err)), -EINVAL);
	T_ASSERT(strstr(err, "does not exist; nodes: ") != NULL);
	munmap(p, len);
	close(fd);
	printf("ok: node %d refused: \"node %d does not exist; nodes: %s\"\n", missing, missing, list);
}

/* Worker i placed in a child; the parent reads the node back from its
 * affinity while it waits. */
static void check_placement(unsigned index)
{
	char err[256] = "";
	int want;
	T_OK(place_worker_node_for(index, &want, err, sizeof(err)));
	cpu_set_t before, node_cpus;
	T_ASSERT(sched_getaffinity(0, sizeof(before), &before) == 0);
	T_OK(shm_numa_node_cpus(want, &node_cpus, err, sizeof(err)));
	int go[2], done[2];
	T_ASSERT(pipe(go) == 0 && pipe(done) == 0);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		int node = -2, code = 0;
		int rc = place_worker_on_node(index, PLACE_MEM_BIND, &node, err, sizeof(err));
		if (rc != 0 || node != want) {
			fprintf(stderr, "worker %u: placement returned %d node %d, expected node %d: %s\n",
				index, rc, node, want, err);
			code = 2;
		}
		cpu_set_t aff, expect;
		CPU_AND(&expect, &before, &node_cpus);
		if (!code && (sched_getaffinity(0, sizeof(aff), &aff) != 0 || !CPU_EQUAL(&aff, &expect))) {
			fprintf(stderr, "worker %u: affinity is not node %d's CPUs\n", index, want);
			code = 3;
		}
		int mode = -1;
		struct shm_numa_mask m;
		memset(&m, 0, sizeof(m));
		if (!code &&
		    (get_mempolicy(&mode, m.bits, SHM_NUMA_MAX_NODES + 1, NULL, 0) != 0 ||
		     mode != MPOL_BIND || shm_numa_mask_count(&m) != 1 || !shm_numa_mask_has(&m, want))) {
			fprintf(stderr, "worker %u: memory policy %d, not bind to node %d\n", index, mode,
				want);
			code = 4;
		}
		int cpu = sched_getcpu();
		if (!code && (cpu < 0 || !CPU_ISSET((size_t)cpu, &node_cpus))) {
			fprintf(stderr, "worker %u: running on CPU %d, not on node %d\n", index, cpu, want);
			code = 5;
		}
		char c = (char)code;
		if (write(done[1], &c, 1) != 1 || read(go[0], &c, 1) < 0)
			code = 6;
		_exit(code);
	}
	char c;
	T_EQ(read(done[0], &c, 1), 1);
	int seen = shm_numa_pid_node(pid);
	T_EQ(write(go[1], "x", 1), 1);
	int st;
	T_ASSERT(waitpid(pid, &st, 0) == pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		T_FAIL("worker %u: placement check failed (status %d)", index, st);
	if (seen != want)
		T_FAIL("worker %u: shm_numa_pid_node read node %d, placed on %d", index, seen, want);
	close(go[0]);
	close(go[1]);
	close(done[0]);
	close(done[1]);
	printf("ok: worker %u placed on node %d\n", index, want);
}

#if defined(__x86_64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* In a child: the memory-policy calls fail with EPERM, as under a container's
 * seccomp profile. Applying and placing must be skipped with a notice. */
static void check_forbidden(void)
{
#ifdef TEST_AUDIT_ARCH
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TEST_AUDIT_ARCH, 1, 0),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mbind, 4, 0),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_get_mempolicy, 3, 0),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_set_mempolicy, 2, 0),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_move_pages, 1, 0),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		};
		struct sock_fprog prog = {.len = (unsigned short)(sizeof(f) / sizeof(f[0])), .filter = f};
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0)
			_exit(77);
		char err[256] = "";
		size_t len = page_size();
		int fd;
		void *p = map_memfd(len, &fd);
		T_ASSERT(!shm_numa_usable(err, sizeof(err)));
		T_EQ(shm_numa_apply(p, len, SHM_NUMA_DEFAULT, -1, err, sizeof(err)), SHM_NUMA_SKIPPED);
		if (!strstr(err, "NUMA is unavailable here") || !strstr(err, "skipped"))
			T_FAIL("forbidden: notice \"%s\"", err);
		T_EQ(shm_numa_apply(p, len, SHM_NUMA_BIND, 0, err, sizeof(err)), SHM_NUMA_SKIPPED);
		T_EQ(shm_numa_apply(p, len, SHM_NUMA_BIND, 4000, err, sizeof(err)), -EINVAL);
		T_ASSERT(strstr(err, "node 4000 does not exist; nodes: ") != NULL);
		struct shm_numa_info info;
		T_EQ(shm_numa_query(p, len, true, &info, err, sizeof(err)), SHM_NUMA_SKIPPED);
		char json[64];
		shm_numa_json(p, json, sizeof(json));
		T_ASSERT(strcmp(json, "{\"policy\":\"unavailable\"}") == 0);
		cpu_set_t before, after;
		T_ASSERT(sched_getaffinity(0, sizeof(before), &before) == 0);
		int node = 5;
		T_EQ(place_worker_on_node(1, PLACE_MEM_BIND, &node, err, sizeof(err)), SHM_NUMA_SKIPPED);
		T_EQ(node, -1);
		T_ASSERT(strstr(err, "NUMA is unavailable here") != NULL);
		T_ASSERT(sched_getaffinity(0, sizeof(after), &after) == 0 && CPU_EQUAL(&before, &after));
		printf("ok: forbidden memory-policy calls: skipped with \"%s\"\n", err);
		fflush(stdout);
		_exit(0);
	}
	int st;
	T_ASSERT(waitpid(pid, &st, 0) == pid);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
		printf("skip: no seccomp filter could be installed; the forbidden case is not checked\n");
	else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		T_FAIL("forbidden memory-policy calls: the child failed (status %d)", st);
#endif
}

int main(void)
{
	/* Line by line: children fork with nothing pending to print twice. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	check_lists();
	check_policy_parse();

	char err[256] = "";
	struct shm_numa_mask nodes, mem;
	T_OK(shm_numa_nodes(&nodes, err, sizeof(err)));
	T_ASSERT(shm_numa_mask_has(&nodes, 0));
	check_bad_nodes(&nodes);
	check_forbidden();

	/* Skip only where mbind itself cannot run: probe on a real mapping. */
	{
		size_t len = page_size();
		int fd;
		void *p = map_memfd(len, &fd);
		int rc = shm_numa_apply(p, len, SHM_NUMA_INTERLEAVE, -1, err, sizeof(err));
		munmap(p, len);
		close(fd);
		if (rc == SHM_NUMA_SKIPPED) {
			printf("skip: %s\n", err);
			return T_SKIP;
		}
		if (rc != 0)
			T_FAIL("interleave: %s", err);
	}

	T_OK(shm_numa_mem_nodes(&mem, err, sizeof(err)));
	int first = shm_numa_mask_next(&mem, 0);
	struct shm_numa_mask one, none;
	memset(&one, 0, sizeof(one));
	memset(&none, 0, sizeof(none));
	shm_numa_mask_set(&one, first);

	apply_and_check(SHM_NUMA_DEFAULT, -1, MPOL_INTERLEAVE, &mem, "default");
	apply_and_check(SHM_NUMA_INTERLEAVE, -1, MPOL_INTERLEAVE, &mem, "interleave");
	apply_and_check(SHM_NUMA_BIND, first, MPOL_BIND, &one, "bind");
	apply_and_check(SHM_NUMA_PREFERRED, first, MPOL_PREFERRED, &one, "preferred");
	apply_and_check(SHM_NUMA_NONE, -1, MPOL_DEFAULT, &none, "none");

	for (unsigned i = 0; i < 4; i++)
		check_placement(i);
	/* On one node every worker shares node 0. */
	if (shm_numa_mask_count(&nodes) == 1)
		for (unsigned i = 0; i < 4; i++) {
			int n;
			T_OK(place_worker_node_for(i, &n, err, sizeof(err)));
			T_EQ(n, 0);
		}
	/* This process is unplaced: with two nodes its CPUs span them. */
	int self = shm_numa_pid_node(getpid());
	if (shm_numa_mask_count(&nodes) > 1)
		T_EQ(self, -ENOENT);
	else
		T_EQ(self, first);
	printf("test_numa: all checks passed\n");
	return 0;
}
