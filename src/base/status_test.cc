#include "base/status.h"

#include <gtest/gtest.h>

#include <string>

namespace ferry {
namespace {

StatusOr<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgumentError("{} is odd", x);
  return x / 2;
}

Status Quarter(int x, int* out) {
  FERRY_ASSIGN_OR_RETURN(int h, Half(x));
  FERRY_ASSIGN_OR_RETURN(*out, Half(h));
  return Status::Ok();
}

TEST(StatusTest, OkAndError) {
  EXPECT_TRUE(Status().ok());
  Status s = DataLossError("truncated at offset {}", 42);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), "truncated at offset 42");
  EXPECT_EQ(s.ToString(), "DataLoss: truncated at offset 42");
  EXPECT_EQ(s.WithPrefix("a.gguf").message(), "a.gguf: truncated at offset 42");
  EXPECT_TRUE(Status().WithPrefix("x").ok());
}

TEST(StatusTest, StatusOrPropagates) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  Status s = Quarter(6, &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "3 is odd");
}

TEST(StatusTest, StatusOrFromOkStatusIsInternalError) {
  StatusOr<int> v{Status::Ok()};
  EXPECT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kInternal);
}

// value() on an error is checked in every build (this tree's RelWithDebInfo defines NDEBUG, so
// an assert would not catch it): the status goes to stderr and the process aborts.
TEST(StatusOrDeathTest, ValueOnAnErrorAborts) {
  const StatusOr<int> odd = Half(3);
  const char* const kMessage = "StatusOr::value\\(\\) on an error: InvalidArgument: 3 is odd";
  volatile int sink = 0;
  EXPECT_DEATH(sink = odd.value(), kMessage);
  EXPECT_DEATH(sink = *odd, kMessage);
  StatusOr<std::string> missing = NotFoundError("no such key");
  EXPECT_DEATH(sink = static_cast<int>(missing->size()),
               "StatusOr::value\\(\\) on an error: NotFound: no such key");
  const auto lookup = [] { return StatusOr<std::string>(NotFoundError("no such key")); };
  EXPECT_DEATH(sink = static_cast<int>(lookup().value().size()), "NotFound: no such key");
  EXPECT_DEATH(sink = static_cast<int>((*lookup()).size()), "NotFound: no such key");
  EXPECT_EQ(sink, 0);
}

}  // namespace
}  // namespace ferry
