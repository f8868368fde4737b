// Reference (scalar, readable) dequantization: one row of a GGUF tensor to f32.
//
// These kernels are the oracle for the fast paths in kernels/cpu and kernels/cuda. Their results
// are bit-identical to the PyPI `gguf` package (gguf.quants.dequantize, version 0.19.0): every
// element is computed with the same float32 operations in the same order as its numpy code, e.g.
// Q4_1 is (d * q) + m and Q4_K is (d * sc) * q - (dmin * mn), each product rounded on its own
// (the build passes -ffp-contract=off so that no multiply-add is fused).
//
// Buffers, for a row of n elements of type T (n a multiple of BlockSize(T)):
//   src: [n / BlockSize(T)] blocks of TypeSize(T) bytes (see tensor/blocks.h), aligned for
//        the block struct (2 bytes; 4 for F32). GGUF tensor data (32-byte aligned) qualifies.
//   dst: [n] floats.
// src and dst must not overlap. fp16 fields are decoded exactly (subnormals, infinities and NaN
// payloads kept), so blocks with non-finite scales give non-finite outputs rather than errors.
//
// Thread-safety: pure functions; concurrent calls on distinct dst buffers are safe.
#ifndef FERRY_KERNELS_REF_DEQUANTIZE_H_
#define FERRY_KERNELS_REF_DEQUANTIZE_H_

#include <cstdint>

#include "base/status.h"
#include "tensor/blocks.h"
#include "tensor/dtype.h"

namespace ferry {

// True if DequantizeRow supports `type`: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K,
// Q3_K, Q4_K, Q5_K and Q6_K (the types whose DTypeTraits::can_dequantize is true).
bool CanDequantize(DType type);

// Dequantizes the n elements of one row of `type` at src into dst[0..n).
// Errors: InvalidArgument if n < 0 or n is not a multiple of the block size; Unimplemented for
// a type without a reference kernel. On error dst is untouched.
Status DequantizeRow(DType type, const void* src, float* dst, int64_t n);

// Per-type kernels. Precondition for all: n >= 0 and a multiple of the block size (1, 32 or 256
// as the name says); src holds n / block size blocks. e is the element index within a block.

// Copies n floats.
void DequantizeRowF32(const float* src, float* dst, int64_t n);
// IEEE binary16 -> f32, exact.
void DequantizeRowF16(const uint16_t* src, float* dst, int64_t n);
// bfloat16 -> f32 (the top 16 bits of the f32), exact.
void DequantizeRowBF16(const uint16_t* src, float* dst, int64_t n);

// 32-element blocks. Nibble q of element e: low nibble of qs[e] for e < 16, high nibble of
// qs[e - 16] otherwise. Five-bit types add bit e of qh (read as a little-endian u32) as bit 4.
// y = d * (q - 8).
void DequantizeRowQ4_0(const BlockQ4_0* src, float* dst, int64_t n);
// y = (d * q) + m.
void DequantizeRowQ4_1(const BlockQ4_1* src, float* dst, int64_t n);
// y = d * (q - 16).
void DequantizeRowQ5_0(const BlockQ5_0* src, float* dst, int64_t n);
// y = (d * q) + m.
void DequantizeRowQ5_1(const BlockQ5_1* src, float* dst, int64_t n);
// y = d * qs[e].
void DequantizeRowQ8_0(const BlockQ8_0* src, float* dst, int64_t n);

// 256-element super-blocks. Write e = 128h + 32j + l (h < 2, j < 4, l < 32).
// Q2_K: q = (qs[32h + l] >> 2j) & 3, sc = scales[e / 16];
//       y = (d * (sc & 15)) * q - (dmin * (sc >> 4)).
void DequantizeRowQ2_K(const BlockQ2_K* src, float* dst, int64_t n);
// Q3_K: q = ((qs[32h + l] >> 2j) & 3) - (bit (4h + j) of hmask[l] ? 0 : 4), in -4..3;
//       y = (d * (S[e / 16] - 32)) * q with the 6-bit scales S of UnpackScaleQ3_K.
void DequantizeRowQ3_K(const BlockQ3_K* src, float* dst, int64_t n);
// Q4_K: group g = e / 32 (c = e / 64); q is the low nibble of qs[32c + l] for even g, the high
//       nibble for odd g; (sc, mn) from UnpackScaleMinK4; y = (d * sc) * q - (dmin * mn).
void DequantizeRowQ4_K(const BlockQ4_K* src, float* dst, int64_t n);
// Q5_K: as Q4_K with q += 16 * (bit g of qh[e % 32]).
void DequantizeRowQ5_K(const BlockQ5_K* src, float* dst, int64_t n);
// Q6_K: low 4 bits from ql[64h + l + 32 (j & 1)] (low nibble for j < 2, high for j >= 2), high
//       2 bits (qh[32h + l] >> 2j) & 3; q = low | high << 4; y = (d * scales[e / 16]) * (q - 32).
void DequantizeRowQ6_K(const BlockQ6_K* src, float* dst, int64_t n);

}  // namespace ferry

#endif  // FERRY_KERNELS_REF_DEQUANTIZE_H_
