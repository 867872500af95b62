// A real `redis-server` (Debian's) on 127.0.0.1 with a free port, no persistence, its files in a
// temporary directory; stopped (SIGKILL, it holds nothing worth keeping) when the object dies.
// Stop() and Start() again on the same port simulate an outage and a Redis restart.
// Also: Stored(), a StoredSession spelled out.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "engine/session_store/redis_connection.h"
#include "engine/session_store/redis_session_store.h"
#include "tests/testing/temp_dir.h"

namespace mambaserve::testing {

class RedisProcess {
 public:
  RedisProcess() : port_(FreePort()) { Start(); }
  ~RedisProcess() { Stop(); }
  RedisProcess(const RedisProcess&) = delete;
  RedisProcess& operator=(const RedisProcess&) = delete;

  // True once it answers PING (within 10 s).
  bool Start() {
    const std::string port = std::to_string(port_);
    pid_ = fork();
    if (pid_ == 0) {
      freopen(dir_.file("redis.log").c_str(), "a", stdout);
      freopen(dir_.file("redis.log").c_str(), "a", stderr);
      std::vector<std::string> args = {
          "redis-server", "--port", port, "--bind",       "127.0.0.1", "--dir",
          dir_.path(),    "--save", "",   "--appendonly", "no"};
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execvp(argv[0], argv.data());
      _exit(127);
    }
    RedisConnection connection(endpoint(), std::chrono::milliseconds(500));
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < give_up) {
      if (connection.Command({"PING"}).ok()) return ready_ = true;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) break;  // e.g. redis-server not installed
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return ready_ = false;
  }

  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    ready_ = false;
  }
  // SIGSTOP / SIGCONT: a Redis that accepts connections but answers nothing (a slow store).
  void Pause() { kill(pid_, SIGSTOP); }
  void Resume() { kill(pid_, SIGCONT); }

  bool ready() const { return ready_; }
  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  RedisEndpoint endpoint() const {
    RedisEndpoint endpoint;
    endpoint.host = "127.0.0.1";
    endpoint.port = port_;
    return endpoint;
  }
  // A store on it with the default options.
  RedisSessionStoreOptions store_options() const {
    RedisSessionStoreOptions options;
    options.endpoint = endpoint();
    return options;
  }

 private:
  static int FreePort() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
    socklen_t length = sizeof(address);
    getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
    close(fd);
    return ntohs(address.sin_port);
  }

  TempDir dir_;
  const int port_;
  pid_t pid_ = -1;
  bool ready_ = false;
};

inline StoredSession Stored(int64_t version, std::string fingerprint, std::string blob) {
  StoredSession session;
  session.header.version = version;
  session.header.length = 10 * version;
  session.header.fingerprint = std::move(fingerprint);
  session.blob = std::move(blob);
  return session;
}

}  // namespace mambaserve::testing
