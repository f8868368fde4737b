// Runner: one loaded model and its inference thread, serving many requests at once.
//
// Each step (Step(), run by the inference thread in a loop while there is work):
//   1. takes submitted requests into the waiting queue, applies a pending Grow, and ends
//      cancelled requests (their KV blocks are freed in this step);
//   2. admits waiting requests, oldest first, while a sampler slot is free and the KV pool's
//      free blocks (plus blocks of cached sequences it may drop) cover the prompt; a prompt that
//      starts with the tokens a cached sequence holds reuses them (prompt_reused_count);
//   3. builds one batch of at most num_batch tokens: one decode token for every decoding
//      sequence, then prompt chunks of prefilling sequences, oldest first (at most
//      prefill_tokens_while_decoding of them when the step carries decode tokens), so a long
//      prompt never freezes other streams;
//   4. reserves the batch's KV blocks; when the pool runs dry the most recently admitted
//      sequence is preempted (blocks freed, back at the head of the queue, its tokens
//      recomputed when it resumes: the results do not change) and one line is logged;
//   5. runs Model::Forward once for the whole batch, samples each sequence with its own
//      sampler (seed, penalties), applies EOS / stop strings / num_predict / num_ctx, and
//      streams text (complete UTF-8, stop strings held back) to each request's RequestStream.
// A finished sequence's K/V stay cached for prompt reuse until their blocks or id are needed.
//
// Context is never silently truncated: a prompt longer than the request's num_ctx is an
// OutOfRange error that names both numbers, and a generation that reaches it stops with
// done_reason "length".
//
// Memory: Create allocates exactly what the Plan says through one DeviceAllocator per device:
// on the CPU the weights it runs and the host tables charged, its layers' KV blocks, the host
// compute buffer and the sampler slots allocated; on a GPU (CudaMemory) the weights of its
// layers and of the output, their KV blocks and its compute buffer. Nothing is allocated per
// token. Grow adds KV blocks and re-reserves the compute buffers.
//
// Thread-safety: the ModelRunner methods and Generate may be called from any thread. With
// start_thread false no thread is started and the owner drives Step() and Perplexity() from
// one thread (tests, `ferry perplexity`).
#ifndef FERRY_RUNTIME_RUNNER_H_
#define FERRY_RUNTIME_RUNNER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/allocator.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "base/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/batch.h"
#include "model/model.h"
#include "model/scratch.h"
#include "planner/plan.h"
#include "runtime/model_runner.h"
#include "runtime/request.h"
#include "runtime/text_stream.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace ferry {

struct RunnerOptions {
  int num_threads = 0;  // CPU threads of the pool; 0: all cores
  // Most bytes the runner may hold on the CPU; 0: unlimited. Exceeding it is a
  // ResourceExhausted error from Create or Grow.
  uint64_t cpu_capacity_bytes = 0;
  // False: no inference thread; the owner calls Step() (Generate drives it itself).
  bool start_thread = true;
  // Most prompt tokens in a step that also carries decode tokens (at most num_batch): bounds
  // how long a running stream waits for its next token while another request's long prompt is
  // processed, at some cost to that prompt's speed. Results do not depend on it.
  int64_t prefill_tokens_while_decoding = 128;
  // Create(owning overload) only: pack the model's weights for this CPU's kernels first
  // (Model::PackWeights; same bytes, faster products). The non-owning Create uses the model
  // as it is.
  bool pack_weights = true;
  // Non-owning Create with a plan that runs layers on a GPU: the allocator over that GPU's
  // memory (CudaMemory) that the model's Model::UseCuda was given, for the GPU layers' KV
  // blocks too; it must outlive the runner. The owning Create makes its own.
  DeviceAllocator* gpu_allocator = nullptr;
};

// The synchronous result of Generate.
struct GenerateResult {
  std::string text;
  GenerateStats stats;
};

// Receives text as it is produced (complete UTF-8 only); return false to cancel.
using TextCallback = std::function<bool(std::string_view piece)>;

class Runner : public ModelRunner {
 public:
  // Loads `model` as `plan` says (the plan must be for this model). A plan that runs layers on
  // a GPU needs the model already set up for it (Model::UseCuda with the plan's first GPU
  // layer, and options.gpu_allocator); layers on more than one GPU are Unimplemented.
  // `model` and `tokenizer` must outlive the runner. Errors: options out of range, a KV type
  // the model's head sizes cannot use, the plan's compute reservation below what the forward
  // pass needs, ResourceExhausted beyond the capacity, FailedPrecondition for a model that
  // does not run the plan's layers where the plan puts them.
  static StatusOr<std::unique_ptr<Runner>> Create(const Model* model,
                                                  const tokenizer::Tokenizer* tokenizer,
                                                  const Plan& plan, const RunnerOptions& options);
  // The same, owning the model and the tokenizer (the loader's and the scheduler's way). With
  // GPU layers in the plan it makes the GPU's allocator (CudaMemory of the plan's device, its
  // capacity the plan's) and calls Model::UseCuda itself, before packing the CPU's weights.
  static StatusOr<std::unique_ptr<Runner>> Create(std::unique_ptr<Model> model,
                                                  std::unique_ptr<tokenizer::Tokenizer> tokenizer,
                                                  const Plan& plan, const RunnerOptions& options);
  ~Runner() override;

  const Model& model() const { return *model_; }
  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }

  // ModelRunner.
  Plan plan() const override;
  std::vector<DeviceAllocation> allocated() const override;
  Status Submit(GenerateRequest request, std::shared_ptr<RequestStream> stream) override;
  Status Grow(const Plan& plan) override;
  RunnerCounts counts() const override;
  void Shutdown() override;
  Status health() const override;

  // Submits and waits, passing text to on_text as it arrives (return false to cancel).
  StatusOr<GenerateResult> Generate(const GenerateRequest& request, const TextCallback& on_text);

  // One step (see the file comment). Only without an inference thread. Returns whether there
  // is more work (waiting or running requests).
  StatusOr<bool> Step();

  // Perplexity of `tokens` in windows of num_ctx as llama.cpp computes it: each window starts
  // with BOS (when the vocabulary adds one) and only its second half is scored, logits scored
  // as they are computed (logit_rows at a time). Only without an inference thread, and with no
  // request running. *n_scored gets the number of scored tokens.
  // `on_window`, when set, is called after each window with its 1-based number and the
  // perplexity over the windows so far (llama-perplexity's `[1]4.1234,[2]...`).
  // `tokens` should come from Encode with add_bos (llama.cpp's perplexity tokenizes so).
  StatusOr<double> Perplexity(
      const std::vector<int32_t>& tokens, int64_t* n_scored,
      const std::function<void(int64_t window, double running)>& on_window = nullptr);

  const KvCache& kv() const { return *kv_; }
  const ForwardScratch& scratch() const { return *scratch_; }
  const RunnerOptions& options() const { return options_; }
  // Bytes held on the CPU: in total and per purpose ("weights", "host", "kv", "compute",
  // "sampling").
  uint64_t allocated_bytes() const { return allocator_->allocated_bytes(); }
  uint64_t allocated_bytes(std::string_view purpose) const {
    return allocator_->allocated_bytes(purpose);
  }
  const DeviceAllocator& allocator() const { return *allocator_; }
  // The GPU's allocator when the plan runs layers on one; null otherwise.
  const DeviceAllocator* gpu_allocator() const { return gpu_allocator_; }

 private:
  struct Pending {
    GenerateRequest request;
    std::shared_ptr<RequestStream> stream;
    int64_t submit_ns = 0;
  };
  // A request being served (inference thread only).
  struct Sequence {
    GenerateRequest request;
    std::shared_ptr<RequestStream> stream;
    int32_t kv_seq = -1;  // -1 while waiting
    int32_t slot = -1;    // sampler slot
    std::unique_ptr<Sampler> sampler;
    std::vector<int32_t> tokens;  // prompt, then generated tokens
    int64_t n_past = 0;           // positions of tokens[] in the cache
    int64_t n_prompt = 0;
    int64_t admitted_order = 0;  // larger = admitted later
    bool started = false;        // admitted once (sampler made, prompt accepted)
    TextStream text;
    GenerateStats stats;
    int64_t submit_ns = 0, admit_ns = 0, first_token_ns = 0;
    // Embedding requests: the pooled sum (mean), or the chosen token's state, in token order.
    std::vector<double> pooled;
  };
  // A finished sequence whose K/V stay for prompt reuse.
  struct Cached {
    int32_t kv_seq = -1;
    std::vector<int32_t> tokens;  // [seq_len]
    int64_t last_used = 0;
  };

  Runner() = default;
  void ThreadMain();
  Status ApplyGrow(const Plan& plan);
  void TakeInbox();
  void EndCancelled();
  void Admit();
  // Frees blocks until every layer has `need[l]` free, dropping cached sequences (least
  // recently used first). False if even all of them are not enough.
  bool FreeCachedBlocks(const std::vector<int32_t>& need);
  void DropCached(size_t index);
  void Preempt(Sequence* victim);
  void Finish(Sequence* s, DoneReason reason);
  void Fail(Sequence* s, const Status& error);
  // Marks the runner unusable (`error`: why) and fails every request it holds and every later
  // Submit with `error`. Inference thread only.
  void Break(const Status& error);
  void ReleaseSlot(int32_t slot);
  // Handles one sampled token; true when the sequence is done.
  bool OnToken(Sequence* s, int32_t token);
  void PublishCounts();

  // Set by the owning Create; declared first, so they outlive everything that points into them
  // (the GPU's allocator outlives the model too: the model's CudaLayers hold its buffers).
  std::unique_ptr<DeviceAllocator> owned_gpu_allocator_;
  std::unique_ptr<Model> owned_model_;
  std::unique_ptr<tokenizer::Tokenizer> owned_tokenizer_;
  const Model* model_ = nullptr;
  const tokenizer::Tokenizer* tokenizer_ = nullptr;
  RunnerOptions options_;
  ModelShape shape_;
  std::unique_ptr<ThreadPool> pool_;
  // Declared before what it allocates, so it is destroyed after them.
  std::unique_ptr<DeviceAllocator> allocator_;
  DeviceAllocator* gpu_allocator_ = nullptr;  // options.gpu_allocator or owned_gpu_allocator_
  std::vector<DeviceAllocator::Buffer> weight_charges_;  // [n_tensors]: the mapped weights
  DeviceAllocator::Buffer host_charge_;                  // header, metadata, vocabulary
  std::unique_ptr<KvCache> kv_;
  std::unique_ptr<ForwardScratch> scratch_;
  // Sampler slots [SequencesOf(plan.options)]: each Sampler::WorkspaceBytes(n_vocab, num_ctx).
  std::vector<DeviceAllocator::Buffer> slots_;
  std::vector<int32_t> free_slots_;
  std::vector<bool> slot_stale_;  // sized for a num_ctx before a Grow: replaced when freed

  // Inference-thread state.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<Cached> cached_;
  int64_t admit_counter_ = 0;
  int64_t use_counter_ = 0;
  Batch batch_;
  // Step's sampling lists, kept to reuse their capacity.
  std::vector<std::pair<Sequence*, std::span<const float>>> to_sample_;
  std::vector<int32_t> sampled_;
  std::vector<Sequence*> entry_seq_;

  // Shared with other threads.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Plan plan_ FERRY_GUARDED_BY(mu_);
  std::vector<Pending> inbox_ FERRY_GUARDED_BY(mu_);
  const Plan* grow_request_ FERRY_GUARDED_BY(mu_) = nullptr;
  Status grow_result_ FERRY_GUARDED_BY(mu_);
  bool grow_done_ FERRY_GUARDED_BY(mu_) = false;
  bool shutdown_ FERRY_GUARDED_BY(mu_) = false;
  Status broken_ FERRY_GUARDED_BY(mu_);  // health(): set by Break
  RunnerCounts counts_ FERRY_GUARDED_BY(mu_);
  std::condition_variable grow_cv_;
  std::thread thread_;
  std::atomic<int64_t> preemptions_{0};
  std::atomic<int64_t> grows_{0};
};

}  // namespace ferry

#endif  // FERRY_RUNTIME_RUNNER_H_
