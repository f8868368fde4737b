#include "api/ollama.h"
#include "cmd_show.h"

#include <cstdio>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "base/printable.h"
#include "gguf/gguf.h"
#include "model/model_info.h"
#include "store/modelfile.h"

namespace ferry::app {
namespace {

using json = nlohmann::ordered_json;

json ValueToJson(const gguf::Value& v) { return api::GgufValueToJson(v); }

// {"type": "array", "element_type": "string", "value": [...]} or {"type": "uint32", "value": 7}.
json TypedValueToJson(const gguf::Value& v) {
  json j;
  j["type"] = gguf::ValueTypeName(v.type());
  if (v.type() == gguf::ValueType::kArray) {
    // Nested arrays: element_type of the outermost array only (the values carry the rest).
    j["element_type"] = gguf::ValueTypeName(std::get<gguf::Array>(v.data).type());
  }
  j["value"] = ValueToJson(v);
  return j;
}

template <typename T>
json Opt(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

std::string OptStr(const std::optional<uint64_t>& v) {
  return v ? fmt::format("{}", *v) : std::string("-");
}

std::string ShapeString(const std::vector<uint64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += fmt::format("{}{}", i ? ", " : "", dims[i]);
  return s + "]";
}

json ShowJson(const gguf::GgufFile& f, const ModelInfo& m, const ShowOptions& o) {
  json j;
  j["file"] = f.name();
  j["gguf_version"] = m.gguf_version;
  j["file_size"] = m.file_size;
  j["architecture"] = m.architecture;
  j["name"] = m.name;
  j["file_type"] = Opt(m.file_type);
  j["file_type_name"] = m.file_type_name;
  j["parameter_count"] = m.parameter_count;
  j["tensor_count"] = f.tensors().size();
  j["tensor_bytes"] = m.tensor_bytes;
  json types = json::object();
  for (const auto& [t, u] : m.tensor_types) {
    types[std::string(DTypeName(t))] = {{"count", u.count}, {"elements", u.elements},
                                        {"bytes", u.bytes}};
  }
  j["tensor_types"] = types;
  j["context_length"] = Opt(m.context_length);
  j["block_count"] = Opt(m.block_count);
  j["embedding_length"] = Opt(m.embedding_length);
  j["feed_forward_length"] = Opt(m.feed_forward_length);
  j["head_count"] = Opt(m.head_count);
  bool uniform_kv = !m.head_count_kv.empty() &&
                    std::all_of(m.head_count_kv.begin(), m.head_count_kv.end(),
                                [&](uint64_t n) { return n == m.head_count_kv[0]; });
  if (m.head_count_kv.empty()) {
    j["head_count_kv"] = nullptr;
  } else if (uniform_kv) {
    j["head_count_kv"] = m.head_count_kv[0];
  } else {
    j["head_count_kv"] = m.head_count_kv;
  }
  j["key_length"] = Opt(m.key_length);
  j["value_length"] = Opt(m.value_length);
  j["sliding_window"] = Opt(m.sliding_window);
  j["rope_freq_base"] = Opt(m.rope_freq_base);
  j["vocab_size"] = Opt(m.vocab_size);
  j["tokenizer_model"] = m.tokenizer_model;
  j["tokenizer_pre"] = m.tokenizer_pre;
  j["tokenizer_kind"] = m.tokenizer_kind;
  j["chat_template"] = m.has_chat_template;
  json kv = json::object();
  for (KvCacheType t : kAllKvCacheTypes) kv[std::string(KvCacheTypeName(t))] = Opt(m.KvBytesPerToken(t));
  j["kv_bytes_per_token"] = kv;
  if (o.tensors) {
    json ts = json::array();
    for (const gguf::TensorInfo& t : f.tensors()) {
      ts.push_back({{"name", t.name},
                    {"type", DTypeName(t.type)},
                    {"type_id", static_cast<uint32_t>(t.type)},
                    {"dims", t.dims},
                    {"offset", t.offset},
                    {"n_elements", t.n_elements},
                    {"n_bytes", t.n_bytes}});
    }
    j["tensors"] = ts;
  }
  if (o.metadata) {
    json md = json::object();
    for (const gguf::KeyValue& kv2 : f.metadata()) md[kv2.key] = TypedValueToJson(kv2.value);
    j["metadata"] = md;
  }
  return j;
}

// A metadata value for people: strings quoted, long arrays summarised.
std::string Brief(const gguf::Value& v) {
  if (v.type() == gguf::ValueType::kArray) {
    const gguf::Array& a = std::get<gguf::Array>(v.data);
    std::string s = fmt::format("[{} × {}]", a.size(), gguf::ValueTypeName(a.type()));
    if (a.size() <= 8) {
      s += " [";
      for (size_t i = 0; i < a.size(); ++i) s += (i ? ", " : "") + Brief(a.at(i));
      s += "]";
    }
    return s;
  }
  std::string s = ValueToJson(v).dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 120) s = s.substr(0, 117) + "...";
  return s;
}

void PrintText(const gguf::GgufFile& f, const ModelInfo& m, const ShowOptions& o) {
  auto row = [](std::string_view k, const std::string& v) {
    std::printf("  %-22s %s\n", std::string(k).c_str(), Printable(v).c_str());
  };
  std::printf("%s\n", Printable(f.name()).c_str());
  row("architecture", m.architecture);
  if (!m.name.empty()) row("name", m.name);
  row("parameters", fmt::format("{} ({})", FormatCount(m.parameter_count), m.parameter_count));
  std::string ft = m.file_type ? fmt::format("{} ({})", m.file_type_name.empty() ? "unknown"
                                                                              : m.file_type_name,
                                             *m.file_type)
                               : std::string("- (no general.file_type)");
  row("file type", ft);
  row("file size", fmt::format("{} (GGUF v{}, {} tensors, {} of weights)",
                               FormatBytes(m.file_size), m.gguf_version, f.tensors().size(),
                               FormatBytes(m.tensor_bytes)));
  row("context length", OptStr(m.context_length));
  row("layers", m.block_count && *m.block_count > f.tensors().size()
                    ? fmt::format("{} (more than the file's {} tensors: not loadable)",
                                  *m.block_count, f.tensors().size())
                    : OptStr(m.block_count));
  row("embedding size", OptStr(m.embedding_length));
  row("feed-forward size", OptStr(m.feed_forward_length));
  row("heads", OptStr(m.head_count));
  std::string kvh = "-";
  if (!m.head_count_kv.empty()) {
    bool uniform = std::all_of(m.head_count_kv.begin(), m.head_count_kv.end(),
                               [&](uint64_t n) { return n == m.head_count_kv[0]; });
    kvh = uniform ? fmt::format("{}", m.head_count_kv[0])
                  : fmt::format("per layer {}", ShapeString(m.head_count_kv));
  }
  row("KV heads", kvh);
  row("head size", m.key_length == m.value_length
                       ? OptStr(m.key_length)
                       : fmt::format("{} (K) / {} (V)", OptStr(m.key_length),
                                     OptStr(m.value_length)));
  if (m.sliding_window) row("sliding window", OptStr(m.sliding_window));
  if (m.rope_freq_base) row("rope base", fmt::format("{}", *m.rope_freq_base));
  std::string vocab = OptStr(m.vocab_size);
  if (!m.tokenizer_kind.empty()) {
    vocab += fmt::format(" tokens, {} ({}{})", m.tokenizer_kind, m.tokenizer_model,
                         m.tokenizer_pre.empty() ? "" : ", pre " + m.tokenizer_pre);
  }
  row("vocabulary", vocab);
  row("chat template", m.has_chat_template ? "yes" : "no");
  std::string kv;
  for (KvCacheType t : kAllKvCacheTypes) {
    auto b = m.KvBytesPerToken(t);
    kv += fmt::format("{}{} {}", kv.empty() ? "" : ", ", KvCacheTypeName(t),
                      b ? fmt::format("{} B", *b) : std::string("n/a"));
  }
  row("KV cache per token", kv);
  if (m.context_length) {
    auto b = m.KvBytesPerToken(KvCacheType::kF16);
    if (b) {
      row("", fmt::format("f16 at the full {} context: {}{}", *m.context_length,
                          FormatBytes(*b * *m.context_length),
                          m.sliding_window ? " (upper bound: sliding-window layers keep less)"
                                           : ""));
    }
  }
  if (!m.tensor_types.empty()) {
    std::printf("\n  %-8s %8s %16s %12s %7s\n", "type", "tensors", "parameters", "bytes", "share");
    for (const auto& [t, u] : m.tensor_types) {
      double share = m.tensor_bytes ? 100.0 * static_cast<double>(u.bytes) /
                                          static_cast<double>(m.tensor_bytes)
                                    : 0.0;
      std::printf("  %-8s %8llu %16llu %12s %6.1f%%\n", std::string(DTypeName(t)).c_str(),
                  static_cast<unsigned long long>(u.count),
                  static_cast<unsigned long long>(u.elements), FormatBytes(u.bytes).c_str(),
                  share);
    }
  }
  if (o.tensors) {
    std::printf("\n  %-40s %-8s %-24s %12s %12s\n", "tensor", "type", "shape", "bytes", "offset");
    for (const gguf::TensorInfo& t : f.tensors()) {
      std::printf("  %-40s %-8s %-24s %12llu %12llu\n", Printable(t.name).c_str(),
                  std::string(DTypeName(t.type)).c_str(), ShapeString(t.dims).c_str(),
                  static_cast<unsigned long long>(t.n_bytes),
                  static_cast<unsigned long long>(t.offset));
    }
  }
  if (o.metadata) {
    std::printf("\n  metadata\n");
    for (const gguf::KeyValue& kv2 : f.metadata()) {
      std::printf("  %-44s %-8s %s\n", Printable(kv2.key).c_str(),
                  std::string(gguf::ValueTypeName(kv2.value.type())).c_str(),
                  Printable(Brief(kv2.value)).c_str());
    }
  }
}

// --modelfile, --parameters, --template: what the store holds for the model (nothing beyond
// FROM for a bare GGUF file).
int PrintStored(const Settings& settings, const ShowOptions& o) {
  auto found = FindModel(settings, o.model);
  if (!found.ok()) {
    std::fprintf(stderr, "ferry: %s\n", found.status().message().c_str());
    return 1;
  }
  store::Modelfile mf;
  mf.from = found->path;
  if (found->stored) mf.extras = found->stored->extras;
  if (o.modelfile) {
    std::printf("# Modelfile generated by \"ferry show\"\n");
    if (found->stored) {
      std::printf("# To build a new Modelfile based on this, replace FROM with:\n# FROM %s\n",
                  found->stored->name.DisplayName().c_str());
    }
    std::printf("\n%s", Printable(store::FormatModelfile(mf), /*multiline=*/true).c_str());
  } else if (o.parameters) {
    // Ollama's layout: the name padded to 30, then the value (strings quoted).
    for (const auto& [name, values] : mf.extras.parameters) {
      const bool text = store::FindParameterType(name) == store::ParameterType::kStringList;
      for (const std::string& v : values) {
        std::printf("%-30s %s\n", Printable(name).c_str(),
                    Printable(text ? json(v).dump() : v).c_str());
      }
    }
  } else if (mf.extras.template_text) {
    std::printf("%s\n", Printable(*mf.extras.template_text, /*multiline=*/true).c_str());
  }
  return 0;
}

}  // namespace

void AddShowCommand(CLI::App& app, ShowOptions& o) {
  CLI::App* show = app.add_subcommand(
      "show",
      "Describe a GGUF model: architecture, sizes, tensor types, KV cache per token; or print a "
      "model's Modelfile, parameters or template");
  show->add_option("model", o.model, "GGUF file path, or a model name (see ferry list)")
      ->required();
  show->add_flag("--json", o.json, "Print JSON (keys named after the GGUF ones)");
  show->add_flag("--tensors", o.tensors, "Also list every tensor: type, shape, bytes, offset");
  show->add_flag("--metadata", o.metadata, "Also list every metadata key with its type and value");
  CLI::Option* mf = show->add_flag("--modelfile", o.modelfile, "Print the model's Modelfile");
  CLI::Option* params =
      show->add_flag("--parameters", o.parameters, "Print the model's PARAMETERs");
  CLI::Option* tmpl = show->add_flag("--template", o.template_text, "Print the model's TEMPLATE");
  mf->excludes(params)->excludes(tmpl);
  params->excludes(tmpl);
}

int RunShow(const Settings& settings, const ShowOptions& o) {
  if (o.modelfile || o.parameters || o.template_text) return PrintStored(settings, o);
  auto path = ResolveModel(settings, o.model);
  if (!path.ok()) {
    std::fprintf(stderr, "ferry: %s\n", path.status().message().c_str());
    return 1;
  }
  auto file = gguf::GgufFile::Open(*path);
  if (!file.ok()) {
    std::fprintf(stderr, "ferry: %s\n", file.status().message().c_str());
    return 1;
  }
  auto info = ReadModelInfo(**file);
  if (!info.ok()) {
    std::fprintf(stderr, "ferry: %s\n", info.status().message().c_str());
    return 1;
  }
  if (o.json) {
    std::string out = ShowJson(**file, *info, o).dump(2, ' ', false, json::error_handler_t::replace);
    std::printf("%s\n", out.c_str());
  } else {
    PrintText(**file, *info, o);
  }
  return 0;
}

}  // namespace ferry::app
