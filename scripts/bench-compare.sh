#!/usr/bin/env bash
# Runs the EWS and Graph benchmarks of an earlier revision and of the working tree side by
# side, in one run on this machine, alternating (base, new, base, new), so a refactor can be
# shown to cost nothing: first sync, no-change polls as a ratio to bare hyper, UpdateItem
# round trip, Graph delta.
#
#   scripts/bench-compare.sh <base-rev> [rounds]      # e.g. scripts/bench-compare.sh 3143225
#
# The base revision is checked out into target/bench-base (a git worktree) and built with
# its own target dir; nothing of the working tree changes. Needs ~15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
base_rev=${1:?usage: scripts/bench-compare.sh <base-rev> [rounds]}
rounds=${2:-1}
root=$(pwd)
wt="$root/target/bench-base"

if [ -d "$wt" ]; then
  git worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
fi
git worktree prune
git worktree add --detach "$wt" "$base_rev" >/dev/null
trap 'git worktree remove --force "$wt" >/dev/null 2>&1 || true' EXIT

build() { # dir target-dir
  local log
  log=$(cd "$1" && CARGO_TARGET_DIR="$2" cargo bench --locked --no-run --bench ews --bench graph 2>&1) ||
    { echo "$log" | tail -30 >&2; echo "build of $1 failed" >&2; return 1; }
  echo "$log" | grep -E '^\s+Executable' | sed -E 's/.*\((.*)\)/\1/'
}
echo "building $base_rev (base) and the working tree (new) ..." >&2
base_bins=$(build "$wt" "$root/target/bench-base-target")
new_bins=$(build "$root" "$root/target")
bin_of() { echo "$1" | grep "/$2-" | head -1; }

# The lines each benchmark prints that carry its figures.
keep='contacts/s|req/s|ratio|UpdateItem|FindItem|round trip'
run() { # label dir binary
  local out
  out=$(cd "$2" && "$3" --bench 2>&1) || { echo "$out" >&2; exit 1; }
  echo "$out" | grep -E "$keep" | sed "s/^/$1  /"
}
for r in $(seq 1 "$rounds"); do
  for b in ews graph; do
    echo "== round $r, bench $b"
    run "base $base_rev" "$wt" "$(bin_of "$base_bins" "$b")"
    run "new  $(git rev-parse --short HEAD)$(git diff --quiet || echo +wt)" "$root" "$(bin_of "$new_bins" "$b")"
  done
done
