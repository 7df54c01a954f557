#!/usr/bin/env bash
# A short coverage-guided run of every fuzz target, on the stable toolchain: what CI runs.
#
#   fuzz/run-short.sh [SECONDS]     (20 per target by default)
#
# cargo-fuzz needs nightly only for its sanitizers; the coverage instrumentation that
# guides libFuzzer is stable rustc (`-Cpasses=sancov-module` and LLVM's options), so the
# targets are built here with the same flags cargo-fuzz gives them with `-s none`. A
# crash fails the run and leaves its input under fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-20}
host=$(rustc -vV | sed -n 's/^host: //p')
# For the target only (--target): build scripts and proc-macros stay uninstrumented.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
cargo build --release --locked --bins --target "$host" --target-dir target/short

for target in decode_stream parse_request v2_decode; do
  mkdir -p "artifacts/$target"
  log="target/short/$target.log"
  if ! "target/short/$host/release/$target" -seed=1 -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="artifacts/$target/" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz target $target failed; its input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "$target: $runs executions in ${seconds}s, no failure"
done
