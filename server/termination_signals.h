// SIGTERM / SIGINT (stop) and SIGHUP (re-read credentials) taken synchronously: blocked in every
// thread (call Block() before starting any), then waited for on the main thread. No handler runs
// in signal context, and a SIGHUP never kills the server, as its default action would.
#pragma once

namespace mambaserve {

class TerminationSignals {
 public:
  // Blocks SIGTERM, SIGINT and SIGHUP in the calling thread; threads started afterwards inherit the
  // mask.
  static void Block();
  // Waits for one of them; returns its number.
  static int Wait();
  static const char* Name(int signal_number);
  static bool IsReload(int signal_number);
};

}  // namespace mambaserve
