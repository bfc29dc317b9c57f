"""The runtime's MaxSim kernels (tiny ONNX graphs) built with onnx.helper and written as package data.

The runtime must not import onnx (it is only in the [export] extra), so it reads these graphs from
``runtime/kernels/maxsim_<kind>.b64`` (base64 text of the serialized ModelProto; docs/install.md
says why this format). After changing a graph here, rewrite the files and commit them:

    python -m colbert_onnx.export.kernels --write     # or --check: exit 1 if a shipped file differs
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path

from onnx import TensorProto, helper

from colbert_onnx.scoring import KERNEL_KINDS, kernel_file

OPSET = 13
IR_VERSION = 7


def kernel_model(kind: str) -> bytes:
    """Serialized ONNX model of one similarity kernel; its output S is (rows, block) float32."""
    vi = helper.make_tensor_value_info
    f32 = TensorProto.FLOAT
    if kind == "float32":
        inputs = [vi("Q", f32, ["rows", "dim"]), vi("D", f32, ["block", "dim"])]
        nodes = [helper.make_node("Gemm", ["Q", "D"], ["S"], transB=1)]
    elif kind == "float16":
        inputs = [vi("Q", f32, ["rows", "dim"]), vi("D", TensorProto.FLOAT16, ["block", "dim"])]
        nodes = [
            helper.make_node("Cast", ["D"], ["D32"], to=f32),
            helper.make_node("Gemm", ["Q", "D32"], ["S"], transB=1),
        ]
    elif kind == "int8":
        # Q is uint8 too (code + 128): u8 x s8 saturates on CPUs without VNNI (runtime/scoring.py docstring)
        inputs = [vi("D", TensorProto.UINT8, ["block", "dim"]), vi("Q", TensorProto.UINT8, ["dim", "rows"]),
                  vi("Z", TensorProto.UINT8, []), vi("scales", f32, ["block"])]
        nodes = [
            helper.make_node("MatMulInteger", ["D", "Q", "Z", "Z"], ["I"]),  # (block, rows) int32; zero points 128
            # int32 -> float32 times each document vector's scale in one pass (per-axis dequantize);
            # (the int32 -> float32 conversion is exact: |I| <= 128 * 127 * dim < 2**24 for dim <= 1024)
            helper.make_node("DequantizeLinear", ["I", "scales"], ["F"], axis=0),
            helper.make_node("Transpose", ["F"], ["S"], perm=[1, 0]),  # document tokens on the contiguous axis
        ]
    else:
        raise ValueError(f"unknown kernel {kind!r}; known: {', '.join(KERNEL_KINDS)}")
    graph = helper.make_graph(nodes, f"maxsim_{kind}", inputs, [vi("S", f32, ["rows", "block"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def kernel_text(kind: str) -> str:
    """The package-data text of one kernel: base64 of its serialized graph, in 76-character lines."""
    return base64.encodebytes(kernel_model(kind)).decode("ascii")


def stale_kernels(folder: Path | None = None) -> list[str]:
    """Kinds whose file in `folder` (default: the installed package's) is missing or differs from kernel_text."""
    stale = []
    for kind in KERNEL_KINDS:
        path = kernel_file(kind, folder)
        if not path.is_file() or path.read_text(encoding="ascii") != kernel_text(kind):
            stale.append(kind)
    return stale


def write_kernels(folder: Path | None = None) -> list[Path]:
    """Write every kernel's file into `folder` (default: the package's kernels folder); returns the paths."""
    paths = []
    for kind in KERNEL_KINDS:
        path = kernel_file(kind, folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(kernel_text(kind), encoding="ascii", newline="\n")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m colbert_onnx.export.kernels", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="(re)write the kernel files")
    action.add_argument("--check", action="store_true", help="exit 1 if a kernel file is missing or differs")
    parser.add_argument("--dir", type=Path, default=None, help="kernels folder (default: the package's)")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_kernels(args.dir):
            print(path)
        return 0
    stale = stale_kernels(args.dir)
    if stale:
        print(f"stale MaxSim kernel files: {', '.join(stale)}; run python -m colbert_onnx.export.kernels --write",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
