#!/usr/bin/python3
"""End to end with the real server: `mambaserve serve` (embedded tiny model, CPU) with
--metrics-listen on 127.0.0.1 and its sessions in a real redis-server (--session-store), a real
Prometheus scraping it every second, and traffic from mambactl (the C++ gRPC client). Checks through Prometheus's HTTP API that every metric is there
with its type, that counters equal the traffic sent, that promtool accepts the live /metrics, and
that every rule, alert expression and dashboard query returns data (the device-memory ones
excepted: a CPU backend has no device memory).

Usage: e2e_server_metrics_test.py MAMBASERVE_BINARY MAMBACTL_BINARY
Bounded: gives up after 85 s; the processes it starts are stopped on every exit path.
"""
import concurrent.futures
import json
import pathlib
import socket
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import prom_stack  # noqa: E402
from e2e_prometheus_test import (DASHBOARD, EXPECTED_TYPES, Checks,  # noqa: E402
                                 foreign_families, promtool_check_metrics, with_bool)

MODEL = "tiny-mamba"
CPU_ABSENT = ("mambaserve_device_memory_used_bytes", "mambaserve_device_memory_total_bytes")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    server_bin, client_bin = sys.argv[1], sys.argv[2]

    prom_stack.arm_deadline(85)
    started = time.monotonic()
    checks = Checks()

    stack = prom_stack.Stack([], metrics_port_log_pattern=r"metrics on http://127\.0\.0\.1:(\d+)/metrics")
    grpc_port_file = stack.dir / "grpc.port"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        redis_port = s.getsockname()[1]
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(stack.dir)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.exporter_cmd = [server_bin, "serve", "--listen", "127.0.0.1:0", "--port-file",
                          str(grpc_port_file), "--metrics-listen", "127.0.0.1:0",
                          "--model-cache", str(stack.dir / "model"), "--served-model-name", MODEL,
                          "--max-sessions", "8", "--threads", "1",
                          "--session-store", f"redis://127.0.0.1:{redis_port}"]
    try:
        return run(stack, server_bin, client_bin, checks, started)
    finally:
        redis.kill()
        redis.wait()


def run(stack, server_bin, client_bin, checks, started):
    grpc_port_file = stack.dir / "grpc.port"
    with stack:
        grpc_port = int(prom_stack.wait_for(
            lambda: grpc_port_file.exists() and grpc_port_file.read_text().strip(), 30, "gRPC port"))
        target = f"127.0.0.1:{grpc_port}"
        prom_stack.wait_for(lambda: stack.value('up{job="mambaserve"}') == 1, 20, "first scrape")
        prom_stack.wait_for(lambda: stack.value(f'vllm:num_requests_running{{model_name="{MODEL}"}}')
                            is not None, 20, "engine metrics (model loaded)")

        def ctl(*args, ok=True):
            result = subprocess.run([client_bin, "--target", target, *args], capture_output=True,
                                    text=True, timeout=30)
            if ok and result.returncode != 0:
                raise RuntimeError(f"mambactl {args}: rc={result.returncode} {result.stderr}")
            return result

        # Traffic: 12 plain generations (3 prompt tokens, exactly N new tokens each), two sessions
        # of three turns, one invalid request.
        plain = [8 + 4 * (i % 5) for i in range(12)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(ctl, "generate", "--tokens", "1,2,3", "--max-tokens", str(n),
                                   "--ignore-eos") for n in plain]
            for f in futures:
                f.result()
        turns = []
        for sid in ("chat-a", "chat-b"):
            ctl("session", "create", sid)
            for turn in range(3):
                n = 5 + turn
                ctl("generate", "--session", sid, "--tokens", "4,5,6", "--max-tokens", str(n),
                    "--ignore-eos")
                turns.append(n)
        bad = ctl("generate", "--tokens", "999999999", "--max-tokens", "3", ok=False)
        checks.check(bad.returncode != 0, "an out-of-vocabulary prompt was accepted")
        ctl("info")

        generated = sum(plain) + sum(turns)
        requests = len(plain) + len(turns)
        prompt = 3 * requests
        print(f"traffic done after {time.monotonic() - started:.1f}s: {requests} generations, "
              f"{generated} tokens", flush=True)
        m = f'model_name="{MODEL}"'
        try:
            prom_stack.wait_for(lambda: stack.value(f"sum(vllm:generation_tokens_total{{{m}}})")
                                == generated, 10, "Prometheus to scrape the final counters")
        except TimeoutError:
            pass  # the checks below report the numbers
        time.sleep(2.5)

        metadata = stack.api("metadata")
        for name, want in EXPECTED_TYPES.items():
            if name in CPU_ABSENT:
                continue
            got = metadata.get(name, [{}])[0].get("type")
            checks.check(got == want, f"metadata {name}: type {got}, want {want}")

        checks.equal(stack.value(f"sum(vllm:generation_tokens_total{{{m}}})"), generated,
                     "vllm:generation_tokens_total")
        checks.equal(stack.value(f"sum(vllm:prompt_tokens_total{{{m}}})"), prompt,
                     "vllm:prompt_tokens_total")
        checks.equal(stack.value(f'sum(vllm:request_success_total{{{m},finished_reason="length"}})'),
                     requests, "vllm:request_success_total{length}")
        checks.equal(stack.value(f"sum(vllm:request_generation_tokens_sum{{{m}}})"), generated,
                     "vllm:request_generation_tokens_sum")
        checks.equal(stack.value(f"sum(vllm:time_to_first_token_seconds_count{{{m}}})"), requests,
                     "vllm:time_to_first_token_seconds_count")
        checks.equal(stack.value(f"sum(vllm:inter_token_latency_seconds_count{{{m}}})"),
                     generated - requests, "vllm:inter_token_latency_seconds_count")
        checks.equal(stack.value(f"sum(mambaserve_requests_admitted_total{{{m}}})"), requests,
                     "mambaserve_requests_admitted_total")
        checks.equal(stack.value(
            f'sum(mambaserve_admission_rejections_total{{{m},reason="invalid_request"}})'), 1,
            "mambaserve_admission_rejections_total{invalid_request}")
        checks.equal(stack.value(f'sum(mambaserve_grpc_requests_total{{{m},'
                                 f'method="mambaserve.v1.MambaServe/Generate",code="OK"}})'),
                     requests, "grpc Generate OK")
        checks.equal(stack.value(f'sum(mambaserve_grpc_requests_total{{{m},'
                                 f'method="mambaserve.v1.MambaServe/Generate",code="INVALID_ARGUMENT"}})'),
                     1, "grpc Generate INVALID_ARGUMENT")
        checks.equal(stack.value(f'sum(mambaserve_grpc_requests_total{{{m},'
                                 f'method="mambaserve.v1.MambaServe/CreateSession",code="OK"}})'),
                     2, "grpc CreateSession OK")
        checks.equal(stack.value(f"sum(mambaserve_sessions{{{m}}})"), 2, "mambaserve_sessions")
        # Every session turn's new version went to Redis (written behind: waits for the last).
        prom_stack.wait_for(lambda: stack.value(f"sum(mambaserve_session_store_writes_total{{{m}}})")
                            == len(turns), 10, "every session turn stored")
        checks.equal(stack.value(f"sum(mambaserve_session_store_errors_total{{{m}}})"), 0,
                     "mambaserve_session_store_errors_total")
        steps = stack.value(f"sum(mambaserve_scheduler_step_tokens_sum{{{m}}})")
        checks.check(steps is not None and steps >= generated,
                     f"tokens fed over all steps ({steps}) < tokens generated ({generated})")
        checks.equal(stack.value(f'mambaserve_build_info{{{m},backend="cpu"}}'), 1,
                     "mambaserve_build_info{backend=cpu}")

        body = prom_stack.http_get(stack.metrics_url)
        ok, problems = promtool_check_metrics(body)
        checks.check(ok, f"promtool check metrics: {problems}")
        checks.check(not foreign_families(body), f"unexpected or missing families: "
                     f"{foreign_families(body)}")

        rules = [r for g in stack.api("rules")["groups"] for r in g["rules"]]
        for rule in rules:
            name = rule["name"]
            checks.check(rule["health"] == "ok", f"rule {name}: {rule.get('lastError')}")
            if "device_memory" in name:
                continue
            if rule["type"] == "recording":
                checks.check(bool(stack.query(name)), f"recorded series {name} has no data")
            else:
                expr = with_bool(rule["query"])
                checks.check(bool(stack.query(expr)), f"alert {name} ({expr}) has no data")
        dashboard = json.loads(DASHBOARD.read_text())
        queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
        for title, expr in queries:
            if "device_memory" in expr:
                continue
            concrete = expr.replace("$model_name", ".+")
            checks.check(bool(stack.query(concrete)), f"panel '{title}': {concrete} has no data")

    print(f"{checks.passed} checks passed, {len(checks.failed)} failed "
          f"({len(rules)} rules, {len(queries)} dashboard queries, "
          f"{time.monotonic() - started:.1f}s)")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
