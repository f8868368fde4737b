#include "base/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace ferry {
namespace {

// The registry the SIGBUS handler reads: fixed-size and lock-free, since a signal handler may
// neither lock nor allocate. A slot is free while begin == 0.
struct FaultSlot {
  std::atomic<uintptr_t> begin{0};
  std::atomic<size_t> size{0};
  std::atomic<bool> faulted{false};
};
constexpr int kFaultSlots = 1024;  // files mapped at once (each loaded model maps one)
FaultSlot g_slots[kFaultSlots];
struct sigaction g_previous_sigbus;
std::once_flag g_install_once;

void OnSigbus(int sig, siginfo_t* info, void* context) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (FaultSlot& slot : g_slots) {
    const uintptr_t begin = slot.begin.load(std::memory_order_acquire);
    const size_t size = slot.size.load(std::memory_order_acquire);
    if (begin <= 1 || addr < begin || addr - begin >= size) continue;  // 1: being claimed
    // mmap is a plain system call, safe here. MAP_FIXED replaces the file's pages in one step;
    // errno is saved because the interrupted code may be reading it.
    const int saved_errno = errno;
    void* p = ::mmap(reinterpret_cast<void*>(begin), size, PROT_READ,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    errno = saved_errno;
    if (p != MAP_FAILED) {
      slot.faulted.store(true, std::memory_order_release);
      return;  // the faulting read is retried and reads zeros
    }
    break;
  }
  // Not ours (or the remap failed): what would have happened without this handler.
  if (g_previous_sigbus.sa_flags & SA_SIGINFO) {
    if (g_previous_sigbus.sa_sigaction != nullptr) {
      g_previous_sigbus.sa_sigaction(sig, info, context);
      return;
    }
  } else if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN) {
    g_previous_sigbus.sa_handler(sig);
    return;
  }
  ::signal(SIGBUS, SIG_DFL);
  ::raise(SIGBUS);  // a fault's read would re-fault anyway; a raised SIGBUS must kill too
}

void InstallSigbusHandler() {
  std::call_once(g_install_once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = &OnSigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &g_previous_sigbus);
  });
}

int RegisterRange(const uint8_t* data, size_t size) {
  InstallSigbusHandler();
  for (int i = 0; i < kFaultSlots; ++i) {
    uintptr_t expected = 0;
    // Claim with a placeholder first, so the handler never sees a begin without its size.
    if (g_slots[i].begin.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
      g_slots[i].faulted.store(false, std::memory_order_relaxed);
      g_slots[i].size.store(size, std::memory_order_release);
      g_slots[i].begin.store(reinterpret_cast<uintptr_t>(data), std::memory_order_release);
      return i;
    }
  }
  return -1;
}

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

}  // namespace

StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return NotFoundError("{}: no such file", path);
    return IoError("{}: cannot open: {}", path, std::strerror(err));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return IoError("{}: cannot stat: {}", path, std::strerror(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return InvalidArgumentError("{}: is a directory, not a file", path);
  }
  size_t size = static_cast<size_t>(st.st_size);
  const uint8_t* data = nullptr;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return IoError("{}: cannot mmap {} bytes: {}", path, size, std::strerror(err));
    }
    data = static_cast<const uint8_t*>(p);
  }
  int slot = -1;
  if (data != nullptr) {
    slot = RegisterRange(data, size);
    if (slot < 0) {
      ::munmap(const_cast<uint8_t*>(data), size);
      ::close(fd);
      return ResourceExhaustedError("{}: more than {} files are mapped at once", path,
                                    kFaultSlots);
    }
  } else {
    ::close(fd);
    fd = -1;
  }
  return std::unique_ptr<MappedFile>(new MappedFile(path, data, size, fd, MtimeNs(st), slot));
}

MappedFile::~MappedFile() {
  if (slot_ >= 0) {
    g_slots[slot_].begin.store(0, std::memory_order_release);
    g_slots[slot_].size.store(0, std::memory_order_release);
  }
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

bool MappedFile::faulted() const {
  return slot_ >= 0 && g_slots[slot_].faulted.load(std::memory_order_acquire);
}

Status MappedFile::CheckUnchanged() const {
  if (faulted()) {
    struct stat st;
    const bool known = fd_ >= 0 && ::fstat(fd_, &st) == 0;
    return DataLossError("{}: the file changed on disk while loaded (truncated to {} bytes from "
                         "{}); the model must be loaded again", path_,
                         known ? static_cast<int64_t>(st.st_size) : -1, size_);
  }
  if (fd_ < 0) return Status::Ok();
  struct stat st;
  if (::fstat(fd_, &st) != 0) {
    return IoError("{}: cannot stat the loaded file: {}", path_, std::strerror(errno));
  }
  if (static_cast<size_t>(st.st_size) != size_) {
    return DataLossError("{}: the file changed on disk while loaded (now {} bytes, was {}); the "
                         "model must be loaded again", path_, static_cast<int64_t>(st.st_size),
                         size_);
  }
  if (MtimeNs(st) != mtime_ns_) {
    return DataLossError("{}: the file was rewritten on disk while loaded (its modification time "
                         "changed); the model must be loaded again", path_);
  }
  return Status::Ok();
}

Status WriteFileBytes(const std::string& path, const void* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return IoError("{}: cannot create: {}", path, std::strerror(errno));
  size_t written = size == 0 ? 0 : std::fwrite(data, 1, size, f);
  int err = written == size ? 0 : errno;
  if (std::fclose(f) != 0 && err == 0) err = errno;
  if (written != size || err != 0) {
    return IoError("{}: write failed after {} of {} bytes: {}", path, written, size,
                   std::strerror(err));
  }
  return Status::Ok();
}

}  // namespace ferry
