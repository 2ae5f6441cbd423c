/* Stalled workers and reclamation (issue 5's bench).
 *
 * Part 1, bytes in use over ticks under churn, four scenarios in one run:
 *   none    no laggard;
 *   wait    reader R1 stopped (SIGSTOP) while it holds a view, stall policy
 *           wait: it pins everything retired after its snapshot;
 *   kill    the same under policy kill: the root SIGKILLs it through its
 *           pidfd once it has held its snapshot max_read_pin (200 ms);
 *   revoke  the same under policy revoke: after 200 ms its snapshot stops
 *           counting; once continued, its view reports invalid, a read
 *           ESTALE, and an import brings it back.
 * Processes: a root, a writer W and two readers (R1, R2) that loop
 * import_next (10 ms timeout, so they sleep offline between ticks) and read a
 * key. W commits one batch per tick, paced at RATE ticks/s, each batch: 8
 * overwrites of random keys of /hot/ (256 keys, 64-byte values), mkdir of a
 * fresh /d/<i>/ with two 32-byte puts and rmdir of /d/<i-8>/, a put of key i
 * into /kv/ and a del of key i-8. Every SAMPLE ticks W records (tick,
 * bytes_in_use) from shmsync_stat and R1's state and pinned bytes from
 * shmsync_workers. In the laggard scenarios R1 stops itself at tick T/4
 * (after an import and a read, so it is online and holds a view; W waits
 * until it is stopped). After T ticks R1 is continued (wait, revoke), its
 * checks run, and W measures bytes in use once the root has reclaimed
 * ("released"). Each scenario's samples go to <out>/stall_<scenario>.dat
 * (--out DIR, default "."); bench/plot_stall.sh turns them into
 * docs/stall.png.
 *
 * Part 2, reclamation overhead on commit throughput, on the shm layer
 * directly (one process, pinned, like bench_commit): random overwrites of
 * 64K keys (16-byte keys, 32-byte values) in batches of 1, 16 and 256 puts,
 * one batch per tick, in three modes interleaved in every repeat:
 *   deferred  no reclamation inside the timed window (as if a reader pinned
 *             everything meanwhile); the backlog is freed after it, timed
 *             separately;
 *   every     shm_reclaim(tick, tick) after every commit (the root's way);
 *   per1000   shm_reclaim every 1000 commits, inside the window.
 * Ratios use this thread's CPU time, per repeat, median over repeats.
 * Overhead = 1 - (every's commits/s) / (deferred's commits/s); target
 * <= 10%.
 */
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "bench_root.h"
#include "bench_util.h"
#include "shm.h"
#include "shmsync.h"

#define MAX_SAMPLES 4096
#define NHOT 256
#define HOT_VAL 64
#define DIR_LIVE 8
#define RATE 3000.0        /* ticks per second, the writer's pace */
#define PIN_NS 200000000LL /* max_read_pin_ns */
#define MAX_REPEATS 64

enum { SC_NONE, SC_WAIT, SC_KILL, SC_REVOKE, NSC };
static const char *const sc_name[NSC] = {"none", "wait", "kill", "revoke"};

struct sample {
	uint64_t i;      /* churn tick: 0 at the first churn batch */
	uint64_t tick;   /* the root's */
	uint64_t bytes;  /* bytes_in_use */
	int r1_state;    /* SHMSYNC_WORKER_*, 0: gone */
	uint64_t r1_pin; /* R1's pinned bytes */
};

/* Shared by every process of the run: made before any fork. */
struct ctl {
	_Atomic int stop_r1;    /* W -> R1: stop yourself after the next read */
	_Atomic int r1_stopped; /* parent -> W: it is stopped */
	_Atomic int r1_go_on;   /* parent -> R1: you were continued */
	_Atomic int quit;       /* parent -> readers */
	_Atomic int w_done;     /* W finished its ticks */
	_Atomic int w_measure;  /* parent -> W: measure "released" now */
	_Atomic int w_measured;
	_Atomic int r1_ok, r1_ready, r2_ready;
	_Atomic int r1_view_valid, r1_get_rc, r1_converged; /* what R1 saw when continued */
	_Atomic uint64_t warnings;
	_Atomic uint64_t reads[2];
	pid_t r1_pid;
	int scenario;
	uint64_t ticks, sample_every;
	uint64_t released, settled_tick;
	uint64_t n;
	struct sample s[MAX_SAMPLES];
};

static struct ctl *ctl;
static char sock_path[108];
static int root_cpu, worker_cpu;

static int wait_child(pid_t pid)
{
	int status;
	if (waitpid(pid, &status, 0) != pid)
		bench_die("waitpid", -errno);
	return status;
}

static void must_exit0(pid_t pid, const char *what)
{
	int status = wait_child(pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "bench_stall: %s failed (%s %d)\n", what,
			WIFEXITED(status) ? "exit" : "signal",
			WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		unlink(sock_path);
		exit(1);
	}
}

static void die_child(const char *what, int rc)
{
	fprintf(stderr, "bench_stall: %s (pid %d): %s\n", what, (int)getpid(), shmsync_strerror(rc));
	_exit(1);
}

/* ---- root ----------------------------------------------------------------- */

static void count_warning(const char *msg, void *arg)
{
	(void)msg;
	(void)arg;
	atomic_fetch_add_explicit(&ctl->warnings, 1, memory_order_relaxed);
}

static int root_main(void *unused)
{
	(void)unused;
	static const int policy[NSC] = {SHMSYNC_STALL_WAIT, SHMSYNC_STALL_WAIT, SHMSYNC_STALL_KILL,
					SHMSYNC_STALL_REVOKE};
	shmsync_root_opts o = {
		.socket_path = sock_path,
		/* The wait scenario keeps everything: room for it. */
		.capacity = (size_t)2 << 30,
		/* A small log, so the data's growth shows beside it; it
		 * holds the whole wait scenario's records. */
		.log_bytes = (size_t)8 << 20,
		.max_read_pin_ns = PIN_NS,
		.stall_policy = policy[ctl->scenario],
		.warn = count_warning,
	};
	return bench_root_serve("bench_stall", &o);
}

static pid_t start_root(void)
{
	return bench_root_start("bench_stall", root_cpu, sock_path, root_main);
}

static shmsync_worker *attach(void)
{
	shmsync_worker *w;
	char err[256] = "";
	int rc = shmsync_attach_msg(&w, sock_path, err, sizeof err);
	if (rc < 0) {
		fprintf(stderr, "bench_stall: attach: %s: %s\n", shmsync_strerror(rc), err);
		_exit(1);
	}
	return w;
}

static int64_t commit(shmsync_worker *w, shmsync_batch *b)
{
	uint64_t seq, tick = 0;
	int rc = shmsync_export(b, 0, &seq);
	if (rc < 0)
		return rc;
	rc = shmsync_wait_committed(w, seq, &tick, 10 * 1000000000LL);
	return rc < 0 ? rc : (int64_t)tick;
}

/* ---- readers ---------------------------------------------------------------- */

static int reader(int idx)
{
	shmsync_worker *w = attach();
	shmsync_view v;
	uint32_t k = 0;
	atomic_store(idx == 0 ? &ctl->r1_ready : &ctl->r2_ready, 1);
	while (!atomic_load(&ctl->quit)) {
		int rc = shmsync_import_next(w, 10000000, NULL, NULL);
		bool stop = idx == 0 && atomic_load(&ctl->stop_r1);
		if (rc == -ETIMEDOUT && stop)
			/* Asleep, so offline: come online at the present. */
			rc = shmsync_import_until(w, shmsync_cursor(w), 0, NULL, NULL);
		if (rc == -ETIMEDOUT || rc == -ESTALE)
			continue;
		if (rc < 0)
			die_child("reader import", rc);
		k = (k + 1) % NHOT;
		rc = shmsync_get(w, "/hot/", &k, sizeof k, &v);
		if (rc == -ENOENT || rc == -ESTALE)
			continue; /* before the writer's setup; revoked meanwhile */
		if (rc < 0)
			die_child("reader get", rc);
		atomic_fetch_add_explicit(&ctl->reads[idx], 1, memory_order_relaxed);
		if (!stop)
			continue;
		/* Online, holding v: stop here until the parent continues us. */
		raise(SIGSTOP);
		while (!atomic_load(&ctl->r1_go_on))
			usleep(1000);
		atomic_store(&ctl->r1_view_valid, shmsync_view_valid(w, &v));
		atomic_store(&ctl->r1_get_rc, shmsync_get(w, "/hot/", &k, sizeof k, &v));
		/* Rejoin and converge: import up to the writer's last tick. */
		for (int i = 0; i < 1000; i++) {
			rc = shmsync_import_next(w, 10000000, NULL, NULL);
			if (rc < 0 && rc != -ETIMEDOUT && rc != -ESTALE)
				die_child("reader rejoin", rc);
			if (rc >= 0 && shmsync_cursor(w) >= ctl->settled_tick &&
			    shmsync_get(w, "/hot/", &k, sizeof k, &v) == 0) {
				atomic_store(&ctl->r1_converged, 1);
				break;
			}
		}
		atomic_store(&ctl->stop_r1, 0);
	}
	shmsync_detach(w);
	return 0;
}

static int reader1(void *unused)
{
	(void)unused;
	return reader(0);
}

static int reader2(void *unused)
{
	(void)unused;
	return reader(1);
}

/* ---- writer ------------------------------------------------------------------ */

static void sample(shmsync_worker *w, uint64_t i)
{
	shmsync_stats st;
	int rc = shmsync_stat(w, &st);
	if (rc < 0)
		die_child("stat", rc);
	shmsync_worker_info info[8];
	int n = shmsync_workers(w, info, 8);
	struct sample s = {i, st.tick, st.bytes_in_use, 0, 0};
	for (int j = 0; j < n && j < 8; j++)
		if (info[j].pid == ctl->r1_pid) {
			s.r1_state = info[j].state;
			s.r1_pin = info[j].pinned_bytes;
		}
	if (ctl->n < MAX_SAMPLES)
		ctl->s[ctl->n++] = s;
}

/* bytes in use once the root has reclaimed: unchanged over 3 reads 60 ms
 * apart (its idle timer runs every 50 ms while anything is retired). */
static uint64_t settle(shmsync_worker *w)
{
	shmsync_stats st;
	uint64_t last = 0;
	for (int i = 0, same = 0; i < 100 && same < 3; i++) {
		usleep(60000);
		if (shmsync_stat(w, &st) < 0)
			break;
		same = st.bytes_in_use == last ? same + 1 : 0;
		last = st.bytes_in_use;
	}
	return last;
}

static int writer(void *unused)
{
	(void)unused;
	shmsync_worker *w = attach();
	shmsync_offline(w); /* it never reads */
	shmsync_batch *b;
	uint8_t val[HOT_VAL];
	int rc;
	memset(val, 'v', sizeof val);
	if ((rc = shmsync_begin(w, &b)) < 0)
		die_child("begin", rc);
	shmsync_mkdir(b, "/hot/");
	shmsync_mkdir(b, "/kv/");
	for (uint32_t k = 0; k < NHOT; k++)
		shmsync_put(b, "/hot/", &k, sizeof k, val, sizeof val);
	if ((rc = (int)commit(w, b)) < 0)
		die_child("setup", rc);
	uint64_t seed = 0x5eed;
	uint64_t t0 = bench_now_ns();
	char dir[32];
	for (uint64_t i = 0; i < ctl->ticks; i++) {
		if (i == ctl->ticks / 4 && ctl->scenario != SC_NONE) {
			atomic_store(&ctl->stop_r1, 1);
			for (int n = 0; !atomic_load(&ctl->r1_stopped); n++) {
				if (n > 10000)
					die_child("R1 did not stop", -ETIMEDOUT);
				usleep(1000);
			}
			t0 = bench_now_ns() - (uint64_t)((double)i / RATE * 1e9);
		}
		if ((rc = shmsync_begin(w, &b)) < 0)
			die_child("begin", rc);
		memcpy(val, &i, sizeof i);
		for (int j = 0; j < 8; j++) {
			uint32_t k = (uint32_t)bench_rand_below(&seed, NHOT);
			shmsync_put(b, "/hot/", &k, sizeof k, val, sizeof val);
		}
		snprintf(dir, sizeof dir, "/d/%" PRIu64 "/", i);
		shmsync_mkdir(b, dir);
		shmsync_put(b, dir, "a", 1, val, 32);
		shmsync_put(b, dir, "b", 1, val, 32);
		shmsync_put(b, "/kv/", &i, sizeof i, val, 32);
		if (i >= DIR_LIVE) {
			snprintf(dir, sizeof dir, "/d/%" PRIu64 "/", i - DIR_LIVE);
			shmsync_rmdir(b, dir);
			uint64_t old = i - DIR_LIVE;
			shmsync_del(b, "/kv/", &old, sizeof old);
		}
		if ((rc = (int)commit(w, b)) < 0)
			die_child("commit", rc);
		if (i % ctl->sample_every == 0)
			sample(w, i);
		/* Pace: RATE ticks per second. */
		uint64_t due = t0 + (uint64_t)((double)(i + 1) / RATE * 1e9), now = bench_now_ns();
		if (due > now)
			usleep((useconds_t)((due - now) / 1000));
	}
	sample(w, ctl->ticks);
	shmsync_stats st;
	shmsync_stat(w, &st);
	ctl->settled_tick = st.tick;
	atomic_store(&ctl->w_done, 1);
	for (int n = 0; !atomic_load(&ctl->w_measure); n++) {
		if (n > 30000)
			die_child("no word from the parent", -ETIMEDOUT);
		usleep(1000);
	}
	ctl->released = settle(w);
	atomic_store(&ctl->w_measured, 1);
	shmsync_detach(w);
	return 0;
}

/* ---- part 1: one scenario ------------------------------------------------------ */

struct scenario_result {
	uint64_t start, peak, final, released, acted_at, r1_pin_end;
	int r1_state_end;
	const char *check;
	bool check_ok;
	double secs;
};

static struct scenario_result run_scenario(int sc, uint64_t ticks, uint64_t every, const char *out_dir)
{
	struct scenario_result res = {0};
	memset(ctl, 0, sizeof *ctl);
	ctl->scenario = sc;
	ctl->ticks = ticks;
	ctl->sample_every = every;
	uint64_t t0 = bench_now_ns();
	pid_t root = start_root();
	pid_t r1 = bench_spawn(worker_cpu, reader1, NULL);
	ctl->r1_pid = r1;
	pid_t r2 = bench_spawn(worker_cpu, reader2, NULL);
	while (!atomic_load(&ctl->r1_ready) || !atomic_load(&ctl->r2_ready))
		usleep(1000);
	pid_t w = bench_spawn(worker_cpu, writer, NULL);
	bool r1_alive = true;
	if (sc != SC_NONE) {
		int status;
		if (waitpid(r1, &status, WUNTRACED) != r1 || !WIFSTOPPED(status)) {
			fprintf(stderr, "bench_stall: R1 did not stop\n");
			exit(1);
		}
		atomic_store(&ctl->r1_stopped, 1);
	}
	while (!atomic_load(&ctl->w_done))
		usleep(1000);
	int r1_status = 0;
	if (sc == SC_KILL) {
		/* The root should have killed it long ago; bounded. */
		for (int i = 0; i < 5000 && r1_alive; i++) {
			if (waitpid(r1, &r1_status, WNOHANG) == r1)
				r1_alive = false;
			else
				usleep(1000);
		}
		if (r1_alive) {
			kill(r1, SIGKILL);
			wait_child(r1);
			r1_alive = false;
			r1_status = 0; /* not the root's doing: the check fails */
		}
	} else if (sc != SC_NONE) {
		atomic_store(&ctl->r1_go_on, 1);
		kill(r1, SIGCONT);
		for (int i = 0; i < 5000 && atomic_load(&ctl->stop_r1); i++)
			usleep(1000);
	}
	atomic_store(&ctl->w_measure, 1);
	while (!atomic_load(&ctl->w_measured))
		usleep(1000);
	atomic_store(&ctl->quit, 1);
	must_exit0(w, "writer");
	if (r1_alive)
		must_exit0(r1, "R1");
	must_exit0(r2, "R2");
	kill(root, SIGTERM);
	must_exit0(root, "root");
	unlink(sock_path);
	res.secs = (double)(bench_now_ns() - t0) / 1e9;

	/* Figures: start = the last sample before R1 stops (or at T/4). */
	uint64_t stop_at = ticks / 4;
	res.acted_at = UINT64_MAX;
	for (uint64_t j = 0; j < ctl->n; j++) {
		const struct sample *s = &ctl->s[j];
		if (s->i <= stop_at)
			res.start = s->bytes;
		if (s->bytes > res.peak)
			res.peak = s->bytes;
		if (s->i > stop_at && res.acted_at == UINT64_MAX &&
		    ((sc == SC_KILL && s->r1_state == 0) ||
		     (sc == SC_REVOKE && s->r1_state == SHMSYNC_WORKER_REVOKED)))
			res.acted_at = s->i;
	}
	res.final = ctl->n ? ctl->s[ctl->n - 1].bytes : 0;
	res.r1_state_end = ctl->n ? ctl->s[ctl->n - 1].r1_state : 0;
	res.r1_pin_end = ctl->n ? ctl->s[ctl->n - 1].r1_pin : 0;
	res.released = ctl->released;
	switch (sc) {
	case SC_NONE:
		res.check = "-";
		res.check_ok = true;
		break;
	case SC_WAIT:
		/* Live, or lagging (its cursor keeps a quarter of the log). */
		res.check_ok = (res.r1_state_end == SHMSYNC_WORKER_LIVE ||
				res.r1_state_end == SHMSYNC_WORKER_LAGGING) &&
			       res.r1_pin_end > 0 && atomic_load(&ctl->r1_view_valid) == 1 &&
			       atomic_load(&ctl->r1_converged);
		res.check = res.check_ok ? "R1 live, pinning; view valid after" : "UNEXPECTED";
		break;
	case SC_KILL:
		res.check_ok = WIFSIGNALED(r1_status) && WTERMSIG(r1_status) == SIGKILL;
		res.check = res.check_ok ? "R1 SIGKILLed and released" : "UNEXPECTED";
		break;
	case SC_REVOKE:
		res.check_ok = atomic_load(&ctl->r1_view_valid) == 0 &&
			       atomic_load(&ctl->r1_get_rc) == -ESTALE && atomic_load(&ctl->r1_converged);
		res.check = res.check_ok ? "view invalid, ESTALE, converged" : "UNEXPECTED";
		break;
	}

	char path[4096];
	snprintf(path, sizeof path, "%s/stall_%s.dat", out_dir, sc_name[sc]);
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "bench_stall: %s: %s\n", path, strerror(errno));
		exit(1);
	}
	fprintf(f,
		"# bench_stall scenario %s: churn tick, root tick, bytes_in_use, R1 state, R1 pinned bytes\n",
		sc_name[sc]);
	for (uint64_t j = 0; j < ctl->n; j++)
		fprintf(f, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %d %" PRIu64 "\n", ctl->s[j].i,
			ctl->s[j].tick, ctl->s[j].bytes, ctl->s[j].r1_state, ctl->s[j].r1_pin);
	fclose(f);
	return res;
}

/* ---- part 2: reclamation overhead --------------------------------------------- */

#define KEY_LEN 16
#define VAL_LEN 32
#define MAX_BATCH 256
#define NKEYS 65536

static const char DIR_NAME[] = "/bench/";
static uint8_t keys[NKEYS][KEY_LEN];

static void make_key(uint8_t *k, uint64_t i)
{
	uint64_t mix = (i + 1) * 0x9E3779B97F4A7C15ULL;
	mix ^= mix >> 29;
	memcpy(k, &i, 8);
	memcpy(k + 8, &mix, 8);
}

static uint64_t shm_commit(struct shm_root *root, const struct shm_op *ops, size_t n)
{
	size_t failed = 0;
	uint64_t tick;
	shm_commit_begin(root);
	int rc = shm_apply_batch(root, ops, n, &failed);
	if (rc < 0)
		bench_die("shm_apply_batch", rc);
	rc = shm_commit_publish(root, &tick);
	if (rc != 1)
		bench_die("shm_commit_publish", rc < 0 ? rc : -EIO);
	return tick;
}

static void reclaim_all(struct shm_root *root, uint64_t tick)
{
	struct shm_reclaim_report rep;
	/* Twice: objects unlinked by the first call are freed by the next. */
	for (int i = 0; i < 2; i++) {
		int rc = shm_reclaim(root, tick, tick, 0, &rep);
		if (rc < 0)
			bench_die("shm_reclaim", rc);
	}
}

enum { M_DEFERRED, M_EVERY, M_PER1000, NMODES };
static const char *const mode_name[NMODES] = {"deferred", "every", "per1000"};

/* n commits of `batch` random overwrites; returns CPU ns of the window;
 * *after_ns: CPU ns of the reclaim after it. With `share` (mode every
 * only), each shm_reclaim call is timed too (CLOCK_MONOTONIC, vDSO) and
 * *share is their part of the window's wall time: a direct reading of what
 * reclamation takes, at the price of two clock reads per commit (so this
 * run's rate is not used). */
static uint64_t run_mode(struct shm_root *root, int mode, size_t batch, uint64_t n, uint64_t *seed,
			 uint64_t *after_ns, double *share)
{
	struct shm_op ops[MAX_BATCH];
	uint8_t vals[MAX_BATCH][VAL_LEN];
	for (size_t j = 0; j < batch; j++)
		ops[j] = (struct shm_op){.kind = SHM_OP_PUT,
					 .dir = DIR_NAME,
					 .dir_len = sizeof DIR_NAME - 1,
					 .key_len = KEY_LEN,
					 .value = vals[j],
					 .value_len = VAL_LEN};
	struct shm_reclaim_report rep;
	uint64_t tick = 0, in_reclaim = 0;
	uint64_t c0 = bench_cpu_ns(), w0 = bench_now_ns();
	for (uint64_t c = 0; c < n; c++) {
		for (size_t j = 0; j < batch; j++) {
			ops[j].key = keys[bench_rand_below(seed, NKEYS)];
			memcpy(vals[j], seed, sizeof *seed);
		}
		tick = shm_commit(root, ops, batch);
		if (mode == M_EVERY || (mode == M_PER1000 && c % 1000 == 999)) {
			uint64_t r0 = share ? bench_now_ns() : 0;
			int rc = shm_reclaim(root, tick, tick, 0, &rep);
			if (rc < 0)
				bench_die("shm_reclaim", rc);
			if (share)
				in_reclaim += bench_now_ns() - r0;
		}
	}
	uint64_t ns = bench_cpu_ns() - c0;
	if (share)
		*share = (double)in_reclaim / (double)(bench_now_ns() - w0);
	c0 = bench_cpu_ns();
	reclaim_all(root, tick);
	*after_ns = bench_cpu_ns() - c0;
	return ns;
}

static const size_t BATCHES[] = {1, 16, 256};
#define NBATCH (sizeof BATCHES / sizeof BATCHES[0])

/* ---- main ------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
	/* --out DIR is ours; the rest are the shared options. */
	const char *out_dir = ".";
	char *args[64];
	int nargs = 0;
	for (int i = 0; i < argc && nargs < 63; i++) {
		if (i > 0 && !strcmp(argv[i], "--out") && i + 1 < argc)
			out_dir = argv[++i];
		else
			args[nargs++] = argv[i];
	}
	args[nargs] = NULL;
	struct bench_opts o;
	bench_parse(
		nargs, args, &o,
		"Bytes in use over ticks under churn with no laggard and with a reader stopped under the\n"
		"stall policies wait, kill and revoke (data files stall_<scenario>.dat in --out DIR, default "
		".);\n"
		"reclamation overhead on commit throughput (reclaim after every commit vs deferred).");
	/* A hang kills the bench, and its children with it (PDEATHSIG). */
	alarm(o.quick ? 60 : 600);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	worker_cpu = o.cpu;
	root_cpu = ncpu > 1 ? (int)((o.cpu + 1) % ncpu) : o.cpu;
	if (mkdir(out_dir, 0777) != 0 && errno != EEXIST)
		bench_die("mkdir --out", -errno);
	snprintf(sock_path, sizeof sock_path, "/tmp/bench_stall-%d.sock", (int)getpid());
	ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ctl == MAP_FAILED)
		bench_die("mmap", -errno);

	const uint64_t ticks = o.quick ? 1600 : 6000;
	const uint64_t every = o.quick ? 10 : 20;
	json_t *doc = bench_json_new("bench_stall", &o);
	if (!o.json)
		printf("bench_stall: workers on CPU %d, root on CPU %d; %" PRIu64
		       " ticks at %.0f/s, reader R1 "
		       "stopped at tick %" PRIu64 ", max_read_pin %lld ms%s\n\n",
		       worker_cpu, root_cpu, ticks, RATE, ticks / 4, PIN_NS / 1000000,
		       o.quick ? " (QUICK: short run, targets not evaluated)" : "");

	/* Part 1. */
	json_t *part1 = json_object();
	json_object_set_new(part1, "ticks", json_integer((json_int_t)ticks));
	json_object_set_new(part1, "rate_ticks_per_s", json_real(RATE));
	json_object_set_new(part1, "sample_every", json_integer((json_int_t)every));
	json_object_set_new(part1, "stop_at_tick", json_integer((json_int_t)(ticks / 4)));
	json_object_set_new(part1, "max_read_pin_ns", json_integer(PIN_NS));
	json_object_set_new(part1, "out_dir", json_string(out_dir));
	json_t *scs = json_array();
	if (!o.json)
		printf("  %-7s %10s %10s %10s %10s %10s %9s  %s\n", "policy", "start MiB", "peak MiB",
		       "final MiB", "growth", "released", "acted at", "check");
	bool all_ok = true;
	for (int sc = 0; sc < NSC; sc++) {
		struct scenario_result r = run_scenario(sc, ticks, every, out_dir);
		all_ok = all_ok && r.check_ok;
		json_t *j = json_object();
		json_object_set_new(j, "scenario", json_string(sc_name[sc]));
		json_object_set_new(j, "start_bytes", json_integer((json_int_t)r.start));
		json_object_set_new(j, "peak_bytes", json_integer((json_int_t)r.peak));
		json_object_set_new(j, "final_bytes", json_integer((json_int_t)r.final));
		json_object_set_new(j, "growth_bytes", json_integer((json_int_t)(r.peak - r.start)));
		json_object_set_new(j, "released_bytes", json_integer((json_int_t)r.released));
		if (r.acted_at != UINT64_MAX)
			json_object_set_new(j, "policy_acted_at_tick", json_integer((json_int_t)r.acted_at));
		json_object_set_new(j, "r1_state_end", json_integer(r.r1_state_end));
		json_object_set_new(j, "r1_pinned_bytes_end", json_integer((json_int_t)r.r1_pin_end));
		json_object_set_new(j, "warnings", json_integer((json_int_t)atomic_load(&ctl->warnings)));
		json_object_set_new(j, "check", json_string(r.check));
		json_object_set_new(j, "check_ok", json_boolean(r.check_ok));
		json_object_set_new(j, "seconds", json_real(r.secs));
		json_t *pts = json_array();
		for (uint64_t i = 0; i < ctl->n; i++) {
			json_t *p = json_array();
			json_array_append_new(p, json_integer((json_int_t)ctl->s[i].i));
			json_array_append_new(p, json_integer((json_int_t)ctl->s[i].bytes));
			json_array_append_new(pts, p);
		}
		json_object_set_new(j, "samples_tick_bytes", pts);
		json_array_append_new(scs, j);
		if (!o.json) {
			char acted[32] = "-";
			if (r.acted_at != UINT64_MAX)
				snprintf(acted, sizeof acted, "%" PRIu64, r.acted_at);
			printf("  %-7s %10.2f %10.2f %10.2f %+9.2f%% %10.2f %9s  %s\n", sc_name[sc],
			       (double)r.start / 1048576.0, (double)r.peak / 1048576.0,
			       (double)r.final / 1048576.0,
			       100.0 * ((double)r.peak - (double)r.start) / (double)r.start,
			       (double)r.released / 1048576.0, acted, r.check);
		}
	}
	json_object_set_new(part1, "scenarios", scs);
	json_object_set_new(doc, "bytes_over_ticks", part1);

	/* Part 2, in this process (every child is gone). */
	bench_pin(o.cpu);
	const uint64_t base_puts = o.quick ? 65536 : 1048576;
	/* A log that holds a whole deferred window (1M puts' records), so the
	 * deferred mode never pays for dropping records (log_overruns is
	 * reported). */
	struct shm_root_opts so = {.capacity = (size_t)2 << 30, .log_bytes = (size_t)128 << 20};
	struct shm_err err = {{0}};
	struct shm_root *root = NULL;
	int rc = shm_root_create(&root, &so, &err);
	if (rc < 0) {
		fprintf(stderr, "shm_root_create: %s\n", err.msg);
		bench_die("shm_root_create", rc);
	}
	for (uint64_t i = 0; i < NKEYS; i++)
		make_key(keys[i], i);
	{
		struct shm_op mk = {.kind = SHM_OP_MKDIR, .dir = DIR_NAME, .dir_len = sizeof DIR_NAME - 1};
		uint64_t t = shm_commit(root, &mk, 1);
		struct shm_op ops[MAX_BATCH];
		uint8_t v[VAL_LEN] = {0};
		for (uint64_t i = 0; i < NKEYS; i += MAX_BATCH) {
			for (size_t j = 0; j < MAX_BATCH; j++)
				ops[j] = (struct shm_op){.kind = SHM_OP_PUT,
							 .dir = DIR_NAME,
							 .dir_len = sizeof DIR_NAME - 1,
							 .key = keys[i + j],
							 .key_len = KEY_LEN,
							 .value = v,
							 .value_len = VAL_LEN};
			t = shm_commit(root, ops, MAX_BATCH);
		}
		reclaim_all(root, t);
	}
	int reps = o.repeats > MAX_REPEATS ? MAX_REPEATS : o.repeats;
	uint64_t seed = 0x1234567u;
	json_t *rows = json_array();
	bool overhead_ok = true;
	if (!o.json)
		printf("\nreclamation overhead: %d keys, %d-byte values, one batch per tick, CPU time, "
		       "median of %d\n"
		       "  %-6s %11s %11s %11s %11s %11s %10s %10s %10s %7s %8s\n",
		       NKEYS, VAL_LEN, reps, "batch", "deferred/s", "def+after/s", "every/s", "per1000/s",
		       "after ns/c", "every/def", "p1000/def", "every/d+a", "share", "target");
	for (size_t bi = 0; bi < NBATCH; bi++) {
		size_t batch = BATCHES[bi];
		uint64_t n = base_puts / batch / (batch == 1 ? 4 : 1);
		double cps[NMODES][MAX_REPEATS], ratio_every[MAX_REPEATS], ratio_1000[MAX_REPEATS],
			after[MAX_REPEATS], total[MAX_REPEATS], ratio_total[MAX_REPEATS], share[MAX_REPEATS];
		uint64_t dummy;
		for (int m = 0; m < NMODES; m++) /* warm-up */
			run_mode(root, m, batch, n / 8 + 1, &seed, &dummy, NULL);
		for (int r = 0; r < reps; r++) {
			for (int m = 0; m < NMODES; m++) {
				uint64_t after_ns = 0;
				/* Rotate the order so no mode always runs first. */
				int mm = (m + r) % NMODES;
				uint64_t ns = run_mode(root, mm, batch, n, &seed, &after_ns, NULL);
				cps[mm][r] = (double)n / ((double)ns / 1e9);
				if (mm == M_DEFERRED) {
					after[r] = (double)after_ns / (double)n;
					total[r] = (double)n / ((double)(ns + after_ns) / 1e9);
				}
			}
			ratio_every[r] = cps[M_EVERY][r] / cps[M_DEFERRED][r];
			ratio_1000[r] = cps[M_PER1000][r] / cps[M_DEFERRED][r];
			ratio_total[r] = cps[M_EVERY][r] / total[r];
			run_mode(root, M_EVERY, batch, n, &seed, &dummy, &share[r]);
		}
		double med[NMODES];
		for (int m = 0; m < NMODES; m++)
			med[m] = bench_median_copy(cps[m], (size_t)reps);
		double re = bench_median_copy(ratio_every, (size_t)reps);
		double r1000 = bench_median_copy(ratio_1000, (size_t)reps);
		double aft = bench_median_copy(after, (size_t)reps);
		double tot = bench_median_copy(total, (size_t)reps);
		double rtot = bench_median_copy(ratio_total, (size_t)reps);
		double shr = bench_median_copy(share, (size_t)reps);
		bool ok = 1 - re <= 0.10;
		overhead_ok = overhead_ok && ok;
		const char *verdict = o.quick ? "n/e" : bench_met(ok);
		json_t *row = json_object();
		json_object_set_new(row, "batch", json_integer((json_int_t)batch));
		json_object_set_new(row, "commits_per_repeat", json_integer((json_int_t)n));
		for (int m = 0; m < NMODES; m++) {
			char key[64];
			snprintf(key, sizeof key, "%s_commits_per_cpu_s_median", mode_name[m]);
			json_object_set_new(row, key, json_real(med[m]));
			snprintf(key, sizeof key, "%s_commits_per_cpu_s_repeats", mode_name[m]);
			json_object_set_new(row, key, bench_json_array(cps[m], (size_t)reps));
		}
		json_object_set_new(row, "deferred_reclaim_after_cpu_ns_per_commit_median", json_real(aft));
		json_object_set_new(row, "deferred_with_after_commits_per_cpu_s_median", json_real(tot));
		json_object_set_new(row, "every_over_deferred_with_after_median", json_real(rtot));
		json_object_set_new(row, "every_reclaim_share_of_wall_median", json_real(shr));
		json_object_set_new(row, "every_over_deferred_median", json_real(re));
		json_object_set_new(row, "every_over_deferred_repeats",
				    bench_json_array(ratio_every, (size_t)reps));
		json_object_set_new(row, "per1000_over_deferred_median", json_real(r1000));
		json_object_set_new(row, "overhead_every", json_real(1 - re));
		json_object_set_new(row, "target", json_string("overhead <= 10%"));
		json_object_set_new(row, "verdict", json_string(o.quick ? "not evaluated" : bench_met(ok)));
		json_array_append_new(rows, row);
		if (!o.json)
			printf("  %-6zu %11.0f %11.0f %11.0f %11.0f %11.1f %9.3fx %9.3fx %9.3fx %6.1f%% "
			       "%8s\n",
			       batch, med[M_DEFERRED], tot, med[M_EVERY], med[M_PER1000], aft, re, r1000,
			       rtot, 100 * shr, verdict);
	}
	struct shm_stats sst;
	shm_root_stats(root, &sst);
	json_object_set_new(doc, "reclaim_overhead_log_overruns", json_integer((json_int_t)sst.log_overruns));
	shm_root_destroy(root);
	json_object_set_new(doc, "reclaim_overhead", rows);
	json_object_set_new(doc, "stall_checks_ok", json_boolean(all_ok));
	if (!o.quick)
		json_object_set_new(doc, "target_reclaim_overhead", json_string(bench_met(overhead_ok)));
	if (!o.json)
		printf("\n");
	bench_json_print(doc);
	json_decref(doc);
	return all_ok ? 0 : 1;
}
