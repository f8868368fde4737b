// Every CUDA op against its CPU reference kernel, in the manner of llama.cpp's
// test-backend-ops: fresh random inputs each run (the seed is printed, FERRY_TEST_SEED replays
// one), outputs poisoned with NaN before each run (an element the kernel failed to write fails
// the comparison), and a normalised error |out - ref| / |ref| over the whole output with a
// bound per op, stated and justified beside each check. Skipped when no CUDA device answers.
#include "kernels/cuda/cuda_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/ref/dequantize.h"
#include "kernels/ref/quantize.h"
#include "tensor/blocks.h"
#include "tensor/fp16.h"

namespace ferry::cuda {
namespace {

uint32_t Seed() {
  static const uint32_t seed = [] {
    const char* env = std::getenv("FERRY_TEST_SEED");
    const uint32_t s = env != nullptr ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10))
                                      : std::random_device{}();
    std::printf("cuda_ops_test: FERRY_TEST_SEED=%u\n", s);
    return s;
  }();
  return seed;
}

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!DeviceAvailable(&why)) GTEST_SKIP() << "no CUDA device: " << why;
    rng_.seed(Seed() + static_cast<uint32_t>(std::hash<std::string>{}(
                           ::testing::UnitTest::GetInstance()->current_test_info()->name())));
  }

  std::vector<float> Normal(int64_t n, float sigma = 1.0f) {
    std::normal_distribution<float> d(0.0f, sigma);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& f : v) f = d(rng_);
    return v;
  }

  // A device buffer holding `host`.
  template <typename T>
  DeviceBuffer Upload(const std::vector<T>& host) {
    auto b = DeviceBuffer::Create(host.size() * sizeof(T));
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    EXPECT_TRUE(CopyToDevice(b->data(), host.data(), host.size() * sizeof(T)).ok());
    return std::move(*b);
  }

  // A device buffer of n floats, poisoned with NaN (0xff bytes).
  DeviceBuffer Poisoned(int64_t n) {
    auto b = DeviceBuffer::Create(static_cast<uint64_t>(n) * sizeof(float));
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    EXPECT_TRUE(Fill(b->data(), 0xff, b->size()).ok());
    return std::move(*b);
  }

  std::vector<float> Download(const DeviceBuffer& b, int64_t n) {
    EXPECT_TRUE(Synchronize().ok());
    std::vector<float> host(static_cast<size_t>(n));
    EXPECT_TRUE(CopyToHost(host.data(), b.data(), host.size() * sizeof(float)).ok());
    return host;
  }

  // Random weight rows of `type`: floats rounded to it for f32/f16/bf16; for block types,
  // random bytes (every quant and scale bit pattern is valid) with the fp16 block scales set
  // to finite values of either sign.
  std::vector<uint8_t> RandomRows(DType type, int64_t rows, int64_t cols, uint64_t* row_bytes) {
    *row_bytes = *RowBytes(type, static_cast<uint64_t>(cols));
    std::vector<uint8_t> out(static_cast<size_t>(*row_bytes * rows));
    if (type == DType::kF32 || type == DType::kF16 || type == DType::kBF16) {
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> v = Normal(cols);
        EXPECT_TRUE(QuantizeRow(type, v.data(), out.data() + r * *row_bytes, cols).ok());
      }
      return out;
    }
    std::uniform_int_distribution<int> byte(0, 255);
    for (uint8_t& b : out) b = static_cast<uint8_t>(byte(rng_));
    std::vector<size_t> scale_offsets;
    size_t block = Traits(type).type_size;
    switch (type) {
      case DType::kQ4_0:
      case DType::kQ5_0:
      case DType::kQ8_0:
        scale_offsets = {0};
        break;
      case DType::kQ4_1:
      case DType::kQ5_1:
      case DType::kQ4_K:
      case DType::kQ5_K:
        scale_offsets = {0, 2};
        break;
      case DType::kQ2_K:
        scale_offsets = {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)};
        break;
      case DType::kQ3_K:
        scale_offsets = {offsetof(BlockQ3_K, d)};
        break;
      case DType::kQ6_K:
        scale_offsets = {offsetof(BlockQ6_K, d)};
        break;
      default:
        ADD_FAILURE() << "no random rows for " << DTypeName(type);
    }
    std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
    for (size_t b = 0; b < out.size(); b += block) {
      for (size_t off : scale_offsets) {
        const uint16_t h = FloatToFp16(scale(rng_));
        std::memcpy(out.data() + b + off, &h, 2);
      }
    }
    return out;
  }

  std::mt19937 rng_;
};

// |a - b| / |b| over whole vectors; NaN anywhere (an unwritten element) gives NaN, which
// fails every bound.
double NormalisedError(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
    if (std::isnan(a[i])) return NAN;
  }
  return den == 0.0 ? std::sqrt(num) : std::sqrt(num / den);
}

const DType kMatMulTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ4_0, DType::kQ4_1,
                              DType::kQ5_0, DType::kQ5_1, DType::kQ8_0, DType::kQ2_K, DType::kQ3_K,
                              DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

// MatMul against MatMulRef. Both multiply the same rounded activations by bitwise the same
// dequantized weights; the device sums in float, the reference in double, so the error is
// float rounding over `cols` products: ~sqrt(cols) * 6e-8 relative, under 1e-5 for every shape
// here. A wrong block layout or scale gives errors of order 1.
TEST_F(CudaOpsTest, MatMulMatchesReferenceForEveryTypeAndShape) {
  struct Shape {
    int64_t rows, cols, n_tok;
  };
  // Every shape has at least 32 outputs: with a single output the normalised error is that
  // one element's relative error, unbounded when the sum happens to cancel to near zero.
  const Shape shapes[] = {
      {1, 256, 32}, {33, 512, 1}, {257, 768, 7}, {96, 2048, 33}, {64, 256, 512}};
  for (DType type : kMatMulTypes) {
    for (const Shape& s : shapes) {
      SCOPED_TRACE(std::string(DTypeName(type)) + " rows " + std::to_string(s.rows) + " cols " +
                   std::to_string(s.cols) + " n_tok " + std::to_string(s.n_tok));
      WeightMatrix host_w;
      std::vector<uint8_t> bytes = RandomRows(type, s.rows, s.cols, &host_w.row_bytes);
      host_w.type = type;
      host_w.rows = s.rows;
      host_w.cols = s.cols;
      host_w.data = bytes.data();
      const std::vector<float> x = Normal(s.n_tok * s.cols);
      std::vector<float> ref(static_cast<size_t>(s.n_tok * s.rows));
      ASSERT_TRUE(MatMulRef(host_w, x.data(), s.n_tok, ref.data()).ok());

      DeviceBuffer w_dev = Upload(bytes), x_dev = Upload(x);
      DeviceBuffer work = Poisoned(s.n_tok * s.cols), y = Poisoned(s.n_tok * s.rows);
      WeightMatrix dev_w = host_w;
      dev_w.data = w_dev.data();
      ASSERT_TRUE(
          cuda::MatMul(dev_w, x_dev.as<float>(), s.n_tok, y.as<float>(), work.as<float>()).ok());
      EXPECT_LE(NormalisedError(Download(y, s.n_tok * s.rows), ref), 1e-5);
    }
  }
}

// GetRows against GetRowRef: the same dequantization formulas, each element one or two IEEE
// operations done without fusion on both sides: bitwise.
TEST_F(CudaOpsTest, GetRowsIsBitwiseTheReference) {
  for (DType type : kMatMulTypes) {
    SCOPED_TRACE(std::string(DTypeName(type)));
    const int64_t rows = 37, cols = 512;
    WeightMatrix w;
    std::vector<uint8_t> bytes = RandomRows(type, rows, cols, &w.row_bytes);
    w.type = type;
    w.rows = rows;
    w.cols = cols;
    w.data = bytes.data();
    const std::vector<int32_t> ids = {0, 36, 5, 5, 17};
    std::vector<float> ref(ids.size() * cols);
    for (size_t i = 0; i < ids.size(); ++i) ASSERT_TRUE(GetRowRef(w, ids[i], &ref[i * cols]).ok());
    DeviceBuffer w_dev = Upload(bytes), out = Poisoned(static_cast<int64_t>(ref.size()));
    auto ids_dev = DeviceBuffer::Create(ids.size() * sizeof(int32_t));
    ASSERT_TRUE(ids_dev.ok());
    WeightMatrix dw = w;
    dw.data = w_dev.data();
    ASSERT_TRUE(cuda::GetRows(dw, ids, ids_dev->as<int32_t>(), out.as<float>()).ok());
    const std::vector<float> got = Download(out, static_cast<int64_t>(ref.size()));
    ASSERT_EQ(0, std::memcmp(got.data(), ref.data(), ref.size() * sizeof(float)));
    // A row outside the matrix is refused before anything runs.
    const std::vector<int32_t> bad = {0, 37};
    EXPECT_EQ(cuda::GetRows(dw, bad, ids_dev->as<int32_t>(), out.as<float>()).code(),
              StatusCode::kOutOfRange);
  }
}

// RmsNorm: the sum of squares in double on both sides (only its order differs), then the same
// float operations: equal to the reference up to one float rounding (1e-7 relative).
TEST_F(CudaOpsTest, RmsNormMatchesReference) {
  for (int64_t n : {8, 64, 640, 2048, 4099}) {
    for (bool weighted : {true, false}) {
      const int64_t rows = 5;
      const std::vector<float> x = Normal(rows * n, 3.0f), w = Normal(n);
      std::vector<float> ref(x.size());
      for (int64_t r = 0; r < rows; ++r) {
        RmsNormRef(&x[r * n], weighted ? w.data() : nullptr, &ref[r * n], n, 1e-6f);
      }
      DeviceBuffer xd = Upload(x), wd = Upload(w), y = Poisoned(rows * n);
      ASSERT_TRUE(cuda::RmsNorm(xd.as<float>(), weighted ? wd.as<float>() : nullptr, y.as<float>(),
                                rows, n, 1e-6f)
                      .ok());
      EXPECT_LE(NormalisedError(Download(y, rows * n), ref), 2e-7) << "n " << n;
      // In place (x == y), as the forward pass calls it.
      ASSERT_TRUE(cuda::RmsNorm(xd.as<float>(), weighted ? wd.as<float>() : nullptr, xd.as<float>(),
                                rows, n, 1e-6f)
                      .ok());
      EXPECT_LE(NormalisedError(Download(xd, rows * n), ref), 2e-7) << "in place, n " << n;
    }
  }
}

// RoPE with the angles of RopeAngles: the same four products and two sums, unfused: bitwise.
TEST_F(CudaOpsTest, RopeApplyIsBitwiseTheReference) {
  for (int64_t head_dim : {64, 128, 256}) {
    for (bool neox : {false, true}) {
      const int64_t n_tok = 33, heads = 4, n_rot = head_dim == 128 ? 64 : head_dim;
      RopeParams p;
      p.n_rot = n_rot;
      p.neox = neox;
      p.base = 10000.0f;
      std::vector<float> x = Normal(n_tok * heads * head_dim), cs(n_tok * n_rot);
      for (int64_t t = 0; t < n_tok; ++t) RopeAngles(1000 + 7 * t, p, &cs[t * n_rot]);
      DeviceBuffer xd = Upload(x), csd = Upload(cs);
      for (int64_t t = 0; t < n_tok; ++t)
        RopeApply(&x[t * heads * head_dim], heads, head_dim, &cs[t * n_rot], p);
      ASSERT_TRUE(cuda::RopeApply(xd.as<float>(), n_tok, heads, head_dim, csd.as<float>(), n_rot,
                                  n_rot, neox)
                      .ok());
      const std::vector<float> got = Download(xd, n_tok * heads * head_dim);
      EXPECT_EQ(0, std::memcmp(got.data(), x.data(), x.size() * sizeof(float)))
          << "head_dim " << head_dim << " neox " << neox;
    }
  }
}

// SiLU: device expf is within 2 ulp of the host's, so each product is within a few ulp:
// normalised error under 1e-6. GELU: the result is rounded to fp16 on both sides; a tanhf ulp
// can move a value across an fp16 rounding boundary (one fp16 step, 2^-11 relative) for a rare
// element, far under 1e-4 over the whole vector.
TEST_F(CudaOpsTest, GatedActivationsMatchReference) {
  for (int64_t n : {1, 1000, 65536 + 3}) {
    std::vector<float> gate = Normal(n, 4.0f), up = Normal(n);
    if (n > 2) gate[0] = -12.0f, gate[1] = 11.0f;  // both clamps of GeluTanhF16Ref
    std::vector<float> silu(n), gelu(n);
    for (int64_t i = 0; i < n; ++i) {
      silu[i] = SiluRef(gate[i]) * up[i];
      gelu[i] = GeluTanhF16Ref(gate[i]) * up[i];
    }
    DeviceBuffer g1 = Upload(gate), g2 = Upload(gate), ud = Upload(up);
    ASSERT_TRUE(cuda::SiluMul(g1.as<float>(), ud.as<float>(), n).ok());
    ASSERT_TRUE(cuda::GeluTanhF16Mul(g2.as<float>(), ud.as<float>(), n).ok());
    EXPECT_LE(NormalisedError(Download(g1, n), silu), 1e-6) << "n " << n;
    EXPECT_LE(NormalisedError(Download(g2, n), gelu), 1e-4) << "n " << n;
    std::vector<float> sum(n);
    for (int64_t i = 0; i < n; ++i) sum[i] = gate[i] + up[i];
    DeviceBuffer a = Upload(gate);
    ASSERT_TRUE(cuda::Add(a.as<float>(), ud.as<float>(), n).ok());
    const std::vector<float> got = Download(a, n);
    EXPECT_EQ(0, std::memcmp(got.data(), sum.data(), sum.size() * sizeof(float)));
  }
}

// A bias on every row: one float sum per element, bitwise.
TEST_F(CudaOpsTest, AddRowsIsBitwiseTheHostSum) {
  const int64_t rows = 7, n = 1000;
  std::vector<float> y = Normal(rows * n), b = Normal(n);
  DeviceBuffer yd = Upload(y), bd = Upload(b);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) y[r * n + i] += b[i];
  }
  ASSERT_TRUE(cuda::AddRows(yd.as<float>(), bd.as<float>(), rows, n).ok());
  const std::vector<float> got = Download(yd, rows * n);
  EXPECT_EQ(0, std::memcmp(got.data(), y.data(), y.size() * sizeof(float)));
}

// KV rows: the bytes KvCache::Store writes (QuantizeRow), bitwise, each row through its own
// destination pointer.
TEST_F(CudaOpsTest, StoreKvRowsWritesTheReferenceBytes) {
  for (DType type : {DType::kF32, DType::kF16, DType::kQ8_0, DType::kQ4_0}) {
    SCOPED_TRACE(std::string(DTypeName(type)));
    const int64_t n_rows = 9, n = 256;
    const uint64_t row_bytes = *RowBytes(type, n);
    std::vector<float> src = Normal(n_rows * n, 2.0f);
    src[3] = 0.0f;  // an exact zero and a block of zeros (d = 0)
    for (int i = 32; i < 64; ++i) src[i] = 0.0f;
    std::vector<uint8_t> ref(n_rows * row_bytes);
    for (int64_t j = 0; j < n_rows; ++j) {
      ASSERT_TRUE(
          QuantizeRow(type, &src[j * n], ref.data() + (n_rows - 1 - j) * row_bytes, n).ok());
    }
    auto dst = DeviceBuffer::Create(ref.size());
    ASSERT_TRUE(dst.ok());
    ASSERT_TRUE(Fill(dst->data(), 0xa5, dst->size()).ok());
    std::vector<uint8_t*> rows(n_rows);  // reversed, as a paged cache scatters them
    for (int64_t j = 0; j < n_rows; ++j)
      rows[j] = dst->as<uint8_t>() + (n_rows - 1 - j) * row_bytes;
    DeviceBuffer rows_dev = Upload(rows), src_dev = Upload(src);
    ASSERT_TRUE(
        cuda::StoreKvRows(type, src_dev.as<float>(), n_rows, n, rows_dev.as<uint8_t* const>())
            .ok());
    ASSERT_TRUE(Synchronize().ok());
    std::vector<uint8_t> got(ref.size());
    ASSERT_TRUE(CopyToHost(got.data(), dst->data(), got.size()).ok());
    EXPECT_EQ(got, ref);
  }
}

// Attention over paged K/V rows against AttentionRef over the same rows on the host. The
// device sums in float with an online softmax (device expf); the reference in double:
// normalised error under 1e-5. Head sizes 64/128/256, grouped heads, a sliding window, one
// token and a batch, f32/f16/q8_0/q4_0 rows, blocks scattered out of order.
TEST_F(CudaOpsTest, AttentionMatchesReferenceOverPagedRows) {
  struct Case {
    DType type;
    int64_t head_dim, n_head, n_head_kv, n_tok, n_keys, window;
  };
  const Case cases[] = {
      {DType::kF16, 64, 8, 2, 1, 1000, 0},     {DType::kF16, 128, 4, 4, 7, 300, 0},
      {DType::kQ8_0, 256, 4, 1, 1, 777, 0},    {DType::kQ8_0, 64, 8, 2, 33, 513, 128},
      {DType::kF32, 128, 2, 1, 5, 64, 0},      {DType::kQ4_0, 64, 4, 2, 3, 200, 0},
      {DType::kF16, 256, 8, 1, 64, 1024, 512}, {DType::kF16, 8, 8, 4, 9, 100, 0},
      {DType::kF32, 8, 4, 4, 1, 37, 16}};
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(DTypeName(c.type)) + " head_dim " + std::to_string(c.head_dim) +
                 " n_tok " + std::to_string(c.n_tok) + " keys " + std::to_string(c.n_keys) +
                 " window " + std::to_string(c.window));
    const int64_t block_tokens = 32, p_lo = 50, first_pos = 32;  // p_lo inside the first block
    const int64_t positions = p_lo + c.n_keys - first_pos;
    const int64_t n_blocks = (positions + block_tokens - 1) / block_tokens;
    const int64_t kv_elems = c.n_head_kv * c.head_dim;
    const uint64_t row_bytes = *RowBytes(c.type, kv_elems);
    const uint64_t block_bytes = row_bytes * block_tokens;
    // Block b of the sequence lives at slot (n_blocks - 1 - b) of one pool.
    std::vector<uint8_t> k_pool(n_blocks * block_bytes), v_pool(n_blocks * block_bytes);
    for (int64_t p = 0; p < positions; ++p) {
      const int64_t b = p / block_tokens, slot = n_blocks - 1 - b;
      const uint64_t off = slot * block_bytes + (p % block_tokens) * row_bytes;
      const std::vector<float> k = Normal(kv_elems), v = Normal(kv_elems);
      ASSERT_TRUE(QuantizeRow(c.type, k.data(), k_pool.data() + off, kv_elems).ok());
      ASSERT_TRUE(QuantizeRow(c.type, v.data(), v_pool.data() + off, kv_elems).ok());
    }
    std::vector<const uint8_t*> hk(n_blocks), hv(n_blocks);
    DeviceBuffer dk_pool = Upload(k_pool), dv_pool = Upload(v_pool);
    std::vector<const uint8_t*> dk(n_blocks), dv(n_blocks);
    for (int64_t b = 0; b < n_blocks; ++b) {
      const uint64_t off = (n_blocks - 1 - b) * block_bytes;
      hk[b] = k_pool.data() + off, hv[b] = v_pool.data() + off;
      dk[b] = dk_pool.as<uint8_t>() + off, dv[b] = dv_pool.as<uint8_t>() + off;
    }
    const std::vector<float> q = Normal(c.n_tok * c.n_head * c.head_dim);
    const int64_t out_n = c.n_tok * c.n_head * c.head_dim;
    std::vector<float> ref(out_n), scores(c.n_head * c.n_keys);
    AttentionArgs a;
    a.kv.type = c.type;
    a.kv.first_pos = first_pos;
    a.kv.block_tokens = block_tokens;
    a.kv.k_row_bytes = a.kv.v_row_bytes = row_bytes;
    a.n_tok = c.n_tok;
    a.n_keys = c.n_keys;
    a.n_head = c.n_head;
    a.n_head_kv = c.n_head_kv;
    a.head_dim_k = a.head_dim_v = c.head_dim;
    a.pos0 = p_lo + c.n_keys - c.n_tok;
    a.p_lo = p_lo;
    a.window = c.window;
    a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    AttentionArgs host = a;
    host.kv.k_blocks = hk.data();
    host.kv.v_blocks = hv.data();
    host.q = q.data();
    host.out = ref.data();
    host.scores = scores.data();
    AttentionRef(host);

    DeviceBuffer qd = Upload(q), kb = Upload(dk), vb = Upload(dv), out = Poisoned(out_n);
    AttentionArgs dev = a;
    dev.kv.k_blocks = kb.as<const uint8_t* const>();
    dev.kv.v_blocks = vb.as<const uint8_t* const>();
    dev.q = qd.as<float>();
    dev.out = out.as<float>();
    ASSERT_TRUE(cuda::Attention(dev).ok());
    EXPECT_LE(NormalisedError(Download(out, out_n), ref), 1e-5);
  }
}

// Errors are named before anything is launched.
TEST_F(CudaOpsTest, BadArgumentsAreRefusedByName) {
  WeightMatrix w;
  w.type = DType::kIQ2_XXS;
  w.rows = 4;
  w.cols = 256;
  w.row_bytes = 66;
  int dummy = 0;
  w.data = &dummy;
  Status s = cuda::MatMul(w, nullptr, 1, nullptr, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("iq2_xxs"), std::string::npos) << s.ToString();
  w.type = DType::kQ4_0;
  w.row_bytes = 145;  // 256 q4_0 elements take 8 blocks of 18 bytes: 144
  auto x = DeviceBuffer::Create(1024);
  ASSERT_TRUE(x.ok());
  s = cuda::MatMul(w, x->as<float>(), 1, x->as<float>(), x->as<float>());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("144"), std::string::npos) << s.ToString();
  w.row_bytes = 144;  // now valid, but x is not 16-byte aligned
  s = cuda::MatMul(w, x->as<float>() + 1, 1, x->as<float>(), x->as<float>());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("aligned"), std::string::npos) << s.ToString();
  AttentionArgs a;
  a.kv.type = DType::kF16;
  a.n_head = 6;
  a.n_head_kv = 4;
  a.n_tok = 1;
  EXPECT_EQ(cuda::Attention(a).code(), StatusCode::kInvalidArgument);
  // Empty work is no work, as in the references.
  a.n_head = 0;
  EXPECT_TRUE(cuda::Attention(a).ok());
  w.cols = 0;
  w.row_bytes = 0;
  EXPECT_TRUE(cuda::MatMul(w, x->as<float>(), 1, x->as<float>(), x->as<float>()).ok());
  EXPECT_EQ(DeviceBuffer::Create(uint64_t{1} << 62).status().code(),
            StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace ferry::cuda
