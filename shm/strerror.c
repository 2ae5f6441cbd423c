/* Names for the codes this library returns: errno values, in the meaning
 * shmsync gives them. */
#include <errno.h>
#include <string.h>

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
	default:
		return code < 0 ? strerror(-code) : "unknown code";
	}
}

const char *shmsync_version(void)
{
	return "0.1.0";
}
