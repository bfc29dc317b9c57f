"""onnxruntime profiles of a graph: which nodes ran (subgraph nodes included), and where the time goes by op.

Used by the tests that prove which attention branch ran, and by the profile in docs/benchmarks.md:
`python -m benchmarks.profiling FOLDER --precision int8 --batch 8 --length 512`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import onnxruntime as ort

from benchmarks.conftest import random_ids


def profile_events(graph: str | Path, feeds: dict, runs: int = 1, threads: int | None = None) -> list[dict]:
    """The kernel events (one per node run) of `runs` calls of a fresh session, after one unprofiled warm-up."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    return [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


def kernel_runs(graph: str | Path, feeds: dict) -> dict[str, int]:
    """How often each node (subgraph nodes included) ran in one call, by node name."""
    runs: dict[str, int] = {}
    for event in profile_events(graph, feeds):
        name = event["name"].removesuffix("_kernel_time")
        runs[name] = runs.get(name, 0) + 1
    return runs


WRAPPERS = ("If", "Loop")  # their time includes their subgraph's nodes, which the profile lists too


def op_shares(events: list[dict]) -> dict[str, tuple[float, float]]:
    """op type -> (microseconds, share of the node time), control-flow wrappers left out, largest first."""
    times: dict[str, float] = {}
    for event in events:
        op = event.get("args", {}).get("op_name", "?")
        if op not in WRAPPERS:
            times[op] = times.get(op, 0.0) + float(event["dur"])
    total = sum(times.values()) or 1.0
    return {op: (t, t / total) for op, t in sorted(times.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--padded", action="store_true", help="pad the last row by one token (the masked path)")
    args = parser.parse_args()
    graph = Path(args.folder) / ("model.onnx" if args.precision == "fp32" else f"model-{args.precision}.onnx")
    ids, mask = random_ids(args.length, args.batch)
    if args.padded:
        mask[-1, -1] = 0
    shares = op_shares(profile_events(graph, {"input_ids": ids, "attention_mask": mask}, args.runs, args.threads))
    for op, (us, share) in shares.items():
        print(f"{op:32s} {us / 1e3 / args.runs:9.1f} ms/run {100 * share:5.1f} %")
    print(json.dumps({op: round(share, 4) for op, (_, share) in shares.items()}))


if __name__ == "__main__":
    main()
