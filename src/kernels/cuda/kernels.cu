// The CUDA kernels of the decoder forward pass, each the device twin of a reference kernel in
// kernels/ref (dequantization formulas, activation rounding, RMSNorm, RoPE, activations, KV
// quantization) or kernels/cpu (attention over paged K/V rows). Where the reference's result
// is a chain of IEEE operations the kernels use the same chain with the rounding intrinsics
// (__fmul_rn, __fadd_rn, ...), which nvcc never fuses into an FMA: the project builds its C++
// with -ffp-contract=off, so those results are bitwise the reference's. Sums (dot products,
// norms, softmax) differ in order and precision; cuda_ops.h states the resulting bounds.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.h"
#include "tensor/blocks.h"

namespace ferry::cuda::internal {
namespace {

__device__ __forceinline__ float H2F(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ uint16_t F2H(float f) { return __half_as_ushort(__float2half_rn(f)); }
__device__ __forceinline__ float BF2F(uint16_t b) {
  return __uint_as_float(static_cast<uint32_t>(b) << 16);
}
__device__ __forceinline__ uint16_t Ld16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

// The 6-bit (scale, min) pair of group g of Q4_K / Q5_K (UnpackScaleMinK4 in tensor/blocks.h).
__device__ __forceinline__ void ScaleMinK4(const uint8_t* s, int g, int* sc, int* mn) {
  if (g < 4) {
    *sc = s[g] & 63;
    *mn = s[g + 4] & 63;
  } else {
    *sc = (s[g + 4] & 15) | ((s[g - 4] >> 6) << 4);
    *mn = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
  }
}

// Dequantizes the 32 elements [32 * item, 32 * item + 32) of a row of type T into v, with the
// formulas of kernels/ref/dequantize.cc (same operations, same order).
template <uint32_t T>
__device__ __forceinline__ void Load32(const uint8_t* row, int64_t item, float* v) {
  if constexpr (T == kF32) {
    const float4* p = reinterpret_cast<const float4*>(row) + item * 8;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float4 f = p[j];
      v[4 * j] = f.x, v[4 * j + 1] = f.y, v[4 * j + 2] = f.z, v[4 * j + 3] = f.w;
    }
  } else if constexpr (T == kF16 || T == kBF16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + item * 32;
#pragma unroll
    for (int j = 0; j < 32; ++j) v[j] = T == kF16 ? H2F(p[j]) : BF2F(p[j]);
  } else if constexpr (T == kQ4_0) {
    const uint8_t* b = row + item * sizeof(BlockQ4_0);
    const float d = H2F(Ld16(b));
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const uint8_t q = b[2 + j];
      v[j] = __fmul_rn(d, static_cast<float>((q & 15) - 8));
      v[j + 16] = __fmul_rn(d, static_cast<float>((q >> 4) - 8));
    }
  } else if constexpr (T == kQ4_1) {
    const uint8_t* b = row + item * sizeof(BlockQ4_1);
    const float d = H2F(Ld16(b)), m = H2F(Ld16(b + 2));
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const uint8_t q = b[4 + j];
      v[j] = __fadd_rn(__fmul_rn(d, static_cast<float>(q & 15)), m);
      v[j + 16] = __fadd_rn(__fmul_rn(d, static_cast<float>(q >> 4)), m);
    }
  } else if constexpr (T == kQ5_0 || T == kQ5_1) {
    constexpr int kQh = T == kQ5_0 ? 2 : 4;
    const uint8_t* b = row + item * (T == kQ5_0 ? sizeof(BlockQ5_0) : sizeof(BlockQ5_1));
    const float d = H2F(Ld16(b));
    const float m = T == kQ5_1 ? H2F(Ld16(b + 2)) : 0.0f;
    const uint32_t qh =
        b[kQh] | (b[kQh + 1] << 8) | (b[kQh + 2] << 16) | (static_cast<uint32_t>(b[kQh + 3]) << 24);
    const uint8_t* qs = b + kQh + 4;
#pragma unroll
    for (int e = 0; e < 32; ++e) {
      const int nib = e < 16 ? (qs[e] & 15) : (qs[e - 16] >> 4);
      const int q = nib | static_cast<int>(((qh >> e) & 1u) << 4);
      if constexpr (T == kQ5_0) {
        v[e] = __fmul_rn(d, static_cast<float>(q - 16));
      } else {
        v[e] = __fadd_rn(__fmul_rn(d, static_cast<float>(q)), m);
      }
    }
  } else if constexpr (T == kQ8_0) {
    const uint8_t* b = row + item * sizeof(BlockQ8_0);
    const float d = H2F(Ld16(b));
    const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
#pragma unroll
    for (int e = 0; e < 32; ++e) v[e] = __fmul_rn(d, static_cast<float>(qs[e]));
  } else if constexpr (T == kQ2_K) {
    const uint8_t* b = row + (item / 8) * sizeof(BlockQ2_K);
    const int e0 = static_cast<int>(item % 8) * 32;
    const float d = H2F(Ld16(b + offsetof(BlockQ2_K, d)));
    const float dmin = H2F(Ld16(b + offsetof(BlockQ2_K, dmin)));
    const uint8_t* qs = b + offsetof(BlockQ2_K, qs);
    const int h = e0 / 128, j = (e0 / 32) % 4;
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      const int q = (qs[32 * h + l] >> (2 * j)) & 3;
      const int sc = b[(e0 + l) / 16];
      const float gs = __fmul_rn(d, static_cast<float>(sc & 15));
      const float gm = __fmul_rn(dmin, static_cast<float>(sc >> 4));
      v[l] = __fsub_rn(__fmul_rn(gs, static_cast<float>(q)), gm);
    }
  } else if constexpr (T == kQ3_K) {
    const uint8_t* b = row + (item / 8) * sizeof(BlockQ3_K);
    const int e0 = static_cast<int>(item % 8) * 32;
    const float d = H2F(Ld16(b + offsetof(BlockQ3_K, d)));
    const uint8_t* hmask = b + offsetof(BlockQ3_K, hmask);
    const uint8_t* qs = b + offsetof(BlockQ3_K, qs);
    const uint8_t* s = b + offsetof(BlockQ3_K, scales);
    const int h = e0 / 128, j = (e0 / 32) % 4;
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      const int k = (e0 + l) / 16;
      const int low = (s[k % 8] >> (4 * (k / 8))) & 15;
      const int high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
      const int q_low = (qs[32 * h + l] >> (2 * j)) & 3;
      const int high_bit = (hmask[l] >> (4 * h + j)) & 1;
      const int q = q_low - (high_bit ? 0 : 4);
      const float gs = __fmul_rn(d, static_cast<float>((low | (high << 4)) - 32));
      v[l] = __fmul_rn(gs, static_cast<float>(q));
    }
  } else if constexpr (T == kQ4_K || T == kQ5_K) {
    const uint8_t* b = row + (item / 8) * (T == kQ4_K ? sizeof(BlockQ4_K) : sizeof(BlockQ5_K));
    const int g = static_cast<int>(item % 8);
    const float d = H2F(Ld16(b)), dmin = H2F(Ld16(b + 2));
    int sc, mn;
    ScaleMinK4(b + 4, g, &sc, &mn);
    const float gs = __fmul_rn(d, static_cast<float>(sc));
    const float gm = __fmul_rn(dmin, static_cast<float>(mn));
    const uint8_t* qs =
        b + (T == kQ4_K ? offsetof(BlockQ4_K, qs) : offsetof(BlockQ5_K, qs)) + 32 * (g / 2);
    const uint8_t* qh = b + offsetof(BlockQ5_K, qh);
    const int shift = 4 * (g % 2);
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      int q = (qs[l] >> shift) & 15;
      if constexpr (T == kQ5_K) q |= ((qh[l] >> g) & 1) << 4;
      v[l] = __fsub_rn(__fmul_rn(gs, static_cast<float>(q)), gm);
    }
  } else if constexpr (T == kQ6_K) {
    const uint8_t* b = row + (item / 8) * sizeof(BlockQ6_K);
    const int e0 = static_cast<int>(item % 8) * 32;
    const float d = H2F(Ld16(b + offsetof(BlockQ6_K, d)));
    const uint8_t* ql = b + offsetof(BlockQ6_K, ql);
    const uint8_t* qh = b + offsetof(BlockQ6_K, qh);
    const int8_t* scales = reinterpret_cast<const int8_t*>(b + offsetof(BlockQ6_K, scales));
    const int h = e0 / 128, j = (e0 / 32) % 4;
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = ql[64 * h + l + 32 * (j & 1)];
      const int q_low = j < 2 ? (lo & 15) : (lo >> 4);
      const int q_high = (qh[32 * h + l] >> (2 * j)) & 3;
      const int q = (q_low | (q_high << 4)) - 32;
      const float gs = __fmul_rn(d, static_cast<float>(scales[(e0 + l) / 16]));
      v[l] = __fmul_rn(gs, static_cast<float>(q));
    }
  }
}

// ---- Activation rounding (RoundActivationsRef) ----

__global__ void RoundCopyKernel(uint32_t act, const float* x, float* out, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float f = x[i];
    if (act == kF16) {
      out[i] = __half2float(__float2half_rn(f));
    } else if (act == kBF16) {
      out[i] = __bfloat162float(__float2bfloat16_rn(f));
    } else {
      out[i] = f;
    }
  }
}

// One warp per block of 32 (q8_0) or 256 (q8_K) values, RoundQ8_0 / RoundQ8K of ops.cc: lane l
// holds elements l, l + 32, ... of its block; the block's largest magnitude comes from a warp
// reduction (q8_K: the first element of that magnitude, with its sign, as the reference's
// strict > scan picks it).
constexpr int kRoundWarps = 4;
__global__ void RoundQ8Kernel(bool k_quant, const float* x, float* out, int64_t blocks) {
  const int lane = threadIdx.x % 32;
  const int64_t b = blockIdx.x * static_cast<int64_t>(kRoundWarps) + threadIdx.x / 32;
  if (b >= blocks) return;  // the whole warp leaves together
  const int per_lane = k_quant ? 8 : 1;
  const float* v = x + b * 32 * per_lane;
  float* o = out + b * 32 * per_lane;
  float amax = 0.0f, max = 0.0f;
  int first = 1 << 30;  // element index of `max`
  for (int j = 0; j < per_lane; ++j) {
    const int i = lane + 32 * j;
    const float a = fabsf(v[i]);
    if (a > amax) amax = a, max = v[i], first = i;
  }
  for (int off = 16; off > 0; off >>= 1) {
    const float o_amax = __shfl_xor_sync(0xffffffffu, amax, off);
    const float o_max = __shfl_xor_sync(0xffffffffu, max, off);
    const int o_first = __shfl_xor_sync(0xffffffffu, first, off);
    if (o_amax > amax || (o_amax == amax && o_first < first)) {
      amax = o_amax, max = o_max, first = o_first;
    }
  }
  if (!k_quant) {
    const float d = __half2float(__float2half_rn(__fdiv_rn(amax, 127.0f)));
    const float id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
    o[lane] = __fmul_rn(d, rintf(__fmul_rn(v[lane], id)));
    return;
  }
  if (amax == 0.0f) {
    for (int j = 0; j < per_lane; ++j) o[lane + 32 * j] = 0.0f;
    return;
  }
  const float iscale = __fdiv_rn(-127.0f, max);
  const float d = __fdiv_rn(1.0f, iscale);
  for (int j = 0; j < per_lane; ++j) {
    const int i = lane + 32 * j;
    float q = rintf(__fmul_rn(iscale, v[i]));
    if (q > 127.0f) q = 127.0f;
    o[i] = __fmul_rn(d, q);
  }
}

// ---- Matrix times activations ----

constexpr int kRowsPerBlock = 4;  // one warp per row
constexpr int kTokTile = 8;       // tokens per warp (blockIdx.y tiles the rest)

// One warp per weight row; lane l takes the row's 32-element items l, l + 32, ..., dequantizes
// each once and multiplies it with up to kTokTile tokens' activations.
template <uint32_t T>
__global__ void __launch_bounds__(32 * kRowsPerBlock)
    MatMulKernel(const uint8_t* w, uint64_t row_bytes, int64_t rows, int64_t cols, const float* x,
                 int64_t n_tok, float* y) {
  const int lane = threadIdx.x;
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.y;
  if (r >= rows) return;  // the whole warp leaves together
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTokTile;
  const int nt = static_cast<int>(n_tok - t0 < kTokTile ? n_tok - t0 : kTokTile);
  const uint8_t* row = w + static_cast<uint64_t>(r) * row_bytes;
  float acc[kTokTile];
#pragma unroll
  for (int t = 0; t < kTokTile; ++t) acc[t] = 0.0f;
  const int64_t items = cols / 32;
  for (int64_t it = lane; it < items; it += 32) {
    float v[32];
    Load32<T>(row, it, v);
#pragma unroll
    for (int t = 0; t < kTokTile; ++t) {
      if (t < nt) {
        const float4* xp = reinterpret_cast<const float4*>(x + (t0 + t) * cols + it * 32);
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float4 xv = xp[j];
          s += v[4 * j] * xv.x + v[4 * j + 1] * xv.y + v[4 * j + 2] * xv.z + v[4 * j + 3] * xv.w;
        }
        acc[t] += s;
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kTokTile; ++t) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], off);
  }
  if (lane == 0) {
#pragma unroll
    for (int t = 0; t < kTokTile; ++t) {
      if (t < nt) y[(t0 + t) * rows + r] = acc[t];
    }
  }
}

template <uint32_t T>
cudaError_t MatMulT(const void* w, uint64_t row_bytes, int64_t rows, int64_t cols, const float* x,
                    int64_t n_tok, float* y, cudaStream_t stream) {
  const dim3 block(32, kRowsPerBlock);
  const dim3 grid(static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock),
                  static_cast<unsigned>((n_tok + kTokTile - 1) / kTokTile));
  MatMulKernel<T><<<grid, block, 0, stream>>>(static_cast<const uint8_t*>(w), row_bytes, rows, cols,
                                              x, n_tok, y);
  return cudaGetLastError();
}

template <uint32_t T>
__global__ void GetRowsKernel(const uint8_t* w, uint64_t row_bytes, int64_t cols,
                              const int32_t* ids, int64_t n, float* out) {
  const int64_t items = cols / 32;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < n * items;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = k / items, it = k % items;
    float v[32];
    Load32<T>(w + static_cast<uint64_t>(ids[i]) * row_bytes, it, v);
    float* o = out + i * cols + it * 32;
#pragma unroll
    for (int j = 0; j < 32; ++j) o[j] = v[j];
  }
}

template <uint32_t T>
cudaError_t GetRowsT(const void* w, uint64_t row_bytes, int64_t cols, const int32_t* ids, int64_t n,
                     float* out, cudaStream_t stream) {
  const int64_t work = n * (cols / 32);
  const unsigned blocks = static_cast<unsigned>(work / 256 + 1 < 4096 ? work / 256 + 1 : 4096);
  GetRowsKernel<T>
      <<<blocks, 256, 0, stream>>>(static_cast<const uint8_t*>(w), row_bytes, cols, ids, n, out);
  return cudaGetLastError();
}

// Returns CALL(T) for the matrix type `type` as a compile-time constant T; cudaErrorInvalidValue
// for a type without kernels.
#define FERRY_CUDA_TYPE_SWITCH(type, CALL) \
  switch (type) {                          \
    case kF32:                             \
      return CALL(kF32);                   \
    case kF16:                             \
      return CALL(kF16);                   \
    case kBF16:                            \
      return CALL(kBF16);                  \
    case kQ4_0:                            \
      return CALL(kQ4_0);                  \
    case kQ4_1:                            \
      return CALL(kQ4_1);                  \
    case kQ5_0:                            \
      return CALL(kQ5_0);                  \
    case kQ5_1:                            \
      return CALL(kQ5_1);                  \
    case kQ8_0:                            \
      return CALL(kQ8_0);                  \
    case kQ2_K:                            \
      return CALL(kQ2_K);                  \
    case kQ3_K:                            \
      return CALL(kQ3_K);                  \
    case kQ4_K:                            \
      return CALL(kQ4_K);                  \
    case kQ5_K:                            \
      return CALL(kQ5_K);                  \
    case kQ6_K:                            \
      return CALL(kQ6_K);                  \
    default:                               \
      return cudaErrorInvalidValue;        \
  }

// ---- Norm, RoPE, activations, residual ----

constexpr int kNormThreads = 256;

__global__ void RmsNormKernel(const float* x, const float* w, float* y, int64_t n, float eps) {
  __shared__ double partial[kNormThreads];
  const float* xr = x + blockIdx.x * n;
  float* yr = y + blockIdx.x * n;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kNormThreads) {
    const double v = xr[i];
    ss += v * v;
  }
  partial[threadIdx.x] = ss;
  __syncthreads();
  for (int s = kNormThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  const float mean = static_cast<float>(partial[0] / static_cast<double>(n));
  const float scale = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
  for (int64_t i = threadIdx.x; i < n; i += kNormThreads) {
    const float v = __fmul_rn(xr[i], scale);
    yr[i] = w != nullptr ? __fmul_rn(v, w[i]) : v;
  }
}

__global__ void RopeKernel(float* x, int64_t n_tok, int64_t n_heads, int64_t head_dim,
                           const float* cs, int64_t cs_stride, int64_t n_rot, bool neox) {
  const int64_t half = n_rot / 2;
  const int64_t total = n_tok * n_heads * half;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = k % half;
    const int64_t h = (k / half) % n_heads;
    const int64_t t = k / (half * n_heads);
    const float c = cs[t * cs_stride + 2 * i], s = cs[t * cs_stride + 2 * i + 1];
    float* xh = x + (t * n_heads + h) * head_dim;
    const int64_t a = neox ? i : 2 * i;
    const int64_t b = neox ? i + half : 2 * i + 1;
    const float xa = xh[a], xb = xh[b];
    xh[a] = __fsub_rn(__fmul_rn(xa, c), __fmul_rn(xb, s));
    xh[b] = __fadd_rn(__fmul_rn(xa, s), __fmul_rn(xb, c));
  }
}

// GeluTanhRef in float, the operations of ops.cc in order.
__device__ __forceinline__ float GeluTanh(float x) {
  constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
  constexpr float kCoef = 0.044715f;
  const float inner = __fadd_rn(1.0f, __fmul_rn(__fmul_rn(kCoef, x), x));
  const float t = tanhf(__fmul_rn(__fmul_rn(kSqrt2OverPi, x), inner));
  return __fmul_rn(__fmul_rn(0.5f, x), __fadd_rn(1.0f, t));
}

__global__ void GatedActivationKernel(bool gelu, float* gate, const float* up, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    float a;
    if (gelu) {
      if (g <= -10.0f) {
        a = 0.0f;
      } else if (g >= 10.0f) {
        a = g;
      } else {
        a = __half2float(__float2half_rn(GeluTanh(__half2float(__float2half_rn(g)))));
      }
    } else {
      a = __fdiv_rn(g, __fadd_rn(1.0f, expf(-g)));
    }
    gate[i] = __fmul_rn(a, up[i]);
  }
}

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = __fadd_rn(x[i], y[i]);
  }
}

__global__ void AddRowsKernel(float* y, const float* b, int64_t n_rows, int64_t n) {
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < n_rows * n;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[k] = __fadd_rn(y[k], b[k % n]);
  }
}

unsigned GridFor(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks));
}

// ---- KV rows ----

// One thread per element (f32, f16) or per 32-element block (q8_0: QuantizeRowQ8_0; q4_0:
// QuantizeRowQ4_0 of kernels/ref/quantize.cc).
__global__ void StoreRowsKernel(uint32_t type, const float* src, int64_t n_rows, int64_t n,
                                uint8_t* const* dst_rows) {
  const bool blocked = type == kQ8_0 || type == kQ4_0;
  const int64_t per_row = blocked ? n / 32 : n;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       k < n_rows * per_row; k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = k / per_row, e = k % per_row;
    const float* x = src + j * n;
    uint8_t* dst = dst_rows[j];
    if (type == kF32) {
      reinterpret_cast<float*>(dst)[e] = x[e];
    } else if (type == kF16) {
      reinterpret_cast<uint16_t*>(dst)[e] = F2H(x[e]);
    } else if (type == kQ8_0) {
      const float* v = x + e * 32;
      uint8_t* b = dst + e * sizeof(BlockQ8_0);
      float amax = fabsf(v[0]);
      for (int i = 1; i < 32; ++i) amax = fmaxf(amax, fabsf(v[i]));
      const float d = __fdiv_rn(amax, 127.0f);
      const float id = d == 0.0f ? 0.0f : __fdiv_rn(1.0f, d);
      const uint16_t dh = F2H(d);
      b[0] = static_cast<uint8_t>(dh), b[1] = static_cast<uint8_t>(dh >> 8);
      for (int i = 0; i < 32; ++i) {
        // RoundHalfAwayLikeNumpy, then numpy's cast to int8 (truncate to int32, keep 8 bits).
        const float r = __fmul_rn(v[i], id);
        const float a = fabsf(r);
        const float whole = floorf(a);
        const float rounded = __fadd_rn(whole, floorf(__fmul_rn(2.0f, __fsub_rn(a, whole))));
        const float q = r > 0.0f ? rounded : (r < 0.0f ? -rounded : r);
        b[2 + i] = static_cast<uint8_t>(static_cast<uint32_t>(static_cast<int32_t>(q)) & 0xffu);
      }
    } else {  // kQ4_0
      const float* v = x + e * 32;
      uint8_t* b = dst + e * sizeof(BlockQ4_0);
      float max = v[0], amax = fabsf(v[0]);
      for (int i = 1; i < 32; ++i) {
        if (fabsf(v[i]) > amax) {
          amax = fabsf(v[i]);
          max = v[i];
        }
      }
      const float d = __fdiv_rn(max, -8.0f);
      const float id = d == 0.0f ? 0.0f : __fdiv_rn(1.0f, d);
      const uint16_t dh = F2H(d);
      b[0] = static_cast<uint8_t>(dh), b[1] = static_cast<uint8_t>(dh >> 8);
      uint8_t q[32];
      for (int i = 0; i < 32; ++i) {
        const float f = truncf(__fadd_rn(__fmul_rn(v[i], id), 8.5f));
        const int32_t t =
            (f >= -2147483648.0f && f < 2147483648.0f) ? static_cast<int32_t>(f) : INT32_MIN;
        const uint8_t u = static_cast<uint8_t>(static_cast<uint32_t>(t) & 0xffu);
        q[i] = u < 15 ? u : 15;
      }
      for (int i = 0; i < 16; ++i) b[2 + i] = static_cast<uint8_t>(q[i] | (q[i + 16] << 4));
    }
  }
}

// ---- Attention ----

// Element i of a K or V row of type t, as KvRows in kernels/cpu/attention.h reads it.
__device__ __forceinline__ float KvElem(uint32_t t, const uint8_t* row, int64_t i) {
  if (t == kF16) return H2F(reinterpret_cast<const uint16_t*>(row)[i]);
  if (t == kF32) return reinterpret_cast<const float*>(row)[i];
  if (t == kQ8_0) {
    const uint8_t* b = row + (i / 32) * sizeof(BlockQ8_0);
    return __fmul_rn(H2F(Ld16(b)),
                     static_cast<float>(reinterpret_cast<const int8_t*>(b + 2)[i % 32]));
  }
  const uint8_t* b = row + (i / 32) * sizeof(BlockQ4_0);
  const int e = static_cast<int>(i % 32);
  const uint8_t q = b[2 + (e % 16)];
  const int v = (e < 16 ? (q & 15) : (q >> 4)) - 8;
  return __fmul_rn(H2F(Ld16(b)), static_cast<float>(v));
}

constexpr int kAttnWarps = 4;
constexpr int kPerLane = static_cast<int>(kMaxAttentionHeadDim / 32);

// One block per (head, query token); warp w takes the visible keys w, w + kAttnWarps, ... with
// an online softmax (running max m, sum l, weighted values acc); the warps' partial results are
// merged at the end. Nothing depends on the context length but the loop count.
__global__ void __launch_bounds__(32 * kAttnWarps) AttentionKernel(AttentionLaunch a) {
  const int64_t h = blockIdx.x, t = blockIdx.y;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t g = h / (a.n_head / a.n_head_kv);
  const int64_t p = a.pos0 + t;
  int64_t first = a.p_lo;
  if (a.window > 0 && p - a.window + 1 > first) first = p - a.window + 1;
  const int64_t dk = a.head_dim_k, dv = a.head_dim_v;
  const float* q = a.q + (t * a.n_head + h) * dk;
  float qv[kPerLane], acc[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int64_t d = lane + 32 * j;
    qv[j] = d < dk ? q[d] : 0.0f;
    acc[j] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int64_t pos = first + warp; pos <= p; pos += kAttnWarps) {
    const int64_t rel = pos - a.first_pos;
    const int64_t blk = rel / a.block_tokens, slot = rel % a.block_tokens;
    const uint8_t* krow = a.k_blocks[blk] + slot * a.k_row_bytes;
    const uint8_t* vrow = a.v_blocks[blk] + slot * a.v_row_bytes;
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int64_t d = lane + 32 * j;
      if (d < dk) s += qv[j] * KvElem(a.kv_type, krow, g * dk + d);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    s *= a.scale;
    if (s == -INFINITY) continue;  // weight 0, as SoftmaxRef gives it (and no NaN from -inf - -inf)
    const float m_new = fmaxf(m, s);
    const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
    const float e = expf(s - m_new);
    l = l * corr + e;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int64_t d = lane + 32 * j;
      if (d < dv) acc[j] = acc[j] * corr + e * KvElem(a.kv_type, vrow, g * dv + d);
    }
    m = m_new;
  }
  __shared__ float sm_m[kAttnWarps], sm_l[kAttnWarps];
  __shared__ float sm_acc[kAttnWarps][kMaxAttentionHeadDim];
  if (lane == 0) sm_m[warp] = m, sm_l[warp] = l;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int64_t d = lane + 32 * j;
    if (d < dv) sm_acc[warp][d] = acc[j];
  }
  __syncthreads();
  float big = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) big = fmaxf(big, sm_m[w]);
  float total = 0.0f, f[kAttnWarps];
  for (int w = 0; w < kAttnWarps; ++w) {
    f[w] = sm_l[w] > 0.0f ? expf(sm_m[w] - big) : 0.0f;
    total += sm_l[w] * f[w];
  }
  float* out = a.out + (t * a.n_head + h) * dv;
  for (int64_t d = threadIdx.x; d < dv; d += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kAttnWarps; ++w) {
      if (f[w] > 0.0f) sum += sm_acc[w][d] * f[w];
    }
    out[d] = sum / total;
  }
}

}  // namespace

bool MatMulTypeKnown(uint32_t type) {
  switch (type) {
    case kF32:
    case kF16:
    case kBF16:
    case kQ4_0:
    case kQ4_1:
    case kQ5_0:
    case kQ5_1:
    case kQ8_0:
    case kQ2_K:
    case kQ3_K:
    case kQ4_K:
    case kQ5_K:
    case kQ6_K:
      return true;
    default:
      return false;
  }
}

bool KvTypeKnown(uint32_t type) {
  return type == kF32 || type == kF16 || type == kQ8_0 || type == kQ4_0;
}

cudaError_t LaunchRoundActivations(uint32_t activation, const float* x, float* x_out, int64_t total,
                                   cudaStream_t stream) {
  if (total == 0) return cudaSuccess;
  if (activation == kQ8_0 || activation == kQ8_K) {
    const int64_t blocks = total / (activation == kQ8_K ? 256 : 32);
    RoundQ8Kernel<<<static_cast<unsigned>((blocks + kRoundWarps - 1) / kRoundWarps),
                    32 * kRoundWarps, 0, stream>>>(activation == kQ8_K, x, x_out, blocks);
  } else {
    RoundCopyKernel<<<GridFor(total, 256), 256, 0, stream>>>(activation, x, x_out, total);
  }
  return cudaGetLastError();
}

cudaError_t LaunchMatMul(uint32_t type, const void* w, uint64_t row_bytes, int64_t rows,
                         int64_t cols, const float* x, int64_t n_tok, float* y,
                         cudaStream_t stream){
#define FERRY_MATMUL_CALL(T) MatMulT<T>(w, row_bytes, rows, cols, x, n_tok, y, stream)
    FERRY_CUDA_TYPE_SWITCH(type, FERRY_MATMUL_CALL)
#undef FERRY_MATMUL_CALL
}

cudaError_t LaunchGetRows(uint32_t type, const void* w, uint64_t row_bytes, int64_t cols,
                          const int32_t* ids, int64_t n, float* out, cudaStream_t stream){
#define FERRY_GETROWS_CALL(T) GetRowsT<T>(w, row_bytes, cols, ids, n, out, stream)
    FERRY_CUDA_TYPE_SWITCH(type, FERRY_GETROWS_CALL)
#undef FERRY_GETROWS_CALL
}

cudaError_t LaunchRmsNorm(const float* x, const float* w, float* y, int64_t n_rows, int64_t n,
                          float eps, cudaStream_t stream) {
  RmsNormKernel<<<static_cast<unsigned>(n_rows), kNormThreads, 0, stream>>>(x, w, y, n, eps);
  return cudaGetLastError();
}

cudaError_t LaunchRope(float* x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const float* cs,
                       int64_t cs_stride, int64_t n_rot, bool neox, cudaStream_t stream) {
  RopeKernel<<<GridFor(n_tok * n_heads * (n_rot / 2), 256), 256, 0, stream>>>(
      x, n_tok, n_heads, head_dim, cs, cs_stride, n_rot, neox);
  return cudaGetLastError();
}

cudaError_t LaunchGatedActivation(bool gelu, float* gate, const float* up, int64_t n,
                                  cudaStream_t stream) {
  GatedActivationKernel<<<GridFor(n, 256), 256, 0, stream>>>(gelu, gate, up, n);
  return cudaGetLastError();
}

cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream) {
  AddKernel<<<GridFor(n, 256), 256, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t LaunchAddRows(float* y, const float* b, int64_t n_rows, int64_t n,
                          cudaStream_t stream) {
  AddRowsKernel<<<GridFor(n_rows * n, 256), 256, 0, stream>>>(y, b, n_rows, n);
  return cudaGetLastError();
}

cudaError_t LaunchStoreRows(uint32_t type, const float* src, int64_t n_rows, int64_t n,
                            uint8_t* const* dst_rows, cudaStream_t stream) {
  const bool blocked = type == kQ8_0 || type == kQ4_0;
  StoreRowsKernel<<<GridFor(n_rows * (blocked ? n / 32 : n), 128), 128, 0, stream>>>(
      type, src, n_rows, n, dst_rows);
  return cudaGetLastError();
}

cudaError_t LaunchAttention(const AttentionLaunch& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(a.n_head), static_cast<unsigned>(a.n_tok));
  AttentionKernel<<<grid, 32 * kAttnWarps, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace ferry::cuda::internal
