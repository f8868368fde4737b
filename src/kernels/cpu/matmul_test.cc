#include "kernels/cpu/matmul.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/ref/dequantize.h"
#include "kernels/ref/ops.h"
#include "tensor/fp16.h"
#include "kernels/ref/ops.h"
#include "kernels/ref/quantize.h"
#include "tensor/blocks.h"
#include "tensor/fp16.h"

namespace ferry {
namespace {

const DType kAllTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ4_0, DType::kQ4_1,
                           DType::kQ5_0, DType::kQ5_1, DType::kQ8_0, DType::kQ2_K, DType::kQ3_K,
                           DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

std::vector<KernelPath> Paths() {
  std::vector<KernelPath> p = {KernelPath::kPortable};
  if (CpuHasAvx2Kernels()) p.push_back(KernelPath::kAvx2);
  if (CpuHasAvx512Kernels()) p.push_back(KernelPath::kBest);
  return p;
}
const char* PathName(KernelPath p) {
  switch (p) {
    case KernelPath::kPortable: return "portable";
    case KernelPath::kAvx2: return "avx2";
    case KernelPath::kBest: return "avx512-vnni";
  }
  return "?";
}

// Random activations: mostly normal, a few outliers, some exact zeros.
std::vector<float> RandomActivations(std::mt19937& rng, int64_t n) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) {
    const int p = pick(rng);
    v = normal(rng);
    if (p < 2) v *= 30.0f;
    if (p == 99) v = 0.0f;
  }
  return x;
}

// Offsets of the fp16 scale fields of each block type: {d, second field or -1 (m or dmin)}.
std::pair<int, int> ScaleOffsets(DType t) {
  switch (t) {
    case DType::kQ4_0: case DType::kQ5_0: case DType::kQ8_0: return {0, -1};
    case DType::kQ4_1: case DType::kQ5_1: return {0, 2};
    case DType::kQ2_K: return {80, 82};
    case DType::kQ3_K: return {108, -1};
    case DType::kQ4_K: case DType::kQ5_K: return {0, 2};
    case DType::kQ6_K: return {208, -1};
    default: return {-1, -1};
  }
}

// A weight matrix of random content: either quantized from random floats with the reference
// quantizer (realistic), or random bytes with sane fp16 scales (every code, every packed scale).
struct TestMatrix {
  std::vector<uint8_t> bytes;
  WeightMatrix w;
};
TestMatrix MakeMatrix(DType type, int64_t rows, int64_t cols, bool random_bytes, std::mt19937& rng) {
  TestMatrix m;
  const uint64_t row_bytes = RowBytes(type, static_cast<uint64_t>(cols)).value();
  m.bytes.resize(row_bytes * static_cast<uint64_t>(rows));  // exact: sanitizers see overreads
  uint8_t* base = m.bytes.data();
  if (random_bytes && Traits(type).block_size > 1) {
    std::uniform_int_distribution<int> byte(0, 255);
    for (auto& b : m.bytes) b = static_cast<uint8_t>(byte(rng));
    std::uniform_real_distribution<float> scale(0.002f, 0.02f);
    std::uniform_int_distribution<int> sign(0, 1);
    const auto [off_d, off_m] = ScaleOffsets(type);
    const uint32_t bs = Traits(type).type_size;
    const bool signed_m = type == DType::kQ4_1 || type == DType::kQ5_1;
    for (uint64_t b = 0; b < row_bytes * rows / bs; ++b) {
      uint8_t* blk = base + b * bs;
      const uint16_t d = FloatToFp16(scale(rng));
      std::memcpy(blk + off_d, &d, 2);
      if (off_m >= 0) {
        float v = scale(rng);
        if (signed_m && sign(rng)) v = -v * 10.0f;
        const uint16_t mm = FloatToFp16(v);
        std::memcpy(blk + off_m, &mm, 2);
      }
    }
  } else {
    std::normal_distribution<float> normal(0.0f, 0.05f);
    std::vector<float> src(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (float& v : src) v = normal(rng);
      if (r % 7 == 3) src[static_cast<size_t>(r % cols)] = 1.5f;  // an outlier
      EXPECT_TRUE(QuantizeRow(type, src.data(), base + r * row_bytes, cols).ok());
    }
  }
  m.w = {type, base, cols, rows, row_bytes};
  return m;
}

// A 64-byte aligned byte buffer for MatMul's workspace overload.
class AlignedWorkspace {
 public:
  explicit AlignedWorkspace(uint64_t bytes) : storage_(bytes + 64) {
    const auto addr = reinterpret_cast<uintptr_t>(storage_.data());
    data_ = storage_.data() + (64 - addr % 64) % 64;
    size_ = bytes;
  }
  std::span<uint8_t> span() const { return {data_, size_}; }

 private:
  std::vector<uint8_t> storage_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// sum_i |w_i * x_i| for each (token, row), with x rounded as MatMulRef rounds it.
std::vector<double> AbsDots(const WeightMatrix& w, const std::vector<float>& x, int64_t n_tok) {
  std::vector<float> xr = x;
  EXPECT_TRUE(RoundActivationsRef(w.type, xr.data(), n_tok, w.cols).ok());
  std::vector<float> row(static_cast<size_t>(w.cols));
  std::vector<double> out(static_cast<size_t>(n_tok * w.rows));
  for (int64_t r = 0; r < w.rows; ++r) {
    EXPECT_TRUE(DequantizeRow(w.type, w.Row(r), row.data(), w.cols).ok());
    for (int64_t t = 0; t < n_tok; ++t) {
      double s = 0.0;
      for (int64_t i = 0; i < w.cols; ++i) s += std::fabs(static_cast<double>(row[i]) * xr[t * w.cols + i]);
      out[t * w.rows + r] = s;
    }
  }
  return out;
}

double CheckMatrix(const TestMatrix& m, const std::vector<float>& x, int64_t n_tok);

// Returns the worst |y - y_ref| / sum |w x| seen. Packable matrices are checked twice: as
// rows and packed (PackWeightRows; kBest then runs the packed kernels).
double CheckAgainstRef(DType type, int64_t rows, int64_t cols, int64_t n_tok, bool random_bytes,
                       uint32_t seed) {
  std::mt19937 rng(seed);
  TestMatrix m = MakeMatrix(type, rows, cols, random_bytes, rng);
  const std::vector<float> x = RandomActivations(rng, n_tok * cols);
  std::vector<uint8_t> packed;
  double worst = 0.0;
  for (bool pack : {false, true}) {
    if (pack) {
      if (!CanPackWeightRows(type, rows, cols)) break;
      packed.resize(m.bytes.size());
      EXPECT_TRUE(PackWeightRows(m.w, packed).ok());
      // kBest reads the packed copy; other paths and MatMulRef still read m.w.data.
      m.w.packed = packed.data();
    }
    SCOPED_TRACE(pack ? "packed" : "rows");
    worst = std::max(worst, CheckMatrix(m, x, n_tok));
  }
  return worst;
}

// CheckAgainstRef for one matrix (rows or packed): worst relative error; every path, thread
// count, workspace and token alone.
double CheckMatrix(const TestMatrix& m, const std::vector<float>& x, int64_t n_tok) {
  std::vector<float> want(static_cast<size_t>(m.w.rows * n_tok));
  EXPECT_TRUE(MatMulRef(m.w, x.data(), n_tok, want.data()).ok());
  double worst = 0.0;
  const DType type = m.w.type;
  const int64_t rows = m.w.rows, cols = m.w.cols;

  const std::vector<double> bound = AbsDots(m.w, x, n_tok);
  ThreadPool pool2(2), pool3(3);
  for (KernelPath path : Paths()) {
    SCOPED_TRACE(std::string(DTypeName(type)) + " " + PathName(path) + " rows " +
                 std::to_string(rows) + " cols " + std::to_string(cols) + " n_tok " +
                 std::to_string(n_tok));
    std::vector<float> y1(want.size(), NAN), y2(want.size(), NAN), y3(want.size(), NAN);
    EXPECT_TRUE(MatMul(m.w, x.data(), n_tok, y1.data(), nullptr, path).ok());
    int bad = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double err = std::fabs(static_cast<double>(y1[i]) - want[i]);
      const double tol = 1e-5 * bound[i];
      if (bound[i] > 0) worst = std::max(worst, err / bound[i]);
      if (!(err <= tol) && bad++ < 5) {
        ADD_FAILURE() << "y[" << i / rows << ", " << i % rows << "] = " << y1[i] << " want "
                      << want[i] << " (error " << err << " > " << tol << ")";
      }
    }
    EXPECT_EQ(bad, 0);
    // Threads change nothing, bit for bit.
    EXPECT_TRUE(MatMul(m.w, x.data(), n_tok, y2.data(), &pool2, path).ok());
    EXPECT_TRUE(MatMul(m.w, x.data(), n_tok, y3.data(), &pool3, path).ok());
    EXPECT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(y1.data(), y3.data(), y1.size() * sizeof(float)), 0);
    // A caller-provided workspace of exactly MatMulWorkspaceBytes changes nothing either.
    AlignedWorkspace ws(MatMulWorkspaceBytes(type, cols, n_tok));
    std::vector<float> y4(want.size(), NAN);
    EXPECT_TRUE(MatMul(m.w, x.data(), n_tok, y4.data(), &pool2, ws.span(), path).ok());
    EXPECT_EQ(std::memcmp(y1.data(), y4.data(), y1.size() * sizeof(float)), 0);
    // Each token alone gives its row of the batch, bit for bit (batched decoding relies on it).
    std::vector<float> alone(static_cast<size_t>(rows), NAN);
    for (int64_t t = 0; t < n_tok; ++t) {
      EXPECT_TRUE(MatMul(m.w, x.data() + t * cols, 1, alone.data(), nullptr, path).ok());
      EXPECT_EQ(std::memcmp(alone.data(), y1.data() + t * rows, alone.size() * sizeof(float)), 0)
          << "token " << t;
    }
  }
  return worst;
}

class MatMulTypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(MatMulTypeTest, MatchesReference) {
  const DType type = GetParam();
  const int64_t block = Traits(type).block_size;
  std::vector<int64_t> cols_list = {256, 512, 2048 + 256};
  if (block < 256) cols_list.push_back(640);  // gemma3-270m's n_embd
  if (block == 1) cols_list.push_back(100);   // not a multiple of the SIMD width
  const bool has_quantizer = CanQuantize(type);
  uint32_t seed = 1;
  double worst = 0.0;
  for (int64_t cols : cols_list) {
    for (int64_t n_tok : {1, 3, 17}) {
      for (int64_t rows : {1, 37, 48}) {
        if (rows == 48 && !CanPackWeightRows(type, rows, cols)) continue;
        if (has_quantizer) worst = std::max(worst, CheckAgainstRef(type, rows, cols, n_tok, false, seed++));
        if (block > 1) worst = std::max(worst, CheckAgainstRef(type, rows, cols, n_tok, true, seed++));
      }
    }
  }
  // The largest |y - y_ref| / sum |w x| (the bound is 1e-5), in the XML report.
  RecordProperty("worst_relative_error", fmt::format("{:.3g}", worst));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatMulTypeTest, ::testing::ValuesIn(kAllTypes),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

TEST(MatMulTest, SupportsTheListedTypes) {
  for (DType t : kAllTypes) EXPECT_TRUE(MatMulSupports(t)) << DTypeName(t);
  EXPECT_FALSE(MatMulSupports(DType::kIQ2_XXS));
  EXPECT_FALSE(MatMulSupports(DType::kQ8_K));
}

TEST(MatMulTest, ManyRowsAndTokensAcrossThreads) {
  // More rows than a thread's row tile, token counts that leave every tile remainder.
  for (int64_t n_tok : {2, 4, 5, 8, 33}) {
    CheckAgainstRef(DType::kQ8_0, 301, 640, n_tok, false, 100 + static_cast<uint32_t>(n_tok));
    CheckAgainstRef(DType::kQ4_K, 97, 2048, n_tok, false, 200 + static_cast<uint32_t>(n_tok));
  }
}

TEST(MatMulTest, PackedManyGroupsAndTokenTiles) {
  // Many 16-row groups over threads; token counts around the packed kernels' 8-token tile.
  for (int64_t n_tok : {1, 7, 8, 9, 16, 33}) {
    for (DType t : {DType::kQ8_0, DType::kQ5_0, DType::kQ4_1}) {
      CheckAgainstRef(t, 16 * 21, 640, n_tok, false, 300 + static_cast<uint32_t>(n_tok));
    }
    for (DType t : {DType::kQ4_K, DType::kQ6_K}) {
      CheckAgainstRef(t, 16 * 5, 768, n_tok, true, 400 + static_cast<uint32_t>(n_tok));
    }
  }
}

TEST(MatMulTest, PackWeightRowsErrors) {
  std::mt19937 rng(11);
  TestMatrix m = MakeMatrix(DType::kQ8_0, 32, 64, false, rng);
  std::vector<uint8_t> out(m.bytes.size());
  EXPECT_TRUE(PackWeightRows(m.w, out).ok());
  EXPECT_EQ(PackWeightRows(m.w, std::span<uint8_t>(out).first(out.size() - 1)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(CanPackWeightRows(DType::kQ8_0, 37, 64));  // not whole groups of 16
  EXPECT_FALSE(CanPackWeightRows(DType::kQ5_K, 32, 256));  // no packed layout
  EXPECT_FALSE(CanPackWeightRows(DType::kQ4_K, 32, 640));  // not whole super-blocks
  TestMatrix k = MakeMatrix(DType::kQ5_K, 32, 256, true, rng);
  std::vector<uint8_t> kout(k.bytes.size());
  EXPECT_EQ(PackWeightRows(k.w, kout).code(), StatusCode::kInvalidArgument);
  if (CpuHasAvx512Kernels()) {
    EXPECT_TRUE(MatMulUsesPackedWeights(DType::kQ8_0));
    EXPECT_TRUE(MatMulUsesPackedWeights(DType::kQ4_K));
    EXPECT_TRUE(MatMulUsesPackedWeights(DType::kQ6_K));
    EXPECT_FALSE(MatMulUsesPackedWeights(DType::kQ5_K));
    // The packed kernels read the packed copy, not data: with data all zero they still give
    // the product of the packed weights.
    TestMatrix q4k = MakeMatrix(DType::kQ4_K, 32, 512, false, rng);
    TestMatrix q6k = MakeMatrix(DType::kQ6_K, 32, 512, false, rng);
    for (TestMatrix* t : {&m, &q4k, &q6k}) {
      SCOPED_TRACE(DTypeName(t->w.type));
      std::vector<uint8_t> packed(t->bytes.size());
      ASSERT_TRUE(PackWeightRows(t->w, packed).ok());
      std::vector<float> x = RandomActivations(rng, 2 * t->w.cols), want(2 * 32), got(2 * 32);
      t->w.packed = packed.data();
      ASSERT_TRUE(MatMul(t->w, x.data(), 2, want.data(), nullptr).ok());
      std::vector<uint8_t> zeros(t->bytes.size(), 0);
      WeightMatrix z = t->w;
      z.data = zeros.data();
      ASSERT_TRUE(MatMul(z, x.data(), 2, got.data(), nullptr).ok());
      EXPECT_EQ(got, want);
      EXPECT_NE(want, std::vector<float>(2 * 32, 0.0f));
    }
  }
  if (CpuHasAvx2Kernels()) {  // the AVX2 set reads packed Q4_x / Q5_x copies too
    TestMatrix q5 = MakeMatrix(DType::kQ5_0, 32, 64, false, rng);
    std::vector<uint8_t> q5_out(q5.bytes.size());
    ASSERT_TRUE(PackWeightRows(q5.w, q5_out).ok());
    std::vector<float> x = RandomActivations(rng, 2 * 64), want(2 * 32), got(2 * 32);
    q5.w.packed = q5_out.data();
    ASSERT_TRUE(MatMul(q5.w, x.data(), 2, want.data(), nullptr, KernelPath::kAvx2).ok());
    std::vector<uint8_t> zeros(q5.bytes.size(), 0);
    WeightMatrix z = q5.w;
    z.data = zeros.data();
    ASSERT_TRUE(MatMul(z, x.data(), 2, got.data(), nullptr, KernelPath::kAvx2).ok());
    EXPECT_EQ(got, want);
    EXPECT_NE(want, std::vector<float>(2 * 32, 0.0f));
  }
}

TEST(MatMulTest, ZeroActivationsGiveZero) {
  std::mt19937 rng(5);
  for (DType t : {DType::kQ8_0, DType::kQ4_K, DType::kQ4_1, DType::kF16}) {
    TestMatrix m = MakeMatrix(t, 5, 512, false, rng);
    std::vector<float> x(512 * 2, 0.0f), y(10, 1.0f);
    for (KernelPath path : Paths()) {
      ASSERT_TRUE(MatMul(m.w, x.data(), 2, y.data(), nullptr, path).ok());
      for (float v : y) EXPECT_EQ(v, 0.0f) << DTypeName(t);
    }
  }
}

TEST(MatMulTest, Errors) {
  std::vector<float> x(64), y(4);
  WeightMatrix absent;
  absent.type = DType::kQ8_0;
  absent.cols = 32;
  EXPECT_FALSE(MatMul(absent, x.data(), 1, y.data(), nullptr).ok());

  std::vector<BlockQ8_0> blocks(2);
  WeightMatrix w{DType::kQ8_0, blocks.data(), 32, 2, 34};
  EXPECT_TRUE(MatMul(w, x.data(), 1, y.data(), nullptr).ok());
  EXPECT_TRUE(MatMul(w, x.data(), 0, y.data(), nullptr).ok());
  w.row_bytes = 36;
  EXPECT_EQ(MatMul(w, x.data(), 1, y.data(), nullptr).code(), StatusCode::kInvalidArgument);
  w.row_bytes = 34;
  w.cols = 48;  // not a multiple of 32
  EXPECT_FALSE(MatMul(w, x.data(), 1, y.data(), nullptr).ok());
  w.cols = 32;
  EXPECT_FALSE(MatMul(w, x.data(), -1, y.data(), nullptr).ok());

  // Workspaces: Q8_0 activations of 2 tokens x 32 values are 2 blocks (68 bytes, rounded to
  // 128) plus d and s (8 bytes each, rounded to 64) plus the 64 values contiguous (64) plus
  // their 16 four-sums (int32, 64) plus the 2 block sums (int32, 64): 448 bytes. F32 weights
  // need none.
  EXPECT_EQ(MatMulWorkspaceBytes(DType::kQ8_0, 32, 2), 448u);
  EXPECT_EQ(MatMulWorkspaceBytes(DType::kF32, 4096, 512), 0u);
  EXPECT_EQ(MatMulWorkspaceBytes(DType::kF16, 64, 3), 384u);
  EXPECT_EQ(MatMulWorkspaceBytes(DType::kQ4_K, 256, 1), 320u);  // one Q8_K block (292 bytes)
  AlignedWorkspace ws(449);
  EXPECT_TRUE(MatMul(w, x.data(), 2, y.data(), nullptr, ws.span().first(448)).ok());
  EXPECT_EQ(MatMul(w, x.data(), 2, y.data(), nullptr, ws.span().first(447)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(MatMul(w, x.data(), 1, y.data(), nullptr, ws.span().subspan(1)).code(),
            StatusCode::kInvalidArgument);  // misaligned
}

// ---- activation quantizers ----

std::vector<float> TrickyActivations(std::mt19937& rng, int64_t n) {
  std::vector<float> x = RandomActivations(rng, n);
  // Block 0: all zero. Block 1: ties (x / d exactly k + 0.5) with max 127. Block 2: equal
  // magnitudes of both signs (the first one decides the sign of the Q8_K scale). Block 3: tiny.
  std::fill(x.begin(), x.begin() + 32, 0.0f);
  for (int i = 0; i < 32; ++i) x[32 + i] = (i == 0) ? 127.0f : static_cast<float>(i % 17) - 8.5f;
  for (int i = 0; i < 32; ++i) x[64 + i] = (i % 3 == 0) ? -2.0f : (i % 3 == 1 ? 2.0f : 0.75f);
  for (int i = 0; i < 32; ++i) x[96 + i] = x[96 + i] * 1e-30f;
  return x;
}

TEST(QuantizeActivationsTest, Q8_0MatchesRoundActivationsRef) {
  std::mt19937 rng(7);
  for (int64_t n : {32, 256, 2048 + 256}) {
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<float> x = n >= 128 && rep == 0 ? TrickyActivations(rng, n) : RandomActivations(rng, n);
      if (rep % 4 == 1) {
        for (float& v : x) v = std::round(v * 10.0f) / 4.0f;  // many exact ties
      }
      // The values must be exactly those RoundActivationsRef gives (llama.cpp's x86 rounding).
      std::vector<float> want = x;
      ASSERT_TRUE(RoundActivationsRef(DType::kQ8_0, want.data(), 1, n).ok());
      std::vector<BlockQ8_0> got(static_cast<size_t>(n / 32));
      for (KernelPath path : Paths()) {
        std::memset(got.data(), 0x55, got.size() * sizeof(BlockQ8_0));
        QuantizeActivationsQ8_0(x.data(), n, got.data(), path);
        for (int64_t i = 0; i < n; ++i) {
          const BlockQ8_0& blk = got[static_cast<size_t>(i / 32)];
          const float v = Fp16ToFloat(blk.d) * static_cast<float>(blk.qs[i % 32]);
          ASSERT_EQ(v, want[static_cast<size_t>(i)])  // equal values (the reference keeps -0)
              << PathName(path) << " n " << n << " rep " << rep << " i " << i;
        }
      }
    }
  }
}

// Q8_K exactly as RoundActivationsRef describes it, written out plainly.
void QuantizeQ8_KPlain(const float* x, int64_t n, BlockQ8_K* out) {
  for (int64_t b = 0; b < n / 256; ++b) {
    const float* v = x + b * 256;
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < 256; ++i) {
      if (std::fabs(v[i]) > amax) {
        amax = std::fabs(v[i]);
        max = v[i];
      }
    }
    std::memset(&out[b], 0, sizeof(BlockQ8_K));
    if (amax == 0.0f) continue;
    const float iscale = -127.0f / max;
    out[b].d = 1.0f / iscale;
    for (int i = 0; i < 256; ++i) {
      out[b].qs[i] = static_cast<int8_t>(std::min(127.0f, std::nearbyint(iscale * v[i])));
      out[b].bsums[i / 16] = static_cast<int16_t>(out[b].bsums[i / 16] + out[b].qs[i]);
    }
  }
}

TEST(QuantizeActivationsTest, Q8_KMatchesDefinitionAndRoundActivationsRef) {
  std::mt19937 rng(9);
  for (int64_t n : {256, 512, 2048 + 256}) {
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<float> x = rep == 0 ? TrickyActivations(rng, n) : RandomActivations(rng, n);
      if (rep % 4 == 1) {
        for (float& v : x) v = std::round(v * 10.0f) / 4.0f;
      }
      if (rep == 2) std::fill(x.begin(), x.begin() + 256, 0.0f);  // an all-zero block
      std::vector<BlockQ8_K> want(static_cast<size_t>(n / 256)), got(want.size());
      QuantizeQ8_KPlain(x.data(), n, want.data());
      // The plain version agrees with what MatMulRef uses.
      std::vector<float> rounded = x;
      ASSERT_TRUE(RoundActivationsRef(DType::kQ4_K, rounded.data(), 1, n).ok());
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(rounded[i], want[i / 256].d * want[i / 256].qs[i % 256]) << i;
      }
      for (KernelPath path : Paths()) {
        std::memset(got.data(), 0x55, got.size() * sizeof(BlockQ8_K));
        QuantizeActivationsQ8_K(x.data(), n, got.data(), path);
        EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(BlockQ8_K)), 0)
            << PathName(path) << " n " << n << " rep " << rep;
      }
    }
  }
}

}  // namespace
}  // namespace ferry
