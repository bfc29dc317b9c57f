"""Export: one folder for the 128/96/64 trio, shared backbone stored once, manifest, parity, external data."""

from __future__ import annotations

import copy
import json
import shutil
import string

import numpy as np
import pytest

pytest.importorskip("torch", reason="exporting is part of the [export] extra")
import onnx  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

import colbert_onnx.export.exporter as exporter  # noqa: E402
import colbert_onnx.export.optimize as optimize  # noqa: E402
import colbert_onnx.export.parity as parity  # noqa: E402
from benchmarks.profiling import kernel_runs  # noqa: E402
from colbert_onnx import ColbertEncoder  # noqa: E402
from colbert_onnx.export import CheckpointError, ParityError, export_model, make_toy_trio  # noqa: E402
from colbert_onnx.tokenization import pad_batch  # noqa: E402


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_manifest_records_sources_heads_conventions_and_parity(toy_model_dir, toy_trio):
    m = _manifest(toy_model_dir)
    assert m["format"] == "colbert-onnx" and m["format_version"] == 1
    assert m["heads"] == [128, 96, 64]
    assert [s["dim"] for s in m["sources"]] == [128, 96, 64]
    assert all(len(s["files_sha256"]["model.safetensors"]) == 64 for s in m["sources"])
    assert m["query"]["max_length"] == 32 and m["document"]["max_length"] == 8192
    tok = Tokenizer.from_file(str(toy_model_dir / "tokenizer.json"))
    assert m["query"]["marker_id"] == tok.token_to_id("[QueryMarker]")
    assert m["document"]["marker_id"] == tok.token_to_id("[DocumentMarker]")
    assert m["query"]["pad_id"] == tok.token_to_id("<mask>")
    expected_skip = sorted({tok.encode(p, add_special_tokens=False).ids[0] for p in string.punctuation})
    assert m["document"]["skiplist_ids"] == expected_skip
    assert m["precisions"] == ["fp32", "int8", "fp16"] and m["opset"] == exporter.OPSET
    for dim in ("128", "96", "64"):
        assert m["parity"]["fp32"][dim]["max_abs_diff"] <= 1e-4
        assert m["parity"]["fp32"][dim]["long_document_tokens"] >= 1024


def test_shared_backbone_is_stored_once(toy_model_dir, toy_trio, tmp_path):
    trio = _manifest(toy_model_dir)
    assert trio["shared_backbone"] is True
    fp32 = [g for g in trio["graphs"] if g["precision"] == "fp32"]
    assert len(fp32) == 1 and len(trio["graphs"]) == len(trio["precisions"])
    assert all(set(g["outputs"]) == {"128", "96", "64"} for g in trio["graphs"])
    single = export_model([toy_trio[128]], tmp_path / "single", check_parity=False, precisions="fp32")
    ratio = fp32[0]["bytes"] / _manifest(single)["graphs"][0]["bytes"]
    assert ratio < 1.1, f"three heads cost {ratio:.2f}x one head"


def test_different_backbones_get_separate_graphs(toy_trio, tmp_path):
    other = make_toy_trio(tmp_path / "other", seed=1, dims=(64,))
    out = export_model([toy_trio[128], other[64]], tmp_path / "mixed", precisions="fp32")
    graphs = _manifest(out)["graphs"]
    assert sorted(g["file"] for g in graphs) == ["model-128.onnx", "model-64.onnx"]
    assert ColbertEncoder(out, dim=64).encode_queries("x")[0].shape == (32, 64)


def test_graph_has_dynamic_batch_and_sequence_axes(toy_model_dir):
    model = onnx.load(str(toy_model_dir / "model.onnx"))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims[:2]] == ["batch", "sequence"], value.name


def test_onnx_matches_pytorch_for_every_head_on_padded_multilingual_batches(toy_model_dir, toy_trio):
    from colbert_onnx.export import load_checkpoint

    for dim in (128, 96, 64):
        result = parity.measure_parity(ColbertEncoder(toy_model_dir, dim=dim), load_checkpoint(toy_trio[dim]))
        assert result["passed"], result
        assert result["documents"] >= 20 and result["queries"] >= 10


def test_parity_failure_raises(toy_trio, tmp_path):
    with pytest.raises(ParityError, match="not faithful"):
        export_model([toy_trio[64]], tmp_path / "strict", precisions="fp32", parity_tolerance=1e-12)


def test_large_models_use_external_data(toy_trio, tmp_path, monkeypatch):
    monkeypatch.setattr(exporter, "EXTERNAL_DATA_THRESHOLD", 0)
    out = export_model([toy_trio[128]], tmp_path / "ext", precisions="fp32")
    graph = _manifest(out)["graphs"][0]
    assert graph["external_data"] == "model.onnx_data"
    assert (out / "model.onnx_data").stat().st_size > (out / "model.onnx").stat().st_size
    assert ColbertEncoder(out).encode_documents("Berlin")[0].shape[1] == 128


def test_duplicate_head_dims_are_rejected(toy_trio, tmp_path):
    copy = shutil.copytree(toy_trio[64], tmp_path / "copy64")
    with pytest.raises(CheckpointError, match="same head dim"):
        export_model([toy_trio[64], copy], tmp_path / "dup")


def test_export_writes_tokenizer_files(toy_model_dir):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (toy_model_dir / name).is_file()


def test_toy_generation_is_deterministic(tmp_path):
    a = make_toy_trio(tmp_path / "a", dims=(64,))[64]
    b = make_toy_trio(tmp_path / "b", dims=(64,))[64]
    for name in ("model.safetensors", "tokenizer.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_toy_tokenizer_uses_xlmr_special_ids_and_appends_markers(toy_trio):
    tok = Tokenizer.from_file(str(toy_trio[128] / "tokenizer.json"))
    assert [tok.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    size = tok.get_vocab_size(with_added_tokens=True)
    assert [tok.token_to_id(t) for t in ("<mask>", "[QueryMarker]", "[DocumentMarker]")] == [
        size - 3, size - 2, size - 1,
    ]
    config = json.loads((toy_trio[128] / "config.json").read_text())
    assert config["vocab_size"] == size
    assert np.all(np.array(tok.encode("Berlin!", add_special_tokens=False).ids) < size)


def _nodes(optimized) -> list[tuple]:
    return [(n.op_type, tuple(n.input), tuple(n.output)) for n in optimized.model.graph.node]


def test_the_fp32_optimizer_writes_the_same_graph_without_its_symbolic_shape_inference(toy_trio, tmp_path,
                                                                                       monkeypatch):
    """The inference only guards SkipLayerNormalization's broadcasting and no-op Casts, and takes minutes at 24
    layers (export/optimize.py): the exporter skips it, which must not change a node."""
    real = optimize.optimize_model
    pairs = []

    def both(model, **kwargs):
        assert kwargs["optimization_options"].enable_shape_inference is False
        inferred = real(copy.deepcopy(model), **{**kwargs, "optimization_options": None})
        skipped = real(model, **kwargs)
        pairs.append((_nodes(inferred), _nodes(skipped)))
        return skipped

    monkeypatch.setattr(optimize, "optimize_model", both)
    export_model([toy_trio[128], toy_trio[64]], tmp_path / "out", precisions="fp32", engines="onnxruntime",
                 check_parity=False)
    assert pairs and all(inferred == skipped for inferred, skipped in pairs)


def _subgraphs(node):
    return {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}


@pytest.fixture(scope="module")
def plain_attention_folder(toy_trio, tmp_path_factory):
    return export_model([toy_trio[64]], tmp_path_factory.mktemp("plain"), precisions="fp32", attention_chunk=None)


def test_attention_exports_as_one_fused_multihead_attention_per_layer(toy_model_dir):
    nodes = onnx.load(str(toy_model_dir / "model.onnx")).graph.node
    ifs = [n for n in nodes if n.op_type == "If"]
    assert len(ifs) == 2, "one attention per layer"
    assert not any(n.op_type in ("Softmax", "Loop") for n in nodes)
    for outer in ifs:  # If(no row padded) MHA without mask, else the masked If/Loop (tests/test_attention_paths.py)
        unmasked, masked = _subgraphs(outer)["then_branch"].node, _subgraphs(outer)["else_branch"].node
        assert [(n.op_type, len(n.input)) for n in unmasked] == [("MultiHeadAttention", 3)]
        (node,) = [n for n in masked if n.op_type == "If"]
        branches = _subgraphs(node)
        assert [n.op_type for n in branches["then_branch"].node] == ["MultiHeadAttention"]
        (loop,) = [n for n in branches["else_branch"].node if n.op_type == "Loop"]
        body = [n.op_type for n in _subgraphs(loop)["body"].node]
        assert body.count("MultiHeadAttention") == 1 and "Softmax" not in body


def test_plain_attention_export_has_no_fused_attention(plain_attention_folder):
    ops = [n.op_type for n in onnx.load(str(plain_attention_folder / "model.onnx")).graph.node]
    assert "Softmax" in ops and "If" not in ops and "MultiHeadAttention" not in ops


def test_attention_in_query_steps_equals_plain_attention(plain_attention_folder, toy_trio, tmp_path):
    heads = json.loads((toy_trio[64] / "config.json").read_text())["num_attention_heads"]
    long_doc = " ".join(["Berlin ist die Hauptstadt Deutschlands."] * 80)
    enc = ColbertEncoder(plain_attention_folder, dim=64)
    seq = len(enc.encode_documents([long_doc])[0])
    assert seq > 3 * 100
    # a budget of 100 queries per step for this batch of two: more than three steps per layer
    stepped = export_model([toy_trio[64]], tmp_path / "stepped", precisions="fp32", attention_chunk=16,
                           attention_budget=100 * 2 * heads * seq)
    texts = [long_doc, "Paris is in France."]
    for a, b in zip(enc.encode_documents(texts), ColbertEncoder(stepped, dim=64).encode_documents(texts), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)

    pre = ColbertEncoder(stepped, dim=64).preprocessor
    ids, mask = pad_batch(pre.documents(texts).ids, pre.special.pad)
    runs = kernel_runs(stepped / "model.onnx", {"input_ids": ids, "attention_mask": mask})
    step_runs = [n for name, n in runs.items() if name.endswith("/MHAStep")]
    assert len(step_runs) == 2 and all(n > 3 for n in step_runs), runs
    assert not any(name.endswith("/MHA") for name in runs)
    padded = mask[1:, :8].copy()
    padded[:, -1] = 0  # a padded key: the masked branch (unpadded batches skip the mask and the steps)
    short = kernel_runs(stepped / "model.onnx", {"input_ids": ids[1:, :8], "attention_mask": padded})
    assert sum(name.endswith("/MHA") for name in short) == 2, "a batch within the budget takes one step"
    assert not any(name.endswith("/MHAStep") for name in short)


def test_empty_batch_runs_through_the_fused_attention(toy_model_dir):
    import onnxruntime as ort

    session = ort.InferenceSession(str(toy_model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(0, 5), (2, 0)]:
        ids = np.zeros(shape, np.int64)
        (out, *_) = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        assert out.shape == (*shape, 128)


def test_non_positive_attention_steps_are_rejected(toy_trio, tmp_path):
    with pytest.raises(ValueError, match="attention_chunk"):
        export_model([toy_trio[64]], tmp_path / "bad", precisions="fp32", attention_chunk=0)


@pytest.mark.parametrize("fused", [True, False])
def test_rotary_exports_as_one_contrib_node_per_q_and_k_or_as_plain_ops(toy_trio, tmp_path, fused):
    import onnxruntime as ort
    import torch

    from colbert_onnx.export import load_checkpoint
    from colbert_onnx.export.modeling import MultiHeadColbert, set_fused_rotary

    ckpt = load_checkpoint(toy_trio[128], hash_files=False)
    module = MultiHeadColbert(ckpt.module().roberta, {128: ckpt.head})
    set_fused_rotary(module, fused)
    exporter.export_graph(module, tmp_path / "m.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops.count("RotaryEmbedding") == (2 * ckpt.backbone_config.num_hidden_layers if fused else 0)
    ids = np.array([[0, 617, 40, 41, 42, 43, 44, 2], [0, 617, 50, 51, 2, 1, 1, 1]])
    mask = (ids != 1).astype(np.int64)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        want = module(torch.from_numpy(ids), torch.from_numpy(mask))[0].numpy()
    assert np.abs(got - want).max() < 1e-5


def test_different_backbones_with_more_precisions_get_parity_for_every_head(toy_trio, tmp_path):
    # Parity is measured on the fp32 graph of each backbone; it was once paired with the second graph of
    # the list (the first backbone's fp16), which failed with KeyError 128.
    other = make_toy_trio(tmp_path / "other", seed=1, dims=(64,))
    out = export_model([toy_trio[128], other[64]], tmp_path / "mixed16", precisions="fp32,fp16")
    parity = _manifest(out)["parity"]["fp32"]
    assert {k for k in parity if k != "reference"} == {"64", "128"}
    assert all(parity[d]["passed"] for d in ("64", "128"))


ARCHITECTURE_CHANGES = {
    "hidden and heads": {"hidden_size": 96, "num_attention_heads": 3, "intermediate_size": 192},
    "layers": {"num_hidden_layers": 3},
    "rotary base": {"rotary_emb_base": 500000.0},
    "eps": {"layer_norm_eps": 1e-12},
    "positions": {"max_position_embeddings": 512},
}


@pytest.mark.parametrize("change", list(ARCHITECTURE_CHANGES), ids=str)
@pytest.mark.parametrize("order", ["first", "second"])
def test_checkpoints_of_different_architectures_are_refused_in_either_order(toy_trio, tmp_path, change, order):
    """One manifest records one architecture: before, the first checkpoint's positions and sizes were checked,
    recorded and used to optimize every graph, so the outcome depended on the order of the sources."""
    other = make_toy_trio(tmp_path / "other", seed=1, dims=(64,), config_overrides=ARCHITECTURE_CHANGES[change])
    sources = [toy_trio[128], other[64]] if order == "first" else [other[64], toy_trio[128]]
    key = next(iter(ARCHITECTURE_CHANGES[change]))
    with pytest.raises(CheckpointError, match=f"different backbone architectures \\({key}: "):
        export_model(sources, tmp_path / "out", precisions="fp32", engines="onnxruntime")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("key", "value"), [("attend_to_mask_tokens", False), ("query_maxlen", 16),
                                            ("mask_punctuation", False), ("query_token", "[Q]")])
def test_checkpoints_of_different_query_or_document_conventions_are_refused(toy_trio, tmp_path, key, value):
    other = make_toy_trio(tmp_path / "other", seed=1, dims=(64,))
    metadata = _read_json(other[64] / "artifact.metadata")
    metadata[key] = value
    (other[64] / "artifact.metadata").write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match="different query and document conventions"):
        export_model([toy_trio[128], other[64]], tmp_path / "out", precisions="fp32", engines="onnxruntime")


def _read_json(path):
    return json.loads(path.read_text())


def test_a_null_query_maxlen_exports_jina_colbert_v2s_32(toy_trio, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(toy_trio[64], folder)
    metadata = _read_json(folder / "artifact.metadata")
    metadata.update(query_maxlen=None, similarity=None)
    (folder / "artifact.metadata").write_text(json.dumps(metadata))
    out = export_model([folder], tmp_path / "out", precisions="fp32", engines="onnxruntime")
    assert _manifest(out)["query"]["max_length"] == 32 and _manifest(out)["similarity"] == "cosine"


def test_a_folder_the_runtime_would_refuse_is_not_written_even_without_parity(toy_trio, tmp_path, monkeypatch):
    from colbert_onnx.errors import ModelFolderError

    def refuse(path):
        raise ModelFolderError(f"{path}/manifest.json: constructed refusal")

    monkeypatch.setattr(exporter, "open_model_folder", refuse)
    with pytest.raises(CheckpointError, match="the export made a folder the runtime would refuse: .*constructed"):
        export_model([toy_trio[64]], tmp_path / "out", precisions="fp32", engines="onnxruntime", check_parity=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("positions", [64, 514, 8194, 16384])
def test_the_default_document_length_is_8192_or_the_positions_a_smaller_model_has(tmp_path, positions):
    trio = make_toy_trio(tmp_path / "ckpt", dims=(64,), config_overrides={"max_position_embeddings": positions})
    out = export_model([trio[64]], tmp_path / "out", precisions="fp32", engines="onnxruntime")
    assert _manifest(out)["document"]["max_length"] == min(8192, positions)
    (vectors,) = ColbertEncoder(out).encode_documents(["Berlin " * 20000])
    assert len(vectors) <= min(8192, positions)


def test_a_document_length_given_over_the_trained_positions_is_still_refused(tmp_path):
    trio = make_toy_trio(tmp_path / "ckpt", dims=(64,), config_overrides={"max_position_embeddings": 514})
    with pytest.raises(CheckpointError, match="document_max_length=1024 exceeds the 514 positions"):
        export_model([trio[64]], tmp_path / "out", document_max_length=1024, precisions="fp32", engines="onnxruntime")
