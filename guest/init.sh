#!/bin/sh
# /init of the colo guest (busybox ash, PID 1). Copied into the initrd by
# guest/build.ts; the host-side contract (command-line keys, console
# markers) is guest/contract.ts, the user documentation docs/guest.md.
#
# Kernel command line keys:
#   colo.ip=A.B.C.D/NN      address of eth0 (no address when absent)
#   colo.gw=A.B.C.D         default gateway (optional)
#   colo.hostname=NAME      host name (default colo-guest)
#   colo.appendfsync=MODE   always | everysec (default) | no, with a data disk
#   colo.memtest=SIZE       memory-integrity mode: once Redis is ready, run
#                           `memtester SIZE 1` in the background, over and
#                           over (nice 19, oom_score_adj 1000). SIZE is 1-6
#                           digits then K or M, 4K to 64M (e.g. 16M)
# Console markers (one line each):
#   COLO-GUEST-READY redis       Redis answers PING
#   COLO-GUEST-FAILED <reason>   the network, the data disk or Redis failed,
#                                or a colo.* value is invalid
#   COLO-MEMTEST-PASS <n>        memtester pass n (from 1) exited 0 (each
#                                COLO-MEMTEST line comes after an empty line)
#   COLO-MEMTEST-FAIL <n> <rc>   pass n exited rc (memtester(8): OR of 1 = could
#                                not start, 2 = stuck address, 4 = other test;
#                                >128 = killed by signal rc-128), then up to 8
#                                lines "memtester <n>: <line>", the end of its
#                                output. Passes go on after a test failure (rc
#                                2, 4 or 6) and stop after any other status.
# Quiet on purpose: every line crosses an emulated UART.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
umask 022

# The initrd holds busybox and /bin/sh only: the image build reads guest
# files and never runs them, so the applet links are made here, at boot
# (each at its configured path; existing files are left alone).
/bin/busybox --install -s

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp

FAILED=
fail() {
	echo "COLO-GUEST-FAILED $*"
	FAILED=1
}

# Loads one module set (/etc/colo/modules/<set>: names in load order, the
# closure of its dependencies computed by the build). Sets may share a
# dependency: a module already loaded (/sys/module/<name>) is skipped. A set
# the image has no file for (ne2k in the x86-64 image) is skipped too: each
# image carries the sets of its engine's devices.
load_modules() {
	[ -f "/etc/colo/modules/$1" ] || return 0
	while read -r m; do
		[ -n "$m" ] || continue
		[ -d "/sys/module/$m" ] && continue
		if ! insmod "/lib/modules/$m.ko" 2>/tmp/insmod.err; then
			fail "insmod $m: $(tr "\n" " " </tmp/insmod.err)"
			return 1
		fi
	done <"/etc/colo/modules/$1"
}

# memtest_kib SIZE: prints SIZE in KiB when it is 1-6 digits without a leading
# zero, then K or M, from 4K to 64M; fails otherwise. guest/contract.ts
# (parseMemtestSize) applies the same rule on the host.
memtest_kib() {
	num=${1%[KM]}
	case "$num" in
	"" | 0* | *[!0-9]*) return 1 ;;
	esac
	[ ${#num} -le 6 ] || return 1
	case "${1#"$num"}" in
	K) kib=$num ;;
	M) kib=$((num * 1024)) ;;
	*) return 1 ;;
	esac
	[ "$kib" -ge 4 ] && [ "$kib" -le 65536 ] || return 1
	echo "$kib"
}

# memtest_loop SIZE: `memtester SIZE 1` forever, one console line per pass.
# Run in the background: at nice 19 so Redis keeps the CPU it needs, with
# oom_score_adj 1000 so memory pressure kills memtester (a FAIL line), not
# Redis. Both are inherited by memtester. Its log is in /tmp/memtest.log.
memtest_loop() {
	read -r self _ </proc/self/stat # this subshell's pid ($$ is init's)
	renice -n 19 -p "$self" >/dev/null 2>&1
	echo 1000 >/proc/self/oom_score_adj
	bs=$(printf '\b')
	n=0
	while :; do
		n=$((n + 1))
		memtester "$1" 1 </dev/null >/tmp/memtest.log 2>&1
		rc=$?
		# Each report starts with a newline: the console shell's prompt (or
		# whatever was typed) may be on the line, and a marker counts only at
		# the start of a line.
		if [ $rc -eq 0 ]; then
			printf '\n%s\n' "COLO-MEMTEST-PASS $n"
			continue
		fi
		# memtester redraws its progress with backspaces: keep what a terminal would show
		log=$(sed "s/$bs.*$bs//; s/$bs//g" /tmp/memtest.log | grep -v '^ *$' | tail -n 8 | sed "s/^/memtester $n: /")
		if [ -n "$log" ]; then
			printf '\n%s\n%s\n' "COLO-MEMTEST-FAIL $n $rc" "$log"
		else
			printf '\n%s\n' "COLO-MEMTEST-FAIL $n $rc"
		fi
		# a test found bad memory: test again; anything else would only repeat itself
		[ $rc -le 7 ] && [ $((rc & 6)) -ne 0 ] || return 1
	done
}

# data_disk: prints the data disk's device node, the first of /dev/sda (IDE
# through libata: the emu engine's hda) and /dev/vda (virtio-blk: the qemu
# engine's) that the kernel found (/sys/block/<name>), once the node is a
# block device (at most 5 s; printed anyway then, so mount says what is
# wrong); prints nothing and fails when there is no disk.
data_disk() {
	for dev in /dev/sda /dev/vda; do
		[ -e "/sys/block/${dev##*/}" ] || continue
		i=0
		while [ ! -b "$dev" ] && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		echo "$dev"
		return 0
	done
	return 1
}

# has_pci VENDOR [DEVICE]: is such a PCI function present?
has_pci() {
	for d in /sys/bus/pci/devices/*; do
		[ -r "$d/vendor" ] || continue
		[ "$(cat "$d/vendor")" = "$1" ] || continue
		[ -z "$2" ] || [ "$(cat "$d/device")" = "$2" ] || continue
		return 0
	done
	return 1
}

ip_cidr=
gateway=
host=colo-guest
appendfsync=everysec
memtest=
memtest_on=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	colo.ip=*) ip_cidr=${arg#colo.ip=} ;;
	colo.gw=*) gateway=${arg#colo.gw=} ;;
	colo.hostname=*) host=${arg#colo.hostname=} ;;
	colo.appendfsync=*) appendfsync=${arg#colo.appendfsync=} ;;
	colo.memtest=*)
		memtest=${arg#colo.memtest=}
		memtest_on=1
		;;
	esac
done
case "$appendfsync" in
always | everysec | no) ;;
*) fail "colo.appendfsync=$appendfsync is not always, everysec or no" ;;
esac
if [ -n "$memtest_on" ] && ! memtest_kib "$memtest" >/dev/null; then
	fail "colo.memtest=$memtest is not a size from 4K to 64M (1-6 digits, then K or M)"
fi

hostname "$host"
echo 1 >/proc/sys/vm/overcommit_memory # Redis forks for AOF rewrites

# --- network: virtio-net (vendor 0x1af4) or NE2000 PCI (10ec:8029) ---
has_pci 0x1af4 && load_modules virtio-net
has_pci 0x10ec 0x8029 && load_modules ne2k
ip link set lo up
if [ -n "$ip_cidr" ]; then
	if ! ip link show eth0 >/dev/null 2>&1; then
		fail "network: no eth0 for colo.ip=$ip_cidr"
	elif ! ip addr add "$ip_cidr" dev eth0 2>/tmp/ip.err || ! ip link set eth0 up 2>>/tmp/ip.err; then
		fail "network: eth0 $ip_cidr: $(tr "\n" " " </tmp/ip.err)"
	elif [ -n "$gateway" ] && ! ip route add default via "$gateway" 2>/tmp/ip.err; then
		fail "network: gateway $gateway: $(tr "\n" " " </tmp/ip.err)"
	fi
elif ip link show eth0 >/dev/null 2>&1; then
	ip link set eth0 up
fi

# --- data disk: /dev/sda (emu, IDE hda) or /dev/vda (qemu, virtio-blk); Redis keeps its AOF there ---
redis_dir=/tmp
redis_persist="--appendonly no"
load_modules disk
if disk=$(data_disk); then
	if mount -t ext4 -o noatime "$disk" /data 2>/tmp/mount.err; then
		redis_dir=/data
		redis_persist="--appendonly yes --appendfsync $appendfsync"
	else
		fail "disk: mount $disk on /data: $(tr "\n" " " </tmp/mount.err)"
	fi
fi

# --- Redis ---
if [ -z "$FAILED" ]; then
	# shellcheck disable=SC2086 # redis_persist is a list of arguments
	if ! redis-server --bind 0.0.0.0 --port 6379 --protected-mode no --enable-debug-command yes \
		--daemonize yes --logfile /tmp/redis.log --dir "$redis_dir" --save "" $redis_persist \
		>/tmp/redis.out 2>&1; then
		fail "redis: redis-server did not start: $(tail -n 3 /tmp/redis.out /tmp/redis.log 2>/dev/null | tr '\n' ' ')"
	else
		i=0
		pong=
		while [ $i -lt 120 ]; do
			pong=$(redis-cli ping 2>/dev/null)
			[ "$pong" = PONG ] && break
			sleep 0.5
			i=$((i + 1))
		done
		if [ "$pong" = PONG ]; then
			echo "COLO-GUEST-READY redis"
			# after the marker: memtester's load must not slow the boot or Redis's start
			if [ -n "$memtest_on" ]; then
				memtest_loop "$memtest" &
			fi
		else
			fail "redis: no PONG within 60 s: $(tail -n 3 /tmp/redis.log 2>/dev/null | tr '\n' ' ')"
		fi
	fi
fi

# --- console shell, respawned forever (PID 1 must never exit) ---
export PS1='colo-guest# '
cd /
while :; do
	setsid cttyhack sh
	sleep 1
done
