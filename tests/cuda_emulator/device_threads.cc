#include "tests/cuda_emulator/device_threads.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

// Saves the callee-saved registers on the current stack, stores the stack pointer in *save_sp,
// switches to load_sp and restores the registers saved there: a fiber switch without
// ucontext's signal-mask system calls (which made barrier-heavy kernels several times slower).
extern "C" void mambaserve_emulator_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl mambaserve_emulator_switch
  .type mambaserve_emulator_switch, @function
mambaserve_emulator_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size mambaserve_emulator_switch, .-mambaserve_emulator_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");

namespace mambaserve::cuda_emulator {
namespace {

constexpr int kWarpSize = 32;
constexpr int kMaxThreadsPerBlock = 1024;
// Kernels keep a few dozen floats per thread; 64 KiB leaves room for unoptimised builds.
constexpr size_t kStackBytes = 64 * 1024;

enum class FiberState { kRunnable, kAtBarrier, kAtShuffle, kExited };

struct Fiber {
  void* stack_pointer = nullptr;  // saved while the fiber is switched out
  ThreadIndex index;
  FiberState state = FiberState::kRunnable;
  // A pending shuffle: the lanes it waits for, the xor distance, the bits offered (and, once the
  // shuffle completes, the bits received).
  unsigned shuffle_mask = 0;
  int shuffle_lane_mask = 0;
  uint32_t shuffle_bits = 0;
};

// Fiber stacks, one per GPU thread of a block, mapped once per CPU thread and reused (pages are
// only committed when a kernel touches them). Each stack's lowest page is a guard: an overflow
// faults at once instead of overwriting the neighbouring fiber's saved registers.
class StackArena {
 public:
  static constexpr size_t kGuardBytes = 4096;
  static constexpr size_t kSlotBytes = kStackBytes + kGuardBytes;

  StackArena() {
    base_ =
        static_cast<char*>(mmap(nullptr, kSlotBytes * kMaxThreadsPerBlock, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0));
    if (base_ == MAP_FAILED) {
      std::perror("cuda emulator: mmap of fiber stacks");
      std::abort();
    }
    for (int i = 0; i < kMaxThreadsPerBlock; ++i) {
      if (mprotect(base_ + static_cast<size_t>(i) * kSlotBytes, kGuardBytes, PROT_NONE) != 0) {
        std::perror("cuda emulator: mprotect of a stack guard page");
        std::abort();
      }
    }
  }
  ~StackArena() { munmap(base_, kSlotBytes * kMaxThreadsPerBlock); }
  // The lowest usable byte of stack i (stacks grow down from Stack(i) + kStackBytes).
  char* Stack(int i) const { return base_ + static_cast<size_t>(i) * kSlotBytes + kGuardBytes; }

 private:
  char* base_;
};

struct BlockRun {
  void* scheduler_stack_pointer = nullptr;
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  const std::function<void()>* body = nullptr;
  bool descending = false;  // the order threads run in (see RunBlock)
};

thread_local BlockRun* tls_run = nullptr;

[[noreturn]] void Fatal(const BlockRun& run, const std::string& what) {
  const ThreadIndex& t = run.fibers.front().index;
  std::fprintf(
      stderr, "cuda emulator: %s\n  grid (%u, %u, %u), block (%u, %u, %u), in block (%u, %u, %u)\n",
      what.c_str(), t.grid_dim.x, t.grid_dim.y, t.grid_dim.z, t.block_dim.x, t.block_dim.y,
      t.block_dim.z, t.block_idx.x, t.block_idx.y, t.block_idx.z);
  std::abort();
}

void Yield(FiberState state) {
  BlockRun& run = *tls_run;
  Fiber* self = run.current;
  self->state = state;
  mambaserve_emulator_switch(&self->stack_pointer, run.scheduler_stack_pointer);
}

// Where a fiber starts (through the `ret` of its first switch). It never returns: the exit is a
// switch back to the scheduler, which never resumes it.
[[noreturn]] void FiberEntry() {
  (*tls_run->body)();
  Yield(FiberState::kExited);
  __builtin_unreachable();
}

// Lays out a new fiber's stack as mambaserve_emulator_switch left it: six zeroed registers, then
// FiberEntry as the return address, then a null slot where FiberEntry's own return address would
// be (so its stack is 16-byte aligned as at a call).
void* InitialStackPointer(char* stack) {
  void** sp = reinterpret_cast<void**>(stack + kStackBytes);
  *--sp = nullptr;
  *--sp = reinterpret_cast<void*>(&FiberEntry);
  for (int i = 0; i < 6; ++i) *--sp = nullptr;
  return sp;
}

int ThreadCount(const dim3& block) { return static_cast<int>(block.x * block.y * block.z); }

// Completes every shuffle whose lanes have all arrived. Returns whether any did.
bool CompleteShuffles(BlockRun& run) {
  const int count = static_cast<int>(run.fibers.size());
  bool completed = false;
  for (int first = 0; first < count; first += kWarpSize) {
    Fiber* warp = &run.fibers[first];
    const int lanes = std::min(kWarpSize, count - first);
    for (int lane = 0; lane < lanes; ++lane) {
      if (warp[lane].state != FiberState::kAtShuffle) continue;
      const unsigned mask = warp[lane].shuffle_mask;
      bool ready = true;
      for (int m = 0; m < kWarpSize; ++m) {
        if (!(mask >> m & 1u)) continue;
        if (m >= lanes)
          Fatal(run, "__shfl_xor_sync mask names lane " + std::to_string(m) +
                         ", past the end of the block");
        if (warp[m].state == FiberState::kExited)
          Fatal(run, "__shfl_xor_sync mask names lane " + std::to_string(m) + " of warp " +
                         std::to_string(first / kWarpSize) + ", which has exited");
        if (warp[m].state != FiberState::kAtShuffle || warp[m].shuffle_mask != mask) ready = false;
      }
      if (!ready) continue;
      uint32_t received[kWarpSize];
      for (int m = 0; m < kWarpSize; ++m) {
        if (!(mask >> m & 1u)) continue;
        const int source = m ^ warp[m].shuffle_lane_mask;
        if (source >= kWarpSize || !(mask >> source & 1u))
          Fatal(run, "__shfl_xor_sync: lane " + std::to_string(m) + " reads lane " +
                         std::to_string(source) + ", outside the mask");
        received[m] = warp[source].shuffle_bits;
      }
      for (int m = 0; m < kWarpSize; ++m) {
        if (!(mask >> m & 1u)) continue;
        warp[m].shuffle_bits = received[m];
        warp[m].state = FiberState::kRunnable;
      }
      completed = true;
    }
  }
  return completed;
}

// Releases __syncthreads once every thread that has not exited waits at it.
bool CompleteBarrier(BlockRun& run) {
  bool any = false;
  for (const Fiber& f : run.fibers) {
    if (f.state == FiberState::kExited) continue;
    if (f.state != FiberState::kAtBarrier) return false;
    any = true;
  }
  if (!any) return false;
  for (Fiber& f : run.fibers)
    if (f.state == FiberState::kAtBarrier) f.state = FiberState::kRunnable;
  return true;
}

[[noreturn]] void ReportDeadlock(const BlockRun& run) {
  int at_barrier = 0, at_shuffle = 0, exited = 0;
  std::string example;
  for (const Fiber& f : run.fibers) {
    at_barrier += f.state == FiberState::kAtBarrier;
    at_shuffle += f.state == FiberState::kAtShuffle;
    exited += f.state == FiberState::kExited;
    if (example.empty() && f.state == FiberState::kAtShuffle) {
      example = " (thread (" + std::to_string(f.index.thread_idx.x) + ", " +
                std::to_string(f.index.thread_idx.y) + ") waits on a shuffle with mask " +
                std::to_string(f.shuffle_mask) + ")";
    }
  }
  Fatal(run, "deadlock: " + std::to_string(at_barrier) + " threads wait at __syncthreads, " +
                 std::to_string(at_shuffle) + " at a warp shuffle, " + std::to_string(exited) +
                 " have exited" + example);
}

void RunBlock(BlockRun& run, const StackArena& stacks) {
  for (size_t i = 0; i < run.fibers.size(); ++i) {
    Fiber& f = run.fibers[i];
    f.state = FiberState::kRunnable;
    f.stack_pointer = InitialStackPointer(stacks.Stack(static_cast<int>(i)));
  }
  // Threads run in ascending order in even blocks and descending order in odd ones, so a missing
  // barrier between a write and another thread's read shows in one or the other whichever way
  // round the two threads are.
  const int count = static_cast<int>(run.fibers.size());
  const bool descending = run.descending;
  for (;;) {
    bool all_exited = true;
    for (int k = 0; k < count; ++k) {
      Fiber& f = run.fibers[descending ? count - 1 - k : k];
      if (f.state == FiberState::kRunnable) {
        run.current = &f;
        mambaserve_emulator_switch(&run.scheduler_stack_pointer, f.stack_pointer);
      }
      all_exited = all_exited && f.state == FiberState::kExited;
    }
    if (all_exited) return;
    // Every fiber now waits somewhere. Shuffles first: a warp may shuffle while the rest of the
    // block already waits at the next barrier.
    if (CompleteShuffles(run) || CompleteBarrier(run)) continue;
    ReportDeadlock(run);
  }
}

}  // namespace

const ThreadIndex& CurrentThread() {
  if (tls_run == nullptr || tls_run->current == nullptr) {
    std::fprintf(stderr, "cuda emulator: a GPU built-in variable was read outside a kernel\n");
    std::abort();
  }
  return tls_run->current->index;
}

void SyncThreads() { Yield(FiberState::kAtBarrier); }

uint32_t ShuffleXor32(unsigned mask, uint32_t bits, int lane_mask, int width) {
  BlockRun& run = *tls_run;
  if (width != kWarpSize) Fatal(run, "__shfl_xor_sync with a width other than 32");
  Fiber* self = run.current;
  const int lane = static_cast<int>(self - run.fibers.data()) % kWarpSize;
  if (!(mask >> lane & 1u)) Fatal(run, "__shfl_xor_sync called by a lane missing from its mask");
  self->shuffle_mask = mask;
  self->shuffle_lane_mask = lane_mask;
  self->shuffle_bits = bits;
  Yield(FiberState::kAtShuffle);
  return self->shuffle_bits;
}

cudaError_t CheckLaunchConfiguration(dim3 grid, dim3 block) {
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock || block.z > 64) {
    return cudaErrorInvalidConfiguration;
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535) {
    return cudaErrorInvalidConfiguration;
  }
  return cudaSuccess;
}

void RunGrid(dim3 grid, dim3 block, const std::function<void()>& kernel_body) {
  if (tls_run != nullptr) {
    std::fprintf(stderr, "cuda emulator: kernel launched from inside a kernel\n");
    std::abort();
  }
  thread_local StackArena stacks;
  BlockRun run;
  run.body = &kernel_body;
  run.fibers.resize(ThreadCount(block));
  tls_run = &run;
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        int i = 0;
        for (unsigned tz = 0; tz < block.z; ++tz) {
          for (unsigned ty = 0; ty < block.y; ++ty) {
            for (unsigned tx = 0; tx < block.x; ++tx, ++i) {
              run.fibers[i].index = {{tx, ty, tz}, {bx, by, bz}, block, grid};
            }
          }
        }
        run.descending = (bx + by + bz) % 2 == 1;
        RunBlock(run, stacks);
      }
    }
  }
  tls_run = nullptr;
}

}  // namespace mambaserve::cuda_emulator
