/* The sync layer's area in the root segment (shm_root_ext): the words every
 * worker reads through its read-only mapping that are the sync layer's and
 * not the shm layer's, so the shm header does not carry them. Only the root
 * writes here. The worker table (wtab.h) follows this struct in the same
 * area. A worker trusts none of it: it checks the magic, the size and the
 * alignment against the area shm_seg_ext found inside the published size
 * (sync_shared_find) before it waits on the word or reads the table.
 */
#ifndef SHMSYNC_SHARED_H
#define SHMSYNC_SHARED_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>

#include "shm.h"
#include "wtab.h"

#define SYNC_SHARED_MAGIC 0x4448535353534853ull /* "SHSSSSHD" */

/* 128: a line and its neighbour, which the adjacent-line prefetcher pulls
 * in together (as in port.h). */
#define SYNC_SHARED_LINE 128
#define SYNC_EXPORTER_WINDOW_NS 1000000

struct sync_shared {
	uint64_t magic;
	uint32_t size; /* sizeof(struct sync_shared): where the worker table starts */
	/* Live workers that exported a batch within the last
	 * SYNC_EXPORTER_WINDOW_NS, as the root last counted (relaxed): a
	 * worker spins long for an ack only while these and the root fit the
	 * machine's CPUs (sync/worker_wait.c). In what used to be padding: 0,
	 * what a root that predates it leaves, means unknown. */
	_Atomic uint32_t hint_exporters;
	/* Statistics for tools (shmsync_stat), written by the root (relaxed). */
	_Atomic uint64_t stat_min_epoch;        /* as the root last computed it */
	_Atomic uint64_t stat_timer_found_work; /* ring work the idle timer found */
	_Atomic uint32_t stat_signal;           /* how the root waits: SIG_URING or SIG_FUTEX */
	_Atomic uint32_t stat_workers;
	_Atomic uint64_t stat_root_restarts, stat_worker_restarts; /* from a supervisor */
	_Atomic uint64_t stat_huge_bytes; /* of the root's mapping, on huge pages (smaps), at most 1/s */
	/* Replication (sync/root_repl.c), in what used to be padding: a
	 * worker of the same layout that predates them reads nothing here. */
	_Atomic uint32_t stat_repl_role; /* 0 none, 1 leader, 2 follower */
	uint32_t reserved1;
	_Atomic uint64_t stat_repl_stored_tick; /* leader: JetStream has every tick up to this */
	_Atomic uint64_t stat_repl_lag_ticks;   /* leader: published here, not yet stored */
	_Atomic uint64_t stat_repl_lag_bytes;
	_Atomic uint64_t stat_repl_seq; /* follower: the stream sequence applied last */
	/* Pages the root touched before a commit needed them (shm_root_warm),
	 * where it would have slept and in polls after bulk commits
	 * (sync/root_loop.c). In what used to be padding too. */
	_Atomic uint64_t stat_warmed_idle, stat_warmed_poll;
	/* The wake-up word workers FUTEX_WAIT on: the root changes it after
	 * each publish and each round of acks (sync/root_commit.c,
	 * wake_workers), an atomic read-modify-write at every commit. On lines
	 * of its own, so that bump neither takes the statistics' line nor the
	 * worker table's from the readers, nor they this one. */
	alignas(SYNC_SHARED_LINE) _Atomic uint32_t tick_futex;
	/* Then the worker table, on the next line pair. */
};

_Static_assert(sizeof(struct sync_shared) % SYNC_SHARED_LINE == 0, "the worker table starts on a line pair");
/* The statistics stay in the first line pair, where they were padding: a
 * worker of the same layout version finds tick_futex where it looks. */
_Static_assert(offsetof(struct sync_shared, tick_futex) == SYNC_SHARED_LINE, "tick_futex moved");

/* How much of the root segment's extension area the root reserves for a
 * worker table of n entries. */
static inline size_t sync_shared_bytes(unsigned n)
{
	return sizeof(struct sync_shared) + sizeof(struct wtab) + n * sizeof(struct wtab_entry);
}

/* The worker table that follows the struct. */
static inline struct wtab *sync_shared_wtab(struct sync_shared *sh)
{
	return (struct wtab *)(void *)((uint8_t *)sh + sizeof(*sh));
}

/* A worker's view (sync/worker_attach.c): the root segment's sync area,
 * NULL unless the extension area is there, inside the published size,
 * aligned for the struct, large enough, and carries the magic and size.
 * Then *wtab is the worker table after it and *wtab_n its entries as
 * checked (the root may change wtab->n later: use *wtab_n), or NULL and 0
 * when the table is malformed or does not fit the area. */
const struct sync_shared *sync_shared_find(const struct shm_seg *seg, const struct wtab **wtab,
					   uint32_t *wtab_n);

#endif
