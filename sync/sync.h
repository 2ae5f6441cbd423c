/* The sync layer's internal headers in one include, for its own files and
 * for tests and fuzz targets that reach inside: the port, the wire records,
 * the worker table, the attach handshake, signalling and the worker's
 * handle. The root's private state (root.h) is not among them. Not an API. */
#ifndef SHMSYNC_SYNC_H
#define SHMSYNC_SYNC_H

#include "attach.h"
#include "port.h"
#include "shm.h"
#include "shmsync.h"
#include "sig.h"
#include "wire.h"
#include "worker.h"
#include "wtab.h"

#endif
