// mambactl: command-line client for a mambaserve server.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "mambaserve/v1/mambaserve.grpc.pb.h"

namespace {

using mambaserve::v1::MambaServe;

constexpr char kUsage[] =
    R"(usage: mambactl [--target HOST:PORT] <command> [args]
  (target: --target, else $MAMBASERVE_TARGET, else 127.0.0.1:50051)

  generate [--text TEXT | --tokens 1,2,3] [--session ID] [--max-tokens N] [--temperature T]
           [--top-k K] [--top-p P] [--min-p P] [--seed N] [--stop S]... [--ignore-eos]
           [--logprobs N] [--show-tokens] [--timeout-s S]
                          streams the generated text to stdout as it arrives; usage to stderr.
                          Reads the prompt from stdin when neither --text nor --tokens is given.
  session create [ID] | get ID | list | delete ID
  session export ID --out FILE
  session import --in FILE [ID]
  tokenize TEXT           token ids and their spellings
  detokenize 1,2,3
  info                    model and server figures (JSON, every field)
  health [SERVICE]        grpc.health.v1 status (exit 0 when SERVING)
)";

struct Args {
  std::vector<std::string> positional;
  std::multimap<std::string, std::string> flags;
  bool Has(const std::string& f) const { return flags.count(f) > 0; }
  std::string Get(const std::string& f, const std::string& fallback = "") const {
    auto it = flags.find(f);
    return it == flags.end() ? fallback : it->second;
  }
};

const std::map<std::string, bool> kFlagTakesValue = {
    {"target", true},     {"text", true},        {"tokens", true},      {"session", true},
    {"max-tokens", true}, {"temperature", true}, {"top-k", true},       {"top-p", true},
    {"min-p", true},      {"seed", true},        {"stop", true},        {"out", true},
    {"in", true},         {"timeout-s", true},   {"ignore-eos", false}, {"show-tokens", false},
    {"logprobs", true},   {"help", false}};

bool ParseArgs(int argc, char** argv, Args* args) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) {
      args->positional.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    const auto eq = name.find('=');
    if (eq != std::string::npos) value = name.substr(eq + 1), name = name.substr(0, eq);
    auto it = kFlagTakesValue.find(name);
    if (it == kFlagTakesValue.end()) {
      std::cerr << "mambactl: unknown flag --" << name << "\n";
      return false;
    }
    if (it->second && eq == std::string::npos) {
      if (i + 1 >= argc) {
        std::cerr << "mambactl: --" << name << " needs a value\n";
        return false;
      }
      value = argv[++i];
    }
    args->flags.emplace(name, value);
  }
  return true;
}

int Fail(const grpc::Status& status) {
  // gRPC and Abseil number their codes alike: print the name (NOT_FOUND), not the number.
  std::cerr << "mambactl: "
            << absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())) << ": "
            << status.error_message() << "\n";
  return 1;
}

// A numeric flag, refused (false, with a message) unless all of it parses and it lies in [min,
// max].
template <typename T>
bool NumberFlag(const Args& args, const std::string& name, double min, double max, T* out) {
  if (!args.Has(name)) return true;
  const std::string text = args.Get(name);
  double value = 0;
  bool parsed;
  if constexpr (std::is_integral_v<T>) {
    int64_t i = 0;
    uint64_t u = 0;
    parsed = std::is_signed_v<T> ? absl::SimpleAtoi(text, &i) : absl::SimpleAtoi(text, &u);
    value = std::is_signed_v<T> ? static_cast<double>(i) : static_cast<double>(u);
    if (parsed && value >= min && value <= max) {
      *out = std::is_signed_v<T> ? static_cast<T>(i) : static_cast<T>(u);
      return true;
    }
  } else {
    parsed = absl::SimpleAtod(text, &value) && std::isfinite(value);
    if (parsed && value >= min && value <= max) {
      *out = static_cast<T>(value);
      return true;
    }
  }
  std::cerr << "mambactl: --" << name << " must be a";
  if constexpr (std::is_integral_v<T>) {
    std::cerr << "n integer in [" << static_cast<int64_t>(min) << ", " << static_cast<uint64_t>(max)
              << "]";
  } else {
    std::cerr << " number in [" << min << ", " << max << "]";
  }
  std::cerr << ", not \"" << text << "\"\n";
  return false;
}

const char* LocationName(mambaserve::v1::StateLocation l) {
  switch (l) {
    case mambaserve::v1::STATE_LOCATION_NONE:
      return "none";
    case mambaserve::v1::STATE_LOCATION_DEVICE:
      return "device";
    case mambaserve::v1::STATE_LOCATION_HOST:
      return "host";
    default:
      return "?";
  }
}

void PrintSession(const mambaserve::v1::Session& s) {
  std::cout << s.session_id() << "\tlength=" << s.length_tokens()
            << "\tstate_bytes=" << s.state_bytes() << "\tlocation=" << LocationName(s.location())
            << "\tbusy=" << (s.busy() ? "yes" : "no") << "\tcreated_ms=" << s.created_unix_ms()
            << "\tlast_used_ms=" << s.last_used_unix_ms() << "\n";
}

bool ParseIds(const std::string& text, std::vector<int32_t>* ids) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) return false;
    ids->push_back(id);
  }
  return true;
}

int Generate(MambaServe::Stub& stub, const Args& args) {
  mambaserve::v1::GenerateRequest request;
  if (args.Has("tokens")) {
    std::vector<int32_t> ids;
    if (!ParseIds(args.Get("tokens"), &ids)) {
      std::cerr << "mambactl: --tokens expects comma-separated integers\n";
      return 2;
    }
    for (int32_t id : ids) request.mutable_tokens()->add_ids(id);
  } else if (args.Has("text")) {
    request.set_text(args.Get("text"));
  } else {
    std::stringstream in;
    in << std::cin.rdbuf();
    request.set_text(in.str());
  }
  request.set_session_id(args.Get("session"));
  auto* s = request.mutable_sampling();
  int32_t max_tokens = 0, top_k = 0, logprobs = 0;
  double temperature = 0, top_p = 0, min_p = 0, timeout_s = 0;
  uint64_t seed = 0;
  constexpr double kInt32Max = 2147483647.0;
  if (!NumberFlag(args, "max-tokens", 1, kInt32Max, &max_tokens) ||
      !NumberFlag(args, "top-k", 0, kInt32Max, &top_k) ||
      !NumberFlag(args, "logprobs", 0, 20, &logprobs) ||
      !NumberFlag(args, "temperature", 0, 1e6, &temperature) ||
      !NumberFlag(args, "top-p", 0, 1, &top_p) || !NumberFlag(args, "min-p", 0, 1, &min_p) ||
      !NumberFlag(args, "timeout-s", 1e-3, 1e9, &timeout_s) ||
      !NumberFlag(args, "seed", 0, 1.8446744073709552e19, &seed)) {
    return 2;
  }
  if (args.Has("max-tokens")) s->set_max_tokens(max_tokens);
  if (args.Has("top-k")) s->set_top_k(top_k);
  if (args.Has("logprobs")) s->set_logprobs(logprobs);
  if (args.Has("temperature")) s->set_temperature(temperature);
  if (args.Has("top-p")) s->set_top_p(top_p);
  if (args.Has("min-p")) s->set_min_p(min_p);
  if (args.Has("seed")) s->set_seed(seed);
  auto [begin, end] = args.flags.equal_range("stop");
  for (auto it = begin; it != end; ++it) s->add_stop(it->second);
  s->set_ignore_eos(args.Has("ignore-eos"));

  grpc::ClientContext context;
  if (!request.session_id().empty()) context.AddMetadata("x-session-id", request.session_id());
  if (args.Has("timeout-s")) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  }
  auto reader = stub.Generate(&context, request);
  mambaserve::v1::GenerateResponse response;
  mambaserve::v1::GenerateResponse last;
  while (reader->Read(&response)) {
    std::cout << response.text() << std::flush;
    if (args.Has("show-tokens")) {
      for (int32_t id : response.token_ids()) std::cerr << "[" << id << "]";
    }
    for (const auto& lp : response.logprobs()) {
      std::cerr << "[" << lp.token_id() << " logprob=" << lp.logprob();
      for (const auto& top : lp.top()) std::cerr << " " << top.token_id() << ":" << top.logprob();
      std::cerr << "]";
    }
    if (response.finish_reason() != mambaserve::v1::FINISH_REASON_UNSPECIFIED) last = response;
  }
  std::cout << "\n";
  grpc::Status status = reader->Finish();
  if (!status.ok()) return Fail(status);
  const auto& usage = last.usage();
  std::cerr << "finish_reason=" << mambaserve::v1::FinishReason_Name(last.finish_reason())
            << " prompt_tokens=" << usage.prompt_tokens()
            << " generated_tokens=" << usage.generated_tokens()
            << " session_length=" << usage.session_length()
            << " ttft_ms=" << usage.time_to_first_token_s() * 1000 << "\n";
  return 0;
}

int Session(MambaServe::Stub& stub, const Args& args) {
  const auto& p = args.positional;
  const std::string verb = p.size() > 1 ? p[1] : "";
  const std::string id = p.size() > 2 ? p[2] : "";
  grpc::ClientContext context;
  // Also as the header a session-affine proxy routes on (deploy/nginx), so every call about this
  // session reaches the replica that holds it.
  if (!id.empty()) context.AddMetadata("x-session-id", id);
  mambaserve::v1::Session session;
  grpc::Status status;
  if (verb == "create") {
    mambaserve::v1::CreateSessionRequest request;
    request.set_session_id(id);
    status = stub.CreateSession(&context, request, &session);
    if (status.ok()) PrintSession(session);
  } else if (verb == "get") {
    mambaserve::v1::GetSessionRequest request;
    request.set_session_id(id);
    status = stub.GetSession(&context, request, &session);
    if (status.ok()) PrintSession(session);
  } else if (verb == "list") {
    mambaserve::v1::ListSessionsResponse response;
    status = stub.ListSessions(&context, {}, &response);
    for (const auto& s : response.sessions()) PrintSession(s);
  } else if (verb == "delete") {
    mambaserve::v1::DeleteSessionRequest request;
    request.set_session_id(id);
    mambaserve::v1::DeleteSessionResponse response;
    status = stub.DeleteSession(&context, request, &response);
  } else if (verb == "export") {
    if (!args.Has("out")) {
      std::cerr << "mambactl: session export ID --out FILE\n";
      return 2;
    }
    mambaserve::v1::ExportSessionRequest request;
    request.set_session_id(id);
    // The blob arrives in chunks; it is written next to the target and renamed into place only
    // when the whole stream arrived, so a failed export never leaves a truncated file behind.
    const std::string path = args.Get("out");
    const std::string partial = path + ".partial";
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    if (!out) {
      std::cerr << "mambactl: cannot write " << path << "\n";
      return 1;
    }
    auto reader = stub.ExportSession(&context, request);
    mambaserve::v1::ExportSessionResponse response, first;
    uint64_t received = 0;
    for (bool is_first = true; reader->Read(&response); is_first = false) {
      if (is_first) first = response;
      out.write(response.blob_chunk().data(),
                static_cast<std::streamsize>(response.blob_chunk().size()));
      received += response.blob_chunk().size();
    }
    status = reader->Finish();
    out.close();
    if (status.ok() && received != first.blob_bytes()) {
      status = grpc::Status(
          grpc::StatusCode::DATA_LOSS,
          absl::StrCat("received ", received, " of ", first.blob_bytes(), " blob bytes"));
    }
    if (!status.ok()) {
      std::remove(partial.c_str());
    } else if (!out || std::rename(partial.c_str(), path.c_str()) != 0) {
      std::remove(partial.c_str());
      std::cerr << "mambactl: cannot write " << path << "\n";
      return 1;
    } else {
      std::cout << "wrote " << received << " bytes (format " << first.format_version() << ", model "
                << first.model_fingerprint() << ") to " << path << "\n";
    }
  } else if (verb == "import") {
    std::ifstream in(args.Get("in"), std::ios::binary);
    if (!args.Has("in") || !in) {
      std::cerr << "mambactl: session import --in FILE [ID] (cannot read the file)\n";
      return 2;
    }
    std::stringstream bytes;
    bytes << in.rdbuf();
    const std::string blob = bytes.str();
    auto writer = stub.ImportSession(&context, &session);
    mambaserve::v1::ImportSessionRequest request;
    request.set_session_id(id);
    constexpr size_t kChunk = size_t{1} << 20;
    // A refused import ends the call early: the remaining writes fail and Finish says why.
    size_t offset = 0;
    do {
      request.set_blob_chunk(blob.substr(offset, kChunk));
      offset += kChunk;
      if (!writer->Write(request)) break;
      request.clear_session_id();  // the first message names the session
    } while (offset < blob.size());
    writer->WritesDone();
    status = writer->Finish();
    if (status.ok()) PrintSession(session);
  } else {
    std::cerr << kUsage;
    return 2;
  }
  return status.ok() ? 0 : Fail(status);
}

int Run(int argc, char** argv) {
  Args args;
  if (!ParseArgs(argc, argv, &args)) return 2;
  if (args.Has("help") || args.positional.empty()) {
    (args.Has("help") ? std::cout : std::cerr) << kUsage;
    return args.Has("help") ? 0 : 2;
  }
  const char* env_target = std::getenv("MAMBASERVE_TARGET");
  const std::string target =
      args.Get("target", env_target != nullptr && *env_target ? env_target : "127.0.0.1:50051");
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = MambaServe::NewStub(channel);
  const std::string& command = args.positional[0];
  if (command == "generate") return Generate(*stub, args);
  if (command == "session") return Session(*stub, args);
  grpc::ClientContext context;
  if (command == "tokenize") {
    mambaserve::v1::TokenizeRequest request;
    request.set_text(args.positional.size() > 1 ? args.positional[1] : "");
    mambaserve::v1::TokenizeResponse response;
    grpc::Status status = stub->Tokenize(&context, request, &response);
    if (!status.ok()) return Fail(status);
    for (int i = 0; i < response.token_ids_size(); ++i) {
      std::cout << response.token_ids(i) << "\t" << response.tokens(i) << "\n";
    }
    return 0;
  }
  if (command == "detokenize") {
    mambaserve::v1::DetokenizeRequest request;
    std::vector<int32_t> ids;
    if (args.positional.size() < 2 || !ParseIds(args.positional[1], &ids)) {
      std::cerr << "mambactl: detokenize 1,2,3\n";
      return 2;
    }
    for (int32_t id : ids) request.add_token_ids(id);
    mambaserve::v1::DetokenizeResponse response;
    grpc::Status status = stub->Detokenize(&context, request, &response);
    if (!status.ok()) return Fail(status);
    std::cout << response.text() << "\n";
    return 0;
  }
  if (command == "info") {
    mambaserve::v1::ModelInfo info;
    grpc::Status status = stub->GetModelInfo(&context, {}, &info);
    if (!status.ok()) return Fail(status);
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = true;
    options.always_print_primitive_fields = true;  // a zero is a figure too
    options.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(info, &json, options).ok()) return 1;
    std::cout << json;
    return 0;
  }
  if (command == "health") {
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(args.positional.size() > 1 ? args.positional[1] : "");
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health->Check(&context, request, &response);
    if (!status.ok()) return Fail(status);
    std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
              << "\n";
    return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
  }
  std::cerr << "mambactl: unknown command \"" << command << "\"\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
