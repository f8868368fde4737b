// Batch: the tokens of one forward step, drawn from one or more live sequences (llama.cpp's
// llama_ubatch): each entry is a token at a position of a sequence, and whether its logits are
// wanted. One step reads each weight matrix once for all entries; each sequence's K/V goes to
// its own blocks of the paged cache and each entry attends only over its own sequence.
//
// Rules Model::Forward checks: entries of one sequence are consecutive in the batch and their
// positions consecutive and increasing (a prompt chunk, or one decode token); the first
// position of a sequence's run is that sequence's length in the cache before the step (the
// caller Reserve()s pos + count first). A sequence appears in at most one run.
//
// Thread-safety: a plain value.
#ifndef FERRY_MODEL_BATCH_H_
#define FERRY_MODEL_BATCH_H_

#include <cstdint>
#include <vector>

namespace ferry {

struct BatchEntry {
  int32_t token = 0;
  int32_t seq = 0;      // KvCache sequence id
  int64_t pos = 0;      // position in the sequence
  bool logits = false;  // compute this entry's logits
  bool hidden = false;  // hand this entry's final hidden state to ForwardOptions::each_hidden
};

struct Batch {
  std::vector<BatchEntry> entries;

  int64_t size() const { return static_cast<int64_t>(entries.size()); }
  void clear() { entries.clear(); }
  void Add(int32_t token, int32_t seq, int64_t pos, bool logits) {
    entries.push_back(BatchEntry{token, seq, pos, logits, false});
  }
  // Adds tokens[0..n) of `seq` at positions pos0.., each wanting its final hidden state
  // (embeddings), none its logits.
  template <typename Span>
  void AddHiddenRun(const Span& tokens, int32_t seq, int64_t pos0) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    for (int64_t i = 0; i < n; ++i) {
      entries.push_back(BatchEntry{tokens[static_cast<size_t>(i)], seq, pos0 + i, false, true});
    }
  }
  // Adds tokens[0..n) of `seq` at positions pos0.., wanting the last one's logits if asked.
  template <typename Span>
  void AddRun(const Span& tokens, int32_t seq, int64_t pos0, bool last_logits) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    for (int64_t i = 0; i < n; ++i) {
      Add(tokens[static_cast<size_t>(i)], seq, pos0 + i, last_logits && i == n - 1);
    }
  }
  int64_t num_logits() const {
    int64_t n = 0;
    for (const BatchEntry& e : entries) n += e.logits ? 1 : 0;
    return n;
  }
};

}  // namespace ferry

#endif  // FERRY_MODEL_BATCH_H_
