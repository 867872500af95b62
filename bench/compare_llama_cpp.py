#!/usr/bin/python3
"""mambaserve's CPU engine and llama.cpp side by side, on the same weights, threads and machine.

Runs Debian's /usr/bin/python3 (standard library only). The two engines alternate round by round
(f32 then bf16 each round), so a noisy neighbour hits both alike; each figure is the best of its
rounds, and the ratio within every round is reported too. Rows: prefill of a 512-token prompt, batch-1 decode, and aggregate decode with 8 and 32
parallel streams.

  mambaserve:  build/cpu/bench/cpu_engine_bench on --model-dir (held as f32 and as bf16)
  llama.cpp:   llama-bench (pp512, tg128) and llama-batched-bench (-npl 8,32) on GGUF files
               converted from the same checkpoint with llama.cpp's convert_hf_to_gguf.py
               (--outtype f32 / bf16)

  bench/compare_llama_cpp.py --llama-cpp-bin DIR --gguf-f32 F --gguf-bf16 F --model-dir DIR \
      [--threads 2] [--rounds 2] [--out bench/results/llama_cpp_side_by_side.json]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROWS = [("prefill_512", "prefill, 512-token prompt"), ("decode_1", "decode, 1 stream"),
        ("decode_8", "decode, 8 streams"), ("decode_32", "decode, 32 streams")]


def run(argv, timeout=1800):
    started = time.time()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        sys.exit("compare_llama_cpp: %s failed (%d):\n%s" % (argv[0], done.returncode,
                                                             done.stderr[-3000:]))
    return done.stdout, time.time() - started


def mambaserve_round(args, dtype):
    out = os.path.join(args.workdir, "cpu_engine_%s.json" % dtype)
    run([args.cpu_engine_bench, "--preset", args.preset, "--model-dir", args.model_dir,
         "--dtypes", dtype,
         "--threads", str(args.threads), "--decode-batches", "1,8,32", "--steps", "20",
         "--out", out])
    with open(out) as f:
        result = json.load(f)
    model = result["dtypes"][0]
    decode = model["decode_tokens_per_s"]
    return {"prefill_512": max(model["prefill_512_tokens_per_s"].values()),
            "decode_1": decode["1"], "decode_8": decode["8"], "decode_32": decode["32"]}


def llama_cpp_round(args, gguf):
    bench = os.path.join(args.llama_cpp_bin, "llama-bench")
    stdout, _ = run([bench, "-m", gguf, "-t", str(args.threads), "-p", "512", "-n", "64",
                     "-r", "2", "-o", "json"])
    rows = json.loads(stdout)
    prefill = next(r["avg_ts"] for r in rows if r["n_prompt"] == 512 and r["n_gen"] == 0)
    decode1 = next(r["avg_ts"] for r in rows if r["n_gen"] == 64 and r["n_prompt"] == 0)
    batched = os.path.join(args.llama_cpp_bin, "llama-batched-bench")
    stdout, _ = run([batched, "-m", gguf, "-t", str(args.threads), "-c", "4096", "-b", "2048",
                     "-ub", "512", "-npp", "8", "-ntg", "32", "-npl", "8,32",
                     "--output-format", "jsonl"])
    streams = {}
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            streams[r["pl"]] = r["speed_tg"]
    return {"prefill_512": prefill, "decode_1": decode1, "decode_8": streams[8],
            "decode_32": streams[32]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp-bin", required=True, help="folder with llama-bench and "
                    "llama-batched-bench")
    ap.add_argument("--gguf-f32", required=True)
    ap.add_argument("--gguf-bf16", required=True)
    ap.add_argument("--model-dir", required=True, help="the checkpoint both were made from")
    ap.add_argument("--cpu-engine-bench", default="build/cpu/bench/cpu_engine_bench")
    ap.add_argument("--preset", default="130m", help="the model's shape, for cpu_engine_bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/compare-llama-cpp")
    ap.add_argument("--out", default="bench/results/llama_cpp_side_by_side.json")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)

    best, rounds = {}, []
    for round_index in range(args.rounds):
        for dtype, gguf in (("f32", args.gguf_f32), ("bf16", args.gguf_bf16)):
            for engine, measure in (("llama.cpp", lambda: llama_cpp_round(args, gguf)),
                                    ("mambaserve", lambda: mambaserve_round(args, dtype))):
                figures = measure()
                print("round %d %-10s %-4s %s" % (round_index + 1, engine, dtype, " ".join(
                    "%s=%.1f" % kv for kv in figures.items())), file=sys.stderr)
                rounds.append({"round": round_index + 1, "engine": engine, "dtype": dtype,
                               "tokens_per_s": figures})
                slot = best.setdefault(dtype, {}).setdefault(engine, {})
                for key, value in figures.items():
                    slot[key] = max(slot.get(key, 0.0), value)

    def figure(round_index, engine, dtype, key):
        return next(r["tokens_per_s"][key] for r in rounds if r["round"] == round_index + 1 and
                    r["engine"] == engine and r["dtype"] == dtype)

    table = []
    for dtype in ("f32", "bf16"):
        for key, label in ROWS:
            ours, theirs = best[dtype]["mambaserve"][key], best[dtype]["llama.cpp"][key]
            # The same ratio within each round (the two engines ran back to back).
            per_round = [figure(i, "mambaserve", dtype, key) / figure(i, "llama.cpp", dtype, key)
                         for i in range(args.rounds)]
            table.append({"dtype": dtype, "row": key, "what": label,
                          "mambaserve_tokens_per_s": ours, "llama_cpp_tokens_per_s": theirs,
                          "ratio": ours / theirs if theirs > 0 else None,
                          "ratio_per_round": per_round})
    result = {"benchmark": "llama_cpp_side_by_side", "machine": platform.processor() or
              platform.machine(), "threads": args.threads, "rounds": args.rounds,
              "target_ratio": 1.1, "rows": table, "rounds_detail": rounds}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print("| dtype | row | mambaserve tok/s | llama.cpp tok/s | ratio (best of each) | "
          "ratio per round |")
    print("|---|---|---|---|---|---|")
    for r in table:
        print("| %s | %s | %.1f | %.1f | %.2f | %s |" % (
            r["dtype"], r["what"], r["mambaserve_tokens_per_s"], r["llama_cpp_tokens_per_s"],
            r["ratio"], " ".join("%.2f" % v for v in r["ratio_per_round"])))


if __name__ == "__main__":
    main()
