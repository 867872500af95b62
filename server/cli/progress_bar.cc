#include "server/cli/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mambaserve {

using Clock = std::chrono::steady_clock;

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      terminal_(isatty(STDERR_FILENO) == 1),
      started_(Clock::now()),
      last_draw_(started_) {}

void ProgressBar::Update(int64_t done) {
  done_ = std::clamp<int64_t>(done, 0, total_);
  if (total_ <= 0 || finished_) return;
  if (terminal_) {
    if (Clock::now() - last_draw_ < std::chrono::milliseconds(200)) return;
  } else {
    const int decile = static_cast<int>(done_ * 10 / total_);
    if (decile == last_decile_) return;
    last_decile_ = decile;
  }
  Draw(done_);
}

void ProgressBar::Finish() {
  if (total_ <= 0 || finished_) return;
  Draw(done_);
  if (terminal_) std::fputc('\n', stderr);
  finished_ = true;
}

void ProgressBar::Draw(int64_t done) {
  last_draw_ = Clock::now();
  const double seconds = std::chrono::duration<double>(last_draw_ - started_).count();
  const double fraction = static_cast<double>(done) / static_cast<double>(total_);
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(fraction * kWidth);
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
  std::string line =
      absl::StrFormat("%s %3.0f%% [%s%s] %d/%d %s, %.1f s, %.0f %s/s", label_, fraction * 100,
                      std::string(filled, '#'), std::string(kWidth - filled, ' '), done, total_,
                      unit_, seconds, rate, unit_);
  if (terminal_) {
    std::fprintf(stderr, "\r%s\x1b[K", line.c_str());
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

}  // namespace mambaserve
