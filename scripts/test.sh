#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs the whole test suite:
#   1. Debian packages (scripts/install-deps.sh)
#   2. clang-format check of every C++ and CUDA source
#   3. Release build (CPU engine, server, tools, tests, benchmarks); every build is warning-free
#      (-Werror)
#   4. AddressSanitizer + UBSan build (clang) of the engine and tokenizer tests, run; then every
#      libFuzzer target for 20 s from its seed corpus (scripts/fuzz.sh)
#   5. ThreadSanitizer build of the scheduler, session, engine and server tests, run (the server
#      binary under test is the TSan one too)
#   6. with nvcc present: the CUDA backend module for sm_80/86/89/90 and its tests (GPU ones skip),
#      and the self-contained GPU bundle (scripts/gpu-bundle.sh) run from a copy
#   7. every CTest test of the Release build (unit, end-to-end, float64 reference comparison, and
#      the GPU suites run on the CUDA emulator, tests/cuda_emulator)
# Prints the time each phase took and the test totals. Exit status is non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${MAMBASERVE_JOBS:-$(nproc)}
declare -a phase_names=() phase_secs=()
phase() {  # phase NAME COMMAND...
  local name=$1 start=$SECONDS
  shift
  echo "==== ${name}"
  "$@"
  phase_names+=("$name")
  phase_secs+=($((SECONDS - start)))
}
ctest_logs=()
run_ctest() {  # run_ctest NAME CTEST-ARGS...: keeps the log for the totals
  local log=build/ctest-$1.log
  shift
  ctest "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  ctest_logs+=("$log")
  return "$rc"
}
report() {
  echo "==== phase timings"
  for i in "${!phase_names[@]}"; do printf '  %-28s %5ss\n' "${phase_names[$i]}" "${phase_secs[$i]}"; done
  local total=0 failed=0 skipped=0 line
  for log in "${ctest_logs[@]}"; do
    line=$(grep -E 'tests passed, [0-9]+ tests? failed out of' "$log" | tail -1) || continue
    failed=$((failed + $(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<<"$line")))
    total=$((total + $(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")))
    skipped=$((skipped + $(grep -c '(Skipped)' "$log" || true)))
  done
  echo "tests: $((total - failed - skipped)) passed, ${failed} failed, ${skipped} skipped"
}
trap report EXIT

export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/mambaserve-ccache}
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
# Rewrite absolute paths under the checkout so clones in other folders share cache entries.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD} CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}

# Release, sanitizer and CUDA builds all treat warnings as errors.
werror=-DMAMBASERVE_WERROR=ON

phase "install dependencies" scripts/install-deps.sh
phase "format check" scripts/check-format.sh
phase "configure (release)" cmake --preset cpu $werror -DMAMBASERVE_BUILD_TESTS=ON -DMAMBASERVE_BUILD_BENCH=ON
phase "build (release)" cmake --build build/cpu -j "$jobs"
phase "configure (sanitizers)" cmake --preset asan $werror -DMAMBASERVE_BUILD_TESTS=ON
phase "build (sanitizers)" cmake --build build/asan -j "$jobs" --target \
  engine_model_loading_test engine_cpu_backend_test engine_serving_test engine_testing_models_test \
  engine_session_store_test tokenizer_test tokenize_command_test \
  safetensors_fuzz safetensors_index_fuzz config_json_fuzz session_blob_fuzz generate_request_fuzz \
  tokenizer_fuzz
phase "test (sanitizers)" run_ctest asan --test-dir build/asan -j "$jobs" --output-on-failure -L 'engine|tokenizer'
# A fixed seed from the seed corpora alone (a fresh checkout has no grown corpus): reproducible.
phase "fuzz (libFuzzer, 20 s each)" scripts/fuzz.sh "${MAMBASERVE_FUZZ_SECONDS:-20}" --seed 1

# ThreadSanitizer: the scheduler, sessions and engine in-process, then the real server (built with
# TSan, spawned by the end-to-end test) under concurrent streams. A report fails the run.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp"
phase "configure (tsan)" cmake --preset tsan $werror -DMAMBASERVE_BUILD_TESTS=ON
phase "build (tsan)" cmake --build build/tsan -j "$jobs" --target engine_serving_test server_e2e_test \
  engine_session_store_test session_store_e2e_test engine_cpu_backend_test mambaserve mambactl
# Left out: the 2 MiB export, whose TSan-built client idles over a minute between 1 MiB messages
# (under a second in release, or with a TSan server and a release client); smaller exports cover
# the server's streaming code here.
phase "test (tsan)" run_ctest tsan --test-dir build/tsan -j 1 --output-on-failure \
  -R '^(ThreadPoolTest|SamplingTest|SessionManagerTest|SessionBlobTest|SchedulerTest|EngineTest|ServerE2eTest|WriteModes/StoredSessionsTest|SessionStoreE2eTest)\.' \
  -E 'AStateLargerThanAMessageCrossesInChunks'
unset TSAN_OPTIONS

# The CUDA backend module, compiled for sm_80/86/89/90 whenever nvcc is present (no GPU needed):
# its tests run here, the GPU ones skipping with the reason; scripts/gpu-check.sh runs them on a GPU.
nvcc=${CUDACXX:-/usr/local/cuda/bin/nvcc}
if [[ -x "$nvcc" ]]; then
  phase "configure (cuda)" cmake --preset cuda $werror -DCMAKE_CUDA_COMPILER="$nvcc" -DMAMBASERVE_BUILD_TESTS=ON
  phase "build (cuda module)" cmake --build build/cuda -j "$jobs" --target \
    mambaserve mambactl mambaserve_cuda cuda_bench kernels_math_test kernels_cuda_ops_test \
    engine_cuda_backend_test engine_backend_factory_test
  phase "test (cuda, gpu tests skip)" run_ctest cuda --test-dir build/cuda -j "$jobs" --output-on-failure \
    -R '^(MambaMath|BackendFactory|CudaGraphBucket|Types/CudaOps|CudaArgMax|Models/CudaVsCpu|CudaBackend|deploy_gpu_bundle$)'
else
  echo "==== no nvcc at $nvcc: CUDA module not built"
fi

# The main suite last, so its summary closes the log.
phase "test (release)" run_ctest release --test-dir build/cpu -j "$jobs" --output-on-failure
