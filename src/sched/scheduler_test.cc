// The scheduler's decision table with fake runners and described devices: nothing is loaded,
// and time is a fake clock the tests move.
#include "sched/scheduler.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "base/bytes.h"

namespace ferry::sched {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::nanoseconds;
using std::chrono::seconds;

// What a FakeRunner did and holds; shared with the test so it outlives the runner.
struct FakeRunnerState {
  std::mutex mu;
  std::string model;
  Plan plan;
  int num_thread = 0;
  bool auto_finish = false;  // Submit ends each request at once with a done event
  std::deque<std::shared_ptr<RequestStream>> waiting;
  std::deque<std::shared_ptr<RequestStream>> running;
  std::vector<GenerateRequest> submitted;
  std::vector<Plan> grown;  // plans passed to Grow
  int64_t preemptions = 0;
  bool shut_down = false;

  void AdmitAll() {
    std::lock_guard<std::mutex> l(mu);
    while (!waiting.empty()) {
      running.push_back(waiting.front());
      waiting.pop_front();
    }
  }
  // Ends every request (waiting ones are admitted first).
  void FinishAll() {
    AdmitAll();
    std::lock_guard<std::mutex> l(mu);
    for (auto& s : running) s->PushDone(GenerateStats{});
    running.clear();
  }
};

class FakeRunner : public ModelRunner {
 public:
  explicit FakeRunner(std::shared_ptr<FakeRunnerState> state) : state_(std::move(state)) {}

  Plan plan() const override { return state_->plan; }

  std::vector<DeviceAllocation> allocated() const override {
    std::lock_guard<std::mutex> l(state_->mu);
    std::vector<DeviceAllocation> out;
    for (const DevicePlan& d : state_->plan.devices) {
      if (d.total_bytes == 0) continue;
      DeviceAllocation a;
      a.device = d.name;
      auto put = [&](const char* purpose, uint64_t bytes) {
        if (bytes > 0) a.bytes_by_purpose[purpose] = bytes;
      };
      put("weights", d.weights_bytes);
      put("kv", d.kv_bytes);
      put("compute", d.compute_bytes);
      put("host", d.host_bytes);
      put("sampling", d.sampling_bytes);
      out.push_back(std::move(a));
    }
    return out;
  }

  Status Submit(GenerateRequest request, std::shared_ptr<RequestStream> stream) override {
    std::lock_guard<std::mutex> l(state_->mu);
    if (state_->shut_down) return FailedPreconditionError("runner shut down");
    if (request.options.num_ctx > state_->plan.options.num_ctx) {
      return OutOfRangeError("num_ctx {} beyond the model's {}", request.options.num_ctx,
                             state_->plan.options.num_ctx);
    }
    state_->submitted.push_back(std::move(request));
    if (state_->auto_finish) {
      stream->PushDone(GenerateStats{});
    } else {
      state_->waiting.push_back(std::move(stream));
    }
    return Status::Ok();
  }

  Status Grow(const Plan& plan) override {
    std::lock_guard<std::mutex> l(state_->mu);
    if (plan.layer_device != state_->plan.layer_device ||
        plan.output_device != state_->plan.output_device ||
        plan.options.num_ctx < state_->plan.options.num_ctx) {
      return InvalidArgumentError("Grow: placement changed or num_ctx shrinks");
    }
    state_->grown.push_back(plan);
    state_->plan = plan;
    return Status::Ok();
  }

  RunnerCounts counts() const override {
    std::lock_guard<std::mutex> l(state_->mu);
    RunnerCounts c;
    c.waiting = static_cast<int64_t>(state_->waiting.size());
    c.running = static_cast<int64_t>(state_->running.size());
    c.kv_blocks_total = state_->plan.options.num_ctx / 16 * state_->plan.options.num_parallel;
    c.kv_blocks_used = c.running * 3;
    c.preemptions = state_->preemptions;
    c.grows = static_cast<int64_t>(state_->grown.size());
    return c;
  }

  void Shutdown() override {
    std::lock_guard<std::mutex> l(state_->mu);
    for (auto& s : state_->waiting) s->PushError(UnavailableError("model unloaded"));
    for (auto& s : state_->running) s->PushError(UnavailableError("model unloaded"));
    state_->waiting.clear();
    state_->running.clear();
    state_->shut_down = true;
  }

 private:
  std::shared_ptr<FakeRunnerState> state_;
};

// A small llama-like model; `layers` scales its weights.
ModelShape SmallModel(const std::string& name, int64_t layers = 4) {
  DescribedModel d{.name = name,
                   .n_layer = layers,
                   .n_embd = 512,
                   .n_ff = 1024,
                   .n_head = 8,
                   .n_head_kv = 8,
                   .head_dim = 64,
                   .n_vocab = 2000,
                   .n_ctx_train = 32768};
  auto s = ShapeFromDescription(d);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return *s;
}

class FakeFactory : public RunnerFactory {
 public:
  void Add(const ModelShape& shape) { shapes_[shape.name] = shape; }

  StatusOr<ModelShape> Shape(const std::string& model) override {
    auto it = shapes_.find(model);
    if (it == shapes_.end()) {
      std::string names;
      for (const auto& [n, s] : shapes_) names += (names.empty() ? "" : ", ") + n;
      return NotFoundError("model '{}' not found (have: {})", model, names);
    }
    return it->second;
  }

  StatusOr<std::unique_ptr<ModelRunner>> Load(const std::string& model, const Plan& plan,
                                              int num_thread) override {
    if (fail_next_load) {
      fail_next_load = false;
      return InternalError("fake load failure");
    }
    auto state = std::make_shared<FakeRunnerState>();
    state->model = model;
    state->plan = plan;
    state->num_thread = num_thread;
    state->auto_finish = auto_finish;
    runners.push_back(state);
    latest[model] = state;
    return std::unique_ptr<ModelRunner>(new FakeRunner(state));
  }

  bool auto_finish = false;
  bool fail_next_load = false;
  std::vector<std::shared_ptr<FakeRunnerState>> runners;  // every load, in order
  std::map<std::string, std::shared_ptr<FakeRunnerState>> latest;

 private:
  std::map<std::string, ModelShape> shapes_;
};

DeviceInventory Devices(std::string_view text) {
  auto inv = ParseDevices(text);
  EXPECT_TRUE(inv.ok()) << inv.status().ToString();
  return *inv;
}

// The plan of `shape` alone on a roomy CPU.
Plan AlonePlan(const ModelShape& shape, int64_t num_ctx = 2048,
               std::string_view devices = "cpu=64GiB") {
  LoadOptions o;
  o.num_ctx = num_ctx;
  auto p = MakePlan(shape, Devices(devices), o);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return *p;
}

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"a", "b", "c", "d"}) AddModel(SmallModel(name));
  }

  void AddModel(const ModelShape& shape) { pending_models_.push_back(shape); }

  void Start(DeviceInventory devices, SchedulerOptions options = {}) {
    auto factory = std::make_unique<FakeFactory>();
    for (const auto& s : pending_models_) factory->Add(s);
    factory_ = factory.get();
    options.devices = std::move(devices);
    options.start_thread = false;
    options.clock = [this] { return now_; };
    auto s = Scheduler::Create(std::move(options), std::move(factory));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    sched_ = std::move(*s);
  }

  StatusOr<std::shared_ptr<RequestStream>> Send(const std::string& model, int64_t num_ctx = 2048,
                                                std::optional<KeepAlive> keep_alive = {},
                                                int num_gpu = -1) {
    SchedRequest r;
    r.model = model;
    r.request.prompt = {1, 2, 3};
    r.request.options.num_ctx = num_ctx;
    r.request.options.num_gpu = num_gpu;
    r.keep_alive = keep_alive;
    return sched_->Submit(std::move(r));
  }

  // Submits, ticks, and expects the request to be with the model's runner.
  std::shared_ptr<RequestStream> Serve(const std::string& model, int64_t num_ctx = 2048,
                                       std::optional<KeepAlive> keep_alive = {}) {
    auto s = Send(model, num_ctx, keep_alive);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    sched_->Tick();
    EXPECT_EQ(sched_->Counters().waiting - RunnerWaiting(), 0) << model << " still queued";
    return s.ok() ? *s : nullptr;
  }

  int64_t RunnerWaiting() {
    int64_t w = 0;
    for (const auto& r : sched_->Resident()) w += r.waiting;
    return w;
  }

  std::vector<std::string> ResidentNames() {
    std::vector<std::string> names;
    for (const auto& r : sched_->Resident()) names.push_back(r.model);
    std::sort(names.begin(), names.end());
    return names;
  }

  FakeRunnerState& Runner(const std::string& model) { return *factory_->latest.at(model); }

  std::vector<ModelShape> pending_models_;
  FakeFactory* factory_ = nullptr;
  std::unique_ptr<Scheduler> sched_;
  std::chrono::steady_clock::time_point now_{hours(1000)};
};

TEST_F(SchedulerTest, SmallerContextIsServedAndLargerGrowsWithoutReload) {
  Start(Devices("cpu=64GiB"));
  // Ollama's case: 2048, 1024, 4096, 2048 -> one load, one grow, no reload.
  for (int64_t ctx : {2048, 1024, 4096, 2048}) {
    auto s = Serve("a", ctx);
    Runner("a").FinishAll();
    auto done = s->Next(std::chrono::milliseconds(0));
    ASSERT_TRUE(done.has_value()) << ctx;
    EXPECT_EQ(done->kind, StreamEvent::Kind::kDone) << ctx;
    sched_->Tick();
  }
  const SchedulerCounters c = sched_->Counters();
  EXPECT_EQ(c.loads, 1);
  EXPECT_EQ(c.reloads, 0);
  EXPECT_EQ(c.grows, 1);
  EXPECT_EQ(factory_->runners.size(), 1u);
  FakeRunnerState& r = Runner("a");
  ASSERT_EQ(r.grown.size(), 1u);
  EXPECT_EQ(r.grown[0].options.num_ctx, 4096);
  EXPECT_EQ(r.submitted.size(), 4u);
  // The grown plan is what the planner says for 4096 on the whole CPU.
  EXPECT_EQ(r.plan.total_bytes(), AlonePlan(SmallModel("a"), 4096).total_bytes());
  EXPECT_EQ(sched_->Resident().at(0).num_ctx, 4096);
}

TEST_F(SchedulerTest, GrowKeepsEveryLayerOnARoomyGpu) {
  Start(Devices("cuda0=8GiB,cpu=16GiB"));
  Serve("a", 2048);
  const int gpu_layers = Runner("a").plan.gpu_layers;
  EXPECT_EQ(gpu_layers, 5);  // 4 blocks + the output
  Serve("a", 16384);
  EXPECT_EQ(sched_->Counters().grows, 1);
  EXPECT_EQ(sched_->Counters().reloads, 0);
  EXPECT_EQ(Runner("a").plan.gpu_layers, gpu_layers);
  EXPECT_EQ(Runner("a").plan.options.num_ctx, 16384);
  // Each request while running: the second one did not wait for the first.
  EXPECT_EQ(sched_->Counters().running + sched_->Counters().waiting, 2);
}

TEST_F(SchedulerTest, LargerContextReloadsWhenALayerMustLeaveTheGpu) {
  const ModelShape a = SmallModel("a");
  const Plan on_gpu = AlonePlan(a, 2048, "cuda0=8GiB,cpu=16GiB");
  ASSERT_EQ(on_gpu.gpu_layers, 5);
  // A GPU that holds the model at 2048 with a little room, but not the KV of 8192.
  const uint64_t gpu = on_gpu.devices[0].total_bytes + 2 * kMiB;
  DeviceInventory inv = Devices("cuda0=8GiB,cpu=16GiB");
  inv.devices[0].free_bytes = inv.devices[0].total_bytes = gpu;
  Start(inv);

  auto first = Serve("a", 2048);
  EXPECT_EQ(Runner("a").plan.gpu_layers, 5);
  // The model is busy: the reload waits in the queue, nothing else happens.
  auto big = Send("a", 8192);
  ASSERT_TRUE(big.ok());
  sched_->Tick();
  sched_->Tick();
  EXPECT_EQ(factory_->runners.size(), 1u);
  EXPECT_EQ(sched_->Counters().waiting, 2);  // one in the runner, one queued
  Runner("a").FinishAll();
  sched_->Tick();
  const SchedulerCounters c = sched_->Counters();
  EXPECT_EQ(c.reloads, 1);
  EXPECT_EQ(c.loads, 1);
  EXPECT_EQ(c.grows, 0);
  ASSERT_EQ(factory_->runners.size(), 2u);
  EXPECT_TRUE(factory_->runners[0]->shut_down);
  EXPECT_LT(Runner("a").plan.gpu_layers, 5);
  EXPECT_EQ(Runner("a").plan.options.num_ctx, 8192);
  EXPECT_EQ(Runner("a").submitted.size(), 1u);
  EXPECT_LE(sched_->Resident().at(0).gpu_bytes, gpu);
}

TEST_F(SchedulerTest, NumGpuChangeReloadsButThreadsAndBatchDoNot) {
  Start(Devices("cuda0=8GiB,cpu=16GiB"));
  Serve("a");
  Runner("a").FinishAll();
  // num_thread and num_batch differences are served by the loaded model.
  SchedRequest r;
  r.model = "a";
  r.request.prompt = {1};
  r.request.options.num_thread = 3;
  r.request.options.num_batch = 64;
  ASSERT_TRUE(sched_->Submit(std::move(r)).ok());
  sched_->Tick();
  Runner("a").FinishAll();
  EXPECT_EQ(factory_->runners.size(), 1u);
  // num_gpu = 5 is the placement it has (4 blocks + output): served as is.
  ASSERT_TRUE(Send("a", 2048, {}, 5).ok());
  sched_->Tick();
  Runner("a").FinishAll();
  EXPECT_EQ(factory_->runners.size(), 1u);
  // num_gpu 0 moves everything to the CPU: reload.
  ASSERT_TRUE(Send("a", 2048, {}, 0).ok());
  sched_->Tick();
  EXPECT_EQ(sched_->Counters().reloads, 1);
  ASSERT_EQ(factory_->runners.size(), 2u);
  EXPECT_EQ(Runner("a").plan.gpu_layers, 0);
  EXPECT_EQ(sched_->Resident().at(0).gpu_bytes, 0u);
}

TEST_F(SchedulerTest, EvictsLeastRecentlyUsedIdleModelsOnlyAsManyAsNeeded) {
  const ModelShape big = SmallModel("big", 12);
  AddModel(big);
  const uint64_t small = AlonePlan(SmallModel("a")).total_bytes();
  const uint64_t big_bytes = AlonePlan(big).total_bytes();
  // Room for three small models, not four; the big one needs two small ones' room.
  const uint64_t cpu = 3 * small + small / 2;
  ASSERT_GT(big_bytes, small + small / 2);
  ASSERT_LE(big_bytes, 2 * small + small / 2);
  DeviceInventory inv = Devices("cpu=1GiB");
  inv.devices[0].free_bytes = inv.devices[0].total_bytes = cpu;
  SchedulerOptions o;
  o.max_loaded_models = 10;
  Start(inv, o);
  for (const char* m : {"a", "b", "c"}) {
    Serve(m);
    Runner(m).FinishAll();
  }
  Serve("a");  // a is now the most recently used: b is the LRU
  Runner("a").FinishAll();
  sched_->Tick();
  Serve("d");
  EXPECT_EQ(sched_->Counters().evictions, 1);
  EXPECT_EQ(ResidentNames(), (std::vector<std::string>{"a", "c", "d"}));
  EXPECT_TRUE(factory_->latest["b"]->shut_down);
  Runner("d").FinishAll();
  sched_->Tick();
  // LRU order now c < a < d: the big model evicts c and a, not d.
  Serve("big");
  EXPECT_EQ(sched_->Counters().evictions, 3);
  EXPECT_EQ(ResidentNames(), (std::vector<std::string>{"big", "d"}));
  EXPECT_EQ(sched_->Counters().loads, 5);
}

TEST_F(SchedulerTest, BusyModelsAreNeverEvictedTheRequestWaits) {
  const uint64_t small = AlonePlan(SmallModel("a")).total_bytes();
  DeviceInventory inv = Devices("cpu=1GiB");
  inv.devices[0].free_bytes = inv.devices[0].total_bytes = 2 * small + small / 2;
  Start(inv);
  auto a = Serve("a");  // stays busy
  Serve("b");
  Runner("b").FinishAll();
  sched_->Tick();
  Serve("c");  // evicts idle b, not busy a
  EXPECT_EQ(ResidentNames(), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(sched_->Counters().evictions, 1);
  // a and c are busy: d waits, however many ticks pass.
  auto d = Send("d");
  ASSERT_TRUE(d.ok());
  for (int i = 0; i < 3; ++i) sched_->Tick();
  EXPECT_EQ(ResidentNames(), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(sched_->Counters().waiting, 3);  // a's and c's in their runners, d's queued
  EXPECT_FALSE(factory_->latest.count("d"));
  // A request for a resident model is served meanwhile.
  ASSERT_TRUE(Send("c").ok());
  EXPECT_EQ(Runner("c").submitted.size(), 2u);
  // a finishes: the next Tick evicts it and loads d.
  Runner("a").FinishAll();
  sched_->Tick();
  EXPECT_EQ(ResidentNames(), (std::vector<std::string>{"c", "d"}));
  EXPECT_EQ(Runner("d").submitted.size(), 1u);
  EXPECT_EQ(sched_->Counters().evictions, 2);
  EXPECT_EQ(sched_->Counters().waiting, 3);  // c's two, d's one: all in runners
}

TEST_F(SchedulerTest, MaxLoadedModelsEvictsTheLruIdleModel) {
  SchedulerOptions o;
  o.max_loaded_models = 2;
  Start(Devices("cpu=64GiB"), o);
  Serve("a");
  Serve("b");
  Runner("a").FinishAll();
  Runner("b").FinishAll();
  sched_->Tick();
  Serve("c");
  EXPECT_EQ(ResidentNames(), (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(sched_->Counters().evictions, 1);
  // Both busy now (c running, b gets a request): d waits for a slot.
  Serve("b");
  ASSERT_TRUE(Send("d").ok());
  sched_->Tick();
  EXPECT_EQ(ResidentNames(), (std::vector<std::string>{"b", "c"}));
  Runner("c").FinishAll();
  sched_->Tick();
  EXPECT_EQ(ResidentNames(), (std::vector<std::string>{"b", "d"}));
}

TEST_F(SchedulerTest, DefaultMaxLoadedIsThreePerGpuAtLeastThree) {
  Start(Devices("cpu=64GiB"));
  for (const char* m : {"a", "b", "c", "d"}) {
    Serve(m);
    Runner(m).FinishAll();
    sched_->Tick();
  }
  EXPECT_EQ(sched_->Resident().size(), 3u);  // no GPU: 3
  EXPECT_EQ(sched_->Counters().evictions, 1);

  for (int i = 0; i < 7; ++i) AddModel(SmallModel("m" + std::to_string(i)));
  Start(Devices("cuda0=64GiB,cuda1=64GiB,cpu=64GiB"));
  for (int i = 0; i < 7; ++i) {
    const std::string m = "m" + std::to_string(i);
    Serve(m);
    Runner(m).FinishAll();
    sched_->Tick();
  }
  EXPECT_EQ(sched_->Resident().size(), 6u);  // two GPUs: 6
  EXPECT_EQ(sched_->Counters().evictions, 1);
}

TEST_F(SchedulerTest, QueueIsBoundedOverAllModels) {
  const uint64_t small = AlonePlan(SmallModel("a")).total_bytes();
  DeviceInventory inv = Devices("cpu=1GiB");
  inv.devices[0].free_bytes = inv.devices[0].total_bytes = small + small / 2;  // one model
  Start(inv);
  // 300 requests handed to a's runner, not admitted: they count.
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(Send("a").ok());
  sched_->Tick();
  // b cannot load while a is busy: 212 wait in the scheduler's queue.
  for (int i = 0; i < 212; ++i) ASSERT_TRUE(Send("b").ok()) << i;
  sched_->Tick();
  EXPECT_EQ(sched_->Counters().waiting, 512);
  // The 513th is refused at once, whichever model it is for.
  for (const char* m : {"a", "b", "c"}) {
    auto s = Send(m);
    ASSERT_FALSE(s.ok()) << m;
    EXPECT_EQ(s.status().code(), StatusCode::kResourceExhausted);
    EXPECT_NE(s.status().message().find("max_queue 512"), std::string::npos);
  }
  EXPECT_EQ(sched_->Counters().rejections, 3);
  // Admitted requests no longer wait: room again.
  Runner("a").AdmitAll();
  EXPECT_TRUE(Send("c").ok());
}

TEST_F(SchedulerTest, KeepAliveDefaultStartsWhenTheLastRequestEnds) {
  Start(Devices("cpu=64GiB"));
  Serve("a");
  // Running for an hour: never expires while busy.
  now_ += hours(1);
  sched_->Tick();
  EXPECT_EQ(sched_->Resident().size(), 1u);
  EXPECT_FALSE(sched_->Resident()[0].expires_at.has_value());
  Runner("a").FinishAll();
  sched_->Tick();  // sees it idle: the 5 minutes start now
  const auto idle = now_;
  EXPECT_EQ(sched_->Resident()[0].expires_at, idle + minutes(5));
  now_ += minutes(5) - seconds(1);
  sched_->Tick();
  EXPECT_EQ(sched_->Resident().size(), 1u);
  now_ += seconds(1);
  sched_->Tick();
  EXPECT_TRUE(sched_->Resident().empty());
  EXPECT_EQ(sched_->Counters().unloads, 1);
  EXPECT_TRUE(Runner("a").shut_down);
}

TEST_F(SchedulerTest, KeepAliveZeroUnloadsWhenTheRequestEnds) {
  Start(Devices("cpu=64GiB"));
  Serve("a", 2048, KeepAlive{nanoseconds(0)});
  sched_->Tick();
  EXPECT_EQ(sched_->Resident().size(), 1u);  // still running
  Runner("a").FinishAll();
  sched_->Tick();
  EXPECT_TRUE(sched_->Resident().empty());
  EXPECT_EQ(sched_->Counters().unloads, 1);
}

TEST_F(SchedulerTest, KeepAliveNegativeNeverExpiresAndALaterRequestReplacesIt) {
  SchedulerOptions o;
  o.default_keep_alive = KeepAlive{seconds(30)};
  Start(Devices("cpu=64GiB"), o);
  Serve("a", 2048, KeepAlive::Forever());
  Runner("a").FinishAll();
  sched_->Tick();
  now_ += hours(10000);
  sched_->Tick();
  ASSERT_EQ(sched_->Resident().size(), 1u);
  EXPECT_FALSE(sched_->Resident()[0].expires_at.has_value());
  EXPECT_TRUE(sched_->Resident()[0].keep_alive.forever());
  // A request without keep_alive keeps the model's; one with 10s replaces it.
  Serve("a");
  Runner("a").FinishAll();
  sched_->Tick();
  now_ += hours(1);
  sched_->Tick();
  EXPECT_EQ(sched_->Resident().size(), 1u);
  Serve("a", 2048, KeepAlive{seconds(10)});
  Runner("a").FinishAll();
  sched_->Tick();
  now_ += seconds(10);
  sched_->Tick();
  EXPECT_TRUE(sched_->Resident().empty());
  // A fresh load takes the default (30s).
  Serve("b");
  EXPECT_EQ(sched_->Resident()[0].keep_alive, KeepAlive{seconds(30)});
}

TEST_F(SchedulerTest, ModelTooLargeEvenAloneIsRefusedWithThePlannersReasons) {
  AddModel(SmallModel("huge", 400));
  Start(Devices("cpu=256MiB"));
  auto s = Send("huge");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kResourceExhausted);
  const std::string& m = s.status().message();
  EXPECT_NE(m.find("huge"), std::string::npos) << m;
  EXPECT_NE(m.find("does not fit"), std::string::npos) << m;
  EXPECT_NE(m.find("needs"), std::string::npos) << m;  // SuggestFits: how much is missing
  EXPECT_EQ(sched_->Counters().rejections, 1);
  EXPECT_TRUE(factory_->runners.empty());
  // A context too large for a small model: refused the same way, with the limit it needs.
  auto ctx = Send("a", 1 << 24);
  ASSERT_FALSE(ctx.ok());
  EXPECT_EQ(ctx.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(ctx.status().message().find("num_ctx"), std::string::npos);
}

TEST_F(SchedulerTest, UnknownModelAndBadOptionsFailAtOnce) {
  Start(Devices("cpu=64GiB"));
  auto s = Send("nope");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  EXPECT_NE(s.status().message().find("have: a, b, c, d"), std::string::npos);
  auto bad = Send("a", 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sched_->Counters().rejections, 0);
  EXPECT_EQ(sched_->Counters().waiting, 0);
}

TEST_F(SchedulerTest, UnloadNowWhenIdleElseWhenItsRequestsEnd) {
  Start(Devices("cpu=64GiB"));
  EXPECT_EQ(sched_->Unload("a").code(), StatusCode::kNotFound);
  Serve("a");
  Runner("a").FinishAll();
  EXPECT_TRUE(sched_->Unload("a").ok());
  EXPECT_TRUE(sched_->Resident().empty());
  Serve("b");
  EXPECT_TRUE(sched_->Unload("b").ok());
  sched_->Tick();
  EXPECT_EQ(ResidentNames(), (std::vector<std::string>{"b"}));  // busy
  Runner("b").FinishAll();
  sched_->Tick();
  EXPECT_TRUE(sched_->Resident().empty());
  EXPECT_EQ(sched_->Counters().unloads, 2);
}

TEST_F(SchedulerTest, ResidentAndCountersReportWhatRunnersAllocated) {
  SchedulerOptions o;
  o.num_parallel = 2;
  o.kv_type = DType::kQ8_0;
  Start(Devices("cuda0=8GiB,cpu=16GiB"), o);
  auto s = Serve("a", 4096);
  Runner("a").AdmitAll();
  Runner("a").preemptions = 3;
  const std::vector<ResidentModel> res = sched_->Resident();
  ASSERT_EQ(res.size(), 1u);
  const ResidentModel& r = res[0];
  const Plan& plan = Runner("a").plan;
  EXPECT_EQ(plan.options.num_parallel, 2);
  EXPECT_EQ(plan.options.kv_type, DType::kQ8_0);
  EXPECT_EQ(r.num_ctx, 4096);
  EXPECT_EQ(r.num_parallel, 2);
  EXPECT_EQ(r.total_bytes, plan.total_bytes());
  EXPECT_EQ(r.gpu_bytes, plan.devices[0].total_bytes);
  ASSERT_EQ(r.allocated.size(), 2u);
  EXPECT_EQ(r.allocated[0].device, "cuda0");
  EXPECT_EQ(r.allocated[0].bytes_by_purpose.at("kv"), plan.devices[0].kv_bytes);
  EXPECT_EQ(r.allocated[1].bytes_by_purpose.at("host"), plan.devices[1].host_bytes);
  EXPECT_EQ(r.plan_summary, plan.Summary());
  EXPECT_EQ(r.plan_bytes, plan.total_bytes());
  EXPECT_EQ(r.running, 1);
  EXPECT_EQ(r.kv_blocks_used, 3);
  EXPECT_EQ(r.kv_blocks_total, 4096 / 16 * 2);
  SchedulerCounters c = sched_->Counters();
  EXPECT_EQ(c.running, 1);
  EXPECT_EQ(c.waiting, 0);
  ASSERT_EQ(c.requests.size(), 1u);
  EXPECT_EQ(c.requests[0].model, "a");
  EXPECT_EQ(c.requests[0].running, 1);
  EXPECT_EQ(c.requests[0].waiting, 0);
  EXPECT_EQ(c.preemptions, 3);
  ASSERT_EQ(c.kv_blocks.size(), 1u);
  EXPECT_EQ(c.kv_blocks[0].model, "a");
  EXPECT_EQ(c.kv_blocks[0].used, 3);
  // Preemptions of unloaded runners still count.
  Runner("a").FinishAll();
  ASSERT_TRUE(sched_->Unload("a").ok());
  EXPECT_EQ(sched_->Counters().preemptions, 3);
  EXPECT_TRUE(sched_->Counters().kv_blocks.empty());
}

TEST_F(SchedulerTest, FreeMemoryIsCapacityMinusWhatResidentModelsAllocated) {
  // Two models fit on the GPU side by side; the second is planned on what the first left.
  Start(Devices("cuda0=8GiB,cpu=16GiB"));
  Serve("a");
  Serve("b");
  const auto res = sched_->Resident();
  ASSERT_EQ(res.size(), 2u);
  const Plan& pb = Runner("b").plan;
  EXPECT_EQ(pb.devices[0].capacity_bytes, 8 * kGiB - Runner("a").plan.devices[0].total_bytes);
  EXPECT_EQ(pb.devices[1].capacity_bytes, 16 * kGiB - Runner("a").plan.devices[1].total_bytes);
}

TEST_F(SchedulerTest, FailedLoadEndsTheRequestWithTheError) {
  Start(Devices("cpu=64GiB"));
  factory_->fail_next_load = true;
  auto s = Send("a");
  ASSERT_TRUE(s.ok());
  sched_->Tick();
  auto e = (*s)->Next(std::chrono::milliseconds(0));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->kind, StreamEvent::Kind::kError);
  EXPECT_NE(e->error.message().find("fake load failure"), std::string::npos);
  EXPECT_TRUE(sched_->Resident().empty());
  EXPECT_EQ(sched_->Counters().loads, 0);
}

TEST_F(SchedulerTest, CancelledWhileQueuedEndsCancelled) {
  Start(Devices("cpu=64GiB"));
  auto s = Send("a");
  ASSERT_TRUE(s.ok());
  (*s)->Cancel();
  sched_->Tick();
  auto e = (*s)->Next(std::chrono::milliseconds(0));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->kind, StreamEvent::Kind::kDone);
  EXPECT_EQ(e->stats.done_reason, DoneReason::kCancelled);
  EXPECT_TRUE(factory_->runners.empty());
}

TEST_F(SchedulerTest, ShutdownEndsQueuedRequestsAndRefusesNewOnes) {
  const uint64_t small = AlonePlan(SmallModel("a")).total_bytes();
  DeviceInventory inv = Devices("cpu=1GiB");
  inv.devices[0].free_bytes = inv.devices[0].total_bytes = small + small / 2;
  Start(inv);
  auto a = Serve("a");
  auto b = Send("b");  // waits for a
  ASSERT_TRUE(b.ok());
  sched_->Tick();
  sched_->Shutdown();
  for (auto* s : {&a, &*b}) {
    auto e = (*s)->Next(std::chrono::milliseconds(0));
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->kind, StreamEvent::Kind::kError);
    EXPECT_EQ(e->error.code(), StatusCode::kUnavailable);
  }
  EXPECT_TRUE(Runner("a").shut_down);
  EXPECT_EQ(Send("a").status().code(), StatusCode::kUnavailable);
  sched_->Shutdown();  // idempotent
}

TEST_F(SchedulerTest, CreateRefusesBadOptions) {
  SchedulerOptions o;
  o.devices = Devices("cpu=1GiB");
  o.max_queue = 0;
  EXPECT_EQ(Scheduler::Create(o, std::make_unique<FakeFactory>()).status().code(),
            StatusCode::kInvalidArgument);
  o.max_queue = 1;
  o.num_parallel = 0;
  EXPECT_FALSE(Scheduler::Create(o, std::make_unique<FakeFactory>()).ok());
  o.num_parallel = 1;
  o.kv_type = DType::kQ6_K;
  EXPECT_FALSE(Scheduler::Create(o, std::make_unique<FakeFactory>()).ok());
  o.kv_type = DType::kF16;
  o.devices.devices.clear();
  EXPECT_FALSE(Scheduler::Create(o, std::make_unique<FakeFactory>()).ok());
}

// The scheduler's own thread loads and serves without the test calling Tick.
TEST(SchedulerThreadTest, BackgroundThreadLoadsAndServes) {
  auto factory = std::make_unique<FakeFactory>();
  factory->Add(SmallModel("a"));
  factory->auto_finish = true;
  SchedulerOptions o;
  o.devices = Devices("cpu=64GiB");
  o.tick_interval = std::chrono::milliseconds(5);
  auto sched = Scheduler::Create(o, std::move(factory));
  ASSERT_TRUE(sched.ok());
  for (int i = 0; i < 3; ++i) {
    SchedRequest r;
    r.model = "a";
    r.request.prompt = {1};
    auto s = (*sched)->Submit(std::move(r));
    ASSERT_TRUE(s.ok());
    // A generous bound so a broken scheduler fails instead of hanging; not a timing check.
    auto e = (*s)->Next(std::chrono::seconds(60));
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->kind, StreamEvent::Kind::kDone);
  }
  EXPECT_EQ((*sched)->Counters().loads, 1);
  (*sched)->Shutdown();
}

// Several threads submit for several models while the scheduler's thread loads and evicts
// (max_loaded_models 2 of 3 models): every request ends, nothing is lost or served twice.
TEST(SchedulerThreadTest, ConcurrentSubmitsAllEnd) {
  auto factory = std::make_unique<FakeFactory>();
  for (const char* m : {"a", "b", "c"}) factory->Add(SmallModel(m));
  factory->auto_finish = true;
  FakeFactory* f = factory.get();
  SchedulerOptions o;
  o.devices = Devices("cpu=64GiB");
  o.max_loaded_models = 2;
  o.tick_interval = std::chrono::milliseconds(1);
  auto sched = Scheduler::Create(o, std::move(factory));
  ASSERT_TRUE(sched.ok());
  constexpr int kThreads = 4, kEach = 30;
  std::vector<std::thread> threads;
  std::vector<int> done(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        SchedRequest r;
        r.model = std::string(1, static_cast<char>('a' + (t + i) % 3));
        r.request.prompt = {1};
        auto s = (*sched)->Submit(std::move(r));
        if (!s.ok()) continue;
        auto e = (*s)->Next(std::chrono::seconds(60));
        if (e.has_value() && e->kind == StreamEvent::Kind::kDone) ++done[t];
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(done[t], kEach) << t;
  (*sched)->Shutdown();
  size_t submitted = 0;
  for (const auto& r : f->runners) submitted += r->submitted.size();
  EXPECT_EQ(submitted, size_t{kThreads * kEach});
  EXPECT_LE((*sched)->Counters().loads, kThreads * kEach);
  EXPECT_GE((*sched)->Counters().loads, 3);
}

}  // namespace
}  // namespace ferry::sched
