#!/usr/bin/env bash
# Memory scaling: open N concurrent iSCSI sessions (fio numjobs=N, one
# libiscsi session each, 4 KiB random read at QD4) against a target and
# report its RSS. The target is restarted for every N so VmHWM is per N.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"

usage() {
    cat <<USAGE
Usage: $(basename "$0") [options]
  --target trellisd|tgt   target to measure                  [trellisd]
  --counts N,...          session counts                     [1,8,32,64]
  --runtime S             measured seconds per count         [10]
  --ramp S                warm-up seconds per count          [2]
  --quick                 runtime 5, ramp 1
  --trellisd PATH         trellisd binary                    [$REPO/target/release/trellisd]
  --trellisd-arg ARG      extra argument for trellisd (repeatable)
  --portal HOST:PORT      where trellisd serves iSCSI        [$TRELLISD_PORTAL]
  --data-dir DIR          trellisd --data-dir                [/var/tmp/trellis-bench]
  --backing FILE          backing file (tgt; created if missing) [<data-dir>/disk0.img]
  --results DIR           fio JSON and logs                  [/var/tmp/trellis-bench/results/sessions-<time>]
Environment: FIO, BACKING, DISK_SIZE, TRELLISD_IQN, TRELLISD_LUN, TGT_* as for run.sh.
USAGE
}

TARGET_NAME=trellisd
COUNTS=1,8,32,64
RUNTIME=10
RAMP=2
SIZE=1g
TRELLISD_BIN="$REPO/target/release/trellisd"
TRELLISD_ARGS=()
DATA_DIR=/var/tmp/trellis-bench
RESULTS_DIR=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --target) TARGET_NAME="${2:?--target needs trellisd or tgt}"; shift 2 ;;
        --counts) COUNTS="${2:?--counts needs a list}"; shift 2 ;;
        --runtime) RUNTIME="${2:?--runtime needs seconds}"; shift 2 ;;
        --ramp) RAMP="${2:?--ramp needs seconds}"; shift 2 ;;
        --quick) RUNTIME=5; RAMP=1; shift ;;
        --trellisd) TRELLISD_BIN="${2:?--trellisd needs a path}"; shift 2 ;;
        --trellisd-arg) TRELLISD_ARGS+=("${2:?--trellisd-arg needs a value}"); shift 2 ;;
        --portal) TRELLISD_PORTAL="${2:?--portal needs HOST:PORT}"; shift 2 ;;
        --data-dir) DATA_DIR="${2:?--data-dir needs a path}"; shift 2 ;;
        --backing) BACKING="${2:?--backing needs a path}"; shift 2 ;;
        --results) RESULTS_DIR="${2:?--results needs a path}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done
case "$TARGET_NAME" in trellisd | tgt) ;; *) die "--target must be trellisd or tgt" ;; esac

BACKING="${BACKING:-$DATA_DIR/disk0.img}"
DISK_SIZE="${DISK_SIZE:-1g}"
RESULTS_DIR="${RESULTS_DIR:-/var/tmp/trellis-bench/results/sessions-$(date +%Y%m%d-%H%M%S)}"
IFS=, read -ra COUNT_LIST <<<"$COUNTS"
for n in "${COUNT_LIST[@]}"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "bad session count '$n'"
done

need_fio
mkdir -p "$RESULTS_DIR"

FIO_PID=""
on_exit() {
    local rc=$?
    if [[ -n "$FIO_PID" ]]; then
        stop_group "$FIO_PID"
        wait "$FIO_PID" 2>/dev/null || true
    fi
    cleanup_targets
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_backing "$BACKING" "$DISK_SIZE"

start() {
    if [[ "$TARGET_NAME" == trellisd ]]; then
        start_trellisd "$TRELLISD_BIN" "$DATA_DIR" "$TRELLISD_PORTAL" \
            "$RESULTS_DIR/trellisd-$1.log" "${TRELLISD_ARGS[@]}"
        PORTAL="$TRELLISD_PORTAL"
        TARGET="$(iscsi_url "$TRELLISD_PORTAL" "$TRELLISD_IQN" "$TRELLISD_LUN")"
    else
        start_tgt "$BACKING" "$RESULTS_DIR/tgtd-$1.log"
        PORTAL="$TGT_PORTAL"
        TARGET="$(iscsi_url "$TGT_PORTAL" "$TGT_IQN" "$TGT_LUN")"
    fi
    PID="${TARGET_PIDS[$TARGET_NAME]}"
}

stop() {
    if [[ "$TARGET_NAME" == tgt ]]; then stop_tgt; else stop_target trellisd; fi
}

# established TCP connections to the portal's port (one per session here)
conn_count() {
    ss -Htn state established "( sport = :${PORTAL##*:} )" 2>/dev/null | wc -l
}

ROWS=()
for n in "${COUNT_LIST[@]}"; do
    start "$n"
    sleep 1   # let the target finish its start-up allocations before the idle sample
    idle="$(vm_kib "$PID" VmRSS)"
    json="$RESULTS_DIR/sessions-$n.json"
    log "$TARGET_NAME: $n sessions (runtime ${RUNTIME}s, ramp ${RAMP}s)"
    export IOENGINE=libiscsi TARGET NUMJOBS="$n" RUNTIME RAMP SIZE
    deadline=$((SECONDS + RAMP + RUNTIME + ${FIO_SLACK:-60}))
    start_fio "$json" "$RESULTS_DIR/sessions-$n.stderr" "$HERE/sessions-randread-4k-qd4.fio"
    max_rss=0
    max_conns=0
    sessions="n/a"
    sampled=0
    while alive "$FIO_PID" && ((SECONDS < deadline)); do
        rss="$(vm_kib "$PID" VmRSS)"
        ((rss > max_rss)) && max_rss=$rss
        conns="$(conn_count)"
        ((conns > max_conns)) && max_conns=$conns
        # tgt can tell its own session (I_T nexus) count once, mid-run
        if [[ "$TARGET_NAME" == tgt && "$sampled" == 0 && "$conns" -ge "$n" ]]; then
            sessions="$(tgt_session_count)"
            sampled=1
        fi
        sleep 0.5
    done
    rc=0
    wait_fio "$FIO_PID" "$deadline" || rc=$?
    FIO_PID=""
    alive "$PID" || die "$TARGET_NAME died with $n sessions"
    hwm="$(vm_kib "$PID" VmHWM)"
    if [[ "$rc" -ne 0 ]] || ! summary="$(fio_summary "$json")"; then
        sort "$RESULTS_DIR/sessions-$n.stderr" | uniq -c | sort -rn | head -n 10 >&2 || true
        die "fio failed with $n sessions (rc $rc)"
    fi
    IFS=$'\t' read -r iops _ mean p99 _ _ <<<"$summary"
    ROWS+=("| $TARGET_NAME | $n | $max_conns | $sessions | $(mib "$idle") | $(mib "$max_rss") | $(mib "$hwm") | $(((hwm - idle) / n)) | $iops | $mean | $p99 |")
    log "$TARGET_NAME: $n sessions: $max_conns connections seen, VmRSS max ${max_rss} KiB, VmHWM ${hwm} KiB, $iops IOPS"
    stop
done

{
    echo
    echo "fio $("$FIO" --version), 4 KiB random read QD4 per session, runtime ${RUNTIME}s + ramp ${RAMP}s"
    echo
    echo "| target | sessions | TCP conns seen | target sessions | idle VmRSS (MiB) | max VmRSS under load (MiB) | VmHWM (MiB) | (VmHWM - idle) per session (KiB) | IOPS | mean lat (us) | p99 lat (us) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$RESULTS_DIR/sessions.md"
log "fio JSON, logs and sessions.md in $RESULTS_DIR"
