/* shmsync_example_server: a rate limiter and session store over HTTP/1.1,
 * served by several worker processes that share one shmsync state.
 *
 *   POST /hit/<client>     counts a hit in /rate/: 200 and the count, or 429
 *                          once the client has had LIMIT hits (exact across
 *                          workers: see do_hit)
 *   PUT  /session/<id>     stores the body in /sessions/; answered only once
 *                          committed, so an acknowledged write is not lost
 *                          while the root lives
 *   GET  /session/<id>     answers from this worker's snapshot, zero copy
 *
 * Every worker owns a SO_REUSEPORT listener on 127.0.0.1:PORT (the kernel
 * spreads connections over them) and one io_uring that does everything:
 * accepts, socket reads and writes, and the wait for the next shmsync state
 * (shmsync_prep_wait, or a poll on shmsync_fd on the futex path). Nothing in
 * the loop blocks on the root: a request that needs a commit exports its batch
 * and parks; each time the state moves, the worker imports once and answers
 * the parked requests whose batches were decided.
 *
 * Every response carries X-Worker: <index>, so a client can see who served it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shmsync.h"

#define RATE_DIR "/rate/"
#define SESSION_DIR "/sessions/"
#define MAX_HEAD 8192
#define MAX_BODY (64 * 1024) /* well under a batch's limit with the default export ring */
#define BUF_SIZE (MAX_HEAD + MAX_BODY)
/* Connections per worker. Each has at most one request in flight, of one
 * batch, and advance() reads every ack that has come before any connection
 * can export again; so at most MAX_CONNS batches are ever unread, well inside
 * the acks the library keeps (1024), and a -ERANGE from
 * shmsync_wait_committed always means that the hit's add overflowed. */
#define MAX_CONNS 256

enum op { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_WAKE };
enum cstate { C_FREE, C_READ, C_COMMIT, C_SEND };

struct conn {
	int fd;
	enum cstate state;
	char *in;       /* received bytes: the request being served first */
	size_t in_len;  /* bytes in `in` */
	size_t req_len; /* bytes of the request being served */
	char *out;      /* response headers, and any body we had to copy */
	struct iovec iov[2];
	struct msghdr msg;
	bool pinned;     /* iov[1] points into the snapshot: no import until sent */
	bool keep_alive; /* after this response */
	bool is_hit;     /* the parked request: a hit, else a session PUT */
	uint64_t seq;    /* its batch */
	uint64_t tick;   /* the tick that committed it, 0 until known */
	const char *key; /* into `in`, which stays put until the response is sent */
	size_t key_len;
};

struct server {
	shmsync_worker *w;
	struct io_uring ring;
	int listen_fd;
	unsigned index;
	int64_t limit;
	bool fd_path;    /* waits with a poll on shmsync_fd() (futex fallback) */
	bool wake_armed; /* a wait for the next state is queued on the ring */
	bool offline;    /* idle: our snapshot pins nothing (see serve_worker) */
	unsigned pins;   /* sends still reading the snapshot */
	unsigned parked; /* connections in C_COMMIT */
	struct conn conns[MAX_CONNS];
};

struct server_opts {
	unsigned workers; /* 0: one per CPU */
	int port;
	int64_t limit;
};

static struct io_uring_sqe *get_sqe(struct server *s)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
	if (!sqe) { /* the submission queue is full: hand it to the kernel */
		io_uring_submit(&s->ring);
		sqe = io_uring_get_sqe(&s->ring);
	}
	return sqe;
}

static void queue(struct io_uring_sqe *sqe, enum op op, unsigned conn)
{
	io_uring_sqe_set_data64(sqe, (uint64_t)conn << 8 | op);
}

static void arm_accept(struct server *s)
{
	struct io_uring_sqe *sqe = get_sqe(s);
	io_uring_prep_multishot_accept(sqe, s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	queue(sqe, OP_ACCEPT, 0);
}

static void arm_recv(struct server *s, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(s);
	io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, BUF_SIZE - c->in_len, 0);
	queue(sqe, OP_RECV, (unsigned)(c - s->conns));
	c->state = C_READ;
}

/* The wait for the next state. Arming reads the tick word (or, on the fd
 * path, the fd is level-triggered), and the caller answers parked requests
 * only after arming: an ack that lands after that look still wakes us. */
static void arm_wake(struct server *s)
{
	struct io_uring_sqe *sqe = get_sqe(s);
	if (!s->fd_path && shmsync_prep_wait(s->w, sqe) == -EOPNOTSUPP)
		s->fd_path = true;
	if (s->fd_path)
		io_uring_prep_poll_add(sqe, shmsync_fd(s->w), POLLIN);
	queue(sqe, OP_WAKE, 0);
	s->wake_armed = true;
}

static void send_iov(struct server *s, struct conn *c, int flags)
{
	c->msg = (struct msghdr){.msg_iov = c->iov, .msg_iovlen = c->iov[1].iov_len ? 2 : 1};
	struct io_uring_sqe *sqe = get_sqe(s);
	io_uring_prep_sendmsg(sqe, c->fd, &c->msg, (unsigned)(MSG_NOSIGNAL | flags));
	queue(sqe, OP_SEND, (unsigned)(c - s->conns));
	c->state = C_SEND;
}

/* Sends the response. A body from the snapshot goes out zero copy, with
 * MSG_DONTWAIT so the send completes at once: whatever the socket could not
 * take is then copied (see on_send), so a slow client never holds the
 * snapshot, and with it the worker's imports, for long. When an import is
 * already due, the body is copied at once rather than delay it. */
static void respond(struct server *s, struct conn *c, int status, const void *body, size_t len,
		    bool from_snapshot)
{
	const char *reason = status == 200   ? "OK"
			     : status == 404 ? "Not Found"
			     : status == 413 ? "Payload Too Large"
			     : status == 429 ? "Too Many Requests"
			     : status == 400 ? "Bad Request"
					     : "Internal Server Error";
	int n = snprintf(
		c->out, MAX_HEAD,
		"HTTP/1.1 %d %s\r\nX-Worker: %u\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n",
		status, reason, s->index, len, c->keep_alive ? "" : "Connection: close\r\n");
	c->iov[0] = (struct iovec){c->out, (size_t)n};
	c->iov[1] = (struct iovec){NULL, 0};
	c->pinned = from_snapshot && s->wake_armed && len > 0;
	if (c->pinned) {
		c->iov[1] = (struct iovec){(void *)body, len};
		s->pins++;
	} else {
		memcpy(c->out + n, body, len);
		c->iov[0].iov_len += len;
	}
	send_iov(s, c, c->pinned ? MSG_DONTWAIT : 0);
}

static void respond_text(struct server *s, struct conn *c, int status, const char *text)
{
	respond(s, c, status, text, strlen(text), false);
}

static void conn_close(struct conn *c)
{
	close(c->fd);
	free(c->in);
	free(c->out);
	*c = (struct conn){.fd = -1, .state = C_FREE};
}

/* A read at our snapshot. After an idle spell we hold none (offline): come
 * back at the newest state first. */
static int snapshot_get(struct server *s, const char *dir, const char *key, size_t len, shmsync_view *v)
{
	if (s->offline) {
		int rc = shmsync_import_until(s->w, shmsync_cursor(s->w), 0, NULL, NULL);
		if (rc < 0)
			return rc;
		s->offline = false;
	}
	return shmsync_get(s->w, dir, key, len, v);
}

/* Exports a batch of one operation (rc: what adding it returned). Returns
 * its seq, or 0 on failure. A full export ring makes shmsync_export wait
 * for the root to drain it, which is brief; SHMSYNC_NONBLOCK would avoid
 * that at the cost of a retry queue. */
static uint64_t export_one(shmsync_batch *b, int rc)
{
	uint64_t seq = 0;
	if (rc < 0 || shmsync_export(b, 0, &seq) < 0) {
		shmsync_abort(b);
		return 0;
	}
	return seq;
}

/* The rate limit is exact because the root decides it, not the workers.
 * Each hit is a batch of its own that adds STEP = INT64_MAX / LIMIT to the
 * client's counter (a missing key counts from 0). LIMIT steps fit in an
 * int64 and LIMIT + 1 do not (STEP > LIMIT > INT64_MAX % LIMIT, since
 * LIMIT <= 2^31), and an add that would overflow fails its batch with
 * -ERANGE, changing nothing. The root applies batches one at a time in one
 * order, so the first LIMIT hits to reach it commit (200) and every later
 * one is rejected (429), whichever worker sent it and however many are in
 * flight: no worker's snapshot takes part in the decision.
 *
 * (Adding 1 and reading the counter after the commit would not be exact:
 * our import may already hold later hits. A compare-and-set with
 * shmsync_put_if_tick would be exact too, but of the hits racing on one key
 * in a tick all but one would fail and retry.) */
static void do_hit(struct server *s, struct conn *c)
{
	shmsync_batch *b;
	if (shmsync_begin(s->w, &b) == 0)
		c->seq = export_one(b, shmsync_add(b, RATE_DIR, c->key, c->key_len, INT64_MAX / s->limit));
	c->is_hit = true;
}

static void do_put(struct server *s, struct conn *c, const char *body, size_t len)
{
	shmsync_batch *b;
	if (shmsync_begin(s->w, &b) == 0)
		c->seq = export_one(b, shmsync_put(b, SESSION_DIR, c->key, c->key_len, body, len));
	c->is_hit = false;
}

/* A client's hits, from our snapshot: it includes this hit, and perhaps
 * later ones (the 200 itself is what is exact). */
static int64_t hits(struct server *s, struct conn *c)
{
	shmsync_view v;
	if (snapshot_get(s, RATE_DIR, c->key, c->key_len, &v) != 0 || v.len != 8)
		return -1;
	uint64_t u = 0;
	for (int i = 0; i < 8; i++) /* 8 bytes, little-endian */
		u |= (uint64_t)((const uint8_t *)v.data)[i] << (8 * i);
	return (int64_t)u / (INT64_MAX / s->limit);
}

/* Parses one request from c->in and serves it, or parks it until its
 * batch is decided. Returns false if the request is not all here yet.
 * Minimal HTTP/1.1: Content-Length bodies, keep-alive, pipelining. */
static bool serve_one(struct server *s, struct conn *c)
{
	char *end = c->in_len >= 4 ? memmem(c->in, c->in_len, "\r\n\r\n", 4) : NULL;
	if (!end && c->in_len < MAX_HEAD)
		return false;
	c->keep_alive = false; /* until the head says otherwise */
	if (!end) {
		respond_text(s, c, 400, "request head too large\n");
		return true;
	}
	*end = '\0'; /* the head is a string now; the body starts at end + 4 */
	size_t head_len = (size_t)(end + 4 - c->in), body_len = 0;
	char method[8], path[MAX_HEAD], version[4];
	const char *target = strchr(c->in, ' ');
	if (sscanf(c->in, "%7s %8191s HTTP/%3s", method, path, version) != 3 ||
	    strncmp(target + 1, path, strlen(path)) != 0) {
		respond_text(s, c, 400, "bad request line\n");
		return true;
	}
	c->keep_alive = strcmp(version, "1.0") != 0;
	for (char *line = strstr(c->in, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
		if (strncasecmp(line + 2, "Content-Length:", 15) == 0)
			body_len = strtoul(line + 17, NULL, 10);
		else if (strncasecmp(line + 2, "Connection:", 11) == 0)
			c->keep_alive = !strcasestr(line + 13, "close") &&
					(c->keep_alive || strcasestr(line + 13, "keep-alive"));
	}
	if (body_len > MAX_BODY) {
		c->keep_alive = false;
		respond_text(s, c, 413, "body too large\n");
		return true;
	}
	if (c->in_len < head_len + body_len) {
		*end = '\r'; /* parse it again once the body is here */
		return false;
	}
	c->req_len = head_len + body_len;

	/* The key is the path's last component, read in place. */
	size_t off = (size_t)(strrchr(path, '/') + 1 - path);
	c->key = target + 1 + off;
	c->key_len = strlen(path) - off;
	bool hit = off == 5 && strncmp(path, "/hit/", 5) == 0 && strcmp(method, "POST") == 0;
	bool put = off == 9 && strncmp(path, "/session/", 9) == 0 && strcmp(method, "PUT") == 0;
	bool get = off == 9 && strncmp(path, "/session/", 9) == 0 && strcmp(method, "GET") == 0;
	c->seq = 0;
	if (c->key_len == 0 || c->key_len > SHMSYNC_MAX_KEY || !(hit || put || get)) {
		respond_text(s, c, 404, "no such resource\n");
	} else if (get) {
		shmsync_view v;
		int rc = snapshot_get(s, SESSION_DIR, c->key, c->key_len, &v);
		if (rc == 0)
			respond(s, c, 200, v.data, v.len, true);
		else
			respond_text(s, c, rc == -ENOENT ? 404 : 500,
				     rc == -ENOENT ? "no such session\n" : "error\n");
	} else {
		if (hit)
			do_hit(s, c);
		else
			do_put(s, c, end + 4, body_len);
		if (c->seq == 0) {
			respond_text(s, c, 500, "export failed\n");
		} else {
			c->tick = 0;
			c->state = C_COMMIT;
			s->parked++;
		}
	}
	return true;
}

static void serve(struct server *s, struct conn *c)
{
	if (!serve_one(s, c))
		arm_recv(s, c);
}

/* Answers a parked request once its batch is decided and, if committed,
 * once our snapshot includes it (so the client's next read on this
 * connection sees its own write). */
static void try_answer(struct server *s, struct conn *c)
{
	if (c->tick == 0) {
		int rc = shmsync_wait_committed(s->w, c->seq, &c->tick, 0);
		if (rc == -ETIMEDOUT)
			return;
		if (rc < 0) {
			s->parked--;
			if (rc == -ERANGE && c->is_hit)
				respond_text(s, c, 429, "over limit\n");
			else
				respond_text(s, c, 500, "batch failed\n");
			return;
		}
	}
	if (shmsync_cursor(s->w) < c->tick)
		return; /* the next import brings it */
	s->parked--;
	char text[32] = "stored\n";
	if (c->is_hit)
		snprintf(text, sizeof(text), "%lld\n", (long long)hits(s, c));
	respond_text(s, c, 200, text);
}

/* The state moved (or may have): import once, then answer what was decided.
 * Returns -ESHUTDOWN once the root is gone. */
static int advance(struct server *s)
{
	int rc = shmsync_import_next(s->w, 0, NULL, NULL);
	if (rc < 0 && rc != -ETIMEDOUT)
		return rc;
	if (rc >= 0)
		s->offline = false;
	for (unsigned i = 0; i < MAX_CONNS && s->parked; i++)
		if (s->conns[i].state == C_COMMIT)
			try_answer(s, &s->conns[i]);
	return 0;
}

static void on_accept(struct server *s, struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE))
		arm_accept(s); /* the multishot accept ended: start another */
	if (cqe->res < 0)
		return;
	for (unsigned i = 0; i < MAX_CONNS; i++) {
		struct conn *c = &s->conns[i];
		if (c->state != C_FREE)
			continue;
		*c = (struct conn){.fd = cqe->res, .in = malloc(BUF_SIZE), .out = malloc(BUF_SIZE)};
		if (!c->in || !c->out)
			break;
		int one = 1;
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		arm_recv(s, c);
		return;
	}
	close(cqe->res); /* full: the client retries and may land on another worker */
}

static void on_send(struct server *s, struct conn *c, int res)
{
	if (c->pinned) {
		c->pinned = false;
		s->pins--;
	}
	if (res < 0 && res != -EAGAIN) {
		conn_close(c);
		return;
	}
	size_t sent = res > 0 ? (size_t)res : 0, hdr = c->iov[0].iov_len;
	size_t left = hdr + c->iov[1].iov_len - sent;
	if (left > 0) {
		/* Short send: keep the rest in our own buffer (off the snapshot). */
		size_t hdr_left = sent < hdr ? hdr - sent : 0;
		size_t body_done = sent > hdr ? sent - hdr : 0;
		memmove(c->out, (char *)c->iov[0].iov_base + hdr - hdr_left, hdr_left);
		memcpy(c->out + hdr_left, (char *)c->iov[1].iov_base + body_done, left - hdr_left);
		c->iov[0] = (struct iovec){c->out, left};
		c->iov[1] = (struct iovec){NULL, 0};
		send_iov(s, c, 0);
	} else if (!c->keep_alive) {
		conn_close(c);
	} else {
		c->in_len -= c->req_len;
		memmove(c->in, c->in + c->req_len, c->in_len);
		c->req_len = 0;
		serve(s, c); /* a pipelined request, or read the next one */
	}
}

static int listen_on(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1024) < 0) {
		perror("listen on 127.0.0.1");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Creates a directory at the root unless it exists. */
static int ensure_dir(shmsync_worker *w, const char *dir)
{
	shmsync_batch *b;
	uint64_t seq;
	int rc = shmsync_begin(w, &b);
	if (rc == 0 && (rc = shmsync_mkdir(b, dir)) < 0)
		shmsync_abort(b);
	if (rc == 0 && (rc = shmsync_export(b, 0, &seq)) == 0)
		rc = shmsync_wait_committed(w, seq, NULL, -1);
	return rc == -EEXIST ? 0 : rc;
}

/* One worker: attaches ($SHMSYNC_ATTACH_FD from a supervisor, else
 * $SHMSYNC_SOCKET) and serves until the root goes away or SIGTERM (whose
 * default action suits: every answered write is committed already). */
static int serve_worker(unsigned index, void *arg)
{
	const struct server_opts *o = arg;
	struct server *s = calloc(1, sizeof(*s));
	char err[256] = "";
	if (!s)
		return 1;
	s->index = index;
	s->limit = o->limit;
	for (unsigned i = 0; i < MAX_CONNS; i++)
		s->conns[i] = (struct conn){.fd = -1, .state = C_FREE};
	int rc = shmsync_attach_msg(&s->w, NULL, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "worker %u: attach: %s\n", index, err[0] ? err : shmsync_strerror(rc));
		return 1;
	}
	shmsync_stats st;
	if ((rc = ensure_dir(s->w, RATE_DIR)) < 0 || (rc = ensure_dir(s->w, SESSION_DIR)) < 0 ||
	    (rc = shmsync_stat(s->w, &st)) < 0) {
		fprintf(stderr, "worker %u: %s\n", index, shmsync_strerror(rc));
		return 1;
	}
	/* On the futex path, wait through the fd the root signals. */
	s->fd_path = strcmp(st.signal, "futex") == 0;
	if ((s->listen_fd = listen_on(o->port)) < 0 ||
	    (rc = io_uring_queue_init(2 * MAX_CONNS, &s->ring, 0)) < 0) {
		fprintf(stderr, "worker %u: setup failed: %s\n", index, strerror(rc < 0 ? -rc : errno));
		return 1;
	}
	arm_accept(s);
	fprintf(stderr, "worker %u: pid %d serving 127.0.0.1:%d (wait: %s)\n", index, (int)getpid(), o->port,
		s->fd_path ? "poll on shmsync_fd" : "shmsync_prep_wait");

	/* No wait while a send reads the snapshot: the import it would trigger
	 * must not move the snapshot under it (pinned sends end at once). */
	struct __kernel_timespec root_check = {.tv_sec = 1};
	for (;;) {
		if (!s->wake_armed && s->pins == 0) {
			arm_wake(s); /* first: see arm_wake */
			if ((rc = advance(s)) < 0)
				break;
		}
		struct io_uring_cqe *cqe;
		rc = io_uring_submit_and_wait_timeout(&s->ring, &cqe, 1, &root_check, NULL);
		if (rc == -ETIME) {
			/* Idle for a second: go offline, so our snapshot pins
			 * nothing while we sleep, and see that the root is there
			 * (import reports -ESHUTDOWN once it is gone). */
			if (s->pins == 0 && !s->offline) {
				shmsync_offline(s->w);
				s->offline = true;
			}
			if ((rc = advance(s)) < 0)
				break;
		}
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&s->ring, head, cqe)
		{
			seen++;
			uint64_t d = io_uring_cqe_get_data64(cqe);
			struct conn *c = &s->conns[d >> 8];
			switch ((enum op)(d & 0xff)) {
			case OP_ACCEPT:
				on_accept(s, cqe);
				break;
			case OP_RECV:
				if (cqe->res <= 0) {
					conn_close(c);
					break;
				}
				c->in_len += (size_t)cqe->res;
				serve(s, c);
				break;
			case OP_SEND:
				on_send(s, c, cqe->res);
				break;
			case OP_WAKE:
				s->wake_armed = false;
				break;
			}
		}
		io_uring_cq_advance(&s->ring, seen);
	}
	/* Non-zero: a supervisor restarts us (on a new root, if it died). */
	fprintf(stderr, "worker %u: %s\n", index, shmsync_strerror(rc));
	return 1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: shmsync_example_server [-n WORKERS] [--port PORT] [--limit N] [--socket PATH]\n"
		   "       shmsync_example_server --no-supervise [--index I] [--port PORT] [--limit N]\n"
		   "  --no-supervise: run one worker in this process, attached through $SHMSYNC_SOCKET\n"
		   "  (or $SHMSYNC_ATTACH_FD) to a root such as `shmsync serve`\n");
}

int main(int argc, char **argv)
{
	struct server_opts o = {.workers = 0, .port = 8080, .limit = 100};
	const char *socket_path = NULL;
	bool no_supervise = false;
	unsigned index = 0;
	static const struct option longopts[] = {
		{"workers", required_argument, NULL, 'n'}, {"port", required_argument, NULL, 'p'},
		{"limit", required_argument, NULL, 'l'},   {"no-supervise", no_argument, NULL, 'N'},
		{"index", required_argument, NULL, 'i'},   {"socket", required_argument, NULL, 's'},
		{"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
	for (int ch; (ch = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1;) {
		switch (ch) {
		case 'n':
			o.workers = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'p':
			o.port = atoi(optarg);
			break;
		case 'l':
			o.limit = strtoll(optarg, NULL, 10);
			break;
		case 'N':
			no_supervise = true;
			break;
		case 'i':
			index = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 's':
			socket_path = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	/* LIMIT <= 2^31 keeps the rate limit exact: see do_hit. */
	if (optind != argc || o.port <= 0 || o.port > 65535 || o.limit < 1 || o.limit > (1ll << 31)) {
		usage(stderr);
		return 2;
	}
	if (no_supervise)
		return serve_worker(index, &o);

	/* The supervisor runs the root and the workers, restarts what dies and
	 * stops all on SIGTERM or SIGINT. Its default stall policy also kills a
	 * worker that held one snapshot for 30 s; but a worker serving reads
	 * while nothing is committed holds one snapshot that long through no
	 * fault, and ours imports at every commit anyway. So bound only the
	 * retired memory a snapshot keeps, which does not depend on timing. */
	char err[256] = "";
	shmsync_supervise_opts so = {
		.workers = o.workers, .socket_path = socket_path, .errbuf = err, .errbuf_len = sizeof(err)};
	so.root.stall_policy = SHMSYNC_STALL_KILL;
	so.root.max_read_pin_bytes = 256u << 20;
	int rc = shmsync_supervise(&so, serve_worker, &o);
	if (rc < 0) {
		fprintf(stderr, "shmsync_example_server: %s\n", err[0] ? err : shmsync_strerror(rc));
		return 1;
	}
	return 0;
}
