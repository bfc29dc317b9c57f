"""Server settings: model, encoder, security and limits (no web dependencies)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import EncoderConfig

API_KEY_ENV = "COLBERT_ONNX_API_KEY"
SERVED_MODEL_NAME_ENV = "COLBERT_ONNX_SERVED_MODEL_NAME"


def parse_model_names(values: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Model names from strings that may each hold several, comma-separated (flags, environment), in order.

    ValueError for an empty name or a name given twice: the served list is an explicit choice.
    """
    items = [values] if isinstance(values, str) else list(values)
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"served model names must be strings, got {values!r}")
    names = tuple(name.strip() for item in items for name in item.split(","))
    if not names or any(not name for name in names):
        raise ValueError(f"served model names must be non-empty, got {values!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"served model names are given more than once: {', '.join(repeated)}")
    return names


@dataclass(frozen=True)
class ServerConfig:
    """Everything `create_app` needs; every limit is per request unless said otherwise.

    `encoder` is every encoder setting (precision, device, threads, lengths, batching, long documents,
    io_binding, session knobs); its `dim` is the head of requests that name no `dimensions` (none, the default:
    the largest served head, 128 in a full export). `dims` are the heads served.
    """

    model_dir: str | Path
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model_name: str | None = None  # one served name: the alias of served_model_names=(name,)
    # Names accepted in requests and listed in /v1/models (a comma-separated str is split); () = the manifest's.
    served_model_names: tuple[str, ...] = ()
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
    # embedding_type="muvera": the one MUVERA spec of this server (documents and queries must share it).
    muvera: str = "muvera"

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, EncoderConfig):
            raise ValueError(f"encoder must be an EncoderConfig, got {type(self.encoder).__name__}")
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
        from ..compact import canonical_output
        from ..muvera import is_muvera_output

        if not is_muvera_output(self.muvera):
            raise ValueError(f"muvera must be 'muvera' or 'muvera:k_sim=..,...', got {self.muvera!r}")
        object.__setattr__(self, "muvera", canonical_output(self.muvera))
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if self.served_model_names:
            object.__setattr__(self, "served_model_names", parse_model_names(self.served_model_names))
            if self.model_name is not None:
                raise ValueError("give served_model_names or its one-name alias model_name, not both")
        elif self.model_name is not None and not self.model_name.strip():
            raise ValueError(f"model_name must be non-empty, got {self.model_name!r}")

    def model_names(self, manifest_name: str) -> tuple[str, ...]:
        """The names this server answers to; the first is echoed when a request names none."""
        if self.served_model_names:
            return self.served_model_names
        return (self.model_name or manifest_name,)

    @staticmethod
    def api_key_from_env() -> str | None:
        """The API key from COLBERT_ONNX_API_KEY, or None when unset or empty."""
        return os.environ.get(API_KEY_ENV) or None

    @staticmethod
    def served_model_names_from_env() -> tuple[str, ...]:
        """Names from COLBERT_ONNX_SERVED_MODEL_NAME (comma-separated), or () when unset or empty."""
        value = os.environ.get(SERVED_MODEL_NAME_ENV, "").strip()
        if not value:
            return ()
        try:
            return parse_model_names(value)
        except ValueError as exc:
            raise ValueError(f"{SERVED_MODEL_NAME_ENV}: {exc}") from None
