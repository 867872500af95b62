#include "engine/backend/cpu/onednn_matmul.h"

#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <tuple>

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
using Shape =
    std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int>;  // tokens rows cols ldx ldy dtype
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
};

std::optional<Kernel> CreateKernel(const Shape& shape) {
  const auto [tokens, rows, cols, ldx, ldy, dtype_index] = shape;
  const memory::data_type dt = static_cast<DType>(dtype_index) == DType::kBF16
                                   ? memory::data_type::bf16
                                   : memory::data_type::f32;
  // src [tokens][cols] with row stride ldx; weights as the [cols][rows] matrix Wᵀ, i.e. W's own
  // row-major layout (strides 1, cols); dst [tokens][rows] with row stride ldy.
  const memory::desc src({tokens, cols}, dt, memory::dims{ldx, 1});
  const memory::desc weights({cols, rows}, dt, memory::dims{1, cols});
  const memory::desc dst({tokens, rows}, memory::data_type::f32, memory::dims{ldy, 1});
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights, dst), CpuEngine());
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

bool OneDnnMatMul(const void* x, int64_t ldx, int64_t tokens, const void* w, int64_t rows,
                  int64_t cols, DType dtype, float* y, int64_t ldy) {
  thread_local ThreadState state;
  const Shape shape{tokens, rows, cols, ldx, ldy, static_cast<int>(dtype)};
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
    const memory weights(pd.weights_desc(), CpuEngine(), const_cast<void*>(w));
    const memory dst(pd.dst_desc(), CpuEngine(), y);
    kernel.primitive.execute(
        state.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}});
    state.stream.wait();
  } catch (const dnnl::error&) {
    return false;
  }
  return true;
}

}  // namespace mambaserve::cpu
