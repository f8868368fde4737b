// libFuzzer target for the GGUF reader.
//
// Every input goes through GgufFile::Parse. Whatever parses is then used the way the rest of
// ferry uses it: every metadata value is converted through every accessor (recursively through
// arrays), every key and tensor name is looked up, the first and last byte of every tensor's data
// is read, and the whole file is rebuilt through GgufWriter. The rebuilt file must parse again
// with the same metadata and tensors, and rebuilding that one must give the same bytes. A broken
// invariant calls __builtin_trap() so that libFuzzer reports the input as a crash; ASan, UBSan
// and LeakSanitizer report the rest.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "tensor/dtype.h"
#include "fuzz_check.h"

namespace ferry::gguf {
namespace {

// Reads go through this so the compiler cannot drop them.
volatile uint64_t g_sink = 0;

using ferry::fuzz::Check;

void Touch(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return;
  g_sink = g_sink + bytes.front() + bytes.back();
}

void Touch(std::string_view s) {
  if (s.empty()) return;
  g_sink = g_sink + static_cast<uint8_t>(s.front()) + static_cast<uint8_t>(s.back());
}

// Calls every accessor on `v` and checks each one succeeds exactly for the types it accepts.
void WalkValue(const Value& v, int depth) {
  Check(depth <= kMaxArrayNesting);
  const ValueType t = v.type();
  Check(static_cast<uint32_t>(t) <= static_cast<uint32_t>(ValueType::kFloat64));
  Touch(ValueTypeName(t));

  StatusOr<uint64_t> u = v.AsUint();
  StatusOr<int64_t> i = v.AsInt();
  StatusOr<double> d = v.AsDouble();
  StatusOr<bool> b = v.AsBool();
  StatusOr<std::string_view> s = v.AsString();
  StatusOr<const Array*> a = v.AsArray();

  Check(i.ok() ==
        (v.is_integer() && !(t == ValueType::kUint64 && std::get<uint64_t>(v.data) > INT64_MAX)));
  if (u.ok()) {
    Check(v.is_integer());
    g_sink = g_sink + *u;
  }
  if (i.ok()) {
    g_sink = g_sink + static_cast<uint64_t>(*i);
    Check(u.ok() == (*i >= 0));
    if (u.ok()) Check(*u == static_cast<uint64_t>(*i));
  }
  Check(d.ok() == (v.is_integer() || v.is_float()));
  if (d.ok()) {
    double x = *d;
    uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    g_sink = g_sink + bits;
  }
  Check(b.ok() == (t == ValueType::kBool));
  if (b.ok()) g_sink = g_sink + (*b ? 1 : 0);
  Check(s.ok() == (t == ValueType::kString));
  if (s.ok()) Touch(*s);
  // The error paths build messages: make sure they are well-formed too.
  if (!u.ok()) Touch(u.status().ToString());
  if (!s.ok()) Touch(s.status().ToString());
  Check(a.ok() == (t == ValueType::kArray));
  if (a.ok()) {
    const Array* arr = *a;
    Check(arr != nullptr);
    for (size_t k = 0; k < arr->size(); ++k) {
      const Value item = arr->at(k);
      Check(item.type() == arr->type());
      if (arr->type() == ValueType::kString) Check(arr->string_at(k) == *item.AsString());
      WalkValue(item, depth + 1);
    }
    Check(arr->heap_bytes() >= arr->text_bytes());
  }
  Check(v == v);
}

// Adds everything in `f` to a writer of the same version; the reader accepted it, so the
// writer must too.
std::vector<uint8_t> Rebuild(const GgufFile& f) {
  GgufWriter w(f.version());
  for (const KeyValue& kv : f.metadata()) {
    Status s = w.AddMetadata(kv.key, kv.value);
    Check(s.ok());
  }
  for (const TensorInfo& t : f.tensors()) {
    Status s = w.AddTensor(t.name, t.dims, t.type, f.TensorData(t));
    Check(s.ok());
  }
  StatusOr<std::vector<uint8_t>> bytes = w.Serialize();
  Check(bytes.ok());
  return std::move(bytes).value();
}

void CheckSameContents(const GgufFile& a, const GgufFile& b) {
  Check(a.version() == b.version());
  Check(a.alignment() == b.alignment());
  Check(a.metadata().size() == b.metadata().size());
  Check(a.tensors().size() == b.tensors().size());
  for (size_t i = 0; i < a.metadata().size(); ++i) {
    Check(a.metadata()[i].key == b.metadata()[i].key);
    Check(a.metadata()[i].value == b.metadata()[i].value);
  }
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const TensorInfo& x = a.tensors()[i];
    const TensorInfo& y = b.tensors()[i];
    Check(x.name == y.name && x.dims == y.dims && x.type == y.type);
    Check(x.n_elements == y.n_elements && x.n_bytes == y.n_bytes);
    std::span<const uint8_t> dx = a.TensorData(x), dy = b.TensorData(y);
    Check(dx.size() == dy.size());
    Check(dx.empty() || std::memcmp(dx.data(), dy.data(), dx.size()) == 0);
  }
}

void Walk(const GgufFile& f, const uint8_t* data, size_t size) {
  Check(f.version() == 2 || f.version() == 3);
  Check(f.file_size() == size);
  Check(f.alignment() != 0 && (f.alignment() & (f.alignment() - 1)) == 0);
  Check(f.data_offset() % f.alignment() == 0);
  // Tensor data lies inside the file, so the data section starts inside it too (or at its end)
  // whenever there is a tensor.
  if (!f.tensors().empty()) Check(f.data_offset() <= size);
  Touch(f.name());

  for (const KeyValue& kv : f.metadata()) {
    Check(!kv.key.empty());
    Check(f.Find(kv.key) == &kv.value);
    WalkValue(kv.value, 0);
    // The typed getters agree with the value's own accessors.
    Check(f.GetUint(kv.key).ok() == kv.value.AsUint().ok());
    Check(f.GetDouble(kv.key).ok() == kv.value.AsDouble().ok());
    Check(f.GetString(kv.key).ok() == kv.value.AsString().ok());
    Check(f.GetArray(kv.key).ok() == kv.value.AsArray().ok());
  }
  Check(f.Find("") == nullptr);
  Check(f.GetUint("ferry.fuzz.no_such_key").status().code() == StatusCode::kNotFound);

  for (const TensorInfo& t : f.tensors()) {
    Check(!t.name.empty());
    Check(t.dims.size() <= static_cast<size_t>(kMaxDims));
    Check(f.FindTensor(t.name) == &t);
    const DTypeTraits& tr = Traits(t.type);
    uint64_t n = 1;
    for (uint64_t d : t.dims) Check(!__builtin_mul_overflow(n, d, &n));
    Check(n == t.n_elements);
    Check(n % tr.block_size == 0);
    // The byte size is the exact product: one that wrapped around 2^64 would describe a tensor
    // far larger than the bytes TensorData() hands out.
    uint64_t n_bytes = 0;
    Check(!__builtin_mul_overflow(n / tr.block_size, uint64_t{tr.type_size}, &n_bytes));
    Check(n_bytes == t.n_bytes);
    Check(t.file_offset == f.data_offset() + t.offset);
    Check(t.file_offset <= size && t.n_bytes <= size - t.file_offset);
    std::span<const uint8_t> bytes = f.TensorData(t);
    Check(bytes.size() == t.n_bytes);
    if (!bytes.empty()) Check(bytes.data() == data + t.file_offset);
    Touch(bytes);
  }
  Check(f.FindTensor("") == nullptr);

  // Round trip: rebuild, parse the rebuilt bytes, compare; rebuilding again is a fixed point.
  std::vector<uint8_t> once = Rebuild(f);
  StatusOr<std::unique_ptr<GgufFile>> again =
      GgufFile::Parse(once.data(), once.size(), "<rebuilt>");
  Check(again.ok());
  CheckSameContents(f, **again);
  std::vector<uint8_t> twice = Rebuild(**again);
  Check(once == twice);
}

}  // namespace
}  // namespace ferry::gguf

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ferry::gguf::GgufFile;
  ferry::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Parse(data, size, "<fuzz>");
  if (!f.ok()) {
    // A rejection must say why.
    ferry::gguf::Check(!f.status().message().empty());
    ferry::gguf::Touch(f.status().ToString());
    return 0;
  }
  ferry::gguf::Walk(**f, data, size);
  return 0;
}
