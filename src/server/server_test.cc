#include "server/server.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

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

}  // namespace
}  // namespace ferry::server
