// Subcommands of the `mambaserve` binary. Each takes argv with argv[0] = the subcommand name and
// returns a process exit code; errors are printed to stderr.
#pragma once

namespace mambaserve {

int RunMakeModelCommand(int argc, char** argv);
int RunEvalCommand(int argc, char** argv);
int RunPerplexityCommand(int argc, char** argv);
int RunServeCommand(int argc, char** argv);

}  // namespace mambaserve
