"""What the first-contact jobs compare: runtime calls on a toy model folder, each giving named arrays.

Every case runs twice: in the full development environment, where build_references.py saves its
outputs, and in a venv holding only `pip install .` (or `.[server]`), where the tests recompute it
and compare. Only numpy and colbert_onnx are imported here, so this module runs in both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from colbert_onnx import ColbertEncoder, maxsim
from colbert_onnx.compact import QuantizedVectors
from colbert_onnx.examples import BERLIN_DOCUMENTS, BERLIN_QUERY
from colbert_onnx.packed import PackedDocuments

HEADS = (128, 96, 64)
PRECISIONS = ("fp32", "int8", "fp16")
OUTPUT_KINDS = ("float16", "int8", "binary", "ubinary")

MODEL_FOLDER = "toy-onnx"  # inside the prebuilt folder
REFERENCES = "references.npz"  # every case's arrays, keyed "<case>/<name>"
TORCH_REFERENCES = "torch-references.npz"  # PyTorch fp32 vectors per head, from the checkpoints
CLI_REFERENCES = "cli.json"  # the full environment's `colbert-onnx` stdout per CLI case

QUERIES = [BERLIN_QUERY, "Wie viele Menschen leben in Berlin?", ""]
LONG_DOCUMENT = " ".join(["Berlin ist die Hauptstadt Deutschlands und hat viele Museen."] * 30)
DOCUMENTS = [*BERLIN_DOCUMENTS, "", "?!", LONG_DOCUMENT]  # empty and punctuation-only ones included

# Float noise allowed between two installs of the same onnxruntime on the same CPU (one thread each).
FLOAT_ATOL = 1e-5


@dataclass(frozen=True)
class Case:
    """One runtime behaviour: `compute(model_dir)` gives named arrays compared within `atol` (exact if 0)."""

    name: str
    compute: Callable[[Path], dict[str, np.ndarray]]
    atol: float = FLOAT_ATOL


@lru_cache(maxsize=4)
def _encoder_of_precision(model_dir: Path, precision: str, options: tuple) -> ColbertEncoder:
    # engine pinned: auto may pick OpenVINO (bf16) for fp16 where it is installed, as in the development venv and
    # not in the clean one (docs/engines.md); these cases compare the same onnxruntime graphs on both sides
    return ColbertEncoder(model_dir, precision=precision, threads=1, engine="onnxruntime", **dict(options))


def encoder(model_dir: Path, dim: int = 128, precision: str = "fp32", **options) -> ColbertEncoder:
    """A single-threaded encoder (threads=1: the same kernels in every run); the heads of one precision
    share a cached session (for_dim), so the cases hold a few sessions, not one per head."""
    return _encoder_of_precision(model_dir, precision, tuple(sorted(options.items()))).for_dim(dim)


def ragged(name: str, documents: list) -> dict[str, np.ndarray]:
    """Ragged per-document outputs as flat arrays: `<name>` (concatenated) and `<name>.lengths`."""
    if isinstance(documents[0], QuantizedVectors):
        return {
            f"{name}.codes": np.concatenate([d.codes for d in documents]),
            f"{name}.scales": np.concatenate([d.scales for d in documents]),
            f"{name}.lengths": np.array([d.codes.shape[0] for d in documents]),
        }
    return {name: np.concatenate(documents), f"{name}.lengths": np.array([d.shape[0] for d in documents])}


def encode_case(dim: int, precision: str) -> Callable[[Path], dict[str, np.ndarray]]:
    """Queries and documents of one head and precision."""
    def compute(model_dir: Path) -> dict[str, np.ndarray]:
        enc = encoder(model_dir, dim, precision)
        queries = np.stack(enc.encode_queries(QUERIES))
        return {"queries": queries, **ragged("documents", enc.encode_documents(DOCUMENTS))}

    return compute


def _output_kind(kind: str) -> Callable[[Path], dict[str, np.ndarray]]:
    def compute(model_dir: Path) -> dict[str, np.ndarray]:
        return ragged("documents", encoder(model_dir, 128).encode_documents(DOCUMENTS, output=kind))

    return compute


def _windows(model_dir: Path) -> dict[str, np.ndarray]:
    enc = encoder(model_dir, 128, long_documents="windows", document_max_length=64, window_stride=20)
    return ragged("documents", enc.encode_documents([LONG_DOCUMENT, BERLIN_DOCUMENTS[0]]))


def _pooling(factor: int) -> Callable[[Path], dict[str, np.ndarray]]:
    def compute(model_dir: Path) -> dict[str, np.ndarray]:
        return ragged("documents", encoder(model_dir, 96).encode_documents(DOCUMENTS, pool_factor=factor))

    return compute


def _packed(dtype: type) -> Callable[[Path], dict[str, np.ndarray]]:
    def compute(model_dir: Path) -> dict[str, np.ndarray]:
        enc = encoder(model_dir, 64)
        packed = PackedDocuments.from_list(enc.encode_documents(DOCUMENTS), dtype=dtype)
        queries = np.stack(enc.encode_queries(QUERIES))
        top, top_scores = packed.top_k(queries[0], 3)
        return {"scores": packed.scores(queries), "top_k": top, "top_k.scores": top_scores}

    return compute


def _maxsim_compact(kind: str) -> Callable[[Path], dict[str, np.ndarray]]:
    def compute(model_dir: Path) -> dict[str, np.ndarray]:
        enc = encoder(model_dir, 128)
        return {"scores": maxsim(np.stack(enc.encode_queries(QUERIES)), enc.encode_documents(DOCUMENTS, output=kind))}

    return compute


def _rerank(precision: str) -> Callable[[Path], dict[str, np.ndarray]]:
    def compute(model_dir: Path) -> dict[str, np.ndarray]:
        results = encoder(model_dir, 128, precision).rerank(BERLIN_QUERY, BERLIN_DOCUMENTS)
        return {"index": np.array([r["index"] for r in results]),
                "relevance_score": np.array([r["relevance_score"] for r in results])}

    return compute


def cases() -> list[Case]:
    """Every compared behaviour: each head and precision, output kinds, windows, pooling, packed, rerank."""
    found = [Case(f"encode-{p}-{d}", encode_case(d, p)) for p in PRECISIONS for d in HEADS]
    found += [Case(f"output-{kind}", _output_kind(kind)) for kind in OUTPUT_KINDS]
    found += [Case("windows", _windows)]
    found += [Case(f"pooling-{f}", _pooling(f)) for f in (2, 3)]
    found += [Case(f"packed-{np.dtype(t).name}", _packed(t)) for t in (np.float32, np.float16, np.int8)]
    found += [Case(f"maxsim-{kind}", _maxsim_compact(kind)) for kind in ("int8", "binary", "ubinary")]
    found += [Case(f"rerank-{p}", _rerank(p)) for p in PRECISIONS]
    return found


def compare(got: dict[str, np.ndarray], want: dict[str, np.ndarray], atol: float) -> None:
    """Same keys, shapes and dtypes; floats within `atol`; integers exact (int8 codes within 1: rounding)."""
    assert sorted(got) == sorted(want), f"keys differ: {sorted(got)} vs {sorted(want)}"
    for key in want:
        g, w = np.asarray(got[key]), np.asarray(want[key])
        assert g.shape == w.shape and g.dtype == w.dtype, f"{key}: {g.dtype}{g.shape} vs {w.dtype}{w.shape}"
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), atol=atol, rtol=0, err_msg=key)
        elif key.endswith(".codes"):  # int8 codes of float vectors within atol: a rounding may flip by one
            assert np.abs(g.astype(np.int64) - w).max() <= 1, key
        else:
            np.testing.assert_array_equal(g, w, err_msg=key)


# `colbert-onnx` command lines run by the installed script; "{model}" is the model folder.
CLI_CASES: dict[str, dict] = {
    "encode-documents-96": {"args": ["encode", "{model}", "--dim", "96"], "stdin": "\n".join(DOCUMENTS[:4])},
    "encode-queries-128": {"args": ["encode", "{model}", "--input-type", "query"], "stdin": "\n".join(QUERIES[:2])},
    "encode-int8-output-64": {
        # engine pinned, as the API cases: auto runs OpenVINO's int8 on VNNI/AMX CPUs where it is installed
        "args": ["encode", "{model}", "--dim", "64", "--precision", "int8", "--engine", "onnxruntime", "--output",
                 "int8"],
        "stdin": "\n".join(DOCUMENTS[:3]),
    },
    "rerank-fp32-top3": {
        "args": ["rerank", "{model}", "--query", BERLIN_QUERY, *[x for d in BERLIN_DOCUMENTS for x in ("-d", d)],
                 "--top-n", "3"],
        "stdin": "",
    },
}


def cli_args(case: str, model_dir: Path) -> list[str]:
    """The argument list of one CLI case for `model_dir`."""
    return [str(model_dir) if a == "{model}" else a for a in CLI_CASES[case]["args"]]
