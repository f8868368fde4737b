// Chat templates: turn a list of messages into the prompt text a model was trained on.
//
// ferry does not interpret Jinja. It recognises the GGUF's `tokenizer.chat_template` text by
// markers unique to each family and renders that family's format with built-in C++ code
// (docs/chat-templates.md lists the markers and formats). A file without a template gets the
// format of its architecture when that is unambiguous (gemma3 -> gemma; qwen2/qwen3 -> chatml;
// llama with a <|start_header_id|> token -> llama3). An unrecognised template is an error that
// suggests --raw, never a silent guess.
//
// Rendered text never contains the BOS token: callers tokenize it with add_special = true
// (BOS per the vocabulary's add_bos flag) and parse_special = true.
//
// Thread-safety: ChatTemplate is immutable; Render() may be called from any thread.
#ifndef FERRY_CHAT_CHAT_TEMPLATE_H_
#define FERRY_CHAT_CHAT_TEMPLATE_H_

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace ferry::chat {

struct Message {
  std::string role;  // "system", "user", "assistant" (or "model" for gemma)
  std::string content;
};

enum class TemplateKind {
  kGemma,    // <start_of_turn>user\n...<end_of_turn>\n<start_of_turn>model\n
  kLlama3,   // <|start_header_id|>user<|end_header_id|>\n\n...<|eot_id|>
  kChatml,   // <|im_start|>user\n...<|im_end|>\n (Qwen 2/2.5/3)
  kMistral,  // [INST] ... [/INST] answer</s>
};
std::string_view TemplateKindName(TemplateKind kind);

class ChatTemplate {
 public:
  // From the GGUF template text (may be empty), the architecture and whether the vocabulary
  // has a "<|start_header_id|>" token.
  static StatusOr<ChatTemplate> Detect(std::string_view jinja, std::string_view architecture,
                                       bool vocab_has_llama3_header);

  // A built-in format by its TemplateKindName ("gemma", "llama3", "chatml", "mistral"), for a
  // file without a template (`ferry run --template NAME`). InvalidArgument lists the names.
  static StatusOr<ChatTemplate> Named(std::string_view name);

  TemplateKind kind() const { return kind_; }
  // Where the choice came from, for --verbose and docs: "recognised template" or
  // "no template in the file; gemma3 architecture default".
  const std::string& source() const { return source_; }

  // Renders the conversation; with add_generation_prompt, ends with the assistant turn header.
  // Errors: an empty conversation, an unknown role, or (gemma) roles that do not alternate.
  StatusOr<std::string> Render(const std::vector<Message>& messages,
                               bool add_generation_prompt) const;

 private:
  ChatTemplate(TemplateKind kind, std::string source, std::string default_system)
      : kind_(kind), source_(std::move(source)), default_system_(std::move(default_system)) {}
  TemplateKind kind_;
  std::string source_;
  std::string default_system_;  // Qwen 2.5 adds one when the conversation has none
};

}  // namespace ferry::chat

#endif  // FERRY_CHAT_CHAT_TEMPLATE_H_
