#include "store/modelfile.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <utility>

namespace ferry::store {
namespace {

struct ParameterSpec {
  std::string_view name;
  ParameterType type;
};

constexpr std::array<ParameterSpec, 16> kParameters = {{
    {"num_ctx", ParameterType::kInt},
    {"num_predict", ParameterType::kInt},
    {"num_keep", ParameterType::kInt},
    {"temperature", ParameterType::kFloat},
    {"top_k", ParameterType::kInt},
    {"top_p", ParameterType::kFloat},
    {"min_p", ParameterType::kFloat},
    {"repeat_penalty", ParameterType::kFloat},
    {"repeat_last_n", ParameterType::kInt},
    {"presence_penalty", ParameterType::kFloat},
    {"frequency_penalty", ParameterType::kFloat},
    {"seed", ParameterType::kInt},
    {"stop", ParameterType::kStringList},
    {"num_batch", ParameterType::kInt},
    {"num_gpu", ParameterType::kInt},
    {"num_thread", ParameterType::kInt},
}};

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Splits off the first blank-separated word of `s` (already trimmed on the left).
std::pair<std::string_view, std::string_view> SplitWord(std::string_view s) {
  size_t end = 0;
  while (end < s.size() && !IsBlank(s[end])) ++end;
  std::string_view rest = s.substr(end);
  while (!rest.empty() && IsBlank(rest.front())) rest.remove_prefix(1);
  return {s.substr(0, end), rest};
}

// Reads Modelfile text line by line; a triple-quoted value may consume further lines.
class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  StatusOr<Modelfile> Parse() {
    Modelfile out;
    bool have_from = false;
    while (pos_ < text_.size()) {
      const int line_no = line_;
      std::string_view line = NextLine();
      std::string_view trimmed = Trim(line);
      if (trimmed.empty() || trimmed.front() == '#') continue;
      auto [word, rest] = SplitWord(trimmed);
      const std::string instruction = Lower(word);
      if (instruction == "from") {
        if (have_from) return InvalidArgumentError("Modelfile line {}: a second FROM", line_no);
        FERRY_ASSIGN_OR_RETURN(out.from, ReadValue(rest, line_no, "FROM"));
        if (out.from.empty()) return InvalidArgumentError("Modelfile line {}: empty FROM", line_no);
        have_from = true;
      } else if (instruction == "parameter") {
        auto [name, value_text] = SplitWord(rest);
        if (name.empty()) {
          return InvalidArgumentError("Modelfile line {}: PARAMETER needs a name and a value",
                                      line_no);
        }
        FERRY_ASSIGN_OR_RETURN(std::string value, ReadValue(value_text, line_no, "PARAMETER"));
        Status valid = ValidateParameter(name, value);
        if (!valid.ok()) {
          return InvalidArgumentError("Modelfile line {}: {}", line_no, valid.message());
        }
        std::vector<std::string>& values = out.extras.parameters[std::string(name)];
        if (*FindParameterType(name) != ParameterType::kStringList) values.clear();
        values.push_back(std::move(value));
      } else if (instruction == "template") {
        FERRY_ASSIGN_OR_RETURN(out.extras.template_text, ReadValue(rest, line_no, "TEMPLATE"));
      } else if (instruction == "system") {
        FERRY_ASSIGN_OR_RETURN(out.extras.system, ReadValue(rest, line_no, "SYSTEM"));
      } else if (instruction == "license") {
        FERRY_ASSIGN_OR_RETURN(std::string license, ReadValue(rest, line_no, "LICENSE"));
        out.extras.licenses.push_back(std::move(license));
      } else if (instruction == "message") {
        auto [role, content_text] = SplitWord(rest);
        if (role != "system" && role != "user" && role != "assistant") {
          return InvalidArgumentError(
              "Modelfile line {}: MESSAGE role \"{}\" must be system, user or assistant", line_no,
              role);
        }
        FERRY_ASSIGN_OR_RETURN(std::string content, ReadValue(content_text, line_no, "MESSAGE"));
        out.extras.messages.push_back({std::string(role), std::move(content)});
      } else if (instruction == "adapter" || instruction == "draft" || instruction == "renderer" ||
                 instruction == "parser" || instruction == "requires") {
        return UnimplementedError("Modelfile line {}: {} is not supported by ferry", line_no, word);
      } else {
        return InvalidArgumentError(
            "Modelfile line {}: unknown instruction \"{}\" (expected FROM, PARAMETER, TEMPLATE, "
            "SYSTEM, MESSAGE or LICENSE)",
            line_no, word);
      }
    }
    if (!have_from) return InvalidArgumentError("Modelfile has no FROM line");
    return out;
  }

 private:
  // Returns the line at pos_ (without its '\n') and moves past it.
  std::string_view NextLine() {
    size_t eol = text_.find('\n', pos_);
    if (eol == std::string_view::npos) eol = text_.size();
    std::string_view line = text_.substr(pos_, eol - pos_);
    pos_ = eol < text_.size() ? eol + 1 : eol;
    ++line_;
    return line;
  }

  // `rest` is the remainder of the current line (a view into text_), after the instruction.
  StatusOr<std::string> ReadValue(std::string_view rest, int line_no, std::string_view what) {
    std::string_view v = Trim(rest);
    if (v.empty())
      return InvalidArgumentError("Modelfile line {}: {} needs a value", line_no, what);
    if (v.starts_with(R"(""")")) {
      const size_t start = static_cast<size_t>(v.data() - text_.data()) + 3;
      const size_t close = text_.find(R"(""")", start);
      if (close == std::string_view::npos) {
        return InvalidArgumentError("Modelfile line {}: {} value's \"\"\" is never closed", line_no,
                                    what);
      }
      std::string value(text_.substr(start, close - start));
      // Continue after the closing quotes: the rest of that line must be blank.
      for (char c : value) line_ += c == '\n';
      size_t eol = text_.find('\n', close + 3);
      if (eol == std::string_view::npos) eol = text_.size();
      std::string_view after = Trim(text_.substr(close + 3, eol - close - 3));
      if (!after.empty()) {
        return InvalidArgumentError("Modelfile line {}: text after the closing \"\"\": \"{}\"",
                                    line_ - 1, after);
      }
      pos_ = eol < text_.size() ? eol + 1 : eol;
      return value;
    }
    if (v.front() == '"') {
      if (v.size() < 2 || v.back() != '"') {
        return InvalidArgumentError("Modelfile line {}: {} value's quote is never closed", line_no,
                                    what);
      }
      return std::string(v.substr(1, v.size() - 2));
    }
    return std::string(v);
  }

  std::string_view text_;
  size_t pos_ = 0;
  int line_ = 1;  // number of the line at pos_
};

// True when `s` printed bare after an instruction reads back as exactly `s`.
bool ReadsBackBare(std::string_view s) {
  if (s.empty() || IsBlank(s.front()) || IsBlank(s.back()) || s.front() == '"') return false;
  return s.find('\n') == std::string_view::npos;
}

std::string Quote(std::string_view s) {
  if (ReadsBackBare(s)) return std::string(s);
  // One line in plain quotes, unless the opening quote would then read as `"""`.
  if (s.find('\n') == std::string_view::npos && !s.starts_with(R"("")")) {
    return fmt::format("\"{}\"", s);
  }
  return fmt::format(R"("""{}""")", s);
}

}  // namespace

std::optional<ParameterType> FindParameterType(std::string_view name) {
  for (const ParameterSpec& spec : kParameters) {
    if (spec.name == name) return spec.type;
  }
  return std::nullopt;
}

Status ValidateParameter(std::string_view name, std::string_view value) {
  std::optional<ParameterType> type = FindParameterType(name);
  if (!type) {
    std::string known;
    for (const ParameterSpec& spec : kParameters) {
      if (!known.empty()) known += ' ';
      known += spec.name;
    }
    return InvalidArgumentError("unknown parameter \"{}\" (known: {})", name, known);
  }
  const char* begin = value.data();
  const char* end = value.data() + value.size();
  switch (*type) {
    case ParameterType::kInt: {
      int64_t v = 0;
      auto [p, ec] = std::from_chars(begin, end, v);
      if (value.empty() || ec != std::errc() || p != end) {
        return InvalidArgumentError("parameter {} needs an integer, not \"{}\"", name, value);
      }
      return Status::Ok();
    }
    case ParameterType::kFloat: {
      double v = 0;
      auto [p, ec] = std::from_chars(begin, end, v);
      if (value.empty() || ec != std::errc() || p != end || !std::isfinite(v)) {
        return InvalidArgumentError("parameter {} needs a number, not \"{}\"", name, value);
      }
      return Status::Ok();
    }
    case ParameterType::kStringList:
      if (value.empty()) return InvalidArgumentError("parameter {} needs a non-empty string", name);
      return Status::Ok();
  }
  return Status::Ok();
}

StatusOr<Modelfile> ParseModelfile(std::string_view text) { return Parser(text).Parse(); }

std::string FormatModelfile(const Modelfile& modelfile) {
  std::string out = fmt::format("FROM {}\n", Quote(modelfile.from));
  const ModelExtras& e = modelfile.extras;
  if (e.template_text) out += fmt::format("TEMPLATE {}\n", Quote(*e.template_text));
  if (e.system) out += fmt::format("SYSTEM {}\n", Quote(*e.system));
  for (const auto& [name, values] : e.parameters) {
    for (const std::string& value : values) {
      out += fmt::format("PARAMETER {} {}\n", name, Quote(value));
    }
  }
  for (const ModelfileMessage& m : e.messages) {
    out += fmt::format("MESSAGE {} {}\n", m.role, Quote(m.content));
  }
  for (const std::string& license : e.licenses) out += fmt::format("LICENSE {}\n", Quote(license));
  return out;
}

}  // namespace ferry::store
