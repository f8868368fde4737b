// Devices ferry can place model memory on, and how to find or describe them.
//
// A DeviceInventory lists the GPUs (CUDA, in index order) and then the CPU. Each device has the
// bytes ferry may use (`free_bytes`, after reservations), and a memory bandwidth and a mat-vec
// compute throughput used by the planner's speed model. Inventories come from discovery (the
// machine itself; the CPU's throughput is measured, see cpu_calibration.h) or from a description
// (`cuda0=24GiB,cpu=64GiB@40GB/s@200GFLOPS`), which is how `ferry plan --devices` and the
// planner tests work without hardware.
//
// Thread-safety: plain values; the functions are safe to call from any thread.
#ifndef FERRY_BACKEND_DEVICE_H_
#define FERRY_BACKEND_DEVICE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tensor/dtype.h"

namespace ferry {

enum class DeviceKind { kCpu, kCuda };

struct Device {
  std::string name;  // "cpu", "cuda0", "cuda1", ...
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;                       // CUDA device index; 0 for the CPU
  uint64_t total_bytes = 0;            // physical memory of the device (described: = free_bytes;
                                       // CPU: MemTotal, or the cgroup limit when that is lower)
  uint64_t free_bytes = 0;             // what ferry may allocate on it, reservations subtracted
  double bandwidth_bytes_per_s = 0.0;  // memory bandwidth for the speed model
  // Where it comes from: "measured" (a discovered CPU: CalibrateCpuBandwidth; a discovered GPU:
  // a timed device-to-device copy), "override" (DiscoverOptions::cpu_bandwidth /
  // cuda_bandwidth: FERRY_CPU_BANDWIDTH, FERRY_GPU_BANDWIDTH), "described" (the @BANDWIDTH of a
  // description), "default" (kDefaultCpuBandwidth / kDefaultCudaBandwidth), "estimated" (a GPU:
  // from its memory clock and bus width, when the copy could not be timed).
  std::string bandwidth_source;
  // Device memory the CUDA context of this process takes on this GPU, measured at discovery:
  // free memory before the context exists (NVML) minus free memory after (cudaMemGetInfo).
  // It is already outside free_bytes (which is measured with the context in place); it says
  // where the rest of the device's memory went. 0 when unknown (NVML missing, the context
  // existed before the first discovery of this process), for the CPU and for described devices.
  uint64_t context_bytes = 0;
  // A discovered CPU whose calibration saw other work competing for its cores: the measured
  // figures may be low (see CalibrateCpuBandwidth).
  bool looked_busy = false;
  // Compute throughput of the quantized matrix-vector product decode runs, in FLOP/s (2 per
  // weight element: multiply and add). 0 = unknown: the speed model uses the bandwidth alone.
  // Discovered CPU: measured (CalibrateCpuMatmul, Q4_K); described: the @FLOPS of the entry or
  // kDefaultCpuMatmulFlops / kDefaultCudaMatmulFlops. The planner uses it for weight types
  // without an entry in matmul_flops_by_type and for attention.
  double matmul_flops = 0.0;
  // Measured per weight type (discovered CPU only; empty otherwise), FLOP/s.
  std::map<DType, double> matmul_flops_by_type;
  // Where matmul_flops comes from: "measured", "described", "default", "override", "off".
  std::string matmul_flops_source;
  std::string source;                  // "described", "MemAvailable", "cgroup memory.max", "CUDA"
  std::string product;                 // hardware name from the driver ("NVIDIA H100 80GB HBM3");
                                       // empty for the CPU and for described devices
};

struct DeviceInventory {
  std::vector<Device> devices;  // GPUs first (index order), the CPU last; exactly one CPU

  const Device& cpu() const { return devices.back(); }
  std::vector<const Device*> gpus() const;
  const Device* Find(std::string_view name) const;
};

// Default bandwidths when none is given: a conservative dual-channel DDR4/DDR5 desktop for the
// CPU and a mid-range discrete GPU. `ferry plan` prints them; descriptions can override them.
inline constexpr double kDefaultCpuBandwidth = 40e9;
inline constexpr double kDefaultCudaBandwidth = 900e9;

// Default mat-vec throughputs for described devices without an @FLOPS part. CPU: a
// conservative 2-4 core AVX2 machine (ferry's Q4_K/Q8_0 mat-vec runs at ~50 GFLOP/s per Zen 3
// core with the weights in cache). CUDA: 20 TFLOP/s, a conservative int8 dot-product rate for
// a mid-range GPU; quantized decode on a GPU is memory-bound far below it, so it rarely binds.
// A discovered CPU is measured instead (see DiscoverOptions::cpu_matmul_flops).
inline constexpr double kDefaultCpuMatmulFlops = 100e9;
inline constexpr double kDefaultCudaMatmulFlops = 20e12;

// Parses a description: comma-separated `NAME=SIZE[@BANDWIDTH][@FLOPS]`, NAME one of cpu,
// cuda0, cuda1, ... (case-insensitive; whitespace around names, sizes and commas is ignored).
// SIZE is read by ParseBytes ("24GiB"; every suffix binary, so "24GB" = 24 * 2^30) and must be
// in (0, 2^60]. BANDWIDTH is read by ParseBandwidth ("900GB/s", "3.35TB/s", "800GiB/s"):
// unlike sizes, bandwidths are decimal SI (GB = 1e9) because that is how vendors quote them.
// FLOPS is read by ParseFlops ("200GFLOPS", "1.5 TFLOP/s"): the part whose unit ends in
// "FLOPS" or "FLOP/s" is the compute throughput, any other part after SIZE the bandwidth, so
// `cpu=64GiB@200GFLOPS` (default bandwidth), `cpu=64GiB@40GB/s@200GFLOPS` and
// `cpu=64GiB@200GFLOPS@40GB/s` all work; at most one of each.
// Without a bandwidth a device gets kDefaultCpuBandwidth / kDefaultCudaBandwidth, without a
// FLOPS part kDefaultCpuMatmulFlops / kDefaultCudaMatmulFlops (matmul_flops_source "default").
// A described device has total_bytes = free_bytes = SIZE and source "described".
// A missing cpu entry is an error (the CPU always exists). Errors name the bad entry:
// empty entries, duplicate names, unknown names, zero / negative / absurd sizes, bandwidths or
// FLOPS, two bandwidths or two FLOPS parts, cudaN listed out of index order or with a gap
// (cuda1 without cuda0).
StatusOr<DeviceInventory> ParseDevices(std::string_view description);

// Parses a memory bandwidth in bytes per second: a number, an optional unit and an optional
// "/s" (case-insensitive, spaces allowed): "900GB/s", "3.35 TB/s", "40e9", "1.5TiB/s".
// k/M/G/T/P with or without "B" are decimal (1e3 ... 1e15); KiB/MiB/GiB/TiB/PiB are binary.
// "b" always means bytes, never bits. Rejects empty, negative, zero, non-finite values and
// anything above 1 PB/s (a typo, not a device).
StatusOr<double> ParseBandwidth(std::string_view text);

// "900 GB/s", "40.0 GB/s", "3.35 TB/s": decimal SI, 3 significant digits.
std::string FormatBandwidth(double bytes_per_s);

// Parses a compute throughput in FLOP/s: a number, an optional decimal prefix k/M/G/T/P
// (1e3 ... 1e15) and a required "FLOPS" or "FLOP/s" (case-insensitive, spaces allowed):
// "200GFLOPS", "1.5 TFLOP/s", "5e10flops". Rejects empty, negative, zero, non-finite values,
// a missing or unknown unit and anything above 1e18 FLOP/s (a typo, not a device).
StatusOr<double> ParseFlops(std::string_view text);

// "200 GFLOP/s", "1.50 TFLOP/s": decimal SI, 3 significant digits.
std::string FormatFlops(double flops);

// Reads /proc/meminfo MemAvailable and the cgroup (v2 memory.max - memory.current, v1
// memory.limit_in_bytes - memory.usage_in_bytes) limit for the CPU, taking the lower. Paths are
// parameters so tests can point them at files they write.
//
// Details: the cgroup v2 files are used when `<cgroup_v2_dir>/memory.max` exists; only
// otherwise the v1 files. A v2 limit of "max" (or a v1 limit at or above MemTotal, which is how
// v1 spells "unlimited") means no limit. The cgroup's reclaimable page cache (`inactive_file`
// in memory.stat, where present) is added back to the headroom, as the kernel would drop it
// before failing an allocation; a model file that was read once must not look like used memory.
// `total_bytes` is MemTotal, lowered to the cgroup limit when there is one; `free_bytes` is
// the lower of MemAvailable and the cgroup headroom; `source` names the one that won
// ("MemAvailable", "cgroup memory.max", "cgroup memory.limit_in_bytes"). Without a
// MemAvailable line (kernels before 3.14) MemFree + Cached is used and `source` is "MemFree".
// The bandwidth is kDefaultCpuBandwidth (no bandwidth is benchmarked); matmul_flops is left 0
// (DiscoverDevices measures it).
// Errors: the meminfo file is missing (the error names the path) or has no MemTotal.
struct CpuMemorySources {
  std::string meminfo = "/proc/meminfo";
  std::string cgroup_v2_dir = "/sys/fs/cgroup";
  std::string cgroup_v1_dir = "/sys/fs/cgroup/memory";
};
StatusOr<Device> DiscoverCpu(const CpuMemorySources& sources = {});

// The machine's devices: CUDA devices (free/total from the CUDA runtime; bandwidth and
// context_bytes measured, see DiscoverOptions::cuda_bandwidth and Device::context_bytes) when
// ferry is built with FERRY_CUDA=ON and a GPU is present, then the CPU. `gpu_overhead_bytes`
// is reserved on every GPU (FERRY_GPU_OVERHEAD); `gpu_memory_bytes`, if set, caps what each
// GPU offers (--gpu-memory).
struct DiscoverOptions {
  uint64_t gpu_overhead_bytes = 0;
  std::optional<uint64_t> gpu_memory_bytes;
  CpuMemorySources cpu_sources;
  // The CPU's mat-vec throughput. nullopt (default): measured by CalibrateCpuMatmul with
  // `cpu_threads` threads (about 15 ms; source "measured"). A value: used as is without
  // measuring (FERRY_CPU_FLOPS; source "override"), 0 meaning unknown (bandwidth-only speed
  // model, source "off"). Tests set it so that nothing depends on timing.
  std::optional<double> cpu_matmul_flops;
  // The CPU's memory read bandwidth, bytes/s. nullopt (default): measured by
  // CalibrateCpuBandwidth with `cpu_threads` threads (about 30 ms; source "measured"). A value
  // > 0: used as is (FERRY_CPU_BANDWIDTH; source "override"); 0: kDefaultCpuBandwidth (source
  // "default"). Tests set it so that nothing depends on timing.
  std::optional<double> cpu_bandwidth;
  // Threads the calibration runs with: the number decode will use (--num-thread); 0 = all
  // cores (std::thread::hardware_concurrency), as the Runner does.
  int cpu_threads = 0;
  // Every CUDA device's memory bandwidth, bytes/s. nullopt (default): measured on each GPU by
  // timing a device-to-device copy of up to 256 MiB (a few ms; source "measured"), falling back
  // to the estimate from the memory clock and bus width (source "estimated") when the copy
  // cannot be timed (e.g. too little free memory). A value > 0: used as is on every GPU
  // (FERRY_GPU_BANDWIDTH; source "override"); 0: the clock estimate, nothing measured.
  std::optional<double> cuda_bandwidth;
  // CUDA devices' mat-vec throughput (not measured on GPUs).
  double cuda_matmul_flops = kDefaultCudaMatmulFlops;
};
//
// Without a GPU (no driver, no device, CUDA_VISIBLE_DEVICES empty) the inventory is the CPU
// alone; that is logged at debug level, not an error. A GPU whose memory cannot be queried is
// skipped with a warning. Errors come from DiscoverCpu and from the CPU calibration (which
// fails only on a bug: it multiplies a synthetic matrix it builds itself).
StatusOr<DeviceInventory> DiscoverDevices(const DiscoverOptions& options = {});

// Applies the GPU reservations of `options` to every CUDA device of `inventory` (the CPU is
// left alone): free = min(free - gpu_overhead_bytes, gpu_memory_bytes), never below 0. The
// overhead is what other processes and the driver keep; the cap is the most ferry takes, so
// with free = 24 GiB, overhead = 1 GiB and cap = 8 GiB ferry offers 8 GiB. DiscoverDevices
// calls this; callers may apply it to described inventories too.
void ApplyGpuReservations(DeviceInventory& inventory, const DiscoverOptions& options);

// True when this build can talk to CUDA (FERRY_CUDA=ON); discovery may still find no GPU.
bool BuiltWithCuda();

// "cuda0 24.0 GiB free of 24.0 GiB (described), cpu 61.2 GiB (MemAvailable)": GPUs show free
// and total (and ", context 512 MiB" after the total when context_bytes is known:
// "cuda0 79.1 GiB free of 79.6 GiB, context 512 MiB (CUDA)"), the CPU what ferry may use;
// sizes as FormatBytes, devices in inventory order.
std::string DescribeInventory(const DeviceInventory& inventory);

}  // namespace ferry

#endif  // FERRY_BACKEND_DEVICE_H_
