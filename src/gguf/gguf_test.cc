#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>

#include "gguf/gguf.h"

namespace ferry::gguf {
namespace {

const std::string kShared = FERRY_SHARED_DIR;

// A small file that uses every metadata type, nested arrays and tensors of several types.
std::vector<uint8_t> MakeSample(uint32_t version = 3, uint32_t alignment = 0) {
  GgufWriter w(version);
  if (alignment != 0) {
    EXPECT_TRUE(w.AddMetadata("general.alignment", Value(alignment)).ok());
  }
  EXPECT_TRUE(w.AddMetadata("general.architecture", Value("llama")).ok());
  EXPECT_TRUE(w.AddMetadata("u8", Value(uint8_t{200})).ok());
  EXPECT_TRUE(w.AddMetadata("i8", Value(int8_t{-100})).ok());
  EXPECT_TRUE(w.AddMetadata("u16", Value(uint16_t{60000})).ok());
  EXPECT_TRUE(w.AddMetadata("i16", Value(int16_t{-30000})).ok());
  EXPECT_TRUE(w.AddMetadata("u32", Value(uint32_t{4000000000u})).ok());
  EXPECT_TRUE(w.AddMetadata("i32", Value(int32_t{-2000000000})).ok());
  EXPECT_TRUE(w.AddMetadata("f32", Value(1.5f)).ok());
  EXPECT_TRUE(w.AddMetadata("bool", Value(true)).ok());
  EXPECT_TRUE(w.AddMetadata("u64", Value(uint64_t{1} << 60)).ok());
  EXPECT_TRUE(w.AddMetadata("i64", Value(int64_t{-(int64_t{1} << 60)})).ok());
  EXPECT_TRUE(w.AddMetadata("f64", Value(3.25)).ok());
  Array strings = *Array::FromValues(ValueType::kString, {Value("a"), Value(""), Value("héllo")});
  EXPECT_TRUE(w.AddMetadata("strings", Value(strings)).ok());
  Array inner1 = *Array::FromValues(ValueType::kInt32, {Value(int32_t{1}), Value(int32_t{2})});
  Array inner2(ValueType::kInt32);
  Array nested = *Array::FromValues(ValueType::kArray, {Value(inner1), Value(inner2)});
  EXPECT_TRUE(w.AddMetadata("nested", Value(nested)).ok());
  std::vector<uint8_t> f32(4 * 8 * 4);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<uint8_t>(i * 7);
  EXPECT_TRUE(w.AddTensor("a.weight", {8, 4}, DType::kF32, f32).ok());
  std::vector<uint8_t> q8(2 * 34, 0x11);
  EXPECT_TRUE(w.AddTensor("b.weight", {64}, DType::kQ8_0, q8).ok());
  std::vector<uint8_t> f16(6, 0x3c);
  EXPECT_TRUE(w.AddTensor("c", {3}, DType::kF16, f16).ok());
  auto bytes = w.Serialize();
  EXPECT_TRUE(bytes.ok());
  return *bytes;
}

TEST(GgufTest, WriteThenReadRoundTrip) {
  for (uint32_t version : {2u, 3u}) {
    for (uint32_t alignment : {0u, 64u}) {
      std::vector<uint8_t> bytes = MakeSample(version, alignment);
      auto f = GgufFile::Parse(bytes.data(), bytes.size());
      ASSERT_TRUE(f.ok()) << f.status().ToString();
      const GgufFile& g = **f;
      EXPECT_EQ(g.version(), version);
      EXPECT_EQ(g.alignment(), alignment == 0 ? 32u : alignment);
      EXPECT_EQ(*g.GetString("general.architecture"), "llama");
      EXPECT_EQ(*g.Find("u8"), Value(uint8_t{200}));
      EXPECT_EQ(*g.Find("i8"), Value(int8_t{-100}));
      EXPECT_EQ(*g.Find("u16"), Value(uint16_t{60000}));
      EXPECT_EQ(*g.Find("i16"), Value(int16_t{-30000}));
      EXPECT_EQ(*g.GetUint("u32"), 4000000000u);
      EXPECT_EQ(*g.Find("i32"), Value(int32_t{-2000000000}));
      EXPECT_EQ(*g.GetDouble("f32"), 1.5);
      EXPECT_EQ(*g.Find("bool"), Value(true));
      EXPECT_EQ(*g.GetUint("u64"), uint64_t{1} << 60);
      EXPECT_EQ(*g.Find("i64"), Value(int64_t{-(int64_t{1} << 60)}));
      EXPECT_EQ(*g.GetDouble("f64"), 3.25);
      const Array* s = *g.GetArray("strings");
      ASSERT_EQ(s->size(), 3u);
      EXPECT_EQ(*s->at(2).AsString(), "héllo");
      EXPECT_EQ(s->string_at(1), "");
      EXPECT_EQ(s->string_at(2), "héllo");
      const Array* n = *g.GetArray("nested");
      ASSERT_EQ(n->type(), ValueType::kArray);
      ASSERT_EQ(n->size(), 2u);
      EXPECT_EQ(n->array_at(0).size(), 2u);
      EXPECT_EQ(*n->array_at(0).IntAt(1), 2);
      EXPECT_EQ(n->array_at(1).type(), ValueType::kInt32);
      ASSERT_EQ(g.tensors().size(), 3u);
      const TensorInfo* a = g.FindTensor("a.weight");
      ASSERT_NE(a, nullptr);
      EXPECT_EQ(a->dims, (std::vector<uint64_t>{8, 4}));
      EXPECT_EQ(a->n_bytes, 128u);
      EXPECT_EQ(g.TensorData(*a)[5], 35);
      EXPECT_EQ(a->file_offset % g.alignment(), 0u);
      const TensorInfo* b = g.FindTensor("b.weight");
      EXPECT_EQ(b->type, DType::kQ8_0);
      EXPECT_EQ(b->n_bytes, 68u);
      EXPECT_EQ(g.TensorData(*b)[67], 0x11);
      EXPECT_EQ(g.FindTensor("missing"), nullptr);
    }
  }
}

TEST(GgufTest, TypedGetterErrors) {
  std::vector<uint8_t> bytes = MakeSample();
  auto f = GgufFile::Parse(bytes.data(), bytes.size(), "x.gguf");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->GetUint("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ((*f)->GetUint("general.architecture").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->GetUint("i8").status().code(), StatusCode::kOutOfRange);
  EXPECT_NE((*f)->GetString("u8").status().message().find("x.gguf: u8"), std::string::npos);
}

// Every proper prefix of a valid file must be rejected with a clear error, never crash.
TEST(GgufTest, EveryTruncationIsAnError) {
  std::vector<uint8_t> bytes = MakeSample();
  for (size_t n = 0; n < bytes.size(); ++n) {
    // Copy so that ASan catches any read past the prefix.
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + n);
    auto f = GgufFile::Parse(prefix.data(), prefix.size());
    // The last tensor's trailing padding is not needed, so a file cut inside it is still valid.
    if (f.ok()) {
      const TensorInfo& last = (*f)->tensors().back();
      EXPECT_GE(n, last.file_offset + last.n_bytes) << "prefix " << n;
      continue;
    }
    EXPECT_EQ(f.status().code(), StatusCode::kDataLoss) << n << ": " << f.status().ToString();
  }
}

TEST(GgufTest, RandomCorruptionNeverCrashes) {
  std::vector<uint8_t> base = MakeSample();
  std::mt19937 rng(1234);
  int ok = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> bytes = base;
    int flips = 1 + rng() % 4;
    for (int i = 0; i < flips; ++i) bytes[rng() % bytes.size()] = static_cast<uint8_t>(rng());
    auto f = GgufFile::Parse(bytes.data(), bytes.size());
    if (f.ok()) {
      ++ok;
    } else {
      EXPECT_FALSE(f.status().message().empty());
    }
  }
  EXPECT_GT(ok, 0);  // flips inside tensor data leave a valid file
}

// Patches the u64 at `offset`.
void PutU64(std::vector<uint8_t>& b, size_t offset, uint64_t v) { std::memcpy(&b[offset], &v, 8); }
void PutU32(std::vector<uint8_t>& b, size_t offset, uint32_t v) { std::memcpy(&b[offset], &v, 4); }

std::vector<uint8_t> OneTensorFile(std::vector<uint64_t> dims, DType type, size_t data_bytes) {
  GgufWriter w;
  EXPECT_TRUE(w.AddMetadata("general.architecture", Value("llama")).ok());
  std::vector<uint8_t> data(data_bytes, 1);
  EXPECT_TRUE(w.AddTensor("t", dims, type, data).ok());
  return *w.Serialize();
}

// Byte offset of tensor 't' fields in OneTensorFile: header 24 + kv (8+20 key, 4 type, 8+5) = 69;
// then name (8+1) = 78: n_dims u32 at 78, dims from 82.
constexpr size_t kNDimsAt = 78;

TEST(GgufTest, LyingHeadersAreRejected) {
  auto expect_error = [](std::vector<uint8_t> b, StatusCode code, std::string_view needle) {
    auto f = GgufFile::Parse(b.data(), b.size(), "lie.gguf");
    ASSERT_FALSE(f.ok()) << needle;
    EXPECT_EQ(f.status().code(), code) << f.status().ToString();
    EXPECT_NE(f.status().message().find(needle), std::string::npos) << f.status().ToString();
  };
  std::vector<uint8_t> good = OneTensorFile({32, 2}, DType::kF32, 256);
  ASSERT_TRUE(GgufFile::Parse(good.data(), good.size()).ok());

  auto b = good;
  PutU64(b, 8, uint64_t{1} << 62);  // tensor count
  expect_error(b, StatusCode::kDataLoss, "tensors, more than");
  b = good;
  PutU64(b, 16, 0xffffffffffffull);  // metadata count
  expect_error(b, StatusCode::kDataLoss, "metadata entries");
  b = good;
  PutU64(b, 24, 1000);  // key length
  expect_error(b, StatusCode::kDataLoss, "has length 1000");
  b = good;
  PutU32(b, 24 + 8 + 20, 13);  // value type
  expect_error(b, StatusCode::kDataLoss, "unknown value type 13");
  b = good;
  PutU32(b, kNDimsAt, 5);
  expect_error(b, StatusCode::kDataLoss, "5 dimensions");
  b = good;
  PutU64(b, kNDimsAt + 4, 1ull << 40);
  PutU64(b, kNDimsAt + 12, 1ull << 40);
  expect_error(b, StatusCode::kDataLoss, "overflow");
  b = good;
  PutU64(b, kNDimsAt + 12, 3);  // 32x3 f32 = 384 bytes > 256 present
  expect_error(b, StatusCode::kDataLoss, "truncated file: tensor 't'");
  b = good;
  PutU32(b, kNDimsAt + 20, 4);  // type id 4 was removed from ggml
  expect_error(b, StatusCode::kDataLoss, "unknown type id 4");
  b = good;
  PutU32(b, kNDimsAt + 20, static_cast<uint32_t>(DType::kQ4_K));  // 32 % 256 != 0
  expect_error(b, StatusCode::kDataLoss, "not a multiple");
  b = good;
  PutU64(b, kNDimsAt + 24, 8);  // offset not aligned
  expect_error(b, StatusCode::kDataLoss, "alignment");
  b = good;
  PutU64(b, kNDimsAt + 24, 1ull << 63);
  expect_error(b, StatusCode::kDataLoss, "truncated file");
  b = good;
  b[0] = 'X';
  expect_error(b, StatusCode::kDataLoss, "not a GGUF file");
  b = good;
  PutU32(b, 4, 1);
  expect_error(b, StatusCode::kUnimplemented, "version 1");
  b = good;
  PutU32(b, 4, 0x03000000);
  expect_error(b, StatusCode::kUnimplemented, "big-endian");
  b = good;
  PutU32(b, 4, 4);
  expect_error(b, StatusCode::kUnimplemented, "version 4");
  expect_error({}, StatusCode::kDataLoss, "too short");
}

std::vector<uint8_t> FromHex(std::string_view hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

// Found by the fuzzer: an f32 tensor of 2^62 elements whose byte size wrapped to 0.
TEST(GgufTest, TensorByteSizeOverflowIsRejected) {
  auto b = FromHex(
      "4747554603000000010000000000000000000000000000000100000000000000610100000000000000000000"
      "4000000000000000000000000000000000000000");
  auto f = GgufFile::Parse(b.data(), b.size());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("overflow"), std::string::npos) << f.status().ToString();
  GgufWriter w;
  EXPECT_FALSE(w.AddTensor("t", {uint64_t{1} << 62}, DType::kF32, {}).ok());
}

// Found by the fuzzer: a file ending before the padding of its data section, with an empty
// tensor that then pointed past the end.
TEST(GgufTest, DataSectionPastEndIsRejected) {
  auto b = FromHex(
      "4747554603000000010000000000000000000000000000000100000000000000610100000000000000000000"
      "00000000000000000000000000");
  auto f = GgufFile::Parse(b.data(), b.size());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("truncated file"), std::string::npos)
      << f.status().ToString();
}

TEST(GgufTest, ArraysArePackedAndCountTheirHeapBytesExactly) {
  // Every scalar type round-trips through the packed storage, bit for bit.
  const std::vector<Value> items[] = {
      {Value(uint8_t{0}), Value(uint8_t{255})},
      {Value(int8_t{-128}), Value(int8_t{127})},
      {Value(uint16_t{65535}), Value(uint16_t{1})},
      {Value(int16_t{-32768}), Value(int16_t{5})},
      {Value(uint32_t{4000000000u}), Value(uint32_t{7})},
      {Value(int32_t{-2}), Value(int32_t{1 << 30})},
      {Value(-0.0f), Value(std::numeric_limits<float>::quiet_NaN())},
      {Value(true), Value(false)},
      {Value(uint64_t{1} << 63), Value(uint64_t{9})},
      {Value(int64_t{-1}), Value(int64_t{1} << 62)},
      {Value(-0.0), Value(1e300)},
  };
  for (const auto& list : items) {
    const ValueType t = list[0].type();
    SCOPED_TRACE(std::string(ValueTypeName(t)));
    auto a = Array::FromValues(t, list);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    ASSERT_EQ(a->size(), list.size());
    for (size_t i = 0; i < list.size(); ++i) EXPECT_TRUE(a->at(i) == list[i]) << i;
    EXPECT_EQ(a->packed_bytes().size(), list.size() * PackedSize(t));
    // Read back from a file: the same items, stored as exactly the packed bytes.
    GgufWriter w;
    ASSERT_TRUE(w.AddMetadata("a", Value(*a)).ok());
    auto bytes = w.Serialize();
    ASSERT_TRUE(bytes.ok());
    auto f = GgufFile::Parse(bytes->data(), bytes->size());
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    const Array* r = *(*f)->GetArray("a");
    EXPECT_TRUE(*r == *a);
    EXPECT_EQ(r->heap_bytes(), list.size() * PackedSize(t));
  }
  // Strings: one blob plus 8 bytes of end offset per item, nothing else.
  Array s(ValueType::kString);
  uint64_t text = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string item(static_cast<size_t>(i % 37), static_cast<char>('a' + i % 26));
    s.PushString(item);
    text += item.size();
  }
  EXPECT_EQ(s.text_bytes(), text);
  GgufWriter w;
  ASSERT_TRUE(w.AddMetadata("tokens", Value(s)).ok());
  auto bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok());
  auto f = GgufFile::Parse(bytes->data(), bytes->size());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const Array* r = *(*f)->GetArray("tokens");
  EXPECT_TRUE(*r == s);
  EXPECT_EQ(r->heap_bytes(), text + 1000 * sizeof(uint64_t));
  EXPECT_EQ(r->string_at(999), std::string(999 % 37, static_cast<char>('a' + 999 % 26)));
  // The file's whole parsed header is that array, its key and fixed per-entry costs.
  EXPECT_GE((*f)->heap_bytes(), r->heap_bytes());
  EXPECT_LE((*f)->heap_bytes(), r->heap_bytes() + 1024);
  // Truncate keeps a prefix.
  Array t = s;
  t.Truncate(3);
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(t.string_at(2), s.string_at(2));
  EXPECT_EQ(t.text_bytes(), s.string_at(0).size() + s.string_at(1).size() + s.string_at(2).size());
}

TEST(GgufTest, TooManyArrayItemsIsRejected) {
  // One array claiming 2^25 one-byte items, backed by that many bytes.
  GgufWriter w;
  Array big(ValueType::kUint8);
  std::vector<uint8_t> zeros((uint64_t{1} << 24) + 1, 0);
  big.AssignPacked(zeros.data(), zeros.size());
  ASSERT_TRUE(w.AddMetadata("big", Value(std::move(big))).ok());
  auto bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok());
  auto f = GgufFile::Parse(bytes->data(), bytes->size());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("array items"), std::string::npos);
}

TEST(GgufTest, OverlappingAndDuplicateTensorsAreRejected) {
  GgufWriter w;
  std::vector<uint8_t> data(128, 0);
  ASSERT_TRUE(w.AddTensor("x", {32}, DType::kF32, data).ok());
  ASSERT_TRUE(w.AddTensor("y", {32}, DType::kF32, data).ok());
  std::vector<uint8_t> b = *w.Serialize();
  // y's offset field: header 24, x info (8+1+4+8+4+8=33) -> y info at 57: name 9, n_dims 4,
  // dims 8, type 4 -> offset at 57+25 = 82.
  uint64_t off;
  std::memcpy(&off, &b[82], 8);
  ASSERT_EQ(off, 128u);
  PutU64(b, 82, 96);
  auto f = GgufFile::Parse(b.data(), b.size());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("overlaps"), std::string::npos) << f.status().ToString();
  // Duplicate name: rename y to x.
  PutU64(b, 82, 128);
  b[57 + 8] = 'x';
  f = GgufFile::Parse(b.data(), b.size());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("appears twice"), std::string::npos);
}

TEST(GgufTest, WriterRejectsBadInput) {
  GgufWriter w;
  EXPECT_TRUE(w.AddMetadata("k", Value(1u)).ok());
  EXPECT_FALSE(w.AddMetadata("k", Value(2u)).ok());
  EXPECT_FALSE(w.AddMetadata("general.alignment", Value(uint32_t{24})).ok());
  EXPECT_FALSE(w.AddMetadata("general.alignment", Value(uint64_t{32})).ok());
  // An array cannot even be built with an item of another type.
  auto mixed = Array::FromValues(ValueType::kInt32, {Value(int32_t{1}), Value("x")});
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(mixed.status().message().find("item 1 is a string"), std::string::npos)
      << mixed.status().ToString();
  Array ints(ValueType::kInt32);
  EXPECT_FALSE(ints.Push(Value(1.5f)).ok());
  EXPECT_TRUE(ints.Push(Value(int32_t{3})).ok());
  std::vector<uint8_t> data(10);
  EXPECT_FALSE(w.AddTensor("t", {3}, DType::kF32, data).ok());
  EXPECT_FALSE(w.AddTensor("t", {16}, DType::kQ8_0, data).ok());
  EXPECT_FALSE(w.AddTensor("t", {1, 1, 1, 1, 1}, DType::kF32, data).ok());
  EXPECT_FALSE(GgufWriter(1).Serialize().ok());
}

// The streaming path: SerializeHeader() then each declared tensor's bytes, padded, gives the
// same file as Serialize() with the bytes given up front.
TEST(GgufTest, StreamedTensorsGiveTheSameBytes) {
  std::vector<uint8_t> a(3 * 4, 7), b(34 * 2, 9);
  GgufWriter whole, streamed;
  for (GgufWriter* w : {&whole, &streamed}) {
    ASSERT_TRUE(w->AddMetadata("general.architecture", Value("llama")).ok());
  }
  ASSERT_TRUE(whole.AddTensor("a", {3}, DType::kF32, a).ok());
  ASSERT_TRUE(whole.AddTensor("b", {32, 2}, DType::kQ8_0, b).ok());
  auto na = streamed.AddTensorInfo("a", {3}, DType::kF32);
  auto nb = streamed.AddTensorInfo("b", {32, 2}, DType::kQ8_0);
  ASSERT_TRUE(na.ok() && nb.ok());
  EXPECT_EQ(*na, a.size());
  EXPECT_EQ(*nb, b.size());
  EXPECT_FALSE(streamed.AddTensorInfo("a", {3}, DType::kF32).ok());  // duplicate
  EXPECT_FALSE(streamed.AddTensorInfo("c", {16}, DType::kQ8_0).ok());  // not whole blocks
  EXPECT_EQ(streamed.Serialize().status().code(), StatusCode::kFailedPrecondition);
  auto header = streamed.SerializeHeader();
  ASSERT_TRUE(header.ok());
  std::vector<uint8_t> bytes = *header;
  EXPECT_EQ(bytes.size() % streamed.alignment(), 0u);
  for (const std::vector<uint8_t>* t : {&a, &b}) {
    bytes.insert(bytes.end(), t->begin(), t->end());
    while (bytes.size() % streamed.alignment() != 0) bytes.push_back(0);
  }
  EXPECT_EQ(bytes, *whole.Serialize());
  EXPECT_TRUE(GgufFile::Parse(bytes.data(), bytes.size()).ok());
}

TEST(GgufTest, ReadsSharedFiles) {
  namespace fs = std::filesystem;
  int n = 0;
  for (const char* dir : {"/models", "/vocab"}) {
    for (const auto& e : fs::directory_iterator(kShared + dir)) {
      if (e.path().extension() != ".gguf") continue;
      auto f = GgufFile::Open(e.path().string());
      ASSERT_TRUE(f.ok()) << f.status().ToString();
      EXPECT_TRUE((*f)->GetString("general.architecture").ok()) << e.path();
      ++n;
    }
  }
  EXPECT_GE(n, 14);
  auto s = GgufFile::Open(kShared + "/models/stories260K.gguf");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*(*s)->GetUint("llama.block_count"), 5u);
  const TensorInfo* emb = (*s)->FindTensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dims, (std::vector<uint64_t>{64, 512}));
}

TEST(GgufTest, RejectsVersion1File) {
  auto f = GgufFile::Open(kShared + "/vocab/legacy/ggml-vocab-llama.v1.gguf");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(f.status().message().find("version 1"), std::string::npos);
  EXPECT_NE(f.status().message().find("ggml-vocab-llama.v1.gguf"), std::string::npos);
  EXPECT_TRUE(GgufFile::Open(kShared + "/vocab/legacy/ggml-vocab-llama.v3-2023.gguf").ok());
}

TEST(GgufTest, WriterReproducesSharedFileBytes) {
  // Rewriting a file through reader + writer gives a file that reads back identically.
  auto src = GgufFile::Open(kShared + "/models/stories260K.gguf");
  ASSERT_TRUE(src.ok());
  GgufWriter w((*src)->version());
  for (const KeyValue& kv : (*src)->metadata()) ASSERT_TRUE(w.AddMetadata(kv.key, kv.value).ok());
  for (const TensorInfo& t : (*src)->tensors()) {
    ASSERT_TRUE(w.AddTensor(t.name, t.dims, t.type, (*src)->TensorData(t)).ok());
  }
  std::vector<uint8_t> bytes = *w.Serialize();
  auto back = GgufFile::Parse(bytes.data(), bytes.size());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ((*back)->metadata().size(), (*src)->metadata().size());
  for (size_t i = 0; i < (*src)->metadata().size(); ++i) {
    EXPECT_EQ((*back)->metadata()[i].key, (*src)->metadata()[i].key);
    EXPECT_TRUE((*back)->metadata()[i].value == (*src)->metadata()[i].value);
  }
  for (const TensorInfo& t : (*src)->tensors()) {
    const TensorInfo* u = (*back)->FindTensor(t.name);
    ASSERT_NE(u, nullptr);
    auto a = (*src)->TensorData(t);
    auto b = (*back)->TensorData(*u);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0) << t.name;
  }
}

}  // namespace
}  // namespace ferry::gguf
