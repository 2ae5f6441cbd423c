/* shmsync: one key-value state of named directories, shared by the processes
 * of one host through shared memory.
 *
 * This header is the whole public API. Functions return 0 (or a count) or a
 * negative errno code; shmsync_strerror() names each.
 *
 * Operational caveats (read these):
 * - The state is volatile, like a cache: it lives as long as the root process.
 * - Capacity is reserved address space; the memfd grows as needed. The default
 *   is derived from RLIMIT_AS, the memory cgroup limit and physical memory;
 *   set SHMSYNC_CAPACITY (bytes, K/M/G/T suffixes) to override it.
 */
#ifndef SHMSYNC_H
#define SHMSYNC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHMSYNC_VERSION_MAJOR 0
#define SHMSYNC_VERSION_MINOR 1
#define SHMSYNC_VERSION_PATCH 0

/* Limits, checked on every operation. */
#define SHMSYNC_MAX_KEY 1024          /* bytes; keys are 1..SHMSYNC_MAX_KEY bytes */
#define SHMSYNC_MAX_VALUE (16u << 20) /* bytes */
#define SHMSYNC_MAX_DIR 255           /* bytes of a directory name, '/' included */

/* Kinds of change delivered by import. */
enum {
	SHMSYNC_PUT = 1,
	SHMSYNC_DEL = 2,
	SHMSYNC_MKDIR = 3,
	SHMSYNC_RMDIR = 4, /* the directory and every directory under it */
	SHMSYNC_RESET = 5, /* forget everything: the full state follows */
};

/* A readable name for a return code of this library (negative errno, in the
 * meaning this library gives it). Never NULL. */
const char *shmsync_strerror(int code);

/* The library's version as "MAJOR.MINOR.PATCH". */
const char *shmsync_version(void);

#ifdef __cplusplus
}
#endif

#endif
