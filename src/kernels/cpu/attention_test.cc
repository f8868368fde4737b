#include "kernels/cpu/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/ref/dequantize.h"
#include "kernels/ref/quantize.h"
#include "tensor/fp16.h"

namespace ferry {
namespace {

struct Case {
  int64_t n_tok, n_head, n_head_kv, dk, dv, pos0, window;
};

// Buffers for one case: keys p_lo .. pos0 + n_tok - 1, as one contiguous f32 block.
struct Problem {
  std::vector<float> q, k, v, scores;
  const uint8_t* k_block = nullptr;
  const uint8_t* v_block = nullptr;
  AttentionArgs args;
};

// Points args.kv at pr's k and v arrays (one block of n_keys rows).
void UseContiguous(Problem& pr) {
  AttentionArgs& a = pr.args;
  pr.k_block = reinterpret_cast<const uint8_t*>(pr.k.data());
  pr.v_block = reinterpret_cast<const uint8_t*>(pr.v.data());
  a.kv.type = DType::kF32;
  a.kv.first_pos = a.p_lo;
  a.kv.block_tokens = a.n_keys;
  a.kv.k_blocks = &pr.k_block;
  a.kv.v_blocks = &pr.v_block;
  a.kv.k_row_bytes = static_cast<uint64_t>(a.n_head_kv * a.head_dim_k) * sizeof(float);
  a.kv.v_row_bytes = static_cast<uint64_t>(a.n_head_kv * a.head_dim_v) * sizeof(float);
}

Problem Make(const Case& c, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Problem pr;
  const int64_t p_hi = c.pos0 + c.n_tok;
  const int64_t p_lo = c.window > 0 ? std::max<int64_t>(0, c.pos0 - c.window + 1) : 0;
  const int64_t n_keys = p_hi - p_lo;
  auto fill = [&](std::vector<float>& x, int64_t n, float s) {
    x.resize(static_cast<size_t>(n));
    for (float& f : x) f = s * normal(rng);
  };
  fill(pr.q, c.n_tok * c.n_head * c.dk, 1.0f);
  fill(pr.k, n_keys * c.n_head_kv * c.dk, 1.0f);
  fill(pr.v, n_keys * c.n_head_kv * c.dv, 3.0f);
  pr.scores.assign(static_cast<size_t>(c.n_head * n_keys), 0.0f);
  AttentionArgs& a = pr.args;
  a.q = pr.q.data();
  a.scores = pr.scores.data();
  a.n_tok = c.n_tok;
  a.n_keys = n_keys;
  a.n_head = c.n_head;
  a.n_head_kv = c.n_head_kv;
  a.head_dim_k = c.dk;
  a.head_dim_v = c.dv;
  a.pos0 = c.pos0;
  a.p_lo = p_lo;
  a.window = c.window;
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.dk));
  return pr;
}

Problem MakeContiguous(const Case& c, std::mt19937& rng) {
  Problem pr = Make(c, rng);
  UseContiguous(pr);
  return pr;
}

std::vector<float> RunAttention(Problem& pr, ThreadPool* pool, KernelPath path, bool ref) {
  std::vector<float> out(static_cast<size_t>(pr.args.n_tok * pr.args.n_head * pr.args.head_dim_v),
                         -1.0f);
  AttentionArgs a = pr.args;
  a.out = out.data();
  if (ref) {
    AttentionRef(a);
  } else {
    Attention(a, pool, path);
  }
  return out;
}

const Case kCases[] = {
    {1, 4, 1, 256, 256, 0, 0},     // one token (decode)
    {37, 4, 1, 256, 256, 0, 0},    // gemma3 270m shape, prefill
    {9, 4, 1, 256, 256, 700, 512}, // sliding window, later chunk
    {20, 8, 2, 64, 64, 5, 0},      // GQA 4:1 twice
    {13, 6, 2, 40, 40, 3, 0},      // group of 3, head dim not a multiple of 8 (tails)
    {11, 5, 5, 128, 96, 0, 0},     // no GQA, dk != dv
    {17, 2, 1, 16, 8, 0, 4},       // tiny window
};

TEST(AttentionTest, MatchesReference) {
  std::mt19937 rng(42);
  ThreadPool pool2(2);
  for (const Case& c : kCases) {
    Problem pr = MakeContiguous(c, rng);
    const std::vector<float> want = RunAttention(pr, nullptr, KernelPath::kBest, true);
    for (KernelPath path : {KernelPath::kPortable, KernelPath::kBest}) {
      const std::vector<float> got = RunAttention(pr, &pool2, path, false);
      float vmax = 0.0f;
      for (float x : pr.v) vmax = std::max(vmax, std::fabs(x));
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], 2e-5f * vmax)
            << "case n_tok " << c.n_tok << " heads " << c.n_head << "/" << c.n_head_kv << " dk "
            << c.dk << " window " << c.window << " index " << i
            << (path == KernelPath::kBest ? " best" : " portable");
      }
    }
  }
}

TEST(AttentionTest, BitwiseSameForAnyThreadCount) {
  std::mt19937 rng(7);
  ThreadPool pool2(2), pool3(3), pool5(5);
  for (const Case& c : kCases) {
    Problem pr = MakeContiguous(c, rng);
    const std::vector<float> one = RunAttention(pr, nullptr, KernelPath::kBest, false);
    for (ThreadPool* pool : {&pool2, &pool3, &pool5}) {
      const std::vector<float> got = RunAttention(pr, pool, KernelPath::kBest, false);
      ASSERT_EQ(std::memcmp(one.data(), got.data(), one.size() * sizeof(float)), 0)
          << "threads " << pool->NumThreads() << " heads " << c.n_head;
    }
  }
}

TEST(AttentionTest, OneKeyCopiesItsValue) {
  // The first token sees only itself: the output is v[0] exactly.
  std::mt19937 rng(3);
  Problem pr = MakeContiguous({1, 4, 2, 32, 24, 0, 0}, rng);
  const std::vector<float> got = RunAttention(pr, nullptr, KernelPath::kBest, false);
  for (int64_t h = 0; h < 4; ++h) {
    for (int64_t i = 0; i < 24; ++i) {
      EXPECT_EQ(got[static_cast<size_t>(h * 24 + i)], pr.v[static_cast<size_t>((h / 2) * 24 + i)]);
    }
  }
}

// The K/V rows of a problem stored as a paged cache stores them: rows of `type` in blocks of
// `bt` positions (block i holds positions first_pos + i * bt ..), the blocks scattered in
// reverse order through one buffer, the first block starting mid-way (first_pos below p_lo).
struct Paged {
  std::vector<uint8_t> storage;
  std::vector<const uint8_t*> k_blocks, v_blocks;
  std::vector<float> k_values, v_values;  // the stored rows converted back to f32 (contiguous)
};

Paged Store(const Problem& pr, DType type, int64_t bt) {
  const AttentionArgs& a = pr.args;
  const int64_t kd = a.n_head_kv * a.head_dim_k, vd = a.n_head_kv * a.head_dim_v;
  const uint64_t kb = RowBytes(type, static_cast<uint64_t>(kd)).value();
  const uint64_t vb = RowBytes(type, static_cast<uint64_t>(vd)).value();
  Paged pg;
  const int64_t first_pos = a.p_lo / bt * bt;
  const int64_t n_blocks = (a.p_lo + a.n_keys - 1) / bt - first_pos / bt + 1;
  pg.storage.assign(static_cast<size_t>(n_blocks * bt) * (kb + vb), 0xEE);
  pg.k_values.resize(pr.k.size());
  pg.v_values.resize(pr.v.size());
  for (int64_t i = 0; i < n_blocks; ++i) {
    uint8_t* block = pg.storage.data() + static_cast<size_t>((n_blocks - 1 - i) * bt) * (kb + vb);
    pg.k_blocks.push_back(block);
    pg.v_blocks.push_back(block + static_cast<size_t>(bt) * kb);
  }
  for (int64_t j = 0; j < a.n_keys; ++j) {
    const int64_t rel = a.p_lo + j - first_pos;
    uint8_t* krow = const_cast<uint8_t*>(pg.k_blocks[static_cast<size_t>(rel / bt)]) +
                    static_cast<size_t>(rel % bt) * kb;
    uint8_t* vrow = const_cast<uint8_t*>(pg.v_blocks[static_cast<size_t>(rel / bt)]) +
                    static_cast<size_t>(rel % bt) * vb;
    EXPECT_TRUE(QuantizeRow(type, pr.k.data() + j * kd, krow, kd).ok());
    EXPECT_TRUE(QuantizeRow(type, pr.v.data() + j * vd, vrow, vd).ok());
    EXPECT_TRUE(DequantizeRow(type, krow, pg.k_values.data() + j * kd, kd).ok());
    EXPECT_TRUE(DequantizeRow(type, vrow, pg.v_values.data() + j * vd, vd).ok());
  }
  return pg;
}

TEST(AttentionTest, ReadsPagedF16AndQuantizedRowsInPlace) {
  // Every cache type, in blocks of several sizes: the result is bitwise what the same kernel
  // gives over the rows converted to contiguous f32 (reading in place converts exactly), and
  // near the reference reading the same blocks.
  const Case cases[] = {
      {1, 4, 1, 256, 256, 40, 0},    // decode, gemma shape
      {21, 8, 2, 64, 64, 7, 0},      // prefill, GQA
      {9, 4, 1, 256, 256, 700, 512}, // sliding window
      {5, 8, 4, 8, 8, 3, 0},         // head dim 8: q8_0 / q4_0 slices inside a 32-block
  };
  std::mt19937 rng(11);
  ThreadPool pool(2);
  for (const Case& c : cases) {
    for (DType type : {DType::kF16, DType::kQ8_0, DType::kQ4_0}) {
      for (int64_t bt : {int64_t{1}, int64_t{7}, int64_t{32}}) {
        Problem pr = MakeContiguous(c, rng);
        Paged pg = Store(pr, type, bt);
        // The same problem over the converted values, contiguous f32.
        Problem flat = pr;
        flat.k = pg.k_values;
        flat.v = pg.v_values;
        UseContiguous(flat);
        pr.args.kv.type = type;
        pr.args.kv.first_pos = pr.args.p_lo / bt * bt;
        pr.args.kv.block_tokens = bt;
        pr.args.kv.k_blocks = pg.k_blocks.data();
        pr.args.kv.v_blocks = pg.v_blocks.data();
        pr.args.kv.k_row_bytes =
            RowBytes(type, static_cast<uint64_t>(c.n_head_kv * c.dk)).value();
        pr.args.kv.v_row_bytes =
            RowBytes(type, static_cast<uint64_t>(c.n_head_kv * c.dv)).value();
        const std::string what = std::string(DTypeName(type)) + " bt " + std::to_string(bt) +
                                 " dk " + std::to_string(c.dk) + " n_tok " +
                                 std::to_string(c.n_tok);
        for (KernelPath path : {KernelPath::kPortable, KernelPath::kBest}) {
          const std::vector<float> got = RunAttention(pr, &pool, path, false);
          const std::vector<float> want = RunAttention(flat, &pool, path, false);
          ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << what;
        }
        const std::vector<float> ref = RunAttention(pr, nullptr, KernelPath::kBest, true);
        const std::vector<float> got = RunAttention(pr, &pool, KernelPath::kBest, false);
        float vmax = 0.0f;
        for (float x : flat.v) vmax = std::max(vmax, std::fabs(x));
        for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(got[i], ref[i], 2e-5f * vmax) << what;
      }
    }
  }
}

TEST(AttentionTest, SupportsTheCacheTypes) {
  EXPECT_TRUE(AttentionSupportsKv(DType::kF16, 1, 8, 8));
  EXPECT_TRUE(AttentionSupportsKv(DType::kQ8_0, 4, 8, 8));  // rows of 32: whole blocks
  EXPECT_FALSE(AttentionSupportsKv(DType::kQ8_0, 1, 40, 40));
  EXPECT_FALSE(AttentionSupportsKv(DType::kQ4_K, 1, 256, 256));
}

}  // namespace
}  // namespace ferry
