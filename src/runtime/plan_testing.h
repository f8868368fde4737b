// Test support for the runtime's plan tests (runtime_alloc_test, runtime_plan_accuracy_test):
// a Runner configured from a CPU plan, and the check that what it holds is what was planned.
// Header-only; include only from tests (it uses GoogleTest).
#ifndef FERRY_RUNTIME_PLAN_TESTING_H_
#define FERRY_RUNTIME_PLAN_TESTING_H_

#include <gtest/gtest.h>

#include "planner/plan.h"
#include "runtime/runner.h"

namespace ferry {

// The runner options of `plan` (its load options and the CPU's compute reservation).
inline RunnerOptions RunnerOptionsFromPlan(const Plan& plan, int num_threads) {
  RunnerOptions ro;
  ro.num_ctx = plan.options.num_ctx;
  ro.num_batch = plan.options.num_batch;
  ro.kv_type = plan.options.kv_type;
  ro.logit_rows = plan.options.logit_rows;
  ro.num_threads = num_threads;
  ro.compute_bytes = plan.devices.back().compute_bytes;
  return ro;
}

// Every purpose the runner's CPU allocator holds equals the CPU plan's bytes for it.
inline void ExpectAllocatedAsPlanned(const Runner& runner, const DevicePlan& cpu) {
  EXPECT_EQ(runner.allocated_bytes("kv"), cpu.kv_bytes);
  EXPECT_EQ(runner.kv().bytes_allocated(), cpu.kv_bytes);
  EXPECT_EQ(runner.allocated_bytes("compute"), cpu.compute_bytes);
  // Weights (mapped, charged) and the loader's host memory too.
  EXPECT_EQ(runner.allocated_bytes("weights"), cpu.weights_bytes);
  EXPECT_EQ(runner.allocated_bytes("host"), cpu.host_bytes);
  EXPECT_EQ(runner.allocated_bytes("sampling"), cpu.sampling_bytes);
  EXPECT_EQ(runner.allocated_bytes(), cpu.total_bytes);
}

}  // namespace ferry

#endif  // FERRY_RUNTIME_PLAN_TESTING_H_
