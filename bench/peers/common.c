/* Helpers every backend and the driver share: keys, values, clocks, servers. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "peers.h"

/* Formatting by hand: snprintf costs about as much as a hot shmsync get, and
 * every system pays for the key of every operation. */
void key_of(uint32_t id, char *k)
{
	k[0] = 'k';
	for (int i = 8; i >= 1; i--) {
		k[i] = (char)('0' + id % 10);
		id /= 10;
	}
}

void dir_prefix(long dir, char *p)
{
	unsigned long d = (unsigned long)dir % 1000000;
	p[0] = 'c';
	for (int i = 6; i >= 1; i--) {
		p[i] = (char)('0' + d % 10);
		d /= 10;
	}
	p[7] = '/';
}

void val_of(uint32_t id, uint64_t tag, uint8_t *v)
{
	memcpy(v, &tag, 8);
	memcpy(v + 8, &id, 4);
	for (int i = 12; i < VAL_LEN; i++)
		v[i] = (uint8_t)(id * 31u + (unsigned)i);
}

uint64_t val_tag(const uint8_t *v)
{
	uint64_t t;
	memcpy(&t, v, 8);
	return t;
}

uint32_t val_id(const uint8_t *v)
{
	uint32_t id;
	memcpy(&id, v + 8, 4);
	return id;
}

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void poll_pause(bool yield)
{
	if (yield)
		sched_yield();
	else
		__builtin_ia32_pause();
}

pid_t spawn_server(char *const argv[], int cpu)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "peers: fork for %s: %s\n", argv[0], strerror(errno));
		return -1;
	}
	if (pid == 0) {
		/* A server must not outlive a driver that died: it would keep
		 * its socket, its memory and its CPU. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() == 1)
			_exit(127);
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET((size_t)cpu, &set);
		if (sched_setaffinity(0, sizeof set, &set) != 0) {
			fprintf(stderr, "peers: pin %s to CPU %d: %s\n", argv[0], cpu, strerror(errno));
			_exit(127);
		}
		int null = open("/dev/null", O_WRONLY);
		if (null >= 0) {
			dup2(null, 1);
			close(null);
		}
		execv(argv[0], argv);
		fprintf(stderr, "peers: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

int stop_server(pid_t pid, const char *what)
{
	if (pid <= 0)
		return 0;
	kill(pid, SIGTERM);
	uint64_t end = now_ns() + 10ull * 1000000000ull;
	int status = 0;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR) {
			fprintf(stderr, "peers: waitpid %s: %s\n", what, strerror(errno));
			return -1;
		}
		if (now_ns() > end) {
			fprintf(stderr, "peers: %s (pid %d) ignored SIGTERM for 10 s: killed\n", what,
				(int)pid);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		usleep(2000);
	}
	return status;
}
