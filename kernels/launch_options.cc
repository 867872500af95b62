#include "kernels/launch_options.h"

#include <atomic>

namespace mambaserve::kernels {
namespace {

std::atomic<bool> programmatic_dependent_launch{false};

}  // namespace

void SetProgrammaticDependentLaunch(bool on) { programmatic_dependent_launch.store(on); }

bool ProgrammaticDependentLaunch() { return programmatic_dependent_launch.load(); }

}  // namespace mambaserve::kernels
