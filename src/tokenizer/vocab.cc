#include "tokenizer/vocab.h"

#include <algorithm>
#include <functional>
#include <iterator>
#include <limits>
#include <optional>
#include <span>

#include "base/log.h"

namespace ferry::tokenizer {
namespace {

constexpr std::string_view kKeyModel = "tokenizer.ggml.model";
constexpr std::string_view kKeyPre = "tokenizer.ggml.pre";
constexpr std::string_view kKeyTokens = "tokenizer.ggml.tokens";
constexpr std::string_view kKeyScores = "tokenizer.ggml.scores";
constexpr std::string_view kKeyTokenType = "tokenizer.ggml.token_type";
constexpr std::string_view kKeyMerges = "tokenizer.ggml.merges";

// Token texts that end generation; llama.cpp types them control whatever the file says.
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>",
};
// Candidates for EOT when tokenizer.ggml.eot_token_id is absent, in order of preference.
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
};
constexpr std::string_view kEomTexts[] = {"<|eom_id|>"};

struct PreEntry {
  std::string_view name;
  PreTokenizer pre;
};
constexpr PreEntry kPreNames[] = {
    {"default", PreTokenizer::kDefault},
    {"gpt-2", PreTokenizer::kGpt2},
    {"mpt", PreTokenizer::kGpt2},
    {"olmo", PreTokenizer::kGpt2},
    {"jais", PreTokenizer::kGpt2},
    {"phi-2", PreTokenizer::kGpt2},
    {"roberta-bpe", PreTokenizer::kGpt2},
    {"starcoder", PreTokenizer::kStarcoder},
    {"refact", PreTokenizer::kStarcoder},
    {"command-r", PreTokenizer::kStarcoder},
    {"smollm", PreTokenizer::kStarcoder},
    {"falcon", PreTokenizer::kFalcon},
    {"llama3", PreTokenizer::kLlama3},
    {"llama-bpe", PreTokenizer::kLlama3},
    {"llama-v3", PreTokenizer::kLlama3},
    {"falcon3", PreTokenizer::kLlama3},
    {"dbrx", PreTokenizer::kLlama3},
    {"smaug-bpe", PreTokenizer::kLlama3},
    {"qwen2", PreTokenizer::kQwen2},
    {"deepseek-r1-qwen", PreTokenizer::kQwen2},
    {"stablelm2", PreTokenizer::kQwen2},
    {"megrez", PreTokenizer::kQwen2},
    {"deepseek-coder", PreTokenizer::kDeepseekCoder},
    {"deepseek-llm", PreTokenizer::kDeepseekLlm},
};

// Pre values that force add_bos and ignore_merges on (llama.cpp's LLAMA3 group).
bool ForcesLlama3Flags(std::string_view pre) {
  return pre == "llama3" || pre == "llama-bpe" || pre == "llama-v3" || pre == "falcon3";
}

// Pre values whose decoding keeps spaces as they are.
bool KeepsSpaces(std::string_view pre) {
  return pre == "deepseek-coder" || pre == "deepseek-llm" || pre == "command-r" || pre == "qwen2" ||
         pre == "deepseek-r1-qwen";
}

std::string KnownPreNames() {
  std::string out;
  for (const PreEntry& e : kPreNames) {
    if (!out.empty()) out += ", ";
    out += e.name;
  }
  return out;
}

// Reads an optional bool key; an error if present with another type.
Status ReadBool(const gguf::GgufFile& file, std::string_view key, bool* out) {
  const gguf::Value* v = file.Find(key);
  if (v == nullptr) return Status::Ok();
  StatusOr<bool> b = v->AsBool();
  if (!b.ok()) return b.status().WithPrefix(key);
  *out = *b;
  return Status::Ok();
}

// Reads an optional token-id key. Sets *present when the key exists; "none" (negative or
// 0xFFFFFFFF) yields kNoToken.
Status ReadId(const gguf::GgufFile& file, std::string_view key, int32_t n_vocab, int32_t* out,
              bool* present) {
  *present = false;
  const gguf::Value* v = file.Find(key);
  if (v == nullptr) return Status::Ok();
  if (!v->is_integer()) {
    return InvalidArgumentError("{}: expected an integer token id, found {}", key,
                                gguf::ValueTypeName(v->type()));
  }
  *present = true;
  int64_t id;
  if (v->type() == gguf::ValueType::kUint64) {
    const uint64_t u = *v->AsUint();
    if (u == std::numeric_limits<uint64_t>::max() || u == 0xFFFFFFFFu) {
      *out = kNoToken;
      return Status::Ok();
    }
    id = u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
             ? std::numeric_limits<int64_t>::max()
             : static_cast<int64_t>(u);
  } else {
    id = *v->AsInt();
  }
  if (id < 0 || id == 0xFFFFFFFF) {
    *out = kNoToken;
    return Status::Ok();
  }
  if (id >= n_vocab) {
    return OutOfRangeError("{} = {} is not a token id: the vocabulary has {} tokens", key, id,
                           n_vocab);
  }
  *out = static_cast<int32_t>(id);
  return Status::Ok();
}

}  // namespace

std::string_view TokenTypeName(TokenType type) {
  switch (type) {
    case TokenType::kUndefined:
      return "undefined";
    case TokenType::kNormal:
      return "normal";
    case TokenType::kUnknown:
      return "unknown";
    case TokenType::kControl:
      return "control";
    case TokenType::kUserDefined:
      return "user-defined";
    case TokenType::kUnused:
      return "unused";
    case TokenType::kByte:
      return "byte";
  }
  return "?";
}

std::string_view PreTokenizerName(PreTokenizer pre) {
  switch (pre) {
    case PreTokenizer::kDefault:
      return "default";
    case PreTokenizer::kGpt2:
      return "gpt-2";
    case PreTokenizer::kStarcoder:
      return "starcoder";
    case PreTokenizer::kFalcon:
      return "falcon";
    case PreTokenizer::kLlama3:
      return "llama3";
    case PreTokenizer::kQwen2:
      return "qwen2";
    case PreTokenizer::kDeepseekCoder:
      return "deepseek-coder";
    case PreTokenizer::kDeepseekLlm:
      return "deepseek-llm";
  }
  return "?";
}

StatusOr<Vocab> Vocab::FromGguf(const gguf::GgufFile& file) {
  Vocab vocab;

  // Algorithm.
  const gguf::Value* model = file.Find(kKeyModel);
  if (model == nullptr) {
    return NotFoundError("{}: no tokenizer: key {} is missing", file.name(), kKeyModel);
  }
  StatusOr<std::string_view> model_name = model->AsString();
  if (!model_name.ok()) return model_name.status().WithPrefix(kKeyModel);
  vocab.model_name_ = std::string(*model_name);
  if (vocab.model_name_ == "llama") {
    vocab.type_ = VocabType::kSpm;
  } else if (vocab.model_name_ == "gpt2") {
    vocab.type_ = VocabType::kBpe;
  } else if (vocab.model_name_ == "bert") {
    vocab.type_ = VocabType::kWpm;
  } else {
    return UnimplementedError(
        "{}: unknown tokenizer model {} = '{}' (supported: llama, gpt2, bert)", file.name(),
        kKeyModel, vocab.model_name_);
  }

  // Pre-tokenizer. Only BPE vocabularies have one; SPM and WPM keep the name for display.
  const gguf::Value* pre = file.Find(kKeyPre);
  if (pre != nullptr) {
    StatusOr<std::string_view> pre_name = pre->AsString();
    if (!pre_name.ok()) return pre_name.status().WithPrefix(kKeyPre);
    vocab.pre_name_ = std::string(*pre_name);
  }
  if (vocab.type_ == VocabType::kBpe) {
    if (pre == nullptr) {
      log::Warn("tokenizer_pre_missing file={} using=default", file.name());
      vocab.pre_name_ = "default";
    }
    const auto it = std::find_if(std::begin(kPreNames), std::end(kPreNames),
                                 [&](const PreEntry& e) { return e.name == vocab.pre_name_; });
    if (it == std::end(kPreNames)) {
      return UnimplementedError("{}: unknown pre-tokenizer {} = '{}' (known: {})", file.name(),
                                kKeyPre, vocab.pre_name_, KnownPreNames());
    }
    vocab.pre_tokenizer_ = it->pre;
  } else if (pre == nullptr) {
    vocab.pre_name_ = "default";
  }

  Status s = vocab.LoadTokens(file);
  if (s.ok() && vocab.type_ == VocabType::kBpe) s = vocab.LoadMerges(file);
  if (s.ok()) s = vocab.LoadFlags(file);
  if (s.ok()) s = vocab.LoadSpecialIds(file);
  if (!s.ok()) return s.WithPrefix(file.name());
  vocab.BuildDerivedTables();
  return vocab;
}

namespace {

// Open addressing tables: a power of two of at least twice the entries (load <= 1/2), 0 for none.
uint64_t SlotCount(uint64_t entries) {
  if (entries == 0) return 0;
  uint64_t n = 1;
  while (n < 2 * entries) n <<= 1;
  return n;
}

uint64_t HashText(std::string_view s) { return std::hash<std::string_view>{}(s); }
uint64_t HashPair(std::string_view a, std::string_view b) {
  return HashText(a) * 0x9E3779B97F4A7C15ull ^ HashText(b);
}

// Every vocabulary reserves room for this many ids in its end-of-generation list: the texts of
// kEogTexts plus eos, eot and eom.
constexpr size_t kEogCapacity = std::size(kEogTexts) + 3;

bool IsSpecialType(int64_t t) {
  return t == static_cast<int64_t>(TokenType::kControl) ||
         t == static_cast<int64_t>(TokenType::kUnknown) ||
         t == static_cast<int64_t>(TokenType::kUserDefined);
}

StatusOr<const gguf::Array*> StringArray(const gguf::GgufFile& file, std::string_view key) {
  const gguf::Value* value = file.Find(key);
  if (value == nullptr) return NotFoundError("missing {}", key);
  StatusOr<const gguf::Array*> a = value->AsArray();
  if (!a.ok()) return a.status().WithPrefix(key);
  if (!(*a)->empty() && (*a)->type() != gguf::ValueType::kString) {
    return InvalidArgumentError("{}: expected an array of strings, found an array of {}", key,
                                gguf::ValueTypeName((*a)->type()));
  }
  return *a;
}

}  // namespace

StatusOr<Vocab::Sizes> Vocab::SizesFromGguf(const gguf::GgufFile& file) {
  Sizes sizes;
  FERRY_ASSIGN_OR_RETURN(const gguf::Array* tokens, StringArray(file, kKeyTokens));
  sizes.n_tokens = tokens->size();
  sizes.text_bytes = tokens->text_bytes();
  StatusOr<std::string_view> model = file.GetString(kKeyModel);
  if (model.ok() && *model == "gpt2") {
    FERRY_ASSIGN_OR_RETURN(const gguf::Array* merges, StringArray(file, kKeyMerges));
    sizes.n_merges = merges->size();
    if (merges->text_bytes() < merges->size()) {
      return InvalidArgumentError("{}: a merge is not two tokens separated by a space", kKeyMerges);
    }
    sizes.merge_text_bytes = merges->text_bytes() - merges->size();
  }
  if (const gguf::Value* v = file.Find(kKeyTokenType); v != nullptr) {
    StatusOr<const gguf::Array*> types = v->AsArray();
    if (!types.ok()) return types.status().WithPrefix(kKeyTokenType);
    const size_t n = std::min((*types)->size(), tokens->size());
    for (size_t i = 0; i < n; ++i) {
      StatusOr<int64_t> t = (*types)->IntAt(i);
      if (t.ok() && IsSpecialType(*t) && !tokens->string_at(i).empty()) ++sizes.n_special;
    }
  }
  return sizes;
}

uint64_t Vocab::HeapBytesFor(const Sizes& s) {
  auto string_heap = [](uint64_t n) -> uint64_t { return n > 15 ? n + 1 : 0; };
  return string_heap(s.text_bytes) + s.n_tokens * (sizeof(uint32_t) + sizeof(float) + 1) +
         SlotCount(s.n_tokens) * sizeof(int32_t) + string_heap(s.merge_text_bytes) +
         2 * s.n_merges * sizeof(uint32_t) + SlotCount(s.n_merges) * sizeof(int32_t) +
         (s.n_special + std::size(kEogTexts)) * sizeof(int32_t) + kEogCapacity * sizeof(int32_t);
}

uint64_t Vocab::heap_bytes() const {
  auto string_heap = [](const std::string& str) -> uint64_t {
    return str.capacity() > 15 ? str.capacity() + 1 : 0;
  };
  return string_heap(text_blob_) + text_end_.capacity() * sizeof(uint32_t) +
         scores_.capacity() * sizeof(float) + types_.capacity() +
         token_slots_.capacity() * sizeof(int32_t) + string_heap(merge_blob_) +
         merge_end_.capacity() * sizeof(uint32_t) + merge_slots_.capacity() * sizeof(int32_t) +
         special_token_ids_.capacity() * sizeof(int32_t) + eog_ids_.capacity() * sizeof(int32_t);
}

Status Vocab::LoadTokens(const gguf::GgufFile& file) {
  FERRY_ASSIGN_OR_RETURN(const gguf::Array* tokens, StringArray(file, kKeyTokens));
  if (tokens->empty()) return InvalidArgumentError("{} is empty", kKeyTokens);
  if (tokens->size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return OutOfRangeError("{}: {} tokens is too many", kKeyTokens, tokens->size());
  }
  if (tokens->text_bytes() > std::numeric_limits<uint32_t>::max()) {
    return OutOfRangeError("{}: {} bytes of token text is too many", kKeyTokens,
                           tokens->text_bytes());
  }
  const size_t n = tokens->size();
  text_blob_.reserve(static_cast<size_t>(tokens->text_bytes()));
  text_end_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string_view t = tokens->string_at(i);
    text_blob_.append(t);
    text_end_.push_back(static_cast<uint32_t>(text_blob_.size()));
    max_token_length_ = std::max(max_token_length_, t.size());
  }
  scores_.assign(n, 0.0f);
  types_.assign(n, static_cast<uint8_t>(TokenType::kNormal));

  if (const gguf::Value* scores_value = file.Find(kKeyScores); scores_value != nullptr) {
    StatusOr<const gguf::Array*> scores = scores_value->AsArray();
    if (!scores.ok()) return scores.status().WithPrefix(kKeyScores);
    if ((*scores)->size() != n) {
      return InvalidArgumentError("{} has {} entries but {} has {}", kKeyScores,
                                  (*scores)->size(), kKeyTokens, n);
    }
    for (size_t i = 0; i < n; ++i) {
      StatusOr<double> score = (*scores)->DoubleAt(i);
      if (!score.ok()) return score.status().WithPrefix(fmt::format("{}[{}]", kKeyScores, i));
      scores_[i] = static_cast<float>(*score);
    }
  }

  if (const gguf::Value* types_value = file.Find(kKeyTokenType); types_value != nullptr) {
    StatusOr<const gguf::Array*> types = types_value->AsArray();
    if (!types.ok()) return types.status().WithPrefix(kKeyTokenType);
    if ((*types)->size() != n) {
      return InvalidArgumentError("{} has {} entries but {} has {}", kKeyTokenType,
                                  (*types)->size(), kKeyTokens, n);
    }
    for (size_t i = 0; i < n; ++i) {
      StatusOr<int64_t> t = (*types)->IntAt(i);
      if (!t.ok()) return t.status().WithPrefix(fmt::format("{}[{}]", kKeyTokenType, i));
      if (*t < 0 || *t > static_cast<int64_t>(TokenType::kByte)) {
        return OutOfRangeError("{}[{}] = {} is not a token type (0..6)", kKeyTokenType, i, *t);
      }
      types_[i] = static_cast<uint8_t>(*t);
    }
  }

  // Text -> id; a repeated text maps to its highest id.
  token_slots_.assign(static_cast<size_t>(SlotCount(n)), kNoToken);
  const uint64_t mask = token_slots_.size() - 1;
  for (size_t i = 0; i < n; ++i) {
    const std::string_view t = text(static_cast<int32_t>(i));
    for (uint64_t slot = HashText(t) & mask;; slot = (slot + 1) & mask) {
      int32_t& id = token_slots_[slot];
      if (id == kNoToken || text(id) == t) {
        id = static_cast<int32_t>(i);
        break;
      }
    }
  }
  return Status::Ok();
}

Status Vocab::LoadMerges(const gguf::GgufFile& file) {
  StatusOr<const gguf::Array*> merges_or = StringArray(file, kKeyMerges);
  if (!merges_or.ok()) {
    if (merges_or.status().code() == StatusCode::kNotFound) {
      return NotFoundError("missing {} (required for gpt2)", kKeyMerges);
    }
    return merges_or.status();
  }
  const gguf::Array& merges = **merges_or;
  if (merges.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return OutOfRangeError("{}: {} merges is too many", kKeyMerges, merges.size());
  }
  if (merges.text_bytes() > std::numeric_limits<uint32_t>::max()) {
    return OutOfRangeError("{}: {} bytes of merges is too many", kKeyMerges, merges.text_bytes());
  }
  const size_t n = merges.size();
  if (merges.text_bytes() >= n) merge_blob_.reserve(static_cast<size_t>(merges.text_bytes() - n));
  merge_end_.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    const std::string_view merge = merges.string_at(i);
    const size_t space = merge.size() > 1 ? merge.find(' ', 1) : std::string_view::npos;
    if (space == std::string_view::npos) {
      return InvalidArgumentError("{}[{}] = '{}' is not two tokens separated by a space",
                                  kKeyMerges, i, merge);
    }
    merge_blob_.append(merge.substr(0, space));
    merge_end_.push_back(static_cast<uint32_t>(merge_blob_.size()));
    merge_blob_.append(merge.substr(space + 1));
    merge_end_.push_back(static_cast<uint32_t>(merge_blob_.size()));
  }
  n_merges_ = static_cast<int32_t>(n);
  merge_slots_.assign(static_cast<size_t>(SlotCount(n)), -1);
  const uint64_t mask = merge_slots_.size() - 1;
  for (int32_t r = 0; r < n_merges_; ++r) {
    const std::string_view left = merge_side(r, 0), right = merge_side(r, 1);
    for (uint64_t slot = HashPair(left, right) & mask;; slot = (slot + 1) & mask) {
      int32_t& rank = merge_slots_[slot];
      if (rank == -1) {
        rank = r;
        break;
      }
      // The first (lowest) rank wins when a merge repeats.
      if (merge_side(rank, 0) == left && merge_side(rank, 1) == right) break;
    }
  }
  return Status::Ok();
}

Status Vocab::LoadFlags(const gguf::GgufFile& file) {
  switch (type_) {
    case VocabType::kSpm:
      add_bos_ = true;
      add_space_prefix_ = true;
      clean_spaces_ = false;
      break;
    case VocabType::kBpe:
      add_bos_ = false;
      add_space_prefix_ = false;
      clean_spaces_ = !KeepsSpaces(pre_name_);
      break;
    case VocabType::kWpm:
      add_bos_ = true;
      add_sep_ = true;
      add_space_prefix_ = false;
      clean_spaces_ = true;
      break;
  }
  FERRY_RETURN_IF_ERROR(ReadBool(file, "tokenizer.ggml.add_bos_token", &add_bos_));
  FERRY_RETURN_IF_ERROR(ReadBool(file, "tokenizer.ggml.add_eos_token", &add_eos_));
  FERRY_RETURN_IF_ERROR(ReadBool(file, "tokenizer.ggml.add_sep_token", &add_sep_));
  FERRY_RETURN_IF_ERROR(ReadBool(file, "tokenizer.ggml.add_space_prefix", &add_space_prefix_));
  if (type_ == VocabType::kBpe && ForcesLlama3Flags(pre_name_)) {
    add_bos_ = true;
    ignore_merges_ = true;
  }
  return Status::Ok();
}

Status Vocab::LoadSpecialIds(const gguf::GgufFile& file) {
  const int32_t n = size();
  switch (type_) {
    case VocabType::kSpm:
      special_.bos = 1;
      special_.eos = 2;
      special_.unk = 0;
      break;
    case VocabType::kBpe:
      break;
    case VocabType::kWpm:
      special_.unk = 100;
      special_.cls = 101;
      special_.sep = 102;
      special_.pad = 0;
      special_.mask = 103;
      break;
  }
  // A default id that the vocabulary cannot hold is dropped rather than rejected.
  for (int32_t* id : {&special_.bos, &special_.eos, &special_.unk, &special_.pad, &special_.sep,
                      &special_.cls, &special_.mask}) {
    if (*id >= n) *id = kNoToken;
  }

  struct IdKey {
    std::string_view key;
    int32_t* id;
  };
  const IdKey keys[] = {
      {"tokenizer.ggml.bos_token_id", &special_.bos},
      {"tokenizer.ggml.eos_token_id", &special_.eos},
      {"tokenizer.ggml.unknown_token_id", &special_.unk},
      {"tokenizer.ggml.padding_token_id", &special_.pad},
      {"tokenizer.ggml.eot_token_id", &special_.eot},
      {"tokenizer.ggml.eom_token_id", &special_.eom},
      {"tokenizer.ggml.seperator_token_id", &special_.sep},
      {"tokenizer.ggml.separator_token_id", &special_.sep},
      {"tokenizer.ggml.cls_token_id", &special_.cls},
      {"tokenizer.ggml.mask_token_id", &special_.mask},
  };
  bool bos_present = false;
  bool eot_present = false;
  bool eom_present = false;
  for (const IdKey& k : keys) {
    bool present = false;
    FERRY_RETURN_IF_ERROR(ReadId(file, k.key, n, k.id, &present));
    if (k.id == &special_.bos) bos_present = present;
    if (k.id == &special_.eot) eot_present = present;
    if (k.id == &special_.eom) eom_present = present;
  }
  // WordPiece puts [CLS] where other vocabularies put BOS.
  if (type_ == VocabType::kWpm && !bos_present) special_.bos = special_.cls;

  auto find_first = [&](std::span<const std::string_view> texts) {
    for (std::string_view t : texts) {
      const int32_t id = Find(t);
      if (id != kNoToken) return id;
    }
    return kNoToken;
  };
  if (!eot_present) special_.eot = find_first(kEotTexts);
  if (!eom_present) special_.eom = find_first(kEomTexts);
  return Status::Ok();
}

void Vocab::BuildDerivedTables() {
  // Capacities are fixed by the sizes alone (HeapBytesFor): room for every special-typed token
  // of the file plus the end-of-generation texts this function may force to control.
  size_t n_special = 0;
  for (int32_t id = 0; id < size(); ++id) {
    if (IsSpecialType(types_[id]) && !text(id).empty()) ++n_special;
  }
  special_token_ids_.reserve(n_special + std::size(kEogTexts));
  eog_ids_.reserve(kEogCapacity);
  // End-of-generation set; its texts are control tokens whatever the file says.
  for (std::string_view t : kEogTexts) {
    const int32_t id = Find(t);
    if (id == kNoToken) continue;
    if (type(id) != TokenType::kControl) {
      log::Debug("tokenizer_eog_forced_control id={} text={} was={}", id, t,
                 TokenTypeName(type(id)));
      types_[id] = static_cast<uint8_t>(TokenType::kControl);
    }
    eog_ids_.push_back(id);
  }
  for (int32_t id : {special_.eos, special_.eot, special_.eom}) {
    if (id != kNoToken) eog_ids_.push_back(id);
  }
  std::sort(eog_ids_.begin(), eog_ids_.end());
  eog_ids_.erase(std::unique(eog_ids_.begin(), eog_ids_.end()), eog_ids_.end());

  // Special tokens for the partition step, longest first.
  for (int32_t id = 0; id < size(); ++id) {
    if (IsSpecialType(types_[id]) && !text(id).empty()) {
      special_token_ids_.push_back(id);
    }
  }
  std::stable_sort(special_token_ids_.begin(), special_token_ids_.end(),
                   [&](int32_t a, int32_t b) { return text(a).size() > text(b).size(); });

  // SPM byte fallback.
  for (int b = 0; b < 256; ++b) {
    int32_t id = Find(fmt::format("<0x{:02X}>", b));
    if (id == kNoToken) id = Find(std::string(1, static_cast<char>(b)));
    byte_tokens_[b] = id;
  }
}

int32_t Vocab::Find(std::string_view t) const {
  const uint64_t mask = token_slots_.size() - 1;
  for (uint64_t slot = HashText(t) & mask;; slot = (slot + 1) & mask) {
    const int32_t id = token_slots_[slot];
    if (id == kNoToken || text(id) == t) return id;
  }
}

int32_t Vocab::MergeRank(std::string_view left, std::string_view right) const {
  if (merge_slots_.empty()) return -1;
  const uint64_t mask = merge_slots_.size() - 1;
  for (uint64_t slot = HashPair(left, right) & mask;; slot = (slot + 1) & mask) {
    const int32_t rank = merge_slots_[slot];
    if (rank == -1) return -1;
    if (merge_side(rank, 0) == left && merge_side(rank, 1) == right) return rank;
  }
}

bool Vocab::IsEog(int32_t id) const {
  return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
}

}  // namespace ferry::tokenizer
