#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then runs every test.
# Real-client suites (Python/Node EWS and Graph clients) will install into .cache/ from here.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
cargo test --locked "$@"
