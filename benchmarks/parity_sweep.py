"""How the parity gate judges a family of checkpoints, faithful and broken, on this CPU (issue 23).

For each member: the faithful export's figures under every onnxruntime thread count and graph
optimization level and every PyTorch thread count (the knobs that change summation order), then each
constructed defect (export/parity_defects.py) exported and judged. Prints one JSON line per row and,
with --write, a markdown run log naming the CPU. Run it again under other kernels, e.g.
`ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2` (PyTorch's AVX2 paths on an AVX-512 CPU).

    python -m benchmarks.parity_sweep --members sharp:0-3,outlier:0-3,toy:0 --write docs/runs/DATE-parity-gate.md
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks.machine import describe
from colbert_onnx.encoder import ColbertEncoder
from colbert_onnx.export import export_model, load_checkpoint, make_toy_trio
from colbert_onnx.export.modeling import MultiHeadColbert
from colbert_onnx.export.outlier_family import build_member, draw_member, draw_sharp_member
from colbert_onnx.export.parity import ParityGate, compare_parity, parity_batches, record_parity_reference
from colbert_onnx.export.parity_defects import DEFECTS, injected
from colbert_onnx.manifest import read_manifest
from colbert_onnx.session import SessionConfig

ORT_THREADS = (1, 2)
TORCH_THREADS = (1, 2)
OPTIMIZATION_LEVELS = ("all", "basic", "disable")


def members(spec: str) -> list[tuple[str, int]]:
    """'sharp:0-3,outlier:1,toy:0' -> [(kind, seed), ...]."""
    found = []
    for part in spec.split(","):
        kind, seeds = part.split(":")
        low, _, high = seeds.partition("-")
        found += [(kind, s) for s in range(int(low), int(high or low) + 1)]
    return found


def build(kind: str, seed: int, folder: Path) -> tuple[str, dict[int, Path]]:
    if kind == "toy":
        return f"toy seed {seed}", make_toy_trio(folder, seed=seed)
    member = draw_sharp_member(seed) if kind == "sharp" else draw_member(seed)
    return f"{kind} {member.describe()}", build_member(member, folder)


def _row(figures: dict) -> dict:
    keys = ("max_abs_diff", "median_abs_diff", "rms_diff", "torch_fp32_vs_float64_max_abs_diff",
            "torch_fp32_vs_float64_median_abs_diff", "tolerance", "median_tolerance", "passed", "framing_mismatch",
            "token_cosine_passed")
    return {k: figures.get(k) for k in keys}


def _fidelity(manifest, dim: str) -> dict:
    fp32 = next(g for g in manifest.graphs if g.precision == "fp32")
    metrics = (fp32.fidelity or {}).get(dim, {})
    return {k: metrics.get(k) for k in ("mean_token_cosine", "top10_overlap", "spearman")}


def export_figures(trio: dict[int, Path], out: Path, defect: str | None = None) -> dict[str, dict]:
    """head -> parity figures of a default export (with `defect` injected), written even when it misses."""
    dims = sorted(trio, reverse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if defect is None:
            folder = export_model([trio[d] for d in dims], out, precisions="fp32", accept_parity_miss=True)
        else:
            with injected(defect):
                folder = export_model([trio[d] for d in dims], out, precisions="fp32", accept_parity_miss=True)
    manifest = read_manifest(folder)
    parity = manifest.parity["fp32"]
    return {d: {**_row(p), "fp32_fidelity": _fidelity(manifest, d)} for d, p in parity.items() if d != "reference"}


def variant_figures(trio: dict[int, Path], folder: Path) -> list[dict]:
    """The faithful graph under every thread count and optimization level, against references recorded with
    1 and 2 PyTorch threads."""
    rows = []
    for dim, path in sorted(trio.items(), reverse=True):
        checkpoint = load_checkpoint(path)
        for torch_threads in TORCH_THREADS:
            torch.set_num_threads(torch_threads)
            module = MultiHeadColbert(checkpoint.module().roberta, {dim: checkpoint.head})
            reference = None
            for ort_threads in ORT_THREADS:
                for level in OPTIMIZATION_LEVELS:
                    encoder = ColbertEncoder(folder, dim=dim, threads=ort_threads,
                                             session_options=SessionConfig(graph_optimization_level=level))
                    if reference is None:
                        reference = record_parity_reference(module, parity_batches(encoder.preprocessor))
                    figures = compare_parity(encoder, reference, ParityGate())
                    rows.append({"head": dim, "torch_threads": torch_threads, "ort_threads": ort_threads,
                                 "optimization": level, **_row(figures)})
    return rows


def table(records: list[dict]) -> list[str]:
    """Markdown rows: member, case, then per head the verdict, graph max / median and the module's."""
    lines = ["| member | case | head: verdict, graph max / median vs float64 (fp32 module max / median) |",
             "|---|---|---|"]
    for record in records:
        if record["case"] == "variant":
            continue
        cells = "; ".join(
            f"{d}: {'pass' if h['passed'] else 'FAIL'}, {h['max_abs_diff']:.2g} / {h['median_abs_diff']:.2g} "
            f"({h['torch_fp32_vs_float64_max_abs_diff']:.2g} / {h['torch_fp32_vs_float64_median_abs_diff']:.2g})"
            + (f", framing differs ({h['framing_mismatch']})" if h.get("framing_mismatch") else "")
            for d, h in sorted(record["heads"].items(), key=lambda kv: -int(kv[0])))
        lines.append(f"| {record['member'].split(':')[0]} | {record['case']} | {cells} |")
    variants = [r for r in records if r["case"] == "variant"]
    if variants:
        verdicts = {(r["member"].split(":")[0], r["passed"]) for r in variants}
        lines += ["", f"Variants ({len(variants)} rows: PyTorch threads {TORCH_THREADS}, onnxruntime threads "
                  f"{ORT_THREADS}, optimization {OPTIMIZATION_LEVELS}): "
                  + ", ".join(f"{m} {'pass' if ok else 'FAIL'}" for m, ok in sorted(verdicts))]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", default="sharp:0-3,outlier:0-3,toy:0")
    parser.add_argument("--no-variants", action="store_true", help="skip the thread/optimization variants")
    parser.add_argument("--variant-heads", default="128", help="heads the variants run on (comma-separated)")
    parser.add_argument("--defects", default=",".join(DEFECTS), help="comma-separated defects to inject ('' none)")
    parser.add_argument("--write", type=Path, default=None, help="markdown run log to write")
    args = parser.parse_args()
    kernels = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS") if k in os.environ}
    lines = [f"# Parity gate sweep, {time.strftime('%Y-%m-%d %H:%M')}", "", f"Machine: {describe()}",
             f"PyTorch kernels: {kernels or 'default'}; gate: {ParityGate().rule}", "", "```"]
    for kind, seed in members(args.members):
        with tempfile.TemporaryDirectory() as tmp:
            name, trio = build(kind, seed, Path(tmp) / "ckpt")
            started = time.time()
            faithful = export_figures(trio, Path(tmp) / "faithful")
            records = [{"member": name, "case": "faithful", "heads": faithful}]
            if not args.no_variants:
                heads = {int(d): trio[int(d)] for d in args.variant_heads.split(",")}
                records += [{"member": name, "case": "variant", **row}
                            for row in variant_figures(heads, Path(tmp) / "faithful")]
            records += [{"member": name, "case": defect, "heads": export_figures(trio, Path(tmp) / defect, defect)}
                        for defect in filter(None, args.defects.split(","))]
            for record in records:
                line = json.dumps(record)
                print(line, flush=True)
                lines.append(line)
            print(f"# {name}: {time.time() - started:.0f} s", flush=True)
    lines.append("```")
    if args.write:
        every = [json.loads(line) for line in lines if line.startswith("{")]
        lines[lines.index("```"):lines.index("```")] = [*table(every), ""]
        args.write.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
