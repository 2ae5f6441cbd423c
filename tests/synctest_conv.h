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

/* Call first in main: the parent's time limit, and each child's. */
void cv_setup(unsigned parent_secs, unsigned child_secs);

/* A file in the test's private temporary directory. */
const char *cv_path(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

pid_t cv_spawn(const char *name, int (*fn)(void *), void *arg);

/* Fails at once if any child already exited with an error: the parent must
 * not wait for a message that a dead child will never send. */
void cv_poll_kids(void);

void cv_write_full(int fd, const void *buf, size_t len);

/* The root, like st_start_root, but registered as a child of this test. */
pid_t cv_start_root(const shmsync_root_opts *base);

void cv_stop_root(pid_t pid);

/* The state a test starts from: a child ("setup") attaches, builds one
 * batch with fill(b, arg) and commits it; waits for it (30 s at most) and
 * fails the test unless the commit succeeded. */
void cv_setup_batch(void (*fill)(shmsync_batch *b, void *arg), void *arg);

/* ---- barriers ---------------------------------------------------------- */

/* Children arrive (one byte each on `ready`) and block until the parent
 * closes `go`: EOF releases all of them at once. */
struct cv_gate {
	int ready[2];
	int go[2];
};

void cv_gate_init(struct cv_gate *g);

/* The parent, after forking every child that arrives: drops the children's
 * ends, so a dead child shows up as a closed channel. */
void cv_gate_spawned(struct cv_gate *g);

/* The parent, after the children are gone. */
void cv_gate_done(struct cv_gate *g);

void cv_gate_arrive(struct cv_gate *g);

void cv_gate_open(struct cv_gate *g, int n);

/* Waits for the children, failing as soon as any of them fails (the others
 * are then killed) rather than after the others finish. */
void cv_wait_all(const pid_t *pids, int n, unsigned secs);

/* Shared memory for the test's processes, made before they are forked. */
void *cv_shared(size_t len);

/* ---- a growable byte buffer -------------------------------------------- */

struct cv_buf {
	uint8_t *p;
	size_t n, cap;
};

void cv_buf_put(struct cv_buf *b, const void *d, size_t n);

void cv_buf_free(struct cv_buf *b);

void cv_file_write(const char *path, const void *d, size_t n);

struct cv_buf cv_file_read(const char *path);

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

void cv_model_clear(struct cv_model *m);

void cv_model_free(struct cv_model *m);

struct cv_dir *cv_dir_get(const struct cv_model *m, const char *name);

/* Adds an empty directory; NULL if it exists. */
struct cv_dir *cv_dir_add(struct cv_model *m, const char *name);

/* Removes prefix and every directory whose name starts with it; returns
 * how many. */
size_t cv_rmdir(struct cv_model *m, const char *prefix);

/* Whether a directory named prefix, or one under it, exists. */
bool cv_prefix_exists(const struct cv_model *m, const char *prefix);

struct cv_key *cv_key_get(const struct cv_dir *d, const void *k, size_t kn);

void *cv_dup(const void *p, size_t n);

void cv_key_set(struct cv_dir *d, const void *k, size_t kn, const void *v, size_t vn, uint64_t tick);

bool cv_key_del(struct cv_dir *d, const void *k, size_t kn);

size_t cv_model_keys(const struct cv_model *m);

/* Applies one change of an import stream, checking that it makes sense for
 * the state the stream built so far. -1 with a message if not. */
int cv_apply(struct cv_model *m, const shmsync_change *c, char *err, size_t errlen);

/* The worker's snapshot (dirs_iter + dir_iter) as a model. */
void cv_snapshot(shmsync_worker *w, struct cv_model *m);

void cv_fmt_bytes(char *out, size_t len, const void *p, size_t n);

/* 0 if a and b hold the same directories and keys with the same values
 * (and version ticks, where both know them and `ticks`); -1 and the first
 * difference in err. */
int cv_model_cmp(const struct cv_model *a, const struct cv_model *b, bool ticks, char *err, size_t errlen);

void cv_model_copy(struct cv_model *dst, const struct cv_model *src);

/* Serialised: u32 ndirs; per dir: u32 name length, name, u32 nkeys; per
 * key: u32 kn, key, u32 vn, value, u64 tick. */
void cv_model_save(const struct cv_model *m, const char *path);

void cv_take(const struct cv_buf *b, size_t *at, void *out, size_t n);

void cv_model_load(struct cv_model *m, const char *path);

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

void cv_imp_begin(struct cv_imp *r, uint64_t cursor);

int cv_imp_cb(const shmsync_change *c, void *arg);

/* After an import that returned rc >= 0: fails on a broken stream; returns
 * the new cursor. */
uint64_t cv_imp_end(struct cv_imp *r, shmsync_worker *w, int rc, const char *who);

/* The model built from the stream is the worker's snapshot. */
void cv_imp_vs_snapshot(struct cv_imp *r, shmsync_worker *w, struct cv_model *scratch, const char *who);

/* ---- a deterministic single-writer workload full of deletions ----------
 *
 * One writer commits batch after batch, each its own tick, and every batch
 * must commit. Which operations a batch holds depends only on the seed and
 * the state so far, so any process that knows the seed and the tick before
 * the first batch can compute the state at any later tick by replaying
 * (cv_gen_batch with b == NULL): the reference that imports and snapshots
 * are checked against.
 */

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

void cv_gen_init(struct cv_gen *g, unsigned long long seed);

/* Builds (b != NULL) or replays (b == NULL) batch number g->batches, which
 * commits at `tick`, and applies it to ref. */
void cv_gen_batch(struct cv_gen *g, struct cv_model *ref, shmsync_batch *b, uint64_t tick);

/* Batch number i of the workload, built, exported by w and waited for: the
 * test fails unless it commits as tick + 1 (one writer). Returns that tick. */
uint64_t cv_gen_commit(struct cv_gen *g, struct cv_model *ref, shmsync_worker *w, uint64_t tick, int i);

#endif
