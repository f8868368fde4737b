// A CUDA device's memory as a DeviceAllocator's MemorySource: plain cudaMalloc / cudaFree
// (never managed memory), so a GPU's weights, KV blocks and compute reservation are allocated
// and counted like the CPU's (DeviceAllocator("cuda0", capacity, *CudaMemory(0))).
//
// Thread-safety: as MemorySource; each call selects the device with cudaSetDevice and puts the
// calling thread's previous device back.
#ifndef FERRY_BACKEND_CUDA_MEMORY_H_
#define FERRY_BACKEND_CUDA_MEMORY_H_

#include <cstdint>
#include <memory>

#include "backend/allocator.h"
#include "base/status.h"

namespace ferry {

// The memory of CUDA device `index`. Errors: Unimplemented when ferry was built without CUDA
// (-DFERRY_CUDA=ON); NotFound when the runtime has no such device (the message has its reason).
StatusOr<std::unique_ptr<MemorySource>> CudaMemory(int index);

// Free and total bytes of CUDA device `index` now (cudaMemGetInfo); errors as CudaMemory.
struct CudaMemoryInfo {
  uint64_t free_bytes = 0;
  uint64_t total_bytes = 0;
};
StatusOr<CudaMemoryInfo> CudaMemoryNow(int index);

}  // namespace ferry

#endif  // FERRY_BACKEND_CUDA_MEMORY_H_
