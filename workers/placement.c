/* Round-robin placement of worker processes on NUMA nodes. See placement.h. */
#include <errno.h>
#include <numaif.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "numa.h"
#include "placement.h"

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

/* Nodes a worker can be placed on: memory it may use (shm_numa_mem_nodes)
 * and CPUs in this process's current affinity. A memoryless node or one
 * without CPUs cannot host a worker whole, so it takes no turn. */
static int placement_nodes(struct shm_numa_mask *out, char *err, size_t errlen)
{
	struct shm_numa_mask mem;
	int rc = shm_numa_mem_nodes(&mem, err, errlen);
	if (rc < 0)
		return rc;
	cpu_set_t aff;
	if (sched_getaffinity(0, sizeof(aff), &aff) < 0)
		return fail(err, errlen, -errno, "sched_getaffinity failed: %s", strerror(errno));
	memset(out, 0, sizeof(*out));
	for (int n = shm_numa_mask_next(&mem, 0); n >= 0; n = shm_numa_mask_next(&mem, n + 1)) {
		cpu_set_t cpus, both;
		if (shm_numa_node_cpus(n, &cpus, NULL, 0) < 0)
			continue;
		CPU_AND(&both, &cpus, &aff);
		if (CPU_COUNT(&both) > 0)
			shm_numa_mask_set(out, n);
	}
	if (shm_numa_mask_count(out) == 0) {
		char list[256];
		shm_numa_mask_format(&mem, list, sizeof(list));
		return fail(
			err, errlen, -EIO,
			"no NUMA node has both memory and CPUs this process may use (nodes with memory: %s)",
			list);
	}
	return 0;
}

static int nth_node(const struct shm_numa_mask *nodes, unsigned index)
{
	unsigned k = index % (unsigned)shm_numa_mask_count(nodes);
	int n = shm_numa_mask_next(nodes, 0);
	while (k--)
		n = shm_numa_mask_next(nodes, n + 1);
	return n;
}

int place_worker_node_for(unsigned index, int *node, char *err, size_t errlen)
{
	struct shm_numa_mask nodes;
	int rc = placement_nodes(&nodes, err, errlen);
	if (rc < 0)
		return rc;
	*node = nth_node(&nodes, index);
	return 0;
}

int place_worker_on_node(unsigned index, int mem_mode, int *node, char *err, size_t errlen)
{
	*node = -1;
	if (mem_mode != PLACE_MEM_BIND && mem_mode != PLACE_MEM_PREFERRED)
		return fail(err, errlen, -EINVAL, "worker placement: memory mode %d unknown", mem_mode);
	if (!shm_numa_usable(err, errlen))
		return SHM_NUMA_SKIPPED;
	int n, rc = place_worker_node_for(index, &n, err, errlen);
	if (rc < 0)
		return rc;

	cpu_set_t cpus, aff, both;
	rc = shm_numa_node_cpus(n, &cpus, err, errlen);
	if (rc < 0)
		return rc;
	if (sched_getaffinity(0, sizeof(aff), &aff) < 0)
		return fail(err, errlen, -errno, "sched_getaffinity failed: %s", strerror(errno));
	CPU_AND(&both, &cpus, &aff);

	/* Memory first: what the worker allocates from here on, including
	 * while it migrates to the new CPUs, lands on its node. */
	struct shm_numa_mask mask;
	memset(&mask, 0, sizeof(mask));
	shm_numa_mask_set(&mask, n);
	int mode = mem_mode == PLACE_MEM_BIND ? MPOL_BIND : MPOL_PREFERRED;
	if (set_mempolicy(mode, mask.bits, (unsigned long)SHM_NUMA_MAX_NODES + 1) < 0) {
		int e = errno;
		if (e == ENOSYS || e == EPERM)
			return fail(err, errlen, SHM_NUMA_SKIPPED,
				    "NUMA is unavailable here (set_mempolicy: %s); worker placement skipped",
				    strerror(e));
		return fail(err, errlen, -e, "worker %u: set_mempolicy(%s, node %d) failed: %s", index,
			    mem_mode == PLACE_MEM_BIND ? "bind" : "preferred", n, strerror(e));
	}
	if (sched_setaffinity(0, sizeof(both), &both) < 0) {
		int e = errno;
		/* Leave the process as it was: half a placement would put its
		 * memory on one node and its threads anywhere. */
		set_mempolicy(MPOL_DEFAULT, NULL, 0);
		return fail(err, errlen, -e, "worker %u: binding to the CPUs of node %d failed: %s", index, n,
			    strerror(e));
	}
	*node = n;
	return 0;
}
