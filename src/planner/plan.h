// The memory planner: where a model's layers, KV cache and compute buffers go, before anything
// is allocated. MakePlan() is a pure function of the model's shape (tensor table and
// hyper-parameters, no weights read), the devices and the load options.
//
// Placement follows llama.cpp and Ollama: the input embedding stays on the CPU; the output
// layer and then the last layers go to the GPU(s) first, as many as fit; with several GPUs the
// offloaded layers are split in proportion to free memory. Each device that runs layers gets one
// compute-buffer reservation sized for the worst-case batch (num_batch tokens attending over
// num_ctx keys): the CPU the forward pass's host scratch (ComputeBufferBytes), a GPU the
// device arrays of its layers (GpuComputeBufferBytes). KV bytes are exact
// (KvCache::PoolLayerBytes: the same function the cache uses to allocate).
//
// Thread-safety: pure functions over values.
#ifndef FERRY_PLANNER_PLAN_H_
#define FERRY_PLANNER_PLAN_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/device.h"
#include "base/status.h"
#include "model/model.h"
#include "model/scratch.h"
#include "tensor/dtype.h"

namespace ferry {

// Weight elements of one type that decode multiplies by the activation vector per token.
struct WeightElements {
  DType type = DType::kF32;
  uint64_t elements = 0;
  bool operator==(const WeightElements&) const = default;
};

// What the planner needs to know about a model.
struct ModelShape {
  std::string name;
  int64_t n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_head_kv = 0;
  int64_t head_dim_k = 0, head_dim_v = 0, n_vocab = 0, n_ctx_train = 0;
  std::vector<int64_t> swa_window;           // [n_layer], 0 = full attention
  std::vector<uint64_t> layer_weight_bytes;  // [n_layer]: every blk.N.* tensor
  uint64_t input_bytes = 0;        // token_embd (+ rope_freqs, anything outside the blocks): CPU
  uint64_t output_bytes = 0;       // output_norm + output
  uint64_t tied_output_bytes = 0;  // no output tensor: token_embd serves as the output, and a
                                   // GPU holding the output layer needs its own copy
  // The same weights in a GPU's memory, where each tensor starts at a multiple of
  // CudaLayers::kTensorAlignment in one device buffer (CudaLayers::TensorBytes of each tensor):
  // [n_layer] the blk.N.* tensors, and the output (output_norm and the output matrix, or the
  // token embedding's copy when tied). Empty / 0: as on the CPU.
  std::vector<uint64_t> layer_gpu_weight_bytes;
  uint64_t gpu_output_bytes = 0;
  // CPU memory the loaded model holds besides weights, KV and compute: the GGUF header, the
  // parsed metadata and the tokenizer's tables (HostBytesFor).
  uint64_t host_bytes = 0;
  // The distinct (type, cols) of the weights the forward pass multiplies: they size the
  // activation-quantization workspace of the compute buffer. Empty: none counted.
  std::vector<MatMulInput> matmuls;
  // The speed model's compute work: elements of the matrices (tensors of 2 or more dimensions)
  // multiplied per decoded token, by type. [n_layer][distinct types] for the blk.N.* weights
  // (every expert of a mixture counted); the output projection (the token embedding when the
  // output is tied). Empty: no compute term for that part.
  std::vector<std::vector<WeightElements>> layer_matmul_elements;
  std::vector<WeightElements> output_matmul_elements;
};

// From a loaded Model: sizes from the tensor table; nothing is read from the weights.
ModelShape ShapeFromModel(const Model& model);

// CPU bytes a model file costs on load besides its weights, KV cache and compute buffers:
//  * the GGUF header, data_offset() bytes: mapped, and read by the loader, so resident;
//  * the parsed metadata, GgufFile::heap_bytes() (exact for keys, strings and arrays);
//  * the tokenizer's tables, Vocab::HeapBytesFor(Vocab::SizesFromGguf(file)) (exact), when
//    the file has a vocabulary ferry can size.
// The runtime charges the same three quantities, measured on what it built, to the CPU
// allocator under the purpose "host".
uint64_t HostBytesFor(const gguf::GgufFile& file);

// For described models (no file): a vocabulary of n_vocab tokens costs about this many host
// bytes per token (header + parsed metadata + tokenizer tables), measured on Llama 2's 32000
// and Gemma 3's 262144 token files; plus kDescribedHostBaseBytes.
inline constexpr uint64_t kDescribedHostBytesPerToken = 72;
inline constexpr uint64_t kDescribedHostBaseBytes = uint64_t{1} << 20;

// A llama-family shape with every 2-D weight of `type` (norms f32), for planning models that
// are not on disk (tests, "what if" questions).
struct DescribedModel {
  std::string name = "described";
  int64_t n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx_train;
  DType weight_type = DType::kQ4_0;
  DType output_type = DType::kQ6_K;
  bool tied_output = false;
};
StatusOr<ModelShape> ShapeFromDescription(const DescribedModel& d);

struct LoadOptions {
  int64_t num_ctx = 2048;       // tokens of context per sequence
  int32_t num_parallel = 1;     // full sequences the KV pool holds at once (each num_ctx)
  int32_t max_sequences = 0;    // sequences decoded together (the runner's sampler slots): 0
                                // means num_parallel; more than num_parallel share the pool's
                                // blocks while they are short. Each costs sampling memory.
  int64_t num_batch = 512;      // prompt tokens per step: sizes the compute buffers
  DType kv_type = DType::kF16;  // f16, q8_0, q4_0 (f32 for tests)
  int num_gpu = -1;             // layers on GPUs: -1 as many as fit; 0 none; n_layer + 1 all +
                                // the output layer (llama.cpp's counting)
  int main_gpu = 0;             // the GPU that holds the output layer
  int64_t logit_rows = 1;       // tokens whose logits are computed at once: at least
                                // SequencesOf (one row per sequence of a decode step), more for
                                // perplexity (the compute buffer holds [rows, n_vocab] floats)
};

// Sequences the runner decodes together: max_sequences, or num_parallel when it is 0.
inline int32_t SequencesOf(const LoadOptions& o) {
  return o.max_sequences > 0 ? o.max_sequences : o.num_parallel;
}

// The KV cache a plan's options make for a model (the cache allocates exactly what its
// PoolBytes says): the one definition the planner and the runtime both use.
KvCacheOptions KvOptionsFor(const ModelShape& model, const LoadOptions& options);

// Checks the options themselves (not whether they fit): num_ctx in 1..2^24, num_parallel >= 1,
// num_batch >= 1, max_sequences 0 or >= num_parallel, kv_type one of KvCacheTypes().
Status ValidateLoadOptions(const LoadOptions& options);

struct DevicePlan {
  std::string name;
  DeviceKind kind = DeviceKind::kCpu;  // Device::kind
  int index = 0;                       // Device::index (the CUDA device index)
  uint64_t capacity_bytes = 0;         // Device::free_bytes
  // A discovered GPU's CUDA context (Device::context_bytes): memory this process takes on the
  // device before any model, measured at discovery and already outside capacity_bytes (so not
  // in total_bytes either); 0 when unknown, for the CPU and for described devices.
  uint64_t context_bytes = 0;
  uint64_t weights_bytes = 0;
  uint64_t kv_bytes = 0;
  uint64_t compute_bytes = 0;
  uint64_t host_bytes = 0;      // the CPU only: ModelShape::host_bytes
  uint64_t sampling_bytes = 0;  // the CPU only: SequencesOf(options) x
                                // Sampler::WorkspaceBytes(n_vocab, num_ctx), the samplers'
                                // working memory
  uint64_t total_bytes = 0;     // weights + kv + compute + host + sampling
  std::vector<int64_t> layers;  // the repeating blocks that run here
  bool has_input = false;       // token embedding
  bool has_output = false;      // output norm + output projection
  // The speed model of one decoded token on this device (see Plan::predicted_tok_s).
  double bandwidth_bytes_per_s = 0.0;  // Device::bandwidth_bytes_per_s
  double matmul_flops = 0.0;           // Device::matmul_flops (0: unknown, no compute term)
  uint64_t bytes_read_per_token = 0;   // weights here (the input embedding: one row; a tied
                                       // output: the whole embedding) + one sequence's KV here
                                       // at a full context
  uint64_t flops_per_token = 0;  // 2 x weight elements multiplied here + attention: 2 x n_head
                                 // x (head_dim_k + head_dim_v) x keys per layer, keys = num_ctx
                                 // (min(window, num_ctx) for sliding-window layers)
  double memory_seconds = 0.0;   // bytes_read_per_token / bandwidth
  double compute_seconds = 0.0;  // each type's weight FLOPs / the device's rate for that type
                                 // (matmul_flops_by_type, else matmul_flops) + attention FLOPs /
                                 // matmul_flops; 0 when matmul_flops is 0
  double seconds_per_token() const { return std::max(memory_seconds, compute_seconds); }
  bool compute_bound() const { return compute_seconds > memory_seconds; }
  // "compute-bound" or "memory-bound"; "-" for a device with nothing to read or compute.
  const char* bound() const;
  int64_t headroom_bytes() const {
    return static_cast<int64_t>(capacity_bytes) - static_cast<int64_t>(total_bytes);
  }
};

struct Plan {
  LoadOptions options;
  std::vector<DevicePlan> devices;            // inventory order: GPUs, then the CPU
  std::vector<int> layer_device;              // [n_layer]: index into devices
  std::vector<uint64_t> layer_weights_bytes;  // [n_layer]: every blk.N.* tensor
  std::vector<uint64_t> layer_kv_bytes;       // [n_layer]: K + V of all sequences
  int output_device = 0;
  int gpu_layers = 0;  // llama.cpp's count: offloaded blocks (+1 for the output)
  // Decode speed of one sequence: 1 / sum over devices of max(memory_seconds,
  // compute_seconds), i.e. each device is bound by reading its bytes or by multiplying its
  // weights, whichever takes longer, and the devices run one after another (layer split).
  // 0 when no device has a bandwidth.
  double predicted_tok_s = 0.0;
  std::vector<std::string> warnings;

  uint64_t total_bytes() const;
  // Bytes on GPUs (every device but the last).
  uint64_t gpu_bytes() const;
  // One line: "plan: cuda0 [layers 0-31+output] 4.1 GiB (weights 3.9 GiB, kv 128 MiB, compute
  // 80 MiB, headroom 1.2 GiB, memory-bound); cpu ...; num_ctx 2048 x 1, kv f16; 4%/96%
  // CPU/GPU; predicted 52.3 tok/s" (the split as ProcessorSplit).
  std::string Summary() const;
};

// Errors: bad options (InvalidArgument), or ResourceExhausted when even the all-CPU plan does
// not fit; its message says how much is missing and the smallest changes that fit (see
// SuggestFits).
StatusOr<Plan> MakePlan(const ModelShape& model, const DeviceInventory& devices,
                        const LoadOptions& options);

// num_ctx capped at the model's trained context (when the file gives one): what ferry run and
// the server use for a larger request, as Ollama does (a warning says so; positions past the
// trained context give poor output and only cost memory).
int64_t CapNumCtxAtTrained(const ModelShape& model, int64_t num_ctx);

// The context limits users ask about, for the given options (num_ctx itself is ignored).
struct ContextLimits {
  int64_t max_ctx_all_gpu = 0;  // largest num_ctx with every layer and the output on GPUs (0:
                                // never, e.g. no GPU)
  int64_t max_ctx = 0;          // largest num_ctx that fits at all, with CPU offload (0: never)
};
ContextLimits ComputeContextLimits(const ModelShape& model, const DeviceInventory& devices,
                                   const LoadOptions& options);

// For options that do not fit (as a whole, or on the GPU when num_gpu forces layers there):
// "needs 3.1 GiB more: num_ctx <= 12288, or kv cache q8_0, or 9 layers on CPU (--num-gpu 24)".
std::string SuggestFits(const ModelShape& model, const DeviceInventory& devices,
                        const LoadOptions& options);

// Where a loaded model's bytes are, as Ollama's `ps` shows it: "100% CPU", "100% GPU" or
// "27%/73% CPU/GPU" (the GPU's share of `total_bytes` rounded to a whole percent, the CPU's the
// rest). `gpu_bytes` is the part on GPUs; 0 or a total of 0 is "100% CPU".
std::string ProcessorSplit(uint64_t total_bytes, uint64_t gpu_bytes);

// "0-17,20,22-23" for a sorted list of layer indices.
std::string FormatLayerRanges(const std::vector<int64_t>& layers);

// Bytes of the forward pass's scratch (model/scratch.h) for one step of min(num_batch, num_ctx)
// tokens over num_ctx keys (activations, attention rows, activation quantization, logits):
// exactly ForwardScratch::RequiredBytes, which the runtime allocates.
ScratchShape ComputeScratchShape(const ModelShape& model, const LoadOptions& options);
// The CPU reserves it in every plan: even with every layer on a GPU, the step's embedding rows,
// rotary angles and output rows and logits live in it.
uint64_t ComputeBufferBytes(const ModelShape& model, const LoadOptions& options);
// Bytes of the compute buffer of a GPU that runs `n_layers` layers and the output: the device
// arrays CudaLayers allocates for the same shape (CudaLayers::ComputeBytes: a ForwardScratch in
// device memory, the rounded activations, the KV row pointers and the step's address tables).
uint64_t GpuComputeBufferBytes(const ModelShape& model, const LoadOptions& options,
                               int64_t n_layers);

}  // namespace ferry

#endif  // FERRY_PLANNER_PLAN_H_
