// make_seed_corpus OUT_DIR [SHARED_DIR]: writes the seed corpus for gguf_reader_fuzz.
//
// SHARED_DIR (default: the repository's ../shared) holds models/*.gguf, vocab/*.gguf and
// vocab/legacy/*.gguf. For each of those files it writes
//   trunc-<name>    the file's first 16 KiB (the header, cut off somewhere in the metadata);
//   small-<name>    a complete, valid GGUF rebuilt from the file: its metadata with arrays cut
//                   to at most 16 items and long strings shortened, and its first few tensors
//                   cut to one block each; under 8 KiB (files the reader rejects, such as GGUF
//                   v1, get only the truncated seed);
// and then a few synthetic files: every metadata value type with nested arrays (v2 and v3),
// one tensor of every data type with a non-default alignment, and an empty file; and last the
// regress-* inputs, which the reader must reject (past bugs).
// Every seed except the truncated and regress-* ones is checked to parse before it is written.
// Prints one line per seed written to stderr; exits non-zero on any error.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "base/mapped_file.h"
#include "gguf/gguf.h"
#include "tensor/dtype.h"

#ifndef FERRY_SHARED_DIR
#define FERRY_SHARED_DIR "../shared"
#endif

namespace ferry::gguf {
namespace {

namespace fs = std::filesystem;

constexpr size_t kTruncatedBytes = 16 * 1024;
constexpr size_t kMaxSeedBytes = 8 * 1024;

// How much of a shared file a small seed keeps; tried from the most generous down until the
// seed fits kMaxSeedBytes.
struct Budget {
  size_t max_items;   // per array, at every nesting level
  size_t max_string;  // bytes per string (keys are kept whole)
  size_t max_tensors;
};
constexpr Budget kBudgets[] = {
    {16, 256, 4}, {16, 64, 4}, {8, 32, 2}, {4, 16, 1}, {2, 8, 0}, {0, 0, 0},
};

Value Shrink(const Value& v, const Budget& b) {
  if (v.type() == ValueType::kString) {
    const std::string& s = std::get<std::string>(v.data);
    return Value(s.substr(0, std::min(s.size(), b.max_string)));
  }
  if (v.type() == ValueType::kArray) {
    const Array& a = std::get<Array>(v.data);
    Array out(a.type());
    size_t n = std::min(a.size(), b.max_items);
    for (size_t i = 0; i < n; ++i) (void)out.Push(Shrink(a.at(i), b));  // same type as a's
    return Value(std::move(out));
  }
  return v;
}

Status WriteSeed(const fs::path& out_dir, const std::string& name,
                 const std::vector<uint8_t>& bytes, bool must_parse) {
  if (must_parse) {
    StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Parse(bytes.data(), bytes.size(), name);
    if (!f.ok()) return InternalError("seed {} does not parse: {}", name, f.status().ToString());
  }
  FERRY_RETURN_IF_ERROR(WriteFileBytes((out_dir / name).string(), bytes.data(), bytes.size()));
  std::fprintf(stderr, "  %-48s %6zu bytes\n", name.c_str(), bytes.size());
  return Status::Ok();
}

StatusOr<std::vector<uint8_t>> BuildSmall(const GgufFile& f, const Budget& b) {
  GgufWriter w(f.version());
  for (const KeyValue& kv : f.metadata()) {
    FERRY_RETURN_IF_ERROR(w.AddMetadata(kv.key, Shrink(kv.value, b)));
  }
  size_t n_tensors = std::min(f.tensors().size(), b.max_tensors);
  for (size_t i = 0; i < n_tensors; ++i) {
    const TensorInfo& t = f.tensors()[i];
    const DTypeTraits& tr = Traits(t.type);
    // One row of one block, keeping the number of dimensions.
    std::vector<uint64_t> dims(t.dims.size(), 1);
    if (!dims.empty()) dims[0] = tr.block_size;
    uint64_t elements = dims.empty() ? 1 : tr.block_size;
    std::vector<uint8_t> data(elements / tr.block_size * tr.type_size, 0);
    std::span<const uint8_t> src = f.TensorData(t);
    std::copy_n(src.begin(), std::min(src.size(), data.size()), data.begin());
    FERRY_RETURN_IF_ERROR(w.AddTensor(t.name, std::move(dims), t.type, data));
  }
  return w.Serialize();
}

Status SeedsFromFile(const fs::path& path, const fs::path& out_dir) {
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> m, MappedFile::Open(path.string()));
  const std::string stem = path.filename().string();
  std::vector<uint8_t> head(m->data(), m->data() + std::min(m->size(), kTruncatedBytes));
  FERRY_RETURN_IF_ERROR(WriteSeed(out_dir, "trunc-" + stem, head, /*must_parse=*/false));

  StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Parse(m->data(), m->size(), path.string());
  if (!f.ok()) {
    std::fprintf(stderr, "  (no small seed from %s: %s)\n", stem.c_str(),
                 f.status().ToString().c_str());
    return Status::Ok();
  }
  for (const Budget& b : kBudgets) {
    FERRY_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, BuildSmall(**f, b));
    if (bytes.size() <= kMaxSeedBytes) {
      return WriteSeed(out_dir, "small-" + stem, bytes, /*must_parse=*/true);
    }
  }
  return InternalError("{}: no small seed under {} bytes", path.string(), kMaxSeedBytes);
}

// Every metadata value type, arrays of each, arrays of arrays (nested to the limit), empty
// arrays and strings, and edge values.
StatusOr<std::vector<uint8_t>> BuildAllTypes(uint32_t version) {
  GgufWriter w(version);
  FERRY_RETURN_IF_ERROR(w.AddMetadata("general.architecture", Value("llama")));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("general.alignment", Value(uint32_t{32})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.u8", Value(uint8_t{255})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.i8", Value(int8_t{-128})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.u16", Value(uint16_t{65535})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.i16", Value(int16_t{-32768})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.u32", Value(uint32_t{4294967295u})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.i32", Value(int32_t{-2147483647 - 1})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.f32", Value(1.5f)));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.bool", Value(true)));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.string", Value("hello, gguf")));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.empty_string", Value("")));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.u64", Value(uint64_t{18446744073709551615u})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.i64", Value(int64_t{-9223372036854775807 - 1})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.f64", Value(-2.25)));

  // One array per scalar type.
  auto array_of = [](ValueType t, std::vector<Value> items) {
    StatusOr<Array> a = Array::FromValues(t, items);
    return a.ok() ? Value(std::move(*a)) : Value(Array(t));
  };
  FERRY_RETURN_IF_ERROR(w.AddMetadata(
      "test.array.u8", array_of(ValueType::kUint8, {uint8_t{0}, uint8_t{1}, uint8_t{255}})));
  FERRY_RETURN_IF_ERROR(
      w.AddMetadata("test.array.i8", array_of(ValueType::kInt8, {int8_t{-1}, int8_t{127}})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata(
      "test.array.u16", array_of(ValueType::kUint16, {uint16_t{1}, uint16_t{65535}})));
  FERRY_RETURN_IF_ERROR(
      w.AddMetadata("test.array.i16", array_of(ValueType::kInt16, {int16_t{-2}, int16_t{2}})));
  FERRY_RETURN_IF_ERROR(
      w.AddMetadata("test.array.u32", array_of(ValueType::kUint32, {uint32_t{0}, uint32_t{7}})));
  FERRY_RETURN_IF_ERROR(
      w.AddMetadata("test.array.i32", array_of(ValueType::kInt32, {int32_t{-1}, int32_t{3}})));
  FERRY_RETURN_IF_ERROR(
      w.AddMetadata("test.array.f32", array_of(ValueType::kFloat32, {0.0f, -0.0f, 3.25f})));
  FERRY_RETURN_IF_ERROR(
      w.AddMetadata("test.array.bool", array_of(ValueType::kBool, {false, true})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata(
      "test.array.string", array_of(ValueType::kString, {Value("a"), Value(""), Value("<s>")})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata(
      "test.array.u64", array_of(ValueType::kUint64, {uint64_t{1} << 63, uint64_t{5}})));
  FERRY_RETURN_IF_ERROR(
      w.AddMetadata("test.array.i64", array_of(ValueType::kInt64, {int64_t{-5}, int64_t{5}})));
  FERRY_RETURN_IF_ERROR(
      w.AddMetadata("test.array.f64", array_of(ValueType::kFloat64, {1e300, -1e-300})));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.array.empty", array_of(ValueType::kUint32, {})));

  // Arrays of arrays: a 2x2 of strings, and a chain nested as deep as the reader allows.
  FERRY_RETURN_IF_ERROR(w.AddMetadata(
      "test.array.nested",
      array_of(ValueType::kArray, {array_of(ValueType::kString, {Value("x"), Value("y")}),
                                   array_of(ValueType::kString, {})})));
  Value deep = array_of(ValueType::kInt32, {int32_t{42}});
  for (int level = 1; level < kMaxArrayNesting; ++level) {
    deep = array_of(ValueType::kArray, {deep});
  }
  FERRY_RETURN_IF_ERROR(w.AddMetadata("test.array.deepest", deep));

  // A couple of tensors so the data section is not empty.
  std::vector<uint8_t> f32(4 * 4, 0);
  FERRY_RETURN_IF_ERROR(w.AddTensor("token_embd.weight", {2, 2}, DType::kF32, f32));
  FERRY_RETURN_IF_ERROR(
      w.AddTensor("output_norm.weight", {2}, DType::kF32, std::span<const uint8_t>(f32).first(8)));
  return w.Serialize();
}

// One tensor of every data type ferry knows, one block each, with a 64-byte alignment; plus a
// scalar (no dimensions), a 4-dimensional and an empty (zero-element) tensor.
StatusOr<std::vector<uint8_t>> BuildAllDTypes() {
  GgufWriter w(3);
  FERRY_RETURN_IF_ERROR(w.AddMetadata("general.architecture", Value("llama")));
  FERRY_RETURN_IF_ERROR(w.AddMetadata("general.alignment", Value(uint32_t{64})));
  for (uint32_t id = 0; id < 64; ++id) {
    std::optional<DTypeTraits> tr = GetDTypeTraits(id);
    if (!tr) continue;
    std::vector<uint8_t> data(tr->type_size);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7 + id);
    FERRY_RETURN_IF_ERROR(
        w.AddTensor(fmt::format("blk.0.{}.weight", tr->name), {tr->block_size}, tr->type, data));
  }
  std::vector<uint8_t> four(4);
  FERRY_RETURN_IF_ERROR(w.AddTensor("scalar", {}, DType::kF32, four));
  FERRY_RETURN_IF_ERROR(w.AddTensor("four_dims", {1, 1, 1, 1}, DType::kF32, four));
  FERRY_RETURN_IF_ERROR(w.AddTensor("empty", {32, 0}, DType::kQ8_0, {}));
  return w.Serialize();
}

// Hand-made inputs the reader once accepted wrongly; kept as seeds so every run checks them
// (the reader must reject them; gguf_reader_fuzz traps if it does not).
class RawBytes {
 public:
  RawBytes& U32(uint32_t v) { return Pod(v); }
  RawBytes& U64(uint64_t v) { return Pod(v); }
  RawBytes& Str(std::string_view s) {
    U64(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  RawBytes& PadTo(size_t alignment) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(0);
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  template <typename T>
  RawBytes& Pod(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes_.insert(bytes_.end(), p, p + sizeof v);
    return *this;
  }
  std::vector<uint8_t> bytes_;
};

Status WriteRegressionSeeds(const fs::path& out_dir) {
  // One f32 tensor of 2^62 elements: its byte size (2^64) wrapped to 0.
  RawBytes wrap;
  wrap.U32(kMagic).U32(3).U64(1).U64(0);
  wrap.Str("a").U32(1).U64(uint64_t{1} << 62).U32(0).U64(0).PadTo(32);
  FERRY_RETURN_IF_ERROR(
      WriteSeed(out_dir, "regress-tensor-byte-size-overflow.gguf", wrap.bytes(), false));
  // One empty tensor, and the file ends before the padding that starts the data section: the
  // tensor's data pointed past the end of the file.
  RawBytes pad;
  pad.U32(kMagic).U32(3).U64(1).U64(0);
  pad.Str("a").U32(1).U64(0).U32(0).U64(0);
  return WriteSeed(out_dir, "regress-data-section-past-end.gguf", pad.bytes(), false);
}

Status Run(const fs::path& out_dir, const fs::path& shared_dir) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return IoError("cannot create {}: {}", out_dir.string(), ec.message());

  int n_shared = 0;
  for (const char* sub : {"models", "vocab", "vocab/legacy"}) {
    fs::path dir = shared_dir / sub;
    if (!fs::is_directory(dir)) return NotFoundError("no directory {}", dir.string());
    std::vector<fs::path> files;
    for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
      if (e.is_regular_file() && e.path().extension() == ".gguf") files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& p : files) {
      FERRY_RETURN_IF_ERROR(SeedsFromFile(p, out_dir));
      ++n_shared;
    }
  }
  if (n_shared == 0) return NotFoundError("no .gguf files under {}", shared_dir.string());

  for (uint32_t version : {2u, 3u}) {
    FERRY_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, BuildAllTypes(version));
    FERRY_RETURN_IF_ERROR(WriteSeed(
        out_dir, fmt::format("synthetic-all-value-types-v{}.gguf", version), bytes, true));
  }
  FERRY_ASSIGN_OR_RETURN(std::vector<uint8_t> dtypes, BuildAllDTypes());
  FERRY_RETURN_IF_ERROR(WriteSeed(out_dir, "synthetic-all-dtypes.gguf", dtypes, true));
  FERRY_ASSIGN_OR_RETURN(std::vector<uint8_t> empty, GgufWriter(3).Serialize());
  FERRY_RETURN_IF_ERROR(WriteSeed(out_dir, "synthetic-empty.gguf", empty, true));
  return WriteRegressionSeeds(out_dir);
}

}  // namespace
}  // namespace ferry::gguf

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s OUT_DIR [SHARED_DIR]  (default SHARED_DIR: %s)\n", argv[0],
                 FERRY_SHARED_DIR);
    return 2;
  }
  std::filesystem::path shared = argc == 3 ? argv[2] : FERRY_SHARED_DIR;
  ferry::Status s = ferry::gguf::Run(argv[1], shared);
  if (!s.ok()) {
    std::fprintf(stderr, "make_seed_corpus: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
