// Fast conversion between fp16 and f32 rows (the KV cache's f16 rows).
//
// ConvertF16ToF32 gives bitwise what Fp16ToFloat (tensor/fp16.h) gives for every non-NaN input
// (fp16 -> f32 is exact), and a NaN for every NaN input (F16C quiets signalling NaNs; the
// reference keeps their payload bits). AVX2/F16C when the CPU has it (CpuHasAvx2Kernels), else
// the reference loop.
//
// Thread-safety: a pure function over caller-owned buffers.
#ifndef FERRY_KERNELS_CPU_CONVERT_H_
#define FERRY_KERNELS_CPU_CONVERT_H_

#include <cstdint>

#include "kernels/cpu/matmul.h"

namespace ferry {

// src: [n] fp16 bits, dst: [n] f32; they must not overlap.
void ConvertF16ToF32(const uint16_t* src, float* dst, int64_t n,
                     KernelPath path = KernelPath::kBest);

// The other way (the f16 KV cache's writes): bitwise FloatToFp16 (round to nearest even,
// overflow to infinity, subnormals kept) for every non-NaN input, a NaN for a NaN.
// src: [n] f32, dst: [n] fp16 bits; they must not overlap.
void ConvertF32ToF16(const float* src, uint16_t* dst, int64_t n,
                     KernelPath path = KernelPath::kBest);

}  // namespace ferry

#endif  // FERRY_KERNELS_CPU_CONVERT_H_
