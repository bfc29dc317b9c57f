"""Attention kernels alone at full width (16 heads x 64), timed in turns (docs/benchmarks.md, issue 15):
onnxruntime's MultiHeadAttention without a mask (its CPU flash kernel) and with a key padding mask (the
unfused kernel), plain fp32 MatMul/Softmax, and attention with both GEMMs in int8 (MatMulInteger on
dynamically quantized q, k, softmax output and v; u8 x u8, which is exact on CPUs without VNNI, and
per-tensor scales: the fewest extra passes an int8 attention can have). Errors are relative to the flash
kernel's output. Usage: python -m benchmarks.bench_attention [--shapes 8x512,1x2048] [--rounds 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

HEADS, HEAD_DIM = 16, 64
OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]


def _session(nodes: list, inputs: list, threads: int) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "attention", inputs, [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(helper.make_model(graph, opset_imports=OPSETS).SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _scale(name: str) -> helper.NodeProto:
    value = helper.make_tensor(name, TensorProto.FLOAT, [], [HEAD_DIM**-0.5])
    return helper.make_node("Constant", [], [name], value=value)


def kernels(threads: int) -> dict:
    """name -> (session, layout): layout "rows" takes (batch, seq, hidden), "heads" (batch, heads, seq, 64)."""
    rows = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", "s", HEADS * HEAD_DIM]) for n in "qkv"]
    heads = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", HEADS, "s", HEAD_DIM]) for n in "qkv"]
    mask = helper.make_tensor_value_info("m", TensorProto.INT32, ["b", "s"])
    mha = {"domain": "com.microsoft", "num_heads": HEADS}
    plain = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["qk"]), _scale("scale"),
             helper.make_node("Mul", ["qk", "scale"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["o"])]
    int8 = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2])]
    for x in ("q", "kt", "v"):
        int8.append(helper.make_node("DynamicQuantizeLinear", [x], [x + "8", x + "s", x + "z"]))
    int8 += [helper.make_node("MatMulInteger", ["q8", "kt8", "qz", "ktz"], ["qk32"]),
             helper.make_node("Cast", ["qk32"], ["qkf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["qs", "kts"], ["qks"]), _scale("scale"),
             helper.make_node("Mul", ["qks", "scale"], ["qkss"]), helper.make_node("Mul", ["qkf", "qkss"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
             helper.make_node("DynamicQuantizeLinear", ["p"], ["p8", "ps", "pz"]),
             helper.make_node("MatMulInteger", ["p8", "v8", "pz", "vz"], ["pv32"]),
             helper.make_node("Cast", ["pv32"], ["pvf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["ps", "vs"], ["pvs"]), helper.make_node("Mul", ["pvf", "pvs"], ["o"])]
    return {
        "MHA, no mask (flash)": (_session([helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["o"], **mha)],
                                          rows, threads), "rows"),
        "MHA, key padding mask": (_session([helper.make_node("MultiHeadAttention", ["q", "k", "v", "", "m"], ["o"],
                                                             **mha)], [*rows, mask], threads), "rows+mask"),
        "fp32 MatMul/Softmax": (_session(plain, heads, threads), "heads"),
        "int8 MatMulInteger": (_session(int8, heads, threads), "heads"),
    }


def measure(runs: dict, batch: int, seq: int, rounds: int) -> dict[str, tuple[float, float]]:
    """name -> (median seconds, max error relative to the flash kernel) on random q, k, v of this shape."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((batch, seq, HEADS * HEAD_DIM)).astype(np.float32) for _ in range(3))
    split = [x.reshape(batch, seq, HEADS, HEAD_DIM).transpose(0, 2, 1, 3).copy() for x in (q, k, v)]
    feeds = {"rows": {"q": q, "k": k, "v": v}, "heads": dict(zip("qkv", split, strict=True)),
             "rows+mask": {"q": q, "k": k, "v": v, "m": np.ones((batch, seq), np.int32)}}

    def call(name: str) -> np.ndarray:
        session, layout = runs[name]
        out = session.run(None, feeds[layout])[0]
        return out.transpose(0, 2, 1, 3).reshape(batch, seq, -1) if layout == "heads" else out

    reference = call("MHA, no mask (flash)")
    errors = {n: float(np.abs(call(n) - reference).max() / np.abs(reference).max()) for n in runs}
    times: dict[str, list[float]] = {n: [] for n in runs}
    for _ in range(rounds):
        for name in runs:
            start = time.perf_counter()
            call(name)
            times[name].append(time.perf_counter() - start)
    return {n: (float(np.median(times[n])), errors[n]) for n in runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="8x512,1x2048")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    runs = kernels(args.threads)
    for shape in args.shapes.split(","):
        batch, seq = map(int, shape.split("x"))
        results = measure(runs, batch, seq, args.rounds)
        flash = results["MHA, no mask (flash)"][0]
        for name, (median, error) in results.items():
            print(f"{shape:8s} {name:24s} {1e3 * median:8.1f} ms  speed vs flash {flash / median:.2f}x  "
                  f"max rel err {error:.1e}", flush=True)


if __name__ == "__main__":
    main()
