// The decoder forward pass shared by every registered architecture, written to be read top to
// bottom, as llama.cpp's llm_build_llama / llm_build_gemma3 graphs compute it. Architecture
// differences are the HParams feature flags.
#include <algorithm>
#include <cmath>

#include "backend/allocator.h"
#include "base/thread_pool.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/matmul.h"
#include "kernels/ref/ops.h"
#include "model/batch.h"
#include "model/cuda_layers.h"
#include "model/layer.h"
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

// The layer operations of model/layer.h on the CPU, over the step's ForwardScratch: the kernels
// of kernels/cpu on the options' pool. One per Forward call.
class CpuLayerOps {
 public:
  CpuLayerOps(const HParams& hp, const ModelWeights& w, const Batch& batch,
              const std::vector<SeqRun>& runs, KvCache& kv, ForwardScratch& sc, ThreadPool* pool,
              float scale)
      : hp_(hp),
        w_(w),
        batch_(batch),
        runs_(runs),
        kv_(kv),
        sc_(sc),
        pool_(pool),
        ws_(sc.workspace()),
        scale_(scale) {}

  Status Copy(Act dst, Act src, int64_t count) {
    std::copy(P(src), P(src) + count, P(dst));
    return Status::Ok();
  }
  Status Norm(Act a, const WeightMatrix& w, int64_t rows, int64_t n) {
    NormRows(P(a), w, rows, n, hp_.norm_eps);
    return Status::Ok();
  }
  Status MatMul(const WeightMatrix& w, Act in, int64_t n, Act out) {
    return ferry::MatMul(w, P(in), n, P(out), pool_, ws_);
  }
  Status AddBias(Act a, const WeightMatrix& b, int64_t rows, int64_t n) {
    ferry::AddBias(P(a), b, rows, n);
    return Status::Ok();
  }
  Status RopeAndStore(int64_t l, bool sliding) {
    const int64_t dk = hp_.head_dim_k, qd = hp_.n_head * dk, kd = hp_.n_head_kv * dk;
    const int64_t vd = hp_.n_head_kv * hp_.head_dim_v;
    const RopeParams rope = LayerRope(hp_, w_, sliding);
    float* const q = sc_.q();
    float* const k = sc_.k();
    float* const v = sc_.v();
    for (int64_t t = 0; t < batch_.size(); ++t) {
      const BatchEntry& b = batch_.entries[static_cast<size_t>(t)];
      const float* cs = sc_.rope(sliding) + t * dk;
      RopeApply(q + t * qd, hp_.n_head, dk, cs, rope);
      RopeApply(k + t * kd, hp_.n_head_kv, dk, cs, rope);
      FERRY_RETURN_IF_ERROR(kv_.Store(b.seq, static_cast<int>(l), b.pos, k + t * kd, v + t * vd));
    }
    return Status::Ok();
  }
  // Each run attends over its own sequence's keys [p_lo, pos0 + count).
  Status Attend(int64_t l, int64_t window) {
    const int64_t dk = hp_.head_dim_k, qd = hp_.n_head * dk, ad = hp_.n_head * hp_.head_dim_v;
    for (const SeqRun& r : runs_) {
      AttentionArgs args = RunAttentionArgs(hp_, kv_, r, l, window, scale_);
      const int64_t p_lo = args.p_lo, p_hi = args.p_lo + args.n_keys;
      if (args.n_keys > sc_.shape().max_keys) {
        return InvalidArgumentError(
            "Forward(): layer {} attends over {} keys but the scratch holds {} (num_ctx)", l,
            args.n_keys, sc_.shape().max_keys);
      }
      // The keys' blocks, read in place.
      if (kv_.BlockSpan(p_lo, p_hi) > sc_.kv_block_slots()) {
        return InvalidArgumentError(
            "Forward(): layer {} attends over {} KV blocks but the scratch holds {} (KV blocks "
            "of {} positions, the scratch sized for {})",
            l, kv_.BlockSpan(p_lo, p_hi), sc_.kv_block_slots(), kv_.options().block_tokens,
            sc_.shape().kv_block_tokens);
      }
      args.kv.k_blocks = sc_.k_blocks();
      args.kv.v_blocks = sc_.v_blocks();
      FERRY_RETURN_IF_ERROR(kv_.BlockRows(r.seq, static_cast<int>(l), p_lo, p_hi, sc_.k_blocks(),
                                          sc_.v_blocks(), &args.kv.first_pos));
      args.q = sc_.q() + r.first * qd;
      args.out = sc_.attn() + r.first * ad;
      args.scores = sc_.scores();
      Attention(args, pool_);
    }
    return Status::Ok();
  }
  Status Gate(FfnActivation act, int64_t count) {
    if (act == FfnActivation::kSilu) {
      SiluMul(sc_.gate(), sc_.up(), count, pool_);
    } else {
      GeluTanhF16Mul(sc_.gate(), sc_.up(), count, pool_);
    }
    return Status::Ok();
  }
  Status Add(Act dst, Act src, int64_t count) {
    float* const d = P(dst);
    const float* const s = P(src);
    for (int64_t i = 0; i < count; ++i) d[i] += s[i];
    return Status::Ok();
  }

 private:
  float* P(Act a) const { return sc_.act(a); }

  const HParams& hp_;
  const ModelWeights& w_;
  const Batch& batch_;
  const std::vector<SeqRun>& runs_;
  KvCache& kv_;
  ForwardScratch& sc_;
  ThreadPool* const pool_;
  const std::span<uint8_t> ws_;
  const float scale_;
};

}  // namespace

Status Model::Forward(const Batch& batch, KvCache& kv, const ForwardOptions& options) const {
  const HParams& hp = hp_;
  const int64_t n = batch.size();
  if (n == 0) return InvalidArgumentError("Forward() needs at least one token");
  const int64_t e = hp.n_embd, dk = hp.head_dim_k, dv = hp.head_dim_v;
  const int64_t qd = hp.n_head * dk, kd = hp.n_head_kv * dk, vd = hp.n_head_kv * dv;
  const int64_t ad = hp.n_head * dv;
  const float scale =
      hp.attn_scale > 0.0f ? hp.attn_scale : 1.0f / std::sqrt(static_cast<float>(dk));

  // The runs: consecutive entries of one sequence at consecutive positions, each starting at
  // the sequence's length before the step.
  std::vector<SeqRun> runs;
  int64_t n_logits = 0;
  int64_t max_pos = 0;
  for (int64_t i = 0; i < n; ++i) {
    const BatchEntry& b = batch.entries[static_cast<size_t>(i)];
    if (b.token < 0 || b.token >= hp.n_vocab) {
      return InvalidArgumentError("token id {} is outside the vocabulary of {} tokens", b.token,
                                  hp.n_vocab);
    }
    n_logits += b.logits ? 1 : 0;
    if (b.hidden && !options.each_hidden) {
      return InvalidArgumentError(
          "Forward(): entry {} wants its hidden state but no each_hidden "
          "receives it",
          i);
    }
    max_pos = std::max(max_pos, b.pos);
    if (!runs.empty() && runs.back().seq == b.seq &&
        b.pos == runs.back().pos0 + runs.back().count) {
      ++runs.back().count;
      continue;
    }
    for (const SeqRun& r : runs) {
      if (r.seq == b.seq) {
        return InvalidArgumentError(
            "Forward(): sequence {} appears in two runs of the batch (entry {})", b.seq, i);
      }
    }
    if (!kv.is_live(b.seq)) {
      return InvalidArgumentError("Forward(): sequence {} is not live in the cache", b.seq);
    }
    runs.push_back(SeqRun{b.seq, i, 1, b.pos});
  }
  for (const SeqRun& r : runs) {
    if (r.pos0 < 0 || r.pos0 + r.count > kv.seq_len(r.seq)) {
      return InvalidArgumentError(
          "Forward(): positions {}..{} of sequence {} are not reserved in the cache (length {})",
          r.pos0, r.pos0 + r.count - 1, r.seq, kv.seq_len(r.seq));
    }
  }

  // The scratch: the caller's (checked against this batch), or one for this call only.
  std::unique_ptr<DeviceAllocator> own_allocator;
  std::unique_ptr<ForwardScratch> own_scratch;
  ForwardScratch* sc = options.scratch;
  if (sc == nullptr) {
    own_allocator = std::make_unique<DeviceAllocator>("cpu");
    const int64_t logit_rows = std::max<int64_t>(1, std::min<int64_t>(n_logits, 32));
    ScratchShape shape = ForwardScratch::ShapeFor(*this, n, max_pos + 1, logit_rows);
    shape.kv_block_tokens = kv.options().block_tokens;
    FERRY_ASSIGN_OR_RETURN(own_scratch, ForwardScratch::Create(shape, *own_allocator));
    sc = own_scratch.get();
  } else {
    const ScratchShape& s = sc->shape();
    if (s.n_embd != e || s.q_dim != qd || s.k_dim != kd || s.v_dim != vd || s.attn_dim != ad ||
        s.n_ff != hp.n_ff || s.n_head != hp.n_head || s.n_vocab != hp.n_vocab) {
      return InvalidArgumentError("Forward(): the scratch was made for another model shape");
    }
    if (n > s.max_tokens) {
      return InvalidArgumentError(
          "Forward(): a batch of {} tokens does not fit the scratch, sized for {} tokens per step",
          n, s.max_tokens);
    }
  }
  if (n_logits > sc->shape().logit_rows && !options.each_logits) {
    return InvalidArgumentError(
        "Forward(): {} entries want logits but the scratch holds {} rows (stream them with "
        "each_logits)",
        n_logits, sc->shape().logit_rows);
  }
  const std::span<uint8_t> ws = sc->workspace();
  float* const x = sc->x();
  float* const cur = sc->cur();

  // Activations: x [n, e].
  for (int64_t t = 0; t < n; ++t) {
    FERRY_RETURN_IF_ERROR(
        GetRowRef(w_.token_embd, batch.entries[static_cast<size_t>(t)].token, x + t * e));
    if (hp.embed_scale) {
      const float s = std::sqrt(static_cast<float>(e));
      for (int64_t i = 0; i < e; ++i) x[t * e + i] *= s;
    }
  }

  // Each token's rotary angles, once per step for every layer of a kind (full attention,
  // sliding window: their RopeParams differ).
  for (bool sliding : {false, true}) {
    const bool used = std::any_of(hp.swa_window.begin(), hp.swa_window.end(),
                                  [&](int64_t w) { return (w > 0) == sliding; });
    if (!used) continue;
    const RopeParams rope = LayerRope(hp, w_, sliding);
    for (int64_t t = 0; t < n; ++t) {
      RopeAngles(batch.entries[static_cast<size_t>(t)].pos, rope, sc->rope(sliding) + t * dk);
    }
  }

  CpuLayerOps cpu(hp, w_, batch, runs, kv, *sc, options.pool, scale);
  const int64_t first_gpu = cuda_ != nullptr ? cuda_->first_layer() : hp.n_layer;
  for (int64_t l = 0; l < first_gpu; ++l) {
    FERRY_RETURN_IF_ERROR(RunLayer(cpu, hp, w_.layers[static_cast<size_t>(l)], l, n));
  }
  // The layers the plan put on a GPU, then the hidden state back in x.
  if (cuda_ != nullptr) FERRY_RETURN_IF_ERROR(cuda_->RunLayers(batch, runs, kv, *sc, scale));

  // Hidden states (embeddings): each wanted row normed on its own into cur, handed out.
  for (int64_t t = 0; t < n; ++t) {
    if (!batch.entries[static_cast<size_t>(t)].hidden) continue;
    std::copy(x + t * e, x + (t + 1) * e, cur);
    NormRows(cur, w_.output_norm, 1, e, hp.norm_eps);
    FERRY_RETURN_IF_ERROR(
        options.each_hidden(t, std::span<const float>(cur, static_cast<size_t>(e))));
  }

  // Output: the rows that want logits, normed into cur [n_logits, e] in batch order, then
  // multiplied logit_rows at a time.
  if (n_logits == 0) return Status::Ok();
  const WeightMatrix& wout = w_.output.present() ? w_.output : w_.token_embd;
  int64_t r_out = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (!batch.entries[static_cast<size_t>(t)].logits) continue;
    std::copy(x + t * e, x + (t + 1) * e, cur + r_out * e);
    ++r_out;
  }
  // On a GPU the output norm and matrix run there (CudaLayers::Logits).
  if (cuda_ == nullptr) NormRows(cur, w_.output_norm, n_logits, e, hp.norm_eps);
  auto softcap = [&](float* z, int64_t count) {
    if (hp.final_logit_softcap <= 0.0f) return;
    const float c = hp.final_logit_softcap;
    for (int64_t i = 0; i < count; ++i) z[i] = c * std::tanh(z[i] / c);
  };
  const int64_t rows = std::max<int64_t>(1, sc->shape().logit_rows);
  float* const y = sc->logits();
  for (int64_t i0 = 0; i0 < n_logits; i0 += rows) {
    const int64_t r = std::min(rows, n_logits - i0);
    if (cuda_ != nullptr) {
      FERRY_RETURN_IF_ERROR(cuda_->Logits(cur + i0 * e, r, y));
    } else {
      FERRY_RETURN_IF_ERROR(MatMul(wout, cur + i0 * e, r, y, options.pool, ws));
    }
    softcap(y, r * hp.n_vocab);
    if (!options.each_logits) continue;  // n_logits <= rows: they stay in the scratch
    for (int64_t i = 0; i < r; ++i) {
      FERRY_RETURN_IF_ERROR(options.each_logits(
          i0 + i, std::span<const float>(y + i * hp.n_vocab, static_cast<size_t>(hp.n_vocab))));
    }
  }
  return Status::Ok();
}

Status Model::ForwardAllLogits(const Batch& batch, KvCache& kv, const ForwardOptions& options,
                               std::vector<float>* logits) const {
  logits->assign(static_cast<size_t>(batch.num_logits() * hp_.n_vocab), 0.0f);
  ForwardOptions o = options;
  const size_t nv = static_cast<size_t>(hp_.n_vocab);
  o.each_logits = [&](int64_t i, std::span<const float> row) -> Status {
    std::copy(row.begin(), row.end(), logits->begin() + static_cast<std::ptrdiff_t>(i * nv));
    return Status::Ok();
  };
  return Forward(batch, kv, o);
}

}  // namespace ferry
