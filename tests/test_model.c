/* Model test: a long random sequence of group commits checked after every
 * commit against a simple reference model.
 *
 * What it proves, for random workloads over a small name space (nested
 * directories /a/ /a/b/ /a/b/c/ /ab/ /b/ /b/x/ /c/ and 20 keys, so operations
 * collide with existing state all the time):
 * - every batch is accepted or rejected exactly as the model decides, with
 *   the same errno and the same failing op; a rejected batch leaves no trace
 *   and the other batches of its group are unaffected; a group with nothing
 *   accepted publishes nothing;
 * - the full state at the new tick (dirs_iter order, dir_exists, dir_iter,
 *   get, version ticks, live counts in stats) equals the model;
 * - a snapshot at a random older retained tick (the last 64, pinned through
 *   shm_reclaim's min_read_epoch) still equals that tick's model copy, while
 *   everything older is reclaimed as the run goes;
 * - the coalesced diff between a random retained tick C and T, applied to the
 *   model at C, gives the model at T exactly; each key and directory appears at
 *   most once (RMDIR then MKDIR of one name excepted); PUT values and ticks are
 *   those of T; each change carries the tick of its last change, in (C, T],
 *   and the list is in non-decreasing order of those ticks; nothing covered
 *   by a later RMDIR is listed.
 *
 * Usage: test_model [ticks]   (default 20000; SHMSYNC_TEST_SEED replays)
 */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "shm.h"
#include "testutil.h"

/* ---- name space ------------------------------------------------------- */

#define ND 7
/* In byte order: the order dirs_iter must list them in. */
static const char *const DIRS[ND] = {"/a/", "/a/b/", "/a/b/c/", "/ab/", "/b/", "/b/x/", "/c/"};
#define NK 20
static char key_bytes[NK][320];
static size_t key_len[NK];

static void init_keys(void)
{
	for (int i = 0; i < 17; i++) {
		snprintf(key_bytes[i], sizeof key_bytes[i], "k%d", i);
		key_len[i] = strlen(key_bytes[i]);
	}
	key_bytes[17][0] = 0; /* a single NUL byte */
	key_len[17] = 1;
	memcpy(key_bytes[18], "k\0x", 3);
	key_len[18] = 3;
	for (int j = 0; j < 300; j++)
		key_bytes[19][j] = (char)('a' + j % 26);
	key_len[19] = 300;
}

static int key_index(const void *k, size_t kn)
{
	for (int i = 0; i < NK; i++)
		if (key_len[i] == kn && memcmp(key_bytes[i], k, kn) == 0)
			return i;
	return -1;
}

static int dir_index(const char *d, size_t n)
{
	for (int i = 0; i < ND; i++)
		if (strlen(DIRS[i]) == n && memcmp(DIRS[i], d, n) == 0)
			return i;
	return -1;
}

static bool under(int d, int prefix)
{
	return strncmp(DIRS[d], DIRS[prefix], strlen(DIRS[prefix])) == 0;
}

/* ---- the reference model ---------------------------------------------- */

struct blob {
	long refs;
	size_t len;
	uint8_t data[];
};

static struct blob *blob_new(const void *p, size_t n)
{
	struct blob *b = malloc(sizeof *b + n + 1);
	T_ASSERT(b);
	b->refs = 1;
	b->len = n;
	if (n)
		memcpy(b->data, p, n);
	return b;
}

static void blob_put(struct blob *b)
{
	if (b && --b->refs == 0)
		free(b);
}

struct ment {
	struct blob *v; /* NULL: absent */
	uint64_t vt;    /* tick of the current version */
	uint64_t ct;    /* tick of the last put or del of this key in this incarnation */
};

struct mstate {
	uint64_t tick;
	bool dir[ND];
	uint64_t mk[ND];  /* creation tick of the current incarnation */
	uint64_t rmt[ND]; /* tick of the last successful rmdir naming DIRS[i] */
	struct ment e[ND][NK];
};

static void ms_copy(struct mstate *dst, const struct mstate *src)
{
	*dst = *src;
	for (int d = 0; d < ND; d++)
		for (int k = 0; k < NK; k++)
			if (dst->e[d][k].v)
				dst->e[d][k].v->refs++;
}

static void ms_release(struct mstate *s)
{
	for (int d = 0; d < ND; d++)
		for (int k = 0; k < NK; k++) {
			blob_put(s->e[d][k].v);
			s->e[d][k].v = NULL;
		}
}

static void ms_set(struct mstate *s, int d, int k, struct blob *b, uint64_t t)
{
	blob_put(s->e[d][k].v);
	s->e[d][k].v = b;
	s->e[d][k].vt = b ? t : 0;
	s->e[d][k].ct = t;
}

static void ms_clear_dir(struct mstate *s, int d)
{
	for (int k = 0; k < NK; k++) {
		blob_put(s->e[d][k].v);
		memset(&s->e[d][k], 0, sizeof s->e[d][k]);
	}
}

static void le64(uint8_t out[8], int64_t x)
{
	uint64_t u = (uint64_t)x;
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(u >> (8 * i));
}

static int64_t from_le64(const uint8_t in[8])
{
	uint64_t u = 0;
	for (int i = 0; i < 8; i++)
		u |= (uint64_t)in[i] << (8 * i);
	return (int64_t)u;
}

/* One op as the reference understands it. kind as shm_op; d/k index the name
 * space; invalid ops carry the errno shm_op_check must give. */
struct mop {
	struct shm_op op;
	int d, k;
	int invalid; /* 0 or the expected negative errno */
};

/* Applies op to s (a scratch copy) as part of tick t; returns 0 or errno. */
static int model_apply(struct mstate *s, const struct mop *m, uint64_t t)
{
	const struct shm_op *o = &m->op;
	if (m->invalid)
		return m->invalid;
	int d = m->d, k = m->k;
	struct ment *e = (o->kind == SHM_OP_MKDIR || o->kind == SHM_OP_RMDIR) ? NULL : &s->e[d][k];
	switch (o->kind) {
	case SHM_OP_PUT:
		if (!s->dir[d])
			return -ENOENT;
		ms_set(s, d, k, blob_new(o->value, o->value_len), t);
		return 0;
	case SHM_OP_PUT_IF_ABSENT:
		if (!s->dir[d])
			return -ENOENT;
		if (e->v)
			return -EEXIST;
		ms_set(s, d, k, blob_new(o->value, o->value_len), t);
		return 0;
	case SHM_OP_PUT_IF_TICK:
		if (!s->dir[d])
			return -ENOENT;
		if ((e->v ? e->vt : 0) != o->expected_tick)
			return -ECANCELED;
		ms_set(s, d, k, blob_new(o->value, o->value_len), t);
		return 0;
	case SHM_OP_ADD: {
		if (!s->dir[d])
			return -ENOENT;
		int64_t x = 0, r;
		if (e->v) {
			if (e->v->len != 8)
				return -EINVAL;
			x = from_le64(e->v->data);
		}
		if (__builtin_add_overflow(x, o->delta, &r))
			return -ERANGE;
		uint8_t b[8];
		le64(b, r);
		ms_set(s, d, k, blob_new(b, 8), t);
		return 0;
	}
	case SHM_OP_DEL:
		if (!s->dir[d])
			return -ENOENT;
		if (!e->v)
			return -ENOENT;
		ms_set(s, d, k, NULL, t);
		return 0;
	case SHM_OP_MKDIR:
		if (s->dir[d])
			return -EEXIST;
		s->dir[d] = true;
		s->mk[d] = t;
		ms_clear_dir(s, d);
		return 0;
	case SHM_OP_RMDIR: {
		bool any = false;
		for (int i = 0; i < ND; i++)
			if (s->dir[i] && under(i, d)) {
				any = true;
				s->dir[i] = false;
				ms_clear_dir(s, i);
			}
		if (!any)
			return -ENOENT;
		s->rmt[d] = t;
		return 0;
	}
	}
	T_FAIL("model: bad kind %d", o->kind);
}

/* ---- random workload -------------------------------------------------- */

static unsigned long long rng;

static uint64_t rnd(uint64_t n)
{
	return t_rand(&rng) % n;
}

static uint8_t *huge; /* SHMSYNC_MAX_VALUE + 1 bytes, for EMSGSIZE */
static char long_key[SHMSYNC_MAX_KEY + 1];

/* Value storage for the ops of one group. */
#define MAXB 4
#define MAXOPS 6
static uint8_t valbuf[MAXB][MAXOPS][20000];

static size_t value_size(void)
{
	uint64_t r = rnd(100);
	if (r < 2)
		return 8193 + rnd(20000 - 8193);
	if (r < 10)
		return 8;
	return rnd(3001);
}

static int pick_dir(const struct mstate *s, bool existing_bias)
{
	if (existing_bias && rnd(100) < 93) {
		int ex[ND], n = 0;
		for (int d = 0; d < ND; d++)
			if (s->dir[d])
				ex[n++] = d;
		if (n)
			return ex[rnd((uint64_t)n)];
	}
	return (int)rnd(ND);
}

/* bias: 1 prefers a present key, -1 an absent one, 0 none. Biases keep
 * most batches valid while collisions with the state stay frequent. */
static int pick_key(const struct mstate *s, int d, int bias)
{
	if (bias && rnd(100) < 88) {
		int pick[NK], n = 0;
		for (int k = 0; k < NK; k++)
			if ((s->e[d][k].v != NULL) == (bias > 0))
				pick[n++] = k;
		if (n)
			return pick[rnd((uint64_t)n)];
	}
	return (int)rnd(NK);
}

/* A directory for mkdir (want_absent) or rmdir, biased the same way. */
static int pick_dir_for(const struct mstate *s, bool want_absent)
{
	if (rnd(100) < 75) {
		int pick[ND], n = 0;
		for (int d = 0; d < ND; d++)
			if (s->dir[d] != want_absent)
				pick[n++] = d;
		if (n)
			return pick[rnd((uint64_t)n)];
	}
	return (int)rnd(ND);
}

static void set_dir(struct mop *m, int d)
{
	m->d = d;
	m->op.dir = DIRS[d];
	m->op.dir_len = strlen(DIRS[d]);
}

static void set_key(struct mop *m, int k)
{
	m->k = k;
	m->op.key = key_bytes[k];
	m->op.key_len = key_len[k];
}

static void set_value(struct mop *m, uint8_t *buf)
{
	size_t n = value_size();
	for (size_t i = 0; i < n; i += 8) {
		uint64_t x = t_rand(&rng);
		memcpy(buf + i, &x, n - i < 8 ? n - i : 8);
	}
	m->op.value = buf;
	m->op.value_len = n;
}

/* An invalid op and the errno shm_op_check gives it. */
static void make_invalid(struct mop *m, uint8_t *buf)
{
	memset(m, 0, sizeof *m);
	set_dir(m, (int)rnd(ND));
	set_key(m, (int)rnd(NK));
	m->op.kind = SHM_OP_PUT;
	m->op.value = buf;
	switch (rnd(6)) {
	case 0:
		m->op.key_len = 0;
		m->invalid = -EINVAL;
		break;
	case 1:
		m->op.key = long_key;
		m->op.key_len = SHMSYNC_MAX_KEY + 1;
		m->invalid = -ENAMETOOLONG;
		break;
	case 2:
		m->op.dir = "a/";
		m->op.dir_len = 2;
		m->invalid = -EINVAL;
		break;
	case 3:
		m->op.kind = SHM_OP_MKDIR;
		m->op.dir = "/a//";
		m->op.dir_len = 4;
		m->invalid = -EINVAL;
		break;
	case 4:
		m->op.kind = 99;
		m->invalid = -EINVAL;
		break;
	default:
		m->op.value = huge;
		m->op.value_len = SHMSYNC_MAX_VALUE + 1;
		m->invalid = -EMSGSIZE;
		break;
	}
	T_EQ(shm_op_check(&m->op), m->invalid);
}

static void make_op(struct mop *m, const struct mstate *s, uint64_t T, uint8_t *buf)
{
	memset(m, 0, sizeof *m);
	uint64_t r = rnd(100);
	if (r < 32) {
		m->op.kind = SHM_OP_PUT;
	} else if (r < 40) {
		m->op.kind = SHM_OP_PUT_IF_ABSENT;
	} else if (r < 50) {
		m->op.kind = SHM_OP_PUT_IF_TICK;
	} else if (r < 58) {
		m->op.kind = SHM_OP_ADD;
	} else if (r < 72) {
		m->op.kind = SHM_OP_DEL;
	} else if (r < 88) {
		m->op.kind = SHM_OP_MKDIR;
		set_dir(m, pick_dir_for(s, true));
		return;
	} else {
		m->op.kind = SHM_OP_RMDIR;
		set_dir(m, pick_dir_for(s, false));
		return;
	}
	int d = pick_dir(s, true);
	set_dir(m, d);
	int bias = m->op.kind == SHM_OP_DEL || m->op.kind == SHM_OP_PUT_IF_TICK ? 1
		   : m->op.kind == SHM_OP_PUT_IF_ABSENT                         ? -1
										: 0;
	int k = pick_key(s, d, bias);
	set_key(m, k);
	const struct ment *e = &s->e[d][k];
	switch (m->op.kind) {
	case SHM_OP_PUT_IF_TICK: {
		uint64_t cur = (s->dir[d] && e->v) ? e->vt : 0;
		switch (rnd(6)) {
		case 0:
		case 1:
		case 2:
			m->op.expected_tick = cur;
			break;
		case 3:
			m->op.expected_tick = cur ? 0 : T;
			break;
		case 4:
			m->op.expected_tick = cur + 1;
			break;
		default:
			m->op.expected_tick = cur > 1 ? cur - 1 : T + 1;
			break;
		}
	}
		/* fall through */
	case SHM_OP_PUT:
	case SHM_OP_PUT_IF_ABSENT:
		set_value(m, buf);
		break;
	case SHM_OP_ADD:
		switch (rnd(40)) {
		case 0:
			m->op.delta = INT64_MAX;
			break;
		case 1:
			m->op.delta = INT64_MIN;
			break;
		default:
			m->op.delta = (int64_t)rnd(2001) - 1000;
			break;
		}
		break;
	}
}

/* ---- comparing the implementation with the model ---------------------- */

static struct shm_root *root;
static struct shm_seg *seg;

struct dirlist {
	int idx[ND + 1];
	size_t n;
};

static int collect_dir(const char *dir, size_t len, void *arg)
{
	struct dirlist *l = arg;
	int d = dir_index(dir, len);
	if (d < 0)
		T_FAIL("dirs_iter: unknown directory %.*s", (int)len, dir);
	T_ASSERT(l->n < ND);
	l->idx[l->n++] = d;
	return 0;
}

struct iterctx {
	const struct mstate *m;
	int d;
	bool seen[NK];
	size_t n;
	uint64_t epoch;
};

static int check_key(const void *k, size_t kn, const struct shm_value *v, void *arg)
{
	struct iterctx *c = arg;
	int ki = key_index(k, kn);
	if (ki < 0)
		T_FAIL("dir_iter %s at %" PRIu64 ": unknown key of %zu bytes", DIRS[c->d], c->epoch, kn);
	if (c->seen[ki])
		T_FAIL("dir_iter %s at %" PRIu64 ": key %d listed twice", DIRS[c->d], c->epoch, ki);
	c->seen[ki] = true;
	c->n++;
	const struct ment *e = &c->m->e[c->d][ki];
	if (!e->v)
		T_FAIL("dir_iter %s at %" PRIu64 ": key %d listed but absent in the model", DIRS[c->d],
		       c->epoch, ki);
	if (v->len != e->v->len || (v->len && memcmp(v->data, e->v->data, v->len) != 0))
		T_FAIL("dir_iter %s at %" PRIu64 ": key %d has a wrong value", DIRS[c->d], c->epoch, ki);
	if (v->tick != e->vt)
		T_FAIL("dir_iter %s at %" PRIu64 ": key %d tick %" PRIu64 ", model %" PRIu64, DIRS[c->d],
		       c->epoch, ki, v->tick, e->vt);
	return 0;
}

static void compare_state(uint64_t epoch, const struct mstate *m, bool full)
{
	T_EQ(m->tick, epoch);
	struct dirlist l = {.n = 0};
	T_EQ(shm_dirs_iter(seg, epoch, "/", 1, collect_dir, &l), 0);
	size_t j = 0;
	for (int d = 0; d < ND; d++)
		if (m->dir[d]) {
			if (j >= l.n || l.idx[j] != d)
				T_FAIL("dirs_iter at %" PRIu64 ": expected %s at position %zu", epoch,
				       DIRS[d], j);
			j++;
		}
	if (j != l.n)
		T_FAIL("dirs_iter at %" PRIu64 ": %zu dirs, model has %zu", epoch, l.n, j);
	/* A prefix that is not a directory name. */
	static const char *const prefixes[] = {"/a", "/a/", "/a/b/", "/b", "/ab/", "/c/", "/a/b/c/d"};
	const char *p = prefixes[rnd(sizeof prefixes / sizeof prefixes[0])];
	struct dirlist lp = {.n = 0};
	T_EQ(shm_dirs_iter(seg, epoch, p, strlen(p), collect_dir, &lp), 0);
	j = 0;
	for (int d = 0; d < ND; d++)
		if (m->dir[d] && strncmp(DIRS[d], p, strlen(p)) == 0) {
			if (j >= lp.n || lp.idx[j] != d)
				T_FAIL("dirs_iter(%s) at %" PRIu64 ": expected %s at %zu", p, epoch, DIRS[d],
				       j);
			j++;
		}
	T_EQ(lp.n, j);

	for (int d = 0; d < ND; d++) {
		int ex = shm_dir_exists(seg, epoch, DIRS[d], strlen(DIRS[d]));
		if (ex != (int)m->dir[d])
			T_FAIL("dir_exists(%s) at %" PRIu64 " = %d, model %d", DIRS[d], epoch, ex, m->dir[d]);
		struct iterctx c = {.m = m, .d = d, .epoch = epoch};
		int rc = shm_dir_iter(seg, epoch, DIRS[d], strlen(DIRS[d]), check_key, &c);
		if (!m->dir[d]) {
			if (rc != -ENOENT)
				T_FAIL("dir_iter(%s) at %" PRIu64 ": %d for a missing dir", DIRS[d], epoch,
				       rc);
		} else {
			T_EQ(rc, 0);
			for (int k = 0; k < NK; k++)
				if (c.seen[k] != (m->e[d][k].v != NULL))
					T_FAIL("dir_iter(%s) at %" PRIu64 ": key %d %s", DIRS[d], epoch, k,
					       c.seen[k] ? "extra" : "missing");
		}
		if (!full)
			continue;
		for (int k = 0; k < NK; k++) {
			struct shm_value v;
			rc = shm_get(seg, epoch, DIRS[d], strlen(DIRS[d]), key_bytes[k], key_len[k], &v);
			const struct ment *e = &m->e[d][k];
			if (!m->dir[d] || !e->v) {
				if (rc != -ENOENT)
					T_FAIL("get(%s, %d) at %" PRIu64 ": %d, model: absent", DIRS[d], k,
					       epoch, rc);
				continue;
			}
			if (rc != 0)
				T_FAIL("get(%s, %d) at %" PRIu64 ": %d, model: present", DIRS[d], k, epoch,
				       rc);
			if (v.len != e->v->len || (v.len && memcmp(v.data, e->v->data, v.len) != 0))
				T_FAIL("get(%s, %d) at %" PRIu64 ": wrong value (%zu bytes, model %zu)",
				       DIRS[d], k, epoch, v.len, e->v->len);
			if (v.len)
				T_EQ((uintptr_t)v.data % 8, 0);
			if (v.tick != e->vt)
				T_FAIL("get(%s, %d) at %" PRIu64 ": tick %" PRIu64 ", model %" PRIu64,
				       DIRS[d], k, epoch, v.tick, e->vt);
		}
	}
}

/* ---- diff check ------------------------------------------------------- */

struct diffctx {
	const struct mstate *to; /* model at T */
	struct mstate a;         /* model at C with the changes applied so far */
	uint64_t from, T, last_tick;
	bool seen_key[ND][NK], seen_mk[ND], seen_rm[ND];
	/* directories that got a PUT/DEL/MKDIR so far, for the cover rule */
	bool touched[ND];
	size_t n;
	unsigned long redundant_rmdirs;
};

static int apply_change(const struct shm_change *c, void *arg)
{
	struct diffctx *x = arg;
	x->n++;
	if (c->kind == SHM_CHANGE_RESET)
		T_FAIL("diff(%" PRIu64 ", %" PRIu64 "): unexpected RESET", x->from, x->T);
	if (c->tick <= x->from || c->tick > x->T)
		T_FAIL("diff(%" PRIu64 ", %" PRIu64 "): change %zu has tick %" PRIu64, x->from, x->T, x->n,
		       c->tick);
	if (c->tick < x->last_tick)
		T_FAIL("diff(%" PRIu64 ", %" PRIu64 "): change %zu (kind %d, %s) has tick %" PRIu64
		       " after one of tick %" PRIu64,
		       x->from, x->T, x->n, c->kind, c->dir, c->tick, x->last_tick);
	x->last_tick = c->tick;
	int d = dir_index(c->dir, c->dir_len);
	if (d < 0)
		T_FAIL("diff: unknown directory %.*s", (int)c->dir_len, c->dir);
	switch (c->kind) {
	case SHM_CHANGE_PUT:
	case SHM_CHANGE_DEL: {
		int k = key_index(c->key, c->key_len);
		if (k < 0)
			T_FAIL("diff: unknown key");
		if (x->seen_key[d][k])
			T_FAIL("diff(%" PRIu64 ", %" PRIu64 "): key %s %d listed twice", x->from, x->T,
			       DIRS[d], k);
		x->seen_key[d][k] = true;
		x->touched[d] = true;
		if (!x->a.dir[d])
			T_FAIL("diff(%" PRIu64 ", %" PRIu64 "): %s of %s %d while the directory is absent",
			       x->from, x->T, c->kind == SHM_CHANGE_PUT ? "PUT" : "DEL", DIRS[d], k);
		const struct ment *e = &x->to->e[d][k];
		if (c->tick != e->ct)
			T_FAIL("diff(%" PRIu64 ", %" PRIu64 "): %s %d tick %" PRIu64 ", last change %" PRIu64,
			       x->from, x->T, DIRS[d], k, c->tick, e->ct);
		if (c->kind == SHM_CHANGE_PUT) {
			if (!x->to->dir[d] || !e->v)
				T_FAIL("diff: PUT %s %d, absent at T", DIRS[d], k);
			if (c->value_len != e->v->len ||
			    (c->value_len && memcmp(c->value, e->v->data, c->value_len) != 0))
				T_FAIL("diff(%" PRIu64 ", %" PRIu64 "): PUT %s %d with a value not T's",
				       x->from, x->T, DIRS[d], k);
			e->v->refs++;
			ms_set(&x->a, d, k, e->v, c->tick);
			x->a.e[d][k].vt = e->vt;
		} else {
			ms_set(&x->a, d, k, NULL, c->tick);
		}
		break;
	}
	case SHM_CHANGE_MKDIR:
		if (x->seen_mk[d])
			T_FAIL("diff: MKDIR %s twice", DIRS[d]);
		x->seen_mk[d] = true;
		x->touched[d] = true;
		if (x->a.dir[d])
			T_FAIL("diff(%" PRIu64 ", %" PRIu64 "): MKDIR %s of a directory the importer has",
			       x->from, x->T, DIRS[d]);
		if (c->tick != x->to->mk[d] || !x->to->dir[d])
			T_FAIL("diff: MKDIR %s tick %" PRIu64 ", incarnation of %" PRIu64, DIRS[d], c->tick,
			       x->to->mk[d]);
		x->a.dir[d] = true;
		x->a.mk[d] = c->tick;
		ms_clear_dir(&x->a, d);
		break;
	case SHM_CHANGE_RMDIR:
		if (x->seen_rm[d])
			T_FAIL("diff: RMDIR %s twice", DIRS[d]);
		if (x->seen_mk[d])
			T_FAIL("diff: RMDIR %s after its MKDIR", DIRS[d]);
		x->seen_rm[d] = true;
		if (c->tick != x->to->rmt[d])
			T_FAIL("diff(%" PRIu64 ", %" PRIu64 "): RMDIR %s tick %" PRIu64
			       ", last rmdir %" PRIu64,
			       x->from, x->T, DIRS[d], c->tick, x->to->rmt[d]);
		for (int i = 0; i < ND; i++) {
			if (!under(i, d))
				continue;
			/* A change listed before under this RMDIR should have been
			 * left out (an earlier RMDIR is only redundant). */
			if (x->touched[i])
				T_FAIL("diff(%" PRIu64 ", %" PRIu64
				       "): a change in %s is listed before RMDIR %s",
				       x->from, x->T, DIRS[i], DIRS[d]);
			if (i != d && x->seen_rm[i])
				x->redundant_rmdirs++;
			x->a.dir[i] = false;
			ms_clear_dir(&x->a, i);
		}
		break;
	default:
		T_FAIL("diff: bad kind %d", c->kind);
	}
	return 0;
}

/* Compares the directories and keys (not the bookkeeping ticks). */
static void expect_same_content(const struct mstate *a, const struct mstate *b, uint64_t from, uint64_t T)
{
	for (int d = 0; d < ND; d++) {
		if (a->dir[d] != b->dir[d])
			T_FAIL("diff(%" PRIu64 ", %" PRIu64 ") applied: %s %s, model at T %s", from, T,
			       DIRS[d], a->dir[d] ? "exists" : "absent", b->dir[d] ? "exists" : "absent");
		if (!a->dir[d])
			continue;
		for (int k = 0; k < NK; k++) {
			const struct blob *x = a->e[d][k].v, *y = b->e[d][k].v;
			if (!x != !y || (x && (x->len != y->len || memcmp(x->data, y->data, x->len) != 0)))
				T_FAIL("diff(%" PRIu64 ", %" PRIu64 ") applied: key %s %d differs from T",
				       from, T, DIRS[d], k);
		}
	}
}

/* ---- the run ---------------------------------------------------------- */

#define RETAIN 64
static struct mstate snaps[RETAIN]; /* snaps[t % RETAIN] holds tick t */
static uint64_t pos_of[RETAIN];

struct summary {
	uint64_t groups, ticks, batches, accepted, ops, empty_groups;
	uint64_t rejected[6]; /* ENOENT EEXIST ECANCELED EINVAL ERANGE other */
	uint64_t diffs, diff_changes, snapshot_checks, redundant_rmdirs, freed_objects, freed_log;
};

static int err_slot(int e)
{
	switch (e) {
	case -ENOENT:
		return 0;
	case -EEXIST:
		return 1;
	case -ECANCELED:
		return 2;
	case -EINVAL:
	case -ENAMETOOLONG:
	case -EMSGSIZE:
		return 3;
	case -ERANGE:
		return 4;
	}
	return 5;
}

int main(int argc, char **argv)
{
	long nticks = argc > 1 ? atol(argv[1]) : 20000;
	T_ASSERT(nticks > 0);
	unsigned long long seed = t_seed(20240601ull);
	rng = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
	if (!rng)
		rng = 1;
	init_keys();
	memset(long_key, 'L', sizeof long_key);
	huge = calloc(1, SHMSYNC_MAX_VALUE + 1);
	T_ASSERT(huge);

	struct shm_root_opts opts = {.capacity = (size_t)256 << 20, .poison = true};
	struct shm_err err = {{0}};
	int rc = shm_root_create(&root, &opts, &err);
	if (rc < 0)
		T_FAIL("shm_root_create: %s (%s)", strerror(-rc), err.msg);
	seg = shm_root_seg(root);
	struct shm_stats st0;
	shm_root_stats(root, &st0);

	uint64_t T = shm_root_tick(root), first = T;
	memset(&snaps[T % RETAIN], 0, sizeof snaps[0]);
	snaps[T % RETAIN].tick = T;
	uint64_t pt;
	shm_published_state(seg, &pt, &pos_of[T % RETAIN]);
	T_EQ(pt, T);
	compare_state(T, &snaps[T % RETAIN], true);

	struct summary sum = {0};
	struct mstate work, tmp;
	struct mop mops[MAXOPS];
	struct shm_op ops[MAXOPS];
	while (sum.ticks < (uint64_t)nticks) {
		T_ASSERT(sum.groups < 10 * (uint64_t)nticks); /* the workload must make progress */
		sum.groups++;
		const struct mstate *cur = &snaps[T % RETAIN];
		ms_copy(&work, cur);
		int nb = 1 + (int)rnd(MAXB);
		bool any = false;
		shm_commit_begin(root);
		for (int b = 0; b < nb; b++) {
			int n = 1 + (int)rnd(MAXOPS);
			if (rnd(20) == 0 && n >= 3) {
				/* delete-then-recreate: rmdir, mkdir, put in one batch */
				int d = pick_dir(&work, true);
				memset(mops, 0, 3 * sizeof mops[0]);
				mops[0].op.kind = SHM_OP_RMDIR;
				set_dir(&mops[0], d);
				mops[1].op.kind = SHM_OP_MKDIR;
				set_dir(&mops[1], d);
				mops[2].op.kind = SHM_OP_PUT;
				set_dir(&mops[2], d);
				set_key(&mops[2], (int)rnd(NK));
				set_value(&mops[2], valbuf[b][2]);
				for (int i = 3; i < n; i++)
					make_op(&mops[i], &work, T, valbuf[b][i]);
			} else {
				for (int i = 0; i < n; i++)
					make_op(&mops[i], &work, T, valbuf[b][i]);
				if (rnd(100) == 0)
					make_invalid(&mops[0], valbuf[b][0]);
			}
			/* What the model says. */
			ms_copy(&tmp, &work);
			int want = 0;
			size_t want_at = 0;
			for (int i = 0; i < n && !want; i++) {
				want = model_apply(&tmp, &mops[i], T + 1);
				want_at = (size_t)i;
			}
			for (int i = 0; i < n; i++)
				ops[i] = mops[i].op;
			size_t failed = SIZE_MAX;
			int got = shm_apply_batch(root, ops, (size_t)n, &failed);
			sum.batches++;
			sum.ops += (uint64_t)n;
			if (got != want || (want && failed != want_at)) {
				fprintf(stderr, "tick %" PRIu64 " batch %d of %d:\n", T + 1, b, nb);
				for (int i = 0; i < n; i++)
					fprintf(stderr,
						"  op %d: kind %d dir %.*s key %d vlen %zu exp %" PRIu64
						" delta %lld\n",
						i, ops[i].kind, (int)ops[i].dir_len, ops[i].dir, mops[i].k,
						ops[i].value_len, ops[i].expected_tick,
						(long long)ops[i].delta);
				T_FAIL("batch: implementation %d (%s) at op %zu, model %d (%s) at op %zu",
				       got, strerror(-got), failed, want, strerror(-want), want_at);
			}
			if (want == 0) {
				ms_release(&work);
				work = tmp; /* takes tmp's references */
				any = true;
				sum.accepted++;
			} else {
				ms_release(&tmp);
				sum.rejected[err_slot(want)]++;
			}
		}
		uint64_t t = 0;
		int p = shm_commit_publish(root, &t);
		T_EQ(p, any ? 1 : 0);
		if (!any) {
			sum.empty_groups++;
			ms_release(&work);
			T_EQ(shm_root_tick(root), T);
			compare_state(T, cur, rnd(8) == 0);
			continue;
		}
		T_EQ(t, T + 1);
		T = t;
		sum.ticks++;
		/* The slot of tick T - RETAIN is reused for T. */
		ms_release(&snaps[T % RETAIN]);
		snaps[T % RETAIN] = work;
		snaps[T % RETAIN].tick = T;
		shm_published_state(seg, &pt, &pos_of[T % RETAIN]);
		T_EQ(pt, T);

		/* Readers pinned at the oldest retained tick. */
		uint64_t oldest = T - first >= RETAIN - 1 ? T - (RETAIN - 1) : first;
		struct shm_reclaim_report rep;
		T_OK(shm_reclaim(root, oldest, oldest, 0, &rep));
		T_ASSERT(!rep.more);
		sum.freed_objects += rep.objects_freed;
		sum.freed_log += rep.log_records_freed;

		compare_state(T, &snaps[T % RETAIN], true);
		struct shm_stats st;
		shm_root_stats(root, &st);
		uint64_t live_dirs = 0, live_keys = 0;
		for (int d = 0; d < ND; d++)
			if (work.dir[d]) {
				live_dirs++;
				for (int k = 0; k < NK; k++)
					live_keys += work.e[d][k].v != NULL;
			}
		T_EQ(st.tick, T);
		T_EQ(st.directories, live_dirs);
		T_EQ(st.keys, live_keys);

		uint64_t E = oldest + rnd(T - oldest + 1);
		compare_state(E, &snaps[E % RETAIN], true);
		sum.snapshot_checks++;

		uint64_t C = oldest + rnd(T - oldest + 1);
		struct diffctx *x = calloc(1, sizeof *x);
		T_ASSERT(x);
		x->to = &snaps[T % RETAIN];
		x->from = C;
		x->T = T;
		ms_copy(&x->a, &snaps[C % RETAIN]);
		rc = shm_diff(seg, pos_of[C % RETAIN], T, pos_of[T % RETAIN], apply_change, x);
		if (rc != 0)
			T_FAIL("diff(%" PRIu64 ", %" PRIu64 ") returned %d", C, T, rc);
		expect_same_content(&x->a, x->to, C, T);
		if (C == T)
			T_EQ(x->n, 0);
		sum.diffs++;
		sum.diff_changes += x->n;
		sum.redundant_rmdirs += x->redundant_rmdirs;
		ms_release(&x->a);
		free(x);

		if (sum.ticks % 5000 == 0) {
			printf("  %" PRIu64 " ticks, bytes_in_use %" PRIu64 ", retired %" PRIu64
			       ", tombstones %" PRIu64 ", log used %" PRIu64 "\n",
			       sum.ticks, st.bytes_in_use, st.retired_bytes, st.tombstones,
			       st.log_bytes_used);
			fflush(stdout);
		}
	}

	/* Remove everything; with nothing pinned, everything retired goes (what
	 * the first reclaim unlinks is tagged with the next tick, so commit and
	 * reclaim a few times) and the arena is back at its empty level: no
	 * operation sequence above leaked. */
	struct shm_reclaim_report rep;
	static const char *const tops[] = {"/a/", "/ab/", "/b/", "/c/"};
	for (int round = 0; round < 3; round++) {
		shm_commit_begin(root);
		for (int i = 0; i < 4; i++) {
			struct shm_op o = {.kind = round == 1 ? SHM_OP_MKDIR : SHM_OP_RMDIR,
					   .dir = tops[i],
					   .dir_len = strlen(tops[i])};
			size_t f;
			rc = shm_apply_batch(root, &o, 1, &f);
			T_ASSERT(rc == 0 || rc == -ENOENT);
		}
		uint64_t t = 0;
		shm_commit_publish(root, &t);
		T_OK(shm_reclaim(root, UINT64_MAX, UINT64_MAX, 0, &rep));
		T_ASSERT(!rep.more);
	}
	T_OK(shm_reclaim(root, UINT64_MAX, UINT64_MAX, 0, &rep));
	struct shm_stats st;
	shm_root_stats(root, &st);
	T_EQ(st.directories, 0);
	T_EQ(st.keys, 0);

	printf("model: seed %llu, %" PRIu64 " ticks, %" PRIu64 " groups (%" PRIu64
	       " published nothing), %" PRIu64 " batches, %" PRIu64 " ops\n",
	       seed, sum.ticks, sum.groups, sum.empty_groups, sum.batches, sum.ops);
	printf("  accepted %" PRIu64 "; rejected: ENOENT %" PRIu64 ", EEXIST %" PRIu64 ", ECANCELED %" PRIu64
	       ", invalid %" PRIu64 ", ERANGE %" PRIu64 ", other %" PRIu64 "\n",
	       sum.accepted, sum.rejected[0], sum.rejected[1], sum.rejected[2], sum.rejected[3],
	       sum.rejected[4], sum.rejected[5]);
	printf("  diffs checked %" PRIu64 " (%" PRIu64 " changes, %" PRIu64
	       " redundant nested RMDIRs), snapshot "
	       "checks %" PRIu64 "\n",
	       sum.diffs, sum.diff_changes, sum.redundant_rmdirs, sum.snapshot_checks);
	printf("  reclaimed %" PRIu64 " objects, %" PRIu64 " log records; end: bytes_in_use %" PRIu64
	       ", retired %" PRIu64 ", high water %" PRIu64 "\n",
	       sum.freed_objects, sum.freed_log, st.bytes_in_use, st.retired_bytes, st.high_water);
	/* The workload must have exercised what it claims to. */
	T_ASSERT(sum.rejected[0] > 0 && sum.rejected[1] > 0 && sum.rejected[2] > 0);
	if (nticks >= 2000) {
		T_ASSERT(sum.rejected[3] > 0 && sum.rejected[4] > 0);
		T_ASSERT(sum.empty_groups > 0);
	}
	printf("  after removing everything: bytes_in_use %" PRIu64 " (empty root: %" PRIu64
	       "), retired %" PRIu64 ", tombstones %" PRIu64 ", log used %" PRIu64 "\n",
	       st.bytes_in_use, st0.bytes_in_use, st.retired_bytes, st.tombstones, st.log_bytes_used);
	T_EQ(st.tombstones, 0);
	T_EQ(st.retired_bytes, 0);
	T_EQ(st.log_bytes_used, 0);
	T_EQ(st.bytes_in_use, st0.bytes_in_use);
	for (int i = 0; i < RETAIN; i++)
		ms_release(&snaps[i]);
	free(huge);
	shm_root_destroy(root);
	printf("test_model: ok\n");
	return 0;
}
