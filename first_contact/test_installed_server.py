"""`pip install '.[server]'` serves the Jina API: the installed `colbert-onnx serve` answers like the encoder.

Runs in the server venv (COLBERT_ONNX_INSTALL=server). The server is a subprocess on 127.0.0.1 and a
free port; HTTP goes through urllib (the [server] extra has no HTTP client), every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import reference_cases as rc

pytest.importorskip("fastapi", reason="the HTTP server needs the [server] extra (pip install '.[server]')")

SCRIPT = Path(sys.executable).parent / "colbert-onnx"
START_TIMEOUT_S = 90
ATOL = 1e-5  # the server batches requests together: other padding, float noise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def base_url(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`colbert-onnx serve` (the installed script) until /ready answers 200; stopped with SIGTERM after."""
    assert SCRIPT.is_file(), f"the installed console script {SCRIPT} is missing"
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(SCRIPT), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"colbert-onnx serve exited with {proc.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, f"/ready not 200 within {START_TIMEOUT_S} s: {log.read_text()}"
            try:
                if _request(f"{base}/ready", timeout=5)[0] == 200:
                    break
            except OSError:  # not listening yet
                pass
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM if os.name == "posix" else signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1])


def test_rerank_endpoint_ranks_as_the_direct_encoder(base_url: str, references):
    status, body = _request(f"{base_url}/v1/rerank", {"model": "jina-colbert-v2", "query": rc.BERLIN_QUERY,
                                                      "documents": rc.BERLIN_DOCUMENTS})
    assert status == 200, body
    want = references["rerank-fp32"]
    assert [r["index"] for r in body["results"]] == want["index"].tolist()
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], want["relevance_score"],
                               atol=1e-4, rtol=0)
    assert [r["document"]["text"] for r in body["results"]] == [rc.BERLIN_DOCUMENTS[i] for i in want["index"]]


@pytest.mark.parametrize("dim", rc.HEADS)
def test_multi_vector_documents_equal_the_direct_encoder(base_url: str, references, dim: int):
    status, body = _request(f"{base_url}/v1/multi-vector", {"model": "jina-colbert-v2", "input": rc.DOCUMENTS,
                                                            "input_type": "document", "dimensions": dim})
    assert status == 200, body
    want = references[f"encode-fp32-{dim}"]
    expected = _split(want["documents"], want["documents.lengths"])
    assert [item["index"] for item in body["data"]] == list(range(len(rc.DOCUMENTS)))
    for item, vectors in zip(body["data"], expected, strict=True):
        np.testing.assert_allclose(np.asarray(item["embeddings"], dtype=np.float32), vectors, atol=ATOL, rtol=0)


def test_multi_vector_queries_equal_the_direct_encoder(base_url: str, references):
    status, body = _request(f"{base_url}/v1/multi-vector", {"model": "jina-colbert-v2", "input": rc.QUERIES,
                                                            "input_type": "query", "dimensions": 64})
    assert status == 200, body
    got = np.stack([np.asarray(item["embeddings"], dtype=np.float32) for item in body["data"]])
    np.testing.assert_allclose(got, references["encode-fp32-64"]["queries"], atol=ATOL, rtol=0)

