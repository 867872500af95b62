// SIGTERM / SIGINT taken synchronously: blocked in every thread (call Block() before starting any),
// then waited for on the main thread. No handler runs in signal context.
#pragma once

namespace mambaserve {

class TerminationSignals {
 public:
  // Blocks SIGTERM and SIGINT in the calling thread; threads started afterwards inherit the mask.
  static void Block();
  // Waits for one of them; returns its number.
  static int Wait();
  static const char* Name(int signal_number);
};

}  // namespace mambaserve
