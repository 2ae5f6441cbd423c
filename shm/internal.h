/* Declarations shared by every file of the shm layer, readers' and the
 * writer's alike; not part of any API. Nothing here needs the root's
 * private state (that is shm/writer.h), so a worker links the reader's files
 * alone.
 *
 * Dependency order of the shm files: each calls only files listed above
 * it (named after the colon), so the calls between them form no cycle.
 *   segment.c   the memfd, the mapping, checked access
 *   strerror.c  names for return codes
 *   numa.c      memory policy of mappings (its own numa.h)
 *   op.c        validation of operations and names, log bytes of a batch
 *   arena.c     the offset allocator: segment.c
 *   read.c      snapshot reads: segment.c (its common get is inline in
 *               get_hot.h, which sync/worker.c includes as well)
 *   diff.c      the coalesced diff and the full state: read.c, op.c, segment.c
 * A worker links these. The writer (the root) adds shm/writer.h (its
 * private state, and the helpers its files share, inline) and shm/table.h
 * (key lookups, inline):
 *   log.c       the change log: append, reclaim, positions (calls nothing)
 *   table.c     key tables and overflow trees: arena.c
 *   reclaim.c   freeing what readers have passed: table.c, log.c, arena.c
 *   commit.c    batches: apply, undo, publish: table.c, log.c, op.c, arena.c
 *   index.c     root create/destroy, stats, the ext area: segment.c, arena.c
 */
#ifndef SHMSYNC_INTERNAL_H
#define SHMSYNC_INTERNAL_H

#include <string.h>
/* XXH3 inlined: a get hashes its key and then the hash again (the table
 * position); inline, each is a few multiplies for a short key, where a
 * call into the shared library goes through its length dispatch. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "layout.h"
#include "shm.h"

static inline uint64_t shm_hash(uint64_t seed, const void *key, size_t len)
{
	return XXH3_64bits_withSeed(key, len, seed);
}

/* Equal keys (or names) of n bytes: short ones in two overlapping loads a
 * side, with no call and no loop (a get's and a put's names and keys are
 * mostly short, and memcmp's call and dispatch cost more than the compare). */
static inline __attribute__((always_inline)) bool shm_bytes_eq(const void *a, const void *b, size_t n)
{
	const uint8_t *x = a, *y = b;
	if (n >= 8 && n <= 16) {
		uint64_t x0, x1, y0, y1;
		memcpy(&x0, x, 8);
		memcpy(&y0, y, 8);
		memcpy(&x1, x + n - 8, 8);
		memcpy(&y1, y + n - 8, 8);
		return ((x0 ^ y0) | (x1 ^ y1)) == 0;
	}
	if (n >= 4 && n < 8) {
		uint32_t x0, x1, y0, y1;
		memcpy(&x0, x, 4);
		memcpy(&y0, y, 4);
		memcpy(&x1, x + n - 4, 4);
		memcpy(&y1, y + n - 4, 4);
		return ((x0 ^ y0) | (x1 ^ y1)) == 0;
	}
	return memcmp(x, y, n) == 0;
}

/* Where a key goes in a table: its segment hash mixed with the table's own
 * seed, so keys that agree in some bits of h (what a search against the
 * segment seed yields) are scattered by every new table seed. A bijection
 * of h for a given seed, so distinct hashes stay distinct. */
static inline uint64_t shm_table_pos(uint64_t table_seed, uint64_t h)
{
	return XXH3_64bits_withSeed(&h, sizeof(h), table_seed);
}

/* The home slot of position pos in a table of nslots (any size, not only
 * powers of two: a table grows by half, not double, so it sits at 1/2 to
 * 3/4 load, not 1/4 to 3/4). The high bits of pos, scaled. */
static inline uint64_t shm_table_home(uint64_t pos, uint64_t nslots)
{
	return (uint64_t)(((unsigned __int128)pos * nslots) >> 64);
}

/* The slot after i in a probe, wrapping at the end. */
static inline uint64_t shm_table_next(uint64_t i, uint64_t nslots)
{
	return i + 1 == nslots ? 0 : i + 1;
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

#endif
