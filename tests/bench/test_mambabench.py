#!/usr/bin/python3
"""mambabench against a real server (a tiny generated model): every request it counts was served
and every token it counts arrived; errors are counted by code; the multi-turn mode's two ways of
holding a conversation see the same history lengths; the in-process comparison is reported; the
plot script draws every figure from the result; bench/mambabench_live.sh starts, measures and stops
a server in one command. Stdlib only (plus Debian's python3-matplotlib for
the plots, run with /usr/bin/python3).

  tests/bench/test_mambabench.py --mambaserve BIN --mambabench BIN
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def start_server(mambaserve, model, work, *extra):
    port_file = work / "port"
    log = open(work / "server.log", "w")
    proc = subprocess.Popen([mambaserve, "serve", "--model", str(model), "--listen", "127.0.0.1:0",
                             "--port-file", str(port_file), "--metrics-listen", "off", "--threads", "1",
                             *extra], stderr=log)
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("mambaserve did not start: " + (work / "server.log").read_text())
        time.sleep(0.05)
    return proc, f"127.0.0.1:{port_file.read_text().strip()}"


def bench(mambabench, out, *args):
    subprocess.run([mambabench, *args, "--out", str(out)], check=True, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mambaserve", required=True)
    parser.add_argument("--mambabench", required=True)
    args = parser.parse_args()
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    with tempfile.TemporaryDirectory(prefix="mambabench-test-") as tmp:
        work = pathlib.Path(tmp)
        model = work / "model"
        subprocess.run([args.mambaserve, "make-model", "--preset", "tiny", "--seed", "3", "--out", str(model)],
                       check=True, stdout=subprocess.DEVNULL)
        server, target = start_server(args.mambaserve, model, work, "--max-tokens-limit", "6")
        try:
            # Closed loop at two levels, beside the same workload in process.
            r = bench(args.mambabench, work / "loop.json", "--target", target, "--concurrency", "1,3",
                      "--requests", "6", "--prompt-tokens", "4:9", "--output-tokens", "5",
                      "--compare-in-process", str(model), "--threads", "1", "--rounds", "2")
            check([lv["level"] for lv in r["levels"]] == [1, 3], f"levels {r['levels']}")
            for lv in r["levels"] + r["in_process_levels"]:
                check(lv["requests_ok"] == 6 and lv["errors"] == {}, f"level {lv['level']}: {lv['errors']}")
                check(lv["output_tokens"] == 30, f"level {lv['level']}: {lv['output_tokens']} tokens")
                check(lv["ttft"]["samples"] == 6 and lv["inter_token"]["samples"] == 24,
                      f"level {lv['level']}: samples {lv['ttft']['samples']}, {lv['inter_token']['samples']}")
                check(0 < lv["ttft"]["p50_ms"] <= lv["ttft"]["p99_ms"], f"ttft {lv['ttft']}")
                check(lv["output_tokens_per_s"] > 0, "no throughput")
            for lv in r["levels"]:
                check(lv["fraction_of_in_process_throughput"] > 0, "no in-process comparison")
                check(len(lv["fraction_of_in_process_by_round"]) == 2 and
                      all(x > 0 for x in lv["fraction_of_in_process_by_round"]),
                      f"rounds {lv.get('fraction_of_in_process_by_round')}")

            # Requests the server refuses are counted by code, not as tokens.
            r = bench(args.mambabench, work / "refused.json", "--target", target, "--concurrency", "2",
                      "--requests", "4", "--prompt-tokens", "3", "--output-tokens", "7")
            lv = r["levels"][0]
            check(lv["errors"] == {"INVALID_ARGUMENT": 4} and lv["requests_ok"] == 0,
                  f"refused: {lv['errors']}, ok {lv['requests_ok']}")

            # Poisson arrivals.
            r = bench(args.mambabench, work / "poisson.json", "--target", target, "--rates", "50",
                      "--requests", "5", "--prompt-tokens", "3", "--output-tokens", "2")
            check(r["levels"][0]["kind"] == "poisson" and r["levels"][0]["requests_ok"] == 5,
                  f"poisson {r['levels'][0]}")

            # Multi-turn: both modes, the same history lengths, every turn served.
            r = bench(args.mambabench, work / "turns.json", "--target", target, "--multi-turn", "2:3",
                      "--turn-tokens", "8", "--output-tokens", "4")
            session, resend = r["multi_turn"]["session"]["turns"], r["multi_turn"]["resend_history"]["turns"]
            check(len(session) == 3 and len(resend) == 3, "turns")
            check([t["history_tokens_mean"] for t in session] == [8, 20, 32], f"history {session}")
            check([t["history_tokens_mean"] for t in resend] == [8, 20, 32], f"history {resend}")
            check(all(t["errors"] == {} and t["ttft"]["samples"] == 2 for t in session + resend), "turn errors")

            r["levels"] = json.loads((work / "loop.json").read_text())["levels"]
            r["in_process_levels"] = json.loads((work / "loop.json").read_text())["in_process_levels"]
            (work / "all.json").write_text(json.dumps(r))
            plots = subprocess.run(["/usr/bin/python3", str(ROOT / "bench" / "plot_mambabench.py"),
                                    str(work / "all.json")], check=True, capture_output=True, text=True)
            drawn = plots.stdout.split()
            check(len(drawn) == 3 and all(pathlib.Path(p).stat().st_size > 1000 for p in drawn), f"plots {drawn}")
        finally:
            server.terminate()
            server.wait(timeout=20)

        # The one-command live measurement (what gpu-check.sh runs against a CUDA server): it
        # starts its own server, measures, and stops it; a server that cannot start fails it.
        live_script = str(ROOT / "bench" / "mambabench_live.sh")
        live = work / "live.json"
        run = subprocess.run([live_script, "--mambaserve", args.mambaserve, "--mambabench", args.mambabench,
                              "--model", str(model), "--backend", "cpu", "--serve-args", "--threads 1",
                              "--out", str(live), "--", "--concurrency", "2", "--requests", "4",
                              "--prompt-tokens", "3", "--output-tokens", "4"],
                             timeout=120, capture_output=True, text=True)
        check(run.returncode == 0, f"mambabench_live.sh exit {run.returncode}: {run.stderr[-500:]}")
        if run.returncode == 0:
            lv = json.loads(live.read_text())["levels"][0]
            check(lv["requests_ok"] == 4 and lv["output_tokens"] == 16 and lv["errors"] == {},
                  f"live: {lv['requests_ok']} ok, {lv['output_tokens']} tokens, {lv['errors']}")
        pid = next((w.split()[-1] for w in run.stdout.split("\n") if ", pid " in w), None)
        check(pid is not None and not pathlib.Path(f"/proc/{pid}").exists(), f"server {pid} left running")

        # Long streams through a live server: samples every 100 tokens of the first stream, the
        # server's resident memory (its pid, passed by the script) and the time per token; the
        # flat-over-length plot draws them.
        long_out = work / "flat_over_length_live.json"
        run = subprocess.run([live_script, "--mambaserve", args.mambaserve, "--mambabench", args.mambabench,
                              "--model", str(model), "--backend", "cpu",
                              "--serve-args", "--threads 1 --max-tokens-limit 300",
                              "--out", str(long_out), "--", "--long-streams", "2", "--long-tokens", "300",
                              "--sample-every", "100", "--prompt-tokens", "5", "--label", "tiny"],
                             timeout=120, capture_output=True, text=True)
        check(run.returncode == 0, f"long streams: exit {run.returncode}: {run.stderr[-500:]}")
        if run.returncode == 0:
            r = json.loads(long_out.read_text())
            pid = next((w.split()[-1] for w in run.stdout.split("\n") if ", pid " in w), None)
            check(r["streams"] == 2 and [s["tokens"] for s in r["samples"]] == [100, 200, 300],
                  f"long-stream samples {r['samples']}")
            check(str(r.get("rss_pid")) == pid, f"memory sampled from {r.get('rss_pid')}, server {pid}")
            check(all(s["rss_bytes"] > 1 << 20 and s["ms_per_token"] > 0 for s in r["samples"]),
                  f"long-stream samples {r['samples']}")
            check("rss_growth" in r and "per_token_drift" in r, f"long-stream result {list(r)}")
            plot = subprocess.run(["/usr/bin/python3", str(ROOT / "bench" / "plot_flat_over_length.py"),
                                   str(long_out)], check=True, capture_output=True, text=True)
            check(pathlib.Path(plot.stdout.strip()).stat().st_size > 1000, f"flat plot {plot.stdout}")
        # More tokens than the server allows: the stream's refusal ends the run with an error.
        refused = subprocess.run([live_script, "--mambaserve", args.mambaserve, "--mambabench", args.mambabench,
                                  "--model", str(model), "--backend", "cpu", "--serve-args", "--threads 1",
                                  "--out", str(work / "long_refused.json"), "--", "--long-streams", "1",
                                  "--long-tokens", "100000"], timeout=120, capture_output=True, text=True)
        check(refused.returncode != 0 and "max_tokens" in refused.stderr,
              f"refused long stream: exit {refused.returncode}, {refused.stderr[-300:]}")
        bad = subprocess.run([live_script, "--mambaserve", args.mambaserve, "--mambabench", args.mambabench,
                              "--model", str(work / "no-such-model"), "--backend", "cpu",
                              "--out", str(work / "bad.json")], timeout=60, capture_output=True, text=True)
        check(bad.returncode == 1 and "exited before serving" in bad.stderr,
              f"a server that cannot start: exit {bad.returncode}, {bad.stderr[-300:]}")

    for f in failures:
        print("FAIL:", f)
    print(f"mambabench: {'ok' if not failures else f'{len(failures)} failures'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
