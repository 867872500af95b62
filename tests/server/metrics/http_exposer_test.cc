#include "server/metrics/http_exposer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mambaserve::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

void SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, 0);
    ASSERT_GT(n, 0);
    sent += static_cast<size_t>(n);
  }
}

// Reads one response: headers, then Content-Length bytes of body.
std::string ReadResponse(int fd, bool expect_body = true) {
  std::string data;
  char buf[4096];
  size_t header_end = std::string::npos;
  size_t want = 0;
  while (true) {
    if (header_end == std::string::npos) {
      header_end = data.find("\r\n\r\n");
      if (header_end != std::string::npos) {
        const size_t cl = data.find("Content-Length: ");
        want = header_end + 4 +
               (expect_body && cl != std::string::npos ? std::stoul(data.substr(cl + 16)) : 0);
      }
    }
    if (header_end != std::string::npos && data.size() >= want) return data.substr(0, want);
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return data;
    data.append(buf, static_cast<size_t>(n));
  }
}

std::string Request(int port, const std::string& request, bool expect_body = true) {
  const int fd = Connect(port);
  if (fd < 0) return "";
  SendAll(fd, request);
  std::string response = ReadResponse(fd, expect_body);
  close(fd);
  return response;
}

class HttpExposerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto family =
        registry_.AddCounter("vllm:generation_tokens_total", "Generated tokens.", {"model_name"});
    ASSERT_TRUE(family.ok());
    tokens_ = &(*family)->WithLabels({"m"});
    tokens_->Increment(7);
    auto exposer = HttpExposer::Start(&registry_, {.listen = "127.0.0.1:0"});
    ASSERT_TRUE(exposer.ok()) << exposer.status();
    exposer_ = std::move(*exposer);
    ASSERT_GT(exposer_->port(), 0);
  }

  Registry registry_;
  Counter* tokens_ = nullptr;
  std::unique_ptr<HttpExposer> exposer_;
};

TEST_F(HttpExposerTest, ServesTheExposition) {
  const std::string response =
      Request(exposer_->port(), "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(response, HasSubstr("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
  const std::string body = response.substr(response.find("\r\n\r\n") + 4);
  EXPECT_EQ(body, registry_.Serialize());
  EXPECT_THAT(body, HasSubstr("vllm:generation_tokens_total{model_name=\"m\"} 7.0\n"));
  EXPECT_EQ(exposer_->scrapes(), 1u);
}

TEST_F(HttpExposerTest, KeepAliveServesFreshValuesOnOneConnection) {
  const int fd = Connect(exposer_->port());
  ASSERT_GE(fd, 0);
  SendAll(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(ReadResponse(fd), HasSubstr("} 7.0\n"));
  tokens_->Increment(1);
  SendAll(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(ReadResponse(fd), HasSubstr("} 8.0\n"));
  close(fd);
}

TEST_F(HttpExposerTest, HeadHasNoBody) {
  const std::string response =
      Request(exposer_->port(), "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
              /*expect_body=*/false);
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_EQ(response.substr(response.find("\r\n\r\n") + 4), "");
}

TEST_F(HttpExposerTest, OtherMethodsAndPaths) {
  EXPECT_THAT(Request(exposer_->port(),
                      "POST /metrics HTTP/1.1\r\nHost: x\r\n"
                      "Content-Length: 0\r\n\r\n"),
              StartsWith("HTTP/1.1 405"));
  EXPECT_THAT(Request(exposer_->port(), "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"),
              StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(Request(exposer_->port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
              HasSubstr("href=\"/metrics\""));
}

TEST_F(HttpExposerTest, ConcurrentScrapesWhileIncrementing) {
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    while (!stop) tokens_->Increment();
  });
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        const std::string r = Request(
            exposer_->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if (r.rfind("HTTP/1.1 200 OK", 0) == 0 &&
            r.find("vllm:generation_tokens_total{") != r.npos) {
          ++ok;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  stop = true;
  writer.join();
  EXPECT_EQ(ok.load(), 100);
}

TEST(HttpExposerStartTest, BusyPortIsAnError) {
  Registry registry;
  auto first = HttpExposer::Start(&registry, {.listen = "127.0.0.1:0"});
  ASSERT_TRUE(first.ok());
  auto second =
      HttpExposer::Start(&registry, {.listen = "127.0.0.1:" + std::to_string((*first)->port())});
  EXPECT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
}

TEST(HttpExposerStartTest, ListenAddressNeedsAPort) {
  EXPECT_FALSE(ParseListenPort("127.0.0.1").ok());
  EXPECT_FALSE(ParseListenPort("127.0.0.1:99999").ok());
  EXPECT_EQ(*ParseListenPort("127.0.0.1:9400"), 9400);
  EXPECT_EQ(*ParseListenPort("[::1]:9400"), 9400);
  EXPECT_EQ(*ParseListenPort("9400"), 9400);
  Registry registry;
  EXPECT_FALSE(HttpExposer::Start(&registry, {.listen = "localhost"}).ok());
}

}  // namespace
}  // namespace mambaserve::metrics
