// The mambaserve binary: one executable, one subcommand per job.
#include <cstring>
#include <iostream>
#include <string_view>

#include "engine/backend/cpu/blas_kernels.h"
#include "server/cli/commands.h"
#include "server/cli/tokenize_command.h"

namespace {

struct Subcommand {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Subcommand kSubcommands[] = {
    {"make-model", mambaserve::RunMakeModelCommand,
     "write a deterministic random checkpoint (HF layout)"},
    {"eval", mambaserve::RunEvalCommand, "last logits + greedy tokens for a prompt, as JSON"},
    {"perplexity", mambaserve::RunPerplexityCommand,
     "score a text through the engine: mean NLL and perplexity"},
    {"tokenize", mambaserve::RunTokenizeCommand,
     "text -> token ids (or --decode ids -> text), as JSON"},
    {"serve", mambaserve::RunServeCommand,
     "serve the model over gRPC (streaming generation, sessions)"},
};

void PrintUsage(std::ostream& out) {
  out << "usage: mambaserve <command> [flags]   (mambaserve <command> --help for its flags)\n\n";
  for (const Subcommand& s : kSubcommands) out << "  " << s.name << "\t" << s.summary << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  mambaserve::ReexecWithFastBlasKernelsIfNeeded(argv);
  if (argc < 2 || std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "help") {
    PrintUsage(argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? 2 : 0;
  }
  for (const Subcommand& s : kSubcommands) {
    if (std::strcmp(argv[1], s.name) == 0) return s.run(argc - 1, argv + 1);
  }
  std::cerr << "mambaserve: unknown command \"" << argv[1] << "\"\n";
  PrintUsage(std::cerr);
  return 2;
}
