#include "tokenizer/regex_splitter.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "tokenizer/utf8.h"

namespace ferry::tokenizer {
namespace {

// GPT-2's pattern.
constexpr std::string_view kGpt2 =
    R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))re";

// Llama 3's pattern with HF's case-insensitive group written out; `{DIGITS}` is replaced by the
// number rule (\p{N}{1,3} for llama3, \p{N} for qwen2).
constexpr std::string_view kLlama3Template =
    R"re((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|{DIGITS}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

constexpr std::string_view kCjk = R"re([\x{4E00}-\x{9FA5}\x{0800}-\x{4E00}\x{AC00}-\x{D7FF}]+)re";

// Letter ranges of deepseek-llm's letter class (after A-Za-z).
constexpr std::string_view kDeepseekLetters =
    R"re(\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF})re"
    R"re(\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C})re"
    R"re(\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556})re"
    R"re(\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF})re"
    R"re(\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D})re"
    R"re(\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D})re"
    R"re(\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4})re"
    R"re(\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4})re"
    R"re(\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124})re"
    R"re(\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F})re"
    R"re(\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4})re"
    R"re(\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F})re"
    R"re(\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17})re"
    R"re(\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3})re"
    R"re(\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF})re"
    R"re(\x{1E900}-\x{1E943})re";

std::string Llama3Pattern(std::string_view digits) {
  std::string p(kLlama3Template);
  const size_t at = p.find("{DIGITS}");
  p.replace(at, 8, digits);
  return p;
}

std::string Pcre2ErrorMessage(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) return fmt::format("#{}", code);
  return std::string(reinterpret_cast<const char*>(buffer));
}

}  // namespace

std::vector<std::string> PreTokenizerPatterns(PreTokenizer pre) {
  switch (pre) {
    case PreTokenizer::kDefault:
      return {R"re([\p{P}\$\+<=>\^~\|]+)re", std::string(kGpt2), R"re(\p{N}+)re",
              R"re([0-9][0-9][0-9])re"};
    case PreTokenizer::kGpt2:
      return {std::string(kGpt2)};
    case PreTokenizer::kStarcoder:
      return {R"re(\p{N})re", std::string(kGpt2)};
    case PreTokenizer::kFalcon:
      return {R"re([\p{P}\$\+<=>\^~\|`]+)re", std::string(kGpt2), R"re([0-9][0-9][0-9])re"};
    case PreTokenizer::kLlama3:
      return {Llama3Pattern(R"re(\p{N}{1,3})re")};
    case PreTokenizer::kQwen2:
      return {Llama3Pattern(R"re(\p{N})re")};
    case PreTokenizer::kDeepseekCoder:
      return {R"re([\r\n])re", R"re(\s?\p{L}+)re", R"re(\s?\p{P}+)re", std::string(kCjk),
              R"re(\p{N})re"};
    case PreTokenizer::kDeepseekLlm:
      return {
          R"re([\r\n])re",
          R"re(\s?[A-Za-z)re" + std::string(kDeepseekLetters) + "]+",
          R"re(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)re",
          R"re(\s+$)re",
          std::string(kCjk),
          R"re(\p{N}+)re"};
  }
  return {};
}

struct RegexSplitter::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() { pcre2_code_free(code); }
};

RegexSplitter::~RegexSplitter() = default;

StatusOr<std::unique_ptr<RegexSplitter>> RegexSplitter::Create(std::vector<std::string> patterns) {
  std::unique_ptr<RegexSplitter> splitter(new RegexSplitter());
  splitter->patterns_ = std::move(patterns);
  for (const std::string& pattern : splitter->patterns_) {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
    if (code == nullptr) {
      return InvalidArgumentError("cannot compile pre-tokenizer regex '{}' at offset {}: {}",
                                  pattern, error_offset, Pcre2ErrorMessage(error));
    }
    auto compiled = std::make_unique<Compiled>();
    compiled->code = code;
    compiled->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    splitter->compiled_.push_back(std::move(compiled));
  }
  return splitter;
}

StatusOr<std::vector<TextSpan>> RegexSplitter::Split(std::string_view text) const {
  std::vector<TextSpan> chunks;
  if (text.empty()) return chunks;
  chunks.push_back({0, text.size()});
  std::vector<TextSpan> next;
  for (size_t r = 0; r < compiled_.size(); ++r) {
    const Compiled& re = *compiled_[r];
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re.code, nullptr);
    if (md == nullptr) return Status(StatusCode::kResourceExhausted, "pcre2 match data");
    next.clear();
    Status status;
    for (const TextSpan& chunk : chunks) {
      // Each chunk is its own subject: lookaheads and `$` do not see past its end.
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + chunk.offset);
      const size_t length = chunk.length;
      size_t pos = 0;
      size_t last = 0;
      while (pos < length) {
        int rc = pcre2_match(re.code, subject, length, pos, PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
          // The interpreter keeps its backtracking state on the heap: retry there.
          rc = pcre2_match(re.code, subject, length, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                           nullptr);
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          status = Status(StatusCode::kResourceExhausted,
                          fmt::format("pre-tokenizer regex '{}' failed at byte {}: {}",
                                      patterns_[r], chunk.offset + pos, Pcre2ErrorMessage(rc)));
          break;
        }
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md);
        const size_t start = ovector[0];
        const size_t end = ovector[1];
        if (end <= start) {
          // An empty match (none of our patterns has one): step over one character.
          if (start >= length) break;
          pos = start + std::min(Utf8SequenceLength(subject[start]), length - start);
          continue;
        }
        if (start > last) next.push_back({chunk.offset + last, start - last});
        next.push_back({chunk.offset + start, end - start});
        last = end;
        pos = end;
      }
      if (!status.ok()) break;
      if (last < length) next.push_back({chunk.offset + last, length - last});
    }
    pcre2_match_data_free(md);
    if (!status.ok()) return status;
    chunks.swap(next);
  }
  return chunks;
}

}  // namespace ferry::tokenizer
