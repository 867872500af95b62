// The compute interface the scheduler drives. One implementation per device kind (CPU, CUDA); the
// scheduler and server never know which one runs. Only the scheduler thread calls a Backend.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model.h"

namespace mambaserve {

// One sequence's share of a forward step. A sequence with many tokens is a prefill (chunked inside
// the backend so memory stays constant), one token is a decode; both kinds mix freely in a step.
struct SequenceInput {
  int slot = 0;                     // state-pool slot this sequence reads and updates
  std::span<const int32_t> tokens;  // new tokens, at least one; every id < vocab_size
  bool start_fresh = false;         // zero the slot's state before the first token
  bool want_logits = true;          // return logits for the last token
  // With want_logits: only the greedy token (StepOutput::argmax) is needed, so the backend may
  // leave this sequence's logits row unwritten. The CUDA backend then picks the token on the
  // device and copies back 4 bytes instead of the whole vocabulary row.
  bool token_only = false;
  // With want_logits: logits for every token of `tokens`, in order, not only the last (prompt
  // scoring). Never with token_only.
  bool all_logits = false;
};

struct Step {
  std::vector<SequenceInput> sequences;  // distinct slots
};

// Where a logits buffer's memory comes from when not the heap: a backend whose device copies
// logits into host memory gives page-locked memory (a copy into pageable memory goes through a
// driver staging buffer at a fraction of the bus rate). Shared by every allocator copy, so it
// outlives the backend as long as a buffer from it does.
class HostMemory {
 public:
  virtual ~HostMemory() = default;
  virtual void* Allocate(size_t bytes) = 0;
  virtual void Free(void* p, size_t bytes) = 0;
};

// A std::allocator whose vectors leave new elements unwritten: growing a logits buffer costs no
// zero-fill (66 MB per step at batch 256 on a 65k vocabulary), since the backend writes every row
// it hands out. With a HostMemory, allocations come from it instead of the heap.
template <typename T>
struct UninitializedAllocator : std::allocator<T> {
  using value_type = T;
  // A vector moved or copied into another takes its source's allocator (so its memory's kind).
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_copy_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  using is_always_equal = std::false_type;
  template <typename U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };

  UninitializedAllocator() = default;
  explicit UninitializedAllocator(std::shared_ptr<HostMemory> memory) : memory(std::move(memory)) {}
  template <typename U>
  UninitializedAllocator(const UninitializedAllocator<U>& other) noexcept : memory(other.memory) {}

  T* allocate(size_t n) {
    if (memory == nullptr) return std::allocator<T>::allocate(n);
    return static_cast<T*>(memory->Allocate(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) {
    if (memory == nullptr) return std::allocator<T>::deallocate(p, n);
    memory->Free(p, n * sizeof(T));
  }
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;  // default-initialisation: nothing written for float
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <typename U>
  bool operator==(const UninitializedAllocator<U>& other) const noexcept {
    return memory == other.memory;
  }

  std::shared_ptr<HostMemory> memory;  // nullptr: the heap
};

using LogitsBuffer = std::vector<float, UninitializedAllocator<float>>;

struct StepOutput {
  int64_t vocab_size = 0;
  // [rows][vocab_size]: one row per sequence with want_logits (one per token with all_logits), in
  // step order. Reuse one StepOutput across steps: the buffer keeps its pages and is never
  // rewritten before the backend writes it.
  LogitsBuffer logits;
  std::vector<int> row_of_sequence;   // per sequence: its first row in `logits`, or -1
  std::vector<int> rows_of_sequence;  // per sequence: how many rows it has (0, 1 or its tokens)
  // Per sequence with want_logits: ArgMax of its last row (engine/greedy.h); -1 for the others.
  std::vector<int32_t> argmax;
  // The row of the sequence's last token.
  std::span<const float> Row(int sequence) const {
    return RowAt(row_of_sequence[sequence] + rows_of_sequence[sequence] - 1);
  }
  // With all_logits: the row of the sequence's `token`-th token of this step.
  std::span<const float> TokenRow(int sequence, int token) const {
    return RowAt(row_of_sequence[sequence] + token);
  }

 private:
  std::span<const float> RowAt(int row) const {
    return {logits.data() + static_cast<size_t>(row) * vocab_size, static_cast<size_t>(vocab_size)};
  }
};

struct BackendInfo {
  std::string name;    // "cpu" or "cuda"
  std::string device;  // e.g. "2 threads" / "NVIDIA H200"
  DType weight_dtype = DType::kF32;
  int num_slots = 0;
  int64_t state_bytes_per_slot = 0;
  int64_t weight_bytes = 0;  // as held by the backend
  int64_t state_pool_bytes = 0;
  int64_t device_memory_total = 0;  // 0 when not applicable
  int max_rows_per_pass = 0;        // the activation scratch's rows (a longer step is split)
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const ModelConfig& config() const = 0;
  virtual BackendInfo info() const = 0;
  int num_slots() const { return info().num_slots; }

  // Runs every sequence of `step` and writes the requested logits. On error, the states of the
  // step's slots are unspecified (the caller fails those sequences); other slots are untouched.
  virtual absl::Status Forward(const Step& step, StepOutput* out) = 0;

  // Slot state in the portable layout: conv [layers][E][K-1] then ssm [layers][E][N], fp32
  // little-endian, config().state_bytes() bytes. Used to park, restore, export and import sessions.
  virtual absl::Status ResetSlot(int slot) = 0;
  virtual absl::Status ReadSlot(int slot, std::span<uint8_t> out) = 0;
  virtual absl::Status WriteSlot(int slot, std::span<const uint8_t> in) = 0;
};

enum class BackendKind { kAuto, kCpu, kCuda };
absl::StatusOr<BackendKind> ParseBackendKind(std::string_view name);  // "auto", "cpu", "cuda"

struct BackendOptions {
  BackendKind kind = BackendKind::kAuto;
  int num_slots = 64;
  // Weights as held in memory: kF32 or kBF16; "auto" keeps bf16 checkpoints in bf16, else f32.
  std::optional<DType> weight_dtype;
  int num_threads = 0;               // CPU: 0 = all cores
  int max_tokens_per_pass = 512;     // prefill chunk: bounds activation memory
  double gpu_memory_fraction = 0.9;  // CUDA: share of device memory the process may use
  int gpu_device = 0;
};

// The weight dtype a backend holds for `model` under `options` (resolves "auto").
DType ResolveWeightDType(const Model& model, const BackendOptions& options);

}  // namespace mambaserve
