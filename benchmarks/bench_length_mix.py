"""Batch planners x attention graphs on the realistic length mix, timed in turns (docs/benchmarks.md, issue 15).

Each variant encodes the same seeded documents (benchmarks/length_mix.py) through one onnxruntime session:
`planned` is runtime/planning.py, `greedy` the padded batches it replaced; `graph` is the exported graph,
`masked` the same graph with the unmasked attention branch dropped (what every batch ran before). Reports
real tokens/s by wall clock and by process CPU time, with onnxruntime's thread spinning off so that CPU
time counts work, not waiting: on a machine shared with other jobs the CPU figures are the steadier ones.
Usage: python -m benchmarks.bench_length_mix FOLDER [--precision int8] [--docs 64] [--rounds 3]
    [--variants greedy+masked,planned+graph,planned+masked]
`--run-sizes 1x32,1x64,...` instead times single runs of those batch x length shapes (what
planning.RUN_OVERHEAD_TOKENS is fitted to).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.length_mix import documents, run_planned
from colbert_onnx import ColbertEncoder
from colbert_onnx.export.attention import drop_unmasked_branch
from colbert_onnx.planning import plan_batches, plan_padded_batches

PLANNERS = {"planned": plan_batches, "greedy": plan_padded_batches}


def sessions(folder: str, precision: str, threads: int) -> tuple[ColbertEncoder, dict]:
    """The encoder (tokenizer ids, output name) and graph name -> run(ids, mask) for `graph` and `masked`."""
    enc = ColbertEncoder(folder, precision=precision, threads=1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    path = str(enc.folder.path / enc.graph.file)
    model = onnx.load(path)
    drop_unmasked_branch(model)
    graphs = {"graph": ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]),
              "masked": ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])}
    out = [enc._output_name]
    return enc, {name: (lambda ids, mask, s=s: s.run(out, {"input_ids": ids, "attention_mask": mask}))
                 for name, s in graphs.items()}


def time_run_sizes(run, shapes: list[tuple[int, int]], rounds: int) -> None:
    """Real tokens per second and per CPU-second of one run of each (batch, length) shape, in turns."""
    rng = np.random.default_rng(0)
    feeds = {}
    for batch, length in shapes:
        ids = rng.integers(5, 500, size=(batch, length)).astype(np.int64)
        ids[:, 0], ids[:, -1] = 0, 2
        feeds[batch, length] = ids
        run(ids, np.ones_like(ids))
    wall: dict = {s: [] for s in shapes}
    cpu: dict = {s: [] for s in shapes}
    for _ in range(rounds):
        for shape, ids in feeds.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run(ids, np.ones_like(ids))
            wall[shape].append(time.perf_counter() - start)
            cpu[shape].append(time.process_time() - start_cpu)
    for (batch, length), ids in feeds.items():
        print(f"{batch}x{length} ({ids.size} tokens): wall {ids.size / np.median(wall[batch, length]):.0f} tok/s, "
              f"cpu {ids.size / np.median(cpu[batch, length]):.0f} tok/cpu-s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="greedy+masked,planned+graph,planned+masked")
    parser.add_argument("--run-sizes", default=None, help="e.g. 1x32,1x64,2x32,1x256: time single runs instead")
    args = parser.parse_args()
    enc, runs = sessions(args.folder, args.precision, args.threads)
    if args.run_sizes:
        shapes = [tuple(map(int, s.split("x"))) for s in args.run_sizes.split(",")]
        time_run_sizes(runs["graph"], shapes, max(args.rounds, 5))
        return
    docs = documents(args.docs, marker=enc.preprocessor.special.document_marker)
    real = sum(len(d) for d in docs)
    variants = [tuple(v.split("+")) for v in args.variants.split(",")]
    wall: dict = {v: [] for v in variants}
    cpu: dict = {v: [] for v in variants}
    padded = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for planner, graph in variants:
            start, start_cpu = time.perf_counter(), time.process_time()
            padded[planner, graph] = run_planned(runs[graph], PLANNERS[planner], docs,
                                                 pad_id=enc.preprocessor.special.pad)
            if round_:
                wall[planner, graph].append(time.perf_counter() - start)
                cpu[planner, graph].append(time.process_time() - start_cpu)
    first = variants[0]
    print(f"{args.precision}, {args.docs} documents, {real} real tokens, {args.rounds} rounds in turns")
    for v in variants:
        w, c = float(np.median(wall[v])), float(np.median(cpu[v]))
        print(f"{'+'.join(v):16s} wall {real / w:7.0f} real tok/s (x{np.median(wall[first]) / w:.2f})  "
              f"cpu {real / c:7.0f} real tok/cpu-s (x{np.median(cpu[first]) / c:.2f})  padded {padded[v]:.3f}  "
              f"cpu s per round {[round(x, 1) for x in cpu[v]]}", flush=True)


if __name__ == "__main__":
    main()
