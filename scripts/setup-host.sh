#!/usr/bin/env bash
# Installs what the host needs from Debian's packages and npm.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Host packages:
#   seabios        BIOS for the emu engine (v86)
#   redis-tools    redis-cli / redis-benchmark for the client namespace
#   iproute2       ip netns / link / bridge for the lab
#   e2fsprogs      mkfs.ext4 for the guest's data disk
#   cpio           GNU cpio: a unit test lists our initrd archive with it
#   qemu-system-x86  the qemu engine's device model (qemu-system-x86_64, QEMU 7.2)
#   qemu-utils     qemu-img / qemu-io / qemu-nbd: real NBD clients for the NBD server's tests
#   xz-utils       xz: unpacks the amd64 kernel's payload into the vmlinux QEMU boots (PVH)
#   nftables       packet loss on the replication link (fault-injection suite)
#   chromium       headless browser for the test of colo serve's status page (test/tools/browser.ts)
#   curl           the README's look at colo serve's /metrics
#   etcd-server    etcd 3.4: the tests of --arbiter etcd:// run a 3-member cluster of their own
#                  in a network namespace (src/api/etcd-arbiter.test.ts); the package's own
#                  service (started under systemd, on localhost:2379) is not used
#   gcc, libc6-dev builds the qemu engine's LD_PRELOAD piece for the kernel's write log of
#                  guest RAM (src/engine/qemu/write-log-preload.c, scripts/build-native.mjs)
#   dpkg, apt      apt-get download + dpkg-deb -x for the guest image (i386)
HOST_PKGS=(seabios redis-tools iproute2 e2fsprogs ca-certificates nftables cpio qemu-system-x86 qemu-utils xz-utils chromium curl etcd-server gcc libc6-dev)

need_update=0
if ! dpkg --print-foreign-architectures | grep -qx i386; then
  echo "setup: adding the i386 architecture (the guest is 32-bit x86)"
  dpkg --add-architecture i386
  need_update=1
fi
missing=()
for p in "${HOST_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The i386 package lists must exist for the guest image builder.
if ! ls /var/lib/apt/lists/*i386_Packages* >/dev/null 2>&1; then need_update=1; fi
if [ "${#missing[@]}" -gt 0 ] || [ "$need_update" = 1 ]; then
  echo "setup: apt-get update"
  # A mirror mid-sync can fail one index (seen: bookworm-security i386);
  # retry once, then go on with the lists we have: the install below fails
  # clearly if a package we need is really unavailable.
  if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq; then
    echo "setup: apt-get update reported errors; retrying once" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || echo "setup: warning: apt-get update still reports errors; continuing with the package lists present" >&2
  fi
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "setup: npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "setup: build"
npm run --silent build
