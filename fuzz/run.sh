#!/usr/bin/env bash
# Runs every fuzz target under AFL++ (cargo-afl) for a bounded time and
# fails when any found a crash or a hang.
#
#   fuzz/run.sh [--seconds N] [--targets "pdu session ..."] [--out DIR]
#
# Installs cargo-afl (which builds its own AFL++ runtime) when missing,
# builds the targets instrumented, starts each from the committed corpus
# (fuzz/corpus/<target>) and prints executions, paths and edge coverage.
set -euo pipefail
cd "$(dirname "$0")"

seconds=60
targets="pdu session cdb datagram api"
out="${FUZZ_OUT:-target/afl-out}"
while (($#)); do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --targets) targets="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "fuzz/run.sh: unknown argument $1 (--seconds N, --targets LIST, --out DIR)" >&2; exit 2 ;;
    esac
done

log() { printf 'fuzz: %s\n' "$*" >&2; }

if ! cargo afl --version >/dev/null 2>&1; then
    log "installing cargo-afl (it builds AFL++ for this toolchain)"
    cargo install cargo-afl --locked --version 0.18.2
fi

log "building the targets instrumented (cargo afl build --release)"
cargo afl build --release --bins --quiet

# AFL++ refuses to start on machines tuned for other uses unless told: no
# CPU frequency governor here, core dumps may go to a handler, no UI.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
export AFL_NO_AFFINITY=1 AFL_FORKSRV_INIT_TMOUT=20000 AFL_SKIP_CRASHES=0

failed=0
for t in $targets; do
    dir="$out/$t"
    rm -rf "$dir"
    mkdir -p "$dir"
    log "$t: ${seconds}s from $(ls "corpus/$t" | wc -l) seeds"
    # -V: stop after N seconds; -t: a run over 1 s is a hang.
    if ! cargo afl fuzz -V "$seconds" -t 1000 -i "corpus/$t" -o "$dir" "target/release/$t" >"$dir/afl.log" 2>&1; then
        log "$t: afl-fuzz failed:"
        tail -30 "$dir/afl.log" >&2
        failed=1
        continue
    fi
    stats="$dir/default/fuzzer_stats"
    get() { awk -F': *' -v k="$1" '$1 ~ "^"k"[ ]*$" {print $2}' "$stats"; }
    crashes=$(find "$dir/default/crashes" -name 'id:*' 2>/dev/null | wc -l)
    hangs=$(find "$dir/default/hangs" -name 'id:*' 2>/dev/null | wc -l)
    printf 'fuzz: %-9s execs %10s  execs/s %8s  corpus %5s  edges %6s (%s)  crashes %s  hangs %s\n' \
        "$t" "$(get execs_done)" "$(get execs_per_sec)" "$(get corpus_count)" \
        "$(get edges_found)" "$(get bitmap_cvg)" "$crashes" "$hangs"
    if ((crashes + hangs > 0)); then
        log "$t: findings in $dir/default/{crashes,hangs}; replay one with: target/release/$t < FILE"
        failed=1
    fi
done
exit "$failed"
