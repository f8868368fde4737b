#include "server/server.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "backend/device.h"
#include "sched/local_factory.h"
#include "sched/scheduler.h"
#include "server/model_catalog.h"

namespace ferry::server {
namespace {

TEST(FindModelIn, BareFilesThenStoreNames) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(::testing::TempDir()) / "find_model_in";
  fs::create_directories(dir);
  std::ofstream(dir / "tiny.gguf") << "x";
  auto bare = FindModelIn(dir.string(), nullptr, "tiny", /*allow_paths=*/false);
  ASSERT_TRUE(bare.ok()) << bare.status().message();
  EXPECT_EQ(bare->path, (dir / "tiny.gguf").string());
  EXPECT_FALSE(bare->stored.has_value());
  // The server never takes a client's path; the CLI does.
  const std::string path = (dir / "tiny.gguf").string();
  auto as_path = FindModelIn(dir.string(), nullptr, path, /*allow_paths=*/false);
  EXPECT_EQ(as_path.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(FindModelIn(dir.string(), nullptr, path, /*allow_paths=*/true).ok());
  auto bad = FindModelIn(dir.string(), nullptr, "../x", /*allow_paths=*/false);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  auto missing = FindModelIn(dir.string(), nullptr, "nope:7b", /*allow_paths=*/false);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope:7b"), std::string::npos);
}

TEST(ParseHostPort, OllamaForms) {
  auto a = ParseHostPort("127.0.0.1:11434");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 11434);
  auto b = ParseHostPort("8080");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "127.0.0.1");
  EXPECT_EQ(b->port, 8080);
  auto c = ParseHostPort(":9000");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->host, "127.0.0.1");
  EXPECT_EQ(c->port, 9000);
  auto d = ParseHostPort("0.0.0.0:1234");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->host, "0.0.0.0");
  auto e = ParseHostPort("http://[::1]:5000/");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->port, 5000);
  auto f = ParseHostPort("localhost");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->host, "localhost");
  EXPECT_EQ(f->port, 11434);
  EXPECT_FALSE(ParseHostPort("1.2.3.4:99999").ok());
  EXPECT_FALSE(ParseHostPort("1.2.3.4:x").ok());
  EXPECT_FALSE(ParseHostPort("").ok());
}

TEST(Metrics, SchedulerCountersAsPrometheusText) {
  sched::SchedulerCounters c;
  c.loads = 1;
  c.grows = 2;
  c.waiting = 3;
  c.running = 1;
  c.kv_blocks.push_back({"stories260K", 16, 64});
  c.requests.push_back({"stories260K", 3, 1});
  std::string t = RenderSchedulerMetrics(c);
  EXPECT_NE(t.find("\nferry_model_loads_total 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("\nferry_kv_grows_total 2\n"), std::string::npos);
  EXPECT_NE(t.find("\nferry_model_reloads_total 0\n"), std::string::npos);
  EXPECT_NE(t.find("\nferry_requests_waiting{model=\"stories260K\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("\nferry_requests_running{model=\"stories260K\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("ferry_kv_blocks_used{model=\"stories260K\"} 16\n"), std::string::npos);
  EXPECT_NE(t.find("ferry_kv_blocks_total{model=\"stories260K\"} 64\n"), std::string::npos);
  EXPECT_NE(t.find("ferry_kv_cache_utilization{model=\"stories260K\"} 0.25\n"), std::string::npos);
  EXPECT_NE(t.find("# TYPE ferry_requests_waiting gauge"), std::string::npos);
}

TEST(Metrics, LatencyHistogramsAreCumulative) {
  HttpMetrics m;
  m.ObserveTimeToFirstToken(0.03);  // in (0.025, 0.05]
  m.ObserveTimeToFirstToken(0.05);  // le 0.05 includes its bound
  m.ObserveTimeToFirstToken(100);   // above every bound: +Inf only
  m.ObserveInterTokenLatency(0.015);
  std::string t = m.Render();
  EXPECT_NE(t.find("# TYPE ferry_time_to_first_token_seconds histogram\n"), std::string::npos) << t;
  EXPECT_NE(t.find("ferry_time_to_first_token_seconds_bucket{le=\"0.025\"} 0\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("ferry_time_to_first_token_seconds_bucket{le=\"0.05\"} 2\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("ferry_time_to_first_token_seconds_bucket{le=\"60\"} 2\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("ferry_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("ferry_time_to_first_token_seconds_count 3\n"), std::string::npos) << t;
  EXPECT_NE(t.find("ferry_time_to_first_token_seconds_sum 100.08\n"), std::string::npos) << t;
  EXPECT_NE(t.find("ferry_inter_token_latency_seconds_bucket{le=\"0.01\"} 0\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("ferry_inter_token_latency_seconds_bucket{le=\"0.02\"} 1\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("ferry_inter_token_latency_seconds_count 1\n"), std::string::npos) << t;
}

TEST(Metrics, HttpCounters) {
  HttpMetrics m;
  m.CountRequest("/api/chat", 200);
  m.CountRequest("/api/chat", 200);
  m.CountRequest("/api/chat", 404);
  m.CountTokens(10, 5);
  std::string t = m.Render();
  EXPECT_NE(t.find("ferry_http_requests_total{endpoint=\"/api/chat\",status=\"200\"} 2\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("ferry_http_requests_total{endpoint=\"/api/chat\",status=\"404\"} 1\n"),
            std::string::npos);
  EXPECT_NE(t.find("ferry_prompt_tokens_total 10\n"), std::string::npos);
  EXPECT_NE(t.find("ferry_generated_tokens_total 5\n"), std::string::npos);
}

// ferry serve's parts in this process: the catalog, the scheduler with real runners
// (stories260K) and the server on a free loopback port, driven by several client threads at
// once. make test-tsan runs it under ThreadSanitizer: the HTTP threads, the scheduler's thread
// and the runner's inference thread all meet here (tests/test_serve.py checks the same
// behaviour on the ferry binary).
class ServerThreadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::signal(SIGPIPE, SIG_IGN);  // a client that hung up is a failed write (as ferry serve)
    namespace fs = std::filesystem;
    // One folder per test process (ctest runs tests in parallel processes).
    dir_ = fs::path(::testing::TempDir()) /
           ("server_thread_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fs::copy_file(fs::path(FERRY_SHARED_DIR) / "models" / "stories260K.gguf",
                  dir_ / "stories.gguf");
    catalog_ = std::make_unique<ModelCatalog>(dir_.string());
    auto devices = ParseDevices("cpu=8GiB@20GB/s");
    ASSERT_TRUE(devices.ok()) << devices.status().ToString();
    sched::SchedulerOptions so;
    so.devices = *devices;
    so.num_parallel = 2;
    so.tick_interval = std::chrono::milliseconds(5);
    ModelCatalog* catalog = catalog_.get();
    auto scheduler = sched::Scheduler::Create(
        std::move(so), std::make_unique<sched::LocalRunnerFactory>(
                           [catalog](const std::string& name) { return catalog->Resolve(name); }));
    ASSERT_TRUE(scheduler.ok()) << scheduler.status().ToString();
    scheduler_ = std::move(*scheduler);
    ServerOptions opts;
    opts.listen.port = 0;
    opts.devices = *devices;
    opts.num_parallel = 2;
    auto server = Server::Create(std::move(opts), scheduler_.get(), catalog_.get());
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
    listener_ = std::thread([this] { listened_ = server_->Listen(); });
    httplib::Client c("127.0.0.1", server_->port());
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!c.Get("/")) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the server did not answer";
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
    if (listener_.joinable()) listener_.join();
    server_.reset();
    if (scheduler_ != nullptr) scheduler_->Shutdown();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  httplib::Result Post(const std::string& path, const nlohmann::json& body) {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(300);
    return c.Post(path.c_str(), body.dump(), "application/json");
  }

  // The generated text of an /api/generate answer, streamed (NDJSON lines) or not.
  static std::string ResponseText(const std::string& body) {
    std::string text;
    std::istringstream lines(body);
    for (std::string line; std::getline(lines, line);) {
      if (!line.empty()) text += nlohmann::json::parse(line).value("response", "");
    }
    return text;
  }

  std::filesystem::path dir_;
  std::unique_ptr<ModelCatalog> catalog_;
  std::unique_ptr<sched::Scheduler> scheduler_;
  std::unique_ptr<Server> server_;
  std::thread listener_;
  Status listened_ = InternalError("Listen has not returned");
};

// Four clients at once (two streamed, two not; num_parallel 2, so two wait) while another
// polls /api/ps and /metrics: each gets the text the request gets alone.
TEST_F(ServerThreadTest, ConcurrentGenerationsEachEqualAlone) {
  const nlohmann::json options = {{"num_predict", 12}, {"temperature", 0}};
  auto request = [&](bool stream) {
    return nlohmann::json{{"model", "stories"},
                          {"prompt", "Once upon a time"},
                          {"stream", stream},
                          {"options", options}};
  };
  auto alone = Post("/api/generate", request(false));
  ASSERT_TRUE(alone);
  ASSERT_EQ(alone->status, 200) << alone->body;
  const std::string want = ResponseText(alone->body);
  ASSERT_FALSE(want.empty());

  std::atomic<bool> done{false};
  std::thread poller([&] {
    httplib::Client c("127.0.0.1", server_->port());
    while (!done.load()) {
      auto ps = c.Get("/api/ps");
      EXPECT_TRUE(ps && ps->status == 200);
      auto metrics = c.Get("/metrics");
      EXPECT_TRUE(metrics && metrics->status == 200);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  const int n = 4;
  std::vector<int> status(n, 0);
  std::vector<std::string> got(n);
  std::vector<std::thread> clients;
  for (int i = 0; i < n; ++i) {
    clients.emplace_back([&, i] {
      auto r = Post("/api/generate", request(i % 2 == 0));
      if (!r) return;
      status[i] = r->status;
      got[i] = ResponseText(r->body);
    });
  }
  for (std::thread& t : clients) t.join();
  done.store(true);
  poller.join();
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(status[i], 200) << "client " << i;
    EXPECT_EQ(got[i], want) << "client " << i;
  }
}

// A client that hangs up mid-stream is cancelled; Shutdown, from another thread while a stream
// runs, ends that stream with an error line and makes Listen return.
TEST_F(ServerThreadTest, HangUpAndShutdownEndRunningStreams) {
  // stories260K with ignore_eos runs until num_predict: long enough to be running throughout.
  const nlohmann::json long_request = {
      {"model", "stories"},
      {"prompt", "Once"},
      {"options",
       {{"num_predict", 3000}, {"num_ctx", 4096}, {"ignore_eos", true}, {"temperature", 0}}}};
  auto stream = [&](std::atomic<int>* lines, std::string* body, int hang_up_after) {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(300);
    httplib::Request req;
    req.method = "POST";
    req.path = "/api/generate";
    req.body = long_request.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
      body->append(data, size);
      lines->store(static_cast<int>(std::count(body->begin(), body->end(), '\n')));
      return hang_up_after == 0 || lines->load() < hang_up_after;
    };
    c.send(req);
  };
  auto wait_for = [](const std::atomic<int>& lines, int n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (lines.load() < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return lines.load() >= n;
  };

  std::atomic<int> hung_up_lines{0};
  std::string hung_up_body;
  stream(&hung_up_lines, &hung_up_body, 3);
  EXPECT_GE(hung_up_lines.load(), 3);

  std::atomic<int> lines{0};
  std::string body;
  std::thread client([&] { stream(&lines, &body, 0); });
  ASSERT_TRUE(wait_for(lines, 2)) << body;
  server_->Shutdown();
  listener_.join();
  client.join();
  EXPECT_TRUE(listened_.ok()) << listened_.ToString();
  std::vector<std::string> got;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) got.push_back(line);
  }
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(nlohmann::json::parse(got.back()).contains("error")) << got.back();
}

}  // namespace
}  // namespace ferry::server
