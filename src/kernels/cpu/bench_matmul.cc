// MatMul throughput: reference vs portable vs AVX2 vs best kernels (rows, and packed with
// PackWeightRows where the type has a packed layout), 1 and 2 threads, on matrices of the shapes
// and types of gemma3-270m Q4_K_M: the 262144 x 640 Q8_0 output/embedding matrix and 640 x 2048
// Q4_K, Q5_0 and Q6_K ffn_down matrices. Counters: GFLOP/s (2 * rows * cols * n_tok per call) and weight
// GB/s (the matrix's bytes per call).
//
//   ./bench_matmul [--benchmark_filter=Q4_K] [--benchmark_min_time=0.5]
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/cpu/matmul.h"
#include "kernels/ref/ops.h"
#include "tensor/fp16.h"

namespace ferry {
namespace {

struct Matrix {
  std::vector<uint8_t> bytes;
  std::vector<uint8_t> packed;  // empty without a packed layout
  WeightMatrix w;
};

// Random blocks with sane fp16 scales (d at offset d_off, dmin at dmin_off or -1).
std::unique_ptr<Matrix> MakeMatrix(DType type, int64_t rows, int64_t cols, int d_off, int dmin_off) {
  auto m = std::make_unique<Matrix>();
  const uint64_t row_bytes = RowBytes(type, static_cast<uint64_t>(cols)).value();
  m->bytes.resize(row_bytes * static_cast<uint64_t>(rows));
  std::mt19937_64 rng(1);
  for (size_t i = 0; i + 8 <= m->bytes.size(); i += 8) {
    const uint64_t r = rng();
    std::memcpy(&m->bytes[i], &r, 8);
  }
  const uint32_t bs = Traits(type).type_size;
  const uint16_t d = FloatToFp16(0.01f);
  for (size_t b = 0; b < m->bytes.size() / bs; ++b) {
    std::memcpy(&m->bytes[b * bs + d_off], &d, 2);
    if (dmin_off >= 0) std::memcpy(&m->bytes[b * bs + dmin_off], &d, 2);
  }
  m->w = {type, m->bytes.data(), cols, rows, row_bytes};
  if (CanPackWeightRows(type, rows, cols)) {
    m->packed.resize(m->bytes.size());
    if (!PackWeightRows(m->w, m->packed).ok()) m->packed.clear();
  }
  return m;
}

const Matrix& Get(int which) {
  static const auto q8 = MakeMatrix(DType::kQ8_0, 262144, 640, 0, -1);
  static const auto q4k = MakeMatrix(DType::kQ4_K, 640, 2048, 0, 2);
  static const auto q5 = MakeMatrix(DType::kQ5_0, 640, 2048, 0, -1);
  static const auto q6k = MakeMatrix(DType::kQ6_K, 640, 2048, 208, -1);
  return which == 0 ? *q8 : which == 1 ? *q4k : which == 2 ? *q5 : *q6k;
}

enum Impl { kRef = 0, kPortable = 1, kBest = 2, kAvx2 = 3, kPacked = 4, kPackedAvx2 = 5 };

// Args: matrix (0 = Q8_0 262144x640, 1 = Q4_K 640x2048, 2 = Q5_0 640x2048, 3 = Q6_K
// 640x2048), n_tok, impl (0 ref,
// 1 portable, 2 best, 3 avx2, 4 best with packed weights, 5 avx2 with packed weights), threads.
void BM_MatMul(benchmark::State& state) {
  const Matrix& src = Get(static_cast<int>(state.range(0)));
  const Impl impl = static_cast<Impl>(state.range(2));
  const bool packed = impl == kPacked || impl == kPackedAvx2;
  if (packed && src.packed.empty()) {
    state.SkipWithError("no packed layout");
    return;
  }
  Matrix m;
  m.w = src.w;
  if (packed) m.w.packed = src.packed.data();
  const int64_t n_tok = state.range(1);
  const int threads = static_cast<int>(state.range(3));
  std::vector<float> x(static_cast<size_t>(n_tok * m.w.cols));
  std::mt19937 rng(2);
  std::normal_distribution<float> normal;
  for (float& v : x) v = normal(rng);
  std::vector<float> y(static_cast<size_t>(n_tok * m.w.rows));
  ThreadPool pool(threads);
  for (auto _ : state) {
    Status s = impl == kRef ? MatMulRef(m.w, x.data(), n_tok, y.data())
                            : MatMul(m.w, x.data(), n_tok, y.data(), threads > 1 ? &pool : nullptr,
                                     impl == kPortable                        ? KernelPath::kPortable
                                     : impl == kAvx2 || impl == kPackedAvx2 ? KernelPath::kAvx2
                                                                            : KernelPath::kBest);
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * static_cast<double>(m.w.rows) * static_cast<double>(m.w.cols) *
                       static_cast<double>(n_tok);
  const double bytes = static_cast<double>(m.w.rows) * static_cast<double>(m.w.row_bytes);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["wGB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(DTypeName(m.w.type)) +
                 (impl == kRef ? " ref" : impl == kPortable ? " portable" : impl == kAvx2 ? " avx2"
                  : impl == kPacked ? " packed" : impl == kPackedAvx2 ? " avx2 packed" : " best"));
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"mat", "n_tok", "impl", "threads"});
  for (int mat : {0, 1, 2, 3}) {
    for (int n_tok : {1, 4, 32}) {
      b->Args({mat, n_tok, kRef, 1});
      for (int impl : {kPortable, kAvx2, kBest, kPacked, kPackedAvx2}) {
        // The AVX2 set packs the Q4_x / Q5_x types only.
        if (impl == kPackedAvx2 && mat != 2) continue;
        for (int threads : {1, 2}) b->Args({mat, n_tok, impl, threads});
      }
    }
  }
}
BENCHMARK(BM_MatMul)->Apply(Args)->Unit(benchmark::kMillisecond)->UseRealTime();

// The fixed cost of one ParallelFor over a 2-thread pool (empty work).
void BM_ParallelForOverhead(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    pool.ParallelFor(64, [](int64_t b, int64_t e) { benchmark::DoNotOptimize(b + e); });
  }
}
BENCHMARK(BM_ParallelForOverhead)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
}  // namespace ferry

BENCHMARK_MAIN();
