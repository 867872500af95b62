#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: runs the CUDA benchmark first, then the GPU tests,
# compares `mambaserve eval --backend cuda` against `--backend cpu` on tiny and 130m-shaped random
# models, and the float64 reference when NumPy is present.
#   scripts/gpu-check.sh --bundle build/gpu-bundle.tar.gz   on a bare GPU machine: runs what
#       scripts/gpu-bundle.sh built elsewhere (nothing is installed or built; the machine needs only
#       the NVIDIA driver and CUDA 13's cuBLAS/cudart, looked for in the usual places)
#   scripts/gpu-check.sh                                    builds the CUDA backend here first
#       (needs the build dependencies: scripts/install-deps.sh --build-only)
# Everything has one hard deadline, GPU_CHECK_DEADLINE_S (default 420 s): a stage gets at most
# what is left, and stages the deadline leaves no time for are reported as skipped. At most eight
# files land under $OUT (default bench/results/gpu/):
#   gpu-check.log          everything printed (the CPU-side tests' output included)
#   system.txt             nvidia-smi, nvcc, the tools present (ncu, compute-sanitizer), OS
#   cuda.json              benchmark results (decode tok/s at batch 1/8/64/256, prefill, GB/s,
#                          memory over 1k vs 64k tokens)
#   gtest-*.json           per-test results of the two GPU test binaries (skips would show here)
#   eval-compare.json      CUDA vs CPU eval verdicts per model, dtype and type
#   mambabench-gpu.json    mambabench against a CUDA server on Falcon-Mamba-7B's shapes (4 of its
#                          64 layers): tokens/s, TTFT and inter-token latency at 1-256 streams
#                          (bench/plot_mambabench.py draws it)
#   summary.json           one line per stage: status and seconds
# (compute-sanitizer's memcheck and racecheck over the kernel op tests, when the tool is present,
# the comparison with Hugging Face transformers' own models, when PyTorch and transformers are, and
# the float64 reference comparison of the CUDA backend, when NumPy is present, print into
# gpu-check.log)
# (building here adds build.log, with the eval outputs under eval/.) Exit status: 0 when every
# stage passed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUNDLE=""
while (($#)); do
  case $1 in
    --bundle) BUNDLE=${2:?--bundle needs a folder or .tar.gz}; shift 2 ;;
    *) echo "usage: scripts/gpu-check.sh [--bundle DIR|FILE.tar.gz]" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$ROOT/bench/results/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SCRATCH=$(mktemp -d /tmp/gpu-check-XXXXXX)
EVAL_DIR=$SCRATCH/eval
[[ -n $BUNDLE ]] || EVAL_DIR=$OUT/eval
mkdir -p "$EVAL_DIR"
exec > >(tee "$OUT/gpu-check.log") 2>&1
END_S=$((SECONDS + ${GPU_CHECK_DEADLINE_S:-420}))

BUILD=${BUILD_DIR:-$ROOT/build/gpu}
JOBS=${MAMBASERVE_JOBS:-$(nproc)}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/mambaserve-ccache}
declare -a stage_json=()
failed=0
stage() {  # stage NAME TIMEOUT_S COMMAND...: at most what the deadline leaves
  local name=$1 limit=$2 start=$SECONDS rc left=$((END_S - SECONDS))
  shift 2
  if ((left < 10)); then
    echo "==== ${name}: skipped, the ${GPU_CHECK_DEADLINE_S:-420} s deadline is spent"
    stage_json+=("{\"stage\": \"${name}\", \"exit\": null, \"skipped\": \"deadline\"}")
    failed=1
    return 124
  fi
  ((limit <= left)) || limit=$left
  echo "==== ${name} (at most ${limit} s)"
  # Through bash so shell functions (exported below) can be stages too.
  timeout --kill-after=10 "$limit" bash -c '"$@"' stage "$@"
  rc=$?
  local secs=$((SECONDS - start))
  echo "==== ${name}: $([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)") in ${secs}s"
  stage_json+=("{\"stage\": \"${name}\", \"exit\": ${rc}, \"seconds\": ${secs}}")
  [[ $rc == 0 ]] || failed=1
  return $rc
}
write_summary() {
  local i
  {
    echo "["
    for i in "${!stage_json[@]}"; do
      printf '  %s%s\n' "${stage_json[$i]}" "$([[ $i -lt $((${#stage_json[@]} - 1)) ]] && echo ,)"
    done
    echo "]"
  } > "$OUT/summary.json"
  echo "==== summary ($OUT/summary.json)"
  cat "$OUT/summary.json"
}
trap write_summary EXIT

NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
{
  date -u
  nvidia-smi || true
  "$NVCC" --version || true
  cmake --version | head -1
  c++ --version | head -1
  (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")
  for tool in ncu compute-sanitizer; do
    echo "$tool: $(command -v "$tool" || ls /usr/local/cuda/bin/$tool 2>/dev/null || echo absent)"
  done
  echo "bundle: ${BUNDLE:-none (building here)}"
} > "$OUT/system.txt" 2>&1
cat "$OUT/system.txt"

# The local GPU's architecture (e.g. 9.0 -> 90); CMake's "native" if nvidia-smi cannot say.
# GPU_CHECK_ARCH overrides (e.g. "80;90"); BUILD_DIR reuses a build tree.
ARCH=${GPU_CHECK_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')}
[[ -n "$ARCH" ]] || ARCH=native

export ROOT OUT BUILD JOBS NVCC ARCH SCRATCH

if [[ -n $BUNDLE ]]; then
  if [[ -f $BUNDLE ]]; then
    tar -C "$SCRATCH" -xzf "$BUNDLE"
    BUNDLE=$SCRATCH/$(tar -tzf "$BUNDLE" | head -1 | cut -d/ -f1)
  fi
  BIN=$(cd "$BUNDLE/bin" && pwd)
  # cuBLAS and cudart are this machine's (CUDA 13): where the toolkit or PyTorch's wheels keep them.
  if ldd "$BIN/cuda_bench" | grep -q 'libcublas.*not found'; then
    for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
      $(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null); do
      if [[ -e $dir/libcublas.so.13 ]]; then
        export LD_LIBRARY_PATH=$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        break
      fi
    done
  fi
  ldd "$BIN/cuda_bench" | grep 'not found' && echo "(the bundle's binaries lack the libraries above)"
  OPS_TEST=$BIN/kernels_cuda_ops_test BACKEND_TEST=$BIN/engine_cuda_backend_test
  MATH_TEST=$BIN/kernels_math_test FACTORY_TEST=$BIN/engine_backend_factory_test
  BENCH=$BIN/cuda_bench
  MAMBABENCH=$BIN/mambabench
else
  stage "install dependencies" 300 scripts/install-deps.sh --build-only || echo "(continuing: configure will name anything missing)"

  GENERATOR=$(command -v ninja >/dev/null 2>&1 && echo Ninja || echo "Unix Makefiles")
  export GENERATOR
  build() {
    cmake -S "$ROOT" -B "$BUILD" -G "$GENERATOR" -DCMAKE_BUILD_TYPE=Release -DMAMBASERVE_CUDA=ON \
      -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DMAMBASERVE_BUILD_TESTS=ON \
      -DMAMBASERVE_BUILD_BENCH=ON &&
      cmake --build "$BUILD" -j "$JOBS" --target mambaserve mambaserve_cuda cuda_bench \
        kernels_math_test kernels_cuda_ops_test engine_cuda_backend_test engine_backend_factory_test \
        engine_cpu_backend_test mambabench
  }
  export -f build
  if ! stage "build (sm ${ARCH})" 360 build > "$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    exit 1
  fi
  tail -3 "$OUT/build.log"
  END_S=$((SECONDS + ${GPU_CHECK_DEADLINE_S:-420}))  # the deadline is for the checks, not the build
  BIN=$BUILD/bin
  OPS_TEST=$BUILD/tests/kernels/kernels_cuda_ops_test
  BACKEND_TEST=$BUILD/tests/engine/backend/engine_cuda_backend_test
  BENCH=$BUILD/bench/cuda_bench
  MAMBABENCH=$BUILD/bench/mambabench
fi
export BIN OPS_TEST BACKEND_TEST MATH_TEST FACTORY_TEST EVAL_DIR MAMBABENCH

# The benchmark first: if anything later hangs, the numbers are already in.
stage "benchmark" 200 "$BENCH" --out "$OUT/cuda.json"

# GPU tests, with per-test JSON (skips show as such: a skipped GPU test here is a failure).
gpu_tests() {
  local rc=0 bin name
  for bin in "$OPS_TEST" "$BACKEND_TEST"; do
    name=$(basename "$bin")
    "$bin" --gtest_output="json:$OUT/gtest-$name.json" || rc=1
    if grep -q '"result": "SKIPPED"' "$OUT/gtest-$name.json"; then
      echo "$name: tests were skipped on a GPU machine"
      rc=1
    fi
  done
  return $rc
}
export -f gpu_tests
stage "GPU tests" 120 gpu_tests
# The CPU side of what the GPU tests compare against, and the backend selection policy with a GPU
# present (the whole CPU suite is CI's job: scripts/test.sh).
cpu_tests() {
  if [[ -n ${MATH_TEST:-} ]]; then
    "$MATH_TEST" --gtest_brief=1 && "$FACTORY_TEST" --gtest_brief=1
  else
    ctest --test-dir "$BUILD" -j "$JOBS" --output-on-failure -R '^(MambaMath|BackendFactory|CudaGraphBucket)' &&
      ctest --test-dir "$BUILD" -j "$JOBS" --output-on-failure -R '^(BothModelTypes|MixerOps)'
  fi
}
export -f cpu_tests
stage "CPU engine and selection tests" 60 cpu_tests

# mambaserve eval, CUDA vs CPU, on generated models.
eval_compare() {
  local bin="$BIN/mambaserve" rc=0 preset type dtype dir tokens
  tokens=$(seq -s, 3 7 150)
  for preset in tiny 130m; do
    for type in mamba falcon_mamba; do
      for dtype in f32 bf16; do
        dir="$EVAL_DIR/model-$preset-$type-$dtype"
        "$bin" make-model --preset "$preset" --model-type "$type" --dtype "$dtype" --seed 5 --out "$dir" || rc=1
        for backend in cpu cuda; do
          "$bin" eval --model "$dir" --tokens "$tokens" --generate 32 --backend "$backend" \
            --json "$EVAL_DIR/$preset-$type-$dtype-$backend.json" || rc=1
        done
        rm -rf "$dir"
      done
    done
  done
  python3 - "$EVAL_DIR" "$OUT/eval-compare.json" <<'PY' || rc=1
import glob, json, os, sys
d = sys.argv[1]
verdicts, ok = [], True
for cpu_path in sorted(glob.glob(os.path.join(d, "*-cpu.json"))):
    name = os.path.basename(cpu_path)[:-len("-cpu.json")]
    cpu = json.load(open(cpu_path))
    cuda_path = os.path.join(d, name + "-cuda.json")
    if not os.path.exists(cuda_path):
        ok = False
        verdicts.append(dict(case=name, passed=False, error="no CUDA eval output"))
        print(f"FAIL {name}: no CUDA eval output")
        continue
    cuda = json.load(open(cuda_path))
    diff = max(abs(a - b) for a, b in zip(cpu["last_logits"], cuda["last_logits"]))
    f32 = name.endswith("-f32")
    # bf16: both backends round GEMM activations to bf16, but sum in different orders, and a value
    # that lands on the other side of a bf16 rounding boundary moves by 2^-9 of itself: over the
    # 130m shape's 24 layers such steps add up to about the size of the rounding itself (0.11-0.20
    # in a float64 simulation).
    tol = 1e-3 if f32 else (5e-2 if name.startswith("tiny") else 0.25)
    same = cpu["generated"] == cuda["generated"]
    first_diff = next((i for i, (a, b) in enumerate(zip(cpu["generated"], cuda["generated"])) if a != b), None)
    passed = diff <= tol and (same or not f32) and cuda.get("backend") == "cuda"
    ok &= passed
    verdicts.append(dict(case=name, max_abs_logit_diff=diff, tolerance=tol, greedy_equal=same,
                         first_greedy_difference=first_diff, cuda_backend=cuda.get("backend"),
                         device=cuda.get("device"), passed=passed))
    print(f"{'PASS' if passed else 'FAIL'} {name}: max|dlogit| {diff:.3g} (tol {tol}), greedy equal: {same}")
json.dump(verdicts, open(sys.argv[2], "w"), indent=2)
sys.exit(0 if ok else 1)
PY
  return $rc
}
export -f eval_compare
stage "eval cuda vs cpu" 150 eval_compare

# mambabench against a live CUDA server on Falcon-Mamba-7B's shapes: 4 of its 64 layers (a 1.9 GB
# bf16 checkpoint, written here in seconds; per-layer cost scales to the full model, which
# cuda_bench above measures in process), random weights, token-id prompts.
gpu_mambabench() {
  local dir=$SCRATCH/model-7b-shapes rc=0
  "$BIN/mambaserve" make-model --preset 7b --model-type falcon_mamba --dtype bf16 --layers 4 \
    --seed 5 --out "$dir" || return 1
  bench/mambabench_live.sh --mambaserve "$BIN/mambaserve" --mambabench "$MAMBABENCH" --model "$dir" \
    --backend cuda --serve-args "--max-batch 256" --server-log "$SCRATCH/mambabench-server.log" \
    --out "$OUT/mambabench-gpu.json" -- --concurrency 1,16,64,256 --prompt-tokens 128 \
    --output-tokens 64 || rc=1
  tail -5 "$SCRATCH/mambabench-server.log"
  rm -rf "$dir"
  return $rc
}
export -f gpu_mambabench
stage "mambabench against a CUDA server" 150 gpu_mambabench

# compute-sanitizer over the kernel op tests: memcheck (out-of-bounds and misaligned accesses,
# reads of uninitialised device memory) on all of them, racecheck (shared-memory hazards) on the
# kernels that use shared memory. Output in gpu-check.log.
sanitize() {
  local cs rc=0
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null) || {
    echo "compute-sanitizer: absent"
    return 0
  }
  "$cs" --tool memcheck --error-exitcode 1 "$OPS_TEST" --gtest_brief=1 || rc=1
  "$cs" --tool racecheck --error-exitcode 1 "$OPS_TEST" --gtest_brief=1 \
    --gtest_filter='*Scan*:*SkinnyGemm*:*RmsNorm*:*ArgMax*:*Conv*' || rc=1
  return $rc
}
export -f sanitize
stage "compute-sanitizer (memcheck, racecheck)" 100 sanitize

# Hugging Face transformers' own Mamba / FalconMamba (the GPU machine's PyTorch) on the same
# checkpoints, Falcon-Mamba-7B's shapes with 2 layers among them, against eval on both backends.
TORCH_PY=""
for candidate in python3 /usr/bin/python3; do
  if "$candidate" -c "import torch, transformers.utils as u; assert u.is_torch_available()" 2>/dev/null; then
    TORCH_PY=$candidate
    break
  fi
done
export TORCH_PY
if [[ -n $TORCH_PY ]]; then
  transformers_compare() {
    "$TORCH_PY" tests/reference/compare_transformers.py --mambaserve "$BIN/mambaserve" \
      --workdir "$SCRATCH/transformers" --backend cuda --backend cpu
  }
  export -f transformers_compare
  stage "transformers vs mambaserve" 150 transformers_compare
else
  echo "==== transformers vs mambaserve: skipped (no Python with PyTorch >= 2 and transformers)"
fi

# The float64 reference comparison, with the CUDA backend in place of the CPU one.
# Debian's python3 here, the PyTorch one (which has NumPy) on the GPU machines.
PY=""
for candidate in /usr/bin/python3 python3; do
  if "$candidate" -c "import numpy" 2>/dev/null; then PY=$candidate; break; fi
done
export PY
if [[ -n $PY ]]; then
  reference_cuda() {
    local wrap="$SCRATCH/mambaserve-cuda-wrapper.sh"
    printf '#!/usr/bin/env bash\nargs=()\nfor a in "$@"; do [[ $a == cpu ]] && a=cuda; args+=("$a"); done\nexec %q "${args[@]}"\n' \
      "$BIN/mambaserve" > "$wrap"
    chmod +x "$wrap"
    "$PY" tests/reference/compare_engine.py --quick --mambaserve "$wrap" --workdir "$SCRATCH/compare-cuda"
  }
  export -f reference_cuda
  stage "float64 reference vs cuda" 120 reference_cuda
else
  echo "==== float64 reference vs cuda: skipped (no Python with NumPy)"
fi

exit $failed
