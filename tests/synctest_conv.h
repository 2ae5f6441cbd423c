/* Helpers for the convergence tests (sync_converge, sync_deletions,
 * sync_conditional, sync_late), on top of synctest.h:
 *
 * - child bookkeeping: every child the test parent forks (the root too) is
 *   registered, dies with the parent (PR_SET_PDEATHSIG), bounds itself with
 *   alarm(), and is killed when the parent fails or runs out of time, so a
 *   failing test never leaves a root or a worker behind;
 * - pipe barriers and byte channels whose reads notice a child that died;
 * - a private model of the state (directories of keys) that an import stream
 *   is applied to with strict checks, built from a worker's snapshot, and
 *   compared; serialised to files so the parent can compare what its
 *   children saw;
 * - a deterministic, deletion-heavy workload for one writer whose state at
 *   every tick any process can recompute by replaying it.
 */
#ifndef SHMSYNC_SYNCTEST_CONV_H
#define SHMSYNC_SYNCTEST_CONV_H

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "synctest.h"

/* ---- children ---------------------------------------------------------- */

#define CV_MAX_KIDS 32

struct cv_kid {
	pid_t pid;
	int status; /* exit code, or 128 + signal */
	bool reaped;
	char name[24];
};

static struct cv_kid cv_kids[CV_MAX_KIDS];
static int cv_nkids;
static pid_t cv_parent;
static unsigned cv_child_secs = 60;
/* Parent-side pipe ends a child must not hold (or a barrier never opens). */
static int cv_child_close[64];
static int cv_nchild_close;
static char cv_tmp[64];

static inline void cv_kill_all(void)
{
	for (int i = 0; i < cv_nkids; i++)
		if (!cv_kids[i].reaped)
			kill(cv_kids[i].pid, SIGKILL);
	for (int i = 0; i < cv_nkids; i++)
		if (!cv_kids[i].reaped) {
			waitpid(cv_kids[i].pid, NULL, 0);
			cv_kids[i].reaped = true;
			cv_kids[i].status = 128 + SIGKILL;
		}
}

static inline void cv_rm_tmp(void)
{
	if (!cv_tmp[0])
		return;
	DIR *d = opendir(cv_tmp);
	if (d) {
		struct dirent *e;
		char p[320];
		while ((e = readdir(d)))
			if (e->d_name[0] != '.') {
				snprintf(p, sizeof(p), "%s/%s", cv_tmp, e->d_name);
				unlink(p);
			}
		closedir(d);
	}
	rmdir(cv_tmp);
	cv_tmp[0] = 0;
}

/* Runs at every exit() of the parent, a failed assertion included. */
static inline void cv_at_exit(void)
{
	if (getpid() != cv_parent)
		return;
	cv_kill_all();
	if (st_sock[0])
		unlink(st_sock);
	cv_rm_tmp();
}

static inline void cv_on_alarm(int sig)
{
	(void)sig;
	static const char m[] = "FAIL: the test's time limit ran out; killing its children\n";
	if (write(2, m, sizeof(m) - 1) < 0) {
		/* Nothing more to say. */
	}
	for (int i = 0; i < cv_nkids; i++)
		if (!cv_kids[i].reaped)
			kill(cv_kids[i].pid, SIGKILL);
	if (st_sock[0])
		unlink(st_sock);
	_exit(1);
}

/* Call first in main: the parent's time limit, and each child's. */
static inline void cv_setup(unsigned parent_secs, unsigned child_secs)
{
	cv_parent = getpid();
	cv_child_secs = child_secs;
	setvbuf(stdout, NULL, _IOLBF, 0);
	atexit(cv_at_exit);
	signal(SIGALRM, cv_on_alarm);
	signal(SIGPIPE, SIG_IGN);
	snprintf(cv_tmp, sizeof(cv_tmp), "/tmp/shmsync-conv-XXXXXX");
	T_ASSERT(mkdtemp(cv_tmp) != NULL);
	alarm(parent_secs);
}

/* A file in the test's private temporary directory. */
static inline const char *cv_path(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline const char *cv_path(char *buf, size_t len, const char *fmt, ...)
{
	char name[64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	snprintf(buf, len, "%s/%s", cv_tmp, name);
	return buf;
}

static inline void cv_parent_only(int fd)
{
	T_ASSERT(cv_nchild_close < (int)(sizeof(cv_child_close) / sizeof(cv_child_close[0])));
	cv_child_close[cv_nchild_close++] = fd;
}

static inline void cv_child_init(void)
{
	signal(SIGALRM, SIG_DFL);
	/* Never outlive the parent: a root left behind would serve forever. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != cv_parent)
		_exit(1);
	for (int i = 0; i < cv_nchild_close; i++)
		close(cv_child_close[i]);
	cv_nkids = 0; /* a child owns none of its siblings */
	alarm(cv_child_secs);
}

static inline void cv_register(pid_t pid, const char *name)
{
	T_ASSERT(cv_nkids < CV_MAX_KIDS);
	struct cv_kid *k = &cv_kids[cv_nkids++];
	k->pid = pid;
	k->reaped = false;
	k->status = -1;
	snprintf(k->name, sizeof(k->name), "%s", name);
}

static inline pid_t cv_spawn(const char *name, int (*fn)(void *), void *arg)
{
	fflush(NULL);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		cv_child_init();
		exit(fn(arg));
	}
	cv_register(pid, name);
	return pid;
}

static inline struct cv_kid *cv_kid_of(pid_t pid)
{
	for (int i = 0; i < cv_nkids; i++)
		if (cv_kids[i].pid == pid)
			return &cv_kids[i];
	T_FAIL("pid %d is not a child of this test", (int)pid);
}

static inline int cv_status_code(int status)
{
	return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

/* Waits for a child; its exit code (128 + signal if killed). */
static inline int cv_wait(pid_t pid)
{
	struct cv_kid *k = cv_kid_of(pid);
	if (!k->reaped) {
		int status;
		T_ASSERT(waitpid(pid, &status, 0) == pid);
		k->reaped = true;
		k->status = cv_status_code(status);
	}
	return k->status;
}

/* Fails at once if any child already exited with an error: the parent must
 * not wait for a message that a dead child will never send. */
static inline void cv_poll_kids(void)
{
	for (int i = 0; i < cv_nkids; i++) {
		struct cv_kid *k = &cv_kids[i];
		int status;
		if (k->reaped || waitpid(k->pid, &status, WNOHANG) != k->pid)
			continue;
		k->reaped = true;
		k->status = cv_status_code(status);
		if (k->status != 0)
			T_FAIL("child %s (pid %d) exited with %d", k->name, (int)k->pid, k->status);
	}
}

/* Reads exactly len bytes from fd, checking on the children meanwhile. */
static inline void cv_read_full(int fd, void *buf, size_t len, unsigned secs)
{
	size_t got = 0;
	double end = st_now() + secs;
	while (got < len) {
		struct pollfd p = {fd, POLLIN, 0};
		int n = poll(&p, 1, 100);
		if (n < 0 && errno != EINTR)
			T_FAIL("poll: %s", strerror(errno));
		if (n == 1) {
			ssize_t r = read(fd, (char *)buf + got, len - got);
			if (r < 0 && errno != EINTR && errno != EAGAIN)
				T_FAIL("read: %s", strerror(errno));
			if (r == 0) {
				cv_poll_kids();
				T_FAIL("a channel closed after %zu of %zu bytes", got, len);
			}
			if (r > 0)
				got += (size_t)r;
			continue;
		}
		cv_poll_kids();
		if (st_now() > end)
			T_FAIL("waited %u s for %zu bytes from the children (got %zu)", secs, len, got);
	}
}

static inline void cv_write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t w = write(fd, (const char *)buf + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		T_ASSERT(w > 0);
		done += (size_t)w;
	}
}

/* The root, like st_start_root, but registered as a child of this test. */
static inline pid_t cv_start_root(const shmsync_root_opts *base)
{
	if (!st_sock[0])
		snprintf(st_sock, sizeof(st_sock), "/tmp/shmsync-test-%d.sock", (int)getpid());
	unlink(st_sock);
	fflush(NULL);
	pid_t pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		cv_child_init();
		alarm(0); /* the parent bounds the root: it kills it */
		shmsync_root_opts o = base ? *base : (shmsync_root_opts){0};
		char err[256] = "";
		o.socket_path = st_sock;
		o.errbuf = err;
		o.errbuf_len = sizeof(err);
		if (!o.capacity)
			o.capacity = (size_t)256 << 20;
		shmsync_root *r;
		int rc = shmsync_root_open(&r, &o);
		if (rc < 0) {
			fprintf(stderr, "root: %s: %s\n", shmsync_strerror(rc), err);
			_exit(3);
		}
		signal(SIGTERM, st_on_term);
		rc = shmsync_root_run(r);
		shmsync_root_close(r);
		_exit(rc < 0 ? 4 : 0);
	}
	cv_register(pid, "root");
	for (int i = 0; i < 5000; i++) {
		struct stat st;
		if (stat(st_sock, &st) == 0)
			return pid;
		cv_poll_kids();
		usleep(1000);
	}
	T_FAIL("the root did not create %s", st_sock);
}

static inline void cv_stop_root(pid_t pid)
{
	kill(pid, SIGTERM);
	T_EQ(cv_wait(pid), 0);
	unlink(st_sock);
}

/* ---- barriers ---------------------------------------------------------- */

/* Children arrive (one byte each on `ready`) and block until the parent
 * closes `go`: EOF releases all of them at once. */
struct cv_gate {
	int ready[2];
	int go[2];
};

static inline void cv_gate_init(struct cv_gate *g)
{
	T_ASSERT(pipe(g->ready) == 0 && pipe(g->go) == 0);
	cv_parent_only(g->ready[0]);
	cv_parent_only(g->go[1]);
}

static inline void cv_unlist(int fd)
{
	for (int i = 0; i < cv_nchild_close; i++)
		if (cv_child_close[i] == fd)
			cv_child_close[i--] = cv_child_close[--cv_nchild_close];
}

/* The parent, after forking every child that arrives: drops the children's
 * ends, so a dead child shows up as a closed channel. */
static inline void cv_gate_spawned(struct cv_gate *g)
{
	close(g->ready[1]);
	close(g->go[0]);
}

/* The parent, after the children are gone. */
static inline void cv_gate_done(struct cv_gate *g)
{
	close(g->ready[0]);
	cv_unlist(g->ready[0]);
	cv_unlist(g->go[1]);
}

static inline void cv_gate_arrive(struct cv_gate *g)
{
	cv_write_full(g->ready[1], "r", 1);
	char c;
	ssize_t n;
	while ((n = read(g->go[0], &c, 1)) < 0 && errno == EINTR)
		;
	T_EQ(n, 0);
}

static inline void cv_gate_open(struct cv_gate *g, int n)
{
	char buf[CV_MAX_KIDS];
	T_ASSERT(n <= CV_MAX_KIDS);
	cv_read_full(g->ready[0], buf, (size_t)n, 60);
	close(g->go[1]);
}

/* Waits for the children, failing as soon as any of them fails (the others
 * are then killed) rather than after the others finish. */
static inline void cv_wait_all(const pid_t *pids, int n, unsigned secs)
{
	double end = st_now() + secs;
	for (;;) {
		cv_poll_kids();
		int left = 0;
		for (int i = 0; i < n; i++)
			left += !cv_kid_of(pids[i])->reaped;
		if (!left)
			break;
		if (st_now() > end)
			T_FAIL("%d children still running after %u s", left, secs);
		usleep(2000);
	}
	for (int i = 0; i < n; i++)
		T_EQ(cv_wait(pids[i]), 0);
}

/* Shared memory for the test's processes, made before they are forked. */
static inline void *cv_shared(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	T_ASSERT(p != MAP_FAILED);
	memset(p, 0, len);
	return p;
}

/* ---- a growable byte buffer -------------------------------------------- */

struct cv_buf {
	uint8_t *p;
	size_t n, cap;
};

static inline void cv_buf_put(struct cv_buf *b, const void *d, size_t n)
{
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->n + n)
			cap *= 2;
		b->p = realloc(b->p, cap);
		T_ASSERT(b->p != NULL);
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, d, n);
	b->n += n;
}

static inline void cv_buf_free(struct cv_buf *b)
{
	free(b->p);
	*b = (struct cv_buf){0};
}

static inline void cv_file_write(const char *path, const void *d, size_t n)
{
	FILE *f = fopen(path, "wb");
	T_ASSERT(f != NULL);
	T_ASSERT(fwrite(d, 1, n, f) == n);
	T_ASSERT(fclose(f) == 0);
}

static inline struct cv_buf cv_file_read(const char *path)
{
	struct cv_buf b = {0};
	FILE *f = fopen(path, "rb");
	if (!f)
		T_FAIL("%s: %s", path, strerror(errno));
	char tmp[65536];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		cv_buf_put(&b, tmp, n);
	fclose(f);
	return b;
}

/* ---- the model --------------------------------------------------------- */

struct cv_key {
	uint8_t *k, *v;
	uint32_t kn, vn;
	uint64_t tick; /* of the version; 0: unknown (learnt from a RESET) */
};

struct cv_dir {
	char *name;
	struct cv_key *keys;
	size_t n, cap;
};

/* Directories sorted by name (byte order, as strcmp), keys unordered. */
struct cv_model {
	struct cv_dir *dirs;
	size_t n, cap;
};

static inline void cv_dir_free(struct cv_dir *d)
{
	for (size_t i = 0; i < d->n; i++) {
		free(d->keys[i].k);
		free(d->keys[i].v);
	}
	free(d->keys);
	free(d->name);
}

static inline void cv_model_clear(struct cv_model *m)
{
	for (size_t i = 0; i < m->n; i++)
		cv_dir_free(&m->dirs[i]);
	m->n = 0;
}

static inline void cv_model_free(struct cv_model *m)
{
	cv_model_clear(m);
	free(m->dirs);
	*m = (struct cv_model){0};
}

/* The index of the first directory >= name. */
static inline size_t cv_lower(const struct cv_model *m, const char *name)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(m->dirs[mid].name, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static inline struct cv_dir *cv_dir_get(const struct cv_model *m, const char *name)
{
	size_t i = cv_lower(m, name);
	return i < m->n && strcmp(m->dirs[i].name, name) == 0 ? &m->dirs[i] : NULL;
}

/* Adds an empty directory; NULL if it exists. */
static inline struct cv_dir *cv_dir_add(struct cv_model *m, const char *name)
{
	size_t i = cv_lower(m, name);
	if (i < m->n && strcmp(m->dirs[i].name, name) == 0)
		return NULL;
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 16;
		m->dirs = realloc(m->dirs, m->cap * sizeof(*m->dirs));
		T_ASSERT(m->dirs != NULL);
	}
	memmove(&m->dirs[i + 1], &m->dirs[i], (m->n - i) * sizeof(*m->dirs));
	m->n++;
	m->dirs[i] = (struct cv_dir){0};
	m->dirs[i].name = strdup(name);
	T_ASSERT(m->dirs[i].name != NULL);
	return &m->dirs[i];
}

/* Removes prefix and every directory whose name starts with it; returns
 * how many. */
static inline size_t cv_rmdir(struct cv_model *m, const char *prefix)
{
	if (!m->n)
		return 0; /* (and no memmove of a NULL array) */
	size_t i = cv_lower(m, prefix), j = i, plen = strlen(prefix);
	while (j < m->n && strncmp(m->dirs[j].name, prefix, plen) == 0)
		cv_dir_free(&m->dirs[j++]);
	memmove(&m->dirs[i], &m->dirs[j], (m->n - j) * sizeof(*m->dirs));
	m->n -= j - i;
	return j - i;
}

static inline bool cv_prefix_exists(const struct cv_model *m, const char *prefix)
{
	size_t i = cv_lower(m, prefix);
	return i < m->n && strncmp(m->dirs[i].name, prefix, strlen(prefix)) == 0;
}

static inline struct cv_key *cv_key_get(const struct cv_dir *d, const void *k, size_t kn)
{
	for (size_t i = 0; i < d->n; i++)
		if (d->keys[i].kn == kn && memcmp(d->keys[i].k, k, kn) == 0)
			return &d->keys[i];
	return NULL;
}

static inline void *cv_dup(const void *p, size_t n)
{
	void *d = malloc(n ? n : 1);
	T_ASSERT(d != NULL);
	if (n)
		memcpy(d, p, n);
	return d;
}

static inline void cv_key_set(struct cv_dir *d, const void *k, size_t kn, const void *v, size_t vn,
			      uint64_t tick)
{
	struct cv_key *e = cv_key_get(d, k, kn);
	if (!e) {
		if (d->n == d->cap) {
			d->cap = d->cap ? d->cap * 2 : 8;
			d->keys = realloc(d->keys, d->cap * sizeof(*d->keys));
			T_ASSERT(d->keys != NULL);
		}
		e = &d->keys[d->n++];
		e->k = cv_dup(k, kn);
		e->kn = (uint32_t)kn;
		e->v = NULL;
	}
	free(e->v);
	e->v = cv_dup(v, vn);
	e->vn = (uint32_t)vn;
	e->tick = tick;
}

static inline bool cv_key_del(struct cv_dir *d, const void *k, size_t kn)
{
	struct cv_key *e = cv_key_get(d, k, kn);
	if (!e)
		return false;
	free(e->k);
	free(e->v);
	*e = d->keys[--d->n];
	return true;
}

static inline size_t cv_model_keys(const struct cv_model *m)
{
	size_t n = 0;
	for (size_t i = 0; i < m->n; i++)
		n += m->dirs[i].n;
	return n;
}

/* Applies one change of an import stream, checking that it makes sense for
 * the state the stream built so far. -1 with a message if not. */
static inline int cv_apply(struct cv_model *m, const shmsync_change *c, char *err, size_t errlen)
{
	struct cv_dir *d;
	switch (c->kind) {
	case SHMSYNC_PUT:
		if (!(d = cv_dir_get(m, c->dir))) {
			snprintf(err, errlen,
				 "PUT %s%.*s at tick %llu into a directory the stream never created", c->dir,
				 (int)c->key_len, (const char *)c->key, (unsigned long long)c->tick);
			return -1;
		}
		cv_key_set(d, c->key, c->key_len, c->value, c->value_len, c->tick);
		return 0;
	case SHMSYNC_DEL:
		if (!(d = cv_dir_get(m, c->dir))) {
			snprintf(err, errlen,
				 "DEL %s%.*s at tick %llu in a directory the stream never created", c->dir,
				 (int)c->key_len, (const char *)c->key, (unsigned long long)c->tick);
			return -1;
		}
		cv_key_del(d, c->key, c->key_len);
		return 0;
	case SHMSYNC_MKDIR:
		if (!cv_dir_add(m, c->dir)) {
			snprintf(err, errlen,
				 "MKDIR %s at tick %llu, but the stream has it already (no RMDIR)", c->dir,
				 (unsigned long long)c->tick);
			return -1;
		}
		return 0;
	case SHMSYNC_RMDIR:
		cv_rmdir(m, c->dir);
		return 0;
	case SHMSYNC_RESET:
		cv_model_clear(m);
		return 0;
	default:
		snprintf(err, errlen, "unknown change kind %d", c->kind);
		return -1;
	}
}

static inline int cv_snap_dir(const char *dir, void *arg)
{
	struct cv_model *m = arg;
	/* dirs_iter gives name order: append. */
	T_ASSERT(m->n == 0 || strcmp(m->dirs[m->n - 1].name, dir) < 0);
	T_ASSERT(cv_dir_add(m, dir) != NULL);
	return 0;
}

static inline int cv_snap_key(const void *k, size_t kn, shmsync_view v, void *arg)
{
	struct cv_dir *d = arg;
	T_ASSERT(cv_key_get(d, k, kn) == NULL); /* a key listed twice */
	cv_key_set(d, k, kn, v.data, v.len, v.tick);
	return 0;
}

/* The worker's snapshot (dirs_iter + dir_iter) as a model. */
static inline void cv_snapshot(shmsync_worker *w, struct cv_model *m)
{
	cv_model_clear(m);
	T_OK(shmsync_dirs_iter(w, "/", cv_snap_dir, m));
	for (size_t i = 0; i < m->n; i++)
		T_OK(shmsync_dir_iter(w, m->dirs[i].name, cv_snap_key, &m->dirs[i]));
}

static inline void cv_fmt_bytes(char *out, size_t len, const void *p, size_t n)
{
	const uint8_t *b = p;
	size_t o = 0;
	for (size_t i = 0; i < n && o + 5 < len; i++)
		if (b[i] >= 32 && b[i] < 127)
			out[o++] = (char)b[i];
		else
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", b[i]);
	if (o < len)
		out[o] = 0;
}

/* 0 if a and b hold the same directories and keys with the same values
 * (and version ticks, where both know them and `ticks`); -1 and the first
 * difference in err. */
static inline int cv_model_cmp(const struct cv_model *a, const struct cv_model *b, bool ticks, char *err,
			       size_t errlen)
{
	char kb[128];
	for (size_t i = 0; i < a->n || i < b->n; i++) {
		if (i >= a->n || i >= b->n || strcmp(a->dirs[i].name, b->dirs[i].name) != 0) {
			snprintf(err, errlen, "directory #%zu: %s vs %s (%zu vs %zu directories)", i,
				 i < a->n ? a->dirs[i].name : "(none)", i < b->n ? b->dirs[i].name : "(none)",
				 a->n, b->n);
			return -1;
		}
		const struct cv_dir *da = &a->dirs[i], *db = &b->dirs[i];
		for (size_t k = 0; k < da->n; k++) {
			const struct cv_key *ka = &da->keys[k], *kb2 = cv_key_get(db, ka->k, ka->kn);
			cv_fmt_bytes(kb, sizeof(kb), ka->k, ka->kn);
			if (!kb2) {
				snprintf(err, errlen, "key %s%s: only in the first", da->name, kb);
				return -1;
			}
			if (ka->vn != kb2->vn || memcmp(ka->v, kb2->v, ka->vn) != 0) {
				char va[64], vb[64];
				cv_fmt_bytes(va, sizeof(va), ka->v, ka->vn);
				cv_fmt_bytes(vb, sizeof(vb), kb2->v, kb2->vn);
				snprintf(err, errlen,
					 "key %s%s: value \"%s\" (tick %llu) vs \"%s\" (tick %llu)", da->name,
					 kb, va, (unsigned long long)ka->tick, vb,
					 (unsigned long long)kb2->tick);
				return -1;
			}
			if (ticks && ka->tick && kb2->tick && ka->tick != kb2->tick) {
				snprintf(err, errlen, "key %s%s: version tick %llu vs %llu", da->name, kb,
					 (unsigned long long)ka->tick, (unsigned long long)kb2->tick);
				return -1;
			}
		}
		if (da->n != db->n) {
			for (size_t k = 0; k < db->n; k++)
				if (!cv_key_get(da, db->keys[k].k, db->keys[k].kn)) {
					cv_fmt_bytes(kb, sizeof(kb), db->keys[k].k, db->keys[k].kn);
					snprintf(err, errlen, "key %s%s: only in the second", db->name, kb);
					return -1;
				}
			snprintf(err, errlen, "directory %s: %zu vs %zu keys", da->name, da->n, db->n);
			return -1;
		}
	}
	return 0;
}

static inline void cv_model_copy(struct cv_model *dst, const struct cv_model *src)
{
	cv_model_clear(dst);
	for (size_t i = 0; i < src->n; i++) {
		struct cv_dir *d = cv_dir_add(dst, src->dirs[i].name);
		for (size_t k = 0; k < src->dirs[i].n; k++) {
			const struct cv_key *e = &src->dirs[i].keys[k];
			cv_key_set(d, e->k, e->kn, e->v, e->vn, e->tick);
		}
	}
}

/* Serialised: u32 ndirs; per dir: u32 name length, name, u32 nkeys; per
 * key: u32 kn, key, u32 vn, value, u64 tick. */
static inline void cv_model_save(const struct cv_model *m, const char *path)
{
	struct cv_buf b = {0};
	uint32_t n = (uint32_t)m->n;
	cv_buf_put(&b, &n, 4);
	for (size_t i = 0; i < m->n; i++) {
		const struct cv_dir *d = &m->dirs[i];
		uint32_t l = (uint32_t)strlen(d->name), nk = (uint32_t)d->n;
		cv_buf_put(&b, &l, 4);
		cv_buf_put(&b, d->name, l);
		cv_buf_put(&b, &nk, 4);
		for (size_t k = 0; k < d->n; k++) {
			const struct cv_key *e = &d->keys[k];
			cv_buf_put(&b, &e->kn, 4);
			cv_buf_put(&b, e->k, e->kn);
			cv_buf_put(&b, &e->vn, 4);
			cv_buf_put(&b, e->v, e->vn);
			cv_buf_put(&b, &e->tick, 8);
		}
	}
	cv_file_write(path, b.p, b.n);
	cv_buf_free(&b);
}

static inline void cv_take(const struct cv_buf *b, size_t *at, void *out, size_t n)
{
	T_ASSERT(*at + n <= b->n);
	memcpy(out, b->p + *at, n);
	*at += n;
}

static inline void cv_model_load(struct cv_model *m, const char *path)
{
	struct cv_buf b = cv_file_read(path);
	size_t at = 0;
	uint32_t n;
	char name[SHMSYNC_MAX_DIR + 1];
	cv_model_clear(m);
	cv_take(&b, &at, &n, 4);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t l, nk;
		cv_take(&b, &at, &l, 4);
		T_ASSERT(l <= SHMSYNC_MAX_DIR);
		cv_take(&b, &at, name, l);
		name[l] = 0;
		struct cv_dir *d = cv_dir_add(m, name);
		T_ASSERT(d != NULL);
		cv_take(&b, &at, &nk, 4);
		for (uint32_t k = 0; k < nk; k++) {
			uint32_t kn, vn;
			uint64_t tick;
			cv_take(&b, &at, &kn, 4);
			T_ASSERT(at + kn <= b.n);
			const uint8_t *key = b.p + at;
			at += kn;
			cv_take(&b, &at, &vn, 4);
			T_ASSERT(at + vn <= b.n);
			const uint8_t *val = b.p + at;
			at += vn;
			cv_take(&b, &at, &tick, 8);
			cv_key_set(d, key, kn, val, vn, tick);
		}
	}
	T_EQ(at, b.n);
	cv_buf_free(&b);
}

/* ---- checking an import stream ---------------------------------------- */

/* Applies each import's changes to a private model and checks the stream's
 * own rules: RESET comes first or not at all, every other change is past
 * the old cursor, in the order of its last change (ticks never go back),
 * and none is past the new cursor. */
struct cv_imp {
	struct cv_model model;
	uint64_t from;      /* the cursor before this import */
	uint64_t last_tick; /* of the previous change in this import */
	int nchanges;
	bool reset; /* this import began with RESET */
	bool bad;
	char err[512];
	uint64_t puts, dels, mkdirs, rmdirs, resets;
};

static inline void cv_imp_begin(struct cv_imp *r, uint64_t cursor)
{
	r->from = cursor;
	r->last_tick = 0;
	r->nchanges = 0;
	r->reset = false;
}

static inline int cv_imp_cb(const shmsync_change *c, void *arg)
{
	struct cv_imp *r = arg;
	if (r->bad)
		return 0;
	if (c->kind == SHMSYNC_RESET) {
		if (r->nchanges != 0) {
			snprintf(r->err, sizeof(r->err), "RESET as change #%d of an import, not the first",
				 r->nchanges);
			r->bad = true;
			return 0;
		}
		r->reset = true;
		r->resets++;
	} else if (!r->reset && (c->tick <= r->from || c->tick < r->last_tick)) {
		snprintf(r->err, sizeof(r->err),
			 "change kind %d of %s at tick %llu: the cursor was %llu, "
			 "the previous change's tick %llu",
			 c->kind, c->dir, (unsigned long long)c->tick, (unsigned long long)r->from,
			 (unsigned long long)r->last_tick);
		r->bad = true;
		return 0;
	}
	r->last_tick = c->tick;
	r->nchanges++;
	if (cv_apply(&r->model, c, r->err, sizeof(r->err)) < 0) {
		r->bad = true;
		return 0;
	}
	if (r->reset && c->kind == SHMSYNC_PUT) {
		/* A full state carries the reset's tick, not the version's. */
		cv_key_get(cv_dir_get(&r->model, c->dir), c->key, c->key_len)->tick = 0;
	}
	r->puts += c->kind == SHMSYNC_PUT;
	r->dels += c->kind == SHMSYNC_DEL;
	r->mkdirs += c->kind == SHMSYNC_MKDIR;
	r->rmdirs += c->kind == SHMSYNC_RMDIR;
	return 0;
}

/* After an import that returned rc >= 0: fails on a broken stream; returns
 * the new cursor. */
static inline uint64_t cv_imp_end(struct cv_imp *r, shmsync_worker *w, int rc, const char *who)
{
	uint64_t to = shmsync_cursor(w);
	if (r->bad)
		T_FAIL("%s: import (%llu, %llu]: %s", who, (unsigned long long)r->from,
		       (unsigned long long)to, r->err);
	if (rc != r->nchanges)
		T_FAIL("%s: import returned %d but delivered %d changes", who, rc, r->nchanges);
	if (to < r->from || r->last_tick > to || (r->reset && r->last_tick != to))
		T_FAIL("%s: import (%llu, %llu] delivered a change of tick %llu%s", who,
		       (unsigned long long)r->from, (unsigned long long)to, (unsigned long long)r->last_tick,
		       r->reset ? " after a RESET" : "");
	if (to == r->from && r->nchanges)
		T_FAIL("%s: an import that stayed at tick %llu delivered %d changes", who,
		       (unsigned long long)to, r->nchanges);
	return to;
}

/* The model built from the stream is the worker's snapshot. */
static inline void cv_imp_vs_snapshot(struct cv_imp *r, shmsync_worker *w, struct cv_model *scratch,
				      const char *who)
{
	char err[512];
	cv_snapshot(w, scratch);
	if (cv_model_cmp(&r->model, scratch, true, err, sizeof(err)) < 0)
		T_FAIL("%s: at tick %llu, the model built from imports vs the snapshot: %s", who,
		       (unsigned long long)shmsync_cursor(w), err);
}

/* ---- a deterministic single-writer workload full of deletions ----------
 *
 * One writer commits batch after batch, each its own tick, and every batch
 * must commit. Which operations a batch holds depends only on the seed and
 * the state so far, so any process that knows the seed and the tick before
 * the first batch can compute the state at any later tick by replaying
 * (cv_gen_batch with b == NULL): the reference that imports and snapshots
 * are checked against.
 */

static const char *const cv_gen_dirs[] = {
	"/a/", "/a/x/", "/b/", "/p/", "/p/a/", "/p/b/", "/p/b/c/", "/p/b/c/d/", "/q/", "/q/r/", "/q/r/s/",
};
#define CV_GEN_NDIRS (sizeof(cv_gen_dirs) / sizeof(cv_gen_dirs[0]))
#define CV_GEN_NKEYS 16

struct cv_gen {
	unsigned long long rng;
	uint64_t batches;
	/* What the workload did, for the summary. */
	uint64_t puts, dels, mkdirs, rmdirs, prefix_rmdirs, root_rmdirs, key_recreates, dir_recreates;
	/* A key or directory deleted by the previous batch, to recreate next. */
	char redo_dir[SHMSYNC_MAX_DIR + 1];
	char redo_key[16];
	int redo;
};

static inline void cv_gen_init(struct cv_gen *g, unsigned long long seed)
{
	*g = (struct cv_gen){0};
	g->rng = seed ? seed : 1;
}

static inline unsigned cv_gen_rand(struct cv_gen *g, unsigned n)
{
	return (unsigned)(t_rand(&g->rng) % n);
}

static inline void cv_gen_check(int rc, const char *what)
{
	if (rc < 0)
		T_FAIL("building a batch: %s: %s", what, shmsync_strerror(rc));
}

static inline void cv_gen_put(struct cv_gen *g, struct cv_model *ref, shmsync_batch *b, uint64_t tick,
			      const char *dir, const char *key)
{
	char v[48];
	size_t vn = 1 + cv_gen_rand(g, 40);
	int len = snprintf(v, sizeof(v), "%llu:%s%s:", (unsigned long long)tick, dir, key);
	for (size_t i = (size_t)len; i < vn; i++)
		v[i] = (char)('a' + cv_gen_rand(g, 26));
	if (vn < (size_t)len)
		vn = (size_t)len < sizeof(v) ? (size_t)len : sizeof(v);
	if (b)
		cv_gen_check(shmsync_put(b, dir, key, strlen(key), v, vn), "put");
	struct cv_dir *d = cv_dir_get(ref, dir);
	T_ASSERT(d != NULL);
	cv_key_set(d, key, strlen(key), v, vn, tick);
	g->puts++;
}

static inline void cv_gen_del(struct cv_gen *g, struct cv_model *ref, shmsync_batch *b, const char *dir,
			      const char *key)
{
	if (b)
		cv_gen_check(shmsync_del(b, dir, key, strlen(key)), "del");
	T_ASSERT(cv_key_del(cv_dir_get(ref, dir), key, strlen(key)));
	g->dels++;
}

static inline void cv_gen_mkdir(struct cv_gen *g, struct cv_model *ref, shmsync_batch *b, const char *dir)
{
	if (b)
		cv_gen_check(shmsync_mkdir(b, dir), "mkdir");
	T_ASSERT(cv_dir_add(ref, dir) != NULL);
	g->mkdirs++;
}

static inline void cv_gen_rmdir(struct cv_gen *g, struct cv_model *ref, shmsync_batch *b, const char *dir)
{
	if (b)
		cv_gen_check(shmsync_rmdir(b, dir), "rmdir");
	T_ASSERT(cv_rmdir(ref, dir) > 0);
	g->rmdirs++;
}

/* A random existing directory, or NULL. */
static inline const char *cv_gen_some_dir(struct cv_gen *g, const struct cv_model *ref)
{
	if (!ref->n)
		return NULL;
	return ref->dirs[cv_gen_rand(g, (unsigned)ref->n)].name;
}

/* A random existing key of dir into key[16]; false if dir has none. */
static inline bool cv_gen_some_key(struct cv_gen *g, const struct cv_model *ref, const char *dir, char *key)
{
	const struct cv_dir *d = cv_dir_get(ref, dir);
	if (!d || !d->n)
		return false;
	const struct cv_key *e = &d->keys[cv_gen_rand(g, (unsigned)d->n)];
	T_ASSERT(e->kn < 16);
	memcpy(key, e->k, e->kn);
	key[e->kn] = 0;
	return true;
}

/* Builds (b != NULL) or replays (b == NULL) batch number g->batches, which
 * commits at `tick`, and applies it to ref. */
static inline void cv_gen_batch(struct cv_gen *g, struct cv_model *ref, shmsync_batch *b, uint64_t tick)
{
	char key[16], dir[SHMSYNC_MAX_DIR + 1];
	g->batches++;
	uint64_t before = g->puts + g->dels + g->mkdirs + g->rmdirs;
	int redo = g->redo;
	g->redo = 0;
	/* Delete-then-recreate across ticks: bring back what the previous
	 * batch deleted (when it is still possible). */
	if (redo == 1 && cv_dir_get(ref, g->redo_dir)) {
		cv_gen_put(g, ref, b, tick, g->redo_dir, g->redo_key);
		g->key_recreates++;
	} else if (redo == 2 && !cv_dir_get(ref, g->redo_dir)) {
		cv_gen_mkdir(g, ref, b, g->redo_dir);
		cv_gen_put(g, ref, b, tick, g->redo_dir, "k0");
		g->dir_recreates++;
	}
	unsigned nops = 1 + cv_gen_rand(g, 4);
	for (unsigned op = 0; op < nops; op++) {
		unsigned r = cv_gen_rand(g, 1000);
		const char *d = cv_gen_some_dir(g, ref);
		if (!d || ref->n < 4 || r < 100) {
			/* mkdir a missing directory, with a key in it. */
			const char *nd = cv_gen_dirs[cv_gen_rand(g, CV_GEN_NDIRS)];
			if (!cv_dir_get(ref, nd)) {
				cv_gen_mkdir(g, ref, b, nd);
				snprintf(key, sizeof(key), "k%u", cv_gen_rand(g, CV_GEN_NKEYS));
				cv_gen_put(g, ref, b, tick, nd, key);
			}
		} else if (r < 550) {
			snprintf(key, sizeof(key), "k%u", cv_gen_rand(g, CV_GEN_NKEYS));
			cv_gen_put(g, ref, b, tick, d, key);
		} else if (r < 700) {
			if (cv_gen_some_key(g, ref, d, key)) {
				cv_gen_del(g, ref, b, d, key);
				if (cv_gen_rand(g, 2)) {
					g->redo = 1;
					snprintf(g->redo_dir, sizeof(g->redo_dir), "%s", d);
					snprintf(g->redo_key, sizeof(g->redo_key), "%s", key);
				}
			}
		} else if (r < 770) {
			/* Delete and recreate a key within one batch. */
			if (cv_gen_some_key(g, ref, d, key)) {
				cv_gen_del(g, ref, b, d, key);
				cv_gen_put(g, ref, b, tick, d, key);
				g->key_recreates++;
			}
		} else if (r < 800) {
			/* rmdir of an existing directory (and what is under it). */
			snprintf(dir, sizeof(dir), "%s", d);
			cv_gen_rmdir(g, ref, b, dir);
			if (cv_gen_rand(g, 2)) {
				g->redo = 2;
				snprintf(g->redo_dir, sizeof(g->redo_dir), "%s", dir);
			}
		} else if (r < 830) {
			/* rmdir of a prefix: /p/ or /q/ whether or not that
			 * directory itself exists, as long as one under it does. */
			const char *pre = cv_gen_rand(g, 2) ? "/p/" : "/q/";
			if (cv_prefix_exists(ref, pre)) {
				if (!cv_dir_get(ref, pre))
					g->prefix_rmdirs++;
				cv_gen_rmdir(g, ref, b, pre);
			}
		} else if (r < 860) {
			/* Delete and recreate a directory within one batch. */
			snprintf(dir, sizeof(dir), "%s", d);
			cv_gen_rmdir(g, ref, b, dir);
			cv_gen_mkdir(g, ref, b, dir);
			if (cv_gen_rand(g, 2)) {
				snprintf(key, sizeof(key), "k%u", cv_gen_rand(g, CV_GEN_NKEYS));
				cv_gen_put(g, ref, b, tick, dir, key);
			}
			g->dir_recreates++;
		} else if (r == 860 && cv_gen_rand(g, 4) == 0) {
			/* Rarely, everything: rmdir "/". */
			cv_gen_rmdir(g, ref, b, "/");
			g->root_rmdirs++;
		} else {
			snprintf(key, sizeof(key), "k%u", cv_gen_rand(g, CV_GEN_NKEYS));
			cv_gen_put(g, ref, b, tick, d, key);
		}
	}
	if (g->puts + g->dels + g->mkdirs + g->rmdirs == before) {
		/* Every choice was impossible: a batch must change something. */
		const char *d = cv_gen_some_dir(g, ref);
		if (d) {
			cv_gen_put(g, ref, b, tick, d, "k0");
		} else {
			cv_gen_mkdir(g, ref, b, "/a/");
			cv_gen_put(g, ref, b, tick, "/a/", "k0");
		}
	}
}

#endif
