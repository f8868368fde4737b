// Byte quantities: formatting for people and parsing of user-given sizes ("24GiB", "512M").
//
// Thread-safety: pure functions.
#ifndef FERRY_BASE_BYTES_H_
#define FERRY_BASE_BYTES_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace ferry {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;

// "0 B", "512 B", "1.50 KiB", "3.21 GiB" (binary units, 3 significant digits).
std::string FormatBytes(uint64_t bytes);

// Parses "123", "123B", "4KiB", "4K", "4KB" (all binary: 1024), "1.5GiB", "2T". Case-insensitive.
// Rejects negatives, empty strings, unknown suffixes and values that overflow 64 bits.
StatusOr<uint64_t> ParseBytes(std::string_view text);

// Number of parameters for people: "268.10 M", "1.10 B", "260.0 K".
std::string FormatCount(uint64_t count);

}  // namespace ferry

#endif  // FERRY_BASE_BYTES_H_
