"""Per-precision graphs of an export: optimized fp32, int8 (CPU), fp16 (GPU), each with measured fidelity."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from colbert_onnx.conventions import SpecialIds
from colbert_onnx.manifest import KNOWN_PRECISIONS, GraphEntry, Manifest
from colbert_onnx.tokenization import Preprocessor

from .checkpoint import CheckpointError
from .fidelity import (
    FidelitySet,
    Outputs,
    build_set,
    calibration_texts,
    collect,
    fidelity_texts,
    judge,
    ort_runner,
)
from .mixed_precision import NO_INT8_GEMM_LEFT, SEARCH_SECONDS, int8_gemms_left, relative_speed, search_float_nodes
from .modeling import BackboneConfig
from .optimize import FUSION_METHOD, optimize_fp32, save_graph
from .quantize import DEFAULT_INT8_METHOD, convert_fp16, quantize_int8

DEFAULT_PRECISIONS = ("fp32", "int8", "fp16")


def parse_precisions(value: str | Sequence[str] | None) -> list[str]:
    """'fp32,int8' or a list -> validated list in canonical order; fp32 is always included (it is the source)."""
    if value is None:
        return list(DEFAULT_PRECISIONS)
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [p.strip() for p in items if p.strip()]
    if not items:
        raise CheckpointError(f"no precision given; choose from {', '.join(KNOWN_PRECISIONS)} (default: all)")
    unknown = sorted(set(items) - set(KNOWN_PRECISIONS))
    if unknown:
        raise CheckpointError(f"unknown precision(s) {', '.join(unknown)}; choose from {', '.join(KNOWN_PRECISIONS)}")
    return [p for p in KNOWN_PRECISIONS if p in items or p == "fp32"]


def variant_file(file: str, precision: str) -> str:
    """model.onnx -> model-int8.onnx."""
    stem = file[: -len(".onnx")] if file.endswith(".onnx") else file
    return f"{stem}-{precision}.onnx"


def calibration_feeds(pre: Preprocessor, batch_size: int = 8) -> list[dict[str, np.ndarray]]:
    """Document-style and query-style batches of the calibration corpus."""
    texts = calibration_texts()
    fset = build_set(pre, [], {"queries": texts[:batch_size], "documents": texts}, batch_size=batch_size)
    return [fset.queries, *fset.documents]


def fidelity_inputs(
    manifest: Manifest | Mapping, tokenizer: Tokenizer, special: SpecialIds
) -> tuple[Preprocessor, FidelitySet]:
    """The preprocessor (documents capped at 512 tokens) and id batches fidelity is measured on.

    `manifest` may also be the parsed manifest.json (benchmarks/bench_gpu.py passes one).
    """
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_dict(manifest)
    pre = Preprocessor.for_manifest(tokenizer, special, manifest, min(manifest.document.max_length, 512))
    return pre, build_set(pre, list(manifest.document.skiplist_ids), fidelity_texts())


def build_precisions(
    out: Path,
    manifest: Manifest,
    pre: Preprocessor,
    fset: FidelitySet,
    references: Sequence[dict[int, Outputs]],
    precisions: Sequence[str],
    int8_method: str | None = None,
) -> Manifest:
    """Optimize each fp32 graph in place, add the int8/fp16 variants; `manifest` with them and their fidelity.

    `references` holds, per graph, the recorded float64 PyTorch outputs on `fset`: every graph is measured
    against it, whatever the parity options (no option ships an unmeasured int8 graph).
    `int8_method` None is the default method (which may be replaced when it misses a gate); a named
    method is written as asked.
    """
    sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    cfg = BackboneConfig(vocab_size=manifest.vocab_size, **{key: getattr(manifest.architecture, key) for key in sizes})
    calibration = calibration_feeds(pre) if "int8" in precisions else []
    graphs: list[dict] = []
    fidelity: dict = {}
    for entry, reference in zip([g.to_dict() for g in manifest.graphs], references, strict=True):
        path = out / entry["file"]
        optimized, fusions = optimize_fp32(path, path, cfg)
        keep_external = {"external_threshold": 0} if entry.get("external_data") else {}  # keep the exporter's choice
        entry.update(save_graph(optimized, path, **keep_external))
        entry["method"] = f"{entry['method']}; then {FUSION_METHOD}"
        entry["fused_operators"] = fusions
        variants = [entry]
        dims = [int(d) for d in entry["outputs"]]
        if "int8" in precisions:
            variants.append(build_int8(out, entry, optimized, calibration, dims, reference, fset, int8_method))
        if "fp16" in precisions:
            file = variant_file(entry["file"], "fp16")
            model16, info = convert_fp16(optimized)
            variants.append({**_base(entry, file, "fp16", out, save=(model16, out / file)), **info})
        del optimized
        for v in variants:
            if "fidelity" not in v:
                v["fidelity"] = measure_fidelity(out / v["file"], dims, reference, fset, v["precision"])
            fidelity.setdefault(v["precision"], {}).update(v["fidelity"])
        graphs.extend(variants)
    fp32_bytes = sum(g["bytes"] for g in graphs if g["precision"] == "fp32")
    for g in graphs:
        g["size_vs_fp32"] = round(g["bytes"] / fp32_bytes, 4)
    summary = {
        "reference": "float64 PyTorch evaluation of the same checkpoints",
        "set": {"queries": len(fidelity_texts()["queries"]), "documents": len(fidelity_texts()["documents"])},
        **fidelity,
    }
    return dataclasses.replace(
        manifest,
        graphs=tuple(GraphEntry.from_dict(g) for g in graphs),
        precisions=tuple(p for p in KNOWN_PRECISIONS if any(g["precision"] == p for g in graphs)),
        fidelity=summary,
    )


def build_int8(
    out: Path,
    entry: dict,
    optimized,
    calibration: list,
    dims: list[int],
    reference: dict,
    fset: FidelitySet,
    int8_method: str | None,
    search_seconds: float = SEARCH_SECONDS,
) -> dict:
    """The int8 graph of one fp32 graph and its manifest entry.

    A method the user named is written as asked. The default (int8_method None) is the per-token graph;
    where it misses a gate, its most sensitive nodes stay fp32 until every gate passes on every head
    (mixed_precision.py), and where nothing with an int8 GEMM left passes, the int8 precision *is* the fp32 graph
    (`fp32_equivalent`: the same vectors or better, no slower, no second file), said so in the manifest and at load.
    """
    chosen_by = "default" if int8_method is None else "user"
    method = DEFAULT_INT8_METHOD if int8_method is None else int8_method
    file = variant_file(entry["file"], "int8")
    info = quantize_int8(optimized, out / file, calibration, method=method)
    int8 = {**_base(entry, file, "int8", out), **info, "method_chosen_by": chosen_by}
    int8["fidelity"] = measure_fidelity(out / file, dims, reference, fset, "int8")
    if chosen_by == "user" or all(m["passed"] for m in int8["fidelity"].values()):
        return int8
    with tempfile.TemporaryDirectory() as tmp:
        search = search_float_nodes(optimized, calibration, reference, fset, Path(tmp), search_seconds)
        pure = Path(tmp) / "pure-int8.onnx"
        shutil.move(out / file, pure)
        mixed = None
        if search.float_nodes is not None:
            mixed = _mixed_graph(out, entry, optimized, calibration, dims, reference, fset, search, file)
        record = search.manifest()
        if mixed is None:
            (out / file).unlink(missing_ok=True)
            record["outcome"] = "fp32-equivalent"
            record["reason"] = search.reason or "the mixed graph missed a gate once rebuilt"
            fp32 = {k: entry[k] for k in ("file", "outputs", "backbone_sha256", "external_data", "bytes")}
            mixed = {**fp32, "precision": "int8", "method": "fp32 graph (no graph with int8 GEMMs passed the gates)",
                     "fp32_equivalent": True, "method_chosen_by": chosen_by,
                     "fidelity": measure_fidelity(out / entry["file"], dims, reference, fset, "int8")}
        record["speed_vs_pure_int8"] = round(relative_speed(out / mixed["file"], pure, fset), 3)
    return {**mixed, "mixed_precision": record}


def _mixed_graph(out: Path, entry: dict, optimized, calibration: list, dims: list[int], reference: dict,
                 fset: FidelitySet, search, file: str, extra_tries: int = 3) -> dict | None:
    """Build the int8 graph with the search's fp32 nodes and measure it; a few more nodes in sensitivity
    order where the rebuilt graph misses a gate the search graph passed. None when none passes."""
    count = len(search.float_nodes)
    for k in range(count, min(count + extra_tries, len(search.order)) + 1):
        if not int8_gemms_left(search.order[:k], search.kinds):  # no faster than the fp32 graph
            search.reason = NO_INT8_GEMM_LEFT
            return None
        keep = frozenset(search.order[:k])
        info = quantize_int8(optimized, out / file, calibration, keep_float=keep)
        graph = {**_base(entry, file, "int8", out), **info, "method_chosen_by": "default"}
        graph["fidelity"] = measure_fidelity(out / file, dims, reference, fset, "int8")
        if all(m["passed"] for m in graph["fidelity"].values()):
            search.float_nodes = list(search.order[:k])
            return graph
    return None


def measure_fidelity(graph: Path, dims: list[int], reference: dict, fset: FidelitySet, precision: str) -> dict:
    """Per head: the graph's vectors on `fset` against the recorded PyTorch reference, with the gate verdict."""
    return judge(reference, collect(ort_runner(str(graph), dims), fset), dims, precision)


def _base(entry: dict, file: str, precision: str, out: Path, save: tuple | None = None) -> dict:
    path = out / file
    if save is not None:
        info = save_graph(save[0], save[1])
    else:
        info = {"external_data": None, "bytes": path.stat().st_size}
    return {"file": file, "precision": precision, "outputs": dict(entry["outputs"]),
            "backbone_sha256": entry.get("backbone_sha256"), **info}
