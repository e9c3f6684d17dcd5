#!/usr/bin/env bash
# README command 1: set up the host (Debian packages, npm packages, build),
# build the guest image, then `colo demo`: a Redis guest protected in COLO
# compare mode with disk replication and an arbiter, under load from the
# client namespace; the primary host is killed at a random moment; the
# secondary takes over; every acknowledged write is verified; a report is
# printed and everything is cleaned up. Exit code 1 if a write was lost.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
./bin/colo image build
exec ./bin/colo demo "$@"
