#!/usr/bin/env bash
# Run the Trellis fio suite against trellisd (libiscsi), the raw backing file
# (io_uring, the ceiling) and optionally tgt (libiscsi), and print one
# markdown table. See benches/fio/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"

ALL_JOBS=(randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd32 seqread-128k-qd8 seqwrite-128k-qd8)

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

Targets (run in the order given):
  --targets LIST      comma list of trellisd,tgt,raw      [trellisd,raw]
  --with-tgt          add tgt (tgtd exporting the same backing file on $TGT_PORTAL)
  --trellisd PATH     trellisd binary                     [$REPO/target/release/trellisd]
  --trellisd-arg ARG  extra argument for trellisd (repeatable)
  --portal HOST:PORT  where trellisd serves iSCSI         [$TRELLISD_PORTAL]
  --data-dir DIR      trellisd --data-dir                 [/var/tmp/trellis-bench]
  --backing FILE      trellisd's backing file, shared by tgt and raw [<data-dir>/disk0.img]

Jobs:
  --jobs NAME,...     subset of: ${ALL_JOBS[*]}
  --quick             RUNTIME=5, RAMP=2
  --runtime S         measured seconds per job            [20]
  --ramp S            warm-up seconds per job             [3]
  --size SIZE         region addressed by each job        [1g]
  --no-prefill        do not create+fill the backing file before starting trellisd

Output:
  --results DIR       where fio JSON and logs go          [/var/tmp/trellis-bench/results/<time>]

Environment: FIO (fio binary, default \$HOME/.cache/trellis/fio/fio from build-fio.sh),
BACKING (backing file, default <data-dir>/disk0.img), DISK_SIZE (size when the
script creates the backing file, default 1g), TRELLISD_IQN, TRELLISD_LUN,
TGT_PORTAL, TGT_IQN, TGT_CONTROL_PORT, TGT_BSOFLAGS (default direct; empty for buffered),
FIO_SLACK (seconds a job may overrun ramp+runtime before fio is stopped, default 60).
EOF
}

TARGETS="trellisd,raw"
WITH_TGT=0
TRELLISD_BIN="$REPO/target/release/trellisd"
TRELLISD_ARGS=()
DATA_DIR="/var/tmp/trellis-bench"
JOBS_CSV=""
RUNTIME=20
RAMP=3
SIZE=1g
PREFILL=1
RESULTS_DIR=""
FIO_SLACK="${FIO_SLACK:-60}"   # seconds a job may overrun RAMP+RUNTIME before it is stopped

while [[ $# -gt 0 ]]; do
    case "$1" in
        --targets) TARGETS="${2:?--targets needs a value}"; shift 2 ;;
        --with-tgt) WITH_TGT=1; shift ;;
        --trellisd) TRELLISD_BIN="${2:?--trellisd needs a path}"; shift 2 ;;
        --trellisd-arg) TRELLISD_ARGS+=("${2:?--trellisd-arg needs a value}"); shift 2 ;;
        --portal) TRELLISD_PORTAL="${2:?--portal needs HOST:PORT}"; shift 2 ;;
        --data-dir) DATA_DIR="${2:?--data-dir needs a path}"; shift 2 ;;
        --backing) BACKING="${2:?--backing needs a path}"; shift 2 ;;
        --jobs) JOBS_CSV="${2:?--jobs needs a list}"; shift 2 ;;
        --quick) RUNTIME=5; RAMP=2; shift ;;
        --runtime) RUNTIME="${2:?--runtime needs seconds}"; shift 2 ;;
        --ramp) RAMP="${2:?--ramp needs seconds}"; shift 2 ;;
        --size) SIZE="${2:?--size needs a size}"; shift 2 ;;
        --no-prefill) PREFILL=0; shift ;;
        --results) RESULTS_DIR="${2:?--results needs a path}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

BACKING="${BACKING:-$DATA_DIR/disk0.img}"
DISK_SIZE="${DISK_SIZE:-1g}"
RESULTS_DIR="${RESULTS_DIR:-/var/tmp/trellis-bench/results/$(date +%Y%m%d-%H%M%S)}"
[[ "$RUNTIME" =~ ^[0-9]+$ && "$RAMP" =~ ^[0-9]+$ ]] || die "--runtime/--ramp must be whole seconds"
[[ "$TRELLISD_PORTAL" == *:* ]] || die "--portal must be HOST:PORT"

IFS=, read -ra TARGET_LIST <<<"$TARGETS"
if [[ "$WITH_TGT" == 1 && ",$TARGETS," != *,tgt,* ]]; then
    # keep raw last: tgt goes before it
    new=()
    for t in "${TARGET_LIST[@]}"; do
        [[ "$t" == raw ]] && new+=(tgt)
        new+=("$t")
    done
    [[ ",${new[*]}," == *tgt* ]] || new+=(tgt)
    TARGET_LIST=("${new[@]}")
fi
for t in "${TARGET_LIST[@]}"; do
    case "$t" in trellisd | tgt | raw) ;; *) die "unknown target '$t' (use trellisd, tgt, raw)" ;; esac
done

if [[ -n "$JOBS_CSV" ]]; then
    IFS=, read -ra JOB_LIST <<<"$JOBS_CSV"
else
    JOB_LIST=("${ALL_JOBS[@]}")
fi
for j in "${JOB_LIST[@]}"; do
    [[ -f "$HERE/$j.fio" ]] || die "no job file $HERE/$j.fio (known: ${ALL_JOBS[*]})"
done

need_fio
command -v python3 >/dev/null || die "python3 is needed to parse fio JSON"
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

ROWS=()
MEM_ROWS=()
FAILED=0

# run_job TARGET_NAME JOB PID_OR_EMPTY: runs fio, appends a row to ROWS.
run_job() {
    local tname="$1" job="$2" pid="$3"
    local json="$RESULTS_DIR/$tname-$job.json" err="$RESULTS_DIR/$tname-$job.stderr"
    local c0=0 c1=0 rc=0 summary
    log "$tname: $job (runtime ${RUNTIME}s, ramp ${RAMP}s)"
    local deadline=$((SECONDS + RAMP + RUNTIME + FIO_SLACK))
    start_fio "$json" "$err" "$HERE/$job.fio"
    if [[ -n "$pid" ]]; then
        # CPU window: from the end of the ramp to fio's exit (~RUNTIME s)
        sleep "$RAMP"
        c0="$(cpu_ticks "$pid")"
    fi
    wait_fio "$FIO_PID" "$deadline" || rc=$?
    FIO_PID=""
    if [[ -n "$pid" ]]; then
        alive "$pid" || die "$tname (pid $pid) died during $job"
        c1="$(cpu_ticks "$pid")"
    fi
    if [[ "$rc" -ne 0 ]] || ! summary="$(fio_summary "$json" 2>>"$err")"; then
        log "$tname: $job FAILED (fio rc $rc$([[ $rc == 124 ]] && echo ", timed out")); stderr (uniq -c):"
        sort "$err" | uniq -c | sort -rn | head -n 10 >&2 || true
        ROWS+=("| $tname | $job | error | | | | | |")
        FAILED=1
        return 0
    fi
    local iops mbps mean p99 ios fio_cpu cpu_s per_cpu
    IFS=$'\t' read -r iops mbps mean p99 ios fio_cpu <<<"$summary"
    if [[ -n "$pid" ]]; then
        cpu_s="$(ticks_to_s $((c1 - c0)))"
        per_cpu="$(awk -v n="$ios" -v t=$((c1 - c0)) -v hz="$CLK_TCK" \
            'BEGIN { if (t > 0) printf "%.0f", n / (t / hz); else print "inf" }')"
    else
        cpu_s="n/a (fio: $fio_cpu)"
        per_cpu="n/a"
    fi
    ROWS+=("| $tname | $job | $iops | $mbps | $mean | $p99 | $cpu_s | $per_cpu |")
    log "$tname: $job: ${iops} IOPS, ${mbps} MB/s, mean ${mean} us, p99 ${p99} us, target CPU s: ${cpu_s}"
}

# record_mem NAME PID: remember peak and current RSS before the target stops
record_mem() {
    local hwm rss
    hwm="$(vm_kib "$2" VmHWM)"
    rss="$(vm_kib "$2" VmRSS)"
    MEM_ROWS+=("| $1 | $(mib "$hwm") MiB | $(mib "$rss") MiB |")
}

if [[ "$PREFILL" == 1 ]]; then
    ensure_backing "$BACKING" "$DISK_SIZE"
fi

for t in "${TARGET_LIST[@]}"; do
    case "$t" in
        trellisd)
            start_trellisd "$TRELLISD_BIN" "$DATA_DIR" "$TRELLISD_PORTAL" \
                "$RESULTS_DIR/trellisd.log" "${TRELLISD_ARGS[@]}"
            export IOENGINE=libiscsi
            TARGET="$(iscsi_url "$TRELLISD_PORTAL" "$TRELLISD_IQN" "$TRELLISD_LUN")"
            export TARGET RUNTIME RAMP SIZE
            for j in "${JOB_LIST[@]}"; do run_job trellisd "$j" "${TARGET_PIDS[trellisd]}"; done
            record_mem trellisd "${TARGET_PIDS[trellisd]}"
            stop_target trellisd
            ;;
        tgt)
            ensure_backing "$BACKING" "$DISK_SIZE"
            start_tgt "$BACKING" "$RESULTS_DIR/tgtd.log"
            export IOENGINE=libiscsi
            TARGET="$(iscsi_url "$TGT_PORTAL" "$TGT_IQN" "$TGT_LUN")"
            export TARGET RUNTIME RAMP SIZE
            for j in "${JOB_LIST[@]}"; do run_job tgt "$j" "${TARGET_PIDS[tgt]}"; done
            record_mem tgt "${TARGET_PIDS[tgt]}"
            stop_tgt
            ;;
        raw)
            ensure_backing "$BACKING" "$DISK_SIZE"
            "$FIO" --enghelp 2>/dev/null | grep -qw io_uring || die "$FIO has no io_uring engine"
            export IOENGINE=io_uring TARGET="$BACKING" RUNTIME RAMP SIZE
            for j in "${JOB_LIST[@]}"; do run_job raw-io_uring "$j" ""; done
            ;;
    esac
done

{
    echo
    echo "fio $("$FIO" --version), runtime ${RUNTIME}s + ramp ${RAMP}s per job, size $SIZE, backing $BACKING"
    echo
    echo "| target | job | IOPS | MB/s | mean lat (us) | p99 lat (us) | target CPU s | IOs per target CPU-s |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    if [[ ${#MEM_ROWS[@]} -gt 0 ]]; then
        echo
        echo "| target | peak RSS (VmHWM) | RSS at end (VmRSS) |"
        echo "|---|---:|---:|"
        printf '%s\n' "${MEM_ROWS[@]}"
    fi
} | tee "$RESULTS_DIR/results.md"
log "fio JSON, logs and results.md in $RESULTS_DIR"
[[ "$FAILED" == 0 ]] || die "some jobs failed (see $RESULTS_DIR/*.stderr)"
