"""The real `mambaserve serve` on 127.0.0.1 for the Python end-to-end tests, on a port it picks
(--listen 127.0.0.1:0 + --port-file), its stderr in WORK_DIR/server.log."""
import os
import subprocess
import time


class ServeProcess:
    """Starts the server; the constructor returns once the port is written (the model may still be
    loading). `deadline` is when the start counts as failed, for callers that wait on more."""

    def __init__(self, binary, model_dir, work_dir, *extra, timeout=30):
        self.port_file = os.path.join(work_dir, "port")
        self.log_path = os.path.join(work_dir, "server.log")
        if os.path.exists(self.port_file):
            os.remove(self.port_file)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary, "serve", "--model", model_dir, "--listen", "127.0.0.1:0",
                                      "--port-file", self.port_file, "--threads", "1", *extra],
                                     stderr=self.log)
        self.deadline = time.monotonic() + timeout
        while not os.path.exists(self.port_file):
            if time.monotonic() > self.deadline or self.proc.poll() is not None:
                with open(self.log_path) as f:
                    raise RuntimeError("mambaserve serve did not start:\n" + f.read())
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.port = int(f.read().strip())
        self.target = f"127.0.0.1:{self.port}"
