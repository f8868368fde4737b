// Internal to backend/: the CUDA half of device discovery. device_cuda.cc implements it when
// the build has FERRY_CUDA=ON; otherwise device.cc supplies a version that finds nothing.
//
// Thread-safety: may be called from any thread; it selects devices with cudaSetDevice and puts
// the calling thread's previous device back before returning.
#ifndef FERRY_BACKEND_DEVICE_CUDA_H_
#define FERRY_BACKEND_DEVICE_CUDA_H_

#include <vector>

#include "backend/device.h"

namespace ferry::internal {

// The CUDA devices in index order, named "cuda<index>", free/total from cudaMemGetInfo,
// source "CUDA", no reservations applied. Empty when there is no driver or no device (logged at
// debug level); a device that cannot be queried is skipped with a warning.
std::vector<Device> DiscoverCudaDevices();

}  // namespace ferry::internal

#endif  // FERRY_BACKEND_DEVICE_CUDA_H_
