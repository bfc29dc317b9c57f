"""`colbert-onnx verify` / verify_folder: the gate figures recomputed from the reference vectors a folder carries,
with the engines at hand; a graph made to miss a gate fails (issue 25)."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from colbert_onnx import ColbertEncoder, EngineUnavailableError, InvalidInputError, ModelFolderError, verify_folder
from colbert_onnx.cli import main
from colbert_onnx.manifest import read_manifest, write_manifest
from colbert_onnx.model_folder import graph_files, graph_fingerprint


def test_export_writes_reference_vectors_of_every_head(toy_model_dir: Path) -> None:
    record = read_manifest(toy_model_dir).reference
    assert record["heads"] == [128, 96, 64]
    with np.load(toy_model_dir / record["file"]) as data:
        assert data["queries_128"].shape == (len(record["texts"]["queries"]), 32, 128)


def test_every_exported_graph_passes_verify_on_onnxruntime(toy_model_dir: Path) -> None:
    verdicts = verify_folder(toy_model_dir, engines=["onnxruntime"])
    assert {(v.precision, v.dim) for v in verdicts} == {(p, d) for p in ("fp32", "int8", "fp16") for d in (128, 96, 64)}
    assert all(v.passed for v in verdicts)


def test_verify_reproduces_the_export_figures_on_the_same_cpu(toy_model_dir: Path) -> None:
    graph = read_manifest(toy_model_dir).graphs[1]  # int8: figures far enough from 1 to compare
    (verdict,) = [v for v in verify_folder(toy_model_dir, engines=["onnxruntime"], precisions=["int8"]) if v.dim == 128]
    assert verdict.metrics["mean_token_cosine"] == pytest.approx(graph.fidelity["128"]["mean_token_cosine"], abs=1e-6)
    assert verdict.metrics["top10_overlap"] == pytest.approx(graph.fidelity["128"]["top10_overlap"])


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                    reason="the OpenVINO engine needs the [openvino] extra (openvino)")
def test_verify_on_openvino_agrees_with_the_export_verdicts_made_on_this_cpu(toy_model_dir: Path) -> None:
    """f32 passes everywhere; bf16's verdict is this CPU's (a CPU without bf16 units runs it at f32 and the export
    recorded it as not measured)."""
    verdicts = verify_folder(toy_model_dir, engines=["openvino"], precisions=["fp32", "fp16"])
    assert [(v.precision, v.dim) for v in verdicts] == [(p, d) for p in ("fp32", "fp16") for d in (128, 96, 64)]
    assert {v.graph for v in verdicts} == {"model-openvino.onnx"}
    assert all(v.passed for v in verdicts if v.precision == "fp32")
    assert all(v.passed == v.passed_at_export for v in verdicts if v.passed_at_export is not None)
    from benchmarks.peers import cpu_has_bf16

    # a CPU without bf16 units runs the bf16 entry at f32, and says so
    assert f"inference precision {'bf16' if cpu_has_bf16() else 'f32'}" in verdicts[-1].engine_detail


@pytest.fixture
def missed_folder(toy_model_dir: Path, tmp_path: Path) -> Path:
    """The toy folder with its fp32 graph replaced by the int8 one: a graph that misses the fp32 gates."""
    folder = shutil.copytree(toy_model_dir, tmp_path / "missed")
    shutil.copyfile(folder / "model-int8.onnx", folder / "model.onnx")
    manifest = read_manifest(folder)
    graphs = tuple(dataclasses.replace(g, bytes=(folder / g.file).stat().st_size,  # as an export writing it records
                                       fingerprint=graph_fingerprint(graph_files(folder, g))) for g in manifest.graphs)
    write_manifest(folder, dataclasses.replace(manifest, graphs=graphs))
    return folder


def test_a_graph_that_misses_a_gate_fails_verify(missed_folder: Path) -> None:
    verdicts = verify_folder(missed_folder, engines=["onnxruntime"], precisions=["fp32"])
    assert verdicts and not any(v.passed for v in verdicts)
    assert all(v.passed_at_export for v in verdicts)  # the export's verdict was for the graph it wrote


def test_verify_command_exits_1_naming_the_failed_graph(missed_folder: Path, capsys) -> None:
    assert main(["verify", str(missed_folder), "--engine", "onnxruntime", "--precision", "fp32"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  onnxruntime fp32   128" in out and "CPU features read:" in out
    assert "missed: mean_token_cosine 0.99" in out and "< 0.99999" in out  # the gate it missed, with its threshold


def test_verify_command_exits_0_when_every_gate_holds(toy_model_dir: Path, capsys) -> None:
    assert main(["verify", str(toy_model_dir), "--engine", "onnxruntime", "--precision", "fp32", "--json"]) == 0
    assert capsys.readouterr().out.count('"passed": true') == 3


@pytest.mark.parametrize("flags", [["--precision", "fp8"], ["--precision", "FP32"], ["--threads", "-1"],
                                   ["--threads", "0"], ["--threads", "99999999999999999999"]],
                         ids=["fp8", "FP32", "threads-1", "threads0", "threads-huge"])
def test_verify_command_refuses_what_it_cannot_measure_with_exit_2(toy_model_dir: Path, flags, capsys) -> None:
    assert main(["verify", str(toy_model_dir), "--engine", "onnxruntime", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colbert-onnx: error:") and ("precision" in err or "threads" in err), err


@pytest.mark.parametrize("precisions", ["fp", ["fp"], [], ["fp32", "int4"]])
def test_verify_folder_refuses_an_unknown_precision_instead_of_matching_part_of_it(toy_model_dir: Path,
                                                                                  precisions) -> None:
    with pytest.raises(InvalidInputError, match="precision"):
        verify_folder(toy_model_dir, engines=["onnxruntime"], precisions=precisions)


def test_verify_folder_takes_one_precision_as_a_str(toy_model_dir: Path) -> None:
    verdicts = verify_folder(toy_model_dir, engines="onnxruntime", precisions="int8")
    assert verdicts and {(v.engine, v.precision) for v in verdicts} == {("onnxruntime", "int8")}


def test_verify_command_that_finds_nothing_to_measure_exits_2_saying_so(toy_model_dir: Path, tmp_path: Path,
                                                                       capsys) -> None:
    folder = shutil.copytree(toy_model_dir, tmp_path / "no-openvino")
    write_manifest(folder, dataclasses.replace(read_manifest(folder), engine_graphs=()))
    assert main(["verify", str(folder), "--engine", "openvino"]) == 2
    assert "nothing to verify" in capsys.readouterr().err


def test_a_folder_without_reference_vectors_is_a_typed_error(toy_model_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(toy_model_dir, tmp_path / "old")
    write_manifest(folder, dataclasses.replace(read_manifest(folder), reference=None))
    with pytest.raises(ModelFolderError, match="carries no reference vectors"):
        verify_folder(folder)


def test_a_changed_reference_file_is_a_typed_error(toy_model_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(toy_model_dir, tmp_path / "changed")
    np.savez(folder / "reference.npz", queries_128=np.zeros((1, 32, 128), np.float16))
    with pytest.raises(ModelFolderError, match="sha256"):
        verify_folder(folder)


@pytest.fixture(scope="module")
def near_tied_folder(tmp_path_factory) -> Path:
    """Sharp family member 0 at fp32: its MaxSim scores sit so close together that fp32 itself moves its top-10
    (0.946 against float64 on a Zen 4), so rank gates react to any rounding of the reference."""
    from colbert_onnx.export import export_model
    from colbert_onnx.export.outlier_family import build_member, draw_sharp_member

    member = draw_sharp_member(0)
    trio = build_member(member, tmp_path_factory.mktemp("sharp-0") / "ckpt")
    return export_model([trio[d] for d in member.dims], tmp_path_factory.mktemp("sharp-0-onnx") / "out",
                        precisions="fp32", engines="onnxruntime")


def test_verify_reproduces_every_export_figure_where_rankings_are_near_ties(near_tied_folder: Path) -> None:
    """A reference stored at lower precision than float64 (float16 was tried) turned top-10 0.946 into 0.283 here."""
    graph = read_manifest(near_tied_folder).graphs[0]
    verdicts = verify_folder(near_tied_folder, engines=["onnxruntime"], precisions=["fp32"])
    assert len(verdicts) == 3
    for verdict in verdicts:
        exported = graph.fidelity[str(verdict.dim)]
        for key in ("mean_token_cosine", "min_token_cosine", "worst_text_mean_token_cosine", "top10_overlap",
                    "min_top10_overlap", "spearman", "min_spearman", "score_resolution"):
            assert verdict.metrics[key] == pytest.approx(exported[key], abs=1e-9), (verdict.dim, key)
        assert verdict.passed == verdict.passed_at_export


@pytest.mark.parametrize("resolution", [-1.0, float("nan"), "0.1", True, [0.1]])
def test_a_score_resolution_the_reference_cannot_have_is_a_typed_error(toy_model_dir: Path, tmp_path: Path,
                                                                         resolution) -> None:
    folder = shutil.copytree(toy_model_dir, tmp_path / "bad")
    manifest = read_manifest(folder)
    write_manifest(folder, dataclasses.replace(manifest, reference={**manifest.reference,
                                                                    "score_resolution": {"128": resolution}}))
    with pytest.raises(ModelFolderError, match="score_resolution"):
        verify_folder(folder, engines=["onnxruntime"], precisions=["fp32"])


def test_the_reference_is_stored_at_float64(toy_model_dir: Path) -> None:
    with np.load(toy_model_dir / read_manifest(toy_model_dir).reference["file"]) as data:
        assert {data[k].dtype for k in data.files} == {np.dtype(np.float64)}


# --- verify --record: a graph the export could not measure, measured where it runs ----------------------------

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="the OpenVINO engine needs the [openvino] extra (openvino)")


def _copy_with_openvino_entries(source: Path, copy: Path, precision: str, **details) -> Path:
    """A copy of `source` whose OpenVINO entries at `precision` carry `details`; with fidelity_not_measured, their
    figures are dropped, as an export records a graph it could not measure. Skips where there is no such entry."""
    folder = shutil.copytree(source, copy)
    manifest = read_manifest(folder)
    if not [g for g in manifest.engine_graphs if g.precision == precision]:
        pytest.skip(f"the toy folder has no OpenVINO {precision} graph (NNCF not installed, or none passed here)")
    graphs = tuple(dataclasses.replace(g, details={**g.details, **details}, fidelity=(
        None if "fidelity_not_measured" in details else g.fidelity)) if g.precision == precision else g
        for g in manifest.engine_graphs)
    write_manifest(folder, dataclasses.replace(manifest, engine_graphs=graphs))
    return folder


@pytest.fixture
def unmeasured_folder(toy_model_dir: Path, tmp_path: Path) -> Path:
    """The toy folder with its OpenVINO f32 entry recorded as not measured, as an export where OpenVINO could not
    run it (or a bf16 entry exported on a CPU without bf16 units) records it."""
    return _copy_with_openvino_entries(toy_model_dir, tmp_path / "unmeasured", "fp32", fidelity_not_measured="not run")


@needs_openvino
def test_verify_record_lets_this_cpu_run_an_openvino_graph_the_export_could_not_measure(unmeasured_folder) -> None:
    with pytest.raises(EngineUnavailableError, match="not measured .*--record"):
        ColbertEncoder(unmeasured_folder, engine="openvino")
    verdicts = verify_folder(unmeasured_folder, engines=["openvino"], precisions=["fp32"], record=True)
    assert len(verdicts) == 3 and all(v.passed for v in verdicts)
    encoder = ColbertEncoder(unmeasured_folder, engine="openvino", dim=96)
    for described in (encoder.describe(), encoder.for_dim(64).describe()):
        assert (described["engine"], described["passed_gates"], described["gates_verified_here"]) == (
            "openvino", True, True)


@needs_openvino
def test_a_verify_record_counts_only_on_cpus_with_the_same_int8_and_bf16_units(unmeasured_folder, monkeypatch) -> None:
    from colbert_onnx.engines import selection
    from colbert_onnx.verified import KERNEL_FEATURES

    verify_folder(unmeasured_folder, engines=["openvino"], precisions=["fp32"], record=True)
    here = selection.cpu_features()
    other = here ^ {KERNEL_FEATURES[0]}  # this CPU with amx_int8 added, or taken away
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(other))
    with pytest.raises(EngineUnavailableError, match="not measured"):
        ColbertEncoder(unmeasured_folder, engine="openvino")


@needs_openvino
def test_a_graph_that_missed_when_verified_here_is_refused_saying_so(unmeasured_folder, monkeypatch) -> None:
    from colbert_onnx import fidelity

    with monkeypatch.context() as patch:
        patch.setitem(fidelity.GATES, "fp32", {**fidelity.GATES["fp32"], "mean_token_cosine": 1.01})
        verdicts = verify_folder(unmeasured_folder, engines=["openvino"], precisions=["fp32"], record=True)
    assert verdicts and not any(v.passed for v in verdicts)
    with pytest.raises(EngineUnavailableError, match="missed the fidelity gates of fp32 when `verify --record`"):
        ColbertEncoder(unmeasured_folder, engine="openvino")


@needs_openvino
def test_without_bf16_units_a_passing_bf16_entry_does_not_stand_in_for_its_f32_entry_that_missed_here(
        toy_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Its float parts would run at f32 here, which is what its f32 entry is, and that one missed when verified
    here: refused, not run through the bf16 entry's verdict from a CPU with bf16 units."""
    from colbert_onnx import fidelity
    from colbert_onnx import verify as verify_module
    from colbert_onnx.engines import selection

    folder = shutil.copytree(toy_model_dir, tmp_path / "int8")
    manifest = read_manifest(folder)
    f32 = next((g for g in manifest.engine_graphs if g.precision == "int8"), None)
    if f32 is None:
        pytest.skip("the toy folder has no OpenVINO int8 graph (NNCF not installed, or none passed here)")
    as_exported_on_a_bf16_cpu = {"inference_precision": "bf16", "measured_with_bf16_units": ["avx512_bf16"]}
    graphs = tuple(g for g in manifest.engine_graphs if not (g.precision == "int8" and g is not f32)) + (
        dataclasses.replace(f32, details={**{k: v for k, v in f32.details.items() if k != "fidelity_not_measured"},
                                          **as_exported_on_a_bf16_cpu}),)
    write_manifest(folder, dataclasses.replace(manifest, engine_graphs=graphs))
    avx2 = frozenset({"avx2", "fma"})
    monkeypatch.setattr(selection, "cpu_features", lambda: avx2)
    monkeypatch.setattr(verify_module, "cpu_features", lambda: avx2)
    with monkeypatch.context() as patch:
        patch.setitem(fidelity.GATES, "int8", {**fidelity.GATES["int8"], "mean_token_cosine": 1.01})
        verify_folder(folder, engines=["openvino"], precisions=["int8"], record=True)
    with pytest.raises(EngineUnavailableError, match="missed"):
        ColbertEncoder(folder, precision="int8", engine="openvino")


@needs_openvino
def test_a_bf16_entry_openvino_ran_at_f32_here_is_not_recorded(toy_model_dir: Path, tmp_path: Path) -> None:
    """Its figures would be f32's: a CPU without bf16 units records nothing for it, one with them records it."""
    from colbert_onnx.engines.choice import BF16_FEATURES, cpu_features
    from colbert_onnx.verified import read_records

    folder = shutil.copytree(toy_model_dir, tmp_path / "bf16")
    verify_folder(folder, engines=["openvino"], precisions=["fp16"], record=True)
    recorded = [r for r in read_records(folder) if r["inference_precision"] == "bf16"]
    assert bool(recorded) == bool(cpu_features() & set(BF16_FEATURES))


def test_a_record_of_another_export_does_not_count(toy_model_dir: Path, tmp_path: Path) -> None:
    from colbert_onnx.engines.choice import cpu_features
    from colbert_onnx.model_folder import open_model_folder
    from colbert_onnx.verified import VERIFIED_FILE, verified_here

    folder = shutil.copytree(toy_model_dir, tmp_path / "other-export")
    verify_folder(folder, engines=["onnxruntime"], precisions=["int8"], record=True)
    opened = open_model_folder(folder)
    graph = opened.graph_for(128, "int8")
    assert verified_here(opened, graph, 128, cpu_features()) is True
    path = folder / VERIFIED_FILE
    path.write_text(path.read_text().replace(read_manifest(folder).reference["sha256"], "0" * 64))
    assert verified_here(opened, graph, 128, cpu_features()) is None


def test_a_damaged_verify_record_is_a_typed_error_naming_it(toy_model_dir: Path, tmp_path: Path) -> None:
    from colbert_onnx.verified import VERIFIED_FILE

    folder = shutil.copytree(toy_model_dir, tmp_path / "damaged")
    for damaged in ("{not json", '{"records": [{"engine": "openvino"}]}', '{"records": {}}'):
        (folder / VERIFIED_FILE).write_text(damaged)
        with pytest.raises(ModelFolderError, match="verified.json is not a verify record"):
            verify_folder(folder, engines=["onnxruntime"], precisions=["fp32"], record=True)


def test_verify_command_record_says_where_and_for_which_units(toy_model_dir: Path, tmp_path: Path, capsys) -> None:
    folder = shutil.copytree(toy_model_dir, tmp_path / "cli")
    assert main(["verify", str(folder), "--engine", "onnxruntime", "--precision", "fp32", "--record"]) == 0
    assert f"recorded in {folder / 'verified.json'} for CPUs with" in capsys.readouterr().out
    assert (folder / "verified.json").is_file() and not list(folder.glob(".verified.json.*"))


def test_verify_without_record_writes_nothing_into_the_folder(toy_model_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(toy_model_dir, tmp_path / "read-only-use")
    verify_folder(folder, engines=["onnxruntime"], precisions=["fp32"])
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in toy_model_dir.iterdir())


@needs_openvino
def test_auto_runs_an_openvino_int8_graph_once_verify_recorded_it_passing_on_a_cpu_with_these_units(
        toy_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """As on a Zen 4 (fed flags, this CPU's kernels) serving a folder whose OpenVINO int8 the export did not measure:
    auto keeps onnxruntime saying why, until `verify --record` measured it here. Then the rule picks OpenVINO, which
    runs where its attention fuses (VNNI, AMX) and otherwise hands over to onnxruntime saying so."""
    from colbert_onnx import verify as verify_module
    from colbert_onnx.engines import selection

    folder = _copy_with_openvino_entries(toy_model_dir, tmp_path / "int8", "int8", fidelity_not_measured="not run")
    zen4 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
    monkeypatch.setattr(selection, "cpu_features", lambda: zen4)
    monkeypatch.setattr(verify_module, "cpu_features", lambda: zen4)
    before = ColbertEncoder(folder, precision="int8").describe()
    assert before["engine"] == "onnxruntime" and "not measured" in before["engine_reason"]
    verify_folder(folder, engines=["openvino"], precisions=["int8"], record=True)
    after = ColbertEncoder(folder, precision="int8").describe()
    assert (after["engine"], after["graph"]) == ("openvino", "model-openvino-int8.xml") or (
        "did not fuse" in after["engine_reason"])


@needs_openvino
def test_a_verify_record_made_here_silences_the_other_kernels_warning(toy_model_dir: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    """An OpenVINO int8 graph measured with VNNI, forced onto an AVX2-only CPU (fed flags), warns naming verify;
    once `verify --record` passed it here, it loads without the warning."""
    import warnings

    from colbert_onnx import FidelityWarning
    from colbert_onnx import verify as verify_module
    from colbert_onnx.engines import selection

    folder = _copy_with_openvino_entries(toy_model_dir, tmp_path / "vnni-measured", "int8",
                                         measured_with_int8_units=["avx512_vnni"])
    avx2 = frozenset({"avx2", "fma"})
    monkeypatch.setattr(selection, "cpu_features", lambda: avx2)
    monkeypatch.setattr(verify_module, "cpu_features", lambda: avx2)
    with pytest.warns(FidelityWarning, match="--record"):
        ColbertEncoder(folder, precision="int8", engine="openvino")
    verify_folder(folder, engines=["openvino"], precisions=["int8"], record=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FidelityWarning)
        ColbertEncoder(folder, precision="int8", engine="openvino")
