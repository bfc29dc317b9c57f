"""No memory growth across long runs (fastembed #483/#570): RSS stays flat over 10,000 encode calls."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_rss_flat_over_10000_encode_calls(toy_model_dir):
    code = textwrap.dedent(
        f"""
        import numpy as np
        from colbert_onnx import ColbertEncoder

        def rss_kib():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

        enc = ColbertEncoder({str(toy_model_dir)!r}, threads=1)
        texts = ["Berlin " * (i % 50) + str(i) for i in range(64)]
        for i in range(500):  # warm-up: arenas and caches reach their working size
            enc.encode_documents([texts[i % 64]]); enc.encode_queries([texts[i % 64]])
        start = rss_kib()
        for i in range(10_000):
            if i % 2:
                enc.encode_documents([texts[i % 64]])
            else:
                enc.encode_queries([texts[i % 64]])
        end = rss_kib()
        print(start, end)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    start, end = map(int, proc.stdout.split())
    assert end <= start * 1.05, f"RSS grew from {start} KiB to {end} KiB over 10,000 calls"
