// LocalRunnerFactory: the real RunnerFactory. Models are GGUF files found by a resolver (the
// app's models folder, later the store); Load opens the file and creates a Runner (with its
// inference thread) that allocates exactly the plan, and logs the load line.
//
// Thread-safety: Shape and Load may run concurrently (Shape's cache has its own mutex).
#ifndef FERRY_SCHED_LOCAL_FACTORY_H_
#define FERRY_SCHED_LOCAL_FACTORY_H_

#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "base/thread_annotations.h"
#include "sched/scheduler.h"

namespace ferry::sched {

class LocalRunnerFactory : public RunnerFactory {
 public:
  // resolve: a model name -> the GGUF path (NotFound naming what exists when it cannot).
  using Resolver = std::function<StatusOr<std::string>(const std::string& name)>;
  explicit LocalRunnerFactory(Resolver resolve) : resolve_(std::move(resolve)) {}

  // Reads the model's shape (tensor table and hyper-parameters; no weights) once per path.
  StatusOr<ModelShape> Shape(const std::string& model) override;
  StatusOr<std::unique_ptr<ModelRunner>> Load(const std::string& model, const Plan& plan,
                                              int num_thread) override;

 private:
  Resolver resolve_;
  std::mutex mu_;
  std::map<std::string, ModelShape> shapes_ FERRY_GUARDED_BY(mu_);
};

}  // namespace ferry::sched

#endif  // FERRY_SCHED_LOCAL_FACTORY_H_
