// OpenBLAS 0.3.21 (Debian 12) picks its kernels from the CPUID model number and falls back to the
// SSE3 "Prescott" kernels on CPUs it does not know (e.g. virtualised Sapphire Rapids), which is
// 2-3x slower than its AVX-512 kernels on the same machine. It reads OPENBLAS_CORETYPE only when
// the library loads, so the choice must be made before that: by re-executing the process.
#pragma once

namespace mambaserve {

// If OpenBLAS chose the Prescott fallback, OPENBLAS_CORETYPE is unset, and the CPU has AVX-512
// (or AVX2), sets OPENBLAS_CORETYPE to SkylakeX (or Haswell) and re-executes the current program
// with the same arguments. Returns normally in every other case (including when exec fails).
void ReexecWithFastBlasKernelsIfNeeded(char** argv);

// The kernel family OpenBLAS is using ("SkylakeX", "Haswell", "Prescott", ...).
const char* BlasCoreName();

}  // namespace mambaserve
