// ferry_gguf_tool: test helper for the GGUF layer.
//   ferry_gguf_tool rewrite IN OUT   read IN with ferry's reader, write it with ferry's writer
//   ferry_gguf_tool check FILE       exit 0 if ferry reads FILE, else print the error, exit 1
//   ferry_gguf_tool types            ferry's tensor type table as JSON lines
#include <cstdio>
#include <cstring>
#include <string>

#include "gguf/gguf.h"
#include "tensor/dtype.h"

using ferry::gguf::GgufFile;
using ferry::gguf::GgufWriter;

static int Fail(const ferry::Status& s) {
  std::fprintf(stderr, "%s\n", s.ToString().c_str());
  return 1;
}

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "rewrite") == 0) {
    auto in = GgufFile::Open(argv[2]);
    if (!in.ok()) return Fail(in.status());
    GgufWriter w((*in)->version());
    for (const auto& kv : (*in)->metadata()) {
      if (auto s = w.AddMetadata(kv.key, kv.value); !s.ok()) return Fail(s);
    }
    for (const auto& t : (*in)->tensors()) {
      if (auto s = w.AddTensor(t.name, t.dims, t.type, (*in)->TensorData(t)); !s.ok()) {
        return Fail(s);
      }
    }
    if (auto s = w.WriteFile(argv[3]); !s.ok()) return Fail(s);
    return 0;
  }
  if (argc == 3 && std::strcmp(argv[1], "check") == 0) {
    auto in = GgufFile::Open(argv[2]);
    if (!in.ok()) return Fail(in.status());
    return 0;
  }
  if (argc == 2 && std::strcmp(argv[1], "types") == 0) {
    for (uint32_t id = 0; id < 64; ++id) {
      auto t = ferry::GetDTypeTraits(id);
      if (!t) continue;
      std::printf("{\"id\": %u, \"name\": \"%s\", \"block_size\": %u, \"type_size\": %u}\n", id,
                  std::string(t->name).c_str(), t->block_size, t->type_size);
    }
    return 0;
  }
  std::fprintf(stderr, "usage: ferry_gguf_tool rewrite IN OUT | check FILE | types\n");
  return 2;
}
