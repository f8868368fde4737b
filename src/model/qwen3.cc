// qwen3: llama's block with per-head RMSNorm of Q and K before RoPE (attn_q_norm, attn_k_norm),
// no biases, NEOX RoPE.
#include "model/model.h"

namespace ferry {

Status ConfigureQwen3(const gguf::GgufFile& file, HParams* hp) {
  hp->rope_type = RopeType::kNeox;
  hp->activation = FfnActivation::kSilu;
  hp->qk_norm = true;
  return Status::Ok();
}

}  // namespace ferry
