// libFuzzer target for the Go-template interpreter (src/chat/go_template.h).
//
// Every input is template text for GoTemplate::Parse. What parses is rendered every way ferry
// renders a template: Render with every field set, RenderChat for a conversation with a system
// message, one without, and one whose roles do not alternate (the .Messages form and the
// legacy turn-by-turn form, whichever the template is), RenderInfill, and CutAfterResponse.
// The messages carry quotes, backslashes, HTML characters, template delimiters and non-ASCII
// text, so that json and the comparisons see them. Checked, as go_template.h says:
//   - a parse error is InvalidArgument "template: line L, byte B: ...";
//   - text() is the input; a template that uses neither .Messages nor .Response gets one;
//   - rendering fails only with InvalidArgument (what only execution can find) or, past the
//     limits for its data (RenderLimitsFor), ResourceExhausted, both naming the line; the
//     output never grows past the byte limit.
// A broken invariant calls __builtin_trap() so that libFuzzer reports the input as a crash;
// a template that runs away shows as a timeout or an out-of-memory report.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "chat/go_template.h"
#include "fuzz_check.h"

namespace ferry::chat {
namespace {

using ferry::fuzz::Check;

const std::vector<Message>& Conversation() {
  static const std::vector<Message> kConversation = {
      {"system", "Be \"brief\" \\ <b>&amp;</b>"},
      {"user", "Hi {{ .Prompt }}\n\t\xE2\x80\xA8 caf\xC3\xA9"},
      {"assistant", "Hello! 42"},
      {"user", ""},
  };
  return kConversation;
}

uint64_t Bytes(const std::vector<Message>& messages) {
  uint64_t n = 0;
  for (const Message& m : messages) n += m.role.size() + m.content.size();
  return n;
}

// Checks one rendering against the documented outcomes; false when it ran out of budget (a
// runaway template: rendering it again with other data tells nothing new and takes long).
bool CheckRendered(const Status& s, const std::string& out, const RenderLimits& limits) {
  Check(out.size() <= limits.bytes);
  if (s.ok()) return true;
  Check(s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kResourceExhausted);
  Check(s.message().starts_with("template: line "));
  return s.code() != StatusCode::kResourceExhausted;
}

bool CheckChat(const GoTemplate& t, const std::vector<Message>& messages) {
  StatusOr<std::string> r = RenderChat(t, messages);
  return CheckRendered(r.status(), r.ok() ? *r : std::string(),
                       RenderLimitsFor(messages.size(), Bytes(messages)));
}

}  // namespace
}  // namespace ferry::chat

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ferry::chat;
  using ferry::StatusCode;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ferry::StatusOr<GoTemplate> t = GoTemplate::Parse(text);
  if (!t.ok()) {
    Check(t.status().code() == StatusCode::kInvalidArgument);
    Check(t.status().message().starts_with("template: line "));
    return 0;
  }
  Check(t->text() == text);
  Check(t->UsesMessages() || t->UsesResponse());

  const std::vector<Message>& conv = Conversation();
  TemplateData all;
  all.system = conv[0].content;
  all.prompt = conv[1].content;
  all.response = conv[2].content;
  all.suffix = "}} suffix {{";
  all.messages = conv;
  const RenderLimits all_limits =
      RenderLimitsFor(conv.size(), all.system.size() + all.prompt.size() + all.response.size() +
                                       all.suffix.size() + Bytes(conv));
  std::string out;
  if (!CheckRendered(t->Render(all, &out), out, all_limits)) return 0;
  out.clear();
  if (!CheckRendered(t->CutAfterResponse().Render(all, &out), out, all_limits)) return 0;
  out.clear();
  if (!CheckRendered(t->Render(TemplateData(), &out), out, RenderLimitsFor(0, 0))) return 0;

  if (!CheckChat(*t, conv)) return 0;
  if (!CheckChat(*t, std::vector<Message>(conv.begin() + 1, conv.end()))) return 0;
  if (!CheckChat(*t, {conv[1], conv[1], conv[0], conv[2], conv[2]})) return 0;
  if (!CheckChat(*t, {})) return 0;
  ferry::StatusOr<std::string> infill = RenderInfill(*t, conv[1].content, all.suffix);
  (void)CheckRendered(infill.status(), infill.ok() ? *infill : std::string(),
                      RenderLimitsFor(0, conv[1].content.size() + all.suffix.size()));
  return 0;
}
