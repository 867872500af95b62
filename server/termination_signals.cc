#include "server/termination_signals.h"

#include <pthread.h>
#include <signal.h>

namespace mambaserve {
namespace {

sigset_t TerminationSet() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  return signals;
}

}  // namespace

void TerminationSignals::Block() {
  const sigset_t signals = TerminationSet();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

int TerminationSignals::Wait() {
  const sigset_t signals = TerminationSet();
  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  return signal_number;
}

const char* TerminationSignals::Name(int signal_number) {
  switch (signal_number) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "a signal";
  }
}

bool TerminationSignals::IsReload(int signal_number) { return signal_number == SIGHUP; }

}  // namespace mambaserve
