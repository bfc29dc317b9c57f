"""HTTP server throughput and latency: requests/s, p50/p99 at concurrency 1, 8, 32 (not a test).

    .venv/bin/python benchmarks/bench_server.py [--model-dir models/toy-onnx] [--requests 200]

Starts `colbert-onnx serve` on a free 127.0.0.1 port, then for /v1/rerank (8 documents) and
/v1/multi-vector (16 documents, float) runs N requests at each concurrency and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from benchmarks.server_process import free_port, wait_until_ready
from colbert_onnx.examples import BERLIN_DOCUMENTS as DOCUMENTS
from colbert_onnx.examples import BERLIN_QUERY as QUERY


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _measure(base: str, path: str, payload: dict, concurrency: int, total: int) -> dict[str, float]:
    per_worker = max(1, total // concurrency)
    latencies: list[float] = []
    errors = 0

    def worker(_: int) -> tuple[list[float], int]:
        lat, bad = [], 0
        with httpx.Client(base_url=base, timeout=300) as c:
            c.post(path, json=payload)  # warm connection
            for _ in range(per_worker):
                t0 = time.perf_counter()
                r = c.post(path, json=payload)
                lat.append(time.perf_counter() - t0)
                bad += r.status_code != 200
        return lat, bad

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for lat, bad in pool.map(worker, range(concurrency)):
            latencies += lat
            errors += bad
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {
        "rps": len(latencies) / wall,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors,
        "n": len(latencies),
    }


def _direct_baseline(model_dir: str, precision: str, docs16: list[str]) -> None:
    """Median latency of the same work through ColbertEncoder in-process (no HTTP), for comparison."""
    from colbert_onnx import ColbertEncoder

    encoder = ColbertEncoder(model_dir, precision=precision)
    for name, fn in (
        ("rerank (8 docs)", lambda: encoder.rerank(QUERY, DOCUMENTS)),
        ("encode_documents (16 docs)", lambda: encoder.encode_documents(docs16)),
    ):
        fn()
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        print(f"direct ColbertEncoder {name}: p50 {np.median(times):.1f} ms")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark against one model folder and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default="models/toy-onnx")
    parser.add_argument("--requests", type=int, default=200, help="requests per (endpoint, concurrency)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args(argv)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "colbert_onnx.server", args.model_dir, "--port", str(port)]
    cmd += ["--precision", args.precision, "--log-level", "warning"]
    proc = subprocess.Popen(cmd)
    try:
        wait_until_ready(proc, base, 600)
        rss_idle = _rss_mib(proc.pid)
        docs16 = (DOCUMENTS * 2)[:16]
        cases = [
            ("/v1/rerank (8 docs)", "/v1/rerank", {"model": "jina-colbert-v2", "query": QUERY, "documents": DOCUMENTS}),
            ("/v1/multi-vector (16 docs)", "/v1/multi-vector", {"input": docs16, "input_type": "document"}),
        ]
        print(f"model folder: {args.model_dir} ({args.precision}); machine: {platform.machine()}, "
              f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
        print("\n| endpoint | concurrency | requests | req/s | p50 ms | p99 ms | errors |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, path, payload in cases:
            for conc in (int(c) for c in args.concurrency.split(",")):
                m = _measure(base, path, payload, conc, args.requests)
                print(f"| {name} | {conc} | {m['n']} | {m['rps']:.1f} | {m['p50']:.1f} | {m['p99']:.1f} "
                      f"| {m['errors']} |", flush=True)
        print(f"\nserver RSS: {rss_idle:.0f} MiB after loading, {_rss_mib(proc.pid):.0f} MiB after the run")
        print(f"load average during the run: {os.getloadavg()[0]:.1f}")
        _direct_baseline(args.model_dir, args.precision, docs16)
    finally:
        proc.terminate()
        proc.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
