// The decoder forward pass shared by every registered architecture, written to be read top to
// bottom (model-notes §2). Architecture differences are the HParams feature flags.
#include <algorithm>
#include <cmath>

#include "backend/allocator.h"
#include "base/thread_pool.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/matmul.h"
#include "kernels/ref/ops.h"
#include "model/model.h"
#include "model/scratch.h"

namespace ferry {
namespace {

const float* F32(const WeightMatrix& w) { return static_cast<const float*>(w.data); }

// y[t] += b for each of n_tok rows of n.
void AddBias(float* y, const WeightMatrix& b, int64_t n_tok, int64_t n) {
  if (!b.present()) return;
  for (int64_t t = 0; t < n_tok; ++t) {
    for (int64_t i = 0; i < n; ++i) y[t * n + i] += F32(b)[i];
  }
}

// Normalizes each of n_tok rows of n in place with weight w.
void NormRows(float* x, const WeightMatrix& w, int64_t n_tok, int64_t n, float eps) {
  for (int64_t t = 0; t < n_tok; ++t) RmsNormRef(x + t * n, F32(w), x + t * n, n, eps);
}

// The rotary embedding of a layer. Sliding-window layers (gemma3) use their own base and no
// frequency scaling; like llama.cpp they keep ext_factor and attn_factor, which with s = 1 leaves
// the angles unscaled and the magnitude attn_factor.
RopeParams LayerRope(const HParams& hp, const ModelWeights& w, bool sliding) {
  RopeParams p;
  p.n_rot = hp.n_rot;
  p.neox = hp.rope_type == RopeType::kNeox;
  p.base = sliding ? hp.rope_base_swa : hp.rope_base;
  p.freq_scale = sliding ? 1.0f : hp.rope_freq_scale;
  p.freq_factors = w.rope_freqs.present() ? F32(w.rope_freqs) : nullptr;
  p.ext_factor = hp.rope_ext_factor;
  p.attn_factor = hp.rope_attn_factor;
  p.n_ctx_orig = hp.rope_n_ctx_orig;
  p.beta_fast = hp.rope_yarn_beta_fast;
  p.beta_slow = hp.rope_yarn_beta_slow;
  return p;
}

}  // namespace

Status Model::Forward(std::span<const int32_t> tokens, int64_t pos0, KvCache& kv, int32_t seq,
                      const ForwardOptions& options, std::vector<float>* logits) const {
  const HParams& hp = hp_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return InvalidArgumentError("Forward() needs at least one token");
  const int64_t e = hp.n_embd, dk = hp.head_dim_k, dv = hp.head_dim_v;
  const int64_t qd = hp.n_head * dk, kd = hp.n_head_kv * dk, vd = hp.n_head_kv * dv;
  const float scale = hp.attn_scale > 0.0f ? hp.attn_scale : 1.0f / std::sqrt(static_cast<float>(dk));

  // The scratch: the caller's (checked against this batch), or one for this call only.
  std::unique_ptr<DeviceAllocator> own_allocator;
  std::unique_ptr<ForwardScratch> own_scratch;
  ForwardScratch* sc = options.scratch;
  if (options.logits_in_scratch && sc == nullptr) {
    return InvalidArgumentError("Forward: logits_in_scratch needs a scratch from the caller");
  }
  if (sc == nullptr) {
    own_allocator = std::make_unique<DeviceAllocator>("cpu");
    // Streamed logits (each_logits) are computed up to 32 rows at a time.
    const int64_t logit_rows = options.each_logits ? std::min<int64_t>(n, 32) : 1;
    FERRY_ASSIGN_OR_RETURN(
        own_scratch, ForwardScratch::Create(ForwardScratch::ShapeFor(*this, n, pos0 + n, logit_rows),
                                            *own_allocator));
    sc = own_scratch.get();
  } else {
    const ScratchShape& s = sc->shape();
    if (s.n_embd != e || s.q_dim != qd || s.k_dim != kd || s.v_dim != vd ||
        s.attn_dim != hp.n_head * dv || s.n_ff != hp.n_ff || s.n_head != hp.n_head ||
        s.n_vocab != hp.n_vocab) {
      return InvalidArgumentError("Forward(): the scratch was made for another model shape");
    }
    if (n > s.max_tokens) {
      return InvalidArgumentError(
          "Forward(): a batch of {} tokens does not fit the scratch, sized for {} tokens per step",
          n, s.max_tokens);
    }
  }
  const std::span<uint8_t> ws = sc->workspace();
  float* const x = sc->x();
  float* const cur = sc->cur();
  float* const q = sc->q();
  float* const k = sc->k();
  float* const v = sc->v();
  float* const attn = sc->attn();
  float* const out = sc->out();
  float* const gate = sc->gate();
  float* const up = sc->up();
  float* const kc = sc->kc();
  float* const vc = sc->vc();
  float* const scores = sc->scores();

  // Activations: x [n, e].
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = tokens[static_cast<size_t>(t)];
    if (id < 0 || id >= hp.n_vocab) {
      return InvalidArgumentError("token id {} is outside the vocabulary of {} tokens", id,
                                  hp.n_vocab);
    }
    FERRY_RETURN_IF_ERROR(GetRowRef(w_.token_embd, id, x + t * e));
    if (hp.embed_scale) {
      const float s = std::sqrt(static_cast<float>(e));
      for (int64_t i = 0; i < e; ++i) x[t * e + i] *= s;
    }
  }

  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const LayerWeights& L = w_.layers[static_cast<size_t>(l)];
    const int64_t window = hp.swa_window[static_cast<size_t>(l)];

    // Keys visible to this batch: [p_lo, pos0 + n).
    const int64_t p_hi = pos0 + n;
    const int64_t p_lo = window > 0 ? std::max<int64_t>(0, pos0 - window + 1) : 0;
    const int64_t n_keys = p_hi - p_lo;
    if (n_keys > sc->shape().max_keys) {
      return InvalidArgumentError(
          "Forward(): layer {} attends over {} keys but the scratch holds {} (num_ctx)", l,
          n_keys, sc->shape().max_keys);
    }

    // Attention: cur = norm(x); q, k, v projections.
    std::copy(x, x + n * e, cur);
    NormRows(cur, L.attn_norm, n, e, hp.norm_eps);
    FERRY_RETURN_IF_ERROR(MatMul(L.wq, cur, n, q, options.pool, ws));
    FERRY_RETURN_IF_ERROR(MatMul(L.wk, cur, n, k, options.pool, ws));
    FERRY_RETURN_IF_ERROR(MatMul(L.wv, cur, n, v, options.pool, ws));
    AddBias(q, L.bq, n, qd);
    AddBias(k, L.bk, n, kd);
    AddBias(v, L.bv, n, vd);
    if (hp.qk_norm) {
      NormRows(q, L.q_norm, n * hp.n_head, dk, hp.norm_eps);
      NormRows(k, L.k_norm, n * hp.n_head_kv, dk, hp.norm_eps);
    }
    const RopeParams rope = LayerRope(hp, w_, window > 0);
    for (int64_t t = 0; t < n; ++t) {
      RopeRef(q + t * qd, hp.n_head, dk, pos0 + t, rope);
      RopeRef(k + t * kd, hp.n_head_kv, dk, pos0 + t, rope);
      kv.Store(seq, static_cast<int>(l), pos0 + t, k + t * kd, v + t * vd);
    }

    // kc [n_keys, kd], vc [n_keys, vd].
    kv.Load(seq, static_cast<int>(l), p_lo, p_hi, kc, vc);
    // Heads are independent: split over the pool, one row of scores per head.
    AttentionArgs args;
    args.q = q;
    args.k = kc;
    args.v = vc;
    args.out = attn;
    args.scores = scores;
    args.n_tok = n;
    args.n_keys = n_keys;
    args.n_head = hp.n_head;
    args.n_head_kv = hp.n_head_kv;
    args.head_dim_k = dk;
    args.head_dim_v = dv;
    args.pos0 = pos0;
    args.p_lo = p_lo;
    args.window = window;
    args.scale = scale;
    Attention(args, options.pool);
    FERRY_RETURN_IF_ERROR(MatMul(L.wo, attn, n, out, options.pool, ws));
    AddBias(out, L.bo, n, e);
    if (hp.post_norms) NormRows(out, L.post_attn_norm, n, e, hp.norm_eps);
    for (int64_t i = 0; i < n * e; ++i) x[i] += out[i];

    // Feed-forward: x += down(act(gate(norm(x))) * up(norm(x))).
    std::copy(x, x + n * e, cur);
    NormRows(cur, L.ffn_norm, n, e, hp.norm_eps);
    FERRY_RETURN_IF_ERROR(MatMul(L.ffn_gate, cur, n, gate, options.pool, ws));
    FERRY_RETURN_IF_ERROR(MatMul(L.ffn_up, cur, n, up, options.pool, ws));
    if (hp.activation == FfnActivation::kSilu) {
      SiluMul(gate, up, n * hp.n_ff, options.pool);
    } else {
      GeluTanhF16Mul(gate, up, n * hp.n_ff, options.pool);
    }
    FERRY_RETURN_IF_ERROR(MatMul(L.ffn_down, gate, n, out, options.pool, ws));
    if (hp.post_norms) NormRows(out, L.post_ffw_norm, n, e, hp.norm_eps);
    for (int64_t i = 0; i < n * e; ++i) x[i] += out[i];
  }

  // Output: logits for the last token, or all. The normed rows go to cur.
  const WeightMatrix& wout = w_.output.present() ? w_.output : w_.token_embd;
  auto softcap = [&](float* z, int64_t count) {
    if (hp.final_logit_softcap <= 0.0f) return;
    const float c = hp.final_logit_softcap;
    for (int64_t i = 0; i < count; ++i) z[i] = c * std::tanh(z[i] / c);
  };
  if (options.each_logits) {
    // Every token's logits, logit_rows at a time through the scratch.
    logits->clear();
    std::copy(x, x + n * e, cur);
    NormRows(cur, w_.output_norm, n, e, hp.norm_eps);
    const int64_t rows = std::max<int64_t>(1, sc->shape().logit_rows);
    float* const y = sc->logits();
    for (int64_t i0 = 0; i0 < n; i0 += rows) {
      const int64_t r = std::min(rows, n - i0);
      FERRY_RETURN_IF_ERROR(MatMul(wout, cur + i0 * e, r, y, options.pool, ws));
      softcap(y, r * hp.n_vocab);
      for (int64_t i = 0; i < r; ++i) {
        FERRY_RETURN_IF_ERROR(options.each_logits(
            i0 + i, std::span<const float>(y + i * hp.n_vocab, static_cast<size_t>(hp.n_vocab))));
      }
    }
    return Status::Ok();
  }
  const int64_t first_out = options.all_logits ? 0 : n - 1;
  const int64_t n_out = n - first_out;
  std::copy(x + first_out * e, x + n * e, cur);
  NormRows(cur, w_.output_norm, n_out, e, hp.norm_eps);
  if (n_out == 1) {
    // One row: into the scratch, where it stays with logits_in_scratch (else copied; the
    // caller's vector keeps its capacity).
    float* const y = sc->logits();
    FERRY_RETURN_IF_ERROR(MatMul(wout, cur, 1, y, options.pool, ws));
    softcap(y, hp.n_vocab);
    if (!options.logits_in_scratch) logits->assign(y, y + hp.n_vocab);
    return Status::Ok();
  }
  logits->resize(static_cast<size_t>(n_out * hp.n_vocab));
  FERRY_RETURN_IF_ERROR(MatMul(wout, cur, n_out, logits->data(), options.pool, ws));
  softcap(logits->data(), static_cast<int64_t>(logits->size()));
  return Status::Ok();
}

}  // namespace ferry
