#!/usr/bin/env bash
# Installs what is missing, builds mambaserve (Release, CPU backend; the CUDA module too when nvcc
# is present and MAMBASERVE_CUDA=1), and serves the embedded default model on 127.0.0.1:50051.
# Extra arguments go to `mambaserve serve` (e.g. --model DIR to serve a downloaded checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/mambaserve-ccache} CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD} CCACHE_NOHASHDIR=1
cmake --preset cpu -DMAMBASERVE_BUILD_TESTS=OFF -DMAMBASERVE_BUILD_BENCH=OFF >/dev/null
cmake --build build/cpu -j "$(nproc)" --target mambaserve mambactl
exec build/cpu/tools/mambaserve serve "$@"
