"""Quantization speed (not a test): each int8 method vs the plain unoptimized fp32 ONNX, CPU, one run.

    .venv/bin/python benchmarks/bench_quantization.py [--size full|small] [--batch 2] [--length 256]
                                                      [--methods smooth-per-token,smooth-nbits8,...]
                                                      [--outliers 4 --mixed 2,8,24]

Uses the model folder `make bench` caches under models/bench-<size> (built here if missing: random
weights at the real shape), builds each method's int8 graph once under models/bench-<size>/int8/,
and prints docs/s and tokens/s per graph (timed in turns) with the ratio to the plain fp32 graph of the same run
(torch.onnx.export output, no offline fusion: what fastembed runs).

`--outliers N` uses a model with N activation-outlier channels planted (LayerNorm gains x10-40 in
every layer, trained-scale weights of std 0.02; cached as models/bench-<size>-outliers) and
`--mixed K1,K2` adds the mixed-precision graphs of the accuracy-aware search with the K most
sensitive nodes kept fp32 (ranked by the search's `local` error, the ranking it uses at full size),
timed in the same turns as pure int8 and fp32 (issue 14).
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
from colbert_onnx.export.toy import OutlierSpec, make_toy_trio
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


def model_folder(size: str, outliers: int = 0) -> Path:
    """models/bench-<size> as `make bench` leaves it (checkpoint, onnx/model.onnx, plain.onnx); with
    `outliers`, models/bench-<size>-outliers (planted outlier channels, weights of std 0.02)."""
    from benchmarks.sizes import SIZES

    base = ROOT / "models" / (f"bench-{size}-outliers" if outliers else f"bench-{size}")
    ckpt = base / "checkpoint" / "jina-colbert-v2-toy"
    if not (ckpt / "model.safetensors").is_file():
        planted = OutlierSpec(outliers, (10.0, 40.0)) if outliers else 0
        make_toy_trio(base / "checkpoint", dims=(128,), config_overrides=SIZES[size], outlier_channels=planted,
                      weight_std=0.02 if outliers else 0.05)
    if not (base / "onnx" / "manifest.json").is_file():
        export_model([ckpt], base / "onnx", check_parity=False, precisions="fp32")
    if not (base / "plain.onnx").is_file():
        loaded = load_checkpoint(ckpt, hash_files=False)
        module = MultiHeadColbert(loaded.module().roberta, {loaded.dim: loaded.head})
        del loaded
        export_graph(module, base / "plain.onnx")
    return base


def mixed_graphs(base: Path, pre: Preprocessor, counts: list[int]) -> dict[str, Path]:
    """The default int8 with the K most sensitive nodes (local ranking) in fp32, for each K; built once."""
    import tempfile

    from colbert_onnx.export.fidelity import FidelitySet
    from colbert_onnx.export.mixed_precision import build_switchable

    (base / "mixed").mkdir(exist_ok=True)
    paths = {k: base / "mixed" / f"float-{k}.onnx" for k in counts}
    ranking = base / "mixed" / "local-ranking.txt"
    calibration = calibration_feeds(pre)
    optimized = onnx.load(str(base / "onnx" / "model.onnx"))
    if not ranking.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            session, _ = build_switchable(optimized, calibration, [128], Path(tmp))
            errors = session.local_errors(FidelitySet(calibration[0], calibration[1:], []))
        ranking.write_text("\n".join(sorted(errors, key=lambda n: -errors[n])) + "\n")
    order = ranking.read_text().split()
    for k, path in paths.items():
        if not path.is_file():
            quantize_int8(optimized, path, calibration, keep_float=frozenset(order[:k]))
    return {f"int8 mixed, {k} of {len(order)} nodes fp32": p for k, p in paths.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="full", choices=["full", "small"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--outliers", type=int, default=0, help="outlier channels planted in the model")
    parser.add_argument("--mixed", default="", help="comma-separated counts of fp32 nodes for mixed graphs")
    args = parser.parse_args(argv)
    base = model_folder(args.size, args.outliers)
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
    if args.mixed:
        graphs.update(mixed_graphs(base, Preprocessor(tokenizer, special, 32, 512),
                                   [int(k) for k in args.mixed.split(",")]))
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
