#!/usr/bin/env bash
# Run libiscsi's iscsi-test-cu once against Debian's tgt (the reference
# target), exporting a scratch backing file as LUN 1 (LUN 0 is tgt's
# controller), and trim the output to the per-test result lines plus the
# summary: that trimmed file is benches/fio/tgt-conformance-baseline.txt.
#
# Usage: tgt-conformance.sh [--out FILE] [--exclude TEST,...] [--timeout S]
#   --exclude  leaf tests (e.g. ALL.Sanitize.BlockEraseReserved) to leave out;
#              the rest of ALL.* is then passed to -t as a comma list
#   --out      trimmed result file   [benches/fio/tgt-conformance-baseline.txt]
#   --timeout  seconds before the run is killed [1200]
# Environment: TGT_PORTAL, TGT_IQN, TGT_CONTROL_PORT as for run.sh;
# TGT_BSOFLAGS (default empty here: buffered rdwr, see below);
# SCRATCH (backing file, default /var/tmp/trellis-bench/conformance.img, 1 GiB).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Buffered rdwr by default: with bsoflags=direct tgt 1.0.85 fails unaligned
# O_DIRECT I/O (EINVAL) in several tests, which is not the reference baseline.
TGT_BSOFLAGS="${TGT_BSOFLAGS-}"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"

OUT="$HERE/tgt-conformance-baseline.txt"
EXCLUDE=""
TIMEOUT=1200
SCRATCH="${SCRATCH:-/var/tmp/trellis-bench/conformance.img}"
INIT1=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test
INIT2=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2

while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT="${2:?--out needs a path}"; shift 2 ;;
        --exclude) EXCLUDE="${2:?--exclude needs a list}"; shift 2 ;;
        --timeout) TIMEOUT="${2:?--timeout needs seconds}"; shift 2 ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
done

command -v iscsi-test-cu >/dev/null || die "iscsi-test-cu not found (apt-get install libiscsi-bin)"

trap cleanup_targets EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$(dirname "$SCRATCH")"
if [[ ! -f "$SCRATCH" ]]; then
    truncate -s 1G "$SCRATCH"
fi
start_tgt "$SCRATCH" "$(dirname "$SCRATCH")/tgtd-conformance.log"

tests=ALL
if [[ -n "$EXCLUDE" ]]; then
    # every leaf test under ALL (three dotted parts), minus the excluded ones
    tests="$(iscsi-test-cu -l | awk -F. -v ex=",$EXCLUDE," \
        'NF == 3 && $1 == "ALL" && index(ex, "," $0 ",") == 0' | paste -sd, -)"
fi

url="iscsi://$TGT_PORTAL/$TGT_IQN/$TGT_LUN"
raw="$(mktemp /var/tmp/trellis-bench/iscsi-test-cu.XXXXXX.log)"
log "iscsi-test-cu against $url (timeout ${TIMEOUT}s, full output: $raw)"
rc=0
timeout "$TIMEOUT" iscsi-test-cu --dataloss -i "$INIT1" -I "$INIT2" -t "$tests" \
    "$url" "$url" >"$raw" 2>&1 || rc=$?
if [[ "$rc" -eq 124 ]]; then
    last="$(grep -E '^  Test: ' "$raw" | tail -n1 || true)"
    die "iscsi-test-cu timed out after ${TIMEOUT}s; last test started: ${last:-unknown}. Re-run with --exclude <that test>"
fi
log "iscsi-test-cu exited with $rc"

{
    echo "# iscsi-test-cu (libiscsi-bin $(dpkg-query -W -f='${Version}' libiscsi-bin 2>/dev/null || echo '?')) against tgt $(dpkg-query -W -f='${Version}' tgt 2>/dev/null || echo '?')"
    echo "# $url, backing store rdwr${TGT_BSOFLAGS:+ bsoflags=$TGT_BSOFLAGS}"
    echo "# iscsi-test-cu --dataloss -i $INIT1 -I $INIT2 -t ${EXCLUDE:+ALL minus $EXCLUDE}${EXCLUDE:-ALL} URL URL"
    echo "# One line per test (verdict, Suite.Test, reason), then CUnit's summary."
    echo "# 'skipped' = CUnit passed but the test printed [SKIPPED] (feature not offered)."
    echo "# Regenerate with benches/fio/tgt-conformance.sh"
    echo
    python3 - "$raw" <<'PY'
import re, sys
suite = test = None
out, counts = [], {"passed": 0, "FAILED": 0, "skipped": 0}
skipped = False
reason = ""
summary = []

def finish(verdict):
    global test
    if test is None:
        return
    if verdict == "passed" and skipped:
        verdict = "skipped"
    counts[verdict] += 1
    line = "%-8s %s.%s" % (verdict, suite, test)
    if verdict != "passed" and reason:
        line += "  -- " + reason
    out.append(line)
    test = None

lines = open(sys.argv[1], errors="replace").read().splitlines()
in_summary = False
for raw in lines:
    if raw.startswith("Run Summary:"):
        in_summary = True
    if in_summary:
        if raw.strip():
            summary.append(raw.rstrip())
        continue
    m = re.match(r"^Suite: (\S+)", raw)
    if m:
        suite = m.group(1)
        continue
    m = re.match(r"^  Test: (\S+) \.\.\.(.*)$", raw)
    if m:
        test, rest, skipped, reason = m.group(1), m.group(2), False, ""
        raw = rest
    if test is None:
        continue
    s = raw.strip()
    if "[SKIPPED]" in s:
        skipped = True
        reason = reason or s[s.index("[SKIPPED]") + 10:].strip()
    if "[FAILED]" in s and not s.startswith("passed"):
        reason = s[s.index("[FAILED]") + 9:].strip()
    if s.startswith("passed") or s.endswith("...passed") or s == "passed":
        finish("passed")
    elif s.startswith("FAILED") or s.endswith("FAILED"):
        finish("FAILED")
total = sum(counts.values())
print("\n".join(out))
print()
print("\n".join(summary))
print()
print("Per-test tally: %d run, %d passed, %d failed, %d skipped (skipped = CUnit pass with [SKIPPED])"
      % (total, counts["passed"], counts["FAILED"], counts["skipped"]))
PY
} >"$OUT"
log "trimmed results in $OUT"
sed -n '/^Run Summary:/,$p' "$OUT"
