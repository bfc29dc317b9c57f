"""Attention off the masked path: long unpadded batches run MultiHeadAttention without the key padding mask.

The graph picks per layer: no padding and at least UNMASKED_MIN_TOKENS tokens -> MultiHeadAttention(q, k, v)
(the CPU flash kernel); otherwise the masked If/Loop exported until 2026-12-01 (export/attention.py). Both
give the same vectors (fp32 within 1e-5; int8 see TOLERANCE), and the profile shows which one ran.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="the toy model folder is exported with the [export] extra")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from benchmarks.profiling import kernel_runs  # noqa: E402
from colbert_onnx.export.attention import UNMASKED_MIN_TOKENS, drop_unmasked_branch  # noqa: E402

LAYERS = 2  # of the toy model
LONG = UNMASKED_MIN_TOKENS
GRAPHS = {"fp32": "model.onnx", "int8": "model-int8.onnx"}
# The two kernels round differently (~1e-7); the int8 graph requantizes every layer's activations per
# token, so that difference can flip an int8 code and move a vector by ~1e-4 (toy) to ~7e-3 (4 layers at
# full width; docs/benchmarks.md). Which kernel a document takes never depends on its batch-mates
# (runtime/planning.py, tests/test_planning.py).
TOLERANCE = {"fp32": 1e-5, "int8": 1e-3}


def _documents(*lengths: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (batch, longest) ids of framed random documents and their key padding mask."""
    rng = np.random.default_rng(sum(lengths))
    ids = np.ones((len(lengths), max(lengths)), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(5, 400, n)
        ids[row, 0], ids[row, n - 1] = 0, 2
    return ids, (ids != 1).astype(np.int64)


def _feeds(ids: np.ndarray, mask: np.ndarray) -> dict:
    return {"input_ids": ids, "attention_mask": mask}


def _run(graph, ids, mask) -> np.ndarray:
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return session.run(["vectors_128"], _feeds(ids, mask))[0]


@pytest.fixture(scope="module")
def masked_only(toy_model_dir, tmp_path_factory) -> dict:
    """precision -> the same graph with the unmasked branch dropped: every batch takes the masked path."""
    out = tmp_path_factory.mktemp("masked-only")
    graphs = {}
    for precision, file in GRAPHS.items():
        model = onnx.load(str(toy_model_dir / file))
        assert drop_unmasked_branch(model) == LAYERS
        onnx.save(model, str(out / file))
        graphs[precision] = out / file
    return graphs


def _mha_runs(graph, ids, mask) -> dict[str, int]:
    """Runs per MultiHeadAttention node kind: MHAUnmasked, MHA (masked, one step), MHAStep (masked, stepped)."""
    kinds = {"MHAUnmasked": 0, "MHA": 0, "MHAStep": 0}
    for name, count in kernel_runs(graph, _feeds(ids, mask)).items():
        kind = name.rsplit("/", 1)[-1]
        if kind in kinds:
            kinds[kind] += count
    return kinds


@pytest.mark.parametrize("precision", GRAPHS)
def test_long_unpadded_batch_runs_attention_without_the_mask(toy_model_dir, precision):
    ids, mask = _documents(LONG, LONG)
    assert _mha_runs(toy_model_dir / GRAPHS[precision], ids, mask) == {"MHAUnmasked": LAYERS, "MHA": 0, "MHAStep": 0}


@pytest.mark.parametrize("lengths", [(LONG, LONG - 1), (LONG - 1, LONG - 1), (32, 32)])
def test_padded_or_short_batches_run_the_masked_attention(toy_model_dir, lengths):
    ids, mask = _documents(*lengths)
    assert _mha_runs(toy_model_dir / "model.onnx", ids, mask) == {"MHAUnmasked": 0, "MHA": LAYERS, "MHAStep": 0}


def test_dropping_the_unmasked_branch_sends_long_unpadded_batches_through_the_mask(masked_only):
    ids, mask = _documents(LONG, LONG)
    assert _mha_runs(masked_only["fp32"], ids, mask) == {"MHAUnmasked": 0, "MHA": LAYERS, "MHAStep": 0}


@pytest.mark.parametrize("precision", GRAPHS)
def test_unmasked_path_gives_the_vectors_of_the_masked_graph(toy_model_dir, masked_only, precision):
    ids, mask = _documents(LONG + 44, LONG + 44)
    fast = _run(toy_model_dir / GRAPHS[precision], ids, mask)
    masked = _run(masked_only[precision], ids, mask)
    assert np.abs(fast - masked).max() <= TOLERANCE[precision]


@pytest.mark.parametrize("precision", GRAPHS)
def test_a_long_document_gets_the_same_vectors_alone_and_padded_in_a_batch(toy_model_dir, precision):
    graph = toy_model_dir / GRAPHS[precision]
    lengths = (LONG + 10, LONG + 40, 12)
    ids, mask = _documents(*lengths)
    batched = _run(graph, ids, mask)  # masked path
    for row, n in enumerate(lengths):
        alone = _run(graph, ids[row : row + 1, :n], mask[row : row + 1, :n])  # unmasked for the long two
        assert np.abs(batched[row, :n] - alone[0]).max() <= TOLERANCE[precision]


def test_dropping_the_unmasked_branch_leaves_no_padding_test_behind(masked_only):
    nodes = onnx.load(str(masked_only["fp32"])).graph.node
    assert not any(n.name.endswith(("/IfUnmasked", "/Kept", "/AllOnes")) for n in nodes)
