// Model::Load rejects files that lie about themselves, with errors that say what is wrong.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "model/model.h"

namespace ferry {
namespace {

const std::string kShared = FERRY_SHARED_DIR;

// Rewrites stories260K with `edit` applied to its metadata/tensor list, then loads it.
StatusOr<std::unique_ptr<Model>> LoadEdited(
    const std::function<void(std::vector<gguf::KeyValue>*, std::vector<gguf::TensorInfo>*)>& edit,
    std::vector<uint8_t>* storage) {
  auto src = gguf::GgufFile::Open(kShared + "/models/stories260K.gguf");
  EXPECT_TRUE(src.ok());
  std::vector<gguf::KeyValue> md = (*src)->metadata();
  std::vector<gguf::TensorInfo> tensors = (*src)->tensors();
  edit(&md, &tensors);
  gguf::GgufWriter w;
  for (const auto& kv : md) EXPECT_TRUE(w.AddMetadata(kv.key, kv.value).ok());
  for (const auto& t : tensors) {
    const gguf::TensorInfo* orig = (*src)->FindTensor(t.name);
    std::span<const uint8_t> data = (*src)->TensorData(*orig);
    std::vector<uint8_t> bytes(data.begin(), data.end());
    bytes.resize(*RowBytes(t.type, t.dims[0]) * (t.n_elements / t.dims[0]));
    EXPECT_TRUE(w.AddTensor(t.name, t.dims, t.type, bytes).ok()) << t.name;
  }
  *storage = *w.Serialize();
  auto f = gguf::GgufFile::Parse(storage->data(), storage->size(), "edited.gguf");
  if (!f.ok()) return f.status();
  return Model::FromFile(std::move(*f));
}

void SetUint(std::vector<gguf::KeyValue>* md, const std::string& key, uint32_t v) {
  for (auto& kv : *md) {
    if (kv.key == key) {
      kv.value = gguf::Value(v);
      return;
    }
  }
  md->push_back({key, gguf::Value(v)});
}

// Sets (or adds) metadata `key` to any value gguf::Value converts from.
void Set(std::vector<gguf::KeyValue>* md, const std::string& key, gguf::Value v) {
  for (auto& kv : *md) {
    if (kv.key == key) {
      kv.value = std::move(v);
      return;
    }
  }
  md->push_back({key, std::move(v)});
}

TEST(ModelLoadTest, UnmodifiedLoads) {
  std::vector<uint8_t> buf;
  auto m = LoadEdited([](auto*, auto*) {}, &buf);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->hparams().n_layer, 5);
}

TEST(ModelLoadTest, ShapeDisagreeingWithHyperParameters) {
  std::vector<uint8_t> buf;
  auto m = LoadEdited([](auto* md, auto*) { SetUint(md, "llama.feed_forward_length", 180); }, &buf);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(m.status().message().find("tensor 'blk.0.ffn_gate.weight' has shape [64, 172] but "
                                      "the hyper-parameters say [64, 180]"),
            std::string::npos)
      << m.status().ToString();
}

TEST(ModelLoadTest, MissingTensor) {
  std::vector<uint8_t> buf;
  auto m = LoadEdited(
      [](auto*, std::vector<gguf::TensorInfo>* ts) {
        std::erase_if(*ts, [](const gguf::TensorInfo& t) { return t.name == "blk.3.attn_k.weight"; });
      },
      &buf);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("missing tensor 'blk.3.attn_k.weight'"), std::string::npos);
}

TEST(ModelLoadTest, UnknownArchitecture) {
  std::vector<uint8_t> buf;
  auto m = LoadEdited(
      [](std::vector<gguf::KeyValue>* md, auto*) {
        for (auto& kv : *md) {
          if (kv.key == "general.architecture") kv.value = gguf::Value("rwkv9");
        }
      },
      &buf);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(m.status().message().find("architecture 'rwkv9' is not supported"), std::string::npos);
}

TEST(ModelLoadTest, SpecialTokenBeyondVocabulary) {
  std::vector<uint8_t> buf;
  auto m = LoadEdited([](auto* md, auto*) { SetUint(md, "tokenizer.ggml.eos_token_id", 512); },
                      &buf);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("tokenizer.ggml.eos_token_id = 512 is outside the "
                                      "vocabulary of 512 tokens"),
            std::string::npos)
      << m.status().ToString();
}

TEST(ModelLoadTest, VocabularyShorterThanEmbedding) {
  // Cut the token list to 500 entries: token_embd still has 512 rows.
  std::vector<uint8_t> buf;
  auto m = LoadEdited(
      [](std::vector<gguf::KeyValue>* md, auto*) {
        for (auto& kv : *md) {
          if (kv.key.rfind("tokenizer.ggml.", 0) == 0 &&
              kv.value.type() == gguf::ValueType::kArray) {
            std::get<gguf::Array>(kv.value.data).Truncate(500);
          }
        }
      },
      &buf);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("token_embd.weight"), std::string::npos)
      << m.status().ToString();
}

TEST(ModelLoadTest, BadHyperParameters) {
  std::vector<uint8_t> buf;
  auto m = LoadEdited([](auto* md, auto*) { SetUint(md, "llama.attention.head_count_kv", 3); },
                      &buf);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("not a multiple of 3 KV heads"), std::string::npos);
  m = LoadEdited(
      [](std::vector<gguf::KeyValue>* md, auto*) {
        std::erase_if(*md, [](const gguf::KeyValue& kv) { return kv.key == "llama.block_count"; });
      },
      &buf);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("missing metadata key 'llama.block_count'"),
            std::string::npos);
}

// A block count the file cannot hold (issue: 2147483647 in a 1.1 MB file grew ferry to 23 GB)
// is rejected before anything per layer is reserved.
TEST(ModelLoadTest, BlockCountBeyondTheFileIsRejected) {
  for (uint32_t n : {2147483647u, 4000000000u, 10000000u, 49u}) {
    std::vector<uint8_t> buf;
    auto m = LoadEdited([n](auto* md, auto*) { SetUint(md, "llama.block_count", n); }, &buf);
    ASSERT_FALSE(m.ok()) << n;
    EXPECT_EQ(m.status().code(), StatusCode::kDataLoss) << m.status().ToString();
    EXPECT_NE(m.status().message().find(fmt::format("'llama.block_count' = {} layers, but the "
                                                    "file holds only 48 tensors", n)),
              std::string::npos)
        << m.status().ToString();
  }
}

// RoPE scaling metadata, read as llama.cpp hands it to ggml's rope (values seen in the ROPE
// nodes of llama-cpp-python 0.3.36; see ReadRopeScaling in model.cc).
TEST(ModelLoadTest, RopeScalingMetadata) {
  std::vector<uint8_t> buf;
  // No scaling keys: linear with factor 1, original context = context_length (2048 here).
  auto m = LoadEdited([](auto*, auto*) {}, &buf);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->hparams().rope_freq_scale, 1.0f);
  EXPECT_EQ((*m)->hparams().rope_ext_factor, 0.0f);
  EXPECT_EQ((*m)->hparams().rope_attn_factor, 1.0f);
  EXPECT_EQ((*m)->hparams().rope_n_ctx_orig, (*m)->hparams().n_ctx_train);

  // yarn x4 from 64 positions: llama.cpp passes attn_factor exactly 1 (it divides out ggml's
  // 1 + 0.1 ln 4 and multiplies in the same get_mscale(4)).
  m = LoadEdited(
      [](auto* md, auto*) {
        Set(md, "llama.rope.scaling.type", gguf::Value("yarn"));
        Set(md, "llama.rope.scaling.factor", gguf::Value(4.0f));
        Set(md, "llama.rope.scaling.original_context_length", gguf::Value(uint32_t{64}));
      },
      &buf);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const HParams& hp = (*m)->hparams();
  EXPECT_EQ(hp.rope_freq_scale, 0.25f);
  EXPECT_EQ(hp.rope_ext_factor, 1.0f);
  EXPECT_EQ(hp.rope_attn_factor, 1.0f);
  EXPECT_EQ(hp.rope_n_ctx_orig, 64);
  EXPECT_EQ(hp.rope_yarn_beta_fast, 32.0f);
  EXPECT_EQ(hp.rope_yarn_beta_slow, 1.0f);

  // yarn x0.5 with attn_factor 0.8 and no original context: get_mscale(0.5) is 1, so ggml gets
  // 0.8 / (1 + 0.1 ln 0.5) (llama.cpp passed 1.0744771 for attn_factor 1); n_ctx_orig falls back
  // to context_length. The yarn_* keys llama.cpp ignores for llama are ignored.
  m = LoadEdited(
      [](auto* md, auto*) {
        Set(md, "llama.rope.scaling.type", gguf::Value("yarn"));
        Set(md, "llama.rope.scaling.factor", gguf::Value(0.5f));
        Set(md, "llama.rope.scaling.attn_factor", gguf::Value(0.8f));
        Set(md, "llama.rope.scaling.yarn_beta_fast", gguf::Value(16.0f));
        Set(md, "llama.rope.scaling.yarn_beta_slow", gguf::Value(2.0f));
      },
      &buf);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->hparams().rope_freq_scale, 2.0f);
  EXPECT_NEAR((*m)->hparams().rope_attn_factor, 0.8 * 1.0744771, 1e-6);
  EXPECT_EQ((*m)->hparams().rope_n_ctx_orig, (*m)->hparams().n_ctx_train);
  EXPECT_EQ((*m)->hparams().rope_yarn_beta_fast, 32.0f);
  EXPECT_EQ((*m)->hparams().rope_yarn_beta_slow, 1.0f);

  // attn_factor applies to linear (and none) scaling too; none ignores the factor.
  m = LoadEdited(
      [](auto* md, auto*) {
        Set(md, "llama.rope.scaling.type", gguf::Value("none"));
        Set(md, "llama.rope.scaling.factor", gguf::Value(2.0f));
        Set(md, "llama.rope.scaling.attn_factor", gguf::Value(0.8f));
      },
      &buf);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->hparams().rope_freq_scale, 1.0f);
  EXPECT_EQ((*m)->hparams().rope_ext_factor, 0.0f);
  EXPECT_EQ((*m)->hparams().rope_attn_factor, 0.8f);

  // Other scaling types are a clear Unimplemented error.
  m = LoadEdited(
      [](auto* md, auto*) { Set(md, "llama.rope.scaling.type", gguf::Value("longrope")); }, &buf);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(m.status().message().find("RoPE scaling 'longrope' is not supported"),
            std::string::npos)
      << m.status().ToString();
}

TEST(ModelLoadTest, TokenOutsideVocabularyAtRunTime) {
  auto m = Model::Load(kShared + "/models/stories260K.gguf");
  ASSERT_TRUE(m.ok());
  auto kv = KvCache::Create((*m)->KvOptions(DType::kF16, 16, 1, 16));
  ASSERT_TRUE(kv.ok());
  ASSERT_TRUE((*kv)->AddSequence().ok());
  ASSERT_TRUE((*kv)->Reserve(0, 1).ok());
  Batch bad;
  bad.Add(512, 0, 0, true);
  Status s = (*m)->Forward(bad, **kv, {});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("outside the vocabulary"), std::string::npos);
}

}  // namespace
}  // namespace ferry
