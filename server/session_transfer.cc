#include "server/session_transfer.h"

#include <algorithm>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/base/log.h"
#include "engine/serving/session_blob.h"
#include "server/proto_convert.h"
#include "server/service.h"

namespace mambaserve {
namespace {

// Writes one blob as consecutive chunks; the engine hands it the blob on one of its workers. Each
// write is started by whoever holds the stream: the engine's callback first, then OnWriteDone.
class ExportReactor final : public grpc::ServerWriteReactor<v1::ExportSessionResponse> {
 public:
  ExportReactor(std::string id, std::string fingerprint)
      : id_(std::move(id)), fingerprint_(std::move(fingerprint)) {}

  void Send(absl::StatusOr<std::string> blob) {
    if (!blob.ok()) {
      Finish(ToGrpcStatus(blob.status()));
      return;
    }
    blob_ = *std::move(blob);
    LogInfo("ExportSession session=", id_, " bytes=", blob_.size());
    WriteNext();
  }

  void OnWriteDone(bool ok) override {
    { std::lock_guard<std::recursive_mutex> lock(start_write_mu_); }  // see WriteNext
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client stopped reading the export"));
      return;
    }
    WriteNext();
  }

  void OnDone() override { delete this; }

 private:
  void WriteNext() {
    response_.Clear();
    if (offset_ == 0) {
      response_.set_model_fingerprint(fingerprint_);
      response_.set_format_version(kSessionBlobVersion);
      response_.set_blob_bytes(blob_.size());
    }
    const size_t n = std::min(kSessionBlobChunkBytes, blob_.size() - offset_);
    response_.set_blob_chunk(blob_.data() + offset_, n);
    offset_ += n;
    if (offset_ == blob_.size()) {
      StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      // Held across StartWrite, taken first in OnWriteDone: what this writer did (gRPC's own
      // bookkeeping inside StartWrite included) happens before the next chunk is prepared, in a
      // way ThreadSanitizer can see (gRPC's own ordering is inside an uninstrumented library).
      std::lock_guard<std::recursive_mutex> lock(start_write_mu_);
      StartWrite(&response_);
    }
  }

  const std::string id_;
  const std::string fingerprint_;
  std::string blob_;
  size_t offset_ = 0;
  v1::ExportSessionResponse response_;
  std::recursive_mutex start_write_mu_;
};

// Collects the chunks until the client half-closes, then hands the whole blob to the engine. The
// engine checks the blob; the reactor only bounds how much it collects.
class ImportReactor final : public grpc::ServerReadReactor<v1::ImportSessionRequest> {
 public:
  ImportReactor(const MambaServeService* service, grpc::CallbackServerContext* context,
                Engine* engine, Caller caller, v1::Session* response)
      : service_(service),
        context_(context),
        engine_(engine),
        caller_(std::move(caller)),
        response_(response) {}

  void Start() { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // half-closed: the blob is complete
      Import();
      return;
    }
    if (absl::Status s = Take(); !s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Take() {
    if (first_) {
      first_ = false;
      absl::StatusOr<std::string> id =
          service_->CallerSessionId(*context_, caller_, request_.session_id());
      if (!id.ok()) return id.status();
      id_ = *std::move(id);
    } else if (!request_.session_id().empty() && caller_.Scoped(request_.session_id()) != id_) {
      return absl::InvalidArgumentError(
          "session_id changed between ImportSession messages; set it in the first one only");
    }
    const size_t limit = engine_->info().max_session_blob_bytes;
    if (blob_.size() + request_.blob_chunk().size() > limit) {
      return absl::InvalidArgumentError(
          absl::StrCat("session blob is over ", limit,
                       " bytes, more than any session of this model encodes to"));
    }
    blob_ += request_.blob_chunk();
    return absl::OkStatus();
  }

  void Import() {
    // A cancelled call ends the stream too: what arrived may look whole but was not meant to be
    // imported.
    if (context_->IsCancelled()) {
      Finish(grpc::Status::CANCELLED);
      return;
    }
    if (first_) {  // no message at all: the id can only come from the metadata
      absl::StatusOr<std::string> id = service_->CallerSessionId(*context_, caller_, "");
      if (!id.ok()) {
        Finish(ToGrpcStatus(id.status()));
        return;
      }
      id_ = *std::move(id);
    }
    // An empty name gets a random one in the caller's scope. blob_ lives until the call
    // finishes, which is after the callback.
    if (id_.empty()) id_ = caller_.scope();
    engine_->ImportSession(id_, {reinterpret_cast<const uint8_t*>(blob_.data()), blob_.size()},
                           [this](absl::StatusOr<SessionInfo> info) {
                             if (!info.ok()) {
                               Finish(ToGrpcStatus(info.status()));
                               return;
                             }
                             LogInfo("ImportSession session=", info->id, " length=", info->length,
                                     " bytes=", blob_.size());
                             ToProto(caller_.Unscoped(*info), response_);
                             Finish(grpc::Status::OK);
                           });
  }

  const MambaServeService* const service_;
  grpc::CallbackServerContext* const context_;
  Engine* const engine_;
  const Caller caller_;
  v1::Session* const response_;
  v1::ImportSessionRequest request_;
  bool first_ = true;
  std::string id_;
  std::string blob_;
};

// For calls refused before they start.
template <typename Reactor>
class Refused final : public Reactor {
 public:
  explicit Refused(const absl::Status& status) { this->Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<v1::ExportSessionResponse>* StartExportSession(
    MambaServeService* service, grpc::CallbackServerContext* context,
    const v1::ExportSessionRequest* request) {
  using Writer = grpc::ServerWriteReactor<v1::ExportSessionResponse>;
  absl::StatusOr<Caller> caller = service->Authenticate(*context);
  if (!caller.ok()) return new Refused<Writer>(caller.status());
  absl::StatusOr<Engine*> engine = service->ReadyEngine();
  if (!engine.ok()) return new Refused<Writer>(engine.status());
  absl::StatusOr<std::string> id =
      service->CallerSessionId(*context, *caller, request->session_id());
  if (!id.ok()) return new Refused<Writer>(id.status());
  auto* reactor = new ExportReactor(*id, (*engine)->info().fingerprint);
  (*engine)->ExportSession(
      *id, [reactor](absl::StatusOr<std::string> blob) { reactor->Send(std::move(blob)); });
  return reactor;
}

grpc::ServerReadReactor<v1::ImportSessionRequest>* StartImportSession(
    MambaServeService* service, grpc::CallbackServerContext* context, v1::Session* response) {
  using Reader = grpc::ServerReadReactor<v1::ImportSessionRequest>;
  absl::StatusOr<Caller> caller = service->Authenticate(*context);
  if (!caller.ok()) return new Refused<Reader>(caller.status());
  absl::StatusOr<Engine*> engine = service->AcceptingEngine("import the session");
  if (!engine.ok()) return new Refused<Reader>(engine.status());
  auto* reactor = new ImportReactor(service, context, *engine, *std::move(caller), response);
  reactor->Start();
  return reactor;
}

}  // namespace mambaserve
