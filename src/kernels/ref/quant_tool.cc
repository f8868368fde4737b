// ferry_quant_tool: test helper for the reference kernels (tests/test_quants_parity.py).
//   ferry_quant_tool dequant TYPE IN.bin OUT.f32   raw blocks of TYPE -> little-endian f32
//   ferry_quant_tool quant TYPE IN.f32 OUT.bin     little-endian f32 -> raw blocks of TYPE
// TYPE is a ggml type name in any case ("Q4_K", "bf16"). The whole file is one row. Exit status
// 0 on success, 1 with the error on stderr otherwise, 2 for bad usage.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "kernels/ref/dequantize.h"
#include "kernels/ref/quantize.h"
#include "tensor/dtype.h"

namespace {

// Bytes in 8-byte aligned storage, so that any block struct or float may be read in place.
struct Buffer {
  std::unique_ptr<uint64_t[]> words;
  size_t size = 0;
  void* data() { return words.get(); }
};

Buffer Allocate(size_t size) {
  Buffer b;
  b.words = std::make_unique<uint64_t[]>(size / 8 + 1);
  b.size = size;
  return b;
}

ferry::StatusOr<Buffer> ReadFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ferry::IoError("cannot open {}", path);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return ferry::IoError("cannot read {}", path);
  Buffer b = Allocate(bytes.size());
  std::memcpy(b.data(), bytes.data(), bytes.size());
  return b;
}

ferry::Status WriteFile(const char* path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) return ferry::IoError("cannot write {}", path);
  return ferry::Status::Ok();
}

ferry::Status Dequant(ferry::DType type, const char* in_path, const char* out_path) {
  auto in = ReadFile(in_path);
  if (!in.ok()) return in.status();
  const ferry::DTypeTraits& traits = ferry::Traits(type);
  if (in->size % traits.type_size != 0) {
    return ferry::InvalidArgumentError("{}: {} bytes is not a whole number of {}-byte {} blocks",
                                       in_path, in->size, traits.type_size, traits.name);
  }
  const int64_t n = static_cast<int64_t>(in->size / traits.type_size * traits.block_size);
  Buffer out = Allocate(static_cast<size_t>(n) * sizeof(float));
  FERRY_RETURN_IF_ERROR(ferry::DequantizeRow(type, in->data(), static_cast<float*>(out.data()), n));
  return WriteFile(out_path, out.data(), out.size);
}

ferry::Status Quant(ferry::DType type, const char* in_path, const char* out_path) {
  auto in = ReadFile(in_path);
  if (!in.ok()) return in.status();
  if (in->size % sizeof(float) != 0) {
    return ferry::InvalidArgumentError("{}: {} bytes is not a whole number of floats", in_path,
                                       in->size);
  }
  const int64_t n = static_cast<int64_t>(in->size / sizeof(float));
  const ferry::DTypeTraits& traits = ferry::Traits(type);
  const size_t out_size = static_cast<size_t>(n) / traits.block_size * traits.type_size;
  Buffer out = Allocate(out_size);
  FERRY_RETURN_IF_ERROR(
      ferry::QuantizeRow(type, static_cast<const float*>(in->data()), out.data(), n));
  return WriteFile(out_path, out.data(), out.size);
}

int Fail(const ferry::Status& s) {
  std::fprintf(stderr, "ferry_quant_tool: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 || (std::strcmp(argv[1], "dequant") != 0 && std::strcmp(argv[1], "quant") != 0)) {
    std::fprintf(stderr,
                 "usage: ferry_quant_tool dequant TYPE IN.bin OUT.f32 | "
                 "quant TYPE IN.f32 OUT.bin\n");
    return 2;
  }
  auto type = ferry::ParseDType(argv[2]);
  if (!type.ok()) return Fail(type.status());
  const bool dequant = std::strcmp(argv[1], "dequant") == 0;
  ferry::Status s = dequant ? Dequant(*type, argv[3], argv[4]) : Quant(*type, argv[3], argv[4]);
  return s.ok() ? 0 : Fail(s);
}
