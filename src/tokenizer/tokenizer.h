// Tokenizer: text <-> token ids for a Vocab (SPM "llama", byte-level BPE "gpt2", WordPiece "bert").
//
// Encode():
//   1. Special partition: the text is split on special-token strings, longest first (see
//      Vocab::special_token_ids()). User-defined tokens always match; control and unknown tokens
//      match only when `parse_special` is true. The pieces in between are "raw" fragments.
//   2. Each raw fragment is tokenized by the vocabulary's algorithm:
//      SPM: a space is prepended to a fragment that starts the text or follows a special token
//           (when add_space_prefix), spaces become U+2581, then the best-scoring adjacent pair is
//           merged repeatedly; pieces not in the vocabulary fall back to <0xNN> byte tokens.
//      BPE: the pre-tokenizer regexes split the fragment into chunks; each chunk's bytes go
//           through the GPT-2 byte map and are merged by lowest merge rank.
//      WPM: NFD, lowercase, split on whitespace and punctuation, greedy longest-match pieces.
//   3. With `add_special`: BOS first when the vocabulary's add_bos is set, EOS last when add_eos is
//      set (WordPiece: [CLS] first, [SEP] last). Empty text gives no tokens besides these.
//   Text that is not valid UTF-8 is accepted: SPM tokenizes its bytes as they are (byte
//   fallback); BPE and WPM see each invalid byte as U+FFFD.
//
// Decode() concatenates TokenToPiece() of each id, drops one leading space from the first
// non-empty piece (the one SPM's add_space_prefix or WordPiece's word marker introduced), and for
// vocabularies with clean_spaces() tidies " ," " ." " ?" " !" " ' " " 's" " 'm" " 're" " 've" the
// way llama.cpp's detokenizer does. TokenToPiece() applies neither, so streamed pieces concatenate
// to the raw text. Control and unknown tokens print as nothing unless `show_special`; user-defined
// tokens print verbatim; unused and undefined tokens and invalid ids print nothing.
//
// Thread-safety: immutable after Create(); Encode/Decode/TokenToPiece are const and may be called
// from many threads at once (all working memory is per call).
#ifndef FERRY_TOKENIZER_TOKENIZER_H_
#define FERRY_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tokenizer/vocab.h"

namespace ferry::tokenizer {

class RegexSplitter;

class Tokenizer {
 public:
  // Builds the tokenizer (compiles the BPE pre-tokenizer regexes once).
  static StatusOr<std::unique_ptr<Tokenizer>> Create(Vocab vocab);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  const Vocab& vocab() const { return vocab_; }

  // Text -> ids. Errors when the regex engine gives up (match or memory limits), and
  // OutOfRange when `max_tokens` >= 0 and the text is more than that many tokens: known before
  // any work when the text's size alone proves it (MinTokens), else as soon as the count passes
  // the limit, so a huge input costs no more than the limit justifies.
  StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special,
                                        bool parse_special, int64_t max_tokens = -1) const;

  // A lower bound on the ids Encode gives for any text of `bytes` bytes (BOS/EOS not counted):
  // no token covers more input bytes than its piece has (an SPM "\u2581" piece is 3 bytes for 1
  // space; a byte token's "<0x0A>" is 6 for 1), so the count is at least bytes / the longest
  // piece. 0 for WordPiece, which maps a whole over-long word to one [UNK].
  int64_t MinTokens(size_t bytes) const;

  // Ids -> text (see the top of this file).
  std::string Decode(std::span<const int32_t> ids, bool show_special = false) const;
  // The bytes one token stands for (may be a partial UTF-8 sequence for byte tokens).
  std::string TokenToPiece(int32_t id, bool show_special = false) const;

 private:
  struct Fragment {
    int32_t token = kNoToken;  // kNoToken for raw text
    size_t offset = 0;         // raw text: [offset, offset + length) of the input
    size_t length = 0;
  };

  explicit Tokenizer(Vocab vocab);

  std::vector<Fragment> PartitionSpecial(std::string_view text, bool parse_special) const;
  void EncodeSpm(std::string_view fragment, bool add_prefix, std::vector<int32_t>* out) const;
  Status EncodeBpe(std::string_view fragment, std::vector<int32_t>* out) const;
  void EncodeBpeWord(std::string_view word, std::vector<int32_t>* out) const;
  void EncodeWpm(std::string_view fragment, std::vector<int32_t>* out) const;

  Vocab vocab_;
  std::unique_ptr<RegexSplitter> splitter_;  // BPE only
  size_t longest_piece_ = 1;                 // bytes of the longest token text (>= 1)
};

}  // namespace ferry::tokenizer

#endif  // FERRY_TOKENIZER_TOKENIZER_H_
