/* The attach handshake on the root's unix socket: a worker's hello, the
 * root's welcome (with the segment and port fds), the control messages of
 * an attached connection, and the socket helpers both sides use
 * (attach.c). */
#ifndef SHMSYNC_ATTACH_H
#define SHMSYNC_ATTACH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- handshake: worker -> root "hello", root -> worker "welcome" ------- */

#define HELLO_MAGIC 0x4f4c4548434e5953ull      /* "SYNCHELO" */
#define WELCOME_MAGIC 0x4d4f434c45574e53ull    /* "SNWELCOM" */
#define BYE_MAGIC 0x45594259434e5953ull        /* "SYNCBYBE" */
#define FDWAKE_REQ_MAGIC 0x51574446434e5953ull /* worker: send me a wake fd */
#define FDWAKE_MAGIC 0x4b4157444643594eull     /* root: one end of a socket pair follows */

struct hello {
	uint64_t magic;
	uint32_t layout_version;
	uint32_t port_version;
	uint32_t wire_version;
	uint32_t reserved;
};

struct welcome {
	uint64_t magic;
	int32_t status; /* 0, or -errno with msg */
	uint32_t layout_version;
	uint32_t port_version;
	uint32_t wire_version;
	uint32_t slot;
	uint32_t gen;
	uint32_t signal; /* SIG_URING or SIG_FUTEX: how to ring the doorbell */
	uint32_t reserved;
	uint64_t max_batch; /* bytes */
	char msg[160];
	/* SCM_RIGHTS when status == 0: root segment (read-only), port[, doorbell eventfd] */
};

struct control {
	uint64_t magic; /* BYE_MAGIC, FDWAKE_REQ_MAGIC, FDWAKE_MAGIC */
};

/* Connections waiting for their hello, in all and from one process: past
 * these the root answers the oldest "busy" (the worker's library retries). */
#define MAX_PENDING 64
#define PENDING_PER_PID 4

/* ---- sockets (attach.c) ------------------------------------------------ */

int att_listen(const char *path, char *msg, size_t msglen);
int att_send(int fd, const void *buf, size_t len, const int *fds, int nfds);
/* Receives one message and up to *nfds fds (O_CLOEXEC). */
ssize_t att_recv(int fd, void *buf, size_t len, int *fds, int *nfds, int flags);

#endif
