/* The port: one shared-memory segment per worker, created by the root at
 * attach, mapped read-write by both. (What travels through its export ring
 * is in wire.h; the worker table in the root segment is in wtab.h.) Everything the worker writes here is
 * hostile to the root: the root copies before it validates, bounds every
 * position, and keeps its own authoritative copy of anything it relies on.
 * What the root writes here only the worker relies on, so a worker that
 * scribbles over it harms only itself.
 */
#ifndef SHMSYNC_PORT_H
#define SHMSYNC_PORT_H

#include <stdatomic.h>
#include <stdint.h>

#define PORT_MAGIC 0x54524f5053534853ull /* "SHSSPORT" */
/* 3: the root makes the socket pair behind shmsync_fd's fallback and sends
 * one end (FDWAKE_REQ_MAGIC); it no longer takes an fd from a worker. */
#define PORT_VERSION 3u
#define PORT_HDR_SIZE 4096u
#define PORT_NACKS 1024u /* at most this many batches unacknowledged */
#define PORT_OFFLINE UINT64_MAX

/* A result per batch: the tick that committed it, or a negative errno. */
struct port_ack {
	_Atomic uint64_t seq;
	_Atomic int64_t result;
};

/* Each side's hot words sit on cache lines of their own (128 bytes apart,
 * for the adjacent-line prefetcher): an export, an import and a commit
 * would otherwise each take the line away from the other side. */
struct port_hdr {
	/* Written by the root before the port is handed out. */
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_size;
	uint64_t size;
	uint64_t acks_off;  /* PORT_NACKS struct port_ack */
	uint64_t ring_off;  /* the export ring */
	uint64_t ring_size; /* a power of two */
	uint32_t slot;
	uint32_t gen;

	/* Written by the worker at every export (release); read by the root
	 * (acquire). */
	_Alignas(128) _Atomic uint64_t ring_head; /* bytes ever written to the ring */
	/* Doorbell: the worker adds one after publishing a batch and wakes the
	 * root if it sleeps. One waker, one waiter; the value is what the root
	 * sleeps on, so no wake-up is lost to a flag cleared too early. */
	_Atomic uint32_t doorbell;
	_Atomic uint32_t wants_fd_wake; /* shmsync_fd on the fallback path */
	/* Non-zero while the worker may sleep on the tick futex word: the root
	 * makes its FUTEX_WAKE only then (PORT_TICK_WAKE_*). */
	_Atomic uint32_t wants_tick_wake;

	/* Written by the worker at every import; read by the root when it
	 * reclaims. */
	_Alignas(128) _Atomic uint64_t cursor; /* last tick imported */
	_Atomic uint64_t read_epoch;           /* the snapshot being read, or PORT_OFFLINE */

	/* Written by the root (release); read by the worker (acquire). */
	_Alignas(128) _Atomic uint64_t ring_tail; /* bytes the root has consumed */
	_Atomic uint64_t acked_seq;               /* every seq <= this has its ack */
	_Atomic uint32_t root_sleeping;
	uint32_t reserved;
};

/* wants_tick_wake: asleep in a call of the library now, or waiting through
 * an io_uring request (shmsync_prep_wait, shmsync_fd) at any time. */
#define PORT_TICK_WAKE_CALL 1u
#define PORT_TICK_WAKE_URING 2u

_Static_assert(sizeof(struct port_hdr) <= PORT_HDR_SIZE, "the port header fits its page");

#endif
