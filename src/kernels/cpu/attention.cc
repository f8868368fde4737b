#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cstring>

#include "kernels/ref/ops.h"
#include "tensor/blocks.h"
#include "tensor/fp16.h"

namespace ferry {

namespace cpu_internal {
// Heads [h0, h1) of `a`, AVX2 + FMA (attention_avx2.cc); only call when CpuHasAvx2Kernels().
void AttentionHeadsAvx2(const AttentionArgs& a, int64_t h0, int64_t h1);
}  // namespace cpu_internal

namespace {

// First visible key position of query position p.
int64_t FirstKey(const AttentionArgs& a, int64_t p) {
  return a.window > 0 ? std::max(a.p_lo, p - a.window + 1) : a.p_lo;
}

// The row of position p in `blocks` (KvRows' addressing).
const uint8_t* RowOf(const KvRows& kv, const uint8_t* const* blocks, uint64_t row_bytes,
                     int64_t p) {
  const int64_t rel = p - kv.first_pos;
  return blocks[rel / kv.block_tokens] +
         static_cast<uint64_t>(rel % kv.block_tokens) * row_bytes;
}

// Element e of a row of `type`, as the reference conversions give it.
float ElementRef(DType type, const uint8_t* row, int64_t e) {
  switch (type) {
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, row + 2 * e, 2);
      return Fp16ToFloat(h);
    }
    case DType::kQ8_0: {
      // As DequantizeRowQ8_0: d * q.
      BlockQ8_0 b;
      std::memcpy(&b, row + static_cast<uint64_t>(e / 32) * sizeof(BlockQ8_0), sizeof(b));
      return Fp16ToFloat(b.d) * static_cast<float>(b.qs[e % 32]);
    }
    case DType::kQ4_0: {
      // As DequantizeRowQ4_0: d * (q - 8), element j in the low nibble of byte j, j + 16 in the
      // high one.
      BlockQ4_0 b;
      std::memcpy(&b, row + static_cast<uint64_t>(e / 32) * sizeof(BlockQ4_0), sizeof(b));
      const int o = static_cast<int>(e % 32);
      const int q = o < 16 ? (b.qs[o] & 15) : (b.qs[o - 16] >> 4);
      return Fp16ToFloat(b.d) * static_cast<float>(q - 8);
    }
    default: {
      float f;
      std::memcpy(&f, row + 4 * e, 4);
      return f;
    }
  }
}

void AttentionHeadsRef(const AttentionArgs& a, int64_t h0, int64_t h1) {
  const int64_t dk = a.head_dim_k, dv = a.head_dim_v;
  const int64_t qd = a.n_head * dk;
  const int64_t group = a.n_head / a.n_head_kv;
  const KvRows& kv = a.kv;
  for (int64_t h = h0; h < h1; ++h) {
    const int64_t g = h / group;
    float* sh = a.scores + h * a.n_keys;
    for (int64_t t = 0; t < a.n_tok; ++t) {
      const int64_t p = a.pos0 + t;
      const int64_t first = FirstKey(a, p);
      const int64_t count = p - first + 1;
      const float* qh = a.q + t * qd + h * dk;
      for (int64_t j = 0; j < count; ++j) {
        const uint8_t* kj = RowOf(kv, kv.k_blocks, kv.k_row_bytes, first + j);
        double dot = 0.0;
        for (int64_t i = 0; i < dk; ++i) {
          dot += static_cast<double>(qh[i]) * ElementRef(kv.type, kj, g * dk + i);
        }
        sh[j] = static_cast<float>(dot) * a.scale;
      }
      SoftmaxRef(sh, count);
      float* oh = a.out + t * a.n_head * dv + h * dv;
      for (int64_t i = 0; i < dv; ++i) {
        double acc = 0.0;
        for (int64_t j = 0; j < count; ++j) {
          const uint8_t* vj = RowOf(kv, kv.v_blocks, kv.v_row_bytes, first + j);
          acc += static_cast<double>(sh[j]) * ElementRef(kv.type, vj, g * dv + i);
        }
        oh[i] = static_cast<float>(acc);
      }
    }
  }
}

}  // namespace

bool AttentionSupportsKv(DType type, int64_t n_head_kv, int64_t head_dim_k,
                         int64_t head_dim_v) {
  const bool known = type == DType::kF32 || type == DType::kF16 || type == DType::kQ8_0 ||
                     type == DType::kQ4_0;
  if (!known || n_head_kv < 1 || head_dim_k < 1 || head_dim_v < 1) return false;
  // Quantized rows are whole blocks of 32 elements.
  return (type != DType::kQ8_0 && type != DType::kQ4_0) ||
         ((n_head_kv * head_dim_k) % 32 == 0 && (n_head_kv * head_dim_v) % 32 == 0);
}

void AttentionRef(const AttentionArgs& a) { AttentionHeadsRef(a, 0, a.n_head); }

void Attention(const AttentionArgs& a, ThreadPool* pool, KernelPath path) {
#if defined(FERRY_HAVE_AVX2_KERNELS)
  if (path != KernelPath::kPortable && CpuHasAvx2Kernels()) {
    ParallelFor(pool, a.n_head,
                [&](int64_t h0, int64_t h1) { cpu_internal::AttentionHeadsAvx2(a, h0, h1); });
    return;
  }
#endif
  ParallelFor(pool, a.n_head, [&](int64_t h0, int64_t h1) { AttentionHeadsRef(a, h0, h1); });
}

}  // namespace ferry
