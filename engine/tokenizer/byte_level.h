// GPT-2's byte-level alphabet: every byte is shown as a printable code point so that BPE can
// work on any input without an unknown token.
#pragma once

#include <string>
#include <string_view>

namespace mambaserve {

// Appends the byte-level spelling of `bytes` (one code point per input byte).
void AppendByteLevel(std::string_view bytes, std::string& out);

// Appends the raw bytes a token stands for. As in the reference ByteLevel decoder, a token with
// any code point outside the byte-level alphabet (e.g. an added token containing a space) is
// copied verbatim.
void AppendTokenBytes(std::string_view token, std::string& out);

}  // namespace mambaserve
