/* NUMA memory policy of a mapping, and what the machine's nodes are.
 *
 * The root segment is interleaved across the nodes by default (every worker
 * reads all of it, so no node should hold it all), bound to one node by
 * option, or left to the kernel. A worker's port goes on that worker's node
 * (only the worker and the root touch it). A policy must be applied to a
 * mapping before its pages are populated: the kernel places a page when it is
 * first allocated and mbind here moves only pages no other process maps.
 *
 * For a memfd (shmem) mapping the policy is the file's shared policy, keyed
 * by file offset: every process that maps the file sees it with
 * shm_numa_query, and pages are allocated by it whoever faults them in.
 *
 * The nodes come from sysfs, never from libnuma's node sizes: those are
 * wrong where the kernel initialises memory lazily (deferred struct pages),
 * so nothing here sizes anything from them.
 *
 * The name shadows libnuma's <numa.h> wherever shm/ is on the include path:
 * code here uses <numaif.h> (the system calls) and sysfs, never <numa.h>.
 *
 * No global state: where NUMA is unavailable (a kernel without it, or a
 * seccomp profile that forbids the memory-policy calls) the functions that
 * would place memory return SHM_NUMA_SKIPPED with a notice in err, and the
 * caller, who has a context, prints it once.
 */
#ifndef SHMSYNC_SHM_NUMA_H
#define SHMSYNC_SHM_NUMA_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Policies for shm_numa_apply. The values are those of the root option
 * numa_policy (zero means the default). */
enum {
	SHM_NUMA_DEFAULT = 0,    /* SHM_NUMA_INTERLEAVE */
	SHM_NUMA_INTERLEAVE = 1, /* across every node this process may use */
	SHM_NUMA_BIND = 2,       /* on `node` only; allocation fails when it is full */
	SHM_NUMA_NONE = 3,       /* leave the kernel's default (first touch) */
	SHM_NUMA_PREFERRED = 4,  /* on `node` while it has memory, else elsewhere */
};

/* shm_numa_apply and place_worker_on_node return this (> 0) when they did
 * nothing because NUMA is unavailable; err holds the notice. */
#define SHM_NUMA_SKIPPED 1

/* Node masks in the kernel's format (unsigned long words, bit n = node n).
 * 1024 is the kernel's MAX_NUMNODES on x86-64 (NODES_SHIFT 10). */
#define SHM_NUMA_MAX_NODES 1024
#define SHM_NUMA_MASK_WORDS (SHM_NUMA_MAX_NODES / (8 * sizeof(unsigned long)))

struct shm_numa_mask {
	unsigned long bits[SHM_NUMA_MASK_WORDS];
};

bool shm_numa_mask_has(const struct shm_numa_mask *m, int node);
void shm_numa_mask_set(struct shm_numa_mask *m, int node);
int shm_numa_mask_count(const struct shm_numa_mask *m);
/* The lowest node at or after `from` in m, or -1. */
int shm_numa_mask_next(const struct shm_numa_mask *m, int from);
/* Parses a kernel list ("0", "0-1,4", "" for none) into m. -EINVAL on
 * anything else. */
int shm_numa_mask_parse(const char *text, struct shm_numa_mask *m);
/* Writes m as a kernel list ("0-1,4"; "" when empty). Returns the length it
 * needed, like snprintf. */
int shm_numa_mask_format(const struct shm_numa_mask *m, char *buf, size_t len);

/* Whether this machine does NUMA at all: the kernel has the memory-policy
 * calls and this process may use them. false: err says why. */
bool shm_numa_usable(char *err, size_t errlen);

/* The nodes that exist (online). On a kernel without NUMA: node 0 alone. */
int shm_numa_nodes(struct shm_numa_mask *nodes, char *err, size_t errlen);
/* The nodes memory may be placed on here: online, with memory, and allowed
 * by this process's cpuset. */
int shm_numa_mem_nodes(struct shm_numa_mask *nodes, char *err, size_t errlen);
/* The CPUs of one node. -EINVAL (message naming the nodes) if it does not
 * exist. */
int shm_numa_node_cpus(int node, cpu_set_t *cpus, char *err, size_t errlen);
/* 0 if `node` exists, else -EINVAL with "node 7 does not exist; nodes: 0-1". */
int shm_numa_check_node(int node, char *err, size_t errlen);

/* Parses a policy option: "default", "interleave", "none", "bind:N",
 * "preferred:N". -EINVAL with a message on anything else (a node is checked
 * only when applied). */
int shm_numa_parse_policy(const char *text, int *policy, int *node, char *err, size_t errlen);

/* Sets the memory policy of [addr, addr + len) (addr page aligned; len is
 * rounded up to pages) to `policy`; `node` matters for BIND and PREFERRED.
 * Call it on a fresh mapping, before its pages are populated. Returns 0,
 * SHM_NUMA_SKIPPED (NUMA unavailable: nothing done, err holds the notice),
 * or a negative errno with err saying what failed: -EINVAL for a node that
 * does not exist or may not be used, or a policy out of range. */
int shm_numa_apply(void *addr, size_t len, int policy, int node, char *err, size_t errlen);

/* What get_mempolicy and move_pages report for a mapping. */
#define SHM_NUMA_HIST_NODES 64

struct shm_numa_info {
	int mode;                   /* MPOL_* with the mode flags masked off */
	const char *mode_name;      /* "default", "interleave", "bind", "preferred", "local", ... */
	struct shm_numa_mask nodes; /* the policy's nodes (empty for default) */
	/* Filled when pages were asked for. */
	size_t pages;                        /* pages examined */
	size_t on_node[SHM_NUMA_HIST_NODES]; /* pages on each node */
	size_t on_other;                     /* on a node >= SHM_NUMA_HIST_NODES */
	size_t absent;                       /* not populated in this process's mapping */
	size_t failed;                       /* move_pages reported another error */
};

/* Reads back the policy at addr (get_mempolicy with MPOL_F_ADDR) and, with
 * `pages`, which node holds each page of [addr, addr + len) (move_pages with
 * no target; a page counts as absent unless it is mapped in this process).
 * For tests and stat: the histogram costs a system call per 512 pages.
 * Returns 0, SHM_NUMA_SKIPPED or a negative errno. */
int shm_numa_query(const void *addr, size_t len, bool pages, struct shm_numa_info *info, char *err,
		   size_t errlen);

/* The policy at addr as JSON, for stat's `numa` key:
 * {"policy":"interleave","nodes":"0-1"}, or {"policy":"unavailable"}.
 * Returns the length it needed, like snprintf. */
int shm_numa_json(const void *addr, char *buf, size_t len);

/* The node of a process: the one node all CPUs of its affinity mask belong
 * to (what place_worker_on_node sets up). -ENOENT when its CPUs span nodes
 * (not placed), -ESRCH when it does not exist. The root calls it with a
 * worker's pid at attach, to put the worker's port on that node. */
int shm_numa_pid_node(pid_t pid);

#endif
