"""Staging folders a killed export left (`.NAME.partial-*`) are removed by the next export of NAME when their owner is
provably dead, and only then (export/staging.py; docs/export.md, "Atomic export")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="exporting is part of the [export] extra")
import colbert_onnx.export.exporter as exporter  # noqa: E402
from colbert_onnx import ColbertEncoder  # noqa: E402
from colbert_onnx.export import export_model  # noqa: E402
from colbert_onnx.export.staging import OWNER_FILE, OWNER_FORMAT, _this_process  # noqa: E402

HAS_PROC = Path("/proc/self/stat").exists()


class _Stopped(Exception):
    """Raised in place of the export's work: the tests below only need what happens before it."""


@pytest.fixture()
def out(tmp_path) -> Path:
    (tmp_path / "models").mkdir()
    return tmp_path / "models" / "jcv2"


def _owner(out: Path, **changes) -> dict:
    """An owner record as make_staging writes it, of this process unless `changes` say otherwise."""
    return {"format": OWNER_FORMAT, "out": out.name, **_this_process(), "created": "2026-01-01T00:00:00+00:00",
            **changes}


def _leftover(out: Path, owner: dict | None, name: str | None = None) -> Path:
    """A staging folder of `out` as a killed export leaves it: some graph bytes, a subfolder, its owner record."""
    if name is None:
        folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    else:
        folder = out.parent / name
        folder.mkdir()
    (folder / "model.onnx").write_bytes(b"\1" * 3000)
    (folder / "openvino").mkdir()
    (folder / "openvino" / "model.bin").write_bytes(b"\2" * 1000)
    if owner is not None:
        (folder / OWNER_FILE).write_text(json.dumps(owner), encoding="utf-8")
    return folder


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


def _next_export(toy_trio, out: Path, monkeypatch) -> list[str]:
    """Run an export of `out` until its own staging folder exists, and stop it there (its work is not what these
    tests check); returns the warnings it gave."""
    def stop(staging, *args, **kwargs):
        raise _Stopped

    monkeypatch.setattr(exporter, "_export_into", stop)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(_Stopped):
        warnings.simplefilter("always")
        export_model([toy_trio[64]], out, precisions="fp32", check_parity=False, engines="onnxruntime")
    return [str(w.message) for w in caught]


def _export(toy_trio, out: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_model([toy_trio[64]], out, precisions="fp32", check_parity=False, engines="onnxruntime")
    return [str(w.message) for w in caught]


def _assert_good_model_folder(out: Path) -> None:
    assert json.loads((out / "manifest.json").read_text())["heads"] == [64]
    assert not (out / OWNER_FILE).exists()
    (vectors,) = ColbertEncoder(out, dim=64).encode_queries(["Berlin has 3.8 million inhabitants."])
    assert vectors.shape[1] == 64


def test_a_staging_folder_owned_by_a_dead_process_is_removed_by_the_next_export(toy_trio, out):
    left = _leftover(out, _owner(out, pid=_dead_pid()))
    size = sum(p.stat().st_size for p in left.rglob("*") if p.is_file())
    said = _export(toy_trio, out)
    assert not left.exists()
    assert [p.name for p in out.parent.iterdir()] == ["jcv2"]
    _assert_good_model_folder(out)
    (line,) = [m for m in said if m.startswith("removed ")]
    assert str(left) in line and f"{size} bytes freed" in line


def test_the_staging_folder_records_its_owner_first(toy_trio, out, monkeypatch):
    seen = {}

    def look(staging, *args, **kwargs):
        seen.update(json.loads((staging / OWNER_FILE).read_text()))
        raise _Stopped

    monkeypatch.setattr(exporter, "_export_into", look)
    with pytest.raises(_Stopped):
        export_model([toy_trio[64]], out, precisions="fp32", check_parity=False)
    here = _this_process()
    assert seen["pid"] == os.getpid() and seen["hostname"] == here["hostname"] and seen["out"] == "jcv2"
    assert seen["start_time"] == here["start_time"] and (seen["start_time"] is not None) == HAS_PROC
    assert list(out.parent.iterdir()) == []  # the failed export removed its own


def test_a_staging_folder_owned_by_a_live_process_is_kept(toy_trio, out, monkeypatch):
    left = _leftover(out, _owner(out))  # this test process: a concurrent export of the same folder
    said = _next_export(toy_trio, out, monkeypatch)
    assert (left / "model.onnx").is_file() and (left / OWNER_FILE).is_file()
    assert not [m for m in said if str(left) in m]


@pytest.mark.skipif(not HAS_PROC, reason="the process start time comes from /proc")
def test_a_staging_folder_whose_pid_now_belongs_to_another_process_is_removed(toy_trio, out, monkeypatch):
    here = _this_process()
    left = _leftover(out, _owner(out, start_time=here["start_time"] - 1))  # a live pid, started at another time
    said = _next_export(toy_trio, out, monkeypatch)
    assert not left.exists()
    assert any(m.startswith("removed 1 staging folder") and str(left) in m for m in said)


def test_a_staging_folder_made_on_another_host_is_kept(toy_trio, out, monkeypatch):
    left = _leftover(out, _owner(out, pid=_dead_pid(), hostname="another-host.example"))
    _next_export(toy_trio, out, monkeypatch)
    assert (left / "model.onnx").is_file() and (left / OWNER_FILE).is_file()


def test_a_staging_folder_without_an_owner_record_is_kept_and_named_with_its_size(toy_trio, out, monkeypatch):
    left = _leftover(out, None)  # an older colbert-onnx's, or not an export's
    said = _next_export(toy_trio, out, monkeypatch)
    assert (left / "model.onnx").is_file()
    (line,) = [m for m in said if str(left) in m]
    assert "kept" in line and "3.9 KiB" in line and "no owner record" in line


def test_what_is_not_a_staging_folder_of_this_name_is_untouched(toy_trio, out, monkeypatch, tmp_path):
    dead = _dead_pid()
    others = [
        _leftover(out, _owner(out, pid=dead), name=".other.partial-abcd1234"),  # another model's
        _leftover(out, _owner(out, pid=dead), name="jcv2.partial-abcd1234"),  # no leading dot
        _leftover(out, _owner(out, pid=dead), name=".jcv2.partial-abcd1234.bak"),
        _leftover(out, _owner(out, pid=dead), name=".jcv2.partial-x"),  # not what mkdtemp makes
    ]
    a_file = out.parent / ".jcv2.partial-efgh5678"
    a_file.write_text("not a folder")
    target = _leftover(out, _owner(out, pid=dead), name="elsewhere")
    link = out.parent / ".jcv2.partial-link0001"
    link.symlink_to(target, target_is_directory=True)
    before = sorted(str(p.relative_to(out.parent)) for p in out.parent.rglob("*"))
    _next_export(toy_trio, out, monkeypatch)
    assert sorted(str(p.relative_to(out.parent)) for p in out.parent.rglob("*")) == before
    assert a_file.read_text() == "not a folder" and link.is_symlink() and all(p.is_dir() for p in others)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX")
def test_a_staging_folder_left_by_a_sigkilled_export_is_removed_by_the_next_export(toy_trio, out):
    code = ("from colbert_onnx.export import export_model\n"
            f"export_model([{str(toy_trio[64])!r}], {str(out)!r}, precisions='fp32', check_parity=False,"
            " engines='onnxruntime')\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while not (owned := list(out.parent.glob(f".jcv2.partial-*/{OWNER_FILE}"))):
            assert child.poll() is None, "the export ended before its staging folder was seen"
            assert time.monotonic() < deadline, "no staging folder within 120 s"
            time.sleep(0.01)
    finally:
        child.kill()  # SIGKILL
        child.wait(timeout=60)
    (left,) = [p.parent for p in owned]
    assert left.is_dir() and not out.exists(), "the kill came too late to leave a staging folder"
    said = _export(toy_trio, out)
    assert not left.exists() and [p.name for p in out.parent.iterdir()] == ["jcv2"]
    _assert_good_model_folder(out)
    assert any(m.startswith("removed 1 staging folder") and str(left) in m for m in said)
