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

// Quantized K/V rows are whole q8_0 / q4_0 blocks of 32 elements.
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
  if (!IsKvCacheType(o.type)) {
    return InvalidArgumentError("kv cache type {} is not supported (f16, q8_0, q4_0, f32)",
                                DTypeName(o.type));
  }
  const bool quantized = o.type == DType::kQ8_0 || o.type == DType::kQ4_0;
  if (o.num_ctx <= 0) return InvalidArgumentError("kv cache num_ctx {} must be > 0", o.num_ctx);
  if (o.num_seqs <= 0) {
    return InvalidArgumentError("kv cache num_seqs {} must be > 0", o.num_seqs);
  }
  if (o.max_seqs != 0 && o.max_seqs < o.num_seqs) {
    return InvalidArgumentError("kv cache max_seqs {} must be 0 or >= num_seqs {}", o.max_seqs,
                                o.num_seqs);
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

KvCacheOptions KvOptionsForLayers(DType type, int64_t n_layer, int64_t n_head_kv,
                                  int64_t head_dim_k, int64_t head_dim_v,
                                  const std::vector<int64_t>& window, int64_t num_ctx,
                                  int32_t num_seqs, int32_t max_seqs, int64_t max_batch) {
  KvCacheOptions o;
  o.type = type;
  o.k_dim.assign(static_cast<size_t>(n_layer), n_head_kv * head_dim_k);
  o.v_dim.assign(static_cast<size_t>(n_layer), n_head_kv * head_dim_v);
  o.window = window;
  o.num_ctx = num_ctx;
  o.num_seqs = num_seqs;
  o.max_seqs = max_seqs;
  o.max_batch = std::min(max_batch, num_ctx);
  return o;
}

const std::vector<DType>& KvCacheTypes() {
  static const std::vector<DType> kTypes = {DType::kF16, DType::kQ8_0, DType::kQ4_0};
  return kTypes;
}

bool IsKvCacheType(DType type) {
  return type == DType::kF32 ||
         std::find(KvCacheTypes().begin(), KvCacheTypes().end(), type) != KvCacheTypes().end();
}

StatusOr<DType> ParseKvCacheType(std::string_view name) {
  for (DType t : KvCacheTypes()) {
    if (name == DTypeName(t)) return t;
  }
  if (name == DTypeName(DType::kF32)) return DType::kF32;
  return InvalidArgumentError(
      "KV cache type '{}' is not supported (f16, q8_0, q4_0; f32 for tests)", name);
}

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
  std::unique_ptr<DeviceAllocator> own;
  if (allocator == nullptr) {
    own = std::make_unique<DeviceAllocator>("cpu");
    allocator = own.get();
  }
  const std::vector<DeviceAllocator*> per_layer(options.k_dim.size(), allocator);
  if (own == nullptr) return Create(options, per_layer);
  // The private allocator must outlive the arenas: it moves into the cache before any exists.
  return CreateWith(options, per_layer, std::move(own));
}

StatusOr<std::unique_ptr<KvCache>> KvCache::Create(
    const KvCacheOptions& options, const std::vector<DeviceAllocator*>& layer_allocators) {
  return CreateWith(options, layer_allocators, nullptr);
}

StatusOr<std::unique_ptr<KvCache>> KvCache::CreateWith(
    const KvCacheOptions& options, const std::vector<DeviceAllocator*>& layer_allocators,
    std::unique_ptr<DeviceAllocator> own_allocator) {
  FERRY_ASSIGN_OR_RETURN(std::vector<LayerGeometry> geometry, ComputeGeometry(options));
  if (layer_allocators.size() != geometry.size() ||
      std::find(layer_allocators.begin(), layer_allocators.end(), nullptr) !=
          layer_allocators.end()) {
    return InvalidArgumentError("kv cache: {} layer allocators for {} layers (none may be null)",
                                layer_allocators.size(), geometry.size());
  }
  std::unique_ptr<KvCache> cache(new KvCache(options));
  cache->own_allocator_ = std::move(own_allocator);
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
    layer.allocator = layer_allocators[l];
    Status st = cache->AddArena(static_cast<int>(l), g.blocks);
    if (!st.ok()) {
      return ResourceExhaustedError(
          "kv cache: cannot allocate {} bytes for layer {} ({} bytes so far): {}", g.bytes, l,
          total, st.message());
    }
    total += g.bytes;
  }
  cache->bytes_allocated_ = total;

  if (cache->options_.max_seqs == 0) cache->options_.max_seqs = options.num_seqs;
  cache->seqs_.resize(static_cast<std::size_t>(cache->options_.max_seqs));
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

Status KvCache::AddArena(int l, int32_t blocks) {
  Layer& layer = layers_[static_cast<std::size_t>(l)];
  const uint64_t bt = static_cast<uint64_t>(options_.block_tokens);
  const uint64_t rows = static_cast<uint64_t>(blocks) * bt;
  const uint64_t bytes = rows * (layer.k_row_bytes + layer.v_row_bytes);
  FERRY_ASSIGN_OR_RETURN(DeviceAllocator::Buffer buffer, layer.allocator->Allocate(bytes, "kv"));
  // Zeroing commits the pages now (a load that does not fit fails here, not mid-generation)
  // and makes never-stored rows read as zeros. Device memory is zeroed by its allocator.
  FERRY_RETURN_IF_ERROR(layer.allocator->Zero(buffer, 0, bytes));
  Layer::Arena arena;
  arena.first_block =
      layer.arenas.empty() ? 0 : layer.arenas.back().first_block + layer.arenas.back().blocks;
  arena.blocks = blocks;
  arena.v_offset = rows * layer.k_row_bytes;
  arena.buffer = std::move(buffer);
  // A stack: the lowest new block is handed out first.
  layer.free_blocks.reserve(layer.free_blocks.size() + static_cast<std::size_t>(blocks));
  for (int32_t i = blocks - 1; i >= 0; --i) layer.free_blocks.push_back(arena.first_block + i);
  layer.arenas.push_back(std::move(arena));
  return Status::Ok();
}

uint8_t* KvCache::Layer::KRow(int32_t block, int64_t r, int64_t bt) const {
  for (const Arena& a : arenas) {
    if (block < a.first_block + a.blocks) {
      const uint64_t row = static_cast<uint64_t>(block - a.first_block) * bt + r;
      return a.buffer.data() + row * k_row_bytes;
    }
  }
  return nullptr;
}

uint8_t* KvCache::Layer::VRow(int32_t block, int64_t r, int64_t bt) const {
  for (const Arena& a : arenas) {
    if (block < a.first_block + a.blocks) {
      const uint64_t row = static_cast<uint64_t>(block - a.first_block) * bt + r;
      return a.buffer.data() + a.v_offset + row * v_row_bytes;
    }
  }
  return nullptr;
}

Status KvCache::Grow(int64_t new_num_ctx) {
  if (new_num_ctx <= options_.num_ctx) return Status::Ok();
  KvCacheOptions grown = options_;
  grown.num_ctx = new_num_ctx;
  FERRY_ASSIGN_OR_RETURN(std::vector<LayerGeometry> geometry, ComputeGeometry(grown));
  // Allocate every layer's new arena before changing anything visible.
  std::vector<std::size_t> old_arenas(layers_.size());
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    old_arenas[l] = layers_[l].arenas.size();
    const int32_t extra = geometry[l].blocks - layers_[l].blocks;
    if (extra < 0 || geometry[l].slots < layers_[l].slots) {
      return InternalError("kv cache: growing to num_ctx {} would shrink layer {}", new_num_ctx, l);
    }
    if (extra == 0) continue;
    const std::size_t free_before = layers_[l].free_blocks.size();
    Status st = AddArena(static_cast<int>(l), extra);
    if (!st.ok()) {
      // Undo the layers already grown.
      for (std::size_t u = 0; u <= l; ++u) {
        while (layers_[u].arenas.size() > old_arenas[u]) {
          const Layer::Arena& a = layers_[u].arenas.back();
          std::erase_if(layers_[u].free_blocks, [&](int32_t b) { return b >= a.first_block; });
          layers_[u].arenas.pop_back();
        }
      }
      (void)free_before;
      return ResourceExhaustedError("kv cache: cannot grow layer {} to num_ctx {}: {}", l,
                                    new_num_ctx, st.message());
    }
  }
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    const int32_t old_slots = layer.slots;
    layer.slots = geometry[l].slots;
    layer.blocks = geometry[l].blocks;
    bytes_allocated_ += geometry[l].bytes - layer.bytes;
    layer.bytes = geometry[l].bytes;
    if (layer.slots != old_slots) {
      for (Sequence& s : seqs_) {
        s.block[l].resize(static_cast<std::size_t>(layer.slots), -1);
        s.logical[l].resize(static_cast<std::size_t>(layer.slots), -1);
      }
    }
  }
  options_.num_ctx = new_num_ctx;
  return Status::Ok();
}

int64_t KvCache::total_blocks() const {
  int64_t n = 0;
  for (const Layer& l : layers_) n += l.blocks;
  return n;
}

int64_t KvCache::free_blocks() const {
  int64_t n = 0;
  for (const Layer& l : layers_) n += static_cast<int64_t>(l.free_blocks.size());
  return n;
}

int32_t KvCache::BlocksFor(int layer, int64_t len) const {
  if (len <= 0) return 0;
  const int64_t n = (len - 1) / options_.block_tokens + 1;
  return static_cast<int32_t>(std::min<int64_t>(n, layers_[layer].slots));
}

int32_t KvCache::HeldBlocks(int32_t seq, int layer) const {
  if (!is_live(seq)) return 0;
  int32_t n = 0;
  for (int32_t b : seqs_[seq].block[layer]) n += b >= 0 ? 1 : 0;
  return n;
}

int32_t KvCache::BlocksToReserve(int32_t seq, int layer, int64_t new_len) const {
  if (!is_live(seq)) return 0;
  const Sequence& s = seqs_[seq];
  if (new_len <= s.len) return 0;
  const int64_t bt = options_.block_tokens;
  const int32_t slots = layers_[layer].slots;
  const int64_t first = s.len / bt;
  const int64_t last = (new_len - 1) / bt;
  int32_t need = 0;
  // Slots visited once each (a span longer than the ring wraps onto itself).
  const int64_t span = std::min<int64_t>(last - first + 1, slots);
  for (int64_t b = first; b < first + span; ++b) {
    if (s.block[layer][b % slots] < 0) ++need;
  }
  return need;
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
  return seq >= 0 && seq < options_.max_seqs && seqs_[seq].live;
}

Status KvCache::CheckSequence(int32_t seq) const {
  if (seq < 0 || seq >= options_.max_seqs) {
    return InvalidArgumentError("kv cache: sequence {} outside [0, {})", seq, options_.max_seqs);
  }
  if (!seqs_[seq].live) return NotFoundError("kv cache: sequence {} is not live", seq);
  return Status::Ok();
}

StatusOr<int32_t> KvCache::AddSequence() {
  for (int32_t i = 0; i < options_.max_seqs; ++i) {
    Sequence& s = seqs_[i];
    if (s.live) continue;
    s.live = true;
    s.len = 0;
    std::fill(s.readable_from.begin(), s.readable_from.end(), 0);
    ++num_live_;
    return i;
  }
  return MakeStatus(StatusCode::kResourceExhausted, "kv cache: all {} sequences are in use",
                    options_.max_seqs);
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

Status KvCache::RowAddresses(int32_t seq, int layer_index, int64_t pos, uint8_t** k_row,
                             uint8_t** v_row) const {
  if (!(is_live(seq) && layer_index >= 0 && layer_index < num_layers() && pos >= 0 &&
        pos < seqs_[seq].len)) {
    return InvalidArgumentError(
        "KvCache::Store: sequence {} layer {} position {} is not a live sequence's reserved "
        "position",
        seq, layer_index, pos);
  }
  const Sequence& s = seqs_[seq];
  const Layer& layer = layers_[layer_index];
  const int64_t bt = options_.block_tokens;
  const int64_t b = pos / bt;
  const int64_t slot = b % layer.slots;
  const int32_t block = s.block[layer_index][slot];
  if (block < 0 || s.logical[layer_index][slot] != b) {
    return FailedPreconditionError(
        "KvCache::Store: position {} of sequence {} was evicted from layer {}'s ring", pos, seq,
        layer_index);
  }
  *k_row = layer.KRow(block, pos % bt, bt);
  *v_row = layer.VRow(block, pos % bt, bt);
  return Status::Ok();
}

bool KvCache::layer_on_host(int layer) const {
  return layers_[static_cast<std::size_t>(layer)].allocator->host_accessible();
}

Status KvCache::Store(int32_t seq, int layer_index, int64_t pos, const float* k, const float* v) {
  uint8_t* k_row = nullptr;
  uint8_t* v_row = nullptr;
  FERRY_RETURN_IF_ERROR(RowAddresses(seq, layer_index, pos, &k_row, &v_row));
  const Layer& layer = layers_[layer_index];
  if (!layer.allocator->host_accessible()) {
    return FailedPreconditionError("KvCache::Store: layer {}'s rows are in {} memory", layer_index,
                                   layer.allocator->device());
  }
  if (options_.type == DType::kF16) {
    // The common cache type, written on every step: the F16C conversion (bitwise the same).
    ConvertF32ToF16(k, reinterpret_cast<uint16_t*>(k_row), layer.k_dim);
    ConvertF32ToF16(v, reinterpret_cast<uint16_t*>(v_row), layer.v_dim);
    return Status::Ok();
  }
  FERRY_RETURN_IF_ERROR(QuantizeRow(options_.type, k, k_row, layer.k_dim));
  return QuantizeRow(options_.type, v, v_row, layer.v_dim);
}

Status KvCache::Load(int32_t seq, int layer_index, int64_t p0, int64_t p1, float* k_out,
                     float* v_out) const {
  if (!(is_live(seq) && layer_index >= 0 && layer_index < num_layers() && p0 >= 0 && p0 <= p1 &&
        p1 <= seqs_[seq].len)) {
    return InvalidArgumentError(
        "KvCache::Load: sequence {} layer {} positions [{}, {}) are not a live sequence's "
        "reserved range",
        seq, layer_index, p0, p1);
  }
  const Sequence& s = seqs_[seq];
  const Layer& layer = layers_[layer_index];
  if (!layer.allocator->host_accessible()) {
    return FailedPreconditionError("KvCache::Load: layer {}'s rows are in {} memory", layer_index,
                                   layer.allocator->device());
  }
  const int64_t bt = options_.block_tokens;
  if (p0 < p1 && p0 < s.readable_from[layer_index]) {
    return FailedPreconditionError(
        "KvCache::Load: position {} of sequence {} was evicted from layer {}'s ring", p0, seq,
        layer_index);
  }
  int64_t p = p0;
  while (p < p1) {
    const int64_t b = p / bt;
    const int64_t run_end = std::min(p1, (b + 1) * bt);  // positions of one block
    const int64_t slot = b % layer.slots;
    const int32_t block = s.block[layer_index][slot];
    if (block < 0 || s.logical[layer_index][slot] != b) {
      return FailedPreconditionError(
          "KvCache::Load: position {} of sequence {} is not held by layer {}", p, seq, layer_index);
    }
    // Consecutive rows of a block are one contiguous row of the cache type.
    const int64_t n = run_end - p;
    const uint8_t* k_src = layer.KRow(block, p % bt, bt);
    const uint8_t* v_src = layer.VRow(block, p % bt, bt);
    float* const k_dst = k_out + (p - p0) * layer.k_dim;
    float* const v_dst = v_out + (p - p0) * layer.v_dim;
    if (options_.type == DType::kF16) {
      // The common cache type, read on every step: the F16C conversion (bitwise the same).
      ConvertF16ToF32(reinterpret_cast<const uint16_t*>(k_src), k_dst, n * layer.k_dim);
      ConvertF16ToF32(reinterpret_cast<const uint16_t*>(v_src), v_dst, n * layer.v_dim);
    } else {
      FERRY_RETURN_IF_ERROR(DequantizeRow(options_.type, k_src, k_dst, n * layer.k_dim));
      FERRY_RETURN_IF_ERROR(DequantizeRow(options_.type, v_src, v_dst, n * layer.v_dim));
    }
    p = run_end;
  }
  return Status::Ok();
}

int64_t KvCache::BlockSpan(int64_t p0, int64_t p1) const {
  const int64_t bt = options_.block_tokens;
  return p1 <= p0 ? 0 : (p1 - 1) / bt - p0 / bt + 1;
}

uint64_t KvCache::k_row_bytes(int layer) const { return layers_[layer].k_row_bytes; }
uint64_t KvCache::v_row_bytes(int layer) const { return layers_[layer].v_row_bytes; }

Status KvCache::BlockRows(int32_t seq, int layer_index, int64_t p0, int64_t p1,
                          const uint8_t** k_blocks, const uint8_t** v_blocks,
                          int64_t* first_pos) const {
  if (!(is_live(seq) && layer_index >= 0 && layer_index < num_layers() && p0 >= 0 && p0 < p1 &&
        p1 <= seqs_[seq].len)) {
    return InvalidArgumentError(
        "KvCache::BlockRows: sequence {} layer {} positions [{}, {}) are not a live sequence's "
        "reserved range",
        seq, layer_index, p0, p1);
  }
  const Sequence& s = seqs_[seq];
  const Layer& layer = layers_[layer_index];
  const int64_t bt = options_.block_tokens;
  if (p0 < s.readable_from[layer_index]) {
    return FailedPreconditionError(
        "KvCache::BlockRows: position {} of sequence {} was evicted from layer {}'s ring", p0, seq,
        layer_index);
  }
  *first_pos = p0 / bt * bt;
  for (int64_t b = p0 / bt, i = 0; b <= (p1 - 1) / bt; ++b, ++i) {
    const int64_t slot = b % layer.slots;
    const int32_t block = s.block[layer_index][slot];
    if (block < 0 || s.logical[layer_index][slot] != b) {
      return FailedPreconditionError(
          "KvCache::BlockRows: position {} of sequence {} is not held by layer {}",
          std::max(p0, b * bt), seq, layer_index);
    }
    k_blocks[i] = layer.KRow(block, 0, bt);
    v_blocks[i] = layer.VRow(block, 0, bt);
  }
  return Status::Ok();
}

}  // namespace ferry
