#include "backend/allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <thread>
#include <vector>

#include "backend/cuda_memory.h"
#include "backend/no_access_memory_testing.h"

namespace ferry {
namespace {

TEST(DeviceAllocatorTest, CountsPerPurposeAndReturnsOnDestruction) {
  DeviceAllocator a("cpu");
  {
    auto kv = a.Allocate(1000, "kv");
    ASSERT_TRUE(kv.ok()) << kv.status().ToString();
    EXPECT_EQ(kv->size(), 1000u);
    EXPECT_EQ(kv->purpose(), "kv");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(kv->data()) % DeviceAllocator::kAlignment, 0u);
    kv->data()[999] = 1;  // writable
    auto compute = a.Allocate(24, "compute");
    ASSERT_TRUE(compute.ok());
    EXPECT_EQ(a.allocated_bytes(), 1024u);
    EXPECT_EQ(a.allocated_bytes("kv"), 1000u);
    EXPECT_EQ(a.allocated_bytes("compute"), 24u);
    EXPECT_EQ(a.allocated_bytes("weights"), 0u);
    EXPECT_EQ(a.allocated_by_purpose().size(), 2u);
  }
  EXPECT_EQ(a.allocated_bytes(), 0u);
  EXPECT_EQ(a.allocated_bytes("kv"), 0u);
  EXPECT_EQ(a.peak_bytes(), 1024u);
}

TEST(DeviceAllocatorTest, MoveTransfersOwnership) {
  DeviceAllocator a;
  auto b = a.Allocate(64, "compute");
  ASSERT_TRUE(b.ok());
  DeviceAllocator::Buffer moved = std::move(*b);
  EXPECT_EQ(b->data(), nullptr);
  EXPECT_EQ(b->size(), 0u);
  EXPECT_EQ(a.allocated_bytes(), 64u);
  DeviceAllocator::Buffer other;
  other = std::move(moved);
  EXPECT_EQ(a.allocated_bytes(), 64u);
  other = DeviceAllocator::Buffer();
  EXPECT_EQ(a.allocated_bytes(), 0u);
}

TEST(DeviceAllocatorTest, ZeroBytesIsAnEmptyBuffer) {
  DeviceAllocator a;
  auto b = a.Allocate(0, "compute");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->size(), 0u);
  EXPECT_EQ(a.allocated_bytes(), 0u);
}

TEST(DeviceAllocatorTest, CapacityIsAnErrorNotACrash) {
  DeviceAllocator a("cpu", 1000);
  auto first = a.Allocate(600, "kv");
  ASSERT_TRUE(first.ok());
  auto second = a.Allocate(401, "compute");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(second.status().message().find("compute"), std::string::npos)
      << second.status().message();
  EXPECT_EQ(a.allocated_bytes(), 600u);
  EXPECT_EQ(a.allocated_bytes("compute"), 0u);
  EXPECT_TRUE(a.Allocate(400, "compute").ok());  // exactly full is fine (and freed at once)
  // Absurd sizes fail cleanly even without a capacity.
  DeviceAllocator unlimited;
  auto huge = unlimited.Allocate(~uint64_t{0} - 5, "kv");
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(unlimited.allocated_bytes(), 0u);
}

TEST(DeviceAllocatorTest, EmptyPurposeIsInvalid) {
  DeviceAllocator a;
  EXPECT_EQ(a.Allocate(8, "").status().code(), StatusCode::kInvalidArgument);
}

TEST(DeviceAllocatorTest, ConcurrentAllocationsStayWithinCapacity) {
  DeviceAllocator a("cpu", 64 * 100);
  std::vector<std::thread> threads;
  std::vector<std::vector<DeviceAllocator::Buffer>> held(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < 50; ++j) {
        auto b = a.Allocate(64, "compute");
        if (b.ok()) held[i].push_back(std::move(*b));
      }
    });
  }
  for (auto& t : threads) t.join();
  size_t n = 0;
  for (auto& h : held) n += h.size();
  EXPECT_EQ(n, 100u);
  EXPECT_EQ(a.allocated_bytes(), 6400u);
  held.clear();
  EXPECT_EQ(a.allocated_bytes(), 0u);
}

TEST(DeviceAllocatorTest, ChargesCountMemoryTheAllocatorDoesNotOwn) {
  DeviceAllocator a("cpu", 1000);
  std::vector<uint8_t> mapped(300, 7);  // stands for a mapped weight file
  {
    auto w = a.Charge(std::span<const uint8_t>(mapped), "weights");
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_EQ(w->data(), mapped.data());
    EXPECT_EQ(w->size(), 300u);
    EXPECT_FALSE(w->owns_data());
    auto h = a.Charge(uint64_t{200}, "host");
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(h->data(), nullptr);
    auto k = a.Allocate(400, "kv");
    ASSERT_TRUE(k.ok());
    EXPECT_TRUE(k->owns_data());
    EXPECT_EQ(a.allocated_bytes(), 900u);
    EXPECT_EQ(a.allocated_bytes("weights"), 300u);
    EXPECT_EQ(a.allocated_bytes("host"), 200u);
    // The capacity applies to charges too.
    auto over = a.Charge(uint64_t{101}, "host");
    ASSERT_FALSE(over.ok());
    EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
    EXPECT_FALSE(a.Charge(uint64_t{1}, "").ok());
    // Moving a charge keeps it counted once.
    DeviceAllocator::Buffer moved = std::move(*w);
    EXPECT_EQ(a.allocated_bytes("weights"), 300u);
  }
  EXPECT_EQ(a.allocated_bytes(), 0u);
  EXPECT_EQ(mapped[0], 7);  // the charged memory was neither freed nor written
  EXPECT_EQ(a.peak_bytes(), 900u);
}

TEST(DeviceAllocatorTest, ZeroesAnOwnedRangeAndRefusesOthers) {
  DeviceAllocator a("cpu");
  EXPECT_TRUE(a.host_accessible());
  auto b = a.Allocate(256, "kv");
  ASSERT_TRUE(b.ok());
  std::fill(b->data(), b->data() + 256, uint8_t{7});
  ASSERT_TRUE(a.Zero(*b, 64, 128).ok());
  EXPECT_EQ(b->data()[63], 7);
  EXPECT_EQ(b->data()[64], 0);
  EXPECT_EQ(b->data()[191], 0);
  EXPECT_EQ(b->data()[192], 7);
  EXPECT_EQ(a.Zero(*b, 200, 57).code(), StatusCode::kInvalidArgument);
  auto charge = a.Charge(uint64_t{16}, "host");
  ASSERT_TRUE(charge.ok());
  EXPECT_EQ(a.Zero(*charge, 0, 16).code(), StatusCode::kInvalidArgument);
  DeviceAllocator other("cpu");
  EXPECT_EQ(other.Zero(*b, 0, 1).code(), StatusCode::kInvalidArgument);
}

TEST(DeviceAllocatorTest, DeviceMemoryIsCountedButNeverTouched) {
  auto source = std::make_unique<NoAccessMemory>();
  NoAccessMemory* raw = source.get();
  DeviceAllocator a("cuda0", 1 << 20, std::move(source));
  EXPECT_FALSE(a.host_accessible());
  {
    auto w = a.Allocate(1 << 19, "weights");
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_NE(w->data(), nullptr);
    EXPECT_TRUE(w->owns_data());
    ASSERT_TRUE(a.Zero(*w, 0, 4096).ok());
    EXPECT_EQ(raw->zeroed, 1);
    EXPECT_EQ(a.allocated_bytes("weights"), uint64_t{1} << 19);
    auto over = a.Allocate((1 << 19) + 1, "kv");
    EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
    EXPECT_NE(over.status().message().find("cuda0"), std::string::npos);
  }
  EXPECT_EQ(a.allocated_bytes(), 0u);
}

// A CUDA device's memory: refused by name without a CUDA build or a device; with one,
// allocations come out of the device's free memory and go back when freed.
TEST(CudaMemoryTest, AllocatesOnTheDeviceOrSaysWhyNot) {
  auto source = CudaMemory(0);
  if (!source.ok()) {
    EXPECT_TRUE(source.status().code() == StatusCode::kUnimplemented ||
                source.status().code() == StatusCode::kNotFound)
        << source.status().ToString();
    EXPECT_NE(source.status().message().find("cuda0"), std::string::npos);
    GTEST_SKIP() << source.status().ToString();
  }
  auto before = CudaMemoryNow(0);
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  DeviceAllocator a("cuda0", 0, std::move(*source));
  EXPECT_FALSE(a.host_accessible());
  constexpr uint64_t kBytes = uint64_t{256} << 20;
  {
    auto b = a.Allocate(kBytes, "weights");
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    ASSERT_TRUE(a.Zero(*b, 0, kBytes).ok());
    auto during = CudaMemoryNow(0);
    ASSERT_TRUE(during.ok());
    EXPECT_GE(before->free_bytes - during->free_bytes, kBytes);
    EXPECT_LE(before->free_bytes - during->free_bytes, kBytes + (uint64_t{4} << 20));
  }
  auto after = CudaMemoryNow(0);
  ASSERT_TRUE(after.ok());
  EXPECT_LE(before->free_bytes - std::min(before->free_bytes, after->free_bytes),
            uint64_t{4} << 20);
}

}  // namespace
}  // namespace ferry
