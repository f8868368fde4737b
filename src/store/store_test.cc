#include "store/store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "base/sha256.h"

namespace ferry::store {
namespace {

namespace fs = std::filesystem;

const std::string kGguf = std::string(FERRY_SHARED_DIR) + "/models/stories260K.gguf";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, std::string_view bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

ModelName Name(std::string_view text) {
  StatusOr<ModelName> n = ParseModelName(text);
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  return *n;
}

size_t CountBlobs(const std::string& root) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(root + "/blobs")) {
    n += e.path().filename().string().starts_with("sha256-");
  }
  return n;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           fmt::format("ferry_store_{}_{}_{}", info->name(), ::getpid(), counter_++);
    fs::remove_all(dir_);
    root_ = (dir_ / "ferry").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // An Ollama-layout store written by hand: one model `ns/handmade:v1` (the GGUF, a template,
  // params and a license) under the default host. Returns its root.
  std::string MakeOllamaStore() {
    const std::string root = (dir_ / "ollama").string();
    std::string layers;
    auto blob = [&](std::string_view bytes) {
      std::string hex = Sha256Hex(bytes);
      WriteFile(root + "/blobs/sha256-" + hex, bytes);
      return hex;
    };
    auto layer = [&](std::string_view media, std::string_view bytes) {
      std::string hex = blob(bytes);
      if (!layers.empty()) layers += ",";
      layers += fmt::format(R"({{"mediaType":"application/vnd.ollama.image.{}",)"
                            R"("digest":"sha256:{}","size":{}}})",
                            media, hex, bytes.size());
    };
    layer("model", ReadFile(kGguf));
    layer("template", "{{ .Prompt }}");
    layer("params", R"({"stop":["<s>","</s>"],"temperature":0.5,"num_ctx":1024})");
    layer("license", "ollama license");
    const std::string config = R"({"model_format":"gguf","model_family":"llama"})";
    const std::string config_hex = blob(config);
    WriteFile(root + "/manifests/registry.ollama.ai/ns/handmade/v1",
              fmt::format(R"({{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}",)"
                          R"("digest":"sha256:{}","size":{}}},"layers":[{}]}})",
                          kManifestMediaType, kConfigMediaType, config_hex, config.size(), layers));
    return root;
  }

  static inline int counter_ = 0;
  fs::path dir_;
  std::string root_;
};

TEST(DigestTest, Validate) {
  const std::string hex(64, 'a');
  EXPECT_TRUE(ValidateDigest("sha256:" + hex).ok());
  for (const std::string& bad :
       {std::string("sha256:") + std::string(63, 'a'), "sha256:" + hex + "0",
        "sha256:" + std::string(64, 'A'), "sha256-" + hex, "sha512:" + hex,
        "sha256:../../../../etc/passwd" + std::string(36, 'a'), std::string("")}) {
    Status s = ValidateDigest(bad);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(StoreTest, CreateListResolve) {
  StatusOr<Store> store = Store::Open(root_);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ModelExtras extras;
  extras.template_text = "<s>{{ .Prompt }}";
  extras.system = "Be brief.";
  // A whole float reads back as written (`1`, not `1.0`), as Ollama prints it.
  extras.parameters = {{"stop", {"</s>", "User:"}},
                       {"temperature", {"0.25"}},
                       {"top_k", {"7"}},
                       {"top_p", {"1"}}};
  extras.messages = {{"user", "hi"}, {"assistant", "hello"}};
  extras.licenses = {"MIT"};
  StatusOr<ResolvedModel> created = store->CreateFromGguf(Name("tiny:v1"), kGguf, extras);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ(created->model_digest, "sha256:" + Sha256Hex(ReadFile(kGguf)));
  EXPECT_EQ(ReadFile(created->model_path), ReadFile(kGguf));
  EXPECT_EQ(created->model_path, root_ + "/blobs/sha256-" + created->model_digest.substr(7));
  EXPECT_EQ(created->extras, extras);
  EXPECT_EQ(created->details.format, "gguf");
  EXPECT_EQ(created->details.family, "llama");
  EXPECT_FALSE(created->details.parameter_size.empty());
  EXPECT_TRUE(fs::exists(root_ + "/manifests/registry.ollama.ai/library/tiny/v1"));

  // A new Store object (nothing cached) resolves the same, verifying every blob.
  StatusOr<Store> again = Store::Open(root_);
  ASSERT_TRUE(again.ok());
  StatusOr<ResolvedModel> resolved = again->Resolve(Name("tiny:v1"));
  ASSERT_TRUE(resolved.ok()) << resolved.status().ToString();
  EXPECT_EQ(resolved->extras, extras);
  EXPECT_EQ(resolved->digest, created->digest);
  EXPECT_EQ(again->Resolve(Name("tiny")).status().code(), StatusCode::kNotFound);

  StatusOr<std::vector<StoreEntry>> list = again->List();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 1u);
  const StoreEntry& e = (*list)[0];
  EXPECT_EQ(e.name.DisplayName(), "tiny:v1");
  EXPECT_EQ(
      e.digest,
      "sha256:" + Sha256Hex(ReadFile(root_ + "/manifests/registry.ollama.ai/library/tiny/v1")));
  EXPECT_EQ(e.model_path, created->model_path);
  EXPECT_GT(e.size, fs::file_size(kGguf));
  EXPECT_EQ(e.details.family, "llama");
  EXPECT_FALSE(e.read_only);
  EXPECT_GT(e.modified.time_since_epoch().count(), 0);

  // The params blob holds typed JSON as Ollama writes it.
  EXPECT_TRUE(again->VerifyBlob(created->model_digest).ok());
  EXPECT_EQ(again->VerifyBlob("sha256:" + std::string(64, '0')).code(), StatusCode::kNotFound);
  EXPECT_EQ(again->VerifyBlob("../../etc/passwd").code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, ParamsBlobIsTypedJson) {
  StatusOr<Store> store = Store::Open(root_);
  ASSERT_TRUE(store.ok());
  ModelExtras extras;
  extras.parameters = {{"stop", {"x"}}, {"temperature", {"1"}}, {"num_ctx", {"512"}}};
  ASSERT_TRUE(store->CreateFromGguf(Name("p"), kGguf, extras).ok());
  bool found = false;
  for (const auto& entry : fs::directory_iterator(root_ + "/blobs")) {
    std::string bytes = ReadFile(entry.path().string());
    if (bytes.starts_with("{\"num_ctx\"")) {
      EXPECT_EQ(bytes, R"({"num_ctx":512,"stop":["x"],"temperature":1.0})");
      found = true;
    }
  }
  EXPECT_TRUE(found);
}

TEST_F(StoreTest, CopyCreateFromAndDeleteCollectsBlobs) {
  StatusOr<Store> store = Store::Open(root_);
  ASSERT_TRUE(store.ok());
  ModelExtras extras;
  extras.system = "first";
  extras.parameters = {{"top_k", {"5"}}, {"stop", {"a"}}};
  ASSERT_TRUE(store->CreateFromGguf(Name("base"), kGguf, extras).ok());
  const size_t base_blobs = CountBlobs(root_);  // model, system, params, config

  ASSERT_TRUE(store->Copy(Name("base"), Name("me/copy:x")).ok());
  EXPECT_EQ(CountBlobs(root_), base_blobs);
  StatusOr<ResolvedModel> copy = store->Resolve(Name("me/copy:x"));
  ASSERT_TRUE(copy.ok()) << copy.status().ToString();
  EXPECT_EQ(*copy->extras.system, "first");

  ModelExtras over;
  over.system = "second";
  over.parameters = {{"top_k", {"9"}}};
  StatusOr<ResolvedModel> derived = store->CreateFrom(Name("derived"), Name("base"), over);
  ASSERT_TRUE(derived.ok()) << derived.status().ToString();
  EXPECT_EQ(*derived->extras.system, "second");
  EXPECT_EQ(derived->extras.parameters.at("top_k"), std::vector<std::string>{"9"});
  EXPECT_EQ(derived->extras.parameters.at("stop"), std::vector<std::string>{"a"});
  EXPECT_EQ(derived->model_path, copy->model_path);  // the weights are shared, not copied
  const size_t all_blobs = CountBlobs(root_);
  EXPECT_GT(all_blobs, base_blobs);

  StatusOr<std::vector<StoreEntry>> list = store->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 3u);

  // Deleting "derived" removes its own system/params/config blobs but keeps the shared GGUF.
  ASSERT_TRUE(store->Delete(Name("derived")).ok());
  EXPECT_EQ(CountBlobs(root_), base_blobs);
  EXPECT_FALSE(fs::exists(root_ + "/manifests/registry.ollama.ai/library/derived"));
  EXPECT_EQ(store->Delete(Name("derived")).code(), StatusCode::kNotFound);
  ASSERT_TRUE(store->Delete(Name("base")).ok());
  EXPECT_EQ(CountBlobs(root_), base_blobs);  // still referenced by me/copy:x
  EXPECT_TRUE(fs::exists(copy->model_path));
  ASSERT_TRUE(store->Delete(Name("me/copy:x")).ok());
  EXPECT_EQ(CountBlobs(root_), 0u);
  EXPECT_TRUE(store->List()->empty());
}

TEST_F(StoreTest, CorruptBlobIsDataLoss) {
  std::string model_path, model_digest;
  {
    StatusOr<Store> store = Store::Open(root_);
    ASSERT_TRUE(store.ok());
    StatusOr<ResolvedModel> m = store->CreateFromGguf(Name("c"), kGguf, {});
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_path = m->model_path;
    model_digest = m->model_digest;
  }
  std::string bytes = ReadFile(model_path);
  bytes[bytes.size() / 2] ^= 1;
  WriteFile(model_path, bytes);
  StatusOr<Store> store = Store::Open(root_);
  ASSERT_TRUE(store.ok());
  StatusOr<ResolvedModel> r = store->Resolve(Name("c"));
  ASSERT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
  const std::string& msg = r.status().message();
  EXPECT_NE(msg.find(model_path), std::string::npos) << msg;
  EXPECT_NE(msg.find(model_digest), std::string::npos) << msg;
  EXPECT_NE(msg.find("sha256:" + Sha256Hex(bytes)), std::string::npos) << msg;
  EXPECT_EQ(store->VerifyBlob(model_digest).code(), StatusCode::kDataLoss);
}

TEST_F(StoreTest, CorruptManifestIsDataLoss) {
  StatusOr<Store> store = Store::Open(root_);
  ASSERT_TRUE(store.ok());
  const std::string hex(64, 'b');
  const std::string path = root_ + "/manifests/registry.ollama.ai/library/bad/latest";
  for (const std::string& manifest :
       {std::string("not json"), std::string(R"({"schemaVersion":1})"),
        R"({"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:)" + hex +
            R"(","size":1},"layers":[{"mediaType":"m","digest":"sha256:../../x","size":1}]})"}) {
    WriteFile(path, manifest);
    EXPECT_EQ(store->Resolve(Name("bad")).status().code(), StatusCode::kDataLoss) << manifest;
    // List skips it instead of failing.
    StatusOr<std::vector<StoreEntry>> list = store->List();
    ASSERT_TRUE(list.ok());
    EXPECT_TRUE(list->empty());
  }
}

TEST_F(StoreTest, OllamaStoreIsReadOnly) {
  const std::string ollama = MakeOllamaStore();
  StatusOr<Store> store = Store::Open(root_, ollama);
  ASSERT_TRUE(store.ok()) << store.status().ToString();

  StatusOr<std::vector<StoreEntry>> list = store->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name.DisplayName(), "ns/handmade:v1");
  EXPECT_TRUE((*list)[0].read_only);
  EXPECT_EQ((*list)[0].details.family, "llama");

  StatusOr<ResolvedModel> m = store->Resolve(Name("ns/handmade:v1"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(m->read_only);
  EXPECT_TRUE(m->model_path.starts_with(ollama + "/blobs/sha256-")) << m->model_path;
  EXPECT_EQ(*m->extras.template_text, "{{ .Prompt }}");
  EXPECT_EQ(m->extras.parameters.at("stop"), (std::vector<std::string>{"<s>", "</s>"}));
  EXPECT_EQ(m->extras.parameters.at("temperature"), std::vector<std::string>{"0.5"});
  EXPECT_EQ(m->extras.parameters.at("num_ctx"), std::vector<std::string>{"1024"});
  EXPECT_EQ(m->extras.licenses, std::vector<std::string>{"ollama license"});

  // Delete refuses; nothing in the Ollama store changes.
  const auto before = fs::last_write_time(ollama + "/manifests/registry.ollama.ai/ns/handmade/v1");
  EXPECT_EQ(store->Delete(Name("ns/handmade:v1")).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(fs::exists(ollama + "/manifests/registry.ollama.ai/ns/handmade/v1"));

  // Copy and CreateFrom bring the blobs into ferry's store.
  ASSERT_TRUE(store->Copy(Name("ns/handmade:v1"), Name("mine")).ok());
  StatusOr<ResolvedModel> mine = store->Resolve(Name("mine"));
  ASSERT_TRUE(mine.ok()) << mine.status().ToString();
  EXPECT_FALSE(mine->read_only);
  EXPECT_TRUE(mine->model_path.starts_with(root_ + "/blobs/")) << mine->model_path;
  ModelExtras over;
  over.system = "extra";
  StatusOr<ResolvedModel> derived =
      store->CreateFrom(Name("derived"), Name("ns/handmade:v1"), over);
  ASSERT_TRUE(derived.ok()) << derived.status().ToString();
  EXPECT_TRUE(derived->model_path.starts_with(root_ + "/blobs/"));
  EXPECT_EQ(*derived->extras.template_text, "{{ .Prompt }}");
  EXPECT_EQ(*derived->extras.system, "extra");

  // ferry's own model wins a name clash.
  ASSERT_TRUE(store->CreateFromGguf(Name("ns/handmade:v1"), kGguf, over).ok());
  m = store->Resolve(Name("ns/handmade:v1"));
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->read_only);
  EXPECT_EQ(*m->extras.system, "extra");
  list = store->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 3u);
  for (const StoreEntry& e : *list) EXPECT_FALSE(e.read_only) << e.name.DisplayName();

  // Deleting ferry's copy uncovers Ollama's again; the Ollama store was never written.
  ASSERT_TRUE(store->Delete(Name("ns/handmade:v1")).ok());
  m = store->Resolve(Name("ns/handmade:v1"));
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->read_only);
  EXPECT_EQ(fs::last_write_time(ollama + "/manifests/registry.ollama.ai/ns/handmade/v1"), before);
  size_t ollama_files = 0;
  for (const auto& e : fs::recursive_directory_iterator(ollama))
    ollama_files += e.is_regular_file();
  EXPECT_EQ(ollama_files, 6u);  // 1 manifest + 4 layers + config
}

TEST_F(StoreTest, OllamaRootMustExist) {
  EXPECT_EQ(Store::Open(root_, (dir_ / "missing").string()).status().code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, TraversalNamesNeverReachTheFileSystem) {
  // Anything that could escape the store is refused by the name parser before a path is built.
  for (const char* text :
       {"../../etc/passwd", "/etc/passwd", "a/../../b", "..:latest", "x:../../y", "host/../x"}) {
    EXPECT_EQ(ParseModelName(text).status().code(), StatusCode::kInvalidArgument) << text;
  }
  // A file outside the store that a traversal would reach is not listed or resolved.
  StatusOr<Store> store = Store::Open(root_);
  ASSERT_TRUE(store.ok());
  WriteFile(root_ + "/manifests/registry.ollama.ai/library/..hidden/latest", "{}");
  WriteFile(root_ + "/manifests/registry.ollama.ai/library/x/.partial-1", "{}");
  StatusOr<std::vector<StoreEntry>> list = store->List();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
  // A GGUF path is not a model name; creating from a missing or non-GGUF file fails cleanly.
  EXPECT_FALSE(store->CreateFromGguf(Name("x"), (dir_ / "missing.gguf").string(), {}).ok());
  WriteFile((dir_ / "not.gguf").string(), "hello");
  EXPECT_FALSE(store->CreateFromGguf(Name("x"), (dir_ / "not.gguf").string(), {}).ok());
  EXPECT_EQ(CountBlobs(root_), 0u);
}

}  // namespace
}  // namespace ferry::store
