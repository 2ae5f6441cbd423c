/* Process placement of workers on NUMA nodes, for the supervisor.
 *
 * Worker i runs on node nodes[i % n], where nodes are the nodes that have
 * CPUs and memory this process may use, in ascending order: its CPU
 * affinity becomes that node's CPUs and its memory policy that node. Call it
 * in the freshly forked worker, before it attaches and before it allocates
 * much: memory already faulted in stays where it is. The root reads the
 * placement back from the worker's affinity (shm_numa_pid_node) and puts the
 * worker's port on the same node.
 *
 * Internal to the library (not exported): no shmsync_ prefix.
 */
#ifndef SHMSYNC_WORKERS_PLACEMENT_H
#define SHMSYNC_WORKERS_PLACEMENT_H

#include <stddef.h>

/* How the worker's own memory is tied to its node. */
enum {
	PLACE_MEM_BIND = 0,      /* MPOL_BIND: only that node; an allocation fails (OOM) when it is full */
	PLACE_MEM_PREFERRED = 1, /* MPOL_PREFERRED: that node while it has memory, else another */
};

/* The node worker `index` goes to, without changing anything: for the
 * supervisor's own bookkeeping and messages. Returns 0, or a negative errno
 * with err saying why (no node has both CPUs and memory allowed here). */
int place_worker_node_for(unsigned index, int *node, char *err, size_t errlen);

/* Binds the calling process to the node of worker `index` (round-robin):
 * sched_setaffinity to that node's CPUs (those of them in its current
 * affinity) and set_mempolicy(mem_mode) to that node. Returns 0 with *node
 * set; SHM_NUMA_SKIPPED (numa.h) with *node = -1 and a notice in err where
 * NUMA is unavailable (print it once, run unplaced); or a negative errno
 * with err saying what failed. */
int place_worker_on_node(unsigned index, int mem_mode, int *node, char *err, size_t errlen);

#endif
