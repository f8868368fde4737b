// AVX2 + FMA attention kernel (x86-64). Compiled alone with -mavx2 -mfma -mf16c; attention.cc
// calls it only after checking the CPU. As in matmul_avx2.cc, every helper here has internal
// linkage and nothing inline or templated from other headers is instantiated (only the
// AttentionArgs struct is used; exp_avx2.h is internal too), so no AVX2 code can be merged
// into paths that run on other CPUs.
//
// Softmax: SoftmaxRef's steps in float, 8 at a time (max; e^(s - max) with ExpAvx2; their sum
// in 8 lanes, then a fixed horizontal order; times 1 / sum), the last partial vector masked.
// Each row's result depends only on its scores and their count.
//
// Tiles: NR heads that share a KV head (the same token, hence the same visible keys) are
// computed together, so each K and V row is loaded once for all of them.
//   scores: NR heads x NK keys, one 8-lane float accumulator per (head, key), summed over the
//           head dimension in order, then a fixed horizontal sum (+ a scalar tail for
//           head_dim % 8);
//   values: NR heads x 8W output lanes, one accumulator per (head, lane), summed over keys in
//           order.
// Every (token, head, key) score and every output element has one fixed summation chain,
// whatever NR, NK or W (which depend on the thread split) are, so the results are bitwise
// independent of the thread count.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/exp_avx2.h"

namespace ferry::cpu_internal {
namespace {

inline int64_t Max64(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t Min64(int64_t a, int64_t b) { return a < b ? a : b; }

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lanes [0, n) of a mask (n in 0..8).
inline __m256i FirstLanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// x[0, n) = softmax(x[0, n)), n >= 1.
void SoftmaxAvx2(float* x, int64_t n) {
  const int64_t main = n - n % 8;
  const __m256i tail = FirstLanes(n - main);
  const __m256 neg_inf = _mm256_set1_ps(-__builtin_inff());
  __m256 m = neg_inf;
  for (int64_t i = 0; i < main; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  if (main < n) {
    m = _mm256_max_ps(m, _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(x + main, tail),
                                          _mm256_castsi256_ps(tail)));
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const __m256 max = _mm256_set1_ps(_mm_cvtss_f32(m4));
  __m256 sum = _mm256_setzero_ps();
  for (int64_t i = 0; i < main; i += 8) {
    const __m256 e = ExpAvx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), max));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (main < n) {
    // Masked-off lanes are -inf: e^-inf = 0 adds nothing.
    const __m256 v = _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(x + main, tail),
                                      _mm256_castsi256_ps(tail));
    const __m256 e = ExpAvx2(_mm256_sub_ps(v, max));
    _mm256_maskstore_ps(x + main, tail, e);
    sum = _mm256_add_ps(sum, e);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / HorizontalSum(sum));
  for (int64_t i = 0; i < main; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  for (int64_t i = main; i < n; ++i) x[i] *= _mm256_cvtss_f32(inv);
}

// sc[r][c] = scale * dot(q[r], k[c]) for NR query rows and NK key rows of d elements.
template <int NR, int NK>
inline void ScoreTile(const float* const* q, const float* k0, int64_t k_stride, int64_t d,
                      float scale, float* const* sc, int64_t j) {
  __m256 acc[NR][NK];
  for (int r = 0; r < NR; ++r) {
    for (int c = 0; c < NK; ++c) acc[r][c] = _mm256_setzero_ps();
  }
  const int64_t main = d - d % 8;
  for (int64_t i = 0; i < main; i += 8) {
    __m256 kv[NK];
    for (int c = 0; c < NK; ++c) kv[c] = _mm256_loadu_ps(k0 + c * k_stride + i);
    for (int r = 0; r < NR; ++r) {
      const __m256 qv = _mm256_loadu_ps(q[r] + i);
      for (int c = 0; c < NK; ++c) acc[r][c] = _mm256_fmadd_ps(qv, kv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    for (int c = 0; c < NK; ++c) {
      float s = HorizontalSum(acc[r][c]);
      for (int64_t i = main; i < d; ++i) s += q[r][i] * k0[c * k_stride + i];
      sc[r][j + c] = s * scale;
    }
  }
}

// out[r][i0 .. i0 + 8W) = sum_j p[r][j] * v[j][i0 ..] over `count` value rows.
template <int NR, int W>
inline void ValueTile(const float* const* p, const float* v0, int64_t v_stride, int64_t count,
                      int64_t i0, float* const* out) {
  __m256 acc[NR][W];
  for (int r = 0; r < NR; ++r) {
    for (int w = 0; w < W; ++w) acc[r][w] = _mm256_setzero_ps();
  }
  for (int64_t j = 0; j < count; ++j) {
    const float* vj = v0 + j * v_stride + i0;
    __m256 vv[W];
    for (int w = 0; w < W; ++w) vv[w] = _mm256_loadu_ps(vj + 8 * w);
    for (int r = 0; r < NR; ++r) {
      const __m256 pb = _mm256_broadcast_ss(p[r] + j);
      for (int w = 0; w < W; ++w) acc[r][w] = _mm256_fmadd_ps(pb, vv[w], acc[r][w]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    for (int w = 0; w < W; ++w) _mm256_storeu_ps(out[r] + i0 + 8 * w, acc[r][w]);
  }
}

// Heads h .. h + NR - 1, all on KV head g.
template <int NR>
void HeadTile(const AttentionArgs& a, int64_t h, int64_t g) {
  constexpr int kKeys = NR >= 3 ? 2 : 4;   // keys per score tile
  constexpr int kLanes = NR >= 3 ? 2 : 4;  // 8-float vectors per value tile
  const int64_t dk = a.head_dim_k, dv = a.head_dim_v;
  const int64_t qd = a.n_head * dk, kd = a.n_head_kv * dk, vd = a.n_head_kv * dv;
  float* sc[NR];
  for (int r = 0; r < NR; ++r) sc[r] = a.scores + (h + r) * a.n_keys;
  for (int64_t t = 0; t < a.n_tok; ++t) {
    const int64_t p = a.pos0 + t;
    const int64_t first = a.window > 0 ? Max64(a.p_lo, p - a.window + 1) : a.p_lo;
    const int64_t count = p - first + 1;
    const float* q[NR];
    float* out[NR];
    for (int r = 0; r < NR; ++r) {
      q[r] = a.q + t * qd + (h + r) * dk;
      out[r] = a.out + t * a.n_head * dv + (h + r) * dv;
    }
    const float* k0 = a.k + (first - a.p_lo) * kd + g * dk;
    int64_t j = 0;
    for (; j + kKeys <= count; j += kKeys) {
      ScoreTile<NR, kKeys>(q, k0 + j * kd, kd, dk, a.scale, sc, j);
    }
    for (; j < count; ++j) ScoreTile<NR, 1>(q, k0 + j * kd, kd, dk, a.scale, sc, j);
    for (int r = 0; r < NR; ++r) SoftmaxAvx2(sc[r], count);

    const float* v0 = a.v + (first - a.p_lo) * vd + g * dv;
    const float* pr[NR];
    for (int r = 0; r < NR; ++r) pr[r] = sc[r];
    int64_t i0 = 0;
    for (; i0 + 8 * kLanes <= dv; i0 += 8 * kLanes) {
      ValueTile<NR, kLanes>(pr, v0, vd, count, i0, out);
    }
    for (; i0 + 8 <= dv; i0 += 8) ValueTile<NR, 1>(pr, v0, vd, count, i0, out);
    for (; i0 < dv; ++i0) {
      for (int r = 0; r < NR; ++r) {
        float acc = 0.0f;
        for (int64_t jj = 0; jj < count; ++jj) acc += pr[r][jj] * v0[jj * vd + i0];
        out[r][i0] = acc;
      }
    }
  }
}

}  // namespace

void AttentionHeadsAvx2(const AttentionArgs& a, int64_t h0, int64_t h1) {
  const int64_t group = a.n_head / a.n_head_kv;
  for (int64_t h = h0; h < h1;) {
    const int64_t g = h / group;
    const int64_t nr = Min64(4, Min64(h1, (g + 1) * group) - h);
    switch (nr) {
      case 4: HeadTile<4>(a, h, g); break;
      case 3: HeadTile<3>(a, h, g); break;
      case 2: HeadTile<2>(a, h, g); break;
      default: HeadTile<1>(a, h, g); break;
    }
    h += nr;
  }
}

}  // namespace ferry::cpu_internal
