"""No usage telemetry by default: onnxruntime's is off in every process that imports colbert_onnx
(runtime/__init__.py), OpenVINO's and NNCF's wherever colbert_onnx imports them (runtime/telemetry.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _after_import(env: dict[str, str]) -> str:
    code = "import os, colbert_onnx; print(os.environ.get('ORT_DISABLE_TELEMETRY'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_importing_the_package_opts_out_of_onnxruntime_telemetry():
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    assert _after_import(env) == "1"


def test_a_telemetry_setting_of_the_user_is_kept():
    assert _after_import({**os.environ, "ORT_DISABLE_TELEMETRY": "0"}) == "0"


# --- OpenVINO and NNCF (runtime/telemetry.py) --------------------------------------------------------------------
# Each case runs in a fresh process (the first import is what sends) with HOME a fresh folder (where OpenVINO keeps
# its consent file, client id and counters), and counts the events handed to OpenVINO's telemetry sender (replaced by
# a recorder, so nothing leaves the machine even where an event is sent).

RECORD_SENDS = """
import os, sys
import openvino_telemetry.utils.sender as sender
sent = []
sender.TelemetrySender.send = lambda self, backend, message: sent.append(message)
"""
REPORT = "\nprint(len(sent), sorted(os.listdir(os.environ['HOME'])))"
OPENVINO_FIRST_IMPORTS = {
    "import_openvino": "from colbert_onnx.engines.openvino_engine import import_openvino\nimport_openvino()",
    "nncf": "from colbert_onnx.telemetry import import_without_telemetry\nimport_without_telemetry('nncf')",
    "encoder": "from colbert_onnx import ColbertEncoder\n"
               "ColbertEncoder(sys.argv[1], engine='openvino').encode_documents(['Berlin'])",
    "8 threads at once, then the user's own import": (
        "import threading\nfrom colbert_onnx.engines.openvino_engine import import_openvino\n"
        "threads = [threading.Thread(target=import_openvino) for _ in range(8)]\n"
        "[t.start() for t in threads]\n[t.join() for t in threads]\nimport openvino_telemetry"),
    "export quantize": "import numpy as np\nfrom pathlib import Path\n"
                       "from colbert_onnx.export.openvino_int8 import quantize\n"
                       "ids = np.array([[0, 5, 6, 7, 2]])\n"
                       "feeds = {'input_ids': ids, 'attention_mask': np.ones_like(ids)}\n"
                       "quantize(Path(sys.argv[1]) / 'model-openvino.onnx', [feeds], 0.5)",
}


def _sends(code: str, home: Path, *args: str) -> tuple[int, list[str]]:
    env = {**{k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}, "HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", RECORD_SENDS + code + REPORT, *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    count, files = done.stdout.strip().splitlines()[-1].split(" ", 1)
    return int(count), eval(files)  # noqa: S307 (our own print of a list of names)


@pytest.fixture(scope="module")
def openvino_folder(toy_model_dir: Path) -> Path:
    pytest.importorskip("openvino", reason="OpenVINO's telemetry comes with the [openvino] extra")
    if not (toy_model_dir / "model-openvino.onnx").is_file():
        pytest.skip("the toy folder was exported without openvino: it has no OpenVINO graph")
    return toy_model_dir


@pytest.mark.parametrize("entry", list(OPENVINO_FIRST_IMPORTS))
def test_openvino_and_nncf_send_no_telemetry_and_write_nothing_home(openvino_folder, tmp_path, entry) -> None:
    if entry in ("nncf", "export quantize"):
        pytest.importorskip("nncf", reason="NNCF comes with the [export] extra")
    assert _sends(OPENVINO_FIRST_IMPORTS[entry], tmp_path, str(openvino_folder)) == (0, [])


def test_a_user_who_opted_in_to_openvinos_telemetry_keeps_it(openvino_folder, tmp_path) -> None:
    """OpenVINO's own opt-in (`opt_in_out --opt_in` writes "1" to ~/intel/openvino_telemetry) is honored: the
    recorder sees OpenVINO's import event, as it would without colbert-onnx."""
    (tmp_path / "intel").mkdir()
    (tmp_path / "intel" / "openvino_telemetry").write_text("1")
    count, _ = _sends(OPENVINO_FIRST_IMPORTS["import_openvino"], tmp_path)
    assert count >= 1


def test_a_plain_import_of_openvino_would_send_its_event(openvino_folder, tmp_path) -> None:
    """What the guard prevents, so that the tests above can fail: OpenVINO consents by itself without a file."""
    count, files = _sends("import openvino", tmp_path)
    assert count >= 1 and files == ["intel"]
