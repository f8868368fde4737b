// UTF-8 helpers and the GPT-2 byte map used by the tokenizers (internal to src/tokenizer/).
//
// Thread-safety: all functions are pure; the byte map tables are immutable after first use.
#ifndef FERRY_TOKENIZER_UTF8_H_
#define FERRY_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ferry::tokenizer {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Length of the UTF-8 sequence that starts with `lead`, judged by the lead byte alone
// (1 for ASCII and for continuation or invalid bytes, 2..4 otherwise). Callers clamp it to the
// bytes that remain.
inline size_t Utf8SequenceLength(uint8_t lead) {
  static constexpr uint8_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

// Appends the UTF-8 encoding of `cp` (must be <= 0x10FFFF) to `out`.
void AppendUtf8(char32_t cp, std::string* out);

// Decodes one well-formed code point at `text[*pos]` and advances *pos. Returns false (and
// leaves *pos unchanged) when the bytes there are not well-formed UTF-8 (overlong forms,
// surrogates and values above U+10FFFF are not well-formed).
bool DecodeUtf8(std::string_view text, size_t* pos, char32_t* cp);

// Byte offset of the first ill-formed sequence, or npos when `text` is valid UTF-8.
size_t FindInvalidUtf8(std::string_view text);

// `text` with every ill-formed sequence (each maximal invalid byte) replaced by U+FFFD.
std::string SanitizeUtf8(std::string_view text);

// The GPT-2 byte map: bytes 0x21-0x7E, 0xA1-0xAC and 0xAE-0xFF stand for themselves; the other
// 68 bytes, in byte order, map to U+0100 + n. ByteToUnicode returns the UTF-8 of the mapped code
// point; UnicodeToByte returns the byte for a mapped code point or -1 when `cp` is not one.
std::string_view ByteToUnicode(uint8_t byte);
int UnicodeToByte(char32_t cp);

}  // namespace ferry::tokenizer

#endif  // FERRY_TOKENIZER_UTF8_H_
