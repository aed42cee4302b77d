#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the real clients the tests drive
# (exchangelib and msgraph-sdk into .cache/venv, vdirsyncer and khard into .cache/venv-dav,
# ews-javascript-api and the Graph JS client into .cache/node, DavMail and SyncEvolution
# from Debian),
# then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
mkdir -p .cache

# exchangelib 5.6.0, msgraph-sdk 1.65.0 and O365 2.1.10 in a private virtualenv.
if ! .cache/venv/bin/python -c 'import exchangelib, msgraph, O365, sys; sys.exit(exchangelib.__version__ != "5.6.0")' 2>/dev/null; then
  python3 -m venv .cache/venv
  .cache/venv/bin/pip install --quiet --disable-pip-version-check exchangelib==5.6.0 msgraph-sdk==1.65.0 O365==2.1.10
fi

# vdirsyncer 0.21.0 and khard 0.22.0 (the CardDAV clients) in their own virtualenv.
if ! .cache/venv-dav/bin/vdirsyncer --version 2>/dev/null | grep -q '0.21.0' ||
   ! [ -x .cache/venv-dav/bin/khard ]; then
  python3 -m venv .cache/venv-dav
  .cache/venv-dav/bin/pip install --quiet --disable-pip-version-check vdirsyncer==0.21.0 khard==0.22.0
fi

# ews-javascript-api 0.15.3 and @microsoft/microsoft-graph-client 3.0.7 in a private
# node_modules.
if ! [ -f .cache/node/node_modules/ews-javascript-api/package.json ] ||
   ! grep -q '"version": "0.15.3"' .cache/node/node_modules/ews-javascript-api/package.json ||
   ! [ -f .cache/node/node_modules/@microsoft/microsoft-graph-client/package.json ]; then
  command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
  mkdir -p .cache/node
  (cd .cache/node && [ -f package.json ] || echo '{"name":"crmgate-test-clients","private":true}' > package.json)
  (cd .cache/node && npm install --silent --no-audit --no-fund ews-javascript-api@0.15.3 \
    @microsoft/microsoft-graph-client@3.0.7 isomorphic-fetch@3)
fi

# DavMail 6.0.1 (Debian package; needs root, as CI has).
if ! [ -f /usr/share/davmail/davmail.jar ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq davmail >/dev/null
fi

# SyncEvolution (Debian package; CardDAV backend for its test).
if ! command -v syncevolution >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq syncevolution syncevolution-libs >/dev/null
fi

cargo test --locked "$@"
