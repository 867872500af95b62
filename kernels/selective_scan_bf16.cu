// Selective scan kernels with __nv_bfloat16 output (see selective_scan_impl.cuh).
#include "kernels/selective_scan_impl.cuh"

namespace mambaserve::kernels {

LaunchResult InvokeSelectiveScanPrefillBf16(const SelectiveScanParams& p, cudaStream_t stream) {
  return scan_impl::LaunchPrefill<__nv_bfloat16>(p, stream);
}

LaunchResult InvokeSelectiveScanUpdateBf16(const SelectiveScanParams& p, cudaStream_t stream) {
  return scan_impl::LaunchUpdate<__nv_bfloat16>(p, stream);
}

}  // namespace mambaserve::kernels
