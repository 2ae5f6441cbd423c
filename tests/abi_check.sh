#!/usr/bin/env bash
# The shared library exports exactly the functions the public header declares:
# no internal symbol leaks, and no declared function is missing.
#
#   bash tests/abi_check.sh include/shmsync.h path/to/libshmsync.so
set -u
hdr=$1 lib=$2
command -v nm >/dev/null || { echo "abi_check: no nm here"; exit 77; }
declared=$(grep -oE '\bshmsync_[a-z_0-9]+\(' "$hdr" | tr -d '(' | sort -u)
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TtWwDdBbRr]$/ {print $3}' | sed 's/@.*//' | sort -u)
if [ "$declared" != "$exported" ]; then
	echo "abi_check: the library's exports differ from the header's functions:" >&2
	diff <(echo "$declared") <(echo "$exported") >&2
	exit 1
fi
echo "abi_check: $(echo "$exported" | wc -l) functions, exports match the header"
