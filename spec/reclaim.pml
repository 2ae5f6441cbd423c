/* shmsync: the retire rule, the online protocol, and deletion delivery.
 *
 * One key, written at every tick; a delete at tick DEL_TICK. The root
 * builds tick t: links version t at the head of the key's chain, retires
 * version t-1 with tag t (superseded at t), appends the change-log record of
 * tick t, publishes tick t, then scans every live worker's read epoch and
 * cursor (each read on its own, interleaved with the workers) and frees
 * versions with tag <= min epoch and log records with tick <= min cursor.
 *
 * A worker imports: it goes online with the classic protocol (announce the
 * published tick as its epoch, re-read the tick, again if it moved) or,
 * when it is still online and no revocation came since it announced, moves
 * its epoch up to the published tick without a re-read (FAST), reads
 * the records (cursor, T] (a record already freed means it fell off the
 * log: it takes a reset, the full state), then reads the key at T: it walks
 * the chain from the head down to the newest version <= T. It may go
 * offline (sleep) between imports, and it may die at any moment (its
 * positions stop counting).
 *
 * Checked:
 *  (a) no worker touches a freed version (use after free);
 *  (b) a worker that imports past DEL_TICK learns of the delete, unless it
 *      took a reset;
 *  (d) once every worker is offline or dead, a final reclamation frees
 *      everything retired.
 * With -DREVOKE=1 (a second run, at MAXT 3 to stay small): the root may
 * revoke a worker whose epoch lags (once, at any scan): it bumps the
 * worker's revocation counter, then leaves it out of the minimum until it
 * announces an epoch at or after the revocation's tick. A worker reads the
 * counter when it imports and after each read; (a) becomes "no worker uses
 * a freed version without seeing its counter move (ESTALE)".
 * Mutations (each must make spin fail; spec/README.md):
 *  -DEARLY=1       free versions one tick early (tag <= min + 1)
 *  -DNO_REREAD=1   go online without re-reading the tick
 *  -DNO_TAIL_CHECK=1  an importer that does not notice records it needed were
 *                  dropped (the log overran): it misses the delete
 *  -DREVOKE=1 -DREVOKE_LATE=1  the root bumps the counter after freeing
 *  -DREVOKE=1 -DFAST_BLIND=1   the fast path ignores the revocation counter
 *                  (a revoked worker moves up without a re-read)
 */
#ifndef EARLY
#define EARLY 0
#endif
#ifndef NO_REREAD
#define NO_REREAD 0
#endif
#ifndef REVOKE
#define REVOKE 0
#endif
#ifndef REVOKE_LATE
#define REVOKE_LATE 0
#endif
#ifndef NO_TAIL_CHECK
#define NO_TAIL_CHECK 0
#endif
#ifndef FAST_BLIND
#define FAST_BLIND 0
#endif

#define NW 2
#if REVOKE
#define MAXT 3
#else
#define MAXT 4
#endif
#define DEL_TICK 3
#define OFFLINE 99
#define IMPORTS 2

byte tick = 1;          /* published */
byte head = 1;          /* newest version linked (may be ahead of tick) */
byte epoch[NW];         /* read epochs; OFFLINE when offline */
byte cursor[NW];
bool alive[NW];
bool vfreed[MAXT + 1];  /* version t, written at tick t */
byte vtag[MAXT + 1];    /* retire tag, 0 = live */
bool rfreed[MAXT + 1];  /* log record of tick t */
byte done_workers = 0;
bool overran = 0;       /* the log was full once: its oldest record went early */
byte revcount[NW];      /* revocation counters (the worker table) */
byte revtick[NW];       /* revoked at this tick, 0: not revoked */
bool revoked_once = 0;

inline scan_and_free() {
	m = OFFLINE; c = OFFLINE; i = 0;
	do
	:: i < NW ->
		/* one load of each position, as the root does */
		e = epoch[i];
		if
		:: REVOKE && revtick[i] != 0 && e != OFFLINE && e >= revtick[i] -> revtick[i] = 0 /* rejoined */
		:: REVOKE && revtick[i] != 0 && !(e != OFFLINE && e >= revtick[i]) -> e = OFFLINE /* left out */
		:: REVOKE && revtick[i] == 0 && alive[i] && e < tick && !revoked_once -> /* stalled: revoke */
			revoked_once = 1; revtick[i] = tick; e = OFFLINE;
			if
			:: !REVOKE_LATE -> revcount[i]++
			:: else -> late = i + 1
			fi
		:: else -> skip
		fi;
		if
		:: alive[i] && e < m -> m = e
		:: else -> skip
		fi;
		e = cursor[i];
		if
		:: alive[i] && e < c -> c = e
		:: else -> skip
		fi;
		i++
	:: else -> break
	od;
	/* Freeing all at once is the worst case for a reader: it cannot see
	 * anything half freed that it would not also see freed. */
	atomic {
	k = 1;
	do
	:: k <= MAXT ->
		if
		:: vtag[k] != 0 && !vfreed[k] && vtag[k] <= m + EARLY -> vfreed[k] = 1
		:: else -> skip
		fi;
		if
		:: k <= tick && !rfreed[k] && k <= c -> rfreed[k] = 1
		:: k <= tick && !rfreed[k] && k > c && !overran -> rfreed[k] = 1; overran = 1
		:: else -> skip
		fi;
		k++
	:: else -> break
	od
	};
	if
	:: late != 0 -> revcount[late - 1]++; late = 0
	:: else -> skip
	fi
}

active proctype Root() {
	byte t, m, c, e, i, k, late = 0;
	do
	:: tick < MAXT ->
		t = tick + 1;
		head = t;          /* the new version is reachable (tick t > any epoch) */
		vtag[t - 1] = t;   /* the old one is superseded at t */
		tick = t;          /* publish, after every byte of the commit */
		scan_and_free()
	:: tick == MAXT -> break
	od;
	/* (d): once every worker is offline or dead, a last reclamation frees
	 * everything retired. */
	(done_workers == NW);
	scan_and_free();
	k = 1;
	do
	:: k < MAXT -> assert(vfreed[k]); k++
	:: else -> break
	od
}

proctype Worker(byte me) {
	byte T, T2, v, n, k;
	bool knows_del, reset, stale;
	byte seen, before;
	do
	:: n < IMPORTS ->
		/* the revocation counter first, then online */
		before = seen;
		seen = revcount[me];
		T = tick;
		if
		:: epoch[me] != OFFLINE && (seen == before || FAST_BLIND) ->
			epoch[me] = T      /* FAST: counted already, move up */
		:: else ->
			/* the classic protocol */
			epoch[me] = T;
			if
			:: NO_REREAD -> skip
			:: else ->
				do
				:: T2 = tick;
					if
					:: T2 == T -> break
					:: else -> T = T2; epoch[me] = T
					fi
				od
			fi
		fi;
		/* the change log (cursor, T] */
		reset = 0;
		k = cursor[me] + 1;
		do
		:: k <= T ->
			if
			:: rfreed[k] && !NO_TAIL_CHECK -> reset = 1   /* fell off: reset, full state */
			:: rfreed[k] && NO_TAIL_CHECK -> skip         /* overwritten: read garbage */
			:: else -> if :: k == DEL_TICK -> knows_del = 1 :: else -> skip fi
			fi;
			k++
		:: else -> break
		od;
		/* (b) */
		assert(T < DEL_TICK || cursor[me] >= DEL_TICK || knows_del || reset);
		/* read the key at T: walk from the head down to version T */
		v = head;
		stale = 0;
		do
		:: v > T -> stale = stale || vfreed[v]; v--
		:: else -> break
		od;
		stale = stale || vfreed[v];
		/* (a): a read is used only if the revocation counter did not move */
		assert(!stale || revcount[me] != seen);
		cursor[me] = T;
		n++;
		/* sleep (offline) or stay online */
		if
		:: epoch[me] = OFFLINE
		:: skip
		fi
	:: n < IMPORTS -> alive[me] = 0; break     /* killed */
	:: n == IMPORTS -> break
	od;
	epoch[me] = OFFLINE;
	done_workers++
}

init {
	byte i;
	atomic {
		i = 0;
		do
		:: i < NW -> alive[i] = 1; epoch[i] = 1; cursor[i] = 1; run Worker(i); i++
		:: else -> break
		od
	}
}
