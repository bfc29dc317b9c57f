"""The calling thread's floating-point environment (x86 MXCSR: flush-to-zero, denormals-are-zero) around both engines
and the exporter: the user's thread keeps its own flush mode after loading, running and exporting, and each run
computes with the flush mode it asked for, the calling thread's share included (runtime/float_environment.py).

Each case runs in a fresh interpreter: its threads start without FTZ/DAZ, and onnxruntime sets the mode only for the
first session of a process. `flushes` reads a bool, as a subnormal printed under DAZ shows as 0.0."""

from __future__ import annotations

import ast
import importlib.util
import json
import platform
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from colbert_onnx import float_environment

X86 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                         reason="flush-to-zero / denormals-are-zero are the x86 MXCSR's")
KEEPS_FLOAT_ENVIRONMENT = pytest.mark.skipif(not float_environment.available(),
                                             reason="this platform's C library has no fegetenv/fesetenv")
CAN_FLUSH = pytest.mark.skipif(not float_environment.can_flush(),
                               reason="flushing inside a run needs x86-64 Linux's fenv_t layout")
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="the OpenVINO engine needs the [openvino] extra (openvino)")

_TINY, _ONE = 1e-310, 1.0


def flushes() -> bool:
    return _TINY * _ONE == 0.0


PROBE = """
import json, sys, threading
import numpy as np
from colbert_onnx import ColbertEncoder, float_environment
from colbert_onnx.session import SessionConfig

case = json.loads(sys.argv[1])
flushes = lambda: bool((np.array([1e-310]) * 1.0)[0] == 0.0)
if case["user_flushes"]:  # the user's own choice, made before loading anything
    float_environment.restore(float_environment._with_flush_bits(float_environment.current(), on=True))
if case["other_session_first"]:  # the user's own onnxruntime session is the process's first (flushing off)
    import onnxruntime as ort
    ort.InferenceSession(case["graph"], providers=["CPUExecutionProvider"])
seen = {"before": flushes()}
encoder = ColbertEncoder(case["folder"], engine=case["engine"], threads=1,
                         session_options=SessionConfig(denormal_as_zero=case["denormal_as_zero"]))
seen["loaded"] = flushes()
engine = encoder.engine

def record_in_run():
    seen.setdefault("in_run_" + threading.current_thread().name, flushes())

if case["engine"] == "onnxruntime":
    class Probe:
        def __init__(self, session):
            self.session = session
        def run(self, *args, **kwargs):
            record_in_run()
            return self.session.run(*args, **kwargs)
        def __getattr__(self, name):
            return getattr(self.session, name)
    engine.session = Probe(engine.session)
else:
    real_request = engine._request
    class Probe:
        def __init__(self, request):
            self.request = request
        def infer(self, feeds):
            record_in_run()
            return self.request.infer(feeds)
    engine._request = lambda: Probe(real_request())
encoder.encode_documents(["Berlin ist die Hauptstadt Deutschlands."])
seen["after_run"] = flushes()

def work():
    seen["worker_before"] = flushes()
    encoder.encode_documents(["Berlin"])
    seen["worker_after"] = flushes()

worker = threading.Thread(target=work, name="worker")
worker.start()
worker.join()
print(repr(seen))
"""


def fresh_interpreter(script: str, *args: str, timeout: int = 120) -> str:
    """The last line `script` prints, run by this Python in a process of its own (its threads start unflushed)."""
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def probe(folder: Path, engine: str, denormal_as_zero: bool = True, user_flushes: bool = False,
          other_session_first: bool = False) -> dict[str, bool]:
    case = {"folder": str(folder), "graph": str(folder / "model.onnx"), "engine": engine,
            "denormal_as_zero": denormal_as_zero, "user_flushes": user_flushes,
            "other_session_first": other_session_first}
    return ast.literal_eval(fresh_interpreter(PROBE, json.dumps(case)))


def assert_the_users_mode_kept(seen: dict[str, bool], user_flushes: bool) -> None:
    assert seen["before"] is user_flushes
    assert {k: seen[k] for k in ("loaded", "after_run", "worker_before", "worker_after")} == dict.fromkeys(
        ("loaded", "after_run", "worker_before", "worker_after"), user_flushes)


# --- onnxruntime: its first session set (or cleared) FTZ/DAZ on the loading thread for good ---------------------

ORT_CASES = {  # id -> (denormal_as_zero, user_flushes, other_session_first)
    "flushing, first session": (True, False, False),
    "flushing, after another session": (True, False, True),
    "flushing, user flushes too": (True, True, False),
    "not flushing, user flushes": (False, True, False),
}


@pytest.fixture(scope="module", params=list(ORT_CASES))
def onnxruntime_seen(request, toy_model_dir: Path) -> tuple[tuple[bool, bool, bool], dict[str, bool]]:
    case = ORT_CASES[request.param]
    denormal_as_zero, user_flushes, other_session_first = case
    return case, probe(toy_model_dir, "onnxruntime", denormal_as_zero, user_flushes, other_session_first)


@X86
@KEEPS_FLOAT_ENVIRONMENT
def test_the_onnxruntime_engine_leaves_the_callers_flush_mode_as_it_was(onnxruntime_seen) -> None:
    """Without the save around session creation, 1e-310 * 1.0 was 0.0 in the user's numpy after loading (first
    session flushing), and a user's own FTZ/DAZ was cleared by a first session that does not flush."""
    (_, user_flushes, _), seen = onnxruntime_seen
    assert_the_users_mode_kept(seen, user_flushes)


@X86
@CAN_FLUSH
def test_the_onnxruntime_engines_runs_flush_as_asked_in_every_calling_thread(onnxruntime_seen) -> None:
    """With `threads=1` the calling thread does all the work: it flushes when denormal_as_zero asks for it, even
    where another session was the process's first, and keeps the user's mode otherwise."""
    (denormal_as_zero, user_flushes, _), seen = onnxruntime_seen
    assert seen["in_run_MainThread"] is seen["in_run_worker"] is (denormal_as_zero or user_flushes)


# --- OpenVINO: its CPU plugin sets FTZ/DAZ on the compiling thread ----------------------------------------------

@pytest.fixture(scope="module", params=[False, True], ids=["user does not flush", "user flushes"])
def openvino_seen(request, toy_model_dir: Path) -> tuple[bool, dict[str, bool]]:
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("the OpenVINO engine needs the [openvino] extra (openvino)")
    return request.param, probe(toy_model_dir, "openvino", user_flushes=request.param)


@needs_openvino
@X86
@KEEPS_FLOAT_ENVIRONMENT
def test_the_openvino_engine_leaves_the_callers_flush_mode_as_it_was(openvino_seen) -> None:
    """OpenVINO's CPU plugin sets FTZ/DAZ on the thread that compiles (CPU_DENORMALS_OPTIMIZATION): without
    float_environment, 1e-310 * 1.0 was 0.0 in the user's own numpy after loading the engine."""
    user_flushes, seen = openvino_seen
    assert_the_users_mode_kept(seen, user_flushes)


@needs_openvino
@X86
@KEEPS_FLOAT_ENVIRONMENT
def test_the_openvino_engines_runs_flush_subnormals_in_every_calling_thread(openvino_seen) -> None:
    """Each run computes with the plugin's flush mode, the calling thread's share of the work included."""
    _, seen = openvino_seen
    assert seen["in_run_MainThread"] and seen["in_run_worker"]


# --- what the threads of a run compute: a subnormal result, kept or flushed ------------------------------------

SUBNORMAL_GRAPH_PROBE = """
import json, sys
import numpy as np
case = json.loads(sys.argv[1])
if case["other_session_first"]:  # the process's first session does not flush: onnxruntime clears the mode once
    import onnxruntime as ort
    ort.InferenceSession(case["graph"], providers=["CPUExecutionProvider"])
if case["engine"] == "onnxruntime":
    from colbert_onnx.engines.onnxruntime_engine import OnnxruntimeEngine
    from colbert_onnx.session import SessionConfig
    engine = OnnxruntimeEngine(case["graph"], {128: "out128"}, threads=case["threads"],
                               config=SessionConfig(denormal_as_zero=case["denormal_as_zero"]))
else:
    from colbert_onnx.engines.openvino_engine import OpenvinoEngine
    engine = OpenvinoEngine(case["graph"], {128: "out128"}, threads=case["threads"])
mask = np.ones((4, 8192), np.int64)
rows = np.asarray(engine.run(mask, mask)[128] != 0).any(-1)
print(float(rows.mean()))
"""


@pytest.fixture(scope="module")
def subnormal_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A graph with the encoder's signature whose every output is attention_mask x 1e-40 (float32 subnormal): 0.0
    wherever the thread that computed it flushes (DAZ reads the constant as 0, FTZ flushes the product), 1e-40
    elsewhere. 4 x 8192 x 128 elements, split across onnxruntime's pool threads and the calling thread."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mask", "last_axis"], ["mask3"]),
             helper.make_node("Mul", ["mask3", "subnormal"], ["out128"])]
    graph = helper.make_graph(
        nodes, "subnormal_product",
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
         for name in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("out128", TensorProto.FLOAT, ["batch", "sequence", 128])],
        [numpy_helper.from_array(np.full(128, 1e-40, np.float32), "subnormal"),
         numpy_helper.from_array(np.array([2], np.int64), "last_axis")])
    path = tmp_path_factory.mktemp("subnormal") / "subnormal.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def unflushed_share(graph: Path, engine: str, threads: int, denormal_as_zero: bool = True,
                    other_session_first: bool = False) -> float:
    """The share of output rows (of 4 x 8192) computed without flushing, in a fresh interpreter."""
    case = {"graph": str(graph), "engine": engine, "threads": threads, "denormal_as_zero": denormal_as_zero,
            "other_session_first": other_session_first}
    return float(fresh_interpreter(SUBNORMAL_GRAPH_PROBE, json.dumps(case)))


@X86
@CAN_FLUSH
@pytest.mark.parametrize("other_session_first", [False, True], ids=["first session", "after another session"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_thread_of_a_flushing_onnxruntime_run_computes_subnormals_as_zero(
        subnormal_graph: Path, threads: int, other_session_first: bool) -> None:
    """No thread of the run meets the subnormal slowdown of CPUs that have one (on Intel, 3-4x on sharp attention:
    docs/engines.md "Denormals"): without the calling thread's flush, 1.0 of the rows came back unflushed with
    `threads=1` and about half with `threads=2`; timed, sharp against calm, in tests/test_denormals.py."""
    assert unflushed_share(subnormal_graph, "onnxruntime", threads, other_session_first=other_session_first) == 0.0


@X86
@pytest.mark.parametrize("threads", [1, 2])
def test_an_onnxruntime_run_without_denormal_as_zero_keeps_subnormals_in_every_thread(
        subnormal_graph: Path, threads: int) -> None:
    """The probe tells the two apart: with flushing turned off every row keeps its subnormal value."""
    assert unflushed_share(subnormal_graph, "onnxruntime", threads, denormal_as_zero=False) == 1.0


@needs_openvino
@X86
@KEEPS_FLOAT_ENVIRONMENT
@pytest.mark.parametrize("threads", [1, 2])
def test_every_thread_of_an_openvino_run_computes_subnormals_as_zero(subnormal_graph: Path, threads: int) -> None:
    """CPU_DENORMALS_OPTIMIZATION, the calling thread's share included (without the plugin's mode for the run, 1.0
    of the rows came back unflushed)."""
    assert unflushed_share(subnormal_graph, "openvino", threads) == 0.0


# --- the exporter -------------------------------------------------------------------------------------------

EXPORT_PROBE = """
import sys
import numpy as np
from colbert_onnx import float_environment
from colbert_onnx.export import export_model
flushes = lambda: bool((np.array([1e-310]) * 1.0)[0] == 0.0)
if sys.argv[3] == "1":
    float_environment.restore(float_environment._with_flush_bits(float_environment.current(), on=True))
before = flushes()
export_model([sys.argv[1]], sys.argv[2], precisions="fp32")
print(repr({"before": before, "after": flushes()}))
"""


@X86
@CAN_FLUSH
@pytest.mark.parametrize("user_flushes", [False, True], ids=["user does not flush", "user flushes"])
def test_an_export_leaves_the_callers_flush_mode_as_it_was(toy_trio: dict[int, Path], tmp_path: Path,
                                                           user_flushes: bool) -> None:
    """The thread that called export_model computes as before once it returns, whatever the sessions and compiles
    inside set: without a kept environment, the process's first onnxruntime session cleared a user's FTZ/DAZ."""
    seen = fresh_interpreter(EXPORT_PROBE, str(toy_trio[64]), str(tmp_path / "out"), "1" if user_flushes else "0",
                             timeout=300)
    assert ast.literal_eval(seen) == {"before": user_flushes, "after": user_flushes}


# --- the helpers themselves -----------------------------------------------------------------------------------

@pytest.mark.skipif(sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the fenv_t layout flushing relies on is x86-64 Linux's")
def test_flushing_is_available_on_x86_64_linux() -> None:
    """Where it is not, runs keep the caller's mode and the calling thread's share meets the subnormal slowdown."""
    assert float_environment.can_flush()


@CAN_FLUSH
def test_subnormals_flushed_flushes_inside_the_block_and_restores_the_mode_after() -> None:
    def check() -> None:
        before = flushes()
        with float_environment.subnormals_flushed():
            seen["inside"] = flushes()
        seen["after_matches"] = flushes() is before

    seen: dict[str, bool] = {}
    thread = threading.Thread(target=check)  # a thread of its own: this process's main thread is the suite's
    thread.start()
    thread.join()
    assert seen == {"inside": True, "after_matches": True}


@CAN_FLUSH
def test_subnormals_flushed_restores_the_mode_when_the_block_raises() -> None:
    before = flushes()
    with pytest.raises(RuntimeError), float_environment.subnormals_flushed():
        raise RuntimeError("a failed run")
    assert flushes() is before
