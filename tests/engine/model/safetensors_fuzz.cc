// Fuzz target for the safetensors parser. Built with clang -fsanitize=fuzzer it is a libFuzzer
// target; otherwise main() runs a bounded, deterministic mutation loop over seed images.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "engine/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto views = mambaserve::ParseSafetensors({data, size}, "fuzz.safetensors");
  if (views.ok()) {
    // Every accepted view must lie inside the input.
    for (const auto& v : *views) {
      if (v.data < data || v.data + v.nbytes > data + size) std::abort();
    }
  }
  return 0;
}

#ifndef MAMBASERVE_LIBFUZZER
namespace {

std::vector<uint8_t> Seed(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> image(8 + header.size() + data_bytes, 0x3f);
  for (int i = 0; i < 8; ++i) image[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  std::copy(header.begin(), header.end(), image.begin() + 8);
  return image;
}

}  // namespace

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 10000;
  const std::vector<std::vector<uint8_t>> seeds = {
      Seed(
          R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
          R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})",
          32),
      Seed(R"({"w":{"dtype":"F16","shape":[1,1,4],"data_offsets":[0,8]}})", 8),
      Seed(R"({})", 0),
  };
  const std::string tokens[] = {"{",         "}",
                                "[",         "]",
                                ",",         ":",
                                "\"",        "-1",
                                "0",         "99999999999999999999",
                                "\"F32\"",   "\"dtype\"",
                                "\"shape\"", "\"data_offsets\"",
                                "null",      "1e308"};
  std::mt19937_64 rng(12345);
  for (long i = 0; i < iterations; ++i) {
    std::vector<uint8_t> input = seeds[rng() % seeds.size()];
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations && !input.empty(); ++m) {
      const size_t pos = rng() % input.size();
      switch (rng() % 4) {
        case 0:
          input[pos] = static_cast<uint8_t>(rng());
          break;  // flip a byte
        case 1:
          input.resize(pos);
          break;   // truncate
        case 2: {  // splice a JSON token
          const std::string& t = tokens[rng() % std::size(tokens)];
          input.insert(input.begin() + static_cast<long>(pos), t.begin(), t.end());
          break;
        }
        case 3:
          input.erase(input.begin() + static_cast<long>(pos));
          break;  // drop a byte
      }
    }
    LLVMFuzzerTestOneInput(input.data(), input.size());
  }
  std::printf("safetensors_fuzz: %ld inputs, no crash\n", iterations);
  return 0;
}
#endif
