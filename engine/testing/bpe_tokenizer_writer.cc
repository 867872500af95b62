#include "engine/testing/bpe_tokenizer_writer.h"

#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace mambaserve {
namespace {

// Public-domain English: the Gettysburg Address (1863), the opening of Jane Austen's "Pride and
// Prejudice" (1813) and of Lewis Carroll's "Alice's Adventures in Wonderland" (1865).
constexpr char kSample[] =
    R"(Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in Liberty, and dedicated to the proposition that all men are created equal.
Now we are engaged in a great civil war, testing whether that nation, or any nation so conceived and so dedicated, can long endure. We are met on a great battle-field of that war. We have come to dedicate a portion of that field, as a final resting place for those who here gave their lives that that nation might live. It is altogether fitting and proper that we should do this.
But, in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow -- this ground. The brave men, living and dead, who struggled here, have consecrated it, far above our poor power to add or detract. The world will little note, nor long remember what we say here, but it can never forget what they did here. It is for us the living, rather, to be dedicated here to the unfinished work which they who fought here have thus far so nobly advanced. It is rather for us to be here dedicated to the great task remaining before us -- that from these honored dead we take increased devotion to that cause for which they gave the last full measure of devotion -- that we here highly resolve that these dead shall not have died in vain -- that this nation, under God, shall have a new birth of freedom -- and that government of the people, by the people, for the people, shall not perish from the earth.
It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.
However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered the rightful property of some one or other of their daughters.
"My dear Mr. Bennet," said his lady to him one day, "have you heard that Netherfield Park is let at last?"
Mr. Bennet replied that he had not.
"But it is," returned she; "for Mrs. Long has just been here, and she told me all about it."
Mr. Bennet made no answer.
"Do you not want to know who has taken it?" cried his wife impatiently.
"You want to tell me, and I have no objection to hearing it."
This was invitation enough.
"Why, my dear, you must know, Mrs. Long says that Netherfield is taken by a young man of large fortune from the north of England; that he came down on Monday in a chaise and four to see the place, and was so much delighted with it, that he agreed with Mr. Morris immediately; that he is to take possession before Michaelmas, and some of his servants are to be in the house by the end of next week."
"What is his name?"
"Bingley."
"Is he married or single?"
"Oh! Single, my dear, to be sure! A single man of large fortune; four or five thousand a year. What a fine thing for our girls!"
Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: once or twice she had peeped into the book her sister was reading, but it had no pictures or conversations in it, "and what is the use of a book," thought Alice "without pictures or conversations?"
So she was considering in her own mind (as well as she could, for the hot day made her feel very sleepy and stupid), whether the pleasure of making a daisy-chain would be worth the trouble of getting up and picking the daisies, when suddenly a White Rabbit with pink eyes ran close by her.
There was nothing so very remarkable in that; nor did Alice think it so very much out of the way to hear the Rabbit say to itself, "Oh dear! Oh dear! I shall be late!" (when she thought it over afterwards, it occurred to her that she ought to have wondered at this, but at the time it all seemed quite natural); but when the Rabbit actually took a watch out of its waistcoat-pocket, and looked at it, and then hurried on, Alice started to her feet, for it flashed across her mind that she had never before seen a rabbit with either a waistcoat-pocket, or a watch to take out of it, and burning with curiosity, she ran across the field after it, and fortunately was just in time to see it pop down a large rabbit-hole under the hedge.
In another moment down went Alice after it, never once considering how in the world she was to get out again.
The rabbit-hole went straight on like a tunnel for some way, and then dipped suddenly down, so suddenly that Alice had not a moment to think about stopping herself before she found herself falling down a very deep well.
Either the well was very deep, or she fell very slowly, for she had plenty of time as she went down to look about her and to wonder what was going to happen next. First, she tried to look down and make out what she was coming to, but it was too dark to see anything; then she looked at the sides of the well, and noticed that they were filled with cupboards and book-shelves; here and there she saw maps and pictures hung upon pegs. She took down a jar from one of the shelves as she passed; it was labelled "ORANGE MARMALADE", but to her great disappointment it was empty: she did not like to drop the jar for fear of killing somebody underneath, so managed to put it into one of the cupboards as she fell past it.
In 1865 the book cost 7 shillings and 6 pence; 150 years later, 2015 copies were sold in 3 days.
)";

// GPT-2's reversible byte -> printable character map, as UTF-8 strings.
std::vector<std::string> ByteSymbols() {
  std::vector<std::string> symbols(256);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable =
        (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    symbols[b] = s;
  }
  return symbols;
}

enum class CharClass { kLetter, kDigit, kSpace, kOther };
CharClass Classify(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return CharClass::kLetter;
  if (c >= '0' && c <= '9') return CharClass::kDigit;
  if (c == ' ' || c == '\n' || c == '\t' || c == '\r') return CharClass::kSpace;
  return CharClass::kOther;
}

// The GPT-2 split (ASCII classes): contractions | " ?letters" | " ?digits" | " ?other" |
// whitespace runs, where a run followed by a word leaves its last character to that word.
std::vector<std::string> PreTokenize(const std::string& text) {
  std::vector<std::string> words;
  const size_t n = text.size();
  auto run_end = [&](size_t i, CharClass cls) {
    while (i < n && Classify(text[i]) == cls) ++i;
    return i;
  };
  size_t i = 0;
  while (i < n) {
    if (text[i] == '\'') {
      size_t len = 0;
      for (const char* c : {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}) {
        const size_t l = std::char_traits<char>::length(c);
        if (text.compare(i, l, c) == 0) len = l;
      }
      if (len > 0) {
        words.push_back(text.substr(i, len));
        i += len;
        continue;
      }
    }
    const CharClass cls = Classify(text[i]);
    size_t end;
    if (cls != CharClass::kSpace) {
      end = run_end(i, cls);
    } else if (text[i] == ' ' && i + 1 < n && Classify(text[i + 1]) != CharClass::kSpace) {
      end = run_end(i + 1, Classify(text[i + 1]));
    } else {
      end = run_end(i, CharClass::kSpace);
      if (end < n && end - i > 1) --end;
    }
    words.push_back(text.substr(i, end - i));
    i = end;
  }
  return words;
}

}  // namespace

const std::string& BpeTrainingText() {
  static const std::string text(kSample);
  return text;
}

absl::StatusOr<std::string> TrainByteLevelBpeJson(int vocab_size) {
  if (vocab_size < 258 || vocab_size > kMaxTrainedVocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("a trained byte-level BPE vocabulary needs 258 to ", kMaxTrainedVocab,
                     " ids, not ", vocab_size, " (pass --tokenizer FILE for larger vocabularies)"));
  }
  const std::vector<std::string> byte_symbols = ByteSymbols();
  // Words as symbol sequences, with their counts; std::map keeps every step deterministic.
  std::map<std::vector<std::string>, int64_t> words;
  for (const std::string& word : PreTokenize(BpeTrainingText())) {
    std::vector<std::string> symbols;
    for (unsigned char c : word) symbols.push_back(byte_symbols[c]);
    ++words[symbols];
  }
  nlohmann::ordered_json vocab;
  vocab["<|endoftext|>"] = 0;
  for (int b = 0; b < 256; ++b) vocab[byte_symbols[b]] = b + 1;
  nlohmann::json merges = nlohmann::json::array();
  int next_id = 257;
  while (next_id < vocab_size) {
    std::map<std::pair<std::string, std::string>, int64_t> pairs;
    for (const auto& [symbols, count] : words) {
      for (size_t i = 0; i + 1 < symbols.size(); ++i) pairs[{symbols[i], symbols[i + 1]}] += count;
    }
    const std::pair<std::string, std::string>* best = nullptr;
    int64_t best_count = 0;
    for (const auto& [pair, count] : pairs) {
      // Strictly greater: ties go to the lexicographically first pair.
      if (count > best_count && !vocab.contains(pair.first + pair.second)) {
        best = &pair;
        best_count = count;
      }
    }
    if (best == nullptr) break;
    const std::string merged = best->first + best->second;
    merges.push_back(absl::StrCat(best->first, " ", best->second));
    vocab[merged] = next_id++;
    std::map<std::vector<std::string>, int64_t> next_words;
    for (const auto& [symbols, count] : words) {
      std::vector<std::string> out;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == best->first && symbols[i + 1] == best->second) {
          out.push_back(merged);
          ++i;
        } else {
          out.push_back(symbols[i]);
        }
      }
      next_words[out] += count;
    }
    words = std::move(next_words);
  }

  const nlohmann::ordered_json byte_level = {{"type", "ByteLevel"},
                                             {"add_prefix_space", false},
                                             {"trim_offsets", true},
                                             {"use_regex", true}};
  nlohmann::ordered_json json;
  json["version"] = "1.0";
  json["truncation"] = nullptr;
  json["padding"] = nullptr;
  json["added_tokens"] = nlohmann::ordered_json::array({{{"id", 0},
                                                         {"content", "<|endoftext|>"},
                                                         {"single_word", false},
                                                         {"lstrip", false},
                                                         {"rstrip", false},
                                                         {"normalized", false},
                                                         {"special", true}}});
  json["normalizer"] = nullptr;
  json["pre_tokenizer"] = byte_level;
  json["post_processor"] = nullptr;
  json["decoder"] = byte_level;
  json["model"] = {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", nullptr},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", false},
                   {"byte_fallback", false},
                   {"vocab", vocab},
                   {"merges", merges}};
  return json.dump(1) + "\n";
}

}  // namespace mambaserve
