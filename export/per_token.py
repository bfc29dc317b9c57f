"""int8 MatMuls with per-token dynamic activation scales: the rewrite onnxruntime.quantization lacks.

onnxruntime's dynamic quantizer scales a whole activation tensor (all tokens of the batch) with one
number (DynamicQuantizeLinear), and its static quantizer uses one calibrated number per tensor;
both fail the fidelity gates on a trained encoder (docs/quantization.md). Here every weight MatMul
`y = x @ W` becomes

    s   = max(|x|, last axis) / 127                 one scale per token (row), computed at run time
    xq  = QuantizeLinear(x, s, 128, axis=rows)      uint8, symmetric around 128
    y   = MatMulInteger(xq, Wq, 128, 0) * (s * w)   Wq 7-bit int8 per output channel, w its scales

Weights use 7 bits (codes -63..63, onnxruntime's "reduce_range"): on CPUs without VNNI (AVX2 only,
or AVX-512 before Cascade Lake) onnxruntime runs u8 x s8 on VPMADDUBSW, which adds two u8 x s8
products into a saturating int16; with full-range weights 255 x 127 x 2 overflows it (measured on an
AMD Zen 3: 20 % relative error on random codes, and the int8 graphs missed their gates). With 7-bit
weights 255 x 64 x 2 < 32768: the integer result is exact on every CPU, so the fidelity measured at
export holds wherever the graph runs; the kernel and its speed are the same.

onnxruntime fuses the last line (MatMulInteger, Cast, Mul) into MatMulIntegerToFloat, a u8 x s8
VNNI GEMM with a float output (measured 590-655 GFLOP/s on 512x1024x4096 against ~195 for fp32).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EPS = 1e-8


# Largest |code| of integer-GEMM weights: 7 bits, so that u8 x s8 cannot saturate (module docstring).
GEMM_WEIGHT_CODE_MAX = 63


def quantize_symmetric(x: np.ndarray, axis: int, code_max: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 (codes -code_max..code_max) with one scale per slice along `axis` reduced away (kept dims)."""
    scale = (np.maximum(np.abs(x).max(axis=axis, keepdims=True), EPS) / float(code_max)).astype(np.float32)
    return np.clip(np.round(x / scale), -code_max, code_max).astype(np.int8), scale


def quantize_weight(w: np.ndarray, code_max: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (column) of a [K, N] weight: (int8 weight, (N,) float32 scales)."""
    q, scale = quantize_symmetric(w, axis=0, code_max=code_max)
    return q, scale[0]


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def rewrite_matmuls(model: onnx.ModelProto, names: set[str]) -> int:
    """Replace the named weight MatMuls in place; returns how many were rewritten.

    Activations shared by several MatMuls are quantized once.
    """
    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    shared = [
        numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), "pt_inv127"),
        numpy_helper.from_array(np.array(EPS, np.float32), "pt_eps"),
        numpy_helper.from_array(np.array(128, np.uint8), "pt_zp128"),
        numpy_helper.from_array(np.array(0, np.int8), "pt_wzp"),
    ]
    axes_as_input = _opset(model) >= 18
    if axes_as_input:
        shared.append(numpy_helper.from_array(np.array([-1], np.int64), "pt_last_axis"))
    shared.append(numpy_helper.from_array(np.array([-1], np.int64), "pt_flat"))

    def reduce(op: str, src: str, dst: str) -> onnx.NodeProto:
        if axes_as_input:
            return helper.make_node(op, [src, "pt_last_axis"], [dst], name=dst + "_" + op, keepdims=1)
        return helper.make_node(op, [src], [dst], name=dst + "_" + op, axes=[-1], keepdims=1)

    quantized: dict[str, tuple[str, str]] = {}  # activation -> (uint8 tensor, per-token scale)
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.name not in names or node.input[1] not in inits or uses[node.input[1]] != 1:
            nodes.append(node)
            continue
        x, w_name, y = node.input[0], node.input[1], node.output[0]
        if x not in quantized:
            # max|x| per token as max(max x, -min x): two reads, no |x| tensor written; then one
            # per-axis QuantizeLinear over the tokens as rows instead of Div + QuantizeLinear
            # (the same codes; 3x faster at 1024 channels, 1.9x at 4096, measured)
            p = f"{x}_pt"
            nodes += [
                reduce("ReduceMax", x, p + "_max"),
                reduce("ReduceMin", x, p + "_min"),
                helper.make_node("Neg", [p + "_min"], [p + "_negmin"], name=p + "_Neg"),
                helper.make_node("Max", [p + "_max", p + "_negmin", "pt_eps"], [p + "_peak"], name=p + "_Peak"),
                helper.make_node("Mul", [p + "_peak", "pt_inv127"], [p + "_scale"], name=p + "_Scale"),
                helper.make_node("Reshape", [p + "_scale", "pt_flat"], [p + "_rows_scale"], name=p + "_RowsScale"),
                helper.make_node("Shape", [p + "_rows_scale"], [p + "_rows"], name=p + "_Rows"),
                helper.make_node("Expand", ["pt_zp128", p + "_rows"], [p + "_rows_zp"], name=p + "_RowsZp"),
                helper.make_node("Shape", [x], [p + "_shape"], name=p + "_Shape"),
                helper.make_node("Shape", [x], [p + "_width"], name=p + "_Width", start=-1),
                helper.make_node("Concat", ["pt_flat", p + "_width"], [p + "_2d"], name=p + "_2dShape", axis=0),
                helper.make_node("Reshape", [x, p + "_2d"], [p + "_x2d"], name=p + "_X2d"),
                helper.make_node("QuantizeLinear", [p + "_x2d", p + "_rows_scale", p + "_rows_zp"], [p + "_q2d"],
                                 name=p + "_Q", axis=0),
                helper.make_node("Reshape", [p + "_q2d", p + "_shape"], [p + "_q"], name=p + "_QShape"),
            ]
            quantized[x] = (p + "_q", p + "_scale")
        xq, scale = quantized[x]
        wq, w_scale = quantize_weight(numpy_helper.to_array(inits[w_name]), code_max=GEMM_WEIGHT_CODE_MAX)
        q_name, s_name = w_name + "_pt_int8", w_name + "_pt_scale"
        inits[w_name].CopyFrom(numpy_helper.from_array(wq, q_name))
        model.graph.initializer.append(numpy_helper.from_array(w_scale, s_name))
        n = node.name
        nodes += [
            helper.make_node("MatMulInteger", [xq, q_name, "pt_zp128", "pt_wzp"], [y + "_i32"], name=n + "_Int"),
            helper.make_node("Cast", [y + "_i32"], [y + "_f32"], name=n + "_Cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [scale, s_name], [y + "_rescale"], name=n + "_Rescale"),
            helper.make_node("Mul", [y + "_f32", y + "_rescale"], [y], name=n + "_Out"),
        ]
        count += 1
    if count:
        model.graph.initializer.extend(shared)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        _keep_bias_out_of_fusion(model, {n.output[0] for n in nodes if n.name.endswith("_Out")})
    return count


def _keep_bias_out_of_fusion(model: onnx.ModelProto, outputs: set[str]) -> int:
    """Turn `Add(int8 MatMul output, constant bias)` into the equivalent `Sum`, in place; returns how many.

    onnxruntime (1.32, CPU) fuses MatMulInteger -> Cast -> Mul into MatMulIntegerToFloat and also folds a
    following constant bias Add into it, but with our per-token (row) scales the fused kernel applies the
    bias before the scale: measured y = scale * (x.W + bias) instead of scale * x.W + bias (errors of 2-4
    on outputs of 30-150, for q|k|v). The GEMM fusion does not look at Sum, which adds the same bias.
    """
    inits = {t.name for t in model.graph.initializer}
    count = 0
    for node in model.graph.node:
        pair = tuple(node.input)
        if node.op_type == "Add" and len(pair) == 2 and any(a in outputs and b in inits for a, b in (pair, pair[::-1])):
            node.op_type = "Sum"
            count += 1
    return count


AMPLIFIED_GAIN_RATIO = 5.0  # LayerNorm gain over the median gain that marks an outlier channel
AMPLIFIED_MOST = 16


def amplified_columns(model: onnx.ModelProto, gather: onnx.NodeProto) -> np.ndarray:
    """Columns of an embedding table that the first LayerNorm after it multiplies by an outlier gain.

    Trained XLM-R-large has a few hidden channels with LayerNorm gains far above the rest; an int8
    error in those columns of the table comes out of the LayerNorm amplified by that gain. Measured on
    a 512-wide outlier toy: per-row int8 of the table alone took the min token cosine to 0.83 and the
    top-10 overlap to 0.84; the same with those 4 columns exact: 0.9999 and 0.996 (docs/quantization.md).
    """
    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    frontier = [gather.output[0]]
    for _ in range(4):  # through the token-type Add(s) to the embedding LayerNorm
        nxt = []
        for tensor in frontier:
            for n in consumers.get(tensor, []):
                if n.op_type in ("LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization"):
                    gamma = next((inits[i] for i in n.input[1:] if i in inits and len(inits[i].dims) == 1), None)
                    if gamma is None:
                        return np.zeros(0, np.int64)
                    g = np.abs(numpy_helper.to_array(gamma).astype(np.float32))
                    big = np.flatnonzero(g > AMPLIFIED_GAIN_RATIO * np.median(g))
                    return np.sort(big[np.argsort(-g[big])][:AMPLIFIED_MOST]).astype(np.int64)
                if n.op_type == "Add":
                    nxt.append(n.output[0])
        frontier = nxt
    return np.zeros(0, np.int64)


def rewrite_gathers(model: onnx.ModelProto, names: set[str] | None = None) -> int:
    """Embedding tables (constant 2-D Gather data; only the Gathers `names`, when given) to int8 with one
    scale per row, in place.

    onnxruntime's Gather quantizers offer one scale for the whole 250k-row table (quantize_dynamic /
    quantize_static) or 4-bit blocks only (MatMulNBitsQuantizer); a scale per token row costs 1 KB
    in a 1 GB table and keeps every token's embedding at full int8 resolution. Columns the embedding
    LayerNorm amplifies by an outlier gain (`amplified_columns`) stay fp32 in a side table
    (vocab x a few floats), placed back by a one-hot MatMul and left out of the row scales.
    """
    inits = {t.name: t for t in model.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" and (names is None or node.name in names) else None
        if table is None or len(table.dims) != 2 or any(a.name == "axis" and a.i != 0 for a in node.attribute):
            nodes.append(node)
            continue
        data = numpy_helper.to_array(table)
        columns = amplified_columns(model, node)
        exact = data[:, columns].astype(np.float32)
        if columns.size:
            data = data.copy()
            data[:, columns] = 0.0
        q, scale = quantize_symmetric(data, axis=1)  # one scale per token row
        q_name, s_name, y = table.name + "_row_int8", table.name + "_row_scale", node.output[0]
        table.CopyFrom(numpy_helper.from_array(q, q_name))
        model.graph.initializer.append(numpy_helper.from_array(scale, s_name))
        ids, n = node.input[1], node.name
        y_int8 = y + "_int8_part" if columns.size else y
        nodes += [
            helper.make_node("Gather", [q_name, ids], [y + "_int8"], name=n + "_Int8"),
            helper.make_node("Cast", [y + "_int8"], [y + "_f32"], name=n + "_Cast", to=TensorProto.FLOAT),
            helper.make_node("Gather", [s_name, ids], [y + "_scale"], name=n + "_Scale"),
            helper.make_node("Mul", [y + "_f32", y + "_scale"], [y_int8], name=n + "_Out"),
        ]
        if columns.size:
            place = np.zeros((columns.size, data.shape[1]), np.float32)
            place[np.arange(columns.size), columns] = 1.0
            e_name, p_name = table.name + "_exact_columns", table.name + "_exact_place"
            model.graph.initializer.extend([numpy_helper.from_array(exact, e_name),
                                            numpy_helper.from_array(place, p_name)])
            nodes += [
                helper.make_node("Gather", [e_name, ids], [y + "_exact"], name=n + "_Exact"),
                helper.make_node("MatMul", [y + "_exact", p_name], [y + "_placed"], name=n + "_Place"),
                helper.make_node("Add", [y_int8, y + "_placed"], [y], name=n + "_WithExact"),
            ]
        count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return count


def rewrite_weight_only(model: onnx.ModelProto, names: set[str]) -> int:
    """int8 weights (per output channel) with float activations for the named MatMuls, in place.

    For the ColBERT heads: they write the vectors directly and hold ~0.1 % of the FLOPs, so only
    their storage is quantized. Cast + Mul rather than DequantizeLinear: onnxruntime fuses
    DequantizeLinear -> MatMul into MatMulNBits, which quantizes the activations too (session default
    accuracy level 4), while Cast + Mul of a constant is folded into an fp32 weight at load.
    """
    inits = {t.name: t for t in model.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.name not in names or node.input[1] not in inits:
            nodes.append(node)
            continue
        w_name = node.input[1]
        wq, w_scale = quantize_weight(numpy_helper.to_array(inits[w_name]))
        q_name, s_name, deq = w_name + "_wo_int8", w_name + "_wo_scale", w_name + "_wo_dequantized"
        inits[w_name].CopyFrom(numpy_helper.from_array(wq, q_name))
        model.graph.initializer.append(numpy_helper.from_array(w_scale, s_name))
        nodes += [
            helper.make_node("Cast", [q_name], [deq + "_f32"], name=node.name + "_WCast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [deq + "_f32", s_name], [deq], name=node.name + "_WScale"),
        ]
        node.input[1] = deq
        nodes.append(node)
        count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return count
