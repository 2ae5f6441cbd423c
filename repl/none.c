/* The NATS side of repl.h in a build without libnats: a root asked to
 * replicate says so and starts nothing. */
#include <errno.h>
#include <stdio.h>

#include "repl.h"

int repl_open(struct repl **rp, const struct repl_opts *o, char *msg, size_t msglen)
{
	(void)rp;
	(void)o;
	snprintf(msg, msglen,
		 "this shmsync was built without libnats: replication needs it (bash scripts/deps.sh, then "
		 "rebuild)");
	return -ENOTSUP;
}

/* Never reached (repl_open fails), but the root links them. */
void repl_close(struct repl *rp)
{
	(void)rp;
}
struct repl_ev *repl_poll(struct repl *rp)
{
	(void)rp;
	return NULL;
}
struct repl_ev *repl_wait(struct repl *rp, int64_t timeout_ns)
{
	(void)rp;
	(void)timeout_ns;
	return NULL;
}
bool repl_has_events(struct repl *rp)
{
	(void)rp;
	return false;
}
void repl_ev_free(struct repl_ev *ev)
{
	(void)ev;
}
int repl_snapshot_latest(struct repl *rp, struct repl_snapidx *idx, char *msg, size_t msglen)
{
	(void)rp, (void)idx, (void)msg, (void)msglen;
	return -ENOTSUP;
}
int repl_snapshot_read(struct repl *rp, const struct repl_snapidx *idx,
		       int (*fn)(const uint8_t *data, size_t len, void *arg), void *arg, char *msg,
		       size_t msglen)
{
	(void)rp, (void)idx, (void)fn, (void)arg, (void)msg, (void)msglen;
	return -ENOTSUP;
}
int repl_last_seq(struct repl *rp, uint64_t *seq, char *msg, size_t msglen)
{
	(void)rp, (void)seq, (void)msg, (void)msglen;
	return -ENOTSUP;
}
int repl_last_tick_seq(struct repl *rp, uint64_t *seq, char *msg, size_t msglen)
{
	(void)rp, (void)seq, (void)msg, (void)msglen;
	return -ENOTSUP;
}
int repl_ticks_follow(struct repl *rp, uint64_t after, char *msg, size_t msglen)
{
	(void)rp, (void)after, (void)msg, (void)msglen;
	return -ENOTSUP;
}
void repl_ticks_stop(struct repl *rp)
{
	(void)rp;
}
int repl_lead(struct repl *rp, uint64_t tick, uint64_t last_seq, char *msg, size_t msglen)
{
	(void)rp, (void)tick, (void)last_seq, (void)msg, (void)msglen;
	return -ENOTSUP;
}
int repl_publish_tick(struct repl *rp, uint64_t tick, const uint8_t *payload, size_t len)
{
	(void)rp, (void)tick, (void)payload, (void)len;
	return -ENOTSUP;
}
bool repl_window_full(struct repl *rp)
{
	(void)rp;
	return false;
}
int repl_resync(struct repl *rp, char *msg, size_t msglen)
{
	(void)rp, (void)msg, (void)msglen;
	return -ENOTSUP;
}
int repl_reply(struct repl *rp, const char *reply, int64_t result)
{
	(void)rp, (void)reply, (void)result;
	return -ENOTSUP;
}
int repl_follow(struct repl *rp, char *msg, size_t msglen)
{
	(void)rp, (void)msg, (void)msglen;
	return -ENOTSUP;
}
int repl_forward(struct repl *rp, uint64_t epoch, uint64_t floor, uint64_t id, const uint8_t *rec, size_t len)
{
	(void)rp, (void)epoch, (void)floor, (void)id, (void)rec, (void)len;
	return -ENOTSUP;
}
uint64_t repl_epoch(struct repl *rp)
{
	(void)rp;
	return 0;
}
int repl_snapshot_start(struct repl *rp, int seg_fd, uint64_t tick, _Atomic uint64_t *pin)
{
	(void)rp, (void)seg_fd, (void)tick, (void)pin;
	return -ENOTSUP;
}
bool repl_snapshot_due(struct repl *rp)
{
	(void)rp;
	return false;
}
void repl_stats(struct repl *rp, struct repl_stats *st)
{
	(void)rp;
	*st = (struct repl_stats){0};
}
