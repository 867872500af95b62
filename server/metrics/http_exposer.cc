#include "server/metrics/http_exposer.h"

#include <civetweb.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/metrics/text_format.h"

namespace mambaserve::metrics {
namespace {

void InitCivetwebOnce() {
  static std::once_flag once;
  std::call_once(once, [] { mg_init_library(0); });
}

// civetweb would print to stderr; a metrics endpoint should not spam the server log.
int QuietLog(const mg_connection*, const char*) { return 1; }

void Respond(mg_connection* conn, int code, std::string_view reason, std::string_view content_type,
             std::string_view body, bool head_only) {
  mg_printf(conn,
            "HTTP/1.1 %d %.*s\r\nContent-Type: %.*s\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\n\r\n",
            code, static_cast<int>(reason.size()), reason.data(),
            static_cast<int>(content_type.size()), content_type.data(), body.size());
  if (!head_only && !body.empty()) mg_write(conn, body.data(), body.size());
}

}  // namespace

absl::StatusOr<int> ParseListenPort(const std::string& listen) {
  absl::string_view port_text = listen;
  if (const size_t colon = port_text.rfind(':'); colon != absl::string_view::npos) {
    port_text = port_text.substr(colon + 1);
  }
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address \"", listen, "\" needs a port, e.g. 127.0.0.1:9400"));
  }
  return port;
}

absl::StatusOr<std::unique_ptr<HttpExposer>> HttpExposer::Start(const Registry* registry,
                                                                const HttpExposerOptions& options) {
  if (absl::StatusOr<int> port = ParseListenPort(options.listen); !port.ok()) return port.status();
  InitCivetwebOnce();
  std::unique_ptr<HttpExposer> exposer(new HttpExposer(registry));

  const std::string threads = std::to_string(options.num_threads);
  const std::string timeout = std::to_string(options.request_timeout_ms);
  const char* config[] = {"listening_ports",
                          options.listen.c_str(),
                          "num_threads",
                          threads.c_str(),
                          "request_timeout_ms",
                          timeout.c_str(),
                          "enable_keep_alive",
                          "yes",
                          nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.log_message = QuietLog;
  mg_init_data init{&callbacks, exposer.get(), config};
  char error_text[256] = "";
  unsigned error_code = 0;
  mg_error_data error{&error_code, error_text, sizeof(error_text)};
  exposer->context_ = mg_start2(&init, &error);
  if (exposer->context_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("metrics endpoint: cannot listen on ", options.listen, ": ", error_text));
  }
  mg_set_request_handler(exposer->context_, "/metrics$", &HttpExposer::HandleMetrics,
                         exposer.get());
  mg_set_request_handler(exposer->context_, "/$", &HttpExposer::HandleRoot, exposer.get());

  mg_server_port ports[4];
  const int n = mg_get_server_ports(exposer->context_, 4, ports);
  if (n < 1) return absl::InternalError("metrics endpoint: civetweb reports no listening port");
  exposer->port_ = ports[0].port;
  return exposer;
}

HttpExposer::~HttpExposer() {
  if (context_ != nullptr) mg_stop(context_);
}

int HttpExposer::HandleMetrics(mg_connection* conn, void* self_ptr) {
  auto* self = static_cast<HttpExposer*>(self_ptr);
  const mg_request_info* info = mg_get_request_info(conn);
  const bool head = std::strcmp(info->request_method, "HEAD") == 0;
  if (!head && std::strcmp(info->request_method, "GET") != 0) {
    Respond(conn, 405, "Method Not Allowed", "text/plain; charset=utf-8", "GET or HEAD only\n",
            false);
    return 405;
  }
  self->scrapes_.fetch_add(1, std::memory_order_relaxed);
  const std::string body = self->registry_->Serialize();
  Respond(conn, 200, "OK", kTextContentType, body, head);
  return 200;
}

int HttpExposer::HandleRoot(mg_connection* conn, void* self_ptr) {
  Respond(conn, 200, "OK", "text/html; charset=utf-8",
          "<html><body><a href=\"/metrics\">/metrics</a></body></html>\n", false);
  return 200;
}

}  // namespace mambaserve::metrics
