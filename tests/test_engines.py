"""Engines behind one interface (runtime/engines): the auto choice per CPU, forced and refused engines, and the
OpenVINO engine's vectors against onnxruntime's and against the float64 reference (issue 25)."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from openvino_fusion import openvino_attention_fuses_here

from colbert_onnx import ColbertEncoder, EngineUnavailableError, FidelityWarning, InvalidInputError
from colbert_onnx.engines import choice as choice_module
from colbert_onnx.engines import openvino_engine as ov_engine
from colbert_onnx.engines import selection
from colbert_onnx.engines.choice import choose_engine, cpu_features
from colbert_onnx.manifest import read_manifest, write_manifest
from colbert_onnx.session import SessionConfig

TEXTS = ["Berlin is the capital of Germany.", "Paris ist die Hauptstadt von Frankreich, an der Seine.",
         "東京は日本の首都です。" * 3, "def f(x): return x + 1  # code"]

# /proc/cpuinfo flags of the CPU classes the rule names (abridged to what it reads, plus noise)
SAPPHIRE_RAPIDS = {"fpu", "sse4_2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                   "amx_int8", "amx_tile"}
ZEN4 = {"fpu", "sse4_2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
ZEN3 = {"fpu", "sse4_2", "avx2", "fma"}
ALLOWED = {"onnxruntime": None, "openvino": None}  # engine -> why it cannot run (None: it can)
NO_OPENVINO = {"onnxruntime": None, "openvino": "the openvino package is not installed"}

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="the OpenVINO engine needs the [openvino] extra (openvino)")


# --- the rule, fed CPU feature sets ------------------------------------------------------------------------------

@pytest.mark.parametrize("features", [SAPPHIRE_RAPIDS, ZEN4], ids=["amx", "avx512-bf16"])
def test_fp16_on_a_bf16_cpu_with_a_passing_openvino_graph_picks_openvino(features: set[str]) -> None:
    assert choose_engine(features, "fp16", ALLOWED.get).engine == "openvino"


def test_fp16_on_a_cpu_without_bf16_units_picks_onnxruntime() -> None:
    assert choose_engine(ZEN3, "fp16", ALLOWED.get).engine == "onnxruntime"


def test_fp16_on_an_amx_cpu_without_openvino_picks_onnxruntime_and_says_why() -> None:
    picked = choose_engine(SAPPHIRE_RAPIDS, "fp16", NO_OPENVINO.get)
    assert picked.engine == "onnxruntime" and "not installed" in picked.reason


@pytest.mark.parametrize("features", [SAPPHIRE_RAPIDS, ZEN4, ZEN3, set()], ids=["amx", "avx512-bf16", "avx2", "none"])
def test_fp32_picks_onnxruntime_on_every_cpu(features: set[str]) -> None:
    """int8's rule: tests/test_openvino_int8.py."""
    assert choose_engine(features, "fp32", ALLOWED.get).engine == "onnxruntime"


def test_cpu_features_reads_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 amx_int8 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_features(info) == {"fpu", "avx2", "amx_int8", "amx_bf16"}


def test_cpu_features_of_an_unreadable_file_is_empty(tmp_path: Path) -> None:
    assert cpu_features(tmp_path / "missing") == frozenset()


# --- forced and refused choices --------------------------------------------------------------------------------

def test_forced_onnxruntime_is_honored(toy_model_dir: Path) -> None:
    described = ColbertEncoder(toy_model_dir, engine="onnxruntime").describe()
    assert described["engine"] == "onnxruntime" and "asked for" in described["engine_reason"]


def test_unknown_engine_is_refused_naming_the_choices(toy_model_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match="auto, onnxruntime, openvino"):
        ColbertEncoder(toy_model_dir, engine="tensorrt")


def test_forced_openvino_without_the_package_is_refused_naming_the_extra(toy_model_dir, monkeypatch) -> None:
    monkeypatch.setattr(ov_engine, "openvino_available", lambda: False)
    with pytest.raises(EngineUnavailableError, match=r"colbert-onnx\[openvino\]"):
        ColbertEncoder(toy_model_dir, engine="openvino")


def test_openvino_import_error_is_typed_and_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError, as where it is absent
    with pytest.raises(EngineUnavailableError, match=r"pip install 'colbert-onnx\[openvino\]'"):
        ov_engine.import_openvino()


def _without_engine_graphs(toy_model_dir: Path, tmp_path: Path) -> Path:
    folder = shutil.copytree(toy_model_dir, tmp_path / "plain")
    manifest = read_manifest(folder)
    write_manifest(folder, dataclasses.replace(manifest, engine_graphs=()))
    return folder


def test_forced_openvino_on_a_folder_without_its_graph_is_refused(toy_model_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ov_engine, "openvino_available", lambda: True)  # with or without the package
    folder = _without_engine_graphs(toy_model_dir, tmp_path)
    with pytest.raises(EngineUnavailableError, match="has no OpenVINO graph"):
        ColbertEncoder(folder, engine="openvino")


@needs_openvino
@pytest.mark.parametrize("settings", [{"io_binding": True},
                                      {"session_options": SessionConfig(enable_cpu_mem_arena=False)},
                                      {"session_options": SessionConfig(denormal_as_zero=False)}],
                         ids=["io_binding", "mem_arena", "denormals"])
def test_forced_openvino_refuses_settings_only_onnxruntime_takes(toy_model_dir, settings) -> None:
    ColbertEncoder(toy_model_dir, engine="openvino")  # runs here without them
    (name,) = settings
    with pytest.raises(EngineUnavailableError, match=f"{name}.* which only onnxruntime takes"):
        ColbertEncoder(toy_model_dir, engine="openvino", **settings)


@pytest.mark.parametrize("precision", ["fp32", "int8", "fp16"])
def test_auto_with_settings_only_onnxruntime_takes_runs_onnxruntime_saying_why(toy_model_dir, precision) -> None:
    encoder = ColbertEncoder(toy_model_dir, precision=precision, io_binding=True,
                             session_options=SessionConfig(graph_optimization_level="basic"))
    described = encoder.describe()
    assert described["engine"] == "onnxruntime"
    assert "io_binding=True, session_options.graph_optimization_level='basic' asked for" in described["engine_reason"]


def test_forced_openvino_on_cuda_is_refused(toy_model_dir) -> None:
    with pytest.raises(EngineUnavailableError, match="runs on the CPU only"):
        ColbertEncoder(toy_model_dir, engine="openvino", device="cuda")


def test_openvino_graph_that_missed_its_gates_is_refused(toy_model_dir, tmp_path) -> None:
    folder = shutil.copytree(toy_model_dir, tmp_path / "missed")
    manifest = read_manifest(folder)
    if not manifest.engine_graphs:
        pytest.skip("the toy folder has no OpenVINO graph: openvino was not installed at export")
    graph = manifest.engine_graphs[0]
    failed = {d: {**m, "passed": False} for d, m in graph.fidelity.items()}
    write_manifest(folder, dataclasses.replace(manifest, engine_graphs=(dataclasses.replace(graph, fidelity=failed),)))
    with pytest.raises(EngineUnavailableError, match="missed the fidelity gates"):
        ColbertEncoder(folder, engine="openvino")


def _with_bf16_entry(toy_model_dir: Path, tmp_path: Path, passed: bool) -> Path:
    """The toy folder with its OpenVINO bf16 entry (fp16) given the f32 entry's figures, marked `passed` or missed:
    auto's input on a bf16 CPU whatever this CPU could measure at export."""
    folder = shutil.copytree(toy_model_dir, tmp_path / "bf16-entry")
    manifest = read_manifest(folder)
    if not any(g.precision == "fp16" for g in manifest.engine_graphs):
        pytest.skip("the toy folder has no OpenVINO graph: openvino was not installed at export")
    figures = {d: {**m, "passed": passed} for d, m in next(g for g in manifest.engine_graphs
                                                            if g.precision == "fp32").fidelity.items()}
    graphs = tuple(dataclasses.replace(g, fidelity=figures, details={k: v for k, v in g.details.items()
                                                                     if k != "fidelity_not_measured"})
                   if g.precision == "fp16" else g for g in manifest.engine_graphs)
    write_manifest(folder, dataclasses.replace(manifest, engine_graphs=graphs))
    return folder


def test_auto_fp16_where_the_bf16_graph_missed_its_gates_runs_onnxruntime(toy_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(ov_engine, "openvino_available", lambda: True)  # with or without the package
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(SAPPHIRE_RAPIDS))
    folder = _with_bf16_entry(toy_model_dir, tmp_path, passed=False)
    described = ColbertEncoder(folder, precision="fp16").describe()
    assert described["engine"] == "onnxruntime" and "missed the fidelity gates" in described["engine_reason"]


def test_engine_variable_forces_the_engine(toy_model_dir, monkeypatch) -> None:
    from colbert_onnx.cli import build_parser
    from colbert_onnx.config import encoder_config_from_args

    monkeypatch.setenv("COLBERT_ONNX_ENGINE", "onnxruntime")
    config = encoder_config_from_args(build_parser().parse_args(["encode", str(toy_model_dir)]))
    assert config.engine == "onnxruntime"


# --- auto, on this machine's folder ----------------------------------------------------------------------------

def test_auto_fp32_runs_onnxruntime_and_logs_one_line(toy_model_dir, monkeypatch, caplog) -> None:
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(SAPPHIRE_RAPIDS))
    with caplog.at_level(logging.INFO, logger="colbert_onnx"):
        encoder = ColbertEncoder(toy_model_dir)
    assert encoder.describe()["engine"] == "onnxruntime"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("colbert-onnx engine:")]
    assert len(lines) == 1 and "amx_bf16" in lines[0]


@needs_openvino
@pytest.mark.parametrize("features", [SAPPHIRE_RAPIDS, ZEN4], ids=["amx", "avx512-bf16"])
def test_auto_fp16_on_a_bf16_cpu_runs_the_openvino_bf16_graph_where_it_passed(toy_model_dir, monkeypatch, features):
    """Where the export CPU's bf16 missed the fp16 gates on the toy (issue 25 saw 0.993 on an AMX Xeon), onnxruntime
    runs, saying why: the gates decide per folder and CPU."""
    entry = next(g for g in read_manifest(toy_model_dir).engine_graphs if g.precision == "fp16")
    if entry.passed_gates(128) is None:  # a CPU without bf16 units runs a bf16 hint at f32: nothing to measure
        pytest.skip(f"the export CPU cannot run OpenVINO at bf16: {entry.details.get('fidelity_not_measured')}")
    fused = openvino_attention_fuses_here(toy_model_dir, "fp16")  # this CPU's plugin, at bf16
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(features))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FidelityWarning)  # other bf16 units than the export: test_export_engines
        described = ColbertEncoder(toy_model_dir, precision="fp16").describe()
    if not entry.passed_gates(128):
        assert described["engine"] == "onnxruntime" and "missed the fidelity gates" in described["engine_reason"]
        return
    if not fused:
        assert described["engine"] == "onnxruntime" and "did not fuse" in described["engine_reason"]
        return
    assert (described["engine"], described["graph"], described["passed_gates"]) == (
        "openvino", "model-openvino.onnx", True)
    assert "inference precision bf16" in described["engine_detail"]


@needs_openvino
def test_auto_runs_onnxruntime_where_the_plugin_leaves_openvinos_attention_unfused(toy_model_dir, tmp_path,
                                                                                   monkeypatch, caplog) -> None:
    """Unfused, one document holds heads x n x n floats per layer (17 GB at 8192 tokens): whatever the CPU's flags
    promised, auto runs onnxruntime and says why."""
    folder = _with_bf16_entry(toy_model_dir, tmp_path, passed=True)
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(SAPPHIRE_RAPIDS))
    monkeypatch.setattr(ov_engine, "attention_fused", lambda compiled: False)
    with caplog.at_level(logging.INFO, logger="colbert_onnx"):
        described = ColbertEncoder(folder, precision="fp16").describe()
    assert described["engine"] == "onnxruntime"
    assert "did not fuse the graph's attention here" in described["engine_reason"]
    assert any("did not fuse" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert any(r.getMessage().startswith("colbert-onnx engine: onnxruntime (") for r in caplog.records)


@needs_openvino
def test_where_onnxruntime_cannot_open_either_auto_keeps_the_unfused_openvino_engine_saying_both(
        toy_model_dir, tmp_path, monkeypatch, caplog) -> None:
    from colbert_onnx.engines import onnxruntime_engine

    folder = _with_bf16_entry(toy_model_dir, tmp_path, passed=True)
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(SAPPHIRE_RAPIDS))
    monkeypatch.setattr(ov_engine, "attention_fused", lambda compiled: False)

    def refuse(*args, **kwargs):
        raise RuntimeError("no onnxruntime session here")

    monkeypatch.setattr(onnxruntime_engine.OnnxruntimeEngine, "__init__", refuse)
    with caplog.at_level(logging.INFO, logger="colbert_onnx"):
        described = ColbertEncoder(folder, precision="fp16").describe()
    assert described["engine"] == "openvino"
    assert "not fused here, but onnxruntime failed too (RuntimeError: no onnxruntime session here)" in (
        described["engine_reason"])
    assert any(r.getMessage().startswith("colbert-onnx engine: openvino") for r in caplog.records)


@needs_openvino
def test_a_forced_openvino_with_unfused_attention_runs_and_says_so(toy_model_dir, tmp_path, monkeypatch) -> None:
    folder = _with_bf16_entry(toy_model_dir, tmp_path, passed=True)
    monkeypatch.setattr(ov_engine, "attention_fused", lambda compiled: False)
    described = ColbertEncoder(folder, precision="fp16", engine="openvino").describe()
    assert described["engine"] == "openvino" and "attention not fused" in described["engine_detail"]


@needs_openvino
def test_auto_runs_openvino_where_the_plugin_fuses_its_attention(toy_model_dir, tmp_path, monkeypatch) -> None:
    """The plain graph's f32 attention fused on every CPU met (AVX2 included); with bf16 units it compiles at bf16,
    whose fusion this CPU's plugin decides: auto follows that verdict."""
    folder = _with_bf16_entry(toy_model_dir, tmp_path, passed=True)
    fused = openvino_attention_fuses_here(folder, "fp16")
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(SAPPHIRE_RAPIDS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FidelityWarning)  # figures from other bf16 units than this CPU's
        described = ColbertEncoder(folder, precision="fp16").describe()
    assert described["engine"] == ("openvino" if fused else "onnxruntime"), described["engine_reason"]


def test_auto_fp16_without_an_openvino_graph_runs_onnxruntime(toy_model_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ov_engine, "openvino_available", lambda: True)  # with or without the package
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(SAPPHIRE_RAPIDS))
    described = ColbertEncoder(_without_engine_graphs(toy_model_dir, tmp_path), precision="fp16").describe()
    assert described["engine"] == "onnxruntime" and "has no OpenVINO graph" in described["engine_reason"]


def test_auto_int8_on_an_amx_cpu_runs_openvino_only_where_its_int8_graph_was_written_and_fuses(toy_model_dir,
                                                                                              monkeypatch):
    """OpenVINO's CPU plugin cannot run our onnxruntime int8 graph; its own (NNCF) int8 is written at export where
    nncf and openvino are installed and it passes the gates (tests/test_openvino_int8.py), and runs where the plugin
    fuses its attention on this CPU (VNNI or AMX for int8; not on an AVX2 Zen 3); else onnxruntime."""
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(SAPPHIRE_RAPIDS))
    written = any(g.precision == "int8" for g in read_manifest(toy_model_dir).engine_graphs)
    runs = written and ov_engine.openvino_available() and openvino_attention_fuses_here(toy_model_dir, "int8")
    with warnings.catch_warnings():  # bf16 figures from this CPU's units on fed AMX flags: test_openvino_int8's subject
        warnings.simplefilter("ignore", FidelityWarning)
        described = ColbertEncoder(toy_model_dir, precision="int8").describe()
    assert described["engine"] == ("openvino" if runs else "onnxruntime"), described["engine_reason"]


def test_fp32_auto_does_not_import_openvino(toy_model_dir) -> None:
    """The rule asks why OpenVINO cannot run only where it would pick it: fp32 loads stay free of its import."""
    import subprocess
    import sys

    code = ("import sys; from colbert_onnx import ColbertEncoder; ColbertEncoder(sys.argv[1]).encode_queries('q'); "
            "assert sys.modules.get('openvino') is None, 'openvino imported'")  # None: blocked, not imported
    proc = subprocess.run([sys.executable, "-c", code, str(toy_model_dir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]


def test_the_rule_reads_the_named_flags_only() -> None:
    assert set(choice_module.BF16_FEATURES) <= set(choice_module.READ_FEATURES)


# --- the OpenVINO engine's vectors -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def both(toy_model_dir):
    pytest.importorskip("openvino", reason="the OpenVINO engine needs the [openvino] extra (openvino)")
    return ColbertEncoder(toy_model_dir, engine="onnxruntime"), ColbertEncoder(toy_model_dir, engine="openvino")


def test_openvino_fuses_the_attention_of_its_plain_graph_and_says_nothing_of_it(both) -> None:
    engine = both[1].engine
    assert engine.attention_fused is True and "not fused" not in engine.describe()


def test_an_attention_the_plugin_leaves_unfused_is_reported(toy_model_dir, both, monkeypatch) -> None:
    """Unfused attention holds heads x n x n floats per document of n tokens (17 GB at 8192 tokens, 16 heads):
    describe() and the engine log line say so. The plugin keeps Softmax when its snippets are off."""
    import openvino as ov

    from colbert_onnx.engines.openvino_engine import attention_fused

    core = ov.Core()
    graph = str(toy_model_dir / read_manifest(toy_model_dir).engine_graphs[0].file)
    assert attention_fused(core.compile_model(core.read_model(graph), "CPU", {"SNIPPETS_MODE": "DISABLE"})) is False
    monkeypatch.setattr(both[1].engine, "attention_fused", False)
    assert "attention not fused by the CPU plugin here" in both[1].engine.describe()


def test_exporter_writes_an_openvino_graph_without_com_microsoft_operators(toy_model_dir, both) -> None:
    onnx = pytest.importorskip("onnx")
    graph = read_manifest(toy_model_dir).engine_graphs[0]
    model = onnx.load(str(toy_model_dir / graph.file))
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert all(m["passed"] for m in graph.fidelity.values())


def test_openvino_documents_match_onnxruntime(both) -> None:
    ort_engine, ov_engine = both
    for a, b in zip(ort_engine.encode_documents(TEXTS), ov_engine.encode_documents(TEXTS), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_openvino_queries_match_onnxruntime(both) -> None:
    ort_engine, ov_engine = both
    for a, b in zip(ort_engine.encode_queries(TEXTS), ov_engine.encode_queries(TEXTS), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_openvino_for_dim_shares_the_compiled_graph(both) -> None:
    _, ov_engine = both
    small = ov_engine.for_dim(64)
    assert small.engine is ov_engine.engine and small.encode_queries("x")[0].shape == (32, 64)


def test_openvino_engine_sits_behind_the_id_checks(both) -> None:
    """OpenVINO's Gather returns silently on ids outside the vocabulary: the encoder's checks come first."""
    _, ov_engine = both
    batch = ov_engine.tokenize(["Berlin"], "document")
    bad = dataclasses.replace(batch, ids=[np.array([0, ov_engine.folder.vocab_size + 5, 2])], windows=None)
    with pytest.raises(InvalidInputError, match="outside the graph's vocabulary"):
        ov_engine.encode_ids(bad)


def test_openvino_on_the_onnxruntime_graph_gives_wrong_vectors(both) -> None:
    """Why the OpenVINO engine has a graph of its own: on the optimized onnxruntime graph it returns wrong
    vectors without an error (com.microsoft RotaryEmbedding / MultiHeadAttention). If this starts to pass,
    OpenVINO fixed it."""
    from colbert_onnx.engines.openvino_engine import OpenvinoEngine
    from colbert_onnx.tokenization import pad_batch

    ort_engine, _ = both
    ids, mask = pad_batch(ort_engine.tokenize(TEXTS, "document").ids, ort_engine.preprocessor.special.pad)
    want = ort_engine.engine.run(ids, mask, (128,))[128]
    got = OpenvinoEngine(str(ort_engine.folder.path / "model.onnx"), {128: "vectors_128"}).run(ids, mask)[128]
    cosines = (want * got).sum(-1)[mask.astype(bool)]
    assert not np.all(cosines > 0.999)  # NaNs and cosines near 0 on this padded batch


def test_openvino_encoder_shared_by_four_threads_gives_serial_results(both) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, ov_engine = both
    serial = [ov_engine.encode_documents([t, TEXTS[0]]) for t in TEXTS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda t: ov_engine.encode_documents([t, TEXTS[0]]), TEXTS * 2))
    for got, want in zip(threaded, serial * 2, strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
