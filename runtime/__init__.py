"""colbert-onnx: jina-colbert-v2 late-interaction retrieval on onnxruntime, without PyTorch."""

import os as _os

# onnxruntime's Linux and macOS wheels (1.29+) send usage telemetry (DNS and HTTPS to
# mobile.events.data.microsoft.com) unless ORT_DISABLE_TELEMETRY=1 is set before their first
# environment is created; measured with strace on onnxruntime 1.32. This package runs on on-prem
# boxes and sandboxes that must not call out, so it opts out by default; a value the user set wins.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .config import EncoderConfig
from .encoder import ColbertEncoder
from .errors import (
    ColbertOnnxError,
    DeviceUnavailableError,
    EngineUnavailableError,
    FidelityWarning,
    InvalidInputError,
    InvalidTextError,
    ModelFolderError,
    PrecisionNotAvailableError,
    TokenizerMismatchError,
    UnsupportedDimError,
)
from .scoring import maxsim
from .vectors import QuantizedVectors
from .verify import verify_folder

__version__ = "0.1.0"

__all__ = [
    "ColbertEncoder",
    "ColbertOnnxError",
    "DeviceUnavailableError",
    "EncoderConfig",
    "EngineUnavailableError",
    "FidelityWarning",
    "InvalidInputError",
    "InvalidTextError",
    "ModelFolderError",
    "PrecisionNotAvailableError",
    "QuantizedVectors",
    "TokenizerMismatchError",
    "UnsupportedDimError",
    "maxsim",
    "verify_folder",
    "__version__",
]
