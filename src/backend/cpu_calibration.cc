#include "backend/cpu_calibration.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <thread>

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
  return p;
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
  c.num_threads = options.num_threads > 0
                      ? options.num_threads
                      : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
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

}  // namespace ferry
