#include "chat/chat_template.h"

#include <fmt/format.h>

namespace ferry::chat {
namespace {

constexpr std::string_view kQwenDefaultSystem =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\n' || s[b] == '\t' || s[b] == '\r')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\n' || s[e - 1] == '\t' || s[e - 1] == '\r')) {
    --e;
  }
  return std::string(s.substr(b, e - b));
}

Status CheckRole(const Message& m) {
  if (m.role == "system" || m.role == "user" || m.role == "assistant" || m.role == "model") {
    return Status::Ok();
  }
  return InvalidArgumentError("unknown message role '{}' (expected system, user or assistant)",
                              m.role);
}

}  // namespace

std::string_view TemplateKindName(TemplateKind kind) {
  switch (kind) {
    case TemplateKind::kGemma: return "gemma";
    case TemplateKind::kLlama3: return "llama3";
    case TemplateKind::kChatml: return "chatml";
    case TemplateKind::kMistral: return "mistral";
  }
  return "?";
}

StatusOr<ChatTemplate> ChatTemplate::Named(std::string_view name) {
  for (TemplateKind k : {TemplateKind::kGemma, TemplateKind::kLlama3, TemplateKind::kChatml,
                         TemplateKind::kMistral}) {
    if (TemplateKindName(k) == name) {
      return ChatTemplate(k, fmt::format("--template {}", name), "");
    }
  }
  return InvalidArgumentError("unknown template '{}' (known: gemma, llama3, chatml, mistral)",
                              name);
}

StatusOr<ChatTemplate> ChatTemplate::Detect(std::string_view jinja, std::string_view arch,
                                            bool vocab_has_llama3_header) {
  if (!jinja.empty()) {
    const std::string src = "recognised the file's chat template";
    if (jinja.find("<start_of_turn>") != std::string_view::npos) {
      return ChatTemplate(TemplateKind::kGemma, src, "");
    }
    if (jinja.find("<|start_header_id|>") != std::string_view::npos) {
      return ChatTemplate(TemplateKind::kLlama3, src, "");
    }
    if (jinja.find("<|im_start|>") != std::string_view::npos) {
      bool qwen25 = jinja.find("You are Qwen, created by Alibaba Cloud") != std::string_view::npos;
      return ChatTemplate(TemplateKind::kChatml, src,
                          qwen25 ? std::string(kQwenDefaultSystem) : "");
    }
    if (jinja.find("[INST]") != std::string_view::npos) {
      return ChatTemplate(TemplateKind::kMistral, src, "");
    }
    return UnimplementedError("the model's chat template is not one ferry recognises (gemma, "
                              "llama3, chatml/qwen, mistral); use --raw to send the prompt as is");
  }
  const std::string src = fmt::format("no chat template in the file; default for {}", arch);
  if (arch == "gemma3" || arch == "gemma2" || arch == "gemma") {
    return ChatTemplate(TemplateKind::kGemma, src, "");
  }
  if (arch == "qwen2" || arch == "qwen3") return ChatTemplate(TemplateKind::kChatml, src, "");
  if (arch == "llama" && vocab_has_llama3_header) {
    return ChatTemplate(TemplateKind::kLlama3, src, "");
  }
  return UnimplementedError("the model has no chat template and its architecture '{}' does not "
                            "imply one; use --raw",
                            arch);
}

StatusOr<std::string> ChatTemplate::Render(const std::vector<Message>& messages,
                                           bool add_generation_prompt) const {
  if (messages.empty()) return InvalidArgumentError("a chat needs at least one message");
  for (const Message& m : messages) FERRY_RETURN_IF_ERROR(CheckRole(m));
  std::string out;
  switch (kind_) {
    case TemplateKind::kGemma: {
      // A leading system message becomes a prefix of the first user turn.
      size_t i = 0;
      std::string prefix;
      if (messages[0].role == "system") {
        prefix = Trim(messages[0].content) + "\n\n";
        i = 1;
      }
      bool expect_user = true;
      for (; i < messages.size(); ++i) {
        const Message& m = messages[i];
        if (m.role == "system") {
          return InvalidArgumentError("gemma: a system message is only allowed first");
        }
        const bool is_user = m.role == "user";
        if (is_user != expect_user) {
          return InvalidArgumentError(
              "gemma: conversation roles must alternate user/assistant/user/...");
        }
        out += fmt::format("<start_of_turn>{}\n{}{}<end_of_turn>\n", is_user ? "user" : "model",
                           prefix, Trim(m.content));
        prefix.clear();
        expect_user = !expect_user;
      }
      if (add_generation_prompt) out += "<start_of_turn>model\n";
      return out;
    }
    case TemplateKind::kLlama3: {
      for (const Message& m : messages) {
        const std::string role = m.role == "model" ? "assistant" : m.role;
        out += fmt::format("<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>", role,
                           Trim(m.content));
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    }
    case TemplateKind::kChatml: {
      if (messages[0].role != "system" && !default_system_.empty()) {
        out += fmt::format("<|im_start|>system\n{}<|im_end|>\n", default_system_);
      }
      for (const Message& m : messages) {
        const std::string role = m.role == "model" ? "assistant" : m.role;
        out += fmt::format("<|im_start|>{}\n{}<|im_end|>\n", role, m.content);
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    }
    case TemplateKind::kMistral: {
      // v0.1 style: system text is prepended to the first user message.
      std::string system;
      for (size_t i = 0; i < messages.size(); ++i) {
        const Message& m = messages[i];
        if (m.role == "system") {
          system += Trim(m.content) + "\n\n";
        } else if (m.role == "user") {
          out += fmt::format("[INST] {}{} [/INST]", system, Trim(m.content));
          system.clear();
        } else {
          out += fmt::format("{}</s>", Trim(m.content));
        }
      }
      return out;
    }
  }
  return InternalError("unknown template kind");
}

}  // namespace ferry::chat
