#include "cmd_run.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "backend/device.h"
#include "base/bytes.h"
#include "base/log.h"
#include "chat/chat_template.h"
#include "chat/go_template.h"
#include "cmd_client.h"
#include "interactive.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "model/model_info.h"
#include "planner/plan.h"
#include "runtime/loader.h"
#include "runtime/runner.h"
#include "store/modelfile.h"
#include "tokenizer/tokenizer.h"

namespace ferry::app {
namespace {

// A flag value with the escapes \n, \t, \r and \\ replaced; any other backslash is kept.
std::string UnescapeFlag(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      const char next = text[i + 1];
      const char* rep = next == 'n'    ? "\n"
                        : next == 't'  ? "\t"
                        : next == 'r'  ? "\r"
                        : next == '\\' ? "\\"
                                       : nullptr;
      if (rep != nullptr) {
        out += rep;
        ++i;
        continue;
      }
    }
    out += text[i];
  }
  return out;
}

// The load flags (context, batch, threads, KV type), which every command that loads a model
// takes; with `generation`, also the generation and sampling flags.
void AddRequestFlags(CLI::App* cmd, RequestFlags& r, bool generation = true) {
  RequestOptions& o = r.options;
  SamplingOptions& s = o.sampling;
  auto& f = r.flags;
  f["num_ctx"] =
      cmd->add_option("-c,--num-ctx", o.num_ctx,
                      "Context length in tokens (KV cache size; capped at the trained context)");
  f["num_batch"] = cmd->add_option("-b,--num-batch", o.num_batch, "Prompt tokens per forward step");
  f["num_thread"] = cmd->add_option("-t,--num-thread", o.num_thread,
                                    "CPU threads (0: all cores; capped at the hardware threads)");
  cmd->add_option("--kv-type", r.kv_type, "KV cache type: f16, q8_0, q4_0 or f32");
  f["num_gpu"] = cmd->add_option("--num-gpu", o.num_gpu,
                                 "Layers on the GPU (-1: as many as fit; 0: none; the layer "
                                 "count + 1: all and the output)");
  if (!generation) return;
  f["num_predict"] =
      cmd->add_option("-n,--num-predict", o.num_predict, "Tokens to generate (-1: until done)");
  f["temperature"] =
      cmd->add_option("--temperature,--temp", s.temperature, "Sampling temperature (0: greedy)");
  f["top_k"] = cmd->add_option("--top-k", s.top_k, "Keep the k most likely tokens (0: off)");
  f["top_p"] = cmd->add_option("--top-p", s.top_p, "Nucleus sampling mass (1: off)");
  f["min_p"] = cmd->add_option("--min-p", s.min_p, "Drop tokens below min_p x the top probability");
  f["repeat_penalty"] =
      cmd->add_option("--repeat-penalty", s.repeat_penalty, "Penalty for repeated tokens (1: off)");
  f["repeat_last_n"] =
      cmd->add_option("--repeat-last-n", s.repeat_last_n, "Tokens the penalties look back over");
  f["presence_penalty"] =
      cmd->add_option("--presence-penalty", s.presence_penalty, "Presence penalty");
  f["frequency_penalty"] =
      cmd->add_option("--frequency-penalty", s.frequency_penalty, "Frequency penalty");
  // Ollama's seed: -1 (the default) draws a fresh one; any other value repeats its sampling.
  f["seed"] =
      cmd->add_option_function<int64_t>(
             "-s,--seed",
             [&s](const int64_t& v) { s.seed = v < 0 ? std::nullopt : std::optional<uint64_t>(v); },
             "Random seed for reproducible sampling (-1: a fresh one each run)")
          ->check(CLI::Range(int64_t{-1}, std::numeric_limits<int64_t>::max()));
  // Shells pass "\n" as two characters: the escapes people write in a stop string are read.
  f["stop"] = cmd->add_option_function<std::vector<std::string>>(
      "--stop",
      [&o](const std::vector<std::string>& values) {
        o.stop.clear();
        for (const std::string& v : values) o.stop.push_back(UnescapeFlag(v));
      },
      "Stop string (repeatable; \\n, \\t, \\r, \\\\ are read as escapes)");
}

}  // namespace

Status ApplyParameter(const std::string& name, const std::vector<std::string>& values,
                      RequestOptions& o) {
  SamplingOptions& s = o.sampling;
  if (values.empty()) return InvalidArgumentError("{}: no value", name);
  if (name == "stop") {
    o.stop = values;
    return Status::Ok();
  }
  const std::optional<store::ParameterType> type = store::FindParameterType(name);
  if (!type) return store::ValidateParameter(name, values.front());  // names the known ones
  if (values.size() != 1) return InvalidArgumentError("{} takes one value", name);
  const std::string& text = values.back();
  FERRY_RETURN_IF_ERROR(store::ValidateParameter(name, text));
  int64_t i = 0;
  double d = 0;
  const char* end = text.data() + text.size();
  if (*type == store::ParameterType::kInt) {
    std::from_chars(text.data(), end, i);
    d = static_cast<double>(i);
  } else {
    std::from_chars(text.data(), end, d);
  }
  if (name == "num_ctx")
    o.num_ctx = i;
  else if (name == "num_predict")
    o.num_predict = i;
  else if (name == "num_batch")
    o.num_batch = i;
  else if (name == "num_thread")
    o.num_thread = static_cast<int>(i);
  else if (name == "num_gpu")
    o.num_gpu = static_cast<int>(i);
  else if (name == "top_k")
    s.top_k = static_cast<int32_t>(i);
  else if (name == "repeat_last_n")
    s.repeat_last_n = static_cast<int32_t>(i);
  else if (name == "seed")
    s.seed = i < 0 ? std::nullopt : std::optional<uint64_t>(i);
  else if (name == "temperature")
    s.temperature = static_cast<float>(d);
  else if (name == "top_p")
    s.top_p = static_cast<float>(d);
  else if (name == "min_p")
    s.min_p = static_cast<float>(d);
  else if (name == "repeat_penalty")
    s.repeat_penalty = static_cast<float>(d);
  else if (name == "presence_penalty")
    s.presence_penalty = static_cast<float>(d);
  else if (name == "frequency_penalty")
    s.frequency_penalty = static_cast<float>(d);
  // Other known names (num_keep, ...) have no use in ferry yet and are accepted unchanged.
  return Status::Ok();
}

namespace {

// A stored model's PARAMETERs become the request's defaults; an option the command line gave
// wins (Ollama's merge order: the Modelfile's parameters, then the request's options).
Status ApplyModelParameters(const std::map<std::string, std::vector<std::string>>& params,
                            RequestFlags& r) {
  for (const auto& [name, values] : params) {
    if (values.empty()) continue;
    auto flag = r.flags.find(name);
    if (flag != r.flags.end() && flag->second->count() > 0) continue;
    // A Modelfile's PARAMETER lines repeat for stop; any other parameter's last line wins.
    const std::vector<std::string> given =
        name == "stop" ? values : std::vector<std::string>{values.back()};
    Status s = ApplyParameter(name, given, r.options);
    if (!s.ok()) return s.WithPrefix("the model's PARAMETER");
  }
  return Status::Ok();
}

// Perplexity computes every token's logits, this many tokens at a time (the compute buffer
// holds [rows, n_vocab] floats: 64 MiB for a 262144-token vocabulary).
constexpr int64_t kPerplexityLogitRows = 64;

// logit_rows: LoadOptions::logit_rows (1 for generation). Without an inference thread: the
// command drives the runner itself (one request at a time).
// `path`: the GGUF file.
StatusOr<std::unique_ptr<Runner>> Load(const Settings& settings, const std::string& path,
                                       const RequestFlags& r, int64_t logit_rows = 1) {
  FERRY_RETURN_IF_ERROR(ValidateRequestOptions(r.options));
  LoadOptions lo;
  lo.num_ctx = r.options.num_ctx;
  lo.num_batch = std::min(r.options.num_batch, r.options.num_ctx);
  StatusOr<DType> kv_type = ParseKvCacheType(r.kv_type);
  if (!kv_type.ok()) return InvalidArgumentError("--kv-type: {}", kv_type.status().message());
  lo.kv_type = *kv_type;
  lo.logit_rows = std::max<int64_t>(1, std::min(logit_rows, lo.num_batch));
  lo.num_gpu = r.options.num_gpu;
  DiscoverOptions discover;
  discover.cpu_threads = r.options.num_thread;  // the calibration runs on as many threads as decode
  discover.cpu_matmul_flops = settings.cpu_matmul_flops;
  discover.cpu_bandwidth = settings.cpu_bandwidth;
  discover.cuda_bandwidth = settings.gpu_bandwidth;
  discover.gpu_overhead_bytes = settings.gpu_overhead_bytes;
  FERRY_ASSIGN_OR_RETURN(DeviceInventory inv, DiscoverDevices(discover));
  RunnerOptions ro;
  ro.num_threads = r.options.num_thread;
  ro.start_thread = false;
  return LoadRunner(path, inv, lo, ro);
}

// One line for the user on stderr, dimmed on a terminal (plain when piped or with NO_COLOR).
void Dim(const Settings& settings, const std::string& line) {
  const bool tty = ::isatty(STDERR_FILENO) == 1 && !settings.no_color;
  std::fprintf(stderr, tty ? "\x1b[2mferry: %s\x1b[0m\n" : "ferry: %s\n", line.c_str());
}

int Fail(const Status& s) {
  std::fprintf(stderr, "ferry: %s\n", s.message().c_str());
  return 1;
}

// Generates one answer, streaming it to stdout. Returns the answer text.
StatusOr<std::string> Answer(Runner& runner, const std::vector<int32_t>& prompt,
                             const RunOptions& o) {
  GenerateRequest req;
  req.prompt = prompt;
  req.options = o.request.options;
  // Output that cannot be written stops the generation (main() reports it and exits 1), and
  // so does Ctrl-C in an interactive session (the reply so far is kept).
  FERRY_ASSIGN_OR_RETURN(GenerateResult gen, runner.Generate(req, [](std::string_view s) {
    if (Interrupted()) return false;
    return std::fwrite(s.data(), 1, s.size(), stdout) == s.size() && std::fflush(stdout) == 0;
  }));
  std::printf("\n");
  std::fflush(stdout);
  const GenerateStats& res = gen.stats;
  if (res.done_reason == DoneReason::kLength) {
    const int64_t used = static_cast<int64_t>(prompt.size()) + res.eval_count;
    if (used >= req.options.num_ctx) {
      std::fprintf(stderr, "[stopped: the context of %lld tokens is full; raise --num-ctx]\n",
                   static_cast<long long>(req.options.num_ctx));
    }
  }
  if (o.verbose) {
    auto rate = [](int64_t n, int64_t ns) { return ns > 0 ? 1e9 * n / ns : 0.0; };
    std::fprintf(stderr,
                 "prompt: %lld tokens in %.3f s (%.2f tok/s)\n"
                 "generation: %lld tokens in %.3f s (%.2f tok/s), done_reason=%s\n",
                 static_cast<long long>(res.prompt_eval_count), res.prompt_eval_ns / 1e9,
                 rate(res.prompt_eval_count, res.prompt_eval_ns),
                 static_cast<long long>(res.eval_count), res.eval_ns / 1e9,
                 rate(res.eval_count, res.eval_ns),
                 std::string(DoneReasonName(res.done_reason)).c_str());
  }
  return gen.text;
}

}  // namespace

void AddRunCommand(CLI::App& app, RunOptions& o) {
  CLI::App* run = app.add_subcommand("run",
                                     "Generate text with a model (interactive chat when "
                                     "no prompt is given)");
  run->add_option("model,-m,--model", o.model, "GGUF file path, or a model name (see ferry list)")
      ->required();
  // Every word after the model is the prompt, as `ollama run MODEL Why is the sky blue` takes it.
  run->add_option_function<std::vector<std::string>>(
      "prompt,-p,--prompt",
      [&o](const std::vector<std::string>& words) {
        std::string joined;
        for (const std::string& w : words) joined += (joined.empty() ? "" : " ") + w;
        o.prompt = joined;
      },
      "The prompt (the words after the model, joined by spaces); omit for an interactive chat, "
      "or pipe it on standard input");
  run->add_flag("--raw", o.raw, "Plain completion: no chat template");
  run->add_flag("--verbose", o.verbose, "Print timings (prompt and generation tok/s)");
  run->add_flag("--local", o.local,
                "Run in this process even when a ferry serve answers on FERRY_HOST (by default "
                "run talks to it, so ferry ps sees the model)");
  run->add_option("--system", o.system, "System message for chat mode");
  run->add_option("--template", o.template_name,
                  "Chat format for a file without a chat template: gemma, llama3, chatml or "
                  "mistral (without one, such a file runs raw)");
  AddRequestFlags(run, o.request);
}

void AddPerplexityCommand(CLI::App& app, PerplexityOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "perplexity", "Perplexity of a model over a text file, in windows of --num-ctx tokens");
  cmd->add_option("model,-m,--model", o.model, "GGUF file path or model name")->required();
  cmd->add_option("file,-f,--file", o.file, "UTF-8 text file")->required();
  AddRequestFlags(cmd, o.request, /*generation=*/false);
}

int RunRun(const Settings& settings, const RunOptions& given_options) {
  if (given_options.verbose && log::GetLevel() > log::Level::kInfo) {
    log::SetLevel(log::Level::kInfo);
  }
  RunOptions options = given_options;
  if (::isatty(STDIN_FILENO) != 1) {
    // As `ollama run`: input that is not a terminal is one prompt, in front of the prompt words.
    StatusOr<std::string> in = ReadPipedPrompt(options.request.options.num_ctx);
    if (!in.ok()) return Fail(in.status());
    if (!in->empty()) options.prompt = options.prompt ? *in + " " + *options.prompt : *in;
    if (!options.prompt) {
      return Fail(
          InvalidArgumentError("the prompt is empty (standard input is not a "
                               "terminal and held nothing)"));
    }
  }
  if (!options.local) {
    int code = 0;
    if (RunThroughServer(settings, options, &code)) return code;
  }
  auto found = FindModel(settings, options.model);
  if (!found.ok()) return Fail(found.status());
  if (options.raw && !options.system.empty()) {
    return Fail(
        InvalidArgumentError("--system has no effect with --raw (a raw prompt is "
                             "sent as it is); put the text in the prompt"));
  }
  if (options.raw && !options.template_name.empty()) {
    return Fail(InvalidArgumentError("--template has no effect with --raw"));
  }
  // A stored model's PARAMETERs, SYSTEM, MESSAGEs and TEMPLATE are defaults of this run.
  RunOptions o = options;
  const store::ModelExtras* extras = found->stored ? &found->stored->extras : nullptr;
  if (extras != nullptr) {
    Status s = ApplyModelParameters(extras->parameters, o.request);
    if (!s.ok()) return Fail(s);
  }
  auto loaded = Load(settings, found->path, o.request);
  if (!loaded.ok()) return Fail(loaded.status());
  std::unique_ptr<Runner> runner = std::move(*loaded);
  std::optional<chat::ChatTemplate> tmpl;
  std::optional<chat::GoTemplate> go_tmpl;
  std::string jinja;  // the file's tokenizer.chat_template, "" when it has none
  if (const gguf::Value* v = runner->model().file().Find("tokenizer.chat_template")) {
    if (auto s = v->AsString(); s.ok()) jinja = std::string(*s);
  }
  if (!o.raw && extras != nullptr && extras->template_text) {
    auto t = chat::GoTemplate::Parse(*extras->template_text);
    if (!t.ok()) return Fail(t.status().WithPrefix("the model's TEMPLATE"));
    go_tmpl = *t;
    if (o.verbose) std::fprintf(stderr, "chat template: the model's TEMPLATE\n");
  } else if (!o.raw && o.template_name.empty() && jinja.empty()) {
    // As `ollama run` with `{{ .Prompt }}`: a file without a chat template (a base model,
    // even of an architecture that has a chat format) is run raw, and says so.
    o.raw = true;
    Dim(settings, fmt::format("{} has no chat template: running raw (--template gemma, llama3, "
                              "chatml or mistral applies one)",
                              found->path));
  }
  if (!o.raw && !go_tmpl) {
    auto t = o.template_name.empty()
                 ? chat::ChatTemplate::Detect(
                       jinja, runner->model().hparams().arch,
                       runner->tokenizer().vocab().Find("<|start_header_id|>") >= 0)
                 : chat::ChatTemplate::Named(o.template_name);
    if (!t.ok()) return Fail(t.status());
    tmpl = *t;
    if (o.verbose) {
      std::fprintf(stderr, "chat template: %s (%s)\n",
                   std::string(chat::TemplateKindName(tmpl->kind())).c_str(),
                   tmpl->source().c_str());
    }
  }
  std::vector<chat::Message> conversation;
  if (!o.system.empty()) {
    conversation.push_back({"system", o.system});
  } else if (extras != nullptr && extras->system) {
    conversation.push_back({"system", *extras->system});
  }
  if (extras != nullptr) {
    for (const store::ModelfileMessage& m : extras->messages) {
      conversation.push_back({m.role, m.content});
    }
  }

  // A request larger than the model's trained context runs at that context (LoadRunner says so).
  o.request.options.num_ctx = std::min(o.request.options.num_ctx, runner->plan().options.num_ctx);
  // A prompt that cannot fit is refused as soon as that is known, not tokenized whole.
  auto encode = [&](const std::string& text, bool parse_special) -> StatusOr<std::vector<int32_t>> {
    const int64_t num_ctx = o.request.options.num_ctx;
    auto ids = runner->tokenizer().Encode(text, true, parse_special, num_ctx);
    if (!ids.ok()) {
      return ids.status().WithPrefix(fmt::format(
          "the prompt does not fit: num_ctx is {} (ferry never truncates a prompt; raise "
          "--num-ctx)",
          num_ctx));
    }
    return ids;
  };
  auto one_turn = [&](const std::string& text) -> Status {
    std::vector<int32_t> prompt;
    if (o.raw) {
      // Raw for want of a template: a system message goes in front, as `ferry serve` (and
      // Ollama's {{ .Prompt }} default) does.
      const bool system_first =
          !options.raw && !conversation.empty() && conversation.front().role == "system";
      FERRY_ASSIGN_OR_RETURN(
          prompt,
          encode(system_first ? conversation.front().content + "\n\n" + text : text, false));
      if (prompt.empty()) {
        return InvalidArgumentError("the prompt is empty and the model adds no BOS token");
      }
    } else {
      conversation.push_back({"user", text});
      StatusOr<std::string> rendered =
          go_tmpl ? chat::RenderChat(*go_tmpl, conversation) : tmpl->Render(conversation, true);
      StatusOr<std::vector<int32_t>> ids = rendered.ok()
                                               ? encode(*rendered, true)
                                               : StatusOr<std::vector<int32_t>>(rendered.status());
      if (!ids.ok()) {
        conversation.pop_back();
        return ids.status();
      }
      prompt = std::move(*ids);
    }
    auto answer = Answer(*runner, prompt, o);
    if (!answer.ok()) {
      if (!o.raw) conversation.pop_back();
      return answer.status();
    }
    // A reply stopped with Ctrl-C stays in the conversation as far as it went.
    if (!o.raw) conversation.push_back({"assistant", *answer});
    return Status::Ok();
  };

  if (o.prompt) {
    Status s = one_turn(*o.prompt);
    return s.ok() ? 0 : Fail(s);
  }

  // The interactive session. Its hooks act on this run's conversation, options and runner.
  const std::vector<chat::Message> initial = conversation;
  SessionHooks hooks;
  hooks.turn = one_turn;
  hooks.clear = [&] {
    conversation.clear();
    if (!initial.empty() && initial.front().role == "system") {
      conversation.push_back(initial.front());
    }
  };
  hooks.set_system = [&](const std::string& text) {
    if (!conversation.empty() && conversation.front().role == "system") {
      conversation.erase(conversation.begin());
    }
    if (!text.empty()) conversation.insert(conversation.begin(), {"system", text});
  };
  hooks.set_parameter = [&](const std::string& name,
                            const std::vector<std::string>& values) -> Status {
    RequestOptions next = o.request.options;
    FERRY_RETURN_IF_ERROR(ApplyParameter(name, values, next));
    FERRY_RETURN_IF_ERROR(ValidateRequestOptions(next));
    const auto& loaded_with = runner->plan().options;
    // A smaller num_ctx runs in the loaded runner; a larger one, another batch size or thread
    // count needs a new load (the old runner is freed first, and comes back if that fails).
    const bool reload = next.num_ctx > loaded_with.num_ctx ||
                        next.num_batch != o.request.options.num_batch ||
                        next.num_thread != o.request.options.num_thread;
    if (reload) {
      RequestFlags wanted = o.request;
      wanted.options = next;
      runner.reset();
      auto again = Load(settings, found->path, wanted);
      if (!again.ok()) {
        auto back = Load(settings, found->path, o.request);
        if (!back.ok()) {
          return again.status().WithPrefix(
              fmt::format("reloading failed, and so did loading the model as it was ({})",
                          back.status().message()));
        }
        runner = std::move(*back);
        return again.status();
      }
      runner = std::move(*again);
      next.num_ctx = std::min(next.num_ctx, runner->plan().options.num_ctx);
    }
    o.request.options = next;
    return Status::Ok();
  };
  hooks.show = [&](const std::string& what) -> StatusOr<std::string> {
    if (what == "info") {
      FERRY_ASSIGN_OR_RETURN(ModelInfo info, ReadModelInfo(runner->model().file()));
      return FormatSessionInfo(info.architecture, info.parameter_count,
                               info.context_length.value_or(0), info.embedding_length.value_or(0),
                               info.file_type_name);
    }
    if (what == "parameters") return FormatSessionParameters(o.request.options);
    if (what == "system") {
      if (!conversation.empty() && conversation.front().role == "system") {
        return conversation.front().content;
      }
      return std::string("No system message was specified for this model.");
    }
    // template
    if (go_tmpl) return *extras->template_text;
    if (tmpl) {
      return fmt::format("{} ({})", chat::TemplateKindName(tmpl->kind()), tmpl->source());
    }
    return std::string("No chat template: prompts are sent raw.");
  };
  return RunSession(settings, options.model, hooks);
}

int RunPerplexity(const Settings& settings, const PerplexityOptions& o) {
  std::ifstream in(o.file, std::ios::binary);
  if (!in) return Fail(NotFoundError("{}: cannot read the text file", o.file));
  std::stringstream ss;
  ss << in.rdbuf();
  auto path = ResolveModel(settings, o.model);
  if (!path.ok()) return Fail(path.status());
  auto loaded = Load(settings, *path, o.request, kPerplexityLogitRows);
  if (!loaded.ok()) return Fail(loaded.status());
  // As llama-perplexity: the text is tokenized with BOS (when the model adds one), and each
  // window's first token is then replaced by BOS (Runner::Perplexity).
  auto tokens = (*loaded)->tokenizer().Encode(ss.str(), true, false);
  if (!tokens.ok()) return Fail(tokens.status());
  int64_t scored = 0;
  // Each window's running value on stderr as it is computed, as llama-perplexity prints them.
  auto ppl = (*loaded)->Perplexity(*tokens, &scored, [](int64_t window, double running) {
    std::fprintf(stderr, "[%lld]%.4f,", static_cast<long long>(window), running);
    std::fflush(stderr);
  });
  std::fprintf(stderr, "\n");
  if (!ppl.ok()) return Fail(ppl.status());
  std::printf("perplexity %.4f over %lld scored tokens (%lld tokens, windows of %lld)\n", *ppl,
              static_cast<long long>(scored), static_cast<long long>(tokens->size()),
              static_cast<long long>((*loaded)->plan().options.num_ctx));
  return 0;
}

}  // namespace ferry::app
