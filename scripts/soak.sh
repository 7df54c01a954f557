#!/usr/bin/env bash
# Soak the dispatcher: the real `loadwise serve` (release build) for DURATION
# seconds while backends join and leave and clients keep picking; see crates/cli/tests/soak.rs
# for what is checked. CI runs the same test for 40 s in debug mode.
#
#   scripts/soak.sh          # 30 minutes
#   scripts/soak.sh 600      # 10 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-1800}"
case "$secs" in
  ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
echo "soaking for ${secs}s (release build)" >&2
LOADWISE_SOAK_SECS="$secs" exec cargo test --release -p loadwise-cli --test soak -- --nocapture
