// RegexSplitter: the BPE pre-tokenizer. Splits text into chunks with a list of PCRE2 regexes
// applied in sequence; each regex re-splits every chunk into its matches and the unmatched gaps
// between them, so the chunks always cover the text exactly. Matching follows Perl/Python
// semantics (leftmost match, first alternative that succeeds); Unicode properties (\p{L}, \p{N},
// \s, ...) come from PCRE2's Unicode tables (PCRE2_UTF | PCRE2_UCP).
//
// Thread-safety: immutable after Create(); Split() may run on many threads at once (each call
// allocates its own match data).
#ifndef FERRY_TOKENIZER_REGEX_SPLITTER_H_
#define FERRY_TOKENIZER_REGEX_SPLITTER_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tokenizer/vocab.h"

namespace ferry::tokenizer {

// A chunk of text: [offset, offset + length) in bytes.
struct TextSpan {
  size_t offset = 0;
  size_t length = 0;
  bool operator==(const TextSpan&) const = default;
};

class RegexSplitter {
 public:
  // Compiles every pattern (JIT where available). Errors name the pattern and position.
  static StatusOr<std::unique_ptr<RegexSplitter>> Create(std::vector<std::string> patterns);
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // Splits `text`, which must be valid UTF-8, and returns the chunks in order. Empty text gives
  // no chunks. Errors only when PCRE2 gives up (match or memory limits).
  StatusOr<std::vector<TextSpan>> Split(std::string_view text) const;

  size_t size() const { return patterns_.size(); }

 private:
  struct Compiled;
  RegexSplitter() = default;

  std::vector<std::string> patterns_;
  std::vector<std::unique_ptr<Compiled>> compiled_;  // one per pattern
};

// The regexes for a BPE pre-tokenizer, in the order they apply: llama.cpp's regex_exprs per
// tokenizer.ggml.pre (src/llama-vocab.cpp, llm_tokenizer_bpe). Each re-splits every chunk into
// its matches and the gaps between them.
std::vector<std::string> PreTokenizerPatterns(PreTokenizer pre);

}  // namespace ferry::tokenizer

#endif  // FERRY_TOKENIZER_REGEX_SPLITTER_H_
