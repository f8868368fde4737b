// GoTemplate: the subset of Go's text/template that Ollama Modelfile TEMPLATEs use.
//
// Ollama renders prompts with Go's text/template over a fixed schema: .System, .Prompt,
// .Response, .Suffix (strings), .Messages (a list of {.Role, .Content}) and .Tools (always
// empty in ferry). Because ferry knows that schema, Parse() checks every field access against
// it: a template that could only fail while serving (an unknown field or function, a bad
// construct, unbalanced delimiters, an unclosed block) is an InvalidArgument error naming the
// line and byte offset, so `create` fails rather than a later request.
//
// Supported: text; {{ pipeline }}; {{- and -}} trimming (as Go: all adjacent " \t\r\n");
// {{/* comments */}}; {{ if }} / {{ else if }} / {{ else }} / {{ end }}; {{ range }} with
// {{ else }} and `$i, $m :=` declarations; {{ with }}; variables ($, $x := ..., $x = ...);
// field chains on dot, on variables and on (parenthesised pipelines); string ("..." with Go
// escapes, `raw`), integer, true/false/nil literals; pipelines with |; functions eq ne lt le gt
// ge and or not len index slice, and Ollama's json. Go's truthiness and its and/or semantics
// (return the deciding argument, short-circuit) apply. Not supported (parse errors):
// define/template/block, break/continue, print/printf/println/html/js/urlquery/call, floats,
// char constants, range over integers.
//
// As Ollama's template.Parse does, a template that uses neither .Messages nor .Response gets a
// trailing {{ .Response }}.
//
// Rendering is bounded, so that a hostile template (a /api/generate request's `template`, a
// Modelfile's TEMPLATE) can neither hang the server with nested range loops nor exhaust its
// memory with chained json calls: one Render, RenderChat or RenderInfill call may take
// RenderLimits::steps steps (a node, a command, an argument evaluated, a range iteration) and
// copy RenderLimits::bytes bytes of text (output, field and variable reads, function results,
// all counted); past either it fails with ResourceExhausted naming the line. The limits grow
// with the data (RenderLimitsFor), so that real templates, a few dozen steps per message and a
// few times their data's bytes, stay far below them.
//
// Thread-safety: a GoTemplate is immutable after Parse(); Render() and the Render* helpers may
// be called from any thread concurrently. Copies share the parsed tree.
#ifndef FERRY_CHAT_GO_TEMPLATE_H_
#define FERRY_CHAT_GO_TEMPLATE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "chat/chat_template.h"

namespace ferry::chat {

// The data a template renders: Ollama's template values. .Tools is always empty.
struct TemplateData {
  std::string system;
  std::string prompt;
  std::string response;
  std::string suffix;
  std::vector<Message> messages;
};

// What one rendering may spend (see the top of this file).
struct RenderLimits {
  uint64_t steps = 0;
  uint64_t bytes = 0;
};
inline constexpr uint64_t kRenderBaseSteps = uint64_t{1} << 20;
inline constexpr uint64_t kRenderStepsPerMessage = uint64_t{1} << 10;
inline constexpr uint64_t kRenderBaseBytes = uint64_t{16} << 20;
inline constexpr uint64_t kRenderBytesPerDataByte = 8;
// The limits for data of `messages` messages and `data_bytes` bytes of text (.System, .Prompt,
// .Response, .Suffix and every message's role and content): kRenderBaseSteps +
// kRenderStepsPerMessage per message, kRenderBaseBytes + kRenderBytesPerDataByte per byte.
RenderLimits RenderLimitsFor(uint64_t messages, uint64_t data_bytes);

namespace go_template_internal {
struct Tree;
struct Budget;
}  // namespace go_template_internal

class GoTemplate {
 public:
  // Parses `text` once; errors are InvalidArgument "template: line L, byte B: ...".
  static StatusOr<GoTemplate> Parse(std::string_view text);

  // Appends the rendering of `data` to *out. Errors (InvalidArgument, naming the line) are those
  // only execution can find: an index out of range, comparing a string with an integer, ...;
  // ResourceExhausted past the limits for `data` (RenderLimitsFor). On an error *out holds what
  // was rendered before it.
  Status Render(const TemplateData& data, std::string* out) const;

  // Whether the template reads .Messages (Ollama then renders a chat in one pass; otherwise
  // turn by turn through .System/.Prompt/.Response, see RenderChat), .Suffix (fill-in-the-middle
  // for /api/generate's suffix) or .Response.
  bool UsesMessages() const;
  bool UsesSuffix() const;
  bool UsesResponse() const;

  // The text given to Parse().
  const std::string& text() const;

  // Ollama's cut for the last turn of a legacy template: a copy with everything after the first
  // {{ .Response }} (in document order, if-conditions not counted) removed, so the prompt ends
  // where the model's answer begins.
  GoTemplate CutAfterResponse() const;

 private:
  friend StatusOr<std::string> RenderChat(const GoTemplate& tmpl,
                                          const std::vector<Message>& messages);
  explicit GoTemplate(std::shared_ptr<const go_template_internal::Tree> tree)
      : tree_(std::move(tree)) {}
  // Render spending from `budget`, which several renderings may share (RenderChat).
  Status Render(const TemplateData& data, std::string* out,
                go_template_internal::Budget* budget) const;
  std::shared_ptr<const go_template_internal::Tree> tree_;
};

// Ollama's chat rendering (template.Execute over server/prompt.go's messages):
// - messages are collated: consecutive messages of one role (except "tool") are joined with
//   "\n\n"; all system contents, joined with "\n\n", are .System;
// - a template using .Messages renders once with .System, .Messages and an empty .Response;
// - otherwise each user turn is rendered with .System (a system message seen since the last
//   render), .Prompt (the user content) and .Response (the assistant reply that followed), the
//   renderings concatenated; the last turn is rendered with CutAfterResponse(), so the prompt
//   ends at the assistant's (possibly partial) answer. Other roles ("tool") are skipped there.
// Fields the rule leaves unset (.Prompt in the .Messages form) are empty strings (Go would
// print "<no value>"). The turns share one budget: the limits for all of `messages`.
StatusOr<std::string> RenderChat(const GoTemplate& tmpl, const std::vector<Message>& messages);

// Ollama's fill-in-the-middle rendering for /api/generate with a suffix: .Prompt and .Suffix
// set, everything else empty.
StatusOr<std::string> RenderInfill(const GoTemplate& tmpl, std::string_view prompt,
                                   std::string_view suffix);

}  // namespace ferry::chat

#endif  // FERRY_CHAT_GO_TEMPLATE_H_
