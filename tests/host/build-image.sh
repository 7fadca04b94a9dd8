#!/usr/bin/env bash
# Builds the Linux host that tests/tests/linux_host.rs boots in QEMU: a
# Debian bookworm kernel (vmlinuz) and an initramfs made from Debian
# packages (open-iscsi, multipath-tools, sg3-utils, fio, udev, iproute2,
# busybox) whose /init is tests/host/init.
#
# Result (printed on stdout): a directory holding vmlinuz and initrd.img,
#   ${TRELLIS_HOST_CACHE:-$HOME/.cache/trellis/host}/image-KEY
# where KEY is a hash of this script and of init, so a change to either
# builds a new image. Idempotent: a cached image is reused at once.
#
# Needs root (debootstrap, apt-get) and Debian's package archive. Installs
# debootstrap, cpio and zstd on this machine when they are missing (and
# qemu-system-x86, which the test needs to boot the image).
#
# Environment:
#   TRELLIS_HOST_CACHE  cache directory (default $HOME/.cache/trellis/host)
#   DEBIAN_MIRROR       (default http://deb.debian.org/debian)
#   FORCE=1             rebuild even when the image is cached
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${TRELLIS_HOST_CACHE:-$HOME/.cache/trellis/host}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { printf 'build-image: error: %s\n' "$*" >&2; exit 1; }

key="$(cat "$here/build-image.sh" "$here/init" | sha256sum | cut -c1-16)"
out="$cache/image-$key"
if [[ "${FORCE:-0}" != 1 && -s "$out/vmlinuz" && -s "$out/initrd.img" && -e "$out/ok" ]]; then
    log "cached: $out"
    echo "$out"
    exit 0
fi

[[ "$(id -u)" == 0 ]] || die "must run as root (debootstrap)"
started=$SECONDS

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v cpio >/dev/null || need+=(cpio)
command -v zstd >/dev/null || need+=(zstd)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
log "apt-get update"
apt-get update -qq
if ((${#need[@]})); then
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$cache/debs"
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"

# fio's libraries without fio itself: the package depends on python3 for
# its helper scripts, which the host does not need. fio is unpacked below.
fio_libs=libnuma1,libaio1,zlib1g,libgfapi0,libnbd0,libibverbs1,librdmacm1,librados2,librbd1,libpmemblk1,libpmem1
pkgs=open-iscsi,multipath-tools,kpartx,sg3-utils,udev,kmod,iproute2,busybox,$fio_libs
log "debootstrap $suite (minbase + $pkgs)"
debootstrap --variant=minbase --cache-dir="$cache/debs" --include="$pkgs" \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

# The kernel and fio, unpacked from their packages (no maintainer scripts:
# the kernel's would build an initramfs of its own).
kpkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
[[ -n "$kpkg" ]] || die "no linux-image package found for linux-image-amd64"
kver="${kpkg#linux-image-}"
log "downloading $kpkg and fio"
(cd "$cache/debs" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg" fio)
# Unpacked inside the image's tree, for the image's own depmod and modprobe.
kroot="$root/kernel"
dpkg-deb -x "$(ls "$cache/debs/${kpkg}_"*.deb | tail -1)" "$kroot"
dpkg-deb -x "$(ls "$cache/debs/fio_"*.deb | tail -1)" "$work/fio"
cp "$work/fio/usr/bin/fio" "$root/usr/bin/fio"
missing="$(chroot "$root" ldd /usr/bin/fio | grep 'not found' || true)"
[[ -z "$missing" ]] || die "fio misses libraries in the image: $missing"

# Only the modules the host needs, with what they depend on.
chroot "$root" depmod -b /kernel "$kver"
mods=(virtio_pci virtio_net virtio_blk 9p 9pnet_virtio iscsi_tcp sd_mod sg
      dm_multipath dm_round_robin dm_service_time dm_queue_length scsi_dh_alua
      crc32c_generic af_packet)
mdir="lib/modules/$kver"
mkdir -p "$root/$mdir"
for m in "${mods[@]}"; do
    chroot "$root" modprobe -d /kernel -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | sort -u | while read -r ko; do
    rel="${ko#/kernel/}"
    mkdir -p "$root/$(dirname "$rel")"
    cp "$kroot/$rel" "$root/$rel"
done
cp "$kroot/$mdir/modules.order" "$kroot/$mdir/modules.builtin"* "$root/$mdir/"
cp "$kroot/boot/vmlinuz-$kver" "$work/vmlinuz"
rm -rf "$kroot"
chroot "$root" depmod "$kver"

# Small: no documentation, locales, package lists or caches.
rm -rf "$root"/usr/share/{doc,man,info,locale,i18n,lintian,bash-completion,common-licenses,zsh} \
    "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old \
    "$root"/var/log/* "$root"/usr/lib/python3* "$root"/usr/bin/python3*
echo trellis-host >"$root/etc/hostname"
install -m 0755 "$here/init" "$root/init"

log "packing the initramfs ($(du -sh "$root" | cut -f1) unpacked)"
mkdir -p "$work/out"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | zstd -q -T0 -10 >"$work/out/initrd.img"
mv "$work/vmlinuz" "$work/out/vmlinuz"
{
    echo "kernel $kpkg"
    chroot "$root" dpkg-query -W open-iscsi multipath-tools sg3-utils udev
    echo "fio $(chroot "$root" fio --version)"
} >"$work/out/versions"
touch "$work/out/ok"
rm -rf "$out"
mv "$work/out" "$out"
# Older images (another key) are left for whoever still uses them, but
# only the newest three are kept.
ls -1dt "$cache"/image-* 2>/dev/null | tail -n +4 | xargs -r rm -rf
log "built $out in $((SECONDS - started)) s: initrd $(du -h "$out/initrd.img" | cut -f1)"
echo "$out"
