#include "cmd_serve.h"

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <thread>

#include "backend/device.h"
#include "base/log.h"
#include "kv/kv_cache.h"
#include "sched/keep_alive.h"
#include "sched/local_factory.h"
#include "sched/scheduler.h"
#include "server/model_catalog.h"
#include "server/server.h"

namespace ferry::app {
namespace {

int Fail(const Status& s) {
  std::fprintf(stderr, "ferry: %s\n", s.message().c_str());
  return 1;
}

}  // namespace

void AddServeCommand(CLI::App& app, ServeOptions& /*options*/) {
  app.add_subcommand("serve",
                     "Serve Ollama's HTTP API on FERRY_HOST (default 127.0.0.1:11434); "
                     "settings from FERRY_* variables, see docs/serving.md");
}

int RunServe(const Settings& settings, const ServeOptions& /*options*/) {
  // Signals are taken by one thread with sigwait: block them before any thread starts (every
  // thread inherits the mask). SIGUSR1 only wakes that thread when the server ends by itself.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that went away is a failed write, not a death
  if (log::GetLevel() > log::Level::kInfo) log::SetLevel(log::Level::kInfo);

  auto host = server::ParseHostPort(settings.host);
  if (!host.ok()) return Fail(host.status());
  auto keep_alive = sched::ParseKeepAlive(settings.keep_alive);
  if (!keep_alive.ok()) return Fail(keep_alive.status().WithPrefix("FERRY_KEEP_ALIVE"));
  auto kv_type = ParseKvCacheType(settings.kv_cache_type);
  if (!kv_type.ok()) return Fail(kv_type.status().WithPrefix("FERRY_KV_CACHE_TYPE"));
  DiscoverOptions discover;
  discover.gpu_overhead_bytes = settings.gpu_overhead_bytes;
  discover.cpu_matmul_flops = settings.cpu_matmul_flops;
  discover.cpu_bandwidth = settings.cpu_bandwidth;
  discover.cuda_bandwidth = settings.gpu_bandwidth;
  auto devices = DiscoverDevices(discover);
  if (!devices.ok()) return Fail(devices.status());

  auto st = OpenStore(settings);
  if (!st.ok()) return Fail(st.status());
  server::ModelCatalog catalog(settings.models_dir, &*st);
  sched::SchedulerOptions so;
  so.devices = *devices;
  so.default_keep_alive = *keep_alive;
  so.max_loaded_models = settings.max_loaded_models;
  so.max_queue = settings.max_queue;
  so.num_parallel = settings.num_parallel;
  so.kv_type = *kv_type;
  auto scheduler = sched::Scheduler::Create(
      so, std::make_unique<sched::LocalRunnerFactory>(
              [&catalog](const std::string& name) { return catalog.Resolve(name); }));
  if (!scheduler.ok()) return Fail(scheduler.status());

  server::ServerOptions opts;
  opts.listen = *host;
  opts.max_body_bytes = settings.max_body_bytes;
  opts.default_num_ctx = settings.context_length;
  opts.num_ctx_from_environment = settings.context_length_set;
  opts.devices = *devices;
  opts.num_parallel = settings.num_parallel;
  opts.kv_type = *kv_type;
  auto srv = server::Server::Create(opts, scheduler->get(), &catalog);
  if (!srv.ok()) return Fail(srv.status());
  server::Server& http = **srv;

  std::thread signal_thread([&http, signals] {
    int sig = 0;
    while (sigwait(&signals, &sig) == 0) {
      if (sig == SIGINT || sig == SIGTERM) {
        log::Info("serve: signal {}: stopping (running requests end with an error)", sig);
        http.Shutdown();
        return;
      }
      if (sig == SIGUSR1) return;
    }
  });
  std::fprintf(stderr, "ferry: listening on %s:%d (models: %s)\n", host->host.c_str(),
               http.port(), settings.models_dir.c_str());
  Status listened = http.Listen();
  http.Shutdown();  // no-op after a signal
  log::Info("serve: the HTTP server stopped; unloading the models");
  pthread_kill(signal_thread.native_handle(), SIGUSR1);
  signal_thread.join();
  (*scheduler)->Shutdown();
  if (!listened.ok()) return Fail(listened);
  std::fprintf(stderr, "ferry: stopped\n");
  return 0;
}

}  // namespace ferry::app
