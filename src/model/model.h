// Model: a GGUF decoder-only transformer bound in place to its memory map, and its forward pass.
//
// Load() reads hyper-parameters with the architecture's reader from the registry (one file per
// architecture: llama.cc, qwen2.cc, qwen3.cc, gemma3.cc), binds every weight to the mapped file
// (no copy) and checks each tensor's shape against the hyper-parameters. Forward() runs a batch
// of tokens of one sequence through the layers, storing K/V in a KvCache, and returns logits.
//
// Thread-safety: a loaded Model is immutable; Forward() is const but uses the caller's KvCache
// and scratch, so concurrent calls need distinct caches (the runtime calls it from one thread).
#ifndef FERRY_MODEL_MODEL_H_
#define FERRY_MODEL_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "gguf/gguf.h"
#include "kernels/ref/ops.h"
#include "kv/kv_cache.h"

namespace ferry {

enum class RopeType { kNorm, kNeox };
enum class FfnActivation { kSilu, kGeluTanh };

// Hyper-parameters of a decoder, read from `{arch}.*` metadata (defaults per model-notes §1.4).
struct HParams {
  std::string arch;
  int64_t n_vocab = 0;
  int64_t n_ctx_train = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_ff = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim_k = 0;
  int64_t head_dim_v = 0;
  int64_t n_rot = 0;
  float norm_eps = 1e-5f;
  float rope_base = 10000.0f;
  // RoPE scaling (rope.scaling.*), as llama.cpp hands it to ggml's rope (see RopeParams and
  // ReadRopeScaling in model.cc): none, linear (freq_scale only) or yarn.
  float rope_freq_scale = 1.0f;   // 1 / rope.scaling.factor; 1 for none
  float rope_ext_factor = 0.0f;   // 1 for yarn
  float rope_attn_factor = 1.0f;  // magnitude of cos/sin; for yarn before ggml's 1 + 0.1 ln(1/s)
  int64_t rope_n_ctx_orig = 0;    // rope.scaling.original_context_length, default n_ctx_train
  float rope_yarn_beta_fast = 32.0f;
  float rope_yarn_beta_slow = 1.0f;
  RopeType rope_type = RopeType::kNorm;
  // Architecture features.
  bool qkv_bias = false;          // qwen2: q/k/v biases required
  bool qk_norm = false;           // qwen3, gemma3: per-head RMSNorm of q and k before RoPE
  bool post_norms = false;        // gemma3: post-attention and post-FFN norms
  bool embed_scale = false;       // gemma3: embeddings times sqrt(n_embd)
  FfnActivation activation = FfnActivation::kSilu;
  float attn_scale = 0.0f;        // score scale; 0 means 1/sqrt(head_dim_k)
  // Sliding-window attention: window per layer (0 = full attention).
  std::vector<int64_t> swa_window;
  float rope_base_swa = 10000.0f;  // RoPE base of sliding-window layers (gemma3)
  float final_logit_softcap = 0.0f;
};

struct LayerWeights {
  WeightMatrix attn_norm, wq, wk, wv, wo, bq, bk, bv, bo, q_norm, k_norm, post_attn_norm;
  WeightMatrix ffn_norm, ffn_gate, ffn_up, ffn_down, post_ffw_norm;
};

struct ModelWeights {
  WeightMatrix token_embd, output_norm, output, rope_freqs;
  std::vector<LayerWeights> layers;
};

class ForwardScratch;  // model/scratch.h

// Per-batch options of Forward().
// Receives the logits of token i of the batch: [n_vocab], valid during the call only.
using LogitsCallback = std::function<Status(int64_t i, std::span<const float> logits)>;

struct ForwardOptions {
  bool all_logits = false;  // logits for every token into *logits instead of only the last
  // When set: called with every token's logits in order, computed scratch.logit_rows tokens
  // at a time into the scratch, so no [n, n_vocab] array is ever held (perplexity);
  // *logits is left empty. An error from the callback stops Forward and is returned.
  LogitsCallback each_logits;
  // Without all_logits or each_logits: leave the last token's logits in the scratch
  // (ForwardScratch::logits(), [n_vocab]) and do not touch *logits. Needs options.scratch.
  bool logits_in_scratch = false;
  // Threads for the matrix products and attention heads; null runs on the calling thread.
  // Results do not depend on the thread count. The pool must not be used by anyone else
  // during Forward() (one ParallelFor at a time).
  ThreadPool* pool = nullptr;
  // The step's compute buffer (model/scratch.h), made for this model; with it Forward makes no
  // heap allocation for activations, and a batch larger than it holds (tokens, or keys) is an
  // error. Null: Forward allocates its scratch for this call.
  ForwardScratch* scratch = nullptr;
};

class Model {
 public:
  // Opens, validates and binds the model at `path`. Errors name the file and the problem:
  // unknown architecture, missing tensor, a shape that disagrees with the hyper-parameters.
  static StatusOr<std::unique_ptr<Model>> Load(const std::string& path);
  // Same, over an already opened file (which the Model keeps).
  static StatusOr<std::unique_ptr<Model>> FromFile(std::unique_ptr<gguf::GgufFile> file);

  const HParams& hparams() const { return hp_; }
  const gguf::GgufFile& file() const { return *file_; }
  const ModelWeights& weights() const { return w_; }

  // KV cache options for this model (per-layer dims and windows) at the given context.
  KvCacheOptions KvOptions(DType type, int64_t num_ctx, int32_t num_seqs, int64_t max_batch) const;

  // Runs tokens[0..n) at positions pos0..pos0+n-1 of sequence `seq`; the cache must already
  // hold positions < pos0 and have room reserved up to pos0 + n. Writes logits:
  // [n, n_vocab] with all_logits, else [1, n_vocab] for the last token (nothing when
  // options.each_logits is set: see there).
  // Errors: a token id outside the vocabulary (InvalidArgument), a batch the scratch cannot
  // hold or a scratch made for another shape (InvalidArgument), kernel errors.
  Status Forward(std::span<const int32_t> tokens, int64_t pos0, KvCache& kv, int32_t seq,
                 const ForwardOptions& options, std::vector<float>* logits) const;

 private:
  Model() = default;
  std::unique_ptr<gguf::GgufFile> file_;
  HParams hp_;
  ModelWeights w_;
};

// Architecture entry points (one file each).
Status ConfigureLlama(const gguf::GgufFile& file, HParams* hp);
Status ConfigureQwen2(const gguf::GgufFile& file, HParams* hp);
Status ConfigureQwen3(const gguf::GgufFile& file, HParams* hp);
Status ConfigureGemma3(const gguf::GgufFile& file, HParams* hp);

}  // namespace ferry

#endif  // FERRY_MODEL_MODEL_H_
