// ModelRunner: the small interface through which the scheduler (src/sched/) sees one loaded
// model. The real implementation is Runner (runtime/runner.h: one inference thread per model);
// the scheduler's tests use fakes.
//
// Thread-safety: every method may be called from any thread; implementations synchronize.
#ifndef FERRY_RUNTIME_MODEL_RUNNER_H_
#define FERRY_RUNTIME_MODEL_RUNNER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "planner/plan.h"
#include "runtime/request.h"

namespace ferry {

// Bytes one device holds for a model, as allocated (never estimated), per purpose
// ("weights", "host", "kv", "compute", "sampling").
struct DeviceAllocation {
  std::string device;  // "cpu", "cuda0", ...
  std::map<std::string, uint64_t, std::less<>> bytes_by_purpose;
  uint64_t total_bytes() const;
};

// A snapshot of what a runner is doing.
struct RunnerCounts {
  int64_t waiting = 0;          // submitted, not yet admitted (queued in the runner)
  int64_t running = 0;          // admitted, not finished (prefilling, decoding or preempted)
  int64_t kv_blocks_used = 0;   // KV blocks held by sequences, summed over layers
  int64_t kv_blocks_total = 0;  // KV blocks of the pool, summed over layers
  int64_t preemptions = 0;      // since load
  int64_t grows = 0;            // since load
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  // The plan the runner's allocation follows now (after any Grow): a copy, safe to keep while a
  // Grow changes the runner's.
  virtual Plan plan() const = 0;
  // Tokens of context each sequence can reach now (plan().options.num_ctx).
  virtual int64_t num_ctx() const { return plan().options.num_ctx; }

  // What is allocated now, per device and purpose.
  virtual std::vector<DeviceAllocation> allocated() const = 0;

  // Hands a request to the inference thread; its events arrive on `stream`. Errors returned
  // here (nothing was queued): InvalidArgument for bad options, OutOfRange for a prompt longer
  // than the request's num_ctx or a num_ctx beyond num_ctx() (the message names both numbers),
  // FailedPrecondition after Shutdown. Errors found later arrive on the stream.
  virtual Status Submit(GenerateRequest request, std::shared_ptr<RequestStream> stream) = 0;

  // Grows the KV pool (new blocks) and re-reserves the compute buffer to what `plan` says,
  // without touching the weights; returns when the new memory is allocated. `plan` must have
  // the current placement (layer_device, output_device) and num_ctx >= num_ctx(); else
  // InvalidArgument. ResourceExhausted if a device cannot hold it (nothing changes).
  virtual Status Grow(const Plan& plan) = 0;

  virtual RunnerCounts counts() const = 0;

  // OK, or why the runner can serve no more requests: its model file changed on disk while
  // loaded (DataLoss naming the file). Every request it held has ended with that error, and
  // Submit returns it; the scheduler unloads such a runner (a later request loads the file
  // again, and gets the load's own error if the file is no longer a valid model).
  virtual Status health() const { return Status::Ok(); }

  // Ends the inference thread: waiting and running requests end with an error event
  // (Unavailable: "model unloaded"), then memory is released. Idempotent.
  virtual void Shutdown() = 0;
};

}  // namespace ferry

#endif  // FERRY_RUNTIME_MODEL_RUNNER_H_
