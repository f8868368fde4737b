#include "backend/device.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "base/bytes.h"

namespace ferry {
namespace {

namespace fs = std::filesystem;

// The message of a failed ParseDevices, or "" (and a test failure) when it succeeded.
std::string ParseError(std::string_view description) {
  StatusOr<DeviceInventory> inv = ParseDevices(description);
  EXPECT_FALSE(inv.ok()) << "'" << description << "' parsed";
  return inv.ok() ? "" : inv.status().message();
}

// ---------------------------------------------------------------------------------------------
// ParseDevices

TEST(ParseDevicesTest, GpuAndCpuExactBytesGpuFirst) {
  StatusOr<DeviceInventory> inv = ParseDevices("cpu=64GiB,cuda0=24GiB");
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  ASSERT_EQ(inv->devices.size(), 2u);
  const Device& gpu = inv->devices[0];
  EXPECT_EQ(gpu.name, "cuda0");
  EXPECT_EQ(gpu.kind, DeviceKind::kCuda);
  EXPECT_EQ(gpu.index, 0);
  EXPECT_EQ(gpu.total_bytes, uint64_t{24} << 30);
  EXPECT_EQ(gpu.free_bytes, uint64_t{24} << 30);
  EXPECT_EQ(gpu.bandwidth_bytes_per_s, kDefaultCudaBandwidth);
  EXPECT_EQ(gpu.source, "described");
  const Device& cpu = inv->cpu();
  EXPECT_EQ(cpu.name, "cpu");
  EXPECT_EQ(cpu.kind, DeviceKind::kCpu);
  EXPECT_EQ(cpu.total_bytes, uint64_t{64} << 30);
  EXPECT_EQ(cpu.free_bytes, uint64_t{64} << 30);
  EXPECT_EQ(cpu.bandwidth_bytes_per_s, kDefaultCpuBandwidth);
  EXPECT_EQ(cpu.source, "described");

  ASSERT_EQ(inv->gpus().size(), 1u);
  EXPECT_EQ(inv->gpus()[0], &inv->devices[0]);
  EXPECT_EQ(inv->Find("cuda0"), &inv->devices[0]);
  EXPECT_EQ(inv->Find("cpu"), &inv->devices[1]);
  EXPECT_EQ(inv->Find("cuda1"), nullptr);
}

TEST(ParseDevicesTest, CpuOnly) {
  StatusOr<DeviceInventory> inv = ParseDevices("cpu=16GiB");
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  ASSERT_EQ(inv->devices.size(), 1u);
  EXPECT_TRUE(inv->gpus().empty());
  EXPECT_EQ(inv->cpu().free_bytes, uint64_t{16} << 30);
}

TEST(ParseDevicesTest, SeveralGpusInIndexOrder) {
  StatusOr<DeviceInventory> inv = ParseDevices("cuda0=24GiB,cuda1=12GiB,cuda2=8GiB,cpu=1TiB");
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  ASSERT_EQ(inv->devices.size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(inv->devices[i].name, "cuda" + std::to_string(i));
    EXPECT_EQ(inv->devices[i].index, i);
  }
  EXPECT_EQ(inv->devices[1].free_bytes, uint64_t{12} << 30);
  EXPECT_EQ(inv->cpu().free_bytes, uint64_t{1} << 40);
}

TEST(ParseDevicesTest, SizesAreBinaryAndFractional) {
  StatusOr<DeviceInventory> inv = ParseDevices("cuda0=24GB,cpu=1.5G");
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->devices[0].free_bytes, uint64_t{24} << 30);  // ParseBytes: GB is binary
  EXPECT_EQ(inv->cpu().free_bytes, uint64_t{3} << 29);
}

TEST(ParseDevicesTest, BandwidthSuffixIsDecimal) {
  StatusOr<DeviceInventory> inv = ParseDevices("cuda0=8GiB@900GB/s,cpu=32GiB@51.2GB/s");
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->devices[0].free_bytes, uint64_t{8} << 30);
  EXPECT_DOUBLE_EQ(inv->devices[0].bandwidth_bytes_per_s, 900e9);
  EXPECT_DOUBLE_EQ(inv->cpu().bandwidth_bytes_per_s, 51.2e9);
}

TEST(ParseDevicesTest, FlopsPartInEitherOrderOrAlone) {
  StatusOr<DeviceInventory> inv =
      ParseDevices("cuda0=8GiB@900GB/s@50TFLOPS,cpu=32GiB@200 GFLOP/s@51.2GB/s");
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_DOUBLE_EQ(inv->devices[0].bandwidth_bytes_per_s, 900e9);
  EXPECT_DOUBLE_EQ(inv->devices[0].matmul_flops, 50e12);
  EXPECT_EQ(inv->devices[0].matmul_flops_source, "described");
  EXPECT_DOUBLE_EQ(inv->cpu().bandwidth_bytes_per_s, 51.2e9);
  EXPECT_DOUBLE_EQ(inv->cpu().matmul_flops, 200e9);
  EXPECT_TRUE(inv->cpu().matmul_flops_by_type.empty());

  inv = ParseDevices("cpu=32GiB@40e9flops");
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->cpu().bandwidth_bytes_per_s, kDefaultCpuBandwidth);
  EXPECT_DOUBLE_EQ(inv->cpu().matmul_flops, 40e9);
}

TEST(ParseDevicesTest, WithoutFlopsDevicesGetTheDefaults) {
  StatusOr<DeviceInventory> inv = ParseDevices("cuda0=8GiB@900GB/s,cpu=32GiB");
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->devices[0].matmul_flops, kDefaultCudaMatmulFlops);
  EXPECT_EQ(inv->devices[0].matmul_flops_source, "default");
  EXPECT_EQ(inv->cpu().matmul_flops, kDefaultCpuMatmulFlops);
  EXPECT_EQ(inv->cpu().matmul_flops_source, "default");
}

TEST(ParseDevicesTest, BadFlopsNameTheEntry) {
  std::string m = ParseError("cpu=8GiB@0GFLOPS");
  EXPECT_NE(m.find("'cpu=8GiB@0GFLOPS'"), std::string::npos) << m;
  EXPECT_NE(m.find("zero"), std::string::npos) << m;
  m = ParseError("cpu=8GiB@-5GFLOPS");
  EXPECT_NE(m.find("negative"), std::string::npos) << m;
  m = ParseError("cpu=8GiB@xGFLOPS");
  EXPECT_NE(m.find("number"), std::string::npos) << m;
  m = ParseError("cpu=8GiB@5QFLOPS");
  EXPECT_NE(m.find("prefix"), std::string::npos) << m;
  m = ParseError("cpu=8GiB@5EFLOPS");
  EXPECT_NE(m.find("prefix"), std::string::npos) << m;
  m = ParseError("cpu=8GiB@2000PFLOPS");
  EXPECT_NE(m.find("absurd"), std::string::npos) << m;
  m = ParseError("cpu=8GiB@1GFLOPS@2GFLOPS");
  EXPECT_NE(m.find("more than one FLOPS"), std::string::npos) << m;
  m = ParseError("cpu=8GiB@40GB/s@50GB/s");
  EXPECT_NE(m.find("more than one bandwidth"), std::string::npos) << m;
  m = ParseError("cpu=8GiB@40GB/s@");
  EXPECT_NE(m.find("'cpu=8GiB@40GB/s@'"), std::string::npos) << m;
  m = ParseError("cpu=8GiB@inf FLOPS");
  EXPECT_NE(m.find("'cpu=8GiB@inf FLOPS'"), std::string::npos) << m;
}

TEST(ParseDevicesTest, WhitespaceAndCaseTolerated) {
  StatusOr<DeviceInventory> inv =
      ParseDevices("  CUDA0 = 24 GiB @ 3.35 TB/s ,\tcuda1=8GiB ,  Cpu =64GiB  \n");
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  ASSERT_EQ(inv->devices.size(), 3u);
  EXPECT_EQ(inv->devices[0].name, "cuda0");
  EXPECT_EQ(inv->devices[0].free_bytes, uint64_t{24} << 30);
  EXPECT_DOUBLE_EQ(inv->devices[0].bandwidth_bytes_per_s, 3.35e12);
  EXPECT_EQ(inv->devices[1].name, "cuda1");
  EXPECT_EQ(inv->cpu().name, "cpu");
  EXPECT_EQ(inv->cpu().free_bytes, uint64_t{64} << 30);
}

TEST(ParseDevicesTest, ErrorsNameTheEntry) {
  EXPECT_NE(ParseError("").find("empty device description"), std::string::npos);
  EXPECT_NE(ParseError("   ").find("empty device description"), std::string::npos);
  EXPECT_NE(ParseError("cuda0=24GiB").find("no cpu entry"), std::string::npos);

  std::string m = ParseError("cuda0=24GiB,,cpu=8GiB");
  EXPECT_NE(m.find("entry 2 is empty"), std::string::npos) << m;
  m = ParseError("cpu=8GiB,");
  EXPECT_NE(m.find("entry 2 is empty"), std::string::npos) << m;

  m = ParseError("cpu=8GiB,cpu=16GiB");
  EXPECT_NE(m.find("'cpu=16GiB'"), std::string::npos) << m;
  EXPECT_NE(m.find("twice"), std::string::npos) << m;
  m = ParseError("cuda0=8GiB,cuda0=16GiB,cpu=1GiB");
  EXPECT_NE(m.find("'cuda0=16GiB'"), std::string::npos) << m;
  EXPECT_NE(m.find("twice"), std::string::npos) << m;

  m = ParseError("tpu0=8GiB,cpu=8GiB");
  EXPECT_NE(m.find("'tpu0=8GiB'"), std::string::npos) << m;
  EXPECT_NE(m.find("unknown device 'tpu0'"), std::string::npos) << m;
  for (const char* bad : {"cuda=1GiB,cpu=1GiB", "cuda01=1GiB,cpu=1GiB", "cudax=1GiB,cpu=1GiB",
                          "gpu0=1GiB,cpu=1GiB", "cuda-1=1GiB,cpu=1GiB"}) {
    m = ParseError(bad);
    EXPECT_NE(m.find("unknown device"), std::string::npos) << bad << ": " << m;
  }

  m = ParseError("cuda1=8GiB,cpu=8GiB");
  EXPECT_NE(m.find("'cuda1=8GiB'"), std::string::npos) << m;
  EXPECT_NE(m.find("cuda1 without cuda0"), std::string::npos) << m;
  m = ParseError("cuda1=8GiB,cuda0=8GiB,cpu=8GiB");
  EXPECT_NE(m.find("cuda1 without cuda0"), std::string::npos) << m;
  m = ParseError("cuda0=8GiB,cuda2=8GiB,cpu=8GiB");
  EXPECT_NE(m.find("cuda2 without cuda1"), std::string::npos) << m;

  m = ParseError("cuda0=0B,cpu=8GiB");
  EXPECT_NE(m.find("'cuda0=0B'"), std::string::npos) << m;
  EXPECT_NE(m.find("zero"), std::string::npos) << m;
  // A bare number is not silently bytes (cuda0=8 meant 8 GiB).
  m = ParseError("cuda0=8,cpu=8GiB");
  EXPECT_NE(m.find("size '8' has no unit (write 8GiB, 8MiB or 8B)"), std::string::npos) << m;
  m = ParseError("cpu=0GiB");
  EXPECT_NE(m.find("zero"), std::string::npos) << m;
  m = ParseError("cpu=lots");
  EXPECT_NE(m.find("'cpu=lots'"), std::string::npos) << m;
  m = ParseError("cpu=8XB");
  EXPECT_NE(m.find("'cpu=8XB'"), std::string::npos) << m;
  m = ParseError("cpu=");
  EXPECT_NE(m.find("size is missing"), std::string::npos) << m;
  m = ParseError("cpu");
  EXPECT_NE(m.find("NAME=SIZE"), std::string::npos) << m;
  m = ParseError("cpu=-8GiB");
  EXPECT_NE(m.find("'cpu=-8GiB'"), std::string::npos) << m;
  EXPECT_NE(m.find("negative"), std::string::npos) << m;
  m = ParseError("cpu=2000000TiB");  // ~2^61 bytes
  EXPECT_NE(m.find("absurd"), std::string::npos) << m;
  m = ParseError("cpu=99999999999999999999999TiB");  // past 64 bits
  EXPECT_NE(m.find("'cpu=99999999999999999999999TiB'"), std::string::npos) << m;

  m = ParseError("cuda0=8GiB@,cpu=8GiB");
  EXPECT_NE(m.find("'cuda0=8GiB@'"), std::string::npos) << m;
  m = ParseError("cuda0=8GiB@fast,cpu=8GiB");
  EXPECT_NE(m.find("'cuda0=8GiB@fast'"), std::string::npos) << m;
  m = ParseError("cuda0=8GiB@0GB/s,cpu=8GiB");
  EXPECT_NE(m.find("zero"), std::string::npos) << m;
}

TEST(ParseDevicesTest, LargestAcceptedSize) {
  StatusOr<DeviceInventory> inv = ParseDevices("cpu=1048576TiB");  // exactly 2^60
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->cpu().free_bytes, uint64_t{1} << 60);
}

// ---------------------------------------------------------------------------------------------
// ParseBandwidth / FormatBandwidth

TEST(ParseBandwidthTest, DecimalAndBinaryUnits) {
  struct Case {
    const char* text;
    double expected;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"900GB/s", 900e9},
           {"900 GB/s", 900e9},
           {"900gb/s", 900e9},
           {"900G", 900e9},
           {"900GB", 900e9},
           {"3.35TB/s", 3.35e12},
           {"51.2 GB / s", 51.2e9},
           {"40e9", 40e9},
           {"40e9B/s", 40e9},
           {"500 MB/s", 500e6},
           {"12kB/s", 12e3},
           {"1PB/s", 1e15},
           {"1GiB/s", 1073741824.0},
           {"1.5TiB/s", 1.5 * 1099511627776.0},
       }) {
    StatusOr<double> v = ParseBandwidth(c.text);
    ASSERT_TRUE(v.ok()) << c.text << ": " << v.status().ToString();
    EXPECT_DOUBLE_EQ(*v, c.expected) << c.text;
  }
}

TEST(ParseBandwidthTest, Errors) {
  for (const char* bad : {"", "  ", "/s", "-5GB/s", "0", "0GB/s", "fast", "900XB/s", "900GBps",
                          "900 GiBB/s", "inf", "nan", "2PB/s", "1e400"}) {
    EXPECT_FALSE(ParseBandwidth(bad).ok()) << "'" << bad << "' parsed";
  }
}

TEST(ParseFlopsTest, UnitsAndErrors) {
  EXPECT_DOUBLE_EQ(ParseFlops("200GFLOPS").value(), 200e9);
  EXPECT_DOUBLE_EQ(ParseFlops(" 1.5 TFLOP/s ").value(), 1.5e12);
  EXPECT_DOUBLE_EQ(ParseFlops("5e10flops").value(), 5e10);
  EXPECT_DOUBLE_EQ(ParseFlops("3 kFlops").value(), 3e3);
  EXPECT_DOUBLE_EQ(ParseFlops("2MFLOPS").value(), 2e6);
  EXPECT_DOUBLE_EQ(ParseFlops("1PFLOPS").value(), 1e15);
  for (const char* bad : {"", "200", "200G", "200GB/s", "GFLOPS", "-1GFLOPS", "0FLOPS",
                          "nanFLOPS", "infGFLOPS", "2e18FLOPS", "1GiFLOPS", "1 G G FLOPS"}) {
    EXPECT_FALSE(ParseFlops(bad).ok()) << "'" << bad << "' parsed";
  }
}

TEST(FormatFlopsTest, ThreeSignificantDigits) {
  EXPECT_EQ(FormatFlops(200e9), "200 GFLOP/s");
  EXPECT_EQ(FormatFlops(55.44e9), "55.4 GFLOP/s");
  EXPECT_EQ(FormatFlops(1.5e12), "1.50 TFLOP/s");
  EXPECT_EQ(FormatFlops(999.7e9), "1.00 TFLOP/s");
  EXPECT_EQ(FormatFlops(12), "12 FLOP/s");
}

TEST(FormatBandwidthTest, ThreeSignificantDigits) {
  EXPECT_EQ(FormatBandwidth(900e9), "900 GB/s");
  EXPECT_EQ(FormatBandwidth(40e9), "40.0 GB/s");
  EXPECT_EQ(FormatBandwidth(3.35e12), "3.35 TB/s");
  EXPECT_EQ(FormatBandwidth(999.7e9), "1.00 TB/s");
  EXPECT_EQ(FormatBandwidth(512), "512 B/s");
  EXPECT_EQ(FormatBandwidth(1.5e6), "1.50 MB/s");
}

// ---------------------------------------------------------------------------------------------
// DiscoverCpu with fake /proc and /sys files

class DiscoverCpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("ferry_device_test_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "v2");
    fs::create_directories(root_ / "v1");
    sources_.meminfo = (root_ / "meminfo").string();
    sources_.cgroup_v2_dir = (root_ / "v2").string();
    sources_.cgroup_v1_dir = (root_ / "v1").string();
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const std::string& relative, const std::string& text) {
    std::ofstream out(root_ / relative, std::ios::binary | std::ios::trunc);
    out << text;
    ASSERT_TRUE(out.good());
  }
  // A meminfo with MemTotal = 16 GiB and the given MemAvailable in kB.
  void WriteMeminfo(uint64_t available_kb) {
    Write("meminfo",
          "MemTotal:       16777216 kB\n"
          "MemFree:          500000 kB\n"
          "MemAvailable:   " +
              std::to_string(available_kb) +
              " kB\n"
              "Buffers:           12345 kB\n"
              "Cached:           800000 kB\n"
              "SwapCached:            0 kB\n");
  }

  fs::path root_;
  CpuMemorySources sources_;
};

TEST_F(DiscoverCpuTest, MemAvailableWithoutCgroup) {
  WriteMeminfo(1000);
  StatusOr<Device> cpu = DiscoverCpu(sources_);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->name, "cpu");
  EXPECT_EQ(cpu->kind, DeviceKind::kCpu);
  EXPECT_EQ(cpu->free_bytes, 1000u * 1024u);
  EXPECT_EQ(cpu->total_bytes, uint64_t{16} << 30);
  EXPECT_EQ(cpu->source, "MemAvailable");
  EXPECT_EQ(cpu->bandwidth_bytes_per_s, kDefaultCpuBandwidth);
}

TEST_F(DiscoverCpuTest, CgroupV2MaxMeansNoLimit) {
  WriteMeminfo(8 * 1024 * 1024);  // 8 GiB
  Write("v2/memory.max", "max\n");
  Write("v2/memory.current", "1000\n");
  // A v1 limit must be ignored when the v2 file exists.
  Write("v1/memory.limit_in_bytes", "1048576\n");
  Write("v1/memory.usage_in_bytes", "0\n");
  StatusOr<Device> cpu = DiscoverCpu(sources_);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->free_bytes, uint64_t{8} << 30);
  EXPECT_EQ(cpu->total_bytes, uint64_t{16} << 30);
  EXPECT_EQ(cpu->source, "MemAvailable");
}

TEST_F(DiscoverCpuTest, CgroupV2LimitLowerWins) {
  WriteMeminfo(8 * 1024 * 1024);                                     // 8 GiB available
  Write("v2/memory.max", std::to_string(uint64_t{4} << 30) + "\n");  // 4 GiB limit
  Write("v2/memory.current", std::to_string(uint64_t{1} << 30) + "\n");
  StatusOr<Device> cpu = DiscoverCpu(sources_);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->free_bytes, uint64_t{3} << 30);
  EXPECT_EQ(cpu->total_bytes, uint64_t{4} << 30);
  EXPECT_EQ(cpu->source, "cgroup memory.max");
}

TEST_F(DiscoverCpuTest, CgroupV2ReclaimablePageCacheCountsAsFree) {
  WriteMeminfo(8 * 1024 * 1024);
  Write("v2/memory.max", std::to_string(uint64_t{4} << 30));
  Write("v2/memory.current", std::to_string(uint64_t{3} << 30));
  Write("v2/memory.stat", "anon 1073741824\nfile 2147483648\nactive_file 0\ninactive_file " +
                              std::to_string(uint64_t{2} << 30) + "\n");
  StatusOr<Device> cpu = DiscoverCpu(sources_);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->free_bytes, uint64_t{3} << 30);  // 4 - (3 - 2)
  EXPECT_EQ(cpu->source, "cgroup memory.max");
}

TEST_F(DiscoverCpuTest, CgroupV2HeadroomAboveMemAvailable) {
  WriteMeminfo(1000);
  Write("v2/memory.max", std::to_string(uint64_t{4} << 30));
  Write("v2/memory.current", "0");
  StatusOr<Device> cpu = DiscoverCpu(sources_);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->free_bytes, 1000u * 1024u);
  EXPECT_EQ(cpu->total_bytes, uint64_t{4} << 30);  // total is the cgroup limit
  EXPECT_EQ(cpu->source, "MemAvailable");
}

TEST_F(DiscoverCpuTest, CgroupV2UsageAboveLimitGivesZero) {
  WriteMeminfo(8 * 1024 * 1024);
  Write("v2/memory.max", "1000000");
  Write("v2/memory.current", "2000000");
  StatusOr<Device> cpu = DiscoverCpu(sources_);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->free_bytes, 0u);
  EXPECT_EQ(cpu->source, "cgroup memory.max");
}

TEST_F(DiscoverCpuTest, CgroupV1Fallback) {
  WriteMeminfo(8 * 1024 * 1024);
  Write("v1/memory.limit_in_bytes", std::to_string(uint64_t{2} << 30) + "\n");
  Write("v1/memory.usage_in_bytes", std::to_string(uint64_t{1} << 30) + "\n");
  Write("v1/memory.stat", "cache 0\ninactive_file 1\ntotal_inactive_file " +
                              std::to_string(uint64_t{1} << 29) + "\n");
  StatusOr<Device> cpu = DiscoverCpu(sources_);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->free_bytes, (uint64_t{3} << 29));  // 2 GiB - (1 GiB - 0.5 GiB)
  EXPECT_EQ(cpu->total_bytes, uint64_t{2} << 30);
  EXPECT_EQ(cpu->source, "cgroup memory.limit_in_bytes");
}

TEST_F(DiscoverCpuTest, CgroupV1UnlimitedIsNoLimit) {
  WriteMeminfo(1000);
  Write("v1/memory.limit_in_bytes", "9223372036854771712\n");
  Write("v1/memory.usage_in_bytes", "3034562560\n");
  StatusOr<Device> cpu = DiscoverCpu(sources_);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->free_bytes, 1000u * 1024u);
  EXPECT_EQ(cpu->total_bytes, uint64_t{16} << 30);
  EXPECT_EQ(cpu->source, "MemAvailable");
}

TEST_F(DiscoverCpuTest, UnreadableCgroupLimitIsIgnored) {
  WriteMeminfo(1000);
  Write("v2/memory.max", "garbage\n");
  StatusOr<Device> cpu = DiscoverCpu(sources_);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->source, "MemAvailable");
}

TEST_F(DiscoverCpuTest, OldKernelWithoutMemAvailable) {
  Write("meminfo", "MemTotal: 1000 kB\nMemFree: 100 kB\nCached: 50 kB\nSwapCached: 7 kB\n");
  StatusOr<Device> cpu = DiscoverCpu(sources_);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->free_bytes, 150u * 1024u);
  EXPECT_EQ(cpu->source, "MemFree");
}

TEST_F(DiscoverCpuTest, MissingMeminfoNamesThePath) {
  StatusOr<Device> cpu = DiscoverCpu(sources_);
  ASSERT_FALSE(cpu.ok());
  EXPECT_EQ(cpu.status().code(), StatusCode::kNotFound);
  EXPECT_NE(cpu.status().message().find(sources_.meminfo), std::string::npos)
      << cpu.status().message();
}

TEST_F(DiscoverCpuTest, MeminfoWithoutMemTotal) {
  Write("meminfo", "MemAvailable: 1000 kB\n");
  StatusOr<Device> cpu = DiscoverCpu(sources_);
  ASSERT_FALSE(cpu.ok());
  EXPECT_NE(cpu.status().message().find("MemTotal"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// DiscoverDevices on this machine, and the GPU reservations

TEST(DiscoverDevicesTest, ThisMachine) {
  StatusOr<DeviceInventory> inv = DiscoverDevices();
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  ASSERT_FALSE(inv->devices.empty());
  const Device& cpu = inv->cpu();
  EXPECT_EQ(cpu.name, "cpu");
  EXPECT_EQ(cpu.kind, DeviceKind::kCpu);
  EXPECT_GT(cpu.free_bytes, 0u);
  EXPECT_LE(cpu.free_bytes, cpu.total_bytes);
  EXPECT_GT(cpu.bandwidth_bytes_per_s, 0.0);
  EXPECT_FALSE(cpu.source.empty());
  if (!BuiltWithCuda()) {
    EXPECT_TRUE(inv->gpus().empty());
  }
  RecordProperty("inventory", DescribeInventory(*inv));
  int cpus = 0;
  for (size_t i = 0; i < inv->devices.size(); ++i) {
    const Device& d = inv->devices[i];
    if (d.kind == DeviceKind::kCpu) ++cpus;
    if (d.kind == DeviceKind::kCuda) {
      EXPECT_LT(i + 1, inv->devices.size());  // GPUs before the CPU
      EXPECT_EQ(d.name, "cuda" + std::to_string(d.index));
      EXPECT_LE(d.free_bytes, d.total_bytes);
      EXPECT_GT(d.bandwidth_bytes_per_s, 0.0);
      EXPECT_EQ(d.source, "CUDA");
    }
  }
  EXPECT_EQ(cpus, 1);
}

TEST(DiscoverDevicesTest, MissingMeminfoIsAnError) {
  DiscoverOptions options;
  options.cpu_sources.meminfo = "/nonexistent/ferry/meminfo";
  StatusOr<DeviceInventory> inv = DiscoverDevices(options);
  ASSERT_FALSE(inv.ok());
  EXPECT_NE(inv.status().message().find("/nonexistent/ferry/meminfo"), std::string::npos);
}

TEST(GpuReservationsTest, OverheadAndCapApplyToGpusOnly) {
  StatusOr<DeviceInventory> inv = ParseDevices("cuda0=24GiB,cuda1=4GiB,cpu=64GiB");
  ASSERT_TRUE(inv.ok());
  DiscoverOptions options;
  options.gpu_overhead_bytes = uint64_t{1} << 30;
  ApplyGpuReservations(*inv, options);
  EXPECT_EQ(inv->devices[0].free_bytes, uint64_t{23} << 30);
  EXPECT_EQ(inv->devices[1].free_bytes, uint64_t{3} << 30);
  EXPECT_EQ(inv->devices[0].total_bytes, uint64_t{24} << 30);  // total is untouched
  EXPECT_EQ(inv->cpu().free_bytes, uint64_t{64} << 30);

  inv = ParseDevices("cuda0=24GiB,cuda1=4GiB,cpu=64GiB");
  ASSERT_TRUE(inv.ok());
  options.gpu_memory_bytes = uint64_t{8} << 30;
  ApplyGpuReservations(*inv, options);
  EXPECT_EQ(inv->devices[0].free_bytes, uint64_t{8} << 30);  // min(24 - 1, 8)
  EXPECT_EQ(inv->devices[1].free_bytes, uint64_t{3} << 30);  // min(4 - 1, 8)
  EXPECT_EQ(inv->cpu().free_bytes, uint64_t{64} << 30);
}

TEST(GpuReservationsTest, OverheadLargerThanFreeLeavesZero) {
  StatusOr<DeviceInventory> inv = ParseDevices("cuda0=2GiB,cpu=8GiB");
  ASSERT_TRUE(inv.ok());
  DiscoverOptions options;
  options.gpu_overhead_bytes = uint64_t{3} << 30;
  ApplyGpuReservations(*inv, options);
  EXPECT_EQ(inv->devices[0].free_bytes, 0u);
}

TEST(GpuReservationsTest, NoOptionsChangeNothing) {
  StatusOr<DeviceInventory> inv = ParseDevices("cuda0=2GiB,cpu=8GiB");
  ASSERT_TRUE(inv.ok());
  ApplyGpuReservations(*inv, DiscoverOptions{});
  EXPECT_EQ(inv->devices[0].free_bytes, uint64_t{2} << 30);
}

// ---------------------------------------------------------------------------------------------
// DescribeInventory

TEST(DescribeInventoryTest, Format) {
  StatusOr<DeviceInventory> inv = ParseDevices("cuda0=24GiB,cpu=64GiB");
  ASSERT_TRUE(inv.ok());
  EXPECT_EQ(DescribeInventory(*inv),
            "cuda0 24.0 GiB free of 24.0 GiB (described), cpu 64.0 GiB (described)");

  DeviceInventory discovered;
  Device gpu;
  gpu.name = "cuda0";
  gpu.kind = DeviceKind::kCuda;
  gpu.total_bytes = uint64_t{80} << 30;
  gpu.free_bytes = uint64_t{79} << 30;
  gpu.source = "CUDA";
  Device cpu;
  cpu.name = "cpu";
  cpu.total_bytes = uint64_t{64} << 30;
  cpu.free_bytes = static_cast<uint64_t>(61.2 * (1 << 30));
  cpu.source = "MemAvailable";
  discovered.devices = {gpu, cpu};
  EXPECT_EQ(DescribeInventory(discovered),
            "cuda0 79.0 GiB free of 80.0 GiB (CUDA), cpu 61.2 GiB (MemAvailable)");
  // A measured context shows after the total.
  discovered.devices[0].context_bytes = uint64_t{512} << 20;
  EXPECT_EQ(DescribeInventory(discovered),
            "cuda0 79.0 GiB free of 80.0 GiB, context 512 MiB (CUDA), cpu 61.2 GiB "
            "(MemAvailable)");

  EXPECT_EQ(DescribeInventory(DeviceInventory{}), "");
}

}  // namespace
}  // namespace ferry
