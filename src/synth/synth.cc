#include "synth/synth.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "base/sha256.h"
#include "gguf/gguf.h"
#include "kernels/ref/quantize.h"
#include "tensor/blocks.h"
#include "tensor/fp16.h"

namespace ferry::synth {
namespace {

constexpr std::string_view kArchs[] = {"llama", "qwen2", "qwen3", "gemma3"};
constexpr std::string_view kShapes[] = {"small", "tinyllama", "llama8b"};

struct TypeEntry {
  std::string_view name;
  DType type;
  uint32_t file_type;  // general.file_type (llama_ftype; Q4_K/Q6_K: the nearest mixes)
};
constexpr TypeEntry kTypes[] = {
    {"f32", DType::kF32, 0},   {"f16", DType::kF16, 1},    {"q8_0", DType::kQ8_0, 7},
    {"q4_0", DType::kQ4_0, 2}, {"q4_k", DType::kQ4_K, 14}, {"q6_k", DType::kQ6_K, 18},
};

const TypeEntry* FindType(DType type) {
  for (const TypeEntry& t : kTypes) {
    if (t.type == type) return &t;
  }
  return nullptr;
}

template <typename Range>
std::string JoinNames(const Range& names) {
  std::string out;
  for (const auto& n : names) out += fmt::format("{}{}", out.empty() ? "" : ", ", n);
  return out;
}

// Hyper-parameters and weight scales of one (arch, shape).
struct Config {
  std::string name;  // general.name
  int64_t n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
  int64_t context = 0;
  float rope_base = 10000.0f;
  float eps = 1e-5f;
  bool tied = false, bias = false, qk_norm = false, post_norms = false;
  int64_t sliding_window = 0;  // 0: no key
  double embd_std = 0.0;       // token_embd's standard deviation (small shapes)
  float out_norm = 1.0f;       // output_norm's factor (small shapes)
  bool fast = false;           // the big shapes: blocks straight from the generator
};

// make_synthetic.py's CONFIGS (n_embd 256, n_ff 512, context 2048, eps 1e-6). With a tied output,
// a token's own embedding raises its own logit by about |e|^2; small embeddings and a larger
// output_norm keep greedy decoding from repeating the last token.
Config SmallConfig(std::string_view arch) {
  Config c;
  c.n_embd = 256;
  c.n_ff = 512;
  c.context = 2048;
  c.eps = 1e-6f;
  c.head_dim = 64;
  c.n_layer = 3;
  c.n_head = 4;
  c.n_head_kv = 2;
  c.rope_base = 1000000.0f;
  c.tied = true;
  if (arch == "llama") {
    c.rope_base = 10000.0f;
    c.tied = false;
    c.embd_std = 0.25;
    c.out_norm = 1.0f;
  } else if (arch == "qwen2") {
    c.bias = true;
    c.embd_std = 0.03;
    c.out_norm = 8.0f;
  } else if (arch == "qwen3") {
    c.n_head = 8;
    c.qk_norm = true;
    c.embd_std = 0.03;
    c.out_norm = 8.0f;
  } else {  // gemma3: layers 0-4 slide over 16 positions, layer 5 attends globally
    c.n_layer = 6;
    c.n_head_kv = 1;
    c.head_dim = 128;
    c.qk_norm = true;
    c.post_norms = true;
    c.sliding_window = 16;
    c.embd_std = 0.015;
    c.out_norm = 12.0f;
  }
  return c;
}

Config BigConfig(std::string_view shape) {
  Config c;
  c.fast = true;
  c.eps = 1e-5f;
  if (shape == "tinyllama") {
    c.name = "TinyLlama-1.1B shape, random weights";
    c.n_layer = 22;
    c.n_embd = 2048;
    c.n_ff = 5632;
    c.n_head = 32;
    c.n_head_kv = 4;
    c.head_dim = 64;
    c.context = 2048;
    c.rope_base = 10000.0f;
  } else {
    c.name = "Llama-3-8B shape, random weights";
    c.n_layer = 32;
    c.n_embd = 4096;
    c.n_ff = 14336;
    c.n_head = 32;
    c.n_head_kv = 8;
    c.head_dim = 128;
    c.context = 8192;
    c.rope_base = 500000.0f;
  }
  return c;
}

// What a tensor's values are.
enum class Kind {
  kMatrix,      // noise x std, stored as the spec's type
  kNorm,        // 1 + 0.1 noise (small shapes), 1 (big shapes); f32
  kBias,        // 0.2 noise; f32
  kOutputNorm,  // (1 + 0.1 noise) x out_norm in f32 arithmetic (small shapes); f32
};

struct PlannedTensor {
  std::string name;
  Kind kind = Kind::kMatrix;
  int64_t rows = 1;  // ne[1]; 1 for a vector
  int64_t cols = 0;  // ne[0]
  bool vector = false;
  DType type = DType::kF32;
  double std = 0.0;  // kMatrix
  uint64_t row_bytes = 0;
  uint64_t key = 0;  // small shapes: the noise key of (seed, name)
};

// The tensors in file order: make_synthetic.py's order for the small shapes, make_tinyllama.py's
// for the big ones.
std::vector<PlannedTensor> PlanTensors(const Config& c, DType type, int64_t n_vocab) {
  std::vector<PlannedTensor> plan;
  const int64_t qd = c.n_head * c.head_dim, kd = c.n_head_kv * c.head_dim;
  auto mat = [&](std::string name, int64_t n_out, int64_t n_in, double std = -1.0) {
    PlannedTensor t;
    t.name = std::move(name);
    t.rows = n_out;
    t.cols = n_in;
    t.type = type;
    // make_synthetic.py: n_in ** -0.5 in float64 (the same libm pow).
    t.std = std >= 0.0 ? std : std::pow(static_cast<double>(n_in), -0.5);
    plan.push_back(std::move(t));
  };
  auto vec = [&](std::string name, int64_t n, Kind kind = Kind::kNorm) {
    PlannedTensor t;
    t.name = std::move(name);
    t.kind = kind;
    t.cols = n;
    t.vector = true;
    plan.push_back(std::move(t));
  };
  if (c.fast) {
    mat("token_embd.weight", n_vocab, c.n_embd);
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const std::string p = fmt::format("blk.{}.", l);
      vec(p + "attn_norm.weight", c.n_embd);
      mat(p + "attn_q.weight", qd, c.n_embd);
      mat(p + "attn_k.weight", kd, c.n_embd);
      mat(p + "attn_v.weight", kd, c.n_embd);
      mat(p + "attn_output.weight", c.n_embd, qd);
      vec(p + "ffn_norm.weight", c.n_embd);
      mat(p + "ffn_gate.weight", c.n_ff, c.n_embd);
      mat(p + "ffn_up.weight", c.n_ff, c.n_embd);
      mat(p + "ffn_down.weight", c.n_embd, c.n_ff);
    }
    vec("output_norm.weight", c.n_embd);
    mat("output.weight", n_vocab, c.n_embd);
  } else {
    mat("token_embd.weight", n_vocab, c.n_embd, c.embd_std);
    vec("output_norm.weight", c.n_embd, Kind::kOutputNorm);
    if (!c.tied) mat("output.weight", n_vocab, c.n_embd, 0.25);
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const std::string p = fmt::format("blk.{}.", l);
      vec(p + "attn_norm.weight", c.n_embd);
      mat(p + "attn_q.weight", qd, c.n_embd);
      mat(p + "attn_k.weight", kd, c.n_embd);
      mat(p + "attn_v.weight", kd, c.n_embd);
      if (c.bias) {
        vec(p + "attn_q.bias", qd, Kind::kBias);
        vec(p + "attn_k.bias", kd, Kind::kBias);
        vec(p + "attn_v.bias", kd, Kind::kBias);
      }
      if (c.qk_norm) {
        vec(p + "attn_q_norm.weight", c.head_dim);
        vec(p + "attn_k_norm.weight", c.head_dim);
      }
      mat(p + "attn_output.weight", c.n_embd, qd);
      if (c.post_norms) vec(p + "post_attention_norm.weight", c.n_embd);
      vec(p + "ffn_norm.weight", c.n_embd);
      mat(p + "ffn_gate.weight", c.n_ff, c.n_embd);
      mat(p + "ffn_up.weight", c.n_ff, c.n_embd);
      mat(p + "ffn_down.weight", c.n_embd, c.n_ff);
      if (c.post_norms) vec(p + "post_ffw_norm.weight", c.n_embd);
    }
  }
  return plan;
}

// SplitMix64's output function of x (its state after the increment is x + golden ratio).
uint64_t SplitMix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The noise key of a small-shape tensor: the first 8 bytes (little-endian) of
// SHA-256("seed:name").
uint64_t NoiseKey(uint64_t seed, const std::string& name) {
  Sha256 h;
  h.Update(fmt::format("{}:{}", seed, name));
  const Sha256::Digest d = h.Finish();
  uint64_t key = 0;
  for (int i = 7; i >= 0; --i) key = (key << 8) | d[static_cast<size_t>(i)];
  return key;
}

// Noise element e of a tensor keyed `key`: zero-mean, unit-variance (Irwin-Hall of 4 24-bit
// uniforms from counters key + 4e .. key + 4e + 3), in float64 as make_synthetic.py's noise().
double Noise(uint64_t key, uint64_t e) {
  constexpr int64_t kMask24 = (int64_t{1} << 24) - 1;
  static const double kScale = std::sqrt(3.0) / static_cast<double>(int64_t{1} << 24);
  int64_t s = 0;
  for (uint64_t j = 0; j < 4; ++j) {
    const uint64_t ctr = key + 4 * e + j;
    s += static_cast<int64_t>(SplitMix64(SplitMix64(ctr) ^ key) >> 40);
  }
  return static_cast<double>(s - 2 * kMask24) * kScale;
}

// Rows [r0, r1) of a small-shape tensor: the exact values, then the reference quantizer.
void FillExactRows(const PlannedTensor& t, float out_norm, int64_t r0, int64_t r1, uint8_t* dst) {
  std::vector<float> row(static_cast<size_t>(t.cols));
  for (int64_t r = r0; r < r1; ++r) {
    const uint64_t first = static_cast<uint64_t>(r) * static_cast<uint64_t>(t.cols);
    for (int64_t i = 0; i < t.cols; ++i) {
      const double z = Noise(t.key, first + static_cast<uint64_t>(i));
      float v = 0.0f;
      switch (t.kind) {
        case Kind::kMatrix:
          v = static_cast<float>(z * t.std);
          break;
        case Kind::kNorm:
          v = static_cast<float>(1.0 + 0.1 * z);
          break;
        case Kind::kBias:
          v = static_cast<float>(z * 0.2);
          break;
        case Kind::kOutputNorm:
          v = static_cast<float>(1.0 + 0.1 * z) * out_norm;
          break;
      }
      row[static_cast<size_t>(i)] = v;
    }
    // Only the six types, on whole blocks (checked when planning): cannot fail.
    (void)QuantizeRow(t.type, row.data(), dst + static_cast<uint64_t>(r - r0) * t.row_bytes,
                      t.cols);
  }
}

// A SplitMix64 stream.
class Rng {
 public:
  explicit Rng(uint64_t state) : state_(state) {}
  uint64_t Next() {
    state_ += 0x9E3779B97F4A7C15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) from the top 24 bits.
  float Uniform() { return static_cast<float>(Next() >> 40) * (1.0f / 16777216.0f); }

 private:
  uint64_t state_;
};

// A block scale: base x uniform [0.75, 1.25) with a random sign, as fp16 (finite: base is far
// below 65504). The sign cancels the mean of types whose quants are not centred (Q4_0's q - 8
// has mean -1/2) across a row's blocks.
uint16_t RandomScale(Rng& rng, float base) {
  const uint64_t r = rng.Next();
  const float d = base * (0.75f + 0.5f * static_cast<float>(r >> 40) * (1.0f / 16777216.0f));
  return FloatToFp16((r & 1) != 0 ? -d : d);
}

void RandomBytes(Rng& rng, uint8_t* dst, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t r = rng.Next();
    std::memcpy(dst + i, &r, std::min<size_t>(8, n - i));
  }
}

}  // namespace

void FillRandomRows(DType type, int64_t cols, uint64_t seed, uint64_t tensor, int64_t row_begin,
                    int64_t row_end, uint8_t* dst) {
  const uint64_t row_bytes = *RowBytes(type, static_cast<uint64_t>(cols));
  const float std = 1.0f / std::sqrt(static_cast<float>(cols));
  const uint64_t tensor_key = SplitMix64(seed ^ SplitMix64(tensor ^ 0x5D1F3A7B2C4E6F80ull));
  // Each scale base makes the block's values have standard deviation `std` (with the mean
  // square of the scale factor uniform in [0.75, 1.25), 1 + 1/48, neglected).
  for (int64_t r = row_begin; r < row_end; ++r) {
    Rng rng(SplitMix64(tensor_key + static_cast<uint64_t>(r)));
    uint8_t* out = dst + static_cast<uint64_t>(r - row_begin) * row_bytes;
    switch (type) {
      case DType::kF32:
      case DType::kF16: {
        // Irwin-Hall of four 16-bit uniforms: variance 4 (2^32 - 1) / 12 around 2 (2^16 - 1).
        const float k = std * std::sqrt(3.0f) / 65536.0f;
        for (int64_t i = 0; i < cols; ++i) {
          const uint64_t x = rng.Next();
          const int64_t s = static_cast<int64_t>((x & 0xffff) + ((x >> 16) & 0xffff) +
                                                 ((x >> 32) & 0xffff) + (x >> 48)) -
                            2 * 65535;
          const float v = static_cast<float>(s) * k;
          if (type == DType::kF32) {
            std::memcpy(out + 4 * i, &v, 4);
          } else {
            const uint16_t h = FloatToFp16(v);
            std::memcpy(out + 2 * i, &h, 2);
          }
        }
        break;
      }
      case DType::kQ4_0: {
        // d (q - 8), q uniform in 0..15: mean square 21.5 d^2.
        const float base = std / std::sqrt(21.5f);
        for (int64_t b = 0; b < cols / kQK4_0; ++b) {
          BlockQ4_0 blk;
          blk.d = RandomScale(rng, base);
          RandomBytes(rng, blk.qs, sizeof(blk.qs));
          std::memcpy(out + b * sizeof(blk), &blk, sizeof(blk));
        }
        break;
      }
      case DType::kQ8_0: {
        // d q, q uniform in -128..127: mean square 5461.5 d^2.
        const float base = std / std::sqrt(5461.5f);
        for (int64_t b = 0; b < cols / kQK4_0; ++b) {
          BlockQ8_0 blk;
          blk.d = RandomScale(rng, base);
          RandomBytes(rng, reinterpret_cast<uint8_t*>(blk.qs), sizeof(blk.qs));
          std::memcpy(out + b * sizeof(blk), &blk, sizeof(blk));
        }
        break;
      }
      case DType::kQ4_K: {
        // d sc q - dmin mn with mn = sc and dmin = 7.5 d: d sc (q - 7.5), sc uniform in 32..63
        // (mean square 2341.5), q uniform in 0..15 (mean square of q - 7.5: 21.25).
        const float base = std / std::sqrt(2341.5f * 21.25f);
        for (int64_t b = 0; b < cols / kQK_K; ++b) {
          BlockQ4_K blk;
          const float d = base * (0.75f + 0.5f * rng.Uniform());
          blk.d = FloatToFp16(d);
          blk.dmin = FloatToFp16(7.5f * d);
          uint8_t sc[8];
          const uint64_t r = rng.Next();
          for (int j = 0; j < 8; ++j) sc[j] = static_cast<uint8_t>(32 + ((r >> (5 * j)) & 31));
          // The 6-bit (scale, min) packing of llama.cpp's get_scale_min_k4.
          for (int j = 0; j < 4; ++j) {
            blk.scales[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
            blk.scales[j + 4] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
            blk.scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((sc[j + 4] & 15) << 4));
          }
          RandomBytes(rng, blk.qs, sizeof(blk.qs));
          std::memcpy(out + b * sizeof(blk), &blk, sizeof(blk));
        }
        break;
      }
      case DType::kQ6_K: {
        // d sc (q - 32), q uniform in 0..63 (mean square 341.5), sc uniform in -127..127
        // (mean square 5418.67).
        const float base = std / std::sqrt(341.5f * 5418.67f);
        for (int64_t b = 0; b < cols / kQK_K; ++b) {
          BlockQ6_K blk;
          RandomBytes(rng, blk.ql, sizeof(blk.ql));
          RandomBytes(rng, blk.qh, sizeof(blk.qh));
          const uint64_t r0 = rng.Next(), r1 = rng.Next();
          for (int j = 0; j < 16; ++j) {
            const uint64_t bits = ((j < 8 ? r0 : r1) >> (8 * (j % 8))) & 0xff;
            blk.scales[j] = static_cast<int8_t>(static_cast<int>(bits % 255) - 127);
          }
          blk.d = RandomScale(rng, base);
          std::memcpy(out + b * sizeof(blk), &blk, sizeof(blk));
        }
        break;
      }
      default:
        break;  // not a type CheckSpec lets through
    }
  }
}

StatusOr<DType> ParseSynthType(std::string_view name) {
  std::string lower(name);
  for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (const TypeEntry& t : kTypes) {
    if (t.name == lower) return t.type;
  }
  std::vector<std::string_view> names;
  for (const TypeEntry& t : kTypes) names.push_back(t.name);
  return InvalidArgumentError("unknown weight type '{}' (known: {})", name, JoinNames(names));
}

std::string_view SynthTypeName(DType type) {
  const TypeEntry* t = FindType(type);
  return t == nullptr ? std::string_view() : t->name;
}

Status CheckSpec(const SynthSpec& spec) {
  if (std::find(std::begin(kArchs), std::end(kArchs), spec.arch) == std::end(kArchs)) {
    return InvalidArgumentError("unknown architecture '{}' (known: {})", spec.arch,
                                JoinNames(kArchs));
  }
  if (std::find(std::begin(kShapes), std::end(kShapes), spec.shape) == std::end(kShapes)) {
    return InvalidArgumentError("unknown shape '{}' (known: {})", spec.shape, JoinNames(kShapes));
  }
  if (spec.shape != "small" && spec.arch != "llama") {
    return InvalidArgumentError(
        "shape '{}' is a llama model; architecture '{}' has only the "
        "'small' shape",
        spec.shape, spec.arch);
  }
  if (FindType(spec.type) == nullptr) {
    std::vector<std::string_view> names;
    for (const TypeEntry& t : kTypes) names.push_back(t.name);
    return InvalidArgumentError("weight type {} is not one that can be generated (known: {})",
                                DTypeLabel(spec.type), JoinNames(names));
  }
  if (spec.n_layer < 0 || spec.n_layer > 4096) {
    return InvalidArgumentError(
        "layer count {} is out of range (0 for the shape's own, or 1 "
        "to 4096)",
        spec.n_layer);
  }
  return Status::Ok();
}

namespace {

// Writes the file sequentially; the generator fills one buffer while the other is written.
class FileSink {
 public:
  FileSink(std::FILE* f, std::string path) : f_(f), path_(std::move(path)) {}
  ~FileSink() { Join(); }

  // Writes `bytes` from `data` on a background thread (large writes) or now; the caller must
  // leave the bytes alone until the next Write or Finish. Returns an earlier write's error.
  Status Write(const uint8_t* data, size_t bytes) {
    Join();
    FERRY_RETURN_IF_ERROR(status_);
    if (bytes < (size_t{1} << 20)) {
      status_ = WriteNow(data, bytes);
      return status_;
    }
    writer_ = std::thread([this, data, bytes] { status_ = WriteNow(data, bytes); });
    return Status::Ok();
  }
  Status Finish() {
    Join();
    return status_;
  }
  uint64_t written() const { return written_; }

 private:
  void Join() {
    if (writer_.joinable()) writer_.join();
  }
  Status WriteNow(const uint8_t* data, size_t bytes) {
    const size_t n = bytes == 0 ? 0 : std::fwrite(data, 1, bytes, f_);
    written_ += n;
    if (n != bytes) {
      return IoError("{}: write failed after {} bytes: {}", path_, written_, std::strerror(errno));
    }
    return Status::Ok();
  }

  std::FILE* f_;
  std::string path_;
  std::thread writer_;
  Status status_;
  uint64_t written_ = 0;
};

// Runs fill(r0, r1) over rows [0, rows) split into `threads` contiguous ranges.
template <typename Fill>
void ParallelRows(int64_t rows, int threads, const Fill& fill) {
  const int64_t n = std::min<int64_t>(threads, rows);
  if (n <= 1) {
    fill(0, rows);
    return;
  }
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(n - 1));
  for (int64_t i = 1; i < n; ++i) {
    workers.emplace_back([&fill, i, n, rows] { fill(rows * i / n, rows * (i + 1) / n); });
  }
  fill(0, rows / n);
  for (std::thread& w : workers) w.join();
}

Status WriteModel(const SynthSpec& spec, const gguf::GgufFile& vocab, std::FILE* f,
                  const std::string& out_path, int threads) {
  // The vocabulary.
  std::vector<const gguf::KeyValue*> tokenizer_keys;
  int64_t n_vocab = -1;
  for (const gguf::KeyValue& kv : vocab.metadata()) {
    if (!kv.key.starts_with("tokenizer.")) continue;
    tokenizer_keys.push_back(&kv);
    if (kv.key == "tokenizer.ggml.tokens") {
      StatusOr<const gguf::Array*> tokens = kv.value.AsArray();
      if (!tokens.ok()) return tokens.status().WithPrefix(vocab.name() + ": " + kv.key);
      n_vocab = static_cast<int64_t>((*tokens)->size());
    }
  }
  if (n_vocab <= 0) {
    return NotFoundError("{}: no tokens (tokenizer.ggml.tokens) to copy the vocabulary from",
                         vocab.name());
  }

  Config c = spec.shape == "small" ? SmallConfig(spec.arch) : BigConfig(spec.shape);
  const TypeEntry& type = *FindType(spec.type);
  if (c.name.empty()) c.name = fmt::format("synthetic-{}-{}", spec.arch, type.name);
  if (spec.n_layer > 0) c.n_layer = spec.n_layer;
  const std::string a = spec.arch + ".";
  gguf::GgufWriter w;
  auto u32 = [](int64_t v) { return gguf::Value(static_cast<uint32_t>(v)); };
  std::vector<std::pair<std::string, gguf::Value>> keys;
  keys.emplace_back("general.architecture", spec.arch);
  keys.emplace_back("general.name", c.name);
  if (!c.fast) keys.emplace_back("general.file_type", u32(type.file_type));
  keys.emplace_back(a + "context_length", u32(c.context));
  keys.emplace_back(a + "embedding_length", u32(c.n_embd));
  keys.emplace_back(a + "block_count", u32(c.n_layer));
  keys.emplace_back(a + "feed_forward_length", u32(c.n_ff));
  keys.emplace_back(a + "attention.head_count", u32(c.n_head));
  keys.emplace_back(a + "attention.head_count_kv", u32(c.n_head_kv));
  if (!c.fast) {
    keys.emplace_back(a + "attention.key_length", u32(c.head_dim));
    keys.emplace_back(a + "attention.value_length", u32(c.head_dim));
  }
  keys.emplace_back(a + "rope.dimension_count", u32(c.head_dim));
  keys.emplace_back(a + "rope.freq_base", c.rope_base);
  keys.emplace_back(a + "attention.layer_norm_rms_epsilon", c.eps);
  if (c.sliding_window > 0)
    keys.emplace_back(a + "attention.sliding_window", u32(c.sliding_window));
  if (c.fast) keys.emplace_back("general.file_type", u32(type.file_type));
  for (auto& [key, value] : keys) FERRY_RETURN_IF_ERROR(w.AddMetadata(key, std::move(value)));
  for (const gguf::KeyValue* kv : tokenizer_keys) {
    FERRY_RETURN_IF_ERROR(w.AddMetadata(kv->key, kv->value));
  }
  if (c.fast) FERRY_RETURN_IF_ERROR(w.AddMetadata(a + "vocab_size", u32(n_vocab)));

  std::vector<PlannedTensor> plan = PlanTensors(c, spec.type, n_vocab);
  for (PlannedTensor& t : plan) {
    std::vector<uint64_t> dims = {static_cast<uint64_t>(t.cols)};
    if (!t.vector) dims.push_back(static_cast<uint64_t>(t.rows));
    FERRY_RETURN_IF_ERROR(w.AddTensorInfo(t.name, dims, t.type).status());
    t.row_bytes = *RowBytes(t.type, static_cast<uint64_t>(t.cols));
    if (!c.fast) t.key = NoiseKey(spec.seed, t.name);
  }
  FERRY_ASSIGN_OR_RETURN(std::vector<uint8_t> header, w.SerializeHeader());
  FileSink sink(f, out_path);
  FERRY_RETURN_IF_ERROR(sink.Write(header.data(), header.size()));

  // Each tensor in chunks of whole rows (about 32 MiB), generated on `threads` threads into one
  // buffer while the other is written; the last chunk carries the tensor's padding.
  const uint64_t align = w.alignment();
  constexpr uint64_t kChunkBytes = uint64_t{32} << 20;
  std::vector<uint8_t> buffers[2];
  int which = 0;
  for (size_t ti = 0; ti < plan.size(); ++ti) {
    const PlannedTensor& t = plan[ti];
    const int64_t chunk_rows =
        std::max<int64_t>(1, static_cast<int64_t>(kChunkBytes / t.row_bytes));
    for (int64_t r0 = 0; r0 < t.rows; r0 += chunk_rows) {
      const int64_t r1 = std::min(t.rows, r0 + chunk_rows);
      const uint64_t bytes = static_cast<uint64_t>(r1 - r0) * t.row_bytes;
      const uint64_t padded = r1 == t.rows ? (bytes + align - 1) / align * align : bytes;
      std::vector<uint8_t>& buf = buffers[which];
      which ^= 1;
      buf.assign(padded, 0);
      uint8_t* dst = buf.data();
      const int n_threads = bytes < (uint64_t{1} << 18) ? 1 : threads;
      if (t.vector && c.fast) {
        const float one = 1.0f;
        for (int64_t i = 0; i < t.cols; ++i) std::memcpy(dst + 4 * i, &one, 4);
      } else if (c.fast) {
        ParallelRows(r1 - r0, n_threads, [&](int64_t a0, int64_t a1) {
          FillRandomRows(t.type, t.cols, spec.seed, ti, r0 + a0, r0 + a1,
                         dst + static_cast<uint64_t>(a0) * t.row_bytes);
        });
      } else {
        ParallelRows(r1 - r0, n_threads, [&](int64_t a0, int64_t a1) {
          FillExactRows(t, c.out_norm, r0 + a0, r0 + a1,
                        dst + static_cast<uint64_t>(a0) * t.row_bytes);
        });
      }
      FERRY_RETURN_IF_ERROR(sink.Write(dst, padded));
    }
  }
  return sink.Finish();
}

}  // namespace

Status WriteSyntheticModel(const SynthSpec& spec, const std::string& vocab_gguf_path,
                           const std::string& out_path, int threads) {
  FERRY_RETURN_IF_ERROR(CheckSpec(spec));
  if (threads < 1 || threads > 1024) {
    return InvalidArgumentError("thread count {} is out of range (1 to 1024)", threads);
  }
  if (out_path.empty()) return InvalidArgumentError("no output path");
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> vocab,
                         gguf::GgufFile::Open(vocab_gguf_path));
  const std::string partial = out_path + ".partial";
  std::FILE* f = std::fopen(partial.c_str(), "wb");
  if (f == nullptr) {
    return IoError("{}: cannot create {}: {}", out_path, partial, std::strerror(errno));
  }
  Status s = WriteModel(spec, *vocab, f, out_path, threads);
  if (std::fclose(f) != 0 && s.ok()) {
    s = IoError("{}: write failed: {}", out_path, std::strerror(errno));
  }
  if (s.ok() && std::rename(partial.c_str(), out_path.c_str()) != 0) {
    s = IoError("{}: cannot rename {} to it: {}", out_path, partial, std::strerror(errno));
  }
  if (!s.ok()) std::remove(partial.c_str());
  return s;
}

}  // namespace ferry::synth
