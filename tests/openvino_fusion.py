"""Whether OpenVINO's CPU plugin fuses the attention of a folder's OpenVINO graph on this CPU (the real one, whatever
flags a test feeds auto): what auto's choice depends on besides the flags (runtime/engines/selection.py)."""

from __future__ import annotations

from pathlib import Path


def openvino_attention_fuses_here(folder: Path, precision: str, dim: int = 128) -> bool:
    """Compile the OpenVINO graph auto would pick for head `dim` at `precision` and read the plugin's verdict."""
    from colbert_onnx.engines import selection
    from colbert_onnx.engines.openvino_engine import OpenvinoEngine
    from colbert_onnx.model_folder import open_model_folder

    graph = selection.openvino_graph(open_model_folder(folder), dim, precision)
    assert graph is not None, f"{folder} has no OpenVINO graph at {precision}"
    return OpenvinoEngine(str(folder / graph.file), graph.outputs,
                          inference_precision=str(graph.details.get("inference_precision", "f32"))).attention_fused
