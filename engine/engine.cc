#include "engine/engine.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <new>

#include "absl/strings/str_cat.h"
#include "engine/backend_factory.h"
#include "engine/base/log.h"
#include "engine/base/status_macros.h"

namespace mambaserve {
namespace {

int64_t PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page_size > 0 ? static_cast<int64_t>(pages) * page_size : INT64_MAX;
}

std::string GiB(double bytes) { return absl::StrCat(bytes / (1024.0 * 1024 * 1024), " GiB"); }

// Sizes that commit memory at start (state slots, one logits row per batched sequence) or promise
// it later (the host budget for parked sessions) must fit this machine: a typo such as
// --max-sessions 1000000000 is refused with the arithmetic instead of dying in the allocator.
absl::Status CheckMemoryFits(const EngineOptions& options, const ModelConfig& config) {
  const int64_t memory = PhysicalMemoryBytes();
  const double slots = static_cast<double>(options.backend.num_slots);
  const double state_pool = slots * static_cast<double>(config.state_bytes());
  if (state_pool > static_cast<double>(memory)) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.backend.num_slots, " state slots (--max-sessions) of ", config.state_bytes(),
        " bytes need ", GiB(state_pool), "; this machine has ", GiB(static_cast<double>(memory))));
  }
  const double batch = std::min<double>(options.scheduler.max_batch, slots);
  const double logits = batch * static_cast<double>(config.vocab_size) * sizeof(float);
  if (state_pool + logits > static_cast<double>(memory)) {
    return absl::InvalidArgumentError(
        absl::StrCat("a batch of ", options.scheduler.max_batch, " sequences (--max-batch) needs ",
                     GiB(logits), " of logits beside ", GiB(state_pool),
                     " of state slots; this machine has ", GiB(static_cast<double>(memory))));
  }
  if (options.scheduler.sessions.host_budget_bytes > memory) {
    return absl::InvalidArgumentError(
        absl::StrCat("the host budget for parked sessions (--host-state-budget-mb) is ",
                     GiB(static_cast<double>(options.scheduler.sessions.host_budget_bytes)),
                     "; this machine has ", GiB(static_cast<double>(memory))));
  }
  return absl::OkStatus();
}

// One short prefill and decode on slot 0, so the first request pays no first-touch costs.
absl::Status WarmUp(Backend& backend) {
  const int32_t token = 0;
  Step step;
  step.sequences.push_back({0, std::span<const int32_t>(&token, 1), true, true});
  StepOutput out;
  RETURN_IF_ERROR(backend.Forward(step, &out));
  step.sequences[0].start_fresh = false;
  RETURN_IF_ERROR(backend.Forward(step, &out));
  return backend.ResetSlot(0);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(EngineOptions options) {
  std::unique_ptr<Engine> engine(new Engine());
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, LoadModel(options.model_dir));
  engine->model_ = std::move(model);
  const ModelConfig& config = engine->model_->config;
  RETURN_IF_ERROR(CheckMemoryFits(options, config));

  const std::string tokenizer_path =
      (std::filesystem::path(options.model_dir) / "tokenizer.json").string();
  if (std::filesystem::exists(tokenizer_path)) {
    ASSIGN_OR_RETURN(engine->tokenizer_, Tokenizer::FromFile(tokenizer_path));
    if (engine->tokenizer_->vocab_size() > config.vocab_size) {
      LogWarning(tokenizer_path, " defines ", engine->tokenizer_->vocab_size(),
                 " tokens but the model has ", config.vocab_size,
                 " embedding rows: prompts that use the extra ids are refused");
    }
  } else {
    LogWarning("no tokenizer.json in ", options.model_dir, ": serving token-id prompts only");
  }

  // The scheduler never sends a step of more tokens than this, so a backend sized for longer
  // passes would hold activation scratch it never uses (256 of the default 512 rows: 10 MB at
  // 130m, 54 MB for Falcon-Mamba-7B on the CPU).
  const int step_rows = std::max(options.scheduler.max_step_tokens, options.scheduler.max_batch);
  options.backend.max_tokens_per_pass = std::min(options.backend.max_tokens_per_pass, step_rows);

  EngineInfo& info = engine->info_;
  try {
    ASSIGN_OR_RETURN(engine->backend_,
                     CreateBackend(engine->model_, options.backend, &info.backend_fallback_reason));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory creating the backend with ",
                                                     options.backend.num_slots, " state slots"));
  }
  if (!info.backend_fallback_reason.empty()) {
    LogInfo("backend auto: using the CPU (", info.backend_fallback_reason, ")");
  }
  // A GPU backend holds its own copy of the weights: the checkpoint's pages (14.5 GB for
  // Falcon-Mamba-7B) need not stay in host memory. Nothing is lost: they are re-read from the file
  // if touched again.
  if (engine->backend_->info().name == "cuda" && engine->model_->checkpoint != nullptr)
    engine->model_->checkpoint->ReleaseAllPages();
  RETURN_IF_ERROR(WarmUp(*engine->backend_));

  options.scheduler.sessions.max_pending_tokens = static_cast<size_t>(options.max_prompt_tokens);
  engine->scheduler_ = std::make_unique<Scheduler>(engine->backend_.get(), engine->tokenizer_.get(),
                                                   engine->model_->fingerprint, options.scheduler);
  info.config = config;
  info.fingerprint = engine->model_->fingerprint;
  info.backend = engine->backend_->info();
  info.tokenizer_vocab_size = engine->tokenizer_ ? engine->tokenizer_->vocab_size() : 0;
  info.max_batch = engine->scheduler_->options().max_batch;
  info.max_queue = engine->scheduler_->options().max_queue;
  info.max_session_blob_bytes = engine->scheduler_->sessions().MaxBlobBytes();
  engine->session_workers_ = std::make_unique<WorkerPool>(
      options.session_workers,
      static_cast<size_t>(std::max(options.scheduler.max_pending_tasks, 1)));
  if (options.session_store) {
    engine->stored_ = std::make_unique<StoredSessions>(
        *options.session_store, engine->scheduler_.get(), engine->model_->fingerprint);
    // Not fatal: the store may come up after this replica, and until then sessions live here.
    if (absl::Status reachable = engine->stored_->store().Ping(); !reachable.ok()) {
      LogWarning("session store: ", reachable.message(),
                 "; serving on, sessions held here keep working");
    }
  }
  engine->scheduler_->Start();
  return engine;
}

Engine::~Engine() { Stop(); }

void Engine::Stop(std::string why) {
  stopped_.store(true);
  // The scheduler first: it ends every request and runs the tasks it was given, so a worker waiting
  // for one (an export) is released; then the workers finish what was posted.
  if (scheduler_) scheduler_->Stop(std::move(why));
  if (session_workers_) session_workers_->Stop();
  // Last: the scheduler's final events post store writes, and the session workers may call it.
  if (stored_) stored_->Stop();
}

absl::Status Engine::Submit(GenerationRequest request) {
  if (stored_ && !request.session_id.empty()) return stored_->Submit(std::move(request));
  return scheduler_->Submit(std::move(request));
}

absl::Status Engine::FlushSessionStore(std::chrono::steady_clock::time_point deadline) {
  return stored_ ? stored_->Flush(deadline) : absl::OkStatus();
}

std::optional<SessionStoreStats> Engine::session_store_stats() const {
  if (!stored_) return std::nullopt;
  return stored_->Stats();
}

void Engine::Post(std::function<void()> op, const std::function<void(absl::Status)>& refused) {
  if (stopped_.load()) {
    refused(absl::UnavailableError("the server is shutting down; retry on another replica"));
  } else if (!session_workers_->Post(std::move(op))) {
    refused(absl::ResourceExhaustedError("too many session operations are waiting; retry later"));
  }
}

void Engine::CreateSession(std::string id, Callback<SessionInfo> done) {
  Post([this, id = std::move(id),
        done] { done(stored_ ? stored_->Create(id) : scheduler_->sessions().Create(id)); },
       [done](absl::Status s) { done(s); });
}

void Engine::GetSession(std::string id, Callback<SessionInfo> done) {
  Post(
      [this, id = std::move(id), done] {
        if (stored_) {
          if (absl::Status current = stored_->Refresh(id); !current.ok()) return done(current);
        }
        done(scheduler_->sessions().Get(id));
      },
      [done](absl::Status s) { done(s); });
}

void Engine::ListSessions(std::string owner_scope, Callback<std::vector<SessionInfo>> done) {
  Post([this, scope = std::move(owner_scope), done] { done(scheduler_->sessions().List(scope)); },
       [done](absl::Status s) { done(s); });
}

void Engine::DeleteSession(std::string id, std::function<void(absl::Status)> done) {
  Post([this, id = std::move(id),
        done] { done(stored_ ? stored_->Delete(id) : scheduler_->sessions().Delete(id)); },
       done);
}

void Engine::ImportSession(std::string id, std::span<const uint8_t> blob,
                           Callback<SessionInfo> done) {
  Post(
      [this, id = std::move(id), blob, done] {
        done(stored_ ? stored_->Import(id, blob) : scheduler_->sessions().Import(id, blob));
      },
      [done](absl::Status s) { done(s); });
}

void Engine::ForkSession(std::string source, std::string id, Callback<SessionInfo> done) {
  Post(
      [this, source = std::move(source), id = std::move(id), done] {
        if (stored_) return done(stored_->Fork(source, id));
        done(scheduler_->CallOnSchedulerThread<SessionInfo>(
            [&](SessionManager& sessions) { return sessions.Fork(source, id); }));
      },
      [done](absl::Status s) { done(s); });
}

void Engine::ExportSession(std::string id, Callback<std::string> done) {
  Post(
      [this, id = std::move(id), done] {
        if (stored_) {
          if (absl::Status current = stored_->Refresh(id); !current.ok()) return done(current);
        }
        // The state is read on the scheduler thread; this worker encodes and checksums it.
        absl::StatusOr<SessionSnapshot> s = scheduler_->CallOnSchedulerThread<SessionSnapshot>(
            [&](SessionManager& sessions) { return sessions.Snapshot(id); });
        done(s.ok() ? scheduler_->sessions().EncodeSnapshot(*s)
                    : absl::StatusOr<std::string>(s.status()));
      },
      [done](absl::Status s) { done(s); });
}

}  // namespace mambaserve
