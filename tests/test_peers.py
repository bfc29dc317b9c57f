"""The peer engines of `make bench` (benchmarks/peers.py) and the float64 reference of their fidelity report.

The first tests need neither fastembed nor OpenVINO; the peer tests skip with a reason when their
package is absent (`pip install -e '.[peers]'`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from benchmarks.peers import PLAIN_GRAPH, graph_label, missing_peer, plain_peer_folder, texts_of_tokens

torch = pytest.importorskip("torch", reason="the plain export needs the [export] extra (torch)")

SHORT_QUERY = "what is berlin"
DOCUMENTS = ["Berlin has 3.8 million inhabitants.", "Paris is in France, isn't it?", "Cats sleep."]


def _module(trio: dict[int, Path]):
    from colbert_onnx.export import load_checkpoint
    from colbert_onnx.export.modeling import MultiHeadColbert

    ckpt = load_checkpoint(trio[128], hash_files=False)
    return MultiHeadColbert(ckpt.module().roberta, {128: ckpt.head}).eval()


@pytest.fixture(scope="module")
def plain_toy(toy_trio, tmp_path_factory) -> Path:
    return plain_peer_folder(_module(toy_trio), toy_trio[128], tmp_path_factory.mktemp("plain-peer"))


def _padded_batch() -> dict[str, np.ndarray]:
    ids = np.array([[0, 5, 6, 7, 8, 2], [0, 5, 9, 2, 1, 1]], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int64)}


def test_missing_peer_names_the_absent_package_and_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "nncf" else real(name))
    reason = missing_peer("openvino-int8")
    assert reason is not None and "nncf" in reason and "[peers]" in reason


def test_bf16_peer_is_skipped_on_a_cpu_without_bf16(monkeypatch):
    import benchmarks.peers

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # every package "installed"
    monkeypatch.setattr(benchmarks.peers, "cpu_has_bf16", lambda: False)
    assert "no bf16" in missing_peer("openvino-bf16")
    assert missing_peer("openvino-f32") is None
    monkeypatch.setattr(benchmarks.peers, "cpu_has_bf16", lambda: True)
    assert missing_peer("openvino-bf16") is None


def test_missing_peer_rejects_an_unknown_peer():
    with pytest.raises(ValueError, match="unknown peer 'openvino-fp64'"):
        missing_peer("openvino-fp64")


def test_plain_peer_folder_has_jina_layout_and_no_contrib_ops(plain_toy):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", PLAIN_GRAPH):
        assert (plain_toy / name).is_file(), name
    graph = onnx.load(str(plain_toy / PLAIN_GRAPH)).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    assert not {"If", "Loop"} & {n.op_type for n in graph.node}
    assert {"Softmax", "Sin", "Cos"} <= {n.op_type for n in graph.node}  # plain attention and plain rotary


def test_plain_peer_folder_matches_pytorch_and_restores_the_export_switches(toy_trio, tmp_path):
    from colbert_onnx.export.modeling import Mixer

    module = _module(toy_trio)
    for mixer in module.modules():
        if isinstance(mixer, Mixer):
            mixer.attention_chunk = 64
    folder = plain_peer_folder(module, toy_trio[128], tmp_path)
    mixers = [m for m in module.modules() if isinstance(m, Mixer)]
    assert all(m.fused_rotary and m.attention_chunk == 64 for m in mixers)
    for m in mixers:
        m.attention_chunk = None
    feeds = _padded_batch()
    got = ort.InferenceSession(str(folder / PLAIN_GRAPH), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.no_grad():
        want = module(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_texts_of_tokens_frame_to_exactly_that_many_tokens(toy_encoder):
    pre = toy_encoder.preprocessor
    words = "Berlin has 3.8 million inhabitants and Paris is in France".split()
    texts = texts_of_tokens(pre.tokenizer, 5, 40, words)
    assert [len(ids) for ids in pre.documents(texts).ids] == [40] * 5


def test_graph_label_names_the_file_and_the_int8_method(toy_model_dir):
    from colbert_onnx import ColbertEncoder

    assert graph_label(ColbertEncoder(toy_model_dir)) == "model.onnx (optimized)"
    int8 = ColbertEncoder(toy_model_dir, precision="int8", engine="onnxruntime")
    assert graph_label(int8) == "model-int8.onnx (smooth-per-token)"


def test_float64_reference_runs_in_float64_with_float32_rotary_tables(toy_trio):
    from colbert_onnx.export.fidelity import float64_runner
    from colbert_onnx.export.modeling import Backbone

    module = _module(toy_trio)
    feeds = _padded_batch()
    with torch.no_grad():
        fp32 = module(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))[0].numpy()
    run = float64_runner(module)
    backbone = next(m for m in module.modules() if isinstance(m, Backbone))
    assert all(p.dtype == torch.float64 for p in module.parameters())
    assert backbone.rotary_tables(6)[0].dtype == torch.float32
    got = run(feeds)[128]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, fp32, atol=1e-5)


def test_fastembed_gives_the_runtime_fp32_vectors_from_the_same_texts(plain_toy, toy_model_dir):
    if reason := missing_peer("fastembed"):
        pytest.skip(reason)
    from benchmarks.peers import fastembed_encoder
    from colbert_onnx import ColbertEncoder

    embedder = fastembed_encoder(plain_toy)
    ours = ColbertEncoder(toy_model_dir, dim=128, precision="fp32")
    for got, want in zip(embedder.passage_embed(DOCUMENTS), ours.encode_documents(DOCUMENTS), strict=True):
        assert got.shape == want.shape  # same tokens kept: markers, skiplist and padding handled alike
        np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(next(iter(embedder.query_embed(SHORT_QUERY))), ours.encode_queries([SHORT_QUERY])[0],
                               atol=1e-5)


def test_openvino_f32_matches_onnxruntime_on_the_plain_export(plain_toy):
    if reason := missing_peer("openvino-f32"):
        pytest.skip(reason)
    from benchmarks.peers import openvino_engine

    feeds = _padded_batch()
    want = ort.InferenceSession(str(plain_toy / PLAIN_GRAPH), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    engine = openvino_engine("openvino-f32", plain_toy / PLAIN_GRAPH)
    np.testing.assert_allclose(engine(feeds)[128], want, atol=1e-5)
    np.testing.assert_allclose(engine.first(feeds["input_ids"], feeds["attention_mask"]), want, atol=1e-5)


def test_openvino_reports_the_precision_it_ran_not_the_hint(plain_toy):
    if reason := missing_peer("openvino-f32"):
        pytest.skip(reason)
    from benchmarks.peers import OpenVinoEngine, cpu_has_bf16

    engine = OpenVinoEngine(plain_toy / PLAIN_GRAPH, hint="bf16")
    assert engine.precision == ("bf16" if cpu_has_bf16() else "f32")
    assert f"hint bf16, ran {engine.precision}" in engine.describe()


def test_nncf_int8_is_quantized_and_close_to_f32(plain_toy, toy_encoder):
    if reason := missing_peer("openvino-int8"):
        pytest.skip(reason)
    from benchmarks.peers import nncf_int8, openvino_engine
    from colbert_onnx.export.precisions import calibration_feeds

    calibration = calibration_feeds(toy_encoder.preprocessor)[:3]
    quantized = nncf_int8(plain_toy / PLAIN_GRAPH, calibration)
    assert sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops()) > 0
    feeds = _padded_batch()
    f32 = openvino_engine("openvino-f32", plain_toy / PLAIN_GRAPH)(feeds)[128]
    int8 = openvino_engine("openvino-int8", plain_toy / PLAIN_GRAPH, calibration)
    got = int8(feeds)[128]
    assert int8.overflow_fix == "first_layer_only" and "NNCF int8" in int8.describe()
    real = feeds["attention_mask"].astype(bool)
    assert (got[real] * f32[real]).sum(-1).min() > 0.95  # unit vectors: cosine per token
    assert not np.allclose(got, f32, atol=1e-6)  # it did change the arithmetic


def test_peer_report_gives_ratios_to_fastembed_and_says_what_ran():
    from benchmarks.report import _peers_table

    row = {"docs": 16, "length": 256}
    results = {"peers": {"fastembed": {**row, "docs_per_s": 2.0, "engine": "fastembed 0.9.1"},
                         "ours-int8": {**row, "docs_per_s": 5.0, "engine": "onnxruntime CPU, model-int8.onnx"}},
               "peer_queries": {"fastembed": {"engine": "fastembed", "p50_ms": 40.0, "p95_ms": 50.0,
                                              "loop32_ms": 1300.0, "batch32_ms": None}}}
    text = "\n".join(_peers_table(results))
    assert "| ours-int8 | onnxruntime CPU, model-int8.onnx | 5.00 | 2.50x | 1.00x |" in text
    assert "| fastembed | fastembed | 40.0 | 50.0 | 1300.0 | (one per call only) |" in text
    assert _peers_table({}) == []
    skipped = _peers_table({"peers_skipped": {"openvino-bf16": {"reason": "this CPU has no bf16"}}})
    assert skipped == ["\nPeer not run: openvino-bf16 (this CPU has no bf16)."]


def test_length_mix_table_gives_each_engine_against_ours_int8():
    from benchmarks.report import _mix_table

    row = {"docs": 64, "tokens": 15396, "rounds": 1, "padded_fraction": 0.429, "vs_before": 1.0}
    text = "\n".join(_mix_table({"mix": {
        "ours-int8": {**row, "real_tokens_per_s": 259.0, "padded_fraction": 0.008, "vs_before": 2.15,
                      "ours_vs_it": 1.0},
        "openvino-f32, greedy padded batches": {**row, "real_tokens_per_s": 70.0, "ours_vs_it": 3.7}}}))
    assert "median of 1 round(s)" in text
    assert "| ours-int8 | 259 | 0.8% | 2.15x | 1.00x |" in text
    assert "| openvino-f32, greedy padded batches | 70 | 42.9% | 1.00x | 3.70x |" in text
    assert _mix_table({}) == []


def test_peer_fidelity_rows_judge_every_gate_with_the_metrics_compare_gives(monkeypatch) -> None:
    """`make fidelity-peers` read a fixed metric list and died (KeyError) once the int8 gates gained the worst-text
    mean; its rows now take every metric compare() gives, so each gate of int8 and fp16 is judged."""
    import benchmarks.peer_fidelity as pf
    from colbert_onnx.fidelity import GATES

    metrics = {key: 1.0 for gates in GATES.values() for key in gates}
    monkeypatch.setattr(pf, "collect", lambda run, fset: {128: None, 64: None})
    monkeypatch.setattr(pf, "compare", lambda ref, got: {**metrics, "finite": True})
    case = pf.Case("case", None, {128: None, 64: None}, [128, 64], Path("."), [])
    row = pf.worst(case, run=None)
    assert row["int8_gates"] and row["fp16_gates"]
    one_text_off = {**metrics, "worst_text_mean_token_cosine": 0.9, "finite": True}
    monkeypatch.setattr(pf, "compare", lambda ref, got: one_text_off)
    row = pf.worst(case, run=None)
    assert not row["int8_gates"] and row["fp16_gates"]
    assert "| 0.90000 |" in pf.to_markdown([{"case": "case", "engine": "e", **row}])


def _fake_exporter_search(monkeypatch, passing: bool) -> dict:
    """The harness's collaborators replaced: the exporter's search (recording the stages it is given), OpenVINO,
    and the fidelity rows (attempt i's worst-head row has gate margin `margins[i]`)."""
    import benchmarks.peer_fidelity as pf
    import colbert_onnx.export.openvino_int8 as oi

    seen: dict = {"stages": None, "quantized": []}
    margins = [-0.5, -0.1, 0.2] if passing else [-0.5, -0.1, -0.3]

    def search(out, entry, calibration, measure, stages):
        seen["stages"] = [tuple(s) for s in stages]
        attempts = []
        for i, (alpha, kept) in enumerate([(0.5, ()), (0.65, ()), (0.5, stages[1])]):
            fidelity = measure(out / "model-int8.xml")
            attempts.append({"smooth_alpha": alpha, **({"kept_float_matmuls": list(kept)} if kept else {}),
                             "gate_margin": margins[i], "passed": fidelity["worst"]["passed"]})
        if passing:
            return {"file": "model-int8.xml"}, {"attempts": attempts}
        return None, {"reason": "no SmoothQuant alpha passed", "attempts": attempts}

    rows = iter(range(10))

    def fake_worst(case, run):
        i = next(rows)
        return {"attempt": i, "int8_gates": margins[i] >= 0 if i < 3 else False, "finite": True}

    monkeypatch.setattr(oi, "KEPT_FLOAT_STAGES", ((), (oi.FC2_MATMULS,)))
    monkeypatch.setattr(oi, "build_openvino_int8", search)
    monkeypatch.setattr(oi, "quantize", lambda graph, cal, alpha, kept: seen["quantized"].append((alpha, kept)))
    monkeypatch.setattr(pf, "missing_peer", lambda name: None)
    monkeypatch.setattr(pf, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(pf, "OpenVinoEngine", lambda model, hint: None)
    monkeypatch.setattr(pf, "worst", fake_worst)
    case = pf.Case("case", None, {}, [128], Path("."), [], mlp_down=r".*layer\.\d+/output/dense/MatMul")
    seen["rows"] = pf.exporter_openvino_int8_rows(case, Path("peer/onnx/model.onnx"))
    seen["case"] = case
    return seen


def test_peer_fidelity_openvino_int8_rows_run_the_exporters_own_search(monkeypatch) -> None:
    """The harness's OpenVINO int8 row is the exporter's search (its stages, the fc2 pattern renamed to the case's
    MLP down projections), so a change to the exporter's order reaches it; its row is the passing attempt's."""
    seen = _fake_exporter_search(monkeypatch, passing=True)
    assert seen["stages"] == [(), (seen["case"].mlp_down,)]
    (row,) = seen["rows"]
    assert row["attempt"] == 2
    assert "alpha 0.5, MLP down projections float (first passing)" in row["engine"]
    assert seen["quantized"] == []


def test_peer_fidelity_openvino_int8_rows_rebuild_the_attempt_nearest_the_gates_when_none_passes(monkeypatch) -> None:
    """The exporter deletes a graph that missed; the harness rebuilds the attempt with the largest gate margin and
    says none passed."""
    seen = _fake_exporter_search(monkeypatch, passing=False)
    assert seen["quantized"] == [(0.65, ())]
    (row,) = seen["rows"]
    assert row["attempt"] == 3
    assert "alpha 0.65 (none of 3 passed; nearest the gates)" in row["engine"]
