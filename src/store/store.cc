#include "store/store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "base/log.h"
#include "base/sha256.h"
#include "base/thread_annotations.h"
#include "gguf/gguf.h"

namespace ferry::store {

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

constexpr std::string_view kDigestPrefix = "sha256:";
constexpr size_t kCopyChunk = size_t{1} << 20;

struct Layer {
  std::string media_type;
  std::string digest;  // validated "sha256:<hex>"
  uint64_t size = 0;
};

struct Manifest {
  Layer config;
  std::vector<Layer> layers;
};

// A manifest found in one of the two stores.
struct Located {
  std::string root;  // the store root holding it (and its blobs)
  bool read_only = false;
  std::string path;
  std::string bytes;
  Manifest manifest;
};

std::string ErrnoText() { return std::strerror(errno); }

// Precondition: ValidateDigest(digest) is OK.
std::string BlobPath(const std::string& root, std::string_view digest) {
  return fmt::format("{}/blobs/sha256-{}", root, digest.substr(kDigestPrefix.size()));
}

std::string ManifestFile(const std::string& root, const ModelName& name) {
  return fmt::format("{}/manifests/{}", root, name.ManifestPath());
}

StatusOr<std::string> ReadWholeFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFoundError("{}: no such file", path);
    return IoError("{}: cannot open: {}", path, ErrnoText());
  }
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      Status s = IoError("{}: read failed: {}", path, ErrnoText());
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

struct Hashed {
  std::string digest;  // "sha256:<hex>"
  uint64_t size = 0;
};

// Streams `src` into its SHA-256 and, when `dst_fd` >= 0, into that file as well.
StatusOr<Hashed> HashAndCopy(const std::string& src, int dst_fd, const std::string& dst_name) {
  int fd = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFoundError("{}: no such file", src);
    return IoError("{}: cannot open: {}", src, ErrnoText());
  }
  std::vector<char> buf(kCopyChunk);
  Sha256 hash;
  Hashed out;
  Status status;
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      status = IoError("{}: read failed: {}", src, ErrnoText());
      break;
    }
    if (n == 0) break;
    hash.Update(buf.data(), static_cast<size_t>(n));
    out.size += static_cast<uint64_t>(n);
    for (ssize_t done = 0; dst_fd >= 0 && done < n;) {
      ssize_t w = ::write(dst_fd, buf.data() + done, static_cast<size_t>(n - done));
      if (w < 0) {
        if (errno == EINTR) continue;
        status = IoError("{}: write failed: {}", dst_name, ErrnoText());
        break;
      }
      done += w;
    }
    if (!status.ok()) break;
  }
  ::close(fd);
  FERRY_RETURN_IF_ERROR(status);
  out.digest = fmt::format("{}{}", kDigestPrefix, DigestToHex(hash.Finish()));
  return out;
}

// A temporary file in `dir` (a name starting with '.', which no blob or manifest has).
class TempFile {
 public:
  static StatusOr<TempFile> Create(const std::string& dir) {
    static std::atomic<uint64_t> counter{0};
    TempFile t;
    t.path_ = fmt::format("{}/.partial-{}-{}", dir, ::getpid(), counter.fetch_add(1));
    t.fd_ = ::open(t.path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (t.fd_ < 0) return IoError("{}: cannot create: {}", t.path_, ErrnoText());
    return t;
  }
  TempFile(TempFile&& o) noexcept : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)) {
    o.path_.clear();
  }
  TempFile& operator=(TempFile&&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

  Status Write(std::string_view bytes) {
    for (size_t done = 0; done < bytes.size();) {
      ssize_t w = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        return IoError("{}: write failed: {}", path_, ErrnoText());
      }
      done += static_cast<size_t>(w);
    }
    return Status::Ok();
  }

  // Flushes to disk, closes and renames onto `dst` (atomically replacing it).
  Status CommitAs(const std::string& dst) {
    if (::fsync(fd_) != 0) return IoError("{}: fsync failed: {}", path_, ErrnoText());
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return IoError("{}: close failed: {}", path_, ErrnoText());
    if (::rename(path_.c_str(), dst.c_str()) != 0) {
      return IoError("cannot rename {} to {}: {}", path_, dst, ErrnoText());
    }
    path_.clear();
    return Status::Ok();
  }

 private:
  TempFile() = default;
  std::string path_;
  int fd_ = -1;
};

Status WriteFileAtomically(const std::string& path, std::string_view bytes) {
  std::error_code ec;
  const std::string dir = fs::path(path).parent_path().string();
  fs::create_directories(dir, ec);
  if (ec) return IoError("{}: cannot create directory: {}", dir, ec.message());
  FERRY_ASSIGN_OR_RETURN(TempFile tmp, TempFile::Create(dir));
  FERRY_RETURN_IF_ERROR(tmp.Write(bytes));
  return tmp.CommitAs(path);
}

StatusOr<Layer> ParseLayer(const Json& j, const std::string& path, std::string_view what) {
  if (!j.is_object()) return DataLossError("manifest {}: {} is not an object", path, what);
  auto media = j.find("mediaType");
  auto digest = j.find("digest");
  auto size = j.find("size");
  if (media == j.end() || !media->is_string() || digest == j.end() || !digest->is_string() ||
      size == j.end() || !size->is_number_unsigned()) {
    return DataLossError("manifest {}: {} needs string mediaType, string digest, unsigned size",
                         path, what);
  }
  Layer layer{media->get<std::string>(), digest->get<std::string>(), size->get<uint64_t>()};
  Status valid = ValidateDigest(layer.digest);
  if (!valid.ok()) return DataLossError("manifest {}: {}: {}", path, what, valid.message());
  return layer;
}

StatusOr<Manifest> ParseManifest(std::string_view bytes, const std::string& path) {
  Json j = Json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return DataLossError("manifest {}: not JSON", path);
  auto version = j.find("schemaVersion");
  if (version == j.end() || !version->is_number_integer() || version->get<int64_t>() != 2) {
    return DataLossError("manifest {}: schemaVersion is not 2", path);
  }
  Manifest m;
  auto config = j.find("config");
  if (config == j.end()) return DataLossError("manifest {}: no config", path);
  FERRY_ASSIGN_OR_RETURN(m.config, ParseLayer(*config, path, "config"));
  auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array()) {
    return DataLossError("manifest {}: no layers array", path);
  }
  for (size_t i = 0; i < layers->size(); ++i) {
    FERRY_ASSIGN_OR_RETURN(Layer layer, ParseLayer((*layers)[i], path, fmt::format("layer {}", i)));
    m.layers.push_back(std::move(layer));
  }
  return m;
}

Json LayerJson(const Layer& l) {
  return Json{{"mediaType", l.media_type}, {"digest", l.digest}, {"size", l.size}};
}

std::string SerializeManifest(const Manifest& m) {
  Json layers = Json::array();
  for (const Layer& l : m.layers) layers.push_back(LayerJson(l));
  Json j = {{"schemaVersion", 2},
            {"mediaType", kManifestMediaType},
            {"config", LayerJson(m.config)},
            {"layers", layers}};
  return j.dump();
}

const Layer* FindModelLayer(const Manifest& m) {
  for (const Layer& l : m.layers) {
    if (l.media_type == kModelMediaType) return &l;
  }
  return nullptr;
}


// Ollama's parameter_size style: "7.2B", "135.0M", "292.9K".
std::string ParameterSize(uint64_t count) {
  double v = static_cast<double>(count);
  if (count >= 1000000000ULL) return fmt::format("{:.1f}B", v / 1e9);
  if (count >= 1000000ULL) return fmt::format("{:.1f}M", v / 1e6);
  if (count >= 1000ULL) return fmt::format("{:.1f}K", v / 1e3);
  return fmt::format("{}", count);
}

StatusOr<ModelDetails> DetailsFromGguf(const std::string& path) {
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::Open(path));
  ModelDetails d;
  d.format = "gguf";
  if (auto arch = file->GetString("general.architecture"); arch.ok()) {
    d.family = std::string(*arch);
    d.families = {d.family};
  }
  uint64_t params = 0;
  for (const gguf::TensorInfo& t : file->tensors()) params += t.n_elements;
  d.parameter_size = ParameterSize(params);
  if (auto ft = file->GetUint("general.file_type"); ft.ok()) {
    d.quantization_level = std::string(gguf::FileTypeName(*ft));
  }
  return d;
}

std::string ConfigJson(const ModelDetails& d, const std::vector<Layer>& layers) {
  Json diff_ids = Json::array();
  for (const Layer& l : layers) diff_ids.push_back(l.digest);
  Json j = {{"model_format", d.format},
            {"model_family", d.family},
            {"model_families", d.families},
            {"model_type", d.parameter_size},
            {"file_type", d.quantization_level},
            {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
  return j.dump();
}

ModelDetails DetailsFromConfig(std::string_view bytes) {
  ModelDetails d;
  Json j = Json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return d;
  auto str = [&](const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  d.format = str("model_format");
  d.family = str("model_family");
  d.parameter_size = str("model_type");
  d.quantization_level = str("file_type");
  if (auto it = j.find("model_families"); it != j.end() && it->is_array()) {
    for (const Json& f : *it) {
      if (f.is_string()) d.families.push_back(f.get<std::string>());
    }
  }
  return d;
}

// A JSON scalar from a params blob as text; false for objects, arrays and null.
bool ScalarText(const Json& v, std::string* out) {
  if (v.is_string()) {
    *out = v.get<std::string>();
  } else if (v.is_boolean()) {
    *out = v.get<bool>() ? "true" : "false";
  } else if (v.is_number_float()) {
    *out = fmt::format("{}", v.get<double>());  // shortest, as Go's %v: 0 (not 0.0), 0.7
  } else if (v.is_number()) {
    *out = v.dump();
  } else {
    return false;
  }
  return true;
}

StatusOr<std::map<std::string, std::vector<std::string>>> ParamsFromJson(std::string_view bytes,
                                                                         const std::string& path) {
  Json j = Json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return DataLossError("params blob {}: not a JSON object", path);
  }
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [key, value] : j.items()) {
    std::vector<std::string>& values = out[key];
    std::string text;
    if (value.is_array()) {
      for (const Json& item : value) {
        if (!ScalarText(item, &text)) return DataLossError("params blob {}: bad {}", path, key);
        values.push_back(text);
      }
    } else if (ScalarText(value, &text)) {
      values.push_back(text);
    } else {
      return DataLossError("params blob {}: bad {}", path, key);
    }
  }
  return out;
}

// Params as Ollama stores them: numbers as JSON numbers, `stop` as an array of strings.
Json ParamsToJson(const std::map<std::string, std::vector<std::string>>& params) {
  Json j = Json::object();
  for (const auto& [name, values] : params) {
    if (values.empty()) continue;
    std::optional<ParameterType> type = FindParameterType(name);
    auto typed = [&](const std::string& v) -> Json {
      int64_t i = 0;
      double d = 0;
      const char* end = v.data() + v.size();
      if (type != ParameterType::kStringList && type != ParameterType::kFloat) {
        if (auto r = std::from_chars(v.data(), end, i); r.ec == std::errc() && r.ptr == end) {
          return i;
        }
      }
      if (type != ParameterType::kStringList) {
        if (auto r = std::from_chars(v.data(), end, d); r.ec == std::errc() && r.ptr == end) {
          return d;
        }
      }
      if (!type && (v == "true" || v == "false")) return v == "true";
      return v;
    };
    if (type == ParameterType::kStringList || values.size() > 1) {
      Json arr = Json::array();
      for (const std::string& v : values) arr.push_back(typed(v));
      j[name] = arr;
    } else {
      j[name] = typed(values[0]);
    }
  }
  return j;
}

StatusOr<std::vector<ModelfileMessage>> MessagesFromJson(std::string_view bytes,
                                                         const std::string& path) {
  Json j = Json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_array()) {
    return DataLossError("messages blob {}: not a JSON array", path);
  }
  std::vector<ModelfileMessage> out;
  for (const Json& m : j) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string()) {
      return DataLossError("messages blob {}: a message without string role and content", path);
    }
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

std::chrono::system_clock::time_point ModifiedTime(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return {};
  auto since_epoch =
      std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec);
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(since_epoch));
}

bool IsDirectory(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

}  // namespace

Status ValidateDigest(std::string_view digest) {
  bool ok = digest.size() == kDigestPrefix.size() + 64 && digest.starts_with(kDigestPrefix);
  for (size_t i = kDigestPrefix.size(); ok && i < digest.size(); ++i) {
    char c = digest[i];
    ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  }
  if (!ok) {
    return InvalidArgumentError("invalid digest \"{}\": want sha256: and 64 lowercase hex digits",
                                digest.substr(0, 100));
  }
  return Status::Ok();
}

struct Store::State {
  std::string root;
  std::optional<std::string> ollama_root;

  // Serializes Create*, Copy and Delete.
  std::mutex write_mu;
  // Blob paths whose bytes were hashed and matched their names in this process.
  mutable std::mutex cache_mu;
  mutable std::set<std::string> verified FERRY_GUARDED_BY(cache_mu);

  bool IsVerified(const std::string& path) const {
    std::lock_guard lock(cache_mu);
    return verified.count(path) > 0;
  }
  void MarkVerified(const std::string& path) const {
    std::lock_guard lock(cache_mu);
    verified.insert(path);
  }
  void Forget(const std::string& path) const {
    std::lock_guard lock(cache_mu);
    verified.erase(path);
  }

  // Hashes the blob at `path` (unless already verified) and compares with `digest`.
  Status VerifyPath(const std::string& path, std::string_view digest,
                    std::optional<uint64_t> size) const {
    if (IsVerified(path)) return Status::Ok();
    FERRY_ASSIGN_OR_RETURN(Hashed h, HashAndCopy(path, -1, ""));
    if (h.digest != digest) {
      return DataLossError("blob {} is corrupt: its bytes hash to {}, its name says {}", path,
                           h.digest, digest);
    }
    if (size && h.size != *size) {
      return DataLossError("blob {} holds {} bytes, the manifest says {}", path, h.size, *size);
    }
    MarkVerified(path);
    return Status::Ok();
  }

  // Finds `name`'s manifest: ferry's store first, then the Ollama store.
  StatusOr<Located> Locate(const ModelName& name) const {
    std::vector<std::pair<std::string, bool>> roots = {{root, false}};
    if (ollama_root) roots.push_back({*ollama_root, true});
    for (const auto& [r, read_only] : roots) {
      std::string path = ManifestFile(r, name);
      StatusOr<std::string> bytes = ReadWholeFile(path);
      if (bytes.status().code() == StatusCode::kNotFound) continue;
      if (!bytes.ok()) return bytes.status();
      FERRY_ASSIGN_OR_RETURN(Manifest m, ParseManifest(*bytes, path));
      return Located{r, read_only, path, std::move(*bytes), std::move(m)};
    }
    return NotFoundError("model \"{}\" not found", name.DisplayName());
  }

  // Writes `bytes` as a blob of ferry's store; returns its layer.
  StatusOr<Layer> WriteBlob(std::string_view media_type, std::string_view bytes) const {
    Layer layer{std::string(media_type), fmt::format("{}{}", kDigestPrefix, Sha256Hex(bytes)),
                bytes.size()};
    std::string path = BlobPath(root, layer.digest);
    FERRY_ASSIGN_OR_RETURN(TempFile tmp, TempFile::Create(root + "/blobs"));
    FERRY_RETURN_IF_ERROR(tmp.Write(bytes));
    FERRY_RETURN_IF_ERROR(tmp.CommitAs(path));
    MarkVerified(path);
    return layer;
  }

  // Copies the file at `src` into a blob, hashing while copying. If `want_digest` is given,
  // the bytes must hash to it (DataLoss otherwise, and nothing is written).
  StatusOr<Hashed> CopyIntoBlob(const std::string& src,
                                std::optional<std::string_view> want_digest) const {
    FERRY_ASSIGN_OR_RETURN(TempFile tmp, TempFile::Create(root + "/blobs"));
    FERRY_ASSIGN_OR_RETURN(Hashed h, HashAndCopy(src, tmp.fd(), tmp.path()));
    if (want_digest && h.digest != *want_digest) {
      return DataLossError("blob {} is corrupt: its bytes hash to {}, its name says {}", src,
                           h.digest, *want_digest);
    }
    std::string path = BlobPath(root, h.digest);
    FERRY_RETURN_IF_ERROR(tmp.CommitAs(path));
    MarkVerified(path);
    return h;
  }

  // Makes the blob `digest` of the store at `from_root` present (and verified) in ferry's.
  Status ImportBlob(const std::string& from_root, std::string_view digest) const {
    std::string dst = BlobPath(root, digest);
    if (VerifyPath(dst, digest, std::nullopt).ok()) return Status::Ok();
    std::string src = BlobPath(from_root, digest);
    FERRY_RETURN_IF_ERROR(VerifyPath(src, digest, std::nullopt));
    std::string tmp = fmt::format("{}/blobs/.link-{}", root, ::getpid());
    ::unlink(tmp.c_str());
    if (::link(src.c_str(), tmp.c_str()) == 0) {
      if (::rename(tmp.c_str(), dst.c_str()) == 0) {
        MarkVerified(dst);
        return Status::Ok();
      }
      ::unlink(tmp.c_str());
    }
    // Another file system (or links refused): copy, checking the digest again.
    return CopyIntoBlob(src, digest).status();
  }

  // Writes the manifest for `name` in ferry's store: `model_layers` (the model and any other
  // layers carried over, already blobs of ferry's store) plus the extras, and the config.
  Status WriteModel(const ModelName& name, std::vector<Layer> model_layers,
                    const ModelDetails& details, const ModelExtras& extras) const {
    Manifest m;
    m.layers = std::move(model_layers);
    if (extras.template_text) {
      FERRY_ASSIGN_OR_RETURN(Layer l, WriteBlob(kTemplateMediaType, *extras.template_text));
      m.layers.push_back(l);
    }
    if (extras.system) {
      FERRY_ASSIGN_OR_RETURN(Layer l, WriteBlob(kSystemMediaType, *extras.system));
      m.layers.push_back(l);
    }
    for (const std::string& license : extras.licenses) {
      FERRY_ASSIGN_OR_RETURN(Layer l, WriteBlob(kLicenseMediaType, license));
      m.layers.push_back(l);
    }
    if (!extras.parameters.empty()) {
      FERRY_ASSIGN_OR_RETURN(Layer l,
                             WriteBlob(kParamsMediaType, ParamsToJson(extras.parameters).dump()));
      m.layers.push_back(l);
    }
    if (!extras.messages.empty()) {
      Json messages = Json::array();
      for (const ModelfileMessage& msg : extras.messages) {
        messages.push_back({{"role", msg.role}, {"content", msg.content}});
      }
      FERRY_ASSIGN_OR_RETURN(Layer l, WriteBlob(kMessagesMediaType, messages.dump()));
      m.layers.push_back(l);
    }
    FERRY_ASSIGN_OR_RETURN(m.config, WriteBlob(kConfigMediaType, ConfigJson(details, m.layers)));
    return WriteFileAtomically(ManifestFile(root, name), SerializeManifest(m));
  }
};

Store::Store(std::unique_ptr<State> state) : state_(std::move(state)) {}
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;
Store::~Store() = default;

const std::string& Store::root() const { return state_->root; }

StatusOr<Store> Store::Open(std::string root, std::optional<std::string> ollama_root) {
  if (root.empty()) return InvalidArgumentError("model store: empty root directory");
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  for (const char* sub : {"/manifests", "/blobs"}) {
    std::error_code ec;
    fs::create_directories(root + sub, ec);
    if (ec) return IoError("model store {}: cannot create {}: {}", root, root + sub, ec.message());
  }
  if (ollama_root) {
    if (!IsDirectory(*ollama_root)) {
      return NotFoundError("Ollama model store {}: not a directory", *ollama_root);
    }
    std::error_code ec;
    if (fs::equivalent(root, *ollama_root, ec)) {
      return InvalidArgumentError("the Ollama store {} is ferry's own store", *ollama_root);
    }
  }
  auto state = std::make_unique<State>();
  state->root = std::move(root);
  state->ollama_root = std::move(ollama_root);
  return Store(std::move(state));
}

StatusOr<std::vector<StoreEntry>> Store::List() const {
  std::map<ModelName, StoreEntry> found;
  std::vector<std::pair<std::string, bool>> roots = {{state_->root, false}};
  if (state_->ollama_root) roots.push_back({*state_->ollama_root, true});
  for (const auto& [r, read_only] : roots) {
    const fs::path manifests = fs::path(r) / "manifests";
    std::error_code ec;
    if (!fs::is_directory(manifests, ec)) continue;
    auto it = fs::recursive_directory_iterator(manifests, ec);
    if (ec) return IoError("{}: cannot list: {}", manifests.string(), ec.message());
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) return IoError("{}: cannot list: {}", manifests.string(), ec.message());
      if (!it->is_regular_file(ec) || it.depth() != 3) continue;
      const fs::path rel = it->path().lexically_relative(manifests);
      std::vector<std::string> parts;
      for (const fs::path& p : rel) parts.push_back(p.string());
      if (parts.size() != 4) continue;
      StatusOr<ModelName> name =
          ParseModelName(fmt::format("{}/{}/{}:{}", parts[0], parts[1], parts[2], parts[3]));
      if (!name.ok() || name->ManifestPath() != rel.string()) {
        log::Debug("store_skip path={} reason=not_a_model_name", it->path().string());
        continue;
      }
      if (found.count(*name)) continue;  // ferry's own store came first
      const std::string path = it->path().string();
      StatusOr<std::string> bytes = ReadWholeFile(path);
      StatusOr<Manifest> m = bytes.ok() ? ParseManifest(*bytes, path) : bytes.status();
      const Layer* model = m.ok() ? FindModelLayer(*m) : nullptr;
      if (model == nullptr) {
        log::Warn("store_skip path={} reason=\"{}\"", path,
                  m.ok() ? "no model layer" : m.status().message());
        continue;
      }
      StoreEntry e;
      e.name = *name;
      e.digest = fmt::format("{}{}", kDigestPrefix, Sha256Hex(*bytes));
      e.size = m->config.size;
      for (const Layer& l : m->layers) e.size += l.size;
      e.modified = ModifiedTime(path);
      e.model_path = BlobPath(r, model->digest);
      if (StatusOr<std::string> config = ReadWholeFile(BlobPath(r, m->config.digest));
          config.ok()) {
        e.details = DetailsFromConfig(*config);
      }
      e.read_only = read_only;
      found.emplace(*name, std::move(e));
    }
  }
  std::vector<StoreEntry> out;
  out.reserve(found.size());
  for (auto& [name, entry] : found) out.push_back(std::move(entry));
  return out;
}

StatusOr<ResolvedModel> Store::Resolve(const ModelName& name) const {
  FERRY_ASSIGN_OR_RETURN(Located loc, state_->Locate(name));
  const Layer* model = FindModelLayer(loc.manifest);
  if (model == nullptr) return DataLossError("manifest {}: no model layer", loc.path);
  ResolvedModel out;
  out.name = name;
  out.digest = fmt::format("{}{}", kDigestPrefix, Sha256Hex(loc.bytes));
  out.model_path = BlobPath(loc.root, model->digest);
  out.model_digest = model->digest;
  out.read_only = loc.read_only;
  std::vector<const Layer*> blobs = {&loc.manifest.config};
  for (const Layer& l : loc.manifest.layers) blobs.push_back(&l);
  for (const Layer* l : blobs) {
    FERRY_RETURN_IF_ERROR(state_->VerifyPath(BlobPath(loc.root, l->digest), l->digest, l->size));
  }
  FERRY_ASSIGN_OR_RETURN(std::string config,
                         ReadWholeFile(BlobPath(loc.root, loc.manifest.config.digest)));
  out.details = DetailsFromConfig(config);
  for (const Layer& l : loc.manifest.layers) {
    if (l.media_type == kModelMediaType) continue;
    const std::string path = BlobPath(loc.root, l.digest);
    if (l.media_type == kTemplateMediaType) {
      FERRY_ASSIGN_OR_RETURN(out.extras.template_text, ReadWholeFile(path));
    } else if (l.media_type == kSystemMediaType) {
      FERRY_ASSIGN_OR_RETURN(out.extras.system, ReadWholeFile(path));
    } else if (l.media_type == kLicenseMediaType) {
      FERRY_ASSIGN_OR_RETURN(std::string license, ReadWholeFile(path));
      out.extras.licenses.push_back(std::move(license));
    } else if (l.media_type == kParamsMediaType) {
      FERRY_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
      FERRY_ASSIGN_OR_RETURN(out.extras.parameters, ParamsFromJson(bytes, path));
    } else if (l.media_type == kMessagesMediaType) {
      FERRY_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
      FERRY_ASSIGN_OR_RETURN(out.extras.messages, MessagesFromJson(bytes, path));
    }
  }
  return out;
}

StatusOr<ResolvedModel> Store::CreateFromGguf(const ModelName& name, const std::string& gguf_path,
                                              const ModelExtras& extras) {
  FERRY_ASSIGN_OR_RETURN(ModelDetails details, DetailsFromGguf(gguf_path));
  {
    std::lock_guard lock(state_->write_mu);
    FERRY_ASSIGN_OR_RETURN(Hashed h, state_->CopyIntoBlob(gguf_path, std::nullopt));
    log::Info("store_blob source={} digest={} bytes={}", gguf_path, h.digest, h.size);
    FERRY_RETURN_IF_ERROR(state_->WriteModel(
        name, {Layer{std::string(kModelMediaType), h.digest, h.size}}, details, extras));
  }
  log::Info("store_create model={} from={}", name.DisplayName(), gguf_path);
  return Resolve(name);
}

StatusOr<ResolvedModel> Store::CreateFrom(const ModelName& name, const ModelName& base,
                                          const ModelExtras& extras) {
  {
    std::lock_guard lock(state_->write_mu);
    FERRY_ASSIGN_OR_RETURN(ResolvedModel b, Resolve(base));  // verifies every blob
    FERRY_ASSIGN_OR_RETURN(Located loc, state_->Locate(base));
    // The model and any layer kind ferry does not interpret (projector, adapter) carry over.
    std::vector<Layer> kept;
    for (const Layer& l : loc.manifest.layers) {
      if (l.media_type == kTemplateMediaType || l.media_type == kSystemMediaType ||
          l.media_type == kLicenseMediaType || l.media_type == kParamsMediaType ||
          l.media_type == kMessagesMediaType) {
        continue;
      }
      if (loc.read_only) FERRY_RETURN_IF_ERROR(state_->ImportBlob(loc.root, l.digest));
      kept.push_back(l);
    }
    ModelExtras merged = b.extras;
    if (extras.template_text) merged.template_text = extras.template_text;
    if (extras.system) merged.system = extras.system;
    for (const auto& [key, values] : extras.parameters) merged.parameters[key] = values;
    if (!extras.messages.empty()) merged.messages = extras.messages;
    if (!extras.licenses.empty()) merged.licenses = extras.licenses;
    FERRY_RETURN_IF_ERROR(state_->WriteModel(name, std::move(kept), b.details, merged));
  }
  log::Info("store_create model={} from={}", name.DisplayName(), base.DisplayName());
  return Resolve(name);
}

Status Store::Copy(const ModelName& src, const ModelName& dst) {
  std::lock_guard lock(state_->write_mu);
  FERRY_ASSIGN_OR_RETURN(Located loc, state_->Locate(src));
  if (!loc.read_only && src == dst) return Status::Ok();
  if (loc.read_only) {
    FERRY_RETURN_IF_ERROR(state_->ImportBlob(loc.root, loc.manifest.config.digest));
    for (const Layer& l : loc.manifest.layers) {
      FERRY_RETURN_IF_ERROR(state_->ImportBlob(loc.root, l.digest));
    }
  }
  FERRY_RETURN_IF_ERROR(WriteFileAtomically(ManifestFile(state_->root, dst), loc.bytes));
  log::Info("store_copy from={} to={}", src.DisplayName(), dst.DisplayName());
  return Status::Ok();
}

Status Store::Delete(const ModelName& name) {
  std::lock_guard lock(state_->write_mu);
  const std::string path = ManifestFile(state_->root, name);
  if (::unlink(path.c_str()) != 0) {
    if (errno != ENOENT) return IoError("{}: cannot remove: {}", path, ErrnoText());
    if (state_->ollama_root && fs::exists(ManifestFile(*state_->ollama_root, name))) {
      return FailedPreconditionError(
          "model \"{}\" is in the Ollama store {}, which ferry does not modify", name.DisplayName(),
          *state_->ollama_root);
    }
    return NotFoundError("model \"{}\" not found", name.DisplayName());
  }
  log::Info("store_delete model={}", name.DisplayName());
  // Remove the now empty tag, model, namespace and host directories.
  const fs::path manifests = fs::path(state_->root) / "manifests";
  std::error_code ec;
  for (fs::path dir = fs::path(path).parent_path(); dir != manifests && dir.has_parent_path();
       dir = dir.parent_path()) {
    if (!fs::is_empty(dir, ec) || ec || !fs::remove(dir, ec)) break;
  }

  // Collect blobs no manifest references any more.
  std::set<std::string> referenced;
  for (auto it = fs::recursive_directory_iterator(manifests, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec) || it->path().filename().string().starts_with(".")) continue;
    const std::string mpath = it->path().string();
    StatusOr<std::string> bytes = ReadWholeFile(mpath);
    StatusOr<Manifest> m = bytes.ok() ? ParseManifest(*bytes, mpath) : bytes.status();
    if (!m.ok()) {
      log::Warn("store_gc skipped=true reason=\"{}\"", m.status().message());
      return Status::Ok();  // not sure what is referenced: keep every blob
    }
    referenced.insert(m->config.digest.substr(kDigestPrefix.size()));
    for (const Layer& l : m->layers) referenced.insert(l.digest.substr(kDigestPrefix.size()));
  }
  if (ec) {
    log::Warn("store_gc skipped=true reason=\"{}\"", ec.message());
    return Status::Ok();
  }
  const fs::path blobs = fs::path(state_->root) / "blobs";
  std::vector<fs::path> unreferenced;
  for (auto it = fs::directory_iterator(blobs, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const std::string file = it->path().filename().string();
    if (!file.starts_with("sha256-")) continue;
    const std::string hex = file.substr(7);
    if (ValidateDigest(fmt::format("{}{}", kDigestPrefix, hex)).ok() && !referenced.count(hex)) {
      unreferenced.push_back(it->path());
    }
  }
  for (const fs::path& p : unreferenced) {
    state_->Forget(p.string());
    if (fs::remove(p, ec)) log::Info("store_gc removed={}", p.string());
  }
  return Status::Ok();
}

Status Store::VerifyBlob(std::string_view digest) const {
  FERRY_RETURN_IF_ERROR(ValidateDigest(digest));
  std::string path = BlobPath(state_->root, digest);
  if (!fs::exists(path) && state_->ollama_root) path = BlobPath(*state_->ollama_root, digest);
  if (!fs::exists(path)) return NotFoundError("blob {} not found", digest);
  return state_->VerifyPath(path, digest, std::nullopt);
}

}  // namespace ferry::store
