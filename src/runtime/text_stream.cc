#include "runtime/text_stream.h"

#include <algorithm>

namespace ferry {

size_t CompleteUtf8Prefix(std::string_view s) {
  const size_t n = s.size();
  // Look back at most 4 bytes for a lead byte.
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    const size_t need = (c & 0x80) == 0     ? 1
                        : (c & 0xE0) == 0xC0 ? 2
                        : (c & 0xF0) == 0xE0 ? 3
                        : (c & 0xF8) == 0xF0 ? 4
                                             : 1;
    return back >= need ? n : n - back;
  }
  return n;
}

namespace {

// Bytes at the end of `text` that could still become the start of a stop string.
size_t StopHoldback(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& s : stops) {
    for (size_t k = std::min(s.size() - 1, text.size()); k > hold; --k) {
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  return hold;
}

}  // namespace

std::string TextStream::Append(std::string_view piece, bool* stopped) {
  *stopped = false;
  if (stopped_) {
    *stopped = true;
    return {};
  }
  pending_.append(piece);
  const size_t complete = CompleteUtf8Prefix(pending_);
  const size_t search_from = text_.size();
  text_.append(pending_, 0, complete);
  pending_.erase(0, complete);
  // Stop strings: cut the text at the first occurrence that ends in the new bytes.
  size_t cut = std::string::npos;
  for (const std::string& s : stops_) {
    const size_t from = search_from > s.size() ? search_from - s.size() : 0;
    const size_t at = text_.find(s, from);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    text_.resize(std::max(cut, emitted_));
    stopped_ = true;
    *stopped = true;
  }
  const size_t hold = stopped_ ? 0 : StopHoldback(text_, stops_);
  std::string out;
  if (text_.size() - hold > emitted_) {
    out = text_.substr(emitted_, text_.size() - hold - emitted_);
    emitted_ = text_.size() - hold;
  }
  return out;
}

std::string TextStream::Flush() {
  std::string out = text_.substr(std::min(emitted_, text_.size()));
  emitted_ = text_.size();
  return out;
}

}  // namespace ferry
