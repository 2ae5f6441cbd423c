/* shmsync serve: a root in the foreground. */
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include "cmd.h"

/* ---- serve -------------------------------------------------------------------- */

static shmsync_root *served;

static void on_serve_stop(int sig)
{
	(void)sig;
	/* Writes an eventfd and sets a flag: safe in a signal handler. */
	if (served)
		shmsync_root_stop(served);
}

int cmd_serve(struct ctx *c)
{
	char err[512] = "";
	shmsync_root_opts o = {0};
	o.socket_path = c->socket;
	o.capacity = c->capacity;
	o.max_workers = c->max_workers;
	o.stall_policy = c->stall_policy;
	o.max_read_pin_ns = c->max_read_pin_ns;
	o.max_read_pin_bytes = c->max_read_pin_bytes;
	o.port_ring_bytes = c->ring_bytes;
	o.allow_uids = c->n_allow_uids ? c->allow_uids : NULL;
	o.n_allow_uids = c->n_allow_uids;
	o.numa_policy = c->numa_policy;
	o.numa_node = c->numa_node;
	if (tool_repl_check(&c->repl) < 0)
		return TOOL_USAGE;
	o.replicate = c->repl.replicate;
	o.follow = c->repl.follow;
	o.stream = c->repl.stream;
	o.durable = c->repl.durable;
	o.replicas = c->repl.replicas;
	o.lease_ns = c->repl.lease_ns;
	o.snapshot_ticks = c->repl.snapshot_ticks;
	o.snapshot_bytes = c->repl.snapshot_bytes;
	o.repl_window = c->repl.repl_window;
	o.log_bytes = c->log_bytes;
	o.prefault_bytes = c->prefault_bytes;
	o.errbuf = err;
	o.errbuf_len = sizeof(err);
	shmsync_root *r;
	int rc = shmsync_root_open(&r, &o);
	if (rc < 0) {
		if (rc == -EADDRINUSE) /* a root, or another program: the message says which */
			tool_err("%s", err[0] ? err : "a root already serves the socket");
		else
			tool_err("cannot start the root on %s: %s", c->socket,
				 err[0] ? err : shmsync_strerror(rc));
		return rc == -EINVAL ? TOOL_USAGE : TOOL_FAIL;
	}
	served = r;
	catch_stop_signals(on_serve_stop);
	signal(SIGPIPE, SIG_IGN);
	if (!c->quiet)
		fprintf(stderr, "shmsync: serving %s (pid %d); SIGTERM or Ctrl-C stops it\n", c->socket,
			(int)getpid());
	rc = shmsync_root_run(r);
	shmsync_root_close(r);
	served = NULL;
	if (rc < 0) {
		tool_err("the root's loop failed: %s", shmsync_strerror(rc));
		return TOOL_FAIL;
	}
	return TOOL_OK;
}
