#include "cmd_plan.h"

#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "backend/device.h"
#include "base/bytes.h"
#include "kernels/cpu/matmul.h"
#include "model/model.h"
#include "planner/plan.h"

namespace ferry::app {
namespace {

using json = nlohmann::ordered_json;

int Fail(const Status& s) {
  std::fprintf(stderr, "ferry: %s\n", s.message().c_str());
  return 1;
}

std::string What(const DevicePlan& d) {
  std::string w = d.layers.empty() ? "" : FormatLayerRanges(d.layers);
  if (d.has_output) w += w.empty() ? "output" : " +output";
  if (d.has_input) w += w.empty() ? "input" : " +input";
  return w.empty() ? "-" : w;
}

std::string Headroom(const DevicePlan& d) {
  int64_t h = d.headroom_bytes();
  return h >= 0 ? FormatBytes(static_cast<uint64_t>(h))
                : "-" + FormatBytes(static_cast<uint64_t>(-h));
}

std::string FlopsSource(const DeviceInventory& inv, const std::string& name) {
  const Device* d = inv.Find(name);
  return d != nullptr ? d->matmul_flops_source : "";
}

std::string BandwidthSource(const DeviceInventory& inv, const std::string& name) {
  const Device* d = inv.Find(name);
  return d != nullptr ? d->bandwidth_source : "";
}

bool LookedBusy(const DeviceInventory& inv, const std::string& name) {
  const Device* d = inv.Find(name);
  return d != nullptr && d->looked_busy;
}

json PlanJson(const Plan& p, const DeviceInventory& inv) {
  json j;
  j["num_ctx"] = p.options.num_ctx;
  j["num_parallel"] = p.options.num_parallel;
  j["num_batch"] = p.options.num_batch;
  j["kv_type"] = DTypeName(p.options.kv_type);
  j["gpu_layers"] = p.gpu_layers;
  json devs = json::array();
  for (const DevicePlan& d : p.devices) {
    devs.push_back({{"name", d.name},
                    {"weights_bytes", d.weights_bytes},
                    {"kv_bytes", d.kv_bytes},
                    {"compute_bytes", d.compute_bytes},
                    {"host_bytes", d.host_bytes},
                    {"sampling_bytes", d.sampling_bytes},
                    {"total_bytes", d.total_bytes},
                    {"capacity_bytes", d.capacity_bytes},
                    {"context_bytes", d.context_bytes},
                    {"headroom_bytes", d.headroom_bytes()},
                    {"layers", d.layers},
                    {"output", d.has_output},
                    {"input", d.has_input},
                    {"bytes_read_per_token", d.bytes_read_per_token},
                    {"bandwidth_bytes_per_s", d.bandwidth_bytes_per_s},
                    {"bandwidth_source", BandwidthSource(inv, d.name)},
                    {"looked_busy", LookedBusy(inv, d.name)},
                    {"flops_per_token", d.flops_per_token},
                    {"matmul_flops", d.matmul_flops},
                    {"matmul_flops_source", FlopsSource(inv, d.name)},
                    {"memory_seconds_per_token", d.memory_seconds},
                    {"compute_seconds_per_token", d.compute_seconds},
                    {"bound", d.bound()}});
  }
  j["devices"] = devs;
  json layers = json::array();
  for (size_t l = 0; l < p.layer_device.size(); ++l) {
    layers.push_back({{"layer", l},
                      {"device", p.devices[static_cast<size_t>(p.layer_device[l])].name},
                      {"weights_bytes", p.layer_weights_bytes[l]},
                      {"kv_bytes", p.layer_kv_bytes[l]}});
  }
  j["layers"] = layers;
  j["predicted_tok_s"] = p.predicted_tok_s;
  j["processor"] = ProcessorSplit(p.total_bytes(), p.gpu_bytes());
  j["warnings"] = p.warnings;
  return j;
}

void PrintLayers(const Plan& p) {
  std::printf("  %-6s %-8s %11s %11s\n", "layer", "device", "weights", "kv");
  for (size_t l = 0; l < p.layer_device.size(); ++l) {
    std::printf("  %-6zu %-8s %11s %11s\n", l,
                p.devices[static_cast<size_t>(p.layer_device[l])].name.c_str(),
                FormatBytes(p.layer_weights_bytes[l]).c_str(),
                FormatBytes(p.layer_kv_bytes[l]).c_str());
  }
}

void PrintPlan(const Plan& p, const DeviceInventory& inv) {
  std::printf("  %-8s %-20s %10s %10s %10s %10s %10s %10s %10s %10s\n", "device", "layers",
              "weights", "kv", "compute", "host", "sampling", "total", "free", "headroom");
  for (const DevicePlan& d : p.devices) {
    std::printf("  %-8s %-20s %10s %10s %10s %10s %10s %10s %10s %10s\n", d.name.c_str(),
                What(d).c_str(), FormatBytes(d.weights_bytes).c_str(),
                FormatBytes(d.kv_bytes).c_str(), FormatBytes(d.compute_bytes).c_str(),
                FormatBytes(d.host_bytes).c_str(), FormatBytes(d.sampling_bytes).c_str(),
                FormatBytes(d.total_bytes).c_str(), FormatBytes(d.capacity_bytes).c_str(),
                Headroom(d).c_str());
  }
  std::printf(
      "  (host: the GGUF header, parsed metadata and tokenizer tables; sampling: the "
      "sampler's working memory; both on the CPU)\n");
  for (const DevicePlan& d : p.devices) {
    if (d.context_bytes == 0) continue;
    std::printf(
        "  %s: the CUDA context takes %s more (measured at discovery; outside the free "
        "memory above)\n",
        d.name.c_str(), FormatBytes(d.context_bytes).c_str());
  }
  // As Ollama's `ps` shows a loaded model: the bytes' split between CPU and GPUs.
  std::printf("  processor: %s\n", ProcessorSplit(p.total_bytes(), p.gpu_bytes()).c_str());
  // The speed model: per device max(bytes read / bandwidth, FLOPs / mat-vec throughput).
  std::printf("  %-8s %11s %11s %11s %18s %9s  %s\n", "device", "read/token", "bandwidth",
              "FLOP/token", "mat-vec", "ms/token", "bound");
  for (const DevicePlan& d : p.devices) {
    if (d.bytes_read_per_token == 0 && d.flops_per_token == 0) continue;
    const std::string source = FlopsSource(inv, d.name);
    std::printf("  %-8s %11s %11s %10.3gG %18s %9.2f  %s\n", d.name.c_str(),
                FormatBytes(d.bytes_read_per_token).c_str(),
                (FormatBandwidth(d.bandwidth_bytes_per_s) +
                 (BandwidthSource(inv, d.name) == "measured" ? "*" : ""))
                    .c_str(),
                static_cast<double>(d.flops_per_token) / 1e9,
                d.matmul_flops > 0 ? fmt::format("{}{}", FormatFlops(d.matmul_flops),
                                                 source == "measured" ? "*" : "")
                                         .c_str()
                                   : "unknown",
                d.seconds_per_token() * 1e3, d.bound());
  }
  std::printf(
      "  predicted decode speed: %.1f tok/s (per device the slower of reading its bytes "
      "and multiplying its weights%s)\n",
      p.predicted_tok_s,
      FlopsSource(inv, "cpu") == "measured" || BandwidthSource(inv, "cpu") == "measured"
          ? "; * measured on this machine: the CPU's read bandwidth and Q4_K mat-vec (other "
            "types timed too), a GPU's device-to-device copy"
          : "");
  if (LookedBusy(inv, "cpu")) {
    std::printf(
        "  note: the machine looked busy while it was measured (other work competed for "
        "the cores): the measured figures, and decode itself, may be slower than on a "
        "quiet machine\n");
  }
  for (const std::string& w : p.warnings) std::printf("  warning: %s\n", w.c_str());
}

}  // namespace

void AddPlanCommand(CLI::App& app, PlanOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "plan",
      "Show where a model's weights, KV cache and compute buffers would go (reads no "
      "weights)");
  cmd->add_option("model", o.model, "GGUF file path or model name")->required();
  cmd->add_option("-c,--ctx,--num-ctx", o.ctx, "Context length, or a comma-separated sweep");
  cmd->add_option("--parallel,--num-parallel", o.parallel, "Sequences served at once");
  cmd->add_option("--batch,--num-batch", o.batch, "Prompt tokens per step");
  cmd->add_option("--kv-type", o.kv_type, "KV cache type: f16, q8_0, q4_0");
  cmd->add_option("--num-gpu", o.num_gpu, "Layers on GPUs (-1: as many as fit)");
  cmd->add_option("--main-gpu", o.main_gpu, "GPU that holds the output layer");
  // Given at all (even empty, which ParseDevices refuses): the devices are described.
  cmd->add_option_function<std::string>(
      "--devices",
      [&o](const std::string& v) {
        o.devices = v;
        o.devices_given = true;
      },
      "Describe devices instead of discovering them: cuda0=24GiB,cpu=64GiB "
      "(optional @bandwidth and @FLOPS, e.g. cuda0=24GiB@1000GB/s, "
      "cpu=64GiB@40GB/s@200GFLOPS)");
  cmd->add_option("-t,--num-thread", o.num_thread,
                  "CPU threads decode would use: the CPU calibration runs with them (0: all "
                  "cores)");
  cmd->add_option("--gpu-memory", o.gpu_memory, "Use at most this much memory per GPU");
  cmd->add_flag("--json", o.json, "Print JSON");
  cmd->add_flag("--layers", o.layers, "Also print each layer's device, weight and KV bytes");
}

int RunPlan(const Settings& settings, const PlanOptions& o) {
  auto path = ResolveModel(settings, o.model);
  if (!path.ok()) return Fail(path.status());
  auto model = Model::Load(*path);
  if (!model.ok()) return Fail(model.status());
  ModelShape shape = ShapeFromModel(**model);

  DeviceInventory inv;
  if (o.devices_given && !o.gpu_memory.empty()) {
    return Fail(InvalidArgumentError(
        "--gpu-memory applies to discovered GPUs; with --devices, give each GPU's size there"));
  }
  if (o.devices_given) {
    auto parsed = ParseDevices(o.devices);
    if (!parsed.ok()) return Fail(parsed.status());
    inv = *parsed;
  } else {
    DiscoverOptions d;
    d.gpu_overhead_bytes = settings.gpu_overhead_bytes;
    d.cpu_matmul_flops = settings.cpu_matmul_flops;
    d.cpu_bandwidth = settings.cpu_bandwidth;
    d.cuda_bandwidth = settings.gpu_bandwidth;
    if (o.num_thread < 0 || o.num_thread > 1024) {
      return Fail(
          InvalidArgumentError("--num-thread {} is out of range (0 .. 1024)", o.num_thread));
    }
    d.cpu_threads = o.num_thread;
    if (!o.gpu_memory.empty()) {
      auto cap = ParseBytes(o.gpu_memory);
      if (!cap.ok()) return Fail(cap.status().WithPrefix("--gpu-memory"));
      d.gpu_memory_bytes = *cap;
    }
    auto found = DiscoverDevices(d);
    if (!found.ok()) return Fail(found.status());
    inv = *found;
  }

  LoadOptions base;
  base.num_parallel = o.parallel;
  base.num_batch = o.batch;
  base.num_gpu = o.num_gpu;
  base.main_gpu = o.main_gpu;
  auto kv = ParseDType(o.kv_type);
  if (!kv.ok()) return Fail(kv.status().WithPrefix("--kv-type"));
  base.kv_type = *kv;

  std::vector<int64_t> ctxs;
  for (size_t i = 0; i <= o.ctx.size();) {
    size_t j = o.ctx.find(',', i);
    if (j == std::string::npos) j = o.ctx.size();
    std::string item = o.ctx.substr(i, j - i);
    char* end = nullptr;
    long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || end == nullptr || *end != '\0') {
      return Fail(InvalidArgumentError("--ctx: '{}' is not a number", item));
    }
    ctxs.push_back(v);
    i = j + 1;
  }
  for (int64_t c : ctxs) {
    LoadOptions t = base;
    t.num_ctx = c;
    if (Status s = ValidateLoadOptions(t); !s.ok()) return Fail(s);
  }

  const bool sweep = ctxs.size() > 1;
  json out;
  out["model"] = shape.name;
  out["devices_described"] = o.devices_given;
  out["cpu_kernels"] = CpuKernelsName();
  if (!o.json) {
    std::printf("%s: %lld layers, trained context %lld\n", shape.name.c_str(),
                static_cast<long long>(shape.n_layer), static_cast<long long>(shape.n_ctx_train));
    std::printf("devices: %s; CPU kernels %s\n", DescribeInventory(inv).c_str(), CpuKernelsName());
  }
  int rc = 0;
  json rows = json::array();
  for (int64_t c : ctxs) {
    LoadOptions t = base;
    t.num_ctx = c;
    auto plan = MakePlan(shape, inv, t);
    if (o.json) {
      if (plan.ok()) {
        rows.push_back(PlanJson(*plan, inv));
      } else {
        rows.push_back({{"num_ctx", c}, {"error", plan.status().message()}});
        rc = sweep ? rc : 1;
      }
      continue;
    }
    if (sweep) {
      if (c == ctxs.front()) {
        std::printf("\n  %-9s %-36s %11s %10s\n", "num_ctx", "placement", "total", "tok/s");
      }
      if (!plan.ok()) {
        std::printf("  %-9lld does not fit: %s\n", static_cast<long long>(c),
                    plan.status().message().c_str());
        continue;
      }
      std::string where;
      for (const DevicePlan& d : plan->devices) {
        if (d.layers.empty() && !d.has_output) continue;
        where += fmt::format("{}{} {}L{}", where.empty() ? "" : ", ", d.name, d.layers.size(),
                             d.has_output ? "+out" : "");
      }
      std::printf("  %-9lld %-36s %11s %10.1f\n", static_cast<long long>(c), where.c_str(),
                  FormatBytes(plan->total_bytes()).c_str(), plan->predicted_tok_s);
      continue;
    }
    if (!plan.ok()) {
      std::fprintf(stderr, "ferry: %s\n", plan.status().message().c_str());
      rc = 1;
      continue;
    }
    std::printf("num_ctx %lld x %d sequences, kv %s, batch %lld\n", static_cast<long long>(c),
                t.num_parallel, o.kv_type.c_str(), static_cast<long long>(t.num_batch));
    PrintPlan(*plan, inv);
    if (o.layers) PrintLayers(*plan);
  }
  ContextLimits lim = ComputeContextLimits(shape, inv, base);
  if (o.json) {
    out[sweep ? "sweep" : "plan"] = sweep ? rows : rows[0];
    out["limits"] = {{"max_ctx_all_gpu", lim.max_ctx_all_gpu},
                     {"max_ctx", lim.max_ctx},
                     {"n_ctx_train", shape.n_ctx_train},
                     {"max_usable_ctx", CapNumCtxAtTrained(shape, lim.max_ctx)}};
    std::printf("%s\n", out.dump(2).c_str());
    return rc;
  }
  // Memory's limits, and where the trained context is lower, that (ferry run and the server cap
  // num_ctx there, as Ollama does).
  auto limit = [&](int64_t ctx) {
    if (ctx <= 0) return std::string("none");
    const int64_t usable = CapNumCtxAtTrained(shape, ctx);
    if (usable == ctx) return fmt::format("{}", ctx);
    return fmt::format("{} (the trained context; memory allows {})", usable, ctx);
  };
  std::printf(
      "limits: largest num_ctx with everything on GPU: %s; with CPU offload: %s\n",
      lim.max_ctx_all_gpu > 0 ? limit(lim.max_ctx_all_gpu).c_str() : "none (no GPU fits it)",
      limit(lim.max_ctx).c_str());
  return rc;
}

}  // namespace ferry::app
