"""Reads and checks an exported model folder: its typed manifest (manifest.py), graph files and tokenizer."""

from __future__ import annotations

import hashlib
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from .conventions import SpecialIds
from .errors import ModelFolderError, PrecisionNotAvailableError, TokenizerMismatchError, UnsupportedDimError
from .manifest import KNOWN_PRECISIONS, GraphEntry, Manifest, read_manifest


def mixed_precision_summary(manifest: Manifest) -> list[str]:
    """One line per int8 graph on what the exporter's accuracy-aware search did (export/mixed_precision.py)."""
    lines = []
    for graph in manifest.graphs:
        record = graph.mixed_precision
        if graph.precision != "int8" or not record:
            continue
        before = min(m["min_token_cosine"] for m in record["pure_int8_fidelity"].values())
        after = min(m["min_token_cosine"] for m in (graph.fidelity or {}).values())
        speed = record.get("speed_vs_pure_int8")
        cost = f", {speed:.2f}x the pure int8 speed" if speed else ""
        if record["outcome"] == "fp32-equivalent":
            lines.append(f"int8 ({graph.file}): no graph with int8 GEMMs passed the gates ({record.get('reason')}); "
                         f"the fp32 graph serves int8 (min token cosine of pure int8 {before:.4f}; search "
                         f"{record['search_seconds']:.0f} s)")
        elif record["outcome"] == "mixed":
            lines.append(f"int8 ({graph.file}): {len(record['float_nodes'])} of {record['candidates']} nodes kept "
                         f"fp32 by the accuracy-aware search ({record['ranking']} ranking); min token cosine "
                         f"{before:.4f} -> {after:.4f}{cost}; search {record['search_seconds']:.0f} s")
    return lines


def gate_verdicts(manifest: Manifest) -> dict[str, dict[str, bool]]:
    """precision -> head -> whether its export-time fidelity passed the gates (graphs measured only)."""
    verdicts: dict[str, dict[str, bool]] = {}
    for graph in manifest.graphs:
        for dim, metrics in (graph.fidelity or {}).items():
            verdicts.setdefault(graph.precision, {})[dim] = bool(metrics.get("passed", True))
    return verdicts


def engine_graph_label(graph: GraphEntry) -> str:
    """The precision an engine graph serves, with how its float parts run where one precision has two entries
    (OpenVINO int8: float parts at f32, or at bf16 as 'int8, bf16 float parts')."""
    inference = graph.details.get("inference_precision")
    if graph.precision == "int8" and inference == "bf16":
        return "int8, bf16 float parts"
    return graph.precision


def engine_gate_verdicts(manifest: Manifest) -> dict[str, dict[str, dict[str, bool | None]]]:
    """engine -> precision -> head -> whether that engine's own graph passed its gates at export (None: not
    measured, with the reason beside the heads); the OpenVINO int8 search's record where it wrote none (manifest
    `openvino_int8`), and why an engine got no graph at all (manifest `engine_graphs_not_written`)."""
    verdicts: dict = {}
    for graph in manifest.engine_graphs:
        key = engine_graph_label(graph)
        for dim in sorted(graph.outputs, reverse=True):
            verdicts.setdefault(graph.engine, {}).setdefault(key, {})[str(dim)] = graph.passed_gates(dim)
        if graph.details.get("fidelity_not_measured"):
            verdicts[graph.engine][key]["reason"] = graph.details["fidelity_not_measured"]
    for record in manifest.extra.get("openvino_int8") or []:
        if isinstance(record, dict) and not record.get("written"):
            verdicts.setdefault("openvino", {})["int8"] = {"written": None, "reason": record.get("reason")}
    for engine, reason in (manifest.extra.get("engine_graphs_not_written") or {}).items():
        verdicts.setdefault(engine, {"written": None, "reason": reason})
    return verdicts


@dataclass(frozen=True)
class ModelFolder:
    """A validated model folder: what the runtime needs to build sessions and preprocess text."""

    path: Path
    manifest: Manifest

    @property
    def graphs(self) -> tuple[GraphEntry, ...]:
        return self.manifest.graphs

    @property
    def dims(self) -> list[int]:
        return self.manifest.dims

    @property
    def precisions(self) -> list[str]:
        return sorted({g.precision for g in self.graphs}, key=KNOWN_PRECISIONS.index)

    @property
    def vocab_size(self) -> int:
        return self.manifest.vocab_size

    def graph_for(self, dim: int, precision: str) -> GraphEntry:
        """The graph serving head `dim` at `precision`, or a typed error listing what exists."""
        if precision not in KNOWN_PRECISIONS:
            raise PrecisionNotAvailableError(
                f"unknown precision {precision!r}; known: {', '.join(KNOWN_PRECISIONS)}; "
                f"in this folder: {', '.join(self.precisions)}"
            )
        if isinstance(dim, numbers.Integral) and not isinstance(dim, bool):
            dim = int(dim)  # numpy's ints too, named as plain ints
        if isinstance(dim, bool) or not isinstance(dim, int) or dim not in self.dims:
            raise UnsupportedDimError(
                f"dim {dim!r} is not in {self.path} (available dims: {', '.join(map(str, self.dims))})"
            )
        for g in self.graphs:
            if g.precision == precision and dim in g.outputs:
                return g
        have = sorted({g.precision for g in self.graphs if dim in g.outputs})
        raise PrecisionNotAvailableError(
            f"precision {precision!r} was not exported for dim {dim} in {self.path} "
            f"(available: {', '.join(have)}); export it with `colbert-onnx export ... --precision {precision}`"
        )

    def engine_graphs_for(self, engine: str, dim: int, precision: str) -> list[GraphEntry]:
        """The graphs the exporter wrote for `engine` (not onnxruntime) serving head `dim` at `precision`, in manifest
        order (OpenVINO int8: its float parts at f32, then at bf16); which one runs is the engine selection's call."""
        return [g for g in self.manifest.engine_graphs
                if g.engine == engine and g.precision == precision and dim in g.outputs]

    @staticmethod
    def missed_gates(graph: GraphEntry, dim: int) -> dict | None:
        """The export-time fidelity figures of `graph`'s head `dim` when they missed a gate, else None."""
        metrics = (graph.fidelity or {}).get(str(dim))
        return metrics if isinstance(metrics, dict) and metrics.get("passed") is False else None

    def missed_parity(self, dim: int) -> dict | None:
        """The export-time parity figures of head `dim`'s fp32 graph when it missed the gate (and the user
        accepted the miss), else None."""
        figures = self.manifest.parity_figures().get(str(dim))
        return figures if figures is not None and figures.get("passed") is False else None

    def load_tokenizer(self) -> tuple[Tokenizer, SpecialIds]:
        """The folder's tokenizer, checked against the graph vocabulary and the manifest's framing tokens."""
        tok_path = self.path / self.manifest.tokenizer_file
        if not tok_path.is_file():
            raise ModelFolderError(f"tokenizer file missing: {tok_path}")
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise ModelFolderError(f"cannot read tokenizer {tok_path}: {exc}") from exc
        special = self.manifest.special_ids_in(tokenizer, where=f"tokenizer {tok_path}")
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        if size > self.vocab_size:
            raise TokenizerMismatchError(
                f"tokenizer {tok_path} has {size} tokens but the graph's embedding table has "
                f"{self.vocab_size} rows: ids >= {self.vocab_size} would index past it"
            )
        return tokenizer, special


FINGERPRINT_BLOCKS, FINGERPRINT_BLOCK_BYTES = 32, 4096


def graph_fingerprint(files: Sequence[Path]) -> str:
    """sha256 of each file's size and of 32 blocks of 4 KiB spread evenly over it. Reads at most 128 KiB a file,
    so every open checks it: a graph of another checkpoint of the same architecture (same size, other weights)
    never matches, where the size alone did. Not a full hash: corruption inside one block's gap is verify's to find."""
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{size};".encode())
        span = max(size - FINGERPRINT_BLOCK_BYTES, 0)
        with open(path, "rb") as handle:
            for i in range(FINGERPRINT_BLOCKS):
                handle.seek(span * i // (FINGERPRINT_BLOCKS - 1))
                digest.update(handle.read(FINGERPRINT_BLOCK_BYTES))
    return f"sampled-sha256:{digest.hexdigest()}"


def graph_files(folder: Path, entry: GraphEntry) -> list[Path]:
    """The files of a graph: the graph itself, then its external data where it has some."""
    return [folder / name for name in (entry.file, entry.external_data) if name]


def open_model_folder(model_dir: str | Path) -> ModelFolder:
    """Load manifest.json (typed, version-checked) and check the presence and size of every graph file it names."""
    if model_dir is None:
        raise ModelFolderError("model_dir is None; pass the folder written by `colbert-onnx export`")
    if not isinstance(model_dir, (str, os.PathLike)) or isinstance(os.fspath(model_dir), bytes):
        raise ModelFolderError(f"model_dir must be a str or pathlib.Path, got {type(model_dir).__name__}")
    path = Path(model_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ModelFolderError(f"{path} is a file, not a model folder: pass the folder `colbert-onnx export` "
                               "wrote (it holds manifest.json and the graphs)")
    if not path.is_dir():
        raise ModelFolderError(
            f"model folder {path} does not exist; create one with `colbert-onnx export SOURCE --out {path}`"
        )
    manifest = read_manifest(path)
    for entry in (*manifest.graphs, *manifest.engine_graphs):
        for name in filter(None, (entry.file, entry.external_data)):
            if not (path / name).is_file():
                raise ModelFolderError(f"graph file missing: {path / name} (listed in {path / 'manifest.json'})")
        actual = (path / entry.file).stat().st_size + (
            (path / entry.external_data).stat().st_size if entry.external_data else 0
        )
        if actual != entry.bytes:
            raise ModelFolderError(
                f"graph {path / entry.file} is {actual} bytes but the manifest records {entry.bytes}: "
                "the file is truncated or was replaced; re-export the folder"
            )
        if entry.fingerprint is not None and graph_fingerprint(graph_files(path, entry)) != entry.fingerprint:
            raise ModelFolderError(
                f"graph {path / entry.file} is not the graph this folder's export wrote (its content differs from the "
                "fingerprint the manifest records): a file of another export or checkpoint was copied in, or it "
                "changed since; re-export the folder or restore the file"
            )
    if not manifest.graphs:
        raise ModelFolderError(f"{path / 'manifest.json'} lists no graphs")
    return ModelFolder(path=path, manifest=manifest)
