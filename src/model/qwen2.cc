// qwen2 (Qwen 2 / 2.5): llama's block with required Q/K/V biases and NEOX RoPE.
#include "model/model.h"

namespace ferry {

Status ConfigureQwen2(const gguf::GgufFile& file, HParams* hp) {
  hp->rope_type = RopeType::kNeox;
  hp->activation = FfnActivation::kSilu;
  hp->qkv_bias = true;
  return Status::Ok();
}

}  // namespace ferry
