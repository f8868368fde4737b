#include "backend/allocator.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <limits>
#include <new>
#include <utility>

namespace ferry {

DeviceAllocator::Buffer::Buffer(Buffer&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      owns_data_(std::exchange(other.owns_data_, false)),
      purpose_(std::move(other.purpose_)) {}

DeviceAllocator::Buffer& DeviceAllocator::Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    Release();
    owner_ = std::exchange(other.owner_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    owns_data_ = std::exchange(other.owns_data_, false);
    purpose_ = std::move(other.purpose_);
  }
  return *this;
}

DeviceAllocator::Buffer::~Buffer() { Release(); }

namespace {

class HostHeap final : public MemorySource {
 public:
  void* Allocate(uint64_t bytes) override {
    if (bytes > static_cast<uint64_t>(std::numeric_limits<std::ptrdiff_t>::max())) return nullptr;
    return ::operator new (bytes, std::align_val_t{DeviceAllocator::kAlignment}, std::nothrow);
  }
  void Free(void* p, uint64_t) override {
    ::operator delete (p, std::align_val_t{DeviceAllocator::kAlignment});
  }
  bool host_accessible() const override { return true; }
  Status Zero(void* p, uint64_t bytes) override {
    std::memset(p, 0, bytes);
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<MemorySource> HostMemory() { return std::make_unique<HostHeap>(); }

void DeviceAllocator::Buffer::Release() {
  if (owns_data_ && data_ != nullptr) owner_->source_->Free(data_, size_);
  if (owner_ != nullptr) owner_->Return(purpose_, size_);
  owner_ = nullptr;
  data_ = nullptr;
  size_ = 0;
  owns_data_ = false;
}

DeviceAllocator::DeviceAllocator(std::string device, uint64_t capacity_bytes,
                                 std::unique_ptr<MemorySource> source)
    : device_(std::move(device)),
      capacity_(capacity_bytes),
      source_(source != nullptr ? std::move(source) : HostMemory()) {}

DeviceAllocator::~DeviceAllocator() {
  assert(total_ == 0 && "DeviceAllocator destroyed while buffers are still held");
}

Status DeviceAllocator::Count(uint64_t bytes, std::string_view purpose) {
  if (purpose.empty()) return InvalidArgumentError("{}: allocation without a purpose", device_);
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t after;
  if (__builtin_add_overflow(total_, bytes, &after) || (capacity_ > 0 && after > capacity_)) {
    return MakeStatus(StatusCode::kResourceExhausted,
                      "{}: cannot allocate {} bytes for {}: {} of {} bytes are in use", device_,
                      bytes, purpose, total_, capacity_);
  }
  total_ = after;
  peak_ = std::max(peak_, total_);
  auto it = by_purpose_.find(purpose);
  if (it == by_purpose_.end()) it = by_purpose_.emplace(std::string(purpose), 0).first;
  it->second += bytes;
  return Status::Ok();
}

StatusOr<DeviceAllocator::Buffer> DeviceAllocator::Charge(std::span<const uint8_t> memory,
                                                          std::string_view purpose) {
  FERRY_ASSIGN_OR_RETURN(Buffer b, Charge(memory.size(), purpose));
  b.data_ = const_cast<uint8_t*>(memory.data());  // not owned: never freed, never written here
  return b;
}

StatusOr<DeviceAllocator::Buffer> DeviceAllocator::Charge(uint64_t bytes,
                                                          std::string_view purpose) {
  FERRY_RETURN_IF_ERROR(Count(bytes, purpose));
  Buffer b;
  b.owner_ = this;
  b.size_ = bytes;
  b.purpose_ = std::string(purpose);
  return b;
}

StatusOr<DeviceAllocator::Buffer> DeviceAllocator::Allocate(uint64_t bytes,
                                                            std::string_view purpose) {
  // Count (charge) the bytes before allocating, so concurrent calls cannot both pass the check.
  FERRY_ASSIGN_OR_RETURN(Buffer b, Charge(bytes, purpose));
  if (bytes > 0) {
    void* p = source_->Allocate(bytes);
    if (p == nullptr) {
      b.Release();  // gives the reserved bytes back
      return MakeStatus(StatusCode::kResourceExhausted,
                        "{}: out of memory allocating {} bytes for {}", device_, bytes, purpose);
    }
    b.data_ = static_cast<uint8_t*>(p);
    b.owns_data_ = true;
  }
  return b;
}

Status DeviceAllocator::Zero(const Buffer& buffer, uint64_t offset, uint64_t bytes) {
  if (buffer.owner_ != this || !buffer.owns_data_) {
    return InvalidArgumentError("{}: Zero() of a buffer this allocator does not own", device_);
  }
  if (offset > buffer.size_ || bytes > buffer.size_ - offset) {
    return InvalidArgumentError("{}: Zero() of bytes [{}, {}) outside a buffer of {}", device_,
                                offset, offset + bytes, buffer.size_);
  }
  if (bytes == 0) return Status::Ok();
  return source_->Zero(buffer.data_ + offset, bytes);
}

void DeviceAllocator::Return(const std::string& purpose, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  total_ -= bytes;
  auto it = by_purpose_.find(purpose);
  assert(it != by_purpose_.end() && it->second >= bytes);
  if (it != by_purpose_.end()) it->second -= bytes;
}

uint64_t DeviceAllocator::allocated_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_;
}

uint64_t DeviceAllocator::allocated_bytes(std::string_view purpose) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_purpose_.find(purpose);
  return it == by_purpose_.end() ? 0 : it->second;
}

std::map<std::string, uint64_t, std::less<>> DeviceAllocator::allocated_by_purpose() const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_purpose_;
}

uint64_t DeviceAllocator::peak_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_;
}

}  // namespace ferry
