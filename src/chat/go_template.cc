#include "chat/go_template.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <utility>

#include "tokenizer/utf8.h"

namespace ferry::chat {
namespace go_template_internal {

// Static types, known while parsing, and the kinds of run-time values.
enum class Type {
  kAny,  // not known statically
  kNil,  // the nil literal
  kBool,
  kInt,
  kString,
  kRoot,        // the template data ($)
  kMessages,    // .Messages or a slice of it
  kMessage,     // one element of .Messages
  kOpaqueList,  // .Tools: always empty in ferry
  kOpaque,      // an element of an opaque list: never exists while rendering
};

std::string_view TypeName(Type t) {
  switch (t) {
    case Type::kAny:
      return "unknown";
    case Type::kNil:
      return "nil";
    case Type::kBool:
      return "bool";
    case Type::kInt:
      return "int";
    case Type::kString:
      return "string";
    case Type::kRoot:
      return "the template data";
    case Type::kMessages:
      return "list of messages";
    case Type::kMessage:
      return "message";
    case Type::kOpaqueList:
      return "list of tools";
    case Type::kOpaque:
      return "tool";
  }
  return "?";
}

enum class Field {
  kSystem,
  kPrompt,
  kResponse,
  kSuffix,
  kMessages,
  kTools,
  kRole,
  kContent,
  kOpaque
};

enum class Func { kEq, kNe, kLt, kLe, kGt, kGe, kAnd, kOr, kNot, kLen, kIndex, kSlice, kJson };

struct FuncInfo {
  std::string_view name;
  Func func;
  int min_args;
  int max_args;  // -1: no limit
};
constexpr FuncInfo kFuncs[] = {
    {"eq", Func::kEq, 2, -1},    {"ne", Func::kNe, 2, 2},        {"lt", Func::kLt, 2, 2},
    {"le", Func::kLe, 2, 2},     {"gt", Func::kGt, 2, 2},        {"ge", Func::kGe, 2, 2},
    {"and", Func::kAnd, 1, -1},  {"or", Func::kOr, 1, -1},       {"not", Func::kNot, 1, 1},
    {"len", Func::kLen, 1, 1},   {"index", Func::kIndex, 1, -1}, {"slice", Func::kSlice, 1, 4},
    {"json", Func::kJson, 1, 1},
};
const FuncInfo* FindFunc(std::string_view name) {
  for (const FuncInfo& f : kFuncs) {
    if (f.name == name) return &f;
  }
  return nullptr;
}
std::string_view FuncName(Func func) {
  for (const FuncInfo& f : kFuncs) {
    if (f.func == func) return f.name;
  }
  return "?";
}

struct FieldRef {
  Field field;
  std::string name;
};

struct Pipe;

// One operand: a term with an optional field chain.
struct Arg {
  enum class Kind { kDot, kVariable, kString, kInt, kBool, kNil, kPipe };
  Kind kind = Kind::kDot;
  size_t pos = 0;
  int slot = 0;     // kVariable
  std::string str;  // kString
  int64_t num = 0;  // kInt
  bool boolean = false;
  std::shared_ptr<const Pipe> pipe;  // kPipe: a parenthesised pipeline
  std::vector<FieldRef> fields;      // applied to the term's value
};

struct Command {
  size_t pos = 0;
  bool is_call = false;
  Func func = Func::kEq;
  std::vector<Arg> args;  // a call's arguments, or the one operand
};

struct Pipe {
  size_t pos = 0;
  std::vector<int> decl;  // variable slots declared (:=) or assigned (=)
  std::vector<Command> cmds;
};

struct Node {
  enum class Kind { kText, kAction, kIf, kRange, kWith };
  Kind kind = Kind::kText;
  size_t pos = 0;
  std::string text;
  Pipe pipe;
  std::vector<Node> list;
  std::vector<Node> else_list;  // {{ else if }} is an if node alone in else_list, as in Go
};

struct Tree {
  std::string text;
  std::vector<Node> root;
  int num_slots = 1;  // slot 0 is $
  bool uses_messages = false;
  bool uses_suffix = false;
  bool uses_response = false;
};

namespace {

size_t LineOf(std::string_view text, size_t pos) {
  pos = std::min(pos, text.size());
  return 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + pos, '\n'));
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlnum(char c) { return IsAlpha(c) || IsDigit(c); }

std::string_view TrimLeftSpace(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  return s;
}
std::string_view TrimRightSpace(std::string_view s) {
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  tokenizer::AppendUtf8(static_cast<char32_t>(cp), out);
}

// ---------------------------------------------------------------------------------------------
// Lexer: the whole template into tokens; trimming and comments are done here, as in Go.

enum class Tok {
  kText,
  kLeft,
  kRight,
  kIdent,
  kField,
  kDot,
  kVariable,
  kString,
  kNumber,
  kLParen,
  kRParen,
  kPipe,
  kDeclare,
  kAssign,
  kComma,
  kEof,
};

struct Token {
  Tok tok;
  size_t pos;
  std::string text;  // text, identifier, field or variable name (with $), decoded string
  int64_t num = 0;
  bool space_before = false;
};

std::string Describe(const Token& t) {
  switch (t.tok) {
    case Tok::kText:
      return "text";
    case Tok::kLeft:
      return "\"{{\"";
    case Tok::kRight:
      return "\"}}\"";
    case Tok::kIdent:
      return fmt::format("\"{}\"", t.text);
    case Tok::kField:
      return fmt::format("field \".{}\"", t.text);
    case Tok::kDot:
      return "\".\"";
    case Tok::kVariable:
      return fmt::format("variable \"{}\"", t.text);
    case Tok::kString:
      return "string";
    case Tok::kNumber:
      return fmt::format("number {}", t.num);
    case Tok::kLParen:
      return "\"(\"";
    case Tok::kRParen:
      return "\")\"";
    case Tok::kPipe:
      return "\"|\"";
    case Tok::kDeclare:
      return "\":=\"";
    case Tok::kAssign:
      return "\"=\"";
    case Tok::kComma:
      return "\",\"";
    case Tok::kEof:
      return "end of template";
  }
  return "?";
}

class Lexer {
 public:
  explicit Lexer(std::string_view s) : s_(s) {}

  Status Run(std::vector<Token>* out) {
    out_ = out;
    size_t i = 0;
    bool trim_next = false;
    while (i <= s_.size()) {
      size_t open = s_.find("{{", i);
      size_t text_end = open == std::string_view::npos ? s_.size() : open;
      std::string_view text = s_.substr(i, text_end - i);
      size_t text_pos = i;
      if (trim_next) {
        std::string_view t = TrimLeftSpace(text);
        text_pos += text.size() - t.size();
        text = t;
      }
      bool left_trim = open != std::string_view::npos && open + 3 < s_.size() &&
                       s_[open + 2] == '-' && IsSpace(s_[open + 3]);
      if (left_trim) text = TrimRightSpace(text);
      if (!text.empty()) Emit(Tok::kText, text_pos, std::string(text));
      if (open == std::string_view::npos) break;
      trim_next = false;
      size_t p = open + 2 + (left_trim ? 2 : 0);
      if (s_.substr(p).starts_with("/*")) {
        size_t close = s_.find("*/", p + 2);
        if (close == std::string_view::npos) return Error(open, "unclosed comment");
        size_t q = close + 2;
        if (s_.substr(q).starts_with("}}")) {
          i = q + 2;
        } else if (q + 3 < s_.size() && IsSpace(s_[q]) && s_.substr(q + 1).starts_with("-}}")) {
          i = q + 4;
          trim_next = true;
        } else {
          return Error(open, "comment ends before closing delimiter");
        }
        continue;
      }
      Emit(Tok::kLeft, open, "");
      FERRY_ASSIGN_OR_RETURN(size_t end, LexAction(open, p, &trim_next));
      i = end;
    }
    Emit(Tok::kEof, s_.size(), "");
    return Status::Ok();
  }

 private:
  template <typename... Args>
  Status Error(size_t pos, fmt::format_string<Args...> f, Args&&... args) {
    return InvalidArgumentError("template: line {}, byte {}: {}", LineOf(s_, pos), pos,
                                fmt::format(f, std::forward<Args>(args)...));
  }

  void Emit(Tok tok, size_t pos, std::string text, int64_t num = 0) {
    out_->push_back(Token{tok, pos, std::move(text), num, space_});
    space_ = false;
  }

  // Go's atTerminator: what may follow an identifier, field, variable or number.
  bool AtTerminator(size_t p) const {
    if (p >= s_.size()) return true;
    char c = s_[p];
    if (IsSpace(c) || c == '.' || c == ',' || c == '|' || c == ':' || c == ')' || c == '(') {
      return true;
    }
    return s_.substr(p).starts_with("}}");
  }

  // Lexes the inside of the action opened at `open` from `p`; returns the offset after "}}".
  StatusOr<size_t> LexAction(size_t open, size_t p, bool* trim_next) {
    space_ = true;
    while (true) {
      if (p >= s_.size()) return Error(open, "unclosed action (no \"}}\")");
      char c = s_[p];
      if (IsSpace(c)) {
        if (s_.substr(p + 1).starts_with("-}}")) {
          Emit(Tok::kRight, p, "");
          *trim_next = true;
          return p + 4;
        }
        space_ = true;
        ++p;
        continue;
      }
      if (s_.substr(p).starts_with("}}")) {
        Emit(Tok::kRight, p, "");
        return p + 2;
      }
      size_t start = p;
      switch (c) {
        case '(':
          Emit(Tok::kLParen, p++, "");
          continue;
        case ')':
          Emit(Tok::kRParen, p++, "");
          continue;
        case '|':
          Emit(Tok::kPipe, p++, "");
          continue;
        case ',':
          Emit(Tok::kComma, p++, "");
          continue;
        case '=':
          Emit(Tok::kAssign, p++, "");
          continue;
        case ':':
          if (p + 1 < s_.size() && s_[p + 1] == '=') {
            Emit(Tok::kDeclare, p, "");
            p += 2;
            continue;
          }
          return Error(p, "expected :=");
        case '"': {
          std::string value;
          FERRY_ASSIGN_OR_RETURN(p, LexQuote(p, &value));
          Emit(Tok::kString, start, std::move(value));
          continue;
        }
        case '`': {
          size_t close = s_.find('`', p + 1);
          if (close == std::string_view::npos) return Error(p, "unterminated raw quoted string");
          Emit(Tok::kString, start, std::string(s_.substr(p + 1, close - p - 1)));
          p = close + 1;
          continue;
        }
        case '\'':
          return Error(p, "character constants are not supported");
        case '$': {
          ++p;
          while (p < s_.size() && IsAlnum(s_[p])) ++p;
          if (!AtTerminator(p)) return Error(p, "bad character {:?} after variable", s_[p]);
          Emit(Tok::kVariable, start, std::string(s_.substr(start, p - start)));
          continue;
        }
        case '.': {
          if (p + 1 < s_.size() && IsDigit(s_[p + 1])) {
            return Error(p, "floating-point numbers are not supported");
          }
          if (p + 1 < s_.size() && IsAlpha(s_[p + 1])) {
            ++p;
            while (p < s_.size() && IsAlnum(s_[p])) ++p;
            if (!AtTerminator(p)) return Error(p, "bad character {:?} after field", s_[p]);
            Emit(Tok::kField, start, std::string(s_.substr(start + 1, p - start - 1)));
            continue;
          }
          ++p;
          if (!AtTerminator(p)) return Error(p, "bad character {:?} after \".\"", s_[p]);
          Emit(Tok::kDot, start, "");
          continue;
        }
        default:
          break;
      }
      if (IsDigit(c) || ((c == '-' || c == '+') && p + 1 < s_.size() && IsDigit(s_[p + 1]))) {
        ++p;
        while (p < s_.size() && (IsAlnum(s_[p]) || s_[p] == '.')) ++p;
        FERRY_ASSIGN_OR_RETURN(int64_t num, ParseNumber(start, s_.substr(start, p - start)));
        if (!AtTerminator(p)) return Error(p, "bad character {:?} after number", s_[p]);
        Emit(Tok::kNumber, start, "", num);
        continue;
      }
      if (IsAlpha(c)) {
        while (p < s_.size() && IsAlnum(s_[p])) ++p;
        if (!AtTerminator(p)) return Error(p, "bad character {:?} after identifier", s_[p]);
        Emit(Tok::kIdent, start, std::string(s_.substr(start, p - start)));
        continue;
      }
      return Error(p, "unexpected character {:?} in action", c);
    }
  }

  StatusOr<int64_t> ParseNumber(size_t pos, std::string_view text) {
    bool negative = false;
    std::string_view digits = text;
    if (digits.front() == '-' || digits.front() == '+') {
      negative = digits.front() == '-';
      digits.remove_prefix(1);
    }
    int base = 10;
    if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
      base = 16;
      digits.remove_prefix(2);
    } else if (digits.find_first_of(".eEpi") != std::string_view::npos) {
      return Error(pos, "only integer numbers are supported, not {:?}", text);
    }
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
    if (ec != std::errc() || end != digits.data() + digits.size() ||
        value > static_cast<uint64_t>(INT64_MAX)) {
      return Error(pos, "bad number syntax: {:?}", text);
    }
    return negative ? -static_cast<int64_t>(value) : static_cast<int64_t>(value);
  }

  // A "..." string with Go's escapes; returns the offset after the closing quote.
  StatusOr<size_t> LexQuote(size_t p, std::string* value) {
    size_t start = p++;
    auto hex = [&](size_t at, int n, uint32_t* cp) -> bool {
      if (at + n > s_.size()) return false;
      uint32_t v = 0;
      for (int k = 0; k < n; ++k) {
        char h = s_[at + k];
        int d = IsDigit(h)               ? h - '0'
                : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                         : -1;
        if (d < 0) return false;
        v = v * 16 + static_cast<uint32_t>(d);
      }
      *cp = v;
      return true;
    };
    while (true) {
      if (p >= s_.size() || s_[p] == '\n') return Error(start, "unterminated quoted string");
      char c = s_[p];
      if (c == '"') return p + 1;
      if (c != '\\') {
        value->push_back(c);
        ++p;
        continue;
      }
      if (p + 1 >= s_.size()) return Error(start, "unterminated quoted string");
      char e = s_[p + 1];
      p += 2;
      uint32_t cp = 0;
      switch (e) {
        case 'a':
          value->push_back('\a');
          break;
        case 'b':
          value->push_back('\b');
          break;
        case 'f':
          value->push_back('\f');
          break;
        case 'n':
          value->push_back('\n');
          break;
        case 'r':
          value->push_back('\r');
          break;
        case 't':
          value->push_back('\t');
          break;
        case 'v':
          value->push_back('\v');
          break;
        case '\\':
          value->push_back('\\');
          break;
        case '"':
          value->push_back('"');
          break;
        case 'x':
          if (!hex(p, 2, &cp)) return Error(p - 2, "bad \\x escape in string");
          value->push_back(static_cast<char>(cp));
          p += 2;
          break;
        case 'u':
        case 'U': {
          int n = e == 'u' ? 4 : 8;
          if (!hex(p, n, &cp) || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) {
            return Error(p - 2, "bad \\{} escape in string", e);
          }
          AppendUtf8(cp, value);
          p += n;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            if (p + 1 >= s_.size() || s_[p] < '0' || s_[p] > '7' || s_[p + 1] < '0' ||
                s_[p + 1] > '7') {
              return Error(p - 2, "bad octal escape in string");
            }
            cp = static_cast<uint32_t>((e - '0') * 64 + (s_[p] - '0') * 8 + (s_[p + 1] - '0'));
            if (cp > 255) return Error(p - 2, "bad octal escape in string");
            value->push_back(static_cast<char>(cp));
            p += 2;
            break;
          }
          return Error(p - 2, "unknown escape sequence \\{} in string", e);
      }
    }
  }

  std::string_view s_;
  std::vector<Token>* out_ = nullptr;
  bool space_ = false;
};

// ---------------------------------------------------------------------------------------------
// Parser: tokens into the tree, with variables resolved to slots and field accesses checked
// against the schema.

constexpr std::string_view kRootFieldsHelp =
    ".System, .Prompt, .Response, .Suffix, .Messages and .Tools";

class Parser {
 public:
  Parser(std::string_view text, std::vector<Token> tokens, Tree* tree)
      : text_(text), toks_(std::move(tokens)), tree_(tree) {
    vars_.push_back(Var{"$", 0, Type::kRoot});
  }

  Status Run() {
    FERRY_ASSIGN_OR_RETURN(Terminator term, ParseList(Type::kRoot, &tree_->root));
    switch (term.end) {
      case End::kEof:
        return Status::Ok();
      case End::kEnd:
        return Error(term.pos, "unexpected {{{{ end }}}}");
      default:
        return Error(term.pos, "unexpected {{{{ else }}}}");
    }
  }

 private:
  struct Var {
    std::string name;
    int slot;
    Type type;
  };
  enum class End { kEof, kEnd, kElse, kElseIf, kElseWith };
  struct Terminator {
    End end;
    size_t pos;
  };

  template <typename... Args>
  Status Error(size_t pos, fmt::format_string<Args...> f, Args&&... args) const {
    return InvalidArgumentError("template: line {}, byte {}: {}", LineOf(text_, pos), pos,
                                fmt::format(f, std::forward<Args>(args)...));
  }

  const Token& Peek(size_t ahead = 0) const {
    return toks_[std::min(next_ + ahead, toks_.size() - 1)];
  }
  const Token& Next() {
    const Token& t = toks_[next_];
    if (next_ + 1 < toks_.size()) ++next_;
    return t;
  }
  Status Expect(Tok tok, std::string_view context) {
    const Token& t = Next();
    if (t.tok != tok) {
      return Error(t.pos, "unexpected {} in {}", Describe(t), context);
    }
    return Status::Ok();
  }

  StatusOr<Terminator> ParseList(Type dot, std::vector<Node>* list) {
    while (true) {
      const Token& t = Next();
      if (t.tok == Tok::kEof) return Terminator{End::kEof, t.pos};
      if (t.tok == Tok::kText) {
        Node node;
        node.kind = Node::Kind::kText;
        node.pos = t.pos;
        node.text = t.text;
        list->push_back(std::move(node));
        continue;
      }
      // t is "{{".
      size_t open = t.pos;
      const Token& k = Peek();
      if (k.tok == Tok::kIdent) {
        if (k.text == "end") {
          Next();
          FERRY_RETURN_IF_ERROR(Expect(Tok::kRight, "end"));
          return Terminator{End::kEnd, open};
        }
        if (k.text == "else") {
          Next();
          const Token& after = Peek();
          if (after.tok == Tok::kIdent && (after.text == "if" || after.text == "with")) {
            Next();
            return Terminator{after.text == "if" ? End::kElseIf : End::kElseWith, open};
          }
          FERRY_RETURN_IF_ERROR(Expect(Tok::kRight, "else"));
          return Terminator{End::kElse, open};
        }
        if (k.text == "if" || k.text == "range" || k.text == "with") {
          Node::Kind kind = k.text == "if"      ? Node::Kind::kIf
                            : k.text == "range" ? Node::Kind::kRange
                                                : Node::Kind::kWith;
          Next();
          Node node;
          FERRY_RETURN_IF_ERROR(ParseControl(kind, open, dot, &node));
          list->push_back(std::move(node));
          continue;
        }
        if (k.text == "define" || k.text == "template" || k.text == "block" || k.text == "break" ||
            k.text == "continue") {
          return Error(k.pos, "{{{{ {} }}}} is not supported", k.text);
        }
      }
      Node node;
      node.kind = Node::Kind::kAction;
      node.pos = open;
      Type type;
      FERRY_RETURN_IF_ERROR(ParsePipeline("command", dot, Tok::kRight, &node.pipe, &type));
      list->push_back(std::move(node));
    }
  }

  static std::string_view KindName(Node::Kind kind) {
    switch (kind) {
      case Node::Kind::kIf:
        return "if";
      case Node::Kind::kRange:
        return "range";
      case Node::Kind::kWith:
        return "with";
      default:
        return "?";
    }
  }

  // After the keyword: the pipeline, "}}", the lists and the {{ end }}.
  Status ParseControl(Node::Kind kind, size_t open, Type dot, Node* node) {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxDepth) return Error(open, "nesting deeper than {} levels", kMaxDepth);
    size_t mark = vars_.size();
    node->kind = kind;
    node->pos = open;
    std::string_view name = KindName(kind);
    Type type;
    FERRY_RETURN_IF_ERROR(ParsePipeline(name, dot, Tok::kRight, &node->pipe, &type));
    Type body_dot = dot;
    if (kind == Node::Kind::kWith) body_dot = type;
    if (kind == Node::Kind::kRange) {
      FERRY_ASSIGN_OR_RETURN(body_dot, ElementType(type, node->pipe.pos));
      // The declared variables' types: [$index,] $element.
      const std::vector<int>& decl = node->pipe.decl;
      for (Var& v : vars_) {
        if (!decl.empty() && v.slot == decl.back()) v.type = body_dot;
        if (decl.size() == 2 && v.slot == decl[0]) v.type = Type::kInt;
      }
    }
    FERRY_ASSIGN_OR_RETURN(Terminator term, ParseList(body_dot, &node->list));
    if (term.end == End::kElseIf || term.end == End::kElseWith) {
      Node::Kind want = term.end == End::kElseIf ? Node::Kind::kIf : Node::Kind::kWith;
      if (kind != want) {
        return Error(term.pos, "{{{{ else {} }}}} inside {{{{ {} }}}}", KindName(want), name);
      }
      Node nested;
      FERRY_RETURN_IF_ERROR(ParseControl(want, term.pos, dot, &nested));
      node->else_list.push_back(std::move(nested));
      vars_.resize(mark);
      return Status::Ok();
    }
    if (term.end == End::kElse) {
      FERRY_ASSIGN_OR_RETURN(term, ParseList(dot, &node->else_list));
      if (term.end == End::kElse || term.end == End::kElseIf || term.end == End::kElseWith) {
        return Error(term.pos, "expected {{{{ end }}}}; found a second {{{{ else }}}}");
      }
    }
    if (term.end == End::kEof) {
      return Error(open, "unclosed {{{{ {} }}}} (no {{{{ end }}}})", name);
    }
    vars_.resize(mark);
    return Status::Ok();
  }

  StatusOr<Type> ElementType(Type list, size_t pos) const {
    switch (list) {
      case Type::kMessages:
        return Type::kMessage;
      case Type::kOpaqueList:
      case Type::kOpaque:
        return Type::kOpaque;
      case Type::kAny:
        return Type::kAny;
      default:
        return Error(pos, "range can't iterate over {}", TypeName(list));
    }
  }

  const Var* FindVar(std::string_view name) const {
    for (size_t k = vars_.size(); k-- > 0;) {
      if (vars_[k].name == name) return &vars_[k];
    }
    return nullptr;
  }

  // A pipeline up to `end` (consumed), with its declarations; *type is its static type.
  Status ParsePipeline(std::string_view context, Type dot, Tok end, Pipe* pipe, Type* type) {
    pipe->pos = Peek().pos;
    // Declarations: $x := ..., $x = ..., and in range $i, $m := ...
    std::vector<Token> decl;
    bool assign = false;
    if (end == Tok::kRight && Peek().tok == Tok::kVariable &&
        (Peek(1).tok == Tok::kDeclare || Peek(1).tok == Tok::kAssign ||
         Peek(1).tok == Tok::kComma)) {
      while (true) {
        const Token& v = Next();
        if (v.tok != Tok::kVariable)
          return Error(v.pos, "expected a variable; found {}", Describe(v));
        decl.push_back(v);
        const Token& op = Next();
        if (op.tok == Tok::kComma) {
          if (context != "range" || decl.size() >= 2) {
            return Error(op.pos, "too many declarations in {}", context);
          }
          continue;
        }
        if (op.tok != Tok::kDeclare && op.tok != Tok::kAssign) {
          return Error(op.pos, "unexpected {} in declaration", Describe(op));
        }
        assign = op.tok == Tok::kAssign;
        break;
      }
      for (const Token& v : decl) {
        if (v.text == "$") return Error(v.pos, "cannot declare or assign $");
      }
    }
    Type value = Type::kAny;
    while (true) {
      const Token& t = Peek();
      if (t.tok == end || t.tok == Tok::kEof || t.tok == Tok::kRight || t.tok == Tok::kRParen) {
        if (t.tok != end) return Error(t.pos, "unexpected {} in {}", Describe(t), context);
        if (pipe->cmds.empty()) return Error(t.pos, "missing value for {}", context);
        Next();
        break;
      }
      if (t.tok == Tok::kPipe) {
        if (pipe->cmds.empty()) return Error(t.pos, "missing command before \"|\"");
        Next();
        if (Peek().tok == end || Peek().tok == Tok::kPipe) {
          return Error(Peek().pos, "missing command after \"|\"");
        }
      } else if (!pipe->cmds.empty()) {
        return Error(t.pos, "unexpected {} in {}", Describe(t), context);
      }
      Command cmd;
      FERRY_ASSIGN_OR_RETURN(value, ParseCommand(dot, !pipe->cmds.empty(), value, &cmd));
      pipe->cmds.push_back(std::move(cmd));
    }
    *type = value;
    for (const Token& v : decl) {
      if (assign) {
        const Var* var = FindVar(v.text);
        if (var == nullptr) return Error(v.pos, "undefined variable {}", v.text);
        pipe->decl.push_back(var->slot);
        // The variable may now hold another type.
        for (Var& w : vars_) {
          if (w.slot == var->slot && w.type != value) w.type = Type::kAny;
        }
      } else {
        int slot = tree_->num_slots++;
        vars_.push_back(Var{v.text, slot, value});
        pipe->decl.push_back(slot);
      }
    }
    return Status::Ok();
  }

  // One command: a function call or a single operand. `piped`: the previous command's value
  // (static type `piped_type`) is passed as the last argument.
  StatusOr<Type> ParseCommand(Type dot, bool piped, Type piped_type, Command* cmd) {
    cmd->pos = Peek().pos;
    std::vector<Type> types;
    const FuncInfo* func = nullptr;
    bool first = true;
    while (true) {
      const Token& t = Peek();
      if (t.tok == Tok::kPipe || t.tok == Tok::kRight || t.tok == Tok::kRParen ||
          t.tok == Tok::kEof) {
        break;
      }
      if (!first && !t.space_before) return Error(t.pos, "missing space before {}", Describe(t));
      if (t.tok == Tok::kIdent && FindFunc(t.text) != nullptr) {
        if (!first) {
          return Error(t.pos,
                       "function {:?} used as an argument: it needs arguments; write ({} ...)",
                       t.text, t.text);
        }
        func = FindFunc(t.text);
        Next();
        first = false;
        continue;
      }
      Arg arg;
      FERRY_ASSIGN_OR_RETURN(Type type, ParseOperand(dot, &arg));
      cmd->args.push_back(std::move(arg));
      types.push_back(type);
      first = false;
    }
    if (func == nullptr) {
      if (cmd->args.empty()) return Error(cmd->pos, "missing value for command");
      if (piped || cmd->args.size() > 1) {
        return Error(cmd->pos, "can't give an argument to a non-function");
      }
      if (cmd->args[0].kind == Arg::Kind::kNil) return Error(cmd->pos, "nil is not a command");
      return types[0];
    }
    cmd->is_call = true;
    cmd->func = func->func;
    if (piped) types.push_back(piped_type);
    int n = static_cast<int>(types.size());
    if (n < func->min_args || (func->max_args >= 0 && n > func->max_args)) {
      if (func->max_args == func->min_args) {
        return Error(cmd->pos, "wrong number of args for {}: want {} got {}", func->name,
                     func->min_args, n);
      }
      return Error(cmd->pos, "wrong number of args for {}: want at least {} got {}", func->name,
                   func->min_args, n);
    }
    return CheckCall(*func, types, cmd->pos);
  }

  static bool IsBasic(Type t) { return t == Type::kBool || t == Type::kInt || t == Type::kString; }

  // Static checks of what is known; returns the result type.
  StatusOr<Type> CheckCall(const FuncInfo& func, const std::vector<Type>& types, size_t pos) {
    switch (func.func) {
      case Func::kEq:
      case Func::kNe:
      case Func::kLt:
      case Func::kLe:
      case Func::kGt:
      case Func::kGe:
        for (size_t k = 1; k < types.size(); ++k) {
          if (IsBasic(types[0]) && IsBasic(types[k]) && types[0] != types[k]) {
            return Error(pos, "incompatible types for comparison in {}: {} and {}", func.name,
                         TypeName(types[0]), TypeName(types[k]));
          }
        }
        if (func.func != Func::kEq && func.func != Func::kNe) {
          for (Type t : types) {
            if (t != Type::kAny && t != Type::kInt && t != Type::kString) {
              return Error(pos, "invalid type for comparison in {}: {}", func.name, TypeName(t));
            }
          }
        }
        return Type::kBool;
      case Func::kAnd:
      case Func::kOr: {
        for (Type t : types) {
          if (t != types[0]) return Type::kAny;
        }
        return types[0];
      }
      case Func::kNot:
        return Type::kBool;
      case Func::kLen:
        if (types[0] == Type::kBool || types[0] == Type::kInt || types[0] == Type::kRoot ||
            types[0] == Type::kMessage || types[0] == Type::kNil) {
          return Error(pos, "len of {}", TypeName(types[0]));
        }
        return Type::kInt;
      case Func::kIndex:
      case Func::kSlice: {
        for (size_t k = 1; k < types.size(); ++k) {
          if (types[k] != Type::kInt && types[k] != Type::kAny) {
            return Error(pos, "{}: index of type {}", func.name, TypeName(types[k]));
          }
        }
        Type item = types[0];
        if (item == Type::kBool || item == Type::kInt || item == Type::kRoot ||
            item == Type::kMessage || item == Type::kNil) {
          return Error(pos, "can't {} item of type {}", func.name, TypeName(item));
        }
        if (func.func == Func::kSlice) {
          if (item == Type::kString && types.size() == 4) {
            return Error(pos, "cannot 3-index slice a string");
          }
          return item;
        }
        // index: each index goes one level down.
        Type t = item;
        for (size_t k = 1; k < types.size(); ++k) {
          switch (t) {
            case Type::kMessages:
              t = Type::kMessage;
              break;
            case Type::kString:
              t = Type::kInt;
              break;
            case Type::kOpaqueList:
            case Type::kOpaque:
              t = Type::kOpaque;
              break;
            case Type::kAny:
              t = Type::kAny;
              break;
            default:
              return Error(pos, "can't index item of type {}", TypeName(t));
          }
        }
        return t;
      }
      case Func::kJson:
        return Type::kString;
    }
    return Type::kAny;
  }

  StatusOr<Type> FieldType(Type base, const std::string& name, size_t pos, Field* field) {
    struct Known {
      std::string_view name;
      Field field;
      Type type;
      bool of_root;
    };
    static constexpr Known kKnown[] = {
        {"System", Field::kSystem, Type::kString, true},
        {"Prompt", Field::kPrompt, Type::kString, true},
        {"Response", Field::kResponse, Type::kString, true},
        {"Suffix", Field::kSuffix, Type::kString, true},
        {"Messages", Field::kMessages, Type::kMessages, true},
        {"Tools", Field::kTools, Type::kOpaqueList, true},
        {"Role", Field::kRole, Type::kString, false},
        {"Content", Field::kContent, Type::kString, false},
    };
    if (name == "Messages") tree_->uses_messages = true;
    if (name == "Suffix") tree_->uses_suffix = true;
    if (name == "Response") tree_->uses_response = true;
    if (base == Type::kOpaque) {
      *field = Field::kOpaque;
      return Type::kOpaque;
    }
    if (base == Type::kRoot || base == Type::kMessage || base == Type::kAny) {
      for (const Known& k : kKnown) {
        if (k.name != name) continue;
        if (base == Type::kAny || k.of_root == (base == Type::kRoot)) {
          *field = k.field;
          return k.type;
        }
      }
      if (base == Type::kMessage) {
        return Error(pos, "unknown field .{} of a message (messages have .Role and .Content)",
                     name);
      }
      return Error(pos, "unknown field .{} (the template data has {})", name, kRootFieldsHelp);
    }
    return Error(pos, "can't evaluate field .{} in type {}", name, TypeName(base));
  }

  StatusOr<Type> ParseOperand(Type dot, Arg* arg) {
    const Token& t = Next();
    arg->pos = t.pos;
    Type type = Type::kAny;
    bool chainable = false;
    switch (t.tok) {
      case Tok::kDot:
        arg->kind = Arg::Kind::kDot;
        type = dot;
        break;
      case Tok::kField: {
        arg->kind = Arg::Kind::kDot;
        Field field;
        FERRY_ASSIGN_OR_RETURN(type, FieldType(dot, t.text, t.pos, &field));
        arg->fields.push_back(FieldRef{field, t.text});
        chainable = true;
        break;
      }
      case Tok::kVariable: {
        const Var* var = FindVar(t.text);
        if (var == nullptr) return Error(t.pos, "undefined variable {}", t.text);
        arg->kind = Arg::Kind::kVariable;
        arg->slot = var->slot;
        type = var->type;
        chainable = true;
        break;
      }
      case Tok::kString:
        arg->kind = Arg::Kind::kString;
        arg->str = t.text;
        type = Type::kString;
        break;
      case Tok::kNumber:
        arg->kind = Arg::Kind::kInt;
        arg->num = t.num;
        type = Type::kInt;
        break;
      case Tok::kLParen: {
        DepthGuard guard(&depth_);
        if (depth_ > kMaxDepth) return Error(t.pos, "nesting deeper than {} levels", kMaxDepth);
        arg->kind = Arg::Kind::kPipe;
        auto pipe = std::make_shared<Pipe>();
        FERRY_RETURN_IF_ERROR(
            ParsePipeline("parenthesized pipeline", dot, Tok::kRParen, pipe.get(), &type));
        arg->pipe = std::move(pipe);
        chainable = true;
        break;
      }
      case Tok::kIdent:
        if (t.text == "true" || t.text == "false") {
          arg->kind = Arg::Kind::kBool;
          arg->boolean = t.text == "true";
          type = Type::kBool;
          break;
        }
        if (t.text == "nil") {
          arg->kind = Arg::Kind::kNil;
          type = Type::kNil;
          break;
        }
        if (t.text == "print" || t.text == "printf" || t.text == "println" || t.text == "html" ||
            t.text == "js" || t.text == "urlquery" || t.text == "call") {
          return Error(t.pos, "function {:?} is not supported", t.text);
        }
        if (t.text == "if" || t.text == "else" || t.text == "end" || t.text == "range" ||
            t.text == "with" || t.text == "define" || t.text == "template" || t.text == "block" ||
            t.text == "break" || t.text == "continue") {
          return Error(t.pos, "unexpected {:?} in operand", t.text);
        }
        return Error(t.pos, "function {:?} not defined", t.text);
      default:
        return Error(t.pos, "unexpected {} in operand", Describe(t));
    }
    while (Peek().tok == Tok::kField && !Peek().space_before) {
      const Token& f = Next();
      if (!chainable) return Error(f.pos, "unexpected field .{} after a literal", f.text);
      Field field;
      FERRY_ASSIGN_OR_RETURN(type, FieldType(type, f.text, f.pos, &field));
      arg->fields.push_back(FieldRef{field, f.text});
    }
    if (Peek().tok == Tok::kDot && !Peek().space_before) {
      return Error(Peek().pos, "unexpected \".\" after operand");
    }
    return type;
  }

  // Bounds the recursion of parsing, rendering and cutting.
  static constexpr int kMaxDepth = 100;
  struct DepthGuard {
    explicit DepthGuard(int* depth) : depth(depth) { ++*depth; }
    ~DepthGuard() { --*depth; }
    int* depth;
  };

  std::string_view text_;
  std::vector<Token> toks_;
  size_t next_ = 0;
  int depth_ = 0;
  Tree* tree_;
  std::vector<Var> vars_;
};

// ---------------------------------------------------------------------------------------------
// Executor.

struct Value {
  Type type = Type::kNil;
  bool b = false;
  int64_t i = 0;
  std::string s;
  const Message* items = nullptr;  // kMessages
  size_t count = 0;
  const Message* msg = nullptr;  // kMessage
};

Value MakeBool(bool b) {
  Value v;
  v.type = Type::kBool;
  v.b = b;
  return v;
}
Value MakeInt(int64_t i) {
  Value v;
  v.type = Type::kInt;
  v.i = i;
  return v;
}
Value MakeString(std::string s) {
  Value v;
  v.type = Type::kString;
  v.s = std::move(s);
  return v;
}

bool Truth(const Value& v) {
  switch (v.type) {
    case Type::kNil:
      return false;
    case Type::kBool:
      return v.b;
    case Type::kInt:
      return v.i != 0;
    case Type::kString:
      return !v.s.empty();
    case Type::kMessages:
      return v.count > 0;
    case Type::kOpaqueList:
      return false;
    default:
      return true;
  }
}

// Go's encoding/json string encoding (HTML-safe, as json.Marshal). Returns false, with *out
// partly written, as soon as *out is longer than `limit`.
bool AppendJsonString(std::string_view s, std::string* out, size_t limit) {
  out->push_back('"');
  for (size_t k = 0; k < s.size(); ++k) {
    if (out->size() > limit) return false;
    unsigned char c = static_cast<unsigned char>(s[k]);
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      case '<':
      case '>':
      case '&':
        *out += fmt::format("\\u{:04x}", c);
        break;
      default:
        if (c < 0x20) {
          *out += fmt::format("\\u{:04x}", c);
        } else if (c == 0xE2 && k + 2 < s.size() && static_cast<unsigned char>(s[k + 1]) == 0x80 &&
                   (static_cast<unsigned char>(s[k + 2]) == 0xA8 ||
                    static_cast<unsigned char>(s[k + 2]) == 0xA9)) {
          *out += static_cast<unsigned char>(s[k + 2]) == 0xA8 ? "\\u2028" : "\\u2029";
          k += 2;
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
  return out->size() <= limit;
}

bool AppendJsonMessage(const Message& m, std::string* out, size_t limit) {
  *out += "{\"role\":";
  if (!AppendJsonString(m.role, out, limit)) return false;
  *out += ",\"content\":";
  if (!AppendJsonString(m.content, out, limit)) return false;
  out->push_back('}');
  return out->size() <= limit;
}

}  // namespace

// What a rendering may still spend: steps and bytes of text (go_template.h).
struct Budget {
  explicit Budget(RenderLimits limits) : limits(limits), steps(limits.steps), bytes(limits.bytes) {}
  RenderLimits limits;
  uint64_t steps;
  uint64_t bytes;
};

namespace {

class Executor {
 public:
  Executor(const Tree& tree, const TemplateData& data, std::string* out, Budget* budget)
      : tree_(tree),
        data_(data),
        out_(out),
        budget_(budget),
        vars_(static_cast<size_t>(tree.num_slots)) {
    root_.type = Type::kRoot;
    vars_[0] = root_;
  }

  Status Walk(const std::vector<Node>& list, const Value& dot) {
    for (const Node& node : list) {
      FERRY_RETURN_IF_ERROR(Step(node.pos));
      switch (node.kind) {
        case Node::Kind::kText:
          FERRY_RETURN_IF_ERROR(Charge(node.pos, node.text.size()));
          *out_ += node.text;
          break;
        case Node::Kind::kAction: {
          FERRY_ASSIGN_OR_RETURN(Value v, EvalPipe(node.pipe, dot, /*assign=*/true));
          if (node.pipe.decl.empty()) FERRY_RETURN_IF_ERROR(Print(v, node.pos));
          break;
        }
        case Node::Kind::kIf: {
          FERRY_ASSIGN_OR_RETURN(Value v, EvalPipe(node.pipe, dot, /*assign=*/true));
          FERRY_RETURN_IF_ERROR(Walk(Truth(v) ? node.list : node.else_list, dot));
          break;
        }
        case Node::Kind::kWith: {
          FERRY_ASSIGN_OR_RETURN(Value v, EvalPipe(node.pipe, dot, /*assign=*/true));
          if (Truth(v)) {
            FERRY_RETURN_IF_ERROR(Walk(node.list, v));
          } else {
            FERRY_RETURN_IF_ERROR(Walk(node.else_list, dot));
          }
          break;
        }
        case Node::Kind::kRange: {
          FERRY_ASSIGN_OR_RETURN(Value v, EvalPipe(node.pipe, dot, /*assign=*/false));
          if (v.type == Type::kMessages && v.count > 0) {
            for (size_t k = 0; k < v.count; ++k) {
              FERRY_RETURN_IF_ERROR(Step(node.pos));
              Value elem;
              elem.type = Type::kMessage;
              elem.msg = v.items + k;
              const std::vector<int>& decl = node.pipe.decl;
              if (decl.size() == 1) vars_[decl[0]] = elem;
              if (decl.size() == 2) {
                vars_[decl[0]] = MakeInt(static_cast<int64_t>(k));
                vars_[decl[1]] = elem;
              }
              FERRY_RETURN_IF_ERROR(Walk(node.list, elem));
            }
          } else if (v.type == Type::kMessages || v.type == Type::kOpaqueList ||
                     v.type == Type::kNil) {
            FERRY_RETURN_IF_ERROR(Walk(node.else_list, dot));
          } else {
            return Error(node.pos, "range can't iterate over {}", TypeName(v.type));
          }
          break;
        }
      }
    }
    return Status::Ok();
  }

 private:
  template <typename... Args>
  Status Error(size_t pos, fmt::format_string<Args...> f, Args&&... args) const {
    return InvalidArgumentError("template: line {}: {}", LineOf(tree_.text, pos),
                                fmt::format(f, std::forward<Args>(args)...));
  }

  // One step of work; ResourceExhausted once the budget's steps are spent.
  Status Step(size_t pos) {
    if (budget_->steps == 0) {
      return ResourceExhaustedError(
          "template: line {}: rendering takes more than {} steps (nested range loops?)",
          LineOf(tree_.text, pos), budget_->limits.steps);
    }
    --budget_->steps;
    return Status::Ok();
  }

  // Charges `n` bytes of text about to be copied; ResourceExhausted past the budget.
  Status Charge(size_t pos, uint64_t n) {
    if (n > budget_->bytes) return TooManyBytes(pos);
    budget_->bytes -= n;
    return Status::Ok();
  }
  Status TooManyBytes(size_t pos) const {
    return ResourceExhaustedError(
        "template: line {}: rendering makes more than {} bytes of text (chained json calls?)",
        LineOf(tree_.text, pos), budget_->limits.bytes);
  }

  Status Print(const Value& v, size_t pos) {
    std::string number;
    std::string_view text;
    switch (v.type) {
      case Type::kString:
        text = v.s;
        break;
      case Type::kInt:
        number = fmt::format("{}", v.i);
        text = number;
        break;
      case Type::kBool:
        text = v.b ? "true" : "false";
        break;
      case Type::kNil:
        text = "<no value>";
        break;
      case Type::kOpaqueList:
        text = "[]";
        break;
      default:
        return Error(pos, "can't print a {}", TypeName(v.type));
    }
    FERRY_RETURN_IF_ERROR(Charge(pos, text.size()));
    *out_ += text;
    return Status::Ok();
  }

  StatusOr<Value> EvalPipe(const Pipe& pipe, const Value& dot, bool assign) {
    Value value;
    for (size_t k = 0; k < pipe.cmds.size(); ++k) {
      FERRY_ASSIGN_OR_RETURN(value, EvalCommand(pipe.cmds[k], dot, k == 0 ? nullptr : &value));
    }
    if (assign) {
      for (int slot : pipe.decl) {
        FERRY_RETURN_IF_ERROR(Charge(pipe.pos, value.s.size()));
        vars_[slot] = value;
      }
    }
    return value;
  }

  // A copy of a string of the data, charged.
  StatusOr<Value> ReadString(const std::string& s, size_t pos) {
    FERRY_RETURN_IF_ERROR(Charge(pos, s.size()));
    return MakeString(s);
  }

  StatusOr<Value> EvalField(Value base, const FieldRef& f, size_t pos) {
    if (base.type == Type::kRoot) {
      switch (f.field) {
        case Field::kSystem:
          return ReadString(data_.system, pos);
        case Field::kPrompt:
          return ReadString(data_.prompt, pos);
        case Field::kResponse:
          return ReadString(data_.response, pos);
        case Field::kSuffix:
          return ReadString(data_.suffix, pos);
        case Field::kMessages: {
          Value v;
          v.type = Type::kMessages;
          v.items = data_.messages.data();
          v.count = data_.messages.size();
          return v;
        }
        case Field::kTools: {
          Value v;
          v.type = Type::kOpaqueList;
          return v;
        }
        default:
          break;
      }
    } else if (base.type == Type::kMessage) {
      if (f.field == Field::kRole) return ReadString(base.msg->role, pos);
      if (f.field == Field::kContent) return ReadString(base.msg->content, pos);
    }
    return Error(pos, "can't evaluate field .{} in type {}", f.name, TypeName(base.type));
  }

  StatusOr<Value> EvalArg(const Arg& arg, const Value& dot) {
    FERRY_RETURN_IF_ERROR(Step(arg.pos));
    Value v;
    switch (arg.kind) {
      case Arg::Kind::kDot:
        FERRY_RETURN_IF_ERROR(Charge(arg.pos, dot.s.size()));
        v = dot;
        break;
      case Arg::Kind::kVariable:
        FERRY_RETURN_IF_ERROR(Charge(arg.pos, vars_[arg.slot].s.size()));
        v = vars_[arg.slot];
        break;
      case Arg::Kind::kString:
        FERRY_RETURN_IF_ERROR(Charge(arg.pos, arg.str.size()));
        v = MakeString(arg.str);
        break;
      case Arg::Kind::kInt:
        v = MakeInt(arg.num);
        break;
      case Arg::Kind::kBool:
        v = MakeBool(arg.boolean);
        break;
      case Arg::Kind::kNil:
        break;
      case Arg::Kind::kPipe: {
        FERRY_ASSIGN_OR_RETURN(v, EvalPipe(*arg.pipe, dot, /*assign=*/false));
        break;
      }
    }
    for (const FieldRef& f : arg.fields) {
      FERRY_ASSIGN_OR_RETURN(v, EvalField(std::move(v), f, arg.pos));
    }
    return v;
  }

  StatusOr<Value> EvalCommand(const Command& cmd, const Value& dot, const Value* piped) {
    FERRY_RETURN_IF_ERROR(Step(cmd.pos));
    if (!cmd.is_call) {
      if (cmd.args.size() != 1 || piped != nullptr) {
        return Error(cmd.pos, "can't give an argument to a non-function");
      }
      return EvalArg(cmd.args[0], dot);
    }
    size_t n = cmd.args.size() + (piped != nullptr ? 1 : 0);
    std::string_view name = FuncName(cmd.func);
    // and/or evaluate their arguments lazily and return the deciding one.
    if (cmd.func == Func::kAnd || cmd.func == Func::kOr) {
      if (n == 0) return Error(cmd.pos, "wrong number of args for {}: want at least 1 got 0", name);
      Value v;
      for (size_t k = 0; k < n; ++k) {
        if (k < cmd.args.size()) {
          FERRY_ASSIGN_OR_RETURN(v, EvalArg(cmd.args[k], dot));
        } else {
          FERRY_RETURN_IF_ERROR(Charge(cmd.pos, piped->s.size()));
          v = *piped;
        }
        if (Truth(v) != (cmd.func == Func::kAnd)) return v;
      }
      return v;
    }
    std::vector<Value> args;
    args.reserve(n);
    for (const Arg& a : cmd.args) {
      FERRY_ASSIGN_OR_RETURN(Value v, EvalArg(a, dot));
      args.push_back(std::move(v));
    }
    if (piped != nullptr) {
      FERRY_RETURN_IF_ERROR(Charge(cmd.pos, piped->s.size()));
      args.push_back(*piped);
    }
    // A result is a new string at most (json: up to the budget, then it stops): charged.
    StatusOr<Value> result = Call(cmd.func, args, budget_->bytes);
    if (!result.ok()) {
      if (result.status().code() == StatusCode::kResourceExhausted) return TooManyBytes(cmd.pos);
      return Error(cmd.pos, "error calling {}: {}", name, result.status().message());
    }
    FERRY_RETURN_IF_ERROR(Charge(cmd.pos, result->s.size()));
    return result;
  }

  static Status Fail(std::string message) {
    return Status(StatusCode::kInvalidArgument, std::move(message));
  }

  static bool Comparable(Type t) {
    return t == Type::kNil || t == Type::kBool || t == Type::kInt || t == Type::kString;
  }

  static StatusOr<bool> Eq(const Value& a, const Value& b) {
    if (!Comparable(a.type) || !Comparable(b.type)) {
      return Fail(
          fmt::format("non-comparable types {} and {}", TypeName(a.type), TypeName(b.type)));
    }
    if (a.type != b.type) {
      if (a.type == Type::kNil || b.type == Type::kNil) return false;
      return Fail("incompatible types for comparison");
    }
    switch (a.type) {
      case Type::kBool:
        return a.b == b.b;
      case Type::kInt:
        return a.i == b.i;
      case Type::kString:
        return a.s == b.s;
      default:
        return true;  // nil == nil
    }
  }

  static StatusOr<bool> Lt(const Value& a, const Value& b) {
    for (const Value* v : {&a, &b}) {
      if (v->type != Type::kInt && v->type != Type::kString) {
        return Fail(fmt::format("invalid type for comparison: {}", TypeName(v->type)));
      }
    }
    if (a.type != b.type) return Fail("incompatible types for comparison");
    return a.type == Type::kInt ? a.i < b.i : a.s < b.s;
  }

  static StatusOr<int64_t> Length(const Value& v) {
    switch (v.type) {
      case Type::kString:
        return static_cast<int64_t>(v.s.size());
      case Type::kMessages:
        return static_cast<int64_t>(v.count);
      case Type::kOpaqueList:
        return 0;
      case Type::kNil:
        return Fail("len of nil pointer");
      default:
        return Fail(fmt::format("len of type {}", TypeName(v.type)));
    }
  }

  // `max_bytes`: the longest string json may build (ResourceExhausted past it).
  static StatusOr<Value> Call(Func func, const std::vector<Value>& args, uint64_t max_bytes) {
    switch (func) {
      case Func::kEq:
      case Func::kNe: {
        if (args.size() < 2) return Fail("missing argument for comparison");
        if (func == Func::kNe && args.size() != 2) return Fail("ne takes two arguments");
        for (size_t k = 1; k < args.size(); ++k) {
          FERRY_ASSIGN_OR_RETURN(bool eq, Eq(args[0], args[k]));
          if (eq) return MakeBool(func == Func::kEq);
        }
        return MakeBool(func == Func::kNe);
      }
      case Func::kLt:
      case Func::kLe:
      case Func::kGt:
      case Func::kGe: {
        if (args.size() != 2) return Fail("comparison takes two arguments");
        FERRY_ASSIGN_OR_RETURN(bool lt, Lt(args[0], args[1]));
        bool eq = args[0].type == Type::kInt ? args[0].i == args[1].i : args[0].s == args[1].s;
        switch (func) {
          case Func::kLt:
            return MakeBool(lt);
          case Func::kLe:
            return MakeBool(lt || eq);
          case Func::kGt:
            return MakeBool(!lt && !eq);
          default:
            return MakeBool(!lt);
        }
      }
      case Func::kNot:
        if (args.size() != 1) return Fail("not takes one argument");
        return MakeBool(!Truth(args[0]));
      case Func::kLen: {
        if (args.size() != 1) return Fail("len takes one argument");
        FERRY_ASSIGN_OR_RETURN(int64_t n, Length(args[0]));
        return MakeInt(n);
      }
      case Func::kIndex: {
        if (args.empty()) return Fail("index needs an item");
        Value item = args[0];
        for (size_t k = 1; k < args.size(); ++k) {
          if (args[k].type != Type::kInt) {
            return Fail(fmt::format("cannot index with type {}", TypeName(args[k].type)));
          }
          int64_t x = args[k].i;
          if (item.type == Type::kNil) return Fail("index of untyped nil");
          if (item.type != Type::kString && item.type != Type::kMessages &&
              item.type != Type::kOpaqueList) {
            return Fail(fmt::format("can't index item of type {}", TypeName(item.type)));
          }
          FERRY_ASSIGN_OR_RETURN(int64_t len, Length(item));
          if (x < 0 || x >= len) return Fail(fmt::format("index out of range: {}", x));
          if (item.type == Type::kString) {
            item = MakeInt(static_cast<unsigned char>(item.s[static_cast<size_t>(x)]));
          } else {
            Value elem;
            elem.type = Type::kMessage;
            elem.msg = item.items + x;
            item = elem;
          }
        }
        return item;
      }
      case Func::kSlice: {
        if (args.empty() || args.size() > 4) return Fail("slice takes 1 to 4 arguments");
        Value item = args[0];
        if (item.type == Type::kNil) return Fail("slice of untyped nil");
        if (item.type != Type::kString && item.type != Type::kMessages &&
            item.type != Type::kOpaqueList) {
          return Fail(fmt::format("can't slice item of type {}", TypeName(item.type)));
        }
        if (item.type == Type::kString && args.size() == 4) {
          return Fail("cannot 3-index slice a string");
        }
        FERRY_ASSIGN_OR_RETURN(int64_t len, Length(item));
        int64_t idx[3] = {0, len, len};
        for (size_t k = 1; k < args.size(); ++k) {
          if (args[k].type != Type::kInt) {
            return Fail(fmt::format("cannot index slice with type {}", TypeName(args[k].type)));
          }
          idx[k - 1] = args[k].i;
          if (idx[k - 1] < 0 || idx[k - 1] > len) {
            return Fail(fmt::format("index out of range: {}", idx[k - 1]));
          }
        }
        if (idx[0] > idx[1]) {
          return Fail(fmt::format("invalid slice index: {} > {}", idx[0], idx[1]));
        }
        if (args.size() == 4 && idx[1] > idx[2]) {
          return Fail(fmt::format("invalid slice index: {} > {}", idx[1], idx[2]));
        }
        if (item.type == Type::kString) {
          return MakeString(
              item.s.substr(static_cast<size_t>(idx[0]), static_cast<size_t>(idx[1] - idx[0])));
        }
        if (item.type == Type::kMessages) {
          item.items += idx[0];
          item.count = static_cast<size_t>(idx[1] - idx[0]);
        }
        return item;
      }
      case Func::kJson: {
        if (args.size() != 1) return Fail("json takes one argument");
        const Value& v = args[0];
        const size_t limit = static_cast<size_t>(std::min<uint64_t>(max_bytes, SIZE_MAX));
        std::string s;
        bool fits = true;
        switch (v.type) {
          case Type::kString:
            fits = AppendJsonString(v.s, &s, limit);
            break;
          case Type::kInt:
            s = fmt::format("{}", v.i);
            break;
          case Type::kBool:
            s = v.b ? "true" : "false";
            break;
          case Type::kNil:
          case Type::kOpaqueList:
            s = "null";
            break;
          case Type::kMessage:
            fits = AppendJsonMessage(*v.msg, &s, limit);
            break;
          case Type::kMessages:
            s = "[";
            for (size_t k = 0; k < v.count && fits; ++k) {
              if (k > 0) s += ",";
              fits = AppendJsonMessage(v.items[k], &s, limit);
            }
            s += "]";
            break;
          default:
            return Fail(fmt::format("json of {} is not supported", TypeName(v.type)));
        }
        if (!fits) return ResourceExhaustedError("json result too long");
        return MakeString(std::move(s));
      }
      case Func::kAnd:
      case Func::kOr:
        break;
    }
    return Fail("unhandled function");
  }

  const Tree& tree_;
  const TemplateData& data_;
  std::string* out_;
  Budget* budget_;
  Value root_;
  std::vector<Value> vars_;
};

// ---------------------------------------------------------------------------------------------
// Ollama's deleteNode: after the first field node naming Response, everything is removed.

bool CutPipe(Pipe* pipe, bool* cut);

bool CutArg(Arg* arg, bool* cut) {
  if (*cut) return false;
  if (arg->kind == Arg::Kind::kDot) {
    for (const FieldRef& f : arg->fields) {
      if (f.name == "Response") {
        *cut = true;
        return true;
      }
    }
  }
  if (arg->kind == Arg::Kind::kPipe) {
    Pipe copy = *arg->pipe;
    if (!CutPipe(&copy, cut)) return false;
    arg->pipe = std::make_shared<const Pipe>(std::move(copy));
  }
  return true;
}

// False when the whole pipeline goes (Go: a command left without arguments removes it).
bool CutPipe(Pipe* pipe, bool* cut) {
  if (*cut) return false;
  for (Command& cmd : pipe->cmds) {
    // In Go a call's function name is its first argument.
    if (cmd.is_call && *cut) return false;
    std::vector<Arg> kept;
    for (Arg& a : cmd.args) {
      if (CutArg(&a, cut)) kept.push_back(std::move(a));
    }
    if (!cmd.is_call && kept.empty()) return false;
    cmd.args = std::move(kept);
  }
  return true;
}

std::vector<Node> CutList(const std::vector<Node>& list, bool* cut) {
  std::vector<Node> out;
  for (const Node& node : list) {
    if (*cut) break;
    Node copy = node;
    switch (node.kind) {
      case Node::Kind::kText:
        break;
      case Node::Kind::kAction:
        if (!CutPipe(&copy.pipe, cut)) continue;
        break;
      default:  // the condition is not walked, as in Go
        copy.list = CutList(node.list, cut);
        copy.else_list = CutList(node.else_list, cut);
        break;
    }
    out.push_back(std::move(copy));
  }
  return out;
}

}  // namespace
}  // namespace go_template_internal

using go_template_internal::Tree;

StatusOr<GoTemplate> GoTemplate::Parse(std::string_view text) {
  auto tree = std::make_shared<Tree>();
  tree->text = std::string(text);
  std::vector<go_template_internal::Token> tokens;
  go_template_internal::Lexer lexer(tree->text);
  FERRY_RETURN_IF_ERROR(lexer.Run(&tokens));
  go_template_internal::Parser parser(tree->text, std::move(tokens), tree.get());
  FERRY_RETURN_IF_ERROR(parser.Run());
  if (!tree->uses_messages && !tree->uses_response) {
    // Ollama's template.Parse appends {{ .Response }}.
    go_template_internal::Node node;
    node.kind = go_template_internal::Node::Kind::kAction;
    node.pos = tree->text.size();
    go_template_internal::Command cmd;
    cmd.pos = node.pos;
    go_template_internal::Arg arg;
    arg.pos = node.pos;
    arg.fields.push_back({go_template_internal::Field::kResponse, "Response"});
    cmd.args.push_back(std::move(arg));
    node.pipe.pos = node.pos;
    node.pipe.cmds.push_back(std::move(cmd));
    tree->root.push_back(std::move(node));
    tree->uses_response = true;
  }
  return GoTemplate(std::move(tree));
}

RenderLimits RenderLimitsFor(uint64_t messages, uint64_t data_bytes) {
  // Saturating: no real conversation comes near, but the sums must not wrap.
  auto add = [](uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; };
  auto mul = [](uint64_t a, uint64_t b) {
    return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
  };
  return {add(kRenderBaseSteps, mul(kRenderStepsPerMessage, messages)),
          add(kRenderBaseBytes, mul(kRenderBytesPerDataByte, data_bytes))};
}

namespace {

uint64_t MessageBytes(const std::vector<Message>& messages) {
  uint64_t n = 0;
  for (const Message& m : messages) n += m.role.size() + m.content.size();
  return n;
}

RenderLimits LimitsFor(const TemplateData& d) {
  return RenderLimitsFor(d.messages.size(), d.system.size() + d.prompt.size() + d.response.size() +
                                                d.suffix.size() + MessageBytes(d.messages));
}

}  // namespace

Status GoTemplate::Render(const TemplateData& data, std::string* out) const {
  go_template_internal::Budget budget(LimitsFor(data));
  return Render(data, out, &budget);
}

Status GoTemplate::Render(const TemplateData& data, std::string* out,
                          go_template_internal::Budget* budget) const {
  go_template_internal::Executor exec(*tree_, data, out, budget);
  go_template_internal::Value root;
  root.type = go_template_internal::Type::kRoot;
  return exec.Walk(tree_->root, root);
}

bool GoTemplate::UsesMessages() const { return tree_->uses_messages; }
bool GoTemplate::UsesSuffix() const { return tree_->uses_suffix; }
bool GoTemplate::UsesResponse() const { return tree_->uses_response; }
const std::string& GoTemplate::text() const { return tree_->text; }

GoTemplate GoTemplate::CutAfterResponse() const {
  auto tree = std::make_shared<Tree>(*tree_);
  bool cut = false;
  tree->root = go_template_internal::CutList(tree_->root, &cut);
  return GoTemplate(std::move(tree));
}

StatusOr<std::string> RenderChat(const GoTemplate& tmpl, const std::vector<Message>& messages) {
  go_template_internal::Budget budget(RenderLimitsFor(messages.size(), MessageBytes(messages)));
  // Ollama's collate.
  std::string system;
  std::vector<Message> collated;
  for (const Message& m : messages) {
    if (m.role == "system") {
      if (!system.empty()) system += "\n\n";
      system += m.content;
    }
    if (!collated.empty() && collated.back().role == m.role && m.role != "tool") {
      collated.back().content += "\n\n" + m.content;
    } else {
      collated.push_back(m);
    }
  }
  std::string out;
  if (tmpl.UsesMessages()) {
    TemplateData data;
    data.system = std::move(system);
    data.messages = std::move(collated);
    FERRY_RETURN_IF_ERROR(tmpl.Render(data, &out, &budget));
    return out;
  }
  TemplateData turn;
  auto execute = [&]() -> Status {
    FERRY_RETURN_IF_ERROR(tmpl.Render(turn, &out, &budget));
    turn = TemplateData();
    return Status::Ok();
  };
  for (const Message& m : collated) {
    if (m.role == "system") {
      if (!turn.prompt.empty() || !turn.response.empty()) FERRY_RETURN_IF_ERROR(execute());
      turn.system = m.content;
    } else if (m.role == "user") {
      if (!turn.response.empty()) FERRY_RETURN_IF_ERROR(execute());
      turn.prompt = m.content;
    } else if (m.role == "assistant") {
      turn.response = m.content;
    }
  }
  FERRY_RETURN_IF_ERROR(tmpl.CutAfterResponse().Render(turn, &out, &budget));
  return out;
}

StatusOr<std::string> RenderInfill(const GoTemplate& tmpl, std::string_view prompt,
                                   std::string_view suffix) {
  TemplateData data;
  data.prompt = std::string(prompt);
  data.suffix = std::string(suffix);
  std::string out;
  FERRY_RETURN_IF_ERROR(tmpl.Render(data, &out));
  return out;
}

}  // namespace ferry::chat
