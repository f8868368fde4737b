#include "store/model_name.h"

#include <vector>

namespace ferry::store {
namespace {

enum class PartKind { kHost, kNamespace, kModel, kTag };

std::string_view PartKindName(PartKind kind) {
  switch (kind) {
    case PartKind::kHost:
      return "host";
    case PartKind::kNamespace:
      return "namespace";
    case PartKind::kModel:
      return "model name";
    case PartKind::kTag:
      return "tag";
  }
  return "part";
}

size_t MaxLength(PartKind kind) {
  switch (kind) {
    case PartKind::kHost:
      return kMaxHostLength;
    case PartKind::kNamespace:
      return kMaxNamespaceLength;
    case PartKind::kModel:
      return kMaxModelLength;
    case PartKind::kTag:
      return kMaxTagLength;
  }
  return 0;
}

bool IsAlnumOrUnderscore(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// Printable form of a byte for an error message.
std::string Printable(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return fmt::format("'{}'", c);
  return fmt::format("byte 0x{:02x}", u);
}

Status ValidatePart(PartKind kind, std::string_view part, std::string_view text) {
  const std::string_view what = PartKindName(kind);
  if (part.empty()) return InvalidArgumentError("invalid model name \"{}\": empty {}", text, what);
  if (part.size() > MaxLength(kind)) {
    return InvalidArgumentError("invalid model name \"{}\": {} is {} characters, more than {}",
                                text, what, part.size(), MaxLength(kind));
  }
  if (part.find("..") != std::string_view::npos) {
    return InvalidArgumentError("invalid model name \"{}\": {} contains \"..\"", text, what);
  }
  if (!IsAlnumOrUnderscore(part[0])) {
    return InvalidArgumentError(
        "invalid model name \"{}\": {} \"{}\" must start with a letter, digit or '_'", text, what,
        part);
  }
  for (char c : part) {
    if (IsAlnumOrUnderscore(c) || c == '-' || c == '.') continue;
    if (c == ':' && kind == PartKind::kHost) continue;  // host:port
    return InvalidArgumentError(
        "invalid model name \"{}\": {} \"{}\" contains {} (allowed: letters, digits, '_', '-', "
        "'.')",
        text, what, part, Printable(c));
  }
  return Status::Ok();
}

}  // namespace

std::string ModelName::FullName() const {
  return fmt::format("{}/{}/{}:{}", host, name_space, model, tag);
}

std::string ModelName::DisplayName() const {
  if (host == kDefaultHost) {
    if (name_space == kDefaultNamespace) return fmt::format("{}:{}", model, tag);
    return fmt::format("{}/{}:{}", name_space, model, tag);
  }
  return FullName();
}

std::string ModelName::ManifestPath() const {
  return fmt::format("{}/{}/{}/{}", host, name_space, model, tag);
}

StatusOr<ModelName> ParseModelName(std::string_view text) {
  if (text.empty()) return InvalidArgumentError("invalid model name: empty");
  if (text.front() == '/' || text.front() == '\\' || text.front() == '~') {
    return InvalidArgumentError("invalid model name \"{}\": a path, not a model name", text);
  }
  ModelName name;
  name.tag = std::string(kDefaultTag);
  std::string_view rest = text;
  const size_t last_slash = rest.rfind('/');
  const size_t colon = rest.find(':', last_slash == std::string_view::npos ? 0 : last_slash + 1);
  if (colon != std::string_view::npos) {
    std::string_view tag = rest.substr(colon + 1);
    if (tag.find(':') != std::string_view::npos) {
      return InvalidArgumentError("invalid model name \"{}\": more than one ':'", text);
    }
    FERRY_RETURN_IF_ERROR(ValidatePart(PartKind::kTag, tag, text));
    name.tag = std::string(tag);
    rest = rest.substr(0, colon);
  }
  std::vector<std::string_view> parts;
  while (true) {
    size_t slash = rest.find('/');
    parts.push_back(rest.substr(0, slash));
    if (slash == std::string_view::npos) break;
    rest = rest.substr(slash + 1);
  }
  if (parts.size() > 3) {
    return InvalidArgumentError(
        "invalid model name \"{}\": {} '/'-separated parts, at most 3 (host/namespace/name)", text,
        parts.size());
  }
  name.host = std::string(kDefaultHost);
  name.name_space = std::string(kDefaultNamespace);
  size_t i = 0;
  if (parts.size() == 3) {
    FERRY_RETURN_IF_ERROR(ValidatePart(PartKind::kHost, parts[i], text));
    name.host = std::string(parts[i++]);
  }
  if (parts.size() >= 2) {
    FERRY_RETURN_IF_ERROR(ValidatePart(PartKind::kNamespace, parts[i], text));
    name.name_space = std::string(parts[i++]);
  }
  FERRY_RETURN_IF_ERROR(ValidatePart(PartKind::kModel, parts[i], text));
  name.model = std::string(parts[i]);
  return name;
}

}  // namespace ferry::store
