"""Which engines an export writes graphs for (`engines=` / `--engines`), and how the OpenVINO bf16 entry is measured
honestly on any CPU: a CPU without bf16 units runs a bf16 hint at f32, so it records "not measured" rather than
figures that are not bf16's; a bf16 entry records the units it was measured with (docs/engines.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from openvino_fusion import openvino_attention_fuses_here

from colbert_onnx import ColbertEncoder, EngineUnavailableError, FidelityWarning, InvalidInputError
from colbert_onnx.cli import main
from colbert_onnx.engines import selection
from colbert_onnx.manifest import GraphEntry, read_manifest

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="the OpenVINO engine needs the [openvino] extra (openvino)")
ZEN4 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"})


@pytest.fixture(scope="module")
def onnxruntime_only(toy_trio, tmp_path_factory) -> Path:
    from colbert_onnx.export import export_model

    return export_model([toy_trio[128], toy_trio[96], toy_trio[64]], tmp_path_factory.mktemp("ort-only") / "out",
                        precisions="fp32,int8", engines="onnxruntime")


def test_engines_onnxruntime_writes_no_openvino_graph(onnxruntime_only: Path) -> None:
    assert read_manifest(onnxruntime_only).engine_graphs == ()
    assert not list(onnxruntime_only.glob("*openvino*"))
    assert {g.precision for g in read_manifest(onnxruntime_only).graphs} == {"fp32", "int8"}


def test_the_manifest_says_why_a_folder_has_no_openvino_graph(onnxruntime_only: Path) -> None:
    extra = read_manifest(onnxruntime_only).extra
    assert extra["engine_graphs_not_written"] == {"openvino": "not asked for (engines=onnxruntime)"}
    assert "openvino_int8" not in extra  # no NNCF search either


def test_forcing_openvino_on_that_folder_is_refused_naming_the_export_choice(onnxruntime_only, monkeypatch) -> None:
    from colbert_onnx.engines import openvino_engine

    monkeypatch.setattr(openvino_engine, "openvino_available", lambda: True)  # with or without the package
    with pytest.raises(EngineUnavailableError, match="engines=onnxruntime"):
        ColbertEncoder(onnxruntime_only, engine="openvino")


@pytest.mark.parametrize("engines", ["tensorrt", "auto,openvino", ",", ["onnxruntime", "vllm"]])
def test_an_unknown_engine_list_is_refused_before_any_work(engines, toy_trio, tmp_path: Path) -> None:
    from colbert_onnx.export import export_model

    with pytest.raises(InvalidInputError, match="onnxruntime, openvino"):
        export_model([toy_trio[64]], tmp_path / "out", precisions="fp32", engines=engines)
    assert not (tmp_path / "out").exists()


def test_openvino_asked_for_without_its_package_is_refused_naming_the_extra(toy_trio, tmp_path, monkeypatch) -> None:
    from colbert_onnx.export import export_model

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError, with or without the package
    with pytest.raises(EngineUnavailableError, match=r"colbert-onnx\[openvino\]"):
        export_model([toy_trio[64]], tmp_path / "out", precisions="fp32", engines="onnxruntime,openvino")
    assert not (tmp_path / "out").exists()


def test_auto_without_the_openvino_package_records_why(toy_trio, tmp_path, monkeypatch) -> None:
    from colbert_onnx.export import export_model, openvino_graphs

    monkeypatch.setattr(openvino_graphs, "openvino_available", lambda: False)
    out = export_model([toy_trio[64]], tmp_path / "out", precisions="fp32")
    assert "not installed" in read_manifest(out).extra["engine_graphs_not_written"]["openvino"]


def test_cli_engines_option_reaches_the_export_and_its_report(toy_trio, tmp_path, capsys) -> None:
    assert main(["export", str(toy_trio[64]), "--out", str(tmp_path / "out"), "--precision", "fp32",
                 "--engines", "onnxruntime"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engine_graphs_passed"]["openvino"]["reason"] == "not asked for (engines=onnxruntime)"


def test_cli_refuses_an_unknown_engine_with_exit_2(toy_trio, tmp_path, capsys) -> None:
    assert main(["export", str(toy_trio[64]), "--out", str(tmp_path / "out"), "--engines", "tensorrt"]) == 2
    assert "tensorrt" in capsys.readouterr().err


# --- the OpenVINO bf16 entry, measured honestly on any CPU ----------------------------------------------------------


def _without_bf16_units():
    """OpenvinoEngine as on a CPU without bf16 units (Zen 3): a bf16 hint compiles and runs at f32."""
    from colbert_onnx.engines.openvino_engine import OpenvinoEngine

    class NoBf16Units(OpenvinoEngine):
        def __init__(self, path, outputs, threads=None, inference_precision="f32"):
            super().__init__(path, outputs, threads=threads, inference_precision="f32")
            self.requested_precision = inference_precision

    return NoBf16Units


@needs_openvino
def test_a_cpu_that_runs_bf16_at_f32_records_the_bf16_entry_as_not_measured(toy_trio, tmp_path, monkeypatch) -> None:
    """What an AVX2-only CPU (Zen 3) does with a bf16 hint: runs f32. Its figures would pass the fp16 gates without
    being bf16's, so the entry is recorded as not measured, and `auto` never picks it on a bf16 CPU later."""
    from colbert_onnx.export import export_model, openvino_graphs

    monkeypatch.setattr(openvino_graphs, "OpenvinoEngine", _without_bf16_units())
    out = export_model([toy_trio[128], toy_trio[96], toy_trio[64]], tmp_path / "out", precisions="fp32,fp16",
                       engines="onnxruntime,openvino")
    entry = next(g for g in read_manifest(out).engine_graphs if g.precision == "fp16")
    assert entry.passed_gates(128) is None and "runs f32, not bf16" in entry.details["fidelity_not_measured"]
    monkeypatch.setattr(selection, "cpu_features", lambda: ZEN4)
    assert ColbertEncoder(out, precision="fp16").describe()["engine"] == "onnxruntime"
    with pytest.raises(EngineUnavailableError, match="runs f32, not bf16"):
        ColbertEncoder(out, precision="fp16", engine="openvino")


def _plugin_refusing(refused: tuple[str, ...]):
    """OpenvinoEngine as on a CPU whose plugin cannot compile the graph at `refused` inference precisions (seen when
    oneDNN's ISA is capped below what the plugin plans for: 'Supported primitive descriptors list is empty')."""
    from colbert_onnx.engines.openvino_engine import OpenvinoEngine

    class Refusing(OpenvinoEngine):
        def __init__(self, path, outputs, threads=None, inference_precision="f32"):
            if inference_precision in refused:
                raise EngineUnavailableError(f"OpenVINO cannot compile {path}: Supported primitive descriptors list "
                                             "is empty for node: /backbone/layers.0/mixer/Softmax type: Softmax")
            super().__init__(path, outputs, threads=threads, inference_precision=inference_precision)

    return Refusing


@needs_openvino
@pytest.mark.parametrize("refused", [("bf16",), ("f32", "bf16")], ids=["bf16", "f32-and-bf16"])
def test_an_openvino_graph_the_cpu_plugin_cannot_compile_is_recorded_not_measured_and_the_export_goes_on(
        refused, toy_trio, tmp_path, monkeypatch, capsys) -> None:
    from colbert_onnx.export import openvino_graphs

    monkeypatch.setattr(openvino_graphs, "OpenvinoEngine", _plugin_refusing(refused))
    out = tmp_path / "out"
    assert main(["export", str(toy_trio[128]), str(toy_trio[96]), str(toy_trio[64]), "--out", str(out),
                 "--precision", "fp32,fp16", "--engines", "onnxruntime,openvino"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fidelity_gates_passed"]["fp32"] == {"128": True, "96": True, "64": True}
    for entry in read_manifest(out).engine_graphs:
        if entry.details["inference_precision"] in refused:
            assert entry.passed_gates(128) is None and "could not compile" in entry.details["fidelity_not_measured"]
            assert "could not compile" in report["engine_graphs_passed"]["openvino"][entry.precision]["reason"]
        else:
            assert entry.passed_gates(128) is True
    with pytest.raises(EngineUnavailableError, match="could not compile"):
        ColbertEncoder(out, precision="fp16", engine="openvino")


@needs_openvino
def test_auto_runs_onnxruntime_where_its_openvino_pick_cannot_compile_and_says_why(toy_model_dir, monkeypatch) -> None:
    from colbert_onnx.engines import openvino_engine

    monkeypatch.setattr(selection, "cpu_features", lambda: ZEN4)
    # its graph passed: auto picks OpenVINO
    monkeypatch.setattr(selection, "openvino_refusal", lambda *args, **kwargs: None)
    monkeypatch.setattr(openvino_engine, "OpenvinoEngine", _plugin_refusing(("f32", "bf16")))
    described = ColbertEncoder(toy_model_dir, precision="fp16").describe()
    assert described["engine"] == "onnxruntime" and "OpenVINO failed here" in described["engine_reason"]
    assert "Supported primitive descriptors" in described["engine_reason"]


@needs_openvino
def test_forced_openvino_that_cannot_compile_here_is_refused_not_replaced(toy_model_dir, monkeypatch) -> None:
    from colbert_onnx.engines import openvino_engine

    monkeypatch.setattr(openvino_engine, "OpenvinoEngine", _plugin_refusing(("f32", "bf16")))
    with pytest.raises(EngineUnavailableError, match="cannot compile"):
        ColbertEncoder(toy_model_dir, precision="fp32", engine="openvino")


@needs_openvino
def test_verify_fails_a_graph_openvino_cannot_compile_here_saying_why(toy_model_dir, monkeypatch) -> None:
    from colbert_onnx import verify_folder
    from colbert_onnx.engines import openvino_engine

    monkeypatch.setattr(openvino_engine, "OpenvinoEngine", _plugin_refusing(("f32", "bf16")))
    verdicts = verify_folder(toy_model_dir, engines=["openvino"], precisions=["fp32"])
    assert [v.dim for v in verdicts] == [128, 96, 64] and not any(v.passed for v in verdicts)
    line = verdicts[0].line()
    assert line.startswith("FAIL  openvino") and "could not run here: OpenVINO cannot compile" in line


@needs_openvino
def test_verify_says_when_openvino_ran_a_bf16_entry_at_f32(toy_model_dir, monkeypatch) -> None:
    """On a CPU without bf16 units the figures are f32's: the line says so, not a bf16 verdict."""
    from colbert_onnx import verify_folder
    from colbert_onnx.engines import openvino_engine

    monkeypatch.setattr(openvino_engine, "OpenvinoEngine", _without_bf16_units())
    (verdict, *_) = verify_folder(toy_model_dir, engines=["openvino"], precisions=["fp16"])
    assert "OpenVINO ran f32, not bf16, on this CPU" in verdict.line()


@needs_openvino
def test_the_engine_reports_the_precision_openvino_runs_not_the_one_asked(toy_model_dir: Path) -> None:
    from benchmarks.peers import cpu_has_bf16
    from colbert_onnx.engines.openvino_engine import OpenvinoEngine

    path = str(toy_model_dir / "model-openvino.onnx")
    assert OpenvinoEngine(path, {128: "vectors_128"}, inference_precision="f32").inference_precision == "f32"
    bf16 = OpenvinoEngine(path, {128: "vectors_128"}, inference_precision="bf16")
    assert (bf16.requested_precision, bf16.inference_precision) == ("bf16", "bf16" if cpu_has_bf16() else "f32")


@needs_openvino
def test_a_measured_bf16_entry_records_the_bf16_units_it_ran_on(toy_model_dir: Path) -> None:
    from colbert_onnx.engines.choice import BF16_FEATURES, cpu_features

    entry = next(g for g in read_manifest(toy_model_dir).engine_graphs if g.precision == "fp16")
    if entry.passed_gates(128) is None:
        pytest.skip(f"this CPU cannot run OpenVINO at bf16: {entry.details.get('fidelity_not_measured')}")
    assert entry.details["measured_with_bf16_units"] == [f for f in BF16_FEATURES if f in cpu_features()]


def _bf16_entry(units: list[str]) -> GraphEntry:
    return GraphEntry.from_dict({"file": "model-openvino.onnx", "precision": "fp16", "outputs": {"128": "vectors_128"},
                                 "bytes": 1, "engine": "openvino", "inference_precision": "bf16",
                                 "measured_with_bf16_units": units}, "engine_graphs[1]")


@pytest.mark.parametrize(("measured", "here"), [(["avx512_bf16"], SAPPHIRE_RAPIDS),
                                                (["amx_bf16", "avx512_bf16"], ZEN4)], ids=["zen4->amx", "amx->zen4"])
def test_bf16_figures_measured_with_other_units_warn_naming_verify(measured, here, monkeypatch) -> None:
    monkeypatch.setattr(selection, "cpu_features", lambda: here)
    warning = selection.kernel_warning(_bf16_entry(measured))
    assert warning and "whose kernels differ" in warning and "colbert-onnx verify" in warning


@pytest.mark.parametrize("here", [ZEN4, frozenset({"avx2"})], ids=["same-units", "no-bf16-units"])
def test_bf16_figures_on_the_same_units_or_none_do_not_warn(here, monkeypatch) -> None:
    """Without bf16 units OpenVINO runs f32: closer to float64 than the figures say, nothing to warn about."""
    monkeypatch.setattr(selection, "cpu_features", lambda: here)
    assert selection.kernel_warning(_bf16_entry(["avx512_bf16"])) is None


@needs_openvino
def test_auto_fp16_on_other_bf16_units_than_the_export_warns_once_loaded(toy_model_dir, tmp_path, monkeypatch) -> None:
    manifest = read_manifest(toy_model_dir)
    entry = next(g for g in manifest.engine_graphs if g.precision == "fp16")
    if not entry.passed_gates(128):  # auto runs onnxruntime then: nothing loads the bf16 graph to warn about
        pytest.skip("the toy's OpenVINO bf16 entry was not measured or missed the fp16 gates on this CPU: "
                    f"{entry.details.get('fidelity_not_measured') or entry.fidelity}")
    if not openvino_attention_fuses_here(toy_model_dir, "fp16"):
        pytest.skip("this CPU's OpenVINO plugin leaves the bf16 graph's attention unfused: auto runs onnxruntime, "
                    "nothing loads the bf16 graph to warn about")
    monkeypatch.setattr(selection, "cpu_features", lambda: SAPPHIRE_RAPIDS
                        if "amx_bf16" not in entry.details["measured_with_bf16_units"] else ZEN4)
    with pytest.warns(FidelityWarning, match="whose kernels differ"):
        described = ColbertEncoder(toy_model_dir, precision="fp16").describe()
    assert described["engine"] == "openvino"


@needs_openvino
def test_verify_names_the_bf16_units_the_export_figures_came_from(toy_model_dir: Path) -> None:
    from colbert_onnx import verify_folder

    entry = next(g for g in read_manifest(toy_model_dir).engine_graphs if g.precision == "fp16")
    if entry.passed_gates(128) is None:
        pytest.skip(f"this CPU cannot run OpenVINO at bf16: {entry.details.get('fidelity_not_measured')}")
    units = entry.details["measured_with_bf16_units"]
    (verdict, *_) = verify_folder(toy_model_dir, engines=["openvino"], precisions=["fp16"])
    verdict_word = "passed" if entry.passed_gates(128) else "missed"
    assert verdict.measured_with == tuple(units)
    assert f"at export: {verdict_word} with {', '.join(units)})" in verdict.line()


@needs_openvino
def test_an_export_without_fp16_writes_no_bf16_entry_and_fp16_stays_not_exported(toy_trio, tmp_path: Path) -> None:
    from colbert_onnx.errors import PrecisionNotAvailableError
    from colbert_onnx.export import export_model

    out = export_model([toy_trio[64]], tmp_path / "out", precisions="fp32", engines="onnxruntime,openvino")
    assert [(g.file, g.precision) for g in read_manifest(out).engine_graphs] == [("model-openvino.onnx", "fp32")]
    with pytest.raises(PrecisionNotAvailableError, match="'fp16' was not exported"):
        ColbertEncoder(out, precision="fp16")
