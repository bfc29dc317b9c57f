"""Servers for the HTTP tests on 127.0.0.1: in a thread of the test process, or as a `colbert-onnx serve` process.

Both run the production `GracefulServer` (server/main.py); every wait is bounded.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.server_process import free_port, wait_until_ready
from colbert_onnx.server import ServerConfig, create_app
from colbert_onnx.server.main import GracefulServer, make_server

# One TLS context for every test client (the servers speak plain HTTP): httpx builds one, loading the CA bundle, per
# Client and per top-level call, which cost ~50 s of the default suite's thousands of loopback requests.
TLS = httpx.create_ssl_context()


def http_client(**kwargs) -> httpx.Client:
    """An httpx client on the shared TLS context, 60 s timeout unless told."""
    return httpx.Client(verify=TLS, **{"timeout": 60, **kwargs})


@dataclass
class LiveServer:
    """A server running in a thread: its base URL and the uvicorn server (to signal it)."""

    base: str
    server: GracefulServer
    thread: threading.Thread


@contextmanager
def live_server(config: ServerConfig, encoder_factory=None, wait_ready: bool = True) -> Iterator[LiveServer]:
    """create_app(config) served in a thread on a free port; stopped (bounded) on exit."""
    server = make_server(create_app(config, encoder_factory), "127.0.0.1", free_port(), "warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.config.port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start within 30 s"
        assert thread.is_alive(), "server thread died on startup"
        time.sleep(0.02)
    if wait_ready:
        while httpx.get(f"{base}/ready").status_code != 200:
            assert time.monotonic() < deadline, "model did not load within 30 s"
            time.sleep(0.05)
    try:
        yield LiveServer(base, server, thread)
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def running_server(config: ServerConfig, encoder_factory=None, wait_ready: bool = True) -> Iterator[str]:
    """live_server, yielding only the base URL."""
    with live_server(config, encoder_factory, wait_ready) as live:
        yield live.base


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@contextmanager
def server_process(model_dir: Path, *extra: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m colbert_onnx.server MODEL_DIR [extra]` on a free loopback port; killed (bounded) on exit.

    Its output goes to a temporary file (a pipe nobody reads could fill up and stall the server).
    """
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "colbert_onnx.server", str(model_dir), "--port", str(port),
             "--log-level", "warning", *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(proc, base, 60, log)
            yield proc, base
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
