// Internal to kernels/cuda: the kernel launchers that kernels.cu defines, with plain arguments
// (no Status, no project types beyond DType), so that nvcc compiles as little of the project
// as possible. cuda_ops.cc checks every argument before calling one and turns the returned
// cudaError_t into a Status; nothing else may call these.
//
// Every pointer is device memory unless its comment says otherwise; every launch goes on
// `stream` and returns cudaGetLastError() (launch errors only: execution errors surface at the
// next synchronisation). Shapes are in elements.
#ifndef FERRY_KERNELS_CUDA_LAUNCH_H_
#define FERRY_KERNELS_CUDA_LAUNCH_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace ferry::cuda::internal {

// The ggml type ids the kernels know: tensor/dtype.h's DType values as plain integers
// (cuda_ops.cc checks that they agree), since nvcc does not compile dtype.h.
inline constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
                          kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kQ8_K = 15,
                          kBF16 = 30;

bool MatMulTypeKnown(uint32_t type);
bool KvTypeKnown(uint32_t type);

// x_out[n_tok, n] = x[n_tok, n] rounded as RoundActivationsRef(weight type) does
// (kernels/ref/ops.h). activation: 0 (f32, a copy), 1 (f16), 30 (bf16), 8 (q8_0 per 32), 15 (q8_K
// per 256).
cudaError_t LaunchRoundActivations(uint32_t activation, const float* x, float* x_out, int64_t total,
                                   cudaStream_t stream);

// y[t, r] = sum_i W[r, i] * x[t, i]; W: rows x cols of `type`, row r at w + r * row_bytes.
// x: [n_tok, cols] (already rounded), y: [n_tok, rows].
cudaError_t LaunchMatMul(uint32_t type, const void* w, uint64_t row_bytes, int64_t rows,
                         int64_t cols, const float* x, int64_t n_tok, float* y,
                         cudaStream_t stream);

// out[i, :] = row ids[i] of W dequantized; ids: n int32 on the device.
cudaError_t LaunchGetRows(uint32_t type, const void* w, uint64_t row_bytes, int64_t cols,
                          const int32_t* ids, int64_t n, float* out, cudaStream_t stream);

// y[r, :] = x[r, :] * scale_r (* w), scale_r = 1 / sqrt(mean(x[r]^2) + eps); w may be null.
cudaError_t LaunchRmsNorm(const float* x, const float* w, float* y, int64_t n_rows, int64_t n,
                          float eps, cudaStream_t stream);

// x[t, h * head_dim + ...]: rotary pairs rotated by cs[t * cs_stride + 2i] (cos) and
// cs[t * cs_stride + 2i + 1] (sin).
cudaError_t LaunchRope(float* x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const float* cs,
                       int64_t cs_stride, int64_t n_rot, bool neox, cudaStream_t stream);

// gate[i] = act(gate[i]) * up[i]; gelu: GeluTanhF16Ref, else SiluRef.
cudaError_t LaunchGatedActivation(bool gelu, float* gate, const float* up, int64_t n,
                                  cudaStream_t stream);

// x[i] += y[i].
cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream);

// y[r, i] += b[i] for r < n_rows, i < n (a bias on every row).
cudaError_t LaunchAddRows(float* y, const float* b, int64_t n_rows, int64_t n, cudaStream_t stream);

// Row j of src [n_rows, n] f32 written to dst_rows[j] (a device array of n_rows device
// pointers) in `type` (f32, f16, q8_0, q4_0), as the KV cache stores a row.
cudaError_t LaunchStoreRows(uint32_t type, const float* src, int64_t n_rows, int64_t n,
                            uint8_t* const* dst_rows, cudaStream_t stream);

// Attention of n_tok queries over paged K/V rows (kernels/cpu/attention.h's meaning; every
// pointer in it, k_blocks and v_blocks included, is device memory).
struct AttentionLaunch {
  uint32_t kv_type;
  int64_t first_pos, block_tokens;
  const uint8_t* const* k_blocks;
  const uint8_t* const* v_blocks;
  uint64_t k_row_bytes, v_row_bytes;
  const float* q;
  float* out;
  int64_t n_tok, n_keys, n_head, n_head_kv, head_dim_k, head_dim_v, pos0, p_lo, window;
  float scale;
};
inline constexpr int64_t kMaxAttentionHeadDim = 256;
cudaError_t LaunchAttention(const AttentionLaunch& a, cudaStream_t stream);

}  // namespace ferry::cuda::internal

#endif  // FERRY_KERNELS_CUDA_LAUNCH_H_
