#include "runtime/runner.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/plan_testing.h"

namespace ferry {
namespace {

const std::string kShared = FERRY_SHARED_DIR;

class RunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = Model::Load(kShared + "/models/stories260K.gguf");
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(*m);
    auto v = tokenizer::Vocab::FromGguf(model_->file());
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    auto t = tokenizer::Tokenizer::Create(std::move(*v));
    ASSERT_TRUE(t.ok());
    tok_ = std::move(*t);
  }

  std::unique_ptr<Runner> MakeRunner(int64_t num_ctx, int64_t num_batch = 512,
                                     DType kv = DType::kF16) {
    LoadOptions lo;
    lo.num_ctx = num_ctx;
    lo.num_batch = std::min(num_batch, num_ctx);
    lo.kv_type = kv;
    auto r = MakeCpuRunner(model_.get(), tok_.get(), lo);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(*r) : nullptr;
  }

  GenerateRequest Greedy(std::string_view prompt, int64_t num_predict) {
    GenerateRequest req;
    req.prompt = *tok_->Encode(prompt, true, false);
    req.options.num_ctx = 256;
    req.options.num_predict = num_predict;
    req.options.sampling.temperature = 0.0f;
    req.options.sampling.repeat_penalty = 1.0f;
    return req;
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<tokenizer::Tokenizer> tok_;
};

TEST_F(RunnerTest, GreedyStory) {
  auto r = MakeRunner(256);
  std::string streamed;
  auto res = r->Generate(Greedy("Once upon a time", 12), [&](std::string_view s) {
    streamed += s;
    return true;
  });
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->text.rfind(", there was a little girl named Lily.", 0), 0u) << res->text;
  EXPECT_EQ(streamed, res->text);
  EXPECT_EQ(res->stats.done_reason, DoneReason::kLength);
  EXPECT_EQ(res->stats.eval_count, 12);
  EXPECT_EQ(res->stats.prompt_eval_count, 5);
}

// A model file truncated while loaded (the hardening issue's SIGBUS): in a forked child, so a
// crash shows as a signal instead of killing the test. The request that meets it fails with an
// error naming the file, the runner reports itself broken, and later requests are refused.
TEST(RunnerFileTest, ModelFileTruncatedWhileLoaded) {
  const std::string copy = ::testing::TempDir() + "/runner_truncated.gguf";
  {
    auto src = MappedFile::Open(kShared + "/models/stories260K.gguf");
    ASSERT_TRUE(src.ok());
    ASSERT_TRUE(WriteFileBytes(copy, (*src)->data(), (*src)->size()).ok());
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto body = [&]() -> int {
      auto m = Model::Load(copy);
      if (!m.ok()) return 10;
      auto v = tokenizer::Vocab::FromGguf((*m)->file());
      if (!v.ok()) return 11;
      auto t = tokenizer::Tokenizer::Create(std::move(*v));
      if (!t.ok()) return 12;
      LoadOptions lo;
      lo.num_ctx = 256;
      // The non-owning Create does not pack: the weights are read from the mapping each step.
      auto r = MakeCpuRunner(m->get(), t->get(), lo);
      if (!r.ok()) return 13;
      GenerateRequest req;
      req.prompt = *(*t)->Encode("Once upon a time", true, false);
      req.options.num_ctx = 256;
      req.options.num_predict = 4;
      req.options.sampling.temperature = 0.0f;
      if (!(*r)->Generate(req, nullptr).ok()) return 14;
      if (::truncate(copy.c_str(), 4096) != 0) return 15;
      auto failed = (*r)->Generate(req, nullptr);
      if (failed.ok() || failed.status().code() != StatusCode::kDataLoss) return 16;
      if (failed.status().message().find(copy) == std::string::npos) return 17;
      if ((*r)->health().ok()) return 18;
      auto again = (*r)->Submit(req, std::make_shared<RequestStream>());
      if (again.code() != StatusCode::kDataLoss) return 19;
      return 0;
    };
    ::_exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// A plan that puts layers on a GPU the runner cannot reach (no CUDA build, or no such
// device) is an error naming the device, never a crash; the model stays usable on the CPU.
TEST_F(RunnerTest, AGpuPlanWithoutItsGpuIsAClearError) {
  auto inv = ParseDevices("cuda0=8GiB,cpu=64GiB");
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  if (BuiltWithCuda()) {
    DiscoverOptions d;
    d.cpu_matmul_flops = 0.0;
    d.cpu_bandwidth = 0.0;
    auto found = DiscoverDevices(d);
    if (found.ok() && !found->gpus().empty()) GTEST_SKIP() << "a GPU is here: cuda_runner_test";
  }
  LoadOptions lo;
  lo.num_ctx = 64;
  lo.num_gpu = 3;  // the output and 2 blocks
  auto plan = MakePlan(ShapeFromModel(*model_), *inv, lo);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->gpu_layers, 3);
  auto m = Model::Load(kShared + "/models/stories260K.gguf");
  ASSERT_TRUE(m.ok());
  auto v = tokenizer::Vocab::FromGguf((*m)->file());
  ASSERT_TRUE(v.ok());
  auto t = tokenizer::Tokenizer::Create(std::move(*v));
  ASSERT_TRUE(t.ok());
  RunnerOptions ro;
  ro.start_thread = false;
  auto r = Runner::Create(std::move(*m), std::move(*t), *plan, ro);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cuda0"), std::string::npos) << r.status().ToString();
  // The non-owning Create refuses a model that was not set up for the plan's GPU layers.
  RunnerOptions ro2 = ro;
  auto r2 = Runner::Create(model_.get(), tok_.get(), *plan, ro2);
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.status().code(), StatusCode::kFailedPrecondition) << r2.status().ToString();
  EXPECT_NE(r2.status().message().find("UseCuda"), std::string::npos);
  // And the same model still runs on the CPU.
  auto cpu = MakeRunner(256)->Generate(Greedy("Once", 4), {});
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->stats.tokens.size(), 4u);
}

TEST_F(RunnerTest, SmallBatchesGiveTheSameTokens) {
  auto a = MakeRunner(256, 512)->Generate(Greedy("Once upon a time, in a big forest", 20), {});
  auto b = MakeRunner(256, 3)->Generate(Greedy("Once upon a time, in a big forest", 20), {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->stats.tokens, b->stats.tokens);
}

TEST_F(RunnerTest, QuantizedKvCacheStillTellsTheStory) {
  auto res = MakeRunner(256, 512, DType::kQ8_0)->Generate(Greedy("Once upon a time", 8), {});
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->text.rfind(", there was a little girl", 0), 0u) << res->text;
}

TEST_F(RunnerTest, StopString) {
  GenerateRequest req = Greedy("Once upon a time", 40);
  req.options.stop = {"girl"};
  std::string streamed;
  auto res = MakeRunner(256)->Generate(req, [&](std::string_view s) {
    streamed += s;
    return true;
  });
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->text, ", there was a little ");
  EXPECT_EQ(streamed, res->text);
  EXPECT_EQ(res->stats.done_reason, DoneReason::kStop);
}

TEST_F(RunnerTest, ContextLimitIsReportedNotWrapped) {
  auto r = MakeRunner(16);
  GenerateRequest req = Greedy("Once upon a time", -1);
  req.options.num_ctx = 16;
  auto res = r->Generate(req, {});
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->stats.done_reason, DoneReason::kLength);
  EXPECT_EQ(res->stats.prompt_eval_count + res->stats.eval_count, 16);
  // A prompt longer than the context is an error naming both sizes.
  GenerateRequest big = Greedy(
      "Once upon a time there was a very long story about many things "
      "that happened to a little dog in a big park",
      4);
  big.options.num_ctx = 16;
  auto err = r->Generate(big, {});
  ASSERT_FALSE(err.ok());
  EXPECT_EQ(err.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(err.status().message().find("num_ctx is 16"), std::string::npos);
}

TEST_F(RunnerTest, SeededSamplingIsReproducible) {
  GenerateRequest req = Greedy("Once upon a time", 24);
  req.options.sampling.temperature = 1.0f;
  req.options.sampling.seed = 42;
  auto r = MakeRunner(256);
  auto a = r->Generate(req, {});
  auto b = r->Generate(req, {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->stats.tokens, b->stats.tokens);
  req.options.sampling.seed = 43;
  auto c = r->Generate(req, {});
  EXPECT_NE(a->stats.tokens, c->stats.tokens);
}

TEST_F(RunnerTest, CancelStops) {
  int calls = 0;
  auto res = MakeRunner(256)->Generate(Greedy("Once upon a time", 40),
                                       [&](std::string_view) { return ++calls < 3; });
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->stats.done_reason, DoneReason::kCancelled);
  EXPECT_EQ(calls, 3);
}

TEST_F(RunnerTest, BadOptions) {
  LoadOptions o;
  o.num_ctx = 0;
  EXPECT_FALSE(MakeCpuRunner(model_.get(), tok_.get(), o).ok());
  o.num_ctx = int64_t{1} << 30;
  EXPECT_FALSE(MakeCpuRunner(model_.get(), tok_.get(), o).ok());
  o.num_ctx = 64;
  o.num_batch = 0;
  EXPECT_FALSE(MakeCpuRunner(model_.get(), tok_.get(), o).ok());
  auto r = MakeRunner(64);
  // A request asking more context than the model was loaded with.
  EXPECT_EQ(r->Generate(Greedy("Hi", 4), {}).status().code(), StatusCode::kOutOfRange);
  GenerateRequest req = Greedy("Hi", 4);
  req.options.num_ctx = 64;
  req.options.num_predict = -5;
  EXPECT_FALSE(r->Generate(req, {}).ok());
  req = Greedy("Hi", 4);
  req.options.num_ctx = 64;
  req.options.sampling.top_p = 2.0f;
  EXPECT_FALSE(r->Generate(req, {}).ok());
}

TEST_F(RunnerTest, Perplexity) {
  std::string text;
  for (int i = 0; i < 20; ++i) text += "Once upon a time, there was a little girl named Lily. ";
  auto tokens = tok_->Encode(text, false, false);
  ASSERT_TRUE(tokens.ok());
  int64_t scored = 0;
  auto ppl = MakeRunner(64)->Perplexity(*tokens, &scored);
  ASSERT_TRUE(ppl.ok()) << ppl.status().ToString();
  EXPECT_GT(*ppl, 1.0);
  EXPECT_LT(*ppl, 10.0);  // repeated training-style text is easy for the model
  EXPECT_EQ(scored, static_cast<int64_t>(tokens->size() / 64) * 31);
}

}  // namespace
}  // namespace ferry
