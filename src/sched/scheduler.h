// The scheduler: which loaded model serves a request, and when models are loaded, grown,
// reloaded, evicted or unloaded. It sees models only through RunnerFactory (shapes, loads) and
// ModelRunner (runtime/model_runner.h), so its tests run with fake runners and described
// devices. The decision table, keep_alive, the queue bound and the log line of each decision
// are documented in docs/engine.md ("Scheduler").
//
// Threads: Submit, Unload, Resident, Counters and Shutdown may be called from any thread (the
// HTTP threads). Tick does the work that takes time (loads, grows, reloads, evictions,
// keep_alive expiry); it runs on the scheduler's own thread (SchedulerOptions::start_thread)
// or, in tests, wherever the test calls it. Everything is guarded by one mutex, released only
// while RunnerFactory::Load runs, so `ferry ps` does not wait for a load.
#ifndef FERRY_SCHED_SCHEDULER_H_
#define FERRY_SCHED_SCHEDULER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backend/device.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "planner/plan.h"
#include "runtime/model_runner.h"
#include "runtime/request.h"
#include "sched/keep_alive.h"
#include "tensor/dtype.h"

namespace ferry::sched {

// Creates runners. The real one loads GGUF models from the store; tests use a fake.
//
// Thread-safety: Load is called only by Tick (the scheduler's thread), one call at a time,
// without the scheduler's mutex held. Shape is called by Submit (any thread) with the
// scheduler's mutex held, and may therefore run while a Load runs on the scheduler's thread:
// an implementation makes Shape safe to call concurrently with Load.
class RunnerFactory {
 public:
  virtual ~RunnerFactory() = default;
  // The shape of a model by name, for planning. NotFound for an unknown model (the message
  // lists the models that exist when the factory knows them).
  virtual StatusOr<ModelShape> Shape(const std::string& model) = 0;
  // Loads `model` following `plan` exactly (invariant 1). `num_thread` is the request's
  // (0 = all cores).
  virtual StatusOr<std::unique_ptr<ModelRunner>> Load(const std::string& model, const Plan& plan,
                                                      int num_thread) = 0;
};

// Settings; apps/ fills them from FERRY_* variables (never read here).
struct SchedulerOptions {
  // The devices and the capacities the scheduler plans against (free_bytes of each). Free
  // memory for a new plan = capacity - what the resident models' runners have allocated there.
  DeviceInventory devices;
  // How long a model stays loaded after its last request when the request says nothing
  // (FERRY_KEEP_ALIVE; Ollama's default 5m). Negative: forever; 0: unload at once.
  KeepAlive default_keep_alive;
  // Most models resident at once (FERRY_MAX_LOADED_MODELS). 0: 3 x the number of GPUs, at
  // least 3 (Ollama's rule). Loading one more evicts the least recently used idle model.
  int max_loaded_models = 0;
  // Most requests waiting at once, over all models (FERRY_MAX_QUEUE, default 512): the
  // scheduler's own queue plus the requests runners hold but have not admitted. One more is
  // refused at once with ResourceExhausted (HTTP 503).
  int max_queue = 512;
  // Sequences each loaded model serves at once (FERRY_NUM_PARALLEL, default 1): every plan's
  // num_parallel. More sequences cost num_ctx of KV each.
  int32_t num_parallel = 1;
  // KV cache type of every plan (FERRY_KV_CACHE_TYPE: f16 default, q8_0, q4_0).
  DType kv_type = DType::kF16;
  // The time source for keep_alive. Default (empty): std::chrono::steady_clock::now. Tests
  // inject a fake clock.
  std::function<std::chrono::steady_clock::time_point()> clock;
  // Start the scheduler's own thread, which calls Tick every tick_interval and at once after a
  // Submit that had to queue or an Unload (default true). Tests set false and call Tick.
  bool start_thread = true;
  // How often the thread looks at finished requests and expired keep_alives (default 100 ms).
  // A request waiting for a busy model starts at most this long after the model frees up.
  std::chrono::milliseconds tick_interval{100};
};

// A request for a model by name.
struct SchedRequest {
  std::string model;
  GenerateRequest request;
  // nullopt: the model keeps the keep_alive it has (or the default when it loads). A value
  // replaces the model's keep_alive (Ollama's rule: the latest request's wins).
  std::optional<KeepAlive> keep_alive;
};

// One resident model, the data behind `ferry ps` and /api/ps.
struct ResidentModel {
  std::string model;
  std::vector<DeviceAllocation> allocated;  // as the runner allocated it, per device and purpose
  uint64_t total_bytes = 0;                 // sum of `allocated`
  uint64_t gpu_bytes = 0;                   // the part on GPUs (Ollama's size_vram)
  int64_t num_ctx = 0;
  int32_t num_parallel = 0;
  KeepAlive keep_alive;
  // When keep_alive unloads the model; nullopt while requests run or wait for it, or when
  // keep_alive is forever.
  std::optional<std::chrono::steady_clock::time_point> expires_at;
  std::string plan_summary;  // Plan::Summary() of the runner's plan
  uint64_t plan_bytes = 0;   // Plan::total_bytes() of the runner's plan (== total_bytes)
  int64_t waiting = 0;       // requests the runner holds, not admitted
  int64_t running = 0;
  int64_t kv_blocks_used = 0;
  int64_t kv_blocks_total = 0;
};

struct ModelRequests {
  std::string model;
  int64_t waiting = 0;  // in the scheduler's queue for it, or in its runner's
  int64_t running = 0;
};

struct ModelKvBlocks {
  std::string model;
  int64_t used = 0;
  int64_t total = 0;
};

// Counters since the scheduler started (monotonic), and gauges of now.
struct SchedulerCounters {
  int64_t loads = 0;        // runners created for a model that was not resident
  int64_t reloads = 0;      // runners replaced because the placement had to change
  int64_t grows = 0;        // KV pools grown in place (ModelRunner::Grow)
  int64_t evictions = 0;    // idle models unloaded to make room (memory or max_loaded_models)
  int64_t unloads = 0;      // models unloaded by keep_alive expiry or Unload()
  int64_t preemptions = 0;  // summed over runners' counts (unloaded runners included)
  int64_t rejections = 0;   // Submits refused: queue full, or the model cannot fit even alone
  int64_t waiting = 0;      // now: the scheduler's queue + the runners' waiting requests
  int64_t running = 0;      // now: requests the runners admitted and have not finished
  std::vector<ModelKvBlocks> kv_blocks;  // now: per resident model
  // now: per model that is resident or has queued requests, sorted by name (waiting and
  // running summed over it are `waiting` and `running`)
  std::vector<ModelRequests> requests;
};

class Scheduler {
 public:
  // InvalidArgument for options that cannot work (no CPU in the inventory, max_queue < 1,
  // num_parallel < 1, a kv_type the planner refuses, max_loaded_models < 0).
  static StatusOr<std::unique_ptr<Scheduler>> Create(SchedulerOptions options,
                                                     std::unique_ptr<RunnerFactory> factory);
  ~Scheduler();  // Shutdown()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Takes a request. Returns its stream at once: the request was handed to the model's runner
  // (the model is resident and serves it as it is), or it waits in the scheduler's queue for
  // Tick (load, grow, reload, or a busy model to free memory). Errors at once, nothing queued:
  // ResourceExhausted when max_queue requests already wait; InvalidArgument for bad options;
  // NotFound for an unknown model (the factory's message); ResourceExhausted with the
  // planner's explanation (what is missing, the smallest change that fits) when the model
  // cannot fit even with every other model unloaded; Unavailable after Shutdown; the runner's
  // error when it refuses the request (e.g. OutOfRange for a prompt longer than num_ctx).
  StatusOr<std::shared_ptr<RequestStream>> Submit(SchedRequest request);

  // Ollama's keep_alive 0 with no prompt: the model is unloaded now if idle, else as soon as
  // its requests (running and queued) end. NotFound if it is not resident.
  Status Unload(const std::string& model);

  // The resident models, most recently used first.
  std::vector<ResidentModel> Resident() const;
  SchedulerCounters Counters() const;

  // One round of work: unloads models whose keep_alive expired, then goes through the queue
  // in order and serves, grows, reloads, evicts or loads for each request it can. Called by
  // the scheduler's thread; tests call it directly (with start_thread false).
  void Tick();

  // Stops the thread, ends queued requests with Unavailable ("scheduler shut down") and shuts
  // every runner down (their requests end with the runner's error). Idempotent.
  void Shutdown();

 private:
  using Clock = std::chrono::steady_clock;
  struct Loaded;   // one loaded model
  struct Pending;  // one queued request
  struct Decision;

  Scheduler(SchedulerOptions options, std::unique_ptr<RunnerFactory> factory);
  void ThreadMain();

  Clock::time_point Now() const;
  // Bytes allocated per device name by the resident models, leaving out `skip`.
  std::map<std::string, uint64_t, std::less<>> AllocatedBytes(
      const std::vector<std::string>& skip) const FERRY_REQUIRES(mu_);
  // The inventory with each device's free_bytes lowered by what resident models (but the
  // skipped ones) allocated.
  DeviceInventory FreeInventory(const std::vector<std::string>& skip) const FERRY_REQUIRES(mu_);
  // "cuda0=1.0GiB->2.0GiB cpu=0B->12MiB" between two AllocatedBytes maps.
  std::string DeviceChange(const std::map<std::string, uint64_t, std::less<>>& before,
                           const std::map<std::string, uint64_t, std::less<>>& after) const;
  int MaxLoaded() const;
  int64_t WaitingLocked() const FERRY_REQUIRES(mu_);
  bool Busy(const Loaded& r) const FERRY_REQUIRES(mu_);
  bool HasPending(const std::string& model) const FERRY_REQUIRES(mu_);
  Loaded* Find(const std::string& model) FERRY_REQUIRES(mu_);
  LoadOptions OptionsFor(const RequestOptions& request) const;
  // Serving as is: the runner's num_ctx covers the request and num_gpu does not ask for
  // another placement.
  bool ServesAsIs(const Loaded& r, const RequestOptions& o) const;
  Decision Decide(const Pending& p) FERRY_REQUIRES(mu_);
  // Hands the request to the runner; the runner's error goes on the stream.
  Status ServeLocked(Loaded& r, SchedRequest& request, std::shared_ptr<RequestStream> stream)
      FERRY_REQUIRES(mu_);
  void UnloadLocked(const std::string& model, const char* event, const std::string& reason)
      FERRY_REQUIRES(mu_);
  void ExpireLocked() FERRY_REQUIRES(mu_);
  // Works through the queue; returns with mu_ held. May release mu_ around a Load.
  void ProcessQueue(std::unique_lock<std::mutex>& lock) FERRY_REQUIRES(mu_);

  const SchedulerOptions options_;
  const std::unique_ptr<RunnerFactory> factory_;

  std::mutex tick_mu_;  // one Tick at a time (held while mu_ is released around a Load)
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Loaded>> resident_ FERRY_GUARDED_BY(mu_);
  std::deque<std::unique_ptr<Pending>> pending_ FERRY_GUARDED_BY(mu_);
  SchedulerCounters counters_ FERRY_GUARDED_BY(mu_);        // the monotonic fields
  int64_t preemptions_unloaded_ FERRY_GUARDED_BY(mu_) = 0;  // of runners gone
  uint64_t use_seq_ FERRY_GUARDED_BY(mu_) = 0;              // LRU order
  bool wake_ FERRY_GUARDED_BY(mu_) = false;
  bool shutdown_ FERRY_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace ferry::sched

#endif  // FERRY_SCHED_SCHEDULER_H_
