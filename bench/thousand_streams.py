#!/usr/bin/env python3
"""1,000 concurrent streams on the tiny model, before and after adding tens of thousands of idle
sessions: every stream must end well-formed (OK, exactly one final response carrying the finish
reason and usage, as many token ids as the usage says), and the scheduler's mean step time, read
from the server's own step histogram, must not grow with the idle sessions.

  build/pyenv/bin/python3 bench/thousand_streams.py [--streams 1000] [--idle-sessions 60000]

Writes bench/results/thousand_streams.json. A benchmark, not a test: it reports, it does not time
out on slowness.
"""
import argparse
import asyncio
import json
import shutil
import time

import grpc

import bench_server


async def one_stream(stub, pb, i, vocab, max_tokens):
    request = pb.GenerateRequest(
        tokens=pb.TokenIds(ids=[(i * 31 + k * 7) % (vocab - 1) + 1 for k in range(16)]),
        sampling=pb.SamplingParams(max_tokens=max_tokens, temperature=0.8, seed=i, ignore_eos=True))
    t0 = time.perf_counter()
    first = None
    tokens = finals = responses = 0
    last = None
    problems = []
    call = stub.Generate(request, timeout=900)
    try:
        async for response in call:
            responses += 1
            if response.token_ids and first is None:
                first = time.perf_counter() - t0
            tokens += len(response.token_ids)
            if response.finish_reason:
                finals += 1
            last = response
    except grpc.aio.AioRpcError as e:
        return {"ok": False, "problem": f"{e.code().name}: {e.details()}"}
    if finals != 1 or last is None or not last.finish_reason:
        problems.append(f"{finals} final responses")
    elif last.usage.generated_tokens != tokens or tokens != max_tokens:
        problems.append(f"usage says {last.usage.generated_tokens} tokens, stream carried {tokens}")
    return {"ok": not problems, "problem": "; ".join(problems), "ttft": first, "tokens": tokens}


async def streams_round(stub, pb, metrics_url, streams, vocab, max_tokens):
    before = bench_server.scrape(metrics_url)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one_stream(stub, pb, i, vocab, max_tokens) for i in range(streams)))
    wall = time.perf_counter() - t0
    after = bench_server.scrape(metrics_url)
    step_s, steps = bench_server.mean_step_seconds(before, after)
    bad = [r["problem"] for r in results if not r["ok"]]
    ttft = [r["ttft"] for r in results if r.get("ttft") is not None]
    return {
        "streams": streams,
        "well_formed": streams - len(bad),
        "errors": sorted(set(bad))[:10],
        "generated_tokens": sum(r.get("tokens", 0) for r in results),
        "wall_s": round(wall, 2),
        "aggregate_tokens_per_s": round(sum(r.get("tokens", 0) for r in results) / wall, 1),
        "ttft_p50_ms": round(1000 * bench_server.percentile(ttft, 0.5), 1) if ttft else None,
        "ttft_p99_ms": round(1000 * bench_server.percentile(ttft, 0.99), 1) if ttft else None,
        "scheduler_steps": steps,
        # The forward pass and sampling, as the step histogram times them...
        "mean_step_ms": round(1000 * step_s, 3) if step_s else None,
        # ...and the whole loop iteration (admission, bookkeeping, stats included).
        "wall_per_step_ms": round(1000 * wall / steps, 3) if steps else None,
    }


async def add_idle_sessions(stub, pb, count, with_state, vocab):
    """Creates `count` sessions; the first `with_state` get one short turn (so they hold a state
    that is parked to host memory once the slots run out). Returns the seconds it took."""
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(64)

    async def create(i):
        async with sem:
            await stub.CreateSession(pb.CreateSessionRequest(session_id=f"idle-{i}"), timeout=60)
            if i < with_state:
                async for _ in stub.Generate(pb.GenerateRequest(
                        session_id=f"idle-{i}", tokens=pb.TokenIds(ids=[1 + i % (vocab - 1)]),
                        sampling=pb.SamplingParams(max_tokens=1, ignore_eos=True)), timeout=60):
                    pass

    await asyncio.gather(*(create(i) for i in range(count)))
    return time.perf_counter() - t0


async def run(args, target, metrics_url, pb, pb_grpc):
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.MambaServeStub(channel)
        info = await bench_server.wait_until_loaded(stub, pb)
        vocab = info.vocab_size
        print(f"round 1: {args.streams} streams, no idle sessions", flush=True)
        without = await streams_round(stub, pb, metrics_url, args.streams, vocab, args.max_tokens)
        print(json.dumps(without), flush=True)
        print(f"adding {args.idle_sessions} idle sessions ({args.parked} with a parked state)", flush=True)
        setup_s = await add_idle_sessions(stub, pb, args.idle_sessions, args.parked, vocab)
        info = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=60)
        print(f"round 2: {args.streams} streams beside {info.sessions} sessions ({info.sessions_parked} parked)",
              flush=True)
        beside = await streams_round(stub, pb, metrics_url, args.streams, vocab, args.max_tokens)
        print(json.dumps(beside), flush=True)
        return {
            "model": f"{info.architecture} d_model={info.d_model} layers={info.n_layers} vocab={vocab}",
            "backend": f"{info.backend} ({info.device})",
            "max_tokens": args.max_tokens,
            "without_idle_sessions": without,
            "idle_sessions": info.sessions, "parked_sessions": info.sessions_parked,
            "idle_setup_s": round(setup_s, 1),
            "beside_idle_sessions": beside,
            "wall_per_step_ratio_beside_vs_without": (
                round(beside["wall_per_step_ms"] / without["wall_per_step_ms"], 3)
                if beside["wall_per_step_ms"] and without["wall_per_step_ms"] else None),
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=bench_server.DEFAULT_BINARY)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--idle-sessions", type=int, default=60000)
    parser.add_argument("--parked", type=int, default=2000, help="idle sessions given a state")
    parser.add_argument("--threads", default="0")
    args = parser.parse_args()
    work = bench_server.temp_work_dir("mambaserve-1k-")
    try:
        pb, pb_grpc = bench_server.load_stubs(work)
        server_args = ["--threads", args.threads, "--max-sessions", str(args.streams + 24),
                       "--max-batch", str(args.streams), "--max-queue", str(2 * args.streams),
                       "--max-step-tokens", str(4 * args.streams), "--stream-buffer", "64",
                       "--max-named-sessions", str(args.idle_sessions + args.streams + 1000),
                       "--host-state-budget-mb", "4096", "--session-ttl-s", "0"]
        with bench_server.started_server(args.binary, work, server_args) as (target, metrics_url):
            result = asyncio.run(run(args, target, metrics_url, pb, pb_grpc))
        path = bench_server.write_result("thousand_streams", result)
        print(json.dumps(result, indent=1))
        print("wrote", path)
        bad = result["without_idle_sessions"]["errors"] or result["beside_idle_sessions"]["errors"]
        raise SystemExit(1 if bad else 0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
