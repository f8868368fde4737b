// TextStream: turns one sequence's token pieces into the text a client may see as it is
// produced: only complete UTF-8 (a multi-byte character split over tokens is held back until
// it is whole), and nothing that could still become the start of a stop string (held back
// until it cannot); the text is cut before the first stop string.
//
// Thread-safety: a plain value, used by the inference thread for one sequence.
#ifndef FERRY_RUNTIME_TEXT_STREAM_H_
#define FERRY_RUNTIME_TEXT_STREAM_H_

#include <string>
#include <string_view>
#include <vector>

namespace ferry {

class TextStream {
 public:
  TextStream() = default;
  explicit TextStream(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Adds a token's bytes. Returns the text that became safe to emit (possibly empty). When a
  // stop string completes, *stopped is set and the text ends before it (nothing after it is
  // ever returned).
  std::string Append(std::string_view piece, bool* stopped);
  // The end of generation: returns what was held back for stop strings (incomplete UTF-8
  // bytes at the very end are dropped).
  std::string Flush();
  // All text so far (the stop string excluded), emitted or held.
  const std::string& text() const { return text_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // bytes of an incomplete UTF-8 character
  std::string text_;     // complete text (cut at a stop string)
  size_t emitted_ = 0;   // bytes of text_ already returned
  bool stopped_ = false;
};

// Length of the longest prefix of `s` that is complete UTF-8 (an incomplete trailing sequence
// is held back until its continuation bytes arrive).
size_t CompleteUtf8Prefix(std::string_view s);

}  // namespace ferry

#endif  // FERRY_RUNTIME_TEXT_STREAM_H_
