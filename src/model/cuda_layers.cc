#include "model/cuda_layers.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#ifdef FERRY_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace ferry {
namespace {

// The widest input a product of `shape` rounds (the rounded activations' row length).
int64_t WidestInput(const ScratchShape& shape) {
  int64_t widest = shape.n_embd;
  for (const MatMulInput& m : shape.matmuls) widest = std::max(widest, m.cols);
  return widest;
}

// Bytes of the rounded activations [max_tokens, widest] f32 and, after them, of the KV row
// pointers [2, max_tokens]: the "extra" allocation beside the device's ForwardScratch.
uint64_t WorkBytes(const ScratchShape& shape) {
  // Rounded up to 256 bytes, so the pointer arrays after it are aligned.
  return CudaLayers::TensorBytes(static_cast<uint64_t>(shape.max_tokens * WidestInput(shape)) *
                                 sizeof(float));
}
// The KV row pointers of one layer [2, max_tokens] (the per-layer path), then the step tables
// of every GPU layer: row pointers [n_layers, 2, max_tokens] and block pointers
// [n_layers, kStepRuns, 2, kv_block_slots].
uint64_t RowPtrBytes(const ScratchShape& shape) {
  return static_cast<uint64_t>(2 * shape.max_tokens) * sizeof(uint8_t*);
}
uint64_t StepRowEntries(const ScratchShape& shape, int64_t n_layers) {
  return static_cast<uint64_t>(n_layers * 2 * shape.max_tokens);
}
uint64_t StepBlockEntries(const ScratchShape& shape, int64_t n_layers) {
  return static_cast<uint64_t>(n_layers * CudaLayers::kStepRuns * 2 *
                               ForwardScratch::KvBlockSlots(shape));
}
uint64_t ExtraBytes(const ScratchShape& shape, int64_t n_layers) {
  return WorkBytes(shape) + RowPtrBytes(shape) +
         (StepRowEntries(shape, n_layers) + StepBlockEntries(shape, n_layers)) * sizeof(void*);
}

}  // namespace

bool CudaLayers::HoldsTensor(std::string_view name, int64_t first_layer, int64_t n_layer,
                             bool tied_output) {
  if (name.rfind("blk.", 0) == 0) {
    const int64_t layer = std::strtoll(std::string(name.substr(4)).c_str(), nullptr, 10);
    return layer >= first_layer && layer < n_layer;
  }
  return name == "output_norm.weight" || name == "output.weight" ||
         (tied_output && name == "token_embd.weight");
}

uint64_t CudaLayers::ComputeBytes(const ScratchShape& shape, int64_t n_layers) {
  return ForwardScratch::RequiredBytes(shape) + ExtraBytes(shape, n_layers);
}

#ifndef FERRY_HAVE_CUDA

struct CudaLayers::Impl {};
CudaLayers::CudaLayers(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaLayers::~CudaLayers() = default;

StatusOr<std::unique_ptr<CudaLayers>> CudaLayers::Create(const Model&, int device, int64_t,
                                                         DeviceAllocator&, const ScratchShape&) {
  return UnimplementedError("cuda{}: ferry was built without CUDA (cmake -DFERRY_CUDA=ON)", device);
}
int CudaLayers::device() const { return -1; }
int64_t CudaLayers::first_layer() const { return 0; }
bool CudaLayers::ready() const { return false; }
Status CudaLayers::RunLayers(const Batch&, std::span<const SeqRun>, KvCache&, const ForwardScratch&,
                             float) {
  return UnimplementedError("ferry was built without CUDA");
}
Status CudaLayers::Logits(const float*, int64_t, float*) {
  return UnimplementedError("ferry was built without CUDA");
}
Status CudaLayers::Reserve(const ScratchShape&) {
  return UnimplementedError("ferry was built without CUDA");
}

#else

namespace {

// The KV addresses of a whole step for every GPU layer, gathered on the host and copied to the
// device once before the first layer runs, so no layer waits for a copy (a copy from pageable
// host memory waits for the stream's earlier work: one per layer would drain the GPU's queue
// each time). Device tables: rows [n_layers, 2, n] (K rows then V rows of the step's n tokens),
// blocks packed per (layer, run): the run's K block pointers, then its V block pointers.
struct StepTables {
  int64_t first_layer = 0;
  uint8_t* const* rows = nullptr;
  const uint8_t* const* blocks = nullptr;
  std::vector<int64_t> block_offset;  // [n_layers, runs]: index of the run's K pointers
  std::vector<int64_t> span;          // [n_layers, runs]: its blocks
  std::vector<int64_t> first_pos;     // [n_layers, runs]: position of its first block's row 0
};

// The layer operations of model/layer.h on a CUDA device (kernels/cuda), over the device's
// copy of the step's activations. One per RunLayers call.
class CudaLayerOps {
 public:
  CudaLayerOps(const HParams& hp, const Batch& batch, std::span<const SeqRun> runs, KvCache& kv,
               const ForwardScratch& dev, float* x_work, uint8_t** row_ptrs_dev,
               std::vector<uint8_t*>& row_ptrs, std::vector<const uint8_t*>& block_ptrs,
               float scale, const StepTables* tables)
      : tables_(tables),
        hp_(hp),
        batch_(batch),
        runs_(runs),
        kv_(kv),
        dev_(dev),
        x_work_(x_work),
        row_ptrs_dev_(row_ptrs_dev),
        row_ptrs_(row_ptrs),
        block_ptrs_(block_ptrs),
        scale_(scale) {}

  Status Copy(Act dst, Act src, int64_t count) {
    return cuda::CopyDeviceToDevice(P(dst), P(src), static_cast<uint64_t>(count) * sizeof(float));
  }
  Status Norm(Act a, const WeightMatrix& w, int64_t rows, int64_t n) {
    return cuda::RmsNorm(P(a), w.present() ? static_cast<const float*>(w.data) : nullptr, P(a),
                         rows, n, hp_.norm_eps);
  }
  Status MatMul(const WeightMatrix& w, Act in, int64_t n, Act out) {
    return cuda::MatMul(w, P(in), n, P(out), x_work_);
  }
  Status AddBias(Act a, const WeightMatrix& b, int64_t rows, int64_t n) {
    if (!b.present()) return Status::Ok();
    return cuda::AddRows(P(a), static_cast<const float*>(b.data), rows, n);
  }
  Status RopeAndStore(int64_t l, bool sliding) {
    const int64_t n = batch_.size(), dk = hp_.head_dim_k;
    const int64_t kd = hp_.n_head_kv * dk, vd = hp_.n_head_kv * hp_.head_dim_v;
    const bool neox = hp_.rope_type == RopeType::kNeox;
    FERRY_RETURN_IF_ERROR(
        cuda::RopeApply(dev_.q(), n, hp_.n_head, dk, dev_.rope(sliding), dk, hp_.n_rot, neox));
    FERRY_RETURN_IF_ERROR(
        cuda::RopeApply(dev_.k(), n, hp_.n_head_kv, dk, dev_.rope(sliding), dk, hp_.n_rot, neox));
    const DType type = kv_.options().type;
    if (tables_ != nullptr) {
      // The step's table has this layer's row addresses already (RunLayers).
      uint8_t* const* rows = tables_->rows + (l - tables_->first_layer) * 2 * n;
      FERRY_RETURN_IF_ERROR(cuda::StoreKvRows(type, dev_.k(), n, kd, rows));
      return cuda::StoreKvRows(type, dev_.v(), n, vd, rows + n);
    }
    // Each token's K and V rows go to the addresses the cache gives for this layer.
    for (int64_t t = 0; t < n; ++t) {
      const BatchEntry& b = batch_.entries[static_cast<size_t>(t)];
      FERRY_RETURN_IF_ERROR(kv_.RowAddresses(b.seq, static_cast<int>(l), b.pos,
                                             &row_ptrs_[static_cast<size_t>(t)],
                                             &row_ptrs_[static_cast<size_t>(n + t)]));
    }
    FERRY_RETURN_IF_ERROR(cuda::CopyToDevice(row_ptrs_dev_, row_ptrs_.data(),
                                             static_cast<uint64_t>(2 * n) * sizeof(uint8_t*)));
    FERRY_RETURN_IF_ERROR(cuda::StoreKvRows(type, dev_.k(), n, kd, row_ptrs_dev_));
    return cuda::StoreKvRows(type, dev_.v(), n, vd, row_ptrs_dev_ + n);
  }
  Status Attend(int64_t l, int64_t window) {
    const int64_t qd = hp_.n_head * hp_.head_dim_k, ad = hp_.n_head * hp_.head_dim_v;
    const int64_t slots = dev_.kv_block_slots();
    for (size_t ri = 0; ri < runs_.size(); ++ri) {
      const SeqRun& r = runs_[ri];
      AttentionArgs args = RunAttentionArgs(hp_, kv_, r, l, window, scale_);
      args.q = dev_.q() + r.first * qd;
      args.out = dev_.attn() + r.first * ad;
      if (tables_ != nullptr) {
        // The step's table has this run's block addresses already (RunLayers).
        const size_t at = static_cast<size_t>(l - tables_->first_layer) * runs_.size() + ri;
        args.kv.k_blocks = tables_->blocks + tables_->block_offset[at];
        args.kv.v_blocks = args.kv.k_blocks + tables_->span[at];
        args.kv.first_pos = tables_->first_pos[at];
        FERRY_RETURN_IF_ERROR(cuda::Attention(args));
        continue;
      }
      const int64_t p_lo = args.p_lo, p_hi = args.p_lo + args.n_keys;
      const int64_t span = kv_.BlockSpan(p_lo, p_hi);
      if (args.n_keys > dev_.shape().max_keys || span > slots) {
        return InvalidArgumentError(
            "Forward(): layer {} attends over {} keys in {} KV blocks but the device scratch "
            "holds {} keys, {} blocks",
            l, args.n_keys, span, dev_.shape().max_keys, slots);
      }
      // Block addresses (device memory) gathered on the host, then copied beside each other
      // into the device scratch's block arrays: K at [0, span), V at [slots, slots + span).
      FERRY_RETURN_IF_ERROR(kv_.BlockRows(r.seq, static_cast<int>(l), p_lo, p_hi,
                                          block_ptrs_.data(), block_ptrs_.data() + slots,
                                          &args.kv.first_pos));
      FERRY_RETURN_IF_ERROR(
          cuda::CopyToDevice(dev_.k_blocks(), block_ptrs_.data(),
                             static_cast<uint64_t>(2 * slots) * sizeof(uint8_t*)));
      args.kv.k_blocks = dev_.k_blocks();
      args.kv.v_blocks = dev_.v_blocks();
      FERRY_RETURN_IF_ERROR(cuda::Attention(args));
    }
    return Status::Ok();
  }
  Status Gate(FfnActivation act, int64_t count) {
    return act == FfnActivation::kSilu ? cuda::SiluMul(dev_.gate(), dev_.up(), count)
                                       : cuda::GeluTanhF16Mul(dev_.gate(), dev_.up(), count);
  }
  Status Add(Act dst, Act src, int64_t count) { return cuda::Add(P(dst), P(src), count); }

 private:
  float* P(Act a) const { return dev_.act(a); }

  const StepTables* const tables_;  // null: each layer gathers and copies its own addresses
  const HParams& hp_;
  const Batch& batch_;
  std::span<const SeqRun> runs_;
  KvCache& kv_;
  const ForwardScratch& dev_;
  float* const x_work_;
  uint8_t** const row_ptrs_dev_;
  std::vector<uint8_t*>& row_ptrs_;
  std::vector<const uint8_t*>& block_ptrs_;
  const float scale_;
};

}  // namespace

struct CudaLayers::Impl {
  const Model* model = nullptr;
  int device = 0;
  int64_t first_layer = 0;
  DeviceAllocator* allocator = nullptr;
  DeviceAllocator::Buffer weights;              // every copied tensor (kTensorAlignment)
  std::map<const void*, uint8_t*> device_copy;  // a tensor's mapped bytes -> its copy
  std::vector<LayerWeights> layers;             // [n_layer - first_layer], device pointers
  WeightMatrix output_norm, output;             // device pointers
  std::unique_ptr<ForwardScratch> dev;          // the step's arrays, in device memory
  DeviceAllocator::Buffer extra;                // x_work, row pointers, the step tables
  float* x_work = nullptr;
  uint8_t** row_ptrs_dev = nullptr;
  uint8_t** step_rows_dev = nullptr;          // [StepRowEntries]
  const uint8_t** step_blocks_dev = nullptr;  // [StepBlockEntries]
  uint64_t step_block_capacity = 0;
  std::vector<uint8_t*> row_ptrs;          // host staging [2, max_tokens]
  std::vector<const uint8_t*> block_ptrs;  // host staging [2, kv_block_slots]
  std::vector<uint8_t*> step_rows;         // host staging of the step tables
  std::vector<const uint8_t*> step_blocks;
  StepTables tables;

  // Allocates the step's arrays for `shape` (dev, extra and the host staging).
  Status AllocateStep(const ScratchShape& shape) {
    const int64_t n_layers = model->hparams().n_layer - first_layer;
    FERRY_ASSIGN_OR_RETURN(dev, ForwardScratch::Create(shape, *allocator));
    FERRY_ASSIGN_OR_RETURN(extra, allocator->Allocate(ExtraBytes(shape, n_layers), "compute"));
    uint8_t* p = extra.data();
    x_work = reinterpret_cast<float*>(p);
    p += WorkBytes(shape);
    row_ptrs_dev = reinterpret_cast<uint8_t**>(p);
    p += RowPtrBytes(shape);
    step_rows_dev = reinterpret_cast<uint8_t**>(p);
    p += StepRowEntries(shape, n_layers) * sizeof(void*);
    step_blocks_dev = reinterpret_cast<const uint8_t**>(p);
    step_block_capacity = StepBlockEntries(shape, n_layers);
    row_ptrs.assign(static_cast<size_t>(2 * shape.max_tokens), nullptr);
    block_ptrs.assign(static_cast<size_t>(2 * dev->kv_block_slots()), nullptr);
    step_rows.assign(StepRowEntries(shape, n_layers), nullptr);
    step_blocks.assign(step_block_capacity, nullptr);
    return Status::Ok();
  }

  // Fills and copies the step tables (StepTables) for a step of `batch` whose runs are at most
  // kStepRuns; one copy of each table, before any layer runs.
  Status FillTables(const Batch& batch, std::span<const SeqRun> runs, const KvCache& kv,
                    float scale) {
    const HParams& hp = model->hparams();
    const int64_t n = batch.size(), n_layers = hp.n_layer - first_layer;
    const size_t n_runs = runs.size();
    const int64_t slots = dev->kv_block_slots();
    tables.first_layer = first_layer;
    tables.rows = step_rows_dev;
    tables.blocks = step_blocks_dev;
    tables.block_offset.assign(static_cast<size_t>(n_layers) * n_runs, 0);
    tables.span.assign(static_cast<size_t>(n_layers) * n_runs, 0);
    tables.first_pos.assign(static_cast<size_t>(n_layers) * n_runs, 0);
    int64_t used = 0;
    for (int64_t li = 0; li < n_layers; ++li) {
      const int64_t l = first_layer + li;
      for (int64_t t = 0; t < n; ++t) {
        const BatchEntry& b = batch.entries[static_cast<size_t>(t)];
        FERRY_RETURN_IF_ERROR(kv.RowAddresses(b.seq, static_cast<int>(l), b.pos,
                                              &step_rows[static_cast<size_t>(li * 2 * n + t)],
                                              &step_rows[static_cast<size_t>(li * 2 * n + n + t)]));
      }
      const int64_t window = hp.swa_window[static_cast<size_t>(l)];
      for (size_t ri = 0; ri < n_runs; ++ri) {
        const AttentionArgs args = RunAttentionArgs(hp, kv, runs[ri], l, window, scale);
        const int64_t p_lo = args.p_lo, p_hi = args.p_lo + args.n_keys;
        const int64_t span = kv.BlockSpan(p_lo, p_hi);
        if (args.n_keys > dev->shape().max_keys || span > slots) {
          return InvalidArgumentError(
              "Forward(): layer {} attends over {} keys in {} KV blocks but the device scratch "
              "holds {} keys, {} blocks",
              l, args.n_keys, span, dev->shape().max_keys, slots);
        }
        const size_t at = static_cast<size_t>(li) * n_runs + ri;
        tables.block_offset[at] = used;
        tables.span[at] = span;
        FERRY_RETURN_IF_ERROR(kv.BlockRows(
            runs[ri].seq, static_cast<int>(l), p_lo, p_hi, &step_blocks[static_cast<size_t>(used)],
            &step_blocks[static_cast<size_t>(used + span)], &tables.first_pos[at]));
        used += 2 * span;
      }
    }
    FERRY_RETURN_IF_ERROR(cuda::CopyToDevice(
        step_rows_dev, step_rows.data(), static_cast<uint64_t>(n_layers * 2 * n) * sizeof(void*)));
    return cuda::CopyToDevice(step_blocks_dev, step_blocks.data(),
                              static_cast<uint64_t>(used) * sizeof(void*));
  }

  // `w` with its data in the device's copy (absent stays absent).
  Status Upload(const WeightMatrix& w, const char* what, WeightMatrix* out) {
    *out = w;
    out->packed = nullptr;
    if (!w.present()) return Status::Ok();
    if (w.rows > 1 && !cuda::MatMulSupports(w.type)) {
      return UnimplementedError("cuda{}: no CUDA kernel reads {} weights ({})", device,
                                DTypeName(w.type), what);
    }
    auto it = device_copy.find(w.data);
    if (it == device_copy.end()) {
      return InternalError("cuda{}: {} is not among the tensors copied to the device", device,
                           what);
    }
    out->data = it->second;
    return Status::Ok();
  }

  // Copies every tensor this GPU holds into one buffer (see kTensorAlignment).
  Status CopyTensors(const gguf::GgufFile& file, int64_t n_layer) {
    bool tied = true;
    for (const gguf::TensorInfo& t : file.tensors()) tied &= t.name != "output.weight";
    std::vector<std::pair<const gguf::TensorInfo*, uint64_t>> held;  // tensor, offset
    uint64_t total = 0;
    for (const gguf::TensorInfo& t : file.tensors()) {
      if (!CudaLayers::HoldsTensor(t.name, first_layer, n_layer, tied)) continue;
      held.emplace_back(&t, total);
      total += CudaLayers::TensorBytes(t.n_bytes);
    }
    FERRY_ASSIGN_OR_RETURN(weights, allocator->Allocate(total, "weights"));
    for (const auto& [t, offset] : held) {
      const std::span<const uint8_t> bytes = file.TensorData(*t);
      FERRY_RETURN_IF_ERROR(
          cuda::CopyToDevice(weights.data() + offset, bytes.data(), bytes.size()));
      device_copy[bytes.data()] = weights.data() + offset;
    }
    return Status::Ok();
  }
};

CudaLayers::CudaLayers(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaLayers::~CudaLayers() = default;
int CudaLayers::device() const { return impl_->device; }
int64_t CudaLayers::first_layer() const { return impl_->first_layer; }
bool CudaLayers::ready() const { return impl_->dev != nullptr; }

StatusOr<std::unique_ptr<CudaLayers>> CudaLayers::Create(const Model& model, int device,
                                                         int64_t first_layer,
                                                         DeviceAllocator& allocator,
                                                         const ScratchShape& shape) {
  const HParams& hp = model.hparams();
  if (first_layer < 0 || first_layer > hp.n_layer) {
    return InvalidArgumentError("cuda{}: first GPU layer {} outside 0..{}", device, first_layer,
                                hp.n_layer);
  }
  if (allocator.host_accessible()) {
    return InvalidArgumentError("cuda{}: the allocator {} gives host memory, not the device's",
                                device, allocator.device());
  }
  auto impl = std::make_unique<Impl>();
  impl->model = &model;
  impl->device = device;
  impl->first_layer = first_layer;
  impl->allocator = &allocator;
  const ModelWeights& w = model.weights();
  FERRY_RETURN_IF_ERROR(cuda::UseDevice(device));
  FERRY_RETURN_IF_ERROR(impl->CopyTensors(model.file(), hp.n_layer));
  for (int64_t l = first_layer; l < hp.n_layer; ++l) {
    const LayerWeights& src = w.layers[static_cast<size_t>(l)];
    LayerWeights d;
    const std::pair<const WeightMatrix*, WeightMatrix*> all[] = {
        {&src.attn_norm, &d.attn_norm},
        {&src.wq, &d.wq},
        {&src.wk, &d.wk},
        {&src.wv, &d.wv},
        {&src.wo, &d.wo},
        {&src.bq, &d.bq},
        {&src.bk, &d.bk},
        {&src.bv, &d.bv},
        {&src.bo, &d.bo},
        {&src.q_norm, &d.q_norm},
        {&src.k_norm, &d.k_norm},
        {&src.post_attn_norm, &d.post_attn_norm},
        {&src.ffn_norm, &d.ffn_norm},
        {&src.ffn_gate, &d.ffn_gate},
        {&src.ffn_up, &d.ffn_up},
        {&src.ffn_down, &d.ffn_down},
        {&src.post_ffw_norm, &d.post_ffw_norm}};
    for (const auto& [from, to] : all) {
      FERRY_RETURN_IF_ERROR(impl->Upload(*from, "a layer weight", to));
    }
    impl->layers.push_back(d);
  }
  FERRY_RETURN_IF_ERROR(impl->Upload(w.output_norm, "output_norm", &impl->output_norm));
  FERRY_RETURN_IF_ERROR(
      impl->Upload(w.output.present() ? w.output : w.token_embd, "output", &impl->output));

  FERRY_RETURN_IF_ERROR(impl->AllocateStep(shape));
  return std::unique_ptr<CudaLayers>(new CudaLayers(std::move(impl)));
}

Status CudaLayers::Reserve(const ScratchShape& shape) {
  Impl& m = *impl_;
  FERRY_RETURN_IF_ERROR(cuda::UseDevice(m.device));
  if (m.dev == nullptr) {
    // A Reserve failed before and left nothing: try the new shape alone.
    m.extra = DeviceAllocator::Buffer();
    Status st = m.AllocateStep(shape);
    if (!st.ok()) m.dev.reset();
    return st;
  }
  const ScratchShape old = m.dev->shape();
  m.dev.reset();
  m.extra = DeviceAllocator::Buffer();
  Status st = m.AllocateStep(shape);
  if (st.ok()) return st;
  m.dev.reset();
  m.extra = DeviceAllocator::Buffer();
  if (Status again = m.AllocateStep(old); !again.ok()) {
    m.dev.reset();  // not ready (ready()): RunLayers and Logits refuse until a Reserve succeeds
    return again;
  }
  return st;
}

Status CudaLayers::RunLayers(const Batch& batch, std::span<const SeqRun> runs, KvCache& kv,
                             const ForwardScratch& host, float attn_scale) {
  Impl& m = *impl_;
  const HParams& hp = m.model->hparams();
  const int64_t n = batch.size(), e = hp.n_embd;
  if (m.dev == nullptr) {
    return FailedPreconditionError("cuda{}: no step arrays (a Grow failed to restore them)",
                                   m.device);
  }
  FERRY_RETURN_IF_ERROR(cuda::UseDevice(m.device));
  if (n > m.dev->shape().max_tokens) {
    return InvalidArgumentError("Forward(): {} tokens, the device scratch holds {}", n,
                                m.dev->shape().max_tokens);
  }
  for (int64_t l = m.first_layer; l < hp.n_layer; ++l) {
    if (kv.layer_on_host(static_cast<int>(l))) {
      return FailedPreconditionError(
          "Forward(): layer {} runs on cuda{} but its KV blocks are in "
          "host memory",
          l, m.device);
    }
  }
  // The hidden state and the step's rotary angles (both kinds) cross to the device.
  const uint64_t rope_bytes = static_cast<uint64_t>(n * hp.head_dim_k) * sizeof(float);
  FERRY_RETURN_IF_ERROR(
      cuda::CopyToDevice(m.dev->x(), host.x(), static_cast<uint64_t>(n * e) * sizeof(float)));
  for (bool sliding : {false, true}) {
    FERRY_RETURN_IF_ERROR(cuda::CopyToDevice(m.dev->rope(sliding), host.rope(sliding), rope_bytes));
  }
  // Up to kStepRuns sequences (decode steps, most prompt steps): every layer's KV addresses
  // in one table copied once; more: each layer gathers and copies its own.
  const bool tables = runs.size() <= static_cast<size_t>(kStepRuns);
  if (tables) FERRY_RETURN_IF_ERROR(m.FillTables(batch, runs, kv, attn_scale));
  CudaLayerOps ops(hp, batch, runs, kv, *m.dev, m.x_work, m.row_ptrs_dev, m.row_ptrs, m.block_ptrs,
                   attn_scale, tables ? &m.tables : nullptr);
  for (int64_t l = m.first_layer; l < hp.n_layer; ++l) {
    FERRY_RETURN_IF_ERROR(
        RunLayer(ops, hp, m.layers[static_cast<size_t>(l - m.first_layer)], l, n));
  }
  // And back.
  return cuda::CopyToHost(host.x(), m.dev->x(), static_cast<uint64_t>(n * e) * sizeof(float));
}

Status CudaLayers::Logits(const float* rows, int64_t r, float* y) {
  Impl& m = *impl_;
  const HParams& hp = m.model->hparams();
  const int64_t e = hp.n_embd;
  if (m.dev == nullptr) {
    return FailedPreconditionError("cuda{}: no step arrays (a Grow failed to restore them)",
                                   m.device);
  }
  FERRY_RETURN_IF_ERROR(cuda::UseDevice(m.device));
  if (r > m.dev->shape().logit_rows) {
    return InvalidArgumentError("CudaLayers::Logits: {} rows, the device scratch holds {}", r,
                                m.dev->shape().logit_rows);
  }
  FERRY_RETURN_IF_ERROR(
      cuda::CopyToDevice(m.dev->cur(), rows, static_cast<uint64_t>(r * e) * sizeof(float)));
  FERRY_RETURN_IF_ERROR(cuda::RmsNorm(m.dev->cur(), static_cast<const float*>(m.output_norm.data),
                                      m.dev->cur(), r, e, hp.norm_eps));
  FERRY_RETURN_IF_ERROR(cuda::MatMul(m.output, m.dev->cur(), r, m.dev->logits(), m.x_work));
  return cuda::CopyToHost(y, m.dev->logits(),
                          static_cast<uint64_t>(r * hp.n_vocab) * sizeof(float));
}

#endif

}  // namespace ferry
