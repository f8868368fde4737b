#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gguf/gguf.h"
#include "tokenizer/regex_splitter.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab.h"

namespace ferry::tokenizer {
namespace {

const std::string kShared = FERRY_SHARED_DIR;
const std::string kVocabDir = kShared + "/vocab/";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<Tokenizer> Load(const std::string& path) {
  auto file = gguf::GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status().ToString();
  if (!file.ok()) return nullptr;
  auto vocab = Vocab::FromGguf(**file);
  EXPECT_TRUE(vocab.ok()) << vocab.status().ToString();
  if (!vocab.ok()) return nullptr;
  auto tok = Tokenizer::Create(std::move(vocab).value());
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  if (!tok.ok()) return nullptr;
  return std::move(tok).value();
}

std::unique_ptr<Tokenizer> LoadVocab(const std::string& name) {
  return Load(kVocabDir + "ggml-vocab-" + name + ".gguf");
}

std::vector<int32_t> Enc(const Tokenizer& t, std::string_view text, bool add_special = false,
                         bool parse_special = false) {
  auto ids = t.Encode(text, add_special, parse_special);
  EXPECT_TRUE(ids.ok()) << ids.status().ToString();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's test vocabularies: every text of <vocab>.inp must give exactly the ids in .out.

class VocabFileTest : public ::testing::TestWithParam<std::string> {};

TEST_P(VocabFileTest, MatchesReferenceIds) {
  const std::string base = kVocabDir + "ggml-vocab-" + GetParam() + ".gguf";
  std::unique_ptr<Tokenizer> tok = Load(base);
  ASSERT_NE(tok, nullptr);

  const std::string inp = ReadFile(base + ".inp");
  const std::string out = ReadFile(base + ".out");
  ASSERT_FALSE(inp.empty());
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  size_t pos = 0;
  while (true) {
    const size_t hit = inp.find(sep, pos);
    if (hit == std::string::npos) break;
    texts.push_back(inp.substr(pos, hit - pos));
    pos = hit + sep.size();
  }
  std::vector<std::vector<int32_t>> expected;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream nums(line);
    std::vector<int32_t> ids;
    int32_t id;
    while (nums >> id) ids.push_back(id);
    expected.push_back(ids);
  }
  ASSERT_EQ(texts.size(), 46u);
  ASSERT_EQ(expected.size(), texts.size());

  int passed = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::vector<int32_t> got = Enc(*tok, texts[i]);
    EXPECT_EQ(got, expected[i]) << GetParam() << " text #" << i << ": '" << texts[i] << "'";
    if (got == expected[i]) ++passed;
  }
  EXPECT_EQ(passed, static_cast<int>(texts.size())) << GetParam();
}

std::string ParamName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Vocabs, VocabFileTest,
                         ::testing::Values("llama-spm", "phi-3", "gpt-2", "deepseek-coder",
                                           "deepseek-llm", "falcon", "mpt", "refact", "starcoder",
                                           "bert-bge"),
                         ParamName);

// ---------------------------------------------------------------------------------------------
// Round trips, specials, flags.

const std::vector<std::string> kSampleTexts = {
    "Hello world",
    "Once upon a time, there was a little girl named Lily.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew\n\nlines\r\n",
    "Führer café naïve — “quotes” ½",
    "нещо на Български",
    "我想在apple工作1314151天～",
    "🦙🚀 😶‍🌫️ ✅ emoji",
    "កាន់តែពិសេសអាច",
    "numbers 3 33 333 3333 3.14159",
    "code: int main() { return 0; } // x += y^z",
};

TEST(TokenizerTest, SpmRoundTrip) {
  for (const char* name : {"llama-spm", "phi-3"}) {
    auto tok = LoadVocab(name);
    ASSERT_NE(tok, nullptr);
    for (const std::string& text : kSampleTexts) {
      EXPECT_EQ(tok->Decode(Enc(*tok, text)), text) << name;
      EXPECT_EQ(tok->Decode(Enc(*tok, text, /*add_special=*/true)), text) << name;
    }
  }
}

TEST(TokenizerTest, BpeRoundTrip) {
  for (const char* name : {"gpt-2", "deepseek-coder", "deepseek-llm", "falcon", "mpt", "refact",
                           "starcoder", "gpt-neox"}) {
    auto tok = LoadVocab(name);
    ASSERT_NE(tok, nullptr);
    for (const std::string& text : kSampleTexts) {
      EXPECT_EQ(tok->Decode(Enc(*tok, text)), text) << name;
    }
  }
}

TEST(TokenizerTest, PiecesConcatenateToText) {
  auto tok = LoadVocab("gpt-2");
  ASSERT_NE(tok, nullptr);
  const std::string text = "Hello , world ! It 's ok";
  std::string joined;
  for (int32_t id : Enc(*tok, text)) joined += tok->TokenToPiece(id);
  EXPECT_EQ(joined, text);
  // Decode tidies spaces the way llama.cpp does for this vocabulary.
  EXPECT_EQ(tok->Decode(Enc(*tok, text)), "Hello, world! It's ok");
}

TEST(TokenizerTest, SpmByteFallbackForInvalidUtf8) {
  auto tok = LoadVocab("llama-spm");
  ASSERT_NE(tok, nullptr);
  const std::string text = "a\xff\xfe b\xc3";
  const std::vector<int32_t> ids = Enc(*tok, text);
  EXPECT_EQ(tok->Decode(ids), text);
}

TEST(TokenizerTest, BpeInvalidUtf8BecomesReplacementChar) {
  auto tok = LoadVocab("gpt-2");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Decode(Enc(*tok,
                            "a\xff"
                            "b")),
            "a\xEF\xBF\xBD"
            "b");
}

TEST(TokenizerTest, EmptyText) {
  auto spm = LoadVocab("llama-spm");
  ASSERT_NE(spm, nullptr);
  EXPECT_TRUE(Enc(*spm, "").empty());
  EXPECT_EQ(Enc(*spm, "", /*add_special=*/true), std::vector<int32_t>({1}));
  auto bpe = LoadVocab("gpt-2");
  ASSERT_NE(bpe, nullptr);
  EXPECT_TRUE(Enc(*bpe, "").empty());
  EXPECT_TRUE(Enc(*bpe, "", /*add_special=*/true).empty());  // gpt-2 adds no BOS
  EXPECT_EQ(spm->Decode(std::vector<int32_t>{}), "");
}

TEST(TokenizerTest, AddBos) {
  auto spm = LoadVocab("llama-spm");
  ASSERT_NE(spm, nullptr);
  EXPECT_TRUE(spm->vocab().add_bos());
  EXPECT_FALSE(spm->vocab().add_eos());
  const std::vector<int32_t> plain = Enc(*spm, "Hello world");
  const std::vector<int32_t> with = Enc(*spm, "Hello world", /*add_special=*/true);
  ASSERT_EQ(with.size(), plain.size() + 1);
  EXPECT_EQ(with[0], 1);
  EXPECT_EQ(std::vector<int32_t>(with.begin() + 1, with.end()), plain);
  EXPECT_EQ(spm->Decode(with), "Hello world");
  EXPECT_EQ(spm->Decode(with, /*show_special=*/true), "<s> Hello world");

  auto ds = LoadVocab("deepseek-coder");  // add_bos_token = true in the file
  ASSERT_NE(ds, nullptr);
  const std::vector<int32_t> ds_ids = Enc(*ds, "Hello", /*add_special=*/true);
  ASSERT_FALSE(ds_ids.empty());
  EXPECT_EQ(ds_ids[0], 32013);

  auto gpt2 = LoadVocab("gpt-2");
  ASSERT_NE(gpt2, nullptr);
  EXPECT_FALSE(gpt2->vocab().add_bos());
  EXPECT_EQ(Enc(*gpt2, "Hello", true), Enc(*gpt2, "Hello", false));
}

TEST(TokenizerTest, SpecialTokenParsing) {
  auto spm = LoadVocab("llama-spm");
  ASSERT_NE(spm, nullptr);
  const std::vector<int32_t> parsed = Enc(*spm, "<s>Hello</s>", false, /*parse_special=*/true);
  ASSERT_GE(parsed.size(), 3u);
  EXPECT_EQ(parsed.front(), 1);
  EXPECT_EQ(parsed.back(), 2);
  // After a special token the raw text gets the SPM space prefix: "▁Hello".
  EXPECT_EQ(std::vector<int32_t>(parsed.begin() + 1, parsed.end() - 1), Enc(*spm, "Hello"));
  const std::vector<int32_t> raw = Enc(*spm, "<s>Hello</s>", false, /*parse_special=*/false);
  for (int32_t id : raw) {
    EXPECT_NE(id, 1);
    EXPECT_NE(id, 2);
  }
  EXPECT_EQ(spm->Decode(raw), "<s>Hello</s>");
  EXPECT_EQ(spm->Decode(parsed), "Hello");
  EXPECT_EQ(spm->Decode(parsed, /*show_special=*/true), "<s> Hello</s>");

  auto gpt2 = LoadVocab("gpt-2");
  ASSERT_NE(gpt2, nullptr);
  const std::vector<int32_t> eot = Enc(*gpt2, "a<|endoftext|>b", false, true);
  EXPECT_EQ(eot.size(), 3u);
  EXPECT_EQ(eot[1], 50256);
  EXPECT_GT(Enc(*gpt2, "a<|endoftext|>b", false, false).size(), 3u);
  EXPECT_TRUE(gpt2->vocab().IsEog(50256));
}

TEST(TokenizerTest, UserDefinedTokensAlwaysMatch) {
  auto mpt = LoadVocab("mpt");  // "   " (three spaces) is user-defined token 50275
  ASSERT_NE(mpt, nullptr);
  ASSERT_EQ(mpt->vocab().text(50275), "   ");
  EXPECT_EQ(mpt->vocab().type(50275), TokenType::kUserDefined);
  const std::vector<int32_t> ids = Enc(*mpt, "a   b", false, false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 50275), ids.end());
  EXPECT_EQ(mpt->Decode(ids), "a   b");
}

TEST(TokenizerTest, LongestSpecialTokenFirst) {
  auto phi3 = LoadVocab("phi-3");
  ASSERT_NE(phi3, nullptr);
  const std::vector<int32_t> ids = Enc(*phi3, "<|user|>\nHi<|end|>", false, true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids.front(), 32010);
  EXPECT_EQ(ids.back(), 32007);
  EXPECT_TRUE(phi3->vocab().IsEog(32007));
  EXPECT_TRUE(phi3->vocab().IsEog(32000));
}

TEST(TokenizerTest, Stories260K) {
  auto tok = Load(kShared + "/models/stories260K.gguf");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab().size(), 512);
  EXPECT_EQ(tok->vocab().type(), VocabType::kSpm);
  EXPECT_EQ(tok->vocab().bos(), 1);
  EXPECT_EQ(tok->vocab().eos(), 2);
  EXPECT_EQ(tok->vocab().pad(), kNoToken);  // stored as 0xFFFFFFFF
  const std::vector<int32_t> ids = Enc(*tok, "Once upon a time", /*add_special=*/true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_LT(ids.size(), 17u);  // merged into pieces, not characters
  for (int32_t id : ids) EXPECT_TRUE(tok->vocab().IsValid(id));
  EXPECT_EQ(tok->Decode(ids), "Once upon a time");
  EXPECT_EQ(tok->Decode(Enc(*tok, "Once upon a time, there was a little girl named Lily.")),
            "Once upon a time, there was a little girl named Lily.");
}

TEST(TokenizerTest, WordPiece) {
  auto bert = LoadVocab("bert-bge");
  ASSERT_NE(bert, nullptr);
  EXPECT_EQ(bert->vocab().type(), VocabType::kWpm);
  const std::vector<int32_t> ids = Enc(*bert, "Hello, World!", /*add_special=*/true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids.front(), 101);  // [CLS]
  EXPECT_EQ(ids.back(), 102);   // [SEP]
  EXPECT_EQ(bert->Decode(ids), "hello, world!");
  EXPECT_EQ(Enc(*bert, "[CLS]", false, true), std::vector<int32_t>({101}));
}

TEST(TokenizerTest, LegacyAndMissingPre) {
  auto legacy = Load(kVocabDir + "legacy/ggml-vocab-llama.v3-2023.gguf");
  ASSERT_NE(legacy, nullptr);
  auto spm = LoadVocab("llama-spm");
  ASSERT_NE(spm, nullptr);
  EXPECT_EQ(Enc(*legacy, "Hello world"), Enc(*spm, "Hello world"));

  auto neox = LoadVocab("gpt-neox");  // no tokenizer.ggml.pre: the default pre-tokenizer
  ASSERT_NE(neox, nullptr);
  EXPECT_EQ(neox->vocab().pre_name(), "default");
  EXPECT_EQ(neox->vocab().pre_tokenizer(), PreTokenizer::kDefault);
}

TEST(TokenizerTest, ConcurrentEncodeMatchesSerial) {
  auto tok = LoadVocab("deepseek-llm");
  ASSERT_NE(tok, nullptr);
  std::vector<std::vector<int32_t>> serial;
  for (const std::string& text : kSampleTexts) serial.push_back(Enc(*tok, text));
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < kSampleTexts.size(); ++i) {
          auto ids = tok->Encode(kSampleTexts[i], false, false);
          if (!ids.ok() || *ids != serial[i]) ++failures[t];
          if (tok->Decode(serial[i]) != kSampleTexts[i]) ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int f : failures) EXPECT_EQ(f, 0);
}

// Long inputs round-trip (a quadratic merge loop would make this test hit ctest's timeout; no
// wall-clock time is asserted).
TEST(TokenizerTest, LongInputsRoundTrip) {
  auto bpe = LoadVocab("gpt-2");
  auto spm = LoadVocab("llama-spm");
  ASSERT_NE(bpe, nullptr);
  ASSERT_NE(spm, nullptr);
  std::string text;
  while (text.size() < 200000) text += "The quick brown fox jumps over the lazy dog. ";
  const std::string one_word(100000, 'a');  // one pre-tokenizer chunk of 100k symbols
  const std::string spaces(100000, ' ');
  for (const std::string* t : std::vector<const std::string*>{&text, &one_word, &spaces}) {
    EXPECT_EQ(bpe->Decode(Enc(*bpe, *t)), *t);
    EXPECT_EQ(spm->Decode(Enc(*spm, *t)), *t);
  }
}

// ---------------------------------------------------------------------------------------------
// Pieces.

// The planner charges a vocabulary's memory before building it: HeapBytesFor(SizesFromGguf())
// must be exactly what FromGguf then holds, for every kind of vocabulary.
TEST(VocabTest, HeapBytesArePredictedExactlyFromTheHeader) {
  std::vector<std::string> paths = {kShared + "/models/stories260K.gguf",
                                    kShared + "/models/llama-2-tiny-random.gguf"};
  for (const auto& entry : std::filesystem::directory_iterator(kVocabDir)) {
    if (entry.path().extension() == ".gguf") paths.push_back(entry.path().string());
  }
  if (const char* dir = std::getenv("FERRY_MODELS")) {
    const std::string gemma = std::string(dir) + "/gemma-3-270m-q4_k_m.gguf";
    if (std::filesystem::exists(gemma)) paths.push_back(gemma);
  }
  int checked = 0;
  for (const std::string& path : paths) {
    SCOPED_TRACE(path);
    auto file = gguf::GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    auto sizes = Vocab::SizesFromGguf(**file);
    auto vocab = Vocab::FromGguf(**file);
    if (!vocab.ok()) continue;  // a vocabulary ferry does not load is not planned either
    ASSERT_TRUE(sizes.ok()) << sizes.status().ToString();
    EXPECT_EQ(sizes->n_tokens, static_cast<uint64_t>(vocab->size()));
    EXPECT_EQ(sizes->n_merges, static_cast<uint64_t>(vocab->n_merges()));
    EXPECT_EQ(Vocab::HeapBytesFor(*sizes), vocab->heap_bytes());
    // Flat tables: a few bytes per token beyond its text (9, plus 8 to 16 of hash slots), not
    // a heap node per token.
    EXPECT_LE(vocab->heap_bytes(), sizes->text_bytes + sizes->merge_text_bytes +
                                       25 * sizes->n_tokens + 24 * sizes->n_merges + 4096);
    ++checked;
  }
  EXPECT_GE(checked, 10);
}

TEST(Utf8Test, ByteMap) {
  EXPECT_EQ(ByteToUnicode(' '), "\xC4\xA0");   // U+0120 Ġ
  EXPECT_EQ(ByteToUnicode('\n'), "\xC4\x8A");  // U+010A Ċ
  EXPECT_EQ(ByteToUnicode('A'), "A");
  for (int b = 0; b < 256; ++b) {
    size_t pos = 0;
    char32_t cp = 0;
    const std::string_view s = ByteToUnicode(static_cast<uint8_t>(b));
    ASSERT_TRUE(DecodeUtf8(s, &pos, &cp));
    EXPECT_EQ(UnicodeToByte(cp), b);
  }
}

TEST(Utf8Test, Validation) {
  EXPECT_EQ(FindInvalidUtf8("héllo 🦙"), std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("ab\xC0\x80"), 2u);         // overlong
  EXPECT_EQ(FindInvalidUtf8("\xED\xA0\x80"), 0u);       // surrogate
  EXPECT_EQ(FindInvalidUtf8("x\xF4\x90\x80\x80"), 1u);  // above U+10FFFF
  EXPECT_EQ(SanitizeUtf8("a\xFF"
                         "b"),
            "a\xEF\xBF\xBD"
            "b");
}

TEST(RegexSplitterTest, MatchesAndGapsCoverText) {
  auto splitter = RegexSplitter::Create({R"(\p{N}+)"});
  ASSERT_TRUE(splitter.ok());
  auto chunks = (*splitter)->Split("ab12cd345");
  ASSERT_TRUE(chunks.ok());
  EXPECT_EQ(*chunks, (std::vector<TextSpan>{{0, 2}, {2, 2}, {4, 2}, {6, 3}}));
}

TEST(RegexSplitterTest, Gpt2Pattern) {
  auto splitter = RegexSplitter::Create(PreTokenizerPatterns(PreTokenizer::kGpt2));
  ASSERT_TRUE(splitter.ok());
  const std::string text = "Hello world's  3 apples!!\n";
  auto chunks = (*splitter)->Split(text);
  ASSERT_TRUE(chunks.ok());
  std::vector<std::string> parts;
  for (const TextSpan& c : *chunks) parts.push_back(text.substr(c.offset, c.length));
  EXPECT_EQ(parts,
            (std::vector<std::string>{"Hello", " world", "'s", " ", " 3", " apples", "!!", "\n"}));
}

TEST(RegexSplitterTest, Llama3Pattern) {
  auto splitter = RegexSplitter::Create(PreTokenizerPatterns(PreTokenizer::kLlama3));
  ASSERT_TRUE(splitter.ok());
  const std::string text = "I'VE 12345 apples\n\n  ok";
  auto chunks = (*splitter)->Split(text);
  ASSERT_TRUE(chunks.ok());
  std::vector<std::string> parts;
  for (const TextSpan& c : *chunks) parts.push_back(text.substr(c.offset, c.length));
  EXPECT_EQ(parts, (std::vector<std::string>{"I", "'VE", " ", "123", "45", " apples", "\n\n", " ",
                                             " ok"}));
}

TEST(RegexSplitterTest, Qwen2SplitsDigitsOneByOne) {
  auto splitter = RegexSplitter::Create(PreTokenizerPatterns(PreTokenizer::kQwen2));
  ASSERT_TRUE(splitter.ok());
  auto chunks = (*splitter)->Split("x 2024");
  ASSERT_TRUE(chunks.ok());
  EXPECT_EQ(chunks->size(), 6u);  // "x", " ", "2", "0", "2", "4"
}

TEST(RegexSplitterTest, LongInputsEveryPattern) {
  std::string text;
  while (text.size() < 300000) text += "Hello,   world!\n\n\t 12345 ÄÖÜ 我想 🦙   ";
  const std::string spaces(300000, ' ');
  const std::string newlines(300000, '\n');
  for (PreTokenizer pre : {PreTokenizer::kDefault, PreTokenizer::kGpt2, PreTokenizer::kStarcoder,
                           PreTokenizer::kFalcon, PreTokenizer::kLlama3, PreTokenizer::kQwen2,
                           PreTokenizer::kDeepseekCoder, PreTokenizer::kDeepseekLlm}) {
    auto splitter = RegexSplitter::Create(PreTokenizerPatterns(pre));
    ASSERT_TRUE(splitter.ok()) << PreTokenizerName(pre) << ": " << splitter.status().ToString();
    for (const std::string* t : std::vector<const std::string*>{&text, &spaces, &newlines}) {
      auto chunks = (*splitter)->Split(*t);
      ASSERT_TRUE(chunks.ok()) << PreTokenizerName(pre) << ": " << chunks.status().ToString();
      size_t covered = 0;
      for (const TextSpan& c : *chunks) {
        ASSERT_EQ(c.offset, covered) << PreTokenizerName(pre);
        ASSERT_GT(c.length, 0u);
        covered += c.length;
      }
      EXPECT_EQ(covered, t->size()) << PreTokenizerName(pre);
    }
  }
}

TEST(RegexSplitterTest, BadPatternIsAnError) {
  auto splitter = RegexSplitter::Create({"(unclosed"});
  ASSERT_FALSE(splitter.ok());
  EXPECT_NE(splitter.status().message().find("(unclosed"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Vocabulary validation, on small files written with GgufWriter.

struct SmallVocab {
  std::string model = "llama";
  std::optional<std::string> pre;
  std::vector<std::string> tokens = {"<unk>",
                                     "<s>",
                                     "</s>",
                                     "\xE2\x96\x81",
                                     "a",
                                     "b",
                                     "\xE2\x96\x81"
                                     "a",
                                     "ab"};
  std::optional<std::vector<float>> scores = std::vector<float>{0, 0, 0, -1, -2, -2, -1, -1};
  std::optional<std::vector<int32_t>> types = std::vector<int32_t>{2, 3, 3, 1, 1, 1, 1, 1};
  std::optional<std::vector<std::string>> merges;
  std::vector<std::pair<std::string, gguf::Value>> extra;
  bool with_tokens = true;
};

StatusOr<Vocab> BuildVocab(const SmallVocab& v, std::vector<uint8_t>* storage,
                           std::unique_ptr<gguf::GgufFile>* file) {
  gguf::GgufWriter w;
  EXPECT_TRUE(w.AddMetadata("general.architecture", gguf::Value("llama")).ok());
  EXPECT_TRUE(w.AddMetadata("tokenizer.ggml.model", gguf::Value(v.model)).ok());
  if (v.pre) {
    EXPECT_TRUE(w.AddMetadata("tokenizer.ggml.pre", gguf::Value(*v.pre)).ok());
  }
  if (v.with_tokens) {
    gguf::Array a(gguf::ValueType::kString);
    for (const auto& t : v.tokens) a.PushString(t);
    EXPECT_TRUE(w.AddMetadata("tokenizer.ggml.tokens", gguf::Value(a)).ok());
  }
  if (v.scores) {
    gguf::Array a(gguf::ValueType::kFloat32);
    for (float s : *v.scores) EXPECT_TRUE(a.Push(gguf::Value(s)).ok());
    EXPECT_TRUE(w.AddMetadata("tokenizer.ggml.scores", gguf::Value(a)).ok());
  }
  if (v.types) {
    gguf::Array a(gguf::ValueType::kInt32);
    for (int32_t t : *v.types) EXPECT_TRUE(a.Push(gguf::Value(t)).ok());
    EXPECT_TRUE(w.AddMetadata("tokenizer.ggml.token_type", gguf::Value(a)).ok());
  }
  if (v.merges) {
    gguf::Array a(gguf::ValueType::kString);
    for (const auto& m : *v.merges) a.PushString(m);
    EXPECT_TRUE(w.AddMetadata("tokenizer.ggml.merges", gguf::Value(a)).ok());
  }
  for (const auto& [key, value] : v.extra) EXPECT_TRUE(w.AddMetadata(key, value).ok());
  auto bytes = w.Serialize();
  EXPECT_TRUE(bytes.ok());
  *storage = *bytes;
  auto parsed = gguf::GgufFile::Parse(storage->data(), storage->size(), "small.gguf");
  EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
  if (!parsed.ok()) return parsed.status();
  *file = std::move(parsed).value();
  return Vocab::FromGguf(**file);
}

::testing::AssertionResult FailsWith(const SmallVocab& v, std::string_view needle) {
  std::vector<uint8_t> storage;
  std::unique_ptr<gguf::GgufFile> file;
  auto vocab = BuildVocab(v, &storage, &file);
  if (vocab.ok()) return ::testing::AssertionFailure() << "vocab loaded";
  if (vocab.status().message().find(needle) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "message '" << vocab.status().message() << "' lacks '" << needle << "'";
  }
  return ::testing::AssertionSuccess();
}

TEST(VocabTest, SmallSpmWorks) {
  SmallVocab v;
  std::vector<uint8_t> storage;
  std::unique_ptr<gguf::GgufFile> file;
  auto vocab = BuildVocab(v, &storage, &file);
  ASSERT_TRUE(vocab.ok()) << vocab.status().ToString();
  EXPECT_EQ(vocab->size(), 8);
  EXPECT_EQ(vocab->bos(), 1);
  EXPECT_EQ(vocab->eos(), 2);
  EXPECT_EQ(vocab->unk(), 0);
  auto tok = Tokenizer::Create(std::move(vocab).value());
  ASSERT_TRUE(tok.ok());
  // "▁a" (-1) beats "ab" (-1) by position; then "b" stays alone.
  EXPECT_EQ(Enc(**tok, "ab", true), (std::vector<int32_t>{1, 6, 5}));
  // "c" has no token and no byte token: unknown.
  EXPECT_EQ(Enc(**tok, "c"), (std::vector<int32_t>{3, 0}));
}

TEST(VocabTest, SmallBpeWorks) {
  SmallVocab v;
  v.model = "gpt2";
  v.pre = "gpt-2";
  v.tokens = {"a",
              "b",
              "c",
              "ab",
              "abc",
              "\xC4\xA0",
              "\xC4\xA0"
              "a"};
  v.scores.reset();
  v.types.reset();
  v.merges = std::vector<std::string>{"a b", "ab c", "\xC4\xA0 a"};
  std::vector<uint8_t> storage;
  std::unique_ptr<gguf::GgufFile> file;
  auto vocab = BuildVocab(v, &storage, &file);
  ASSERT_TRUE(vocab.ok()) << vocab.status().ToString();
  EXPECT_EQ(vocab->n_merges(), 3);
  EXPECT_EQ(vocab->MergeRank("ab", "c"), 1);
  EXPECT_EQ(vocab->MergeRank("a", "c"), -1);
  auto tok = Tokenizer::Create(std::move(vocab).value());
  ASSERT_TRUE(tok.ok());
  // "abc" | " ab": a+b (rank 0), ab+c (rank 1); then Ġ a b: a+b (rank 0) leaves Ġ, ab.
  EXPECT_EQ(Enc(**tok, "abc ab"), (std::vector<int32_t>{4, 5, 3}));
  EXPECT_EQ(Enc(**tok, " a"), (std::vector<int32_t>{6}));
  EXPECT_EQ((*tok)->Decode(std::vector<int32_t>{4, 5, 3}), "abc ab");
}

TEST(VocabTest, MissingTokens) {
  SmallVocab v;
  v.with_tokens = false;
  EXPECT_TRUE(FailsWith(v, "missing tokenizer.ggml.tokens"));
}

TEST(VocabTest, ScoresLengthMismatch) {
  SmallVocab v;
  v.scores = std::vector<float>{0, 0, 0};
  EXPECT_TRUE(FailsWith(v, "tokenizer.ggml.scores has 3 entries but tokenizer.ggml.tokens has 8"));
}

TEST(VocabTest, TypesLengthMismatch) {
  SmallVocab v;
  v.types = std::vector<int32_t>{1};
  EXPECT_TRUE(FailsWith(v, "tokenizer.ggml.token_type has 1 entries"));
}

TEST(VocabTest, BadTokenType) {
  SmallVocab v;
  v.types = std::vector<int32_t>{2, 3, 3, 1, 1, 1, 1, 9};
  EXPECT_TRUE(FailsWith(v, "tokenizer.ggml.token_type[7] = 9"));
}

TEST(VocabTest, SpecialIdOutOfRange) {
  SmallVocab v;
  v.extra.push_back({"tokenizer.ggml.eos_token_id", gguf::Value(uint32_t{8})});
  EXPECT_TRUE(FailsWith(v, "tokenizer.ggml.eos_token_id = 8 is not a token id"));
  SmallVocab w;
  w.extra.push_back({"tokenizer.ggml.bos_token_id", gguf::Value(uint32_t{1000})});
  EXPECT_TRUE(FailsWith(w, "tokenizer.ggml.bos_token_id = 1000"));
}

TEST(VocabTest, UnknownModel) {
  SmallVocab v;
  v.model = "t5";
  EXPECT_TRUE(FailsWith(v, "unknown tokenizer model tokenizer.ggml.model = 't5'"));
}

TEST(VocabTest, UnknownPre) {
  SmallVocab v;
  v.model = "gpt2";
  v.pre = "mystery-pre";
  v.merges = std::vector<std::string>{"a b"};
  EXPECT_TRUE(FailsWith(v, "unknown pre-tokenizer tokenizer.ggml.pre = 'mystery-pre'"));
}

TEST(VocabTest, MissingMergesAndBadMerge) {
  SmallVocab v;
  v.model = "gpt2";
  v.pre = "gpt-2";
  EXPECT_TRUE(FailsWith(v, "missing tokenizer.ggml.merges"));
  v.merges = std::vector<std::string>{"a b", "nospace"};
  EXPECT_TRUE(FailsWith(v, "tokenizer.ggml.merges[1] = 'nospace'"));
}

TEST(VocabTest, MissingPreIsDefault) {
  SmallVocab v;
  v.model = "gpt2";
  v.merges = std::vector<std::string>{"a b"};
  std::vector<uint8_t> storage;
  std::unique_ptr<gguf::GgufFile> file;
  auto vocab = BuildVocab(v, &storage, &file);
  ASSERT_TRUE(vocab.ok()) << vocab.status().ToString();
  EXPECT_EQ(vocab->pre_name(), "default");
}

TEST(VocabTest, ErrorNamesTheFile) {
  SmallVocab v;
  v.with_tokens = false;
  EXPECT_TRUE(FailsWith(v, "small.gguf"));
}

}  // namespace
}  // namespace ferry::tokenizer
