"""The OpenVINO engine's graphs: the exporter's PyTorch module written with plain ONNX ops, measured on OpenVINO.

OpenVINO reads the optimized onnxruntime graph (com.microsoft RotaryEmbedding / MultiHeadAttention, inside
If/Loop) without an error and returns wrong vectors (issue 25: token cosines down to -0.97), so its engine
gets a graph of its own: the same module with plain MatMul/Softmax attention and rotary as Slice/Mul/Add,
no com.microsoft operator. Its fidelity is measured *with OpenVINO* against the float64 reference by the
same gates (fp32's, at OpenVINO's f32 inference precision); the bf16 inference precision OpenVINO picks by
default on bf16 CPUs is measured too and recorded, against the int8 gates (docs/engines.md). Entries go to
the manifest's `engine_graphs`, apart from the onnxruntime `graphs`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from colbert_onnx.engines.openvino_engine import OpenvinoEngine, openvino_available
from colbert_onnx.manifest import GraphEntry, Manifest

from .fidelity import FidelitySet, Outputs, collect, compare, passes
from .modeling import MultiHeadColbert, set_attention_chunk, set_fused_rotary

ENGINE = "openvino"
BF16_GATES = "int8"  # the loosest gates: what a bf16 graph would have to pass to serve a reduced precision


def openvino_file(file: str) -> str:
    """model.onnx -> model-openvino.onnx."""
    stem = file[: -len(".onnx")] if file.endswith(".onnx") else file
    return f"{stem}-openvino.onnx"


def export_openvino_graph(module: MultiHeadColbert, out: Path, record: dict, opset: int) -> dict:
    """Write `module` with plain attention and rotary ops next to the onnxruntime graph of `record`; returns its
    engine_graphs entry (not yet measured). The module's attention and rotary settings are restored."""
    from .exporter import export_graph  # the exporter imports this module

    chunks = {id(m): (m.attention_chunk, m.attention_budget, m.fused_rotary) for m in module.modules()
              if hasattr(m, "fused_rotary")}
    file = openvino_file(record["file"])
    set_attention_chunk(module, None)
    set_fused_rotary(module, False)
    try:
        info = export_graph(module, out / file, opset=opset)
    finally:
        for m in module.modules():
            if id(m) in chunks:
                m.attention_chunk, m.attention_budget, m.fused_rotary = chunks[id(m)]
    return {"file": file, "precision": "fp32", "outputs": dict(record["outputs"]),
            "backbone_sha256": record.get("backbone_sha256"), **info, "engine": ENGINE,
            "inference_precision": "f32",
            "method": "torch.onnx.export (TorchScript), plain MatMul/Softmax attention and rotary, no "
                      "com.microsoft operators (export/openvino_graphs.py)"}


def openvino_runner(path: Path, dims: Sequence[int], inference_precision: str = "f32"):
    """feeds -> dim -> vectors for a graph file on OpenVINO's CPU plugin (the runtime's engine)."""
    engine = OpenvinoEngine(str(path), {d: f"vectors_{d}" for d in dims}, inference_precision=inference_precision)
    return lambda feeds: engine.run(feeds["input_ids"], feeds["attention_mask"], dims)


def measure_on_openvino(path: Path, dims: Sequence[int], reference: dict[int, Outputs], fset: FidelitySet,
                        inference_precision: str, gates: str) -> dict:
    """Per head: the graph's vectors on OpenVINO at `inference_precision` against the reference, gates `gates`."""
    got = collect(openvino_runner(path, dims, inference_precision), fset)
    result = {}
    for d in dims:
        metrics = compare(reference[d], got[d])
        metrics["passed"] = passes(gates, metrics)
        result[str(d)] = metrics
    return result


def add_openvino_graphs(out: Path, manifest: Manifest, entries: Sequence[dict],
                        references: Sequence[dict[int, Outputs]] | None, fset: FidelitySet) -> Manifest:
    """`manifest` with the OpenVINO `entries` in its engine_graphs, each measured on OpenVINO where the openvino
    package is installed (else recorded as not measured: the runtime's auto choice then skips it)."""
    graphs = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        dims = [int(d) for d in entry["outputs"]]
        if references is None:
            entry["fidelity_not_measured"] = "the export ran without the float64 reference (check_parity=False)"
        elif not openvino_available():
            entry["fidelity_not_measured"] = "the openvino package was not installed at export"
        else:
            entry["fidelity"] = measure_on_openvino(out / entry["file"], dims, references[i], fset, "f32", "fp32")
            entry["bf16_inference_fidelity"] = {
                "gates": BF16_GATES,
                **measure_on_openvino(out / entry["file"], dims, references[i], fset, "bf16", BF16_GATES)}
        graphs.append(GraphEntry.from_dict(entry, f"engine_graphs[{i}]"))
    return dataclasses.replace(manifest, engine_graphs=tuple(graphs))
