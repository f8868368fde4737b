// The GGUF reader. Every read goes through Parser's cursor, which checks the bytes are there;
// counts are checked against the bytes left before anything is reserved, so a lying header
// cannot make the reader allocate or loop more than the file's size allows.
#include <algorithm>
#include <cstring>
#include <limits>

#include "gguf/gguf.h"

namespace ferry::gguf {

// Smallest encoding of one value of each type: used to bound counts before reserving.
// Numbers and bools are stored as they are packed (PackedSize).
static uint64_t MinEncodedSize(ValueType t) {
  switch (t) {
    case ValueType::kString: return 8;  // u64 length
    case ValueType::kArray: return 12;  // u32 type + u64 count
    default: return PackedSize(t);
  }
}

static bool IsKnownValueType(uint32_t t) { return t <= 12; }

class Parser {
 public:
  Parser(GgufFile* f) : f_(f), data_(f->data_), size_(f->size_) {}

  Status Run();

 private:
  uint64_t left() const { return size_ - pos_; }

  template <typename... Args>
  Status Corrupt(uint64_t offset, fmt::format_string<Args...> fs, Args&&... args) {
    return DataLossError("{} (at byte offset {})", fmt::format(fs, std::forward<Args>(args)...),
                         offset);
  }

  Status Need(uint64_t n, std::string_view what) {
    if (n > left()) {
      return Corrupt(pos_, "truncated file: {} needs {} bytes but only {} remain", what, n, left());
    }
    return Status::Ok();
  }

  template <typename T>
  Status ReadPod(T* out, std::string_view what) {
    FERRY_RETURN_IF_ERROR(Need(sizeof(T), what));
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::Ok();
  }

  Status ReadString(std::string* out, std::string_view what) {
    uint64_t start = pos_;
    uint64_t len = 0;
    FERRY_RETURN_IF_ERROR(ReadPod(&len, what));
    if (len > left()) {
      return Corrupt(start, "truncated file: {} has length {} but only {} bytes remain", what, len,
                     left());
    }
    out->assign(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return Status::Ok();
  }

  Status ReadValue(ValueType type, Value* out, int depth, std::string_view key);
  Status ReadMetadata(uint64_t n_kv);
  Status ReadTensorInfos(uint64_t n_tensors);
  Status CheckTensorData();

  GgufFile* f_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  uint64_t total_array_items_ = 0;
};

Status Parser::ReadValue(ValueType type, Value* out, int depth, std::string_view key) {
  switch (type) {
    case ValueType::kUint8: { uint8_t v; FERRY_RETURN_IF_ERROR(ReadPod(&v, key)); out->data = v; return Status::Ok(); }
    case ValueType::kInt8: { int8_t v; FERRY_RETURN_IF_ERROR(ReadPod(&v, key)); out->data = v; return Status::Ok(); }
    case ValueType::kUint16: { uint16_t v; FERRY_RETURN_IF_ERROR(ReadPod(&v, key)); out->data = v; return Status::Ok(); }
    case ValueType::kInt16: { int16_t v; FERRY_RETURN_IF_ERROR(ReadPod(&v, key)); out->data = v; return Status::Ok(); }
    case ValueType::kUint32: { uint32_t v; FERRY_RETURN_IF_ERROR(ReadPod(&v, key)); out->data = v; return Status::Ok(); }
    case ValueType::kInt32: { int32_t v; FERRY_RETURN_IF_ERROR(ReadPod(&v, key)); out->data = v; return Status::Ok(); }
    case ValueType::kFloat32: { float v; FERRY_RETURN_IF_ERROR(ReadPod(&v, key)); out->data = v; return Status::Ok(); }
    case ValueType::kUint64: { uint64_t v; FERRY_RETURN_IF_ERROR(ReadPod(&v, key)); out->data = v; return Status::Ok(); }
    case ValueType::kInt64: { int64_t v; FERRY_RETURN_IF_ERROR(ReadPod(&v, key)); out->data = v; return Status::Ok(); }
    case ValueType::kFloat64: { double v; FERRY_RETURN_IF_ERROR(ReadPod(&v, key)); out->data = v; return Status::Ok(); }
    case ValueType::kBool: {
      uint64_t at = pos_;
      uint8_t v;
      FERRY_RETURN_IF_ERROR(ReadPod(&v, key));
      if (v > 1) return Corrupt(at, "metadata '{}': bool value {} is neither 0 nor 1", key, v);
      out->data = (v == 1);
      return Status::Ok();
    }
    case ValueType::kString: {
      std::string s;
      FERRY_RETURN_IF_ERROR(ReadString(&s, key));
      out->data = std::move(s);
      return Status::Ok();
    }
    case ValueType::kArray: {
      uint64_t at = pos_;
      if (depth >= kMaxArrayNesting) {
        return Corrupt(at, "metadata '{}': arrays nested deeper than {}", key, kMaxArrayNesting);
      }
      uint32_t elem_type = 0;
      uint64_t count = 0;
      FERRY_RETURN_IF_ERROR(ReadPod(&elem_type, key));
      if (!IsKnownValueType(elem_type)) {
        return Corrupt(at, "metadata '{}': unknown array element type {}", key, elem_type);
      }
      FERRY_RETURN_IF_ERROR(ReadPod(&count, key));
      ValueType et = static_cast<ValueType>(elem_type);
      uint64_t min = MinEncodedSize(et);
      if (count > left() / min) {
        return Corrupt(at, "truncated file: metadata '{}' claims {} array items of type {}, more "
                       "than the {} bytes left can hold", key, count, ValueTypeName(et), left());
      }
      total_array_items_ += count;
      if (total_array_items_ > kMaxTotalArrayItems) {
        return Corrupt(at, "metadata '{}': more than {} array items in the file's metadata",
                       key, kMaxTotalArrayItems);
      }
      Array arr(et);
      if (et == ValueType::kString) {
        // Two passes: check every length and sum the text, then copy into storage reserved
        // exactly (so Array::heap_bytes is what the planner predicts).
        const uint64_t first = pos_;
        uint64_t text = 0;
        for (uint64_t i = 0; i < count; ++i) {
          const uint64_t start = pos_;
          uint64_t len = 0;
          FERRY_RETURN_IF_ERROR(ReadPod(&len, key));
          if (len > left()) {
            return Corrupt(start, "truncated file: metadata '{}' item {} has length {} but only "
                           "{} bytes remain", key, i, len, left());
          }
          pos_ += len;
          text += len;
        }
        pos_ = first;
        arr.Reserve(static_cast<size_t>(count), static_cast<size_t>(text));
        for (uint64_t i = 0; i < count; ++i) {
          uint64_t len = 0;
          std::memcpy(&len, data_ + pos_, sizeof len);
          pos_ += sizeof len;
          arr.PushString(std::string_view(reinterpret_cast<const char*>(data_ + pos_),
                                          static_cast<size_t>(len)));
          pos_ += len;
        }
      } else if (et == ValueType::kArray) {
        arr.Reserve(static_cast<size_t>(count));
        for (uint64_t i = 0; i < count; ++i) {
          Value item;
          FERRY_RETURN_IF_ERROR(ReadValue(et, &item, depth + 1, key));
          FERRY_RETURN_IF_ERROR(arr.Push(item));
        }
      } else {
        const uint64_t n = count * PackedSize(et);  // count <= left() / size: no overflow
        FERRY_RETURN_IF_ERROR(Need(n, key));
        if (et == ValueType::kBool) {
          for (uint64_t i = 0; i < count; ++i) {
            if (data_[pos_ + i] > 1) {
              return Corrupt(pos_ + i, "metadata '{}': bool item {} is {}, neither 0 nor 1", key,
                             i, data_[pos_ + i]);
            }
          }
        }
        arr.AssignPacked(data_ + pos_, static_cast<size_t>(count));
        pos_ += n;
      }
      out->data = std::move(arr);
      return Status::Ok();
    }
  }
  return Corrupt(pos_, "metadata '{}': unknown value type {}", key, static_cast<uint32_t>(type));
}

Status Parser::ReadMetadata(uint64_t n_kv) {
  // Each entry takes at least 8 (key length) + 4 (type) + 1 bytes.
  if (n_kv > left() / 13) {
    return Corrupt(16, "header claims {} metadata entries, more than the file's {} bytes can hold",
                   n_kv, size_);
  }
  f_->metadata_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    uint64_t at = pos_;
    KeyValue kv;
    FERRY_RETURN_IF_ERROR(ReadString(&kv.key, fmt::format("metadata key #{}", i)));
    if (kv.key.empty()) return Corrupt(at, "metadata key #{} is empty", i);
    if (f_->metadata_index_.count(kv.key) != 0) {
      return Corrupt(at, "metadata key '{}' appears twice", kv.key);
    }
    uint64_t type_at = pos_;
    uint32_t type = 0;
    FERRY_RETURN_IF_ERROR(ReadPod(&type, kv.key));
    if (!IsKnownValueType(type)) {
      return Corrupt(type_at, "metadata '{}': unknown value type {}", kv.key, type);
    }
    FERRY_RETURN_IF_ERROR(ReadValue(static_cast<ValueType>(type), &kv.value, 0, kv.key));
    f_->metadata_index_.emplace(kv.key, f_->metadata_.size());
    f_->metadata_.push_back(std::move(kv));
  }
  // general.alignment: a u32 power of two (ggml's rule).
  if (const Value* a = f_->Find("general.alignment")) {
    if (a->type() != ValueType::kUint32) {
      return DataLossError("general.alignment has type {}, expected uint32",
                           ValueTypeName(a->type()));
    }
    uint32_t v = std::get<uint32_t>(a->data);
    if (v == 0 || (v & (v - 1)) != 0) {
      return DataLossError("general.alignment {} is not a power of two", v);
    }
    f_->alignment_ = v;
  }
  return Status::Ok();
}

Status Parser::ReadTensorInfos(uint64_t n_tensors) {
  // Each info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
  if (n_tensors > left() / 24) {
    return Corrupt(8, "header claims {} tensors, more than the file's {} bytes can hold",
                   n_tensors, size_);
  }
  f_->tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo t;
    t.info_offset = pos_;
    FERRY_RETURN_IF_ERROR(ReadString(&t.name, fmt::format("tensor #{} name", i)));
    if (t.name.empty()) return Corrupt(t.info_offset, "tensor #{} has an empty name", i);
    if (f_->tensor_index_.count(t.name) != 0) {
      return Corrupt(t.info_offset, "tensor '{}' appears twice", t.name);
    }
    uint64_t at = pos_;
    uint32_t n_dims = 0;
    FERRY_RETURN_IF_ERROR(ReadPod(&n_dims, t.name));
    if (n_dims > static_cast<uint32_t>(kMaxDims)) {
      return Corrupt(at, "tensor '{}' has {} dimensions (at most {})", t.name, n_dims, kMaxDims);
    }
    uint64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      at = pos_;
      uint64_t ne = 0;
      FERRY_RETURN_IF_ERROR(ReadPod(&ne, t.name));
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(n_elements, ne, &n_elements) ||
          n_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Corrupt(at, "tensor '{}': dimension {} = {} makes the element count overflow",
                       t.name, d, ne);
      }
      t.dims.push_back(ne);
    }
    at = pos_;
    uint32_t type = 0;
    FERRY_RETURN_IF_ERROR(ReadPod(&type, t.name));
    std::optional<DTypeTraits> traits = GetDTypeTraits(type);
    if (!traits) return Corrupt(at, "tensor '{}' has unknown type id {}", t.name, type);
    t.type = traits->type;
    uint64_t ne0 = t.dims.empty() ? 1 : t.dims[0];
    if (ne0 % traits->block_size != 0) {
      return Corrupt(at, "tensor '{}': row length {} is not a multiple of the {} block size {}",
                     t.name, ne0, traits->name, traits->block_size);
    }
    t.n_elements = n_elements;
    // n_elements < 2^63, but the byte size can still overflow (an f32 tensor of 2^62 elements
    // would wrap to 0 bytes), so it is checked.
    if (__builtin_mul_overflow(n_elements / traits->block_size,
                               static_cast<uint64_t>(traits->type_size), &t.n_bytes)) {
      return Corrupt(at, "tensor '{}': {} elements of {} overflow 64-bit byte size", t.name,
                     n_elements, traits->name);
    }
    at = pos_;
    FERRY_RETURN_IF_ERROR(ReadPod(&t.offset, t.name));
    if (t.offset % f_->alignment_ != 0) {
      return Corrupt(at, "tensor '{}': data offset {} is not a multiple of the alignment {}",
                     t.name, t.offset, f_->alignment_);
    }
    f_->tensor_index_.emplace(t.name, f_->tensors_.size());
    f_->tensors_.push_back(std::move(t));
  }
  return Status::Ok();
}

Status Parser::CheckTensorData() {
  uint64_t a = f_->alignment_;
  uint64_t data_offset = (pos_ + a - 1) / a * a;  // pos_ <= size_, so no overflow for sane a
  if (data_offset < pos_) return Corrupt(pos_, "data section offset overflows");
  f_->data_offset_ = data_offset;
  // A file with tensors has its data section (at least the padding before it) in the file;
  // otherwise even an empty tensor would point past the end of the buffer.
  if (!f_->tensors_.empty() && data_offset > size_) {
    return Corrupt(pos_, "truncated file: the tensor data section starts at byte {} (after "
                   "padding to the alignment {}) but the file has only {} bytes",
                   data_offset, a, size_);
  }
  uint64_t data_size = size_ > data_offset ? size_ - data_offset : 0;
  // Each tensor must lie inside the data section, and no two may overlap.
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(f_->tensors_.size());
  for (TensorInfo& t : f_->tensors_) {
    if (t.offset > data_size || t.n_bytes > data_size - t.offset) {
      return Corrupt(t.info_offset,
                     "truncated file: tensor '{}' needs bytes {}..{} of the data section, which "
                     "holds only {} bytes (file size {})",
                     t.name, t.offset, t.offset + t.n_bytes, data_size, size_);
    }
    t.file_offset = data_offset + t.offset;
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* x, const TensorInfo* y) { return x->offset < y->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo* p = by_offset[i - 1];
    const TensorInfo* q = by_offset[i];
    if (p->n_bytes > 0 && q->n_bytes > 0 && p->offset + p->n_bytes > q->offset) {
      return Corrupt(q->info_offset, "tensor '{}' (bytes {}..{}) overlaps tensor '{}' (bytes {}..{})",
                     q->name, q->offset, q->offset + q->n_bytes, p->name, p->offset,
                     p->offset + p->n_bytes);
    }
  }
  return Status::Ok();
}

Status Parser::Run() {
  uint32_t magic = 0;
  if (size_ < 4) {
    return Corrupt(0, "not a GGUF file: {} bytes is too short for the magic", size_);
  }
  FERRY_RETURN_IF_ERROR(ReadPod(&magic, "magic"));
  if (magic != kMagic) {
    return Corrupt(0, "not a GGUF file: magic is {:02x} {:02x} {:02x} {:02x}, expected 'GGUF'",
                   data_[0], data_[1], data_[2], data_[3]);
  }
  uint32_t version = 0;
  FERRY_RETURN_IF_ERROR(ReadPod(&version, "version"));
  if (version == 1) {
    return UnimplementedError(
        "GGUF version 1 is not supported (at byte offset 4); only versions 2 and 3 are. Convert "
        "the model again with a current llama.cpp");
  }
  if (version != 2 && version != 3) {
    if ((version & 0xffff) == 0 && __builtin_bswap32(version) <= 3) {
      return UnimplementedError("big-endian GGUF files are not supported (version field {:#x} at "
                                "byte offset 4)", version);
    }
    return UnimplementedError("GGUF version {} is not supported (at byte offset 4); only "
                              "versions 2 and 3 are", version);
  }
  f_->version_ = version;
  uint64_t n_tensors = 0, n_kv = 0;
  FERRY_RETURN_IF_ERROR(ReadPod(&n_tensors, "tensor count"));
  FERRY_RETURN_IF_ERROR(ReadPod(&n_kv, "metadata count"));
  FERRY_RETURN_IF_ERROR(ReadMetadata(n_kv));
  FERRY_RETURN_IF_ERROR(ReadTensorInfos(n_tensors));
  return CheckTensorData();
}

StatusOr<std::unique_ptr<GgufFile>> GgufFile::Parse(const uint8_t* data, size_t size,
                                                     std::string name) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->data_ = data;
  f->size_ = size;
  f->name_ = std::move(name);
  Parser p(f.get());
  Status s = p.Run();
  if (!s.ok()) return s.WithPrefix(f->name_);
  return f;
}

StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped, MappedFile::Open(path));
  const uint8_t* data = mapped->data();
  size_t size = mapped->size();
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> f, Parse(data, size, path));
  f->file_ = std::move(mapped);
  return f;
}

const Value* GgufFile::Find(std::string_view key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].value;
}

StatusOr<uint64_t> GgufFile::GetUint(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return NotFoundError("{}: no metadata key '{}'", name_, key);
  auto r = v->AsUint();
  if (!r.ok()) return r.status().WithPrefix(fmt::format("{}: {}", name_, key));
  return r;
}

StatusOr<double> GgufFile::GetDouble(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return NotFoundError("{}: no metadata key '{}'", name_, key);
  auto r = v->AsDouble();
  if (!r.ok()) return r.status().WithPrefix(fmt::format("{}: {}", name_, key));
  return r;
}

StatusOr<std::string_view> GgufFile::GetString(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return NotFoundError("{}: no metadata key '{}'", name_, key);
  auto r = v->AsString();
  if (!r.ok()) return r.status().WithPrefix(fmt::format("{}: {}", name_, key));
  return r;
}

StatusOr<const Array*> GgufFile::GetArray(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return NotFoundError("{}: no metadata key '{}'", name_, key);
  auto r = v->AsArray();
  if (!r.ok()) return r.status().WithPrefix(fmt::format("{}: {}", name_, key));
  return r;
}

uint64_t GgufFile::heap_bytes() const {
  // A std::map node: 32 bytes of tree links and colour, then the key and the value.
  constexpr uint64_t kMapNode = 32 + sizeof(std::string) + sizeof(size_t);
  auto string_heap = [](const std::string& s) -> uint64_t {
    return s.capacity() > 15 ? s.capacity() + 1 : 0;
  };
  uint64_t bytes = metadata_.capacity() * sizeof(KeyValue) + tensors_.capacity() * sizeof(TensorInfo);
  for (const KeyValue& kv : metadata_) {
    bytes += string_heap(kv.key) + kv.value.heap_bytes() + kMapNode + string_heap(kv.key);
  }
  for (const TensorInfo& t : tensors_) {
    bytes += string_heap(t.name) + t.dims.capacity() * sizeof(uint64_t) + kMapNode +
             string_heap(t.name);
  }
  return bytes + string_heap(name_);
}

const TensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace ferry::gguf
