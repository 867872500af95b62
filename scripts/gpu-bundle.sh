#!/usr/bin/env bash
# Builds here (no GPU needed) everything scripts/gpu-check.sh runs on a GPU machine, as one folder
# that needs nothing from that machine but the C/C++ runtime, the NVIDIA driver and cuBLAS/cudart
# (CUDA 13): the GPU test and benchmark binaries, mambabench, mambaserve and mambactl, the CUDA
# module for sm_80/86/89/90, and every other shared library they load (gRPC, protobuf, Abseil, ...),
# found with ldd. The binaries carry RPATH=$ORIGIN/../lib (DT_RPATH, so it also serves the
# libraries' own dependencies): no LD_LIBRARY_PATH is needed. Debug symbols are stripped, and the
# folder is also packed as DEST.tar.gz (about 48 MB; oneDNN is 40 MB and OpenBLAS 35 MB unpacked),
# what a run carries to the GPU machine (at most 64 MiB, which tests/deploy/test_gpu_bundle.sh
# checks).
#   scripts/gpu-bundle.sh [BUILD_DIR] [DEST]     (default: build/cuda build/gpu-bundle; git-ignored)
# Then on the GPU machine: scripts/gpu-check.sh --bundle build/gpu-bundle.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/cuda}
dest=${2:-build/gpu-bundle}
max_mib=60
tests=(kernels_math_test kernels_cuda_ops_test engine_cuda_backend_test engine_backend_factory_test)

export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/mambaserve-ccache}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD} CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake --preset cuda -B "$build" -DMAMBASERVE_BUILD_TESTS=ON -DMAMBASERVE_BUILD_BENCH=ON
fi
cmake --build "$build" -j "${MAMBASERVE_JOBS:-$(nproc)}" --target mambaserve mambactl mambaserve_cuda \
  cuda_bench mambabench "${tests[@]}"

extras=("$build/bench/cuda_bench" "$build/bench/mambabench")
for t in "${tests[@]}"; do extras+=("$(find "$build/tests" -name "$t" -type f -perm -u+x | head -1)"); done
rm -rf "$dest"
scripts/bundle-runtime.sh "$build" "$dest" "${extras[@]}" >/dev/null
strip --strip-unneeded "$dest"/bin/* "$dest"/kernels/*.so "$dest"/lib/*
patchelf --force-rpath --set-rpath '$ORIGIN/../lib' "$dest"/bin/* "$dest"/kernels/*.so

# Self-contained: with nothing in the environment, every library bundle-runtime.sh put in lib/
# (all but what it leaves to the machine; it refuses one it cannot find) is loaded from there,
# through the RPATH alone.
outside=$(env -i PATH=/usr/bin:/bin ldd "$dest"/bin/* "$dest"/kernels/*.so |
  awk '$2 == "=>" {print $1, $3}' | sort -u |
  while read -r name path; do
    [[ -e $dest/lib/$name ]] || continue
    [[ $(realpath -m "$path") == "$(realpath "$dest")"/lib/* ]] || echo "$name => $path"
  done)
if [[ -n $outside ]]; then
  echo "gpu-bundle: resolved outside the bundle:" >&2
  echo "$outside" >&2
  exit 1
fi
archive=$dest.tar.gz
tar -C "$(dirname "$dest")" -czf "$archive" "$(basename "$dest")"
mib=$(( ($(stat -c %s "$archive") + (1 << 20) - 1) >> 20 ))
if ((mib > max_mib)); then
  echo "gpu-bundle: $archive is $mib MiB, over the $max_mib MiB budget" >&2
  exit 1
fi
echo "gpu-bundle: $(find "$dest" -type f | wc -l) files, $(du -sm "$dest" | cut -f1) MiB in $dest;" \
  "$mib MiB packed as $archive"
