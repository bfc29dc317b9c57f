"""`make bench`: the encoder benchmark suite. Models are generated once and cached under models/.

BENCH_SIZE=full (default): the full jina-colbert-v2 architecture (24 x 1024, 16 heads, vocab 250004)
with random weights; BENCH_SIZE=wide: 4 x 1024, its width with 4 of its layers (where random weights pass the int8
gates, so the int8 graphs are timed at the real GEMM shapes); BENCH_SIZE=small: 4 x 256 for a quick look. Results
are collected per run and written to docs/benchmarks.md (section "Encoder") plus docs/benchmarks-encoder.png at the end.
"""

from __future__ import annotations

import os
import resource
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from benchmarks.sizes import SIZES

ROOT = Path(__file__).resolve().parent.parent
RESULTS: dict[str, dict] = {}
_STARTED = pytest.StashKey[float]()


@pytest.fixture(scope="session")
def bench_size() -> str:
    size = os.environ.get("BENCH_SIZE", "full")
    if size not in SIZES:
        raise pytest.UsageError(f"BENCH_SIZE must be one of {', '.join(SIZES)}")
    return size


@pytest.fixture(scope="session")
def bench_model(bench_size: str) -> dict:
    """Checkpoint folder and exported model folder (fp32 plain + whatever precisions export makes)."""
    from colbert_onnx.export import export_model, make_toy_trio

    base = ROOT / "models" / f"bench-{bench_size}"
    ckpt = base / "checkpoint" / "jina-colbert-v2-toy"
    out = base / "onnx"
    if not (ckpt / "model.safetensors").is_file():
        make_toy_trio(base / "checkpoint", dims=(128,), config_overrides=SIZES[bench_size])
    if not (out / "manifest.json").is_file() or _stale_int8(out):
        export_model([ckpt], out, check_parity=False, precisions=os.environ.get("BENCH_PRECISIONS", "fp32,int8"))
    return {"checkpoint": ckpt, "onnx": out, "config": SIZES[bench_size]}


def _stale_int8(folder: Path) -> bool:
    """True when the cached folder's int8 graph was made by another method than today's default, or its graphs
    predate the unmasked attention branch (the length-mix rows compare against it) or the OpenVINO int8 graph (and its
    entry with bf16 float parts)."""
    import json

    from colbert_onnx.export.openvino_int8 import nncf_available
    from colbert_onnx.export.quantize import DEFAULT_INT8_METHOD

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    if nncf_available() and "int8" in manifest["precisions"] and "openvino_int8" not in manifest:
        return True  # exported before the OpenVINO engine had an int8 graph
    ov_int8 = [g for g in manifest.get("engine_graphs", []) if g["precision"] == "int8"]
    if ov_int8 and not any(g.get("inference_precision") == "bf16" for g in ov_int8):
        return True  # exported before its entry with bf16 float parts
    graphs = manifest["graphs"]
    predates_unmasked_attention = any("attention_unmasked_min_tokens" not in g for g in graphs if "attention" in g)
    return predates_unmasked_attention or any(g["precision"] == "int8" and g["method"] != DEFAULT_INT8_METHOD
                                              for g in graphs)


def record(group: str, name: str, **values) -> None:
    RESULTS.setdefault(group, {})[name] = values


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pytest_sessionstart(session) -> None:
    session.config.stash[_STARTED] = time.perf_counter()


def pytest_sessionfinish(session, exitstatus) -> None:
    if not RESULTS:
        return
    record("run", "process", minutes=(time.perf_counter() - session.config.stash[_STARTED]) / 60,
           peak_rss_mib=peak_rss_mib())
    from benchmarks.machine import describe
    from benchmarks.report import write_report

    write_report(RESULTS, ROOT / "docs", machine=describe(), day=date.today().isoformat(),
                 size=os.environ.get("BENCH_SIZE", "full"))


def random_ids(length: int, batch: int, vocab: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(batch, length) ids framed by <s> ... </s>, all real tokens, and their all-ones mask (seeded by length)."""
    rng = np.random.default_rng(length)
    ids = rng.integers(5, vocab, size=(batch, length)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 0, 2
    return ids, np.ones_like(ids)


def interleaved_medians(candidates: dict, rounds: int = 7, warm_up: dict | None = None) -> dict[str, float]:
    """Median seconds of each callable, timed in turns (one warm-up each) so load changes hit all alike.
    `warm_up` gives a cheaper warm-up call per name (e.g. one batch of a long pass)."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for name, fn in candidates.items():
        (warm_up or {}).get(name, fn)()
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def timed(fn, repeat: int = 3) -> float:
    """Best wall time of `repeat` calls (seconds), after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
