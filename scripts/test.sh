#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the real clients the tests drive into
# .cache/ (Python: exchangelib; Node: ews-javascript-api), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
mkdir -p .cache

# exchangelib 5.6.0 in a private virtualenv.
if ! .cache/venv/bin/python -c 'import exchangelib, sys; sys.exit(exchangelib.__version__ != "5.6.0")' 2>/dev/null; then
  python3 -m venv .cache/venv
  .cache/venv/bin/pip install --quiet --disable-pip-version-check exchangelib==5.6.0
fi

cargo test --locked "$@"
