// What CUDA discovery measures: each GPU's copy bandwidth and the device memory the process's
// CUDA context takes; and CudaMemoryNow. Without a GPU (or without a CUDA build) the GPU tests
// skip, saying why; the option test runs everywhere.
//
// The suite is CudaMemoryTest so that scripts/device-check's filter runs it on a GPU, and this
// file comes first in backend_test's sources so that the context is measured before any other
// test creates it (a context that already exists cannot be measured; the test then skips).
#include "backend/device_cuda.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "backend/cuda_memory.h"
#include "backend/device.h"
#include "base/bytes.h"

namespace ferry {
namespace {

// Discovery without the CPU calibrations (they are not what these tests look at).
DiscoverOptions QuickOptions() {
  DiscoverOptions options;
  options.cpu_matmul_flops = 0.0;
  options.cpu_bandwidth = 30e9;
  return options;
}

std::string NoGpuReason() {
  return BuiltWithCuda() ? "no CUDA device (no driver, no GPU or CUDA_VISIBLE_DEVICES empty)"
                         : "ferry was built without CUDA (cmake -DFERRY_CUDA=ON)";
}

TEST(CudaMemoryTest, DiscoveryMeasuresContextBytes) {
  StatusOr<DeviceInventory> inv = DiscoverDevices(QuickOptions());
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  if (inv->gpus().empty()) {
    if (!BuiltWithCuda()) {
      EXPECT_EQ(internal::CudaContextBytes(0).status().code(), StatusCode::kUnimplemented);
    }
    GTEST_SKIP() << NoGpuReason();
  }
  for (const Device* gpu : inv->gpus()) {
    StatusOr<uint64_t> measured = internal::CudaContextBytes(gpu->index);
    if (!measured.ok()) {
      EXPECT_EQ(gpu->context_bytes, 0u);
      if (void* nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL); nvml != nullptr) {
        dlclose(nvml);
        // NVML is here: only a figure that cannot be compared may be missing (the context
        // predates discovery, a MIG instance, another process freeing memory meanwhile).
        EXPECT_EQ(measured.status().code(), StatusCode::kFailedPrecondition)
            << measured.status().ToString();
      }
      GTEST_SKIP() << gpu->name << ": context not measured: " << measured.status().ToString();
    }
    EXPECT_EQ(gpu->context_bytes, *measured);
    EXPECT_GT(gpu->context_bytes, 0u) << gpu->name;
    EXPECT_LT(gpu->context_bytes, 4 * kGiB) << gpu->name;
    // Reported as such, and the same figure on a later discovery (the context is still there).
    EXPECT_NE(DescribeInventory(*inv).find(", context "), std::string::npos);
    RecordProperty(gpu->name + "_context_bytes", std::to_string(gpu->context_bytes));
  }
  StatusOr<DeviceInventory> again = DiscoverDevices(QuickOptions());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ASSERT_EQ(again->gpus().size(), inv->gpus().size());
  for (size_t i = 0; i < inv->gpus().size(); ++i) {
    EXPECT_EQ(again->gpus()[i]->context_bytes, inv->gpus()[i]->context_bytes);
  }
}

TEST(CudaMemoryTest, DiscoveryMeasuresCopyBandwidth) {
  StatusOr<DeviceInventory> inv = DiscoverDevices(QuickOptions());
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  if (inv->gpus().empty()) GTEST_SKIP() << NoGpuReason();
  for (const Device* gpu : inv->gpus()) {
    EXPECT_EQ(gpu->bandwidth_source, "measured") << gpu->name;
    EXPECT_GE(gpu->bandwidth_bytes_per_s, 100e9) << gpu->name;
    EXPECT_LE(gpu->bandwidth_bytes_per_s, 20e12) << gpu->name;
    EXPECT_LE(gpu->free_bytes, gpu->total_bytes) << gpu->name;
    RecordProperty(gpu->name + "_bandwidth", FormatBandwidth(gpu->bandwidth_bytes_per_s));
  }
}

// DiscoverOptions::cuda_bandwidth: a value is used as is on every GPU (nothing is measured), 0
// gives the clock estimate; the CPU is discovered as without it. Runs with or without a GPU.
TEST(CudaMemoryTest, DiscoveryBandwidthOverride) {
  DiscoverOptions options = QuickOptions();
  options.cuda_bandwidth = 1.5e12;
  StatusOr<DeviceInventory> inv = DiscoverDevices(options);
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  ASSERT_FALSE(inv->devices.empty());
  EXPECT_EQ(inv->devices.size(), inv->gpus().size() + 1);
  const Device& cpu = inv->cpu();
  EXPECT_EQ(cpu.kind, DeviceKind::kCpu);
  EXPECT_EQ(cpu.bandwidth_bytes_per_s, 30e9);
  EXPECT_EQ(cpu.bandwidth_source, "override");
  EXPECT_EQ(cpu.matmul_flops_source, "off");
  EXPECT_EQ(cpu.context_bytes, 0u);
  if (!BuiltWithCuda()) {
    EXPECT_TRUE(inv->gpus().empty());
  }
  for (const Device* gpu : inv->gpus()) {
    EXPECT_EQ(gpu->bandwidth_bytes_per_s, 1.5e12) << gpu->name;
    EXPECT_EQ(gpu->bandwidth_source, "override") << gpu->name;
  }

  options.cuda_bandwidth = 0.0;
  inv = DiscoverDevices(options);
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->cpu().bandwidth_source, "override");
  for (const Device* gpu : inv->gpus()) {
    EXPECT_EQ(gpu->bandwidth_source, "estimated") << gpu->name;
    EXPECT_GT(gpu->bandwidth_bytes_per_s, 0.0) << gpu->name;
  }
}

// CudaMemoryNow: free at most total. (That allocations lower free by their size is
// CudaMemoryTest.AllocatesOnTheDeviceOrSaysWhyNot in allocator_test.cc.)
TEST(CudaMemoryTest, MemoryNowFreeAtMostTotal) {
  StatusOr<CudaMemoryInfo> info = CudaMemoryNow(0);
  if (!info.ok()) {
    EXPECT_TRUE(info.status().code() == StatusCode::kUnimplemented ||
                info.status().code() == StatusCode::kNotFound)
        << info.status().ToString();
    EXPECT_NE(info.status().message().find("cuda0"), std::string::npos);
    GTEST_SKIP() << info.status().ToString();
  }
  EXPECT_GT(info->total_bytes, 0u);
  EXPECT_LE(info->free_bytes, info->total_bytes);
}

}  // namespace
}  // namespace ferry
