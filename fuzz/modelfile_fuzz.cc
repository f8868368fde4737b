// libFuzzer target for the Modelfile parser (src/store/modelfile.h).
//
// Every input is Modelfile text for ParseModelfile. Checked, as modelfile.h says:
//   - a refusal is InvalidArgument or Unimplemented, and names a line ("Modelfile line N: ...")
//     or the missing FROM;
//   - what parses has a non-empty FROM, only system/user/assistant MESSAGE roles, and only
//     known PARAMETERs whose values pass ValidateParameter (one value each except `stop`);
//   - FormatModelfile reads back: parsing its output gives the same Modelfile, unless a value
//     contains `"""` or is a multi-line value ending in `"` (the cases the header says this
//     grammar cannot quote); and formatting is then a fixed point.
// A broken invariant calls __builtin_trap() so that libFuzzer reports the input as a crash.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "store/modelfile.h"
#include "fuzz_check.h"

namespace ferry::store {
namespace {

using ferry::fuzz::Check;

// Whether `value` is one FormatModelfile cannot quote (modelfile.h).
bool Unquotable(std::string_view value) {
  return value.find(R"(""")") != std::string_view::npos ||
         (value.find('\n') != std::string_view::npos && value.ends_with('"'));
}

bool AnyUnquotable(const Modelfile& m) {
  if (Unquotable(m.from)) return true;
  const ModelExtras& e = m.extras;
  if (e.template_text && Unquotable(*e.template_text)) return true;
  if (e.system && Unquotable(*e.system)) return true;
  for (const auto& [name, values] : e.parameters) {
    for (const std::string& v : values) {
      if (Unquotable(v)) return true;
    }
  }
  for (const ModelfileMessage& msg : e.messages) {
    if (Unquotable(msg.content)) return true;
  }
  for (const std::string& l : e.licenses) {
    if (Unquotable(l)) return true;
  }
  return false;
}

void CheckParsed(const Modelfile& m) {
  Check(!m.from.empty());
  for (const auto& [name, values] : m.extras.parameters) {
    std::optional<ParameterType> type = FindParameterType(name);
    Check(type.has_value());
    Check(!values.empty());
    if (*type != ParameterType::kStringList) Check(values.size() == 1);
    for (const std::string& v : values) Check(ValidateParameter(name, v).ok());
  }
  for (const ModelfileMessage& msg : m.extras.messages) {
    Check(msg.role == "system" || msg.role == "user" || msg.role == "assistant");
  }
}

}  // namespace
}  // namespace ferry::store

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ferry::store;
  using ferry::StatusCode;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ferry::StatusOr<Modelfile> m = ParseModelfile(text);
  if (!m.ok()) {
    const ferry::Status& s = m.status();
    Check(s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kUnimplemented);
    Check(s.message().starts_with("Modelfile line ") ||
          s.message() == "Modelfile has no FROM line");
    return 0;
  }
  CheckParsed(*m);
  if (AnyUnquotable(*m)) return 0;
  const std::string formatted = FormatModelfile(*m);
  ferry::StatusOr<Modelfile> again = ParseModelfile(formatted);
  Check(again.ok());
  Check(*again == *m);
  Check(FormatModelfile(*again) == formatted);
  return 0;
}
