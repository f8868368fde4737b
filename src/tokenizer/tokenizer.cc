#include "tokenizer/tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <queue>

#include "tokenizer/regex_splitter.h"
#include "tokenizer/utf8.h"

namespace ferry::tokenizer {
namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// One piece of text during merging: bytes [offset, offset + length) of the working string,
// linked to its neighbours. length == 0 marks a symbol merged into its left neighbour.
struct Symbol {
  int prev = -1;
  int next = -1;
  uint32_t offset = 0;
  uint32_t length = 0;
};

// Length of the character at text[pos]: its UTF-8 sequence, or 1 for a byte that does not start
// a well-formed one.
size_t CharLength(std::string_view text, size_t pos) {
  size_t end = pos;
  char32_t cp;
  return DecodeUtf8(text, &end, &cp) ? end - pos : 1;
}

// Splits `text` into one symbol per UTF-8 character (invalid bytes are single symbols).
std::vector<Symbol> MakeSymbols(std::string_view text) {
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  size_t offset = 0;
  while (offset < text.size()) {
    const size_t n = CharLength(text, offset);
    Symbol s;
    s.prev = static_cast<int>(symbols.size()) - 1;
    s.next = offset + n < text.size() ? static_cast<int>(symbols.size()) + 1 : -1;
    s.offset = static_cast<uint32_t>(offset);
    s.length = static_cast<uint32_t>(n);
    symbols.push_back(s);
    offset += n;
  }
  return symbols;
}

std::string_view SymbolText(std::string_view text, const Symbol& s) {
  return text.substr(s.offset, s.length);
}

// A candidate merge of symbols `left` and `left`'s next. `size` is the merged length at the time
// the candidate was made; a candidate whose sides changed since is stale.
struct SpmBigram {
  float score;
  int left;
  int right;
  uint32_t size;
};
struct SpmBigramWorse {
  bool operator()(const SpmBigram& a, const SpmBigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

struct BpeBigram {
  int32_t rank;
  int left;
  int right;
  uint32_t size;
};
struct BpeBigramWorse {
  bool operator()(const BpeBigram& a, const BpeBigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

// Appends `text` with U+2581 turned back into spaces.
void AppendUnescapedSpm(std::string_view text, std::string* out) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t hit = text.find(kSpmSpace, pos);
    if (hit == std::string_view::npos) {
      out->append(text.substr(pos));
      break;
    }
    out->append(text.substr(pos, hit - pos));
    out->push_back(' ');
    pos = hit + kSpmSpace.size();
  }
}

// The byte of an SPM byte token "<0xNN>", or -1.
int ParseByteToken(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int value = 0;
  for (char c : text.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9') {
      value |= c - '0';
    } else if (c >= 'A' && c <= 'F') {
      value |= c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      value |= c - 'a' + 10;
    } else {
      return -1;
    }
  }
  return value;
}

// llama.cpp's detokenizer clean-up: " ?" " !" " ." " ," lose the space; " ' " becomes "'";
// " 's" " 'm" " 're" " 've" lose the space.
std::string CleanSpaces(const std::string& in) {
  std::string a;  // pass 1; pass 2 marks consumed spaces in it
  a.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (!a.empty() && a.back() == ' ' && i > 0 && (c == '?' || c == '!' || c == '.' || c == ',')) {
      a.pop_back();
    }
    a.push_back(c);
  }
  std::string b;
  b.reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const char c = a[i];
    if (c == '\'' && i > 0 && i + 1 < a.size() && a[i - 1] == ' ' && a[i + 1] == ' ') {
      b.pop_back();  // the space before
      b.push_back(c);
      a[++i] = '\0';  // the space after: dropped, and no longer a space for the next check
      continue;
    }
    b.push_back(c);
  }
  std::string out;
  out.reserve(b.size());
  for (size_t i = 0; i < b.size(); ++i) {
    const char c = b[i];
    if (c == '\'' && i > 0 && b[i - 1] == ' ' && i + 1 < b.size() && !out.empty()) {
      const char c1 = b[i + 1];
      const char c2 = i + 2 < b.size() ? b[i + 2] : '\0';
      if (c1 == 's' || c1 == 'm' || (c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e')) {
        out.pop_back();
      }
    }
    out.push_back(c);
  }
  return out;
}

// BERT's "Chinese character" blocks (CJK ideographs), as in the original BERT tokenizer.
bool IsCjkIdeograph(UChar32 c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// WordPiece pre-processing: NFD, drop controls and accents, lowercase, split on whitespace, and
// make every punctuation character, ASCII symbol and CJK ideograph a word of its own.
std::vector<std::string> WpmWords(std::string_view text) {
  std::vector<std::string> words(1);
  UErrorCode error = U_ZERO_ERROR;
  const icu::Normalizer2* nfd = icu::Normalizer2::getNFDInstance(error);
  icu::UnicodeString normalized;
  const icu::UnicodeString input = icu::UnicodeString::fromUTF8(
      icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  if (nfd != nullptr && U_SUCCESS(error)) {
    normalized = nfd->normalize(input, error);
  }
  if (U_FAILURE(error)) normalized = input;

  for (int32_t i = 0; i < normalized.length();) {
    const UChar32 c = normalized.char32At(i);
    i += U16_LENGTH(c);
    if (u_isUWhiteSpace(c)) {
      if (!words.back().empty()) words.emplace_back();
      continue;
    }
    const int8_t category = u_charType(c);
    const bool is_other = category == U_CONTROL_CHAR || category == U_FORMAT_CHAR ||
                          category == U_PRIVATE_USE_CHAR || category == U_SURROGATE ||
                          category == U_UNASSIGNED;
    // Controls go; so do nonspacing marks, which strips accents after NFD (BERT's lowercasing).
    if (c == 0 || c == 0xFFFD || is_other || category == U_NON_SPACING_MARK) continue;
    const uint32_t mask = U_GET_GC_MASK(c);
    const bool is_punct = (mask & U_GC_P_MASK) != 0;
    const bool is_symbol = (mask & U_GC_S_MASK) != 0;
    std::string s;
    AppendUtf8(static_cast<char32_t>(u_tolower(c)), &s);
    if (is_punct || (c < 0x7F && is_symbol) || IsCjkIdeograph(c)) {
      if (!words.back().empty()) words.emplace_back();
      words.back() = std::move(s);
      words.emplace_back();
    } else {
      words.back() += s;
    }
  }
  if (words.back().empty()) words.pop_back();
  return words;
}

// The merge loop shared by SentencePiece and BPE: pops the best bigram (the queue's order
// decides: highest score or lowest rank), skips it if a side has changed since it was queued,
// merges the right symbol into the left and offers the two new neighbour pairs to try_add.
template <typename Queue, typename TryAdd>
void RunMerges(std::vector<Symbol>& symbols, Queue& queue, const TryAdd& try_add) {
  while (!queue.empty()) {
    const auto b = queue.top();
    queue.pop();
    Symbol& l = symbols[b.left];
    Symbol& r = symbols[b.right];
    if (l.length == 0 || r.length == 0 || l.length + r.length != b.size) continue;  // stale
    l.length += r.length;
    r.length = 0;
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
}

}  // namespace

Tokenizer::Tokenizer(Vocab vocab) : vocab_(std::move(vocab)) {}
Tokenizer::~Tokenizer() = default;

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(Vocab vocab) {
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer(std::move(vocab)));
  for (int32_t id = 0; id < tokenizer->vocab_.size(); ++id) {
    tokenizer->longest_piece_ = std::max(tokenizer->longest_piece_,
                                         tokenizer->vocab_.text(id).size());
  }
  if (tokenizer->vocab_.type() == VocabType::kBpe) {
    FERRY_ASSIGN_OR_RETURN(
        tokenizer->splitter_,
        RegexSplitter::Create(PreTokenizerPatterns(tokenizer->vocab_.pre_tokenizer())));
  }
  return tokenizer;
}

std::vector<Tokenizer::Fragment> Tokenizer::PartitionSpecial(std::string_view text,
                                                             bool parse_special) const {
  std::vector<Fragment> fragments;
  if (text.empty()) return fragments;
  fragments.push_back({kNoToken, 0, text.size()});
  std::vector<Fragment> next;
  for (int32_t id : vocab_.special_token_ids()) {
    const TokenType type = vocab_.type(id);
    if (!parse_special && (type == TokenType::kControl || type == TokenType::kUnknown)) continue;
    const std::string_view special = vocab_.text(id);
    bool found = false;
    next.clear();
    for (const Fragment& f : fragments) {
      if (f.token != kNoToken || f.length < special.size()) {
        next.push_back(f);
        continue;
      }
      const std::string_view raw = text.substr(f.offset, f.length);
      size_t pos = 0;
      while (true) {
        const size_t hit = raw.find(special, pos);
        if (hit == std::string_view::npos) break;
        found = true;
        if (hit > pos) next.push_back({kNoToken, f.offset + pos, hit - pos});
        next.push_back({id, f.offset + hit, special.size()});
        pos = hit + special.size();
      }
      if (pos < raw.size()) next.push_back({kNoToken, f.offset + pos, raw.size() - pos});
    }
    if (found) fragments.swap(next);
  }
  return fragments;
}

int64_t Tokenizer::MinTokens(size_t bytes) const {
  if (vocab_.type() == VocabType::kWpm) return 0;
  return static_cast<int64_t>(bytes / longest_piece_);
}

StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, bool add_special,
                                                 bool parse_special, int64_t max_tokens) const {
  auto too_many = [&](int64_t at_least) {
    return OutOfRangeError("the text ({} bytes) is at least {} tokens, more than the limit of {}",
                           text.size(), at_least, max_tokens);
  };
  if (max_tokens >= 0 && MinTokens(text.size()) > max_tokens) {
    return too_many(MinTokens(text.size()));
  }
  std::vector<int32_t> out;
  const std::vector<Fragment> fragments = PartitionSpecial(text, parse_special);
  const VocabType type = vocab_.type();
  if (add_special && vocab_.add_bos() && vocab_.bos() != kNoToken) out.push_back(vocab_.bos());

  bool prev_special = true;  // SPM: the first raw fragment gets the space prefix
  for (const Fragment& f : fragments) {
    if (f.token != kNoToken) {
      out.push_back(f.token);
      prev_special = true;
      continue;
    }
    const std::string_view raw = text.substr(f.offset, f.length);
    switch (type) {
      case VocabType::kSpm:
        EncodeSpm(raw, vocab_.add_space_prefix() && prev_special, &out);
        break;
      case VocabType::kBpe:
        FERRY_RETURN_IF_ERROR(EncodeBpe(raw, &out));
        break;
      case VocabType::kWpm:
        EncodeWpm(raw, &out);
        break;
    }
    prev_special = false;
    if (max_tokens >= 0 && static_cast<int64_t>(out.size()) > max_tokens) {
      return too_many(static_cast<int64_t>(out.size()));
    }
  }

  if (add_special) {
    if (type == VocabType::kWpm) {
      if (vocab_.add_sep() && vocab_.sep() != kNoToken) out.push_back(vocab_.sep());
    } else if (vocab_.add_eos() && vocab_.eos() != kNoToken) {
      out.push_back(vocab_.eos());
    }
  }
  return out;
}

void Tokenizer::EncodeSpm(std::string_view fragment, bool add_prefix,
                          std::vector<int32_t>* out) const {
  std::string text;
  text.reserve((fragment.size() + 1) * 3);
  if (add_prefix) text.append(kSpmSpace);
  for (char c : fragment) {
    if (c == ' ') {
      text.append(kSpmSpace);
    } else {
      text.push_back(c);
    }
  }
  if (text.empty()) return;

  std::vector<Symbol> symbols = MakeSymbols(text);
  std::priority_queue<SpmBigram, std::vector<SpmBigram>, SpmBigramWorse> queue;
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[left];
    const Symbol& r = symbols[right];
    const std::string_view merged = std::string_view(text).substr(l.offset, l.length + r.length);
    const int32_t id = vocab_.Find(merged);
    if (id == kNoToken) return;
    queue.push({vocab_.score(id), left, right, l.length + r.length});
  };
  for (size_t i = 1; i < symbols.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));

  RunMerges(symbols, queue, try_add);

  for (int i = 0; i >= 0 && i < static_cast<int>(symbols.size()); i = symbols[i].next) {
    const std::string_view piece = SymbolText(text, symbols[i]);
    const int32_t id = vocab_.Find(piece);
    if (id != kNoToken) {
      out->push_back(id);
      continue;
    }
    for (char c : piece) {
      const int32_t byte_id = vocab_.ByteToken(static_cast<uint8_t>(c));
      if (byte_id != kNoToken) {
        out->push_back(byte_id);
      } else if (vocab_.unk() != kNoToken) {
        out->push_back(vocab_.unk());
      }
    }
  }
}

Status Tokenizer::EncodeBpe(std::string_view fragment, std::vector<int32_t>* out) const {
  std::string sanitized;
  if (FindInvalidUtf8(fragment) != std::string_view::npos) {
    sanitized = SanitizeUtf8(fragment);
    fragment = sanitized;
  }
  FERRY_ASSIGN_OR_RETURN(std::vector<TextSpan> chunks, splitter_->Split(fragment));
  std::string word;
  for (const TextSpan& chunk : chunks) {
    word.clear();
    for (char c : fragment.substr(chunk.offset, chunk.length)) {
      word.append(ByteToUnicode(static_cast<uint8_t>(c)));
    }
    EncodeBpeWord(word, out);
  }
  return Status::Ok();
}

void Tokenizer::EncodeBpeWord(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (vocab_.ignore_merges()) {
    const int32_t id = vocab_.Find(word);
    if (id != kNoToken) {
      out->push_back(id);
      return;
    }
  }
  std::vector<Symbol> symbols = MakeSymbols(word);
  std::priority_queue<BpeBigram, std::vector<BpeBigram>, BpeBigramWorse> queue;
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[left];
    const Symbol& r = symbols[right];
    const int32_t rank = vocab_.MergeRank(SymbolText(word, l), SymbolText(word, r));
    if (rank < 0) return;
    queue.push({rank, left, right, l.length + r.length});
  };
  for (size_t i = 1; i < symbols.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));

  RunMerges(symbols, queue, try_add);

  for (int i = 0; i >= 0 && i < static_cast<int>(symbols.size()); i = symbols[i].next) {
    const std::string_view piece = SymbolText(word, symbols[i]);
    const int32_t id = vocab_.Find(piece);
    if (id != kNoToken) {
      out->push_back(id);
      continue;
    }
    // Not a token: keep the characters that are tokens, drop the rest.
    size_t pos = 0;
    while (pos < piece.size()) {
      const size_t n = CharLength(piece, pos);
      const int32_t char_id = vocab_.Find(piece.substr(pos, n));
      if (char_id != kNoToken) out->push_back(char_id);
      pos += n;
    }
  }
}

void Tokenizer::EncodeWpm(std::string_view fragment, std::vector<int32_t>* out) const {
  std::string sanitized;
  if (FindInvalidUtf8(fragment) != std::string_view::npos) {
    sanitized = SanitizeUtf8(fragment);
    fragment = sanitized;
  }
  const size_t max_len = vocab_.max_token_length();
  for (const std::string& w : WpmWords(fragment)) {
    const std::string word = std::string(kSpmSpace) + w;  // word-initial pieces carry U+2581
    const size_t n = word.size();
    const size_t first = out->size();
    for (size_t i = 0; i < n;) {
      bool matched = false;
      for (size_t j = std::min(n, i + max_len); j > i; --j) {
        const int32_t id = vocab_.Find(std::string_view(word).substr(i, j - i));
        if (id != kNoToken) {
          out->push_back(id);
          matched = true;
          i = j;
          break;
        }
      }
      if (!matched) {
        out->resize(first);
        break;
      }
    }
    if (out->size() == first && vocab_.unk() != kNoToken) out->push_back(vocab_.unk());
  }
}

std::string Tokenizer::TokenToPiece(int32_t id, bool show_special) const {
  std::string out;
  if (!vocab_.IsValid(id)) return out;
  const TokenType type = vocab_.type(id);
  const std::string_view text = vocab_.text(id);
  switch (type) {
    case TokenType::kControl:
    case TokenType::kUnknown:
      if (show_special) out = text;
      return out;
    case TokenType::kUserDefined:
      return std::string(text);
    case TokenType::kUnused:
    case TokenType::kUndefined:
      return out;
    case TokenType::kByte:
    case TokenType::kNormal:
      break;
  }
  switch (vocab_.type()) {
    case VocabType::kSpm:
    case VocabType::kWpm:
      if (type == TokenType::kByte) {
        const int byte = ParseByteToken(text);
        if (byte >= 0) out.push_back(static_cast<char>(byte));
      } else {
        AppendUnescapedSpm(text, &out);
      }
      break;
    case VocabType::kBpe: {
      size_t pos = 0;
      while (pos < text.size()) {
        const size_t start = pos;
        char32_t cp;
        if (DecodeUtf8(text, &pos, &cp)) {
          const int byte = UnicodeToByte(cp);
          if (byte >= 0) {
            out.push_back(static_cast<char>(byte));
          } else {
            out.append(text.substr(start, pos - start));  // not from the byte map: keep as is
          }
        } else {
          out.push_back(text[pos++]);
        }
      }
      break;
    }
  }
  return out;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool show_special) const {
  std::string out;
  // The space that SPM's add_space_prefix (or WordPiece's word-initial U+2581) put in front.
  bool strip_space = vocab_.add_space_prefix() || vocab_.type() == VocabType::kWpm;
  for (int32_t id : ids) {
    std::string piece = TokenToPiece(id, show_special);
    if (piece.empty()) continue;
    if (strip_space && piece[0] == ' ') piece.erase(0, 1);
    strip_space = false;
    out += piece;
  }
  if (vocab_.clean_spaces()) out = CleanSpaces(out);
  return out;
}

}  // namespace ferry::tokenizer
