"""The per-token int8 rewrite (export/per_token.py): exact against a numpy emulation, and where it applies."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("torch", reason="export/ needs the [export] extra")

from colbert_onnx.export.per_token import (  # noqa: E402
    GEMM_WEIGHT_CODE_MAX,
    quantize_weight,
    rewrite_gathers,
    rewrite_matmuls,
    rewrite_weight_only,
)
from colbert_onnx.export.quantize import outlier_channels, output_matmuls, smooth  # noqa: E402

K, N = 64, 48


def _matmul_graph(w: np.ndarray, opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, N])],
        [numpy_helper.from_array(w, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _run(model: onnx.ModelProto, **feeds: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _emulate(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-token symmetric activation scales, per-channel weight scales, integer products."""
    wq, ws = quantize_weight(w, code_max=GEMM_WEIGHT_CODE_MAX)
    s = np.maximum(np.abs(x).max(-1, keepdims=True), 1e-8) / 127.0
    xq = np.clip(np.round(x / s), -127, 127)
    return (xq.astype(np.float64) @ wq.astype(np.float64)) * s * ws


@pytest.mark.parametrize("opset", [17, 18])
def test_rewritten_matmul_equals_per_token_int8_emulation(opset):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((K, N)).astype(np.float32)
    x = rng.standard_normal((2, 5, K)).astype(np.float32)
    x[1, 2] *= 50.0  # one loud token must not coarsen the others' scale
    model = _matmul_graph(w, opset)
    assert rewrite_matmuls(model, {"mm"}) == 1
    got = _run(model, x=x)
    np.testing.assert_allclose(got, _emulate(x, w), rtol=1e-5, atol=1e-4)
    # 7-bit weights (per_token.GEMM_WEIGHT_CODE_MAX) and 8-bit tokens: 2.4 % here (1.2 % with 8-bit weights)
    assert np.abs(got - x @ w).max() / np.abs(x @ w).max() < 0.03


def test_rewritten_matmul_followed_by_a_bias_adds_the_bias_unscaled():
    """onnxruntime's MatMulIntegerToFloat fusion would fold a bias Add and scale it with the per-token scales."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    x = rng.standard_normal((1, 40, K)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y0"], name="mm"), helper.make_node("Add", ["y0", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, N])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rewrite_matmuls(model, {"mm"})
    np.testing.assert_allclose(_run(model, x=x), _emulate(x, w) + bias, rtol=1e-5, atol=1e-4)


def test_integer_gemm_is_exact_with_extreme_codes():
    """Every activation code at +-127 (u8 255 or 1) against weights of one sign: the pair sums that
    saturate onnxruntime's u8 x s8 kernel on CPUs without VNNI if weights used 8 bits."""
    w = np.where(np.arange(K)[:, None] % 3 == 0, -1.0, 1.0) * np.ones((K, N), np.float32)
    x = np.ones((1, 4, K), np.float32)
    x[0, 1] = -1.0
    x[0, 2, ::2] = -1.0
    model = _matmul_graph(w.astype(np.float32), 17)
    rewrite_matmuls(model, {"mm"})
    np.testing.assert_allclose(_run(model, x=x), _emulate(x, w), rtol=1e-6, atol=1e-5)


def test_integer_gemm_weights_use_seven_bits():
    rng = np.random.default_rng(3)
    model = _matmul_graph(rng.standard_normal((K, N)).astype(np.float32), 17)
    rewrite_matmuls(model, {"mm"})
    (codes,) = [numpy_helper.to_array(t) for t in model.graph.initializer
                if t.data_type == TensorProto.INT8 and len(t.dims) == 2]
    assert np.abs(codes.astype(np.int16)).max() == GEMM_WEIGHT_CODE_MAX == 63


def test_rewritten_matmul_runs_as_an_integer_gemm():
    model = _matmul_graph(np.ones((K, N), np.float32), 17)
    rewrite_matmuls(model, {"mm"})
    ops = {n.op_type for n in model.graph.node}
    assert "MatMulInteger" in ops and "MatMul" not in ops


def test_all_zero_token_gives_zero_not_nan():
    model = _matmul_graph(np.ones((K, N), np.float32), 17)
    rewrite_matmuls(model, {"mm"})
    got = _run(model, x=np.zeros((1, 3, K), np.float32))
    assert np.isfinite(got).all() and not got.any()


def test_weight_only_matmul_keeps_float_activations_and_int8_weights():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((K, N)).astype(np.float32)
    x = rng.standard_normal((1, 4, K)).astype(np.float32)
    model = _matmul_graph(w, 17)
    assert rewrite_weight_only(model, {"mm"}) == 1
    assert [t.data_type for t in model.graph.initializer if len(t.dims) == 2] == [TensorProto.INT8]
    wq, ws = quantize_weight(w)
    np.testing.assert_allclose(_run(model, x=x), x @ (wq * ws), rtol=1e-4, atol=1e-4)


def test_embedding_rows_get_their_own_int8_scale():
    rng = np.random.default_rng(2)
    table = rng.standard_normal((10, K)).astype(np.float32)
    table[3] *= 1000.0  # a huge row must not flatten the others
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["y"], name="emb")],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, K])],
        [numpy_helper.from_array(table, "E")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert rewrite_gathers(model) == 1
    ids = np.arange(10, dtype=np.int64)
    got = _run(model, ids=ids)
    step = np.abs(table).max(axis=1, keepdims=True) / 127.0
    assert (np.abs(got - table) <= 0.5 * step + 1e-6).all()


def test_output_matmuls_are_the_heads_not_the_backbone():
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="backbone"),
        helper.make_node("Relu", ["h"], ["r"], name="act"),
        helper.make_node("MatMul", ["r", "W2"], ["v"], name="head"),
        helper.make_node("LpNormalization", ["v"], ["y"], name="norm", axis=-1),
    ]
    w = numpy_helper.from_array(np.ones((K, K), np.float32), "W1")
    w2 = numpy_helper.from_array(np.ones((K, N), np.float32), "W2")
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])],
        [w, w2],
    )
    assert output_matmuls(helper.make_model(graph)) == ["head"]


def _embedding_graph(table: np.ndarray, gamma: np.ndarray) -> onnx.ModelProto:
    """ids -> Gather(table) -> + type row -> LayerNormalization(gamma): the embedding path of the export."""
    h = table.shape[1]
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"], name="gather"),
         helper.make_node("Add", ["emb", "type_row"], ["summed"], name="add"),
         helper.make_node("LayerNormalization", ["summed", "gamma", "beta"], ["y"], name="ln", axis=-1)],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [None, None, h]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, h])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.zeros(h, np.float32), "type_row"),
         numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(np.zeros(h, np.float32), "beta")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _embedding_outputs(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["emb"], {"ids": ids})[0]


def test_embedding_columns_the_layernorm_amplifies_stay_exact_in_int8():
    rng = np.random.default_rng(0)
    table = (0.05 * rng.standard_normal((300, 64))).astype(np.float32)
    gamma = np.ones(64, np.float32)
    gamma[[7, 40]] = [20.0, 12.0]  # outlier gains, as trained XLM-R-large has
    model = _embedding_graph(table, gamma)
    ids = rng.integers(0, 300, size=(2, 9)).astype(np.int64)
    want = _embedding_outputs(model, ids)
    assert rewrite_gathers(model) == 1
    got = _embedding_outputs(model, ids)
    np.testing.assert_array_equal(got[..., [7, 40]], want[..., [7, 40]])
    rest = np.setdiff1d(np.arange(64), [7, 40])
    step = np.abs(table[:, rest]).max(axis=1)[ids] / 127.0  # per-row int8 step, outlier columns left out
    assert (np.abs(got[..., rest] - want[..., rest]) <= 0.5 * step[..., None] + 1e-7).all()


def test_embedding_without_outlier_gains_keeps_the_plain_per_row_int8():
    rng = np.random.default_rng(1)
    model = _embedding_graph((0.05 * rng.standard_normal((50, 32))).astype(np.float32),
                             (1.0 + 0.1 * rng.standard_normal(32)).astype(np.float32))
    rewrite_gathers(model)
    assert [n.op_type for n in model.graph.node if n.name.startswith("gather")] == ["Gather", "Cast", "Gather", "Mul"]


def _layernorm_matmuls_graph(gamma: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """x -> LayerNormalization(gamma) -> two weight MatMuls (q/k/v-like consumers of one activation)."""
    graph = helper.make_graph(
        [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["h"], name="ln", axis=-1),
         helper.make_node("MatMul", ["h", "W1"], ["y1"], name="mm1"),
         helper.make_node("MatMul", ["h", "W2"], ["y2"], name="mm2")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, K])],
        [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [None, None, N]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [None, None, N])],
        [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(np.zeros(K, np.float32), "beta"),
         numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _outlier_case(seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    gamma = np.ones(K, np.float32)
    gamma[[3, 50]] = [25.0, 15.0]  # LayerNorm outlier gains, as trained XLM-R-large has
    w1, w2 = ((0.1 * rng.standard_normal((K, N))).astype(np.float32) for _ in range(2))
    model = _layernorm_matmuls_graph(gamma, w1, w2)
    x = rng.standard_normal((2, 7, K)).astype(np.float32)
    h = ort.InferenceSession(
        helper.make_model(helper.make_graph(
            [model.graph.node[0]], "ln", list(model.graph.input),
            [helper.make_tensor_value_info("h", TensorProto.FLOAT, None)], list(model.graph.initializer)),
            opset_imports=model.opset_import).SerializeToString(),
        providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return model, x, {"h": np.abs(h).reshape(-1, K).max(axis=0)}


def _outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_split_outlier_channels_leave_the_fp32_result_unchanged():
    model, x, absmax = _outlier_case()
    want = _outputs(model, x)
    assert smooth(model, absmax, split_outliers=True) == 1
    split = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "h_split_channels")
    assert sorted(split) == [3, 50]
    for got, ref in zip(_outputs(model, x), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_split_outlier_channels_do_not_set_the_per_token_int8_scale():
    errors = {}
    for split in (False, True):
        model, x, absmax = _outlier_case()
        want = _outputs(model, x)
        smooth(model, absmax, split_outliers=split)
        assert rewrite_matmuls(model, {"mm1", "mm2"}) == 2
        errors[split] = max(float(np.abs(g - w).max()) for g, w in zip(_outputs(model, x), want, strict=True))
    assert errors[True] < errors[False] / 2, errors  # measured 0.023 vs 0.077


def test_no_channel_is_split_without_outliers():
    rng = np.random.default_rng(2)
    absmax = {"h": (3.0 + 0.3 * rng.standard_normal(K)).astype(np.float32)}
    assert outlier_channels(absmax["h"]).size == 0
