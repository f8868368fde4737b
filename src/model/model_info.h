// ModelInfo: what a GGUF file says about a model, read from metadata and the tensor table only
// (no weights are touched). This is what `ferry show` prints and what the planner sizes from.
//
// Thread-safety: a plain value.
#ifndef FERRY_MODEL_MODEL_INFO_H_
#define FERRY_MODEL_MODEL_INFO_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "gguf/gguf.h"
#include "tensor/dtype.h"

namespace ferry {

// KV cache element types ferry supports.
enum class KvCacheType { kF16, kQ8_0, kQ4_0 };
inline constexpr KvCacheType kAllKvCacheTypes[] = {KvCacheType::kF16, KvCacheType::kQ8_0,
                                                   KvCacheType::kQ4_0};
std::string_view KvCacheTypeName(KvCacheType t);  // "f16", "q8_0", "q4_0"
DType KvCacheDType(KvCacheType t);

struct TensorTypeUsage {
  uint64_t count = 0;     // tensors of this type
  uint64_t elements = 0;  // their parameters
  uint64_t bytes = 0;     // their bytes in the file
};

struct ModelInfo {
  std::string architecture;           // general.architecture
  std::string name;                   // general.name, may be empty
  uint32_t gguf_version = 0;
  uint64_t file_size = 0;
  std::optional<uint32_t> file_type;  // general.file_type (llama ftype id)
  std::string file_type_name;         // "Q4_K_M", or "" when absent/unknown

  uint64_t parameter_count = 0;       // sum of all tensors' elements
  uint64_t tensor_bytes = 0;          // sum of all tensors' bytes
  std::map<DType, TensorTypeUsage> tensor_types;

  // Hyper-parameters ({arch}.*); absent keys stay nullopt.
  std::optional<uint64_t> context_length;
  std::optional<uint64_t> block_count;
  std::optional<uint64_t> embedding_length;
  std::optional<uint64_t> feed_forward_length;  // first layer's when given per layer
  std::optional<uint64_t> head_count;           // first layer's when given per layer
  // Per layer [block_count] when known (a scalar key is repeated), else empty.
  std::vector<uint64_t> head_count_kv;
  std::optional<uint64_t> key_length;    // head size of K (default embedding/head_count)
  std::optional<uint64_t> value_length;  // head size of V (default embedding/head_count)
  std::optional<uint64_t> sliding_window;
  std::optional<double> rope_freq_base;

  std::optional<uint64_t> vocab_size;  // tokenizer.ggml.tokens length, else {arch}.vocab_size
  std::string tokenizer_model;         // tokenizer.ggml.model: "llama", "gpt2", "bert", ...
  std::string tokenizer_pre;           // tokenizer.ggml.pre
  std::string tokenizer_kind;          // "SentencePiece", "BPE", "WordPiece", ... or ""
  bool has_chat_template = false;

  // KV cache bytes for one token over all layers, per cache type; nullopt when the per-layer
  // row size is not a multiple of the type's block (the cache type cannot be used) or the
  // hyper-parameters are missing.
  std::optional<uint64_t> KvBytesPerToken(KvCacheType type) const;
};

// Reads the metadata and tensor table. Errors only for metadata of the wrong type
// (e.g. a string block_count); missing keys are left empty.
StatusOr<ModelInfo> ReadModelInfo(const gguf::GgufFile& file);

}  // namespace ferry

#endif  // FERRY_MODEL_MODEL_INFO_H_
