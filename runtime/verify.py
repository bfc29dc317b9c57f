"""``colbert-onnx verify``: the gate figures of a model folder's graphs recomputed with the engines and CPU at hand.

bf16 and int8 kernels differ between CPUs (VNNI, AMX, none) and between engines, so an export-time verdict on
one CPU does not prove another. The folder carries the float64 reference vectors of the fixed fidelity set and
its texts (reference.npz, written at export); verify tokenizes those texts with the folder's tokenizer, runs the
same batches through each engine's graph and compares with the same metrics and gates (fidelity.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .engines import ENGINES
from .engines.choice import cpu_features
from .engines.selection import engine_for
from .errors import EngineUnavailableError, InvalidInputError, ModelFolderError
from .fidelity import GATES, Outputs, compare, gate_misses, passes
from .manifest import KNOWN_PRECISIONS, GraphEntry
from .model_folder import ModelFolder, open_model_folder
from .options import optional_thread_count
from .tokenization import Preprocessor, pad_batch
from .verified import VERIFIED_FILE, kernel_units, record_verdicts

REFERENCE_FILE = "reference.npz"
BATCH_SIZE = 16  # documents per run, as the exporter measured them (export/fidelity.build_set)


@dataclass(frozen=True)
class Verdict:
    """One graph's head on one engine: the recomputed figures, the gates and whether they hold."""

    engine: str
    engine_detail: str
    graph: str
    precision: str
    dim: int
    metrics: dict
    passed: bool
    passed_at_export: bool | None
    measured_with: tuple[str, ...] = ()  # the bf16 / int8 units the export's figures came from, where recorded
    note: str = ""  # what differs here from what the graph asks for (an OpenVINO bf16 hint run at f32)
    error: str | None = None  # why the graph could not run here at all (then metrics is empty and passed False)
    inference_precision: str | None = None  # OpenVINO's, where the entry names one (int8 has an f32 and a bf16 entry)

    def line(self) -> str:
        m = self.metrics
        figures = (f"could not run here: {self.error}" if self.error is not None else
                   f"mean {m['mean_token_cosine']:.6f}  min {m['min_token_cosine']:.4f}  top10 {m['top10_overlap']:.3f}"
                   f"  spearman {m['spearman']:.4f}"
                   + ("" if self.passed else f"  missed: {'; '.join(gate_misses(gate_tier(self.precision), m))}"))
        return (f"{'PASS' if self.passed else 'FAIL'}  {self.engine:<11} {self.precision:<5} {self.dim:>4}  "
                f"{figures}  ({self.graph}" + (f" at {self.inference_precision}" if self.inference_precision else "")
                + "; " + (f"{self.note}; " if self.note else "") + "at export: "
                f"{ {True: 'passed', False: 'missed', None: 'not measured'}[self.passed_at_export]}"
                + (f" with {', '.join(self.measured_with)}" if self.measured_with else "") + ")")


def gate_tier(precision: str) -> str:
    """The gates a graph of `precision` is judged by: its own, or fp32's for a precision without gates of its own."""
    return precision if precision in GATES else "fp32"


def _reference(folder: ModelFolder) -> tuple[dict, dict[str, np.ndarray]]:
    record = folder.manifest.reference
    if not record:
        raise ModelFolderError(f"{folder.path} carries no reference vectors (exported before verify existed, or "
                               "without the float64 reference): re-export it to verify it")
    path = folder.path / record["file"]
    if not path.is_file():
        raise ModelFolderError(f"reference file missing: {path} (listed in the manifest)")
    if record.get("sha256") and hashlib.sha256(path.read_bytes()).hexdigest() != record["sha256"]:
        raise ModelFolderError(f"{path} does not match the sha256 the manifest records: re-export the folder")
    resolutions = record.get("score_resolution", {})  # absent in folders exported before it existed: exact ties only
    if not isinstance(resolutions, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= 0
            for v in resolutions.values()):
        raise ModelFolderError(f"manifest.json of {folder.path}: reference.score_resolution must map heads to finite "
                               f"non-negative numbers, not {resolutions!r}")
    with np.load(path) as data:
        return record, {k: data[k] for k in data.files}


def _document_batches(pre: Preprocessor, texts: list[str], skiplist: np.ndarray):
    """(ids, mask, keep) batches of the documents sorted by token count, as the exporter measured them."""
    seqs = sorted(pre.documents(texts).ids, key=len)
    for start in range(0, len(seqs), BATCH_SIZE):
        ids, mask = pad_batch(seqs[start : start + BATCH_SIZE], pre.special.pad)
        yield ids, mask, mask.astype(bool) & ~np.isin(ids, skiplist)


def _outputs(engine, dims: Sequence[int], pre: Preprocessor, texts: dict, skiplist: np.ndarray) -> dict[int, Outputs]:
    queries = engine.run(*pre.query_feeds(texts["queries"]), dims)
    tokens: dict[int, list] = {d: [] for d in dims}
    docs: dict[int, list] = {d: [] for d in dims}
    for ids, mask, keep in _document_batches(pre, texts["documents"], skiplist):
        out = engine.run(ids, mask, dims)
        for d in dims:
            tokens[d].append(out[d][mask.astype(bool)])
            docs[d].extend(out[d][row][keep[row]] for row in range(ids.shape[0]))
    return {d: Outputs(queries[d], np.concatenate(tokens[d]), docs[d]) for d in dims}


def _reference_outputs(arrays: dict[str, np.ndarray], dim: int, pre: Preprocessor, texts: dict,
                       skiplist: np.ndarray, resolution: float = 0.0) -> Outputs:
    doc_tokens = arrays[f"doc_tokens_{dim}"].astype(np.float64)
    documents, offset = [], 0
    for _, mask, keep in _document_batches(pre, texts["documents"], skiplist):
        for row in range(mask.shape[0]):
            n = int(mask[row].sum())
            documents.append(doc_tokens[offset : offset + n][keep[row][:n]])
            offset += n
    return Outputs(arrays[f"queries_{dim}"].astype(np.float64), doc_tokens, documents, float(resolution))


def _graphs(folder: ModelFolder, engine: str, precisions: Sequence[str] | None) -> list[GraphEntry]:
    pool = folder.graphs if engine == "onnxruntime" else [g for g in folder.manifest.engine_graphs
                                                           if g.engine == engine]
    return [g for g in pool if precisions is None or g.precision in precisions]


def available_engines() -> list[str]:
    """The engines installed here: onnxruntime always, openvino with its extra."""
    from .engines.openvino_engine import openvino_available

    return ["onnxruntime", *(["openvino"] if openvino_available() else [])]


def verify_folder(model_dir: str | Path, engines: Sequence[str] | None = None,
                  precisions: Sequence[str] | None = None, threads: int | None = None,
                  record: bool = False) -> list[Verdict]:
    """Every graph of the folder (of `precisions`, default all) on every engine of `engines` (default: those
    installed here), measured against the folder's reference vectors with the gates of its precision. `record`:
    write the verdicts into the folder (verified.json), where the runtime judges OpenVINO's graphs by them on CPUs
    with this one's int8 and bf16 units (verified.py)."""
    engines = available_engines() if engines is None else [engines] if isinstance(engines, str) else list(engines)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise InvalidInputError(f"unknown engine {unknown[0]!r}; choose from {', '.join(ENGINES)}")
    if precisions is not None:
        precisions = [precisions] if isinstance(precisions, str) else list(precisions)
        unknown = [p for p in precisions if p not in KNOWN_PRECISIONS]
        if unknown or not precisions:
            raise InvalidInputError(f"unknown precision {unknown[0] if unknown else '(none)'!r}; choose from "
                                    f"{', '.join(KNOWN_PRECISIONS)}")
    optional_thread_count("threads", threads)
    folder = open_model_folder(model_dir)
    reference, arrays = _reference(folder)
    tokenizer, special = folder.load_tokenizer()
    manifest = folder.manifest
    pre = Preprocessor.for_manifest(tokenizer, special, manifest, int(reference["document_max_length"]))
    texts = reference["texts"]
    skiplist = np.asarray(manifest.document.skiplist_ids, dtype=np.int64)
    verdicts = []
    for engine_name in engines:
        for graph in _graphs(folder, engine_name, precisions):
            dims = sorted(graph.outputs, reverse=True)
            measured_with = tuple(graph.details.get("measured_with_bf16_units")
                                  or graph.details.get("measured_with_int8_units") or ())
            asked = graph.details.get("inference_precision")
            try:
                engine = engine_for(folder, graph, threads)
            except EngineUnavailableError as exc:  # e.g. OpenVINO's CPU plugin refusing the graph on this CPU
                verdicts.extend(Verdict(engine_name, engine_name, graph.file, graph.precision, d, {}, False,
                                        graph.passed_gates(d), measured_with, error=str(exc),
                                        inference_precision=asked) for d in dims)
                continue
            ran = getattr(engine, "inference_precision", asked)
            note = f"OpenVINO ran {ran}, not {asked}, on this CPU" if asked and ran != asked else ""
            got = _outputs(engine, dims, pre, texts, skiplist)
            for d in dims:
                resolution = reference.get("score_resolution", {}).get(str(d), 0.0)
                metrics = compare(_reference_outputs(arrays, d, pre, texts, skiplist, resolution), got[d])
                gates = gate_tier(graph.precision)
                verdicts.append(Verdict(engine_name, engine.describe(), graph.file, graph.precision, d, metrics,
                                        passes(gates, metrics), graph.passed_gates(d), measured_with, note,
                                        inference_precision=asked))
    if record:
        record_verdicts(folder, verdicts, cpu_features())
    return verdicts


def add_verify_arguments(parser) -> None:
    """The flags of `colbert-onnx verify`."""
    parser.add_argument("model_dir", help="folder written by `colbert-onnx export`")
    parser.add_argument("--engine", action="append", choices=ENGINES, default=None,
                        help="engine to measure (repeatable; default: every engine installed here)")
    parser.add_argument("--precision", default=None, help="comma-separated precisions to measure (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the engine's)")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON lines")
    parser.add_argument("--record", action="store_true",
                        help="write the verdicts into the folder (verified.json): OpenVINO graphs the export could "
                             "not measure, or measured with other int8/bf16 units, are then judged by them on CPUs "
                             "with this one's units")


def run_verify(args) -> int:
    """Print one verdict per graph, head and engine; exit status 1 when any misses its gates."""
    import json

    from .engines.choice import named_features

    precisions = [p.strip() for p in args.precision.split(",")] if args.precision else None
    verdicts = verify_folder(args.model_dir, args.engine, precisions, args.threads, record=args.record)
    if not verdicts:  # checking nothing must not read as a pass
        raise InvalidInputError(f"nothing to verify: {args.model_dir} has no graph of precision "
                                f"{', '.join(precisions or KNOWN_PRECISIONS)} for engine "
                                f"{', '.join(args.engine or available_engines())}")
    if args.json:
        for v in verdicts:
            record = asdict(v)
            metrics = record.pop("metrics")
            print(json.dumps({**record, **metrics}))
    else:
        print(f"CPU features read: {', '.join(named_features(cpu_features())) or 'none'}")
        for v in verdicts:
            print(v.line())
        if args.record:
            print(f"recorded in {Path(args.model_dir) / VERIFIED_FILE} for CPUs with "
                  f"{', '.join(kernel_units(cpu_features())) or 'no int8 or bf16 dot-product units'}")
    return 0 if all(v.passed for v in verdicts) else 1
