// KvCache: the paged key/value cache of one loaded model, on the host.
//
// The whole pool is allocated (and zeroed) by Create(); nothing is allocated afterwards, so the
// bytes a memory planner predicts with PoolBytes() are exactly the bytes held (invariant 1 of
// the design: the plan is the allocation).
//
// Layout. Each layer owns one or more arenas (one from Create, one more per Grow), each split
// into fixed-size blocks of `block_tokens` positions:
//   arena = K part [arena_blocks, block_tokens, k_row_bytes] then V part [arena_blocks,
//           block_tokens, v_row_bytes], where k_row_bytes = RowBytes(type, k_dim) (one token's
//           K row: n_kv_heads * head_dim_k elements, e.g. 34 bytes per 32 values for q8_0).
// Physical block ids run over the layer's arenas in order (arena 0 holds ids 0..n0-1, ...).
// Rows inside a block are consecutive, so a run of positions inside one block is one
// contiguous row of `type`. Each live sequence keeps, per layer, a block table mapping its
// logical block b (positions b*block_tokens .. (b+1)*block_tokens-1) to a physical block:
//   - full-attention layers: table slot b, ceil(num_ctx / block_tokens) slots per sequence;
//   - sliding-window layers (window w > 0): a ring of
//       ring_blocks = ceil((w + max_batch) / block_tokens) + 1
//     slots, position p in slot (p / block_tokens) % ring_blocks; when the ring wraps, the
//     oldest block is overwritten (evicted). If ring_blocks would be >= the full-layer slot
//     count, the layer is stored like a full-attention layer and never evicts.
// Layer blocks: num_seqs * slots per sequence — the pool holds num_seqs full sequences.
// Blocks are shared by all sequences (paged): a sequence takes blocks as it grows, so up to
// max_seqs shorter sequences can be live at once. Free blocks of each layer are kept on a free
// list; Reserve takes blocks from it, Truncate and RemoveSequence give them back.
//
// Growing. Grow(num_ctx') makes the pool what Create would have made for num_ctx' (same
// bytes, per layer: PoolLayerBytes), adding one arena per layer with the new blocks; held
// blocks and live sequences are untouched. It is valid because a layer's slot count only
// grows with num_ctx while it is below the ring size, and then no sequence has wrapped.
//
// Positions. A sequence holds positions [0, seq_len). Reserve(seq, n) extends it to n
// positions (the next step's batch); the caller then Store()s every new position in every
// layer before Load()ing it (reserved but not yet stored rows read as stale data or zeros).
// One step may add at most max_batch positions: that bound is what makes the rings big
// enough. For a sliding-window layer, the positions still readable are
// [oldest_readable(seq, layer), seq_len). Reading [max(0, p - w + 1), p] for any position p
// added by the latest Reserve is always valid; so is any p0 >= seq_len - (w + max_batch)
// unless the sequence was truncated within the last w + max_batch positions.
//
// Thread-safety: not thread-safe. A KvCache is owned by one inference thread (the model's
// Runner); only that thread calls AddSequence, RemoveSequence, Reserve and Truncate. While none
// of those runs, Store and Load may be called from that thread's worker pool concurrently,
// provided no two calls write (Store) or write and read the same (seq, layer, position) row.
// HTTP threads never touch it.
#ifndef FERRY_KV_KV_CACHE_H_
#define FERRY_KV_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "backend/allocator.h"
#include "base/status.h"
#include "tensor/dtype.h"

namespace ferry {

struct KvCacheOptions {
  // Element type of the stored rows: kF32, kF16, kQ8_0 or kQ4_0 (others: InvalidArgument).
  // Default kF16: 2 bytes per value, the usual KV precision. kQ8_0 (34 bytes per 32 values)
  // takes about half of that at a small precision cost; kQ4_0 (18 bytes per 32) about a quarter
  // at a visible one. kF32 (4 bytes, exact) is for tests and reference runs. Quantized types
  // need every layer's k_dim and v_dim to be a multiple of 32.
  DType type = DType::kF16;
  // Per layer [num_layers]: elements of one token's K row, n_kv_heads * head_dim_k (> 0).
  std::vector<int64_t> k_dim;
  // Per layer [num_layers]: elements of one token's V row, n_kv_heads * head_dim_v (> 0).
  std::vector<int64_t> v_dim;
  // Per layer [num_layers], or empty for "all layers full attention". 0 = full attention;
  // w > 0 = sliding window: a query at position p sees keys p-w+1..p only, so the layer keeps
  // only the last w + max_batch positions of each sequence (a ring of blocks). Negative:
  // InvalidArgument.
  std::vector<int64_t> window;
  // Most positions per sequence (positions 0..num_ctx-1); > 0. Memory grows linearly with it
  // for full-attention layers.
  int64_t num_ctx = 0;
  // Full sequences the pool holds (num_parallel); > 0. Default 1. Memory grows linearly with
  // it: that many sequences can all reach num_ctx at once.
  int32_t num_seqs = 1;
  // Sequence ids that can be live at once (0: num_seqs); >= num_seqs. More live sequences than
  // num_seqs share the same blocks: they fit while they are short. Costs no pool memory.
  int32_t max_seqs = 0;
  // Most positions added to a sequence in one step (num_batch); > 0. Default 512. Sizes the
  // sliding-window rings: a larger batch needs larger rings.
  int64_t max_batch = 512;
  // Positions per block; > 0. Default 32. Smaller blocks waste less memory at the end of a
  // sequence and in rings but make block tables longer and contiguous runs shorter.
  int32_t block_tokens = 32;
};

// The cache of a decoder whose every layer has n_head_kv heads of head_dim_k / head_dim_v
// (windows per layer, 0 = full): the one definition Model::KvOptions and the planner's
// KvOptionsFor both use.
KvCacheOptions KvOptionsForLayers(DType type, int64_t n_layer, int64_t n_head_kv,
                                  int64_t head_dim_k, int64_t head_dim_v,
                                  const std::vector<int64_t>& window, int64_t num_ctx,
                                  int32_t num_seqs, int32_t max_seqs, int64_t max_batch);

// The KV cache element types ferry offers users, in order of preference: f16, q8_0, q4_0
// (f32 is accepted too, for tests and reference runs). The one list the CLI, the planner and
// the server check against.
const std::vector<DType>& KvCacheTypes();
bool IsKvCacheType(DType type);  // one of KvCacheTypes() or f32
// Parses "f16", "q8_0", "q4_0" or "f32"; InvalidArgument naming the accepted names.
StatusOr<DType> ParseKvCacheType(std::string_view name);

class KvCache {
 public:
  // Validates the options and allocates the whole pool (zeroed). Errors: InvalidArgument for
  // num_ctx <= 0, num_seqs <= 0, max_batch <= 0, block_tokens <= 0, no layers, per-layer vectors
  // of different lengths, dims <= 0 (or not a multiple of 32 for quantized types), a negative
  // window, another type, or sizes that overflow (more than 2^31-1 blocks in a layer, bytes
  // beyond 64 bits); ResourceExhausted if the memory cannot be allocated.
  // allocator: where the arenas come from (purpose "kv", one buffer per layer), so the device's
  // accounting sees them; it must outlive the cache. Null: a private allocator of the cache's
  // own (unlimited). A capacity exceeded in the allocator is ResourceExhausted.
  static StatusOr<std::unique_ptr<KvCache>> Create(const KvCacheOptions& options,
                                                   DeviceAllocator* allocator = nullptr);
  // As Create, with layer l's arenas (Create's and Grow's) from layer_allocators[l]: one per
  // layer (else InvalidArgument), each non-null and outliving the cache. This is how a plan's
  // split puts the KV blocks of the layers a GPU runs in that GPU's memory. A layer whose
  // allocator is not host_accessible() holds device memory the cache never reads or writes: it
  // is zeroed through its allocator, Store and Load refuse it (FailedPrecondition), and the
  // device's kernels write and read its rows at the addresses RowAddresses and BlockRows give.
  static StatusOr<std::unique_ptr<KvCache>> Create(
      const KvCacheOptions& options, const std::vector<DeviceAllocator*>& layer_allocators);

  // Bytes Create(options) would allocate, summed over layers / per layer [num_layers], without
  // allocating. Same errors as Create except ResourceExhausted. Counts the K/V arenas only;
  // block tables and free lists (a few bytes per block) are host bookkeeping outside the pool.
  static StatusOr<uint64_t> PoolBytes(const KvCacheOptions& options);
  static StatusOr<std::vector<uint64_t>> PoolLayerBytes(const KvCacheOptions& options);

  // Grows the pool to what Create would allocate for num_ctx = new_num_ctx (the other options
  // unchanged): one more arena per layer, from the same allocator; live sequences keep their
  // blocks and positions and may then reach new_num_ctx. new_num_ctx <= num_ctx: nothing
  // happens. Errors (nothing changes): InvalidArgument as Create; ResourceExhausted from the
  // allocator.
  Status Grow(int64_t new_num_ctx);

  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;
  ~KvCache();

  const KvCacheOptions& options() const { return options_; }
  int num_layers() const { return static_cast<int>(layers_.size()); }
  // Bytes of the pool: equals PoolBytes(options()); per layer equals PoolLayerBytes()[layer].
  uint64_t bytes_allocated() const { return bytes_allocated_; }
  uint64_t layer_bytes(int layer) const;
  // Blocks of a layer: all of them, and those on the free list.
  int32_t layer_blocks(int layer) const;
  int32_t layer_free_blocks(int layer) const;
  // Block-table slots per sequence of a layer: ceil(num_ctx / block_tokens) for full
  // attention, the ring size for a sliding-window layer that evicts.
  int32_t layer_slots(int layer) const;
  // Blocks of all layers: in the pool, free, held by sequences.
  int64_t total_blocks() const;
  int64_t free_blocks() const;
  int64_t used_blocks() const { return total_blocks() - free_blocks(); }
  // Blocks a sequence of `len` positions holds in `layer` (at most the layer's slots).
  int32_t BlocksFor(int layer, int64_t len) const;
  // Blocks that Reserve(seq, new_len) would take from `layer`'s free list now (0 for a
  // sequence that is not live).
  int32_t BlocksToReserve(int32_t seq, int layer, int64_t new_len) const;
  // Blocks `seq` holds in `layer`.
  int32_t HeldBlocks(int32_t seq, int layer) const;

  // Starts an empty sequence and returns its id, the lowest free id in [0, max_seqs).
  // ResourceExhausted when max_seqs sequences are live.
  StatusOr<int32_t> AddSequence();
  // Ends a live sequence and returns its blocks to the free lists; its id may be reused.
  // InvalidArgument for an id outside [0, max_seqs), NotFound for one that is not live.
  Status RemoveSequence(int32_t seq);
  int32_t num_live_sequences() const { return num_live_; }
  bool is_live(int32_t seq) const;

  // Extends a live sequence to new_len positions, making room for [seq_len, new_len).
  // new_len <= seq_len: nothing happens. Errors (nothing changes): OutOfRange ("context length
  // N exceeded: ...") if new_len > num_ctx; InvalidArgument if new_len - seq_len > max_batch,
  // for an unknown sequence (NotFound if not live); ResourceExhausted if a layer has no free
  // block (cannot happen with a pool sized for num_seqs * num_ctx, which Create makes).
  Status Reserve(int32_t seq, int64_t new_len);
  // Positions the sequence holds: [0, seq_len). 0 for an id that is not live.
  int64_t seq_len(int32_t seq) const;
  // Forgets positions >= len (prompt-prefix reuse), returning blocks that start at or after
  // len to the free lists; len >= seq_len: nothing happens. A sliding-window layer can only
  // continue from len if it still holds positions [max(0, len - window + 1), len); if the ring
  // has already overwritten some of them: FailedPrecondition and nothing changes (truncate to
  // 0 and recompute instead). InvalidArgument for len < 0 or an unknown sequence, NotFound for
  // one that is not live.
  Status Truncate(int32_t seq, int64_t len);
  // Lowest position from which on all of [.., seq_len) is still held by the layer: 0 for
  // full-attention layers and for a sequence that is not live; at most seq_len.
  int64_t oldest_readable(int32_t seq, int layer) const;

  // Stores position pos of one layer of a live sequence, converting from f32 to the cache type.
  //   k: [k_dim(layer)] floats, v: [v_dim(layer)] floats (finite).
  // Errors (checked in every build; nothing is written): InvalidArgument unless seq is live,
  // 0 <= layer < num_layers and 0 <= pos < seq_len(seq); FailedPrecondition for a position a
  // sliding-window ring has already evicted.
  Status Store(int32_t seq, int layer, int64_t pos, const float* k, const float* v);

  // Where Store would write position pos of one layer: its K row (k_row_bytes(layer) bytes)
  // and V row, in the layer's memory (device addresses for a layer on a GPU). Same errors as
  // Store. Valid until the sequence changes.
  Status RowAddresses(int32_t seq, int layer, int64_t pos, uint8_t** k_row, uint8_t** v_row) const;
  // False for a layer whose blocks are in device memory (see Create).
  bool layer_on_host(int layer) const;

  // Reads positions [p0, p1) of one layer of a live sequence, converted to f32:
  //   k_out: [p1 - p0, k_dim(layer)] floats, v_out: [p1 - p0, v_dim(layer)] floats.
  // Preconditions: seq live, 0 <= layer < num_layers, 0 <= p0 <= p1 <= seq_len(seq), and for a
  // sliding-window layer p0 >= oldest_readable(seq, layer) (see the file comment for when
  // that holds). Errors (checked in every build; the outputs are then unspecified):
  // InvalidArgument for arguments outside those ranges, FailedPrecondition for a position that
  // was evicted or never reserved.
  Status Load(int32_t seq, int layer, int64_t p0, int64_t p1, float* k_out, float* v_out) const;

  // Where positions [p0, p1) (p0 < p1) of one layer of a live sequence are stored, for kernels
  // that read the cache in place (AttentionArgs::kv): block i of the span holds positions
  // [first_pos + i * block_tokens, first_pos + (i + 1) * block_tokens), first_pos =
  // p0 rounded down to a block boundary; k_blocks[i] / v_blocks[i] point at its first row
  // (rows of a block are consecutive, k_row_bytes / v_row_bytes apart). k_blocks, v_blocks:
  // [BlockSpan(p0, p1)] pointers, valid until the sequence changes (Reserve, Truncate,
  // RemoveSequence). Same preconditions and errors as Load.
  int64_t BlockSpan(int64_t p0, int64_t p1) const;
  Status BlockRows(int32_t seq, int layer, int64_t p0, int64_t p1, const uint8_t** k_blocks,
                   const uint8_t** v_blocks, int64_t* first_pos) const;
  uint64_t k_row_bytes(int layer) const;
  uint64_t v_row_bytes(int layer) const;

 private:
  struct Layer {
    int64_t k_dim = 0;
    int64_t v_dim = 0;
    int64_t window = 0;
    uint64_t k_row_bytes = 0;
    uint64_t v_row_bytes = 0;
    int32_t slots = 0;   // block-table slots per sequence
    int32_t blocks = 0;  // physical blocks: num_seqs * slots
    uint64_t bytes = 0;  // blocks * block_tokens * (k_row_bytes + v_row_bytes)
    // Arenas in block-id order: arena i holds blocks [first_block, first_block + blocks).
    struct Arena {
      int32_t first_block = 0;
      int32_t blocks = 0;
      uint64_t v_offset = 0;           // where the V part starts: blocks * block_tokens * k_row
      DeviceAllocator::Buffer buffer;  // [blocks * block_tokens * (k_row + v_row)], 64-aligned
    };
    std::vector<Arena> arenas;
    DeviceAllocator* allocator = nullptr;  // where its arenas come from
    std::vector<int32_t> free_blocks;      // stack of free physical block ids
    // Addresses of the K and V rows of position `r` (0 .. block_tokens) of a block.
    uint8_t* KRow(int32_t block, int64_t r, int64_t bt) const;
    uint8_t* VRow(int32_t block, int64_t r, int64_t bt) const;
  };
  struct Sequence {
    bool live = false;
    int64_t len = 0;
    // Per layer [num_layers][slots]: physical block of each slot (-1: none) and the logical
    // block it holds (-1: none).
    std::vector<std::vector<int32_t>> block;
    std::vector<std::vector<int32_t>> logical;
    // Per layer [num_layers]: positions below this were evicted (sliding-window rings).
    std::vector<int64_t> readable_from;
  };

  explicit KvCache(const KvCacheOptions& options);
  static StatusOr<std::unique_ptr<KvCache>> CreateWith(
      const KvCacheOptions& options, const std::vector<DeviceAllocator*>& layer_allocators,
      std::unique_ptr<DeviceAllocator> own_allocator);
  Status CheckSequence(int32_t seq) const;
  // Allocates an arena of `blocks` new blocks for layer l and puts them on its free list.
  Status AddArena(int l, int32_t blocks);
  void FreeSlot(int layer, Sequence& s, int32_t slot);

  KvCacheOptions options_;
  // Set when Create() was given no allocator; declared before layers_ so it outlives them.
  std::unique_ptr<DeviceAllocator> own_allocator_;
  std::vector<Layer> layers_;
  std::vector<Sequence> seqs_;  // [max_seqs]
  int32_t num_live_ = 0;
  uint64_t bytes_allocated_ = 0;
};

}  // namespace ferry

#endif  // FERRY_KV_KV_CACHE_H_
