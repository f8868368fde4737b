// Fast CPU matrix multiplication of GGUF weights with f32 activations.
//
// MatMul computes what MatMulRef (kernels/ref/ops.h) defines: each activation row is first
// quantized ONCE to ActivationType(w.type) (real Q8_0 blocks for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0
// weights, Q8_K blocks with bsums for Q2_K..Q6_K, an f16 or bf16 row for F16 / BF16, f32 as
// given for F32), then every (weight row, token) pair is an integer dot product per block
// (exact) whose block results are scaled and summed in float. The only difference from
// MatMulRef is the order and precision of that float summation:
//     |y - y_ref| <= 1e-5 * sum_i |w_i * x_i|        (kernels_cpu_test checks it)
// Q4_1 / Q5_1 use llama.cpp's Q8_1 decomposition d_w * d_a * sum(q_w * q_a) + m_w * s_a, with
// s_a = d_a * sum(q_a) kept in f32 (llama.cpp rounds s_a to fp16; MatMulRef does not round).
//
// Work is split over weight rows (contiguous row ranges per thread); several tokens share each
// loaded weight row. Each output depends only on its (row, token), so results are bitwise the
// same for any thread count.
//
// Instruction sets: AVX-512 VNNI kernels (the Q8_0 family with 512-bit vpdpbusd, over rows or
// over packed weights, and Q4_K / Q6_K over packed weights: see PackWeightRows), AVX2 + FMA +
// F16C kernels (x86-64, chosen at run time with __builtin_cpu_supports) or a portable C++ path
// that runs on any CPU. Each path keeps the per-token invariance; paths differ from each other
// only in the order of the float summation (within the bound above).
//
// Thread-safety: pure function over caller-owned buffers; concurrent calls are safe when they
// use distinct pools (a ThreadPool runs one ParallelFor at a time).
#ifndef FERRY_KERNELS_CPU_MATMUL_H_
#define FERRY_KERNELS_CPU_MATMUL_H_

#include <cstdint>
#include <span>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kernels/ref/ops.h"
#include "tensor/blocks.h"
#include "tensor/dtype.h"

namespace ferry {

// The environment variable FERRY_CPU_KERNELS (best | avx512 | avx2 | portable, read once at
// first use) caps what the CPU checks below report, and so what kBest and kAvx2 run and what
// every caller that asks CpuHasAvx2Kernels / CpuHasAvx512Kernels uses (attention, activations,
// conversions, packing): with "avx2" an AVX-512 machine runs the AVX2 kernels everywhere, with
// "portable" the portable ones. That is how the tests exercise every path on one machine.
enum class KernelPath {
  kBest,      // AVX-512 VNNI kernels when the CPU has AVX-512 F/BW/DQ/VL and VNNI, else AVX2
              // kernels when it has AVX2, FMA and F16C, else portable
  kAvx2,      // the AVX2 kernels even on an AVX-512 CPU (tests and benchmarks); portable
              // without AVX2
  kPortable,  // the portable kernels (tests and benchmarks)
};

// True if kBest uses the AVX2 kernels (or better) on this machine.
bool CpuHasAvx2Kernels();
// True if kBest uses the AVX-512 VNNI kernels on this machine.
bool CpuHasAvx512Kernels();
// The kernel set kBest uses: "avx512-vnni", "avx2" or "portable".
const char* CpuKernelsName();

// True if MatMul has a kernel for weights of this type: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. Other types fall back to MatMulRef (which rejects the
// types it cannot dequantize).
bool MatMulSupports(DType w);

// y[t, r] = sum_i W[r, i] * x[t, i] for t < n_tok.
//   x: [n_tok, w.cols] f32, y: [n_tok, w.rows] f32; they must not overlap.
// pool: threads to use; null runs on the calling thread.
// Errors: InvalidArgument for an absent weight, negative sizes, cols not a multiple of the
// block size, or row_bytes that disagree with the type and cols.
// This overload allocates its activation-quantization buffers on each call.
Status MatMul(const WeightMatrix& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool,
              KernelPath path = KernelPath::kBest);

// Bytes of workspace MatMul needs for n_tok rows of `cols` activations against weights of
// type `w_type`: the quantized activations (f16/bf16 rows, Q8_0 blocks plus their f32 d and s
// [n_tok, cols / 32] each and their int8 values contiguous [n_tok, cols], or Q8_K blocks), each
// part rounded up to 64 bytes. 0 for F32
// weights, for types MatMul has no kernel for (they fall back to MatMulRef, which allocates),
// and for invalid sizes (which MatMul rejects anyway).
uint64_t MatMulWorkspaceBytes(DType w_type, int64_t cols, int64_t n_tok);

// Same product, with the activations quantized into caller-provided `workspace` (no heap
// allocation when the type has a kernel). workspace: at least MatMulWorkspaceBytes(w.type,
// w.cols, n_tok) bytes, 64-byte aligned; it must not overlap x or y.
// Errors: as above, plus InvalidArgument for a workspace that is too small or misaligned.
Status MatMul(const WeightMatrix& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool,
              std::span<uint8_t> workspace, KernelPath path = KernelPath::kBest);

// ---- packed weights ----
//
// MatMul's packed layout interleaves each group of kPackRows consecutive rows so that one
// 512-bit vpdpbusd multiplies four values of all kPackRows rows with four activations
// (broadcast), and a block's integer sum of every row of the group ends in its own int32 lane:
// no horizontal sums, one scale vector per block for the group. Per group g (rows
// [16g, 16g + 16)), per block b (32 columns) in column order, at
// (g * nb + b) * 16 * sizeof(block) with nb = cols / 32:
//   d[16]           fp16, row r's d
//   m[16]           fp16, row r's m (Q4_1, Q5_1 only)
//   qh[64]          Q5_0, Q5_1 only: byte 4r + i, bit k = fifth bit of element 4k + i of row r
//   Q8_0: codes[8][64]  byte 4r + i of vector k = row r's element 4k + i, as u8 (q + 128)
//   Q4_x/Q5_x: nib[4][64] byte 4r + i of vector j = row r's qs[4j + i] (element 4j + i in
//                   the low nibble, element 16 + 4j + i in the high one: llama.cpp's order)
// Q4_K and Q6_K (256-element super-blocks; per group g, per super-block b, at
// (g * nb + b) * 16 * sizeof(block) with nb = cols / 256):
//   Q4_K: d[16], dmin[16] fp16; scales[12][16] (byte 16k + r = row r's scales[k], still the
//         packed 6-bit form); codes[4][8][64]: byte 4r + i of vector k of chunk c = row r's
//         qs[32c + 4k + i] (element 64c + 4k + i in the low nibble, 64c + 32 + 4k + i in the
//         high one)
//   Q6_K: d[16] fp16; scales[8][32] int8 (byte 32q + 2r + i = row r's scale 2q + i);
//         low[32][64]: byte 4r + i of vector j = the low four bits of row r's element 4j + i
//         (low nibble) and of element 128 + 4j + i (high nibble); high[16][64]: bits 2s, 2s + 1
//         of byte 4r + i of vector j = the top two bits of row r's element 64s + 4j + i
// The packed matrix has exactly the bytes of the original (rows * row_bytes).
// With packed weights MatMul's float summation order is fixed per (row, token) as well, so
// the per-token invariance holds. The AVX-512 VNNI kernels read this layout for every packable
// type, the AVX2 kernels for Q4_0, Q4_1, Q5_0 and Q5_1 (their Q8_0 stays faster in rows, and
// they have no packed K-quant kernels); other paths read WeightMatrix::data.
inline constexpr int64_t kPackRows = 16;

// True if w's type has a packed layout (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 with cols a multiple of
// 32; Q4_K, Q6_K with cols a multiple of 256) and its rows are a multiple of kPackRows.
bool CanPackWeightRows(DType type, int64_t rows, int64_t cols);
// True if MatMul on this CPU (kBest) reads packed weights of this type: packing anything else
// only costs a copy.
bool MatMulUsesPackedWeights(DType type);

// Writes w (row layout, w.data) into `out` in the packed layout. out: rows * row_bytes
// bytes, not overlapping w.data. Errors: InvalidArgument when !CanPackWeightRows or out has
// the wrong size.
Status PackWeightRows(const WeightMatrix& w, std::span<uint8_t> out);

// The activation quantizers MatMul uses, for tests. n: a multiple of 32 (Q8_0) or 256 (Q8_K).
// Q8_0: the same blocks as QuantizeRowQ8_0 (kernels/ref/quantize.h); out: [n / 32].
void QuantizeActivationsQ8_0(const float* x, int64_t n, BlockQ8_0* out,
                             KernelPath path = KernelPath::kBest);
// Q8_K: per 256 values, iscale = -127 / (the first value of largest magnitude),
// d = 1 / iscale (f32), q = min(127, round-half-even(iscale * x)), bsums = sums of q over 16;
// an all-zero block is all zero. out: [n / 256].
void QuantizeActivationsQ8_K(const float* x, int64_t n, BlockQ8_K* out,
                             KernelPath path = KernelPath::kBest);

}  // namespace ferry

#endif  // FERRY_KERNELS_CPU_MATMUL_H_
