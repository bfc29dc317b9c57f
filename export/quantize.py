"""int8 (CPU) and fp16 (GPU) variants of an optimized fp32 graph.

int8 candidates: onnxruntime.quantization (dynamic per-channel, static QDQ, MatMulNBits) and the
default, per-token dynamic activations (export/per_token.py: onnxruntime has no per-token mode).
Also hand-written because onnxruntime lacks it: SmoothQuant-style smoothing. jina-colbert-v2
is post-norm, so a LayerNorm output feeds both the next MatMul and the residual Add: the smoothing
scale cannot be folded into the LayerNorm gain/bias without changing the residual path. Instead an
explicit per-channel Mul (x / s) is inserted in front of the MatMuls that read that LayerNorm output,
and s is folded into their weight rows (W * s), which leaves the function unchanged in exact math.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.transformers import onnx_model
from onnxruntime.transformers.onnx_model import OnnxModel

from colbert_onnx.session import inference_session

from .optimize import save_graph, split_skip_layernorm
from .per_token import rewrite_gathers, rewrite_matmuls, rewrite_weight_only

INT8_METHODS = (
    "dynamic",
    "dynamic-exclude",
    "smooth-dynamic",
    "static-qdq",
    "smooth-static-qdq",
    "smooth-nbits8",
    "smooth-int4",
    "per-token",
    "smooth-per-token",
)
DEFAULT_INT8_METHOD = "smooth-per-token"
SMOOTH_ALPHA = 0.5
# Channels whose calibration peak exceeds this many times the tensor's median channel peak are split
# off in fp32 by `smooth(split_outliers=True)`, at most SPLIT_MOST per tensor.
SPLIT_PEAK_RATIO = 6.0
SPLIT_MOST = 16
SPLIT_ROWS_SUFFIX = "_split_rows"  # weight rows of the outlier channels split off in fp32 (not quantized)
# fp16: kept in fp32 so statistics (LayerNorm), Softmax and the final L2 normalization stay exact.
FP16_OP_BLOCK_LIST = ["LayerNormalization", "SkipLayerNormalization", "Softmax", "ReduceL2", "Clip", "Div"]
Feeds = dict[str, np.ndarray]


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul nodes whose second input is a constant 2-D weight (the ones worth quantizing)."""
    inits = _initializers(model)
    return [
        n
        for n in model.graph.node
        if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2
    ]


def annotate_types(model: onnx.ModelProto) -> int:
    """Add value_info (element types and shapes) for every tensor, in place; returns how many were added.

    onnx's own shape inference stops at the com.microsoft ops of the optimized graph
    (SkipLayerNormalization, BiasGelu), and onnxruntime's calibrator only calibrates tensors whose
    type it knows: without this, every MatMul fed by a fused op keeps fp32 activations and
    onnxruntime runs it as a weight-only MatMulNBits (measured: 72 of 97 MatMuls, ~300 instead of
    ~700 GFLOP/s). Symbolic shape inference knows those ops; it runs on a copy whose large weights
    are graph inputs of the same shape, so it never copies or serializes gigabytes.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inferred = SymbolicShapeInference.infer_shapes(_weights_as_inputs(model), auto_merge=True, guess_output_rank=True)
    known = {v.name for v in model.graph.value_info}
    added = [v for v in inferred.graph.value_info if v.name not in known and v.type.tensor_type.elem_type]
    model.graph.value_info.extend(added)
    return len(added)


def _weights_as_inputs(model: onnx.ModelProto, small: int = 1024) -> onnx.ModelProto:
    """A copy of `model` whose initializers above `small` elements are graph inputs of the same type and shape."""
    return _without_weight_data(model, small, as_inputs=True)


def _without_weight_data(model: onnx.ModelProto, small: int, as_inputs: bool) -> onnx.ModelProto:
    """A copy of `model` (no tensor data copied) whose initializers above `small` elements become graph
    inputs (`as_inputs`) or data-less stubs of the same type and dims; smaller ones are kept."""
    graph = onnx.GraphProto(name=model.graph.name)
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(graph, field).extend(getattr(model.graph, field))
    for t in model.graph.initializer:
        if np.prod(t.dims) <= small:
            graph.initializer.append(t)
        elif as_inputs:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            stub = graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
            stub.data_location = onnx.TensorProto.EXTERNAL
            stub.external_data.add(key="location", value=STUB_LOCATION)
    work = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(work, field, getattr(model, field))
    work.metadata_props.extend(model.metadata_props)
    return work


def output_matmuls(model: onnx.ModelProto) -> list[str]:
    """Weight MatMuls whose result reaches a graph output without passing another MatMul: the ColBERT heads.

    They hold ~0.1 % of the FLOPs and write the vectors directly, so quantizing them buys no speed
    and costs fidelity where it is seen first.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}
    found = []
    for node in weight_matmuls(model):
        todo, seen = list(node.output), set()
        while todo:
            tensor = todo.pop()
            if tensor in outputs:
                found.append(node.name)
                break
            for c in consumers.get(tensor, []):
                if c.name not in seen and c.op_type not in ("MatMul", "Gemm"):
                    seen.add(c.name)
                    todo.extend(c.output)
    return found


def _with_outputs(model: onnx.ModelProto, names: Sequence[str], folder: Path) -> Path:
    """A copy of the model (saved under `folder`) that also returns the tensors `names`."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output}
    for name in names:
        if name not in existing:
            copy.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    path = folder / "calibration.onnx"
    save_graph(copy, path)
    return path


def activation_absmax(model: onnx.ModelProto, feeds: Iterable[Feeds]) -> dict[str, np.ndarray]:
    """Per-channel max |x| of every weight-MatMul input, over the real tokens of calibration batches."""
    names = sorted({n.input[0] for n in weight_matmuls(model)})
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        session = inference_session(str(_with_outputs(model, names, Path(tmp))), ort.SessionOptions(),
                                    ["CPUExecutionProvider"])
        for feed in feeds:
            real = feed["attention_mask"].astype(bool)
            for name, value in zip(names, session.run(names, feed), strict=True):
                peak = np.abs(value[real]).max(axis=0)
                out[name] = peak if name not in out else np.maximum(out[name], peak)
    return out


def outlier_ratio(absmax: np.ndarray) -> float:
    """Largest channel peak over the median channel peak: how badly one channel dominates a tensor."""
    return float(absmax.max() / max(float(np.median(absmax)), 1e-12))


def outlier_channels(absmax: np.ndarray) -> np.ndarray:
    """Channels whose calibration peak is SPLIT_PEAK_RATIO x the median channel peak (largest first, capped)."""
    big = np.flatnonzero(absmax > SPLIT_PEAK_RATIO * max(float(np.median(absmax)), 1e-12))
    return np.sort(big[np.argsort(-absmax[big])][:SPLIT_MOST]).astype(np.int64)


def _count_split_channels(model: onnx.ModelProto) -> int:
    return sum(t.dims[0] for t in model.graph.initializer if t.name.endswith("_split_channels"))


def smooth(
    model: onnx.ModelProto,
    absmax: dict[str, np.ndarray],
    alpha: float = SMOOTH_ALPHA,
    split_outliers: bool = False,
) -> int:
    """SmoothQuant in place: x/s before the MatMuls reading a LayerNorm output, W*s in their weights.

    s_j = max|x_j|^alpha / max|W_j|^(1-alpha), one s per activation tensor shared by all its
    weight-MatMul consumers. Returns how many activation tensors were smoothed.

    `split_outliers`: the outlier channels (`outlier_channels`) leave the smoothed product (their 1/s
    and weight rows are zero, so they no longer set a token's int8 scale) and are added back by a
    small fp32 MatMul of the unsmoothed channels, as LLM.int8() does. Measured on the 512-wide
    outlier toy: layer 0's Wqkv alone took the default int8's min token cosine from 0.99 to 0.979.
    """
    inits = _initializers(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in weight_matmuls(model):
        src = producers.get(node.input[0])
        if src is None or src.op_type not in ("LayerNormalization", "SkipLayerNormalization"):
            continue
        if node.input[0] != src.output[0] or uses.get(node.input[1], 0) != 1 or node.input[0] not in absmax:
            continue
        consumers.setdefault(node.input[0], []).append(node)
    new_nodes: dict[str, list[onnx.NodeProto]] = {}  # placed right after the producer of the key
    split_adds: dict[str, list[onnx.NodeProto]] = {}  # placed right after the MatMul of the key
    for tensor, nodes in consumers.items():
        weights = {n.name: numpy_helper.to_array(inits[n.input[1]]) for n in nodes}
        w_peak = np.max([np.abs(w).max(axis=1) for w in weights.values()], axis=0)
        act = absmax[tensor].astype(np.float64)
        scale = np.power(np.maximum(act, 1e-5), alpha) / np.power(np.maximum(w_peak, 1e-5), 1.0 - alpha)
        scale = np.clip(scale, 1e-3, 1e3).astype(np.float32)
        inv = (1.0 / scale).astype(np.float32)
        split = outlier_channels(act) if split_outliers else np.zeros(0, np.int64)
        inv[split] = 0.0
        inv_name, smoothed = tensor + "_smooth_inv_scale", tensor + "_smoothed"
        model.graph.initializer.append(numpy_helper.from_array(inv, inv_name))
        new_nodes[tensor] = [helper.make_node("Mul", [tensor, inv_name], [smoothed], name=tensor + "_Smooth")]
        if split.size:
            idx_name, picked = tensor + "_split_channels", tensor + "_split"
            model.graph.initializer.append(numpy_helper.from_array(split, idx_name))
            new_nodes[tensor].append(
                helper.make_node("Gather", [tensor, idx_name], [picked], name=tensor + "_Split", axis=-1))
        for n in nodes:
            w = weights[n.name] * scale[:, None]
            w[split] = 0.0
            inits[n.input[1]].CopyFrom(numpy_helper.from_array(w.astype(np.float32), n.input[1]))
            n.input[0] = smoothed
            if split.size:
                w_split, y = n.input[1] + SPLIT_ROWS_SUFFIX, n.output[0]
                rows = weights[n.name][split].astype(np.float32)  # unsmoothed: `picked` is too
                model.graph.initializer.append(numpy_helper.from_array(rows, w_split))
                n.output[0] = y + "_without_split"
                split_adds[n.name] = [
                    helper.make_node("MatMul", [picked, w_split], [y + "_split_part"], name=n.name + "_SplitPart"),
                    helper.make_node("Add", [n.output[0], y + "_split_part"], [y], name=n.name + "_WithSplit"),
                ]
    if new_nodes:  # keep topological order: each Mul right after the node producing its input
        ordered = []
        for node in model.graph.node:
            ordered.append(node)
            for o in node.output:
                ordered.extend(new_nodes.get(o, []))
            ordered.extend(split_adds.get(node.name, []))
        del model.graph.node[:]
        model.graph.node.extend(ordered)
    return len(new_nodes)


def most_sensitive_matmuls(model: onnx.ModelProto, absmax: dict[str, np.ndarray], count: int) -> list[str]:
    """Names of the `count` weight MatMuls whose input has the worst channel-outlier ratio."""
    ranked = sorted(weight_matmuls(model), key=lambda n: -outlier_ratio(absmax.get(n.input[0], np.ones(1))))
    return [n.name for n in ranked[:count]]


class _Reader(CalibrationDataReader):
    def __init__(self, feeds: Sequence[Feeds]) -> None:
        self._it = iter(list(feeds))

    def get_next(self) -> Feeds | None:
        return next(self._it, None)


def prepare_int8(
    model: onnx.ModelProto, calibration: Sequence[Feeds], method: str, exclude_count: int = 4
) -> tuple[onnx.ModelProto, dict]:
    """A copy of `model` made ready for `method`'s quantizer (smoothed, outlier channels split off, ...),
    exact in real arithmetic, and the manifest description so far."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    info: dict = {"method": method}
    if method.startswith("smooth") or method == "dynamic-exclude":
        absmax = activation_absmax(work, calibration)
        if method.startswith("smooth"):
            split = method.endswith("per-token")
            info["smoothed_tensors"] = smooth(work, absmax, split_outliers=split)
            if split:
                info["fp32_split_channels"] = _count_split_channels(work)
            info["smooth_alpha"] = SMOOTH_ALPHA
        else:
            info["fp32_matmuls"] = most_sensitive_matmuls(work, absmax, exclude_count)
    return work, info


def quantizable_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> what the per-token int8 rewrite does to it: "int8" (backbone MatMuls: int8 activations
    and weights), "weight-only" (the ColBERT heads) or "embedding" (the table Gather). The small fp32
    MatMuls of split-off outlier channels (smooth) are not quantizable."""
    heads = set(output_matmuls(model))
    kinds = {n.name: ("weight-only" if n.name in heads else "int8") for n in weight_matmuls(model)
             if not n.input[1].endswith(SPLIT_ROWS_SUFFIX)}
    inits = _initializers(model)
    kinds.update({n.name: "embedding" for n in model.graph.node
                  if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2})
    return kinds


def rewrite_per_token(work: onnx.ModelProto, keep_float: frozenset[str] = frozenset()) -> dict:
    """The per-token int8 rewrite of a prepared graph, in place; nodes named in `keep_float` stay fp32."""
    kinds = quantizable_nodes(work)
    unknown = sorted(set(keep_float) - set(kinds))
    if unknown:
        raise ValueError(f"keep_float names nodes that are not quantizable: {unknown[:3]}")
    pick = {kind: {n for n, k in kinds.items() if k == kind and n not in keep_float}
            for kind in ("int8", "weight-only", "embedding")}
    info = {
        "quantized_matmuls": rewrite_matmuls(work, pick["int8"]),
        "weight_only_matmuls": rewrite_weight_only(work, pick["weight-only"]),
        "quantized_gathers": rewrite_gathers(work, pick["embedding"]),
        "tool": "hand-written (export/per_token.py): per-token dynamic U8 activations, S8 weights per channel",
        "split_skip_layernorms": split_skip_layernorm(work),
    }
    if keep_float:
        info["float_nodes"] = sorted(keep_float)
    return info


def quantize_int8(
    model: onnx.ModelProto,
    dst: Path,
    calibration: Sequence[Feeds],
    method: str = DEFAULT_INT8_METHOD,
    exclude_count: int = 4,
    keep_float: frozenset[str] = frozenset(),
) -> dict:
    """Write an int8 graph (weights of every constant MatMul and the embedding Gather) to `dst`.

    `model` is the optimized fp32 graph; it is not modified. Returns the manifest description.
    `keep_float` (per-token methods): names of quantizable nodes (quantizable_nodes) left in fp32.
    """
    if method not in INT8_METHODS:
        raise ValueError(f"unknown int8 method {method!r}; choose one of {', '.join(INT8_METHODS)}")
    if keep_float and not method.endswith("per-token"):
        raise ValueError(f"keep_float applies to the per-token methods, not {method!r}")
    work, info = prepare_int8(model, calibration, method, exclude_count)
    if method.endswith("per-token"):
        info.update(rewrite_per_token(work, keep_float))
        save_graph(work, dst)
        return info
    matmuls = [n.name for n in weight_matmuls(work)]
    excluded = info.get("fp32_matmuls", [])
    if method.endswith(("nbits8", "int4")):
        bits, block = (8, 128) if method.endswith("nbits8") else (4, 32)
        info["quantized_matmuls"] = _matmul_nbits(work, bits, block)
        info["quantized_gathers"] = rewrite_gathers(work)
        info["tool"] = (
            f"onnxruntime MatMulNBitsQuantizer(bits={bits}, block {block}, accuracy_level=4) + per-row int8 Gather"
        )
        info["split_skip_layernorms"] = split_skip_layernorm(work)
        save_graph(work, dst)
        return info
    info["typed_tensors"] = annotate_types(work)
    gathers = [n.name for n in work.graph.node if n.op_type == "Gather" and n.input[0] in _initializers(work)]
    nodes = [m for m in matmuls if m not in excluded] + gathers
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fp32.onnx"
        big = save_graph(work, src)["external_data"] is not None
        del work
        dst.unlink(missing_ok=True)
        tmp_dst = Path(tmp) / "int8.onnx"
        # onnxruntime.quantization logs a root-logger warning for every tensor it skips.
        with _root_log_level(logging.ERROR):
            if method.endswith("static-qdq"):
                quantize_static(
                    str(src),
                    str(tmp_dst),
                    _Reader(calibration),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gather"],
                    nodes_to_quantize=nodes,
                    use_external_data_format=big,
                    extra_options={
                        "DefaultTensorType": onnx.TensorProto.FLOAT,
                        # float MatMul outputs: onnxruntime fuses DQ->MatMul into MatMulIntegerToFloat
                        "OpTypesToExcludeOutputQuantization": ["MatMul"],
                    },
                )
                info["tool"] = "onnxruntime.quantization.quantize_static(QDQ, per_channel, MinMax, U8 act, S8 weights)"
            else:
                quantize_dynamic(
                    str(src),
                    str(tmp_dst),
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gather"],
                    nodes_to_quantize=nodes,
                    use_external_data_format=big,
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
                info["tool"] = "onnxruntime.quantization.quantize_dynamic(per_channel, S8 weights, U8 dynamic act)"
        save_graph(onnx.load(str(tmp_dst)), dst)  # one self-contained file (int8 stays far below 2 GB)
    info["quantized_matmuls"] = len(matmuls) - len(excluded)
    info["quantized_gathers"] = len(gathers)
    return info


def _matmul_nbits(model: onnx.ModelProto, bits: int, block_size: int) -> int:
    """Weight MatMuls to com.microsoft MatMulNBits (4- or 8-bit weight blocks, int8 compute), in place."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    cfg = DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=True, accuracy_level=4, bits=bits, op_types_to_quantize=("MatMul",)
    )
    with _root_log_level(logging.ERROR):
        quantizer = MatMulNBitsQuantizer(model, algo_config=cfg)
        quantizer.process()
    if quantizer.model.model is not model:
        model.CopyFrom(quantizer.model.model)
    return sum(n.op_type == "MatMulNBits" for n in model.graph.node)


@contextmanager
def _root_log_level(level: int) -> Iterator[None]:
    root = logging.getLogger()
    previous = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(previous)


def _rotary_nodes(model: onnx.ModelProto) -> list[str]:
    """Cos/Sin and everything upstream of them: rotary angles reach 8191 rad, beyond fp16's precision."""
    producers = {o: n for n in model.graph.node for o in n.output}
    todo = [n for n in model.graph.node if n.op_type in ("Cos", "Sin")]
    seen: dict[str, onnx.NodeProto] = {}
    while todo:
        node = todo.pop()
        if node.name in seen:
            continue
        seen[node.name] = node
        todo.extend(producers[i] for i in node.input if i in producers)
    return sorted(seen)


def convert_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """fp16 weights and MatMuls; LayerNorm, Softmax, the final normalization and rotary tables stay fp32.

    The conversion runs on a copy whose large weights are data-less stubs (the converter needs only
    their types), then each weight is converted on its own: on the full-size model the plain call
    held ~11 GB more than the fp32 graph (three model copies inside symbolic shape inference).
    """
    blocked_nodes = _rotary_nodes(model)
    # Weight matrices and the embedding table as data-less stubs; biases and LayerNorm gains stay
    # (symbolic shape inference reads some of them as values).
    work = _without_weight_data(model, STUB_ABOVE, as_inputs=False)
    # OnnxModel's wrapper runs symbolic shape inference first, which knows the fused com.microsoft ops
    # (plain float16.convert_float_to_float16 leaves fp32/fp16 mismatches after SkipLayerNormalization).
    wrapped = OnnxModel(work)
    # The converter reads each converted weight's data only to learn its shape; the dims say the same.
    with mock.patch.dict(_converter_namespace(), {"make_value_info_from_tensor": _value_info_from_dims}):
        wrapped.convert_float_to_float16(
            use_symbolic_shape_infer=True,
            keep_io_types=True,
            op_block_list=FP16_OP_BLOCK_LIST,
            node_block_list=blocked_nodes,
        )
    converted = wrapped.model
    _fill_stubs(converted, model)
    duplicates = drop_duplicate_nodes(converted.graph)
    info = {
        "method": "onnxruntime.transformers OnnxModel.convert_float_to_float16(keep_io_types=True, symbolic shapes)",
        "fp32_op_types": FP16_OP_BLOCK_LIST,
        "fp32_nodes": len(blocked_nodes),
        "duplicate_nodes_dropped": duplicates,
    }
    return converted, info


STUB_LOCATION = "colbert-onnx-fp16-stub"
STUB_ABOVE = 65536  # elements: weight matrices and the embedding table, not biases or LayerNorm gains


def _converter_namespace() -> dict:
    """Globals of the fp16 converter OnnxModel calls (onnx_model imports it as a top-level module
    `float16`, a different module object from onnxruntime.transformers.float16)."""
    return onnx_model.convert_float_to_float16.__globals__


def _value_info_from_dims(tensor: onnx.TensorProto) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))


def _fill_stubs(converted: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """Put the weights back into the stubs, each converted to fp16 where the converter typed it so."""
    originals = {t.name: t for t in source.graph.initializer}
    for stub in converted.graph.initializer:
        if not (stub.data_location == onnx.TensorProto.EXTERNAL and stub.external_data
                and stub.external_data[0].value == STUB_LOCATION):
            continue
        weight = onnx.TensorProto()
        weight.CopyFrom(originals[stub.name])
        if stub.data_type == onnx.TensorProto.FLOAT16 and weight.data_type == onnx.TensorProto.FLOAT:
            weight = _converter_namespace()["convert_tensor_float_to_float16"](weight)
        elif stub.data_type != weight.data_type:
            raise RuntimeError(f"fp16 conversion typed {stub.name} as {stub.data_type}, from {weight.data_type}")
        stub.CopyFrom(weight)


def drop_duplicate_nodes(graph: onnx.GraphProto) -> int:
    """Remove nodes identical to an earlier one (same op, inputs, outputs, attributes); returns how many.

    onnxruntime 1.31's fp16 converter inserts one Cast per fp32 consumer of a tensor, all with the same
    name and output (here: the head's MatMul feeding ReduceL2 and Div), which onnxruntime then refuses
    to load ("two nodes with same node name"). The copies compute the same tensor, so one is kept.
    """
    seen: set[bytes] = set()
    kept = []
    for node in graph.node:
        key = node.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            kept.append(node)
    dropped = len(graph.node) - len(kept)
    if dropped:
        del graph.node[:]
        graph.node.extend(kept)
    return dropped
