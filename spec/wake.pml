/* shmsync: waking the root (the doorbell) and waking workers (the tick
 * futex word). Checks (c): no lost wake-up. A lost wake shows as an invalid
 * end state: a party blocked in its sleep while there is work for it.
 *
 * Futex semantics: FUTEX_WAIT compares the word with the expected value and
 * queues the waiter atomically (in the kernel); FUTEX_WAKE wakes whoever is
 * queued. The root's waits are io_uring FUTEX_WAITs: the compare happens
 * when the request is submitted, which may be after the root read the value
 * it passes; the root then sleeps on any completion.
 *
 * Mutations (each must fail; spec/README.md):
 *  -DLATE_FLAG=1   the root rescans the rings before raising root_sleeping
 *  -DNO_RESCAN=1   the root sleeps without rescanning after raising it
 *  -DLATE_VALUE=1  a worker reads the futex word after checking the tick
 *                  (a publish in between is slept through)
 *  -DEARLY_WANTS=1 the root reads the workers' wants_tick_wake before it
 *                  publishes the tick (it skips a wake that was needed)
 *
 * The root makes its FUTEX_WAKE only if a worker said it may sleep
 * (wants_tick_wake): the worker raises it, full fence, then reads the word
 * and the tick; the root publishes the tick, bumps the word, full fence,
 * then reads the flag. (Reading it between the publish and the bump would
 * still be safe, as the worker checks the tick after raising the flag.)
 */
#ifndef LATE_FLAG
#define LATE_FLAG 0
#endif
#ifndef NO_RESCAN
#define NO_RESCAN 0
#endif
#ifndef LATE_VALUE
#define LATE_VALUE 0
#endif
#ifndef EARLY_WANTS
#define EARLY_WANTS 0
#endif

#define N 3   /* batches the worker exports */

/* the worker's port */
byte head = 0;         /* ring head: batches published */
byte tail = 0;         /* what the root consumed */
byte doorbell = 0;
bool sleeping = 0;     /* root_sleeping */
/* the root's armed io_uring futex wait on the doorbell */
bool armed = 0;
bool completed = 0;
/* the root segment's tick futex word, and the published tick */
byte tick = 0;
byte tick_futex = 0;
bool w_queued = 0;     /* the worker is queued on tick_futex */
bool w_wants = 0;      /* the port's wants_tick_wake */

inline root_wake_workers() {
	tick_futex++;
	if
	:: !EARLY_WANTS -> wants_seen = w_wants
	:: else -> skip     /* read before the publish */
	fi;
	if
	:: wants_seen -> w_queued = 0       /* FUTEX_WAKE all */
	:: else -> skip                     /* no system call */
	fi
}

active proctype Root() {
	byte seen;
	bool wants_seen;
	do
	:: tail == N -> break
	:: tail < N ->
		if
		:: head != tail ->
			tail = head;             /* drain, group commit */
			if
			:: EARLY_WANTS -> wants_seen = w_wants
			:: else -> skip
			fi;
			tick = tail;             /* publish */
			root_wake_workers()
		:: else ->
			/* arm the doorbell wait (if not armed) with the value seen */
			if
			:: !armed && !completed ->
				seen = doorbell;
				atomic {
					if
					:: doorbell != seen -> completed = 1   /* -EAGAIN at once */
					:: else -> armed = 1
					fi
				}
			:: else -> skip
			fi;
			if
			:: LATE_FLAG ->
				if
				:: head != tail -> goto again
				:: else -> skip
				fi;
				sleeping = 1
			:: else ->
				sleeping = 1;
				if
				:: !NO_RESCAN && head != tail -> sleeping = 0; goto again
				:: else -> skip
				fi
			fi;
			/* sleep until a completion */
			completed;
			completed = 0;
			sleeping = 0;
again:		skip
		fi
	od
}

active proctype Worker() {
	byte i = 0, v;
	do
	:: i < N ->
		head++;                  /* publish the record (release) */
		doorbell++;              /* then ring, full fence, read the flag */
		if
		:: sleeping -> atomic { if :: armed -> armed = 0; completed = 1 :: else -> skip fi }
		:: else -> skip
		fi;
		i++;
		/* wait for the commit: the tick futex word */
		w_wants = 1;             /* then a full fence */
		do
		:: if
			:: !LATE_VALUE -> v = tick_futex
			:: else -> skip
			fi;
			if
			:: tick >= i -> break
			:: else ->
				if
				:: LATE_VALUE -> v = tick_futex
				:: else -> skip
				fi;
				atomic {
					if
					:: tick_futex != v -> skip   /* -EAGAIN */
					:: else -> w_queued = 1
					fi
				};
				!w_queued              /* asleep until woken */
			fi
		od;
		w_wants = 0
	:: i == N -> break
	od
}
