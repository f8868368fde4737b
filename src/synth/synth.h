// Random-weight GGUF model files, written without Python: for machines that have only ferry's
// binaries (benchmarks and GPU checks), and for tests.
//
// A file is determined by its SynthSpec and the vocabulary file: the same spec writes the same
// bytes on any machine and with any thread count. Two kinds of shape:
//
// - "small" (every architecture): the models of tests/reference/make_synthetic.py, n_embd 256,
//   n_ff 512, llama/qwen2/qwen3 3 layers, gemma3 6 layers (see kSmall* in synth.cc). Values
//   are computed exactly as that script computes them (SplitMix64 noise keyed by the SHA-256 of
//   "seed:tensor name", Irwin-Hall of four 24-bit uniforms, float64 arithmetic) and quantized
//   with ferry's reference quantizers (kernels/ref/quantize.h), so with the stories260K
//   vocabulary and seed 0 the file has the bytes of the script's (fixtures/synthetic.sha256).
// - "tinyllama" (TinyLlama-1.1B: 22 layers, 2048 wide, 5632 FFN, 32/4 heads of 64) and
//   "llama8b" (Llama-3-8B: 32 layers, 4096 wide, 14336 FFN, 32/8 heads of 128, rope base
//   500000, context 8192), llama only, with an untied output matrix: every matrix is written
//   block by block straight from a counter-based generator (FillRandomRows), with no float
//   tensor in between, on `threads` threads, streamed to the file; norm weights are 1.
//
// In both, a matrix's values have mean about 0 and standard deviation about 1/sqrt(ne[0]) (its
// fan-in), so activations keep unit scale; every value and scale is finite.
//
// Tensor names, shapes (ne order) and metadata keys are llama.cpp's (src/llama-arch.cpp), as
// ferry's Model::Load reads them; the tokenizer.* keys are copied from the vocabulary file,
// whose token count is n_vocab (token_embd and output rows).
//
// Thread-safety: the functions are thread-safe (no shared state).
#ifndef FERRY_SYNTH_SYNTH_H_
#define FERRY_SYNTH_SYNTH_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"
#include "tensor/dtype.h"

namespace ferry::synth {

struct SynthSpec {
  std::string arch;          // "llama", "qwen2", "qwen3", "gemma3"
  std::string shape;         // "small", "tinyllama", "llama8b" (the last two: llama only)
  DType type = DType::kF32;  // every matrix: F32, F16, Q8_0, Q4_0, Q4_K or Q6_K
  uint64_t seed = 0;
  // > 0: this many layers instead of the shape's (quick files for tests); 0: the shape's.
  int64_t n_layer = 0;
};

// The weight types a spec may name, by their lowercase names (case-insensitive here): f32,
// f16, q8_0, q4_0, q4_k, q6_k. InvalidArgument for any other, listing these.
StatusOr<DType> ParseSynthType(std::string_view name);
// "f32", "f16", "q8_0", "q4_0", "q4_k", "q6_k"; "" for a type a spec cannot name.
std::string_view SynthTypeName(DType type);

// OK when `spec` names a known architecture, shape and type that go together; else
// InvalidArgument naming the bad field and what it may be.
Status CheckSpec(const SynthSpec& spec);

// Writes the model of `spec` to out_path (through out_path + ".partial", renamed at the end; on
// error nothing is left at either path) with the tokenizer of the GGUF file vocab_gguf_path.
// `threads` (>= 1) generate the weights. Errors: CheckSpec's; NotFound/DataLoss for a missing
// or bad vocabulary file, or one without tokenizer.ggml.tokens; IoError naming the path when
// the output cannot be created or written (disk full).
Status WriteSyntheticModel(const SynthSpec& spec, const std::string& vocab_gguf_path,
                           const std::string& out_path, int threads);

// The big shapes' generator: rows [row_begin, row_end) of a matrix of `cols` columns of `type`
// (one of the six above; cols a multiple of its block size), written at dst as GGUF rows. Values
// have mean about 0 and standard deviation about 1/sqrt(cols); every fp16 field is finite and
// normal-or-subnormal, never NaN or infinity. Row r depends only on (seed, tensor, r).
//   Q4_0: d uniform in [0.75, 1.25) x base with a random sign, random nibbles.
//   Q8_0: d as Q4_0, random int8 quants.
//   Q4_K: sub-block scales sc uniform in 32..63 and mins equal to them, dmin = 7.5 d, random
//         nibbles: value = d sc (q - 7.5), zero-mean.
//   Q6_K: random 6-bit quants, sub-block scales uniform in -127..127.
//   F32/F16: Irwin-Hall of four 16-bit uniforms, scaled.
void FillRandomRows(DType type, int64_t cols, uint64_t seed, uint64_t tensor, int64_t row_begin,
                    int64_t row_end, uint8_t* dst);

}  // namespace ferry::synth

#endif  // FERRY_SYNTH_SYNTH_H_
