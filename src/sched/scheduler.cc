#include "sched/scheduler.h"

#include <algorithm>
#include <utility>

#include "base/bytes.h"
#include "base/log.h"

namespace ferry::sched {

struct Scheduler::Loaded {
  std::string model;
  std::unique_ptr<ModelRunner> runner;
  KeepAlive keep_alive;
  uint64_t last_use = 0;                        // use_seq_ at the last request (LRU order)
  std::optional<Clock::time_point> idle_since;  // set by Tick when it first sees the model idle
  bool unload_requested = false;                // Unload() asked for it
};

struct Scheduler::Pending {
  SchedRequest request;
  std::shared_ptr<RequestStream> stream;
  ModelShape shape;
  bool queue_logged = false;
};

struct Scheduler::Decision {
  enum class Kind { kServe, kGrow, kReload, kLoad, kWait, kFail };
  Kind kind = Kind::kServe;
  Plan plan;                       // kGrow, kReload, kLoad: the plan to follow
  std::vector<std::string> evict;  // kGrow, kReload, kLoad: idle models to unload first
  std::string reason;              // kWait, kReload: why
  bool blocks_others = false;      // kWait for memory or a slot: later loads wait behind it
  Status error;                    // kFail
};

namespace {

bool SamePlacement(const Plan& a, const Plan& b) {
  return a.layer_device == b.layer_device && a.output_device == b.output_device;
}

// DeviceAllocation::total_bytes(), summed here: at this commit runtime/ declares it without
// defining it, and the sum is all it is.
uint64_t AllocationBytes(const DeviceAllocation& a) {
  uint64_t total = 0;
  for (const auto& [purpose, bytes] : a.bytes_by_purpose) total += bytes;
  return total;
}

std::string Compact(uint64_t bytes) {
  std::string s = FormatBytes(bytes);
  s.erase(std::remove(s.begin(), s.end(), ' '), s.end());
  return s;
}

}  // namespace

StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(SchedulerOptions options,
                                                       std::unique_ptr<RunnerFactory> factory) {
  if (factory == nullptr) return InvalidArgumentError("scheduler: no runner factory");
  if (options.devices.devices.empty() || options.devices.devices.back().kind != DeviceKind::kCpu) {
    return InvalidArgumentError("scheduler: the device inventory must end with the CPU");
  }
  if (options.max_queue < 1) {
    return InvalidArgumentError("scheduler: max_queue {} must be at least 1", options.max_queue);
  }
  if (options.max_loaded_models < 0) {
    return InvalidArgumentError("scheduler: max_loaded_models {} must be 0 (automatic) or more",
                                options.max_loaded_models);
  }
  LoadOptions check;
  check.num_parallel = options.num_parallel;
  check.kv_type = options.kv_type;
  FERRY_RETURN_IF_ERROR(ValidateLoadOptions(check).WithPrefix("scheduler"));
  if (options.start_thread && options.tick_interval.count() <= 0) {
    return InvalidArgumentError("scheduler: tick_interval must be positive");
  }
  return std::unique_ptr<Scheduler>(new Scheduler(std::move(options), std::move(factory)));
}

Scheduler::Scheduler(SchedulerOptions options, std::unique_ptr<RunnerFactory> factory)
    : options_(std::move(options)), factory_(std::move(factory)) {
  if (options_.start_thread) thread_ = std::thread([this] { ThreadMain(); });
}

Scheduler::~Scheduler() { Shutdown(); }

Scheduler::Clock::time_point Scheduler::Now() const {
  return options_.clock ? options_.clock() : Clock::now();
}

int Scheduler::MaxLoaded() const {
  if (options_.max_loaded_models > 0) return options_.max_loaded_models;
  return std::max(3, 3 * static_cast<int>(options_.devices.gpus().size()));
}

LoadOptions Scheduler::OptionsFor(const RequestOptions& request) const {
  LoadOptions o;
  o.num_ctx = request.num_ctx;
  o.num_parallel = options_.num_parallel;
  o.num_batch = request.num_batch;
  o.kv_type = options_.kv_type;
  o.num_gpu = request.num_gpu;
  return o;
}

std::map<std::string, uint64_t, std::less<>> Scheduler::AllocatedBytes(
    const std::vector<std::string>& skip) const {
  std::map<std::string, uint64_t, std::less<>> bytes;
  for (const auto& r : resident_) {
    if (std::find(skip.begin(), skip.end(), r->model) != skip.end()) continue;
    for (const DeviceAllocation& a : r->runner->allocated()) bytes[a.device] += AllocationBytes(a);
  }
  return bytes;
}

DeviceInventory Scheduler::FreeInventory(const std::vector<std::string>& skip) const {
  DeviceInventory inv = options_.devices;
  const auto used = AllocatedBytes(skip);
  for (Device& d : inv.devices) {
    auto it = used.find(d.name);
    if (it == used.end()) continue;
    d.free_bytes = it->second >= d.free_bytes ? 0 : d.free_bytes - it->second;
  }
  return inv;
}

std::string Scheduler::DeviceChange(
    const std::map<std::string, uint64_t, std::less<>>& before,
    const std::map<std::string, uint64_t, std::less<>>& after) const {
  std::string s;
  for (const Device& d : options_.devices.devices) {
    auto b = before.find(d.name);
    auto a = after.find(d.name);
    const uint64_t bb = b == before.end() ? 0 : b->second;
    const uint64_t ab = a == after.end() ? 0 : a->second;
    if (!s.empty()) s += ' ';
    s += fmt::format("{}={}->{}", d.name, Compact(bb), Compact(ab));
  }
  return s;
}

bool Scheduler::Busy(const Loaded& r) const {
  const RunnerCounts c = r.runner->counts();
  return c.waiting + c.running > 0 || HasPending(r.model);
}

bool Scheduler::HasPending(const std::string& model) const {
  for (const auto& p : pending_) {
    if (p->request.model == model) return true;
  }
  return false;
}

Scheduler::Loaded* Scheduler::Find(const std::string& model) {
  for (auto& r : resident_) {
    if (r->model == model) return r.get();
  }
  return nullptr;
}

int64_t Scheduler::WaitingLocked() const {
  int64_t waiting = static_cast<int64_t>(pending_.size());
  for (const auto& r : resident_) waiting += r->runner->counts().waiting;
  return waiting;
}

bool Scheduler::ServesAsIs(const Loaded& r, const RequestOptions& o) const {
  return o.num_ctx <= r.runner->num_ctx() &&
         (o.num_gpu == -1 || o.num_gpu == r.runner->plan().options.num_gpu);
}

Status Scheduler::ServeLocked(Loaded& r, SchedRequest& request,
                              std::shared_ptr<RequestStream> stream) {
  if (request.keep_alive) r.keep_alive = *request.keep_alive;
  r.last_use = ++use_seq_;
  r.idle_since.reset();
  r.unload_requested = false;
  return r.runner->Submit(std::move(request.request), std::move(stream));
}

StatusOr<std::shared_ptr<RequestStream>> Scheduler::Submit(SchedRequest request) {
  std::lock_guard<std::mutex> lock(mu_);
  if (shutdown_) return UnavailableError("scheduler shut down");
  FERRY_RETURN_IF_ERROR(ValidateRequestOptions(request.request.options));
  const int64_t waiting = WaitingLocked();
  if (waiting >= options_.max_queue) {
    ++counters_.rejections;
    log::Info("sched reject model={} reason=\"queue full\" waiting={} max_queue={}", request.model,
              waiting, options_.max_queue);
    return ResourceExhaustedError(
        "server busy: {} requests are waiting (max_queue {}, FERRY_MAX_QUEUE); retry later",
        waiting, options_.max_queue);
  }
  if (Loaded* r = Find(request.model); r != nullptr && !r->runner->health().ok()) {
    UnloadLocked(request.model, "unload", "broken: " + r->runner->health().message());
    ++counters_.unloads;
  }
  FERRY_ASSIGN_OR_RETURN(ModelShape shape, factory_->Shape(request.model));
  auto stream = std::make_shared<RequestStream>();
  if (Loaded* r = Find(request.model);
      r != nullptr && !HasPending(request.model) && ServesAsIs(*r, request.request.options)) {
    FERRY_RETURN_IF_ERROR(ServeLocked(*r, request, stream));
    return stream;
  }
  // Not servable as is: it must fit at least alone, on the whole of every device.
  auto alone = MakePlan(shape, options_.devices, OptionsFor(request.request.options));
  if (!alone.ok()) {
    if (alone.status().code() == StatusCode::kResourceExhausted) {
      ++counters_.rejections;
      log::Info("sched reject model={} reason=\"does not fit\" num_ctx={} error=\"{}\"",
                request.model, request.request.options.num_ctx, alone.status().message());
      return alone.status().WithPrefix(
          fmt::format("model {} does not fit even with no other model loaded", request.model));
    }
    return alone.status();
  }
  auto p = std::make_unique<Pending>();
  p->request = std::move(request);
  p->stream = stream;
  p->shape = std::move(shape);
  pending_.push_back(std::move(p));
  wake_ = true;
  cv_.notify_one();
  return stream;
}

Scheduler::Decision Scheduler::Decide(const Pending& p) {
  Decision d;
  const std::string& model = p.request.model;
  const RequestOptions& o = p.request.request.options;
  Loaded* r = Find(model);
  if (r != nullptr && ServesAsIs(*r, o)) return d;  // kServe

  LoadOptions lo = OptionsFor(o);
  std::vector<std::string> skip;
  if (r != nullptr) {
    const LoadOptions cur = r->runner->plan().options;
    lo.num_ctx = std::max(o.num_ctx, r->runner->num_ctx());
    lo.num_batch = cur.num_batch;  // a different num_batch never reloads
    if (o.num_gpu == -1) lo.num_gpu = cur.num_gpu;
    skip.push_back(model);  // its own allocation counts as free
  }
  // The best placement there is: the model alone on every device. A plan on free memory must
  // put as many layers on GPUs (a model is not pushed to the CPU by idle models).
  auto best = MakePlan(p.shape, options_.devices, lo);
  if (!best.ok()) {
    d.kind = Decision::Kind::kFail;
    d.error = best.status();
    return d;
  }
  std::vector<Loaded*> idle;
  for (auto& other : resident_) {
    if (other->model != model && !Busy(*other)) idle.push_back(other.get());
  }
  std::sort(idle.begin(), idle.end(),
            [](const Loaded* a, const Loaded* b) { return a->last_use < b->last_use; });
  size_t next_idle = 0;
  const bool needs_slot = r == nullptr;
  std::optional<Plan> plan;
  bool slot_ok = false;
  while (true) {
    const std::vector<std::string> gone = [&] {
      std::vector<std::string> g = skip;
      g.insert(g.end(), d.evict.begin(), d.evict.end());
      return g;
    }();
    slot_ok = !needs_slot || static_cast<int>(resident_.size() - d.evict.size()) < MaxLoaded();
    if (slot_ok) {
      auto candidate = MakePlan(p.shape, FreeInventory(gone), lo);
      if (candidate.ok() && candidate->gpu_layers >= best->gpu_layers) {
        plan = std::move(*candidate);
        break;
      }
    }
    if (next_idle == idle.size()) break;
    d.evict.push_back(idle[next_idle++]->model);
  }
  if (!plan) {
    d.kind = Decision::Kind::kWait;
    d.blocks_others = true;
    d.evict.clear();
    d.reason =
        slot_ok ? "busy models hold the memory it needs"
                : fmt::format("max_loaded_models={} reached and every model is busy", MaxLoaded());
    return d;
  }
  d.plan = std::move(*plan);
  if (r == nullptr) {
    d.kind = Decision::Kind::kLoad;
    return d;
  }
  if (SamePlacement(d.plan, r->runner->plan())) {
    if (d.plan.options.num_ctx > r->runner->num_ctx()) {
      d.kind = Decision::Kind::kGrow;
    } else {
      d.evict.clear();  // another num_gpu with the same placement: serve as is
    }
    return d;
  }
  const Plan cur = r->runner->plan();
  std::string why;
  if (d.plan.options.num_ctx > cur.options.num_ctx) {
    why = fmt::format("num_ctx {}->{} ", cur.options.num_ctx, d.plan.options.num_ctx);
  }
  if (d.plan.options.num_gpu != cur.options.num_gpu) {
    why += fmt::format("num_gpu {}->{} ", cur.options.num_gpu, d.plan.options.num_gpu);
  }
  d.reason =
      fmt::format("{}changes placement: gpu_layers {}->{}", why, cur.gpu_layers, d.plan.gpu_layers);
  if (r->runner->counts().waiting + r->runner->counts().running > 0) {
    d.kind = Decision::Kind::kWait;
    d.evict.clear();
    d.reason = "model busy; reload (" + d.reason + ") waits for its requests to end";
    return d;
  }
  d.kind = Decision::Kind::kReload;
  return d;
}

void Scheduler::UnloadLocked(const std::string& model, const char* event,
                             const std::string& reason) {
  auto it = std::find_if(resident_.begin(), resident_.end(),
                         [&](const auto& r) { return r->model == model; });
  if (it == resident_.end()) return;
  const auto before = AllocatedBytes({});
  (*it)->runner->Shutdown();
  preemptions_unloaded_ += (*it)->runner->counts().preemptions;
  resident_.erase(it);
  log::Info("sched {} model={} reason=\"{}\" {}", event, model, reason,
            DeviceChange(before, AllocatedBytes({})));
}

void Scheduler::ExpireLocked() {
  const Clock::time_point now = Now();
  std::vector<std::pair<std::string, std::string>> expired;
  for (auto& r : resident_) {
    // A runner whose model file changed under it serves no more (its requests have failed):
    // unloaded at once, whatever its keep_alive.
    if (Status health = r->runner->health(); !health.ok()) {
      expired.emplace_back(r->model, "broken: " + health.message());
      continue;
    }
    if (Busy(*r)) {
      r->idle_since.reset();
      continue;
    }
    if (!r->idle_since) r->idle_since = now;
    if (r->keep_alive.forever()) continue;
    if (now - *r->idle_since >= r->keep_alive.duration) {
      std::string reason = r->unload_requested ? "requested"
                           : r->keep_alive.duration.count() == 0
                               ? "keep_alive 0"
                               : "keep_alive " + FormatKeepAlive(r->keep_alive) + " expired";
      expired.emplace_back(r->model, std::move(reason));
    }
  }
  for (const auto& [model, reason] : expired) {
    UnloadLocked(model, "unload", reason);
    ++counters_.unloads;
  }
}

void Scheduler::ProcessQueue(std::unique_lock<std::mutex>& lock) {
  std::vector<std::string> blocked;  // models with an earlier request still waiting
  bool memory_blocked = false;       // a request waits for memory: later ones do not load
  auto is_blocked = [&](const std::string& m) {
    return std::find(blocked.begin(), blocked.end(), m) != blocked.end();
  };
  size_t i = 0;
  while (i < pending_.size()) {
    Pending& p = *pending_[i];
    const std::string model = p.request.model;
    if (p.stream->cancelled()) {
      GenerateStats stats;
      stats.done_reason = DoneReason::kCancelled;
      p.stream->PushDone(std::move(stats));
      pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
      continue;
    }
    Loaded* resident = Find(model);
    if (is_blocked(model) ||
        (memory_blocked &&
         (resident == nullptr || !ServesAsIs(*resident, p.request.request.options)))) {
      blocked.push_back(model);
      ++i;
      continue;
    }
    Decision d = Decide(p);
    using Kind = Decision::Kind;
    if (d.kind == Kind::kWait) {
      if (!p.queue_logged) {
        p.queue_logged = true;
        log::Info("sched queue model={} reason=\"{}\" waiting={}", model, d.reason,
                  WaitingLocked());
      }
      blocked.push_back(model);
      memory_blocked |= d.blocks_others;
      ++i;
      continue;
    }
    // Every other decision takes the request out of the queue.
    std::unique_ptr<Pending> taken = std::move(pending_[i]);
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    if (d.kind == Kind::kFail) {
      ++counters_.rejections;
      log::Info("sched reject model={} reason=\"does not fit\" error=\"{}\"", model,
                d.error.message());
      taken->stream->PushError(d.error);
      continue;
    }
    for (const std::string& victim : d.evict) {
      UnloadLocked(victim, "evict", "room for " + model);
      ++counters_.evictions;
    }
    Status status;
    if (d.kind == Kind::kGrow) {
      const auto before = AllocatedBytes({});
      const int64_t old_ctx = resident->runner->num_ctx();
      status = resident->runner->Grow(d.plan);
      if (status.ok()) {
        ++counters_.grows;
        log::Info("sched grow model={} reason=\"num_ctx {}->{}\" {}", model, old_ctx,
                  d.plan.options.num_ctx, DeviceChange(before, AllocatedBytes({})));
      } else {
        log::Warn("sched grow failed model={} error=\"{}\"", model, status.message());
      }
    } else if (d.kind == Kind::kReload || d.kind == Kind::kLoad) {
      const auto before = AllocatedBytes({});
      KeepAlive keep_alive = options_.default_keep_alive;
      if (d.kind == Kind::kReload) {
        keep_alive = resident->keep_alive;
        resident->runner->Shutdown();
        preemptions_unloaded_ += resident->runner->counts().preemptions;
        resident_.erase(std::find_if(resident_.begin(), resident_.end(),
                                     [&](const auto& r) { return r.get() == resident; }));
        resident = nullptr;
      }
      const int num_thread = taken->request.request.options.num_thread;
      lock.unlock();  // a load takes seconds; Submit, Resident and Counters go on meanwhile
      auto runner = factory_->Load(model, d.plan, num_thread);
      lock.lock();
      if (runner.ok() && shutdown_) {
        (*runner)->Shutdown();
        runner = UnavailableError("scheduler shut down");
      }
      status = runner.status();
      if (status.ok()) {
        auto loaded = std::make_unique<Loaded>();
        loaded->model = model;
        loaded->runner = std::move(*runner);
        loaded->keep_alive = keep_alive;
        resident = loaded.get();
        resident_.push_back(std::move(loaded));
        const bool reload = d.kind == Kind::kReload;
        ++(reload ? counters_.reloads : counters_.loads);
        log::Info("sched {} model={} reason=\"{}\" {} {}", reload ? "reload" : "load", model,
                  reload ? d.reason : "not resident", DeviceChange(before, AllocatedBytes({})),
                  resident->runner->plan().Summary());
      } else {
        log::Error("sched load failed model={} error=\"{}\"", model, status.message());
      }
    }
    if (status.ok()) status = ServeLocked(*resident, taken->request, taken->stream);
    if (!status.ok()) taken->stream->PushError(status);
    if (shutdown_) return;
  }
}

void Scheduler::Tick() {
  std::lock_guard<std::mutex> tick(tick_mu_);
  std::unique_lock<std::mutex> lock(mu_);
  if (shutdown_) return;
  ExpireLocked();
  ProcessQueue(lock);
}

Status Scheduler::Unload(const std::string& model) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Loaded* r = Find(model);
    if (r == nullptr) return NotFoundError("model {} is not loaded", model);
    r->keep_alive = KeepAlive{std::chrono::nanoseconds(0)};
    r->unload_requested = true;
    if (Busy(*r)) {
      wake_ = true;
      cv_.notify_one();
      return Status::Ok();
    }
  }
  // Idle: unload now, unless Tick is loading (then it happens on the next Tick).
  std::unique_lock<std::mutex> tick(tick_mu_, std::try_to_lock);
  std::lock_guard<std::mutex> lock(mu_);
  if (Loaded* r = Find(model); r != nullptr && tick.owns_lock() && !Busy(*r)) {
    UnloadLocked(model, "unload", "requested");
    ++counters_.unloads;
  } else {
    wake_ = true;
    cv_.notify_one();
  }
  return Status::Ok();
}

std::vector<ResidentModel> Scheduler::Resident() const {
  std::lock_guard<std::mutex> lock(mu_);
  const Clock::time_point now = Now();
  std::vector<const Loaded*> order;
  for (const auto& r : resident_) order.push_back(r.get());
  std::sort(order.begin(), order.end(),
            [](const Loaded* a, const Loaded* b) { return a->last_use > b->last_use; });
  std::vector<ResidentModel> out;
  for (const Loaded* r : order) {
    ResidentModel m;
    m.model = r->model;
    m.allocated = r->runner->allocated();
    for (const DeviceAllocation& a : m.allocated) {
      m.total_bytes += AllocationBytes(a);
      const Device* dev = options_.devices.Find(a.device);
      if (dev != nullptr && dev->kind == DeviceKind::kCuda) m.gpu_bytes += AllocationBytes(a);
    }
    const Plan plan = r->runner->plan();
    m.num_ctx = r->runner->num_ctx();
    m.num_parallel = plan.options.num_parallel;
    m.keep_alive = r->keep_alive;
    m.plan_summary = plan.Summary();
    m.plan_bytes = plan.total_bytes();
    const RunnerCounts c = r->runner->counts();
    m.waiting = c.waiting;
    m.running = c.running;
    m.kv_blocks_used = c.kv_blocks_used;
    m.kv_blocks_total = c.kv_blocks_total;
    if (!Busy(*r) && !r->keep_alive.forever()) {
      m.expires_at = r->idle_since.value_or(now) + r->keep_alive.duration;
    }
    out.push_back(std::move(m));
  }
  return out;
}

SchedulerCounters Scheduler::Counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  SchedulerCounters c = counters_;
  c.preemptions = preemptions_unloaded_;
  c.waiting = static_cast<int64_t>(pending_.size());
  c.running = 0;
  c.kv_blocks.clear();
  std::map<std::string, ModelRequests> per_model;
  for (const auto& p : pending_) ++per_model[p->request.model].waiting;
  for (const auto& r : resident_) {
    const RunnerCounts rc = r->runner->counts();
    c.preemptions += rc.preemptions;
    c.waiting += rc.waiting;
    c.running += rc.running;
    c.kv_blocks.push_back({r->model, rc.kv_blocks_used, rc.kv_blocks_total});
    ModelRequests& m = per_model[r->model];
    m.waiting += rc.waiting;
    m.running += rc.running;
  }
  c.requests.clear();
  for (auto& [name, m] : per_model) {
    m.model = name;
    c.requests.push_back(m);
  }
  return c;
}

void Scheduler::ThreadMain() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, options_.tick_interval, [this] { return wake_ || shutdown_; });
      if (shutdown_) return;
      wake_ = false;
    }
    Tick();
  }
}

void Scheduler::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
  std::lock_guard<std::mutex> tick(tick_mu_);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& p : pending_) p->stream->PushError(UnavailableError("scheduler shut down"));
  pending_.clear();
  for (auto& r : resident_) {
    r->runner->Shutdown();
    preemptions_unloaded_ += r->runner->counts().preemptions;
  }
  resident_.clear();
}

}  // namespace ferry::sched
