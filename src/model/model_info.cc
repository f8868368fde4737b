#include "model/model_info.h"

#include <fmt/format.h>

namespace ferry {

std::string_view KvCacheTypeName(KvCacheType t) {
  switch (t) {
    case KvCacheType::kF16: return "f16";
    case KvCacheType::kQ8_0: return "q8_0";
    case KvCacheType::kQ4_0: return "q4_0";
  }
  return "?";
}

DType KvCacheDType(KvCacheType t) {
  switch (t) {
    case KvCacheType::kF16: return DType::kF16;
    case KvCacheType::kQ8_0: return DType::kQ8_0;
    case KvCacheType::kQ4_0: return DType::kQ4_0;
  }
  return DType::kF16;
}


namespace {

// Reads an optional unsigned key; a per-layer array yields its values.
Status ReadUintOrArray(const gguf::GgufFile& f, const std::string& key,
                       std::vector<uint64_t>* out) {
  const gguf::Value* v = f.Find(key);
  if (v == nullptr) return Status::Ok();
  if (v->type() == gguf::ValueType::kArray) {
    const gguf::Array& a = std::get<gguf::Array>(v->data);
    for (size_t i = 0; i < a.size(); ++i) {
      auto u = a.at(i).AsUint();
      if (!u.ok()) return u.status().WithPrefix(fmt::format("{}: {}", f.name(), key));
      out->push_back(*u);
    }
    return Status::Ok();
  }
  auto u = v->AsUint();
  if (!u.ok()) return u.status().WithPrefix(fmt::format("{}: {}", f.name(), key));
  out->push_back(*u);
  return Status::Ok();
}

Status ReadOptUint(const gguf::GgufFile& f, const std::string& key,
                   std::optional<uint64_t>* out) {
  std::vector<uint64_t> v;
  FERRY_RETURN_IF_ERROR(ReadUintOrArray(f, key, &v));
  if (!v.empty()) *out = v[0];
  return Status::Ok();
}

}  // namespace

StatusOr<ModelInfo> ReadModelInfo(const gguf::GgufFile& f) {
  ModelInfo m;
  m.gguf_version = f.version();
  m.file_size = f.file_size();
  if (f.Find("general.architecture") == nullptr) {
    return NotFoundError("{}: no general.architecture key; not a model file", f.name());
  }
  FERRY_ASSIGN_OR_RETURN(std::string_view arch, f.GetString("general.architecture"));
  m.architecture = std::string(arch);
  if (f.Find("general.name")) {
    FERRY_ASSIGN_OR_RETURN(std::string_view name, f.GetString("general.name"));
    m.name = std::string(name);
  }
  if (f.Find("general.file_type")) {
    FERRY_ASSIGN_OR_RETURN(uint64_t ft, f.GetUint("general.file_type"));
    m.file_type = static_cast<uint32_t>(ft);
    m.file_type_name = std::string(gguf::FileTypeName(*m.file_type));
  }
  for (const gguf::TensorInfo& t : f.tensors()) {
    m.parameter_count += t.n_elements;
    m.tensor_bytes += t.n_bytes;
    TensorTypeUsage& u = m.tensor_types[t.type];
    ++u.count;
    u.elements += t.n_elements;
    u.bytes += t.n_bytes;
  }

  const std::string a = m.architecture + ".";
  FERRY_RETURN_IF_ERROR(ReadOptUint(f, a + "context_length", &m.context_length));
  FERRY_RETURN_IF_ERROR(ReadOptUint(f, a + "block_count", &m.block_count));
  FERRY_RETURN_IF_ERROR(ReadOptUint(f, a + "embedding_length", &m.embedding_length));
  FERRY_RETURN_IF_ERROR(ReadOptUint(f, a + "feed_forward_length", &m.feed_forward_length));
  std::vector<uint64_t> heads;
  FERRY_RETURN_IF_ERROR(ReadUintOrArray(f, a + "attention.head_count", &heads));
  if (!heads.empty()) m.head_count = heads[0];
  std::vector<uint64_t> kv;
  FERRY_RETURN_IF_ERROR(ReadUintOrArray(f, a + "attention.head_count_kv", &kv));
  if (kv.empty()) kv = heads;  // no GQA key: every head has its own K/V
  // A block count above the file's tensor count cannot be true (each layer has tensors of its
  // own): it is shown as read, but nothing is sized by it. A header without tensors (a shape
  // description) may describe up to kMaxDescribedLayers.
  constexpr uint64_t kMaxDescribedLayers = 4096;
  const uint64_t layer_bound = f.tensors().empty() ? kMaxDescribedLayers : f.tensors().size();
  if (m.block_count && *m.block_count <= layer_bound) {
    if (kv.size() == 1) kv.assign(*m.block_count, kv[0]);
    if (kv.size() == *m.block_count) m.head_count_kv = kv;
  }
  FERRY_RETURN_IF_ERROR(ReadOptUint(f, a + "attention.key_length", &m.key_length));
  FERRY_RETURN_IF_ERROR(ReadOptUint(f, a + "attention.value_length", &m.value_length));
  if (m.embedding_length && m.head_count && *m.head_count > 0) {
    if (!m.key_length) m.key_length = *m.embedding_length / *m.head_count;
    if (!m.value_length) m.value_length = *m.embedding_length / *m.head_count;
  }
  FERRY_RETURN_IF_ERROR(ReadOptUint(f, a + "attention.sliding_window", &m.sliding_window));
  if (f.Find(a + "rope.freq_base")) {
    FERRY_ASSIGN_OR_RETURN(double base, f.GetDouble(a + "rope.freq_base"));
    m.rope_freq_base = base;
  }

  if (f.Find("tokenizer.ggml.tokens")) {
    FERRY_ASSIGN_OR_RETURN(const gguf::Array* tokens, f.GetArray("tokenizer.ggml.tokens"));
    m.vocab_size = tokens->size();
  } else {
    FERRY_RETURN_IF_ERROR(ReadOptUint(f, a + "vocab_size", &m.vocab_size));
  }
  if (f.Find("tokenizer.ggml.model")) {
    FERRY_ASSIGN_OR_RETURN(std::string_view tm, f.GetString("tokenizer.ggml.model"));
    m.tokenizer_model = std::string(tm);
  }
  if (f.Find("tokenizer.ggml.pre")) {
    FERRY_ASSIGN_OR_RETURN(std::string_view pre, f.GetString("tokenizer.ggml.pre"));
    m.tokenizer_pre = std::string(pre);
  }
  if (m.tokenizer_model == "llama") {
    m.tokenizer_kind = "SentencePiece";
  } else if (m.tokenizer_model == "gpt2") {
    m.tokenizer_kind = "BPE";
  } else if (m.tokenizer_model == "bert") {
    m.tokenizer_kind = "WordPiece";
  } else if (m.tokenizer_model == "t5") {
    m.tokenizer_kind = "Unigram";
  } else if (m.tokenizer_model == "rwkv") {
    m.tokenizer_kind = "RWKV";
  } else if (!m.tokenizer_model.empty()) {
    m.tokenizer_kind = "unknown (" + m.tokenizer_model + ")";
  }
  m.has_chat_template = f.Find("tokenizer.chat_template") != nullptr;
  return m;
}

std::optional<uint64_t> ModelInfo::KvBytesPerToken(KvCacheType type) const {
  if (head_count_kv.empty() || !key_length || !value_length) return std::nullopt;
  uint64_t total = 0;
  for (uint64_t n_kv : head_count_kv) {
    auto k = RowBytes(KvCacheDType(type), n_kv * *key_length);
    auto v = RowBytes(KvCacheDType(type), n_kv * *value_length);
    if (!k.ok() || !v.ok()) return std::nullopt;
    total += *k + *v;
  }
  return total;
}

}  // namespace ferry
