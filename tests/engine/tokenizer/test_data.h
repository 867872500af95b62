// Locates and loads the tokenizer test data checked in under tests/data/tokenizers/.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace mambaserve::testing {

// Directory of one tokenizer's data, e.g. DataDir("falcon").
std::string DataDir(const std::string& name);
std::string ReadFileOrDie(const std::string& path);
// Loads tests/data/tokenizers/<name>/tokenizer.json once per process.
const Tokenizer& SharedTokenizer(const std::string& name);

// vectors.inp: texts, each followed by "\n__ggml_vocab_test__\n".
std::vector<std::string> SplitVectorTexts(const std::string& contents);
// vectors.out: one line of space-separated ids per text.
std::vector<std::vector<int32_t>> ParseVectorIds(const std::string& contents);

}  // namespace mambaserve::testing
