// Test support for the runtime's plan tests (runtime_alloc_test, runtime_plan_accuracy_test):
// a Runner configured from a CPU plan, and the check that what it holds is what was planned.
// Header-only; include only from tests (it uses GoogleTest).
#ifndef FERRY_RUNTIME_PLAN_TESTING_H_
#define FERRY_RUNTIME_PLAN_TESTING_H_

#include <gtest/gtest.h>

#include "planner/plan.h"
#include "runtime/runner.h"

namespace ferry {

// The runner options for the plan tests: `num_threads`, no inference thread (the test drives
// the runner).
inline RunnerOptions RunnerOptionsFromPlan(const Plan& plan, int num_threads) {
  RunnerOptions ro;
  ro.num_threads = num_threads;
  ro.start_thread = false;
  return ro;
}

// A CPU with room for anything a test loads.
inline DeviceInventory BigCpu() {
  DeviceInventory inv;
  Device cpu;
  cpu.name = "cpu";
  cpu.kind = DeviceKind::kCpu;
  cpu.total_bytes = cpu.free_bytes = uint64_t{64} << 30;
  cpu.bandwidth_bytes_per_s = 50e9;
  cpu.source = "described";
  inv.devices.push_back(cpu);
  return inv;
}

// Plans `lo` (num_gpu 0) for the model on BigCpu() and creates a runner without a thread.
inline StatusOr<std::unique_ptr<Runner>> MakeCpuRunner(const Model* model,
                                                       const tokenizer::Tokenizer* tok,
                                                       LoadOptions lo, int num_threads = 2,
                                                       uint64_t capacity = 0,
                                                       bool start_thread = false) {
  lo.num_gpu = 0;
  FERRY_ASSIGN_OR_RETURN(Plan plan, MakePlan(ShapeFromModel(*model), BigCpu(), lo));
  RunnerOptions ro;
  ro.num_threads = num_threads;
  ro.cpu_capacity_bytes = capacity;
  ro.start_thread = start_thread;
  return Runner::Create(model, tok, plan, ro);
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
