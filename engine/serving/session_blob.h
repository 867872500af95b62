// The portable form of a session: what ExportSession returns and ImportSession accepts.
//
// Layout (all integers little-endian):
//   magic "MSSB" | u32 format version (1) | u32 fingerprint bytes | fingerprint |
//   u64 session length (tokens) | u32 pending token count | i32 pending tokens... |
//   u64 state bytes | state (Backend slot layout) | u32 CRC-32 of every byte before it
// Pending tokens are generated tokens the state has not consumed yet; the next turn feeds them
// first.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mambaserve {

inline constexpr uint32_t kSessionBlobVersion = 1;
// Pending tokens the format allows; a server accepts at most its prompt limit
// (CheckSessionBlobFits).
inline constexpr size_t kMaxPendingTokens = 1 << 20;

struct SessionBlob {
  std::string model_fingerprint;
  int64_t length = 0;  // tokens in the conversation so far
  std::vector<int32_t> pending_tokens;
  std::vector<uint8_t> state;  // config.state_bytes() bytes; empty for a session never used
};

std::string EncodeSessionBlob(const SessionBlob& blob);
std::string EncodeSessionBlob(const std::string& model_fingerprint, int64_t length,
                              std::span<const int32_t> pending_tokens,
                              std::span<const uint8_t> state);
// The size of an encoded blob: what ImportSession may be sent at most for a given model.
size_t EncodedSessionBlobBytes(size_t fingerprint_bytes, size_t pending_tokens, size_t state_bytes);

// InvalidArgument for a truncated, corrupt (checksum) or unknown-version blob, with the reason.
absl::StatusOr<SessionBlob> DecodeSessionBlob(std::span<const uint8_t> bytes);

// Checks a decoded blob against the serving model: fingerprint (FailedPrecondition on mismatch),
// state size, plausible length, finite state, pending tokens in the vocabulary and at most
// `max_pending_tokens` of them (InvalidArgument).
absl::Status CheckSessionBlobFits(const SessionBlob& blob, const std::string& model_fingerprint,
                                  int64_t state_bytes, int64_t vocab_size,
                                  size_t max_pending_tokens);

uint32_t Crc32(std::span<const uint8_t> bytes);

}  // namespace mambaserve
