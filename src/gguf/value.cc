#include <cmath>
#include <cstring>
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

bool operator==(const Array& a, const Array& b) { return a.type == b.type && a.items == b.items; }

}  // namespace ferry::gguf
