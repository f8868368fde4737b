// ReferenceSampler: a plain, obviously correct implementation of the sampler chain in sampler.h.
//
// It keeps the whole history of accepted tokens, recounts the penalty window with a std::map on
// every call, and fully sorts the vocabulary. It is slow on purpose and exists as the oracle for
// Sampler (the fast path): given the same options, seed, accepted tokens and logits, both return
// the same token. Semantics are documented in sampler.h.
//
// Not thread-safe; one per sequence, like Sampler.
#ifndef FERRY_SAMPLING_SAMPLER_REFERENCE_H_
#define FERRY_SAMPLING_SAMPLER_REFERENCE_H_

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "sampling/sampler.h"

namespace ferry {

class ReferenceSampler {
 public:
  // Precondition: ValidateSamplingOptions(options).ok(), vocab_size > 0, num_ctx > 0.
  ReferenceSampler(const SamplingOptions& options, int32_t vocab_size, int32_t num_ctx);

  // Same contracts as the Sampler methods of the same names.
  int32_t Sample(std::span<const float> logits);
  void Distribution(std::span<const float> logits, std::vector<TokenProb>* out);
  void Accept(int32_t token);
  void Reset();

  uint64_t seed() const { return seed_; }

 private:
  using Candidate = sampling_internal::Candidate;

  // The survivors of penalties .. temperature in ascending id order with softmax weights set.
  std::vector<Candidate> Chain(std::span<const float> logits) const;
  // The candidates after the penalty step, in id order.
  std::vector<Candidate> Penalized(std::span<const float> logits) const;

  SamplingOptions options_;
  int32_t vocab_size_;
  int32_t num_ctx_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  std::vector<int32_t> history_;  // every accepted token, oldest first
};

}  // namespace ferry

#endif  // FERRY_SAMPLING_SAMPLER_REFERENCE_H_
