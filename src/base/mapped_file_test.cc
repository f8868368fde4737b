#include "base/mapped_file.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace ferry {
namespace {

TEST(MappedFileTest, RoundTrip) {
  std::string path = ::testing::TempDir() + "/mapped_file_test.bin";
  const char kText[] = "hello ferry";
  ASSERT_TRUE(WriteFileBytes(path, kText, sizeof(kText)).ok());
  auto f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ((*f)->size(), sizeof(kText));
  EXPECT_EQ(std::memcmp((*f)->data(), kText, sizeof(kText)), 0);
}

TEST(MappedFileTest, EmptyFile) {
  std::string path = ::testing::TempDir() + "/mapped_file_empty.bin";
  ASSERT_TRUE(WriteFileBytes(path, nullptr, 0).ok());
  auto f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->size(), 0u);
}

TEST(MappedFileTest, Errors) {
  EXPECT_EQ(MappedFile::Open("/nonexistent/x.gguf").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(MappedFile::Open("/tmp").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ferry
