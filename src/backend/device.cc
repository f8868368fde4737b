#include "backend/device.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "backend/cpu_calibration.h"
#include "backend/device_cuda.h"
#include "base/bytes.h"
#include "base/log.h"

namespace ferry {
namespace {

// Largest size a description may give one device: 2^60 bytes (1 EiB). Anything above is a typo.
constexpr uint64_t kMaxDescribedBytes = uint64_t{1} << 60;
// Largest bandwidth ParseBandwidth accepts: 1 PB/s, far above any memory system.
constexpr double kMaxBandwidth = 1e15;
// Largest throughput ParseFlops accepts: 1e18 FLOP/s (1 EFLOP/s), far above any one device.
constexpr double kMaxFlops = 1e18;
// The files discovery reads are a few KiB; refuse to slurp anything absurd.
constexpr size_t kMaxSmallFileBytes = size_t{4} << 20;

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool ParseUint64(std::string_view text, uint64_t* out) {
  text = Trim(text);
  if (text.empty()) return false;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

// Reads a small text file whole (works for /proc and /sys files, whose size is reported as 0).
StatusOr<std::string> ReadSmallFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFoundError("cannot open {}: {}", path, std::strerror(err));
    return IoError("cannot open {}: {}", path, std::strerror(err));
  }
  std::string text;
  char buffer[4096];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return IoError("cannot read {}: {}", path, std::strerror(err));
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > kMaxSmallFileBytes) {
      ::close(fd);
      return IoError("{} is larger than {} bytes", path, kMaxSmallFileBytes);
    }
  }
  ::close(fd);
  return text;
}

// Finds `key` in a "key value" or "key: value [kB]" file (memory.stat, /proc/meminfo) and
// returns the value in bytes (a "kB" unit means KiB, as the kernel writes it).
bool FindKeyedValue(std::string_view text, std::string_view key, uint64_t* bytes) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.size() <= key.size() || line.substr(0, key.size()) != key) continue;
    std::string_view rest = line.substr(key.size());
    if (rest.front() == ':') {
      rest.remove_prefix(1);
    } else if (!IsSpace(rest.front())) {
      continue;  // a longer key that starts with `key`
    }
    rest = Trim(rest);
    uint64_t multiplier = 1;
    if (rest.size() >= 2 && ToLower(rest.substr(rest.size() - 2)) == "kb") {
      multiplier = kKiB;
      rest = Trim(rest.substr(0, rest.size() - 2));
    }
    uint64_t value = 0;
    if (!ParseUint64(rest, &value)) return false;
    if (value > UINT64_MAX / multiplier) return false;
    *bytes = value * multiplier;
    return true;
  }
  return false;
}

// What a cgroup lets this process still allocate.
struct CgroupHeadroom {
  uint64_t limit = 0;
  uint64_t headroom = 0;  // limit - (usage - reclaimable page cache), never below 0
  std::string source;
};

// Reads limit, usage and reclaimable page cache from one cgroup directory. Returns nullopt
// when the limit file is absent or says there is no limit.
std::optional<CgroupHeadroom> ReadCgroup(const std::string& dir, std::string_view limit_file,
                                         std::string_view usage_file,
                                         std::initializer_list<std::string_view> inactive_keys,
                                         uint64_t mem_total) {
  const std::string limit_path = dir + "/" + std::string(limit_file);
  StatusOr<std::string> limit_text = ReadSmallFile(limit_path);
  if (!limit_text.ok()) return std::nullopt;
  const std::string_view trimmed = Trim(*limit_text);
  if (trimmed == "max") {
    log::Debug("cgroup_memory path={} limit=none", limit_path);
    return std::nullopt;
  }
  uint64_t limit = 0;
  if (!ParseUint64(trimmed, &limit)) {
    log::Warn("cgroup_memory_unreadable path={} text=\"{}\"", limit_path, trimmed);
    return std::nullopt;
  }
  if (limit >= mem_total) {
    // cgroup v1 writes "unlimited" as a huge number; any limit above the RAM binds nothing.
    log::Debug("cgroup_memory path={} limit={} above_mem_total={}", limit_path, limit, mem_total);
    return std::nullopt;
  }

  uint64_t usage = 0;
  const std::string usage_path = dir + "/" + std::string(usage_file);
  StatusOr<std::string> usage_text = ReadSmallFile(usage_path);
  if (!usage_text.ok() || !ParseUint64(*usage_text, &usage)) {
    log::Debug("cgroup_memory_usage_unknown path={}", usage_path);
    usage = 0;
  }
  uint64_t inactive = 0;
  StatusOr<std::string> stat_text = ReadSmallFile(dir + "/memory.stat");
  if (stat_text.ok()) {
    for (std::string_view key : inactive_keys) {
      if (FindKeyedValue(*stat_text, key, &inactive)) break;
    }
  }
  const uint64_t used = usage - std::min(usage, inactive);
  CgroupHeadroom result;
  result.limit = limit;
  result.headroom = limit - std::min(limit, used);
  result.source = "cgroup " + std::string(limit_file);
  log::Debug("cgroup_memory path={} limit={} usage={} inactive_file={} headroom={}", limit_path,
             limit, usage, inactive, result.headroom);
  return result;
}

struct ParsedName {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;
};

std::optional<ParsedName> ParseDeviceName(std::string_view name) {
  if (name == "cpu") return ParsedName{DeviceKind::kCpu, 0};
  constexpr std::string_view kCuda = "cuda";
  if (name.size() <= kCuda.size() || name.substr(0, kCuda.size()) != kCuda) return std::nullopt;
  const std::string_view digits = name.substr(kCuda.size());
  if (digits.size() > 4 || (digits.size() > 1 && digits[0] == '0')) return std::nullopt;
  int index = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    index = index * 10 + (c - '0');
  }
  return ParsedName{DeviceKind::kCuda, index};
}

StatusOr<uint64_t> ParseDescribedSize(std::string_view entry, std::string_view text) {
  if (text.empty()) return InvalidArgumentError("device entry '{}': size is missing", entry);
  if (text.front() == '-') {
    return InvalidArgumentError("device entry '{}': size '{}' is negative", entry, text);
  }
  // A bare number is ambiguous (cuda0=8 is surely not 8 bytes): the unit must be written.
  if (text.find_first_not_of("0123456789.") == std::string_view::npos) {
    return InvalidArgumentError(
        "device entry '{}': size '{}' has no unit (write {}GiB, {}MiB or "
        "{}B)",
        entry, text, text, text, text);
  }
  StatusOr<uint64_t> bytes = ParseBytes(text);
  if (!bytes.ok()) {
    return Status(bytes.status().code(),
                  fmt::format("device entry '{}': {}", entry, bytes.status().message()));
  }
  if (*bytes == 0) return InvalidArgumentError("device entry '{}': size is zero", entry);
  if (*bytes > kMaxDescribedBytes) {
    return OutOfRangeError("device entry '{}': size '{}' is absurd (more than 2^60 bytes)", entry,
                           text);
  }
  return *bytes;
}

}  // namespace

#ifndef FERRY_HAVE_CUDA
namespace internal {
std::vector<Device> DiscoverCudaDevices(std::optional<double>) { return {}; }
StatusOr<uint64_t> CudaContextBytes(int index) {
  return UnimplementedError("cuda{}: ferry was built without CUDA (cmake -DFERRY_CUDA=ON)", index);
}
}  // namespace internal
#endif

bool BuiltWithCuda() {
#ifdef FERRY_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

std::vector<const Device*> DeviceInventory::gpus() const {
  std::vector<const Device*> out;
  for (const Device& d : devices) {
    if (d.kind == DeviceKind::kCuda) out.push_back(&d);
  }
  return out;
}

const Device* DeviceInventory::Find(std::string_view name) const {
  for (const Device& d : devices) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

namespace {

// `text` without whitespace, lower-cased: the form the rate parsers read.
std::string CompactLower(std::string_view text) {
  std::string s;
  for (char c : text) {
    if (!IsSpace(c)) s += c;
  }
  return ToLower(s);
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The checks every parsed rate gets: finite, positive, at most `max` (`max_text` for people).
// `what` names the quantity in messages ("bandwidth", "FLOPS").
StatusOr<double> CheckRate(double rate, std::string_view what, std::string_view text, double max,
                           std::string_view max_text) {
  if (!std::isfinite(rate)) {
    return InvalidArgumentError("{} '{}' is not a finite number", what, Trim(text));
  }
  if (rate <= 0.0) return InvalidArgumentError("{} '{}' is zero", what, Trim(text));
  if (rate > max) {
    return OutOfRangeError("{} '{}' is absurd (more than {})", what, Trim(text), max_text);
  }
  return rate;
}

// v in units[0], scaled by 1000 per step and printed with 3 significant digits ("1.00 TB/s",
// "40.0 GB/s", "900 GB/s"; whole numbers in units[0]).
std::string FormatSi3(double v, const char* const (&units)[6]) {
  int unit = 0;
  // Round to 3 significant digits first so that 999.7e9 prints "1.00 TB/s", not "1000 GB/s".
  while (unit < 5 && std::round(v) >= 999.5) {
    v /= 1000.0;
    ++unit;
  }
  if (unit == 0 || v >= 99.95) return fmt::format("{:.0f} {}", v, units[unit]);
  if (v >= 9.995) return fmt::format("{:.1f} {}", v, units[unit]);
  return fmt::format("{:.2f} {}", v, units[unit]);
}

}  // namespace

StatusOr<double> ParseBandwidth(std::string_view text) {
  std::string s = CompactLower(text);
  if (s.empty()) return InvalidArgumentError("empty bandwidth");
  if (EndsWith(s, "/s")) s.resize(s.size() - 2);
  if (!s.empty() && s.front() == '-') {
    return InvalidArgumentError("bandwidth '{}' is negative", Trim(text));
  }
  double value = 0.0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || ptr == s.data()) {
    return InvalidArgumentError("bandwidth '{}' does not start with a number", Trim(text));
  }
  const std::string unit = s.substr(static_cast<size_t>(ptr - s.data()));
  double multiplier = 1.0;
  if (!unit.empty() && unit != "b") {
    static constexpr std::string_view kPrefixes = "kmgtp";
    const size_t power = kPrefixes.find(unit[0]);
    const std::string rest = unit.substr(1);
    if (power == std::string_view::npos || !(rest.empty() || rest == "b" || rest == "ib")) {
      return InvalidArgumentError("bandwidth '{}' has an unknown unit '{}' (use e.g. 900GB/s)",
                                  Trim(text), unit);
    }
    const double base = rest == "ib" ? 1024.0 : 1000.0;
    multiplier = std::pow(base, static_cast<double>(power + 1));
  }
  return CheckRate(value * multiplier, "bandwidth", text, kMaxBandwidth, "1 PB/s");
}

std::string FormatBandwidth(double bytes_per_s) {
  static constexpr const char* kUnits[] = {"B/s", "kB/s", "MB/s", "GB/s", "TB/s", "PB/s"};
  return FormatSi3(bytes_per_s, kUnits);
}

namespace {

// True if `text` (spaces ignored, any case) ends in "flops" or "flop/s".
bool LooksLikeFlops(std::string_view text) {
  const std::string s = CompactLower(text);
  return EndsWith(s, "flops") || EndsWith(s, "flop/s");
}

}  // namespace

StatusOr<double> ParseFlops(std::string_view text) {
  std::string s = CompactLower(text);
  if (s.empty()) return InvalidArgumentError("empty FLOPS value");
  if (s.front() == '-') return InvalidArgumentError("FLOPS '{}' is negative", Trim(text));
  if (EndsWith(s, "flop/s")) {
    s.resize(s.size() - 6);
  } else if (EndsWith(s, "flops")) {
    s.resize(s.size() - 5);
  } else {
    return InvalidArgumentError("FLOPS '{}' needs a FLOPS unit (e.g. 200GFLOPS)", Trim(text));
  }
  double value = 0.0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || ptr == s.data()) {
    return InvalidArgumentError("FLOPS '{}' does not start with a number", Trim(text));
  }
  const std::string prefix = s.substr(static_cast<size_t>(ptr - s.data()));
  double multiplier = 1.0;
  if (!prefix.empty()) {
    static constexpr std::string_view kPrefixes = "kmgtp";
    const size_t power = prefix.size() == 1 ? kPrefixes.find(prefix[0]) : std::string_view::npos;
    if (power == std::string_view::npos) {
      return InvalidArgumentError("FLOPS '{}' has an unknown prefix '{}' (use k, M, G, T or P)",
                                  Trim(text), prefix);
    }
    multiplier = std::pow(1000.0, static_cast<double>(power + 1));
  }
  return CheckRate(value * multiplier, "FLOPS", text, kMaxFlops, "1e18 FLOP/s");
}

std::string FormatFlops(double flops) {
  static constexpr const char* kUnits[] = {"FLOP/s",  "kFLOP/s", "MFLOP/s",
                                           "GFLOP/s", "TFLOP/s", "PFLOP/s"};
  return FormatSi3(flops, kUnits);
}

StatusOr<DeviceInventory> ParseDevices(std::string_view description) {
  const std::string_view trimmed = Trim(description);
  if (trimmed.empty()) {
    return InvalidArgumentError(
        "empty device description (expected NAME=SIZE[@BANDWIDTH][@FLOPS],..., e.g. "
        "\"cuda0=24GiB,cpu=64GiB\")");
  }
  std::vector<Device> gpus;
  std::optional<Device> cpu;
  size_t pos = 0;
  int entry_number = 0;
  while (pos <= trimmed.size()) {
    size_t comma = trimmed.find(',', pos);
    if (comma == std::string_view::npos) comma = trimmed.size();
    const std::string_view entry = Trim(trimmed.substr(pos, comma - pos));
    pos = comma + 1;
    ++entry_number;
    if (entry.empty()) {
      return InvalidArgumentError("device description '{}': entry {} is empty", trimmed,
                                  entry_number);
    }
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos) {
      return InvalidArgumentError("device entry '{}': expected NAME=SIZE[@BANDWIDTH][@FLOPS]",
                                  entry);
    }
    const std::string name = ToLower(Trim(entry.substr(0, eq)));
    const std::string_view value = entry.substr(eq + 1);
    const size_t at = value.find('@');
    const std::string_view size_text = Trim(value.substr(0, at));

    const std::optional<ParsedName> parsed = ParseDeviceName(name);
    if (!parsed) {
      return InvalidArgumentError(
          "device entry '{}': unknown device '{}' (expected cpu, cuda0, cuda1, ...)", entry, name);
    }
    const bool duplicate = (parsed->kind == DeviceKind::kCpu && cpu.has_value()) ||
                           (parsed->kind == DeviceKind::kCuda &&
                            std::any_of(gpus.begin(), gpus.end(),
                                        [&](const Device& d) { return d.index == parsed->index; }));
    if (duplicate) {
      return InvalidArgumentError("device entry '{}': device '{}' is given twice", entry, name);
    }
    if (parsed->kind == DeviceKind::kCuda && parsed->index != static_cast<int>(gpus.size())) {
      return InvalidArgumentError(
          "device entry '{}': {} without cuda{} before it (list cuda0, cuda1, ... in index "
          "order)",
          entry, name, gpus.size());
    }

    Device device;
    device.name = name;
    device.kind = parsed->kind;
    device.index = parsed->index;
    FERRY_ASSIGN_OR_RETURN(device.total_bytes, ParseDescribedSize(entry, size_text));
    device.free_bytes = device.total_bytes;
    device.source = "described";
    device.bandwidth_bytes_per_s =
        parsed->kind == DeviceKind::kCpu ? kDefaultCpuBandwidth : kDefaultCudaBandwidth;
    device.bandwidth_source = "default";
    device.matmul_flops =
        parsed->kind == DeviceKind::kCpu ? kDefaultCpuMatmulFlops : kDefaultCudaMatmulFlops;
    device.matmul_flops_source = "default";
    // The parts after SIZE: a bandwidth and/or a FLOPS figure, told apart by the unit.
    bool have_bandwidth = false;
    bool have_flops = false;
    for (size_t part_at = at; part_at != std::string_view::npos;) {
      const size_t next = value.find('@', part_at + 1);
      const std::string_view part =
          value.substr(part_at + 1, next == std::string_view::npos ? std::string_view::npos
                                                                   : next - part_at - 1);
      part_at = next;
      const bool is_flops = LooksLikeFlops(part);
      if (is_flops ? have_flops : have_bandwidth) {
        return InvalidArgumentError("device entry '{}': more than one {}", entry,
                                    is_flops ? "FLOPS figure" : "bandwidth");
      }
      StatusOr<double> number = is_flops ? ParseFlops(part) : ParseBandwidth(part);
      if (!number.ok()) {
        return Status(number.status().code(),
                      fmt::format("device entry '{}': {}", entry, number.status().message()));
      }
      if (is_flops) {
        device.matmul_flops = *number;
        device.matmul_flops_source = "described";
        have_flops = true;
      } else {
        device.bandwidth_bytes_per_s = *number;
        device.bandwidth_source = "described";
        have_bandwidth = true;
      }
    }
    if (parsed->kind == DeviceKind::kCpu) {
      cpu = std::move(device);
    } else {
      gpus.push_back(std::move(device));
    }
  }
  if (!cpu) {
    return InvalidArgumentError(
        "device description '{}' has no cpu entry (the CPU always exists; add e.g. cpu=32GiB)",
        trimmed);
  }
  DeviceInventory inventory;
  inventory.devices = std::move(gpus);
  inventory.devices.push_back(std::move(*cpu));
  return inventory;
}

StatusOr<Device> DiscoverCpu(const CpuMemorySources& sources) {
  FERRY_ASSIGN_OR_RETURN(const std::string meminfo, ReadSmallFile(sources.meminfo));
  uint64_t mem_total = 0;
  if (!FindKeyedValue(meminfo, "MemTotal", &mem_total) || mem_total == 0) {
    return DataLossError("{} has no MemTotal line", sources.meminfo);
  }
  Device cpu;
  cpu.name = "cpu";
  cpu.kind = DeviceKind::kCpu;
  cpu.index = 0;
  cpu.bandwidth_bytes_per_s = kDefaultCpuBandwidth;
  cpu.bandwidth_source = "default";
  cpu.total_bytes = mem_total;

  uint64_t available = 0;
  if (FindKeyedValue(meminfo, "MemAvailable", &available)) {
    cpu.source = "MemAvailable";
  } else {
    uint64_t mem_free = 0;
    uint64_t cached = 0;
    if (!FindKeyedValue(meminfo, "MemFree", &mem_free)) {
      return DataLossError("{} has neither MemAvailable nor MemFree", sources.meminfo);
    }
    FindKeyedValue(meminfo, "Cached", &cached);
    available = mem_free + cached;
    cpu.source = "MemFree";
  }
  cpu.free_bytes = available;

  std::optional<CgroupHeadroom> cgroup = ReadCgroup(sources.cgroup_v2_dir, "memory.max",
                                                    "memory.current", {"inactive_file"}, mem_total);
  if (!cgroup) {
    // Only when there is no v2 limit file: a v2 "max" means no limit, not "ask v1".
    const bool v2_present = ReadSmallFile(sources.cgroup_v2_dir + "/memory.max").ok();
    if (!v2_present) {
      cgroup = ReadCgroup(sources.cgroup_v1_dir, "memory.limit_in_bytes", "memory.usage_in_bytes",
                          {"total_inactive_file", "inactive_file"}, mem_total);
    }
  }
  if (cgroup) {
    cpu.total_bytes = std::min(cpu.total_bytes, cgroup->limit);
    if (cgroup->headroom < cpu.free_bytes) {
      cpu.free_bytes = cgroup->headroom;
      cpu.source = cgroup->source;
    }
  }
  cpu.free_bytes = std::min(cpu.free_bytes, cpu.total_bytes);
  return cpu;
}

void ApplyGpuReservations(DeviceInventory& inventory, const DiscoverOptions& options) {
  for (Device& d : inventory.devices) {
    if (d.kind != DeviceKind::kCuda) continue;
    if (options.gpu_overhead_bytes > d.free_bytes) {
      log::Warn("gpu_overhead_exceeds_free device={} free={} overhead={}", d.name, d.free_bytes,
                options.gpu_overhead_bytes);
    }
    d.free_bytes -= std::min(d.free_bytes, options.gpu_overhead_bytes);
    if (options.gpu_memory_bytes) d.free_bytes = std::min(d.free_bytes, *options.gpu_memory_bytes);
  }
}

StatusOr<DeviceInventory> DiscoverDevices(const DiscoverOptions& options) {
  DeviceInventory inventory;
  inventory.devices = internal::DiscoverCudaDevices(options.cuda_bandwidth);
  ApplyGpuReservations(inventory, options);
  for (Device& d : inventory.devices) {
    d.matmul_flops = options.cuda_matmul_flops;
    d.matmul_flops_source = "default";
  }
  FERRY_ASSIGN_OR_RETURN(Device cpu, DiscoverCpu(options.cpu_sources));
  if (options.cpu_matmul_flops.has_value()) {
    cpu.matmul_flops = std::max(0.0, *options.cpu_matmul_flops);
    cpu.matmul_flops_source = cpu.matmul_flops > 0.0 ? "override" : "off";
  } else {
    CpuCalibrationOptions calibration;
    calibration.num_threads = options.cpu_threads;
    FERRY_ASSIGN_OR_RETURN(CpuCalibration measured, CalibrateCpuMatmul(calibration));
    cpu.matmul_flops = measured.matmul_flops;
    cpu.matmul_flops_by_type = measured.flops_by_type;
    cpu.matmul_flops_source = "measured";
    log::Debug("cpu_matmul_calibration threads={} flops={:.4g} seconds={:.4f}",
               measured.num_threads, measured.matmul_flops, measured.seconds);
  }
  if (options.cpu_bandwidth.has_value()) {
    const bool given = *options.cpu_bandwidth > 0.0;
    cpu.bandwidth_bytes_per_s = given ? *options.cpu_bandwidth : kDefaultCpuBandwidth;
    cpu.bandwidth_source = given ? "override" : "default";
  } else {
    BandwidthCalibrationOptions calibration;
    calibration.num_threads = options.cpu_threads;
    FERRY_ASSIGN_OR_RETURN(BandwidthCalibration measured, CalibrateCpuBandwidth(calibration));
    cpu.bandwidth_bytes_per_s = measured.bytes_per_s;
    cpu.bandwidth_source = "measured";
    cpu.looked_busy = measured.looked_busy;
    if (measured.looked_busy) {
      log::Info(
          "cpu_busy_during_calibration bandwidth={} median={} (other work competed for "
          "the cores: measured speeds may be low)",
          FormatBandwidth(measured.bytes_per_s), FormatBandwidth(measured.median_bytes_per_s));
    }
  }
  inventory.devices.push_back(std::move(cpu));
  log::Debug("devices_discovered cuda_build={} devices=\"{}\"", BuiltWithCuda(),
             DescribeInventory(inventory));
  return inventory;
}

std::string DescribeInventory(const DeviceInventory& inventory) {
  std::string out;
  for (const Device& d : inventory.devices) {
    if (!out.empty()) out += ", ";
    if (d.kind == DeviceKind::kCuda) {
      out += fmt::format("{} {} free of {}", d.name, FormatBytes(d.free_bytes),
                         FormatBytes(d.total_bytes));
      if (d.context_bytes > 0) out += fmt::format(", context {}", FormatBytes(d.context_bytes));
      out += fmt::format(" ({})", d.source);
    } else {
      out += fmt::format("{} {} ({})", d.name, FormatBytes(d.free_bytes), d.source);
    }
  }
  return out;
}

}  // namespace ferry
