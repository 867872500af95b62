"""A real Prometheus scraping a real metrics endpoint, started and cleaned up by the caller.

Stdlib only (runs under Debian's /usr/bin/python3). Used by e2e_prometheus_test.py and by
scripts/render-dashboard-preview.py. Everything listens on 127.0.0.1; the processes die with the
Python process even if it is killed (PR_SET_PDEATHSIG), and are terminated by close() otherwise.
"""
import ctypes
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[3]
RULE_FILES = [REPO / "deploy/prometheus/recording_rules.yml", REPO / "deploy/prometheus/alerts.yml"]
JOB = "mambaserve"

_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgrp()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def arm_deadline(seconds):
    """Bounds a whole test: past `seconds` it raises TimeoutError (so `with Stack` still cleans
    up), and SIGTERM from ctest exits the same way."""
    def on_alarm(*_):
        raise TimeoutError(f"end-to-end test exceeded its {seconds} s budget")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.alarm(seconds)


def wait_for(predicate, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_error = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" +
                       (f" (last error: {last_error})" if last_error else ""))


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode("utf-8")


class Stack:
    """exporter_cmd must accept --listen 127.0.0.1:0 --port-file PATH (added here)."""

    def __init__(self, exporter_cmd, scrape_interval="1s", prometheus="prometheus",
                 retention="1h", keep_dir=False, metrics_port_log_pattern=None):
        """With metrics_port_log_pattern, exporter_cmd is run as given and the metrics port is the
        regex's group 1 in its output (a real `mambaserve serve` logs it)."""
        self.exporter_cmd = list(exporter_cmd)
        self.metrics_port_log_pattern = metrics_port_log_pattern
        self.scrape_interval = scrape_interval
        self.prometheus_bin = shutil.which(prometheus) or prometheus
        self.retention = retention
        self.keep_dir = keep_dir
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="mambaserve-prom-"))
        self.procs = []
        self.exporter_port = None
        self.prometheus_url = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self):
        if self.metrics_port_log_pattern:
            self._spawn("exporter", self.exporter_cmd)
            log = self.dir / "exporter.log"
            pattern = re.compile(self.metrics_port_log_pattern)
            self.exporter_port = int(wait_for(
                lambda: (m := pattern.search(log.read_text(errors="replace"))) and m.group(1),
                30, "metrics port in the server log"))
        else:
            port_file = self.dir / "exporter.port"
            self._spawn("exporter", self.exporter_cmd +
                        ["--listen", "127.0.0.1:0", "--port-file", str(port_file)])
            self.exporter_port = int(wait_for(
                lambda: port_file.exists() and port_file.read_text().strip(), 15, "exporter port"))
        self.metrics_url = f"http://127.0.0.1:{self.exporter_port}/metrics"
        wait_for(lambda: http_get(self.metrics_url), 10, "exporter /metrics")

        config = self.dir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {self.scrape_interval}\n"
            f"  evaluation_interval: {self.scrape_interval}\n"
            "rule_files:\n" + "".join(f"  - {p}\n" for p in RULE_FILES) +
            "scrape_configs:\n"
            f"  - job_name: {JOB}\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{self.exporter_port}']\n")
        for attempt in range(3):
            port = _free_port()
            proc = self._spawn("prometheus", [
                self.prometheus_bin, f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--storage.tsdb.retention.time={self.retention}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"])
            self.prometheus_url = f"http://127.0.0.1:{port}"
            try:
                wait_for(lambda: proc.poll() is None and
                         "Ready" in http_get(self.prometheus_url + "/-/ready"), 20,
                         "Prometheus ready")
                return self
            except TimeoutError:
                if proc.poll() is None or attempt == 2:
                    raise
                self.procs.remove(proc)  # port taken between probe and bind: try another
        return self

    def _spawn(self, name, cmd):
        log = open(self.dir / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
        proc.name = name
        self.procs.append(proc)
        return proc

    def logs(self):
        out = []
        for name in ("exporter", "prometheus"):
            path = self.dir / f"{name}.log"
            if path.exists():
                out.append(f"--- {name}.log (tail) ---\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def close(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            print(self.logs())
            self.close()
            raise

    def __exit__(self, *exc):
        if exc[0] is not None:
            print(self.logs())
        self.close()

    # -- Prometheus HTTP API ---------------------------------------------------------------------
    def api(self, path, **params):
        url = f"{self.prometheus_url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        body = json.loads(http_get(url, timeout=10))
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def query_range(self, expr, start, end, step):
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def value(self, expr):
        """The single value of `expr`, or None when it returns nothing."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) != 1:
            raise AssertionError(f"{expr}: expected one series, got {len(result)}")
        return float(result[0]["value"][1])
