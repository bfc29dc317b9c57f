"""Issue 3: optimized fp32, int8 and fp16 graphs per head, their fidelity gates and their error paths."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="quantization tests export toy checkpoints (needs the [export] extra)")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from folder_edits import unfingerprint  # noqa: E402

from colbert_onnx import ColbertEncoder  # noqa: E402
from colbert_onnx.errors import (  # noqa: E402
    DeviceUnavailableError,
    FidelityWarning,
    ModelFolderError,
    PrecisionNotAvailableError,
)
from colbert_onnx.export import export_model, load_checkpoint, make_toy_trio  # noqa: E402
from colbert_onnx.export.checkpoint import CheckpointError  # noqa: E402
from colbert_onnx.export.exporter import export_graph  # noqa: E402
from colbert_onnx.export.fidelity import Outputs, compare, fidelity_texts, passes, spearman  # noqa: E402
from colbert_onnx.export.fidelity_report import LARGER_TOY  # noqa: E402
from colbert_onnx.export.modeling import MultiHeadColbert  # noqa: E402
from colbert_onnx.export.precisions import parse_precisions  # noqa: E402

DIMS = (128, 96, 64)


@pytest.fixture(scope="module")
def larger_trio(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """4 layers x 128 hidden: big enough that int8 error is not trivially small."""
    return make_toy_trio(tmp_path_factory.mktemp("q-trio"), seed=0, config_overrides=LARGER_TOY)


def _export(trio: dict[int, Path], out: Path, **kwargs) -> Path:
    """onnxruntime's graphs only: OpenVINO's are tests/test_engines.py's and tests/test_openvino_int8.py's."""
    return export_model([trio[d] for d in DIMS], out, engines="onnxruntime", **kwargs)


@pytest.fixture(scope="module")
def larger_folder(larger_trio, tmp_path_factory) -> Path:
    return _export(larger_trio, tmp_path_factory.mktemp("q-onnx"))


@pytest.fixture(scope="module")
def fp32_only_folder(toy_trio, tmp_path_factory) -> Path:
    return _export(toy_trio, tmp_path_factory.mktemp("fp32-only"), precisions="fp32", check_parity=False)


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


_REFERENCES: dict[tuple[Path, int], Outputs] = {}


def _reference(trio: dict[int, Path], folder: Path, dim: int) -> Outputs:
    """PyTorch fp32 vectors of one checkpoint on the fidelity set (documents unpadded, skiplist removed)."""
    key = (trio[dim], dim)
    if key not in _REFERENCES:
        texts = fidelity_texts()
        pre = ColbertEncoder(folder, dim=dim).preprocessor
        model = load_checkpoint(trio[dim], hash_files=False).module()
        skip = np.array(_manifest(folder)["document"]["skiplist_ids"])
        q_ids = torch.from_numpy(pre.queries(texts["queries"]))
        with torch.no_grad():
            ref_q = model(q_ids, torch.ones_like(q_ids)).numpy()
            docs = []
            for ids in pre.documents(texts["documents"]).ids:
                vec = model(torch.from_numpy(ids)[None], torch.ones((1, len(ids)), dtype=torch.int64))[0].numpy()
                docs.append(vec[~np.isin(ids, skip)])
        _REFERENCES[key] = Outputs(ref_q, np.concatenate(docs), docs)
    return _REFERENCES[key]


def _runtime_fidelity(trio: dict[int, Path], folder: Path, precision: str, dim: int) -> dict:
    """Fidelity of onnxruntime's graph measured through the runtime (ColbertEncoder) against each checkpoint's PyTorch
    module (the outlier folder also has OpenVINO's graphs, which `auto` picks on some CPUs)."""
    texts = fidelity_texts()
    encoder = ColbertEncoder(folder, dim=dim, precision=precision, engine="onnxruntime")
    got_q = np.stack(encoder.encode_queries(texts["queries"]))
    got_docs = encoder.encode_documents(texts["documents"])
    return compare(_reference(trio, folder, dim), Outputs(got_q, np.concatenate(got_docs), got_docs))


def test_manifest_lists_fp32_int8_fp16_graphs(larger_folder):
    manifest = _manifest(larger_folder)
    assert manifest["precisions"] == ["fp32", "int8", "fp16"]
    assert sorted(g["precision"] for g in manifest["graphs"]) == ["fp16", "fp32", "int8"]


def test_manifest_records_method_size_and_fidelity_per_head(larger_folder):
    for graph in _manifest(larger_folder)["graphs"]:
        assert graph["method"] and graph["bytes"] == (larger_folder / graph["file"]).stat().st_size
        assert sorted(graph["fidelity"]) == sorted(map(str, DIMS))


def test_int8_folder_is_at_most_30_percent_of_fp32(larger_folder):
    sizes = {g["precision"]: g["bytes"] for g in _manifest(larger_folder)["graphs"]}
    assert sizes["int8"] <= 0.30 * sizes["fp32"]


def test_int8_quantizes_embedding_gather_and_every_weight_matmul(larger_folder):
    graph = onnx.load(str(larger_folder / "model-int8.onnx"))
    weights = {t.name for t in graph.graph.initializer}
    float_matmuls = [n for n in graph.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    float_tables = [  # per-row scales ([rows, 1]) are not tables
        t for t in graph.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 and min(t.dims) > 1
    ]
    assert float_matmuls == [] and float_tables == []


@pytest.mark.parametrize("precision", ["int8", "fp16"])
@pytest.mark.parametrize("dim", DIMS)
def test_gates_hold_on_toy_trio(larger_trio, larger_folder, precision, dim):
    metrics = _runtime_fidelity(larger_trio, larger_folder, precision, dim)
    assert passes(precision, metrics), metrics


@pytest.mark.parametrize("dim", DIMS)
def test_int8_gates_hold_on_outlier_trio(outlier_trio, outlier_model_dir, dim):
    metrics = _runtime_fidelity(outlier_trio, outlier_model_dir, "int8", dim)
    assert passes("int8", metrics), metrics


@pytest.mark.parametrize("dim", DIMS)
def test_fp16_gates_hold_on_outlier_trio(outlier_trio, outlier_model_dir, dim):
    metrics = _runtime_fidelity(outlier_trio, outlier_model_dir, "fp16", dim)
    assert passes("fp16", metrics), metrics


def _missed_gates(folder: Path) -> list[tuple]:
    """(precision, head, figures) of every head whose export-time figures miss a gate; every head must have figures."""
    graphs = _manifest(folder)["graphs"]
    assert all(sorted(g["fidelity"]) == sorted(map(str, DIMS)) for g in graphs)
    return [(g["precision"], d, m) for g in graphs for d, m in g["fidelity"].items() if not m["passed"]]


def test_export_measured_gates_pass_for_every_precision_and_head(larger_folder):
    assert _missed_gates(larger_folder) == []


def test_optimized_fp32_matches_unoptimized_within_1e_5(larger_trio, larger_folder, tmp_path):
    ckpts = [load_checkpoint(larger_trio[d], hash_files=False) for d in DIMS]
    module = MultiHeadColbert(ckpts[0].module().roberta, {c.dim: c.head for c in ckpts})
    export_graph(module, tmp_path / "plain.onnx")
    ids = np.array([[0, 5, 6, 7, 8, 9, 2], [0, 11, 12, 2, 1, 1, 1]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int64)}
    plain = ort.InferenceSession(str(tmp_path / "plain.onnx")).run(None, feeds)
    optimized = ort.InferenceSession(str(larger_folder / "model.onnx")).run(None, feeds)
    assert max(float(np.abs(a - b).max()) for a, b in zip(plain, optimized, strict=True)) <= 1e-5


def test_optimized_fp32_fuses_layernorm_and_gelu(larger_folder):
    ops = [n.op_type for n in onnx.load(str(larger_folder / "model.onnx")).graph.node]
    assert ops.count("SkipLayerNormalization") == 2 * LARGER_TOY["num_hidden_layers"]
    assert ops.count("BiasGelu") == LARGER_TOY["num_hidden_layers"]


def test_int8_graph_splits_skip_layernorm_into_add_and_layernorm(larger_folder):
    ops = [n.op_type for n in onnx.load(str(larger_folder / "model-int8.onnx")).graph.node]
    layers = LARGER_TOY["num_hidden_layers"]
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") == 2 * layers + 1
    graph = next(g for g in _manifest(larger_folder)["graphs"] if g["precision"] == "int8")
    assert graph["split_skip_layernorms"] == 2 * layers


def test_split_skip_layernorm_computes_the_fused_op(larger_folder):
    from colbert_onnx.export.optimize import split_skip_layernorm

    fused = onnx.load(str(larger_folder / "model.onnx"))
    split = onnx.ModelProto()
    split.CopyFrom(fused)
    assert split_skip_layernorm(split) == 2 * LARGER_TOY["num_hidden_layers"]
    unoptimized = ort.SessionOptions()  # onnxruntime would fuse the Adds and LayerNorm back at load
    unoptimized.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ids = np.array([[0, 5, 6, 7, 8, 9, 2], [0, 11, 12, 2, 1, 1, 1]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int64)}
    a = ort.InferenceSession(fused.SerializeToString(), unoptimized).run(None, feeds)
    b = ort.InferenceSession(split.SerializeToString(), unoptimized).run(None, feeds)
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True)) <= 1e-5


def test_fp16_is_finite_on_an_8192_token_document(larger_folder):
    session = ort.InferenceSession(str(larger_folder / "model-fp16.onnx"))
    ids = np.random.default_rng(0).integers(5, 500, size=(1, 8192)).astype(np.int64)
    ids[0, 0], ids[0, -1] = 0, 2
    out = session.run(["vectors_128"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_unknown_precision_error_lists_available(larger_folder):
    with pytest.raises(PrecisionNotAvailableError, match="fp32, int8, fp16"):
        ColbertEncoder(larger_folder, precision="int4")


def test_precision_missing_from_folder_lists_available(fp32_only_folder):
    with pytest.raises(PrecisionNotAvailableError, match=r"available: fp32\)"):
        ColbertEncoder(fp32_only_folder, precision="int8")


def test_export_rejects_unknown_precision():
    with pytest.raises(CheckpointError, match="int3"):
        parse_precisions("fp32,int3")


def test_truncated_graph_file_error_names_the_file(larger_folder, tmp_path):
    folder = Path(shutil.copytree(larger_folder, tmp_path / "copy"))
    graph = folder / "model-int8.onnx"
    graph.write_bytes(graph.read_bytes()[:5000])
    with pytest.raises(ModelFolderError, match="model-int8.onnx"):
        ColbertEncoder(folder, precision="int8", engine="onnxruntime")  # the onnxruntime graph is the one corrupted


def test_corrupt_graph_with_matching_size_error_names_the_file(larger_folder, tmp_path):
    folder = Path(shutil.copytree(larger_folder, tmp_path / "copy"))
    unfingerprint(folder)  # as exported before fingerprints: the load itself must name the file (else: the fingerprint)
    graph = folder / "model-int8.onnx"
    graph.write_bytes(b"\x00garbage" * (graph.stat().st_size // 8) + b"\x00" * (graph.stat().st_size % 8))
    with pytest.raises(ModelFolderError, match="cannot load ONNX graph .*model-int8.onnx"):
        ColbertEncoder(folder, precision="int8", engine="onnxruntime")  # the onnxruntime graph is the one corrupted


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is present here")
def test_cuda_without_cuda_raises_device_unavailable(larger_folder):
    with pytest.raises(DeviceUnavailableError, match="CUDAExecutionProvider"):
        ColbertEncoder(larger_folder, precision="fp16", device="cuda")


def test_spearman_of_reversed_order_is_minus_one():
    assert spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 3.0, 2.0, 1.0])) == pytest.approx(-1.0)


def test_spearman_averages_tied_ranks():
    # ranks a = [1, 2.5, 2.5, 4], b = [1, 2, 3, 4]: rho = 4.5 / sqrt(4.5 * 5)
    assert spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.arange(4.0)) == pytest.approx(4.5 / np.sqrt(22.5))


def test_cli_export_writes_only_the_requested_precisions(toy_trio, tmp_path):
    from colbert_onnx.cli import main

    out = tmp_path / "cli"
    assert main(["export", str(toy_trio[64]), "--out", str(out), "--precision", "fp32,int8"]) == 0
    assert _manifest(out)["precisions"] == ["fp32", "int8"]


def test_optimization_keeps_the_exporters_external_data_choice(toy_trio, tmp_path, monkeypatch):
    from colbert_onnx.export import exporter

    monkeypatch.setattr(exporter, "EXTERNAL_DATA_THRESHOLD", 0)
    out = _export(toy_trio, tmp_path / "ext", precisions="fp32", check_parity=False)
    assert _manifest(out)["graphs"][0]["external_data"] == "model.onnx_data"
    assert ColbertEncoder(out, precision="fp32").encode_queries("x")[0].shape == (32, 128)


def test_every_exported_graph_has_unique_node_names_and_outputs(larger_folder):
    # onnxruntime refuses duplicates at load ("two nodes with same node name"); onnxruntime 1.31's fp16
    # converter made them (one Cast per fp32 consumer of the head's output), seen on a GPU machine.
    for graph in _manifest(larger_folder)["graphs"]:
        nodes = onnx.load(str(larger_folder / graph["file"])).graph.node
        names = [n.name for n in nodes]
        outputs = [o for n in nodes for o in n.output]
        assert len(set(names)) == len(names) and len(set(outputs)) == len(outputs), graph["file"]


def test_fp16_conversion_on_stubbed_weights_equals_the_converter_on_the_full_model(larger_folder, monkeypatch):
    # convert_fp16 runs onnxruntime's converter on data-less weight stubs (memory) and converts the
    # weights afterwards; the result must be the graph the converter makes from the full model.
    from onnxruntime.transformers.onnx_model import OnnxModel

    from colbert_onnx.export import quantize

    monkeypatch.setattr(quantize, "STUB_ABOVE", 1024)  # the toy's matrices are small: stub them all
    fp32 = onnx.load(str(larger_folder / "model.onnx"))
    assert sum(int(np.prod(t.dims)) > 1024 for t in fp32.graph.initializer) >= 10
    lean, _ = quantize.convert_fp16(fp32)
    full = onnx.ModelProto()
    full.CopyFrom(fp32)
    wrapped = OnnxModel(full)
    wrapped.convert_float_to_float16(use_symbolic_shape_infer=True, keep_io_types=True,
                                     op_block_list=quantize.FP16_OP_BLOCK_LIST,
                                     node_block_list=quantize._rotary_nodes(fp32))
    reference = wrapped.model
    quantize.drop_duplicate_nodes(reference.graph)
    for field in ("node", "initializer", "value_info", "input", "output"):
        assert getattr(lean.graph, field) == getattr(reference.graph, field), field


def test_drop_duplicate_nodes_keeps_one_copy_of_identical_casts():
    from onnx import TensorProto, helper

    from colbert_onnx.export.quantize import drop_duplicate_nodes

    cast = helper.make_node("Cast", ["x"], ["x32"], name="x_cast_to_fp32_node", to=TensorProto.FLOAT)
    graph = helper.make_graph(
        [cast, onnx.NodeProto.FromString(cast.SerializeToString()), helper.make_node("Neg", ["x32"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    assert drop_duplicate_nodes(graph) == 1
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": np.array([1, -2], np.float16)})[0], [-1, 2])


def test_export_builds_the_int8_method_asked_for(larger_trio, tmp_path):
    out = _export(larger_trio, tmp_path, precisions="fp32,int8", check_parity=False, int8_method="smooth-nbits8")
    int8 = next(g for g in _manifest(out)["graphs"] if g["precision"] == "int8")
    ops = {n.op_type for n in onnx.load(str(out / int8["file"])).graph.node}
    assert int8["method"] == "smooth-nbits8" and "MatMulNBits" in ops


def test_unknown_int8_method_is_refused_before_any_work(larger_trio, tmp_path):
    with pytest.raises(CheckpointError, match="unknown int8 method 'int3'.*smooth-per-token"):
        _export(larger_trio, tmp_path, int8_method="int3")
    assert not any(tmp_path.iterdir())


def test_default_int8_runs_every_backbone_matmul_as_an_integer_gemm(larger_folder):
    graph = onnx.load(str(larger_folder / "model-int8.onnx"))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("MatMulInteger") == 4 * LARGER_TOY["num_hidden_layers"]


def test_static_qdq_quantizes_the_activation_of_every_weight_matmul(larger_folder, tmp_path):
    # Regression: the calibrator skipped tensors after fused com.microsoft ops (types unknown to onnx),
    # leaving those MatMuls weight-only.
    from colbert_onnx.export.precisions import calibration_feeds
    from colbert_onnx.export.quantize import quantize_int8

    pre = ColbertEncoder(larger_folder).preprocessor
    quantize_int8(onnx.load(str(larger_folder / "model.onnx")), tmp_path / "q.onnx", calibration_feeds(pre),
                  method="static-qdq")
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and producers.get(n.input[1]) == "DequantizeLinear"]
    assert len(matmuls) == 4 * LARGER_TOY["num_hidden_layers"] + len(DIMS)
    assert all(producers.get(n.input[0]) == "DequantizeLinear" for n in matmuls)


def test_export_warns_when_a_precision_misses_its_gates_even_after_the_search(larger_trio, tmp_path, monkeypatch):
    import colbert_onnx.fidelity as fidelity

    real = fidelity.passes
    monkeypatch.setattr(fidelity, "passes", lambda p, m: False if p == "int8" else real(p, m))
    with pytest.warns(FidelityWarning, match="int8 head 128, int8 head 96, int8 head 64 missed the fidelity gates"):
        _export(larger_trio, tmp_path, precisions="fp32,int8")


def test_loading_a_graph_that_missed_its_gates_names_each_missed_gate_and_its_threshold(larger_folder, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(larger_folder, folder)
    manifest = _manifest(folder)
    int8 = next(g for g in manifest["graphs"] if g["precision"] == "int8")
    int8["fidelity"]["96"].update(worst_text_mean_token_cosine=0.9949, passed=False)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.warns(FidelityWarning, match=r"missed its fidelity gates at export \(worst_text_mean_token_cosine "
                                             r"0\.9949 < 0\.995;"):
        ColbertEncoder(folder, dim=96, precision="int8", engine="onnxruntime")


def test_loading_a_graph_that_missed_its_gates_warns_and_names_the_figures(larger_folder, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(larger_folder, folder)
    manifest = _manifest(folder)
    int8 = next(g for g in manifest["graphs"] if g["precision"] == "int8")
    int8["fidelity"]["96"]["passed"] = False
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.warns(FidelityWarning, match="int8 head 96 of .* missed its fidelity gates.*min_token_cosine"):
        encoder = ColbertEncoder(folder, dim=96, precision="int8", engine="onnxruntime")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FidelityWarning)
        ColbertEncoder(folder, dim=128, precision="int8", engine="onnxruntime")  # its head passed: no warning
        ColbertEncoder(folder, dim=96, precision="fp32")
    with pytest.warns(FidelityWarning, match="int8 head 96"):
        ColbertEncoder(folder, dim=128, precision="int8", engine="onnxruntime").for_dim(96)
    assert encoder.encode_queries("x")[0].shape == (32, 96)


@pytest.mark.parametrize(("missing", "named"), [("int8", "fp32, fp16"), ("fp16", "fp32, int8")])
def test_a_miss_names_the_precisions_that_were_faithful_never_the_one_that_missed(larger_folder, tmp_path, missing,
                                                                                  named):
    folder = tmp_path / "copy"
    shutil.copytree(larger_folder, folder)
    manifest = _manifest(folder)
    graph = next(g for g in manifest["graphs"] if g["precision"] == missing)
    graph["fidelity"]["96"]["passed"] = False
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.warns(FidelityWarning, match=f"{missing} head 96 .* faithful at export in this folder: {named}$"):
        ColbertEncoder(folder, dim=96, precision=missing, engine="onnxruntime")


def test_a_miss_where_no_other_precision_met_its_gates_says_so(larger_folder, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(larger_folder, folder)
    manifest = _manifest(folder)
    for graph in manifest["graphs"]:
        if graph["precision"] != "fp32":
            graph["fidelity"]["96"]["passed"] = False
    manifest["parity"]["fp32"]["96"].update(passed=False, accepted_by_user=True)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.warns(FidelityWarning, match="missed the fp32 parity gate"), pytest.warns(
            FidelityWarning, match="int8 head 96 .* no other precision of this folder was faithful at export$"):
        ColbertEncoder(folder, dim=96, precision="int8", engine="onnxruntime")


def test_export_measured_gates_pass_on_the_outlier_trio(outlier_model_dir):
    # Before the embedding's LayerNorm-amplified columns stayed fp32, every int8 method failed here
    # (min token cosine ~0.8; docs/quantization.md).
    assert _missed_gates(outlier_model_dir) == []


def test_export_keeps_the_fast_int8_on_the_outlier_trio(outlier_model_dir):
    # Without the fp32 split of the outlier channels (quantize.smooth) head 64 missed the min-cosine
    # gate (0.979) and the exporter had to keep nodes in fp32 (before 2026-12-01: fall back to smooth-nbits8).
    int8 = next(g for g in _manifest(outlier_model_dir)["graphs"] if g["precision"] == "int8")
    assert int8["method"] == "smooth-per-token" and int8["fp32_split_channels"] > 0, int8
    assert "mixed_precision" not in int8 and "float_nodes" not in int8


def test_export_keeps_the_fast_int8_when_it_passes(larger_folder):
    int8 = next(g for g in _manifest(larger_folder)["graphs"] if g["precision"] == "int8")
    assert int8["method"] == "smooth-per-token" and "mixed_precision" not in int8
