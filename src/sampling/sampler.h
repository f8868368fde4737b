// Sampler: the sampler chain that turns one position's logits into the next token id.
//
// The chain follows llama.cpp's default order (the one Ollama's llama.cpp runner uses):
//
//   penalties -> top_k -> top_p -> min_p -> temperature -> dist
//
//   penalties    over the last `repeat_last_n` accepted tokens (prompt tokens included): a token
//                seen `count` > 0 times has its logit divided by repeat_penalty when positive and
//                multiplied by it when <= 0, then reduced by
//                count * frequency_penalty + presence_penalty.
//   top_k        keeps the k highest logits.
//   top_p        keeps the smallest set of highest-probability tokens whose probabilities (softmax
//                over the candidates left so far, before temperature) sum to >= top_p.
//   min_p        keeps tokens whose probability is >= min_p * (the highest probability), i.e.
//                logit >= max_logit + log(min_p).
//   temperature  divides the surviving logits by temperature.
//   dist         draws one token from the softmax of the survivors with the seeded generator.
//
// Because top_p and min_p run before temperature (as in llama.cpp), temperature only reshapes the
// distribution among the survivors; it never changes which tokens survive.
//
// With temperature <= 0 the chain is penalties -> argmax (greedy): no generator is consumed and
// top_k / top_p / min_p do not matter.
//
// Ranking and ties: candidates are ranked by logit, highest first, and equal logits by token id,
// lowest first. So greedy ties go to the lowest id, and top_k / top_p cut deterministically.
// NaN logits are treated as -infinity.
//
// Cost per Sample() for vocabulary size V and W distinct tokens in the penalty window:
//   greedy, or top_k = k < V: one pass over the logits with a heap of k + W entries, O(k log k)
//     after it; the vocabulary is not copied.
//   no top_k: the vocabulary is copied into the candidates buffer; top_p locates its cut with a
//     histogram of probability mass and sorts only the tokens above the cut (the nucleus).
// The candidates buffer is reused across calls.
//
// A plain full-sort implementation with the same semantics lives in sampler_reference.h; the tests
// compare the two.
#ifndef FERRY_SAMPLING_SAMPLER_H_
#define FERRY_SAMPLING_SAMPLER_H_

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include "base/status.h"

namespace ferry {

// Per-request sampling settings. Field names and defaults are Ollama's.
struct SamplingOptions {
  // Divides the logits of the surviving candidates before the draw: < 1 sharpens, > 1 flattens.
  // <= 0 selects greedy decoding (argmax after penalties). Must be finite. Default 0.8.
  float temperature = 0.8f;

  // Keeps only the top_k highest-logit tokens. <= 0 disables; a value >= the vocabulary size keeps
  // everything. Default 40.
  int32_t top_k = 40;

  // Nucleus sampling: keeps the smallest set of most probable tokens whose probabilities sum to
  // >= top_p (at least one token). Must be in [0, 1]; 1 disables, 0 keeps only the best token.
  // Default 0.9.
  float top_p = 0.9f;

  // Keeps tokens whose probability is at least min_p times that of the most probable token. Must
  // be in [0, 1]; 0 disables. Default 0.0.
  float min_p = 0.0f;

  // Multiplicative penalty for tokens seen in the penalty window: positive logits are divided by
  // it, negative logits multiplied. Must be finite and > 0; 1 disables, > 1 discourages repeats,
  // < 1 encourages them. Default 1.1.
  float repeat_penalty = 1.1f;

  // Subtracted once from the logit of every token seen in the penalty window. Must be finite;
  // negative values encourage repeats. Default 0.0 (disabled).
  float presence_penalty = 0.0f;

  // Subtracted from a token's logit once per occurrence in the penalty window. Must be finite;
  // negative values encourage repeats. Default 0.0 (disabled).
  float frequency_penalty = 0.0f;

  // Size of the penalty window: the last repeat_last_n accepted tokens. 0 disables all three
  // penalties, -1 means the whole context (num_ctx). Values above num_ctx act as num_ctx. Must be
  // >= -1. Default 64.
  int32_t repeat_last_n = 64;

  // Seed of the random generator (std::mt19937_64). The same seed with the same sequence of
  // logits and accepted tokens gives the same tokens. std::nullopt (default; Ollama's seed -1)
  // seeds from std::random_device; Sampler::seed() reports the value used.
  std::optional<uint64_t> seed;
};

// Returns InvalidArgument naming the first option that is NaN, infinite or out of range (see the
// field comments). top_k larger than the vocabulary and temperature <= 0 are valid.
Status ValidateSamplingOptions(const SamplingOptions& options);

// Internal building blocks shared by Sampler and ReferenceSampler so that both do the same
// arithmetic (same floats in, same token out). Not part of the module's interface.
namespace sampling_internal {

struct Candidate {
  int32_t id;
  float logit;
  float weight;  // unnormalized softmax weight, valid only where a step computed it
};

// The ranking order: higher logit first; equal logits: lower id first. A strict total order when
// ids are distinct and logits are not NaN.
inline bool RanksBefore(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}
inline bool IdBefore(const Candidate& a, const Candidate& b) { return a.id < b.id; }

// NaN -> -infinity; everything else unchanged.
float SanitizeLogit(float logit);

// A vector over caller-provided storage: [capacity] T at data, of which the first size() are
// in use. Growing past the capacity is a bug (checked by assert); it never allocates.
template <typename T>
class FixedVector {
 public:
  FixedVector() = default;
  FixedVector(T* data, size_t capacity) : data_(data), capacity_(capacity) {}

  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  bool empty() const { return size_ == 0; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T& front() { return data_[0]; }
  const T& front() const { return data_[0]; }
  T& back() { return data_[size_ - 1]; }
  void clear() { size_ = 0; }
  void push_back(const T& v) {
    assert(size_ < capacity_);
    data_[size_++] = v;
  }
  void pop_back() { --size_; }
  // New items (n > size()) are left as the storage holds them.
  void resize(size_t n) {
    assert(n <= capacity_);
    size_ = n;
  }
  void assign(size_t n, const T& v) {
    resize(n);
    std::fill(data_, data_ + n, v);
  }
  // Drops [first, end()).
  void erase(T* first, T* last) {
    assert(last == end());
    size_ = static_cast<size_t>(first - data_);
  }

 private:
  T* data_ = nullptr;
  size_t capacity_ = 0;
  size_t size_ = 0;
};
// The logit after repeat / frequency / presence penalties for a token seen `count` > 0 times.
float PenalizedLogit(float logit, int32_t count, const SamplingOptions& options);
// exp(logit - max_logit), and exactly 1 where logit == max_logit (so +-infinity stay defined).
float SoftmaxWeight(float logit, float max_logit);
// True when the penalty step can change a logit.
bool PenaltiesActive(const SamplingOptions& options);
// Number of accepted tokens the penalties look at (0: none).
int32_t PenaltyWindow(const SamplingOptions& options, int32_t num_ctx);
// options.seed, or a fresh value from std::random_device.
uint64_t ResolveSeed(const SamplingOptions& options);
// A double uniform in [0, 1) from the top 53 bits of one generator output (portable, unlike
// std::uniform_real_distribution).
double UniformUnit(std::mt19937_64& rng);
// Returns the id of the first candidate whose running weight sum exceeds `target` (0 <= target <
// sum of weights), scanning in the given order; never a zero-weight candidate.
int32_t DrawFromWeights(std::span<const Candidate> candidates, double target);

}  // namespace sampling_internal

// A token id with its probability in the final distribution of the chain.
struct TokenProb {
  int32_t id;
  float prob;
};

// The sampler chain for one sequence. Not thread-safe: owned and used by the inference thread
// that generates the sequence.
class Sampler {
 public:
  // Bytes of working memory a sampler for this vocabulary and context uses at most (penalties
  // over a window of num_ctx tokens, every token a candidate), whatever its options: the
  // workspace Create takes. Layout, each part starting at a multiple of 64 bytes:
  //   counts [vocab] i32, active_index [vocab] i32, active [min(vocab, num_ctx)] i32,
  //   window [num_ctx] i32, candidates [vocab] Candidate, bucket_mass [2049] f64.
  // 0 when vocab_size or num_ctx is not positive.
  static uint64_t WorkspaceBytes(int32_t vocab_size, int32_t num_ctx);

  // Validates `options`; vocab_size and num_ctx must be > 0. `workspace`: at least
  // WorkspaceBytes(vocab_size, num_ctx) bytes, 64-byte aligned, outliving the sampler and used
  // by no one else meanwhile (the runner's planned "sampling" buffer), so sampling allocates
  // nothing; empty: the sampler allocates its own. Errors: InvalidArgument for bad options or
  // a workspace that is too small or misaligned.
  static StatusOr<std::unique_ptr<Sampler>> Create(const SamplingOptions& options,
                                                   int32_t vocab_size, int32_t num_ctx,
                                                   std::span<uint8_t> workspace = {});

  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // logits: [vocab_size] floats for the next position; not modified. Returns the chosen token id
  // in [0, vocab_size). Does not record the token: call Accept() with the token actually used.
  // Precondition: logits.size() == vocab_size (a shorter span is sampled as it is).
  int32_t Sample(std::span<const float> logits);

  // The distribution Sample() draws from for `logits`: the surviving tokens in ascending id order
  // with their probabilities (summing to 1). Greedy: the argmax with probability 1. Does not
  // consume the generator or record anything. For tests and diagnostics.
  void Distribution(std::span<const float> logits, std::vector<TokenProb>* out);

  // Records a token for the penalties: prompt tokens and generated tokens alike, in order. Ids
  // outside [0, vocab_size) occupy a window slot but penalize nothing.
  void Accept(int32_t token);

  // Forgets all accepted tokens and re-seeds the generator with seed(), so the sampler behaves
  // as freshly created.
  void Reset();

  uint64_t seed() const { return seed_; }
  const SamplingOptions& options() const { return options_; }
  int32_t vocab_size() const { return vocab_size_; }

 private:
  using Candidate = sampling_internal::Candidate;

  Sampler(const SamplingOptions& options, int32_t vocab_size, int32_t num_ctx,
          std::span<uint8_t> workspace);

  // Leaves in candidates_, in rank order, the k best-ranked tokens after penalties (fewer when
  // the vocabulary is smaller). O(V) with a size k + (distinct penalized tokens) heap; never
  // copies the whole vocabulary.
  void SelectTopK(std::span<const float> logits, size_t k);
  // Fills candidates_ with the whole vocabulary after penalties, in id order.
  void FillAll(std::span<const float> logits);
  int32_t SampleGreedy(std::span<const float> logits);
  // Runs penalties .. temperature into candidates_, leaves them in id order with weights set,
  // and returns the sum of the weights.
  double BuildDistribution(std::span<const float> logits);
  // Ensures candidates_[0, m) are the m best-ranked candidates in rank order.
  void SortPrefix(size_t m);
  void ApplyTopP();
  void ApplyMinP();
  float MaxLogit() const;

  const SamplingOptions options_;
  const int32_t vocab_size_;
  const bool greedy_;
  const int32_t window_capacity_;  // 0 when penalties are off
  const uint64_t seed_;
  std::mt19937_64 rng_;

  template <typename T>
  using FixedVector = sampling_internal::FixedVector<T>;

  std::vector<uint8_t> own_workspace_;  // when Create was given none

  // Penalty window: ring buffer of the last window_capacity_ accepted tokens.
  FixedVector<int32_t> window_;
  size_t window_head_ = 0;  // index of the oldest token once the ring is full
  // [vocab_size] occurrences of each token in the window (set up when penalties are on).
  FixedVector<int32_t> counts_;
  // Ids with counts_ > 0, and [vocab_size] each id's index in active_ (-1: absent).
  FixedVector<int32_t> active_;
  FixedVector<int32_t> active_index_;

  // Scratch: up to [vocab_size] candidates, and top_p's histogram of probability mass by logit
  // distance from the maximum.
  FixedVector<Candidate> candidates_;
  FixedVector<double> bucket_mass_;
  // candidates_[0, sorted_) are the best candidates in rank order, and all rank before the rest.
  size_t sorted_ = 0;
  // True while candidates_ are still in ascending id order.
  bool by_id_ = true;
};

}  // namespace ferry

#endif  // FERRY_SAMPLING_SAMPLER_H_
