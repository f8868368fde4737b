// AVX2 + FMA + F16C MatMul kernels (x86-64). This translation unit alone is compiled with
// -mavx2 -mfma -mf16c; matmul.cc calls into it only after checking the CPU (see
// matmul_internal.h for why everything here has internal linkage and nothing inline from other
// headers is called).
//
// The 8-bit dot step: for int8 a (weights) and b (activations, never -128),
// maddubs(|a|, sign(b, a)) gives 16 int16 sums of two products each (|sum| <= 2 * 128 * 127,
// no saturation), and madd with ones (or with per-group scales) widens to 8 int32 lanes. For
// unsigned weight codes (0..63) maddubs(q, b) is used directly. Block sums are therefore exact
// integers; only their scaling and accumulation is in float.
//
// Token tiles: each weight block is loaded and decoded once and multiplied with up to kTile
// tokens. A token's result is the same whichever tile size computes it.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/matmul_internal.h"

namespace ferry::cpu_internal {
namespace {

constexpr int kQ = 32;
constexpr int kTile = 4;       // tokens per loaded weight row
constexpr int64_t kRowTile = 16;  // rows per token tile (both stay in L1)

inline float HalfToFloat(uint16_t h) { return _cvtsh_ss(h); }

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int HorizontalSumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

inline __m256i Load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
inline __m128i Load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

// 8 int32 lanes of sum a*b over 32 pairs of unsigned a (0..127, at most 63 here) and signed
// b, each int16 pair sum times the
// int16 scale of its lane.
inline __m256i DotU8Scaled(__m256i a_u8, __m256i b, __m256i scale16) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(a_u8, b), scale16);
}

// 32 nibbles of a 32-element block: byte e = element e (low nibbles first, then high).
inline __m256i Nibbles32(const uint8_t* qs) {
  const __m128i q = Load128(qs);
  const __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
  return _mm256_and_si256(v, _mm256_set1_epi8(15));
}
// Byte e = 0xff if bit e of the little-endian u32 at qh is set, else 0.
inline __m256i BitMask32(const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2,
                                        2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
  const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), shuf);
  return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

// ---- activation quantizers ----

// Packs 32 int32 (4 vectors, elements in order) to 32 int8 in order.
inline __m256i PackI32ToI8(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b);  // lanes: a0 b0 | a1 b1
  const __m256i cd = _mm256_packs_epi32(c, d);
  const __m256i abcd = _mm256_packs_epi16(ab, cd);  // a0 b0 c0 d0 | a1 b1 c1 d1
  return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

void QuantizeQ8_0Avx2(const float* x, int64_t n, BlockQ8_0* out, float* d_out, float* s_out) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t b = 0; b < n / kQ; ++b) {
    const float* v = x + b * kQ;
    __m256 f[4];
    for (int i = 0; i < 4; ++i) f[i] = _mm256_loadu_ps(v + 8 * i);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(f[0], abs_mask), _mm256_and_ps(f[1], abs_mask)),
                             _mm256_max_ps(_mm256_and_ps(f[2], abs_mask), _mm256_and_ps(f[3], abs_mask)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    // As llama.cpp's x86 backend: scale by 127 / amax, round half to even (see
    // RoundActivationsRef).
    const float d = amax / 127.0f;
    const float id = amax == 0.0f ? 0.0f : 127.0f / amax;
    const uint16_t dh = static_cast<uint16_t>(
        _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(d), _MM_FROUND_TO_NEAREST_INT), 0));
    out[b].d = dh;
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int i = 0; i < 4; ++i) {
      q[i] = _mm256_cvtps_epi32(
          _mm256_round_ps(_mm256_mul_ps(f[i], vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs), PackI32ToI8(q[0], q[1], q[2], q[3]));
    const int sum = HorizontalSumI32(
        _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    d_out[b] = HalfToFloat(dh);
    s_out[b] = d_out[b] * static_cast<float>(sum);
  }
}

void QuantizeQ8_KAvx2(const float* x, int64_t n, BlockQ8_K* out) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const float* v = x + b * kQK_K;
    BlockQ8_K& o = out[b];
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < kQK_K; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(v + i), abs_mask));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    if (amax == 0.0f) {
      std::memset(&o, 0, sizeof(o));
      continue;
    }
    // The first element of largest magnitude, sign kept.
    float max = 0.0f;
    const __m256 vamax = _mm256_set1_ps(amax);
    for (int i = 0; i < kQK_K; i += 8) {
      const int hit = _mm256_movemask_ps(
          _mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(v + i), abs_mask), vamax, _CMP_EQ_OQ));
      if (hit != 0) {
        max = v[i + __builtin_ctz(static_cast<unsigned>(hit))];
        break;
      }
    }
    const float iscale = -127.0f / max;
    o.d = 1.0f / iscale;
    const __m256 vis = _mm256_set1_ps(iscale);
    const __m256 lim = _mm256_set1_ps(127.0f);
    for (int i = 0; i < kQK_K; i += 32) {
      __m256i q[4];
      for (int k = 0; k < 4; ++k) {
        const __m256 s = _mm256_mul_ps(vis, _mm256_loadu_ps(v + i + 8 * k));
        const __m256 r = _mm256_round_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q[k] = _mm256_cvtps_epi32(_mm256_min_ps(r, lim));
      }
      // Group sums of 16: elements i..i+15 are q[0], q[1]; i+16..i+31 are q[2], q[3].
      o.bsums[i / 16] = static_cast<int16_t>(HorizontalSumI32(_mm256_add_epi32(q[0], q[1])));
      o.bsums[i / 16 + 1] = static_cast<int16_t>(HorizontalSumI32(_mm256_add_epi32(q[2], q[3])));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.qs + i), PackI32ToI8(q[0], q[1], q[2], q[3]));
    }
  }
}

// ---- per-token views of the activations ----

inline const BlockQ8_0* Q8Blocks(const Activations& a, int64_t t) {
  return reinterpret_cast<const BlockQ8_0*>(a.data + t * a.stride);
}
inline const BlockQ8_K* Q8KBlocks(const Activations& a, int64_t t) {
  return reinterpret_cast<const BlockQ8_K*>(a.data + t * a.stride);
}

// ---- 32-element weight blocks times Q8_0 activations ----
//
// Decode(block) gives 32 weight codes as bytes. Q4_0 / Q5_0 codes are taken unsigned (the
// nibble, plus the fifth bit: 0..15 / 0..31) with kOffset 8 / 16: sum (u - off) * a =
// sum u * a - off * sum a, and off * d_w * (d_a * sum a) is added as a float "min" term,
// m = -off * d_w, exactly like Q4_1 / Q5_1's m * s (llama.cpp's Q8_1 decomposition). Unsigned
// codes go straight into maddubs; Q8_0 codes are signed (-128..127) and take the sign trick.

struct DecodeQ4_0 {
  using Block = BlockQ4_0;
  static constexpr bool kHasMin = false;
  static constexpr int kOffset = 8;
  static __m256i Codes(const Block& b) { return Nibbles32(b.qs); }
};
struct DecodeQ5_0 {
  using Block = BlockQ5_0;
  static constexpr bool kHasMin = false;
  static constexpr int kOffset = 16;
  static __m256i Codes(const Block& b) {
    return _mm256_or_si256(Nibbles32(b.qs), _mm256_and_si256(BitMask32(b.qh), _mm256_set1_epi8(16)));
  }
};
struct DecodeQ8_0 {
  using Block = BlockQ8_0;
  static constexpr bool kHasMin = false;
  static constexpr int kOffset = 0;
  static __m256i Codes(const Block& b) { return Load256(b.qs); }
};
struct DecodeQ4_1 {
  using Block = BlockQ4_1;
  static constexpr bool kHasMin = true;
  static constexpr int kOffset = 0;
  static __m256i Codes(const Block& b) { return Nibbles32(b.qs); }
};
struct DecodeQ5_1 {
  using Block = BlockQ5_1;
  static constexpr bool kHasMin = true;
  static constexpr int kOffset = 0;
  static __m256i Codes(const Block& b) {
    return _mm256_or_si256(Nibbles32(b.qs), _mm256_and_si256(BitMask32(b.qh), _mm256_set1_epi8(16)));
  }
};

// The fp16 field at `first` and at the same offset in the next seven blocks (`stride` bytes
// apart) as f32; lanes not set in `lanes` (all-ones int32 lanes) are not read and give 0.
inline __m256 HalvesOfBlocks(const uint16_t* first, int64_t stride, __m256i lanes) {
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                         _mm256_set1_epi32(static_cast<int>(stride)));
  // 4-byte reads: the field and the 2 bytes after it, inside the same block.
  __m256i v = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), reinterpret_cast<const int*>(first),
                                          idx, lanes, 1);
  v = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), _MM_SHUFFLE(3, 1, 2, 0));
  return _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
}

// Blocks are taken eight at a time: the eight products d_w * d_a per token are one vector
// multiply (broadcast back per block from a small stack array: a load, not ALU work), and the min term
// sum_b m_b * s_a[b] is one FMA per token per eight blocks into the same accumulator. Each token's
// accumulator takes one FMA per block in block order: a token's result is the same whichever
// tile size computes it.
template <typename D, int NT>
void DotQ8Family(const uint8_t* row, int64_t cols, const Activations& a, int64_t t0, float* out) {
  using Block = typename D::Block;
  constexpr bool kMinTerm = D::kHasMin || D::kOffset != 0;
  constexpr bool kSigned = !D::kHasMin && D::kOffset == 0;
  const Block* w = reinterpret_cast<const Block*>(row);
  const int64_t nb = cols / kQ;
  const BlockQ8_0* x[NT];
  const float* xd[NT];
  const float* xs[NT];
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) {
    x[t] = Q8Blocks(a, t0 + t);
    xd[t] = a.block_d + (t0 + t) * nb;
    xs[t] = a.block_s + (t0 + t) * nb;
    acc[t] = _mm256_setzero_ps();
  }
  const __m256i ones16 = _mm256_set1_epi16(1);
  for (int64_t b0 = 0; b0 < nb; b0 += 8) {
    const int g = nb - b0 < 8 ? static_cast<int>(nb - b0) : 8;
    const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(g), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 dwv = HalvesOfBlocks(&w[b0].d, sizeof(Block), lanes);
    __m256 mwv = _mm256_setzero_ps();
    if constexpr (D::kHasMin) {
      mwv = HalvesOfBlocks(&w[b0].m, sizeof(Block), lanes);
    } else if constexpr (D::kOffset != 0) {
      mwv = _mm256_mul_ps(dwv, _mm256_set1_ps(-static_cast<float>(D::kOffset)));
    }
    alignas(32) float scale[NT][8];  // d_w * d_a of the eight blocks
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const __m256 dx = _mm256_maskload_ps(xd[t] + b0, lanes);
      _mm256_store_ps(scale[t], _mm256_mul_ps(dwv, dx));
      if constexpr (kMinTerm) {
        acc[t] = _mm256_fmadd_ps(mwv, _mm256_maskload_ps(xs[t] + b0, lanes), acc[t]);
      }
    }
    for (int k = 0; k < g; ++k) {
      const __m256i codes = D::Codes(w[b0 + k]);
      const __m256i abs_codes = kSigned ? _mm256_sign_epi8(codes, codes) : codes;
  #pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
        __m256i xq = Load256(x[t][b0 + k].qs);
        if constexpr (kSigned) xq = _mm256_sign_epi8(xq, codes);
        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(abs_codes, xq), ones16);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(&scale[t][k]), acc[t]);
      }
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) {
    out[t] = HorizontalSum(acc[t]);
  }
}

// ---- K-quants times Q8_K activations ----

// 16 int16 lanes: the low 128 bits hold scale[2p], the high 128 bits scale[2p + 1], for the
// two 16-element groups covered by a 32-element vector. scales: 16 int8.
inline __m256i ScalePair(__m128i scales, int p) {
  const __m128i idx = _mm_set_epi64x(0x0101010101010101LL * (2 * p + 1), 0x0101010101010101LL * (2 * p));
  return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, idx));
}

// Q4_K/Q5_K: unpacks the eight 6-bit scales into sc[8] and returns the eight mins, each
// repeated for the two 16-element bsum groups of its 32-element group, as int16 lanes.
inline __m256i UnpackScalesMinsK4(const uint8_t* s, uint8_t sc[8]) {
  uint8_t mn[8];
  for (int g = 0; g < 4; ++g) {
    sc[g] = s[g] & 63;
    mn[g] = s[g + 4] & 63;
    sc[g + 4] = static_cast<uint8_t>((s[g + 8] & 15) | ((s[g] >> 6) << 4));
    mn[g + 4] = static_cast<uint8_t>((s[g + 8] >> 4) | ((s[g + 4] >> 6) << 4));
  }
  uint64_t m;
  std::memcpy(&m, mn, 8);
  const __m128i mn8 = _mm_cvtsi64_si128(static_cast<long long>(m));
  return _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mn8, mn8));
}

// Q2_K/Q4_K/Q5_K, super-block b: acc[t] += d * da * isum[t] - dmin * da * (mins16 . bsums),
// mins16 holding the min of each 16-element bsum group.
template <int NT>
inline void AccumulateWithMins(const __m256i* isum, __m256i mins16, float d, float dmin,
                               const BlockQ8_K* const* x, int64_t b, __m256* acc) {
  for (int t = 0; t < NT; ++t) {
    const __m256i msum = _mm256_madd_epi16(Load256(x[t][b].bsums), mins16);
    const float da = x[t][b].d;
    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * da), acc[t]);
    acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(dmin * da), acc[t]);
  }
}

template <int NT>
void DotQ4_K(const uint8_t* row, int64_t cols, const Activations& a, int64_t t0, float* out) {
  const auto* w = reinterpret_cast<const BlockQ4_K*>(row);
  const BlockQ8_K* x[NT];
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) {
    x[t] = Q8KBlocks(a, t0 + t);
    acc[t] = _mm256_setzero_ps();
  }
  const __m256i m4 = _mm256_set1_epi8(15);
  for (int64_t b = 0; b < cols / kQK_K; ++b) {
    const BlockQ4_K& blk = w[b];
    uint8_t sc[8];
    const __m256i mins16 = UnpackScalesMinsK4(blk.scales, sc);
    const float d = HalfToFloat(blk.d), dmin = HalfToFloat(blk.dmin);
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = Load256(blk.qs + 32 * c);
      const __m256i lo = _mm256_and_si256(q, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      const __m256i s_lo = _mm256_set1_epi16(sc[2 * c]);
      const __m256i s_hi = _mm256_set1_epi16(sc[2 * c + 1]);
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = x[t][b].qs + 64 * c;
        isum[t] = _mm256_add_epi32(isum[t], DotU8Scaled(lo, Load256(xq), s_lo));
        isum[t] = _mm256_add_epi32(isum[t], DotU8Scaled(hi, Load256(xq + 32), s_hi));
      }
    }
    AccumulateWithMins<NT>(isum, mins16, d, dmin, x, b, acc);
  }
  for (int t = 0; t < NT; ++t) out[t] = HorizontalSum(acc[t]);
}

template <int NT>
void DotQ5_K(const uint8_t* row, int64_t cols, const Activations& a, int64_t t0, float* out) {
  const auto* w = reinterpret_cast<const BlockQ5_K*>(row);
  const BlockQ8_K* x[NT];
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) {
    x[t] = Q8KBlocks(a, t0 + t);
    acc[t] = _mm256_setzero_ps();
  }
  const __m256i m4 = _mm256_set1_epi8(15);
  const __m256i one = _mm256_set1_epi8(1);
  for (int64_t b = 0; b < cols / kQK_K; ++b) {
    const BlockQ5_K& blk = w[b];
    uint8_t sc[8];
    const __m256i mins16 = UnpackScalesMinsK4(blk.scales, sc);
    const float d = HalfToFloat(blk.d), dmin = HalfToFloat(blk.dmin);
    const __m256i qh = Load256(blk.qh);
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = Load256(blk.qs + 32 * c);
      // Fifth bits: bit 2c of qh[l] for the low group, bit 2c + 1 for the high group.
      const __m256i h_lo = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4);
      const __m256i h_hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), h_lo);
      const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h_hi);
      const __m256i s_lo = _mm256_set1_epi16(sc[2 * c]);
      const __m256i s_hi = _mm256_set1_epi16(sc[2 * c + 1]);
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = x[t][b].qs + 64 * c;
        isum[t] = _mm256_add_epi32(isum[t], DotU8Scaled(lo, Load256(xq), s_lo));
        isum[t] = _mm256_add_epi32(isum[t], DotU8Scaled(hi, Load256(xq + 32), s_hi));
      }
    }
    AccumulateWithMins<NT>(isum, mins16, d, dmin, x, b, acc);
  }
  for (int t = 0; t < NT; ++t) out[t] = HorizontalSum(acc[t]);
}

template <int NT>
void DotQ6_K(const uint8_t* row, int64_t cols, const Activations& a, int64_t t0, float* out) {
  const auto* w = reinterpret_cast<const BlockQ6_K*>(row);
  const BlockQ8_K* x[NT];
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) {
    x[t] = Q8KBlocks(a, t0 + t);
    acc[t] = _mm256_setzero_ps();
  }
  const __m256i m4 = _mm256_set1_epi8(15);
  const __m256i m30 = _mm256_set1_epi8(0x30);
  for (int64_t b = 0; b < cols / kQK_K; ++b) {
    const BlockQ6_K& blk = w[b];
    const __m128i sc8 = Load128(blk.scales);
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    const float d = HalfToFloat(blk.d);
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = Load256(blk.ql + 64 * h);
      const __m256i ql1 = Load256(blk.ql + 64 * h + 32);
      const __m256i qh = Load256(blk.qh + 32 * h);
      __m256i q[4];  // codes 0..63 of elements 128h + 32j + l
      q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
      q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
      q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30));
      q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                             _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
      for (int j = 0; j < 4; ++j) {
        const __m256i sp = ScalePair(sc8, 4 * h + j);
        for (int t = 0; t < NT; ++t) {
          isum[t] = _mm256_add_epi32(isum[t], DotU8Scaled(q[j], Load256(x[t][b].qs + 128 * h + 32 * j), sp));
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      // sum scale_g * (q - 32) * a = sum scale_g * q * a - 32 * sum scale_g * bsum_g
      const __m256i off = _mm256_madd_epi16(Load256(x[t][b].bsums), sc16);
      const __m256i total = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(off, 5));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_set1_ps(d * x[t][b].d), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = HorizontalSum(acc[t]);
}

template <int NT>
void DotQ3_K(const uint8_t* row, int64_t cols, const Activations& a, int64_t t0, float* out) {
  const auto* w = reinterpret_cast<const BlockQ3_K*>(row);
  const BlockQ8_K* x[NT];
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) {
    x[t] = Q8KBlocks(a, t0 + t);
    acc[t] = _mm256_setzero_ps();
  }
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m256i one = _mm256_set1_epi8(1);
  for (int64_t b = 0; b < cols / kQK_K; ++b) {
    const BlockQ3_K& blk = w[b];
    int8_t sc[16];  // signed scales S - 32
    for (int k = 0; k < 16; ++k) {
      const int low = (blk.scales[k % 8] >> (4 * (k / 8))) & 15;
      const int high = (blk.scales[8 + k % 4] >> (2 * (k / 4))) & 3;
      sc[k] = static_cast<int8_t>((low | (high << 4)) - 32);
    }
    const __m128i sc8 = Load128(sc);
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    const float d = HalfToFloat(blk.d);
    const __m256i hm = Load256(blk.hmask);
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = Load256(blk.qs + 32 * h);
      for (int j = 0; j < 4; ++j) {
        // code = q2 + 4 * high bit in 0..7; the value is code - 4.
        const __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * j), m3);
        const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), one);
        const __m256i q = _mm256_or_si256(q2, _mm256_slli_epi16(hb, 2));
        const __m256i sp = ScalePair(sc8, 4 * h + j);
        for (int t = 0; t < NT; ++t) {
          isum[t] = _mm256_add_epi32(isum[t], DotU8Scaled(q, Load256(x[t][b].qs + 128 * h + 32 * j), sp));
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      const __m256i off = _mm256_madd_epi16(Load256(x[t][b].bsums), sc16);
      const __m256i total = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(off, 2));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_set1_ps(d * x[t][b].d), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = HorizontalSum(acc[t]);
}

template <int NT>
void DotQ2_K(const uint8_t* row, int64_t cols, const Activations& a, int64_t t0, float* out) {
  const auto* w = reinterpret_cast<const BlockQ2_K*>(row);
  const BlockQ8_K* x[NT];
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) {
    x[t] = Q8KBlocks(a, t0 + t);
    acc[t] = _mm256_setzero_ps();
  }
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m128i m4 = _mm_set1_epi8(15);
  for (int64_t b = 0; b < cols / kQK_K; ++b) {
    const BlockQ2_K& blk = w[b];
    const __m128i raw = Load128(blk.scales);
    const __m128i sc8 = _mm_and_si128(raw, m4);
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
    const float d = HalfToFloat(blk.d), dmin = HalfToFloat(blk.dmin);
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = Load256(blk.qs + 32 * h);
      for (int j = 0; j < 4; ++j) {
        const __m256i q = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * j), m3);
        const __m256i sp = ScalePair(sc8, 4 * h + j);
        for (int t = 0; t < NT; ++t) {
          isum[t] = _mm256_add_epi32(isum[t], DotU8Scaled(q, Load256(x[t][b].qs + 128 * h + 32 * j), sp));
        }
      }
    }
    AccumulateWithMins<NT>(isum, mins16, d, dmin, x, b, acc);
  }
  for (int t = 0; t < NT; ++t) out[t] = HorizontalSum(acc[t]);
}

// ---- float weights: F32, F16, BF16 ----
//
// Chunks of up to kChunk elements are summed in two float accumulators per token, each
// chunk's sum is added in double; a scalar tail handles cols % 16.

constexpr int64_t kChunk = 256;

struct LoadF32 {
  using T = float;
  static __m256 Load(const float* p) { return _mm256_loadu_ps(p); }
  static float One(float v) { return v; }
};
struct LoadF16 {
  using T = uint16_t;
  static __m256 Load(const uint16_t* p) { return _mm256_cvtph_ps(Load128(p)); }
  static float One(uint16_t v) { return HalfToFloat(v); }
};
struct LoadBF16 {
  using T = uint16_t;
  static __m256 Load(const uint16_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(Load128(p)), 16));
  }
  static float One(uint16_t v) {
    const uint32_t u = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

template <typename L, int NT>
void DotFloat(const uint8_t* row, int64_t cols, const Activations& a, int64_t t0, float* out) {
  using T = typename L::T;
  const T* w = reinterpret_cast<const T*>(row);
  const T* x[NT];
  double total[NT];
  for (int t = 0; t < NT; ++t) {
    x[t] = reinterpret_cast<const T*>(a.data + (t0 + t) * a.stride);
    total[t] = 0.0;
  }
  const int64_t main = cols - cols % 16;
  for (int64_t c0 = 0; c0 < main; c0 += kChunk) {
    const int64_t c1 = c0 + kChunk < main ? c0 + kChunk : main;
    __m256 acc0[NT], acc1[NT];
    for (int t = 0; t < NT; ++t) acc0[t] = acc1[t] = _mm256_setzero_ps();
    for (int64_t i = c0; i < c1; i += 16) {
      const __m256 w0 = L::Load(w + i), w1 = L::Load(w + i + 8);
      for (int t = 0; t < NT; ++t) {
        acc0[t] = _mm256_fmadd_ps(w0, L::Load(x[t] + i), acc0[t]);
        acc1[t] = _mm256_fmadd_ps(w1, L::Load(x[t] + i + 8), acc1[t]);
      }
    }
    for (int t = 0; t < NT; ++t) total[t] += HorizontalSum(_mm256_add_ps(acc0[t], acc1[t]));
  }
  for (int t = 0; t < NT; ++t) {
    for (int64_t i = main; i < cols; ++i) {
      total[t] += static_cast<double>(L::One(w[i])) * L::One(x[t][i]);
    }
    out[t] = static_cast<float>(total[t]);
  }
}

// ---- the row loop ----

// Kernel<NT>(row, cols, a, t0, out) computes out[0..NT) for tokens t0..t0+NT.
template <template <int> class K>
void Rows(const WeightRows& w, int64_t r0, int64_t r1, const Activations& a, float* y) {
  for (int64_t rt = r0; rt < r1; rt += kRowTile) {
    const int64_t rt_end = rt + kRowTile < r1 ? rt + kRowTile : r1;
    for (int64_t t0 = 0; t0 < a.n_tok; t0 += kTile) {
      const int64_t nt = a.n_tok - t0 < kTile ? a.n_tok - t0 : kTile;
      for (int64_t r = rt; r < rt_end; ++r) {
        const uint8_t* row = w.data + static_cast<uint64_t>(r) * w.row_bytes;
        float out[kTile];
        switch (nt) {
          case 4: K<4>::Run(row, w.cols, a, t0, out); break;
          case 3: K<3>::Run(row, w.cols, a, t0, out); break;
          case 2: K<2>::Run(row, w.cols, a, t0, out); break;
          default: K<1>::Run(row, w.cols, a, t0, out); break;
        }
        for (int64_t i = 0; i < nt; ++i) y[(t0 + i) * w.rows + r] = out[i];
      }
    }
  }
}

template <typename D>
struct Q8Family {
  template <int NT>
  struct K {
    static void Run(const uint8_t* row, int64_t cols, const Activations& a, int64_t t0, float* out) {
      DotQ8Family<D, NT>(row, cols, a, t0, out);
    }
  };
};
template <typename L>
struct FloatFamily {
  template <int NT>
  struct K {
    static void Run(const uint8_t* row, int64_t cols, const Activations& a, int64_t t0, float* out) {
      DotFloat<L, NT>(row, cols, a, t0, out);
    }
  };
};
#define FERRY_KERNEL_WRAPPER(Name, Fn)                                                        \
  template <int NT>                                                                           \
  struct Name {                                                                               \
    static void Run(const uint8_t* row, int64_t cols, const Activations& a, int64_t t0,      \
                    float* out) {                                                             \
      Fn<NT>(row, cols, a, t0, out);                                                          \
    }                                                                                         \
  };
FERRY_KERNEL_WRAPPER(KQ2_K, DotQ2_K)
FERRY_KERNEL_WRAPPER(KQ3_K, DotQ3_K)
FERRY_KERNEL_WRAPPER(KQ4_K, DotQ4_K)
FERRY_KERNEL_WRAPPER(KQ5_K, DotQ5_K)
FERRY_KERNEL_WRAPPER(KQ6_K, DotQ6_K)
#undef FERRY_KERNEL_WRAPPER

RowsKernel Avx2RowsKernel(DType type) {
  switch (type) {
    case DType::kF32: return Rows<FloatFamily<LoadF32>::K>;
    case DType::kF16: return Rows<FloatFamily<LoadF16>::K>;
    case DType::kBF16: return Rows<FloatFamily<LoadBF16>::K>;
    case DType::kQ4_0: return Rows<Q8Family<DecodeQ4_0>::K>;
    case DType::kQ4_1: return Rows<Q8Family<DecodeQ4_1>::K>;
    case DType::kQ5_0: return Rows<Q8Family<DecodeQ5_0>::K>;
    case DType::kQ5_1: return Rows<Q8Family<DecodeQ5_1>::K>;
    case DType::kQ8_0: return Rows<Q8Family<DecodeQ8_0>::K>;
    case DType::kQ2_K: return Rows<KQ2_K>;
    case DType::kQ3_K: return Rows<KQ3_K>;
    case DType::kQ4_K: return Rows<KQ4_K>;
    case DType::kQ5_K: return Rows<KQ5_K>;
    case DType::kQ6_K: return Rows<KQ6_K>;
    default: return nullptr;
  }
}

const KernelSet kAvx2Set = {Avx2RowsKernel, QuantizeQ8_0Avx2, QuantizeQ8_KAvx2};

}  // namespace

const KernelSet* Avx2Kernels() { return &kAvx2Set; }

}  // namespace ferry::cpu_internal
