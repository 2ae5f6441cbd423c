/* Names for the codes this library returns: errno values, in the meaning
 * shmsync gives them. */
#include <errno.h>
#include <string.h>

#include "numa.h"
#include "shm.h"
#include "shmsync.h"

const char *shmsync_strerror(int code)
{
	switch (-code) {
	case 0:
		return "success";
	case ENOENT:
		return "no such directory or key";
	case EEXIST:
		return "directory or key already exists";
	case ECANCELED:
		return "condition failed: the key's tick changed";
	case EINVAL:
		return "invalid argument (directory name, key or operation)";
	case ENAMETOOLONG:
		return "directory name or key too long";
	case EMSGSIZE:
		return "value too long";
	case E2BIG:
		return "batch too large (at most half the change log)";
	case ENOBUFS:
		return "this tick's share of the change log is full: publish and retry";
	case ENOSPC:
		return "segment full: raise SHMSYNC_CAPACITY";
	case ERANGE:
		return "counter overflow";
	case EIO:
		return "corrupt shared state";
	case EPROTO:
		return "not a shmsync segment, or another layout version";
	case ENOMEM:
		return "out of memory";
	case EBUSY:
		return "busy: a commit is being built";
	case EAGAIN:
		return "busy, or would block: try again";
	case EPERM:
		return "not permitted (an untrusted root, or a sealed segment)";
	case EUSERS:
		return "the root has max_workers workers";
	case ESHUTDOWN:
		return "the root is gone";
	case EOVERFLOW:
		return "that batch's result is no longer kept (1024 batches later)";
	case ESTALE:
		return "this snapshot was revoked: import again";
	case EREMCHG:
		return "replication: another root leads the stream now";
	case EHOSTUNREACH:
		return "replication: the NATS servers cannot be reached";
	case EPROTONOSUPPORT:
		return "replication: a stream message of another format or layout version";
	default:
		return code < 0 ? strerror(-code) : "unknown code";
	}
}

#define SHMSYNC_STR_(x) #x
#define SHMSYNC_STR(x) SHMSYNC_STR_(x)

/* From the header's macros: one place says the version. */
const char *shmsync_version(void)
{
	return SHMSYNC_STR(SHMSYNC_VERSION_MAJOR) "." SHMSYNC_STR(SHMSYNC_VERSION_MINOR) "." SHMSYNC_STR(
		SHMSYNC_VERSION_PATCH);
}

/* The worker hands shm's change kinds to users as they are: the public
 * constants must be the same numbers. */
_Static_assert((int)SHMSYNC_PUT == (int)SHM_CHANGE_PUT && (int)SHMSYNC_DEL == (int)SHM_CHANGE_DEL &&
		       (int)SHMSYNC_MKDIR == (int)SHM_CHANGE_MKDIR &&
		       (int)SHMSYNC_RMDIR == (int)SHM_CHANGE_RMDIR &&
		       (int)SHMSYNC_RESET == (int)SHM_CHANGE_RESET,
	       "public change kinds differ from shm's");
_Static_assert((int)SHMSYNC_NUMA_DEFAULT == (int)SHM_NUMA_DEFAULT &&
		       (int)SHMSYNC_NUMA_INTERLEAVE == (int)SHM_NUMA_INTERLEAVE &&
		       (int)SHMSYNC_NUMA_BIND == (int)SHM_NUMA_BIND &&
		       (int)SHMSYNC_NUMA_NONE == (int)SHM_NUMA_NONE,
	       "public NUMA policies differ from shm's");
