// gemma3: embeddings scaled by sqrt(n_embd); pre and post norms around attention and FFN;
// GELU(tanh)-gated FFN; per-head Q/K RMSNorm; NEOX RoPE; every layer il with il % 6 < 5 is a
// sliding-window layer with RoPE base 10000 and no scaling; tied output. Sources: llama.cpp's
// gemma3 graph (src/models/gemma3*.cpp), llama_hparams::set_swa_pattern (period 6) and its
// hard-coded local RoPE base; HF transformers' gemma3 (rope_local_base_freq, and a layer slides
// unless (i + 1) % 6 == 0).
#include <cmath>

#include "model/model.h"

namespace ferry {

Status ConfigureGemma3(const gguf::GgufFile& file, HParams* hp) {
  hp->rope_type = RopeType::kNeox;
  hp->activation = FfnActivation::kGeluTanh;
  hp->qk_norm = true;
  hp->post_norms = true;
  hp->embed_scale = true;
  // Query pre-attention scale 1/sqrt(head_dim_k), except the 27B shape (62 layers).
  hp->attn_scale = hp->n_layer == 62
                       ? 1.0f / std::sqrt(static_cast<float>(hp->n_embd / hp->n_head))
                       : 1.0f / std::sqrt(static_cast<float>(hp->head_dim_k));
  const std::string a = hp->arch + ".";
  if (const gguf::Value* v = file.Find(a + "attention.sliding_window")) {
    auto w = v->AsUint();
    if (!w.ok()) return w.status().WithPrefix(file.name());
    if (*w > 0) {
      for (int64_t l = 0; l < hp->n_layer; ++l) {
        hp->swa_window[static_cast<size_t>(l)] = (l % 6 < 5) ? static_cast<int64_t>(*w) : 0;
      }
    }
  }
  hp->rope_base_swa = 10000.0f;
  if (const gguf::Value* v = file.Find(a + "rope.freq_base_swa")) {
    auto b = v->AsDouble();
    if (!b.ok()) return b.status().WithPrefix(file.name());
    hp->rope_base_swa = static_cast<float>(*b);
  }
  return Status::Ok();
}

}  // namespace ferry
