#!/usr/bin/env bash
# Does COMPARE AND WRITE / UNMAP traffic slow ordinary reads and writes?
# Runs fio (libiscsi) against trellisd on the first half of the device,
# alone and next to trellis-atomics-load, alternately in one run, and prints
# a markdown table. See benches/fio/README.md ("Atomics next to I/O").
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"

ALL_JOBS=(randread-4k-qd32 randwrite-4k-qd32)
ALL_SCENARIOS=(alone disjoint overlap disjoint-caw disjoint-unmap)

# Device geometry (the default config: 1 GiB, 512-byte blocks). fio uses
# the first half, the disjoint load the second.
BLOCK=512
DEVICE_BLOCKS=$((1024 * 1024 * 1024 / BLOCK))
HALF_BLOCKS=$((DEVICE_BLOCKS / 2))
FIO_SIZE=512m

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

For each job, in one trellisd run, REPEATS rounds of one fio run per scenario on the
first half of the device (fio size=$FIO_SIZE):
  alone     fio only
  disjoint  fio + trellis-atomics-load --mode both (CAW and UNMAP alternately)
            on the second half (no block in common; lock words may be shared)
  overlap   fio + trellis-atomics-load --mode caw inside fio's region
and on request (--scenarios), to tell the two kinds of disjoint load apart:
  disjoint-caw    fio + --mode caw on the second half
  disjoint-unmap  fio + --mode unmap on the second half

Options:
  --runtime S         measured seconds per fio run            [15]
  --ramp S            warm-up seconds per fio run             [3]
  --repeats N         rounds of (alone, disjoint, overlap)    [3]
  --quick             --runtime 5 --ramp 2 --repeats 2
  --jobs NAME,...     subset of: ${ALL_JOBS[*]}
  --scenarios LIST    comma list, run in this order each round [alone,disjoint,overlap]
                      (of: ${ALL_SCENARIOS[*]}; alone is needed for the ratios)
  --sessions N        load generator sessions (one command in flight each) [1]
  --rate R            cap on the generator's ops/s, 0 = unlimited [0]
  --caw-blocks N      blocks per COMPARE AND WRITE (LBAs multiples of N) [1]
  --trellisd PATH     trellisd binary          [$REPO/target/release/trellisd]
  --loadgen PATH      load generator           [$REPO/target/release/trellis-atomics-load]
  --trellisd-arg ARG  extra argument for trellisd (repeatable)
  --portal HOST:PORT  where trellisd serves    [127.0.0.1:3292]
  --data-dir DIR      trellisd --data-dir      [/var/tmp/trellis-bench-atomics]
  --no-prefill        do not create+fill DIR/disk0.img before starting trellisd
  --results DIR       fio/generator JSON, logs, results.md [<data-dir>/results/<time>]

Build first: cargo build --release -p trellisd -p trellis-tests --bin trellis-atomics-load
Environment: FIO (fio with libiscsi, default \$HOME/.cache/trellis/fio/fio),
TRELLISD_IQN, FIO_SLACK (seconds a run may overrun before it is stopped, 60).
EOF
}

RUNTIME=15
RAMP=3
REPEATS=3
JOBS_CSV=""
SCENARIOS_CSV="alone,disjoint,overlap"
SESSIONS=1
RATE=0
CAW_BLOCKS=1
TRELLISD_BIN="$REPO/target/release/trellisd"
LOADGEN="$REPO/target/release/trellis-atomics-load"
TRELLISD_ARGS=()
TRELLISD_PORTAL=127.0.0.1:3292
DATA_DIR=/var/tmp/trellis-bench-atomics
PREFILL=1
RESULTS_DIR=""
FIO_SLACK="${FIO_SLACK:-60}"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --runtime) RUNTIME="${2:?--runtime needs seconds}"; shift 2 ;;
        --ramp) RAMP="${2:?--ramp needs seconds}"; shift 2 ;;
        --repeats) REPEATS="${2:?--repeats needs a count}"; shift 2 ;;
        --quick) RUNTIME=5; RAMP=2; REPEATS=2; shift ;;
        --jobs) JOBS_CSV="${2:?--jobs needs a list}"; shift 2 ;;
        --scenarios) SCENARIOS_CSV="${2:?--scenarios needs a list}"; shift 2 ;;
        --sessions) SESSIONS="${2:?--sessions needs a count}"; shift 2 ;;
        --rate) RATE="${2:?--rate needs ops/s}"; shift 2 ;;
        --caw-blocks) CAW_BLOCKS="${2:?--caw-blocks needs a count}"; shift 2 ;;
        --trellisd) TRELLISD_BIN="${2:?--trellisd needs a path}"; shift 2 ;;
        --loadgen) LOADGEN="${2:?--loadgen needs a path}"; shift 2 ;;
        --trellisd-arg) TRELLISD_ARGS+=("${2:?--trellisd-arg needs a value}"); shift 2 ;;
        --portal) TRELLISD_PORTAL="${2:?--portal needs HOST:PORT}"; shift 2 ;;
        --data-dir) DATA_DIR="${2:?--data-dir needs a path}"; shift 2 ;;
        --no-prefill) PREFILL=0; shift ;;
        --results) RESULTS_DIR="${2:?--results needs a path}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

[[ -n "$RESULTS_DIR" ]] || RESULTS_DIR="$DATA_DIR/results/$(date +%Y%m%d-%H%M%S)"
BACKING="$DATA_DIR/disk0.img"

if [[ -n "$JOBS_CSV" ]]; then
    IFS=, read -ra JOB_LIST <<<"$JOBS_CSV"
else
    JOB_LIST=("${ALL_JOBS[@]}")
fi
for j in "${JOB_LIST[@]}"; do
    [[ -f "$HERE/$j.fio" ]] || die "no job file $HERE/$j.fio (known: ${ALL_JOBS[*]})"
done
IFS=, read -ra SCENARIOS <<<"$SCENARIOS_CSV"
for sc in "${SCENARIOS[@]}"; do
    [[ " ${ALL_SCENARIOS[*]} " == *" $sc "* ]] || die "unknown scenario '$sc' (known: ${ALL_SCENARIOS[*]})"
done
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || die "--repeats must be a positive integer"

need_fio
command -v python3 >/dev/null || die "python3 is needed to parse fio JSON"
[[ -x "$LOADGEN" ]] || die "load generator not found at $LOADGEN (cargo build --release -p trellis-tests --bin trellis-atomics-load, or --loadgen PATH)"
mkdir -p "$RESULTS_DIR"

FIO_PID=""
GEN_PID=""
on_exit() {
    local rc=$?
    if [[ -n "$FIO_PID" ]]; then
        stop_group "$FIO_PID"
        wait "$FIO_PID" 2>/dev/null || true
    fi
    if [[ -n "$GEN_PID" ]] && alive "$GEN_PID"; then
        kill -TERM "$GEN_PID" 2>/dev/null || true
        wait "$GEN_PID" 2>/dev/null || true
    fi
    cleanup_targets
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

RUNS_TSV="$RESULTS_DIR/runs.tsv"
printf 'job\tscenario\trep\tiops\tmean_us\tp99_us\tcpu_s\tgen_json\n' >"$RUNS_TSV"
FAILED=0

# start_loadgen SCENARIO OUT ERR: the generator for a scenario (none for
# alone), for ramp + runtime + 1 s so that it covers fio's whole run.
start_loadgen() {
    local scenario="$1" out="$2" err="$3" mode start count
    case "$scenario" in
        alone) GEN_PID=""; return 0 ;;
        disjoint) mode=both; start=$HALF_BLOCKS; count=$((DEVICE_BLOCKS - HALF_BLOCKS)) ;;
        disjoint-caw) mode=caw; start=$HALF_BLOCKS; count=$((DEVICE_BLOCKS - HALF_BLOCKS)) ;;
        disjoint-unmap) mode=unmap; start=$HALF_BLOCKS; count=$((DEVICE_BLOCKS - HALF_BLOCKS)) ;;
        overlap) mode=caw; start=0; count=$HALF_BLOCKS ;;
    esac
    "$LOADGEN" --portal "$TRELLISD_PORTAL" --target "$TRELLISD_IQN" --mode "$mode" \
        --lba-start "$start" --lba-count "$count" --duration $((RAMP + RUNTIME + 1)) \
        --sessions "$SESSIONS" --rate "$RATE" --caw-blocks "$CAW_BLOCKS" >"$out" 2>"$err" &
    GEN_PID=$!
}

# wait_loadgen DEADLINE: wait for the generator; stop it by PID past DEADLINE.
wait_loadgen() {
    local deadline="$1" rc=0
    [[ -n "$GEN_PID" ]] || return 0
    while alive "$GEN_PID" && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if alive "$GEN_PID"; then
        log "load generator (pid $GEN_PID) overran its deadline; stopping it"
        kill -KILL "$GEN_PID" 2>/dev/null || true
        rc=124
    fi
    wait "$GEN_PID" || rc=$?
    GEN_PID=""
    return "$rc"
}

# run_one JOB SCENARIO REP: one fio run, with the scenario's load next to it.
run_one() {
    local job="$1" scenario="$2" rep="$3"
    local base="$RESULTS_DIR/$job-$scenario-$rep"
    local pid="${TARGET_PIDS[trellisd]}" c0 c1 rc=0 grc=0 summary gen_json=""
    log "$job / $scenario / round $rep (runtime ${RUNTIME}s, ramp ${RAMP}s)"
    local deadline=$((SECONDS + RAMP + RUNTIME + FIO_SLACK))
    start_loadgen "$scenario" "$base.gen.json" "$base.gen.stderr"
    start_fio "$base.json" "$base.stderr" "$HERE/$job.fio"
    sleep "$RAMP"
    c0="$(cpu_ticks "$pid")"
    wait_fio "$FIO_PID" "$deadline" || rc=$?
    FIO_PID=""
    alive "$pid" || die "trellisd (pid $pid) died during $job / $scenario"
    c1="$(cpu_ticks "$pid")"
    wait_loadgen $((SECONDS + FIO_SLACK)) || grc=$?
    if [[ "$scenario" != alone ]]; then
        if [[ "$grc" -ne 0 ]] || ! gen_json="$(grep -m1 '^{' "$base.gen.json")"; then
            log "load generator failed (rc $grc): $(tail -n 3 "$base.gen.stderr" 2>/dev/null | tr '\n' ' ')"
            gen_json=""
            FAILED=1
        fi
    fi
    if [[ "$rc" -ne 0 ]] || ! summary="$(fio_summary "$base.json" 2>>"$base.stderr")"; then
        log "fio FAILED (rc $rc); stderr (uniq -c):"
        sort "$base.stderr" | uniq -c | sort -rn | head -n 10 >&2 || true
        printf '%s\t%s\t%s\terror\t\t\t\t%s\n' "$job" "$scenario" "$rep" "${gen_json:--}" >>"$RUNS_TSV"
        FAILED=1
        return 0
    fi
    local iops mean p99 cpu_s
    IFS=$'\t' read -r iops _ mean p99 _ <<<"$summary"
    cpu_s="$(ticks_to_s $((c1 - c0)))"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$job" "$scenario" "$rep" "$iops" "$mean" "$p99" \
        "$cpu_s" "${gen_json:--}" >>"$RUNS_TSV"
    log "  ${iops} IOPS, mean ${mean} us, p99 ${p99} us, trellisd CPU ${cpu_s} s${gen_json:+; generator: $gen_json}"
}

if [[ "$PREFILL" == 1 ]]; then
    ensure_backing "$BACKING" 1g
fi
start_trellisd "$TRELLISD_BIN" "$DATA_DIR" "$TRELLISD_PORTAL" \
    "$RESULTS_DIR/trellisd.log" "${TRELLISD_ARGS[@]}"
export IOENGINE=libiscsi
TARGET="$(iscsi_url "$TRELLISD_PORTAL" "$TRELLISD_IQN" "$TRELLISD_LUN")"
SIZE=$FIO_SIZE
export TARGET RUNTIME RAMP SIZE

for job in "${JOB_LIST[@]}"; do
    for ((rep = 1; rep <= REPEATS; rep++)); do
        for scenario in "${SCENARIOS[@]}"; do
            run_one "$job" "$scenario" "$rep"
        done
    done
done
stop_target trellisd

{
    echo
    echo "fio $("$FIO" --version), $RUNTIME s + $RAMP s ramp per run, fio on LBAs 0..$((HALF_BLOCKS - 1)) (size=$FIO_SIZE);"
    echo "load: $SESSIONS session(s), $CAW_BLOCKS block(s) per CAW, rate $([[ "$RATE" == 0 ]] && echo unlimited || echo "$RATE ops/s"); rounds: $REPEATS x (${SCENARIOS[*]})"
    echo
    python3 - "$RUNS_TSV" <<'PY'
import csv, json, statistics, sys

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
LOAD = {
    "alone": "none",
    "disjoint": "CAW+UNMAP, 2nd half",
    "overlap": "CAW, fio's region",
    "disjoint-caw": "CAW, 2nd half",
    "disjoint-unmap": "UNMAP, 2nd half",
}

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def gen(r):
    g = r.get("gen_json") or "-"
    return json.loads(g) if g.startswith("{") else None

print("| job | scenario | load | IOPS per run | median IOPS | vs alone (median of per-round ratios) "
      "| median p99 lat (us) | median trellisd CPU s | generator ops/s (median) | generator errors |")
print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
for job in dict.fromkeys(r["job"] for r in rows):
    alone = {r["rep"]: num(r["iops"]) for r in rows if r["job"] == job and r["scenario"] == "alone"}
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        rs = [r for r in rows if r["job"] == job and r["scenario"] == sc]
        if not rs:
            continue
        iops = [num(r["iops"]) for r in rs]
        ok = [v for v in iops if v is not None]
        per_run = " / ".join("%.0f" % v if v is not None else "error" for v in iops)
        med = "%.0f" % statistics.median(ok) if ok else "error"
        ratios = [num(r["iops"]) / alone[r["rep"]] for r in rs
                  if num(r["iops"]) and alone.get(r["rep"])]
        ratio = "%.3f" % statistics.median(ratios) if ratios else "-"
        p99 = [num(r["p99_us"]) for r in rs if num(r["p99_us"]) is not None]
        cpu = [num(r["cpu_s"]) for r in rs if num(r["cpu_s"]) is not None]
        gens = [gen(r) for r in rs]
        if sc == "alone":
            gops, gerr = "-", "-"
        else:
            good = [g for g in gens if g]
            gops = "%.0f" % statistics.median(g["ops_per_s"] for g in good) if good else "error"
            gerr = str(sum(g["errors"] for g in good)) if good else "error"
            if good and sum(g["miscompares"] for g in good):
                gerr += " (%d miscompares)" % sum(g["miscompares"] for g in good)
            if len(good) < len(gens):
                gerr += ", %d runs failed" % (len(gens) - len(good))
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            job, sc, LOAD[sc], per_run, med, ratio,
            "%.1f" % statistics.median(p99) if p99 else "-",
            "%.2f" % statistics.median(cpu) if cpu else "-", gops, gerr))
PY
} | tee "$RESULTS_DIR/results.md"
log "fio JSON, generator JSON, logs, runs.tsv and results.md in $RESULTS_DIR"
[[ "$FAILED" == 0 ]] || die "some runs failed (see $RESULTS_DIR/*.stderr)"
