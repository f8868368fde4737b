#include "base/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <chrono>

namespace ferry {

int HardwareThreads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

int CapThreads(int requested) {
  const int hw = HardwareThreads();
  return requested <= 0 ? hw : std::min(requested, hw);
}
namespace {

// How long a waiting thread polls before it sleeps on a condition variable. Forward passes run
// many short loops separated by a few microseconds of serial work; waking a sleeping thread
// costs tens of microseconds.
constexpr std::chrono::microseconds kSpin{50};

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Polls pred() for up to kSpin; true if it became true.
template <typename Pred>
bool SpinUntil(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      CpuRelax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return pred();
  }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  workers_.reserve(static_cast<size_t>(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunChunk(const std::function<void(int64_t, int64_t)>& fn, int64_t n, int chunks,
                          int i) {
  if (i >= chunks) return;
  const int64_t begin = n * i / chunks;
  const int64_t end = n * (i + 1) / chunks;
  if (begin < end) fn(begin, end);
}

void ThreadPool::ParallelFor(int64_t n,
                             const std::function<void(int64_t begin, int64_t end)>& fn) {
  if (n <= 0) return;
  const int chunks = static_cast<int>(std::min<int64_t>(n, n_threads_));
  if (chunks == 1) {
    fn(0, n);
    return;
  }
  fn_ = &fn;
  n_ = n;
  chunks_ = chunks;
  // Every worker reports back, also those without a chunk, so that none still reads this
  // loop's fields when the next loop overwrites them.
  pending_.store(n_threads_ - 1);
  generation_.fetch_add(1);  // publishes fn_, n_, chunks_
  if (sleepers_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    work_cv_.notify_all();
  }
  RunChunk(fn, n, chunks, 0);
  if (!SpinUntil([this] { return pending_.load() == 0; })) {
    std::unique_lock<std::mutex> lock(mu_);
    caller_sleeping_.store(true);
    done_cv_.wait(lock, [this] { return pending_.load() == 0; });
    caller_sleeping_.store(false);
  }
  fn_ = nullptr;
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = 0;
    auto ready = [&] {
      g = generation_.load();
      return g != seen || stop_.load();
    };
    if (!SpinUntil(ready)) {
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1);
      work_cv_.wait(lock, ready);
      sleepers_.fetch_sub(1);
    }
    if (stop_.load()) return;
    seen = g;
    RunChunk(*fn_, n_, chunks_, index);
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      { std::lock_guard<std::mutex> lock(mu_); }
      done_cv_.notify_one();
    }
  }
}

}  // namespace ferry
