# Sourced by scripts/vm/run: makes sure QEMU, busybox and Debian's 6.12 kernel are present
# and builds (once per init.sh/setup.sh/kernel combination) the initramfs the guest boots.
# Everything lands in VM_CACHE; setup runs under an flock so concurrent runs are safe.

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_CACHE=${VDISK_VM_CACHE:-${HOME:-/root}/.cache/vdisk/vm}
VM_KPKG_META=linux-image-6.12-amd64
# Modules the guest init loads (their dependencies are added automatically). The guest has
# no modprobe, so everything a test needs must be here: ext4 for the scratch disk, loop for
# comparisons, crc32c which ext4 asks the crypto API for, dm_mod for tests that stall I/O (dmsetup suspend),
# dm_flakey and dm_delay for containers that fail writes or answer slowly, dm_thin_pool for the bench's dm-thin
# rows (npm run bench); veth, bridge, nbd and sch_netem for the multi-host topology (src/bench/netns.ts:
# namespaces on a bridge, NBD over the veths, netem to drop a host's packets). "Early" ones are needed to build
# the root; the others load in the background meanwhile.
VM_MODULES_EARLY="9p 9pnet_virtio overlay ublk_drv"
VM_MODULES_LATE="loop virtio_blk ext4 crc32c_generic dm_mod dm_flakey dm_delay dm_thin_pool veth bridge nbd sch_netem"
# Bump when the layout of the unpacked kernel dir changes.
VM_KERNEL_STAMP="v2 $VM_MODULES_EARLY / $VM_MODULES_LATE"

vm_die() { echo "vm: $*" >&2; exit 125; }

# Only busybox-static will do: the initramfs has no libc for a dynamic busybox, and both
# packages install the same /bin/busybox.
vm_busybox() {
	dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || return 1
	echo /bin/busybox
}

vm_missing_pkgs() {
	local m=()
	command -v qemu-system-x86_64 >/dev/null || m+=(qemu-system-x86)
	vm_busybox >/dev/null || m+=(busybox-static)
	command -v cpio >/dev/null || m+=(cpio)
	command -v xz >/dev/null || m+=(xz-utils)
	command -v zstd >/dev/null || m+=(zstd)
	echo "${m[*]}"
}

vm_install_deps() {
	local missing; missing=$(vm_missing_pkgs)
	[ -z "$missing" ] && return 0
	[ "$(id -u)" = 0 ] || vm_die "missing packages; install them with: sudo apt-get install -y $missing"
	echo "vm: installing $missing" >&2
	apt-get update -qq >&2 || vm_die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2 || vm_die "apt-get install $missing failed"
	VM_DID+=("installed $missing")
}

# The newest kernel already unpacked in the cache (empty if none).
vm_cached_kernel() {
	local d
	d=$(ls -d "$VM_CACHE"/kernel-6.12.* 2>/dev/null | sort -V | tail -n1)
	[ -n "$d" ] && [ "$(cat "$d/stamp" 2>/dev/null)" = "$VM_KERNEL_STAMP" ] && echo "$d"
}

vm_kernel_pkg() {
	apt-cache depends "$VM_KPKG_META" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-6\.12[^ ]*\).*/\1/p' | head -n1
}

# A module's "depends=" list, from its .modinfo section.
vm_mod_deps() { tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | tr ',-' ' _'; }

# Drops the appended signature: checking it costs ~0.3 s of emulated CPU per boot, and
# without module.sig_enforce an unsigned module loads fine (it only taints the kernel).
vm_mod_unsign() {
	local f=$1 size siglen
	[ "$(tail -c 28 "$f")" = "~Module signature appended~" ] || return 0
	size=$(stat -c %s "$f")
	siglen=$(tail -c 32 "$f" | head -c 4 | od -An -tu1 | awk '{ print $1*16777216 + $2*65536 + $3*256 + $4 }')
	truncate -s $((size - 28 - 12 - siglen)) "$f"
}

# Decompresses the bzImage payload to the ELF vmlinux, which QEMU boots directly (PVH):
# saves the ~0.4 s the emulated CPU spends decompressing. Falls back to the bzImage.
vm_extract_vmlinux() {
	local bz=$1 dst=$2 setup off len
	setup=$(od -An -tu1 -j$((0x1f1)) -N1 "$bz")
	off=$(od -An -tu4 -j$((0x248)) -N4 "$bz")
	len=$(od -An -tu4 -j$((0x24c)) -N4 "$bz")
	# The payload ends with its 4-byte decompressed size, which zstd does not expect.
	if tail -c +$(((setup + 1) * 512 + off + 1)) "$bz" | head -c $((len - 4)) | zstd -qdc >"$dst" 2>/dev/null &&
		[ "$(head -c 4 "$dst")" = $'\x7fELF' ]; then
		return 0
	fi
	cp "$bz" "$dst"
}

vm_fetch_kernel() {
	local tmp pkg deb kver mdir out m order=() seen=" "
	# Inside the cache, under the lock: a run that died half-way leaves nothing elsewhere.
	tmp="$VM_CACHE/fetch.tmp"
	rm -rf "$tmp" && mkdir "$tmp" || vm_die "cannot write $VM_CACHE"
	pkg=$(vm_kernel_pkg)
	if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then apt-get update -qq >&2; pkg=$(vm_kernel_pkg); fi
	[ -n "$pkg" ] || vm_die "apt knows no $VM_KPKG_META (is bookworm-security in the apt sources?)"
	(cd "$tmp" && apt-get download "$pkg" >/dev/null 2>"$tmp/apt.err") || { cat "$tmp/apt.err" >&2; vm_die "apt-get download $pkg failed"; }
	deb=$(ls "$tmp"/*.deb)
	dpkg-deb -x "$deb" "$tmp/x" || vm_die "dpkg-deb -x $deb failed"
	kver=$(ls "$tmp/x/lib/modules")
	mdir="$tmp/x/lib/modules/$kver"
	out="$VM_CACHE/kernel-$kver"
	rm -rf "$out.new" && mkdir -p "$out.new/modules" || vm_die "cannot write $VM_CACHE"
	vm_extract_vmlinux "$tmp/x/boot/vmlinuz-$kver" "$out.new/vmlinux"
	cp "$tmp/x/boot/config-$kver" "$out.new/config"
	# The package has no modules.dep (depmod runs at install time): the order comes from
	# each module's own depends= field, dependencies first.
	vm_add_mod() {
		local name=$1 f d
		case "$seen" in *" $name "*) return;; esac
		seen+="$name "
		f=$(find "$mdir/kernel" \( -name "$name.ko*" -o -name "${name//_/-}.ko*" \) | head -n1)
		if [ -z "$f" ]; then
			grep -qE "/${name//_/[-_]}\.ko\$" "$mdir/modules.builtin" && return
			vm_die "module $name is in neither $pkg nor its builtin list"
		fi
		case "$f" in
			*.xz) xz -dc "$f";;
			*.zst) zstd -qdc "$f";;
			*) cat "$f";;
		esac >"$out.new/modules/$name.ko" || vm_die "cannot decompress $f"
		vm_mod_unsign "$out.new/modules/$name.ko"
		for d in $(vm_mod_deps "$out.new/modules/$name.ko"); do vm_add_mod "$d"; done
		order+=("$name")
		echo "$name: $(vm_mod_deps "$out.new/modules/$name.ko")" >>"$out.new/modules.dep"
	}
	for m in $VM_MODULES_EARLY; do vm_add_mod "$m"; done
	printf '%s\n' "${order[@]}" >"$out.new/modules.early"
	order=()
	for m in $VM_MODULES_LATE; do vm_add_mod "$m"; done
	printf '%s\n' "${order[@]}" >"$out.new/modules.late"
	echo "$pkg $(dpkg-deb -f "$deb" Version)" >"$out.new/package"
	echo "$VM_KERNEL_STAMP" >"$out.new/stamp"
	rm -rf "$out" && mv "$out.new" "$out" && rm -rf "$tmp"
	VM_DID+=("unpacked $pkg ($kver) into $out")
}

# Key of the initramfs: anything that changes its content or the guest's behaviour.
vm_initrd_key() {
	cat "$VM_DIR/init.sh" "$VM_DIR/setup.sh" "$1/package" | sha256sum | cut -c1-16
}

vm_build_initrd() {
	local kdir=$1 dst=$2 st bb a
	st=$(mktemp -d) || vm_die "mktemp failed"
	bb=$(vm_busybox) || vm_die "no static busybox"
	mkdir -p "$st"/{bin,dev,proc,sys,mnt/run,lower,rw,newroot,lib/modules}
	cp "$bb" "$st/bin/busybox"
	for a in $("$bb" --list); do [ "$a" = busybox ] || ln -s busybox "$st/bin/$a"; done
	cp "$kdir"/modules/*.ko "$kdir/modules.early" "$kdir/modules.late" "$st/lib/modules/"
	cp "$VM_DIR/init.sh" "$st/init" && chmod 755 "$st/init"
	(cd "$st" && find . | cpio -o -H newc --quiet | gzip -1) >"$dst.tmp" || vm_die "cpio failed"
	mv "$dst.tmp" "$dst" && rm -rf "$st"
	VM_DID+=("built $dst")
}

# Sets VM_KERNEL_DIR and VM_INITRD; cheap when everything is cached already.
vm_ready() {
	VM_KERNEL_DIR=$(vm_cached_kernel)
	[ -n "$VM_KERNEL_DIR" ] || return 1
	VM_INITRD="$VM_CACHE/initrd-$(vm_initrd_key "$VM_KERNEL_DIR").cpio.gz"
	[ -f "$VM_INITRD" ] && [ -z "$(vm_missing_pkgs)" ]
}

vm_setup() {
	VM_DID=()
	vm_ready && return 0
	mkdir -p "$VM_CACHE" || vm_die "cannot create $VM_CACHE"
	exec 9>"$VM_CACHE/.lock"
	flock 9
	vm_install_deps
	[ -n "$(vm_cached_kernel)" ] || vm_fetch_kernel
	VM_KERNEL_DIR=$(vm_cached_kernel)
	[ -n "$VM_KERNEL_DIR" ] || vm_die "no usable kernel in $VM_CACHE after unpacking"
	if ! vm_ready; then
		vm_build_initrd "$VM_KERNEL_DIR" "$VM_INITRD"
		# Builds for an older init.sh or kernel are never used again.
		find "$VM_CACHE" -maxdepth 1 -name 'initrd-*.cpio.gz' ! -path "$VM_INITRD" -delete
	fi
	# Kernels replaced by a newer package or an older layout.
	find "$VM_CACHE" -maxdepth 1 -name 'kernel-*' ! -path "$VM_KERNEL_DIR" -exec rm -rf {} +
	flock -u 9
	exec 9>&-
	vm_ready || vm_die "setup finished but the cache in $VM_CACHE is incomplete"
}
