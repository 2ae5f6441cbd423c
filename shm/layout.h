/* On-segment layout: every struct here lives in shared memory, addressed by
 * offsets from the segment base, never by pointers. The root is the only
 * writer. Fields readers load concurrently with the root's writes are C11
 * atomics; the order of each store and load is stated where it matters.
 * Fields marked "root only" are never read by readers.
 */
#ifndef SHMSYNC_LAYOUT_H
#define SHMSYNC_LAYOUT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "shm.h"
#include "shmsync.h"

#define SHM_MAGIC 0x434e595353484d53ull /* "SHMSSYNC" read as little-endian bytes */
/* SHM_LAYOUT_VERSION is in shm.h: the layer above checks it in its
 * handshake without seeing this file. */
#define SHM_HDR_SIZE 4096u /* the data area starts here */

/* Segment header, at offset 0. Padded to SHM_HDR_SIZE. */
struct shm_hdr {
	uint64_t magic;
	uint32_t layout_version;
	uint32_t hdr_size;
	uint64_t capacity;
	uint32_t page_size;
	uint32_t reserved0;
	uint64_t hash_seed;
	/* Bytes backed by the file. Stored (release) only after ftruncate and
	 * populate succeeded; readers check every offset against it (acquire). */
	_Atomic uint64_t size;

	/* Publication. tick is stored (release) after every byte of the commit
	 * is in place. pub_seq is a seqlock over (pub_tick, pub_log_end): odd
	 * while the root writes. (The sync layer's wake-up word is in its own
	 * area, sync/shared.h.) The four share one cache line of their own: an
	 * importer that sees a new tick reads the other three at once, so one
	 * line crosses from the root's core, not two (it was two while
	 * pub_tick began the header's second line), and the words every
	 * checked read loads (size above) are not invalidated by each commit. */
	_Alignas(64) _Atomic uint64_t tick;
	_Atomic uint64_t pub_seq;
	_Atomic uint64_t pub_tick;
	_Atomic uint64_t pub_log_end;

	/* Offset of the current struct shm_dir_array (release on replace). */
	_Alignas(64) _Atomic uint64_t dirs;

	/* The change log: a ring of log_size bytes at log_off. Byte positions
	 * are monotonic; the ring offset is pos % log_size. log_tail is the
	 * oldest retained position, stored (release) before the bytes below it
	 * are overwritten. */
	uint64_t log_off;
	uint64_t log_size;
	_Atomic uint64_t log_tail;

	/* Statistics for tools, written by the root (relaxed). */
	_Atomic uint64_t stat_bytes_in_use;
	_Atomic uint64_t stat_tombstones;
	_Atomic uint64_t stat_reclaimed_objects;
	_Atomic uint64_t stat_reclaimed_bytes;

	/* An area for the layer above (sync/shared.h: its wake-up word, its
	 * statistics, the worker table), set once before any reader exists:
	 * its offset (page-aligned) and size. */
	uint64_t ext_off;
	uint64_t ext_size;
};

_Static_assert(sizeof(struct shm_hdr) <= SHM_HDR_SIZE, "the segment header fits its page");

/* Every allocated object but a version begins with this. Retire lists are
 * the root's own memory (writer.h), never the objects: a version has no
 * room for a link, and readers may still be reading a retired object. */
struct shm_obj {
	uint64_t reserved0;
	uint32_t kind; /* enum shm_obj_kind; root only */
	uint32_t reserved1;
};

enum shm_obj_kind {
	SHM_OBJ_VERSION = 1,
	SHM_OBJ_TABLE,
	SHM_OBJ_INC,
	SHM_OBJ_DNAME,
	SHM_OBJ_DIRS,
	SHM_OBJ_POOL,
};

/* Flags of a version (struct shm_ver, the link word). */
#define SHM_VER_TOMB 1u       /* a key tombstone: the key is absent from tick on */
#define SHM_VER_PENDING 2u    /* on a retire list (root only) */
#define SHM_VER_SUPERSEDED 4u /* a tombstone a put superseded (root only, reclaim.c) */

/* One version of one key, the object there is one of per key: every byte
 * of its header is paid for each key kept. Versions of a key form a chain,
 * newest first, from the key's table slot. The key is stored in every
 * version so that a get touches the slot and one node. The header is
 * SHM_VER_HDR (20) bytes: the tick, one link word, the value's length; the
 * key follows at byte 20, then padding to 8, then the value, so values are
 * 8-byte aligned and a 9-byte key with a 64-byte value takes 96 bytes (a
 * 16-byte size class exactly). What only the root needs (which incarnation
 * a version belongs to, which version superseded it, retire-list links)
 * lives in the root's retire entries (writer.h), not here.
 *
 * The link word packs what a reader must see together, so that one load
 * gives a consistent view: the older version's offset / 16 (bits 0-39;
 * objects are 16-byte aligned and the segment is at most 2^44 bytes), the
 * key's length (bits 40-50) and the flags (bits 51-63). The root changes it
 * after publication only to cut the older link (reclaim) and to set root-only
 * flags, with whole-word atomic stores. */
struct shm_ver {
	uint64_t tick;         /* the commit that wrote it */
	_Atomic uint64_t link; /* older / 16 | key_len << 40 | flags << 51 */
	uint32_t value_len;
	/* key[key_len] at SHM_VER_HDR, padding to 8, value[value_len] */
};

#define SHM_VER_HDR 20u
_Static_assert(SHMSYNC_MAX_KEY <= 0x7ff, "a key length must fit the link word's 11 bits");
_Static_assert(SHM_MAX_CAPACITY <= (size_t)1 << 44, "an offset / 16 must fit the link word's 40 bits");
#define SHM_VER_OLDER_BITS 40u
#define SHM_VER_KLEN_SHIFT 40u
#define SHM_VER_FLAGS_SHIFT 51u

static inline uint64_t shm_link_older(uint64_t link)
{
	return (link & (((uint64_t)1 << SHM_VER_OLDER_BITS) - 1)) << 4;
}

static inline uint32_t shm_link_klen(uint64_t link)
{
	return (uint32_t)(link >> SHM_VER_KLEN_SHIFT) & 0x7ffu;
}

static inline uint32_t shm_link_flags(uint64_t link)
{
	return (uint32_t)(link >> SHM_VER_FLAGS_SHIFT);
}

static inline uint64_t shm_link_make(uint64_t older, uint32_t key_len, uint32_t flags)
{
	return older >> 4 | (uint64_t)key_len << SHM_VER_KLEN_SHIFT | (uint64_t)flags << SHM_VER_FLAGS_SHIFT;
}

#define SHM_SLOT_EMPTY 0u
#define SHM_SLOT_DELETED 1u

/* A slot of a directory's hash table: one word, stored (release) and
 * loaded (acquire) whole. It holds the head version's offset / 16 (bits
 * 0-39, as in a version's link word) and a tag: the top 24 bits of the
 * key's hash h with the segment's seed (hdr.hash_seed), the same in every
 * table, so a probe skips other keys without touching their versions (a
 * false match costs one key compare, 1 in 2^24). Where a key goes in a
 * table is decided by shm_table_pos of the full h, which the root computes
 * again from the key when it rebuilds a table. A slot whose key no snapshot
 * can see any more becomes DELETED (probes go on past it). 8 bytes, not
 * 16: at 1M keys a table of 2M slots is 16 MiB, not 32. */
struct shm_slot {
	_Atomic uint64_t word;
};

#define SHM_SLOT_TAG_SHIFT 40u

static inline uint64_t shm_slot_make(uint64_t node, uint64_t h)
{
	return node >> 4 | (h >> SHM_SLOT_TAG_SHIFT) << SHM_SLOT_TAG_SHIFT;
}

/* The head's offset, or SHM_SLOT_EMPTY / SHM_SLOT_DELETED. */
static inline uint64_t shm_slot_node(uint64_t word)
{
	return word <= SHM_SLOT_DELETED ? word : shm_link_older(word);
}

static inline bool shm_slot_tag_is(uint64_t word, uint64_t h)
{
	return word >> SHM_SLOT_TAG_SHIFT == h >> SHM_SLOT_TAG_SHIFT;
}

/* Hash flooding. Every worker can read every seed (it must hash keys to
 * find them), so it can search for keys that collide in a table. A table
 * therefore bounds the work of any one key, whatever the keys:
 *  - a key lives in the SHM_PROBE_WINDOW slots from its home, or, when all
 *    of them are taken, in the table's overflow tree: a crit-bit tree in the
 *    table's pool, over the bits of (position hash, key length, key bytes).
 *    A lookup probes at most SHM_PROBE_WINDOW slots, then walks at most 64
 *    internal nodes while the position hashes differ (each node tests a
 *    later bit than its parent) and one more per bit of a full 64-bit
 *    collision;
 *  - each table has its own random seed (shm_table.seed), drawn afresh at
 *    every rebuild, so keys found against an old table stop colliding.
 * Why the rebuilds stay amortised against an attacker who reads each new
 * seed is argued next to the code (shm/table.h, table_room). */
#define SHM_PROBE_WINDOW 16u

/* Open addressing, linear probing within the window (wrapping at the end),
 * any size: a key's home is shm_table_home.
 * Replaced, never grown in place: a reader may hold the old table until it
 * is reclaimed. */
struct shm_table {
	struct shm_obj o;
	uint64_t nslots;
	uint64_t used; /* root only: slots not EMPTY */
	uint64_t live; /* root only: keys whose head is not a tombstone */
	uint64_t seed; /* set before the table is published */
	/* The overflow tree's pool (struct shm_pool), 0 while no key needed
	 * it; stored (release) once, freed with the table. */
	_Atomic uint64_t pool;
	struct shm_slot slots[];
};

/* Bit i of a key for the overflow tree: bits 0-63 are the position hash
 * (most significant first), 64-95 the key length, then the key bytes. */
#define SHM_CB_BITS (96u + 8u * SHMSYNC_MAX_KEY)
#define SHM_CB_LEAF UINT32_MAX

/* A node of an overflow tree. A leaf (bit == SHM_CB_LEAF) is a slot: its
 * word is set and read like a slot's, and becomes DELETED when its key is
 * unlinked from the tree; a leaf's child[0] holds its key's full hash h for
 * the root (readers never follow a leaf's children). An internal node tests `bit` and leads to
 * child[0] or child[1] (pool index + 1). A node is filled in before the
 * store (release) that links it; links are loaded with acquire. */
struct shm_onode {
	struct shm_slot s;
	_Atomic uint64_t child[2];
	uint32_t bit;
	uint32_t reserved;
};

/* Nodes of one table's overflow tree. Nodes are handed out once (bump) and
 * never reused while the pool lives, so a reader standing on a node that
 * was unlinked still reads what it read before. */
struct shm_pool {
	struct shm_obj o;
	uint64_t cap;          /* nodes */
	uint64_t used;         /* root only: nodes handed out */
	uint64_t live;         /* root only: leaves linked (keys in the tree) */
	_Atomic uint64_t root; /* pool index + 1 of the root node, 0 if empty */
	struct shm_onode nodes[];
};

/* One incarnation of a directory name. Incarnations of a name form a chain,
 * newest first. Visible at E if created <= E and not (deleted && deleted <= E). */
struct shm_inc {
	struct shm_obj o;
	uint64_t created;
	_Atomic uint64_t deleted; /* 0 while live */
	_Atomic uint64_t older;
	_Atomic uint64_t table;
	uint64_t dname;       /* root only */
	uint64_t newer;       /* root only */
	uint64_t reclaim_pos; /* root only: next slot to free after rmdir */
	uint64_t bytes;       /* root only: table + head versions, what rmdir retires */
};

/* A directory name, with its incarnations. */
struct shm_dname {
	struct shm_obj o;
	_Atomic uint64_t head; /* newest incarnation; 0 when none is left */
	uint32_t name_len;
	uint32_t reserved;
	char name[]; /* name_len bytes, then NUL */
};

/* All directory names, sorted by name (memcmp, shorter first on a tie):
 * prefix rmdir and ordered listing walk a contiguous range. Replaced by a new
 * array when a name is added or names are dropped. */
struct shm_dir_array {
	struct shm_obj o;
	uint64_t count;
	uint64_t names[]; /* offsets of struct shm_dname */
};

/* A change-log record. Records never straddle the end of the ring: the rest
 * of the ring is then a PAD record. len is a multiple of 8. */
struct shm_logrec {
	uint32_t len;
	uint16_t kind; /* enum shm_change_kind, or SHM_LOG_PAD */
	uint16_t dir_len;
	uint64_t tick;
	uint32_t key_len;
	/* PUT: 1 + the length of the value that follows the key, when the value
	 * is at most SHM_LOG_INLINE_MAX bytes; 0: not in the record. */
	uint32_t value_inline;
	/* dir[dir_len], NUL, key[key_len], value[value_inline - 1], padding to 8 */
};

#define SHM_LOG_PAD 0u
/* A small value travels in its PUT record too: an importer then delivers it
 * from the log it copied, without looking the key up in the index (lines
 * the root has just written, so each lookup is a cross-core miss). */
#define SHM_LOG_INLINE_MAX 128u

static inline uint64_t shm_round8(uint64_t n)
{
	return (n + 7) & ~(uint64_t)7;
}

static inline uint64_t shm_ver_value_at(uint64_t key_len)
{
	return shm_round8(SHM_VER_HDR + key_len);
}

static inline uint64_t shm_ver_size(uint64_t key_len, uint64_t value_len)
{
	return shm_ver_value_at(key_len) + value_len;
}

static inline uint64_t shm_logrec_size(uint64_t dir_len, uint64_t key_len, uint64_t value_bytes)
{
	return shm_round8(sizeof(struct shm_logrec) + dir_len + 1 + key_len + value_bytes);
}

#endif
