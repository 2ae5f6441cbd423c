#!/usr/bin/env bash
# Verifies the Promela models with spin, and shows they have teeth: each
# documented mutation must make spin fail. Exits 0 when every model verifies
# and every mutation is caught, 77 when spin (or a C compiler) is missing,
# 1 otherwise. Usage: spec/check.sh [WORKDIR]
set -u
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
command -v spin >/dev/null 2>&1 || { echo "check.sh: spin not found (apt-get install spin)"; exit 77; }
command -v cc >/dev/null 2>&1 || { echo "check.sh: no C compiler"; exit 77; }
mkdir -p "$work"
fail=0

# run MODEL EXPECT [-DMUTATION=1]: EXPECT is pass or fail.
run() {
	local model=$1 expect=$2 mutation=${3:-} dir tag
	tag=$(echo "$mutation" | tr -c 'A-Za-z0-9_\n' '_')
	dir="$work/$(basename "$model" .pml)${tag:+-$tag}"
	rm -rf "$dir" && mkdir -p "$dir" && cp "$here/$model" "$dir/" || return 1
	(
		cd "$dir" &&
			spin -a $mutation "$model" >spin.log 2>&1 &&
			cc -O2 -DSAFETY -DCOLLAPSE -o pan pan.c >cc.log 2>&1 &&
			./pan -m100000 >pan.log 2>&1
	)
	local errors
	errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$dir/pan.log" | head -1)
	local states
	states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$dir/pan.log" | head -1)
	if [ -z "$errors" ]; then
		echo "FAIL $model ${mutation:-(as written)}: spin did not run (see $dir)"
		fail=1
	elif [ "$expect" = pass ] && [ "$errors" = 0 ]; then
		echo "ok   $model ${mutation:+($mutation) }verified: no errors, $states states"
	elif [ "$expect" = fail ] && [ "$errors" != 0 ]; then
		echo "ok   $model with $mutation: caught ($(grep -m1 -oE 'assertion violated.*|invalid end state.*' "$dir/pan.log"))"
	else
		echo "FAIL $model ${mutation:-(as written)}: expected $expect, spin reported $errors errors (see $dir/pan.log)"
		fail=1
	fi
}

run wake.pml pass
run wake.pml fail -DLATE_FLAG=1
run wake.pml fail -DNO_RESCAN=1
run wake.pml fail -DLATE_VALUE=1
run wake.pml fail -DEARLY_WANTS=1
run reclaim.pml fail -DEARLY=1
run reclaim.pml fail -DNO_REREAD=1
run reclaim.pml fail -DNO_TAIL_CHECK=1
run reclaim.pml fail "-DREVOKE=1 -DREVOKE_LATE=1"
run reclaim.pml fail "-DREVOKE=1 -DFAST_BLIND=1"
run reclaim.pml pass
run reclaim.pml pass -DREVOKE=1

[ $fail -eq 0 ] && echo "spin: all models verified, all mutations caught"
exit $fail
