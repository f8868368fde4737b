// libFuzzer target for the chat-template recogniser (src/chat/chat_template.h).
//
// Input: the first byte picks the architecture (from a fixed list, "" included) and whether
// the vocabulary has a <|start_header_id|> token; the rest is the GGUF's template text.
// ChatTemplate::Detect runs on it and, when it recognises something, Render runs on a fixed
// conversation and on one made from the text itself (one message per line, roles from the
// line's first byte). Checked, as chat_template.h and docs/chat-templates.md say:
//   - a non-empty template is recognised by its markers alone, in the documented order
//     (<start_of_turn> gemma, <|start_header_id|> llama3, <|im_start|> chatml, [INST]
//     mistral; none: Unimplemented), whatever the architecture;
//   - an empty template gives the architecture's format exactly for gemma/gemma2/gemma3,
//     qwen2/qwen3 and llama with the llama3 header token, else Unimplemented;
//   - Render fails only for an empty conversation, an unknown role or (gemma) roles that do
//     not alternate, and says why.
// A broken invariant calls __builtin_trap() so that libFuzzer reports the input as a crash.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/chat_template.h"
#include "fuzz_check.h"

namespace ferry::chat {
namespace {

using ferry::fuzz::Check;

constexpr std::string_view kArchs[] = {"",      "gemma3", "gemma2", "gemma",  "qwen2",
                                       "qwen3", "llama",  "phi3",   "mistral"};
constexpr std::string_view kRoles[] = {"system", "user", "assistant", "model", "tool", ""};

bool Contains(std::string_view s, std::string_view what) {
  return s.find(what) != std::string_view::npos;
}

// The kind the documented rules give, or nullopt for "not recognised".
std::optional<TemplateKind> ExpectedKind(std::string_view jinja, std::string_view arch,
                                         bool llama3_header) {
  if (!jinja.empty()) {
    if (Contains(jinja, "<start_of_turn>")) return TemplateKind::kGemma;
    if (Contains(jinja, "<|start_header_id|>")) return TemplateKind::kLlama3;
    if (Contains(jinja, "<|im_start|>")) return TemplateKind::kChatml;
    if (Contains(jinja, "[INST]")) return TemplateKind::kMistral;
    return std::nullopt;
  }
  if (arch == "gemma3" || arch == "gemma2" || arch == "gemma") return TemplateKind::kGemma;
  if (arch == "qwen2" || arch == "qwen3") return TemplateKind::kChatml;
  if (arch == "llama" && llama3_header) return TemplateKind::kLlama3;
  return std::nullopt;
}

bool KnownRole(std::string_view role) {
  return role == "system" || role == "user" || role == "assistant" || role == "model";
}

// Whether Render may refuse `messages` for this kind (the documented reasons).
bool MayRefuse(TemplateKind kind, const std::vector<Message>& messages) {
  if (messages.empty()) return true;
  for (const Message& m : messages) {
    if (!KnownRole(m.role)) return true;
  }
  return kind == TemplateKind::kGemma;  // alternation: not re-derived here
}

void CheckRender(const ChatTemplate& t, const std::vector<Message>& messages) {
  for (bool gen : {true, false}) {
    StatusOr<std::string> out = t.Render(messages, gen);
    if (!out.ok()) {
      Check(MayRefuse(t.kind(), messages));
      Check(out.status().code() == StatusCode::kInvalidArgument);
      Check(!out.status().message().empty());
    }
  }
}

}  // namespace
}  // namespace ferry::chat

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ferry::chat;
  if (size == 0) return 0;
  constexpr size_t kNumArchs = sizeof(kArchs) / sizeof(kArchs[0]);
  const std::string_view arch = kArchs[data[0] % kNumArchs];
  const bool llama3_header = (data[0] / kNumArchs) & 1;
  const std::string_view jinja(reinterpret_cast<const char*>(data + 1), size - 1);

  ferry::StatusOr<ChatTemplate> t = ChatTemplate::Detect(jinja, arch, llama3_header);
  const std::optional<TemplateKind> expected = ExpectedKind(jinja, arch, llama3_header);
  if (!t.ok()) {
    Check(!expected.has_value());
    Check(t.status().code() == ferry::StatusCode::kUnimplemented);
    Check(!t.status().message().empty());
    return 0;
  }
  Check(expected.has_value() && t->kind() == *expected);
  Check(!t->source().empty());
  Check(!TemplateKindName(t->kind()).empty());

  // A well-formed conversation always renders.
  const std::vector<Message> conversation = {{"system", " Be brief. "},
                                             {"user", "Hi {{ .Prompt }} <|im_end|>"},
                                             {"assistant", "Hello!\n"},
                                             {"user", "\xC3\xA9t\xC3\xA9 \"quoted\" \\ {}"}};
  for (const std::vector<Message>& messages :
       {conversation, std::vector<Message>(conversation.begin() + 1, conversation.end())}) {
    ferry::StatusOr<std::string> out = t->Render(messages, true);
    Check(out.ok());
  }
  CheckRender(*t, {});

  // The template text as a conversation: a line per message, its first byte picks the role.
  std::vector<Message> from_text;
  size_t pos = 0;
  while (pos < jinja.size() && from_text.size() < 16) {
    size_t eol = jinja.find('\n', pos);
    if (eol == std::string_view::npos) eol = jinja.size();
    const std::string_view line = jinja.substr(pos, eol - pos);
    constexpr size_t kNumRoles = sizeof(kRoles) / sizeof(kRoles[0]);
    const std::string_view role =
        line.empty() ? "user" : kRoles[static_cast<uint8_t>(line[0]) % kNumRoles];
    from_text.push_back({std::string(role), std::string(line.empty() ? line : line.substr(1))});
    pos = eol + 1;
  }
  CheckRender(*t, from_text);
  return 0;
}
