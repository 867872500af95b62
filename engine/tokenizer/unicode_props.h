// Character classes with the exact definitions the reference tokenizer uses (Rust's char
// methods and regex classes), backed by utf8proc's Unicode category data.
#pragma once

namespace mambaserve {

// Unicode White_Space: what `\s` means in both Oniguruma and Rust's regex crate.
bool IsWhitespace(char32_t c);
// ASCII punctuation or a Unicode P* category (the Punctuation pre-tokenizer's test).
bool IsPunctuation(char32_t c);
// General category Nd, Nl or No (Rust's char::is_numeric, used by the Digits pre-tokenizer).
bool IsNumeric(char32_t c);
// Rust regex `\w`: Alphabetic, marks, decimal digits, connector punctuation, join controls.
bool IsWordCharacter(char32_t c);

}  // namespace mambaserve
