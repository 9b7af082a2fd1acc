"""The real `omniserve serve` in a subprocess on a free port, shared by the tests/test_server_*.py files.

One server per test session (startup imports torch twice: API process and engine process): a tiny Qwen2
checkpoint, CPU, an API key, and small limits so the oversize cases are cheap to provoke.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

API_KEY = "sk-test-omniserve"
MAX_REQUEST_BYTES = 300_000
MAX_UPLOAD_BYTES = 200_000
MAX_MODEL_LEN = 512
NUM_KV_BLOCKS = 512
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    base_url: str
    api_key: str
    model: str
    process: subprocess.Popen
    log_path: Path
    storage_dir: Path

    def client(self, api_key: str | None = API_KEY, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(
            base_url=self.base_url, headers=headers, timeout=kwargs.pop("timeout", 60.0), **kwargs
        )

    def metrics(self) -> dict[str, float]:
        """Prometheus samples by name (labels other than model_name kept in the key)."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=30).text
        samples = {}
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match:
                name, labels, value = match.groups()
                labels = re.sub(r'model_name="[^"]*",?', "", labels or "").replace("{}", "")
                samples[name + labels] = float(value)
        return samples

    def log_tail(self, num_chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-num_chars:]


def start_server(checkpoint: Path, work_dir: Path, timeout_s: float = 180.0) -> RunningServer:
    port = free_port()
    log_path = work_dir / "server.log"
    storage = work_dir / "files"
    command = [
        sys.executable, "-m", "omniserve", "serve", str(checkpoint),
        "--host", "127.0.0.1", "--port", str(port),
        "--device", "cpu", "--api-key", API_KEY, "--served-model-name", "tiny-qwen2",
        "--max-request-bytes", str(MAX_REQUEST_BYTES), "--max-upload-bytes", str(MAX_UPLOAD_BYTES),
        "--max-storage-bytes", str(10 * MAX_UPLOAD_BYTES), "--file-storage-dir", str(storage),
        "--max-model-len", str(MAX_MODEL_LEN), "--num-kv-blocks", str(NUM_KV_BLOCKS), "--block-size", "16",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    env = dict(os.environ, OMNISERVE_CACHE_DIR=str(work_dir / "cache"), OMNISERVE_LOG_LEVEL="WARNING")
    log = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = RunningServer(f"http://127.0.0.1:{port}", API_KEY, "tiny-qwen2", process, log_path, storage)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"the server did not become healthy in {timeout_s} s:\n{server.log_tail()}")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


_SHARED: dict[str, RunningServer] = {}


def shared_server(request: pytest.FixtureRequest, checkpoint_factory, tmp_path_factory) -> RunningServer:
    """The session's server, started on first use; every test_server_*.py wraps this in its `server`
    fixture (a fixture imported into several modules would start one server per module)."""
    if "server" not in _SHARED:
        checkpoint = checkpoint_factory("server-qwen2", seed=0)
        _SHARED["server"] = start_server(checkpoint, tmp_path_factory.mktemp("server"))
        request.session.config.add_cleanup(lambda: stop_server(_SHARED.pop("server")))
    running = _SHARED["server"]
    if running.process.poll() is not None:
        pytest.fail(f"the shared server died:\n{running.log_tail()}")
    return running
