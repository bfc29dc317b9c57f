"""Engines side by side on this CPU, timed in turns: onnxruntime fp32, int8 and fp16, OpenVINO f32 and bf16
inference precision and OpenVINO int8 (NNCF, where it passed the int8 gates), on one random-weight toy of a given
size (issue 25; docs/engines.md).

Exports a checkpoint of `--size` (small: 4 x 256, the BENCH_SIZE=small shape; wide: 4 x 1024, the full model's
width with 4 of its 24 layers; full: 24 x 1024; vocabulary of the toy tokenizer) with the OpenVINO graphs, then
times, in turns, every engine on 16 x 256 tokens, on one 2048-token document (`--shapes` adds others, such as issue
25's one 8192-token document) and on make bench's length mix (64 documents, the encoder's batch plan), for calm
weights and for sharp attention (q/k weights x8: ~16 % of the softmax probabilities subnormal), onnxruntime with and
without subnormal flushing. Prints a Markdown table with the machine named, then, per precision, whether
`engine="auto"` runs the fastest of the timed graphs that passed that precision's gates here (the rule of
docs/engines.md checked on this CPU: "holds", or which passing row was faster, by how much, where). Usage:
    python -m benchmarks.bench_engines [--size small|wide|full] [--weights calm,sharp] [--rounds 5] [--threads 2]
        [--shapes 16x256,1x2048,1x8192] [--engines 'onnxruntime int8,OpenVINO bf16'] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Collection
from pathlib import Path

import numpy as np

from benchmarks.length_mix import documents, run_planned
from benchmarks.machine import describe
from benchmarks.sizes import SIZES as BENCH_SIZES
from colbert_onnx import ColbertEncoder, FidelityWarning
from colbert_onnx.engines.openvino_engine import import_openvino
from colbert_onnx.planning import plan_batches
from colbert_onnx.session import SessionConfig

# make bench's shapes (benchmarks/sizes.py) on the toy tokenizer's vocabulary
SIZES = {name: {k: v for k, v in cfg.items() if k != "vocab_size"} for name, cfg in BENCH_SIZES.items()}
WEIGHTS = {"calm": 1.0, "sharp": 8.0}  # q/k weight factor (sharpen_attention)
SHAPES = ((16, 256), (1, 2048))  # (documents, tokens) per timed run; --shapes replaces them
MIX, MIX_DOCS = "mix", 64  # the length mix of make bench (log-normal, median ~150 tokens), real tokens per second
# turn-to-turn timing noise: auto's row within 10 % of the fastest passing row counts as the fastest (one graph
# loaded twice and timed in turns differed by 14-21 % at 3 rounds on a 2-core Zen 4 VM: time 5 rounds or more)
NOISE = 1.10
UNFUSED_MAX_TOKENS = 2048  # longest document timed on an engine whose attention is not fused (unsafe_shapes)


def export(root: Path, size: str, factor: float) -> Path:
    from colbert_onnx.export import export_model
    from colbert_onnx.export.outlier_family import sharpen_attention
    from colbert_onnx.export.toy import make_toy_trio

    out = root / f"{size}-x{factor:g}"
    if (out / "model" / "manifest.json").is_file():
        return out / "model"
    trio = make_toy_trio(out / "checkpoint", seed=1, dims=(128,), config_overrides=SIZES[size])
    if factor != 1.0:
        sharpen_attention(trio, factor)
    # sharp attention is chaotic: its fp32 graph may miss the parity tolerance, which is not what is timed here
    return export_model([trio[128]], out / "model", precisions="fp32,int8,fp16", check_parity=factor == 1.0)


def ungated_openvino_int8(folder: Path, plain: str) -> Path:
    """NNCF's int8 of the plain graph as the exporter makes it (alpha 0.5), beside the folder, for timing only."""
    ov = import_openvino()

    from colbert_onnx.export.openvino_int8 import SMOOTH_ALPHAS, quantize
    from colbert_onnx.export.precisions import calibration_feeds

    path = folder.parent / "ungated-openvino-int8.xml"
    if not path.is_file():
        calibration = calibration_feeds(ColbertEncoder(folder, engine="onnxruntime").preprocessor)
        ov.save_model(quantize(folder / plain, calibration, SMOOTH_ALPHAS[0]), str(path), compress_to_fp16=False)
    return path


def factories(folder: Path, threads: int) -> dict:
    """name -> a builder of that row's engine, for every engine of the comparison (built only when timed: the
    ungated NNCF int8 costs a quantization run)."""
    from colbert_onnx.engines.openvino_engine import OpenvinoEngine
    from colbert_onnx.manifest import read_manifest

    def ort(precision: str, flush: bool):
        return ColbertEncoder(folder, precision=precision, engine="onnxruntime", threads=threads,
                              session_options=SessionConfig(denormal_as_zero=flush)).engine

    graphs = read_manifest(folder).engine_graphs
    graph = graphs[0]
    path = str(folder / graph.file)
    int8 = [g for g in graphs if g.precision == "int8"]
    built = {
        "onnxruntime fp32": lambda: ort("fp32", True),
        "onnxruntime fp32, no flush": lambda: ort("fp32", False),
        "onnxruntime int8": lambda: ort("int8", True),
        "onnxruntime int8, no flush": lambda: ort("int8", False),
        "onnxruntime fp16": lambda: ort("fp16", True),
        "OpenVINO f32": lambda: OpenvinoEngine(path, graph.outputs, threads=threads, inference_precision="f32"),
        "OpenVINO bf16": lambda: OpenvinoEngine(path, graph.outputs, threads=threads, inference_precision="bf16"),
    }
    if int8:
        built["OpenVINO int8 (NNCF)"] = lambda: OpenvinoEngine(str(folder / int8[0].file), int8[0].outputs,
                                                               threads=threads)
        built["OpenVINO int8 (NNCF), bf16 float parts"] = lambda: OpenvinoEngine(
            str(folder / int8[0].file), int8[0].outputs, threads=threads, inference_precision="bf16")
    else:  # the export wrote none (it missed the int8 gates): still timed, for speed only, and labelled so
        built["OpenVINO int8 (NNCF alpha 0.5, missed the gates: speed only)"] = lambda: OpenvinoEngine(
            str(ungated_openvino_int8(folder, graph.file)), graph.outputs, threads=threads)
    return built


def runners(folder: Path, threads: int, wanted: list[str] | None = None) -> dict:
    """name -> engine for the engines of the comparison named in `wanted` (default all)."""
    engines = {name: build() for name, build in factories(folder, threads).items()
               if wanted is None or any(name == w or name.startswith(f"{w} (") for w in wanted)}
    for name in [n for n, e in engines.items() if getattr(e, "requested_precision", None) == "bf16"]:
        if engines[name].inference_precision != "bf16":  # no bf16 units: no row rather than a mislabelled one
            print(f"skip {name}: OpenVINO runs it at {engines[name].inference_precision} on this CPU")
            del engines[name]
    return engines


def row_name(graph) -> str:
    """The row of runners() that runs manifest entry `graph`."""
    if graph.engine == "onnxruntime":
        return f"onnxruntime {graph.precision}"
    bf16 = graph.details.get("inference_precision") == "bf16"
    if graph.precision == "int8":
        return "OpenVINO int8 (NNCF)" + (", bf16 float parts" if bf16 else "")
    return "OpenVINO bf16" if bf16 else "OpenVINO f32"


def rule_tiers(folder: Path, dim: int = 128) -> dict[str, dict]:
    """Per precision of the folder: the row `engine="auto"` runs on this CPU and the rows whose graphs passed that
    precision's gates at export (the candidates the rule chooses among)."""
    from colbert_onnx.manifest import read_manifest

    manifest = read_manifest(folder)
    exported = {graph.precision for graph in manifest.graphs}  # what ColbertEncoder(folder, precision=P) can open
    tiers: dict[str, dict] = {}
    for graph in [*manifest.graphs, *manifest.engine_graphs]:
        if graph.precision not in exported:
            continue
        passing = tiers.setdefault(graph.precision, {"passing": []})["passing"]
        if graph.passed_gates(dim):
            passing.append(row_name(graph))
    for precision, tier in tiers.items():
        with warnings.catch_warnings():  # an fp32-equivalent int8 warns; the verdict line says it instead
            warnings.simplefilter("ignore", FidelityWarning)
            graph = ColbertEncoder(folder, precision=precision, dim=dim).graph
        tier["auto"], tier["fp32_equivalent"] = row_name(graph), graph.fp32_equivalent
    return tiers


def rule_verdicts(tiers: dict[str, dict], times: dict, shapes: tuple[tuple[int, int], ...]) -> list[str]:
    """One line per precision: the row auto runs, the passing rows timed, and whether auto's row was the fastest of
    them (within NOISE) at every shape and on the length mix, or which row beat it, by how much, where."""
    lines = []
    for precision, tier in tiers.items():
        pick, timed = tier["auto"], [r for r in tier["passing"] if (r, MIX) in times]
        head = f"- {precision}: auto runs {pick}" + (" (the fp32 graph: fp32-equivalent)" if tier.get("fp32_equivalent")
                                                     else "")
        if (pick, MIX) not in times:
            lines.append(f"{head}: not timed here (--engines), no verdict")
            continue
        if not timed:
            lines.append(f"{head}: no row that passed the {precision} gates was timed, no verdict")
            continue
        missed = "" if pick in timed else " (its graph did not pass the gates at export)"
        beaten, untimed = [], [f"{b} x {n}" for b, n in shapes if (pick, (b, n)) not in times]
        for shape in [*shapes, MIX]:
            here = [row for row in timed if (row, shape) in times]
            if (pick, shape) not in times or not here:
                continue
            best = min(here, key=lambda row: times[row, shape])
            if times[pick, shape] > NOISE * times[best, shape]:
                where = "the length mix" if shape == MIX else f"{shape[0]} x {shape[1]}"
                beaten.append(f"{best} {times[pick, shape] / times[best, shape]:.2f}x faster on {where}")
        verdict = f"holds (fastest passing row, within {NOISE - 1:.0%}, everywhere timed)" if not beaten else (
            "DOES NOT HOLD: " + "; ".join(beaten))
        if untimed:
            verdict += f" (auto's row not timed at {', '.join(untimed)}: attention not fused there)"
        lines.append(f"{head}{missed}; passing rows timed: {', '.join(timed)}; the rule {verdict}")
    return lines


def _mix_pass(engine, docs: list[np.ndarray]) -> None:
    """One pass over the length mix: the encoder's batch plan and limits, every engine the same batches."""
    run_planned(lambda ids, mask: engine.run(ids, mask, (128,)), plan_batches, docs)


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """'16x256,1x8192' -> ((16, 256), (1, 8192))."""
    try:
        shapes = tuple((int(b), int(n)) for b, n in (part.strip().split("x") for part in text.split(",")))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"shapes {text!r}: give DOCSxTOKENS, comma-separated (16x256,1x8192)") from exc
    if not shapes or any(b < 1 or n < 1 for b, n in shapes):
        raise argparse.ArgumentTypeError(f"shapes {text!r}: documents and tokens must be positive")
    return shapes


def unsafe_shapes(engines: dict, shapes: tuple[tuple[int, int], ...]) -> dict[tuple[str, tuple[int, int]], str]:
    """(name, shape) -> why it is not timed: documents longer than UNFUSED_MAX_TOKENS on an engine whose attention
    the CPU plugin did not fuse here (its score buffers grow with tokens squared: one 8192-token document of the
    wide size took 17 GB with OpenVINO's int8 on an AVX2 Zen 3, and the run was killed for memory)."""
    return {(name, shape): (f"{name} at {shape[0]} x {shape[1]}: attention not fused by the CPU plugin here, "
                            "memory grows with tokens squared")
            for name, engine in engines.items() if not engine.attention_fused
            for shape in shapes if shape[1] > UNFUSED_MAX_TOKENS}


def time_engines(engines: dict, rounds: int, marker: int, shapes: tuple[tuple[int, int], ...] = SHAPES,
                 skip: Collection[tuple[str, tuple[int, int]]] = ()) -> dict:
    """(name, shape) -> median seconds of one run ("mix": one pass over the length mix, documents marked with
    `marker`), engines in turns; the (name, shape) pairs in `skip` are not run and have no entry."""
    rng = np.random.default_rng(0)
    feeds = {s: rng.integers(5, 500, size=s).astype(np.int64) for s in shapes}
    docs = documents(MIX_DOCS, marker=marker)
    calls = {s: (lambda engine, ids=ids: engine.run(ids, np.ones_like(ids), (128,))) for s, ids in feeds.items()}
    calls[MIX] = lambda engine: _mix_pass(engine, docs)
    timed = [(name, shape) for shape in calls for name in engines if (name, shape) not in skip]
    for name, engine in engines.items():
        for shape, ids in feeds.items():
            if (name, shape) in timed:
                engine.run(ids, np.ones_like(ids), (128,))
        _mix_pass(engine, docs[:8])
    samples: dict = {key: [] for key in timed}
    for _ in range(rounds):
        for name, shape in timed:
            start = time.perf_counter()
            calls[shape](engines[name])
            samples[name, shape].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", default="calm,sharp", help="which of calm,sharp to export and time")
    parser.add_argument("--engines", default=None,
                        help="comma-separated engines to time (default: all), e.g. 'onnxruntime int8,OpenVINO int8'")
    parser.add_argument("--shapes", type=parse_shapes, default=SHAPES,
                        help="DOCSxTOKENS runs to time besides the length mix (default: 16x256,1x2048)")
    parser.add_argument("--workdir", default=None, help="keep the exported folders here (default: a temp dir)")
    args = parser.parse_args()
    shapes, peer = args.shapes, (16, 256)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-engines-"))
    print(f"{describe()}; size {args.size} ({SIZES[args.size]}), {args.threads} threads, median of {args.rounds}")
    real = int(sum(len(d) for d in documents(MIX_DOCS)))
    rate = f" | {peer[0]} x {peer[1]} tokens/s" if peer in shapes else ""
    print("\n| weights | engine | " + " | ".join(f"{b} x {n} (s)" for b, n in shapes)
          + f"{rate} | length mix ({MIX_DOCS} docs, {real} tokens) real tokens/s |")
    print("|---|---|" + "---|" * (len(shapes) + 1 + bool(rate)))
    verdicts = []
    for label in args.weights.split(","):
        folder = export(root, args.size, WEIGHTS[label])
        engines = runners(folder, args.threads, [w.strip() for w in args.engines.split(",")] if args.engines else None)
        marker = ColbertEncoder(folder, engine="onnxruntime").preprocessor.special.document_marker
        skip = unsafe_shapes(engines, shapes)
        for why in skip.values():
            print(f"skip {why}")
        times = time_engines(engines, args.rounds, marker, shapes, skip)
        for name in engines:
            cells = " | ".join(f"{times[name, s]:.3f}" if (name, s) in times else "not timed" for s in shapes)
            per_s = " | " + (f"{peer[0] * peer[1] / times[name, peer]:.0f}" if (name, peer) in times else "") \
                if rate else ""
            print(f"| {label} | {name} | {cells}{per_s} | {real / times[name, MIX]:.0f} |", flush=True)
        verdicts += [f"\n{label} weights:", *rule_verdicts(rule_tiers(folder), times, shapes)]
    print("\n### engine=\"auto\" on this CPU: the fastest timed row that passed the gates?", *verdicts, sep="\n")


if __name__ == "__main__":
    main()
