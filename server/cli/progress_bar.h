// A one-line progress bar on stderr for long commands: redrawn in place at most 5 times a second
// on a terminal; on a pipe or file, a plain line every 10% so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace mambaserve {

class ProgressBar {
 public:
  // `total` units of `unit` (e.g. "tokens"); nothing is drawn when `total` is 0.
  ProgressBar(std::string label, int64_t total, std::string unit);
  ~ProgressBar() { Finish(); }

  void Update(int64_t done);
  void Finish();  // draws the final state once and ends the line

 private:
  void Draw(int64_t done);

  const std::string label_, unit_;
  const int64_t total_;
  const bool terminal_;
  const std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point last_draw_;
  int64_t done_ = 0;
  int last_decile_ = -1;
  bool finished_ = false;
};

}  // namespace mambaserve
