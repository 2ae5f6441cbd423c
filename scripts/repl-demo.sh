#!/usr/bin/env bash
# Replication on one machine: a three-node NATS JetStream cluster on
# loopback, a leader root and a follower root, each on its own socket.
#
#   bash scripts/repl-demo.sh start [DIR]   # default DIR: /tmp/shmsync-repl-demo
#   bash scripts/repl-demo.sh stop  [DIR]
#
# `start` installs what is missing (scripts/deps.sh), builds the tool, starts
# everything (servers and roots are stopped by their recorded pids, never by
# name), writes through the follower and reads it back through the leader,
# then prints commands to try. Ports: 14222-14224 (clients), 14322-14324
# (routes), 14422-14424 (monitoring); NATS_CLUSTER_BASEPORT moves them.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
cmd=${1:-}
dir=${2:-/tmp/shmsync-repl-demo}
base=${NATS_CLUSTER_BASEPORT:-14222}
tool=$here/build/tools/shmsync

stop_pid() { # stop_pid FILE
	[[ -f "$1" ]] || return 0
	local pid
	pid=$(cat "$1")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
	fi
	rm -f "$1"
}

wait_socket() { # wait_socket SOCK LOG
	for _ in $(seq 100); do
		"$tool" -s "$1" stat >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "repl-demo: the root on $1 did not come up:" >&2
	cat "$2" >&2
	return 1
}

case "$cmd" in
start)
	bash scripts/deps.sh
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build -j"$(nproc)" --target shmsync_tool >/dev/null
	mkdir -p "$dir"
	bash scripts/nats-cluster.sh start "$dir/nats" "$base"
	urls=$(bash scripts/nats-cluster.sh urls "$dir/nats")
	"$tool" serve -q -s "$dir/leader.sock" --replicate "$urls" --stream demo --replicas 3 \
		>/dev/null 2>"$dir/leader.log" &
	echo $! >"$dir/leader.pid"
	wait_socket "$dir/leader.sock" "$dir/leader.log"
	"$tool" serve -q -s "$dir/follower.sock" --follow "$urls" --stream demo >/dev/null 2>"$dir/follower.log" &
	echo $! >"$dir/follower.pid"
	wait_socket "$dir/follower.sock" "$dir/follower.log"
	# Through the follower (forwarded to the leader), read on both.
	"$tool" -s "$dir/leader.sock" mkdir /demo/ 2>/dev/null || true
	"$tool" -s "$dir/follower.sock" put /demo/ hello "from the follower"
	echo "leader reads:   $("$tool" -s "$dir/leader.sock" get /demo/ hello)"
	echo "follower reads: $("$tool" -s "$dir/follower.sock" get /demo/ hello)"
	cat <<EOF

Running in $dir: NATS at $urls,
a leader root ($dir/leader.sock) and a follower root ($dir/follower.sock).
Try:
  $tool -s $dir/follower.sock put /demo/ k v     # goes to the leader, then back
  $tool -s $dir/leader.sock stat                 # replication: stored tick, lag
  $tool -s $dir/follower.sock stat
  kill -9 \$(cat $dir/leader.pid)                # the follower takes over within ~3 s
  bash scripts/nats-cluster.sh kill $dir/nats 2    # lose a NATS node; restart it with 'restart'
Stop everything with: bash scripts/repl-demo.sh stop $dir
EOF
	;;
stop)
	stop_pid "$dir/follower.pid"
	stop_pid "$dir/leader.pid"
	if [[ -d "$dir/nats" ]]; then bash scripts/nats-cluster.sh stop "$dir/nats"; fi
	;;
*)
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
