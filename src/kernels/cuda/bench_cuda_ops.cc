// bench_cuda_ops: the GPU's two ceilings and each weight type's mat-vec against them, for
// scripts/device-check. Not a test: it measures and prints, one line per figure.
//   copy:   a device-to-device copy of 2 GiB, bytes read + written per second (the bandwidth
//           ceiling that decode is held to);
//   matvec: MatMul of one token by a 4096 x 14336 matrix (Llama-3-8B's FFN shape) of each type,
//           the matrix's bytes per second and that as a fraction of the copy bandwidth;
//   matmul: the same matrix times 512 tokens (prompt processing), in TFLOP/s.
// Each figure is the best of 5 timed rounds after a warm-up round; a round is a few launches
// (copy 5, matvec 20, matmul 3) between two synchronisations, timed on the host clock.
//
// Usage: bench_cuda_ops [--quick]   (--quick: 1024 x 4096 matrices, for a smoke run)
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "tensor/fp16.h"

namespace ferry::cuda {
namespace {

double BestSeconds(const std::function<Status()>& launch, int per_round) {
  double best = 1e30;
  for (int round = 0; round < 6; ++round) {
    if (!Synchronize().ok()) return -1.0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < per_round; ++i) {
      if (!launch().ok()) return -1.0;
    }
    if (!Synchronize().ok()) return -1.0;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (round > 0 && s / per_round < best) best = s / per_round;  // round 0 warms up
  }
  return best;
}

int Main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::string why;
  if (!DeviceAvailable(&why)) {
    std::printf("bench_cuda_ops: no CUDA device: %s\n", why.c_str());
    return 1;
  }
  const uint64_t copy_bytes = quick ? (uint64_t{64} << 20) : (uint64_t{2} << 30);
  auto a = DeviceBuffer::Create(copy_bytes), b = DeviceBuffer::Create(copy_bytes);
  if (!a.ok() || !b.ok()) {
    std::printf("bench_cuda_ops: %s\n", (a.ok() ? b.status() : a.status()).ToString().c_str());
    return 1;
  }
  if (!Fill(a->data(), 0x3c, copy_bytes).ok()) return 1;
  const double copy_s =
      BestSeconds([&] { return CopyDeviceToDevice(b->data(), a->data(), copy_bytes); }, 5);
  const double bandwidth = 2.0 * static_cast<double>(copy_bytes) / copy_s;
  std::printf("copy  %.0f MiB: %.1f GB/s (read + write)\n", copy_bytes / 1048576.0,
              bandwidth / 1e9);

  const int64_t rows = quick ? 1024 : 4096, cols = quick ? 4096 : 14336;
  const int64_t n_prompt = 512;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n_prompt * cols));
  for (float& f : x) f = normal(rng);
  auto xd = DeviceBuffer::Create(x.size() * sizeof(float));
  auto work = DeviceBuffer::Create(x.size() * sizeof(float));
  auto y = DeviceBuffer::Create(static_cast<uint64_t>(n_prompt * rows) * sizeof(float));
  if (!xd.ok() || !work.ok() || !y.ok()) return 1;
  if (!CopyToDevice(xd->data(), x.data(), x.size() * sizeof(float)).ok()) return 1;
  for (DType type : {DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1,
                     DType::kQ5_0, DType::kQ5_1, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    const uint64_t row_bytes = *RowBytes(type, static_cast<uint64_t>(cols));
    std::vector<uint8_t> bytes(row_bytes * rows);
    for (uint8_t& v : bytes) v = static_cast<uint8_t>(rng());
    if (type == DType::kF16 || type == DType::kBF16) {
      for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
        const float f = normal(rng) * 0.02f;
        const uint16_t h = type == DType::kF16 ? FloatToFp16(f) : FloatToBf16(f);
        std::memcpy(&bytes[i], &h, 2);
      }
    }
    auto wd = DeviceBuffer::Create(bytes.size());
    if (!wd.ok() || !CopyToDevice(wd->data(), bytes.data(), bytes.size()).ok()) return 1;
    // Block scales are whatever the random bytes hold (NaN or Inf sometimes): the time does not
    // depend on the values, and nothing reads the results.
    WeightMatrix w;
    w.type = type;
    w.data = wd->data();
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = row_bytes;
    const double mv = BestSeconds(
        [&] { return cuda::MatMul(w, xd->as<float>(), 1, y->as<float>(), work->as<float>()); }, 20);
    const double mm = BestSeconds(
        [&] {
          return cuda::MatMul(w, xd->as<float>(), n_prompt, y->as<float>(), work->as<float>());
        },
        3);
    const double gbs = static_cast<double>(bytes.size()) / mv;
    std::printf(
        "matvec %-5s %lldx%lld: %8.1f us  %7.1f GB/s  %5.1f%% of copy | matmul x%lld: "
        "%7.2f ms  %6.2f TFLOP/s\n",
        std::string(DTypeName(type)).c_str(), static_cast<long long>(rows),
        static_cast<long long>(cols), mv * 1e6, gbs / 1e9, 100.0 * gbs / bandwidth,
        static_cast<long long>(n_prompt), mm * 1e3, 2.0 * rows * cols * n_prompt / mm / 1e12);
  }
  return 0;
}

}  // namespace
}  // namespace ferry::cuda

int main(int argc, char** argv) { return ferry::cuda::Main(argc, argv); }
