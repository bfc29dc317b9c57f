"""A graph file is the one its folder's export wrote, or the folder does not open (runtime/model_folder.py).

Two checkpoints of the same class (same architecture, other seed) give graphs of the same size with other weights; a
graph copied from one folder into the other passed the size check and served the other model's vectors silently.
Every graph entry now carries a fingerprint (its size and 32 sampled 4 KiB blocks), checked at every open.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="exporting is part of the [export] extra")

from folder_edits import unfingerprint  # noqa: E402

from colbert_onnx import ColbertEncoder  # noqa: E402
from colbert_onnx.errors import ModelFolderError  # noqa: E402
from colbert_onnx.manifest import read_manifest  # noqa: E402
from colbert_onnx.model_folder import graph_files, graph_fingerprint  # noqa: E402

REFUSED = "not the graph this folder's export wrote"


@pytest.fixture(scope="module", params=[1, 2], ids=lambda seed: f"seed {seed}")
def sibling_export(request, tmp_path_factory) -> Path:
    """The toy trio's architecture with other weights (seed 1, 2), exported at fp32 and int8."""
    from colbert_onnx.export import export_model, make_toy_trio

    trio = make_toy_trio(tmp_path_factory.mktemp(f"sibling-{request.param}"), seed=request.param)
    return export_model([trio[d] for d in (128, 96, 64)], tmp_path_factory.mktemp("sibling-onnx") / "out",
                        precisions="fp32,int8", engines="onnxruntime")


def test_every_graph_of_an_export_carries_the_fingerprint_of_its_files(toy_model_dir: Path) -> None:
    manifest = read_manifest(toy_model_dir)
    for entry in (*manifest.graphs, *manifest.engine_graphs):
        assert entry.fingerprint == graph_fingerprint(graph_files(toy_model_dir, entry)), entry.file


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_graph_of_another_checkpoint_of_the_same_size_is_refused_at_open(toy_model_dir, sibling_export, tmp_path,
                                                                           precision) -> None:
    folder = Path(shutil.copytree(toy_model_dir, tmp_path / "mixed"))
    ours = next(g for g in read_manifest(folder).graphs if g.precision == precision)
    theirs = next(g for g in read_manifest(sibling_export).graphs if g.precision == precision)
    if theirs.bytes != ours.bytes:
        pytest.skip(f"the seeds' {precision} graphs differ in size ({theirs.bytes} vs {ours.bytes}): the size check "
                    "refuses them, not the fingerprint")
    shutil.copyfile(sibling_export / theirs.file, folder / ours.file)
    with pytest.raises(ModelFolderError, match=REFUSED):
        ColbertEncoder(folder, precision=precision, engine="onnxruntime")


def test_a_byte_changed_inside_a_sampled_block_is_refused_at_open(toy_model_dir, tmp_path) -> None:
    folder = Path(shutil.copytree(toy_model_dir, tmp_path / "changed"))
    graph = folder / read_manifest(folder).graphs[0].file
    data = bytearray(graph.read_bytes())
    data[-100] ^= 0xFF  # the last block is always sampled
    graph.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match=REFUSED):
        ColbertEncoder(folder)


def test_a_folder_exported_before_fingerprints_existed_still_opens(toy_model_dir, tmp_path) -> None:
    folder = Path(shutil.copytree(toy_model_dir, tmp_path / "older"))
    unfingerprint(folder)
    assert "fingerprint" not in (folder / "manifest.json").read_text()
    assert ColbertEncoder(folder).encode_queries(["a query"])[0].shape == (32, 128)
