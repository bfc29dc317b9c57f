"""manifest.json of a model folder as typed records, read and written here for both sides.

The exporter builds a :class:`Manifest` and writes it with :func:`write_manifest`; the runtime reads it
with :func:`read_manifest`. The JSON layout is format version 1, unchanged since the first export:
``to_dict(from_dict(m)) == m`` for every manifest an exporter of this format wrote (tested on one
kept from before this module existed). Measurement records (parity, fidelity, the mixed-precision
search) and a graph's method details stay plain dicts inside the typed records: they are reports,
read by people and by ``gate_verdicts``, not settings the runtime acts on. Keys this version does
not know are kept and written back (``extra``), so a newer exporter's additions survive a rewrite.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from .conventions import SpecialIds
from .errors import ModelFolderError, TokenizerMismatchError

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "colbert-onnx"
FORMAT_VERSION = 1
KNOWN_PRECISIONS = ("fp32", "int8", "fp16")
MIN_FRAMED_LENGTH = 4  # <s>, the marker, one token, </s>


class _Reader:
    """Typed access to one JSON object of the manifest; errors name the file and the key path."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, Mapping):
            raise ModelFolderError(f"{source}: {where or 'the manifest'} must be a JSON object, got {data!r:.80}")
        self.data, self.where, self.source = data, where, source

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., optional: bool = False) -> Any:
        if key not in self.data:
            if default is ...:
                raise ModelFolderError(f"{self.source} is missing the key {self._path(key)!r}")
            return default
        value = self.data[key]
        if value is None and optional:
            return None
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            value = ...  # a bool is an int to isinstance, never to the manifest
        if value is ... or not isinstance(value, kind):
            raise ModelFolderError(f"{self.source}: {self._path(key)} is {self.data[key]!r:.80}, of the wrong type")
        return value

    def child(self, key: str) -> _Reader:
        return _Reader(self.get(key, dict), self._path(key), self.source)

    def rest(self, known: tuple[str, ...]) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k not in known}


def _at_least(reader: _Reader, key: str, minimum: int, default: Any = ..., optional: bool = False) -> Any:
    """An int of the manifest that must be >= `minimum` (a length, an id): ModelFolderError naming the key."""
    value = reader.get(key, int, default, optional)
    if value is not None and value is not default and value < minimum:
        raise ModelFolderError(f"{reader.source}: {reader._path(key)} is {value}, below {minimum}")
    return value


def _ints(values: Any, reader: _Reader, key: str) -> tuple[int, ...]:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ModelFolderError(f"{reader.source}: {reader._path(key)} must list ints, got {values!r:.80}")
    return tuple(values)


@dataclass(frozen=True)
class GraphEntry:
    """One ONNX file of the folder: its precision, which output carries which head, its size and records.

    `details` holds the method information the exporter records (method, attention, fused operators,
    quantization settings, size_vs_fp32...); `fidelity` (head -> metrics and gate verdict) and
    `mixed_precision` (the accuracy-aware search) are export-time measurements.
    """

    file: str
    precision: str
    outputs: dict[int, str]
    bytes: int
    external_data: str | None = None
    backbone_sha256: str | None = None
    fp32_equivalent: bool = False  # an int8 precision that is the fp32 graph: no graph with int8 GEMMs passed the gates
    fidelity: dict[str, dict] | None = None
    mixed_precision: dict | None = None
    # graph_fingerprint of the file (and its external data) as written: a graph of another checkpoint is refused
    fingerprint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("file", "precision", "outputs", "backbone_sha256", "external_data", "bytes", "fp32_equivalent",
             "fidelity", "mixed_precision", "fingerprint")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "graphs[]", source: str = MANIFEST_NAME) -> GraphEntry:
        r = _Reader(data, where, source)
        outputs = r.get("outputs", dict)
        if not outputs:
            raise ModelFolderError(f"{source}: {where}.outputs is empty: the graph serves no head")
        try:
            heads = {int(dim): str(name) for dim, name in outputs.items()}
        except ValueError:
            raise ModelFolderError(f"{source}: {where}.outputs keys must be head dims, got {list(outputs)}") from None
        return cls(
            file=r.get("file", str),
            precision=r.get("precision", str),
            outputs=heads,
            bytes=_at_least(r, "bytes", 0),
            external_data=r.get("external_data", str, None, optional=True),
            backbone_sha256=r.get("backbone_sha256", str, None, optional=True),
            fp32_equivalent=r.get("fp32_equivalent", bool, False),
            fidelity=r.get("fidelity", dict, None),
            mixed_precision=r.get("mixed_precision", dict, None, optional=True),
            fingerprint=r.get("fingerprint", str, None, optional=True),
            details=r.rest(cls._KEYS),
        )

    @property
    def engine(self) -> str:
        """The engine this graph is made for: onnxruntime, or openvino (the `engine_graphs` of a manifest)."""
        return str(self.details.get("engine", "onnxruntime"))

    def passed_gates(self, dim: int) -> bool | None:
        """Whether head `dim` passed its fidelity gates at export; None when it was not measured."""
        metrics = (self.fidelity or {}).get(str(dim))
        return bool(metrics.get("passed")) if isinstance(metrics, dict) and "passed" in metrics else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file,
            "precision": self.precision,
            "outputs": {str(d): name for d, name in self.outputs.items()},
            "backbone_sha256": self.backbone_sha256,
            "external_data": self.external_data,
            "bytes": self.bytes,
            **self.details,
        }
        if self.fp32_equivalent:
            out["fp32_equivalent"] = True
        if self.fidelity is not None:
            out["fidelity"] = self.fidelity
        if self.mixed_precision is not None:
            out["mixed_precision"] = self.mixed_precision
        if self.fingerprint is not None:
            out["fingerprint"] = self.fingerprint
        return out


@dataclass(frozen=True)
class QueryConvention:
    """How queries are framed: ``<s> marker text </s>``, truncated to and padded with `pad_token` to `max_length`."""

    max_length: int
    marker: str
    marker_id: int
    pad_token: str
    pad_id: int
    attend_to_mask_tokens: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_reader(cls, r: _Reader) -> QueryConvention:
        return cls(
            max_length=_at_least(r, "max_length", MIN_FRAMED_LENGTH), marker=r.get("marker", str),
            marker_id=_at_least(r, "marker_id", 0), pad_token=r.get("pad_token", str), pad_id=_at_least(r, "pad_id", 0),
            attend_to_mask_tokens=r.get("attend_to_mask_tokens", bool, True),
            extra=r.rest(("max_length", "marker", "marker_id", "pad_token", "pad_id", "attend_to_mask_tokens")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "marker": self.marker, "marker_id": self.marker_id,
                "pad_token": self.pad_token, "pad_id": self.pad_id,
                "attend_to_mask_tokens": self.attend_to_mask_tokens, **self.extra}


@dataclass(frozen=True)
class DocumentConvention:
    """How documents are framed (``<s> marker text </s>``, truncated to `max_length`) and which ids are dropped."""

    max_length: int
    marker: str
    marker_id: int
    skiplist_ids: tuple[int, ...]
    training_max_length: int | None = None
    mask_punctuation: bool = True
    skiplist_rule: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_reader(cls, r: _Reader) -> DocumentConvention:
        return cls(
            max_length=_at_least(r, "max_length", MIN_FRAMED_LENGTH), marker=r.get("marker", str),
            marker_id=_at_least(r, "marker_id", 0),
            skiplist_ids=_ints(r.get("skiplist_ids", list), r, "skiplist_ids"),
            training_max_length=r.get("training_max_length", int, None, optional=True),
            mask_punctuation=r.get("mask_punctuation", bool, True),
            skiplist_rule=r.get("skiplist_rule", str, None, optional=True),
            extra=r.rest(("max_length", "marker", "marker_id", "skiplist_ids", "training_max_length",
                          "mask_punctuation", "skiplist_rule")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "training_max_length": self.training_max_length,
                "marker": self.marker, "marker_id": self.marker_id, "mask_punctuation": self.mask_punctuation,
                "skiplist_rule": self.skiplist_rule, "skiplist_ids": list(self.skiplist_ids), **self.extra}


@dataclass(frozen=True)
class Architecture:
    """The backbone's sizes, as the exporter read them from config.json."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    rotary_emb_base: float = 10000.0
    layer_norm_eps: float = 1e-5
    max_position_embeddings: int | None = None  # the positions the model was trained on

    @classmethod
    def from_reader(cls, r: _Reader) -> Architecture:
        return cls(
            hidden_size=r.get("hidden_size", int), num_hidden_layers=r.get("num_hidden_layers", int),
            num_attention_heads=r.get("num_attention_heads", int), intermediate_size=r.get("intermediate_size", int),
            rotary_emb_base=r.get("rotary_emb_base", (int, float), 10000.0),
            layer_norm_eps=r.get("layer_norm_eps", (int, float), 1e-5),
            max_position_embeddings=r.get("max_position_embeddings", int, None, optional=True),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Source:
    """One exported checkpoint: where it came from, its head, and the hashes that identify it."""

    id: str
    dim: int
    files_sha256: dict[str, str] = field(default_factory=dict)
    backbone_sha256: str | None = None

    @classmethod
    def from_reader(cls, r: _Reader) -> Source:
        return cls(id=r.get("id", str), dim=r.get("dim", int), files_sha256=r.get("files_sha256", dict, {}),
                   backbone_sha256=r.get("backbone_sha256", str, None, optional=True))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_SPECIAL_ID_FIELDS = ("bos", "eos", "pad", "mask", "query_marker", "document_marker")
_TOP_KEYS = ("format", "format_version", "model", "created", "created_with", "sources", "shared_backbone",
             "architecture", "vocab_size", "heads", "precisions", "opset", "inputs", "graphs", "tokenizer",
             "special_ids", "query", "document", "similarity", "parity", "fidelity", "engine_graphs",
             "reference")


@dataclass(frozen=True)
class Manifest:
    """Everything manifest.json says about a model folder (format version 1)."""

    model: str
    vocab_size: int
    graphs: tuple[GraphEntry, ...]
    special_ids: SpecialIds
    query: QueryConvention
    document: DocumentConvention
    architecture: Architecture | None = None
    heads: tuple[int, ...] = ()
    precisions: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()
    shared_backbone: bool = False
    opset: int | None = None
    inputs: tuple[str, ...] = ("input_ids", "attention_mask")
    tokenizer_file: str = "tokenizer.json"
    tokenizer_sha256: str | None = None
    similarity: str = "cosine"
    created: str | None = None
    created_with: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    fidelity: dict[str, Any] | None = None
    # Graphs of engines other than onnxruntime (OpenVINO), each with its fidelity measured on that engine;
    # kept apart from `graphs` so that every rule about precisions stays the onnxruntime one (docs/engines.md).
    engine_graphs: tuple[GraphEntry, ...] = ()
    # The reference vectors a folder carries for `colbert-onnx verify`: file, texts, heads (verify.py).
    reference: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST_NAME) -> Manifest:
        """The typed manifest of parsed JSON; ModelFolderError naming the file and key for anything off."""
        r = _Reader(data, "", source)
        if r.get("format", str, None) != FORMAT_NAME:
            raise ModelFolderError(f"{source} is not a {FORMAT_NAME} manifest")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelFolderError(
                f"{source} has format_version {version!r}; this colbert-onnx reads format_version {FORMAT_VERSION} "
                "(a newer exporter wrote it: upgrade colbert-onnx, or re-export the folder with this version)"
            )
        raw_graphs = r.get("graphs", list)
        special = r.child("special_ids")
        tokenizer = r.child("tokenizer") if r.has("tokenizer") else _Reader({}, "tokenizer", source)
        manifest = cls(
            model=r.get("model", str),
            vocab_size=r.get("vocab_size", int),
            graphs=tuple(GraphEntry.from_dict(g, f"graphs[{i}]", source) for i, g in enumerate(raw_graphs)),
            special_ids=SpecialIds(**{name: _at_least(special, name, 0) for name in _SPECIAL_ID_FIELDS}),
            query=QueryConvention.from_reader(r.child("query")),
            document=DocumentConvention.from_reader(r.child("document")),
            architecture=Architecture.from_reader(r.child("architecture")) if r.has("architecture") else None,
            heads=_ints(r.get("heads", list, []), r, "heads"),
            precisions=tuple(r.get("precisions", list, [])),
            sources=tuple(Source.from_reader(_Reader(s, f"sources[{i}]", source))
                          for i, s in enumerate(r.get("sources", list, []))),
            shared_backbone=r.get("shared_backbone", bool, False),
            opset=r.get("opset", int, None, optional=True),
            inputs=tuple(r.get("inputs", list, ["input_ids", "attention_mask"])),
            tokenizer_file=tokenizer.get("file", str, "tokenizer.json"),
            tokenizer_sha256=tokenizer.get("sha256", str, None, optional=True),
            similarity=r.get("similarity", str, "cosine"),
            created=r.get("created", str, None, optional=True),
            created_with=r.get("created_with", dict, {}),
            parity=r.get("parity", dict, {}),
            fidelity=r.get("fidelity", dict, None),
            engine_graphs=tuple(GraphEntry.from_dict(g, f"engine_graphs[{i}]", source)
                                for i, g in enumerate(r.get("engine_graphs", list, []))),
            reference=r.get("reference", dict, None),
            extra=r.rest(_TOP_KEYS),
        )
        trained = manifest.architecture.max_position_embeddings if manifest.architecture else None
        for kind, convention in (("query", manifest.query), ("document", manifest.document)):
            if trained is not None and convention.max_length > trained:
                raise ModelFolderError(f"{source}: {kind}.max_length is {convention.max_length}, more than the "
                                       f"{trained} positions of architecture.max_position_embeddings")
        return manifest

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of manifest.json (format version 1), keys in the exporter's order."""
        out: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "created": self.created,
            "created_with": self.created_with,
            "sources": [s.to_dict() for s in self.sources],
            "shared_backbone": self.shared_backbone,
        }
        if self.architecture is not None:
            out["architecture"] = self.architecture.to_dict()
        out.update({
            "vocab_size": self.vocab_size,
            "heads": list(self.heads),
            "precisions": list(self.precisions),
            "opset": self.opset,
            "inputs": list(self.inputs),
            "graphs": [g.to_dict() for g in self.graphs],
            "tokenizer": {"file": self.tokenizer_file, "sha256": self.tokenizer_sha256},
            "special_ids": {name: getattr(self.special_ids, name) for name in _SPECIAL_ID_FIELDS},
            "query": self.query.to_dict(),
            "document": self.document.to_dict(),
            "similarity": self.similarity,
            "parity": self.parity,
        })
        if self.fidelity is not None:
            out["fidelity"] = self.fidelity
        if self.engine_graphs:
            out["engine_graphs"] = [g.to_dict() for g in self.engine_graphs]
        if self.reference is not None:
            out["reference"] = self.reference
        out.update(self.extra)
        return out

    @property
    def dims(self) -> list[int]:
        """Every head some graph of the folder serves, ascending."""
        return sorted({d for g in self.graphs for d in g.outputs})

    def parity_figures(self) -> dict[str, dict]:
        """head -> export-time parity figures of the fp32 graphs (empty when parity was not measured)."""
        fp32 = (self.parity or {}).get("fp32") or {}
        return {d: p for d, p in fp32.items() if d != "reference" and isinstance(p, dict)}

    def special_ids_in(self, tokenizer: Tokenizer, where: str = "the tokenizer") -> SpecialIds:
        """The framing ids for `tokenizer`: markers and query pad token looked up by the strings the manifest
        names, each checked against the id recorded at export; `<s>`, `</s>` and `<pad>` as recorded.

        TokenizerMismatchError naming the token when the tokenizer lacks it or gives it another id.
        """
        found = {}
        for name, token, recorded in (("query_marker", self.query.marker, self.query.marker_id),
                                      ("mask", self.query.pad_token, self.query.pad_id),
                                      ("document_marker", self.document.marker, self.document.marker_id)):
            token_id = tokenizer.token_to_id(token)
            if token_id is None:
                raise TokenizerMismatchError(f"{where} has no {token!r} token, which the manifest names as the "
                                             f"{name.replace('_', ' ')} ({MANIFEST_NAME})")
            if token_id != recorded:
                raise TokenizerMismatchError(f"{where} gives {token!r} id {token_id}, but the graph was exported "
                                             f"with id {recorded} ({MANIFEST_NAME}): not the exported tokenizer")
            found[name] = token_id
        ids = self.special_ids
        for name in ("bos", "eos", "pad"):
            if tokenizer.id_to_token(getattr(ids, name)) is None:
                raise TokenizerMismatchError(f"{where} has no id {getattr(ids, name)}, the {name} id of the manifest")
        return SpecialIds(bos=ids.bos, eos=ids.eos, pad=ids.pad, **found)


def read_manifest(folder: str | Path) -> Manifest:
    """The typed manifest.json of a model folder; ModelFolderError when missing, not JSON or not format 1."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ModelFolderError(f"{Path(folder)} has no {MANIFEST_NAME}: it is not a colbert-onnx model folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{path} is not valid JSON: {exc}") from exc
    return Manifest.from_dict(data, source=str(path))


def write_manifest(folder: str | Path, manifest: Manifest) -> None:
    """Write manifest.json atomically (a temporary file renamed over it)."""
    path = Path(folder) / MANIFEST_NAME
    tmp = path.with_name(MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
