// ForwardScratch: the compute buffer of the forward pass — ONE allocation from the device's
// DeviceAllocator (purpose "compute"), carved into every array Model::Forward needs for a step
// of up to max_tokens tokens attending over up to max_keys keys. With it, Forward makes no heap
// allocation for activations; the planner sizes its compute reservation with the same
// RequiredBytes() (planner/plan.cc ComputeBufferBytes), so the plan is the allocation.
//
// Layout (f32 unless noted; n = max_tokens, keys = max_keys; each array starts at a multiple
// of 64 bytes, in this order):
//   x, cur, out [n, n_embd]      residual stream, normed input, projection output
//   q [n, q_dim], k [n, k_dim], v [n, v_dim]     (q_dim = n_head * head_dim_k, ...)
//   attn [n, attn_dim]           attention output (n_head * head_dim_v)
//   gate, up [n, n_ff]           feed-forward
//   kv_blocks [2, kv_block_slots] pointers       where the visible keys' K and V blocks are
//                                (attention reads the cache in place; kv_block_slots =
//                                keys / kv_block_tokens + 2, the most blocks keys can span)
//   scores [n_head, keys]        one score row per head
//   rope [2, n, head_dim_k]      each token's rotary angles (RopeAngles), for full-attention
//                                and for sliding-window layers: computed once per step
//   logits [logit_rows, n_vocab] logits of the last token, or of logit_rows tokens at a time
//                                when Forward streams every token's logits (perplexity)
//   workspace [bytes]            MatMul activation quantization: the largest
//                                MatMulWorkspaceBytes(type, cols, n) over the products
//
// Thread-safety: not thread-safe; one Forward() at a time uses a scratch (the model's
// inference thread). The allocator must outlive the scratch.
#ifndef FERRY_MODEL_SCRATCH_H_
#define FERRY_MODEL_SCRATCH_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "backend/allocator.h"
#include "base/status.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "tensor/dtype.h"

namespace ferry {

// A weight the forward pass multiplies by: its type and its columns (input width).
struct MatMulInput {
  DType type = DType::kF32;
  int64_t cols = 0;
  bool operator==(const MatMulInput&) const = default;
};

// The activations of one step that a layer reads and writes (model/layer.h), by name: the
// arrays of the same names below (ForwardScratch::act), for n tokens: x [n, n_embd] the
// residual stream, cur [n, n_embd] its normed copy, q [n, n_head * head_dim_k],
// k [n, n_head_kv * head_dim_k], v [n, n_head_kv * head_dim_v], attn [n, n_head * head_dim_v],
// out [n, n_embd], gate and up [n, n_ff].
enum class Act { kX, kCur, kQ, kK, kV, kAttn, kOut, kGate, kUp };

// Everything that sizes the scratch.
struct ScratchShape {
  int64_t max_tokens = 0;  // tokens per step (num_batch, at most num_ctx)
  int64_t max_keys = 0;    // keys one attention step can see (num_ctx)
  // Positions per KV cache block (KvCacheOptions::block_tokens of the caches Forward reads).
  int64_t kv_block_tokens = KvCacheOptions{}.block_tokens;
  int64_t n_embd = 0, q_dim = 0, k_dim = 0, v_dim = 0, attn_dim = 0, n_ff = 0, n_head = 0;
  int64_t head_dim_k = 0;
  int64_t n_vocab = 0;
  int64_t logit_rows = 1;            // tokens whose logits are computed at once (>= 1)
  std::vector<MatMulInput> matmuls;  // distinct (type, cols) of the multiplied weights
};

// The one definition of a scratch shape from a decoder's sizes (the planner's
// ComputeScratchShape and ForwardScratch::ShapeFor both call it).
ScratchShape MakeScratchShape(int64_t n_embd, int64_t n_head, int64_t n_head_kv, int64_t head_dim_k,
                              int64_t head_dim_v, int64_t n_ff, int64_t n_vocab,
                              std::vector<MatMulInput> matmuls, int64_t max_tokens,
                              int64_t max_keys, int64_t logit_rows);

class ForwardScratch {
 public:
  // Bytes of the layout above for `shape`.
  static uint64_t RequiredBytes(const ScratchShape& shape);
  // The shape of `model` for steps of max_tokens tokens over max_keys keys, computing the
  // logits of logit_rows tokens at a time.
  static ScratchShape ShapeFor(const Model& model, int64_t max_tokens, int64_t max_keys,
                               int64_t logit_rows = 1);

  // Allocates the scratch from `allocator` (purpose "compute"): `bytes` exactly (the plan's
  // reservation), or RequiredBytes(shape) when bytes is 0. Errors: InvalidArgument for
  // max_tokens, max_keys or logit_rows < 1, or bytes below RequiredBytes (the message names both);
  // the allocator's ResourceExhausted.
  static StatusOr<std::unique_ptr<ForwardScratch>> Create(const ScratchShape& shape,
                                                          DeviceAllocator& allocator,
                                                          uint64_t bytes = 0);

  const ScratchShape& shape() const { return shape_; }
  uint64_t required_bytes() const { return required_; }
  uint64_t size_bytes() const { return buffer_.size(); }

  // The arrays (see the layout).
  float* x() const { return F(off_.x); }
  float* cur() const { return F(off_.cur); }
  float* out() const { return F(off_.out); }
  float* q() const { return F(off_.q); }
  float* k() const { return F(off_.k); }
  float* v() const { return F(off_.v); }
  float* attn() const { return F(off_.attn); }
  float* gate() const { return F(off_.gate); }
  float* up() const { return F(off_.up); }
  // The array an Act names.
  float* act(Act a) const;
  // [kv_block_slots()] pointers each for K and V.
  const uint8_t** k_blocks() const {
    return reinterpret_cast<const uint8_t**>(buffer_.data() + off_.kv_blocks);
  }
  const uint8_t** v_blocks() const { return k_blocks() + kv_block_slots(); }
  int64_t kv_block_slots() const { return KvBlockSlots(shape_); }
  static int64_t KvBlockSlots(const ScratchShape& shape);
  float* scores() const { return F(off_.scores); }
  // [n, head_dim_k]: sliding = false for full-attention layers, true for sliding-window ones.
  float* rope(bool sliding) const {
    return F(off_.rope) + (sliding ? shape_.max_tokens * shape_.head_dim_k : 0);
  }
  float* logits() const { return F(off_.logits); }
  std::span<uint8_t> workspace() const {
    return {buffer_.data() + off_.workspace, buffer_.size() - off_.workspace};
  }

  struct Offsets {
    uint64_t x, cur, out, q, k, v, attn, gate, up, kv_blocks, scores, rope, logits, workspace, end;
  };
  static Offsets Layout(const ScratchShape& shape);

 private:
  ForwardScratch() = default;
  float* F(uint64_t offset) const { return reinterpret_cast<float*>(buffer_.data() + offset); }

  ScratchShape shape_;
  Offsets off_{};
  uint64_t required_ = 0;
  DeviceAllocator::Buffer buffer_;
};

}  // namespace ferry

#endif  // FERRY_MODEL_SCRATCH_H_
