"""Accuracy-aware mixed precision (issue 14): the default int8 keeps its gates on any checkpoint."""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="exporting is part of the [export] extra")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import colbert_onnx.export.fidelity as fidelity  # noqa: E402
from colbert_onnx import ColbertEncoder  # noqa: E402
from colbert_onnx.errors import FidelityWarning  # noqa: E402
from colbert_onnx.export import export_model  # noqa: E402
from colbert_onnx.export.mixed_precision import NO_INT8_GEMM_LEFT, build_switchable  # noqa: E402
from colbert_onnx.export.precisions import calibration_feeds, fidelity_inputs  # noqa: E402
from colbert_onnx.export.quantize import quantize_int8  # noqa: E402
from colbert_onnx.manifest import read_manifest  # noqa: E402
from colbert_onnx.model_folder import mixed_precision_summary, open_model_folder  # noqa: E402

TEXTS = ["Berlin has 3.8 million inhabitants.", "Paris is the capital of France."]


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def _int8(folder: Path) -> dict:
    (entry,) = [g for g in _manifest(folder)["graphs"] if g["precision"] == "int8"]
    return entry


def _inputs(folder: Path):
    f = open_model_folder(folder)
    tokenizer, special = f.load_tokenizer()
    pre, fset = fidelity_inputs(f.manifest, tokenizer, special)
    return calibration_feeds(pre), fset


def test_switchable_graph_reproduces_the_pure_int8_and_the_fp32_graph(toy_model_dir, tmp_path):
    calibration, fset = _inputs(toy_model_dir)
    optimized = onnx.load(str(toy_model_dir / "model.onnx"))
    quantize_int8(optimized, tmp_path / "pure.onnx", calibration)
    session, kinds = build_switchable(optimized, calibration, [128, 96, 64], tmp_path)
    assert set(kinds.values()) == {"int8", "weight-only", "embedding"}
    feeds = fset.documents[0]
    real = feeds["attention_mask"].astype(bool)
    pure = ort.InferenceSession(str(tmp_path / "pure.onnx")).run(["vectors_128"], feeds)[0]
    fp32 = ort.InferenceSession(str(toy_model_dir / "model.onnx")).run(["vectors_128"], feeds)[0]
    np.testing.assert_allclose(session.runner(set())(feeds)[128][real], pure[real], atol=1e-6)
    np.testing.assert_allclose(session.runner(set(kinds))(feeds)[128][real], fp32[real], atol=1e-5)
    assert np.abs(pure - fp32)[real].max() > 1e-4, "the two paths must differ for the check to mean something"


def test_an_int8_graph_that_passes_is_written_as_the_pure_graph(toy_model_dir, tmp_path):
    entry = _int8(toy_model_dir)
    assert "mixed_precision" not in entry and "float_nodes" not in entry
    calibration, _ = _inputs(toy_model_dir)
    quantize_int8(onnx.load(str(toy_model_dir / "model.onnx")), tmp_path / "pure.onnx", calibration)
    written, rebuilt = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (toy_model_dir / entry["file"],
                                                                            tmp_path / "pure.onnx"))
    assert written == rebuilt


@pytest.fixture(scope="module")
def pure_min_cosine(toy_trio) -> float:
    """The worst head's min token cosine of the pure int8 graph of the 128/64 toy pair."""
    out = export_model([toy_trio[128], toy_trio[64]], Path(toy_trio[128]).parent / "pure-onnx",
                       precisions="fp32,int8", int8_method="smooth-per-token", engines="onnxruntime")
    return min(m["min_token_cosine"] for m in _int8(out)["fidelity"].values())


@pytest.mark.parametrize("ranking", ["restore-one", "restore-one-sampled"])
def test_the_search_keeps_nodes_in_fp32_until_every_gate_passes(toy_trio, tmp_path, monkeypatch, pure_min_cosine,
                                                                ranking):
    """Restore-one on the whole set, which the budget picks on toys, and on a sample of it, which it picks where
    that does not fit in half the budget (larger models, slower CPUs)."""
    from colbert_onnx.export import mixed_precision, precisions

    # a gate halfway between the pure int8 graph and fp32: only a mixed graph can pass it
    gate = pure_min_cosine + (1.0 - pure_min_cosine) / 2
    monkeypatch.setitem(fidelity.GATES, "int8", {**fidelity.GATES["int8"], "min_token_cosine": gate})
    if ranking != "restore-one":
        monkeypatch.setattr(precisions, "search_float_nodes",
                            functools.partial(mixed_precision.search_float_nodes, ranking=ranking))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FidelityWarning)
        out = export_model([toy_trio[128], toy_trio[64]], tmp_path / "mixed", precisions="fp32,int8",
                           engines="onnxruntime")
    entry = _int8(out)
    record = entry["mixed_precision"]
    assert record["outcome"] == "mixed" and entry["method_chosen_by"] == "default" and record["ranking"] == ranking
    assert 0 < len(record["float_nodes"]) < record["candidates"]
    assert sorted(n["node"] for n in record["float_nodes"]) == entry["float_nodes"]
    assert all(isinstance(n["sensitivity"], float) for n in record["float_nodes"])
    assert not any(m["passed"] for m in record["pure_int8_fidelity"].values())
    assert all(m["passed"] and m["min_token_cosine"] >= gate for m in entry["fidelity"].values())
    assert record["speed_vs_pure_int8"] > 0 and record["search_seconds"] > 0 and record["evaluations"] >= 2
    assert ("% of the tokens" in record["ranking_sample"]) and ("100%" in record["ranking_sample"]) is (
        ranking == "restore-one")
    (line,) = mixed_precision_summary(read_manifest(out))
    assert f"{len(record['float_nodes'])} of {record['candidates']} nodes kept fp32" in line


def test_nothing_short_of_fp32_passing_gives_the_fp32_graph_as_int8(toy_trio, tmp_path, monkeypatch):
    monkeypatch.setitem(fidelity.GATES, "int8", {**fidelity.GATES["int8"], "min_token_cosine": 1.01})
    with pytest.warns(FidelityWarning):
        out = export_model([toy_trio[64]], tmp_path / "fp32-equivalent", precisions="fp32,int8", engines="onnxruntime")
    entry = _int8(out)
    assert entry["fp32_equivalent"] is True and entry["file"] == "model.onnx"
    assert entry["mixed_precision"]["outcome"] == "fp32-equivalent" and entry["mixed_precision"]["reason"]
    assert not (out / "model-int8.onnx").exists()
    with pytest.warns(FidelityWarning, match="is the fp32 graph"):
        int8 = ColbertEncoder(out, dim=64, precision="int8", engine="onnxruntime")
    for a, b in zip(int8.encode_documents(TEXTS), ColbertEncoder(out, dim=64).encode_documents(TEXTS), strict=True):
        np.testing.assert_array_equal(a, b)
    assert "no graph with int8 GEMMs passed the gates" in mixed_precision_summary(read_manifest(out))[0]


@pytest.mark.parametrize("heads", [(64,), (128, 64)])
def test_a_search_that_passes_only_with_every_int8_gemm_fp32_gives_the_fp32_graph_as_int8(toy_trio, tmp_path,
                                                                                      monkeypatch, heads):
    """A gate that the fp32 graph meets but no graph with an int8 GEMM left does (1e-9 below fp32's own figure):
    such a "mixed" graph would be the fp32 graph plus the int8 graph's extra passes, slower for nothing, so the
    int8 precision is the fp32 graph, saying why."""
    fp32 = export_model([toy_trio[d] for d in heads], tmp_path / "fp32", precisions="fp32", engines="onnxruntime")
    fp32_min = min(m["min_token_cosine"] for m in _manifest(fp32)["fidelity"]["fp32"].values())
    monkeypatch.setitem(fidelity.GATES, "int8", {**fidelity.GATES["int8"], "min_token_cosine": fp32_min - 1e-9})
    with pytest.warns(FidelityWarning, match="is the fp32 graph"):
        out = export_model([toy_trio[d] for d in heads], tmp_path / "int8", precisions="fp32,int8",
                           engines="onnxruntime")
        ColbertEncoder(out, dim=heads[-1], precision="int8", engine="onnxruntime")
    entry = _int8(out)
    assert entry["fp32_equivalent"] is True and entry["file"] == "model.onnx"
    record = entry["mixed_precision"]
    assert record["outcome"] == "fp32-equivalent" and record["reason"] == NO_INT8_GEMM_LEFT
    assert all(m["passed"] for m in entry["fidelity"].values())  # the fp32 graph meets the int8 gates
    assert any(step["passed"] for step in record["steps"])  # the search did find a passing graph: all in fp32
    assert not (out / "model-int8.onnx").exists()


@pytest.mark.parametrize(("stride", "ranking"), [(3, "restore-one-sampled"), (0, "restore-one-sampled"),
                                                  (None, "local")])
def test_where_restore_one_does_not_fit_the_budget_a_sample_ranks_and_local_only_where_none_fits(
        toy_trio, tmp_path, monkeypatch, pure_min_cosine, stride, ranking):
    from colbert_onnx.export import mixed_precision

    gate = pure_min_cosine + (1.0 - pure_min_cosine) / 2
    monkeypatch.setitem(fidelity.GATES, "int8", {**fidelity.GATES["int8"], "min_token_cosine": gate})
    monkeypatch.setattr(mixed_precision, "sampled_stride", lambda *_: stride)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FidelityWarning)
        out = export_model([toy_trio[128], toy_trio[64]], tmp_path / "out", precisions="fp32,int8",
                           engines="onnxruntime")
    record = _int8(out)["mixed_precision"]
    assert record["ranking"] == ranking
    batches = {3: "the queries and 3 of ", 0: "the queries and 0 of "}
    assert record.get("ranking_sample", "").startswith(batches[stride]) if stride is not None else (
        "ranking_sample" not in record)


def _vectors_of_ids(feeds: dict) -> dict[int, np.ndarray]:
    """A stand-in graph: vectors that are a fixed function of the ids."""
    ids = feeds["input_ids"].astype(np.float64)[..., None]
    return {128: np.concatenate([np.sin(ids * k) + 1.5 for k in (0.1, 0.7, 1.3, 2.9)], axis=-1).astype(np.float32)}


@pytest.mark.parametrize("every", [0, 2, 3, 100])
def test_a_ranking_sample_holds_the_reference_tokens_of_its_own_batches(toy_model_dir, every):
    from colbert_onnx.export.fidelity import collect
    from colbert_onnx.export.mixed_precision import ranking_sample, ranking_score

    _, fset = _inputs(toy_model_dir)
    reference = collect(_vectors_of_ids, fset)
    sample, tokens = ranking_sample(fset, reference, every)
    assert len(sample.documents) == (len(range(0, len(fset.documents), every)) if every else 0)
    if sample.documents:
        np.testing.assert_array_equal(tokens[128].doc_tokens, collect(_vectors_of_ids, sample)[128].doc_tokens)
    else:
        assert tokens[128].doc_tokens.shape == (0, 4)
    assert ranking_score(_vectors_of_ids, tokens, sample) == pytest.approx(0.0, abs=1e-9)

    def noisy(feeds):
        vectors = _vectors_of_ids(feeds)[128]
        return {128: vectors * np.array([1.0, 1.0, 1.0, 0.8], np.float32)}

    assert ranking_score(noisy, tokens, sample) > 0.1


def test_the_sampled_stride_is_the_largest_sample_whose_restore_one_fits(toy_model_dir):
    """The fitting stride whose sample holds the most tokens (a share does not fall steadily with the stride); the
    queries alone (0) before giving up."""
    from colbert_onnx.export.mixed_precision import sample_share, sampled_stride

    _, fset = _inputs(toy_model_dir)
    nodes, per_eval = 9, 2.0
    whole = (nodes + 1) * per_eval
    strides = [*range(1, len(fset.documents) + 1), 0]
    shares = {k: sample_share(fset, k) for k in strides}
    assert any(shares[k] > shares[k - 1] for k in strides[1:-1]), "the toy set shows the non-monotonic case"
    for fraction in sorted({*shares.values(), 0.95, 0.45, 0.3, 0.2, 0.12, 0.05, 0.01}, reverse=True):
        got = sampled_stride(fset, nodes, per_eval, whole * fraction)
        fitting = [k for k in strides if shares[k] <= fraction]
        if not fitting:
            assert got is None, fraction
            continue
        assert got in fitting and shares[got] == max(shares[k] for k in fitting), (fraction, got, shares)
    assert sampled_stride(fset, nodes, per_eval, whole) == 1
    assert sampled_stride(fset, nodes, per_eval, whole * shares[0] * 0.999) is None


def _reference_and_inputs(trio: dict[int, Path], folder: Path):
    from colbert_onnx.export import load_checkpoint
    from colbert_onnx.export.fidelity import reference_outputs
    from colbert_onnx.export.modeling import MultiHeadColbert

    ckpt = load_checkpoint(trio[128], hash_files=False)
    reference = reference_outputs(MultiHeadColbert(ckpt.module().roberta, {128: ckpt.head}), _inputs(folder)[1])
    return reference, *_inputs(folder)


@pytest.mark.parametrize("layer", [1, 2])
def test_restore_one_sensitivity_ranks_the_planted_outlier_layer_first(layer, tmp_path):
    """Outliers planted in one layer's LayerNorms only; the plain per-token method (no smoothing or split):
    the nodes that read that layer's LayerNorm outputs (its fc1, the next layer's q|k|v) rank first."""
    from colbert_onnx.export.mixed_precision import restore_one_sensitivity
    from colbert_onnx.export.outlier_family import FamilyMember, build_member
    from colbert_onnx.export.toy import OutlierSpec

    member = FamilyMember(seed=5 + layer, hidden_size=104, num_hidden_layers=4, attention_calm=1.0, quiet_heads=True,
                          outliers=OutlierSpec(3, (20, 40), layers=(layer,), embedding=False), dims=(128,))
    trio = build_member(member, tmp_path / "ckpt")
    folder = export_model([trio[128]], tmp_path / "onnx", precisions="fp32", check_parity=False, engines="onnxruntime")
    reference, calibration, fset = _reference_and_inputs(trio, folder)
    session, _ = build_switchable(onnx.load(str(folder / "model.onnx")), calibration, [128], tmp_path,
                                  method="per-token")
    sensitivity = restore_one_sensitivity(session, reference, fset)
    top = sorted(sensitivity, key=lambda n: -sensitivity[n])[:2]
    consumers = {f"/backbone/layers.{layer}/mlp/fc1/MatMul", f"/backbone/layers.{layer + 1}/mixer/Wqkv/MatMul"}
    assert consumers & set(top), (top, sensitivity)


DEFAULT_FAMILY = (0, 3, 7, 11)  # 0: outliers everywhere, 3: sharp attention, 7/11: random heads (degenerate)
WIDE_FAMILY = tuple(s for s in range(16) if s not in DEFAULT_FAMILY)


def _check_family_member(seed: int, tmp_path: Path) -> None:
    from colbert_onnx.export.outlier_family import build_member, draw_member

    member = draw_member(seed)
    trio = build_member(member, tmp_path / "ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FidelityWarning)  # checked below, from the manifest
        out = export_model([trio[d] for d in member.dims], tmp_path / "onnx", precisions="fp32,int8",
                           engines="onnxruntime")
    manifest = _manifest(out)
    entry = _int8(out)
    # fp32 passes on every member: the degenerate ones (7, 11) score every document within 1e-5 of the others, and
    # such ties are not judged (runtime/fidelity.score_resolution)
    assert all(m["passed"] for m in manifest["fidelity"]["fp32"].values()), (member.describe(), manifest["fidelity"])
    if entry.get("fp32_equivalent"):  # allowed only when only a graph without int8 GEMMs passes: then the fp32
        # graph serves int8 and passes the int8 gates, and the export says why
        assert entry["mixed_precision"]["reason"] == NO_INT8_GEMM_LEFT, entry["mixed_precision"]
        assert all(m["passed"] for m in entry["fidelity"].values()), member.describe()
    else:
        missed = {d: m for d, m in entry["fidelity"].items() if not m["passed"]}
        assert not missed, (member.describe(), missed)


@pytest.mark.parametrize("seed", DEFAULT_FAMILY)
def test_default_int8_passes_every_gate_on_the_outlier_family_or_says_why_not(seed, tmp_path):
    _check_family_member(seed, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", WIDE_FAMILY)
def test_default_int8_on_the_wider_outlier_family_sweep(seed, tmp_path):
    _check_family_member(seed, tmp_path)
