#include "kernels/ref/ops.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "kernels/ref/dequantize.h"
#include "kernels/ref/quantize.h"
#include "tensor/fp16.h"

namespace ferry {
namespace {
constexpr float kPi = std::numbers::pi_v<float>;
}  // namespace

DType ActivationType(DType w) {
  switch (w) {
    case DType::kQ4_0:
    case DType::kQ5_0:
    case DType::kQ8_0:
    case DType::kQ4_1:
    case DType::kQ5_1: return DType::kQ8_0;
    case DType::kQ2_K:
    case DType::kQ3_K:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K: return DType::kQ8_K;
    case DType::kF16: return DType::kF16;
    case DType::kBF16: return DType::kBF16;
    default: return DType::kF32;
  }
}

namespace {

void RoundQ8K(float* x, int64_t n) {
  for (int64_t b = 0; b < n; b += kQK_K) {
    float* v = x + b;
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < kQK_K; ++i) {
      if (std::fabs(v[i]) > amax) {
        amax = std::fabs(v[i]);
        max = v[i];
      }
    }
    if (amax == 0.0f) {
      for (int i = 0; i < kQK_K; ++i) v[i] = 0.0f;
      continue;
    }
    const float iscale = -127.0f / max;
    const float d = 1.0f / iscale;
    for (int i = 0; i < kQK_K; ++i) {
      float q = std::nearbyint(iscale * v[i]);
      if (q > 127.0f) q = 127.0f;
      v[i] = d * q;
    }
  }
}

// Q8_0 (also Q8_1's values) as llama.cpp's x86 CPU backend quantizes activations
// (quantize_row_q8_0 / quantize_row_q8_1 with AVX/AVX2, and the activation packing of the
// repacked Q4_0 path): per 32 values, d = amax / 127 is stored as fp16, but the values are
// scaled by id = 127 / amax (not 1 / d) and rounded half to even. ggml's reference quantizer
// (QuantizeRowQ8_0: id = 1 / d, half away from zero) picks a different integer whenever x * id
// lies within an ulp of .5 (seen on the first layer of gemma-3-270m: 52.500004 vs 52.5), and one
// such flip moves the logits by ~1% a few layers later. (ggml's generic and ARM paths use 1 / d.)
void RoundQ8_0(float* x, int64_t n) {
  for (int64_t b = 0; b < n; b += 32) {
    float* v = x + b;
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float d = Fp16ToFloat(FloatToFp16(amax / 127.0f));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < 32; ++i) v[i] = d * std::nearbyint(v[i] * id);
  }
}

}  // namespace

Status RoundActivationsRef(DType w, float* x, int64_t n_tok, int64_t n) {
  DType a = ActivationType(w);
  if (a == DType::kF32) return Status::Ok();
  const int64_t total = n_tok * n;
  if (a == DType::kF16) {
    for (int64_t i = 0; i < total; ++i) x[i] = Fp16ToFloat(FloatToFp16(x[i]));
    return Status::Ok();
  }
  if (a == DType::kBF16) {
    for (int64_t i = 0; i < total; ++i) x[i] = Bf16ToFloat(FloatToBf16(x[i]));
    return Status::Ok();
  }
  const int64_t block = Traits(a).block_size;
  if (n % block != 0) {
    return InvalidArgumentError("activation rows of {} are not a multiple of {}", n, block);
  }
  if (a == DType::kQ8_K) {
    RoundQ8K(x, total);
    return Status::Ok();
  }
  RoundQ8_0(x, total);
  return Status::Ok();
}

Status MatMulRef(const WeightMatrix& w, const float* x_in, int64_t n_tok, float* y) {
  std::vector<float> xr(x_in, x_in + n_tok * w.cols);
  FERRY_RETURN_IF_ERROR(RoundActivationsRef(w.type, xr.data(), n_tok, w.cols));
  const float* x = xr.data();
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    FERRY_RETURN_IF_ERROR(DequantizeRow(w.type, w.Row(r), row.data(), w.cols));
    for (int64_t t = 0; t < n_tok; ++t) {
      const float* xt = x + t * w.cols;
      double sum = 0.0;
      for (int64_t i = 0; i < w.cols; ++i) sum += static_cast<double>(row[i]) * xt[i];
      y[t * w.rows + r] = static_cast<float>(sum);
    }
  }
  return Status::Ok();
}

Status GetRowRef(const WeightMatrix& w, int64_t r, float* out) {
  if (r < 0 || r >= w.rows) {
    return OutOfRangeError("row {} outside a matrix of {} rows", r, w.rows);
  }
  return DequantizeRow(w.type, w.Row(r), out, w.cols);
}

void RmsNormRef(const float* x, const float* w, float* y, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(n)) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = w ? (x[i] * scale) * w[i] : x[i] * scale;
}

RopeYarnDims RopeYarnCorrDims(const RopeParams& p) {
  const float n_rot = static_cast<float>(p.n_rot);
  // The pair index at which the rotation count over n_ctx_orig positions equals `turns`.
  auto corr_dim = [&](float turns) {
    return n_rot * std::log(static_cast<float>(p.n_ctx_orig) / (turns * 2.0f * kPi)) /
           (2.0f * std::log(p.base));
  };
  RopeYarnDims d;
  d.lo = std::max(0.0f, std::floor(corr_dim(p.beta_fast)));
  d.hi = std::min(n_rot - 1.0f, std::ceil(corr_dim(p.beta_slow)));
  return d;
}

float RopeYarnRamp(RopeYarnDims dims, int64_t i) {
  const float y = (static_cast<float>(i) - dims.lo) / std::max(0.001f, dims.hi - dims.lo);
  return 1.0f - std::min(1.0f, std::max(0.0f, y));
}

void RopeAngles(int64_t pos, const RopeParams& p, float* cs) {
  const int64_t half = p.n_rot / 2;
  const bool yarn = p.ext_factor != 0.0f;
  const RopeYarnDims dims = yarn ? RopeYarnCorrDims(p) : RopeYarnDims{};
  float mscale = p.attn_factor;
  if (yarn) mscale *= 1.0f + 0.1f * std::log(1.0f / p.freq_scale);
  for (int64_t i = 0; i < half; ++i) {
    float theta_e = static_cast<float>(pos) *
                    std::pow(p.base, -2.0f * static_cast<float>(i) / static_cast<float>(p.n_rot));
    if (p.freq_factors != nullptr) theta_e /= p.freq_factors[i];
    float theta = p.freq_scale * theta_e;
    if (yarn) {
      const float mix = RopeYarnRamp(dims, i) * p.ext_factor;
      theta = theta * (1.0f - mix) + theta_e * mix;
    }
    cs[2 * i] = std::cos(theta) * mscale;
    cs[2 * i + 1] = std::sin(theta) * mscale;
  }
}

void RopeApply(float* x, int64_t n_heads, int64_t head_dim, const float* cs, const RopeParams& p) {
  const int64_t half = p.n_rot / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float c = cs[2 * i], s = cs[2 * i + 1];
    for (int64_t h = 0; h < n_heads; ++h) {
      float* xh = x + h * head_dim;
      const int64_t a = p.neox ? i : 2 * i;
      const int64_t b = p.neox ? i + half : 2 * i + 1;
      const float xa = xh[a], xb = xh[b];
      xh[a] = xa * c - xb * s;
      xh[b] = xa * s + xb * c;
    }
  }
}

void RopeRef(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const RopeParams& p) {
  std::vector<float> cs(static_cast<size_t>(p.n_rot));
  RopeAngles(pos, p, cs.data());
  RopeApply(x, n_heads, head_dim, cs.data(), p);
}

void SoftmaxRef(float* x, int64_t n) {
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = std::max(max, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = (x[i] == -INFINITY) ? 0.0f : std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

float SiluRef(float x) { return x / (1.0f + std::exp(-x)); }

float GeluTanhRef(float x) {
  constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
  constexpr float kCoef = 0.044715f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + kCoef * x * x)));
}

float GeluTanhF16Ref(float x) {
  if (x <= -10.0f) return 0.0f;
  if (x >= 10.0f) return x;
  return Fp16ToFloat(FloatToFp16(GeluTanhRef(Fp16ToFloat(FloatToFp16(x)))));
}

}  // namespace ferry
