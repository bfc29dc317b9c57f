"""Jina-API-compatible HTTP server (``colbert-onnx serve``); needs the [server] extra (FastAPI, uvicorn).

Importing this package is cheap and free of web dependencies; ``create_app`` and ``serve`` import
FastAPI/uvicorn on first use, so ``import colbert_onnx`` never pulls them in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ServerConfig

if TYPE_CHECKING:  # pragma: no cover
    from .app import create_app
    from .main import serve

__all__ = ["ServerConfig", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    """Lazy access to the web-dependent entry points."""
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .main import serve

        return serve
    raise AttributeError(name)
