#include "model/model_info.h"

#include <gtest/gtest.h>

namespace ferry {
namespace {

const std::string kShared = FERRY_SHARED_DIR;

TEST(ModelInfoTest, Stories260K) {
  auto f = gguf::GgufFile::Open(kShared + "/models/stories260K.gguf");
  ASSERT_TRUE(f.ok());
  auto m = ReadModelInfo(**f);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->architecture, "llama");
  EXPECT_EQ(*m->block_count, 5u);
  EXPECT_EQ(*m->embedding_length, 64u);
  EXPECT_EQ(*m->head_count, 8u);
  EXPECT_EQ(m->head_count_kv, std::vector<uint64_t>(5, 4));
  EXPECT_EQ(*m->key_length, 8u);
  EXPECT_EQ(*m->vocab_size, 512u);
  EXPECT_EQ(m->tokenizer_kind, "SentencePiece");
  EXPECT_FALSE(m->has_chat_template);
  // 5 layers * (K + V) * 4 kv heads * 8 dims = 320 values per token.
  EXPECT_EQ(*m->KvBytesPerToken(KvCacheType::kF16), 640u);
  EXPECT_EQ(*m->KvBytesPerToken(KvCacheType::kQ8_0), 5u * 2 * 34);
  EXPECT_EQ(*m->KvBytesPerToken(KvCacheType::kQ4_0), 5u * 2 * 18);
  EXPECT_EQ(m->tensor_types.at(DType::kF32).count, 48u);
  EXPECT_EQ(m->parameter_count, m->tensor_types.at(DType::kF32).elements);
  EXPECT_EQ(m->tensor_bytes, m->parameter_count * 4);
}

// A Llama-3-8B-shaped header: KV at f16 is 2*32*8*128*2 bytes per token (128 KiB).
TEST(ModelInfoTest, Llama3Shape) {
  gguf::GgufWriter w;
  ASSERT_TRUE(w.AddMetadata("general.architecture", gguf::Value("llama")).ok());
  ASSERT_TRUE(w.AddMetadata("general.file_type", gguf::Value(uint32_t{15})).ok());
  ASSERT_TRUE(w.AddMetadata("llama.block_count", gguf::Value(uint32_t{32})).ok());
  ASSERT_TRUE(w.AddMetadata("llama.embedding_length", gguf::Value(uint32_t{4096})).ok());
  ASSERT_TRUE(w.AddMetadata("llama.attention.head_count", gguf::Value(uint32_t{32})).ok());
  ASSERT_TRUE(w.AddMetadata("llama.attention.head_count_kv", gguf::Value(uint32_t{8})).ok());
  auto bytes = w.Serialize();
  auto f = gguf::GgufFile::Parse(bytes->data(), bytes->size());
  ASSERT_TRUE(f.ok());
  auto m = ReadModelInfo(**f);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->file_type_name, "Q4_K_M");
  EXPECT_EQ(*m->key_length, 128u);
  EXPECT_EQ(*m->KvBytesPerToken(KvCacheType::kF16), 2u * 32 * 8 * 128 * 2);
  EXPECT_EQ(*m->KvBytesPerToken(KvCacheType::kQ8_0), 2u * 32 * (8 * 128 / 32) * 34);
}

// A block count no file could hold is reported as read, but sizes nothing (it used to
// expand head_count_kv to 2^31 entries: 16 GiB).
TEST(ModelInfoTest, AbsurdBlockCountSizesNothing) {
  gguf::GgufWriter w;
  ASSERT_TRUE(w.AddMetadata("general.architecture", gguf::Value("llama")).ok());
  ASSERT_TRUE(w.AddMetadata("llama.block_count", gguf::Value(uint32_t{2147483647})).ok());
  ASSERT_TRUE(w.AddMetadata("llama.embedding_length", gguf::Value(uint32_t{64})).ok());
  ASSERT_TRUE(w.AddMetadata("llama.attention.head_count", gguf::Value(uint32_t{8})).ok());
  auto bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok());
  auto f = gguf::GgufFile::Parse(bytes->data(), bytes->size());
  ASSERT_TRUE(f.ok());
  auto m = ReadModelInfo(**f);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(*m->block_count, 2147483647u);
  EXPECT_TRUE(m->head_count_kv.empty());
  EXPECT_FALSE(m->KvBytesPerToken(KvCacheType::kF16).has_value());
}

TEST(ModelInfoTest, PerLayerHeadsAndBadTypes) {
  gguf::GgufWriter w;
  ASSERT_TRUE(w.AddMetadata("general.architecture", gguf::Value("x")).ok());
  ASSERT_TRUE(w.AddMetadata("x.block_count", gguf::Value(uint32_t{3})).ok());
  ASSERT_TRUE(w.AddMetadata("x.embedding_length", gguf::Value(uint32_t{64})).ok());
  ASSERT_TRUE(w.AddMetadata("x.attention.head_count", gguf::Value(uint32_t{2})).ok());
  gguf::Array kv = *gguf::Array::FromValues(
      gguf::ValueType::kInt32,
      {gguf::Value(int32_t{2}), gguf::Value(int32_t{1}), gguf::Value(int32_t{0})});
  ASSERT_TRUE(w.AddMetadata("x.attention.head_count_kv", gguf::Value(kv)).ok());
  {
    auto bytes = w.Serialize();
    auto f = gguf::GgufFile::Parse(bytes->data(), bytes->size());
    ASSERT_TRUE(f.ok());
    auto m = ReadModelInfo(**f);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->head_count_kv, (std::vector<uint64_t>{2, 1, 0}));
    EXPECT_EQ(*m->key_length, 32u);
    EXPECT_EQ(*m->KvBytesPerToken(KvCacheType::kF16), 2u * 64 * 2 + 2u * 32 * 2);
    EXPECT_EQ(*m->KvBytesPerToken(KvCacheType::kQ8_0), 2u * 2 * 34 + 2u * 34);
    EXPECT_FALSE(m->context_length.has_value());
  }
  ASSERT_TRUE(w.AddMetadata("x.context_length", gguf::Value("long")).ok());
  auto bytes = w.Serialize();
  auto f = gguf::GgufFile::Parse(bytes->data(), bytes->size());
  ASSERT_TRUE(f.ok());
  auto m = ReadModelInfo(**f);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("x.context_length"), std::string::npos);
}

TEST(ModelInfoTest, FileTypeNames) {
  EXPECT_EQ(gguf::FileTypeName(0), "F32");
  EXPECT_EQ(gguf::FileTypeName(15), "Q4_K_M");
  EXPECT_EQ(gguf::FileTypeName(32), "BF16");
  EXPECT_EQ(gguf::FileTypeName(4), "");
}

}  // namespace
}  // namespace ferry
