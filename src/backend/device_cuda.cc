// CUDA device discovery through the CUDA runtime API. Compiled only with FERRY_CUDA=ON.
#include "backend/device_cuda.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <vector>

#include "base/log.h"

namespace ferry::internal {
namespace {

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

}  // namespace

std::vector<Device> DiscoverCudaDevices() {
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
  for (int i = 0; i < count; ++i) {
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
    device.total_bytes = total_bytes;
    device.free_bytes = free_bytes < total_bytes ? free_bytes : total_bytes;
    device.bandwidth_bytes_per_s = EstimateBandwidth(i);
    device.bandwidth_source = "estimated";
    device.source = "CUDA";
    cudaDeviceProp props{};
    if (cudaGetDeviceProperties(&props, i) == cudaSuccess) {
      device.product = std::string(props.name);
    } else {
      cudaGetLastError();
    }
    log::Debug("cuda_device name={} product=\"{}\" free={} total={} bandwidth={}", device.name,
               device.product, device.free_bytes, device.total_bytes, device.bandwidth_bytes_per_s);
    devices.push_back(std::move(device));
  }
  if (previous >= 0 && cudaSetDevice(previous) != cudaSuccess) cudaGetLastError();
  return devices;
}

}  // namespace ferry::internal
