# shellcheck shell=bash
# Shared helpers for benches/fio/run.sh and benches/fio/sessions-rss.sh.
# Sourced, not executed. Callers set `set -euo pipefail` themselves.
#
# Every process started here is remembered by PID in TARGET_PIDS and only
# those PIDs are ever signalled (see stop_target / cleanup_targets).

FIO_DIR="${FIO_DIR:-$HOME/.cache/trellis/fio}"
FIO="${FIO:-$FIO_DIR/fio}"
CLK_TCK="$(getconf CLK_TCK)"

# trellisd defaults (see README: adjust BACKING once trellisd's config settles)
TRELLISD_IQN="${TRELLISD_IQN:-iqn.2026-11.io.trellis:default}"
TRELLISD_LUN="${TRELLISD_LUN:-0}"
TRELLISD_PORTAL="${TRELLISD_PORTAL:-127.0.0.1:3260}"

# tgt defaults: LUN 0 of a tgt target is its controller, the disk is LUN 1.
TGT_IQN="${TGT_IQN:-iqn.2026-11.io.trellis.bench:tgt}"
TGT_LUN=1
TGT_PORTAL="${TGT_PORTAL:-127.0.0.1:3261}"
TGT_CONTROL_PORT="${TGT_CONTROL_PORT:-3271}"
TGT_BSOFLAGS="${TGT_BSOFLAGS-direct}"   # set empty for buffered I/O

declare -A TARGET_PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need_fio() {
    [[ -x "$FIO" ]] || die "fio not found at $FIO; run benches/fio/build-fio.sh first (or set FIO=/path/to/fio)"
    "$FIO" --enghelp 2>/dev/null | grep -qw libiscsi \
        || die "$FIO has no libiscsi engine; run benches/fio/build-fio.sh"
}

# iscsi_url PORTAL IQN LUN -> URL escaped for a fio job file (':' -> '\:')
iscsi_url() {
    local url="iscsi://$1/$2/$3"
    printf '%s' "${url//:/\\:}"
}

# alive PID: true while PID runs (a zombie waiting to be reaped counts as dead)
alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat:0:1}" != Z ]]
}

# portal_busy HOST:PORT: true if something accepts TCP connections there
portal_busy() {
    (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

# listener_pid_ok HOST:PORT PID: true once PID (or one of its threads' sockets)
# listens on PORT. Without ss it falls back to "something accepts connections".
listener_pid_ok() {
    local port="${1##*:}"
    if command -v ss >/dev/null; then
        ss -Hltnp "( sport = :$port )" 2>/dev/null | grep -q "pid=$2,"
    else
        portal_busy "$1"
    fi
}

# ensure_portal_free HOST:PORT WHAT: refuse to start a target on a portal that
# something else (another trellisd, a system tgtd) already serves.
ensure_portal_free() {
    if portal_busy "$1"; then
        local who=""
        command -v ss >/dev/null && who="$(ss -Hltnp "( sport = :${1##*:} )" 2>/dev/null | grep -o 'users:.*' | head -n1)"
        die "$1 already accepts connections ${who:+($who) }- not ours; stop it or pick another port for $2"
    fi
}

# wait_portal HOST:PORT PID [TIMEOUT_S]: wait until PID listens on the portal
# and a TCP connect succeeds, failing early if PID dies.
wait_portal() {
    local portal="$1" pid="$2" timeout="${3:-30}" i
    for ((i = 0; i < timeout * 10; i++)); do
        alive "$pid" || return 1
        if listener_pid_ok "$portal" "$pid" && portal_busy "$portal"; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# cpu_ticks PID -> utime+stime of the whole thread group, in clock ticks
cpu_ticks() {
    local stat rest
    stat="$(<"/proc/$1/stat")"
    rest="${stat##*) }"           # fields from 3 (state) on; comm may contain spaces
    local -a f
    read -ra f <<<"$rest"
    echo $((f[11] + f[12]))       # field 14 utime, field 15 stime
}

# vm_kib PID FIELD -> value in KiB of a /proc/PID/status field (VmRSS, VmHWM)
vm_kib() {
    awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}

# start_fio OUT_JSON STDERR_FILE JOBFILE: start fio in the background in its own
# session (setsid), so that fio and the job processes it forks form one
# process group whose id is fio's PID (FIO_PID). Only that group is signalled.
start_fio() {
    setsid "$FIO" --output-format=json --output="$1" "$3" 2>"$2" &
    # shellcheck disable=SC2034  # read by the scripts that source this file
    FIO_PID=$!
}

# group_alive PGID: true while any process of the group is alive
group_alive() {
    kill -0 -- "-$1" 2>/dev/null
}

# stop_group PGID: SIGTERM the process group we created, SIGKILL after 10 s
stop_group() {
    local pg="$1" i
    group_alive "$pg" || return 0
    kill -TERM -- "-$pg" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        group_alive "$pg" || return 0
        sleep 0.1
    done
    kill -KILL -- "-$pg" 2>/dev/null || true
}

# wait_fio PID DEADLINE: wait for the fio started by start_fio; if it is still
# running when bash's $SECONDS reaches DEADLINE (a stalled engine, a target
# that stops answering), stop its process group and return 124. fio job
# processes left behind by a fio that exited (seen when a target drops
# sessions) are stopped too. Otherwise return fio's exit status.
wait_fio() {
    local pid="$1" deadline="$2" rc=0
    while alive "$pid" && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if alive "$pid"; then
        log "fio (pid $pid) overran its deadline; stopping it and its job processes"
        stop_group "$pid"
        wait "$pid" 2>/dev/null || true
        return 124
    fi
    wait "$pid" || rc=$?
    if group_alive "$pid"; then
        log "fio (pid $pid) exited but left job processes running; stopping them"
        stop_group "$pid"
        [[ "$rc" -ne 0 ]] || rc=1
    fi
    return "$rc"
}

# mib KIB -> MiB with 1 decimal
mib() {
    awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'
}

# ticks_to_s TICKS -> seconds with 2 decimals
ticks_to_s() {
    awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'
}

# start_trellisd BIN DATA_DIR PORTAL LOG [EXTRA_ARGS...]; sets TARGET_PIDS[trellisd].
# Runs `BIN --data-dir DATA_DIR --portal PORTAL EXTRA_ARGS...`: the embedded
# default config (device disk0 = DATA_DIR/disk0.img, 1 GiB, target
# iqn.2026-11.io.trellis:default LUN 0), listening on PORTAL only.
start_trellisd() {
    local bin="$1" dir="$2" portal="$3" logf="$4"
    shift 4
    [[ -x "$bin" ]] || die "trellisd binary not found at $bin (build it with 'cargo build --release -p trellisd' or pass --trellisd PATH)"
    mkdir -p "$dir"
    ensure_portal_free "$portal" "trellisd (use --portal)"
    log "starting $bin --data-dir $dir --portal $portal $* (log: $logf)"
    "$bin" --data-dir "$dir" --portal "$portal" "$@" >"$logf" 2>&1 &
    TARGET_PIDS[trellisd]=$!
    if ! wait_portal "$portal" "${TARGET_PIDS[trellisd]}" 30; then
        tail -n 20 "$logf" >&2 || true
        alive "${TARGET_PIDS[trellisd]}" \
            || die "trellisd (pid ${TARGET_PIDS[trellisd]}) exited during start-up; its log is above"
        die "trellisd (pid ${TARGET_PIDS[trellisd]}) did not accept connections on $portal within 30s"
    fi
    log "trellisd pid ${TARGET_PIDS[trellisd]} listening on $portal"
}

tgtadm_() { tgtadm -C "$TGT_CONTROL_PORT" --lld iscsi "$@"; }

# start_tgt BACKING LOG; sets TARGET_PIDS[tgt]. tgtd runs in the foreground
# (-f) as our child, on its own control port so it never touches a system tgtd.
start_tgt() {
    local backing="$1" logf="$2" pid
    if ! command -v tgtd >/dev/null || ! command -v tgtadm >/dev/null; then
        die "tgtd/tgtadm not found (apt-get install tgt)"
    fi
    [[ -f "$backing" ]] || die "backing file $backing does not exist"
    ensure_portal_free "$TGT_PORTAL" "tgt (TGT_PORTAL)"
    ensure_portal_free "127.0.0.1:$TGT_CONTROL_PORT" "tgt's management port (TGT_CONTROL_PORT)"
    log "starting tgtd -f on $TGT_PORTAL, control port $TGT_CONTROL_PORT (log: $logf)"
    tgtd -f -C "$TGT_CONTROL_PORT" --iscsi "portal=$TGT_PORTAL" >"$logf" 2>&1 &
    pid=$!
    TARGET_PIDS[tgt]=$pid
    if ! wait_portal "$TGT_PORTAL" "$pid" 30; then
        tail -n 20 "$logf" >&2 || true
        alive "$pid" || die "tgtd (pid $pid) exited during start-up; its log is above"
        die "tgtd (pid $pid) did not accept connections on $TGT_PORTAL within 30s"
    fi
    tgtadm_ --op new --mode target --tid 1 -T "$TGT_IQN" \
        || die "tgtadm: creating target $TGT_IQN failed"
    local -a bsflags=()
    [[ -n "$TGT_BSOFLAGS" ]] && bsflags=(--bsoflags "$TGT_BSOFLAGS")
    if ! tgtadm_ --op new --mode logicalunit --tid 1 --lun "$TGT_LUN" \
        --backing-store "$backing" --bstype rdwr "${bsflags[@]}"; then
        if [[ -n "$TGT_BSOFLAGS" ]]; then
            log "warning: tgt refused --bsoflags $TGT_BSOFLAGS; falling back to buffered rdwr"
            TGT_BSOFLAGS=""
            tgtadm_ --op new --mode logicalunit --tid 1 --lun "$TGT_LUN" \
                --backing-store "$backing" --bstype rdwr \
                || die "tgtadm: adding LUN $TGT_LUN ($backing) failed"
        else
            die "tgtadm: adding LUN $TGT_LUN ($backing) failed"
        fi
    fi
    tgtadm_ --op bind --mode target --tid 1 -I ALL \
        || die "tgtadm: binding target to ALL initiators failed"
    log "tgtd pid $pid exports $backing as $TGT_IQN LUN $TGT_LUN (rdwr${TGT_BSOFLAGS:+, bsoflags=$TGT_BSOFLAGS})"
}

# tgt_session_count: number of iSCSI sessions (I_T nexuses) tgtd currently has
tgt_session_count() {
    tgtadm_ --op show --mode target 2>/dev/null | grep -c 'I_T nexus:' || true
}

# stop_target NAME: SIGTERM the PID we started, SIGKILL after 10s.
stop_target() {
    local name="$1" pid i
    pid="${TARGET_PIDS[$name]:-}"
    [[ -n "$pid" ]] || return 0
    unset 'TARGET_PIDS[$name]'
    alive "$pid" || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# stop_tgt: tgtd ignores SIGTERM; ask it to shut down through its own
# control port first, then fall back to stop_target.
stop_tgt() {
    local pid="${TARGET_PIDS[tgt]:-}" i
    [[ -n "$pid" ]] || return 0
    if alive "$pid"; then
        # tgtd refuses to delete the system while a target exists
        tgtadm_ --op delete --force --mode target --tid 1 >/dev/null 2>&1 || true
        tgtadm_ --op delete --mode system >/dev/null 2>&1 || true
        for ((i = 0; i < 50; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
    fi
    stop_target tgt
}

cleanup_targets() {
    local name
    for name in "${!TARGET_PIDS[@]}"; do
        if [[ "$name" == tgt ]]; then
            stop_tgt
        else
            stop_target "$name"
        fi
    done
}

# ensure_backing FILE SIZE: create FILE if missing and fill it with data
# (sequential O_DIRECT writes through io_uring), so reads do not hit holes.
ensure_backing() {
    local file="$1" size="$2"
    if [[ -f "$file" ]]; then
        return 0
    fi
    mkdir -p "$(dirname "$file")"
    log "creating and filling backing file $file ($size)"
    "$FIO" --name=prefill --filename="$file" --size="$size" --rw=write --bs=1m \
        --iodepth=8 --ioengine=io_uring --direct=1 --end_fsync=1 \
        --output=/dev/null >/dev/null \
        || die "prefilling $file failed"
}

# fio_summary JSON -> tab-separated: iops mbps mean_lat_us p99_lat_us total_ios fio_cpu_s
fio_summary() {
    python3 - "$1" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
start = text.find("{")
if start < 0:
    sys.exit("no JSON object in " + sys.argv[1])
data = json.JSONDecoder().raw_decode(text[start:])[0]
iops = bw = ios = lat_w = 0.0
p99 = 0.0
cpu = 0.0
for job in data["jobs"]:
    if job.get("error"):
        sys.exit("fio job %s failed with error %s" % (job.get("jobname"), job["error"]))
    runtime_s = job.get("job_runtime", 0) / 1000.0
    cpu += (job.get("usr_cpu", 0) + job.get("sys_cpu", 0)) / 100.0 * runtime_s
    for d in ("read", "write", "trim"):
        s = job.get(d)
        if not s or not s.get("total_ios"):
            continue
        iops += s["iops"]
        bw += s["bw_bytes"]
        n = s["total_ios"]
        ios += n
        lat = s.get("lat_ns") or s["clat_ns"]
        lat_w += lat["mean"] * n
        pct = (s.get("lat_ns", {}).get("percentile")
               or s.get("clat_ns", {}).get("percentile") or {})
        for k, v in pct.items():
            if abs(float(k) - 99.0) < 1e-9:
                p99 = max(p99, v)
mean_us = lat_w / ios / 1000.0 if ios else 0.0
print("%.0f\t%.1f\t%.1f\t%.1f\t%d\t%.2f" % (iops, bw / 1e6, mean_us, p99 / 1000.0, ios, cpu))
PY
}
