/* Internal API of the shm layer: the root context in a shared-memory segment.
 *
 * Nothing here knows about processes, sockets or rings. One writer (the root)
 * builds ticks with shm_commit_begin / shm_apply_batch / shm_commit_publish;
 * any number of readers, in any process, read a published snapshot through a
 * read-only mapping with shm_get / shm_dir_iter / shm_dirs_iter / shm_diff.
 * Every function returns 0 (or a count) or a negative errno code.
 */
#ifndef SHMSYNC_SHM_H
#define SHMSYNC_SHM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shmsync.h"

/* The version of the segment's layout (shm/layout.h), which a reader
 * checks when it maps a segment and the sync layer's handshake compares.
 * 3: tables carry their own seed and an overflow tree (struct shm_table,
 * struct shm_pool): a reader of layout 2 would probe a table with the
 * segment's hash and never look in the tree, missing keys.
 * 4: the sync layer's words (the tick futex word and its statistics) left
 * the header for the extension area, ahead of the worker table
 * (sync/shared.h): a worker of layout 3 would wait on a word the root no
 * longer changes and look for the worker table where they now are.
 * 5: the probe window went from 32 slots to 16 (SHM_PROBE_WINDOW): a reader
 * of layout 4 would stop at an EMPTY slot past the 16th instead of going on
 * into the overflow tree, missing keys that are there.
 * 6: versions lost their 64-byte header for a 20-byte one (tick, a link
 * word packing the older offset, key length and flags, the value length):
 * a reader of layout 5 would read every version wrong. The publication
 * words (tick, pub_seq, pub_tick, pub_log_end) moved to a cache line of
 * their own at offset 64. */
#define SHM_LAYOUT_VERSION 6u

/* A message for the caller: what failed, the limit involved, what to set. */
struct shm_err {
	char msg[256];
};

/* ---- segment ----------------------------------------------------------- */

struct shm_hdr;

struct shm_seg {
	int fd;
	uint8_t *base;
	size_t capacity; /* bytes of address space reserved */
	size_t size;     /* root: bytes backed by the file; reader: last seen */
	/* Bytes that may ever be read, whatever the header says: the mapping,
	 * and for a reader no more than the file held when it was opened (it
	 * is sealed against shrinking), so that no offset below it can fault
	 * (SIGSEGV past the mapping, SIGBUS past the file's end). */
	size_t limit;
	bool writable;
	struct shm_hdr *hdr;
	char numa_notice[200]; /* root: why no NUMA policy was applied (unavailable here), or "" */
};

/* Smallest capacity accepted: header, log and a few pages of data. */
#define SHM_MIN_CAPACITY ((size_t)4 << 20)
#define SHM_MAX_CAPACITY ((size_t)1 << 44)

/* Bytes of this process's mapping of the segment that huge pages map
 * (ShmemPmdMapped in /proc/self/smaps), -ENOENT if the kernel does not say,
 * -errno if smaps cannot be read. */
int shm_seg_huge_bytes(const struct shm_seg *seg, uint64_t *bytes);

/* Parses "123", "64K", "16M", "2G", "1T" (binary units). -EINVAL on anything
 * else, -ERANGE on overflow. */
int shm_parse_size(const char *text, size_t *out);

/* The default capacity: SHMSYNC_CAPACITY if set, else derived from RLIMIT_AS,
 * the memory cgroup limit (v1 and v2) and physical memory. */
int shm_capacity_default(size_t *capacity, struct shm_err *err);

/* Creates a memfd segment of `capacity` bytes of reserved address space with
 * `initial` bytes backed and populated. */
int shm_seg_create(struct shm_seg *seg, size_t capacity, size_t initial, struct shm_err *err);
/* The same with a NUMA memory policy (numa.h's SHM_NUMA_*) applied to the
 * whole reservation before any page is populated. A bad node is -EINVAL
 * naming the nodes; where NUMA is unavailable the policy is skipped and
 * seg->numa_notice says so. shm_seg_create interleaves (SHM_NUMA_DEFAULT). */
int shm_seg_create_numa(struct shm_seg *seg, size_t capacity, size_t initial, int numa_policy, int numa_node,
			struct shm_err *err);
/* Backs the segment up to new_size (ftruncate + MADV_POPULATE_WRITE), then
 * publishes the size with release order. -ENOSPC when either fails. */
int shm_seg_grow(struct shm_seg *seg, size_t new_size, struct shm_err *err);
/* Seals the segment (F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_SEAL, once)
 * and returns a new read-only O_CLOEXEC fd for readers. The caller owns the
 * fd. */
int shm_seg_reader_fd(struct shm_seg *seg, struct shm_err *err);
/* Maps a reader fd read-only after validating the header (magic, layout
 * version, sizes). Does not take ownership of fd. */
int shm_seg_open_reader(struct shm_seg *seg, int fd, struct shm_err *err);
void shm_seg_close(struct shm_seg *seg);
/* The published size (acquire). */
uint64_t shm_seg_published_size(const struct shm_seg *seg);
/* What the root last published about the segment, for stat (relaxed
 * loads: each value is recent, together they are no snapshot). */
struct shm_seg_stats {
	uint64_t capacity;
	uint64_t size; /* bytes backed by the file */
	uint64_t bytes_in_use;
	uint64_t tombstones;
	uint64_t reclaimed_objects;
	uint64_t reclaimed_bytes;
};
void shm_seg_stats(const struct shm_seg *seg, struct shm_seg_stats *st);
/* Checked access: a pointer to [off, off+len) if it lies in the data area,
 * below the published size and `align`-aligned; NULL otherwise. */
const void *shm_seg_ptr(const struct shm_seg *seg, uint64_t off, uint64_t len, uint64_t align);

/* ---- arena: an offset allocator over the segment ----------------------- */

/* Size classes up to SHM_ARENA_MAX_SMALL bytes live in slabs (runs of pages
 * of one class); bigger objects are runs of whole pages. The allocator's
 * metadata is private to the root: readers never need it. Offsets are 8-byte
 * aligned (16 for classes of 16 and up, pages for large objects); 0 is never
 * a valid offset. */
#define SHM_ARENA_PAGE 4096u
#define SHM_ARENA_MAX_SMALL 8192u

struct shm_arena;

#define SHM_NCLASSES 36 /* 16..256 by 16, then 4 per power of two to 8192 */

struct shm_class_stats {
	uint32_t size;
	uint32_t slab_pages;
	uint64_t objects;
	uint64_t slabs;
};

struct shm_arena_stats {
	uint64_t bytes_in_use; /* allocated objects, each rounded to its class */
	uint64_t bytes_free;   /* free slots in slabs + free page runs below top */
	uint64_t high_water;   /* max bytes_in_use ever */
	uint64_t pages_top;    /* the arena's extent in pages: runs below it, untouched above */
	uint64_t pages_free;   /* pages in free runs */
	uint64_t large_objects;
	uint64_t headroom; /* bytes only shm_arena_alloc(..., true) may use */
	struct shm_class_stats classes[SHM_NCLASSES];
};

/* Manages [start, seg->capacity) of seg, growing the segment as needed. */
int shm_arena_create(struct shm_arena **arena, struct shm_seg *seg, uint64_t start, size_t headroom,
		     struct shm_err *err);
void shm_arena_destroy(struct shm_arena *arena);
/* -ENOSPC when the segment is full (normal allocations also stop short of the
 * headroom), -EINVAL for size 0 or above the capacity. */
int shm_arena_alloc(struct shm_arena *arena, uint64_t size, bool use_headroom, uint64_t *off);
/* Frees an offset returned by shm_arena_alloc. With poisoning on, fills it
 * with SHM_POISON_BYTE, all but the first 8 bytes of a small object (they
 * hold the slab's free-list link). */
void shm_arena_free(struct shm_arena *arena, uint64_t off);
void shm_arena_set_poison(struct shm_arena *arena, bool on);
/* The usable size of the allocation at off. */
uint64_t shm_arena_size_of(const struct shm_arena *arena, uint64_t off);
/* The usable size an allocation of `size` bytes gets. */
uint64_t shm_arena_round(uint64_t size);
void shm_arena_stats(const struct shm_arena *arena, struct shm_arena_stats *st);
uint64_t shm_arena_bytes_in_use(const struct shm_arena *arena);
/* Backs (populates) up to `step` more bytes of the segment when less than
 * `margin` is backed beyond the arena's extent: 1 if it grew, 0 if there
 * was no need or no room left, -ENOSPC if the memory could not be had. */
int shm_arena_grow_ahead(struct shm_arena *arena, uint64_t margin, uint64_t step);
/* The segment offset where the pages no run has used yet begin. */
uint64_t shm_arena_top(const struct shm_arena *arena);

/* ---- root context ------------------------------------------------------ */

struct shm_root;

struct shm_root_opts {
	size_t capacity;       /* 0: shm_capacity_default */
	size_t log_bytes;      /* 0: default (capacity / 16, clamped) */
	size_t headroom;       /* 0: default (capacity / 64, at least 256 KiB) */
	bool poison;           /* fill freed objects with SHM_POISON_BYTE */
	int numa_policy;       /* SHM_NUMA_* (numa.h): the segment's memory policy; 0: interleave */
	int numa_node;         /* for SHM_NUMA_BIND / _PREFERRED */
	size_t prefault_bytes; /* backed and touched at create (index.c); 0: none */
};

#define SHM_POISON_BYTE 0xa5

int shm_root_create(struct shm_root **root, const struct shm_root_opts *opts, struct shm_err *err);
void shm_root_destroy(struct shm_root *root);
struct shm_seg *shm_root_seg(struct shm_root *root);
uint64_t shm_root_tick(const struct shm_root *root);

enum shm_op_kind {
	SHM_OP_PUT = 1,
	SHM_OP_PUT_IF_ABSENT,
	SHM_OP_PUT_IF_TICK, /* expected_tick: tick of the current version, 0 = absent */
	SHM_OP_ADD,         /* 8-byte little-endian int64 counter */
	SHM_OP_DEL,
	SHM_OP_MKDIR,
	SHM_OP_RMDIR, /* the directory and every directory whose name starts with it */
	/* A put whose version keeps the tick it had where it came from
	 * (expected_tick), for rebuilding a state from a snapshot: refused
	 * (-EINVAL, by shm_op_check too) outside shm_root_load_begin/_end,
	 * and (-EEXIST) for a key that is already present. */
	SHM_OP_LOAD,
};

struct shm_op {
	int kind;
	const char *dir;
	size_t dir_len;
	const void *key;
	size_t key_len;
	const void *value;
	size_t value_len;
	int64_t delta;
	uint64_t expected_tick;
};

/* Syntax and limits of one operation, without looking at the state:
 * -EINVAL (bad kind, bad directory name, empty key), -ENAMETOOLONG (directory
 * or key too long), -EMSGSIZE (value too long). */
int shm_op_check(const struct shm_op *op);
/* shm_op_check, less the directory name's syntax when the caller checked
 * the same name already (most ops of a batch share one: its checks were
 * about a tenth of a put's cost at the root). */
int shm_op_check_named(const struct shm_op *op, bool name_checked);
/* True if `dir` is a valid directory name: absolute, ends in '/', no empty,
 * "." or ".." component, no NUL, at most SHMSYNC_MAX_DIR bytes. */
bool shm_dir_name_valid(const char *dir, size_t len);
/* Bytes of change log a batch needs; a batch may use at most half the log. */
size_t shm_batch_log_bytes(const struct shm_op *ops, size_t n);
size_t shm_root_max_batch_log_bytes(const struct shm_root *root);
/* The same limit read from a reader's mapping (a worker sizing its
 * batches). */
size_t shm_seg_max_batch_log_bytes(const struct shm_seg *seg);

/* The change log's size in bytes. */
uint64_t shm_log_size(const struct shm_root *root);
/* Change-log bytes a reader whose cursor is `tick` still needs: from the
 * end of that tick to the end of the published one (what its cursor keeps
 * from being reclaimed). 0 when tick is the published tick or later, and
 * when its end already fell off the log (that reader gets a reset and
 * keeps nothing). For a tick more than 4096 ticks back, whose end the root
 * no longer remembers: every byte the log holds. */
uint64_t shm_log_bytes_since(const struct shm_root *root, uint64_t tick);

/* Starts building tick T+1. -ENOMEM if the root's private bookkeeping
 * cannot grow. */
int shm_commit_begin(struct shm_root *root);
/* Applies one batch atomically to the tick being built: 0, or a negative errno
 * and no trace (*failed_op names the operation): -ENOENT (missing directory,
 * or del/rmdir of something absent), -EEXIST (mkdir of an existing directory,
 * put_if_absent of a present key), -ECANCELED (put_if_tick's condition),
 * -EINVAL / -ENAMETOOLONG / -EMSGSIZE (shm_op_check), -ERANGE (add overflowed),
 * -E2BIG (batch larger than half the log), -ENOBUFS (this tick's share of the
 * log is full: publish, then retry), -ENOSPC (segment full). */
int shm_apply_batch(struct shm_root *root, const struct shm_op *ops, size_t n, size_t *failed_op);
/* Publishes the tick being built if any batch was applied: returns 1 and sets
 * *tick; returns 0 (nothing published) if the group was empty. Then pushes
 * what importers read next (the published words and the tick's change-log
 * records) out of this core's private caches (x86 CLDEMOTE, a no-op
 * elsewhere). */
int shm_commit_publish(struct shm_root *root, uint64_t *tick);

/* Rebuilding a state at tick `tick` (a snapshot taken elsewhere): only on a
 * root that has published nothing since it was created (-EBUSY otherwise)
 * and before any reader has its fd. Every batch applied until
 * shm_root_load_end belongs to one tick, `tick`, which _end publishes:
 * no reader sees a half-loaded state. Loading writes no change-log records
 * (nobody can import from before the tick) and so has no per-tick log
 * limit. SHM_OP_LOAD versions keep their own ticks (<= tick); directories
 * are created at `tick`. -EINVAL if tick < 2 (tick 1 is the empty state). */
int shm_root_load_begin(struct shm_root *root, uint64_t tick);
int shm_root_load_end(struct shm_root *root);

struct shm_reclaim_report {
	uint64_t objects_freed;
	uint64_t bytes_freed;
	uint64_t log_records_freed;
	uint64_t log_bytes_freed;
	bool more; /* budget ran out before everything allowed was freed */
};

/* Frees what the retire rule allows: objects retired at tick t once
 * min_read_epoch >= t (UINT64_MAX: no reader online), log records of tick t
 * once min_cursor >= t. At most `budget` objects (0: no limit).
 *
 * Contract: min_read_epoch is the minimum of the epochs readers announced,
 * scanned (after a seq_cst fence) after the last shm_commit_publish and after
 * the previous shm_reclaim returned. Objects this root unlinks while tick T
 * is published (a tombstone's key, a deleted directory's incarnation, a
 * dropped name) are retired with tag T+1: readers at T may still be walking
 * them. With no reader online they are freed by the next call, never by the
 * call that unlinked them (a reader may have come online after the scan). */
int shm_reclaim(struct shm_root *root, uint64_t min_read_epoch, uint64_t min_cursor, size_t budget,
		struct shm_reclaim_report *rep);
/* Bytes retired with tag `tick` still waiting (for tests and stat). */
uint64_t shm_retired_bytes(const struct shm_root *root, uint64_t tick);
/* Fills pinned[i] with the bytes retired with a tag > epochs[i] (what a
 * reader at that epoch keeps from being freed); UINT64_MAX epochs get 0.
 * O(ticks retained + n log n). */
void shm_retired_bytes_after(struct shm_root *root, const uint64_t *epochs, uint64_t *pinned, size_t n);
/* Reserves, once and before any reader fd exists, an area of the segment for
 * the layer above; readers find it with shm_seg_ext. The area starts on a
 * page (SHM_ARENA_PAGE) boundary, so the layer above can give its words
 * cache lines of their own. */
int shm_root_ext(struct shm_root *root, size_t size, void **area);
/* The area reserved with shm_root_ext, checked against the published size
 * (8-byte aligned, inside the data area); NULL if there is none. What is
 * in it comes from the root: the caller checks its contents. */
const void *shm_seg_ext(const struct shm_seg *seg, uint64_t *size);

struct shm_stats {
	uint64_t tick;
	uint64_t capacity;
	uint64_t segment_size;
	uint64_t bytes_in_use; /* sum of allocated objects, rounded to their class */
	uint64_t bytes_free;   /* free slots in slabs + free page runs, below top */
	uint64_t high_water;
	uint64_t pages_top; /* the arena's extent in pages */
	uint64_t large_objects;
	uint64_t directories;     /* live */
	uint64_t keys;            /* live */
	uint64_t tombstones;      /* key tombstones and deleted directories not yet freed */
	uint64_t retired_objects; /* waiting for readers */
	uint64_t retired_bytes;
	uint64_t reclaimed_objects; /* total */
	uint64_t reclaimed_bytes;   /* total */
	uint64_t log_size;
	uint64_t log_bytes_used;
	uint64_t log_overruns; /* records dropped while a cursor still needed them */
	/* Key lookups of the root (each put and del probes its key, a tree
	 * insert walks once more): slots and tree nodes visited, in total and
	 * the most for one lookup. Bounded whatever the keys (layout.h, "Hash
	 * flooding"). */
	uint64_t probes, probe_max;
	uint64_t table_rebuilds; /* tables replaced: growth, cleaning, reseeding */
	uint64_t table_reseeds;  /* of which because the overflow tree's pool ran out */
	struct shm_class_stats classes[SHM_NCLASSES];
};
void shm_root_stats(const struct shm_root *root, struct shm_stats *st);
/* Populates the segment ahead of the allocator, a few MiB per call, so that
 * commits seldom pay for new pages (zeroing a 2 MiB huge page, or faulting
 * 512 small ones): for the root's loop to call between commits. 1 if it
 * grew, 0 if not needed, -ENOSPC (the commit path then tries again, and
 * reports it there). */
int shm_root_grow_ahead(struct shm_root *root);
/* Reads one byte of up to max_pages pages the next commits will write and
 * the root has not touched since they were backed: the pages the
 * grow-ahead backed beyond the arena's top (shm_root_create touched the
 * change log already). For the root's loop, in time it would otherwise
 * lose. Where the first access to a page is dear (under shadow page tables
 * it cost ~4.6 us a page on this project's VMs, MADV_POPULATE_WRITE or
 * not), a commit that finds them touched does not pay it. Returns the
 * pages touched: 0 when none are left until the segment grows. */
unsigned shm_root_warm(struct shm_root *root, unsigned max_pages);

/* The root's arena (tests, stat). */
struct shm_arena *shm_root_arena(struct shm_root *root);

/* ---- readers (any process, read-only mapping) -------------------------- */

/* Step limit of every traversal a reader makes: a chain or probe sequence
 * longer than this is treated as corruption (-EIO). */
#define SHM_MAX_STEPS (1u << 22)

struct shm_value {
	const void *data;
	size_t len;
	uint64_t tick; /* tick of this version */
};

/* The published tick (acquire). */
uint64_t shm_published_tick(const struct shm_seg *seg);
/* Asks for the change log's line at pos (a reader's next record) without
 * waiting for it: a poller that does this beside its look at the published
 * tick gets the record and the tick across from the root's core together,
 * not one after the other. A hint: nothing is read or checked. */
void shm_log_prefetch(const struct shm_seg *seg, uint64_t pos);
/* Starts loading the published tick's line (the tick and the seqlock'd
 * pair an importer reads first). A hint only. */
void shm_pub_prefetch(const struct shm_seg *seg);
/* A consistent (tick, log position at the end of that tick) pair. */
void shm_published_state(const struct shm_seg *seg, uint64_t *tick, uint64_t *log_end);

/* Snapshot reads at `epoch`: the newest version with tick <= epoch, and a
 * directory incarnation created <= epoch and not deleted <= epoch. The caller
 * must have announced epoch (or hold the segment as the root). -ENOENT when
 * the directory or key is absent at epoch, -EIO on a corrupt segment. */
int shm_get(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len, const void *key,
	    size_t key_len, struct shm_value *out);

/* A reader's memory of the last directory it looked up: the table that
 * directory had at `epoch` (checked when it was found). At one epoch a
 * directory's visible incarnation cannot change, and a table it had then is
 * not freed while a reader holds that epoch (a rebuild retires it with the
 * rebuild's tick, which is after epoch), so gets at the same epoch in the
 * same directory skip the name search, the incarnation chain and the
 * table's checks: about a third of a hot get. The owner clears it (epoch 0)
 * when it lets go of its epoch (offline). */
struct shm_table_ref {
	const struct shm_slot *slots;
	uint64_t nslots;
	uint64_t seed;
	const struct shm_onode *nodes; /* the overflow tree's pool, NULL if none */
	const struct shm_pool *pool;
	uint64_t cap;
};
struct shm_dir_cache {
	uint64_t epoch; /* 0: empty */
	size_t dir_len;
	struct shm_table_ref table;
	/* What every get there reads before its first miss, found once:
	 * the mapping, the published size when the table was found (every
	 * object the table reaches at epoch lies below it; a smaller bound
	 * than today's is only stricter), the segment's hash seed and the
	 * table's probe window. */
	const uint8_t *base;
	uint64_t size;
	uint64_t hash_seed;
	uint64_t window;
	char dir[SHMSYNC_MAX_DIR];
};
/* shm_get and shm_get_many through a cache (NULL: none). */
int shm_get_cached(const struct shm_seg *seg, struct shm_dir_cache *cache, uint64_t epoch, const char *dir,
		   size_t dir_len, const void *key, size_t key_len, struct shm_value *out);
/* shm_get_cached less its common path (shm/get_hot.h): for a caller whose
 * shm_get_hot has declined, so that the common path is not tried twice. */
int shm_get_general(const struct shm_seg *seg, struct shm_dir_cache *cache, uint64_t epoch, const char *dir,
		    size_t dir_len, const void *key, size_t key_len, struct shm_value *out);
int shm_get_many_cached(const struct shm_seg *seg, struct shm_dir_cache *cache, uint64_t epoch,
			const char *dir, size_t dir_len, const shmsync_key *keys, size_t n,
			struct shm_value *out, int *rcs);
/* n shm_gets in one directory, their cache misses overlapped: rcs[i] is 0
 * (out[i] set) or -ENOENT (also every key when dir is absent at epoch).
 * The number found, or -EIO on a corrupt segment. */
int shm_get_many(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len,
		 const shmsync_key *keys, size_t n, struct shm_value *out, int *rcs);
typedef int (*shm_key_fn)(const void *key, size_t key_len, const struct shm_value *v, void *arg);
/* Calls fn for every key of dir at epoch, in no particular order; stops
 * early and returns fn's value when it is non-zero. */
int shm_dir_iter(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len, shm_key_fn fn,
		 void *arg);
typedef int (*shm_dir_fn)(const char *dir, size_t dir_len, void *arg);
/* Calls fn for every directory visible at epoch whose name starts with prefix,
 * in name order. */
int shm_dirs_iter(const struct shm_seg *seg, uint64_t epoch, const char *prefix, size_t prefix_len,
		  shm_dir_fn fn, void *arg);
/* How keys are placed in dir's table at epoch: its seed, size and the slots
 * a lookup probes before the overflow tree (layout.h, "Hash flooding").
 * -ENOENT, -EIO as shm_get. For stat and the hash-flooding test. */
struct shm_table_info {
	uint64_t seed;
	uint64_t nslots;
	uint64_t window;
	uint64_t tree_nodes; /* capacity of the overflow tree's pool, 0: none yet */
};
int shm_dir_table(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len,
		  struct shm_table_info *out);
/* The home slot of a key in a table with that seed and size. */
uint64_t shm_key_home(const struct shm_seg *seg, uint64_t table_seed, uint64_t nslots, const void *key,
		      size_t key_len);
/* shm_get that also reports how many slots and tree nodes it visited. */
int shm_get_steps(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len, const void *key,
		  size_t key_len, struct shm_value *out, uint64_t *steps);
/* True if dir exists at epoch. */
int shm_dir_exists(const struct shm_seg *seg, uint64_t epoch, const char *dir, size_t dir_len);

enum shm_change_kind {
	SHM_CHANGE_PUT = 1,
	SHM_CHANGE_DEL,
	SHM_CHANGE_MKDIR,
	SHM_CHANGE_RMDIR, /* the directory and every directory under it */
	SHM_CHANGE_RESET, /* forget everything: the full state follows */
};

struct shm_change {
	uint64_t tick; /* tick of the last change (RESET, full state: to_tick) */
	int kind;
	const char *dir; /* NUL-terminated */
	size_t dir_len;
	const void *key;
	size_t key_len;
	const void *value;
	size_t value_len;
	uint64_t version_tick; /* a full state's PUT: the tick of the key's version (replication's
				  snapshots keep it); 0 elsewhere */
};
typedef int (*shm_change_fn)(const struct shm_change *c, void *arg);

/* The coalesced diff of (from_tick, to_tick]: the records between log
 * positions from_pos (the log_end of from_tick) and to_pos (the log_end of
 * to_tick, from shm_published_state). Every changed directory and key, in the
 * order of its last change, with its state at to_tick (values are read at
 * epoch to_tick, which the caller must hold). A deleted key is a DEL; a
 * directory deleted and recreated is RMDIR then MKDIR; keys and directories
 * covered by a later RMDIR are left out. If from_pos fell off the log (or the
 * log was overwritten while it was read), RESET then the full state at
 * to_tick. Returns 0, 1 when a reset was delivered, fn's non-zero value, or a
 * negative errno (-ENOMEM, -EIO). */
int shm_diff(const struct shm_seg *seg, uint64_t from_pos, uint64_t to_tick, uint64_t to_pos,
	     shm_change_fn fn, void *arg);
/* shm_diff with buffers kept in *scratch (allocated on first use, NULL to
 * start; free with shm_diff_scratch_free) between calls, so that frequent
 * small diffs allocate nothing. fn must not use the same scratch. */
struct shm_diff_scratch;
int shm_diff_reuse(const struct shm_seg *seg, struct shm_diff_scratch **scratch, uint64_t from_pos,
		   uint64_t to_tick, uint64_t to_pos, shm_change_fn fn, void *arg);
void shm_diff_scratch_free(struct shm_diff_scratch *scratch);
/* Delivers RESET then the full state at epoch (directories in name order,
 * each followed by its keys). */
int shm_full_state(const struct shm_seg *seg, uint64_t epoch, shm_change_fn fn, void *arg);

#endif
