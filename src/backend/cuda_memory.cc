#include "backend/cuda_memory.h"

#ifdef FERRY_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace ferry {

#ifndef FERRY_HAVE_CUDA

StatusOr<std::unique_ptr<MemorySource>> CudaMemory(int index) {
  return UnimplementedError("cuda{}: ferry was built without CUDA (cmake -DFERRY_CUDA=ON)", index);
}

StatusOr<CudaMemoryInfo> CudaMemoryNow(int index) {
  return UnimplementedError("cuda{}: ferry was built without CUDA (cmake -DFERRY_CUDA=ON)", index);
}

#else

namespace {

// Makes `index` the calling thread's device for its lifetime, then puts the previous one back.
class DeviceScope {
 public:
  explicit DeviceScope(int index) {
    if (cudaGetDevice(&previous_) != cudaSuccess) {
      cudaGetLastError();
      previous_ = -1;
    }
    error_ = cudaSetDevice(index);
  }
  ~DeviceScope() {
    if (previous_ >= 0 && cudaSetDevice(previous_) != cudaSuccess) cudaGetLastError();
  }
  cudaError_t error() const { return error_; }

 private:
  int previous_ = -1;
  cudaError_t error_ = cudaSuccess;
};

Status NoDevice(int index, cudaError_t e) {
  cudaGetLastError();
  return NotFoundError("cuda{}: {}", index, cudaGetErrorString(e));
}

class CudaSource final : public MemorySource {
 public:
  explicit CudaSource(int index) : index_(index) {}

  // cudaMalloc aligns to at least 256 bytes.
  void* Allocate(uint64_t bytes) override {
    DeviceScope scope(index_);
    void* p = nullptr;
    if (scope.error() != cudaSuccess || cudaMalloc(&p, bytes) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    return p;
  }
  void Free(void* p, uint64_t) override {
    DeviceScope scope(index_);
    if (cudaFree(p) != cudaSuccess) cudaGetLastError();
  }
  bool host_accessible() const override { return false; }
  Status Zero(void* p, uint64_t bytes) override {
    DeviceScope scope(index_);
    cudaError_t e = scope.error();
    if (e == cudaSuccess) e = cudaMemset(p, 0, bytes);
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
      cudaGetLastError();
      return InternalError("cuda{}: zeroing {} bytes: {}", index_, bytes, cudaGetErrorString(e));
    }
    return Status::Ok();
  }

 private:
  const int index_;
};

}  // namespace

StatusOr<std::unique_ptr<MemorySource>> CudaMemory(int index) {
  DeviceScope scope(index);
  if (scope.error() != cudaSuccess) return NoDevice(index, scope.error());
  return std::unique_ptr<MemorySource>(std::make_unique<CudaSource>(index));
}

StatusOr<CudaMemoryInfo> CudaMemoryNow(int index) {
  DeviceScope scope(index);
  if (scope.error() != cudaSuccess) return NoDevice(index, scope.error());
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t e = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (e != cudaSuccess) return NoDevice(index, e);
  return CudaMemoryInfo{free_bytes, total_bytes};
}

#endif

}  // namespace ferry
