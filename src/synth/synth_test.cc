#include "synth/synth.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "base/sha256.h"
#include "kernels/ref/dequantize.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace ferry::synth {
namespace {

const std::string kShared = FERRY_SHARED_DIR;
const std::string kFixtures = FERRY_FIXTURES_DIR;
const std::string kStories = kShared + "/models/stories260K.gguf";

const char* const kTypeNames[] = {"f32", "f16", "q8_0", "q4_0", "q4_k", "q6_k"};

// A directory of its own under the system's temporary directory, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("ferry-synth-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

SynthSpec Spec(std::string arch, std::string shape, const std::string& type, uint64_t seed = 0,
               int64_t n_layer = 0) {
  SynthSpec s;
  s.arch = std::move(arch);
  s.shape = std::move(shape);
  s.type = *ParseSynthType(type);
  s.seed = seed;
  s.n_layer = n_layer;
  return s;
}

// Loads `path` as the runner would (finiteness check, tokenizer) and runs one step over a short
// prompt; checks the last token's logits are finite. Returns them (empty on failure).
std::vector<float> LoadAndRun(const std::string& path) {
  auto model = Model::Load(path);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  if (!model.ok()) return {};
  const Status finite = (*model)->CheckWeightsFinite(nullptr);
  EXPECT_TRUE(finite.ok()) << finite.ToString();
  auto vocab = tokenizer::Vocab::FromGguf((*model)->file());
  EXPECT_TRUE(vocab.ok()) << vocab.status().ToString();
  if (!vocab.ok()) return {};
  auto tok = tokenizer::Tokenizer::Create(std::move(*vocab));
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  if (!tok.ok()) return {};
  auto ids = (*tok)->Encode("Once upon a time, there was a cat", true, false);
  EXPECT_TRUE(ids.ok()) << ids.status().ToString();
  if (!ids.ok()) return {};
  EXPECT_GT(ids->size(), 3u);
  auto kv = KvCache::Create((*model)->KvOptions(DType::kF32, 64, 1, 64));
  EXPECT_TRUE(kv.ok()) << kv.status().ToString();
  if (!kv.ok()) return {};
  auto seq = (*kv)->AddSequence();
  EXPECT_TRUE(seq.ok());
  if (!seq.ok()) return {};
  EXPECT_TRUE((*kv)->Reserve(*seq, static_cast<int64_t>(ids->size())).ok());
  Batch b;
  b.AddRun(*ids, *seq, 0, true);
  std::vector<float> logits;
  const Status s = (*model)->ForwardAllLogits(b, **kv, {}, &logits);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(logits.size(), static_cast<size_t>((*model)->hparams().n_vocab));
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!std::isfinite(logits[i])) {
      ADD_FAILURE() << path << ": logit " << i << " is " << logits[i];
      break;
    }
  }
  return logits;
}

double StdDev(const std::vector<float>& v) {
  double sum = 0, sq = 0;
  for (float x : v) sum += x;
  const double mean = sum / static_cast<double>(v.size());
  for (float x : v) sq += (x - mean) * (x - mean);
  return std::sqrt(sq / static_cast<double>(v.size()));
}

// fixtures/synthetic.sha256: file name -> digest of make_synthetic.py's models.
std::map<std::string, std::string> PythonChecksums() {
  std::map<std::string, std::string> sums;
  std::ifstream in(kFixtures + "/synthetic.sha256");
  std::string digest, name;
  while (in >> digest >> name) sums[name] = digest;
  return sums;
}

class SmallShapeTest : public testing::TestWithParam<std::tuple<std::string, std::string>> {};

// Every architecture in every type: the file loads, tokenizes and runs; with seed 0 and the
// stories260K vocabulary it has the bytes of tests/reference/make_synthetic.py's model (so the
// llama.cpp fixtures made from those models apply to it).
TEST_P(SmallShapeTest, LoadsRunsAndMatchesMakeSynthetic) {
  const auto& [arch, type] = GetParam();
  TempDir dir;
  const std::string name = "synthetic-" + arch + "-" + type + ".gguf";
  const std::string path = dir.File(name);
  const Status s = WriteSyntheticModel(Spec(arch, "small", type), kStories, path, 2);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
  const std::vector<float> logits = LoadAndRun(path);
  ASSERT_FALSE(logits.empty());
  EXPECT_GT(StdDev(logits), 0.1);  // logits with a spread of a few units, not all equal
  const auto sums = PythonChecksums();
  ASSERT_EQ(sums.count(name), 1u) << "no checksum for " << name;
  EXPECT_EQ(Sha256Hex(ReadAll(path)), sums.at(name)) << name;
}

std::string ParamName(const testing::TestParamInfo<SmallShapeTest::ParamType>& info) {
  return std::get<0>(info.param) + "_" + std::get<1>(info.param);
}

INSTANTIATE_TEST_SUITE_P(AllArchsAndTypes, SmallShapeTest,
                         testing::Combine(testing::Values("llama", "qwen2", "qwen3", "gemma3"),
                                          testing::Values("f32", "f16", "q8_0", "q4_0", "q4_k",
                                                          "q6_k")),
                         ParamName);

TEST(SynthTest, SmallShapeSeedChangesTheWeights) {
  TempDir dir;
  ASSERT_TRUE(
      WriteSyntheticModel(Spec("qwen3", "small", "q8_0", 0), kStories, dir.File("a"), 1).ok());
  ASSERT_TRUE(
      WriteSyntheticModel(Spec("qwen3", "small", "q8_0", 7), kStories, dir.File("b"), 1).ok());
  EXPECT_NE(ReadAll(dir.File("a")), ReadAll(dir.File("b")));
  EXPECT_FALSE(LoadAndRun(dir.File("b")).empty());
}

// The same spec gives the same bytes, whatever the thread count.
TEST(SynthTest, DeterministicAcrossRunsAndThreadCounts) {
  TempDir dir;
  struct Case {
    SynthSpec spec;
    std::vector<int> threads;
  };
  const Case cases[] = {
      {Spec("qwen2", "small", "q4_0"), {1, 2, 2, 3}},
      {Spec("llama", "tinyllama", "q4_0", 5, 1), {1, 3, 3}},
      {Spec("llama", "tinyllama", "q4_k", 5, 1), {1, 2}},
  };
  for (const Case& c : cases) {
    std::string first;
    for (size_t i = 0; i < c.threads.size(); ++i) {
      const std::string path = dir.File(fmt::format("m{}", i));
      const Status s = WriteSyntheticModel(c.spec, kStories, path, c.threads[i]);
      ASSERT_TRUE(s.ok()) << s.ToString();
      const std::string bytes = ReadAll(path);
      if (i == 0) {
        first = bytes;
      } else {
        EXPECT_TRUE(bytes == first)
            << c.spec.arch << " " << c.spec.shape << " with " << c.threads[i] << " threads differs";
      }
    }
  }
}

// The big shapes' fast path, with one layer and the 512-token vocabulary (a few tens of MB):
// the shape ferry reads, finite weights and logits of a sensible spread.
TEST(SynthTest, TinyLlamaShapeLoadsAndRuns) {
  TempDir dir;
  for (const char* type : {"q4_0", "q4_k", "q6_k", "q8_0"}) {
    const std::string path = dir.File(std::string("tiny-") + type + ".gguf");
    const Status s = WriteSyntheticModel(Spec("llama", "tinyllama", type, 1, 1), kStories, path, 2);
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto model = Model::Load(path);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    const HParams& hp = (*model)->hparams();
    EXPECT_EQ(hp.n_layer, 1);
    EXPECT_EQ(hp.n_embd, 2048);
    EXPECT_EQ(hp.n_ff, 5632);
    EXPECT_EQ(hp.n_head, 32);
    EXPECT_EQ(hp.n_head_kv, 4);
    EXPECT_EQ(hp.n_vocab, 512);
    EXPECT_TRUE((*model)->weights().output.present());  // untied
    EXPECT_EQ((*model)->weights().layers[0].ffn_down.type, *ParseSynthType(type));
    const std::vector<float> logits = LoadAndRun(path);
    ASSERT_FALSE(logits.empty()) << type;
    const double sd = StdDev(logits);
    EXPECT_GT(sd, 0.1) << type;
    EXPECT_LT(sd, 10.0) << type;
    std::filesystem::remove(path);
  }
}

// The fast generator's values: mean about 0, standard deviation about 1/sqrt(cols), finite.
TEST(SynthTest, FillRandomRowsHasUnitFanInScale) {
  constexpr int64_t kCols = 4096, kRows = 64;
  for (const char* name : kTypeNames) {
    const DType type = *ParseSynthType(name);
    const uint64_t row_bytes = *RowBytes(type, kCols);
    std::vector<uint8_t> data(row_bytes * kRows);
    FillRandomRows(type, kCols, 3, 11, 0, kRows, data.data());
    // Rows are independent of the range they are made in.
    std::vector<uint8_t> part(row_bytes * 2);
    FillRandomRows(type, kCols, 3, 11, 40, 42, part.data());
    EXPECT_TRUE(std::equal(part.begin(), part.end(), data.begin() + 40 * row_bytes)) << name;
    std::vector<float> values(kCols * kRows);
    for (int64_t r = 0; r < kRows; ++r) {
      ASSERT_TRUE(
          DequantizeRow(type, data.data() + r * row_bytes, values.data() + r * kCols, kCols).ok());
    }
    double sum = 0;
    bool finite = true;
    for (float v : values) {
      sum += v;
      finite &= std::isfinite(v);
    }
    EXPECT_TRUE(finite) << name;
    const double want = 1.0 / std::sqrt(static_cast<double>(kCols));
    EXPECT_LT(std::fabs(sum / static_cast<double>(values.size())), 0.05 * want) << name;
    EXPECT_NEAR(StdDev(values), want, 0.1 * want) << name;
  }
}

TEST(SynthTest, BadSpecsAreNamed) {
  TempDir dir;
  const std::string out = dir.File("x.gguf");
  auto expect_error = [&](const SynthSpec& spec, const std::string& vocab, const std::string& path,
                          int threads, StatusCode code, const std::string& needle) {
    const Status s = WriteSyntheticModel(spec, vocab, path, threads);
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.ToString();
    EXPECT_FALSE(std::filesystem::exists(path));
    EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
  };
  SynthSpec bad_arch = Spec("llama", "small", "f32");
  bad_arch.arch = "mamba";
  expect_error(bad_arch, kStories, out, 1, StatusCode::kInvalidArgument,
               "unknown architecture 'mamba'");
  SynthSpec bad_shape = Spec("llama", "small", "f32");
  bad_shape.shape = "huge";
  expect_error(bad_shape, kStories, out, 1, StatusCode::kInvalidArgument, "unknown shape 'huge'");
  const Status qwen_8b = WriteSyntheticModel(Spec("qwen2", "llama8b", "q4_0"), kStories, out, 1);
  EXPECT_EQ(qwen_8b.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(qwen_8b.message().find("'llama8b'"), std::string::npos) << qwen_8b.ToString();
  EXPECT_NE(qwen_8b.message().find("'qwen2'"), std::string::npos) << qwen_8b.ToString();
  SynthSpec bad_type = Spec("llama", "small", "f32");
  bad_type.type = DType::kQ5_0;
  expect_error(bad_type, kStories, out, 1, StatusCode::kInvalidArgument, "q5_0");
  expect_error(Spec("llama", "small", "f32"), kStories, out, 0, StatusCode::kInvalidArgument,
               "thread count 0");
  expect_error(Spec("llama", "small", "f32"), kStories, "/nonexistent-dir/x.gguf", 1,
               StatusCode::kIoError, "/nonexistent-dir/x.gguf");
  expect_error(Spec("llama", "small", "f32"), dir.File("no-vocab.gguf"), out, 1,
               StatusCode::kNotFound, "no-vocab.gguf");
  auto parsed = ParseSynthType("Q4_K");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, DType::kQ4_K);
  EXPECT_EQ(SynthTypeName(DType::kQ6_K), "q6_k");
  EXPECT_EQ(ParseSynthType("q4_1").status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ParseSynthType("q4_1").status().message().find("q4_1"), std::string::npos);
}

// A vocabulary file without tokens is refused by name.
TEST(SynthTest, VocabularyWithoutTokensIsRefused) {
  TempDir dir;
  gguf::GgufWriter w;
  ASSERT_TRUE(w.AddMetadata("general.architecture", gguf::Value("llama")).ok());
  const std::string vocab = dir.File("empty-vocab.gguf");
  ASSERT_TRUE(w.WriteFile(vocab).ok());
  const Status s = WriteSyntheticModel(Spec("llama", "small", "f32"), vocab, dir.File("x.gguf"), 1);
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
  EXPECT_NE(s.message().find("tokenizer.ggml.tokens"), std::string::npos) << s.ToString();
  EXPECT_FALSE(std::filesystem::exists(dir.File("x.gguf")));
}

}  // namespace
}  // namespace ferry::synth
