"""A `colbert-onnx serve` process on 127.0.0.1 for the server benchmarks and tests: a free port, and the wait
until it answers /ready (bounded, naming the server's own output when it exits or never gets ready)."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import IO

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(proc: subprocess.Popen, base: str, timeout_s: float, log: IO[str] | None = None) -> None:
    """Poll `base`/ready until it answers 200; RuntimeError when the process exits or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        exited = proc.poll() is not None
        if exited or time.monotonic() > deadline:
            output = ""
            if log is not None:
                log.seek(0)
                output = log.read()[-2000:]
            state = f"exited with {proc.returncode}" if exited else f"not ready within {timeout_s:g} s"
            raise RuntimeError(f"server {state}: {output}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
