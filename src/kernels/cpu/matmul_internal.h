// Internal interface between the MatMul driver (matmul.cc) and its per-ISA kernels
// (matmul_portable.cc, matmul_avx2.cc). Not for use outside kernels/cpu.
//
// This header holds only plain data and declarations: matmul_avx2.cc is compiled with
// -mavx2 -mfma -mf16c, and any inline function it instantiated from a shared header could be
// merged by the linker into code that runs on CPUs without AVX2. The AVX2 file therefore defines
// its helpers with internal linkage and calls nothing inline from other headers.
#ifndef FERRY_KERNELS_CPU_MATMUL_INTERNAL_H_
#define FERRY_KERNELS_CPU_MATMUL_INTERNAL_H_

#include <cstdint>

#include "tensor/blocks.h"
#include "tensor/dtype.h"

namespace ferry::cpu_internal {

// The weight matrix as the kernels see it: `rows` rows of `cols` elements, row r at
// data + r * row_bytes.
struct WeightRows {
  DType type;
  const uint8_t* data;
  uint64_t row_bytes;
  int64_t cols;
  int64_t rows;
};

// The activations x [n_tok, cols], converted once to the activation type of the weight
// (ActivationType in kernels/ref/ops.h):
//   kF32:  token t = f32[cols] at data + t * stride (the caller's x, not copied)
//   kF16, kBF16: uint16_t[cols] per token
//   kQ8_0: BlockQ8_0[cols / 32] per token, plus block_d and block_s
//   kQ8_K: BlockQ8_K[cols / 256] per token (d in f32, bsums filled)
struct Activations {
  DType type = DType::kF32;
  int64_t n_tok = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;
  uint64_t stride = 0;             // bytes from one token to the next
  const float* block_d = nullptr;  // kQ8_0: [n_tok, cols / 32] fp16 block scale d as f32
  const float* block_s = nullptr;  // kQ8_0: [n_tok, cols / 32] d * sum(qs) in f32 (Q8_1's s,
                                   // unrounded), the m term of Q4_1 / Q5_1 weights
  const int8_t* qs = nullptr;      // kQ8_0: [n_tok, cols] the blocks' values, contiguous (two
                                   // blocks are one 512-bit load)
  const int32_t* qs_corr = nullptr;  // kQ8_0: [n_tok, cols / 4] -128 x each four values' sum
  const int32_t* qs_sum = nullptr;   // kQ8_0: [n_tok, cols / 32] each block's sum of values
};

// Computes y[t * w.rows + r] = dot(weight row r, token t) for r in [r0, r1), every token.
// Each output depends only on (r, t), never on r0 or r1, so any split over threads gives
// bitwise the same y.
using RowsKernel = void (*)(const WeightRows& w, int64_t r0, int64_t r1, const Activations& a,
                            float* y);

// Activation quantizers, block-for-block identical across implementations:
// Q8_0 as QuantizeRowQ8_0 (kernels/ref/quantize.h) plus d as f32 and s = d * sum(q);
// Q8_K as RoundActivationsRef describes. n is a multiple of the block size.
using QuantizeQ8_0Fn = void (*)(const float* x, int64_t n, BlockQ8_0* out, float* d, float* s);
using QuantizeQ8_KFn = void (*)(const float* x, int64_t n, BlockQ8_K* out);

// Packed weights (PackWeightRows' layout, w.data the packed bytes): y for rows
// [kPackRows * g0, kPackRows * g1), every token. Same per-(row, token) invariance as RowsKernel.
using PackedKernel = void (*)(const WeightRows& w, int64_t g0, int64_t g1, const Activations& a,
                              float* y);

struct KernelSet {
  RowsKernel (*rows_kernel)(DType w);  // null for a type the set lacks
  PackedKernel (*packed_kernel)(DType w);  // null for a type without a packed kernel
  QuantizeQ8_0Fn quantize_q8_0;
  QuantizeQ8_KFn quantize_q8_k;
};

// Plain C++ kernels (exact integer block sums), correct on any CPU.
const KernelSet& PortableKernels();
// AVX2 + FMA + F16C kernels; only call after checking the CPU supports them. Null when the
// build has no AVX2 kernels (a non-x86 target).
const KernelSet* Avx2Kernels();
// AVX-512 VNNI kernels (the Q8_0 family; the rest as Avx2Kernels); only after checking the CPU
// has AVX-512 F, BW, DQ, VL and VNNI. Null without x86 kernels.
const KernelSet* Avx512Kernels();

}  // namespace ferry::cpu_internal

#endif  // FERRY_KERNELS_CPU_MATMUL_INTERNAL_H_
