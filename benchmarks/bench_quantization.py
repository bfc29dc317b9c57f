"""Quantization speed (not a test): each int8 method vs the plain unoptimized fp32 ONNX, CPU, one run.

    .venv/bin/python benchmarks/bench_quantization.py [--size full|small] [--batch 2] [--length 256]
                                                      [--methods smooth-per-token,smooth-nbits8,...]

Uses the model folder `make bench` caches under models/bench-<size> (built here if missing: random
weights at the real shape), builds each method's int8 graph once under models/bench-<size>/int8/,
and prints docs/s and tokens/s per graph (timed in turns) with the ratio to the plain fp32 graph of the same run
(torch.onnx.export output, no offline fusion: what fastembed runs).
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from colbert_onnx.export.checkpoint import load_checkpoint
from colbert_onnx.export.exporter import export_graph, export_model
from colbert_onnx.export.modeling import MultiHeadColbert
from colbert_onnx.export.precisions import calibration_feeds
from colbert_onnx.export.quantize import quantize_int8
from colbert_onnx.export.toy import make_toy_trio
from colbert_onnx.model_folder import open_model_folder
from colbert_onnx.tokenization import Preprocessor

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_METHODS = "smooth-dynamic,smooth-static-qdq,smooth-nbits8,smooth-int4,smooth-per-token"


def docs_per_second(paths: dict[str, Path], ids: np.ndarray, runs: int, threads: int) -> dict[str, float]:
    """Median docs/s per graph; graphs are timed in turns (one run each per round) after a warm-up, so
    a slow minute on a shared machine hits every graph alike instead of distorting one ratio."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    sessions = {name: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for name, p in paths.items()}
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():  # warm-up
        session.run([session.get_outputs()[0].name], feeds)
    for _ in range(runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run([session.get_outputs()[0].name], feeds)
            times[name].append(time.perf_counter() - start)
    return {name: ids.shape[0] / float(np.median(t)) for name, t in times.items()}


def model_folder(size: str) -> Path:
    """models/bench-<size> as `make bench` leaves it (checkpoint, onnx/model.onnx, plain.onnx)."""
    from benchmarks.conftest import SIZES

    base = ROOT / "models" / f"bench-{size}"
    ckpt = base / "checkpoint" / "jina-colbert-v2-toy"
    if not (ckpt / "model.safetensors").is_file():
        make_toy_trio(base / "checkpoint", dims=(128,), config_overrides=SIZES[size])
    if not (base / "onnx" / "manifest.json").is_file():
        export_model([ckpt], base / "onnx", check_parity=False, precisions="fp32")
    if not (base / "plain.onnx").is_file():
        loaded = load_checkpoint(ckpt, hash_files=False)
        module = MultiHeadColbert(loaded.module().roberta, {loaded.dim: loaded.head})
        del loaded
        export_graph(module, base / "plain.onnx")
    return base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="full", choices=["full", "small"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    args = parser.parse_args(argv)
    base = model_folder(args.size)
    folder = open_model_folder(base / "onnx")
    tokenizer, special = folder.load_tokenizer()
    graphs = {"plain fp32 (torch.onnx.export)": base / "plain.onnx", "fp32 optimized": base / "onnx" / "model.onnx"}
    (base / "int8").mkdir(exist_ok=True)
    for method in args.methods.split(","):
        path = base / "int8" / f"{method}.onnx"
        if not path.is_file():
            pre = Preprocessor(tokenizer, special, 32, 512)
            optimized = onnx.load(str(base / "onnx" / "model.onnx"))
            quantize_int8(optimized, path, calibration_feeds(pre), method=method)
            del optimized
            gc.collect()
        graphs[f"int8 {method}"] = path
    rng = np.random.default_rng(0)
    ids = rng.integers(5, tokenizer.get_vocab_size(), size=(args.batch, args.length)).astype(np.int64)
    ids[:, 0], ids[:, -1] = special.bos, special.eos
    results = docs_per_second(graphs, ids, args.runs, args.threads)
    plain = results["plain fp32 (torch.onnx.export)"]
    print(f"{args.size}, batch {args.batch} x {args.length} tokens, {args.threads} threads, "
          f"onnxruntime {ort.__version__}")
    print("| graph | docs/s | tokens/s | vs plain fp32 ONNX |\n|---|---|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:.2f} | {value * args.length:.0f} | {value / plain:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
