/* testutil.h: the seed and the generator of the test workloads, and the
 * wait for a child that must exit 0. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "testutil.h"

unsigned long long t_seed(unsigned long long dflt)
{
	const char *s = getenv("SHMSYNC_TEST_SEED");
	unsigned long long seed = dflt;
	if (s && *s)
		seed = strtoull(s, NULL, 0);
	printf("seed %llu (set SHMSYNC_TEST_SEED to replay)\n", seed);
	fflush(stdout);
	return seed;
}

unsigned long long t_rand(unsigned long long *state)
{
	unsigned long long x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

void t_wait_ok(pid_t pid, const char *what)
{
	int st;
	T_EQ(waitpid(pid, &st, 0), pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		T_FAIL("%s: child %s %d", what, WIFEXITED(st) ? "exited" : "killed by signal",
		       WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}
