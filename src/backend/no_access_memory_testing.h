// For tests only: memory the host cannot touch, as a GPU's is. Pages are mapped PROT_NONE, so
// any host read or write of a buffer from it faults: a test that uses it as a device's
// MemorySource proves the code under test only passes the addresses on. Zero() drops the pages
// (MADV_DONTNEED) without touching them and counts the calls.
//
// Thread-safety: Allocate/Free/Zero may be called concurrently; `zeroed` is not synchronised.
#ifndef FERRY_BACKEND_NO_ACCESS_MEMORY_TESTING_H_
#define FERRY_BACKEND_NO_ACCESS_MEMORY_TESTING_H_

#include <sys/mman.h>

#include <cstdint>

#include "backend/allocator.h"

namespace ferry {

class NoAccessMemory final : public MemorySource {
 public:
  void* Allocate(uint64_t bytes) override {
    void* p = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }
  void Free(void* p, uint64_t bytes) override { munmap(p, bytes); }
  bool host_accessible() const override { return false; }
  Status Zero(void* p, uint64_t bytes) override {
    ++zeroed;
    return madvise(p, bytes, MADV_DONTNEED) == 0 ? Status::Ok() : InternalError("madvise failed");
  }
  int zeroed = 0;
};

}  // namespace ferry

#endif  // FERRY_BACKEND_NO_ACCESS_MEMORY_TESTING_H_
