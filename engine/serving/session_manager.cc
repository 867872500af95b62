#include "engine/serving/session_manager.h"

#include <algorithm>
#include <chrono>
#include <new>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace mambaserve {
namespace {

constexpr size_t kMaxTombstones = 100000;
constexpr size_t kMaxSessionIdBytes = 128;

// A state-sized host buffer; ResourceExhausted, not a crash, when host memory runs out.
absl::StatusOr<std::shared_ptr<std::vector<uint8_t>>> NewStateBuffer(int64_t bytes) {
  try {
    return std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(bytes));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of host memory for a ", bytes, "-byte session state"));
  }
}

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct SessionManager::Session {
  std::string id;
  int64_t length = 0;
  int64_t created_ms = 0;
  int64_t last_used_ms = 0;
  StateLocation location = StateLocation::kNone;
  int slot = -1;                                           // kDevice
  std::shared_ptr<const std::vector<uint8_t>> host_state;  // kHost
  std::vector<int32_t> pending_tokens;
  bool busy = false;     // a request naming it was accepted and has not ended
  bool in_turn = false;  // that request was admitted: it holds the slot as a running sequence
  // Why its state is gone, when that happened while a request was reserved for it: the session
  // stays until that request ends (so its reservation never lands on a re-created namesake).
  std::string lost;
  // While in a turn: what the session was before it, put back if the turn does not complete.
  struct BeforeTurn {
    int64_t length = 0;
    std::vector<int32_t> pending_tokens;
    std::shared_ptr<const std::vector<uint8_t>> state;  // null: it had no state
  };
  std::optional<BeforeTurn> before_turn;
  SessionList::iterator use_pos;  // in by_use_
  SessionList* lru = nullptr;     // resident_lru_, parked_lru_ or none
  SessionList::iterator lru_pos;
};

const char* StateLocationName(StateLocation location) {
  switch (location) {
    case StateLocation::kNone:
      return "none";
    case StateLocation::kDevice:
      return "device";
    case StateLocation::kHost:
      return "host";
  }
  return "?";
}

SessionManager::SessionManager(Backend* backend, std::string model_fingerprint,
                               SessionManagerOptions options)
    : backend_(backend),
      fingerprint_(std::move(model_fingerprint)),
      options_(std::move(options)),
      state_bytes_(backend->config().state_bytes()),
      state_shape_(SessionStateShape::Of(backend->config())),
      slot_owner_(backend->num_slots(), SlotUse::kFree) {
  if (!options_.now_ms) options_.now_ms = SystemNowMs;
}

SessionManager::~SessionManager() = default;

absl::Status SessionManager::ValidateSessionId(const std::string& id) {
  if (id.empty() || id.size() > kMaxSessionIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("session id must be 1 to ", kMaxSessionIdBytes, " characters"));
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("session id \"", id, "\" has a character outside [A-Za-z0-9._:-]"));
    }
  }
  return absl::OkStatus();
}

// --- Bookkeeping (mu_ held).

absl::string_view SessionManager::SessionName(absl::string_view id) {
  const size_t slash = id.rfind('/');
  return slash == absl::string_view::npos ? id : id.substr(slash + 1);
}

std::string SessionManager::OwnerScope(absl::string_view id) {
  const size_t slash = id.rfind('/');
  return slash == absl::string_view::npos ? "" : std::string(id.substr(0, slash + 1));
}

absl::StatusOr<SessionManager::Session*> SessionManager::Find(const std::string& id) const {
  if (auto it = sessions_.find(id); it != sessions_.end()) return it->second.get();
  if (auto t = tombstones_.find(id); t != tombstones_.end()) {
    return absl::NotFoundError(
        absl::StrCat("session \"", SessionName(id), "\" no longer exists: ", t->second.reason));
  }
  return absl::NotFoundError(absl::StrCat("session \"", SessionName(id),
                                          "\" does not exist (create it with CreateSession)"));
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

void SessionManager::Relist(Session& s, SessionList* list) {
  if (s.lru != nullptr) s.lru->erase(s.lru_pos);
  s.lru = list;
  if (list != nullptr) s.lru_pos = list->insert(list->end(), &s);
}

void SessionManager::Touch(Session& s) {
  s.last_used_ms = Now();
  by_use_.splice(by_use_.end(), by_use_, s.use_pos);
  if (s.lru == &resident_lru_) resident_lru_.splice(resident_lru_.end(), resident_lru_, s.lru_pos);
}

void SessionManager::SetParkedState(Session& s, std::shared_ptr<const std::vector<uint8_t>> state) {
  s.host_state = std::move(state);
  s.location = StateLocation::kHost;
  ++gauges_.parked;
  gauges_.parked_bytes += state_bytes_;
  Relist(s, &parked_lru_);
}

void SessionManager::ClearParkedState(Session& s) {
  s.host_state.reset();
  --gauges_.parked;
  gauges_.parked_bytes -= state_bytes_;
  Relist(s, nullptr);
}

absl::StatusOr<int> SessionManager::FreeSlot() {
  // O(slots), a fixed number set at start; never O(sessions).
  for (size_t i = 0; i < slot_owner_.size(); ++i) {
    if (slot_owner_[i] == SlotUse::kFree) return static_cast<int>(i);
  }
  if (resident_lru_.empty()) {
    return absl::UnavailableError("every state slot is held by a running sequence");
  }
  Session& lru = *resident_lru_.front();
  const int slot = lru.slot;
  Park(lru);
  EnforceHostBudget();
  return slot;
}

void SessionManager::Park(Session& s) {
  absl::StatusOr<std::shared_ptr<std::vector<uint8_t>>> state = NewStateBuffer(state_bytes_);
  const absl::Status read = state.ok() ? backend_->ReadSlot(s.slot, **state) : state.status();
  slot_owner_[s.slot] = SlotUse::kFree;  // free either way
  --gauges_.slots_idle;
  s.slot = -1;
  if (!read.ok()) {
    s.location = StateLocation::kNone;
    Relist(s, nullptr);
    std::string why =
        absl::StrCat("its state could not be saved to host memory (", read.message(), ")");
    if (s.busy) {
      s.lost = std::move(why);  // dropped when its waiting request ends
    } else {
      Drop(s, std::move(why));
    }
    return;
  }
  SetParkedState(s, *std::move(state));
  ++gauges_.parked_total;
}

void SessionManager::EnforceHostBudget() {
  while (gauges_.parked_bytes > options_.host_budget_bytes) {
    // Busy ones (a request is queued for them) are skipped: at most the admission queue's worth.
    auto victim = std::find_if(parked_lru_.begin(), parked_lru_.end(),
                               [](const Session* s) { return !s->busy; });
    if (victim == parked_lru_.end()) return;
    ++gauges_.evicted_total;
    Drop(**victim,
         absl::StrCat("it was evicted: its parked state exceeded the host-memory budget of ",
                      options_.host_budget_bytes / (1024 * 1024),
                      " MiB (least recently used first); create a new session or import an "
                      "export"));
  }
}

void SessionManager::Drop(Session& s, std::string reason) {
  if (s.location == StateLocation::kHost) ClearParkedState(s);
  if (s.location == StateLocation::kDevice && !s.in_turn) {
    slot_owner_[s.slot] = SlotUse::kFree;
    --gauges_.slots_idle;
  }
  Relist(s, nullptr);
  by_use_.erase(s.use_pos);
  const std::string id = s.id;
  sessions_.erase(id);  // destroys s
  --gauges_.sessions;
  if (const std::string scope = OwnerScope(id); !scope.empty()) {
    if (--sessions_per_owner_[scope] == 0) sessions_per_owner_.erase(scope);
  }

  if (auto t = tombstones_.find(id); t != tombstones_.end()) {
    tombstone_order_.erase(t->second.order);
    tombstones_.erase(t);
  } else if (tombstones_.size() >= kMaxTombstones) {
    tombstones_.erase(tombstone_order_.front());
    tombstone_order_.pop_front();
  }
  tombstones_[id] = {std::move(reason), tombstone_order_.insert(tombstone_order_.end(), id)};
}

std::string SessionManager::NewSessionId() const {
  // 128 bits from the OS: ids a client cannot guess, so another client's session is not reachable
  // by enumerating them.
  std::random_device random;
  std::string id = "s-";
  for (int i = 0; i < 4; ++i) absl::StrAppend(&id, absl::Hex(random(), absl::kZeroPad8));
  return id;
}

absl::StatusOr<SessionInfo> SessionManager::AddLocked(const std::string& requested_id,
                                                      SessionSnapshot* contents) {
  std::string id = requested_id;
  if (SessionName(id).empty()) {  // the scope, if any, stays in front of a random name
    const std::string prefix = id;
    do {
      id = prefix + NewSessionId();
    } while (sessions_.contains(id));
  }
  RETURN_IF_ERROR(ValidateSessionId(std::string(SessionName(id))));
  if (sessions_.contains(id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("session \"", SessionName(id), "\" already exists"));
  }
  if (static_cast<int64_t>(sessions_.size()) >= options_.max_sessions) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server holds its maximum of ", options_.max_sessions, " sessions; delete some first"));
  }
  const std::string scope = OwnerScope(id);
  if (!scope.empty() && options_.max_sessions_per_owner > 0 &&
      sessions_per_owner_[scope] >= options_.max_sessions_per_owner) {
    return absl::ResourceExhaustedError(
        absl::StrCat("you hold ", options_.max_sessions_per_owner,
                     " sessions, the most one principal may (--max-sessions-per-principal); "
                     "delete some first"));
  }
  if (!scope.empty()) ++sessions_per_owner_[scope];
  if (auto t = tombstones_.find(id); t != tombstones_.end()) {
    tombstone_order_.erase(t->second.order);
    tombstones_.erase(t);
  }
  auto owned = std::make_unique<Session>();
  Session& s = *owned;
  sessions_.emplace(id, std::move(owned));
  ++gauges_.sessions;
  s.id = id;
  s.created_ms = s.last_used_ms = Now();
  s.use_pos = by_use_.insert(by_use_.end(), &s);
  if (contents != nullptr) {
    s.length = contents->length;
    s.pending_tokens = std::move(contents->pending_tokens);
    if (contents->state != nullptr) {
      SetParkedState(s, std::move(contents->state));
      EnforceHostBudget();  // the newest is evicted last: only if it alone is over the budget
      if (!sessions_.contains(id)) {
        tombstone_order_.erase(tombstones_[id].order);
        tombstones_.erase(id);
        return absl::ResourceExhaustedError(
            absl::StrCat("the session's state does not fit the host-memory budget of ",
                         options_.host_budget_bytes / (1024 * 1024), " MiB"));
      }
    }
  }
  return Info(s);
}

// --- Any thread.

absl::StatusOr<SessionInfo> SessionManager::Create(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  return AddLocked(id, nullptr);
}

absl::StatusOr<SessionInfo> SessionManager::Get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(const Session* s, Find(id));
  return Info(*s);
}

std::vector<SessionInfo> SessionManager::List(std::string_view owner_scope) const {
  std::vector<SessionInfo> out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out.reserve(owner_scope.empty() ? sessions_.size() : 0);
    for (const auto& [id, s] : sessions_) {
      if (id.starts_with(owner_scope)) out.push_back(Info(*s));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const SessionInfo& a, const SessionInfo& b) { return a.id < b.id; });
  return out;
}

absl::Status SessionManager::Delete(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Session * s, Find(id));
  if (s->busy) {
    return absl::FailedPreconditionError(
        absl::StrCat("session \"", SessionName(id),
                     "\" has a request in flight; cancel it or wait for it to finish"));
  }
  Drop(*s, "it was deleted");
  return absl::OkStatus();
}

absl::StatusOr<SessionInfo> SessionManager::Import(const std::string& id,
                                                   std::span<const uint8_t> bytes, bool replace) {
  // Decoding and checksumming a large blob happen here, outside the lock.
  if (bytes.size() > MaxBlobBytes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "session blob is ", bytes.size(), " bytes; a session of this model, with at most ",
        options_.max_pending_tokens, " pending tokens, encodes to at most ", MaxBlobBytes()));
  }
  absl::StatusOr<SessionBlob> decoded;
  try {
    decoded = DecodeSessionBlob(bytes, options_.blob_key);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of host memory decoding the session blob");
  }
  ASSIGN_OR_RETURN(SessionBlob blob, std::move(decoded));
  RETURN_IF_ERROR(CheckSessionBlobFits(blob, fingerprint_, state_shape_,
                                       backend_->config().vocab_size, options_.max_pending_tokens));
  SessionSnapshot contents;
  contents.length = blob.length;
  contents.pending_tokens = std::move(blob.pending_tokens);
  if (!blob.state.empty())
    contents.state = std::make_shared<const std::vector<uint8_t>>(std::move(blob.state));
  std::lock_guard<std::mutex> lock(mu_);
  if (auto held = sessions_.find(id); replace && held != sessions_.end()) {
    if (held->second->busy) {
      return absl::FailedPreconditionError(absl::StrCat(
          "session \"", SessionName(id), "\" has a request in flight on this replica"));
    }
    Drop(*held->second, "it was replaced by a newer version");
  }
  return AddLocked(id, &contents);
}

absl::Status SessionManager::Reserve(const std::string& id, bool prompt_is_empty) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Session * s, Find(id));
  if (s->busy) {
    return absl::FailedPreconditionError(
        absl::StrCat("session \"", SessionName(id),
                     "\" already has a request in flight; send one request at a time per session"));
  }
  if (prompt_is_empty && s->pending_tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("prompt is empty and session \"",
                                                   SessionName(id),
                                                   "\" has no generated token to continue from (it "
                                                   "is new or its last turn did not complete)"));
  }
  s->busy = true;
  return absl::OkStatus();
}

void SessionManager::CancelReservation(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->in_turn) return;
  Session& s = *it->second;
  s.busy = false;
  if (!s.lost.empty()) Drop(s, s.lost);
}

SessionGauges SessionManager::Gauges() const {
  std::lock_guard<std::mutex> lock(mu_);
  return gauges_;
}

size_t SessionManager::MaxBlobBytes() const {
  return EncodedSessionBlobBytes(fingerprint_.size(), options_.max_pending_tokens,
                                 static_cast<size_t>(state_bytes_));
}

// --- Scheduler thread.

absl::StatusOr<int> SessionManager::AcquireSlot() {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(int slot, FreeSlot());
  slot_owner_[slot] = SlotUse::kRunning;
  ++gauges_.slots_running;
  return slot;
}

void SessionManager::ReleaseSlot(int slot) {
  std::lock_guard<std::mutex> lock(mu_);
  slot_owner_[slot] = SlotUse::kFree;
  --gauges_.slots_running;
}

absl::StatusOr<SessionTurn> SessionManager::BeginTurn(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Session * found, Find(id));
  Session& s = *found;
  if (!s.busy || s.in_turn) {
    return absl::InternalError(
        absl::StrCat("session \"", SessionName(id), "\" has no reservation for this turn"));
  }
  if (!s.lost.empty()) {
    return absl::InternalError(
        absl::StrCat("session \"", SessionName(id), "\" was lost: ", s.lost));
  }
  Session::BeforeTurn before{s.length, s.pending_tokens, nullptr};
  SessionTurn turn;
  if (s.location == StateLocation::kDevice) {
    // The turn updates the slot in place: keep a copy to roll back to.
    ASSIGN_OR_RETURN(std::shared_ptr<std::vector<uint8_t>> state, NewStateBuffer(state_bytes_));
    if (absl::Status read = backend_->ReadSlot(s.slot, *state); !read.ok()) {
      return absl::InternalError(
          absl::StrCat("could not copy the session's state: ", read.message()));
    }
    before.state = std::move(state);
    turn.slot = s.slot;
    Relist(s, nullptr);  // not a parking candidate while it runs
    --gauges_.slots_idle;
  } else {
    ASSIGN_OR_RETURN(turn.slot, FreeSlot());
    if (s.location == StateLocation::kHost) {
      if (absl::Status write = backend_->WriteSlot(turn.slot, *s.host_state); !write.ok()) {
        return absl::InternalError(
            absl::StrCat("could not restore the session's state: ", write.message()));
      }
      before.state = s.host_state;  // the parked copy is the roll-back copy
      ClearParkedState(s);
      ++gauges_.restored_total;
    } else {
      turn.start_fresh = true;
    }
    s.location = StateLocation::kDevice;
    s.slot = turn.slot;
  }
  slot_owner_[turn.slot] = SlotUse::kRunning;
  ++gauges_.slots_running;
  s.in_turn = true;
  s.before_turn = std::move(before);
  turn.length = s.length;
  turn.pending_tokens = std::move(s.pending_tokens);
  s.pending_tokens.clear();
  return turn;
}

void SessionManager::CommitTurn(const std::string& id, int64_t length,
                                std::vector<int32_t> pending) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || !it->second->in_turn) return;
  Session& s = *it->second;
  s.in_turn = false;
  s.busy = false;
  s.before_turn.reset();
  slot_owner_[s.slot] = SlotUse::kSession;
  --gauges_.slots_running;
  ++gauges_.slots_idle;
  s.length = length;
  s.pending_tokens = std::move(pending);
  Relist(s, &resident_lru_);
  Touch(s);
}

void SessionManager::RollBackTurn(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || !it->second->in_turn) return;
  Session& s = *it->second;
  Session::BeforeTurn before = std::move(*s.before_turn);
  s.before_turn.reset();
  s.in_turn = false;
  s.busy = false;
  --gauges_.slots_running;
  s.length = before.length;
  s.pending_tokens = std::move(before.pending_tokens);
  if (before.state == nullptr) {
    slot_owner_[s.slot] = SlotUse::kFree;
    s.slot = -1;
    s.location = StateLocation::kNone;
  } else if (backend_->WriteSlot(s.slot, *before.state).ok()) {
    slot_owner_[s.slot] = SlotUse::kSession;
    ++gauges_.slots_idle;
    Relist(s, &resident_lru_);
  } else {
    // The slot is unusable for it (the backend failed): keep the state parked instead.
    slot_owner_[s.slot] = SlotUse::kFree;
    s.slot = -1;
    SetParkedState(s, std::move(before.state));
    EnforceHostBudget();
    if (!sessions_.contains(id)) return;
  }
  Touch(s);
}

absl::StatusOr<SessionSnapshot> SessionManager::Snapshot(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Session * s, Find(id));
  if (s->busy) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session \"", SessionName(id), "\" has a request in flight; export it between turns"));
  }
  SessionSnapshot snapshot;
  snapshot.length = s->length;
  snapshot.pending_tokens = s->pending_tokens;
  if (s->location == StateLocation::kDevice) {
    ASSIGN_OR_RETURN(std::shared_ptr<std::vector<uint8_t>> state, NewStateBuffer(state_bytes_));
    RETURN_IF_ERROR(backend_->ReadSlot(s->slot, *state));
    snapshot.state = std::move(state);
  } else if (s->location == StateLocation::kHost) {
    snapshot.state = s->host_state;
  }
  return snapshot;
}

absl::StatusOr<SessionInfo> SessionManager::Fork(const std::string& source, const std::string& id) {
  ASSIGN_OR_RETURN(SessionSnapshot contents, Snapshot(source));
  std::lock_guard<std::mutex> lock(mu_);
  return AddLocked(id, &contents);
}

absl::StatusOr<std::string> SessionManager::Export(const std::string& id) {
  ASSIGN_OR_RETURN(SessionSnapshot snapshot, Snapshot(id));
  return EncodeSnapshot(snapshot);
}

absl::StatusOr<std::string> SessionManager::EncodeSnapshot(const SessionSnapshot& snapshot) const {
  static const std::vector<uint8_t> kNoState;
  try {
    return EncodeSessionBlob(fingerprint_, state_shape_, snapshot.length, snapshot.pending_tokens,
                             snapshot.state ? *snapshot.state : kNoState, options_.blob_key);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of host memory encoding the session");
  }
}

int SessionManager::ExpireIdle() {
  std::lock_guard<std::mutex> lock(mu_);
  if (options_.ttl_ms <= 0) return 0;
  const int64_t cutoff = Now() - options_.ttl_ms;
  int expired = 0;
  // by_use_ is in last-use order: stop at the first session used after the cutoff. Busy ones
  // (at most the requests in flight) are stepped over.
  for (auto it = by_use_.begin(); it != by_use_.end() && (*it)->last_used_ms < cutoff;) {
    Session& s = **it++;
    if (s.busy) continue;
    Drop(s, absl::StrCat("it expired after ", options_.ttl_ms / 1000,
                         " s idle (the server's session TTL)"));
    ++expired;
  }
  gauges_.expired_total += expired;
  return expired;
}

}  // namespace mambaserve
