#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string_view>
#include <vector>

#include "kernels/cpu/matmul_internal.h"
#include "tensor/fp16.h"

namespace ferry {
namespace {

using cpu_internal::Activations;
using cpu_internal::KernelSet;
using cpu_internal::RowsKernel;
using cpu_internal::WeightRows;

// The most capable kernel set FERRY_CPU_KERNELS allows: 2 = AVX-512 VNNI ("best", "avx512"
// or unset), 1 = AVX2 ("avx2"), 0 = portable ("portable"). Read once, at first use, so that
// every binary (the test programs too) honours it; an unknown value is ignored with a warning
// (`ferry` itself rejects it first, in settings.cc).
int KernelLimit() {
  static const int limit = [] {
    const char* v = std::getenv("FERRY_CPU_KERNELS");
    const std::string_view s = v == nullptr ? "" : v;
    if (s.empty() || s == "best" || s == "avx512") return 2;
    if (s == "avx2") return 1;
    if (s == "portable") return 0;
    std::fprintf(stderr,
                 "ferry: FERRY_CPU_KERNELS=%s is not best, avx512, avx2 or portable; using the "
                 "best kernels\n",
                 v);
    return 2;
  }();
  return limit;
}

bool DetectAvx2() {
#if defined(__x86_64__) && defined(FERRY_HAVE_AVX2_KERNELS)
  __builtin_cpu_init();
  return KernelLimit() >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool DetectAvx512() {
#if defined(__x86_64__) && defined(FERRY_HAVE_AVX2_KERNELS)
  __builtin_cpu_init();
  return KernelLimit() >= 2 && DetectAvx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

const KernelSet& Kernels(KernelPath path) {
  static const KernelSet* avx2 =
      DetectAvx2() ? cpu_internal::Avx2Kernels() : &cpu_internal::PortableKernels();
  static const KernelSet* best = DetectAvx512() ? cpu_internal::Avx512Kernels() : avx2;
  switch (path) {
    case KernelPath::kPortable: return cpu_internal::PortableKernels();
    case KernelPath::kAvx2: return *avx2;
    case KernelPath::kBest: break;
  }
  return *best;
}

// Tokens per activation-quantization task: quantizing is cheap next to the products, so it is
// split over threads only for long batches.
constexpr int64_t kQuantizeTokensPerTask = 8;

constexpr uint64_t kWorkspaceAlign = 64;
uint64_t RoundUp(uint64_t n) { return (n + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }

// Where the parts of a MatMul workspace go: [buf][block_d][block_s][qs][corr][sum], each
// rounded to 64 bytes (qs, corr, sum: Q8_0 activations only: the blocks' int8 values
// contiguous per token, -128 x the sum of each four of them, and each block's sum).
struct WorkspaceLayout {
  uint64_t buf_bytes = 0;  // quantized activation rows (unrounded)
  uint64_t d_offset = 0, s_offset = 0, qs_offset = 0, corr_offset = 0, sum_offset = 0;
  uint64_t total = 0;
};

WorkspaceLayout LayoutFor(DType w_type, int64_t cols, int64_t n_tok) {
  WorkspaceLayout l;
  if (cols <= 0 || n_tok <= 0 || !MatMulSupports(w_type)) return l;
  const uint64_t n = static_cast<uint64_t>(n_tok), c = static_cast<uint64_t>(cols);
  switch (ActivationType(w_type)) {
    case DType::kF16:
    case DType::kBF16:
      l.buf_bytes = n * c * sizeof(uint16_t);
      l.total = RoundUp(l.buf_bytes);
      break;
    case DType::kQ8_0: {
      if (cols % kQK4_0 != 0) return l;
      const uint64_t nb = n * (c / kQK4_0);
      l.buf_bytes = nb * sizeof(BlockQ8_0);
      l.d_offset = RoundUp(l.buf_bytes);
      l.s_offset = l.d_offset + RoundUp(nb * sizeof(float));
      l.qs_offset = l.s_offset + RoundUp(nb * sizeof(float));
      l.corr_offset = l.qs_offset + RoundUp(n * c);
      l.sum_offset = l.corr_offset + RoundUp(n * (c / 4) * sizeof(int32_t));
      l.total = l.sum_offset + RoundUp(nb * sizeof(int32_t));
      break;
    }
    case DType::kQ8_K:
      if (cols % kQK_K != 0) return l;
      l.buf_bytes = n * (c / kQK_K) * sizeof(BlockQ8_K);
      l.total = RoundUp(l.buf_bytes);
      break;
    default:
      break;  // f32 activations are used as given
  }
  return l;
}

Status MatMulImpl(const WeightMatrix& w, const float* x, int64_t n_tok, float* y,
                  ThreadPool* pool, uint8_t* workspace, uint64_t workspace_bytes,
                  KernelPath path);

}  // namespace

#if !defined(FERRY_HAVE_AVX2_KERNELS)
namespace cpu_internal {
const KernelSet* Avx2Kernels() { return nullptr; }
const KernelSet* Avx512Kernels() { return nullptr; }
}  // namespace cpu_internal
#endif

bool CpuHasAvx512Kernels() {
  static const bool has = DetectAvx512();
  return has;
}

bool CpuHasAvx2Kernels() {
  static const bool has = DetectAvx2();
  return has;
}

const char* CpuKernelsName() {
  return CpuHasAvx512Kernels() ? "avx512-vnni" : CpuHasAvx2Kernels() ? "avx2" : "portable";
}

bool MatMulUsesPackedWeights(DType type) {
  return Kernels(KernelPath::kBest).packed_kernel(type) != nullptr;
}

bool MatMulSupports(DType w) { return cpu_internal::PortableKernels().rows_kernel(w) != nullptr; }

void QuantizeActivationsQ8_0(const float* x, int64_t n, BlockQ8_0* out, KernelPath path) {
  std::vector<float> d(static_cast<size_t>(n / kQK4_0)), s(d.size());
  Kernels(path).quantize_q8_0(x, n, out, d.data(), s.data());
}

void QuantizeActivationsQ8_K(const float* x, int64_t n, BlockQ8_K* out, KernelPath path) {
  Kernels(path).quantize_q8_k(x, n, out);
}

uint64_t MatMulWorkspaceBytes(DType w_type, int64_t cols, int64_t n_tok) {
  return LayoutFor(w_type, cols, n_tok).total;
}

Status MatMul(const WeightMatrix& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool,
              KernelPath path) {
  // Workspace for this call only; uint64_t storage is 8-byte aligned, the parts need 4.
  const uint64_t bytes = MatMulWorkspaceBytes(w.type, w.cols, n_tok);
  std::vector<uint64_t> storage((bytes + 7) / 8);
  return MatMulImpl(w, x, n_tok, y, pool, reinterpret_cast<uint8_t*>(storage.data()), bytes,
                    path);
}

Status MatMul(const WeightMatrix& w, const float* x, int64_t n_tok, float* y, ThreadPool* pool,
              std::span<uint8_t> workspace, KernelPath path) {
  if (reinterpret_cast<uintptr_t>(workspace.data()) % kWorkspaceAlign != 0) {
    return InvalidArgumentError("MatMul: the workspace is not {}-byte aligned", kWorkspaceAlign);
  }
  return MatMulImpl(w, x, n_tok, y, pool, workspace.data(), workspace.size(), path);
}

namespace {

Status MatMulImpl(const WeightMatrix& w, const float* x, int64_t n_tok, float* y,
                  ThreadPool* pool, uint8_t* workspace, uint64_t workspace_bytes,
                  KernelPath path) {
  if (!w.present()) return InvalidArgumentError("MatMul with an absent weight");
  if (n_tok < 0 || w.cols < 0 || w.rows < 0) {
    return InvalidArgumentError("MatMul with negative sizes: n_tok {} cols {} rows {}", n_tok,
                                w.cols, w.rows);
  }
  const KernelSet& ks = Kernels(path);
  const RowsKernel kernel = ks.rows_kernel(w.type);
  if (kernel == nullptr) return MatMulRef(w, x, n_tok, y);
  FERRY_ASSIGN_OR_RETURN(const uint64_t row_bytes, RowBytes(w.type, static_cast<uint64_t>(w.cols)));
  if (row_bytes != w.row_bytes) {
    return InvalidArgumentError("MatMul: row_bytes {} for {} x {} {} (want {})", w.row_bytes,
                                w.rows, w.cols, DTypeName(w.type), row_bytes);
  }
  if (n_tok == 0 || w.rows == 0) return Status::Ok();

  // Activations, quantized once.
  const int64_t cols = w.cols;
  Activations a;
  a.type = ActivationType(w.type);
  a.n_tok = n_tok;
  a.cols = cols;
  const WorkspaceLayout layout = LayoutFor(w.type, cols, n_tok);
  if (workspace_bytes < layout.total) {
    return InvalidArgumentError("MatMul: workspace of {} bytes, {} x {} {} needs {}",
                                workspace_bytes, n_tok, cols, DTypeName(w.type), layout.total);
  }
  uint8_t* const buf = workspace;
  float* const block_d = reinterpret_cast<float*>(workspace + layout.d_offset);
  float* const block_s = reinterpret_cast<float*>(workspace + layout.s_offset);
  int8_t* const qs = reinterpret_cast<int8_t*>(workspace + layout.qs_offset);
  int32_t* const corr = reinterpret_cast<int32_t*>(workspace + layout.corr_offset);
  int32_t* const block_sum = reinterpret_cast<int32_t*>(workspace + layout.sum_offset);
  auto for_tokens = [&](const std::function<void(int64_t t)>& fn) {
    const int64_t tasks = (n_tok + kQuantizeTokensPerTask - 1) / kQuantizeTokensPerTask;
    ParallelFor(tasks > 1 ? pool : nullptr, tasks, [&](int64_t b, int64_t e) {
      const int64_t t_end = std::min(n_tok, e * kQuantizeTokensPerTask);
      for (int64_t t = b * kQuantizeTokensPerTask; t < t_end; ++t) fn(t);
    });
  };
  switch (a.type) {
    case DType::kF32:
      a.data = reinterpret_cast<const uint8_t*>(x);
      a.stride = static_cast<uint64_t>(cols) * sizeof(float);
      break;
    case DType::kF16:
    case DType::kBF16: {
      a.stride = static_cast<uint64_t>(cols) * sizeof(uint16_t);
      auto* h = reinterpret_cast<uint16_t*>(buf);
      const bool f16 = a.type == DType::kF16;
      for_tokens([&](int64_t t) {
        for (int64_t i = t * cols; i < (t + 1) * cols; ++i) {
          h[i] = f16 ? FloatToFp16(x[i]) : FloatToBf16(x[i]);
        }
      });
      a.data = buf;
      break;
    }
    case DType::kQ8_0: {
      const int64_t nb = cols / kQK4_0;
      a.stride = static_cast<uint64_t>(nb) * sizeof(BlockQ8_0);
      for_tokens([&](int64_t t) {
        auto* blocks = reinterpret_cast<BlockQ8_0*>(buf + t * a.stride);
        ks.quantize_q8_0(x + t * cols, cols, blocks, block_d + t * nb, block_s + t * nb);
        for (int64_t b = 0; b < nb; ++b) {
          std::memcpy(qs + t * cols + b * kQK4_0, blocks[b].qs, kQK4_0);
        }
        // -128 x the sum of each four consecutive values: with weights offset to unsigned
        // (w + 128), vpdpbusd started from this gives exactly sum(w * x) per lane.
        const int8_t* q = qs + t * cols;
        for (int64_t g = 0; g < cols / 4; ++g) {
          corr[t * (cols / 4) + g] =
              -128 * (int32_t{q[4 * g]} + q[4 * g + 1] + q[4 * g + 2] + q[4 * g + 3]);
        }
        for (int64_t b = 0; b < nb; ++b) {
          int32_t sum = 0;
          for (int64_t i = 0; i < kQK4_0; ++i) sum += q[b * kQK4_0 + i];
          block_sum[t * nb + b] = sum;
        }
      });
      a.data = buf;
      a.block_d = block_d;
      a.block_s = block_s;
      a.qs = qs;
      a.qs_corr = corr;
      a.qs_sum = block_sum;
      break;
    }
    case DType::kQ8_K: {
      a.stride = static_cast<uint64_t>(cols / kQK_K) * sizeof(BlockQ8_K);
      for_tokens([&](int64_t t) {
        ks.quantize_q8_k(x + t * cols, cols, reinterpret_cast<BlockQ8_K*>(buf + t * a.stride));
      });
      a.data = buf;
      break;
    }
    default:
      return InternalError("MatMul: no activation type for {}", DTypeName(w.type));
  }

  if (w.packed != nullptr) {
    const cpu_internal::PackedKernel packed = ks.packed_kernel(w.type);
    if (packed != nullptr && CanPackWeightRows(w.type, w.rows, w.cols)) {
      const WeightRows wr{w.type, static_cast<const uint8_t*>(w.packed), w.row_bytes, cols,
                          w.rows};
      ParallelFor(pool, w.rows / kPackRows,
                  [&](int64_t g0, int64_t g1) { packed(wr, g0, g1, a, y); });
      return Status::Ok();
    }
  }
  const WeightRows wr{w.type, static_cast<const uint8_t*>(w.data), w.row_bytes, cols, w.rows};
  ParallelFor(pool, w.rows, [&](int64_t r0, int64_t r1) { kernel(wr, r0, r1, a, y); });
  return Status::Ok();
}

}  // namespace

}  // namespace ferry
