// ThreadPool: a fixed set of worker threads that run data-parallel loops with the caller.
//
//   ThreadPool pool(4);                      // the caller plus 3 workers
//   pool.ParallelFor(n, [&](int64_t begin, int64_t end) { for (i = begin; i < end; ++i) ... });
//
// ParallelFor splits [0, n) into at most NumThreads() contiguous chunks of nearly equal size
// (chunk i is [i * n / k, (i + 1) * n / k) with k = min(n, NumThreads())), runs chunk 0 on the
// calling thread and the others on workers, and returns when all are done. The split depends
// only on n and NumThreads(), so a loop whose iterations write disjoint outputs gives the same
// result every run. Workers spin briefly after a loop (a forward pass issues many short loops
// back to back) and then sleep on a condition variable; an idle pool costs no CPU.
//
// Thread-safety: one ParallelFor at a time per pool: the pool must not be used from two threads
// at once, and `fn` must not call ParallelFor on the same pool (it would deadlock). Distinct
// pools are independent. `fn` is called concurrently from several threads with disjoint ranges
// and must not throw. Destroying the pool (never during a ParallelFor) joins the workers.
#ifndef FERRY_BASE_THREAD_POOL_H_
#define FERRY_BASE_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ferry {

// The hardware threads this process may use (at least 1).
int HardwareThreads();

// The threads a pool asked for `requested` threads gets: 0 means HardwareThreads(), and more
// than the machine has are capped there (extra threads only take turns on the same cores and
// spin-wait for each other: decode at 1000 threads on 2 cores ran 140x slower). Callers that
// take the count from a user warn when it was capped.
int CapThreads(int requested);

class ThreadPool {
 public:
  // n_threads: threads taking part in a ParallelFor, the caller included; values < 1 mean 1
  // (no workers: ParallelFor runs fn inline).
  explicit ThreadPool(int n_threads);
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int NumThreads() const { return n_threads_; }

  // Calls fn(begin, end) on contiguous chunks covering [0, n) (see the file comment) and waits
  // for all of them. n <= 0 does nothing; fn is never called with an empty range.
  void ParallelFor(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);

 private:
  void WorkerLoop(int index);  // worker `index` (1..n_threads-1) runs chunk `index`
  static void RunChunk(const std::function<void(int64_t, int64_t)>& fn, int64_t n, int chunks,
                       int i);

  const int n_threads_;
  std::vector<std::thread> workers_;

  // The current loop, published by incrementing generation_ (release) and read by workers
  // after they see the new generation (acquire).
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int chunks_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};  // worker chunks of the current loop not yet finished
  std::atomic<bool> stop_{false};

  std::mutex mu_;
  std::condition_variable work_cv_;  // workers sleep here for a new generation or stop
  std::condition_variable done_cv_;  // the caller sleeps here for pending_ == 0
  std::atomic<int> sleepers_{0};     // workers blocked (or about to block) on work_cv_
  std::atomic<bool> caller_sleeping_{false};
};

// Runs fn over [0, n) on `pool`, or inline as one chunk when pool is null.
inline void ParallelFor(ThreadPool* pool, int64_t n,
                        const std::function<void(int64_t begin, int64_t end)>& fn) {
  if (pool != nullptr) {
    pool->ParallelFor(n, fn);
  } else if (n > 0) {
    fn(0, n);
  }
}

}  // namespace ferry

#endif  // FERRY_BASE_THREAD_POOL_H_
