#!/usr/bin/env bash
# The example server under load: wrk on 127.0.0.1 against
# shmsync_example_server (state in shmsync) and redis_server (the same HTTP
# server with its state in Redis over a unix socket), each with 1 and 2
# workers, for three workloads:
#   hit  POST /hit/c<0..999>   (a rate-limit count: one commit per request)
#   put  PUT /session/s<0..999> with a 100-byte body (one commit per request)
#   get  GET /session/bench    (a read: the snapshot vs a Redis GET)
# Each point is RUNS runs of SECONDS s; the table gives the median requests/s
# and latency p50/p99 (wrk --latency), then the same as JSON, with the CPU.
#
# Usage: bench/server_bench.sh   (env: SERVER, REDIS_SERVER, SECONDS_PER_RUN,
#        RUNS, THREADS, CONNECTIONS)
# Needs wrk, redis-server (apt-get install wrk redis-server libhiredis-dev).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SERVER=${SERVER:-$ROOT/build/examples/server/shmsync_example_server}
REDIS_SERVER=${REDIS_SERVER:-$ROOT/build/examples/server/shmsync_example_redis_server}
SECS=${SECONDS_PER_RUN:-5}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
CONNS=${CONNECTIONS:-32}
LIMIT=2147483648 # high enough that no hit of the benchmark is refused

for tool in wrk redis-server curl python3 "$SERVER" "$REDIS_SERVER"; do
	command -v "$tool" >/dev/null || { echo "server_bench: $tool not found" >&2; exit 1; }
done

TMP=$(mktemp -d)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/hit.lua" <<'EOF'
n = 0
request = function()
	n = n + 1
	return wrk.format("POST", "/hit/c" .. (n % 1000))
end
EOF
cat >"$TMP/put.lua" <<'EOF'
n = 0
body = string.rep("x", 100)
request = function()
	n = n + 1
	return wrk.format("PUT", "/session/s" .. (n % 1000), nil, body)
end
EOF
cat >"$TMP/get.lua" <<'EOF'
request = function()
	return wrk.format("GET", "/session/bench")
end
EOF

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until the server on $1 answers a PUT (bounded: 10 s).
wait_ready() {
	for _ in $(seq 100); do
		curl -sf -X PUT --data-binary benchvalue "http://127.0.0.1:$1/session/bench" >/dev/null && return 0
		sleep 0.1
	done
	echo "server_bench: no server on port $1" >&2
	exit 1
}

stop() { # stops a pid we started, bounded
	kill -TERM "$1" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$1" 2>/dev/null || true
}

# wrk's latency line ("99%  1.23ms") in microseconds.
to_us() {
	awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
		f = u == "us" ? 1 : u == "ms" ? 1000 : u == "s" ? 1000000 : u == "m" ? 60000000 : 0;
		printf "%.1f", n * f }'
}

RESULTS=$TMP/results
: >"$RESULTS"
run_point() { # STORE WORKERS PORT
	for load in hit put get; do
		local rps=() p50=() p99=()
		for _ in $(seq "$RUNS"); do
			out=$(wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency -s "$TMP/$load.lua" \
				"http://127.0.0.1:$3")
			if grep -q 'Non-2xx' <<<"$out"; then
				echo "server_bench: $1/$2/$load: error responses:" >&2
				echo "$out" >&2
				exit 1
			fi
			rps+=("$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")")
			p50+=("$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")")
			p99+=("$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")")
		done
		median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
		echo "$1 $2 $load $(median "${rps[@]}") $(median "${p50[@]}") $(median "${p99[@]}")" >>"$RESULTS"
		echo "  $1 workers=$2 $load: $(tail -1 "$RESULTS" | cut -d' ' -f4-) (rps p50_us p99_us)" >&2
	done
}

# Redis: private, on a unix socket, no persistence.
redis-server --port 0 --unixsocket "$TMP/redis.sock" --unixsocketperm 700 --save "" --appendonly no \
	--daemonize no --logfile "$TMP/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 100); do [[ -S $TMP/redis.sock ]] && break; sleep 0.1; done

for workers in 1 2; do
	port=$(free_port)
	"$SERVER" -n "$workers" --port "$port" --limit "$LIMIT" >"$TMP/shmsync_$workers.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_ready "$port"
	run_point shmsync "$workers" "$port"
	stop "$pid"

	port=$(free_port)
	"$REDIS_SERVER" -n "$workers" --port "$port" --limit "$LIMIT" --redis "$TMP/redis.sock" \
		>"$TMP/redis_$workers.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_ready "$port"
	run_point redis "$workers" "$port"
	stop "$pid"
done

CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo
echo "server_bench: wrk -t$THREADS -c$CONNS, $RUNS x ${SECS}s per point (medians), $(nproc) CPUs: $CPU"
printf '%-8s %7s %5s %12s %10s %10s\n' store workers load requests/s p50_us p99_us
while read -r store workers load rps p50 p99; do
	printf '%-8s %7s %5s %12s %10s %10s\n' "$store" "$workers" "$load" "$rps" "$p50" "$p99"
done <"$RESULTS"
python3 - "$RESULTS" "$CPU" "$(nproc)" "$THREADS" "$CONNS" "$RUNS" "$SECS" <<'EOF'
import json, sys
path, cpu, ncpu, threads, conns, runs, secs = sys.argv[1:]
rows = [l.split() for l in open(path) if l.strip()]
print(json.dumps({"bench": "server", "cpu": cpu, "cpus": int(ncpu),
                  "wrk": {"threads": int(threads), "connections": int(conns)},
                  "runs": int(runs), "seconds": float(secs),
                  "results": [{"store": s, "workers": int(w), "load": l, "requests_per_s": float(r),
                               "p50_us": float(a), "p99_us": float(b)} for s, w, l, r, a, b in rows]},
                 indent=1))
EOF
