"""int8 on the OpenVINO engine (issue 25): NNCF's int8 of the plain-ops graph, written only where it passes the int8
gates against float64, chosen by `auto` on CPUs with int8 dot-product units (AMX-INT8, AVX512-VNNI), refused or
skipped with a reason elsewhere; NNCF's defaults shown to miss the gates on an outlier checkpoint."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from openvino_fusion import openvino_attention_fuses_here

from colbert_onnx import ColbertEncoder, FidelityWarning, verify_folder
from colbert_onnx.engines import selection
from colbert_onnx.engines.choice import choose_engine
from colbert_onnx.manifest import GraphEntry, read_manifest, write_manifest
from colbert_onnx.model_folder import graph_files, graph_fingerprint

SAPPHIRE_RAPIDS = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}
ZEN4 = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
ZEN3 = {"avx2", "fma"}
ICE_LAKE = {"avx2", "avx512f", "avx512_vnni"}  # AVX-512 VNNI, no bf16 units
ALDER_LAKE = {"avx2", "avx_vnni"}  # 256-bit VNNI only: OpenVINO int8 not measured faster there
ALLOWED = {"onnxruntime": None, "openvino": None}
MISSED = {"onnxruntime": None, "openvino": "the OpenVINO graph model-openvino-int8.xml missed the fidelity gates"}
TEXTS = ["Berlin is the capital of Germany.", "Paris ist die Hauptstadt von Frankreich, an der Seine.",
         "東京は日本の首都です。" * 3, "def f(x): return x + 1  # code"]

needs_nncf = pytest.mark.skipif(
    importlib.util.find_spec("nncf") is None or importlib.util.find_spec("openvino") is None,
    reason="OpenVINO int8 is made by NNCF at export: needs the [export] and [openvino] extras (nncf, openvino)")


# --- the rule, fed CPU feature sets ------------------------------------------------------------------------------

@pytest.mark.parametrize("features", [SAPPHIRE_RAPIDS, ZEN4], ids=["amx", "avx512-vnni"])
def test_int8_on_a_cpu_with_int8_dot_product_units_picks_openvino(features: set[str]) -> None:
    picked = choose_engine(features, "int8", ALLOWED.get)
    assert picked.engine == "openvino" and ("amx_int8" in picked.reason or "avx512_vnni" in picked.reason)


@pytest.mark.parametrize("features", [ZEN3, ALDER_LAKE, set()], ids=["avx2", "avx-vnni", "none"])
def test_int8_on_a_cpu_without_amx_or_avx512_vnni_picks_onnxruntime(features: set[str]) -> None:
    assert choose_engine(features, "int8", ALLOWED.get).engine == "onnxruntime"


def test_the_rule_reads_the_int8_flags_it_names() -> None:
    from colbert_onnx.engines import choice

    assert set(choice.INT8_FEATURES) <= set(choice.READ_FEATURES)


def test_int8_where_the_openvino_graph_missed_the_gates_picks_onnxruntime_and_says_why() -> None:
    picked = choose_engine(SAPPHIRE_RAPIDS, "int8", MISSED.get)
    assert picked.engine == "onnxruntime" and "missed the fidelity gates" in picked.reason


# --- the export, on an outlier checkpoint ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def outlier_folder(request: pytest.FixtureRequest) -> Path:
    """The outlier trio's default export (conftest.py), which has OpenVINO's int8 search where NNCF is installed."""
    if importlib.util.find_spec("nncf") is None or importlib.util.find_spec("openvino") is None:
        pytest.skip("OpenVINO int8 is made by NNCF at export: needs the [export] and [openvino] extras")
    return request.getfixturevalue("outlier_model_dir")


def _openvino_int8(folder: Path, inference: str = "f32"):
    """The folder's OpenVINO int8 entries whose float parts run at `inference` (f32: the one the search measured)."""
    return [g for g in read_manifest(folder).engine_graphs
            if g.precision == "int8" and g.details.get("inference_precision") == inference]


@pytest.fixture(scope="module")
def openvino_int8_folder(outlier_folder: Path) -> Path:
    """The outlier folder, which has an OpenVINO int8 graph on CPUs with int8 dot-product units (measured on
    AVX512-VNNI). Elsewhere OpenVINO's int8 runs other kernels (AVX2's u8 x s8 pairs saturate in int16) and the
    export may rightly write none: then the tests that need the graph skip, saying so."""
    from colbert_onnx.engines.choice import EXACT_INT8_FEATURES, cpu_features

    if not _openvino_int8(outlier_folder) and not cpu_features() & set(EXACT_INT8_FEATURES):
        (record,) = json.loads((outlier_folder / "manifest.json").read_text())["openvino_int8"]
        pytest.skip(f"no OpenVINO int8 on this CPU without VNNI/AMX: {record.get('reason')} {record.get('attempts')}")
    return outlier_folder


@needs_nncf
def test_openvinos_int8_attention_is_fused_only_on_cpus_with_int8_dot_product_units(outlier_folder: Path) -> None:
    """NNCF quantizes Q and K; OpenVINO's CPU plugin fuses int8 attention only with VNNI or AMX. Unfused, one
    document of n tokens holds heads x n x n floats (17 GB at 8192 tokens, 16 heads, on an AVX2 Zen 3): one more
    reason `auto` keeps onnxruntime's int8 there, and what describe() says when the engine is forced. The graph: the
    export's with every MatMul int8, or NNCF's at the first alpha where the export wrote none."""
    import openvino as ov

    from colbert_onnx.engines.choice import EXACT_INT8_FEATURES, cpu_features
    from colbert_onnx.engines.openvino_engine import attention_fused
    from colbert_onnx.export.openvino_int8 import SMOOTH_ALPHAS, quantize
    from colbert_onnx.export.precisions import calibration_feeds

    if "ONEDNN_MAX_CPU_ISA" in os.environ:
        pytest.skip("ONEDNN_MAX_CPU_ISA caps the plugin's ISA below this CPU's flags")
    written = [g for g in _openvino_int8(outlier_folder) if not g.details.get("kept_float_matmuls")]
    if written:  # the export's own graph: every MatMul int8
        model = str(outlier_folder / written[0].file)
    else:
        plain = outlier_folder / read_manifest(outlier_folder).engine_graphs[0].file
        model = quantize(plain, calibration_feeds(ColbertEncoder(outlier_folder).preprocessor), SMOOTH_ALPHAS[0])
    real = cpu_features("/proc/cpuinfo")  # the kernels' CPU, also under tests/cpu_class.py
    fused = attention_fused(ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}))
    assert fused is bool(real & set(EXACT_INT8_FEATURES))


@needs_nncf
def test_export_writes_an_openvino_int8_graph_that_passes_the_int8_gates_on_every_head(openvino_int8_folder) -> None:
    (graph,) = _openvino_int8(openvino_int8_folder)
    assert graph.file.endswith(".xml") and (openvino_int8_folder / graph.external_data).is_file()
    assert {d: m["passed"] for d, m in graph.fidelity.items()} == {"128": True, "96": True, "64": True}
    assert graph.details["inference_precision"] == "f32" and graph.details["kept_float_types"] == ["Gather"]


@needs_nncf
def test_the_manifest_records_what_the_openvino_int8_search_tried(openvino_int8_folder: Path) -> None:
    (record,) = json.loads((openvino_int8_folder / "manifest.json").read_text())["openvino_int8"]
    assert record["written"] == "model-openvino-int8.xml"
    assert record["attempts"][-1]["passed"] and record["attempts"][-1]["gate_margin"] >= 0


@needs_nncf
def test_verify_recomputes_the_openvino_int8_figures_here(openvino_int8_folder: Path) -> None:
    verdicts = [v for v in verify_folder(openvino_int8_folder, engines=["openvino"], precisions=["int8"])
                if v.inference_precision == "f32"]
    assert [v.dim for v in verdicts] == [128, 96, 64] and all(v.passed for v in verdicts)
    exported = _openvino_int8(openvino_int8_folder)[0].fidelity["128"]["mean_token_cosine"]
    assert verdicts[0].metrics["mean_token_cosine"] == pytest.approx(exported, abs=1e-6)


@pytest.fixture(scope="module")
def nncf_defaults_folder(openvino_int8_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The outlier folder with its OpenVINO int8 graph replaced by NNCF's defaults (SmoothQuant alpha 0.95, the
    embedding table quantized): the graph the exporter must not ship."""
    import nncf
    import openvino as ov

    from colbert_onnx.export.precisions import calibration_feeds
    from colbert_onnx.tokenization import Preprocessor

    folder = shutil.copytree(openvino_int8_folder, tmp_path_factory.mktemp("nncf-defaults") / "model")
    manifest = read_manifest(folder)
    tokenizer, special = ColbertEncoder(folder).folder.load_tokenizer()
    pre = Preprocessor(tokenizer, special, manifest.query.max_length, int(manifest.reference["document_max_length"]))
    calibration = calibration_feeds(pre)
    model = nncf.quantize(ov.Core().read_model(str(folder / "model-openvino.onnx")), nncf.Dataset(calibration),
                          model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))
    ov.save_model(model, str(folder / "model-openvino-int8.xml"), compress_to_fp16=False)
    graphs = tuple(dataclasses.replace(g, bytes=(folder / g.file).stat().st_size + (folder / g.external_data).stat(
        ).st_size, fingerprint=graph_fingerprint(graph_files(folder, g))) if g.precision == "int8" else g
        for g in manifest.engine_graphs)  # as an export writing this graph records it
    write_manifest(folder, dataclasses.replace(manifest, engine_graphs=graphs))
    return folder


@needs_nncf
def test_nncf_defaults_miss_the_int8_gates_on_an_outlier_checkpoint_and_verify_says_so(nncf_defaults_folder) -> None:
    verdicts = verify_folder(nncf_defaults_folder, engines=["openvino"], precisions=["int8"])
    assert verdicts and not any(v.passed for v in verdicts)
    assert min(v.metrics["min_token_cosine"] for v in verdicts) < 0.98


def _search_that_never_passes(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              **options) -> tuple[Path, dict | None, dict, list[tuple]]:
    """The OpenVINO int8 search on a copy of `source` (its int8 files removed), with every measurement a miss, and
    the (alpha, MatMuls kept float) of each quantization it asked for. These tests check the search's order and
    bookkeeping, so the plain graph stands in for NNCF's result (NNCF itself runs in the fc2 and fusion tests)."""
    import openvino as ov

    from colbert_onnx.export import openvino_int8

    asked: list[tuple] = []

    def plain_graph(graph: Path, calibration, alpha: float, kept_float=()):
        asked.append((alpha, list(kept_float) or None))
        return ov.Core().read_model(str(graph))

    monkeypatch.setattr(openvino_int8, "quantize", plain_graph)
    never = {"128": {"passed": False, **{k: 0.0 for k in ("mean_token_cosine", "worst_text_mean_token_cosine",
                                                           "min_token_cosine", "top10_overlap", "spearman")}}}
    folder = shutil.copytree(source, tmp_path / "model")
    (folder / "model-openvino-int8.xml").unlink(missing_ok=True)
    (folder / "model-openvino-int8.bin").unlink(missing_ok=True)
    entry = {"file": "model-openvino.onnx", "outputs": {"128": "vectors_128"}}
    calibration = [{"input_ids": np.array([[0, 5, 6, 2]]), "attention_mask": np.ones((1, 4), np.int64)}]
    graph, record = openvino_int8.build_openvino_int8(folder, entry, calibration, lambda path: never, **options)
    return folder, graph, record, asked


@needs_nncf
def test_without_a_passing_alpha_no_openvino_int8_graph_is_written(outlier_folder: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    from colbert_onnx.export.openvino_int8 import FC2_MATMULS

    folder, graph, record, asked = _search_that_never_passes(outlier_folder, tmp_path, monkeypatch, alphas=(0.5, 0.8))
    assert graph is None and record["written"] is None
    assert [(a["smooth_alpha"], a.get("kept_float_matmuls")) for a in record["attempts"]] == asked == [
        (0.5, None), (0.8, None), (0.5, [FC2_MATMULS]), (0.8, [FC2_MATMULS])]
    assert "MLP down projections (fc2) kept float" in record["reason"]
    assert not (folder / "model-openvino-int8.xml").exists() and not (folder / "model-openvino-int8.bin").exists()


def _mlp_matmul_inputs(xml: Path) -> dict[str, set[str]]:
    """fc1 / fc2 -> the op types feeding the MLP MatMuls of an OpenVINO IR (FakeQuantize: NNCF quantized it)."""
    import openvino as ov

    inputs: dict[str, set[str]] = {"fc1": set(), "fc2": set()}
    for op in ov.Core().read_model(str(xml)).get_ops():
        name = op.get_friendly_name()
        if op.get_type_name() == "MatMul" and "/mlp/fc" in name:
            inputs[name.split("/")[-2]].add(op.input_value(0).get_node().get_type_name())
    return inputs


@needs_nncf
def test_when_no_alpha_passes_with_every_matmul_int8_the_mlp_down_projections_stay_float(outlier_folder: Path,
                                                                                         tmp_path: Path) -> None:
    """Trained weights (all-MiniLM-L6-v2) pass only with fc2 float: the measurement here passes exactly the graphs
    whose fc2 MatMuls NNCF left float, so the search must reach that stage and write it, with fc1 still int8."""
    from colbert_onnx.export.openvino_int8 import FC2_MATMULS, build_openvino_int8

    def passes_with_fc2_float(xml: Path) -> dict:
        passed = "FakeQuantize" not in _mlp_matmul_inputs(xml)["fc2"]
        return {"128": {"passed": passed, **{k: float(passed) for k in (
            "mean_token_cosine", "worst_text_mean_token_cosine", "min_token_cosine", "top10_overlap", "spearman")}}}

    folder = shutil.copytree(outlier_folder, tmp_path / "model")
    for suffix in (".xml", ".bin"):
        (folder / f"model-openvino-int8{suffix}").unlink(missing_ok=True)
    calibration = [{"input_ids": np.array([[0, 5, 6, 2]]), "attention_mask": np.ones((1, 4), np.int64)}]
    graph, record = build_openvino_int8(folder, {"file": "model-openvino.onnx", "outputs": {"128": "vectors_128"}},
                                        calibration, passes_with_fc2_float, alphas=(0.5,))
    assert [(a["smooth_alpha"], a.get("kept_float_matmuls")) for a in record["attempts"]] == [
        (0.5, None), (0.5, [FC2_MATMULS])]  # the order over several alphas: the never-passing search above
    assert graph["kept_float_matmuls"] == [FC2_MATMULS] and graph["faster_only_with_bf16_float_parts"]
    assert "fc2" in graph["method"] and record["written"] == graph["file"]
    inputs = _mlp_matmul_inputs(folder / graph["file"])
    assert inputs["fc1"] == {"FakeQuantize"} and inputs["fc2"] and "FakeQuantize" not in inputs["fc2"]


@needs_nncf
def test_the_openvino_int8_search_stops_at_its_time_budget(outlier_folder: Path, tmp_path: Path, monkeypatch) -> None:
    _, graph, record, asked = _search_that_never_passes(outlier_folder, tmp_path, monkeypatch, budget_seconds=0.0)
    assert graph is None and len(record["attempts"]) == len(asked) == 1 and "budget" in record["reason"]


@needs_nncf
@pytest.mark.parametrize("stage", ["nncf", "measure"])
def test_nncf_or_openvino_failing_ends_the_int8_search_with_its_error_and_no_files(stage, outlier_folder, tmp_path,
                                                                                    monkeypatch) -> None:
    from colbert_onnx.export import openvino_int8

    def fail(*args, **kwargs):
        raise RuntimeError(f"{stage} broke: Supported primitive descriptors list is empty")

    if stage == "nncf":
        monkeypatch.setattr(openvino_int8, "quantize", fail)
    else:  # the plain graph stands in for NNCF's: the measurement of a saved graph fails
        import openvino as ov

        monkeypatch.setattr(openvino_int8, "quantize", lambda graph, *args: ov.Core().read_model(str(graph)))
    folder = shutil.copytree(outlier_folder, tmp_path / "model")
    for suffix in (".xml", ".bin"):
        (folder / f"model-openvino-int8{suffix}").unlink(missing_ok=True)
    calibration = [{"input_ids": np.array([[0, 5, 6, 2]]), "attention_mask": np.ones((1, 4), np.int64)}]
    graph, record = openvino_int8.build_openvino_int8(folder, {"file": "model-openvino.onnx", "outputs": {
        "128": "vectors_128"}}, calibration, fail)
    assert graph is None and record["written"] is None and len(record["attempts"]) == 1
    assert record["reason"].startswith("NNCF's int8 failed at SmoothQuant alpha 0.5: RuntimeError: " + stage)
    assert not list(folder.glob("model-openvino-int8.*"))


# --- the runtime -------------------------------------------------------------------------------------------------

@needs_nncf
def test_auto_int8_on_an_avx512_vnni_cpu_runs_the_openvino_int8_graph_where_its_attention_fuses(
        openvino_int8_folder, monkeypatch) -> None:
    """Fed a Zen 4's flags, auto picks OpenVINO's int8; the plugin compiling it on this CPU decides whether it runs:
    on a real VNNI or AMX CPU attention fuses and it does, on an AVX2 CPU it does not and onnxruntime runs."""
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(ZEN4))
    fused = openvino_attention_fuses_here(openvino_int8_folder, "int8")
    described = ColbertEncoder(openvino_int8_folder, precision="int8").describe()
    if fused:
        assert (described["engine"], described["graph"], described["passed_gates"]) == (
            "openvino", "model-openvino-int8.xml", True)
    else:
        assert described["engine"] == "onnxruntime" and "did not fuse" in described["engine_reason"]


@needs_nncf
def test_auto_int8_on_an_avx2_cpu_runs_onnxruntime(outlier_folder, monkeypatch) -> None:
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(ZEN3))
    assert ColbertEncoder(outlier_folder, precision="int8").describe()["engine"] == "onnxruntime"


@needs_nncf
def test_openvino_int8_documents_stay_close_to_onnxruntime_fp32(openvino_int8_folder) -> None:
    fp32 = ColbertEncoder(openvino_int8_folder, engine="onnxruntime")
    int8 = ColbertEncoder(openvino_int8_folder, precision="int8", engine="openvino")
    for a, b in zip(fp32.encode_documents(TEXTS), int8.encode_documents(TEXTS), strict=True):
        assert float((a * b).sum(-1).min()) > 0.98


def test_an_export_without_nncf_writes_no_openvino_int8_and_says_why(toy_trio, tmp_path, monkeypatch) -> None:
    from colbert_onnx.export import export_model, openvino_graphs

    monkeypatch.setattr(openvino_graphs, "nncf_available", lambda: False)
    folder = export_model([toy_trio[128]], tmp_path / "model", precisions="fp32,int8")
    assert not [g for g in read_manifest(folder).engine_graphs if g.precision == "int8"]
    if read_manifest(folder).engine_graphs:  # openvino installed: the int8 search was skipped and said why
        (record,) = json.loads((folder / "manifest.json").read_text())["openvino_int8"]
        assert record["written"] is None and "NNCF" in record["reason"]


@needs_nncf
def test_the_openvino_int8_graph_has_a_bf16_float_parts_entry_held_to_the_int8_gates(openvino_int8_folder) -> None:
    """OpenVINO's own default for an int8 model on a bf16 CPU: the same file with its float parts at bf16, measured
    apart (on the outlier trio it misses where the f32 rest passes, on AVX512-BF16), or recorded as not measured on a
    CPU that runs it at f32."""
    (f32_rest,) = _openvino_int8(openvino_int8_folder)
    (bf16_rest,) = _openvino_int8(openvino_int8_folder, "bf16")
    assert bf16_rest.file == f32_rest.file and "float parts at bf16" in bf16_rest.details["method"]
    if bf16_rest.fidelity:
        assert set(bf16_rest.fidelity["128"]) >= {"min_token_cosine", "top10_overlap", "passed"}
        assert bf16_rest.details["measured_with_bf16_units"]
    else:
        assert "not bf16" in bf16_rest.details["fidelity_not_measured"]


class _Folder:
    """What openvino_graph reads of a model folder: its engine graphs for a head and precision."""

    def __init__(self, *graphs: GraphEntry) -> None:
        self.graphs = list(graphs)

    def engine_graphs_for(self, engine: str, dim: int, precision: str) -> list[GraphEntry]:
        return [g for g in self.graphs if g.precision == precision]


def _int8_entry(inference: str, passed: bool | None) -> GraphEntry:
    fidelity = None if passed is None else {"128": {"passed": passed}}
    return GraphEntry.from_dict({"file": "model-openvino-int8.xml", "precision": "int8", "engine": "openvino",
                                 "outputs": {"128": "vectors_128"}, "bytes": 1, "inference_precision": inference,
                                 **({"fidelity": fidelity} if fidelity else {})}, "engine_graphs[2]")


@pytest.mark.parametrize(("features", "bf16_passed", "runs"), [
    (ZEN4, True, "bf16"), (ZEN4, False, "f32"), (ZEN4, None, "f32"),
    (SAPPHIRE_RAPIDS, True, "bf16"), (ICE_LAKE, True, "f32")],
    ids=["bf16-cpu", "bf16-rest-missed", "bf16-rest-not-measured", "amx", "no-bf16-units"])
def test_int8_on_openvino_runs_bf16_float_parts_only_on_bf16_units_where_they_passed(features, bf16_passed, runs,
                                                                                       monkeypatch) -> None:
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(features))
    folder = _Folder(_int8_entry("f32", True), _int8_entry("bf16", bf16_passed))
    assert selection.openvino_graph(folder, 128, "int8").details["inference_precision"] == runs


def _fc2_float_entry(inference: str, passed: bool | None) -> GraphEntry:
    entry = _int8_entry(inference, passed)
    return dataclasses.replace(entry, details={**entry.details, "faster_only_with_bf16_float_parts": True})


@pytest.mark.parametrize(("features", "bf16_passed", "runs"), [
    (ZEN4, True, "bf16"), (SAPPHIRE_RAPIDS, True, "bf16"), (ZEN4, False, None), (ZEN4, None, None),
    (ICE_LAKE, True, None)],
    ids=["bf16-cpu", "amx", "bf16-rest-missed", "bf16-rest-not-measured", "no-bf16-units"])
def test_auto_runs_an_fc2_float_int8_graph_only_with_its_float_parts_at_bf16(features, bf16_passed, runs,
                                                                            monkeypatch) -> None:
    """0.72x onnxruntime's int8 with f32 float parts, 1.15x with bf16 ones (Zen 4): auto never picks the slower one."""
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(features))
    folder = _Folder(_fc2_float_entry("f32", True), _fc2_float_entry("bf16", bf16_passed))
    monkeypatch.setattr("colbert_onnx.engines.openvino_engine.openvino_available", lambda: True)  # fed entries only
    refusal = selection.openvino_refusal(folder, 128, "int8", "cpu", auto=True)
    if runs is None:
        assert refusal and "MLP down projections float" in refusal
        assert selection.openvino_refusal(folder, 128, "int8", "cpu") is None  # forced: runs the passing f32 entry
    else:
        assert refusal is None
        assert selection.openvino_graph(folder, 128, "int8").details["inference_precision"] == runs


def test_int8_on_openvino_without_a_passing_entry_names_the_first_for_its_refusal(monkeypatch) -> None:
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(ZEN4))
    graph = selection.openvino_graph(_Folder(_int8_entry("f32", False), _int8_entry("bf16", False)), 128, "int8")
    assert graph.details["inference_precision"] == "f32" and graph.passed_gates(128) is False
    assert selection.openvino_graph(_Folder(), 128, "int8") is None


def test_bf16_float_parts_measured_on_amx_warn_on_avx512_bf16(monkeypatch) -> None:
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(ZEN4))
    entry = _int8_entry("bf16", True)
    entry = dataclasses.replace(entry, details={**entry.details, "measured_with_bf16_units": ["amx_bf16",
                                                                                               "avx512_bf16"]})
    warning = selection.kernel_warning(entry)
    assert warning and "passed the int8 gates at bf16" in warning and "whose kernels differ" in warning


# --- the class: outlier and sharp family members ----------------------------------------------------------------

@needs_nncf
@pytest.mark.slow
@pytest.mark.parametrize("kind,seed", [("outlier", 0), ("outlier", 1), ("outlier", 2), ("outlier", 3), ("outlier", 4),
                                       ("sharp", 1), ("sharp", 3)])
def test_auto_int8_never_runs_an_openvino_graph_that_misses_the_gates(kind, seed, tmp_path, monkeypatch) -> None:
    """On every member: either the export wrote an OpenVINO int8 graph and it passes verify here, or it wrote none,
    said why, and auto int8 runs onnxruntime on an AVX512-VNNI CPU. (Measured: outlier members 0, 1, 2, 4 get one at
    alpha 0.5; member 3, whose fp32 already misses, and the sharp members get none: docs/engines.md.)"""
    from colbert_onnx.export import export_model
    from colbert_onnx.export.outlier_family import build_member, draw_member, draw_sharp_member

    member = draw_member(seed) if kind == "outlier" else draw_sharp_member(seed)
    trio = build_member(member, tmp_path / "ckpt")
    with warnings.catch_warnings():  # a member whose own fp32 misses warns: the parity suite's subject, not this one's
        warnings.simplefilter("ignore", FidelityWarning)
        folder = export_model([trio[d] for d in sorted(trio, reverse=True)], tmp_path / "model", precisions="fp32,int8",
                              check_parity=False)
    (record,) = json.loads((folder / "manifest.json").read_text())["openvino_int8"]
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(ZEN4))
    described = ColbertEncoder(folder, precision="int8").describe()
    if record["written"]:
        verdicts = verify_folder(folder, engines=["openvino"], precisions=["int8"])
        assert verdicts and all(v.passed for v in verdicts if v.passed_at_export)
        assert described["engine"] == "openvino" and described["passed_gates"]
    else:
        assert record["attempts"] and not any(a["passed"] for a in record["attempts"])
        assert described["engine"] == "onnxruntime" and "no OpenVINO graph" in described["engine_reason"]



@needs_nncf
def test_the_export_report_names_each_engine_graphs_verdict(openvino_int8_folder: Path) -> None:
    from colbert_onnx.model_folder import engine_gate_verdicts

    verdicts = engine_gate_verdicts(read_manifest(openvino_int8_folder))
    assert verdicts["openvino"]["int8"] == {"128": True, "96": True, "64": True}
    bf16_rest = verdicts["openvino"]["int8, bf16 float parts"]
    assert set(bf16_rest) - {"reason"} == {"128", "96", "64"}


def test_the_export_report_says_why_no_openvino_int8_was_written(toy_model_dir: Path) -> None:
    from colbert_onnx.model_folder import engine_gate_verdicts

    manifest = read_manifest(toy_model_dir)
    record = {"graph": "model-openvino.onnx", "written": None, "reason": "no SmoothQuant alpha passed"}
    manifest = dataclasses.replace(manifest, engine_graphs=(), extra={**manifest.extra, "openvino_int8": [record]})
    assert engine_gate_verdicts(manifest) == {"openvino": {"int8": {"written": None,
                                                                    "reason": "no SmoothQuant alpha passed"}}}


@needs_nncf
def test_the_openvino_int8_entry_records_the_int8_units_it_was_measured_with(openvino_int8_folder: Path) -> None:
    from colbert_onnx.engines.choice import EXACT_INT8_FEATURES, cpu_features

    (graph,) = _openvino_int8(openvino_int8_folder)
    assert graph.details["measured_with_int8_units"] == [f for f in EXACT_INT8_FEATURES if f in cpu_features()]


def _measured_on_vnni(folder: Path, tmp_path: Path) -> Path:
    """A copy of `folder` whose OpenVINO int8 entry says it was measured on an AVX512-VNNI CPU."""
    copy = shutil.copytree(folder, tmp_path / "model")
    manifest = read_manifest(copy)
    units = {"measured_with_int8_units": ["avx512_vnni"], "measured_with_bf16_units": ["avx512_bf16"]}
    graphs = tuple(dataclasses.replace(g, details={**g.details, **units}) if g.precision == "int8" else g
                   for g in manifest.engine_graphs)
    write_manifest(copy, dataclasses.replace(manifest, engine_graphs=graphs))
    return copy


@needs_nncf
def test_forcing_openvino_int8_on_a_cpu_without_vnni_warns_that_its_figures_may_not_hold(
        openvino_int8_folder, tmp_path, monkeypatch) -> None:
    from colbert_onnx import FidelityWarning

    folder = _measured_on_vnni(openvino_int8_folder, tmp_path)
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(ZEN3))
    with pytest.warns(FidelityWarning, match="saturate.*colbert-onnx verify"):
        encoder = ColbertEncoder(folder, precision="int8", engine="openvino")
    assert encoder.describe()["engine"] == "openvino"  # honored


@needs_nncf
def test_openvino_int8_on_a_vnni_cpu_does_not_warn(openvino_int8_folder, tmp_path, monkeypatch) -> None:
    folder = _measured_on_vnni(openvino_int8_folder, tmp_path)
    monkeypatch.setattr(selection, "cpu_features", lambda: frozenset(ZEN4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FidelityWarning)
        ColbertEncoder(folder, precision="int8", engine="openvino")
