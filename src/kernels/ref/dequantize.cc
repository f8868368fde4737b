#include "kernels/ref/dequantize.h"

#include <cstring>
#include <string>

#include "tensor/fp16.h"

namespace ferry {
namespace {

// Number of blocks in a row of n elements with `block` elements per block.
inline int64_t Blocks(int64_t n, int block) { return n / block; }

// Name for messages, also for ids outside the DType table.
// The fifth bits of a Q5_0/Q5_1 block: bit e belongs to element e.
inline uint32_t HighBits(const uint8_t qh[4]) {
  return static_cast<uint32_t>(qh[0]) | static_cast<uint32_t>(qh[1]) << 8 |
         static_cast<uint32_t>(qh[2]) << 16 | static_cast<uint32_t>(qh[3]) << 24;
}

// The 5-bit quant (0..31) of element e of a Q5_0/Q5_1 block.
inline int Quant5(const uint8_t* qs, uint32_t qh, int e) {
  const int nibble = e < kQK4_0 / 2 ? (qs[e] & 15) : (qs[e - kQK4_0 / 2] >> 4);
  return nibble | static_cast<int>(((qh >> e) & 1u) << 4);
}

}  // namespace

void DequantizeRowF32(const float* src, float* dst, int64_t n) {
  if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void DequantizeRowF16(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFloat(src[i]);
}

void DequantizeRowBF16(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(src[i]);
}

void DequantizeRowQ4_0(const BlockQ4_0* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < Blocks(n, kQK4_0); ++b) {
    const BlockQ4_0& block = src[b];
    const float d = Fp16ToFloat(block.d);
    float* y = dst + b * kQK4_0;
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      const int q_low = (block.qs[j] & 15) - 8;
      const int q_high = (block.qs[j] >> 4) - 8;
      y[j] = d * static_cast<float>(q_low);
      y[j + kQK4_0 / 2] = d * static_cast<float>(q_high);
    }
  }
}

void DequantizeRowQ4_1(const BlockQ4_1* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < Blocks(n, kQK4_0); ++b) {
    const BlockQ4_1& block = src[b];
    const float d = Fp16ToFloat(block.d);
    const float m = Fp16ToFloat(block.m);
    float* y = dst + b * kQK4_0;
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      const int q_low = block.qs[j] & 15;
      const int q_high = block.qs[j] >> 4;
      y[j] = d * static_cast<float>(q_low) + m;
      y[j + kQK4_0 / 2] = d * static_cast<float>(q_high) + m;
    }
  }
}

void DequantizeRowQ5_0(const BlockQ5_0* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < Blocks(n, kQK4_0); ++b) {
    const BlockQ5_0& block = src[b];
    const float d = Fp16ToFloat(block.d);
    const uint32_t qh = HighBits(block.qh);
    float* y = dst + b * kQK4_0;
    for (int e = 0; e < kQK4_0; ++e) {
      y[e] = d * static_cast<float>(Quant5(block.qs, qh, e) - 16);
    }
  }
}

void DequantizeRowQ5_1(const BlockQ5_1* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < Blocks(n, kQK4_0); ++b) {
    const BlockQ5_1& block = src[b];
    const float d = Fp16ToFloat(block.d);
    const float m = Fp16ToFloat(block.m);
    const uint32_t qh = HighBits(block.qh);
    float* y = dst + b * kQK4_0;
    for (int e = 0; e < kQK4_0; ++e) {
      y[e] = d * static_cast<float>(Quant5(block.qs, qh, e)) + m;
    }
  }
}

void DequantizeRowQ8_0(const BlockQ8_0* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < Blocks(n, kQK4_0); ++b) {
    const BlockQ8_0& block = src[b];
    const float d = Fp16ToFloat(block.d);
    float* y = dst + b * kQK4_0;
    for (int e = 0; e < kQK4_0; ++e) y[e] = d * static_cast<float>(block.qs[e]);
  }
}

void DequantizeRowQ2_K(const BlockQ2_K* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < Blocks(n, kQK_K); ++b) {
    const BlockQ2_K& block = src[b];
    const float d = Fp16ToFloat(block.d);
    const float dmin = Fp16ToFloat(block.dmin);
    float* y = dst + b * kQK_K;
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, j = (e / 32) % 4, l = e % 32;
      const int q = (block.qs[32 * h + l] >> (2 * j)) & 3;
      const int sc = block.scales[e / 16];
      const float group_scale = d * static_cast<float>(sc & 15);
      const float group_min = dmin * static_cast<float>(sc >> 4);
      y[e] = group_scale * static_cast<float>(q) - group_min;
    }
  }
}

void DequantizeRowQ3_K(const BlockQ3_K* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < Blocks(n, kQK_K); ++b) {
    const BlockQ3_K& block = src[b];
    const float d = Fp16ToFloat(block.d);
    float* y = dst + b * kQK_K;
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, j = (e / 32) % 4, l = e % 32;
      const int q_low = (block.qs[32 * h + l] >> (2 * j)) & 3;
      const int high_bit = (block.hmask[l] >> (4 * h + j)) & 1;
      const int q = q_low - (high_bit ? 0 : 4);
      const float group_scale = d * static_cast<float>(UnpackScaleQ3_K(block.scales, e / 16) - 32);
      y[e] = group_scale * static_cast<float>(q);
    }
  }
}

void DequantizeRowQ4_K(const BlockQ4_K* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < Blocks(n, kQK_K); ++b) {
    const BlockQ4_K& block = src[b];
    const float d = Fp16ToFloat(block.d);
    const float dmin = Fp16ToFloat(block.dmin);
    float* y = dst + b * kQK_K;
    for (int g = 0; g < 8; ++g) {
      int sc, mn;
      UnpackScaleMinK4(block.scales, g, &sc, &mn);
      const float group_scale = d * static_cast<float>(sc);
      const float group_min = dmin * static_cast<float>(mn);
      const uint8_t* qs = block.qs + 32 * (g / 2);
      const int shift = 4 * (g % 2);
      for (int l = 0; l < 32; ++l) {
        const int q = (qs[l] >> shift) & 15;
        y[32 * g + l] = group_scale * static_cast<float>(q) - group_min;
      }
    }
  }
}

void DequantizeRowQ5_K(const BlockQ5_K* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < Blocks(n, kQK_K); ++b) {
    const BlockQ5_K& block = src[b];
    const float d = Fp16ToFloat(block.d);
    const float dmin = Fp16ToFloat(block.dmin);
    float* y = dst + b * kQK_K;
    for (int g = 0; g < 8; ++g) {
      int sc, mn;
      UnpackScaleMinK4(block.scales, g, &sc, &mn);
      const float group_scale = d * static_cast<float>(sc);
      const float group_min = dmin * static_cast<float>(mn);
      const uint8_t* qs = block.qs + 32 * (g / 2);
      const int shift = 4 * (g % 2);
      for (int l = 0; l < 32; ++l) {
        const int q = ((qs[l] >> shift) & 15) | (((block.qh[l] >> g) & 1) << 4);
        y[32 * g + l] = group_scale * static_cast<float>(q) - group_min;
      }
    }
  }
}

void DequantizeRowQ6_K(const BlockQ6_K* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < Blocks(n, kQK_K); ++b) {
    const BlockQ6_K& block = src[b];
    const float d = Fp16ToFloat(block.d);
    float* y = dst + b * kQK_K;
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, j = (e / 32) % 4, l = e % 32;
      const uint8_t ql = block.ql[64 * h + l + 32 * (j & 1)];
      const int q_low = j < 2 ? (ql & 15) : (ql >> 4);
      const int q_high = (block.qh[32 * h + l] >> (2 * j)) & 3;
      const int q = (q_low | (q_high << 4)) - 32;
      const float group_scale = d * static_cast<float>(block.scales[e / 16]);
      y[e] = group_scale * static_cast<float>(q);
    }
  }
}

bool CanDequantize(DType type) {
  switch (type) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ8_0:
    case DType::kQ2_K:
    case DType::kQ3_K:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return true;
    default:
      return false;
  }
}

Status DequantizeRow(DType type, const void* src, float* dst, int64_t n) {
  if (!CanDequantize(type)) {
    return UnimplementedError("no reference dequantization kernel for {}", DTypeLabel(type));
  }
  const DTypeTraits& traits = Traits(type);
  if (n < 0 || n % traits.block_size != 0) {
    return InvalidArgumentError(
        "cannot dequantize {} elements of {}: need a non-negative "
        "multiple of the block size {}",
        n, traits.name, traits.block_size);
  }
  switch (type) {
    case DType::kF32:
      DequantizeRowF32(static_cast<const float*>(src), dst, n);
      break;
    case DType::kF16:
      DequantizeRowF16(static_cast<const uint16_t*>(src), dst, n);
      break;
    case DType::kBF16:
      DequantizeRowBF16(static_cast<const uint16_t*>(src), dst, n);
      break;
    case DType::kQ4_0:
      DequantizeRowQ4_0(static_cast<const BlockQ4_0*>(src), dst, n);
      break;
    case DType::kQ4_1:
      DequantizeRowQ4_1(static_cast<const BlockQ4_1*>(src), dst, n);
      break;
    case DType::kQ5_0:
      DequantizeRowQ5_0(static_cast<const BlockQ5_0*>(src), dst, n);
      break;
    case DType::kQ5_1:
      DequantizeRowQ5_1(static_cast<const BlockQ5_1*>(src), dst, n);
      break;
    case DType::kQ8_0:
      DequantizeRowQ8_0(static_cast<const BlockQ8_0*>(src), dst, n);
      break;
    case DType::kQ2_K:
      DequantizeRowQ2_K(static_cast<const BlockQ2_K*>(src), dst, n);
      break;
    case DType::kQ3_K:
      DequantizeRowQ3_K(static_cast<const BlockQ3_K*>(src), dst, n);
      break;
    case DType::kQ4_K:
      DequantizeRowQ4_K(static_cast<const BlockQ4_K*>(src), dst, n);
      break;
    case DType::kQ5_K:
      DequantizeRowQ5_K(static_cast<const BlockQ5_K*>(src), dst, n);
      break;
    case DType::kQ6_K:
      DequantizeRowQ6_K(static_cast<const BlockQ6_K*>(src), dst, n);
      break;
    default:
      break;  // excluded by CanDequantize above
  }
  return Status::Ok();
}

}  // namespace ferry
