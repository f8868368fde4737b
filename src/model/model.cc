#include "model/model.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

#include "base/log.h"
#include "kernels/cpu/matmul.h"
#include "model/cuda_layers.h"
#include "model/scratch.h"
#include "tensor/blocks.h"

namespace ferry {
namespace {

// The registry: architectures ferry can run, by general.architecture.
struct ArchDef {
  std::string_view name;
  // Reads arch-specific hyper-parameters and features into hp (common ones already read).
  Status (*configure)(const gguf::GgufFile& file, HParams* hp);
};

constexpr ArchDef kArchitectures[] = {
    {"llama", &ConfigureLlama},
    {"qwen2", &ConfigureQwen2},
    {"qwen3", &ConfigureQwen3},
    {"gemma3", &ConfigureGemma3},
};

// Reads an unsigned hyper-parameter; `required` ones give NotFound when absent.
Status ReadInt(const gguf::GgufFile& f, const std::string& key, bool required, int64_t* out) {
  const gguf::Value* v = f.Find(key);
  if (v == nullptr) {
    if (required) return NotFoundError("{}: missing metadata key '{}'", f.name(), key);
    return Status::Ok();
  }
  const gguf::Value* scalar = v;
  gguf::Value first;
  if (v->type() == gguf::ValueType::kArray) {
    // Per-layer values: ferry requires them to be equal for now.
    const gguf::Array& a = std::get<gguf::Array>(v->data);
    if (a.empty()) return DataLossError("{}: '{}' is an empty array", f.name(), key);
    first = a.at(0);
    for (size_t i = 1; i < a.size(); ++i) {
      if (!(a.at(i) == first)) {
        return UnimplementedError("{}: '{}' differs between layers, which ferry does not support",
                                  f.name(), key);
      }
    }
    scalar = &first;
  }
  auto u = scalar->AsUint();
  if (!u.ok()) return u.status().WithPrefix(fmt::format("{}: {}", f.name(), key));
  if (*u > (uint64_t{1} << 40)) {
    return OutOfRangeError("{}: '{}' = {} is absurdly large", f.name(), key, *u);
  }
  *out = static_cast<int64_t>(*u);
  return Status::Ok();
}

Status ReadFloat(const gguf::GgufFile& f, const std::string& key, bool required, float* out) {
  const gguf::Value* v = f.Find(key);
  if (v == nullptr) {
    if (required) return NotFoundError("{}: missing metadata key '{}'", f.name(), key);
    return Status::Ok();
  }
  auto d = v->AsDouble();
  if (!d.ok()) return d.status().WithPrefix(fmt::format("{}: {}", f.name(), key));
  if (!std::isfinite(*d)) return DataLossError("{}: '{}' is not finite", f.name(), key);
  *out = static_cast<float>(*d);
  return Status::Ok();
}

// RoPE scaling, as llama.cpp (llama-cpp-python 0.3.36, ggml 0.25.3) sets up ggml's rope_ext from
// the metadata (its context parameters rope_freq_scale, yarn_ext_factor, yarn_attn_factor,
// yarn_beta_fast/slow and n_ctx_orig_yarn); checked by dumping the parameters of its ROPE nodes:
// - rope.scaling.type: none, linear (the default) or yarn; others (longrope, ...) Unimplemented.
// - rope.scaling.factor F (legacy rope.scale_linear) gives freq_scale s = 1/F, except for none.
// - rope.scaling.attn_factor (default 1) multiplies cos/sin for every type, not only yarn.
// - yarn: ext_factor 1, n_ctx_orig = rope.scaling.original_context_length (default
//   context_length), beta_fast 32, beta_slow 1. llama.cpp ignores rope.scaling.yarn_beta_fast /
//   _slow (checked for llama and qwen2) and rope.scaling.yarn_ext_factor / yarn_attn_factor /
//   yarn_log_multiplier (checked for qwen2): a file carrying them still gets 32, 1, ext_factor 1
//   and the attn_factor below. So ferry does not read them.
// - yarn magnitude: ggml's rope multiplies cos/sin by attn_factor * (1 + 0.1 ln(1/s)) whenever
//   ext_factor != 0. Since llama.cpp PR #17945 (and #18006), the context divides that term out in
//   advance and multiplies in HF's get_mscale(F) = F > 1 ? 1 + 0.1 ln F : 1 instead, so the
//   attn_factor handed to ggml is attn_factor * get_mscale(F) / (1 + 0.1 ln F): exactly
//   attn_factor for F = 4, 1.0745 * attn_factor for F = 0.5 (both seen in the ROPE nodes). The
//   net magnitude is attn_factor * get_mscale(F); older llama.cpp gave attn_factor *
//   (1 + 0.1 ln F) for every F, which differs only for F < 1.
Status ReadRopeScaling(const gguf::GgufFile& f, const std::string& a, HParams* hp) {
  std::string scaling = "linear";
  if (const gguf::Value* v = f.Find(a + "rope.scaling.type")) {
    auto s = v->AsString();
    if (!s.ok()) return s.status().WithPrefix(f.name());
    scaling = std::string(*s);
  }
  float factor = 1.0f;
  FERRY_RETURN_IF_ERROR(ReadFloat(f, a + "rope.scale_linear", false, &factor));
  FERRY_RETURN_IF_ERROR(ReadFloat(f, a + "rope.scaling.factor", false, &factor));
  float attn_factor = 1.0f;
  FERRY_RETURN_IF_ERROR(ReadFloat(f, a + "rope.scaling.attn_factor", false, &attn_factor));
  hp->rope_n_ctx_orig = hp->n_ctx_train;
  FERRY_RETURN_IF_ERROR(
      ReadInt(f, a + "rope.scaling.original_context_length", false, &hp->rope_n_ctx_orig));
  if (scaling == "none") {
    factor = 1.0f;
  } else if (scaling != "linear" && scaling != "yarn") {
    return UnimplementedError(
        "{}: RoPE scaling '{}' is not supported (ferry runs none, linear "
        "and yarn)",
        f.name(), scaling);
  }
  if (!(factor > 0.0f)) return DataLossError("{}: RoPE scaling factor {} <= 0", f.name(), factor);
  hp->rope_freq_scale = 1.0f / factor;
  hp->rope_ext_factor = 0.0f;
  hp->rope_attn_factor = attn_factor;
  if (scaling == "yarn") {
    if (hp->rope_n_ctx_orig <= 0) {
      return DataLossError("{}: YaRN original context length {} <= 0", f.name(),
                           hp->rope_n_ctx_orig);
    }
    if (!(hp->rope_base > 1.0f)) {
      return DataLossError("{}: YaRN needs a RoPE base above 1, not {}", f.name(), hp->rope_base);
    }
    // ggml's own YaRN magnitude, 1 + 0.1 ln(1/s), which llama.cpp divides out in advance.
    const float ggml_mscale = 1.0f + 0.1f * std::log(factor);
    if (!(ggml_mscale > 0.0f)) {
      return DataLossError("{}: YaRN scaling factor {} is too small", f.name(), factor);
    }
    const float get_mscale = factor > 1.0f ? 1.0f + 0.1f * std::log(factor) : 1.0f;
    hp->rope_ext_factor = 1.0f;
    hp->rope_attn_factor *= get_mscale * (1.0f / ggml_mscale);
  }
  return Status::Ok();
}

Status ReadCommon(const gguf::GgufFile& f, HParams* hp) {
  const std::string a = hp->arch + ".";
  FERRY_RETURN_IF_ERROR(ReadInt(f, a + "context_length", true, &hp->n_ctx_train));
  FERRY_RETURN_IF_ERROR(ReadInt(f, a + "embedding_length", true, &hp->n_embd));
  FERRY_RETURN_IF_ERROR(ReadInt(f, a + "block_count", true, &hp->n_layer));
  FERRY_RETURN_IF_ERROR(ReadInt(f, a + "feed_forward_length", true, &hp->n_ff));
  FERRY_RETURN_IF_ERROR(ReadInt(f, a + "attention.head_count", true, &hp->n_head));
  hp->n_head_kv = hp->n_head;
  FERRY_RETURN_IF_ERROR(ReadInt(f, a + "attention.head_count_kv", false, &hp->n_head_kv));
  if (hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 ||
      hp->n_ff <= 0) {
    return DataLossError(
        "{}: hyper-parameters must be positive (embedding {}, layers {}, heads "
        "{}, kv heads {}, ffn {})",
        f.name(), hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv, hp->n_ff);
  }
  // Every layer has tensors of its own, so a file cannot hold more layers than tensors: checked
  // before anything per layer is reserved (a patched block_count must not allocate gigabytes).
  if (static_cast<uint64_t>(hp->n_layer) > f.tensors().size()) {
    return DataLossError("{}: '{}block_count' = {} layers, but the file holds only {} tensors",
                         f.name(), a, hp->n_layer, f.tensors().size());
  }
  if (hp->n_head % hp->n_head_kv != 0) {
    return DataLossError("{}: {} heads is not a multiple of {} KV heads", f.name(), hp->n_head,
                         hp->n_head_kv);
  }
  hp->head_dim_k = hp->n_embd / hp->n_head;
  hp->head_dim_v = hp->head_dim_k;
  FERRY_RETURN_IF_ERROR(ReadInt(f, a + "attention.key_length", false, &hp->head_dim_k));
  FERRY_RETURN_IF_ERROR(ReadInt(f, a + "attention.value_length", false, &hp->head_dim_v));
  hp->n_rot = hp->head_dim_k;
  FERRY_RETURN_IF_ERROR(ReadInt(f, a + "rope.dimension_count", false, &hp->n_rot));
  if (hp->n_rot <= 0 || hp->n_rot > hp->head_dim_k || hp->n_rot % 2 != 0) {
    return DataLossError("{}: rope dimension {} does not fit head size {}", f.name(), hp->n_rot,
                         hp->head_dim_k);
  }
  FERRY_RETURN_IF_ERROR(ReadFloat(f, a + "attention.layer_norm_rms_epsilon", true, &hp->norm_eps));
  FERRY_RETURN_IF_ERROR(ReadFloat(f, a + "rope.freq_base", false, &hp->rope_base));
  FERRY_RETURN_IF_ERROR(ReadRopeScaling(f, a, hp));
  FERRY_RETURN_IF_ERROR(
      ReadFloat(f, a + "final_logit_softcapping", false, &hp->final_logit_softcap));
  FERRY_RETURN_IF_ERROR(ReadInt(f, a + "pooling_type", false, &hp->pooling_type));
  hp->swa_window.assign(static_cast<size_t>(hp->n_layer), 0);
  // Vocabulary size: the tokenizer's token list, else {arch}.vocab_size, else token_embd rows.
  if (f.Find("tokenizer.ggml.tokens")) {
    FERRY_ASSIGN_OR_RETURN(const gguf::Array* tokens, f.GetArray("tokenizer.ggml.tokens"));
    hp->n_vocab = static_cast<int64_t>(tokens->size());
  } else {
    FERRY_RETURN_IF_ERROR(ReadInt(f, a + "vocab_size", false, &hp->n_vocab));
  }
  return Status::Ok();
}

class Binder {
 public:
  Binder(const gguf::GgufFile& f) : f_(f) {}

  // Binds `name` and checks its dims equal `dims` (ne order). Absent optional tensors stay
  // unbound (data == nullptr).
  Status Bind(const std::string& name, std::vector<int64_t> dims, bool required,
              WeightMatrix* out) {
    const gguf::TensorInfo* t = f_.FindTensor(name);
    if (t == nullptr) {
      if (required) return NotFoundError("{}: missing tensor '{}'", f_.name(), name);
      return Status::Ok();
    }
    bool same = t->dims.size() == dims.size() ||
                (t->dims.size() < dims.size() && dims.back() == 1 && t->dims.size() == 1);
    for (size_t i = 0; same && i < t->dims.size(); ++i) {
      same = static_cast<int64_t>(t->dims[i]) == dims[i];
    }
    if (!same) {
      std::string want = "[", got = "[";
      for (size_t i = 0; i < dims.size(); ++i) want += fmt::format("{}{}", i ? ", " : "", dims[i]);
      for (size_t i = 0; i < t->dims.size(); ++i) {
        got += fmt::format("{}{}", i ? ", " : "", t->dims[i]);
      }
      return DataLossError("{}: tensor '{}' has shape {}] but the hyper-parameters say {}]",
                           f_.name(), name, got, want);
    }
    if (!Traits(t->type).can_dequantize) {
      return UnimplementedError("{}: tensor '{}' has type {}, which ferry cannot compute with yet",
                                f_.name(), name, DTypeName(t->type));
    }
    out->type = t->type;
    out->data = f_.TensorData(*t).data();
    out->cols = static_cast<int64_t>(t->dims.empty() ? 1 : t->dims[0]);
    out->rows = 1;
    for (size_t i = 1; i < t->dims.size(); ++i) out->rows *= static_cast<int64_t>(t->dims[i]);
    out->row_bytes = *RowBytes(t->type, static_cast<uint64_t>(out->cols));
    return Status::Ok();
  }

 private:
  const gguf::GgufFile& f_;
};

Status BindWeights(const gguf::GgufFile& f, const HParams& hp, ModelWeights* w) {
  Binder b(f);
  const int64_t e = hp.n_embd, qd = hp.n_head * hp.head_dim_k, kd = hp.n_head_kv * hp.head_dim_k,
                vd = hp.n_head_kv * hp.head_dim_v;
  FERRY_RETURN_IF_ERROR(b.Bind("token_embd.weight", {e, hp.n_vocab}, true, &w->token_embd));
  FERRY_RETURN_IF_ERROR(b.Bind("output_norm.weight", {e}, true, &w->output_norm));
  FERRY_RETURN_IF_ERROR(b.Bind("output.weight", {e, hp.n_vocab}, false, &w->output));
  FERRY_RETURN_IF_ERROR(b.Bind("rope_freqs.weight", {hp.n_rot / 2}, false, &w->rope_freqs));
  if (w->rope_freqs.present() && w->rope_freqs.type != DType::kF32) {
    return UnimplementedError("{}: rope_freqs must be f32", f.name());
  }
  w->layers.resize(static_cast<size_t>(hp.n_layer));
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    LayerWeights& L = w->layers[static_cast<size_t>(l)];
    const std::string p = fmt::format("blk.{}.", l);
    FERRY_RETURN_IF_ERROR(b.Bind(p + "attn_norm.weight", {e}, true, &L.attn_norm));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "attn_q.weight", {e, qd}, true, &L.wq));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "attn_k.weight", {e, kd}, true, &L.wk));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "attn_v.weight", {e, vd}, true, &L.wv));
    FERRY_RETURN_IF_ERROR(
        b.Bind(p + "attn_output.weight", {hp.n_head * hp.head_dim_v, e}, true, &L.wo));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "attn_q.bias", {qd}, hp.qkv_bias, &L.bq));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "attn_k.bias", {kd}, hp.qkv_bias, &L.bk));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "attn_v.bias", {vd}, hp.qkv_bias, &L.bv));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "attn_output.bias", {e}, false, &L.bo));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "attn_q_norm.weight", {hp.head_dim_k}, hp.qk_norm, &L.q_norm));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "attn_k_norm.weight", {hp.head_dim_k}, hp.qk_norm, &L.k_norm));
    FERRY_RETURN_IF_ERROR(
        b.Bind(p + "post_attention_norm.weight", {e}, hp.post_norms, &L.post_attn_norm));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "ffn_norm.weight", {e}, true, &L.ffn_norm));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "ffn_gate.weight", {e, hp.n_ff}, true, &L.ffn_gate));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "ffn_up.weight", {e, hp.n_ff}, true, &L.ffn_up));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "ffn_down.weight", {hp.n_ff, e}, true, &L.ffn_down));
    FERRY_RETURN_IF_ERROR(b.Bind(p + "post_ffw_norm.weight", {e}, hp.post_norms, &L.post_ffw_norm));
    // Norms and biases are used as plain f32 vectors by the forward pass.
    for (const WeightMatrix* v : {&L.attn_norm, &L.bq, &L.bk, &L.bv, &L.bo, &L.q_norm, &L.k_norm,
                                  &L.post_attn_norm, &L.ffn_norm, &L.post_ffw_norm}) {
      if (v->present() && v->type != DType::kF32) {
        return UnimplementedError("{}: {}norm/bias tensors must be f32, found {}", f.name(), p,
                                  DTypeName(v->type));
      }
    }
  }
  if (w->output_norm.type != DType::kF32) {
    return UnimplementedError("{}: output_norm must be f32", f.name());
  }
  return Status::Ok();
}

}  // namespace

void Model::FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

namespace {

// Lets the kernel drop the whole pages inside [data, data + bytes) of a read-only file mapping
// from this process (a hint: the file is unchanged, and a later read maps them again).
void ReleaseMappedPages(const void* data, uint64_t bytes) {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (begin + page - 1) / page * page;
  const uintptr_t last = (begin + bytes) / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

}  // namespace

Status Model::PackWeights() {
  if (!packed_.empty()) return Status::Ok();
  std::vector<WeightMatrix*> matrices;
  // Only what the CPU multiplies: the layers before the first GPU layer, and the output when no
  // GPU runs it (UseCuda first, then PackWeights).
  const int64_t cpu_layers = first_gpu_layer();
  for (int64_t l = 0; l < cpu_layers; ++l) {
    for (WeightMatrix* m : w_.layers[static_cast<size_t>(l)].Matrices()) matrices.push_back(m);
  }
  // The output projection (token_embd itself when tied: its rows are still looked up from
  // the mapping for the input embedding).
  if (cuda_ == nullptr) matrices.push_back(w_.output.present() ? &w_.output : &w_.token_embd);
  std::vector<PackedCopy> copies;
  std::vector<WeightMatrix*> packed_matrices;
  for (WeightMatrix* m : matrices) {
    if (!m->present() || m->packed != nullptr || !MatMulUsesPackedWeights(m->type) ||
        !CanPackWeightRows(m->type, m->rows, m->cols)) {
      continue;
    }
    const uint64_t bytes = static_cast<uint64_t>(m->rows) * m->row_bytes;
    PackedCopy c;
    c.mapped = m->data;
    c.bytes = bytes;
    c.data.reset(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));
    if (c.data == nullptr) {
      return ResourceExhaustedError("{}: no memory for a packed copy of {} bytes", file_->name(),
                                    bytes);
    }
    // In chunks of whole row groups (a packed chunk has the bytes of its rows, at the same
    // offset), each chunk's mapped pages released once copied: memory never holds a whole
    // tensor twice.
    const int64_t chunk_rows = kPackRows * 1024;
    for (int64_t r0 = 0; r0 < m->rows; r0 += chunk_rows) {
      WeightMatrix part = *m;
      part.data = m->Row(r0);
      part.rows = std::min(chunk_rows, m->rows - r0);
      const uint64_t offset = static_cast<uint64_t>(r0) * m->row_bytes;
      const uint64_t part_bytes = static_cast<uint64_t>(part.rows) * m->row_bytes;
      FERRY_RETURN_IF_ERROR(
          PackWeightRows(part, std::span<uint8_t>(c.data.get() + offset, part_bytes)));
      ReleaseMappedPages(part.data, part_bytes);
    }
    copies.push_back(std::move(c));
    packed_matrices.push_back(m);
  }
  for (size_t i = 0; i < copies.size(); ++i) {
    packed_matrices[i]->packed = copies[i].data.get();
  }
  packed_ = std::move(copies);
  return Status::Ok();
}

std::span<const uint8_t> Model::PackedCopyOf(const void* mapped) const {
  for (const PackedCopy& c : packed_) {
    if (c.mapped == mapped) return {c.data.get(), c.bytes};
  }
  return {};
}

uint64_t Model::packed_bytes() const {
  uint64_t n = 0;
  for (const PackedCopy& c : packed_) n += c.bytes;
  return n;
}

StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path) {
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::Open(path));
  return FromFile(std::move(file));
}

StatusOr<std::unique_ptr<Model>> Model::FromFile(std::unique_ptr<gguf::GgufFile> file) {
  std::unique_ptr<Model> m(new Model());
  const gguf::GgufFile& f = *file;
  if (f.Find("general.architecture") == nullptr) {
    return NotFoundError("{}: no general.architecture key; not a model file", f.name());
  }
  FERRY_ASSIGN_OR_RETURN(std::string_view arch, f.GetString("general.architecture"));
  const ArchDef* def = nullptr;
  std::string known;
  for (const ArchDef& d : kArchitectures) {
    if (d.name == arch) def = &d;
    known += fmt::format("{}{}", known.empty() ? "" : ", ", d.name);
  }
  if (def == nullptr) {
    return UnimplementedError("{}: architecture '{}' is not supported (ferry runs: {})", f.name(),
                              arch, known);
  }
  m->hp_.arch = std::string(arch);
  FERRY_RETURN_IF_ERROR(ReadCommon(f, &m->hp_));
  FERRY_RETURN_IF_ERROR(def->configure(f, &m->hp_));
  if (m->hp_.n_vocab <= 0) {
    // No tokenizer in the file: take the vocabulary from the embedding matrix.
    const gguf::TensorInfo* t = f.FindTensor("token_embd.weight");
    if (t == nullptr || t->dims.size() != 2) {
      return NotFoundError("{}: missing tensor 'token_embd.weight'", f.name());
    }
    m->hp_.n_vocab = static_cast<int64_t>(t->dims[1]);
  }
  FERRY_RETURN_IF_ERROR(BindWeights(f, m->hp_, &m->w_));
  // Special token ids must lie inside the vocabulary.
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
                          "tokenizer.ggml.eot_token_id"}) {
    if (const gguf::Value* v = f.Find(key)) {
      auto id = v->AsUint();
      // 0xFFFFFFFF (-1 as u32) means "none" in converted files.
      if (id.ok() && *id != 0xFFFFFFFFull && *id >= static_cast<uint64_t>(m->hp_.n_vocab)) {
        return DataLossError("{}: {} = {} is outside the vocabulary of {} tokens", f.name(), key,
                             *id, m->hp_.n_vocab);
      }
    }
  }
  m->file_ = std::move(file);
  return m;
}

KvCacheOptions Model::KvOptions(DType type, int64_t num_ctx, int32_t num_seqs,
                                int64_t max_batch) const {
  return KvOptionsForLayers(type, hp_.n_layer, hp_.n_head_kv, hp_.head_dim_k, hp_.head_dim_v,
                            hp_.swa_window, num_ctx, num_seqs, num_seqs, max_batch);
}

namespace {

// Where a block type keeps its fp16 scale fields: block bytes and the fields' byte offsets.
struct ScaleLayout {
  size_t block_bytes = 0;
  size_t offsets[2] = {0, 0};
  int n_offsets = 0;
};

std::optional<ScaleLayout> ScaleLayoutOf(DType type) {
  auto layout = [](size_t bytes, std::initializer_list<size_t> offs) {
    ScaleLayout l;
    l.block_bytes = bytes;
    for (size_t o : offs) l.offsets[l.n_offsets++] = o;
    return l;
  };
  switch (type) {
    case DType::kQ4_0:
      return layout(sizeof(BlockQ4_0), {offsetof(BlockQ4_0, d)});
    case DType::kQ4_1:
      return layout(sizeof(BlockQ4_1), {offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)});
    case DType::kQ5_0:
      return layout(sizeof(BlockQ5_0), {offsetof(BlockQ5_0, d)});
    case DType::kQ5_1:
      return layout(sizeof(BlockQ5_1), {offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)});
    case DType::kQ8_0:
      return layout(sizeof(BlockQ8_0), {offsetof(BlockQ8_0, d)});
    case DType::kQ2_K:
      return layout(sizeof(BlockQ2_K), {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)});
    case DType::kQ3_K:
      return layout(sizeof(BlockQ3_K), {offsetof(BlockQ3_K, d)});
    case DType::kQ4_K:
      return layout(sizeof(BlockQ4_K), {offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)});
    case DType::kQ5_K:
      return layout(sizeof(BlockQ5_K), {offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)});
    case DType::kQ6_K:
      return layout(sizeof(BlockQ6_K), {offsetof(BlockQ6_K, d)});
    default:
      return std::nullopt;
  }
}

// Index of the first unit in [begin, end) whose value is not finite, or -1. Units: one float
// (F32), one 16-bit value (F16, BF16) or one block (the others: its scale fields).
int64_t FirstNonFinite(DType type, const uint8_t* data, int64_t begin, int64_t end) {
  auto load16 = [&](size_t at) {
    uint16_t h;
    std::memcpy(&h, data + at, sizeof(h));
    return h;
  };
  switch (type) {
    case DType::kF32:
      for (int64_t i = begin; i < end; ++i) {
        uint32_t u;
        std::memcpy(&u, data + 4 * i, sizeof(u));
        if ((u & 0x7f800000u) == 0x7f800000u) return i;
      }
      return -1;
    case DType::kF16:
      for (int64_t i = begin; i < end; ++i) {
        if ((load16(2 * static_cast<size_t>(i)) & 0x7c00u) == 0x7c00u) return i;
      }
      return -1;
    case DType::kBF16:
      for (int64_t i = begin; i < end; ++i) {
        if ((load16(2 * static_cast<size_t>(i)) & 0x7f80u) == 0x7f80u) return i;
      }
      return -1;
    default:
      break;
  }
  const std::optional<ScaleLayout> l = ScaleLayoutOf(type);
  for (int64_t b = begin; b < end; ++b) {
    for (int k = 0; k < l->n_offsets; ++k) {
      if ((load16(static_cast<size_t>(b) * l->block_bytes + l->offsets[k]) & 0x7c00u) == 0x7c00u) {
        return b;
      }
    }
  }
  return -1;
}

}  // namespace

Status Model::CheckWeightsFinite(ThreadPool* pool) const {
  for (const gguf::TensorInfo& t : file_->tensors()) {
    const bool plain = t.type == DType::kF32 || t.type == DType::kF16 || t.type == DType::kBF16;
    if (!plain && !ScaleLayoutOf(t.type)) continue;  // not a type ferry computes with
    const DTypeTraits& traits = Traits(t.type);
    const int64_t units =
        plain ? static_cast<int64_t>(t.n_elements)
              : static_cast<int64_t>(t.n_bytes / ScaleLayoutOf(t.type)->block_bytes);
    const uint8_t* data = file_->TensorData(t).data();
    // Chunks small enough to keep threads busy, each reporting its first bad unit.
    constexpr int64_t kChunk = int64_t{1} << 16;
    const int64_t n_chunks = (units + kChunk - 1) / kChunk;
    std::atomic<int64_t> first_bad{std::numeric_limits<int64_t>::max()};
    ParallelFor(pool, n_chunks, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        const int64_t bad =
            FirstNonFinite(t.type, data, c * kChunk, std::min(units, (c + 1) * kChunk));
        if (bad < 0) continue;
        int64_t cur = first_bad.load();
        while (bad < cur && !first_bad.compare_exchange_weak(cur, bad)) {
        }
        return;
      }
    });
    const int64_t bad = first_bad.load();
    if (bad != std::numeric_limits<int64_t>::max()) {
      if (plain) {
        return DataLossError(
            "{}: tensor '{}' ({}) holds a non-finite value (NaN or infinity) at "
            "element {}: the file is corrupt",
            file_->name(), t.name, DTypeName(t.type), bad);
      }
      return DataLossError(
          "{}: tensor '{}' ({}) has a non-finite scale (NaN or infinity) in block "
          "{} (elements {}..{}): the file is corrupt",
          file_->name(), t.name, DTypeName(t.type), bad, bad * traits.block_size,
          (bad + 1) * traits.block_size - 1);
    }
  }
  return Status::Ok();
}

Model::~Model() = default;

Status Model::UseCuda(int device, int64_t first_layer, DeviceAllocator& allocator,
                      const ScratchShape& shape) {
  FERRY_ASSIGN_OR_RETURN(cuda_, CudaLayers::Create(*this, device, first_layer, allocator, shape));
  // The host read those weights once to copy them; their mapped pages need not stay resident
  // (the plan counts them on the GPU only).
  for (int64_t l = first_layer; l < hp_.n_layer; ++l) {
    for (WeightMatrix* m : w_.layers[static_cast<size_t>(l)].Matrices()) {
      if (m->present()) ReleaseMappedPages(m->data, static_cast<uint64_t>(m->rows) * m->row_bytes);
    }
  }
  if (w_.output.present()) {
    ReleaseMappedPages(w_.output.data, static_cast<uint64_t>(w_.output.rows) * w_.output.row_bytes);
  }
  return Status::Ok();
}

Status Model::ReserveCuda(const ScratchShape& shape) const {
  if (cuda_ == nullptr) return FailedPreconditionError("ReserveCuda: no layer runs on a GPU");
  return cuda_->Reserve(shape);
}

int Model::cuda_device() const { return cuda_ != nullptr ? cuda_->device() : -1; }

bool Model::cuda_ready() const { return cuda_ == nullptr || cuda_->ready(); }

int64_t Model::first_gpu_layer() const {
  return cuda_ != nullptr ? cuda_->first_layer() : hp_.n_layer;
}

}  // namespace ferry
