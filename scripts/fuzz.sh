#!/usr/bin/env bash
# Fuzzes every parser that reads untrusted bytes with libFuzzer (clang, AddressSanitizer + UBSan):
# session blobs, GenerateRequest validation and tokenization, safetensors headers and indexes,
# config.json, tokenizer.json and tokenizer encode/decode. Each target starts from its seed corpus
# (tests/fuzz/corpus/TARGET, in the repository) and runs for SECONDS; what it finds new is kept in
# build/asan/fuzz-corpus/TARGET, so later runs here start further on. The targets are built by the
# `asan` preset (clang, -fsanitize=fuzzer-no-link on every library for coverage feedback). Prints executions, coverage
# (edges: "cov", features: "ft") and corpus size per target and writes them as JSON. A crash, leak,
# timeout or sanitizer report fails the run; the input is left under build/asan/fuzz-crashes/
# (replay it with `build/asan/tests/.../TARGET FILE`, then make it a regression test).
#   scripts/fuzz.sh [SECONDS] [--seed N] [--json FILE]     (a longer run: scripts/fuzz.sh 600)
# --seed fixes libFuzzer's mutation sequence (0, the default: a new one each run). .ci/run uses
# `20 --seed 1` from the seed corpora alone, so every run tries the same mutations in the same order
# (as far as the machine's speed takes it in 20 s) and a red CI means a change, not luck; exploring
# is for the longer runs, whose findings become seeds and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=20
seed=0
json=build/asan/fuzz-summary.json
while (($#)); do
  case $1 in
    --json) json=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) seconds=$1; shift ;;
  esac
done
targets=(session_blob_fuzz generate_request_fuzz safetensors_fuzz safetensors_index_fuzz
         config_json_fuzz tokenizer_fuzz)

export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/mambaserve-ccache}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD} CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
cmake --preset asan -DMAMBASERVE_WERROR=ON -DMAMBASERVE_BUILD_TESTS=ON >/dev/null
cmake --build build/asan -j "${MAMBASERVE_JOBS:-$(nproc)}" --target "${targets[@]}"

mkdir -p build/asan/fuzz-crashes
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
rows=()
failed=0
printf '%-24s %10s %8s %8s %8s %8s\n' target executions exec/s cov ft corpus
for target in "${targets[@]}"; do
  binary=$(find build/asan/tests -name "$target" -type f -perm -u+x | head -1)
  corpus=build/asan/fuzz-corpus/$target
  log=build/asan/fuzz-$target.log
  mkdir -p "$corpus"
  rc=0
  # -timeout: one input running 10 s is a hang; -rss_limit_mb: one using 2 GB is a leak or a
  # missing bound. The first directory collects new inputs; the seeds are read, never written.
  "$binary" -max_total_time="$seconds" -seed="$seed" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="build/asan/fuzz-crashes/$target-" "$corpus" "tests/fuzz/corpus/$target" \
    >"$log" 2>&1 || rc=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  stat() { grep -oE "stat::$1:[[:space:]]+[0-9]+" "$log" | grep -oE '[0-9]+$' || echo 0; }
  executions=$(stat number_of_executed_units)
  per_second=$(stat average_exec_per_sec)
  cov=$(grep -oE 'cov: [0-9]+' <<<"$done_line" | grep -oE '[0-9]+' || echo 0)
  ft=$(grep -oE 'ft: [0-9]+' <<<"$done_line" | grep -oE '[0-9]+' || echo 0)
  corpus_size=$(find "$corpus" -type f | wc -l)
  printf '%-24s %10s %8s %8s %8s %8s\n' "$target" "$executions" "$per_second" "$cov" "$ft" \
    "$corpus_size"
  rows+=("{\"target\": \"$target\", \"seconds\": $seconds, \"executions\": $executions, \
\"exec_per_s\": $per_second, \"edges_covered\": $cov, \"features\": $ft, \
\"corpus_files\": $corpus_size, \"exit_code\": $rc}")
  if ((rc != 0)); then
    failed=1
    echo "---- $target failed (exit $rc); the end of its log ($log):"
    tail -40 "$log"
  fi
done
mkdir -p "$(dirname "$json")"
(IFS=,; echo "[${rows[*]}]") | python3 -m json.tool >"$json"
echo "fuzz: summary in $json"
exit "$failed"
