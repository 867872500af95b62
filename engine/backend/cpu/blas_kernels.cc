#include "engine/backend/cpu/blas_kernels.h"

#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace mambaserve {

const char* BlasCoreName() { return openblas_get_corename(); }

void ReexecWithFastBlasKernelsIfNeeded(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user (or a previous exec) chose
  if (std::strcmp(BlasCoreName(), "Prescott") != 0) return;
  const char* core = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    core = "SkylakeX";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    core = "Haswell";
  }
  if (core == nullptr) return;
  setenv("OPENBLAS_CORETYPE", core, /*overwrite=*/0);
  execv("/proc/self/exe", argv);
  // exec failed: carry on with the slower kernels, which are still correct.
}

}  // namespace mambaserve
