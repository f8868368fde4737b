#include <cstring>

#include "base/mapped_file.h"
#include "gguf/gguf.h"

namespace ferry::gguf {
namespace {

class ByteSink {
 public:
  ByteSink() = default;
  explicit ByteSink(std::vector<uint8_t> start) : out_(std::move(start)) {}
  template <typename T>
  void Pod(T v) {
    size_t at = out_.size();
    out_.resize(at + sizeof(T));
    std::memcpy(out_.data() + at, &v, sizeof(T));
  }
  void String(std::string_view s) {
    Pod<uint64_t>(s.size());
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void Bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void PadTo(uint64_t alignment) {
    while (out_.size() % alignment != 0) out_.push_back(0);
  }
  size_t size() const { return out_.size(); }
  std::vector<uint8_t> Take() { return std::move(out_); }

 private:
  std::vector<uint8_t> out_;
};

Status CheckArray(const Array& a, int depth) {
  if (depth >= kMaxArrayNesting) {
    return InvalidArgumentError("arrays nested deeper than {}", kMaxArrayNesting);
  }
  if (a.type() == ValueType::kArray) {
    for (size_t i = 0; i < a.size(); ++i) FERRY_RETURN_IF_ERROR(CheckArray(a.array_at(i), depth + 1));
  }
  return Status::Ok();
}

void WriteValue(ByteSink& s, const Value& v);

void WriteArray(ByteSink& s, const Array& a) {
  s.Pod<uint32_t>(static_cast<uint32_t>(a.type()));
  s.Pod<uint64_t>(a.size());
  if (a.type() == ValueType::kString) {
    for (size_t i = 0; i < a.size(); ++i) s.String(a.string_at(i));
  } else if (a.type() == ValueType::kArray) {
    for (size_t i = 0; i < a.size(); ++i) WriteArray(s, a.array_at(i));
  } else {
    s.Bytes(a.packed_bytes());  // numbers and bools are stored as on disk
  }
}

void WriteValue(ByteSink& s, const Value& v) {
  std::visit(
      [&s](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          s.String(x);
        } else if constexpr (std::is_same_v<T, Array>) {
          WriteArray(s, x);
        } else if constexpr (std::is_same_v<T, bool>) {
          s.Pod<uint8_t>(x ? 1 : 0);
        } else {
          s.Pod<T>(x);
        }
      },
      v.data);
}

}  // namespace

Status GgufWriter::AddMetadata(std::string key, Value value) {
  if (key.empty()) return InvalidArgumentError("metadata key is empty");
  for (const KeyValue& kv : metadata_) {
    if (kv.key == key) return InvalidArgumentError("metadata key '{}' added twice", key);
  }
  if (value.type() == ValueType::kArray) {
    FERRY_RETURN_IF_ERROR(CheckArray(std::get<Array>(value.data), 0).WithPrefix(key));
  }
  if (key == "general.alignment") {
    if (value.type() != ValueType::kUint32) {
      return InvalidArgumentError("general.alignment must be uint32, not {}",
                                  ValueTypeName(value.type()));
    }
    uint32_t a = std::get<uint32_t>(value.data);
    if (a == 0 || (a & (a - 1)) != 0) {
      return InvalidArgumentError("general.alignment {} is not a power of two", a);
    }
    if (!tensors_.empty()) {
      return InvalidArgumentError("general.alignment must be set before tensors are added");
    }
    alignment_ = a;
  }
  metadata_.push_back({std::move(key), std::move(value)});
  return Status::Ok();
}

StatusOr<uint64_t> GgufWriter::CheckNewTensor(const std::string& name,
                                              const std::vector<uint64_t>& dims,
                                              DType type) const {
  if (name.empty()) return InvalidArgumentError("tensor name is empty");
  for (const PendingTensor& t : tensors_) {
    if (t.name == name) return InvalidArgumentError("tensor '{}' added twice", name);
  }
  if (dims.size() > static_cast<size_t>(kMaxDims)) {
    return InvalidArgumentError("tensor '{}' has {} dimensions (at most {})", name, dims.size(),
                                kMaxDims);
  }
  uint64_t n = 1;
  for (uint64_t d : dims) {
    if (__builtin_mul_overflow(n, d, &n)) {
      return InvalidArgumentError("tensor '{}': element count overflows", name);
    }
  }
  uint64_t ne0 = dims.empty() ? 1 : dims[0];
  const DTypeTraits& tr = Traits(type);
  if (ne0 % tr.block_size != 0) {
    return InvalidArgumentError("tensor '{}': row length {} is not a multiple of the {} block "
                                "size {}", name, ne0, tr.name, tr.block_size);
  }
  uint64_t bytes;
  if (__builtin_mul_overflow(n / tr.block_size, static_cast<uint64_t>(tr.type_size), &bytes)) {
    return InvalidArgumentError("tensor '{}': {} elements of {} overflow 64-bit byte size", name,
                                n, tr.name);
  }
  return bytes;
}

Status GgufWriter::AddTensor(std::string name, std::vector<uint64_t> dims, DType type,
                             std::span<const uint8_t> data) {
  FERRY_ASSIGN_OR_RETURN(uint64_t bytes, CheckNewTensor(name, dims, type));
  if (bytes != data.size()) {
    uint64_t n = 1;
    for (uint64_t d : dims) n *= d;
    return InvalidArgumentError("tensor '{}': {} elements of {} take {} bytes, got {}", name, n,
                                Traits(type).name, bytes, data.size());
  }
  tensors_.push_back({std::move(name), std::move(dims), type, bytes, false,
                      std::vector<uint8_t>(data.begin(), data.end())});
  return Status::Ok();
}

StatusOr<uint64_t> GgufWriter::AddTensorInfo(std::string name, std::vector<uint64_t> dims,
                                             DType type) {
  FERRY_ASSIGN_OR_RETURN(uint64_t bytes, CheckNewTensor(name, dims, type));
  tensors_.push_back({std::move(name), std::move(dims), type, bytes, true, {}});
  return bytes;
}

namespace {

Status WriteHeader(uint32_t version, const std::vector<KeyValue>& metadata, uint64_t n_tensors,
                   ByteSink& s) {
  if (version != 2 && version != 3) {
    return InvalidArgumentError("cannot write GGUF version {} (only 2 and 3)", version);
  }
  s.Pod<uint32_t>(kMagic);
  s.Pod<uint32_t>(version);
  s.Pod<uint64_t>(n_tensors);
  s.Pod<uint64_t>(metadata.size());
  for (const KeyValue& kv : metadata) {
    s.String(kv.key);
    s.Pod<uint32_t>(static_cast<uint32_t>(kv.value.type()));
    WriteValue(s, kv.value);
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::vector<uint8_t>> GgufWriter::SerializeHeader() const {
  ByteSink s;
  FERRY_RETURN_IF_ERROR(WriteHeader(version_, metadata_, tensors_.size(), s));
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    s.String(t.name);
    s.Pod<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) s.Pod<uint64_t>(d);
    s.Pod<uint32_t>(static_cast<uint32_t>(t.type));
    s.Pod<uint64_t>(offset);
    offset += (t.n_bytes + alignment_ - 1) / alignment_ * alignment_;
  }
  s.PadTo(alignment_);
  return s.Take();
}

StatusOr<std::vector<uint8_t>> GgufWriter::Serialize() const {
  for (const PendingTensor& t : tensors_) {
    if (t.streamed) {
      return FailedPreconditionError("tensor '{}' was declared without data (AddTensorInfo): "
                                     "write the file with SerializeHeader()", t.name);
    }
  }
  FERRY_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, SerializeHeader());
  ByteSink s(std::move(bytes));
  for (const PendingTensor& t : tensors_) {
    s.Bytes(t.data);
    s.PadTo(alignment_);
  }
  return s.Take();
}

Status GgufWriter::WriteFile(const std::string& path) const {
  FERRY_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, Serialize());
  return WriteFileBytes(path, bytes.data(), bytes.size());
}

}  // namespace ferry::gguf
