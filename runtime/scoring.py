"""Late-interaction (MaxSim) scoring, vectorized over tokens and documents (see docs/maxsim.md).

Documents are scored a cache-sized block of tokens at a time: one GEMM of all query tokens against
the block, run by onnxruntime (MLAS), then a segmented max (``np.maximum.reduceat`` along the
contiguous token axis) per document. Three kernels, each a tiny in-memory ONNX graph built once per
process and shared (``InferenceSession.run`` is thread-safe):

- ``float32``: ``Gemm(Q, D, transB=1)``; exact (equal to a per-document numpy loop within 1e-5).
- ``float16``: ``Cast(D)`` to float32, then the same Gemm; exact for the stored float16 values.
- ``int8``: documents as uint8 ``code + 128`` with per-vector scales, the query quantized to int8
  per token and fed as uint8 ``code + 128`` too; ``MatMulInteger`` (u8 x u8, both zero points 128)
  -> ``DequantizeLinear`` (times each document vector's scale) -> ``Transpose``. Approximate: the
  query is rounded to int8 too. Not u8 x s8: on CPUs without VNNI (AVX2, AVX-512 before Cascade
  Lake) onnxruntime runs u8 x s8 on VPMADDUBSW, whose int16 pair sums saturate with full-range
  codes (measured 20 % off on an AMD Zen 3); u8 x u8 is exact everywhere and as fast there.

Each session runs single-threaded; the documents are split into one shard per core, scored by a
shared thread pool (onnxruntime and the numpy reductions release the GIL).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from .compact import as_queries, compact_kind, maxsim_compact
from .errors import InvalidInputError

# Upper bound on the document tokens scored at once (tests lower it to exercise block borders).
_BLOCK_TOKENS = 1 << 16
# Target bytes of one float32 (query tokens x block) similarity block for the float kernels: it and
# the staged document block stay in L2 (1 MiB per core on the machine measured in docs/maxsim.md).
_SCRATCH_BYTES = 1 << 19
# The int8 kernel's target: its int32 and float32 intermediates live inside onnxruntime; measured
# fastest at 8-16 K tokens for a 32-token query.
_INT8_SCRATCH_BYTES = 1 << 20
# Never fewer document tokens than this per onnxruntime call (a run costs ~10 us of overhead).
_MIN_BLOCK_TOKENS = 1024

# Zero point of the uint8 document codes fed to MatMulInteger: uint8 code = int8 code + 128.
INT8_ZERO_POINT = 128


# --- onnxruntime kernels and the worker pool ----------------------------------------------------

_SESSIONS: dict[str, ort.InferenceSession] = {}
_LOCK = threading.Lock()


def _graph(kind: str) -> bytes:
    """Serialized ONNX model of one similarity kernel; its output S is (rows, block) float32."""
    vi = helper.make_tensor_value_info
    f32 = TensorProto.FLOAT
    if kind == "float32":
        inputs = [vi("Q", f32, ["rows", "dim"]), vi("D", f32, ["block", "dim"])]
        nodes = [helper.make_node("Gemm", ["Q", "D"], ["S"], transB=1)]
    elif kind == "float16":
        inputs = [vi("Q", f32, ["rows", "dim"]), vi("D", TensorProto.FLOAT16, ["block", "dim"])]
        nodes = [
            helper.make_node("Cast", ["D"], ["D32"], to=f32),
            helper.make_node("Gemm", ["Q", "D32"], ["S"], transB=1),
        ]
    elif kind == "int8":
        inputs = [vi("D", TensorProto.UINT8, ["block", "dim"]), vi("Q", TensorProto.UINT8, ["dim", "rows"]),
                  vi("Z", TensorProto.UINT8, []), vi("scales", f32, ["block"])]
        nodes = [
            helper.make_node("MatMulInteger", ["D", "Q", "Z", "Z"], ["I"]),  # (block, rows) int32; zero points 128
            # int32 -> float32 times each document vector's scale in one pass (per-axis dequantize);
            # (the int32 -> float32 conversion is exact: |I| <= 128 * 127 * dim < 2**24 for dim <= 1024)
            helper.make_node("DequantizeLinear", ["I", "scales"], ["F"], axis=0),
            helper.make_node("Transpose", ["F"], ["S"], perm=[1, 0]),  # document tokens on the contiguous axis
        ]
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    graph = helper.make_graph(nodes, f"maxsim_{kind}", inputs, [vi("S", f32, ["rows", "block"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model.SerializeToString()


def _session(kind: str) -> ort.InferenceSession:
    """The shared single-threaded CPU session of one kernel, created on first use."""
    session = _SESSIONS.get(kind)
    if session is None:
        with _LOCK:
            session = _SESSIONS.get(kind)
            if session is None:
                options = ort.SessionOptions()
                options.intra_op_num_threads = 1  # parallel over document shards instead (no spinning pool)
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                session = ort.InferenceSession(_graph(kind), options, providers=["CPUExecutionProvider"])
                _SESSIONS[kind] = session
    return session


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# Shards scored concurrently; 1 scores everything in the calling thread.
_WORKERS = _cpu_count()
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        with _LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="maxsim")
    return _POOL


def _forget_pool() -> None:
    global _POOL
    _POOL = None  # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _run_shards(fn: Callable[[int, int], None], shards: list[tuple[int, int]]) -> None:
    """fn(a, b) for every shard: the first in the calling thread, the others on the pool."""
    futures = [_pool().submit(fn, a, b) for a, b in shards[1:]]
    try:
        fn(*shards[0])
    finally:
        for future in futures:
            future.result()


def _even_split(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` (at most n, at least 1) consecutive ranges [a, b) covering range(n)."""
    k = max(1, min(parts, n))
    bounds = [round(i * n / k) for i in range(k + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _token_shards(offsets: np.ndarray, total: int, block: int) -> list[tuple[int, int]]:
    """Document ranges [a, b) of about equal token counts, one per worker and at least a block each."""
    parts = min(_WORKERS, total // max(block, 1), offsets.shape[0])
    if parts <= 1:
        return [(0, offsets.shape[0])]
    cuts = np.searchsorted(offsets, np.arange(1, parts) * (total / parts))
    bounds = [0, *sorted({int(c) for c in cuts if 0 < c < offsets.shape[0]}), offsets.shape[0]]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


# --- blocked segmented max ----------------------------------------------------------------------


def _block_tokens(rows: int, scratch_bytes: int) -> int:
    """Document tokens per block so that the float32 (rows, block) similarity block fits `scratch_bytes`."""
    return max(1, min(_BLOCK_TOKENS, max(_MIN_BLOCK_TOKENS, scratch_bytes // (4 * max(rows, 1)))))


def _blocks(total: int, offsets: np.ndarray, block: int) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """(start, stop, first_doc, last_doc, segment starts within the block) per block of tokens."""
    ends = np.append(offsets[1:], total)
    for start in range(0, total, block):
        stop = min(start + block, total)
        first = int(np.searchsorted(ends, start, side="right"))
        last = int(np.searchsorted(offsets, stop, side="left"))
        yield start, stop, first, last, np.maximum(offsets[first:last], start) - start


def _segmented_max(
    similarities: Callable[[int, int], np.ndarray], rows: int, total: int, offsets: np.ndarray, block: int
) -> np.ndarray:
    """(rows, n_docs): per query token, the best similarity within each document over all blocks.

    ``similarities(start, stop)`` is the (rows, stop - start) float32 block; a document cut by a
    block border is combined with ``np.maximum`` across blocks.
    """
    best = np.full((rows, offsets.shape[0]), -np.inf, dtype=np.float32)
    for start, stop, first, last, seg_starts in _blocks(total, offsets, block):
        seg_max = np.maximum.reduceat(similarities(start, stop), seg_starts, axis=1)
        # Only the first document of a block can have started in an earlier block.
        np.maximum(best[:, first : first + 1], seg_max[:, :1], out=best[:, first : first + 1])
        best[:, first + 1 : last] = seg_max[:, 1:]
    return best


def _flat_queries(queries: np.ndarray) -> np.ndarray:
    n_q, q_tok, dim = queries.shape
    return np.ascontiguousarray(queries.reshape(n_q * q_tok, dim), dtype=np.float32)


class _FloatKernel:
    """Exact float32 similarities of one batch of queries against float32 or float16 token blocks."""

    def __init__(self, queries: np.ndarray) -> None:
        self.shape = queries.shape
        self.flat_q = _flat_queries(queries)
        self.rows = self.flat_q.shape[0]
        self.block = _block_tokens(self.rows, _SCRATCH_BYTES)

    def best(self, packed: np.ndarray, offsets: np.ndarray, stage: bool = True) -> np.ndarray:
        """(rows, n_docs) best similarity per query token and document of `packed`.

        float32 blocks are first copied into a small reused buffer (`stage`): a plain copy streams
        from memory at full bandwidth, so the GEMM then reads from cache (measured 42 -> 36 ms per
        1000 x 300 tokens on one core). float16 blocks are upcast by the graph's Cast instead.
        """
        if packed.dtype != np.float16:
            packed = np.asarray(packed, dtype=np.float32)  # no copy for float32 storage
        session = _session("float16" if packed.dtype == np.float16 else "float32")
        flat_q = self.flat_q
        staging = None
        if stage and packed.dtype == np.float32:
            staging = np.empty((min(self.block, packed.shape[0]), packed.shape[1]), dtype=np.float32)

        def similarities(start: int, stop: int) -> np.ndarray:
            block = packed[start:stop]
            if staging is not None:
                block = staging[: stop - start]
                np.copyto(block, packed[start:stop])
            return session.run(None, {"Q": flat_q, "D": block})[0]

        return _segmented_max(similarities, self.rows, packed.shape[0], offsets, self.block)

    def finish(self, best: np.ndarray) -> np.ndarray:
        """(n_queries, n_docs) sums over query tokens."""
        return best.reshape(self.shape[0], self.shape[1], -1).sum(axis=1)


def quantize_queries_int8(flat_queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-token int8 of (rows, dim) float queries: (codes transposed (dim, rows), scales (rows,)).

    ``scale = max|q| / 127`` (the rule of ``compact.quantize_int8``), so each component is off by at
    most ``scale / 2``, 1/254 of the token's largest component.
    """
    q = np.asarray(flat_queries, dtype=np.float32)
    scales = (np.abs(q).max(axis=1) / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1.0))
    codes = np.clip(np.rint(q / safe[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(codes.T), scales


def int8_codes_to_uint8(codes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """int8 codes as the uint8 ``code + 128`` the integer kernel reads (a bit flip; also the inverse)."""
    return np.bitwise_xor(np.asarray(codes).view(np.uint8), np.uint8(0x80), out=out)


class _Int8Kernel:
    """Similarities of int8-quantized queries against uint8 (code + 128) token blocks with per-token scales."""

    def __init__(self, queries: np.ndarray) -> None:
        self.shape = queries.shape
        codes, self.q_scales = quantize_queries_int8(_flat_queries(queries))
        self.q_codes = int8_codes_to_uint8(codes)  # the kernel reads code + 128 (see _graph)
        self.rows = self.q_scales.shape[0]
        self.block = _block_tokens(self.rows, _INT8_SCRATCH_BYTES)

    def best(self, codes_u8: np.ndarray, scales: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """(rows, n_docs) best ``doc scale x integer dot`` per query token (query scale not applied yet)."""
        session = _session("int8")
        zero = np.array(INT8_ZERO_POINT, dtype=np.uint8)
        q_codes = self.q_codes
        scales = np.asarray(scales, dtype=np.float32)

        def similarities(start: int, stop: int) -> np.ndarray:
            feed = {"D": codes_u8[start:stop], "Q": q_codes, "Z": zero, "scales": scales[start:stop]}
            return session.run(None, feed)[0]

        return _segmented_max(similarities, self.rows, codes_u8.shape[0], offsets, self.block)

    def finish(self, best: np.ndarray) -> np.ndarray:
        """(n_queries, n_docs): times each query token's scale (>= 0, so exact after the max), summed."""
        best *= self.q_scales[:, None]
        return best.reshape(self.shape[0], self.shape[1], -1).sum(axis=1)


# --- packed documents ---------------------------------------------------------------------------


def _check_packed(queries: np.ndarray, packed: np.ndarray, offsets: np.ndarray) -> None:
    if queries.ndim != 3:
        raise InvalidInputError(f"queries must be (n_queries, q_tokens, dim), got shape {queries.shape}")
    if packed.ndim != 2 or packed.shape[0] == 0:
        raise InvalidInputError(f"packed documents must be a non-empty (tokens, dim) array, got {packed.shape}")
    if packed.shape[1] != queries.shape[2]:
        raise InvalidInputError(f"query dim {queries.shape[2]} does not match document dim {packed.shape[1]}")
    if offsets.ndim != 1 or offsets.shape[0] == 0 or offsets[0] != 0:
        raise InvalidInputError("offsets must be a non-empty 1-D array of document starts beginning at 0")
    if offsets[-1] >= packed.shape[0] or np.any(np.diff(offsets) <= 0):
        raise InvalidInputError("offsets must increase strictly (no empty document) and stay below the token count")


def _sharded_best(
    kernel: _FloatKernel | _Int8Kernel, packed: np.ndarray, offsets: np.ndarray, scales: np.ndarray | None = None
) -> np.ndarray:
    """kernel.best over packed documents, one shard of whole documents per worker."""
    total = packed.shape[0]
    best = np.empty((kernel.rows, offsets.shape[0]), dtype=np.float32)

    def run(a: int, b: int) -> None:
        start = int(offsets[a])
        stop = int(offsets[b]) if b < offsets.shape[0] else total
        local = offsets[a:b] - start
        if scales is None:
            best[:, a:b] = kernel.best(packed[start:stop], local)  # type: ignore[call-arg]
        else:
            best[:, a:b] = kernel.best(packed[start:stop], scales[start:stop], local)  # type: ignore[call-arg]

    _run_shards(run, _token_shards(offsets, total, kernel.block))
    return best


def maxsim_packed(queries: np.ndarray, packed: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Exact scores (n_queries, n_docs) of float queries (n_queries, q_tokens, dim) against packed documents.

    `packed` is (total tokens, dim) float32 or float16 (upcast per block inside onnxruntime), `offsets`
    the start of each document. Per cache-sized block of tokens: one float32 GEMM, then a segmented max.
    """
    _check_packed(queries, packed, offsets)
    kernel = _FloatKernel(queries)
    return kernel.finish(_sharded_best(kernel, packed, offsets))


def maxsim_packed_int8(
    queries: np.ndarray, codes_u8: np.ndarray, scales: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """Approximate scores (n_queries, n_docs) of float queries against packed int8 documents.

    `codes_u8` is (total tokens, dim) uint8 = int8 code + 128 (:func:`int8_codes_to_uint8`) and
    `scales` (total tokens,) float32, the vector being ``(codes_u8 - 128) * scale``. The query is
    quantized per token (:func:`quantize_queries_int8`); the integer GEMM runs in onnxruntime.
    """
    _check_packed(queries, codes_u8, offsets)
    if codes_u8.dtype != np.uint8:
        raise InvalidInputError(f"codes_u8 must be uint8 (int8 code + 128), got {codes_u8.dtype}")
    if scales.shape != (codes_u8.shape[0],):
        raise InvalidInputError(f"scales has shape {scales.shape}, expected ({codes_u8.shape[0]},)")
    kernel = _Int8Kernel(queries)
    return kernel.finish(_sharded_best(kernel, codes_u8, offsets, scales))


# --- lists of documents -------------------------------------------------------------------------


def document_lengths(documents: Sequence, dim: int | None = None) -> np.ndarray:
    """Token counts of ragged (tokens, dim) documents (arrays or ``QuantizedVectors``), all of one dim.

    Raises InvalidInputError for an empty list, a document that is not 2-D, has no vectors, or
    whose dim differs from the first one's (or from `dim`, the query's, when given).
    """
    if len(documents) == 0:
        raise InvalidInputError("documents_vectors is empty")
    lengths = np.empty(len(documents), dtype=np.int64)
    first = None
    for i, doc in enumerate(documents):
        shape = getattr(doc, "shape", None)
        if shape is None or len(shape) != 2:
            raise InvalidInputError(f"documents_vectors[{i}] has shape {shape}, expected (tokens, dim)")
        if shape[0] == 0:
            raise InvalidInputError(f"documents_vectors[{i}] has no vectors; MaxSim is undefined for it")
        if first is None:
            first = shape[1]
            if dim is not None and first != dim:
                raise InvalidInputError(f"query dim {dim} does not match document dim {first}")
        elif shape[1] != first:
            raise InvalidInputError(f"documents_vectors[{i}] has dim {shape[1]}, the first has {first}")
        lengths[i] = shape[0]
    return lengths


def start_offsets(lengths: np.ndarray) -> np.ndarray:
    """Start offset of each document in the packed array: ``[0, l0, l0 + l1, ...]`` (int64)."""
    offsets = np.zeros(lengths.shape[0], dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return offsets


def pack_documents(documents_vectors: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ragged (n_i, dim) arrays into one (sum n_i, dim) array plus start offsets."""
    arrays = [np.asarray(d) for d in documents_vectors]
    lengths = document_lengths(arrays)
    return np.concatenate(arrays, axis=0), start_offsets(lengths)


def document_groups(lengths: np.ndarray, block: int) -> list[tuple[int, int]]:
    """Runs [a, b) of consecutive documents of at most `block` tokens together (a longer one alone)."""
    groups, start, tokens = [], 0, 0
    for i, n in enumerate(lengths.tolist()):
        if i > start and tokens + n > block:
            groups.append((start, i))
            start, tokens = i, 0
        tokens += n
    groups.append((start, len(lengths)))
    return groups


def maxsim_float_list(queries: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
    """Exact scores (n_queries, n_docs) of (n_queries, q_tokens, dim) queries against ragged float documents.

    Consecutive documents are concatenated one cache-sized group at a time (never the whole corpus),
    so each group is still in cache when the GEMM reads it; groups are split among the workers.
    """
    arrays = [np.asarray(d) for d in documents]
    lengths = document_lengths(arrays, queries.shape[2])
    dtype = np.float16 if all(a.dtype == np.float16 for a in arrays) else np.float32
    kernel = _FloatKernel(queries)
    best = np.empty((kernel.rows, len(arrays)), dtype=np.float32)
    groups = document_groups(lengths, kernel.block)

    def run(first: int, last: int) -> None:
        buffer = np.empty((kernel.block, queries.shape[2]), dtype=dtype)  # reused: no page faults per group
        for a, b in groups[first:last]:
            if b == a + 1:  # one document, possibly longer than a block: staged block by block instead
                best[:, a:b] = kernel.best(arrays[a].astype(dtype, copy=False), np.zeros(1, np.int64))
                continue
            group = np.concatenate(arrays[a:b], axis=0, out=buffer[: lengths[a:b].sum()], casting="same_kind")
            best[:, a:b] = kernel.best(group, start_offsets(lengths[a:b]), stage=False)

    _run_shards(run, _even_split(len(groups), _WORKERS))
    return kernel.finish(best)


def maxsim_int8_list(queries: np.ndarray, documents: Sequence) -> np.ndarray:
    """Integer-kernel scores (n_queries, n_docs) against a list of ``QuantizedVectors``, a group at a time."""
    lengths = document_lengths(documents, queries.shape[2])
    kernel = _Int8Kernel(queries)
    best = np.empty((kernel.rows, len(documents)), dtype=np.float32)
    groups = document_groups(lengths, kernel.block)

    def run(first: int, last: int) -> None:
        size = max(kernel.block, max(int(lengths[a:b].sum()) for a, b in groups[first:last]))
        codes_buffer = np.empty((size, queries.shape[2]), dtype=np.int8)  # reused: no page faults per group
        scales_buffer = np.empty(size, dtype=np.float32)
        for a, b in groups[first:last]:
            n = int(lengths[a:b].sum())
            codes = np.concatenate([d.codes for d in documents[a:b]], axis=0, out=codes_buffer[:n])
            scales = np.concatenate([d.scales for d in documents[a:b]], out=scales_buffer[:n], casting="same_kind")
            best[:, a:b] = kernel.best(int8_codes_to_uint8(codes, out=codes.view(np.uint8)), scales,
                                       start_offsets(lengths[a:b]))

    _run_shards(run, _even_split(len(groups), _WORKERS))
    return kernel.finish(best)


def maxsim(query_vectors: np.ndarray, documents_vectors: Sequence[np.ndarray]) -> np.ndarray:
    """ColBERT MaxSim: for each document, sum over query vectors of the best dot product.

    `query_vectors` is (q_tokens, dim) for one query, giving scores of shape (n_docs,), or
    (n_queries, q_tokens, dim), giving (n_queries, n_docs). Documents may be ragged, and may be
    any compact kind of ``encode_documents(output=...)`` (int8, binary, ubinary; see compact.py).
    Float documents are scored exactly; int8 ones by the integer kernel (the query rounded to int8).
    """
    kind = compact_kind(documents_vectors)
    if kind is not None:  # int8 (QuantizedVectors) or packed sign bits: see compact.py
        return maxsim_compact(query_vectors, documents_vectors, kind)
    queries, single = as_queries(query_vectors)
    scores = maxsim_float_list(queries, documents_vectors)
    return scores[0] if single else scores
