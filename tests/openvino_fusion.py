"""Whether OpenVINO's CPU plugin fuses the attention of a folder's OpenVINO graph on this CPU (the real one, whatever
flags a test feeds auto): what auto's choice depends on besides the flags (runtime/engines/selection.py)."""

from __future__ import annotations

from pathlib import Path


def openvino_attention_fuses_here(folder: Path, precision: str, dim: int = 128) -> bool:
    """Compile the OpenVINO graph auto would pick for head `dim` at `precision` and read the plugin's verdict."""
    from colbert_onnx.engines import selection
    from colbert_onnx.model_folder import open_model_folder

    model_folder = open_model_folder(folder)
    graph = selection.openvino_graph(model_folder, dim, precision)
    assert graph is not None, f"{folder} has no OpenVINO graph at {precision}"
    return selection.engine_for(model_folder, graph, threads=None).attention_fused
