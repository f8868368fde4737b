#include "runtime/runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

namespace ferry {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Length of the longest prefix of `s` that is complete UTF-8 (an incomplete trailing sequence
// is held back until its continuation bytes arrive).
size_t CompleteUtf8Prefix(const std::string& s) {
  size_t n = s.size();
  size_t i = n;
  // Look back at most 3 bytes for a lead byte.
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    size_t need = (c & 0x80) == 0 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                                       : (c & 0xF8) == 0xF0 ? 4 : 1;
    i = back >= need ? n : n - back;
    break;
  }
  return i;
}

// Bytes at the end of `text` that could still become the start of a stop string.
size_t StopHoldback(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& s : stops) {
    for (size_t k = std::min(s.size() - 1, text.size()); k > hold; --k) {
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  return hold;
}

}  // namespace

StatusOr<std::unique_ptr<Runner>> Runner::Create(const Model* model,
                                                 const tokenizer::Tokenizer* tokenizer,
                                                 const RunnerOptions& options) {
  if (options.num_ctx <= 0 || options.num_ctx > (int64_t{1} << 24)) {
    return InvalidArgumentError("num_ctx {} is out of range (1 .. 16777216)", options.num_ctx);
  }
  if (options.num_batch <= 0 || options.num_batch > 65536) {
    return InvalidArgumentError("num_batch {} is out of range (1 .. 65536)", options.num_batch);
  }
  if (options.logit_rows < 1 || options.logit_rows > 4096) {
    return InvalidArgumentError("logit_rows {} is out of range (1 .. 4096)", options.logit_rows);
  }
  if (options.num_threads < 0 || options.num_threads > 1024) {
    return InvalidArgumentError("num_thread {} is out of range", options.num_threads);
  }
  std::unique_ptr<Runner> r(new Runner());
  r->model_ = model;
  r->tokenizer_ = tokenizer;
  r->options_ = options;
  r->options_.num_batch = std::min(options.num_batch, options.num_ctx);
  int threads = options.num_threads > 0
                    ? options.num_threads
                    : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  r->options_.num_threads = threads;
  r->pool_ = std::make_unique<ThreadPool>(threads);
  r->allocator_ = std::make_unique<DeviceAllocator>("cpu", options.cpu_capacity_bytes);
  // The weights are used in place from the mapping: each tensor's mapped bytes are charged, so
  // the allocator accounts them with everything else (a tied output is token_embd itself and
  // is not counted twice: it is one tensor).
  const gguf::GgufFile& file = model->file();
  r->weight_charges_.reserve(file.tensors().size());
  for (const gguf::TensorInfo& t : file.tensors()) {
    FERRY_ASSIGN_OR_RETURN(DeviceAllocator::Buffer b,
                           r->allocator_->Charge(file.TensorData(t), "weights"));
    r->weight_charges_.push_back(std::move(b));
  }
  // The loader's host memory, as built: the mapped header, the parsed metadata and the
  // tokenizer's tables (the planner predicts the same three from the header: HostBytesFor).
  FERRY_ASSIGN_OR_RETURN(r->host_charge_,
                         r->allocator_->Charge(file.data_offset() + file.heap_bytes() +
                                                   tokenizer->vocab().heap_bytes(),
                                               "host"));
  FERRY_ASSIGN_OR_RETURN(
      r->kv_, KvCache::Create(model->KvOptions(options.kv_type, options.num_ctx, 1,
                                               r->options_.num_batch),
                              r->allocator_.get()));
  FERRY_ASSIGN_OR_RETURN(
      r->scratch_,
      ForwardScratch::Create(
          ForwardScratch::ShapeFor(*model, r->options_.num_batch, options.num_ctx,
                                   options.logit_rows),
          *r->allocator_, options.compute_bytes));
  // The sampler's working memory for one sequence (Sampler::WorkspaceBytes), so generating
  // allocates nothing.
  FERRY_ASSIGN_OR_RETURN(
      r->sampling_,
      r->allocator_->Allocate(Sampler::WorkspaceBytes(static_cast<int32_t>(model->hparams().n_vocab),
                                                      static_cast<int32_t>(options.num_ctx)),
                              "sampling"));
  FERRY_ASSIGN_OR_RETURN(r->seq_, r->kv_->AddSequence());
  return r;
}

StatusOr<std::span<const float>> Runner::Eval(std::span<const int32_t> tokens, int64_t pos0) {
  ForwardOptions fo;
  fo.pool = pool_.get();
  fo.scratch = scratch_.get();
  fo.logits_in_scratch = true;
  std::vector<float> untouched;  // logits stay in the scratch
  for (size_t off = 0; off < tokens.size(); off += static_cast<size_t>(options_.num_batch)) {
    const size_t n = std::min(tokens.size() - off, static_cast<size_t>(options_.num_batch));
    const int64_t pos = pos0 + static_cast<int64_t>(off);
    FERRY_RETURN_IF_ERROR(kv_->Reserve(seq_, pos + static_cast<int64_t>(n)));
    // Each chunk leaves its last token's logits; the last chunk's are the result.
    FERRY_RETURN_IF_ERROR(
        model_->Forward(tokens.subspan(off, n), pos, *kv_, seq_, fo, &untouched));
  }
  return std::span<const float>(scratch_->logits(),
                                static_cast<size_t>(model_->hparams().n_vocab));
}

StatusOr<GenerateResult> Runner::Generate(const GenerateRequest& req, const TextCallback& on_text) {
  const int64_t n_ctx = options_.num_ctx;
  const int64_t n_prompt = static_cast<int64_t>(req.prompt.size());
  if (n_prompt == 0) return InvalidArgumentError("the prompt has no tokens");
  if (n_prompt > n_ctx) {
    return OutOfRangeError("the prompt is {} tokens but num_ctx is {}: raise num_ctx (ferry "
                           "never truncates a prompt)", n_prompt, n_ctx);
  }
  if (req.num_predict < -1) {
    return InvalidArgumentError("num_predict {} must be -1 (no limit) or >= 0", req.num_predict);
  }
  for (const std::string& s : req.stop) {
    if (s.empty()) return InvalidArgumentError("stop strings must not be empty");
  }
  const int64_t n_vocab = model_->hparams().n_vocab;
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<Sampler> sampler,
                         Sampler::Create(req.sampling, static_cast<int32_t>(n_vocab),
                                         static_cast<int32_t>(n_ctx),
                                         std::span<uint8_t>(sampling_.data(),
                                                            static_cast<size_t>(sampling_.size()))));
  FERRY_RETURN_IF_ERROR(kv_->Truncate(seq_, 0));

  GenerateResult result;
  int64_t t0 = NowNs();
  FERRY_ASSIGN_OR_RETURN(std::span<const float> logits, Eval(req.prompt, 0));
  result.prompt_eval_ns = NowNs() - t0;
  result.prompt_eval_count = n_prompt;
  for (int32_t t : req.prompt) sampler->Accept(t);

  std::string pending;  // decoded bytes not yet handed out
  size_t emitted = 0;   // bytes of result.text already passed to on_text
  int64_t pos = n_prompt;
  t0 = NowNs();
  result.done_reason = "length";
  bool cancelled = false;
  while (true) {
    if (req.num_predict >= 0 && result.eval_count >= req.num_predict) break;
    if (pos >= n_ctx) break;  // context full: "length", reported, never wrapped
    const int32_t tok = sampler->Sample(logits);
    sampler->Accept(tok);
    ++result.eval_count;
    if (tokenizer_->vocab().IsEog(tok)) {
      result.done_reason = "stop";
      break;
    }
    result.tokens.push_back(tok);
    std::string piece = tokenizer_->TokenToPiece(tok);
    // Text that starts right after BOS: SentencePiece's space prefix is not part of it (as
    // Decode() does for the first piece).
    if (result.tokens.size() == 1 && n_prompt == 1 && req.prompt[0] == tokenizer_->vocab().bos() &&
        tokenizer_->vocab().add_space_prefix() && !piece.empty() && piece[0] == ' ') {
      piece.erase(0, 1);
    }
    pending += piece;
    result.text.append(pending, 0, CompleteUtf8Prefix(pending));
    pending.erase(0, CompleteUtf8Prefix(pending));
    // Stop strings: cut the text at the first occurrence.
    bool stopped = false;
    for (const std::string& s : req.stop) {
      size_t at = result.text.find(s, emitted > s.size() ? emitted - s.size() : 0);
      if (at != std::string::npos) {
        result.text.resize(at);
        stopped = true;
      }
    }
    const size_t hold = stopped ? 0 : StopHoldback(result.text, req.stop);
    if (result.text.size() - hold > emitted && on_text) {
      if (!on_text(std::string_view(result.text).substr(emitted, result.text.size() - hold -
                                                                     emitted))) {
        cancelled = true;
      }
    }
    emitted = std::max(emitted, result.text.size() - hold);
    if (stopped) {
      result.done_reason = "stop";
      break;
    }
    if (cancelled) {
      result.done_reason = "cancelled";
      break;
    }
    if (req.num_predict >= 0 && result.eval_count >= req.num_predict) break;
    if (pos >= n_ctx) break;
    const int32_t next[1] = {tok};
    FERRY_ASSIGN_OR_RETURN(logits, Eval(next, pos));
    ++pos;
  }
  if (emitted < result.text.size() && on_text) {
    on_text(std::string_view(result.text).substr(emitted));
  }
  result.eval_ns = NowNs() - t0;
  return result;
}

StatusOr<double> Runner::Perplexity(const std::vector<int32_t>& tokens, int64_t* n_scored) {
  const int64_t n_ctx = options_.num_ctx;
  if (n_ctx < 4) return InvalidArgumentError("num_ctx {} is too small for perplexity", n_ctx);
  const int64_t n_chunks = static_cast<int64_t>(tokens.size()) / n_ctx;
  if (n_chunks == 0) {
    return InvalidArgumentError("the text has {} tokens; perplexity needs at least num_ctx = {}",
                                tokens.size(), n_ctx);
  }
  const bool add_bos = tokenizer_->vocab().add_bos() && tokenizer_->vocab().bos() >= 0;
  double nll = 0.0;
  int64_t count = 0;
  std::vector<float> unused;
  ForwardOptions fo;
  fo.pool = pool_.get();
  fo.scratch = scratch_.get();
  for (int64_t c = 0; c < n_chunks; ++c) {
    std::vector<int32_t> window(tokens.begin() + c * n_ctx, tokens.begin() + (c + 1) * n_ctx);
    if (add_bos) window[0] = tokenizer_->vocab().bos();
    FERRY_RETURN_IF_ERROR(kv_->Truncate(seq_, 0));
    for (int64_t off = 0; off < n_ctx; off += options_.num_batch) {
      const int64_t n = std::min(n_ctx - off, options_.num_batch);
      FERRY_RETURN_IF_ERROR(kv_->Reserve(seq_, off + n));
      // Score the second half as the logits arrive: the logits at position j predict j + 1.
      fo.each_logits = [&](int64_t i, std::span<const float> row) -> Status {
        const int64_t j = off + i;
        if (j < n_ctx / 2 || j >= n_ctx - 1) return Status::Ok();
        const int32_t target = tokens[static_cast<size_t>(c * n_ctx + j + 1)];
        const float max = *std::max_element(row.begin(), row.end());
        double sum = 0.0;
        for (float z : row) sum += std::exp(static_cast<double>(z - max));
        nll += std::log(sum) - static_cast<double>(row[static_cast<size_t>(target)] - max);
        ++count;
        return Status::Ok();
      };
      FERRY_RETURN_IF_ERROR(model_->Forward(std::span<const int32_t>(window).subspan(
                                                static_cast<size_t>(off), static_cast<size_t>(n)),
                                            off, *kv_, seq_, fo, &unused));
    }
  }
  *n_scored = count;
  return std::exp(nll / static_cast<double>(count));
}

}  // namespace ferry
