// CudaLayers: the last layers of a Model and its output, run on a CUDA device (the plan's
// split: input embedding and the first layers on the CPU, the rest on the GPU). It holds the
// device copies of those layers' weights and of the output's, and the device arrays of a step;
// each layer is model/layer.h's RunLayer over CudaLayerOps (cuda_layers.cc), so no
// architecture is written twice. The hidden state crosses to the device once per step and
// back once; the logits of the rows that want them come back.
//
// Built with -DFERRY_CUDA=ON; otherwise Create says so (Unimplemented) and nothing else exists.
//
// Memory: every device byte comes from the allocator given to Create (a DeviceAllocator over
// CudaMemory(index)): purpose "weights" for the copies (one buffer, see kTensorAlignment),
// "compute" for the step's arrays (a ForwardScratch of the step's shape in device memory, plus
// the rounded activations [max_tokens, widest input] f32 and the KV row pointers [2,
// max_tokens]). The allocator must outlive this object.
//
// Thread-safety: as Model::Forward: one step at a time, from the model's inference thread.
#ifndef FERRY_MODEL_CUDA_LAYERS_H_
#define FERRY_MODEL_CUDA_LAYERS_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "backend/allocator.h"
#include "base/status.h"
#include "kv/kv_cache.h"
#include "model/batch.h"
#include "model/layer.h"
#include "model/model.h"
#include "model/scratch.h"

namespace ferry {

class CudaLayers {
 public:
  // Copies the weights of layers [first_layer, n_layer) and of the output (output_norm and the
  // output matrix, the token embedding when tied) of `model` to CUDA device `device`, and
  // allocates the device arrays for steps of `shape` (ForwardScratch::ShapeFor of the model).
  // 0 <= first_layer <= n_layer (n_layer: only the output). Errors: Unimplemented without a
  // CUDA build, or for a weight type the CUDA kernels do not read (naming the tensor's type);
  // InvalidArgument for first_layer out of range; the allocator's ResourceExhausted.
  static StatusOr<std::unique_ptr<CudaLayers>> Create(const Model& model, int device,
                                                      int64_t first_layer,
                                                      DeviceAllocator& allocator,
                                                      const ScratchShape& shape);
  ~CudaLayers();

  // The GPU's weights are one buffer (purpose "weights"): each tensor it holds (every blk.N.*
  // tensor of its layers, output_norm, and the output matrix or the token embedding when tied)
  // at a multiple of kTensorAlignment, in the file's order, TensorBytes(n_bytes) apart. One
  // buffer, not one per tensor: the driver rounds each allocation up to its page size (2 MiB),
  // which per tensor would cost several percent of the device's memory beyond the plan.
  static constexpr uint64_t kTensorAlignment = 256;
  static constexpr uint64_t TensorBytes(uint64_t n_bytes) {
    return (n_bytes + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
  }
  // Whether a GPU running layers [first_layer, n_layer) and the output holds the tensor named
  // `name`: its blk.N.* tensors, output_norm and output, and, when `tied_output` (the file has
  // no output matrix), a copy of token_embd. The one rule Create copies by and the runner
  // leaves off the CPU's charges by (with tied_output false: the CPU keeps token_embd for the
  // input either way). Defined in every build.
  static bool HoldsTensor(std::string_view name, int64_t first_layer, int64_t n_layer,
                          bool tied_output);

  // Steps of at most this many sequences gather every GPU layer's KV addresses up front and
  // copy them to the device once (more: one copy per layer and sequence).
  static constexpr int64_t kStepRuns = 8;

  // Device bytes Create and Reserve allocate for the step's arrays of `shape` with `n_layers`
  // layers on the GPU (purpose "compute"): the ForwardScratch of the shape, the rounded
  // activations [max_tokens, widest input] f32, the KV row pointers [2, max_tokens], and the
  // step tables: row pointers [n_layers, 2, max_tokens] and block pointers [n_layers,
  // kStepRuns, 2, kv_block_slots]. The planner's GPU compute reservation (planner/plan.cc) is
  // this number. Defined in every build.
  static uint64_t ComputeBytes(const ScratchShape& shape, int64_t n_layers);

  // Replaces the step's arrays with ones for `shape` (a Grow of num_ctx or num_batch): the old
  // ones are freed first, so the device never holds both; on failure the old shape is
  // allocated again and the error returned. Not during a step.
  Status Reserve(const ScratchShape& shape);

  int device() const;
  int64_t first_layer() const;
  // False after a Reserve that could not allocate the old arrays again either: RunLayers and
  // Logits then fail (FailedPrecondition) until a Reserve succeeds.
  bool ready() const;

  // Runs layers [first_layer, n_layer) of one step: host.x() [n, n_embd] in and out (host
  // memory), host.rope(...) the step's rotary angles; `runs` the batch's sequence runs. The
  // KV cache must keep these layers' blocks in this device's memory.
  Status RunLayers(const Batch& batch, std::span<const SeqRun> runs, KvCache& kv,
                   const ForwardScratch& host, float attn_scale);

  // y [r, n_vocab] (host) = the output matrix times RmsNorm(rows [r, n_embd], output_norm)
  // (host), r <= the shape's logit_rows.
  Status Logits(const float* rows, int64_t r, float* y);

 private:
  struct Impl;
  explicit CudaLayers(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry

#endif  // FERRY_MODEL_CUDA_LAYERS_H_
