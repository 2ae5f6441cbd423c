/* The arena: an offset allocator over the segment.
 *
 * Small objects (<= SHM_ARENA_MAX_SMALL) come from slabs: runs of pages of a
 * single size class, with a free list threaded through the freed objects and
 * a bump index for never-used ones. A slab that becomes empty goes back to
 * the page heap at once, so its pages serve any class or a large object.
 * Large objects are runs of whole pages. Free page runs are coalesced with
 * their neighbours (boundary tags in the page map) and kept in bins: exact
 * bins for 1..64 pages and power-of-two bins above; a bitmap finds the first
 * non-empty bin, so alloc and free are O(1) (a run of > 64 pages may scan a
 * few entries of its own bin before falling back to the top).
 *
 * All metadata is private to the root (readers never allocate), so a worker
 * cannot see or disturb it. The page map is reserved for the whole capacity
 * and touched only as the arena grows.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "layout.h"
#include "shm.h"

#define NONE UINT32_MAX
#define EXACT_BINS 64u
#define NBINS 128u
#define SCAN_LIMIT 16

enum { PD_NONE = 0, PD_FREE, PD_SLAB, PD_LARGE };

struct page_desc {
	uint32_t head;   /* page index of the run this page belongs to */
	uint32_t npages; /* run length (head page, and last page of free runs) */
	uint32_t prev, next;
	uint64_t free_list; /* slab: offset of the first freed object */
	uint32_t nused;     /* slab: objects handed out */
	uint32_t bump;      /* slab: objects [bump, per_slab) were never used */
	uint8_t kind;
	uint8_t cls;
	uint8_t pad[6];
};

struct size_class {
	uint32_t size;
	uint32_t slab_pages;
	uint32_t per_slab;
};

struct shm_arena {
	struct shm_seg *seg;
	uint64_t start;
	uint32_t npages_total;
	uint32_t top; /* pages [0, top) are in runs; the rest is untouched */
	struct page_desc *pm;
	size_t pm_bytes;
	uint32_t bins[NBINS];
	uint64_t binmap[NBINS / 64];
	uint32_t partial[SHM_NCLASSES];
	struct size_class cls[SHM_NCLASSES];
	uint64_t bytes_in_use, high_water, pages_free, large_objects, headroom;
	uint64_t cls_objects[SHM_NCLASSES], cls_slabs[SHM_NCLASSES];
	bool poison;
};

static unsigned ilog2(uint64_t v)
{
	return 63u - (unsigned)__builtin_clzll(v);
}

/* Classes: every multiple of 16 up to 256, then four per power of two up to
 * SHM_ARENA_MAX_SMALL. The 16-byte steps reach 256 because the commonest
 * objects sit there: a version of a short key and a value of about 64 bytes
 * is 144 bytes, which four-per-power classes rounded up to 160. */
#define STEP16_MAX 256u
#define STEP16_CLASSES (STEP16_MAX / 16)

static unsigned class_of(uint64_t size)
{
	if (size <= STEP16_MAX)
		return size <= 16 ? 0 : (unsigned)((size + 15) / 16 - 1);
	unsigned k = ilog2(size - 1);
	return STEP16_CLASSES + (k - 8) * 4 + (unsigned)((size - 1 - ((uint64_t)1 << k)) >> (k - 2));
}

static uint32_t class_size(unsigned c)
{
	if (c < STEP16_CLASSES)
		return (c + 1) * 16;
	unsigned k = 8 + (c - STEP16_CLASSES) / 4, sub = (c - STEP16_CLASSES) % 4;
	return (uint32_t)(((uint64_t)1 << k) + (uint64_t)(sub + 1) * ((uint64_t)1 << (k - 2)));
}

uint64_t shm_arena_round(uint64_t size)
{
	if (size == 0)
		size = 1;
	if (size <= SHM_ARENA_MAX_SMALL)
		return class_size(class_of(size));
	return (size + SHM_ARENA_PAGE - 1) / SHM_ARENA_PAGE * SHM_ARENA_PAGE;
}

static unsigned bin_of(uint32_t npages)
{
	if (npages <= EXACT_BINS)
		return npages - 1;
	return EXACT_BINS + ilog2(npages) - 6;
}

static uint64_t page_off(const struct shm_arena *a, uint32_t page)
{
	return a->start + (uint64_t)page * SHM_ARENA_PAGE;
}

static void bin_insert(struct shm_arena *a, uint32_t head)
{
	struct page_desc *pd = &a->pm[head];
	unsigned b = bin_of(pd->npages);
	pd->prev = NONE;
	pd->next = a->bins[b];
	if (pd->next != NONE)
		a->pm[pd->next].prev = head;
	a->bins[b] = head;
	a->binmap[b / 64] |= (uint64_t)1 << (b % 64);
}

static void bin_remove(struct shm_arena *a, uint32_t head)
{
	struct page_desc *pd = &a->pm[head];
	unsigned b = bin_of(pd->npages);
	if (pd->prev != NONE)
		a->pm[pd->prev].next = pd->next;
	else
		a->bins[b] = pd->next;
	if (pd->next != NONE)
		a->pm[pd->next].prev = pd->prev;
	if (a->bins[b] == NONE)
		a->binmap[b / 64] &= ~((uint64_t)1 << (b % 64));
}

/* First non-empty bin >= b, or NBINS. */
static unsigned bin_find(const struct shm_arena *a, unsigned b)
{
	for (unsigned w = b / 64; w < NBINS / 64; w++) {
		uint64_t m = a->binmap[w];
		if (w == b / 64)
			m &= ~(uint64_t)0 << (b % 64);
		if (m)
			return w * 64 + (unsigned)__builtin_ctzll(m);
	}
	return NBINS;
}

static void mark_free(struct shm_arena *a, uint32_t head, uint32_t n)
{
	struct page_desc *first = &a->pm[head], *last = &a->pm[head + n - 1];
	first->head = head;
	first->npages = n;
	first->kind = PD_FREE;
	last->head = head;
	last->npages = n;
	last->kind = PD_FREE;
	bin_insert(a, head);
}

static void mark_used(struct shm_arena *a, uint32_t head, uint32_t n, uint8_t kind, bool all_pages)
{
	uint32_t end = all_pages ? n : 1;
	for (uint32_t i = 0; i < end; i++) {
		a->pm[head + i].head = head;
		a->pm[head + i].kind = kind;
	}
	a->pm[head + n - 1].head = head;
	a->pm[head + n - 1].kind = kind;
	a->pm[head].npages = n;
}

int shm_arena_grow_ahead(struct shm_arena *a, uint64_t margin, uint64_t step)
{
	uint64_t top = page_off(a, a->top), size = a->seg->size;
	if (size >= a->seg->capacity || (size > top && size - top >= margin))
		return 0;
	uint64_t want = size + step > a->seg->capacity ? a->seg->capacity : size + step;
	return shm_seg_grow(a->seg, want, NULL) < 0 ? -ENOSPC : 1;
}

static int take_from_top(struct shm_arena *a, uint32_t n, uint32_t *head)
{
	if (n > a->npages_total - a->top)
		return -ENOSPC;
	uint64_t end = page_off(a, a->top + n);
	if (end > a->seg->size) {
		/* Grow in steps, so growth (ftruncate + populate) is rare. */
		uint64_t want = a->seg->size + a->seg->size / 8;
		if (want < a->seg->size + ((uint64_t)1 << 20))
			want = a->seg->size + ((uint64_t)1 << 20);
		if (want < end)
			want = end;
		if (want > a->seg->capacity)
			want = a->seg->capacity;
		if (shm_seg_grow(a->seg, want, NULL) < 0 && shm_seg_grow(a->seg, end, NULL) < 0)
			return -ENOSPC;
	}
	*head = a->top;
	a->top += n;
	return 0;
}

static int run_alloc(struct shm_arena *a, uint32_t n, uint8_t kind, bool all_pages, bool use_headroom,
		     uint32_t *out)
{
	/* The headroom is kept in pages, not bytes: free slots scattered over
	 * slabs cannot serve a tombstone of another class. */
	uint64_t avail = a->pages_free + (a->npages_total - a->top);
	if (avail < n || (!use_headroom && avail - n < a->headroom / SHM_ARENA_PAGE))
		return -ENOSPC;
	uint32_t head = NONE;
	unsigned want = bin_of(n);
	unsigned b = bin_find(a, n <= EXACT_BINS ? want : want + 1);
	if (b < NBINS) {
		head = a->bins[b];
	} else if (n > EXACT_BINS) {
		uint32_t h = a->bins[want];
		for (int i = 0; h != NONE && i < SCAN_LIMIT; i++, h = a->pm[h].next)
			if (a->pm[h].npages >= n) {
				head = h;
				break;
			}
	}
	if (head != NONE) {
		uint32_t have = a->pm[head].npages;
		bin_remove(a, head);
		a->pages_free -= have;
		if (have > n) {
			mark_free(a, head + n, have - n);
			a->pages_free += have - n;
		}
	} else {
		int rc = take_from_top(a, n, &head);
		if (rc < 0)
			return rc;
	}
	mark_used(a, head, n, kind, all_pages);
	*out = head;
	return 0;
}

static void run_free(struct shm_arena *a, uint32_t head, uint32_t n)
{
	if (head > 0 && a->pm[head - 1].kind == PD_FREE) {
		uint32_t ph = a->pm[head - 1].head;
		uint32_t pn = a->pm[ph].npages;
		bin_remove(a, ph);
		a->pages_free -= pn;
		head = ph;
		n += pn;
	}
	if (head + n < a->top && a->pm[head + n].kind == PD_FREE) {
		uint32_t nh = head + n;
		uint32_t nn = a->pm[nh].npages;
		bin_remove(a, nh);
		a->pages_free -= nn;
		n += nn;
	}
	for (uint32_t i = 0; i < n; i += n - 1 ? n - 1 : 1) {
		a->pm[head + i].kind = PD_NONE;
		if (n == 1)
			break;
	}
	if (head + n == a->top) {
		/* Back to the untouched top: keeps the extent low after a burst. */
		a->top = head;
		return;
	}
	mark_free(a, head, n);
	a->pages_free += n;
}

int shm_arena_create(struct shm_arena **out, struct shm_seg *seg, uint64_t start, size_t headroom,
		     struct shm_err *err)
{
	start = (start + SHM_ARENA_PAGE - 1) / SHM_ARENA_PAGE * SHM_ARENA_PAGE;
	if (start < SHM_HDR_SIZE || start >= seg->capacity) {
		if (err)
			strcpy(err->msg, "arena start outside the segment");
		return -EINVAL;
	}
	uint64_t npages = (seg->capacity - start) / SHM_ARENA_PAGE;
	if (npages >= NONE) {
		if (err)
			strcpy(err->msg, "capacity too large for the arena's page map");
		return -EINVAL;
	}
	struct shm_arena *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->pm_bytes = (size_t)npages * sizeof(struct page_desc);
	a->pm = mmap(NULL, a->pm_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		     -1, 0);
	if (a->pm == MAP_FAILED) {
		if (err)
			strcpy(err->msg, "reserving the arena's page map failed: lower SHMSYNC_CAPACITY");
		free(a);
		return -ENOMEM;
	}
	a->seg = seg;
	a->start = start;
	a->npages_total = (uint32_t)npages;
	a->headroom = headroom;
	for (unsigned i = 0; i < NBINS; i++)
		a->bins[i] = NONE;
	for (unsigned c = 0; c < SHM_NCLASSES; c++) {
		uint32_t size = class_size(c), p;
		for (p = 1; p < 16; p++) {
			uint32_t bytes = p * SHM_ARENA_PAGE;
			if (bytes / size >= 8 && bytes % size <= bytes / 16)
				break;
		}
		a->cls[c] = (struct size_class){size, p, p * SHM_ARENA_PAGE / size};
		a->partial[c] = NONE;
	}
	*out = a;
	return 0;
}

void shm_arena_destroy(struct shm_arena *a)
{
	if (!a)
		return;
	munmap(a->pm, a->pm_bytes);
	free(a);
}

void shm_arena_set_poison(struct shm_arena *a, bool on)
{
	a->poison = on;
}

static void partial_push(struct shm_arena *a, unsigned c, uint32_t head)
{
	struct page_desc *pd = &a->pm[head];
	pd->prev = NONE;
	pd->next = a->partial[c];
	if (pd->next != NONE)
		a->pm[pd->next].prev = head;
	a->partial[c] = head;
}

static void partial_remove(struct shm_arena *a, unsigned c, uint32_t head)
{
	struct page_desc *pd = &a->pm[head];
	if (pd->prev != NONE)
		a->pm[pd->prev].next = pd->next;
	else
		a->partial[c] = pd->next;
	if (pd->next != NONE)
		a->pm[pd->next].prev = pd->prev;
}

int shm_arena_alloc(struct shm_arena *a, uint64_t size, bool use_headroom, uint64_t *off)
{
	if (size == 0 || size > a->seg->capacity)
		return -EINVAL;
	uint64_t rounded = shm_arena_round(size);
	if (size > SHM_ARENA_MAX_SMALL) {
		uint32_t head;
		int rc = run_alloc(a, (uint32_t)(rounded / SHM_ARENA_PAGE), PD_LARGE, false, use_headroom,
				   &head);
		if (rc < 0)
			return rc;
		a->large_objects++;
		*off = page_off(a, head);
	} else {
		unsigned c = class_of(size);
		struct size_class *sc = &a->cls[c];
		uint32_t head = a->partial[c];
		if (head == NONE) {
			int rc = run_alloc(a, sc->slab_pages, PD_SLAB, true, use_headroom, &head);
			if (rc < 0)
				return rc;
			struct page_desc *pd = &a->pm[head];
			pd->cls = (uint8_t)c;
			pd->nused = 0;
			pd->bump = 0;
			pd->free_list = 0;
			a->cls_slabs[c]++;
			partial_push(a, c, head);
		}
		struct page_desc *pd = &a->pm[head];
		uint64_t o;
		if (pd->free_list) {
			o = pd->free_list;
			memcpy(&pd->free_list, a->seg->base + o, sizeof(uint64_t));
		} else {
			o = page_off(a, head) + (uint64_t)pd->bump * sc->size;
			pd->bump++;
		}
		if (++pd->nused == sc->per_slab)
			partial_remove(a, c, head);
		a->cls_objects[c]++;
		*off = o;
	}
	a->bytes_in_use += rounded;
	if (a->bytes_in_use > a->high_water)
		a->high_water = a->bytes_in_use;
	return 0;
}

void shm_arena_free(struct shm_arena *a, uint64_t off)
{
	uint32_t page = (uint32_t)((off - a->start) / SHM_ARENA_PAGE);
	uint32_t head = a->pm[page].head;
	struct page_desc *pd = &a->pm[head];
	if (pd->kind == PD_LARGE) {
		uint32_t n = pd->npages;
		if (a->poison)
			memset(a->seg->base + off, SHM_POISON_BYTE, (size_t)n * SHM_ARENA_PAGE);
		a->bytes_in_use -= (uint64_t)n * SHM_ARENA_PAGE;
		a->large_objects--;
		run_free(a, head, n);
		return;
	}
	unsigned c = pd->cls;
	struct size_class *sc = &a->cls[c];
	if (a->poison)
		memset(a->seg->base + off + 8, SHM_POISON_BYTE, sc->size - 8);
	memcpy(a->seg->base + off, &pd->free_list, sizeof(uint64_t));
	pd->free_list = off;
	if (pd->nused == sc->per_slab)
		partial_push(a, c, head);
	pd->nused--;
	a->bytes_in_use -= sc->size;
	a->cls_objects[c]--;
	if (pd->nused == 0) {
		partial_remove(a, c, head);
		a->cls_slabs[c]--;
		run_free(a, head, sc->slab_pages);
	}
}

uint64_t shm_arena_size_of(const struct shm_arena *a, uint64_t off)
{
	uint32_t page = (uint32_t)((off - a->start) / SHM_ARENA_PAGE);
	const struct page_desc *pd = &a->pm[a->pm[page].head];
	if (pd->kind == PD_LARGE)
		return (uint64_t)pd->npages * SHM_ARENA_PAGE;
	return a->cls[pd->cls].size;
}

void shm_arena_stats(const struct shm_arena *a, struct shm_arena_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->bytes_in_use = a->bytes_in_use;
	st->high_water = a->high_water;
	st->pages_top = a->top;
	st->pages_free = a->pages_free;
	st->large_objects = a->large_objects;
	st->headroom = a->headroom;
	uint64_t slab_free = 0;
	for (unsigned c = 0; c < SHM_NCLASSES; c++) {
		st->classes[c].size = a->cls[c].size;
		st->classes[c].slab_pages = a->cls[c].slab_pages;
		st->classes[c].objects = a->cls_objects[c];
		st->classes[c].slabs = a->cls_slabs[c];
		slab_free += (a->cls_slabs[c] * a->cls[c].per_slab - a->cls_objects[c]) * a->cls[c].size;
	}
	st->bytes_free = slab_free + a->pages_free * SHM_ARENA_PAGE;
}

uint64_t shm_arena_top(const struct shm_arena *a)
{
	return page_off(a, a->top);
}

uint64_t shm_arena_bytes_in_use(const struct shm_arena *a)
{
	return a->bytes_in_use;
}
