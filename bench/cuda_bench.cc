// CUDA backend benchmark on a model with Falcon-Mamba-7B's shapes (random bf16 weights generated
// on the device): decode tokens/s at several batch sizes, prefill tokens/s at 2k tokens, achieved
// memory bandwidth at batch 1 against the device's peak, and device memory in use over a short
// and a 64k-token sequence (constant: the state never grows). Writes JSON.
//
//   cuda_bench [--out bench/results/cuda.json] [--layers 64] [--batches 1,8,64,256]
//              [--prefill-tokens 2048] [--long-tokens 65536] [--seconds 2]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/cuda/cuda_status.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace mambaserve {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

struct Flags {
  std::string out = "bench/results/cuda.json";
  int layers = 64;
  std::vector<int> batches = {1, 8, 64, 256};
  int prefill_tokens = 2048;
  int long_tokens = 65536;
  double seconds = 2.0;
};

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string name = argv[i], value = argv[i + 1];
    bool ok = true;
    if (name == "--out") {
      f->out = value;
    } else if (name == "--layers") {
      ok = absl::SimpleAtoi(value, &f->layers);
    } else if (name == "--prefill-tokens") {
      ok = absl::SimpleAtoi(value, &f->prefill_tokens);
    } else if (name == "--long-tokens") {
      ok = absl::SimpleAtoi(value, &f->long_tokens);
    } else if (name == "--seconds") {
      ok = absl::SimpleAtod(value, &f->seconds);
    } else if (name == "--batches") {
      f->batches.clear();
      for (absl::string_view piece : absl::StrSplit(value, ',')) {
        int b = 0;
        ok = ok && absl::SimpleAtoi(piece, &b) && b > 0;
        f->batches.push_back(b);
      }
    } else {
      ok = false;
    }
    if (!ok) {
      std::cerr << "cuda_bench: bad flag " << name << " " << value << "\n";
      return false;
    }
  }
  return (argc % 2) == 1;
}

ModelConfig FalconMamba7B(int layers) {
  ModelConfig c;
  c.model_type = ModelType::kFalconMamba;
  c.d_model = 4096;
  c.n_layers = layers;
  c.d_inner = 8192;
  c.dt_rank = 256;
  c.d_state = 16;
  c.d_conv = 4;
  c.vocab_size = 65024;
  c.layer_norm_epsilon = 1e-5;
  c.mixer_rms_eps = 1e-6;
  c.use_bias = false;
  c.use_conv_bias = true;
  c.tie_word_embeddings = false;
  return c;
}

int64_t DeviceUsed() {
  size_t free_bytes = 0, total_bytes = 0;
  cudaMemGetInfo(&free_bytes, &total_bytes);
  return static_cast<int64_t>(total_bytes - free_bytes);
}

// Device-to-device copy bandwidth (read + write bytes / time) over a 1 GiB buffer.
double MeasureCopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    cudaGetLastError();
    cudaFree(a);
    return 0;
  }
  cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
  cudaDeviceSynchronize();
  const int reps = 10;
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
  cudaDeviceSynchronize();
  const double s = Seconds(t0);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes * reps / s;
}

// Runs decode steps at batch `batch` for about `seconds`; returns tokens/s (all sequences).
// token_only: greedy decoding as the scheduler runs it, the token picked on the device and no
// logits copied back; otherwise every row's logits come back to host memory.
absl::StatusOr<double> DecodeThroughput(CudaBackend& backend, int batch, double seconds,
                                        bool token_only = false, int min_steps = 8) {
  Step prefill, decode;
  std::vector<std::vector<int32_t>> prompts(batch), tokens(batch);
  for (int i = 0; i < batch; ++i) {
    prompts[i].assign(16, 100 + i);
    tokens[i] = {7 + i};
    prefill.sequences.push_back({i, prompts[i], true, false});
    decode.sequences.push_back({i, tokens[i], false, true, token_only});
  }
  StepOutput out;
  RETURN_IF_ERROR(backend.Forward(prefill, &out));
  for (int i = 0; i < 3; ++i) RETURN_IF_ERROR(backend.Forward(decode, &out));  // capture + warm up
  int steps = 0;
  const auto t0 = Clock::now();
  while (steps < min_steps || Seconds(t0) < seconds) {
    RETURN_IF_ERROR(backend.Forward(decode, &out));
    ++steps;
  }
  return batch * steps / Seconds(t0);
}

absl::Status Run(const Flags& flags) {
  ASSIGN_OR_RETURN(int devices, cuda::CudaDeviceCount());
  (void)devices;
  const ModelConfig config = FalconMamba7B(flags.layers);
  const int max_batch = *std::max_element(flags.batches.begin(), flags.batches.end());
  BackendOptions options;
  options.kind = BackendKind::kCuda;
  options.num_slots = max_batch + 1;
  options.max_tokens_per_pass = std::max(flags.prefill_tokens, max_batch);
  nlohmann::json j;
  const int64_t used_before = DeviceUsed();
  const auto t_load = Clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend,
                   CudaBackend::CreateRandom(config, DType::kBF16, options, 1));
  const BackendInfo info = backend->info();
  j["device"] = info.device;
  j["model"] = {
      {"shape", "falcon-mamba-7b"},        {"layers", config.n_layers},
      {"d_model", config.d_model},         {"d_inner", config.d_inner},
      {"d_state", config.d_state},         {"dt_rank", config.dt_rank},
      {"vocab", config.vocab_size},        {"weight_dtype", "bf16"},
      {"weight_bytes", info.weight_bytes}, {"state_bytes_per_slot", info.state_bytes_per_slot}};
  j["load_seconds"] = Seconds(t_load);
  j["device_memory_after_load_bytes"] = DeviceUsed() - used_before;
  j["num_slots"] = info.num_slots;

  // Peak bandwidth: the memory interface from the device attributes (DDR: 2 transfers per clock),
  // and a measured device-to-device copy.
  int bus_bits = 0, mem_khz = 0, device = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device);
  cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, device);
  const double peak_attr = 2.0 * mem_khz * 1e3 * bus_bits / 8.0;
  const double copy_bw = MeasureCopyBandwidth();
  j["bandwidth"] = {{"peak_from_attributes_gbps", peak_attr / 1e9},
                    {"device_copy_gbps", copy_bw / 1e9}};
  // Bytes one batch-1 decode token streams: every weight except the embedding table (one row is
  // read) and the slot's state read + written.
  const int64_t embedding_bytes = config.vocab_size * config.d_model * 2;
  const double bytes_per_token =
      static_cast<double>(info.weight_bytes - embedding_bytes) + 2.0 * info.state_bytes_per_slot;
  const double peak = std::max(peak_attr, copy_bw);

  nlohmann::json decode = nlohmann::json::array();
  for (int batch : flags.batches) {
    ASSIGN_OR_RETURN(double tps, DecodeThroughput(*backend, batch, flags.seconds));
    ASSIGN_OR_RETURN(double greedy_tps,
                     DecodeThroughput(*backend, batch, flags.seconds / 2, /*token_only=*/true));
    nlohmann::json row = {{"batch", batch},
                          {"tokens_per_s", tps},
                          {"step_ms", 1e3 * batch / tps},
                          {"greedy_token_only_tokens_per_s", greedy_tps}};
    std::cerr << "decode batch " << batch << ": " << tps << " tok/s with logits, " << greedy_tps
              << " tok/s greedy (token only)\n";
    if (batch == 1) {
      const double achieved = bytes_per_token * tps;
      row["bytes_per_token"] = bytes_per_token;
      row["achieved_gbps"] = achieved / 1e9;
      row["fraction_of_peak"] = achieved / peak;
      row["roofline_tokens_per_s"] = peak / bytes_per_token;
    }
    decode.push_back(row);
  }
  j["decode"] = decode;
  j["decode_note"] =
      "end to end Backend::Forward steps: tokens_per_s copies every row's logits to host memory; "
      "greedy_token_only_tokens_per_s picks the greedy token on the device (SequenceInput::"
      "token_only), as the server does for greedy requests without logprobs or penalties";

  // Batch-1 variants: the skinny GEMM off (cuBLAS only), graphs off.
  nlohmann::json variants;
  backend->set_use_skinny_gemm(false);
  ASSIGN_OR_RETURN(variants["batch1_cublas_only_tokens_per_s"],
                   DecodeThroughput(*backend, 1, flags.seconds / 2));
  backend->set_use_skinny_gemm(true);
  backend->set_use_graphs(false);
  ASSIGN_OR_RETURN(variants["batch1_no_graphs_tokens_per_s"],
                   DecodeThroughput(*backend, 1, flags.seconds / 2));
  backend->set_use_graphs(true);
  j["decode_variants"] = variants;

  // Prefill: one fresh sequence of prefill_tokens tokens per step.
  {
    std::vector<int32_t> prompt(flags.prefill_tokens);
    for (int i = 0; i < flags.prefill_tokens; ++i) prompt[i] = (i * 7919) % config.vocab_size;
    Step step;
    step.sequences.push_back({0, prompt, true, true});
    StepOutput out;
    RETURN_IF_ERROR(backend->Forward(step, &out));
    int reps = 0;
    const auto t0 = Clock::now();
    while (reps < 3 || Seconds(t0) < flags.seconds) {
      RETURN_IF_ERROR(backend->Forward(step, &out));
      ++reps;
    }
    const double tps = static_cast<double>(flags.prefill_tokens) * reps / Seconds(t0);
    std::cerr << "prefill " << flags.prefill_tokens << " tokens: " << tps << " tok/s\n";
    j["prefill"] = {{"tokens", flags.prefill_tokens}, {"tokens_per_s", tps}};
  }

  // Memory over a sequence's life: device memory in use, sampled after every step, for 1k
  // generated tokens and for a sequence taken to long_tokens (prefilled in 2k chunks, then 1k
  // decode steps). Memory is fixed at load, so the two peaks are equal.
  {
    auto peak_over = [&](int prefill_total, int decode_steps) -> absl::StatusOr<int64_t> {
      int64_t peak_used = DeviceUsed();
      std::vector<int32_t> chunk(2048);
      for (size_t i = 0; i < chunk.size(); ++i)
        chunk[i] = static_cast<int32_t>((i * 31) % config.vocab_size);
      StepOutput out;
      bool fresh = true;
      for (int done = 0; done < prefill_total;) {
        const int len = std::min<int>(chunk.size(), prefill_total - done);
        Step step;
        step.sequences.push_back({0, std::span<const int32_t>(chunk.data(), len), fresh, false});
        RETURN_IF_ERROR(backend->Forward(step, &out));
        fresh = false;
        done += len;
        peak_used = std::max(peak_used, DeviceUsed());
      }
      int32_t token = 5;
      for (int i = 0; i < decode_steps; ++i) {
        Step step;
        step.sequences.push_back({0, std::span<const int32_t>(&token, 1), fresh, true});
        fresh = false;
        RETURN_IF_ERROR(backend->Forward(step, &out));
        if (i % 16 == 0) peak_used = std::max(peak_used, DeviceUsed());
      }
      return peak_used;
    };
    ASSIGN_OR_RETURN(int64_t short_peak, peak_over(0, 1024));
    ASSIGN_OR_RETURN(int64_t long_peak, peak_over(std::max(0, flags.long_tokens - 1024), 1024));
    j["memory"] = {{"peak_device_used_bytes_1k_tokens", short_peak},
                   {"peak_device_used_bytes_long", long_peak},
                   {"long_tokens", flags.long_tokens},
                   {"equal", short_peak == long_peak}};
    std::cerr << "memory: 1k tokens " << short_peak << " B, " << flags.long_tokens << " tokens "
              << long_peak << " B\n";
  }
  j["targets"] = {{"batch1_fraction_of_roofline", 0.8}, {"batch256_tokens_per_s", 20000}};
  j["stats"] = {{"graph_captures", backend->stats().graph_captures},
                {"graph_replays", backend->stats().graph_replays},
                {"eager_passes", backend->stats().eager_passes}};

  const std::filesystem::path out_path(flags.out);
  if (out_path.has_parent_path()) std::filesystem::create_directories(out_path.parent_path());
  std::ofstream file(out_path);
  file << j.dump(2) << "\n";
  if (!file) return absl::InternalError(flags.out + ": cannot write");
  std::cout << j.dump(2) << "\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace mambaserve

int main(int argc, char** argv) {
  mambaserve::Flags flags;
  if (!mambaserve::ParseFlags(argc, argv, &flags)) {
    std::cerr
        << "usage: cuda_bench [--out PATH] [--layers N] [--batches 1,8,64,256] [--prefill-tokens N]"
           " [--long-tokens N] [--seconds S]\n";
    return 2;
  }
  const absl::Status status = mambaserve::Run(flags);
  if (!status.ok()) {
    std::cerr << "cuda_bench: " << status.message() << "\n";
    return status.code() == absl::StatusCode::kFailedPrecondition ? 77 : 1;
  }
  return 0;
}
