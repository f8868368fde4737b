#include "sampling/sampler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <utility>

namespace ferry {

Status ValidateSamplingOptions(const SamplingOptions& o) {
  // Written so that NaN fails the range checks. A negative temperature or top_k has no meaning
  // (llama.cpp reads them as greedy / off; Ollama's API refuses them): refused, so a typo is
  // not silently a different sampler.
  if (!(std::isfinite(o.temperature) && o.temperature >= 0.0f)) {
    return InvalidArgumentError("temperature must be a finite number >= 0 (0 means greedy), got {}",
                                o.temperature);
  }
  if (o.top_k < 0) {
    return InvalidArgumentError("top_k must be >= 0 (0 disables), got {}", o.top_k);
  }
  if (!(o.top_p >= 0.0f && o.top_p <= 1.0f)) {
    return InvalidArgumentError("top_p must be in [0, 1], got {}", o.top_p);
  }
  if (!(o.min_p >= 0.0f && o.min_p <= 1.0f)) {
    return InvalidArgumentError("min_p must be in [0, 1], got {}", o.min_p);
  }
  if (!std::isfinite(o.repeat_penalty) || !(o.repeat_penalty > 0.0f)) {
    return InvalidArgumentError("repeat_penalty must be a finite number > 0 (1 disables), got {}",
                                o.repeat_penalty);
  }
  if (!std::isfinite(o.presence_penalty)) {
    return InvalidArgumentError("presence_penalty must be a finite number, got {}",
                                o.presence_penalty);
  }
  if (!std::isfinite(o.frequency_penalty)) {
    return InvalidArgumentError("frequency_penalty must be a finite number, got {}",
                                o.frequency_penalty);
  }
  if (o.repeat_last_n < -1) {
    return InvalidArgumentError(
        "repeat_last_n must be >= -1 (0 disables, -1 means num_ctx), got {}", o.repeat_last_n);
  }
  return Status::Ok();
}

namespace sampling_internal {

float SanitizeLogit(float logit) {
  return std::isnan(logit) ? -std::numeric_limits<float>::infinity() : logit;
}

float PenalizedLogit(float logit, int32_t count, const SamplingOptions& o) {
  // Dividing a negative logit would raise it, so negative logits are multiplied instead.
  float l = logit <= 0.0f ? logit * o.repeat_penalty : logit / o.repeat_penalty;
  l -= static_cast<float>(count) * o.frequency_penalty +
       static_cast<float>(count > 0) * o.presence_penalty;
  return l;
}

float SoftmaxWeight(float logit, float max_logit) {
  return logit == max_logit ? 1.0f : std::exp(logit - max_logit);
}

bool PenaltiesActive(const SamplingOptions& o) {
  return o.repeat_last_n != 0 &&
         (o.repeat_penalty != 1.0f || o.frequency_penalty != 0.0f || o.presence_penalty != 0.0f);
}

int32_t PenaltyWindow(const SamplingOptions& o, int32_t num_ctx) {
  if (!PenaltiesActive(o)) return 0;
  if (o.repeat_last_n < 0) return num_ctx;
  return std::min(o.repeat_last_n, num_ctx);
}

uint64_t ResolveSeed(const SamplingOptions& o) {
  if (o.seed.has_value()) return *o.seed;
  // std::random_device may throw where no entropy source exists; exceptions stop here.
  try {
    std::random_device device;
    return (static_cast<uint64_t>(device()) << 32) ^ static_cast<uint64_t>(device());
  } catch (...) {
    return static_cast<uint64_t>(
        std::chrono::high_resolution_clock::now().time_since_epoch().count());
  }
}

double UniformUnit(std::mt19937_64& rng) {
  constexpr double kTwoToMinus53 = 1.0 / 9007199254740992.0;  // 2^-53
  return static_cast<double>(rng() >> 11) * kTwoToMinus53;
}

int32_t DrawFromWeights(std::span<const Candidate> candidates, double target) {
  double cumulative = 0.0;
  int32_t last_nonzero = candidates.empty() ? 0 : candidates.front().id;
  for (const Candidate& c : candidates) {
    if (c.weight <= 0.0f) continue;
    cumulative += c.weight;
    last_nonzero = c.id;
    if (cumulative > target) return c.id;
  }
  // Only reachable through rounding (target within an ulp of the total).
  return last_nonzero;
}

}  // namespace sampling_internal

using sampling_internal::Candidate;
using sampling_internal::IdBefore;
using sampling_internal::RanksBefore;

namespace {

constexpr int kBuckets = 2048;  // top_p's histogram: kBuckets + 1 bins

uint64_t RoundUp64(uint64_t n) { return (n + 63) / 64 * 64; }

// Offsets of the workspace's parts (see Sampler::WorkspaceBytes).
struct WorkspaceLayout {
  uint64_t counts, active_index, active, window, candidates, bucket_mass, end;
  uint64_t n_active;
};

WorkspaceLayout Layout(int32_t vocab_size, int32_t num_ctx) {
  const uint64_t v = static_cast<uint64_t>(vocab_size), c = static_cast<uint64_t>(num_ctx);
  WorkspaceLayout l{};
  l.n_active = std::min(v, c);
  uint64_t at = 0;
  auto take = [&](uint64_t bytes) {
    const uint64_t start = at;
    at += RoundUp64(bytes);
    return start;
  };
  l.counts = take(v * sizeof(int32_t));
  l.active_index = take(v * sizeof(int32_t));
  l.active = take(l.n_active * sizeof(int32_t));
  l.window = take(c * sizeof(int32_t));
  l.candidates = take(v * sizeof(Candidate));
  l.bucket_mass = take(static_cast<uint64_t>(kBuckets + 1) * sizeof(double));
  l.end = at;
  return l;
}

}  // namespace

uint64_t Sampler::WorkspaceBytes(int32_t vocab_size, int32_t num_ctx) {
  if (vocab_size <= 0 || num_ctx <= 0) return 0;
  return Layout(vocab_size, num_ctx).end;
}

StatusOr<std::unique_ptr<Sampler>> Sampler::Create(const SamplingOptions& options,
                                                   int32_t vocab_size, int32_t num_ctx,
                                                   std::span<uint8_t> workspace) {
  FERRY_RETURN_IF_ERROR(ValidateSamplingOptions(options));
  if (vocab_size <= 0) return InvalidArgumentError("vocab_size must be > 0, got {}", vocab_size);
  if (num_ctx <= 0) return InvalidArgumentError("num_ctx must be > 0, got {}", num_ctx);
  if (!workspace.empty()) {
    const uint64_t need = WorkspaceBytes(vocab_size, num_ctx);
    if (workspace.size() < need) {
      return InvalidArgumentError("sampler workspace of {} bytes; {} tokens and num_ctx {} need {}",
                                  workspace.size(), vocab_size, num_ctx, need);
    }
    if (reinterpret_cast<uintptr_t>(workspace.data()) % 64 != 0) {
      return InvalidArgumentError("sampler workspace is not 64-byte aligned");
    }
  }
  return std::unique_ptr<Sampler>(new Sampler(options, vocab_size, num_ctx, workspace));
}

Sampler::Sampler(const SamplingOptions& options, int32_t vocab_size, int32_t num_ctx,
                 std::span<uint8_t> workspace)
    : options_(options),
      vocab_size_(vocab_size),
      greedy_(options.temperature <= 0.0f),
      window_capacity_(sampling_internal::PenaltyWindow(options, num_ctx)),
      seed_(sampling_internal::ResolveSeed(options)),
      rng_(seed_) {
  const WorkspaceLayout l = Layout(vocab_size, num_ctx);
  if (workspace.empty()) {
    // 64-byte aligned storage of our own: over-allocate and align the start.
    own_workspace_.resize(static_cast<size_t>(l.end) + 64);
    const uintptr_t p = reinterpret_cast<uintptr_t>(own_workspace_.data());
    workspace = std::span<uint8_t>(own_workspace_).subspan((64 - p % 64) % 64);
  }
  uint8_t* const base = workspace.data();
  const size_t v = static_cast<size_t>(vocab_size);
  counts_ = FixedVector<int32_t>(reinterpret_cast<int32_t*>(base + l.counts), v);
  active_index_ = FixedVector<int32_t>(reinterpret_cast<int32_t*>(base + l.active_index), v);
  active_ = FixedVector<int32_t>(reinterpret_cast<int32_t*>(base + l.active),
                                 static_cast<size_t>(l.n_active));
  window_ = FixedVector<int32_t>(reinterpret_cast<int32_t*>(base + l.window),
                                 static_cast<size_t>(num_ctx));
  candidates_ = FixedVector<Candidate>(reinterpret_cast<Candidate*>(base + l.candidates), v);
  bucket_mass_ = FixedVector<double>(reinterpret_cast<double*>(base + l.bucket_mass),
                                     static_cast<size_t>(kBuckets + 1));
  if (window_capacity_ > 0) {
    counts_.assign(v, 0);
    active_index_.assign(v, -1);
  }
}

void Sampler::Accept(int32_t token) {
  if (window_capacity_ == 0) return;
  auto add = [this](int32_t t) {
    if (t < 0 || t >= vocab_size_) return;
    if (counts_[t]++ == 0) {
      active_index_[t] = static_cast<int32_t>(active_.size());
      active_.push_back(t);
    }
  };
  auto remove = [this](int32_t t) {
    if (t < 0 || t >= vocab_size_) return;
    if (--counts_[t] == 0) {
      const int32_t index = active_index_[t];
      const int32_t moved = active_.back();
      active_[index] = moved;
      active_index_[moved] = index;
      active_.pop_back();
      active_index_[t] = -1;
    }
  };
  if (window_.size() < static_cast<size_t>(window_capacity_)) {
    window_.push_back(token);
  } else {
    remove(window_[window_head_]);
    window_[window_head_] = token;
    window_head_ = (window_head_ + 1) % window_.size();
  }
  add(token);
}

void Sampler::Reset() {
  for (int32_t t : active_) {
    counts_[t] = 0;
    active_index_[t] = -1;
  }
  active_.clear();
  window_.clear();
  window_head_ = 0;
  rng_.seed(seed_);
}

void Sampler::SelectTopK(std::span<const float> logits, size_t k) {
  const size_t n = std::min(logits.size(), static_cast<size_t>(vocab_size_));
  const bool penalize = window_capacity_ > 0 && !active_.empty();
  // Penalized tokens are selected by their raw logits here and fixed up below; reserving one
  // extra slot per penalized token keeps the k best unpenalized tokens in the selection.
  const size_t count = std::min(n, k + (penalize ? active_.size() : 0));
  candidates_.clear();
  sorted_ = 0;
  by_id_ = false;
  if (count == 0) return;
  for (size_t i = 0; i < count; ++i) {
    candidates_.push_back(
        Candidate{static_cast<int32_t>(i), sampling_internal::SanitizeLogit(logits[i]), 0.0f});
  }
  // A heap whose front is the worst-ranked selected candidate. Later ids rank after earlier ones
  // at equal logits, so a token must beat the front's logit strictly (NaN never does).
  std::make_heap(candidates_.begin(), candidates_.end(), RanksBefore);
  float worst = candidates_.front().logit;
  for (size_t i = count; i < n; ++i) {
    const float l = logits[i];
    if (l > worst) {
      std::pop_heap(candidates_.begin(), candidates_.end(), RanksBefore);
      candidates_.back() = Candidate{static_cast<int32_t>(i), l, 0.0f};
      std::push_heap(candidates_.begin(), candidates_.end(), RanksBefore);
      worst = candidates_.front().logit;
    }
  }
  if (penalize) {
    auto end = std::remove_if(candidates_.begin(), candidates_.end(),
                              [this](const Candidate& c) { return counts_[c.id] > 0; });
    candidates_.erase(end, candidates_.end());
    for (int32_t t : active_) {
      if (static_cast<size_t>(t) >= n) continue;
      const float l = sampling_internal::SanitizeLogit(logits[t]);
      candidates_.push_back(
          Candidate{t, sampling_internal::PenalizedLogit(l, counts_[t], options_), 0.0f});
    }
  }
  SortPrefix(k);
  candidates_.resize(std::min(k, candidates_.size()));
}

void Sampler::FillAll(std::span<const float> logits) {
  const size_t n = std::min(logits.size(), static_cast<size_t>(vocab_size_));
  candidates_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    candidates_[i] =
        Candidate{static_cast<int32_t>(i), sampling_internal::SanitizeLogit(logits[i]), 0.0f};
  }
  sorted_ = 0;
  by_id_ = true;
  // Candidates are indexed by id here.
  if (window_capacity_ > 0) {
    for (int32_t t : active_) {
      if (static_cast<size_t>(t) < n) {
        candidates_[t].logit =
            sampling_internal::PenalizedLogit(candidates_[t].logit, counts_[t], options_);
      }
    }
  }
}

int32_t Sampler::SampleGreedy(std::span<const float> logits) {
  SelectTopK(logits, 1);
  return candidates_.empty() ? 0 : candidates_.front().id;
}

void Sampler::SortPrefix(size_t m) {
  const size_t n = candidates_.size();
  m = std::min(m, n);
  if (m <= sorted_) return;
  auto first = candidates_.begin() + static_cast<ptrdiff_t>(sorted_);
  auto mid = candidates_.begin() + static_cast<ptrdiff_t>(m);
  // Everything in [sorted_, n) ranks after [0, sorted_), so selecting within the tail suffices.
  if (m < n) std::nth_element(first, mid, candidates_.end(), RanksBefore);
  std::sort(first, mid, RanksBefore);
  sorted_ = m;
  by_id_ = false;
}

float Sampler::MaxLogit() const {
  if (sorted_ > 0) return candidates_.front().logit;
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const Candidate& c : candidates_) max_logit = std::max(max_logit, c.logit);
  return max_logit;
}

void Sampler::ApplyTopP() {
  const size_t n = candidates_.size();
  const float max_logit = MaxLogit();
  double total = 0.0;
  for (Candidate& c : candidates_) {
    c.weight = sampling_internal::SoftmaxWeight(c.logit, max_logit);
    total += c.weight;
  }
  const double p = options_.top_p;

  // On a large unsorted vocabulary, find the nucleus without sorting everything: histogram the
  // probability mass by distance below the maximum logit, find the bucket where the running mass
  // reaches p, and sort only the candidates in that bucket and above. Buckets are monotone in
  // the logit, so those candidates are exactly the best-ranked ones. The scan below checks the
  // cut exactly and falls back to growing the sorted prefix if rounding left it short.
  constexpr size_t kMinSizeForBuckets = 4096;
  constexpr float kBucketsPerLogit = 64.0f;  // the last bucket holds everything 32 below the max
  if (sorted_ == 0 && n >= kMinSizeForBuckets && std::isfinite(max_logit)) {
    auto bucket_of = [max_logit](float logit) {
      const float d = (max_logit - logit) * kBucketsPerLogit;
      return d < static_cast<float>(kBuckets) ? static_cast<int>(d) : kBuckets;
    };
    bucket_mass_.assign(kBuckets + 1, 0.0);
    for (const Candidate& c : candidates_) bucket_mass_[bucket_of(c.logit)] += c.weight;
    int cut = kBuckets;
    double mass = 0.0;
    for (int b = 0; b <= kBuckets; ++b) {
      mass += bucket_mass_[b];
      if (mass >= p * total) {
        cut = b;
        break;
      }
    }
    auto mid = std::partition(candidates_.begin(), candidates_.end(),
                              [&](const Candidate& c) { return bucket_of(c.logit) <= cut; });
    std::sort(candidates_.begin(), mid, RanksBefore);
    sorted_ = static_cast<size_t>(mid - candidates_.begin());
    by_id_ = false;
  }

  double cumulative = 0.0;
  size_t keep = n;
  for (size_t i = 0; i < n; ++i) {
    // Sort only as much of the vocabulary as the running sum needs, doubling each time.
    if (i == sorted_) SortPrefix(std::max<size_t>(2 * sorted_, 256));
    cumulative += candidates_[i].weight;
    if (cumulative / total >= p) {
      keep = i + 1;
      break;
    }
  }
  candidates_.resize(keep);
  sorted_ = std::min(sorted_, keep);
}

void Sampler::ApplyMinP() {
  const float threshold = MaxLogit() + std::log(options_.min_p);
  // remove_if keeps the survivors' relative order, so a sorted prefix stays a sorted prefix.
  auto end = std::remove_if(candidates_.begin(), candidates_.end(),
                            [threshold](const Candidate& c) { return c.logit < threshold; });
  candidates_.erase(end, candidates_.end());
  sorted_ = std::min(sorted_, candidates_.size());
}

double Sampler::BuildDistribution(std::span<const float> logits) {
  const size_t n = std::min(logits.size(), static_cast<size_t>(vocab_size_));
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < n) {
    SelectTopK(logits, static_cast<size_t>(options_.top_k));
  } else {
    FillAll(logits);
  }
  if (candidates_.empty()) return 0.0;
  if (options_.top_p < 1.0f) ApplyTopP();
  if (options_.min_p > 0.0f) ApplyMinP();
  if (options_.temperature != 1.0f) {
    for (Candidate& c : candidates_) c.logit /= options_.temperature;
  }

  // The draw scans in ascending id order whatever the steps above did to the order.
  if (!by_id_) {
    std::sort(candidates_.begin(), candidates_.end(), IdBefore);
    by_id_ = true;
    sorted_ = 0;
  }
  const float max_logit = MaxLogit();
  double total = 0.0;
  for (Candidate& c : candidates_) {
    c.weight = sampling_internal::SoftmaxWeight(c.logit, max_logit);
    total += c.weight;
  }
  return total;
}

int32_t Sampler::Sample(std::span<const float> logits) {
  if (greedy_) return SampleGreedy(logits);
  const double total = BuildDistribution(logits);
  if (candidates_.empty()) return 0;
  const double target = sampling_internal::UniformUnit(rng_) * total;
  return sampling_internal::DrawFromWeights(candidates_, target);
}

void Sampler::Distribution(std::span<const float> logits, std::vector<TokenProb>* out) {
  out->clear();
  if (greedy_) {
    out->push_back(TokenProb{SampleGreedy(logits), 1.0f});
    return;
  }
  const double total = BuildDistribution(logits);
  for (const Candidate& c : candidates_) {
    out->push_back(TokenProb{c.id, static_cast<float>(c.weight / total)});
  }
}

}  // namespace ferry
