#include "engine/session_manager.h"

#include <chrono>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/session_blob.h"
#include "engine/status_macros.h"

namespace mambaserve {
namespace {

constexpr size_t kMaxTombstones = 100000;
constexpr size_t kMaxSessionIdBytes = 128;

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

const char* StateLocationName(StateLocation location) {
  switch (location) {
    case StateLocation::kNone: return "none";
    case StateLocation::kDevice: return "device";
    case StateLocation::kHost: return "host";
  }
  return "?";
}

SessionManager::SessionManager(Backend* backend, std::string model_fingerprint, SessionManagerOptions options)
    : backend_(backend),
      fingerprint_(std::move(model_fingerprint)),
      options_(std::move(options)),
      state_bytes_(backend->config().state_bytes()),
      slot_owner_(backend->num_slots(), SlotUse::kFree),
      id_rng_(std::random_device{}()) {
  if (!options_.now_ms) options_.now_ms = SystemNowMs;
}

absl::StatusOr<int> SessionManager::FreeSlot() {
  for (size_t i = 0; i < slot_owner_.size(); ++i) {
    if (slot_owner_[i] == SlotUse::kFree) return static_cast<int>(i);
  }
  // Park the least recently used idle resident session.
  Session* lru = nullptr;
  for (auto& [id, s] : sessions_) {
    if (s.location == StateLocation::kDevice && !s.in_turn && (lru == nullptr || s.last_used_ms < lru->last_used_ms)) {
      lru = &s;
    }
  }
  if (lru == nullptr) return absl::ResourceExhaustedError("every state slot is held by a running sequence");
  const int slot = lru->slot;
  Park(*lru);
  EnforceHostBudget();
  return slot;
}

void SessionManager::Park(Session& s) {
  std::vector<uint8_t> state(state_bytes_);
  absl::Status read = backend_->ReadSlot(s.slot, state);
  slot_owner_[s.slot] = SlotUse::kFree;  // free either way
  s.slot = -1;
  if (!read.ok()) {
    s.location = StateLocation::kNone;
    Drop(s.id, absl::StrCat("its state could not be saved to host memory (", read.message(), ")"));
    return;
  }
  s.host_state = std::move(state);
  s.location = StateLocation::kHost;
  parked_bytes_ += state_bytes_;
  ++parked_total_;
}

void SessionManager::EnforceHostBudget() {
  while (parked_bytes_ > options_.host_budget_bytes) {
    Session* oldest = nullptr;
    for (auto& [id, s] : sessions_) {
      if (s.location == StateLocation::kHost && !s.busy && (oldest == nullptr || s.last_used_ms < oldest->last_used_ms)) {
        oldest = &s;
      }
    }
    if (oldest == nullptr) return;
    ++evicted_total_;
    Drop(oldest->id, absl::StrCat("it was evicted: its parked state exceeded the host-memory budget of ",
                                  options_.host_budget_bytes / (1024 * 1024),
                                  " MiB (least recently used first); create a new session or import an export"));
  }
}

void SessionManager::Drop(std::string id, std::string reason) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  Session& s = it->second;
  if (s.location == StateLocation::kHost) parked_bytes_ -= state_bytes_;
  if (s.location == StateLocation::kDevice && !s.in_turn) slot_owner_[s.slot] = SlotUse::kFree;
  sessions_.erase(it);
  if (tombstones_.size() >= kMaxTombstones) {
    tombstones_.erase(tombstone_order_.front());
    tombstone_order_.pop_front();
  }
  if (tombstones_.insert_or_assign(id, std::move(reason)).second) tombstone_order_.push_back(id);
}

absl::StatusOr<int> SessionManager::AcquireSlot() {
  ASSIGN_OR_RETURN(int slot, FreeSlot());
  slot_owner_[slot] = SlotUse::kRunning;
  ++slots_running_;
  return slot;
}

void SessionManager::ReleaseSlot(int slot) {
  slot_owner_[slot] = SlotUse::kFree;
  --slots_running_;
}

absl::Status SessionManager::ValidateSessionId(const std::string& id) {
  if (id.empty() || id.size() > kMaxSessionIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("session id must be 1 to ", kMaxSessionIdBytes, " characters"));
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '_' || c == '.' || c == ':';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("session id \"", id, "\" has a character outside [A-Za-z0-9._:-]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SessionManager::Session*> SessionManager::Find(const std::string& id) {
  auto it = sessions_.find(id);
  if (it != sessions_.end()) return &it->second;
  if (auto t = tombstones_.find(id); t != tombstones_.end()) {
    return absl::NotFoundError(absl::StrCat("session \"", id, "\" no longer exists: ", t->second));
  }
  return absl::NotFoundError(absl::StrCat("session \"", id, "\" does not exist (create it with CreateSession)"));
}

absl::StatusOr<const SessionManager::Session*> SessionManager::Find(const std::string& id) const {
  auto found = const_cast<SessionManager*>(this)->Find(id);
  if (!found.ok()) return found.status();
  return *found;
}

SessionInfo SessionManager::Info(const Session& s) const {
  SessionInfo info;
  info.id = s.id;
  info.length = s.length;
  info.created_unix_ms = s.created_ms;
  info.last_used_unix_ms = s.last_used_ms;
  info.location = s.location;
  info.state_bytes = s.location == StateLocation::kNone ? 0 : state_bytes_;
  info.busy = s.busy;
  return info;
}

absl::StatusOr<SessionInfo> SessionManager::Create(const std::string& requested_id) {
  std::string id = requested_id;
  if (id.empty()) {
    do {
      id = absl::StrCat("s-", absl::Hex(id_rng_(), absl::kZeroPad16));
    } while (sessions_.contains(id));
  }
  RETURN_IF_ERROR(ValidateSessionId(id));
  if (sessions_.contains(id)) return absl::AlreadyExistsError(absl::StrCat("session \"", id, "\" already exists"));
  if (static_cast<int64_t>(sessions_.size()) >= options_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server holds its maximum of ", options_.max_sessions, " sessions; delete some first"));
  }
  tombstones_.erase(id);
  Session& s = sessions_[id];
  s.id = id;
  s.created_ms = s.last_used_ms = Now();
  return Info(s);
}

absl::StatusOr<SessionInfo> SessionManager::Get(const std::string& id) const {
  ASSIGN_OR_RETURN(const Session* s, Find(id));
  return Info(*s);
}

std::vector<SessionInfo> SessionManager::List() const {
  std::vector<SessionInfo> out;
  out.reserve(sessions_.size());
  for (const auto& [id, s] : sessions_) out.push_back(Info(s));
  return out;
}

absl::Status SessionManager::Delete(const std::string& id) {
  ASSIGN_OR_RETURN(Session * s, Find(id));
  if (s->busy) {
    return absl::FailedPreconditionError(
        absl::StrCat("session \"", id, "\" has a request in flight; cancel it or wait for it to finish"));
  }
  Drop(id, "it was deleted");
  return absl::OkStatus();
}

absl::StatusOr<std::string> SessionManager::Export(const std::string& id) {
  ASSIGN_OR_RETURN(Session * s, Find(id));
  if (s->busy) {
    return absl::FailedPreconditionError(
        absl::StrCat("session \"", id, "\" has a request in flight; export it between turns"));
  }
  SessionBlob blob;
  blob.model_fingerprint = fingerprint_;
  blob.length = s->length;
  blob.pending_tokens = s->pending_tokens;
  if (s->location == StateLocation::kDevice) {
    blob.state.resize(state_bytes_);
    RETURN_IF_ERROR(backend_->ReadSlot(s->slot, blob.state));
  } else if (s->location == StateLocation::kHost) {
    blob.state = s->host_state;
  }
  return EncodeSessionBlob(blob);
}

absl::StatusOr<SessionInfo> SessionManager::Import(const std::string& requested_id, std::span<const uint8_t> bytes) {
  ASSIGN_OR_RETURN(SessionBlob blob, DecodeSessionBlob(bytes));
  RETURN_IF_ERROR(CheckSessionBlobFits(blob, fingerprint_, state_bytes_, backend_->config().vocab_size));
  ASSIGN_OR_RETURN(SessionInfo info, Create(requested_id));
  Session& s = sessions_[info.id];
  s.length = blob.length;
  s.pending_tokens = std::move(blob.pending_tokens);
  if (!blob.state.empty()) {
    s.host_state = std::move(blob.state);
    s.location = StateLocation::kHost;
    parked_bytes_ += state_bytes_;
    EnforceHostBudget();
    if (!sessions_.contains(info.id)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the imported state does not fit the host-memory budget of ",
                       options_.host_budget_bytes / (1024 * 1024), " MiB"));
    }
  }
  return Info(s);
}

absl::Status SessionManager::Reserve(const std::string& id) {
  ASSIGN_OR_RETURN(Session * s, Find(id));
  if (s->busy) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session \"", id, "\" already has a request in flight; send one request at a time per session"));
  }
  s->busy = true;
  return absl::OkStatus();
}

void SessionManager::CancelReservation(const std::string& id) {
  auto it = sessions_.find(id);
  if (it != sessions_.end()) it->second.busy = false;
}

absl::StatusOr<SessionTurn> SessionManager::BeginTurn(const std::string& id) {
  ASSIGN_OR_RETURN(Session * s, Find(id));
  SessionTurn turn;
  if (s->location == StateLocation::kDevice) {
    turn.slot = s->slot;
  } else {
    s->in_turn = true;  // not a parking candidate while FreeSlot looks for room
    absl::StatusOr<int> slot = FreeSlot();
    s->in_turn = false;
    if (!slot.ok()) return slot.status();
    turn.slot = *slot;
    if (s->location == StateLocation::kHost) {
      RETURN_IF_ERROR(backend_->WriteSlot(turn.slot, s->host_state));
      s->host_state = {};
      parked_bytes_ -= state_bytes_;
      ++restored_total_;
    } else {
      turn.start_fresh = true;
    }
    s->location = StateLocation::kDevice;
    s->slot = turn.slot;
  }
  slot_owner_[turn.slot] = SlotUse::kRunning;
  ++slots_running_;
  s->in_turn = true;
  turn.length = s->length;
  turn.pending_tokens = std::move(s->pending_tokens);
  s->pending_tokens.clear();
  return turn;
}

void SessionManager::EndTurn(const std::string& id, int64_t length, std::vector<int32_t> pending, bool state_valid) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  Session& s = it->second;
  s.busy = false;
  if (s.in_turn) {
    s.in_turn = false;
    slot_owner_[s.slot] = SlotUse::kSession;
    --slots_running_;
  }
  s.length = length;
  s.pending_tokens = std::move(pending);
  s.last_used_ms = Now();
  if (!state_valid) {
    Drop(id, "its state was lost to a backend error during its last request");
  } else if (s.pending_tokens.size() > kMaxPendingTokens) {
    // Turns cancelled before their prompt ran leave it pending; a client repeating that must not
    // grow server memory without bound.
    Drop(id, absl::StrCat("it accumulated more than ", kMaxPendingTokens,
                          " unconsumed prompt tokens from cancelled turns"));
  }
}

int SessionManager::ExpireIdle() {
  if (options_.ttl_ms <= 0) return 0;
  const int64_t cutoff = Now() - options_.ttl_ms;
  std::vector<std::string> expired;
  for (const auto& [id, s] : sessions_) {
    if (!s.busy && s.last_used_ms < cutoff) expired.push_back(id);
  }
  for (const std::string& id : expired) {
    Drop(id, absl::StrCat("it expired after ", options_.ttl_ms / 1000, " s idle (the server's session TTL)"));
  }
  expired_total_ += static_cast<int64_t>(expired.size());
  return static_cast<int>(expired.size());
}

int SessionManager::slots_idle() const {
  int n = 0;
  for (SlotUse u : slot_owner_) n += u == SlotUse::kSession;
  return n;
}

int SessionManager::num_parked() const {
  int n = 0;
  for (const auto& [id, s] : sessions_) n += s.location == StateLocation::kHost;
  return n;
}

}  // namespace mambaserve
