// Reference (scalar, readable) kernels of the transformer forward pass. They define what the
// fast kernels (kernels/cpu) must compute, and the forward pass in model/ uses them directly
// until a fast kernel exists.
//
// Thread-safety: pure functions over caller-owned buffers.
#ifndef FERRY_KERNELS_REF_OPS_H_
#define FERRY_KERNELS_REF_OPS_H_

#include <cstdint>

#include "base/status.h"
#include "tensor/dtype.h"

namespace ferry {

// A weight matrix in GGUF layout, used in place: `rows` rows of `cols` elements of `type`,
// row r at data + r * RowBytes(type, cols). (GGUF ne = [cols, rows].)
struct WeightMatrix {
  DType type = DType::kF32;
  const void* data = nullptr;  // null: the weight is absent (optional tensors)
  int64_t cols = 0;            // ne[0], the contiguous dimension
  int64_t rows = 1;            // ne[1] (times ne[2], ne[3] for higher-rank tensors)
  uint64_t row_bytes = 0;
  // Optional: the same weights in MatMul's packed layout (groups of kPackRows rows interleaved,
  // see PackWeightRows in kernels/cpu/matmul.h), rows * row_bytes bytes. MatMul reads it instead
  // of `data` where the chosen kernels have a packed kernel for the type; everything else
  // (row lookups, reference kernels) reads `data`, which stays valid.
  const void* packed = nullptr;

  bool present() const { return data != nullptr; }
  const uint8_t* Row(int64_t r) const {
    return static_cast<const uint8_t*>(data) + static_cast<uint64_t>(r) * row_bytes;
  }
};

// The type llama.cpp's CPU backend converts activations to before a dot product with a weight
// of type `w` (ggml's vec_dot_type): Q4_0/Q5_0/Q8_0 -> Q8_0, Q4_1/Q5_1 -> Q8_1 (same values as
// Q8_0), K-quants -> Q8_K, F16 -> F16, BF16 -> BF16, F32 -> F32.
DType ActivationType(DType w);

// Rounds x[n_tok, n] in place to the values it has after quantization to ActivationType(w)
// and back, as llama.cpp's x86 CPU backend does before its integer dot products.
// Q8_0: per 32 values, q = round-half-even(x * (127 / amax)), value = fp16(amax / 127) * q
// (this is not QuantizeRowQ8_0, which scales by 1 / d and rounds half away from zero).
// Q8_K: per 256 values, iscale = -127 / (the value of largest magnitude),
// q = min(127, round-half-even(iscale * x)), value = q / iscale with d = 1 / iscale kept in f32.
Status RoundActivationsRef(DType w, float* x, int64_t n_tok, int64_t n);

// y[t, r] = sum_i W[r, i] * x[t, i] for t < n_tok.
//   x: [n_tok, w.cols] f32, y: [n_tok, w.rows] f32.
// x is first rounded as by RoundActivationsRef (on a copy), then each weight row is dequantized
// to f32 once and the dot products accumulate in double. This matches llama.cpp's integer dot
// products up to float rounding of the dequantized weights (relative ~1e-6).
Status MatMulRef(const WeightMatrix& w, const float* x, int64_t n_tok, float* y);

// Dequantizes row r of w into out[w.cols] (embedding lookup).
Status GetRowRef(const WeightMatrix& w, int64_t r, float* out);

// y = x * w / sqrt(mean(x^2) + eps), sum of squares in double. w may be null (no weight).
// x, y: [n]; may alias.
void RmsNormRef(const float* x, const float* w, float* y, int64_t n, float eps);

// A rotary embedding: the parameters of ggml's rope_ext (ggml_rope_ext; computed by ggml-cpu's
// rope_yarn), with its meanings. YaRN: Peng et al., arXiv:2309.00071.
//
// Pair i (0 <= i < n_rot/2) at position p has the unscaled ("extrapolated") angle
//   theta_e = p * base^(-2i/n_rot) / freq_factors[i]
// and the interpolated angle s * theta_e, s = freq_scale. With ext_factor 0 (no scaling, linear)
// the angle is s * theta_e and cos/sin are multiplied by attn_factor. YaRN (ext_factor > 0) mixes
// the two per pair, theta = s * theta_e * (1 - r) + theta_e * r with r = ext_factor *
// RopeYarnRamp(i), so high-frequency pairs keep their angle and low-frequency pairs are
// interpolated, and multiplies cos/sin by attn_factor * (1 + 0.1 ln(1/s)).
struct RopeParams {
  int64_t n_rot = 0;        // rotated elements per head (even); the rest pass through unchanged
  bool neox = false;        // pairs (i, i + n_rot/2) (NEOX); else (2i, 2i+1) (NORM)
  float base = 10000.0f;    // frequency base b
  float freq_scale = 1.0f;  // s = 1 / rope.scaling.factor (linear and YaRN)
  const float* freq_factors = nullptr;  // [n_rot/2] per-pair divisors (rope_freqs), or null
  float ext_factor = 0.0f;              // YaRN mix: 1 for rope.scaling.type yarn, 0 otherwise
  float attn_factor = 1.0f;             // magnitude of cos and sin (before YaRN's own, see above)
  // YaRN's ramp (RopeYarnCorrDims): the context the model was trained at and the numbers of turns
  // over it that delimit the ramp. Unused when ext_factor is 0.
  int64_t n_ctx_orig = 0;
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
};

// YaRN's correction range, in pair indices: pair i turns n_ctx_orig * b^(-2i/n_rot) / (2 pi)
// times over the original context; `lo` is the pair that turns beta_fast times, rounded down and
// clamped at 0, `hi` the pair that turns beta_slow times, rounded up and clamped at n_rot - 1.
// Computed in float, as ggml does. Requires n_ctx_orig > 0, base > 1.
struct RopeYarnDims {
  float lo = 0.0f;
  float hi = 0.0f;
};
RopeYarnDims RopeYarnCorrDims(const RopeParams& p);

// YaRN's extrapolation weight of pair i: 1 up to `lo` (keep the unscaled angle), 0 from `hi` on
// (interpolate), linear in between: 1 - clamp((i - lo) / max(0.001, hi - lo), 0, 1).
float RopeYarnRamp(RopeYarnDims dims, int64_t i);

// In-place rotary embedding of one token's heads, x [n_heads, head_dim], at position pos:
// each pair (a, b) becomes (a cos - b sin, a sin + b cos) with the angle and magnitude above.
void RopeRef(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const RopeParams& p);

// RopeRef's two steps, so that a position's angles are computed once for every layer and for
// both q and k: RopeAngles writes cs[2i] = cos * magnitude and cs[2i + 1] = sin * magnitude of
// pair i (cs: [n_rot] floats); RopeApply rotates x with them. RopeRef(pos) is
// RopeApply(RopeAngles(pos)).
void RopeAngles(int64_t pos, const RopeParams& p, float* cs);
void RopeApply(float* x, int64_t n_heads, int64_t head_dim, const float* cs, const RopeParams& p);

// In-place softmax over x[n] (max-subtracted, f32 exp, sum in double).
void SoftmaxRef(float* x, int64_t n);

// SiLU(x) = x / (1 + e^-x).
float SiluRef(float x);
// GELU with the tanh approximation, computed in float.
float GeluTanhRef(float x);
// GELU as llama.cpp's CPU backend computes it: x <= -10 gives 0, x >= 10 gives x, otherwise x
// is rounded to fp16 and the result is fp16(GeluTanhRef(that)) (its 64K-entry table).
float GeluTanhF16Ref(float x);

}  // namespace ferry

#endif  // FERRY_KERNELS_REF_OPS_H_
