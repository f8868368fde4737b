// Portable MatMul kernels: plain C++, exact integer sums per block, block results accumulated
// in double. They run on any CPU and are the fallback of the AVX2 kernels.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/matmul_internal.h"
#include "tensor/fp16.h"

namespace ferry::cpu_internal {
namespace {

constexpr int kQ = kQK4_0;  // 32

// ---- activation quantizers ----

void QuantizeQ8_0Portable(const float* x, int64_t n, BlockQ8_0* out, float* d_out, float* s_out) {
  for (int64_t b = 0; b < n / kQ; ++b) {
    const float* v = x + b * kQ;
    float amax = 0.0f;
    for (int e = 0; e < kQ; ++e) amax = std::max(amax, std::fabs(v[e]));
    // As llama.cpp's x86 backend: scale by 127 / amax, round half to even (see
    // RoundActivationsRef).
    const float d = amax / 127.0f;
    const float id = amax == 0.0f ? 0.0f : 127.0f / amax;
    out[b].d = FloatToFp16(d);
    int sum = 0;
    for (int e = 0; e < kQ; ++e) {
      // |v * id| <= 127 up to rounding, so the result fits int8.
      const int q = static_cast<int>(std::nearbyint(v[e] * id));
      out[b].qs[e] = static_cast<int8_t>(q);
      sum += q;
    }
    d_out[b] = Fp16ToFloat(out[b].d);
    s_out[b] = d_out[b] * static_cast<float>(sum);
  }
}

void QuantizeQ8_KPortable(const float* x, int64_t n, BlockQ8_K* out) {
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const float* v = x + b * kQK_K;
    BlockQ8_K& o = out[b];
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < kQK_K; ++i) {
      if (std::fabs(v[i]) > amax) {
        amax = std::fabs(v[i]);
        max = v[i];
      }
    }
    if (amax == 0.0f) {
      std::memset(&o, 0, sizeof(o));
      continue;
    }
    const float iscale = -127.0f / max;
    o.d = 1.0f / iscale;
    for (int i = 0; i < kQK_K; ++i) {
      const float q = std::nearbyint(iscale * v[i]);  // ties to even
      o.qs[i] = static_cast<int8_t>(std::min(q, 127.0f));
    }
    for (int g = 0; g < kQK_K / 16; ++g) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += o.qs[16 * g + i];
      o.bsums[g] = static_cast<int16_t>(sum);
    }
  }
}

// ---- one weight row times one token ----

// Nibble of element e (0..31) of a 32-element block: low nibble of qs[e] for e < 16, else the
// high nibble of qs[e - 16].
inline int Nibble(const uint8_t* qs, int e) { return e < 16 ? qs[e] & 15 : qs[e - 16] >> 4; }
inline int FifthBit(const uint8_t* qh, int e) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  return static_cast<int>((h >> e) & 1u);
}

struct Q8Act {  // token t of Q8_0 activations
  const BlockQ8_0* q;
  const float* d;
  const float* s;
};
Q8Act Q8Token(const Activations& a, int64_t t) {
  const int64_t nb = a.cols / kQ;
  return {reinterpret_cast<const BlockQ8_0*>(a.data + t * a.stride), a.block_d + t * nb,
          a.block_s + t * nb};
}
const BlockQ8_K* Q8KToken(const Activations& a, int64_t t) {
  return reinterpret_cast<const BlockQ8_K*>(a.data + t * a.stride);
}

double DotQ4_0(const uint8_t* row, int64_t cols, const Activations& a, int64_t t) {
  const auto* w = reinterpret_cast<const BlockQ4_0*>(row);
  const Q8Act x = Q8Token(a, t);
  double acc = 0.0;
  for (int64_t b = 0; b < cols / kQ; ++b) {
    int isum = 0;
    for (int e = 0; e < kQ; ++e) isum += (Nibble(w[b].qs, e) - 8) * x.q[b].qs[e];
    acc += static_cast<double>(Fp16ToFloat(w[b].d)) * x.d[b] * isum;
  }
  return acc;
}

double DotQ4_1(const uint8_t* row, int64_t cols, const Activations& a, int64_t t) {
  const auto* w = reinterpret_cast<const BlockQ4_1*>(row);
  const Q8Act x = Q8Token(a, t);
  double acc = 0.0;
  for (int64_t b = 0; b < cols / kQ; ++b) {
    int isum = 0;
    for (int e = 0; e < kQ; ++e) isum += Nibble(w[b].qs, e) * x.q[b].qs[e];
    acc += static_cast<double>(Fp16ToFloat(w[b].d)) * x.d[b] * isum +
           static_cast<double>(Fp16ToFloat(w[b].m)) * x.s[b];
  }
  return acc;
}

double DotQ5_0(const uint8_t* row, int64_t cols, const Activations& a, int64_t t) {
  const auto* w = reinterpret_cast<const BlockQ5_0*>(row);
  const Q8Act x = Q8Token(a, t);
  double acc = 0.0;
  for (int64_t b = 0; b < cols / kQ; ++b) {
    int isum = 0;
    for (int e = 0; e < kQ; ++e) {
      isum += ((Nibble(w[b].qs, e) | (FifthBit(w[b].qh, e) << 4)) - 16) * x.q[b].qs[e];
    }
    acc += static_cast<double>(Fp16ToFloat(w[b].d)) * x.d[b] * isum;
  }
  return acc;
}

double DotQ5_1(const uint8_t* row, int64_t cols, const Activations& a, int64_t t) {
  const auto* w = reinterpret_cast<const BlockQ5_1*>(row);
  const Q8Act x = Q8Token(a, t);
  double acc = 0.0;
  for (int64_t b = 0; b < cols / kQ; ++b) {
    int isum = 0;
    for (int e = 0; e < kQ; ++e) {
      isum += (Nibble(w[b].qs, e) | (FifthBit(w[b].qh, e) << 4)) * x.q[b].qs[e];
    }
    acc += static_cast<double>(Fp16ToFloat(w[b].d)) * x.d[b] * isum +
           static_cast<double>(Fp16ToFloat(w[b].m)) * x.s[b];
  }
  return acc;
}

double DotQ8_0(const uint8_t* row, int64_t cols, const Activations& a, int64_t t) {
  const auto* w = reinterpret_cast<const BlockQ8_0*>(row);
  const Q8Act x = Q8Token(a, t);
  double acc = 0.0;
  for (int64_t b = 0; b < cols / kQ; ++b) {
    int isum = 0;
    for (int e = 0; e < kQ; ++e) isum += w[b].qs[e] * x.q[b].qs[e];
    acc += static_cast<double>(Fp16ToFloat(w[b].d)) * x.d[b] * isum;
  }
  return acc;
}

// K-quants: per super-block, d_a * (d * sum_g scale_g * sum_{e in g} q_e a_e
//                                    - dmin * sum_g min_g * sum_{e in g} a_e),
// with sum_{e in g} a_e taken from the activation's bsums.

double DotQ2_K(const uint8_t* row, int64_t cols, const Activations& a, int64_t t) {
  const auto* w = reinterpret_cast<const BlockQ2_K*>(row);
  const BlockQ8_K* x = Q8KToken(a, t);
  double acc = 0.0;
  for (int64_t b = 0; b < cols / kQK_K; ++b) {
    int64_t isum = 0, msum = 0;
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, j = (e / 32) % 4, l = e % 32;
      const int q = (w[b].qs[32 * h + l] >> (2 * j)) & 3;
      isum += (w[b].scales[e / 16] & 15) * q * x[b].qs[e];
    }
    for (int g = 0; g < 16; ++g) msum += (w[b].scales[g] >> 4) * x[b].bsums[g];
    acc += static_cast<double>(x[b].d) * (static_cast<double>(Fp16ToFloat(w[b].d)) * isum -
                                          static_cast<double>(Fp16ToFloat(w[b].dmin)) * msum);
  }
  return acc;
}

double DotQ3_K(const uint8_t* row, int64_t cols, const Activations& a, int64_t t) {
  const auto* w = reinterpret_cast<const BlockQ3_K*>(row);
  const BlockQ8_K* x = Q8KToken(a, t);
  double acc = 0.0;
  for (int64_t b = 0; b < cols / kQK_K; ++b) {
    int sc[16];
    for (int g = 0; g < 16; ++g) sc[g] = UnpackScaleQ3_K(w[b].scales, g) - 32;
    int64_t isum = 0;
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, j = (e / 32) % 4, l = e % 32;
      const int q2 = (w[b].qs[32 * h + l] >> (2 * j)) & 3;
      const int hb = (w[b].hmask[l] >> (4 * h + j)) & 1;
      isum += sc[e / 16] * (q2 - (hb ? 0 : 4)) * x[b].qs[e];
    }
    acc += static_cast<double>(x[b].d) * Fp16ToFloat(w[b].d) * static_cast<double>(isum);
  }
  return acc;
}

// Q4_K (five_bits false) and Q5_K share the group layout: group g = e / 32 is the low nibble
// of qs[32 (g / 2) + l] for even g, the high nibble for odd g.
template <bool kFiveBits, typename Block>
double DotQ4Q5_K(const uint8_t* row, int64_t cols, const Activations& a, int64_t t) {
  const auto* w = reinterpret_cast<const Block*>(row);
  const BlockQ8_K* x = Q8KToken(a, t);
  double acc = 0.0;
  for (int64_t b = 0; b < cols / kQK_K; ++b) {
    int64_t isum = 0, msum = 0;
    for (int g = 0; g < 8; ++g) {
      int sc, mn;
      UnpackScaleMinK4(w[b].scales, g, &sc, &mn);
      int gsum = 0;
      for (int l = 0; l < 32; ++l) {
        const uint8_t byte = w[b].qs[32 * (g / 2) + l];
        int q = (g % 2 == 0) ? (byte & 15) : (byte >> 4);
        if constexpr (kFiveBits) q += 16 * ((w[b].qh[l] >> g) & 1);
        gsum += q * x[b].qs[32 * g + l];
      }
      isum += sc * gsum;
      msum += mn * (x[b].bsums[2 * g] + x[b].bsums[2 * g + 1]);
    }
    acc += static_cast<double>(x[b].d) * (static_cast<double>(Fp16ToFloat(w[b].d)) * isum -
                                          static_cast<double>(Fp16ToFloat(w[b].dmin)) * msum);
  }
  return acc;
}

double DotQ6_K(const uint8_t* row, int64_t cols, const Activations& a, int64_t t) {
  const auto* w = reinterpret_cast<const BlockQ6_K*>(row);
  const BlockQ8_K* x = Q8KToken(a, t);
  double acc = 0.0;
  for (int64_t b = 0; b < cols / kQK_K; ++b) {
    int64_t isum = 0;
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, j = (e / 32) % 4, l = e % 32;
      const uint8_t lo_byte = w[b].ql[64 * h + l + 32 * (j & 1)];
      const int lo = j < 2 ? (lo_byte & 15) : (lo_byte >> 4);
      const int hi = (w[b].qh[32 * h + l] >> (2 * j)) & 3;
      isum += w[b].scales[e / 16] * ((lo | (hi << 4)) - 32) * x[b].qs[e];
    }
    acc += static_cast<double>(x[b].d) * Fp16ToFloat(w[b].d) * static_cast<double>(isum);
  }
  return acc;
}

double DotF32(const uint8_t* row, int64_t cols, const Activations& a, int64_t t) {
  const auto* w = reinterpret_cast<const float*>(row);
  const auto* x = reinterpret_cast<const float*>(a.data + t * a.stride);
  double acc = 0.0;
  for (int64_t i = 0; i < cols; ++i) acc += static_cast<double>(w[i]) * x[i];
  return acc;
}

template <float (*kToFloat)(uint16_t)>
double DotHalf(const uint8_t* row, int64_t cols, const Activations& a, int64_t t) {
  const auto* w = reinterpret_cast<const uint16_t*>(row);
  const auto* x = reinterpret_cast<const uint16_t*>(a.data + t * a.stride);
  double acc = 0.0;
  for (int64_t i = 0; i < cols; ++i) {
    acc += static_cast<double>(kToFloat(w[i])) * kToFloat(x[i]);
  }
  return acc;
}

template <double (*kDot)(const uint8_t*, int64_t, const Activations&, int64_t)>
void Rows(const WeightRows& w, int64_t r0, int64_t r1, const Activations& a, float* y) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + static_cast<uint64_t>(r) * w.row_bytes;
    for (int64_t t = 0; t < a.n_tok; ++t) {
      y[t * w.rows + r] = static_cast<float>(kDot(row, w.cols, a, t));
    }
  }
}

RowsKernel PortableRowsKernel(DType type) {
  switch (type) {
    case DType::kF32: return Rows<DotF32>;
    case DType::kF16: return Rows<DotHalf<Fp16ToFloat>>;
    case DType::kBF16: return Rows<DotHalf<Bf16ToFloat>>;
    case DType::kQ4_0: return Rows<DotQ4_0>;
    case DType::kQ4_1: return Rows<DotQ4_1>;
    case DType::kQ5_0: return Rows<DotQ5_0>;
    case DType::kQ5_1: return Rows<DotQ5_1>;
    case DType::kQ8_0: return Rows<DotQ8_0>;
    case DType::kQ2_K: return Rows<DotQ2_K>;
    case DType::kQ3_K: return Rows<DotQ3_K>;
    case DType::kQ4_K: return Rows<DotQ4Q5_K<false, BlockQ4_K>>;
    case DType::kQ5_K: return Rows<DotQ4Q5_K<true, BlockQ5_K>>;
    case DType::kQ6_K: return Rows<DotQ6_K>;
    default: return nullptr;
  }
}

}  // namespace

const KernelSet& PortableKernels() {
  static const KernelSet kSet = {PortableRowsKernel, [](DType) -> PackedKernel { return nullptr; },
                                 QuantizeQ8_0Portable, QuantizeQ8_KPortable};
  return kSet;
}

}  // namespace ferry::cpu_internal
