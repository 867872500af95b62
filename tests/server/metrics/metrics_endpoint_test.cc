#include "server/metrics/metrics_endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"

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

// One endpoint for the suite: stopping civetweb waits out its ~2 s poll.
class MetricsEndpointTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    collection_ = new std::shared_ptr<Collection>(std::make_shared<Collection>());
    tokens_ = &prometheus::BuildCounter()
                   .Name("vllm:generation_tokens_total")
                   .Help("Generated tokens.")
                   .Register((*collection_)->registry())
                   .Add({{"model_name", "m"}});
    tokens_->Increment(7);
    auto endpoint = MetricsEndpoint::Start(*collection_, "127.0.0.1:0");
    ASSERT_TRUE(endpoint.ok()) << endpoint.status();
    endpoint_ = endpoint->release();
    ASSERT_GT(endpoint_->port(), 0);
  }
  static void TearDownTestSuite() {
    delete endpoint_;
    delete collection_;
  }

  static std::shared_ptr<Collection>* collection_;
  static prometheus::Counter* tokens_;
  static MetricsEndpoint* endpoint_;
};
std::shared_ptr<Collection>* MetricsEndpointTest::collection_ = nullptr;
prometheus::Counter* MetricsEndpointTest::tokens_ = nullptr;
MetricsEndpoint* MetricsEndpointTest::endpoint_ = nullptr;

TEST_F(MetricsEndpointTest, ServesTheCollectionAndTheExposersOwnFamilies) {
  const std::string response =
      Request(endpoint_->port(), "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(response, HasSubstr("Content-Type: text/plain"));
  const std::string body = response.substr(response.find("\r\n\r\n") + 4);
  EXPECT_THAT(body, HasSubstr((*collection_)->Serialize()));
  EXPECT_THAT(body, HasSubstr("vllm:generation_tokens_total{model_name=\"m\"} "));
  // prometheus-cpp's own families, documented in deploy/README.md.
  EXPECT_THAT(body, HasSubstr("# TYPE exposer_scrapes_total counter\n"));
  EXPECT_THAT(body, HasSubstr("# TYPE exposer_transferred_bytes_total counter\n"));
  EXPECT_THAT(body, HasSubstr("# TYPE exposer_request_latencies summary\n"));
}

TEST_F(MetricsEndpointTest, CollectorsAddedAfterTheStartAreScraped) {
  class Late final : public prometheus::Collectable {
   public:
    std::vector<prometheus::MetricFamily> Collect() const override {
      prometheus::ClientMetric sample;
      sample.gauge.value = 3;
      return {{"mambaserve_late",
               "Added after the endpoint started.",
               prometheus::MetricType::Gauge,
               {sample}}};
    }
  };
  (*collection_)->AddCollector(std::make_shared<Late>());
  EXPECT_THAT(Request(endpoint_->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
              HasSubstr("\nmambaserve_late 3\n"));
}

TEST_F(MetricsEndpointTest, KeepAliveServesFreshValuesOnOneConnection) {
  const int fd = Connect(endpoint_->port());
  ASSERT_GE(fd, 0);
  const std::string series = "vllm:generation_tokens_total{model_name=\"m\"} ";
  SendAll(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  const double before = tokens_->Value();
  EXPECT_THAT(ReadResponse(fd), HasSubstr(series + absl::StrCat(before) + "\n"));
  tokens_->Increment(1);
  SendAll(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(ReadResponse(fd), HasSubstr(series + absl::StrCat(before + 1) + "\n"));
  close(fd);
}

TEST_F(MetricsEndpointTest, OtherPathsAreNotFound) {
  EXPECT_THAT(Request(endpoint_->port(), "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"),
              StartsWith("HTTP/1.1 404"));
}

TEST_F(MetricsEndpointTest, ConcurrentScrapesWhileIncrementing) {
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
            endpoint_->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
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

TEST(MetricsEndpointStartTest, BusyPortIsAnError) {
  auto collection = std::make_shared<Collection>();
  auto first = MetricsEndpoint::Start(collection, "127.0.0.1:0");
  ASSERT_TRUE(first.ok());
  auto second = MetricsEndpoint::Start(collection, "127.0.0.1:" + std::to_string((*first)->port()));
  EXPECT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
}

TEST(MetricsEndpointStartTest, ListenAddressNeedsAPort) {
  EXPECT_FALSE(ParseListenPort("127.0.0.1").ok());
  EXPECT_FALSE(ParseListenPort("127.0.0.1:99999").ok());
  EXPECT_EQ(*ParseListenPort("127.0.0.1:9400"), 9400);
  EXPECT_EQ(*ParseListenPort("[::1]:9400"), 9400);
  EXPECT_EQ(*ParseListenPort("9400"), 9400);
  EXPECT_FALSE(MetricsEndpoint::Start(std::make_shared<Collection>(), "localhost").ok());
}

}  // namespace
}  // namespace mambaserve::metrics
