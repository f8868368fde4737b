#include "planner/plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "base/bytes.h"
#include "kv/kv_cache.h"
#include "model/cuda_layers.h"
#include "sampling/sampler.h"
#include "tokenizer/vocab.h"

namespace ferry {
namespace {

constexpr int64_t kMaxCtx = int64_t{1} << 24;

}  // namespace

KvCacheOptions KvOptionsFor(const ModelShape& m, const LoadOptions& o) {
  // Sequence ids: the running sequences plus as many cached ones (kept for prompt reuse); ids
  // cost no pool memory.
  return KvOptionsForLayers(o.kv_type, m.n_layer, m.n_head_kv, m.head_dim_k, m.head_dim_v,
                            m.swa_window, o.num_ctx, o.num_parallel, 2 * SequencesOf(o),
                            o.num_batch);
}

namespace {

// Layers on GPU i when `k` blocks are offloaded: contiguous ranges of the last k layers, split
// in proportion to free memory (earlier GPUs take earlier layers).
std::vector<int> AssignLayers(const ModelShape& m, const DeviceInventory& inv, int64_t k) {
  const int cpu = static_cast<int>(inv.devices.size()) - 1;
  std::vector<int> where(static_cast<size_t>(m.n_layer), cpu);
  if (k <= 0 || cpu == 0) return where;
  double total_free = 0.0;
  for (int g = 0; g < cpu; ++g) total_free += static_cast<double>(inv.devices[g].free_bytes);
  int64_t first = m.n_layer - k;
  double acc = 0.0;
  int64_t start = first;
  for (int g = 0; g < cpu; ++g) {
    acc += static_cast<double>(inv.devices[g].free_bytes);
    int64_t end =
        g == cpu - 1
            ? m.n_layer
            : first + static_cast<int64_t>(std::llround(static_cast<double>(k) * acc / total_free));
    for (int64_t l = start; l < end; ++l) where[static_cast<size_t>(l)] = g;
    start = end;
  }
  return where;
}

// Builds the plan that puts `gpu_layers` (llama.cpp's count: output first, then the last
// blocks) on the GPUs. Does not check capacity.
Plan BuildPlan(const ModelShape& m, const DeviceInventory& inv, const LoadOptions& o,
               const std::vector<uint64_t>& kv_layer, int gpu_layers) {
  Plan p;
  p.options = o;
  p.gpu_layers = gpu_layers;
  const int cpu = static_cast<int>(inv.devices.size()) - 1;
  for (const Device& d : inv.devices) {
    DevicePlan dp;
    dp.name = d.name;
    dp.kind = d.kind;
    dp.index = d.index;
    dp.capacity_bytes = d.free_bytes;
    dp.context_bytes = d.context_bytes;
    dp.bandwidth_bytes_per_s = d.bandwidth_bytes_per_s;
    dp.matmul_flops = d.matmul_flops;
    p.devices.push_back(dp);
  }
  // Compute work per device: weight FLOPs by type, attention FLOPs (see DevicePlan).
  std::vector<std::map<DType, uint64_t>> weight_flops(inv.devices.size());
  std::vector<uint64_t> attention_flops(inv.devices.size(), 0);
  const bool has_gpu = cpu > 0;
  const int64_t blocks_on_gpu = has_gpu ? std::max<int64_t>(0, gpu_layers - 1) : 0;
  p.layer_device = AssignLayers(m, inv, std::min<int64_t>(blocks_on_gpu, m.n_layer));
  p.output_device = (has_gpu && gpu_layers >= 1) ? std::clamp(o.main_gpu, 0, cpu - 1) : cpu;

  DevicePlan& cpu_plan = p.devices[static_cast<size_t>(cpu)];
  cpu_plan.has_input = true;
  cpu_plan.weights_bytes += m.input_bytes;
  cpu_plan.host_bytes = m.host_bytes;
  cpu_plan.sampling_bytes =
      static_cast<uint64_t>(SequencesOf(o)) *
      Sampler::WorkspaceBytes(
          static_cast<int32_t>(std::min<int64_t>(m.n_vocab, std::numeric_limits<int32_t>::max())),
          static_cast<int32_t>(o.num_ctx));
  p.layer_weights_bytes = m.layer_weight_bytes;
  p.layer_kv_bytes = kv_layer;
  for (int64_t l = 0; l < m.n_layer; ++l) {
    DevicePlan& d = p.devices[static_cast<size_t>(p.layer_device[static_cast<size_t>(l)])];
    const size_t di = static_cast<size_t>(p.layer_device[static_cast<size_t>(l)]);
    d.layers.push_back(l);
    // A GPU holds the layer's tensors at aligned offsets of one buffer (CudaLayers).
    if (static_cast<int>(di) != cpu && static_cast<size_t>(l) < m.layer_gpu_weight_bytes.size()) {
      p.layer_weights_bytes[static_cast<size_t>(l)] =
          m.layer_gpu_weight_bytes[static_cast<size_t>(l)];
    }
    d.weights_bytes += p.layer_weights_bytes[static_cast<size_t>(l)];
    d.kv_bytes += kv_layer[static_cast<size_t>(l)];
    if (static_cast<size_t>(l) < m.layer_matmul_elements.size()) {
      for (const WeightElements& w : m.layer_matmul_elements[static_cast<size_t>(l)]) {
        weight_flops[di][w.type] += 2 * w.elements;
      }
    }
    const int64_t window =
        static_cast<size_t>(l) < m.swa_window.size() ? m.swa_window[static_cast<size_t>(l)] : 0;
    const int64_t keys = window > 0 ? std::min(window, o.num_ctx) : o.num_ctx;
    attention_flops[di] += static_cast<uint64_t>(2 * m.n_head * (m.head_dim_k + m.head_dim_v)) *
                           static_cast<uint64_t>(keys);
  }
  DevicePlan& out = p.devices[static_cast<size_t>(p.output_device)];
  out.has_output = true;
  if (p.output_device == cpu) {
    out.weights_bytes += m.output_bytes;
  } else {
    out.weights_bytes +=
        m.gpu_output_bytes > 0 ? m.gpu_output_bytes : m.output_bytes + m.tied_output_bytes;
  }
  for (const WeightElements& w : m.output_matmul_elements) {
    weight_flops[static_cast<size_t>(p.output_device)][w.type] += 2 * w.elements;
  }

  // The CPU always holds the step's host arrays (the embedding rows, the rotary angles, the
  // rows and logits of the output, and every activation of the layers it runs): the forward
  // pass's scratch. A GPU that runs layers or the output holds the device arrays CudaLayers
  // allocates.
  const uint64_t host_compute = ComputeBufferBytes(m, o);
  double seconds = 0.0;
  for (size_t i = 0; i < p.devices.size(); ++i) {
    DevicePlan& d = p.devices[i];
    const Device& device = inv.devices[i];
    if (static_cast<int>(i) == cpu) {
      d.compute_bytes = host_compute;
    } else if (!d.layers.empty() || d.has_output) {
      d.compute_bytes = GpuComputeBufferBytes(m, o, static_cast<int64_t>(d.layers.size()));
    }
    d.total_bytes =
        d.weights_bytes + d.kv_bytes + d.compute_bytes + d.host_bytes + d.sampling_bytes;
    // Decode reads every weight of the device once per token (the input embedding only one
    // row; but a tied output multiplies the whole embedding where it sits), and the KV of one
    // sequence at a full context.
    uint64_t weights_read = d.weights_bytes - (d.has_input ? m.input_bytes : 0);
    if (d.has_input && d.has_output) weights_read += m.tied_output_bytes;
    d.bytes_read_per_token = weights_read + d.kv_bytes / static_cast<uint64_t>(o.num_parallel);
    if (d.bandwidth_bytes_per_s > 0) {
      d.memory_seconds = static_cast<double>(d.bytes_read_per_token) / d.bandwidth_bytes_per_s;
    }
    d.flops_per_token = attention_flops[i];
    for (const auto& [type, flops] : weight_flops[i]) d.flops_per_token += flops;
    if (d.matmul_flops > 0) {
      d.compute_seconds = static_cast<double>(attention_flops[i]) / d.matmul_flops;
      for (const auto& [type, flops] : weight_flops[i]) {
        auto rate = device.matmul_flops_by_type.find(type);
        const double r = rate != device.matmul_flops_by_type.end() && rate->second > 0
                             ? rate->second
                             : d.matmul_flops;
        d.compute_seconds += static_cast<double>(flops) / r;
      }
    }
    if (d.bandwidth_bytes_per_s > 0) seconds += d.seconds_per_token();
  }
  p.predicted_tok_s = seconds > 0 ? 1.0 / seconds : 0.0;
  return p;
}

bool Fits(const Plan& p) {
  for (const DevicePlan& d : p.devices) {
    if (d.total_bytes > d.capacity_bytes) return false;
  }
  return true;
}

// The worst overflow of a plan: (device index, bytes missing), or (-1, 0) when it fits.
std::pair<int, uint64_t> Overflow(const Plan& p) {
  std::pair<int, uint64_t> worst{-1, 0};
  for (size_t i = 0; i < p.devices.size(); ++i) {
    const DevicePlan& d = p.devices[i];
    if (d.total_bytes > d.capacity_bytes && d.total_bytes - d.capacity_bytes > worst.second) {
      worst = {static_cast<int>(i), d.total_bytes - d.capacity_bytes};
    }
  }
  return worst;
}

// The plan for these options, choosing gpu_layers when num_gpu is -1; a ResourceExhausted
// status when nothing fits, and then `failed` (if not null) receives the plan that was tried
// last (the forced num_gpu, or gpu_layers 0).
StatusOr<Plan> TryPlan(const ModelShape& m, const DeviceInventory& inv, const LoadOptions& o,
                       Plan* failed) {
  FERRY_ASSIGN_OR_RETURN(std::vector<uint64_t> kv_layer,
                         KvCache::PoolLayerBytes(KvOptionsFor(m, o)));
  const int max_gpu_layers = inv.devices.size() > 1 ? static_cast<int>(m.n_layer) + 1 : 0;
  if (o.num_gpu >= 0) {
    Plan p = BuildPlan(m, inv, o, kv_layer, std::min(o.num_gpu, max_gpu_layers));
    if (Fits(p)) return p;
    if (failed) *failed = p;
    return Status(StatusCode::kResourceExhausted, "does not fit");
  }
  for (int g = max_gpu_layers; g >= 0; --g) {
    Plan p = BuildPlan(m, inv, o, kv_layer, g);
    if (Fits(p)) return p;
    if (g == 0 && failed) *failed = p;
  }
  return Status(StatusCode::kResourceExhausted, "does not fit");
}

bool FitsAt(const ModelShape& m, const DeviceInventory& inv, LoadOptions o, int64_t ctx) {
  o.num_ctx = ctx;
  return TryPlan(m, inv, o, nullptr).ok();
}

// Largest num_ctx in [1, kMaxCtx] for which `o` fits; 0 if none.
int64_t MaxFittingCtx(const ModelShape& m, const DeviceInventory& inv, const LoadOptions& o) {
  if (!FitsAt(m, inv, o, 1)) return 0;
  int64_t lo = 1, hi = kMaxCtx;
  if (FitsAt(m, inv, o, hi)) return hi;
  while (hi - lo > 1) {
    int64_t mid = lo + (hi - lo) / 2;
    (FitsAt(m, inv, o, mid) ? lo : hi) = mid;
  }
  return lo;
}

}  // namespace

std::string FormatLayerRanges(const std::vector<int64_t>& layers) {
  std::string s;
  for (size_t i = 0; i < layers.size();) {
    size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1] == layers[j] + 1) ++j;
    s += fmt::format(
        "{}{}", s.empty() ? "" : ",",
        i == j ? fmt::format("{}", layers[i]) : fmt::format("{}-{}", layers[i], layers[j]));
    i = j + 1;
  }
  return s;
}

ScratchShape ComputeScratchShape(const ModelShape& m, const LoadOptions& o) {
  // A decode step of SequencesOf(o) sequences wants one logits row each.
  return MakeScratchShape(m.n_embd, m.n_head, m.n_head_kv, m.head_dim_k, m.head_dim_v, m.n_ff,
                          m.n_vocab, m.matmuls, std::min(o.num_batch, o.num_ctx), o.num_ctx,
                          std::max<int64_t>(o.logit_rows, SequencesOf(o)));
}

uint64_t ComputeBufferBytes(const ModelShape& m, const LoadOptions& o) {
  return ForwardScratch::RequiredBytes(ComputeScratchShape(m, o));
}

uint64_t GpuComputeBufferBytes(const ModelShape& m, const LoadOptions& o, int64_t n_layers) {
  return CudaLayers::ComputeBytes(ComputeScratchShape(m, o), n_layers);
}

ModelShape ShapeFromModel(const Model& model) {
  const HParams& hp = model.hparams();
  ModelShape s;
  s.name = model.file().name();
  s.n_layer = hp.n_layer;
  s.n_embd = hp.n_embd;
  s.n_ff = hp.n_ff;
  s.n_head = hp.n_head;
  s.n_head_kv = hp.n_head_kv;
  s.head_dim_k = hp.head_dim_k;
  s.head_dim_v = hp.head_dim_v;
  s.n_vocab = hp.n_vocab;
  s.n_ctx_train = hp.n_ctx_train;
  s.swa_window = hp.swa_window;
  s.layer_weight_bytes.assign(static_cast<size_t>(hp.n_layer), 0);
  s.layer_gpu_weight_bytes.assign(static_cast<size_t>(hp.n_layer), 0);
  bool has_output = false;
  uint64_t embd = 0;
  for (const gguf::TensorInfo& t : model.file().tensors()) {
    int64_t layer = -1;
    if (t.name.rfind("blk.", 0) == 0) {
      layer = std::strtoll(t.name.c_str() + 4, nullptr, 10);
    }
    if (layer >= 0 && layer < hp.n_layer) {
      s.layer_weight_bytes[static_cast<size_t>(layer)] += t.n_bytes;
      s.layer_gpu_weight_bytes[static_cast<size_t>(layer)] += CudaLayers::TensorBytes(t.n_bytes);
    } else if (t.name == "output.weight" || t.name == "output_norm.weight") {
      s.output_bytes += t.n_bytes;
      s.gpu_output_bytes += CudaLayers::TensorBytes(t.n_bytes);
      has_output |= t.name == "output.weight";
    } else {
      s.input_bytes += t.n_bytes;
      if (t.name == "token_embd.weight") embd = t.n_bytes;
    }
  }
  if (!has_output) {
    s.tied_output_bytes = embd;
    s.gpu_output_bytes += CudaLayers::TensorBytes(embd);
  }
  s.matmuls = ForwardScratch::ShapeFor(model, 1, 1).matmuls;
  // Compute work: the matrices of the blocks and the output projection (the embedding when
  // tied); 1-D tensors (norms, biases) are not matrix products.
  s.layer_matmul_elements.assign(static_cast<size_t>(hp.n_layer), {});
  auto add = [](std::vector<WeightElements>& v, DType type, uint64_t elements) {
    for (WeightElements& w : v) {
      if (w.type == type) {
        w.elements += elements;
        return;
      }
    }
    v.push_back({type, elements});
  };
  for (const gguf::TensorInfo& t : model.file().tensors()) {
    if (t.dims.size() < 2) continue;
    int64_t layer = -1;
    if (t.name.rfind("blk.", 0) == 0) layer = std::strtoll(t.name.c_str() + 4, nullptr, 10);
    if (layer >= 0 && layer < hp.n_layer) {
      add(s.layer_matmul_elements[static_cast<size_t>(layer)], t.type, t.n_elements);
    } else if (t.name == "output.weight" || (!has_output && t.name == "token_embd.weight")) {
      add(s.output_matmul_elements, t.type, t.n_elements);
    }
  }
  s.host_bytes = HostBytesFor(model.file());
  return s;
}

uint64_t HostBytesFor(const gguf::GgufFile& file) {
  uint64_t bytes = file.data_offset() + file.heap_bytes();
  if (auto sizes = tokenizer::Vocab::SizesFromGguf(file); sizes.ok()) {
    bytes += tokenizer::Vocab::HeapBytesFor(*sizes);
  }
  return bytes;
}

StatusOr<ModelShape> ShapeFromDescription(const DescribedModel& d) {
  if (d.n_layer <= 0 || d.n_embd <= 0 || d.n_ff <= 0 || d.n_head <= 0 || d.n_head_kv <= 0 ||
      d.head_dim <= 0 || d.n_vocab <= 0) {
    return InvalidArgumentError("described model '{}' needs positive dimensions", d.name);
  }
  ModelShape s;
  s.name = d.name;
  s.n_layer = d.n_layer;
  s.n_embd = d.n_embd;
  s.n_ff = d.n_ff;
  s.n_head = d.n_head;
  s.n_head_kv = d.n_head_kv;
  s.head_dim_k = s.head_dim_v = d.head_dim;
  s.n_vocab = d.n_vocab;
  s.n_ctx_train = d.n_ctx_train;
  s.swa_window.assign(static_cast<size_t>(d.n_layer), 0);
  auto mat = [&](DType t, int64_t cols, int64_t rows) -> StatusOr<uint64_t> {
    FERRY_ASSIGN_OR_RETURN(uint64_t row, RowBytes(t, static_cast<uint64_t>(cols)));
    return row * static_cast<uint64_t>(rows);
  };
  const int64_t e = d.n_embd, qd = d.n_head * d.head_dim, kd = d.n_head_kv * d.head_dim;
  const uint64_t norm = 4 * static_cast<uint64_t>(e);  // an f32 norm vector
  uint64_t layer = 2 * norm;                           // attn_norm, ffn_norm
  uint64_t gpu_layer = 2 * CudaLayers::TensorBytes(norm);
  for (auto [cols, rows] : std::vector<std::pair<int64_t, int64_t>>{
           {e, qd}, {e, kd}, {e, kd}, {qd, e}, {e, d.n_ff}, {e, d.n_ff}, {d.n_ff, e}}) {
    FERRY_ASSIGN_OR_RETURN(uint64_t b, mat(d.weight_type, cols, rows));
    layer += b;
    gpu_layer += CudaLayers::TensorBytes(b);
  }
  s.layer_weight_bytes.assign(static_cast<size_t>(d.n_layer), layer);
  s.layer_gpu_weight_bytes.assign(static_cast<size_t>(d.n_layer), gpu_layer);
  FERRY_ASSIGN_OR_RETURN(s.input_bytes, mat(d.weight_type, e, d.n_vocab));
  FERRY_ASSIGN_OR_RETURN(uint64_t out, mat(d.output_type, e, d.n_vocab));
  s.output_bytes = norm + (d.tied_output ? 0 : out);
  if (d.tied_output) s.tied_output_bytes = s.input_bytes;
  s.gpu_output_bytes =
      CudaLayers::TensorBytes(norm) + CudaLayers::TensorBytes(d.tied_output ? s.input_bytes : out);
  const auto layer_elements = static_cast<uint64_t>(e * qd + 2 * e * kd + qd * e + 3 * e * d.n_ff);
  s.layer_matmul_elements.assign(static_cast<size_t>(d.n_layer), {{d.weight_type, layer_elements}});
  s.output_matmul_elements = {
      {d.tied_output ? d.weight_type : d.output_type, static_cast<uint64_t>(e * d.n_vocab)}};
  s.matmuls = {{d.weight_type, e}, {d.weight_type, qd}, {d.weight_type, d.n_ff}};
  if (!d.tied_output && d.output_type != d.weight_type) s.matmuls.push_back({d.output_type, e});
  s.host_bytes =
      kDescribedHostBaseBytes + static_cast<uint64_t>(d.n_vocab) * kDescribedHostBytesPerToken;
  return s;
}

Status ValidateLoadOptions(const LoadOptions& o) {
  if (o.num_ctx <= 0 || o.num_ctx > kMaxCtx) {
    return InvalidArgumentError("num_ctx {} is out of range (1 .. {})", o.num_ctx, kMaxCtx);
  }
  if (o.num_parallel < 1 || o.num_parallel > 4096) {
    return InvalidArgumentError("num_parallel {} is out of range (1 .. 4096)", o.num_parallel);
  }
  if (o.num_batch < 1 || o.num_batch > 65536) {
    return InvalidArgumentError("num_batch {} is out of range (1 .. 65536)", o.num_batch);
  }
  if (o.max_sequences != 0 && (o.max_sequences < o.num_parallel || o.max_sequences > 4096)) {
    return InvalidArgumentError("max_sequences {} must be 0 or in num_parallel {} .. 4096",
                                o.max_sequences, o.num_parallel);
  }
  if (o.logit_rows < 1 || o.logit_rows > 4096) {
    return InvalidArgumentError("logit_rows {} is out of range (1 .. 4096)", o.logit_rows);
  }
  if (!IsKvCacheType(o.kv_type)) {
    return InvalidArgumentError("KV cache type {} is not supported (f16, q8_0, q4_0)",
                                DTypeName(o.kv_type));
  }
  if (o.num_gpu < -1)
    return InvalidArgumentError("num_gpu {} must be -1 (auto) or >= 0", o.num_gpu);
  return Status::Ok();
}

StatusOr<Plan> MakePlan(const ModelShape& m, const DeviceInventory& inv, const LoadOptions& o) {
  FERRY_RETURN_IF_ERROR(ValidateLoadOptions(o));
  if (inv.devices.empty() || inv.devices.back().kind != DeviceKind::kCpu) {
    return InvalidArgumentError("the device list needs a CPU entry");
  }
  if (o.main_gpu < 0 ||
      (o.main_gpu > 0 && o.main_gpu >= static_cast<int>(inv.devices.size()) - 1)) {
    return InvalidArgumentError("main_gpu {} does not exist", o.main_gpu);
  }
  Plan failed;
  auto p = TryPlan(m, inv, o, &failed);
  if (!p.ok()) {
    if (p.status().code() != StatusCode::kResourceExhausted) return p.status();
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("{} at num_ctx {} does not fit: {}", m.name, o.num_ctx,
                              SuggestFits(m, inv, o)));
  }
  Plan plan = std::move(*p);
  if (m.n_ctx_train > 0 && o.num_ctx > m.n_ctx_train) {
    plan.warnings.push_back(
        fmt::format("num_ctx {} is above the {} tokens the model was trained "
                    "on: quality may drop past that point",
                    o.num_ctx, m.n_ctx_train));
  }
  const int gpus = static_cast<int>(inv.devices.size()) - 1;
  const int64_t cpu_layers = static_cast<int64_t>(plan.devices.back().layers.size());
  if (gpus > 0 && cpu_layers > 0) {
    plan.warnings.push_back(
        fmt::format("{} of {} layers run on the CPU{}: decode is bound by the CPU's {}", cpu_layers,
                    m.n_layer, plan.output_device == gpus ? " with the output layer" : "",
                    plan.devices.back().compute_bound() ? "compute" : "memory bandwidth"));
  }
  return plan;
}

int64_t CapNumCtxAtTrained(const ModelShape& m, int64_t num_ctx) {
  return m.n_ctx_train > 0 ? std::min(num_ctx, m.n_ctx_train) : num_ctx;
}

ContextLimits ComputeContextLimits(const ModelShape& m, const DeviceInventory& inv,
                                   const LoadOptions& options) {
  ContextLimits lim;
  LoadOptions o = options;
  if (inv.devices.size() > 1) {
    o.num_gpu = static_cast<int>(m.n_layer) + 1;
    lim.max_ctx_all_gpu = MaxFittingCtx(m, inv, o);
  }
  o.num_gpu = -1;
  lim.max_ctx = MaxFittingCtx(m, inv, o);
  return lim;
}

std::string SuggestFits(const ModelShape& m, const DeviceInventory& inv, const LoadOptions& o) {
  Plan failed;
  auto p = TryPlan(m, inv, o, &failed);
  if (p.ok()) return "it fits";
  std::vector<std::string> fixes;
  auto [dev, missing] = Overflow(failed);
  std::string where = dev >= 0 ? failed.devices[static_cast<size_t>(dev)].name : "?";
  int64_t ctx = MaxFittingCtx(m, inv, o);
  if (ctx > 0) fixes.push_back(fmt::format("num_ctx <= {}", ctx));
  for (DType t : {DType::kQ8_0, DType::kQ4_0}) {
    if (t == o.kv_type) continue;
    LoadOptions q = o;
    q.kv_type = t;
    if (TryPlan(m, inv, q, nullptr).ok()) {
      fixes.push_back(fmt::format("or kv cache {}", DTypeName(t)));
      break;
    }
  }
  if (o.num_gpu > 0) {
    for (int g = std::min<int>(o.num_gpu, static_cast<int>(m.n_layer) + 1) - 1; g >= 0; --g) {
      LoadOptions q = o;
      q.num_gpu = g;
      if (TryPlan(m, inv, q, nullptr).ok()) {
        int moved = std::min<int>(o.num_gpu, static_cast<int>(m.n_layer) + 1) - g;
        fixes.push_back(
            fmt::format("or {} layer{} on CPU (--num-gpu {})", moved, moved == 1 ? "" : "s", g));
        break;
      }
    }
  }
  if (o.num_parallel > 1) {
    LoadOptions q = o;
    q.num_parallel = 1;
    if (TryPlan(m, inv, q, nullptr).ok()) fixes.push_back("or num_parallel 1");
  }
  std::string msg = fmt::format("needs {} more on {}", FormatBytes(missing), where);
  if (fixes.empty()) return msg + "; no smaller setting fits: the model's weights alone do not";
  msg += ": ";
  for (size_t i = 0; i < fixes.size(); ++i) msg += (i ? ", " : "") + fixes[i];
  return msg;
}

const char* DevicePlan::bound() const {
  if (bytes_read_per_token == 0 && flops_per_token == 0) return "-";
  return compute_bound() ? "compute-bound" : "memory-bound";
}

uint64_t Plan::total_bytes() const {
  uint64_t t = 0;
  for (const DevicePlan& d : devices) t += d.total_bytes;
  return t;
}

std::string Plan::Summary() const {
  std::string s = "plan:";
  for (const DevicePlan& d : devices) {
    if (d.total_bytes == 0) continue;
    std::string what = d.layers.empty() ? "" : "layers " + FormatLayerRanges(d.layers);
    if (d.has_output) what += what.empty() ? "output" : "+output";
    if (d.has_input) what += what.empty() ? "input" : "+input";
    std::string host = d.host_bytes > 0 ? fmt::format(", host {}", FormatBytes(d.host_bytes)) : "";
    if (d.sampling_bytes > 0) host += fmt::format(", sampling {}", FormatBytes(d.sampling_bytes));
    s += fmt::format(
        " {} [{}] {} (weights {}, kv {}, compute {}{}, headroom {}, {});", d.name, what,
        FormatBytes(d.total_bytes), FormatBytes(d.weights_bytes), FormatBytes(d.kv_bytes),
        FormatBytes(d.compute_bytes), host,
        d.headroom_bytes() >= 0
            ? FormatBytes(static_cast<uint64_t>(d.headroom_bytes()))
            : fmt::format("-{}", FormatBytes(static_cast<uint64_t>(-d.headroom_bytes()))),
        d.bound());
  }
  s += fmt::format(" num_ctx {} x {}, kv {}; {}; predicted {:.1f} tok/s", options.num_ctx,
                   options.num_parallel, DTypeName(options.kv_type),
                   ProcessorSplit(total_bytes(), gpu_bytes()), predicted_tok_s);
  return s;
}

uint64_t Plan::gpu_bytes() const {
  uint64_t b = 0;
  for (size_t i = 0; i + 1 < devices.size(); ++i) b += devices[i].total_bytes;
  return b;
}

std::string ProcessorSplit(uint64_t total_bytes, uint64_t gpu_bytes) {
  if (gpu_bytes == 0 || total_bytes == 0) return "100% CPU";
  if (gpu_bytes >= total_bytes) return "100% GPU";
  const int gpu = static_cast<int>(
      std::lround(100.0 * static_cast<double>(gpu_bytes) / static_cast<double>(total_bytes)));
  return fmt::format("{}%/{}% CPU/GPU", 100 - gpu, gpu);
}

}  // namespace ferry
