#!/usr/bin/env bash
# Gathers what a runtime needs from a build tree into one folder, the way the container image's
# runtime stage receives it:
#   DEST/bin/mambaserve, DEST/bin/mambactl       the binaries
#   DEST/kernels/libmambaserve_cuda.so           the CUDA module, when the build has it (bin/../kernels
#                                                is where mambaserve looks for it)
#   DEST/lib/*.so*                               every shared library they load that a bare
#                                                Debian/Ubuntu base lacks (gRPC, protobuf, Abseil,
#                                                OpenBLAS, RE2, utf8proc, civetweb, ...), resolved by ldd
# The C/C++ runtime (glibc, libstdc++, libgcc) comes from the base image, and cuBLAS/cudart from the
# NVIDIA CUDA runtime base. Run with LD_LIBRARY_PATH=DEST/lib.
# EXTRA binaries (test and benchmark executables: scripts/gpu-bundle.sh) go into DEST/bin too, and
# their libraries into DEST/lib.
#   usage: scripts/bundle-runtime.sh BUILD_DIR DEST [EXTRA...]   (e.g. build/cpu /opt/mambaserve)
set -euo pipefail
build=${1:?usage: bundle-runtime.sh BUILD_DIR DEST [EXTRA...]}
dest=${2:?usage: bundle-runtime.sh BUILD_DIR DEST [EXTRA...]}
shift 2

mkdir -p "$dest/bin" "$dest/lib"
objects=()
for binary in "$build/bin/mambaserve" "$build/bin/mambactl" "$@"; do
  install -m 0755 "$binary" "$dest/bin/"
  objects+=("$dest/bin/$(basename "$binary")")
done
if [[ -f "$build/kernels/libmambaserve_cuda.so" ]]; then
  mkdir -p "$dest/kernels"
  install -m 0755 "$build/kernels/libmambaserve_cuda.so" "$dest/kernels/"
  objects+=("$dest/kernels/libmambaserve_cuda.so")
fi

# Provided by every base image (the C and C++ runtimes) or by the CUDA runtime base (cuBLAS, the
# driver): never copied.
base='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s|libcuda|libcublas|libcublasLt|libcudart|libnvidia)\.'
ldd "${objects[@]}" | awk '$2 == "=>" {print $1, $3}' | sort -u |
  while read -r name path; do
    [[ $name =~ $base ]] && continue
    if [[ $path != /* ]]; then  # "not found": the bundle would lack it too
      echo "bundle-runtime: $name is not found on this machine" >&2
      exit 1
    fi
    cp -L "$path" "$dest/lib/$name"  # -L: the file itself, not the distribution's symlink to it
  done
echo "bundle-runtime: $(find "$dest" -type f | wc -l) files, $(du -sh "$dest" | cut -f1) in $dest"
