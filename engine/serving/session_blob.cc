#include "engine/serving/session_blob.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace mambaserve {
namespace {

constexpr char kMagic[4] = {'M', 'S', 'S', 'B'};
constexpr uint64_t kMaxStateBytes = uint64_t{1} << 34;  // far above any real model's slot

template <typename T>
void Put(std::string& out, T value) {
  uint8_t bytes[sizeof(T)];
  for (size_t i = 0; i < sizeof(T); ++i)
    bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(value) >> (8 * i));
  out.append(reinterpret_cast<const char*>(bytes), sizeof(T));
}

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  template <typename T>
  bool Get(T* value) {
    if (bytes_.size() - pos_ < sizeof(T)) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(bytes_[pos_ + i]) << (8 * i);
    *value = static_cast<T>(v);
    pos_ += sizeof(T);
    return true;
  }
  bool Take(uint64_t n, std::span<const uint8_t>* out) {
    if (bytes_.size() - pos_ < n) return false;
    *out = bytes_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  size_t pos() const { return pos_; }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}

absl::Status Corrupt(const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("session blob is not valid: ", why));
}

}  // namespace

uint32_t Crc32(std::span<const uint8_t> bytes) {
  static const std::array<uint32_t, 256> table = MakeCrcTable();
  uint32_t c = 0xFFFFFFFFu;
  for (uint8_t b : bytes) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::string EncodeSessionBlob(const std::string& model_fingerprint, int64_t length,
                              std::span<const int32_t> pending_tokens,
                              std::span<const uint8_t> state) {
  std::string out;
  out.reserve(
      EncodedSessionBlobBytes(model_fingerprint.size(), pending_tokens.size(), state.size()));
  out.append(kMagic, sizeof(kMagic));
  Put<uint32_t>(out, kSessionBlobVersion);
  Put<uint32_t>(out, static_cast<uint32_t>(model_fingerprint.size()));
  out += model_fingerprint;
  Put<uint64_t>(out, static_cast<uint64_t>(length));
  Put<uint32_t>(out, static_cast<uint32_t>(pending_tokens.size()));
  for (int32_t t : pending_tokens) Put<uint32_t>(out, static_cast<uint32_t>(t));
  Put<uint64_t>(out, state.size());
  out.append(reinterpret_cast<const char*>(state.data()), state.size());
  Put<uint32_t>(out, Crc32({reinterpret_cast<const uint8_t*>(out.data()), out.size()}));
  return out;
}

std::string EncodeSessionBlob(const SessionBlob& blob) {
  return EncodeSessionBlob(blob.model_fingerprint, blob.length, blob.pending_tokens, blob.state);
}

size_t EncodedSessionBlobBytes(size_t fingerprint_bytes, size_t pending_tokens,
                               size_t state_bytes) {
  // magic, version, fingerprint length + bytes, length, pending count + tokens, state size + bytes,
  // CRC
  return sizeof(kMagic) + 4 + 4 + fingerprint_bytes + 8 + 4 + 4 * pending_tokens + 8 + state_bytes +
         4;
}

absl::StatusOr<SessionBlob> DecodeSessionBlob(std::span<const uint8_t> bytes) {
  if (bytes.size() < sizeof(kMagic) + 4 || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return Corrupt("it does not start with the \"MSSB\" magic (not an exported session)");
  }
  Reader r(bytes.subspan(sizeof(kMagic)));
  uint32_t version = 0;
  r.Get(&version);
  if (version != kSessionBlobVersion) {
    return Corrupt(absl::StrCat("format version ", version,
                                " is not supported (this server reads version ",
                                kSessionBlobVersion, ")"));
  }
  if (bytes.size() < sizeof(kMagic) + 8) return Corrupt("truncated");
  const auto body = bytes.first(bytes.size() - 4);
  uint32_t stored_crc = 0;
  Reader(bytes.last(4)).Get(&stored_crc);
  if (Crc32(body) != stored_crc)
    return Corrupt("checksum mismatch (the bytes were altered or truncated)");

  SessionBlob blob;
  uint32_t fp_len = 0, pending = 0;
  uint64_t length = 0, state_len = 0;
  std::span<const uint8_t> fp, state;
  if (!r.Get(&fp_len) || !r.Take(fp_len, &fp)) return Corrupt("truncated in the model fingerprint");
  blob.model_fingerprint.assign(fp.begin(), fp.end());
  if (!r.Get(&length) || !r.Get(&pending)) return Corrupt("truncated in the header");
  blob.length = static_cast<int64_t>(length);
  for (uint32_t i = 0; i < pending; ++i) {
    uint32_t t = 0;
    if (!r.Get(&t)) return Corrupt("truncated in the pending tokens");
    blob.pending_tokens.push_back(static_cast<int32_t>(t));
  }
  if (!r.Get(&state_len) || state_len > kMaxStateBytes || !r.Take(state_len, &state)) {
    return Corrupt("truncated in the state");
  }
  blob.state.assign(state.begin(), state.end());
  if (sizeof(kMagic) + r.pos() != body.size()) return Corrupt("trailing bytes after the state");
  return blob;
}

absl::Status CheckSessionBlobFits(const SessionBlob& blob, const std::string& model_fingerprint,
                                  int64_t state_bytes, int64_t vocab_size,
                                  size_t max_pending_tokens) {
  if (blob.model_fingerprint != model_fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("session was exported from a different model (fingerprint ",
                     blob.model_fingerprint, "); this server runs model ", model_fingerprint,
                     ": import it into a replica of that model"));
  }
  if (!blob.state.empty() && static_cast<int64_t>(blob.state.size()) != state_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("session blob holds ", blob.state.size(),
                                                   " state bytes; this model's state is ",
                                                   state_bytes, " bytes"));
  }
  if (blob.state.empty() && blob.length != 0) {
    return absl::InvalidArgumentError("session blob has a length but no state");
  }
  // Bounds a hostile blob: lengths stay far from overflow, pending tokens stay a prompt's worth,
  // and the state holds only finite numbers (NaN logits would poison sampling for that session).
  if (blob.length < 0 || blob.length > (int64_t{1} << 53)) {
    return absl::InvalidArgumentError(
        absl::StrCat("session blob has an implausible length ", blob.length));
  }
  // A pending token is fed before the next turn's prompt: more than a prompt's worth would let one
  // import put a prefill of any size in front of every other request.
  max_pending_tokens = std::min(max_pending_tokens, kMaxPendingTokens);
  if (blob.pending_tokens.size() > max_pending_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("session blob has ", blob.pending_tokens.size(),
                                                   " pending tokens; at most ", max_pending_tokens,
                                                   " (the server's prompt limit) are accepted"));
  }
  for (size_t i = 0; i + 4 <= blob.state.size(); i += 4) {
    uint32_t bits;
    std::memcpy(&bits, blob.state.data() + i, 4);
    if ((bits & 0x7f800000u) == 0x7f800000u) {
      return absl::InvalidArgumentError(
          absl::StrCat("session blob state holds a NaN or Inf at byte ", i));
    }
  }
  for (int32_t t : blob.pending_tokens) {
    if (t < 0 || t >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("session blob has pending token ", t, " outside the vocabulary"));
    }
  }
  return absl::OkStatus();
}

}  // namespace mambaserve
