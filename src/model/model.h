// Model: a GGUF decoder-only transformer bound in place to its memory map, and its forward pass.
//
// Load() reads hyper-parameters with the architecture's reader from the registry (one file per
// architecture: llama.cc, qwen2.cc, qwen3.cc, gemma3.cc), binds every weight to the mapped file
// (no copy) and checks each tensor's shape against the hyper-parameters. Forward() runs a batch
// of tokens of one or more sequences through the layers, storing K/V in a KvCache.
//
// Thread-safety: a loaded Model is immutable; Forward() is const but uses the caller's KvCache
// and scratch, so concurrent calls need distinct caches (the runtime calls it from one thread).
#ifndef FERRY_MODEL_MODEL_H_
#define FERRY_MODEL_MODEL_H_

#include <array>
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
#include "model/batch.h"

namespace ferry {

enum class RopeType { kNorm, kNeox };
enum class FfnActivation { kSilu, kGeluTanh };

// Hyper-parameters of a decoder, read from `{arch}.*` metadata (defaults as llama.cpp's
// llama_hparams / llm_load_hparams).
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
  bool qkv_bias = false;     // qwen2: q/k/v biases required
  bool qk_norm = false;      // qwen3, gemma3: per-head RMSNorm of q and k before RoPE
  bool post_norms = false;   // gemma3: post-attention and post-FFN norms
  bool embed_scale = false;  // gemma3: embeddings times sqrt(n_embd)
  FfnActivation activation = FfnActivation::kSilu;
  float attn_scale = 0.0f;  // score scale; 0 means 1/sqrt(head_dim_k)
  // Sliding-window attention: window per layer (0 = full attention).
  std::vector<int64_t> swa_window;
  float rope_base_swa = 10000.0f;  // RoPE base of sliding-window layers (gemma3)
  float final_logit_softcap = 0.0f;
  // {arch}.pooling_type as llama.cpp numbers it (0 none, 1 mean, 2 cls, 3 last, 4 rank);
  // -1 when the file does not say.
  int64_t pooling_type = -1;
};

struct LayerWeights {
  WeightMatrix attn_norm, wq, wk, wv, wo, bq, bk, bv, bo, q_norm, k_norm, post_attn_norm;
  WeightMatrix ffn_norm, ffn_gate, ffn_up, ffn_down, post_ffw_norm;

  // The matrices the forward pass multiplies (MatMul), in its order.
  std::array<const WeightMatrix*, 7> Matrices() const {
    return {&wq, &wk, &wv, &wo, &ffn_gate, &ffn_up, &ffn_down};
  }
  std::array<WeightMatrix*, 7> Matrices() {
    return {&wq, &wk, &wv, &wo, &ffn_gate, &ffn_up, &ffn_down};
  }
};

struct ModelWeights {
  WeightMatrix token_embd, output_norm, output, rope_freqs;
  std::vector<LayerWeights> layers;
};

class ForwardScratch;  // model/scratch.h
class CudaLayers;      // model/cuda_layers.h
struct ScratchShape;   // model/scratch.h

// Receives the logits of the i-th entry that wants them: [n_vocab], valid during the call only.
using LogitsCallback = std::function<Status(int64_t i, std::span<const float> logits)>;
// Receives the final hidden state of batch entry `entry` (one with BatchEntry::hidden): the
// residual stream after the output norm, before the output projection (llama.cpp's
// embeddings), [n_embd], valid during the call only.
using HiddenCallback = std::function<Status(int64_t entry, std::span<const float> hidden)>;

struct ForwardOptions {
  // When set: called with every wanted entry's logits in batch order, computed
  // scratch.logit_rows entries at a time, so no [n, n_vocab] array is ever held (perplexity).
  // An error from the callback stops Forward and is returned. Unset: the wanted entries'
  // logits stay in the scratch (ForwardScratch::logits(), [n_logits, n_vocab] in batch order),
  // and more of them than the scratch's logit_rows is an error.
  LogitsCallback each_logits;
  // Called for every entry with `hidden` set, in batch order (required when a batch has such
  // entries: InvalidArgument otherwise).
  HiddenCallback each_hidden;
  // Threads for the matrix products and attention heads; null runs on the calling thread.
  // Results do not depend on the thread count. The pool must not be used by anyone else
  // during Forward() (one ParallelFor at a time).
  ThreadPool* pool = nullptr;
  // The step's compute buffer (model/scratch.h), made for this model; with it Forward makes no
  // heap allocation for activations, and a batch larger than it holds (tokens, or keys) is an
  // error. Null: Forward allocates its scratch for this call (and, without each_logits, the
  // logits are lost with it: use ForwardAllLogits).
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
  ~Model();
  const ModelWeights& weights() const { return w_; }

  // Checks that every weight tensor's values are finite (llama.cpp's --check-tensors, always
  // on in ferry): a NaN or infinity in a weight makes every answer garbage without an error.
  // Reads the whole file once, on `pool`'s threads (null: the caller's): for block types only
  // their fp16 scale fields (a block's values are scale x small integer (+ min), finite
  // exactly when the scales are); for F32/F16/BF16 every value. DataLoss names the file, the
  // tensor and the element (or block) where the first bad value is. Thread-safe (reads only).
  Status CheckWeightsFinite(ThreadPool* pool) const;

  // Copies every weight that MatMul reads packed on this CPU (MatMulUsesPackedWeights and
  // CanPackWeightRows, kernels/cpu/matmul.h) into MatMul's packed layout, in memory this model
  // owns, and points its WeightMatrix::packed there. A packed copy has exactly the bytes of
  // its tensor; the tensor's mapped pages are released (madvise) once copied, so memory does
  // not grow: the tensor is then read from the file again only for embedding rows. Results
  // stay independent of the batch (the packed kernels keep the per-token invariance).
  // Only the CPU's weights are packed: after UseCuda, the GPU's layers and output are left
  // alone. Idempotent. Not thread-safe: call before any Forward, never concurrently with one.
  // Errors: ResourceExhausted when the memory cannot be allocated (nothing is left packed).
  Status PackWeights();
  // The packed copy of the tensor whose mapped bytes begin at `mapped` (a GgufFile tensor's
  // data), or an empty span if it has none.
  std::span<const uint8_t> PackedCopyOf(const void* mapped) const;
  uint64_t packed_bytes() const;

  // Runs layers [first_layer, n_layer) and the output on CUDA device `device` from now on
  // (CudaLayers, model/cuda_layers.h): their weights are copied into `allocator`'s memory
  // (a DeviceAllocator over CudaMemory(device), which must outlive the model) with the device
  // arrays for steps of `shape`. The KV caches used with this model must then keep those layers'
  // blocks in that device's memory (KvCache::Create with per-layer allocators). Forward's
  // results match the CPU's within the CUDA kernels' stated bounds. Not thread-safe: call before
  // any Forward. Errors: Unimplemented without a CUDA build; CudaLayers::Create's.
  Status UseCuda(int device, int64_t first_layer, DeviceAllocator& allocator,
                 const ScratchShape& shape);
  // The first layer a GPU runs: n_layer when none does.
  int64_t first_gpu_layer() const;
  // Replaces the GPU's step arrays with ones for `shape` (CudaLayers::Reserve), after a Grow of
  // num_ctx or num_batch. Not during a Forward. Errors: FailedPrecondition without UseCuda;
  // the allocator's.
  Status ReserveCuda(const ScratchShape& shape) const;
  // The CUDA device running layers, or -1 (every layer on the CPU).
  int cuda_device() const;
  // False when a GPU runs layers but has no step arrays (a ReserveCuda that failed to put the
  // old ones back): Forward then fails (FailedPrecondition).
  bool cuda_ready() const;

  // KV cache options for this model (per-layer dims and windows) at the given context.
  KvCacheOptions KvOptions(DType type, int64_t num_ctx, int32_t num_seqs, int64_t max_batch) const;

  // Runs one step over `batch` (model/batch.h): entries of several sequences, each sequence's
  // run at positions reserved in `kv` and starting at its length before the step. Every
  // weight matrix is read once for all entries; each run attends over its own sequence.
  // A token's results do not depend on which other entries share the step, how its sequence's
  // prompt was split into steps, or the thread count (bitwise). Logits: see ForwardOptions.
  // Errors (InvalidArgument): a token id outside the vocabulary, a malformed batch (see
  // batch.h), a batch the scratch cannot hold or a scratch made for another shape; kernel and
  // cache errors.
  Status Forward(const Batch& batch, KvCache& kv, const ForwardOptions& options) const;
  // Forward, with the wanted entries' logits copied to *logits: [n_logits, n_vocab].
  Status ForwardAllLogits(const Batch& batch, KvCache& kv, const ForwardOptions& options,
                          std::vector<float>* logits) const;

 private:
  Model() = default;
  struct FreeDeleter {
    void operator()(uint8_t* p) const;
  };
  struct PackedCopy {
    const void* mapped = nullptr;                // the tensor's mapped bytes
    std::unique_ptr<uint8_t, FreeDeleter> data;  // 64-byte aligned
    uint64_t bytes = 0;
  };
  std::unique_ptr<gguf::GgufFile> file_;
  HParams hp_;
  ModelWeights w_;
  std::vector<PackedCopy> packed_;
  std::unique_ptr<CudaLayers> cuda_;  // null: every layer on the CPU
};

// Architecture entry points (one file each).
Status ConfigureLlama(const gguf::GgufFile& file, HParams* hp);
Status ConfigureQwen2(const gguf::GgufFile& file, HParams* hp);
Status ConfigureQwen3(const gguf::GgufFile& file, HParams* hp);
Status ConfigureGemma3(const gguf::GgufFile& file, HParams* hp);

}  // namespace ferry

#endif  // FERRY_MODEL_MODEL_H_
