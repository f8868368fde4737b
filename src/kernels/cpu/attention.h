// Causal multi-head attention of a batch of queries over K/V rows read in place from the KV
// cache (the attention step of Model::Forward), with a plain reference kernel beside the fast
// one. Nothing here grows with the context but the caller's `scores` rows.
//
// For query token t (position pos0 + t) and head h (KV head g = h / (n_head / n_head_kv)), the
// visible keys are positions first..p with p = pos0 + t, first = max(p_lo, p - window + 1) for
// a sliding window (window > 0) or p_lo otherwise:
//     s_j = scale * dot(q[t, h], k[j, g]),  P = softmax(s),  out[t, h] = sum_j P_j * v[j, g].
// AttentionRef sums the dot products and the weighted values in double and takes SoftmaxRef;
// the AVX2 kernel sums in float (8 lanes, then a fixed horizontal order) and takes the softmax
// in float with a polynomial exp (a few ulp), and differs from the reference by at most
//     |out - out_ref| <= 1e-5 * max_j |v[j, g, i]|  (roughly; attention_test checks 2e-5)
// Each (token, head) result depends only on its inputs, never on which thread computes it or
// how heads are grouped, so results are bitwise the same for any thread count.
//
// Thread-safety: pure function over caller-owned buffers; concurrent calls are safe with
// distinct pools and distinct `scores` buffers.
#ifndef FERRY_KERNELS_CPU_ATTENTION_H_
#define FERRY_KERNELS_CPU_ATTENTION_H_

#include <cstdint>

#include "base/thread_pool.h"
#include "kernels/cpu/matmul.h"

namespace ferry {

// Where the K and V rows of the visible keys are: read in place, never copied. Position p's
// row (all KV heads: n_head_kv * head_dim elements of `type`) is at
//   blocks[(p - first_pos) / block_tokens] + ((p - first_pos) % block_tokens) * row_bytes
// for p in [p_lo, p_lo + n_keys): a paged KV cache gives one pointer per block
// (KvCache::BlockRows; first_pos = its first block's first position), a contiguous array one
// block (block_tokens >= the positions it holds, first_pos = its first position).
// type: kF32, kF16 (converted while read, exactly), kQ8_0 or kQ4_0 (each element d * q, or
// (q - 8) * d, exactly as DequantizeRow computes it; a row is whole blocks of 32).
struct KvRows {
  DType type = DType::kF32;
  int64_t first_pos = 0;
  int64_t block_tokens = 0;
  const uint8_t* const* k_blocks = nullptr;
  const uint8_t* const* v_blocks = nullptr;
  uint64_t k_row_bytes = 0, v_row_bytes = 0;
};

struct AttentionArgs {
  const float* q = nullptr;  // [n_tok, n_head * head_dim_k]
  KvRows kv;                 // keys/values of positions [p_lo, p_lo + n_keys)
  float* out = nullptr;      // [n_tok, n_head * head_dim_v]; must not overlap the inputs
  float* scores = nullptr;   // [n_head, n_keys] workspace (one row per head)
  int64_t n_tok = 0, n_keys = 0;
  int64_t n_head = 0, n_head_kv = 0;  // n_head a multiple of n_head_kv
  int64_t head_dim_k = 0, head_dim_v = 0;
  int64_t pos0 = 0;    // position of query 0; pos0 + n_tok - 1 < p_lo + n_keys
  int64_t p_lo = 0;    // position of key row 0; every query sees at least one key
  int64_t window = 0;  // sliding window (keys p - window + 1 .. p), 0 = none
  float scale = 1.0f;
};

// True if Attention can read KV rows of this type and head size in place (KvRows above).
bool AttentionSupportsKv(DType type, int64_t n_head_kv, int64_t head_dim_k, int64_t head_dim_v);

// The reference: double sums, one head and token at a time, on the calling thread.
void AttentionRef(const AttentionArgs& a);

// The fast kernel (AVX2 + FMA when the CPU has it and path is kBest, else AttentionRef). Heads
// are split over `pool` (null: the calling thread); heads sharing a KV head are computed
// together so each K/V row is loaded once for them.
void Attention(const AttentionArgs& a, ThreadPool* pool, KernelPath path = KernelPath::kBest);

}  // namespace ferry

#endif  // FERRY_KERNELS_CPU_ATTENTION_H_
