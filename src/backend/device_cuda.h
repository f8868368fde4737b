// Internal to backend/: the CUDA half of device discovery. device_cuda.cc implements it when
// the build has FERRY_CUDA=ON; otherwise device.cc supplies a version that finds nothing.
//
// Thread-safety: may be called from any thread; it selects devices with cudaSetDevice and puts
// the calling thread's previous device back before returning. The context measurements are
// kept in a process-wide table guarded by a mutex.
#ifndef FERRY_BACKEND_DEVICE_CUDA_H_
#define FERRY_BACKEND_DEVICE_CUDA_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "backend/device.h"
#include "base/status.h"

namespace ferry::internal {

// The CUDA devices in index order, named "cuda<index>", free/total from cudaMemGetInfo,
// source "CUDA", no reservations applied. Empty when there is no driver or no device (logged at
// debug level); a device that cannot be queried is skipped with a warning.
//
// `bandwidth` is DiscoverOptions::cuda_bandwidth: nullopt measures each device's bandwidth
// with a timed device-to-device copy (source "measured"; "estimated" from the clocks when that
// fails), a value > 0 is used as is (source "override"), 0 gives the clock estimate.
//
// context_bytes: the first discovery of a device in this process reads the device's free
// memory from NVML (libnvidia-ml.so.1, loaded with dlopen; no CUDA context needed) before
// cudaSetDevice creates the context, and subtracts the free memory cudaMemGetInfo reports
// after. The figure (or why there is none) is remembered for the life of the process, as the
// primary context lives that long: later discoveries report the same figure.
std::vector<Device> DiscoverCudaDevices(std::optional<double> bandwidth);

// What the first discovery measured as device `index`'s context memory (Device::context_bytes).
// Errors: Unimplemented without CUDA; NotFound when NVML could not be loaded
// (libnvidia-ml.so.1 missing) or has no device at the GPU's PCI bus id; FailedPrecondition when
// no discovery has seen the device yet, its context already existed then, NVML would not
// report, or NVML's and CUDA's figures are not comparable (a MIG instance, another process
// freeing memory meanwhile); Internal for a failing CUDA call. The message says why.
StatusOr<uint64_t> CudaContextBytes(int index);

}  // namespace ferry::internal

#endif  // FERRY_BACKEND_DEVICE_CUDA_H_
