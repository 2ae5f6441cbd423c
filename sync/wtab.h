/* The worker table, in the root segment (shm_root_ext): what the root last
 * published about each slot, for stat, and each slot's revocation counter,
 * which the worker's reads check. Only the root writes it. A seqlock (seq
 * odd while the root writes) gives readers a consistent copy. */
#ifndef SHMSYNC_WTAB_H
#define SHMSYNC_WTAB_H

#include <stdatomic.h>
#include <stdint.h>

#define WTAB_MAGIC 0x4241545753534853ull /* "SHSSWTAB" */

struct wtab_entry {
	_Atomic uint32_t state;   /* 0: free, else SHMSYNC_WORKER_* */
	_Atomic uint32_t revoked; /* bumped at each revocation: reads check it */
	_Atomic int64_t pid;
	_Atomic uint64_t cursor, epoch, lag, pinned_bytes;
};

struct wtab {
	uint64_t magic;
	uint32_t n;
	uint32_t reserved;
	_Atomic uint64_t seq;
	struct wtab_entry e[];
};

#endif
