"""Attention in the exported graph: onnxruntime's fused MultiHeadAttention, without the mask on long unpadded batches.

The PyTorch export writes one placeholder node per layer (`modeling.FusedAttention`); `expand_attention`
turns each into

    If(the key padding mask is all ones and seq >= UNMASKED_MIN_TOKENS)
        then: MultiHeadAttention(q, k, v)  (no mask: onnxruntime's CPU flash kernel)
        else: If(one step fits the budget)
            then: MultiHeadAttention(q, k, v, key_padding_mask)
            else: Loop over steps of `step` queries: MultiHeadAttention(q[:, steps], k, v, mask), concatenated

with `step = max(min_step, budget // (batch * heads * seq))`, computed in the graph from the input
shape. MultiHeadAttention takes q/k/v as (batch, seq, hidden) rows straight from the rotary nodes
(no head transposes) and fuses scale, mask, softmax and both GEMMs. With a key padding mask its CPU
kernel holds batch x heads x queries x seq scores, which the steps bound; without one it takes
MLAS's flash attention, whose scratch is a few L2-sized blocks per thread at any length, so that
branch needs no steps (docs/memory.md).

The two kernels round differently (~1e-7 in fp32, which the int8 graphs' per-token requantization
amplifies to ~1e-3), so a sequence must take the same one whatever its batch-mates: the runtime batches
sequences of UNMASKED_MIN_TOKENS or more only with sequences of their own length (no padding: always
the unmasked kernel) and shorter ones only with shorter ones (padded length below the threshold: always
the masked kernel, as before 2026-12-01; runtime/planning.py). Long sequences, where attention weighs
most, get the flash kernel. Written by hand because onnxruntime's transformer optimizer fuses no
attention behind rotary q/k.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from colbert_onnx.planning import LONG_TOKENS as UNMASKED_MIN_TOKENS

PLACEHOLDER_DOMAIN = "colbert"
PLACEHOLDER_OP = "ChunkedAttention"
MS_DOMAIN = "com.microsoft"


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _mha(name: str, q: str, k: str, v: str, mask: str | None, out: str, attrs: dict) -> onnx.NodeProto:
    """One MultiHeadAttention node; `mask` None leaves the key padding mask out (the flash path on CPU)."""
    inputs = [q, k, v] if mask is None else [q, k, v, "", mask]
    return helper.make_node(
        "MultiHeadAttention", inputs, [out], name=name, domain=MS_DOMAIN,
        num_heads=attrs["num_heads"], scale=attrs["scale"], mask_filter_value=attrs["mask_filter_value"],
    )


def _const(name: str, value: int | list[int] | bool) -> onnx.NodeProto:
    """A Constant node: int64 (scalar or 1-D) or bool."""
    array = np.array(value) if isinstance(value, bool) else np.array(value, np.int64)
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(array))


def _takes_unmasked(p: str, q: str, mask: str) -> list[onnx.NodeProto]:
    """Nodes computing `<p>/take_unmasked`: no key is padded (an empty batch counts as unpadded) and the
    sequence has at least UNMASKED_MIN_TOKENS tokens."""
    return [
        helper.make_node("ReduceSum", [mask], [p + "/kept"], name=p + "/Kept", keepdims=0),
        helper.make_node("Size", [mask], [p + "/size"], name=p + "/Size"),
        helper.make_node("Cast", [p + "/size"], [p + "/size32"], name=p + "/Size32", to=TensorProto.INT32),
        helper.make_node("Equal", [p + "/kept", p + "/size32"], [p + "/all_ones"], name=p + "/AllOnes"),
        helper.make_node("Shape", [q], [p + "/seq1d"], name=p + "/SeqLength", start=1, end=2),
        _const(p + "/min_unmasked", [UNMASKED_MIN_TOKENS]),
        helper.make_node("GreaterOrEqual", [p + "/seq1d", p + "/min_unmasked"], [p + "/long1d"], name=p + "/Long1d"),
        helper.make_node("Squeeze", [p + "/long1d"], [p + "/long"], name=p + "/Long"),
        helper.make_node("And", [p + "/all_ones", p + "/long"], [p + "/take_unmasked"], name=p + "/TakeUnmasked"),
    ]


def _expand(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """The nodes that replace one placeholder: the padding test and the If (names prefixed by the placeholder's)."""
    q, k, v, mask = node.input
    out, attrs, p = node.output[0], _attrs(node), node.name
    nodes = [
        _const(p + "/zero", 0), _const(p + "/one", 1), _const(p + "/heads", attrs["num_heads"]),
        _const(p + "/budget", attrs["budget"]), _const(p + "/min_step", attrs["min_step"]),
        _const(p + "/zero1d", [0]), _const(p + "/axes1", [1]),
        helper.make_node("Shape", [q], [p + "/shape"], name=p + "/Shape"),
        helper.make_node("Gather", [p + "/shape", p + "/zero"], [p + "/batch"], name=p + "/Batch", axis=0),
        helper.make_node("Gather", [p + "/shape", p + "/one"], [p + "/seq"], name=p + "/Seq", axis=0),
        helper.make_node("Mul", [p + "/batch", p + "/seq"], [p + "/bs"], name=p + "/BatchSeq"),
        helper.make_node("Mul", [p + "/bs", p + "/heads"], [p + "/scores"], name=p + "/ScoresPerQuery"),
        helper.make_node("Max", [p + "/scores", p + "/one"], [p + "/per_query"], name=p + "/NonZero"),  # empty batch
        helper.make_node("Div", [p + "/budget", p + "/per_query"], [p + "/fit"], name=p + "/QueriesThatFit"),
        helper.make_node("Max", [p + "/fit", p + "/min_step"], [p + "/step"], name=p + "/Step"),
        helper.make_node("GreaterOrEqual", [p + "/step", p + "/seq"], [p + "/one_step"], name=p + "/OneStep"),
    ]
    whole = helper.make_graph(
        [_mha(p + "/MHA", q, k, v, mask, p + "/whole", attrs)], p + "_whole", [],
        [helper.make_empty_tensor_value_info(p + "/whole")],
    )
    # Loop body: (iteration, cond, context so far) -> (cond, context with this step's queries appended)
    i, cond, acc = p + "/i", p + "/cond", p + "/acc"
    body_nodes = [
        helper.make_node("Mul", [i, p + "/step"], [p + "/start"], name=p + "/Start"),
        helper.make_node("Add", [p + "/start", p + "/step"], [p + "/end"], name=p + "/End"),
        helper.make_node("Unsqueeze", [p + "/start", p + "/zero1d"], [p + "/start1"], name=p + "/Start1"),
        helper.make_node("Unsqueeze", [p + "/end", p + "/zero1d"], [p + "/end1"], name=p + "/End1"),
        helper.make_node("Slice", [q, p + "/start1", p + "/end1", p + "/axes1"], [p + "/q_step"], name=p + "/QStep"),
        _mha(p + "/MHAStep", p + "/q_step", k, v, mask, p + "/step_out", attrs),
        helper.make_node("Concat", [acc, p + "/step_out"], [p + "/acc_out"], name=p + "/Append", axis=1),
        helper.make_node("Identity", [cond], [p + "/cond_out"], name=p + "/Cond"),
    ]
    body = helper.make_graph(
        body_nodes, p + "_step",
        [helper.make_tensor_value_info(i, TensorProto.INT64, []),
         helper.make_tensor_value_info(cond, TensorProto.BOOL, []),
         helper.make_empty_tensor_value_info(acc)],
        [helper.make_tensor_value_info(p + "/cond_out", TensorProto.BOOL, []),
         helper.make_empty_tensor_value_info(p + "/acc_out")],
    )
    steps_nodes = [
        helper.make_node("Sub", [p + "/step", p + "/one"], [p + "/step_m1"], name=p + "/StepMinus1"),
        helper.make_node("Add", [p + "/seq", p + "/step_m1"], [p + "/seq_up"], name=p + "/SeqUp"),
        helper.make_node("Div", [p + "/seq_up", p + "/step"], [p + "/trips"], name=p + "/Trips"),
        # (batch, 0, hidden) of q's own type, so the fp16 graph's Loop carries fp16 without a cast
        helper.make_node("Slice", [q, p + "/zero1d", p + "/zero1d", p + "/axes1"], [p + "/empty"], name=p + "/Empty"),
        _const(p + "/true", True),
        helper.make_node("Loop", [p + "/trips", p + "/true", p + "/empty"], [p + "/stepped"], name=p + "/Steps",
                         body=body),
    ]
    steps = helper.make_graph(
        steps_nodes, p + "_steps", [], [helper.make_empty_tensor_value_info(p + "/stepped")]
    )
    # The step arithmetic lives inside the masked branch: it runs only there, and onnxruntime's
    # transformer optimizer prunes main-graph values read only two subgraph levels down.
    nodes.append(helper.make_node("If", [p + "/one_step"], [p + "/masked"], name=p + "/If", then_branch=whole,
                                  else_branch=steps))
    masked = helper.make_graph(nodes, p + "_masked", [], [helper.make_empty_tensor_value_info(p + "/masked")])
    unmasked = helper.make_graph(
        [_mha(p + "/MHAUnmasked", q, k, v, None, p + "/unmasked", attrs)], p + "_unmasked", [],
        [helper.make_empty_tensor_value_info(p + "/unmasked")],
    )
    return [*_takes_unmasked(p, q, mask), helper.make_node("If", [p + "/take_unmasked"], [out], name=p + "/IfUnmasked",
                                                           then_branch=unmasked, else_branch=masked)]


def expand_attention(model: onnx.ModelProto) -> int:
    """Replace every placeholder attention node by its If/Loop of MultiHeadAttention, in place; returns how many."""
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        if node.domain == PLACEHOLDER_DOMAIN and node.op_type == PLACEHOLDER_OP:
            nodes += _expand(node)
            count += 1
        else:
            nodes.append(node)
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        kept = [o for o in model.opset_import if o.domain != PLACEHOLDER_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
        if not any(o.domain == MS_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return count


def drop_unmasked_branch(model: onnx.ModelProto) -> int:
    """Undo the unmasked fast path in place: every layer's attention takes the masked If/Loop, as exported
    until 2026-12-01; returns how many layers changed. For baselines (benchmarks, tests), not for export."""
    nodes: list[onnx.NodeProto] = []
    unused: set[str] = set()  # the padding tests of the dropped Ifs
    for node in model.graph.node:
        if node.op_type == "If" and node.name.endswith("/IfUnmasked"):
            (masked,) = [a.g for a in node.attribute if a.name == "else_branch"]
            nodes += masked.node
            nodes.append(helper.make_node("Identity", [masked.output[0].name], [node.output[0]],
                                          name=node.name + "/Masked"))
            unused |= {n.name for n in _takes_unmasked(node.name.removesuffix("/IfUnmasked"), "", "")}
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(n for n in nodes if n.name not in unused)
    return len(unused) // len(_takes_unmasked("", "", ""))
