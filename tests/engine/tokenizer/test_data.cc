#include "tests/engine/tokenizer/test_data.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>

namespace mambaserve::testing {

std::string DataDir(const std::string& name) {
  return std::string(MAMBASERVE_SOURCE_DIR) + "/tests/data/tokenizers/" + name;
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    std::cerr << "cannot open test data " << path << "\n";
    std::abort();
  }
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

const Tokenizer& SharedTokenizer(const std::string& name) {
  static std::mutex mutex;
  static auto* const cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = (*cache)[name];
  if (slot == nullptr) {
    auto tokenizer = Tokenizer::FromFile(DataDir(name) + "/tokenizer.json");
    if (!tokenizer.ok()) {
      std::cerr << tokenizer.status() << "\n";
      std::abort();
    }
    slot = std::move(*tokenizer);
  }
  return *slot;
}

std::vector<std::string> SplitVectorTexts(const std::string& contents) {
  static constexpr std::string_view kSeparator = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  size_t start = 0;
  while (start < contents.size()) {
    const size_t end = contents.find(kSeparator, start);
    if (end == std::string::npos) break;  // nothing but a malformed tail is left
    texts.push_back(contents.substr(start, end - start));
    start = end + kSeparator.size();
  }
  return texts;
}

std::vector<std::vector<int32_t>> ParseVectorIds(const std::string& contents) {
  std::vector<std::vector<int32_t>> result;
  std::istringstream lines(contents);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::vector<int32_t> ids;
    int32_t id;
    while (fields >> id) ids.push_back(id);
    result.push_back(std::move(ids));
  }
  return result;
}

}  // namespace mambaserve::testing
