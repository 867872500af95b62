// Command-line flags for every binary of the project, on CLI11: each flag is declared once (name,
// help, bounds, destination); --help is generated from the declarations; an unknown flag, a value
// that does not parse or one out of range is refused with a message naming the flag.
#pragma once

#include <iostream>
#include <optional>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace mambaserve {

// Parses argv (argv[0] is the program or subcommand name) into `app`'s declarations. Returns
// nullopt to go on, or the exit code to return now: 0 after --help (the help of the subcommand it
// was given to, on stdout), 2 after a refused command line (the reason, naming the flag, on
// stderr).
inline std::optional<int> ParseFlags(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() != 0) std::cerr << app.get_name() << ": ";  // not a call for help
    return app.exit(e, std::cout, std::cerr) == 0 ? 0 : 2;
  }
}

// A subcommand's whole life: declares `Flags` (a struct with Declare(CLI::App&)), parses argv,
// calls run(flags) and returns the exit code: ParseFlags's, 0 when run succeeds, else 2 with
// "name: message" on stderr.
template <typename Flags, typename Run>
int RunSubcommand(const char* name, const char* description, int argc, char** argv, Run run) {
  Flags flags;
  CLI::App app{description, std::string("mambaserve ") + name};
  flags.Declare(app);
  if (std::optional<int> exit = ParseFlags(app, argc, argv)) return *exit;
  const absl::Status status = run(flags);
  if (status.ok()) return 0;
  std::cerr << name << ": " << status.message() << "\n";
  return 2;
}

}  // namespace mambaserve
