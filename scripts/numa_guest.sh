#!/usr/bin/env bash
# A real two-node NUMA test: boots Debian 12's stock kernel (6.1) in QEMU
# (TCG: KVM does not boot a guest on the development machines) with two
# NUMA nodes (node 0 = CPU 0 + 1 GiB, node 1 = CPU 1 + 1 GiB) and runs, from
# a busybox initramfs:
#   - test_numa_guest (tests/numa_guest.c): segment pages interleaved across
#     both nodes, ports on their worker's node, workers placed round-robin on
#     their node's CPU and memory, bind:7 refused;
#   - test_sync_basic, test_sync_hostile, test_sync_converge and
#     `shmsync demo --seconds 2 --workers 2`, with default signalling: 6.1
#     has neither io_uring futex waits nor SO_PEERPIDFD, so this runs the
#     fallback paths on the kernel most users have.
#
# Usage: scripts/numa_guest.sh [BUILD_DIR]     (default: build; a build
# without sanitizers). Exits 0 if every check passed, 1 if one failed or
# the guest ran past NUMA_GUEST_TIMEOUT seconds (default 240), 77 if QEMU,
# busybox or the kernel cannot be installed here.
#
# Installs what it needs with apt-get (qemu-system-x86, busybox-static) and
# keeps the kernel (vmlinuz only, taken with dpkg-deb: no install hooks run)
# in BUILD_DIR/numa-guest/, so later runs need no network.
# NUMA_GUEST_KERNEL_PKG picks the kernel package (default: the newest
# linux-image-6.1.0-N-amd64-unsigned apt knows).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

started=$SECONDS
build=${1:-build}
cache=$build/numa-guest
guest_limit=${NUMA_GUEST_TIMEOUT:-240}
mkdir -p "$cache"

say() { echo "numa_guest.sh: $*"; }
skip() {
	say "SKIP: $*"
	exit 77
}

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

# ---- tools -----------------------------------------------------------------

missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
	command -v apt-get >/dev/null 2>&1 || skip "no apt-get here to install ${missing[*]}"
	say "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! timeout 300 "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; then
		timeout 120 "${sudo[@]}" apt-get update >/dev/null 2>&1
		timeout 300 "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" ||
			skip "cannot install ${missing[*]}"
	fi
fi
busybox=$(command -v busybox)

# ---- kernel ----------------------------------------------------------------

kernel=$(find "$cache" -maxdepth 1 -name 'vmlinuz-6.1.*-amd64' | sort -V | tail -n 1)
if [ -z "$kernel" ]; then
	pkg=${NUMA_GUEST_KERNEL_PKG:-}
	newest() {
		apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' 2>/dev/null |
			awk '{print $1}' | sort -V | tail -n 1
	}
	[ -n "$pkg" ] || pkg=$(newest)
	if [ -z "$pkg" ]; then
		timeout 120 "${sudo[@]}" apt-get update >/dev/null 2>&1
		pkg=$(newest)
	fi
	[ -n "$pkg" ] || skip "apt knows no linux-image-6.1.0-N-amd64-unsigned package (Debian 12 sources needed)"
	say "downloading $pkg"
	rm -rf "$cache/dl" && mkdir -p "$cache/dl"
	# apt-get download writes to the current directory.
	(cd "$cache/dl" && timeout 300 apt-get download "$pkg") || skip "apt-get download $pkg failed"
	deb=$(find "$cache/dl" -maxdepth 1 -name '*.deb' | head -n 1)
	[ -n "$deb" ] || skip "apt-get download $pkg left no .deb"
	ver=$(dpkg-deb -f "$deb" Version)
	name=$(dpkg-deb -c "$deb" | awk '{print $NF}' | grep -m1 '^\./boot/vmlinuz-')
	[ -n "$name" ] || skip "$pkg holds no /boot/vmlinuz-*"
	kernel=$cache/$(basename "$name")
	# tar stops reading once it has the file, which dpkg-deb reports as a
	# broken pipe: judge by what came out, a bzImage ("HdrS" at 0x202).
	dpkg-deb --fsys-tarfile "$deb" 2>/dev/null | tar -xO "$name" >"$kernel.tmp"
	[ "$(dd if="$kernel.tmp" bs=1 skip=514 count=4 2>/dev/null)" = HdrS ] ||
		skip "cannot extract $name from $deb"
	mv "$kernel.tmp" "$kernel"
	echo "$pkg $ver" >"$cache/kernel.txt"
	rm -rf "$cache/dl" # 70 MB of modules we do not need
fi
say "kernel $(basename "$kernel") ($(cat "$cache/kernel.txt" 2>/dev/null || echo cached))"

# ---- programs --------------------------------------------------------------

if [ ! -f "$build/CMakeCache.txt" ]; then
	cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null || exit 1
fi
if grep -q '^SHMSYNC_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
	say "$build is a sanitizer build; give a plain one (e.g. build)"
	exit 1
fi
sync_tests=(test_sync_basic test_sync_hostile test_sync_converge)
cmake --build "$build" -j "$(nproc)" --target shmsync_static shmsync_tool "${sync_tests[@]}" || exit 1
# The in-guest checks are no host test (they need two nodes): built here.
# shellcheck disable=SC2046
cc -std=c11 -O2 -g -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wconversion -Iinclude -Ishm -Isync \
	tests/numa_guest.c "$build/libshmsync_static.a" $(pkg-config --libs libxxhash liburing numa) -pthread \
	-o "$build/test_numa_guest" || exit 1

# ---- initramfs -------------------------------------------------------------

root=$cache/root
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,t,proc,sys,dev,tmp}

# Copies a program and every library ldd lists, each to the same absolute
# path (so an RPATH into the build tree still resolves).
install_prog() {
	local prog=$1 dest=$2 lib
	cp -L "$prog" "$root/$dest"
	for lib in $(ldd "$prog" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
		# Also where LD_LIBRARY_PATH points in the guest: a build tree
		# under /tmp is hidden there by the tmpfs the guest mounts.
		[ -e "$root/lib/shmsync/$(basename "$lib")" ] ||
			{ mkdir -p "$root/lib/shmsync" && cp -L "$lib" "$root/lib/shmsync/"; }
		[ -e "$root$lib" ] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}
install_prog "$busybox" bin/busybox
install_prog "$build/test_numa_guest" t/test_numa_guest
for t in "${sync_tests[@]}"; do
	install_prog "$build/tests/$t" "t/$t"
done
install_prog "$build/tools/shmsync" t/shmsync

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null # the kernel may have mounted it already
mount -t tmpfs tmpfs /tmp
exec </dev/null >/dev/console 2>&1
export PATH=/t:/bin:/sbin:/usr/bin:/usr/sbin HOME=/tmp TMPDIR=/tmp LD_LIBRARY_PATH=/lib/shmsync
echo "GUEST: kernel $(uname -r), nodes $(cat /sys/devices/system/node/online), CPUs $(nproc)"
passed=0
failed=0
# check NAME SECONDS COMMAND...: one PASS/FAIL line per program.
check() {
	name=$1 limit=$2
	shift 2
	t0=$(date +%s)
	timeout "$limit" "$@"
	rc=$?
	dt=$(($(date +%s) - t0))
	if [ $rc -eq 0 ]; then
		echo "GUEST PASS $name (${dt} s)"
		passed=$((passed + 1))
	else
		echo "GUEST FAIL $name (exit $rc after ${dt} s)"
		failed=$((failed + 1))
	fi
}
check numa_guest 60 test_numa_guest
check sync_basic 120 test_sync_basic
check sync_hostile 120 test_sync_hostile
check sync_converge 120 test_sync_converge
check shmsync_demo 60 shmsync demo --seconds 2 --workers 2
if [ $failed -eq 0 ]; then
	echo "GUEST RESULT: PASS ($passed checks)"
else
	echo "GUEST RESULT: FAIL ($failed of $((passed + failed)) checks failed)"
fi
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null | gzip -1) >"$cache/initramfs.gz" ||
	exit 1
say "initramfs $(du -h "$cache/initramfs.gz" | cut -f1), setup took $((SECONDS - started)) s"

# ---- boot ------------------------------------------------------------------

log=$cache/console.log
booted=$SECONDS
# -nic none: no network, so no iPXE ROM to wait for. panic=-1 and
# -no-reboot: a guest that panics or whose init dies ends QEMU at once.
timeout -k 5 "$guest_limit" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 \
	-object memory-backend-ram,id=m0,size=1024M -object memory-backend-ram,id=m1,size=1024M \
	-numa node,nodeid=0,cpus=0,memdev=m0 -numa node,nodeid=1,cpus=1,memdev=m1 \
	-kernel "$kernel" -initrd "$cache/initramfs.gz" -append 'console=ttyS0 panic=-1 quiet' \
	-nographic -nic none -no-reboot </dev/null 2>&1 | tr -d '\r' | tee "$log"
qemu_rc=${PIPESTATUS[0]}
guest_s=$((SECONDS - booted))

echo
say "---- summary (guest ${guest_s} s, total $((SECONDS - started)) s) ----"
grep -E '^(GUEST|CHECK )' "$log" | grep -vE '^GUEST RESULT'
if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
	say "FAIL: the guest ran past ${guest_limit} s (NUMA_GUEST_TIMEOUT)"
	exit 1
fi
if grep -q '^GUEST RESULT: PASS' "$log" && ! grep -qE '^(GUEST FAIL|CHECK [^:]*: FAIL)' "$log"; then
	say "PASS"
	exit 0
fi
say "FAIL (console log: $log)"
exit 1
