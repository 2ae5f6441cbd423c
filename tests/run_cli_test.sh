#!/usr/bin/env bash
# `shmsync run`: bad input is one line on stderr, exit 2, and starts
# nothing; a happy path where every worker attaches and finishes; SIGTERM
# stops everything with exit 0 and leaves no process behind.
#
#   bash tests/run_cli_test.sh path/to/shmsync
set -u
S=$1
tmp=$(mktemp -d /tmp/shmsync-run-test.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
fails=0
fail() {
	echo "FAIL: $*" >&2
	fails=$((fails + 1))
}

# Children of a process, from /proc (not ps).
children() {
	cat /proc/"$1"/task/*/children 2>/dev/null
}

# The usage errors: exit 2, exactly one line on stderr, nothing started
# (this shell gains no child and the socket path stays free).
bad() {
	local want=$1
	shift
	local before after
	before=$(children $$ | wc -w)
	timeout 10 "$S" run "$@" >"$tmp/out" 2>"$tmp/err"
	local rc=$?
	after=$(children $$ | wc -w)
	local lines
	lines=$(wc -l <"$tmp/err")
	if [ "$rc" != 2 ] || [ "$lines" != 1 ] || ! grep -q -- "$want" "$tmp/err"; then
		fail "run $*: exit $rc, $lines lines: $(cat "$tmp/err")"
	elif [ -s "$tmp/out" ]; then
		fail "run $*: printed on stdout: $(cat "$tmp/out")"
	elif [ "$after" -gt "$before" ]; then
		fail "run $*: left a process behind"
	else
		echo "ok: run $* -> $(cat "$tmp/err")"
	fi
}

bad "no command" -n 2
bad "no command" -n 2 --
bad "out of range" -n 0 -- true
bad "out of range" -n 100000 -- true
bad "command not found" -n 2 -- no-such-command-shmsync-test
bad "command not found" -n 2 -- "$tmp/missing"
bad "unknown option" --bogus -- true
bad "stall-policy" --stall-policy sometimes -- true
bad "grace" --grace -1 -- true
bad "--numa: interleave, bind:NODE or none" --numa sometimes -- true
bad "--numa bind:NODE" --numa bind:x -- true
bad "is not a number" --metrics 127.0.0.1:http -- true
bad "out of range" --metrics 127.0.0.1:70000 -- true
bad "out of range" --metrics 0 -- true
bad "not a numeric" --metrics localhost:9464 -- true
bad "not a size" --prefault 12X -- true
bad "is more than --capacity" -c 64M --prefault 80M -- true

# A free port on the loopback (bound and closed: nothing else here takes it
# in between, in practice).
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
have_py=0
command -v python3 >/dev/null && have_py=1
if [ $have_py = 1 ]; then
	# A port something listens on already: refused before anything starts.
	port=$(free_port)
	python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(30)' "$port" &
	holder=$!
	for _ in $(seq 100); do
		python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
			"$port" 2>/dev/null && break
		sleep 0.05
	done
	bad "cannot listen on 127.0.0.1:$port" --metrics "127.0.0.1:$port" -- true
	kill $holder
	wait $holder 2>/dev/null
fi

# A NUMA node that does not exist: the library's message names the nodes
# there are; a usage error, as for serve.
if [ ! -e /sys/devices/system/node/node7 ]; then
	timeout 30 "$S" run -n 1 --numa bind:7 -- true >"$tmp/out" 2>"$tmp/err"
	rc=$?
	if [ "$rc" != 2 ] || ! tail -n 1 "$tmp/err" | grep -q "node 7 does not exist"; then
		fail "run --numa bind:7: exit $rc: $(cat "$tmp/err")"
	else
		echo "ok: run --numa bind:7 -> $(tail -n 1 "$tmp/err")"
	fi
fi

# A socket a root answers on already.
sock="$tmp/taken.sock"
"$S" serve --socket "$sock" -q 2>"$tmp/serve.err" &
serve=$!
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
bad "already answers" -n 1 --socket "$sock" -- true
kill -TERM $serve
wait $serve

# Happy path: two workers, each a shell that puts its key with the shmsync
# tool (over $SHMSYNC_SOCKET, which run sets) and waits for the other's;
# both exit 0, so run exits 0 on its own.
cat >"$tmp/worker.sh" <<EOF
i=\$SHMSYNC_WORKER_INDEX
[ -n "\$SHMSYNC_ATTACH_FD" ] || { echo "no SHMSYNC_ATTACH_FD" >&2; exit 3; }
"$S" mkdir /run/ 2>/dev/null
"$S" put /run/ "w\$i" "\$\$" || exit 4
for _ in \$(seq 200); do
	if "$S" get /run/ w0 >/dev/null 2>&1 && "$S" get /run/ w1 >/dev/null 2>&1; then
		echo "worker \$i sees both"
		exit 0
	fi
	sleep 0.05
done
exit 5
EOF
timeout 60 "$S" run -n 2 -- sh "$tmp/worker.sh" >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" != 0 ] || ! grep -q "worker 0 sees both" "$tmp/out" || ! grep -q "worker 1 sees both" "$tmp/out"; then
	fail "happy path: exit $rc, stdout: $(cat "$tmp/out"), stderr: $(cat "$tmp/err")"
elif ! grep -q "every worker finished with status 0" "$tmp/err"; then
	fail "happy path: no 'finished' line: $(cat "$tmp/err")"
else
	echo "ok: run -n 2 -- sh worker.sh: both attached and finished, exit 0"
fi

# An exec that fails after the check (not executable by then): exit 127,
# reported, a crash loop, run exits 1.
printf '#!/bin/sh\nexit 0\n' >"$tmp/gone.sh"
chmod +x "$tmp/gone.sh"
(sleep 0.2; rm -f "$tmp/gone.sh") &
timeout 60 "$S" run -n 1 --crash-limit 2 -- sh -c "sleep 0.5; exec $tmp/gone.sh" >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" != 1 ] || ! grep -q "status 127" "$tmp/err" || ! grep -q "crash loop" "$tmp/err"; then
	fail "exec failure: exit $rc: $(cat "$tmp/err")"
else
	echo "ok: a command that fails to exec: status 127, crash loop, exit 1"
fi

# SIGTERM: workers that sleep are stopped, run exits 0, nothing is left.
"$S" run -n 2 --grace 2 -- sleep 1000 2>"$tmp/err" &
run=$!
for _ in $(seq 200); do
	[ "$(grep -c 'worker . pid .* started' "$tmp/err")" -ge 2 ] && break
	sleep 0.05
done
pids=$(children $run)
grandchildren=""
for p in $pids; do grandchildren="$grandchildren $(children "$p")"; done
if [ "$(echo $pids | wc -w)" != 3 ]; then
	fail "SIGTERM: expected the root and 2 workers as children of run, found: $pids"
fi
kill -TERM $run
t0=$(date +%s%N)
wait $run
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
left=""
for p in $pids $grandchildren; do [ -e /proc/"$p" ] && left="$left $p"; done
if [ "$rc" != 0 ] || [ -n "$left" ] || [ "$ms" -gt 5000 ]; then
	fail "SIGTERM: exit $rc after $ms ms, left:$left; $(cat "$tmp/err")"
else
	echo "ok: SIGTERM: exit 0 after $ms ms, no process left (pids $(echo $pids))"
fi

# A worker killed with -9 is restarted, and stat counts it.
"$S" run -n 2 --grace 2 --socket "$tmp/rs.sock" -- "$S" watch >/dev/null 2>"$tmp/err" &
run=$!
for _ in $(seq 200); do
	[ "$(grep -c 'worker . pid .* started' "$tmp/err")" -ge 2 ] && break
	sleep 0.05
done
victim=$(sed -n 's/.*worker 0 pid \([0-9]*\) started.*/\1/p' "$tmp/err" | head -1)
[ -n "$victim" ] || fail "restart count: no worker 0 pid in: $(cat "$tmp/err")"
kill -KILL "$victim"
restarts=""
for _ in $(seq 100); do
	if [ "$(grep -c 'worker 0 pid .* started' "$tmp/err")" -ge 2 ]; then
		restarts=$("$S" stat --json --socket "$tmp/rs.sock" 2>/dev/null |
			sed -n 's/.*"worker_restarts": *\([0-9]*\).*/\1/p')
		[ -n "$restarts" ] && [ "$restarts" -ge 1 ] && break
	fi
	sleep 0.1
done
kill -TERM $run
wait $run
if [ -z "$restarts" ] || [ "$restarts" -lt 1 ]; then
	fail "restart count: stat shows worker_restarts '$restarts' after a worker was killed; $(cat "$tmp/err")"
else
	echo "ok: a killed worker is restarted and stat counts it (worker_restarts $restarts)"
fi

# --metrics: the root's figures over HTTP from a process of run's own (not
# the master), with the workers' series; SIGTERM stops it with the rest.
# The workers are watchers, so that they attach (sleep would not).
if [ $have_py = 1 ]; then
	port=$(free_port)
	"$S" run -n 2 --grace 2 --numa none --metrics "127.0.0.1:$port" -- "$S" watch >/dev/null 2>"$tmp/err" &
	run=$!
	cat >"$tmp/scrape.py" <<'PYEOF'
import re, sys, urllib.error, urllib.request
url = "http://127.0.0.1:%s%s" % (sys.argv[1], sys.argv[2])
try:
    r = urllib.request.urlopen(url, timeout=5)
except urllib.error.HTTPError as e:
    print(e.code)
    sys.exit(1)
if sys.argv[2] != "/metrics":
    sys.exit(0)
body = r.read().decode()
assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers["Content-Type"]
sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+Inf]+$')
helps, types, samples = set(), set(), []
for line in body.splitlines():
    if line.startswith("# HELP "):
        helps.add(line.split()[2])
    elif line.startswith("# TYPE "):
        types.add(line.split()[2])
    else:
        assert sample.match(line), "bad sample line: %r" % line
        samples.append(line)
for line in samples:
    name = re.match(r'[a-zA-Z_:][a-zA-Z0-9_:]*', line).group(0)
    assert name in helps and name in types, "no HELP or TYPE for " + name
lag = [l for l in samples if l.startswith("shmsync_worker_lag_ticks{")]
if len(lag) != 2 or "shmsync_workers 2" not in samples:
    sys.exit(2)  # not both attached yet
assert any(l.startswith("shmsync_tick ") for l in samples), body
assert any(l.startswith("shmsync_capacity_bytes ") for l in samples), body
assert len([l for l in samples if l.startswith("shmsync_worker_state{") and l.endswith(" 1")]) == 2, body
assert len([l for l in samples if l.startswith("shmsync_worker_pinned_bytes{")]) == 2, body
print(" ".join(re.search(r'pid="(\d+)"', l).group(1) for l in lag))
PYEOF
	ok=0
	for _ in $(seq 100); do
		if python3 "$tmp/scrape.py" "$port" /metrics >"$tmp/scrape.out" 2>"$tmp/scrape.err"; then
			ok=1
			break
		fi
		[ -s "$tmp/scrape.err" ] && grep -q AssertionError "$tmp/scrape.err" && break
		sleep 0.1
	done
	pids=$(children $run)
	if [ $ok != 1 ]; then
		fail "--metrics: no good scrape: $(cat "$tmp/scrape.out" "$tmp/scrape.err"); $(cat "$tmp/err")"
	else
		# The two series are the two workers, children of run.
		for p in $(cat "$tmp/scrape.out"); do
			echo " $pids " | grep -q " $p " || fail "--metrics: pid $p is no worker of run ($pids)"
		done
		echo "ok: --metrics: GET /metrics: well formed, 2 worker series (pids $(cat "$tmp/scrape.out"))"
	fi
	code=$(python3 "$tmp/scrape.py" "$port" /nothing-here)
	[ "$code" = 404 ] || fail "--metrics: GET /nothing-here answered '$code', not 404"
	# The root, 2 workers and the metrics keeper; the server is the keeper's.
	grandchildren=""
	for p in $pids; do grandchildren="$grandchildren $(children "$p")"; done
	[ "$(echo $pids | wc -w)" = 4 ] || fail "--metrics: expected 4 children of run, found: $pids"
	kill -TERM $run
	wait $run
	rc=$?
	left=""
	for p in $pids $grandchildren; do [ -e /proc/"$p" ] && left="$left $p"; done
	if [ "$rc" != 0 ] || [ -n "$left" ]; then
		fail "--metrics: SIGTERM: exit $rc, left:$left; $(cat "$tmp/err")"
	elif python3 "$tmp/scrape.py" "$port" / 2>/dev/null; then
		fail "--metrics: the port still answers after run exited"
	else
		echo "ok: --metrics: SIGTERM: exit 0, nothing left (pids $(echo $pids $grandchildren))"
	fi
else
	echo "run_cli_test: --metrics skipped (no python3)"
fi

[ "$fails" = 0 ] || exit 1
echo "run_cli_test: ok"
