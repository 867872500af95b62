// Process-wide options of the kernel launches (kernels/cuda_utils.cuh). Plain C++: the backend
// sets them without nvcc.
#pragma once

namespace mambaserve::kernels {

// Hopper's programmatic dependent launch: each kernel may be launched while the previous kernel
// in its stream is still finishing, so its launch and setup overlap that kernel's tail; the kernel
// waits (WaitForPreviousKernel) before it touches device memory. Off by default; only for devices
// of compute capability 9.0 and later, where the launch attribute exists.
void SetProgrammaticDependentLaunch(bool on);
bool ProgrammaticDependentLaunch();

}  // namespace mambaserve::kernels
