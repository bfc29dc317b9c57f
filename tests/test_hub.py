"""Hub support without network: from_pretrained via a fake HF cache, push via a patched HfApi."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from colbert_onnx import ColbertEncoder, ModelFolderError
from colbert_onnx.hub import push_to_hub, resolve_model_folder

huggingface_hub = pytest.importorskip("huggingface_hub", reason="hub support needs huggingface_hub ([hub] extra)")

SHA = "0123456789abcdef0123456789abcdef01234567"
# Port 9 (discard) on loopback: connections are refused at once, nothing leaves the machine.
DEAD_ENDPOINT = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any in-process attempt to open a connection."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    from huggingface_hub import constants

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(constants, "ENDPOINT", DEAD_ENDPOINT)


def _fake_cache(root: Path, model_dir: Path, repo: str = "org/name") -> Path:
    """An HF hub cache holding `model_dir` as `repo` at revision main (blobs + snapshot symlinks)."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(SHA)
    snapshot = repo_dir / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    (repo_dir / "blobs").mkdir()
    for f in model_dir.iterdir():
        blob = repo_dir / "blobs" / f"blob-{f.name}"
        blob.write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    return root


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_ENDPOINT": DEAD_ENDPOINT, **env}
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120)


def test_from_pretrained_loads_a_local_folder(toy_model_dir: Path) -> None:
    assert ColbertEncoder.from_pretrained(toy_model_dir).folder.path == toy_model_dir


def test_from_pretrained_forwards_encoder_arguments(toy_model_dir: Path) -> None:
    assert ColbertEncoder.from_pretrained(str(toy_model_dir), dim=64).dim == 64


def test_from_pretrained_finds_hub_id_in_cache_dir(toy_model_dir: Path, tmp_path: Path) -> None:
    cache = _fake_cache(tmp_path / "hub", toy_model_dir)
    encoder = ColbertEncoder.from_pretrained("org/name", cache_dir=cache, local_files_only=True, dim=96)
    assert encoder.folder.path == cache / "models--org--name" / "snapshots" / SHA and encoder.dim == 96


def test_from_pretrained_works_offline_from_hf_hub_cache(toy_model_dir: Path, tmp_path: Path) -> None:
    cache = _fake_cache(tmp_path / "hub", toy_model_dir)
    code = "from colbert_onnx import ColbertEncoder; print(ColbertEncoder.from_pretrained('org/name').folder.path)"
    result = _run(code, {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"snapshots/{SHA}")


def test_from_pretrained_falls_back_to_cache_when_hub_is_unreachable(toy_model_dir: Path, tmp_path: Path) -> None:
    cache = _fake_cache(tmp_path / "hub", toy_model_dir)
    code = "from colbert_onnx import ColbertEncoder; print(ColbertEncoder.from_pretrained('org/name').folder.path)"
    result = _run(code, {"HF_HUB_CACHE": str(cache), "HF_HUB_ETAG_TIMEOUT": "2"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"snapshots/{SHA}")


def test_uncached_model_offline_raises_error_saying_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="not in the Hugging Face cache.*Connect once to download it"):
        resolve_model_folder("org/missing", cache_dir=tmp_path, local_files_only=True)


def test_uncached_model_with_unreachable_hub_raises_model_folder_error(tmp_path: Path) -> None:
    code = (
        "from colbert_onnx import ColbertEncoder, ModelFolderError\n"
        "try:\n    ColbertEncoder.from_pretrained('org/missing')\n"
        "except ModelFolderError as exc:\n    print('ModelFolderError:', exc)\n"
    )
    result = _run(code, {"HF_HUB_CACHE": str(tmp_path), "HF_HUB_ETAG_TIMEOUT": "2"})
    assert "ModelFolderError: org/missing (revision main) is not in the Hugging Face cache" in result.stdout


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="neither a local model folder nor a hub id"):
        ColbertEncoder.from_pretrained(tmp_path / "nope")


def test_hub_id_without_huggingface_hub_raises_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ModelFolderError, match=r"pip install 'colbert-onnx\[hub\]'"):
        resolve_model_folder("org/name")


class _RecordingApi:
    calls: list[tuple[str, dict]] = []

    def __init__(self, token: str | None = None) -> None:
        self.token = token

    def create_repo(self, repo_id: str, **kwargs) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs) -> str:
        self.calls.append(("upload_folder", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}/commit/{SHA}"


@pytest.fixture()
def recording_api(monkeypatch: pytest.MonkeyPatch) -> type[_RecordingApi]:
    _RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _RecordingApi)
    return _RecordingApi


def test_push_to_hub_creates_repo_then_uploads_the_folder(toy_model_dir: Path, recording_api) -> None:
    url = push_to_hub(toy_model_dir, "org/name")
    assert [name for name, _ in recording_api.calls] == ["create_repo", "upload_folder"]
    assert recording_api.calls[0][1]["exist_ok"] is True
    assert recording_api.calls[1][1]["folder_path"] == str(toy_model_dir)
    assert recording_api.calls[1][1]["repo_id"] == "org/name"
    assert url.endswith(SHA)


def test_push_to_hub_refuses_a_folder_without_manifest(tmp_path: Path, recording_api) -> None:
    with pytest.raises(ModelFolderError):
        push_to_hub(tmp_path, "org/name")
    assert recording_api.calls == []


def test_cli_export_push_to_hub_uploads_the_exported_folder(
    toy_model_dir: Path, recording_api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    export = pytest.importorskip("colbert_onnx.export", reason="the export verb needs the [export] extra")
    from colbert_onnx.cli import main

    monkeypatch.setattr(export, "export_model", lambda sources, out, **kwargs: toy_model_dir)
    assert main(["export", "ckpt", "--out", "ignored", "--push-to-hub", "org/name"]) == 0
    assert json.loads(capsys.readouterr().out)["pushed"].endswith(SHA)
    assert recording_api.calls[1][1]["folder_path"] == str(toy_model_dir)


def test_import_colbert_onnx_does_not_import_huggingface_hub() -> None:
    code = "import sys, colbert_onnx, colbert_onnx.hub; assert 'huggingface_hub' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
