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
// computed together, so each K and V row is loaded once for all of them. K and V rows are read
// in place (f16 converted with F16C, q8_0 / q4_0 dequantized 8 at a time), block by block.
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

// ---- reading K/V rows in place (KvRows in attention.h) ----
//
// L::Load(row, e): elements e .. e + 7 of a position's row as 8 floats; L::One(row, e): element
// e. Both give exactly what the reference conversion gives (fp16 -> f32 is exact; d * q in
// float as DequantizeRow), so the values the arithmetic sees do not depend on the cache type's
// reader.
inline float HalfToFloat(uint16_t h) { return _cvtsh_ss(h); }
inline uint16_t Half(const uint8_t* p) {
  uint16_t h;
  __builtin_memcpy(&h, p, 2);
  return h;
}

struct RowF32 {
  static __m256 Load(const uint8_t* row, int64_t e) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + e);
  }
  static float One(const uint8_t* row, int64_t e) {
    return reinterpret_cast<const float*>(row)[e];
  }
};
struct RowF16 {
  static __m256 Load(const uint8_t* row, int64_t e) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * e)));
  }
  static float One(const uint8_t* row, int64_t e) { return HalfToFloat(Half(row + 2 * e)); }
};
// Q8_0: blocks of 34 bytes (fp16 d, 32 int8).
struct RowQ8_0 {
  static float One(const uint8_t* row, int64_t e) {
    const uint8_t* b = row + (e / 32) * 34;
    return HalfToFloat(Half(b)) * static_cast<float>(static_cast<int8_t>(b[2 + e % 32]));
  }
  static __m256 Load(const uint8_t* row, int64_t e) {
    if (e % 32 > 24) return Gather(row, e);  // straddles two blocks
    const uint8_t* b = row + (e / 32) * 34;
    const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + e % 32)));
    return _mm256_mul_ps(_mm256_set1_ps(HalfToFloat(Half(b))), _mm256_cvtepi32_ps(q));
  }
  static __m256 Gather(const uint8_t* row, int64_t e) {
    return _mm256_setr_ps(One(row, e), One(row, e + 1), One(row, e + 2), One(row, e + 3),
                          One(row, e + 4), One(row, e + 5), One(row, e + 6), One(row, e + 7));
  }
};
// Q4_0: blocks of 18 bytes (fp16 d, 16 bytes: element j in the low nibble of byte j, element
// j + 16 in the high nibble), value (q - 8) * d.
struct RowQ4_0 {
  static float One(const uint8_t* row, int64_t e) {
    const uint8_t* b = row + (e / 32) * 18;
    const int o = static_cast<int>(e % 32);
    const int q = o < 16 ? (b[2 + o] & 15) : (b[2 + o - 16] >> 4);
    return HalfToFloat(Half(b)) * static_cast<float>(q - 8);
  }
  static __m256 Load(const uint8_t* row, int64_t e) {
    const int o = static_cast<int>(e % 32);
    if (o != 0 && o != 8 && o != 16 && o != 24) {
      return _mm256_setr_ps(One(row, e), One(row, e + 1), One(row, e + 2), One(row, e + 3),
                            One(row, e + 4), One(row, e + 5), One(row, e + 6), One(row, e + 7));
    }
    const uint8_t* b = row + (e / 32) * 18;
    __m256i q = _mm256_cvtepu8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + (o & 15))));
    q = o < 16 ? _mm256_and_si256(q, _mm256_set1_epi32(15)) : _mm256_srli_epi32(q, 4);
    q = _mm256_sub_epi32(q, _mm256_set1_epi32(8));
    return _mm256_mul_ps(_mm256_set1_ps(HalfToFloat(Half(b))), _mm256_cvtepi32_ps(q));
  }
};

// sc[r][j + c] = scale * dot(q[r], k[c]) for NR query rows and the NK keys whose rows start at
// k0 + c * row_bytes; the keys' elements e0 .. e0 + d (their KV head's slice).
template <typename L, int NR, int NK>
inline void ScoreTile(const float* const* q, const uint8_t* k0, uint64_t row_bytes, int64_t e0,
                      int64_t d, float scale, float* const* sc, int64_t j) {
  __m256 acc[NR][NK];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < NK; ++c) acc[r][c] = _mm256_setzero_ps();
  }
  const int64_t main = d - d % 8;
  for (int64_t i = 0; i < main; i += 8) {
    __m256 kv[NK];
#pragma GCC unroll 8
    for (int c = 0; c < NK; ++c) kv[c] = L::Load(k0 + c * row_bytes, e0 + i);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const __m256 qv = _mm256_loadu_ps(q[r] + i);
#pragma GCC unroll 8
      for (int c = 0; c < NK; ++c) acc[r][c] = _mm256_fmadd_ps(qv, kv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < NK; ++c) {
      float s = HorizontalSum(acc[r][c]);
      for (int64_t i = main; i < d; ++i) s += q[r][i] * L::One(k0 + c * row_bytes, e0 + i);
      sc[r][j + c] = s * scale;
    }
  }
}

// out[r][i0 .. i0 + 8W) += sum_j p[r][j] * v_j[e0 + i0 ..] over `count` value rows starting
// at v0 (out holds the sum over the earlier keys: loading and storing it between runs of keys
// leaves each element's chain of multiply-adds as one register would).
template <typename L, int NR, int W>
inline void ValueTile(const float* const* p, const uint8_t* v0, uint64_t row_bytes,
                      int64_t count, int64_t e0, int64_t i0, float* const* out) {
  __m256 acc[NR][W];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) {
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) acc[r][w] = _mm256_loadu_ps(out[r] + i0 + 8 * w);
  }
  for (int64_t j = 0; j < count; ++j) {
    const uint8_t* vj = v0 + j * row_bytes;
    __m256 vv[W];
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) vv[w] = L::Load(vj, e0 + i0 + 8 * w);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const __m256 pb = _mm256_broadcast_ss(p[r] + j);
#pragma GCC unroll 8
      for (int w = 0; w < W; ++w) acc[r][w] = _mm256_fmadd_ps(pb, vv[w], acc[r][w]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) {
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) _mm256_storeu_ps(out[r] + i0 + 8 * w, acc[r][w]);
  }
}

// Calls fn(first key index j, row pointer, count) for each run of consecutive rows (one block)
// among positions [first, last] of `blocks`.
template <typename Fn>
inline void ForRuns(const KvRows& kv, const uint8_t* const* blocks, uint64_t row_bytes,
                    int64_t first, int64_t last, const Fn& fn) {
  int64_t pos = first;
  while (pos <= last) {
    const int64_t rel = pos - kv.first_pos;
    const int64_t in = rel % kv.block_tokens;
    const int64_t n = Min64(last + 1 - pos, kv.block_tokens - in);
    fn(pos - first, blocks[rel / kv.block_tokens] + static_cast<uint64_t>(in) * row_bytes, n);
    pos += n;
  }
}

// Heads h .. h + NR - 1, all on KV head g.
template <typename L, int NR>
void HeadTile(const AttentionArgs& a, int64_t h, int64_t g) {
  constexpr int kKeys = NR >= 3 ? 2 : 4;   // keys per score tile
  constexpr int kLanes = NR >= 3 ? 2 : 4;  // 8-float vectors per value tile
  const int64_t dk = a.head_dim_k, dv = a.head_dim_v;
  const int64_t qd = a.n_head * dk;
  const uint64_t kb = a.kv.k_row_bytes, vb = a.kv.v_row_bytes;
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
    ForRuns(a.kv, a.kv.k_blocks, kb, first, p, [&](int64_t j0, const uint8_t* k0, int64_t n) {
      int64_t j = 0;
      for (; j + kKeys <= n; j += kKeys) {
        ScoreTile<L, NR, kKeys>(q, k0 + j * kb, kb, g * dk, dk, a.scale, sc, j0 + j);
      }
      for (; j < n; ++j) ScoreTile<L, NR, 1>(q, k0 + j * kb, kb, g * dk, dk, a.scale, sc, j0 + j);
    });
    for (int r = 0; r < NR; ++r) SoftmaxAvx2(sc[r], count);

    for (int r = 0; r < NR; ++r) {
      for (int64_t i = 0; i < dv; ++i) out[r][i] = 0.0f;
    }
    ForRuns(a.kv, a.kv.v_blocks, vb, first, p, [&](int64_t j0, const uint8_t* v0, int64_t n) {
      const float* pr[NR];
      for (int r = 0; r < NR; ++r) pr[r] = sc[r] + j0;
      int64_t i0 = 0;
      for (; i0 + 8 * kLanes <= dv; i0 += 8 * kLanes) {
        ValueTile<L, NR, kLanes>(pr, v0, vb, n, g * dv, i0, out);
      }
      for (; i0 + 8 <= dv; i0 += 8) ValueTile<L, NR, 1>(pr, v0, vb, n, g * dv, i0, out);
      for (; i0 < dv; ++i0) {
        for (int r = 0; r < NR; ++r) {
          float acc = out[r][i0];
          for (int64_t jj = 0; jj < n; ++jj) acc += pr[r][jj] * L::One(v0 + jj * vb, g * dv + i0);
          out[r][i0] = acc;
        }
      }
    });
  }
}

template <typename L>
void Heads(const AttentionArgs& a, int64_t h0, int64_t h1) {
  const int64_t group = a.n_head / a.n_head_kv;
  for (int64_t h = h0; h < h1;) {
    const int64_t g = h / group;
    const int64_t nr = Min64(4, Min64(h1, (g + 1) * group) - h);
    switch (nr) {
      case 4: HeadTile<L, 4>(a, h, g); break;
      case 3: HeadTile<L, 3>(a, h, g); break;
      case 2: HeadTile<L, 2>(a, h, g); break;
      default: HeadTile<L, 1>(a, h, g); break;
    }
    h += nr;
  }
}

}  // namespace

void AttentionHeadsAvx2(const AttentionArgs& a, int64_t h0, int64_t h1) {
  switch (a.kv.type) {
    case DType::kF16: Heads<RowF16>(a, h0, h1); break;
    case DType::kQ8_0: Heads<RowQ8_0>(a, h0, h1); break;
    case DType::kQ4_0: Heads<RowQ4_0>(a, h0, h1); break;
    default: Heads<RowF32>(a, h0, h1); break;
  }
}

}  // namespace ferry::cpu_internal
