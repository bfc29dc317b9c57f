"""colbert_onnx.export: jina-colbert-v2 checkpoints -> ONNX model folders (needs the [export] extra)."""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .exporter import ParityError, export_model
from .toy import make_toy_trio

__all__ = ["Checkpoint", "CheckpointError", "ParityError", "export_model", "load_checkpoint", "make_toy_trio"]
