#include <cmath>
#include <cstring>
#include <type_traits>
#include <limits>

#include "gguf/gguf.h"

namespace ferry::gguf {

std::string_view ValueTypeName(ValueType t) {
  switch (t) {
    case ValueType::kUint8: return "uint8";
    case ValueType::kInt8: return "int8";
    case ValueType::kUint16: return "uint16";
    case ValueType::kInt16: return "int16";
    case ValueType::kUint32: return "uint32";
    case ValueType::kInt32: return "int32";
    case ValueType::kFloat32: return "float32";
    case ValueType::kBool: return "bool";
    case ValueType::kString: return "string";
    case ValueType::kArray: return "array";
    case ValueType::kUint64: return "uint64";
    case ValueType::kInt64: return "int64";
    case ValueType::kFloat64: return "float64";
  }
  return "unknown";
}

bool Value::is_integer() const {
  switch (type()) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kUint16:
    case ValueType::kInt16:
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kUint64:
    case ValueType::kInt64: return true;
    default: return false;
  }
}

bool Value::is_float() const {
  return type() == ValueType::kFloat32 || type() == ValueType::kFloat64;
}

StatusOr<int64_t> Value::AsInt() const {
  switch (type()) {
    case ValueType::kUint8: return static_cast<int64_t>(std::get<uint8_t>(data));
    case ValueType::kInt8: return static_cast<int64_t>(std::get<int8_t>(data));
    case ValueType::kUint16: return static_cast<int64_t>(std::get<uint16_t>(data));
    case ValueType::kInt16: return static_cast<int64_t>(std::get<int16_t>(data));
    case ValueType::kUint32: return static_cast<int64_t>(std::get<uint32_t>(data));
    case ValueType::kInt32: return static_cast<int64_t>(std::get<int32_t>(data));
    case ValueType::kInt64: return std::get<int64_t>(data);
    case ValueType::kUint64: {
      uint64_t v = std::get<uint64_t>(data);
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return OutOfRangeError("value {} does not fit in int64", v);
      }
      return static_cast<int64_t>(v);
    }
    default: return InvalidArgumentError("expected an integer, found {}", ValueTypeName(type()));
  }
}

StatusOr<uint64_t> Value::AsUint() const {
  if (type() == ValueType::kUint64) return std::get<uint64_t>(data);
  FERRY_ASSIGN_OR_RETURN(int64_t v, AsInt());
  if (v < 0) return OutOfRangeError("expected a non-negative integer, found {}", v);
  return static_cast<uint64_t>(v);
}

StatusOr<double> Value::AsDouble() const {
  if (type() == ValueType::kFloat32) return static_cast<double>(std::get<float>(data));
  if (type() == ValueType::kFloat64) return std::get<double>(data);
  if (type() == ValueType::kUint64) return static_cast<double>(std::get<uint64_t>(data));
  if (is_integer()) return static_cast<double>(*AsInt());
  return InvalidArgumentError("expected a number, found {}", ValueTypeName(type()));
}

StatusOr<bool> Value::AsBool() const {
  if (type() != ValueType::kBool) {
    return InvalidArgumentError("expected a bool, found {}", ValueTypeName(type()));
  }
  return std::get<bool>(data);
}

StatusOr<std::string_view> Value::AsString() const {
  if (type() != ValueType::kString) {
    return InvalidArgumentError("expected a string, found {}", ValueTypeName(type()));
  }
  return std::string_view(std::get<std::string>(data));
}

StatusOr<const Array*> Value::AsArray() const {
  if (type() != ValueType::kArray) {
    return InvalidArgumentError("expected an array, found {}", ValueTypeName(type()));
  }
  return &std::get<Array>(data);
}

bool Value::operator==(const Value& other) const {
  if (data.index() != other.data.index()) return false;
  // Floats compare by bits so that NaN == NaN and -0 != +0 (what "read back identically" means).
  if (type() == ValueType::kFloat32) {
    float a = std::get<float>(data), b = std::get<float>(other.data);
    return std::memcmp(&a, &b, sizeof a) == 0;
  }
  if (type() == ValueType::kFloat64) {
    double a = std::get<double>(data), b = std::get<double>(other.data);
    return std::memcmp(&a, &b, sizeof a) == 0;
  }
  return data == other.data;
}

uint64_t Value::heap_bytes() const {
  if (type() == ValueType::kString) {
    const std::string& s = std::get<std::string>(data);
    // libstdc++ keeps up to 15 chars in the object itself (small-string optimization).
    return s.capacity() > 15 ? s.capacity() + 1 : 0;
  }
  if (type() == ValueType::kArray) return std::get<Array>(data).heap_bytes();
  return 0;
}

size_t PackedSize(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool: return 1;
    case ValueType::kUint16:
    case ValueType::kInt16: return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32: return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64: return 8;
    case ValueType::kString:
    case ValueType::kArray: return 0;
  }
  return 0;
}

namespace {

template <typename T>
T LoadPacked(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

Array::Array(ValueType type) : type_(type) {}

StatusOr<Array> Array::FromValues(ValueType type, const std::vector<Value>& items) {
  Array a(type);
  a.Reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    if (Status s = a.Push(items[i]); !s.ok()) {
      return InvalidArgumentError("array of {}: item {} is a {}", ValueTypeName(type), i,
                                  ValueTypeName(items[i].type()));
    }
  }
  return a;
}

Value Array::at(size_t i) const {
  const uint8_t* p = blob_.data() + i * PackedSize(type_);
  switch (type_) {
    case ValueType::kUint8: return Value(LoadPacked<uint8_t>(p));
    case ValueType::kInt8: return Value(LoadPacked<int8_t>(p));
    case ValueType::kUint16: return Value(LoadPacked<uint16_t>(p));
    case ValueType::kInt16: return Value(LoadPacked<int16_t>(p));
    case ValueType::kUint32: return Value(LoadPacked<uint32_t>(p));
    case ValueType::kInt32: return Value(LoadPacked<int32_t>(p));
    case ValueType::kFloat32: return Value(LoadPacked<float>(p));
    case ValueType::kBool: return Value(*p != 0);
    case ValueType::kUint64: return Value(LoadPacked<uint64_t>(p));
    case ValueType::kInt64: return Value(LoadPacked<int64_t>(p));
    case ValueType::kFloat64: return Value(LoadPacked<double>(p));
    case ValueType::kString: return Value(std::string(string_at(i)));
    case ValueType::kArray: return Value(nested_[i]);
  }
  return Value();
}

std::string_view Array::string_at(size_t i) const {
  const uint64_t begin = i == 0 ? 0 : ends_[i - 1];
  return std::string_view(reinterpret_cast<const char*>(blob_.data()) + begin,
                          static_cast<size_t>(ends_[i] - begin));
}

const Array& Array::array_at(size_t i) const { return std::get<Array>(nested_[i].data); }

StatusOr<double> Array::DoubleAt(size_t i) const {
  switch (type_) {
    case ValueType::kFloat32: return static_cast<double>(LoadPacked<float>(blob_.data() + 4 * i));
    case ValueType::kFloat64: return LoadPacked<double>(blob_.data() + 8 * i);
    default: return at(i).AsDouble();
  }
}

StatusOr<int64_t> Array::IntAt(size_t i) const {
  switch (type_) {
    case ValueType::kInt32: return static_cast<int64_t>(LoadPacked<int32_t>(blob_.data() + 4 * i));
    case ValueType::kUint32:
      return static_cast<int64_t>(LoadPacked<uint32_t>(blob_.data() + 4 * i));
    default: return at(i).AsInt();
  }
}

Status Array::Push(const Value& v) {
  if (v.type() != type_) {
    return InvalidArgumentError("cannot add a {} to an array of {}", ValueTypeName(v.type()),
                                ValueTypeName(type_));
  }
  switch (type_) {
    case ValueType::kString: PushString(std::get<std::string>(v.data)); return Status::Ok();
    case ValueType::kArray: nested_.push_back(v); ++size_; return Status::Ok();
    case ValueType::kBool: blob_.push_back(std::get<bool>(v.data) ? 1 : 0); ++size_; break;
    default:
      std::visit(
          [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_arithmetic_v<T>) {
              const auto* p = reinterpret_cast<const uint8_t*>(&x);
              blob_.insert(blob_.end(), p, p + sizeof x);
            }
          },
          v.data);
      ++size_;
      break;
  }
  return Status::Ok();
}

void Array::PushString(std::string_view s) {
  blob_.insert(blob_.end(), s.begin(), s.end());
  ends_.push_back(blob_.size());
  ++size_;
}

void Array::Reserve(size_t items, size_t text_bytes) {
  if (type_ == ValueType::kString) {
    ends_.reserve(ends_.size() + items);
    blob_.reserve(blob_.size() + text_bytes);
  } else if (type_ == ValueType::kArray) {
    nested_.reserve(nested_.size() + items);
  } else {
    blob_.reserve(blob_.size() + items * PackedSize(type_));
  }
}

void Array::AssignPacked(const uint8_t* bytes, size_t count) {
  const size_t n = count * PackedSize(type_);
  blob_.clear();
  blob_.reserve(n);
  blob_.assign(bytes, bytes + n);
  size_ = count;
}

void Array::Truncate(size_t n) {
  if (n >= size_) return;
  if (type_ == ValueType::kString) {
    blob_.resize(n == 0 ? 0 : static_cast<size_t>(ends_[n - 1]));
    ends_.resize(n);
  } else if (type_ == ValueType::kArray) {
    nested_.resize(n);
  } else {
    blob_.resize(n * PackedSize(type_));
  }
  size_ = n;
}

uint64_t Array::heap_bytes() const {
  uint64_t bytes = blob_.capacity() + ends_.capacity() * sizeof(uint64_t) +
                   nested_.capacity() * sizeof(Value);
  for (const Value& v : nested_) bytes += v.heap_bytes();
  return bytes;
}

bool Array::operator==(const Array& other) const {
  if (type_ != other.type_ || size_ != other.size_) return false;
  if (type_ == ValueType::kArray) return nested_ == other.nested_;
  if (type_ == ValueType::kString) return blob_ == other.blob_ && ends_ == other.ends_;
  // Packed numbers compare by bits, as Value does for floats (NaN == NaN, -0 != +0).
  return blob_ == other.blob_;
}

std::string_view FileTypeName(uint64_t ftype) {
  switch (ftype) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K_S";
    case 12: return "Q3_K_M";
    case 13: return "Q3_K_L";
    case 14: return "Q4_K_S";
    case 15: return "Q4_K_M";
    case 16: return "Q5_K_S";
    case 17: return "Q5_K_M";
    case 18: return "Q6_K";
    case 19: return "IQ2_XXS";
    case 20: return "IQ2_XS";
    case 21: return "Q2_K_S";
    case 22: return "IQ3_XS";
    case 23: return "IQ3_XXS";
    case 24: return "IQ1_S";
    case 25: return "IQ4_NL";
    case 26: return "IQ3_S";
    case 27: return "IQ3_M";
    case 28: return "IQ2_S";
    case 29: return "IQ2_M";
    case 30: return "IQ4_XS";
    case 31: return "IQ1_M";
    case 32: return "BF16";
    case 36: return "TQ1_0";
    case 37: return "TQ2_0";
    case 38: return "MXFP4_MOE";
    default: return "";
  }
}

}  // namespace ferry::gguf
