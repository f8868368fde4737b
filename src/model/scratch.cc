#include "model/scratch.h"

#include <algorithm>

#include "kernels/cpu/matmul.h"

namespace ferry {
namespace {

uint64_t RoundUp64(uint64_t n) { return (n + 63) / 64 * 64; }

}  // namespace

ForwardScratch::Offsets ForwardScratch::Layout(const ScratchShape& s) {
  const uint64_t n = static_cast<uint64_t>(std::max<int64_t>(0, s.max_tokens));
  const uint64_t keys = static_cast<uint64_t>(std::max<int64_t>(0, s.max_keys));
  Offsets o{};
  uint64_t at = 0;
  auto take = [&](uint64_t floats) {
    const uint64_t start = at;
    at += RoundUp64(floats * sizeof(float));
    return start;
  };
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  o.x = take(n * u(s.n_embd));
  o.cur = take(n * u(s.n_embd));
  o.out = take(n * u(s.n_embd));
  o.q = take(n * u(s.q_dim));
  o.k = take(n * u(s.k_dim));
  o.v = take(n * u(s.v_dim));
  o.attn = take(n * u(s.attn_dim));
  o.gate = take(n * u(s.n_ff));
  o.up = take(n * u(s.n_ff));
  // Pointers, not floats: 2 per slot, 8 bytes each (two floats' room).
  o.kv_blocks = take(4 * u(ForwardScratch::KvBlockSlots(s)));
  o.scores = take(u(s.n_head) * keys);
  o.rope = take(2 * n * u(s.head_dim_k));
  o.logits = take(u(std::max<int64_t>(1, s.logit_rows)) * u(s.n_vocab));
  o.workspace = at;
  uint64_t ws = 0;
  for (const MatMulInput& m : s.matmuls) {
    ws = std::max(ws, MatMulWorkspaceBytes(m.type, m.cols, s.max_tokens));
  }
  o.end = at + RoundUp64(ws);
  return o;
}

uint64_t ForwardScratch::RequiredBytes(const ScratchShape& shape) { return Layout(shape).end; }

int64_t ForwardScratch::KvBlockSlots(const ScratchShape& shape) {
  return std::max<int64_t>(0, shape.max_keys) / std::max<int64_t>(1, shape.kv_block_tokens) + 2;
}

ScratchShape MakeScratchShape(int64_t n_embd, int64_t n_head, int64_t n_head_kv, int64_t head_dim_k,
                              int64_t head_dim_v, int64_t n_ff, int64_t n_vocab,
                              std::vector<MatMulInput> matmuls, int64_t max_tokens,
                              int64_t max_keys, int64_t logit_rows) {
  ScratchShape s;
  s.logit_rows = logit_rows;
  s.max_tokens = max_tokens;
  s.max_keys = max_keys;
  s.n_embd = n_embd;
  s.q_dim = n_head * head_dim_k;
  s.head_dim_k = head_dim_k;
  s.k_dim = n_head_kv * head_dim_k;
  s.v_dim = n_head_kv * head_dim_v;
  s.attn_dim = n_head * head_dim_v;
  s.n_ff = n_ff;
  s.n_head = n_head;
  s.n_vocab = n_vocab;
  s.matmuls = std::move(matmuls);
  return s;
}

ScratchShape ForwardScratch::ShapeFor(const Model& model, int64_t max_tokens, int64_t max_keys,
                                      int64_t logit_rows) {
  const HParams& hp = model.hparams();
  std::vector<MatMulInput> matmuls;
  auto add = [&](const WeightMatrix& w) {
    if (!w.present()) return;
    const MatMulInput in{w.type, w.cols};
    if (std::find(matmuls.begin(), matmuls.end(), in) == matmuls.end()) matmuls.push_back(in);
  };
  const ModelWeights& w = model.weights();
  for (const LayerWeights& l : w.layers) {
    for (const WeightMatrix* m : l.Matrices()) add(*m);
  }
  add(w.output.present() ? w.output : w.token_embd);
  return MakeScratchShape(hp.n_embd, hp.n_head, hp.n_head_kv, hp.head_dim_k, hp.head_dim_v, hp.n_ff,
                          hp.n_vocab, std::move(matmuls), max_tokens, max_keys, logit_rows);
}

StatusOr<std::unique_ptr<ForwardScratch>> ForwardScratch::Create(const ScratchShape& shape,
                                                                 DeviceAllocator& allocator,
                                                                 uint64_t bytes) {
  if (shape.max_tokens < 1 || shape.max_keys < 1 || shape.logit_rows < 1) {
    return InvalidArgumentError(
        "forward scratch: max_tokens {}, max_keys {} and logit_rows {} must be >= 1",
        shape.max_tokens, shape.max_keys, shape.logit_rows);
  }
  const uint64_t required = RequiredBytes(shape);
  if (bytes == 0) bytes = required;
  if (bytes < required) {
    return InvalidArgumentError(
        "forward scratch: {} bytes reserved but a step of {} tokens over {} keys needs {}", bytes,
        shape.max_tokens, shape.max_keys, required);
  }
  std::unique_ptr<ForwardScratch> s(new ForwardScratch());
  FERRY_ASSIGN_OR_RETURN(s->buffer_, allocator.Allocate(bytes, "compute"));
  s->shape_ = shape;
  s->off_ = Layout(shape);
  s->required_ = required;
  return s;
}

float* ForwardScratch::act(Act a) const {
  switch (a) {
    case Act::kX:
      return x();
    case Act::kCur:
      return cur();
    case Act::kQ:
      return q();
    case Act::kK:
      return k();
    case Act::kV:
      return v();
    case Act::kAttn:
      return attn();
    case Act::kOut:
      return out();
    case Act::kGate:
      return gate();
    case Act::kUp:
      return up();
  }
  return nullptr;
}

}  // namespace ferry
