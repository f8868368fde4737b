// Feed-forward gating activations over whole buffers: gate[i] = act(gate[i]) * up[i].
//
// GeluTanhF16Mul gives bitwise GeluTanhF16Ref(gate[i]) * up[i] (kernels/ref/ops.h): the
// activation goes through fp16 as ggml's table does, so it is read from a table of all 65536
// fp16 inputs (256 KiB of static storage, filled once on first use).
// SiluMul gives SiluRef(gate[i]) * up[i]: bitwise on the portable path; with AVX2 + FMA,
// x / (1 + e^-x) with a polynomial exp (exp_avx2.h), within a few ulp of it. Both split
// [0, n) over `pool` (null: the calling thread); each element depends only on its inputs (and
// the path), so any thread count and any position in the buffer give the same result.
//
// Thread-safety: pure functions over caller-owned buffers (the table's one-time fill is
// thread-safe); concurrent calls are safe with distinct pools.
#ifndef FERRY_KERNELS_CPU_ACTIVATION_H_
#define FERRY_KERNELS_CPU_ACTIVATION_H_

#include <cstdint>

#include "base/thread_pool.h"
#include "kernels/cpu/matmul.h"  // KernelPath

namespace ferry {

// gate, up: [n] f32; gate is overwritten with the product. They may not overlap.
// GeluTanhF16Mul rounds to fp16 and gathers 8 table entries at a time with F16C/AVX2 when the
// CPU has them (kPortable: one at a time); the results are the same bits either way.
void GeluTanhF16Mul(float* gate, const float* up, int64_t n, ThreadPool* pool,
                    KernelPath path = KernelPath::kBest);
void SiluMul(float* gate, const float* up, int64_t n, ThreadPool* pool,
             KernelPath path = KernelPath::kBest);

}  // namespace ferry

#endif  // FERRY_KERNELS_CPU_ACTIVATION_H_
