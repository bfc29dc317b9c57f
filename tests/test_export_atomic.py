"""An export never leaves a half-made folder, nor destroys a good one; an explicit int8 method is honored."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="exporting is part of the [export] extra")
from safetensors.torch import load_file, save_file  # noqa: E402

import colbert_onnx.export.fidelity as fidelity  # noqa: E402
import colbert_onnx.export.precisions as precisions  # noqa: E402
from colbert_onnx import ColbertEncoder  # noqa: E402
from colbert_onnx.errors import FidelityWarning  # noqa: E402
from colbert_onnx.export import CheckpointError, ParityError, export_model  # noqa: E402

TEXTS = ["Berlin has 3.8 million inhabitants.", "Paris is the capital of France."]


def _snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _vectors(folder: Path) -> list[np.ndarray]:
    enc = ColbertEncoder(folder, dim=64)
    return enc.encode_queries(TEXTS) + enc.encode_documents(TEXTS)


@pytest.fixture()
def previous(toy_model_dir, tmp_path) -> dict:
    """A good model folder at `out`, its file hashes and vectors, before a failing export over it."""
    out = shutil.copytree(toy_model_dir, tmp_path / "models" / "jcv2")
    return {"out": out, "files": _snapshot(out), "vectors": _vectors(out)}


def _assert_intact(previous: dict) -> None:
    out = previous["out"]
    assert _snapshot(out) == previous["files"]
    for a, b in zip(_vectors(out), previous["vectors"], strict=True):
        np.testing.assert_array_equal(a, b)
    leftovers = [p.name for p in out.parent.iterdir() if p != out]
    assert leftovers == [], f"the failed export left {leftovers} beside the folder"


def test_a_checkpoint_missing_a_tensor_leaves_the_previous_folder_intact(previous, toy_trio, tmp_path):
    broken = shutil.copytree(toy_trio[64], tmp_path / "broken-64")
    tensors = load_file(str(broken / "model.safetensors"))
    tensors.pop("roberta.encoder.layers.1.mlp.fc2.bias")
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"layers\.1\.mlp\.fc2\.bias"):
        export_model([toy_trio[128], broken], previous["out"], precisions="fp32", check_parity=False)
    _assert_intact(previous)


def test_a_quantizer_that_raises_leaves_the_previous_folder_intact(previous, toy_trio, monkeypatch):
    def explode(model, dst, *args, **kwargs):
        Path(dst).write_bytes(b"half a graph")
        raise RuntimeError("quantizer exploded")

    monkeypatch.setattr(precisions, "quantize_int8", explode)
    with pytest.raises(RuntimeError, match="quantizer exploded") as info:
        export_model([toy_trio[64]], previous["out"], precisions="fp32,int8", check_parity=False)
    assert any("nothing was written" in note and "unchanged" in note for note in getattr(info.value, "__notes__", []))
    _assert_intact(previous)


def test_a_parity_miss_leaves_the_previous_folder_intact(previous, toy_trio):
    with pytest.raises(ParityError):
        export_model([toy_trio[64]], previous["out"], precisions="fp32", parity_tolerance=1e-12)
    _assert_intact(previous)


def test_a_full_disk_leaves_the_previous_folder_intact(previous, toy_trio, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(precisions, "convert_fp16", full)
    with pytest.raises(OSError, match="No space left"):
        export_model([toy_trio[64]], previous["out"], precisions="fp32,fp16", check_parity=False)
    _assert_intact(previous)


def test_ctrl_c_leaves_the_previous_folder_intact(previous, toy_trio, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(precisions, "optimize_fp32", interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_model([toy_trio[64]], previous["out"], precisions="fp32", check_parity=False)
    _assert_intact(previous)


def test_a_failed_first_export_leaves_no_folder(toy_trio, tmp_path):
    with pytest.raises(ParityError):
        export_model([toy_trio[64]], tmp_path / "new", precisions="fp32", parity_tolerance=1e-12)
    assert list(tmp_path.iterdir()) == []


def test_a_successful_export_replaces_the_previous_folder_whole(previous, toy_trio):
    stale = previous["out"] / "model-int8.onnx"
    assert stale.is_file()
    export_model([toy_trio[64]], previous["out"], precisions="fp32", check_parity=False)
    manifest = json.loads((previous["out"] / "manifest.json").read_text())
    assert manifest["heads"] == [64] and not stale.exists()
    assert [p.name for p in previous["out"].parent.iterdir()] == ["jcv2"]


def test_a_folder_that_is_not_a_model_folder_is_never_replaced(toy_trio, tmp_path):
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    with pytest.raises(CheckpointError, match="refusing to replace"):
        export_model([toy_trio[64]], mine, precisions="fp32", check_parity=False)
    assert (mine / "thesis.txt").read_text() == "years of work" and len(list(mine.iterdir())) == 1


def test_an_empty_folder_is_filled(toy_trio, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    export_model([toy_trio[64]], empty, precisions="fp32", check_parity=False)
    assert (empty / "manifest.json").is_file()


@pytest.fixture()
def impossible_int8_gate(monkeypatch):
    """No int8 graph can pass: min token cosine above 1."""
    monkeypatch.setitem(fidelity.GATES, "int8", {**fidelity.GATES["int8"], "min_token_cosine": 1.01})


def test_an_explicit_int8_method_is_written_as_asked_with_a_warning(toy_trio, tmp_path, impossible_int8_gate):
    with pytest.warns(FidelityWarning, match=r"int8 head 64 missed the fidelity gates \(int8 head 64: "
                                             r"min_token_cosine [0-9.]+ < 1\.01"):
        out = export_model([toy_trio[64]], tmp_path / "explicit", precisions="fp32,int8",
                           int8_method="smooth-per-token", engines="onnxruntime")
    (int8,) = [g for g in json.loads((out / "manifest.json").read_text())["graphs"] if g["precision"] == "int8"]
    assert int8["method"] == "smooth-per-token" and int8["method_chosen_by"] == "user"
    assert "instead_of" not in int8 and int8["fidelity"]["64"]["passed"] is False


def test_the_default_int8_method_is_recorded_as_the_default(toy_model_dir):
    manifest = json.loads((toy_model_dir / "manifest.json").read_text())
    (int8,) = [g for g in manifest["graphs"] if g["precision"] == "int8"]
    assert int8["method_chosen_by"] == "default" and all(m["passed"] for m in int8["fidelity"].values())
