#include "kernels/cpu/activation.h"

#include <array>

#include "kernels/cpu/matmul.h"
#include "kernels/ref/ops.h"
#include "tensor/fp16.h"

namespace ferry {

#if defined(FERRY_HAVE_AVX2_KERNELS)
namespace cpu_internal {
int64_t GeluTableMulAvx2(const float* table, float* gate, const float* up, int64_t n);
int64_t SiluMulAvx2(float* gate, const float* up, int64_t n);
float SiluMulOneAvx2(float x, float up);
}  // namespace cpu_internal
#endif

namespace {

// Elements per ParallelFor task granule: small buffers stay on the calling thread.
constexpr int64_t kGrain = 4096;

// GELU of every fp16 value rounded to fp16, indexed by its bits: GeluTanhF16Ref's value for
// any x in (-10, 10) that rounds to that fp16 value (an x just inside the cut-off may round
// to +-10, whose entry is therefore the formula's, not the cut-off's).
const std::array<float, 65536>& GeluTable() {
  static const std::array<float, 65536>* table = [] {
    static std::array<float, 65536> t;
    for (uint32_t h = 0; h < 65536; ++h) {
      t[h] = Fp16ToFloat(FloatToFp16(GeluTanhRef(Fp16ToFloat(static_cast<uint16_t>(h)))));
    }
    return &t;
  }();
  return *table;
}

template <typename Fn>
void ForChunks(int64_t n, ThreadPool* pool, const Fn& fn) {
  const int64_t tasks = (n + kGrain - 1) / kGrain;
  ParallelFor(tasks > 1 ? pool : nullptr, tasks, [&](int64_t b, int64_t e) {
    fn(b * kGrain, e * kGrain < n ? e * kGrain : n);
  });
}

}  // namespace

void GeluTanhF16Mul(float* gate, const float* up, int64_t n, ThreadPool* pool, KernelPath path) {
  const float* table = GeluTable().data();
#if defined(FERRY_HAVE_AVX2_KERNELS)
  const bool avx2 = path != KernelPath::kPortable && CpuHasAvx2Kernels();
#else
  const bool avx2 = false;
#endif
  ForChunks(n, pool, [&](int64_t i0, int64_t i1) {
#if defined(FERRY_HAVE_AVX2_KERNELS)
    if (avx2) i0 += cpu_internal::GeluTableMulAvx2(table, gate + i0, up + i0, i1 - i0);
#endif
    for (int64_t i = i0; i < i1; ++i) {
      const float x = gate[i];
      // As GeluTanhF16Ref: the table holds GELU of the fp16-rounded input, outside (-10, 10)
      // the function is 0 or x.
      const float a = x <= -10.0f ? 0.0f : x >= 10.0f ? x : table[FloatToFp16(x)];
      gate[i] = a * up[i];
    }
  });
}

void SiluMul(float* gate, const float* up, int64_t n, ThreadPool* pool, KernelPath path) {
#if defined(FERRY_HAVE_AVX2_KERNELS)
  if (path != KernelPath::kPortable && CpuHasAvx2Kernels()) {
    ForChunks(n, pool, [&](int64_t i0, int64_t i1) {
      i0 += cpu_internal::SiluMulAvx2(gate + i0, up + i0, i1 - i0);
      for (int64_t i = i0; i < i1; ++i) gate[i] = cpu_internal::SiluMulOneAvx2(gate[i], up[i]);
    });
    return;
  }
#endif
  ForChunks(n, pool, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) gate[i] = SiluRef(gate[i]) * up[i];
  });
}

}  // namespace ferry
