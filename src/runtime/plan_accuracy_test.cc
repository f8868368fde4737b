// Issue 4, "Accuracy": the plan is what the process really uses.
//
// For stories260K, Gemma 3 270M (when FERRY_MODELS is set) and a synthetic 1.1B-parameter
// llama in Q4_0 with TinyLlama's shape (22 layers, dim 2048, ffn 5632, 32 heads, 4 KV heads,
// vocab 32000), at num_ctx 512 / 2048 / 8192 / 32768 with f16 and q8_0 caches, planned CPU-only
// on a described `cpu=20GiB` inventory:
//  * Allocation: the Runner's CPU allocator holds exactly the plan's bytes for each purpose:
//    weights (the mapped tensors, charged; token_embd counted once when the output is tied to
//    it), host (the GGUF header, parsed metadata and tokenizer tables), KV, and the compute
//    reservation, which is within 5% of (and at least) what the forward pass needs.
//  * RSS: in a fresh child process, the growth of VmRSS from before Model::Load to after
//    loading the model and its tokenizer, touching every weight page (weights are mapped, so
//    "mapped-and-touched"), creating the Runner (the KV arena is zeroed by KvCache) and
//    touching the compute scratch (the forward pass writes all of it at a full batch over a
//    full context; here it is memset) and generating one token with every vocabulary entry a
//    sampling candidate (which writes the sampler's working memory), is within 5% of the
//    plan's CPU total (weights + kv + compute + host + sampling).
//
// The synthetic model (~620 MB) is written once per test binary run into a temporary
// directory, with the real 32000-token Llama-2 vocabulary copied from llama-2-tiny-random.gguf,
// and removed at the end.
#include <fcntl.h>
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/device.h"
#include "gguf/gguf.h"
#include "model/scratch.h"
#include "planner/plan.h"
#include "runtime/plan_testing.h"
#include "runtime/runner.h"

namespace ferry {
namespace {

const std::string kShared = FERRY_SHARED_DIR;
constexpr uint64_t kMiB = uint64_t{1} << 20;

// ---- The synthetic TinyLlama-shape Q4_0 model ----

struct Rng {
  uint64_t s = 0x9E3779B97F4A7C15ull;
  uint64_t Next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

// rows x cols Q4_0 (cols a multiple of 32): per block an fp16 scale near 0.01, random nibbles.
std::vector<uint8_t> RandomQ4_0(uint64_t rows, uint64_t cols, Rng& rng) {
  const uint64_t blocks = rows * cols / 32;
  std::vector<uint8_t> data(blocks * 18);
  for (uint64_t b = 0; b < blocks; ++b) {
    uint8_t* p = data.data() + b * 18;
    const uint64_t r0 = rng.Next(), r1 = rng.Next();
    const uint16_t scale = static_cast<uint16_t>(0x2100 + (r0 & 0x3F));  // ~0.0098..0.0108
    std::memcpy(p, &scale, 2);
    std::memcpy(p + 2, &r0, 8);
    std::memcpy(p + 10, &r1, 8);
  }
  return data;
}

std::vector<uint8_t> OnesF32(uint64_t n) {
  std::vector<float> v(n, 1.0f);
  std::vector<uint8_t> out(n * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

Status WriteTinyLlama(const std::string& path) {
  constexpr uint64_t kLayers = 22, kDim = 2048, kFf = 5632, kHeads = 32, kKvHeads = 4,
                     kVocab = 32000;
  constexpr uint64_t kHeadDim = kDim / kHeads, kKvDim = kKvHeads * kHeadDim;
  FERRY_ASSIGN_OR_RETURN(auto src, gguf::GgufFile::Open(kShared + "/models/llama-2-tiny-random.gguf"));
  gguf::GgufWriter w;
  FERRY_RETURN_IF_ERROR(w.AddMetadata("general.architecture", gguf::Value("llama")));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("general.name", gguf::Value("synthetic-tinyllama-1.1b")));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("general.file_type", gguf::Value(uint32_t{2})));  // Q4_0
  FERRY_RETURN_IF_ERROR(w.AddMetadata("llama.context_length", gguf::Value(uint32_t{2048})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("llama.embedding_length", gguf::Value(uint32_t{kDim})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("llama.block_count", gguf::Value(uint32_t{kLayers})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("llama.feed_forward_length", gguf::Value(uint32_t{kFf})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("llama.attention.head_count", gguf::Value(uint32_t{kHeads})));
  FERRY_RETURN_IF_ERROR(
      w.AddMetadata("llama.attention.head_count_kv", gguf::Value(uint32_t{kKvHeads})));
  FERRY_RETURN_IF_ERROR(
      w.AddMetadata("llama.rope.dimension_count", gguf::Value(uint32_t{kHeadDim})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("llama.rope.freq_base", gguf::Value(10000.0f)));
  FERRY_RETURN_IF_ERROR(
      w.AddMetadata("llama.attention.layer_norm_rms_epsilon", gguf::Value(1e-5f)));
  for (const gguf::KeyValue& kv : src->metadata()) {
    if (kv.key.starts_with("tokenizer.")) FERRY_RETURN_IF_ERROR(w.AddMetadata(kv.key, kv.value));
  }
  Rng rng;
  auto add_q = [&](const std::string& name, uint64_t cols, uint64_t rows) {
    auto d = RandomQ4_0(rows, cols, rng);
    return w.AddTensor(name, {cols, rows}, DType::kQ4_0, d);
  };
  auto add_norm = [&](const std::string& name, uint64_t n) {
    return w.AddTensor(name, {n}, DType::kF32, OnesF32(n));
  };
  FERRY_RETURN_IF_ERROR(add_q("token_embd.weight", kDim, kVocab));
  for (uint64_t l = 0; l < kLayers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    FERRY_RETURN_IF_ERROR(add_norm(b + "attn_norm.weight", kDim));
    FERRY_RETURN_IF_ERROR(add_q(b + "attn_q.weight", kDim, kDim));
    FERRY_RETURN_IF_ERROR(add_q(b + "attn_k.weight", kDim, kKvDim));
    FERRY_RETURN_IF_ERROR(add_q(b + "attn_v.weight", kDim, kKvDim));
    FERRY_RETURN_IF_ERROR(add_q(b + "attn_output.weight", kDim, kDim));
    FERRY_RETURN_IF_ERROR(add_norm(b + "ffn_norm.weight", kDim));
    FERRY_RETURN_IF_ERROR(add_q(b + "ffn_gate.weight", kDim, kFf));
    FERRY_RETURN_IF_ERROR(add_q(b + "ffn_up.weight", kDim, kFf));
    FERRY_RETURN_IF_ERROR(add_q(b + "ffn_down.weight", kFf, kDim));
  }
  FERRY_RETURN_IF_ERROR(add_norm("output_norm.weight", kDim));
  FERRY_RETURN_IF_ERROR(add_q("output.weight", kDim, kVocab));
  return w.WriteFile(path);
}

class PlanAccuracyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/ferry_plan_accuracy_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return;
    dir_ = tmpl;
    const std::string path = dir_ + "/tinyllama-1.1b-q4_0.gguf";
    Status s = WriteTinyLlama(path);
    if (s.ok()) {
      tinyllama_ = path;
    } else {
      write_error_ = s.ToString();
    }
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  static std::vector<std::string> ModelPaths() {
    std::vector<std::string> paths = {kShared + "/models/stories260K.gguf"};
    if (const char* dir = std::getenv("FERRY_MODELS")) {
      paths.push_back(std::string(dir) + "/gemma-3-270m-q4_k_m.gguf");
    }
    paths.push_back(tinyllama_);
    return paths;
  }

  static std::string dir_, tinyllama_, write_error_;
};
std::string PlanAccuracyTest::dir_, PlanAccuracyTest::tinyllama_, PlanAccuracyTest::write_error_;

DeviceInventory Cpu20GiB() {
  auto inv = ParseDevices("cpu=20GiB");
  return inv.ok() ? *inv : DeviceInventory{};
}

StatusOr<Plan> PlanFor(const Model& model, int64_t ctx, DType kv_type) {
  LoadOptions lo;
  lo.num_ctx = ctx;
  lo.num_batch = 512;
  lo.kv_type = kv_type;
  lo.num_gpu = 0;
  return MakePlan(ShapeFromModel(model), Cpu20GiB(), lo);
}

uint64_t TensorBytes(const Model& model) {
  uint64_t sum = 0;
  for (const auto& t : model.file().tensors()) sum += t.n_bytes;
  return sum;
}

TEST_F(PlanAccuracyTest, SyntheticModelIsTinyLlamaShaped) {
  ASSERT_FALSE(tinyllama_.empty()) << write_error_;
  auto m = Model::Load(tinyllama_);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const ModelShape shape = ShapeFromModel(**m);
  EXPECT_EQ(shape.n_layer, 22);
  EXPECT_EQ(shape.n_embd, 2048);
  EXPECT_EQ(shape.n_ff, 5632);
  EXPECT_EQ(shape.n_head, 32);
  EXPECT_EQ(shape.n_head_kv, 4);
  EXPECT_EQ(shape.n_vocab, 32000);
  EXPECT_EQ(shape.tied_output_bytes, 0u);
  const uint64_t bytes = TensorBytes(**m);
  EXPECT_GT(bytes, uint64_t{600} * 1000 * 1000);
  EXPECT_LT(bytes, uint64_t{640} * 1000 * 1000);
  auto v = tokenizer::Vocab::FromGguf((*m)->file());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  auto t = tokenizer::Tokenizer::Create(std::move(*v));
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  auto ids = (*t)->Encode("Once upon a time", true, false);
  ASSERT_TRUE(ids.ok());
  EXPECT_GT(ids->size(), 2u);
}

TEST_F(PlanAccuracyTest, RunnerAllocatesThePlanAcrossContextsAndCacheTypes) {
  ASSERT_FALSE(tinyllama_.empty()) << write_error_;
  for (const std::string& path : ModelPaths()) {
    SCOPED_TRACE(path);
    auto m = Model::Load(path);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    const Model& model = **m;
    auto v = tokenizer::Vocab::FromGguf(model.file());
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    auto tok = tokenizer::Tokenizer::Create(std::move(*v));
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    const uint64_t tensor_bytes = TensorBytes(model);
    for (int64_t ctx : {int64_t{512}, int64_t{2048}, int64_t{8192}, int64_t{32768}}) {
      for (DType kv_type : {DType::kF16, DType::kQ8_0}) {
        SCOPED_TRACE(::testing::Message() << "num_ctx " << ctx << " kv " << DTypeName(kv_type));
        auto plan = PlanFor(model, ctx, kv_type);
        ASSERT_TRUE(plan.ok()) << plan.status().ToString();
        ASSERT_EQ(plan->devices.size(), 1u);
        const DevicePlan& cpu = plan->devices.back();
        // Weights: everything on the CPU, each tensor once (a tied output is token_embd itself).
        EXPECT_EQ(cpu.weights_bytes, tensor_bytes);
        EXPECT_TRUE(cpu.has_input);
        EXPECT_TRUE(cpu.has_output);
        EXPECT_EQ(cpu.total_bytes, cpu.weights_bytes + cpu.kv_bytes + cpu.compute_bytes +
                                       cpu.host_bytes + cpu.sampling_bytes);

        auto r = Runner::Create(&model, tok->get(), *plan, RunnerOptionsFromPlan(*plan, 1));
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        const Runner& runner = **r;
        ExpectAllocatedAsPlanned(runner, cpu);
        // The forward pass's own need, computed from the loaded model, not the plan.
        const uint64_t needed = ForwardScratch::RequiredBytes(
            ForwardScratch::ShapeFor(model, std::min<int64_t>(512, ctx), ctx));
        EXPECT_EQ(runner.scratch().required_bytes(), needed);
        EXPECT_GE(cpu.compute_bytes, needed);
        EXPECT_LE(static_cast<double>(cpu.compute_bytes), 1.05 * static_cast<double>(needed));
      }
    }
  }
}

// ---- RSS growth on load, in a fresh child process ----

uint64_t RssBytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

struct RssResult {
  int ok = 0;
  uint64_t weights = 0, kv = 0, compute = 0, host = 0, sampling = 0, plan_total = 0, growth = 0;
  char error[256] = {};
};

// Loads `path` as `ferry run` does (the model: header parsed, weights mapped; then its
// tokenizer), touches every weight page, plans, creates the Runner and touches the whole
// compute buffer. Returns the CPU plan through *cpu_plan and calls `measure` while everything
// is held.
// Returns "" or the error.
std::string LoadAndTouch(const std::string& path, int64_t ctx, DType kv_type,
                         DevicePlan* cpu_plan, const std::function<void()>& measure) {
  auto m = Model::Load(path);
  if (!m.ok()) return m.status().ToString();
  const Model& model = **m;
  std::unique_ptr<tokenizer::Tokenizer> tok;
  {
    auto v = tokenizer::Vocab::FromGguf(model.file());
    if (!v.ok()) return v.status().ToString();
    auto t = tokenizer::Tokenizer::Create(std::move(*v));
    if (!t.ok()) return t.status().ToString();
    tok = std::move(*t);
  }
  const long page = sysconf(_SC_PAGESIZE);
  volatile uint8_t sink = 0;
  for (const auto& t : model.file().tensors()) {
    auto d = model.file().TensorData(t);
    for (size_t i = 0; i < d.size(); i += static_cast<size_t>(page)) sink = sink + d[i];
    if (!d.empty()) sink = sink + d[d.size() - 1];
  }
  // Sizes come from the tensor table already loaded; planning allocates only small vectors.
  auto plan = PlanFor(model, ctx, kv_type);
  if (!plan.ok()) return plan.status().ToString();
  const DevicePlan& cpu = plan->devices.back();
  auto r = Runner::Create(&model, tok.get(), *plan, RunnerOptionsFromPlan(*plan, 1));
  if (!r.ok()) return r.status().ToString();
  // The whole compute buffer, as a full-batch step over a full context would write it.
  const ForwardScratch& scratch = (*r)->scratch();
  auto ws = scratch.workspace();
  uint8_t* base = ws.data() + ws.size() - scratch.size_bytes();
  std::memset(base, 1, scratch.size_bytes());
  // One request that uses the sampler's whole working memory: every token a candidate
  // (top_k 0), top_p's histogram, penalties over the whole context.
  GenerateRequest req;
  req.prompt = {tok->vocab().bos() >= 0 ? tok->vocab().bos() : 0};
  req.options.num_ctx = plan->options.num_ctx;
  req.options.num_predict = 1;
  req.options.sampling.top_k = 0;
  req.options.sampling.top_p = 0.9f;
  req.options.sampling.repeat_last_n = -1;
  req.options.sampling.temperature = 0.8f;
  req.options.sampling.seed = 1;
  auto g = (*r)->Generate(req, nullptr);
  if (!g.ok()) return g.status().ToString();
  *cpu_plan = cpu;
  measure();
  return "";
}

RssResult MeasureInChild(const std::string& path, int64_t ctx, DType kv_type) {
  RssResult res;
  auto fail = [&](const std::string& msg) {
    std::snprintf(res.error, sizeof(res.error), "%s", msg.c_str());
    return res;
  };
  // A forked child inherits the heap pages the parent's earlier tests freed but glibc kept
  // resident, and glibc's dynamic mmap threshold (raised by those frees up to 32 MiB) would
  // serve the KV/compute buffers from them: growth would miss them. Start as a fresh process
  // does: free pages returned to the kernel, the default fixed 128 KiB mmap threshold.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  malloc_trim(0);
  // Code pages and static tables (the fp16 conversion table, the GELU table) become resident
  // the first time any model is loaded in a process; that is the server's cost, not this
  // model's. Warm them with a small load of the same file first, released before measuring.
  DevicePlan cpu;
  std::string err = LoadAndTouch(path, 512, kv_type, &cpu, [] {});
  if (!err.empty()) return fail(err);
  malloc_trim(0);
  const uint64_t rss0 = RssBytes();
  uint64_t rss1 = 0;
  err = LoadAndTouch(path, ctx, kv_type, &cpu, [&] { rss1 = RssBytes(); });
  if (!err.empty()) return fail(err);

  res.ok = 1;
  res.weights = cpu.weights_bytes;
  res.kv = cpu.kv_bytes;
  res.compute = cpu.compute_bytes;
  res.host = cpu.host_bytes;
  res.sampling = cpu.sampling_bytes;
  res.plan_total = cpu.total_bytes;
  res.growth = rss1 > rss0 ? rss1 - rss0 : 0;
  return res;
}

RssResult MeasureRss(const std::string& path, int64_t ctx, DType kv_type) {
  RssResult res;
  int fds[2];
  if (pipe(fds) != 0) {
    std::snprintf(res.error, sizeof(res.error), "pipe failed");
    return res;
  }
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    RssResult r = MeasureInChild(path, ctx, kv_type);
    const char* p = reinterpret_cast<const char*>(&r);
    size_t left = sizeof(r);
    while (left > 0) {
      const ssize_t n = write(fds[1], p, left);
      if (n <= 0) break;
      p += n;
      left -= static_cast<size_t>(n);
    }
    _exit(0);  // no destructors, no atexit handlers of the parent's gtest
  }
  close(fds[1]);
  char* p = reinterpret_cast<char*>(&res);
  size_t got = 0;
  while (got < sizeof(res)) {
    const ssize_t n = read(fds[0], p + got, sizeof(res) - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fds[0]);
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  if (got != sizeof(res)) {
    res = RssResult{};
    std::snprintf(res.error, sizeof(res.error), "child died (status %d)", wstatus);
  }
  return res;
}

TEST_F(PlanAccuracyTest, RssGrowthOnLoadMatchesThePlansCpuTotal) {
  ASSERT_FALSE(tinyllama_.empty()) << write_error_;
  for (const std::string& path : ModelPaths()) {
    for (int64_t ctx : {int64_t{512}, int64_t{2048}, int64_t{8192}, int64_t{32768}}) {
     for (DType kv_type : {DType::kF16, DType::kQ8_0}) {
      SCOPED_TRACE(::testing::Message() << path << " num_ctx " << ctx << " kv "
                                        << DTypeName(kv_type));
      const RssResult r = MeasureRss(path, ctx, kv_type);
      ASSERT_TRUE(r.ok) << r.error;
      const double total = static_cast<double>(r.plan_total);
      const double growth = static_cast<double>(r.growth);
      const double diff_pct = 100.0 * (growth - total) / total;
      std::printf(
          "rss %-26s ctx %6lld %-4s: plan cpu %9.2f MiB (w %.2f, kv %.2f, compute %.2f, host %.2f, "
          "sampling %.2f) "
          "rss growth %9.2f MiB (%+.2f%%)\n",
          std::filesystem::path(path).filename().c_str(), static_cast<long long>(ctx),
          std::string(DTypeName(kv_type)).c_str(), total / kMiB, static_cast<double>(r.weights) / kMiB, static_cast<double>(r.kv) / kMiB,
          static_cast<double>(r.compute) / kMiB, static_cast<double>(r.host) / kMiB,
          static_cast<double>(r.sampling) / kMiB,
          growth / kMiB, diff_pct);
      EXPECT_LE(std::abs(growth - total), 0.05 * total)
          << "plan " << r.plan_total << " bytes, rss growth " << r.growth << " bytes";
     }
    }
  }
}

}  // namespace
}  // namespace ferry
