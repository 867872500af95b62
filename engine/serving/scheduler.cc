#include "engine/serving/scheduler.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "engine/backend/greedy.h"
#include "engine/base/status_macros.h"
#include "engine/serving/prefill_budget.h"
#include "kernels/mamba_math.h"

namespace mambaserve {

using Clock = std::chrono::steady_clock;

// Prompt tokens a scoring sequence reads per step: each brings a logits row to the host (256 KB
// at a 65k vocabulary), so the step's logits buffer stays bounded.
constexpr int64_t kMaxScoredTokensPerStep = 128;

struct Scheduler::Sequence {
  GenerationRequest request;
  Clock::time_point accepted;
  bool admitted = false;
  bool done = false;
  int slot = -1;
  bool start_fresh = false;
  std::vector<int32_t> feed;  // the session's pending tokens, then the prompt
  size_t prompt_begin = 0;    // where the prompt starts in `feed`
  // Tokens of `feed` the state consumes in this turn: all of them, but a scoring-only turn
  // (max_tokens 0) leaves the last one pending, as a generating turn leaves its last token.
  size_t feed_end = 0;
  size_t fed = 0;             // tokens of `feed` the state has consumed
  size_t cache_boundary = 0;  // this step's chunk ends here, a prefix whose state gets cached
  bool decoding = false;      // prompt consumed; `next_token` is the sampled token to feed next
  int32_t next_token = 0;
  int32_t generated = 0;
  int64_t length_before = 0;  // the session's length when the turn began
  std::optional<Sampler> sampler;
  std::optional<IncrementalDetokenizer> detokenizer;
  std::string held;  // text withheld because it may be the start of a stop string
  double time_to_first_token_s = -1;
  double queue_time_s = -1;
  std::optional<Clock::time_point> paused_since;  // its reader fell behind and has not caught up

  bool scores_prompt() const { return request.sampling.prompt_logprobs.has_value(); }
  // Requests without a session read and fill the prefix cache; scoring ones do not, as they need
  // every prompt row's logits.
  bool may_use_prefix_cache() const { return request.session_id.empty() && !scores_prompt(); }
  bool scoring_only() const { return request.sampling.max_tokens == 0; }
  // Whether it streams events now, so a full stream pauses it.
  bool streaming() const { return decoding || scores_prompt(); }
};

Scheduler::Scheduler(Backend* backend, const Tokenizer* tokenizer, std::string model_fingerprint,
                     SchedulerOptions options)
    : backend_(backend),
      tokenizer_(tokenizer),
      options_(std::move(options)),
      prefix_cache_(options_.prefix_cache_bytes, options_.prefix_cache_block_tokens),
      sessions_(backend, std::move(model_fingerprint), options_.sessions),
      eos_token_id_(backend->config().eos_token_id) {
  options_.max_batch = std::clamp(options_.max_batch, 1, backend->num_slots());
  // Every running sequence must be able to decode in every step.
  options_.max_step_tokens = std::max(options_.max_step_tokens, options_.max_batch);
  counters_.slots_total = backend->num_slots();
  next_ttl_check_ = Clock::now();
  stats_.Publish(counters_);
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Scheduler::Stop(std::string why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    stop_reason_ = std::move(why);
  }
  wake_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  } else {
    EndAll();  // never started (tests drive it with StepForTest)
  }
}

void Scheduler::EndAll() {
  TakeIncoming();
  const absl::Status shutting_down = absl::UnavailableError(stop_reason_);
  for (auto& seq : running_) Finish(*seq, FinishReason::kCancelled, shutting_down);
  for (auto& seq : waiting_) Finish(*seq, FinishReason::kCancelled, shutting_down);
  running_.clear();
  waiting_.clear();
  PublishStats(0, 0, 0, 0);
}

absl::Status Scheduler::Submit(GenerationRequest request) {
  // Checked here too (not only in server/): one bad id in a batched step would fail every
  // sequence in that step.
  if (request.prompt.empty() && request.session_id.empty()) {
    return absl::InvalidArgumentError("prompt is empty");
  }
  const int64_t vocab = backend_->config().vocab_size;
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the model's vocabulary [0, ", vocab, ")"));
    }
  }
  // The reservation makes the session's pending tokens stable until the request ends, so an empty
  // prompt is refused here rather than failing a step (and every sequence batched with it).
  const std::string session_id = request.session_id;
  if (!session_id.empty()) RETURN_IF_ERROR(sessions_.Reserve(session_id, request.prompt.empty()));
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      refused = absl::UnavailableError("the server is shutting down");
    } else if (queued_.load() >= options_.max_queue) {
      rejected_.fetch_add(1);
      refused = absl::ResourceExhaustedError(
          absl::StrCat("the admission queue is full (", options_.max_queue,
                       " requests waiting); retry later or on another replica"));
    } else {
      queued_.fetch_add(1);
      incoming_.push_back(std::move(request));
    }
  }
  if (!refused.ok()) {
    if (!session_id.empty()) sessions_.CancelReservation(session_id);
    return refused;
  }
  wake_.notify_one();
  return absl::OkStatus();
}

absl::Status Scheduler::RunOnSchedulerThread(std::function<void(SessionManager&)> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    if (static_cast<int>(tasks_.size()) >= options_.max_pending_tasks) {
      return absl::ResourceExhaustedError("too many session operations are waiting; retry later");
    }
    tasks_.push_back(std::move(task));
  }
  wake_.notify_one();
  return absl::OkStatus();
}

void Scheduler::Loop() {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) break;
    }
    if (RunStep()) continue;
    // Nothing ran: every sequence is paused on its reader, or there is no work. Wake for new work,
    // and poll briefly for readers catching up, cancellations and the TTL.
    std::unique_lock<std::mutex> lock(mu_);
    const auto wait = running_.empty() && waiting_.empty() ? std::chrono::milliseconds(50)
                                                           : std::chrono::milliseconds(2);
    wake_.wait_for(lock, wait, [&] { return stopping_ || !incoming_.empty() || !tasks_.empty(); });
  }
  EndAll();
}

void Scheduler::TakeIncoming() {
  std::deque<GenerationRequest> incoming;
  std::deque<std::function<void(SessionManager&)>> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming.swap(incoming_);
    tasks.swap(tasks_);
  }
  for (auto& task : tasks) task(sessions_);
  for (GenerationRequest& request : incoming) {
    auto seq = std::make_unique<Sequence>();
    seq->request = std::move(request);
    seq->accepted = Clock::now();
    waiting_.push_back(std::move(seq));
  }
}

void Scheduler::DropCancelled() {
  const auto now = Clock::now();
  auto drop = [&](Sequence& seq) {
    if (seq.request.stream->cancelled()) {
      Finish(seq, FinishReason::kCancelled,
             absl::CancelledError("the client cancelled the request"));
    } else if (seq.request.deadline && now >= *seq.request.deadline) {
      Finish(seq, FinishReason::kCancelled,
             absl::DeadlineExceededError("the request's deadline passed"));
    } else if (seq.streaming() && !seq.request.stream->HasRoom()) {
      // A paused stream keeps its slot; one whose client stops reading for good must not keep it
      // forever (it would take a batch place and a state slot from everyone else).
      if (!seq.paused_since) seq.paused_since = now;
      if (options_.stalled_reader_timeout_ms > 0 &&
          now - *seq.paused_since >=
              std::chrono::milliseconds(options_.stalled_reader_timeout_ms)) {
        Finish(seq, FinishReason::kCancelled,
               absl::DeadlineExceededError(absl::StrCat("the client read nothing for ",
                                                        options_.stalled_reader_timeout_ms / 1000,
                                                        " s while its stream buffer was full")));
      }
    } else {
      seq.paused_since.reset();
    }
    return seq.done;
  };
  std::erase_if(running_, [&](const auto& seq) { return drop(*seq); });
  std::erase_if(waiting_, [&](const auto& seq) { return drop(*seq); });
}

absl::Status Scheduler::StartSequence(Sequence& seq) {
  const GenerationRequest& request = seq.request;
  if (!request.session_id.empty()) {
    ASSIGN_OR_RETURN(SessionTurn turn, sessions_.BeginTurn(request.session_id));
    seq.slot = turn.slot;
    seq.start_fresh = turn.start_fresh;
    seq.length_before = turn.length;
    seq.feed = std::move(turn.pending_tokens);
  } else {
    ASSIGN_OR_RETURN(seq.slot, sessions_.AcquireSlot());
    seq.start_fresh = true;
  }
  if (seq.start_fresh) {
    // Zero the slot now rather than with the first chunk: a turn that ends before its first chunk
    // runs (cancel, deadline) must not leave a session on the slot's previous occupant's state.
    if (absl::Status reset = backend_->ResetSlot(seq.slot); !reset.ok()) {
      if (request.session_id.empty()) {
        sessions_.ReleaseSlot(seq.slot);
      } else {
        sessions_.RollBackTurn(request.session_id);  // also ends the reservation
      }
      seq.request.session_id.clear();  // released here, not again by Finish
      return absl::InternalError(
          absl::StrCat("the backend could not reset a state slot: ", reset.message()));
    }
  }
  seq.prompt_begin = seq.feed.size();
  seq.feed.insert(seq.feed.end(), request.prompt.begin(), request.prompt.end());
  seq.feed_end = seq.scoring_only() ? seq.feed.size() - 1 : seq.feed.size();
  if (absl::Status cached = StartFromCachedPrefix(seq); !cached.ok()) {
    sessions_.ReleaseSlot(seq.slot);  // only sequences without a session use the cache
    return absl::InternalError(
        absl::StrCat("the backend could not reset a state slot: ", cached.message()));
  }
  seq.sampler.emplace(request.sampling, request.prompt);
  if (tokenizer_ != nullptr) seq.detokenizer.emplace(*tokenizer_);
  seq.admitted = true;
  seq.queue_time_s = std::chrono::duration<double>(Clock::now() - seq.accepted).count();
  ++counters_.requests_admitted;
  counters_.prompt_tokens += static_cast<int64_t>(request.prompt.size());
  return absl::OkStatus();
}

void Scheduler::Admit() {
  while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_batch) {
    Sequence& seq = *waiting_.front();
    absl::Status started = StartSequence(seq);
    // Unavailable is the session manager's "no free slot this step": keep the queue's order. Any
    // other failure ends this request.
    if (absl::IsUnavailable(started)) break;
    if (!started.ok()) {
      Finish(seq, FinishReason::kNone, started);
    } else {
      queued_.fetch_sub(1);
      if (seq.feed_end == 0) {
        Finish(seq, FinishReason::kLength, absl::OkStatus());  // scoring one token: nothing to run
      } else {
        running_.push_back(std::move(waiting_.front()));
      }
    }
    waiting_.pop_front();
  }
}

void Scheduler::HandleToken(Sequence& seq, const SampledToken& sampled) {
  const SamplingParams& params = seq.request.sampling;
  const int32_t token = sampled.token;
  ++seq.generated;
  ++counters_.generated_tokens;
  seq.decoding = true;
  seq.next_token = token;
  if (seq.time_to_first_token_s < 0) {
    seq.time_to_first_token_s = std::chrono::duration<double>(Clock::now() - seq.accepted).count();
  }

  GenerationEvent event;
  event.token_ids.push_back(token);
  if (params.logprobs > 0) event.logprobs.push_back(sampled);
  FinishReason reason = FinishReason::kNone;
  bool matched_stop_string = false;
  if (!params.ignore_eos && token == eos_token_id_) {
    reason = FinishReason::kEos;
  } else if (std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(), token) !=
             params.stop_token_ids.end()) {
    reason = FinishReason::kStop;
  } else if (seq.detokenizer) {
    absl::StatusOr<std::string> delta = seq.detokenizer->Push(token);
    // An id the tokenizer lacks (embedding rows padded past the vocabulary) has no text.
    std::string text = seq.held + (delta.ok() ? *delta : "");
    seq.held.clear();
    size_t stop_at = std::string::npos;
    for (const std::string& stop : params.stop) stop_at = std::min(stop_at, text.find(stop));
    if (stop_at != std::string::npos) {
      text.resize(stop_at);
      reason = FinishReason::kStop;
      matched_stop_string = true;
    } else {
      // Withhold the longest tail that could still grow into a stop string.
      size_t hold = 0;
      for (const std::string& stop : params.stop) {
        for (size_t n = std::min(stop.size() - 1, text.size()); n > hold; --n) {
          if (text.compare(text.size() - n, n, stop, 0, n) == 0) {
            hold = n;
            break;
          }
        }
      }
      seq.held = text.substr(text.size() - hold);
      text.resize(text.size() - hold);
    }
    event.text = std::move(text);
  }
  if (reason == FinishReason::kNone && seq.generated >= params.max_tokens)
    reason = FinishReason::kLength;
  if (reason == FinishReason::kNone) {
    seq.request.stream->Push(std::move(event));
    return;
  }
  if (seq.detokenizer && !matched_stop_string) {
    // Text withheld for a stop string that never came, and bytes of an unfinished character.
    event.text += seq.held;
    event.text += seq.detokenizer->Flush();
  }
  seq.held.clear();
  Finish(seq, reason, absl::OkStatus(), std::move(event));
}

absl::Status Scheduler::StartFromCachedPrefix(Sequence& seq) {
  if (!prefix_cache_.enabled() || !seq.may_use_prefix_cache()) return absl::OkStatus();
  const PrefixCache::Hit hit =
      prefix_cache_.Longest(std::span<const int32_t>(seq.feed).first(seq.feed_end));
  if (hit.tokens == 0) return absl::OkStatus();
  if (!backend_->WriteSlot(seq.slot, *hit.state).ok()) {
    return backend_->ResetSlot(seq.slot);  // start from scratch: the write may have stopped midway
  }
  seq.fed = static_cast<size_t>(hit.tokens);
  seq.start_fresh = false;
  return absl::OkStatus();
}

int64_t Scheduler::NextBoundaryToCache(const Sequence& seq) const {
  if (!prefix_cache_.enabled() || !seq.may_use_prefix_cache()) return 0;
  const size_t block = static_cast<size_t>(prefix_cache_.block_tokens());
  for (size_t boundary = (seq.fed / block + 1) * block; boundary <= seq.feed_end;
       boundary += block) {
    if (!prefix_cache_.Contains(std::span<const int32_t>(seq.feed).first(boundary)))
      return static_cast<int64_t>(boundary);
  }
  return 0;
}

void Scheduler::CacheBoundaryState(Sequence& seq) {
  auto state =
      std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(backend_->config().state_bytes()));
  // A state that cannot be read is simply not cached.
  if (backend_->ReadSlot(seq.slot, *state).ok())
    prefix_cache_.Insert(std::span<const int32_t>(seq.feed).first(seq.fed), std::move(state));
}

bool Scheduler::EmitPromptLogprobs(Sequence& seq, int index, size_t first, size_t rows) {
  GenerationEvent event;
  for (size_t k = 0; k < rows; ++k) {
    // The row at feed position p predicts feed[p + 1]: a prompt token, unless p + 1 is before the
    // prompt (a session's pending tokens) or past it (the first generated token).
    const size_t next = first + k + 1;
    if (next < seq.prompt_begin || next >= seq.feed.size()) continue;
    if (event.prompt_logprobs.empty())
      event.prompt_logprobs_begin = static_cast<int64_t>(next - seq.prompt_begin);
    SampledToken scored =
        seq.sampler->ScorePromptToken(out_.TokenRow(index, static_cast<int>(k)), seq.feed[next]);
    if (scored.token == math::kNonFiniteRow) {
      Finish(seq, FinishReason::kNone, NonFiniteLogits(seq));
      return false;
    }
    event.prompt_logprobs.push_back(std::move(scored));
  }
  if (!event.prompt_logprobs.empty()) seq.request.stream->Push(std::move(event));
  return true;
}

void Scheduler::Finish(Sequence& seq, FinishReason reason, absl::Status status,
                       GenerationEvent event) {
  const GenerationRequest& request = seq.request;
  const int64_t prompt_tokens = static_cast<int64_t>(request.prompt.size());
  event.final = true;
  event.finish_reason = reason;
  event.usage.prompt_tokens = prompt_tokens;
  event.usage.generated_tokens = seq.generated;
  event.usage.time_to_first_token_s = seq.time_to_first_token_s;
  event.usage.queue_time_s = seq.queue_time_s;
  if (seq.admitted) {
    const int64_t length = seq.length_before + prompt_tokens + seq.generated;
    event.usage.session_length = length;
    if (!request.session_id.empty()) {
      // A turn is atomic: only one that completed changes the session. The state has consumed
      // everything but the last sampled token, which the next turn feeds first.
      if (status.ok() && reason != FinishReason::kCancelled && reason != FinishReason::kNone) {
        std::vector<int32_t> pending{seq.next_token};
        if (seq.generated == 0) pending.assign(seq.feed.begin() + seq.feed_end, seq.feed.end());
        sessions_.CommitTurn(request.session_id, length, std::move(pending));
      } else {
        sessions_.RollBackTurn(request.session_id);
        event.usage.session_length = seq.length_before;
      }
    } else {
      sessions_.ReleaseSlot(seq.slot);
    }
  } else {
    queued_.fetch_sub(1);  // it never left the admission queue
    if (!request.session_id.empty()) sessions_.CancelReservation(request.session_id);
  }
  ++counters_.requests_finished;
  if (reason == FinishReason::kCancelled) ++counters_.requests_cancelled;
  if (!status.ok() && reason != FinishReason::kCancelled) ++counters_.requests_failed;
  event.status = std::move(status);
  seq.done = true;
  request.stream->Push(std::move(event));
}

absl::Status Scheduler::NonFiniteLogits(const Sequence& seq) const {
  if (seq.request.session_id.empty()) return NonFiniteLogitsError();
  return absl::FailedPreconditionError(absl::StrCat(
      "session ", SessionManager::SessionName(seq.request.session_id),
      " makes the model produce non-finite logits (NaN or infinity): its state is out of float "
      "range (an import of a damaged or crafted state); delete it or import a good copy"));
}

bool Scheduler::RunStep() {
  TakeIncoming();
  if (options_.sessions.ttl_ms > 0 && Clock::now() >= next_ttl_check_) {
    sessions_.ExpireIdle();
    next_ttl_check_ = Clock::now() + std::chrono::milliseconds(options_.ttl_check_interval_ms);
  }
  DropCancelled();
  Admit();

  const auto start = Clock::now();
  int decode_tokens = 0, prefill_tokens = 0;
  BuildStep(&decode_tokens, &prefill_tokens);
  if (step_.sequences.empty()) {
    PublishStats(0, 0, 0, 0);
    return false;
  }

  absl::Status forward = backend_->Forward(step_, &out_);
  for (size_t i = 0; i < in_step_.size(); ++i) {
    Sequence& seq = *in_step_[i];
    const SequenceInput& input = step_.sequences[i];
    if (!forward.ok()) {
      Finish(seq, FinishReason::kNone,
             absl::InternalError(absl::StrCat("backend error: ", forward.message())));
      continue;
    }
    if (!seq.decoding) {
      const size_t first = seq.fed;
      seq.fed += input.tokens.size();
      if (seq.cache_boundary != 0 && seq.fed == seq.cache_boundary) CacheBoundaryState(seq);
      if (seq.scores_prompt() &&
          !EmitPromptLogprobs(seq, static_cast<int>(i), first, input.tokens.size())) {
        continue;
      }
      if (seq.fed < seq.feed_end) continue;  // more of the prompt to read
      if (seq.scoring_only()) {
        Finish(seq, FinishReason::kLength, absl::OkStatus());
        continue;
      }
    }
    const SampledToken sampled = input.token_only
                                     ? seq.sampler->TakeArgMax(out_.argmax[i])
                                     : seq.sampler->Sample(out_.Row(static_cast<int>(i)));
    if (sampled.token == math::kNonFiniteRow) {
      // Never streamed as a token: the turn fails, and a session keeps its state from before it.
      Finish(seq, FinishReason::kNone, NonFiniteLogits(seq));
      continue;
    }
    HandleToken(seq, sampled);
  }
  std::erase_if(running_, [](const auto& seq) { return seq->done; });
  PublishStats(static_cast<int>(in_step_.size()), prefill_tokens, decode_tokens,
               std::chrono::duration<double>(Clock::now() - start).count());
  return true;
}

void Scheduler::BuildStep(int* decode_tokens, int* prefill_tokens) {
  step_.sequences.clear();
  in_step_.clear();
  // Decodes first: a running stream never waits behind someone else's prompt.
  int budget = options_.max_step_tokens;
  std::vector<Sequence*> reading;  // sequences still feeding their prompt
  for (auto& seq : running_) {
    if (!seq->decoding) {
      reading.push_back(seq.get());
      continue;
    }
    if (budget == 0 || !seq->request.stream->HasRoom()) continue;  // reader behind: pause
    step_.sequences.push_back({seq->slot, std::span<const int32_t>(&seq->next_token, 1), false,
                               true, seq->sampler->OnlyNeedsArgMax()});
    in_step_.push_back(seq.get());
    --budget;
    ++*decode_tokens;
  }
  // Then the rest of the budget, shared fairly among the prompts being read.
  std::vector<int64_t> needs;
  needs.reserve(reading.size());
  for (Sequence* seq : reading) {
    int64_t need = static_cast<int64_t>(seq->feed_end - seq->fed);
    // A chunk stops at the next block boundary whose state the prefix cache lacks.
    seq->cache_boundary = static_cast<size_t>(NextBoundaryToCache(*seq));
    if (seq->cache_boundary != 0)
      need = std::min(need, static_cast<int64_t>(seq->cache_boundary - seq->fed));
    if (seq->scores_prompt()) {
      // Scoring streams an event per step: it pauses on a full stream like a decode.
      need = seq->request.stream->HasRoom() ? std::min(need, kMaxScoredTokensPerStep) : 0;
    }
    needs.push_back(need);
  }
  const std::vector<int64_t> shares = FairPrefillShares(needs, budget, prefill_rotation_++);
  for (size_t i = 0; i < reading.size(); ++i) {
    if (shares[i] == 0) continue;
    Sequence& seq = *reading[i];
    const size_t n = static_cast<size_t>(shares[i]);
    const bool last_chunk = seq.fed + n == seq.feed_end;
    const bool scores = seq.scores_prompt();
    step_.sequences.push_back({seq.slot, std::span<const int32_t>(seq.feed.data() + seq.fed, n),
                               seq.start_fresh && seq.fed == 0,
                               scores || (last_chunk && !seq.scoring_only()),
                               !scores && seq.sampler->OnlyNeedsArgMax(), scores});
    in_step_.push_back(&seq);
    *prefill_tokens += static_cast<int>(n);
  }
}

void Scheduler::PublishStats(int batch, int prefill_tokens, int decode_tokens, double seconds) {
  SchedulerStats& s = counters_;
  s.running = static_cast<int32_t>(running_.size());
  s.paused = 0;
  for (const auto& seq : running_) s.paused += seq->streaming() && !seq->request.stream->HasRoom();
  s.waiting = queued_.load();
  const SessionGauges g = sessions_.Gauges();
  s.slots_in_use = g.slots_running;
  s.slots_idle = g.slots_idle;
  s.sessions = g.sessions;
  s.sessions_parked = g.parked;
  s.parked_bytes = g.parked_bytes;
  if (batch > 0) {
    s.batch_size = batch;
    s.step_tokens = prefill_tokens + decode_tokens;
    s.step_prefill_tokens = prefill_tokens;
    s.step_decode_tokens = decode_tokens;
    s.step_seconds = seconds;
    ++s.steps;
  }
  s.requests_rejected = rejected_.load();
  s.sessions_parked_total = g.parked_total;
  s.sessions_restored_total = g.restored_total;
  s.sessions_evicted_total = g.evicted_total;
  s.sessions_expired_total = g.expired_total;
  const PrefixCacheStats& cache = prefix_cache_.stats();
  s.prefix_cache_budget_bytes = prefix_cache_.enabled() ? options_.prefix_cache_bytes : 0;
  s.prefix_cache_hits = cache.hits;
  s.prefix_cache_misses = cache.misses;
  s.prefix_cache_saved_tokens = cache.saved_tokens;
  s.prefix_cache_bytes = cache.bytes;
  s.prefix_cache_entries = cache.entries;
  stats_.Publish(s);
  if (batch > 0 && options_.on_step) options_.on_step(s);
}

}  // namespace mambaserve
