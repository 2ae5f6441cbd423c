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

[ "$fails" = 0 ] || exit 1
echo "run_cli_test: ok"
