// The checked entry points of the CUDA kernels: arguments are validated here, then the
// launchers of kernels.cu run, and a CUDA error becomes a Status naming the op.
#include "kernels/cuda/cuda_ops.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <utility>

#include "kernels/cuda/launch.h"
#include "tensor/blocks.h"

namespace ferry::cuda {
namespace {

template <DType T>
constexpr bool Same(uint32_t id) {
  return static_cast<uint32_t>(T) == id;
}
static_assert(Same<DType::kF32>(internal::kF32) && Same<DType::kF16>(internal::kF16) &&
              Same<DType::kQ4_0>(internal::kQ4_0) && Same<DType::kQ4_1>(internal::kQ4_1) &&
              Same<DType::kQ5_0>(internal::kQ5_0) && Same<DType::kQ5_1>(internal::kQ5_1) &&
              Same<DType::kQ8_0>(internal::kQ8_0) && Same<DType::kQ2_K>(internal::kQ2_K) &&
              Same<DType::kQ3_K>(internal::kQ3_K) && Same<DType::kQ4_K>(internal::kQ4_K) &&
              Same<DType::kQ5_K>(internal::kQ5_K) && Same<DType::kQ6_K>(internal::kQ6_K) &&
              Same<DType::kQ8_K>(internal::kQ8_K) && Same<DType::kBF16>(internal::kBF16));

cudaStream_t S(Stream stream) { return static_cast<cudaStream_t>(stream); }

Status FromCuda(cudaError_t e, std::string_view op) {
  if (e == cudaSuccess) return Status::Ok();
  if (e == cudaErrorMemoryAllocation) {
    return ResourceExhaustedError("CUDA {}: {}", op, cudaGetErrorString(e));
  }
  return InternalError("CUDA {}: {} ({})", op, cudaGetErrorString(e), cudaGetErrorName(e));
}

Status CheckSizes(std::string_view op, std::initializer_list<int64_t> sizes) {
  for (int64_t s : sizes) {
    if (s < 0) return InvalidArgumentError("CUDA {}: negative size {}", op, s);
  }
  return Status::Ok();
}

}  // namespace

Status UseDevice(int index) {
  const cudaError_t e = cudaSetDevice(index);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return NotFoundError("cuda{}: {}", index, cudaGetErrorString(e));
  }
  return Status::Ok();
}

bool DeviceAvailable(std::string* why) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (why != nullptr) *why = cudaGetErrorString(e);
    return false;
  }
  if (count == 0) {
    if (why != nullptr) *why = "the CUDA runtime reports no device";
    return false;
  }
  return true;
}

StatusOr<DeviceBuffer> DeviceBuffer::Create(uint64_t bytes) {
  DeviceBuffer b;
  if (bytes == 0) return b;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return ResourceExhaustedError("cudaMalloc of {} bytes failed: {}", bytes,
                                  cudaGetErrorString(e));
  }
  b.data_ = p;
  b.size_ = bytes;
  return b;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

Status CopyToDevice(void* device_dst, const void* host_src, uint64_t bytes, Stream stream) {
  if (bytes == 0) return Status::Ok();
  cudaError_t e = cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, S(stream));
  if (e == cudaSuccess) e = cudaStreamSynchronize(S(stream));
  return FromCuda(e, "copy to device");
}

Status CopyToHost(void* host_dst, const void* device_src, uint64_t bytes, Stream stream) {
  if (bytes == 0) return Status::Ok();
  cudaError_t e = cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, S(stream));
  if (e == cudaSuccess) e = cudaStreamSynchronize(S(stream));
  return FromCuda(e, "copy to host");
}

Status CopyDeviceToDevice(void* device_dst, const void* device_src, uint64_t bytes, Stream stream) {
  if (bytes == 0) return Status::Ok();
  return FromCuda(
      cudaMemcpyAsync(device_dst, device_src, bytes, cudaMemcpyDeviceToDevice, S(stream)),
      "copy on the device");
}

Status Fill(void* device_dst, uint8_t value, uint64_t bytes, Stream stream) {
  if (bytes == 0) return Status::Ok();
  return FromCuda(cudaMemsetAsync(device_dst, value, bytes, S(stream)), "fill");
}

Status Synchronize(Stream stream) {
  return FromCuda(cudaStreamSynchronize(S(stream)), "synchronize");
}

bool MatMulSupports(DType type) { return internal::MatMulTypeKnown(static_cast<uint32_t>(type)); }

namespace {

Status CheckMatrix(std::string_view op, const WeightMatrix& w) {
  if (!cuda::MatMulSupports(w.type)) {
    return UnimplementedError("CUDA {}: no kernel for weights of type {}", op, DTypeLabel(w.type));
  }
  if (w.data == nullptr) return InvalidArgumentError("CUDA {}: the weight is absent", op);
  FERRY_RETURN_IF_ERROR(CheckSizes(op, {w.rows, w.cols}));
  FERRY_ASSIGN_OR_RETURN(const uint64_t row_bytes, RowBytes(w.type, static_cast<uint64_t>(w.cols)));
  if (row_bytes != w.row_bytes) {
    return InvalidArgumentError("CUDA {}: rows of {} {} elements take {} bytes, not {}", op, w.cols,
                                DTypeName(w.type), row_bytes, w.row_bytes);
  }
  if (w.cols % 32 != 0) {
    return UnimplementedError("CUDA {}: rows of {} elements: the kernels read whole groups of 32",
                              op, w.cols);
  }
  // F32 rows are read 16 bytes at a time (their row bytes are multiples of 128).
  if (w.type == DType::kF32 && reinterpret_cast<uintptr_t>(w.data) % 16 != 0) {
    return InvalidArgumentError("CUDA {}: f32 weights at {} are not 16-byte aligned", op, w.data);
  }
  return Status::Ok();
}

}  // namespace

Status MatMul(const WeightMatrix& w, const float* x, int64_t n_tok, float* y, float* x_work,
              Stream stream) {
  FERRY_RETURN_IF_ERROR(CheckMatrix("MatMul", w));
  FERRY_RETURN_IF_ERROR(CheckSizes("MatMul", {n_tok}));
  if (n_tok == 0 || w.rows == 0) return Status::Ok();
  // Activations are read 16 bytes at a time.
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || reinterpret_cast<uintptr_t>(x_work) % 16 != 0) {
    return InvalidArgumentError("CUDA MatMul: activations at {} / {} are not 16-byte aligned",
                                static_cast<const void*>(x), static_cast<const void*>(x_work));
  }
  if (n_tok > 65535 * 8) {
    return InvalidArgumentError("CUDA MatMul: {} tokens in one call, more than 524280", n_tok);
  }
  const DType a = ActivationType(w.type);
  const float* xr = x;
  if (a != DType::kF32) {
    if (x_work == nullptr)
      return InvalidArgumentError("CUDA MatMul: no x_work for {}", DTypeName(w.type));
    FERRY_RETURN_IF_ERROR(
        FromCuda(internal::LaunchRoundActivations(static_cast<uint32_t>(a), x, x_work,
                                                  n_tok * w.cols, S(stream)),
                 "MatMul (activation rounding)"));
    xr = x_work;
  }
  return FromCuda(internal::LaunchMatMul(static_cast<uint32_t>(w.type), w.data, w.row_bytes, w.rows,
                                         w.cols, xr, n_tok, y, S(stream)),
                  "MatMul");
}

Status GetRows(const WeightMatrix& w, std::span<const int32_t> ids, int32_t* ids_work, float* out,
               Stream stream) {
  FERRY_RETURN_IF_ERROR(CheckMatrix("GetRows", w));
  for (int32_t id : ids) {
    if (id < 0 || id >= w.rows) {
      return OutOfRangeError("CUDA GetRows: row {} outside a matrix of {} rows", id, w.rows);
    }
  }
  if (ids.empty()) return Status::Ok();
  FERRY_RETURN_IF_ERROR(CopyToDevice(ids_work, ids.data(), ids.size_bytes(), stream));
  return FromCuda(
      internal::LaunchGetRows(static_cast<uint32_t>(w.type), w.data, w.row_bytes, w.cols, ids_work,
                              static_cast<int64_t>(ids.size()), out, S(stream)),
      "GetRows");
}

Status RmsNorm(const float* x, const float* w, float* y, int64_t n_rows, int64_t n, float eps,
               Stream stream) {
  FERRY_RETURN_IF_ERROR(CheckSizes("RmsNorm", {n_rows, n}));
  if (n_rows == 0 || n == 0) return Status::Ok();
  if (n_rows > 0x7fffffff) return InvalidArgumentError("CUDA RmsNorm: {} rows", n_rows);
  return FromCuda(internal::LaunchRmsNorm(x, w, y, n_rows, n, eps, S(stream)), "RmsNorm");
}

Status RopeApply(float* x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const float* cs,
                 int64_t cs_stride, int64_t n_rot, bool neox, Stream stream) {
  FERRY_RETURN_IF_ERROR(CheckSizes("RopeApply", {n_tok, n_heads, head_dim, n_rot}));
  if (n_rot % 2 != 0 || n_rot > head_dim || cs_stride < n_rot) {
    return InvalidArgumentError(
        "CUDA RopeApply: n_rot {} must be even, at most head_dim {} and the angle stride {}", n_rot,
        head_dim, cs_stride);
  }
  if (n_tok == 0 || n_heads == 0 || n_rot == 0) return Status::Ok();
  return FromCuda(
      internal::LaunchRope(x, n_tok, n_heads, head_dim, cs, cs_stride, n_rot, neox, S(stream)),
      "RopeApply");
}

Status SiluMul(float* gate, const float* up, int64_t n, Stream stream) {
  FERRY_RETURN_IF_ERROR(CheckSizes("SiluMul", {n}));
  if (n == 0) return Status::Ok();
  return FromCuda(internal::LaunchGatedActivation(false, gate, up, n, S(stream)), "SiluMul");
}

Status GeluTanhF16Mul(float* gate, const float* up, int64_t n, Stream stream) {
  FERRY_RETURN_IF_ERROR(CheckSizes("GeluTanhF16Mul", {n}));
  if (n == 0) return Status::Ok();
  return FromCuda(internal::LaunchGatedActivation(true, gate, up, n, S(stream)), "GeluTanhF16Mul");
}

Status Add(float* x, const float* y, int64_t n, Stream stream) {
  FERRY_RETURN_IF_ERROR(CheckSizes("Add", {n}));
  if (n == 0) return Status::Ok();
  return FromCuda(internal::LaunchAdd(x, y, n, S(stream)), "Add");
}

Status AddRows(float* y, const float* b, int64_t n_rows, int64_t n, Stream stream) {
  FERRY_RETURN_IF_ERROR(CheckSizes("AddRows", {n_rows, n}));
  if (n_rows == 0 || n == 0) return Status::Ok();
  return FromCuda(internal::LaunchAddRows(y, b, n_rows, n, S(stream)), "AddRows");
}

Status StoreKvRows(DType type, const float* src, int64_t n_rows, int64_t n,
                   uint8_t* const* dst_rows, Stream stream) {
  FERRY_RETURN_IF_ERROR(CheckSizes("StoreKvRows", {n_rows, n}));
  if (!internal::KvTypeKnown(static_cast<uint32_t>(type))) {
    return UnimplementedError("CUDA StoreKvRows: no kernel for KV type {}", DTypeLabel(type));
  }
  if ((type == DType::kQ8_0 || type == DType::kQ4_0) && n % 32 != 0) {
    return InvalidArgumentError("CUDA StoreKvRows: {} rows of {} are not whole blocks of 32",
                                DTypeName(type), n);
  }
  if (n_rows == 0 || n == 0) return Status::Ok();
  return FromCuda(
      internal::LaunchStoreRows(static_cast<uint32_t>(type), src, n_rows, n, dst_rows, S(stream)),
      "StoreKvRows");
}

Status Attention(const AttentionArgs& a, Stream stream) {
  FERRY_RETURN_IF_ERROR(
      CheckSizes("Attention", {a.n_tok, a.n_keys, a.n_head, a.n_head_kv, a.head_dim_k, a.head_dim_v,
                               a.pos0, a.p_lo, a.window}));
  if (!internal::KvTypeKnown(static_cast<uint32_t>(a.kv.type))) {
    return UnimplementedError("CUDA Attention: no kernel for KV type {}", DTypeLabel(a.kv.type));
  }
  if (a.n_head_kv == 0 || a.n_head % a.n_head_kv != 0) {
    return InvalidArgumentError("CUDA Attention: {} heads are not a multiple of {} KV heads",
                                a.n_head, a.n_head_kv);
  }
  if (a.head_dim_k > internal::kMaxAttentionHeadDim ||
      a.head_dim_v > internal::kMaxAttentionHeadDim) {
    return UnimplementedError("CUDA Attention: head sizes {}/{} above {}", a.head_dim_k,
                              a.head_dim_v, internal::kMaxAttentionHeadDim);
  }
  if (a.n_tok == 0 || a.n_head == 0) return Status::Ok();
  if (a.pos0 < a.p_lo || a.pos0 + a.n_tok > a.p_lo + a.n_keys || a.kv.block_tokens <= 0 ||
      a.kv.first_pos > a.p_lo) {
    return InvalidArgumentError(
        "CUDA Attention: queries at {}..{} do not lie in the keys {}..{} (blocks of {} from {})",
        a.pos0, a.pos0 + a.n_tok - 1, a.p_lo, a.p_lo + a.n_keys - 1, a.kv.block_tokens,
        a.kv.first_pos);
  }
  if (a.n_head > 0x7fffffff || a.n_tok > 65535) {
    return InvalidArgumentError("CUDA Attention: {} heads x {} tokens in one call", a.n_head,
                                a.n_tok);
  }
  internal::AttentionLaunch l{};
  l.kv_type = static_cast<uint32_t>(a.kv.type);
  l.first_pos = a.kv.first_pos;
  l.block_tokens = a.kv.block_tokens;
  l.k_blocks = a.kv.k_blocks;
  l.v_blocks = a.kv.v_blocks;
  l.k_row_bytes = a.kv.k_row_bytes;
  l.v_row_bytes = a.kv.v_row_bytes;
  l.q = a.q;
  l.out = a.out;
  l.n_tok = a.n_tok;
  l.n_keys = a.n_keys;
  l.n_head = a.n_head;
  l.n_head_kv = a.n_head_kv;
  l.head_dim_k = a.head_dim_k;
  l.head_dim_v = a.head_dim_v;
  l.pos0 = a.pos0;
  l.p_lo = a.p_lo;
  l.window = a.window;
  l.scale = a.scale;
  return FromCuda(internal::LaunchAttention(l, S(stream)), "Attention");
}

}  // namespace ferry::cuda
