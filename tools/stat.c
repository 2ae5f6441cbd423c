/* shmsync stat: the root's statistics and its workers. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>

#include "cmd.h"

/* ---- stat ------------------------------------------------------------------- */

static const char *state_name(int state)
{
	switch (state) {
	case SHMSYNC_WORKER_LIVE:
		return "live";
	case SHMSYNC_WORKER_OFFLINE:
		return "offline";
	case SHMSYNC_WORKER_LAGGING:
		return "lagging";
	}
	return "unknown";
}

/* Reads the worker table, growing the buffer until it fits. */
static int read_workers(shmsync_worker *w, shmsync_worker_info **out)
{
	unsigned cap = 64;
	for (int tries = 0; tries < 100; tries++) {
		shmsync_worker_info *v = malloc(cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		int n = shmsync_workers(w, v, cap);
		if (n >= 0 && (unsigned)n <= cap) {
			*out = v;
			return n;
		}
		free(v);
		if (n >= 0)
			cap = (unsigned)n + 16;
		else if (n != -EAGAIN)
			return n;
	}
	return -EAGAIN;
}

static json_t *json_u64_or_null(uint64_t v)
{
	return v > INT64_MAX ? json_null() : json_integer((json_int_t)v);
}

static int print_stat_json(const shmsync_stats *sp, const shmsync_worker_info *info, int m)
{
	json_t *o = json_object(), *ws = json_array();
	if (!o || !ws) {
		json_decref(o);
		json_decref(ws);
		tool_err("out of memory");
		return TOOL_FAIL;
	}
	json_object_set_new(o, "tick", json_integer((json_int_t)sp->tick));
	json_object_set_new(o, "min_epoch", json_u64_or_null(sp->min_epoch));
	json_object_set_new(o, "signal", json_string(sp->root_signal));
	json_object_set_new(o, "client_signal", json_string(sp->signal));
	json_object_set_new(o, "uring_ops", json_integer((json_int_t)sp->uring_ops));
	json_object_set_new(o, "bytes_in_use", json_integer((json_int_t)sp->bytes_in_use));
	json_object_set_new(o, "capacity", json_integer((json_int_t)sp->capacity));
	json_object_set_new(o, "tombstones", json_integer((json_int_t)sp->tombstones));
	json_object_set_new(o, "reclaimed", json_integer((json_int_t)sp->reclaimed));
	json_object_set_new(o, "root_timer_found_work", json_integer((json_int_t)sp->root_timer_found_work));
	for (int i = 0; i < m; i++) {
		json_t *e = json_object();
		json_object_set_new(e, "slot", json_integer(info[i].slot));
		json_object_set_new(e, "pid", json_integer(info[i].pid));
		json_object_set_new(e, "cursor", json_integer((json_int_t)info[i].cursor));
		json_object_set_new(e, "epoch", json_u64_or_null(info[i].epoch));
		json_object_set_new(e, "lag", json_integer((json_int_t)info[i].lag));
		json_object_set_new(e, "pinned_bytes", json_integer((json_int_t)info[i].pinned_bytes));
		json_object_set_new(e, "state", json_string(state_name(info[i].state)));
		json_array_append_new(ws, e);
	}
	json_object_set_new(o, "workers", ws);
	if (print_json(o) < 0) {
		tool_err("out of memory");
		return TOOL_FAIL;
	}
	return TOOL_OK;
}

static void print_stat_text(const shmsync_stats *sp, const shmsync_worker_info *info, int m)
{
	char b1[32], b2[32];
	printf("tick          %" PRIu64 "\n", sp->tick);
	if (sp->min_epoch == UINT64_MAX)
		printf("min_epoch     none (no worker online)\n");
	else
		printf("min_epoch     %" PRIu64 "\n", sp->min_epoch);
	printf("signal        %s (root); this client: %s, %" PRIu64 " io_uring operations\n", sp->root_signal,
	       sp->signal, sp->uring_ops);
	printf("bytes_in_use  %s (%" PRIu64 ")\n", tool_bytes(b1, sizeof(b1), sp->bytes_in_use),
	       sp->bytes_in_use);
	printf("capacity      %s (%" PRIu64 ")\n", tool_bytes(b1, sizeof(b1), sp->capacity), sp->capacity);
	printf("tombstones    %" PRIu64 " (live)\n", sp->tombstones);
	printf("reclaimed     %" PRIu64 " (objects, total)\n", sp->reclaimed);
	printf("workers       %d (besides this one)\n", m);
	if (m) {
		printf("\n%5s %8s %-8s %10s %10s %8s %12s\n", "slot", "pid", "state", "cursor", "epoch",
		       "lag", "pinned");
		for (int i = 0; i < m; i++) {
			if (info[i].epoch == UINT64_MAX)
				snprintf(b2, sizeof(b2), "-");
			else
				snprintf(b2, sizeof(b2), "%" PRIu64, info[i].epoch);
			printf("%5u %8d %-8s %10" PRIu64 " %10s %8" PRIu64 " %12s\n", info[i].slot,
			       (int)info[i].pid, state_name(info[i].state), info[i].cursor, b2, info[i].lag,
			       tool_bytes(b1, sizeof(b1), info[i].pinned_bytes));
		}
	}
}

int cmd_stat(struct ctx *c)
{
	int ret = attach(c);
	if (ret != TOOL_OK)
		return ret;
	shmsync_stats s;
	shmsync_worker_info *info = NULL;
	int rc = shmsync_stat(c->w, &s);
	int n = rc < 0 ? rc : read_workers(c->w, &info);
	if (rc < 0 || n < 0) {
		tool_err("reading statistics: %s", shmsync_strerror(rc < 0 ? rc : n));
		return TOOL_FAIL;
	}
	/* This command is a worker too: leave its own slot out. */
	int m = 0;
	for (int i = 0; i < n; i++)
		if (info[i].slot != s.slot)
			info[m++] = info[i];
	ret = TOOL_OK;
	if (c->json)
		ret = print_stat_json(&s, info, m);
	else
		print_stat_text(&s, info, m);
	free(info);
	return ret == TOOL_OK ? finish_output() : ret;
}
