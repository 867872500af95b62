#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages mambaserve needs to build, run and test. Idempotent: installs
# only what is missing, so it is cheap to call from every entry point, and never touches apt when
# everything is already present (machines without network access work as long as nothing is
# missing).
#   --build-only   only what configuring and building everything (CUDA module, tests, benchmarks)
#                  needs: what scripts/gpu-check.sh uses; no Python packages or Prometheus
set -euo pipefail

build_packages=(
  build-essential cmake ninja-build pkg-config
  libabsl-dev libopenblas-dev libre2-dev libutf8proc-dev nlohmann-json3-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev zlib1g-dev libcli11-dev libssl-dev libhiredis-dev
  libdnnl-dev
  # Debian's oneDNN is built with an OpenCL GPU runtime, so its CMake package config requires
  # OpenCL's headers and loader; libdnnl-dev only recommends them, and recommends are not installed.
  ocl-icd-opencl-dev
)
other_packages=(
  ccache git clang-format clang libclang-rt-dev openssl patchelf
  python3-numpy python3-grpcio python3-protobuf python3-venv
  prometheus python3-matplotlib python3-yaml nginx curl redis-server
)

packages=("${build_packages[@]}")
[[ "${1:-}" == "--build-only" ]] || packages+=("${other_packages[@]}")

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-deps: no dpkg on this system; install the equivalents of: ${packages[*]}" >&2
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo_cmd=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! { "${sudo_cmd[@]}" apt-get update -qq &&
         "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "install-deps: apt-get failed (offline?); still missing: ${missing[*]}" >&2
    exit 1
  fi
fi
echo "install-deps: all packages present"
