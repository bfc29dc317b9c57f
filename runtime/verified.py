"""Verdicts `colbert-onnx verify --record` measured on this kind of CPU, kept beside the manifest (verified.json).

An OpenVINO graph the export could not measure says nothing about the CPU that serves it: a bf16 hint runs at f32 on
a CPU without bf16 units, so a folder exported there records its bf16 entries as not measured, and `auto` would never
run them on the AMX Xeon it is deployed to. `verify` measures them where they run, against the folder's float64
reference; with `--record` the verdicts are written here, keyed by graph, inference precision, head and the
dot-product units that ran them (`KERNEL_FEATURES`), and the runtime judges an entry by such a record on any CPU with
the same units (`passed_here`). A record counts only for the graph file it measured (its bytes) and the export it
belongs to (the reference's sha256); an entry OpenVINO ran at another precision than it asks is never recorded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from .engines.choice import BF16_FEATURES, EXACT_INT8_FEATURES
from .errors import ModelFolderError
from .manifest import GraphEntry

VERIFIED_FILE = "verified.json"
# The units whose kernels decide int8 and bf16 results: a record holds on CPUs that have exactly these among them.
KERNEL_FEATURES = (*EXACT_INT8_FEATURES, *BF16_FEATURES)
REQUIRED = frozenset({"engine", "graph", "dim", "units", "passed"})  # what every record holds


def kernel_units(features: Iterable[str]) -> list[str]:
    """The int8 and bf16 dot-product units among `features`, in KERNEL_FEATURES order."""
    have = set(features)
    return [f for f in KERNEL_FEATURES if f in have]


def read_records(folder_path: Path) -> list[dict]:
    """The records of `folder_path`/verified.json ([] when there is none); a typed error naming a damaged file."""
    path = Path(folder_path) / VERIFIED_FILE
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["records"]
        if not isinstance(records, list) or not all(isinstance(r, dict) and REQUIRED <= r.keys() for r in records):
            raise TypeError(f"records is not a list of objects with {', '.join(sorted(REQUIRED))}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFolderError(f"{path} is not a verify record ({exc}); delete it, or run `colbert-onnx verify "
                               f"{folder_path} --record` again") from None
    return records


def _key(record: dict) -> tuple:
    return (record["engine"], record["graph"], record.get("inference_precision"), record["dim"], tuple(record["units"]))


def _reference_sha(folder) -> str | None:
    return (folder.manifest.reference or {}).get("sha256")


def record_verdicts(folder, verdicts: Iterable, features: Iterable[str]) -> Path:
    """Write the verdicts measured here into `folder`/verified.json (atomically), replacing earlier records of the
    same graph, head and units. Skipped: graphs that could not run, and entries run at another precision than they
    ask (a bf16 hint run at f32), whose figures are not that entry's."""
    units = kernel_units(features)
    sizes = {g.file: g.bytes for g in (*folder.manifest.graphs, *folder.manifest.engine_graphs)}
    new = [{"engine": v.engine, "graph": v.graph, "inference_precision": v.inference_precision, "dim": v.dim,
            "units": units, "passed": v.passed, "metrics": v.metrics, "graph_bytes": sizes.get(v.graph),
            "reference_sha256": _reference_sha(folder), "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
           for v in verdicts if v.error is None and not v.note]
    replaced = {_key(r) for r in new}
    records = [r for r in read_records(folder.path) if _key(r) not in replaced] + new
    path = Path(folder.path) / VERIFIED_FILE
    staging = path.with_name(f".{VERIFIED_FILE}.{os.getpid()}.tmp")
    try:
        staging.write_text(json.dumps({"records": records}, indent=1), encoding="utf-8")
        os.replace(staging, path)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise ModelFolderError(f"cannot record the verdicts in {path}: {exc.strerror or exc} (verify a writable copy "
                               "of the folder)") from None
    return path


def verified_here(folder, graph: GraphEntry, dim: int, features: Iterable[str]) -> bool | None:
    """Whether `verify --record` found head `dim` of `graph` passing its gates on a CPU with this CPU's units (None:
    no such record for this graph file and export)."""
    path = getattr(folder, "path", None)
    if path is None:
        return None
    units = kernel_units(features)
    found = [r for r in read_records(path)
             if (r["engine"], r["graph"], r.get("inference_precision"), r["dim"]) == (
                 graph.engine, graph.file, graph.details.get("inference_precision"), dim)
             and r["units"] == units and r.get("graph_bytes") == graph.bytes
             and r.get("reference_sha256") == _reference_sha(folder)]
    return bool(found[-1]["passed"]) if found else None


def verdict_here(folder, graph: GraphEntry, dim: int, features: Iterable[str]) -> tuple[bool | None, bool]:
    """The verdict that decides whether head `dim` of `graph` may run here: a record made on a CPU with the same
    units, else the export's (None: measured by neither); and whether it is such a record."""
    recorded = verified_here(folder, graph, dim, features)
    return (graph.passed_gates(dim) if recorded is None else recorded), recorded is not None


def passed_here(folder, graph: GraphEntry, dim: int, features: Iterable[str]) -> bool | None:
    """verdict_here's verdict alone."""
    return verdict_here(folder, graph, dim, features)[0]
