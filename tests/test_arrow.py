"""Multivector Arrow/Parquet columns (colbert_onnx.arrow): layout, metadata, zero-copy packing, shards. No Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="needs the arrow extra (pip install '.[arrow]')")
pq = pytest.importorskip("pyarrow.parquet", reason="needs the arrow extra (pip install '.[arrow]')")

from colbert_onnx import (  # noqa: E402
    ColbertEncoder,
    InvalidInputError,
    InvalidTextError,
    QuantizedVectors,
    __version__,
)
from colbert_onnx import arrow as ca  # noqa: E402
from colbert_onnx.cli import main  # noqa: E402
from colbert_onnx.packed import PackedDocuments  # noqa: E402

TEXTS = [
    "Berlin is the capital and largest city of Germany.",
    "",
    "   ",
    "!?!...,;",
    "Paris est la capitale de la France.",
    "東京は日本の首都です。",
    " ".join(["long"] * 700),
]


@pytest.fixture(scope="module")
def table():
    return pa.table({"id": list(range(100, 100 + len(TEXTS))), "text": TEXTS, "lang": ["x"] * len(TEXTS)})


@pytest.fixture(scope="module")
def expected(toy_encoder):
    return {kind: toy_encoder.encode_documents(TEXTS, output=kind) for kind in ca_kinds()}


def ca_kinds() -> tuple[str, ...]:
    return ("float16", "float32", "int8", "binary", "ubinary")


def _same(got, want) -> bool:
    if isinstance(want, QuantizedVectors):
        return np.array_equal(got.codes, want.codes) and np.array_equal(got.scales, want.scales)
    return got.dtype == want.dtype and np.array_equal(got, want)


@pytest.mark.parametrize(
    ("output", "value", "width"),
    [("float16", pa.float16(), 128), ("float32", pa.float32(), 128), ("int8", pa.int8(), 128),
     ("binary", pa.int8(), 16), ("ubinary", pa.uint8(), 16)],
)
def test_vectors_column_is_a_list_of_fixed_size_lists(toy_encoder, table, output, value, width) -> None:
    out = ca.encode_table(toy_encoder, table, output=output)
    vectors = out.schema.field("vectors").type
    assert pa.types.is_list(vectors) and pa.types.is_fixed_size_list(vectors.value_type)
    assert vectors.value_type.list_size == width and vectors.value_type.value_type == value
    assert out.schema.field("n_tokens").type == pa.int32()


@pytest.mark.parametrize("output", ca_kinds())
def test_encode_table_gives_the_vectors_of_encode_documents(toy_encoder, table, expected, output) -> None:
    out = ca.encode_table(toy_encoder, table, output=output)
    docs = ca.to_documents(out)
    assert len(docs) == len(TEXTS)
    assert all(_same(g, w) for g, w in zip(docs, expected[output], strict=True))
    assert out["n_tokens"].to_pylist() == [w.shape[0] for w in expected[output]]


def test_int8_form_stores_codes_and_one_float32_scale_per_vector(toy_encoder, table, expected) -> None:
    out = ca.encode_table(toy_encoder, table, output="int8")
    assert out.schema.field("scales").type == pa.list_(pa.field("element", pa.float32(), nullable=False))
    scales = out["scales"].to_pylist()
    assert [len(s) for s in scales] == out["n_tokens"].to_pylist()
    np.testing.assert_array_equal(np.array(scales[0], dtype=np.float32), expected["int8"][0].scales)


def test_other_columns_are_kept_by_default_and_keep_columns_selects(toy_encoder, table) -> None:
    assert ca.encode_table(toy_encoder, table).column_names == ["id", "lang", "vectors", "n_tokens"]
    picked = ca.encode_table(toy_encoder, table, keep_columns=["text", "id"])
    assert picked.column_names == ["text", "id", "vectors", "n_tokens"]
    assert picked["text"].to_pylist() == TEXTS


def test_every_table_carries_the_encoder_settings(toy_model_dir, table) -> None:
    encoder = ColbertEncoder(toy_model_dir, dim=96)
    out = ca.encode_table(encoder, table, output="int8", pool_factor=2)
    meta = json.loads(out.schema.metadata[b"colbert_onnx"])
    manifest = json.loads((toy_model_dir / "manifest.json").read_text())
    assert meta["model"] == manifest["model"]
    assert meta["backbone_sha256"] == manifest["graphs"][0]["backbone_sha256"]
    assert (meta["dim"], meta["precision"], meta["output"], meta["pool_factor"]) == (96, "fp32", "int8", 2)
    assert meta["colbert_onnx_version"] == __version__
    assert ca.read_metadata(out) == meta


def test_to_packed_float16_views_the_arrow_buffer_without_a_copy(toy_encoder, table) -> None:
    out = ca.encode_table(toy_encoder, table, output="float16")
    values = out["vectors"].chunk(0).flatten().flatten()
    allocated = pa.total_allocated_bytes()
    packed = ca.to_packed(out)
    assert pa.total_allocated_bytes() == allocated
    assert packed.vectors.ctypes.data == values.buffers()[1].address + values.offset * 2
    assert packed.vectors.dtype == np.float16 and not packed.vectors.flags.owndata


def test_to_packed_scores_as_packed_documents_from_list(toy_encoder, table, expected) -> None:
    queries = np.stack(toy_encoder.encode_queries(["capital of Germany", "cats"]))
    for output, dtype in (("float16", np.float16), ("float32", np.float32)):
        want = PackedDocuments.from_list(expected[output], dtype=dtype).scores(queries)
        np.testing.assert_array_equal(ca.to_packed(ca.encode_table(toy_encoder, table, output=output)).scores(queries),
                                      want)
    got = ca.to_packed(ca.encode_table(toy_encoder, table, output="int8"))
    want = PackedDocuments.from_list(expected["int8"])
    np.testing.assert_array_equal(got.vectors, want.vectors)
    np.testing.assert_array_equal(got.scales, want.scales)
    np.testing.assert_array_equal(got.offsets, want.offsets)


def test_to_packed_of_a_sliced_table_starts_at_the_slice(toy_encoder, table, expected) -> None:
    packed = ca.to_packed(ca.encode_table(toy_encoder, table).slice(4, 2))
    assert len(packed) == 2
    np.testing.assert_array_equal(packed[0], expected["float16"][4])
    np.testing.assert_array_equal(packed[1], expected["float16"][5])


def test_to_packed_refuses_sign_bits(toy_encoder, table) -> None:
    with pytest.raises(InvalidInputError, match="not ubinary"):
        ca.to_packed(ca.encode_table(toy_encoder, table, output="ubinary"))


@pytest.mark.parametrize("output", ca_kinds())
def test_parquet_round_trip_is_bit_identical(toy_encoder, table, expected, output, tmp_path) -> None:
    out = ca.encode_table(toy_encoder, table, output=output)
    ca.write_parquet(out, tmp_path / "v.parquet")
    back = pq.read_table(tmp_path / "v.parquet")
    assert back.schema.equals(out.schema, check_metadata=True)
    assert all(_same(g, w) for g, w in zip(ca.to_documents(back), expected[output], strict=True))


@pytest.mark.parametrize(("output", "vectors", "scales"), [("float16", "BYTE_STREAM_SPLIT", None),
                                                           ("int8", "RLE_DICTIONARY", "BYTE_STREAM_SPLIT")])
def test_parquet_files_use_the_measured_encodings(toy_encoder, table, output, vectors, scales, tmp_path) -> None:
    ca.write_parquet(ca.encode_table(toy_encoder, table, output=output), tmp_path / "v.parquet")
    group = pq.ParquetFile(tmp_path / "v.parquet").metadata.row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    assert vectors in columns[ca.VECTORS_LEAF].encodings
    assert columns[ca.VECTORS_LEAF].compression == "ZSTD"
    assert not columns[ca.VECTORS_LEAF].is_stats_set
    if scales:
        assert scales in columns[ca.SCALES_LEAF].encodings


def _shard(encoder, path, texts, **kwargs):
    ca.write_parquet(ca.encode_table(encoder, pa.table({"text": texts}), **kwargs), path)


def test_read_shards_joins_a_folder_of_shards(toy_encoder, tmp_path) -> None:
    _shard(toy_encoder, tmp_path / "a.parquet", TEXTS[:3])
    _shard(toy_encoder, tmp_path / "b.parquet", TEXTS[3:])
    joined = ca.read_shards(tmp_path)
    assert joined.num_rows == len(TEXTS)
    assert ca.read_metadata(joined) == ca.read_metadata(tmp_path / "a.parquet")


def test_read_shards_names_the_mismatched_setting(toy_model_dir, toy_encoder, tmp_path) -> None:
    _shard(toy_encoder, tmp_path / "a.parquet", TEXTS[:3])
    _shard(ColbertEncoder(toy_model_dir, dim=64), tmp_path / "b.parquet", TEXTS[3:])
    with pytest.raises(ca.ShardMetadataError, match=r"b\.parquet does not match .*a\.parquet: dim=64 vs 128"):
        ca.read_shards(tmp_path)


def test_read_shards_checks_expected_settings(toy_encoder, tmp_path) -> None:
    _shard(toy_encoder, tmp_path / "a.parquet", TEXTS[:3], output="int8")
    with pytest.raises(ca.ShardMetadataError, match="output='int8' vs 'float16'"):
        ca.read_shards(tmp_path, expect={"output": "float16"})


def test_read_shards_ignores_only_the_keys_named(toy_encoder, tmp_path) -> None:
    _shard(toy_encoder, tmp_path / "a.parquet", TEXTS[:3])
    other = ca.encode_table(toy_encoder, pa.table({"text": TEXTS[3:]}))
    meta = {**ca.read_metadata(other), "colbert_onnx_version": "0.0.1"}
    ca.write_parquet(ca.with_metadata(other, meta), tmp_path / "b.parquet")
    with pytest.raises(ca.ShardMetadataError, match="colbert_onnx_version"):
        ca.read_shards(tmp_path)
    assert ca.read_shards(tmp_path, ignore=["colbert_onnx_version"]).num_rows == len(TEXTS)


def test_a_shard_written_before_truncation_side_was_recorded_joins_right_cut_shards_only(toy_model_dir, toy_encoder,
                                                                                          tmp_path) -> None:
    old = ca.encode_table(toy_encoder, pa.table({"text": TEXTS[:3]}))
    meta = ca.read_metadata(old)
    del meta["truncation_side"]
    ca.write_parquet(ca.with_metadata(old, meta), tmp_path / "a.parquet")
    _shard(toy_encoder, tmp_path / "b.parquet", TEXTS[3:])
    assert ca.read_shards(tmp_path).num_rows == len(TEXTS)
    _shard(ColbertEncoder(toy_model_dir, truncation_side="left"), tmp_path / "c.parquet", TEXTS[3:])
    with pytest.raises(ca.ShardMetadataError, match="truncation_side='left' vs 'right'"):
        ca.read_shards(tmp_path)


def test_a_shard_without_metadata_is_refused(tmp_path) -> None:
    pq.write_table(pa.table({"vectors": [[1.0]]}), tmp_path / "plain.parquet")
    with pytest.raises(ca.ShardMetadataError, match="no colbert_onnx metadata"):
        ca.read_shards(tmp_path)


def test_null_texts_are_refused_naming_the_row(toy_encoder) -> None:
    with pytest.raises(InvalidInputError, match="1 nulls \\(first at row 1\\)"):
        ca.encode_table(toy_encoder, pa.table({"text": ["a", None]}))


def test_missing_or_non_string_text_column_is_refused(toy_encoder) -> None:
    with pytest.raises(InvalidInputError, match="no text column 'body'"):
        ca.encode_table(toy_encoder, pa.table({"text": ["a"]}), text_column="body")
    with pytest.raises(InvalidInputError, match="is int64, expected string"):
        ca.encode_table(toy_encoder, pa.table({"text": [1]}))


def test_keep_columns_that_would_be_overwritten_are_refused(toy_encoder) -> None:
    with pytest.raises(InvalidInputError, match="would be overwritten"):
        ca.encode_table(toy_encoder, pa.table({"text": ["a"], "n_tokens": [3]}))


def test_encode_parquet_streams_batches_in_input_order(toy_encoder, table, expected, tmp_path) -> None:
    pq.write_table(table, tmp_path / "in.parquet")
    assert ca.encode_parquet(toy_encoder, tmp_path / "in.parquet", tmp_path / "out.parquet", batch_rows=3) == len(TEXTS)
    back = pq.read_table(tmp_path / "out.parquet")
    assert back["id"].to_pylist() == table["id"].to_pylist()
    assert back["vectors"].num_chunks == 3
    assert all(_same(g, w) for g, w in zip(ca.to_documents(back), expected["float16"], strict=True))


def test_encode_parquet_of_no_rows_writes_the_schema_and_settings(toy_encoder, tmp_path) -> None:
    empty = pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())})
    pq.write_table(empty, tmp_path / "e.parquet")
    assert ca.encode_parquet(toy_encoder, tmp_path / "e.parquet", tmp_path / "out.parquet") == 0
    back = pq.read_table(tmp_path / "out.parquet")
    assert back.num_rows == 0 and back.column_names == ["id", "vectors", "n_tokens"]
    assert ca.read_metadata(back)["dim"] == 128


def test_encode_table_names_the_row_of_a_refused_text(toy_encoder) -> None:
    with pytest.raises(InvalidTextError, match=r"^text column 'text', row 1 holds a NUL character"):
        ca.encode_table(toy_encoder, pa.table({"text": ["a", "b\x00c"]}))


def test_encode_parquet_names_the_file_row_of_a_refused_text(toy_encoder, tmp_path) -> None:
    pq.write_table(pa.table({"text": ["a", "b", "c", "d", "e\x00", "f"]}), tmp_path / "in.parquet")
    with pytest.raises(InvalidTextError, match=r"^text column 'text', row 4 holds a NUL character"):
        ca.encode_parquet(toy_encoder, tmp_path / "in.parquet", tmp_path / "out.parquet", batch_rows=2)


def test_encode_parquet_names_the_file_row_of_a_null_text(toy_encoder, tmp_path) -> None:
    pq.write_table(pa.table({"text": ["a", "b", "c", "d", None, "f"]}), tmp_path / "in.parquet")
    with pytest.raises(InvalidInputError, match=r"1 nulls \(first at row 4\)"):
        ca.encode_parquet(toy_encoder, tmp_path / "in.parquet", tmp_path / "out.parquet", batch_rows=2)


def _bad_third_row(folder) -> None:
    pq.write_table(pa.table({"text": ["good one", "also good", "bad\x00row", "never reached"]}), folder / "in.parquet")


def test_a_failed_encode_parquet_leaves_no_output(toy_encoder, tmp_path) -> None:
    _bad_third_row(tmp_path)
    with pytest.raises(InvalidTextError):
        ca.encode_parquet(toy_encoder, tmp_path / "in.parquet", tmp_path / "out.parquet", batch_rows=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_a_failed_encode_parquet_leaves_an_existing_output_as_it_was(toy_encoder, tmp_path) -> None:
    _bad_third_row(tmp_path)
    (tmp_path / "out.parquet").write_bytes(b"earlier output")
    with pytest.raises(InvalidTextError):
        ca.encode_parquet(toy_encoder, tmp_path / "in.parquet", tmp_path / "out.parquet", batch_rows=1)
    assert (tmp_path / "out.parquet").read_bytes() == b"earlier output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "out.parquet"]


def test_encode_parquet_refuses_to_write_over_its_input(toy_encoder, table, tmp_path) -> None:
    pq.write_table(table, tmp_path / "in.parquet")
    with pytest.raises(InvalidInputError, match="is the input"):
        ca.encode_parquet(toy_encoder, tmp_path / "in.parquet", tmp_path / "in.parquet")
    assert pq.read_table(tmp_path / "in.parquet").equals(table)


def test_cli_encode_parquet_writes_the_multivector_file(toy_model_dir, table, tmp_path, capsys) -> None:
    pq.write_table(table, tmp_path / "in.parquet")
    argv = ["encode-parquet", str(toy_model_dir), str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"),
            "--dim", "64", "--output", "int8", "--keep-columns", "id"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == len(TEXTS)
    back = pq.read_table(tmp_path / "out.parquet")
    assert back.column_names == ["id", "vectors", "scales", "n_tokens"]
    want = ColbertEncoder(toy_model_dir, dim=64).encode_documents(TEXTS, output="int8")
    assert all(_same(g, w) for g, w in zip(ca.to_documents(back), want, strict=True))


def test_cli_encode_parquet_reports_a_missing_text_column(toy_model_dir, table, tmp_path, capsys) -> None:
    pq.write_table(table, tmp_path / "in.parquet")
    argv = ["encode-parquet", str(toy_model_dir), str(tmp_path / "in.parquet"), str(tmp_path / "o.parquet"),
            "--text-column", "body"]
    assert main(argv) == 2
    assert "no text column 'body'" in capsys.readouterr().err


def test_importing_the_package_loads_neither_pyarrow_nor_ray() -> None:
    import subprocess
    import sys

    code = ("import sys, colbert_onnx, colbert_onnx.cli, colbert_onnx.ray; "
            "assert not {'pyarrow', 'ray'} & set(sys.modules), sorted({'pyarrow', 'ray'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
