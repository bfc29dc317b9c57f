"""Corpus encoding, one process against Ray Data with 1 and 2 actors, timed in turns (not a test).

    .venv/bin/python -m benchmarks.bench_corpus [--documents 20000] [--rounds 2] [--write docs/runs/X.md]

The small bench model (4 x 256, vocab 250004, random weights; models/bench-corpus) encodes a
Parquet file of synthetic multilingual documents into a float16 multivector Parquet file three ways,
in turns: ``colbert_onnx.arrow.encode_parquet`` in this process, and ``colbert_onnx.ray.encode_parquet``
with 1 and 2 actors on a local cluster started once. Reports docs/s and ratios, actor start time,
memory per actor and of Ray's own processes, and bytes per token of every output kind (Parquet with
``parquet_options`` and with pyarrow's defaults). Prints Markdown; ``--write`` saves it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.machine import describe
from benchmarks.sizes import SIZES
from colbert_onnx import ColbertEncoder
from colbert_onnx import arrow as ca
from colbert_onnx import ray as cr

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "bench-corpus"
SMALL = SIZES["small"]  # make bench's BENCH_SIZE=small


def bench_model() -> Path:
    """The small bench model's fp32 folder, generated and exported once (needs the export extra)."""
    onnx = MODEL / "onnx"
    if not (onnx / "manifest.json").is_file():
        from colbert_onnx.export import export_model, make_toy_trio

        trio = make_toy_trio(MODEL / "checkpoint", dims=(128,), config_overrides=SMALL)
        export_model([trio[128]], onnx, check_parity=False, precisions="fp32")
    return onnx


def make_corpus(n: int, seed: int = 0) -> list[str]:
    """`n` documents of 1-2 sentences drawn from export/data/multilingual.txt (about 25 languages)."""
    sentences = [s for s in (ROOT / "export" / "data" / "multilingual.txt").read_text().splitlines() if s.strip()]
    rng = random.Random(seed)
    return [" ".join(rng.choices(sentences, k=rng.randint(1, 2))) for _ in range(n)]


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def descendants(root: int) -> list[int]:
    """Pids of every live process below `root` (Ray's gcs, raylet, dashboard and workers for the driver)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        children = parents.get(todo.pop(), [])
        out.extend(children)
        todo.extend(children)
    return out


def ray_rss_mib() -> float:
    total = 0.0
    for pid in descendants(os.getpid()):
        try:
            total += rss_mib(pid)
        except OSError:
            continue
    return total


class ProbeEncoder(cr.DocumentEncoder):
    """DocumentEncoder recording its start-up time and resident memory in extra columns."""

    def __init__(self, *args, **kwargs) -> None:
        start = time.perf_counter()
        super().__init__(*args, **kwargs)
        self.init_s = time.perf_counter() - start

    def __call__(self, batch):
        out = super().__call__(batch)
        n = out.num_rows
        for name, value in (("pid", self.pid), ("init_s", self.init_s), ("rss_mib", rss_mib())):
            out = out.append_column(name, pa.array([value] * n))
        return out


def run_direct(model: Path, source: Path, out: Path) -> dict:
    start = time.perf_counter()
    encoder = ColbertEncoder(model, dim=128)
    rows = ca.encode_parquet(encoder, source, out)
    return {"seconds": time.perf_counter() - start, "rows": rows}


def run_ray(model: Path, source: Path, out: Path, actors: int, threads: int | None) -> dict:
    import ray

    start = time.perf_counter()
    ds = ray.data.read_parquet(str(source))
    encoded = cr.encode_documents(ds, model, actors=actors, batch_size=256, encoder_class=ProbeEncoder,
                                  threads=threads)
    first, rows, probes, writer = None, 0, {}, None
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    for table in encoded.iter_batches(batch_size=None, batch_format="pyarrow"):
        first = first or time.perf_counter() - start
        for pid, init_s, rss in zip(table["pid"].to_pylist(), table["init_s"].to_pylist(),
                                    table["rss_mib"].to_pylist(), strict=True):
            probes[pid] = (init_s, max(rss, probes.get(pid, (0, 0))[1]))
        table = table.drop_columns(["pid", "init_s", "rss_mib"])
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema, **ca.parquet_options("float16", ["id"]))
        writer.write_table(table)
        rows += table.num_rows
    writer.close()
    return {"seconds": time.perf_counter() - start, "rows": rows, "first_output_s": first,
            "actor_init_s": [round(v[0], 2) for v in probes.values()],
            "actor_rss_mib": [round(v[1]) for v in probes.values()]}


def bytes_per_token(model: Path, texts: list[str], folder: Path) -> list[dict]:
    encoder = ColbertEncoder(model, dim=128)
    table = pa.table({"id": np.arange(len(texts)), "text": texts})
    rows = []
    for output in ("float32", "float16", "int8", "binary", "ubinary"):
        out = ca.encode_table(encoder, table, output=output)
        tokens = sum(out["n_tokens"].to_pylist())
        ca.write_parquet(out, folder / f"{output}.parquet")
        pq.write_table(out, folder / f"{output}-defaults.parquet")
        raw = out["vectors"].nbytes + (out["scales"].nbytes if output == "int8" else 0)
        rows.append({"output": output, "tokens": tokens, "arrow_bytes_per_token": raw / tokens,
                     "parquet_bytes_per_token": (folder / f"{output}.parquet").stat().st_size / tokens,
                     "parquet_defaults_bytes_per_token":
                         (folder / f"{output}-defaults.parquet").stat().st_size / tokens})
    return rows


def report(result: dict) -> str:
    med = result["median_s"]
    n = result["documents"]
    lines = [
        f"# Corpus encoding bench, {result['day']}",
        "",
        f"Machine: {result['machine']}. Model: small bench model (4 x 256, vocab 250004, random weights), fp32, "
        f"dim 128, output float16. {n} documents, {result['tokens']} kept tokens; {result['rounds']} rounds in "
        "turns (medians). Ray: local cluster, num_cpus=2, object store "
        f"{result['object_store_mib']} MiB, started once in {result['ray_init_s']:.1f} s.",
        "",
        "| run | threads | median s | docs/s | vs one process | first output s | actor start s | actor RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label, threads in (("direct", "one process (arrow.encode_parquet)", "2 (onnxruntime default)"),
                                 ("ray1", "Ray, 1 actor (1 CPU)", "2 (explicit)"),
                                 ("ray2", "Ray, 2 actors (0.5 CPU each)", "1 each (assigned CPUs)")):
        last = result["runs"][name][-1]
        lines.append(
            f"| {label} | {threads} | {med[name]:.1f} | {n / med[name]:.0f} | {med['direct'] / med[name]:.2f}x | "
            f"{last.get('first_output_s', float('nan')):.1f} | {', '.join(map(str, last.get('actor_init_s', [])))} | "
            f"{', '.join(map(str, last.get('actor_rss_mib', [])))} |"
        )
    lines += [
        "",
        f"Driver RSS {result['driver_rss_mib']:.0f} MiB; Ray's processes after init (gcs, raylet, dashboard, "
        f"idle workers) {result['ray_idle_rss_mib']:.0f} MiB, at the end {result['ray_end_rss_mib']:.0f} MiB "
        "(RSS summed, shared pages counted in each process).",
        "",
        f"Bytes per token ({result['bytes_documents']} documents, dim 128):",
        "",
        "| output | in Arrow | Parquet, parquet_options | Parquet, pyarrow defaults |",
        "|---|---|---|---|",
    ]
    for row in result["bytes"]:
        lines.append(f"| {row['output']} | {row['arrow_bytes_per_token']:.1f} | {row['parquet_bytes_per_token']:.1f} | "
                     f"{row['parquet_defaults_bytes_per_token']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--object-store-mib", type=int, default=256)
    parser.add_argument("--bytes-documents", type=int, default=2000)
    parser.add_argument("--write", type=Path, default=None, help="also write the Markdown report here")
    parser.add_argument("--json", type=Path, default=ROOT / "models" / "bench-corpus.json")
    args = parser.parse_args(argv)

    import ray

    model = bench_model()
    texts = make_corpus(args.documents)
    work = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    source = work / "texts.parquet"
    pq.write_table(pa.table({"id": np.arange(len(texts)), "text": texts}), source, row_group_size=4096)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    start = time.perf_counter()
    cr.init_local_cluster(num_cpus=2, object_store_memory=args.object_store_mib * 2**20, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    result = {"day": date.today().isoformat(), "documents": len(texts), "rounds": args.rounds,
              "machine": describe(),
              "object_store_mib": args.object_store_mib, "ray_init_s": time.perf_counter() - start}
    time.sleep(2)
    result["ray_idle_rss_mib"] = ray_rss_mib()
    runs = {"direct": lambda: run_direct(model, source, work / "direct.parquet"),
            "ray1": lambda: run_ray(model, source, work / "ray1.parquet", actors=1, threads=2),
            "ray2": lambda: run_ray(model, source, work / "ray2.parquet", actors=2, threads=None)}
    result["runs"] = {name: [] for name in runs}
    for round_ in range(args.rounds):
        for name, fn in runs.items():
            out = fn()
            result["runs"][name].append(out)
            print(f"round {round_} {name}: {out['seconds']:.1f} s", file=sys.stderr, flush=True)
    result["ray_end_rss_mib"] = ray_rss_mib()
    result["driver_rss_mib"] = rss_mib()
    ray.shutdown()
    direct, first_ray = pq.read_table(work / "direct.parquet"), pq.read_table(work / "ray2.parquet")
    assert direct.equals(first_ray), "Ray's output differs from the one-process output"
    result["tokens"] = sum(direct["n_tokens"].to_pylist())
    result["median_s"] = {name: float(np.median([r["seconds"] for r in rs])) for name, rs in result["runs"].items()}
    result["bytes_documents"] = args.bytes_documents
    result["bytes"] = bytes_per_token(model, texts[: args.bytes_documents], work)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    text = report(result)
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
