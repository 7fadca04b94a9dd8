#!/usr/bin/env bash
# Does a cluster member's data path cost more than a lone gateway's? Runs the
# same fio jobs against one backing file exported by (a) a lone trellisd and
# (b) member m1 of a three-member cluster on this machine (Raft, heartbeats,
# mDNS, the replicated configuration applied to the exports), alternating
# a/b for several rounds, and prints each round's IOPS and the median ratio
# cluster/lone per job. Both run the whole time, so each measurement has the
# same background load; only one is driven at a time.
#
# With --shared it then times the commands whose state the members share
# (trellis-shared-latency): PERSISTENT RESERVE OUT through m2, alone and
# while fio writes through m1, and COMPARE AND WRITE through m1 (the
# device's owner) and through m2 (forwarded to m1). --jobs none skips fio.
#
# Usage: benches/fio/cluster.sh [--rounds N] [--runtime S] [--jobs a,b] [--shared]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"

ROUNDS=3
RUNTIME=10
RAMP=2
SIZE=1g # the device is 1 GiB; fio addresses all of it
JOBS_CSV="randread-4k-qd1,randread-4k-qd32,randwrite-4k-qd32"
BIN="$REPO/target/release"
SHARED=0
WORK="/var/tmp/trellis-bench/cluster"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS="${2:?}"; shift 2 ;;
        --runtime) RUNTIME="${2:?}"; shift 2 ;;
        --ramp) RAMP="${2:?}"; shift 2 ;;
        --jobs) JOBS_CSV="${2:?}"; shift 2 ;;
        --bin) BIN="${2:?}"; shift 2 ;;
        --work) WORK="${2:?}"; shift 2 ;;
        --shared) SHARED=1; shift ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
done
IFS=, read -ra JOBS <<<"$JOBS_CSV"
[[ "$JOBS_CSV" == none ]] && JOBS=()
need_fio
[[ -x "$BIN/trellisd" && -x "$BIN/trellis" ]] || die "build first: cargo build --release -p trellisd -p trellis-cli"
LATENCY="$REPO/target/release/trellis-shared-latency"
[[ $SHARED == 0 || -x "$LATENCY" ]] || die "build first: cargo build --release -p trellis-tests --bin trellis-shared-latency"

RESULTS="$WORK/results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$WORK/shared" "$RESULTS"
BACKING="$WORK/shared/vol1.img"
ensure_backing "$BACKING" "$SIZE"
IQN="iqn.2026-12.io.trellis:bench"
FIO_INITIATOR="iqn.2019-04.org.fio:fio"
LAT_INITIATOR="iqn.2026-12.io.trellis:latency"
TOKEN="cluster-bench-api-token"
KEY="cluster-bench-cluster-key"
UUID="6f1e2d3c-4b5a-4697-8877-665544332211"

on_exit() {
    local rc=$?
    [[ -n "${FIO_PID:-}" ]] && stop_group "$FIO_PID"
    cleanup_targets
    exit "$rc"
}
trap on_exit EXIT

# The lone gateway: the file as device vol1 with the same UUID.
mkdir -p "$WORK/lone"
cat >"$WORK/lone/trellisd.toml" <<EOF
data_dir = "$WORK/lone"
portals = ["127.0.0.1:3360"]
[[device]]
name = "vol1"
size = "1GiB"
path = "$BACKING"
uuid = "$UUID"
[[target]]
name = "$IQN"
luns = [{ lun = 0, device = "vol1" }]
EOF
log "starting the lone gateway"
"$BIN/trellisd" --config "$WORK/lone/trellisd.toml" >"$RESULTS/lone.log" 2>&1 &
TARGET_PIDS[lone]=$!
wait_portal 127.0.0.1:3360 "${TARGET_PIDS[lone]}" 30 || die "lone gateway did not start (see $RESULTS/lone.log)"

# The cluster: three members on loopback (links 127.0.1.x / 127.0.2.x).
voters=""
for i in 1 2 3; do voters+="{ id = $i, raft = \"127.0.0.1:$((7600 + i))\" },"; done
for i in 1 2 3; do
    seeds=""
    for p in 1 2 3; do
        [[ $p == "$i" ]] && continue
        seeds+="{ link = \"a\", addr = \"127.0.1.$p:7700\" }, { link = \"b\", addr = \"127.0.2.$p:7700\" },"
    done
    mkdir -p "$WORK/m$i"
    cat >"$WORK/m$i/trellisd.toml" <<EOF
data_dir = "$WORK/m$i"
portals = ["127.0.0.1:$((3360 + i))"]
[cluster]
id = "bench"
member = "m$i"
key = "$KEY"
storage_dir = "$WORK/shared"
links = [{ name = "a", addr = "127.0.1.$i:7700" }, { name = "b", addr = "127.0.2.$i:7700" }]
seeds = [$seeds]
node_id = $i
raft = "127.0.0.1:$((7600 + i))"
api = "127.0.0.1:$((7800 + i))"
api_token = "$TOKEN"
voters = [$voters]
EOF
    "$BIN/trellisd" --config "$WORK/m$i/trellisd.toml" >"$RESULTS/m$i.log" 2>&1 &
    TARGET_PIDS[m$i]=$!
done
for i in 1 2 3; do
    wait_portal "127.0.0.1:$((3360 + i))" "${TARGET_PIDS[m$i]}" 30 || die "m$i did not start (see $RESULTS/m$i.log)"
done
export TRELLIS_ENDPOINTS="127.0.0.1:7801,127.0.0.1:7802,127.0.0.1:7803" TRELLIS_TOKEN="$TOKEN"
cli() {
    local i
    for ((i = 0; i < 60; i++)); do
        "$BIN/trellis" "$@" >>"$RESULTS/cli.log" 2>&1 && return 0
        sleep 0.5
    done
    die "trellis $* failed (see $RESULTS/cli.log)"
}
# A restarted bench finds the device there already: create only if missing.
if ! "$BIN/trellis" --json device list 2>/dev/null | grep -q '"vol1"'; then
    # Active-active: every member serves it (fio drives m1 only).
    cli device create vol1 --size 1GiB --backing "$BACKING" --policy aa
    cli target create "$IQN"
    cli target map "$IQN" vol1 --lun 0
    cli acl allow "$IQN" "$FIO_INITIATOR"
    cli acl allow "$IQN" "$LAT_INITIATOR"
fi
for ((i = 0; i < 100; i++)); do
    iscsi-ls -i "$FIO_INITIATOR" -s iscsi://127.0.0.1:3361 2>/dev/null | grep -q "Lun:0" && break
    sleep 0.2
done
# Cluster members serve a device only once a role is committed: wait until
# m1 (the set's preferred member) reports vol1 Active/Optimized.
m1_optimized() {
    python3 - "$TOKEN" <<'PY'
import sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:7801/metrics", headers={"Authorization": "Bearer " + sys.argv[1]})
text = urllib.request.urlopen(req, timeout=5).read().decode()
sys.exit(0 if 'trellis_alua_state{device="vol1",state="active_optimized"} 1' in text else 1)
PY
}
for ((i = 0; i < 150; i++)); do
    m1_optimized 2>/dev/null && break
    sleep 0.2
done
m1_optimized || die "m1 never served vol1 Active/Optimized (see $RESULTS/m1.log)"

# one_job NAME PORTAL JOB -> IOPS
one_job() {
    local name="$1" portal="$2" job="$3" json="$RESULTS/$1-$3-$4.json"
    IOENGINE=libiscsi TARGET="$(iscsi_url "$portal" "$IQN" 0)" RUNTIME="$RUNTIME" RAMP="$RAMP" SIZE="$SIZE" \
        "$FIO" --output-format=json --output="$json" "$HERE/$job.fio" 2>>"$RESULTS/fio.stderr" \
        || die "fio $job through $name failed"
    python3 - "$json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
print(round(j["read"]["iops"] + j["write"]["iops"]))
PY
}

declare -A RATIOS=()
echo "| job | round | lone IOPS | cluster m1 IOPS | cluster / lone |" | tee "$RESULTS/results.md"
echo "|---|---:|---:|---:|---:|" | tee -a "$RESULTS/results.md"
for job in "${JOBS[@]}"; do
    for ((r = 1; r <= ROUNDS; r++)); do
        lone="$(one_job lone 127.0.0.1:3360 "$job" "$r")"
        member="$(one_job m1 127.0.0.1:3361 "$job" "$r")"
        ratio="$(awk -v a="$member" -v b="$lone" 'BEGIN { printf "%.2f", a / b }')"
        RATIOS[$job]+="$ratio "
        echo "| $job | $r | $lone | $member | $ratio |" | tee -a "$RESULTS/results.md"
    done
done
echo | tee -a "$RESULTS/results.md"
for job in "${JOBS[@]}"; do
    # shellcheck disable=SC2086
    median="$(printf '%s\n' ${RATIOS[$job]} | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')"
    echo "$job: median cluster/lone $median" | tee -a "$RESULTS/results.md"
done
if [[ $SHARED == 1 ]]; then
    # latency NAME PORT MODE -> one line of JSON
    latency() {
        "$LATENCY" --portal "127.0.0.1:$2" --target "$IQN" --initiator "$LAT_INITIATOR" \
            --mode "$3" --count "${4:-500}" --lba 2000000 2>>"$RESULTS/latency.stderr" \
            || die "trellis-shared-latency $3 through $1 failed (see $RESULTS/latency.stderr)"
    }
    {
        echo
        echo "| command | through | load | count | median µs | p99 µs | max µs |"
        echo "|---|---|---|---:|---:|---:|---:|"
    } | tee -a "$RESULTS/results.md"
    row() {
        python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
j = json.loads(sys.argv[4])
print(f"| {sys.argv[1]} | {sys.argv[2]} | {sys.argv[3]} | {j['count']} | {j['median_us']} | {j['p99_us']} | {j['max_us']} |")
PY
    }
    row "PERSISTENT RESERVE OUT" m2 none "$(latency m2 3362 prout)" | tee -a "$RESULTS/results.md"
    # The same while fio writes 4k at QD32 through m1.
    IOENGINE=libiscsi TARGET="$(iscsi_url 127.0.0.1:3361 "$IQN" 0)" RUNTIME=600 RAMP=0 SIZE="$SIZE" \
        setsid "$FIO" --output-format=json --output="$RESULTS/background-fio.json" "$HERE/randwrite-4k-qd32.fio" \
        2>>"$RESULTS/fio.stderr" &
    FIO_PID=$!
    sleep 3
    row "PERSISTENT RESERVE OUT" m2 "fio randwrite 4k QD32 on m1" "$(latency m2 3362 prout)" | tee -a "$RESULTS/results.md"
    stop_group "$FIO_PID"
    FIO_PID=""
    row "COMPARE AND WRITE" "m1 (owner)" none "$(latency m1 3361 caw)" | tee -a "$RESULTS/results.md"
    row "COMPARE AND WRITE" "m2 (forwarded)" none "$(latency m2 3362 caw)" | tee -a "$RESULTS/results.md"
fi
log "results in $RESULTS"
