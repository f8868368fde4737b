// SHA-256 (FIPS 180-4): the digest the model store names its blobs by.
//
// Sha256 hashes a stream incrementally (Update any number of times, then Finish once);
// Sha256Hex hashes one buffer. Thread-safety: a Sha256 object is not shared between threads;
// the free functions may be called from any thread.
#ifndef FERRY_BASE_SHA256_H_
#define FERRY_BASE_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ferry {

class Sha256 {
 public:
  using Digest = std::array<uint8_t, 32>;

  Sha256();

  // Adds `size` bytes to the message. Precondition: Finish() has not been called.
  void Update(const void* data, size_t size);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  // Pads the message and returns its digest. The object must not be used afterwards.
  Digest Finish();

 private:
  void Compress(const uint8_t* block);  // one 64-byte block

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;       // bytes in buffer_
  uint64_t total_bytes_ = 0;  // message length so far
};

// The digest as 64 lowercase hex digits.
std::string DigestToHex(const Sha256::Digest& digest);
// SHA-256 of `data` as 64 lowercase hex digits.
std::string Sha256Hex(std::string_view data);

}  // namespace ferry

#endif  // FERRY_BASE_SHA256_H_
