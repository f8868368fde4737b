#include "cmd_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <unordered_set>

#include "backend/cuda_memory.h"
#include "backend/device.h"
#include "base/bytes.h"
#include "kv/kv_cache.h"
#include "model/model_info.h"
#include "planner/plan.h"
#include "runtime/loader.h"
#include "runtime/request.h"
#include "runtime/runner.h"

namespace ferry::app {
namespace {

// Context beyond the longest prompt plus the generation (the runner needs one position more
// than the tokens it has sampled; a little slack keeps every run clear of "length").
constexpr int64_t kContextSlack = 4;
// Most sequences one load decodes together.
constexpr int32_t kMaxParallel = 256;
// Largest context, depth or token count accepted (LoadOptions' num_ctx limit).
constexpr int64_t kMaxContext = int64_t{1} << 24;

// Context a load at `depth` needs: the depth plus the longest test after it (a prompt, or one
// token and the generation), plus slack.
int64_t NeededContext(const BenchOptions& o, int64_t depth) {
  const int64_t max_prompt = *std::max_element(o.n_prompt.begin(), o.n_prompt.end());
  return depth + std::max(max_prompt, o.n_gen + 1) + o.n_gen + kContextSlack;
}

// Resident memory of this process (VmRSS), 0 when unknown.
uint64_t ResidentBytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  uint64_t kib = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "VmRSS: %lu kB", &kib) == 1) break;
  }
  std::fclose(f);
  return kib * 1024;
}

int Fail(const Status& s) {
  std::fprintf(stderr, "ferry: %s\n", s.message().c_str());
  return 1;
}

Status Validate(const BenchOptions& o) {
  for (int64_t p : o.n_prompt) {
    if (p < 1) return InvalidArgumentError("-p values must be at least 1 (got {})", p);
  }
  if (o.n_gen < 1) return InvalidArgumentError("-n must be at least 1 (got {})", o.n_gen);
  if (o.repetitions < 1) {
    return InvalidArgumentError("-r must be at least 1 (got {})", o.repetitions);
  }
  for (int32_t p : o.parallel) {
    if (p < 1 || p > kMaxParallel) {
      return InvalidArgumentError("--parallel values must be in 1 .. {} (got {})", kMaxParallel, p);
    }
  }
  if (o.num_thread < 0) {
    return InvalidArgumentError("--num-thread must be 0 (all cores) or more (got {})",
                                o.num_thread);
  }
  if (o.num_batch < 1) {
    return InvalidArgumentError("--num-batch must be at least 1 (got {})", o.num_batch);
  }
  for (int g : o.num_gpu) {
    if (g < -1) {
      return InvalidArgumentError("--num-gpu values must be -1 (as many as fit) or more (got {})",
                                  g);
    }
  }
  for (int64_t d : o.depth) {
    if (d < 0 || d > kMaxContext) {
      return InvalidArgumentError("-d values must be in 0 .. {} (got {})", kMaxContext, d);
    }
  }
  if (o.num_ctx < 0 || o.num_ctx > kMaxContext) {
    return InvalidArgumentError("--num-ctx must be 0 (as needed) or 1 .. {} (got {})", kMaxContext,
                                o.num_ctx);
  }
  for (int64_t p : o.n_prompt) {
    if (p > kMaxContext) return InvalidArgumentError("-p {} exceeds {} tokens", p, kMaxContext);
  }
  if (o.n_gen > kMaxContext) {
    return InvalidArgumentError("-n {} exceeds {} tokens", o.n_gen, kMaxContext);
  }
  return ParseKvCacheType(o.kv_type).status();
}

// Random prompts that never share a first token with a recent prompt, so the runner's prompt
// reuse (a cached sequence with a common prefix) never applies. The runner caches at most
// 2 x max_sequences finished sequences; the last `memory` first tokens are avoided.
class PromptMaker {
 public:
  PromptMaker(const tokenizer::Vocab& vocab, uint64_t seed)
      : vocab_(vocab), n_vocab_(vocab.size()), rng_(seed) {
    memory_ = static_cast<size_t>(std::max(1, n_vocab_ / 2));
  }

  // `count` prompts of `length` tokens each.
  StatusOr<std::vector<std::vector<int32_t>>> Make(int32_t count, int64_t length) {
    if (static_cast<size_t>(4 * count) > memory_) {
      return InvalidArgumentError(
          "the vocabulary ({} tokens) is too small for {} distinct prompts at a time", n_vocab_,
          count);
    }
    std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(count));
    for (auto& prompt : prompts) {
      prompt.resize(static_cast<size_t>(length));
      FERRY_ASSIGN_OR_RETURN(prompt[0], Token(/*first=*/true));
      for (size_t i = 1; i < prompt.size(); ++i) {
        FERRY_ASSIGN_OR_RETURN(prompt[i], Token(/*first=*/false));
      }
    }
    return prompts;
  }

 private:
  StatusOr<int32_t> Token(bool first) {
    std::uniform_int_distribution<int32_t> dist(0, n_vocab_ - 1);
    for (int tries = 0; tries < 100000; ++tries) {
      const int32_t id = dist(rng_);
      if (vocab_.IsEog(id)) continue;
      if (!first) return id;
      if (recent_set_.count(id) != 0) continue;
      recent_.push_back(id);
      recent_set_.insert(id);
      if (recent_.size() > memory_) {
        recent_set_.erase(recent_.front());
        recent_.pop_front();
      }
      return id;
    }
    return FailedPreconditionError("no usable random token in a {}-token vocabulary", n_vocab_);
  }

  const tokenizer::Vocab& vocab_;
  int32_t n_vocab_;
  std::mt19937_64 rng_;
  size_t memory_;
  std::deque<int32_t> recent_;
  std::unordered_set<int32_t> recent_set_;
};

// One timed run: what was measured.
struct RunTotals {
  double seconds = 0.0;
  int64_t prompt_tokens = 0;     // evaluated (none reused)
  int64_t generated_tokens = 0;  // sampled, EOS included
  int32_t stopped_early = 0;     // sequences that ended before num_predict
};

// Submits one request per prompt and steps the runner until every stream is finished.
// Each prompt must reuse exactly `reuse` cached tokens (its depth prefix).
StatusOr<RunTotals> RunOnce(Runner& runner, const std::vector<std::vector<int32_t>>& prompts,
                            const RequestOptions& options, int64_t reuse) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& prompt : prompts) {
    GenerateRequest req;
    req.prompt = prompt;
    req.options = options;
    streams.push_back(std::make_shared<RequestStream>());
    FERRY_RETURN_IF_ERROR(runner.Submit(std::move(req), streams.back()));
  }
  auto all_finished = [&] {
    return std::all_of(streams.begin(), streams.end(), [](const auto& s) { return s->finished(); });
  };
  const auto start = std::chrono::steady_clock::now();
  while (!all_finished()) {
    FERRY_ASSIGN_OR_RETURN(bool more, runner.Step());
    if (!more && !all_finished()) {
      return InternalError("the runner has no work left but a request has not finished");
    }
  }
  RunTotals t;
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (const auto& stream : streams) {
    std::optional<GenerateStats> done;
    while (std::optional<StreamEvent> e = stream->Next(std::chrono::milliseconds(0))) {
      if (e->kind == StreamEvent::Kind::kError) return e->error;
      if (e->kind == StreamEvent::Kind::kDone) done = std::move(e->stats);
    }
    if (!done) return InternalError("a finished request sent no final event");
    if (done->prompt_reused_count != reuse) {
      return InternalError(
          "a prompt reused {} cached tokens instead of {}: the figures would be "
          "wrong",
          done->prompt_reused_count, reuse);
    }
    t.prompt_tokens += done->prompt_eval_count;
    t.generated_tokens += done->eval_count;
    if (options.num_predict > 0 && done->eval_count < options.num_predict) ++t.stopped_early;
  }
  return t;
}

struct MeanSd {
  double mean = 0.0;
  double sd = 0.0;  // sample standard deviation (0 for one value)
};

MeanSd Summarize(const std::vector<double>& v) {
  MeanSd r;
  for (double x : v) r.mean += x;
  r.mean /= static_cast<double>(v.size());
  if (v.size() > 1) {
    double ss = 0.0;
    for (double x : v) ss += (x - r.mean) * (x - r.mean);
    r.sd = std::sqrt(ss / static_cast<double>(v.size() - 1));
  }
  return r;
}

// Tokens per second of `reps` runs after one warm-up run. make_prompts gives each run new
// prompts; rate turns a run's totals into tokens per second.
template <typename MakePrompts, typename Rate>
StatusOr<MeanSd> Measure(Runner& runner, const RequestOptions& options, int reps, int64_t reuse,
                         MakePrompts make_prompts, Rate rate, int32_t* stopped_early) {
  std::vector<double> rates;
  for (int i = 0; i <= reps; ++i) {
    FERRY_ASSIGN_OR_RETURN(std::vector<std::vector<int32_t>> prompts, make_prompts());
    FERRY_ASSIGN_OR_RETURN(RunTotals t, RunOnce(runner, prompts, options, reuse));
    if (i == 0) continue;  // warm-up
    *stopped_early += t.stopped_early;
    rates.push_back(t.seconds > 0.0 ? rate(t) / t.seconds : 0.0);
  }
  return Summarize(rates);
}

// The memory and speed model of one load, as its plan says (the CPU: where bench runs).
struct LoadFacts {
  int num_gpu = -1;                  // as asked
  int gpu_layers = 0;                // the plan's (llama.cpp's count: blocks + 1 for the output)
  uint64_t kv_bytes = 0;             // planned, every device
  uint64_t compute_bytes = 0;        // planned, every device
  double predicted_tok_s = 0.0;      // the plan's single-stream decode speed at this num_ctx
  std::string processor;             // ProcessorSplit of the allocated bytes
  uint64_t gpu_planned_bytes = 0;    // the plan's GPU total
  uint64_t gpu_allocated_bytes = 0;  // what the GPU's allocator holds after the load
  // The GPU's free memory before the load minus after it (cudaMemGetInfo); 0 without a GPU.
  int64_t gpu_free_drop_bytes = 0;
};

struct Row {
  int32_t parallel = 1;
  int64_t depth = 0;
  int64_t n_prompt = 0;
  int64_t n_gen = 0;
  int threads = 0;
  MeanSd pp;
  MeanSd tg;
  LoadFacts load;
  uint64_t rss_bytes = 0;  // VmRSS after the row was measured
};

class Table {
 public:
  Table(std::string model, std::string params, std::string kv)
      : model_(std::move(model)), params_(std::move(params)), kv_(std::move(kv)) {
    model_width_ = std::max<size_t>(model_.size(), 5);
  }
  void Header() const {
    std::printf(
        "| %-*s | %10s | %7s | %4s | %8s | %16s | %20s | %10s | %10s | %10s | %8s | %16s |\n",
        Width(), "model", "params", "threads", "kv", "parallel", "test", "t/s", "kv mem", "compute",
        "rss", "plan t/s", "processor");
    std::printf(
        "| %s | %s: | %s: | %s | %s: | %s: | %s: | %s: | %s: | %s: | %s: | %s: |\n",
        std::string(Width(), '-').c_str(), std::string(9, '-').c_str(), std::string(6, '-').c_str(),
        std::string(4, '-').c_str(), std::string(7, '-').c_str(), std::string(15, '-').c_str(),
        std::string(19, '-').c_str(), std::string(9, '-').c_str(), std::string(9, '-').c_str(),
        std::string(9, '-').c_str(), std::string(7, '-').c_str(), std::string(15, '-').c_str());
    std::fflush(stdout);
  }
  // plan_tok_s: the plan's predicted decode speed, shown on tg lines of one sequence (it
  // models a single stream).
  void Line(int threads, int32_t parallel, const std::string& test, const MeanSd& r,
            const LoadFacts& load, uint64_t rss, bool show_plan) const {
    std::printf(
        "| %-*s | %10s | %7d | %4s | %8d | %16s | %21s | %10s | %10s | %10s | %8s | %16s |\n",
        Width(), model_.c_str(), params_.c_str(), threads, kv_.c_str(), parallel, test.c_str(),
        fmt::format("{:.2f} ± {:.2f}", r.mean, r.sd).c_str(), FormatBytes(load.kv_bytes).c_str(),
        FormatBytes(load.compute_bytes).c_str(), FormatBytes(rss).c_str(),
        show_plan ? fmt::format("{:.2f}", load.predicted_tok_s).c_str() : "",
        load.processor.c_str());
    std::fflush(stdout);
  }

 private:
  int Width() const { return static_cast<int>(model_width_); }
  std::string model_, params_, kv_;
  size_t model_width_;
};

}  // namespace

void AddBenchCommand(CLI::App& app, BenchOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "bench", "Measure prompt processing (pp) and generation (tg) speed, like llama-bench");
  cmd->add_option("model", o.model, "GGUF file path or model name")->required();
  cmd->add_option("-p,--n-prompt", o.n_prompt,
                  "Prompt tokens per sequence; a comma list gives one row each")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("-n,--n-gen", o.n_gen, "Tokens generated per sequence")->capture_default_str();
  cmd->add_option("-r,--repetitions", o.repetitions,
                  "Timed runs per test after one warm-up run (mean ± sample sd)")
      ->capture_default_str();
  cmd->add_option("-t,--num-thread", o.num_thread, "CPU threads (0: all cores)")
      ->capture_default_str();
  cmd->add_option("--kv-type", o.kv_type, "KV cache type: f16, q8_0 or q4_0")
      ->capture_default_str();
  cmd->add_option("--parallel", o.parallel,
                  "Sequences processed together (tok/s is their aggregate); a comma list "
                  "loads the model once for each")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--num-batch", o.num_batch, "Most tokens per forward step")
      ->capture_default_str();
  cmd->add_option("-d,--depth", o.depth,
                  "Tokens already in the KV cache when pp and tg are measured; a comma list "
                  "loads the model once for each")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--num-gpu", o.num_gpu,
                  "Layers on the GPU (-1: as many as fit; 0: none; the layer count + 1: all "
                  "and the output); a comma list loads the model once for each")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("-c,--num-ctx", o.num_ctx,
                  "Context length of each load (0: what the largest depth and test need); a "
                  "depth and test that need more are an error")
      ->capture_default_str();
  cmd->add_option("--gap-prompt", o.gap_prompt,
                  "Also measure the longest inter-token gap of a running stream while an "
                  "N-token prompt is processed (stderr)");
  cmd->add_flag("--json", o.json,
                "Print a JSON list of rows (parallel, depth, n_prompt, n_gen, threads, kv_type, "
                "pp_tok_s, pp_sd, tg_tok_s, tg_sd, kv_bytes, compute_bytes, rss_bytes, "
                "predicted_tg_tok_s, num_gpu, gpu_layers, processor, gpu_planned_bytes, "
                "gpu_allocated_bytes, gpu_free_drop_bytes) instead of the table");
}

// One stream decodes; once it runs, a gap_prompt-token request arrives. Every step carries the
// running stream's next token (decode tokens go first), so its inter-token gap is a step's
// duration: the longest while the prompt is processed, and the mean before it.
Status MeasureGap(const std::string& path, const DeviceInventory& inventory, LoadOptions lo,
                  const RunnerOptions& ro, const RequestOptions& base, int64_t gap_prompt,
                  uint64_t seed) {
  lo.num_parallel = 2;
  lo.max_sequences = 2;
  lo.logit_rows = 2;
  lo.num_ctx = gap_prompt + 8;
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<Runner> runner, LoadRunner(path, inventory, lo, ro));
  PromptMaker maker(runner->tokenizer().vocab(), seed);
  FERRY_ASSIGN_OR_RETURN(auto prompts, maker.Make(2, gap_prompt));
  RequestOptions stream_opts = base;
  stream_opts.num_ctx = lo.num_ctx;
  stream_opts.num_predict = -1;
  GenerateRequest running{{prompts[0][0]}, stream_opts};
  auto running_stream = std::make_shared<RequestStream>();
  FERRY_RETURN_IF_ERROR(runner->Submit(running, running_stream));
  using Clock = std::chrono::steady_clock;
  auto step = [&]() -> StatusOr<double> {
    const auto t0 = Clock::now();
    FERRY_RETURN_IF_ERROR(runner->Step().status());
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  double before = 0.0;
  const int kWarm = 3, kBefore = 16;
  for (int i = 0; i < kWarm + kBefore; ++i) {
    FERRY_ASSIGN_OR_RETURN(double dt, step());
    if (i >= kWarm) before += dt;
  }
  RequestOptions prompt_opts = base;
  prompt_opts.num_ctx = lo.num_ctx;
  prompt_opts.num_predict = 1;
  auto prompt_stream = std::make_shared<RequestStream>();
  FERRY_RETURN_IF_ERROR(runner->Submit(GenerateRequest{prompts[1], prompt_opts}, prompt_stream));
  double longest = 0.0, total = 0.0;
  int steps = 0;
  while (!prompt_stream->finished()) {
    if (running_stream->finished()) return InternalError("the running stream ended early");
    FERRY_ASSIGN_OR_RETURN(double dt, step());
    longest = std::max(longest, dt);
    total += dt;
    ++steps;
  }
  running_stream->Cancel();
  FERRY_RETURN_IF_ERROR(runner->Step().status());
  std::fprintf(
      stderr,
      "gap: a %lld-token prompt took %.2f s in %d steps (at most %lld prompt tokens in a step "
      "with decode tokens); the "
      "running stream's longest inter-token gap meanwhile was %.0f ms (%.0f ms per "
      "token before the prompt arrived)\n",
      static_cast<long long>(gap_prompt), total, steps,
      static_cast<long long>(std::min(lo.num_batch, ro.prefill_tokens_while_decoding)),
      longest * 1e3, before / kBefore * 1e3);
  return Status::Ok();
}

int RunBench(const Settings& settings, const BenchOptions& o) {
  if (Status s = Validate(o); !s.ok()) return Fail(s);
  auto path = ResolveModel(settings, o.model);
  if (!path.ok()) return Fail(path.status());
  const int64_t max_prompt = *std::max_element(o.n_prompt.begin(), o.n_prompt.end());
  for (int64_t d : o.depth) {
    if (o.num_ctx > 0 && NeededContext(o, d) > o.num_ctx) {
      return Fail(InvalidArgumentError(
          "-d {} with -p {} and -n {} needs a context of {} tokens, more than --num-ctx {}", d,
          max_prompt, o.n_gen, NeededContext(o, d), o.num_ctx));
    }
  }

  LoadOptions lo;
  lo.num_batch = o.num_batch;
  lo.kv_type = *ParseKvCacheType(o.kv_type);
  DiscoverOptions discover;
  discover.cpu_threads = o.num_thread;  // the calibration runs on as many threads as decode
  discover.cpu_matmul_flops = settings.cpu_matmul_flops;
  discover.cpu_bandwidth = settings.cpu_bandwidth;
  discover.cuda_bandwidth = settings.gpu_bandwidth;
  discover.gpu_overhead_bytes = settings.gpu_overhead_bytes;
  auto inventory = DiscoverDevices(discover);
  if (!inventory.ok()) return Fail(inventory.status());
  if (inventory->cpu().looked_busy) {
    std::fprintf(stderr,
                 "ferry: warning: the machine looked busy while it was calibrated: "
                 "figures may be low\n");
  }
  RunnerOptions ro;
  ro.num_threads = o.num_thread;
  ro.start_thread = false;

  RequestOptions request;
  request.num_batch = o.num_batch;
  request.num_thread = o.num_thread;
  request.sampling.temperature = 0.0f;  // greedy
  request.ignore_eos = true;            // exactly -n tokens per sequence, as llama-bench

  const std::string model_name = std::filesystem::path(*path).stem().string();
  std::optional<Table> table;
  std::vector<Row> rows;
  int32_t stopped_early = 0;
  uint64_t seed = 0x5eed;
  const size_t loads = o.parallel.size() * o.depth.size() * o.num_gpu.size();
  size_t load_index = 0;
  // The GPU whose memory the load takes (the first; ferry runs layers on one GPU).
  const std::vector<const Device*> gpus = inventory->gpus();
  for (int32_t parallel : o.parallel) {
    for (int64_t depth : o.depth) {
      for (int num_gpu : o.num_gpu) {
        ++load_index;
        lo.num_gpu = num_gpu;
        request.num_gpu = num_gpu;
        std::optional<CudaMemoryInfo> before;
        if (!gpus.empty()) {
          if (auto m = CudaMemoryNow(gpus.front()->index); m.ok()) before = *m;
        }
        lo.num_ctx = o.num_ctx > 0 ? o.num_ctx : NeededContext(o, depth);
        lo.num_parallel = parallel;
        lo.max_sequences = parallel;
        lo.logit_rows = parallel;
        request.num_ctx = lo.num_ctx;
        std::fprintf(stderr, "ferry: [%zu/%zu] loading for %d sequence(s) of %lld tokens\n",
                     load_index, loads, parallel, static_cast<long long>(lo.num_ctx));
        auto loaded = LoadRunner(*path, *inventory, lo, ro);
        if (!loaded.ok()) return Fail(loaded.status());
        Runner& runner = **loaded;
        const Plan plan = runner.plan();
        if (plan.options.num_ctx < lo.num_ctx) {
          // LoadRunner capped the context at the trained one: this depth cannot be measured.
          return Fail(InvalidArgumentError(
              "-d {} with -p and -n needs {} tokens of context, more than the {} tokens {} was "
              "trained on (bench only depths below it)",
              depth, lo.num_ctx, plan.options.num_ctx, *path));
        }
        LoadFacts facts;
        facts.num_gpu = num_gpu;
        facts.gpu_layers = plan.gpu_layers;
        for (const DevicePlan& d : plan.devices) {
          facts.kv_bytes += d.kv_bytes;
          facts.compute_bytes += d.compute_bytes;
        }
        facts.predicted_tok_s = plan.predicted_tok_s;
        facts.gpu_planned_bytes = plan.gpu_bytes();
        if (const DeviceAllocator* g = runner.gpu_allocator(); g != nullptr) {
          facts.gpu_allocated_bytes = g->allocated_bytes();
        }
        facts.processor = ProcessorSplit(facts.gpu_allocated_bytes + runner.allocated_bytes(),
                                         facts.gpu_allocated_bytes);
        if (before) {
          if (auto after = CudaMemoryNow(gpus.front()->index); after.ok()) {
            facts.gpu_free_drop_bytes =
                static_cast<int64_t>(before->free_bytes) - static_cast<int64_t>(after->free_bytes);
          }
        }
        if (facts.gpu_planned_bytes > 0) {
          // The GPU's memory three ways: planned, counted by its allocator, and taken from the
          // device (cudaMemGetInfo before and after the load).
          std::fprintf(stderr,
                       "ferry: [%zu/%zu] %s: planned %llu bytes, allocated %llu, free memory "
                       "dropped by %lld (%.4f of the plan); %s\n",
                       load_index, loads, gpus.front()->name.c_str(),
                       static_cast<unsigned long long>(facts.gpu_planned_bytes),
                       static_cast<unsigned long long>(facts.gpu_allocated_bytes),
                       static_cast<long long>(facts.gpu_free_drop_bytes),
                       static_cast<double>(facts.gpu_free_drop_bytes) /
                           static_cast<double>(facts.gpu_planned_bytes),
                       facts.processor.c_str());
        }
        if (!o.json && !table) {
          auto info = ReadModelInfo(runner.model().file());
          if (!info.ok()) return Fail(info.status());
          table.emplace(model_name, FormatCount(info->parameter_count), o.kv_type);
          table->Header();
        }
        const int threads = runner.options().num_threads;
        PromptMaker maker(runner.tokenizer().vocab(), seed++);

        // The depth prefixes, evaluated once; every timed prompt starts with its sequence's.
        std::vector<std::vector<int32_t>> prefixes(static_cast<size_t>(parallel));
        if (depth > 0) {
          std::fprintf(stderr, "ferry: [%zu/%zu] filling the KV cache to depth %lld\n", load_index,
                       loads, static_cast<long long>(depth));
          auto made = maker.Make(parallel, depth);
          if (!made.ok()) return Fail(made.status());
          prefixes = std::move(*made);
          RequestOptions fill = request;
          fill.num_predict = 0;
          if (auto t = RunOnce(runner, prefixes, fill, 0); !t.ok()) return Fail(t.status());
        }
        auto with_prefix = [&](int64_t length) -> StatusOr<std::vector<std::vector<int32_t>>> {
          FERRY_ASSIGN_OR_RETURN(std::vector<std::vector<int32_t>> tails,
                                 maker.Make(parallel, length));
          for (size_t i = 0; i < tails.size(); ++i) {
            tails[i].insert(tails[i].begin(), prefixes[i].begin(), prefixes[i].end());
          }
          return tails;
        };
        const std::string at = depth > 0 ? fmt::format(" @ d{}", depth) : "";

        std::vector<Row> these;
        for (int64_t n_prompt : o.n_prompt) {
          std::fprintf(stderr, "ferry: [%zu/%zu] pp%lld%s\n", load_index, loads,
                       static_cast<long long>(n_prompt), at.c_str());
          RequestOptions pp = request;
          pp.num_predict = 0;  // only the prompt is evaluated
          auto r = Measure(
              runner, pp, o.repetitions, depth, [&] { return with_prefix(n_prompt); },
              [](const RunTotals& t) { return static_cast<double>(t.prompt_tokens); },
              &stopped_early);
          if (!r.ok()) return Fail(r.status());
          Row row;
          row.parallel = parallel;
          row.depth = depth;
          row.n_prompt = n_prompt;
          row.n_gen = o.n_gen;
          row.threads = threads;
          row.pp = *r;
          row.load = facts;
          row.rss_bytes = ResidentBytes();
          these.push_back(row);
          if (table) {
            table->Line(threads, parallel, fmt::format("pp{}{}", n_prompt, at), row.pp, facts,
                        row.rss_bytes, false);
          }
        }
        std::fprintf(stderr, "ferry: [%zu/%zu] tg%lld%s\n", load_index, loads,
                     static_cast<long long>(o.n_gen), at.c_str());
        RequestOptions tg = request;
        tg.num_predict = o.n_gen;
        // Generation from a one-token prompt after the prefix (llama-bench's tg), a distinct
        // token per sequence.
        auto r = Measure(
            runner, tg, o.repetitions, depth, [&] { return with_prefix(1); },
            [](const RunTotals& t) { return static_cast<double>(t.generated_tokens); },
            &stopped_early);
        if (!r.ok()) return Fail(r.status());
        const uint64_t rss = ResidentBytes();
        if (table) {
          table->Line(threads, parallel, fmt::format("tg{}{}", o.n_gen, at), *r, facts, rss,
                      parallel == 1);
        }
        for (Row& row : these) {
          row.tg = *r;
          row.rss_bytes = std::max(row.rss_bytes, rss);
          rows.push_back(row);
        }
      }
    }
  }
  if (o.gap_prompt > 0) {
    if (Status s = MeasureGap(*path, *inventory, lo, ro, request, o.gap_prompt, seed); !s.ok()) {
      return Fail(s);
    }
  }
  if (stopped_early > 0) {
    std::fprintf(stderr,
                 "ferry: warning: %d generation(s) ended on EOS before -n tokens; tg "
                 "counts the tokens actually generated\n",
                 stopped_early);
  }
  if (o.json) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const Row& row : rows) {
      nlohmann::ordered_json j;
      j["parallel"] = row.parallel;
      j["depth"] = row.depth;
      j["n_prompt"] = row.n_prompt;
      j["n_gen"] = row.n_gen;
      j["threads"] = row.threads;
      j["kv_type"] = o.kv_type;
      j["pp_tok_s"] = row.pp.mean;
      j["pp_sd"] = row.pp.sd;
      j["tg_tok_s"] = row.tg.mean;
      j["tg_sd"] = row.tg.sd;
      j["kv_bytes"] = row.load.kv_bytes;
      j["compute_bytes"] = row.load.compute_bytes;
      j["rss_bytes"] = row.rss_bytes;
      j["predicted_tg_tok_s"] = row.load.predicted_tok_s;
      j["num_gpu"] = row.load.num_gpu;
      j["gpu_layers"] = row.load.gpu_layers;
      j["processor"] = row.load.processor;
      j["gpu_planned_bytes"] = row.load.gpu_planned_bytes;
      j["gpu_allocated_bytes"] = row.load.gpu_allocated_bytes;
      j["gpu_free_drop_bytes"] = row.load.gpu_free_drop_bytes;
      out.push_back(std::move(j));
    }
    std::printf("%s\n", out.dump(2).c_str());
  }
  return 0;
}

}  // namespace ferry::app
