"""colbert-onnx: jina-colbert-v2 late-interaction retrieval on onnxruntime, without PyTorch."""

from .compact import QuantizedVectors
from .encoder import ColbertEncoder
from .errors import (
    ColbertOnnxError,
    DeviceUnavailableError,
    FidelityWarning,
    InvalidInputError,
    ModelFolderError,
    PrecisionNotAvailableError,
    TokenizerMismatchError,
    UnsupportedDimError,
)
from .scoring import maxsim

__version__ = "0.1.0"

__all__ = [
    "ColbertEncoder",
    "ColbertOnnxError",
    "DeviceUnavailableError",
    "FidelityWarning",
    "InvalidInputError",
    "ModelFolderError",
    "PrecisionNotAvailableError",
    "QuantizedVectors",
    "TokenizerMismatchError",
    "UnsupportedDimError",
    "maxsim",
    "__version__",
]
