"""Shared pieces of the serving benchmarks: start a mambaserve server on this machine, load the
generated gRPC stubs, scrape its Prometheus metrics. Runs on the test venv's Python
(scripts/python-test-env.sh: Debian's python3-grpcio)."""
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BINARY = os.path.join(ROOT, "build/cpu/bin/mambaserve")


def load_stubs(work):
    """Generates and imports the mambaserve.v1 Python stubs (the tests' helper); returns (pb, pb_grpc)."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "testing"))
    from proto_stubs import compile_protos
    return compile_protos(os.path.join(ROOT, "proto"), work)


async def wait_until_loaded(stub, pb):
    """The server listens before its model is loaded: waits until GetModelInfo answers; returns it."""
    import asyncio
    import grpc
    while True:
        try:
            return await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=60)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def started_server(binary, work, extra_args, model=None):
    """Starts `mambaserve serve` on 127.0.0.1 (tiny model unless `model`), yields
    (grpc_target, metrics_url) once it listens, stops it with SIGTERM afterwards."""
    if model is None:
        model = os.path.join(work, "model")
        subprocess.run([binary, "make-model", "--preset", "tiny", "--out", model], check=True,
                       stdout=subprocess.DEVNULL)
    port_file = os.path.join(work, "port")
    metrics_port = free_port()
    log = open(os.path.join(work, "server.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--model", model, "--listen", "127.0.0.1:0", "--port-file", port_file,
                             "--metrics-listen", f"127.0.0.1:{metrics_port}", *extra_args], stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(port_file):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("server did not start: " + open(log.name).read()[-2000:])
            time.sleep(0.05)
        with open(port_file) as f:
            yield "127.0.0.1:" + f.read().strip(), f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def scrape(metrics_url):
    """{series: value} of the plain samples on /metrics (labels dropped: one model per server)."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if m and not (m.group(2) and "le=" in m.group(2)):
            values[m.group(1)] = values.get(m.group(1), 0.0) + float(m.group(3))
    return values


def mean_step_seconds(before, after):
    """Mean scheduler step time between two scrapes."""
    name = "mambaserve_scheduler_step_duration_seconds"
    steps = after[name + "_count"] - before.get(name + "_count", 0.0)
    return (after[name + "_sum"] - before.get(name + "_sum", 0.0)) / steps if steps else None, int(steps)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def write_result(name, result):
    """Writes bench/results/NAME.json and returns its path."""
    import json
    path = os.path.join(ROOT, "bench", "results", name + ".json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    return path


def temp_work_dir(prefix):
    return tempfile.mkdtemp(prefix=prefix)
