// ExportSession and ImportSession: a session blob streamed in chunks, so that a state of any size
// (38 MiB for Falcon-Mamba-7B) crosses gRPC's per-message limits, for this server and for any
// client on default channel options.
#pragma once

#include <grpcpp/grpcpp.h>

#include "mambaserve/v1/mambaserve.grpc.pb.h"

namespace mambaserve {

class MambaServeService;

// Chunks of at most this many bytes, well under gRPC's default 4 MiB receive limit.
inline constexpr size_t kSessionBlobChunkBytes = size_t{1} << 20;

grpc::ServerWriteReactor<v1::ExportSessionResponse>* StartExportSession(
    MambaServeService* service, grpc::CallbackServerContext* context,
    const v1::ExportSessionRequest* request);

grpc::ServerReadReactor<v1::ImportSessionRequest>* StartImportSession(
    MambaServeService* service, grpc::CallbackServerContext* context, v1::Session* response);

}  // namespace mambaserve
