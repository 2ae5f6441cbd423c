/* Declarations shared by the shm layer's own files; not part of any API. */
#ifndef SHMSYNC_INTERNAL_H
#define SHMSYNC_INTERNAL_H

#include <string.h>
#include <xxhash.h>

#include "layout.h"
#include "shm.h"

/* Kinds of retire-list entries. */
enum shm_retire_kind {
	R_VERSION = 1, /* a superseded version: free it */
	R_UNLINK,      /* a tombstone at the head of its key: unlink the key, free later */
	R_DELINC,      /* a deleted incarnation: free its entries and table, unlink it */
	R_FREE,        /* unreachable (unlinked or replaced): free it */
};

/* Retire entries waiting for readers to pass a tick, in FIFO order. */
struct shm_bucket {
	uint64_t head, tail;
	uint64_t count, bytes;
};

struct shm_undo {
	uint8_t kind;
	void *addr;
	uint64_t old;
};

struct shm_counters {
	uint64_t dirs, keys, tombstones;
	uint64_t retired_objects, retired_bytes;
};

struct shm_root {
	struct shm_seg seg;
	struct shm_arena *arena;
	struct shm_hdr *hdr;
	uint8_t *base;
	uint64_t seed;
	uint64_t tick; /* published */
	/* Seeds for new tables, from getrandom in batches: not derivable from
	 * the seeds a worker has seen. */
	uint64_t rnd[32];
	unsigned nrnd;
	uint64_t rnd_ctr;
	/* Probe work of the root's lookups (slots + tree nodes), for stat
	 * and the hash-flooding test. */
	uint64_t probes, probe_max;
	uint64_t rebuilds, reseeds;
	bool building;
	unsigned applied; /* batches applied to the tick being built */

	/* Bucket for tag t is bk[t % bk_cap], for t in [bk_base, bk_base + bk_cap). */
	struct shm_bucket *bk;
	uint64_t bk_base, bk_cap;
	uint64_t next_safe; /* entries of bucket tick+1 a reclaim may free */

	struct shm_undo *undo;
	size_t nundo, undo_cap;
	uint64_t *undone_allocs;
	size_t nundone, undone_cap;

	/* Change log (writer side). */
	uint64_t log_head;       /* next write position */
	uint64_t log_tick_start; /* log_head when the tick being built began */
	uint64_t min_cursor_hint;
	uint64_t log_overruns;

	uint64_t empty_names;    /* names whose incarnations are all gone */
	uint64_t pend, pend_cap; /* the tick's private name array, unpublished */
	uint64_t *prefix;        /* scratch of shm_retired_bytes_after */
	size_t prefix_cap;
	struct shm_counters c;
	uint64_t reclaimed_objects, reclaimed_bytes;
	bool poison;
};

static inline void *shm_at(const struct shm_root *r, uint64_t off)
{
	return r->base + off;
}

static inline uint64_t shm_hash(uint64_t seed, const void *key, size_t len)
{
	return XXH3_64bits_withSeed(key, len, seed);
}

/* Where a key goes in a table: its segment hash mixed with the table's own
 * seed. Mixing the stored hash, not the key, lets a rebuild place every
 * entry under a fresh seed without reading its key; keys that agree in some
 * bits of h (what a search against the segment seed yields) are scattered
 * by every new table seed. A bijection of h for a given seed, so distinct
 * hashes stay distinct. */
static inline uint64_t shm_table_pos(uint64_t table_seed, uint64_t h)
{
	return XXH3_64bits_withSeed(&h, sizeof(h), table_seed);
}

/* Bit i of (pos, key_len, key) for the overflow tree (layout.h). Past the
 * key's end the bits are 0; two keys that reach there differ earlier. */
static inline unsigned shm_cb_bit(uint64_t pos, size_t key_len, const void *key, uint32_t i)
{
	if (i < 64)
		return (unsigned)(pos >> (63 - i)) & 1u;
	i -= 64;
	if (i < 32)
		return (unsigned)(key_len >> (31 - i)) & 1u;
	i -= 32;
	size_t byte = i / 8;
	return byte < key_len ? (unsigned)(((const uint8_t *)key)[byte] >> (7 - i % 8)) & 1u : 0u;
}

/* The first bit at which two different keys differ. */
static inline uint32_t shm_cb_crit(uint64_t pa, size_t la, const void *ka, uint64_t pb, size_t lb,
				   const void *kb)
{
	if (pa != pb)
		return (uint32_t)__builtin_clzll(pa ^ pb);
	if (la != lb)
		return 64u + (uint32_t)__builtin_clz((uint32_t)(la ^ lb));
	const uint8_t *a = ka, *b = kb;
	size_t i = 0;
	while (i < la && a[i] == b[i])
		i++;
	if (i == la)
		return SHM_CB_LEAF; /* the same key */
	return 96u + 8u * (uint32_t)i + (uint32_t)__builtin_clz((uint32_t)(a[i] ^ b[i]) << 24);
}

/* Lexicographic byte order, shorter first on a common prefix. */
static inline int shm_name_cmp(const char *a, size_t an, const char *b, size_t bn)
{
	int c = memcmp(a, b, an < bn ? an : bn);
	if (c)
		return c;
	return an < bn ? -1 : an > bn;
}

/* log.c: the writer's side of the change log. */
/* value: a PUT's value, carried in the record when value_len is at most
 * SHM_LOG_INLINE_MAX (NULL otherwise, and for other kinds). */
int shm_log_append(struct shm_root *r, int kind, const char *dir, size_t dir_len, const void *key,
		   size_t key_len, const void *value, size_t value_len);
void shm_log_reclaim(struct shm_root *r, uint64_t min_cursor, struct shm_reclaim_report *rep);

#endif
