// Starts the real `mambaserve serve` binary on 127.0.0.1 with a free port (port 0 + --port-file),
// waits for it to report SERVING, and stops it with SIGTERM (bounded waits everywhere).
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/testing/temp_dir.h"

namespace mambaserve::testing {

class ServerProcess {
 public:
  // `environment`: NAME=VALUE entries added to the server's environment; `credentials`: how the
  // health check and channel() connect (default: plaintext).
  ServerProcess(const std::string& binary, const std::string& model_dir,
                std::vector<std::string> extra_args, std::vector<std::string> environment = {},
                std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr) {
    const std::string port_file = dir_.file("port");
    log_file_ = dir_.file("server.log");
    std::vector<std::string> args = {
        binary,        "serve",       "--model", model_dir,   "--listen",
        "127.0.0.1:0", "--port-file", port_file, "--threads", "1"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    pid_ = fork();
    if (pid_ == 0) {
      freopen(log_file_.c_str(), "w", stderr);
      for (std::string& assignment : environment) putenv(assignment.data());
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < give_up) {
      std::ifstream in(port_file);
      if (in >> port_ && port_ > 0) break;
      if (Exited()) return;  // before listening: see log()
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (port_ <= 0) return;
    channel_ = grpc::CreateChannel(target(),
                                   credentials ? credentials : grpc::InsecureChannelCredentials());
    auto health = grpc::health::v1::Health::NewStub(channel_);
    while (std::chrono::steady_clock::now() < give_up) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      grpc::health::v1::HealthCheckRequest request;
      grpc::health::v1::HealthCheckResponse response;
      if (health->Check(&context, request, &response).ok() &&
          response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
        serving_ = true;
        return;
      }
      if (Exited()) return;  // e.g. the model failed to load: see log()
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  ~ServerProcess() {
    if (pid_ > 0 && exit_code_ == -1) Stop();
  }

  bool serving() const { return serving_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  std::string log() const {
    std::ifstream in(log_file_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // SIGTERM, then waits up to `wait`; SIGKILL after that. Returns the exit status (-2 if killed).
  int Stop(std::chrono::seconds wait = std::chrono::seconds(20)) {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    return Wait(wait);
  }
  void Terminate() { kill(pid_, SIGTERM); }
  void Signal(int signal_number) { kill(pid_, signal_number); }
  int Wait(std::chrono::seconds wait = std::chrono::seconds(20)) {
    if (exit_code_ != -1) return exit_code_;
    const auto give_up = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < give_up) {
      if (Exited()) return exit_code_;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    exit_code_ = -2;
    return exit_code_;
  }

 private:
  // Reaps the server if it has exited (recording its status).
  bool Exited() {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return true;
  }

  TempDir dir_;
  std::string log_file_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool serving_ = false;
  int exit_code_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace mambaserve::testing
