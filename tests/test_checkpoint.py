"""Loading jina-colbert-v2 checkpoints: layout, tensor names, dtypes, hub cache, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="checkpoint loading is part of the [export] extra")
from safetensors.torch import load_file, save_file  # noqa: E402

from colbert_onnx.export import CheckpointError, load_checkpoint  # noqa: E402


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite_tensors(folder: Path, edit) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_toy_checkpoint_has_real_layout_and_bf16_tensor_names(toy_trio):
    folder = toy_trio[128]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "artifact.metadata"):
        assert (folder / name).is_file(), name
    tensors = load_file(str(folder / "model.safetensors"))
    assert tensors["roberta.encoder.layers.0.mixer.Wqkv.weight"].dtype == torch.bfloat16
    assert "roberta.pooler.dense.weight" in tensors
    assert tuple(tensors["linear.weight"].shape) == (128, 64)
    assert json.loads((folder / "artifact.metadata").read_text())["query_maxlen"] == 32


def test_bf16_weights_are_upcast_to_fp32(toy_trio):
    ckpt = load_checkpoint(toy_trio[96])
    assert ckpt.dim == 96
    assert ckpt.head.dtype == torch.float32
    assert all(t.dtype == torch.float32 for t in ckpt.backbone_state.values())


def test_fp16_weights_are_upcast_to_fp32(toy_trio, tmp_path):
    folder = _copy(toy_trio[64], tmp_path / "fp16")
    _rewrite_tensors(folder, lambda t: t.update({k: v.to(torch.float16) for k, v in t.items()}))
    ckpt = load_checkpoint(folder)
    assert ckpt.backbone_state["emb_ln.weight"].dtype == torch.float32


def test_names_without_roberta_prefix_load_the_same_weights(toy_trio, tmp_path):
    folder = _copy(toy_trio[128], tmp_path / "noprefix")

    def strip(t: dict) -> None:
        for key in [k for k in t if k.startswith("roberta.")]:
            t[key[len("roberta.") :]] = t.pop(key)

    _rewrite_tensors(folder, strip)
    a, b = load_checkpoint(toy_trio[128]), load_checkpoint(folder)
    assert a.backbone_sha256 == b.backbone_sha256
    assert torch.equal(a.backbone_state["emb_ln.weight"], b.backbone_state["emb_ln.weight"])


def test_missing_tensor_is_named(toy_trio, tmp_path):
    folder = _copy(toy_trio[128], tmp_path / "missing")
    _rewrite_tensors(folder, lambda t: t.pop("roberta.encoder.layers.1.mlp.fc2.bias"))
    with pytest.raises(CheckpointError, match=r"roberta\.encoder\.layers\.1\.mlp\.fc2\.bias"):
        load_checkpoint(folder)


def test_unexpected_tensor_is_named(toy_trio, tmp_path):
    folder = _copy(toy_trio[128], tmp_path / "unexpected")
    _rewrite_tensors(folder, lambda t: t.update({"roberta.encoder.layers.0.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'roberta\.encoder\.layers\.0\.extra\.weight'"):
        load_checkpoint(folder)


def test_misshaped_tensor_is_named_with_both_shapes(toy_trio, tmp_path):
    folder = _copy(toy_trio[128], tmp_path / "shape")
    _rewrite_tensors(folder, lambda t: t.update({"roberta.emb_ln.bias": torch.zeros(65, dtype=torch.bfloat16)}))
    with pytest.raises(CheckpointError, match=r"roberta\.emb_ln\.bias.*\(65,\).*\(64,\)"):
        load_checkpoint(folder)


def test_missing_head_is_reported(toy_trio, tmp_path):
    folder = _copy(toy_trio[128], tmp_path / "nohead")
    _rewrite_tensors(folder, lambda t: t.pop("linear.weight"))
    with pytest.raises(CheckpointError, match="linear.weight"):
        load_checkpoint(folder)


def test_folder_without_weights_is_reported(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tmp_path)


def test_byte_identical_backbones_share_a_hash_and_heads_differ(toy_trio):
    a, b = load_checkpoint(toy_trio[128]), load_checkpoint(toy_trio[64])
    assert a.backbone_sha256 == b.backbone_sha256
    assert not torch.allclose(a.head[:64], b.head), "the 64 head must not be a truncation of the 128 head"


def _fake_hub_cache(cache: Path, repo_id: str, src: Path) -> None:
    org, name = repo_id.split("/")
    repo = cache / f"models--{org}--{name}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(src, repo / "snapshots" / commit)


def test_hub_id_loads_offline_from_hf_cache(toy_trio, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "jinaai/jina-colbert-v2", toy_trio[128])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    ckpt = load_checkpoint("jinaai/jina-colbert-v2")
    assert ckpt.source_id == "jinaai/jina-colbert-v2"
    assert ckpt.dim == 128


def test_hub_id_without_network_or_cache_says_to_pass_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="pass its folder"):
        load_checkpoint("jinaai/jina-colbert-v2")


def test_nonexistent_local_path_is_not_mistaken_for_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match="neither an existing folder"):
        load_checkpoint(tmp_path / "nope" / "deeper")


def _edit_json(folder: Path, name: str, edit) -> None:
    data = json.loads((folder / name).read_text()) if (folder / name).is_file() else {}
    (folder / name).write_text(json.dumps(edit(data) or data))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c.update(hidden_size="sixty-four"), r"hidden_size='sixty-four'; expected an int >= 1"),
    (lambda c: c.update(hidden_size=64.7), r"hidden_size=64.7; expected an int >= 1"),
    (lambda c: c.update(hidden_size="64"), r"hidden_size='64'"),
    (lambda c: c.update(vocab_size=None), r"vocab_size=None"),
    (lambda c: c.update(num_attention_heads=0), r"num_attention_heads=0"),
    (lambda c: c.update(num_hidden_layers=True), r"num_hidden_layers=True"),
    (lambda c: c.update(layer_norm_eps="tiny"), r"layer_norm_eps='tiny'; expected a positive finite number"),
    (lambda c: c.update(layer_norm_eps=-1), r"layer_norm_eps=-1"),
    (lambda c: c.update(rotary_emb_base=float("nan")), r"rotary_emb_base=nan"),
    (lambda c: c.update(max_position_embeddings=0), r"max_position_embeddings=0"),
    (lambda c: [1, 2, 3], r"config.json holds a JSON list, not an object"),
], ids=["str-size", "float-size", "str-number", "null-vocab", "zero-heads", "bool-layers", "str-eps", "negative-eps",
        "nan-rotary", "zero-positions", "list"])
def test_a_config_value_the_model_cannot_have_is_named_before_any_work(toy_trio, tmp_path, edit, message):
    folder = _copy(toy_trio[128], tmp_path / "config")
    _edit_json(folder, "config.json", edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


def test_a_config_that_is_not_utf8_is_named(toy_trio, tmp_path):
    folder = _copy(toy_trio[128], tmp_path / "latin1")
    (folder / "config.json").write_bytes('{"model_type": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(CheckpointError, match="config.json is not valid UTF-8 JSON"):
        load_checkpoint(folder)


@pytest.mark.parametrize(("key", "value"), [("roberta.emb_ln.weight", torch.ones(64, dtype=torch.int32)),
                                            ("linear.weight", torch.ones(128, 64, dtype=torch.int8)),
                                            ("roberta.emb_ln.bias", torch.zeros(64, dtype=torch.bool))],
                         ids=["int32-backbone", "int8-head", "bool"])
def test_a_weight_that_is_not_floating_point_is_named(toy_trio, tmp_path, key, value):
    folder = _copy(toy_trio[128], tmp_path / "ints")
    _rewrite_tensors(folder, lambda t: t.update({key: value}))
    with pytest.raises(CheckpointError, match=f"{key}.*floating point"):
        load_checkpoint(folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("key", ["roberta.encoder.layers.1.mlp.fc2.weight", "linear.weight"])
def test_a_weight_holding_nan_or_infinity_is_named(toy_trio, tmp_path, key, bad):
    folder = _copy(toy_trio[128], tmp_path / "nan")

    def poison(tensors):
        tensor = tensors[key].clone()
        tensor.view(-1)[3] = bad
        tensors[key] = tensor

    _rewrite_tensors(folder, poison)
    with pytest.raises(CheckpointError, match=f"{key}' holds NaN or infinity"):
        load_checkpoint(folder)


def test_a_head_of_no_rows_is_refused(toy_trio, tmp_path):
    folder = _copy(toy_trio[128], tmp_path / "empty-head")
    _rewrite_tensors(folder, lambda t: t.update({"linear.weight": torch.zeros(0, 64, dtype=torch.bfloat16)}))
    with pytest.raises(CheckpointError, match="linear.weight"):
        load_checkpoint(folder)


def test_a_damaged_tokenizer_is_named_when_the_checkpoint_loads(toy_trio, tmp_path):
    folder = _copy(toy_trio[128], tmp_path / "tokenizer")
    text = (folder / "tokenizer.json").read_text()
    (folder / "tokenizer.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="cannot read .*tokenizer.json"):
        load_checkpoint(folder)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(attend_to_mask_tokens="false"), "attend_to_mask_tokens='false'; expected true or false"),
    (lambda m: m.update(mask_punctuation="no"), "mask_punctuation='no'"),
    (lambda m: m.update(query_maxlen="long"), "query_maxlen='long'; expected an int >= 1"),
    (lambda m: [1], "artifact.metadata holds a JSON list"),
], ids=["str-bool", "str-bool-2", "str-int", "list"])
def test_artifact_metadata_of_the_wrong_type_is_named_not_read_as_truthy(toy_trio, tmp_path, edit, message):
    folder = _copy(toy_trio[128], tmp_path / "meta")
    _edit_json(folder, "artifact.metadata", edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


@pytest.mark.parametrize(("hidden", "heads"), [(60, 4), (120, 8), (30, 2), (18, 6), (1000, 40)])
def test_an_odd_head_size_is_refused_naming_both_sizes(toy_trio, tmp_path, hidden, heads):
    folder = _copy(toy_trio[128], tmp_path / "odd")
    _edit_json(folder, "config.json", lambda c: c.update(hidden_size=hidden, num_attention_heads=heads))
    with pytest.raises(CheckpointError, match=f"hidden_size {hidden} / num_attention_heads {heads} = "
                                              f"{hidden // heads}, an odd head size"):
        load_checkpoint(folder)


@pytest.mark.parametrize(("positions", "query_maxlen"), [(24, 32), (31, 32), (64, 65), (512, 1000)])
def test_a_query_length_over_the_trained_positions_is_named_before_any_work(toy_trio, tmp_path, positions,
                                                                            query_maxlen):
    folder = _copy(toy_trio[128], tmp_path / "positions")
    _edit_json(folder, "config.json", lambda c: c.update(max_position_embeddings=positions))
    _edit_json(folder, "artifact.metadata", lambda m: m.update(query_maxlen=query_maxlen))
    with pytest.raises(CheckpointError, match=f"artifact.metadata: query_maxlen={query_maxlen} exceeds the "
                                              f"{positions} positions"):
        load_checkpoint(folder)


@pytest.mark.parametrize("query_maxlen", [1, 3])
def test_a_query_length_too_short_for_the_framing_is_named(toy_trio, tmp_path, query_maxlen):
    folder = _copy(toy_trio[128], tmp_path / "short")
    _edit_json(folder, "artifact.metadata", lambda m: m.update(query_maxlen=query_maxlen))
    with pytest.raises(CheckpointError, match=f"artifact.metadata: query_maxlen={query_maxlen}; a query needs at "
                                              "least 4 positions"):
        load_checkpoint(folder)


@pytest.mark.parametrize("similarity", ["l2", "dot", "", 5, ["cosine"]])
def test_a_similarity_other_than_cosine_is_refused_with_what_l2_would_give(toy_trio, tmp_path, similarity):
    folder = _copy(toy_trio[128], tmp_path / "similarity")
    _edit_json(folder, "artifact.metadata", lambda m: m.update(similarity=similarity))
    with pytest.raises(CheckpointError, match="similarity=.*colbert-onnx scores by cosine MaxSim"):
        load_checkpoint(folder)


@pytest.mark.parametrize("key", ["query_maxlen", "similarity", "doc_maxlen"])
def test_a_null_convention_reads_as_absent(toy_trio, tmp_path, key):
    folder = _copy(toy_trio[128], tmp_path / "null")
    _edit_json(folder, "artifact.metadata", lambda m: m.update({key: None}))
    assert load_checkpoint(folder, hash_files=False).metadata[key] is None


def test_a_toy_checkpoint_with_two_token_types_has_the_table_its_config_says(tmp_path):
    from colbert_onnx.export import make_toy_trio

    trio = make_toy_trio(tmp_path / "types", dims=(64,), config_overrides={"type_vocab_size": 2})
    checkpoint = load_checkpoint(trio[64], hash_files=False)
    assert tuple(checkpoint.backbone_state["embeddings.token_type_embeddings.weight"].shape) == (2, 64)
