#include "kernels/cpu/attention.h"

#include <algorithm>

#include "kernels/ref/ops.h"

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

void AttentionHeadsRef(const AttentionArgs& a, int64_t h0, int64_t h1) {
  const int64_t dk = a.head_dim_k, dv = a.head_dim_v;
  const int64_t qd = a.n_head * dk, kd = a.n_head_kv * dk, vd = a.n_head_kv * dv;
  const int64_t group = a.n_head / a.n_head_kv;
  for (int64_t h = h0; h < h1; ++h) {
    const int64_t g = h / group;
    float* sh = a.scores + h * a.n_keys;
    for (int64_t t = 0; t < a.n_tok; ++t) {
      const int64_t p = a.pos0 + t;
      const int64_t first = FirstKey(a, p);
      const int64_t count = p - first + 1;
      const float* qh = a.q + t * qd + h * dk;
      for (int64_t j = 0; j < count; ++j) {
        const float* kj = a.k + (first - a.p_lo + j) * kd + g * dk;
        double dot = 0.0;
        for (int64_t i = 0; i < dk; ++i) dot += static_cast<double>(qh[i]) * kj[i];
        sh[j] = static_cast<float>(dot) * a.scale;
      }
      SoftmaxRef(sh, count);
      float* oh = a.out + t * a.n_head * dv + h * dv;
      for (int64_t i = 0; i < dv; ++i) {
        double acc = 0.0;
        for (int64_t j = 0; j < count; ++j) {
          acc += static_cast<double>(sh[j]) * a.v[(first - a.p_lo + j) * vd + g * dv + i];
        }
        oh[i] = static_cast<float>(acc);
      }
    }
  }
}

}  // namespace

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
