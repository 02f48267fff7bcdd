#!/bin/sh
# The quick-start demo, run where ublk exists (scripts/demo.mjs starts it natively or in the VM): serve a
# file as /dev/ublkbN with `vdisk loop`, put ext4 on it, write, stop; serve it again and read the data back.
set -eu
cd "$(dirname "$0")/.."
vdisk() { node dist/cli/main.js "$@"; }
dir=${VDISK_TEST_DIR:-/tmp}/vdisk-demo
rm -rf "$dir" && mkdir -p "$dir/mnt"
img="$dir/disk.img"

serve() {
  rm -f "$dir/loop.json"  # else the wait below can read the previous run's line
  # node itself in the background (not the vdisk function): $! must be the pid that gets SIGTERM.
  node dist/cli/main.js loop "$img" --json > "$dir/loop.json" &
  pid=$!
  i=0
  while [ ! -s "$dir/loop.json" ]; do
    i=$((i + 1)); [ $i -lt 600 ] || { echo "demo: vdisk loop did not start" >&2; exit 1; }
    kill -0 $pid 2>/dev/null || { echo "demo: vdisk loop failed" >&2; exit 1; }
    sleep 0.1
  done
  dev=$(sed 's/.*"device":"\([^"]*\)".*/\1/' "$dir/loop.json")
}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "vdisk features (what this kernel's ublk can do)"
vdisk features

step "create a 256 MiB backing file and serve it: vdisk loop $img"
truncate -s 256M "$img"
serve
echo "serving $img as $dev (vdisk pid $pid)"

step "mkfs.ext4 $dev, mount it, write some files"
mkfs.ext4 -q "$dev"
mount "$dev" "$dir/mnt"
echo "hello from a TypeScript block device" > "$dir/mnt/hello.txt"
dd if=/dev/urandom of="$dir/mnt/random.bin" bs=1M count=16 status=none
sum=$(sha256sum "$dir/mnt/random.bin" | cut -d' ' -f1)
df -h "$dir/mnt" | tail -1
umount "$dir/mnt"

step "stop the device (SIGTERM): it is deleted cleanly"
kill -TERM $pid && wait $pid
ls /dev/ublkb* 2>/dev/null || echo "no /dev/ublkb* left"

step "serve the same file again: the data is still there"
serve
mount -o ro "$dev" "$dir/mnt"
cat "$dir/mnt/hello.txt"
if [ "$(sha256sum "$dir/mnt/random.bin" | cut -d' ' -f1)" = "$sum" ]; then
  echo "random.bin: checksum matches ($sum)"
else
  echo "demo: random.bin came back different" >&2; exit 1
fi
umount "$dir/mnt"
kill -TERM $pid && wait $pid
rm -rf "$dir"
step "demo done"
