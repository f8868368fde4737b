// Vocab: a tokenizer vocabulary read from GGUF metadata (`tokenizer.ggml.*`).
//
// A Vocab holds the token strings, scores and types, the BPE merge ranks, the special token ids,
// the flags that steer encoding (add_bos, add_eos, add_space_prefix, ...) and which algorithm and
// pre-tokenizer to use. It does no tokenizing itself; see tokenizer.h.
//
// Keys read (all optional unless marked):
//   tokenizer.ggml.model        required: "llama" (SPM), "gpt2" (byte-level BPE), "bert"
//   (WordPiece) tokenizer.ggml.pre          BPE pre-tokenizer name; missing -> "default" with a
//   warning tokenizer.ggml.tokens       required: [n_vocab] strings tokenizer.ggml.scores [n_vocab]
//   f32 (default 0) tokenizer.ggml.token_type   [n_vocab] i32, TokenType values (default normal)
//   tokenizer.ggml.merges       [n_merges] "LEFT RIGHT" strings, rank = index (required for gpt2)
//   tokenizer.ggml.{bos,eos,unknown,padding,eot,eom,cls,mask}_token_id and the misspelled
//   tokenizer.ggml.seperator_token_id; the value 0xFFFFFFFF (or any negative value) means "none"
//   tokenizer.ggml.{add_bos_token,add_eos_token,add_sep_token,add_space_prefix}
//
// Defaults when a key is absent:
//   SPM:  bos 1, eos 2, unk 0; add_bos true, add_eos false, add_space_prefix true.
//   BPE:  no special ids; add_bos false (forced true for the llama3 pre values), add_eos false.
//   WPM:  unk 100, bos = cls = 101, sep 102, pad 0, mask 103; add_bos true, add_sep true.
// An explicit special id >= n_vocab is an error; a default that does not fit is dropped.
//
// Memory: the tables are flat arrays sized exactly at load (all token texts in one blob, open
// addressing hash tables of ids), so heap_bytes() is known before loading: HeapBytesFor() of
// the sizes SizesFromGguf() reads from the header. The memory planner charges it to the CPU.
//
// Thread-safety: immutable after FromGguf(); all const methods may be called from any thread.
#ifndef FERRY_TOKENIZER_VOCAB_H_
#define FERRY_TOKENIZER_VOCAB_H_

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "gguf/gguf.h"

namespace ferry::tokenizer {

// "No token" for optional special ids.
inline constexpr int32_t kNoToken = -1;

// Values of tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// The tokenizer algorithm (tokenizer.ggml.model).
enum class VocabType {
  kSpm,  // "llama": SentencePiece-style, score-driven merges with byte fallback
  kBpe,  // "gpt2": byte-level BPE with a regex pre-tokenizer and merge ranks
  kWpm,  // "bert": WordPiece, greedy longest match
};

// The BPE pre-tokenizer (tokenizer.ggml.pre); always kDefault for SPM and WPM.
enum class PreTokenizer {
  kDefault,        // "default" or missing
  kGpt2,           // gpt-2, mpt, olmo, jais, phi-2, roberta-bpe
  kStarcoder,      // starcoder, refact, command-r, smollm
  kFalcon,         // falcon
  kLlama3,         // llama3, llama-bpe, llama-v3, falcon3, dbrx, smaug-bpe
  kQwen2,          // qwen2, deepseek-r1-qwen, stablelm2, megrez
  kDeepseekCoder,  // deepseek-coder
  kDeepseekLlm,    // deepseek-llm
};

// Special token ids; kNoToken where the vocabulary has none.
struct SpecialTokenIds {
  int32_t bos = kNoToken;
  int32_t eos = kNoToken;
  int32_t unk = kNoToken;
  int32_t pad = kNoToken;
  int32_t eot = kNoToken;
  int32_t eom = kNoToken;
  int32_t sep = kNoToken;
  int32_t cls = kNoToken;
  int32_t mask = kNoToken;
};

class Vocab {
 public:
  // Reads and validates the vocabulary. Errors name the offending key (and index).
  static StatusOr<Vocab> FromGguf(const gguf::GgufFile& file);

  // The sizes that determine a vocabulary's memory, read from the header without building it.
  struct Sizes {
    uint64_t n_tokens = 0;
    uint64_t text_bytes = 0;        // all token texts together
    uint64_t n_merges = 0;          // BPE only (0 for SPM and WPM)
    uint64_t merge_text_bytes = 0;  // both sides of every merge, separators excluded
    uint64_t n_special = 0;         // control/unknown/user-defined tokens with non-empty text
  };
  // Errors: the same missing or mistyped keys FromGguf reports.
  static StatusOr<Sizes> SizesFromGguf(const gguf::GgufFile& file);
  // Bytes a vocabulary of these sizes holds on the heap: equals heap_bytes() after FromGguf.
  static uint64_t HeapBytesFor(const Sizes& sizes);
  uint64_t heap_bytes() const;

  Vocab(Vocab&&) = default;
  Vocab& operator=(Vocab&&) = default;
  Vocab(const Vocab&) = default;
  Vocab& operator=(const Vocab&) = default;

  int32_t size() const { return static_cast<int32_t>(text_end_.size()); }
  bool IsValid(int32_t id) const { return id >= 0 && id < size(); }
  // Precondition for the accessors below: IsValid(id).
  std::string_view text(int32_t id) const { return Slice(text_blob_, text_end_, id); }
  float score(int32_t id) const { return scores_[id]; }
  TokenType type(int32_t id) const { return static_cast<TokenType>(types_[id]); }

  // Id of the token whose text is exactly `text` (the highest id when texts repeat), or kNoToken.
  int32_t Find(std::string_view text) const;
  // Rank of the BPE merge "left right" (lower merges first), or -1 when there is none.
  int32_t MergeRank(std::string_view left, std::string_view right) const;
  int32_t n_merges() const { return n_merges_; }
  // SPM byte fallback: the token for a raw byte ("<0xNN>", else the one-character token), or
  // kNoToken.
  int32_t ByteToken(uint8_t byte) const { return byte_tokens_[byte]; }
  // Length in bytes of the longest token text.
  size_t max_token_length() const { return max_token_length_; }

  // Special tokens.
  const SpecialTokenIds& special() const { return special_; }
  int32_t bos() const { return special_.bos; }
  int32_t eos() const { return special_.eos; }
  int32_t unk() const { return special_.unk; }
  int32_t pad() const { return special_.pad; }
  int32_t eot() const { return special_.eot; }
  int32_t eom() const { return special_.eom; }
  int32_t sep() const { return special_.sep; }
  // End of generation: EOS, EOT, EOM, and tokens whose text is one of <|eot_id|>, <|im_end|>,
  // <|end|>, <end_of_turn>, <|endoftext|>, <|eom_id|>, <EOT> (those are typed control here).
  bool IsEog(int32_t id) const;
  const std::vector<int32_t>& eog_ids() const { return eog_ids_; }
  // Control, unknown and user-defined tokens with non-empty text, longest text first (ties: lower
  // id first): the order in which Encode() partitions text on special tokens.
  const std::vector<int32_t>& special_token_ids() const { return special_token_ids_; }

  // Flags.
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_sep() const { return add_sep_; }  // WPM: append [SEP] when adding specials
  bool add_space_prefix() const { return add_space_prefix_; }
  bool ignore_merges() const { return ignore_merges_; }  // BPE: emit whole-token chunks directly
  bool clean_spaces() const { return clean_spaces_; }    // Decode: " ," -> "," etc.

  VocabType type() const { return type_; }
  PreTokenizer pre_tokenizer() const { return pre_tokenizer_; }
  const std::string& model_name() const { return model_name_; }  // tokenizer.ggml.model
  const std::string& pre_name() const { return pre_name_; }      // tokenizer.ggml.pre or "default"

 private:
  Vocab() = default;

  Status LoadTokens(const gguf::GgufFile& file);
  Status LoadMerges(const gguf::GgufFile& file);
  Status LoadSpecialIds(const gguf::GgufFile& file);
  Status LoadFlags(const gguf::GgufFile& file);
  void BuildDerivedTables();

  // Item i of a blob of concatenated strings whose end offsets are ends[].
  static std::string_view Slice(const std::string& blob, const std::vector<uint32_t>& ends,
                                int64_t i) {
    const uint32_t begin = i == 0 ? 0 : ends[static_cast<size_t>(i - 1)];
    return std::string_view(blob).substr(begin, ends[static_cast<size_t>(i)] - begin);
  }
  std::string_view merge_side(int32_t rank, int side) const {
    return Slice(merge_blob_, merge_end_, 2 * int64_t{rank} + side);
  }

  std::string text_blob_;               // every token's text, concatenated
  std::vector<uint32_t> text_end_;      // [n_vocab]: end of token i's text in text_blob_
  std::vector<float> scores_;           // [n_vocab]
  std::vector<uint8_t> types_;          // [n_vocab]: TokenType values
  std::vector<int32_t> token_slots_;    // open addressing by text hash: token id or -1;
                                        // [power of two >= 2 * n_vocab]
  std::string merge_blob_;              // left and right of every merge, concatenated
  std::vector<uint32_t> merge_end_;     // [2 * n_merges]: ends of left_r, right_r in merge_blob_
  std::vector<int32_t> merge_slots_;    // open addressing by (left, right) hash: rank or -1;
                                        // [power of two >= 2 * n_merges, or 0]
  int32_t n_merges_ = 0;
  std::array<int32_t, 256> byte_tokens_{};
  size_t max_token_length_ = 0;

  SpecialTokenIds special_;
  std::vector<int32_t> eog_ids_;  // sorted
  std::vector<int32_t> special_token_ids_;

  bool add_bos_ = false;
  bool add_eos_ = false;
  bool add_sep_ = false;
  bool add_space_prefix_ = false;
  bool ignore_merges_ = false;
  bool clean_spaces_ = false;

  VocabType type_ = VocabType::kSpm;
  PreTokenizer pre_tokenizer_ = PreTokenizer::kDefault;
  std::string model_name_;
  std::string pre_name_;
};

std::string_view TokenTypeName(TokenType type);
std::string_view PreTokenizerName(PreTokenizer pre);

}  // namespace ferry::tokenizer

#endif  // FERRY_TOKENIZER_VOCAB_H_
