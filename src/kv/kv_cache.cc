#include "kv/kv_cache.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <limits>
#include <new>
#include <utility>

#include "kernels/cpu/convert.h"
#include "kernels/ref/dequantize.h"
#include "kernels/ref/quantize.h"

namespace ferry {
namespace {

// Arena start alignment: a cache line, enough for every block struct and for SIMD loads.
// Quantized K/V rows are whole 32-element blocks.
constexpr int64_t kQuantBlock = 32;

// The sizes of one layer, computed the same way for PoolBytes and Create.
struct LayerGeometry {
  uint64_t k_row_bytes = 0;
  uint64_t v_row_bytes = 0;
  int32_t slots = 0;   // block-table slots per sequence
  int32_t blocks = 0;  // num_seqs * slots
  uint64_t v_offset = 0;
  uint64_t bytes = 0;
};

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

StatusOr<std::vector<LayerGeometry>> ComputeGeometry(const KvCacheOptions& o) {
  switch (o.type) {
    case DType::kF32:
    case DType::kF16:
    case DType::kQ8_0:
    case DType::kQ4_0:
      break;
    default:
      return InvalidArgumentError("kv cache type {} is not supported (f32, f16, q8_0, q4_0)",
                                  static_cast<uint32_t>(o.type));
  }
  const bool quantized = o.type == DType::kQ8_0 || o.type == DType::kQ4_0;
  if (o.num_ctx <= 0) return InvalidArgumentError("kv cache num_ctx {} must be > 0", o.num_ctx);
  if (o.num_seqs <= 0) {
    return InvalidArgumentError("kv cache num_seqs {} must be > 0", o.num_seqs);
  }
  if (o.max_batch <= 0) {
    return InvalidArgumentError("kv cache max_batch {} must be > 0", o.max_batch);
  }
  if (o.block_tokens <= 0) {
    return InvalidArgumentError("kv cache block_tokens {} must be > 0", o.block_tokens);
  }
  if (o.k_dim.empty()) return InvalidArgumentError("kv cache has no layers (k_dim is empty)");
  if (o.v_dim.size() != o.k_dim.size() ||
      (!o.window.empty() && o.window.size() != o.k_dim.size())) {
    return InvalidArgumentError(
        "kv cache per-layer vectors differ in length: k_dim {}, v_dim {}, window {}",
        o.k_dim.size(), o.v_dim.size(), o.window.size());
  }
  if (o.k_dim.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return InvalidArgumentError("kv cache has too many layers ({})", o.k_dim.size());
  }

  const int64_t bt = o.block_tokens;
  const int64_t full_slots = (o.num_ctx - 1) / bt + 1;  // ceil(num_ctx / block_tokens)
  std::vector<LayerGeometry> geometry(o.k_dim.size());
  for (std::size_t l = 0; l < o.k_dim.size(); ++l) {
    const int64_t k_dim = o.k_dim[l];
    const int64_t v_dim = o.v_dim[l];
    const int64_t window = o.window.empty() ? 0 : o.window[l];
    if (k_dim <= 0 || v_dim <= 0) {
      return InvalidArgumentError("kv cache layer {}: k_dim {} and v_dim {} must be > 0", l, k_dim,
                                  v_dim);
    }
    if (quantized && (k_dim % kQuantBlock != 0 || v_dim % kQuantBlock != 0)) {
      return InvalidArgumentError(
          "kv cache layer {}: type {} needs k_dim ({}) and v_dim ({}) to be multiples of {}", l,
          DTypeName(o.type), k_dim, v_dim, kQuantBlock);
    }
    if (window < 0) {
      return InvalidArgumentError("kv cache layer {}: window {} must be >= 0", l, window);
    }
    LayerGeometry& g = geometry[l];
    StatusOr<uint64_t> k_row = RowBytes(o.type, static_cast<uint64_t>(k_dim));
    StatusOr<uint64_t> v_row = RowBytes(o.type, static_cast<uint64_t>(v_dim));
    if (!k_row.ok() || !v_row.ok()) {
      return InvalidArgumentError("kv cache layer {}: {}", l,
                                  (k_row.ok() ? v_row : k_row).status().message());
    }
    g.k_row_bytes = *k_row;
    g.v_row_bytes = *v_row;

    int64_t slots = full_slots;
    int64_t span;  // positions a ring must keep: window + max_batch
    if (window > 0 && !__builtin_add_overflow(window, o.max_batch, &span)) {
      const int64_t ring = (span - 1) / bt + 2;  // ceil(span / block_tokens) + 1
      slots = std::min(ring, full_slots);
    }
    uint64_t blocks;
    if (MulOverflows(static_cast<uint64_t>(slots), static_cast<uint64_t>(o.num_seqs), &blocks) ||
        blocks > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
      return InvalidArgumentError(
          "kv cache layer {}: {} sequences x {} blocks exceeds 2^31-1 blocks; raise block_tokens "
          "or lower num_ctx / num_seqs",
          l, o.num_seqs, slots);
    }
    g.slots = static_cast<int32_t>(slots);
    g.blocks = static_cast<int32_t>(blocks);
    uint64_t rows, k_bytes, v_bytes;
    if (MulOverflows(blocks, static_cast<uint64_t>(bt), &rows) ||
        MulOverflows(rows, g.k_row_bytes, &k_bytes) ||
        MulOverflows(rows, g.v_row_bytes, &v_bytes) ||
        __builtin_add_overflow(k_bytes, v_bytes, &g.bytes) ||
        g.bytes > static_cast<uint64_t>(std::numeric_limits<std::ptrdiff_t>::max())) {
      return InvalidArgumentError("kv cache layer {}: pool size overflows", l);
    }
    g.v_offset = k_bytes;
  }
  return geometry;
}

}  // namespace


StatusOr<std::vector<uint64_t>> KvCache::PoolLayerBytes(const KvCacheOptions& options) {
  FERRY_ASSIGN_OR_RETURN(std::vector<LayerGeometry> geometry, ComputeGeometry(options));
  std::vector<uint64_t> bytes;
  bytes.reserve(geometry.size());
  for (const LayerGeometry& g : geometry) bytes.push_back(g.bytes);
  return bytes;
}

StatusOr<uint64_t> KvCache::PoolBytes(const KvCacheOptions& options) {
  FERRY_ASSIGN_OR_RETURN(std::vector<uint64_t> layer_bytes, PoolLayerBytes(options));
  uint64_t total = 0;
  for (uint64_t b : layer_bytes) {
    if (__builtin_add_overflow(total, b, &total)) {
      return InvalidArgumentError("kv cache pool size overflows");
    }
  }
  return total;
}

KvCache::KvCache(const KvCacheOptions& options) : options_(options) {}

KvCache::~KvCache() = default;

StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const KvCacheOptions& options,
                                                   DeviceAllocator* allocator) {
  FERRY_ASSIGN_OR_RETURN(std::vector<LayerGeometry> geometry, ComputeGeometry(options));
  std::unique_ptr<KvCache> cache(new KvCache(options));
  if (allocator == nullptr) {
    cache->own_allocator_ = std::make_unique<DeviceAllocator>("cpu");
    allocator = cache->own_allocator_.get();
  }
  if (cache->options_.window.empty()) cache->options_.window.assign(options.k_dim.size(), 0);

  uint64_t total = 0;
  cache->layers_.resize(geometry.size());
  for (std::size_t l = 0; l < geometry.size(); ++l) {
    const LayerGeometry& g = geometry[l];
    Layer& layer = cache->layers_[l];
    layer.k_dim = options.k_dim[l];
    layer.v_dim = options.v_dim[l];
    layer.window = cache->options_.window[l];
    layer.k_row_bytes = g.k_row_bytes;
    layer.v_row_bytes = g.v_row_bytes;
    layer.slots = g.slots;
    layer.blocks = g.blocks;
    layer.bytes = g.bytes;
    layer.v_offset = g.v_offset;
    auto arena = allocator->Allocate(g.bytes, "kv");
    if (!arena.ok()) {
      return MakeStatus(StatusCode::kResourceExhausted,
                        "kv cache: cannot allocate {} bytes for layer {} ({} bytes so far): {}",
                        g.bytes, l, total, arena.status().message());
    }
    layer.arena = std::move(*arena);
    uint8_t* const data = layer.arena.data();
    // Zeroing commits the pages now (a load that does not fit fails here, not mid-generation)
    // and makes never-stored rows read as zeros.
    std::memset(data, 0, g.bytes);
    total += g.bytes;
    layer.free_blocks.resize(static_cast<std::size_t>(g.blocks));
    // A stack: block 0 is handed out first.
    for (int32_t i = 0; i < g.blocks; ++i) layer.free_blocks[g.blocks - 1 - i] = i;
  }
  cache->bytes_allocated_ = total;

  cache->seqs_.resize(static_cast<std::size_t>(options.num_seqs));
  for (Sequence& s : cache->seqs_) {
    s.block.resize(geometry.size());
    s.logical.resize(geometry.size());
    s.readable_from.assign(geometry.size(), 0);
    for (std::size_t l = 0; l < geometry.size(); ++l) {
      s.block[l].assign(static_cast<std::size_t>(geometry[l].slots), -1);
      s.logical[l].assign(static_cast<std::size_t>(geometry[l].slots), -1);
    }
  }
  return cache;
}

uint64_t KvCache::layer_bytes(int layer) const {
  assert(layer >= 0 && layer < num_layers());
  return layers_[layer].bytes;
}

int32_t KvCache::layer_blocks(int layer) const {
  assert(layer >= 0 && layer < num_layers());
  return layers_[layer].blocks;
}

int32_t KvCache::layer_free_blocks(int layer) const {
  assert(layer >= 0 && layer < num_layers());
  return static_cast<int32_t>(layers_[layer].free_blocks.size());
}

int32_t KvCache::layer_slots(int layer) const {
  assert(layer >= 0 && layer < num_layers());
  return layers_[layer].slots;
}

bool KvCache::is_live(int32_t seq) const {
  return seq >= 0 && seq < options_.num_seqs && seqs_[seq].live;
}

Status KvCache::CheckSequence(int32_t seq) const {
  if (seq < 0 || seq >= options_.num_seqs) {
    return InvalidArgumentError("kv cache: sequence {} outside [0, {})", seq, options_.num_seqs);
  }
  if (!seqs_[seq].live) return NotFoundError("kv cache: sequence {} is not live", seq);
  return Status::Ok();
}

StatusOr<int32_t> KvCache::AddSequence() {
  for (int32_t i = 0; i < options_.num_seqs; ++i) {
    Sequence& s = seqs_[i];
    if (s.live) continue;
    s.live = true;
    s.len = 0;
    std::fill(s.readable_from.begin(), s.readable_from.end(), 0);
    ++num_live_;
    return i;
  }
  return MakeStatus(StatusCode::kResourceExhausted, "kv cache: all {} sequences are in use",
                    options_.num_seqs);
}

void KvCache::FreeSlot(int layer, Sequence& s, int32_t slot) {
  int32_t& block = s.block[layer][slot];
  if (block >= 0) layers_[layer].free_blocks.push_back(block);
  block = -1;
  s.logical[layer][slot] = -1;
}

Status KvCache::RemoveSequence(int32_t seq) {
  FERRY_RETURN_IF_ERROR(CheckSequence(seq));
  Sequence& s = seqs_[seq];
  for (int l = 0; l < num_layers(); ++l) {
    for (int32_t slot = 0; slot < layers_[l].slots; ++slot) FreeSlot(l, s, slot);
    s.readable_from[l] = 0;
  }
  s.len = 0;
  s.live = false;
  --num_live_;
  return Status::Ok();
}

Status KvCache::Reserve(int32_t seq, int64_t new_len) {
  FERRY_RETURN_IF_ERROR(CheckSequence(seq));
  Sequence& s = seqs_[seq];
  if (new_len <= s.len) return Status::Ok();
  if (new_len > options_.num_ctx) {
    return OutOfRangeError(
        "context length {} exceeded: sequence {} needs {} positions (num_ctx {})", options_.num_ctx,
        seq, new_len, options_.num_ctx);
  }
  if (new_len - s.len > options_.max_batch) {
    return InvalidArgumentError(
        "kv cache: sequence {} grows by {} positions in one step, more than max_batch {}", seq,
        new_len - s.len, options_.max_batch);
  }
  const int64_t bt = options_.block_tokens;
  const int64_t first = s.len / bt;
  const int64_t last = (new_len - 1) / bt;

  // Check every layer before changing any, so that an error leaves the cache as it was.
  for (int l = 0; l < num_layers(); ++l) {
    const Layer& layer = layers_[l];
    // max_batch sizes the rings so that one step's blocks never share a slot.
    assert(last - first + 1 <= layer.slots);
    std::size_t need = 0;
    for (int64_t b = first; b <= last; ++b) {
      if (s.block[l][b % layer.slots] < 0) ++need;
    }
    if (need > layer.free_blocks.size()) {
      return MakeStatus(StatusCode::kResourceExhausted,
                        "kv cache: layer {} needs {} blocks for sequence {}, {} free", l, need, seq,
                        layer.free_blocks.size());
    }
  }
  for (int l = 0; l < num_layers(); ++l) {
    Layer& layer = layers_[l];
    for (int64_t b = first; b <= last; ++b) {
      const int64_t slot = b % layer.slots;
      int32_t& block = s.block[l][slot];
      int32_t& logical = s.logical[l][slot];
      if (block < 0) {
        block = layer.free_blocks.back();
        layer.free_blocks.pop_back();
      } else if (logical != b) {
        // The ring wraps: the block's older positions are evicted.
        s.readable_from[l] = std::max(s.readable_from[l], (static_cast<int64_t>(logical) + 1) * bt);
      }
      logical = static_cast<int32_t>(b);
    }
  }
  s.len = new_len;
  return Status::Ok();
}

int64_t KvCache::seq_len(int32_t seq) const { return is_live(seq) ? seqs_[seq].len : 0; }

int64_t KvCache::oldest_readable(int32_t seq, int layer) const {
  assert(layer >= 0 && layer < num_layers());
  if (!is_live(seq)) return 0;
  return std::min(seqs_[seq].readable_from[layer], seqs_[seq].len);
}

Status KvCache::Truncate(int32_t seq, int64_t len) {
  if (len < 0) return InvalidArgumentError("kv cache: truncate to negative length {}", len);
  FERRY_RETURN_IF_ERROR(CheckSequence(seq));
  Sequence& s = seqs_[seq];
  if (len >= s.len) return Status::Ok();
  const int64_t bt = options_.block_tokens;

  // New readable_from per layer: the held blocks counted back from the one holding len - 1.
  std::vector<int64_t> readable_from(layers_.size(), 0);
  for (int l = 0; l < num_layers(); ++l) {
    const Layer& layer = layers_[l];
    if (len == 0) continue;
    int64_t b = (len - 1) / bt;
    while (b >= 0 && s.logical[l][b % layer.slots] == b && b * bt >= s.readable_from[l]) --b;
    const int64_t from = std::max(s.readable_from[l], (b + 1) * bt);
    readable_from[l] = std::min(from, len);
    if (layer.window > 0) {
      const int64_t needed = std::max<int64_t>(0, len - layer.window + 1);
      if (readable_from[l] > needed) {
        return MakeStatus(StatusCode::kFailedPrecondition,
                          "kv cache: sliding-window layer {} of sequence {} no longer holds "
                          "positions {}..{} needed to continue from {}; truncate to 0 instead",
                          l, seq, needed, readable_from[l] - 1, len);
      }
    }
  }
  for (int l = 0; l < num_layers(); ++l) {
    for (int32_t slot = 0; slot < layers_[l].slots; ++slot) {
      const int32_t logical = s.logical[l][slot];
      if (logical >= 0 && static_cast<int64_t>(logical) * bt >= len) FreeSlot(l, s, slot);
    }
    s.readable_from[l] = readable_from[l];
  }
  s.len = len;
  return Status::Ok();
}

void KvCache::Store(int32_t seq, int layer_index, int64_t pos, const float* k, const float* v) {
  const bool args_ok = is_live(seq) && layer_index >= 0 && layer_index < num_layers() && pos >= 0 &&
                       pos < seqs_[seq].len;
  assert(args_ok && "KvCache::Store: not a live sequence, layer or reserved position");
  if (!args_ok) return;
  const Sequence& s = seqs_[seq];
  Layer& layer = layers_[layer_index];
  const int64_t bt = options_.block_tokens;
  const int64_t b = pos / bt;
  const int64_t slot = b % layer.slots;
  const int32_t block = s.block[layer_index][slot];
  const bool held = block >= 0 && s.logical[layer_index][slot] == b;
  assert(held && "KvCache::Store: position evicted from the sliding-window ring");
  if (!held) return;
  const uint64_t row = static_cast<uint64_t>(block) * bt + static_cast<uint64_t>(pos % bt);
  uint8_t* k_dst = layer.arena.data() + row * layer.k_row_bytes;
  uint8_t* v_dst = layer.arena.data() + layer.v_offset + row * layer.v_row_bytes;
  // Dims and types were validated by Create, so these cannot fail.
  [[maybe_unused]] Status k_status = QuantizeRow(options_.type, k, k_dst, layer.k_dim);
  [[maybe_unused]] Status v_status = QuantizeRow(options_.type, v, v_dst, layer.v_dim);
  assert(k_status.ok() && v_status.ok());
}

void KvCache::Load(int32_t seq, int layer_index, int64_t p0, int64_t p1, float* k_out,
                   float* v_out) const {
  const bool args_ok = is_live(seq) && layer_index >= 0 && layer_index < num_layers() && p0 >= 0 &&
                       p0 <= p1 && p1 <= seqs_[seq].len;
  assert(args_ok && "KvCache::Load: not a live sequence, layer or stored range");
  if (!args_ok) return;
  const Sequence& s = seqs_[seq];
  const Layer& layer = layers_[layer_index];
  const int64_t bt = options_.block_tokens;
  const int64_t readable_from = s.readable_from[layer_index];
  assert(p0 >= std::min(readable_from, p1) &&
         "KvCache::Load: position evicted from the sliding-window ring");

  int64_t p = p0;
  while (p < p1) {
    const int64_t b = p / bt;
    const int64_t run_end = std::min(p1, (b + 1) * bt);  // positions of one block
    const int64_t slot = b % layer.slots;
    const int32_t block = s.block[layer_index][slot];
    const bool held = block >= 0 && s.logical[layer_index][slot] == b;
    assert(held && "KvCache::Load: position not held by the cache");
    int64_t start = p;
    if (!held || p < readable_from) {
      // Release builds only (asserted above): evicted rows read as zeros.
      const int64_t zero_end = held ? std::min(run_end, readable_from) : run_end;
      const int64_t n = zero_end - p;
      std::fill_n(k_out + (p - p0) * layer.k_dim, n * layer.k_dim, 0.0f);
      std::fill_n(v_out + (p - p0) * layer.v_dim, n * layer.v_dim, 0.0f);
      start = zero_end;
    }
    if (start < run_end) {
      // Consecutive rows of a block are one contiguous row of the cache type.
      const int64_t n = run_end - start;
      const uint64_t row = static_cast<uint64_t>(block) * bt + static_cast<uint64_t>(start % bt);
      const uint8_t* k_src = layer.arena.data() + row * layer.k_row_bytes;
      const uint8_t* v_src = layer.arena.data() + layer.v_offset + row * layer.v_row_bytes;
      float* const k_dst = k_out + (start - p0) * layer.k_dim;
      float* const v_dst = v_out + (start - p0) * layer.v_dim;
      if (options_.type == DType::kF16) {
        // The common cache type, read on every step: the F16C conversion (bitwise the same).
        ConvertF16ToF32(reinterpret_cast<const uint16_t*>(k_src), k_dst, n * layer.k_dim);
        ConvertF16ToF32(reinterpret_cast<const uint16_t*>(v_src), v_dst, n * layer.v_dim);
      } else {
        [[maybe_unused]] Status k_status =
            DequantizeRow(options_.type, k_src, k_dst, n * layer.k_dim);
        [[maybe_unused]] Status v_status =
            DequantizeRow(options_.type, v_src, v_dst, n * layer.v_dim);
        assert(k_status.ok() && v_status.ok());
      }
    }
    p = run_end;
  }
}

}  // namespace ferry
