// Tensor element types: the ggml type ids used by GGUF, their block layouts and sizes.
//
// A tensor row of `n` elements of type T occupies n / BlockSize(T) blocks of TypeSize(T) bytes;
// n must be a multiple of BlockSize(T). Ids are those of ggml (GGUF stores them as u32).
//
// Thread-safety: pure functions over constant tables.
#ifndef FERRY_TENSOR_DTYPE_H_
#define FERRY_TENSOR_DTYPE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "tensor/block_sizes.h"

namespace ferry {

enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

struct DTypeTraits {
  DType type;
  std::string_view name;  // ggml's name: "f32", "q4_K", ...
  uint32_t block_size;    // elements per block
  uint32_t type_size;     // bytes per block
  bool can_dequantize;    // ferry has a reference dequantization kernel for it
};

// Traits of a known type id, or nullopt for an id ferry does not know (GGUF ids 4, 5, 31..33,
// 36..38 were removed from ggml or never existed).
std::optional<DTypeTraits> GetDTypeTraits(uint32_t id);
// Precondition: a valid DType.
const DTypeTraits& Traits(DType type);

inline std::string_view DTypeName(DType t) { return Traits(t).name; }
// Like DTypeName, but safe for any id: "type id 4" for one ferry does not know (errors).
std::string DTypeLabel(DType t);
// Case-insensitive lookup by ggml name ("Q4_K", "q8_0", "F16").
StatusOr<DType> ParseDType(std::string_view name);

// Bytes for one row of `n` elements; an error if n is not a multiple of the block size or the
// size overflows.
StatusOr<uint64_t> RowBytes(DType type, uint64_t n);

}  // namespace ferry

#endif  // FERRY_TENSOR_DTYPE_H_
