#include "base/sha256.h"

#include <gtest/gtest.h>

#include <string>

namespace ferry {
namespace {

// FIPS 180-4 examples (NIST "SHA256.pdf", "SHA2_Additional.pdf").
TEST(Sha256Test, FipsVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                      "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Message lengths around the padding boundary (55, 56, 63, 64 bytes) from the NIST
// byte-oriented test vectors' structure, checked against the one-shot hash of the same bytes.
TEST(Sha256Test, IncrementalEqualsOneShot) {
  std::string message;
  for (int i = 0; i < 1000; ++i) message.push_back(static_cast<char>(i * 7 + 3));
  for (size_t length : {0, 1, 55, 56, 63, 64, 65, 127, 128, 1000}) {
    std::string part = message.substr(0, length);
    std::string expected = Sha256Hex(part);
    for (size_t split : {size_t{1}, size_t{3}, size_t{64}, size_t{100}}) {
      Sha256 h;
      for (size_t at = 0; at < part.size(); at += split) {
        h.Update(std::string_view(part).substr(at, split));
      }
      EXPECT_EQ(DigestToHex(h.Finish()), expected) << "length " << length << " split " << split;
    }
  }
}

TEST(Sha256Test, PaddingBoundaries) {
  // Independent values (sha256sum of 'a' repeated n times).
  EXPECT_EQ(Sha256Hex(std::string(55, 'a')),
            "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  EXPECT_EQ(Sha256Hex(std::string(56, 'a')),
            "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  EXPECT_EQ(Sha256Hex(std::string(64, 'a')),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

}  // namespace
}  // namespace ferry
