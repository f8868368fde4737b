#include "base/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

namespace ferry {
namespace {

// Records the ranges fn was called with and checks they tile [0, n) in order.
void CheckCovers(ThreadPool& pool, int64_t n) {
  std::mutex mu;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  std::vector<std::atomic<int>> hits(static_cast<size_t>(std::max<int64_t>(n, 0)));
  pool.ParallelFor(n, [&](int64_t b, int64_t e) {
    ASSERT_LT(b, e);
    for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
    std::lock_guard<std::mutex> lock(mu);
    ranges.emplace_back(b, e);
  });
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[static_cast<size_t>(i)].load(), 1) << i;
  std::sort(ranges.begin(), ranges.end());
  EXPECT_LE(static_cast<int64_t>(ranges.size()), pool.NumThreads());
  int64_t next = 0;
  for (auto [b, e] : ranges) {
    EXPECT_EQ(b, next);
    next = e;
  }
  EXPECT_EQ(next, std::max<int64_t>(n, 0));
}

TEST(ThreadPoolTest, CoversRangeForManySizes) {
  for (int threads : {1, 2, 3, 4, 7}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.NumThreads(), threads);
    for (int64_t n : {-1, 0, 1, 2, 3, 5, 7, 8, 64, 1000, 12345}) CheckCovers(pool, n);
  }
}

TEST(ThreadPoolTest, ZeroOrNegativeThreadsMeansOne) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.NumThreads(), 1);
  CheckCovers(pool, 10);
}

TEST(ThreadPoolTest, SplitIsContiguousAndEven) {
  ThreadPool pool(3);
  std::mutex mu;
  std::set<std::pair<int64_t, int64_t>> ranges;
  pool.ParallelFor(10, [&](int64_t b, int64_t e) {
    std::lock_guard<std::mutex> lock(mu);
    ranges.emplace(b, e);
  });
  const std::set<std::pair<int64_t, int64_t>> want = {{0, 3}, {3, 6}, {6, 10}};
  EXPECT_EQ(ranges, want);
}

TEST(ThreadPoolTest, CallerParticipatesAndWorkersRunConcurrently) {
  ThreadPool pool(4);
  const auto caller = std::this_thread::get_id();
  std::mutex mu;
  std::set<std::thread::id> ids;
  bool caller_ran_first_chunk = false;
  pool.ParallelFor(4, [&](int64_t b, int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(std::this_thread::get_id());
    if (b == 0) caller_ran_first_chunk = std::this_thread::get_id() == caller;
  });
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_TRUE(caller_ran_first_chunk);

  // All four chunks must be able to run at the same time: each waits for the others.
  std::atomic<int> arrived{0};
  pool.ParallelFor(4, [&](int64_t, int64_t) {
    arrived.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (arrived.load() < 4 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
  });
  EXPECT_EQ(arrived.load(), 4);
}

TEST(ThreadPoolTest, ManyBackToBackLoopsAndSleepingWorkers) {
  ThreadPool pool(3);
  int64_t total = 0;
  for (int iter = 0; iter < 5000; ++iter) {
    std::atomic<int64_t> sum{0};
    pool.ParallelFor(iter % 7, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum.fetch_add(i + 1);
    });
    total += sum.load();
    if (iter % 1000 == 0) {
      // Let the workers fall asleep, then wake them.
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  int64_t want = 0;
  for (int iter = 0; iter < 5000; ++iter) want += (iter % 7) * (iter % 7 + 1) / 2;
  EXPECT_EQ(total, want);
}

TEST(ThreadPoolTest, DestroyIdleAndAfterUse) {
  { ThreadPool idle(4); }
  {
    ThreadPool used(4);
    CheckCovers(used, 100);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (int i = 0; i < 50; ++i) {
    ThreadPool quick(3);
    CheckCovers(quick, 9);
  }
}

TEST(ThreadPoolTest, NullPoolHelperRunsInline) {
  int calls = 0;
  ParallelFor(nullptr, 17, [&](int64_t b, int64_t e) {
    ++calls;
    EXPECT_EQ(b, 0);
    EXPECT_EQ(e, 17);
  });
  ParallelFor(nullptr, 0, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 1);
  ThreadPool pool(2);
  CheckCovers(pool, 5);
}

}  // namespace
}  // namespace ferry
