"""A checkpoint whose artifact.metadata says `attend_to_mask_tokens: false` (ColBERT's QueryTokenizer default;
jina-colbert-v2 says true) is run as its model runs: the query's `<mask>` padding is masked out of attention, and
every one of the query_max_length positions still gets its vector. The flag was recorded in the manifest and
ignored until 2026-12-07: such queries were run with an all-ones mask (token cosines down to 0.998, other scores).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="exporting is part of the [export] extra")
import torch  # noqa: E402

from colbert_onnx import ColbertEncoder  # noqa: E402
from colbert_onnx.export import export_model, load_checkpoint, make_toy_trio  # noqa: E402
from colbert_onnx.manifest import read_manifest  # noqa: E402
from colbert_onnx.verify import verify_folder  # noqa: E402

QUERIES = ["capital?", "what is the capital of France and how many people live there today?",
           "a <mask> literal in the text", "Berlin " * 40]


def _no_mask_attention(trio: dict, dims: tuple[int, ...]) -> None:
    for dim in dims:
        path = trio[dim] / "artifact.metadata"
        metadata = json.loads(path.read_text())
        metadata["attend_to_mask_tokens"] = False
        path.write_text(json.dumps(metadata))


@pytest.fixture(scope="module", params=[0, 1], ids=lambda s: f"seed {s}")
def unattended(request, tmp_path_factory):
    """(trio, folder): a toy trio whose queries do not attend to their padding, exported at fp32 and int8."""
    tmp = tmp_path_factory.mktemp(f"unattended-{request.param}")
    trio = make_toy_trio(tmp / "ckpt", seed=request.param, dims=(128, 64))
    _no_mask_attention(trio, (128, 64))
    return trio, export_model([trio[128], trio[64]], tmp / "onnx", precisions="fp32,int8", engines="onnxruntime")


def _torch_queries(trio: dict, dim: int, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    module = load_checkpoint(trio[dim], hash_files=False).module()
    with torch.no_grad():
        return module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


def test_the_manifest_records_that_queries_do_not_attend_to_their_padding(unattended) -> None:
    _, folder = unattended
    assert read_manifest(folder).query.attend_to_mask_tokens is False


@pytest.mark.parametrize("dim", [128, 64])
def test_query_vectors_are_the_models_with_the_padding_masked_out(unattended, dim) -> None:
    trio, folder = unattended
    encoder = ColbertEncoder(folder, dim=dim)
    batch = encoder.tokenize(QUERIES, "query")
    ids = np.stack(batch.ids)
    counts = batch.token_counts
    colbert_mask = (np.arange(ids.shape[1])[None, :] < counts[:, None]).astype(np.int64)
    assert colbert_mask.sum() < colbert_mask.size and colbert_mask[-1].all()  # padded queries and a full one
    got = np.stack(encoder.encode_queries(QUERIES))
    assert got.shape == (len(QUERIES), 32, dim)
    expected = _torch_queries(trio, dim, ids, colbert_mask)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    attended = _torch_queries(trio, dim, ids, np.ones_like(ids))
    assert np.abs(got - attended).max() > 1e-3  # what the all-ones mask gave: the flag makes a difference here


def test_a_literal_mask_token_in_the_text_is_attended_to(unattended) -> None:
    _, folder = unattended
    pre = ColbertEncoder(folder).preprocessor
    ids, mask = pre.query_feeds(["a <mask> literal"])
    literal = int(np.flatnonzero(ids[0] == pre.special.mask)[0])
    assert mask[0, literal] == 1 and mask[0, -1] == 0


def test_every_graph_passes_verify_with_the_padding_masked_out(unattended) -> None:
    _, folder = unattended
    verdicts = verify_folder(folder, engines=["onnxruntime"])
    assert {v.precision for v in verdicts} == {"fp32", "int8"}
    assert all(v.passed for v in verdicts), [(v.precision, v.dim, v.metrics) for v in verdicts if not v.passed]
    fp32 = [v.metrics["min_token_cosine"] for v in verdicts if v.precision == "fp32"]
    assert min(fp32) > 1 - 1e-5  # the reference was made with the same mask, not merely within the gates


def test_int8_query_vectors_follow_the_same_mask(unattended) -> None:
    trio, folder = unattended
    encoder = ColbertEncoder(folder, dim=128, precision="int8", engine="onnxruntime")
    batch = encoder.tokenize(QUERIES[:2], "query")
    ids = np.stack(batch.ids)
    colbert_mask = (np.arange(ids.shape[1])[None, :] < batch.token_counts[:, None]).astype(np.int64)
    got = np.stack(encoder.encode_queries(QUERIES[:2]))
    cosines = (got * _torch_queries(trio, 128, ids, colbert_mask)).sum(-1)
    assert cosines.min() > 0.99


def test_a_checkpoint_that_attends_to_its_padding_runs_queries_with_an_all_ones_mask(toy_model_dir) -> None:
    pre = ColbertEncoder(toy_model_dir).preprocessor
    assert pre.attend_to_mask_tokens is True
    _, mask = pre.query_feeds(["capital?", "Berlin " * 40])
    assert mask.all()
