#!/usr/bin/env bash
# The GPU bundle (scripts/gpu-bundle.sh) is self-contained: packed, carried to another folder and
# unpacked, its binaries run with an empty environment (no LD_LIBRARY_PATH) and load everything
# they need from the bundle. Here, without a GPU, the GPU tests skip and the rest pass; mambaserve
# loads its CUDA module, finds no device and serves evaluations on the CPU.
#   tests/deploy/test_gpu_bundle.sh CUDA_BUILD_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:?usage: test_gpu_bundle.sh CUDA_BUILD_DIR}" && pwd)
work=$(mktemp -d /tmp/mambaserve-gpu-bundle-XXXXXX)
trap 'rm -rf "$work"' EXIT

"$root/scripts/gpu-bundle.sh" "$build" "$work/made/gpu-bundle" | tail -1
# It must fit what a GPU machine accepts carried with a run: 64 MiB in all.
size=$(stat -c %s "$work/made/gpu-bundle.tar.gz")
if (( size > 64 * 1024 * 1024 )); then
  echo "FAIL: the packed bundle is $size bytes, over 64 MiB"
  exit 1
fi
mkdir "$work/elsewhere"
tar -C "$work/elsewhere" -xzf "$work/made/gpu-bundle.tar.gz"
rm -rf "$work/made"
bundle=$work/elsewhere/gpu-bundle
run() { env -i PATH=/usr/bin:/bin HOME="$work" "$@"; }

for t in kernels_math_test kernels_cuda_ops_test engine_backend_factory_test \
         engine_cuda_backend_test; do
  run "$bundle/bin/$t" >"$work/$t.log" 2>&1 || {
    tail -30 "$work/$t.log"
    echo "FAIL: $t from the bundle"
    exit 1
  }
  echo "ok: $t: $(grep -E '^\[  (PASSED  |SKIPPED )\] [0-9]+ test' "$work/$t.log" | tr '\n' ' ')"
done
run "$bundle/bin/mambaserve" make-model --preset tiny --seed 3 --out "$work/model" >/dev/null
run "$bundle/bin/mambaserve" eval --model "$work/model" --tokens 1,2,3 --generate 4 --backend auto \
  --json "$work/eval.json" >/dev/null 2>"$work/eval.log" || {
  cat "$work/eval.log"
  echo "FAIL: mambaserve eval from the bundle"
  exit 1
}
grep -q '"generated"' "$work/eval.json"
run "$bundle/bin/mambactl" --help >/dev/null
# gpu-check.sh's mambabench stage, from the bundle (the server falls back to the CPU here).
run "$root/bench/mambabench_live.sh" --mambaserve "$bundle/bin/mambaserve" \
  --mambabench "$bundle/bin/mambabench" --model "$work/model" --backend auto \
  --serve-args "--threads 1" --out "$work/mambabench.json" -- --concurrency 2 --requests 4 \
  --prompt-tokens 3 --output-tokens 4 >"$work/mambabench.log" 2>&1 || {
  tail -20 "$work/mambabench.log"
  echo "FAIL: mambabench against a server from the bundle"
  exit 1
}
grep -q '"requests_ok": 4' "$work/mambabench.json"
echo "gpu bundle: self-contained"
