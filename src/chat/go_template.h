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
// Thread-safety: a GoTemplate is immutable after Parse(); Render() and the Render* helpers may
// be called from any thread concurrently. Copies share the parsed tree.
#ifndef FERRY_CHAT_GO_TEMPLATE_H_
#define FERRY_CHAT_GO_TEMPLATE_H_

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

namespace go_template_internal {
struct Tree;
}  // namespace go_template_internal

class GoTemplate {
 public:
  // Parses `text` once; errors are InvalidArgument "template: line L, byte B: ...".
  static StatusOr<GoTemplate> Parse(std::string_view text);

  // Appends the rendering of `data` to *out. Errors (InvalidArgument, naming the line) are those
  // only execution can find: an index out of range, comparing a string with an integer, ...
  // On an error *out holds what was rendered before it.
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
  explicit GoTemplate(std::shared_ptr<const go_template_internal::Tree> tree)
      : tree_(std::move(tree)) {}
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
// print "<no value>").
StatusOr<std::string> RenderChat(const GoTemplate& tmpl, const std::vector<Message>& messages);

// Ollama's fill-in-the-middle rendering for /api/generate with a suffix: .Prompt and .Suffix
// set, everything else empty.
StatusOr<std::string> RenderInfill(const GoTemplate& tmpl, std::string_view prompt,
                                   std::string_view suffix);

}  // namespace ferry::chat

#endif  // FERRY_CHAT_GO_TEMPLATE_H_
