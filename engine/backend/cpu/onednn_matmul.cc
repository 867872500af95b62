#include "engine/backend/cpu/onednn_matmul.h"

#include <cstring>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <string_view>
#include <tuple>
#include <vector>

// From libgomp, oneDNN's threading runtime in Debian's build (declared here rather than through
// <omp.h>, which clang builds do not have without -fopenmp).
extern "C" void omp_set_num_threads(int);

namespace mambaserve::cpu {
namespace {

using dnnl::memory;

const dnnl::engine& CpuEngine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One compiled kernel per product shape and thread: creating one costs 0.2-0.5 ms (JIT code
// generation), running one a few microseconds of setup.
using Shape = std::tuple<int64_t, int64_t, int64_t, int>;  // tokens rows cols dtype
constexpr size_t kMaxCachedShapes = 512;

struct Kernel {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
};

struct ThreadState {
  ThreadState() : stream(CpuEngine()) {
    omp_set_num_threads(1);  // this thread's oneDNN calls run on this thread alone
  }
  dnnl::stream stream;
  std::map<Shape, std::optional<Kernel>> primitives;  // nullopt: oneDNN has no kernel
  std::vector<float> dense_dst;  // the product, when the caller's rows are strided
};

std::optional<Kernel> CreateKernel(const Shape& shape) {
  const auto [tokens, rows, cols, dtype_index] = shape;
  const memory::data_type dt = static_cast<DType>(dtype_index) == DType::kBF16
                                   ? memory::data_type::bf16
                                   : memory::data_type::f32;
  // src [tokens][cols]; weights as the [cols][rows] matrix Wᵀ in the blocked format
  // weight_panels.h describes; dst [tokens][rows]. Both dense: with blocked weights oneDNN's
  // optimised kernels take no row strides (given one, it chose its reference loop).
  const memory::desc src({tokens, cols}, dt, memory::format_tag::ab);
  const memory::desc weights({cols, rows}, dt,
                             dt == memory::data_type::bf16 ? memory::format_tag::BA16a64b2a
                                                           : memory::format_tag::BA16a64b);
  const memory::desc dst({tokens, rows}, memory::data_type::f32, memory::format_tag::ab);
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights, dst), CpuEngine());
    // Where the CPU lacks the ISA oneDNN's optimised kernels want for this format (no AVX-512), it
    // falls back to a reference loop hundreds of times slower than OpenBLAS: not worth having.
    if (std::string_view(pd.impl_info_str()).starts_with("ref")) return std::nullopt;
    return Kernel{pd, dnnl::matmul(pd)};
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}

}  // namespace

bool OneDnnAvailable() {
  static const bool available = [] {
    try {
      return dnnl::engine::get_count(dnnl::engine::kind::cpu) > 0;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return available;
}

bool OneDnnMatMul(const void* x, int64_t tokens, const void* panels, int64_t rows, int64_t cols,
                  DType dtype, float* y, int64_t ldy) {
  thread_local ThreadState state;
  const Shape shape{tokens, rows, cols, static_cast<int>(dtype)};
  auto it = state.primitives.find(shape);
  if (it == state.primitives.end()) {
    if (state.primitives.size() >= kMaxCachedShapes) state.primitives.clear();
    it = state.primitives.emplace(shape, CreateKernel(shape)).first;
  }
  if (!it->second.has_value()) return false;
  const Kernel& kernel = *it->second;
  const dnnl::matmul::primitive_desc& pd = kernel.pd;
  try {
    // oneDNN's memory objects take non-const pointers; it only reads src and weights.
    const memory src(pd.src_desc(), CpuEngine(), const_cast<void*>(x));
    const memory weights(pd.weights_desc(), CpuEngine(), const_cast<void*>(panels));
    // A thread's slice of the rows is strided in y: computed densely, then copied (tokens x rows
    // floats, against tokens x rows x cols multiply-adds).
    const bool strided = ldy != rows;
    if (strided) state.dense_dst.resize(static_cast<size_t>(tokens * rows));
    const memory dst(pd.dst_desc(), CpuEngine(), strided ? state.dense_dst.data() : y);
    kernel.primitive.execute(
        state.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}});
    state.stream.wait();
    if (strided) {
      for (int64_t t = 0; t < tokens; ++t) {
        std::memcpy(y + t * ldy, state.dense_dst.data() + t * rows, rows * sizeof(float));
      }
    }
  } catch (const dnnl::error&) {
    return false;
  }
  return true;
}

}  // namespace mambaserve::cpu
