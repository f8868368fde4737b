// Runner: the inference loop for one loaded model — prompt processing in batches of num_batch,
// then token-by-token decode with sampling, stop strings and EOS/EOT, within num_ctx.
//
// Context is never silently truncated: a prompt longer than num_ctx is an OutOfRange error
// that names both numbers, and a generation that reaches num_ctx stops with done_reason
// "length".
//
// Thread-safety: a Runner is used by one thread at a time (the model's inference thread).
#ifndef FERRY_RUNTIME_RUNNER_H_
#define FERRY_RUNTIME_RUNNER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/allocator.h"
#include "base/status.h"
#include "base/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "model/scratch.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace ferry {

struct RunnerOptions {
  int64_t num_ctx = 2048;    // tokens of context per sequence (KV cache size)
  int64_t num_batch = 512;   // prompt tokens per forward step
  DType kv_type = DType::kF16;  // f32, f16, q8_0 or q4_0
  int num_threads = 0;       // 0: all cores
  // The plan's compute reservation for the CPU (DevicePlan::compute_bytes): the forward
  // scratch is allocated with exactly these bytes, so allocated == planned. 0: exactly what the
  // forward pass needs (ForwardScratch::RequiredBytes). Less than that is an error.
  uint64_t compute_bytes = 0;
  // Tokens whose logits one step computes at once when every token's logits are needed
  // (Perplexity): the compute buffer holds [logit_rows, n_vocab] floats. 1 suits generation;
  // perplexity wants more (the output matrix is read once per logit_rows tokens).
  int64_t logit_rows = 1;
  // Most bytes the runner may hold on the CPU (weights + host + KV + compute); 0: unlimited.
  // Exceeding it is a ResourceExhausted error from Create.
  uint64_t cpu_capacity_bytes = 0;
};

struct GenerateRequest {
  std::vector<int32_t> prompt;        // token ids (BOS included if wanted)
  int64_t num_predict = -1;           // -1: until EOS/stop or num_ctx; 0: only the prompt
  std::vector<std::string> stop;      // stop strings (not included in the output)
  SamplingOptions sampling;
};

struct GenerateResult {
  std::string text;                   // the generated text (stop string excluded)
  std::vector<int32_t> tokens;        // generated token ids (EOS excluded)
  std::string done_reason;            // "stop" (EOS/EOT or a stop string) or "length"
  int64_t prompt_eval_count = 0;
  int64_t prompt_eval_ns = 0;
  int64_t eval_count = 0;
  int64_t eval_ns = 0;
};

// Receives text as it is produced (complete UTF-8 only); return false to cancel.
using TextCallback = std::function<bool(std::string_view piece)>;

class Runner {
 public:
  // Accounts, through the runner's CPU DeviceAllocator, everything the model holds on the CPU:
  // it charges the mapped weights (purpose "weights", every tensor of the file) and the
  // loader's host memory (purpose "host": the GGUF header, the parsed metadata, the
  // tokenizer's tables), and allocates the KV cache for options.num_ctx (purpose "kv"), the
  // forward scratch for steps of num_batch tokens over num_ctx keys (purpose "compute") and
  // the sampler's working memory (purpose "sampling"). Generate then allocates nothing per
  // token.
  // `model` and `tokenizer` must outlive the runner. Errors: absurd options, KV type unsupported by the model's head sizes,
  // compute_bytes below what the forward pass needs, ResourceExhausted beyond the capacity.
  static StatusOr<std::unique_ptr<Runner>> Create(const Model* model,
                                                  const tokenizer::Tokenizer* tokenizer,
                                                  const RunnerOptions& options);

  StatusOr<GenerateResult> Generate(const GenerateRequest& request, const TextCallback& on_text);

  // Perplexity of `tokens` in windows of num_ctx as llama.cpp computes it: each window starts
  // with BOS (when the vocabulary adds one) and only its second half is scored. Logits are
  // scored as they are computed (options.logit_rows at a time): nothing beyond the plan's
  // compute buffer is allocated.
  // Returns the perplexity; *n_scored gets the number of scored tokens.
  StatusOr<double> Perplexity(const std::vector<int32_t>& tokens, int64_t* n_scored);

  const RunnerOptions& options() const { return options_; }
  const KvCache& kv() const { return *kv_; }
  const ForwardScratch& scratch() const { return *scratch_; }
  // Bytes held on the CPU through the runner's allocator: in total, and per purpose
  // ("weights", "host", "kv", "compute", "sampling"; 0 for others). These are what
  // `ferry ps` reports.
  uint64_t allocated_bytes() const { return allocator_->allocated_bytes(); }
  uint64_t allocated_bytes(std::string_view purpose) const {
    return allocator_->allocated_bytes(purpose);
  }
  const DeviceAllocator& allocator() const { return *allocator_; }

 private:
  Runner() = default;
  // Runs tokens from position pos0 in chunks of num_batch; the logits of the last token:
  // [n_vocab] in the scratch, valid until the next Eval.
  StatusOr<std::span<const float>> Eval(std::span<const int32_t> tokens, int64_t pos0);

  const Model* model_ = nullptr;
  const tokenizer::Tokenizer* tokenizer_ = nullptr;
  RunnerOptions options_;
  std::unique_ptr<ThreadPool> pool_;
  // Declared before what it allocates, so it is destroyed after them.
  std::unique_ptr<DeviceAllocator> allocator_;
  std::vector<DeviceAllocator::Buffer> weight_charges_;  // [n_tensors]: the mapped weights
  DeviceAllocator::Buffer host_charge_;                  // header, metadata, vocabulary
  std::unique_ptr<KvCache> kv_;
  std::unique_ptr<ForwardScratch> scratch_;
  DeviceAllocator::Buffer sampling_;  // Sampler::WorkspaceBytes(n_vocab, num_ctx)
  int32_t seq_ = 0;
};

}  // namespace ferry

#endif  // FERRY_RUNTIME_RUNNER_H_
