/* Unix-socket plumbing for attach: the root's listening socket, and
 * messages with file descriptors (SCM_RIGHTS) both ways. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "attach.h"

enum { PROBE_STALE, PROBE_ROOT, PROBE_OTHER };

/* What is at path. A root listens with SOCK_SEQPACKET, but a program bound
 * there with another type must not be taken for a dead root's socket and
 * unlinked: only ECONNREFUSED (nothing bound there any more) or ENOENT (gone
 * meanwhile) means stale. EPROTOTYPE says a socket of another type is bound
 * there, so the next type is tried, to name it; any other error (EACCES:
 * someone else's) means it is in use. Non-blocking, so a root with a full
 * backlog answers EAGAIN instead of hanging the probe. For PROBE_OTHER, what
 * says what is there. */
static int probe(const struct sockaddr_un *sa, char *what, size_t whatlen)
{
	static const struct {
		int type;
		const char *name;
	} types[] = {
		{SOCK_SEQPACKET, "SOCK_SEQPACKET"},
		{SOCK_STREAM, "SOCK_STREAM"},
		{SOCK_DGRAM, "SOCK_DGRAM"},
	};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		int fd = socket(AF_UNIX, types[i].type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			snprintf(what, whatlen, "a socket that cannot be probed (%s)", strerror(errno));
			return PROBE_OTHER;
		}
		int rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
		int e = rc == 0 ? 0 : errno;
		close(fd);
		if (e == ECONNREFUSED || e == ENOENT)
			return PROBE_STALE;
		if (e == EPROTOTYPE)
			continue;
		if (i == 0 && (e == 0 || e == EAGAIN))
			return PROBE_ROOT;
		if (e == 0 || e == EAGAIN)
			snprintf(what, whatlen, "a %s socket", types[i].name);
		else
			snprintf(what, whatlen, "a socket in use (connect: %s)", strerror(e));
		return PROBE_OTHER;
	}
	snprintf(what, whatlen, "a socket of an unknown type");
	return PROBE_OTHER;
}

int att_listen(const char *path, char *msg, size_t msglen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX}, tmp = {.sun_family = AF_UNIX};
	if (!path || !*path || strlen(path) + 16 >= sizeof(sa.sun_path)) {
		snprintf(msg, msglen, "socket path %s: empty or longer than %zu bytes",
			 path ? "given" : "missing", sizeof(sa.sun_path) - 17);
		return -EINVAL;
	}
	strcpy(sa.sun_path, path);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(msg, msglen, "%s exists and is not a socket", path);
			return -EEXIST;
		}
		char what[128];
		int live = probe(&sa, what, sizeof(what));
		if (live == PROBE_ROOT) {
			snprintf(msg, msglen, "a root already serves %s", path);
			return -EADDRINUSE;
		}
		if (live == PROBE_OTHER) {
			snprintf(msg, msglen, "%s: %s is there, not a root's; not replacing it", path, what);
			return -EADDRINUSE;
		}
		/* A stale socket from a root that died: replaced below. */
	}
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(msg, msglen, "socket: %s", strerror(errno));
		return -errno;
	}
	/* Bind a temporary name, restrict it, listen, then rename it into
	 * place: the path appears only when it accepts connections, and only
	 * the owner may connect (peers are checked against the allowed uids
	 * as well). */
	snprintf(tmp.sun_path, sizeof(tmp.sun_path), "%s.%d.tmp", path, (int)getpid());
	unlink(tmp.sun_path);
	if (bind(fd, (struct sockaddr *)&tmp, sizeof(tmp)) < 0)
		goto fail;
	if (chmod(tmp.sun_path, 0600) < 0 || listen(fd, 64) < 0 || rename(tmp.sun_path, path) < 0) {
		int e = errno;
		unlink(tmp.sun_path);
		errno = e;
		goto fail;
	}
	return fd;
fail:;
	int e = errno;
	snprintf(msg, msglen, "listening on %s: %s", path, strerror(e));
	close(fd);
	return -e;
}

int att_send(int fd, const void *buf, size_t len, const int *fds, int nfds)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds > 0) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	}
	/* MSG_NOSIGNAL: a peer that died must not kill us with SIGPIPE. */
	ssize_t n;
	do
		n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == (ssize_t)len ? 0 : -EIO;
}

ssize_t att_recv(int fd, void *buf, size_t len, int *fds, int *nfds, int flags)
{
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	int want = nfds ? *nfds : 0;
	if (nfds)
		*nfds = 0;
	ssize_t n;
	do
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | flags);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int got[4];
		memcpy(got, CMSG_DATA(c), (k > 4 ? 4 : k) * sizeof(int));
		for (size_t i = 0; i < k && i < 4; i++) {
			/* More fds than we asked for are closed, not leaked. */
			if (nfds && *nfds < want)
				fds[(*nfds)++] = got[i];
			else
				close(got[i]);
		}
	}
	if (mh.msg_flags & MSG_TRUNC)
		return -EMSGSIZE;
	return n;
}
