#include "kernels/ref/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "tensor/fp16.h"

namespace ferry {
namespace {

// Name for messages, also for ids outside the DType table.
// ---- numpy semantics used by gguf.quants ----

// numpy's float32 -> int32 step of an integer cast on x86-64 (cvttss2si): truncation toward
// zero; NaN, infinities and values outside int32 give INT32_MIN.
int32_t TruncToInt32LikeNumpy(float x) {
  if (x >= -2147483648.0f && x < 2147483648.0f) return static_cast<int32_t>(x);
  return INT32_MIN;
}

// `x.astype(np.uint8)` / `x.astype(np.int8)`: the low byte of the int32 cast above.
uint8_t CastToUint8LikeNumpy(float x) {
  return static_cast<uint8_t>(static_cast<uint32_t>(TruncToInt32LikeNumpy(x)) & 0xffu);
}
int8_t CastToInt8LikeNumpy(float x) { return static_cast<int8_t>(CastToUint8LikeNumpy(x)); }

// gguf's np_roundf: round half away from zero, as sign(v) * (floor|v| + floor(2 (|v| - floor|v|))).
float RoundHalfAwayLikeNumpy(float v) {
  const float a = std::fabs(v);
  const float whole = std::floor(a);
  const float rounded = whole + std::floor(2.0f * (a - whole));
  const float sign = v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : v);  // np.sign: ±0 and NaN kept
  return sign * rounded;
}

// 1 / d, or 0 when d is 0 (gguf: np.where(d == 0, 0, 1 / d)).
float InverseOrZero(float d) { return d == 0.0f ? 0.0f : 1.0f / d; }

// The element of largest |x| with its sign; the first one among equals (np.argmax).
float SignedAbsMax(const float* x, int n) {
  float max = x[0];
  float abs_max = std::fabs(x[0]);
  for (int i = 1; i < n; ++i) {
    if (std::fabs(x[i]) > abs_max) {
      abs_max = std::fabs(x[i]);
      max = x[i];
    }
  }
  return max;
}

void MinMax(const float* x, int n, float* min, float* max) {
  *min = x[0];
  *max = x[0];
  for (int i = 1; i < n; ++i) {
    *min = std::min(*min, x[i]);
    *max = std::max(*max, x[i]);
  }
}

// Symmetric quantization shared by Q4_0 (nmax 15, offset 8) and Q5_0 (nmax 31, offset 16):
// d = max / -offset, q = clip(trunc(x / d + offset + 0.5), 0, nmax). Returns d.
float QuantizeSymmetric(const float* x, int offset, int nmax, uint8_t* q) {
  const float max = SignedAbsMax(x, kQK4_0);
  const float d = max / static_cast<float>(-offset);
  const float id = InverseOrZero(d);
  const float bias = static_cast<float>(offset) + 0.5f;
  for (int e = 0; e < kQK4_0; ++e) {
    const uint8_t v = CastToUint8LikeNumpy(std::trunc(x[e] * id + bias));
    q[e] = std::min<uint8_t>(v, static_cast<uint8_t>(nmax));
  }
  return d;
}

// Asymmetric quantization shared by Q4_1 (nmax 15) and Q5_1 (nmax 31):
// d = (max - min) / nmax, q = clip(trunc((x - min) / d + 0.5), 0, nmax). Returns d and min.
void QuantizeAsymmetric(const float* x, int nmax, uint8_t* q, float* d_out, float* min_out) {
  float min, max;
  MinMax(x, kQK4_0, &min, &max);
  const float d = (max - min) / static_cast<float>(nmax);
  const float id = InverseOrZero(d);
  for (int e = 0; e < kQK4_0; ++e) {
    const uint8_t v = CastToUint8LikeNumpy(std::trunc((x[e] - min) * id + 0.5f));
    q[e] = std::min<uint8_t>(v, static_cast<uint8_t>(nmax));
  }
  *d_out = d;
  *min_out = min;
}

// Packs 32 quants (each < 16 after masking) two per byte: element j low, element j + 16 high.
void PackNibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < kQK4_0 / 2; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 15) | (q[j + kQK4_0 / 2] << 4));
  }
}

// Bit 4 of each of 32 quants into a little-endian u32 (bit e for element e).
void PackFifthBits(const uint8_t* q, uint8_t* qh) {
  std::memset(qh, 0, 4);
  for (int e = 0; e < kQK4_0; ++e) {
    if (q[e] >> 4) qh[e / 8] |= static_cast<uint8_t>(1u << (e % 8));
  }
}

// ---- K-quant helpers (after llama.cpp's ggml-quants.c) ----

// Rounds to the nearest integer, ties to even (ggml's nearest_int). |x| stays far below 2^22.
int NearestInt(float x) { return static_cast<int>(std::lrintf(x)); }

// Below this every value of a group counts as zero (ggml's GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

// Fits y_i = scale * L_i - neg_min to the n values x with L_i in 0..nmax, minimizing the
// weighted squared error sum w_i (y_i - x_i)^2 (make_qkx2_quants). Starts from the min/max
// grid, then tries 21 grids with nmax + is/10 - 1 steps over [min, max] (is = 0..20), for each
// solving the 2x2 least-squares system for (scale, min) with min clamped to <= 0, and keeps the
// best. n <= kQK_K. Writes the quants to L; returns scale >= 0 and sets *neg_min = -min >= 0.
float FitScaleAndMin(const float* x, const float* w, int n, int nmax, uint8_t* L, float* neg_min) {
  constexpr float kStepStart = -1.0f;
  constexpr float kStepDelta = 0.1f;
  constexpr int kSteps = 20;

  float min = x[0], max = x[0];
  float sum_w = w[0];
  float sum_x = w[0] * x[0];
  for (int i = 1; i < n; ++i) {
    min = std::min(min, x[i]);
    max = std::max(max, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  min = std::min(min, 0.0f);  // the offset only ever subtracts
  if (max == min) {
    std::fill(L, L + n, 0);
    *neg_min = -min;
    return 0.0f;
  }

  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1.0f / iscale;
  float best_error = 0.0f;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(std::clamp(NearestInt(iscale * (x[i] - min)), 0, nmax));
    const float diff = scale * static_cast<float>(L[i]) + min - x[i];
    best_error += w[i] * diff * diff;
  }

  uint8_t candidate[kQK_K];
  for (int step = 0; step <= kSteps; ++step) {
    iscale = (kStepStart + kStepDelta * static_cast<float>(step) + static_cast<float>(nmax)) /
             (max - min);
    float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(NearestInt(iscale * (x[i] - min)), 0, nmax);
      candidate[i] = static_cast<uint8_t>(l);
      const float lf = static_cast<float>(l);
      sum_l += w[i] * lf;
      sum_l2 += w[i] * lf * lf;
      sum_xl += w[i] * lf * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0.0f)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (this_min > 0.0f) {  // keep min <= 0: refit the scale alone
      this_min = 0.0f;
      this_scale = sum_xl / sum_l2;
    }
    float error = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float diff = this_scale * static_cast<float>(candidate[i]) + this_min - x[i];
      error += w[i] * diff * diff;
    }
    if (error < best_error) {
      std::copy(candidate, candidate + n, L);
      best_error = error;
      scale = this_scale;
      min = this_min;
    }
  }
  *neg_min = -min;
  return scale;
}

// Fits y_i = scale * (L_i - nmax) to the n values x, L_i in 0..2 nmax - 1, weights x_i^2
// (make_qx_quants with rmse_type 1). The scale is negative when the largest |x| is positive,
// so that it maps to -nmax, the end of the range with one more step. Tries the 19 grids with
// nmax + is/10 steps (is = -9..9) and keeps the one with the best weighted least-squares fit.
// Returns the scale (0 for an all-zero group).
float FitSymmetricScale(const float* x, int n, int nmax, uint8_t* L) {
  float max = 0.0f, abs_max = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > abs_max) {
      abs_max = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (abs_max < kGroupMaxEps) {
    std::fill(L, L + n, static_cast<uint8_t>(nmax));  // q = 0
    return 0.0f;
  }
  // Quantizes with inverse scale iscale into q (L - nmax) and returns the weighted sums.
  auto quantize = [&](float iscale, uint8_t* out, float* sum_lx, float* sum_l2) {
    *sum_lx = 0.0f;
    *sum_l2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
      if (out) out[i] = static_cast<uint8_t>(l + nmax);
      const float w = x[i] * x[i];
      const float lf = static_cast<float>(l);
      *sum_lx += w * x[i] * lf;
      *sum_l2 += w * lf * lf;
    }
  };
  float sum_lx, sum_l2;
  quantize(-static_cast<float>(nmax) / max, L, &sum_lx, &sum_l2);
  float scale = sum_l2 != 0.0f ? sum_lx / sum_l2 : 0.0f;
  float best = scale * sum_lx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const float iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    quantize(iscale, nullptr, &sum_lx, &sum_l2);
    // Better fit <=> larger sum_lx^2 / sum_l2 (the error is sum w x^2 minus that).
    if (sum_l2 > 0.0f && sum_lx * sum_lx > best * sum_l2) {
      quantize(iscale, L, &sum_lx, &sum_l2);
      scale = sum_lx / sum_l2;
      best = scale * sum_lx;
    }
  }
  return scale;
}

}  // namespace

void QuantizeRowF32(const float* src, float* dst, int64_t n) {
  if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void QuantizeRowF16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = FloatToFp16(src[i]);
}

void QuantizeRowBF16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = FloatToBf16(src[i]);
}

void QuantizeRowQ4_0(const float* src, BlockQ4_0* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK4_0; ++b) {
    uint8_t q[kQK4_0];
    const float d = QuantizeSymmetric(src + b * kQK4_0, 8, 15, q);
    dst[b].d = FloatToFp16(d);
    PackNibbles(q, dst[b].qs);
  }
}

void QuantizeRowQ4_1(const float* src, BlockQ4_1* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK4_0; ++b) {
    uint8_t q[kQK4_0];
    float d, min;
    QuantizeAsymmetric(src + b * kQK4_0, 15, q, &d, &min);
    dst[b].d = FloatToFp16(d);
    dst[b].m = FloatToFp16(min);
    PackNibbles(q, dst[b].qs);
  }
}

void QuantizeRowQ5_0(const float* src, BlockQ5_0* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK4_0; ++b) {
    uint8_t q[kQK4_0];
    const float d = QuantizeSymmetric(src + b * kQK4_0, 16, 31, q);
    dst[b].d = FloatToFp16(d);
    PackFifthBits(q, dst[b].qh);
    PackNibbles(q, dst[b].qs);
  }
}

void QuantizeRowQ5_1(const float* src, BlockQ5_1* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK4_0; ++b) {
    uint8_t q[kQK4_0];
    float d, min;
    QuantizeAsymmetric(src + b * kQK4_0, 31, q, &d, &min);
    dst[b].d = FloatToFp16(d);
    dst[b].m = FloatToFp16(min);
    PackFifthBits(q, dst[b].qh);
    PackNibbles(q, dst[b].qs);
  }
}

void QuantizeRowQ8_0(const float* src, BlockQ8_0* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK4_0; ++b) {
    const float* x = src + b * kQK4_0;
    float abs_max = std::fabs(x[0]);
    for (int e = 1; e < kQK4_0; ++e) abs_max = std::max(abs_max, std::fabs(x[e]));
    const float d = abs_max / 127.0f;
    const float id = InverseOrZero(d);
    dst[b].d = FloatToFp16(d);
    for (int e = 0; e < kQK4_0; ++e) {
      dst[b].qs[e] = CastToInt8LikeNumpy(RoundHalfAwayLikeNumpy(x[e] * id));
    }
  }
}

void QuantizeRowQ4_K(const float* src, BlockQ4_K* dst, int64_t n) {
  constexpr int kGroups = kQK_K / 32;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const float* x = src + b * kQK_K;
    BlockQ4_K& block = dst[b];
    uint8_t L[kQK_K];
    float scales[kGroups], mins[kGroups];
    float max_scale = 0.0f, max_min = 0.0f;
    // 1. Per group of 32: the best (scale, min) in float, weighting each value by
    //    rms(group) + |x| so that large values are fitted more closely.
    for (int g = 0; g < kGroups; ++g) {
      const float* xg = x + 32 * g;
      float sum_x2 = 0.0f;
      for (int l = 0; l < 32; ++l) sum_x2 += xg[l] * xg[l];
      const float rms = std::sqrt(sum_x2 / 32.0f);
      float weights[32];
      for (int l = 0; l < 32; ++l) weights[l] = rms + std::fabs(xg[l]);
      scales[g] = FitScaleAndMin(xg, weights, 32, 15, L + 32 * g, &mins[g]);
      max_scale = std::max(max_scale, scales[g]);
      max_min = std::max(max_min, mins[g]);
    }
    // 2. Group scales and mins as 6-bit multiples of the super-block's d and dmin.
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    std::memset(block.scales, 0, sizeof(block.scales));
    for (int g = 0; g < kGroups; ++g) {
      const int ls = std::clamp(NearestInt(inv_scale * scales[g]), 0, 63);
      const int lm = std::clamp(NearestInt(inv_min * mins[g]), 0, 63);
      if (g < 4) {
        block.scales[g] = static_cast<uint8_t>(ls);
        block.scales[g + 4] = static_cast<uint8_t>(lm);
      } else {  // the layout UnpackScaleMinK4 reads
        block.scales[g + 4] = static_cast<uint8_t>((ls & 15) | ((lm & 15) << 4));
        block.scales[g - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
        block.scales[g] |= static_cast<uint8_t>((lm >> 4) << 6);
      }
    }
    block.d = FloatToFp16(max_scale / 63.0f);
    block.dmin = FloatToFp16(max_min / 63.0f);
    // 3. Requantize every value against the scales as stored (fp16 d times 6-bit sc).
    const float d = Fp16ToFloat(block.d);
    const float dmin = Fp16ToFloat(block.dmin);
    for (int g = 0; g < kGroups; ++g) {
      int sc, mn;
      UnpackScaleMinK4(block.scales, g, &sc, &mn);
      const float group_scale = d * static_cast<float>(sc);
      const float group_min = dmin * static_cast<float>(mn);
      for (int l = 0; l < 32; ++l) {
        // A zero scale decodes every quant to -group_min; store 0.
        L[32 * g + l] = group_scale == 0.0f
                            ? 0
                            : static_cast<uint8_t>(std::clamp(
                                  NearestInt((x[32 * g + l] + group_min) / group_scale), 0, 15));
      }
    }
    // 4. Pack: chunk c of 64 values -> qs[32c + l] = L[64c + l] | L[64c + 32 + l] << 4.
    for (int c = 0; c < kQK_K / 64; ++c) {
      for (int l = 0; l < 32; ++l) {
        block.qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
      }
    }
  }
}

void QuantizeRowQ6_K(const float* src, BlockQ6_K* dst, int64_t n) {
  constexpr int kGroups = kQK_K / 16;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const float* x = src + b * kQK_K;
    BlockQ6_K& block = dst[b];
    uint8_t L[kQK_K];
    float scales[kGroups];
    // 1. Per group of 16: the best signed scale in float.
    float max_scale = 0.0f, max_abs_scale = 0.0f;
    for (int g = 0; g < kGroups; ++g) {
      scales[g] = FitSymmetricScale(x + 16 * g, 16, 32, L + 16 * g);
      if (std::fabs(scales[g]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[g]);
        max_scale = scales[g];
      }
    }
    if (max_abs_scale < kGroupMaxEps) {  // all (near) zero
      std::memset(&block, 0, sizeof(block));
      continue;
    }
    // 2. Group scales as int8 multiples of d; the largest maps to -128.
    const float iscale = -128.0f / max_scale;
    block.d = FloatToFp16(1.0f / iscale);
    for (int g = 0; g < kGroups; ++g) {
      block.scales[g] = static_cast<int8_t>(std::clamp(NearestInt(iscale * scales[g]), -128, 127));
    }
    // 3. Requantize every value against the scales as stored.
    const float d = Fp16ToFloat(block.d);
    for (int g = 0; g < kGroups; ++g) {
      const float group_scale = d * static_cast<float>(block.scales[g]);
      for (int i = 0; i < 16; ++i) {
        // A zero scale decodes every quant to 0; store q = 0.
        L[16 * g + i] =
            group_scale == 0.0f
                ? 32
                : static_cast<uint8_t>(
                      std::clamp(NearestInt(x[16 * g + i] / group_scale), -32, 31) + 32);
      }
    }
    // 4. Pack, per half h of 128 values: ql gets the low nibbles of elements l and l + 64
    //    (ql[64h + l]) and of l + 32 and l + 96 (ql[64h + 32 + l]); qh[32h + l] the high 2 bits
    //    of elements l, l + 32, l + 64, l + 96 at bits 0, 2, 4, 6.
    for (int h = 0; h < 2; ++h) {
      const uint8_t* Lh = L + 128 * h;
      for (int l = 0; l < 32; ++l) {
        block.ql[64 * h + l] = static_cast<uint8_t>((Lh[l] & 15) | ((Lh[l + 64] & 15) << 4));
        block.ql[64 * h + 32 + l] =
            static_cast<uint8_t>((Lh[l + 32] & 15) | ((Lh[l + 96] & 15) << 4));
        block.qh[32 * h + l] =
            static_cast<uint8_t>((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                 ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
      }
    }
  }
}

bool CanQuantize(DType type) {
  switch (type) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ8_0:
    case DType::kQ4_K:
    case DType::kQ6_K:
      return true;
    default:
      return false;
  }
}

Status QuantizeRow(DType type, const float* src, void* dst, int64_t n) {
  if (!CanQuantize(type)) {
    return UnimplementedError("no reference quantizer for {}", DTypeLabel(type));
  }
  const DTypeTraits& traits = Traits(type);
  if (n < 0 || n % traits.block_size != 0) {
    return InvalidArgumentError(
        "cannot quantize {} elements to {}: need a non-negative "
        "multiple of the block size {}",
        n, traits.name, traits.block_size);
  }
  switch (type) {
    case DType::kF32:
      QuantizeRowF32(src, static_cast<float*>(dst), n);
      break;
    case DType::kF16:
      QuantizeRowF16(src, static_cast<uint16_t*>(dst), n);
      break;
    case DType::kBF16:
      QuantizeRowBF16(src, static_cast<uint16_t*>(dst), n);
      break;
    case DType::kQ4_0:
      QuantizeRowQ4_0(src, static_cast<BlockQ4_0*>(dst), n);
      break;
    case DType::kQ4_1:
      QuantizeRowQ4_1(src, static_cast<BlockQ4_1*>(dst), n);
      break;
    case DType::kQ5_0:
      QuantizeRowQ5_0(src, static_cast<BlockQ5_0*>(dst), n);
      break;
    case DType::kQ5_1:
      QuantizeRowQ5_1(src, static_cast<BlockQ5_1*>(dst), n);
      break;
    case DType::kQ8_0:
      QuantizeRowQ8_0(src, static_cast<BlockQ8_0*>(dst), n);
      break;
    case DType::kQ4_K:
      QuantizeRowQ4_K(src, static_cast<BlockQ4_K*>(dst), n);
      break;
    case DType::kQ6_K:
      QuantizeRowQ6_K(src, static_cast<BlockQ6_K*>(dst), n);
      break;
    default:
      break;  // excluded by CanQuantize above
  }
  return Status::Ok();
}

}  // namespace ferry
