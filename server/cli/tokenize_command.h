// `mambaserve tokenize`: encodes a text file or decodes a list of ids with a tokenizer.json.
#pragma once

namespace mambaserve {

// argv[0] is "tokenize"; the flags follow:
//   --tokenizer FILE --text-file F --json OUT          writes {"ids": [...]} (no BOS/EOS)
//   --tokenizer FILE --decode --ids 1,2,3 --json OUT   writes {"text": "..."}
// Returns 0 on success; on error prints a message to stderr and returns non-zero.
int RunTokenizeCommand(int argc, char** argv);

}  // namespace mambaserve
