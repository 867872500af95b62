// Fuzz target for the session blob decoder, which ImportSession feeds with bytes from the network.
// Built with clang -fsanitize=fuzzer (MAMBASERVE_LIBFUZZER) it is a libFuzzer target; otherwise
// main() runs a bounded, deterministic mutation loop over real blobs as a regular test.
//
// Properties: decoding never crashes or reads out of bounds (ASan), with or without a key; a
// decoded blob re-encodes to bytes that decode to the same blob; a blob the checks accept has
// exactly the model's state size.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "engine/serving/session_blob.h"

namespace {

const mambaserve::SessionStateShape kShape{.n_layers = 2, .d_inner = 4, .d_conv = 4, .d_state = 3};
const std::string kFingerprint = "0123456789abcdef";
const std::string kKey(32, 'k');

void Check(const uint8_t* data, size_t size, const std::string& key) {
  absl::StatusOr<mambaserve::SessionBlob> blob = mambaserve::DecodeSessionBlob({data, size}, key);
  if (!blob.ok()) return;
  const std::string again = mambaserve::EncodeSessionBlob(*blob, key);
  absl::StatusOr<mambaserve::SessionBlob> round = mambaserve::DecodeSessionBlob(
      {reinterpret_cast<const uint8_t*>(again.data()), again.size()}, key);
  if (!round.ok() || round->length != blob->length || round->state != blob->state ||
      round->pending_tokens != blob->pending_tokens ||
      round->model_fingerprint != blob->model_fingerprint) {
    std::abort();
  }
  if (mambaserve::CheckSessionBlobFits(*blob, kFingerprint, kShape, 512, 64).ok() &&
      !blob->state.empty() &&
      blob->state.size() != static_cast<size_t>(kShape.conv_bytes() + kShape.ssm_bytes())) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Check(data, size, "");
  Check(data, size, kKey);
  return 0;
}

#ifndef MAMBASERVE_LIBFUZZER
int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 20000;
  std::mt19937_64 rng(20261201);
  std::vector<uint8_t> state(static_cast<size_t>(kShape.conv_bytes() + kShape.ssm_bytes()));
  for (uint8_t& b : state) b = static_cast<uint8_t>(rng() & 0x3f);  // small, finite floats
  const std::vector<int32_t> pending = {5, 17, 42};
  const std::vector<std::string> seeds = {
      mambaserve::EncodeSessionBlob(kFingerprint, kShape, 12, pending, state),
      mambaserve::EncodeSessionBlob(kFingerprint, kShape, 12, pending, state, kKey),
      mambaserve::EncodeSessionBlob(kFingerprint, kShape, 0, {}, {}),
      std::string("MSSB\x01\0\0\0", 8),
  };
  for (long i = 0; i < iterations; ++i) {
    std::string input = seeds[rng() % seeds.size()];
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations && !input.empty(); ++m) {
      const size_t pos = rng() % input.size();
      switch (rng() % 5) {
        case 0:  // flip a byte
          input[pos] = static_cast<char>(rng());
          break;
        case 1:  // truncate
          input.resize(pos);
          break;
        case 2:  // insert a byte (a varint or a tag out of place)
          input.insert(input.begin() + static_cast<long>(pos), static_cast<char>(rng()));
          break;
        case 3:  // drop a byte
          input.erase(input.begin() + static_cast<long>(pos));
          break;
        case 4:  // a huge length or count where a small one was
          input.insert(pos, "\xff\xff\xff\xff\x0f", 5);
          break;
      }
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  std::printf("session_blob_fuzz: %ld inputs, no crash\n", iterations);
  return 0;
}
#endif
