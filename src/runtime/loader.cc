#include "runtime/loader.h"

#include "base/bytes.h"
#include "base/log.h"

namespace ferry {

StatusOr<ModelFiles> OpenModelFiles(const std::string& path) {
  ModelFiles f;
  FERRY_ASSIGN_OR_RETURN(f.model, Model::Load(path));
  FERRY_ASSIGN_OR_RETURN(tokenizer::Vocab vocab, tokenizer::Vocab::FromGguf(f.model->file()));
  if (vocab.size() != f.model->hparams().n_vocab) {
    return DataLossError("{}: the tokenizer has {} tokens but the model {}", path, vocab.size(),
                         f.model->hparams().n_vocab);
  }
  FERRY_ASSIGN_OR_RETURN(f.tokenizer, tokenizer::Tokenizer::Create(std::move(vocab)));
  return f;
}

std::string DescribeAllocation(const Runner& r) {
  std::string s = "allocated";
  uint64_t gpu_bytes = 0;
  if (const DeviceAllocator* g = r.gpu_allocator(); g != nullptr) {
    gpu_bytes = g->allocated_bytes();
    s += fmt::format(" {} {} (weights {}, kv {}, compute {});", g->device(), FormatBytes(gpu_bytes),
                     FormatBytes(g->allocated_bytes("weights")),
                     FormatBytes(g->allocated_bytes("kv")),
                     FormatBytes(g->allocated_bytes("compute")));
  }
  s += fmt::format(" cpu {} (weights {}, kv {}, compute {}, host {}, sampling {})",
                   FormatBytes(r.allocated_bytes()), FormatBytes(r.allocated_bytes("weights")),
                   FormatBytes(r.allocated_bytes("kv")), FormatBytes(r.allocated_bytes("compute")),
                   FormatBytes(r.allocated_bytes("host")),
                   FormatBytes(r.allocated_bytes("sampling")));
  return s + "; " + ProcessorSplit(gpu_bytes + r.allocated_bytes(), gpu_bytes);
}

StatusOr<std::unique_ptr<Runner>> LoadRunner(const std::string& path,
                                             const DeviceInventory& devices,
                                             const LoadOptions& options,
                                             const RunnerOptions& runner_options) {
  FERRY_RETURN_IF_ERROR(ValidateLoadOptions(options));
  FERRY_ASSIGN_OR_RETURN(ModelFiles files, OpenModelFiles(path));
  const ModelShape shape = ShapeFromModel(*files.model);
  LoadOptions capped = options;
  capped.num_ctx = CapNumCtxAtTrained(shape, options.num_ctx);
  if (capped.num_ctx != options.num_ctx) {
    log::Warn("num_ctx {} is above the {} tokens {} was trained on: using {}", options.num_ctx,
              shape.n_ctx_train, path, capped.num_ctx);
    capped.num_batch = std::min(capped.num_batch, capped.num_ctx);
    capped.logit_rows = std::min(capped.logit_rows, capped.num_batch);
  }
  FERRY_ASSIGN_OR_RETURN(Plan plan, MakePlan(shape, devices, capped));
  FERRY_ASSIGN_OR_RETURN(
      std::unique_ptr<Runner> runner,
      Runner::Create(std::move(files.model), std::move(files.tokenizer), plan, runner_options));
  // One line per load: the plan, and what was actually allocated next to it (invariant 1: the
  // plan is the allocation).
  log::Info("load {}: {}; {}", path, plan.Summary(), DescribeAllocation(*runner));
  return runner;
}

}  // namespace ferry
