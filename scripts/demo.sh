#!/usr/bin/env bash
# README command 1: set up the host, build the guest image, bring up the lab,
# boot the guest on host 1, run redis-benchmark from the client namespace
# against it, print the result, and clean up (VM and lab).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
./bin/colo image build

work="$(mktemp -d /tmp/colo-demo.XXXXXX)"
export COLO_RUN_DIR="$work/run"
cleanup() {
  ip netns exec colo-h1 ./bin/colo destroy demo >/dev/null 2>&1 || true
  ./bin/colo lab down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

./bin/colo lab up
./bin/colo disk-create "$work/data.img" --size 64 >/dev/null
cat > "$work/demo.cfg" <<CFG
name = "demo"
memory = 160
kernel = "$PWD/.cache/guest/vmlinuz"
ramdisk = "$PWD/.cache/guest/initrd.img"
extra = "console=ttyS0 quiet"
disk = [ 'format=raw, vdev=hda, access=rw, target=$work/data.img' ]
vif = [ 'mac=00:16:3e:4c:00:10, bridge=colobr, ip=10.77.0.10/24' ]
CFG

echo "demo: booting the guest on host colo-h1 (20-60 s under emulation)"
ip netns exec colo-h1 ./bin/colo create "$work/demo.cfg"
ip netns exec colo-h1 ./bin/colo list
echo "demo: redis-benchmark from colo-client -> 10.77.0.10"
for c in 1 16; do
  echo "  $c client(s), 2000 requests each:"
  # -q prints progress lines ending in \r; keep the final figure per test.
  ip netns exec colo-client redis-benchmark -h 10.77.0.10 -t set,get -n 2000 -c "$c" -q \
    | tr '\r' '\n' | grep 'requests per second' | sed 's/^ */    /'
done
echo "  keys in the guest: $(ip netns exec colo-client redis-cli -h 10.77.0.10 DBSIZE)"
echo "demo: done"
