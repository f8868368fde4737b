// Byte layouts of ggml's quantization blocks, as stored in GGUF tensor data.
//
// One struct per block type; a row of n elements of type T is n / BlockSize(T) consecutive
// blocks with no padding (sizeof equals DTypeTraits::type_size; kernels_ref_test checks it
// against Traits()). `d`, `m` and `dmin` fields hold IEEE binary16 bits (decode with
// Fp16ToFloat from tensor/fp16.h) unless the comment says otherwise. Multi-byte fields are
// little-endian in the file, so these structs describe the data only on a little-endian host.
//
// How the quant bits map to elements is documented with each dequantization kernel in
// kernels/ref/dequantize.h; ggml's own definitions are the block_* structs of
// ggml/src/ggml-common.h and dequantize_row_* in ggml/src/ggml-quants.c.
//
// This header and block_sizes.h are all the CUDA kernels (nvcc) take from tensor/: it must not
// include the project's other headers.
//
// Thread-safety: plain data.
#ifndef FERRY_TENSOR_BLOCKS_H_
#define FERRY_TENSOR_BLOCKS_H_

#include <bit>
#include <cstdint>

#include "tensor/block_sizes.h"

namespace ferry {

static_assert(std::endian::native == std::endian::little,
              "block structs mirror little-endian file bytes");

inline constexpr int kQK4_0 = 32;  // elements per Q4_0 block (also Q4_1, Q5_0, Q5_1, Q8_0, Q8_1)
inline constexpr int kKScaleSize = 12;  // bytes of packed 6-bit scales in Q3_K, Q4_K and Q5_K

// 32 elements: y = d * (q - 8), q a nibble.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK4_0 / 2];  // byte j: element j in the low nibble, element j + 16 in the high
};
static_assert(sizeof(BlockQ4_0) == 18);

// 32 elements: y = d * q + m, q a nibble.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK4_0 / 2];  // as BlockQ4_0
};
static_assert(sizeof(BlockQ4_1) == 20);

// 32 elements: y = d * (q - 16), q 5 bits.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];           // little-endian u32: bit e is the fifth bit of element e
  uint8_t qs[kQK4_0 / 2];  // low 4 bits, as BlockQ4_0
};
static_assert(sizeof(BlockQ5_0) == 22);

// 32 elements: y = d * q + m, q 5 bits.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK4_0 / 2];
};
static_assert(sizeof(BlockQ5_1) == 24);

// 32 elements: y = d * qs[e].
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK4_0];
};
static_assert(sizeof(BlockQ8_0) == 34);

// 32 elements, an activation type: as Q8_0 plus s = d * sum(qs) (fp16).
struct BlockQ8_1 {
  uint16_t d;
  uint16_t s;
  int8_t qs[kQK4_0];
};
static_assert(sizeof(BlockQ8_1) == 36);

// 256 elements in 16 groups of 16: y = d * (sc & 15) * q - dmin * (sc >> 4), q 2 bits.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];  // group g: scale in the low nibble, min in the high nibble
  uint8_t qs[kQK_K / 4];       // 2-bit quants, four per byte
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84);

// 256 elements in 16 groups of 16: y = d * (S - 32) * q, q in -4..3, S a 6-bit scale.
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];     // high bits of the quants
  uint8_t qs[kQK_K / 4];        // low 2 bits of the quants
  uint8_t scales[kKScaleSize];  // sixteen 6-bit scales
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110);

// 256 elements in 8 groups of 32: y = d * sc * q - dmin * mn, q a nibble, sc/mn 6 bits.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];  // eight (sc, mn) pairs of 6-bit values
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);

// 256 elements in 8 groups of 32: as Q4_K with a fifth bit per quant.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176);

// 256 elements in 16 groups of 16: y = d * scales[g] * (q - 32), q 6 bits.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];  // low 4 bits
  uint8_t qh[kQK_K / 4];  // high 2 bits
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210);

// 256 elements, an activation type: y = d * qs[e].
struct BlockQ8_K {
  float d;  // f32, not fp16
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];  // sum of qs over each group of 16
};
static_assert(sizeof(BlockQ8_K) == 292);

// The 6-bit (scale, min) pair of group g (0..7) from the 12 packed bytes s of Q4_K and Q5_K:
// g < 4: low 6 bits of s[g] and s[g + 4]; g >= 4: low and high nibble of s[g + 4] plus the top
// two bits of s[g - 4] and s[g] as bits 4..5.
inline void UnpackScaleMinK4(const uint8_t* s, int g, int* scale, int* min) {
  if (g < 4) {
    *scale = s[g] & 63;
    *min = s[g + 4] & 63;
  } else {
    *scale = (s[g + 4] & 15) | ((s[g - 4] >> 6) << 4);
    *min = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
  }
}

// The unsigned 6-bit scale S (0..63) of group k (0..15) from the 12 packed bytes s of Q3_K; the
// signed scale is S - 32. Low 4 bits: nibble k / 8 of s[k % 8]; high 2 bits: bits 2 (k / 4) of
// s[8 + k % 4].
inline int UnpackScaleQ3_K(const uint8_t* s, int k) {
  int low = (s[k % 8] >> (4 * (k / 8))) & 15;
  int high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
  return low | (high << 4);
}

}  // namespace ferry

#endif  // FERRY_TENSOR_BLOCKS_H_
