#!/usr/bin/env bash
# Hostile loads against trellisd, measured: this build beside an older one
# (the baseline, e.g. a build from before the hardening) in the same run.
#
#   benches/flood/run.sh [--old PATH-TO-OLD-TRELLISD] [--seconds N]
#
# Each trellisd runs with an open-file limit of 1024 (what shells hand out)
# and faces, one after the other:
#   api-idle   3000 idle connections to the management API from 10 addresses
#   iscsi-idle 3000 idle connections to the portal from 10 addresses
#   chap       16 threads logging in with wrong CHAP secrets
#   rejects    one client sending unknown opcodes as fast as it can
# For each: the member's peak RSS, its CPU (cores, user+system) and log
# bytes per second over the flood, what the flood achieved, and whether a
# good client (iscsi-inq, or the CLI for the API) was served during it.
# Loopback only; every flood stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=10
old=""
while (($#)); do
    case "$1" in
        --old) old="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        *) echo "run.sh: unknown argument $1 (--old PATH, --seconds N)" >&2; exit 2 ;;
    esac
done
command -v iscsi-inq >/dev/null || { echo "run.sh: needs libiscsi-bin (iscsi-inq)" >&2; exit 2; }
command -v prlimit >/dev/null || { echo "run.sh: needs prlimit (util-linux)" >&2; exit 2; }

cargo build --release --quiet -p trellisd -p trellis-cli
cargo build --release --quiet -p trellis-tests --bin trellis-flood
new=target/release/trellisd
flood=target/release/trellis-flood
cli=target/release/trellis
work=$(mktemp -d)
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

portal_port=3341
api_port=8341
token="flood-bench-token-$$-$RANDOM"
target=iqn.2026-12.io.trellis:flood
host=iqn.2026-12.io.trellis:flood-host

standalone_config() {
    cat <<CONF
portals = ["127.0.0.1:$portal_port"]
[[device]]
name = "d0"
size = "64MiB"
memory = true
[[device]]
name = "d1"
size = "64MiB"
memory = true
[[target]]
name = "iqn.2026-11.io.trellis:default"
luns = [{ lun = 0, device = "d1" }]
[[target]]
name = "$target"
luns = [{ lun = 0, device = "d0" }]
[[target.acl]]
initiator = "$host"
chap_user = "host1"
chap_secret = "right-secret-123"
CONF
}

cluster_config() {
    local run="fb-$$-$RANDOM"
    cat <<CONF
portals = ["127.0.0.1:$portal_port"]
[cluster]
id = "$run"
member = "m1"
key = "flood-bench-key-$run"
mdns = false
links = [ { name = "a", addr = "127.0.1.61:7461" }, { name = "b", addr = "127.0.2.61:7461" } ]
node_id = 1
raft = "127.0.0.1:7561"
api = "127.0.0.1:$api_port"
api_token = "$token"
voters = [ { id = 1, raft = "127.0.0.1:7561" } ]
CONF
}

# start BIN CONFIG-FUNCTION: runs BIN with an open-file limit of 1024.
start() {
    local bin=$1 conf=$2 dir
    dir=$(mktemp -d -p "$work")
    $conf >"$dir/t.toml"
    log="$dir/trellisd.log"
    prlimit --nofile=1024:1024 "$bin" --config "$dir/t.toml" --data-dir "$dir" >/dev/null 2>"$log" &
    pid=$!
    for _ in $(seq 100); do
        grep -q "trellisd serving" "$log" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "run.sh: $bin did not start:" >&2; tail "$log" >&2; exit 1
}

stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }

# measure NAME GOOD-CLIENT-COMMAND FLOOD-ARGS...: one row.
measure() {
    local name=$1 good=$2; shift 2
    local c0 l0 r0 t0 peak=0 out ok="no"
    [[ "$good" == "-" ]] && ok="-"
    c0=$(cpu_ticks); l0=$(stat -c %s "$log"); r0=$(rss_kib); t0=$(date +%s.%N)
    "$flood" "$@" --seconds "$seconds" >"$work/flood.json" 2>/dev/null &
    local fpid=$!
    local sampled=0
    while kill -0 "$fpid" 2>/dev/null; do
        local r; r=$(rss_kib); ((r > peak)) && peak=$r
        sampled=$((sampled + 1))
        if ((sampled == 20)) && [[ "$good" != "-" ]]; then
            # Half-way through (about 2 s in): is a good client served?
            if timeout 20 bash -c "$good" >/dev/null 2>&1; then ok="yes"; fi
        fi
        sleep 0.1
    done
    wait "$fpid" || true
    local t1 c1 l1
    t1=$(date +%s.%N); c1=$(cpu_ticks); l1=$(stat -c %s "$log")
    out=$(cat "$work/flood.json")
    awk -v n="$name" -v b="$label" -v r0="$r0" -v pk="$peak" -v c0="$c0" -v c1="$c1" \
        -v l0="$l0" -v l1="$l1" -v t0="$t0" -v t1="$t1" -v g="$ok" -v o="$out" 'BEGIN {
        s = t1 - t0;
        printf "| %s | %s | %.1f | %.1f | %.2f | %.0f | %s | `%s` |\n", b, n, r0/1024, pk/1024, (c1-c0)/100/s, (l1-l0)/s, g, o
    }'
}

echo "| trellisd | flood | RSS before (MiB) | peak RSS (MiB) | CPU (cores) | log bytes/s | good client served | flood result |"
echo "|---|---|---:|---:|---:|---:|---|---|"
for label in new old; do
    bin=$new
    if [[ $label == old ]]; then
        [[ -n "$old" ]] || continue
        bin=$old
    fi
    start "$bin" cluster_config
    sleep 2
    measure api-idle "$cli --endpoints 127.0.0.1:$api_port --token $token member list" idle "127.0.0.1:$api_port" --hosts 10 --per-host 300
    stop
    start "$bin" standalone_config
    measure iscsi-idle "iscsi-inq -i $host iscsi://host1%right-secret-123@127.0.0.1:$portal_port/$target/0" idle "127.0.0.1:$portal_port" --hosts 10 --per-host 300
    stop
    start "$bin" standalone_config
    measure chap - chap "127.0.0.1:$portal_port" "$target" "$host" --parallel 16
    stop
    start "$bin" standalone_config
    measure rejects - rejects "127.0.0.1:$portal_port"
    stop
done
