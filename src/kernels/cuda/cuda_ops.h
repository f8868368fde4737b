// CUDA kernels of the decoder forward pass (built with -DFERRY_CUDA=ON; library
// ferry_kernels_cuda), each the device twin of a CPU reference kernel, and the device memory
// they work on. Plain C++: no CUDA header is needed to call them.
//
// What each op computes is its reference's definition (kernels/ref/ops.h, kernels/ref/
// quantize.h, kernels/cpu/attention.h); the bound each op keeps to its reference is stated with
// it and checked by cuda_ops_test (tests skip when no device answers).
//
// Memory: every float* / void* argument is device memory unless its comment says "host"; the
// shapes are in elements, row-major, first index slowest. Ops are launched on `stream` (null:
// the legacy default stream) and return once launched: a launch error is returned at once, an
// error while running surfaces at the next Synchronize or copy. Nothing here allocates except
// DeviceBuffer::Create.
//
// Thread-safety: the functions may be called from any thread; ops on one stream run in launch
// order, and the caller keeps buffers alive until the stream has run them.
#ifndef FERRY_KERNELS_CUDA_CUDA_OPS_H_
#define FERRY_KERNELS_CUDA_CUDA_OPS_H_

#include <cstdint>
#include <span>
#include <string>

#include "base/status.h"
#include "kernels/cpu/attention.h"
#include "kernels/ref/ops.h"
#include "tensor/dtype.h"

namespace ferry::cuda {

// A cudaStream_t, opaque here; null is the legacy default stream.
using Stream = void*;

// True when the CUDA runtime loads and reports at least one device. Never an error: no driver
// or no device is an answer, and `why` (optional) receives the runtime's reason.
bool DeviceAvailable(std::string* why = nullptr);

// Makes CUDA device `index` the calling thread's current device (cudaSetDevice): the ops
// after it, on this thread, run there. Errors: NotFound for no such device.
Status UseDevice(int index);

// Device memory from cudaMalloc (never managed memory), freed when destroyed. Move-only.
class DeviceBuffer {
 public:
  // ResourceExhausted naming the size when cudaMalloc fails; bytes 0 gives an empty buffer.
  static StatusOr<DeviceBuffer> Create(uint64_t bytes);

  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return data_; }
  uint64_t size() const { return size_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  uint64_t size_ = 0;
};

// Host <-> device copies of `bytes` (synchronous with respect to the host: they return when
// the copy is done, after the stream's earlier work).
Status CopyToDevice(void* device_dst, const void* host_src, uint64_t bytes,
                    Stream stream = nullptr);
Status CopyToHost(void* host_dst, const void* device_src, uint64_t bytes, Stream stream = nullptr);
// Device-to-device copy of `bytes`, queued on the stream (returns once queued).
Status CopyDeviceToDevice(void* device_dst, const void* device_src, uint64_t bytes,
                          Stream stream = nullptr);
// Sets `bytes` bytes of device memory to `value` (tests poison outputs with 0xff: NaN floats).
Status Fill(void* device_dst, uint8_t value, uint64_t bytes, Stream stream = nullptr);
// Waits for the stream's work; returns the first error it met.
Status Synchronize(Stream stream = nullptr);

// True when MatMul and GetRows read weights of this type: F32, F16, BF16, Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
bool MatMulSupports(DType type);

// y[t, r] = sum_i W[r, i] * x'[t, i] for t < n_tok, where x' is x rounded as
// RoundActivationsRef(w.type) rounds it (so the products are the ones MatMulRef takes).
//   w: a WeightMatrix whose `data` is device memory (`packed` is ignored);
//   x: [n_tok, w.cols], y: [n_tok, w.rows], x_work: [n_tok, w.cols] scratch for x'.
// Each weight block is read in place and dequantized in registers with the reference's
// formulas (bitwise its values); the dot products accumulate in float, so y differs from
// MatMulRef's double sums by float rounding over w.cols products
// (|y - ref| / |ref| over the whole output <= 1e-5, cuda_ops_test).
Status MatMul(const WeightMatrix& w, const float* x, int64_t n_tok, float* y, float* x_work,
              Stream stream = nullptr);

// out[i, :] = row ids[i] of w dequantized (GetRowRef, bitwise), for the n = ids.size() ids.
// ids: host; each must be a row of w (else OutOfRange naming it). ids_work: n int32 device
// scratch the ids are copied to. out: [n, w.cols].
Status GetRows(const WeightMatrix& w, std::span<const int32_t> ids, int32_t* ids_work, float* out,
               Stream stream = nullptr);

// y[r, :] = RmsNormRef(x[r, :], w) for r < n_rows; x, y: [n_rows, n] (may alias), w: [n] or
// null. The sum of squares is in double, as the reference's (results equal it but for the
// summation order of that double).
Status RmsNorm(const float* x, const float* w, float* y, int64_t n_rows, int64_t n, float eps,
               Stream stream = nullptr);

// RopeApply (kernels/ref/ops.h) of n_tok tokens in place: x [n_tok, n_heads * head_dim], token
// t rotated with the n_rot values at cs + t * cs_stride (RopeAngles of its position;
// cs_stride >= n_rot); bitwise the reference.
Status RopeApply(float* x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const float* cs,
                 int64_t cs_stride, int64_t n_rot, bool neox, Stream stream = nullptr);

// gate[i] = SiluRef(gate[i]) * up[i] or GeluTanhF16Ref(gate[i]) * up[i] for i < n (expf and
// tanhf on the device are within 2 ulp of the host's; GELU's result is then rounded to fp16).
Status SiluMul(float* gate, const float* up, int64_t n, Stream stream = nullptr);
Status GeluTanhF16Mul(float* gate, const float* up, int64_t n, Stream stream = nullptr);

// x[i] += y[i] for i < n; bitwise the host's float sum.
Status Add(float* x, const float* y, int64_t n, Stream stream = nullptr);

// y[r, i] += b[i] for r < n_rows, i < n (a bias on each of n_rows rows); bitwise.
Status AddRows(float* y, const float* b, int64_t n_rows, int64_t n, Stream stream = nullptr);

// Row j of src [n_rows, n] written to dst_rows[j] (a device array of n_rows device pointers)
// in `type` as KvCache::Store writes a row: f32, f16 (round to nearest even), q8_0
// (QuantizeRowQ8_0) or q4_0 (QuantizeRowQ4_0); bitwise the reference's bytes.
Status StoreKvRows(DType type, const float* src, int64_t n_rows, int64_t n,
                   uint8_t* const* dst_rows, Stream stream = nullptr);

// Attention as kernels/cpu/attention.h defines it (AttentionRef), every pointer in `args`
// device memory, args.kv.k_blocks / v_blocks too (device arrays of device block pointers);
// args.scores is not used: the kernel keeps an online softmax per key stream, so it needs no
// memory that grows with the context. KV types f32, f16, q8_0, q4_0; head sizes up to 256.
// Bound: |out - ref| / |ref| over the whole output <= 1e-5 (float sums, device expf).
Status Attention(const AttentionArgs& args, Stream stream = nullptr);

}  // namespace ferry::cuda

#endif  // FERRY_KERNELS_CUDA_CUDA_OPS_H_
