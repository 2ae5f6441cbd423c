/* The common get, inline: it is all a loop of gets costs, so it is
 * compiled into its caller, shmsync_get (sync/worker.c), as well as into
 * shm_get_cached. Part of the reader (read.c), under the same rules:
 * nothing in the segment is trusted, every length is loaded once. */
#ifndef SHMSYNC_GET_HOT_H
#define SHMSYNC_GET_HOT_H

#include <errno.h>

#include "internal.h"

/* Each length or count in the segment is loaded once, checked, and only the
 * checked copy is used: a revoked reader (stall policy REVOKE) may be
 * reading memory that the root has freed and is rewriting, so a second load
 * of the same field may give anything. What it reads then is garbage that
 * the revocation check after the read reports as -ESTALE; what it must
 * never do is fault. */
#define RD_ONCE(x) (*(const volatile __typeof__(x) *)&(x))

/* A get's steps, inlined into one function whatever the compiler's size
 * heuristics say: a get is short enough (a few hundred instructions with
 * the caller's loop) that the core can start the next get's cache misses
 * while this one's are in flight, and every call, prologue and spilled
 * argument pushes the next get further out of its reach. */
#define RD_INLINE static inline __attribute__((always_inline))

/* A key of up to 16 bytes, read one byte at a time into two words: lo
 * holds bytes [0, min(n, 8)), hi bytes [n - 8, n) when n > 8, both little
 * endian, as XXH3 reads them.
 *
 * Why bytes: a caller usually writes the key just before the get (snprintf,
 * a loop of digits), byte by byte. A wider load that spans several of those
 * stores cannot take its bytes from the store buffer; it waits until they
 * are written to the cache, which is after every older instruction has
 * retired, including the previous get's cache misses. So one get's hash,
 * and with it its first miss, waited for the whole previous get, and a
 * loop of gets never overlapped two (measured: a get loop over 1M keys took
 * 0.55x the dependent-chain time with keys written whole and 0.99x with
 * keys written byte by byte; bench/peers writes its keys by digits). A byte
 * load is always inside one store, so it is forwarded whatever wrote the
 * key. volatile keeps the compiler from merging the bytes into wide loads
 * again. */
struct rd_key16 {
	uint64_t lo, hi;
};

/* Bytes [0, n) of p, n <= 8, little endian; 8 unrolled, the common case. */
RD_INLINE uint64_t rd_load_le(const volatile uint8_t *p, size_t n)
{
	if (n == 8)
		return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
		       (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
		       (uint64_t)p[7] << 56;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

RD_INLINE struct rd_key16 rd_key16(const void *key, size_t n)
{
	const volatile uint8_t *p = key;
	struct rd_key16 k = {rd_load_le(p, n < 8 ? n : 8), 0};
	if (n > 8) {
		uint64_t tail = rd_load_le(p + 8, n - 8);
		k.hi = n == 16 ? tail : k.lo >> (8 * (n - 8)) | tail << (8 * (16 - n));
	}
	return k;
}

/* XXH3_64bits_withSeed of a key of n <= 16 bytes given as rd_key16: the
 * same steps as xxhash.h's XXH3_len_0to16_64b with its inputs taken from
 * the two words instead of memory (xxhash's own secret and mixers; XXH3's
 * output is frozen by its specification). tests/test_get_hot checks it
 * against XXH3_64bits_withSeed for every length to 16. */
RD_INLINE uint64_t rd_hash16(struct rd_key16 k, size_t n, uint64_t seed)
{
	const uint8_t *secret = XXH3_kSecret;
	if (n > 8) {
		uint64_t bitflip1 = (XXH_readLE64(secret + 24) ^ XXH_readLE64(secret + 32)) + seed;
		uint64_t bitflip2 = (XXH_readLE64(secret + 40) ^ XXH_readLE64(secret + 48)) - seed;
		uint64_t input_lo = k.lo ^ bitflip1, input_hi = k.hi ^ bitflip2;
		uint64_t acc = n + XXH_swap64(input_lo) + input_hi + XXH3_mul128_fold64(input_lo, input_hi);
		return XXH3_avalanche(acc);
	}
	if (n >= 4) {
		seed ^= (uint64_t)XXH_swap32((uint32_t)seed) << 32;
		uint32_t input1 = (uint32_t)k.lo, input2 = (uint32_t)(k.lo >> (8 * (n - 4)));
		uint64_t bitflip = (XXH_readLE64(secret + 8) ^ XXH_readLE64(secret + 16)) - seed;
		uint64_t input64 = input2 + ((uint64_t)input1 << 32);
		return XXH3_rrmxmx(input64 ^ bitflip, n);
	}
	if (n) {
		uint32_t c1 = (uint32_t)(k.lo & 0xff), c2 = (uint32_t)(k.lo >> (8 * (n >> 1))) & 0xff;
		uint32_t c3 = (uint32_t)(k.lo >> (8 * (n - 1))) & 0xff;
		uint32_t combined = c1 << 16 | c2 << 24 | c3 | (uint32_t)n << 8;
		uint64_t bitflip = (XXH_readLE32(secret) ^ XXH_readLE32(secret + 4)) + seed;
		return XXH64_avalanche(combined ^ bitflip);
	}
	return XXH64_avalanche(seed ^ (XXH_readLE64(secret + 56) ^ XXH_readLE64(secret + 64)));
}

struct rd_probe {
	struct rd_key16 k;
	uint64_t lo_mask; /* the bytes of lo that are the key's */
	uint64_t h;       /* the key's hash with the segment's seed */
	uint64_t home;    /* its home slot in the cached table */
};

/* A get's first step, for a key of up to 16 bytes: its hash and home slot
 * in the cached table, whose line it starts loading. The cache need not
 * hold the directory yet (whether it does is decided after): a prefetch
 * never faults, so a stale table only wastes it. It comes first because a
 * loop of gets overlaps two of them only if the next one's first miss is
 * within the core's reach (a few hundred instructions) of this one's
 * last. */
RD_INLINE void rd_get_start(const struct shm_dir_cache *c, const void *key, size_t key_len,
			    struct rd_probe *p)
{
	p->k = rd_key16(key, key_len);
	p->lo_mask = key_len >= 8 ? ~(uint64_t)0 : ((uint64_t)1 << (8 * key_len)) - 1;
	p->h = rd_hash16(p->k, key_len, c->hash_seed);
	p->home = shm_table_home(shm_table_pos(c->table.seed, p->h), c->table.nslots);
	__builtin_prefetch((const void *)((uintptr_t)c->table.slots + p->home * sizeof(struct shm_slot)));
}

/* The common get, in the directory the cache holds, for a key of up to 16
 * bytes: the key in the window of slots from its home, its head version
 * the one visible at epoch. 1 and *out, 0 if absent, -1 for anything else
 * (a longer key, a key in the overflow tree, an older version, a check
 * that fails): the general path then reads it all again and decides. The same
 * checks as rd_ver's, against the cache's bound. The version's key is
 * compared in words: 8 bytes from the key's start must lie in the segment
 * (the version's own bytes, or whatever follows it; only the key's are
 * compared). */
RD_INLINE int rd_get_finish(const struct shm_dir_cache *c, uint64_t epoch, const struct rd_probe *probe,
			    size_t key_len, struct shm_value *out)
{
	const struct shm_table_ref *t = &c->table;
	uint64_t h = probe->h, nslots = t->nslots, i = probe->home;
	struct rd_key16 k = probe->k;
	uint64_t lo_mask = probe->lo_mask;
	for (uint64_t n = c->window; n; n--, i = shm_table_next(i, nslots)) {
		uint64_t word = atomic_load_explicit(&t->slots[i].word, memory_order_acquire);
		if (word == SHM_SLOT_EMPTY)
			return 0;
		if (!shm_slot_tag_is(word, h) || word == SHM_SLOT_DELETED)
			continue;
		/* 16-aligned by its encoding; in [header, size - header - 8]. */
		uint64_t off = shm_link_older(word);
		if (off < SHM_HDR_SIZE || off > c->size || c->size - off < SHM_VER_HDR + 8)
			return -1;
		const uint8_t *p = c->base + off;
		const struct shm_ver *v = (const void *)p;
		__builtin_prefetch(p + 64); /* as in rd_ver_in */
		uint64_t link = atomic_load_explicit(&v->link, memory_order_acquire);
		uint64_t vl = RD_ONCE(v->value_len);
		uint32_t kl = shm_link_klen(link);
		if (kl > SHMSYNC_MAX_KEY || vl > SHMSYNC_MAX_VALUE || shm_ver_size(kl, vl) > c->size - off)
			return -1;
		if (kl != key_len)
			continue;
		uint64_t vlo, vhi = 0;
		memcpy(&vlo, p + SHM_VER_HDR, 8);
		if (key_len > 8)
			memcpy(&vhi, p + SHM_VER_HDR + key_len - 8, 8);
		if (((vlo ^ k.lo) & lo_mask) | (vhi ^ k.hi))
			continue;
		uint64_t tick = RD_ONCE(v->tick);
		if (tick > epoch)
			return -1;
		if (shm_link_flags(link) & SHM_VER_TOMB)
			return 0;
		*out = (struct shm_value){.data = p + shm_ver_value_at(kl), .len = vl, .tick = tick};
		return 1;
	}
	return -1;
}

RD_INLINE int rd_get_hit(const struct shm_dir_cache *c, uint64_t epoch, const void *key, size_t key_len,
			 struct shm_value *out)
{
	if (key_len > 16)
		return -1;
	struct rd_probe p;
	rd_get_start(c, key, key_len, &p);
	return rd_get_finish(c, epoch, &p, key_len, out);
}

/* Whether the C string dir is the cached name: byte by byte, for the
 * reason rd_key16 gives, and so that it never reads past dir's end. */
RD_INLINE bool rd_cache_names(const struct shm_dir_cache *c, const char *dir)
{
	const volatile char *d = dir;
	size_t n = c->dir_len;
	for (size_t i = 0; i < n; i++)
		if (d[i] != c->dir[i])
			return false;
	return d[n] == 0;
}

/* shm_get_cached's common case, for a C string dir: 0 and *out, or
 * -ENOENT, when the cache holds dir at epoch and the key is in its table's
 * window with its head visible; 1 when the caller must take the general
 * path, shm_get_general (nothing was decided). */
RD_INLINE int shm_get_hot(const struct shm_dir_cache *cache, uint64_t epoch, const char *dir, const void *key,
			  size_t key_len, struct shm_value *out)
{
	if (key_len > 16)
		return 1;
	struct rd_probe p;
	rd_get_start(cache, key, key_len, &p);
	if (cache->epoch != epoch || !epoch || !rd_cache_names(cache, dir))
		return 1;
	int rc = rd_get_finish(cache, epoch, &p, key_len, out);
	return rc < 0 ? 1 : rc ? 0 : -ENOENT;
}

#endif
