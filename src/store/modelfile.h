// Modelfile: the recipe `ferry create` builds a model from (Ollama's format), and the extras
// (template, system prompt, parameters, messages, licenses) a stored model carries.
//
// Grammar (one instruction per line; instruction names are case-insensitive):
//   FROM <model name | GGUF path>        exactly one
//   PARAMETER <name> <value>             repeatable; `stop` accumulates, others: last wins
//   TEMPLATE <value>   SYSTEM <value>    last wins
//   MESSAGE <system|user|assistant> <value>
//   LICENSE <value>                      repeatable
//   ADAPTER, DRAFT, RENDERER, PARSER, REQUIRES: Unimplemented (ferry has no use for them yet)
// A value is `"""text"""` (may span lines, kept verbatim), `"text"` (one line, the outer
// quotes removed) or the rest of the line with surrounding blanks trimmed. Lines whose first
// non-blank character is `#` are comments; blank lines are skipped.
//
// Thread-safety: values and pure functions; callable from any thread.
#ifndef FERRY_STORE_MODELFILE_H_
#define FERRY_STORE_MODELFILE_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace ferry::store {

struct ModelfileMessage {
  std::string role;  // system, user or assistant
  std::string content;
  bool operator==(const ModelfileMessage&) const = default;
};

// What a model carries besides its weights. An unset optional / empty container means "none"
// (or, for CreateFrom, "keep the base model's").
struct ModelExtras {
  std::optional<std::string> template_text;
  std::optional<std::string> system;
  // Option name -> values, as text; one value except for `stop`.
  std::map<std::string, std::vector<std::string>> parameters;
  std::vector<ModelfileMessage> messages;
  std::vector<std::string> licenses;
  bool operator==(const ModelExtras&) const = default;
};

struct Modelfile {
  std::string from;  // a model name or a GGUF path, as written
  ModelExtras extras;
  bool operator==(const Modelfile&) const = default;
};

// The value type of a PARAMETER (Ollama's option names; see ../shared/design.md).
enum class ParameterType { kInt, kFloat, kStringList };
// The type of option `name`, or nullopt when ferry does not know the name.
std::optional<ParameterType> FindParameterType(std::string_view name);
// InvalidArgument unless `name` is a known option and `value` parses as its type (a whole
// decimal integer for int options, a finite number for float options).
Status ValidateParameter(std::string_view name, std::string_view value);

// Parses a Modelfile. Errors name the line: InvalidArgument for an unknown instruction, a
// missing or unterminated value, an unknown PARAMETER or a value of the wrong type, a bad
// MESSAGE role, a missing or second FROM; Unimplemented for ADAPTER and the other instructions
// ferry does not support.
StatusOr<Modelfile> ParseModelfile(std::string_view text);

// Prints `modelfile` back as `ollama show --modelfile` does: FROM, TEMPLATE, SYSTEM, one
// PARAMETER line per value, MESSAGE and LICENSE lines. A value is printed bare when that reads
// back unchanged, else in `"""` quotes. A value that itself contains `"""` (or a multi-line
// value ending in `"`) cannot be quoted in this grammar and would not read back the same.
std::string FormatModelfile(const Modelfile& modelfile);

}  // namespace ferry::store

#endif  // FERRY_STORE_MODELFILE_H_
