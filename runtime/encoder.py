"""ColbertEncoder: text -> tokens -> ids -> ONNX -> normalized vectors -> MaxSim scores, in one place.

The data path reads top to bottom: :meth:`ColbertEncoder.tokenize` (texts -> a TokenizedBatch of framed
ids), :meth:`ColbertEncoder.encode_ids` (ids -> batched ONNX runs -> vectors, then the skiplist, the
windows merge and the output kind for documents), then ``encode_queries`` / ``encode_documents`` (the two
chained) and ``rerank`` (MaxSim, then ranking.rank). The server calls the first two steps apart: it
tokenizes once per request, checks its limits on those ids and micro-batches them.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .compact import check_output_kind, finish_documents, to_muvera
from .config import LONG_DOCUMENT_MODES, EncoderConfig
from .engines.selection import EngineRequest, gates_here, kernel_warning, open_engine, reopen
from .errors import FidelityWarning, InvalidInputError
from .fidelity import gate_misses
from .model_folder import open_model_folder
from .muvera import is_muvera_output
from .planning import plan_batches
from .pooling import check_pool_factor
from .progress import progress_bar
from .ranking import check_top_n, rank
from .scoring import maxsim
from .text import check_text
from .tokenization import TEXT_KINDS, Preprocessor, TokenizedBatch, as_text_list, check_truncation_side, pad_batch
from .windows import UNTRUNCATED, split_windows

__all__ = ["LONG_DOCUMENT_MODES", "ColbertEncoder", "EncoderConfig", "plan_batches"]


def _warn_if_gates_missed(folder, graph, dim: int, precision: str) -> None:
    if graph.fp32_equivalent and precision != "fp32":
        warnings.warn(
            f"{precision} of {folder.path} is the fp32 graph: at export no graph computing in {precision} passed "
            "the fidelity gates on this checkpoint (manifest.json, graphs[].mixed_precision says why); vectors are "
            "fp32's, and so is the speed",
            FidelityWarning,
            stacklevel=3,
        )
    parity = folder.missed_parity(dim)
    if parity:
        warnings.warn(
            f"head {dim} of {folder.path} missed the fp32 parity gate at export and was written with "
            f"--accept-parity-miss: max abs diff {parity.get('max_abs_diff', float('nan')):.3g} from the float64 "
            f"PyTorch evaluation, tolerance {parity.get('tolerance', float('nan')):.3g} (manifest.json, parity; "
            "docs/export.md)",
            FidelityWarning,
            stacklevel=3,
        )
    kernels = kernel_warning(graph, folder, dim)
    if kernels:
        warnings.warn(kernels, FidelityWarning, stacklevel=3)
    metrics = folder.missed_gates(graph, dim)
    if metrics:
        figures = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("mean_token_cosine", "min_token_cosine",
                                                              "top10_overlap", "spearman") if k in metrics)
        missed = "; ".join(gate_misses(precision, metrics)) or "the export's verdict"
        others = _faithful_precisions(folder, dim, precision)
        warnings.warn(
            f"{precision} head {dim} of {folder.path} missed its fidelity gates at export ({missed}; {figures}); its "
            "vectors and rankings differ from the PyTorch model more than the gates allow (docs/quantization.md); "
            + (f"faithful at export in this folder: {', '.join(others)}" if others
               else "no other precision of this folder was faithful at export"),
            FidelityWarning,
            stacklevel=3,
        )


def _faithful_precisions(folder, dim: int, precision: str) -> list[str]:
    """The folder's other precisions of head `dim` that met their gates at export: fp32 by the parity gate, the
    others by their fidelity figures (a precision without figures is not called faithful)."""
    faithful = []
    for other in folder.precisions:
        graph = next((g for g in folder.graphs if g.precision == other and dim in g.outputs), None)
        if other == precision or graph is None:
            continue
        if other == "fp32":
            passed = folder.missed_parity(dim) is None
        else:
            passed = ((graph.fidelity or {}).get(str(dim)) or {}).get("passed") is True
        if passed:
            faithful.append(other)
    return faithful


class ColbertEncoder:
    """Encodes queries and documents with an exported jina-colbert-v2 folder, without PyTorch.

    Args:
        model_dir: folder written by ``colbert-onnx export``.
        config: an :class:`~colbert_onnx.config.EncoderConfig` (default: its defaults).
        **options: EncoderConfig fields, replacing the config's: ``dim`` (Matryoshka head), ``precision``
            (fp32, int8, fp16), ``device`` (cpu, cuda), ``threads``, ``document_max_length`` (default: the
            manifest's, 8192), ``batch_size``, ``max_batch_tokens``, ``long_documents`` (``truncate`` as
            Jina's API, or ``windows``: overlapping windows, one vector per original token, each from the
            window where it is most central), ``window_stride``, ``io_binding`` (None: on for cuda, off
            for cpu), ``truncation_side`` (``right``: a text over its length keeps its first tokens; ``left``: its
            last; the default of every call, which may name its own) and ``session_options`` (onnxruntime knobs,
            session.SessionConfig).
    """

    def __init__(self, model_dir: str | Path, config: EncoderConfig | None = None, **options) -> None:
        config = EncoderConfig.from_options(config, **options)
        self.folder = open_model_folder(model_dir)
        # a missing head or precision fails first, by name
        self.folder.graph_for(config.head(self.folder.dims), config.precision)
        manifest = self.folder.manifest
        self.config = config.for_manifest(manifest)
        tokenizer, special = self.folder.load_tokenizer()
        self.preprocessor = Preprocessor.for_manifest(tokenizer, special, manifest, self.config.document_max_length)
        self._skiplist = np.array(manifest.document.skiplist_ids, dtype=np.int64)
        c = self.config
        self._opened = open_engine(self._engine_request(), c.engine)
        _warn_if_gates_missed(self.folder, self.graph, c.dim, c.precision)

    def _engine_request(self) -> EngineRequest:
        c = self.config
        return EngineRequest(self.folder, c.dim, c.precision, c.device, c.threads, c.session_options, self.io_binding)

    @property
    def engine(self):
        """The engine running the graph (engines/): ``run(ids, mask) -> {dim: vectors}``."""
        return self._opened.engine

    @property
    def graph(self):
        """The manifest entry of the graph the engine runs."""
        return self._opened.graph

    @property
    def session(self):
        """The onnxruntime InferenceSession of the onnxruntime engine (None on another engine)."""
        return getattr(self.engine, "session", None)

    @property
    def _output_name(self) -> str:
        return self.graph.outputs[self.dim]

    def describe(self) -> dict:
        """What runs: head, precision, engine (and why it was picked), its graph and settings, and whether the graph
        passed the gates (at export, or by a `verify --record` on a CPU with this one's units)."""
        passed, verified_here = gates_here(self.folder, self.graph, self.dim)
        return {"model": str(self.folder.path), "dim": self.dim, "precision": self.precision,
                "engine": self.engine.name, "engine_detail": self.engine.describe(),
                "engine_reason": self._opened.choice.reason, "graph": self.graph.file,
                "passed_gates": passed, "gates_verified_here": verified_here}

    def for_dim(self, dim: int) -> ColbertEncoder:
        """An encoder for another head that shares this one's tokenizer and, when the same graph
        holds both heads (the shared-backbone export), its onnxruntime session: no second copy of
        the weights in memory."""
        self.folder.graph_for(dim, self.precision)
        other = copy.copy(self)
        other.config = dataclasses.replace(self.config, dim=dim)
        other._opened = reopen(self._opened, other._engine_request())
        _warn_if_gates_missed(self.folder, other.graph, dim, self.precision)
        return other

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def precision(self) -> str:
        return self.config.precision

    @property
    def device(self) -> str:
        return self.config.device

    @property
    def long_documents(self) -> str:
        return self.config.long_documents

    @property
    def window_stride(self) -> int | None:
        """Tokens between window starts with long_documents="windows" (filled in by for_manifest); None otherwise."""
        return self.config.window_stride

    @property
    def truncation_side(self) -> str:
        """Where texts over their length are cut when a call names no side: right (keep the first tokens) or left."""
        return self.config.truncation_side

    @property
    def io_binding(self) -> bool:
        """Whether runs go through IOBinding: the config's choice, by default on for cuda only."""
        return self.device == "cuda" if self.config.io_binding is None else self.config.io_binding

    @property
    def query_max_length(self) -> int:
        return self.preprocessor.query_max_length

    @property
    def document_max_length(self) -> int:
        return self.preprocessor.document_max_length

    # The batching knobs stay assignable (read at every call; benchmarks/bench_gpu.py sets batch_size).
    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.config = dataclasses.replace(self.config, batch_size=value)

    @property
    def max_batch_tokens(self) -> int | None:
        return self.config.max_batch_tokens

    @max_batch_tokens.setter
    def max_batch_tokens(self, value: int | None) -> None:
        self.config = dataclasses.replace(self.config, max_batch_tokens=value)

    # --- the data path: text -> tokens -> ids -> ONNX -> vectors -> scores ------------------------------

    def tokenize(self, texts: str | Sequence[str], kind: str, *, max_length: int | None = None,
                 truncation_side: str | None = None) -> TokenizedBatch:
        """Framed ids of `texts` as ``query`` or ``document`` (``<s> [marker] text </s>``, truncated, queries
        ``<mask>``-padded; with long_documents="windows", documents untruncated and split into windows).

        `max_length` (documents only): truncate at this many tokens in all instead, a per-call limit such as
        Cohere's ``max_tokens_per_doc``: below document_max_length one sequence each; above it, windows over the
        first `max_length` tokens with long_documents="windows", document_max_length otherwise (the model's limit).

        `truncation_side` (default: the config's): where a cut falls, ``right`` keeping a text's first tokens,
        ``left`` its last (TEI's truncation_direction, vLLM's truncation_side); ``<s>``, the marker and ``</s>``
        stay in place. Windows cut nothing unless `max_length` does, so there it only decides which `max_length`
        tokens are windowed.
        """
        if kind not in TEXT_KINDS:
            raise InvalidInputError(f"kind must be one of {', '.join(TEXT_KINDS)}, got {kind!r}")
        side = self.truncation_side if truncation_side is None else check_truncation_side(truncation_side)
        items = as_text_list(texts, "queries" if kind == "query" else "documents")
        if kind == "query":
            if max_length is not None:
                raise InvalidInputError(f"max_length applies to documents; every query is framed to "
                                        f"{self.preprocessor.query_max_length} tokens, got max_length={max_length!r}")
            return self.preprocessor.query_batch(items, side)
        if max_length is not None:
            if isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral) or max_length < 3:
                raise InvalidInputError(f"max_length must be an int >= 3 (the framing tokens), got {max_length!r}")
            max_length = int(max_length)
            if max_length < self.document_max_length:
                framed = self.preprocessor.documents(items, max_length, side)
                return dataclasses.replace(framed, windows=[split_windows(ids, max_length, 1) for ids in framed.ids])
        if self.long_documents == "windows":
            framed = self.preprocessor.documents(items, UNTRUNCATED if max_length is None else max_length, side)
        else:
            framed = self.preprocessor.documents(items, None, side)
        stride = self.window_stride or 1  # truncated documents are one window each: no stride to take
        windows = [split_windows(ids, self.document_max_length, stride) for ids in framed.ids]
        return dataclasses.replace(framed, windows=windows)

    def encode_ids(
        self, batch: TokenizedBatch, *, output: str = "float32", pool_factor: int = 1, progress: bool = False
    ) -> list:
        """The vectors of a tokenized batch, one item per text, in order.

        Queries: one (query_max_length, dim) float32 array each, ``<mask>`` padding vectors included.
        Documents: (kept tokens, dim) float32 arrays, padding and punctuation removed, windows merged;
        ``pool_factor`` > 1 merges similar token vectors (pooling.py) and ``output`` float16, int8
        (QuantizedVectors), binary or ubinary gives compact vectors (compact.py).
        """
        if not isinstance(batch, TokenizedBatch):
            raise InvalidInputError(f"batch must be a TokenizedBatch (from tokenize), got {type(batch).__name__}")
        check_output_kind(output)
        if not isinstance(progress, bool):  # encode_queries(texts, "muvera") lands here: output= is keyword-only
            hint = " (output kinds go by keyword: output=...)" if isinstance(progress, str) else ""
            raise InvalidInputError(f"progress must be True or False, got {progress!r}{hint}")
        if batch.kind == "query" and ((output != "float32" and not is_muvera_output(output)) or pool_factor != 1):
            raise InvalidInputError("pool_factor and output kinds but float32 and muvera apply to documents only")
        check_pool_factor(pool_factor)
        if not len(batch):
            return []
        self._check_ids(batch)
        if batch.kind == "query":
            queries = self._encode_queries(batch, progress)
            return to_muvera(queries, output, "query") if is_muvera_output(output) else queries
        windows = batch.document_windows
        flat = [w for doc in windows for w in doc.sequences]
        encoded = iter(self._encode_sequences(flat, progress=progress))
        results = []
        for ids, doc in zip(batch.ids, windows, strict=True):
            vectors = doc.merge([next(encoded) for _ in doc.sequences])
            results.append(np.ascontiguousarray(vectors[~np.isin(ids, self._skiplist)]))
        return finish_documents(results, output, pool_factor)

    def _check_ids(self, batch: TokenizedBatch) -> None:
        """Ids the graph can take: 1-D integers within its vocabulary (queries: all of one length)."""
        vocab = self.folder.vocab_size
        for i, ids in enumerate(batch.ids):
            if ids.ndim != 1 or ids.dtype.kind not in "iu" or len(ids) == 0:
                raise InvalidInputError(f"batch.ids[{i}] must be a non-empty 1-D integer array")
            if int(ids.min()) < 0 or int(ids.max()) >= vocab:
                raise InvalidInputError(f"batch.ids[{i}] has ids outside the graph's vocabulary of {vocab}: "
                                        "tokenize with this encoder's tokenize()")
        if batch.kind == "query" and len(set(batch.lengths.tolist())) > 1:
            raise InvalidInputError("the query ids of one batch must all have the same (padded) length")

    def _encode_queries(self, batch: TokenizedBatch, progress: bool) -> list[np.ndarray]:
        """Padded query ids in runs of at most batch_size rows and max_batch_tokens padded tokens (all rows of one
        length: no sorting)."""
        ids = np.stack(batch.ids).astype(np.int64, copy=False)
        mask = self.preprocessor.query_mask(batch.token_counts)
        rows = self.batch_size
        if self.max_batch_tokens is not None and len(ids):
            if ids.shape[1] > self.max_batch_tokens:
                raise InvalidInputError(f"max_batch_tokens={self.max_batch_tokens} is smaller than one query of "
                                        f"{ids.shape[1]} tokens (the query length)")
            rows = min(rows, self.max_batch_tokens // ids.shape[1])
        out: list[np.ndarray] = []
        with progress_bar(progress, total=len(batch), unit="query", desc="encoding queries") as bar:
            for start in range(0, len(ids), rows):
                vectors = self._run(ids[start : start + rows], mask[start : start + rows])
                out.extend(np.ascontiguousarray(v) for v in vectors)
                bar.update(len(vectors))
        return out

    def _run(self, ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """One engine run: (batch, seq) ids and mask -> (batch, seq, dim) L2-normalized float32 of this head
        (ids checked by _check_ids first: OpenVINO's Gather returns silently on ids outside the vocabulary)."""
        return self.engine.run(ids, attention_mask, (self.dim,))[self.dim]

    def _encode_sequences(self, seqs: list[np.ndarray], progress: bool = False) -> list[np.ndarray]:
        """Every token's vector for each framed id sequence, in batches of similar length that need little or no
        padding (planning.py), each within the batch size and token budget."""
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

    def encode_queries(
        self, texts: str | Sequence[str], progress: bool = False, *, output: str = "float32",
        truncation_side: str | None = None,
    ) -> list[np.ndarray]:
        """One (query_max_length, dim) float32 array per query; `<mask>` padding vectors included.

        ``output="muvera"`` (or a ``muvera:...`` spec) gives one query MUVERA encoding each (muvera.py);
        ``truncation_side="left"`` keeps the last tokens of a query over its length (default: the config's).
        """
        return self.encode_ids(self.tokenize(texts, "query", truncation_side=truncation_side), output=output,
                               progress=progress)

    def encode_documents(
        self, texts: str | Sequence[str], *, output: str = "float32", pool_factor: int = 1, progress: bool = False,
        truncation_side: str | None = None,
    ) -> list[np.ndarray]:
        """One (kept tokens, dim) float32 array per document: padding and punctuation removed.

        ``pool_factor`` > 1 merges similar token vectors (pooling.py); ``output`` float16, int8
        (QuantizedVectors), binary or ubinary returns compact vectors (compact.py); ``truncation_side="left"``
        keeps the last tokens of a document over document_max_length (default: the config's).
        """
        return self.encode_ids(self.tokenize(texts, "document", truncation_side=truncation_side), output=output,
                               pool_factor=pool_factor, progress=progress)

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None, *,
               truncation_side: str | None = None) -> list[dict]:
        """Documents ranked by MaxSim against `query`, best first: dicts of index, relevance_score, document
        (`truncation_side`: where the query and documents over their lengths are cut; default: the config's)."""
        if not isinstance(query, str):
            raise InvalidInputError(f"query must be a str, got {type(query).__name__}")
        check_text(query, "query")
        docs = as_text_list(documents, "documents")
        top_n = check_top_n(top_n)
        if truncation_side is not None:
            check_truncation_side(truncation_side)
        if not docs:
            return []
        (query_vectors,) = self.encode_queries([query], truncation_side=truncation_side)
        scores = maxsim(query_vectors, self.encode_documents(docs, truncation_side=truncation_side))
        return [{"index": i, "relevance_score": score, "document": docs[i]} for i, score in rank(scores, top_n)]

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
