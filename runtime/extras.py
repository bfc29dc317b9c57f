"""Optional extras: the package an extra provides, or an ImportError that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_extra(module: str, extra: str, feature: str) -> ModuleType:
    """`module` imported; where it is absent, an ImportError saying that `feature` needs the `extra` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{feature} needs the {extra} extra: pip install 'colbert-onnx[{extra}]'") from exc
