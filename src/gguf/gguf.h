// GGUF files: the metadata value model, the validated reader and the writer.
//
// Format (versions 2 and 3, little-endian): magic "GGUF", u32 version, u64 tensor count, u64
// metadata count, the metadata (key string, u32 value type, value), the tensor infos (name,
// u32 n_dims <= 4, u64 ne[n_dims], u32 ggml type, u64 offset), padding to `general.alignment`
// (default 32), then the tensor data section. Strings are u64 length + bytes (not 0-terminated).
//
// The reader checks every length, count, offset and size against the file before using it; a
// bad file yields a Status naming the problem and the byte offset where it was found.
//
// Thread-safety: a GgufFile is immutable after Open() and may be read from any thread.
#ifndef FERRY_GGUF_GGUF_H_
#define FERRY_GGUF_GGUF_H_

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/mapped_file.h"
#include "base/status.h"
#include "tensor/dtype.h"

namespace ferry::gguf {

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
inline constexpr uint64_t kDefaultAlignment = 32;
inline constexpr int kMaxDims = 4;
inline constexpr int kMaxArrayNesting = 8;
// Limit on metadata array items in one file (all arrays together). Items are stored packed
// (at most 8 bytes each plus a string's text, which the file itself bounds); the largest real
// vocabularies have well under a million tokens.
inline constexpr uint64_t kMaxTotalArrayItems = uint64_t{1} << 24;

// GGUF metadata value types; the numbers are the on-disk ids.
enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
std::string_view ValueTypeName(ValueType t);

struct Value;
// A typed array: every item has type `type()` (items of an array of arrays are arrays).
//
// Stored compactly, because tokenizer vocabularies are arrays of 32k-262k items: numbers and
// bools packed as on disk ([size() * item size] bytes, little-endian), strings as one byte blob
// plus [size()] end offsets, arrays of arrays as Values. heap_bytes() is what an array holds on
// the heap, exactly (capacities), which the memory planner counts.
class Array {
 public:
  Array() = default;  // an empty uint8 array
  // Defined out of line: Value is incomplete here, and an inline constructor would need
  // std::vector<Value>'s destructor (clang rejects that).
  explicit Array(ValueType type);
  // Builds an array of `type` from `items`. Error: an item of another type (names its index).
  static StatusOr<Array> FromValues(ValueType type, const std::vector<Value>& items);

  ValueType type() const { return type_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  // Item i (precondition: i < size()), as a Value (a copy).
  Value at(size_t i) const;
  // Item i of a string array (precondition: type() == kString, i < size()).
  std::string_view string_at(size_t i) const;
  // Item i of an array of arrays (precondition: type() == kArray, i < size()).
  const Array& array_at(size_t i) const;
  // Item i converted as Value::AsDouble / AsInt would (errors name the actual type).
  StatusOr<double> DoubleAt(size_t i) const;
  StatusOr<int64_t> IntAt(size_t i) const;

  // Appends `v`. Error: v's type is not type().
  Status Push(const Value& v);
  // Appends a string (precondition: type() == kString).
  void PushString(std::string_view s);
  // Reserves room for `items` more items (and, for strings, `text_bytes` more bytes of text).
  void Reserve(size_t items, size_t text_bytes = 0);
  // Replaces the raw packed items of a number/bool array (what the reader does): `bytes` holds
  // `count` items of type(). Precondition: type() is a number or bool type.
  void AssignPacked(const uint8_t* bytes, size_t count);
  // Keeps only the first n items (n <= size()).
  void Truncate(size_t n);

  // The packed items of a number or bool array: [size() * PackedSize(type())] bytes.
  std::span<const uint8_t> packed_bytes() const { return blob_; }
  // Total bytes of text in a string array (0 for other types).
  uint64_t text_bytes() const { return type_ == ValueType::kString ? blob_.size() : 0; }
  // Bytes held on the heap by this array and everything in it (capacities, exactly).
  uint64_t heap_bytes() const;

  bool operator==(const Array& other) const;

 private:
  ValueType type_ = ValueType::kUint8;
  size_t size_ = 0;
  std::vector<uint8_t> blob_;     // packed numbers/bools, or string bytes
  std::vector<uint64_t> ends_;    // strings: end offset of item i in blob_
  std::vector<Value> nested_;     // arrays of arrays
};

// Bytes of one packed item of a number or bool type (0 for strings and arrays).
size_t PackedSize(ValueType t);

// One metadata value. The variant's index equals the on-disk ValueType id, so
// `static_cast<ValueType>(v.data.index())` is the value's type.
struct Value {
  using Data = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                            std::string, Array, uint64_t, int64_t, double>;
  Data data;

  Value() = default;
  template <typename T>
  Value(T v) : data(std::move(v)) {}  // NOLINT: implicit from any alternative
  Value(const char* s) : data(std::string(s)) {}  // NOLINT

  ValueType type() const { return static_cast<ValueType>(data.index()); }
  bool is_integer() const;
  bool is_float() const;

  // Conversions that check the value fits; an error names the actual type.
  StatusOr<uint64_t> AsUint() const;
  StatusOr<int64_t> AsInt() const;
  StatusOr<double> AsDouble() const;  // any numeric type
  StatusOr<bool> AsBool() const;
  StatusOr<std::string_view> AsString() const;
  StatusOr<const Array*> AsArray() const;

  bool operator==(const Value& other) const;
  // Bytes held on the heap (a long string's buffer, an array's storage); not sizeof(Value).
  uint64_t heap_bytes() const;
};

struct KeyValue {
  std::string key;
  Value value;
};

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ne[0] first: ne[0] is the contiguous (row) dimension
  DType type = DType::kF32;
  uint64_t offset = 0;         // relative to the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  uint64_t file_offset = 0;    // absolute offset of the data in the file
  uint64_t info_offset = 0;    // absolute offset of this tensor's info record (for errors)
};

class GgufFile {
 public:
  // Maps and validates the file at `path`. Error messages start with the path.
  static StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses a caller-owned buffer that must outlive the returned object (fuzzing, tests).
  // `name` is used in error messages.
  static StatusOr<std::unique_ptr<GgufFile>> Parse(const uint8_t* data, size_t size,
                                                   std::string name = "<buffer>");

  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the tensor data section
  uint64_t file_size() const { return size_; }

  // Metadata in file order.
  const std::vector<KeyValue>& metadata() const { return metadata_; }
  const Value* Find(std::string_view key) const;
  // Bytes the parsed header holds on the heap: metadata keys and values (exact: string and
  // array capacities), the tensor table, and the two name indexes (a fixed per-node cost of
  // std::map's red-black tree nodes). The memory planner charges this to the CPU.
  uint64_t heap_bytes() const;
  // Typed getters: NotFound when absent, InvalidArgument when of the wrong type.
  StatusOr<uint64_t> GetUint(std::string_view key) const;
  StatusOr<double> GetDouble(std::string_view key) const;
  StatusOr<std::string_view> GetString(std::string_view key) const;
  StatusOr<const Array*> GetArray(std::string_view key) const;

  // OK while the mapped file is as it was when opened (MappedFile::CheckUnchanged); always OK
  // for a caller-owned buffer.
  Status CheckUnchanged() const { return file_ ? file_->CheckUnchanged() : Status::Ok(); }
  // Whether a read of the mapping faulted (MappedFile::faulted): an atomic load.
  bool faulted() const { return file_ && file_->faulted(); }

  // Tensors in file order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;
  // The tensor's bytes, in place in the mapping: [n_bytes].
  std::span<const uint8_t> TensorData(const TensorInfo& t) const {
    return {data_ + t.file_offset, static_cast<size_t>(t.n_bytes)};
  }

 private:
  friend class Parser;
  GgufFile() = default;

  std::unique_ptr<MappedFile> file_;  // null when parsing a caller-owned buffer
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<KeyValue> metadata_;
  std::map<std::string, size_t, std::less<>> metadata_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Builds a GGUF file in memory. Metadata keeps insertion order; tensors are laid out in the
// order added, each padded to the alignment (general.alignment if set, else 32).
// Thread-safety: not thread-safe; one writer per thread.
class GgufWriter {
 public:
  explicit GgufWriter(uint32_t version = 3) : version_(version) {}

  // Errors: duplicate key; general.alignment that is not a u32 power of two.
  Status AddMetadata(std::string key, Value value);
  // `data` must hold exactly the bytes of `dims` elements of `type` (ne[0] first).
  Status AddTensor(std::string name, std::vector<uint64_t> dims, DType type,
                   std::span<const uint8_t> data);
  // Streaming, for files too big to hold in memory: declares a tensor of `dims` elements of
  // `type` whose bytes the caller writes itself after SerializeHeader()'s bytes, in the order
  // the tensors were added, each followed by zeros up to a multiple of alignment(). Returns the
  // tensor's byte size. A writer with such tensors cannot Serialize() or WriteFile().
  StatusOr<uint64_t> AddTensorInfo(std::string name, std::vector<uint64_t> dims, DType type);

  StatusOr<std::vector<uint8_t>> Serialize() const;
  Status WriteFile(const std::string& path) const;
  // Everything before the tensor data section: magic, counts, metadata, tensor infos and the
  // padding to the alignment (what Serialize() writes before the first tensor's bytes).
  StatusOr<std::vector<uint8_t>> SerializeHeader() const;
  // The alignment of the data section and of every tensor in it.
  uint64_t alignment() const { return alignment_; }

 private:
  struct PendingTensor {
    std::string name;
    std::vector<uint64_t> dims;
    DType type;
    uint64_t n_bytes = 0;
    bool streamed = false;      // declared by AddTensorInfo: no bytes here
    std::vector<uint8_t> data;  // AddTensor's bytes
  };
  // Checks a new tensor's name and shape; returns its byte size.
  StatusOr<uint64_t> CheckNewTensor(const std::string& name, const std::vector<uint64_t>& dims,
                                    DType type) const;
  uint32_t version_;
  uint64_t alignment_ = kDefaultAlignment;
  std::vector<KeyValue> metadata_;
  std::vector<PendingTensor> tensors_;
};

// The name of llama.cpp's `general.file_type` value (llama_ftype: "Q4_K_M", "F16", ...); "" for
// a number it does not know.
std::string_view FileTypeName(uint64_t ftype);

}  // namespace ferry::gguf

#endif  // FERRY_GGUF_GGUF_H_
