// The decoder layer, described once for every backend: which operations run, in which order,
// on which weights and activations. A backend supplies the operations (an `Ops` type, below)
// over its own memory; Model::Forward runs each layer on the backend the plan placed it on
// (forward.cc: CpuLayerOps), so no architecture is written twice. Architecture differences are
// HParams feature flags, as llama.cpp's llm_build_llama / llm_build_gemma3 graphs compute them.
//
// Thread-safety: RunLayer is a pure sequence of calls on `ops`; it is as thread-safe as the
// Ops object it is given (one per step, used by the step's thread).
#ifndef FERRY_MODEL_LAYER_H_
#define FERRY_MODEL_LAYER_H_

#include <algorithm>
#include <cstdint>

#include "base/status.h"
#include "kernels/cpu/attention.h"
#include "kernels/ref/ops.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "model/scratch.h"

namespace ferry {

// The activations a layer reads and writes are ForwardScratch's arrays, named by Act
// (model/scratch.h).

// A run of a step's batch: consecutive entries of one sequence at consecutive positions,
// starting at the sequence's length before the step.
struct SeqRun {
  int32_t seq;
  int64_t first;  // index in the batch
  int64_t count;
  int64_t pos0;
};

// The attention of run r in layer l (sliding window `window`, 0: full attention) over its own
// sequence's keys [p_lo, pos0 + count): every AttentionArgs field but the buffers (q, out,
// scores) and where the K/V blocks are (kv.k_blocks, kv.v_blocks, kv.first_pos), which each
// backend fills with its own memory.
inline AttentionArgs RunAttentionArgs(const HParams& hp, const KvCache& kv, const SeqRun& r,
                                      int64_t l, int64_t window, float scale) {
  AttentionArgs a;
  a.kv.type = kv.options().type;
  a.kv.block_tokens = kv.options().block_tokens;
  a.kv.k_row_bytes = kv.k_row_bytes(static_cast<int>(l));
  a.kv.v_row_bytes = kv.v_row_bytes(static_cast<int>(l));
  a.p_lo = window > 0 ? std::max<int64_t>(0, r.pos0 - window + 1) : 0;
  a.n_keys = r.pos0 + r.count - a.p_lo;
  a.n_tok = r.count;
  a.n_head = hp.n_head;
  a.n_head_kv = hp.n_head_kv;
  a.head_dim_k = hp.head_dim_k;
  a.head_dim_v = hp.head_dim_v;
  a.pos0 = r.pos0;
  a.window = window;
  a.scale = scale;
  return a;
}

// What an Ops type provides (each returns Status; "in place" ops overwrite their activation):
//   Copy(Act dst, Act src, int64_t count)            dst[0, count) = src[0, count)
//   Norm(Act a, const WeightMatrix& w, rows, n)      each of `rows` rows of n: RmsNormRef, in place
//   MatMul(const WeightMatrix& w, Act in, n, Act out) out [n, w.rows] = in [n, w.cols] x W^T
//   AddBias(Act a, const WeightMatrix& b, rows, n)   a[r, :] += b for each row (b absent: nothing)
//   RopeAndStore(int64_t layer, bool sliding)        RoPE of q and k (the layer kind's angles),
//                                                    then each token's k and v into the KV cache
//   Attend(int64_t layer, int64_t window)            attn = attention of q over the cache
//   Gate(FfnActivation act, int64_t count)           gate[i] = act(gate[i]) * up[i]
//   Add(Act dst, Act src, int64_t count)             dst[i] += src[i]
template <typename Ops>
Status RunLayer(Ops& ops, const HParams& hp, const LayerWeights& L, int64_t l, int64_t n) {
  const int64_t e = hp.n_embd, dk = hp.head_dim_k;
  const int64_t qd = hp.n_head * dk, kd = hp.n_head_kv * dk, vd = hp.n_head_kv * hp.head_dim_v;
  const int64_t window = hp.swa_window[static_cast<size_t>(l)];

  // Attention: cur = norm(x); q, k, v projections of every entry at once.
  FERRY_RETURN_IF_ERROR(ops.Copy(Act::kCur, Act::kX, n * e));
  FERRY_RETURN_IF_ERROR(ops.Norm(Act::kCur, L.attn_norm, n, e));
  FERRY_RETURN_IF_ERROR(ops.MatMul(L.wq, Act::kCur, n, Act::kQ));
  FERRY_RETURN_IF_ERROR(ops.MatMul(L.wk, Act::kCur, n, Act::kK));
  FERRY_RETURN_IF_ERROR(ops.MatMul(L.wv, Act::kCur, n, Act::kV));
  FERRY_RETURN_IF_ERROR(ops.AddBias(Act::kQ, L.bq, n, qd));
  FERRY_RETURN_IF_ERROR(ops.AddBias(Act::kK, L.bk, n, kd));
  FERRY_RETURN_IF_ERROR(ops.AddBias(Act::kV, L.bv, n, vd));
  if (hp.qk_norm) {
    FERRY_RETURN_IF_ERROR(ops.Norm(Act::kQ, L.q_norm, n * hp.n_head, dk));
    FERRY_RETURN_IF_ERROR(ops.Norm(Act::kK, L.k_norm, n * hp.n_head_kv, dk));
  }
  FERRY_RETURN_IF_ERROR(ops.RopeAndStore(l, window > 0));
  FERRY_RETURN_IF_ERROR(ops.Attend(l, window));
  FERRY_RETURN_IF_ERROR(ops.MatMul(L.wo, Act::kAttn, n, Act::kOut));
  FERRY_RETURN_IF_ERROR(ops.AddBias(Act::kOut, L.bo, n, e));
  if (hp.post_norms) FERRY_RETURN_IF_ERROR(ops.Norm(Act::kOut, L.post_attn_norm, n, e));
  FERRY_RETURN_IF_ERROR(ops.Add(Act::kX, Act::kOut, n * e));

  // Feed-forward: x += down(act(gate(norm(x))) * up(norm(x))).
  FERRY_RETURN_IF_ERROR(ops.Copy(Act::kCur, Act::kX, n * e));
  FERRY_RETURN_IF_ERROR(ops.Norm(Act::kCur, L.ffn_norm, n, e));
  FERRY_RETURN_IF_ERROR(ops.MatMul(L.ffn_gate, Act::kCur, n, Act::kGate));
  FERRY_RETURN_IF_ERROR(ops.MatMul(L.ffn_up, Act::kCur, n, Act::kUp));
  FERRY_RETURN_IF_ERROR(ops.Gate(hp.activation, n * hp.n_ff));
  FERRY_RETURN_IF_ERROR(ops.MatMul(L.ffn_down, Act::kGate, n, Act::kOut));
  if (hp.post_norms) FERRY_RETURN_IF_ERROR(ops.Norm(Act::kOut, L.post_ffw_norm, n, e));
  return ops.Add(Act::kX, Act::kOut, n * e);
}

}  // namespace ferry

#endif  // FERRY_MODEL_LAYER_H_
