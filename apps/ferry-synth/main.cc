// ferry-synth: writes a random-weight GGUF model (src/synth/synth.h), for benchmarks and checks
// on machines that have ferry's binaries but no Python.
//
//   ferry-synth --arch llama --shape llama8b --type q4_0 --vocab VOCAB.gguf --out FILE
//               [--seed N] [--threads N] [--layers N]
//
// Prints one line (the file, its size and the time taken); exit 1 on a bad argument or an
// error, with the reason on stderr.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "base/status.h"
#include "synth/synth.h"

namespace {

int Main(int argc, char** argv) {
  CLI::App app{"ferry-synth: write a GGUF model with random weights", "ferry-synth"};
  app.option_defaults()->always_capture_default();
  ferry::synth::SynthSpec spec;
  std::string type_name, vocab, out;
  const unsigned hw = std::thread::hardware_concurrency();
  int threads = hw == 0 ? 1 : static_cast<int>(hw);
  app.add_option("--arch", spec.arch, "Architecture: llama, qwen2, qwen3, gemma3")->required();
  app.add_option("--shape", spec.shape,
                 "Shape: small (any arch), tinyllama or llama8b (llama only)")
      ->required();
  app.add_option("--type", type_name, "Type of every matrix: f32, f16, q8_0, q4_0, q4_k, q6_k")
      ->required();
  app.add_option("--vocab", vocab, "GGUF file to copy the tokenizer (tokenizer.*) from")
      ->required();
  app.add_option("--out", out, "Output GGUF file")->required();
  app.add_option("--seed", spec.seed, "Random seed");
  app.add_option("--threads", threads, "Threads generating the weights");
  app.add_option("--layers", spec.n_layer, "Layer count instead of the shape's (0: the shape's)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "ferry-synth: %s\nRun 'ferry-synth --help' for usage.\n", e.what());
    return 1;
  }
  ferry::StatusOr<ferry::DType> type = ferry::synth::ParseSynthType(type_name);
  if (!type.ok()) {
    std::fprintf(stderr, "ferry-synth: --type: %s\n", type.status().message().c_str());
    return 1;
  }
  spec.type = *type;
  const auto start = std::chrono::steady_clock::now();
  const ferry::Status s = ferry::synth::WriteSyntheticModel(spec, vocab, out, threads);
  if (!s.ok()) {
    std::fprintf(stderr, "ferry-synth: %s\n", s.message().c_str());
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::error_code ec;
  const uintmax_t bytes = std::filesystem::file_size(out, ec);
  std::printf("%s\n", fmt::format("ferry-synth: wrote {} ({} {} {}, {:.1f} MiB) in {:.1f} s", out,
                                  spec.arch, spec.shape, type_name,
                                  ec ? 0.0 : static_cast<double>(bytes) / (1 << 20), seconds)
                          .c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
