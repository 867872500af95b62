// Encode throughput (MB/s, one thread) on a deterministic mixed corpus (English prose, code,
// multilingual text, the tokenizer test vectors) and the latency of encoding a ~4k-token prompt,
// for GPT-NeoX and Falcon. Writes bench/results/tokenizer.json (or the path given as argv[1]).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

constexpr size_t kCorpusBytes = 4 << 20;
constexpr int kPromptTokens = 4096;

const char* const kSnippets[] = {
    "The quick brown fox jumps over the lazy dog. ",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong stepped out at 02:56 UTC. ",
    "State-space models process sequences in linear time, unlike attention's quadratic cost. ",
    "She said, \"It's not what I'd expected,\" and we'll never know why they've left.\n",
    "for (int i = 0; i < n; ++i) {\n  sum += x[i] * w[i];\n}\n",
    "def selective_scan(u, delta, A, B, C):\n    return torch.einsum('bdl,dn->bdln', u, A)\n",
    "    if err != nil {\n        return fmt.Errorf(\"open %s: %w\", path, err)\n    }\n",
    "{\"model\": \"mamba-2.8b\", \"max_tokens\": 256, \"temperature\": 0.7}\n",
    "Der schnelle braune Fuchs springt über den faulen Hund. Äpfel und Öl kosten 3,50 €. ",
    "Le cœur a ses raisons que la raison ne connaît point. ",
    "Быстрая коричневая лиса прыгает через ленивую собаку. ",
    "東京は日本の首都であり、人口は約1400万人です。",
    "机器学习模型需要大量的训练数据。",
    "مرحبا بالعالم، هذه جملة عربية للاختبار. ",
    "नमस्ते दुनिया, यह एक परीक्षण वाक्य है। ",
    "안녕하세요, 세계! 테스트 문장입니다. ",
    "Emoji: 👩‍💻 👍🏽 🇺🇸 ❤️ — done.\n",
    "Numbers: 3.14159 2.71828 1234567890 0xDEADBEEF 1e-9\n",
    "\t\t  indented   text with    irregular\tspacing  \n\n",
};

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

// Snippets and vector texts in a fixed pseudo-random order until `bytes` is reached.
std::string BuildCorpus(size_t bytes) {
  std::vector<std::string> pieces(std::begin(kSnippets), std::end(kSnippets));
  for (const char* name : {"gpt-neox-20b", "falcon"}) {
    const std::string vectors = ReadFile(std::string(MAMBASERVE_SOURCE_DIR) +
                                         "/tests/data/tokenizers/" + name + "/vectors.inp");
    size_t start = 0;
    const std::string separator = "\n__ggml_vocab_test__\n";
    for (size_t end; (end = vectors.find(separator, start)) != std::string::npos;
         start = end + separator.size()) {
      pieces.push_back(vectors.substr(start, end - start) + "\n");
    }
  }
  std::mt19937 rng(1);
  std::string corpus;
  corpus.reserve(bytes + 256);
  while (corpus.size() < bytes) corpus += pieces[rng() % pieces.size()];
  return corpus;
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string out_path =
      argc > 1 ? argv[1] : std::string(MAMBASERVE_SOURCE_DIR) + "/bench/results/tokenizer.json";
  const std::string corpus = BuildCorpus(kCorpusBytes);
  // Split into documents of ~8 KB, as a server would see requests.
  std::vector<std::string_view> documents;
  for (size_t pos = 0; pos < corpus.size();) {
    size_t end = std::min(corpus.size(), pos + 8192);
    while (end < corpus.size() && (static_cast<unsigned char>(corpus[end]) & 0xC0) == 0x80) ++end;
    documents.emplace_back(corpus.data() + pos, end - pos);
    pos = end;
  }

  nlohmann::json results;
  results["corpus_bytes"] = corpus.size();
  results["threads"] = 1;
  for (const char* name : {"gpt-neox-20b", "falcon"}) {
    auto tokenizer = mambaserve::Tokenizer::FromFile(
        std::string(MAMBASERVE_SOURCE_DIR) + "/tests/data/tokenizers/" + name + "/tokenizer.json");
    if (!tokenizer.ok()) {
      std::cerr << tokenizer.status() << "\n";
      return 1;
    }
    const mambaserve::Tokenizer& tok = **tokenizer;
    // One warm-up pass fills the word cache, as in a long-running server.
    size_t tokens = 0;
    for (const auto& doc : documents) tokens += tok.Encode(doc)->size();
    double best = 1e9;
    for (int rep = 0; rep < 3; ++rep) {
      const auto start = std::chrono::steady_clock::now();
      for (const auto& doc : documents) tokens += tok.Encode(doc)->size();
      best = std::min(best, Seconds(std::chrono::steady_clock::now() - start));
    }
    size_t total_tokens = 0;
    for (const auto& doc : documents) total_tokens += tok.Encode(doc)->size();

    // A prompt of ~4k tokens: a corpus prefix grown until it reaches that many tokens.
    const double bytes_per_token = static_cast<double>(corpus.size()) / total_tokens;
    size_t prompt_bytes = static_cast<size_t>(kPromptTokens * bytes_per_token);
    while ((static_cast<unsigned char>(corpus[prompt_bytes]) & 0xC0) == 0x80) ++prompt_bytes;
    const std::string_view prompt(corpus.data(), prompt_bytes);
    const size_t prompt_tokens = tok.Encode(prompt)->size();
    std::vector<double> times;
    for (int rep = 0; rep < 50; ++rep) {
      const auto start = std::chrono::steady_clock::now();
      (void)tok.Encode(prompt);
      times.push_back(Seconds(std::chrono::steady_clock::now() - start));
    }
    std::sort(times.begin(), times.end());

    // Cold-cache cost: a fresh tokenizer encoding the prompt once.
    auto fresh = mambaserve::Tokenizer::FromFile(
        std::string(MAMBASERVE_SOURCE_DIR) + "/tests/data/tokenizers/" + name + "/tokenizer.json");
    const auto cold_start = std::chrono::steady_clock::now();
    (void)(*fresh)->Encode(prompt);
    const double cold = Seconds(std::chrono::steady_clock::now() - cold_start);

    nlohmann::json entry;
    entry["encode_mb_per_s"] = corpus.size() / best / 1e6;
    entry["corpus_tokens"] = total_tokens;
    entry["prompt_tokens"] = prompt_tokens;
    entry["prompt_encode_ms_median"] = times[times.size() / 2] * 1e3;
    entry["prompt_encode_ms_cold_cache"] = cold * 1e3;
    results[name] = entry;
    std::cout << name << ": " << entry.dump() << "\n";
  }
  std::ofstream(out_path) << results.dump(2) << "\n";
  std::cout << "wrote " << out_path << "\n";
  return 0;
}
