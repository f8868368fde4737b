// llama (Llama 2/3, Mistral, TinyLlama, SmolLM): RMSNorm, SiLU-gated FFN, NORM RoPE with the
// optional rope_freqs tensor (Llama 3.1+), optional attention biases.
#include "model/model.h"

namespace ferry {

Status ConfigureLlama(const gguf::GgufFile& file, HParams* hp) {
  hp->rope_type = RopeType::kNorm;
  hp->activation = FfnActivation::kSilu;
  if (hp->n_rot != hp->head_dim_k) {
    return DataLossError("{}: llama needs rope.dimension_count ({}) equal to the head size ({})",
                         file.name(), hp->n_rot, hp->head_dim_k);
  }
  return Status::Ok();
}

}  // namespace ferry
