// CPU calibration: how fast ferry's own CPU mat-vec kernel runs on this machine, and how fast
// its memory can be read.
//
// Decode multiplies every weight matrix by one activation vector per token (MatMul with n_tok
// = 1, kernels/cpu/matmul.h). On a CPU that work, not the memory bus, often bounds the decode
// speed of small models. CalibrateCpuMatmul times exactly that call, on the thread pool size
// decode uses, for a synthetic weight matrix small enough to stay in cache (512 rows x 1024
// columns: 288 KiB in Q4_K, 544 KiB in Q8_0, 1 MiB in F16), so the figure is the kernel's
// compute ceiling and the planner's bandwidth term covers the cost of streaming the weights.
// Types that MatMul reads packed on this CPU (MatMulUsesPackedWeights) are timed packed, as a
// loaded model runs them.
//
// What is computed is deterministic (one row quantized from a fixed sine pattern by the
// reference quantizer, copied to every row; a fixed activation vector); how long it takes is a
// measurement and varies from run to run and with the machine's load. Tests may check that the
// result is positive and finite, never how large it is.
//
// Method: one untimed call per type (wakes the pool, brings the matrix into cache), then rounds
// over all types, 3 timed calls of each per round, until the time budget is spent; a type's
// rate is 2 * rows * cols / (its fastest call). The fastest call is what the machine does when
// nothing else competes for its cores: a busy neighbour makes calls slower, never faster, and
// with several threads one descheduled worker stalls the whole call, so a mean would measure
// the neighbour. On a quiet machine the fastest call is within a few percent of the mean. On a
// busy one decode will run slower than this figure (pin it with FERRY_CPU_FLOPS if needed).
//
// Thread-safety: may be called from any thread; each call creates and joins its own pool.
#ifndef FERRY_BACKEND_CPU_CALIBRATION_H_
#define FERRY_BACKEND_CPU_CALIBRATION_H_

#include <map>
#include <vector>

#include "base/status.h"
#include "tensor/dtype.h"

namespace ferry {

struct CpuCalibrationOptions {
  // Threads of the pool the kernel runs on, the caller included; 0 = all cores
  // (std::thread::hardware_concurrency), as the Runner does.
  int num_threads = 0;
  // Weight types to time. The default covers the types of common GGUF files (Q4_K_M files
  // hold Q4_K, Q6_K and, for shapes K-quants cannot take, Q5_0 / Q8_0). Each must be one the
  // reference quantizer handles (CanQuantize: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
  // Q4_K, Q6_K).
  std::vector<DType> types = {DType::kQ4_K, DType::kQ8_0, DType::kQ5_0,
                              DType::kQ6_K, DType::kQ4_0, DType::kF16};
  // The representative type: its rate becomes CpuCalibration::matmul_flops. Must be in types.
  DType representative = DType::kQ4_K;
  // Timed seconds in all, shared by the types in rounds (setup and the untimed calls come on
  // top: about 2 ms for the default types). At least one round is always timed.
  double budget_seconds = 0.012;
};

struct CpuCalibration {
  double matmul_flops = 0.0;                // FLOP/s of `representative`
  std::map<DType, double> flops_by_type;    // FLOP/s per timed type
  int num_threads = 0;                      // threads actually used
  double seconds = 0.0;                     // wall time of the whole calibration, setup included
};

// Errors: InvalidArgument for an empty or unsupported type list, a representative not in it,
// num_threads < 0 or a budget that is negative or not finite. A kernel error (a bug) is
// returned as is.
StatusOr<CpuCalibration> CalibrateCpuMatmul(const CpuCalibrationOptions& options = {});

// ---- memory bandwidth ----
//
// Decode streams every weight once per token, so its speed on a CPU is bounded by the memory
// read bandwidth. CalibrateCpuBandwidth measures it the way decode reads: `num_threads`
// threads (the decode pool) each stream a contiguous slice of one buffer of `buffer_bytes`
// (filled first, so its pages are real memory and not the shared zero page; backed by
// transparent huge pages where the kernel allows, which keeps the fill to a few milliseconds).
// The rate is buffer_bytes / the fastest of several rounds, for the reason given above: a
// neighbour only makes rounds slower.
//
// A busy machine: when the median round is more than 1.25x the fastest, or when more threads
// were runnable than the cores ferry's threads leave free (procs_running in /proc/stat,
// sampled each round), `looked_busy` is set: the figure may be low, and decode will be slow
// for the same reason. `ferry plan` says so.
//
// The buffer should be larger than the cache a core can use; virtual machines often report
// the host's whole last-level cache (hundreds of MiB shared by every tenant), so the default is
// a fixed 128 MiB rather than a multiple of the reported size.
struct BandwidthCalibrationOptions {
  int num_threads = 0;                    // 0 = all cores, as CpuCalibrationOptions
  uint64_t buffer_bytes = uint64_t{128} << 20;  // at least 1 MiB, at most 4 GiB
  int min_rounds = 4;                     // timed rounds at least (1 .. 100)
  double budget_seconds = 0.03;           // more rounds while the timed time is below this
};

struct BandwidthCalibration {
  double bytes_per_s = 0.0;         // buffer_bytes / the fastest round
  double median_bytes_per_s = 0.0;  // buffer_bytes / the median round
  int rounds = 0;
  bool looked_busy = false;
  int num_threads = 0;
  double seconds = 0.0;  // wall time of the whole calibration, the fill included
};

// Errors: InvalidArgument for options out of range; ResourceExhausted when the buffer cannot
// be allocated.
StatusOr<BandwidthCalibration> CalibrateCpuBandwidth(const BandwidthCalibrationOptions& options = {});

}  // namespace ferry

#endif  // FERRY_BACKEND_CPU_CALIBRATION_H_
