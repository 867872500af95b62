#include "engine/session_store/stored_sessions.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "engine/base/log.h"
#include "engine/base/status_macros.h"

namespace mambaserve {
namespace {

using Clock = std::chrono::steady_clock;

absl::string_view Name(const std::string& id) { return SessionManager::SessionName(id); }

bool Committed(const GenerationEvent& event) {
  return event.status.ok() && event.finish_reason != FinishReason::kCancelled &&
         event.finish_reason != FinishReason::kNone;
}

void EndStream(GenerationStream& stream, absl::Status status) {
  GenerationEvent event;
  event.final = true;
  event.status = std::move(status);
  stream.Push(std::move(event));
}

// A stored blob this replica cannot use: another model's, a bad signature, a shape that does not
// fit. The store holds it, but it is not this session's data any more.
absl::Status Unreadable(const std::string& id, const absl::Status& why) {
  return absl::DataLossError(absl::StrCat("session \"", Name(id),
                                          "\" in the session store cannot be used by this "
                                          "replica: ",
                                          why.message()));
}

std::string RandomHex() {
  std::random_device random;
  return absl::StrCat(absl::Hex(random(), absl::kZeroPad8), absl::Hex(random(), absl::kZeroPad8));
}

}  // namespace

StoredSessions::StoredSessions(StoredSessionsOptions options, Scheduler* scheduler,
                               std::string fingerprint)
    : options_(std::move(options)),
      scheduler_(scheduler),
      sessions_(scheduler->sessions()),
      fingerprint_(std::move(fingerprint)),
      store_(options_.store),
      token_prefix_(RandomHex()),
      workers_(std::max(1, options_.workers)) {
  renewer_ = std::thread([this] { RenewLeases(); });
}

StoredSessions::~StoredSessions() { Stop(); }

void StoredSessions::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !renewer_.joinable()) return;
    stopping_ = true;
  }
  changed_.notify_all();
  workers_.Stop();
  if (renewer_.joinable()) renewer_.join();
}

std::string StoredSessions::NewToken() {
  std::lock_guard<std::mutex> lock(mu_);
  return absl::StrCat(token_prefix_, "-", ++token_counter_);
}

absl::Status StoredSessions::Counted(absl::Status status) {
  if (!status.ok() && !absl::IsAborted(status) && !absl::IsAlreadyExists(status) &&
      !absl::IsNotFound(status)) {
    errors_.fetch_add(1);
  }
  return status;
}

SessionStoreStats StoredSessions::Stats() const {
  SessionStoreStats s;
  s.loads = loads_.load();
  s.writes = writes_.load();
  s.write_bytes = write_bytes_.load();
  s.write_seconds = static_cast<double>(write_micros_.load()) * 1e-6;
  s.lease_conflicts = lease_conflicts_.load();
  s.errors = errors_.load();
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, version] : versions_) s.unstored_sessions += version.stored ? 0 : 1;
  return s;
}

// --- Leases.

absl::Status StoredSessions::AcquireLease(const std::string& id, const std::string& token,
                                          const GenerationStream* stream) {
  const auto give_up = Clock::now() + options_.lease_wait;
  for (;;) {
    absl::Status taken = store_.AcquireLease(id, token, options_.lease_ttl);
    if (!absl::IsAborted(taken)) {
      if (taken.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        leases_[id] = token;
      }
      return Counted(taken);
    }
    // Only a holder storing its finished turn is waited for (or one that has just let go); a
    // turn running elsewhere is a conflict at once.
    absl::StatusOr<RedisSessionStore::LeaseState> state = store_.GetLeaseState(id);
    if (!state.ok() || *state == RedisSessionStore::LeaseState::kTurnRunning ||
        Clock::now() >= give_up) {
      lease_conflicts_.fetch_add(1);
      return taken;
    }
    if (*state == RedisSessionStore::LeaseState::kFree) continue;
    if (stream != nullptr && stream->cancelled()) {
      return absl::CancelledError("cancelled while waiting for the session's previous turn");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void StoredSessions::ReleaseLease(const std::string& id, const std::string& token) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto held = leases_.find(id); held != leases_.end() && held->second == token) {
      leases_.erase(held);
    }
  }
  // A lease that cannot be released expires on its own.
  if (absl::Status released = Counted(store_.ReleaseLease(id, token)); !released.ok()) {
    LogWarning("session store: releasing the lease on \"", Name(id), "\": ", released.message());
  }
}

void StoredSessions::RenewLeases() {
  const auto period = std::max(options_.lease_ttl / 3, std::chrono::milliseconds(1));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    changed_.wait_for(lock, period);
    if (stopping_) break;
    const absl::flat_hash_map<std::string, std::string> held = leases_;
    lock.unlock();
    for (const auto& [id, token] : held) {
      absl::Status renewed = Counted(store_.RenewLease(id, token, options_.lease_ttl));
      if (!renewed.ok()) LogWarning("session store: ", renewed.message());
    }
    lock.lock();
  }
}

// --- Loading and storing versions.

absl::Status StoredSessions::SyncFromStore(const std::string& id, bool held_here) {
  absl::StatusOr<std::optional<StoredSessionHeader>> header = store_.ReadHeader(id);
  if (absl::IsNotFound(header.status())) {
    // Deleted through another replica: this one's copy goes too.
    if (held_here) sessions_.Delete(id).IgnoreError();
    std::lock_guard<std::mutex> lock(mu_);
    versions_.erase(id);
    return header.status();
  }
  RETURN_IF_ERROR(Counted(header.status()));
  if (!header->has_value()) {
    if (!held_here) {
      // The local NOT_FOUND names why a session this replica knew is gone (deleted, evicted).
      absl::StatusOr<SessionInfo> local = sessions_.Get(id);
      return absl::NotFoundError(
          absl::StrCat(local.status().message(), " (nor is it in the session store)"));
    }
    // Only this replica has it (the store forgot it: expired or flushed): store it again later.
    std::lock_guard<std::mutex> lock(mu_);
    versions_[id].stored = false;
    return absl::OkStatus();
  }
  if ((*header)->fingerprint != fingerprint_) {
    errors_.fetch_add(1);
    return Unreadable(
        id, absl::FailedPreconditionError(
                absl::StrCat("it was written for another model (fingerprint ",
                             (*header)->fingerprint, "; this replica serves ", fingerprint_, ")")));
  }
  if (held_here) {
    std::lock_guard<std::mutex> lock(mu_);
    auto local = versions_.find(id);
    // Current, or ahead with turns the store has not seen yet.
    if (local != versions_.end() && local->second.number >= (*header)->version) {
      return absl::OkStatus();
    }
  }
  absl::StatusOr<std::optional<StoredSession>> stored = store_.Read(id);
  RETURN_IF_ERROR(Counted(stored.status()));
  if (!stored->has_value()) {
    return absl::NotFoundError(
        absl::StrCat("session \"", Name(id), "\" was deleted from the session store"));
  }
  const std::string& blob = (*stored)->blob;
  absl::StatusOr<SessionInfo> imported = sessions_.Import(
      id, {reinterpret_cast<const uint8_t*>(blob.data()), blob.size()}, /*replace=*/true);
  if (!imported.ok()) {
    if (absl::IsResourceExhausted(imported.status()) ||
        absl::IsFailedPrecondition(imported.status())) {
      return imported.status();  // this replica is full, or the session is busy here
    }
    errors_.fetch_add(1);
    return Unreadable(id, imported.status());
  }
  loads_.fetch_add(1);
  std::lock_guard<std::mutex> lock(mu_);
  versions_[id] = {(*stored)->header.version, true};
  return absl::OkStatus();
}

absl::StatusOr<std::string> StoredSessions::EncodeHeld(const std::string& id) {
  // A resident state is read on the scheduler thread; the encoding happens here.
  ASSIGN_OR_RETURN(SessionSnapshot snapshot,
                   scheduler_->CallOnSchedulerThread<SessionSnapshot>(
                       [&](SessionManager& sessions) { return sessions.Snapshot(id); }));
  return sessions_.EncodeSnapshot(snapshot);
}

absl::Status StoredSessions::StoreVersion(const std::string& id, const std::string& token) {
  int64_t version = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto held = versions_.find(id);
    if (held == versions_.end()) return absl::NotFoundError("no version of it is held here");
    version = held->second.number;
  }
  ASSIGN_OR_RETURN(SessionInfo info, sessions_.Get(id));
  ASSIGN_OR_RETURN(std::string blob, EncodeHeld(id));
  const auto blob_bytes = static_cast<int64_t>(blob.size());
  const auto start = Clock::now();
  absl::Status written = Counted(store_.Write(
      id, token, {{version, info.length, fingerprint_}, std::move(blob)}, options_.session_ttl));
  if (!written.ok()) return written;
  write_micros_.fetch_add(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count());
  writes_.fetch_add(1);
  write_bytes_.fetch_add(blob_bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (auto held = versions_.find(id); held != versions_.end() && held->second.number == version) {
    held->second.stored = true;
  }
  return absl::OkStatus();
}

// --- Turns.

absl::Status StoredSessions::Submit(GenerationRequest request) {
  auto owned = std::make_shared<GenerationRequest>(std::move(request));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
  }
  if (!workers_.Post([this, owned] { RunTurn(owned); })) {
    return absl::UnavailableError("the server is shutting down");
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> StoredSessions::BeginTurn(const std::string& id, const std::string& token,
                                               const GenerationStream& stream) {
  const bool held_here = sessions_.Get(id).ok();
  absl::Status leased = AcquireLease(id, token, &stream);
  if (absl::IsAborted(leased) || absl::IsCancelled(leased)) return leased;
  absl::Status synced = leased.ok() ? SyncFromStore(id, held_here) : leased;
  if (synced.ok()) return true;
  if (leased.ok()) ReleaseLease(id, token);
  if (absl::IsUnavailable(synced) || absl::IsDeadlineExceeded(synced)) {
    if (held_here) {
      LogWarning("session store unreachable; session \"", Name(id),
                 "\" continues from this replica's copy: ", synced.message());
      std::lock_guard<std::mutex> lock(mu_);
      versions_.try_emplace(id);
      return false;
    }
    return absl::UnavailableError(absl::StrCat("session \"", Name(id),
                                               "\" is not held by this replica and the session "
                                               "store cannot be reached: ",
                                               synced.message()));
  }
  return synced;
}

void StoredSessions::RunTurn(std::shared_ptr<GenerationRequest> request) {
  const std::string id = request->session_id;
  const std::shared_ptr<GenerationStream> stream = request->stream;
  const std::string token = NewToken();
  absl::StatusOr<bool> leased = BeginTurn(id, token, *stream);
  if (!leased.ok()) {
    EndStream(*stream, leased.status());
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++turns_finishing_;
  }
  // Called on the scheduler thread: the store write goes to a worker.
  stream->InterceptFinal([this, id, token, leased = *leased, stream](GenerationEvent event) {
    auto owned = std::make_shared<GenerationEvent>(std::move(event));
    if (!workers_.Post([this, id, token, leased, stream, owned] {
          FinishTurn(id, token, leased, stream, std::move(*owned));
        })) {
      // Stopping: the turn is not stored now; Flush or the lease's expiry covers it.
      stream->Push(std::move(*owned));
      TurnFinished();
    }
  });
  if (absl::Status submitted = scheduler_->Submit(std::move(*request)); !submitted.ok()) {
    stream->InterceptFinal(nullptr);
    if (*leased) ReleaseLease(id, token);
    TurnFinished();
    EndStream(*stream, std::move(submitted));
  }
}

void StoredSessions::FinishTurn(const std::string& id, const std::string& token, bool leased,
                                const std::shared_ptr<GenerationStream>& stream,
                                GenerationEvent event) {
  const bool committed = Committed(event);
  if (committed) {
    std::lock_guard<std::mutex> lock(mu_);
    Version& version = versions_[id];
    ++version.number;
    version.stored = false;
  }
  std::string holder = token;  // the lease's token, which MarkStoring changes
  auto store = [&]() -> absl::Status {
    if (!committed) return absl::OkStatus();
    if (!leased) return absl::UnavailableError("the session store was unreachable at its start");
    absl::Status stored = StoreVersion(id, holder);
    if (!stored.ok()) {
      LogWarning("session store: turn of \"", Name(id), "\" not stored: ", stored.message());
    }
    return stored;
  };
  if (options_.sync) {
    if (absl::Status stored = store(); !stored.ok()) {
      event.status = absl::UnavailableError(
          absl::StrCat("the turn completed on this replica, but the session store did not "
                       "acknowledge it (",
                       stored.message(),
                       "); the session keeps it here and stores it later, so do not resend it"));
    }
    if (leased) ReleaseLease(id, token);
    stream->Push(std::move(event));
  } else {
    // The client may send its next turn as soon as it has this one's end: it waits for the write
    // (on any replica) instead of being refused.
    if (committed && leased && Counted(store_.MarkStoring(id, token)).ok()) {
      holder = RedisSessionStore::StoringToken(token);
      std::lock_guard<std::mutex> lock(mu_);
      leases_[id] = holder;
    }
    stream->Push(std::move(event));
    store().IgnoreError();  // logged and counted; retried at the next turn or Flush
    if (leased) ReleaseLease(id, holder);
  }
  TurnFinished();
}

void StoredSessions::TurnFinished() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    --turns_finishing_;
  }
  changed_.notify_all();
}

// --- Session operations.

absl::StatusOr<SessionInfo> StoredSessions::AddToStore(absl::StatusOr<SessionInfo> made,
                                                       std::string blob) {
  if (!made.ok()) return made;
  absl::Status created = Counted(store_.Create(
      made->id, {{0, made->length, fingerprint_}, std::move(blob)}, options_.session_ttl));
  if (!created.ok()) {
    sessions_.Delete(made->id).IgnoreError();
    return created;
  }
  std::lock_guard<std::mutex> lock(mu_);
  versions_[made->id] = {0, true};
  return made;
}

absl::StatusOr<SessionInfo> StoredSessions::Create(const std::string& id) {
  absl::StatusOr<SessionInfo> made = sessions_.Create(id);
  if (!made.ok()) return made;
  ASSIGN_OR_RETURN(std::string blob, sessions_.EncodeSnapshot(SessionSnapshot{}));
  return AddToStore(std::move(made), std::move(blob));
}

absl::StatusOr<SessionInfo> StoredSessions::Import(const std::string& id,
                                                   std::span<const uint8_t> blob) {
  // The blob passed every check here (and its signature, with a key): it is stored as sent.
  return AddToStore(sessions_.Import(id, blob),
                    std::string(reinterpret_cast<const char*>(blob.data()), blob.size()));
}

absl::StatusOr<SessionInfo> StoredSessions::Fork(const std::string& source, const std::string& id) {
  // The source's lease, as a turn takes it: the fork waits while the source's previous turn is
  // being stored (write-behind, perhaps on another replica), so it starts from the newest version
  // and not the one before, and it is refused while a turn runs on the source elsewhere, as a busy
  // session is here. With the store away, Refresh lets this replica's copy answer, as before.
  const std::string token = NewToken();
  const absl::Status leased = AcquireLease(source, token, nullptr);
  if (absl::IsAborted(leased)) return leased;
  auto fork = [&]() -> absl::StatusOr<SessionInfo> {
    RETURN_IF_ERROR(Refresh(source));
    ASSIGN_OR_RETURN(SessionInfo made,
                     scheduler_->CallOnSchedulerThread<SessionInfo>(
                         [&](SessionManager& sessions) { return sessions.Fork(source, id); }));
    absl::StatusOr<std::string> blob = EncodeHeld(made.id);
    if (!blob.ok()) {
      sessions_.Delete(made.id).IgnoreError();
      return blob.status();
    }
    return AddToStore(made, *std::move(blob));
  };
  absl::StatusOr<SessionInfo> made = fork();
  if (leased.ok()) ReleaseLease(source, token);
  return made;
}

absl::Status StoredSessions::Delete(const std::string& id) {
  const std::string token = NewToken();
  RETURN_IF_ERROR(AcquireLease(id, token, nullptr));
  // Here first: a session busy here is refused before the store loses it.
  const absl::Status here = sessions_.Delete(id);
  if (!here.ok() && !absl::IsNotFound(here)) {
    ReleaseLease(id, token);
    return here;
  }
  absl::StatusOr<bool> in_store = store_.Delete(id, token, options_.session_ttl);
  ReleaseLease(id, token);
  RETURN_IF_ERROR(Counted(in_store.status()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    versions_.erase(id);
  }
  return absl::IsNotFound(here) && *in_store ? absl::OkStatus() : here;
}

absl::Status StoredSessions::Refresh(const std::string& id) {
  const bool held_here = sessions_.Get(id).ok();
  absl::Status synced = SyncFromStore(id, held_here);
  if (held_here && (absl::IsUnavailable(synced) || absl::IsDeadlineExceeded(synced))) {
    return absl::OkStatus();  // this replica's copy answers while the store is away
  }
  return synced;
}

absl::Status StoredSessions::Flush(Clock::time_point deadline) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_until(lock, deadline, [&] { return turns_finishing_ == 0; });
  }
  std::vector<std::string> unstored;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, version] : versions_) {
      if (!version.stored) unstored.push_back(id);
    }
  }
  int failed = 0;
  absl::Status last;
  for (const std::string& id : unstored) {
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("the session store flush ran out of time with sessions unstored"));
    }
    if (!sessions_.Get(id).ok()) {  // gone here (deleted, expired): nothing to store
      std::lock_guard<std::mutex> lock(mu_);
      versions_.erase(id);
      continue;
    }
    const std::string token = NewToken();
    absl::Status stored = AcquireLease(id, token, nullptr);
    if (stored.ok()) {
      stored = StoreVersion(id, token);
      ReleaseLease(id, token);
    }
    if (!stored.ok()) {
      ++failed;
      last = stored;
      LogWarning("session store: flushing \"", Name(id), "\": ", stored.message());
    }
  }
  if (failed > 0) {
    return absl::Status(last.code(),
                        absl::StrCat(failed, " of ", unstored.size(),
                                     " sessions were not stored; the last: ", last.message()));
  }
  return absl::OkStatus();
}

}  // namespace mambaserve
