// The load sequence every caller shares (`ferry run`, `ferry perplexity`, `ferry bench`, the
// scheduler): open the GGUF model and its tokenizer, plan it on the given devices, create the
// Runner that follows the plan, and log the one load line (the plan and what was allocated).
//
// Thread-safety: free functions; concurrent calls for different models are safe.
#ifndef FERRY_RUNTIME_LOADER_H_
#define FERRY_RUNTIME_LOADER_H_

#include <memory>
#include <string>

#include "backend/device.h"
#include "base/status.h"
#include "model/model.h"
#include "planner/plan.h"
#include "runtime/runner.h"
#include "tokenizer/tokenizer.h"

namespace ferry {

struct ModelFiles {
  std::unique_ptr<Model> model;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
};

// Opens and validates the model at `path` and builds its tokenizer. Errors name the file: the
// model's (see Model::Load), the vocabulary's, or a vocabulary size that disagrees with the
// model (DataLoss).
StatusOr<ModelFiles> OpenModelFiles(const std::string& path);

// Opens `path`, plans it with `options` on `devices` (MakePlan), and creates a Runner that owns
// the files and allocates exactly the plan. Logs one line: "load PATH: <plan summary>;
// allocated cuda0 ... (weights, kv, compute); cpu ... (weights, kv, compute, host, sampling);
// 27%/73% CPU/GPU" (the GPU part only when the plan runs layers there; the split from the
// allocated bytes). Errors: OpenModelFiles's,
// MakePlan's (ResourceExhausted explains what is missing), Runner::Create's.
StatusOr<std::unique_ptr<Runner>> LoadRunner(const std::string& path,
                                             const DeviceInventory& devices,
                                             const LoadOptions& options,
                                             const RunnerOptions& runner_options);

// The load line for a runner (also logged after a Grow).
std::string DescribeAllocation(const Runner& runner);

}  // namespace ferry

#endif  // FERRY_RUNTIME_LOADER_H_
