// exp(x) for 8 floats with AVX2 + FMA, for the softmax of attention_avx2.cc and the SiLU of
// activation_avx2.cc. Include ONLY from translation units compiled with -mavx2 -mfma (see
// matmul_internal.h): everything here has internal linkage, so no AVX2 code can be merged into
// code that runs on other CPUs.
//
// Method: x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2 (ln2 split in a high part
// exact in float and a low part, so r is exact to a few ulp), e^r by its Taylor polynomial of
// degree 7 (truncation error below 2e-9 relative on that interval, under float rounding), times
// 2^n built in the exponent bits. Inputs are clamped to [-87.3, 88]: the result stays a normal
// float (e^-87.3 = 1.2e-38 where the true value would be subnormal, e^88 = 1.65e38 where it
// would overflow); -inf gives exactly 0 and NaN gives NaN. Relative error against std::exp:
// a few ulp (activation_test and attention_test compare with the reference).
#ifndef FERRY_KERNELS_CPU_EXP_AVX2_H_
#define FERRY_KERNELS_CPU_EXP_AVX2_H_

#include <immintrin.h>

namespace ferry::cpu_internal {
namespace {

inline __m256 ExpAvx2(__m256 x) {
  const __m256 is_neg_inf = _mm256_cmp_ps(x, _mm256_set1_ps(-__builtin_inff()), _CMP_EQ_OQ);
  const __m256 is_nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // ln2 = 0.693145751953125 (exact in 16 bits) + 1.428606765330187e-06.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i scale =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), is_neg_inf);
  return _mm256_blendv_ps(y, x, is_nan);
}

}  // namespace
}  // namespace ferry::cpu_internal

#endif  // FERRY_KERNELS_CPU_EXP_AVX2_H_
