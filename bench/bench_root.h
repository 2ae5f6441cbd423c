/* A root in its own process, for the benchmarks that measure through one.
 * The bench parent never holds a root (DESIGN.md: workers are not forked
 * from a process that holds it): it forks the root's process with
 * bench_root_start, whose function opens and runs the root with
 * bench_root_serve until SIGTERM.
 */
#ifndef SHMSYNC_BENCH_ROOT_H
#define SHMSYNC_BENCH_ROOT_H

#include <sys/stat.h>
#include <sys/wait.h>

#include "bench_util.h"
#include "shmsync.h"

/* The root of this process (the root's child), for the SIGTERM handler. */
static shmsync_root *bench_root;

static inline void bench_root_on_term(int sig)
{
	(void)sig;
	if (bench_root)
		shmsync_root_stop(bench_root);
}

/* In the root's process: opens a root with o and runs it until SIGTERM.
 * Returns the process's exit status: 0, 3 (it could not open), 4 (its loop
 * failed); `bench` names the program in the message. */
static inline int bench_root_serve(const char *bench, shmsync_root_opts *o)
{
	char err[256] = "";
	o->errbuf = err;
	o->errbuf_len = sizeof err;
	int rc = shmsync_root_open(&bench_root, o);
	if (rc < 0) {
		fprintf(stderr, "%s: root: %s: %s\n", bench, shmsync_strerror(rc), err);
		return 3;
	}
	struct sigaction sa = {.sa_handler = bench_root_on_term};
	sigaction(SIGTERM, &sa, NULL);
	rc = shmsync_root_run(bench_root);
	shmsync_root_close(bench_root);
	bench_root = NULL;
	if (rc < 0)
		fprintf(stderr, "%s: root loop: %s\n", bench, shmsync_strerror(rc));
	return rc < 0 ? 4 : 0;
}

/* Forks root_main (which ends in bench_root_serve) pinned to cpu, and
 * returns once its socket exists; exits the bench if the root dies first
 * or the socket does not come within 5 s. */
static inline pid_t bench_root_start(const char *bench, int cpu, const char *sock, int (*root_main)(void *))
{
	unlink(sock);
	pid_t pid = bench_spawn(cpu, root_main, NULL);
	for (int i = 0; i < 5000; i++) {
		struct stat st;
		if (stat(sock, &st) == 0)
			return pid;
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			fprintf(stderr, "%s: the root exited before it listened\n", bench);
			exit(1);
		}
		usleep(1000);
	}
	fprintf(stderr, "%s: the root did not create %s\n", bench, sock);
	exit(1);
}

/* Stops the root bench_root_start started, and exits the bench unless it
 * ended cleanly. */
static inline void bench_root_stop(const char *bench, pid_t pid, const char *sock)
{
	int status;
	kill(pid, SIGTERM);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "%s: the root (pid %d) did not end cleanly\n", bench, (int)pid);
		unlink(sock);
		exit(1);
	}
	unlink(sock);
}

#endif
