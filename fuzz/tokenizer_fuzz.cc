// libFuzzer target for the tokenizers (src/tokenizer/tokenizer.h).
//
// LLVMFuzzerInitialize loads the shared test vocabularies once: SentencePiece ("llama":
// llama-spm, phi-3), byte-level BPE ("gpt2") with every pre-tokenizer the files use (gpt-2, mpt,
// gpt-neox, starcoder, refact, falcon, deepseek-coder, deepseek-llm) plus gpt-2's vocabulary
// rebuilt with the llama3 and qwen2 pre-tokenizers that no shared file has, and WordPiece
// ("bert": bert-bge). The directory is $FERRY_FUZZ_VOCAB_DIR, else the FERRY_SHARED_DIR/vocab
// the build passes in; a vocabulary that does not load stops the run.
//
// Input: the first byte picks the tokenizer (byte % count) and the flags parse_special and
// show_special (the next two bits of byte / count); the rest is the text. Checked, as
// tokenizer.h promises:
//   - Encode fails only for BPE (the regex engine), and then says why;
//   - every id is a valid id of the vocabulary;
//   - add_special adds exactly BOS in front when add_bos, and EOS (WordPiece: SEP) at the end
//     when add_eos (add_sep); empty text gives nothing else;
//   - Decode is TokenToPiece of each id concatenated, one leading space dropped from the first
//     non-empty piece for SPM with add_space_prefix and for WordPiece (checked for the
//     vocabularies without clean_spaces, whose tidying is llama.cpp's, not spelled out);
//     invalid ids print nothing;
//   - "streamed pieces concatenate to the raw text": when no special token was matched or
//     needed (every id is a normal or byte token), the pieces of a BPE encoding are the text
//     (valid UTF-8 only: invalid bytes became U+FFFD), and those of an SPM encoding are the
//     text with the space add_space_prefix puts in front (text without U+2581, which SPM uses
//     for its spaces). Checked only for vocabularies that have a token for every byte the text
//     can hold (SPM: <0xNN> for all 256; BPE: the byte-map character of every byte valid UTF-8
//     uses), since other bytes have nowhere to go.
// A broken invariant calls __builtin_trap() so that libFuzzer reports the input as a crash.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab.h"
#include "fuzz_check.h"

#ifndef FERRY_SHARED_DIR
#define FERRY_SHARED_DIR "../shared"
#endif

namespace ferry::tokenizer {
namespace {

using ferry::fuzz::Check;

struct Loaded {
  std::string name;
  std::unique_ptr<Tokenizer> tokenizer;
  bool every_byte = false;  // a token for every byte: pieces can round-trip
};

std::vector<Loaded>* g_tokenizers = nullptr;

// The vocabularies, and for the BPE pre-tokenizers no shared file uses, a file whose
// tokenizer.ggml.pre is replaced.
struct Source {
  const char* file;  // ggml-vocab-<file>.gguf
  const char* pre;   // nullptr: as in the file
};
constexpr Source kSources[] = {
    {"llama-spm", nullptr},    {"phi-3", nullptr},    {"gpt-2", nullptr},
    {"mpt", nullptr},          {"gpt-neox", nullptr}, {"starcoder", nullptr},
    {"refact", nullptr},       {"falcon", nullptr},   {"deepseek-coder", nullptr},
    {"deepseek-llm", nullptr}, {"bert-bge", nullptr}, {"gpt-2", "llama3"},
    {"gpt-2", "qwen2"},
};

[[noreturn]] void Fail(const std::string& what, const Status& s) {
  std::fprintf(stderr, "tokenizer_fuzz: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

// Whether every byte the round trip can meet has a token that prints as that byte: all 256 for
// SPM (byte fallback keeps invalid UTF-8), those valid UTF-8 can hold for BPE (not C0, C1,
// F5..FF; several BPE vocabularies leave those out).
bool HasEveryByte(const Tokenizer& t) {
  const Vocab& v = t.vocab();
  if (v.type() == VocabType::kWpm) return false;
  for (int b = 0; b < 256; ++b) {
    if (v.type() == VocabType::kBpe && (b == 0xC0 || b == 0xC1 || b > 0xF4)) continue;
    int32_t id = kNoToken;
    if (v.type() == VocabType::kSpm) {
      id = v.ByteToken(static_cast<uint8_t>(b));
    } else if (v.type() == VocabType::kBpe) {
      id = v.Find(ByteToUnicode(static_cast<uint8_t>(b)));
    }
    if (id == kNoToken) return false;
    if (v.type(id) != TokenType::kNormal && v.type(id) != TokenType::kByte) return false;
    // The token must also print as that byte.
    if (t.TokenToPiece(id) != std::string(1, static_cast<char>(b))) return false;
  }
  return true;
}

Loaded Load(const std::string& dir, const Source& src) {
  const std::string path = dir + "/ggml-vocab-" + src.file + ".gguf";
  StatusOr<std::unique_ptr<gguf::GgufFile>> file = gguf::GgufFile::Open(path);
  if (!file.ok()) Fail(path, file.status());
  StatusOr<Vocab> vocab = InternalError("not loaded");
  if (src.pre == nullptr) {
    vocab = Vocab::FromGguf(**file);
  } else {
    // The same metadata with another pre-tokenizer (no tensors: a vocabulary has none).
    gguf::GgufWriter w((*file)->version());
    for (const gguf::KeyValue& kv : (*file)->metadata()) {
      gguf::Value value = kv.key == "tokenizer.ggml.pre" ? gguf::Value(src.pre) : kv.value;
      if (Status s = w.AddMetadata(kv.key, std::move(value)); !s.ok()) Fail(path, s);
    }
    if ((*file)->Find("tokenizer.ggml.pre") == nullptr) {
      if (Status s = w.AddMetadata("tokenizer.ggml.pre", gguf::Value(src.pre)); !s.ok()) {
        Fail(path, s);
      }
    }
    StatusOr<std::vector<uint8_t>> bytes = w.Serialize();
    if (!bytes.ok()) Fail(path, bytes.status());
    StatusOr<std::unique_ptr<gguf::GgufFile>> rebuilt =
        gguf::GgufFile::Parse(bytes->data(), bytes->size(), path);
    if (!rebuilt.ok()) Fail(path, rebuilt.status());
    vocab = Vocab::FromGguf(**rebuilt);  // copies what it needs out of the buffer
  }
  if (!vocab.ok()) Fail(path, vocab.status());
  StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Create(std::move(vocab).value());
  if (!tok.ok()) Fail(path, tok.status());
  Loaded out;
  out.name = std::string(src.file) + (src.pre ? std::string("+pre=") + src.pre : "");
  out.tokenizer = std::move(tok).value();
  out.every_byte = HasEveryByte(*out.tokenizer);
  return out;
}

// Decode as tokenizer.h defines it from TokenToPiece (without the clean_spaces tidying).
std::string DecodeFromPieces(const Tokenizer& t, std::span<const int32_t> ids, bool show) {
  const Vocab& v = t.vocab();
  bool strip = v.add_space_prefix() || v.type() == VocabType::kWpm;
  std::string out;
  for (int32_t id : ids) {
    std::string piece = t.TokenToPiece(id, show);
    if (piece.empty()) continue;
    if (strip && piece[0] == ' ') piece.erase(0, 1);
    strip = false;
    out += piece;
  }
  return out;
}

void CheckText(const Loaded& l, std::string_view text, bool parse_special, bool show_special) {
  const Tokenizer& t = *l.tokenizer;
  const Vocab& v = t.vocab();

  StatusOr<std::vector<int32_t>> plain = t.Encode(text, /*add_special=*/false, parse_special);
  if (!plain.ok()) {
    Check(v.type() == VocabType::kBpe);
    Check(!plain.status().message().empty());
    return;
  }
  const std::vector<int32_t>& ids = *plain;
  for (int32_t id : ids) Check(v.IsValid(id));
  if (text.empty()) Check(ids.empty());

  // add_special: BOS first, EOS (WordPiece: SEP) last, nothing else changes.
  StatusOr<std::vector<int32_t>> with = t.Encode(text, /*add_special=*/true, parse_special);
  Check(with.ok());
  std::vector<int32_t> expected;
  if (v.add_bos() && v.bos() != kNoToken) expected.push_back(v.bos());
  expected.insert(expected.end(), ids.begin(), ids.end());
  if (v.type() == VocabType::kWpm) {
    if (v.add_sep() && v.sep() != kNoToken) expected.push_back(v.sep());
  } else if (v.add_eos() && v.eos() != kNoToken) {
    expected.push_back(v.eos());
  }
  Check(*with == expected);

  // Decode is defined by TokenToPiece.
  const std::string decoded = t.Decode(ids, show_special);
  if (!v.clean_spaces()) Check(decoded == DecodeFromPieces(t, ids, show_special));
  (void)t.Decode(*with, show_special);

  // Pieces concatenate to the raw text when nothing special was involved.
  if (parse_special || !l.every_byte) return;
  std::string pieces;
  for (int32_t id : ids) {
    const TokenType type = v.type(id);
    if (type != TokenType::kNormal && type != TokenType::kByte) return;
    pieces += t.TokenToPiece(id);
  }
  if (v.type() == VocabType::kBpe && FindInvalidUtf8(text) == std::string_view::npos) {
    Check(pieces == text);
  } else if (v.type() == VocabType::kSpm && text.find("\xE2\x96\x81") == std::string_view::npos) {
    const std::string prefix = v.add_space_prefix() && !text.empty() ? " " : "";
    Check(pieces == prefix + std::string(text));
    if (!v.clean_spaces()) Check(decoded == text);
  }
}

}  // namespace
}  // namespace ferry::tokenizer

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  using namespace ferry::tokenizer;
  const char* env = std::getenv("FERRY_FUZZ_VOCAB_DIR");
  const std::string dir = env != nullptr && *env != '\0' ? env : FERRY_SHARED_DIR "/vocab";
  g_tokenizers = new std::vector<Loaded>();
  for (const Source& src : kSources) g_tokenizers->push_back(Load(dir, src));
  for (const Loaded& l : *g_tokenizers) {
    const Vocab& v = l.tokenizer->vocab();
    std::fprintf(stderr, "tokenizer_fuzz: %-28s %-5s pre=%-15s %6d tokens%s\n", l.name.c_str(),
                 v.model_name().c_str(), v.pre_name().c_str(), v.size(),
                 l.every_byte ? ", every byte" : "");
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ferry::tokenizer;
  if (size == 0) return 0;
  const size_t n = g_tokenizers->size();
  const Loaded& l = (*g_tokenizers)[data[0] % n];
  const unsigned flags = data[0] / n;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  CheckText(l, text, /*parse_special=*/(flags & 1) != 0, /*show_special=*/(flags & 2) != 0);
  // Invalid ids print nothing.
  const Tokenizer& t = *l.tokenizer;
  Check(t.TokenToPiece(-1).empty() && t.TokenToPiece(t.vocab().size()).empty());
  return 0;
}
