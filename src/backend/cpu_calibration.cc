#include "backend/cpu_calibration.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <fstream>
#include <string>
#include <thread>

#include <sys/mman.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "base/log.h"
#include "base/thread_pool.h"
#include "kernels/cpu/matmul.h"
#include "kernels/ref/quantize.h"

namespace ferry {
namespace {

// The synthetic weight matrix: [kRows, kCols], kCols a multiple of every block size (256).
constexpr int64_t kRows = 512;
constexpr int64_t kCols = 1024;
// Back-to-back calls per type in each round (the first may find the matrix in L3 only).
constexpr int kCallsPerRound = 3;

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// 64-byte aligned, zero-initialized bytes.
struct AlignedBytes {
  explicit AlignedBytes(size_t n) : storage(new uint8_t[n + 64]()) {
    const auto p = reinterpret_cast<uintptr_t>(storage.get());
    data = storage.get() + ((64 - p % 64) % 64);
    size = n;
  }
  std::unique_ptr<uint8_t[]> storage;
  uint8_t* data = nullptr;
  size_t size = 0;
};

// One type's synthetic problem: W [kRows, kCols] (one row quantized from a fixed pattern,
// copied to every row), x [kCols] (the same pattern), y [kRows], and MatMul's workspace.
struct Problem {
  explicit Problem(uint64_t row_bytes, DType type)
      : weights(row_bytes * static_cast<uint64_t>(kRows)),
        workspace(MatMulWorkspaceBytes(type, kCols, 1)),
        x(static_cast<size_t>(kCols)),
        y(static_cast<size_t>(kRows)) {}
  AlignedBytes weights;
  std::optional<AlignedBytes> packed;  // the packed copy, when MatMul reads this type packed
  AlignedBytes workspace;
  std::vector<float> x;
  std::vector<float> y;
  WeightMatrix w;
  double best_seconds = 0.0;  // the fastest call so far

  Status Call(ThreadPool& pool) {
    return MatMul(w, x.data(), 1, y.data(), &pool,
                  std::span<uint8_t>(workspace.data, workspace.size));
  }
};

StatusOr<std::unique_ptr<Problem>> MakeProblem(DType type) {
  FERRY_ASSIGN_OR_RETURN(const uint64_t row_bytes, RowBytes(type, static_cast<uint64_t>(kCols)));
  auto p = std::make_unique<Problem>(row_bytes, type);
  for (int64_t i = 0; i < kCols; ++i) {
    p->x[static_cast<size_t>(i)] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  }
  FERRY_RETURN_IF_ERROR(QuantizeRow(type, p->x.data(), p->weights.data, kCols));
  for (int64_t r = 1; r < kRows; ++r) {
    std::memcpy(p->weights.data + static_cast<uint64_t>(r) * row_bytes, p->weights.data,
                row_bytes);
  }
  p->w.type = type;
  p->w.data = p->weights.data;
  p->w.cols = kCols;
  p->w.rows = kRows;
  p->w.row_bytes = row_bytes;
  if (MatMulUsesPackedWeights(type) && CanPackWeightRows(type, kRows, kCols)) {
    p->packed.emplace(p->weights.size);
    FERRY_RETURN_IF_ERROR(
        PackWeightRows(p->w, std::span<uint8_t>(p->packed->data, p->packed->size)));
    p->w.packed = p->packed->data;
  }
  return p;
}

// Runnable threads of the whole machine now (procs_running of /proc/stat), or -1 when unknown.
int ProcsRunning() {
  std::ifstream in("/proc/stat");
  std::string key;
  while (in >> key) {
    if (key == "procs_running") {
      int n = -1;
      in >> n;
      return n;
    }
    in.ignore(1 << 20, '\n');
  }
  return -1;
}

#if defined(__x86_64__)
// As SumWords with 256-bit loads (on this file's baseline, x86-64 without AVX, the scalar loop
// reads ~25% below what decode's vector kernels get from the same memory). Only called when
// the CPU has AVX2. p: 32-byte aligned.
__attribute__((target("avx2"))) uint64_t SumWordsAvx2(const uint64_t* p, uint64_t n) {
  const auto* v = reinterpret_cast<const __m256i*>(p);
  __m256i s[8];
  for (__m256i& x : s) x = _mm256_setzero_si256();
  uint64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 8; ++k) s[k] = _mm256_add_epi64(s[k], _mm256_load_si256(v + i / 4 + k));
  }
  for (int k = 1; k < 8; ++k) s[0] = _mm256_add_epi64(s[0], s[k]);
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s[0]);
  uint64_t total = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) total += p[i];
  return total;
}
#endif

// Sum of the 64-bit words [begin, end): eight independent chains, so the loop is bound by the
// loads, not by the additions.
uint64_t SumWords(const uint64_t* p, uint64_t n) {
  uint64_t s[8] = {};
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) s[k] += p[i + static_cast<uint64_t>(k)];
  }
  for (; i < n; ++i) s[0] += p[i];
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

}  // namespace

StatusOr<CpuCalibration> CalibrateCpuMatmul(const CpuCalibrationOptions& options) {
  if (options.types.empty()) return InvalidArgumentError("calibration: no weight types");
  for (DType t : options.types) {
    if (!CanQuantize(t) || !MatMulSupports(t)) {
      return InvalidArgumentError("calibration: no synthetic matrix for {}", DTypeLabel(t));
    }
  }
  if (std::find(options.types.begin(), options.types.end(), options.representative) ==
      options.types.end()) {
    return InvalidArgumentError("calibration: the representative type {} is not timed",
                                DTypeLabel(options.representative));
  }
  if (options.num_threads < 0 || options.num_threads > 1024) {
    return InvalidArgumentError("calibration: num_threads {} is out of range",
                                options.num_threads);
  }
  if (!std::isfinite(options.budget_seconds) || options.budget_seconds < 0.0) {
    return InvalidArgumentError("calibration: budget {} s is not a duration",
                                options.budget_seconds);
  }
  const Clock::time_point start = Clock::now();
  CpuCalibration c;
  c.num_threads = CapThreads(options.num_threads);
  ThreadPool pool(c.num_threads);
  std::vector<std::unique_ptr<Problem>> problems;
  for (DType t : options.types) {
    FERRY_ASSIGN_OR_RETURN(problems.emplace_back(), MakeProblem(t));
    FERRY_RETURN_IF_ERROR(problems.back()->Call(pool));  // untimed: wakes the pool
  }
  // Rounds over all types until the budget is spent, so that each type is sampled across the
  // whole window: a neighbour that holds a core for a few milliseconds slows some calls of
  // every type instead of all calls of one.
  const Clock::time_point timed_start = Clock::now();
  do {
    for (std::unique_ptr<Problem>& p : problems) {
      for (int i = 0; i < kCallsPerRound; ++i) {
        const Clock::time_point t0 = Clock::now();
        FERRY_RETURN_IF_ERROR(p->Call(pool));
        const double s = Seconds(t0, Clock::now());
        if (p->best_seconds == 0.0 || s < p->best_seconds) p->best_seconds = s;
      }
    }
  } while (Seconds(timed_start, Clock::now()) < options.budget_seconds);
  for (const std::unique_ptr<Problem>& p : problems) {
    // A clock too coarse to see a call would give 0: count it as 1 ns.
    const double seconds = std::max(p->best_seconds, 1e-9);
    c.flops_by_type[p->w.type] =
        2.0 * static_cast<double>(kRows) * static_cast<double>(kCols) / seconds;
  }
  c.matmul_flops = c.flops_by_type.at(options.representative);
  c.seconds = Seconds(start, Clock::now());
  log::Debug("cpu_calibration threads={} {}={:.3g} seconds={:.4f}", c.num_threads,
             DTypeName(options.representative), c.matmul_flops, c.seconds);
  return c;
}

StatusOr<BandwidthCalibration> CalibrateCpuBandwidth(const BandwidthCalibrationOptions& options) {
  if (options.num_threads < 0 || options.num_threads > 1024) {
    return InvalidArgumentError("bandwidth calibration: num_threads {} is out of range",
                                options.num_threads);
  }
  if (options.buffer_bytes < (uint64_t{1} << 20) || options.buffer_bytes > (uint64_t{4} << 30)) {
    return InvalidArgumentError("bandwidth calibration: a buffer of {} bytes is out of range",
                                options.buffer_bytes);
  }
  if (options.min_rounds < 1 || options.min_rounds > 100) {
    return InvalidArgumentError("bandwidth calibration: {} rounds is out of range",
                                options.min_rounds);
  }
  if (!std::isfinite(options.budget_seconds) || options.budget_seconds < 0.0) {
    return InvalidArgumentError("bandwidth calibration: budget {} s is not a duration",
                                options.budget_seconds);
  }
  const Clock::time_point start = Clock::now();
  BandwidthCalibration c;
  const int cores = HardwareThreads();
  c.num_threads = CapThreads(options.num_threads);
  // 2 MiB aligned and whole 2 MiB pages, so that transparent huge pages can back it.
  constexpr uint64_t kHuge = uint64_t{2} << 20;
  const uint64_t bytes = (options.buffer_bytes + kHuge - 1) / kHuge * kHuge;
  void* map = mmap(nullptr, bytes + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
  if (map == MAP_FAILED) {
    return ResourceExhaustedError("bandwidth calibration: no memory for a {}-byte buffer", bytes);
  }
  struct Unmap {
    void* p;
    uint64_t n;
    ~Unmap() { munmap(p, n); }
  } unmap{map, bytes + kHuge};
  auto* base = reinterpret_cast<uint8_t*>(
      (reinterpret_cast<uintptr_t>(map) + kHuge - 1) / kHuge * kHuge);
  (void)madvise(base, bytes, MADV_HUGEPAGE);  // a hint; without it the fill takes longer
  const auto* words = reinterpret_cast<const uint64_t*>(base);
  const uint64_t n_words = bytes / 8;
  // Slice s of the buffer starts at word SliceBegin(s): whole 4 KiB pages (aligned loads).
  constexpr uint64_t kPageWords = 512;

  ThreadPool pool(c.num_threads);
  const int64_t slices = c.num_threads;
  auto slice_begin = [&](int64_t i) {
    return n_words / kPageWords * static_cast<uint64_t>(i) / static_cast<uint64_t>(slices) *
           kPageWords;
  };
  // The fill, on the same threads (each first touches the pages it will read).
  pool.ParallelFor(slices, [&](int64_t b, int64_t e) {
    const uint64_t w0 = slice_begin(b), w1 = slice_begin(e);
    std::memset(base + 8 * w0, 0x5a, 8 * (w1 - w0));
  });
  std::vector<uint64_t> sums(static_cast<size_t>(slices), 0);
  [[maybe_unused]] const bool avx2 = CpuHasAvx2Kernels();
  auto round = [&] {
    pool.ParallelFor(slices, [&](int64_t b, int64_t e) {
      for (int64_t s = b; s < e; ++s) {
        const uint64_t w0 = slice_begin(s), w1 = slice_begin(s + 1);
#if defined(__x86_64__)
        if (avx2) {
          sums[static_cast<size_t>(s)] += SumWordsAvx2(words + w0, w1 - w0);
          continue;
        }
#endif
        sums[static_cast<size_t>(s)] += SumWords(words + w0, w1 - w0);
      }
    });
  };
  std::vector<double> times;
  int most_running = 0;
  const Clock::time_point timed_start = Clock::now();
  while (static_cast<int>(times.size()) < options.min_rounds ||
         (Seconds(timed_start, Clock::now()) < options.budget_seconds && times.size() < 100)) {
    const Clock::time_point t0 = Clock::now();
    round();
    times.push_back(std::max(Seconds(t0, Clock::now()), 1e-9));
    most_running = std::max(most_running, ProcsRunning());
  }
  // The words were read: the sums depend on them (keeps the reads from being optimized away).
  uint64_t total = 0;
  for (uint64_t v : sums) total += v;
  if (total == 0) return InternalError("bandwidth calibration: the buffer read back as zero");

  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  c.rounds = static_cast<int>(times.size());
  c.bytes_per_s = static_cast<double>(bytes) / sorted.front();
  c.median_bytes_per_s = static_cast<double>(bytes) / sorted[sorted.size() / 2];
  // This thread is running when it reads /proc/stat, and so may be the pool's workers (they
  // spin a while before sleeping): count them all as ours.
  const int others = most_running - c.num_threads;
  c.looked_busy = sorted[sorted.size() / 2] > 1.25 * sorted.front() ||
                  others > std::max(0, cores - c.num_threads);
  c.seconds = Seconds(start, Clock::now());
  log::Debug("cpu_bandwidth threads={} bytes={} rounds={} best={:.3g} median={:.3g} busy={} "
             "procs_running={} seconds={:.4f}",
             c.num_threads, bytes, c.rounds, c.bytes_per_s, c.median_bytes_per_s, c.looked_busy,
             most_running, c.seconds);
  return c;
}

}  // namespace ferry
