#!/usr/bin/python3
"""bench/compare_llama_cpp.py against stand-ins for llama.cpp's two tools (printing their JSON and
JSONL formats with known figures) and the real cpu_engine_bench on a tiny model: every row pairs
the right figures, and each ratio is mambaserve's measured figure over the stand-in's."""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]

LLAMA_BENCH = """#!/usr/bin/python3
import json, sys
open(sys.argv[0] + ".args", "a").write(" ".join(sys.argv[1:]) + "\\n")
gguf = sys.argv[sys.argv.index("-m") + 1]
scale = 2.0 if "bf16" in gguf else 1.0
print(json.dumps([{"n_prompt": 512, "n_gen": 0, "avg_ts": 100.0 * scale},
                  {"n_prompt": 0, "n_gen": 64, "avg_ts": 10.0 * scale}]))
"""
BATCHED_BENCH = """#!/usr/bin/python3
import json, sys
open(sys.argv[0] + ".args", "a").write(" ".join(sys.argv[1:]) + "\\n")
gguf = sys.argv[sys.argv.index("-m") + 1]
scale = 2.0 if "bf16" in gguf else 1.0
print("main: n_kv_max = 4096")
for pl, speed in ((8, 40.0), (32, 80.0)):
    print(json.dumps({"pp": 8, "tg": 32, "pl": pl, "speed_tg": speed * scale}))
"""
EXPECTED_LLAMA = {"prefill_512": 100.0, "decode_1": 10.0, "decode_8": 40.0, "decode_32": 80.0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-engine-bench", required=True)
    args = ap.parse_args()
    failures = []
    with tempfile.TemporaryDirectory(prefix="mambaserve-llama-compare-") as tmp:
        tmp = pathlib.Path(tmp)
        tools = tmp / "bin"
        tools.mkdir()
        for name, text in (("llama-bench", LLAMA_BENCH), ("llama-batched-bench", BATCHED_BENCH)):
            (tools / name).write_text(text)
            os.chmod(tools / name, 0o755)
        out = tmp / "side_by_side.json"
        subprocess.run([sys.executable, str(ROOT / "bench" / "compare_llama_cpp.py"),
                        "--llama-cpp-bin", str(tools), "--gguf-f32", str(tmp / "m-f32.gguf"),
                        "--gguf-bf16", str(tmp / "m-bf16.gguf"), "--model-dir", str(tmp / "model"),
                        "--preset", "tiny", "--cpu-engine-bench", args.cpu_engine_bench,
                        "--rounds", "1", "--workdir", str(tmp / "work"), "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL, timeout=600)
        result = json.loads(out.read_text())
        rows = {(r["dtype"], r["row"]): r for r in result["rows"]}
        if len(rows) != 8:
            failures.append("expected 8 rows, got %d" % len(rows))
        for (dtype, key), r in rows.items():
            want = EXPECTED_LLAMA[key] * (2.0 if dtype == "bf16" else 1.0)
            if r["llama_cpp_tokens_per_s"] != want:
                failures.append("%s %s: llama.cpp %s, want %s" % (dtype, key,
                                                                  r["llama_cpp_tokens_per_s"], want))
            ours = r["mambaserve_tokens_per_s"]
            if not ours > 0:
                failures.append("%s %s: mambaserve figure %s" % (dtype, key, ours))
            elif abs(r["ratio"] - ours / want) > 1e-9 or r["ratio_per_round"] != [r["ratio"]]:
                failures.append("%s %s: ratio %s for %s / %s" % (dtype, key, r["ratio"], ours, want))
        # The tools ran on the f32 and the bf16 file with the threads asked for.
        calls = (tools / "llama-batched-bench.args").read_text().splitlines()
        if len(calls) != 2 or not all("-t 2" in c and "-npl 8,32" in c for c in calls):
            failures.append("llama-batched-bench calls: %s" % calls)
    for f in failures:
        print("FAIL:", f)
    print("compare_llama_cpp:", "ok" if not failures else "%d failures" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
