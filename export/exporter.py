"""Checkpoints -> one model folder: ONNX graphs (shared backbone stored once), tokenizer, manifest."""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import onnx
import onnxruntime
import torch
from tokenizers import Tokenizer

import colbert_onnx
from colbert_onnx import float_environment
from colbert_onnx.conventions import (
    DOCUMENT_MARKER,
    DOCUMENT_MAX_LENGTH,
    MASK_TOKEN,
    QUERY_MARKER,
    QUERY_MAX_LENGTH,
    SpecialIds,
    punctuation_skiplist,
)
from colbert_onnx.encoder import ColbertEncoder
from colbert_onnx.errors import ColbertOnnxError, FidelityWarning, ModelFolderError
from colbert_onnx.fidelity import gate_misses
from colbert_onnx.manifest import (
    FORMAT_NAME,
    MANIFEST_NAME,
    MIN_FRAMED_LENGTH,
    Architecture,
    DocumentConvention,
    GraphEntry,
    Manifest,
    QueryConvention,
    Source,
    write_manifest,
)
from colbert_onnx.model_folder import graph_files, graph_fingerprint, open_model_folder
from colbert_onnx.tokenization import Preprocessor

from .attention import UNMASKED_MIN_TOKENS, expand_attention
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, sha256_file
from .fidelity import collect, reference_outputs, torch_runner
from .modeling import ATTENTION_BUDGET, MultiHeadColbert, set_attention_chunk
from .openvino_graphs import add_openvino_graphs, export_openvino_graph, why_no_openvino_graphs
from .optimize import EXTERNAL_DATA_THRESHOLD, save_graph
from .parity import (
    ParityGate,
    add_token_cosine_verdict,
    compare_parity,
    parity_batches,
    parity_failure_message,
    record_parity_reference,
)
from .precisions import (
    build_precisions,
    calibration_feeds,
    fidelity_inputs,
    parse_precisions,
)
from .quantize import INT8_METHODS
from .reference import write_reference
from .staging import discard, make_staging, remove_dead_staging, seal

OPSET = 17
# PyTorch weights at least this large are collected (gc) once freed, before int8/fp16 build their own copies
COLLECT_AFTER_BYTES = 64 * 2**20
# Attention runs as fused MultiHeadAttention steps of at least this many queries, as many as keep
# batch x heads x queries x seq scores within ATTENTION_BUDGET (2^26: 256 MB in fp32): one step for
# 8 x 512 tokens, 16 steps of 512 for one 8192-token document instead of its 4.3 GB score matrix
# (export/attention.py, docs/memory.md).
ATTENTION_CHUNK = 256
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MODEL_NAME = "jina-colbert-v2"  # the manifest's model name: what the server answers to by default


class ParityError(ColbertOnnxError):
    """An fp32 graph misses the parity gate; `figures` holds every head's parity figures (head -> dict)."""

    def __init__(self, message: str, figures: dict[str, dict] | None = None) -> None:
        super().__init__(message)
        self.figures = figures or {}


PARITY_WAY_THROUGH = (
    "If the checkpoint is known to be faithful and fp32 cannot reach the gate on this CPU, write the folder anyway "
    "with `--accept-parity-miss` (export_model(accept_parity_miss=True): the manifest records the miss and "
    "loading warns) or set the tolerance with `--parity-tolerance X`; int8/fp16 are still measured and gated "
    "(docs/export.md, \"Parity\")")


def output_name(dim: int) -> str:
    return f"vectors_{dim}"


def export_graph(module: MultiHeadColbert, path: Path, opset: int = OPSET) -> dict:
    """torch -> ONNX with dynamic batch/sequence axes; external data only when the model needs it."""
    names = [output_name(d) for d in module.dims]
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 5, 6, 2, 1]], dtype=torch.int64)
    mask = (ids != 1).to(torch.int64)
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    dynamic.update({n: {0: "batch", 1: "sequence"} for n in names})
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad():
            torch.onnx.export(
                module.eval(),
                (ids, mask),
                str(raw),
                dynamo=False,
                input_names=["input_ids", "attention_mask"],
                output_names=names,
                dynamic_axes=dynamic,
                opset_version=opset,
                do_constant_folding=True,
            )
        model = onnx.load(str(raw))
        expand_attention(model)
        return save_graph(model, path, external_threshold=EXTERNAL_DATA_THRESHOLD)


def _group_by_backbone(checkpoints: Sequence[Checkpoint]) -> list[list[Checkpoint]]:
    groups: dict[str, list[Checkpoint]] = {}
    for ckpt in checkpoints:
        groups.setdefault(ckpt.backbone_sha256, []).append(ckpt)
    return list(groups.values())


def _check_compatible(checkpoints: Sequence[Checkpoint]) -> None:
    dims = [c.dim for c in checkpoints]
    if len(set(dims)) != len(dims):
        raise CheckpointError(f"two checkpoints have the same head dim: {dims}; one folder holds one per dim")
    tokenizers = {
        c.file_sha256.get("tokenizer.json") or (c.path / "tokenizer.json").read_bytes() for c in checkpoints
    }
    if len(tokenizers) > 1:
        raise CheckpointError(
            "the checkpoints ship different tokenizer.json files; export them into separate folders"
        )
    vocab = {c.backbone_config.vocab_size for c in checkpoints}
    if len(vocab) > 1:
        raise CheckpointError(f"the checkpoints have different vocab sizes {sorted(vocab)}")
    # One manifest records one architecture and one set of conventions (the first checkpoint's): a checkpoint that
    # differs would be checked, optimized and described as another.
    for what, of in (("backbone architectures", _architecture_of), ("query and document conventions", _conventions_of)):
        first = of(checkpoints[0])
        other = next((c for c in checkpoints[1:] if of(c) != first), None)
        if other is not None:
            theirs = of(other)
            diff = {k: (v, theirs.get(k)) for k, v in first.items() if theirs.get(k) != v}
            raise CheckpointError(
                f"{checkpoints[0].source_id} and {other.source_id} have different {what} "
                f"({'; '.join(f'{k}: {a!r} and {b!r}' for k, (a, b) in diff.items())}); one folder holds checkpoints "
                "of one architecture and convention: export them into separate folders")


def _architecture_of(checkpoint: Checkpoint) -> dict:
    return {**dataclasses.asdict(checkpoint.backbone_config), "vocab_size": None,
            "max_position_embeddings": checkpoint.trained_positions}


def _conventions_of(checkpoint: Checkpoint) -> dict:
    """The query and document conventions a checkpoint's artifact.metadata gives (its defaults: jina-colbert-v2's),
    as the manifest records them."""
    metadata = checkpoint.metadata
    return {"markers": marker_tokens(metadata), "query_maxlen": metadata.get("query_maxlen") or QUERY_MAX_LENGTH,
            "attend_to_mask_tokens": metadata.get("attend_to_mask_tokens", True),
            "mask_punctuation": metadata.get("mask_punctuation", True)}


def export_model(
    sources: Sequence[str | Path],
    out_dir: str | Path,
    document_max_length: int | None = None,
    opset: int = OPSET,
    revision: str | None = None,
    check_parity: bool = True,
    precisions: str | Sequence[str] | None = None,
    attention_chunk: int | None = ATTENTION_CHUNK,
    int8_method: str | None = None,
    attention_budget: int = ATTENTION_BUDGET,
    parity_tolerance: float | None = None,
    accept_parity_miss: bool = False,
    engines: str | Sequence[str] | None = None,
) -> Path:
    """Export jina-colbert-v2 checkpoints (e.g. the 128/96/64 trio) into one model folder.

    Checkpoints whose backbones are byte-identical share one graph whose outputs are every head,
    so three heads cost the disk of one. Parity against a float64 evaluation of each checkpoint's
    PyTorch module is measured and recorded (parity.ParityGate: the tolerance adapts to how far the fp32
    module itself is from float64; `parity_tolerance` fixes it instead); a head that misses raises
    ParityError with its figures, unless `accept_parity_miss`, which writes the folder with the miss
    recorded in the manifest (loading then warns). `check_parity=False` skips the parity measurement
    only. `precisions` (default fp32,int8,fp16) adds int8/fp16 graphs whose fidelity against float64 is
    always measured and gated, whatever the parity options (see precisions.py).
    Attention is onnxruntime's fused MultiHeadAttention, run in steps of at least `attention_chunk`
    queries that keep batch x heads x queries x seq scores within `attention_budget` (one step when
    the whole batch fits); `attention_chunk=None` exports plain MatMul/Softmax attention instead.
    `int8_method` picks how int8 is made (quantize.INT8_METHODS; docs/quantization.md compares them);
    None is the default method, which alone may be replaced when it misses a fidelity gate.
    `engines` (default auto: onnxruntime, and OpenVINO where installed) names the engines whose graphs are
    written; "onnxruntime" alone skips the OpenVINO graphs and their NNCF int8 search (docs/engines.md).
    `document_max_length` defaults to 8192, or to max_position_embeddings where the checkpoints have fewer; a
    length given over it is refused.

    The folder is built in a hidden sibling (`.NAME.partial-*`, same filesystem) and renamed into place
    only once complete and measured: a failure (or Ctrl-C) removes it and leaves a folder already at
    `out_dir` as it was. One a killed export left is removed by the next export once its owner is provably dead
    (staging.py).
    """
    precisions = parse_precisions(precisions)
    no_openvino = why_no_openvino_graphs(engines)  # refuses unknown or uninstalled engines, before any work
    gate = ParityGate(fixed=parity_tolerance)  # refuses a tolerance that is not a positive number, before any work
    if attention_chunk is not None and (attention_chunk < 1 or attention_budget < 1):
        raise ValueError(f"attention_chunk ({attention_chunk}) and attention_budget ({attention_budget}) "
                         "must be positive; attention_chunk=None exports plain attention")
    if int8_method is not None and int8_method not in INT8_METHODS:
        raise CheckpointError(f"unknown int8 method {int8_method!r}; choose one of {', '.join(INT8_METHODS)}")
    if int8_method is not None and "int8" not in precisions:
        raise CheckpointError(f"int8_method={int8_method!r} makes int8 graphs, but precisions "
                              f"{','.join(precisions)} has no int8")
    if document_max_length is not None and (isinstance(document_max_length, bool)
                                            or not isinstance(document_max_length, int)
                                            or document_max_length < MIN_FRAMED_LENGTH):
        raise CheckpointError(f"document_max_length must be an int >= {MIN_FRAMED_LENGTH} (<s>, the marker, a "
                              f"token, </s>), got {document_max_length!r}")
    if isinstance(sources, (str, Path)):
        sources = [sources]
    if not sources:
        raise CheckpointError("no checkpoint given")
    out = destination(out_dir)
    checkpoints: list[Checkpoint] = []
    for source in sources:
        ckpt = load_checkpoint(source, revision=revision)
        twin = next((c for c in checkpoints if c.backbone_sha256 == ckpt.backbone_sha256), None)
        if twin is not None:  # byte-identical backbone: keep one copy of the weights in memory
            ckpt.backbone_state = twin.backbone_state
        checkpoints.append(ckpt)
    _check_compatible(checkpoints)
    trained = checkpoints[0].trained_positions  # every checkpoint's, as _check_compatible made sure
    if document_max_length is None:  # the default: jina-colbert-v2's 8192, or the positions a smaller model has
        document_max_length = min(DOCUMENT_MAX_LENGTH, trained)
    if document_max_length > trained:  # before any graph is built, not in the finished folder's manifest
        raise CheckpointError(f"document_max_length={document_max_length} exceeds the {trained} positions the "
                              "model was trained on (max_position_embeddings)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_staging(out)  # what killed exports of `out` left (staging.py); never raises
        staging = make_staging(out)  # its owner record written first
    except OSError as exc:
        raise CheckpointError(f"cannot write in {out.parent}: {exc.strerror or exc}") from None
    try:
        with float_environment.kept():  # the engines' first sessions and compiles change this thread's flush mode
            manifest = _export_into(staging, checkpoints, document_max_length, opset, check_parity, precisions,
                                    attention_chunk, int8_method, attention_budget, gate, accept_parity_miss,
                                    no_openvino)
        seal(staging)  # the owner record does not go into the model folder
        try:  # parity opens it too, but not with check_parity=False: a folder the runtime refuses is not written
            open_model_folder(staging)
        except ModelFolderError as exc:
            raise CheckpointError(f"the export made a folder the runtime would refuse: {exc}") from None
        _move_into_place(staging, out)
    except BaseException as exc:
        discard(staging)
        if hasattr(exc, "add_note"):  # Python 3.11+
            exc.add_note(f"colbert-onnx export: nothing was written to {out}"
                         + ("; the folder there is unchanged" if out.exists() else ""))
        raise
    missed = {f"{g.precision} head {d}": ", ".join(gate_misses(g.precision, m)) or "as recorded"
              for g in manifest.graphs for d, m in (g.fidelity or {}).items() if not m.get("passed", True)}
    if missed:
        why = "; ".join(f"{head}: {gates}" for head, gates in missed.items())
        warnings.warn(f"{', '.join(missed)} missed the fidelity gates ({why}; figures in {out / MANIFEST_NAME}; "
                      "docs/quantization.md)", FidelityWarning, stacklevel=2)
    accepted = {d: p for d, p in manifest.parity_figures().items() if not p["passed"]}
    if accepted:
        warnings.warn(f"written with accept_parity_miss: {parity_failure_message(accepted)}", FidelityWarning,
                      stacklevel=2)
    return out


def destination(out_dir: str | Path) -> Path:
    """The folder an export may write: new, empty, or an earlier colbert-onnx model folder (then replaced).

    Anything else is refused: replacing it would delete files the user did not ask us to touch.
    """
    out = Path(out_dir).expanduser()
    if out.is_symlink():
        out = out.resolve()
    if not out.exists():
        return out
    if not out.is_dir():
        raise CheckpointError(f"--out {out} exists and is not a folder; pass a new or empty folder")
    if any(out.iterdir()) and not _is_model_folder(out):
        raise CheckpointError(
            f"--out {out} is not empty and holds no colbert-onnx {MANIFEST_NAME}; refusing to replace it "
            "(an export replaces a folder it wrote before, never other files): pass a new or empty folder")
    return out


def _is_model_folder(folder: Path) -> bool:
    try:
        return json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8")).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the complete `staging` folder to `out`; an existing `out` is swapped out, then deleted."""
    if not out.exists():
        staging.rename(out)
        return
    if not _exchange(staging, out):  # no atomic swap here: two renames, the old folder set aside first
        previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.previous-", dir=out.parent))
        previous.rmdir()
        out.rename(previous)
        try:
            staging.rename(out)
        except BaseException:
            previous.rename(out)
            raise
        staging = previous
    shutil.rmtree(staging, ignore_errors=True)  # after the swap it holds the previous folder


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _export_into(
    out: Path,
    checkpoints: list[Checkpoint],
    document_max_length: int,
    opset: int,
    check_parity: bool,
    precisions: list[str],
    attention_chunk: int | None,
    int8_method: str | None,
    attention_budget: int,
    gate: ParityGate,
    accept_parity_miss: bool,
    no_openvino: str | None,
) -> Manifest:
    """Write graphs, tokenizer and manifest of `checkpoints` into the (staging) folder `out`; returns the manifest."""
    first = checkpoints[0]
    for name in TOKENIZER_FILES:
        if (first.path / name).is_file():
            shutil.copyfile(first.path / name, out / name)
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    query_marker, document_marker = marker_tokens(first.metadata)
    try:
        special = SpecialIds.from_tokenizer(tokenizer, query_marker=query_marker, document_marker=document_marker)
    except KeyError as exc:
        raise CheckpointError(f"tokenizer.json of {first.source_id} has no {exc.args[0]!r} token") from None

    groups = _group_by_backbone(checkpoints)
    manifest = _manifest(out, checkpoints, tokenizer, special, query_marker, document_marker, document_max_length,
                         opset)
    records = _graph_records(groups, attention_chunk, attention_budget)
    parity_inputs = parity_batches(Preprocessor.for_manifest(tokenizer, special, manifest, document_max_length))
    fidelity_pre, fset = fidelity_inputs(manifest, tokenizer, special)
    parity_refs: list = []
    fidelity_refs: list = []
    openvino_entries: list = []  # the OpenVINO engine's graphs, where its package is installed (docs/engines.md)
    for group, record in zip(groups, records, strict=True):
        module = MultiHeadColbert(group[0].module().roberta, {c.dim: c.head for c in group})
        set_attention_chunk(module, attention_chunk, attention_budget)
        record.update(export_graph(module, out / record["file"], opset=opset))
        if no_openvino is None:
            openvino_entries.append(export_openvino_graph(module, out, record, opset, export_graph))
        # Recorded now, so the PyTorch weights can be freed before int8/fp16; the fidelity reference always,
        # so that no parity option switches off the int8/fp16 gates.
        set_attention_chunk(module, None)  # the reference is the plain PyTorch computation
        fp32_outputs = collect(torch_runner(module), fset)  # the ties fp32 cannot resolve, before any float64
        if check_parity:
            parity_refs.append(record_parity_reference(module, parity_inputs))  # leaves `module` in float64
        fidelity_refs.append(reference_outputs(module, fset, fp32_outputs))  # float64, in place if not yet
        del module
    freed = sum(t.numel() * t.element_size() for ckpt in checkpoints for t in ckpt.backbone_state.values())
    for ckpt in checkpoints:
        ckpt.backbone_state = {}
    if freed >= COLLECT_AFTER_BYTES:  # a full collection costs ~0.3 s in a large process; worth it for real weights
        gc.collect()

    manifest = dataclasses.replace(manifest, graphs=tuple(GraphEntry.from_dict(r) for r in records))
    manifest = build_precisions(out, manifest, fidelity_pre, fset, fidelity_refs, precisions, int8_method)
    manifest = add_openvino_graphs(out, manifest, openvino_entries, fidelity_refs, fset, precisions,
                                   calibration_feeds(fidelity_pre) if "int8" in precisions else None)
    if no_openvino is not None:  # why the folder has no OpenVINO graph: the export report and manifest say it
        manifest = dataclasses.replace(manifest, extra={**manifest.extra, "engine_graphs_not_written":
                                                        {"openvino": no_openvino}})
    # the reference vectors `colbert-onnx verify` measures against
    manifest = write_reference(out, manifest, fidelity_refs, fidelity_pre.document_max_length)
    manifest = _fingerprinted(out, manifest)  # every graph is final from here on
    write_manifest(out, manifest)

    if check_parity:
        parity = {}
        fp32_graphs = [g for g in manifest.graphs if g.precision == "fp32"]  # one per backbone, as parity_refs
        for reference, entry in zip(parity_refs, fp32_graphs, strict=True):
            for dim in sorted(entry.outputs):
                with warnings.catch_warnings():  # the figures are recorded and judged here, not warned about
                    warnings.simplefilter("ignore", FidelityWarning)
                    encoder = ColbertEncoder(out, dim=dim)
                figures = compare_parity(encoder, reference, gate)
                parity[str(dim)] = add_token_cosine_verdict(figures, (entry.fidelity or {}).get(str(dim)))
        parity = dict(sorted(parity.items(), key=lambda kv: int(kv[0])))
        failed = {d: p for d, p in parity.items() if not p["passed"]}
        if failed and not accept_parity_miss:
            raise ParityError(f"{parity_failure_message(failed)}. {PARITY_WAY_THROUGH}", figures=parity)
        for figures in failed.values():
            figures["accepted_by_user"] = True
        manifest = dataclasses.replace(manifest, parity={
            "fp32": {"reference": "float64 PyTorch evaluation of the same checkpoint "
                                  "(figures against the fp32 module under vs_torch_fp32)", **parity}})
        write_manifest(out, manifest)
    return manifest


def _fingerprinted(out: Path, manifest: Manifest) -> Manifest:
    """`manifest` with every graph's fingerprint, which opening the folder checks (model_folder.graph_fingerprint)."""
    def stamp(entries: tuple[GraphEntry, ...]) -> tuple[GraphEntry, ...]:
        return tuple(dataclasses.replace(g, fingerprint=graph_fingerprint(graph_files(out, g))) for g in entries)

    return dataclasses.replace(manifest, graphs=stamp(manifest.graphs), engine_graphs=stamp(manifest.engine_graphs))


def marker_tokens(metadata: dict) -> tuple[str, str]:
    """The query and document marker strings of a checkpoint: its artifact.metadata's `query_token` and
    `doc_token` (ColBERT's names), else jina-colbert-v2's."""
    query = metadata.get("query_token") or QUERY_MARKER
    document = metadata.get("doc_token") or DOCUMENT_MARKER
    if not isinstance(query, str) or not isinstance(document, str) or query == document:
        raise CheckpointError(f"artifact.metadata names the markers {query!r} and {document!r}: two different "
                              "token strings are needed")
    return query, document


def _graph_records(groups: list[list[Checkpoint]], attention_chunk: int | None, attention_budget: int) -> list[dict]:
    """The fp32 graph entries of a new export, one per backbone (sizes are added once each graph is written)."""
    records = []
    for group in groups:
        dims = sorted((c.dim for c in group), reverse=True)
        file = "model.onnx" if len(groups) == 1 else "model-" + "-".join(map(str, dims)) + ".onnx"
        records.append(
            {
                "file": file,
                "precision": "fp32",
                "outputs": {str(d): output_name(d) for d in dims},
                "backbone_sha256": group[0].backbone_sha256,
                "method": "torch.onnx.export (TorchScript), constant folding",
                "attention": (
                    "plain MatMul/Softmax" if attention_chunk is None else
                    "com.microsoft.MultiHeadAttention in query steps (export/attention.py)"
                ),
                "attention_chunk": attention_chunk,
                "attention_budget": None if attention_chunk is None else attention_budget,
                # unpadded batches of this many tokens or more skip the key padding mask (export/attention.py)
                "attention_unmasked_min_tokens": None if attention_chunk is None else UNMASKED_MIN_TOKENS,
            }
        )
    return records


def _manifest(
    out: Path,
    checkpoints: Sequence[Checkpoint],
    tokenizer: Tokenizer,
    special: SpecialIds,
    query_marker: str,
    document_marker: str,
    document_max_length: int,
    opset: int,
) -> Manifest:
    """The manifest of a new export, before any graph is written (graphs, parity and fidelity come later)."""
    first = checkpoints[0]
    metadata = first.metadata
    cfg = first.backbone_config
    conventions = _conventions_of(first)
    mask_punctuation = conventions["mask_punctuation"]
    return Manifest(
        model=MODEL_NAME,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        created_with={
            "colbert_onnx": colbert_onnx.__version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        sources=tuple(Source(id=c.source_id, dim=c.dim, files_sha256=c.file_sha256, backbone_sha256=c.backbone_sha256)
                      for c in checkpoints),
        shared_backbone=len({c.backbone_sha256 for c in checkpoints}) == 1 and len(checkpoints) > 1,
        architecture=Architecture(
            max_position_embeddings=first.trained_positions,
            **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(Architecture) if hasattr(cfg, f.name)},
        ),
        vocab_size=cfg.vocab_size,
        heads=tuple(sorted((c.dim for c in checkpoints), reverse=True)),
        precisions=("fp32",),
        opset=opset,
        graphs=(),
        tokenizer_file="tokenizer.json",
        tokenizer_sha256=sha256_file(out / "tokenizer.json"),
        special_ids=special,
        query=QueryConvention(
            max_length=conventions["query_maxlen"],
            marker=query_marker,
            marker_id=special.query_marker,
            pad_token=MASK_TOKEN,
            pad_id=special.mask,
            attend_to_mask_tokens=conventions["attend_to_mask_tokens"],
        ),
        document=DocumentConvention(
            max_length=int(document_max_length),
            training_max_length=metadata.get("doc_maxlen"),
            marker=document_marker,
            marker_id=special.document_marker,
            mask_punctuation=mask_punctuation,
            skiplist_rule="tokenizer.encode(p, add_special_tokens=False).ids[0] for p in string.punctuation",
            skiplist_ids=tuple(punctuation_skiplist(tokenizer)) if mask_punctuation else (),
        ),
        similarity="cosine",  # the only one load_checkpoint lets through
    )
