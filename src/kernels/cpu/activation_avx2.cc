// GeluTanhF16Mul's table lookup with F16C and AVX2: 8 inputs rounded to fp16 in one instruction
// (round to nearest even, as FloatToFp16), their table entries gathered; SiluMul's
// x / (1 + e^-x) 8 at a time with ExpAvx2. Compiled with -mavx2 -mfma -mf16c; called only when
// the CPU has them (activation.cc checks). Calls nothing inline from shared headers but
// exp_avx2.h, whose functions have internal linkage (see matmul_internal.h for why).
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/exp_avx2.h"

namespace ferry::cpu_internal {

// gate[i] = (gate[i] <= -10 ? 0 : gate[i] >= 10 ? gate[i] : table[fp16 bits of gate[i]]) * up[i]
// for i < n rounded down to a multiple of 8; returns that count (the caller does the rest).
int64_t GeluTableMulAvx2(const float* table, float* gate, const float* up, int64_t n) {
  const __m256 lo = _mm256_set1_ps(-10.0f), hi = _mm256_set1_ps(10.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    const __m256i idx = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    __m256 a = _mm256_i32gather_ps(table, idx, 4);
    a = _mm256_blendv_ps(a, x, _mm256_cmp_ps(x, hi, _CMP_GE_OQ));
    a = _mm256_blendv_ps(a, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LE_OQ));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(a, _mm256_loadu_ps(up + i)));
  }
  return i;
}

// gate[i] = gate[i] / (1 + e^-gate[i]) * up[i] for i < n rounded down to a multiple of 8;
// returns that count (the caller does the rest with the same formula per element).
int64_t SiluMulAvx2(float* gate, const float* up, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    const __m256 e = ExpAvx2(_mm256_xor_ps(x, sign));
    const __m256 silu = _mm256_div_ps(x, _mm256_add_ps(one, e));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  return i;
}

// One element as SiluMulAvx2 computes it (for the tail of a buffer).
float SiluMulOneAvx2(float x, float up) {
  const float e = _mm256_cvtss_f32(ExpAvx2(_mm256_set1_ps(-x)));
  return x / (1.0f + e) * up;
}

}  // namespace ferry::cpu_internal
