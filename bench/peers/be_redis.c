/* Redis as its experts run it for this: a private redis-server on a unix
 * socket with persistence off (--save "" --appendonly no), hiredis clients,
 * MSET for a batch (one command, one round trip, applied atomically), plain
 * SET/GET for single keys, and pub/sub for propagation: a writer pipelines
 * SET and PUBLISH (the value rides in the message, so the subscriber needs
 * no GET), and the subscriber sleeps in a blocking read of its subscription
 * connection. A churn directory is a hash: HSET of its fields, DEL to drop
 * it, both in one MULTI/EXEC. Redis has no read snapshots, so the churn
 * reader's hold is a no-op. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "peers.h"

#define MAX_BATCH 4096

struct conn {
	redisContext *c;
	redisContext *sub; /* subscription, for propagation */
	unsigned pending;  /* replies of pipelined publishes not read yet */
	const char *argv[2 + 2 * MAX_BATCH];
	size_t argl[2 + 2 * MAX_BATCH];
	char keys[MAX_BATCH][KEY_LEN];
	uint8_t vals[MAX_BATCH][VAL_LEN];
};

static int fail(redisContext *c, const char *what)
{
	fprintf(stderr, "peers: redis: %s: %s\n", what, c ? c->errstr : "out of memory");
	return -1;
}

static redisContext *connect_to(const char *sock)
{
	redisContext *c = redisConnectUnix(sock);
	if (!c || c->err) {
		fail(c, "connect");
		redisFree(c);
		return NULL;
	}
	return c;
}

/* Reads one reply; an error reply counts as a failure. */
static int reply(redisContext *c, const char *what, redisReply **out)
{
	void *r = NULL;
	if (redisGetReply(c, &r) != REDIS_OK)
		return fail(c, what);
	redisReply *rr = r;
	if (rr->type == REDIS_REPLY_ERROR) {
		fprintf(stderr, "peers: redis: %s: %s\n", what, rr->str);
		freeReplyObject(rr);
		return -1;
	}
	if (out)
		*out = rr;
	else
		freeReplyObject(rr);
	return 0;
}

static void rd_stop(struct cfg *c)
{
	if (c->server_pid > 0) {
		int st = stop_server(c->server_pid, "redis-server");
		if (st != 0)
			fprintf(stderr, "peers: redis-server exited with status %#x\n", (unsigned)st);
	}
	c->server_pid = 0;
}

/* A fresh server for every store: FLUSHALL would leave the allocator's
 * fragmentation of the last run in used_memory's neighbours. */
static int rd_fresh(struct cfg *c)
{
	rd_stop(c);
	char log[512];
	snprintf(c->sock, sizeof c->sock, "%s/redis.sock", c->tmpdir);
	snprintf(log, sizeof log, "%s/redis.log", c->tmpdir);
	unlink(c->sock);
	char *argv[] = {(char *)c->redis_server,
			"--port",
			"0",
			"--unixsocket",
			c->sock,
			"--unixsocketperm",
			"700",
			"--save",
			"",
			"--appendonly",
			"no",
			"--daemonize",
			"no",
			"--loglevel",
			"warning",
			"--logfile",
			log,
			"--dir",
			(char *)c->tmpdir,
			NULL};
	c->server_pid = spawn_server(argv, c->cpu[1]);
	if (c->server_pid < 0)
		return -1;
	uint64_t end = now_ns() + 20ull * 1000000000ull;
	for (;;) {
		struct stat st;
		if (stat(c->sock, &st) == 0) {
			redisContext *rc = redisConnectUnix(c->sock);
			if (rc && !rc->err) {
				redisReply *r = redisCommand(rc, "INFO server");
				if (r && r->type == REDIS_REPLY_STRING) {
					const char *v = strstr(r->str, "redis_version:");
					if (v)
						snprintf(c->version, sizeof c->version, "%.*s",
							 (int)strcspn(v + 14, "\r\n"), v + 14);
					freeReplyObject(r);
					redisFree(rc);
					return 0;
				}
				if (r)
					freeReplyObject(r);
			}
			redisFree(rc);
		}
		if (now_ns() > end) {
			fprintf(stderr, "peers: redis-server did not answer on %s in 20 s (log: %s)\n",
				c->sock, log);
			return -1;
		}
		usleep(5000);
	}
}

static struct conn *rd_open(const struct cfg *c, enum role r)
{
	struct conn *x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	if (!(x->c = connect_to(c->sock)))
		goto bad;
	if (r == ROLE_PROP_A || r == ROLE_PROP_B) {
		/* A awaits id 1, B id 0; the channel is the key's name. */
		char k[KEY_LEN];
		key_of(r == ROLE_PROP_A ? 1 : 0, k);
		if (!(x->sub = connect_to(c->sock)))
			goto bad;
		redisReply *rr;
		if (redisAppendCommand(x->sub, "SUBSCRIBE %b", k, (size_t)KEY_LEN) != REDIS_OK ||
		    reply(x->sub, "subscribe", &rr) < 0)
			goto bad;
		freeReplyObject(rr);
	}
	return x;
bad:
	if (x->sub)
		redisFree(x->sub);
	if (x->c)
		redisFree(x->c);
	free(x);
	return NULL;
}

static void rd_close(struct conn *x)
{
	if (x->sub)
		redisFree(x->sub);
	redisFree(x->c);
	free(x);
}

static int rd_put_batch(struct conn *x, const uint32_t *ids, size_t n, uint64_t tag, uint64_t *token)
{
	*token = 0;
	if (n > MAX_BATCH) {
		fprintf(stderr, "peers: redis: batch of %zu over %d\n", n, MAX_BATCH);
		return -1;
	}
	x->argv[0] = n == 1 ? "SET" : "MSET";
	x->argl[0] = strlen(x->argv[0]);
	for (size_t i = 0; i < n; i++) {
		key_of(ids[i], x->keys[i]);
		val_of(ids[i], tag, x->vals[i]);
		x->argv[1 + 2 * i] = x->keys[i];
		x->argl[1 + 2 * i] = KEY_LEN;
		x->argv[2 + 2 * i] = (const char *)x->vals[i];
		x->argl[2 + 2 * i] = VAL_LEN;
	}
	if (redisAppendCommandArgv(x->c, (int)(1 + 2 * n), x->argv, x->argl) != REDIS_OK)
		return fail(x->c, "append");
	return reply(x->c, x->argv[0], NULL);
}

static int rd_nop(struct conn *x)
{
	(void)x;
	return 0;
}

static int rd_sync_to(struct conn *x, uint64_t token)
{
	(void)x;
	(void)token; /* a write acknowledged to one client is seen by all */
	return 0;
}

static int rd_get(struct conn *x, uint32_t id, uint8_t *out)
{
	char k[KEY_LEN];
	key_of(id, k);
	redisReply *r;
	if (redisAppendCommand(x->c, "GET %b", k, (size_t)KEY_LEN) != REDIS_OK)
		return fail(x->c, "append");
	if (reply(x->c, "GET", &r) < 0)
		return -1;
	int rc = 0;
	if (r->type == REDIS_REPLY_STRING && r->len == VAL_LEN) {
		memcpy(out, r->str, VAL_LEN);
		rc = 1;
	} else if (r->type != REDIS_REPLY_NIL) {
		fprintf(stderr, "peers: redis: GET: unexpected reply type %d\n", r->type);
		rc = -1;
	}
	freeReplyObject(r);
	return rc;
}

static int rd_publish(struct conn *x, uint32_t id, uint64_t seq)
{
	/* The replies of the last publish arrived long ago; reading them
	 * here keeps them off the measured path of the wait. */
	for (; x->pending > 0; x->pending--)
		if (reply(x->c, "SET/PUBLISH", NULL) < 0)
			return -1;
	char k[KEY_LEN];
	uint8_t v[VAL_LEN];
	key_of(id, k);
	val_of(id, seq, v);
	if (redisAppendCommand(x->c, "SET %b %b", k, (size_t)KEY_LEN, v, (size_t)VAL_LEN) != REDIS_OK ||
	    redisAppendCommand(x->c, "PUBLISH %b %b", k, (size_t)KEY_LEN, v, (size_t)VAL_LEN) != REDIS_OK)
		return fail(x->c, "append");
	/* Send both now, in one write. */
	int done = 0;
	while (!done)
		if (redisBufferWrite(x->c, &done) != REDIS_OK)
			return fail(x->c, "write");
	x->pending = 2;
	return 0;
}

static int rd_await(struct conn *x, uint32_t id, uint64_t seq, enum wait_mode m, bool yield)
{
	(void)m;
	(void)yield;
	(void)id; /* the subscription is on id's channel */
	if (!x->sub) {
		fprintf(stderr, "peers: redis: await without a subscription\n");
		return -1;
	}
	for (;;) {
		redisReply *r;
		/* A blocking read: the process sleeps in the kernel until
		 * the server pushes the message. */
		if (reply(x->sub, "message", &r) < 0)
			return -1;
		uint64_t got = 0;
		bool ok = r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
			  r->element[2]->type == REDIS_REPLY_STRING && r->element[2]->len == VAL_LEN;
		if (ok)
			got = val_tag((const uint8_t *)r->element[2]->str);
		freeReplyObject(r);
		if (!ok) {
			fprintf(stderr, "peers: redis: unexpected pub/sub message\n");
			return -1;
		}
		if (got >= seq)
			return 0;
	}
}

static int rd_churn(struct conn *x, long create, long drop, unsigned keys)
{
	char dir[16], ddir[16];
	unsigned n = keys > MAX_BATCH ? MAX_BATCH : keys;
	snprintf(dir, sizeof dir, "c%06ld", create % 1000000);
	x->argv[0] = "HSET";
	x->argl[0] = 4;
	x->argv[1] = dir;
	x->argl[1] = strlen(dir);
	for (unsigned i = 0; i < n; i++) {
		key_of(i, x->keys[i]);
		val_of(i, (uint64_t)create, x->vals[i]);
		x->argv[2 + 2 * i] = x->keys[i];
		x->argl[2 + 2 * i] = KEY_LEN;
		x->argv[3 + 2 * i] = (const char *)x->vals[i];
		x->argl[3 + 2 * i] = VAL_LEN;
	}
	unsigned replies = 3;
	if (redisAppendCommand(x->c, "MULTI") != REDIS_OK ||
	    redisAppendCommandArgv(x->c, (int)(2 + 2 * n), x->argv, x->argl) != REDIS_OK)
		return fail(x->c, "append");
	if (drop >= 0) {
		snprintf(ddir, sizeof ddir, "c%06ld", drop % 1000000);
		if (redisAppendCommand(x->c, "DEL %s", ddir) != REDIS_OK)
			return fail(x->c, "append");
		replies++;
	}
	if (redisAppendCommand(x->c, "EXEC") != REDIS_OK)
		return fail(x->c, "append");
	for (unsigned i = 0; i < replies; i++) {
		redisReply *r;
		if (reply(x->c, "MULTI/HSET/DEL/EXEC", &r) < 0)
			return -1;
		bool bad = false;
		if (r->type == REDIS_REPLY_ARRAY)
			for (size_t j = 0; j < r->elements; j++)
				bad |= r->element[j]->type == REDIS_REPLY_ERROR;
		freeReplyObject(r);
		if (bad) {
			fprintf(stderr, "peers: redis: churn transaction failed\n");
			return -1;
		}
	}
	return 0;
}

static uint64_t info_field(const char *info, const char *name)
{
	const char *p = strstr(info, name);
	return p ? strtoull(p + strlen(name), NULL, 10) : 0;
}

static int rd_mem(struct conn *x, struct mem *m, bool settle)
{
	(void)settle; /* DEL frees at once (no lazyfree for these small hashes) */
	redisReply *r;
	if (redisAppendCommand(x->c, "INFO memory") != REDIS_OK)
		return fail(x->c, "append");
	if (reply(x->c, "INFO", &r) < 0)
		return -1;
	if (r->type != REDIS_REPLY_STRING) {
		freeReplyObject(r);
		fprintf(stderr, "peers: redis: INFO: unexpected reply\n");
		return -1;
	}
	m->bytes = info_field(r->str, "\nused_memory:");
	m->detail[0] = info_field(r->str, "\nused_memory_rss:");
	m->detail_name[0] = "used_memory_rss";
	m->detail[1] = info_field(r->str, "\nused_memory_dataset:");
	m->detail_name[1] = "used_memory_dataset";
	m->detail[2] = info_field(r->str, "\nused_memory_startup:");
	m->detail_name[2] = "used_memory_startup";
	freeReplyObject(r);
	return 0;
}

const struct backend be_redis = {
	.name = "redis",
	.durability = "persistence off: --save \"\" --appendonly no; unix socket; state lost with the server",
	.memory = "INFO memory used_memory (the allocator's count of what the server holds)",
	.server = true,
	.poll = false,
	.sleep = true,
	.snapshots = false,
	.fresh = rd_fresh,
	.stop = rd_stop,
	.open = rd_open,
	.close = rd_close,
	.put_batch = rd_put_batch,
	.sync_to = rd_sync_to,
	.snap_begin = rd_nop,
	.snap_end = rd_nop,
	.get = rd_get,
	.publish = rd_publish,
	.await = rd_await,
	.churn = rd_churn,
	.mem = rd_mem,
	.hold = rd_nop,
	.release = rd_nop,
};
