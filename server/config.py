"""Server settings: model, security and limits (no web dependencies)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

API_KEY_ENV = "COLBERT_ONNX_API_KEY"


@dataclass(frozen=True)
class ServerConfig:
    """Everything `create_app` needs; every limit is per request unless said otherwise."""

    model_dir: str | Path
    precision: str = "fp32"
    device: str = "cpu"
    threads: int | None = None
    document_max_length: int | None = None
    model_name: str | None = None
    dims: tuple[int, ...] | None = None
    api_key: str | None = None
    # limits
    max_inputs_per_request: int = 512
    max_body_bytes: int = 8 * 1024 * 1024
    max_tokens_per_request: int = 262_144
    # micro-batching
    max_batch_texts: int = 64
    max_wait_ms: float = 2.0
    max_queue: int = 1024
    inference_workers: int = 1
    retry_after_s: int = 1
    encoder_batch_size: int = 32
    encoder_max_batch_tokens: int = 16384

    def __post_init__(self) -> None:
        for name in (
            "max_inputs_per_request",
            "max_body_bytes",
            "max_tokens_per_request",
            "max_batch_texts",
            "max_queue",
            "inference_workers",
            "retry_after_s",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")

    @staticmethod
    def api_key_from_env() -> str | None:
        """The API key from COLBERT_ONNX_API_KEY, or None when unset or empty."""
        return os.environ.get(API_KEY_ENV) or None
