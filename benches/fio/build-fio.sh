#!/usr/bin/env bash
# Build a fio binary with the libiscsi engine (Debian's packaged fio lacks it).
#
# Result: ${FIO_DIR:-$HOME/.cache/trellis/fio}/fio
#
# Idempotent: if that binary exists and `fio --enghelp` lists libiscsi, this
# does nothing. Otherwise it
#   1. adds a deb-src entry for bookworm main (a separate file,
#      /etc/apt/sources.list.d/trellis-deb-src.sources; the system sources
#      are left untouched) when no deb-src entry exists yet,
#   2. apt-get update, installs the build dependencies,
#   3. apt-get source fio into ${FIO_DIR}/src,
#   4. ./configure --enable-libiscsi && make -j"$JOBS" fio,
#   5. copies the binary to ${FIO_DIR}/fio.
#
# Needs root (apt). Only Debian's package archive is contacted.
#
# Environment:
#   FIO_DIR   cache directory            (default: $HOME/.cache/trellis/fio)
#   JOBS      make parallelism           (default: 2)
#   FORCE=1   rebuild even if a good binary is cached
set -euo pipefail

FIO_DIR="${FIO_DIR:-$HOME/.cache/trellis/fio}"
JOBS="${JOBS:-2}"
FORCE="${FORCE:-0}"
FIO_BIN="$FIO_DIR/fio"
SRC_LIST=/etc/apt/sources.list.d/trellis-deb-src.sources

log() { printf 'build-fio: %s\n' "$*" >&2; }
die() { printf 'build-fio: error: %s\n' "$*" >&2; exit 1; }

has_libiscsi() {
    [[ -x "$1" ]] && "$1" --enghelp 2>/dev/null | grep -qw libiscsi
}

if [[ "$FORCE" != 1 ]] && has_libiscsi "$FIO_BIN"; then
    log "cached fio with libiscsi engine present: $FIO_BIN ($("$FIO_BIN" --version))"
    exit 0
fi

[[ "$(id -u)" -eq 0 ]] || die "must run as root (apt-get is needed); re-run with root privileges"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian only"

# --- 1. deb-src entry ------------------------------------------------------
have_deb_src() {
    local f
    # deb822 files: a "Types:" line that contains deb-src
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -e "$f" ]] || continue
        grep -Eq '^[[:space:]]*Types:.*\bdeb-src\b' "$f" && return 0
    done
    # one-line format
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -e "$f" ]] || continue
        grep -Eq '^[[:space:]]*deb-src[[:space:]]' "$f" && return 0
    done
    return 1
}

codename=bookworm
if [[ -r /etc/os-release ]]; then
    # shellcheck disable=SC1091
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
fi

if have_deb_src; then
    log "a deb-src entry already exists; not adding one"
else
    log "adding deb-src entry for $codename main: $SRC_LIST"
    cat >"$SRC_LIST" <<EOF
# Added by trellis benches/fio/build-fio.sh to allow 'apt-get source fio'.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi

# --- 2. update + build deps --------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
apt-get update -q >/dev/null || die "apt-get update failed"

deps=(build-essential pkg-config dpkg-dev libiscsi-dev zlib1g-dev libaio-dev)
if apt-cache show liburing-dev >/dev/null 2>&1; then
    deps+=(liburing-dev)
else
    log "liburing-dev not available from apt; fio will be built without io_uring"
fi
log "installing build deps: ${deps[*]}"
apt-get install -y -q --no-install-recommends "${deps[@]}" >/dev/null \
    || die "apt-get install of build deps failed: ${deps[*]}"

# --- 3. source -------------------------------------------------------------
src_root="$FIO_DIR/src"
mkdir -p "$src_root"
srcdir="$(find "$src_root" -mindepth 1 -maxdepth 1 -type d -name 'fio-*' | sort | tail -n1)"
if [[ -z "$srcdir" || ! -f "$srcdir/configure" ]]; then
    log "apt-get source fio -> $src_root"
    (cd "$src_root" && apt-get source -q fio >/dev/null) \
        || die "apt-get source fio failed (is the deb-src entry in $SRC_LIST valid?)"
    srcdir="$(find "$src_root" -mindepth 1 -maxdepth 1 -type d -name 'fio-*' | sort | tail -n1)"
    [[ -n "$srcdir" && -f "$srcdir/configure" ]] || die "fio source tree not found under $src_root"
else
    log "reusing fio source tree $srcdir"
fi

# --- 4. build --------------------------------------------------------------
cd "$srcdir"
log "configure --enable-libiscsi in $srcdir"
./configure --enable-libiscsi >"$FIO_DIR/configure.log" 2>&1 \
    || die "configure failed; see $FIO_DIR/configure.log"
grep -q '^CONFIG_LIBISCSI=y' config-host.mak \
    || die "configure did not enable libiscsi (is libiscsi-dev >= 1.9.0 installed?); see $FIO_DIR/configure.log"
log "make -j$JOBS fio (takes a few minutes)"
make -j"$JOBS" fio >"$FIO_DIR/make.log" 2>&1 || die "make failed; see $FIO_DIR/make.log"

install -m 0755 fio "$FIO_BIN.new"
mv -f "$FIO_BIN.new" "$FIO_BIN"
has_libiscsi "$FIO_BIN" || die "built $FIO_BIN but '--enghelp' does not list libiscsi"
"$FIO_BIN" --enghelp 2>/dev/null | grep -qw io_uring \
    || log "warning: this fio has no io_uring engine; the raw io_uring ceiling will be unavailable"
log "done: $FIO_BIN ($("$FIO_BIN" --version)) with libiscsi engine"
