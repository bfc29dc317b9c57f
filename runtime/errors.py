"""Typed errors: every failure a user can cause names the problem instead of surfacing from onnxruntime."""

from __future__ import annotations


class ColbertOnnxError(Exception):
    """Base class of every error raised on purpose by colbert-onnx."""


class InvalidInputError(ColbertOnnxError, TypeError, ValueError):
    """The texts (or other arguments) handed to the encoder are not usable."""


class InvalidTextError(InvalidInputError):
    """A text the tokenizer cannot take (runtime/text.py): `what` and `index` name it, `reason` says why."""

    def __init__(self, what: str, index: int | None, reason: str) -> None:
        super().__init__(f"{what}[{index}] {reason}" if index is not None else f"{what} {reason}")
        self.what, self.index, self.reason = what, index, reason

    def __reduce__(self):  # picklable (Ray hands errors between processes)
        return type(self), (self.what, self.index, self.reason)


class ModelFolderError(ColbertOnnxError):
    """The exported model folder is missing, incomplete or corrupt."""


class UnsupportedDimError(ColbertOnnxError, ValueError):
    """The requested Matryoshka head is not in the model folder."""


class PrecisionNotAvailableError(ColbertOnnxError, ValueError):
    """The requested precision is unknown or was not exported into the folder."""


class TokenizerMismatchError(ModelFolderError):
    """The tokenizer cannot feed this graph: ids beyond its vocabulary, or missing marker tokens."""


class DeviceUnavailableError(ColbertOnnxError, RuntimeError):
    """The requested execution device (e.g. CUDA) is not available in this onnxruntime build."""


class FidelityWarning(UserWarning):
    """A graph missed the fidelity gates it was measured against at export (vectors less faithful)."""


class EngineUnavailableError(ColbertOnnxError, RuntimeError):
    """The requested inference engine cannot run here: not installed, or no graph of the folder passed its gates."""
