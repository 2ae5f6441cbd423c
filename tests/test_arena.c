/* The arena (shm/arena.c) used directly over a segment: what this test proves.
 *
 * - Rounding: every size gets the smallest class that holds it (pages above
 *   SHM_ARENA_MAX_SMALL), shm_arena_size_of agrees with shm_arena_round, and
 *   offsets are aligned as promised (8; 16 for classes of 16 and up; a page
 *   for large objects) and lie inside the published size of the segment.
 * - No two live allocations overlap and the allocator never writes into a
 *   live object: 100k random allocations of mixed sizes, each filled with a
 *   pattern of its own and verified when freed.
 * - Statistics are exact: bytes_in_use is the sum of the rounded sizes of the
 *   live objects after every operation, high_water is the maximum of that
 *   sum, and after freeing everything nothing is in use.
 * - Empty slab pages go back for reuse by other classes and large objects:
 *   once 16 MiB of 64-byte objects are freed, 16 MiB of 1 KiB objects and
 *   then 16 MiB of 64 KiB objects fit without taking pages from the top.
 * - Headroom: when normal allocations fail with -ENOSPC, allocations with
 *   use_headroom still succeed, also when the arena is fragmented; freeing
 *   makes normal allocations succeed again.
 * - Poison: with poisoning on, a freed object reads SHM_POISON_BYTE
 *   throughout, as shm.h promises.
 * It also prints the cost of an alloc/free pair (measured, not asserted).
 */
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>

#include "layout.h"
#include "shm.h"
#include "testutil.h"

#define MiB ((uint64_t)1 << 20)
#define KiB ((uint64_t)1 << 10)
/* The first page after the header, with room to spare: the arena may start
 * anywhere at or above SHM_HDR_SIZE. */
#define ARENA_START ((uint64_t)65536)

struct fixture {
	struct shm_seg seg;
	struct shm_arena *a;
};

static void setup(struct fixture *f, uint64_t capacity, uint64_t headroom)
{
	struct shm_err err = {{0}};
	int rc = shm_seg_create(&f->seg, capacity, 0, &err);
	if (rc < 0)
		T_FAIL("shm_seg_create: %d (%s)", rc, err.msg);
	rc = shm_arena_create(&f->a, &f->seg, ARENA_START, headroom, &err);
	if (rc < 0)
		T_FAIL("shm_arena_create: %d (%s)", rc, err.msg);
}

static void teardown(struct fixture *f)
{
	shm_arena_destroy(f->a);
	shm_seg_close(&f->seg);
}

static struct shm_arena_stats stats(const struct fixture *f)
{
	struct shm_arena_stats st;
	shm_arena_stats(f->a, &st);
	return st;
}

/* Checks what every allocation must satisfy and returns its usable size. */
static uint64_t check_alloc(const struct fixture *f, uint64_t size, uint64_t off)
{
	uint64_t r = shm_arena_round(size);
	if (shm_arena_size_of(f->a, off) != r)
		T_FAIL("size %" PRIu64 ": size_of %" PRIu64 " != round %" PRIu64, size,
		       shm_arena_size_of(f->a, off), r);
	if (off < ARENA_START || off % 8)
		T_FAIL("size %" PRIu64 ": bad offset %" PRIu64, size, off);
	if (r >= 16 && off % 16)
		T_FAIL("size %" PRIu64 " (class %" PRIu64 "): offset %" PRIu64 " not 16-aligned", size, r,
		       off);
	if (size > SHM_ARENA_MAX_SMALL && off % SHM_ARENA_PAGE)
		T_FAIL("large size %" PRIu64 ": offset %" PRIu64 " not page-aligned", size, off);
	/* Backed and published: a reader could follow it. */
	if (!shm_seg_ptr(&f->seg, off, r, 8))
		T_FAIL("size %" PRIu64 ": [%" PRIu64 ", +%" PRIu64 ") not inside the published size %" PRIu64,
		       size, off, r, shm_seg_published_size(&f->seg));
	return r;
}

/* Word j of object `id`: distinct across objects and positions, so any
 * overlap or stray allocator write shows up as a mismatch. */
static inline uint64_t pat(uint64_t id, uint64_t j)
{
	return (id << 24) ^ (j * 0x9E3779B97F4A7C15ull) ^ 0x5bd1e995u;
}

static void pattern_fill(const struct fixture *f, uint64_t off, uint64_t len, uint64_t id)
{
	uint64_t *w = (uint64_t *)(void *)(f->seg.base + off);
	for (uint64_t j = 0; j < len / 8; j++)
		w[j] = pat(id, j);
}

static void pattern_check(const struct fixture *f, uint64_t off, uint64_t len, uint64_t id)
{
	const uint64_t *w = (const uint64_t *)(const void *)(f->seg.base + off);
	for (uint64_t j = 0; j < len / 8; j++)
		if (w[j] != pat(id, j))
			T_FAIL("object %" PRIu64 " at %" PRIu64 " (%" PRIu64
			       " bytes) overwritten at byte %" PRIu64,
			       id, off, len, j * 8);
}

/* ---- rounding, classes, alignment ---------------------------------------- */

static void test_rounding(void)
{
	struct fixture f;
	setup(&f, 256 * MiB, 0);
	struct shm_arena_stats st = stats(&f);

	/* The class sizes, as the stats report them, sorted and distinct. */
	uint64_t cls[SHM_NCLASSES];
	unsigned ncls = 0;
	for (unsigned c = 0; c < SHM_NCLASSES; c++) {
		if (!st.classes[c].size)
			continue;
		T_ASSERT(ncls == 0 || st.classes[c].size > cls[ncls - 1]);
		T_ASSERT(st.classes[c].size % 8 == 0);
		T_ASSERT(st.classes[c].slab_pages >= 1);
		cls[ncls++] = st.classes[c].size;
	}
	T_ASSERT(ncls > 0);
	T_EQ(cls[ncls - 1], SHM_ARENA_MAX_SMALL);

	/* Every small size rounds to the smallest class that holds it. */
	unsigned c = 0;
	for (uint64_t size = 1; size <= SHM_ARENA_MAX_SMALL; size++) {
		while (cls[c] < size)
			c++;
		if (shm_arena_round(size) != cls[c])
			T_FAIL("round(%" PRIu64 ") = %" PRIu64 ", smallest class is %" PRIu64, size,
			       shm_arena_round(size), cls[c]);
	}
	static const uint64_t large[] = {SHM_ARENA_MAX_SMALL + 1, 12288, 12289, MiB, MiB + 1, 100 * MiB};
	for (size_t i = 0; i < sizeof(large) / sizeof(large[0]); i++) {
		uint64_t want = (large[i] + SHM_ARENA_PAGE - 1) / SHM_ARENA_PAGE * SHM_ARENA_PAGE;
		T_EQ(shm_arena_round(large[i]), want);
	}

	/* One live object of every small size and a few large ones at once. */
	static const uint64_t big[] = {SHM_ARENA_MAX_SMALL + 1, 12288, 12289, MiB, MiB + 1, 5 * MiB};
	enum { NBIG = sizeof(big) / sizeof(big[0]), N = SHM_ARENA_MAX_SMALL + NBIG };
	static uint64_t off[N], sz[N];
	uint64_t sum = 0, sum_small = 0;
	for (uint64_t i = 0; i < N; i++) {
		sz[i] = i < SHM_ARENA_MAX_SMALL ? i + 1 : big[i - SHM_ARENA_MAX_SMALL];
		T_OK(shm_arena_alloc(f.a, sz[i], false, &off[i]));
		uint64_t r = check_alloc(&f, sz[i], off[i]);
		pattern_fill(&f, off[i], r, i);
		sum += r;
		if (sz[i] <= SHM_ARENA_MAX_SMALL)
			sum_small += r;
	}
	st = stats(&f);
	T_EQ(st.bytes_in_use, sum);
	T_EQ(st.high_water, sum);
	T_EQ(st.large_objects, NBIG);
	/* The per-class counts account for exactly the small objects. */
	uint64_t per_class = 0;
	for (unsigned k = 0; k < SHM_NCLASSES; k++)
		per_class += st.classes[k].objects * st.classes[k].size;
	T_EQ(per_class, sum_small);
	for (uint64_t i = 0; i < N; i++) {
		pattern_check(&f, off[i], shm_arena_size_of(f.a, off[i]), i);
		shm_arena_free(f.a, off[i]);
	}
	st = stats(&f);
	T_EQ(st.bytes_in_use, 0);
	T_EQ(st.high_water, sum);
	T_EQ(st.large_objects, 0);
	for (unsigned k = 0; k < SHM_NCLASSES; k++) {
		T_EQ(st.classes[k].objects, 0);
		T_EQ(st.classes[k].slabs, 0); /* empty slabs are given back */
	}

	/* Sizes that can never be allocated. */
	uint64_t o = 0;
	T_EQ(shm_arena_alloc(f.a, 0, false, &o), -EINVAL);
	T_EQ(shm_arena_alloc(f.a, 256 * MiB + 1, false, &o), -EINVAL);
	T_EQ(shm_arena_alloc(f.a, UINT64_MAX, true, &o), -EINVAL);
	/* Not above the capacity, but more than the arena holds. */
	T_EQ(shm_arena_alloc(f.a, 256 * MiB, true, &o), -ENOSPC);
	T_EQ(stats(&f).bytes_in_use, 0);
	teardown(&f);
}

/* ---- random workload: overlap and exact statistics ----------------------- */

struct live {
	uint64_t off, size, id;
};

static uint64_t random_size(unsigned long long *rng)
{
	uint64_t r = t_rand(rng) % 100;
	if (r < 70)
		return 1 + t_rand(rng) % 256;
	if (r < 95)
		return 257 + t_rand(rng) % (SHM_ARENA_MAX_SMALL - 256);
	return SHM_ARENA_MAX_SMALL + 1 + t_rand(rng) % (128 * KiB);
}

static void test_random(unsigned long long seed)
{
	struct fixture f;
	setup(&f, 512 * MiB, 0);
	unsigned long long rng = seed;
	enum { MAX_LIVE = 6000, ALLOCS = 100000 };
	static struct live live[MAX_LIVE];
	unsigned nlive = 0;
	uint64_t sum = 0, peak = 0, next_id = 1, allocs = 0;

	while (allocs < ALLOCS) {
		/* Drift the live-set target so the arena both grows and drains. */
		unsigned target = (unsigned)((allocs / 20000) % 2 ? MAX_LIVE / 8 : MAX_LIVE - 1);
		bool do_alloc = nlive == 0 || (nlive < target && t_rand(&rng) % 3 != 0) ||
				(nlive >= target && nlive < MAX_LIVE && t_rand(&rng) % 4 == 0);
		if (do_alloc) {
			struct live *l = &live[nlive];
			l->size = random_size(&rng);
			l->id = next_id++;
			int rc = shm_arena_alloc(f.a, l->size, false, &l->off);
			if (rc < 0)
				T_FAIL("alloc #%" PRIu64 " of %" PRIu64 " bytes: %d", allocs, l->size, rc);
			uint64_t r = check_alloc(&f, l->size, l->off);
			pattern_fill(&f, l->off, r, l->id);
			sum += r;
			if (sum > peak)
				peak = sum;
			nlive++;
			allocs++;
		} else {
			unsigned i = (unsigned)(t_rand(&rng) % nlive);
			uint64_t r = shm_arena_round(live[i].size);
			T_EQ(shm_arena_size_of(f.a, live[i].off), r);
			pattern_check(&f, live[i].off, r, live[i].id);
			shm_arena_free(f.a, live[i].off);
			sum -= r;
			live[i] = live[--nlive];
		}
		struct shm_arena_stats st = stats(&f);
		if (st.bytes_in_use != sum || st.high_water != peak)
			T_FAIL("after %" PRIu64 " allocs: bytes_in_use %" PRIu64 " (want %" PRIu64
			       "), high_water %" PRIu64 " (want %" PRIu64 ")",
			       allocs, st.bytes_in_use, sum, st.high_water, peak);
	}
	while (nlive) {
		struct live *l = &live[--nlive];
		pattern_check(&f, l->off, shm_arena_round(l->size), l->id);
		shm_arena_free(f.a, l->off);
	}
	struct shm_arena_stats st = stats(&f);
	T_EQ(st.bytes_in_use, 0);
	T_EQ(st.high_water, peak);
	T_EQ(st.large_objects, 0);
	for (unsigned k = 0; k < SHM_NCLASSES; k++)
		T_EQ(st.classes[k].objects, 0);
	printf("random: %d allocs, peak %" PRIu64 " bytes in use\n", ALLOCS, peak);
	teardown(&f);
}

/* ---- empty slab pages are reused by other classes ------------------------ */

static void test_page_reuse(void)
{
	struct fixture f;
	setup(&f, 256 * MiB, 0);
	const uint64_t total = 16 * MiB;
	uint64_t n64 = total / 64, *offs = malloc(n64 * sizeof(uint64_t));
	T_ASSERT(offs != NULL);
	for (uint64_t i = 0; i < n64; i++)
		T_OK(shm_arena_alloc(f.a, 64, false, &offs[i]));
	/* A live object above the slabs, so freed slab pages cannot simply
	 * fall back to the untouched top: they must be reused as free runs. */
	uint64_t fence;
	T_OK(shm_arena_alloc(f.a, 3 * SHM_ARENA_PAGE, false, &fence));
	uint64_t top = stats(&f).pages_top;
	T_ASSERT(top >= total / SHM_ARENA_PAGE);
	for (uint64_t i = 0; i < n64; i++)
		shm_arena_free(f.a, offs[i]);
	struct shm_arena_stats st = stats(&f);
	T_EQ(st.bytes_in_use, 3 * SHM_ARENA_PAGE);
	T_EQ(st.classes[0].slabs + st.classes[1].slabs + st.classes[2].slabs + st.classes[3].slabs, 0);
	T_ASSERT(st.pages_free >= total / SHM_ARENA_PAGE);

	/* Another small class of the same total size. */
	uint64_t n1k = total / 1024;
	for (uint64_t i = 0; i < n1k; i++)
		T_OK(shm_arena_alloc(f.a, 1024, false, &offs[i]));
	st = stats(&f);
	if (st.pages_top > top)
		T_FAIL("1 KiB objects took %" PRIu64 " new pages from the top instead of reusing freed slabs",
		       st.pages_top - top);
	for (uint64_t i = 0; i < n1k; i++)
		shm_arena_free(f.a, offs[i]);

	/* Large objects of the same total size. */
	uint64_t nbig = total / (64 * KiB);
	for (uint64_t i = 0; i < nbig; i++) {
		T_OK(shm_arena_alloc(f.a, 64 * KiB, false, &offs[i]));
		check_alloc(&f, 64 * KiB, offs[i]);
	}
	st = stats(&f);
	if (st.pages_top > top)
		T_FAIL("64 KiB objects took %" PRIu64
		       " new pages from the top instead of reusing freed slabs",
		       st.pages_top - top);
	T_EQ(st.bytes_in_use, total + 3 * SHM_ARENA_PAGE);
	for (uint64_t i = 0; i < nbig; i++)
		shm_arena_free(f.a, offs[i]);
	shm_arena_free(f.a, fence);
	T_EQ(stats(&f).bytes_in_use, 0);
	free(offs);
	teardown(&f);
}

/* ---- headroom ------------------------------------------------------------ */

static void test_headroom(void)
{
	struct fixture f;
	const uint64_t H = 1 * MiB;
	setup(&f, 32 * MiB, H);
	T_EQ(stats(&f).headroom, H);

	enum { MAXN = 1024 };
	static uint64_t normal[MAXN], extra[MAXN];
	unsigned nn = 0, ne = 0;
	int rc;
	while ((rc = shm_arena_alloc(f.a, 64 * KiB, false, &normal[nn])) == 0)
		T_ASSERT(++nn < MAXN);
	T_EQ(rc, -ENOSPC);
	T_ASSERT(nn > 0);
	uint64_t o;
	T_EQ(shm_arena_alloc(f.a, 64, false, &o), -ENOSPC);

	/* The reserve is there, and it is at least the headroom asked for
	 * (less what one refused allocation could have left unused). */
	uint64_t got = 0;
	while (shm_arena_alloc(f.a, 4 * KiB, true, &extra[ne]) == 0) {
		check_alloc(&f, 4 * KiB, extra[ne]);
		got += 4 * KiB;
		T_ASSERT(++ne < MAXN);
	}
	printf("headroom: %u x 64 KiB normal, then %" PRIu64 " bytes from the headroom\n", nn, got);
	if (got + 64 * KiB < H)
		T_FAIL("only %" PRIu64 " bytes could be allocated from a %" PRIu64 "-byte headroom", got, H);

	/* Freeing gives normal allocations room again. */
	while (ne)
		shm_arena_free(f.a, extra[--ne]);
	T_EQ(shm_arena_alloc(f.a, 64 * KiB, false, &o), -ENOSPC);
	shm_arena_free(f.a, normal[--nn]);
	T_OK(shm_arena_alloc(f.a, 64 * KiB, false, &normal[nn++]));
	while (nn)
		shm_arena_free(f.a, normal[--nn]);
	T_EQ(stats(&f).bytes_in_use, 0);
	teardown(&f);
}

/* The headroom must hold when the arena is fragmented too: deletes (which
 * allocate tombstones of any small class) need it most when the segment is
 * full after churn. Fill with mixed sizes, free a random half, refill with
 * normal allocations of every size until all of them fail, then one object
 * of every class and a small large object must still fit in the headroom. */
static void test_headroom_fragmented(unsigned long long seed)
{
	struct fixture f;
	const uint64_t H = 2 * MiB;
	setup(&f, 48 * MiB, H);
	unsigned long long rng = seed ^ 0xf00d;
	enum { MAXN = 400000 };
	uint64_t *offs = malloc(MAXN * sizeof(uint64_t));
	T_ASSERT(offs != NULL);
	unsigned n = 0;
	uint64_t o;
	while (n < MAXN && shm_arena_alloc(f.a, random_size(&rng) % 4096 + 1, false, &o) == 0)
		offs[n++] = o;
	T_ASSERT(n < MAXN);
	for (unsigned i = 0; i < n;) {
		if (t_rand(&rng) % 2) {
			shm_arena_free(f.a, offs[i]);
			offs[i] = offs[--n];
		} else {
			i++;
		}
	}
	/* Refill: every size, largest first, until each is refused. */
	static const uint64_t big[] = {256 * KiB, 64 * KiB, 3 * SHM_ARENA_PAGE};
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++)
		while (n < MAXN && shm_arena_alloc(f.a, big[i], false, &o) == 0)
			offs[n++] = o;
	struct shm_arena_stats st = stats(&f);
	for (int c = SHM_NCLASSES - 1; c >= 0; c--)
		while (st.classes[c].size && n < MAXN &&
		       shm_arena_alloc(f.a, st.classes[c].size, false, &o) == 0)
			offs[n++] = o;
	T_ASSERT(n < MAXN);
	for (unsigned c = 0; c < SHM_NCLASSES; c++)
		if (st.classes[c].size)
			T_EQ(shm_arena_alloc(f.a, st.classes[c].size, false, &o), -ENOSPC);
	st = stats(&f);
	printf("fragmented: %u live, %" PRIu64 " bytes in use, %" PRIu64 " free, top %" PRIu64 " pages\n", n,
	       st.bytes_in_use, st.bytes_free, st.pages_top);

	uint64_t extra[SHM_NCLASSES + 1];
	unsigned ne = 0;
	for (unsigned c = 0; c < SHM_NCLASSES; c++) {
		if (!st.classes[c].size)
			continue;
		int rc = shm_arena_alloc(f.a, st.classes[c].size, true, &extra[ne]);
		if (rc < 0)
			T_FAIL("fragmented arena: headroom allocation of %u bytes failed (%d) with %" PRIu64
			       " bytes of headroom",
			       st.classes[c].size, rc, H);
		check_alloc(&f, st.classes[c].size, extra[ne++]);
	}
	int rc = shm_arena_alloc(f.a, SHM_ARENA_MAX_SMALL + 1, true, &extra[ne]);
	if (rc < 0)
		T_FAIL("fragmented arena: headroom allocation of a 3-page object failed (%d)", rc);
	ne++;
	while (ne)
		shm_arena_free(f.a, extra[--ne]);
	while (n)
		shm_arena_free(f.a, offs[--n]);
	T_EQ(stats(&f).bytes_in_use, 0);
	free(offs);
	teardown(&f);
}

/* ---- poison ---------------------------------------------------------------- */

/* shm.h: with poisoning on, shm_arena_free fills the object with
 * SHM_POISON_BYTE, "all but the first 8 bytes of a small object (they hold
 * the slab's free-list link)"; a large object entirely. */
static void test_poison(void)
{
	struct fixture f;
	setup(&f, 64 * MiB, 0);
	shm_arena_set_poison(f.a, true);
	struct shm_arena_stats st = stats(&f);
	uint64_t sizes[SHM_NCLASSES + 3];
	unsigned ns = 0;
	for (unsigned c = 0; c < SHM_NCLASSES; c++)
		if (st.classes[c].size)
			sizes[ns++] = st.classes[c].size;
	sizes[ns++] = SHM_ARENA_MAX_SMALL + 1;
	sizes[ns++] = 5 * SHM_ARENA_PAGE;
	sizes[ns++] = MiB;

	uint64_t keep[2 * (SHM_NCLASSES + 3)];
	unsigned nk = 0;
	for (unsigned i = 0; i < ns; i++) {
		/* Twice: once as the only object of its slab (freeing it empties
		 * the slab), once with a neighbour kept alive (the slab stays). */
		for (int pass = 0; pass < 2; pass++) {
			uint64_t off, nb = 0;
			if (pass == 1) {
				T_OK(shm_arena_alloc(f.a, sizes[i], false, &nb));
				keep[nk++] = nb;
			}
			T_OK(shm_arena_alloc(f.a, sizes[i], false, &off));
			uint64_t r = check_alloc(&f, sizes[i], off);
			memset(f.seg.base + off, 0x5a, r);
			if (nb)
				memset(f.seg.base + nb, 0x3c, shm_arena_size_of(f.a, nb));
			shm_arena_free(f.a, off);
			const uint8_t *p = f.seg.base + off;
			uint64_t from = sizes[i] <= SHM_ARENA_MAX_SMALL ? 8 : 0;
			for (uint64_t j = from; j < r; j++)
				if (p[j] != SHM_POISON_BYTE)
					T_FAIL("freed %" PRIu64 "-byte object (pass %d): byte %" PRIu64
					       " is 0x%02x, not poison",
					       r, pass, j, p[j]);
			/* Poisoning a freed object never spills into its neighbour. */
			if (nb) {
				const uint8_t *q = f.seg.base + nb;
				for (uint64_t j = 0; j < shm_arena_size_of(f.a, nb); j++)
					T_ASSERT(q[j] == 0x3c);
			}
		}
	}
	while (nk)
		shm_arena_free(f.a, keep[--nk]);
	/* Off again: a freed object keeps its bytes (past the link). */
	shm_arena_set_poison(f.a, false);
	uint64_t off;
	T_OK(shm_arena_alloc(f.a, 5 * SHM_ARENA_PAGE, false, &off));
	memset(f.seg.base + off, 0x5a, 5 * SHM_ARENA_PAGE);
	shm_arena_free(f.a, off);
	T_ASSERT(f.seg.base[off + 100] == 0x5a);
	teardown(&f);
}

/* ---- cost (printed only) ------------------------------------------------- */

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void measure(unsigned long long seed)
{
	struct fixture f;
	setup(&f, 256 * MiB, 0);
	enum { PAIRS = 1000000, BATCH = 1024, ROUNDS = 500 };
	uint64_t off;
	double t0 = now_ns();
	for (int i = 0; i < PAIRS; i++) {
		if (shm_arena_alloc(f.a, 64, false, &off) < 0)
			T_FAIL("alloc");
		shm_arena_free(f.a, off);
	}
	double hot = (now_ns() - t0) / PAIRS;

	static uint64_t offs[BATCH], sz[BATCH];
	unsigned long long rng = seed;
	for (int i = 0; i < BATCH; i++)
		sz[i] = random_size(&rng) % 2048 + 1;
	t0 = now_ns();
	for (int r = 0; r < ROUNDS; r++) {
		for (int i = 0; i < BATCH; i++)
			if (shm_arena_alloc(f.a, sz[i], false, &offs[i]) < 0)
				T_FAIL("alloc");
		for (int i = 0; i < BATCH; i++) {
			/* A fixed odd stride frees in scattered order. */
			shm_arena_free(f.a, offs[(i * 389) % BATCH]);
		}
	}
	double mixed = (now_ns() - t0) / ((double)ROUNDS * BATCH);
	printf("cost: %.1f ns per alloc/free pair (64 bytes, hot); %.1f ns per pair (1-2048 bytes, 1024 "
	       "live, "
	       "scattered frees)\n",
	       hot, mixed);
	T_EQ(stats(&f).bytes_in_use, 0);
	teardown(&f);
}

int main(void)
{
	unsigned long long seed = t_seed(20241127);
	test_rounding();
	test_random(seed);
	test_page_reuse();
	test_headroom();
	measure(seed);
	/* Last: the checks most likely to report a defect, so a failure here
	 * does not hide the results above. */
	test_poison();
	test_headroom_fragmented(seed);
	printf("arena: ok\n");
	return 0;
}
