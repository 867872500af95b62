#!/usr/bin/env python3
"""Concurrent-stream load for a mambaserve server: N streams at once, each generating M tokens.

Reports aggregate generated tokens/s, client-side time to first token (p50/p95) and inter-token
latency, as JSON (stdout, and --json FILE). Starts its own server on the tiny model unless --target
is given. Needs the test venv (scripts/python-test-env.sh):

  build/pyenv/bin/python3 bench/load_generate.py --binary build/cpu/bin/mambaserve --streams 64 --max-tokens 128
"""
import argparse
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import grpc


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", help="host:port of a running server (default: start one)")
    parser.add_argument("--binary", default=os.path.join(root, "build/cpu/bin/mambaserve"))
    parser.add_argument("--model", help="model dir for the started server (default: make-model --preset tiny)")
    parser.add_argument("--threads", default="0", help="--threads for the started server (0 = all cores)")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="mambaserve-load-")
    proc = None
    try:
        subprocess.run(["protoc", f"--proto_path={root}/proto", f"--python_out={work}", f"--grpc_python_out={work}",
                        f"--plugin=protoc-gen-grpc_python={shutil.which('grpc_python_plugin')}",
                        "mambaserve/v1/mambaserve.proto"], check=True)
        sys.path.insert(0, work)
        pb = importlib.import_module("mambaserve.v1.mambaserve_pb2")
        pb_grpc = importlib.import_module("mambaserve.v1.mambaserve_pb2_grpc")

        target = args.target
        if target is None:
            model = args.model
            if model is None:
                model = os.path.join(work, "model")
                subprocess.run([args.binary, "make-model", "--preset", "tiny", "--out", model], check=True)
            port_file = os.path.join(work, "port")
            proc = subprocess.Popen([args.binary, "serve", "--model", model, "--listen", "127.0.0.1:0",
                                     "--port-file", port_file, "--threads", args.threads,
                                     "--max-batch", str(max(64, args.streams))],
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while not os.path.exists(port_file):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("server did not start")
                time.sleep(0.05)
            with open(port_file) as f:
                target = "127.0.0.1:" + f.read().strip()
        channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.MambaServeStub(channel)
        # The server listens before the model is loaded: wait (bounded) until it answers.
        deadline = time.monotonic() + 300
        while True:
            try:
                info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=60)
                if info.backend:
                    break
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

        results = [None] * args.streams
        start_barrier = threading.Barrier(args.streams + 1)

        def run(i):
            request = pb.GenerateRequest(
                tokens=pb.TokenIds(ids=[(i * 31 + k * 7) % (info.vocab_size - 1) + 1 for k in range(args.prompt_tokens)]),
                sampling=pb.SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, seed=i,
                                           ignore_eos=True))
            start_barrier.wait()
            t0 = time.perf_counter()
            stamps = []
            tokens = 0
            for response in stub.Generate(request, timeout=600):
                if response.token_ids:
                    stamps.append(time.perf_counter())
                    tokens += len(response.token_ids)
            results[i] = (t0, stamps, tokens)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(args.streams)]
        for t in threads:
            t.start()
        start_barrier.wait()
        wall0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - wall0

        ttft = [r[1][0] - r[0] for r in results if r[1]]
        gaps = [b - a for r in results for a, b in zip(r[1], r[1][1:])]
        total = sum(r[2] for r in results)
        out = {
            "model": f"{info.architecture} d_model={info.d_model} layers={info.n_layers} vocab={info.vocab_size}",
            "backend": f"{info.backend} ({info.device})",
            "streams": args.streams, "max_tokens": args.max_tokens, "prompt_tokens": args.prompt_tokens,
            "generated_tokens": total, "wall_s": round(wall, 3),
            "aggregate_tokens_per_s": round(total / wall, 1),
            "ttft_p50_ms": round(1000 * statistics.median(ttft), 2),
            "ttft_p95_ms": round(1000 * percentile(ttft, 0.95), 2),
            "inter_token_p50_ms": round(1000 * statistics.median(gaps), 3) if gaps else None,
            "inter_token_p99_ms": round(1000 * percentile(gaps, 0.99), 3) if gaps else None,
        }
        print(json.dumps(out, indent=1))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
        channel.close()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
