#include "kv/kv_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "backend/no_access_memory_testing.h"
#include "kernels/ref/dequantize.h"
#include "kernels/ref/quantize.h"
#include "tensor/fp16.h"

namespace ferry {
namespace {

// Deterministic row contents, different for every (seq, layer, pos, K/V, element).
std::vector<float> RowValues(int seq, int layer, int64_t pos, int64_t dim, bool is_v,
                             float salt = 0.0f) {
  std::vector<float> row(static_cast<size_t>(dim));
  for (int64_t i = 0; i < dim; ++i) {
    const double phase =
        0.37 * i + 0.113 * pos + 1.3 * layer + 2.1 * seq + (is_v ? 0.5 : 0.0) + salt;
    row[i] = static_cast<float>(std::sin(phase) * (1.0 + (pos % 7) * 0.25) + 0.01 * i);
  }
  return row;
}

// What a cache of `type` gives back for `row`: QuantizeRow followed by DequantizeRow.
std::vector<float> RoundTrip(DType type, const std::vector<float>& row) {
  const int64_t n = static_cast<int64_t>(row.size());
  std::vector<uint8_t> bytes(RowBytes(type, static_cast<uint64_t>(n)).value());
  EXPECT_TRUE(QuantizeRow(type, row.data(), bytes.data(), n).ok());
  std::vector<float> out(row.size());
  EXPECT_TRUE(DequantizeRow(type, bytes.data(), out.data(), n).ok());
  return out;
}

std::unique_ptr<KvCache> MakeCache(const KvCacheOptions& options) {
  auto cache = KvCache::Create(options);
  EXPECT_TRUE(cache.ok()) << cache.status().ToString();
  return cache.ok() ? std::move(cache).value() : nullptr;
}

// Reserves [seq_len, len) in steps of at most max_batch and stores every new position of
// every layer with RowValues(seq, layer, pos, ..., salt).
void Fill(KvCache& cache, int32_t seq, int64_t len, float salt = 0.0f) {
  const KvCacheOptions& o = cache.options();
  while (cache.seq_len(seq) < len) {
    const int64_t from = cache.seq_len(seq);
    const int64_t to = std::min(len, from + o.max_batch);
    ASSERT_TRUE(cache.Reserve(seq, to).ok());
    for (int l = 0; l < cache.num_layers(); ++l) {
      for (int64_t p = from; p < to; ++p) {
        auto k = RowValues(seq, l, p, o.k_dim[l], false, salt);
        auto v = RowValues(seq, l, p, o.v_dim[l], true, salt);
        ASSERT_TRUE(cache.Store(seq, l, p, k.data(), v.data()).ok());
      }
    }
  }
}

// Loads [p0, p1) of one layer and checks every row against RoundTrip(RowValues(...)).
void ExpectRows(const KvCache& cache, int32_t seq, int layer, int64_t p0, int64_t p1,
                float salt = 0.0f, int value_seq = -1) {
  const KvCacheOptions& o = cache.options();
  const int64_t kd = o.k_dim[layer], vd = o.v_dim[layer];
  std::vector<float> k(static_cast<size_t>((p1 - p0) * kd)), v(static_cast<size_t>((p1 - p0) * vd));
  ASSERT_TRUE(cache.Load(seq, layer, p0, p1, k.data(), v.data()).ok());
  const int vs = value_seq < 0 ? seq : value_seq;
  for (int64_t p = p0; p < p1; ++p) {
    auto want_k = RoundTrip(o.type, RowValues(vs, layer, p, kd, false, salt));
    auto want_v = RoundTrip(o.type, RowValues(vs, layer, p, vd, true, salt));
    for (int64_t i = 0; i < kd; ++i) {
      ASSERT_EQ(k[(p - p0) * kd + i], want_k[i])
          << "seq " << seq << " layer " << layer << " pos " << p << " k[" << i << "]";
    }
    for (int64_t i = 0; i < vd; ++i) {
      ASSERT_EQ(v[(p - p0) * vd + i], want_v[i])
          << "seq " << seq << " layer " << layer << " pos " << p << " v[" << i << "]";
    }
  }
}

KvCacheOptions SmallOptions(DType type) {
  KvCacheOptions o;
  o.type = type;
  o.k_dim = {64, 32};
  o.v_dim = {32, 96};
  o.num_ctx = 100;
  o.num_seqs = 2;
  o.max_batch = 24;
  o.block_tokens = 16;
  return o;
}

TEST(KvCacheTest, F32StoresAndLoadsExactly) {
  KvCacheOptions o = SmallOptions(DType::kF32);
  o.k_dim = {8, 5};  // f32 accepts any dimension
  o.v_dim = {12, 3};
  auto cache = MakeCache(o);
  ASSERT_NE(cache, nullptr);
  auto seq = cache->AddSequence();
  ASSERT_TRUE(seq.ok());
  Fill(*cache, *seq, 100);
  EXPECT_EQ(cache->seq_len(*seq), 100);
  for (int l = 0; l < 2; ++l) {
    std::vector<float> k(100 * o.k_dim[l]), v(100 * o.v_dim[l]);
    ASSERT_TRUE(cache->Load(*seq, l, 0, 100, k.data(), v.data()).ok());
    for (int64_t p = 0; p < 100; ++p) {
      auto want_k = RowValues(*seq, l, p, o.k_dim[l], false);
      auto want_v = RowValues(*seq, l, p, o.v_dim[l], true);
      for (int64_t i = 0; i < o.k_dim[l]; ++i) ASSERT_EQ(k[p * o.k_dim[l] + i], want_k[i]);
      for (int64_t i = 0; i < o.v_dim[l]; ++i) ASSERT_EQ(v[p * o.v_dim[l] + i], want_v[i]);
    }
  }
  // A range that starts and ends inside blocks.
  ExpectRows(*cache, *seq, 1, 13, 51);
}

TEST(KvCacheTest, F16EqualsFp16RoundTrip) {
  auto cache = MakeCache(SmallOptions(DType::kF16));
  ASSERT_NE(cache, nullptr);
  int32_t seq = cache->AddSequence().value();
  Fill(*cache, seq, 77);
  for (int l = 0; l < 2; ++l) {
    const int64_t kd = cache->options().k_dim[l];
    std::vector<float> k(77 * kd), v(77 * cache->options().v_dim[l]);
    ASSERT_TRUE(cache->Load(seq, l, 0, 77, k.data(), v.data()).ok());
    for (int64_t p = 0; p < 77; ++p) {
      auto row = RowValues(seq, l, p, kd, false);
      for (int64_t i = 0; i < kd; ++i) {
        ASSERT_EQ(k[p * kd + i], Fp16ToFloat(FloatToFp16(row[i])));
      }
    }
    ExpectRows(*cache, seq, l, 0, 77);
  }
}

class KvCacheQuantTest : public ::testing::TestWithParam<DType> {};

TEST_P(KvCacheQuantTest, EqualsQuantizeDequantizeAndIsClose) {
  const DType type = GetParam();
  auto cache = MakeCache(SmallOptions(type));
  ASSERT_NE(cache, nullptr);
  int32_t seq = cache->AddSequence().value();
  Fill(*cache, seq, 60);
  for (int l = 0; l < 2; ++l) {
    ExpectRows(*cache, seq, l, 0, 60);  // bit-exact against QuantizeRow -> DequantizeRow
    const int64_t kd = cache->options().k_dim[l];
    std::vector<float> k(60 * kd), v(60 * cache->options().v_dim[l]);
    ASSERT_TRUE(cache->Load(seq, l, 0, 60, k.data(), v.data()).ok());
    for (int64_t p = 0; p < 60; ++p) {
      auto row = RowValues(seq, l, p, kd, false);
      // Per 32-value block: q8_0 rounds to d / 2 with d = amax / 127; q4_0 is within d =
      // amax / 8 (plus the fp16 rounding of d).
      for (int64_t b = 0; b < kd / 32; ++b) {
        float amax = 0;
        for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(row[b * 32 + i]));
        const float bound = type == DType::kQ8_0 ? 0.6f * amax / 127 : 1.01f * amax / 8;
        for (int i = 0; i < 32; ++i) {
          const int64_t e = b * 32 + i;
          ASSERT_LE(std::fabs(k[p * kd + e] - row[e]), bound) << "pos " << p << " elem " << e;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, KvCacheQuantTest, ::testing::Values(DType::kQ8_0, DType::kQ4_0));

TEST(KvCacheTest, PoolBytesMatchesHandComputedAndAllocation) {
  KvCacheOptions o;
  o.k_dim.assign(5, 32);
  o.v_dim.assign(5, 32);
  o.num_ctx = 512;
  struct Case {
    DType type;
    uint64_t bytes;
  };
  const Case cases[] = {
      {DType::kF32, 5ull * 2 * 512 * 32 * 4},
      {DType::kF16, 5ull * 2 * 512 * 32 * 2},
      {DType::kQ8_0, 5ull * 2 * 512 * 34},
      {DType::kQ4_0, 5ull * 2 * 512 * 18},
  };
  for (const Case& c : cases) {
    o.type = c.type;
    auto planned = KvCache::PoolBytes(o);
    ASSERT_TRUE(planned.ok());
    EXPECT_EQ(*planned, c.bytes) << DTypeName(c.type);
    auto cache = MakeCache(o);
    ASSERT_NE(cache, nullptr);
    EXPECT_EQ(cache->bytes_allocated(), c.bytes);
    auto per_layer = KvCache::PoolLayerBytes(o);
    ASSERT_TRUE(per_layer.ok());
    ASSERT_EQ(per_layer->size(), 5u);
    for (int l = 0; l < 5; ++l) {
      EXPECT_EQ(cache->layer_bytes(l), c.bytes / 5);
      EXPECT_EQ((*per_layer)[l], c.bytes / 5);
    }
  }
  // num_ctx not a multiple of the block: rounded up to whole blocks, per sequence.
  o.type = DType::kF16;
  o.num_ctx = 100;  // 4 blocks of 32
  o.num_seqs = 3;
  EXPECT_EQ(KvCache::PoolBytes(o).value(), 5ull * 3 * 4 * 32 * (64 + 64));
  auto cache = MakeCache(o);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->bytes_allocated(), KvCache::PoolBytes(o).value());
  EXPECT_EQ(cache->layer_blocks(0), 12);
}

TEST(KvCacheTest, ArenasComeFromTheGivenAllocator) {
  const KvCacheOptions o = SmallOptions(DType::kQ8_0);
  const uint64_t pool = *KvCache::PoolBytes(o);
  DeviceAllocator alloc("cpu");
  {
    auto cache = KvCache::Create(o, &alloc);
    ASSERT_TRUE(cache.ok()) << cache.status().ToString();
    EXPECT_EQ((*cache)->bytes_allocated(), pool);
    EXPECT_EQ(alloc.allocated_bytes("kv"), pool);
    EXPECT_EQ(alloc.allocated_bytes(), pool);
  }
  EXPECT_EQ(alloc.allocated_bytes(), 0u);  // returned with the cache
  // Over the allocator's capacity: an error naming the layer, and nothing left allocated.
  DeviceAllocator small("cpu", pool - 1);
  auto cache = KvCache::Create(o, &small);
  ASSERT_FALSE(cache.ok());
  EXPECT_EQ(cache.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(cache.status().message().find("layer"), std::string::npos);
  EXPECT_EQ(small.allocated_bytes(), 0u);
}

// A plan's split: layer 0 on the CPU, layer 1 in a GPU's memory (here memory the host cannot
// touch at all, so any host access by the cache would fault). The device layer's arenas are
// counted on its allocator, zeroed through it, and never read or written by the cache: Store
// and Load refuse it, RowAddresses and BlockRows hand out its addresses. The host layer works
// as before.
TEST(KvCacheTest, LayersInDeviceMemoryAreCountedButNeverTouched) {
  KvCacheOptions o = SmallOptions(DType::kF16);
  auto source = std::make_unique<NoAccessMemory>();
  NoAccessMemory* raw = source.get();
  DeviceAllocator cpu("cpu"), gpu("cuda0", 0, std::move(source));
  {
    auto made = KvCache::Create(o, std::vector<DeviceAllocator*>{&cpu, &gpu});
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    KvCache& cache = **made;
    const std::vector<uint64_t> layer_bytes = *KvCache::PoolLayerBytes(o);
    EXPECT_EQ(cpu.allocated_bytes("kv"), layer_bytes[0]);
    EXPECT_EQ(gpu.allocated_bytes("kv"), layer_bytes[1]);
    EXPECT_EQ(raw->zeroed, 1);
    EXPECT_TRUE(cache.layer_on_host(0));
    EXPECT_FALSE(cache.layer_on_host(1));
    auto seq = cache.AddSequence();
    ASSERT_TRUE(seq.ok());
    ASSERT_TRUE(cache.Reserve(*seq, 20).ok());
    const auto k0 = RowValues(*seq, 0, 3, o.k_dim[0], false);
    const auto v0 = RowValues(*seq, 0, 3, o.v_dim[0], true);
    EXPECT_TRUE(cache.Store(*seq, 0, 3, k0.data(), v0.data()).ok());
    const auto k1 = RowValues(*seq, 1, 3, o.k_dim[1], false);
    const auto v1 = RowValues(*seq, 1, 3, o.v_dim[1], true);
    Status st = cache.Store(*seq, 1, 3, k1.data(), v1.data());
    EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(st.message().find("cuda0"), std::string::npos) << st.ToString();
    std::vector<float> k(o.k_dim[1]), v(o.v_dim[1]);
    EXPECT_EQ(cache.Load(*seq, 1, 3, 4, k.data(), v.data()).code(),
              StatusCode::kFailedPrecondition);
    // Position 17 is row 1 of the sequence's second block: the addresses step by a row.
    uint8_t *k_row = nullptr, *v_row = nullptr, *k_next = nullptr, *v_next = nullptr;
    ASSERT_TRUE(cache.RowAddresses(*seq, 1, 16, &k_row, &v_row).ok());
    ASSERT_TRUE(cache.RowAddresses(*seq, 1, 17, &k_next, &v_next).ok());
    EXPECT_EQ(k_next - k_row, static_cast<std::ptrdiff_t>(cache.k_row_bytes(1)));
    EXPECT_EQ(v_next - v_row, static_cast<std::ptrdiff_t>(cache.v_row_bytes(1)));
    const uint8_t* kb[2];
    const uint8_t* vb[2];
    int64_t first = -1;
    ASSERT_TRUE(cache.BlockRows(*seq, 1, 0, 20, kb, vb, &first).ok());
    EXPECT_EQ(first, 0);
    EXPECT_EQ(kb[1], k_row);
    EXPECT_EQ(vb[1], v_row);
    EXPECT_EQ(cache.RowAddresses(*seq, 1, 20, &k_row, &v_row).code(),
              StatusCode::kInvalidArgument);  // not reserved
  }
  EXPECT_EQ(gpu.allocated_bytes(), 0u);
  EXPECT_EQ(cpu.allocated_bytes(), 0u);
  // One allocator per layer, none null.
  EXPECT_EQ(KvCache::Create(o, std::vector<DeviceAllocator*>{&cpu}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCache::Create(o, std::vector<DeviceAllocator*>{&cpu, nullptr}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(KvCacheTest, SlidingWindowKeepsOnlyItsRing) {
  KvCacheOptions o;
  o.type = DType::kF16;
  o.k_dim = {32, 32};
  o.v_dim = {32, 32};
  o.window = {0, 512};  // layer 0 full attention, layer 1 sliding window
  o.num_ctx = 32768;
  o.max_batch = 512;
  o.block_tokens = 32;
  // Ring: ceil((512 + 512) / 32) + 1 = 33 blocks of 32 rows of (64 + 64) bytes.
  const uint64_t ring_bytes = 33ull * 32 * (64 + 64);
  const uint64_t full_bytes = 1024ull * 32 * (64 + 64);
  EXPECT_EQ(KvCache::PoolBytes(o).value(), full_bytes + ring_bytes);
  auto cache = MakeCache(o);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->bytes_allocated(), full_bytes + ring_bytes);
  EXPECT_EQ(cache->layer_bytes(1), ring_bytes);
  EXPECT_EQ(cache->layer_slots(1), 33);

  int32_t seq = cache->AddSequence().value();
  Fill(*cache, seq, 5000);
  EXPECT_EQ(cache->layer_free_blocks(1), 0);           // the whole ring is in use
  EXPECT_EQ(cache->layer_free_blocks(0), 1024 - 157);  // ceil(5000 / 32) blocks
  EXPECT_EQ(cache->oldest_readable(seq, 0), 0);
  EXPECT_LE(cache->oldest_readable(seq, 1), 5000 - (512 + 512));
  EXPECT_GT(cache->oldest_readable(seq, 1), 0);
  ExpectRows(*cache, seq, 1, 5000 - 512, 5000);   // the last window
  ExpectRows(*cache, seq, 1, 5000 - 1024, 5000);  // window + max_batch
  ExpectRows(*cache, seq, 0, 0, 5000);            // the full layer keeps everything
}

TEST(KvCacheTest, WindowLargerThanContextIsStoredAsFullLayer) {
  KvCacheOptions o;
  o.k_dim = {32, 32};
  o.v_dim = {32, 32};
  o.window = {0, 100};
  o.num_ctx = 256;  // ring would be ceil(612 / 32) + 1 = 21 > 8 blocks
  EXPECT_EQ(KvCache::PoolLayerBytes(o).value()[1], KvCache::PoolLayerBytes(o).value()[0]);
  auto cache = MakeCache(o);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->layer_slots(1), 8);
  int32_t seq = cache->AddSequence().value();
  Fill(*cache, seq, 256);
  EXPECT_EQ(cache->oldest_readable(seq, 1), 0);
  ExpectRows(*cache, seq, 1, 0, 256);
}

TEST(KvCacheTest, SequencesDoNotInterfere) {
  KvCacheOptions o = SmallOptions(DType::kQ8_0);
  o.num_seqs = 3;
  auto cache = MakeCache(o);
  ASSERT_NE(cache, nullptr);
  int32_t a = cache->AddSequence().value();
  int32_t b = cache->AddSequence().value();
  int32_t c = cache->AddSequence().value();
  EXPECT_EQ(a, 0);
  EXPECT_EQ(b, 1);
  EXPECT_EQ(c, 2);
  EXPECT_EQ(cache->num_live_sequences(), 3);
  // Interleave the steps of the three sequences so their blocks interleave in the arenas.
  for (int64_t len = 10; len <= 100; len += 10) {
    for (int32_t s : {a, b, c}) {
      const int64_t target = s == b ? std::min<int64_t>(len + 5, 100) : len;
      Fill(*cache, s, target);
    }
  }
  for (int32_t s : {a, b, c}) {
    EXPECT_EQ(cache->seq_len(s), 100);
    for (int l = 0; l < 2; ++l) ExpectRows(*cache, s, l, 0, 100);
  }
}

TEST(KvCacheTest, RemoveFreesBlocksForReuse) {
  KvCacheOptions o = SmallOptions(DType::kF16);  // 2 sequences x 7 blocks of 16 per layer
  auto cache = MakeCache(o);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->layer_blocks(0), 14);
  int32_t a = cache->AddSequence().value();
  int32_t b = cache->AddSequence().value();
  auto third = cache->AddSequence();
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted);

  Fill(*cache, a, 100);
  Fill(*cache, b, 100);
  EXPECT_EQ(cache->layer_free_blocks(0), 0);
  EXPECT_EQ(cache->layer_free_blocks(1), 0);
  ASSERT_TRUE(cache->RemoveSequence(a).ok());
  EXPECT_EQ(cache->layer_free_blocks(0), 7);
  EXPECT_EQ(cache->seq_len(a), 0);
  EXPECT_FALSE(cache->is_live(a));
  EXPECT_EQ(cache->RemoveSequence(a).code(), StatusCode::kNotFound);
  EXPECT_EQ(cache->RemoveSequence(7).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->Reserve(a, 10).code(), StatusCode::kNotFound);

  // The freed blocks serve a new sequence (same id), with new contents, while b is intact.
  int32_t d = cache->AddSequence().value();
  EXPECT_EQ(d, a);
  EXPECT_EQ(cache->seq_len(d), 0);
  Fill(*cache, d, 100, /*salt=*/3.0f);
  EXPECT_EQ(cache->layer_free_blocks(0), 0);
  for (int l = 0; l < 2; ++l) {
    ExpectRows(*cache, d, l, 0, 100, 3.0f);
    ExpectRows(*cache, b, l, 0, 100);
  }
}

TEST(KvCacheTest, ReserveBeyondContextIsOutOfRange) {
  auto cache = MakeCache(SmallOptions(DType::kF16));
  ASSERT_NE(cache, nullptr);
  int32_t seq = cache->AddSequence().value();
  Fill(*cache, seq, 90);
  const int32_t free_before = cache->layer_free_blocks(0);
  Status s = cache->Reserve(seq, 101);
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_NE(s.message().find("context"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("100"), std::string::npos) << s.message();
  EXPECT_EQ(cache->seq_len(seq), 90);
  EXPECT_EQ(cache->layer_free_blocks(0), free_before);
  EXPECT_TRUE(cache->Reserve(seq, 100).ok());  // exactly num_ctx fits
  EXPECT_TRUE(cache->Reserve(seq, 50).ok());   // shrinking is Truncate's job: no-op
  EXPECT_EQ(cache->seq_len(seq), 100);
}

TEST(KvCacheTest, ReserveMoreThanMaxBatchIsInvalid) {
  auto cache = MakeCache(SmallOptions(DType::kF16));  // max_batch 24
  ASSERT_NE(cache, nullptr);
  int32_t seq = cache->AddSequence().value();
  EXPECT_EQ(cache->Reserve(seq, 25).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->seq_len(seq), 0);
  EXPECT_TRUE(cache->Reserve(seq, 24).ok());
  EXPECT_TRUE(cache->Reserve(seq, 48).ok());
  EXPECT_EQ(cache->Reserve(-1, 10).code(), StatusCode::kInvalidArgument);
}

TEST(KvCacheTest, TruncateThenStoreAgain) {
  auto cache = MakeCache(SmallOptions(DType::kQ4_0));
  ASSERT_NE(cache, nullptr);
  int32_t seq = cache->AddSequence().value();
  Fill(*cache, seq, 70);  // 5 blocks of 16
  EXPECT_EQ(cache->layer_free_blocks(0), 14 - 5);
  ASSERT_TRUE(cache->Truncate(seq, 20).ok());
  EXPECT_EQ(cache->seq_len(seq), 20);
  EXPECT_EQ(cache->layer_free_blocks(0), 14 - 2);  // blocks 0 and 1 (positions 0..31) kept
  EXPECT_TRUE(cache->Truncate(seq, 30).ok());      // longer than seq_len: no-op
  EXPECT_EQ(cache->seq_len(seq), 20);
  EXPECT_EQ(cache->Truncate(seq, -1).code(), StatusCode::kInvalidArgument);

  // Re-store positions 20..59 with other values; 0..19 keep the old ones.
  Fill(*cache, seq, 60, /*salt=*/1.5f);
  for (int l = 0; l < 2; ++l) {
    ExpectRows(*cache, seq, l, 0, 20);
    ExpectRows(*cache, seq, l, 20, 60, 1.5f);
  }
  ASSERT_TRUE(cache->Truncate(seq, 0).ok());
  EXPECT_EQ(cache->layer_free_blocks(0), 14);
  EXPECT_EQ(cache->layer_free_blocks(1), 14);
}

KvCacheOptions SmallRingOptions() {
  KvCacheOptions o;
  o.type = DType::kF32;
  o.k_dim = {4, 4};
  o.v_dim = {4, 4};
  o.window = {0, 8};
  o.num_ctx = 1000;
  o.max_batch = 8;
  o.block_tokens = 4;  // ring: ceil(16 / 4) + 1 = 5 blocks = 20 positions
  return o;
}

TEST(KvCacheTest, SlidingWindowTruncateKeepsWhatTheWindowNeeds) {
  auto cache = MakeCache(SmallRingOptions());
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->layer_slots(1), 5);
  int32_t seq = cache->AddSequence().value();
  Fill(*cache, seq, 100);  // ring holds blocks 20..24: positions 80..99
  EXPECT_EQ(cache->oldest_readable(seq, 1), 80);

  // Continuing from 85 needs positions 78..84; 78 and 79 are gone.
  Status s = cache->Truncate(seq, 85);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_EQ(cache->seq_len(seq), 100);

  // Continuing from 95 needs 88..94: held.
  ASSERT_TRUE(cache->Truncate(seq, 95).ok());
  EXPECT_EQ(cache->seq_len(seq), 95);
  EXPECT_EQ(cache->oldest_readable(seq, 1), 80);
  Fill(*cache, seq, 103, /*salt=*/2.0f);  // block 25 evicts block 20 (80..83)
  EXPECT_EQ(cache->oldest_readable(seq, 1), 84);
  ExpectRows(*cache, seq, 1, 84, 95);
  ExpectRows(*cache, seq, 1, 95, 103, 2.0f);
  ExpectRows(*cache, seq, 0, 0, 95);
  ExpectRows(*cache, seq, 0, 95, 103, 2.0f);
  // Each query p of the last step sees [p - 7, p]: all readable.
  EXPECT_LE(cache->oldest_readable(seq, 1), 95 - 7);

  // Truncating to 0 always works; the sequence starts over.
  ASSERT_TRUE(cache->Truncate(seq, 0).ok());
  EXPECT_EQ(cache->layer_free_blocks(1), 5);
  Fill(*cache, seq, 40, /*salt=*/4.0f);
  ExpectRows(*cache, seq, 1, 40 - 16, 40, 4.0f);
}

TEST(KvCacheTest, TruncateInsideAnEvictedBlockAfterWrap) {
  // Window 1 needs no earlier position, so any truncation succeeds; positions whose block was
  // overwritten must then not be reported readable.
  KvCacheOptions o = SmallRingOptions();
  o.window = {0, 1};  // ring: ceil(9 / 4) + 1 = 4 blocks
  auto cache = MakeCache(o);
  ASSERT_NE(cache, nullptr);
  int32_t seq = cache->AddSequence().value();
  Fill(*cache, seq, 64);                       // ring holds blocks 12..15
  ASSERT_TRUE(cache->Truncate(seq, 46).ok());  // block 11 (44..47) was overwritten by block 15
  EXPECT_EQ(cache->oldest_readable(seq, 1), 46);
  Fill(*cache, seq, 50, 5.0f);
  EXPECT_EQ(cache->oldest_readable(seq, 1), 46);
  ExpectRows(*cache, seq, 1, 46, 50, 5.0f);
}

TEST(KvCacheTest, LoadingAnEvictedPositionIsAnError) {
  auto cache = MakeCache(SmallRingOptions());
  ASSERT_NE(cache, nullptr);
  int32_t seq = cache->AddSequence().value();
  Fill(*cache, seq, 100);
  std::vector<float> k(4 * 4, 1.0f), v(4 * 4, 1.0f);
  // Checked in every build: never freed or foreign memory, never silent zeros.
  const Status s = cache->Load(seq, 1, 0, 4, k.data(), v.data());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("evicted"), std::string::npos) << s.message();
  // Storing an evicted or unreserved position, or into a sequence that is not live, too.
  EXPECT_EQ(cache->Store(seq, 1, 0, k.data(), v.data()).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(cache->Store(seq, 1, 100, k.data(), v.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->Store(seq + 1, 0, 0, k.data(), v.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->Load(seq, 7, 0, 1, k.data(), v.data()).code(), StatusCode::kInvalidArgument);
}

// Paged sharing: a pool for num_seqs full sequences serves more (max_seqs) short ones, and
// refuses (ResourceExhausted, nothing changed) when the blocks run out.
TEST(KvCacheTest, MoreShortSequencesThanFullOnesShareThePool) {
  KvCacheOptions o = SmallOptions(DType::kF16);
  o.num_ctx = 128;  // 8 blocks of 16 per layer
  o.num_seqs = 1;
  o.max_seqs = 4;
  auto cache = MakeCache(o);
  ASSERT_NE(cache, nullptr);
  const int64_t total = cache->total_blocks();
  std::vector<int32_t> seqs;
  for (int i = 0; i < 4; ++i) seqs.push_back(cache->AddSequence().value());
  EXPECT_EQ(cache->AddSequence().status().code(), StatusCode::kResourceExhausted);
  const int64_t quarter = o.num_ctx / 4;
  for (int32_t s : seqs) Fill(*cache, s, quarter);
  for (int32_t s : seqs) {
    for (int l = 0; l < cache->num_layers(); ++l) ExpectRows(*cache, s, l, 0, quarter);
  }
  EXPECT_EQ(cache->free_blocks(), 0);
  EXPECT_EQ(cache->BlocksToReserve(seqs[0], 0, quarter + 1), 1);
  const Status st = cache->Reserve(seqs[0], quarter + 1);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_EQ(cache->seq_len(seqs[0]), quarter);
  ASSERT_TRUE(cache->RemoveSequence(seqs[3]).ok());
  EXPECT_EQ(cache->free_blocks(), total / 4);
  EXPECT_TRUE(cache->Reserve(seqs[0], quarter + 1).ok());
}

// Grow: the pool becomes exactly what Create makes for the larger num_ctx, live sequences keep
// their rows and can continue past the old limit; ring layers keep their ring.
TEST(KvCacheTest, GrowKeepsSequencesAndMatchesAFreshPool) {
  for (const KvCacheOptions& base : {SmallOptions(DType::kQ8_0), SmallRingOptions()}) {
    DeviceAllocator alloc("cpu");
    auto created = KvCache::Create(base, &alloc);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    KvCache& cache = **created;
    const int32_t seq = cache.AddSequence().value();
    Fill(cache, seq, base.num_ctx);
    EXPECT_EQ(cache.Reserve(seq, base.num_ctx + 1).code(), StatusCode::kOutOfRange);
    KvCacheOptions bigger = base;
    bigger.num_ctx = base.num_ctx * 3;
    ASSERT_TRUE(cache.Grow(bigger.num_ctx).ok());
    EXPECT_EQ(cache.options().num_ctx, bigger.num_ctx);
    EXPECT_EQ(cache.bytes_allocated(), KvCache::PoolBytes(bigger).value());
    EXPECT_EQ(alloc.allocated_bytes("kv"), KvCache::PoolBytes(bigger).value());
    for (int l = 0; l < cache.num_layers(); ++l) {
      EXPECT_EQ(cache.layer_bytes(l), KvCache::PoolLayerBytes(bigger).value()[l]);
    }
    Fill(cache, seq, bigger.num_ctx);
    for (int l = 0; l < cache.num_layers(); ++l) {
      const int64_t from = cache.oldest_readable(seq, l);
      ExpectRows(cache, seq, l, from, bigger.num_ctx);
    }
    // Smaller: nothing happens.
    ASSERT_TRUE(cache.Grow(base.num_ctx).ok());
    EXPECT_EQ(cache.options().num_ctx, bigger.num_ctx);
  }
}

TEST(KvCacheTest, InvalidOptions) {
  auto expect_invalid = [](const KvCacheOptions& o, const char* what) {
    auto planned = KvCache::PoolBytes(o);
    EXPECT_EQ(planned.status().code(), StatusCode::kInvalidArgument) << what;
    auto created = KvCache::Create(o);
    EXPECT_EQ(created.status().code(), StatusCode::kInvalidArgument) << what;
  };
  const KvCacheOptions good = SmallOptions(DType::kQ8_0);
  ASSERT_TRUE(KvCache::PoolBytes(good).ok());

  KvCacheOptions o = good;
  o.num_ctx = 0;
  expect_invalid(o, "num_ctx 0");
  o = good;
  o.num_ctx = -5;
  expect_invalid(o, "num_ctx < 0");
  o = good;
  o.num_seqs = 0;
  expect_invalid(o, "num_seqs 0");
  o = good;
  o.max_batch = 0;
  expect_invalid(o, "max_batch 0");
  o = good;
  o.block_tokens = 0;
  expect_invalid(o, "block_tokens 0");
  o = good;
  o.k_dim.clear();
  o.v_dim.clear();
  expect_invalid(o, "no layers");
  o = good;
  o.v_dim.push_back(32);
  expect_invalid(o, "k_dim and v_dim lengths differ");
  o = good;
  o.window = {0};
  expect_invalid(o, "window length differs");
  o = good;
  o.window = {0, -1};
  expect_invalid(o, "negative window");
  o = good;
  o.k_dim[1] = 0;
  expect_invalid(o, "zero dim");
  o = good;
  o.k_dim[1] = 48;
  expect_invalid(o, "q8_0 dim not a multiple of 32");
  o.type = DType::kQ4_0;
  expect_invalid(o, "q4_0 dim not a multiple of 32");
  o.type = DType::kF16;
  EXPECT_TRUE(KvCache::PoolBytes(o).ok()) << "f16 takes any dim";
  for (DType t : {DType::kQ4_1, DType::kBF16, DType::kQ4_K, DType::kI32}) {
    o = good;
    o.type = t;
    expect_invalid(o, "unsupported type");
  }
  o = good;
  o.num_ctx = std::numeric_limits<int64_t>::max();
  o.block_tokens = 1;
  expect_invalid(o, "more than 2^31 blocks");
  o = good;
  o.type = DType::kF32;
  o.k_dim[0] = int64_t{1} << 58;
  expect_invalid(o, "bytes overflow");
}

}  // namespace
}  // namespace ferry
