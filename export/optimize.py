"""fp32 graph optimization with onnxruntime's transformer optimizer (LayerNorm/SkipLayerNorm/Gelu fusion)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_model
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

from .modeling import BackboneConfig

# Rotary q/k sit between the q|k|v projection and the attention MatMul, so the BERT attention
# pattern that Attention/MultiHeadAttention fusion looks for never appears (measured: 0 fused).
FUSION_METHOD = ("onnxruntime.transformers.optimizer.optimize_model(model_type='bert', opt_level=0, "
                 "enable_shape_inference=False)")


# protobuf's hard limit is 2 GiB; leave headroom for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def save_graph(model: onnx.ModelProto, path: Path, external_threshold: int = EXTERNAL_DATA_THRESHOLD) -> dict:
    """Save a graph (external data only above ~1.8 GB); returns external_data name and total bytes."""
    data_name = path.name + "_data"
    for stale in (path, path.with_name(data_name)):
        stale.unlink(missing_ok=True)
    external = sum(t.ByteSize() for t in model.graph.initializer) > external_threshold
    if external:  # onnx moves the tensors out of the proto it saves: keep the caller's model intact
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=1024,
    )
    size = path.stat().st_size + (path.with_name(data_name).stat().st_size if external else 0)
    return {"external_data": data_name if external else None, "bytes": size}


def fusion_options() -> FusionOptions:
    """The optimizer's defaults for BERT without its symbolic shape inference. That inference only checks whether a
    SkipLayerNormalization skip input broadcasts and which Casts are no-ops; it recurses into the If/Loop of every
    layer's attention steps and grows faster than the depth: 15 s for 12 layers and 114 s for 24 (against 0.8 s
    and 4.4 s without, a real Zen 3), for the identical graph on every checkpoint class measured
    (tests/test_export.py; docs/export.md)."""
    options = FusionOptions("bert")
    options.enable_shape_inference = False
    return options


class _ShapeInferenceOffNotice(logging.Filter):
    """Drops the optimizer's "symbolic shape inference disabled or failed." warning: disabled on purpose here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("symbolic shape inference disabled")


@contextlib.contextmanager
def _without_shape_inference_notice() -> Iterator[None]:
    # the optimizer imports its fusions both as onnxruntime.transformers.X and as X (its own sys.path entry)
    loggers = [logging.getLogger(name) for name in ("fusion_skiplayernorm",
                                                     "onnxruntime.transformers.fusion_skiplayernorm")]
    notice = _ShapeInferenceOffNotice()
    for logger in loggers:
        logger.addFilter(notice)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(notice)


def optimize_fp32(src: Path, dst: Path, cfg: BackboneConfig) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Fuse LayerNorm/SkipLayerNorm/BiasGelu (and attention where it applies) offline.

    Returns the optimized model and the optimizer's fused-operator counts; the caller saves it.
    """
    # The optimizer only needs weight shapes, not values, but given the full model it holds several
    # copies of it (12 GB for a 1 GB graph; the 2.2 GB model does not fit in 24 GB). So it works on
    # a proto whose large tensors are external references, and the weights are attached afterwards.
    with tempfile.TemporaryDirectory() as tmp:
        save_graph(onnx.load(str(src)), Path(tmp) / "light.onnx", external_threshold=0)
        light = onnx.load(str(Path(tmp) / "light.onnx"), load_external_data=False)
        cwd = os.getcwd()
        os.chdir(tmp)  # the optimizer reads the few constant values it checks relative to the cwd
        try:
            with _without_shape_inference_notice():
                optimized = optimize_model(
                    light,
                    model_type="bert",
                    num_heads=cfg.num_attention_heads,
                    hidden_size=cfg.hidden_size,
                    opt_level=0,
                    optimization_options=fusion_options(),
                )
        finally:
            os.chdir(cwd)
        load_external_data_for_model(optimized.model, tmp)
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    stats.setdefault("Attention", 0)
    stats.setdefault("MultiHeadAttention", 0)
    stats.setdefault("RotaryEmbedding", 0)
    model = optimized.model
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    return model, stats


def split_skip_layernorm(model: onnx.ModelProto) -> int:
    """SkipLayerNormalization(x, skip, bias) -> LayerNormalization(x + (skip + bias)), in place; returns how many.

    For the int8 CPU graphs: onnxruntime's CPU SkipLayerNormalization took 21 ms on an 8 x 512 x 1024
    tensor that one Add reads in 1.3 ms, and its LayerNormalization is faster. Measured on the int8
    graph of a 4-layer full-width model, in turns (2026-12-01): 1.07-1.10x at 8 x 512 tokens, 1.04x at
    2 x 2048, 1.11x at 32 x 32 (queries), 1.01x at 8192, with the same fidelity (mean token cosine to
    fp32 0.998851 vs 0.998849 at 8 x 512). The bias goes to the skip side: added to the GEMM output
    instead, onnxruntime folds it into MatMulIntegerToFloat, 1.09x but mean cosine 0.998793.
    Splitting BiasGelu into Add + com.microsoft.Gelu as well was faster again and worse still
    (0.998639): not done. fp32 and fp16 graphs keep the fused op (one CUDA kernel).
    A node whose extra outputs (mean, inverse std, sum) are used is left as it is.
    """
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        if node.op_type != "SkipLayerNormalization" or any(o in used for o in node.output[1:]):
            nodes.append(node)
            continue
        x, skip, gamma, beta = node.input[:4]
        bias = node.input[4] if len(node.input) > 4 else ""
        p = node.name
        if bias:
            nodes.append(onnx.helper.make_node("Add", [skip, bias], [p + "/skip_bias"], name=p + "/AddBias"))
            skip = p + "/skip_bias"
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        nodes += [
            onnx.helper.make_node("Add", [x, skip], [p + "/residual"], name=p + "/AddSkip"),
            onnx.helper.make_node("LayerNormalization", [p + "/residual", gamma, beta], [node.output[0]],
                                  name=p + "/LayerNorm", axis=-1, epsilon=eps),
        ]
        count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return count
