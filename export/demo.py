"""`make demo`: checkpoint -> ONNX -> tokenization -> query/document encoding -> MaxSim ranking.

With no MODEL, a toy 128/96/64 trio with random weights is generated, exported and used, so the
whole path runs offline on a fresh machine; with MODEL (hub id or folder) the real model is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from colbert_onnx import ColbertEncoder
from colbert_onnx.examples import BERLIN_DOCUMENTS as DOCUMENTS
from colbert_onnx.examples import BERLIN_QUERY as QUERY

from .checkpoint import CheckpointError
from .exporter import ParityError, export_model
from .toy import make_toy_trio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="hub id or checkpoint folder(s), comma-separated")
    parser.add_argument("--models-dir", default="models", help="where toy checkpoints and exports go")
    parser.add_argument("--dim", type=int, default=None, help="head to encode with (default: the largest exported)")
    args = parser.parse_args(argv)
    models = Path(args.models_dir)

    if args.model:
        sources = args.model.split(",")
        out = models / (Path(sources[0]).name or "model") / "onnx"
        toy = False
    else:
        trio = make_toy_trio(models / "toy-checkpoints")
        sources = [str(trio[d]) for d in sorted(trio, reverse=True)]
        out = models / "toy-onnx"
        toy = True
    print(f"[1/3] exporting {', '.join(sources)} -> {out}")
    try:
        export_model(sources, out)
    except (CheckpointError, ParityError) as exc:  # a parity miss names its way through (--accept-parity-miss)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for dim, parity in manifest["parity"]["fp32"].items():
        if dim.isdigit():
            print(f"      head {dim}: fp32 ONNX vs float64 PyTorch max abs diff {parity['max_abs_diff']:.2e} "
                  f"(tolerance {parity['tolerance']:.2e}; the fp32 PyTorch module itself: "
                  f"{parity['torch_fp32_vs_float64_max_abs_diff']:.2e})")
    for precision in ("int8", "fp16"):
        for dim, m in sorted(manifest.get("fidelity", {}).get(precision, {}).items(), key=lambda kv: -int(kv[0])):
            print(f"      {precision} head {dim}: mean token cosine {m['mean_token_cosine']:.5f}, "
                  f"top-10 overlap {m['top10_overlap']:.3f} vs float64 PyTorch")

    encoder = ColbertEncoder(out, dim=args.dim)
    print(f"[2/3] encoding with onnxruntime (dim {encoder.dim}, fp32, no PyTorch in this step)")
    print(f"[3/3] MaxSim ranking for: {QUERY!r}")
    for rank, hit in enumerate(encoder.rerank(QUERY, DOCUMENTS), start=1):
        print(f"  {rank}. [{hit['relevance_score']:7.3f}] #{hit['index']} {hit['document']}")
    if toy:
        print(
            "\nThese are RANDOM TOY WEIGHTS (a 2-layer model generated on this machine), so the ranking is\n"
            "meaningless; the demo shows the pipeline. Run the real model with\n"
            "  make demo MODEL=jinaai/jina-colbert-v2        (needs network or the HF cache)\n"
            "  make demo MODEL=/path/to/jina-colbert-v2      (a local checkpoint folder)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
