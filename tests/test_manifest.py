"""The typed manifest (runtime/manifest.py): lossless for format 1, version-checked, and the source of the
conventions the runtime applies (markers, query padding, lengths, model name)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from colbert_onnx import ColbertEncoder, ModelFolderError, TokenizerMismatchError
from colbert_onnx.manifest import Manifest, read_manifest, write_manifest
from colbert_onnx.scoring import kernel_file

# manifest.json of the toy trio as the exporter wrote it before manifest.py existed (2026-12-01; paths shortened).
V1_MANIFEST = Path(__file__).parent / "data" / "manifest-v1-2026-12-01.json"


def _edited_folder(toy_model_dir: Path, tmp_path: Path, edit) -> Path:
    folder = shutil.copytree(toy_model_dir, tmp_path / "edited")
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_manifest_of_the_earlier_exporter_round_trips_unchanged() -> None:
    data = json.loads(V1_MANIFEST.read_text())
    manifest = Manifest.from_dict(data)
    assert manifest.to_dict() == data
    assert manifest.query.marker == "[QueryMarker]" and manifest.document.max_length == 8192
    assert {g.precision for g in manifest.graphs} == {"fp32", "int8", "fp16"}


def test_keys_this_version_does_not_know_are_written_back() -> None:
    data = json.loads(V1_MANIFEST.read_text())
    data["added_later"] = {"x": 1}
    data["graphs"][0]["new_record"] = [1, 2]
    data["query"]["new_setting"] = True
    assert Manifest.from_dict(data).to_dict() == data


def test_write_then_read_gives_the_same_manifest(tmp_path: Path) -> None:
    manifest = Manifest.from_dict(json.loads(V1_MANIFEST.read_text()))
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert not (tmp_path / "manifest.json.tmp").exists()


def test_an_unknown_format_version_is_a_clear_model_folder_error(toy_model_dir: Path, tmp_path: Path) -> None:
    folder = _edited_folder(toy_model_dir, tmp_path, lambda m: m.update(format_version=2))
    with pytest.raises(ModelFolderError, match="format_version 2; this colbert-onnx reads format_version 1"):
        ColbertEncoder(folder)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.pop("vocab_size"), "missing the key 'vocab_size'"),
    (lambda m: m["query"].pop("marker"), "missing the key 'query.marker'"),
    (lambda m: m["document"].update(max_length="long"), "document.max_length is 'long'"),
    (lambda m: m["graphs"][0].update(bytes=True), r"graphs\[0\].bytes is True"),
])
def test_a_missing_or_mistyped_key_is_named(toy_model_dir: Path, tmp_path: Path, edit, message: str) -> None:
    folder = _edited_folder(toy_model_dir, tmp_path, edit)
    with pytest.raises(ModelFolderError, match=message):
        ColbertEncoder(folder)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["special_ids"].update(pad=-1), "special_ids.pad is -1, below 0"),
    (lambda m: m["query"].update(max_length=2), "query.max_length is 2, below 4"),
    (lambda m: m["document"].update(max_length=3), "document.max_length is 3, below 4"),
    (lambda m: m["query"].update(max_length=20000), "query.max_length is 20000, more than the 8194 positions"),
    (lambda m: m["document"].update(max_length=20000), "document.max_length is 20000, more than the 8194"),
    (lambda m: m["graphs"][0].update(outputs={}), r"graphs\[0\].outputs is empty: the graph serves no head"),
], ids=["negative-pad", "query-2", "document-3", "query-over-positions", "document-over-positions", "no-heads"])
def test_a_value_the_model_cannot_have_is_the_folders_error_naming_the_key(toy_model_dir: Path, tmp_path: Path,
                                                                           edit, message: str) -> None:
    folder = _edited_folder(toy_model_dir, tmp_path, edit)
    with pytest.raises(ModelFolderError, match=message):
        ColbertEncoder(folder)


@pytest.mark.parametrize(("outputs", "message"), [
    ({"128": "vectors_999", "96": "vectors_96", "64": "vectors_64"},
     "output 'vectors_999' for head 128, which .*model.onnx does not have"),
    ({"128": "vectors_64", "96": "vectors_96", "64": "vectors_128"},
     "output 'vectors_64' of .*model.onnx gives 64-dim vectors, but the manifest serves it as head 128"),
], ids=["unknown-output", "swapped-heads"])
def test_a_graph_that_is_not_what_the_manifest_says_fails_when_the_folder_opens(toy_model_dir: Path, tmp_path: Path,
                                                                               outputs, message) -> None:
    folder = _edited_folder(toy_model_dir, tmp_path, lambda m: m["graphs"][0].update(outputs=outputs))
    with pytest.raises(ModelFolderError, match=message):
        ColbertEncoder(folder, engine="onnxruntime")


def test_a_graph_file_of_another_kind_fails_when_the_folder_opens(toy_model_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(toy_model_dir, tmp_path / "other-graph")
    (folder / "model.onnx").write_bytes(base64.b64decode(kernel_file("float32").read_bytes()))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["graphs"][0]["bytes"] = (folder / "model.onnx").stat().st_size
    manifest["graphs"][0].pop("fingerprint")  # as exported before fingerprints: the graph's signature is checked too
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="takes .*not input_ids, attention_mask"):
        ColbertEncoder(folder, engine="onnxruntime")


def test_a_marker_the_tokenizer_lacks_is_a_tokenizer_mismatch(toy_model_dir: Path, tmp_path: Path) -> None:
    folder = _edited_folder(toy_model_dir, tmp_path, lambda m: m["document"].update(marker="[NoSuchMarker]"))
    with pytest.raises(TokenizerMismatchError, match=r"no '\[NoSuchMarker\]' token.*document marker"):
        ColbertEncoder(folder)


def test_a_marker_with_another_id_than_exported_is_a_tokenizer_mismatch(toy_model_dir: Path, tmp_path: Path) -> None:
    folder = _edited_folder(toy_model_dir, tmp_path, lambda m: m["query"].update(marker="<unk>"))
    with pytest.raises(TokenizerMismatchError, match="'<unk>' id 3, but the graph was exported with id"):
        ColbertEncoder(folder)


def test_the_query_length_comes_from_the_manifest(toy_model_dir: Path, tmp_path: Path) -> None:
    folder = _edited_folder(toy_model_dir, tmp_path, lambda m: m["query"].update(max_length=16))
    (vectors,) = ColbertEncoder(folder).encode_queries(["Berlin"])
    assert vectors.shape == (16, 128)


def test_the_model_name_comes_from_the_manifest(toy_model_dir: Path, tmp_path: Path, capsys) -> None:
    from colbert_onnx.cli import main

    folder = _edited_folder(toy_model_dir, tmp_path, lambda m: m.update(model="my-colbert"))
    assert main(["rerank", str(folder), "--query", "Berlin", "-d", "Berlin"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "my-colbert"


@pytest.fixture(scope="module")
def other_markers_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ColBERT-style toy whose tokenizer and artifact.metadata use `[Q]` / `[D]`, exported (fp32, head 128)."""
    pytest.importorskip("torch", reason="generating and exporting a toy needs the [export] extra (torch)")
    from colbert_onnx.export import export_model, make_toy_trio

    work = tmp_path_factory.mktemp("other-markers")
    trio = make_toy_trio(work / "checkpoint", dims=(128,), markers=("[Q]", "[D]"))
    return export_model([trio[128]], work / "onnx", precisions="fp32")


def test_a_checkpoint_with_other_marker_strings_exports_loads_and_encodes(other_markers_folder: Path) -> None:
    manifest = read_manifest(other_markers_folder)
    assert (manifest.query.marker, manifest.document.marker) == ("[Q]", "[D]")
    encoder = ColbertEncoder(other_markers_folder)
    tokenizer = encoder.preprocessor.tokenizer
    query = encoder.tokenize(["Berlin"], "query").ids[0]
    document = encoder.tokenize(["Berlin"], "document").ids[0]
    assert query[1] == tokenizer.token_to_id("[Q]") and document[1] == tokenizer.token_to_id("[D]")
    assert tokenizer.token_to_id("[QueryMarker]") is None
    assert encoder.encode_queries(["Berlin"])[0].shape == (32, 128)
    assert manifest.parity["fp32"]["128"]["passed"]


def test_the_toy_with_default_markers_writes_jinas_strings(toy_model_dir: Path) -> None:
    manifest = read_manifest(toy_model_dir)
    assert (manifest.query.marker, manifest.document.marker, manifest.query.pad_token) == (
        "[QueryMarker]", "[DocumentMarker]", "<mask>")
