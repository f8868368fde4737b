#include "kernels/cpu/convert.h"

#include "tensor/fp16.h"

namespace ferry {
namespace cpu_internal {
#if defined(FERRY_HAVE_AVX2_KERNELS)
void ConvertF16ToF32Avx2(const uint16_t* src, float* dst, int64_t n);  // convert_avx2.cc
void ConvertF32ToF16Avx2(const float* src, uint16_t* dst, int64_t n);
#endif
}  // namespace cpu_internal

void ConvertF16ToF32(const uint16_t* src, float* dst, int64_t n, KernelPath path) {
#if defined(FERRY_HAVE_AVX2_KERNELS)
  if (path != KernelPath::kPortable && CpuHasAvx2Kernels()) {
    cpu_internal::ConvertF16ToF32Avx2(src, dst, n);
    return;
  }
#endif
  (void)path;
  for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFloat(src[i]);
}

void ConvertF32ToF16(const float* src, uint16_t* dst, int64_t n, KernelPath path) {
#if defined(FERRY_HAVE_AVX2_KERNELS)
  if (path != KernelPath::kPortable && CpuHasAvx2Kernels()) {
    cpu_internal::ConvertF32ToF16Avx2(src, dst, n);
    return;
  }
#endif
  (void)path;
  for (int64_t i = 0; i < n; ++i) dst[i] = FloatToFp16(src[i]);
}

}  // namespace ferry
