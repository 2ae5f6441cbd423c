#!/usr/bin/env bash
# Tests examples/server (shmsync_example_server) end to end over HTTP on
# 127.0.0.1 with 2 workers under the supervisor:
#   - fresh connections spread over both workers (X-Worker says who served);
#   - a PUT acknowledged by one worker is read back through the other
#     (after at most one import: GETs retried for at most 1 s);
#   - the rate limit is exact across workers (LIMIT=50, 200 parallel hits:
#     exactly 50 answered 200 and 150 answered 429);
#   - kill -9 of a worker under a PUT load: the supervisor restarts it and
#     every PUT that was answered 200 is readable afterwards.
# Usage: example_server_test.sh PATH/TO/shmsync_example_server
# Run it with SHMSYNC_SIGNAL=futex too: the workers then wait by polling
# shmsync_fd(), which this test checks from their log.
set -euo pipefail

SERVER=${1:?usage: $0 PATH/TO/shmsync_example_server}
command -v python3 >/dev/null || { echo "SKIP: python3 is needed"; exit 77; }

TMP=$(mktemp -d)
SERVER_PID=
cleanup() {
	if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
		kill -TERM "$SERVER_PID" 2>/dev/null || true
		# Bounded: the supervisor stops workers and root within its grace.
		for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$SERVER_PID" 2>/dev/null || true
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG=$TMP/server.log
"$SERVER" -n 2 --port "$PORT" --limit 50 --socket "$TMP/root.sock" >"$LOG" 2>&1 &
SERVER_PID=$!

# Both workers serving (each logs a line once its listener is up).
for _ in $(seq 100); do
	[[ $(grep -c '^worker [01]: pid .* serving' "$LOG" || true) -ge 2 ]] && break
	kill -0 "$SERVER_PID" || { cat "$LOG"; echo "FAIL: the server exited"; exit 1; }
	sleep 0.1
done
[[ $(grep -c '^worker [01]: pid .* serving' "$LOG" || true) -ge 2 ]] || { cat "$LOG"; echo "FAIL: no workers"; exit 1; }
if [[ ${SHMSYNC_SIGNAL:-} == futex ]] && ! grep -q 'wait: poll on shmsync_fd' "$LOG"; then
	cat "$LOG"; echo "FAIL: SHMSYNC_SIGNAL=futex, but the workers do not wait on shmsync_fd"; exit 1
fi

cat >"$TMP/client.py" <<'EOF'
import http.client, re, sys, threading, time

port, log, server_pid = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def req(method, path, body=None):
    """One request on a fresh connection (so SO_REUSEPORT spreads them).
    Returns (status, worker, body), or (None, None, error) if it failed."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request(method, path, body=body)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, r.getheader("X-Worker"), data
    except (OSError, http.client.HTTPException) as e:
        return None, None, str(e)

def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)

# 1. Fresh connections reach both workers.
seen = {req("GET", "/session/none")[1] for _ in range(60)}
if seen != {"0", "1"}:
    fail(f"60 fresh connections reached workers {seen}, not both")
print("spread: both workers served")

# 2. A PUT through one worker is read through the other.
for i in range(10):
    for _ in range(50):  # bounded: until the PUT lands on worker 0
        st, w, _ = req("PUT", f"/session/x{i}", f"value {i}".encode())
        if st != 200:
            fail(f"PUT /session/x{i}: {st}")
        if w == "0":
            break
    else:
        fail("50 PUTs never reached worker 0")
    deadline, tries = time.monotonic() + 1.0, 0
    while True:
        st, w, body = req("GET", f"/session/x{i}")
        tries += 1
        if w == "1" and st == 200 and body == f"value {i}".encode():
            break
        if w == "1" and st != 404:
            fail(f"GET x{i} via worker 1: {st} {body!r}")
        if time.monotonic() > deadline:
            fail(f"x{i}, acknowledged by worker 0, not readable through worker 1 within 1 s")
print("cross-worker read: ok")

# 3. The rate limit holds exactly across workers.
statuses, by_worker, lock = [], {}, threading.Lock()
def hitter(n):
    for _ in range(n):
        st, w, body = req("POST", "/hit/limited")
        with lock:
            statuses.append(st)
            if st == 200:
                by_worker[w] = by_worker.get(w, 0) + 1
threads = [threading.Thread(target=hitter, args=(25,)) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
ok, over = statuses.count(200), statuses.count(429)
print(f"rate limit: {ok} x 200, {over} x 429, 200s by worker {by_worker}")
if ok != 50 or over != 150:
    fail(f"expected exactly 50 x 200 and 150 x 429, got {ok} and {over} (others: "
         f"{[s for s in statuses if s not in (200, 429)]})")

# 4. kill -9 a worker under a PUT load: every acknowledged PUT survives.
def worker_pids():
    pids = {}
    for line in open(log):
        m = re.match(r"worker (\d+): pid (\d+) serving", line)
        if m:
            pids[m.group(1)] = int(m.group(2))
    return pids
acked, errors, stop = [], [0], threading.Event()
def putter(t):
    for n in range(100000):
        if stop.is_set():
            return
        key = f"k{t}_{n}"
        st, _, _ = req("PUT", f"/session/{key}", key.encode())
        with lock:
            if st == 200:
                acked.append(key)
            else:
                errors[0] += 1
threads = [threading.Thread(target=putter, args=(t,)) for t in range(4)]
for t in threads: t.start()
time.sleep(0.5)
victim = worker_pids()["1"]
import os, signal
os.kill(victim, signal.SIGKILL)
time.sleep(0.5)
# The supervisor starts worker 1 again (after a 100 ms backoff).
deadline = time.monotonic() + 5
while worker_pids().get("1") == victim:
    if time.monotonic() > deadline:
        fail("worker 1 was not restarted within 5 s")
    time.sleep(0.05)
time.sleep(0.5)
stop.set()
for t in threads: t.join()
seen = set()
for _ in range(100):
    seen.add(req("GET", "/session/none")[1])
    if seen == {"0", "1"}:
        break
if seen != {"0", "1"}:
    fail(f"after the restart, fresh connections reached only {seen}")
lost = []
for key in acked:
    deadline = time.monotonic() + 1.0
    while True:
        st, w, body = req("GET", f"/session/{key}")
        if st == 200 and body == key.encode():
            break
        if time.monotonic() > deadline:
            lost.append((key, st, w))
            break
print(f"kill -9: {len(acked)} PUTs acknowledged, {errors[0]} failed around the kill, "
      f"worker 1 restarted as pid {worker_pids()['1']}, lost {len(lost)}")
if lost:
    fail(f"acknowledged PUTs lost: {lost[:5]}")
if len(acked) < 100:
    fail("too few PUTs acknowledged for the test to mean anything")
print("PASS")
EOF

timeout 120 python3 "$TMP/client.py" "$PORT" "$LOG" "$SERVER_PID" || { echo "--- server log"; cat "$LOG"; exit 1; }
