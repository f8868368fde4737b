#include "backend/allocator.h"

#include <cstdint>
#include <span>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace ferry
