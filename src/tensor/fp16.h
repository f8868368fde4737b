// Conversions between float and the 16-bit float formats stored in GGUF files.
//
// IEEE binary16 ("f16"): round-to-nearest-even, subnormals, infinities and NaN handled exactly
// as numpy's float16 (and, except for NaN payloads, as ggml's reference conversion).
// bfloat16: ggml's rounding (NaN forced quiet, otherwise round-to-nearest-even on the top 16
// bits), which gguf-py copies.
//
// Thread-safety: pure functions.
#ifndef FERRY_TENSOR_FP16_H_
#define FERRY_TENSOR_FP16_H_

#include <cstdint>
#include <cstring>

namespace ferry {

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// binary16 -> float (exact).
inline float Fp16ToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return BitsToFloat(sign);
    // subnormal: mant * 2^-24
    float v = static_cast<float>(mant) * BitsToFloat(0x33800000u);  // 2^-24
    return sign ? -v : v;
  }
  if (exp == 31) return BitsToFloat(sign | 0x7f800000u | (mant << 13));
  return BitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

// float -> binary16, round to nearest even; overflow gives infinity. NaN stays NaN as in numpy:
// sign and the top 10 payload bits are kept (a quiet NaN stays quiet, a signaling one is not
// quieted), and a payload whose top bits are all zero becomes 1 so the result is not infinity.
// (ggml's scalar path returns 0x7e00 for every NaN and F16C hardware sets the quiet bit; numpy's
// rule is the one gguf-py writes F16 tensors with.)
inline uint16_t FloatToFp16(float f) {
  uint32_t x = FloatBits(f);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {                      // inf or NaN
    if (abs == 0x7f800000u) return sign | 0x7c00u;
    uint16_t payload = static_cast<uint16_t>((abs >> 13) & 0x3ffu);
    return sign | 0x7c00u | (payload != 0 ? payload : 1u);
  }
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520 -> inf
  if (abs < 0x38800000u) {                        // below the smallest normal half (2^-14)
    if (abs < 0x33000000u) return sign;           // below half the smallest subnormal -> 0
    // subnormal half: value = m * 2^-24, m = round(abs_value * 2^24)
    uint32_t e = abs >> 23;
    uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    // value = m * 2^(e-150); in units of 2^-24 that is m * 2^(e-126), and 14 <= 126-e <= 24.
    uint32_t rshift = 126 - e;
    uint32_t q = m >> rshift;
    uint32_t rem = m & ((1u << rshift) - 1);
    uint32_t half = 1u << (rshift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return sign | static_cast<uint16_t>(q);
  }
  // normal
  uint32_t e = (abs >> 23) - 112;
  uint32_t m = abs & 0x7fffffu;
  uint32_t q = (e << 10) | (m >> 13);
  uint32_t rem = m & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;  // may carry into the exponent: fine
  return sign | static_cast<uint16_t>(q);
}

inline float Bf16ToFloat(uint16_t b) { return BitsToFloat(static_cast<uint32_t>(b) << 16); }

inline uint16_t FloatToBf16(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64u);  // quiet NaN
  return static_cast<uint16_t>((static_cast<uint64_t>(u) + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

}  // namespace ferry

#endif  // FERRY_TENSOR_FP16_H_
