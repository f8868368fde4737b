#include "tensor/dtype.h"

#include <array>
#include <cctype>
#include <string>

namespace ferry {
namespace {

constexpr DTypeTraits kTable[] = {
    {DType::kF32, "f32", 1, 4, true},
    {DType::kF16, "f16", 1, 2, true},
    {DType::kQ4_0, "q4_0", 32, 18, true},
    {DType::kQ4_1, "q4_1", 32, 20, true},
    {DType::kQ5_0, "q5_0", 32, 22, true},
    {DType::kQ5_1, "q5_1", 32, 24, true},
    {DType::kQ8_0, "q8_0", 32, 34, true},
    {DType::kQ8_1, "q8_1", 32, 36, false},
    {DType::kQ2_K, "q2_K", 256, 84, true},
    {DType::kQ3_K, "q3_K", 256, 110, true},
    {DType::kQ4_K, "q4_K", 256, 144, true},
    {DType::kQ5_K, "q5_K", 256, 176, true},
    {DType::kQ6_K, "q6_K", 256, 210, true},
    {DType::kQ8_K, "q8_K", 256, 292, false},
    {DType::kIQ2_XXS, "iq2_xxs", 256, 66, false},
    {DType::kIQ2_XS, "iq2_xs", 256, 74, false},
    {DType::kIQ3_XXS, "iq3_xxs", 256, 98, false},
    {DType::kIQ1_S, "iq1_s", 256, 50, false},
    {DType::kIQ4_NL, "iq4_nl", 32, 18, false},
    {DType::kIQ3_S, "iq3_s", 256, 110, false},
    {DType::kIQ2_S, "iq2_s", 256, 82, false},
    {DType::kIQ4_XS, "iq4_xs", 256, 136, false},
    {DType::kI8, "i8", 1, 1, false},
    {DType::kI16, "i16", 1, 2, false},
    {DType::kI32, "i32", 1, 4, false},
    {DType::kI64, "i64", 1, 8, false},
    {DType::kF64, "f64", 1, 8, false},
    {DType::kIQ1_M, "iq1_m", 256, 56, false},
    {DType::kBF16, "bf16", 1, 2, true},
    {DType::kTQ1_0, "tq1_0", 256, 54, false},
    {DType::kTQ2_0, "tq2_0", 256, 66, false},
    {DType::kMXFP4, "mxfp4", 32, 17, false},
};

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::optional<DTypeTraits> GetDTypeTraits(uint32_t id) {
  for (const DTypeTraits& t : kTable) {
    if (static_cast<uint32_t>(t.type) == id) return t;
  }
  return std::nullopt;
}

const DTypeTraits& Traits(DType type) {
  for (const DTypeTraits& t : kTable) {
    if (t.type == type) return t;
  }
  return kTable[0];  // unreachable for valid DType values
}

std::string DTypeLabel(DType t) {
  auto traits = GetDTypeTraits(static_cast<uint32_t>(t));
  if (traits) return std::string(traits->name);
  return fmt::format("type id {}", static_cast<uint32_t>(t));
}

StatusOr<DType> ParseDType(std::string_view name) {
  for (const DTypeTraits& t : kTable) {
    if (EqualsIgnoreCase(t.name, name)) return t.type;
  }
  return InvalidArgumentError("unknown tensor type '{}'", name);
}

StatusOr<uint64_t> RowBytes(DType type, uint64_t n) {
  const DTypeTraits& t = Traits(type);
  if (n % t.block_size != 0) {
    return InvalidArgumentError("{} elements is not a multiple of the {} block size {}", n, t.name,
                                t.block_size);
  }
  uint64_t blocks = n / t.block_size;
  uint64_t bytes;
  if (__builtin_mul_overflow(blocks, static_cast<uint64_t>(t.type_size), &bytes)) {
    return OutOfRangeError("{} elements of {} overflow 64 bits", n, t.name);
  }
  return bytes;
}

}  // namespace ferry
