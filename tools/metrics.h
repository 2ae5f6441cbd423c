/* The root's figures for monitoring: what stat reads (tools/stat.c), the
 * Prometheus text exposition of them (stat --prometheus), and the HTTP
 * endpoint that `shmsync run --metrics` serves them on (tools/run.c). */
#ifndef SHMSYNC_TOOL_METRICS_H
#define SHMSYNC_TOOL_METRICS_H

#include <stdio.h>
#include <sys/types.h>

#include "shmsync.h"

/* "live", "offline", "lagging", "revoked" (or "unknown"). */
const char *tool_state_name(int state);

/* The statistics and the worker table, with the reader's own slot left out
 * (it is a worker too, and not one of those being watched). *info is
 * malloc'd. Returns the number of workers in it, or a negative errno. */
int tool_read_stats(shmsync_worker *w, shmsync_stats *s, shmsync_worker_info **info);

/* The Prometheus text exposition format (version 0.0.4) of those figures. */
void tool_prometheus(FILE *f, const shmsync_stats *s, const shmsync_worker_info *info, int n);

/* --metrics [HOST:]PORT: a numeric IPv4 or [IPv6] address (default
 * 127.0.0.1) and a port 1..65535, bound and listening (O_CLOEXEC). Returns
 * the fd, or -1 after a message (a usage error: the address given cannot
 * be served). shown gets "HOST:PORT" for messages. */
int tool_metrics_listen(const char *spec, char *shown, size_t shown_len);

/* Forks the metrics keeper: a process that serves GET /metrics on lfd from
 * a child attached to the root at sock as a worker, and starts that child
 * again if it dies. Call it before the root exists (the master must not be
 * the parent of anything that maps the segment after it does; see
 * shmsync_root_open). The caller closes lfd afterwards. Returns the
 * keeper's pid, or -1 after a message. */
pid_t tool_metrics_start(int lfd, const char *sock, const char *shown);

/* Stops the keeper and its server (SIGTERM, SIGKILL if they linger) and
 * reaps it. */
void tool_metrics_stop(pid_t keeper);

#endif
