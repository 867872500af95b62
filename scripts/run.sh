#!/usr/bin/env bash
# Installs what is missing, builds mambaserve (Release) and serves the embedded default model on
# 127.0.0.1:50051 (Prometheus metrics on 127.0.0.1:9400). With MAMBASERVE_CUDA=1 and nvcc present it
# also builds the CUDA backend module, which `--backend auto` uses when a GPU is there.
# Extra arguments go to `mambaserve serve` (e.g. --model DIR to serve a downloaded checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/mambaserve-ccache} CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD} CCACHE_NOHASHDIR=1
preset=cpu
targets=(mambaserve mambactl)
if [[ ${MAMBASERVE_CUDA:-0} == 1 ]]; then
  preset=cuda
  targets+=(mambaserve_cuda)
fi
cmake --preset "$preset" -DMAMBASERVE_BUILD_TESTS=OFF -DMAMBASERVE_BUILD_BENCH=OFF >/dev/null
cmake --build "build/$preset" -j "$(nproc)" --target "${targets[@]}"
exec "build/$preset/bin/mambaserve" serve "$@"
