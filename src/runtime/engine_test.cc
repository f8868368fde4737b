// The engine for many requests, on real models: batched steps are bitwise the same as single
// ones, concurrent requests give the tokens they give alone, preemption and cancellation free
// blocks without changing results, prompt reuse evaluates only new tokens, and Grow keeps the
// allocation equal to the plan.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "runtime/loader.h"
#include "runtime/plan_testing.h"
#include "runtime/runner.h"

namespace ferry {
namespace {

const std::string kShared = FERRY_SHARED_DIR;

std::string GemmaPath() {
  const char* dir = std::getenv("FERRY_MODELS");
  return dir ? std::string(dir) + "/gemma-3-270m-q4_k_m.gguf" : "";
}

std::vector<std::string> ModelPaths() {
  std::vector<std::string> paths = {kShared + "/models/stories260K.gguf"};
  if (!GemmaPath().empty()) paths.push_back(GemmaPath());
  return paths;
}

struct Files {
  std::unique_ptr<Model> model;
  std::unique_ptr<tokenizer::Tokenizer> tok;
};

// Opened as the runner loads models: with the weights packed where this CPU has packed
// kernels (Model::PackWeights), so the bitwise checks cover what production runs.
Files Open(const std::string& path) {
  auto f = OpenModelFiles(path);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  if (!f.ok()) return {};
  const Status packed = f->model->PackWeights();
  EXPECT_TRUE(packed.ok()) << packed.ToString();
  return Files{std::move(f->model), std::move(f->tokenizer)};
}

std::vector<uint8_t> Bytes(std::span<const float> v) {
  std::vector<uint8_t> b(v.size() * sizeof(float));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Logits of a batch of one decode token for each of `n` sequences, against the same tokens run
// one sequence per step: bitwise equal. Prompts are chunked differently per sequence.
TEST(EngineTest, BatchOfNStepsIsBitwiseNSingleSteps) {
  for (const std::string& path : ModelPaths()) {
    SCOPED_TRACE(path);
    Files f = Open(path);
    ASSERT_NE(f.model, nullptr);
    const int n = 4;
    const int64_t vocab = f.model->hparams().n_vocab;
    for (DType kv_type : {DType::kF16, DType::kQ8_0}) {
      SCOPED_TRACE(DTypeName(kv_type));
      auto kv_a = KvCache::Create(f.model->KvOptions(kv_type, 128, n, 64));
      auto kv_b = KvCache::Create(f.model->KvOptions(kv_type, 128, n, 64));
      ASSERT_TRUE(kv_a.ok() && kv_b.ok());
      std::vector<std::vector<int32_t>> prompts;
      for (int s = 0; s < n; ++s) {
        std::vector<int32_t> p;
        for (int i = 0; i < 9 + 5 * s; ++i) p.push_back((17 * i + 101 * s + 3) % static_cast<int>(vocab));
        prompts.push_back(p);
        ASSERT_EQ((*kv_a)->AddSequence().value(), s);
        ASSERT_EQ((*kv_b)->AddSequence().value(), s);
      }
      // a: every prompt alone in one step. b: all prompts together, in chunks of 4 tokens.
      std::vector<std::vector<uint8_t>> last_a(n), last_b(n);
      for (int s = 0; s < n; ++s) {
        Batch b;
        b.AddRun(prompts[s], s, 0, true);
        std::vector<float> logits;
        ASSERT_TRUE((*kv_a)->Reserve(s, static_cast<int64_t>(prompts[s].size())).ok());
        ASSERT_TRUE(f.model->ForwardAllLogits(b, **kv_a, {}, &logits).ok());
        last_a[s] = Bytes(logits);
      }
      std::vector<int64_t> done(n, 0);
      while (true) {
        Batch b;
        for (int s = 0; s < n; ++s) {
          const int64_t len = static_cast<int64_t>(prompts[s].size());
          const int64_t c = std::min<int64_t>(4, len - done[s]);
          if (c <= 0) continue;
          ASSERT_TRUE((*kv_b)->Reserve(s, done[s] + c).ok());
          b.AddRun(std::span<const int32_t>(prompts[s]).subspan(done[s], c), s, done[s],
                   done[s] + c == len);
        }
        if (b.size() == 0) break;
        std::vector<float> logits;
        ASSERT_TRUE(f.model->ForwardAllLogits(b, **kv_b, {}, &logits).ok());
        int64_t row = 0;
        for (int s = 0; s < n; ++s) {
          const int64_t len = static_cast<int64_t>(prompts[s].size());
          const int64_t c = std::min<int64_t>(4, len - done[s]);
          if (c <= 0) continue;
          done[s] += c;
          if (done[s] == len) {
            last_b[s] = Bytes(std::span<const float>(logits).subspan(row * vocab, vocab));
            ++row;
          }
        }
      }
      for (int s = 0; s < n; ++s) EXPECT_EQ(last_a[s], last_b[s]) << "prompt of sequence " << s;
      // Decode: one token each, all in one step vs one per step.
      Batch all;
      for (int s = 0; s < n; ++s) {
        const int64_t pos = static_cast<int64_t>(prompts[s].size());
        ASSERT_TRUE((*kv_a)->Reserve(s, pos + 1).ok());
        ASSERT_TRUE((*kv_b)->Reserve(s, pos + 1).ok());
        all.Add(7 + s, s, pos, true);
      }
      std::vector<float> together;
      ASSERT_TRUE(f.model->ForwardAllLogits(all, **kv_b, {}, &together).ok());
      for (int s = 0; s < n; ++s) {
        Batch one;
        one.entries.push_back(all.entries[s]);
        std::vector<float> alone;
        ASSERT_TRUE(f.model->ForwardAllLogits(one, **kv_a, {}, &alone).ok());
        EXPECT_EQ(Bytes(alone), Bytes(std::span<const float>(together).subspan(s * vocab, vocab)))
            << "decode of sequence " << s;
      }
    }
  }
}

GenerateRequest Request(const tokenizer::Tokenizer& tok, std::string_view text, int64_t num_ctx,
                        int64_t num_predict, float temperature, uint64_t seed) {
  GenerateRequest r;
  r.prompt = *tok.Encode(text, true, false);
  r.options.num_ctx = num_ctx;
  r.options.num_predict = num_predict;
  r.options.sampling.temperature = temperature;
  r.options.sampling.seed = seed;
  return r;
}

// Runs the requests together on `runner` (driving Step), returns each result.
std::vector<GenerateStats> RunTogether(Runner& runner, const std::vector<GenerateRequest>& reqs) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const GenerateRequest& r : reqs) {
    streams.push_back(std::make_shared<RequestStream>());
    EXPECT_TRUE(runner.Submit(r, streams.back()).ok());
  }
  bool more = true;
  while (more) {
    auto m = runner.Step();
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (!m.ok()) break;
    more = *m;
  }
  std::vector<GenerateStats> out;
  for (auto& s : streams) {
    auto d = s->Drain();
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    out.push_back(d.ok() ? d->second : GenerateStats{});
  }
  return out;
}

// 8 concurrent requests with different seeds and options: each gives the tokens it gives alone.
TEST(EngineTest, ConcurrentRequestsGiveTheirTokensAlone) {
  for (const std::string& path : ModelPaths()) {
    SCOPED_TRACE(path);
    Files f = Open(path);
    ASSERT_NE(f.model, nullptr);
    LoadOptions lo;
    lo.num_ctx = 256;
    lo.num_parallel = 8;
    lo.num_batch = 32;  // prompts run in chunks, mixed with other sequences' decode tokens
    auto runner = MakeCpuRunner(f.model.get(), f.tok.get(), lo);
    ASSERT_TRUE(runner.ok()) << runner.status().ToString();
    std::vector<GenerateRequest> reqs;
    const char* texts[] = {"Once upon a time", "The little dog", "Lily and Ben went to the park",
                           "One day, a big", "The sun was", "Tom had a red ball and",
                           "In the garden there", "She liked"};
    for (int i = 0; i < 8; ++i) {
      GenerateRequest r = Request(*f.tok, texts[i], 256, 12 + i, i % 3 == 0 ? 0.0f : 0.9f,
                                  1000 + i);
      r.options.sampling.top_k = 20 + i;
      r.options.sampling.repeat_penalty = 1.0f + 0.05f * i;
      reqs.push_back(r);
    }
    const std::vector<GenerateStats> together = RunTogether(**runner, reqs);
    for (int i = 0; i < 8; ++i) {
      auto alone_runner = MakeCpuRunner(f.model.get(), f.tok.get(), lo);
      ASSERT_TRUE(alone_runner.ok());
      const std::vector<GenerateStats> alone = RunTogether(**alone_runner, {reqs[i]});
      EXPECT_EQ(together[i].tokens, alone[0].tokens) << "request " << i;
      EXPECT_FALSE(alone[0].tokens.empty());
    }
    EXPECT_EQ((*runner)->counts().running, 0);
  }
}

// A pool too small for 4 long generations: sequences are preempted and recomputed, and every
// request still gives the tokens it gives alone.
TEST(EngineTest, PreemptionKeepsResults) {
  Files f = Open(kShared + "/models/stories260K.gguf");
  ASSERT_NE(f.model, nullptr);
  LoadOptions lo;
  lo.num_ctx = 160;
  lo.num_parallel = 1;     // the pool holds one sequence of 160 positions
  lo.max_sequences = 4;    // but four run at once while they are short
  lo.num_batch = 64;
  auto runner = MakeCpuRunner(f.model.get(), f.tok.get(), lo);
  ASSERT_TRUE(runner.ok()) << runner.status().ToString();
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < 4; ++i) {
    GenerateRequest r = Request(*f.tok, i % 2 ? "Once upon a time" : "The dog and the cat", 160,
                                100, i == 3 ? 0.8f : 0.0f, 7 + i);
    r.options.sampling.repeat_penalty = 1.0f;
    reqs.push_back(r);
  }
  const std::vector<GenerateStats> together = RunTogether(**runner, reqs);
  int64_t preemptions = 0;
  for (const GenerateStats& s : together) preemptions += s.preemptions;
  EXPECT_GT(preemptions, 0);
  EXPECT_EQ((*runner)->counts().preemptions, preemptions);
  for (int i = 0; i < 4; ++i) {
    auto alone_runner = MakeCpuRunner(f.model.get(), f.tok.get(), lo);
    ASSERT_TRUE(alone_runner.ok());
    EXPECT_EQ(together[i].tokens, RunTogether(**alone_runner, {reqs[i]})[0].tokens) << i;
    EXPECT_EQ(together[i].tokens.size(), 100u) << i;
  }
}

// Cancelling a running request frees its blocks at the next step.
TEST(EngineTest, CancellationFreesBlocks) {
  Files f = Open(kShared + "/models/stories260K.gguf");
  ASSERT_NE(f.model, nullptr);
  LoadOptions lo;
  lo.num_ctx = 256;
  lo.num_parallel = 2;
  auto runner = MakeCpuRunner(f.model.get(), f.tok.get(), lo);
  ASSERT_TRUE(runner.ok());
  Runner& r = **runner;
  const int64_t free_before = r.kv().free_blocks();
  auto stream = std::make_shared<RequestStream>();
  ASSERT_TRUE(r.Submit(Request(*f.tok, "Once upon a time", 256, -1, 0.0f, 1), stream).ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(r.Step().ok());
  EXPECT_LT(r.kv().free_blocks(), free_before);
  EXPECT_EQ(r.counts().running, 1);
  stream->Cancel();
  ASSERT_TRUE(r.Step().ok());
  EXPECT_EQ(r.kv().free_blocks(), free_before);
  EXPECT_EQ(r.counts().running, 0);
  auto d = stream->Drain();
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->second.done_reason, DoneReason::kCancelled);
}

// The next turn of a conversation evaluates only its new tokens; the result is the same as
// evaluating everything.
TEST(EngineTest, PromptReuseEvaluatesOnlyNewTokens) {
  for (const std::string& path : ModelPaths()) {
    SCOPED_TRACE(path);
    Files f = Open(path);
    ASSERT_NE(f.model, nullptr);
    LoadOptions lo;
    lo.num_ctx = 256;
    lo.num_batch = 16;
    auto runner = MakeCpuRunner(f.model.get(), f.tok.get(), lo);
    ASSERT_TRUE(runner.ok());
    GenerateRequest first = Request(*f.tok, "Once upon a time, there was a little", 256, 8, 0.0f, 1);
    auto a = RunTogether(**runner, {first});
    GenerateRequest second = first;
    second.prompt.insert(second.prompt.end(), a[0].tokens.begin(), a[0].tokens.end());
    const std::vector<int32_t> more = *f.tok->Encode(" and then", false, false);
    second.prompt.insert(second.prompt.end(), more.begin(), more.end());
    auto b = RunTogether(**runner, {second});
    const int64_t cached = static_cast<int64_t>(first.prompt.size() + a[0].tokens.size()) - 1;
    EXPECT_GE(b[0].prompt_reused_count, cached - 1);
    EXPECT_EQ(b[0].prompt_eval_count + b[0].prompt_reused_count,
              static_cast<int64_t>(second.prompt.size()));
    auto fresh = MakeCpuRunner(f.model.get(), f.tok.get(), lo);
    ASSERT_TRUE(fresh.ok());
    auto c = RunTogether(**fresh, {second});
    EXPECT_EQ(c[0].prompt_reused_count, 0);
    EXPECT_EQ(b[0].tokens, c[0].tokens);
  }
}

// Grow: new KV blocks and a new compute reservation, allocated == the larger plan; running
// requests keep going.
TEST(EngineTest, GrowAllocatesTheLargerPlan) {
  Files f = Open(kShared + "/models/stories260K.gguf");
  ASSERT_NE(f.model, nullptr);
  LoadOptions lo;
  lo.num_ctx = 128;
  lo.num_gpu = 0;
  const ModelShape shape = ShapeFromModel(*f.model);
  auto plan = MakePlan(shape, BigCpu(), lo);
  ASSERT_TRUE(plan.ok());
  RunnerOptions ro;
  ro.num_threads = 2;
  auto runner = Runner::Create(f.model.get(), f.tok.get(), *plan, ro);  // with its thread
  ASSERT_TRUE(runner.ok());
  Runner& r = **runner;
  ExpectAllocatedAsPlanned(r, plan->devices.back());
  auto stream = std::make_shared<RequestStream>();
  ASSERT_TRUE(r.Submit(Request(*f.tok, "Once upon a time", 128, 40, 0.0f, 1), stream).ok());
  // A request larger than the loaded context is refused until the pool grows.
  auto big = std::make_shared<RequestStream>();
  EXPECT_EQ(r.Submit(Request(*f.tok, "Once upon a time", 512, 300, 0.0f, 1), big).code(),
            StatusCode::kOutOfRange);
  lo.num_ctx = 512;
  auto larger = MakePlan(shape, BigCpu(), lo);
  ASSERT_TRUE(larger.ok());
  ASSERT_TRUE(r.Grow(*larger).ok());
  EXPECT_EQ(r.num_ctx(), 512);
  EXPECT_EQ(r.counts().grows, 1);
  ASSERT_TRUE(stream->Drain().ok());
  ASSERT_TRUE(r.Submit(Request(*f.tok, "Once upon a time", 512, 300, 0.0f, 1), big).ok());
  auto res = big->Drain();
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  // Idle again: every purpose equals the larger plan.
  ExpectAllocatedAsPlanned(r, larger->devices.back());
  // Placement or sequence changes are not a grow.
  LoadOptions other = lo;
  other.num_parallel = 2;
  auto moved = MakePlan(shape, BigCpu(), other);
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(r.Grow(*moved).code(), StatusCode::kInvalidArgument);
  r.Shutdown();
}

}  // namespace
}  // namespace ferry

namespace ferry {
namespace {

// The final hidden states of `prompt` from one plain forward step, pooled by hand (mean).
std::vector<float> PooledByHand(const Model& model, const std::vector<int32_t>& prompt) {
  auto kv = KvCache::Create(model.KvOptions(DType::kF16, 256, 1, 256));
  EXPECT_TRUE(kv.ok());
  auto seq = (*kv)->AddSequence();
  EXPECT_TRUE(seq.ok());
  EXPECT_TRUE((*kv)->Reserve(*seq, static_cast<int64_t>(prompt.size())).ok());
  Batch b;
  b.AddHiddenRun(prompt, *seq, 0);
  std::vector<double> sum(static_cast<size_t>(model.hparams().n_embd), 0.0);
  ForwardOptions fo;
  fo.each_hidden = [&](int64_t, std::span<const float> h) -> Status {
    for (size_t i = 0; i < h.size(); ++i) sum[i] += h[i];
    return Status::Ok();
  };
  EXPECT_TRUE(model.Forward(b, **kv, fo).ok());
  std::vector<float> out(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) {
    out[i] = static_cast<float>(sum[i] / static_cast<double>(prompt.size()));
  }
  return out;
}

// An embedding request is its prompt's hidden states, mean-pooled: the same bits whether its
// prompt runs in one step or in chunks beside generating requests, and those requests' tokens
// do not change.
TEST(EngineTest, EmbeddingRequestsPoolTheHiddenStates) {
  for (const std::string& path : ModelPaths()) {
    SCOPED_TRACE(path);
    Files f = Open(path);
    ASSERT_NE(f.model, nullptr);
    LoadOptions lo;
    lo.num_ctx = 256;
    lo.num_parallel = 4;
    lo.num_batch = 8;  // the embedding's prompt runs in chunks of 8, beside decode tokens
    auto runner = MakeCpuRunner(f.model.get(), f.tok.get(), lo);
    ASSERT_TRUE(runner.ok()) << runner.status().ToString();
    GenerateRequest gen = Request(*f.tok, "Once upon a time", 256, 24, 0.0f, 1);
    GenerateRequest emb = Request(*f.tok, "Lily and Ben went to the park to play with a ball.",
                                  256, 0, 0.0f, 2);
    emb.embedding = Pooling::kMean;
    GenerateRequest last = emb;
    last.embedding = Pooling::kLast;
    const std::vector<GenerateStats> together = RunTogether(**runner, {gen, emb, last});
    const std::vector<float> want = PooledByHand(*f.model, emb.prompt);
    ASSERT_EQ(together[1].embedding.size(), want.size());
    EXPECT_EQ(together[1].embedding, want);
    EXPECT_TRUE(together[1].tokens.empty());
    EXPECT_EQ(together[1].prompt_eval_count, static_cast<int64_t>(emb.prompt.size()));
    // Last-token pooling: the hidden state of the prompt's last position.
    ASSERT_EQ(together[2].embedding.size(), want.size());
    EXPECT_NE(together[2].embedding, want);
    // The generation beside them gives its tokens alone.
    auto alone = MakeCpuRunner(f.model.get(), f.tok.get(), lo);
    ASSERT_TRUE(alone.ok());
    EXPECT_EQ(RunTogether(**alone, {gen})[0].tokens, together[0].tokens);
    // An embedding leaves no cached K/V behind: a second one evaluates every token again.
    const std::vector<GenerateStats> again = RunTogether(**runner, {emb});
    EXPECT_EQ(again[0].embedding, want);
    EXPECT_EQ(again[0].prompt_reused_count, 0);
  }
}

}  // namespace
}  // namespace ferry
