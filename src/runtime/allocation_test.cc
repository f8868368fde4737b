// Invariant 1 of the design, end to end: what the runner allocates through its CPU
// DeviceAllocator equals what the planner planned (KV exactly; compute exactly the plan's
// reservation, which is within 5% of — and at least — what the forward pass uses), and
// generation through the planned scratch gives the same tokens as without it.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/allocator.h"
#include "backend/device.h"
#include "model/scratch.h"
#include "planner/plan.h"
#include "runtime/plan_testing.h"
#include "runtime/runner.h"

namespace ferry {
namespace {

const std::string kShared = FERRY_SHARED_DIR;

struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<tokenizer::Tokenizer> tok;
};

Loaded LoadOrDie(const std::string& path) {
  Loaded l;
  auto m = Model::Load(path);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  if (!m.ok()) return l;
  l.model = std::move(*m);
  auto v = tokenizer::Vocab::FromGguf(l.model->file());
  EXPECT_TRUE(v.ok()) << v.status().ToString();
  auto t = tokenizer::Tokenizer::Create(std::move(*v));
  EXPECT_TRUE(t.ok());
  if (t.ok()) l.tok = std::move(*t);
  return l;
}

DeviceInventory CpuOnly() { return BigCpu(); }

std::vector<std::string> ModelPaths() {
  std::vector<std::string> paths = {kShared + "/models/stories260K.gguf"};
  if (const char* dir = std::getenv("FERRY_MODELS")) {
    paths.push_back(std::string(dir) + "/gemma-3-270m-q4_k_m.gguf");
  }
  return paths;
}

// Greedy decoding with Forward() and no scratch: the behaviour before the scratch existed.
std::vector<int32_t> GreedyWithoutScratch(const Model& model, const tokenizer::Tokenizer& tok,
                                          const std::vector<int32_t>& prompt, DType kv_type,
                                          int64_t num_ctx, int n_predict) {
  auto kv = KvCache::Create(model.KvOptions(kv_type, num_ctx, 1, 512));
  EXPECT_TRUE(kv.ok()) << kv.status().ToString();
  if (!kv.ok()) return {};
  const int32_t seq = *(*kv)->AddSequence();
  ForwardOptions fo;  // no scratch
  std::vector<float> logits;
  std::vector<int32_t> out;
  int64_t pos = static_cast<int64_t>(prompt.size());
  EXPECT_TRUE((*kv)->Reserve(seq, pos).ok());
  Batch b;
  b.AddRun(prompt, seq, 0, true);
  EXPECT_TRUE(model.ForwardAllLogits(b, **kv, fo, &logits).ok());
  for (int i = 0; i < n_predict; ++i) {
    const int32_t t =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (tok.vocab().IsEog(t)) break;
    out.push_back(t);
    if (i + 1 == n_predict) break;
    EXPECT_TRUE((*kv)->Reserve(seq, pos + 1).ok());
    b.clear();
    b.Add(t, seq, pos, true);
    Status s = model.ForwardAllLogits(b, **kv, fo, &logits);
    EXPECT_TRUE(s.ok()) << s.ToString();
    ++pos;
  }
  return out;
}

TEST(AllocationTest, RunnerAllocatesWhatThePlanSays) {
  for (const std::string& path : ModelPaths()) {
    SCOPED_TRACE(path);
    Loaded l = LoadOrDie(path);
    ASSERT_NE(l.tok, nullptr);
    const bool stories = path.find("stories260K") != std::string::npos;
    std::vector<int64_t> contexts = {512, 2048};
    if (stories) contexts.push_back(8192);
    const ModelShape shape = ShapeFromModel(*l.model);
    for (int64_t ctx : contexts) {
      for (DType kv_type : {DType::kF16, DType::kQ8_0}) {
        SCOPED_TRACE(::testing::Message() << "num_ctx " << ctx << " kv " << DTypeName(kv_type));
        LoadOptions lo;
        lo.num_ctx = ctx;
        lo.num_batch = 512;
        lo.kv_type = kv_type;
        lo.num_gpu = 0;
        auto plan = MakePlan(shape, CpuOnly(), lo);
        ASSERT_TRUE(plan.ok()) << plan.status().ToString();
        const DevicePlan& cpu = plan->devices.back();

        auto r = Runner::Create(l.model.get(), l.tok.get(), *plan, RunnerOptionsFromPlan(*plan, 2));
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        const Runner& runner = **r;
        ExpectAllocatedAsPlanned(runner, cpu);
        // What the forward pass uses, independently of the plan: at most the reservation,
        // and the reservation within 5% of it.
        const uint64_t needed = runner.scratch().required_bytes();
        EXPECT_GE(runner.allocated_bytes("compute"), needed);
        EXPECT_LE(static_cast<double>(cpu.compute_bytes), 1.05 * static_cast<double>(needed));
        EXPECT_EQ(runner.scratch().shape().max_tokens, std::min<int64_t>(512, ctx));
        EXPECT_EQ(runner.scratch().shape().max_keys, ctx);
      }
    }
  }
}

// num_parallel > 1 and more sequences than that: the pool, the logits rows and the sampler
// slots the plan counts are what the runner allocates.
TEST(AllocationTest, ParallelSequencesAreAllocatedAsPlanned) {
  for (const std::string& path : ModelPaths()) {
    SCOPED_TRACE(path);
    Loaded l = LoadOrDie(path);
    ASSERT_NE(l.tok, nullptr);
    LoadOptions lo;
    lo.num_ctx = 1024;
    lo.num_parallel = 3;
    lo.max_sequences = 6;
    lo.num_gpu = 0;
    auto plan = MakePlan(ShapeFromModel(*l.model), CpuOnly(), lo);
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    LoadOptions one = lo;
    one.num_parallel = 1;
    one.max_sequences = 1;
    auto plan1 = MakePlan(ShapeFromModel(*l.model), CpuOnly(), one);
    ASSERT_TRUE(plan1.ok());
    EXPECT_EQ(plan->devices.back().kv_bytes, 3 * plan1->devices.back().kv_bytes);
    EXPECT_EQ(plan->devices.back().sampling_bytes, 6 * plan1->devices.back().sampling_bytes);
    auto r = Runner::Create(l.model.get(), l.tok.get(), *plan, RunnerOptionsFromPlan(*plan, 2));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ExpectAllocatedAsPlanned(**r, plan->devices.back());
    EXPECT_EQ((*r)->scratch().shape().logit_rows, 6);
    EXPECT_EQ((*r)->kv().options().max_seqs, 12);  // running + as many cached for reuse
  }
}

TEST(AllocationTest, GenerationWithTheScratchMatchesWithout) {
  for (const std::string& path : ModelPaths()) {
    SCOPED_TRACE(path);
    Loaded l = LoadOrDie(path);
    ASSERT_NE(l.tok, nullptr);
    for (DType kv_type : {DType::kF16, DType::kQ8_0}) {
      SCOPED_TRACE(DTypeName(kv_type));
      LoadOptions ro;
      ro.num_ctx = 512;
      ro.num_batch = 4;  // the prompt runs in several steps through the scratch
      ro.kv_type = kv_type;
      auto r = MakeCpuRunner(l.model.get(), l.tok.get(), ro);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      GenerateRequest req;
      req.prompt = *l.tok->Encode("Once upon a time, there was a little", true, false);
      req.options.num_ctx = 512;
      req.options.num_predict = 10;
      req.options.sampling.temperature = 0.0f;
      req.options.sampling.repeat_penalty = 1.0f;
      auto res = (*r)->Generate(req, nullptr);
      ASSERT_TRUE(res.ok()) << res.status().ToString();
      EXPECT_FALSE(res->stats.tokens.empty());
      // One 512-token step through the scratch: the same tokens as Forward() without a scratch,
      // and as the 4-token steps above (results do not depend on how the prompt is split).
      LoadOptions one = ro;
      one.num_batch = 512;
      auto r1 = MakeCpuRunner(l.model.get(), l.tok.get(), one);
      ASSERT_TRUE(r1.ok());
      auto res1 = (*r1)->Generate(req, nullptr);
      ASSERT_TRUE(res1.ok()) << res1.status().ToString();
      EXPECT_EQ(res1->stats.tokens,
                GreedyWithoutScratch(*l.model, *l.tok, req.prompt, kv_type, 512, 10));
      EXPECT_EQ(res->stats.tokens, res1->stats.tokens);
    }
  }
}

TEST(AllocationTest, ForwardRejectsBatchesLargerThanTheScratch) {
  Loaded l = LoadOrDie(kShared + "/models/stories260K.gguf");
  ASSERT_NE(l.model, nullptr);
  DeviceAllocator alloc("cpu");
  auto scratch = ForwardScratch::Create(ForwardScratch::ShapeFor(*l.model, 4, 8), alloc);
  ASSERT_TRUE(scratch.ok()) << scratch.status().ToString();
  EXPECT_EQ(alloc.allocated_bytes("compute"), (*scratch)->required_bytes());
  auto kv = KvCache::Create(l.model->KvOptions(DType::kF16, 64, 1, 64), &alloc);
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(alloc.allocated_bytes("kv"), (*kv)->bytes_allocated());
  const int32_t seq = *(*kv)->AddSequence();
  ForwardOptions fo;
  fo.scratch = scratch->get();
  const std::vector<int32_t> five = {1, 2, 3, 4, 5};
  auto run = [&](std::span<const int32_t> toks, int64_t pos0) {
    Batch b;
    b.AddRun(toks, seq, pos0, true);
    return l.model->Forward(b, **kv, fo);
  };
  ASSERT_TRUE((*kv)->Reserve(seq, 5).ok());
  Status s = run(five, 0);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("5 tokens"), std::string::npos) << s.message();
  // Four tokens fit; then positions 4..11 need 12 keys, more than the 8 it holds.
  ASSERT_TRUE((*kv)->Truncate(seq, 0).ok());
  ASSERT_TRUE((*kv)->Reserve(seq, 4).ok());
  EXPECT_TRUE(run(std::span(five).first(4), 0).ok());
  ASSERT_TRUE((*kv)->Reserve(seq, 8).ok());
  EXPECT_TRUE(run(std::span(five).first(4), 4).ok());
  ASSERT_TRUE((*kv)->Reserve(seq, 9).ok());
  s = run(std::span(five).first(1), 8);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("keys"), std::string::npos) << s.message();
  // A reservation below what the forward pass needs is refused.
  auto small = ForwardScratch::Create(ForwardScratch::ShapeFor(*l.model, 4, 8), alloc,
                                      (*scratch)->required_bytes() - 1);
  EXPECT_EQ(small.status().code(), StatusCode::kInvalidArgument);
}

TEST(AllocationTest, RunnerErrorsInsteadOfOverAllocating) {
  Loaded l = LoadOrDie(kShared + "/models/stories260K.gguf");
  ASSERT_NE(l.model, nullptr);
  LoadOptions lo;
  lo.num_ctx = 512;
  auto r = MakeCpuRunner(l.model.get(), l.tok.get(), lo, 1, /*capacity=*/4096);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  lo.num_gpu = 0;
  auto plan = MakePlan(ShapeFromModel(*l.model), CpuOnly(), lo);
  ASSERT_TRUE(plan.ok());
  plan->devices.back().compute_bytes = 1024;  // below what a 512-token step needs
  r = Runner::Create(l.model.get(), l.tok.get(), *plan, RunnerOptionsFromPlan(*plan, 1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
}

// Perplexity's logits stream through the compute buffer logit_rows at a time: the same
// numbers as a [n, n_vocab] array, and the plan (LoadOptions::logit_rows) sizes the buffer.
TEST(AllocationTest, StreamedLogitsEqualAllLogitsAndArePlanned) {
  for (const std::string& path : ModelPaths()) {
    SCOPED_TRACE(path);
    Loaded l = LoadOrDie(path);
    ASSERT_NE(l.tok, nullptr);
    const std::vector<int32_t> tokens = *l.tok->Encode("Once upon a time, there was a girl", true,
                                                       false);
    const int64_t n = static_cast<int64_t>(tokens.size());
    DeviceAllocator alloc("cpu");
    std::vector<float> all, streamed;
    for (int64_t rows : {int64_t{0}, int64_t{3}}) {  // 0: all_logits into the vector
      auto kv = KvCache::Create(l.model->KvOptions(DType::kF32, 64, 1, 64));
      ASSERT_TRUE(kv.ok());
      const int32_t seq = *(*kv)->AddSequence();
      ASSERT_TRUE((*kv)->Reserve(seq, n).ok());
      auto scratch = ForwardScratch::Create(
          ForwardScratch::ShapeFor(*l.model, n, 64, std::max<int64_t>(rows, 1)), alloc);
      ASSERT_TRUE(scratch.ok());
      ForwardOptions fo;
      fo.scratch = scratch->get();
      std::vector<float> out;
      int64_t expected_i = 0;
      Batch b;
      for (int64_t i = 0; i < n; ++i) b.Add(tokens[static_cast<size_t>(i)], seq, i, true);
      if (rows != 0) {
        fo.each_logits = [&](int64_t i, std::span<const float> row) -> Status {
          EXPECT_EQ(i, expected_i++);
          streamed.insert(streamed.end(), row.begin(), row.end());
          return Status::Ok();
        };
      }
      if (rows == 0) {
        ASSERT_TRUE(l.model->ForwardAllLogits(b, **kv, fo, &out).ok());
      } else {
        ASSERT_TRUE(l.model->Forward(b, **kv, fo).ok());
      }
      if (rows == 0) {
        all = out;
      } else {
        EXPECT_TRUE(out.empty());
        EXPECT_EQ(expected_i, n);
      }
    }
    ASSERT_EQ(streamed.size(), all.size());
    for (size_t i = 0; i < all.size(); ++i) ASSERT_NEAR(streamed[i], all[i], 1e-5f) << i;

    // A callback error stops the step and is returned.
    {
      auto kv = KvCache::Create(l.model->KvOptions(DType::kF32, 64, 1, 64));
      const int32_t seq = *(*kv)->AddSequence();
      ASSERT_TRUE((*kv)->Reserve(seq, n).ok());
      ForwardOptions fo;
      fo.each_logits = [](int64_t, std::span<const float>) -> Status {
        return MakeStatus(StatusCode::kFailedPrecondition, "stop here");
      };
      Batch b;
      b.AddRun(tokens, seq, 0, true);
      const Status s = l.model->Forward(b, **kv, fo);
      EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
    }

    // The runner for perplexity allocates what the plan says for its logit_rows.
    LoadOptions lo;
    lo.num_ctx = 256;
    lo.num_batch = 128;
    lo.logit_rows = 64;
    lo.num_gpu = 0;
    auto plan = MakePlan(ShapeFromModel(*l.model), CpuOnly(), lo);
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    LoadOptions lo1 = lo;
    lo1.logit_rows = 1;
    auto plan1 = MakePlan(ShapeFromModel(*l.model), CpuOnly(), lo1);
    ASSERT_TRUE(plan1.ok());
    EXPECT_GE(plan->devices[0].compute_bytes - plan1->devices[0].compute_bytes,
              63 * static_cast<uint64_t>(l.model->hparams().n_vocab) * sizeof(float));
    RunnerOptions ro = RunnerOptionsFromPlan(*plan, 2);
    auto r = Runner::Create(l.model.get(), l.tok.get(), *plan, ro);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ((*r)->allocated_bytes("compute"), plan->devices[0].compute_bytes);
    EXPECT_EQ((*r)->scratch().required_bytes(), plan->devices[0].compute_bytes);
    Plan bad = *plan;
    bad.options.logit_rows = 0;
    EXPECT_EQ(Runner::Create(l.model.get(), l.tok.get(), bad, ro).status().code(),
              StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace ferry
