// The scheduler with real runners (LocalRunnerFactory) on real models: Ollama's reload case
// performs no reload, concurrent requests through the scheduler give their tokens alone, and
// what a resident model holds equals its plan after a grow.
#include <gtest/gtest.h>

#include <cstdlib>

#include "kv/kv_cache.h"
#include "runtime/loader.h"
#include "sched/local_factory.h"
#include "sched/scheduler.h"

namespace ferry::sched {
namespace {

const std::string kShared = FERRY_SHARED_DIR;

std::vector<std::string> ModelPaths() {
  std::vector<std::string> paths = {kShared + "/models/stories260K.gguf"};
  if (const char* dir = std::getenv("FERRY_MODELS")) {
    paths.push_back(std::string(dir) + "/gemma-3-270m-q4_k_m.gguf");
  }
  return paths;
}

std::unique_ptr<Scheduler> MakeScheduler() {
  SchedulerOptions o;
  auto inv = ParseDevices("cpu=8GiB@20GB/s");
  EXPECT_TRUE(inv.ok()) << inv.status().ToString();
  o.devices = *inv;
  o.tick_interval = std::chrono::milliseconds(5);
  auto factory = std::make_unique<LocalRunnerFactory>(
      [](const std::string& name) -> StatusOr<std::string> { return name; });
  auto s = Scheduler::Create(std::move(o), std::move(factory));
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

GenerateRequest Greedy(const std::string& path, const std::string& text, int64_t num_ctx,
                       int64_t num_predict, uint64_t seed = 0, float temperature = 0.0f) {
  auto files = OpenModelFiles(path);
  EXPECT_TRUE(files.ok());
  GenerateRequest r;
  r.prompt = *files->tokenizer->Encode(text, true, false);
  r.options.num_ctx = num_ctx;
  r.options.num_predict = num_predict;
  r.options.num_thread = 2;
  r.options.sampling.temperature = temperature;
  r.options.sampling.seed = seed;
  return r;
}

StatusOr<GenerateStats> Serve(Scheduler& s, const std::string& model, GenerateRequest r) {
  FERRY_ASSIGN_OR_RETURN(std::shared_ptr<RequestStream> stream,
                         s.Submit(SchedRequest{model, std::move(r), std::nullopt}));
  FERRY_ASSIGN_OR_RETURN(auto done, stream->Drain());
  return done.second;
}

// Ollama reloads when num_ctx changes; ferry serves 2048, then 1024 (smaller: as is), then 4096
// (one grow in place), then 2048 again: 1 load, 0 reloads, 1 grow, and after the grow the
// runner holds exactly what the plan for 4096 says.
TEST(SchedulerRealTest, OllamasReloadCaseLoadsOnceAndGrowsOnce) {
  for (const std::string& path : ModelPaths()) {
    SCOPED_TRACE(path);
    auto s = MakeScheduler();
    ASSERT_NE(s, nullptr);
    for (int64_t ctx : {2048, 1024, 4096, 2048}) {
      auto r = Serve(*s, path, Greedy(path, "Once upon a time", ctx, 8));
      ASSERT_TRUE(r.ok()) << ctx << ": " << r.status().ToString();
      EXPECT_EQ(r->tokens.size(), 8u);
    }
    const SchedulerCounters c = s->Counters();
    EXPECT_EQ(c.loads, 1);
    EXPECT_EQ(c.reloads, 0);
    EXPECT_EQ(c.grows, 1);
    const std::vector<ResidentModel> resident = s->Resident();
    ASSERT_EQ(resident.size(), 1u);
    EXPECT_EQ(resident[0].num_ctx, 4096);
    // Allocated == planned for the grown context.
    auto files = OpenModelFiles(path);
    ASSERT_TRUE(files.ok());
    LoadOptions lo;
    lo.num_ctx = 4096;
    lo.num_gpu = 0;
    const ModelShape shape = ShapeFromModel(*files->model);
    auto plan = MakePlan(shape, *ParseDevices("cpu=8GiB@20GB/s"), lo);
    ASSERT_TRUE(plan.ok());
    const DevicePlan& cpu = plan->devices.back();
    ASSERT_EQ(resident[0].allocated.size(), 1u);
    const auto& bytes = resident[0].allocated[0].bytes_by_purpose;
    EXPECT_EQ(bytes.at("kv"), cpu.kv_bytes);
    EXPECT_EQ(bytes.at("compute"), cpu.compute_bytes);
    EXPECT_EQ(bytes.at("sampling"), cpu.sampling_bytes);
    EXPECT_EQ(bytes.at("weights"), cpu.weights_bytes);
    EXPECT_EQ(bytes.at("host"), cpu.host_bytes);
    EXPECT_EQ(resident[0].total_bytes, cpu.total_bytes);
    ASSERT_TRUE(s->Unload(path).ok());
    s->Shutdown();
  }
}

// Requests submitted together through the scheduler (different seeds and sampling) give the
// tokens each gives alone.
TEST(SchedulerRealTest, ConcurrentRequestsThroughTheScheduler) {
  const std::string path = kShared + "/models/stories260K.gguf";
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < 4; ++i) {
    reqs.push_back(Greedy(path, i % 2 ? "The little dog" : "Once upon a time", 512, 16, 40 + i,
                          i == 0 ? 0.0f : 1.0f));
  }
  std::vector<std::vector<int32_t>> alone;
  for (const GenerateRequest& r : reqs) {
    auto s = MakeScheduler();
    auto res = Serve(*s, path, r);
    ASSERT_TRUE(res.ok()) << res.status().ToString();
    alone.push_back(res->tokens);
  }
  auto s = MakeScheduler();
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const GenerateRequest& r : reqs) {
    auto st = s->Submit(SchedRequest{path, r, std::nullopt});
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    streams.push_back(*st);
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    auto d = streams[i]->Drain();
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(d->second.tokens, alone[i]) << i;
  }
  EXPECT_EQ(s->Counters().loads, 1);
}

}  // namespace
}  // namespace ferry::sched
