/* redis_server: the baseline for bench/server_bench.sh. The same HTTP API as
 * shmsync_example_server (POST /hit/<client>, PUT and GET /session/<id>) and
 * the same kind of worker (a SO_REUSEPORT listener and one io_uring per
 * process), but the state lives in Redis: each worker holds one hiredis
 * connection and makes one blocking call per request, as a simple service
 * would. The rate limit is exact too: a Lua script increments only below
 * LIMIT, and Redis runs scripts one at a time.
 *
 * usage: redis_server -n WORKERS --port PORT --limit N --redis UNIX_SOCKET
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CONNS 256
#define BUF_SIZE (8192 + 64 * 1024)

static const char *hit_script = "local n = tonumber(redis.call('GET', KEYS[1]) or '0') "
				"if n >= tonumber(ARGV[1]) then return -1 end "
				"return redis.call('INCR', KEYS[1])";

struct conn {
	int fd;
	size_t in_len, req_len;
	bool keep_alive;
	char in[BUF_SIZE], out[BUF_SIZE];
};

static struct io_uring ring;
static struct conn *conns[MAX_CONNS];
static redisContext *redis;
static unsigned worker_index;
static long long limit = 100;

static void submit_op(int op, unsigned i, struct io_uring_sqe *sqe)
{
	io_uring_sqe_set_data64(sqe, (uint64_t)i << 8 | (unsigned)op);
}

static void respond(unsigned i, int status, const char *body, size_t len)
{
	struct conn *c = conns[i];
	int n = snprintf(
		c->out, 8192,
		"HTTP/1.1 %d %s\r\nX-Worker: %u\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n",
		status, status == 200 ? "OK" : "Error", worker_index, len,
		c->keep_alive ? "" : "Connection: close\r\n");
	memcpy(c->out + n, body, len);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
	io_uring_prep_send(sqe, c->fd, c->out, (size_t)n + len, MSG_NOSIGNAL | MSG_WAITALL);
	submit_op(2, i, sqe);
}

static void read_more(unsigned i)
{
	struct conn *c = conns[i];
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
	io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, BUF_SIZE - c->in_len, 0);
	submit_op(1, i, sqe);
}

static void serve(unsigned i)
{
	struct conn *c = conns[i];
	char *end = c->in_len >= 4 ? memmem(c->in, c->in_len, "\r\n\r\n", 4) : NULL;
	if (!end) {
		read_more(i);
		return;
	}
	*end = '\0';
	size_t head = (size_t)(end + 4 - c->in), body_len = 0;
	char method[8], path[1100];
	c->keep_alive = strcasestr(c->in, "Connection: close") == NULL;
	if (sscanf(c->in, "%7s %1099s", method, path) != 2) {
		c->keep_alive = false;
		respond(i, 400, "bad request\n", 12);
		return;
	}
	char *cl = strcasestr(c->in, "\r\nContent-Length:");
	if (cl)
		body_len = strtoul(cl + 17, NULL, 10);
	if (body_len > BUF_SIZE - head || c->in_len < head + body_len) {
		*end = '\r';
		c->keep_alive = body_len <= BUF_SIZE - head;
		if (!c->keep_alive)
			respond(i, 413, "too large\n", 10);
		else
			read_more(i);
		return;
	}
	c->req_len = head + body_len;
	redisReply *r = NULL;
	char text[32];
	if (strcmp(method, "POST") == 0 && strncmp(path, "/hit/", 5) == 0) {
		r = redisCommand(redis, "EVAL %s 1 rate:%s %lld", hit_script, path + 5, limit);
		if (r && r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
			int n = snprintf(text, sizeof(text), "%lld\n", r->integer);
			respond(i, 200, text, (size_t)n);
		} else if (r && r->type == REDIS_REPLY_INTEGER) {
			respond(i, 429, "over limit\n", 11);
		} else {
			respond(i, 500, "redis\n", 6);
		}
	} else if (strcmp(method, "PUT") == 0 && strncmp(path, "/session/", 9) == 0) {
		r = redisCommand(redis, "SET session:%s %b", path + 9, end + 4, body_len);
		respond(i, r && r->type == REDIS_REPLY_STATUS ? 200 : 500, "stored\n", 7);
	} else if (strcmp(method, "GET") == 0 && strncmp(path, "/session/", 9) == 0) {
		r = redisCommand(redis, "GET session:%s", path + 9);
		if (r && r->type == REDIS_REPLY_STRING)
			respond(i, 200, r->str, r->len);
		else
			respond(i, 404, "no such session\n", 16);
	} else {
		respond(i, 404, "no such resource\n", 17);
	}
	freeReplyObject(r);
}

static void close_conn(unsigned i)
{
	close(conns[i]->fd);
	free(conns[i]);
	conns[i] = NULL;
}

static int worker(int port, const char *redis_path)
{
	redis = redisConnectUnix(redis_path);
	if (!redis || redis->err) {
		fprintf(stderr, "redis_server: redis at %s: %s\n", redis_path,
			redis ? redis->errstr : "no memory");
		return 1;
	}
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 1024) < 0 ||
	    io_uring_queue_init(2 * MAX_CONNS, &ring, 0) < 0) {
		perror("redis_server: setup");
		return 1;
	}
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
	io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
	submit_op(0, 0, sqe);
	fprintf(stderr, "worker %u: pid %d serving 127.0.0.1:%d (redis)\n", worker_index, (int)getpid(),
		port);
	for (;;) {
		struct io_uring_cqe *cqe;
		if (io_uring_submit_and_wait(&ring, 1) < 0)
			continue;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			seen++;
			uint64_t d = io_uring_cqe_get_data64(cqe);
			unsigned i = (unsigned)(d >> 8);
			int res = cqe->res;
			if ((d & 0xff) == 0) {
				if (!(cqe->flags & IORING_CQE_F_MORE)) {
					sqe = io_uring_get_sqe(&ring);
					io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
					submit_op(0, 0, sqe);
				}
				if (res < 0)
					continue;
				unsigned k = 0;
				while (k < MAX_CONNS && conns[k])
					k++;
				if (k == MAX_CONNS || !(conns[k] = calloc(1, sizeof(struct conn)))) {
					close(res);
					continue;
				}
				conns[k]->fd = res;
				setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				serve(k);
			} else if ((d & 0xff) == 1) {
				if (res <= 0) {
					close_conn(i);
					continue;
				}
				conns[i]->in_len += (size_t)res;
				serve(i);
			} else {
				struct conn *c = conns[i];
				if (res < 0 || !c->keep_alive) {
					close_conn(i);
					continue;
				}
				c->in_len -= c->req_len;
				memmove(c->in, c->in + c->req_len, c->in_len);
				c->req_len = 0;
				serve(i);
			}
		}
		io_uring_cq_advance(&ring, seen);
	}
}

int main(int argc, char **argv)
{
	unsigned workers = 1;
	int port = 8080;
	const char *redis_path = NULL;
	static const struct option longopts[] = {{"port", required_argument, NULL, 'p'},
						 {"limit", required_argument, NULL, 'l'},
						 {"redis", required_argument, NULL, 'r'},
						 {NULL, 0, NULL, 0}};
	for (int ch; (ch = getopt_long(argc, argv, "n:", longopts, NULL)) != -1;) {
		if (ch == 'n')
			workers = (unsigned)strtoul(optarg, NULL, 10);
		else if (ch == 'p')
			port = atoi(optarg);
		else if (ch == 'l')
			limit = strtoll(optarg, NULL, 10);
		else if (ch == 'r')
			redis_path = optarg;
		else
			return 2;
	}
	if (!redis_path || workers == 0) {
		fprintf(stderr, "usage: redis_server -n WORKERS --port PORT --limit N --redis UNIX_SOCKET\n");
		return 2;
	}
	/* Workers die with this process: SIGTERM to it stops them all. */
	for (unsigned k = 0; k < workers; k++)
		if (fork() == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			worker_index = k;
			return worker(port, redis_path);
		}
	while (wait(NULL) > 0) {
	}
	return 1;
}
