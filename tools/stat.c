/* shmsync stat: the root's statistics and its workers, as text, JSON or in
 * the Prometheus text format (tools/metrics.c). */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "metrics.h"

/* ---- stat ------------------------------------------------------------------- */

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
	json_object_set_new(o, "segment_bytes", json_integer((json_int_t)sp->segment_bytes));
	json_object_set_new(o, "huge_bytes", json_integer((json_int_t)sp->huge_bytes));
	json_object_set_new(o, "tombstones", json_integer((json_int_t)sp->tombstones));
	json_object_set_new(o, "reclaimed", json_integer((json_int_t)sp->reclaimed));
	json_object_set_new(o, "root_timer_found_work", json_integer((json_int_t)sp->root_timer_found_work));
	json_object_set_new(o, "root_pages_warmed_idle",
			    json_integer((json_int_t)sp->root_pages_warmed_idle));
	json_object_set_new(o, "root_pages_warmed_poll",
			    json_integer((json_int_t)sp->root_pages_warmed_poll));
	json_object_set_new(o, "root_restarts", json_integer((json_int_t)sp->root_restarts));
	json_object_set_new(o, "worker_restarts", json_integer((json_int_t)sp->worker_restarts));
	if (sp->repl_role) {
		json_t *rj = json_object();
		json_object_set_new(
			rj, "role",
			json_string(sp->repl_role == SHMSYNC_REPL_LEADER ? "leader" : "follower"));
		json_object_set_new(rj, "stored_tick", json_integer((json_int_t)sp->repl_stored_tick));
		json_object_set_new(rj, "lag_ticks", json_integer((json_int_t)sp->repl_lag_ticks));
		json_object_set_new(rj, "lag_bytes", json_integer((json_int_t)sp->repl_lag_bytes));
		json_object_set_new(rj, "seq", json_integer((json_int_t)sp->repl_seq));
		json_object_set_new(o, "replication", rj);
	} else {
		json_object_set_new(o, "replication", json_null());
	}
	/* The library's object as it is; null if it is not one. */
	json_t *numa = json_loads(sp->numa, JSON_DECODE_ANY, NULL);
	json_object_set_new(o, "numa", json_is_object(numa) ? numa : json_null());
	if (!json_is_object(numa))
		json_decref(numa);
	for (int i = 0; i < m; i++) {
		json_t *e = json_object();
		json_object_set_new(e, "slot", json_integer(info[i].slot));
		json_object_set_new(e, "pid", json_integer(info[i].pid));
		json_object_set_new(e, "cursor", json_integer((json_int_t)info[i].cursor));
		json_object_set_new(e, "epoch", json_u64_or_null(info[i].epoch));
		json_object_set_new(e, "lag", json_integer((json_int_t)info[i].lag));
		json_object_set_new(e, "pinned_bytes", json_integer((json_int_t)info[i].pinned_bytes));
		json_object_set_new(e, "state", json_string(tool_state_name(info[i].state)));
		json_object_set_new(e, "node", info[i].node < 0 ? json_null() : json_integer(info[i].node));
		json_array_append_new(ws, e);
	}
	json_object_set_new(o, "workers", ws);
	if (print_json(o) < 0) {
		tool_err("out of memory");
		return TOOL_FAIL;
	}
	return TOOL_OK;
}

/* "interleave on nodes 0-1" from the library's JSON object; the text as
 * it is if it is not one. */
static void print_numa(const char *numa)
{
	json_t *o = json_loads(numa, 0, NULL);
	const char *policy = json_string_value(json_object_get(o, "policy"));
	const char *nodes = json_string_value(json_object_get(o, "nodes"));
	if (!policy)
		printf("numa          %s\n", strcmp(numa, "null") == 0 ? "unknown" : numa);
	else if (nodes && nodes[0])
		printf("numa          %s on nodes %s\n", policy, nodes);
	else
		printf("numa          %s\n", policy);
	json_decref(o);
}

static void print_stat_text(const shmsync_stats *sp, const shmsync_worker_info *info, int m)
{
	char b1[32], b2[32], b3[16];
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
	printf("backed        %s, of which on huge pages %.1f%%\n",
	       tool_bytes(b1, sizeof(b1), sp->segment_bytes),
	       sp->segment_bytes ? 100.0 * (double)sp->huge_bytes / (double)sp->segment_bytes : 0.0);
	printf("tombstones    %" PRIu64 " (live)\n", sp->tombstones);
	printf("reclaimed     %" PRIu64 " (objects, total)\n", sp->reclaimed);
	print_numa(sp->numa);
	printf("workers       %d (besides this one)\n", m);
	printf("restarts      %" PRIu64 " root, %" PRIu64 " workers (by a supervisor)\n", sp->root_restarts,
	       sp->worker_restarts);
	if (sp->repl_role == SHMSYNC_REPL_LEADER)
		printf("replication   leader: stored by JetStream up to tick %" PRIu64 ", lag %" PRIu64
		       " ticks, %s\n",
		       sp->repl_stored_tick, sp->repl_lag_ticks,
		       tool_bytes(b1, sizeof(b1), sp->repl_lag_bytes));
	else if (sp->repl_role == SHMSYNC_REPL_FOLLOWER)
		printf("replication   follower: applied the leader's ticks up to %" PRIu64
		       " (stream sequence %" PRIu64 ")\n",
		       sp->repl_stored_tick, sp->repl_seq);
	if (m) {
		printf("\n%5s %8s %-8s %4s %10s %10s %8s %12s\n", "slot", "pid", "state", "node", "cursor",
		       "epoch", "lag", "pinned");
		for (int i = 0; i < m; i++) {
			if (info[i].epoch == UINT64_MAX)
				snprintf(b2, sizeof(b2), "-");
			else
				snprintf(b2, sizeof(b2), "%" PRIu64, info[i].epoch);
			if (info[i].node < 0)
				snprintf(b3, sizeof(b3), "-");
			else
				snprintf(b3, sizeof(b3), "%d", info[i].node);
			printf("%5u %8d %-8s %4s %10" PRIu64 " %10s %8" PRIu64 " %12s\n", info[i].slot,
			       (int)info[i].pid, tool_state_name(info[i].state), b3, info[i].cursor, b2,
			       info[i].lag, tool_bytes(b1, sizeof(b1), info[i].pinned_bytes));
		}
	}
}

int cmd_stat(struct ctx *c)
{
	if (c->json && c->prometheus) {
		tool_err("--json and --prometheus exclude each other");
		return TOOL_USAGE;
	}
	int ret = attach(c);
	if (ret != TOOL_OK)
		return ret;
	shmsync_stats s;
	shmsync_worker_info *info = NULL;
	int m = tool_read_stats(c->w, &s, &info);
	if (m < 0) {
		free(info);
		tool_err("reading statistics: %s", shmsync_strerror(m));
		return TOOL_FAIL;
	}
	ret = TOOL_OK;
	if (c->json)
		ret = print_stat_json(&s, info, m);
	else if (c->prometheus)
		tool_prometheus(stdout, &s, info, m);
	else
		print_stat_text(&s, info, m);
	free(info);
	return ret == TOOL_OK ? finish_output() : ret;
}
