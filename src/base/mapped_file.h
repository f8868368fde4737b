// MappedFile: a read-only memory map of a whole file.
//
// The mapping lives as long as the object; views into data() must not outlive it. Model weights
// are used in place from this map (no second copy). Thread-safety: immutable after Open(), so
// any thread may read data() concurrently; faulted() and CheckUnchanged() may be called from
// any thread.
//
// A file truncated while mapped would kill the process: reading a page past its new end raises
// SIGBUS. Every MappedFile registers its range with a process-wide SIGBUS handler (installed on
// the first Open; a SIGBUS elsewhere still gets the previous disposition). On a fault inside a
// registered mapping the handler replaces the whole mapping with zero pages (an anonymous map
// at the same address) and marks it faulted: the faulting read is retried and sees zeros, so
// the computation that touched it finishes with garbage that its owner must discard — the
// runner checks faulted() after every step and fails the requests it served with the error
// CheckUnchanged() gives.
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

  // Whether a read of the mapping faulted (the file shrank under it): from then on the mapping
  // reads as zeros. Cheap (an atomic load): callers check it after each use.
  bool faulted() const;
  // OK while the file is as it was at Open(). DataLoss naming the file when a read faulted, or
  // when the open file's size or modification time changed (it was truncated or rewritten in
  // place; a file replaced by rename leaves this mapping intact and is not a change). One fstat.
  Status CheckUnchanged() const;

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size, int fd, int64_t mtime_ns,
             int slot)
      : path_(std::move(path)), data_(data), size_(size), fd_(fd), mtime_ns_(mtime_ns),
        slot_(slot) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
  int fd_;            // kept open for CheckUnchanged's fstat (-1 for an empty file)
  int64_t mtime_ns_;  // st_mtim at Open()
  int slot_;          // the fault registry's slot; -1 when not registered (empty file)
};

// Writes `size` bytes to `path` (create or truncate), reporting the OS error on failure.
Status WriteFileBytes(const std::string& path, const void* data, size_t size);

}  // namespace ferry

#endif  // FERRY_BASE_MAPPED_FILE_H_
