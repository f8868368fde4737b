#include "sched/local_factory.h"

#include "base/log.h"
#include "runtime/loader.h"

namespace ferry::sched {

StatusOr<ModelShape> LocalRunnerFactory::Shape(const std::string& model) {
  FERRY_ASSIGN_OR_RETURN(std::string path, resolve_(model));
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = shapes_.find(path);
    if (it != shapes_.end()) return it->second;
  }
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<Model> m, Model::Load(path));
  ModelShape shape = ShapeFromModel(*m);
  std::lock_guard<std::mutex> lock(mu_);
  shapes_[path] = shape;
  return shape;
}

StatusOr<std::unique_ptr<ModelRunner>> LocalRunnerFactory::Load(const std::string& model,
                                                                const Plan& plan,
                                                                int num_thread) {
  FERRY_ASSIGN_OR_RETURN(std::string path, resolve_(model));
  FERRY_ASSIGN_OR_RETURN(ModelFiles files, OpenModelFiles(path));
  RunnerOptions ro;
  ro.num_threads = num_thread;
  ro.start_thread = true;
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<Runner> runner,
                         Runner::Create(std::move(files.model), std::move(files.tokenizer), plan,
                                        ro));
  log::Info("load {}: {}; {}", path, plan.Summary(), DescribeAllocation(*runner));
  return std::unique_ptr<ModelRunner>(std::move(runner));
}

}  // namespace ferry::sched
