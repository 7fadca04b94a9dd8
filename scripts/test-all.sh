#!/usr/bin/env bash
# Runs Trellis's whole test suite on a fresh Debian machine: installs what the
# tests need (libiscsi's tools; fio built with libiscsi; the Linux host image
# for QEMU), builds trellisd, runs
# every unit and integration test with cargo-nextest (cargo test where nextest
# is missing), and runs each criterion benchmark once.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'test-all: %s\n' "$*" >&2; }

as_root() {
    if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

need=()
command -v iscsi-test-cu >/dev/null || need+=(libiscsi-bin)
command -v ip >/dev/null || need+=(iproute2)
# mkfs.xfs: the WRITE ATOMIC test mounts an XFS (reflink) image on a loop device.
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# fio with the libiscsi engine (Debian's fio lacks it): cached after the first build.
export FIO_DIR="${FIO_DIR:-$HOME/.cache/trellis/fio}"
benches/fio/build-fio.sh
export FIO="$FIO_DIR/fio"

# The real Linux host (tests/tests/linux_host.rs): a Debian kernel and
# initramfs for QEMU, cached like fio (it installs qemu-system-x86 too).
log "the Linux host image (tests/host/build-image.sh, cached)"
tests/host/build-image.sh >/dev/null

log "building trellisd (the integration tests drive the real binary)"
cargo build -p trellisd -p trellis-cli

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi

log "criterion benchmarks, one iteration each"
cargo bench -p trellis-benches -- --test
