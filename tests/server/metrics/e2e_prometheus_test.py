#!/usr/bin/python3
"""End to end: a real Prometheus scrapes the metrics endpoint every second while synthetic traffic
runs, then the test checks, through Prometheus's HTTP API, that

  * every exported metric is there with the right type (/api/v1/metadata),
  * counters equal the traffic that was sent,
  * `promtool check metrics` accepts the live /metrics body,
  * every recording rule and alert loaded healthy, and every recorded series, every alert
    expression (comparisons in `bool` form) and every dashboard query returns data.

Usage: e2e_prometheus_test.py EXPORTER_BINARY   (CTest passes the built metrics_test_exporter)
Bounded: gives up after 85 s; the processes it starts are stopped on every exit path.
"""
import json
import pathlib
import re
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import prom_stack  # noqa: E402

REPO = prom_stack.REPO
DASHBOARD = REPO / "deploy/grafana/mambaserve-dashboard.json"
MODEL = "mamba-130m"

EXPECTED_TYPES = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:gpu_cache_usage_perc": "gauge",
    "vllm:prompt_tokens_total": "counter",
    "vllm:generation_tokens_total": "counter",
    "vllm:request_success_total": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:time_per_output_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_inference_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
    "mambaserve_state_slots_capacity": "gauge",
    "mambaserve_state_slots": "gauge",
    "mambaserve_sessions": "gauge",
    "mambaserve_sessions_parked_on_host": "gauge",
    "mambaserve_state_bytes_per_session": "gauge",
    "mambaserve_state_pool_bytes": "gauge",
    "mambaserve_state_memory_bytes": "gauge",
    "mambaserve_device_memory_used_bytes": "gauge",
    "mambaserve_device_memory_total_bytes": "gauge",
    "mambaserve_session_events_total": "counter",
    "mambaserve_scheduler_step_batch_size": "histogram",
    "mambaserve_scheduler_step_tokens": "histogram",
    "mambaserve_scheduler_step_duration_seconds": "histogram",
    "mambaserve_requests_admitted_total": "counter",
    "mambaserve_admission_rejections_total": "counter",
    "mambaserve_grpc_requests_total": "counter",
    "mambaserve_build_info": "gauge",
    "mambaserve_session_store_loads_total": "counter",
    "mambaserve_session_store_writes_total": "counter",
    "mambaserve_session_store_written_bytes_total": "counter",
    "mambaserve_session_store_write_seconds_total": "counter",
    "mambaserve_session_store_lease_conflicts_total": "counter",
    "mambaserve_session_store_errors_total": "counter",
    "mambaserve_session_store_unstored_sessions": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_cpu_seconds_total": "counter",
}

# prometheus-cpp's exposer adds these to every /metrics; nothing else outside vllm:, mambaserve_ and
# process_ may appear.
EXPOSER_FAMILIES = {"exposer_transferred_bytes_total", "exposer_scrapes_total",
                    "exposer_request_latencies"}

_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)")


def with_bool(expr):
    """`a > 2 and b == 0` -> `a > bool 2 and b == bool 0`: returns a 0/1 series wherever the
    operands exist, so "does this alert expression return data" does not depend on it firing.
    Label matchers inside {...} and quoted strings are left alone."""
    out, depth, quote, i = [], 0, None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            out.append(c)
            if c == "\\":
                out.append(expr[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
            out.append(c)
        elif c == "{":
            depth += 1
            out.append(c)
        elif c == "}":
            depth -= 1
            out.append(c)
        elif depth == 0 and (m := _COMPARISON.match(expr, i)) and expr[i:i + 2] not in ("=~", "!~"):
            op = m.group(1)
            rest = expr[i + len(op):]
            out.append(op if rest.lstrip().startswith("bool") else op + " bool")
            i += len(op)
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


class Checks:
    def __init__(self):
        self.passed, self.failed = 0, []

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
            print(f"FAIL: {what}", flush=True)

    def equal(self, got, want, what):
        self.check(got is not None and abs(got - want) < 1e-6, f"{what}: got {got}, want {want}")


def promtool_check_metrics(body):
    """promtool's only objection may be the ':' in vLLM's names, which compatibility requires."""
    result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                            text=True, timeout=30)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and not re.match(r"^vllm:\S+ metric names should not contain ':'$",
                                                 line)]
    return result.returncode in (0, 3) and not problems, problems


def foreign_families(body):
    """Families on a live /metrics that are neither mambaserve's nor prometheus-cpp's exposer's."""
    names = set(re.findall(r"^# TYPE (\S+) ", body, re.M))
    ours = {n for n in names if n.startswith(("vllm:", "mambaserve_", "process_"))}
    return (names - ours) ^ EXPOSER_FAMILIES


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    exporter = sys.argv[1]

    prom_stack.arm_deadline(85)
    started = time.monotonic()

    checks = Checks()
    stack = prom_stack.Stack([exporter, "--model-name", MODEL, "--requests", "120",
                              "--concurrency", "6", "--token-ms", "10"])
    stack.exporter_cmd += ["--start-file", str(stack.dir / "start"),
                           "--summary", str(stack.dir / "summary.json")]
    with stack:
        run_dir = stack.dir
        # Prometheus has the idle exporter's zeros before any traffic, so increase() sees it all.
        prom_stack.wait_for(lambda: stack.value(f'up{{job="{prom_stack.JOB}"}}') == 1, 20,
                            "first successful scrape")
        time.sleep(1.5)
        (run_dir / "start").touch()
        summary_path = run_dir / "summary.json"
        summary = json.loads(prom_stack.wait_for(
            lambda: summary_path.exists() and summary_path.read_text(), 45, "traffic to finish"))
        print(f"traffic done after {time.monotonic() - started:.1f}s: {summary}", flush=True)
        prom_stack.wait_for(
            lambda: stack.value(f'sum(vllm:generation_tokens_total{{model_name="{MODEL}"}})')
            == summary["generation_tokens"], 10, "Prometheus to scrape the final counters")
        time.sleep(2.5)  # two rule evaluations over the final samples

        # 1. Every metric with its type.
        metadata = stack.api("metadata")
        for name, want in EXPECTED_TYPES.items():
            got = metadata.get(name, [{}])[0].get("type")
            checks.check(got == want, f"metadata {name}: type {got}, want {want}")

        # 2. Counters equal the traffic.
        m = f'model_name="{MODEL}"'
        checks.equal(stack.value(f"sum(vllm:generation_tokens_total{{{m}}})"),
                     summary["generation_tokens"], "vllm:generation_tokens_total")
        checks.equal(stack.value(f"sum(vllm:prompt_tokens_total{{{m}}})"),
                     summary["prompt_tokens"], "vllm:prompt_tokens_total")
        checks.equal(stack.value(f"sum(vllm:request_generation_tokens_sum{{{m}}})"),
                     summary["generation_tokens"], "vllm:request_generation_tokens_sum")
        checks.equal(stack.value(f"sum(mambaserve_requests_admitted_total{{{m}}})"),
                     summary["admitted"], "mambaserve_requests_admitted_total")
        checks.equal(stack.value(f"sum(vllm:e2e_request_latency_seconds_count{{{m}}})"),
                     summary["admitted"], "vllm:e2e_request_latency_seconds_count")
        for reason in ("stop", "length", "abort"):
            checks.equal(stack.value(
                f'sum(vllm:request_success_total{{{m},finished_reason="{reason}"}})'),
                summary["finished"].get(reason, 0), f"vllm:request_success_total{{{reason}}}")
        for reason, n in summary["rejected"].items():
            checks.equal(stack.value(
                f'sum(mambaserve_admission_rejections_total{{{m},reason="{reason}"}})'), n,
                f"mambaserve_admission_rejections_total{{{reason}}}")
        for key, n in summary["grpc"].items():
            method, code = key.split("/")
            checks.equal(stack.value(
                f'sum(mambaserve_grpc_requests_total{{{m},method="{method}",code="{code}"}})'), n,
                f"mambaserve_grpc_requests_total{{{key}}}")
        checks.equal(stack.value(
            f"sum(increase(vllm:generation_tokens_total{{{m}}}[5m]))") is not None and 1, 1,
            "increase() over the run has data")

        # 3. promtool check metrics on the live body.
        body = prom_stack.http_get(stack.metrics_url)
        ok, problems = promtool_check_metrics(body)
        checks.check(ok, f"promtool check metrics: {problems}")
        checks.check(not foreign_families(body), f"unexpected or missing families: "
                      f"{foreign_families(body)}")

        # 4. Rules: loaded healthy; recorded series, rule queries, alert conditions return data.
        rules = [r for g in stack.api("rules")["groups"] for r in g["rules"]]
        checks.check(len(rules) >= 40, f"only {len(rules)} rules loaded")
        for rule in rules:
            name = rule["name"]
            checks.check(rule["health"] == "ok", f"rule {name}: {rule.get('lastError')}")
            if rule["type"] == "recording":
                checks.check(bool(stack.query(name)), f"recorded series {name} has no data")
                checks.check(bool(stack.query(rule["query"])), f"rule {name} query has no data")
            else:
                expr = with_bool(rule["query"])
                checks.check(bool(stack.query(expr)), f"alert {name} ({expr}) has no data")

        # 5. Every dashboard query, with $model_name = all.
        dashboard = json.loads(DASHBOARD.read_text())
        queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
        for title, expr in queries:
            concrete = expr.replace("$model_name", ".+")
            checks.check(bool(stack.query(concrete)), f"panel '{title}': {concrete} has no data")
        variable = dashboard["templating"]["list"][1]["query"]["query"]
        metric = re.match(r"label_values\(([^,]+),", variable).group(1)
        checks.check(bool(stack.query(metric)), f"variable query metric {metric} has no data")

    elapsed = time.monotonic() - started
    print(f"{checks.passed} checks passed, {len(checks.failed)} failed "
          f"({len(rules)} rules, {len(queries)} dashboard queries, {elapsed:.1f}s)")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
