// Reference (scalar, readable) quantization: one row of f32 values to GGUF blocks.
//
// F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 give the same bytes as the PyPI `gguf` package
// (gguf.quants.quantize, version 0.19.0), which follows ggml's quantize_row_*_ref: the same
// float32 operations in the same order, numpy's argmax (first element of largest |x|), the
// truncating casts of `np.trunc(...).astype(np.uint8)` and round-half-away-from-zero for Q8_0,
// and fp16 rounding to nearest even. Known limits of that equality, all outside finite data
// without signed-zero extremes: NaN inputs, and blocks whose Q4_1/Q5_1 minimum or maximum is a
// zero of either sign (numpy's min/max may pick -0 or +0; the stored m or d can then differ in
// its sign bit, the dequantized values do not).
//
// Q4_K and Q6_K are not implemented by the `gguf` package; these follow llama.cpp's reference
// quantizers (quantize_row_q4_K_ref with make_qkx2_quants, quantize_row_q6_K_ref with
// make_qx_quants): a weighted least-squares search over a few candidate scales per group, then
// 6-bit (Q4_K) or 8-bit (Q6_K) quantization of the group scales against one fp16 super-scale.
// The bytes are not promised to equal llama.cpp's; the blocks are valid and their round-trip
// error is small (kernels_ref_test bounds it). Inputs must be finite.
//
// Buffers, for a row of n elements of type T (n a multiple of BlockSize(T)):
//   src: [n] floats.
//   dst: [n / BlockSize(T)] blocks of TypeSize(T) bytes (tensor/blocks.h), aligned for the
//        block struct (2 bytes; 4 for F32).
//
// Thread-safety: pure functions; concurrent calls on distinct dst buffers are safe.
#ifndef FERRY_KERNELS_REF_QUANTIZE_H_
#define FERRY_KERNELS_REF_QUANTIZE_H_

#include <cstdint>

#include "base/status.h"
#include "tensor/blocks.h"
#include "tensor/dtype.h"

namespace ferry {

// True if QuantizeRow supports `type`: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K.
bool CanQuantize(DType type);

// Quantizes n floats at src into one row of `type` at dst.
// Errors: InvalidArgument if n < 0 or n is not a multiple of the block size; Unimplemented for
// a type without a reference quantizer. On error dst is untouched.
Status QuantizeRow(DType type, const float* src, void* dst, int64_t n);

// Per-type kernels. Precondition for all: n >= 0 and a multiple of the block size; dst has room
// for n / block size blocks.

// Copies n floats.
void QuantizeRowF32(const float* src, float* dst, int64_t n);
// f32 -> IEEE binary16, round to nearest even (as numpy's astype(np.float16)).
void QuantizeRowF16(const float* src, uint16_t* dst, int64_t n);
// f32 -> bfloat16, round to nearest even, NaN kept quiet (as ggml and gguf).
void QuantizeRowBF16(const float* src, uint16_t* dst, int64_t n);

// 32-element blocks. With x the block's values:
// Q4_0: max = the x of largest |x| (sign kept), d = max / -8, q = trunc(x / d + 8.5) in 0..15.
void QuantizeRowQ4_0(const float* src, BlockQ4_0* dst, int64_t n);
// Q4_1: d = (max - min) / 15, m = min, q = trunc((x - min) / d + 0.5) in 0..15.
void QuantizeRowQ4_1(const float* src, BlockQ4_1* dst, int64_t n);
// Q5_0: as Q4_0 with d = max / -16 and q = trunc(x / d + 16.5) in 0..31.
void QuantizeRowQ5_0(const float* src, BlockQ5_0* dst, int64_t n);
// Q5_1: as Q4_1 with d = (max - min) / 31 and q in 0..31.
void QuantizeRowQ5_1(const float* src, BlockQ5_1* dst, int64_t n);
// Q8_0: d = max|x| / 127, q = round(x / d), halves away from zero.
// ("/ d" above is "* (1 / d)" in float32, with 1 / d replaced by 0 when d is 0.)
void QuantizeRowQ8_0(const float* src, BlockQ8_0* dst, int64_t n);

// 256-element super-blocks (see the file comment for the algorithm).
void QuantizeRowQ4_K(const float* src, BlockQ4_K* dst, int64_t n);
void QuantizeRowQ6_K(const float* src, BlockQ6_K* dst, int64_t n);

}  // namespace ferry

#endif  // FERRY_KERNELS_REF_QUANTIZE_H_
