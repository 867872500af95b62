// The portable form of a session: what ExportSession returns and ImportSession accepts. The bytes
// are a serialized mambaserve.v1.SessionBlob (proto/mambaserve/v1/session_blob.proto): format
// version, model fingerprint, conversation length, pending tokens (generated tokens the state has
// not consumed yet; the next turn feeds them first) and the state as named float32 tensors with
// their shapes, under a CRC-32.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"

namespace mambaserve {

inline constexpr uint32_t kSessionBlobVersion = 2;

// The state's tensors: conv [layers][d_inner][d_conv - 1] then ssm [layers][d_inner][d_state],
// float32, in the backends' slot layout.
struct SessionStateShape {
  int64_t n_layers = 0;
  int64_t d_inner = 0;
  int64_t d_conv = 0;
  int64_t d_state = 0;

  static SessionStateShape Of(const ModelConfig& config);
  int64_t conv_bytes() const { return 4 * n_layers * d_inner * (d_conv - 1); }
  int64_t ssm_bytes() const { return 4 * n_layers * d_inner * d_state; }
  bool operator==(const SessionStateShape&) const = default;
};

struct SessionBlob {
  std::string model_fingerprint;
  int64_t length = 0;  // tokens in the conversation so far
  std::vector<int32_t> pending_tokens;
  SessionStateShape shape;     // zero for a session never used
  std::vector<uint8_t> state;  // conv then ssm bytes; empty for a session never used
};

// `state` is empty (a session never used) or shape.conv_bytes() + shape.ssm_bytes() bytes. With a
// `key`, the blob carries an HMAC-SHA256 of its contents under it.
std::string EncodeSessionBlob(const std::string& model_fingerprint, const SessionStateShape& shape,
                              int64_t length, std::span<const int32_t> pending_tokens,
                              std::span<const uint8_t> state, const std::string& key = "");
std::string EncodeSessionBlob(const SessionBlob& blob, const std::string& key = "");

// A blob-signing key needs at least this many bytes of secret.
inline constexpr size_t kMinSessionBlobKeyBytes = 32;
// An upper bound on an encoded blob's size: what ImportSession may be sent at most.
size_t EncodedSessionBlobBytes(size_t fingerprint_bytes, size_t pending_tokens, size_t state_bytes);

// InvalidArgument, with the reason, for bytes that are not a blob, a version this server does not
// read, tensors that do not fit together, or a checksum mismatch. With a `key`, also checks the
// HMAC (in constant time): PermissionDenied for a blob without one or with one that does not match.
absl::StatusOr<SessionBlob> DecodeSessionBlob(std::span<const uint8_t> bytes,
                                              const std::string& key = "");

// Checks a decoded blob against the serving model: fingerprint (FailedPrecondition on mismatch),
// state shape, plausible length, finite state, pending tokens in the vocabulary and at most
// `max_pending_tokens` of them (InvalidArgument).
absl::Status CheckSessionBlobFits(const SessionBlob& blob, const std::string& model_fingerprint,
                                  const SessionStateShape& shape, int64_t vocab_size,
                                  size_t max_pending_tokens);

// zlib's CRC-32 (the check value of "123456789" is 0xCBF43926).
uint32_t Crc32(std::span<const uint8_t> bytes);

}  // namespace mambaserve
