"""Quantization speed (not a test): int8 vs plain unoptimized fp32 ONNX, full-size architecture, CPU.

    .venv/bin/python benchmarks/bench_quantization.py [--toy] [--batch 4] [--length 256] [--runs 3]

Random weights at the real shape (24x1024, 16 heads, vocab 250004). Prints docs/s per graph and
the ratio to the plain fp32 graph (torch.onnx.export output, no offline fusion).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from colbert_onnx.export.checkpoint import load_checkpoint
from colbert_onnx.export.exporter import export_graph
from colbert_onnx.export.fidelity_report import FULL_SIZE, LARGER_TOY
from colbert_onnx.export.modeling import MultiHeadColbert
from colbert_onnx.export.optimize import optimize_fp32, save_graph
from colbert_onnx.export.precisions import calibration_feeds
from colbert_onnx.export.quantize import DEFAULT_INT8_METHOD, quantize_int8
from colbert_onnx.export.toy import make_toy_trio
from colbert_onnx.model_folder import open_model_folder  # noqa: F401
from colbert_onnx.tokenization import Preprocessor


def docs_per_second(path: Path, ids: np.ndarray, runs: int, threads: int) -> float:
    """Median docs/s of `runs` timed runs after one warm-up."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    session.run(["vectors_128"], feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(["vectors_128"], feeds)
        times.append(time.perf_counter() - start)
    return ids.shape[0] / float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--toy", action="store_true", help="4x128 toy instead of the full-size architecture")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--method", default=DEFAULT_INT8_METHOD)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trio = make_toy_trio(work / "ckpt", dims=(128,), config_overrides=LARGER_TOY if args.toy else FULL_SIZE)
        ckpt = load_checkpoint(trio[128], hash_files=False)
        cfg = ckpt.backbone_config
        module = MultiHeadColbert(ckpt.module().roberta, {128: ckpt.head})
        del ckpt
        export_graph(module, work / "plain.onnx")
        del module
        optimized, _ = optimize_fp32(work / "plain.onnx", work / "plain.onnx", cfg)
        save_graph(optimized, work / "optimized.onnx")
        tokenizer = Tokenizer.from_file(str(trio[128] / "tokenizer.json"))
        from colbert_onnx.conventions import SpecialIds

        pre = Preprocessor(tokenizer, SpecialIds.from_tokenizer(tokenizer), 32, 512)
        quantize_int8(optimized, work / "int8.onnx", calibration_feeds(pre), method=args.method)
        del optimized
        rng = np.random.default_rng(0)
        ids = rng.integers(5, tokenizer.get_vocab_size(), size=(args.batch, args.length)).astype(np.int64)
        ids[:, 0], ids[:, -1] = 0, 2
        results = {}
        for name in ("plain.onnx", "optimized.onnx", "int8.onnx"):
            results[name] = docs_per_second(work / name, ids, args.runs, args.threads)
        base = results["plain.onnx"]
        shape = "4x128 toy" if args.toy else "full-size 24x1024"
        print(f"{shape}, batch {args.batch} x {args.length} tokens, {args.threads} threads, "
              f"onnxruntime {ort.__version__}, int8 method {args.method}")
        for name, value in results.items():
            print(f"| {name} | {value:.2f} docs/s | {value / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
