#!/usr/bin/env bash
# README command 2: set up the host (Debian + npm packages), build the guest
# image (cached), and run every test with Node's test runner.
# Integration tests need root (namespaces, TAP devices).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
./bin/colo image build
exec node scripts/run-tests.mjs "$@"
