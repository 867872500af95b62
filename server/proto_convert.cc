#include "server/proto_convert.h"

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/tokenizer/utf8.h"

namespace mambaserve {
namespace {

constexpr char kSessionHeader[] = "x-session-id";

v1::StateLocation ToProto(StateLocation location) {
  switch (location) {
    case StateLocation::kNone:
      return v1::STATE_LOCATION_NONE;
    case StateLocation::kDevice:
      return v1::STATE_LOCATION_DEVICE;
    case StateLocation::kHost:
      return v1::STATE_LOCATION_HOST;
  }
  return v1::STATE_LOCATION_UNSPECIFIED;
}

absl::StatusOr<SamplingParams> ToSamplingParams(const v1::SamplingParams& p,
                                                int default_max_tokens) {
  SamplingParams s;
  s.max_tokens = p.has_max_tokens() ? p.max_tokens() : default_max_tokens;
  if (p.has_temperature()) s.temperature = p.temperature();
  if (p.has_top_k()) s.top_k = p.top_k();
  if (p.has_top_p()) s.top_p = p.top_p();
  if (p.has_min_p()) s.min_p = p.min_p();
  if (p.has_repetition_penalty()) s.repetition_penalty = p.repetition_penalty();
  if (p.has_presence_penalty()) s.presence_penalty = p.presence_penalty();
  if (p.has_frequency_penalty()) s.frequency_penalty = p.frequency_penalty();
  if (p.has_seed()) s.seed = p.seed();
  for (int i = 0; i < p.stop_size(); ++i) {
    if (absl::Status utf8 = ValidateUtf8(p.stop(i)); !utf8.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "]: ", utf8.message()));
    }
    s.stop.push_back(p.stop(i));
  }
  s.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  s.ignore_eos = p.ignore_eos();
  s.logprobs = p.logprobs();
  if (p.has_prompt_logprobs()) s.prompt_logprobs = p.prompt_logprobs();
  return s;
}

absl::StatusOr<std::vector<int32_t>> TextPrompt(const std::string& text, const Tokenizer* tokenizer,
                                                int64_t vocab, const ServiceLimits& limits) {
  if (text.empty()) return absl::InvalidArgumentError("prompt is empty: set text or tokens");
  if (tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        "this model has no tokenizer.json, so text prompts are not supported; send tokens instead");
  }
  if (text.size() > static_cast<size_t>(limits.max_prompt_tokens) * 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt text is ", text.size(), " bytes; far over the limit of ",
                     limits.max_prompt_tokens, " tokens (--max-prompt-tokens)"));
  }
  auto ids = tokenizer->Encode(text);
  if (!ids.ok())
    return absl::InvalidArgumentError(absl::StrCat("prompt text: ", ids.status().message()));
  if (ids->empty()) return absl::InvalidArgumentError("prompt text encodes to no tokens");
  // A tokenizer.json may define more tokens (added ones) than the model has embedding rows.
  for (int32_t id : *ids) {
    if (id >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("prompt text encodes to token id ", id,
                                                     ", which this model does not have (vocab ",
                                                     vocab, ")"));
    }
  }
  return *std::move(ids);
}

absl::StatusOr<std::vector<int32_t>> IdPrompt(const v1::TokenIds& tokens, int64_t vocab) {
  if (tokens.ids().empty())
    return absl::InvalidArgumentError("prompt is empty: tokens.ids has no ids");
  for (int i = 0; i < tokens.ids_size(); ++i) {
    const int32_t id = tokens.ids(i);
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokens.ids[", i, "] = ", id, " is not a token id: must be in [0, ", vocab, ")"));
    }
  }
  return std::vector<int32_t>(tokens.ids().begin(), tokens.ids().end());
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return v1::FINISH_REASON_UNSPECIFIED;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void ToProto(const SessionInfo& info, v1::Session* out) {
  out->set_session_id(info.id);
  out->set_length_tokens(info.length);
  out->set_created_unix_ms(info.created_unix_ms);
  out->set_last_used_unix_ms(info.last_used_unix_ms);
  out->set_state_bytes(info.state_bytes);
  out->set_location(ToProto(info.location));
  out->set_busy(info.busy);
}

absl::StatusOr<std::string> RequestSessionId(const grpc::CallbackServerContext& context,
                                             const std::string& field) {
  std::string id = field;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find(kSessionHeader); it != metadata.end()) {
    const std::string header(it->second.data(), it->second.size());
    if (!id.empty() && id != header) {
      return absl::InvalidArgumentError(
          absl::StrCat("session_id \"", id, "\" and x-session-id metadata \"", header,
                       "\" disagree; send one, or the same id in both"));
    }
    id = header;
  }
  if (!id.empty()) RETURN_IF_ERROR(SessionManager::ValidateSessionId(id));
  return id;
}

absl::StatusOr<GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                      std::string session_id, const Engine& engine,
                                                      const ServiceLimits& limits) {
  GenerationRequest out;
  out.session_id = std::move(session_id);
  const int64_t vocab = engine.info().config.vocab_size;
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      ASSIGN_OR_RETURN(out.prompt, TextPrompt(request.text(), engine.tokenizer(), vocab, limits));
      break;
    }
    case v1::GenerateRequest::kTokens: {
      ASSIGN_OR_RETURN(out.prompt, IdPrompt(request.tokens(), vocab));
      break;
    }
    default:
      return absl::InvalidArgumentError("prompt is empty: set text or tokens");
  }
  if (static_cast<int64_t>(out.prompt.size()) > limits.max_prompt_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt has ", out.prompt.size(), " tokens; this server accepts at most ",
                     limits.max_prompt_tokens,
                     " (--max-prompt-tokens): shorten it or split it over session turns"));
  }
  ASSIGN_OR_RETURN(out.sampling, ToSamplingParams(request.sampling(), limits.default_max_tokens));
  RETURN_IF_ERROR(ValidateSamplingParams(out.sampling, vocab, limits.sampling));
  if (!out.sampling.stop.empty() && engine.tokenizer() == nullptr) {
    return absl::FailedPreconditionError(
        "stop strings need a tokenizer; this model has none (use stop_token_ids)");
  }
  return out;
}

namespace {

void ToProto(const SampledToken& sampled, const Tokenizer* tokenizer, v1::TokenLogprobs* out) {
  out->set_token_id(sampled.token);
  out->set_logprob(sampled.logprob);
  for (const TokenLogprob& alt : sampled.top) {
    v1::TokenLogprob* top = out->add_top();
    top->set_token_id(alt.token);
    top->set_logprob(alt.logprob);
    if (tokenizer != nullptr) {
      if (auto s = tokenizer->TokenString(alt.token)) top->set_token(*s);
    }
  }
}

}  // namespace

void ToProto(const GenerationEvent& event, const Tokenizer* tokenizer, v1::GenerateResponse* out) {
  out->Clear();
  out->set_text(event.text);
  for (int32_t id : event.token_ids) out->add_token_ids(id);
  for (const SampledToken& sampled : event.logprobs)
    ToProto(sampled, tokenizer, out->add_logprobs());
  for (const SampledToken& scored : event.prompt_logprobs)
    ToProto(scored, tokenizer, out->add_prompt_logprobs());
  if (!event.prompt_logprobs.empty()) out->set_prompt_logprobs_offset(event.prompt_logprobs_begin);
  if (event.final) {
    out->set_finish_reason(ToProto(event.finish_reason));
    v1::Usage* usage = out->mutable_usage();
    usage->set_prompt_tokens(event.usage.prompt_tokens);
    usage->set_generated_tokens(event.usage.generated_tokens);
    usage->set_session_length(event.usage.session_length);
    usage->set_time_to_first_token_s(event.usage.time_to_first_token_s);
  }
}

}  // namespace mambaserve
