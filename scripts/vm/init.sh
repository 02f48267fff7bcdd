#!/bin/sh
# Guest PID 1 (busybox sh in the initramfs): loads the modules, builds a throw-away writable
# view of the host's root, runs the command the host left in the run dir inside it and
# reports the exit status back through the run dir. Silent unless something fails.

export PATH=/bin
# The initramfs has no /dev/console node, so stdio only exists once devtmpfs is mounted.
mount -t devtmpfs dev /dev
exec </dev/null >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys

OUT_PORT= ERR_PORT= RUN_OK=
# Failures go to the kernel console (kept on the host as a log) and to the host: through
# the run dir, whence it reports them, or else straight to the command's stderr port.
fail() {
	echo "vm-init: $*"
	if [ -n "$RUN_OK" ]; then
		echo "$*" >/mnt/run/error && echo 125 >/mnt/run/status
	elif [ -n "$ERR_PORT" ]; then
		echo "vm-init: $*" >"$ERR_PORT"
	fi
	poweroff -f
}

insmod_all() {
	while read -r m; do
		insmod "/lib/modules/$m.ko" || { echo "insmod $m failed" >"/insmod-$1.err"; return 1; }
	done <"/lib/modules/modules.$1"
}
insmod_all early || fail "$(cat /insmod-early.err)"
insmod_all late &
LATE_PID=$!

# virtio-serial announces its ports asynchronously; wait for them (names set by the host).
i=0
while [ -z "$OUT_PORT" ] || [ -z "$ERR_PORT" ]; do
	[ $i -lt 200 ] || fail "virtio-serial ports stdout/stderr not found"
	for p in /sys/class/virtio-ports/*; do
		case "$(cat "$p/name" 2>/dev/null)" in
			stdout) OUT_PORT=/dev/${p##*/};;
			stderr) ERR_PORT=/dev/${p##*/};;
		esac
	done
	[ -n "$OUT_PORT" ] && [ -n "$ERR_PORT" ] || usleep 10000
	i=$((i + 1))
done

mount -t 9p -o trans=virtio,version=9p2000.L vmrun /mnt/run || fail "cannot mount the run dir (9p)"
RUN_OK=1
. /mnt/run/vm.conf || fail "cannot read vm.conf"

# cache=loose: the host tree does not change while the guest runs (the guest's own /proc, /sys, /dev,
# /tmp and /run are mounted over it, and its writes go to the tmpfs upper layer), so caching lookups and
# attributes is safe, and it cuts a CLI call in the guest from ~2.4 s to ~1.7 s (cache=mmap before).
mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,msize=512000,ro hostroot /lower ||
	fail "cannot mount the host root (9p)"
mount -t tmpfs -o mode=0755 rw /rw && mkdir /rw/upper /rw/work &&
	mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work root /newroot ||
	fail "cannot mount the overlay root"

R=/newroot
# The fresh tmpfs on /tmp (and /run) would hide a working directory below it: keep it.
case "$VM_CWD" in
	/tmp/*|/run/*) mkdir /cwd && mount --bind "$R$VM_CWD" /cwd || fail "cannot bind $VM_CWD";;
esac
mount -t proc proc $R/proc && mount -t sysfs sys $R/sys && mount -t devtmpfs dev $R/dev &&
	mkdir -p $R/dev/pts $R/dev/shm && mount -t devpts -o ptmxmode=0666 devpts $R/dev/pts &&
	mount -t tmpfs -o mode=1777 shm $R/dev/shm && mount -t tmpfs -o mode=1777 tmp $R/tmp &&
	mount -t tmpfs -o mode=0755 run $R/run || fail "cannot mount the guest's /proc, /sys, /dev, /tmp or /run"
if [ -d /cwd ]; then
	mkdir -p "$R$VM_CWD" && mount --move /cwd "$R$VM_CWD" || fail "cannot restore $VM_CWD"
fi
if [ -n "$VM_OUT" ]; then
	mkdir -p "$R$VM_OUT" && mount -t 9p -o trans=virtio,version=9p2000.L vmout "$R$VM_OUT" ||
		fail "cannot mount the --out dir $VM_OUT (9p)"
fi
wait $LATE_PID || fail "$(cat /insmod-late.err)"
if [ -n "$VM_SCRATCH" ]; then [ -b "$VM_SCRATCH" ] || fail "scratch disk $VM_SCRATCH missing"; fi
[ -c /dev/ublk-control ] || fail "/dev/ublk-control missing after insmod ublk_drv"
hostname vdisk-vm
ip link set lo up
cp /mnt/run/cmd.sh $R/run/vm-cmd.sh || fail "cannot copy the command"

# The command writes into pipes, as under CI; relays copy them to the host. They ignore
# TERM so that ending the command's leftover processes below does not cut them short.
mkfifo /out /err
(trap '' TERM; exec cat </out >"$OUT_PORT") &
OUT_PID=$!
(trap '' TERM; exec cat </err >"$ERR_PORT") &
ERR_PID=$!
chroot $R /bin/sh /run/vm-cmd.sh >/out 2>/err
status=$?
# Daemons started by the command still hold the pipes open: end them so the relays see
# EOF, and do not let one that ignores TERM keep the guest alive.
kill -TERM -1 2>/dev/null
(sleep 2; kill -KILL -1) 2>/dev/null &
wait $OUT_PID $ERR_PID
[ -n "$VM_OUT" ] && sync -f "$R$VM_OUT"
echo $status >/mnt/run/status
poweroff -f
