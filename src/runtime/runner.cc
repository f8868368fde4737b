#include "runtime/runner.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>

#include "backend/cuda_memory.h"
#include "base/bytes.h"
#include "base/log.h"
#include "model/cuda_layers.h"

namespace ferry {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int32_t ClampI32(int64_t v) {
  return static_cast<int32_t>(std::min<int64_t>(v, std::numeric_limits<int32_t>::max()));
}

uint64_t SlotBytes(const Plan& plan, int64_t n_vocab) {
  return Sampler::WorkspaceBytes(ClampI32(n_vocab), ClampI32(plan.options.num_ctx));
}

// Whether every logit is finite. Bit test on the magnitudes (a max over unsigned integers
// vectorizes; a float sum would not without reassociation): a NaN or an infinity has all
// exponent bits set, so its magnitude bits are >= 0x7f800000.
bool AllFinite(std::span<const float> logits) {
  uint32_t most = 0;
  for (const float f : logits) most = std::max(most, std::bit_cast<uint32_t>(f) & 0x7fffffffu);
  return most < 0x7f800000u;
}

// The error for non-finite logits: the model's weights (or the computation) are broken, and
// whatever token would be drawn from them is noise.
Status NonFiniteLogits(const Model& model, int64_t position) {
  return InternalError(
      "{}: the model produced non-finite logits (NaN or infinity) at position "
      "{}: its weights or its computation are broken; no text is returned",
      model.file().name(), position);
}

// Where a plan runs layers on a GPU: the plan's device index (-1: none) and the first layer
// there (the GPU runs [first_layer, n_layer) and the output).
struct GpuPart {
  int plan_device = -1;
  int64_t first_layer = 0;
};

StatusOr<GpuPart> GpuPartOf(const Plan& plan, int64_t n_layer) {
  GpuPart g;
  g.first_layer = n_layer;
  for (size_t i = 0; i + 1 < plan.devices.size(); ++i) {
    const DevicePlan& d = plan.devices[i];
    if (d.layers.empty() && !d.has_output) continue;
    if (g.plan_device >= 0) {
      return UnimplementedError(
          "the plan runs layers on {} and {}, but ferry runs layers on one GPU so far: make one "
          "GPU visible (CUDA_VISIBLE_DEVICES) or lower num_gpu",
          plan.devices[static_cast<size_t>(g.plan_device)].name, d.name);
    }
    if (d.kind != DeviceKind::kCuda) {
      return InvalidArgumentError("the plan runs layers on {}, which is not a CUDA device", d.name);
    }
    const int64_t first = d.layers.empty() ? n_layer : d.layers.front();
    if (!d.has_output || static_cast<int64_t>(d.layers.size()) != n_layer - first ||
        (!d.layers.empty() && d.layers.back() != n_layer - 1)) {
      return InvalidArgumentError(
          "the plan puts layers {} on {}: a GPU runs the last layers and the output",
          FormatLayerRanges(d.layers), d.name);
    }
    g.plan_device = static_cast<int>(i);
    g.first_layer = first;
  }
  return g;
}

bool SamePlacement(const Plan& a, const Plan& b) {
  return a.layer_device == b.layer_device && a.output_device == b.output_device &&
         a.devices.size() == b.devices.size();
}

}  // namespace

uint64_t DeviceAllocation::total_bytes() const {
  uint64_t t = 0;
  for (const auto& [purpose, bytes] : bytes_by_purpose) t += bytes;
  return t;
}

StatusOr<std::unique_ptr<Runner>> Runner::Create(const Model* model,
                                                 const tokenizer::Tokenizer* tokenizer,
                                                 const Plan& plan, const RunnerOptions& options) {
  FERRY_RETURN_IF_ERROR(ValidateLoadOptions(plan.options));
  if (options.num_threads < 0 || options.num_threads > 1024) {
    return InvalidArgumentError("num_thread {} is out of range (0 .. 1024)", options.num_threads);
  }
  if (plan.devices.empty()) return InvalidArgumentError("the plan has no devices");
  const int64_t n_layer = model->hparams().n_layer;
  FERRY_ASSIGN_OR_RETURN(const GpuPart gpu, GpuPartOf(plan, n_layer));
  if (gpu.plan_device >= 0) {
    const DevicePlan& d = plan.devices[static_cast<size_t>(gpu.plan_device)];
    if (options.gpu_allocator == nullptr || model->cuda_device() != d.index ||
        model->first_gpu_layer() != gpu.first_layer) {
      return FailedPreconditionError(
          "the plan runs layers {}.. and the output on {}, but the model was not set up for it "
          "(Model::UseCuda with the runner's gpu_allocator)",
          gpu.first_layer, d.name);
    }
  } else if (model->first_gpu_layer() != n_layer) {
    return FailedPreconditionError(
        "the model runs layers {}.. on cuda{} but the plan puts every "
        "layer on the CPU",
        model->first_gpu_layer(), model->cuda_device());
  }
  std::unique_ptr<Runner> r(new Runner());
  if (gpu.plan_device >= 0) r->gpu_allocator_ = options.gpu_allocator;
  r->model_ = model;
  r->tokenizer_ = tokenizer;
  r->options_ = options;
  r->shape_ = ShapeFromModel(*model);
  const LoadOptions& lo = plan.options;
  const int threads = CapThreads(options.num_threads);
  if (options.num_threads > threads) {
    log::Warn("num_thread {} is more than the {} hardware threads this process may use: using {}",
              options.num_threads, threads, threads);
  }
  r->options_.num_threads = threads;
  r->pool_ = std::make_unique<ThreadPool>(threads);
  r->allocator_ = std::make_unique<DeviceAllocator>("cpu", options.cpu_capacity_bytes);
  // The weights are used in place from the mapping, or from the model's packed copy
  // (Model::PackWeights, the same number of bytes, the mapped pages released): each tensor's
  // bytes are charged, so the allocator accounts them with everything else (a tied output is
  // token_embd itself and is not counted twice: it is one tensor).
  // Only the CPU's tensors: a GPU's layers and output were copied to its memory (counted by its
  // allocator), and their mapped pages released.
  const gguf::GgufFile& file = model->file();
  r->weight_charges_.reserve(file.tensors().size());
  for (const gguf::TensorInfo& t : file.tensors()) {
    if (gpu.plan_device >= 0 && CudaLayers::HoldsTensor(t.name, gpu.first_layer, n_layer,
                                                        /*tied_output=*/false)) {
      continue;
    }
    const std::span<const uint8_t> mapped = file.TensorData(t);
    const std::span<const uint8_t> packed = model->PackedCopyOf(mapped.data());
    FERRY_ASSIGN_OR_RETURN(DeviceAllocator::Buffer b,
                           r->allocator_->Charge(packed.empty() ? mapped : packed, "weights"));
    r->weight_charges_.push_back(std::move(b));
  }
  // The loader's host memory, as built: the mapped header, the parsed metadata and the
  // tokenizer's tables (the planner predicts the same three from the header: HostBytesFor).
  FERRY_ASSIGN_OR_RETURN(
      r->host_charge_,
      r->allocator_->Charge(
          file.data_offset() + file.heap_bytes() + tokenizer->vocab().heap_bytes(), "host"));
  {
    // Each layer's KV blocks on the device that runs it.
    std::vector<DeviceAllocator*> layer_allocators(static_cast<size_t>(n_layer),
                                                   r->allocator_.get());
    for (int64_t l = gpu.first_layer; l < n_layer; ++l) {
      layer_allocators[static_cast<size_t>(l)] = r->gpu_allocator_;
    }
    FERRY_ASSIGN_OR_RETURN(r->kv_, KvCache::Create(KvOptionsFor(r->shape_, lo), layer_allocators));
  }
  FERRY_ASSIGN_OR_RETURN(r->scratch_,
                         ForwardScratch::Create(ComputeScratchShape(r->shape_, lo), *r->allocator_,
                                                plan.devices.back().compute_bytes));
  // The samplers' working memory, one slot per sequence decoded together, so generating
  // allocates nothing.
  const int32_t n_slots = SequencesOf(lo);
  if (r->scratch_->shape().logit_rows < n_slots) {
    return InvalidArgumentError(
        "the plan's logit_rows {} is below its {} sequences (each decode step wants one row "
        "per sequence)",
        r->scratch_->shape().logit_rows, n_slots);
  }
  for (int32_t i = 0; i < n_slots; ++i) {
    FERRY_ASSIGN_OR_RETURN(
        DeviceAllocator::Buffer b,
        r->allocator_->Allocate(SlotBytes(plan, model->hparams().n_vocab), "sampling"));
    r->slots_.push_back(std::move(b));
    r->free_slots_.push_back(n_slots - 1 - i);
  }
  r->slot_stale_.assign(static_cast<size_t>(n_slots), false);
  if (gpu.plan_device >= 0) {
    // The GPU's bytes against its plan, per purpose (the CPU's are compared by the tests and the
    // load line): a difference is a planner bug, said loudly but not fatal when below the plan.
    const DevicePlan& d = plan.devices[static_cast<size_t>(gpu.plan_device)];
    const std::pair<const char*, uint64_t> planned[] = {
        {"weights", d.weights_bytes}, {"kv", d.kv_bytes}, {"compute", d.compute_bytes}};
    for (const auto& [purpose, bytes] : planned) {
      const uint64_t got = r->gpu_allocator_->allocated_bytes(purpose);
      if (got > bytes || (got == 0 && bytes > 0)) {
        return InternalError("{}: allocated {} bytes of {} but the plan has {}", d.name, got,
                             purpose, bytes);
      }
      if (got != bytes) {
        log::Warn("{}: allocated {} bytes of {} but the plan has {}", d.name, got, purpose, bytes);
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(r->mu_);
    r->plan_ = plan;
  }
  r->PublishCounts();
  if (options.start_thread) r->thread_ = std::thread([p = r.get()] { p->ThreadMain(); });
  return r;
}

StatusOr<std::unique_ptr<Runner>> Runner::Create(std::unique_ptr<Model> model,
                                                 std::unique_ptr<tokenizer::Tokenizer> tokenizer,
                                                 const Plan& plan, const RunnerOptions& options) {
  {
    // Before anything reads the weights: a non-finite one would make every answer garbage.
    ThreadPool check_pool(CapThreads(options.num_threads));
    const int64_t start = NowNs();
    FERRY_RETURN_IF_ERROR(model->CheckWeightsFinite(&check_pool));
    log::Info("weights checked finite: {} in {:.1f} ms", model->file().name(),
              (NowNs() - start) / 1e6);
  }
  RunnerOptions no_thread = options;
  no_thread.start_thread = false;
  // The GPU's layers first (their weights copied from the mapping), then the CPU's packed.
  std::unique_ptr<DeviceAllocator> gpu_allocator;
  {
    FERRY_ASSIGN_OR_RETURN(const GpuPart gpu, GpuPartOf(plan, model->hparams().n_layer));
    if (gpu.plan_device >= 0) {
      const DevicePlan& d = plan.devices[static_cast<size_t>(gpu.plan_device)];
      FERRY_ASSIGN_OR_RETURN(std::unique_ptr<MemorySource> source, CudaMemory(d.index));
      gpu_allocator =
          std::make_unique<DeviceAllocator>(d.name, d.capacity_bytes, std::move(source));
      const int64_t start = NowNs();
      Status st = model->UseCuda(d.index, gpu.first_layer, *gpu_allocator,
                                 ComputeScratchShape(ShapeFromModel(*model), plan.options));
      if (!st.ok()) {
        model.reset();  // its device buffers go back before the allocator does
        return st;
      }
      log::Info("{}: layers {}..{} and the output copied to {} in {:.1f} ms", model->file().name(),
                gpu.first_layer, model->hparams().n_layer - 1, d.name, (NowNs() - start) / 1e6);
      no_thread.gpu_allocator = gpu_allocator.get();
    }
  }
  Status packed = options.pack_weights ? model->PackWeights() : Status::Ok();
  StatusOr<std::unique_ptr<Runner>> created =
      packed.ok() ? Create(model.get(), tokenizer.get(), plan, no_thread)
                  : StatusOr<std::unique_ptr<Runner>>(packed);
  if (!created.ok()) {
    model.reset();  // before gpu_allocator, which its device buffers came from
    return created.status();
  }
  std::unique_ptr<Runner> r = std::move(*created);
  r->owned_gpu_allocator_ = std::move(gpu_allocator);
  r->owned_model_ = std::move(model);
  r->owned_tokenizer_ = std::move(tokenizer);
  r->options_.start_thread = options.start_thread;
  if (options.start_thread) r->thread_ = std::thread([p = r.get()] { p->ThreadMain(); });
  return r;
}

Runner::~Runner() { Shutdown(); }

Plan Runner::plan() const {
  std::lock_guard<std::mutex> lock(mu_);
  return plan_;
}

std::vector<DeviceAllocation> Runner::allocated() const {
  std::vector<DeviceAllocation> all;
  if (gpu_allocator_ != nullptr) {
    DeviceAllocation gpu;
    gpu.device = gpu_allocator_->device();
    gpu.bytes_by_purpose = gpu_allocator_->allocated_by_purpose();
    all.push_back(std::move(gpu));
  }
  DeviceAllocation cpu;
  cpu.device = allocator_->device();
  cpu.bytes_by_purpose = allocator_->allocated_by_purpose();
  all.push_back(std::move(cpu));
  return all;
}

RunnerCounts Runner::counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  RunnerCounts c = counts_;
  c.waiting += static_cast<int64_t>(inbox_.size());
  c.preemptions = preemptions_.load();
  c.grows = grows_.load();
  return c;
}

void Runner::PublishCounts() {
  RunnerCounts c;
  c.waiting = static_cast<int64_t>(waiting_.size());
  c.running = static_cast<int64_t>(running_.size());
  c.kv_blocks_total = kv_->total_blocks();
  // Blocks of cached sequences are reclaimable: only running sequences' count as used.
  int64_t cached_blocks = 0;
  for (const Cached& cs : cached_) {
    for (int l = 0; l < kv_->num_layers(); ++l) cached_blocks += kv_->HeldBlocks(cs.kv_seq, l);
  }
  c.kv_blocks_used = kv_->used_blocks() - cached_blocks;
  std::lock_guard<std::mutex> lock(mu_);
  counts_ = c;
}

Status Runner::Submit(GenerateRequest request, std::shared_ptr<RequestStream> stream) {
  if (stream == nullptr) return InvalidArgumentError("Submit: no stream");
  FERRY_RETURN_IF_ERROR(ValidateRequestOptions(request.options));
  const int64_t n_prompt = static_cast<int64_t>(request.prompt.size());
  if (n_prompt == 0) return InvalidArgumentError("the prompt has no tokens");
  for (int32_t t : request.prompt) {
    if (t < 0 || t >= model_->hparams().n_vocab) {
      return InvalidArgumentError("token id {} is outside the vocabulary of {} tokens", t,
                                  model_->hparams().n_vocab);
    }
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (shutdown_) return FailedPreconditionError("the model is being unloaded");
  if (!broken_.ok()) return broken_;
  const int64_t model_ctx = plan_.options.num_ctx;
  if (request.options.num_ctx > model_ctx) {
    return OutOfRangeError("num_ctx {} is more than the {} tokens this model was loaded with",
                           request.options.num_ctx, model_ctx);
  }
  if (n_prompt > request.options.num_ctx) {
    return OutOfRangeError(
        "the prompt is {} tokens but num_ctx is {}: raise num_ctx (ferry "
        "never truncates a prompt)",
        n_prompt, request.options.num_ctx);
  }
  inbox_.push_back(Pending{std::move(request), std::move(stream), NowNs()});
  lock.unlock();
  cv_.notify_all();
  return Status::Ok();
}

Status Runner::Grow(const Plan& plan) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!SamePlacement(plan, plan_)) {
      return InvalidArgumentError("Grow: the plan moves layers; reload the model instead");
    }
    if (plan.options.num_ctx < plan_.options.num_ctx ||
        plan.options.kv_type != plan_.options.kv_type ||
        plan.options.num_parallel != plan_.options.num_parallel ||
        SequencesOf(plan.options) != SequencesOf(plan_.options)) {
      return InvalidArgumentError("Grow: only num_ctx (and num_batch) may grow: num_ctx {} -> {}",
                                  plan_.options.num_ctx, plan.options.num_ctx);
    }
  }
  if (!thread_.joinable()) return ApplyGrow(plan);
  std::unique_lock<std::mutex> lock(mu_);
  if (shutdown_) return FailedPreconditionError("the model is being unloaded");
  grow_request_ = &plan;
  grow_done_ = false;
  cv_.notify_all();
  grow_cv_.wait(lock, [&] { return grow_done_; });
  grow_request_ = nullptr;
  return grow_result_;
}

Status Runner::ApplyGrow(const Plan& plan) {
  const Plan old = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    return plan_;
  }();
  const uint64_t before = allocator_->allocated_bytes();
  // The scratch first (the new one is allocated after the old one is freed, so the peak never
  // exceeds the new plan); on failure the old shape is restored.
  const uint64_t new_compute = plan.devices.back().compute_bytes;
  scratch_.reset();
  StatusOr<std::unique_ptr<ForwardScratch>> sc =
      ForwardScratch::Create(ComputeScratchShape(shape_, plan.options), *allocator_, new_compute);
  if (!sc.ok()) {
    FERRY_ASSIGN_OR_RETURN(
        scratch_, ForwardScratch::Create(ComputeScratchShape(shape_, old.options), *allocator_,
                                         old.devices.back().compute_bytes));
    return sc.status();
  }
  scratch_ = std::move(*sc);
  auto restore_scratch = [&]() -> Status {
    scratch_.reset();
    FERRY_ASSIGN_OR_RETURN(
        scratch_, ForwardScratch::Create(ComputeScratchShape(shape_, old.options), *allocator_,
                                         old.devices.back().compute_bytes));
    return Status::Ok();
  };
  // The GPU's step arrays (CudaLayers::Reserve puts the old ones back itself on failure).
  // A restore that fails leaves the runner without its arrays: it serves no more.
  auto restore_failed = [&](const Status& why) {
    Break(why.WithPrefix("Grow could not restore the previous arrays"));
    return why;
  };
  if (gpu_allocator_ != nullptr) {
    Status g = model_->ReserveCuda(ComputeScratchShape(shape_, plan.options));
    if (!g.ok()) {
      if (Status r = restore_scratch(); !r.ok()) return restore_failed(r);
      if (!model_->cuda_ready()) return restore_failed(g);
      return g;
    }
  }
  Status st = kv_->Grow(plan.options.num_ctx);
  if (!st.ok()) {
    if (gpu_allocator_ != nullptr) {
      if (Status r = model_->ReserveCuda(ComputeScratchShape(shape_, old.options)); !r.ok()) {
        return restore_failed(r);
      }
    }
    if (Status r = restore_scratch(); !r.ok()) return restore_failed(r);
    return st;
  }
  // Sampler slots: free ones are replaced now, busy ones when their request ends.
  for (size_t i = 0; i < slots_.size(); ++i) slot_stale_[i] = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    plan_ = plan;
  }
  for (int32_t slot : std::vector<int32_t>(free_slots_)) {
    free_slots_.erase(std::find(free_slots_.begin(), free_slots_.end(), slot));
    ReleaseSlot(slot);
  }
  ++grows_;
  log::Info("runner grow num_ctx={}->{} cpu={}->{}", old.options.num_ctx, plan.options.num_ctx,
            FormatBytes(before), FormatBytes(allocator_->allocated_bytes()));
  PublishCounts();
  return Status::Ok();
}

void Runner::ReleaseSlot(int32_t slot) {
  if (slot_stale_[static_cast<size_t>(slot)]) {
    DeviceAllocator::Buffer& b = slots_[static_cast<size_t>(slot)];
    b = DeviceAllocator::Buffer();
    StatusOr<DeviceAllocator::Buffer> nb =
        allocator_->Allocate(SlotBytes(plan_, model_->hparams().n_vocab), "sampling");
    if (!nb.ok()) {
      log::Error("runner sampler slot {} cannot be reallocated: {}", slot, nb.status().ToString());
      return;  // the slot stays out of use
    }
    b = std::move(*nb);
    slot_stale_[static_cast<size_t>(slot)] = false;
  }
  free_slots_.push_back(slot);
}

Status Runner::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return broken_;
}

void Runner::Break(const Status& error) {
  log::Error("runner broken: {}", error.message());
  std::vector<Pending> inbox;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_.ok()) broken_ = error;
    inbox.swap(inbox_);
  }
  for (Pending& p : inbox) p.stream->PushError(error);
  while (!running_.empty()) Fail(running_.back().get(), error);
  for (auto& s : waiting_) s->stream->PushError(error);
  waiting_.clear();
  while (!cached_.empty()) DropCached(cached_.size() - 1);
}

void Runner::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_ && !thread_.joinable()) return;
    shutdown_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // End whatever is left (the thread is gone, or never ran).
  std::vector<Pending> inbox;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inbox.swap(inbox_);
  }
  const Status gone = UnavailableError("the model was unloaded");
  for (Pending& p : inbox) p.stream->PushError(gone);
  for (auto& s : waiting_) s->stream->PushError(gone);
  for (auto& s : running_) s->stream->PushError(gone);
  waiting_.clear();
  running_.clear();
}

void Runner::ThreadMain() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return shutdown_ || !inbox_.empty() || grow_request_ != nullptr || !waiting_.empty() ||
               !running_.empty();
      });
      if (shutdown_) return;
      if (grow_request_ != nullptr && !grow_done_) {
        const Plan plan = *grow_request_;
        lock.unlock();
        Status st = ApplyGrow(plan);
        lock.lock();
        grow_result_ = st;
        grow_done_ = true;
        grow_cv_.notify_all();
      }
    }
    StatusOr<bool> more = Step();
    if (!more.ok()) log::Error("runner step failed: {}", more.status().ToString());
  }
}

void Runner::TakeInbox() {
  std::vector<Pending> inbox;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inbox.swap(inbox_);
  }
  for (Pending& p : inbox) {
    auto s = std::make_unique<Sequence>();
    s->request = std::move(p.request);
    s->stream = std::move(p.stream);
    s->submit_ns = p.submit_ns;
    waiting_.push_back(std::move(s));
  }
}

void Runner::EndCancelled() {
  for (size_t i = 0; i < running_.size();) {
    Sequence* s = running_[i].get();
    if (s->stream->cancelled()) {
      Finish(s, DoneReason::kCancelled);  // removes it from running_
    } else {
      ++i;
    }
  }
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->stream->cancelled()) {
      Sequence* s = it->get();
      if (s->slot >= 0) ReleaseSlot(s->slot);
      s->slot = -1;
      s->stats.done_reason = DoneReason::kCancelled;
      s->stats.tokens.assign(s->tokens.begin() + s->n_prompt, s->tokens.end());
      s->stream->PushDone(s->stats);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
}

void Runner::DropCached(size_t index) {
  (void)kv_->RemoveSequence(cached_[index].kv_seq);
  cached_.erase(cached_.begin() + static_cast<std::ptrdiff_t>(index));
}

bool Runner::FreeCachedBlocks(const std::vector<int32_t>& need) {
  auto enough = [&] {
    for (int l = 0; l < kv_->num_layers(); ++l) {
      if (kv_->layer_free_blocks(l) < need[static_cast<size_t>(l)]) return false;
    }
    return true;
  };
  while (!enough()) {
    if (cached_.empty()) return false;
    size_t lru = 0;
    for (size_t i = 1; i < cached_.size(); ++i) {
      if (cached_[i].last_used < cached_[lru].last_used) lru = i;
    }
    DropCached(lru);
  }
  return true;
}

void Runner::Admit() {
  const int64_t num_ctx = kv_->options().num_ctx;
  while (!waiting_.empty() && (!free_slots_.empty() || waiting_.front()->slot >= 0)) {
    Sequence* s = waiting_.front().get();
    if (!s->started) {
      s->tokens = s->request.prompt;
      s->n_prompt = static_cast<int64_t>(s->tokens.size());
    }
    const int64_t target = static_cast<int64_t>(s->tokens.size());
    // Prompt reuse: the cached sequence sharing the longest prefix (at least one token is
    // evaluated, for its logits).
    size_t best = cached_.size();
    int64_t best_len = 0;
    for (size_t i = 0; i < cached_.size() && s->request.embedding == Pooling::kNone; ++i) {
      const std::vector<int32_t>& ct = cached_[i].tokens;
      const int64_t limit = std::min<int64_t>(static_cast<int64_t>(ct.size()), target - 1);
      int64_t k = 0;
      while (k < limit && ct[static_cast<size_t>(k)] == s->tokens[static_cast<size_t>(k)]) ++k;
      if (k > best_len) {
        best = i;
        best_len = k;
      }
    }
    // Blocks the whole prompt needs beyond what is kept, plus what already admitted prompts
    // still need, must be free (or freed by dropping other cached sequences).
    std::vector<int32_t> need(static_cast<size_t>(kv_->num_layers()), 0);
    for (const auto& r : running_) {
      const int64_t r_target = static_cast<int64_t>(r->tokens.size());
      for (int l = 0; l < kv_->num_layers(); ++l) {
        need[static_cast<size_t>(l)] +=
            std::max(0, kv_->BlocksFor(l, r_target) - kv_->HeldBlocks(r->kv_seq, l));
      }
    }
    for (int l = 0; l < kv_->num_layers(); ++l) {
      need[static_cast<size_t>(l)] +=
          kv_->BlocksFor(l, target) - (best < cached_.size() ? kv_->BlocksFor(l, best_len) : 0);
    }
    // Keep the chosen cached sequence out of the drop list while freeing.
    Cached keep;
    if (best < cached_.size()) {
      keep = std::move(cached_[best]);
      cached_.erase(cached_.begin() + static_cast<std::ptrdiff_t>(best));
      Status st = kv_->Truncate(keep.kv_seq, best_len);
      if (!st.ok()) {
        // A sliding-window ring no longer holds what is needed: recompute from the start.
        (void)kv_->Truncate(keep.kv_seq, 0);
        best_len = 0;
      }
    }
    if (!FreeCachedBlocks(need) && !running_.empty()) {
      if (keep.kv_seq >= 0) {
        keep.tokens.resize(static_cast<size_t>(kv_->seq_len(keep.kv_seq)));
        cached_.push_back(std::move(keep));
      }
      break;  // admitted in order: wait for blocks
    }
    if (keep.kv_seq >= 0) {
      s->kv_seq = keep.kv_seq;
      s->n_past = kv_->seq_len(keep.kv_seq);
    } else {
      StatusOr<int32_t> id = kv_->AddSequence();
      while (!id.ok() && !cached_.empty()) {
        DropCached(0);
        id = kv_->AddSequence();
      }
      if (!id.ok()) break;  // every id is running: wait
      s->kv_seq = *id;
      s->n_past = 0;
    }
    if (!s->started) {
      s->slot = free_slots_.back();
      free_slots_.pop_back();
      DeviceAllocator::Buffer& ws = slots_[static_cast<size_t>(s->slot)];
      StatusOr<std::unique_ptr<Sampler>> sampler =
          Sampler::Create(s->request.options.sampling, ClampI32(model_->hparams().n_vocab),
                          ClampI32(std::min(s->request.options.num_ctx, num_ctx)),
                          std::span<uint8_t>(ws.data(), static_cast<size_t>(ws.size())));
      std::unique_ptr<Sequence> owned = std::move(waiting_.front());
      waiting_.pop_front();
      if (!sampler.ok()) {
        running_.push_back(std::move(owned));
        Fail(s, sampler.status());
        continue;
      }
      s->sampler = std::move(*sampler);
      for (int32_t t : s->tokens) s->sampler->Accept(t);
      s->text = TextStream(s->request.options.stop);
      s->started = true;
      s->admit_ns = NowNs();
      s->stats.queue_ns = s->admit_ns - s->submit_ns;
      s->stats.prompt_reused_count = s->n_past;
      running_.push_back(std::move(owned));
    } else {
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
    s->admitted_order = ++admit_counter_;
  }
}

void Runner::Preempt(Sequence* victim) {
  const int64_t held = kv_->used_blocks();
  (void)kv_->RemoveSequence(victim->kv_seq);
  log::Info("runner preempt seq={} tokens={} freed_blocks={} reason=\"kv pool full\"",
            victim->kv_seq, victim->tokens.size(), held - kv_->used_blocks());
  victim->kv_seq = -1;
  victim->n_past = 0;
  victim->pooled.clear();  // an embedding is pooled again from its first token
  ++victim->stats.preemptions;
  ++preemptions_;
  for (size_t i = 0; i < running_.size(); ++i) {
    if (running_[i].get() == victim) {
      waiting_.push_front(std::move(running_[i]));
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
      return;
    }
  }
}

void Runner::Finish(Sequence* s, DoneReason reason) {
  std::string rest = s->text.Flush();
  if (!rest.empty()) s->stream->PushText(std::move(rest));
  s->stats.done_reason = reason;
  s->stats.tokens.assign(s->tokens.begin() + s->n_prompt, s->tokens.end());
  // EOS is sampled but not part of the text or the tokens.
  if (reason == DoneReason::kStop && !s->stats.tokens.empty() &&
      tokenizer_->vocab().IsEog(s->stats.tokens.back())) {
    s->stats.tokens.pop_back();
  }
  if (s->first_token_ns > 0) s->stats.eval_ns = NowNs() - s->first_token_ns;
  if (s->kv_seq >= 0) {
    if (reason == DoneReason::kCancelled || s->request.embedding != Pooling::kNone) {
      (void)kv_->RemoveSequence(s->kv_seq);
    } else {
      // Keep its K/V for prompt reuse: the positions that were evaluated.
      (void)kv_->Truncate(s->kv_seq, s->n_past);
      Cached c;
      c.kv_seq = s->kv_seq;
      c.tokens.assign(s->tokens.begin(), s->tokens.begin() + kv_->seq_len(s->kv_seq));
      c.last_used = ++use_counter_;
      cached_.push_back(std::move(c));
    }
  }
  if (s->slot >= 0) ReleaseSlot(s->slot);
  s->slot = -1;
  s->stream->PushDone(s->stats);
  for (size_t i = 0; i < running_.size(); ++i) {
    if (running_[i].get() == s) {
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
}

void Runner::Fail(Sequence* s, const Status& error) {
  if (s->kv_seq >= 0) (void)kv_->RemoveSequence(s->kv_seq);
  s->kv_seq = -1;
  if (s->slot >= 0) ReleaseSlot(s->slot);
  s->slot = -1;
  s->stream->PushError(error);
  for (size_t i = 0; i < running_.size(); ++i) {
    if (running_[i].get() == s) {
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
}

bool Runner::OnToken(Sequence* s, int32_t token) {
  if (s->first_token_ns == 0) {
    s->first_token_ns = NowNs();
    s->stats.prompt_eval_ns = s->first_token_ns - s->admit_ns;
  }
  s->sampler->Accept(token);
  s->tokens.push_back(token);
  ++s->stats.eval_count;
  if (tokenizer_->vocab().IsEog(token) && !s->request.options.ignore_eos) {
    Finish(s, DoneReason::kStop);
    return true;
  }
  std::string piece = tokenizer_->TokenToPiece(token);
  // Text that starts right after BOS: SentencePiece's space prefix is not part of it (as
  // Decode() does for the first piece).
  if (s->stats.eval_count == 1 && s->n_prompt == 1 && s->tokens[0] == tokenizer_->vocab().bos() &&
      tokenizer_->vocab().add_space_prefix() && !piece.empty() && piece[0] == ' ') {
    piece.erase(0, 1);
  }
  bool stopped = false;
  std::string out = s->text.Append(piece, &stopped);
  if (!out.empty()) s->stream->PushText(std::move(out));
  if (stopped) {
    Finish(s, DoneReason::kStop);
    return true;
  }
  const int64_t num_predict = s->request.options.num_predict;
  if (num_predict >= 0 && s->stats.eval_count >= num_predict) {
    Finish(s, DoneReason::kLength);
    return true;
  }
  // The next token would need position tokens.size() - 1 < num_ctx.
  if (static_cast<int64_t>(s->tokens.size()) > s->request.options.num_ctx) {
    Finish(s, DoneReason::kLength);
    return true;
  }
  return false;
}

StatusOr<bool> Runner::Step() {
  TakeInbox();
  EndCancelled();
  Admit();
  // num_predict 0: only the prompt is evaluated; the rest of the step is as usual.
  const int64_t budget = scratch_->shape().max_tokens;
  const int64_t max_batch = kv_->options().max_batch;
  // Plan the step: how many tokens each running sequence adds. Decode tokens first, then
  // prompt chunks in admission order.
  struct Part {
    Sequence* s;
    int64_t count;
  };
  std::vector<Part> parts;
  bool preempted = true;
  while (preempted) {
    preempted = false;
    parts.clear();
    std::vector<Sequence*> order;
    for (auto& r : running_) order.push_back(r.get());
    std::stable_sort(order.begin(), order.end(), [](Sequence* a, Sequence* b) {
      const bool da = static_cast<int64_t>(a->tokens.size()) - a->n_past == 1;
      const bool db = static_cast<int64_t>(b->tokens.size()) - b->n_past == 1;
      if (da != db) return da;
      return a->admitted_order < b->admitted_order;
    });
    int64_t left = budget;
    int64_t prefill_left = budget;
    for (Sequence* s : order) {
      if (left == 0) break;
      const int64_t todo = static_cast<int64_t>(s->tokens.size()) - s->n_past;
      if (todo <= 0) continue;
      if (todo == 1) {
        // A decode token: the prompt chunks of this step are bounded, for its stream's sake.
        prefill_left = std::max<int64_t>(1, options_.prefill_tokens_while_decoding);
      }
      const int64_t count = std::min({todo, left, max_batch, todo == 1 ? left : prefill_left});
      if (count <= 0) continue;
      parts.push_back(Part{s, count});
      left -= count;
      if (todo > 1) prefill_left -= count;
    }
    // Reserve; on a full pool drop cached sequences, then preempt the newest running one.
    for (const Part& p : parts) {
      const int64_t new_len = p.s->n_past + p.count;
      std::vector<int32_t> need(static_cast<size_t>(kv_->num_layers()));
      for (int l = 0; l < kv_->num_layers(); ++l) {
        need[static_cast<size_t>(l)] = kv_->BlocksToReserve(p.s->kv_seq, l, new_len);
      }
      FreeCachedBlocks(need);
      Status st = kv_->Reserve(p.s->kv_seq, new_len);
      if (st.ok()) continue;
      if (st.code() != StatusCode::kResourceExhausted) {
        Fail(p.s, st);
        preempted = true;
        break;
      }
      Sequence* victim = nullptr;
      for (auto& r : running_) {
        if (victim == nullptr || r->admitted_order > victim->admitted_order) victim = r.get();
      }
      Preempt(victim);
      preempted = true;
      break;
    }
  }
  if (parts.empty()) {
    PublishCounts();
    return !waiting_.empty() || !running_.empty();
  }

  batch_.clear();
  std::vector<Sequence*>& entry_seq = entry_seq_;  // embedding entries: their sequence
  entry_seq.clear();
  for (const Part& p : parts) {
    const bool last = p.s->n_past + p.count == static_cast<int64_t>(p.s->tokens.size());
    std::span<const int32_t> toks(p.s->tokens.data() + p.s->n_past, static_cast<size_t>(p.count));
    if (p.s->request.embedding != Pooling::kNone) {
      batch_.AddHiddenRun(toks, p.s->kv_seq, p.s->n_past);
    } else {
      batch_.AddRun(toks, p.s->kv_seq, p.s->n_past, last);
    }
    entry_seq.resize(static_cast<size_t>(batch_.size()), p.s);
  }
  ForwardOptions fo;
  fo.pool = pool_.get();
  fo.scratch = scratch_.get();
  fo.each_hidden = [&](int64_t entry, std::span<const float> h) -> Status {
    Sequence* s = entry_seq[static_cast<size_t>(entry)];
    const int64_t pos = batch_.entries[static_cast<size_t>(entry)].pos;
    const int64_t n = static_cast<int64_t>(s->tokens.size());
    const Pooling how = s->request.embedding;
    if (s->pooled.empty()) s->pooled.assign(h.size(), 0.0);
    if (how == Pooling::kMean) {
      for (size_t i = 0; i < h.size(); ++i) s->pooled[i] += h[i];
    } else if ((how == Pooling::kCls && pos == 0) || (how == Pooling::kLast && pos == n - 1)) {
      for (size_t i = 0; i < h.size(); ++i) s->pooled[i] = h[i];
    }
    return Status::Ok();
  };
  Status st = model_->Forward(batch_, *kv_, fo);
  if (!st.ok()) {
    for (const Part& p : parts) Fail(p.s, st);
    // A GPU error other than a rejected step (InvalidArgument) may have left the device's
    // context unusable: the runner serves no more, so the scheduler reloads the model.
    if (gpu_allocator_ != nullptr && st.code() != StatusCode::kInvalidArgument) Break(st);
    PublishCounts();
    return st;
  }
  // The weights are read in place from the file's mapping: a file truncated or rewritten under
  // it made this step's results garbage (a truncation's faults read as zeros, see MappedFile).
  // Nothing of the step is delivered; the runner serves no more.
  if (Status intact = model_->file().CheckUnchanged(); !intact.ok()) {
    Break(intact);
    PublishCounts();
    return intact;
  }
  const int64_t n_vocab = model_->hparams().n_vocab;
  int64_t row = 0;
  // Sequences that sample this step, with their logits; sampled together below.
  std::vector<std::pair<Sequence*, std::span<const float>>>& to_sample = to_sample_;
  to_sample.clear();
  for (const Part& p : parts) {
    Sequence* s = p.s;
    s->n_past += p.count;
    if (s->n_past < static_cast<int64_t>(s->tokens.size())) continue;  // prompt continues
    if (s->stats.prompt_eval_count == 0 && s->stats.eval_count == 0) {
      s->stats.prompt_eval_count = s->n_prompt - s->stats.prompt_reused_count;
    }
    if (s->request.embedding != Pooling::kNone) {
      const double scale = s->request.embedding == Pooling::kMean
                               ? 1.0 / static_cast<double>(s->tokens.size())
                               : 1.0;
      s->stats.embedding.resize(s->pooled.size());
      for (size_t i = 0; i < s->pooled.size(); ++i) {
        s->stats.embedding[i] = static_cast<float>(s->pooled[i] * scale);
      }
      s->stats.prompt_eval_ns = NowNs() - s->admit_ns;
      Finish(s, DoneReason::kStop);
      continue;
    }
    std::span<const float> logits(scratch_->logits() + row * n_vocab, static_cast<size_t>(n_vocab));
    ++row;
    const int64_t num_predict = s->request.options.num_predict;
    if (num_predict == 0 || static_cast<int64_t>(s->tokens.size()) >= s->request.options.num_ctx) {
      Finish(s, DoneReason::kLength);
      continue;
    }
    if (num_predict >= 0 && s->stats.eval_count >= num_predict) {
      Finish(s, DoneReason::kLength);
      continue;
    }
    if (!AllFinite(logits)) {
      Fail(s, NonFiniteLogits(*model_, static_cast<int64_t>(s->tokens.size()) - 1));
      continue;
    }
    to_sample.emplace_back(s, logits);
  }
  // Each sequence samples with its own sampler and slot, so the samplers run in parallel on
  // the pool (a token does not depend on which thread drew it); tokens are then taken in
  // batch order.
  sampled_.resize(to_sample.size());
  ParallelFor(to_sample.size() > 1 ? pool_.get() : nullptr, static_cast<int64_t>(to_sample.size()),
              [&](int64_t b, int64_t e) {
                for (int64_t i = b; i < e; ++i) {
                  const auto& [seq, logits] = to_sample[static_cast<size_t>(i)];
                  sampled_[static_cast<size_t>(i)] = seq->sampler->Sample(logits);
                }
              });
  for (size_t i = 0; i < to_sample.size(); ++i) OnToken(to_sample[i].first, sampled_[i]);
  PublishCounts();
  return !waiting_.empty() || !running_.empty();
}

StatusOr<GenerateResult> Runner::Generate(const GenerateRequest& request,
                                          const TextCallback& on_text) {
  auto stream = std::make_shared<RequestStream>();
  FERRY_RETURN_IF_ERROR(Submit(request, stream));
  GenerateResult result;
  while (true) {
    std::optional<StreamEvent> e;
    if (thread_.joinable()) {
      e = stream->Next();
    } else {
      e = stream->Next(std::chrono::milliseconds(0));
      if (!e) {
        FERRY_RETURN_IF_ERROR(Step().status());
        continue;
      }
    }
    if (!e) return InternalError("the request's stream ended without a result");
    switch (e->kind) {
      case StreamEvent::Kind::kText:
        result.text += e->text;
        if (on_text && !on_text(e->text)) stream->Cancel();
        break;
      case StreamEvent::Kind::kDone:
        result.stats = std::move(e->stats);
        return result;
      case StreamEvent::Kind::kError:
        return e->error;
    }
  }
}

StatusOr<double> Runner::Perplexity(
    const std::vector<int32_t>& tokens, int64_t* n_scored,
    const std::function<void(int64_t window, double running)>& on_window) {
  if (thread_.joinable()) {
    return FailedPreconditionError("Perplexity needs a runner without an inference thread");
  }
  if (!running_.empty() || !waiting_.empty()) {
    return FailedPreconditionError("Perplexity needs a runner with no request running");
  }
  const int64_t n_ctx = kv_->options().num_ctx;
  const int64_t num_batch = scratch_->shape().max_tokens;
  if (n_ctx < 4) return InvalidArgumentError("num_ctx {} is too small for perplexity", n_ctx);
  const int64_t n_chunks = static_cast<int64_t>(tokens.size()) / n_ctx;
  if (n_chunks == 0) {
    return InvalidArgumentError("the text has {} tokens; perplexity needs at least num_ctx = {}",
                                tokens.size(), n_ctx);
  }
  while (!cached_.empty()) DropCached(0);
  FERRY_ASSIGN_OR_RETURN(int32_t seq, kv_->AddSequence());
  const bool add_bos = tokenizer_->vocab().add_bos() && tokenizer_->vocab().bos() >= 0;
  double nll = 0.0;
  int64_t count = 0;
  ForwardOptions fo;
  fo.pool = pool_.get();
  fo.scratch = scratch_.get();
  Status status = Status::Ok();
  for (int64_t c = 0; c < n_chunks && status.ok(); ++c) {
    std::vector<int32_t> window(tokens.begin() + c * n_ctx, tokens.begin() + (c + 1) * n_ctx);
    if (add_bos) window[0] = tokenizer_->vocab().bos();
    status = kv_->Truncate(seq, 0);
    for (int64_t off = 0; off < n_ctx && status.ok(); off += num_batch) {
      const int64_t n = std::min(n_ctx - off, num_batch);
      status = kv_->Reserve(seq, off + n);
      if (!status.ok()) break;
      batch_.clear();
      for (int64_t i = 0; i < n; ++i) {
        batch_.Add(window[static_cast<size_t>(off + i)], seq, off + i, true);
      }
      // Score the second half as the logits arrive: the logits at position j predict j + 1.
      fo.each_logits = [&](int64_t i, std::span<const float> row) -> Status {
        const int64_t j = off + i;
        if (j < n_ctx / 2 || j >= n_ctx - 1) return Status::Ok();
        const int32_t target = tokens[static_cast<size_t>(c * n_ctx + j + 1)];
        if (!AllFinite(row)) return NonFiniteLogits(*model_, j);
        const float max = *std::max_element(row.begin(), row.end());
        double sum = 0.0;
        for (float z : row) sum += std::exp(static_cast<double>(z - max));
        nll += std::log(sum) - static_cast<double>(row[static_cast<size_t>(target)] - max);
        ++count;
        return Status::Ok();
      };
      status = model_->Forward(batch_, *kv_, fo);
      if (status.ok()) status = model_->file().CheckUnchanged();
    }
    if (status.ok() && on_window && count > 0) {
      on_window(c + 1, std::exp(nll / static_cast<double>(count)));
    }
  }
  (void)kv_->RemoveSequence(seq);
  FERRY_RETURN_IF_ERROR(status);
  *n_scored = count;
  return std::exp(nll / static_cast<double>(count));
}

}  // namespace ferry
