// main() for the fuzz targets in builds without libFuzzer (any compiler, any sanitizer): replays
// every file of the target's seed corpus, then a bounded, deterministic set of mutations of them
// (bit flips, byte inserts, range deletes, truncation, splices of two seeds), so each target also
// runs as an ordinary CTest test. The libFuzzer build (scripts/fuzz.sh) links libFuzzer's own main.
//   TARGET CORPUS_DIR [MUTATIONS]
#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

std::string Mutate(std::string input, const std::string& other, std::mt19937_64& rng) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const size_t pos = input.empty() ? 0 : rng() % input.size();
    switch (rng() % 5) {
      case 0:
        if (!input.empty()) input[pos] = static_cast<char>(input[pos] ^ (1 << (rng() % 8)));
        break;
      case 1:
        input.insert(pos, 1, static_cast<char>(rng()));
        break;
      case 2:
        if (!input.empty()) input.erase(pos, 1 + rng() % 16);
        break;
      case 3:
        input.resize(pos);
        break;
      default:  // a piece of another seed, where structure from both meets
        input.insert(pos, other.substr(rng() % (other.size() + 1), 1 + rng() % 64));
        break;
    }
  }
  return input;
}

// The input being run, so that a failing one is saved for reproduction (as libFuzzer does).
const std::string* g_current = nullptr;

void SaveCurrentInput(int signal_number) {
  const char kPath[] = "fuzz-crash-input";
  const int fd = open(kPath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0 && g_current != nullptr) {
    static_cast<void>(write(fd, g_current->data(), g_current->size()));
    close(fd);
    const char kNote[] = "the failing input is in ./fuzz-crash-input\n";
    static_cast<void>(write(2, kNote, sizeof(kNote) - 1));
  }
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

void Run(const std::string& input) {
  g_current = &input;
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " CORPUS_DIR [MUTATIONS]\n";
    return 2;
  }
  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(&argc, &argv);
  for (int signal_number : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE}) {
    std::signal(signal_number, SaveCurrentInput);
  }
  std::vector<std::string> seeds;
  for (const auto& entry : std::filesystem::directory_iterator(argv[1])) {
    std::ifstream in(entry.path(), std::ios::binary);
    seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (seeds.empty()) {
    std::cerr << "no seeds in " << argv[1] << "\n";
    return 2;
  }
  const long mutations = argc > 2 ? std::atol(argv[2]) : 20000;
  for (const std::string& seed : seeds) Run(seed);
  std::mt19937_64 rng(20261202);
  for (long i = 0; i < mutations; ++i) {
    Run(Mutate(seeds[rng() % seeds.size()], seeds[rng() % seeds.size()], rng));
  }
  std::cout << seeds.size() << " seeds and " << mutations << " mutations ran\n";
  return 0;
}
