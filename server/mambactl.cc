// mambactl: command-line client for a mambaserve server.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "mambaserve/v1/mambaserve.grpc.pb.h"
#include "server/cli/flags.h"

namespace {

using mambaserve::v1::MambaServe;

// --token (or $MAMBASERVE_TOKEN): sent as "authorization: Bearer TOKEN" on every call.
std::string g_token;

// Every call carries the bearer token when there is one.
void Authorize(grpc::ClientContext& context) {
  if (!g_token.empty()) context.AddMetadata("authorization", "Bearer " + g_token);
}

// A whole file (a session blob, a PEM file); nothing when it cannot be read.
std::optional<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// What the command line asked for; CLI11 fills it (see Run).
struct GenerateFlags {
  std::string text;
  std::vector<int32_t> tokens;
  std::string session;
  int32_t max_tokens = 0, top_k = 0, logprobs = 0, prompt_logprobs = 0;
  double temperature = 0, top_p = 0, min_p = 0, timeout_s = 0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false, show_tokens = false;
  // Set only when given, so that the server's defaults apply otherwise.
  CLI::Option *max_tokens_set, *top_k_set, *logprobs_set, *temperature_set, *top_p_set, *min_p_set,
      *timeout_set, *seed_set, *text_set, *tokens_set, *prompt_logprobs_set;
};

struct SessionFlags {
  std::string verb;  // the sub-subcommand: create, get, list, delete, export, import, fork
  std::string id, source;
  std::string out, in;
};

int Fail(const grpc::Status& status) {
  // gRPC and Abseil number their codes alike: print the name (NOT_FOUND), not the number.
  std::cerr << "mambactl: "
            << absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())) << ": "
            << status.error_message() << "\n";
  return 1;
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

int Generate(MambaServe::Stub& stub, const GenerateFlags& g) {
  mambaserve::v1::GenerateRequest request;
  if (g.tokens_set->count() > 0) {
    for (int32_t id : g.tokens) request.mutable_tokens()->add_ids(id);
  } else if (g.text_set->count() > 0) {
    request.set_text(g.text);
  } else {
    std::stringstream in;
    in << std::cin.rdbuf();
    request.set_text(in.str());
  }
  request.set_session_id(g.session);
  auto* s = request.mutable_sampling();
  if (g.max_tokens_set->count() > 0) s->set_max_tokens(g.max_tokens);
  if (g.top_k_set->count() > 0) s->set_top_k(g.top_k);
  if (g.logprobs_set->count() > 0) s->set_logprobs(g.logprobs);
  if (g.prompt_logprobs_set->count() > 0) s->set_prompt_logprobs(g.prompt_logprobs);
  if (g.temperature_set->count() > 0) s->set_temperature(g.temperature);
  if (g.top_p_set->count() > 0) s->set_top_p(g.top_p);
  if (g.min_p_set->count() > 0) s->set_min_p(g.min_p);
  if (g.seed_set->count() > 0) s->set_seed(g.seed);
  for (const std::string& stop : g.stop) s->add_stop(stop);
  s->set_ignore_eos(g.ignore_eos);

  grpc::ClientContext context;
  Authorize(context);
  if (!request.session_id().empty()) context.AddMetadata("x-session-id", request.session_id());
  if (g.timeout_set->count() > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(static_cast<int64_t>(g.timeout_s * 1000)));
  }
  auto reader = stub.Generate(&context, request);
  mambaserve::v1::GenerateResponse response;
  mambaserve::v1::GenerateResponse last;
  double prompt_nll = 0;
  int64_t prompt_scored = 0;
  while (reader->Read(&response)) {
    for (int i = 0; i < response.prompt_logprobs_size(); ++i) {
      const auto& lp = response.prompt_logprobs(i);
      std::cerr << "[prompt " << response.prompt_logprobs_offset() + i << ": " << lp.token_id()
                << " logprob=" << lp.logprob();
      for (const auto& top : lp.top()) std::cerr << " " << top.token_id() << ":" << top.logprob();
      std::cerr << "]\n";
      prompt_nll -= lp.logprob();
      ++prompt_scored;
    }
    std::cout << response.text() << std::flush;
    if (g.show_tokens) {
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
  if (prompt_scored > 0) {
    std::cerr << "prompt: " << prompt_scored << " tokens scored, mean NLL "
              << prompt_nll / static_cast<double>(prompt_scored) << ", perplexity "
              << std::exp(prompt_nll / static_cast<double>(prompt_scored)) << "\n";
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) return Fail(status);
  const auto& usage = last.usage();
  std::cerr << "finish_reason=" << mambaserve::v1::FinishReason_Name(last.finish_reason())
            << " prompt_tokens=" << usage.prompt_tokens()
            << " generated_tokens=" << usage.generated_tokens()
            << " session_length=" << usage.session_length();
  // A scoring-only request (max_tokens 0) has no first token.
  if (usage.time_to_first_token_s() >= 0)
    std::cerr << " ttft_ms=" << usage.time_to_first_token_s() * 1000;
  std::cerr << "\n";
  return 0;
}

int Session(MambaServe::Stub& stub, const SessionFlags& f) {
  const std::string& verb = f.verb;
  const std::string& id = f.id;
  grpc::ClientContext context;
  Authorize(context);
  // Also as the header a session-affine proxy routes on (deploy/nginx), so every call about this
  // session reaches the replica that holds it; a fork goes where its source is.
  const std::string& routed = verb == "fork" ? f.source : id;
  if (!routed.empty()) context.AddMetadata("x-session-id", routed);
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
  } else if (verb == "fork") {
    mambaserve::v1::ForkSessionRequest request;
    request.set_source_session_id(f.source);
    request.set_session_id(id);
    status = stub.ForkSession(&context, request, &session);
    if (status.ok()) PrintSession(session);
  } else if (verb == "delete") {
    mambaserve::v1::DeleteSessionRequest request;
    request.set_session_id(id);
    mambaserve::v1::DeleteSessionResponse response;
    status = stub.DeleteSession(&context, request, &response);
  } else if (verb == "export") {
    mambaserve::v1::ExportSessionRequest request;
    request.set_session_id(id);
    // The blob arrives in chunks; it is written next to the target and renamed into place only
    // when the whole stream arrived, so a failed export never leaves a truncated file behind.
    const std::string& path = f.out;
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
    const std::optional<std::string> contents = ReadWholeFile(f.in);
    if (!contents) {
      std::cerr << "mambactl: cannot read " << f.in << "\n";
      return 2;
    }
    const std::string& blob = *contents;
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
  }
  return status.ok() ? 0 : Fail(status);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    bool tls, const std::string& ca, const std::string& cert, const std::string& key) {
  if (!tls && ca.empty() && cert.empty() && key.empty()) return grpc::InsecureChannelCredentials();
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  grpc::SslCredentialsOptions options;
  for (auto [path, pem] :
       {std::pair{&ca, &options.pem_root_certs}, std::pair{&cert, &options.pem_cert_chain},
        std::pair{&key, &options.pem_private_key}}) {
    if (path->empty()) continue;
    std::optional<std::string> contents = ReadWholeFile(*path);
    if (!contents) return absl::NotFoundError(absl::StrCat("cannot read ", *path));
    *pem = *std::move(contents);
  }
  return grpc::SslCredentials(options);
}

int Run(int argc, char** argv) {
  CLI::App app{"The command-line client of a mambaserve server.", "mambactl"};
  app.require_subcommand(1);
  app.fallthrough();  // --target may also follow the command
  app.option_defaults()->always_capture_default();
  const char* env_target = std::getenv("MAMBASERVE_TARGET");
  std::string target = env_target != nullptr && *env_target ? env_target : "127.0.0.1:50051";
  app.add_option("--target", target,
                 "HOST:PORT of the server ($MAMBASERVE_TARGET sets the default)");
  // The token is a secret: --help does not print it.
  const char* env_token = std::getenv("MAMBASERVE_TOKEN");
  if (env_token != nullptr) g_token = env_token;
  app.add_option("--token", g_token,
                 "bearer token for a server with --auth-tokens (default: $MAMBASERVE_TOKEN)")
      ->default_str("");
  // TLS: any of these switches the channel to TLS (the server verified against --tls-ca, or the
  // system's roots without it); --tls-cert/--tls-key present a client certificate for mutual TLS.
  std::string tls_ca, tls_cert, tls_key;
  bool tls = false;
  app.add_flag("--tls", tls, "connect over TLS, trusting the system's CA certificates");
  app.add_option("--tls-ca", tls_ca, "FILE: PEM CA bundle the server's certificate must chain to");
  app.add_option("--tls-cert", tls_cert, "FILE: PEM client certificate (mutual TLS)");
  app.add_option("--tls-key", tls_key, "FILE: PEM private key of --tls-cert");

  constexpr int32_t kInt32Max = std::numeric_limits<int32_t>::max();
  GenerateFlags g;
  CLI::App* generate = app.add_subcommand(
      "generate",
      "Streams the generated text to stdout as it arrives, usage to stderr; the prompt is read "
      "from stdin without --text or --tokens.");
  g.text_set = generate->add_option("--text", g.text, "the prompt");
  g.tokens_set = generate->add_option("--tokens", g.tokens, "the prompt as token ids: 1,2,3")
                     ->delimiter(',')
                     ->excludes(g.text_set);
  generate->add_option("--session", g.session, "ID: continue this session's conversation");
  g.max_tokens_set =
      generate
          ->add_option("--max-tokens", g.max_tokens,
                       "tokens to generate at most (0 with --prompt-logprobs: score only)")
          ->check(CLI::Range(0, kInt32Max));
  g.temperature_set = generate->add_option("--temperature", g.temperature, "0: greedy")
                          ->check(CLI::Range(0.0, 1e6));
  g.top_k_set = generate->add_option("--top-k", g.top_k, "0: off")->check(CLI::Range(0, kInt32Max));
  g.top_p_set = generate->add_option("--top-p", g.top_p, "1: off")->check(CLI::Range(0.0, 1.0));
  g.min_p_set = generate->add_option("--min-p", g.min_p, "0: off")->check(CLI::Range(0.0, 1.0));
  g.seed_set = generate->add_option("--seed", g.seed, "same request and seed, same tokens");
  generate->add_option("--stop", g.stop, "S: stop before this text (repeatable)");
  generate->add_flag("--ignore-eos", g.ignore_eos, "generate past the end-of-sequence token");
  g.logprobs_set = generate
                       ->add_option("--logprobs", g.logprobs,
                                    "N: each token's log-probability and the top N, to stderr")
                       ->check(CLI::Range(0, 20));
  g.prompt_logprobs_set =
      generate
          ->add_option("--prompt-logprobs", g.prompt_logprobs,
                       "N: each prompt token's log-probability and the top N, and the "
                       "prompt's perplexity, to stderr")
          ->check(CLI::Range(0, 20));
  generate->add_flag("--show-tokens", g.show_tokens, "each token's id, to stderr");
  g.timeout_set = generate->add_option("--timeout-s", g.timeout_s, "S: the call's deadline")
                      ->check(CLI::Range(1e-3, 1e9));

  SessionFlags session;
  CLI::App* sessions = app.add_subcommand("session", "Server-side sessions.");
  sessions->require_subcommand(1);
  auto verb = [&](const char* name, const char* help) {
    CLI::App* sub = sessions->add_subcommand(name, help);
    sub->callback([&session, name] { session.verb = name; });
    return sub;
  };
  verb("create", "a new session (the server names it without ID)")
      ->add_option("id", session.id, "ID");
  verb("get", "one session's figures")->add_option("id", session.id, "ID")->required();
  verb("list", "every session");
  verb("delete", "end a session")->add_option("id", session.id, "ID")->required();
  CLI::App* exporter = verb("export", "write a session's portable blob to a file");
  exporter->add_option("id", session.id, "ID")->required();
  exporter->add_option("--out", session.out, "FILE")->required();
  CLI::App* importer = verb("import", "recreate a session from an exported blob");
  importer->add_option("--in", session.in, "FILE")->required();
  importer->add_option("id", session.id, "ID (the server names it without)");
  CLI::App* forker = verb("fork", "a new session continuing from a copy of SOURCE's conversation");
  forker->add_option("source", session.source, "SOURCE")->required();
  forker->add_option("id", session.id, "ID (the server names it without)");

  std::string text, ids_text, health_service;
  std::vector<int32_t> ids;
  CLI::App* tokenize = app.add_subcommand("tokenize", "token ids and their spellings");
  tokenize->add_option("text", text, "TEXT")->required();
  CLI::App* detokenize = app.add_subcommand("detokenize", "token ids to text");
  detokenize->add_option("ids", ids, "1,2,3")->delimiter(',')->required();
  CLI::App* info = app.add_subcommand("info", "model and server figures (JSON, every field)");
  CLI::App* health = app.add_subcommand("health", "grpc.health.v1 status (exit 0 when SERVING)");
  health->add_option("service", health_service, "SERVICE (default: the whole server)");

  if (std::optional<int> exit = mambaserve::ParseFlags(app, argc, argv)) return *exit;

  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ChannelCredentials(tls, tls_ca, tls_cert, tls_key);
  if (!credentials.ok()) {
    std::cerr << "mambactl: " << credentials.status().message() << "\n";
    return 2;
  }
  auto channel = grpc::CreateChannel(target, *credentials);
  auto stub = MambaServe::NewStub(channel);
  if (generate->parsed()) return Generate(*stub, g);
  if (sessions->parsed()) return Session(*stub, session);
  grpc::ClientContext context;
  Authorize(context);
  if (tokenize->parsed()) {
    mambaserve::v1::TokenizeRequest request;
    request.set_text(text);
    mambaserve::v1::TokenizeResponse response;
    grpc::Status status = stub->Tokenize(&context, request, &response);
    if (!status.ok()) return Fail(status);
    for (int i = 0; i < response.token_ids_size(); ++i) {
      std::cout << response.token_ids(i) << "\t" << response.tokens(i) << "\n";
    }
    return 0;
  }
  if (detokenize->parsed()) {
    mambaserve::v1::DetokenizeRequest request;
    for (int32_t id : ids) request.add_token_ids(id);
    mambaserve::v1::DetokenizeResponse response;
    grpc::Status status = stub->Detokenize(&context, request, &response);
    if (!status.ok()) return Fail(status);
    std::cout << response.text() << "\n";
    return 0;
  }
  if (info->parsed()) {
    mambaserve::v1::ModelInfo model;
    grpc::Status status = stub->GetModelInfo(&context, {}, &model);
    if (!status.ok()) return Fail(status);
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = true;
    options.always_print_primitive_fields = true;  // a zero is a figure too
    options.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(model, &json, options).ok()) return 1;
    std::cout << json;
    return 0;
  }
  auto checker = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(health_service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = checker->Check(&context, request, &response);
  if (!status.ok()) return Fail(status);
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()) << "\n";
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
