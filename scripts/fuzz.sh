#!/usr/bin/env bash
# Long fuzzing (docs/security.md): runs every target of tests/fuzz.rs, or the one named, for
# FUZZ_SECONDS each (default 3600) in a release build with overflow checks and debug
# assertions on in crmgate, and keeps the per-target summary.
#
#   scripts/fuzz.sh                      # every target, an hour each
#   FUZZ_SECONDS=120 scripts/fuzz.sh ews # one target, two minutes
#
# The build goes to its own target dir (target/fuzz-release), so it never replaces the release
# binary benchmarks use. Failing inputs land in target/fuzz-release/tmp/fuzz/; the summary in
# target/fuzz-release/summary-<time>.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
export FUZZ_SECONDS="${FUZZ_SECONDS:-3600}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/fuzz-release}"
filter=()
if [ $# -gt 0 ]; then
  filter=("fuzz_${1#fuzz_}" --exact)
fi
mkdir -p "$CARGO_TARGET_DIR"
summary="$CARGO_TARGET_DIR/summary-$(date -u +%Y%m%dT%H%M%SZ).txt"
echo "fuzzing ${1:-every target} for ${FUZZ_SECONDS} s each; summary: $summary"
cargo test --release --test fuzz \
  --config 'profile.release.package.crmgate.overflow-checks=true' \
  --config 'profile.release.package.crmgate.debug-assertions=true' \
  -- --test-threads=1 --nocapture "${filter[@]}" 2>&1 | tee "$summary.log"
status=${PIPESTATUS[0]}
# One line per target, in run order (a failing target prints its line twice).
grep -o 'FUZZ .*' "$summary.log" | awk '!seen[$0]++' > "$summary"
echo
cat "$summary"
exit "$status"
