// DeviceAllocator: the accounting allocator of one device (invariant 1 of the design: the plan
// is the allocation). Every byte the runtime holds for a model on a device (weights, KV cache,
// compute scratch, the loader's host tables) is allocated or charged through the device's
// DeviceAllocator, which counts it per purpose, so what was allocated can be compared with
// what the planner planned.
//
// Buffers come from the allocator's MemorySource: the host heap by default (the CPU device),
// or a GPU's memory (backend/cuda_memory.h: cudaMalloc, never managed memory), which the host
// must not touch (host_accessible() is false). Each buffer is 64-byte aligned and returns its
// bytes to the allocator's counters when destroyed. A capacity (optional) turns an allocation
// that would exceed it into a ResourceExhausted error, never a crash.
//
// Thread-safety: Allocate(), the counters and buffer destruction may be called from any thread
// concurrently (the counters are guarded by a mutex). A Buffer itself is not synchronized. The
// allocator must outlive every buffer it handed out.
#ifndef FERRY_BACKEND_ALLOCATOR_H_
#define FERRY_BACKEND_ALLOCATOR_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"
#include "base/thread_annotations.h"

namespace ferry {

// Where a DeviceAllocator's own buffers come from. Implementations: the host heap (the
// default), and a CUDA device's memory (backend/cuda_memory.h). Thread-safety: every method may
// be called from any thread concurrently.
class MemorySource {
 public:
  virtual ~MemorySource() = default;
  // `bytes` (> 0) aligned to at least DeviceAllocator::kAlignment, or null when there is no
  // memory for it.
  virtual void* Allocate(uint64_t bytes) = 0;
  // Gives back what Allocate(bytes) returned.
  virtual void Free(void* p, uint64_t bytes) = 0;
  // True when the host may read and write the memory directly (the host heap).
  virtual bool host_accessible() const = 0;
  // Sets `bytes` bytes at p (inside one allocation) to zero; done when it returns.
  virtual Status Zero(void* p, uint64_t bytes) = 0;
};

// The host heap: aligned operator new / delete.
std::unique_ptr<MemorySource> HostMemory();

class DeviceAllocator {
 public:
  // Alignment of every buffer's data().
  static constexpr std::size_t kAlignment = 64;

  // An allocation: [size] bytes at data(), uninitialized. Move-only; an empty (default or
  // moved-from) buffer has data() == nullptr and size() == 0.
  class Buffer {
   public:
    Buffer() = default;
    Buffer(Buffer&& other) noexcept;
    Buffer& operator=(Buffer&& other) noexcept;
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer();

    uint8_t* data() const { return data_; }
    uint64_t size() const { return size_; }
    const std::string& purpose() const { return purpose_; }
    // False for a charge (memory the allocator counts but does not own).
    bool owns_data() const { return owns_data_; }

   private:
    friend class DeviceAllocator;
    void Release();

    DeviceAllocator* owner_ = nullptr;
    uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
    bool owns_data_ = false;
    std::string purpose_;
  };

  // device: a name for messages ("cpu", "cuda0"). capacity_bytes: the most bytes held at
  // once; 0 means unlimited. source: where owned buffers come from (null: the host heap).
  explicit DeviceAllocator(std::string device = "cpu", uint64_t capacity_bytes = 0,
                           std::unique_ptr<MemorySource> source = nullptr);
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;
  ~DeviceAllocator();

  // Allocates `bytes` (counted exactly, 0 allowed: an empty buffer) for `purpose` ("weights",
  // "kv", "compute"; any non-empty name). Errors: InvalidArgument for an empty purpose;
  // ResourceExhausted when the capacity would be exceeded (the message names the device, the
  // purpose and the numbers) or the system has no memory for it.
  StatusOr<Buffer> Allocate(uint64_t bytes, std::string_view purpose);

  // Counts memory the device holds for the model that this allocator does not allocate, so
  // that every byte is accounted in one place: weights used in place from a memory-mapped file
  // (`memory` is the mapped span: data() points at it, nothing is copied, freed or written),
  // or host tables built by other modules (`bytes`: data() is null). The charge is counted
  // until the returned buffer is destroyed. Errors as Allocate (the capacity applies).
  StatusOr<Buffer> Charge(std::span<const uint8_t> memory, std::string_view purpose);
  StatusOr<Buffer> Charge(uint64_t bytes, std::string_view purpose);

  const std::string& device() const { return device_; }
  // False for device memory: its buffers' data() are addresses for the device's kernels, which
  // the host must never dereference.
  bool host_accessible() const { return source_->host_accessible(); }
  // Zeroes bytes [offset, offset + bytes) of an owned buffer of this allocator, host or device.
  // InvalidArgument for a charge, another allocator's buffer or a range outside the buffer.
  Status Zero(const Buffer& buffer, uint64_t offset, uint64_t bytes);
  uint64_t capacity_bytes() const { return capacity_; }
  // Bytes held now: in total, for one purpose (0 for one never used), and per purpose.
  uint64_t allocated_bytes() const;
  uint64_t allocated_bytes(std::string_view purpose) const;
  std::map<std::string, uint64_t, std::less<>> allocated_by_purpose() const;
  // Most bytes held at once since construction.
  uint64_t peak_bytes() const;

 private:
  Status Count(uint64_t bytes, std::string_view purpose);
  void Return(const std::string& purpose, uint64_t bytes);

  const std::string device_;
  const uint64_t capacity_;
  const std::unique_ptr<MemorySource> source_;
  mutable std::mutex mu_;
  uint64_t total_ FERRY_GUARDED_BY(mu_) = 0;
  uint64_t peak_ FERRY_GUARDED_BY(mu_) = 0;
  std::map<std::string, uint64_t, std::less<>> by_purpose_ FERRY_GUARDED_BY(mu_);
};

}  // namespace ferry

#endif  // FERRY_BACKEND_ALLOCATOR_H_
