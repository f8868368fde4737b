#include "kernels/cpu/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/thread_pool.h"

namespace ferry {
namespace {

struct Case {
  int64_t n_tok, n_head, n_head_kv, dk, dv, pos0, window;
};

// Buffers for one case: keys p_lo .. pos0 + n_tok - 1.
struct Problem {
  std::vector<float> q, k, v, scores;
  AttentionArgs args;
};

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
  a.k = pr.k.data();
  a.v = pr.v.data();
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
    Problem pr = Make(c, rng);
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
    Problem pr = Make(c, rng);
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
  Problem pr = Make({1, 4, 2, 32, 24, 0, 0}, rng);
  const std::vector<float> got = RunAttention(pr, nullptr, KernelPath::kBest, false);
  for (int64_t h = 0; h < 4; ++h) {
    for (int64_t i = 0; i < 24; ++i) {
      EXPECT_EQ(got[static_cast<size_t>(h * 24 + i)], pr.v[static_cast<size_t>((h / 2) * 24 + i)]);
    }
  }
}

}  // namespace
}  // namespace ferry
