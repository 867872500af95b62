// One Generate stream: parses and validates the request, submits it to the engine, then turns the
// engine's events into responses, one write at a time.
//
// Threads: the scheduler only signals that events are ready (a flag under a short lock, and a task
// posted to the response writers); serialising and every call into gRPC happen on a writer thread
// or a gRPC thread, never the scheduler's, and never under a lock. Whoever holds the write claim is
// the only one touching the response, the metrics timer and the call; the claim passes from the
// writer task to OnWriteDone and back, and is never released after Finish.
#pragma once

#include "grpcpp/grpcpp.h"
#include "grpcpp/support/byte_buffer.h"

namespace mambaserve {

class MambaServeService;

// Creates the reactor for one Generate call; gRPC owns it from here (it deletes itself in OnDone).
grpc::ServerWriteReactor<grpc::ByteBuffer>* StartGenerate(MambaServeService* service,
                                                          grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* request);

}  // namespace mambaserve
