// Element-type dispatch for the selective scan (plain C++: the kernels are in selective_scan_*.cu).
#include "kernels/selective_scan.h"

namespace mambaserve::kernels {

LaunchResult InvokeSelectiveScanPrefill(const SelectiveScanParams& p, cudaStream_t stream) {
  return p.y_type == GemmType::kBF16 ? InvokeSelectiveScanPrefillBf16(p, stream)
                                     : InvokeSelectiveScanPrefillF32(p, stream);
}

LaunchResult InvokeSelectiveScanUpdate(const SelectiveScanParams& p, cudaStream_t stream) {
  return p.y_type == GemmType::kBF16 ? InvokeSelectiveScanUpdateBf16(p, stream)
                                     : InvokeSelectiveScanUpdateF32(p, stream);
}

}  // namespace mambaserve::kernels
