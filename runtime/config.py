"""EncoderConfig: every setting of a ColbertEncoder, declared once and validated in one place.

The same declaration gives the API its keyword arguments (``ColbertEncoder(folder, dim=64)`` or
``ColbertEncoder(folder, EncoderConfig(dim=64))``), the commands ``encode``, ``rerank``, ``encode-parquet``
and ``serve`` their flags (:func:`add_encoder_arguments`) and each flag its environment variable
(``COLBERT_ONNX_DIM``, ...; flag, then variable, then default). What only the model folder can tell (its
heads and precisions, its trained positions, the default document length) is checked against its
manifest by :meth:`EncoderConfig.for_manifest`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .engines import ENGINE_CHOICES
from .errors import DeviceUnavailableError, InvalidInputError
from .manifest import Manifest
from .options import (
    add_arguments,
    check_options,
    environment_settings,
    from_arguments,
    nested,
    option,
    optional_boolean,
    optional_positive_int,
    optional_thread_count,
    parse_int,
    parse_optional_bool,
    parse_optional_int,
    parse_str,
    positive_int,
)
from .session import DEVICES, SessionConfig
from .tokenization import TRUNCATION_SIDES

LONG_DOCUMENT_MODES = ("truncate", "windows")
FRAMING_TOKENS = 3  # <s>, the marker and </s> around every text


def _device(name: str, value: Any) -> None:
    if value not in DEVICES:
        raise DeviceUnavailableError(f"unknown device {value!r}; choose one of {', '.join(DEVICES)}")


def _document_max_length(name: str, value: Any) -> None:
    optional_positive_int(name, value)
    if value is not None and value <= FRAMING_TOKENS:
        raise InvalidInputError(f"{name} must be > {FRAMING_TOKENS} (the framing tokens), got {value!r}")


@dataclass(frozen=True)
class EncoderConfig:
    """How a ColbertEncoder runs: head, precision, device, lengths, batching, long documents, session knobs.

    The head and precision must be in the folder (checked when it is opened, naming what it has);
    every other field is checked here, on construction.
    """

    dim: int | None = option(None, "Matryoshka head: 128, 96 or 64, whatever the folder holds (none: the folder's "
                                   "largest, 128 in a full export; serve: the head of requests that name no "
                                   "dimensions, none: the largest served)", parse_optional_int)
    precision: str = option("fp32", "graph precision: fp32, or int8 / fp16 when exported", parse_str)
    device: str = option("cpu", "execution device", parse_str, check=_device, choices=DEVICES)
    threads: int | None = option(None, "onnxruntime intra-op threads (none: onnxruntime's default)",
                                 parse_optional_int, check=optional_thread_count)
    document_max_length: int | None = option(None, "tokens per document in all, specials included (none: the "
                                                   "manifest's, 8192)", parse_optional_int, check=_document_max_length)
    batch_size: int = option(32, "sequences per ONNX run", parse_int, check=positive_int)
    max_batch_tokens: int | None = option(16384, "padded tokens per ONNX run (rows x longest row; none: no budget)",
                                          parse_optional_int, check=optional_positive_int)
    long_documents: str = option("truncate", "documents longer than document_max_length: truncate (as Jina's API) "
                                             "or windows (overlapping windows, one vector per token)", parse_str,
                                 choices=LONG_DOCUMENT_MODES)
    window_stride: int | None = option(None, "with windows: tokens between window starts (none: half a window)",
                                       parse_optional_int, check=optional_positive_int)
    io_binding: bool | None = option(None, "run through onnxruntime IOBinding (none: on for cuda, off for cpu)",
                                     parse_optional_bool, check=optional_boolean)
    engine: str = option("auto", "inference engine: auto (picked for this CPU among the engines whose graph passed "
                                 "the fidelity gates; docs/engines.md), onnxruntime, or openvino ([openvino] extra)",
                         parse_str, choices=ENGINE_CHOICES)
    truncation_side: str = option("right", "where a query or document over its length is cut: right keeps its "
                                           "first tokens (as Jina's API), left its last; <s>, the marker and </s> "
                                           "stay (with windows, documents are cut only at a call's own max_length)",
                                  parse_str, choices=TRUNCATION_SIDES)
    session_options: SessionConfig = nested(SessionConfig)

    def __post_init__(self) -> None:
        if self.session_options is None:
            object.__setattr__(self, "session_options", SessionConfig())
        elif not isinstance(self.session_options, SessionConfig):
            raise InvalidInputError(
                f"session_options must be a SessionConfig, got {type(self.session_options).__name__}")
        check_options(self)

    @classmethod
    def from_options(cls, config: EncoderConfig | None = None, **options: Any) -> EncoderConfig:
        """`config` (default: the defaults) with the keyword `options` replacing its fields."""
        if config is not None and not isinstance(config, EncoderConfig):
            raise InvalidInputError(f"config must be an EncoderConfig, got {type(config).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in options if key not in names]
        if unknown:
            raise InvalidInputError(f"unexpected keyword argument {unknown[0]!r}; the encoder options are "
                                    f"{', '.join(names)}")
        config = config if config is not None else cls()
        return dataclasses.replace(config, **options) if options else config

    def for_manifest(self, manifest: Manifest) -> EncoderConfig:
        """This config with the folder's defaults filled in (document_max_length; window_stride with windows),
        checked against what the folder's model can do."""
        length = manifest.document.max_length if self.document_max_length is None else self.document_max_length
        trained = manifest.architecture.max_position_embeddings if manifest.architecture else None
        if trained is not None and length > trained:
            how = ("with long_documents='windows' it is the length of one window" if self.long_documents == "windows"
                   else "use long_documents='windows' to cover longer documents")
            raise InvalidInputError(
                f"document_max_length={length} exceeds the {trained} positions the model was trained on; {how}")
        if self.long_documents != "windows":
            if self.window_stride is not None:  # it would change nothing: say so rather than ignore it
                raise InvalidInputError(f"window_stride={self.window_stride} applies to long_documents='windows'; "
                                        f"with long_documents={self.long_documents!r} documents are cut, not windowed")
            return dataclasses.replace(self, dim=self.head(manifest.dims), document_max_length=length)
        body = length - FRAMING_TOKENS
        stride = self.window_stride if self.window_stride is not None else max(1, body // 2)
        if stride > body:
            raise InvalidInputError(f"window_stride={stride} exceeds the window body of {body} tokens")
        return dataclasses.replace(self, dim=self.head(manifest.dims), document_max_length=length,
                                   window_stride=stride)

    def head(self, dims: Sequence[int]) -> int:
        """The head asked for, or where none was, the largest of `dims` (the folder's: 128 in a full export, 64 in
        a folder exported from jina-colbert-v2-64 alone)."""
        return max(dims) if self.dim is None else self.dim


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare one flag per EncoderConfig field (session knobs included) on `parser`, each with its variable."""
    group = parser.add_argument_group("encoder options (each also an environment variable, flag first)")
    add_arguments(group, EncoderConfig)
    parser.set_defaults(takes_encoder_options=True)


def encoder_settings_from_environment(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> list[str]:
    """The COLBERT_ONNX_* variables a command with encoder options took a setting from (none for other commands):
    a refusal names them, as a stale variable is otherwise hard to find."""
    if not getattr(args, "takes_encoder_options", False):
        return []
    return environment_settings(EncoderConfig, args, environ)


def encoder_config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> EncoderConfig:
    """The EncoderConfig of parsed flags, then COLBERT_ONNX_* variables, then defaults; a bad variable is an
    InvalidInputError naming it."""
    return from_arguments(EncoderConfig, args, environ)

