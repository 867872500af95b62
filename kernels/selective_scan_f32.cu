// Selective scan kernels with float output (see selective_scan_impl.cuh).
#include "kernels/selective_scan_impl.cuh"

namespace mambaserve::kernels {

LaunchResult InvokeSelectiveScanPrefillF32(const SelectiveScanParams& p, cudaStream_t stream) {
  return scan_impl::LaunchPrefill<float>(p, stream);
}

LaunchResult InvokeSelectiveScanUpdateF32(const SelectiveScanParams& p, cudaStream_t stream) {
  return scan_impl::LaunchUpdate<float>(p, stream);
}

}  // namespace mambaserve::kernels
