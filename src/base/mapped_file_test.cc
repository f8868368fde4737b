#include "base/mapped_file.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <functional>
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

// Runs `body` in a forked child and returns its exit status: a crash there (the SIGBUS this
// guards against) cannot take the test process down, and shows as a signal.
int InChild(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

std::string MakeFile(const std::string& name, size_t size) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::string bytes(size, '\x5a');
  EXPECT_TRUE(WriteFileBytes(path, bytes.data(), bytes.size()).ok());
  return path;
}

// The hardening issue's crash: a file truncated while mapped. Reading a page past the new end
// used to kill the process with SIGBUS; now the read sees zeros, the mapping reports the fault,
// and CheckUnchanged names the file.
TEST(MappedFileTest, TruncatedUnderTheMappingIsAnErrorNotACrash) {
  const std::string path = MakeFile("mapped_truncated.bin", 1 << 20);
  const int status = InChild([&] {
    auto f = MappedFile::Open(path);
    if (!f.ok() || (*f)->faulted() || !(*f)->CheckUnchanged().ok()) return 10;
    if (::truncate(path.c_str(), 4096) != 0) return 11;
    const volatile uint8_t* p = (*f)->data();
    if (p[100] != 0x5a) return 12;            // still in the file
    if (p[(1 << 20) - 1] != 0) return 13;     // past its end: a fault, now zeros
    if (!(*f)->faulted()) return 14;
    Status s = (*f)->CheckUnchanged();
    if (s.code() != StatusCode::kDataLoss) return 15;
    if (s.message().find(path) == std::string::npos ||
        s.message().find("changed on disk while loaded") == std::string::npos) {
      return 16;
    }
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// A SIGBUS that is not in a registered mapping keeps its usual meaning: the process dies.
TEST(MappedFileTest, OtherSigbusStillKills) {
  const std::string path = MakeFile("mapped_other.bin", 1 << 16);
  auto keep = MappedFile::Open(path);  // installs the handler in this process (and the child)
  ASSERT_TRUE(keep.ok());
  const int status = InChild([] {
    ::raise(SIGBUS);
    return 0;
  });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGBUS);
}

// Rewritten in place with the same size: caught by the modification time, no fault needed.
TEST(MappedFileTest, RewrittenInPlaceIsNoticed) {
  const std::string path = MakeFile("mapped_rewritten.bin", 8192);
  auto f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE((*f)->CheckUnchanged().ok());
  struct timespec times[2] = {{0, UTIME_OMIT}, {12345, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  Status s = (*f)->CheckUnchanged();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("rewritten on disk while loaded"), std::string::npos) << s.message();
  EXPECT_FALSE((*f)->faulted());
}

}  // namespace
}  // namespace ferry
