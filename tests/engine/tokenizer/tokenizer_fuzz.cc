// Fuzz target for the tokenizer.json parser and for Encode/Decode. Built with
// -fsanitize=fuzzer (and MAMBASERVE_LIBFUZZER defined) it is a libFuzzer target; otherwise the
// driver main below replays a bounded, deterministic set of mutated inputs seeded from the real
// tokenizer.json files and vector texts, so it runs as an ordinary test.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "tests/engine/tokenizer/random_text.h"
#include "tests/engine/tokenizer/test_data.h"

namespace {

// Crashes (so the fuzzer records it) when an invariant does not hold.
void Check(bool condition, const char* what) {
  if (!condition) {
    std::cerr << "invariant violated: " << what << "\n";
    std::abort();
  }
}

void FuzzEncode(const mambaserve::Tokenizer& tokenizer, std::string_view text) {
  auto ids = tokenizer.Encode(text);
  const bool valid = mambaserve::testing::IsValidUtf8(std::string(text));
  Check(ids.ok() == valid, "Encode fails exactly on invalid UTF-8");
  if (!ids.ok()) return;
  auto decoded = tokenizer.Decode(*ids);
  Check(decoded.ok(), "Decode of encoded ids succeeds");
  Check(mambaserve::testing::IsValidUtf8(*decoded), "Decode returns valid UTF-8");
  mambaserve::IncrementalDetokenizer detokenizer(tokenizer);
  std::string streamed;
  for (const int32_t id : *ids) streamed += *detokenizer.Push(id);
  streamed += detokenizer.Flush();
  Check(streamed == *decoded, "streamed text equals Decode");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  // The first byte picks the target: parse a tokenizer.json, or encode text with a real one.
  switch (data[0] % 3) {
    case 0: {
      auto tokenizer = mambaserve::Tokenizer::FromJson(input);
      if (tokenizer.ok()) FuzzEncode(**tokenizer, "Hello, world! 123 <|endoftext|> ünï");
      break;
    }
    case 1:
      FuzzEncode(mambaserve::testing::SharedTokenizer("gpt-neox-20b"), input);
      break;
    default:
      FuzzEncode(mambaserve::testing::SharedTokenizer("falcon"), input);
      break;
  }
  return 0;
}

#ifndef MAMBASERVE_LIBFUZZER
namespace {

std::string Mutate(std::string input, std::mt19937& rng, int max_edits) {
  const int edits = 1 + static_cast<int>(rng() % max_edits);
  for (int e = 0; e < edits; ++e) {
    const size_t pos = input.empty() ? 0 : rng() % input.size();
    switch (rng() % 5) {
      case 0:  // flip bits of one byte
        if (!input.empty()) input[pos] = static_cast<char>(input[pos] ^ (1 << (rng() % 8)));
        break;
      case 1:  // insert a random byte
        input.insert(pos, 1, static_cast<char>(rng()));
        break;
      case 2:  // delete a range
        if (!input.empty()) input.erase(pos, 1 + rng() % 16);
        break;
      case 3:  // truncate
        input.resize(pos);
        break;
      default:  // duplicate a range
        input.insert(pos, input.substr(rng() % (input.size() + 1), 1 + rng() % 32));
        break;
    }
  }
  return input;
}

void RunOne(uint8_t selector, const std::string& payload) {
  std::string data(1, static_cast<char>(selector));
  data += payload;
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
}

// A small but complete tokenizer.json: mutating it reaches deep into the parser quickly, which
// mutating a 2 MB file does not.
constexpr char kSmallTokenizerJson[] = R"({
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [{"id": 6, "content": "<s>", "single_word": false, "lstrip": true,
                    "rstrip": false, "normalized": false, "special": true}],
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}]},
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Punctuation", "behavior": "Contiguous"},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      {"type": "Digits", "individual_digits": true},
      {"type": "Split", "pattern": {"Regex": "\\s+|[a-c]"}, "behavior": "MergedWithNext",
       "invert": false}]},
  "post_processor": null,
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true},
  "model": {"type": "BPE", "dropout": null, "unk_token": "a", "fuse_unk": true,
            "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4, "c": 5},
            "merges": ["a b", ["Ġ", "ab"]]}
})";

}  // namespace

int main() {
  constexpr int kJsonSmallCases = 10000;
  constexpr int kJsonLargeCases = 20;
  constexpr int kTextCases = 100000;
  std::mt19937 rng(20240611);
  int runs = 0;

  for (int i = 0; i < kJsonSmallCases; ++i, ++runs) {
    RunOne(0, Mutate(kSmallTokenizerJson, rng, 8));
  }
  for (const char* name : {"gpt-neox-20b", "falcon"}) {
    const std::string json =
        mambaserve::testing::ReadFileOrDie(mambaserve::testing::DataDir(name) + "/tokenizer.json");
    for (int i = 0; i < kJsonLargeCases / 2; ++i, ++runs) RunOne(0, Mutate(json, rng, 4));
  }

  std::vector<std::string> texts;
  for (const char* name : {"gpt-neox-20b", "falcon"}) {
    for (std::string& text :
         mambaserve::testing::SplitVectorTexts(mambaserve::testing::ReadFileOrDie(
             mambaserve::testing::DataDir(name) + "/vectors.inp"))) {
      texts.push_back(std::move(text));
    }
  }
  mambaserve::testing::RandomTextGenerator generator(7);
  generator.set_include_special_tokens(true);
  for (int i = 0; i < 200; ++i) texts.push_back(generator.Next());
  for (int i = 0; i < kTextCases; ++i, ++runs) {
    const std::string& seed = texts[rng() % texts.size()];
    std::string payload;
    if (i % 10 == 0) {  // raw random bytes
      payload.resize(rng() % 64);
      for (char& c : payload) c = static_cast<char>(rng());
    } else {
      payload = Mutate(seed, rng, 4);
    }
    RunOne(static_cast<uint8_t>(1 + i % 2), payload);
  }
  std::cout << "tokenizer_fuzz: " << runs << " inputs, no failures\n";
  return 0;
}
#endif  // MAMBASERVE_LIBFUZZER
