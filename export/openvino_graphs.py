"""The OpenVINO engine's graphs: the exporter's PyTorch module written with plain ONNX ops, measured on OpenVINO.

OpenVINO reads the optimized onnxruntime graph (com.microsoft RotaryEmbedding / MultiHeadAttention, inside
If/Loop) without an error and returns wrong vectors (issue 25: token cosines down to -0.97), so its engine
gets a graph of its own: the same module with plain MatMul/Softmax attention and rotary as Slice/Mul/Add,
no com.microsoft operator. Its fidelity is measured *with OpenVINO* against the float64 reference by the
same gates: at OpenVINO's f32 inference precision it serves fp32 (fp32 gates), at bf16 (OpenVINO's default on
CPUs with bf16 units) it serves fp16 (fp16 gates; docs/engines.md). Both entries share one file and go to the
manifest's `engine_graphs`, apart from the onnxruntime `graphs`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from colbert_onnx.engines import ENGINES
from colbert_onnx.engines.choice import BF16_FEATURES, cpu_features
from colbert_onnx.engines.openvino_engine import OpenvinoEngine, import_openvino, openvino_available
from colbert_onnx.errors import EngineUnavailableError, InvalidInputError
from colbert_onnx.manifest import GraphEntry, Manifest

from .fidelity import FidelitySet, Outputs, collect, judge
from .modeling import MultiHeadColbert, set_attention_chunk, set_fused_rotary
from .openvino_int8 import build_openvino_int8, nncf_available

ENGINE = "openvino"
# OpenVINO inference precision -> the precision it serves (and whose gates it must pass): bf16 is the CPU's
# 16-bit float, held to the fp16 gates (docs/engines.md)
INFERENCE_PRECISIONS = (("f32", "fp32"), ("bf16", "fp16"))


def why_no_openvino_graphs(engines: str | Sequence[str] | None) -> str | None:
    """For `export_model(engines=...)`: why the export writes no OpenVINO graphs, or None when it writes them
    (onnxruntime's graphs are always written: every folder's base).

    None or "auto": OpenVINO's where its package is installed. Named engines are honored or refused before any work:
    an unknown name is an InvalidInputError, OpenVINO asked for without its package an EngineUnavailableError naming
    the extra.
    """
    names = ["auto"] if engines is None else (engines.split(",") if isinstance(engines, str) else list(engines))
    names = [str(n).strip() for n in names if str(n).strip()]
    unknown = [n for n in names if n not in (*ENGINES, "auto")]
    if unknown or not names or ("auto" in names and len(names) > 1):
        raise InvalidInputError(f"engines {','.join(names) or '(empty)'!r}: give auto, or a comma-separated list of "
                                f"{', '.join(ENGINES)} (onnxruntime's graphs are always written)")
    if names == ["auto"]:
        return None if openvino_available() else ("the openvino package was not installed at export "
                                                  "(pip install 'colbert-onnx[openvino]')")
    if "openvino" in names:
        import_openvino()  # EngineUnavailableError naming the extra
        return None
    return f"not asked for (engines={','.join(names)})"


def openvino_file(file: str) -> str:
    """model.onnx -> model-openvino.onnx."""
    stem = file[: -len(".onnx")] if file.endswith(".onnx") else file
    return f"{stem}-openvino.onnx"


def export_openvino_graph(module: MultiHeadColbert, out: Path, record: dict, opset: int,
                          export_graph: Callable[..., dict]) -> dict:
    """Write `module` with plain attention and rotary ops next to the onnxruntime graph of `record`, through the
    exporter's `export_graph` (what writes every graph of the folder); returns its engine_graphs entry (not yet
    measured). The module's attention and rotary settings are restored."""
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
            "method": "torch.onnx.export (TorchScript), plain MatMul/Softmax attention and rotary, no "
                      "com.microsoft operators (export/openvino_graphs.py)"}


def _compile(path: Path, dims: Sequence[int], inference_precision: str) -> OpenvinoEngine:
    """A graph file on OpenVINO's CPU plugin (the runtime's engine)."""
    return OpenvinoEngine(str(path), {d: f"vectors_{d}" for d in dims}, inference_precision=inference_precision)


def _measure(engine: OpenvinoEngine, dims: Sequence[int], reference: dict[int, Outputs], fset: FidelitySet,
             gates: str) -> dict:
    """Per head: `engine`'s vectors of the fidelity set against the reference, gates `gates`."""
    return judge(reference, collect(lambda feeds: engine.run(feeds["input_ids"], feeds["attention_mask"], dims),
                                    fset), dims, gates)


def measure_on_openvino(path: Path, dims: Sequence[int], reference: dict[int, Outputs], fset: FidelitySet,
                        inference_precision: str, gates: str) -> dict:
    """Per head: the graph's vectors on OpenVINO at `inference_precision` against the reference, gates `gates`."""
    return _measure(_compile(path, dims, inference_precision), dims, reference, fset, gates)


def measured_variant(variant: dict, path: Path, dims: Sequence[int], reference: dict[int, Outputs],
                     fset: FidelitySet) -> dict:
    """`variant` with its figures on OpenVINO here, or with why they cannot be measured here: a CPU without bf16
    units runs a bf16 hint at f32, whose figures would not be bf16's. A bf16 entry records the bf16 units it was
    measured with (AMX and AVX512-BF16 kernels differ; the runtime warns where they are not this CPU's). A graph the
    CPU plugin cannot compile here is recorded as not measured, saying why: OpenVINO is optional, the export goes on."""
    inference, precision = variant["inference_precision"], variant["precision"]
    verify = ("`colbert-onnx verify FOLDER --engine openvino --record` on the CPU it is to run on measures it and "
              "lets CPUs with the same int8 and bf16 units run it")
    try:
        engine = _compile(path, dims, inference)
    except EngineUnavailableError as exc:  # the CPU plugin refused it here: a gap in the folder, not a failed export
        return {**variant, "fidelity_not_measured": (
            f"OpenVINO could not compile it at {inference} on the CPU that exported ({exc}): {verify}")}
    if engine.inference_precision != inference:
        return {**variant, "fidelity_not_measured": (
            f"OpenVINO runs {engine.inference_precision}, not {inference}, on the CPU that exported (it has none of "
            f"{', '.join(BF16_FEATURES)}): {verify}")}
    measured = {**variant, "fidelity": _measure(engine, dims, reference, fset, precision)}
    if inference == "bf16":
        measured["measured_with_bf16_units"] = [f for f in BF16_FEATURES if f in cpu_features()]
    return measured


def bf16_rest_variant(int8_entry: dict) -> dict:
    """The OpenVINO int8 graph's second entry: the same file with its float parts (attention, softmax, LayerNorm,
    GELU) at bf16, OpenVINO's default for an int8 model on a CPU with bf16 units. It ran 1.07x-1.21x the f32-rest
    entry on AVX512-BF16 (Zen 4, wide toy: the most on long documents, where attention weighs more), and is held to the
    same int8 gates, measured apart (docs/engines.md): it missed them on the outlier trio where the f32 rest passed."""
    variant = {k: v for k, v in int8_entry.items() if k not in ("fidelity", "attempts")}
    return {**variant, "inference_precision": "bf16",
            "method": f"{int8_entry['method']}; float parts at bf16 inference precision"}


def add_openvino_graphs(out: Path, manifest: Manifest, entries: Sequence[dict],
                        references: Sequence[dict[int, Outputs]] | None, fset: FidelitySet,
                        precisions: Sequence[str], int8_calibration: Sequence[dict] | None = None) -> Manifest:
    """`manifest` with the engine_graphs of each OpenVINO graph of `entries`, for the exported `precisions`: f32
    inference serving fp32 (fp32 gates) and bf16 inference serving fp16 (fp16 gates), each measured on OpenVINO
    (entries exist only where the export found the package: why_no_openvino_graphs); and, with `int8_calibration`
    (int8 was exported), NNCF's int8 of it (export/openvino_int8.py) where it passes the int8 gates, in two entries:
    its float parts at f32 and at bf16 (bf16_rest_variant), each measured by the int8 gates. What the int8 search
    tried is recorded in the manifest's `openvino_int8`, written or not."""
    graphs, int8_records = [], []
    for i, entry in enumerate(entries):
        for inference, precision in INFERENCE_PRECISIONS:
            if precision not in precisions:  # fp16 not asked for: no entry would serve it (fp32 is always there)
                continue
            variant = {**entry, "precision": precision, "inference_precision": inference}
            dims = [int(d) for d in entry["outputs"]]
            if references is None:
                variant["fidelity_not_measured"] = "the export ran without the float64 reference (check_parity=False)"
            else:
                variant = measured_variant(variant, out / entry["file"], dims, references[i], fset)
            graphs.append(GraphEntry.from_dict(variant, f"engine_graphs[{len(graphs)}]"))
        if int8_calibration is None:
            continue
        if references is None or not nncf_available():
            why = ("the export ran without the float64 reference" if references is None
                   else "NNCF (the [export] extra) was not installed at export")
            int8_records.append({"graph": entry["file"], "written": None, "reason": why})
            continue
        int8_entry, record = build_openvino_int8(
            out, entry, int8_calibration,
            lambda path, ref=references[i], dims=dims: measure_on_openvino(path, dims, ref, fset, "f32", "int8"))
        int8_records.append({"graph": entry["file"], **record})
        if int8_entry is not None:
            graphs.append(GraphEntry.from_dict(int8_entry, f"engine_graphs[{len(graphs)}]"))
            graphs.append(GraphEntry.from_dict(measured_variant(
                bf16_rest_variant(int8_entry), out / int8_entry["file"], dims, references[i], fset),
                f"engine_graphs[{len(graphs)}]"))
    extra = {**manifest.extra, **({"openvino_int8": int8_records} if int8_records else {})}
    return dataclasses.replace(manifest, engine_graphs=tuple(graphs), extra=extra)
