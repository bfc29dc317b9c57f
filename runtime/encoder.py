"""ColbertEncoder: text -> tokens -> ids -> ONNX -> normalized vectors -> MaxSim scores, in one place."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .compact import finish_documents
from .errors import FidelityWarning, InvalidInputError
from .model_folder import open_model_folder
from .progress import progress_bar
from .scoring import maxsim
from .session import SessionConfig, binding_device, create_session, run_with_binding
from .tokenization import Preprocessor, as_text_list, pad_batch
from .windows import UNTRUNCATED, split_windows

LONG_DOCUMENT_MODES = ("truncate", "windows")


def _positive_int(name: str, value: int | None, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive int, got {value!r}")
    return value


def _warn_if_gates_missed(folder, graph, dim: int, precision: str) -> None:
    if graph.fp32_equivalent and precision != "fp32":
        warnings.warn(
            f"{precision} of {folder.path} is the fp32 graph: at export no {precision} graph passed the fidelity "
            "gates on this checkpoint (manifest.json, graphs[].mixed_precision); vectors are fp32's, and so is "
            "the speed",
            FidelityWarning,
            stacklevel=3,
        )
    metrics = folder.missed_gates(graph, dim)
    if metrics:
        figures = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("mean_token_cosine", "min_token_cosine",
                                                              "top10_overlap", "spearman") if k in metrics)
        warnings.warn(
            f"{precision} head {dim} of {folder.path} missed its fidelity gates at export ({figures}); its "
            "vectors and rankings differ from the PyTorch model more than the gates allow "
            "(docs/quantization.md); fp32 or fp16 are faithful",
            FidelityWarning,
            stacklevel=3,
        )


def plan_batches(lengths: np.ndarray, batch_size: int, max_batch_tokens: int | None) -> list[np.ndarray]:
    """Group sequence indices, sorted longest first, into batches of at most `batch_size`
    sequences and at most `max_batch_tokens` padded tokens (rows x longest row)."""
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    current: list[int] = []
    for idx in order:
        longest = int(lengths[current[0]]) if current else int(lengths[idx])
        if max_batch_tokens is not None and longest > max_batch_tokens:
            raise InvalidInputError(
                f"max_batch_tokens={max_batch_tokens} is smaller than one sequence of {longest} tokens"
            )
        fits_tokens = max_batch_tokens is None or longest * (len(current) + 1) <= max_batch_tokens
        if current and (len(current) >= batch_size or not fits_tokens):
            batches.append(np.array(current))
            current = []
        current.append(int(idx))
    if current:
        batches.append(np.array(current))
    return batches


class ColbertEncoder:
    """Encodes queries and documents with an exported jina-colbert-v2 folder, without PyTorch.

    Args:
        model_dir: folder written by ``colbert-onnx export``.
        dim: Matryoshka head (128, 96 or 64; whatever the folder holds).
        precision: ``fp32`` (or ``int8``/``fp16`` when exported).
        device: ``cpu`` or ``cuda``.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
        document_max_length: tokens per document in all, specials included (default: manifest, 8192).
        batch_size: sequences per ONNX run; max_batch_tokens: padded tokens per ONNX run.
        long_documents: ``truncate`` (default, as Jina's API) or ``windows``: documents longer than
            document_max_length are encoded in overlapping windows, one vector per original token,
            each token taken from the window where it is most central.
        window_stride: tokens between window starts (default: half a window).
        session_options: onnxruntime knobs (arena, graph optimization level); see session.py.
        io_binding: run through onnxruntime IOBinding on the session's device (inputs copied there
            once per batch, only the requested head's output copied back); None (default): on for
            cuda, off for cpu.
    """

    def __init__(
        self,
        model_dir: str | Path,
        dim: int = 128,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        document_max_length: int | None = None,
        batch_size: int = 32,
        max_batch_tokens: int | None = 16384,
        long_documents: str = "truncate",
        window_stride: int | None = None,
        session_options: SessionConfig | None = None,
        io_binding: bool | None = None,
    ) -> None:
        if io_binding is not None and not isinstance(io_binding, bool):
            raise InvalidInputError(f"io_binding must be True, False or None, got {io_binding!r}")
        self.folder = open_model_folder(model_dir)
        self.graph = self.folder.graph_for(dim, precision)
        _warn_if_gates_missed(self.folder, self.graph, dim, precision)
        self.dim = dim
        self.precision = precision
        self.device = device
        self.batch_size = _positive_int("batch_size", batch_size, allow_none=False)
        self.max_batch_tokens = _positive_int("max_batch_tokens", max_batch_tokens)
        manifest = self.folder.manifest
        tokenizer, special = self.folder.load_tokenizer()
        doc_max = manifest.document.max_length if document_max_length is None else document_max_length
        _positive_int("document_max_length", doc_max, allow_none=False)
        trained = manifest.architecture.max_position_embeddings if manifest.architecture else None
        if trained is not None and doc_max > trained:
            raise InvalidInputError(
                f"document_max_length={doc_max} exceeds the {trained} positions the model was trained on; "
                "use long_documents='windows' to cover longer documents"
            )
        self.preprocessor = Preprocessor(
            tokenizer,
            special,
            query_max_length=manifest.query.max_length,
            document_max_length=int(doc_max),
        )
        if long_documents not in LONG_DOCUMENT_MODES:
            raise InvalidInputError(
                f"long_documents must be one of {', '.join(LONG_DOCUMENT_MODES)}, got {long_documents!r}"
            )
        self.long_documents = long_documents
        body = self.preprocessor.document_max_length - 3
        self.window_stride = _positive_int("window_stride", window_stride) or max(1, body // 2)
        if self.window_stride > body:
            raise InvalidInputError(f"window_stride={self.window_stride} exceeds the window body of {body} tokens")
        self._skiplist = np.array(manifest.document.skiplist_ids, dtype=np.int64)
        self._output_name = self.graph.outputs[dim]
        self._threads, self._session_config = threads, session_options
        self.session = create_session(
            str(self.folder.path / self.graph.file), device=device, threads=threads, config=session_options
        )
        self.io_binding = device == "cuda" if io_binding is None else io_binding
        self._binding_device = binding_device(self.session) if self.io_binding else None

    def for_dim(self, dim: int) -> ColbertEncoder:
        """An encoder for another head that shares this one's tokenizer and, when the same graph
        holds both heads (the shared-backbone export), its onnxruntime session: no second copy of
        the weights in memory."""
        graph = self.folder.graph_for(dim, self.precision)
        _warn_if_gates_missed(self.folder, graph, dim, self.precision)
        other = copy.copy(self)
        other.graph, other.dim, other._output_name = graph, dim, graph.outputs[dim]
        if graph.file != self.graph.file:
            other.session = create_session(str(self.folder.path / graph.file), device=self.device,
                                           threads=self._threads, config=self._session_config)
            other._binding_device = binding_device(other.session) if other.io_binding else None
        return other

    @property
    def query_max_length(self) -> int:
        return self.preprocessor.query_max_length

    @property
    def document_max_length(self) -> int:
        return self.preprocessor.document_max_length

    def _run(self, ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """One ONNX run: (batch, seq) ids and mask -> (batch, seq, dim) L2-normalized float32.

        With io_binding (default on CUDA), the two int64 inputs are copied to the session's device
        once and only the requested head's output is copied back (session.run_with_binding).
        """
        inputs = {"input_ids": ids, "attention_mask": attention_mask}
        if self._binding_device is not None:
            out = run_with_binding(self.session, self._output_name, inputs, self._binding_device)
        else:
            (out,) = self.session.run([self._output_name], inputs)
        return np.asarray(out, dtype=np.float32)

    def _encode_sequences(self, seqs: list[np.ndarray], progress: bool = False) -> list[np.ndarray]:
        """Every token's vector for each framed id sequence, batched by length under the token budget."""
        lengths = np.fromiter((len(x) for x in seqs), dtype=np.int64, count=len(seqs))
        results: list[np.ndarray | None] = [None] * len(seqs)
        batches = plan_batches(lengths, self.batch_size, self.max_batch_tokens)
        with progress_bar(progress, total=int(lengths.sum()), unit="tok", desc="encoding") as bar:
            for indices in batches:
                ids, mask = pad_batch([seqs[i] for i in indices], self.preprocessor.special.pad)
                vectors = self._run(ids, mask)
                for row, i in enumerate(indices):
                    results[i] = vectors[row, : lengths[i]]
                bar.update(int(lengths[indices].sum()))
        return results  # type: ignore[return-value]

    def encode_queries(self, texts: str | Sequence[str], progress: bool = False) -> list[np.ndarray]:
        """One (query_max_length, dim) float32 array per query; `<mask>` padding vectors included."""
        items = as_text_list(texts, "queries")
        if not items:
            return []
        ids = self.preprocessor.queries(items)
        mask = np.ones_like(ids)
        out: list[np.ndarray] = []
        with progress_bar(progress, total=len(items), unit="query", desc="encoding queries") as bar:
            for start in range(0, len(items), self.batch_size):
                vectors = self._run(ids[start : start + self.batch_size], mask[start : start + self.batch_size])
                out.extend(np.ascontiguousarray(v) for v in vectors)
                bar.update(len(vectors))
        return out

    def encode_documents(
        self, texts: str | Sequence[str], *, output: str = "float32", pool_factor: int = 1, progress: bool = False
    ) -> list[np.ndarray]:
        """One (kept tokens, dim) float32 array per document: padding and punctuation removed.

        ``pool_factor`` > 1 merges similar token vectors (pooling.py); ``output`` float16, int8
        (QuantizedVectors), binary or ubinary returns compact vectors (compact.py).
        """
        items = as_text_list(texts, "documents")
        if not items:
            return []
        if self.long_documents == "windows":
            framed = self.preprocessor.documents(items, max_length=UNTRUNCATED).ids
        else:
            framed = self.preprocessor.documents(items).ids
        limit = self.preprocessor.document_max_length
        windows = [split_windows(ids, limit, self.window_stride) for ids in framed]
        flat = [w for doc in windows for w in doc.sequences]
        encoded = iter(self._encode_sequences(flat, progress=progress))
        results = []
        for ids, doc in zip(framed, windows, strict=True):
            vectors = doc.merge([next(encoded) for _ in doc.sequences])
            results.append(np.ascontiguousarray(vectors[~np.isin(ids, self._skiplist)]))
        return finish_documents(results, output, pool_factor)  # type: ignore[arg-type]

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[dict]:
        """Documents ranked by MaxSim against `query`, best first: dicts of index, relevance_score, document."""
        if not isinstance(query, str):
            raise InvalidInputError(f"query must be a str, got {type(query).__name__}")
        docs = as_text_list(documents, "documents")
        top_n = _positive_int("top_n", top_n)
        if not docs:
            return []
        (query_vectors,) = self.encode_queries([query])
        scores = maxsim(query_vectors, self.encode_documents(docs))
        order = np.argsort(-scores, kind="stable")[: top_n or len(docs)]
        return [{"index": int(i), "relevance_score": float(scores[i]), "document": docs[i]} for i in order]

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        **kwargs,
    ) -> ColbertEncoder:
        """An encoder for a local model folder or hub repo ``ORG/NAME`` (via the HF cache; see hub.py)."""
        from .hub import resolve_model_folder

        folder = resolve_model_folder(
            name_or_path, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only
        )
        return cls(folder, **kwargs)
