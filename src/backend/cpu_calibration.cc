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
// Calls per timed batch.
constexpr int kBatch = 4;

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

// FLOP/s of MatMul(n_tok = 1) on a synthetic [kRows, kCols] matrix of `type`.
StatusOr<double> TimeType(DType type, ThreadPool& pool, double budget_seconds) {
  // One row quantized from a fixed pattern, copied to every row; a fixed activation vector.
  std::vector<float> x(static_cast<size_t>(kCols));
  for (int64_t i = 0; i < kCols; ++i) {
    x[static_cast<size_t>(i)] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  }
  FERRY_ASSIGN_OR_RETURN(const uint64_t row_bytes, RowBytes(type, static_cast<uint64_t>(kCols)));
  AlignedBytes weights(row_bytes * static_cast<uint64_t>(kRows));
  FERRY_RETURN_IF_ERROR(QuantizeRow(type, x.data(), weights.data, kCols));
  for (int64_t r = 1; r < kRows; ++r) {
    std::memcpy(weights.data + static_cast<uint64_t>(r) * row_bytes, weights.data, row_bytes);
  }
  WeightMatrix w;
  w.type = type;
  w.data = weights.data;
  w.cols = kCols;
  w.rows = kRows;
  w.row_bytes = row_bytes;
  AlignedBytes workspace(MatMulWorkspaceBytes(type, kCols, 1));
  const std::span<uint8_t> ws(workspace.data, workspace.size);
  std::vector<float> y(static_cast<size_t>(kRows));

  FERRY_RETURN_IF_ERROR(MatMul(w, x.data(), 1, y.data(), &pool, ws));  // untimed
  double best = 0.0;  // seconds per call of the fastest batch
  const Clock::time_point start = Clock::now();
  do {
    const Clock::time_point t0 = Clock::now();
    for (int i = 0; i < kBatch; ++i) {
      FERRY_RETURN_IF_ERROR(MatMul(w, x.data(), 1, y.data(), &pool, ws));
    }
    const double per_call = Seconds(t0, Clock::now()) / kBatch;
    if (best == 0.0 || per_call < best) best = per_call;
  } while (Seconds(start, Clock::now()) < budget_seconds);
  // A clock too coarse to see a batch would give 0: count it as one tick of 1 ns.
  best = std::max(best, 1e-9);
  return 2.0 * static_cast<double>(kRows) * static_cast<double>(kCols) / best;
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
  const double per_type = options.budget_seconds / static_cast<double>(options.types.size());
  for (DType t : options.types) {
    FERRY_ASSIGN_OR_RETURN(c.flops_by_type[t], TimeType(t, pool, per_type));
  }
  c.matmul_flops = c.flops_by_type.at(options.representative);
  c.seconds = Seconds(start, Clock::now());
  log::Debug("cpu_calibration threads={} {}={:.3g} seconds={:.4f}", c.num_threads,
             DTypeName(options.representative), c.matmul_flops, c.seconds);
  return c;
}

}  // namespace ferry
