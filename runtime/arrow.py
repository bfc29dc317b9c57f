"""Multivector columns in Arrow and Parquet: encode a table of texts, read shards back, pack them for MaxSim.

Needs the ``arrow`` extra (pyarrow). One row per document; the vector columns are

- ``vectors``: ``list<fixed_size_list<float16 | float32, dim>>`` for ``output="float16"/"float32"``;
  ``list<fixed_size_list<int8, dim>>`` codes for ``int8``, with ``scales``: ``list<float32>`` (one scale
  per vector, ``v ≈ codes * scale``); ``list<fixed_size_list<uint8 | int8, dim / 8>>`` sign bits for
  ``ubinary``/``binary`` (vectors.py's sign bits);
- ``n_tokens``: ``int32``, the vectors kept for the document (after pooling);
- for ``output="muvera"`` (muvera.py) instead: ``vectors`` ``fixed_size_list<float32, fde_dim>``, one MUVERA
  encoding per row (the layout of a single-vector column), no ``n_tokens``; the metadata records the full
  ``muvera:k_sim=..,dim_proj=..,r_reps=..,seed=..`` spec, so shards of other parameters are refused.

The list-of-fixed-size-list layout is LanceDB's multivector column type. Every table carries its
encoder settings as JSON under the schema metadata key ``colbert_onnx`` (:func:`corpus_metadata`);
:func:`read_shards` refuses shards whose settings differ (docs/scale-out.md).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .compact import canonical_output, check_output_kind
from .errors import ColbertOnnxError, InvalidInputError, InvalidTextError
from .extras import import_extra
from .muvera import is_muvera_output, parse_output
from .packed import PackedDocuments
from .pooling import check_pool_factor
from .progress import progress_bar
from .text import text_problem
from .vectors import QuantizedVectors, int8_codes_to_uint8

pa = import_extra("pyarrow", "arrow", "colbert_onnx.arrow")
pq = import_extra("pyarrow.parquet", "arrow", "colbert_onnx.arrow")

if TYPE_CHECKING:  # pragma: no cover
    from .encoder import ColbertEncoder

METADATA_KEY = b"colbert_onnx"
FORMAT = "colbert-onnx-multivector"
FORMAT_VERSION = 1
VECTORS = "vectors"
SCALES = "scales"
N_TOKENS = "n_tokens"
# Parquet names list items "element"; using it in memory too keeps written and read-back schemas equal.
_ITEM = "element"

# Parquet leaf paths of the vector columns (what pyarrow's per-column write options name).
VECTORS_LEAF = f"{VECTORS}.list.{_ITEM}.list.{_ITEM}"
SCALES_LEAF = f"{SCALES}.list.{_ITEM}"


class ShardMetadataError(ColbertOnnxError, ValueError):
    """A multivector table or Parquet shard lacks colbert_onnx metadata, or its settings differ from the others'."""


def _element_type(output: str, dim: int) -> pa.DataType:
    if output in ("float16", "float32", "int8"):
        value = {"float16": pa.float16(), "float32": pa.float32(), "int8": pa.int8()}[output]
        return pa.list_(pa.field(_ITEM, value, nullable=False), dim)
    return pa.list_(pa.field(_ITEM, pa.uint8() if output == "ubinary" else pa.int8(), nullable=False), dim // 8)


def vectors_type(output: str, dim: int) -> pa.DataType:
    """Arrow type of the ``vectors`` column for an output kind and head dim."""
    check_output_kind(output)
    if is_muvera_output(output):
        return pa.list_(pa.field(_ITEM, pa.float32(), nullable=False), parse_output(output).fde_dim)
    return pa.list_(pa.field(_ITEM, _element_type(output, dim), nullable=False))


def multivector_fields(output: str, dim: int) -> list[pa.Field]:
    """The vector columns an output kind adds: ``vectors`` (+ ``scales`` for int8) and ``n_tokens``."""
    fields = [pa.field(VECTORS, vectors_type(output, dim), nullable=False)]
    if is_muvera_output(output):
        return fields  # one encoding per row: no token count
    if output == "int8":
        fields.append(pa.field(SCALES, pa.list_(pa.field(_ITEM, pa.float32(), nullable=False)), nullable=False))
    fields.append(pa.field(N_TOKENS, pa.int32(), nullable=False))
    return fields


def corpus_metadata(
    encoder: ColbertEncoder, output: str = "float16", pool_factor: int | None = None, input_type: str = "document"
) -> dict[str, Any]:
    """The settings that decide the vectors in a table: stamped on every table, compared across shards."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": encoder.folder.manifest.model,
        "backbone_sha256": encoder.graph.backbone_sha256,
        "dim": encoder.dim,
        "precision": encoder.precision,
        "input_type": input_type,
        "output": canonical_output(output),
        "pool_factor": check_pool_factor(1 if pool_factor is None else pool_factor),
        "document_max_length": encoder.document_max_length,
        "query_max_length": encoder.query_max_length,
        "long_documents": encoder.long_documents,
        "window_stride": encoder.window_stride,
        "truncation_side": encoder.truncation_side,
        "colbert_onnx_version": __version__,
    }


def with_metadata(table: pa.Table, metadata: Mapping[str, Any]) -> pa.Table:
    """`table` with `metadata` stamped (JSON) under the ``colbert_onnx`` schema key; other keys kept."""
    existing = dict(table.schema.metadata or {})
    existing[METADATA_KEY] = json.dumps(dict(metadata), sort_keys=True).encode()
    return table.replace_schema_metadata(existing)


def read_metadata(source: pa.Table | pa.Schema | str | Path) -> dict[str, Any]:
    """The colbert_onnx settings of a table, schema or Parquet file; ShardMetadataError if it has none."""
    if isinstance(source, (str, Path)):
        schema, where = pq.read_schema(source), str(source)
    else:
        schema, where = (source.schema if isinstance(source, pa.Table) else source), "table"
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ShardMetadataError(f"{where} has no colbert_onnx metadata: it was not written by colbert_onnx.arrow")
    try:
        metadata = json.loads(raw)
    except ValueError as exc:
        raise ShardMetadataError(f"{where} has unreadable colbert_onnx metadata: {exc}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ShardMetadataError(f"{where}: colbert_onnx metadata is not of format {FORMAT!r}")
    metadata.setdefault("truncation_side", "right")  # shards written before it was recorded were cut on the right
    return metadata


def documents_to_columns(documents: Sequence, output: str, dim: int) -> dict[str, pa.Array]:
    """Per-document encoder outputs (one kind) as the ``vectors`` (+ ``scales``) and ``n_tokens`` arrays.

    One concatenation of the documents' arrays; the Arrow arrays then wrap that buffer without a copy.
    """
    check_output_kind(output)
    if is_muvera_output(output):
        vtype = vectors_type(output, dim)
        values = _concat([np.asarray(d)[None] for d in documents], np.float32, vtype.list_size)
        return {VECTORS: pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), type=vtype)}
    lengths = np.fromiter((d.shape[0] for d in documents), dtype=np.int64, count=len(documents))
    offsets = np.zeros(len(documents) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise InvalidInputError(f"{offsets[-1]} vectors in one table exceed Arrow list offsets; encode fewer rows")
    list_offsets = pa.array(offsets.astype(np.int32))
    vtype = vectors_type(output, dim)
    width = vtype.value_type.list_size
    if output == "int8":
        codes = _concat([d.codes for d in documents], np.int8, width)
        scales = _concat([d.scales for d in documents], np.float32, None)
    else:
        dtype = vtype.value_type.value_type.to_pandas_dtype()
        codes, scales = _concat(documents, dtype, width), None
    inner = pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1)), type=vtype.value_type)
    columns = {VECTORS: pa.ListArray.from_arrays(list_offsets, inner, type=vtype)}
    if scales is not None:
        scales_type = multivector_fields("int8", dim)[1].type
        columns[SCALES] = pa.ListArray.from_arrays(list_offsets, pa.array(scales), type=scales_type)
    columns[N_TOKENS] = pa.array(lengths.astype(np.int32))
    return columns


def _concat(arrays: Sequence[np.ndarray], dtype: type, width: int | None) -> np.ndarray:
    for i, a in enumerate(arrays):
        if a.dtype != dtype or (width is not None and (a.ndim != 2 or a.shape[1] != width)):
            raise InvalidInputError(
                f"document {i} is {a.dtype} {a.shape}, expected {np.dtype(dtype)} (tokens, {width})"
            )
    if not arrays:
        return np.zeros((0, width) if width else 0, dtype=dtype)
    return np.ascontiguousarray(np.concatenate(arrays, axis=0))


def _texts(table: pa.Table, text_column: str, first_row: int = 0) -> list[str]:
    """The texts of `text_column`, checked by the text rule (text.py); errors name the row, counted from `first_row`."""
    if text_column not in table.column_names:
        raise InvalidInputError(f"table has no text column {text_column!r}; columns: {', '.join(table.column_names)}")
    column = table[text_column]
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
            or pa.types.is_string_view(column.type)):
        raise InvalidInputError(f"text column {text_column!r} is {column.type}, expected string")
    if column.null_count:
        first = next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
        raise InvalidInputError(
            f"text column {text_column!r} has {column.null_count} nulls (first at row {first_row + first})"
        )
    texts = column.to_pylist()
    for i, text in enumerate(texts):
        problem = text_problem(text)
        if problem is not None:
            raise InvalidTextError(f"text column {text_column!r}, row {first_row + i}", None, problem)
    return texts


def _kept(table: pa.Table, text_column: str, keep_columns: Sequence[str] | None) -> pa.Table:
    names = [c for c in table.column_names if c != text_column] if keep_columns is None else list(keep_columns)
    missing = [c for c in names if c not in table.column_names]
    if missing:
        raise InvalidInputError(
            f"keep_columns {missing} are not in the table (columns: {', '.join(table.column_names)})"
        )
    clash = [c for c in names if c in (VECTORS, SCALES, N_TOKENS)]
    if clash:
        raise InvalidInputError(f"input columns {clash} would be overwritten by the vector columns; rename them")
    return table.select(names)


def check_columns(schema: pa.Schema, text_column: str, keep_columns: Sequence[str] | None) -> list[str]:
    """The kept column names for a table of `schema`; InvalidInputError for a missing or non-string text
    column or a missing or clashing kept column (checked before any encoding starts)."""
    empty = schema.empty_table()
    _texts(empty, text_column)
    return _kept(empty, text_column, keep_columns).column_names


def encode_table(
    encoder: ColbertEncoder,
    table: pa.Table,
    text_column: str = "text",
    output: str = "float16",
    pool_factor: int | None = None,
    keep_columns: Sequence[str] | None = None,
    progress: bool = False,
) -> pa.Table:
    """Encode a table's texts as documents: the kept columns (default: all but `text_column`), the vector
    columns and ``n_tokens``, in row order, with :func:`corpus_metadata` stamped on the schema."""
    return _encode_table(encoder, table, text_column, output, pool_factor, keep_columns, progress)


def _encode_table(encoder: ColbertEncoder, table: pa.Table, text_column: str, output: str, pool_factor: int | None,
                  keep_columns: Sequence[str] | None, progress: bool, first_row: int = 0) -> pa.Table:
    """encode_table of rows `first_row`.. of a file (errors name the file's rows)."""
    metadata = corpus_metadata(encoder, output, pool_factor)
    texts = _texts(table, text_column, first_row)
    kept = _kept(table, text_column, keep_columns)
    vectors = encoder.encode_documents(texts, output=output, pool_factor=metadata["pool_factor"], progress=progress)
    return _assemble(kept, documents_to_columns(vectors, output, encoder.dim), metadata)


def encode_query_table(
    encoder: ColbertEncoder,
    table: pa.Table,
    text_column: str = "text",
    output: str = "float32",
    keep_columns: Sequence[str] | None = None,
) -> pa.Table:
    """Encode a table's texts as queries (query_max_length vectors each, float32 or float16), as encode_table."""
    if output not in ("float32", "float16") and not is_muvera_output(output):
        raise InvalidInputError(f"query output must be float32, float16 or muvera, got {output!r}")
    metadata = corpus_metadata(encoder, output, None, input_type="query")
    texts = _texts(table, text_column)
    kept = _kept(table, text_column, keep_columns)
    if is_muvera_output(output):
        vectors = encoder.encode_queries(texts, output=output)
    else:
        vectors = [v.astype(output, copy=False) for v in encoder.encode_queries(texts)]
    return _assemble(kept, documents_to_columns(vectors, output, encoder.dim), metadata)


def _assemble(kept: pa.Table, columns: dict[str, pa.Array], metadata: Mapping[str, Any]) -> pa.Table:
    fields = multivector_fields(metadata["output"], metadata["dim"])
    schema = pa.schema(list(kept.schema) + fields)
    arrays = list(kept.columns) + [columns[f.name] for f in fields]
    return with_metadata(pa.Table.from_arrays(arrays, schema=schema), metadata)


def empty_table(metadata: Mapping[str, Any], source: pa.Schema | None = None, kept: Sequence[str] = ()) -> pa.Table:
    """A zero-row multivector table as `metadata` describes, after the `kept` columns of the `source` schema."""
    fields = [source.field(name) for name in kept] + multivector_fields(metadata["output"], metadata["dim"])
    return with_metadata(pa.schema(fields).empty_table(), metadata)


def _single_chunk(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The column as one Array: itself, the only chunk of a ChunkedArray, or (copying) its chunks joined."""
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 1:
            return column.chunk(0)
        return column.combine_chunks()
    return column


def _flat_values(column: pa.Array, dtype: type, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(vectors as a zero-copy numpy view, (n_docs + 1,) int64 offsets) of a list<fixed_size_list> column."""
    if column.null_count:
        raise InvalidInputError(f"{what} has {column.null_count} null documents")
    offsets = column.offsets.to_numpy().astype(np.int64)
    inner = column.flatten()  # honours the slice offset; no copy
    if pa.types.is_fixed_size_list(inner.type):
        width = inner.type.list_size
        values = inner.flatten().to_numpy(zero_copy_only=True).reshape(-1, width)
    else:
        values = inner.to_numpy(zero_copy_only=True)
    if values.dtype != dtype:
        raise InvalidInputError(f"{what} holds {values.dtype}, expected {np.dtype(dtype)}")
    return values, offsets - offsets[0]


def to_packed(data: pa.Table | pa.Array | pa.ChunkedArray, scales: pa.Array | pa.ChunkedArray | None = None
              ) -> PackedDocuments:
    """A multivector table (or its ``vectors`` column, plus ``scales`` for int8 codes) as PackedDocuments.

    float16/float32: the PackedDocuments arrays are views of the Arrow buffer, no copy (a column of
    several chunks, e.g. several Parquet row groups, is joined once first). int8: the scales are a
    view; the codes are rewritten once as the uint8 ``code + 128`` the integer kernel reads.
    Every document needs at least one vector (the encoder always keeps ``<s>``, marker and ``</s>``).
    """
    if isinstance(data, pa.Table):
        output = read_metadata(data)["output"]
        if is_muvera_output(output):
            raise InvalidInputError("a muvera table holds one encoding per row, not token vectors; use to_documents")
        if output in ("binary", "ubinary"):
            raise InvalidInputError(f"PackedDocuments holds float16, float32 or int8, not {output}; use to_documents")
        column = data[VECTORS]
        if output == "int8":
            scales = data[SCALES]
    else:
        column = data
    column = _single_chunk(column)
    value_type = column.type.value_type.value_type if pa.types.is_list(column.type) else None
    kinds = {pa.float16(): np.float16, pa.float32(): np.float32, pa.int8(): np.int8}
    if value_type not in kinds:
        raise InvalidInputError(
            f"to_packed needs a list<fixed_size_list<float16|float32|int8>> column, got {column.type}"
        )
    vectors, offsets = _flat_values(column, kinds[value_type], "vectors")
    if (np.diff(offsets) == 0).any():
        raise InvalidInputError("a document has no vectors; PackedDocuments needs at least one per document")
    if value_type != pa.int8():
        return PackedDocuments(vectors, offsets[:-1])
    if scales is None:
        raise InvalidInputError("int8 codes need their scales column")
    scale_values, scale_offsets = _flat_values(_single_chunk(scales), np.float32, "scales")
    if not np.array_equal(scale_offsets, offsets):
        raise InvalidInputError("scales do not line up with the vectors (one scale per vector)")
    return PackedDocuments(int8_codes_to_uint8(vectors), offsets[:-1], scale_values)


def to_documents(table: pa.Table) -> list[np.ndarray | QuantizedVectors]:
    """One entry per row, as ``encode_documents`` returns it for the table's output kind (numpy views)."""
    output = read_metadata(table)["output"]
    column = _single_chunk(table[VECTORS])
    if is_muvera_output(output):  # (rows, fde_dim) float32 view, one encoding per row
        return list(column.flatten().to_numpy(zero_copy_only=True).reshape(len(column), -1))
    dtype = {"float16": np.float16, "float32": np.float32, "int8": np.int8, "binary": np.int8, "ubinary": np.uint8}
    vectors, offsets = _flat_values(column, dtype[output], "vectors")
    if output == "int8":
        scales, _ = _flat_values(_single_chunk(table[SCALES]), np.float32, "scales")
        return [QuantizedVectors(vectors[a:b], scales[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return [vectors[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def parquet_options(output: str, kept_columns: Sequence[str] = (), **overrides: Any) -> dict[str, Any]:
    """``pq.write_table``/``ParquetWriter`` options measured smallest and fastest for `output` vectors.

    zstd everywhere; float vectors and int8 scales: no dictionary, BYTE_STREAM_SPLIT (the bytes of
    each value grouped by significance, so zstd finds the repetition in signs and exponents); int8
    codes and sign bits: dictionary (at most 256 values, so codes bit-pack to 8 bits instead of
    Parquet's 32-bit INT32 storage); no min/max statistics on vector columns. `kept_columns` (flat
    columns) keep dictionary and statistics. Figures: docs/scale-out.md ("Parquet options").
    """
    check_output_kind(output)
    kept = list(kept_columns)
    if is_muvera_output(output):  # float encodings: as float vectors, on the single-vector leaf
        options = {"compression": "zstd", "use_dictionary": kept, "write_statistics": kept,
                   "column_encoding": {f"{VECTORS}.list.{_ITEM}": "BYTE_STREAM_SPLIT"}}
        return {**options, **overrides}
    options: dict[str, Any] = {
        "compression": "zstd",
        "use_dictionary": kept + ([] if output in ("float16", "float32") else [VECTORS_LEAF]),
        "write_statistics": kept + [N_TOKENS],
    }
    if output in ("float16", "float32"):
        options["column_encoding"] = {VECTORS_LEAF: "BYTE_STREAM_SPLIT"}
    elif output == "int8":
        options["column_encoding"] = {SCALES_LEAF: "BYTE_STREAM_SPLIT"}
    return {**options, **overrides}


def kept_column_names(table: pa.Table | pa.Schema) -> list[str]:
    """The columns of a multivector table other than the vector columns."""
    names = table.schema.names if isinstance(table, pa.Table) else table.names
    return [n for n in names if n not in (VECTORS, SCALES, N_TOKENS)]


def write_parquet(table: pa.Table, path: str | Path, **overrides: Any) -> None:
    """Write a multivector table with :func:`parquet_options` (any ``pq.write_table`` option overrides)."""
    output = read_metadata(table)["output"]
    pq.write_table(table, path, **parquet_options(output, kept_column_names(table), **overrides))


def _reason(exc: BaseException) -> str:
    errno = getattr(exc, "errno", None)
    return os.strerror(errno) if errno else str(exc)


def open_parquet(source: str | Path) -> pq.ParquetFile:
    """`source` opened as a Parquet file; InvalidInputError naming it when it is missing or not Parquet."""
    try:
        return pq.ParquetFile(source)
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInputError(f"cannot read {source} as Parquet: {_reason(exc)}") from None


@contextmanager
def staged_output(source: str | Path, destination: str | Path) -> Iterator[Path]:
    """Where to write `destination`, the output made from `source`: a hidden temporary file in the output's
    folder, renamed onto `destination` (through a symlink) only when the block succeeds and removed otherwise,
    so a failure leaves no partial output and a file already at `destination` as it was.

    Refused first, before anything is opened (InvalidInputError): an output that is the input file itself,
    a folder, or in a folder that does not exist.
    """
    target = Path(os.path.realpath(destination))
    if os.path.exists(source) and target.exists():
        same = os.path.samefile(source, target)
    else:
        same = Path(os.path.realpath(source)) == target
    if same:
        raise InvalidInputError(f"the output {destination} is the input {source}: writing it would destroy the "
                                "input; name another output file")
    if target.is_dir():
        raise InvalidInputError(f"the output {destination} is a folder; name a file to write")
    if not target.parent.is_dir():
        raise InvalidInputError(f"the output {destination} is in a folder that does not exist ({target.parent})")
    staging = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        yield staging
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _batches(reader: pq.ParquetFile, source: str | Path, **options: Any) -> Iterator[pa.RecordBatch]:
    try:
        yield from reader.iter_batches(**options)
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInputError(f"cannot read {source} as Parquet: {_reason(exc)}") from None


def encode_parquet(
    encoder: ColbertEncoder,
    source: str | Path,
    destination: str | Path,
    text_column: str = "text",
    output: str = "float16",
    pool_factor: int | None = None,
    keep_columns: Sequence[str] | None = None,
    batch_rows: int = 1024,
    progress: bool = False,
) -> int:
    """One Parquet file of texts -> one multivector Parquet file, `batch_rows` rows at a time, in input order.

    Memory stays bounded by one batch; each batch becomes one row group. Returns the rows written. The file
    is written as :func:`staged_output` says (all or nothing; never onto `source`); errors name the row of
    `source` or the file that cannot be read or written.
    """
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InvalidInputError(f"batch_rows must be a positive int, got {batch_rows!r}")
    metadata = corpus_metadata(encoder, output, pool_factor)
    rows = 0
    try:
        with staged_output(source, destination) as staging:
            reader = open_parquet(source)
            schema = reader.schema_arrow
            kept = check_columns(schema, text_column, keep_columns)
            writer = pq.ParquetWriter(staging, empty_table(metadata, schema, kept).schema,
                                      **parquet_options(output, kept))
            with writer, progress_bar(progress, total=reader.metadata.num_rows, unit="doc", desc="encoding") as bar:
                columns = list(dict.fromkeys([text_column, *kept]))
                for batch in _batches(reader, source, batch_size=batch_rows, columns=columns):
                    table = _encode_table(encoder, pa.Table.from_batches([batch]), text_column, output,
                                          metadata["pool_factor"], kept, False, first_row=rows)
                    writer.write_table(table)
                    rows += table.num_rows
                    bar.update(table.num_rows)
    except OSError as exc:  # reading errors are InvalidInputErrors by now: this is the output
        raise InvalidInputError(f"cannot write {destination}: {_reason(exc)}") from None
    return rows


def _shard_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    for item in map(Path, items):
        out.extend(sorted(item.glob("*.parquet")) if item.is_dir() else [item])
    if not out:
        raise InvalidInputError(f"no Parquet shards in {paths}")
    return out


def check_metadata(
    metadata: Mapping[str, Any], expected: Mapping[str, Any], where: str, against: str, ignore: Sequence[str] = ()
) -> None:
    """ShardMetadataError naming every key (outside `ignore`) whose value differs between the two."""
    keys = sorted((set(metadata) | set(expected)) - set(ignore))
    diffs = [f"{k}={metadata.get(k)!r} vs {expected.get(k)!r}" for k in keys if metadata.get(k) != expected.get(k)]
    if diffs:
        raise ShardMetadataError(f"{where} does not match {against}: {'; '.join(diffs)}")


def read_shards(
    paths: str | Path | Sequence[str | Path],
    expect: Mapping[str, Any] | None = None,
    ignore: Sequence[str] = (),
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Read Parquet shards (files, or folders of ``*.parquet`` as Ray writes them) into one table.

    Every shard must carry colbert_onnx metadata equal to the first shard's and, for the keys given,
    to `expect` (e.g. ``{"dim": 128}`` or a :func:`corpus_metadata`); ``ignore`` lists keys not compared
    (e.g. ``["colbert_onnx_version"]`` to merge shards written by two releases). A difference raises
    ShardMetadataError naming the shard, the key and both values.
    """
    files = _shard_paths(paths)
    first = read_metadata(files[0])
    if expect is not None:
        check_metadata({k: first.get(k) for k in expect}, expect, str(files[0]), "the expected settings", ignore)
    for path in files[1:]:
        check_metadata(read_metadata(path), first, str(path), str(files[0]), ignore)
    tables = [pq.read_table(path, columns=columns) for path in files]
    return with_metadata(pa.concat_tables(tables), first)
