"""Soak of the HTTP server: mixed good and bad requests at a fixed concurrency against `colbert-onnx serve`.

    .venv/bin/python -m benchmarks.soak_server --model-dir models/toy-onnx --requests 10000 --concurrency 16

Passes when no response is a 5xx, every request gets the status its body calls for (bad bodies their 4xx),
every good response equals a direct ColbertEncoder call on the same texts (float noise of batching aside:
1e-5 on vectors, 1e-4 on scores), and the server's RSS after the soak is within 5 % of its RSS after the
warm-up. `tests/test_server_contract.py` runs it behind `-m slow`; docs/runs/2026-12-06-server-soak.md has a run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from benchmarks.server_process import free_port, wait_until_ready
from colbert_onnx.examples import BERLIN_DOCUMENTS as DOCUMENTS
from colbert_onnx.examples import BERLIN_QUERY as QUERY

MAX_INPUTS = 32  # the server runs with --max-inputs 32, so that "too many inputs" is cheap to send
MAX_BODY = 65536  # and --max-body-bytes 65536
VECTOR_ATOL, SCORE_ATOL = 1e-5, 1e-4


@dataclass
class Case:
    """One request of the mix: its body (bytes), the status it must get, and for a 200 how to check it."""

    name: str
    path: str
    body: bytes
    status: int
    check: Callable[[dict], float] | None = None  # returns the largest difference from the direct call
    atol: float = VECTOR_ATOL


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    max_diff: float = 0.0
    requests: int = 0


def _json(body: dict) -> bytes:
    return json.dumps(body).encode()  # lone surrogates travel as JSON escapes ("\ud800"), as broken clients send them


def build_cases(encoder) -> list[Case]:
    """The request mix: good requests (each with its direct-call reference) and the bad ones."""
    cases: list[Case] = []
    rng = random.Random(24)
    for k in range(12):
        docs = rng.sample(DOCUMENTS, rng.randint(1, 4))
        dim = (128, 96, 64)[k % 3]
        kind = ("document", "query")[k % 2]
        enc = encoder.for_dim(dim)
        want = enc.encode_documents(docs) if kind == "document" else enc.encode_queries(docs)
        encoding = ("float", "base64")[(k // 3) % 2]

        def check(body: dict, want=want, encoding=encoding) -> float:
            diffs = []
            for item, w in zip(body["data"], want, strict=True):
                if encoding == "base64":
                    got = np.stack([np.frombuffer(base64.b64decode(s), "<f4") for s in item["embeddings"]])
                else:
                    got = np.asarray(item["embeddings"], dtype=np.float32)
                if got.shape != w.shape:
                    return float("inf")
                diffs.append(float(np.abs(got - w).max()))
            return max(diffs)

        body = {"input": docs, "input_type": kind, "dimensions": dim, "embedding_type": encoding}
        cases.append(Case(f"multi-vector {kind} {dim} {encoding}", "/v1/multi-vector", _json(body), 200, check))
    for top_n in (None, 3):
        want = encoder.rerank(QUERY, DOCUMENTS, top_n=top_n)

        def check_rank(body: dict, want=want) -> float:
            got = body["results"]
            if [h["index"] for h in got] != [h["index"] for h in want]:
                return float("inf")
            return max(abs(g["relevance_score"] - w["relevance_score"]) for g, w in zip(got, want, strict=True))

        body = {"query": QUERY, "documents": DOCUMENTS, **({"top_n": top_n} if top_n else {})}
        cases.append(Case(f"rerank top_n={top_n}", "/v1/rerank", _json(body), 200, check_rank, SCORE_ATOL))
    bad = [
        ("malformed JSON", "/v1/multi-vector", b'{"input": ["a"', 400),
        ("lone surrogate in input", "/v1/multi-vector", _json({"input": ["ok", "\ud800 x"]}), 422),
        ("lone surrogate in {text}", "/v1/multi-vector", _json({"input": [{"text": "\udcff"}]}), 422),
        ("lone surrogate in query", "/v1/rerank", _json({"query": "\udc00", "documents": ["a"]}), 422),
        ("lone surrogate in documents", "/v1/rerank", _json({"query": "q", "documents": ["a", "\ud83d"]}), 422),
        ("NUL in input", "/v1/multi-vector", _json({"input": "a\x00b"}), 422),
        ("top_n true", "/v1/rerank", _json({"query": "q", "documents": ["a"], "top_n": True}), 422),
        ("dimensions as string", "/v1/multi-vector", _json({"input": ["a"], "dimensions": "64"}), 422),
        ("dimensions 0", "/v1/multi-vector", _json({"input": ["a"], "dimensions": 0}), 422),
        ("unknown model", "/v1/multi-vector", _json({"input": ["a"], "model": "nope"}), 422),
        ("empty input", "/v1/multi-vector", _json({"input": []}), 422),
        ("input of numbers", "/v1/multi-vector", _json({"input": [1, 2]}), 422),
        ("too many inputs", "/v1/multi-vector", _json({"input": ["a"] * (MAX_INPUTS + 1)}), 422),
        ("body over the limit", "/v1/multi-vector", _json({"input": ["word " * (MAX_BODY // 5)]}), 413),
        ("embeddings endpoint", "/v1/embeddings", _json({"input": ["a"]}), 404),
    ]
    cases += [Case(name, path, body, status) for name, path, body, status in bad]
    return cases


def _worker(base: str, cases: list[Case], order: list[int]) -> Tally:
    tally = Tally()
    with httpx.Client(base_url=base, timeout=120, headers={"content-type": "application/json"}) as client:
        for i in order:
            case = cases[i]
            r = client.post(case.path, content=case.body)
            tally.requests += 1
            tally.statuses[r.status_code] += 1
            if r.status_code != case.status:
                tally.wrong.append(f"{case.name}: {r.status_code} (expected {case.status}) {r.text[:200]}")
            elif case.check is not None:
                diff = case.check(r.json())
                tally.max_diff = max(tally.max_diff, diff)
                if diff > case.atol:
                    tally.wrong.append(f"{case.name}: differs from the direct call by {diff}")
    return tally


def _run(base: str, cases: list[Case], requests: int, concurrency: int, seed: int) -> Tally:
    rng = random.Random(seed)
    weights = [3 if case.status == 200 else 1 for case in cases]  # about three good requests in four
    order = rng.choices(range(len(cases)), weights, k=requests)
    shares = [order[w::concurrency] for w in range(concurrency)]
    total = Tally()
    with ThreadPoolExecutor(concurrency) as pool:
        for tally in pool.map(lambda share: _worker(base, cases, share), shares):
            total.statuses.update(tally.statuses)
            total.wrong += tally.wrong
            total.max_diff = max(total.max_diff, tally.max_diff)
            total.requests += tally.requests
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc")


def run_soak(model_dir: str | Path, requests: int = 10_000, concurrency: int = 16, warmup: int = 1000) -> dict:
    """Start the server, warm it up, soak it; the figures and every wrong answer (empty when it passed)."""
    from colbert_onnx import ColbertEncoder

    cases = build_cases(ColbertEncoder(model_dir))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "colbert_onnx.server", str(model_dir), "--port", str(port), "--log-level", "warning",
           "--max-inputs", str(MAX_INPUTS), "--max-body-bytes", str(MAX_BODY)]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until_ready(proc, base, 120, log)
            rss_loaded = rss_kib(proc.pid)
            warm = _run(base, cases, warmup, concurrency, seed=1)
            rss_warm = rss_kib(proc.pid)
            start = time.perf_counter()
            soak = _run(base, cases, requests, concurrency, seed=2)
            seconds = time.perf_counter() - start
            rss_end = rss_kib(proc.pid)
            alive = httpx.get(f"{base}/health", timeout=10).status_code == 200
        finally:
            proc.terminate()
            rc = proc.wait(60)
    statuses = warm.statuses + soak.statuses
    return {
        "requests": soak.requests,
        "warmup_requests": warm.requests,
        "concurrency": concurrency,
        "seconds": round(seconds, 1),
        "requests_per_s": round(soak.requests / seconds, 1),
        "statuses": dict(sorted(statuses.items())),
        "server_errors": sum(n for code, n in statuses.items() if code >= 500),
        "wrong": warm.wrong + soak.wrong,
        "max_diff_from_direct": soak.max_diff,
        "rss_mib": {"loaded": round(rss_loaded / 1024, 1), "after_warmup": round(rss_warm / 1024, 1),
                    "end": round(rss_end / 1024, 1)},
        "rss_growth": round((rss_end - rss_warm) / rss_warm, 4),
        "alive_after": alive,
        "exit_status_after_sigterm": rc,
        "cases": len(cases),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default="models/toy-onnx")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1000)
    args = parser.parse_args(argv)
    from benchmarks.machine import describe

    print(f"machine: {describe()}; load average {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M')}")
    result = run_soak(args.model_dir, args.requests, args.concurrency, args.warmup)
    print(json.dumps({**result, "wrong": result["wrong"][:20]}, indent=2))
    passed = (not result["wrong"] and result["server_errors"] == 0 and abs(result["rss_growth"]) <= 0.05
              and result["exit_status_after_sigterm"] == 0)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
