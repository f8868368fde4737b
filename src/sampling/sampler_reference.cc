#include "sampling/sampler_reference.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace ferry {

using sampling_internal::Candidate;
using sampling_internal::IdBefore;
using sampling_internal::RanksBefore;

ReferenceSampler::ReferenceSampler(const SamplingOptions& options, int32_t vocab_size,
                                   int32_t num_ctx)
    : options_(options),
      vocab_size_(vocab_size),
      num_ctx_(num_ctx),
      seed_(sampling_internal::ResolveSeed(options)),
      rng_(seed_) {}

void ReferenceSampler::Accept(int32_t token) { history_.push_back(token); }

void ReferenceSampler::Reset() {
  history_.clear();
  rng_.seed(seed_);
}

std::vector<Candidate> ReferenceSampler::Penalized(std::span<const float> logits) const {
  const size_t n = std::min(logits.size(), static_cast<size_t>(vocab_size_));
  std::vector<Candidate> candidates;
  for (size_t i = 0; i < n; ++i) {
    candidates.push_back(
        Candidate{static_cast<int32_t>(i), sampling_internal::SanitizeLogit(logits[i]), 0.0f});
  }
  const size_t window = static_cast<size_t>(sampling_internal::PenaltyWindow(options_, num_ctx_));
  const size_t first = history_.size() > window ? history_.size() - window : 0;
  std::map<int32_t, int32_t> counts;
  for (size_t i = first; i < history_.size(); ++i) ++counts[history_[i]];
  for (const auto& [token, count] : counts) {
    if (token >= 0 && static_cast<size_t>(token) < n) {
      candidates[token].logit =
          sampling_internal::PenalizedLogit(candidates[token].logit, count, options_);
    }
  }
  return candidates;
}

std::vector<Candidate> ReferenceSampler::Chain(std::span<const float> logits) const {
  std::vector<Candidate> c = Penalized(logits);
  if (c.empty()) return c;
  std::sort(c.begin(), c.end(), RanksBefore);

  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < c.size()) {
    c.resize(static_cast<size_t>(options_.top_k));
  }
  if (options_.top_p < 1.0f) {
    double total = 0.0;
    for (Candidate& x : c) {
      x.weight = sampling_internal::SoftmaxWeight(x.logit, c.front().logit);
      total += x.weight;
    }
    double cumulative = 0.0;
    size_t keep = c.size();
    for (size_t i = 0; i < c.size(); ++i) {
      cumulative += c[i].weight;
      if (cumulative / total >= static_cast<double>(options_.top_p)) {
        keep = i + 1;
        break;
      }
    }
    c.resize(keep);
  }
  if (options_.min_p > 0.0f) {
    const float threshold = c.front().logit + std::log(options_.min_p);
    while (c.back().logit < threshold) c.pop_back();
  }
  if (options_.temperature != 1.0f) {
    for (Candidate& x : c) x.logit /= options_.temperature;
  }

  std::sort(c.begin(), c.end(), IdBefore);
  float max_logit = c.front().logit;
  for (const Candidate& x : c) max_logit = std::max(max_logit, x.logit);
  for (Candidate& x : c) x.weight = sampling_internal::SoftmaxWeight(x.logit, max_logit);
  return c;
}

int32_t ReferenceSampler::Sample(std::span<const float> logits) {
  if (options_.temperature <= 0.0f) {
    std::vector<Candidate> c = Penalized(logits);
    if (c.empty()) return 0;
    std::sort(c.begin(), c.end(), RanksBefore);
    return c.front().id;
  }
  std::vector<Candidate> c = Chain(logits);
  if (c.empty()) return 0;
  double total = 0.0;
  for (const Candidate& x : c) total += x.weight;
  const double target = sampling_internal::UniformUnit(rng_) * total;
  return sampling_internal::DrawFromWeights(c, target);
}

void ReferenceSampler::Distribution(std::span<const float> logits, std::vector<TokenProb>* out) {
  out->clear();
  if (options_.temperature <= 0.0f) {
    std::vector<Candidate> c = Penalized(logits);
    std::sort(c.begin(), c.end(), RanksBefore);
    out->push_back(TokenProb{c.empty() ? 0 : c.front().id, 1.0f});
    return;
  }
  std::vector<Candidate> c = Chain(logits);
  double total = 0.0;
  for (const Candidate& x : c) total += x.weight;
  for (const Candidate& x : c)
    out->push_back(TokenProb{x.id, static_cast<float>(x.weight / total)});
}

}  // namespace ferry
