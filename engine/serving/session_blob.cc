#include "engine/serving/session_blob.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "mambaserve/v1/session_blob.pb.h"

namespace mambaserve {
namespace {

constexpr char kConvState[] = "conv_state";
constexpr char kSsmState[] = "ssm_state";
constexpr char kFloat32[] = "F32";
// What a version-1 blob (a fixed binary layout) started with.
constexpr char kVersion1Magic[4] = {'M', 'S', 'S', 'B'};

absl::Status NotABlob(const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("session blob is not valid: ", why));
}

std::string ShapeText(const SessionStateShape& s) {
  return absl::StrCat("conv [", s.n_layers, ", ", s.d_inner, ", ", s.d_conv - 1, "] + ssm [",
                      s.n_layers, ", ", s.d_inner, ", ", s.d_state, "]");
}

void AddTensor(v1::SessionBlob* blob, const char* name, std::initializer_list<int64_t> shape,
               std::span<const uint8_t> data) {
  v1::StateTensor* tensor = blob->add_state();
  tensor->set_name(name);
  tensor->set_dtype(kFloat32);
  for (int64_t d : shape) tensor->add_shape(d);
  tensor->set_data(data.data(), data.size());
}

// The tensor named `name`: float32 with three positive dimensions whose product matches its data.
absl::StatusOr<const v1::StateTensor*> FindTensor(const v1::SessionBlob& blob, const char* name) {
  for (const v1::StateTensor& tensor : blob.state()) {
    if (tensor.name() != name) continue;
    if (tensor.dtype() != kFloat32) {
      return NotABlob(absl::StrCat(name, " has dtype \"", tensor.dtype(), "\"; only F32 is read"));
    }
    if (tensor.shape_size() != 3) {
      return NotABlob(absl::StrCat(name, " has ", tensor.shape_size(), " dimensions, not 3"));
    }
    uint64_t elements = 1;
    for (int64_t d : tensor.shape()) {
      if (d <= 0 || d > (int64_t{1} << 20))
        return NotABlob(absl::StrCat(name, " has dimension ", d));
      elements *= static_cast<uint64_t>(d);
    }
    if (elements * 4 != tensor.data().size()) {
      return NotABlob(absl::StrCat(name, " holds ", tensor.data().size(),
                                   " bytes; its shape needs ", elements * 4));
    }
    return &tensor;
  }
  return NotABlob(absl::StrCat("the state has no ", name, " tensor"));
}

// zlib restarts the CRC when given a null buffer (which an empty vector's data() may be).
uLong Extend(uLong crc, const void* data, size_t size) {
  return size == 0 ? crc : crc32_z(crc, static_cast<const Bytef*>(data), size);
}

// Everything the blob carries, in a fixed byte order, to `feed` (data, size): what the checksum and
// the HMAC cover, so that any change to the contents is caught.
template <typename Feed>
void FeedContents(const std::string& fingerprint, int64_t length,
                  std::span<const int32_t> pending_tokens, std::span<const uint8_t> state,
                  Feed&& feed) {
  feed(fingerprint.data(), fingerprint.size());
  uint8_t bytes[8];
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(length) >> (8 * i));
  }
  feed(bytes, 8);
  for (int32_t t : pending_tokens) {
    for (int i = 0; i < 4; ++i) {
      bytes[i] = static_cast<uint8_t>(static_cast<uint32_t>(t) >> (8 * i));
    }
    feed(bytes, 4);
  }
  feed(state.data(), state.size());
}

// The field is serialized after everything else, so a truncated blob loses it and is refused too.
uint32_t ContentChecksum(const std::string& fingerprint, int64_t length,
                         std::span<const int32_t> pending_tokens, std::span<const uint8_t> state) {
  uLong crc = crc32_z(0, nullptr, 0);
  FeedContents(fingerprint, length, pending_tokens, state,
               [&](const void* data, size_t size) { crc = Extend(crc, data, size); });
  return static_cast<uint32_t>(crc);
}

// HMAC-SHA256 of the contents under `key` (OpenSSL's EVP_MAC); empty if OpenSSL cannot make one,
// which matches no blob.
std::string ContentHmac(const std::string& key, const std::string& fingerprint, int64_t length,
                        std::span<const int32_t> pending_tokens, std::span<const uint8_t> state) {
  std::unique_ptr<EVP_MAC, decltype(&EVP_MAC_free)> mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr),
                                                        &EVP_MAC_free);
  std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx(
      mac ? EVP_MAC_CTX_new(mac.get()) : nullptr, &EVP_MAC_CTX_free);
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                               OSSL_PARAM_construct_end()};
  if (!ctx || EVP_MAC_init(ctx.get(), reinterpret_cast<const unsigned char*>(key.data()),
                           key.size(), params) != 1) {
    return "";
  }
  bool ok = true;
  FeedContents(fingerprint, length, pending_tokens, state, [&](const void* data, size_t size) {
    ok &= EVP_MAC_update(ctx.get(), static_cast<const unsigned char*>(data), size) == 1;
  });
  unsigned char out[EVP_MAX_MD_SIZE];
  size_t out_size = 0;
  if (!ok || EVP_MAC_final(ctx.get(), out, &out_size, sizeof(out)) != 1) return "";
  return std::string(reinterpret_cast<const char*>(out), out_size);
}

// The two tensors into blob->shape and blob->state (conv then ssm, the backends' slot layout).
absl::Status ReadState(const v1::SessionBlob& message, SessionBlob* blob) {
  if (message.state_size() != 2) {
    return NotABlob(absl::StrCat("the state has ", message.state_size(), " tensors, not 2"));
  }
  ASSIGN_OR_RETURN(const v1::StateTensor* conv, FindTensor(message, kConvState));
  ASSIGN_OR_RETURN(const v1::StateTensor* ssm, FindTensor(message, kSsmState));
  const auto& c = conv->shape();
  const auto& s = ssm->shape();
  if (c[0] != s[0] || c[1] != s[1]) {
    return NotABlob("conv_state and ssm_state disagree on the layer count or d_inner");
  }
  blob->shape = {c[0], c[1], c[2] + 1, s[2]};
  blob->state.reserve(conv->data().size() + ssm->data().size());
  blob->state.insert(blob->state.end(), conv->data().begin(), conv->data().end());
  blob->state.insert(blob->state.end(), ssm->data().begin(), ssm->data().end());
  return absl::OkStatus();
}

}  // namespace

SessionStateShape SessionStateShape::Of(const ModelConfig& config) {
  return {config.n_layers, config.d_inner, config.d_conv, config.d_state};
}

uint32_t Crc32(std::span<const uint8_t> bytes) {
  return static_cast<uint32_t>(Extend(crc32_z(0, nullptr, 0), bytes.data(), bytes.size()));
}

std::string EncodeSessionBlob(const std::string& model_fingerprint, const SessionStateShape& shape,
                              int64_t length, std::span<const int32_t> pending_tokens,
                              std::span<const uint8_t> state, const std::string& key) {
  v1::SessionBlob blob;
  blob.set_format_version(kSessionBlobVersion);
  blob.set_model_fingerprint(model_fingerprint);
  blob.set_length(length);
  blob.mutable_pending_tokens()->Add(pending_tokens.begin(), pending_tokens.end());
  if (!state.empty()) {
    const auto conv = state.first(static_cast<size_t>(shape.conv_bytes()));
    const auto ssm = state.subspan(conv.size());
    AddTensor(&blob, kConvState, {shape.n_layers, shape.d_inner, shape.d_conv - 1}, conv);
    AddTensor(&blob, kSsmState, {shape.n_layers, shape.d_inner, shape.d_state}, ssm);
  }
  blob.set_crc32(ContentChecksum(model_fingerprint, length, pending_tokens, state));
  if (!key.empty()) {
    blob.set_hmac_sha256(ContentHmac(key, model_fingerprint, length, pending_tokens, state));
  }
  return blob.SerializeAsString();
}

std::string EncodeSessionBlob(const SessionBlob& blob, const std::string& key) {
  return EncodeSessionBlob(blob.model_fingerprint, blob.shape, blob.length, blob.pending_tokens,
                           blob.state, key);
}

size_t EncodedSessionBlobBytes(size_t fingerprint_bytes, size_t pending_tokens,
                               size_t state_bytes) {
  // Field tags, lengths, the HMAC and the two tensors' names, dtypes and shapes take well under
  // 256 bytes;
  // a pending token is a varint of at most 10 bytes (negative int32s are sign-extended).
  return 256 + fingerprint_bytes + 10 * pending_tokens + state_bytes;
}

absl::StatusOr<SessionBlob> DecodeSessionBlob(std::span<const uint8_t> bytes,
                                              const std::string& key) {
  if (bytes.size() >= sizeof(kVersion1Magic) &&
      std::memcmp(bytes.data(), kVersion1Magic, sizeof(kVersion1Magic)) == 0) {
    return NotABlob(absl::StrCat(
        "it is in format version 1 (the fixed binary layout of earlier releases); this server "
        "reads version ",
        kSessionBlobVersion, ": export the session again from a server of this release"));
  }
  v1::SessionBlob message;
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      !message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return NotABlob(
        "it does not parse as a mambaserve.v1.SessionBlob (not an exported session, "
        "or truncated)");
  }
  if (message.format_version() != kSessionBlobVersion) {
    return NotABlob(absl::StrCat("format version ", message.format_version(),
                                 " is not supported (this server reads version ",
                                 kSessionBlobVersion, ")"));
  }
  SessionBlob blob;
  blob.model_fingerprint = message.model_fingerprint();
  blob.length = message.length();
  blob.pending_tokens.assign(message.pending_tokens().begin(), message.pending_tokens().end());
  if (message.state_size() > 0) RETURN_IF_ERROR(ReadState(message, &blob));
  if (ContentChecksum(blob.model_fingerprint, blob.length, blob.pending_tokens, blob.state) !=
      message.crc32()) {
    return NotABlob("checksum mismatch (the bytes were altered or truncated)");
  }
  if (!key.empty()) {
    if (message.hmac_sha256().empty()) {
      return absl::PermissionDeniedError(
          "session blob is not signed; this server imports only blobs signed with its "
          "--session-blob-key (exported by a server of this cluster)");
    }
    const std::string want =
        ContentHmac(key, blob.model_fingerprint, blob.length, blob.pending_tokens, blob.state);
    if (want.empty() || want.size() != message.hmac_sha256().size() ||
        CRYPTO_memcmp(want.data(), message.hmac_sha256().data(), want.size()) != 0) {
      return absl::PermissionDeniedError(
          "session blob's signature does not match this server's --session-blob-key (altered, or "
          "exported by a server with another key)");
    }
  }
  return blob;
}

absl::Status CheckSessionBlobFits(const SessionBlob& blob, const std::string& model_fingerprint,
                                  const SessionStateShape& shape, int64_t vocab_size,
                                  size_t max_pending_tokens) {
  if (blob.model_fingerprint != model_fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("session was exported from a different model (fingerprint ",
                     blob.model_fingerprint, "); this server runs model ", model_fingerprint,
                     ": import it into a replica of that model"));
  }
  if (!blob.state.empty() && !(blob.shape == shape)) {
    return absl::InvalidArgumentError(absl::StrCat("session blob holds a state of ",
                                                   ShapeText(blob.shape),
                                                   "; this model's state is ", ShapeText(shape)));
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
