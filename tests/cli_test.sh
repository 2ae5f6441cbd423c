#!/usr/bin/env bash
# The shmsync tool end to end: serve, put/get/del/add/ls/mkdir/rmdir, binary
# values in every form, watch (text and JSON), stat --json, exit codes and
# messages, a clean stop, and a short demo. Run by ctest as `cli` and
# `cli_futex` (SHMSYNC_SIGNAL=futex).
#
#   bash tests/cli_test.sh path/to/shmsync
#
# Exits 0 when everything passes, 1 at the first failure.
set -u

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
	echo "usage: $0 path/to/shmsync" >&2
	exit 1
fi
SHMSYNC=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
PY=$(command -v python3 || true)

tmp=$(mktemp -d /tmp/shmsync-cli.XXXXXX)
sock=$tmp/root.sock
serve_pid=
bg_pids=()

cleanup() {
	local p
	# The background pids are timeout(1)'s: SIGTERM, which it passes on
	# to the tool, first; a SIGKILL alone would leave the tool running.
	for p in "${bg_pids[@]}" $serve_pid; do
		kill -TERM "$p" 2>/dev/null
	done
	sleep 0.2
	for p in "${bg_pids[@]}" $serve_pid; do
		kill -KILL "$p" 2>/dev/null
	done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	for f in "$tmp"/out "$tmp"/err; do
		[ -s "$f" ] && { echo "--- $(basename "$f"):" >&2; head -c 2000 "$f" >&2; }
	done
	exit 1
}

# run WANT_RC CMD...: runs the tool (bounded) with stdout in $tmp/out and
# stderr in $tmp/err; checks the exit code, and that a failure says why in
# exactly one line starting "shmsync: ". Standard input: $stdin_from.
stdin_from=/dev/null
run() {
	local want=$1
	shift
	timeout 20 "$SHMSYNC" "$@" >"$tmp/out" 2>"$tmp/err" <"$stdin_from"
	local rc=$?
	[ "$rc" -eq "$want" ] || fail "shmsync $* exited $rc, expected $want"
	if [ "$want" -ne 0 ]; then
		[ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "shmsync $*: expected one line on stderr"
		grep -q '^shmsync: ' "$tmp/err" || fail "shmsync $*: message does not start with 'shmsync: '"
	fi
}

# out_is TEXT: stdout was exactly TEXT (plus the newline the tool adds).
out_is() {
	[ "$(cat "$tmp/out")" == "$1" ] || fail "expected output '$1', got '$(cat "$tmp/out")'"
}

err_has() {
	grep -qF -- "$1" "$tmp/err" || fail "expected '$1' in the message, got '$(cat "$tmp/err")'"
}

# wait_for SECONDS CMD...: until CMD succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.02
	done
}

has_line() { grep -qE -- "$2" "$1" 2>/dev/null; }

# ---- usage errors (exit 2), before any root exists ----------------------------

unset SHMSYNC_SOCKET
run 2
run 2 frobnicate
run 0 --help
grep -q '^usage: shmsync' "$tmp/out" || fail "--help prints no usage"
for c in serve put get del add mkdir rmdir ls watch stat demo; do
	run 0 "$c" --help
	grep -q "^usage: shmsync $c" "$tmp/out" || fail "$c --help prints no usage"
done
run 2 get /a/ k
err_has "no socket"
export SHMSYNC_SOCKET=$sock
run 2 get /a/
err_has "missing arguments"
run 2 get /a/ k extra
err_has "too many arguments"
run 2 put /a/ k v --bogus
err_has "unknown option '--bogus'"
run 2 get --json /a/ k
err_has "does not apply"
run 2 add /a/ n -3
err_has "put -- before"
run 2 add /a/ n abc
run 2 add /a/ n 9223372036854775808
err_has "does not fit"
run 2 put a/ k v
err_has "not a directory name"
run 2 put /a/../ k v
run 2 put /a/ "" v
err_has "empty"
run 2 put --hex /a/ 0g v
err_has "not hex"
run 2 put --hex /a/ abc v
run 2 put --base64 /a/ "a*==" v
err_has "not base64"
run 2 get --hex --base64 /a/ 00
run 2 get --raw --hex /a/ 00
run 2 put --timeout 0 /a/ k v
run 2 put --timeout x /a/ k v
run 2 serve --capacity 12X
err_has "not a size"
run 2 serve --capacity 0
run 2 serve --max-workers 0
err_has "out of range"
run 2 serve --max-workers 5000
run 2 serve --stall-policy bogus
err_has "wait, kill or revoke, not 'bogus'"
run 2 serve --max-read-pin 0
run 2 serve --max-read-pin-bytes 12X
err_has "not a size"
run 2 put --stall-policy wait /a/ k v
err_has "option '--stall-policy' does not apply to put"
run 2 demo --workers 0
run 2 demo --seconds -1
run 2 demo extra
run 2 ls /a/ /b/
run 2 --socket
run 2 get --socket "/tmp/$(printf 'x%.0s' {1..120})" /a/ k
err_has "too long"
# Options before the command are the command's own (issue 9, item 8.5).
run 2 --bogus get /a/ k
err_has "unknown option '--bogus'"
run 2 --json get /a/ k
err_has "option '--json' does not apply to get"
run 2 --socket "$sock"
err_has "no command"
run 0 -s "$sock" get --help
grep -q '^usage: shmsync get' "$tmp/out" || fail "-s PATH get --help prints no usage of get"
# The export ring: a power of two, 4K to 1G (item 8.1).
run 2 serve --ring-bytes 3000
err_has "--ring-bytes: '3000' is not a power of two"
run 2 serve --ring-bytes 2K
run 2 serve --ring-bytes 2G
run 2 serve --ring-bytes 12X
err_has "not a size"
# A backslash in a text argument starts an escape (item 8.2).
run 2 get /a/ 'a\q'
err_has "a backslash starts"
run 2 get '/a\x00/' k
err_has "NUL"

# Replication's options (issue 14), shared by serve and run: each bad one,
# and each bad combination, is a usage error before anything connects.
run 2 serve --replicate foo --stream s
err_has "NATS URLs look like nats://HOST:PORT"
run 2 serve --replicate nats://127.0.0.1:1
err_has "--replicate needs --stream NAME"
run 2 serve --replicate nats://127.0.0.1:1 --follow nats://127.0.0.1:1 --stream s
err_has "exclude each other"
run 2 serve --durable
err_has "need --replicate or --follow"
run 2 serve --replicas 9 --replicate nats://127.0.0.1:1 --stream s
err_has "out of range"
run 2 serve --lease 0.01 --follow nats://127.0.0.1:1 --stream s
err_has "--lease"
run 2 run --follow nats://127.0.0.1:1 -- true
err_has "--follow needs --stream NAME"
run 2 run --stream s -- true
err_has "need --replicate or --follow"
run 2 put --durable /a/ k v
err_has "does not apply to put"

# --numa (issue 11, item 2): a bad policy is a usage error; a node that
# does not exist is refused by the library, which names the nodes there are.
run 2 serve --numa sometimes
err_has "--numa: interleave, bind:NODE or none, not 'sometimes'"
run 2 serve --numa bind:x
err_has "--numa bind:NODE"
run 2 serve --numa bind:5000
err_has "out of range"
run 2 put --numa none /a/ k v
err_has "option '--numa' does not apply to put"
if [ ! -e /sys/devices/system/node/node7 ]; then
	run 2 serve --numa bind:7 --socket "$tmp/numa.sock" --capacity 64M -q
	err_has "node 7 does not exist"
	[ ! -e "$tmp/numa.sock" ] || fail "serve --numa bind:7 left its socket behind"
fi
run 2 stat --json --prometheus
err_has "--json and --prometheus exclude each other"
run 2 serve --prefault 12X
err_has "not a size"
run 2 serve --prefault 128M --capacity 64M --socket "$tmp/pf.sock" -q
err_has "prefault of 134217728 bytes is more than the capacity of 67108864 bytes"
[ ! -e "$tmp/pf.sock" ] || fail "serve --prefault past the capacity left its socket behind"
# --prefault backs that much of the segment before the socket opens; without
# it a new root backs its log and a margin only.
for pf in none 40M; do
	pf_args=()
	[ "$pf" = none ] || pf_args=(--prefault "$pf")
	timeout 60 "$SHMSYNC" serve --socket "$tmp/pf.sock" --capacity 64M --log-bytes 1M \
		"${pf_args[@]}" -q 2>"$tmp/pf.err" &
	pf_pid=$!
	bg_pids+=("$pf_pid")
	wait_for 20 test -S "$tmp/pf.sock" || fail "serve --prefault $pf did not create its socket"
	run 0 stat --json --socket "$tmp/pf.sock"
	backed=$(grep -o '"segment_bytes": *[0-9]*' "$tmp/out" | grep -o '[0-9]*$')
	if [ "$pf" = none ]; then
		[ "$backed" -lt $((40 << 20)) ] || fail "a root without --prefault backed $backed bytes"
	else
		[ "$backed" -ge $((40 << 20)) ] || fail "serve --prefault 40M backed only $backed bytes"
	fi
	kill "$pf_pid"
	wait "$pf_pid" 2>/dev/null
done

# No root there: exit 1, and it says so.
run 1 get /a/ k
err_has "no root serves"

# ---- a root -----------------------------------------------------------------------

timeout 280 "$SHMSYNC" serve --socket "$sock" --capacity 256M --stall-policy revoke \
	--max-read-pin 30 --max-read-pin-bytes 64M --numa interleave 2>"$tmp/serve.err" &
serve_pid=$!
wait_for 10 test -S "$sock" || fail "serve did not create $sock"
run 1 serve --socket "$sock" --capacity 64M
err_has "already serves"
# A live listener of another type is no stale socket: serve must leave it
# alone, not unlink it and bind its own (item 8.4).
if [ -n "$PY" ]; then
	for type in SOCK_STREAM SOCK_DGRAM; do
		other=$tmp/other-$type.sock
		"$PY" -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX, getattr(socket, sys.argv[2]))
s.bind(sys.argv[1])
if s.type == socket.SOCK_STREAM:
    s.listen(8)
time.sleep(60)
' "$other" "$type" &
		other_pid=$!
		bg_pids+=("$other_pid")
		wait_for 10 test -S "$other" || fail "the $type listener did not bind $other"
		run 1 serve --socket "$other"
		err_has "a $type socket is there, not a root's; not replacing it"
		kill -0 "$other_pid" 2>/dev/null || fail "the $type listener died"
		"$PY" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, getattr(socket, sys.argv[2]))
s.connect(sys.argv[1])
' "$other" "$type" || fail "serve took $other from the $type listener"
		kill "$other_pid"
		wait "$other_pid" 2>/dev/null
	done
	bg_pids=()
else
	echo "cli: no python3: the check of a foreign listener is skipped" >&2
fi
# Environment variables are checked too (usage errors).
SHMSYNC_SIGNAL=bogus run 2 get /a/ k
err_has 'SHMSYNC_SIGNAL="bogus"'
SHMSYNC_CAPACITY=12Q run 2 serve --socket "$tmp/other.sock"
err_has 'SHMSYNC_CAPACITY="12Q"'

# ---- put, get, del, add, mkdir, rmdir, ls -------------------------------------------

run 0 mkdir /a/
run 1 mkdir /a/
err_has "/a/: directory exists"
run 1 put /missing/ k v
err_has "/missing/ k: no such directory"
run 0 put /a/ k v1
run 0 get /a/ k
out_is v1
run 0 put /a/ k "two words"
run 0 get /a/ k
out_is "two words"
run 1 get /a/ nope
err_has "/a/ nope: no such key"
run 1 get /nope/ k
err_has "/nope/ k: no such directory"
run 0 del /a/ k
run 1 del /a/ k
err_has "no such directory or key"
run 1 get /a/ k

run 0 add /a/ n 5
out_is 5
run 0 add /a/ n -- -7
out_is -2
run 0 add /a/ n 0
out_is -2
run 0 get --hex /a/ 6e
out_is feffffffffffffff
run 0 put /a/ s text
run 1 add /a/ s 1
err_has "not a counter"
run 0 add /a/ big 9223372036854775807
run 1 add /a/ big 1
err_has "overflows"
run 1 add /nope/ n 1
err_has "no such directory"

# Conditional puts: EEXIST and ECANCELED are exit 1.
run 1 put --if-absent /a/ s other
err_has "key exists"
run 0 put --if-absent /a/ fresh 1
run 0 get --tick /a/ s
read -r tick value <"$tmp/out"
[ "$value" == text ] || fail "get --tick: value '$value'"
[[ "$tick" =~ ^[0-9]+$ ]] || fail "get --tick: tick '$tick'"
run 1 put --if-tick $((tick + 1000)) /a/ s other
err_has "not the expected tick"
run 0 put --if-tick "$tick" /a/ s other
run 0 get /a/ s
out_is other
run 1 put --if-tick 0 /a/ s again
run 0 put --if-tick 0 /a/ absent yes

run 0 ls /a/
out_is "$(printf 'absent\nbig\nfresh\nn\ns')"
run 0 mkdir /b/ /b/c/ /z/
run 1 mkdir /y/ /b/
[ "$(timeout 20 "$SHMSYNC" ls)" == "$(printf '/a/\n/b/\n/b/c/\n/z/')" ] || fail "mkdir of /y/ /b/ was not all or none"
run 0 ls
out_is "$(printf '/a/\n/b/\n/b/c/\n/z/')"
run 0 rmdir /b/
run 0 ls
out_is "$(printf '/a/\n/z/')"
run 1 rmdir /b/c/
err_has "no such directory"
run 1 ls /b/
err_has "no such directory"
run 0 ls /z/
out_is ""

# ---- binary keys and values ------------------------------------------------------

run 0 put --hex /z/ 00ff0a 5c000aff41
run 0 get --hex /z/ 00ff0a
out_is 5c000aff41
run 0 get --base64 /z/ AP8K
out_is XAAK/0E=
run 0 ls --hex /z/
out_is 00ff0a
run 0 ls /z/
out_is '\x00\xff\x0a'
run 0 get --base64 /z/ AP8K
run 0 put --base64 /z/ a2V5 AAECAw
run 0 get --hex /z/ 6b6579
out_is 00010203
run 0 get /z/ key
out_is '\x00\x01\x02\x03'
run 0 put --base64 /z/ e30= ""
run 0 get --hex /z/ 7b7d
out_is ""
# A file of every byte value, in and out exactly.
head -c 4096 /dev/urandom >"$tmp/blob"
printf '\0\n\\' >>"$tmp/blob"
timeout 20 "$SHMSYNC" put --stdin /z/ blob <"$tmp/blob" || fail "put --stdin"
timeout 20 "$SHMSYNC" get --raw /z/ blob >"$tmp/blob.out" || fail "get --raw"
cmp -s "$tmp/blob" "$tmp/blob.out" || fail "put --stdin / get --raw did not round-trip"
run 0 get --base64 /z/ YmxvYg==
base64 -d <"$tmp/out" | cmp -s - "$tmp/blob" || fail "get --base64 does not decode to the value"
run 0 get --hex /z/ 626c6f62
xxd -r -p <"$tmp/out" 2>/dev/null | cmp -s - "$tmp/blob" ||
	[ "$(od -An -v -tx1 "$tmp/blob" | tr -d ' \n')" == "$(cat "$tmp/out")" ] ||
	fail "get --hex does not decode to the value"
run 0 get /z/ blob
if LC_ALL=C grep -q '[^ -~]' "$tmp/out"; then fail "escaped output has raw bytes"; fi
if [ -n "$PY" ]; then
	# Undo the escapes: \\ and \xNN must give the value back.
	"$PY" -c '
import re, sys
s = open(sys.argv[1], "rb").read().rstrip(b"\n")
b = re.sub(rb"\\(\\|x([0-9a-f]{2}))", lambda m: b"\\" if m.group(1) == b"\\" else bytes([int(m.group(2), 16)]), s)
sys.exit(0 if b == open(sys.argv[2], "rb").read() else 1)
' "$tmp/out" "$tmp/blob" || fail "escaped output does not decode to the value"
fi

# What ls prints is what get, put and del take: \\ and \xNN escapes in
# keys, values and directories, or --raw for a literal backslash (item 8.2).
run 0 put --hex /z/ 00ff5c0a2041 7f
run 0 ls /z/
printed=$(grep -F -- '\x00\xff\\' "$tmp/out") || fail "ls /z/ did not list the key 00ff5c0a2041"
[ "$printed" == '\x00\xff\\\x0a A' ] || fail "ls printed the key 00ff5c0a2041 as '$printed'"
run 0 get /z/ "$printed"
out_is '\x7f'
run 0 put /z/ "$printed" '\x00\\v'
run 0 get --hex /z/ 00ff5c0a2041
out_is 005c76
run 0 del /z/ "$printed"
run 1 get --hex /z/ 00ff5c0a2041
run 0 put --raw /z/ 'back\slash' 'as\is'
run 0 ls /z/
grep -qxF 'back\\slash' "$tmp/out" || fail "ls did not escape a backslash: $(cat "$tmp/out")"
run 0 get /z/ 'back\\slash'
out_is 'as\\is'
run 0 get --raw /z/ 'back\slash'
out_is 'as\is'
run 0 del /z/ 'back\\slash'
run 0 mkdir '/bin\x01 dir\x2f'
run 0 ls
printed=$(grep -F 'bin' "$tmp/out") || fail "ls did not list the directory"
[ "$printed" == '/bin\x01 dir/' ] || fail "ls printed the directory as '$printed'"
run 0 put "$printed" k v
run 0 ls "$printed"
out_is k
run 0 rmdir "$printed"
run 1 ls '/bin\x01 dir/'

# ---- value sizes (item 8.1) --------------------------------------------------------

# With the default ring a value of 1 MiB is refused, naming the limit, and
# the limit is exact: a value of that size goes through, one byte more not.
head -c 1048576 /dev/urandom >"$tmp/mib"
stdin_from=$tmp/mib run 2 put --stdin /z/ mib
err_has "too big for this root"
limit=$(grep -oE 'at most [0-9]+ bytes' "$tmp/err" | grep -oE '[0-9]+')
[ -n "$limit" ] || fail "a too big value's message names no limit: $(cat "$tmp/err")"
[ "$limit" -gt $((120 << 10)) ] && [ "$limit" -lt $((128 << 10)) ] ||
	fail "the default ring's value limit is $limit bytes, expected just under 128 KiB"
head -c "$limit" "$tmp/mib" >"$tmp/limit"
stdin_from=$tmp/limit run 0 put --stdin /z/ mib
timeout 20 "$SHMSYNC" get --raw /z/ mib >"$tmp/limit.out" || fail "get --raw of the largest value"
cmp -s "$tmp/limit" "$tmp/limit.out" || fail "the largest value did not round-trip"
head -c $((limit + 1)) "$tmp/mib" >"$tmp/over"
stdin_from=$tmp/over run 2 put --stdin /z/ mib
err_has "at most $limit bytes"
run 0 del /z/ mib

# serve --ring-bytes lets bigger values through: 1 MiB, byte for byte.
big=$tmp/big.sock
timeout 60 "$SHMSYNC" serve --socket "$big" --capacity 256M --ring-bytes 4M -q 2>"$tmp/big.err" &
big_pid=$!
bg_pids+=("$big_pid")
wait_for 10 test -S "$big" || fail "serve --ring-bytes 4M did not start: $(cat "$tmp/big.err")"
run 0 mkdir --socket "$big" /big/
stdin_from=$tmp/mib run 0 put --socket "$big" --stdin /big/ v
timeout 20 "$SHMSYNC" get --socket "$big" --raw /big/ v >"$tmp/mib.out" || fail "get --raw of 1 MiB"
cmp -s "$tmp/mib" "$tmp/mib.out" || fail "a 1 MiB value did not round-trip through --ring-bytes 4M"
kill -TERM "$big_pid"
wait "$big_pid" || fail "serve --ring-bytes 4M did not stop cleanly: $(cat "$tmp/big.err")"
bg_pids=()

# ---- --allow-uid: another uid attaches; the socket's mode follows the list --------

run 2 serve --allow-uid no-such-user-here
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
	# Outside $tmp (mode 0700), so that the other uids can reach the socket.
	adir=$(mktemp -d /tmp/shmsync-cli-allow.XXXXXX)
	chmod 0755 "$adir"
	asock=$adir/root.sock
	timeout 60 "$SHMSYNC" serve --socket "$asock" --capacity 64M --allow-uid 65534 -q 2>"$tmp/allow.err" &
	allow_pid=$!
	bg_pids+=("$allow_pid")
	wait_for 10 test -S "$asock" || fail "serve --allow-uid did not start: $(cat "$tmp/allow.err")"
	[ "$(stat -c %a "$asock")" == 666 ] || fail "--allow-uid 65534: socket mode $(stat -c %a "$asock"), not 666"
	run 0 mkdir --socket "$asock" /shared/
	as() { timeout 20 setpriv --reuid "$1" --regid "$1" --clear-groups "$SHMSYNC" "${@:2}" >"$tmp/out" 2>"$tmp/err"; }
	as 65534 put --socket "$asock" /shared/ k from-nobody || fail "uid 65534 could not put: $(cat "$tmp/err")"
	run 0 get --socket "$asock" /shared/ k
	out_is from-nobody
	as 65533 get --socket "$asock" /shared/ k && fail "uid 65533 (not allowed) could read"
	grep -q "uid 65533 is not allowed" "$tmp/err" || fail "the refusal does not name uid 65533: $(cat "$tmp/err")"
	kill -TERM "$allow_pid"
	wait "$allow_pid" || fail "serve --allow-uid did not stop cleanly"
	bg_pids=()
	rm -rf "$adir"
	# Without --allow-uid the socket stays private.
	[ "$(stat -c %a "$sock")" == 600 ] || fail "the default socket mode is $(stat -c %a "$sock"), not 600"
else
	echo "cli: --allow-uid across uids skipped (needs root and setpriv)"
fi

# ---- options before the command (item 8.5) -----------------------------------------

unset SHMSYNC_SOCKET
run 0 --socket "$sock" put /a/ g v
run 0 --socket="$sock" get /a/ g
out_is v
run 0 -s "$sock" --hex get /a/ 67
out_is 76
run 0 --timeout 5 --socket "$sock" -- del /a/ g
run 1 --sock "$sock" get /a/ g
err_has "no such key"
export SHMSYNC_SOCKET=$sock

# ---- watch ------------------------------------------------------------------------

timeout 60 "$SHMSYNC" watch /w/ >"$tmp/watch.txt" 2>"$tmp/watch.err" &
watch_pid=$!
bg_pids+=("$watch_pid")
timeout 60 "$SHMSYNC" watch --json >"$tmp/watch.json" 2>"$tmp/watchj.err" &
watchj_pid=$!
bg_pids+=("$watchj_pid")

two_workers() {
	local n
	n=$(timeout 20 "$SHMSYNC" stat --json 2>/dev/null |
		sed -n 's/.*"workers":\[\(.*\)\].*/\1/p' | grep -o '"slot"' | wc -l)
	[ "$n" -ge 2 ]
}
wait_for 10 two_workers || fail "the watchers did not attach"

# Each change waits until both watchers printed it, so imports cannot
# coalesce changes and the expected lines are exact.
step() {
	local text=$1 json=$2
	shift 2
	run 0 "$@"
	if [ -n "$text" ]; then
		wait_for 10 has_line "$tmp/watch.txt" "$text" || fail "watch did not print /$text/ after shmsync $*"
	fi
	wait_for 10 has_line "$tmp/watch.json" "$json" || fail "watch --json did not print /$json/ after shmsync $*"
}
step '^[0-9]+ mkdir /w/$' '"kind":"mkdir","dir":"/w/"}' mkdir /w/
step '^[0-9]+ put /w/ k hello\\x20world$' '"kind":"put","dir":"/w/","key":"k","value":"hello world"}' \
	put /w/ k "hello world"
step '' '"dir":"/a/","key":"outside"' put /a/ outside yes
step '^[0-9]+ put /w/ bin \\x00\\xff$' '"key":"bin","value_base64":"AP8="}' put --hex /w/ 62696e 00ff
step '^[0-9]+ del /w/ k$' '"kind":"del","dir":"/w/","key":"k"}' del /w/ k
step '^[0-9]+ rmdir /w/$' '"kind":"rmdir","dir":"/w/"}' rmdir /w/
has_line "$tmp/watch.txt" outside && fail "watch /w/ printed a change outside /w/"
[ "$(wc -l <"$tmp/watch.txt")" -eq 5 ] || fail "watch /w/ printed $(wc -l <"$tmp/watch.txt") lines, expected 5"
cut -d' ' -f1 "$tmp/watch.txt" | sort -n -c 2>/dev/null || fail "watch ticks do not increase"

# stat --json while two watchers are attached.
run 0 stat --json
if [ -n "$PY" ]; then
	"$PY" -c '
import json, os, sys
s = json.load(open(sys.argv[1]))
for k in ("tick", "min_epoch", "signal", "uring_ops", "bytes_in_use", "capacity", "tombstones", "reclaimed", "workers"):
    assert k in s, k
assert s["tick"] > 0 and s["capacity"] == 256 << 20 and s["bytes_in_use"] > 0
assert len(s["workers"]) == 2, s["workers"]
for w in s["workers"]:
    for k in ("slot", "pid", "cursor", "epoch", "lag", "pinned_bytes", "state", "node"):
        assert k in w, k
    assert w["state"] in ("live", "offline", "lagging"), w
    assert w["pid"] != os.getpid()
    assert w["node"] is None or (type(w["node"]) is int and w["node"] >= 0), w
# The segment policy: the library object (interleave, as serve was told;
# "unavailable" where the kernel refuses to say), or null.
n = s["numa"]
assert n is None or (type(n) is dict and n.get("policy") in ("interleave", "unavailable")), n
if os.environ.get("SHMSYNC_SIGNAL") == "futex":
    assert s["signal"] == "futex" and s["client_signal"] == "futex" and s["uring_ops"] == 0, s
' "$tmp/out" || fail "stat --json: $(cat "$tmp/out")"
fi
run 0 stat
grep -q '^tick ' "$tmp/out" && grep -q 'pinned' "$tmp/out" || fail "stat prints no table"
grep -qE '^numa +[a-z]' "$tmp/out" || fail "stat prints no numa line"
grep -qE '^ *slot +pid +state +node ' "$tmp/out" || fail "stat's table has no node column"
[ "$(grep -cE '^ +[0-9]+ +[0-9]+ +[a-z]+ +([0-9]+|-) ' "$tmp/out")" -eq 2 ] ||
	fail "stat's table does not show the two watchers with a node"

# The Prometheus text format (issue 11, item 3): every sample line is well
# formed, every metric has HELP and TYPE, and the figures are there.
run 0 stat --prometheus
if [ -n "$PY" ]; then
	"$PY" - "$tmp/out" <<'PYEOF' || fail "stat --prometheus: $(cat "$tmp/out")"
import re, sys
sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+Inf]+$')
helps, types, names = set(), {}, []
for line in open(sys.argv[1]).read().splitlines():
    if line.startswith("# HELP "):
        helps.add(line.split()[2])
    elif line.startswith("# TYPE "):
        _, _, name, kind = line.split()
        assert kind in ("gauge", "counter"), line
        types[name] = kind
    else:
        assert sample.match(line), "bad sample line: %r" % line
        name = re.match(r'[a-zA-Z_:][a-zA-Z0-9_:]*', line).group(0)
        assert name.startswith("shmsync_"), line
        names.append((name, line))
for name, line in names:
    assert name in helps and name in types, "no HELP or TYPE for %s" % name
have = {n for n, _ in names}
for want in ("shmsync_tick", "shmsync_bytes_in_use", "shmsync_capacity_bytes", "shmsync_tombstones",
             "shmsync_reclaimed_objects_total", "shmsync_workers", "shmsync_worker_lag_ticks",
             "shmsync_worker_pinned_bytes", "shmsync_worker_state", "shmsync_worker_node"):
    assert want in have, want
lines = dict((l.split(" ")[0], l.split(" ")[1]) for _, l in names if "{" not in l)
assert lines["shmsync_workers"] == "2" and lines["shmsync_capacity_bytes"] == str(256 << 20), lines
lag = [l for n, l in names if n == "shmsync_worker_lag_ticks"]
assert len(lag) == 2 and all(re.search(r'\{slot="\d+",pid="\d+"\}', l) for l in lag), lag
# One state per worker is 1.
on = [l for n, l in names if n == "shmsync_worker_state" and l.endswith(" 1")]
assert len(on) == 2, on
PYEOF
else
	grep -q '^# TYPE shmsync_tick gauge' "$tmp/out" || fail "stat --prometheus: no TYPE of shmsync_tick"
fi

kill -INT "$watch_pid"
wait "$watch_pid"
rc=$?
[ $rc -eq 0 ] || fail "watch exited $rc on SIGINT"
kill -TERM "$watchj_pid"
wait "$watchj_pid"
rc=$?
[ $rc -eq 0 ] || fail "watch --json exited $rc on SIGTERM"
bg_pids=()

if [ -n "$PY" ]; then
	"$PY" -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
w = [l for l in lines if l.get("dir") == "/w/"]
kinds = [l["kind"] for l in w]
assert kinds == ["mkdir", "put", "put", "del", "rmdir"], kinds
assert w[1]["key"] == "k" and w[1]["value"] == "hello world", w[1]
assert w[2]["key"] == "bin" and w[2]["value_base64"] == "AP8=" and "value" not in w[2], w[2]
assert "value" not in w[3] and w[3]["key"] == "k"
assert any(l.get("dir") == "/a/" and l.get("key") == "outside" for l in lines)
ticks = [l["tick"] for l in lines]
assert ticks == sorted(ticks), ticks
' "$tmp/watch.json" || fail "watch --json: $(cat "$tmp/watch.json")"
fi

# ---- rmdir / (item 8.3) -------------------------------------------------------------

run 0 ls
before=$(cat "$tmp/out")
[ -n "$before" ] || fail "no directories left to test rmdir / with"
run 2 rmdir /
err_has "give --force"
run 2 rmdir /a/ /
run 0 ls
out_is "$before"
run 0 rmdir --force /
run 0 ls
out_is ""

# ---- stop --------------------------------------------------------------------------

kill -TERM "$serve_pid"
wait "$serve_pid"
rc=$?
serve_pid=
[ $rc -eq 0 ] || fail "serve exited $rc on SIGTERM: $(cat "$tmp/serve.err")"
[ ! -e "$sock" ] || fail "serve left its socket behind"
run 1 get /a/ k

# ---- the demo -----------------------------------------------------------------------

timeout 60 "$SHMSYNC" demo --seconds 2 --workers 2 >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 0 ] || fail "demo exited $rc"
grep -q 'converged  *all 2 workers at tick' "$tmp/out" || fail "the demo did not report converged workers"
for w in commits updates propagation 'bytes in use' tombstones; do
	grep -q "$w" "$tmp/out" || fail "the demo's report lacks '$w'"
done
if [ "${SHMSYNC_SIGNAL:-}" == futex ]; then
	grep -q 'signal futex (root), futex (workers)' "$tmp/out" || fail "the demo did not run on the futex path"
fi

echo "cli: ok (signal ${SHMSYNC_SIGNAL:-default})"
exit 0
