#!/usr/bin/env python3
"""Time to first token of short prompts while long prompts are being prefilled.

32 prompts of 8,000 tokens start together; a moment later, 16 prompts of 8 tokens arrive. With
the step's prefill budget shared fairly among the prompts being read, the short ones get their first
token within a few steps; first-come-first-served prefill would make them wait for all 256k tokens.
Also measured: the same short prompts on an idle server, and when the long prompts finish.

  build/pyenv/bin/python3 bench/prefill_fairness.py

Writes bench/results/prefill_fairness.json.
"""
import argparse
import asyncio
import json
import shutil
import statistics
import time

import grpc

import bench_server


async def first_token_s(stub, pb, ids):
    request = pb.GenerateRequest(tokens=pb.TokenIds(ids=ids),
                                 sampling=pb.SamplingParams(max_tokens=1, temperature=0, ignore_eos=True))
    t0 = time.perf_counter()
    async for response in stub.Generate(request, timeout=900):
        if response.token_ids:
            return time.perf_counter() - t0
    raise RuntimeError("no token")


def prompt(n, seed, vocab):
    return [(seed * 131 + k * 17) % (vocab - 1) + 1 for k in range(n)]


async def run(args, target, pb, pb_grpc):
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.MambaServeStub(channel)
        info = await bench_server.wait_until_loaded(stub, pb)
        vocab = info.vocab_size
        idle = [await first_token_s(stub, pb, prompt(args.short_tokens, 1000 + i, vocab)) for i in range(args.short)]

        t0 = time.perf_counter()
        longs = [asyncio.create_task(first_token_s(stub, pb, prompt(args.long_tokens, i, vocab)))
                 for i in range(args.long)]
        await asyncio.sleep(args.delay_s)
        loaded = await asyncio.gather(*(first_token_s(stub, pb, prompt(args.short_tokens, 2000 + i, vocab))
                                        for i in range(args.short)))
        long_ttft = await asyncio.gather(*longs)
        long_done_s = time.perf_counter() - t0
        return {
            "model": f"{info.architecture} d_model={info.d_model} layers={info.n_layers} vocab={vocab}",
            "backend": f"{info.backend} ({info.device})",
            "max_step_tokens": args.max_step_tokens,
            "long_prompts": args.long, "long_prompt_tokens": args.long_tokens,
            "short_prompts": args.short, "short_prompt_tokens": args.short_tokens,
            "short_ttft_idle_p50_ms": round(1000 * statistics.median(idle), 2),
            "short_ttft_under_long_load_p50_ms": round(1000 * statistics.median(loaded), 2),
            "short_ttft_under_long_load_max_ms": round(1000 * max(loaded), 2),
            "long_prefill_all_done_s": round(long_done_s, 2),
            "long_ttft_p50_s": round(statistics.median(long_ttft), 2),
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=bench_server.DEFAULT_BINARY)
    parser.add_argument("--model", help="checkpoint dir (default: a generated tiny model)")
    parser.add_argument("--long", type=int, default=32)
    parser.add_argument("--long-tokens", type=int, default=8000)
    parser.add_argument("--short", type=int, default=16)
    parser.add_argument("--short-tokens", type=int, default=8)
    parser.add_argument("--delay-s", type=float, default=0.2, help="after the long prompts start")
    parser.add_argument("--max-step-tokens", type=int, default=256)
    parser.add_argument("--threads", default="0")
    args = parser.parse_args()
    work = bench_server.temp_work_dir("mambaserve-fair-")
    try:
        pb, pb_grpc = bench_server.load_stubs(work)
        server_args = ["--threads", args.threads, "--max-step-tokens", str(args.max_step_tokens),
                       "--max-batch", "64", "--max-prompt-tokens", str(max(8192, args.long_tokens))]
        with bench_server.started_server(args.binary, work, server_args, args.model) as (target, _):
            result = asyncio.run(run(args, target, pb, pb_grpc))
        print(json.dumps(result, indent=1))
        print("wrote", bench_server.write_result("prefill_fairness", result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
