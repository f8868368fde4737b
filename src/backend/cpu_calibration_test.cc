#include "backend/cpu_calibration.h"

#include <gtest/gtest.h>

#include <cmath>

#include "backend/device.h"

namespace ferry {
namespace {

// The calibration is a measurement: these tests check that it returns usable numbers, never
// how fast anything ran.

TEST(CpuCalibrationTest, ReturnsPositiveFiniteRates) {
  CpuCalibrationOptions options;
  options.num_threads = 2;
  options.budget_seconds = 0.002;
  StatusOr<CpuCalibration> c = CalibrateCpuMatmul(options);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(std::isfinite(c->matmul_flops));
  EXPECT_GT(c->matmul_flops, 0.0);
  EXPECT_EQ(c->num_threads, 2);
  ASSERT_EQ(c->flops_by_type.size(), options.types.size());
  for (DType t : options.types) {
    ASSERT_TRUE(c->flops_by_type.count(t)) << DTypeName(t);
    EXPECT_TRUE(std::isfinite(c->flops_by_type.at(t))) << DTypeName(t);
    EXPECT_GT(c->flops_by_type.at(t), 0.0) << DTypeName(t);
  }
  EXPECT_EQ(c->matmul_flops, c->flops_by_type.at(DType::kQ4_K));
  RecordProperty("q4_k_gflops", std::to_string(c->matmul_flops / 1e9));
}

TEST(CpuCalibrationTest, ZeroThreadsMeansAllCoresAndZeroBudgetStillTimesOnce) {
  CpuCalibrationOptions options;
  options.types = {DType::kQ8_0};
  options.representative = DType::kQ8_0;
  options.budget_seconds = 0.0;
  StatusOr<CpuCalibration> c = CalibrateCpuMatmul(options);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_GE(c->num_threads, 1);
  EXPECT_GT(c->matmul_flops, 0.0);
  EXPECT_TRUE(std::isfinite(c->matmul_flops));
}

TEST(CpuCalibrationTest, BadOptions) {
  CpuCalibrationOptions o;
  o.types = {};
  EXPECT_FALSE(CalibrateCpuMatmul(o).ok());
  o = {};
  o.types = {DType::kQ5_K};  // no reference quantizer: no synthetic matrix
  o.representative = DType::kQ5_K;
  EXPECT_FALSE(CalibrateCpuMatmul(o).ok());
  o = {};
  o.types = {DType::kQ8_0};  // representative Q4_K is not timed
  EXPECT_FALSE(CalibrateCpuMatmul(o).ok());
  o = {};
  o.num_threads = -1;
  EXPECT_FALSE(CalibrateCpuMatmul(o).ok());
  o = {};
  o.budget_seconds = -1.0;
  EXPECT_FALSE(CalibrateCpuMatmul(o).ok());
  o.budget_seconds = NAN;
  EXPECT_FALSE(CalibrateCpuMatmul(o).ok());
}

TEST(CpuCalibrationTest, DiscoveryMeasuresUnlessOverridden) {
  DiscoverOptions measure;
  measure.cpu_threads = 1;
  StatusOr<DeviceInventory> inv = DiscoverDevices(measure);
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->cpu().matmul_flops_source, "measured");
  EXPECT_GT(inv->cpu().matmul_flops, 0.0);
  EXPECT_TRUE(std::isfinite(inv->cpu().matmul_flops));
  EXPECT_FALSE(inv->cpu().matmul_flops_by_type.empty());

  DiscoverOptions given;
  given.cpu_matmul_flops = 123e9;
  inv = DiscoverDevices(given);
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->cpu().matmul_flops, 123e9);
  EXPECT_EQ(inv->cpu().matmul_flops_source, "override");
  EXPECT_TRUE(inv->cpu().matmul_flops_by_type.empty());

  DiscoverOptions off;
  off.cpu_matmul_flops = 0.0;
  inv = DiscoverDevices(off);
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->cpu().matmul_flops, 0.0);
  EXPECT_EQ(inv->cpu().matmul_flops_source, "off");
}

TEST(CpuCalibrationTest, BandwidthIsPositiveAndFinite) {
  BandwidthCalibrationOptions options;
  options.num_threads = 2;
  options.buffer_bytes = uint64_t{16} << 20;
  options.budget_seconds = 0.0;
  StatusOr<BandwidthCalibration> c = CalibrateCpuBandwidth(options);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->num_threads, 2);
  EXPECT_EQ(c->rounds, options.min_rounds);  // no budget beyond the minimum
  EXPECT_TRUE(std::isfinite(c->bytes_per_s));
  EXPECT_GT(c->bytes_per_s, 0.0);
  // The fastest round is never slower than the median one.
  EXPECT_GE(c->bytes_per_s, c->median_bytes_per_s);
  RecordProperty("read_gb_per_s", std::to_string(c->bytes_per_s / 1e9));
}

TEST(CpuCalibrationTest, BandwidthBadOptions) {
  BandwidthCalibrationOptions o;
  o.num_threads = -1;
  EXPECT_EQ(CalibrateCpuBandwidth(o).status().code(), StatusCode::kInvalidArgument);
  o = {};
  o.buffer_bytes = 1000;  // below 1 MiB
  EXPECT_EQ(CalibrateCpuBandwidth(o).status().code(), StatusCode::kInvalidArgument);
  o = {};
  o.buffer_bytes = uint64_t{1} << 40;
  EXPECT_EQ(CalibrateCpuBandwidth(o).status().code(), StatusCode::kInvalidArgument);
  o = {};
  o.min_rounds = 0;
  EXPECT_EQ(CalibrateCpuBandwidth(o).status().code(), StatusCode::kInvalidArgument);
  o = {};
  o.budget_seconds = NAN;
  EXPECT_EQ(CalibrateCpuBandwidth(o).status().code(), StatusCode::kInvalidArgument);
}

TEST(CpuCalibrationTest, DiscoveryMeasuresBandwidthUnlessOverridden) {
  DiscoverOptions measure;
  measure.cpu_threads = 1;
  measure.cpu_matmul_flops = 0.0;
  StatusOr<DeviceInventory> inv = DiscoverDevices(measure);
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->cpu().bandwidth_source, "measured");
  EXPECT_GT(inv->cpu().bandwidth_bytes_per_s, 0.0);
  EXPECT_TRUE(std::isfinite(inv->cpu().bandwidth_bytes_per_s));

  DiscoverOptions given;
  given.cpu_matmul_flops = 0.0;
  given.cpu_bandwidth = 12e9;
  inv = DiscoverDevices(given);
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->cpu().bandwidth_bytes_per_s, 12e9);
  EXPECT_EQ(inv->cpu().bandwidth_source, "override");
  EXPECT_FALSE(inv->cpu().looked_busy);

  given.cpu_bandwidth = 0.0;
  inv = DiscoverDevices(given);
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_EQ(inv->cpu().bandwidth_bytes_per_s, kDefaultCpuBandwidth);
  EXPECT_EQ(inv->cpu().bandwidth_source, "default");
}

}  // namespace
}  // namespace ferry
