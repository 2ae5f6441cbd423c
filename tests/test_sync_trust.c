/* Who may serve whom, and attach under connection floods (issue 9).
 *
 * 1. Workers check who the root is: a stranger (uid 65534) that serves
 *    the socket path, opened to everyone, is refused with -EPERM naming
 *    its uid, by a worker running as uid 0 and by one running as uid
 *    65533; with SHMSYNC_ROOT_UIDS=65534 both attach. A malformed
 *    SHMSYNC_ROOT_UIDS is -EINVAL with a message.
 * 2. The root is not dumpable: a process of the root's uid (65534, the
 *    root's parent, so no ptrace policy stands in the way) cannot open
 *    /proc/<root>/mem for writing, even though the root made itself
 *    dumpable before shmsync_root_open; a worker of that uid still
 *    attaches.
 * 3. allow_uids end to end: a uid-0 root allowing {0, 65534} serves a
 *    uid-65534 worker and refuses uid 65533 with -EACCES naming it.
 * 4. Refused peers (uid 65533) flooding connect() cannot make 20 honest
 *    attaches (uid 65534, allowed) fail.
 * 5. A same-uid flood of silent connections (never a hello, kept open)
 *    cannot make 20 honest attaches fail, nor be reported as "not a
 *    shmsync root".
 *    In 4 and 5 every other honest attach says its hello 20 ms after its
 *    connect (through $SHMSYNC_ATTACH_FD, as under a supervisor): 676bf0e
 *    pushed such a waiting peer out for the flood's connections every
 *    time, while the plain attaches lost the race only now and then.
 *
 * Parts 1 (but the malformed list), 3 and 4 switch uids and are skipped,
 * with a notice, when not run as root; 2 and 5 then run as the test's own
 * uid. Socket paths live in a fresh directory that every uid may write
 * (mode 01777, like /tmp).
 *
 * Usage: test_sync_trust [part numbers] (default: all), so one part can be
 * watched on its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "synctest.h"
#include "synctest_death.h"

#define MS 1000000LL
#define STRANGER 65534u /* a root nobody asked for; in 3 and 4 an allowed worker */
#define OTHER 65533u    /* a victim in 1, refused in 3 and 4 */

/* Eight: at HEAD one process holds at most PENDING_PER_PID (4) of the
 * MAX_PENDING (64) entries for connections that have not said hello, so
 * eight same-uid flooders leave free entries and never push out an
 * honest one. (Many more processes of an allowed uid can, by design: the
 * worker then hears "busy" and its library retries.) */
#define FLOODERS 8
#define SLOW_HELLO_NS (20 * MS)
#define HONEST_KIDS 4
#define HONEST_EACH 5 /* 20 honest attaches in all */
#define FLOOD_NS (3000 * MS)
#define FLOOD_MAX 300000 /* connects in all at most */
#define FLOOD_KEEP 200   /* connections a flooder keeps open at once */

struct shared {
	_Atomic pid_t ready; /* the root that opened (and chmod'ed, if asked) */
	_Atomic int root_dumpable;
	/* a child's attach, for the parent to check */
	int rc;
	char err[256];
	int mem_errno; /* open of /proc/<root>/mem: 0 if it opened */
	/* floods */
	_Atomic int stop;
	_Atomic uint64_t connects, connect_errs;
	_Atomic int honest_ok, honest_fail;
	char fail_msg[4][256];
};

static struct shared *C;
static char dir[64];
static bool is_root;

static void sock_at(const char *name)
{
	snprintf(st_sock, sizeof(st_sock), "%s/%s", dir, name);
}

/* Drops to uid (and the gid of the same number) for good. The parent-death
 * signal is cleared by a credential change, so it is set again. */
static void become(uid_t uid, pid_t parent)
{
	gid_t gid = (gid_t)uid;
	if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
		T_FAIL("becoming uid %u: %s", (unsigned)uid, strerror(errno));
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(5);
}

enum { DUMPABLE = 1, CHMOD_ALL = 2 };

/* A root serving st_sock, in this (child) process, as whatever uid it has.
 * DUMPABLE: made dumpable first (a uid change left it not dumpable), so
 * only shmsync_root_open can make it not dumpable again. CHMOD_ALL: the
 * socket opened to everyone after open, as a stranger who wants to be
 * reached does; 676bf0e left it 0600 whatever the allow list said. */
static _Noreturn void run_root(const shmsync_root_opts *base, int flags)
{
	if (flags & DUMPABLE)
		T_ASSERT(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == 0);
	shmsync_root_opts o = base ? *base : (shmsync_root_opts){0};
	char err[256] = "";
	o.socket_path = st_sock;
	o.errbuf = err;
	o.errbuf_len = sizeof(err);
	o.capacity = (size_t)64 << 20;
	shmsync_root *r;
	int rc = shmsync_root_open(&r, &o);
	if (rc < 0) {
		fprintf(stderr, "root (uid %u): %s: %s\n", (unsigned)geteuid(), shmsync_strerror(rc), err);
		_exit(3);
	}
	atomic_store(&C->root_dumpable, prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
	if ((flags & CHMOD_ALL) && chmod(st_sock, 0666) < 0)
		T_FAIL("chmod %s: %s", st_sock, strerror(errno));
	signal(SIGTERM, st_on_term);
	atomic_store(&C->ready, getpid());
	rc = shmsync_root_run(r);
	shmsync_root_close(r);
	_exit(rc < 0 ? 4 : 0);
}

static void wait_ready(pid_t root)
{
	bool ok;
	SD_WAIT(ok, atomic_load(&C->ready) == root, 5000 * MS);
	if (!ok)
		T_FAIL("the root (pid %d) did not come up at %s", (int)root, st_sock);
}

/* A root as uid (-1: the test's own), tracked and ready. */
static pid_t start_root(long uid, const shmsync_root_opts *o, int flags)
{
	unlink(st_sock);
	atomic_store(&C->ready, 0);
	pid_t me = getpid(), pid = sd_fork();
	if (pid == 0) {
		if (uid >= 0)
			become((uid_t)uid, me);
		run_root(o, flags);
	}
	wait_ready(pid);
	return pid;
}

static void stop_root(pid_t pid)
{
	kill(pid, SIGTERM);
	T_EQ(sd_reap(pid), 0);
	unlink(st_sock);
}

/* One committed batch, so an attach is shown to work, not only to answer:
 * a directory named after the caller, which needs no parent and is new
 * for every (tag, pid). */
static int commit_one(shmsync_worker *w, const char *tag)
{
	char d[64];
	snprintf(d, sizeof(d), "/%s-%d/", tag, (int)getpid());
	shmsync_batch *b;
	int rc = shmsync_begin(w, &b);
	if (rc < 0)
		return rc;
	rc = shmsync_mkdir(b, d);
	if (rc < 0) {
		shmsync_abort(b);
		return rc;
	}
	int64_t t = st_commit(b);
	return t < 0 ? (int)t : 0;
}

/* Attaches to st_sock in a child as uid (-1: the test's own) with
 * SHMSYNC_ROOT_UIDS set to env (NULL: unset), commits one put if that
 * worked; the result in C->rc and C->err, also returned. */
static int attach_as(long uid, const char *env)
{
	C->rc = 1;
	C->err[0] = 0;
	pid_t me = getpid(), k = sd_fork();
	if (k == 0) {
		if (uid >= 0)
			become((uid_t)uid, me);
		if (env)
			setenv("SHMSYNC_ROOT_UIDS", env, 1);
		else
			unsetenv("SHMSYNC_ROOT_UIDS");
		shmsync_worker *w = NULL;
		char err[256] = "";
		int rc = shmsync_attach_msg(&w, st_sock, err, sizeof(err));
		if (rc == 0) {
			rc = commit_one(w, "k");
			if (rc < 0)
				snprintf(err, sizeof(err), "the commit after attach: %s",
					 shmsync_strerror(rc));
			shmsync_detach(w);
		}
		C->rc = rc;
		snprintf(C->err, sizeof(C->err), "%s", err);
		exit(0);
	}
	T_EQ(sd_reap(k), 0);
	printf("  uid %ld%s%s: attach -> %s%s%s\n", uid < 0 ? (long)geteuid() : uid,
	       env ? ", SHMSYNC_ROOT_UIDS=" : "", env ? env : "", C->rc ? shmsync_strerror(C->rc) : "ok",
	       C->rc ? ": " : "", C->rc ? C->err : "");
	return C->rc;
}

/* A part's checks go on after one fails, so a run shows every hole at
 * once; the part fails at its end. */
static int part_fails;

#define CHECK(cond, ...) T_CHECK(part_fails, cond, __VA_ARGS__)

static void end_part(const char *what)
{
	if (part_fails)
		T_FAIL("%s: %d check(s) failed", what, part_fails);
}

static void expect_refused(int want, const char *names)
{
	CHECK(C->rc == want, "attach returned %d (%s), expected %s", C->rc,
	      C->rc ? shmsync_strerror(C->rc) : "attached", shmsync_strerror(want));
	CHECK(C->rc != want || strstr(C->err, names), "the message does not name \"%s\": \"%s\"", names,
	      C->err);
}

static void expect_ok(void)
{
	CHECK(C->rc == 0, "attach returned %d (%s: %s), expected success", C->rc, shmsync_strerror(C->rc),
	      C->err);
}

/* ---- 1. workers check who the root is ----------------------------------- */

static void part_root_uid(void)
{
	printf("1. the worker checks the root's uid\n");
	if (is_root) {
		/* The stranger allows its victims (at HEAD that makes the
		 * socket 0666 by itself) and opens the socket to everyone
		 * anyway. */
		uid_t allow[] = {0, OTHER};
		shmsync_root_opts o = {.allow_uids = allow, .n_allow_uids = 2};
		sock_at("stranger.sock");
		pid_t r = start_root(STRANGER, &o, CHMOD_ALL);
		char names[32];
		snprintf(names, sizeof(names), "uid %u", STRANGER);
		attach_as(-1, NULL);
		expect_refused(-EPERM, names);
		attach_as(OTHER, NULL);
		expect_refused(-EPERM, names);
		/* Trusting someone else does not trust the stranger. */
		attach_as(OTHER, "12345");
		expect_refused(-EPERM, names);
		/* Named as trusted, it serves both. */
		attach_as(-1, "65534");
		expect_ok();
		attach_as(OTHER, "1,65534");
		expect_ok();
		stop_root(r);
	} else {
		printf("  not root: the stranger root (uid %u) skipped\n", STRANGER);
	}
	/* A malformed list is an error, not silently "trust nobody else":
	 * against a root of our own uid, which would be trusted anyway. */
	sock_at("own.sock");
	pid_t own = start_root(-1, NULL, 0);
	static const char *bad[] = {"12x", "1,,2", "-1", "1,", "+5", "4294967295", "99999999999", ","};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		attach_as(-1, bad[i]);
		expect_refused(-EINVAL, "SHMSYNC_ROOT_UIDS");
	}
	attach_as(-1, "65534,65533");
	expect_ok();
	stop_root(own);
	end_part("1. the root's uid");
}

/* ---- 2. the root is not dumpable ---------------------------------------- */

static void part_dumpable(void)
{
	long uid = is_root ? (long)STRANGER : -1;
	printf("2. the root is not dumpable (root and prober as uid %ld)\n", uid < 0 ? (long)geteuid() : uid);
	sock_at("dump.sock");
	unlink(st_sock);
	atomic_store(&C->ready, 0);
	atomic_store(&C->root_dumpable, -1);
	C->mem_errno = -1;
	C->rc = 1;
	pid_t me = getpid(), k = sd_fork();
	if (k == 0) {
		if (uid >= 0)
			become((uid_t)uid, me);
		/* The root is our child: a ptrace policy that lets a process
		 * at its descendants only (Yama) does not stop us, so only the
		 * root's own dumpable flag can. */
		pid_t prober = getpid(), root = fork();
		T_ASSERT(root >= 0);
		if (root == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != prober)
				_exit(5);
			run_root(NULL, DUMPABLE);
		}
		wait_ready(root);
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/mem", (int)root);
		int fd = open(path, O_RDWR | O_CLOEXEC);
		C->mem_errno = fd < 0 ? errno : 0;
		if (fd >= 0)
			close(fd);
		shmsync_worker *w = NULL;
		char err[256] = "";
		int rc = shmsync_attach_msg(&w, st_sock, err, sizeof(err));
		if (rc == 0) {
			rc = commit_one(w, "d");
			shmsync_detach(w);
		}
		C->rc = rc;
		snprintf(C->err, sizeof(C->err), "%s", err);
		kill(root, SIGTERM);
		int st;
		T_ASSERT(waitpid(root, &st, 0) == root);
		exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	}
	T_EQ(sd_reap(k), 0);
	unlink(st_sock);
	printf("  PR_GET_DUMPABLE in the root after open: %d; open(/proc/<root>/mem, O_RDWR): %s; a "
	       "worker of its uid: %s%s%s\n",
	       atomic_load(&C->root_dumpable), C->mem_errno ? strerror(C->mem_errno) : "opened",
	       C->rc ? shmsync_strerror(C->rc) : "attached", C->rc ? ": " : "", C->rc ? C->err : "");
	CHECK(atomic_load(&C->root_dumpable) == 0, "the root is dumpable (%d) after shmsync_root_open",
	      atomic_load(&C->root_dumpable));
	CHECK(C->mem_errno == EACCES || C->mem_errno == EPERM,
	      "a process of the root's uid opened /proc/<root>/mem for writing (%s)",
	      C->mem_errno ? strerror(C->mem_errno) : "it opened");
	expect_ok();
	end_part("2. not dumpable");
}

/* ---- 3. allow_uids end to end ------------------------------------------- */

static void part_allow(void)
{
	printf("3. allow_uids {0, %u}\n", STRANGER);
	uid_t allow[] = {0, STRANGER};
	shmsync_root_opts o = {.allow_uids = allow, .n_allow_uids = 2};
	sock_at("allow.sock");
	pid_t r = start_root(-1, &o, 0);
	attach_as(STRANGER, NULL);
	expect_ok();
	char names[32];
	snprintf(names, sizeof(names), "uid %u", OTHER);
	attach_as(OTHER, NULL);
	expect_refused(-EACCES, names);
	stop_root(r);
	end_part("3. allow_uids");
}

/* ---- 4 and 5: floods ----------------------------------------------------- */

/* Connects to st_sock over and over without a hello, keeping up to
 * FLOOD_KEEP connections open (the oldest closed for a new one), for
 * FLOOD_NS or its share of FLOOD_MAX connects, whichever comes first. */
static _Noreturn void flood(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", st_sock);
	int keep[FLOOD_KEEP];
	for (int i = 0; i < FLOOD_KEEP; i++)
		keep[i] = -1;
	int64_t end = sd_now_ns() + FLOOD_NS;
	/* A connect that waits for room in the backlog waits this long at
	 * most: the loop stays bounded whatever the root does. */
	struct timeval tv = {0, 100000};
	uint64_t n = 0, errs = 0;
	for (unsigned i = 0; n + errs < FLOOD_MAX / FLOODERS && !atomic_load(&C->stop); i++) {
		if ((i & 63) == 0 && sd_now_ns() > end)
			break;
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (fd < 0)
			T_FAIL("flood socket: %s", strerror(errno));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			errs++;
			close(fd);
			continue;
		}
		n++;
		int *slot = &keep[n % FLOOD_KEEP];
		if (*slot >= 0)
			close(*slot);
		*slot = fd;
	}
	atomic_fetch_add(&C->connects, n);
	atomic_fetch_add(&C->connect_errs, errs);
	exit(0);
}

/* HONEST_EACH rounds of attach, one committed batch, detach, spread over
 * the flood; failures counted with their first messages. Every other
 * round the connection is made first and the hello comes SLOW_HELLO_NS
 * later, through $SHMSYNC_ATTACH_FD, as when a supervisor connects and
 * the worker it starts attaches: a flood must not push out an allowed
 * peer that is waiting, only silent ones of its own. */
static _Noreturn void honest(int idx)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", st_sock);
	for (int j = 0; j < HONEST_EACH; j++) {
		shmsync_worker *w = NULL;
		char err[256] = "";
		int rc;
		if (j % 2) {
			int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
			T_ASSERT(fd >= 0);
			rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
			if (rc < 0) {
				snprintf(err, sizeof(err), "connect (slow hello): %s", strerror(-rc));
				close(fd);
			} else {
				char v[16];
				snprintf(v, sizeof(v), "%d", fd);
				setenv("SHMSYNC_ATTACH_FD", v, 1);
				sd_sleep_ns(SLOW_HELLO_NS);
				rc = shmsync_attach_msg(&w, NULL, err, sizeof(err));
				unsetenv("SHMSYNC_ATTACH_FD");
			}
		} else {
			rc = shmsync_attach_msg(&w, st_sock, err, sizeof(err));
		}
		if (rc == 0) {
			char tag[32];
			snprintf(tag, sizeof(tag), "h%d.%d", idx, j);
			rc = commit_one(w, tag);
			if (rc < 0)
				snprintf(err, sizeof(err), "the commit after attach: %s",
					 shmsync_strerror(rc));
			shmsync_detach(w);
		}
		if (rc == 0) {
			atomic_fetch_add(&C->honest_ok, 1);
		} else {
			int f = atomic_fetch_add(&C->honest_fail, 1);
			if (f < 4)
				snprintf(C->fail_msg[f], sizeof(C->fail_msg[f]), "%s%s: %.180s",
					 j % 2 ? "(slow hello) " : "", shmsync_strerror(rc), err);
		}
		sd_sleep_ns(100 * MS);
	}
	exit(0);
}

/* Floods st_sock from FLOODERS processes as flood_uid while HONEST_KIDS
 * processes as honest_uid attach; every honest attach must work. */
static void flood_run(const char *what, long flood_uid, long honest_uid)
{
	atomic_store(&C->stop, 0);
	atomic_store(&C->connects, 0);
	atomic_store(&C->connect_errs, 0);
	atomic_store(&C->honest_ok, 0);
	atomic_store(&C->honest_fail, 0);
	memset(C->fail_msg, 0, sizeof(C->fail_msg));
	pid_t me = getpid(), fl[FLOODERS], hk[HONEST_KIDS];
	int64_t t0 = sd_now_ns();
	for (int i = 0; i < FLOODERS; i++) {
		fl[i] = sd_fork();
		if (fl[i] == 0) {
			if (flood_uid >= 0)
				become((uid_t)flood_uid, me);
			flood();
		}
	}
	/* The honest start once the flood is under way. */
	sd_sleep_ns(200 * MS);
	for (int i = 0; i < HONEST_KIDS; i++) {
		hk[i] = sd_fork();
		if (hk[i] == 0) {
			if (honest_uid >= 0)
				become((uid_t)honest_uid, me);
			honest(i);
		}
	}
	for (int i = 0; i < HONEST_KIDS; i++)
		T_EQ(sd_reap(hk[i]), 0);
	int64_t honest_end = sd_now_ns();
	atomic_store(&C->stop, 1);
	for (int i = 0; i < FLOODERS; i++)
		T_EQ(sd_reap(fl[i]), 0);
	int64_t flood_end = sd_now_ns();
	int ok = atomic_load(&C->honest_ok), bad = atomic_load(&C->honest_fail);
	printf("  %s: %d flooders, %llu connects (%llu failed) in %.2f s; honest attaches %d ok, %d "
	       "failed (done %.2f s after the flood began%s)\n",
	       what, FLOODERS, (unsigned long long)atomic_load(&C->connects),
	       (unsigned long long)atomic_load(&C->connect_errs), (double)(flood_end - t0) / 1e9, ok, bad,
	       (double)(honest_end - t0) / 1e9, honest_end < t0 + FLOOD_NS ? ", within it" : "");
	for (int i = 0; i < bad && i < 4; i++)
		printf("    failed: %s\n", C->fail_msg[i]);
	for (int i = 0; i < bad && i < 4; i++)
		if (strstr(C->fail_msg[i], "not a shmsync root"))
			T_FAIL("an honest attach under a flood was told \"not a shmsync root\"");
	if (bad || ok != HONEST_KIDS * HONEST_EACH)
		T_FAIL("%s: %d of %d honest attaches failed", what, bad, HONEST_KIDS * HONEST_EACH);
}

static void part_refused_flood(void)
{
	printf("4. refused peers (uid %u) flood; allowed uid %u attaches\n", OTHER, STRANGER);
	uid_t allow[] = {0, STRANGER};
	shmsync_root_opts o = {.allow_uids = allow, .n_allow_uids = 2};
	sock_at("flood4.sock");
	pid_t r = start_root(-1, &o, 0);
	/* At HEAD the allow list made it 0666 already; 676bf0e left it 0600,
	 * and whoever used an allow list had to open it like this. */
	T_ASSERT(chmod(st_sock, 0666) == 0);
	flood_run("refused flood", OTHER, STRANGER);
	stop_root(r);
}

static void part_same_uid_flood(void)
{
	printf("5. silent connections of the root's own uid flood\n");
	sock_at("flood5.sock");
	pid_t r = start_root(-1, NULL, 0);
	flood_run("same-uid flood", -1, -1);
	stop_root(r);
}

static const char *const socks[] = {"own.sock",   "stranger.sock", "dump.sock",
				    "allow.sock", "flood4.sock",   "flood5.sock"};

/* Whatever ends the test leaves no sockets behind; only the parent
 * cleans (children inherit the handler). */
static pid_t parent;
static void cleanup(void)
{
	if (getpid() != parent || !dir[0])
		return;
	for (size_t i = 0; i < sizeof(socks) / sizeof(socks[0]); i++) {
		sock_at(socks[i]);
		unlink(st_sock);
	}
	rmdir(dir);
}

int main(int argc, char **argv)
{
	sd_init(100);
	parent = getpid();
	bool want[6] = {false};
	for (int i = 1; i < argc; i++) {
		int n = atoi(argv[i]);
		if (n < 1 || n > 5)
			T_FAIL("usage: %s [part 1-5 ...]", argv[0]);
		want[n] = true;
	}
	for (int i = 1; i <= 5; i++)
		want[i] = want[i] || argc == 1;
	C = sd_shared(sizeof(*C));
	printf("sync_trust: signal path %s\n", st_signal_name());
	unsetenv("SHMSYNC_ROOT_UIDS");
	is_root = geteuid() == 0;
	snprintf(dir, sizeof(dir), "/tmp/shmsync-trust-XXXXXX");
	T_ASSERT(mkdtemp(dir) != NULL);
	/* Like /tmp: every uid may create its socket here, none may remove
	 * another's. */
	T_ASSERT(chmod(dir, 01777) == 0);
	atexit(cleanup);
	if (!is_root)
		printf("not root: the parts that switch to uids %u and %u are skipped\n", STRANGER, OTHER);
	int64_t t0 = sd_now_ns();

	if (want[1])
		part_root_uid();
	if (want[2])
		part_dumpable();
	if (want[3] && is_root)
		part_allow();
	if (want[4] && is_root)
		part_refused_flood();
	if ((want[3] || want[4]) && !is_root)
		printf("3. allow_uids and 4. the refused flood: skipped (not root)\n");
	if (want[5])
		part_same_uid_flood();

	printf("sync_trust: ok (%.1f s)\n", (double)(sd_now_ns() - t0) / 1e9);
	return 0;
}
