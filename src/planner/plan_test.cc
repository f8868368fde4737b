#include "planner/plan.h"

#include <gtest/gtest.h>

#include "base/bytes.h"
#include "kv/kv_cache.h"
#include "model/cuda_layers.h"
#include "sampling/sampler.h"
#include "tokenizer/vocab.h"

namespace ferry {
namespace {

const std::string kShared = FERRY_SHARED_DIR;

// Llama-3-8B shape with Q4_K weights and a Q6_K output (Q4_K_M-like).
ModelShape Llama3_8B() {
  DescribedModel d{.name = "llama3-8b",
                   .n_layer = 32,
                   .n_embd = 4096,
                   .n_ff = 14336,
                   .n_head = 32,
                   .n_head_kv = 8,
                   .head_dim = 128,
                   .n_vocab = 128256,
                   .n_ctx_train = 8192,
                   .weight_type = DType::kQ4_K,
                   .output_type = DType::kQ6_K};
  return *ShapeFromDescription(d);
}

DeviceInventory Devices(std::string_view text) {
  auto inv = ParseDevices(text);
  EXPECT_TRUE(inv.ok()) << inv.status().ToString();
  return *inv;
}

uint64_t KvTotal(const Plan& p) {
  uint64_t kv = 0;
  for (const auto& d : p.devices) kv += d.kv_bytes;
  return kv;
}

TEST(PlanTest, Llama3On24GiBKeepsEverythingOnTheGpu) {
  LoadOptions o;
  o.num_ctx = 32768;
  auto p = MakePlan(Llama3_8B(), Devices("cuda0=24GiB,cpu=64GiB"), o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  // 2 (K and V) x 32 layers x 8 heads x 128 x 2 bytes per token x 32768 tokens = 4 GiB.
  EXPECT_EQ(KvTotal(*p), 4 * kGiB);
  EXPECT_EQ(p->devices[0].kv_bytes, 4 * kGiB);
  EXPECT_EQ(p->devices[0].layers.size(), 32u);
  EXPECT_TRUE(p->devices[0].has_output);
  EXPECT_TRUE(p->devices[1].layers.empty());
  EXPECT_TRUE(p->devices[1].has_input);
  EXPECT_EQ(p->gpu_layers, 33);
  EXPECT_GT(p->predicted_tok_s, 0.0);
  // Above the trained context: allowed, with a warning.
  ASSERT_EQ(p->warnings.size(), 1u);
  EXPECT_NE(p->warnings[0].find("trained on"), std::string::npos);
}

TEST(PlanTest, TheCpuReservesTheHostScratchAndAGpuTheDeviceArrays) {
  const ModelShape m = Llama3_8B();
  LoadOptions o;
  o.num_ctx = 8192;  // num_batch 512: a step of 512 tokens
  // Every layer and the output on the GPU: the CPU still holds the step's host arrays (the
  // embedding rows, the rotary angles, the output rows and logits), the whole host scratch.
  auto p = MakePlan(m, Devices("cuda0=24GiB,cpu=64GiB"), o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const DevicePlan& gpu = p->devices[0];
  const DevicePlan& cpu = p->devices[1];
  ASSERT_TRUE(cpu.has_input && cpu.layers.empty() && !cpu.has_output);
  EXPECT_EQ(cpu.compute_bytes, ComputeBufferBytes(m, o));
  EXPECT_EQ(gpu.kind, DeviceKind::kCuda);
  EXPECT_EQ(gpu.index, 0);
  EXPECT_EQ(cpu.kind, DeviceKind::kCpu);
  // The GPU: what CudaLayers allocates, the device scratch plus the rounded activations
  // [512, widest input = n_ff 14336] f32, the KV row pointers [2, 512] and the step tables of
  // its 32 layers: rows [32, 2, 512] and blocks [32, kStepRuns 8, 2, 8192 / 32 + 2 slots].
  const ScratchShape shape = ComputeScratchShape(m, o);
  EXPECT_EQ(gpu.compute_bytes, GpuComputeBufferBytes(m, o, 32));
  EXPECT_EQ(GpuComputeBufferBytes(m, o, 32), CudaLayers::ComputeBytes(shape, 32));
  EXPECT_EQ(GpuComputeBufferBytes(m, o, 32),
            ForwardScratch::RequiredBytes(shape) + 512 * 14336 * sizeof(float) +
                2 * 512 * sizeof(void*) + 32 * 2 * 512 * sizeof(void*) +
                32 * 8 * 2 * (8192 / 32 + 2) * sizeof(void*));
  // A split: both reserve their own.
  o.num_gpu = 32;  // the output and 31 blocks on the GPU, block 0 on the CPU
  auto split = MakePlan(m, Devices("cuda0=24GiB,cpu=64GiB"), o);
  ASSERT_TRUE(split.ok()) << split.status().ToString();
  EXPECT_EQ(split->devices[1].layers.size(), 1u);
  EXPECT_EQ(split->devices[1].compute_bytes, ComputeBufferBytes(m, o));
  EXPECT_EQ(split->devices[0].compute_bytes, GpuComputeBufferBytes(m, o, 31));
  // Nothing on the GPU: it reserves nothing.
  o.num_gpu = 0;
  auto none = MakePlan(m, Devices("cuda0=24GiB,cpu=64GiB"), o);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(none->devices[0].compute_bytes, 0u);
}

TEST(PlanTest, KvTypesUseExactBlockSizes) {
  LoadOptions o;
  o.num_ctx = 32768;
  o.kv_type = DType::kQ8_0;
  auto p = MakePlan(Llama3_8B(), Devices("cuda0=24GiB,cpu=64GiB"), o);
  ASSERT_TRUE(p.ok());
  // q8_0: 34 bytes per 32 values, not 1 byte per value.
  EXPECT_EQ(KvTotal(*p), uint64_t{2} * 32 * (8 * 128 / 32) * 34 * 32768);
}

TEST(PlanTest, SmallGpuSpillsLayersToTheCpuAndSaysWhich) {
  LoadOptions o;
  o.num_ctx = 32768;
  auto p = MakePlan(Llama3_8B(), Devices("cuda0=8GiB,cpu=64GiB"), o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const auto& gpu = p->devices[0];
  const auto& cpu = p->devices[1];
  EXPECT_FALSE(cpu.layers.empty());
  EXPECT_FALSE(gpu.layers.empty());
  EXPECT_LE(gpu.total_bytes, gpu.capacity_bytes);
  // The last layers and the output go to the GPU first.
  EXPECT_TRUE(gpu.has_output);
  EXPECT_EQ(gpu.layers.back(), 31);
  EXPECT_EQ(cpu.layers.front(), 0);
  EXPECT_EQ(cpu.layers.size() + gpu.layers.size(), 32u);
  bool warned = false;
  for (const auto& w : p->warnings) warned |= w.find("layers run on the CPU") != std::string::npos;
  EXPECT_TRUE(warned);
  EXPECT_NE(p->Summary().find("cpu [layers 0"), std::string::npos) << p->Summary();
  // Slower than the all-GPU plan, by the bandwidth model.
  auto all_gpu = MakePlan(Llama3_8B(), Devices("cuda0=24GiB,cpu=64GiB"), o);
  EXPECT_LT(p->predicted_tok_s, all_gpu->predicted_tok_s);
}

TEST(PlanTest, TwoGpusSplitInProportionToFreeMemory) {
  LoadOptions o;
  o.num_ctx = 8192;
  auto p = MakePlan(Llama3_8B(), Devices("cuda0=16GiB,cuda1=8GiB,cpu=64GiB"), o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->devices[0].layers.size() + p->devices[1].layers.size(), 32u);
  EXPECT_NEAR(static_cast<double>(p->devices[0].layers.size()), 32.0 * 2 / 3, 1.0);
  EXPECT_TRUE(p->devices[2].layers.empty());
  EXPECT_TRUE(p->devices[0].has_output);  // main_gpu 0
}

TEST(PlanTest, NumGpuZeroIsCpuOnly) {
  LoadOptions o;
  o.num_ctx = 4096;
  o.num_gpu = 0;
  auto p = MakePlan(Llama3_8B(), Devices("cuda0=24GiB,cpu=64GiB"), o);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->devices[0].total_bytes, 0u);
  EXPECT_EQ(p->devices[1].layers.size(), 32u);
  EXPECT_TRUE(p->devices[1].has_output);
}

TEST(PlanTest, BadInput) {
  ModelShape m = Llama3_8B();
  DeviceInventory inv = Devices("cuda0=24GiB,cpu=64GiB");
  LoadOptions o;
  o.num_ctx = 0;
  EXPECT_EQ(MakePlan(m, inv, o).status().code(), StatusCode::kInvalidArgument);
  o.num_ctx = (int64_t{1} << 24) + 1;
  EXPECT_EQ(MakePlan(m, inv, o).status().code(), StatusCode::kInvalidArgument);
  o.num_ctx = 2048;
  o.num_parallel = 0;
  EXPECT_EQ(MakePlan(m, inv, o).status().code(), StatusCode::kInvalidArgument);
  o.num_parallel = 1;
  o.kv_type = DType::kQ5_0;
  EXPECT_EQ(MakePlan(m, inv, o).status().code(), StatusCode::kInvalidArgument);
  o.kv_type = DType::kF16;
  auto tiny = MakePlan(m, Devices("cpu=1GiB"), o);
  ASSERT_FALSE(tiny.ok());
  EXPECT_EQ(tiny.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(tiny.status().message().find("needs"), std::string::npos) << tiny.status().ToString();
  EXPECT_NE(tiny.status().message().find("weights alone"), std::string::npos);
}

TEST(PlanTest, ImpossibleRequestSaysTheSmallestChanges) {
  ModelShape m = Llama3_8B();
  DeviceInventory inv = Devices("cuda0=8GiB,cpu=64GiB");
  LoadOptions o;
  o.num_ctx = 32768;
  o.num_gpu = 33;  // everything on the GPU, as asked
  auto p = MakePlan(m, inv, o);
  ASSERT_FALSE(p.ok());
  const std::string& msg = p.status().message();
  EXPECT_NE(msg.find("more on cuda0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("num_ctx <= "), std::string::npos) << msg;
  EXPECT_NE(msg.find("or kv cache q8_0"), std::string::npos) << msg;
  EXPECT_NE(msg.find(" on CPU (--num-gpu "), std::string::npos) << msg;
  // Nothing fits anywhere: the message says so.
  auto none = MakePlan(m, Devices("cuda0=1GiB,cpu=2GiB"), o);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("weights alone"), std::string::npos);
}

TEST(PlanTest, ContextLimits) {
  ModelShape m = Llama3_8B();
  DeviceInventory inv = Devices("cuda0=24GiB,cpu=32GiB");
  LoadOptions o;
  ContextLimits lim = ComputeContextLimits(m, inv, o);
  ASSERT_GT(lim.max_ctx_all_gpu, 0);
  EXPECT_GE(lim.max_ctx, lim.max_ctx_all_gpu);
  LoadOptions at = o;
  at.num_gpu = 33;
  at.num_ctx = lim.max_ctx_all_gpu;
  EXPECT_TRUE(MakePlan(m, inv, at).ok());
  at.num_ctx = lim.max_ctx_all_gpu + 1;
  EXPECT_FALSE(MakePlan(m, inv, at).ok());
  LoadOptions any = o;
  any.num_ctx = lim.max_ctx;
  EXPECT_TRUE(MakePlan(m, inv, any).ok());
  if (lim.max_ctx < (int64_t{1} << 24)) {
    any.num_ctx = lim.max_ctx + 1;
    EXPECT_FALSE(MakePlan(m, inv, any).ok());
  }
  EXPECT_EQ(ComputeContextLimits(m, Devices("cpu=64GiB"), o).max_ctx_all_gpu, 0);
}

TEST(PlanTest, ShapeFromRealModelAccountsEveryByte) {
  auto model = Model::Load(kShared + "/models/stories260K.gguf");
  ASSERT_TRUE(model.ok());
  ModelShape s = ShapeFromModel(**model);
  uint64_t sum = s.input_bytes + s.output_bytes;
  for (uint64_t b : s.layer_weight_bytes) sum += b;
  uint64_t file = 0;
  for (const auto& t : (*model)->file().tensors()) file += t.n_bytes;
  EXPECT_EQ(sum, file);
  LoadOptions o;
  o.num_ctx = 512;
  auto p = MakePlan(s, Devices("cpu=1GiB"), o);
  ASSERT_TRUE(p.ok());
  // The plan's KV equals what the cache allocates.
  auto kv = KvCache::Create((*model)->KvOptions(DType::kF16, 512, 1, 512));
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(p->devices[0].kv_bytes, (*kv)->bytes_allocated());
  // The loader's host memory is planned on the CPU: header + parsed metadata + vocabulary.
  const auto& f = (*model)->file();
  auto sizes = tokenizer::Vocab::SizesFromGguf(f);
  ASSERT_TRUE(sizes.ok());
  EXPECT_EQ(s.host_bytes,
            f.data_offset() + f.heap_bytes() + tokenizer::Vocab::HeapBytesFor(*sizes));
  const DevicePlan& cpu = p->devices[0];
  EXPECT_EQ(cpu.host_bytes, s.host_bytes);
  EXPECT_EQ(cpu.sampling_bytes, Sampler::WorkspaceBytes(512, 512));
  EXPECT_EQ(cpu.total_bytes, cpu.weights_bytes + cpu.kv_bytes + cpu.compute_bytes + cpu.host_bytes +
                                 cpu.sampling_bytes);
  EXPECT_NE(p->Summary().find("host "), std::string::npos) << p->Summary();
}

TEST(PlannerTest, HostMemoryStaysOnTheCpu) {
  // A described model's host memory is estimated per token; it is never placed on a GPU.
  DescribedModel d{.name = "m",
                   .n_layer = 4,
                   .n_embd = 256,
                   .n_ff = 512,
                   .n_head = 4,
                   .n_head_kv = 4,
                   .head_dim = 64,
                   .n_vocab = 32000,
                   .n_ctx_train = 4096};
  auto m = ShapeFromDescription(d);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->host_bytes, kDescribedHostBaseBytes + 32000 * kDescribedHostBytesPerToken);
  LoadOptions o;
  o.num_ctx = 1024;
  auto p = MakePlan(*m, Devices("cuda0=8GiB,cpu=4GiB"), o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->devices[0].host_bytes, 0u);
  EXPECT_EQ(p->devices[1].host_bytes, m->host_bytes);
  EXPECT_EQ(p->devices[0].sampling_bytes, 0u);
  EXPECT_EQ(p->devices[1].sampling_bytes, Sampler::WorkspaceBytes(32000, 1024));
  EXPECT_EQ(p->devices[1].total_bytes, p->devices[1].weights_bytes + p->devices[1].kv_bytes +
                                           p->devices[1].compute_bytes + m->host_bytes +
                                           p->devices[1].sampling_bytes);
}

TEST(PlanTest, ShapeFromRealModelCountsEveryMatrixElementOnce) {
  auto model = Model::Load(kShared + "/models/stories260K.gguf");
  ASSERT_TRUE(model.ok());
  ModelShape s = ShapeFromModel(**model);
  ASSERT_EQ(s.layer_matmul_elements.size(), static_cast<size_t>(s.n_layer));
  uint64_t counted = 0;
  for (const auto& layer : s.layer_matmul_elements) {
    for (const WeightElements& w : layer) counted += w.elements;
  }
  for (const WeightElements& w : s.output_matmul_elements) counted += w.elements;
  // Every tensor of 2+ dimensions is multiplied once per token, except the input embedding,
  // which is only looked up (unless it doubles as the output).
  uint64_t expected = 0;
  bool tied = true;
  for (const auto& t : (*model)->file().tensors()) tied &= t.name != "output.weight";
  for (const auto& t : (*model)->file().tensors()) {
    if (t.dims.size() < 2) continue;
    if (t.name == "token_embd.weight" && !tied) continue;
    expected += t.n_elements;
  }
  EXPECT_EQ(counted, expected);
  EXPECT_FALSE(s.output_matmul_elements.empty());
}

// ---------------------------------------------------------------------------------------------
// The speed model: per device max(bytes read / bandwidth, FLOPs / mat-vec throughput).

// A small llama shape, Q8_0 weights, Q6_K output: 2 layers, n_embd 256, n_ff 512, 4 heads of
// 64, 2 KV heads, 1000 tokens.
DescribedModel Small(bool tied = false) {
  return DescribedModel{.name = "small",
                        .n_layer = 2,
                        .n_embd = 256,
                        .n_ff = 512,
                        .n_head = 4,
                        .n_head_kv = 2,
                        .head_dim = 64,
                        .n_vocab = 1000,
                        .n_ctx_train = 4096,
                        .weight_type = DType::kQ8_0,
                        .output_type = DType::kQ6_K,
                        .tied_output = tied};
}

// 2 x weight elements multiplied per token + attention at num_ctx keys.
uint64_t SmallFlops(int64_t num_ctx) {
  const uint64_t layer = 256 * 256 + 2 * 256 * 128 + 256 * 256 + 3 * 256 * 512;
  const uint64_t attention = 2 * 4 * (64 + 64) * static_cast<uint64_t>(num_ctx);
  return 2 * (2 * layer + 256 * 1000) + 2 * attention;
}

TEST(PlanSpeedTest, ComputeBoundCpu) {
  LoadOptions o;
  o.num_ctx = 1024;
  auto p = MakePlan(*ShapeFromDescription(Small()), Devices("cpu=8GiB@1TB/s@10GFLOPS"), o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const DevicePlan& cpu = p->devices[0];
  EXPECT_EQ(cpu.flops_per_token, SmallFlops(1024));
  EXPECT_EQ(cpu.flops_per_token, 2'871'296u + 2'097'152u);  // weights + attention
  EXPECT_DOUBLE_EQ(cpu.matmul_flops, 10e9);
  EXPECT_DOUBLE_EQ(cpu.compute_seconds, 4'968'448 / 10e9);
  EXPECT_TRUE(cpu.compute_bound());
  EXPECT_STREQ(cpu.bound(), "compute-bound");
  EXPECT_DOUBLE_EQ(p->predicted_tok_s, 10e9 / 4'968'448);  // 2012.7 tok/s
  EXPECT_NE(p->Summary().find("compute-bound"), std::string::npos) << p->Summary();
}

TEST(PlanSpeedTest, MemoryBoundCpuReadsWeightsAndOneSequencesKv) {
  LoadOptions o;
  o.num_ctx = 1024;
  o.num_parallel = 2;
  ModelShape m = *ShapeFromDescription(Small());
  auto p = MakePlan(m, Devices("cpu=8GiB@10GB/s@100TFLOPS"), o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const DevicePlan& cpu = p->devices[0];
  // Weights except the input embedding (one row is looked up), plus the KV of one of the two
  // sequences: 2 layers x (K + V) x 2 heads x 64 x 2 bytes x 1024 tokens.
  const uint64_t weights = m.layer_weight_bytes[0] * 2 + m.output_bytes;
  EXPECT_EQ(cpu.kv_bytes, uint64_t{2} * 2 * 128 * 2 * 1024 * 2);
  EXPECT_EQ(cpu.bytes_read_per_token, weights + cpu.kv_bytes / 2);
  EXPECT_FALSE(cpu.compute_bound());
  EXPECT_STREQ(cpu.bound(), "memory-bound");
  EXPECT_DOUBLE_EQ(p->predicted_tok_s, 10e9 / static_cast<double>(cpu.bytes_read_per_token));
}

TEST(PlanSpeedTest, TiedOutputOnTheCpuReadsAndMultipliesTheWholeEmbedding) {
  LoadOptions o;
  o.num_ctx = 1024;
  ModelShape m = *ShapeFromDescription(Small(/*tied=*/true));
  auto p = MakePlan(m, Devices("cpu=8GiB@10GB/s@10GFLOPS"), o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const DevicePlan& cpu = p->devices[0];
  EXPECT_EQ(cpu.bytes_read_per_token,
            m.layer_weight_bytes[0] * 2 + m.output_bytes + m.tied_output_bytes + cpu.kv_bytes);
  EXPECT_EQ(cpu.flops_per_token, SmallFlops(1024));
  ASSERT_EQ(m.output_matmul_elements.size(), 1u);
  EXPECT_EQ(m.output_matmul_elements[0].type, DType::kQ8_0);
}

TEST(PlanSpeedTest, SlidingWindowLayersAttendOverTheWindow) {
  LoadOptions o;
  o.num_ctx = 1024;
  ModelShape m = *ShapeFromDescription(Small());
  m.swa_window = {256, 0};
  auto p = MakePlan(m, Devices("cpu=8GiB@1TB/s@10GFLOPS"), o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->devices[0].flops_per_token, SmallFlops(1024) - uint64_t{2} * 4 * 128 * (1024 - 256));
}

TEST(PlanSpeedTest, DevicesAddTheirOwnBound) {
  LoadOptions o;
  o.num_ctx = 1024;
  o.num_gpu = 2;  // the output and layer 1 on the GPU, layer 0 on the CPU
  ModelShape m = *ShapeFromDescription(Small());
  auto p = MakePlan(m, Devices("cuda0=8GiB@1TB/s@1TFLOPS,cpu=8GiB@1TB/s@1GFLOPS"), o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const DevicePlan& gpu = p->devices[0];
  const DevicePlan& cpu = p->devices[1];
  ASSERT_EQ(cpu.layers, std::vector<int64_t>{0});
  ASSERT_TRUE(gpu.has_output);
  const uint64_t layer =
      2 * (256 * 256 + 2 * 256 * 128 + 256 * 256 + 3 * 256 * 512) + 2 * 4 * 128 * 1024;
  EXPECT_EQ(cpu.flops_per_token, layer);
  EXPECT_EQ(gpu.flops_per_token, layer + 2 * 256 * 1000);
  EXPECT_TRUE(cpu.compute_bound());
  EXPECT_DOUBLE_EQ(p->predicted_tok_s,
                   1.0 / (gpu.seconds_per_token() + static_cast<double>(layer) / 1e9));
}

TEST(PlanSpeedTest, PerTypeRatesAndUnknownThroughput) {
  LoadOptions o;
  o.num_ctx = 1024;
  ModelShape m = *ShapeFromDescription(Small());
  DeviceInventory inv = Devices("cpu=8GiB@1TB/s@10GFLOPS");
  // Measured per type: Q8_0 weights at 20 GFLOP/s, the Q6_K output and attention at the
  // device's 10 GFLOP/s.
  inv.devices[0].matmul_flops_by_type = {{DType::kQ8_0, 20e9}};
  auto p = MakePlan(m, inv, o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const double layers = 2.0 * 2 * (256 * 256 + 2 * 256 * 128 + 256 * 256 + 3 * 256 * 512);
  const double rest = 2.0 * 256 * 1000 + 2.0 * 2 * 4 * 128 * 1024;
  EXPECT_DOUBLE_EQ(p->devices[0].compute_seconds, layers / 20e9 + rest / 10e9);

  // matmul_flops 0: unknown, the bandwidth alone (the model before the compute term).
  inv.devices[0].matmul_flops = 0.0;
  inv.devices[0].matmul_flops_by_type.clear();
  p = MakePlan(m, inv, o);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->devices[0].compute_seconds, 0.0);
  EXPECT_GT(p->devices[0].flops_per_token, 0u);
  EXPECT_DOUBLE_EQ(p->predicted_tok_s,
                   1e12 / static_cast<double>(p->devices[0].bytes_read_per_token));
}

}  // namespace
}  // namespace ferry
