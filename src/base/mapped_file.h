// MappedFile: a read-only memory map of a whole file.
//
// The mapping lives as long as the object; views into data() must not outlive it. Model weights
// are used in place from this map (no second copy). Thread-safety: immutable after Open(), so
// any thread may read data() concurrently.
#ifndef FERRY_BASE_MAPPED_FILE_H_
#define FERRY_BASE_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"

namespace ferry {

class MappedFile {
 public:
  // Maps `path` read-only. An empty file maps to size() == 0 and data() == nullptr.
  static StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

// Writes `size` bytes to `path` (create or truncate), reporting the OS error on failure.
Status WriteFileBytes(const std::string& path, const void* data, size_t size);

}  // namespace ferry

#endif  // FERRY_BASE_MAPPED_FILE_H_
