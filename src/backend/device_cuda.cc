// CUDA device discovery through the CUDA runtime API. Compiled only with FERRY_CUDA=ON.
//
// Besides free and total memory it measures two things per device: the memory bandwidth (a
// timed device-to-device copy) and the device memory the process's CUDA context takes (NVML's
// free memory before the context exists minus the runtime's after). NVML is loaded at run time
// with dlopen: it comes with the driver, not the toolkit, and ferry must start without it.
#include "backend/device_cuda.h"

#include <cuda.h>  // CUresult and CUdevice only; the driver is reached through the runtime
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/log.h"

namespace ferry::internal {
namespace {

// ---------------------------------------------------------------------------------------------
// Bandwidth

// The copy that measures the bandwidth: one buffer whose first half is copied onto its second
// half, at most this large and at most a quarter of the free memory.
constexpr uint64_t kCopyBufferBytes = 256 * kMiB;
// Below this the copy is too short to time well: the clock estimate is used instead.
constexpr uint64_t kMinCopyBufferBytes = 16 * kMiB;
// Timed rounds after one untimed warm-up round; the fastest counts. Each round is several
// copies between two events so that the events' resolution (~0.5 us) does not matter.
constexpr int kCopyRounds = 5;
constexpr int kCopiesPerRound = 4;
// A measured figure above this is a timing failure, not a memory system (as ParseBandwidth).
constexpr double kMaxPlausibleBandwidth = 1e15;

// Peak memory bandwidth from the memory clock and bus width: DDR moves data on both clock
// edges, hence the 2. CUDA 13 dropped the clock from cudaDeviceProp, so both values come from
// cudaDeviceGetAttribute. Returns kDefaultCudaBandwidth when either is unknown.
double EstimateBandwidth(int device) {
  int clock_khz = 0;
  int bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) != cudaSuccess ||
      clock_khz <= 0 || bus_bits <= 0) {
    cudaGetLastError();  // clear the error so it does not surface in a later call
    log::Debug("cuda_bandwidth_unknown device={} default={}", device, kDefaultCudaBandwidth);
    return kDefaultCudaBandwidth;
  }
  return 2.0 * static_cast<double>(clock_khz) * 1000.0 * static_cast<double>(bus_bits) / 8.0;
}

// What the bandwidth copy allocates on the current device; the destructor waits for the copies
// and frees everything, whichever way the measurement ends.
class CopyResources {
 public:
  CopyResources() = default;
  CopyResources(const CopyResources&) = delete;
  CopyResources& operator=(const CopyResources&) = delete;
  ~CopyResources() {
    if (stream != nullptr) cudaStreamSynchronize(stream);
    if (start != nullptr) cudaEventDestroy(start);
    if (stop != nullptr) cudaEventDestroy(stop);
    if (stream != nullptr) cudaStreamDestroy(stream);
    if (buffer != nullptr) cudaFree(buffer);
    cudaGetLastError();
  }

  void* buffer = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
};

Status CopyError(std::string_view what, cudaError_t error) {
  cudaGetLastError();
  return InternalError("{}: {}", what, cudaGetErrorString(error));
}

// The current device's memory bandwidth in bytes/s: the fastest of kCopyRounds rounds of
// device-to-device copies, each copy reading and writing every byte (hence 2 x bytes).
// `free_bytes` bounds the buffer. Errors: too little free memory (FailedPrecondition) or a
// failing CUDA call (Internal); everything allocated is freed either way.
StatusOr<double> MeasureCopyBandwidth(uint64_t free_bytes) {
  const uint64_t half = std::min(kCopyBufferBytes, free_bytes / 4) / 2 / kMiB * kMiB;
  if (2 * half < kMinCopyBufferBytes) {
    return FailedPreconditionError("only {} free, too little for a {} copy buffer",
                                   FormatBytes(free_bytes), FormatBytes(kMinCopyBufferBytes));
  }
  CopyResources r;
  cudaError_t e = cudaMalloc(&r.buffer, 2 * half);
  if (e != cudaSuccess) {
    r.buffer = nullptr;
    return CopyError(fmt::format("cudaMalloc of {}", FormatBytes(2 * half)), e);
  }
  if ((e = cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking)) != cudaSuccess) {
    r.stream = nullptr;
    return CopyError("cudaStreamCreateWithFlags", e);
  }
  if ((e = cudaEventCreate(&r.start)) != cudaSuccess) {
    r.start = nullptr;
    return CopyError("cudaEventCreate", e);
  }
  if ((e = cudaEventCreate(&r.stop)) != cudaSuccess) {
    r.stop = nullptr;
    return CopyError("cudaEventCreate", e);
  }
  char* const low = static_cast<char*>(r.buffer);
  char* const high = low + half;
  double best_seconds = 0.0;
  for (int round = 0; round <= kCopyRounds; ++round) {  // round 0 is the warm-up
    if ((e = cudaEventRecord(r.start, r.stream)) != cudaSuccess) {
      return CopyError("cudaEventRecord", e);
    }
    for (int copy = 0; copy < kCopiesPerRound; ++copy) {
      void* const to = copy % 2 == 0 ? high : low;
      const void* const from = copy % 2 == 0 ? low : high;
      e = cudaMemcpyAsync(to, from, half, cudaMemcpyDeviceToDevice, r.stream);
      if (e != cudaSuccess) return CopyError("cudaMemcpyAsync", e);
    }
    if ((e = cudaEventRecord(r.stop, r.stream)) != cudaSuccess) {
      return CopyError("cudaEventRecord", e);
    }
    if ((e = cudaEventSynchronize(r.stop)) != cudaSuccess) {
      return CopyError("cudaEventSynchronize", e);
    }
    float ms = 0.0f;
    if ((e = cudaEventElapsedTime(&ms, r.start, r.stop)) != cudaSuccess) {
      return CopyError("cudaEventElapsedTime", e);
    }
    const double seconds = static_cast<double>(ms) / 1e3;
    if (round > 0 && seconds > 0.0 && (best_seconds == 0.0 || seconds < best_seconds)) {
      best_seconds = seconds;
    }
  }
  if (best_seconds <= 0.0) return InternalError("the copies took no measurable time");
  const double bandwidth =
      2.0 * static_cast<double>(half) * static_cast<double>(kCopiesPerRound) / best_seconds;
  if (bandwidth > kMaxPlausibleBandwidth) {
    return InternalError("implausible copy bandwidth {} B/s ({} x {} bytes in {} s)", bandwidth,
                         kCopiesPerRound, half, best_seconds);
  }
  log::Debug("cuda_bandwidth_copy bytes={} copies={} rounds={} best_seconds={:.6f} bandwidth={}",
             half, kCopiesPerRound, kCopyRounds, best_seconds, FormatBandwidth(bandwidth));
  return bandwidth;
}

// ---------------------------------------------------------------------------------------------
// NVML, declared here from its documented C ABI (nvml.h is not part of the CUDA toolkit):
// nvmlReturn_t is an int-sized enum with NVML_SUCCESS = 0, nvmlDevice_t an opaque pointer, and
// nvmlMemory_t (v1) three unsigned long longs: total, free, used (used includes the memory the
// driver reserves, so free = total - used is on the same footing as cudaMemGetInfo's free).

using NvmlReturn = int;
constexpr NvmlReturn kNvmlSuccess = 0;
struct NvmlDeviceOpaque;
using NvmlDevice = NvmlDeviceOpaque*;
struct NvmlMemory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

// NVML loaded and initialized; unloaded on destruction.
class Nvml {
 public:
  // dlopen("libnvidia-ml.so.1") and nvmlInit_v2. Errors name what failed: NotFound when the
  // library or one of its functions is missing, FailedPrecondition when nvmlInit_v2 fails.
  static StatusOr<std::unique_ptr<Nvml>> Load() {
    void* library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      const char* why = dlerror();
      return NotFoundError("cannot load libnvidia-ml.so.1: {}", why != nullptr ? why : "?");
    }
    std::unique_ptr<Nvml> nvml(new Nvml(library));
    if (!nvml->Resolve(&nvml->init_, "nvmlInit_v2") ||
        !nvml->Resolve(&nvml->shutdown_, "nvmlShutdown") ||
        !nvml->Resolve(&nvml->handle_by_pci_bus_id_, "nvmlDeviceGetHandleByPciBusId_v2") ||
        !nvml->Resolve(&nvml->memory_info_, "nvmlDeviceGetMemoryInfo")) {
      return NotFoundError("libnvidia-ml.so.1 lacks {}", nvml->missing_);
    }
    nvml->Resolve(&nvml->error_string_, "nvmlErrorString");  // optional: messages only
    const NvmlReturn r = nvml->init_();
    if (r != kNvmlSuccess) return FailedPreconditionError("nvmlInit_v2: {}", nvml->ErrorString(r));
    nvml->initialized_ = true;
    return nvml;
  }

  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;
  ~Nvml() {
    if (initialized_) shutdown_();
    dlclose(library_);
  }

  // The memory of the device at `pci_bus_id` ("0000:65:00.0", as cudaDeviceGetPCIBusId writes
  // it). Errors: NotFound when NVML has no such device, FailedPrecondition when it cannot
  // report its memory (e.g. a MIG parent without privileges).
  StatusOr<NvmlMemory> MemoryByPciBusId(const char* pci_bus_id) const {
    NvmlDevice device = nullptr;
    NvmlReturn r = handle_by_pci_bus_id_(pci_bus_id, &device);
    if (r != kNvmlSuccess) {
      return NotFoundError("nvmlDeviceGetHandleByPciBusId_v2({}): {}", pci_bus_id, ErrorString(r));
    }
    NvmlMemory memory{};
    r = memory_info_(device, &memory);
    if (r != kNvmlSuccess) {
      return FailedPreconditionError("nvmlDeviceGetMemoryInfo({}): {}", pci_bus_id, ErrorString(r));
    }
    return memory;
  }

 private:
  explicit Nvml(void* library) : library_(library) {}

  template <typename Fn>
  bool Resolve(Fn* fn, const char* name) {
    *fn = reinterpret_cast<Fn>(dlsym(library_, name));
    if (*fn == nullptr && missing_.empty()) missing_ = name;
    return *fn != nullptr;
  }

  std::string ErrorString(NvmlReturn r) const {
    const char* s = error_string_ != nullptr ? error_string_(r) : nullptr;
    return s != nullptr ? fmt::format("{} (NVML error {})", s, r) : fmt::format("NVML error {}", r);
  }

  void* const library_;
  bool initialized_ = false;
  std::string missing_;  // the first symbol Resolve did not find
  NvmlReturn (*init_)() = nullptr;
  NvmlReturn (*shutdown_)() = nullptr;
  NvmlReturn (*handle_by_pci_bus_id_)(const char*, NvmlDevice*) = nullptr;
  NvmlReturn (*memory_info_)(NvmlDevice, NvmlMemory*) = nullptr;
  const char* (*error_string_)(NvmlReturn) = nullptr;
};

// Loads NVML the first time a device needs it, at most once per discovery.
class LazyNvml {
 public:
  StatusOr<const Nvml*> Get() {
    if (!tried_) {
      tried_ = true;
      StatusOr<std::unique_ptr<Nvml>> loaded = Nvml::Load();
      if (loaded.ok()) {
        nvml_ = std::move(*loaded);
      } else {
        status_ = loaded.status();
      }
    }
    if (nvml_ == nullptr) return status_;
    return static_cast<const Nvml*>(nvml_.get());
  }

 private:
  bool tried_ = false;
  std::unique_ptr<Nvml> nvml_;
  Status status_;
};

// ---------------------------------------------------------------------------------------------
// The context measurement

// Whether device `index`'s primary context exists already (this process created it before):
// then NVML's free memory would already be net of it. nullopt when the driver cannot say. The
// driver functions are reached through the runtime's entry-point query (ferry does not link
// libcuda); neither that query nor these two functions create a context.
std::optional<bool> PrimaryContextActive(int index) {
  using DeviceGetFn = CUresult (*)(CUdevice*, int);
  using StateFn = CUresult (*)(CUdevice, unsigned int*, int*);
  void* device_get = nullptr;
  void* get_state = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  if (cudaGetDriverEntryPointByVersion("cuDeviceGet", &device_get, 12000, cudaEnableDefault,
                                       &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess || device_get == nullptr ||
      cudaGetDriverEntryPointByVersion("cuDevicePrimaryCtxGetState", &get_state, 12000,
                                       cudaEnableDefault, &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess || get_state == nullptr) {
    cudaGetLastError();
    return std::nullopt;
  }
  CUdevice device{};
  unsigned int flags = 0;
  int active = 0;
  if (reinterpret_cast<DeviceGetFn>(device_get)(&device, index) != CUDA_SUCCESS ||
      reinterpret_cast<StateFn>(get_state)(device, &flags, &active) != CUDA_SUCCESS) {
    return std::nullopt;
  }
  return active != 0;
}

// NVML's view of device `index` before its context exists. Errors as CudaContextBytes.
StatusOr<NvmlMemory> MemoryBeforeContext(int index, LazyNvml& nvml) {
  const std::optional<bool> active = PrimaryContextActive(index);
  if (active.value_or(false)) {
    return FailedPreconditionError(
        "cuda{}: the CUDA context existed before the first discovery (nothing to compare)", index);
  }
  if (!active) log::Debug("cuda_context_state_unknown device=cuda{} (measuring anyway)", index);
  char bus_id[64] = {};
  const cudaError_t e = cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), index);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return InternalError("cuda{}: cudaDeviceGetPCIBusId: {}", index, cudaGetErrorString(e));
  }
  FERRY_ASSIGN_OR_RETURN(const Nvml* loaded, nvml.Get());
  return loaded->MemoryByPciBusId(bus_id);
}

// The context size from NVML's figures before the context and the runtime's after.
StatusOr<uint64_t> ContextBytesFrom(int index, const NvmlMemory& before, uint64_t cuda_free,
                                    uint64_t cuda_total) {
  // NVML counts the memory the driver reserves in its total, the runtime does not: the totals
  // differ by a few hundred MiB. Far apart (a MIG instance against its whole GPU) the two
  // free figures are not about the same memory.
  if (cuda_total > before.total || cuda_total < before.total / 10 * 9) {
    return FailedPreconditionError("cuda{}: NVML's total {} and CUDA's {} are not the same memory",
                                   index, before.total, cuda_total);
  }
  if (before.free < cuda_free) {
    return FailedPreconditionError(
        "cuda{}: free memory rose from {} to {} while the context was created (another "
        "process freed memory)",
        index, before.free, cuda_free);
  }
  return before.free - cuda_free;
}

// What the first discovery of each device measured (CudaContextBytes).
struct ContextRecord {
  uint64_t bytes = 0;
  Status status;  // why bytes is 0 when not ok
};
std::mutex& ContextMutex() {
  static std::mutex mutex;
  return mutex;
}
std::map<int, ContextRecord>& ContextTable() {
  static std::map<int, ContextRecord>* table = new std::map<int, ContextRecord>();
  return *table;
}

std::optional<ContextRecord> FindContextRecord(int index) {
  std::lock_guard<std::mutex> lock(ContextMutex());
  auto it = ContextTable().find(index);
  if (it == ContextTable().end()) return std::nullopt;
  return it->second;
}

void StoreContextRecord(int index, ContextRecord record) {
  std::lock_guard<std::mutex> lock(ContextMutex());
  ContextTable().emplace(index, std::move(record));  // the first one stays
}

}  // namespace

StatusOr<uint64_t> CudaContextBytes(int index) {
  std::optional<ContextRecord> record = FindContextRecord(index);
  if (!record) return FailedPreconditionError("cuda{}: not discovered yet", index);
  if (!record->status.ok()) return record->status;
  return record->bytes;
}

std::vector<Device> DiscoverCudaDevices(std::optional<double> bandwidth) {
  std::vector<Device> devices;
  int count = 0;
  const cudaError_t count_error = cudaGetDeviceCount(&count);
  if (count_error != cudaSuccess) {
    cudaGetLastError();
    log::Debug("cuda_devices count=0 reason=\"{}\"", cudaGetErrorString(count_error));
    return devices;
  }
  if (count == 0) {
    log::Debug("cuda_devices count=0 reason=\"no device\"");
    return devices;
  }

  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess) {
    cudaGetLastError();
    previous = -1;
  }
  LazyNvml nvml;
  for (int i = 0; i < count; ++i) {
    // Before anything creates device i's context (cudaSetDevice does): NVML's free memory.
    std::optional<ContextRecord> context = FindContextRecord(i);
    std::optional<StatusOr<NvmlMemory>> before;
    if (!context) before = MemoryBeforeContext(i, nvml);

    size_t free_bytes = 0;
    size_t total_bytes = 0;
    cudaError_t error = cudaSetDevice(i);
    if (error == cudaSuccess) error = cudaMemGetInfo(&free_bytes, &total_bytes);
    if (error != cudaSuccess) {
      cudaGetLastError();
      log::Warn("cuda_device_skipped device={} reason=\"{}\"", i, cudaGetErrorString(error));
      continue;
    }
    Device device;
    device.name = "cuda" + std::to_string(i);
    device.kind = DeviceKind::kCuda;
    device.index = i;
    device.source = "CUDA";
    if (bandwidth.has_value() && *bandwidth > 0.0) {
      device.bandwidth_bytes_per_s = *bandwidth;
      device.bandwidth_source = "override";
    } else if (bandwidth.has_value()) {
      device.bandwidth_bytes_per_s = EstimateBandwidth(i);
      device.bandwidth_source = "estimated";
    } else {
      StatusOr<double> measured = MeasureCopyBandwidth(free_bytes);
      if (measured.ok()) {
        device.bandwidth_bytes_per_s = *measured;
        device.bandwidth_source = "measured";
      } else {
        device.bandwidth_bytes_per_s = EstimateBandwidth(i);
        device.bandwidth_source = "estimated";
        log::Info("cuda_bandwidth_not_measured device={} estimate={} reason=\"{}\"", device.name,
                  FormatBandwidth(device.bandwidth_bytes_per_s), measured.status().message());
      }
      // What is free once the copy buffer is gone (the stream and events may have left the
      // context a little larger).
      size_t free_after = 0;
      size_t total_after = 0;
      if (cudaMemGetInfo(&free_after, &total_after) == cudaSuccess) {
        free_bytes = free_after;
        total_bytes = total_after;
      } else {
        cudaGetLastError();
      }
    }
    device.total_bytes = total_bytes;
    device.free_bytes = free_bytes < total_bytes ? free_bytes : total_bytes;

    if (!context) {
      ContextRecord record;
      StatusOr<uint64_t> bytes = before->ok()
                                     ? ContextBytesFrom(i, **before, free_bytes, total_bytes)
                                     : StatusOr<uint64_t>(before->status());
      if (bytes.ok()) {
        record.bytes = *bytes;
        log::Debug(
            "cuda_context device={} nvml_free_before={} nvml_total={} cuda_free_after={} "
            "cuda_total={} context_bytes={}",
            device.name, (*before)->free, (*before)->total, free_bytes, total_bytes, record.bytes);
      } else {
        record.status = bytes.status();
        log::Debug("cuda_context_unknown device={} reason=\"{}\"", device.name,
                   record.status.message());
      }
      StoreContextRecord(i, record);
      context = FindContextRecord(i);
    }
    device.context_bytes = context->status.ok() ? context->bytes : 0;

    cudaDeviceProp props{};
    if (cudaGetDeviceProperties(&props, i) == cudaSuccess) {
      device.product = std::string(props.name);
    } else {
      cudaGetLastError();
    }
    log::Debug(
        "cuda_device name={} product=\"{}\" free={} total={} context_bytes={} bandwidth={} "
        "bandwidth_source={}",
        device.name, device.product, device.free_bytes, device.total_bytes, device.context_bytes,
        device.bandwidth_bytes_per_s, device.bandwidth_source);
    devices.push_back(std::move(device));
  }
  if (previous >= 0 && cudaSetDevice(previous) != cudaSuccess) cudaGetLastError();
  return devices;
}

}  // namespace ferry::internal
